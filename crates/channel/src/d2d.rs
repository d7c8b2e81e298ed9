//! Device-to-device links between two sites of a [`Network`], for
//! decentralized training without a server.
//!
//! A D2D link uses the same model as the uplink (docs/method.md §3): the path loss
//! `128.1 + 37.6·log10(d_km)` at the distance between the two devices
//! (floored at [`MIN_D2D_DISTANCE_M`] so that co-located devices keep a
//! finite gain), block Rayleigh fading `|h|² ~ Exp(1)` drawn per unordered
//! pair and round (the channel is reciprocal: `i → j` and `j → i` see the
//! same gain in a round), the same transmit power and noise, and a band of
//! the configuration's `bandwidth_hz` shared by FDMA among the devices
//! transmitting in a round.

use crate::geometry::{ClientSite, Network, fading_power, path_gain};
use crate::link::Uplink;

/// Least distance used in the D2D path loss, in metres.
pub const MIN_D2D_DISTANCE_M: f64 = 1.0;

/// A site's position in the plane, metres, base station at the origin.
#[must_use]
pub fn site_xy(site: &ClientSite) -> (f64, f64) {
    (
        site.distance_m * site.angle_rad.cos(),
        site.distance_m * site.angle_rad.sin(),
    )
}

/// Euclidean distance between two sites in metres.
#[must_use]
pub fn site_distance_m(a: &ClientSite, b: &ClientSite) -> f64 {
    let (ax, ay) = site_xy(a);
    let (bx, by) = site_xy(b);
    (ax - bx).hypot(ay - by)
}

/// The stream index of the unordered pair `{i, j}` (`i ≠ j`), disjoint
/// from every single client's index below `2^32`.
fn pair_index(i: usize, j: usize) -> usize {
    let (lo, hi) = if i < j { (i, j) } else { (j, i) };
    ((hi as u64) << 32 | lo as u64 | 1u64 << 63) as usize
}

impl Network {
    /// Distance between devices `i` and `j` in metres (`None` out of range).
    #[must_use]
    pub fn d2d_distance_m(&self, i: usize, j: usize) -> Option<f64> {
        Some(site_distance_m(self.sites().get(i)?, self.sites().get(j)?))
    }

    /// Fading power of the pair `{i, j}` in `round`: `Exp(1)`, the same in
    /// both directions, independent of every uplink's and other pair's.
    #[must_use]
    pub fn d2d_fading(&self, i: usize, j: usize, round: u64) -> f64 {
        fading_power(self.seed(), pair_index(i, j), round)
    }

    /// The link from `i` to `j` in `round` (path gain at their distance ×
    /// the pair's fading), priced like an uplink over the whole band; `None`
    /// for an index out of range or `i = j`.
    #[must_use]
    pub fn d2d_link(&self, i: usize, j: usize, round: u64) -> Option<Uplink> {
        let g = self.d2d_mean_gain(i, j)?;
        Some(self.link_with_gain(g * self.d2d_fading(i, j, round)))
    }

    /// The link from `i` to `j` at the mean channel (`|h|² = 1`).
    #[must_use]
    pub fn d2d_mean_link(&self, i: usize, j: usize) -> Option<Uplink> {
        Some(self.link_with_gain(self.d2d_mean_gain(i, j)?))
    }

    fn d2d_mean_gain(&self, i: usize, j: usize) -> Option<f64> {
        if i == j {
            return None;
        }
        let d = self.d2d_distance_m(i, j)?;
        Some(path_gain(d.max(MIN_D2D_DISTANCE_M)))
    }
}

/// Air time of a broadcast of `bits` from one device to all of
/// `receivers` on a `share` of the band: the payload goes out once, at the
/// rate of the weakest receiver's link (so every receiver decodes it).
/// `0` for no receivers or no bits; `inf` when a link has zero rate.
#[must_use]
pub fn broadcast_airtime_s(receivers: &[Uplink], bits: f64, share: f64) -> f64 {
    if receivers.is_empty() || bits <= 0.0 {
        return 0.0;
    }
    receivers
        .iter()
        .map(|l| l.airtime_s(bits, share))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChannelConfig;

    fn net(n: usize) -> Network {
        Network::new(ChannelConfig::default(), n, 7).expect("valid config")
    }

    #[test]
    fn distance_matches_the_law_of_cosines() {
        let n = net(6);
        for i in 0..6 {
            for j in 0..6 {
                let (a, b) = (&n.sites()[i], &n.sites()[j]);
                // Independent computation: law of cosines on the polar form.
                let want = (a.distance_m.powi(2) + b.distance_m.powi(2)
                    - 2.0 * a.distance_m * b.distance_m * (a.angle_rad - b.angle_rad).cos())
                .max(0.0)
                .sqrt();
                let got = n.d2d_distance_m(i, j).expect("in range");
                assert!((got - want).abs() < 1e-6 * want.max(1.0), "{got} vs {want}");
            }
        }
        assert_eq!(n.d2d_distance_m(0, 6), None);
    }

    #[test]
    fn links_are_reciprocal_and_priced_by_the_uplink_formula() {
        let n = net(5);
        for r in 0..4 {
            let ab = n.d2d_link(1, 3, r).expect("link");
            let ba = n.d2d_link(3, 1, r).expect("link");
            assert_eq!(ab, ba);
            let d = n.d2d_distance_m(1, 3).expect("in range");
            let g = path_gain(d) * n.d2d_fading(1, 3, r);
            let cfg = n.config();
            let w = cfg.bandwidth_hz;
            let want = w * (1.0 + cfg.tx_power_w() * g / (w * cfg.noise_psd_w_per_hz())).log2();
            assert!((ab.rate_bps(1.0) / want - 1.0).abs() < 1e-12);
        }
        assert!(n.d2d_link(2, 2, 0).is_none());
        assert!(n.d2d_link(0, 9, 0).is_none());
    }

    #[test]
    fn pair_fading_is_independent_of_uplink_fading_and_has_unit_mean() {
        let n = net(4);
        let rounds = 4000;
        let mean: f64 = (0..rounds).map(|r| n.d2d_fading(0, 1, r)).sum::<f64>() / rounds as f64;
        assert!((mean - 1.0).abs() < 0.08, "mean {mean}");
        let same = (0..50)
            .filter(|&r| n.d2d_fading(0, 1, r) == n.fading(0, r))
            .count();
        assert_eq!(same, 0);
        assert_ne!(pair_index(0, 1), pair_index(0, 2));
        assert_eq!(pair_index(4, 2), pair_index(2, 4));
    }

    #[test]
    fn broadcast_takes_the_slowest_receiver() {
        let n = net(4);
        let links: Vec<Uplink> = (1..4).map(|j| n.d2d_link(0, j, 0).expect("link")).collect();
        let t = broadcast_airtime_s(&links, 1e6, 0.25);
        let slowest = links
            .iter()
            .map(|l| 1e6 / l.rate_bps(0.25))
            .fold(0.0, f64::max);
        assert!((t / slowest - 1.0).abs() < 1e-12);
        assert_eq!(broadcast_airtime_s(&[], 1e6, 0.25), 0.0);
        assert_eq!(broadcast_airtime_s(&links, 0.0, 0.25), 0.0);
    }
}
