//! Unit conversions: decibels, dBm and watts.
//!
//! Every quantity in this crate carries its unit in its name (`_w`, `_dbm`,
//! `_db`, `_hz`, `_s`, `_bits`); these are the only places where logarithmic
//! and linear scales meet.

/// Converts a power in dBm to watts: `P_W = 10^((P_dBm − 30)/10)`.
#[must_use]
pub fn dbm_to_w(power_dbm: f64) -> f64 {
    10f64.powf((power_dbm - 30.0) / 10.0)
}

/// Converts a power in watts to dBm: `P_dBm = 10·log10(P_W) + 30`.
/// Zero watts gives `−∞`.
#[must_use]
pub fn w_to_dbm(power_w: f64) -> f64 {
    10.0 * power_w.log10() + 30.0
}

/// Converts a ratio in dB to a linear ratio: `10^(x_dB/10)`.
#[must_use]
pub fn db_to_linear(ratio_db: f64) -> f64 {
    10f64.powf(ratio_db / 10.0)
}

/// Converts a linear (power) ratio to dB: `10·log10(x)`.
#[must_use]
pub fn linear_to_db(ratio: f64) -> f64 {
    10.0 * ratio.log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // 30 dBm is 1 W by definition; 23 dBm ≈ 0.19953 W (10^-0.7).
        assert!((dbm_to_w(30.0) - 1.0).abs() < 1e-15);
        assert!((dbm_to_w(23.0) - 0.199_526_231_496_887_9).abs() < 1e-15);
        // −174 dBm/Hz = 10^-20.4 W/Hz ≈ 3.981e-21.
        assert!((dbm_to_w(-174.0) / 3.981_071_705_534_97e-21 - 1.0).abs() < 1e-12);
        assert!((db_to_linear(3.0) - 1.995_262_314_968_879_5).abs() < 1e-14);
        assert!((linear_to_db(100.0) - 20.0).abs() < 1e-14);
        assert_eq!(w_to_dbm(0.0), f64::NEG_INFINITY);
    }

    proptest::proptest! {
        #[test]
        fn dbm_round_trip(p in -200.0f64..100.0) {
            let back = w_to_dbm(dbm_to_w(p));
            proptest::prop_assert!((back - p).abs() < 1e-9);
        }

        #[test]
        fn db_round_trip(x in -150.0f64..150.0) {
            let back = linear_to_db(db_to_linear(x));
            proptest::prop_assert!((back - x).abs() < 1e-9);
        }
    }
}
