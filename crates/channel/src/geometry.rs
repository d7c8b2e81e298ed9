//! Client placement, path loss, block Rayleigh fading and CPU clocks, all
//! drawn from per-(seed, stream, client, round) random streams.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Exp1;
use serde::{Deserialize, Serialize};

use crate::config::ChannelConfig;
use crate::error::ChannelError;
use crate::link::Uplink;
use crate::units::db_to_linear;

/// Path loss in dB at `distance_m` metres: `128.1 + 37.6·log10(d_km)`.
#[must_use]
pub fn path_loss_db(distance_m: f64) -> f64 {
    128.1 + 37.6 * (distance_m / 1000.0).log10()
}

/// Linear path gain `10^(−PL/10)` at `distance_m` metres.
#[must_use]
pub fn path_gain(distance_m: f64) -> f64 {
    db_to_linear(-path_loss_db(distance_m))
}

/// Which random quantity a stream drives (keeps streams independent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
enum Stream {
    Placement = 1,
    Cpu = 2,
    Fading = 3,
}

/// SplitMix64 finaliser: a bijective 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator that depends only on `(seed, stream, client, round)`, so one
/// client's draws do not depend on how many other clients exist or on the
/// order of calls.
fn stream_rng(seed: u64, stream: Stream, client: usize, round: u64) -> StdRng {
    let h = mix(mix(mix(seed) ^ stream as u64) ^ client as u64);
    StdRng::seed_from_u64(mix(h ^ mix(round)))
}

/// Block Rayleigh fading power `|h|² ~ Exp(1)` of `client` in `round`,
/// a pure function of `(seed, client, round)`.
#[must_use]
pub fn fading_power(seed: u64, client: usize, round: u64) -> f64 {
    stream_rng(seed, Stream::Fading, client, round).sample(Exp1)
}

/// One client's fixed placement and hardware.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClientSite {
    /// Distance to the base station in metres.
    pub distance_m: f64,
    /// Angle around the base station in radians (for plots only).
    pub angle_rad: f64,
    /// Linear path gain at that distance.
    pub path_gain: f64,
    /// CPU clock in Hz.
    pub cpu_freq_hz: f64,
}

/// Draws client `client`'s site: distance uniform in the annulus's *area*
/// (`d = sqrt(d0² + u·(R² − d0²))`), uniform angle, clock `U[f_min, f_max]`.
#[must_use]
pub fn draw_site(config: &ChannelConfig, seed: u64, client: usize) -> ClientSite {
    let mut rng = stream_rng(seed, Stream::Placement, client, 0);
    let (r0, r1) = (config.min_distance_m, config.cell_radius_m);
    let u: f64 = rng.random();
    let distance_m = (r0 * r0 + u * (r1 * r1 - r0 * r0)).sqrt();
    let angle_rad = rng.random::<f64>() * std::f64::consts::TAU;
    let mut cpu = stream_rng(seed, Stream::Cpu, client, 0);
    let cpu_freq_hz = cpu.random_range(config.cpu_freq_min_hz..=config.cpu_freq_max_hz);
    ClientSite {
        distance_m,
        angle_rad,
        path_gain: path_gain(distance_m),
        cpu_freq_hz,
    }
}

/// A cell of clients with seeded placement and per-round fading.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    config: ChannelConfig,
    seed: u64,
    sites: Vec<ClientSite>,
}

impl Network {
    /// Places `num_clients` clients with `seed`.
    ///
    /// # Errors
    /// [`ChannelError::InvalidField`] when the config does not validate.
    pub fn new(config: ChannelConfig, num_clients: usize, seed: u64) -> Result<Self, ChannelError> {
        config.validate()?;
        let sites = (0..num_clients)
            .map(|k| draw_site(&config, seed, k))
            .collect();
        Ok(Self {
            config,
            seed,
            sites,
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }

    /// The clients' sites, in client order.
    #[must_use]
    pub fn sites(&self) -> &[ClientSite] {
        &self.sites
    }

    /// Client `client`'s fading power in `round` (see [`fading_power`]).
    #[must_use]
    pub fn fading(&self, client: usize, round: u64) -> f64 {
        fading_power(self.seed, client, round)
    }

    /// Client `client`'s uplink in `round` (path gain × fading), or `None`
    /// for an index out of range.
    #[must_use]
    pub fn uplink(&self, client: usize, round: u64) -> Option<Uplink> {
        let site = self.sites.get(client)?;
        Some(self.link_with_gain(site.path_gain * self.fading(client, round)))
    }

    /// Client `client`'s uplink at the mean channel (`|h|² = 1`), as the
    /// offline stage uses it.
    #[must_use]
    pub fn mean_uplink(&self, client: usize) -> Option<Uplink> {
        let site = self.sites.get(client)?;
        Some(self.link_with_gain(site.path_gain))
    }

    /// Every client's uplink in `round`.
    #[must_use]
    pub fn uplinks(&self, round: u64) -> Vec<Uplink> {
        (0..self.sites.len())
            .map(|k| self.link_with_gain(self.sites[k].path_gain * self.fading(k, round)))
            .collect()
    }

    /// The seed the network was placed with (its fading streams derive from it).
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    pub(crate) fn link_with_gain(&self, channel_gain: f64) -> Uplink {
        Uplink {
            tx_power_w: self.config.tx_power_w(),
            channel_gain,
            bandwidth_hz: self.config.bandwidth_hz,
            noise_psd_w_per_hz: self.config.noise_psd_w_per_hz(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_loss_reference_points() {
        // d = 1 km: log10(1) = 0, so exactly 128.1 dB; d = 100 m: 128.1 − 37.6.
        assert!((path_loss_db(1000.0) - 128.1).abs() < 1e-12);
        assert!((path_loss_db(100.0) - 90.5).abs() < 1e-12);
        assert!((path_gain(1000.0) - 10f64.powf(-12.81)).abs() < 1e-25);
    }

    #[test]
    fn fading_is_order_and_population_independent() {
        let cfg = ChannelConfig::default();
        let small = Network::new(cfg.clone(), 3, 7).unwrap();
        let big = Network::new(cfg, 50, 7).unwrap();
        assert_eq!(small.sites()[2], big.sites()[2]);
        let later = big.uplink(2, 5).unwrap();
        let _ = big.uplink(40, 9);
        assert_eq!(small.uplink(2, 5).unwrap(), later);
        assert_ne!(small.fading(2, 5), small.fading(2, 6));
        assert_ne!(fading_power(7, 2, 5), fading_power(8, 2, 5));
        assert!(small.uplink(3, 0).is_none());
    }

    #[test]
    fn placement_is_uniform_in_area() {
        // P(d <= x) = (x² − d0²)/(R² − d0²); at x = 300: (9e4 − 2.5e3)/(2.5e5 − 2.5e3).
        let cfg = ChannelConfig::default();
        let n = 20_000;
        let net = Network::new(cfg, n, 11).unwrap();
        let inside = net.sites().iter().filter(|s| s.distance_m <= 300.0).count() as f64 / n as f64;
        let expect = (9e4 - 2.5e3) / (2.5e5 - 2.5e3);
        // binomial sd = sqrt(p(1−p)/n) ≈ 0.0034; allow 5 sd
        assert!((inside - expect).abs() < 0.017, "{inside} vs {expect}");
        for s in net.sites() {
            assert!((50.0..=500.0).contains(&s.distance_m));
            assert!((1e9..=2e9).contains(&s.cpu_freq_hz));
        }
        let mean_f = net.sites().iter().map(|s| s.cpu_freq_hz).sum::<f64>() / n as f64;
        // U[1,2] GHz: mean 1.5 GHz, sd of the mean 0.289e9/sqrt(n) ≈ 2e6
        assert!((mean_f - 1.5e9).abs() < 1e7);
    }
}
