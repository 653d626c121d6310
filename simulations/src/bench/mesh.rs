//! Mesh-level figures of `bench`: publish → stored latency at every intended
//! recipient, and the sustained publish rate before p99 passes a bound, each
//! for Breakwater ([`run_phase`]) and for raw gossipsub ([`run_raw_phase`])
//! on the same plan: same seed, topology, link shape, publishing script and
//! payload size.

use serde::Serialize;

use crate::metrics::{self, Figures};
use crate::raw::run_raw_phase;
use crate::run::{PhaseOptions, run_phase};
use crate::scenario::{
    LinkSettings, NodeSettings, Plan, Publishing, Scenario, Topology, TopologyKind,
};

/// The mesh every mesh figure runs on.
#[derive(Debug, Clone, Serialize)]
pub struct MeshSettings {
    /// Links each node picks (a ring plus random links).
    pub degree: usize,
    /// Healthy link delay and jitter.
    pub link: LinkSettings,
    /// Node intervals (sync, heartbeat, redial).
    pub node: NodeSettings,
    /// Quiet time before publishing, s.
    pub warmup_s: f64,
    /// Longest wait for delivery after publishing stops, s.
    pub drain_s: f64,
}

impl MeshSettings {
    /// A scenario of `nodes` publishing GREEN bulletins at `rate_per_s` for `publish_s`.
    pub fn scenario(&self, name: &str, nodes: usize, rate_per_s: f64, publish_s: f64) -> Scenario {
        Scenario {
            name: name.to_string(),
            description: format!(
                "{nodes} nodes, GREEN bulletins at {rate_per_s}/s for {publish_s} s"
            ),
            nodes,
            duration_s: publish_s + 0.5,
            drain_s: self.drain_s,
            warmup_s: self.warmup_s,
            node: self.node.clone(),
            topology: Topology {
                kind: TopologyKind::Random,
                degree: self.degree,
            },
            link: self.link.clone(),
            publish: Some(Publishing {
                start_s: 0.0,
                end_s: Some(publish_s),
                rate_per_s,
                amber_fraction: 0.0,
                amber_orgs: 1,
            }),
            bursts: Vec::new(),
            impairments: Vec::new(),
            partitions: Vec::new(),
            crashes: Vec::new(),
            late_joiners: None,
            hostile: None,
            equivocator: None,
        }
    }
}

/// One system's figures for one plan.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// Publications.
    pub envelopes: usize,
    /// Delivered pairs / intended pairs.
    pub delivery: f64,
    /// Delivered (envelope, recipient) pairs.
    pub delivered: usize,
    /// Publish → arrival at each intended recipient, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Redundant copies per (envelope, node).
    pub duplicates: Option<f64>,
    /// Payload or envelope bytes.
    pub message_bytes: f64,
    /// Process CPU seconds for the phase.
    pub cpu_s: f64,
    /// Of those, from the first publish to the end of the drain.
    pub script_cpu_s: f64,
    /// Of those, during the warm-up (idle mesh).
    pub warmup_cpu_s: f64,
    /// Failed publishes.
    pub failed: u64,
    /// Connections the simulated network established over the phase.
    pub connections: u64,
    /// `script_cpu_s` of the threads alive at both ends, by thread name.
    pub script_cpu_by_thread: Vec<(String, f64)>,
    /// OS processes that ran the nodes and reported (1 unless `--processes`).
    pub processes: usize,
}

impl Side {
    fn of(figures: &Figures) -> Side {
        Side {
            envelopes: figures.envelopes_published,
            delivery: figures.delivery_ratio,
            delivered: figures.delivered_pairs,
            p50_ms: figures.latency_ms.p50,
            p99_ms: figures.latency_ms.p99,
            duplicates: figures.duplicates_per_envelope,
            message_bytes: figures.envelope_bytes,
            cpu_s: figures.cpu_seconds,
            script_cpu_s: figures.script_cpu_seconds,
            warmup_cpu_s: figures.warmup_cpu_seconds,
            failed: figures.failed_publishes,
            connections: figures.network.connections,
            script_cpu_by_thread: figures.script_cpu_by_thread.clone(),
            processes: figures.processes,
        }
    }

    /// Within `p99_bound_ms` with everything delivered and published.
    fn sustained(&self, p99_bound_ms: f64) -> bool {
        self.failed == 0 && self.delivery >= 0.999 && self.p99_ms <= p99_bound_ms
    }
}

/// Runs `plan` on Breakwater, then raw gossipsub with the envelope's size.
pub async fn both(plan: &Plan, phase: &PhaseOptions) -> anyhow::Result<(Side, Side)> {
    let breakwater = metrics::figures(&run_phase(plan, phase).await?);
    let payload = breakwater.envelope_bytes.round().max(16.0) as usize;
    let raw = metrics::figures(&run_raw_phase(plan, payload).await?);
    Ok((Side::of(&breakwater), Side::of(&raw)))
}

/// One step of the throughput search.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Offered rate, bulletins per second.
    pub rate_per_s: f64,
    /// What came of it.
    pub side: Side,
    /// Whether it stayed within the bound.
    pub sustained: bool,
}

/// How the throughput search runs.
#[derive(Debug, Clone, Serialize)]
pub struct Search {
    /// Nodes.
    pub nodes: usize,
    /// First rate tried.
    pub start_per_s: f64,
    /// Highest rate tried.
    pub max_per_s: f64,
    /// Publishing time per step, s.
    pub step_s: f64,
    /// The p99 bound, ms.
    pub p99_bound_ms: f64,
}

/// Which system a search measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    /// Breakwater nodes.
    Breakwater,
    /// Raw gossipsub with payloads of this many bytes.
    Raw(usize),
}

/// Breakwater's highest sustained rate (see [`search`]) and the mean envelope
/// size it published, for the raw search to carry.
pub async fn sustained_rate(
    search: &Search,
    mesh: &MeshSettings,
    seed: u64,
    phase: &PhaseOptions,
    verbose: bool,
) -> anyhow::Result<(f64, Vec<Step>, usize)> {
    let (best, steps) = run_search(System::Breakwater, search, mesh, seed, phase, verbose).await?;
    let sizes: Vec<f64> = steps.iter().map(|s| s.side.message_bytes).collect();
    let payload = (sizes.iter().sum::<f64>() / sizes.len().max(1) as f64).round() as usize;
    Ok((best, steps, payload.max(16)))
}

/// Raw gossipsub's highest sustained rate with `payload`-byte messages.
pub async fn raw_sustained_rate(
    payload: usize,
    search: &Search,
    mesh: &MeshSettings,
    seed: u64,
    verbose: bool,
) -> anyhow::Result<(f64, Vec<Step>)> {
    let phase = PhaseOptions {
        work_dir: std::env::temp_dir(),
        verbose: false,
        processes: 1,
    };
    run_search(System::Raw(payload), search, mesh, seed, &phase, verbose).await
}

/// Doubles the offered rate until a step misses the bound (or `max_per_s`),
/// then tries the midpoint once. Returns the highest sustained rate and
/// every step. Each step is a fresh mesh.
async fn run_search(
    system: System,
    search: &Search,
    mesh: &MeshSettings,
    seed: u64,
    phase: &PhaseOptions,
    verbose: bool,
) -> anyhow::Result<(f64, Vec<Step>)> {
    let mut steps: Vec<Step> = Vec::new();
    let mut best = 0.0f64;
    let mut failed_at = None;
    let mut rate = search.start_per_s;
    let run = |rate: f64| async move {
        let scenario = mesh.scenario("bench-throughput", search.nodes, rate, search.step_s);
        let plan = Plan::new(&scenario, seed)?;
        let figures = match system {
            System::Breakwater => metrics::figures(&run_phase(&plan, phase).await?),
            System::Raw(bytes) => metrics::figures(&run_raw_phase(&plan, bytes).await?),
        };
        let side = Side::of(&figures);
        let sustained = side.sustained(search.p99_bound_ms);
        if verbose {
            eprintln!(
                "throughput {system:?} {rate}/s: p99 {} ms, delivery {:.4} -> {}",
                side.p99_ms,
                side.delivery,
                if sustained { "sustained" } else { "missed" }
            );
        }
        anyhow::Ok(Step {
            rate_per_s: rate,
            side,
            sustained,
        })
    };
    while rate <= search.max_per_s {
        let step = run(rate).await?;
        let ok = step.sustained;
        steps.push(step);
        if !ok {
            failed_at = Some(rate);
            break;
        }
        best = rate;
        rate *= 2.0;
    }
    if let Some(failed) = failed_at
        && best > 0.0
    {
        let middle = ((best + failed) / 2.0).round();
        if middle > best && middle < failed {
            let step = run(middle).await?;
            if step.sustained {
                best = middle;
            }
            steps.push(step);
        }
    }
    Ok((best, steps))
}
