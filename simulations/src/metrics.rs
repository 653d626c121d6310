//! Turns a phase's raw records ([`PhaseData`]) into the figures of
//! `report.json` ([`Figures`]) and the time series the plots draw.

use std::collections::{HashMap, HashSet};

use breakwater_protocol::Digest;
use serde::Serialize;

use crate::network::NetworkCounters;
use crate::run::PhaseData;

/// Latency percentiles, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// A spread over envelopes, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// What hostile members tried and what came of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostileFigures {
    /// Non-envelope messages sent.
    pub garbage_sent: u64,
    /// Envelopes with a forged author sent.
    pub forged_sent: u64,
    /// Envelopes with a tampered payload sent.
    pub tampered_sent: u64,
    /// Equivocating pairs sent.
    pub equivocating_pairs_sent: u64,
    /// Equivocation evidence records held by honest nodes at the end.
    pub evidence_records: u64,
    /// Honest nodes holding any equivocation evidence at the end.
    pub evidence_nodes: u64,
}

/// The figures of one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Acknowledged honest publications.
    pub envelopes_published: usize,
    /// Intended (envelope, recipient) pairs stored and opened by the end,
    /// divided by the intended pairs (author excluded).
    pub delivery_ratio: f64,
    /// Intended pairs.
    pub intended_pairs: usize,
    /// Delivered and opened pairs.
    pub delivered_pairs: usize,
    /// Publish call → stored and opened at each intended recipient.
    pub latency_ms: Percentiles,
    /// Per envelope: publish → the last intended recipient.
    pub time_to_all_ms: Spread,
    /// Per envelope: publish → 95 % of intended recipients.
    pub time_to_95_ms: Spread,
    /// Last heal (partition end or restart of crashed nodes) → every live
    /// honest frontier equal (confirmed with `status().frontier`); null when
    /// nothing healed.
    pub convergence_after_heal_ms: Option<f64>,
    /// Whether every honest node's `status().frontier` was equal at the end.
    pub frontiers_equal_at_end: bool,
    /// Redundant copies received per (envelope, node); see notes.
    pub duplicates_per_envelope: Option<f64>,
    /// Copies that came by sync per (envelope, node).
    pub sync_copies_per_envelope: Option<f64>,
    /// Envelope copies a node received beyond the first, per (envelope,
    /// node): gossip duplicates plus sync copies, so
    /// `gossip_copies_per_envelope + sync_copies_per_envelope - 1`. The same
    /// count as `duplicates_per_envelope`, under the name the goal uses.
    pub copies_per_envelope: Option<f64>,
    /// Copies that came by gossip (first copies included) per (envelope, node).
    pub gossip_copies_per_envelope: Option<f64>,
    /// Bytes on the wire per envelope per node, idle traffic subtracted.
    pub bytes_per_envelope_per_node: f64,
    /// Bytes written per node over the run, idle traffic included.
    pub gross_bytes_per_node: f64,
    /// Idle traffic per node per second (pings, heartbeats, sync digests).
    pub idle_bytes_per_node_per_s: f64,
    /// Mean encoded envelope size, bytes.
    pub envelope_bytes: f64,
    /// Honest-node acceptances of invalid hostile envelopes, plus honest
    /// nodes holding both envelopes of an equivocating pair.
    pub forged_accepted: u64,
    /// Hostile activity, when there was any.
    pub hostile: Option<HostileFigures>,
    /// Envelopes of the equivocator (a member signing one seq twice)
    /// pushed into honest nodes; 0 without one.
    pub equivocator_pushed: u64,
    /// Honest nodes holding any equivocation evidence at the end.
    pub evidence_nodes: u64,
    /// Whether every honest node held every acknowledged publication of
    /// every honest author at the end (null when not measured).
    pub honest_feeds_complete: Option<bool>,
    /// What the network did.
    pub network: NetworkCounters,
    /// Publishes that failed (a node crashed under them).
    pub failed_publishes: u64,
    /// Stored events lost by a lagging subscription (should be 0).
    pub lagged_events: u64,
    /// Script length, ms.
    pub script_ms: f64,
    /// Script start → full delivery (or the drain deadline), ms.
    pub run_ms: f64,
    /// Seconds to create stores, start nodes and connect them.
    pub startup_s: f64,
    /// CPU seconds of the whole process during the phase.
    pub cpu_seconds: f64,
    /// Of `cpu_seconds`, those from the script's start to the end of the
    /// drain (publishing and delivering; no start-up, no warm-up).
    pub script_cpu_seconds: f64,
    /// Of `cpu_seconds`, those of the warm-up (the idle mesh).
    pub warmup_cpu_seconds: f64,
    /// `script_cpu_seconds` of the threads alive at both ends, by thread
    /// name, largest first (threads that exited in between are missing).
    pub script_cpu_by_thread: Vec<(String, f64)>,
    /// Peak resident memory during the phase, MiB.
    pub peak_rss_mb: f64,
    /// `cpu_seconds` divided by the nodes of the run.
    pub cpu_s_per_node: f64,
    /// `peak_rss_mb` (the whole process) divided by the nodes of the run.
    pub peak_rss_mib_per_node: f64,
    /// OS processes that ran the nodes and reported (1 unless `--processes`).
    pub processes: usize,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// First time each (envelope, node) pair was stored readable, ms since the clock origin.
pub fn readable_at(data: &PhaseData) -> HashMap<(Digest, usize), f64> {
    let mut first = HashMap::new();
    for s in data.stores.iter().filter(|s| s.readable) {
        first.entry((s.id, s.node)).or_insert(s.t_ms);
    }
    first
}

/// Computes the figures of a phase.
pub fn figures(data: &PhaseData) -> Figures {
    let readable = readable_at(data);
    let mut latencies = Vec::new();
    let mut to_all = Vec::new();
    let mut to_95 = Vec::new();
    let mut intended = 0;
    for p in &data.publications {
        let mut mine: Vec<f64> = p
            .recipients
            .iter()
            .filter_map(|&r| readable.get(&(p.id, r)))
            .map(|t| (t - p.t_ms).max(0.0))
            .collect();
        intended += p.recipients.len();
        mine.sort_by(f64::total_cmp);
        if !p.recipients.is_empty() {
            if mine.len() == p.recipients.len()
                && let Some(last) = mine.last()
            {
                to_all.push(*last);
            }
            let need = ((p.recipients.len() as f64) * 0.95).ceil() as usize;
            if let Some(t) = mine.get(need.saturating_sub(1)) {
                to_95.push(*t);
            }
        }
        latencies.extend(mine);
    }
    let delivered = latencies.len();
    let latencies = sorted(latencies);
    let to_all = sorted(to_all);
    let to_95 = sorted(to_95);

    // Hostile envelopes accepted by honest nodes.
    let honest: HashSet<usize> = data.honest.iter().copied().collect();
    let invalid: HashSet<Digest> = data
        .hostile_logs
        .iter()
        .flat_map(|l| l.invalid_ids.iter().copied())
        .collect();
    let mut forged_accepted = data
        .stores
        .iter()
        .filter(|s| honest.contains(&s.node) && invalid.contains(&s.id))
        .count() as u64;
    let stored: HashSet<(Digest, usize)> = data.stores.iter().map(|s| (s.id, s.node)).collect();
    for log in &data.hostile_logs {
        for (_, first, twin) in &log.twins {
            forged_accepted += data
                .honest
                .iter()
                .filter(|&&n| stored.contains(&(*first, n)) && stored.contains(&(*twin, n)))
                .count() as u64;
        }
    }
    let hostile = (!data.hostile_logs.is_empty()).then(|| HostileFigures {
        garbage_sent: data.hostile_logs.iter().map(|l| l.garbage).sum(),
        forged_sent: data.hostile_logs.iter().map(|l| l.forged).sum(),
        tampered_sent: data.hostile_logs.iter().map(|l| l.tampered).sum(),
        equivocating_pairs_sent: data.hostile_logs.iter().map(|l| l.twins.len() as u64).sum(),
        evidence_records: data.evidence,
        evidence_nodes: data.evidence_nodes,
    });

    // Traffic.
    let n = data.n.max(1) as f64;
    let run_s = (data.end_ms / 1000.0).max(0.001);
    let envelopes = data.publications.len();
    let total_sent: u64 = data.bytes_sent.iter().sum();
    let idle = data.idle_bytes_per_s * run_s;
    let net_sent = (total_sent as f64 - idle).max(0.0);
    let bytes_per_envelope_per_node = if envelopes == 0 {
        0.0
    } else {
        net_sent / (envelopes as f64 * n)
    };
    let hundredths = |x: f64| (x * 100.0).round() / 100.0;
    let duplicates_per_envelope = data.copies.duplicates_per_envelope().map(hundredths);
    let sync_copies =
        (data.copies.new > 0).then(|| data.copies.sync as f64 / data.copies.new as f64);
    let gossip_copies = (data.copies.new > 0).then(|| {
        data.copies.received.saturating_sub(data.copies.sync) as f64 / data.copies.new as f64
    });

    Figures {
        envelopes_published: envelopes,
        delivery_ratio: if intended == 0 {
            1.0
        } else {
            delivered as f64 / intended as f64
        },
        intended_pairs: intended,
        delivered_pairs: delivered,
        latency_ms: Percentiles {
            p50: round(percentile(&latencies, 50.0)),
            p95: round(percentile(&latencies, 95.0)),
            p99: round(percentile(&latencies, 99.0)),
            max: round(latencies.last().copied().unwrap_or(0.0)),
        },
        time_to_all_ms: Spread {
            p50: round(percentile(&to_all, 50.0)),
            p99: round(percentile(&to_all, 99.0)),
        },
        time_to_95_ms: Spread {
            p50: round(percentile(&to_95, 50.0)),
            p99: round(percentile(&to_95, 99.0)),
        },
        convergence_after_heal_ms: data.convergence_ms.map(round),
        frontiers_equal_at_end: data.frontiers_equal_at_end,
        duplicates_per_envelope,
        sync_copies_per_envelope: sync_copies.map(hundredths),
        copies_per_envelope: duplicates_per_envelope,
        gossip_copies_per_envelope: gossip_copies.map(hundredths),
        bytes_per_envelope_per_node: round(bytes_per_envelope_per_node),
        gross_bytes_per_node: round(total_sent as f64 / n),
        idle_bytes_per_node_per_s: round(data.idle_bytes_per_s / n),
        envelope_bytes: round(data.envelope_bytes),
        forged_accepted,
        hostile,
        equivocator_pushed: data.equivocator_pushed,
        evidence_nodes: data.evidence_nodes,
        honest_feeds_complete: data.honest_feeds_complete,
        network: data.counters,
        failed_publishes: data.failed_publishes,
        lagged_events: data.lagged_events,
        script_ms: round(data.script_ms),
        run_ms: round(data.end_ms),
        startup_s: round(data.startup_s),
        cpu_seconds: hundredths(data.cpu_seconds),
        script_cpu_seconds: hundredths(data.script_cpu_seconds),
        warmup_cpu_seconds: hundredths(data.warmup_cpu_seconds),
        script_cpu_by_thread: data
            .script_cpu_by_thread
            .iter()
            .map(|(name, s)| (name.clone(), hundredths(*s)))
            .collect(),
        peak_rss_mb: round(data.peak_rss_mb),
        cpu_s_per_node: hundredths(data.cpu_seconds / n),
        peak_rss_mib_per_node: hundredths(data.peak_rss_mb / n),
        processes: data.processes,
    }
}

/// Delivered fraction of the pairs intended so far, sampled every `step_ms`
/// (x: seconds since the script start).
pub fn delivery_series(data: &PhaseData, step_ms: f64) -> Vec<(f64, f64)> {
    let readable = readable_at(data);
    let mut intended: Vec<f64> = Vec::new();
    let mut delivered: Vec<f64> = Vec::new();
    for p in &data.publications {
        for &r in &p.recipients {
            intended.push(p.t_ms - data.script_start_ms);
            if let Some(t) = readable.get(&(p.id, r)) {
                delivered.push(t - data.script_start_ms);
            }
        }
    }
    let intended = sorted(intended);
    let delivered = sorted(delivered);
    let mut series = Vec::new();
    let (mut i, mut d) = (0, 0);
    let mut t = 0.0;
    while t <= data.end_ms + step_ms {
        while i < intended.len() && intended[i] <= t {
            i += 1;
        }
        while d < delivered.len() && delivered[d] <= t {
            d += 1;
        }
        let fraction = if i == 0 {
            1.0
        } else {
            (d as f64 / i as f64).min(1.0)
        };
        series.push((t / 1000.0, fraction));
        t += step_ms;
    }
    series
}

/// A node's state in one time bin of the convergence timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// Not running.
    Down,
    /// Holds every envelope published so far.
    InSync,
    /// Missing this many.
    Behind(usize),
    /// A hostile node (not measured).
    Hostile,
}

/// Per node, per `bin_ms` bin: whether it held every honest envelope
/// published by the end of the bin.
pub fn convergence_grid(data: &PhaseData, bin_ms: f64) -> Vec<Vec<Cell>> {
    let ids: HashSet<Digest> = data.publications.iter().map(|p| p.id).collect();
    let published = sorted(
        data.publications
            .iter()
            .map(|p| p.t_ms - data.script_start_ms)
            .collect(),
    );
    let mut per_node: Vec<Vec<f64>> = vec![Vec::new(); data.n];
    for s in data.stores.iter().filter(|s| ids.contains(&s.id)) {
        if let Some(times) = per_node.get_mut(s.node) {
            times.push(s.t_ms - data.script_start_ms);
        }
    }
    let bins = ((data.end_ms / bin_ms).ceil() as usize).max(1);
    per_node
        .into_iter()
        .enumerate()
        .map(|(node, times)| {
            if data.hostile.contains(&node) {
                return vec![Cell::Hostile; bins];
            }
            let times = sorted(times);
            let down = data.down.get(node).cloned().unwrap_or_default();
            let (mut p, mut s) = (0, 0);
            (0..bins)
                .map(|b| {
                    let t = (b as f64 + 1.0) * bin_ms;
                    while p < published.len() && published[p] <= t {
                        p += 1;
                    }
                    while s < times.len() && times[s] <= t {
                        s += 1;
                    }
                    let mid = t - bin_ms / 2.0;
                    if down.iter().any(|&(a, z)| mid >= a && mid < z) {
                        Cell::Down
                    } else if s >= p {
                        Cell::InSync
                    } else {
                        Cell::Behind(p - s)
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
