//! `chaos`: real `breakwater run` processes on a real network stack under
//! injected faults, Jepsen-style (issue 12). [`netns`] builds the namespaces,
//! [`cluster`] the nodes, [`faults`] draws and plays the seeded schedule,
//! [`workload`] writes and reads through the CLI into the [`history`],
//! [`checker`] proves the promises were kept and [`report`] writes
//! `chaos.json`, `chaos.md` and the timeline.

pub mod checker;
pub mod cluster;
pub mod faults;
pub mod history;
pub mod netns;
pub mod report;
pub mod workload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use self::checker::{NodeView, Verdict};
use self::cluster::Cluster;
use self::history::{History, Outcome};
use self::report::{ChaosReport, Details, FaultCounts};
use self::workload::Workload;

/// How to run the harness.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Nodes (at least 5).
    pub nodes: usize,
    /// Seed of the schedule and the workload.
    pub seed: u64,
    /// Length of the fault-and-workload phase.
    pub duration: Duration,
    /// How long convergence may take after the last heal.
    pub converge_deadline: Duration,
    /// Where the outputs go.
    pub out: PathBuf,
    /// The `breakwater` binary.
    pub bin: PathBuf,
    /// Prints faults as they are applied, and keeps the node logs even
    /// when the run passes.
    pub verbose: bool,
}

impl ChaosOptions {
    /// The defaults: 7 nodes, 5 minutes; `quick`: 5 nodes, 45 s.
    pub fn new(quick: bool, bin: PathBuf, out: PathBuf) -> ChaosOptions {
        ChaosOptions {
            nodes: if quick { 5 } else { 7 },
            seed: 1,
            duration: Duration::from_secs(if quick { 45 } else { 300 }),
            converge_deadline: Duration::from_secs(if quick { 75 } else { 180 }),
            out,
            bin,
            verbose: false,
        }
    }
}

/// Why this machine cannot run the harness, if it cannot (see
/// [`netns::unavailable`]).
pub fn unavailable() -> Option<String> {
    netns::unavailable()
}

/// Stops the workload and joins its threads however the run ends.
struct Threads {
    workload: Arc<Workload>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Threads {
    fn join(&mut self) {
        self.workload.stop();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.join();
    }
}

/// Runs the harness and writes its outputs into `options.out`; the report
/// says whether the goals were met (an `Err` means the harness itself could
/// not run). Namespaces, mounts and processes are gone when it returns.
pub fn run(options: &ChaosOptions) -> Result<ChaosReport> {
    if options.nodes < 5 {
        bail!("--nodes must be at least 5, not {}", options.nodes);
    }
    if options.duration < Duration::from_secs(20) {
        bail!("--duration must be at least 20s");
    }
    if let Some(why) = unavailable() {
        bail!("cannot run the chaos harness here: {why}");
    }
    if !options.bin.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p breakwater-cli`",
            options.bin.display()
        );
    }
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    let work = tempfile::Builder::new()
        .prefix("breakwater-chaos-")
        .tempdir()
        .context("cannot create a work directory")?;
    let history = Arc::new(History::default());
    let result = run_in(options, work.path(), &history);
    // Keep the evidence.
    let _ = history.write(&options.out.join("history.jsonl"));
    let keep_logs = options.verbose || !matches!(&result, Ok(report) if report.passed());
    if keep_logs {
        let logs = options.out.join("logs");
        let _ = std::fs::create_dir_all(&logs);
        if let Ok(entries) = std::fs::read_dir(work.path().join("logs")) {
            for entry in entries.flatten() {
                let _ = std::fs::copy(entry.path(), logs.join(entry.file_name()));
            }
        }
    }
    result
}

fn run_in(options: &ChaosOptions, work: &Path, history: &Arc<History>) -> Result<ChaosReport> {
    let n = options.nodes;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x5eed_c4a0);
    let disk_node = rng.random_range(0..n);
    let skew_node = (disk_node + rng.random_range(1..n)) % n;
    let skew_s = rng.random_range(120..=240) * if rng.random_bool(0.5) { 1 } else { -1 };
    let cluster = Arc::new(Cluster::create(
        &options.bin,
        work,
        n,
        Some((skew_node, skew_s)),
        Some(disk_node),
        cluster::tmpfs_mb(options.duration),
    )?);
    let orgs: Vec<String> = cluster.slots.iter().map(|s| s.org.clone()).collect();
    for i in 0..n {
        cluster.start_node(i)?;
    }
    wait_meshed(&cluster, Duration::from_secs(60))?;
    let t0 = cluster.now_ms();
    let duration_ms = options.duration.as_millis() as u64;
    let mut schedule = faults::schedule(options.seed, n, duration_ms, Some(disk_node));
    for fault in &mut schedule {
        fault.start_ms += t0;
        fault.end_ms += t0;
    }
    let workload = Workload::new(Arc::clone(&cluster), Arc::clone(history));
    let mut threads = Threads {
        handles: workload.spawn(options.seed, 2),
        workload: Arc::clone(&workload),
    };
    faults::play(&cluster, &workload, history, &schedule, options.verbose)?;
    while cluster.now_ms() < t0 + duration_ms {
        cluster.reap();
        std::thread::sleep(Duration::from_millis(100));
    }
    threads.join();
    // Heal whatever is left: the disk, and nodes that died on their own.
    cluster.free_disk()?;
    cluster.reap();
    for i in 0..n {
        if !cluster.is_running(i) {
            cluster.start_node(i)?;
        }
    }
    let heal_ms = cluster.now_ms();
    // Converge: poll every node until the promises hold, or the deadline.
    let deadline = Instant::now() + options.converge_deadline;
    let ops = history.ops();
    let mut converged_at = None;
    let mut seqs = checker::FollowUpSeqs::new();
    loop {
        cluster.reap();
        learn_seqs(&cluster, &ops, &mut seqs);
        let views = snapshot(&cluster);
        let verdict = checker::check(&ops, &views, &orgs, &seqs);
        if verdict.converged() {
            converged_at = Some(cluster.now_ms());
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    // The final check also looks up every follow-up at every node.
    let mut views = snapshot(&cluster);
    sweep(&cluster, &ops, &mut views);
    let verdict: Verdict = checker::check(&ops, &views, &orgs, &seqs);
    let clock_skew_observed_s = cluster.skew.and_then(|(node, _)| {
        let created: HashMap<String, u64> = views
            .iter()
            .flatten()
            .flat_map(|v| v.items.iter().map(|s| (s.id.to_hex(), s.created_at)))
            .collect();
        let mut offsets: Vec<i64> = ops
            .iter()
            .filter(|op| op.node == node)
            .filter_map(|op| match &op.outcome {
                Outcome::Ack { id } => created
                    .get(id)
                    .map(|c| *c as i64 - (cluster.start_unix_ms + op.end_ms) as i64),
                _ => None,
            })
            .collect();
        offsets.sort_unstable();
        offsets.get(offsets.len() / 2).map(|ms| ms / 1000)
    });
    let disk_full_writes = {
        let windows: Vec<_> = history
            .faults()
            .into_iter()
            .filter(|f| f.kind == "disk_full")
            .collect();
        let during: Vec<_> = ops
            .iter()
            .filter(|op| {
                windows.iter().any(|w| {
                    w.nodes.contains(&op.node) && op.start_ms >= w.start_ms && op.end_ms <= w.end_ms
                })
            })
            .collect();
        (
            during
                .iter()
                .filter(|o| matches!(o.outcome, Outcome::Ack { .. }))
                .count(),
            during
                .iter()
                .filter(|o| match &o.outcome {
                    Outcome::Ack { .. } => false,
                    Outcome::Refused { error } | Outcome::Indeterminate { error } => {
                        !error.contains("no node running")
                    }
                })
                .count(),
        )
    };
    cluster.reap();
    let crashes = cluster.crashes();
    let applied = history.faults();
    let count = |kind: &str| applied.iter().filter(|f| f.kind == kind).count();
    let report = ChaosReport {
        nodes: n,
        seed: options.seed,
        duration_s: options.duration.as_secs(),
        faults: FaultCounts {
            kills: count("kill"),
            partitions: count("partition") + count("link_down"),
            loss_windows: count("loss"),
            disk_full: count("disk_full"),
            clock_skew: usize::from(cluster.skew.is_some()),
        },
        acknowledged: verdict.acknowledged,
        lost_acknowledged: verdict.lost_acknowledged,
        unexpected_stored: verdict.unexpected_stored,
        readable_by_non_recipient: verdict.readable_by_non_recipient,
        unretracted: verdict.unretracted,
        converged: converged_at.is_some() && verdict.converged(),
        convergence_after_last_fault_ms: converged_at.map(|t| t.saturating_sub(heal_ms)),
        crashes_not_injected: crashes.len(),
        details: Details {
            kills_mid_write: applied
                .iter()
                .filter(|f| f.kind == "kill" && f.detail == "kill -9 during a write")
                .count(),
            link_downs: count("link_down"),
            bandwidth_caps: count("bandwidth"),
            clock_skew_s: cluster
                .skew
                .and_then(|(i, s)| orgs.get(i).map(|org| (org.clone(), s))),
            clock_skew_observed_s,
            disk_full_writes,
            clock_skew_note: match cluster.skew {
                Some(_) => None,
                None => Some("libfaketime is not installed (apt-get install -y faketime), so no clock was skewed".into()),
            },
            refused: ops.iter().filter(|o| matches!(o.outcome, Outcome::Refused { .. })).count(),
            indeterminate: ops
                .iter()
                .filter(|o| matches!(o.outcome, Outcome::Indeterminate { .. }))
                .count(),
            reads: history.reads().len(),
            reads_failed: history.reads().iter().filter(|r| r.stored.is_none()).count(),
            refusals: report::refusals(&ops),
            verdict,
            crashes,
        },
    };
    let json = options.out.join("chaos.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    report::timeline(
        &options.out.join("timeline.svg"),
        &applied,
        &ops,
        &history.reads(),
        &orgs,
        heal_ms,
        converged_at,
    )?;
    let md = options.out.join("chaos.md");
    std::fs::write(&md, report::markdown(&report, &applied, &orgs))
        .with_context(|| format!("cannot write {}", md.display()))?;
    cluster.shutdown();
    Ok(report)
}

/// Waits until every node has a peer (the mesh fills in by itself).
fn wait_meshed(cluster: &Cluster, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let n = cluster.slots.len();
    loop {
        let views = snapshot(cluster);
        let ready = views
            .iter()
            .all(|v| v.as_ref().is_some_and(|v| v.status.peers.len() + 1 >= n));
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the nodes did not connect to each other within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every node's envelopes and status (`None` where it did not answer).
fn snapshot(cluster: &Cluster) -> Vec<Option<NodeView>> {
    (0..cluster.slots.len())
        .map(|i| {
            let items = cluster.list_all(i).ok()?;
            let status = cluster.cli_ok(i, &["status", "--json"]).ok()?;
            Some(NodeView {
                items,
                status: serde_json::from_str(&status).ok()?,
                followups: None,
            })
        })
        .collect()
}

/// The acknowledged follow-ups' author keys and seqs, asked of their
/// author's node (once each).
fn learn_seqs(cluster: &Cluster, ops: &[history::Op], seqs: &mut checker::FollowUpSeqs) {
    for op in ops {
        let Outcome::Ack { id } = &op.outcome else {
            continue;
        };
        if matches!(op.kind, history::OpKind::Green | history::OpKind::Amber)
            || seqs.contains_key(id)
        {
            continue;
        }
        let Some(detail) = cluster
            .cli_ok(op.node, &["show", id, "--json"])
            .ok()
            .and_then(|text| serde_json::from_str::<breakwater_node::Detail>(&text).ok())
        else {
            continue;
        };
        seqs.insert(
            id.clone(),
            (detail.summary.author.to_string(), detail.summary.seq),
        );
    }
}

/// Looks up every acknowledged follow-up at every answering node (`show`),
/// one thread per node.
fn sweep(cluster: &Cluster, ops: &[history::Op], views: &mut [Option<NodeView>]) {
    let ids: Vec<&str> = ops
        .iter()
        .filter(|op| matches!(op.kind, history::OpKind::Retract | history::OpKind::Sight))
        .filter_map(|op| match &op.outcome {
            Outcome::Ack { id } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    std::thread::scope(|scope| {
        for (i, view) in views.iter_mut().enumerate() {
            let Some(view) = view.as_mut() else { continue };
            let ids = &ids;
            scope.spawn(move || {
                let mut shown = std::collections::HashMap::new();
                for id in ids {
                    if let Some(detail) =
                        cluster
                            .cli_ok(i, &["show", id, "--json"])
                            .ok()
                            .and_then(|text| {
                                serde_json::from_str::<breakwater_node::Detail>(&text).ok()
                            })
                    {
                        shown.insert(id.to_string(), detail.summary);
                    }
                }
                view.followups = Some(shown);
            });
        }
    });
}

/// Parses `90s`, `10m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration like 90s, 10m or 1h"))?;
    let seconds = match unit {
        "s" | "" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => bail!("{text:?} is not a duration like 90s, 10m or 1h"),
    };
    Ok(Duration::from_secs(seconds))
}

/// The `breakwater` binary next to this executable; under `cargo run` it is
/// built first (a no-op when fresh), in the same profile.
pub fn sibling_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate this executable")?;
    let dir = exe.parent().context("executable has no directory")?;
    let bin = dir.join(format!("breakwater{}", std::env::consts::EXE_SUFFIX));
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "-p", "breakwater-cli", "--bin", "breakwater"]);
        if dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().context("cannot run cargo build")?;
        if !status.success() {
            bail!("cargo build -p breakwater-cli failed");
        }
    }
    Ok(bin)
}
