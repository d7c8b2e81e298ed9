//! Shared helpers of the allocator's integration tests.
// `!(a <= b)` on purpose: NaN must fail the checks.
#![allow(
    clippy::unwrap_used,
    clippy::neg_cmp_op_on_partial_ord,
    clippy::collapsible_if,
    dead_code
)]

pub mod exact;

use std::ops::RangeInclusive;

use proptest::prelude::*;
use wflora_alloc::{Allocation, ClientRound, Level, Link, RoundProblem};
use wflora_channel::Uplink;

/// A Shannon uplink with default power/noise over 20 MHz and gain `g`.
pub fn uplink(g: f64) -> Uplink {
    Uplink::new(0.2, g, 20e6, 3.981_071_705_534_97e-21).unwrap()
}

/// Strategy: a small round problem with `1..=max_k` clients and
/// `1..=max_l` levels each; gains span deep fades (down to 0), payloads
/// increase with `m`, penalties are arbitrary in `[0, 1.2]`.
pub fn small_problem(max_k: usize, max_l: usize) -> impl Strategy<Value = RoundProblem<Uplink>> {
    problem_in(1..=max_k, max_l)
}

/// Strategy: as [`small_problem`], with a number of clients in `clients`.
pub fn problem_in(
    clients: RangeInclusive<usize>,
    max_l: usize,
) -> impl Strategy<Value = RoundProblem<Uplink>> {
    let client = (
        prop_oneof![9 => -13.5f64..-9.0, 1 => Just(f64::NEG_INFINITY)],
        0.0f64..0.3,
        0.01f64..1.0,
        proptest::collection::vec((1e5f64..4e6, 0.0f64..1.2), 1..=max_l),
    )
        .prop_map(|(lg, t_cmp, w, lv)| {
            let mut bits = 0.0;
            let levels = lv
                .iter()
                .enumerate()
                .map(|(j, &(b, d))| {
                    bits += b;
                    Level {
                        components: j as u32 + 1,
                        bits,
                        penalty: d,
                    }
                })
                .collect();
            ClientRound {
                link: uplink(10f64.powf(lg)),
                compute_latency_s: t_cmp,
                weight: w,
                levels,
            }
        });
    (
        proptest::collection::vec(client, clients),
        0.05f64..10.0,
        0.0f64..40.0,
    )
        .prop_map(|(clients, v, queue)| RoundProblem { clients, v, queue })
}

/// Checks the allocation's invariants; returns a message on failure.
pub fn check_feasible<L: Link>(p: &RoundProblem<L>, a: &Allocation) -> Result<(), String> {
    let n = p.clients.len();
    if a.shares.len() != n || a.components.len() != n || a.levels.len() != n {
        return Err("lengths".into());
    }
    let sum: f64 = a.shares.iter().sum();
    if !(sum <= 1.0 + 1e-9) {
        return Err(format!("Σβ = {sum}"));
    }
    let mut penalty = 0.0;
    for k in 0..n {
        let c = &p.clients[k];
        let b = a.shares[k];
        if !(b >= 0.0) || !b.is_finite() {
            return Err(format!("β[{k}] = {b}"));
        }
        match a.levels[k] {
            None => {
                if b != 0.0 || a.components[k] != 0 {
                    return Err(format!("client {k} sits out with β = {b}"));
                }
                penalty += c.weight;
            }
            Some(j) => {
                let l = c.levels[j];
                if a.components[k] != l.components {
                    return Err("components".into());
                }
                let air = if l.bits > 0.0 {
                    l.bits / c.link.rate_bps(b)
                } else {
                    0.0
                };
                let fin = c.compute_latency_s + air;
                if !(fin <= a.tau_s * (1.0 + 1e-9) + 1e-12) {
                    return Err(format!("client {k} finishes at {fin} > τ = {}", a.tau_s));
                }
                penalty += c.weight * l.penalty;
            }
        }
    }
    if a.participants() == 0 && a.tau_s != 0.0 {
        return Err("τ ≠ 0 with nobody".into());
    }
    if (penalty - a.penalty).abs() > 1e-9 * penalty.max(1.0) {
        return Err(format!("penalty {penalty} vs {}", a.penalty));
    }
    let obj = p.v * a.penalty + p.queue * a.tau_s;
    if (obj - a.objective).abs() > 1e-9 * obj.max(1.0) {
        return Err(format!("objective {obj} vs {}", a.objective));
    }
    if !(a.lower_bound <= a.objective + 1e-12) || a.objective.is_nan() {
        return Err("lower bound above objective".into());
    }
    Ok(())
}

/// Least `τ` at which a choice fits, by plain bisection on `Σ β(τ) ≤ 1`
/// (independent of the crate's regula falsi). `0` for nobody; `None` if never.
pub fn brute_tau<L: Link>(p: &RoundProblem<L>, choice: &[Option<usize>]) -> Option<f64> {
    let parts: Vec<(usize, usize)> = choice
        .iter()
        .enumerate()
        .filter_map(|(k, c)| c.map(|j| (k, j)))
        .collect();
    if parts.is_empty() {
        return Some(0.0);
    }
    let total = |t: f64| -> f64 {
        parts
            .iter()
            .map(|&(k, j)| {
                let c = &p.clients[k];
                c.link
                    .min_share(c.levels[j].bits, t - c.compute_latency_s)
                    .unwrap_or(f64::INFINITY)
            })
            .sum()
    };
    let mut lo = 0.0f64;
    for &(k, j) in &parts {
        let c = &p.clients[k];
        lo = lo.max(c.compute_latency_s + c.link.min_airtime_s(c.levels[j].bits));
    }
    if !lo.is_finite() {
        return None;
    }
    let mut hi = lo * 2.0 + 1e-6;
    while total(hi) > 1.0 {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..64 {
        let mid = 0.5 * (lo + hi);
        if total(mid) > 1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

/// Every assignment of `p` (`None`: the client sits out), the all-sit-out
/// one first; with `tied`, only those whose participants all keep the same
/// number of components.
pub fn assignments<L>(p: &RoundProblem<L>, tied: bool) -> Vec<Vec<Option<usize>>> {
    let radix: Vec<usize> = p.clients.iter().map(|c| c.levels.len() + 1).collect();
    let total: usize = radix.iter().product();
    (0..total)
        .map(|code| {
            let mut rest = code;
            radix
                .iter()
                .map(|&r| {
                    let d = rest % r;
                    rest /= r;
                    if d == 0 { None } else { Some(d - 1) }
                })
                .collect::<Vec<_>>()
        })
        .filter(|choice| {
            let mut ms = choice
                .iter()
                .enumerate()
                .filter_map(|(k, ch)| ch.map(|j| p.clients[k].levels[j].components));
            let first = ms.next();
            !tied || ms.all(|m| Some(m) == first)
        })
        .collect()
}

/// Brute force over all assignments (optionally tied), each at its least `τ`.
pub fn brute_force<L: Link>(p: &RoundProblem<L>, tied: bool) -> f64 {
    let mut best = f64::INFINITY;
    for choice in assignments(p, tied) {
        let Some(tau) = brute_tau(p, &choice) else {
            continue;
        };
        let pen: f64 = p
            .clients
            .iter()
            .zip(&choice)
            .map(|(cl, ch)| cl.weight * ch.map_or(1.0, |j| cl.levels[j].penalty))
            .sum();
        best = best.min(p.v * pen + p.queue * tau);
    }
    best
}

/// Objective scale used for tolerances: the all-sit-out objective.
pub fn scale<L>(p: &RoundProblem<L>) -> f64 {
    p.v * p.clients.iter().map(|c| c.weight).sum::<f64>()
}
