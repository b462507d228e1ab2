//! The study's SVG figures: the restart rule per seed, the line per fired seed, and the
//! distribution of |ln R| over random directions.
use super::directions::DirectionOutcome;
use super::seed_run::SeedOutcome;
use super::study::Study;
use crate::plot::{draw, Marker, Panel, Series};
use asymvalley::error::Result;
use std::path::Path;

/// `restart.svg`: per seed, the restart epochs' running train loss and test loss minus SWA's.
/// An epoch passes the rule with the left curve below 0 and the right one above 0; the marker is
/// the last passing epoch, the one the line goes to.
pub fn restart_figure(path: &Path, study: &Study) -> Result<()> {
    let mut train = Panel {
        title: "running train loss − SWA's (rule: < 0)".into(),
        x_label: "restart epoch".into(),
        y_label: "Δ train loss".into(),
        ..Panel::default()
    };
    let mut test = Panel {
        title: "test loss − SWA's (rule: > 0)".into(),
        x_label: "restart epoch".into(),
        y_label: "Δ test loss".into(),
        ..Panel::default()
    };
    for s in &study.outcomes {
        let swa = s.bn.swa;
        let series = |f: &dyn Fn(&super::restart::AfterSwaEpoch) -> f64| {
            s.restart
                .epochs
                .iter()
                .enumerate()
                .map(|(i, e)| ((i + 1) as f64, f(e)))
                .collect::<Vec<_>>()
        };
        let tr = series(&|e| e.train.loss - swa.train.loss);
        let te = series(&|e| e.test.loss - swa.test.loss);
        if let Some(i) = s.restart.selected {
            train.markers.push(Marker {
                label: format!("s{}", s.seed),
                x: tr[i].0,
                y: tr[i].1,
            });
            test.markers.push(Marker {
                label: format!("s{}", s.seed),
                x: te[i].0,
                y: te[i].1,
            });
        }
        let label = format!("seed {}", s.seed);
        let color = s.seed as usize;
        train.series.push(Series {
            label: label.clone(),
            points: tr,
            color,
            fitted: true,
        });
        test.series.push(Series {
            label,
            points: te,
            color,
            fitted: true,
        });
    }
    draw(path, &[train, test], 1200)
}

/// `line.svg`: train and test loss along SWA (t = 0) → restarted SGD (t = 1), per fired seed.
pub fn line_figure(path: &Path, study: &Study) -> Result<()> {
    let mut panels = [
        Panel {
            title: "train loss along SWA (t=0) → SGD (t=1)".into(),
            x_label: "t".into(),
            y_label: "cross-entropy".into(),
            ..Panel::default()
        },
        Panel {
            title: "test loss along the same line".into(),
            x_label: "t".into(),
            y_label: "cross-entropy".into(),
            ..Panel::default()
        },
    ];
    for s in &study.outcomes {
        let Some(l) = &s.line else { continue };
        for (panel, p) in panels.iter_mut().zip([&l.profiles.train, &l.profiles.test]) {
            panel.series.push(Series {
                label: format!("seed {}", s.seed),
                points: p
                    .offsets
                    .iter()
                    .copied()
                    .zip(p.loss.iter().copied())
                    .collect(),
                color: s.seed as usize,
                fitted: true,
            });
        }
    }
    draw(path, &panels, 1200)
}

/// `directions.svg`: the empirical distribution of |ln R| over all directions and seeds, U(0,1)
/// and the Gaussian control, with and without BatchNorm.
pub fn directions_figure(path: &Path, study: &Study) -> Result<()> {
    let cdf = |values: Vec<f64>| {
        let mut v = values;
        v.sort_by(f64::total_cmp);
        let n = v.len().max(1) as f64;
        v.iter()
            .enumerate()
            .map(|(k, x)| (*x, (k + 1) as f64 / n))
            .collect::<Vec<_>>()
    };
    type Pick = fn(&SeedOutcome) -> &Vec<DirectionOutcome>;
    let pooled = |pick: Pick| {
        study
            .outcomes
            .iter()
            .flat_map(pick)
            .map(|d| d.abs_log_ratio)
            .collect::<Vec<_>>()
    };
    let laws: [(&str, Pick); 4] = [
        ("U(0,1), with BatchNorm", |s| &s.bn.uniform),
        ("U(0,1), without BatchNorm", |s| &s.plain.uniform),
        ("Gaussian (control), with BatchNorm", |s| &s.bn.gaussian),
        ("Gaussian (control), without BatchNorm", |s| {
            &s.plain.gaussian
        }),
    ];
    let series = laws
        .iter()
        .enumerate()
        .map(|(color, (label, pick))| Series {
            label: label.to_string(),
            points: cdf(pooled(*pick)),
            color,
            fitted: false,
        })
        .collect();
    draw(
        path,
        &[Panel {
            title: "|ln R| over random directions around SWA, all seeds".into(),
            x_label: "|ln R| (asymmetric: ≥ ln 2 = 0.69 and interval excludes 0)".into(),
            y_label: "fraction of directions ≤".into(),
            series,
            markers: vec![],
        }],
        900,
    )
}
