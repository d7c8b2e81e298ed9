//! The outer search over the round latency `τ`.
//!
//! For a fixed `τ`, `P(τ)` is the least weighted penalty of the knapsack at
//! `τ`. Because every least share `β_{k,m}(τ)` is non-increasing in `τ`,
//! `P` is a non-increasing step function, and the objective
//! `f(τ) = V·P(τ) + Q·τ` is minimised at the left end of one of its steps,
//! i.e. at `τ*(a)`, the least latency at which some assignment `a` fits the
//! band. These points are not known in advance (`τ*(a)` is the root of
//! `Σ_k β_{k,a_k}(τ) = 1`), so the search is a branch and bound on
//! intervals of `τ`:
//!
//! * evaluating `τ` gives an assignment `a` with penalty `P(a)` (and a
//!   certified lower bound `LB(τ) ≤ P(τ)` from the oracle); `a` is tightened
//!   to `τ*(a) ≤ τ`, an incumbent `V·P(a) + Q·τ*(a)` that covers the whole
//!   segment `[τ*(a), τ]`; the interval left of it, `(lo, τ*(a))`, gets
//!   `P_e = P(a)` and the evaluation's Lagrangian bound;
//! * an interval `(lo, hi)` whose right end gave `P_e` (so the incumbent is
//!   at most `V·P_e + Q·hi` when it is made) is first cut at
//!   `(best − tol/2 − V·P_e)/Q`: beyond it, `f ≥ V·P_e + Q·τ ≥ best − tol/2`;
//! * it is then closed when its lower bound `LB` reaches `best − tol`, or
//!   when `Q·(hi − lo) ≤ tol/2`: after the cut, `best − V·P_e − Q·hi ≤
//!   tol/2`, so then `best − (V·P_e + Q·lo) ≤ tol` as well;
//! * otherwise it is evaluated again: at its (cut) right end when the cut
//!   took more than a third of it (its bounds come from an evaluation far to
//!   the right and say little about it), at its midpoint otherwise (the
//!   left part gets the new evaluation's bounds, the right part keeps its
//!   own).
//!
//! The interval's lower bound is the larger of `V·P_e + Q·lo` and a
//! Lagrangian bound (see `Dual`): with the LP's band price `λ` at the
//! evaluation `e` and the tangents of the (convex) least shares at `e`,
//! `P(τ) ≥ Σ_k min_m (c + λ(β(e) + |β'(e)|(e − τ))) − λ`, concave in `τ`, so
//! its minimum over an interval is at an end. This first-order bound is what
//! keeps the number of evaluations small (about 10 per round in per-client
//! mode at K = 10…1000, 12 to 26 tied). It assumes least shares convex in
//! `τ` (true for the Shannon rate: the inverse of a concave rate composed
//! with `S/(τ − T)`).
//!
//! Guarantee. Every `τ` is either covered by an evaluation (`f ≥ best`), cut
//! (`f ≥ best − tol/2`) or in a closed interval (`f ≥ best − tol`), with
//! `best` the incumbent at that time, never below the final one. So with the
//! exact MILP oracle the returned objective is at most `OPT + tol`, `OPT`
//! the least `V·P(a) + Q·τ*(a)` over all assignments, and `τ*(a)` is only
//! found to within relative `1e-11` (from above, so the answer is feasible),
//! which can add `Q·1e-11·τ`. (Closing at `Q·(hi − lo) ≤ tol` after a cut
//! at `best − tol`, as before, spent the tolerance twice: up to `2·tol`.)
//! With the hull oracle, `P_e` may exceed the true `P(e)` by that
//! evaluation's rounding gap, at most one client's `p_k·max(1, max_m D_k(m))`,
//! and the answer is within `tol + V·max gap`. If `max_evaluations` stops
//! the search, open intervals are closed as they are and only the lower
//! bound holds. In every case the reported lower bound is certified: the
//! least of `V·LB + Q·lo` over every closed, cut or pruned piece and of
//! `V·LB(e) + Q·τ*(a)` over every evaluated segment.

use std::rc::Rc;

use crate::error::AllocError;
use crate::knapsack::{Knapsack, Opt, hull_greedy, milp};
use crate::problem::{Link, RoundProblem, SIT_OUT_PENALTY};
use crate::{RatioMode, Solver};

/// The search's answer before shares are filled in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Found {
    pub choice: Vec<Option<usize>>,
    pub tau_s: f64,
    pub penalty: f64,
    pub lower_bound: f64,
    pub evaluations: usize,
}

/// Search settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Settings {
    pub mode: RatioMode,
    pub solver: Solver,
    pub rel_tol: f64,
    pub max_evaluations: usize,
}

/// Clients' options at `τ` (sit out always; levels with a least share ≤ 1).
pub(crate) fn options_at<L: Link>(
    p: &RoundProblem<L>,
    reachable: &[bool],
    tau: f64,
) -> Vec<Vec<Opt>> {
    p.clients
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let mut o = vec![Opt {
                level: None,
                components: 0,
                share: 0.0,
                slope: 0.0,
                cost: c.weight * SIT_OUT_PENALTY,
            }];
            if reachable[k] {
                for (j, l) in c.levels.iter().enumerate() {
                    let share = p.share_at(k, j, tau);
                    if share <= 1.0 {
                        // |dβ/dτ| = (S/(τ − T_cmp)²) / R'(β)
                        let dt = tau - c.compute_latency_s;
                        let slope = if l.bits > 0.0 {
                            l.bits / (dt * dt) / c.link.rate_slope_bps(share)
                        } else {
                            0.0
                        };
                        o.push(Opt {
                            level: Some(j),
                            components: l.components,
                            share,
                            slope: if slope.is_finite() { slope } else { 0.0 },
                            cost: c.weight * l.penalty,
                        });
                    }
                }
            }
            o
        })
        .collect()
}

/// Solves the knapsack at `τ` with the configured oracle and mode.
pub(crate) fn knapsack_at<L: Link>(
    p: &RoundProblem<L>,
    reachable: &[bool],
    tau: f64,
    s: &Settings,
) -> Result<Knapsack, AllocError> {
    solve_options(&options_at(p, reachable, tau), s)
}

/// Solves the knapsack over given options with the configured oracle and mode.
fn solve_options(opts: &[Vec<Opt>], s: &Settings) -> Result<Knapsack, AllocError> {
    let tied = s.mode == RatioMode::Tied;
    match s.solver {
        Solver::Milp => milp(opts, tied),
        Solver::Hull if !tied => Ok(hull_greedy(opts)),
        Solver::Hull => {
            let mut comps: Vec<u32> = opts
                .iter()
                .flatten()
                .map(|o| o.components)
                .filter(|&m| m > 0)
                .collect();
            comps.sort_unstable();
            comps.dedup();
            let mut best = hull_greedy(&opts.iter().map(|o| o[..1].to_vec()).collect::<Vec<_>>());
            let mut lb = best.lower_bound;
            for m in comps {
                let restricted: Vec<Vec<Opt>> = opts
                    .iter()
                    .map(|o| {
                        o.iter()
                            .copied()
                            .filter(|x| x.components == 0 || x.components == m)
                            .collect()
                    })
                    .collect();
                let g = hull_greedy(&restricted);
                lb = lb.min(g.lower_bound);
                if g.cost < best.cost {
                    best = g;
                }
            }
            best.lower_bound = lb;
            Ok(best)
        }
    }
}

/// Client-wise reachability: can the client send some level in finite time?
pub(crate) fn reachability<L: Link>(p: &RoundProblem<L>) -> Vec<bool> {
    (0..p.clients.len())
        .map(|k| (0..p.clients[k].levels.len()).any(|j| p.threshold_s(k, j).is_finite()))
        .collect()
}

/// The Lagrangian lower bound from one evaluation at `e`, valid for `τ ≤ e`.
///
/// For any price `λ ≥ 0`, `P(τ) ≥ Σ_k min_m (c_{k,m} + λ·β_{k,m}(τ)) − λ`
/// (weak duality of the knapsack's LP relaxation, over the options feasible
/// at `e`, a superset of those feasible at `τ ≤ e`), and `β_{k,m}(τ) ≥
/// β_{k,m}(e) + |β'_{k,m}(e)|·(e − τ)` (the least share is convex in `τ`).
/// The result `g(τ)` is concave in `τ`, so `V·g(τ) + Q·τ` is least at an
/// end of any interval.
#[derive(Debug)]
struct Dual {
    e: f64,
    lambda: f64,
    /// Per client: its options at `e` (cost, share, `|dβ/dτ|`).
    opts: Vec<Vec<Opt>>,
}

impl Dual {
    fn g(&self, tau: f64) -> f64 {
        let d = (self.e - tau).max(0.0);
        let l = self.lambda;
        self.opts
            .iter()
            .map(|o| {
                o.iter()
                    .map(|x| x.cost + l * (x.share + x.slope * d))
                    .fold(f64::INFINITY, f64::min)
            })
            .sum::<f64>()
            - l
    }

    /// Lower bound of `V·P(τ) + Q·τ` over `[lo, hi]` (`hi ≤ e`).
    fn bound(&self, v: f64, q: f64, lo: f64, hi: f64) -> f64 {
        (v * self.g(lo) + q * lo).min(v * self.g(hi) + q * hi)
    }
}

/// One interval of the branch and bound.
#[derive(Debug, Clone)]
struct Interval {
    lo: f64,
    hi: f64,
    /// Penalty of the assignment found at the evaluation right of the
    /// interval (used for pruning; exact `P` with the MILP oracle).
    prune_penalty: f64,
    /// Certified lower bound on `P` valid on the whole interval.
    cert_penalty: f64,
    /// The Lagrangian bound of that evaluation (`None`: none beyond
    /// `prune_penalty`).
    dual: Option<Rc<Dual>>,
    /// `τ*(a)` of that evaluation: the interval's right end before cuts.
    fresh_hi: f64,
}

/// The drift-plus-penalty search over `τ` (see the module docs).
pub(crate) fn search<L: Link>(
    p: &RoundProblem<L>,
    reachable: &[bool],
    s: &Settings,
) -> Result<Found, AllocError> {
    let n = p.clients.len();
    let all_out = vec![None; n];
    let out_penalty = p.penalty_of(&all_out);
    let mut best = Found {
        choice: all_out,
        tau_s: 0.0,
        penalty: out_penalty,
        lower_bound: f64::NEG_INFINITY,
        evaluations: 0,
    };
    let mut best_f = p.v * out_penalty;
    // Least latency at which anything can be sent, and a latency at which
    // every assignment fits (every reachable client at its largest payload).
    let mut tau_lo = f64::INFINITY;
    let mut max_bits: Vec<Option<usize>> = vec![None; n];
    for k in 0..n {
        if !reachable[k] {
            continue;
        }
        for j in 0..p.clients[k].levels.len() {
            let t = p.threshold_s(k, j);
            if t.is_finite() {
                tau_lo = tau_lo.min(t);
                let better = match max_bits[k] {
                    None => true,
                    Some(i) => p.clients[k].levels[j].bits > p.clients[k].levels[i].bits,
                };
                if better {
                    max_bits[k] = Some(j);
                }
            }
        }
    }
    if !tau_lo.is_finite() {
        best.lower_bound = best_f;
        return Ok(best);
    }
    // Start from the latency at which every client fits with an equal
    // share 1/K' (feasible, so the root is approached from the right).
    let k_in = max_bits.iter().filter(|c| c.is_some()).count() as f64;
    let tau_eq = max_bits
        .iter()
        .enumerate()
        .filter_map(|(k, ch)| ch.map(|j| (k, j)))
        .map(|(k, j)| {
            let c = &p.clients[k];
            let bits = c.levels[j].bits;
            let air = if bits > 0.0 {
                bits / c.link.rate_bps(1.0 / k_in)
            } else {
                0.0
            };
            c.compute_latency_s + air
        })
        .fold(0.0, f64::max);
    let start = if tau_eq.is_finite() {
        tau_eq
    } else {
        2.0 * tau_lo + 1e-9
    };
    let Some(tau_hi) = p.least_latency(&max_bits, start) else {
        best.lower_bound = best_f;
        return Ok(best);
    };
    let tol = s.rel_tol
        * (p.v * out_penalty)
            .max(p.queue * tau_lo)
            .max(f64::MIN_POSITIVE);
    let mut closed_lb = f64::INFINITY;
    let mut evaluations = 0usize;
    // Evaluate at τ: update the incumbent, return (τ*(a), P(a), LB(τ), dual).
    type Eval = (f64, f64, f64, Rc<Dual>);
    let eval = |tau: f64, best: &mut Found, best_f: &mut f64| -> Result<Eval, AllocError> {
        let opts = options_at(p, reachable, tau);
        let ks = solve_options(&opts, s)?;
        let lambda = if s.solver == Solver::Hull && s.mode == RatioMode::PerClient {
            ks.dual_price
        } else {
            hull_greedy(&opts).dual_price
        };
        // Σβ(τ) − 1 and its slope for the choice, from the options at τ
        // (the same terms, in the same order, as `excess_and_slope`).
        let (mut excess, mut slope) = (-1.0, 0.0);
        for (o, ch) in opts.iter().zip(&ks.choice) {
            if ch.is_some()
                && let Some(x) = o.iter().find(|x| x.level == *ch)
            {
                excess += x.share;
                slope -= x.slope;
            }
        }
        let dual = Rc::new(Dual {
            e: tau,
            lambda,
            opts,
        });
        let t = p
            .least_latency_from(&ks.choice, tau, Some((excess, slope)))
            .unwrap_or(tau);
        let pen = p.penalty_of(&ks.choice);
        let f = p.v * pen + p.queue * t;
        if f < *best_f {
            *best_f = f;
            *best = Found {
                choice: ks.choice,
                tau_s: t,
                penalty: pen,
                lower_bound: 0.0,
                evaluations: 0,
            };
        }
        Ok((t.min(tau), pen, ks.lower_bound.min(pen), dual))
    };
    let (t_hi, pen_hi, lb_hi, dual_hi) = if s.mode == RatioMode::PerClient {
        // At tau_hi every option fits at once (each least share is at most
        // that of the client's largest payload), so the knapsack's optimum,
        // and its LP bound, is every client's cheapest option (the fewer
        // bits on a tie: the least τ*). No knapsack to solve, and the LP's
        // band price is 0, so its Lagrangian bound adds nothing.
        let choice: Vec<Option<usize>> = (0..n)
            .map(|k| {
                let c = &p.clients[k];
                let mut pick: Option<usize> = None;
                let (mut cost, mut bits) = (SIT_OUT_PENALTY, 0.0);
                if reachable[k] {
                    for (j, l) in c.levels.iter().enumerate() {
                        let cheaper = l.penalty < cost || (l.penalty == cost && l.bits < bits);
                        if cheaper && p.threshold_s(k, j).is_finite() {
                            (pick, cost, bits) = (Some(j), l.penalty, l.bits);
                        }
                    }
                }
                pick
            })
            .collect();
        let t = p.least_latency(&choice, tau_hi).unwrap_or(tau_hi);
        let pen = p.penalty_of(&choice);
        let f = p.v * pen + p.queue * t;
        if f < best_f {
            best_f = f;
            best = Found {
                choice,
                tau_s: t,
                penalty: pen,
                lower_bound: 0.0,
                evaluations: 0,
            };
        }
        (t.min(tau_hi), pen, pen, None)
    } else {
        evaluations += 1;
        let (t, pen, lb, dual) = eval(tau_hi, &mut best, &mut best_f)?;
        (t, pen, lb, Some(dual))
    };
    // [t_hi, ∞) is covered: P(τ) = P(tau_hi) beyond tau_hi, and τ ≥ t_hi.
    closed_lb = closed_lb.min(p.v * lb_hi + p.queue * t_hi);
    let mut open = vec![Interval {
        lo: tau_lo,
        hi: t_hi,
        prune_penalty: pen_hi,
        cert_penalty: lb_hi,
        dual: dual_hi,
        fresh_hi: t_hi,
    }];
    while let Some(mut iv) = open.pop() {
        // Only τ < cut can improve on the incumbent by more than tol/2.
        if p.queue > 0.0 {
            let cut = (best_f - 0.5 * tol - p.v * iv.prune_penalty) / p.queue;
            if cut < iv.hi {
                closed_lb = closed_lb.min(p.v * iv.cert_penalty + p.queue * cut.max(iv.lo));
                iv.hi = cut;
            }
        }
        let dual_lb = match &iv.dual {
            Some(d) if iv.hi > iv.lo => d.bound(p.v, p.queue, iv.lo, iv.hi),
            _ => f64::NEG_INFINITY,
        };
        let lb = (p.v * iv.prune_penalty + p.queue * iv.lo).max(dual_lb);
        let cert = (p.v * iv.cert_penalty + p.queue * iv.lo).max(dual_lb);
        if iv.hi <= iv.lo || lb >= best_f - tol {
            closed_lb = closed_lb.min(cert.min(best_f));
            continue;
        }
        if p.queue * (iv.hi - iv.lo) <= 0.5 * tol || evaluations >= s.max_evaluations {
            closed_lb = closed_lb.min(cert);
            continue;
        }
        if iv.fresh_hi - iv.hi > 0.5 * (iv.hi - iv.lo) {
            // The cuts took more than a third of the interval: its bounds
            // come from an evaluation far to the right. Refresh them at the
            // cut end (covering [τ*(a), hi]) rather than split.
            evaluations += 1;
            let (t_r, pen_r, lb_r, dual_r) = eval(iv.hi, &mut best, &mut best_f)?;
            closed_lb = closed_lb.min(p.v * lb_r + p.queue * t_r);
            open.push(Interval {
                lo: iv.lo,
                hi: t_r,
                prune_penalty: pen_r,
                cert_penalty: lb_r,
                dual: Some(dual_r),
                fresh_hi: t_r,
            });
            continue;
        }
        let mid = 0.5 * (iv.lo + iv.hi);
        evaluations += 1;
        let (t_mid, pen_mid, lb_mid, dual_mid) = eval(mid, &mut best, &mut best_f)?;
        closed_lb = closed_lb.min(p.v * lb_mid + p.queue * t_mid);
        if t_mid > iv.lo {
            open.push(Interval {
                lo: iv.lo,
                hi: t_mid,
                prune_penalty: pen_mid,
                cert_penalty: lb_mid,
                dual: Some(dual_mid),
                fresh_hi: t_mid,
            });
        }
        open.push(Interval { lo: mid, ..iv });
    }
    best.lower_bound = closed_lb.min(best_f);
    best.evaluations = evaluations;
    Ok(best)
}
