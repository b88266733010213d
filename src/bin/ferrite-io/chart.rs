//! The SVG chart of `bench`: for every row, each ratio of ours against a baseline as its median
//! (a dot) and its range over rounds (a bar), on a log scale with 1.0x marked.

use std::path::Path;

use plotters::prelude::*;

use crate::bench::Spread;

/// One ratio (e.g. `fixed/raw`) across the rows; `None` where the row has no such ratio.
pub struct Series {
    pub label: &'static str,
    pub spreads: Vec<Option<Spread>>,
}

const WIDTH: u32 = 1000;
/// Pixels per series within a row's band.
const LANE: u32 = 12;

/// Draws `series` over `rows` into an SVG file at `path`: the title and a legend on top, one
/// band per row below.
pub fn draw(path: &Path, title: &str, rows: &[&str], series: &[Series]) -> Result<(), String> {
    let text = |e: DrawingAreaErrorKind<_>| e.to_string();
    let band = LANE * (series.len() as u32 + 1);
    let height = 150 + band * rows.len() as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(text)?;
    let (top, plot) = root.split_vertically(60);
    top.draw(&Text::new(title.to_owned(), (12, 8), ("sans-serif", 16))).map_err(text)?;
    for (k, s) in series.iter().enumerate() {
        let (x, y) = (20 + 150 * k as i32, 42);
        top.draw(&Circle::new((x, y), 5, Palette99::pick(k).filled())).map_err(text)?;
        top.draw(&Text::new(s.label, (x + 10, y - 8), ("sans-serif", 14))).map_err(text)?;
    }

    let values = series.iter().flat_map(|s| s.spreads.iter().flatten()).flat_map(|s| [s.min, s.max]);
    let (lo, hi) = values.fold((0.5f64, 2.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = (lo.max(1e-3) / 1.25, hi * 1.25);
    let bands = rows.len() as f64;
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(190)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..bands)
        .map_err(text)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("time per operation, ours / baseline (log scale; left of 1x is faster)")
        .x_label_formatter(&|x| format!("{x:.2}x"))
        .draw()
        .map_err(text)?;
    chart.draw_series([PathElement::new(vec![(1.0, 0.0), (1.0, bands)], BLACK.stroke_width(1))]).map_err(text)?;
    let separators = (1..rows.len()).map(|i| PathElement::new(vec![(lo, i as f64), (hi, i as f64)], BLACK.mix(0.2)));
    chart.draw_series(separators).map_err(text)?;

    // Row `i` is the band from the top; series `k` a lane in it.
    let y = |i: usize, k: usize| bands - i as f64 - (k as f64 + 1.0) / (series.len() as f64 + 1.0);
    for (k, s) in series.iter().enumerate() {
        let colour = Palette99::pick(k).to_rgba();
        let points: Vec<(usize, Spread)> = s.spreads.iter().enumerate().filter_map(|(i, s)| Some((i, (*s)?))).collect();
        chart
            .draw_series(
                points.iter().map(|&(i, s)| {
                    ErrorBar::new_horizontal(y(i, k), s.min, s.median, s.max, colour.stroke_width(2), 6)
                }),
            )
            .map_err(text)?;
        chart
            .draw_series(points.iter().map(|&(i, s)| Circle::new((s.median, y(i, k)), 4, colour.filled())))
            .map_err(text)?;
    }
    for (i, row) in rows.iter().enumerate() {
        let (_, py) = chart.backend_coord(&(lo, bands - i as f64 - 0.5));
        root.draw(&Text::new(row.to_string(), (12, py - 7), ("sans-serif", 14))).map_err(text)?;
    }
    root.present().map_err(text)
}
