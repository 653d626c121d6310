//! The report's SVG plots, drawn with `plotters`: delivery over time with the
//! impairment windows shaded, the per-node convergence timeline, and bytes
//! per node.

use std::path::Path;

use plotters::prelude::*;

use crate::metrics::{self, Cell};
use crate::run::PhaseData;

const BASELINE_GREY: RGBColor = RGBColor(140, 140, 140);

fn window_colour(kind: &str) -> RGBColor {
    match kind {
        "partition" => RGBColor(220, 50, 47),
        "crash" => RGBColor(108, 113, 196),
        _ => RGBColor(238, 160, 30),
    }
}

/// Delivered fraction of intended pairs so far, scenario and baseline.
pub fn delivery(path: &Path, data: &PhaseData, baseline: Option<&PhaseData>) -> anyhow::Result<()> {
    let series = metrics::delivery_series(data, 250.0);
    let base = baseline.map(|b| metrics::delivery_series(b, 250.0));
    let x_max = series
        .last()
        .map_or(1.0, |(t, _)| *t)
        .max(
            base.as_ref()
                .and_then(|b| b.last())
                .map_or(0.0, |(t, _)| *t),
        )
        .max(1.0);
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Share of intended deliveries completed so far",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, 0f64..1.05f64)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the script started")
        .y_desc("delivered / intended")
        .draw()?;
    let mut kinds_drawn = Vec::new();
    for window in &data.windows {
        let colour = window_colour(&window.kind);
        let rect = Rectangle::new(
            [
                (window.start_ms / 1000.0, 0.0),
                (window.end_ms.max(window.start_ms + 50.0) / 1000.0, 1.05),
            ],
            colour.mix(0.18).filled(),
        );
        let drawn = chart.draw_series(std::iter::once(rect))?;
        if !kinds_drawn.contains(&window.kind) {
            kinds_drawn.push(window.kind.clone());
            drawn.label(window.kind.clone()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 18, y + 5)], colour.mix(0.4).filled())
            });
        }
    }
    if let Some(base) = base {
        chart
            .draw_series(LineSeries::new(base, BASELINE_GREY.stroke_width(2)))?
            .label("baseline (no impairment)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BASELINE_GREY));
    }
    chart
        .draw_series(LineSeries::new(series, BLUE.stroke_width(2)))?
        .label("this scenario")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One row per node: down, in sync, or behind (darker = more missing).
pub fn convergence(path: &Path, data: &PhaseData) -> anyhow::Result<()> {
    let bin_ms = 250.0;
    let grid = metrics::convergence_grid(data, bin_ms);
    let n = grid.len().max(1);
    let most_behind = grid
        .iter()
        .flatten()
        .filter_map(|c| match c {
            Cell::Behind(k) => Some(*k),
            _ => None,
        })
        .max()
        .unwrap_or(1)
        .max(1);
    let x_max = (data.end_ms / 1000.0).max(1.0);
    let height = (n as u32 * 4).clamp(260, 1300) + 90;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Per-node timeline: green in sync, amber to red behind, grey down",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, 0f64..n as f64)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("seconds since the script started")
        .y_desc("node")
        .draw()?;
    let mut rects = Vec::new();
    for (node, row) in grid.iter().enumerate() {
        // Runs of equal cells become one rectangle.
        let mut start = 0;
        while start < row.len() {
            let cell = row[start];
            let mut end = start + 1;
            while end < row.len() && row[end] == cell {
                end += 1;
            }
            let colour = match cell {
                Cell::Down => RGBColor(170, 170, 170),
                Cell::Hostile => RGBColor(40, 40, 40),
                Cell::InSync => RGBColor(60, 170, 90),
                Cell::Behind(k) => {
                    let f = (k as f64 / most_behind as f64).sqrt();
                    RGBColor(240, (200.0 - 170.0 * f) as u8, 40)
                }
            };
            rects.push(Rectangle::new(
                [
                    (start as f64 * bin_ms / 1000.0, node as f64),
                    (end as f64 * bin_ms / 1000.0, node as f64 + 0.9),
                ],
                colour.filled(),
            ));
            start = end;
        }
    }
    chart.draw_series(rects)?;
    root.present()?;
    Ok(())
}

/// Bytes written and received per node over the run.
pub fn bytes(path: &Path, data: &PhaseData) -> anyhow::Result<()> {
    let mb = |b: u64| b as f64 / 1e6;
    let top = data
        .bytes_sent
        .iter()
        .chain(&data.bytes_received)
        .map(|&b| mb(b))
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.1;
    let n = data.n.max(1);
    let root = SVGBackend::new(path, (900, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Traffic per node (MB, Noise + Yamux framing included)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)?;
    chart.configure_mesh().x_desc("node").y_desc("MB").draw()?;
    let sent_colour = RGBColor(38, 139, 210);
    let received_colour = RGBColor(238, 160, 30);
    let hostile_colour = RGBColor(220, 50, 47);
    chart
        .draw_series(data.bytes_sent.iter().enumerate().map(|(i, &b)| {
            let colour = if data.hostile.contains(&i) {
                hostile_colour
            } else {
                sent_colour
            };
            Rectangle::new(
                [(i as f64 + 0.05, 0.0), (i as f64 + 0.5, mb(b))],
                colour.filled(),
            )
        }))?
        .label("sent (hostile nodes in red)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], sent_colour.filled()));
    chart
        .draw_series(data.bytes_received.iter().enumerate().map(|(i, &b)| {
            Rectangle::new(
                [(i as f64 + 0.5, 0.0), (i as f64 + 0.95, mb(b))],
                received_colour.filled(),
            )
        }))?
        .label("received")
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 5), (x + 18, y + 5)], received_colour.filled())
        });
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
