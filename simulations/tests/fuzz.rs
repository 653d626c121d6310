//! Decoders under mutation, the CI size: 10,000 mutated inputs per decoder
//! (envelope, roster, card, sync request and response, API bodies); none
//! may panic or get a mutated signed object accepted. Also checks that the
//! engine itself catches a failure, names its case, writes its input and
//! replays it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use breakwater_simulations::fuzz::{self, FuzzOptions, Outcome, Target, World};
use rand::rngs::ChaCha8Rng;

#[test]
fn every_decoder_survives_10k_mutants() {
    let world = World::new().unwrap();
    let started = Instant::now();
    let mut options = FuzzOptions::new(10_000, 2026);
    let dir = tempfile::tempdir().unwrap();
    options.failures_dir = Some(dir.path().to_path_buf());
    let reports = fuzz::fuzz(&world, &options, |_, _| {}).unwrap();
    let table = fuzz::table(&reports);
    eprintln!("{table}");
    let names: Vec<&str> = reports.iter().map(|r| r.decoder).collect();
    assert_eq!(
        names,
        [
            "envelope",
            "roster",
            "card",
            "sync-request",
            "sync-response",
            "api-publish",
            "api-retract",
            "api-sighting",
            "api-roster"
        ]
    );
    for report in &reports {
        assert_eq!(report.cases, 10_000, "{table}");
        for failure in &report.failures {
            eprintln!("FAIL {failure}");
        }
        assert!(report.failures.is_empty(), "{table}");
        // The mutants reach past the framing: a good share still decodes,
        // and a share of the unsigned bodies still passes every check.
        assert!(report.decoded >= 500, "{}: {table}", report.decoder);
        if report.decoder.starts_with("api-") && report.decoder != "api-roster"
            || report.decoder == "card"
        {
            assert!(report.accepted >= 100, "{}: {table}", report.decoder);
        }
        // Signed objects: only inputs equal to a seed were accepted.
        if ["envelope", "roster", "api-roster"].contains(&report.decoder) {
            assert!(report.accepted <= report.decoded);
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn cases_are_deterministic() {
    let world = World::new().unwrap();
    let targets = world.targets().unwrap();
    for target in &targets {
        for case in [0, 1, 77, 9_999] {
            let a = fuzz::make_case(target.as_ref(), 5, case);
            let b = fuzz::make_case(target.as_ref(), 5, case);
            assert_eq!(a, b, "{} case {case}", target.name());
        }
        assert_ne!(
            fuzz::make_case(target.as_ref(), 5, 1).0,
            fuzz::make_case(target.as_ref(), 6, 1).0,
            "{}: the seed changes the cases",
            target.name()
        );
    }
}

/// A decoder with a planted bug: it panics on inputs whose first byte is
/// 0x42 and "accepts" inputs whose first byte is 0x43.
struct Planted {
    seeds: Vec<Vec<u8>>,
}

impl Target for Planted {
    fn name(&self) -> &'static str {
        "planted"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn structured(&self, _: &mut ChaCha8Rng, _: usize) -> Option<(Vec<u8>, String)> {
        None
    }
    fn check(&self, input: &[u8]) -> Outcome {
        match input.first() {
            Some(0x42) => panic!("planted bug"),
            Some(0x43) => Outcome {
                decoded: true,
                accepted: true,
                problem: Some("a mutated signed object was accepted".into()),
            },
            _ => Outcome::default(),
        }
    }
}

#[test]
fn the_engine_reports_and_replays_a_failure() {
    let target = Planted {
        seeds: vec![vec![0x40, 1, 2, 3], vec![0x41, 4, 5, 6]],
    };
    let dir = tempfile::tempdir().unwrap();
    let mut options = FuzzOptions::new(3_000, 11);
    options.failures_dir = Some(dir.path().to_path_buf());
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let report = fuzz::fuzz_target(&target, &options, |_| {}).unwrap();
    std::panic::set_hook(hook);
    assert!(!report.failures.is_empty());
    let panicked = report
        .failures
        .iter()
        .find(|f| f.problem.contains("panic: planted bug"))
        .expect("the planted panic was caught");
    let text = panicked.to_string();
    assert!(
        text.contains(&format!("--seed 11 --case {}", panicked.case)),
        "{text}"
    );
    let file = panicked.file.as_ref().expect("input written");
    let input = std::fs::read(file).unwrap();
    assert_eq!(input.first(), Some(&0x42));
    // Replaying the case regenerates the same input.
    let (again, _) = fuzz::make_case(&target, 11, panicked.case);
    assert_eq!(again, input);
    assert!(
        fuzz::run_one(&target, &input)
            .problem
            .unwrap()
            .contains("planted")
    );
}
