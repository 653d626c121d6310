//! `bench`: Breakwater's performance side by side with what it runs on, in
//! one run on the machine at hand. Mesh latency and throughput against raw
//! gossipsub on the same simulated network ([`mesh`]); ingest against this
//! machine's raw ed25519 verify rate, catch-up, in-sync sync cost and storage
//! ([`node`]). Writes `bench.json` (every figure with its baseline and their
//! ratio) and `bench.md` (the figures against their goals).

pub mod mesh;
pub mod node;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use breakwater_protocol::Tlp;
use serde::Serialize;

use crate::machine::{self, Machine};
use crate::run::PhaseOptions;
use crate::scenario::{LinkSettings, NodeSettings, Plan};

use self::mesh::{MeshSettings, Search, Side, Step};
use self::node::{ColdStart, InSync};

/// A part of the bench that can run alone (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    /// Mesh latency against raw gossipsub (and duplicates).
    Latency,
    /// Sustained mesh throughput against raw gossipsub.
    Throughput,
    /// Ingest, catch-up, the in-sync round and storage.
    Node,
}

/// What a bench run measures and at what size.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSettings {
    /// `full`, `quick` or `tiny`.
    pub mode: String,
    /// The parts that run.
    pub sections: Vec<Section>,
    /// Mesh sizes for the latency comparison.
    pub latency_nodes: Vec<usize>,
    /// Publish rate during the latency runs, bulletins per second.
    pub latency_rate_per_s: f64,
    /// Publishing time of each latency run, s.
    pub latency_publish_s: f64,
    /// The throughput search.
    pub throughput: Search,
    /// The mesh.
    pub mesh: MeshSettings,
    /// Envelopes in each ingest run.
    pub ingest_envelopes: usize,
    /// Missed envelopes in the catch-up run.
    pub catchup_envelopes: usize,
    /// Roster size for the in-sync round.
    pub in_sync_members: usize,
    /// How long each raw verify measurement runs, s.
    pub verify_s: f64,
}

/// Every section.
pub const ALL: [Section; 3] = [Section::Latency, Section::Throughput, Section::Node];

impl BenchSettings {
    fn mesh() -> MeshSettings {
        MeshSettings {
            degree: 6,
            link: LinkSettings {
                latency_ms: 20.0,
                jitter_ms: 5.0,
            },
            // Production intervals (`Config::default`): the bench measures
            // the gossip fast path as deployed; simulations scale these down
            // only to show recovery in short runs.
            node: NodeSettings {
                sync_interval_ms: 15_000,
                heartbeat_ms: 1000,
                max_redial_backoff_ms: 2000,
            },
            warmup_s: 3.0,
            drain_s: 20.0,
        }
    }

    /// Everything at the sizes the issue names (about 6 minutes on 2 cores).
    pub fn full() -> BenchSettings {
        BenchSettings {
            mode: "full".into(),
            sections: ALL.to_vec(),
            latency_nodes: vec![50, 100, 300],
            latency_rate_per_s: 4.0,
            latency_publish_s: 15.0,
            throughput: Search {
                nodes: 50,
                start_per_s: 8.0,
                max_per_s: 4096.0,
                step_s: 5.0,
                p99_bound_ms: 1000.0,
            },
            mesh: Self::mesh(),
            ingest_envelopes: 20_000,
            catchup_envelopes: 100_000,
            in_sync_members: 100,
            verify_s: 2.0,
        }
    }

    /// The same figures at smaller sizes (under 2 minutes).
    pub fn quick() -> BenchSettings {
        BenchSettings {
            mode: "quick".into(),
            sections: ALL.to_vec(),
            latency_nodes: vec![50],
            latency_rate_per_s: 4.0,
            latency_publish_s: 5.0,
            throughput: Search {
                nodes: 20,
                start_per_s: 16.0,
                max_per_s: 1024.0,
                step_s: 2.0,
                p99_bound_ms: 1000.0,
            },
            mesh: MeshSettings {
                warmup_s: 1.0,
                drain_s: 10.0,
                ..Self::mesh()
            },
            ingest_envelopes: 5_000,
            catchup_envelopes: 10_000,
            in_sync_members: 100,
            verify_s: 0.5,
        }
    }

    /// Every code path at toy sizes, for tests in debug builds.
    pub fn tiny() -> BenchSettings {
        BenchSettings {
            mode: "tiny".into(),
            sections: ALL.to_vec(),
            // Two sizes, so tests see the GREEN envelope not grow with the mesh.
            latency_nodes: vec![8, 50],
            latency_rate_per_s: 4.0,
            latency_publish_s: 2.0,
            throughput: Search {
                nodes: 6,
                start_per_s: 4.0,
                max_per_s: 8.0,
                step_s: 1.0,
                p99_bound_ms: 5000.0,
            },
            mesh: MeshSettings {
                degree: 3,
                warmup_s: 0.5,
                drain_s: 10.0,
                ..Self::mesh()
            },
            ingest_envelopes: 200,
            catchup_envelopes: 400,
            in_sync_members: 10,
            verify_s: 0.1,
        }
    }
}

/// `mesh_latency[]`.
#[derive(Debug, Clone, Serialize)]
pub struct MeshLatency {
    /// Nodes.
    pub nodes: usize,
    /// Breakwater, publish call → stored at each intended recipient, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Raw gossipsub, publish → delivered to the application, ms.
    pub raw_p50_ms: f64,
    /// 99th percentile, ms.
    pub raw_p99_ms: f64,
    /// Breakwater / raw.
    pub ratio_p50: f64,
    /// Breakwater / raw.
    pub ratio_p99: f64,
    /// Mean encoded size of the bench bulletin's (GREEN) envelope, bytes.
    pub envelope_bytes: usize,
    /// Process CPU seconds during the Breakwater phase (stores, start-up,
    /// warm-up, publishing and drain).
    pub cpu_s: f64,
    /// Process CPU seconds during the raw gossipsub phase, same plan.
    pub raw_cpu_s: f64,
    /// CPU per delivered (envelope, recipient) pair, Breakwater / raw
    /// (`cpu_s / raw_cpu_s` when both deliver everything).
    pub cpu_ratio: f64,
    /// Of `cpu_s`, from the first publish to the end of the drain (no
    /// start-up, no warm-up).
    pub script_cpu_s: f64,
    /// Of `raw_cpu_s`, the same window.
    pub raw_script_cpu_s: f64,
    /// `cpu_ratio` over that window only.
    pub script_cpu_ratio: f64,
    /// Both sides in full.
    pub breakwater: Side,
    /// The raw side.
    pub raw: Side,
}

/// `mesh_throughput`.
#[derive(Debug, Clone, Serialize)]
pub struct MeshThroughput {
    /// Highest sustained Breakwater rate, bulletins per second across the mesh.
    pub per_s: f64,
    /// Same rule, raw gossipsub.
    pub raw_per_s: f64,
    /// Breakwater / raw.
    pub ratio: f64,
    /// Nodes.
    pub nodes: usize,
    /// The p99 bound, ms.
    pub p99_bound_ms: f64,
    /// Breakwater's steps.
    pub steps: Vec<Step>,
    /// Raw gossipsub's steps.
    pub raw_steps: Vec<Step>,
}

/// `ingest`.
#[derive(Debug, Clone, Serialize)]
pub struct Ingest {
    /// Envelopes validated and stored per second (not a recipient).
    pub per_s: f64,
    /// This machine's raw ed25519 verify rate on one core, same run.
    pub raw_verify_per_s: f64,
    /// `per_s / raw_verify_per_s`.
    pub ratio: f64,
    /// Envelopes validated, opened and stored per second (a recipient).
    pub opened_per_s: f64,
    /// `opened_per_s / raw_verify_per_s`.
    pub opened_ratio: f64,
    /// Raw verify on every core at once.
    pub raw_verify_all_cores_per_s: f64,
    /// `per_s / raw_verify_all_cores_per_s`: ingest checks on every core too.
    pub ratio_all_cores: f64,
    /// Envelopes per run.
    pub envelopes: usize,
    /// Mean envelope size, bytes.
    pub envelope_bytes: usize,
}

/// `catchup`.
#[derive(Debug, Clone, Serialize)]
pub struct Catchup {
    /// Missed envelopes taken per second from node start (all opened).
    pub per_s: f64,
    /// Envelopes missed.
    pub envelopes: usize,
    /// Seconds from node start to the last one stored.
    pub seconds: f64,
    /// Raw ed25519 verify on one core, same run.
    pub raw_verify_per_s: f64,
    /// `per_s / raw_verify_per_s`.
    pub ratio: f64,
    /// Envelopes the node could open (all of them when it caught up).
    pub opened: u64,
    /// Mean envelope size, bytes.
    pub envelope_bytes: usize,
    /// Bytes on the wire for one round between nodes in sync.
    pub in_sync_bytes: u64,
    /// Requests in that round.
    pub in_sync_round_trips: u64,
    /// The in-sync round in full.
    pub in_sync: InSync,
}

/// `storage`.
#[derive(Debug, Clone, Serialize)]
pub struct Storage {
    /// Store bytes on disk per envelope (files of the store directory).
    pub bytes_per_envelope: f64,
    /// Encoded envelope size, the baseline.
    pub envelope_bytes: usize,
    /// `bytes_per_envelope / envelope_bytes`.
    pub ratio: f64,
    /// Process start → answering, with the caught-up store, ms.
    pub cold_start_ms: f64,
    /// Peak RSS of that process, MiB.
    pub rss_mb: f64,
    /// The next start of the same store, ms: sled recovers from the snapshot
    /// the first start wrote instead of replaying its log.
    pub cold_start_again_ms: f64,
    /// The same with an empty store: the baseline.
    pub empty: ColdStart,
    /// Envelopes in the store.
    pub envelopes: u64,
}

/// One figure against its goal.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// What.
    pub figure: String,
    /// Measured.
    pub value: f64,
    /// The goal, in words.
    pub goal: String,
    /// Met?
    pub met: bool,
}

/// `bench.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Where it ran.
    pub machine: Machine,
    /// Seed of every plan.
    pub seed: u64,
    /// OS processes the Breakwater nodes of the mesh parts ran in
    /// (`--processes`; raw gossipsub always runs in one).
    pub processes: usize,
    /// Sizes and settings.
    pub settings: BenchSettings,
    /// Mesh latency per size.
    pub mesh_latency: Vec<MeshLatency>,
    /// Sustained throughput (`null` when not run).
    pub mesh_throughput: Option<MeshThroughput>,
    /// Ingest (`null` when not run).
    pub ingest: Option<Ingest>,
    /// Catch-up (`null` when not run).
    pub catchup: Option<Catchup>,
    /// Redundant copies per (envelope, node): the worst mesh-latency run.
    pub duplicates_per_envelope: Option<f64>,
    /// The worst raw gossipsub run.
    pub duplicates_raw_per_envelope: Option<f64>,
    /// Storage (`null` when not run).
    pub storage: Option<Storage>,
    /// The goals.
    pub goals: Vec<Goal>,
    /// Wall time of the whole run, s.
    pub wall_s: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Runs every figure of `settings` and returns the report.
pub async fn bench(
    settings: &BenchSettings,
    seed: u64,
    phase: &PhaseOptions,
) -> anyhow::Result<BenchReport> {
    let started = std::time::Instant::now();
    // The phases stay quiet; the bench reports its own progress.
    let progress = phase.verbose;
    let say = |what: &str| {
        if progress {
            eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
        }
    };
    let phase = &PhaseOptions {
        work_dir: phase.work_dir.clone(),
        verbose: false,
        processes: phase.processes,
    };
    let root = phase.temp_dir("breakwater-bench-")?;
    let wants = |section: Section| settings.sections.contains(&section);

    say("raw ed25519 verify");
    let verify = tokio::task::spawn_blocking({
        let span = Duration::from_secs_f64(settings.verify_s);
        move || node::raw_verify_rate(span)
    })
    .await?;

    let mut mesh_latency = Vec::new();
    if wants(Section::Latency) {
        for &nodes in &settings.latency_nodes {
            say(&format!("mesh latency, {nodes} nodes"));
            let scenario = settings.mesh.scenario(
                "bench-latency",
                nodes,
                settings.latency_rate_per_s,
                settings.latency_publish_s,
            );
            let plan = Plan::new(&scenario, seed)?;
            let (breakwater, raw) = mesh::both(&plan, phase).await?;
            let per_delivery = |side: &Side| side.cpu_s / side.delivered.max(1) as f64;
            let per_script_delivery =
                |side: &Side| side.script_cpu_s / side.delivered.max(1) as f64;

            mesh_latency.push(MeshLatency {
                nodes,
                p50_ms: breakwater.p50_ms,
                p99_ms: breakwater.p99_ms,
                raw_p50_ms: raw.p50_ms,
                raw_p99_ms: raw.p99_ms,
                ratio_p50: ratio(breakwater.p50_ms, raw.p50_ms),
                ratio_p99: ratio(breakwater.p99_ms, raw.p99_ms),
                envelope_bytes: breakwater.message_bytes.round() as usize,
                cpu_s: breakwater.cpu_s,
                raw_cpu_s: raw.cpu_s,
                cpu_ratio: ratio(per_delivery(&breakwater), per_delivery(&raw)),
                script_cpu_s: breakwater.script_cpu_s,
                raw_script_cpu_s: raw.script_cpu_s,
                script_cpu_ratio: ratio(
                    per_script_delivery(&breakwater),
                    per_script_delivery(&raw),
                ),
                breakwater,
                raw,
            });
        }
    }

    let mesh_throughput = if wants(Section::Throughput) {
        let search = &settings.throughput;
        say("mesh throughput, Breakwater");
        let (per_s, steps, payload) =
            mesh::sustained_rate(search, &settings.mesh, seed, phase, progress).await?;
        say("mesh throughput, raw gossipsub");
        let (raw_per_s, raw_steps) =
            mesh::raw_sustained_rate(payload, search, &settings.mesh, seed, progress).await?;
        Some(MeshThroughput {
            per_s,
            raw_per_s,
            ratio: ratio(per_s, raw_per_s),
            nodes: search.nodes,
            p99_bound_ms: search.p99_bound_ms,
            steps,
            raw_steps,
        })
    } else {
        None
    };

    let (ingest, catchup, storage) = if wants(Section::Node) {
        let (i, c, s) = node_figures(settings, seed, root.path(), verify, &say).await?;
        (Some(i), Some(c), Some(s))
    } else {
        (None, None, None)
    };

    let worst = |side: fn(&MeshLatency) -> Option<f64>| {
        mesh_latency.iter().filter_map(side).reduce(f64::max)
    };
    let mut report = BenchReport {
        machine: machine::machine(),
        seed,
        processes: phase.processes.max(1),
        settings: settings.clone(),
        duplicates_per_envelope: worst(|m| m.breakwater.duplicates),
        duplicates_raw_per_envelope: worst(|m| m.raw.duplicates),
        mesh_latency,
        mesh_throughput,
        ingest,
        catchup,
        storage,
        goals: Vec::new(),
        wall_s: 0.0,
    };
    report.goals = goals(&report);
    report.wall_s = round(started.elapsed().as_secs_f64());
    Ok(report)
}

/// Ingest (not a recipient, then a recipient), catch-up, the in-sync round,
/// and storage of the caught-up store.
async fn node_figures(
    settings: &BenchSettings,
    seed: u64,
    root: &Path,
    verify: node::VerifyRate,
    say: &impl Fn(&str),
) -> anyhow::Result<(Ingest, Catchup, Storage)> {
    say("ingest, not a recipient");
    let (amber, _) = node::transfer(
        &root.join("ingest-amber"),
        settings.ingest_envelopes,
        Tlp::Amber,
        seed,
    )
    .await?;
    say("ingest, a recipient");
    let (green, _) = node::transfer(
        &root.join("ingest-green"),
        settings.ingest_envelopes,
        Tlp::Green,
        seed,
    )
    .await?;
    say("catch-up");
    let (catchup, caught_up) = node::transfer(
        &root.join("catchup"),
        settings.catchup_envelopes,
        Tlp::Green,
        seed,
    )
    .await?;
    say("in-sync round");
    let in_sync = node::in_sync(&root.join("in-sync"), settings.in_sync_members).await?;

    say("storage and cold start");
    let store_bytes = node::dir_bytes(&caught_up.join("store"));
    let cold = node::cold_start(&caught_up).await?;
    // sled writes its recovery snapshot only when it opens a store, so the
    // first start replays the log written since; the next one does not.
    let again = node::cold_start(&caught_up).await?;
    let empty = node::cold_start(&root.join("in-sync").join("node-001")).await?;
    let bytes_per_envelope = store_bytes as f64 / (catchup.envelopes.max(1)) as f64;
    Ok((
        Ingest {
            per_s: round(amber.ingest_per_s),
            raw_verify_per_s: round(verify.one_core),
            ratio: ratio(amber.ingest_per_s, verify.one_core),
            opened_per_s: round(green.ingest_per_s),
            opened_ratio: ratio(green.ingest_per_s, verify.one_core),
            raw_verify_all_cores_per_s: round(verify.all_cores),
            ratio_all_cores: ratio(amber.ingest_per_s, verify.all_cores),
            envelopes: amber.envelopes,
            envelope_bytes: amber.envelope_bytes,
        },
        Catchup {
            per_s: round(catchup.from_start_per_s),
            envelopes: catchup.envelopes,
            seconds: round(catchup.envelopes as f64 / catchup.from_start_per_s.max(1e-9)),
            raw_verify_per_s: round(verify.one_core),
            ratio: ratio(catchup.from_start_per_s, verify.one_core),
            opened: catchup.readable,
            envelope_bytes: catchup.envelope_bytes,
            in_sync_bytes: in_sync.bytes,
            in_sync_round_trips: in_sync.round_trips,
            in_sync,
        },
        Storage {
            bytes_per_envelope: round(bytes_per_envelope),
            envelope_bytes: catchup.envelope_bytes,
            ratio: ratio(bytes_per_envelope, catchup.envelope_bytes as f64),
            cold_start_ms: round(cold.cold_start_ms),
            rss_mb: round(cold.rss_mb),
            cold_start_again_ms: round(again.cold_start_ms),
            empty,
            envelopes: cold.envelopes,
        },
    ))
}

fn goals(r: &BenchReport) -> Vec<Goal> {
    let mut goals = Vec::new();
    let mut goal = |figure: String, value: f64, goal: &str, met: bool| {
        goals.push(Goal {
            figure,
            value,
            goal: goal.into(),
            met,
        })
    };
    for m in &r.mesh_latency {
        let n = m.nodes;
        let bound = "<= 1.3x raw gossipsub";
        goal(
            format!("mesh latency p50 ratio, {n} nodes"),
            m.ratio_p50,
            bound,
            m.ratio_p50 <= 1.3,
        );
        goal(
            format!("mesh latency p99 ratio, {n} nodes"),
            m.ratio_p99,
            bound,
            m.ratio_p99 <= 1.3,
        );
    }
    if let Some(largest) = r.mesh_latency.iter().max_by_key(|m| m.nodes) {
        goal(
            format!("CPU per delivery / raw gossipsub, {} nodes", largest.nodes),
            largest.cpu_ratio,
            "<= 1.5",
            largest.cpu_ratio <= 1.5,
        );
    }
    if let Some(biggest) = r.mesh_latency.iter().map(|m| m.envelope_bytes).max() {
        goal(
            "GREEN envelope of the bench bulletin, largest over mesh sizes, bytes".into(),
            biggest as f64,
            "<= 1024",
            biggest <= 1024,
        );
    }
    if let Some(t) = &r.mesh_throughput {
        goal(
            "mesh throughput / raw gossipsub".into(),
            t.ratio,
            ">= 1.0",
            t.ratio >= 1.0,
        );
    }
    if let Some(i) = &r.ingest {
        goal(
            "ingest, envelopes/s".into(),
            i.per_s,
            ">= 10000/s",
            i.per_s >= 10_000.0,
        );
        goal(
            "ingest / raw verify".into(),
            i.ratio,
            ">= 0.4",
            i.ratio >= 0.4,
        );
    }
    if let Some(c) = &r.catchup {
        let figure = format!("catch-up of {}, envelopes/s", c.envelopes);
        goal(figure, c.per_s, ">= 10000/s", c.per_s >= 10_000.0);
        goal(
            format!(
                "catch-up of {} (every one opened) / raw verify",
                c.envelopes
            ),
            c.ratio,
            ">= 1.0, all opened",
            c.ratio >= 1.0 && c.opened == c.envelopes as u64,
        );
    }
    if let Some(st) = &r.storage {
        goal(
            "store bytes per envelope / envelope size".into(),
            st.ratio,
            "<= 1.5",
            st.ratio <= 1.5,
        );
        goal(
            format!("cold start with {} envelopes, ms", st.envelopes),
            st.cold_start_ms,
            "<= 200 ms",
            st.cold_start_ms <= 200.0,
        );
    }
    if let Some(d) = r.duplicates_per_envelope {
        goal(
            "duplicates per envelope per node".into(),
            d,
            "<= 2",
            d <= 2.0,
        );
    }
    goals
}

/// `bench.md`: the figures against their goals and with their baselines.
pub fn markdown(r: &BenchReport) -> String {
    let mut s = String::new();
    let m = &r.machine;
    s.push_str(&format!(
        "# Breakwater bench ({} mode)\n\n{} ({} cores, {} MiB), kernel {}; seed {}; {:.0} s wall.\n\n",
        r.settings.mode, m.model, m.cores, m.memory_mb, m.kernel, r.seed, r.wall_s
    ));
    if r.processes > 1 {
        s.push_str(&format!(
            "The Breakwater nodes of the mesh parts ran in {} OS processes (`--processes`); raw gossipsub ran in one.\n\n",
            r.processes
        ));
    }
    s.push_str("## Goals\n\n| figure | measured | goal | met |\n|---|---|---|---|\n");
    for g in &r.goals {
        let met = if g.met { "yes" } else { "**no**" };
        s.push_str(&format!(
            "| {} | {} | {} | {met} |\n",
            g.figure, g.value, g.goal
        ));
    }
    if !r.mesh_latency.is_empty() {
        s.push_str("\n## Mesh latency: publish -> stored at every intended recipient\n\n");
        s.push_str("| nodes | envelopes | envelope B | p50 ms | p99 ms | raw p50 ms | raw p99 ms | ratio p50 | ratio p99 | delivery | raw delivery | duplicates | raw duplicates | CPU s | raw CPU s | CPU ratio | publishing CPU s | raw | ratio |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    }
    for l in &r.mesh_latency {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.4} | {:.4} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} |\n",
            l.nodes,
            l.breakwater.envelopes,
            l.envelope_bytes,
            l.p50_ms,
            l.p99_ms,
            l.raw_p50_ms,
            l.raw_p99_ms,
            l.ratio_p50,
            l.ratio_p99,
            l.breakwater.delivery,
            l.raw.delivery,
            opt(l.breakwater.duplicates),
            opt(l.raw.duplicates),
            l.cpu_s,
            l.raw_cpu_s,
            l.cpu_ratio,
            l.script_cpu_s,
            l.raw_script_cpu_s,
            l.script_cpu_ratio,
        ));
    }
    for l in &r.mesh_latency {
        let threads = |side: &Side| {
            side.script_cpu_by_thread
                .iter()
                .map(|(name, s)| format!("{name} {s:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        s.push_str(&format!(
            "\n{} nodes, publishing CPU s by thread (live threads): Breakwater {}; raw {}.\n",
            l.nodes,
            threads(&l.breakwater),
            threads(&l.raw)
        ));
    }
    if let Some(t) = &r.mesh_throughput {
        s.push_str(&format!(
            "\n## Mesh throughput ({} nodes, p99 <= {} ms, every copy delivered)\n\nBreakwater {}/s, raw gossipsub {}/s, ratio {}.\n\n| system | offered /s | p99 ms | delivery | sustained |\n|---|---|---|---|---|\n",
            t.nodes, t.p99_bound_ms, t.per_s, t.raw_per_s, t.ratio
        ));
        for (name, steps) in [("Breakwater", &t.steps), ("raw", &t.raw_steps)] {
            for step in steps {
                s.push_str(&format!(
                    "| {name} | {} | {} | {:.4} | {} |\n",
                    step.rate_per_s, step.side.p99_ms, step.side.delivery, step.sustained
                ));
            }
        }
    }
    if let (Some(i), Some(c), Some(st)) = (&r.ingest, &r.catchup, &r.storage) {
        s.push_str(&format!(
            "\n## One node\n\n| figure | value | baseline | ratio |\n|---|---|---|---|\n\
             | ingest, validated and stored ({} envelopes of {} B) | {}/s | raw verify {}/s (one core) | {} |\n\
             | ingest, validated, opened and stored | {}/s | raw verify {}/s | {} |\n\
             | ingest against raw verify on all {} cores | {}/s | raw verify {}/s | {} |\n\
             | catch-up of {} missed ({} opened), from node start | {}/s ({} s) | raw verify {}/s | {} |\n\
             | one sync when in sync ({}-member roster) | {} B, {} round trip(s) | payload {} B | |\n\
             | store bytes per envelope | {} | envelope {} B | {} |\n\
             | cold start with {} envelopes | {} ms, {} MiB peak RSS (next start {} ms) | empty store: {} ms, {} MiB | |\n",
            i.envelopes,
            i.envelope_bytes,
            i.per_s,
            i.raw_verify_per_s,
            i.ratio,
            i.opened_per_s,
            i.raw_verify_per_s,
            i.opened_ratio,
            r.machine.cores,
            i.per_s,
            i.raw_verify_all_cores_per_s,
            i.ratio_all_cores,
            c.envelopes,
            c.opened,
            c.per_s,
            c.seconds,
            c.raw_verify_per_s,
            c.ratio,
            c.in_sync.roster_members,
            c.in_sync_bytes,
            c.in_sync_round_trips,
            c.in_sync.payload_bytes,
            st.bytes_per_envelope,
            st.envelope_bytes,
            st.ratio,
            st.envelopes,
            st.cold_start_ms,
            st.rss_mb,
            st.cold_start_again_ms,
            round(st.empty.cold_start_ms),
            round(st.empty.rss_mb),
        ));
    }
    if let Some(d) = r.duplicates_per_envelope {
        s.push_str(&format!(
            "\nDuplicates per envelope per node (worst mesh-latency run): {d:.2}; raw gossipsub {}.\n",
            opt(r.duplicates_raw_per_envelope)
        ));
    }
    s
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.2}"))
}

/// Writes `bench.json` and `bench.md` into `dir`.
pub fn write(report: &BenchReport, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = dir.join("bench.json");
    std::fs::write(&json, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let md = dir.join("bench.md");
    std::fs::write(&md, markdown(report))
        .with_context(|| format!("cannot write {}", md.display()))?;
    Ok(md)
}
