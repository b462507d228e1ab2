//! `asymvalley probe --surface`: writes the library's 2-D surface report
//! ([`asymvalley::valley::probe`] computes it) as JSON (axes, loss matrix, BatchNorm mode, the
//! directions' provenance) and an SVG contour figure, and prints where the loss is lowest.
use super::{print_stdout, ProbeArgs};
use crate::contour::{draw_contour, ContourPlot};
use crate::plot::Marker;
use asymvalley::error::Result;
use asymvalley::valley::report::write_json;
use asymvalley::valley::surface::SurfaceReport;

/// Writes `report` where `args` says and prints its lowest point.
pub fn write(args: &ProbeArgs, report: &SurfaceReport) -> Result<()> {
    write_json(&args.json, report)?;
    if let Some(svg) = &args.svg {
        let plot = ContourPlot {
            title: format!("loss surface, bn {}", report.bn),
            x_label: format!("a ({})", report.directions[0].kind),
            y_label: format!("b ({})", report.directions[1].kind),
            x: &report.surface.a,
            y: &report.surface.b,
            z: &report.surface.loss,
            levels: 12,
            markers: report
                .points
                .iter()
                .map(|p| Marker {
                    label: p.label.clone(),
                    x: p.a,
                    y: p.b,
                })
                .collect(),
        };
        draw_contour(svg, &plot, 640)?;
    }
    let (mut best, mut at) = (f64::INFINITY, (0.0, 0.0));
    for (j, row) in report.surface.loss.iter().enumerate() {
        for (i, &v) in row.iter().enumerate() {
            if v < best {
                best = v;
                at = (report.surface.a[i], report.surface.b[j]);
            }
        }
    }
    print_stdout(&format!(
        "surface: {} × {} points, bn {}; lowest loss {best:.5} at a = {:.4}, b = {:.4}\nreport: {}\n",
        report.surface.a.len(),
        report.surface.b.len(),
        report.bn,
        at.0,
        at.1,
        args.json.display()
    ))
}
