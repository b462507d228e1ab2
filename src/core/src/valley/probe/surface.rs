//! The surface branch of [`super::run_probe`]: `L(w + a·d1 + b·d2)` on a grid.
//!
//! The plane's directions come from the probe's own sources: the first two drawn directions
//! (seeds S, S + 1), the Hessian's top two eigenvectors, the first two of a directions file,
//! or, for a line `[A, B]`, the line `B − A` as d1 and a random direction as d2, made
//! orthogonal to the line and as long as it, so the figure's axes are equal and perpendicular
//! and A sits at (0, 0), B at (1, 0).
use super::{loss_name, Given, ProbeResult};
use super::{source_directions, DirectionChoice, Labels, Prepared, ProbeEvent, ProbeOutcome};
use crate::error::{Error, Result};
use crate::valley::directions::Direction;
use crate::valley::profile::{grid_interpolation, grid_through};
use crate::valley::surface::{orthogonal_to, surface, SurfaceAxis, SurfacePoint, SurfaceReport};
use std::path::Path;

fn stem(label: &str) -> String {
    let p = Path::new(label);
    p.file_stem()
        .map_or_else(|| label.to_string(), |s| s.to_string_lossy().into())
}

/// Runs the surface (`line`: the direction B − A of a line probe; the model is then at A).
pub(super) fn run(
    p: &Prepared,
    line: Option<Direction>,
    file: Option<&Given>,
    names: &Labels,
    event: &mut dyn FnMut(ProbeEvent),
) -> Result<ProbeOutcome> {
    let c = p.config;
    let across = grid_through(c.grid, c.radius).map_err(|_| {
        Error::invalid(
            "grid/radius",
            format!("{}/{}", c.grid, c.radius),
            "--grid >= 3 and a finite --radius > 0",
        )
    })?;
    let mut hessian = None;
    let mut points = Vec::new();
    let (d1, d2, axes, along) = match (line, names.between.as_ref()) {
        (Some(l), Some([a, b])) => {
            let DirectionChoice::Random(kind) = c.direction else {
                return Err(Error::invalid(
                    "direction",
                    "hessian",
                    "a random kind for the second axis of a --between surface",
                ));
            };
            let r = Direction::random_with(&p.params, kind, &p.subset, c.seed, c.draw())?;
            let d2 = orthogonal_to(&l, &r)?;
            let axes = [
                SurfaceAxis::of(&l, format!("line from {a} (a = 0) to {b} (a = 1)")),
                SurfaceAxis::of(
                    &d2,
                    format!(
                        "{} direction, seed {}, made orthogonal to the line and scaled to its norm",
                        kind.name(),
                        c.seed
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
            let along = grid_interpolation(c.distances, c.division)?;
            (l, d2, axes, along)
        }
        _ => {
            if let Some(k) = c.count.filter(|&k| k != 2) {
                return Err(Error::invalid(
                    "count",
                    k,
                    "2 with --surface (the plane's two directions)",
                ));
            }
            let (mut v, loaded) = source_directions(p, file, Some(2), &mut hessian)?;
            if v.len() != 2 {
                return Err(Error::invalid(
                    "directions",
                    file.map_or(String::new(), Given::label),
                    format!(
                        "a file with at least two directions for --surface (it holds {})",
                        v.len()
                    ),
                ));
            }
            let source = |i: usize, d: &Direction| match (file, loaded, c.direction) {
                (Some(f), true, _) => format!("direction d{i} of {}", f.label()),
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
            (d1, d2, axes, across.clone())
        }
    };
    let total = along.len() * across.len();
    let mut done = 0;
    let grid = surface(
        p.model,
        &d1,
        &d2,
        &along,
        &across,
        &p.data,
        c.loss,
        &p.bn,
        || {
            done += 1;
            event(ProbeEvent::Point {
                done,
                total,
                direction: 0,
            });
        },
    )?;
    let report = SurfaceReport {
        model: names.model.clone(),
        data: names.data.clone(),
        examples: p.data.len(),
        loss: loss_name(c.loss),
        bn: p.bn.mode.to_string(),
        has_batch_norm: p.has_bn,
        directions: axes,
        directions_file: names.file.clone(),
        hessian,
        points,
        surface: grid,
    };
    Ok(ProbeOutcome {
        result: ProbeResult::Surface(Box::new(report)),
        directions: vec![d1, d2],
    })
}
