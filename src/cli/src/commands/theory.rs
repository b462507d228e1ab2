//! `asymvalley theory`: the theorems' numbers for synthetic asymmetric valleys.
//!
//! With no arguments it prints a table of standard cases (the reference cases of harness/THEOREMS.md and
//! more). With any argument it computes one case: the expected shifted loss g(c) = E_δ f(c+δ)
//! at 0 and at its minimiser c*, the bias window (0, c_max), an SGD run
//! `x ← x − η(f'(x) + ε)` with ε ~ N(0, noise²) and its average with a batch-means confidence
//! interval, and the small-η Langevin prediction. `--json` prints one JSON object whose schema
//! is documented at the end of `harness/THEOREMS.md`. The maths lives in the `harness` crate.
use asymvalley::error::{Error, Result};
use harness::bias::{self, BiasReport};
use harness::error::HarnessError;
use harness::langevin::{langevin, langevin_quadratic, LangevinPrediction};
use harness::oracle;
use harness::sgd::{simulate, SgdConfig};
use harness::shift::{Shift, ShiftSummary};
use harness::valley::{AnyValley, AsymPower, PiecewiseQuadratic, SmoothBlend, Valley1d};
use serde::Serialize;

/// The valley family of `--family`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyArg {
    /// ½a₊x² (x ≥ 0), ½a₋x² (x < 0).
    Quadratic,
    /// a₊xᵖ/p (x ≥ 0), a₋|x|ᵖ/p (x < 0); exponent `--p`.
    Power,
    /// ½x²(a₊σ(kx) + a₋σ(−kx)), no kink at 0; sharpness `--k`.
    Smooth,
}

/// The shift law of `--shift`; `--scale` is its usual scale.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShiftArg {
    /// U[−s, s], scale = half-width s.
    Uniform,
    /// N(0, σ²), scale = σ.
    Gaussian,
    /// Laplace, density e^{−|x|/b}/(2b), scale = b.
    Laplace,
    /// ±s with probability ½ each, scale = s.
    TwoPoint,
}

/// Arguments of `asymvalley theory`. Every option is optional: given none, the command prints
/// the table of standard cases; given any, it computes one case, with the defaults shown.
#[derive(clap::Args, Debug, Default)]
pub struct TheoryArgs {
    /// Valley family [default: quadratic].
    #[arg(long, value_enum)]
    pub family: Option<FamilyArg>,
    /// Coefficient of the flat side [default: 1].
    #[arg(long, allow_hyphen_values = true)]
    pub a_flat: Option<f64>,
    /// Coefficient of the sharp side [default: 10].
    #[arg(long, allow_hyphen_values = true)]
    pub a_sharp: Option<f64>,
    /// Exponent of the power family, > 1 [default: 2].
    #[arg(long, allow_hyphen_values = true)]
    pub p: Option<f64>,
    /// Sharpness of the smooth family's blend, > 0 [default: 4].
    #[arg(long, allow_hyphen_values = true)]
    pub k: Option<f64>,
    /// Put the flat side on − instead of + (mirror the valley).
    #[arg(long)]
    pub mirror: bool,
    /// Shift law of the test loss [default: uniform].
    #[arg(long, value_enum)]
    pub shift: Option<ShiftArg>,
    /// The shift law's scale: half-width, σ, b or ±s [default: 1].
    #[arg(long, allow_hyphen_values = true)]
    pub scale: Option<f64>,
    /// SGD step size [default: 0.05].
    #[arg(long, allow_hyphen_values = true)]
    pub eta: Option<f64>,
    /// Standard deviation of the Gaussian gradient noise [default: 1].
    #[arg(long, allow_hyphen_values = true)]
    pub noise: Option<f64>,
    /// SGD steps averaged after burn-in [default: 2000000].
    #[arg(long, allow_hyphen_values = true)]
    pub steps: Option<u64>,
    /// SGD steps discarded before averaging [default: 10000].
    #[arg(long, allow_hyphen_values = true)]
    pub burn_in: Option<u64>,
    /// Batches for the batch-means standard error [default: 50].
    #[arg(long, allow_hyphen_values = true)]
    pub batches: Option<usize>,
    /// Seed of the SGD noise [default: 0].
    #[arg(long, allow_hyphen_values = true)]
    pub seed: Option<u64>,
    /// Width of `sgd_mean_ci` in standard errors [default: 1.96].
    #[arg(long, allow_hyphen_values = true)]
    pub z: Option<f64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl TheoryArgs {
    fn is_empty(&self) -> bool {
        self.family.is_none()
            && self.a_flat.is_none()
            && self.a_sharp.is_none()
            && self.p.is_none()
            && self.k.is_none()
            && !self.mirror
            && self.shift.is_none()
            && self.scale.is_none()
            && self.eta.is_none()
            && self.noise.is_none()
            && self.steps.is_none()
            && self.burn_in.is_none()
            && self.batches.is_none()
            && self.seed.is_none()
            && self.z.is_none()
            && !self.json
    }
}

/// One case: a valley, a shift law and an SGD setting.
#[derive(Clone, Debug)]
pub struct Case {
    /// Short label for the table.
    pub label: String,
    /// The valley (already mirrored when the flat side is −).
    pub valley: AnyValley,
    /// Whether the flat side is − (`--mirror`).
    pub mirrored: bool,
    /// The shift law δ.
    pub shift: Shift,
    /// The SGD run.
    pub sgd: SgdConfig,
    /// σ of the Gaussian gradient noise.
    pub noise: f64,
    /// CI width in SEs.
    pub z: f64,
}

/// The JSON object `asymvalley theory --json` prints (schema in harness/THEOREMS.md).
#[derive(Clone, Debug, Serialize)]
pub struct CaseReport {
    /// The valley, tagged by `family`, with its + and − coefficients.
    pub valley: AnyValley,
    /// True when the flat side is − (`--mirror`).
    pub mirrored: bool,
    /// Shift law, scale and standard deviation.
    pub shift: ShiftSummary,
    /// `closed-form` or `quadrature`: how g0 … c_max were computed.
    pub method: &'static str,
    /// Largest |closed form − quadrature| over g0, dg0, c_star, g_c_star, c_max (null without a closed form).
    pub closed_form_vs_quadrature: Option<f64>,
    /// g(0) = E_δ f(δ).
    pub g0: f64,
    /// g'(0) = E_δ f'(δ).
    pub dg0: f64,
    /// argmin g.
    pub c_star: f64,
    /// g(c*).
    pub g_c_star: f64,
    /// g(c_max) = g(0), g < g(0) strictly between 0 and c_max.
    pub c_max: f64,
    /// SGD settings.
    pub sgd: SgdConfig,
    /// σ of the gradient noise.
    pub noise: f64,
    /// The averaged SGD iterate w̄.
    pub sgd_mean: f64,
    /// Its batch-means standard error.
    pub sgd_mean_se: f64,
    /// `[w̄ − z·se, w̄ + z·se]`.
    pub sgd_mean_ci: [f64; 2],
    /// z used for `sgd_mean_ci`.
    pub z: f64,
    /// Fraction of iterates on the flat side.
    pub flat_fraction: f64,
    /// E[x⁺] over the run.
    pub e_pos: f64,
    /// E[x⁻] over the run.
    pub e_neg: f64,
    /// Mean of f'(x) over the run: 0 at stationarity (D4); a₊E[x⁺] − a₋E[x⁻] for the quadratic.
    pub grad_mean: f64,
    /// Its standard error.
    pub grad_mean_se: f64,
    /// Langevin (small-η) prediction of w̄ (D5).
    pub langevin_mean: f64,
    /// Langevin prediction of the flat fraction.
    pub langevin_flat_fraction: f64,
    /// g(w̄): the expected shifted loss of the SGD average (D6 compares it with g0).
    pub g_at_sgd_mean: f64,
}

/// The CLI's error for a harness error: range errors keep their field, value and range; anything
/// else (divergence) is blamed on `--eta`, the step size.
fn cli_error(e: HarnessError, eta: f64) -> Error {
    match e {
        HarnessError::InvalidConfig {
            field,
            value,
            expected,
        } => Error::InvalidConfig {
            field,
            value,
            expected: expected.to_string(),
        },
        other => Error::invalid(
            "eta",
            eta,
            format!("a step size for which SGD stays bounded ({other})"),
        ),
    }
}

/// The range where the numbers mean something: coefficients, scales and noise in
/// [10⁻⁶, 10⁶] keep every f(δ) the quadrature sees below ~10¹⁸ (no overflow, and an absolute
/// tolerance that still means something), and the SGD products η·f' finite.
const COEF: (f64, f64) = (1e-6, 1e6);

/// `v` if it is finite and in `[lo, hi]`, else an error naming `field` with the range.
fn within(field: &'static str, v: f64, (lo, hi): (f64, f64)) -> Result<f64> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(Error::invalid(
            field,
            short(v),
            format!("a finite number in [{lo:e}, {hi:e}]"),
        ))
    }
}

/// `v` for a message: scientific notation when plain digits would be unreadable (1e300).
fn short(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-4..1e6).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// Refuses a smooth blend past its critical ratio: there it has a second local minimum, so
/// the theorems' hypothesis (one minimum, at 0, with f' charged by the side) fails and the
/// SGD mean and the Langevin prediction describe different valleys.
fn single_minimum(valley: &AnyValley) -> Result<()> {
    if let AnyValley::Smooth(v) = valley {
        let critical = SmoothBlend::critical_ratio();
        if v.ratio() > critical {
            return Err(Error::invalid(
                "a-sharp",
                format!(
                    "{} (a-sharp/a-flat = {:.4})",
                    v.a_plus.max(v.a_minus),
                    v.ratio()
                ),
                format!(
                    "a-sharp/a-flat at most {critical:.4} for the smooth family: past that \
                     ratio the blend has a second local minimum on its flat side, outside the \
                     theorems' single-minimum hypothesis (harness/THEOREMS.md §0)"
                ),
            ));
        }
    }
    Ok(())
}

/// Fails with a clear error when a computed number is not finite (a computation that lost
/// its meaning), instead of printing NaN.
fn finite(field: &'static str, v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::invalid(
            field,
            v,
            "a finite result: the quadrature or the search did not converge for these \
             arguments; bring the coefficients and scales closer to 1",
        ))
    }
}

impl Case {
    /// Builds and validates the case of the arguments (defaults filled in).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first out-of-range option.
    pub fn from_args(a: &TheoryArgs) -> Result<Self> {
        let a_flat = within("a-flat", a.a_flat.unwrap_or(1.0), COEF)?;
        let a_sharp = within("a-sharp", a.a_sharp.unwrap_or(10.0), COEF)?;
        let mut valley = match a.family.unwrap_or(FamilyArg::Quadratic) {
            FamilyArg::Quadratic => AnyValley::Quadratic(PiecewiseQuadratic::new(a_flat, a_sharp)),
            FamilyArg::Power => {
                let p = a.p.unwrap_or(2.0);
                // p > 1 keeps f' continuous at 0; p ≤ 16 keeps |δ|ᵖ finite at scale 10⁶.
                if !(p > 1.0 && p <= 16.0) {
                    return Err(Error::invalid("p", p, "a finite exponent in (1, 16]"));
                }
                AnyValley::Power(AsymPower::new(a_flat, a_sharp, p))
            }
            FamilyArg::Smooth => AnyValley::Smooth(SmoothBlend::new(
                a_flat,
                a_sharp,
                within("k", a.k.unwrap_or(4.0), (1e-3, 1e3))?,
            )),
        };
        single_minimum(&valley)?;
        if a.mirror {
            valley = valley.mirrored();
        }
        let s = within("scale", a.scale.unwrap_or(1.0), COEF)?;
        let shift = match a.shift.unwrap_or(ShiftArg::Uniform) {
            ShiftArg::Uniform => Shift::Uniform { half_width: s },
            ShiftArg::Gaussian => Shift::Gaussian { sigma: s },
            ShiftArg::Laplace => Shift::Laplace { b: s },
            ShiftArg::TwoPoint => Shift::TwoPoint { s },
        };
        let sgd = SgdConfig {
            eta: within("eta", a.eta.unwrap_or(0.05), (1e-9, 10.0))?,
            steps: a.steps.unwrap_or(2_000_000),
            burn_in: a.burn_in.unwrap_or(10_000),
            x0: 0.0,
            batches: a.batches.unwrap_or(50),
            seed: a.seed.unwrap_or(0),
        };
        // The simulator's own range checks, reported before any work starts.
        sgd.validate().map_err(|e| cli_error(e, sgd.eta))?;
        Ok(Case {
            label: String::new(),
            valley,
            mirrored: a.mirror,
            shift,
            sgd,
            noise: within("noise", a.noise.unwrap_or(1.0), COEF)?,
            z: within("z", a.z.unwrap_or(1.96), (1e-3, 10.0))?,
        })
    }

    /// A loud warning when SGD runs outside the small-step regime the Langevin prediction (T4)
    /// and the tested range of T2 (η·max a ≤ 0.2) describe: with η·a_sharp > 2, a step on the
    /// sharp side overshoots (|1 − η·a| > 1), so the run is a bounded but chaotic bounce, and
    /// `langevin_mean` says nothing about it. Piecewise-quadratic and smooth valleys only (the
    /// power family has no constant curvature).
    pub fn stability_warning(&self) -> Option<String> {
        let sharp = match self.valley {
            AnyValley::Quadratic(q) => q.a_plus.max(q.a_minus),
            AnyValley::Smooth(v) => v.a_plus.max(v.a_minus),
            AnyValley::Power(_) => return None,
        };
        let product = self.sgd.eta * sharp;
        (product > 2.0).then(|| {
            format!(
                "eta·a_sharp = {} > 2: SGD overshoots on the sharp side, outside the small-step \
                 regime of the theorems (tested for eta·a_sharp ≤ 0.2); `langevin_mean` does \
                 not predict this run",
                short(product)
            )
        })
    }

    /// Computes everything.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] on `eta` when SGD diverges (η too large for the curvature).
    pub fn compute(&self) -> Result<CaseReport> {
        let quad = bias::analyze(&self.valley, &self.shift);
        let closed = closed_form(&self.valley, &self.shift);
        let diff = closed.map(|c| {
            [
                c.g0 - quad.g0,
                c.dg0 - quad.dg0,
                c.c_star - quad.c_star,
                c.g_c_star - quad.g_c_star,
                c.c_max - quad.c_max,
            ]
            .iter()
            .fold(0.0f64, |m, d| m.max(d.abs()))
        });
        let b = closed.unwrap_or(quad);
        for (field, v) in [
            ("g0", b.g0),
            ("dg0", b.dg0),
            ("c_star", b.c_star),
            ("g_c_star", b.g_c_star),
            ("c_max", b.c_max),
        ] {
            finite(field, v)?;
        }
        let noise = Shift::Gaussian { sigma: self.noise };
        let run =
            simulate(&self.valley, &noise, &self.sgd).map_err(|e| cli_error(e, self.sgd.eta))?;
        let t = self.sgd.eta * self.noise * self.noise;
        let lp: LangevinPrediction = match self.valley {
            AnyValley::Quadratic(q) => langevin_quadratic(&q, t),
            v => langevin(&v, t),
        };
        finite("langevin_mean", lp.mean)?;
        finite("sgd_mean", run.mean.value)?;
        let flat = |frac_pos: f64| {
            if self.mirrored {
                1.0 - frac_pos
            } else {
                frac_pos
            }
        };
        Ok(CaseReport {
            valley: self.valley,
            mirrored: self.mirrored,
            shift: self.shift.summary(),
            method: if closed.is_some() {
                "closed-form"
            } else {
                "quadrature"
            },
            closed_form_vs_quadrature: diff,
            g0: b.g0,
            dg0: b.dg0,
            c_star: b.c_star,
            g_c_star: b.g_c_star,
            c_max: b.c_max,
            sgd: self.sgd,
            noise: self.noise,
            sgd_mean: run.mean.value,
            sgd_mean_se: run.mean.se,
            sgd_mean_ci: run.mean.ci(self.z),
            z: self.z,
            flat_fraction: flat(run.frac_pos.value),
            e_pos: run.e_pos.value,
            e_neg: run.e_neg.value,
            grad_mean: run.grad.value,
            grad_mean_se: run.grad.se,
            langevin_mean: lp.mean,
            langevin_flat_fraction: flat(lp.frac_pos),
            g_at_sgd_mean: bias::g(&self.valley, &self.shift, run.mean.value),
        })
    }
}

/// The closed form, where the harness has one (THEOREMS.md D2/D3 and T6).
fn closed_form(v: &AnyValley, law: &Shift) -> Option<BiasReport> {
    match (v, law) {
        (AnyValley::Quadratic(q), Shift::Uniform { half_width }) => {
            Some(oracle::uniform(q, *half_width))
        }
        (AnyValley::Quadratic(q), Shift::Gaussian { sigma }) => Some(oracle::gaussian(q, *sigma)),
        (AnyValley::Quadratic(q), Shift::Laplace { b }) => Some(oracle::laplace(q, *b)),
        (AnyValley::Quadratic(q), Shift::TwoPoint { s }) => Some(oracle::two_point(q, *s)),
        (AnyValley::Power(p), Shift::Uniform { half_width }) if p.a_plus != p.a_minus => {
            Some(oracle::power_uniform(p, *half_width))
        }
        _ => None,
    }
}

/// The standard cases of the table: THEOREMS.md D2/D3 (a = (1, 10)) under all four laws, the D2
/// table's k = 2, 4, 7, the D5 step sizes, a mirrored and a symmetric valley, and the power
/// and smooth families.
pub fn standard_cases() -> Vec<Case> {
    let q = |ap: f64, am: f64| AnyValley::Quadratic(PiecewiseQuadratic::new(ap, am));
    let sgd = |eta: f64| SgdConfig {
        eta,
        ..SgdConfig::default()
    };
    let case = |label: &str, valley: AnyValley, mirrored: bool, shift: Shift, eta: f64| Case {
        label: label.to_string(),
        valley,
        mirrored,
        shift,
        sgd: sgd(eta),
        noise: 1.0,
        z: 1.96,
    };
    let u1 = Shift::Uniform { half_width: 1.0 };
    vec![
        case("quadratic 1/10", q(1.0, 10.0), false, u1.clone(), 0.05),
        case(
            "quadratic 1/10",
            q(1.0, 10.0),
            false,
            Shift::Gaussian { sigma: 1.0 },
            0.05,
        ),
        case(
            "quadratic 1/10",
            q(1.0, 10.0),
            false,
            Shift::Laplace { b: 1.0 },
            0.05,
        ),
        case(
            "quadratic 1/10",
            q(1.0, 10.0),
            false,
            Shift::TwoPoint { s: 1.0 },
            0.05,
        ),
        case(
            "quadratic 1/10 η=.01",
            q(1.0, 10.0),
            false,
            u1.clone(),
            0.01,
        ),
        case("quadratic 1/10 η=.1", q(1.0, 10.0), false, u1.clone(), 0.1),
        case("quadratic 1/2", q(1.0, 2.0), false, u1.clone(), 0.05),
        case("quadratic 1/4", q(1.0, 4.0), false, u1.clone(), 0.05),
        case("quadratic 1/7", q(1.0, 7.0), false, u1.clone(), 0.05),
        case(
            "quadratic 1/10 mirror",
            q(10.0, 1.0),
            true,
            u1.clone(),
            0.05,
        ),
        case("quadratic 3/3 (sym)", q(3.0, 3.0), false, u1.clone(), 0.05),
        case(
            "power 1/10 p=1.5",
            AnyValley::Power(AsymPower::new(1.0, 10.0, 1.5)),
            false,
            u1.clone(),
            0.05,
        ),
        case(
            "power 1/10 p=3",
            AnyValley::Power(AsymPower::new(1.0, 10.0, 3.0)),
            false,
            u1.clone(),
            0.05,
        ),
        case(
            "smooth 1/10 k=4",
            AnyValley::Smooth(SmoothBlend::new(1.0, 10.0, 4.0)),
            false,
            Shift::Gaussian { sigma: 1.0 },
            0.05,
        ),
    ]
}

/// Runs `asymvalley theory`.
///
/// # Errors
/// [`Error::InvalidConfig`] for out-of-range options; [`Error::Json`] if printing JSON fails.
pub fn run(args: TheoryArgs) -> Result<()> {
    if args.is_empty() {
        println!(
            "{:<22} {:<12} {:>8} {:>8} {:>8} {:>8} | {:>8} {:>17} {:>6} {:>8} {:>8}",
            "valley (a_flat/a_sharp)",
            "shift",
            "g(0)",
            "c*",
            "g(c*)",
            "c_max",
            "sgd w̄",
            "95% CI",
            "flat",
            "langevin",
            "g(w̄)"
        );
        for case in standard_cases() {
            let r = case.compute()?;
            println!(
                "{:<22} {:<12} {:>8.5} {:>8.5} {:>8.5} {:>8.5} | {:>8.5} [{:>7.4},{:>7.4}] {:>6.3} {:>8.5} {:>8.5}",
                case.label,
                format!("{} {}", r.shift.law, r.shift.scale),
                r.g0,
                r.c_star,
                r.g_c_star,
                r.c_max,
                r.sgd_mean,
                r.sgd_mean_ci[0],
                r.sgd_mean_ci[1],
                r.flat_fraction,
                r.langevin_mean,
                r.g_at_sgd_mean
            );
        }
        println!("SGD: x ← x − η(f'(x) + ε), ε ~ N(0, 1), η = 0.05 unless shown, 2e6 steps after 1e4 burn-in, seed 0.");
        println!("g(c) = E f(c + δ); g(c) < g(0) on (0, c_max). See harness/THEOREMS.md.");
        return Ok(());
    }
    let case = Case::from_args(&args)?;
    if let Some(w) = case.stability_warning() {
        eprintln!("asymvalley: warning: {w}");
    }
    let r = case.compute()?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_are_rejected_with_their_name() {
        let bad = [
            TheoryArgs {
                a_flat: Some(-1.0),
                ..Default::default()
            },
            TheoryArgs {
                p: Some(0.5),
                family: Some(FamilyArg::Power),
                ..Default::default()
            },
            TheoryArgs {
                eta: Some(0.0),
                ..Default::default()
            },
            TheoryArgs {
                batches: Some(1),
                ..Default::default()
            },
        ];
        for (a, field) in bad.iter().zip(["a-flat", "p", "eta", "batches"]) {
            match Case::from_args(a) {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{other:?}"),
            }
        }
        let diverging = TheoryArgs {
            eta: Some(1.0),
            a_flat: Some(10.0),
            steps: Some(1000),
            ..Default::default()
        };
        assert!(matches!(
            Case::from_args(&diverging).and_then(|c| c.compute()),
            Err(Error::InvalidConfig { field: "eta", .. })
        ));
    }

    /// The issue's example case reproduces THEOREMS.md D2 and D5 (closed form = quadrature).
    #[test]
    fn issue_example_case() {
        let a = TheoryArgs {
            family: Some(FamilyArg::Quadratic),
            shift: Some(ShiftArg::Uniform),
            steps: Some(400_000),
            seed: Some(7),
            json: true,
            ..Default::default()
        };
        let r = Case::from_args(&a).and_then(|c| c.compute()).unwrap();
        assert!((r.c_star - 0.519494).abs() < 5e-7 && (r.c_max - 1.224745).abs() < 5e-7);
        assert!(r.closed_form_vs_quadrature.unwrap() < 1e-8);
        assert!(r.sgd_mean_ci[0] > 0.0 && r.flat_fraction > 0.5);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in [
            "g0",
            "c_star",
            "g_c_star",
            "c_max",
            "sgd_mean",
            "flat_fraction",
            "langevin_mean",
        ] {
            assert!(v[key].is_f64(), "{key}");
        }
        assert_eq!(v["sgd_mean_ci"].as_array().map(Vec::len), Some(2));
    }
}
