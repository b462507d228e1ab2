//! # asymvalley-harness: synthetic asymmetric valleys with known answers
//!
//! The theory side of asymvalley. An *asymmetric valley* (He, Huang & Yuan, NeurIPS 2019,
//! arXiv 1902.00744) is a minimum whose loss rises slowly on one side and steeply on the other.
//! Two informal claims of the paper, "a solution biased towards the flat side generalizes
//! better" and "SGD averaging produces that bias", are stated precisely in `THEOREMS.md` (as
//! the project's own statements: the paper's formal theorems are not available) and
//! property-tested here:
//!
//! * [`valley`]: 1-D families with the flat side on + ([`valley::PiecewiseQuadratic`],
//!   [`valley::AsymPower`], [`valley::SmoothBlend`]), mirroring, symmetric cases.
//! * [`shift`]: symmetric mean-zero laws ([`shift::Shift`]), including user-given ones.
//! * [`bias`]: `g(c) = E_δ f(c+δ)`, g'(0), c*, c_max by quadrature, Monte Carlo cross-check;
//!   [`oracle`]: the closed forms (THEOREMS.md D2, D3 and ours).
//! * [`sgd`]: the SGD simulator with batch-means confidence intervals; [`langevin`]: D5.
//! * [`multidim`]: separable and rotated d-dimensional valleys (D7) and their simulator.
//! * [`neuron`]: the official 2-parameter sigmoid-neuron toy, in tch.
//! * `strategy` and `proptest_config` (feature `proptest`): the proptest inputs shared with the
//!   integration tests.
//!
//! # Examples
//! ```
//! use harness::{bias, oracle, shift::Shift, valley::PiecewiseQuadratic};
//! let q = PiecewiseQuadratic::new(1.0, 10.0); // flat side +, a₊ = 1, a₋ = 10
//! let law = Shift::Uniform { half_width: 1.0 };
//! let r = bias::analyze(&q, &law);            // quadrature
//! let c = oracle::uniform(&q, 1.0);           // THEOREMS.md D2 closed form
//! assert!((r.c_star - 0.519494).abs() < 1e-6 && (c.c_max - 1.224745).abs() < 1e-6);
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod bias;
pub mod error;
pub mod langevin;
pub mod multidim;
pub mod neuron;
pub mod oracle;
pub mod quadrature;
pub mod sgd;
pub mod shift;
pub mod special;
#[cfg(any(test, feature = "proptest"))]
pub mod strategy;
pub mod valley;

#[cfg(test)]
mod reference;

pub use error::HarnessError;

/// The proptest configuration of every theorem test: a fixed case count (`PROPTEST_CASES`
/// overrides it), a fixed RNG seed, so every run draws the same cases,
/// and failure seeds persisted under `fixtures/proptest-regressions/harness.txt`
/// (relative to the package root, the working directory of `cargo test`).
#[cfg(any(test, feature = "proptest"))]
pub fn proptest_config() -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    proptest::test_runner::Config {
        cases,
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0001_9020_0744),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "fixtures/proptest-regressions/harness.txt",
            ),
        )),
        ..proptest::test_runner::Config::default()
    }
}
