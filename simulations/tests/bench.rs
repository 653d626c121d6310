//! `breakwater-simulations bench` end to end at toy sizes (`--tiny`): the real
//! binary runs every figure, Breakwater and raw gossipsub side by side, and
//! writes a `bench.json` whose keys, baselines and ratios hold together.
//! Speed itself is not asserted here; BENCHMARKS.md records the figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use breakwater_simulations::raw::run_raw_phase;
use breakwater_simulations::scenario::{Plan, Publishing, Scenario};
use serde_json::Value;

fn bench_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_breakwater-simulations"))
}

fn num(v: &Value, path: &str) -> f64 {
    let mut at = v;
    for key in path.split('.') {
        at = match key.parse::<usize>() {
            Ok(i) => &at[i],
            Err(_) => &at[key],
        };
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("bench.json has no number at {path}: {at}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 0.01 * b.abs().max(1e-9) + 1e-3
}

/// Runs `bench ARGS --out DIR` and returns its `bench.json` and `bench.md`.
fn run_bench(args: &[&str]) -> (Value, String) {
    let out = tempfile::tempdir().unwrap();
    let output = bench_bin()
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("bench.json")).unwrap()).unwrap();
    let md = std::fs::read_to_string(out.path().join("bench.md")).unwrap();
    (json, md)
}

#[test]
fn tiny_bench_writes_every_figure_with_its_baseline() {
    let (json, md) = run_bench(&["--tiny", "--seed", "7"]);
    assert!(md.contains("## Goals"), "{md}");
    assert_eq!(num(&json, "processes"), 1.0);
    assert_eq!(num(&json, "mesh_latency.0.breakwater.processes"), 1.0);

    // Mesh latency at two sizes: both sides delivered everything, the
    // ratios are theirs, and nothing beat the 20 ± 5 ms links.
    let latency = json["mesh_latency"].as_array().unwrap();
    assert_eq!(latency.len(), 2);
    assert_eq!(num(&json, "mesh_latency.0.nodes"), 8.0);
    assert_eq!(num(&json, "mesh_latency.1.nodes"), 50.0);
    for (m, entry) in latency.iter().enumerate() {
        let at = |key: &str| num(&json, &format!("mesh_latency.{m}.{key}"));
        for side in ["breakwater", "raw"] {
            assert_eq!(at(&format!("{side}.delivery")), 1.0);
            assert!(at(&format!("{side}.envelopes")) > 0.0);
        }
        let (p50, raw_p50) = (at("p50_ms"), at("raw_p50_ms"));
        let (p99, raw_p99) = (at("p99_ms"), at("raw_p99_ms"));
        assert!(raw_p50 >= 15.0 && p50 >= 15.0, "{p50} {raw_p50}");
        assert!(p99 >= p50 && raw_p99 >= raw_p50);
        assert!(close(at("ratio_p50"), p50 / raw_p50));
        assert!(close(at("ratio_p99"), p99 / raw_p99));
        // Same payload size on both sides; the entry's envelope is the
        // Breakwater side's.
        let envelope = at("envelope_bytes");
        assert!(envelope > 0.0);
        assert_eq!(at("breakwater.message_bytes").round(), envelope);
        assert_eq!(at("raw.message_bytes").round(), envelope);
        // Process CPU of each phase, and their ratio per delivered pair
        // (both delivered everything, so per phase too).
        let (cpu, raw_cpu) = (at("cpu_s"), at("raw_cpu_s"));
        assert!(cpu > 0.0 && raw_cpu > 0.0, "{cpu} {raw_cpu}");
        assert_eq!(cpu, at("breakwater.cpu_s"));
        assert_eq!(raw_cpu, at("raw.cpu_s"));
        assert_eq!(at("breakwater.delivered"), at("raw.delivered"));
        assert!(close(at("cpu_ratio"), cpu / raw_cpu));
        // The publishing window's share: part of the phase, its own ratio.
        let (script, raw_script) = (at("script_cpu_s"), at("raw_script_cpu_s"));
        assert!(script > 0.0 && script <= cpu, "{script} of {cpu}");
        assert!(
            raw_script > 0.0 && raw_script <= raw_cpu,
            "{raw_script} of {raw_cpu}"
        );
        assert!(close(at("script_cpu_ratio"), script / raw_script));
        let threads = &entry["breakwater"]["script_cpu_by_thread"];
        assert!(
            threads.as_array().is_some_and(|t| !t.is_empty()),
            "{threads}"
        );
    }
    // Bench guard: GREEN is sealed once under the roster's epoch key, so
    // the bench bulletin's envelope does not grow with the consortium. The
    // titles differ by a digit or two; one per-node wrap was 80 bytes.
    let (small, large) = (
        num(&json, "mesh_latency.0.envelope_bytes"),
        num(&json, "mesh_latency.1.envelope_bytes"),
    );
    assert!(
        (small - large).abs() <= 8.0,
        "{small} B at 8 nodes, {large} B at 50"
    );

    // Throughput: both sustained the first step; the ratio is theirs.
    let (per_s, raw_per_s) = (
        num(&json, "mesh_throughput.per_s"),
        num(&json, "mesh_throughput.raw_per_s"),
    );
    assert!(per_s >= 4.0 && raw_per_s >= 4.0, "{per_s} {raw_per_s}");
    assert!(close(
        num(&json, "mesh_throughput.ratio"),
        per_s / raw_per_s
    ));

    // Ingest against raw verify measured in the same run.
    let ingest = num(&json, "ingest.per_s");
    let verify = num(&json, "ingest.raw_verify_per_s");
    assert!(ingest > 0.0 && verify > 0.0);
    assert!(close(num(&json, "ingest.ratio"), ingest / verify));
    assert!(num(&json, "ingest.opened_per_s") > 0.0);

    // Catch-up, every envelope opened, against raw verify of the same run;
    // one in-sync round is one round trip of well under 1 KB.
    assert_eq!(num(&json, "catchup.envelopes"), 400.0);
    assert_eq!(num(&json, "catchup.opened"), 400.0);
    assert!(num(&json, "catchup.per_s") > 0.0);
    assert_eq!(num(&json, "catchup.raw_verify_per_s"), verify);
    assert!(close(
        num(&json, "catchup.ratio"),
        num(&json, "catchup.per_s") / verify
    ));
    assert_eq!(
        num(&json, "catchup.envelope_bytes"),
        num(&json, "storage.envelope_bytes")
    );
    assert_eq!(num(&json, "catchup.in_sync_round_trips"), 1.0);
    let in_sync = num(&json, "catchup.in_sync_bytes");
    assert!(in_sync > 0.0 && in_sync < 1024.0, "{in_sync}");

    // Duplicates are counted, not estimated: a non-negative number.
    assert!(num(&json, "duplicates_per_envelope") >= 0.0);

    // Storage: the caught-up store, reopened in a fresh process.
    assert_eq!(num(&json, "storage.envelopes"), 400.0);
    let (stored, envelope) = (
        num(&json, "storage.bytes_per_envelope"),
        num(&json, "storage.envelope_bytes"),
    );
    assert!(stored > envelope, "{stored} {envelope}");
    assert!(close(num(&json, "storage.ratio"), stored / envelope));
    assert!(num(&json, "storage.cold_start_ms") > 0.0);
    assert!(num(&json, "storage.cold_start_again_ms") > 0.0);
    assert!(num(&json, "storage.rss_mb") > 0.0);
    assert_eq!(num(&json, "storage.empty.envelopes"), 0.0);

    // Every goal is listed with its verdict.
    let goals = json["goals"].as_array().unwrap();
    assert_eq!(goals.len(), 14, "{goals:?}");
    assert!(goals.iter().all(|g| g["met"].is_boolean()));
    let goal = |figure: &str| {
        goals
            .iter()
            .find(|g| g["figure"].as_str().unwrap().starts_with(figure))
            .unwrap_or_else(|| panic!("no goal {figure}: {goals:?}"))["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        goal("CPU per delivery / raw gossipsub, 50 nodes"),
        num(&json, "mesh_latency.1.cpu_ratio")
    );
    assert_eq!(goal("GREEN envelope"), small.max(large));
    assert_eq!(
        goal("mesh throughput / raw"),
        num(&json, "mesh_throughput.ratio")
    );
    assert_eq!(goal("catch-up of 400 (every"), num(&json, "catchup.ratio"));
    assert_eq!(
        goal("store bytes per envelope"),
        num(&json, "storage.ratio")
    );
    assert_eq!(goal("cold start"), num(&json, "storage.cold_start_ms"));
}

/// `--processes 2`: the Breakwater nodes of the mesh run in two child
/// processes of the real binary (`part`), linked over loopback TCP, and the
/// parent still measures every delivery against raw gossipsub in one.
#[test]
fn the_mesh_spread_over_two_processes_delivers_everything_and_says_so() {
    let (json, md) = run_bench(&[
        "--tiny",
        "--only",
        "latency",
        "--latency-nodes",
        "8",
        "--processes",
        "2",
    ]);
    assert_eq!(num(&json, "processes"), 2.0);
    // Counted from the parts that reported, not echoed from the flag; raw
    // gossipsub ran in one.
    assert_eq!(num(&json, "mesh_latency.0.breakwater.processes"), 2.0);
    assert_eq!(num(&json, "mesh_latency.0.raw.processes"), 1.0);
    let envelopes = num(&json, "mesh_latency.0.breakwater.envelopes");
    assert!(envelopes > 0.0);
    assert_eq!(num(&json, "mesh_latency.0.breakwater.delivery"), 1.0);
    assert_eq!(
        num(&json, "mesh_latency.0.breakwater.delivered"),
        envelopes * 7.0
    );
    // Every latency is a real one: at least the 20 ± 5 ms link.
    assert!(num(&json, "mesh_latency.0.p50_ms") >= 15.0);
    // The parts' CPU and connections came back to the parent.
    assert!(num(&json, "mesh_latency.0.cpu_s") > 0.0);
    assert!(num(&json, "mesh_latency.0.breakwater.connections") >= 8.0);
    assert!(num(&json, "mesh_latency.0.envelope_bytes") > 0.0);
    assert!(md.contains("ran in 2 OS processes"), "{md}");
}

/// A part that dies is named at once, not after the start-up deadline.
#[test]
fn a_part_that_exits_fails_the_run_at_once_with_one_line() {
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let output = bench_bin()
        .args([
            "bench",
            "--tiny",
            "--only",
            "latency",
            "--latency-nodes",
            "4",
            "--processes",
            "2",
            "--out",
        ])
        .arg(out.path())
        .env("BREAKWATER_SIM_EXE", "/bin/false")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error:")
            && stderr.contains("exited before it listened")
            && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(50));
    assert!(!out.path().join("bench.json").exists());
}

#[test]
fn a_scenario_with_faults_refuses_to_spread_with_one_line() {
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/port-split.toml");
    let out = tempfile::tempdir().unwrap();
    let output = bench_bin()
        .args(["run", scenario, "--processes", "2", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: --processes:") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    assert!(!out.path().join("report.json").exists());
}

#[test]
fn bench_rejects_bad_flags_with_one_line() {
    for args in [
        vec!["bench"],
        vec!["bench", "--out", "/tmp/x", "--quick", "--tiny"],
        vec!["bench", "--out", "/tmp/x", "--seed", "many"],
        vec!["bench", "--out", "/tmp/x", "--only", "everything"],
        vec!["bench", "--out", "/tmp/x", "--latency-nodes", "1"],
        vec!["bench", "--out", "/tmp/x", "--processes", "0"],
        vec!["bench", "--out", "/tmp/x", "--processes", "two"],
    ] {
        let output = bench_bin().args(&args).output().unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn raw_baseline_refuses_sealed_traffic() {
    let mut scenario: Scenario = toml::from_str(
        r#"
        name = "amber"
        nodes = 4
        duration_s = 2
        "#,
    )
    .unwrap();
    scenario.publish = Some(Publishing {
        start_s: 0.0,
        end_s: None,
        rate_per_s: 10.0,
        amber_fraction: 1.0,
        amber_orgs: 1,
    });
    let plan = Plan::new(&scenario, 1).unwrap();
    let error = run_raw_phase(&plan, 512).await.unwrap_err().to_string();
    assert!(error.contains("only publishes GREEN"), "{error}");
}
