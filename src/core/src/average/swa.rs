//! Equal-weight stochastic weight averaging (Izmailov et al. 2018).
//!
//! `w̄ₙ₊₁ = w̄ₙ + (θ − w̄ₙ)/(n+1)`, so after n snapshots `w̄ₙ = (1/n) Σᵢ θᵢ` exactly in real
//! arithmetic. The first update (n = 0) has weight 1: it copies, which is what
//! `torch.optim.swa_utils.AveragedModel` and the official `moving_average(…, 1/(n+1))` do.

/// The interpolation weight of the (n+1)-th snapshot in an equal-weight running mean: `1/(n+1)`.
///
/// ```
/// assert_eq!(asymvalley::average::swa_weight(0), 1.0);
/// assert_eq!(asymvalley::average::swa_weight(3), 0.25);
/// ```
pub fn swa_weight(n_averaged: u64) -> f64 {
    1.0 / (n_averaged as f64 + 1.0)
}
