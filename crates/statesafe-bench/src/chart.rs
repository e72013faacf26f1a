//! The SVG chart (plotters, SVG backend only: no system fonts needed; text is left
//! to the SVG viewer).

use std::path::Path;

use plotters::prelude::*;

use crate::Result;
use crate::contended;
use crate::contenders::Kind;
use crate::run::Results;
use crate::stats::size_label;

fn color(kind: Kind) -> RGBColor {
    match kind {
        Kind::Floor => RGBColor(0, 0, 0),
        Kind::StatesafeTyped => RGBColor(214, 39, 40),
        Kind::StatesafeLean => RGBColor(227, 119, 194),
        Kind::StatesafeValue => RGBColor(255, 127, 14),
        Kind::AtomicWriteFile => RGBColor(31, 119, 180),
        Kind::Atomicwrites => RGBColor(23, 190, 207),
        Kind::Tempfile => RGBColor(148, 103, 189),
        Kind::SqliteWal => RGBColor(44, 160, 44),
        Kind::SqliteDelete => RGBColor(140, 86, 75),
        Kind::Naive => RGBColor(127, 127, 127),
        Kind::StatesafeJournal => RGBColor(188, 189, 34),
    }
}

fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        (0.1, 10.0)
    } else {
        (lo / 1.5, hi * 1.5)
    }
}

/// The label of tick `x` on a size axis (sizes are plotted at 0, 1, 2, …).
fn sizes_label(r: &Results, x: f64) -> String {
    let i = x.round();
    if (x - i).abs() > 0.05 || i < 0.0 {
        return String::new();
    }
    r.update
        .get(i as usize)
        .map_or_else(String::new, |s| size_label(s.size))
}

/// Draws the chart of `r` into `path`.
pub fn draw(r: &Results, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let root = SVGBackend::new(path, (1500, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 3));

    // Panel 1: median update latency by document size.
    if !r.update.is_empty() {
        let n = r.update.len();
        let (y0, y1) = span(
            r.update
                .iter()
                .flat_map(|s| s.rows.iter().map(|row| row.median() * 1e3)),
        );
        let mut chart = ChartBuilder::on(&panels[0])
            .caption("Durable update: median latency", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.3..n as f64 - 0.7, (y0..y1).log_scale())?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_labels(n)
            .x_label_formatter(&|x| sizes_label(r, *x))
            .x_desc("document size")
            .y_desc("milliseconds (log)")
            .y_label_formatter(&|y| format!("{y}"))
            .draw()?;
        for kind in Kind::UPDATE {
            let pts: Vec<(f64, f64)> = r
                .update
                .iter()
                .enumerate()
                .map(|(i, s)| (i as f64, s.row(kind).median() * 1e3))
                .collect();
            let c = color(kind);
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                .label(kind.label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()?;
    }

    // Panel 2: latency as a multiple of the floor's.
    if !r.update.is_empty() {
        let n = r.update.len();
        let (x0, x1) = (-0.3, n as f64 - 0.7);
        let ratios = |kind: Kind| -> Vec<(f64, f64)> {
            r.update
                .iter()
                .enumerate()
                .map(|(i, s)| (i as f64, s.row(kind).median() / s.row(Kind::Floor).median()))
                .collect()
        };
        let shown = [
            Kind::StatesafeLean,
            Kind::StatesafeTyped,
            Kind::StatesafeValue,
            Kind::AtomicWriteFile,
            Kind::Atomicwrites,
            Kind::Tempfile,
            Kind::SqliteWal,
            Kind::SqliteDelete,
        ];
        let (y0, y1) = span(shown.iter().flat_map(|&k| ratios(k)).map(|(_, y)| y));
        let mut chart = ChartBuilder::on(&panels[1])
            .caption("Update latency / floor's (1 = floor)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(x0..x1, (y0.min(0.5)..y1.max(2.0)).log_scale())?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_labels(n)
            .x_label_formatter(&|x| sizes_label(r, *x))
            .x_desc("document size")
            .y_desc("x floor (log); red line: 1.25 (target)")
            .y_label_formatter(&|y| format!("{y:.2}"))
            .draw()?;
        chart.draw_series(LineSeries::new(
            vec![(x0, 1.25), (x1, 1.25)],
            RGBColor(214, 39, 40).stroke_width(1),
        ))?;
        chart.draw_series(LineSeries::new(
            vec![(x0, 1.0), (x1, 1.0)],
            BLACK.stroke_width(1),
        ))?;
        for kind in shown {
            let c = color(kind);
            let pts = ratios(kind);
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
        }
    }

    // Panel 3: contended increments per second.
    if let Some(c) = &r.contended {
        let mut procs: Vec<usize> = c.cells.iter().map(|c| c.procs).collect();
        procs.sort_unstable();
        procs.dedup();
        let max_p = *procs.last().unwrap_or(&1) as f64;
        let (_, y1) = span(c.cells.iter().map(|c| c.rate()));
        let mut chart = ChartBuilder::on(&panels[2])
            .caption("Contended increments per second", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5..max_p + 0.5, 0.0..y1)?;
        chart
            .configure_mesh()
            .x_desc("processes")
            .x_labels(max_p as usize + 1)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc("increments/s (all processes)")
            .draw()?;
        for kind in contended::KINDS {
            let pts: Vec<(f64, f64)> = procs
                .iter()
                .filter_map(|&p| Some((p as f64, c.cell(kind, p)?.rate())))
                .collect();
            let col = color(kind);
            chart
                .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))?
                .label(kind.label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2))
                });
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
