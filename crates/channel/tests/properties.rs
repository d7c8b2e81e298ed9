//! Closed-form and property checks of the uplink model (docs/method.md §3).
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use statrs::distribution::{ContinuousCDF, Exp};
use wflora_channel::{
    ChannelConfig, Network, Uplink, equalising_split, fading_power, path_loss_db,
    units::{dbm_to_w, w_to_dbm},
};

/// A link with full-band SNR `a` over `w` Hz (P = 0.2 W, N0 = 4e-21 W/Hz).
fn link(a: f64, w: f64) -> Uplink {
    let (p, n0) = (0.2, 4e-21);
    Uplink::new(p, a * w * n0 / p, w, n0).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// R is increasing and (midpoint-)concave in β, below the cap and
    /// approaching it: R(β)/cap → 1 as β → ∞ (R(β) = cap·ln(1+y)/y, y = a/β).
    #[test]
    fn rate_monotone_concave_capped(
        log_a in -3.0f64..6.0, log_b in -4.0f64..2.0, t in 1.01f64..3.0,
    ) {
        let l = link(10f64.powf(log_a), 2e7);
        let b = 10f64.powf(log_b);
        let (r1, r2, r3) = (l.rate_bps(b), l.rate_bps(b * t), l.rate_bps(b * t * t));
        let cap = l.rate_cap_bps();
        prop_assert!(r1 < r2 && r2 < r3);
        prop_assert!(r3 < cap);
        // concavity on the points b, bt, bt²: the chord lies below the middle
        let w = (b * t * t - b * t) / (b * t * t - b);
        prop_assert!(r2 >= w * r1 + (1.0 - w) * r3 - 1e-9 * r3);
        // slope decreasing (concavity, derivative form)
        prop_assert!(l.rate_slope_bps(b) >= l.rate_slope_bps(b * t));
        // cap: for β ≥ 1e6·a, 1 − R/cap = 1 − ln(1+y)/y ≤ y/2 ≤ 5e-7
        let huge = 1e6 * 10f64.powf(log_a);
        prop_assert!(1.0 - l.rate_bps(huge) / cap <= 5e-7 + 1e-12);
        prop_assert_eq!(l.rate_bps(f64::INFINITY), cap);
    }

    /// The inverse, rate side: R(min_share(S, t)) ≥ S/t and equals it to 1e-9.
    #[test]
    fn min_share_meets_rate_exactly(
        log_a in -3.0f64..6.0, frac in 1e-9f64..0.999, t in 0.01f64..10.0,
    ) {
        let l = link(10f64.powf(log_a), 2e7);
        let bits = frac * l.rate_cap_bps() * t;
        let b = l.min_share(bits, t).unwrap();
        let r = l.rate_bps(b);
        prop_assert!(r >= bits / t);
        prop_assert!((r / (bits / t) - 1.0).abs() < 1e-9);
        prop_assert!(l.min_share(l.rate_cap_bps() * t * 1.0001, t).is_none());
    }

    /// The inverse, share side: min_share(R(β)·t, t) = β, for y = a/β ≥ 1e-3
    /// (closer to the cap the inverse is ill-conditioned: dR/dβ → 0).
    #[test]
    fn inverse_of_rate_is_identity(log_a in -3.0f64..6.0, log_y in -3.0f64..8.0, t in 0.01f64..10.0) {
        let a = 10f64.powf(log_a);
        let l = link(a, 2e7);
        let beta = a / 10f64.powf(log_y);
        let bits = l.rate_bps(beta) * t;
        let back = l.min_share(bits, t).unwrap();
        prop_assert!((back / beta - 1.0).abs() < 1e-7, "β = {beta}, back = {back}");
    }

    /// dBm ↔ W round trip.
    #[test]
    fn dbm_w_round_trip(p in -180.0f64..60.0) {
        prop_assert!((w_to_dbm(dbm_to_w(p)) - p).abs() < 1e-9);
    }

    /// The equalising split: every client finishes at the same time and the
    /// shares sum to 1.
    #[test]
    fn equalising_split_equal_finish(
        gains in proptest::collection::vec(-13.0f64..-8.0, 1..12),
        seed in 0u64..1000,
    ) {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(seed);
        let links: Vec<Uplink> = gains.iter().map(|&g| {
            Uplink::new(0.2, 10f64.powf(g), 2e7, dbm_to_w(-174.0)).unwrap()
        }).collect();
        let n = links.len();
        let t_cmp: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..0.5)).collect();
        let bits: Vec<f64> = (0..n).map(|_| rng.random_range(1e5..1e8)).collect();
        let s = equalising_split(&links, &t_cmp, &bits).unwrap();
        prop_assert!((s.shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        for k in 0..n {
            prop_assert!(s.shares[k] > 0.0);
            let fin = t_cmp[k] + links[k].airtime_s(bits[k], s.shares[k]);
            prop_assert!((fin / s.finish_time_s - 1.0).abs() < 1e-9, "{fin} vs {}", s.finish_time_s);
        }
    }
}

/// Rayleigh outage: with `|h|² ~ Exp(1)`, `P(SNR < x) = 1 − exp(−x/SNR̄)`;
/// the empirical CDF of the seeded per-(client, round) draws matches the
/// statrs exponential CDF (Kolmogorov–Smirnov distance < 1.63/√n, the 1%
/// critical value) and closed-form outage at three thresholds.
#[test]
fn rayleigh_outage_matches_exponential_cdf() {
    let mean_snr = 37.0;
    let n = 40_000usize;
    let mut snr: Vec<f64> = (0..n)
        .map(|i| mean_snr * fading_power(3, i % 200, (i / 200) as u64))
        .collect();
    snr.sort_by(f64::total_cmp);
    let exp = Exp::new(1.0 / mean_snr).unwrap();
    let mut ks = 0.0f64;
    for (i, &x) in snr.iter().enumerate() {
        let f = exp.cdf(x);
        ks = ks
            .max((f - i as f64 / n as f64).abs())
            .max(((i + 1) as f64 / n as f64 - f).abs());
    }
    assert!(ks < 1.63 / (n as f64).sqrt(), "KS distance {ks}");
    for x in [1.0, 10.0, 50.0] {
        let emp = snr.iter().filter(|&&s| s < x).count() as f64 / n as f64;
        let closed = 1.0 - (-x / mean_snr).exp();
        assert!((exp.cdf(x) - closed).abs() < 1e-12);
        let sd = (closed * (1.0 - closed) / n as f64).sqrt();
        assert!((emp - closed).abs() < 5.0 * sd, "x={x}: {emp} vs {closed}");
    }
}

/// Path loss at 1 km is 128.1 dB; the network's mean link carries exactly
/// that path gain for a client at 1 km (checked through the SNR).
#[test]
fn path_loss_at_one_km() {
    assert!((path_loss_db(1000.0) - 128.1).abs() < 1e-12);
    // Default SNR at 1 km, full band: 23 − 128.1 − (−174 + 10·log10(2e7)) dB.
    let cfg = ChannelConfig::default();
    let g = 10f64.powf(-12.81);
    let l = Uplink::new(
        cfg.tx_power_w(),
        g,
        cfg.bandwidth_hz,
        cfg.noise_psd_w_per_hz(),
    )
    .unwrap();
    let snr_db = 23.0 - 128.1 + 174.0 - 10.0 * 2e7f64.log10();
    assert!((10.0 * l.snr_full_band().log10() - snr_db).abs() < 1e-9);
}

/// Round-to-round fading of one client is independent of the network size
/// and averages to 1 (Exp(1) mean).
#[test]
fn network_fading_mean_is_one() {
    let net = Network::new(ChannelConfig::default(), 5, 99).unwrap();
    let rounds = 20_000u64;
    let mean = (0..rounds).map(|t| net.fading(4, t)).sum::<f64>() / rounds as f64;
    // sd of the mean of Exp(1) draws: 1/√n ≈ 0.007
    assert!((mean - 1.0).abs() < 0.035, "{mean}");
}
