//! The CI scenario (`scenarios/ci-small.toml`, 12 nodes) run end to end with
//! real nodes: partition and heal, crashes and restarts, a late joiner, a
//! hostile member and a burst; every intended delivery must happen, nothing
//! hostile may be accepted, and the frontiers must converge after the heal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use breakwater_simulations::scenario::Scenario;
use breakwater_simulations::{Options, simulate, write_outputs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_small_delivers_everything_and_converges() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/ci-small.toml");
    let scenario = Scenario::load(&path).unwrap();
    let mut options = Options::new(7);
    options.baseline = false;
    let started = Instant::now();
    let outcome = simulate(&scenario, &options).await.unwrap();
    let elapsed = started.elapsed();
    let report = &outcome.report;
    let summary = breakwater_simulations::report::summary_table(report);
    eprintln!("{summary}");
    assert!(report.figures.envelopes_published > 20, "{summary}");
    assert_eq!(report.figures.delivery_ratio, 1.0, "{summary}");
    assert_eq!(report.figures.forged_accepted, 0, "{summary}");
    assert!(
        report.figures.hostile.as_ref().unwrap().forged_sent > 0,
        "the hostile member attacked"
    );
    let convergence = report
        .figures
        .convergence_after_heal_ms
        .expect("frontiers converged after the heal");
    assert!(convergence < 15_000.0, "{summary}");
    assert!(report.figures.frontiers_equal_at_end, "{summary}");
    assert_eq!(report.figures.lagged_events, 0);
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    let out = tempfile::tempdir().unwrap();
    write_outputs(&outcome, out.path()).unwrap();
    for file in [
        "report.json",
        "report.md",
        "delivery.svg",
        "convergence.svg",
        "bytes.svg",
    ] {
        assert!(out.path().join(file).is_file(), "{file} written");
    }
}
