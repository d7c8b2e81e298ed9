//! Computation latency, energy, synchronous round latency and the
//! latency-equalising bandwidth split.

use serde::{Deserialize, Serialize};

use crate::error::{ChannelError, non_negative, positive};
use crate::link::Uplink;

/// One client's local computation per round: `E` local steps of `batch`
/// samples at `cycles_per_sample` CPU cycles each.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ComputeLoad {
    /// Local steps `E` per round.
    pub local_steps: u32,
    /// Samples per local step.
    pub batch_size: u32,
    /// CPU cycles per sample `c(r)` (grows with the rank).
    pub cycles_per_sample: f64,
}

impl ComputeLoad {
    /// Total cycles per round, `E·batch·c`.
    #[must_use]
    pub fn cycles(&self) -> f64 {
        f64::from(self.local_steps) * f64::from(self.batch_size) * self.cycles_per_sample
    }

    /// Computation latency in seconds on a CPU at `cpu_freq_hz`:
    /// `T_cmp = E·batch·c / f`.
    ///
    /// # Errors
    /// [`ChannelError::InvalidField`] for a non-positive clock or negative cycles.
    pub fn latency_s(&self, cpu_freq_hz: f64) -> Result<f64, ChannelError> {
        positive("cpu_freq_hz", cpu_freq_hz)?;
        non_negative("cycles_per_sample", self.cycles_per_sample)?;
        Ok(self.cycles() / cpu_freq_hz)
    }

    /// Computation energy in joules, `κ·f²·E·batch·c`.
    #[must_use]
    pub fn energy_j(&self, kappa: f64, cpu_freq_hz: f64) -> f64 {
        kappa * cpu_freq_hz * cpu_freq_hz * self.cycles()
    }
}

/// Upload energy in joules, `P·S/R`: zero with nothing to send, infinite at
/// zero rate.
#[must_use]
pub fn upload_energy_j(tx_power_w: f64, bits: f64, rate_bps: f64) -> f64 {
    if bits <= 0.0 {
        0.0
    } else if rate_bps > 0.0 {
        tx_power_w * bits / rate_bps
    } else {
        f64::INFINITY
    }
}

/// A client's finish time in seconds, `T_cmp + S/R` (`T_cmp` when there is
/// nothing to send; infinite at zero rate).
#[must_use]
pub fn finish_time_s(compute_latency_s: f64, bits: f64, rate_bps: f64) -> f64 {
    if bits <= 0.0 {
        compute_latency_s
    } else if rate_bps > 0.0 {
        compute_latency_s + bits / rate_bps
    } else {
        f64::INFINITY
    }
}

/// One participating client's timing in a round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClientTiming {
    /// Computation latency in seconds.
    pub compute_latency_s: f64,
    /// Bits uploaded.
    pub bits: f64,
    /// Uplink rate in bits/s.
    pub rate_bps: f64,
}

/// Synchronous round latency `max_k (T_cmp + S/R)` over the participating
/// clients given; `0` for none.
#[must_use]
pub fn round_latency_s(participants: &[ClientTiming]) -> f64 {
    participants
        .iter()
        .map(|c| finish_time_s(c.compute_latency_s, c.bits, c.rate_bps))
        .fold(0.0, f64::max)
}

/// A latency-equalising split of the bandwidth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EqualisedSplit {
    /// Shares `β_k`, summing to 1 (clients with nothing to send get 0).
    pub shares: Vec<f64>,
    /// The common finish time in seconds of the clients that send bits.
    pub finish_time_s: f64,
}

/// Shares that give every client with bits to send the same finish time
/// `T = T_cmp,k + S_k/R_k(β_k)`, using all the bandwidth.
///
/// `T` is the root of `Σ_k β_k(T) = 1`, where `β_k(T)` is the least share
/// that finishes by `T` ([`Uplink::min_share`]); the sum is decreasing in
/// `T`, infinite below `max_k (T_cmp,k + S_k/cap_k)`, so bisection on `T`
/// converges (to relative `1e-13`). The shares at the upper end of the final
/// bracket sum to at most 1 and are scaled up to sum to exactly 1, so every
/// finish time lies in that bracket. Clients with `bits = 0` get share 0 and
/// finish at their `T_cmp` (which may exceed `T`). No client with bits gives
/// `T = max_k T_cmp,k` and all-zero shares.
///
/// # Errors
/// [`ChannelError::LengthMismatch`] when the slices differ in length;
/// [`ChannelError::InvalidField`] for a negative or non-finite latency or bit
/// count; [`ChannelError::Unreachable`] when a client with bits has a zero rate cap.
pub fn equalising_split(
    links: &[Uplink],
    compute_latency_s: &[f64],
    bits: &[f64],
) -> Result<EqualisedSplit, ChannelError> {
    let n = links.len();
    for (field, got) in [
        ("compute_latency_s", compute_latency_s.len()),
        ("bits", bits.len()),
    ] {
        if got != n {
            return Err(ChannelError::LengthMismatch {
                field,
                got,
                expected: n,
            });
        }
    }
    let mut lo = 0.0_f64; // Σβ(lo) > 1 (or infinite) once raised below
    let mut any = false;
    for k in 0..n {
        non_negative("compute_latency_s", compute_latency_s[k])?;
        non_negative("bits", bits[k])?;
        if bits[k] > 0.0 {
            let t = compute_latency_s[k] + links[k].min_airtime_s(bits[k]);
            if !t.is_finite() {
                return Err(ChannelError::Unreachable { client: k });
            }
            lo = lo.max(t);
            any = true;
        }
    }
    if !any {
        let t = compute_latency_s.iter().copied().fold(0.0, f64::max);
        return Ok(EqualisedSplit {
            shares: vec![0.0; n],
            finish_time_s: t,
        });
    }
    let total = |t: f64| -> f64 {
        let mut s = 0.0;
        for k in 0..n {
            if bits[k] > 0.0 {
                match links[k].min_share(bits[k], t - compute_latency_s[k]) {
                    Some(b) => s += b,
                    None => return f64::INFINITY,
                }
            }
        }
        s
    };
    // Upper end: double the slack above `lo` until everything fits.
    let mut step = lo.max(1e-9);
    let mut hi = lo + step;
    while total(hi) > 1.0 {
        lo = hi;
        step *= 2.0;
        hi = lo + step;
    }
    while hi - lo > 1e-13 * hi {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if total(mid) > 1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut shares: Vec<f64> = (0..n)
        .map(|k| {
            if bits[k] > 0.0 {
                links[k]
                    .min_share(bits[k], hi - compute_latency_s[k])
                    .unwrap_or(0.0)
            } else {
                0.0
            }
        })
        .collect();
    let sum: f64 = shares.iter().sum();
    if sum > 0.0 {
        shares.iter_mut().for_each(|b| *b /= sum);
    }
    Ok(EqualisedSplit {
        shares,
        finish_time_s: hi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_latency_and_energy_reference() {
        // 10 steps × 32 samples × 1e6 cycles = 3.2e8 cycles at 1.6 GHz = 0.2 s;
        // energy 1e-28 × (1.6e9)² × 3.2e8 = 0.08192 J.
        let load = ComputeLoad {
            local_steps: 10,
            batch_size: 32,
            cycles_per_sample: 1e6,
        };
        assert!((load.latency_s(1.6e9).unwrap() - 0.2).abs() < 1e-15);
        assert!((load.energy_j(1e-28, 1.6e9) - 0.08192).abs() < 1e-15);
        assert!(matches!(
            load.latency_s(0.0),
            Err(ChannelError::InvalidField {
                field: "cpu_freq_hz",
                ..
            })
        ));
        assert!((upload_energy_j(0.2, 1e6, 1e7) - 0.02).abs() < 1e-15);
        assert_eq!(upload_energy_j(0.2, 1e6, 0.0), f64::INFINITY);
        assert_eq!(upload_energy_j(0.2, 0.0, 0.0), 0.0);
    }

    #[test]
    fn round_latency_is_the_max() {
        let c = [
            ClientTiming {
                compute_latency_s: 0.1,
                bits: 1e6,
                rate_bps: 1e7,
            }, // 0.2
            ClientTiming {
                compute_latency_s: 0.3,
                bits: 0.0,
                rate_bps: 0.0,
            }, // 0.3
            ClientTiming {
                compute_latency_s: 0.0,
                bits: 2e6,
                rate_bps: 1e7,
            }, // 0.2
        ];
        assert!((round_latency_s(&c) - 0.3).abs() < 1e-15);
        assert_eq!(round_latency_s(&[]), 0.0);
    }

    #[test]
    fn split_errors() {
        let l = Uplink::new(0.2, 1e-10, 2e7, 4e-21).unwrap();
        assert!(matches!(
            equalising_split(&[l], &[0.1, 0.2], &[1.0]),
            Err(ChannelError::LengthMismatch {
                field: "compute_latency_s",
                ..
            })
        ));
        let dead = Uplink::new(0.2, 0.0, 2e7, 4e-21).unwrap();
        assert_eq!(
            equalising_split(&[l, dead], &[0.1, 0.1], &[1e6, 1e6]),
            Err(ChannelError::Unreachable { client: 1 })
        );
        let none = equalising_split(&[l, dead], &[0.1, 0.4], &[0.0, 0.0]).unwrap();
        assert_eq!(none.shares, vec![0.0, 0.0]);
        assert_eq!(none.finish_time_s, 0.4);
    }
}
