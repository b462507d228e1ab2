//! Where SWA's displacement lies against the fitted valley's gain region.
//!
//! Theorem (a) (harness/THEOREMS.md T1): under a symmetric random shift, the expected test
//! loss `g(c)` of the point displaced by c from the training minimum is below `g(0)` exactly for
//! c strictly between 0 and `c_max` (same sign as the flat side), and minimal at c*. SWA's
//! displacement `d = −t_min` agrees with the theorem's picture only when `d ∈ (0, c_max)`,
//! which is more than being on the flat side.
use serde::Serialize;

/// The position of a displacement `d` relative to `(0, c_max)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GainRegion {
    /// `d` strictly between 0 and c_max: the fitted model predicts a lower expected loss.
    Inside,
    /// `d` on the flat side but at or past c_max: the displacement overshoots.
    Beyond,
    /// `d` on the steep side: the model predicts a higher expected loss.
    WrongSide,
    /// `d = 0` (or c_max = 0): no displacement to judge.
    AtMinimum,
}

impl GainRegion {
    /// Classifies `displacement` against `(0, c_max)`.
    pub fn of(displacement: f64, c_max: f64) -> GainRegion {
        if displacement == 0.0 || c_max == 0.0 {
            GainRegion::AtMinimum
        } else if (displacement > 0.0) != (c_max > 0.0) {
            GainRegion::WrongSide
        } else if displacement.abs() < c_max.abs() {
            GainRegion::Inside
        } else {
            GainRegion::Beyond
        }
    }

    /// How the report says it.
    pub fn phrase(self) -> &'static str {
        match self {
            GainRegion::Inside => "inside (0, c_max)",
            GainRegion::Beyond => "past c_max",
            GainRegion::WrongSide => "on the steep side",
            GainRegion::AtMinimum => "at the minimum",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_alone_is_not_enough() {
        assert_eq!(GainRegion::of(0.3, 0.5), GainRegion::Inside);
        assert_eq!(GainRegion::of(-0.3, -0.5), GainRegion::Inside);
        assert_eq!(
            GainRegion::of(0.9, 0.5),
            GainRegion::Beyond,
            "same side, too far"
        );
        assert_eq!(
            GainRegion::of(0.5, 0.5),
            GainRegion::Beyond,
            "c_max itself: g = g(0)"
        );
        assert_eq!(GainRegion::of(-0.3, 0.5), GainRegion::WrongSide);
        assert_eq!(GainRegion::of(0.3, -0.5), GainRegion::WrongSide);
        assert_eq!(GainRegion::of(0.0, 0.5), GainRegion::AtMinimum);
    }
}
