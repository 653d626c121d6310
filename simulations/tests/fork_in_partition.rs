//! The `fork-in-partition` scenario (`scenarios/fork-in-partition.toml`, 16
//! nodes) run end to end with real nodes: a member signs seq 3 twice while
//! the port is split, one branch into each half; after the heal every honest
//! node must hold the evidence and every honest feed must be complete.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Instant;

use breakwater_simulations::scenario::Scenario;
use breakwater_simulations::{Options, simulate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_in_partition_evidence_everywhere_and_honest_feeds_complete() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/fork-in-partition.toml");
    let scenario = Scenario::load(&path).unwrap();
    let mut options = Options::new(7);
    options.baseline = false;
    let started = Instant::now();
    let outcome = simulate(&scenario, &options).await.unwrap();
    let elapsed = started.elapsed();
    let report = &outcome.report;
    let summary = breakwater_simulations::report::summary_table(report);
    eprintln!("{summary}");
    let f = &report.figures;
    // 16 nodes, one of them the equivocator.
    let honest = (report.nodes - 1) as u64;
    assert!(
        f.equivocator_pushed > 0,
        "the equivocator forked: {summary}"
    );
    assert_eq!(f.evidence_nodes, honest, "evidence everywhere: {summary}");
    assert_eq!(f.honest_feeds_complete, Some(true), "{summary}");
    assert!(f.envelopes_published > 10, "{summary}");
    assert_eq!(f.delivery_ratio, 1.0, "{summary}");
    assert_eq!(f.forged_accepted, 0, "{summary}");
    assert!(f.frontiers_equal_at_end, "{summary}");
    eprintln!("fork-in-partition took {elapsed:?}");
}
