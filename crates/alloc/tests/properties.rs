//! Property tests of the drift-plus-penalty allocation (docs/method.md §5).
#![allow(clippy::unwrap_used)]

mod common;

use common::{brute_force, check_feasible, scale, small_problem};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_alloc::{Policy, RatioMode, RoundProblem, SearchOptions, Solver, solve_round};
use wflora_channel::Uplink;

fn dpp(mode: RatioMode, solver: Solver) -> Policy {
    Policy::DriftPlusPenalty { mode, solver }
}

/// `cases` cases, no failure files (integration tests have no lib.rs).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn opts() -> SearchOptions {
    SearchOptions {
        rel_tol: 1e-9,
        max_evaluations: 10_000,
    }
}

/// Stated gap of the hull path: one client's worth of penalty swing,
/// `V·max_k p_k·max(1, max_m D_k(m))`, plus the search tolerance.
fn hull_gap(p: &RoundProblem<Uplink>) -> f64 {
    let worst = p
        .clients
        .iter()
        .map(|c| c.weight * c.levels.iter().map(|l| l.penalty).fold(1.0, f64::max))
        .fold(0.0, f64::max);
    p.v * worst + 1e-6 * scale(p)
}

proptest! {
    #![proptest_config(config(400))]

    /// MILP path (both modes) is feasible, matches exhaustive search over
    /// assignments (each at its least τ) within the tolerance, and its
    /// certified lower bound is below the brute-force optimum.
    #[test]
    fn milp_matches_brute_force(p in small_problem(4, 4)) {
        for mode in [RatioMode::PerClient, RatioMode::Tied] {
            let a = solve_round(&p, &dpp(mode, Solver::Milp), &opts()).unwrap();
            check_feasible(&p, &a).map_err(TestCaseError::fail)?;
            let bf = brute_force(&p, mode == RatioMode::Tied);
            let tol = 1e-6 * scale(&p).max(1e-12);
            prop_assert!(a.objective <= bf + tol, "{mode:?}: milp {} > brute {bf}", a.objective);
            prop_assert!(a.objective >= bf - tol, "{mode:?}: milp {} < brute {bf}", a.objective);
            prop_assert!(a.lower_bound <= bf + tol);
        }
    }

    /// Hull path: feasible, within the stated gap of the optimum, and its
    /// certified lower bound is valid.
    #[test]
    fn hull_within_stated_gap(p in small_problem(4, 4)) {
        for mode in [RatioMode::PerClient, RatioMode::Tied] {
            let a = solve_round(&p, &dpp(mode, Solver::Hull), &opts()).unwrap();
            check_feasible(&p, &a).map_err(TestCaseError::fail)?;
            let bf = brute_force(&p, mode == RatioMode::Tied);
            let tol = 1e-6 * scale(&p).max(1e-12);
            prop_assert!(a.objective <= bf + hull_gap(&p), "{mode:?}: hull {} vs {bf}", a.objective);
            prop_assert!(a.lower_bound <= bf + tol, "{mode:?}: lb {} > {bf}", a.lower_bound);
            prop_assert!(a.objective - a.lower_bound <= hull_gap(&p) + tol);
        }
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// No random feasible allocation (random levels, random shares summing
    /// to at most 1, τ = latest finish) beats the MILP path.
    #[test]
    fn no_random_allocation_is_better(p in small_problem(6, 5), seed in 0u64..u64::MAX) {
        let a = solve_round(&p, &dpp(RatioMode::PerClient, Solver::Milp), &opts()).unwrap();
        check_feasible(&p, &a).map_err(TestCaseError::fail)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let tol = 1e-6 * scale(&p).max(1e-12);
        for _ in 0..20 {
            let raw: Vec<f64> = p.clients.iter().map(|_| rng.random_range(0.0..1.0)).collect();
            let fill: f64 = rng.random_range(0.5..1.0);
            let sum: f64 = raw.iter().sum();
            let mut tau = 0.0f64;
            let mut pen = 0.0;
            for (k, c) in p.clients.iter().enumerate() {
                let pick = rng.random_range(0..=c.levels.len());
                if pick == 0 {
                    pen += c.weight;
                    continue;
                }
                let l = c.levels[pick - 1];
                let rate = c.link.rate_bps(raw[k] / sum * fill);
                tau = tau.max(c.compute_latency_s + if l.bits > 0.0 { l.bits / rate } else { 0.0 });
                pen += c.weight * l.penalty;
            }
            if tau.is_finite() {
                prop_assert!(a.objective <= p.v * pen + p.queue * tau + tol);
            }
        }
    }

    /// Every policy returns a feasible allocation (Σβ ≤ 1, β ≥ 0, every
    /// participant within τ), never NaN, also with unreachable clients.
    #[test]
    fn every_policy_is_feasible(p in small_problem(8, 4), budget in 0.05f64..2.0) {
        let policies = [
            dpp(RatioMode::PerClient, Solver::Hull),
            dpp(RatioMode::Tied, Solver::Hull),
            Policy::Myopic { mode: RatioMode::PerClient, solver: Solver::Hull, budget_s: budget },
            Policy::Myopic { mode: RatioMode::Tied, solver: Solver::Milp, budget_s: budget },
            Policy::FixedRatio { components: 1 },
            Policy::EqualBandwidth { components: 1 },
        ];
        for pol in policies {
            let a = solve_round(&p, &pol, &SearchOptions::default()).unwrap();
            check_feasible(&p, &a).map_err(|e| TestCaseError::fail(format!("{pol:?}: {e}")))?;
            for k in &a.unreachable {
                prop_assert!(a.components[*k] == 0);
                prop_assert!(p.clients[*k].link.channel_gain == 0.0);
            }
            if let Policy::Myopic { budget_s, .. } = pol {
                prop_assert!(a.tau_s <= budget_s * (1.0 + 1e-12));
            }
            if matches!(pol, Policy::FixedRatio { .. } | Policy::EqualBandwidth { .. }) {
                // every reachable client takes part
                prop_assert_eq!(a.participants() + a.unreachable.len(), p.clients.len());
            }
        }
    }

    /// Fixed ratio: the latency-equalising shares fill the band, `Σβ = 1`
    /// to the last ulp or so, and every participant finishes by `τ`.
    #[test]
    fn fixed_ratio_fills_the_band(p in small_problem(8, 4)) {
        let a = solve_round(&p, &Policy::FixedRatio { components: 1 }, &SearchOptions::default()).unwrap();
        check_feasible(&p, &a).map_err(TestCaseError::fail)?;
        let sum: f64 = a.shares.iter().sum();
        if a.participants() > 0 {
            prop_assert!((sum - 1.0).abs() <= 4.0 * f64::EPSILON, "Σβ = 1 − {:e}", 1.0 - sum);
        } else {
            prop_assert_eq!(sum, 0.0);
        }
    }

    /// A larger Q never gives a longer τ: for ε-optimal answers,
    /// `(Q2 − Q1)(τ2 − τ1) ≤ ε1 + ε2` (add the two optimality inequalities),
    /// with ε the certified gaps. Likewise a larger V never gives a larger
    /// penalty: `(V2 − V1)(P2 − P1) ≤ ε1 + ε2`.
    #[test]
    fn monotone_in_q_and_v(p in small_problem(4, 4), q2f in 1.05f64..5.0, v2f in 1.05f64..5.0) {
        for solver in [Solver::Milp, Solver::Hull] {
            let pol = dpp(RatioMode::PerClient, solver);
            let a1 = solve_round(&p, &pol, &opts()).unwrap();
            let eps1 = a1.objective - a1.lower_bound + 1e-9 * scale(&p).max(1e-9);
            let mut pq = p.clone();
            pq.queue = p.queue * q2f + 0.1;
            let a2 = solve_round(&pq, &pol, &opts()).unwrap();
            let eps2 = a2.objective - a2.lower_bound + 1e-9 * scale(&pq).max(1e-9);
            let dq = pq.queue - p.queue;
            prop_assert!(a2.tau_s <= a1.tau_s + (eps1 + eps2) / dq,
                "{solver:?}: τ {} → {} (Q {} → {})", a1.tau_s, a2.tau_s, p.queue, pq.queue);
            let mut pv = p.clone();
            pv.v = p.v * v2f;
            let a3 = solve_round(&pv, &pol, &opts()).unwrap();
            let eps3 = a3.objective - a3.lower_bound + 1e-9 * scale(&pv).max(1e-9);
            let dv = pv.v - p.v;
            prop_assert!(a3.penalty <= a1.penalty + (eps1 + eps3) / dv,
                "{solver:?}: penalty {} → {} (V {} → {})", a1.penalty, a3.penalty, p.v, pv.v);
        }
    }
}
