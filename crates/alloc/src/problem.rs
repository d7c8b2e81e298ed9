//! One round's allocation problem: clients, their levels and links.

use serde::{Deserialize, Serialize};

use crate::error::{AllocError, non_negative};

/// The rate model the allocator needs from a client's uplink.
///
/// Implemented for [`wflora_channel::Uplink`]; any other rate model with a
/// monotone rate in the share can be plugged in.
pub trait Link {
    /// The least bandwidth share with which `bits` are sent within `seconds`;
    /// `Some(0.0)` for no bits, `None` when even unlimited bandwidth cannot.
    /// Must be non-increasing in `seconds` and non-decreasing in `bits`.
    fn min_share(&self, bits: f64, seconds: f64) -> Option<f64>;
    /// The least upload time of `bits` (unlimited bandwidth), `∞` if never.
    fn min_airtime_s(&self, bits: f64) -> f64;
    /// The rate in bits/s with share `share` (used to report finish times).
    fn rate_bps(&self, share: f64) -> f64;
    /// The slope `dR/dβ` in bits/s per unit share at `share` (`> 0`); used
    /// by Newton's method for the least round latency.
    fn rate_slope_bps(&self, share: f64) -> f64;
}

impl Link for wflora_channel::Uplink {
    fn min_share(&self, bits: f64, seconds: f64) -> Option<f64> {
        wflora_channel::Uplink::min_share(self, bits, seconds)
    }
    fn min_airtime_s(&self, bits: f64) -> f64 {
        wflora_channel::Uplink::min_airtime_s(self, bits)
    }
    fn rate_bps(&self, share: f64) -> f64 {
        wflora_channel::Uplink::rate_bps(self, share)
    }
    fn rate_slope_bps(&self, share: f64) -> f64 {
        wflora_channel::Uplink::rate_slope_bps(self, share)
    }
}

/// One payload level a client can send: `m` kept components, their bits
/// `S(m)` and the sparsification penalty `D(m)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Kept rank components `m >= 1` (the ratio is `m/r`).
    pub components: u32,
    /// Payload in bits, `S_k(m)`.
    pub bits: f64,
    /// Sparsification penalty `D_k(m) >= 0` (sitting out has penalty 1).
    pub penalty: f64,
}

/// Penalty of a client that sits the round out (`D_k(0)`, docs/method.md §5).
pub const SIT_OUT_PENALTY: f64 = 1.0;

/// One client in one round.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRound<L> {
    /// This round's uplink (CSI).
    pub link: L,
    /// Computation latency `T_k^cmp` in seconds.
    pub compute_latency_s: f64,
    /// Aggregation weight `p_k >= 0`.
    pub weight: f64,
    /// The levels the client offers (sitting out is implicit).
    pub levels: Vec<Level>,
}

/// One round's drift-plus-penalty problem:
/// minimise `V·Σ_k p_k D_k(m_k) + Q·τ`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundProblem<L> {
    /// The clients.
    pub clients: Vec<ClientRound<L>>,
    /// Penalty weight `V >= 0`.
    pub v: f64,
    /// Queue backlog `Q^t >= 0` (seconds).
    pub queue: f64,
}

impl<L> RoundProblem<L> {
    /// Checks every scalar (weights, latencies, bits, penalties `>= 0` and
    /// finite; `components >= 1` and distinct per client; `V`, `Q` `>= 0`).
    ///
    /// # Errors
    /// [`AllocError::InvalidField`] naming the field by its path.
    pub fn validate(&self) -> Result<(), AllocError> {
        non_negative(|| "v".into(), self.v)?;
        non_negative(|| "queue".into(), self.queue)?;
        for (k, c) in self.clients.iter().enumerate() {
            non_negative(
                || format!("clients[{k}].compute_latency_s"),
                c.compute_latency_s,
            )?;
            non_negative(|| format!("clients[{k}].weight"), c.weight)?;
            for (j, l) in c.levels.iter().enumerate() {
                non_negative(|| format!("clients[{k}].levels[{j}].bits"), l.bits)?;
                non_negative(|| format!("clients[{k}].levels[{j}].penalty"), l.penalty)?;
                let dup = c.levels[..j].iter().any(|o| o.components == l.components);
                if l.components == 0 || dup {
                    return Err(AllocError::InvalidField {
                        field: format!("clients[{k}].levels[{j}].components"),
                        value: f64::from(l.components),
                        expected: "an integer >= 1, distinct within the client",
                    });
                }
            }
        }
        Ok(())
    }

    /// The penalty `Σ_k p_k D_k(m_k)` of a choice (`None`: sits out).
    pub(crate) fn penalty_of(&self, choice: &[Option<usize>]) -> f64 {
        self.clients
            .iter()
            .zip(choice)
            .map(|(c, ch)| c.weight * ch.map_or(SIT_OUT_PENALTY, |j| c.levels[j].penalty))
            .sum()
    }
}

impl<L: Link> RoundProblem<L> {
    /// The least round latency at which client `k` can send level `j`
    /// (`T_cmp + S/cap`), `∞` if never.
    pub(crate) fn threshold_s(&self, k: usize, j: usize) -> f64 {
        let c = &self.clients[k];
        c.compute_latency_s + c.link.min_airtime_s(c.levels[j].bits)
    }

    /// Least share of client `k` at level `j` for round latency `tau_s`
    /// (`∞` when impossible).
    pub(crate) fn share_at(&self, k: usize, j: usize, tau_s: f64) -> f64 {
        let c = &self.clients[k];
        c.link
            .min_share(c.levels[j].bits, tau_s - c.compute_latency_s)
            .unwrap_or(f64::INFINITY)
    }

    /// `(Σ_k β_{k,m_k}(τ) − 1, d/dτ Σ_k β_{k,m_k}(τ))` of a choice; the slope
    /// of one term is `−(S/(τ − T_cmp)²) / R'(β)` (implicit differentiation
    /// of `R(β) = S/(τ − T_cmp)`).
    fn excess_and_slope(&self, choice: &[Option<usize>], tau_s: f64) -> (f64, f64) {
        let (mut sum, mut slope) = (-1.0, 0.0);
        for (k, ch) in choice.iter().enumerate() {
            if let Some(j) = *ch {
                let c = &self.clients[k];
                let bits = c.levels[j].bits;
                let dt = tau_s - c.compute_latency_s;
                let Some(b) = c.link.min_share(bits, dt) else {
                    return (f64::INFINITY, f64::NEG_INFINITY);
                };
                sum += b;
                if bits > 0.0 {
                    slope -= bits / (dt * dt) / c.link.rate_slope_bps(b);
                }
            }
        }
        (sum, slope)
    }

    /// The least round latency `τ*(a)` at which the choice fits in the band
    /// (`Σ β ≤ 1`), searched below `start` (which should be feasible; the
    /// bracket is widened upward otherwise); `0` for nobody participating,
    /// `None` when some participant can never finish.
    ///
    /// `h(τ) = Σβ(τ) − 1` is decreasing (and convex for the Shannon rate) in
    /// `τ` and infinite at and below `max_k (T_cmp + S/cap)`, where the
    /// slowest participant's share has a pole (`β ≈ c/(τ − τ_0)`). The root
    /// is bracketed and found by Newton's method on `φ = 1/Σβ − 1` (same
    /// root, nearly linear next to the pole; its step is `h`'s Newton step
    /// times `Σβ`), from both sides of the bracket, safeguarded by
    /// bisection; a step from the left that no longer moves is followed by
    /// a step just past the root. The answer is the bracket's feasible end,
    /// within relative `1e-11` of the root (or with `Σβ ≥ 1 − 1e-11`).
    pub(crate) fn least_latency(&self, choice: &[Option<usize>], start: f64) -> Option<f64> {
        self.least_latency_from(choice, start, None)
    }

    /// [`Self::least_latency`] with `(Σβ(start) − 1, d/dτ Σβ(start))`
    /// already known (as computed by `excess_and_slope`), saving one
    /// evaluation of every participant's least share.
    pub(crate) fn least_latency_from(
        &self,
        choice: &[Option<usize>],
        start: f64,
        at_start: Option<(f64, f64)>,
    ) -> Option<f64> {
        let mut lo = 0.0_f64;
        let mut any = false;
        for (k, ch) in choice.iter().enumerate() {
            if let Some(j) = *ch {
                lo = lo.max(self.threshold_s(k, j));
                any = true;
            }
        }
        if !any {
            return Some(0.0);
        }
        if !lo.is_finite() {
            return None;
        }
        let h = |t: f64| self.excess_and_slope(choice, t);
        let mut hi = start.max(lo);
        let (mut fhi, mut dhi) = match at_start {
            Some(known) if start >= lo => known,
            _ => h(hi),
        };
        let mut step = (hi - lo).max(lo * 1e-3).max(1e-12);
        while fhi.is_nan() || fhi > 0.0 {
            lo = hi;
            hi = lo + step;
            step *= 2.0;
            (fhi, dhi) = h(hi);
            if !hi.is_finite() {
                return None;
            }
        }
        // a: left end with h(a) > 0 (infinite at `lo`).
        let mut a = lo;
        // First point: the (φ-)Newton step from the feasible end; from a
        // good start it lands next to the root.
        let from_hi = hi - fhi * (1.0 + fhi) / dhi;
        let mut x = if dhi < 0.0 && from_hi > a && from_hi < hi {
            from_hi
        } else {
            0.5 * (lo + hi)
        };
        for _ in 0..300 {
            if hi - a <= 1e-11 * hi || fhi > -1e-11 {
                break;
            }
            let (fx, dx) = h(x);
            if fx <= 0.0 {
                hi = x;
                fhi = fx;
                // (φ-)Newton from the right, else bisection.
                let newton = x - fx * (1.0 + fx) / dx;
                x = if dx < 0.0 && newton > a && newton < hi {
                    newton
                } else {
                    0.5 * (a + hi)
                };
                continue;
            }
            a = x;
            let newton = x - fx * (1.0 + fx) / dx;
            if fx.is_finite() && dx < 0.0 && newton < hi {
                if newton - x <= 1e-12 * x {
                    // Converged from the left (the step may even round to
                    // nothing): step just past the root.
                    let c = (x + 4.0 * (newton - x)).max(x * (1.0 + 2e-12)).min(hi);
                    let fc = h(c).0;
                    if fc <= 0.0 {
                        hi = c;
                        fhi = fc;
                    } else {
                        a = c;
                    }
                    x = 0.5 * (a + hi);
                } else {
                    x = newton;
                }
            } else {
                x = 0.5 * (a + hi);
            }
        }
        Some(hi)
    }
}
