//! The chaos harness's quick seeded run (issue 12): real `breakwater run`
//! processes in network namespaces under kills, partitions, loss, bandwidth
//! caps, a full disk and a skewed clock, checked against the recorded
//! history. Needs root, `ip`, `tc` and `iptables`; without them it says why
//! and returns, except under CI (`CI` set), where it fails instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod util;

use breakwater_simulations::chaos::{self, ChaosOptions};

#[test]
fn quick_chaos_run_keeps_every_promise() {
    if let Some(why) = chaos::unavailable() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set, so the chaos harness must run, but it cannot: {why}"
        );
        eprintln!("NOT RUN: chaos harness: {why}");
        return;
    }
    // Kept after the test, so a failure's history and logs can be read.
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-quick");
    let _ = std::fs::remove_dir_all(&out);
    let mut options = ChaosOptions::new(true, util::breakwater().to_path_buf(), out.clone());
    options.seed = 12;
    let started = std::time::Instant::now();
    let report = chaos::run(&options).expect("the chaos harness runs");
    let elapsed = started.elapsed();
    let summary = serde_json::to_string_pretty(&report).unwrap();
    assert!(
        report.passed(),
        "the quick chaos run broke a promise (history and logs in {}): {summary}",
        out.display()
    );
    assert!(report.acknowledged > 20, "too little workload: {summary}");
    let f = &report.faults;
    assert!(
        f.kills >= 2 && f.partitions >= 1 && f.loss_windows >= 2 && f.disk_full == 1,
        "faults missing: {summary}"
    );
    assert!(
        report.details.kills_mid_write >= 1,
        "no kill hit a write: {summary}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(180),
        "the quick run took {elapsed:?}, over its 3-minute budget"
    );
    // chaos.json carries exactly the keys the issue names (and `details`).
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("chaos.json")).unwrap()).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "acknowledged",
            "converged",
            "convergence_after_last_fault_ms",
            "crashes_not_injected",
            "details",
            "duration_s",
            "faults",
            "lost_acknowledged",
            "nodes",
            "readable_by_non_recipient",
            "seed",
            "unexpected_stored",
            "unretracted",
        ]
    );
    let mut fault_keys: Vec<&str> = json["faults"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fault_keys.sort_unstable();
    assert_eq!(
        fault_keys,
        [
            "clock_skew",
            "disk_full",
            "kills",
            "loss_windows",
            "partitions"
        ]
    );
    assert!(out.join("chaos.md").exists() && out.join("timeline.svg").exists());
    // No namespace of this run is left behind.
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let mine = format!("{}{}-", chaos::netns::PREFIX, std::process::id());
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains(&mine),
        "namespaces left behind"
    );
}
