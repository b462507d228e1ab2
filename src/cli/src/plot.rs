//! SVG line plots (plotters): loss profiles on both sides, fitted models, marked points.
use asymvalley::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// One curve.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points `(t, loss)`.
    pub points: Vec<(f64, f64)>,
    /// Palette index.
    pub color: usize,
    /// Draw as a thin line without markers (fits), else a line with point markers (data).
    pub fitted: bool,
}

/// A marked point (SWA, SGD, biased solution).
#[derive(Clone, Debug)]
pub struct Marker {
    /// Label written next to it.
    pub label: String,
    /// Position.
    pub x: f64,
    /// Value.
    pub y: f64,
}

/// A plot's panel.
#[derive(Clone, Debug, Default)]
pub struct Panel {
    /// Title.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// Curves.
    pub series: Vec<Series>,
    /// Marked points.
    pub markers: Vec<Marker>,
}

/// Ten distinguishable colours (matplotlib's tab10), so that a study's seeds 0–9 each get one.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(127, 127, 127),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        reason: format!("cannot draw the plot: {e}"),
    }
}

/// Draws panels side by side (one row) into an SVG file of `width × 420` per row.
pub fn draw(path: &Path, panels: &[Panel], width: u32) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let pts = panel.series.iter().flat_map(|s| s.points.iter().copied());
        let pts: Vec<(f64, f64)> = pts
            .chain(panel.markers.iter().map(|m| (m.x, m.y)))
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        if pts.is_empty() {
            continue;
        }
        let (x0, x1) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let (y0, y1) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
        let pad = ((y1 - y0) * 0.05).max(1e-9);
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc(&panel.x_label)
            .y_desc(&panel.y_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for s in &panel.series {
            let color = COLORS[s.color % COLORS.len()];
            let style = if s.fitted {
                ShapeStyle::from(color.mix(0.8)).stroke_width(1)
            } else {
                ShapeStyle::from(color).stroke_width(2)
            };
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(|e| plot_err(path, e))?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            if !s.fitted {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 2, color.filled())))
                    .map_err(|e| plot_err(path, e))?;
            }
        }
        for m in &panel.markers {
            chart
                .draw_series(std::iter::once(Circle::new((m.x, m.y), 5, BLACK.filled())))
                .map_err(|e| plot_err(path, e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    m.label.clone(),
                    (m.x, m.y),
                    ("sans-serif", 13).into_font(),
                )))
                .map_err(|e| plot_err(path, e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperMiddle)
            .draw()
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}
