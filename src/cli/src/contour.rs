//! SVG contour figures of a 2-D loss surface (plotters): cells shaded by the loss, iso-loss lines
//! by marching squares, marked points (the probed point, the two ends of a line).
use crate::plot::Marker;
use asymvalley::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// A surface to draw: `z[j][i]` at `(x[i], y[j])`.
#[derive(Clone, Debug)]
pub struct ContourPlot<'a> {
    /// Title.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// x grid (increasing).
    pub x: &'a [f64],
    /// y grid (increasing).
    pub y: &'a [f64],
    /// Values, one row per y.
    pub z: &'a [Vec<f64>],
    /// Iso-lines drawn (evenly spaced in log(z − min + ε) between the extremes).
    pub levels: usize,
    /// Marked points: `x`, `y` in grid coordinates.
    pub markers: Vec<Marker>,
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        reason: format!("cannot draw the contour plot: {e}"),
    }
}

/// A blue → yellow ramp for `u ∈ [0, 1]` (low loss dark, high loss light).
fn ramp(u: f64) -> RGBColor {
    let u = u.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * u).round() as u8;
    RGBColor(lerp(48.0, 253.0), lerp(18.0, 231.0), lerp(120.0, 37.0))
}

/// The segments where `z`, interpolated linearly along cell edges, crosses `level`
/// (marching squares; a saddle cell's two segments are paired by the cell's corner order).
fn iso_segments(x: &[f64], y: &[f64], z: &[Vec<f64>], level: f64) -> Vec<[(f64, f64); 2]> {
    let mut out = Vec::new();
    for j in 0..y.len().saturating_sub(1) {
        for i in 0..x.len().saturating_sub(1) {
            // Corners counter-clockwise from (i, j).
            let c = [
                (x[i], y[j], z[j][i]),
                (x[i + 1], y[j], z[j][i + 1]),
                (x[i + 1], y[j + 1], z[j + 1][i + 1]),
                (x[i], y[j + 1], z[j + 1][i]),
            ];
            if c.iter().any(|p| !p.2.is_finite()) {
                continue;
            }
            let mut hits = Vec::with_capacity(4);
            for k in 0..4 {
                let (p, q) = (c[k], c[(k + 1) % 4]);
                if (p.2 < level) != (q.2 < level) {
                    let s = (level - p.2) / (q.2 - p.2);
                    hits.push((p.0 + s * (q.0 - p.0), p.1 + s * (q.1 - p.1)));
                }
            }
            for pair in hits.chunks_exact(2) {
                out.push([pair[0], pair[1]]);
            }
        }
    }
    out
}

/// Draws `plot` into an SVG file of `size × size`.
pub fn draw_contour(path: &Path, plot: &ContourPlot, size: u32) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let (x, y, z) = (plot.x, plot.y, plot.z);
    if x.len() < 2 || y.len() < 2 || z.len() != y.len() || z.iter().any(|r| r.len() != x.len()) {
        return Err(plot_err(
            path,
            "the grid needs at least 2 × 2 points, one row per y",
        ));
    }
    let finite: Vec<f64> = z
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    if finite.is_empty() {
        return Err(plot_err(path, "no finite loss on the grid"));
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Log scale above the minimum: a valley's floor and its walls both stay visible.
    let eps = ((hi - lo) * 1e-3).max(1e-12);
    let scale = |v: f64| (v - lo + eps).ln();
    let (s_lo, s_hi) = (scale(lo), scale(hi));
    let unit = |v: f64| (scale(v) - s_lo) / (s_hi - s_lo).max(1e-300);

    let root = SVGBackend::new(path, (size, size)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let (x0, x1, y0, y1) = (x[0], x[x.len() - 1], y[0], y[y.len() - 1]);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} (loss {lo:.4} … {hi:.4})", plot.title),
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(&plot.x_label)
        .y_desc(&plot.y_label)
        .disable_mesh()
        .draw()
        .map_err(|e| plot_err(path, e))?;
    // Each grid point owns the cell halfway to its neighbours.
    let edges = |v: &[f64], k: usize| -> (f64, f64) {
        let left = if k == 0 {
            v[0]
        } else {
            (v[k - 1] + v[k]) / 2.0
        };
        let right = if k + 1 == v.len() {
            v[k]
        } else {
            (v[k] + v[k + 1]) / 2.0
        };
        (left, right)
    };
    let mut cells = Vec::with_capacity(x.len() * y.len());
    for (j, row) in z.iter().enumerate() {
        for (i, &v) in row.iter().enumerate() {
            let (xa, xb) = edges(x, i);
            let (ya, yb) = edges(y, j);
            let color = if v.is_finite() {
                ramp(unit(v))
            } else {
                RGBColor(200, 200, 200)
            };
            cells.push(Rectangle::new([(xa, ya), (xb, yb)], color.filled()));
        }
    }
    chart.draw_series(cells).map_err(|e| plot_err(path, e))?;
    for k in 1..=plot.levels {
        let u = k as f64 / (plot.levels + 1) as f64;
        let level = lo - eps + (s_lo + u * (s_hi - s_lo)).exp();
        let style = ShapeStyle::from(BLACK.mix(0.6)).stroke_width(1);
        chart
            .draw_series(
                iso_segments(x, y, z, level)
                    .into_iter()
                    .map(|s| PathElement::new(s.to_vec(), style)),
            )
            .map_err(|e| plot_err(path, e))?;
    }
    for m in &plot.markers {
        chart
            .draw_series(std::iter::once(Circle::new((m.x, m.y), 5, RED.filled())))
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                m.label.clone(),
                (m.x, m.y),
                ("sans-serif", 14).into_font().color(&WHITE),
            )))
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::iso_segments;

    /// On the plane z = x, the iso-line z = 0.5 is the vertical x = 0.5, crossing each of the
    /// grid's rows: one segment per cell column that straddles it, all at x = 0.5.
    #[test]
    fn iso_line_of_a_plane_is_where_the_plane_has_the_level() {
        let x = [0.0, 1.0, 2.0];
        let y = [0.0, 1.0, 2.0, 3.0];
        let z: Vec<Vec<f64>> = y.iter().map(|_| x.to_vec()).collect();
        let segs = iso_segments(&x, &y, &z, 0.5);
        assert_eq!(segs.len(), 3);
        for s in segs {
            assert!(
                (s[0].0 - 0.5).abs() < 1e-12 && (s[1].0 - 0.5).abs() < 1e-12,
                "{s:?}"
            );
        }
    }
}
