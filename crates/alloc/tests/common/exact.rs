//! An exact reference for small drift-plus-penalty rounds, written
//! independently of the crate and of `wflora-channel`'s inversion.
//!
//! Every assignment is enumerated (each client sits out or picks one of its
//! levels). For each, the exact least latency `τ*(a)` is the least `τ` with
//! `Σ_k β_k(τ) ≤ 1`, found by bisection on `τ` to adjacent floats; each
//! `β_k(τ)` is the least share whose Shannon rate, written out below, carries
//! `S_k` bits in `τ − T_k`, found by bisection on `β` to adjacent floats. The
//! optimum is the least `V·Σ_k p_k D_k(a_k) + Q·τ*(a)` (nobody: `V·Σ_k p_k`,
//! `τ = 0`). Only the links' public fields are read.

use std::f64::consts::LN_2;

use wflora_alloc::RoundProblem;
use wflora_channel::Uplink;

/// Shannon rate `β·W·log2(1 + P·g/(β·W·N0))` in bits/s.
pub fn rate(l: &Uplink, beta: f64) -> f64 {
    let snr = l.tx_power_w * l.channel_gain / (l.bandwidth_hz * l.noise_psd_w_per_hz);
    if beta <= 0.0 || snr <= 0.0 {
        return 0.0;
    }
    beta * l.bandwidth_hz * (snr / beta).ln_1p() / LN_2
}

/// The rate's limit as `β → ∞`, `P·g/(N0·ln 2)`.
pub fn cap(l: &Uplink) -> f64 {
    l.tx_power_w * l.channel_gain / (l.noise_psd_w_per_hz * LN_2)
}

/// The least share with `rate(β) ≥ bits/seconds` (to adjacent floats);
/// `∞` when no finite share does.
pub fn least_share(l: &Uplink, bits: f64, seconds: f64) -> f64 {
    if bits <= 0.0 {
        return if seconds >= 0.0 { 0.0 } else { f64::INFINITY };
    }
    if seconds <= 0.0 {
        return f64::INFINITY;
    }
    let need = bits / seconds;
    if !(need < cap(l)) {
        return f64::INFINITY;
    }
    let ok = |b: f64| rate(l, b) >= need;
    let (mut lo, mut hi);
    if ok(1.0) {
        hi = 1.0;
        lo = 0.5;
        while ok(lo) {
            hi = lo;
            lo *= 0.5;
            if lo == 0.0 {
                return hi;
            }
        }
    } else {
        lo = 1.0;
        hi = 2.0;
        while !ok(hi) {
            lo = hi;
            hi *= 2.0;
            if !hi.is_finite() {
                return f64::INFINITY;
            }
        }
    }
    loop {
        let mid = lo + 0.5 * (hi - lo);
        if mid <= lo || mid >= hi {
            return hi;
        }
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
}

/// The least latency at which client `k` can send level `j` at all
/// (`T_k + S/cap`), `∞` if never.
pub fn threshold(p: &RoundProblem<Uplink>, k: usize, j: usize) -> f64 {
    let c = &p.clients[k];
    let bits = c.levels[j].bits;
    if bits <= 0.0 {
        return c.compute_latency_s;
    }
    let cap = cap(&c.link);
    if cap > 0.0 {
        c.compute_latency_s + bits / cap
    } else {
        f64::INFINITY
    }
}

/// The exact least latency `τ*(a)` of an assignment (`None`: never fits;
/// `0` for nobody).
pub fn least_tau(p: &RoundProblem<Uplink>, choice: &[Option<usize>]) -> Option<f64> {
    let parts: Vec<(usize, usize)> = choice
        .iter()
        .enumerate()
        .filter_map(|(k, c)| c.map(|j| (k, j)))
        .collect();
    if parts.is_empty() {
        return Some(0.0);
    }
    let fits = |t: f64| -> bool {
        let mut sum = 0.0;
        for &(k, j) in &parts {
            let c = &p.clients[k];
            sum += least_share(&c.link, c.levels[j].bits, t - c.compute_latency_s);
        }
        sum <= 1.0
    };
    let floor = parts
        .iter()
        .map(|&(k, j)| threshold(p, k, j))
        .fold(0.0, f64::max);
    if !floor.is_finite() {
        return None;
    }
    let mut lo = floor;
    let mut width = floor.max(1e-6);
    let mut hi = floor + width;
    while !fits(hi) {
        lo = hi;
        width *= 2.0;
        hi = floor + width;
        if !hi.is_finite() {
            return None;
        }
    }
    loop {
        let mid = lo + 0.5 * (hi - lo);
        if mid <= lo || mid >= hi {
            return Some(hi);
        }
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
}

/// The exact optimum of a round.
#[derive(Debug, Clone, PartialEq)]
pub struct Exact {
    /// The least objective `V·P(a) + Q·τ*(a)`.
    pub objective: f64,
    /// An assignment attaining it (`None`: sits out).
    pub choice: Vec<Option<usize>>,
    /// Its least latency.
    pub tau_s: f64,
}

/// Exhaustive search over every assignment (with `tied`, only those whose
/// participants all keep the same number of components), each at its exact
/// `τ*(a)`. Assignments that cannot beat the incumbent even at their
/// latency floor are skipped (this changes no answer).
pub fn exhaustive(p: &RoundProblem<Uplink>, tied: bool) -> Exact {
    let n = p.clients.len();
    let sum_p: f64 = p.clients.iter().map(|c| c.weight).sum();
    let mut best = Exact {
        objective: p.v * sum_p,
        choice: vec![None; n],
        tau_s: 0.0,
    };
    // The first assignment (all sit out) is the initial incumbent.
    for choice in super::assignments(p, tied).into_iter().skip(1) {
        let penalty: f64 = p
            .clients
            .iter()
            .zip(&choice)
            .map(|(c, ch)| c.weight * ch.map_or(1.0, |j| c.levels[j].penalty))
            .sum();
        let floor = choice
            .iter()
            .enumerate()
            .filter_map(|(k, ch)| ch.map(|j| threshold(p, k, j)))
            .fold(0.0, f64::max);
        if p.v * penalty + p.queue * floor >= best.objective {
            continue;
        }
        let Some(tau) = least_tau(p, &choice) else {
            continue;
        };
        let f = p.v * penalty + p.queue * tau;
        if f < best.objective {
            best = Exact {
                objective: f,
                choice,
                tau_s: tau,
            };
        }
    }
    best
}

/// The documented search tolerance `rel_tol·max(V·Σ_k p_k, Q·τ_min)`, with
/// `τ_min` the least latency at which anything can be sent.
pub fn documented_tol(p: &RoundProblem<Uplink>, rel_tol: f64) -> f64 {
    let sum_p: f64 = p.clients.iter().map(|c| c.weight).sum();
    let tau_min = (0..p.clients.len())
        .flat_map(|k| (0..p.clients[k].levels.len()).map(move |j| (k, j)))
        .map(|(k, j)| threshold(p, k, j))
        .fold(f64::INFINITY, f64::min);
    let time = if tau_min.is_finite() {
        p.queue * tau_min
    } else {
        0.0
    };
    rel_tol * (p.v * sum_p).max(time).max(f64::MIN_POSITIVE)
}

/// The hull path's documented extra gap: one client's penalty swing,
/// `V·max_k p_k·max(1, max_m D_k(m))`.
pub fn hull_swing(p: &RoundProblem<Uplink>) -> f64 {
    p.v * p
        .clients
        .iter()
        .map(|c| c.weight * c.levels.iter().map(|l| l.penalty).fold(1.0, f64::max))
        .fold(0.0, f64::max)
}

/// Float slack of a comparison with the exact optimum: the crate finds
/// `τ*(a)` to relative `1e-11` and rounds shares up.
pub fn float_slack(p: &RoundProblem<Uplink>, exact: &Exact) -> f64 {
    let sum_p: f64 = p.clients.iter().map(|c| c.weight).sum();
    1e-9 * (p.v * sum_p + p.queue * exact.tau_s) + 1e-15
}
