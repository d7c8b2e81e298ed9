//! The uplink configuration (serde, validated).

use serde::{Deserialize, Serialize};

use crate::error::{ChannelError, finite, non_negative, positive};
use crate::units::dbm_to_w;

/// System parameters of the uplink and of the clients' hardware.
///
/// Defaults follow docs/method.md §3 (typical of this literature; the paper's own
/// values are unknown): `W_tot = 20 MHz`, `P = 23 dBm`, `N0 = −174 dBm/Hz`,
/// a disc of radius 500 m with a 50 m exclusion, CPU clocks `U[1, 2] GHz`,
/// 32-bit values. `kappa = 1e-28` (effective switched capacitance) is the
/// usual value in the wireless-FL literature and is our choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// Total uplink bandwidth `W_tot` in Hz.
    pub bandwidth_hz: f64,
    /// Transmit power of every client in dBm.
    pub tx_power_dbm: f64,
    /// Noise power spectral density `N0` in dBm/Hz.
    pub noise_psd_dbm_per_hz: f64,
    /// Radius of the cell disc in metres.
    pub cell_radius_m: f64,
    /// Least client–base-station distance in metres.
    pub min_distance_m: f64,
    /// Lower end of the uniform CPU clock distribution, Hz.
    pub cpu_freq_min_hz: f64,
    /// Upper end of the uniform CPU clock distribution, Hz.
    pub cpu_freq_max_hz: f64,
    /// Bits per transmitted value.
    pub bits_per_value: u32,
    /// Effective switched capacitance `κ` (J/(cycle·Hz²)) for compute energy.
    pub kappa: f64,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            bandwidth_hz: 20e6,
            tx_power_dbm: 23.0,
            noise_psd_dbm_per_hz: -174.0,
            cell_radius_m: 500.0,
            min_distance_m: 50.0,
            cpu_freq_min_hz: 1e9,
            cpu_freq_max_hz: 2e9,
            bits_per_value: 32,
            kappa: 1e-28,
        }
    }
}

impl ChannelConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`ChannelError::InvalidField`] naming the first offending field.
    pub fn validate(&self) -> Result<(), ChannelError> {
        positive("bandwidth_hz", self.bandwidth_hz)?;
        finite("tx_power_dbm", self.tx_power_dbm)?;
        finite("noise_psd_dbm_per_hz", self.noise_psd_dbm_per_hz)?;
        positive("cell_radius_m", self.cell_radius_m)?;
        positive("min_distance_m", self.min_distance_m)?;
        if self.min_distance_m >= self.cell_radius_m {
            return Err(ChannelError::InvalidField {
                field: "min_distance_m",
                value: self.min_distance_m,
                expected: "less than cell_radius_m",
            });
        }
        positive("cpu_freq_min_hz", self.cpu_freq_min_hz)?;
        positive("cpu_freq_max_hz", self.cpu_freq_max_hz)?;
        if self.cpu_freq_max_hz < self.cpu_freq_min_hz {
            return Err(ChannelError::InvalidField {
                field: "cpu_freq_max_hz",
                value: self.cpu_freq_max_hz,
                expected: "at least cpu_freq_min_hz",
            });
        }
        if self.bits_per_value == 0 {
            return Err(ChannelError::InvalidField {
                field: "bits_per_value",
                value: 0.0,
                expected: "an integer >= 1",
            });
        }
        non_negative("kappa", self.kappa)?;
        Ok(())
    }

    /// Transmit power in watts.
    #[must_use]
    pub fn tx_power_w(&self) -> f64 {
        dbm_to_w(self.tx_power_dbm)
    }

    /// Noise power spectral density in W/Hz.
    #[must_use]
    pub fn noise_psd_w_per_hz(&self) -> f64 {
        dbm_to_w(self.noise_psd_dbm_per_hz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip_json() {
        let c = ChannelConfig::default();
        c.validate().unwrap();
        let s = serde_json::to_string(&c).unwrap();
        let mut back: ChannelConfig = serde_json::from_str(&s).unwrap();
        // serde_json's default float parser may be off by one ulp on 1e-28
        assert!((back.kappa / c.kappa - 1.0).abs() < 1e-15);
        back.kappa = c.kappa;
        assert_eq!(back, c);
        // missing fields take defaults
        let partial: ChannelConfig = serde_json::from_str(r#"{"bandwidth_hz": 1e6}"#).unwrap();
        assert_eq!(partial.tx_power_dbm, 23.0);
        assert!(serde_json::from_str::<ChannelConfig>(r#"{"bandwith_hz": 1e6}"#).is_err());
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases: Vec<(ChannelConfig, &str)> = vec![
            (
                ChannelConfig {
                    bandwidth_hz: -1.0,
                    ..Default::default()
                },
                "bandwidth_hz",
            ),
            (
                ChannelConfig {
                    tx_power_dbm: f64::NAN,
                    ..Default::default()
                },
                "tx_power_dbm",
            ),
            (
                ChannelConfig {
                    min_distance_m: 600.0,
                    ..Default::default()
                },
                "min_distance_m",
            ),
            (
                ChannelConfig {
                    cpu_freq_max_hz: 0.5e9,
                    ..Default::default()
                },
                "cpu_freq_max_hz",
            ),
            (
                ChannelConfig {
                    bits_per_value: 0,
                    ..Default::default()
                },
                "bits_per_value",
            ),
            (
                ChannelConfig {
                    kappa: -1.0,
                    ..Default::default()
                },
                "kappa",
            ),
        ];
        for (cfg, name) in cases {
            match cfg.validate() {
                Err(ChannelError::InvalidField { field, .. }) => assert_eq!(field, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
