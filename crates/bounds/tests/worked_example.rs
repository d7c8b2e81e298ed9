//! The worked example of the crate documentation, checked against an
//! independent computation (harmonic numbers, closed-form latency limits).
#![allow(clippy::unwrap_used)]

use approx::assert_relative_eq;
use wflora_bounds::{
    BoundError, BoundModel, BoundParams, EnergyProfile, OfflineStage, RatioGrid, candidate_ranks,
    fit_covariance, rank_table, select_rank,
};

const BUDGET_S: f64 = 0.6;

fn latency(r: usize, rho: f64) -> f64 {
    0.1 + 0.01 * r as f64 + 0.05 * rho * r as f64
}

fn params() -> BoundParams {
    BoundParams {
        objective_gap: std::f64::consts::LN_10,
        learning_rate: 5e-3,
        local_steps: 10,
        rounds: 40,
        smoothness: 1.0,
        gradient_variance: 3.2,
        batch_size: 32,
        structural_weight: 1.0,
        covariance_weight: 1.0,
        sparsification_weight: 0.01,
    }
}

fn model() -> BoundModel {
    let spectrum: Vec<f64> = (1..=64).map(|i| (i as f64).powf(-0.5)).collect();
    let structural = EnergyProfile::from_singular_values(&spectrum).unwrap();
    let covariance = fit_covariance(&[2, 8, 32], &[0.01, 0.04, 0.16]).unwrap();
    BoundModel::new(params(), structural, covariance.model).unwrap()
}

/// `H_n`, the n-th harmonic number.
fn harmonic(n: usize) -> f64 {
    (1..=n).map(|i| 1.0 / i as f64).sum()
}

/// The bound by hand: Γ(r) = (H_64 − H_r)/H_64, C(r) = 0.005 r.
fn hand_bound(r: usize, rho: f64) -> f64 {
    let opt = 2.0 * std::f64::consts::LN_10 / (5e-3 * 10.0 * 40.0);
    let noise = 5e-3 * 1.0 * 3.2 / 32.0;
    let gamma = (harmonic(64) - harmonic(r.min(64))) / harmonic(64);
    opt + noise + gamma + 0.005 * r as f64 + 0.01 * (1.0 - rho) / (rho * rho)
}

#[test]
fn worked_example_table_and_interior_optimum() {
    let ranks = candidate_ranks(64).unwrap();
    assert_eq!(ranks, vec![1, 2, 4, 8, 16, 32, 64]);
    let stage = OfflineStage {
        budget_s: BUDGET_S,
        ratio_grid: RatioGrid::Components,
    };
    let sel = select_rank(&model(), &stage, &ranks, &latency).unwrap();
    // m <= 10 − 0.2 r by hand: 1, 2, 4, 8 keep everything; 16 → 6; 32 → 3; 64 none.
    let want_m = [Some(1), Some(2), Some(4), Some(8), Some(6), Some(3), None];
    for (row, m) in sel.table.rows.iter().zip(want_m) {
        assert_eq!(
            row.choice.and_then(|c| c.kept_components),
            m,
            "rank {}",
            row.rank
        );
        if let Some(m) = m {
            let rho = m as f64 / row.rank as f64;
            assert_relative_eq!(
                row.total().unwrap(),
                hand_bound(row.rank, rho),
                max_relative = 1e-12
            );
        }
    }
    let last = sel.table.rows.last().unwrap();
    assert!(!last.feasible());
    assert_relative_eq!(last.least_latency_s, 0.79, max_relative = 1e-12);
    assert_eq!(last.gamma, 0.0);
    // The documented numbers.
    assert_eq!((sel.rank, sel.kept_components), (16, Some(6)));
    assert_relative_eq!(sel.terms.total, 2.714881, epsilon = 5e-7);
    assert_relative_eq!(sel.terms.sparsification, 0.044444, epsilon = 5e-7);
    // U-shape: strictly decreasing up to r*, increasing after it.
    let totals: Vec<f64> = sel.table.rows.iter().filter_map(|r| r.total()).collect();
    assert!(totals[..5].windows(2).all(|w| w[1] < w[0]));
    assert!(totals[4] < totals[5]);
}

#[test]
fn without_the_budget_the_optimum_moves_to_32() {
    let stage = OfflineStage {
        budget_s: 1e6,
        ratio_grid: RatioGrid::Components,
    };
    let sel = select_rank(&model(), &stage, &candidate_ranks(64).unwrap(), &latency).unwrap();
    assert_eq!((sel.rank, sel.ratio), (32, 1.0));
    assert_relative_eq!(sel.terms.total, hand_bound(32, 1.0), max_relative = 1e-12);
    assert_relative_eq!(sel.terms.total, 2.607565, epsilon = 5e-7);
}

#[test]
fn continuous_grid_matches_the_closed_form_limit() {
    // ρ_max(r) = (0.5 − 0.01 r)/(0.05 r), capped at 1.
    let tol = 1e-9;
    let stage = OfflineStage {
        budget_s: BUDGET_S,
        ratio_grid: RatioGrid::Continuous {
            min_ratio: 1e-3,
            tolerance: tol,
        },
    };
    let table = rank_table(&model(), &stage, &candidate_ranks(64).unwrap(), &latency).unwrap();
    for row in &table.rows {
        let limit = ((0.5 - 0.01 * row.rank as f64) / (0.05 * row.rank as f64)).min(1.0);
        match row.choice {
            Some(c) => {
                assert!(
                    c.ratio <= limit + 1e-12 && c.ratio >= limit - tol,
                    "rank {}",
                    row.rank
                );
                assert!(c.latency_s <= BUDGET_S);
                assert_eq!(c.kept_components, None);
            }
            None => assert!(limit < 1e-3, "rank {}", row.rank),
        }
    }
}

#[test]
fn impossible_budget_is_reported_with_the_least_latency() {
    // Least latency by hand: r = 1, ρ = 1 → 0.1 + 0.01 + 0.05 = 0.16 s.
    let stage = OfflineStage {
        budget_s: 0.15,
        ratio_grid: RatioGrid::Components,
    };
    let err = select_rank(&model(), &stage, &candidate_ranks(64).unwrap(), &latency).unwrap_err();
    match err {
        BoundError::NoFeasibleRank {
            budget_s,
            least_latency_s,
            rank,
            ratio,
        } => {
            assert_eq!(budget_s, 0.15);
            assert_relative_eq!(least_latency_s, 0.16, max_relative = 1e-12);
            assert_eq!((rank, ratio), (1, 1.0));
        }
        other => panic!("expected NoFeasibleRank, got {other:?}"),
    }
}

#[test]
fn csv_has_one_line_per_rank_and_blank_infeasible_fields() {
    let stage = OfflineStage {
        budget_s: BUDGET_S,
        ratio_grid: RatioGrid::Components,
    };
    let table = rank_table(&model(), &stage, &candidate_ranks(64).unwrap(), &latency).unwrap();
    let csv = table.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 8);
    let width = lines[0].split(',').count();
    assert!(lines.iter().all(|l| l.split(',').count() == width));
    assert!(lines[5].starts_with("16,1,0.375,6,"));
    assert!(lines[7].starts_with("64,0,,,,0.7"));
    let json = serde_json::to_string(&table).unwrap();
    let back: wflora_bounds::RankTable = serde_json::from_str(&json).unwrap();
    assert_eq!(back.rows.len(), table.rows.len());
    for (a, b) in back.rows.iter().zip(&table.rows) {
        assert_eq!((a.rank, a.feasible()), (b.rank, b.feasible()));
        assert_relative_eq!(
            a.total().unwrap_or(0.0),
            b.total().unwrap_or(0.0),
            max_relative = 1e-15
        );
    }
}
