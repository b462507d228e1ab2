//! proptest strategies over valleys, shift laws and SGD settings, with the ranges the theorem
//! tests sweep. Ranges are wide but keep SGD stable (η times the largest curvature ≤ 0.2) and
//! keep each case's run long enough that the bias is many batch-means SEs from 0.
use crate::sgd::SgdConfig;
use crate::shift::{Shift, Triangular};
use crate::valley::{AnyValley, AsymPower, PiecewiseQuadratic, SmoothBlend};
use proptest::prelude::*;
use std::sync::Arc;

/// An asymmetric valley, flat side +: a₊ ∈ [0.2, 5], k = a₋/a₊ ∈ [1.5, 40]; power p ∈ [1.5, 3];
/// smooth-blend sharpness k ∈ [0.5, 8].
pub fn arb_asym_valley() -> impl Strategy<Value = AnyValley> {
    (0.2f64..5.0, 1.5f64..40.0, 0u8..3, 1.5f64..3.0, 0.5f64..8.0).prop_map(
        |(ap, k, fam, p, sharp)| match fam {
            0 => AnyValley::Quadratic(PiecewiseQuadratic::new(ap, ap * k)),
            1 => AnyValley::Power(AsymPower::new(ap, ap * k, p)),
            _ => AnyValley::Smooth(SmoothBlend::new(ap, ap * k, sharp)),
        },
    )
}

/// An asymmetric valley in the narrower range the d-dimensional runs can afford:
/// a₊ ∈ [0.5, 2], k ∈ [2, 10] (so the slowest coordinate mixes within ~10⁶ steps).
pub fn arb_moderate_valley() -> impl Strategy<Value = AnyValley> {
    (0.5f64..2.0, 2.0f64..10.0, 0u8..3, 1.5f64..3.0, 0.5f64..8.0).prop_map(
        |(ap, k, fam, p, sharp)| match fam {
            0 => AnyValley::Quadratic(PiecewiseQuadratic::new(ap, ap * k)),
            1 => AnyValley::Power(AsymPower::new(ap, ap * k, p)),
            _ => AnyValley::Smooth(SmoothBlend::new(ap, ap * k, sharp)),
        },
    )
}

/// A symmetric valley of any family (equal coefficients).
pub fn arb_symmetric_valley() -> impl Strategy<Value = AnyValley> {
    (0.2f64..5.0, 0u8..3, 1.5f64..3.0, 0.5f64..8.0).prop_map(|(a, fam, p, sharp)| match fam {
        0 => AnyValley::Quadratic(PiecewiseQuadratic::new(a, a)),
        1 => AnyValley::Power(AsymPower::new(a, a, p)),
        _ => AnyValley::Smooth(SmoothBlend::new(a, a, sharp)),
    })
}

/// Any valley: asymmetric, mirrored or symmetric.
pub fn arb_valley() -> impl Strategy<Value = AnyValley> {
    prop_oneof![
        arb_asym_valley(),
        arb_asym_valley().prop_map(|v| crate::valley::Valley1d::mirrored(&v)),
        arb_symmetric_valley()
    ]
}

/// A non-degenerate symmetric shift of scale 0.1–3: uniform, Gaussian, Laplace, two-point,
/// a three-atom law, or the user-given triangular law.
pub fn arb_shift() -> impl Strategy<Value = Shift> {
    (0.1f64..3.0, 0u8..6, 0.05f64..0.9).prop_map(|(s, law, w)| match law {
        0 => Shift::Uniform { half_width: s },
        1 => Shift::Gaussian { sigma: s },
        2 => Shift::Laplace { b: s },
        3 => Shift::TwoPoint { s },
        4 => Shift::Atoms(vec![(0.0, w * 0.5), (0.5 * s, (1.0 - w) * 0.5), (s, 0.5)]),
        _ => Shift::Custom(Arc::new(Triangular { w: s })),
    })
}

/// Gradient-noise laws for SGD with variance 1 (so the Langevin temperature is η):
/// Gaussian, uniform, Laplace, two-point.
pub fn arb_noise() -> impl Strategy<Value = Shift> {
    prop_oneof![
        Just(Shift::Gaussian { sigma: 1.0 }),
        Just(Shift::Uniform {
            half_width: 3f64.sqrt()
        }),
        Just(Shift::Laplace { b: 0.5f64.sqrt() }),
        Just(Shift::TwoPoint { s: 1.0 }),
    ]
}

/// An asymmetric valley with a stable SGD setting: η·max(a) ∈ [0.02, 0.2], 10⁶ averaged
/// steps in 40 batches, 10⁴ burn-in, random seed.
pub fn arb_stable_sgd() -> impl Strategy<Value = (AnyValley, SgdConfig)> {
    (arb_asym_valley(), 0.02f64..0.2, any::<u64>()).prop_map(|(v, ea, seed)| {
        let a_max = match v {
            AnyValley::Quadratic(q) => q.a_minus,
            AnyValley::Power(p) => p.a_minus,
            AnyValley::Smooth(s) => s.a_minus,
        };
        let eta = (ea / a_max).min(0.05);
        let cfg = SgdConfig {
            eta,
            steps: 1_000_000,
            burn_in: 10_000,
            batches: 40,
            seed,
            x0: 0.0,
        };
        (tuned_for_sgd(v, eta), cfg)
    })
}

/// Rescales a [`SmoothBlend`]'s sharpness to the SGD fluctuation scale sd = √(η/(2a₊)) (unit
/// noise variance): k ↦ max(k, 1)/sd. Without it a blend of width 1/k ≫ sd looks like a
/// symmetric quadratic to SGD and its bias, though positive, is below any affordable SE.
pub fn tuned_for_sgd(v: AnyValley, eta: f64) -> AnyValley {
    match v {
        AnyValley::Smooth(s) => {
            let sd = (eta / (2.0 * s.a_plus)).sqrt();
            AnyValley::Smooth(SmoothBlend {
                k: s.k.max(1.0) / sd,
                ..s
            })
        }
        other => other,
    }
}
