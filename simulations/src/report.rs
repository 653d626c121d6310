//! The outputs of a run: `report.json` ([`Report`]), the summary table
//! printed on the terminal, and `report.md`, a page for a port security
//! officer that embeds the plots.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::machine::Machine;
use crate::metrics::Figures;
use crate::scenario::Scenario;

/// Definitions shipped with every report.
pub const NOTES: [&str; 9] = [
    "delivery_ratio counts intended (envelope, recipient) pairs, author excluded, where the recipient stored the envelope and could open it; hostile nodes are never intended recipients.",
    "latency is measured from the publish call at the author (which includes sealing and the flush to disk) to the NodeEvent::Stored of a readable copy at the recipient.",
    "convergence_after_heal_ms runs from the last heal (partition end, or restart of crashed nodes) until every running honest node has the same frontier, detected from Stored events and confirmed with status().frontier on every node, or found by polling status() at least every second while the events disagree.",
    "duplicates_per_envelope counts, over honest nodes and the measured run, the envelope copies received from peers (gossip messages before gossipsub drops known ids, read from its metrics, plus envelopes in sync responses) beyond the first copy of each envelope a node stored, divided by those first copies. A node's counters start again when it restarts, so across crashes the figure counts each node from its last start.",
    "copies_per_envelope is the count the goal of at most 2 is set on: every envelope copy a node received from peers beyond its first copy, gossip duplicates plus sync copies, per (envelope, node); it equals duplicates_per_envelope, and gossip_copies_per_envelope (gossip copies received, first copies included) + sync_copies_per_envelope (every envelope in a sync response) - 1 (the first copy, by either way).",
    "cpu_s_per_node and peak_rss_mib_per_node divide the whole process's CPU seconds over the phase (stores, start-up, warm-up, script and drain) and its peak resident memory by the nodes of the run; every node shares one process, one allocator and the machine's cores.",
    "bytes_per_envelope_per_node is every byte written to the simulated network during the run (Noise and Yamux framing included), minus the idle rate measured during the warm-up, divided by envelopes and by nodes.",
    "evidence_nodes counts running honest nodes whose status() shows any equivocation evidence at the end; honest_feeds_complete says whether every running honest node's status().frontier then covered every acknowledged publication of every honest author (the equivocator's feed, held at its fork, is left out, as it is of every frontier comparison). An equivocator (equivocator_pushed > 0) is a member without a node whose valid feed is pushed into honest nodes through the import path, with one seq signed twice and each branch handed to a different half.",
    "forged_accepted counts honest-node stores of invalid hostile messages (garbage, forged authors, tampered payloads) plus honest nodes holding both envelopes of an equivocating pair.",
];

/// `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Its description.
    pub description: String,
    /// The seed.
    pub seed: u64,
    /// Nodes in the run.
    pub nodes: usize,
    /// Honest nodes.
    pub honest_nodes: usize,
    /// Hostile nodes.
    pub hostile_nodes: usize,
    /// The figures of the scenario.
    #[serde(flatten)]
    pub figures: Figures,
    /// The same topology and publishing, no impairment, measured in the same run.
    pub baseline: Option<Figures>,
    /// How the baseline was obtained.
    pub baseline_note: String,
    /// Where it ran.
    pub machine: Machine,
    /// The scenario as run.
    pub settings: Scenario,
    /// Definitions.
    pub notes: Vec<String>,
}

impl Report {
    /// Writes `report.json` into `dir`.
    pub fn write_json(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join("report.json");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// A duration for people: ms below a second, seconds above.
fn human(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"))
}

fn rows(f: &Figures) -> Vec<(&'static str, String)> {
    vec![
        ("envelopes published", f.envelopes_published.to_string()),
        (
            "delivery ratio",
            format!(
                "{:.4} ({}/{})",
                f.delivery_ratio, f.delivered_pairs, f.intended_pairs
            ),
        ),
        (
            "latency p50/p95/p99/max ms",
            format!(
                "{:.0}/{:.0}/{:.0}/{:.0}",
                f.latency_ms.p50, f.latency_ms.p95, f.latency_ms.p99, f.latency_ms.max
            ),
        ),
        (
            "time to all p50/p99 ms",
            format!("{:.0}/{:.0}", f.time_to_all_ms.p50, f.time_to_all_ms.p99),
        ),
        (
            "time to 95% p50/p99 ms",
            format!("{:.0}/{:.0}", f.time_to_95_ms.p50, f.time_to_95_ms.p99),
        ),
        (
            "convergence after heal ms",
            opt(f.convergence_after_heal_ms),
        ),
        (
            "frontiers equal at end",
            f.frontiers_equal_at_end.to_string(),
        ),
        (
            "duplicates per envelope",
            f.duplicates_per_envelope
                .map_or_else(|| "-".to_string(), |d| format!("{d:.2}")),
        ),
        (
            "copies per envelope (g + s - 1)",
            f.copies_per_envelope.map_or_else(
                || "-".to_string(),
                |d| {
                    format!(
                        "{d:.2} ({} + {} - 1)",
                        f.gossip_copies_per_envelope
                            .map_or_else(|| "-".to_string(), |g| format!("{g:.2}")),
                        f.sync_copies_per_envelope
                            .map_or_else(|| "-".to_string(), |s| format!("{s:.2}"))
                    )
                },
            ),
        ),
        (
            "copies by sync per envelope",
            f.sync_copies_per_envelope
                .map_or_else(|| "-".to_string(), |d| format!("{d:.2}")),
        ),
        (
            "bytes per envelope per node",
            format!("{:.0}", f.bytes_per_envelope_per_node),
        ),
        (
            "idle bytes per node per s",
            format!("{:.0}", f.idle_bytes_per_node_per_s),
        ),
        ("forged accepted", f.forged_accepted.to_string()),
        ("evidence nodes", f.evidence_nodes.to_string()),
        (
            "honest feeds complete",
            f.honest_feeds_complete
                .map_or_else(|| "-".to_string(), |c| c.to_string()),
        ),
        (
            "resets / stalls / refused dials",
            format!(
                "{} / {} / {}",
                f.network.resets, f.network.stalls, f.network.refused_dials
            ),
        ),
        (
            "run s (script + drain)",
            format!("{:.1}", f.run_ms / 1000.0),
        ),
        ("cpu s", format!("{:.1}", f.cpu_seconds)),
        ("peak rss MiB", format!("{:.0}", f.peak_rss_mb)),
        (
            "cpu s / peak rss MiB, per node",
            format!("{:.2} / {:.2}", f.cpu_s_per_node, f.peak_rss_mib_per_node),
        ),
    ]
}

/// The summary table: one row per figure, scenario and baseline side by side.
pub fn summary_table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} (seed {}, {} nodes, {} hostile) on {} ({} cores)",
        report.scenario,
        report.seed,
        report.nodes,
        report.hostile_nodes,
        report.machine.model,
        report.machine.cores
    );
    let scenario = rows(&report.figures);
    let baseline = report.baseline.as_ref().map(rows);
    let _ = writeln!(
        out,
        "| {:<32} | {:<26} | {:<26} |",
        "figure", "scenario", "baseline"
    );
    let _ = writeln!(out, "|{:-<34}|{:-<28}|{:-<28}|", "", "", "");
    for (k, (name, value)) in scenario.iter().enumerate() {
        let base = baseline
            .as_ref()
            .and_then(|b| b.get(k))
            .map_or("-", |(_, v)| v.as_str());
        let _ = writeln!(out, "| {name:<32} | {value:<26} | {base:<26} |");
    }
    out
}

/// `report.md`.
pub fn markdown(report: &Report) -> String {
    let f = &report.figures;
    let mut out = String::new();
    let _ = writeln!(out, "# Breakwater simulation: {}\n", report.scenario);
    if !report.description.is_empty() {
        let _ = writeln!(out, "{}\n", report.description);
    }
    let verdict = if f.delivery_ratio >= 1.0 && f.forged_accepted == 0 {
        "**Every intended recipient received and could open every bulletin, and no forged or tampered bulletin was accepted.**"
    } else if f.forged_accepted > 0 {
        "**Warning: honest nodes accepted hostile messages they should have refused.**"
    } else {
        "**Warning: some intended recipients did not receive every bulletin by the end of the run.**"
    };
    let _ = writeln!(out, "{verdict}\n");
    let _ = writeln!(out, "## In plain words\n");
    let _ = writeln!(
        out,
        "- {} organisations ran a Breakwater node each ({} of them hostile), all in one process over a simulated network.",
        report.nodes, report.hostile_nodes
    );
    let _ = writeln!(
        out,
        "- {} bulletins were published. {:.2} % of the deliveries they were meant for happened ({} of {}).",
        f.envelopes_published,
        f.delivery_ratio * 100.0,
        f.delivered_pairs,
        f.intended_pairs
    );
    let _ = writeln!(
        out,
        "- Half of all deliveries took under {}; 99 % took under {}; the slowest {}.",
        human(f.latency_ms.p50),
        human(f.latency_ms.p99),
        human(f.latency_ms.max)
    );
    let _ = writeln!(
        out,
        "- A typical bulletin reached every recipient in {} (the slowest 1 % took {}).",
        human(f.time_to_all_ms.p50),
        human(f.time_to_all_ms.p99)
    );
    if !report.settings.partitions.is_empty() || !report.settings.crashes.is_empty() {
        let _ = writeln!(
            out,
            "- Bulletins for nodes that were down or cut off wait until those nodes are back; that wait is the long tail above."
        );
    }
    if let Some(c) = f.convergence_after_heal_ms {
        let _ = writeln!(
            out,
            "- After the network healed, every node held the same bulletins within {} (sync interval {:.1} s).",
            human(c),
            report.settings.node.sync_interval_ms as f64 / 1000.0
        );
    }
    if let Some(h) = &f.hostile {
        let _ = writeln!(
            out,
            "- Hostile members sent {} garbage messages, {} forged and {} tampered bulletins, and {} contradictory pairs; honest nodes accepted {} of the bad ones and recorded {} pieces of equivocation evidence ({} honest nodes hold some).",
            h.garbage_sent,
            h.forged_sent,
            h.tampered_sent,
            h.equivocating_pairs_sent,
            f.forged_accepted,
            h.evidence_records,
            h.evidence_nodes
        );
    }
    if f.equivocator_pushed > 0 {
        let _ = writeln!(
            out,
            "- A member signed one bulletin number twice and sent each version to different nodes; {} honest nodes hold the evidence, and every honest member's bulletins {} at every node.",
            f.evidence_nodes,
            if f.honest_feeds_complete == Some(true) {
                "arrived"
            } else {
                "did not all arrive"
            }
        );
    }
    if let Some(b) = &report.baseline {
        let _ = writeln!(
            out,
            "- On the same network without impairment, half of the deliveries took {} and a bulletin reached everyone in {}.",
            human(b.latency_ms.p50),
            human(b.time_to_all_ms.p50)
        );
    }
    let _ = writeln!(out, "\n## Delivery over time\n");
    let _ = writeln!(
        out,
        "Shaded: impairment windows (amber: degraded links, red: partition, violet: crashed nodes).\n"
    );
    let _ = writeln!(out, "![delivery over time](delivery.svg)\n");
    let _ = writeln!(out, "## Per-node convergence\n");
    let _ = writeln!(out, "![per-node convergence timeline](convergence.svg)\n");
    let _ = writeln!(out, "## Traffic per node\n");
    let _ = writeln!(out, "![bytes per node](bytes.svg)\n");
    let _ = writeln!(out, "## Figures\n");
    let _ = writeln!(out, "```");
    out.push_str(&summary_table(report));
    let _ = writeln!(out, "```\n");
    let _ = writeln!(out, "## How it was measured\n");
    let _ = writeln!(
        out,
        "Seed {}. Machine: {}, {} cores, {} MiB, Linux {}. {}\n",
        report.seed,
        report.machine.model,
        report.machine.cores,
        report.machine.memory_mb,
        report.machine.kernel,
        report.baseline_note
    );
    for note in &report.notes {
        let _ = writeln!(out, "- {note}");
    }
    out
}
