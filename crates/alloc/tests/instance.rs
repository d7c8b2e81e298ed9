//! The JSON instance format (docs/alloc-instance.md) and the baselines.
#![allow(clippy::unwrap_used)]

mod common;

use common::check_feasible;
use wflora_alloc::{
    AllocError, Instance, Policy, RatioMode, SearchOptions, Solution, Solver, solve_instance_json,
    solve_round,
};

const EXAMPLE: &str = include_str!("../examples/instance.json");

#[test]
fn example_instance_parses_and_solves() {
    let inst = Instance::from_json(EXAMPLE).unwrap();
    let p = inst.to_problem().unwrap();
    let sol = inst.solve().unwrap();
    check_feasible(&p, &sol.allocation).unwrap();
    // The reference MILP path agrees with the default hull path here.
    let mut milp = inst.clone();
    milp.policy = Policy::DriftPlusPenalty {
        mode: RatioMode::PerClient,
        solver: Solver::Milp,
    };
    let exact = milp.solve().unwrap();
    check_feasible(&p, &exact.allocation).unwrap();
    assert!(exact.allocation.objective <= sol.allocation.objective + 1e-6);
    assert!(sol.allocation.lower_bound <= exact.allocation.objective + 1e-6);
    // Deep-faded client 3 (fading 0) is unreachable and sits out.
    assert_eq!(sol.allocation.unreachable, vec![3]);
    assert_eq!(sol.allocation.components[3], 0);
    // The solution round-trips through JSON.
    let text = serde_json::to_string_pretty(&sol).unwrap();
    let back: Solution = serde_json::from_str(&text).unwrap();
    assert_eq!(back.allocation.components, sol.allocation.components);
    assert_eq!(back.policy, sol.policy);
    let via_text = solve_instance_json(EXAMPLE).unwrap();
    assert_eq!(via_text.allocation.components, sol.allocation.components);
}

#[test]
fn bad_instances_name_the_field() {
    let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    v["clients"][1]["levels"][0]["bits"] = serde_json::json!(-3.0);
    let e = Instance::from_json(&v.to_string())
        .unwrap()
        .solve()
        .unwrap_err();
    match e {
        AllocError::InvalidField { field, .. } => assert_eq!(field, "clients[1].levels[0].bits"),
        other => panic!("{other:?}"),
    }
    let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    v["clients"][0]["fadng"] = serde_json::json!(1.0);
    let e = Instance::from_json(&v.to_string()).unwrap_err();
    assert!(
        matches!(&e, AllocError::Json(m) if m.contains("fadng")),
        "{e}"
    );
    let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    v["policy"] = serde_json::json!({"kind": "fixed_ratio", "components": 7});
    let e = Instance::from_json(&v.to_string())
        .unwrap()
        .solve()
        .unwrap_err();
    assert!(
        matches!(
            e,
            AllocError::MissingLevel {
                client: 0,
                components: 7,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn baselines_by_hand() {
    let inst = Instance::from_json(EXAMPLE).unwrap();
    let p = inst.to_problem().unwrap();
    // Fixed ratio: reachable clients at m = 4 finish together at τ, Σβ = 1.
    let a = solve_round(
        &p,
        &Policy::FixedRatio { components: 4 },
        &SearchOptions::default(),
    )
    .unwrap();
    check_feasible(&p, &a).unwrap();
    let sum: f64 = a.shares.iter().sum();
    assert!(
        (sum - 1.0).abs() <= 2.0 * f64::EPSILON,
        "Σβ = 1 − {:e}",
        1.0 - sum
    );
    for k in 0..3 {
        let c = &p.clients[k];
        let l = c.levels[a.levels[k].unwrap()];
        let fin = c.compute_latency_s + l.bits / c.link.rate_bps(a.shares[k]);
        assert!((fin / a.tau_s - 1.0).abs() < 1e-9);
    }
    // Equal bandwidth: 1/3 each for the three reachable clients.
    let e = solve_round(
        &p,
        &Policy::EqualBandwidth { components: 4 },
        &SearchOptions::default(),
    )
    .unwrap();
    check_feasible(&p, &e).unwrap();
    assert_eq!(e.shares[..3], [1.0 / 3.0; 3]);
    assert!(e.tau_s >= a.tau_s * (1.0 - 1e-12)); // equalising is the best split for a fixed choice
    // Myopic with a generous budget sends everything at the least penalty;
    // with a budget below every compute latency nobody takes part.
    let m = solve_round(
        &p,
        &Policy::Myopic {
            mode: RatioMode::PerClient,
            solver: Solver::Milp,
            budget_s: 100.0,
        },
        &SearchOptions::default(),
    )
    .unwrap();
    assert_eq!(m.components, vec![8, 8, 8, 0]);
    let none = solve_round(
        &p,
        &Policy::Myopic {
            mode: RatioMode::Tied,
            solver: Solver::Hull,
            budget_s: 1e-3,
        },
        &SearchOptions::default(),
    )
    .unwrap();
    assert_eq!(none.participants(), 0);
    assert_eq!(none.tau_s, 0.0);
}

#[test]
fn queue_extremes() {
    let inst = Instance::from_json(EXAMPLE).unwrap();
    let mut p = inst.to_problem().unwrap();
    // Q = 0: time is free, everybody reachable sends its least-penalty level.
    p.queue = 0.0;
    let a = solve_round(&p, &Policy::default(), &SearchOptions::default()).unwrap();
    assert_eq!(a.components, vec![8, 8, 8, 0]);
    // Q above V·Σp / min T_cmp: any participation costs more than sitting out.
    let sum_p: f64 = p.clients.iter().map(|c| c.weight).sum();
    let t_min = p
        .clients
        .iter()
        .map(|c| c.compute_latency_s)
        .fold(f64::INFINITY, f64::min);
    p.queue = 1.01 * p.v * sum_p / t_min;
    let b = solve_round(&p, &Policy::default(), &SearchOptions::default()).unwrap();
    assert_eq!(b.participants(), 0);
    assert_eq!(b.objective, p.v * sum_p);
}

#[test]
fn non_finite_effective_gain_is_an_error_naming_the_field() {
    let field_of =
        |v: &serde_json::Value| match Instance::from_json(&v.to_string()).unwrap().solve() {
            Err(AllocError::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        };
    // path_gain × fading overflows to ∞ (each factor finite).
    let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    v["clients"][1]["path_gain"] = serde_json::json!(1e300);
    v["clients"][1]["fading"] = serde_json::json!(1e10);
    assert_eq!(field_of(&v), "clients[1].fading");
    // A finite gain whose SNR P·g/(W·N0) overflows.
    let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    v["clients"][2]["tx_power_w"] = serde_json::json!(1e300);
    v["clients"][2]["path_gain"] = serde_json::json!(1e10);
    v["clients"][2]["fading"] = serde_json::json!(1.0);
    assert_eq!(field_of(&v), "clients[2].tx_power_w");
    // NaN cannot be written in JSON, but can be in the struct.
    let mut inst = Instance::from_json(EXAMPLE).unwrap();
    inst.clients[1].fading = f64::NAN;
    match inst.to_problem() {
        Err(AllocError::InvalidField { field, .. }) => assert_eq!(field, "clients[1].fading"),
        other => panic!("{other:?}"),
    }
    inst.clients[1].fading = f64::INFINITY;
    assert!(inst.solve().is_err());
}

#[test]
fn search_options_out_of_range_are_errors_not_endless_searches() {
    // Found by tests/fuzz_inputs.rs: rel_tol 1e-320 with max_evaluations
    // u64::MAX searched without end.
    let field_of = |rel_tol: serde_json::Value, max_evaluations: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        v["options"] = serde_json::json!({"rel_tol": rel_tol, "max_evaluations": max_evaluations});
        match solve_instance_json(&v.to_string()) {
            Err(AllocError::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    };
    let j = |x: f64| serde_json::json!(x);
    assert_eq!(
        field_of(j(1e-320), serde_json::json!(200)),
        "options.rel_tol"
    );
    assert_eq!(field_of(j(2.0), serde_json::json!(200)), "options.rel_tol");
    assert_eq!(field_of(j(0.0), serde_json::json!(200)), "options.rel_tol");
    assert_eq!(
        field_of(j(1e-3), serde_json::json!(u64::MAX)),
        "options.max_evaluations"
    );
    assert_eq!(
        field_of(j(1e-3), serde_json::json!(0)),
        "options.max_evaluations"
    );
    let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    v["options"] = serde_json::json!({
        "rel_tol": SearchOptions::MIN_REL_TOL,
        "max_evaluations": SearchOptions::MAX_EVALUATIONS,
    });
    assert!(solve_instance_json(&v.to_string()).is_ok());
}
