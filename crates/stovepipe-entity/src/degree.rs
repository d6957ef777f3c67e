//! Degree of brokenness: `0` green, `1` fully broken.

use crate::error::InvalidValue;
use serde::{Deserialize, Serialize};

/// Health in `[0, 1]`: `0` green, `1` fully broken. Absence of a fact is not
/// green; only [`Degree::is_green`] decides greenness. Never compare the
/// inner float by hand.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Degree(f64);

impl Degree {
    pub const GREEN: Self = Self(0.0);
    pub const BROKEN: Self = Self(1.0);

    /// A finite value in `[0, 1]`.
    pub fn new(value: f64) -> Result<Self, InvalidValue> {
        if value.is_finite() && (0.0..=1.0).contains(&value) {
            // Normalise -0.0 so equality and storage are exact.
            Ok(Self(if value == 0.0 { 0.0 } else { value }))
        } else {
            Err(InvalidValue::new(
                "degree",
                &value.to_string(),
                "a number in [0, 1]",
            ))
        }
    }

    /// The fraction `broken / total` (1.0 when `total` is 0: nothing could
    /// be attributed, so the whole thing counts as broken).
    pub fn fraction(broken: usize, total: usize) -> Self {
        if total == 0 {
            return Self::BROKEN;
        }
        Self((broken.min(total) as f64) / (total as f64))
    }

    pub fn is_green(self) -> bool {
        self.0 == 0.0
    }

    pub fn value(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Degree {
    type Error = InvalidValue;
    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Degree> for f64 {
    fn from(value: Degree) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(Degree::new(0.0).unwrap().is_green());
        assert!(Degree::new(-0.0).unwrap().is_green());
        assert!(!Degree::new(0.25).unwrap().is_green());
        assert!(!Degree::BROKEN.is_green());
        for bad in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
            assert!(Degree::new(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Degree>("2.0").is_err());
    }

    #[test]
    fn fractions() {
        assert_eq!(Degree::fraction(1, 4), Degree::new(0.25).unwrap());
        assert!(Degree::fraction(0, 3).is_green());
        assert_eq!(Degree::fraction(0, 0), Degree::BROKEN);
    }
}
