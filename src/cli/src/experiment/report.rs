//! `report.md` from the template `report.md.j2` (minijinja): this module only turns the
//! [`Study`] into the template's strings; the prose lives in the template.
use super::figures::{directions_figure, line_figure, restart_figure};
use super::study::{Spread, Study};
use super::verdict::{Finding, Paper};
use asymvalley::error::{Error, Result};
use serde::Serialize;
use std::path::Path;

const TEMPLATE: &str = include_str!("report.md.j2");

/// The settings note on the learning rate (measured before, by the grid it describes).
const LR_NOTE: &str = include_str!("lr_note.md");

/// The restart protocol (fixed before the full-budget study's verdicts were seen).
const RESTART_NOTE: &str = include_str!("restart_note.md");

#[derive(Serialize)]
struct SummaryRow {
    claim: String,
    paper: &'static str,
    study: String,
    verdict: &'static str,
}

#[derive(Serialize)]
struct PairRow {
    what: String,
    bn: String,
    plain: String,
}

#[derive(Serialize)]
struct DirectionRow {
    law: &'static str,
    bn_fraction: String,
    plain_fraction: String,
    bn_log: String,
    plain_log: String,
}

#[derive(Serialize)]
struct NumberRow {
    what: String,
    value: String,
    n: usize,
}

#[derive(Serialize)]
struct RestartRow {
    seed: u64,
    passing: usize,
    epoch: String,
    distance: String,
}

#[derive(Serialize)]
struct LineRow {
    seed: u64,
    epoch: String,
    t_min: String,
    ratio: String,
    flat: &'static str,
    test_min: String,
    shift: String,
    c_star: String,
    c_max: String,
    gain: &'static str,
    beta: String,
}

/// `k/N [lo, hi]` for a finding.
pub fn study_cell(f: &Finding) -> String {
    match f.interval {
        Some((lo, hi)) => format!("{}/{} [{lo:.2}, {hi:.2}]", f.k, f.n),
        None => "0/0 (never measurable)".into(),
    }
}

/// `median [Q1, Q3]` with 3 significant decimals.
pub fn spread_cell(s: &Spread) -> String {
    match s.quartiles {
        Some([q1, m, q3]) => format!("{m:.3} [{q1:.3}, {q3:.3}]"),
        None => "—".into(),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$}"))
}

/// Per seed: the epochs that passed the rule, the selected (last passing) one, the line's length.
fn restart_rows(study: &Study) -> Vec<RestartRow> {
    study
        .outcomes
        .iter()
        .map(|s| RestartRow {
            seed: s.seed,
            passing: s.restart.passing.len(),
            epoch: s
                .restart
                .selected
                .map_or("— (rule did not fire)".into(), |e| (e + 1).to_string()),
            distance: opt(s.line.as_ref().map(|l| l.profiles.distance), 4),
        })
        .collect()
}

fn line_rows(study: &Study) -> Vec<LineRow> {
    study
        .outcomes
        .iter()
        .filter_map(|s| {
            let l = s.line.as_ref()?;
            let v = l.valley.as_ref();
            let best = l
                .biased
                .iter()
                .min_by(|a, b| a.1.test.loss.total_cmp(&b.1.test.loss));
            Some(LineRow {
                seed: s.seed,
                epoch: s
                    .restart
                    .selected
                    .map_or("—".into(), |e| (e + 1).to_string()),
                t_min: opt(v.map(|v| v.t_min), 2),
                ratio: v.map_or("no valley (minimum at the grid's edge)".into(), |v| {
                    let a = &v.asymmetry;
                    match a.rise_ratio_ci {
                        Some([lo, hi]) => format!("{:.2} [{lo:.2}, {hi:.2}]", a.rise_ratio),
                        None => format!("{:.2}", a.rise_ratio),
                    }
                }),
                flat: match l.swa_on_flat_side() {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "—",
                },
                test_min: format!("{:.2}", l.test_min_t),
                shift: if l.shift.at_bound > 0 {
                    format!(
                        "{} of {} at the search bound: censored",
                        l.shift.at_bound,
                        l.shift.shifts.len()
                    )
                } else {
                    format!(
                        "{}/{} (p = {:.3})",
                        l.shift.positive, l.shift.negative, l.shift.p_value
                    )
                },
                c_star: opt(l.bias.map(|b| b.c_star), 3),
                c_max: opt(l.bias.map(|b| b.c_max), 3),
                gain: l.gain_region().map_or("—", |g| g.phrase()),
                beta: best.map_or("—".into(), |(beta, r)| {
                    format!(
                        "β = {beta}: {:.4} vs {:.4}",
                        r.test.loss, s.bn.swa.test.loss
                    )
                }),
            })
        })
        .collect()
}

fn render_err(e: minijinja::Error) -> Error {
    Error::Data {
        path: "src/cli/src/experiment/report.md.j2 (embedded)".into(),
        reason: format!("the report template failed: {e:#}"),
    }
}

/// The report's Markdown for `study`; `args` is echoed in the last section.
pub fn render(study: &Study, args: &str) -> Result<String> {
    let c = &study.config;
    let summary: Vec<SummaryRow> = study
        .findings
        .iter()
        .map(|f| SummaryRow {
            claim: f.claim.clone(),
            paper: match f.paper {
                Paper::Holds => "holds",
                Paper::NotStated => "not stated",
            },
            study: study_cell(f),
            verdict: f.verdict.word(),
        })
        .collect();
    let claim16 = study
        .findings
        .iter()
        .find(|f| f.claim.starts_with("a U(0,1) direction"))
        .map_or("not measured".into(), |f| {
            format!("{} of the directions, {}", study_cell(f), f.verdict.word())
        });
    let spread = |what: &str| study.numbers.iter().find(|s| s.what == what);
    let cell = |what: &str| spread(what).map_or("—".into(), spread_cell);
    let solutions: Vec<PairRow> = [
        "SGD test loss",
        "SWA test loss",
        "SGD test accuracy %",
        "SWA test accuracy %",
    ]
    .iter()
    .map(|w| PairRow {
        what: w.to_string(),
        bn: cell(&format!("{w}, BN")),
        plain: cell(&format!("{w}, no BN")),
    })
    .collect();
    let directions: Vec<DirectionRow> = [("U(0,1)", "U(0,1)"), ("Gaussian (control)", "Gaussian")]
        .iter()
        .map(|&(law, key)| DirectionRow {
            law,
            bn_fraction: cell(&format!("fraction of {key} directions asymmetric, BN")),
            plain_fraction: cell(&format!("fraction of {key} directions asymmetric, no BN")),
            bn_log: cell(&format!("median |ln R| over {key} directions, BN")),
            plain_log: cell(&format!("median |ln R| over {key} directions, no BN")),
        })
        .collect();
    let numbers: Vec<NumberRow> = study
        .numbers
        .iter()
        .map(|s| NumberRow {
            what: s.what.clone(),
            value: spread_cell(s),
            n: s.n,
        })
        .collect();
    let fired: Vec<String> = study
        .outcomes
        .iter()
        .filter(|s| s.restart.selected.is_some())
        .map(|s| format!("seed {}", s.seed))
        .collect();
    let schedule = c.schedule();
    let snapshots = (0..schedule.epochs)
        .filter(|&e| schedule.averages_after(e))
        .count();
    let ctx = minijinja::context! {
        n_seeds => c.seeds,
        last_seed => c.seeds.saturating_sub(1),
        summary,
        claim16,
        c1 => c.channels[0],
        c2 => c.channels[1],
        wd => c.weight_decay,
        batch => c.batch,
        epochs => c.epochs,
        lr_init => c.lr_init,
        swa_lr => schedule.swa_lr,
        swa_start => c.swa_start,
        snapshots,
        after_lr => c.after_lr(),
        after_epochs => c.after_epochs,
        line_points => 5 * c.division + 1,
        max_shift => super::seed_run::MAX_SHIFT,
        directions => c.directions,
        radius => c.radius,
        points => c.points,
        chunks => c.chunks,
        lr_note => LR_NOTE.trim(),
        restart_note => RESTART_NOTE.trim(),
        restarts => restart_rows(study),
        solutions,
        fired => fired.len(),
        fired_list => if fired.is_empty() { "none".to_string() } else { fired.join(", ") },
        restart_epoch => cell("restart epoch selected, the last passing (fired seeds)"),
        lines => line_rows(study),
        valleys => study.outcomes.iter().filter(|s| s.line.as_ref().is_some_and(|l| l.valley.is_some())).count(),
        distance => cell("line: ‖w_sgd − w_swa‖ (fired seeds)"),
        direction_rows => directions,
        numbers,
        args,
    };
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.add_template("report", TEMPLATE).map_err(render_err)?;
    env.get_template("report")
        .and_then(|t| t.render(ctx))
        .map_err(render_err)
}

/// Writes `report.md`, `report.json` and the three figures into `dir`.
pub fn write_report(dir: &Path, study: &Study, args: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    restart_figure(&dir.join("restart.svg"), study)?;
    line_figure(&dir.join("line.svg"), study)?;
    directions_figure(&dir.join("directions.svg"), study)?;
    asymvalley::checkpoint::write_atomically(
        &dir.join("report.md"),
        render(study, args)?.as_bytes(),
    )?;
    asymvalley::valley::report::write_json(&dir.join("report.json"), study)
}
