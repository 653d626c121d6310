//! The chaos run's outputs: `chaos.json` (the keys issue 12 names),
//! `chaos.md` (verdict, faults as applied, checker findings, method) and
//! `timeline.svg` (fault windows and what the nodes stored over time).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::checker::Verdict;
use super::cluster::Crash;
use super::history::{FaultRecord, Op, Outcome, Read};

/// Faults injected, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// `kill -9` + restart.
    pub kills: usize,
    /// Partitions (iptables DROP between groups, or one link down).
    pub partitions: usize,
    /// Windows of 5–30% loss on a link.
    pub loss_windows: usize,
    /// Windows with the tmpfs node's disk full.
    pub disk_full: usize,
    /// Nodes whose wall clock was off (for the whole run).
    pub clock_skew: usize,
}

/// More about the run than the headline keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// Kills that hit a node while a write was in flight.
    pub kills_mid_write: usize,
    /// Of the partitions, links set down.
    pub link_downs: usize,
    /// tbf bandwidth-cap windows.
    pub bandwidth_caps: usize,
    /// The skewed node and its offset in seconds.
    pub clock_skew_s: Option<(String, i64)>,
    /// The skewed node's clock as its envelopes show it: median of
    /// `created_at` minus the harness's clock when the write returned, s.
    pub clock_skew_observed_s: Option<i64>,
    /// Writes to the disk-full node while its disk was full: acknowledged,
    /// refused (sled reuses space it already holds, so a full disk does not
    /// always refuse).
    pub disk_full_writes: (usize, usize),
    /// Why no clock was skewed, when none was.
    pub clock_skew_note: Option<String>,
    /// Writes refused (with an error).
    pub refused: usize,
    /// Writes whose answer was lost.
    pub indeterminate: usize,
    /// Reads done by the concurrent readers (failed ones included).
    pub reads: usize,
    /// Reads that failed (the node was down or cut off).
    pub reads_failed: usize,
    /// The checker's full findings.
    pub verdict: Verdict,
    /// Crashes: processes that exited without an injected kill.
    pub crashes: Vec<Crash>,
    /// Refusal messages and how often each came (first 12 kinds).
    pub refusals: Vec<(String, usize)>,
}

/// `chaos.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChaosReport {
    /// Nodes.
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Fault-and-workload phase, seconds.
    pub duration_s: u64,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Acknowledged writes.
    pub acknowledged: usize,
    /// Acknowledged envelopes missing at some live node.
    pub lost_acknowledged: usize,
    /// Stored envelopes never acknowledged (nor possibly acknowledged).
    pub unexpected_stored: usize,
    /// (envelope, node) pairs readable by a non-recipient.
    pub readable_by_non_recipient: usize,
    /// (retracted target, node) pairs not marked retracted.
    pub unretracted: usize,
    /// Converged after the last fault healed, within the deadline.
    pub converged: bool,
    /// Time from the last heal to convergence.
    pub convergence_after_last_fault_ms: Option<u64>,
    /// Node processes that exited without an injected kill.
    pub crashes_not_injected: usize,
    /// Everything else.
    pub details: Details,
}

impl ChaosReport {
    /// The goals of issue 12: every promise kept, converged, no crash.
    pub fn passed(&self) -> bool {
        self.lost_acknowledged == 0
            && self.unexpected_stored == 0
            && self.readable_by_non_recipient == 0
            && self.unretracted == 0
            && self.crashes_not_injected == 0
            && self.converged
    }
}

/// Refusal messages grouped, most frequent first, ids and numbers elided.
pub fn refusals(ops: &[Op]) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for op in ops {
        if let Outcome::Refused { error } = &op.outcome {
            let shape: String = error
                .split_whitespace()
                .map(|w| {
                    if w.chars().filter(char::is_ascii_digit).count() >= 2 {
                        "…"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            *counts.entry(shape.chars().take(160).collect()).or_default() += 1;
        }
    }
    let mut list: Vec<(String, usize)> = counts.into_iter().collect();
    list.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    list.truncate(12);
    list
}

fn colour(kind: &str) -> RGBColor {
    match kind {
        "partition" | "link_down" => RGBColor(220, 50, 47),
        "kill" => RGBColor(108, 113, 196),
        "loss" => RGBColor(238, 160, 30),
        "bandwidth" => RGBColor(42, 161, 152),
        _ => RGBColor(133, 153, 0),
    }
}

/// `timeline.svg`: one lane per fault kind on top, and below, per node, how
/// many envelopes it listed over time, next to the acknowledged count.
pub fn timeline(
    path: &Path,
    faults: &[FaultRecord],
    ops: &[Op],
    reads: &[Read],
    orgs: &[String],
    heal_ms: u64,
    converged_ms: Option<u64>,
) -> anyhow::Result<()> {
    let end = reads
        .iter()
        .map(|r| r.t_ms)
        .chain(ops.iter().map(|o| o.end_ms))
        .chain(converged_ms)
        .chain(std::iter::once(heal_ms))
        .max()
        .unwrap_or(1) as f64
        / 1000.0
        + 1.0;
    let acked: Vec<(f64, f64)> = {
        let mut times: Vec<u64> = ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Ack { .. }))
            .map(|o| o.end_ms)
            .collect();
        times.sort_unstable();
        times
            .iter()
            .enumerate()
            .map(|(k, t)| (*t as f64 / 1000.0, (k + 1) as f64))
            .collect()
    };
    let y_max = reads
        .iter()
        .filter_map(|r| r.stored)
        .max()
        .unwrap_or(0)
        .max(acked.len())
        .max(1) as f64
        * 1.25;
    let root = SVGBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Chaos run: faults (bands) and envelopes stored per node",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..end, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the run started")
        .y_desc("envelopes")
        .draw()?;
    let kinds = [
        "kill",
        "partition",
        "link_down",
        "loss",
        "bandwidth",
        "disk_full",
    ];
    let lane = y_max * 0.2 / kinds.len() as f64;
    for (k, kind) in kinds.iter().enumerate() {
        let c = colour(kind);
        let y0 = y_max - (k + 1) as f64 * lane;
        let rects: Vec<_> = faults
            .iter()
            .filter(|f| f.kind == *kind)
            .map(|f| {
                Rectangle::new(
                    [
                        (f.start_ms as f64 / 1000.0, y0),
                        (
                            (f.end_ms.max(f.start_ms + 100)) as f64 / 1000.0,
                            y0 + lane * 0.85,
                        ),
                    ],
                    c.mix(0.6).filled(),
                )
            })
            .collect();
        if rects.is_empty() {
            continue;
        }
        chart
            .draw_series(rects)?
            .label(kind.to_string())
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 18, y + 5)], c.mix(0.6).filled())
            });
    }
    chart
        .draw_series(LineSeries::new(acked, BLACK.stroke_width(2)))?
        .label("acknowledged writes")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
    for (i, org) in orgs.iter().enumerate() {
        let c = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = reads
            .iter()
            .filter(|r| r.node == i)
            .filter_map(|r| r.stored.map(|s| (r.t_ms as f64 / 1000.0, s as f64)))
            .collect();
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(1)))?
            .label(format!("stored at {org}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
    }
    let heal = heal_ms as f64 / 1000.0;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(heal, 0.0), (heal, y_max)],
            RGBColor(220, 50, 47).stroke_width(1),
        )))?
        .label("last fault healed")
        .legend(|(x, y)| {
            PathElement::new(vec![(x + 9, y - 6), (x + 9, y + 6)], RGBColor(220, 50, 47))
        });
    if let Some(c) = converged_ms {
        let c = c as f64 / 1000.0;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(c, 0.0), (c, y_max)],
                GREEN.stroke_width(1),
            )))?
            .label("converged")
            .legend(|(x, y)| PathElement::new(vec![(x + 9, y - 6), (x + 9, y + 6)], GREEN));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present().context("cannot write the timeline plot")?;
    Ok(())
}

/// `chaos.md`.
pub fn markdown(report: &ChaosReport, faults: &[FaultRecord], orgs: &[String]) -> String {
    let mut md = String::new();
    let verdict = if report.passed() { "PASS" } else { "FAIL" };
    md.push_str(&format!(
        "# Chaos run: {verdict}\n\n{} real `breakwater run` processes in their own network namespaces, seed {}, {} s of faults and workload.\n\n",
        report.nodes, report.seed, report.duration_s
    ));
    md.push_str("| key | value | goal |\n|---|---|---|\n");
    let rows: Vec<(&str, String, &str)> = vec![
        ("acknowledged", report.acknowledged.to_string(), ""),
        (
            "lost_acknowledged",
            report.lost_acknowledged.to_string(),
            "0",
        ),
        (
            "unexpected_stored",
            report.unexpected_stored.to_string(),
            "0",
        ),
        (
            "readable_by_non_recipient",
            report.readable_by_non_recipient.to_string(),
            "0",
        ),
        ("unretracted", report.unretracted.to_string(), "0"),
        (
            "crashes_not_injected",
            report.crashes_not_injected.to_string(),
            "0",
        ),
        ("converged", report.converged.to_string(), "true"),
        (
            "convergence_after_last_fault_ms",
            report
                .convergence_after_last_fault_ms
                .map_or("–".into(), |ms| ms.to_string()),
            "",
        ),
        (
            "unreadable_by_recipient",
            report.details.verdict.unreadable_by_recipient.to_string(),
            "",
        ),
        ("refused writes", report.details.refused.to_string(), ""),
        (
            "indeterminate writes",
            report.details.indeterminate.to_string(),
            "",
        ),
        (
            "of those, stored",
            report.details.verdict.indeterminate_stored.to_string(),
            "",
        ),
        (
            "reads (failed)",
            format!("{} ({})", report.details.reads, report.details.reads_failed),
            "",
        ),
    ];
    for (key, value, goal) in rows {
        md.push_str(&format!("| `{key}` | {value} | {goal} |\n"));
    }
    let f = &report.faults;
    md.push_str(&format!(
        "\nFaults: {} kills ({} during a write), {} partitions ({} of them a link set down), {} loss windows, {} bandwidth caps, {} disk-full windows, {} skewed clocks{}.\n\n",
        f.kills,
        report.details.kills_mid_write,
        f.partitions,
        report.details.link_downs,
        f.loss_windows,
        report.details.bandwidth_caps,
        f.disk_full,
        f.clock_skew,
        match (&report.details.clock_skew_s, &report.details.clock_skew_note) {
            (Some((org, s)), _) => format!(" ({org} at {s:+} s)"),
            (None, Some(note)) => format!(" ({note})"),
            _ => String::new(),
        }
    ));
    md.push_str("![timeline](timeline.svg)\n\n## Faults as applied\n\n| from (s) | to (s) | kind | nodes | detail |\n|---|---|---|---|---|\n");
    for fault in faults {
        let names: Vec<&str> = fault
            .nodes
            .iter()
            .filter_map(|&i| orgs.get(i).map(String::as_str))
            .collect();
        md.push_str(&format!(
            "| {:.1} | {:.1} | {} | {} | {} |\n",
            fault.start_ms as f64 / 1000.0,
            fault.end_ms as f64 / 1000.0,
            fault.kind,
            names.join(", "),
            fault.detail
        ));
    }
    if !report.details.refusals.is_empty() {
        md.push_str("\n## Refused writes\n\n| error | count |\n|---|---|\n");
        for (error, count) in &report.details.refusals {
            md.push_str(&format!("| {} | {count} |\n", error.replace('|', "\\|")));
        }
    }
    if !report.details.verdict.problems.is_empty() || !report.details.crashes.is_empty() {
        md.push_str("\n## Problems\n\n");
        for problem in &report.details.verdict.problems {
            md.push_str(&format!("- {problem}\n"));
        }
        for crash in &report.details.crashes {
            md.push_str(&format!(
                "- {} exited on its own at {} ms: {}\n",
                crash.org, crash.t_ms, crash.status
            ));
        }
        md.push_str("\nThe history (`history.jsonl`) and every node's log (`logs/`) are kept next to this file.\n");
    }
    md.push_str(concat!(
        "\n## Method\n\n",
        "The harness writes through the real CLI (`ip netns exec NS breakwater publish|retract|sight`) ",
        "and records every answer: acknowledged with an id, refused with an error, or indeterminate ",
        "when the answer was lost (the node was killed mid-request). Readers list random nodes at the same time. ",
        "After the last fault heals (and every killed node restarted on its data directory), the checker ",
        "polls every node each second until all acknowledged envelopes are stored everywhere, stored sets and ",
        "frontiers are equal and retractions are applied, then checks readability against each write's intended ",
        "recipients and that every stored envelope traces back to an acknowledged or indeterminate write.\n",
    ));
    md
}
