//! One client's FDMA uplink: Shannon rate as a function of its bandwidth
//! share, the rate cap, and the inverse (least share for a deadline).

use serde::{Deserialize, Serialize};

use crate::error::{ChannelError, non_negative, positive};

/// One client's uplink in one round (the CSI the server allocates with).
///
/// With share `β ≥ 0` of the total bandwidth `W`, the rate is
/// `R(β) = β·W·log2(1 + P·g/(β·W·N0))` bits/s, concave and increasing in `β`,
/// with `R(0) = 0` and the cap `R(∞) = P·g/(N0·ln 2)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    /// Transmit power `P` in watts.
    pub tx_power_w: f64,
    /// Channel power gain `g` (path gain × fading `|h|²`), linear, dimensionless.
    pub channel_gain: f64,
    /// Total system bandwidth `W` in Hz (share 1 is all of it).
    pub bandwidth_hz: f64,
    /// Noise power spectral density `N0` in W/Hz.
    pub noise_psd_w_per_hz: f64,
}

impl Uplink {
    /// Builds a link, checking every field (`bandwidth_hz` and
    /// `noise_psd_w_per_hz` must be `> 0`; power and gain `>= 0`).
    ///
    /// # Errors
    /// [`ChannelError::InvalidField`] naming the offending field.
    pub fn new(
        tx_power_w: f64,
        channel_gain: f64,
        bandwidth_hz: f64,
        noise_psd_w_per_hz: f64,
    ) -> Result<Self, ChannelError> {
        Ok(Self {
            tx_power_w: non_negative("tx_power_w", tx_power_w)?,
            channel_gain: non_negative("channel_gain", channel_gain)?,
            bandwidth_hz: positive("bandwidth_hz", bandwidth_hz)?,
            noise_psd_w_per_hz: positive("noise_psd_w_per_hz", noise_psd_w_per_hz)?,
        })
    }

    /// The SNR over the whole band, `P·g/(W·N0)` (linear): the mean SNR of a
    /// client given all of the bandwidth when `g` holds the path gain only.
    #[must_use]
    pub fn snr_full_band(&self) -> f64 {
        self.tx_power_w * self.channel_gain / (self.bandwidth_hz * self.noise_psd_w_per_hz)
    }

    /// Rate in bits/s with bandwidth share `share` (`β`); `0` for `β <= 0`
    /// (never NaN), the cap for `β = ∞`.
    #[must_use]
    pub fn rate_bps(&self, share: f64) -> f64 {
        let a = self.snr_full_band();
        if share.is_nan() || share <= 0.0 || a <= 0.0 {
            return 0.0;
        }
        if share.is_infinite() {
            return self.rate_cap_bps();
        }
        share * self.bandwidth_hz * (a / share).ln_1p() / std::f64::consts::LN_2
    }

    /// Derivative `dR/dβ` in bits/s per unit share:
    /// `W·(log2(1+y) − y/((1+y)·ln 2))` with `y = a/β`; positive for `β > 0`.
    #[must_use]
    pub fn rate_slope_bps(&self, share: f64) -> f64 {
        let a = self.snr_full_band();
        if a <= 0.0 {
            return 0.0;
        }
        if share <= 0.0 {
            return f64::INFINITY;
        }
        let y = a / share;
        self.bandwidth_hz * (y.ln_1p() - y / (1.0 + y)) / std::f64::consts::LN_2
    }

    /// The rate cap `P·g/(N0·ln 2)` in bits/s: the limit of `R(β)` as `β → ∞`.
    #[must_use]
    pub fn rate_cap_bps(&self) -> f64 {
        self.tx_power_w * self.channel_gain / (self.noise_psd_w_per_hz * std::f64::consts::LN_2)
    }

    /// Upload time in seconds of `bits` with share `share`: `S/R(β)`;
    /// `0` when there is nothing to send, `∞` when the rate is zero.
    #[must_use]
    pub fn airtime_s(&self, bits: f64, share: f64) -> f64 {
        if bits <= 0.0 {
            return 0.0;
        }
        let rate = self.rate_bps(share);
        if rate > 0.0 {
            bits / rate
        } else {
            f64::INFINITY
        }
    }

    /// The least possible upload time of `bits` (unlimited bandwidth):
    /// `S / cap`; `∞` if the cap is zero and there are bits to send.
    #[must_use]
    pub fn min_airtime_s(&self, bits: f64) -> f64 {
        self.airtime_s(bits, f64::INFINITY)
    }

    /// The least share `β` with which this client sends `bits` within
    /// `seconds`, i.e. the least `β` with `R(β) >= bits/seconds`.
    ///
    /// `Some(0.0)` when there is nothing to send; `None` when even unlimited
    /// bandwidth cannot (`bits/seconds >= cap`, `seconds <= 0`, or a zero
    /// cap), or for non-finite input.
    ///
    /// Method: with `y = a/β` (`a` the full-band SNR) the condition is
    /// `ln(1+y)/y = q := (bits/seconds)/cap`, solved for `s = ln(1+y)` from
    /// `q·(e^s − 1) = s` (convex; a root in `(0, 1 + 2 ln(1/q)]` for
    /// `q ∈ (0,1)`) by Newton's method safeguarded by bisection in the log
    /// domain (no overflow for tiny `q`). The result is rounded up so that
    /// `rate_bps(β) >= bits/seconds` holds in floating point, relative
    /// accuracy about `1e-13` away from the cap.
    #[must_use]
    pub fn min_share(&self, bits: f64, seconds: f64) -> Option<f64> {
        if bits.is_nan() || seconds.is_nan() {
            return None;
        }
        if bits <= 0.0 {
            return Some(0.0);
        }
        if !bits.is_finite() || seconds <= 0.0 {
            return None;
        }
        let required = bits / seconds;
        let cap = self.rate_cap_bps();
        if cap.is_nan() || cap <= 0.0 || required >= cap {
            return None;
        }
        let q = required / cap;
        if q <= 0.0 {
            // bits/seconds underflowed relative to the cap: any share > 0 works.
            return Some(f64::MIN_POSITIVE);
        }
        // Step just below the root (`s` within ~1e-14 of it): the share is
        // then just above the exact one and the check below passes at once.
        let s = solve_log_ratio(q) * (1.0 - 4e-14);
        let a = self.snr_full_band();
        // β = a / (e^s − 1), written to stay finite for large s.
        let mut share = a * (-s).exp() / -(-s).exp_m1();
        if !(share.is_finite() && share > 0.0) {
            return None;
        }
        // Round up: a short share is corrected by twice the Newton step of
        // the (concave) rate, which lands past the exact share.
        let mut margin = 4.0 * f64::EPSILON;
        for _ in 0..60 {
            let rate = self.rate_bps(share);
            if rate >= required {
                return Some(share);
            }
            let step = 2.0 * (required - rate) / self.rate_slope_bps(share);
            share += step.max(0.0) + margin * share;
            margin *= 2.0;
        }
        None
    }
}

/// `ln(e^s − 1)` for `s > 0`, without overflow.
fn ln_expm1(s: f64) -> f64 {
    if s > 30.0 {
        s + (-(-s).exp()).ln_1p()
    } else {
        s.exp_m1().ln()
    }
}

/// Solves `q·(e^s − 1) = s` for its root `s > 0`, `q ∈ (0, 1)`.
///
/// For `q > 1e-10` (root below about 26): Halley's method on
/// `ψ(s) = q(e^s − 1) − s` (convex, one exponential per step), from
/// [`initial_guess`], safeguarded by the bracket `(0, 1 − 2 ln q]`. For
/// smaller `q`: Newton on `χ(s) = ln q + ln(e^s − 1) − ln s`, which has the
/// sign of `ψ` and does not overflow.
fn solve_log_ratio(q: f64) -> f64 {
    let ln_q = q.ln();
    let mut lo = 0.0_f64;
    let mut hi = 1.0 - 2.0 * ln_q; // ψ(hi) >= 0, shown in the docs above.
    let mut s = initial_guess(q).clamp(f64::MIN_POSITIVE, hi);
    if q > 1e-10 {
        for _ in 0..100 {
            let em1 = s.exp_m1();
            let f = q * em1 - s;
            // at the rounding level of the terms: as good as it gets
            if f.abs() <= 8.0 * f64::EPSILON * s.max(q * (em1 + 1.0)) {
                return s;
            }
            if f > 0.0 {
                hi = s;
            } else {
                lo = s;
            }
            let d1 = q * (em1 + 1.0) - 1.0;
            let d2 = q * (em1 + 1.0);
            let den = 2.0 * d1 * d1 - f * d2;
            let next = if den != 0.0 {
                s - 2.0 * f * d1 / den
            } else {
                f64::NAN
            };
            if next > lo && next < hi {
                let converged = (next - s).abs() <= 1e-14 * s;
                s = next;
                if converged {
                    break;
                }
            } else {
                s = 0.5 * (lo + hi);
                if hi - lo <= 1e-14 * hi {
                    break;
                }
            }
        }
        return s;
    }
    let chi = |s: f64| ln_q + ln_expm1(s) - s.ln();
    // χ'(s) = e^s/(e^s − 1) − 1/s = 1/(1 − e^{−s}) − 1/s > 0 on the root's side.
    let dchi = |s: f64| 1.0 / -(-s).exp_m1() - 1.0 / s;
    for _ in 0..100 {
        let f = chi(s);
        if f.abs() <= 8.0 * f64::EPSILON * (ln_q.abs() + s + s.ln().abs()) {
            return s;
        }
        if f > 0.0 {
            hi = s;
        } else {
            lo = s;
        }
        let d = dchi(s);
        let newton = s - f / d;
        if d > 0.0 && newton > lo && newton < hi {
            let converged = (newton - s).abs() <= 1e-14 * s;
            s = newton;
            if converged {
                break;
            }
        } else {
            s = 0.5 * (lo + hi);
            if hi - lo <= 1e-14 * hi {
                break;
            }
        }
    }
    // Within about 1e-14 of the root; the caller rounds the share up.
    s
}

/// A starting point for `q·(e^s − 1) = s`: for `q >= 1/2` the root of the
/// quadratic truncation `s²/6 + s/2 = 1/q − 1`; below, two steps of the
/// fixed point `s ← ln(1 + s/q)` from `ln(1/q) + 1`.
fn initial_guess(q: f64) -> f64 {
    if q >= 0.5 {
        let u = 1.0 / q - 1.0;
        3.0 * ((0.25 + 2.0 * u / 3.0).sqrt() - 0.5)
    } else {
        let s1 = (1.0 + (1.0 - q.ln()) / q).ln();
        (1.0 + s1 / q).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(a: f64) -> Uplink {
        // W = 1 MHz, N0 = 1e-20 W/Hz, P = 1 W, so a = g·1e14.
        Uplink::new(1.0, a * 1e-14, 1e6, 1e-20).unwrap()
    }

    #[test]
    fn zero_share_is_zero_rate() {
        let l = link(10.0);
        assert_eq!(l.rate_bps(0.0), 0.0);
        assert_eq!(l.rate_bps(-1.0), 0.0);
        assert!(!l.rate_bps(1e-300).is_nan());
        assert_eq!(l.airtime_s(100.0, 0.0), f64::INFINITY);
        assert_eq!(l.airtime_s(0.0, 0.0), 0.0);
    }

    #[test]
    fn full_band_rate_is_shannon() {
        // β = 1: R = W log2(1 + a); a = 15 gives exactly 4 bits/s/Hz.
        let l = link(15.0);
        assert!((l.rate_bps(1.0) - 4e6).abs() < 1e-6);
    }

    #[test]
    fn min_share_edge_cases() {
        let l = link(10.0);
        assert_eq!(l.min_share(0.0, 1.0), Some(0.0));
        assert_eq!(l.min_share(1.0, 0.0), None);
        assert_eq!(l.min_share(1.0, -1.0), None);
        assert_eq!(l.min_share(f64::NAN, 1.0), None);
        // exactly the cap for one second is not reachable with a finite share
        assert_eq!(l.min_share(l.rate_cap_bps(), 1.0), None);
        let dead = link(0.0);
        assert_eq!(dead.min_share(1.0, 1e9), None);
        assert_eq!(dead.min_airtime_s(1.0), f64::INFINITY);
        // a tiny requirement gives a tiny but positive share
        let tiny = l.min_share(1e-200, 1.0).unwrap();
        assert!(tiny > 0.0 && l.rate_bps(tiny) >= 1e-200);
    }

    #[test]
    fn invalid_link_names_field() {
        let e = Uplink::new(1.0, 1.0, 0.0, 1.0).unwrap_err();
        assert!(matches!(
            e,
            ChannelError::InvalidField {
                field: "bandwidth_hz",
                ..
            }
        ));
        let e = Uplink::new(1.0, f64::NAN, 1.0, 1.0).unwrap_err();
        assert!(matches!(
            e,
            ChannelError::InvalidField {
                field: "channel_gain",
                ..
            }
        ));
    }

    #[test]
    fn slope_matches_finite_difference() {
        let l = link(3.0);
        for &b in &[0.01, 0.3, 1.0, 7.0] {
            let h = 1e-6 * b;
            let fd = (l.rate_bps(b + h) - l.rate_bps(b - h)) / (2.0 * h);
            assert!((fd / l.rate_slope_bps(b) - 1.0).abs() < 1e-6, "β={b}");
        }
    }
}
