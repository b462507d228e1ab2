//! `asymvalley probe --surface`: the 2-D loss surface `L(w + a·d1 + b·d2)` on a grid, written as
//! JSON (axes, loss matrix, BatchNorm mode, the directions' provenance) and an SVG contour figure.
//!
//! The plane's directions come from the probe's own sources: the first two drawn directions
//! (seeds S, S + 1), the Hessian's top two eigenvectors, the first two of a `--directions` file,
//! or, with `--between A B`, the line `B − A` as d1 and a random direction as d2, made
//! orthogonal to the line and as long as it, so the figure's axes are equal and perpendicular
//! and A sits at (0, 0), B at (1, 0).
use super::{directions, print_stdout, DirectionChoice, ProbeArgs};
use crate::contour::{draw_contour, ContourPlot};
use crate::plot::Marker;
use asymvalley::error::{Error, Result};
use asymvalley::valley::directions::{Direction, DrawOptions, ParamSubset};
use asymvalley::valley::model::{LossKind, NamedTensor, ProbeData};
use asymvalley::valley::profile::{grid_interpolation, grid_through, BnPlan};
use asymvalley::valley::report::write_json;
use asymvalley::valley::surface::{
    orthogonal_to, surface, SurfaceAxis, SurfacePoint, SurfaceReport,
};
use asymvalley::valley::torchscript::ScriptModel;
use indicatif::ProgressBar;
use std::path::Path;

/// What `probe` has prepared before it branches to the surface.
pub struct SurfaceSetup<'a> {
    /// The model, at the probed point (at A for a line).
    pub model: &'a ScriptModel,
    /// The data the loss is measured on.
    pub data: &'a ProbeData,
    /// The model's parameters.
    pub params: &'a [NamedTensor],
    /// The parameters the directions move.
    pub subset: &'a ParamSubset,
    /// BatchNorm at every point.
    pub bn: &'a BnPlan,
    /// Whether the model has BatchNorm layers.
    pub has_bn: bool,
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map_or_else(|| p.display().to_string(), |s| s.to_string_lossy().into())
}

/// Runs `probe --surface` (`line`: the direction B − A when `--between A B` was given; the model
/// is then at A).
pub fn run_surface(args: &ProbeArgs, s: &SurfaceSetup, line: Option<Direction>) -> Result<()> {
    let across = grid_through(args.grid, args.radius).map_err(|_| {
        Error::invalid(
            "grid/radius",
            format!("{}/{}", args.grid, args.radius),
            "--grid >= 3 and a finite --radius > 0",
        )
    })?;
    let mut hessian = None;
    let mut points = Vec::new();
    let (d1, d2, axes, along, file) = match (line, args.between.as_deref()) {
        (Some(l), Some([a, b])) => {
            let DirectionChoice::Random(kind) = args.direction else {
                return Err(Error::invalid(
                    "direction",
                    "hessian",
                    "a random kind for the second axis of a --between surface",
                ));
            };
            let r = Direction::random_with(
                s.params,
                kind,
                s.subset,
                args.seed,
                DrawOptions {
                    filter_keep_1d: args.filter_keep_1d,
                },
            )?;
            let d2 = orthogonal_to(&l, &r)?;
            let axes = [
                SurfaceAxis::of(
                    &l,
                    format!(
                        "line from {} (a = 0) to {} (a = 1)",
                        a.display(),
                        b.display()
                    ),
                ),
                SurfaceAxis::of(
                    &d2,
                    format!(
                        "{} direction, seed {}, made orthogonal to the line and scaled to its norm",
                        kind.name(),
                        args.seed
                    ),
                ),
            ];
            points.push(SurfacePoint {
                label: format!("A: {}", stem(a)),
                a: 0.0,
                b: 0.0,
            });
            points.push(SurfacePoint {
                label: format!("B: {}", stem(b)),
                a: 1.0,
                b: 0.0,
            });
            let mut pair = vec![l, d2];
            if let Some(p) = &args.save_directions {
                Direction::save_all(&pair, p)?;
            }
            let along = grid_interpolation(args.distances, args.division)?;
            let d2 = pair.remove(1);
            let d1 = pair.remove(0);
            (d1, d2, axes, along, args.save_directions.clone())
        }
        _ => {
            if let Some(c) = args.count.filter(|&c| c != 2) {
                return Err(Error::invalid(
                    "count",
                    c,
                    "2 with --surface (the plane's two directions)",
                ));
            }
            let (mut v, file, loaded) = directions(
                args,
                s.params,
                s.subset,
                s.model,
                s.data,
                Some(2),
                &mut hessian,
            )?;
            if v.len() != 2 {
                return Err(Error::invalid(
                    "directions",
                    file.as_ref()
                        .map_or(String::new(), |p| p.display().to_string()),
                    format!(
                        "a file with at least two directions for --surface (it holds {})",
                        v.len()
                    ),
                ));
            }
            let source = |i: usize, d: &Direction| match (&file, loaded, args.direction) {
                (Some(p), true, _) => format!("direction d{i} of {}", p.display()),
                (_, _, DirectionChoice::Hessian) => format!("Hessian eigenvector {i}"),
                _ => format!("{} direction, seed {}", d.kind, d.seed),
            };
            let d2 = v.remove(1);
            let d1 = v.remove(0);
            let axes = [
                SurfaceAxis::of(&d1, source(0, &d1)),
                SurfaceAxis::of(&d2, source(1, &d2)),
            ];
            points.push(SurfacePoint {
                label: "w".into(),
                a: 0.0,
                b: 0.0,
            });
            (d1, d2, axes, across.clone(), file)
        }
    };
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((along.len() * across.len()) as u64)
    };
    let grid = surface(
        s.model,
        &d1,
        &d2,
        &along,
        &across,
        s.data,
        args.loss,
        s.bn,
        || bar.inc(1),
    )?;
    bar.finish_and_clear();
    let report = SurfaceReport {
        model: args.model.display().to_string(),
        data: args.data.display().to_string(),
        examples: s.data.len(),
        loss: match args.loss {
            LossKind::CrossEntropy => "cross-entropy".into(),
            LossKind::Mse => "mse".into(),
        },
        bn: s.bn.mode.to_string(),
        has_batch_norm: s.has_bn,
        directions: axes,
        directions_file: file.map(|p| p.display().to_string()),
        hessian,
        points,
        surface: grid,
    };
    write_json(&args.json, &report)?;
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
