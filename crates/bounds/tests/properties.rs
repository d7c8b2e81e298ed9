//! Property tests: monotonicity of every term, the estimators against
//! independent computations, and the selection against brute force.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal};
use wflora_bounds::estimate::{gradient_variance, secant_ratio, smoothness};
use wflora_bounds::{
    BoundError, BoundModel, BoundParams, CovarianceModel, EnergyProfile, OfflineStage, RatioGrid,
    candidate_ranks, fit_covariance, fit_linear, rank_table, select_rank, sparsification_factor,
};

fn spectrum() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(prop_oneof![Just(0.0), 0.0..10.0_f64, 1e-6..1e-3_f64], 1..40)
}

fn params() -> impl Strategy<Value = BoundParams> {
    (
        (
            0.0..10.0_f64,
            1e-4..1.0_f64,
            1..20_u32,
            1..200_u32,
            0.0..10.0_f64,
        ),
        (
            0.0..10.0_f64,
            1..128_u32,
            0.0..5.0_f64,
            0.0..5.0_f64,
            0.0..1.0_f64,
        ),
    )
        .prop_map(|((gap, lr, e, t, l), (s2, b, cg, cc, cs))| BoundParams {
            objective_gap: gap,
            learning_rate: lr,
            local_steps: e,
            rounds: t,
            smoothness: l,
            gradient_variance: s2,
            batch_size: b,
            structural_weight: cg,
            covariance_weight: cc,
            sparsification_weight: cs,
        })
}

/// Γ by the definition, directly: sort descending, sum the tail.
fn gamma_direct(sv: &[f64], r: usize) -> f64 {
    let mut e: Vec<f64> = sv.iter().map(|s| s * s).collect();
    e.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = e.iter().sum();
    if total == 0.0 {
        0.0
    } else {
        e.iter().skip(r).sum::<f64>() / total
    }
}

/// A latency table with arbitrary (non-monotone) values, a pure function of
/// (seed, r, m): uniform on [0, 2] s, with some +inf.
fn table_latency(seed: u64) -> impl Fn(usize, f64) -> f64 {
    move |r, rho| {
        let m = (rho * r as f64).round() as u64;
        let mut rng = StdRng::seed_from_u64(seed ^ ((r as u64) << 32) ^ m);
        if rng.random_bool(0.05) {
            f64::INFINITY
        } else {
            rng.random_range(0.0..2.0)
        }
    }
}

proptest! {
    // Every case is cheap (microseconds): 1024 cases per property.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn gamma_is_a_nonincreasing_share(sv in spectrum()) {
        let p = EnergyProfile::from_singular_values(&sv).unwrap();
        let nonzero = sv.iter().any(|&s| s > 0.0);
        prop_assert_eq!(p.gamma(0), if nonzero { 1.0 } else { 0.0 });
        prop_assert_eq!(p.gamma(sv.len()), 0.0);
        for r in 0..=sv.len() + 1 {
            let g = p.gamma(r);
            prop_assert!((0.0..=1.0).contains(&g));
            prop_assert!(p.gamma(r + 1) <= g);
            prop_assert!((g - gamma_direct(&sv, r)).abs() <= 1e-12);
        }
    }

    #[test]
    fn pooled_gamma_is_the_energy_weighted_mean(layers in prop::collection::vec(spectrum(), 1..5)) {
        let pooled = EnergyProfile::from_layers(&layers).unwrap();
        let energy: Vec<f64> = layers.iter().map(|l| l.iter().map(|s| s * s).sum()).collect();
        let total: f64 = energy.iter().sum();
        let longest = layers.iter().map(Vec::len).max().unwrap();
        for r in 0..=longest {
            let want = if total == 0.0 {
                0.0
            } else {
                layers.iter().zip(&energy).map(|(l, e)| e * gamma_direct(l, r)).sum::<f64>() / total
            };
            prop_assert!((pooled.gamma(r) - want).abs() <= 1e-12, "r {}: {} vs {}", r, pooled.gamma(r), want);
            prop_assert!(pooled.gamma(r + 1) <= pooled.gamma(r));
        }
    }

    #[test]
    fn sparsification_term_decreases_in_ratio(a in 1e-3..1.0_f64, b in 1e-3..1.0_f64, p in params()) {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        prop_assume!(lo < hi);
        prop_assert!(sparsification_factor(hi).unwrap() < sparsification_factor(lo).unwrap());
        let t_lo = p.terms(1, 0.5, 0.1, lo).unwrap();
        let t_hi = p.terms(1, 0.5, 0.1, hi).unwrap();
        prop_assert!(t_hi.sparsification <= t_lo.sparsification);
        prop_assert!(t_hi.total <= t_lo.total);
        prop_assert_eq!(p.terms(1, 0.5, 0.1, 1.0).unwrap().sparsification, 0.0);
    }

    #[test]
    fn fixed_terms_move_the_right_way(p in params(), k in 1.01..4.0_f64) {
        let base = p.terms(2, 0.3, 0.2, 0.5).unwrap();
        let sum = base.optimisation + base.noise + base.structural + base.covariance + base.sparsification;
        prop_assert!((base.total - sum).abs() <= 1e-12 * sum.max(1.0));
        // 2Δ/(ηET) decreases in η, E and T; ηLσ²/b increases in η, L, σ², decreases in b.
        let more_lr = BoundParams { learning_rate: p.learning_rate * k, ..p }.terms(2, 0.3, 0.2, 0.5).unwrap();
        prop_assert!(more_lr.optimisation <= base.optimisation && more_lr.noise >= base.noise);
        let more_steps = BoundParams { local_steps: p.local_steps + 1, rounds: p.rounds + 1, ..p };
        prop_assert!(more_steps.optimisation_term() <= base.optimisation);
        let noisier = BoundParams { smoothness: p.smoothness * k, gradient_variance: p.gradient_variance * k, ..p };
        prop_assert!(noisier.noise_term() >= base.noise);
        let bigger_batch = BoundParams { batch_size: p.batch_size + 1, ..p };
        prop_assert!(bigger_batch.noise_term() <= base.noise);
        // Weighted terms are linear in their weights and raw values.
        prop_assert!((base.structural - p.structural_weight * 0.3).abs() <= 1e-15);
        prop_assert!((base.covariance - p.covariance_weight * 0.2).abs() <= 1e-15);
    }

    #[test]
    fn structural_term_nonincreasing_and_covariance_nondecreasing_in_rank(
        sv in spectrum(), p in params(), scale in 0.0..1.0_f64, exponent in 0.0..2.0_f64, rho in 0.01..1.0_f64,
    ) {
        let model = BoundModel::new(
            p, EnergyProfile::from_singular_values(&sv).unwrap(),
            CovarianceModel::PowerLaw { scale, exponent },
        ).unwrap();
        for r in 1..50 {
            let (a, b) = (model.evaluate(r, rho).unwrap(), model.evaluate(r + 1, rho).unwrap());
            prop_assert!(b.structural <= a.structural);
            prop_assert!(b.covariance >= a.covariance);
        }
    }

    #[test]
    fn power_law_fit_recovers_noiseless_parameters(
        c in 1e-3..1e3_f64, gamma in -2.0..3.0_f64,
        ranks in prop::collection::btree_set(1..512_usize, 2..8),
    ) {
        let ranks: Vec<usize> = ranks.into_iter().collect();
        let values: Vec<f64> = ranks.iter().map(|&r| c * (r as f64).powf(gamma)).collect();
        let fit = fit_covariance(&ranks, &values).unwrap();
        let CovarianceModel::PowerLaw { scale, exponent } = fit.model else {
            return Err(TestCaseError::fail("expected a power law"));
        };
        prop_assert!((scale / c - 1.0).abs() <= 1e-9, "scale {} vs {}", scale, c);
        prop_assert!((exponent - gamma).abs() <= 1e-9, "exponent {} vs {}", exponent, gamma);
        prop_assert!(fit.rms_log_residual.unwrap() <= 1e-9);
        prop_assert_eq!(fit.fallback, None);
    }

    #[test]
    fn power_law_fit_is_within_six_standard_errors_under_noise(
        c in 1e-3..1e3_f64, gamma in -1.0..2.0_f64, seed in any::<u64>(), noise in 0.01..0.3_f64,
    ) {
        // Log-normal noise: ln C = ln c + γ ln r + ε, ε ~ N(0, noise²), four
        // pilot rounds at each of r = 1, 2, 4, …, 32. OLS standard errors:
        // se(γ) = noise/√Sxx, se(ln c) = noise·√(1/n + x̄²/Sxx).
        let mut rng = StdRng::seed_from_u64(seed);
        let eps = Normal::new(0.0, noise).unwrap();
        let ranks: Vec<usize> = (0..6).flat_map(|k| [1_usize << k; 4]).collect();
        let values: Vec<f64> = ranks
            .iter()
            .map(|&r| c * (r as f64).powf(gamma) * eps.sample(&mut rng).exp())
            .collect();
        let x: Vec<f64> = ranks.iter().map(|&r| (r as f64).ln()).collect();
        let n = x.len() as f64;
        let mx = x.iter().sum::<f64>() / n;
        let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
        let fit = fit_covariance(&ranks, &values).unwrap();
        let CovarianceModel::PowerLaw { scale, exponent } = fit.model else {
            return Err(TestCaseError::fail("expected a power law"));
        };
        prop_assert!((exponent - gamma).abs() <= 6.0 * noise / sxx.sqrt());
        prop_assert!((scale.ln() - c.ln()).abs() <= 6.0 * noise * (1.0 / n + mx * mx / sxx).sqrt());
        // The residual estimates the noise level (√(SSE/n) with n − 2 dof).
        let res = fit.rms_log_residual.unwrap();
        prop_assert!(res > 0.3 * noise && res < 2.0 * noise, "residual {} noise {}", res, noise);
    }

    #[test]
    fn linear_fallback_recovers_lines_through_zero(slope in 1e-3..10.0_f64, r0 in 1..8_usize) {
        // C = slope·(r − r0) is 0 at r0: the power law cannot take it.
        let ranks: Vec<usize> = (r0..r0 + 5).collect();
        let values: Vec<f64> = ranks.iter().map(|&r| slope * (r - r0) as f64).collect();
        let fit = fit_covariance(&ranks, &values).unwrap();
        prop_assert!(fit.fallback.is_some());
        let direct = fit_linear(&ranks, &values).unwrap();
        prop_assert_eq!(fit.model, direct.model);
        for r in r0..r0 + 20 {
            let want = slope * (r - r0) as f64;
            prop_assert!((fit.model.predict(r) - want).abs() <= 1e-9 * want.max(1.0));
        }
    }

    #[test]
    fn per_rank_ratio_is_the_largest_feasible_one(
        seed in any::<u64>(), budget in 0.05..2.0_f64, r_max in 1..64_usize,
    ) {
        let lat = table_latency(seed);
        let model = BoundModel::new(
            BoundParams::default(),
            EnergyProfile::from_singular_values(&[1.0; 8]).unwrap(),
            CovarianceModel::Linear { intercept: 0.0, slope: 0.01 },
        ).unwrap();
        let stage = OfflineStage { budget_s: budget, ratio_grid: RatioGrid::Components };
        let ranks = candidate_ranks(r_max).unwrap();
        let table = rank_table(&model, &stage, &ranks, &lat).unwrap();
        for row in &table.rows {
            let r = row.rank;
            let feasible: Vec<usize> = (1..=r).filter(|&m| lat(r, m as f64 / r as f64) <= budget).collect();
            prop_assert_eq!(row.choice.and_then(|c| c.kept_components), feasible.last().copied());
            if let Some(c) = row.choice {
                prop_assert!(c.latency_s <= budget);
                prop_assert_eq!(c.ratio, c.kept_components.unwrap() as f64 / r as f64);
            }
            if !row.feasible() {
                let least = (1..=r).map(|m| lat(r, m as f64 / r as f64)).fold(f64::INFINITY, f64::min);
                prop_assert_eq!(row.least_latency_s, least);
            }
        }
    }

    #[test]
    fn argmin_equals_brute_force_over_all_pairs(
        seed in any::<u64>(), budget in 0.05..2.0_f64, r_max in 1..64_usize,
        sv in spectrum(), p in params(), scale in 0.0..0.2_f64, exponent in -1.0..2.0_f64,
    ) {
        // Brute force, independent of the per-rank "largest ρ" logic: the
        // minimum of Bound(r, m/r) over every feasible pair (r, m).
        let lat = table_latency(seed);
        let model = BoundModel::new(
            p, EnergyProfile::from_singular_values(&sv).unwrap(),
            CovarianceModel::PowerLaw { scale, exponent },
        ).unwrap();
        let ranks = candidate_ranks(r_max).unwrap();
        let mut best: Option<(f64, usize)> = None;
        let mut least = f64::INFINITY;
        for &r in &ranks {
            for m in 1..=r {
                let rho = m as f64 / r as f64;
                let t = lat(r, rho);
                least = least.min(t);
                if t <= budget {
                    let total = model.evaluate(r, rho).unwrap().total;
                    if best.is_none_or(|(b, br)| total < b || (total == b && r < br)) {
                        best = Some((total, r));
                    }
                }
            }
        }
        let stage = OfflineStage { budget_s: budget, ratio_grid: RatioGrid::Components };
        match (select_rank(&model, &stage, &ranks, &lat), best) {
            (Ok(sel), Some((total, r))) => {
                prop_assert_eq!(sel.terms.total, total);
                prop_assert_eq!(sel.rank, r);
                prop_assert!(sel.latency_s <= budget);
            }
            (Err(BoundError::NoFeasibleRank { least_latency_s, .. }), None) => {
                prop_assert_eq!(least_latency_s, least);
            }
            (got, want) => return Err(TestCaseError::fail(format!("{got:?} vs brute force {want:?}"))),
        }
    }

    #[test]
    fn continuous_grid_returns_only_verified_ratios(
        seed in any::<u64>(), budget in 0.05..2.0_f64, r_max in 1..64_usize,
        min_ratio in 1e-3..0.5_f64, tolerance in 1e-6..1e-2_f64,
    ) {
        // A non-monotone latency, continuous in ρ: the answer must still be
        // feasible, in [min_ratio, 1].
        let mut rng = StdRng::seed_from_u64(seed);
        let (a, w, ph) = (rng.random_range(0.0..1.0), rng.random_range(1.0..30.0), rng.random_range(0.0..6.0));
        let lat = move |r: usize, rho: f64| a + 0.01 * r as f64 + 0.5 * (w * rho + ph).sin().abs() * rho;
        let model = BoundModel::new(
            BoundParams::default(),
            EnergyProfile::from_singular_values(&[1.0, 0.5]).unwrap(),
            CovarianceModel::Linear { intercept: 0.0, slope: 0.0 },
        ).unwrap();
        let stage = OfflineStage { budget_s: budget, ratio_grid: RatioGrid::Continuous { min_ratio, tolerance } };
        let table = rank_table(&model, &stage, &candidate_ranks(r_max).unwrap(), &lat).unwrap();
        for row in &table.rows {
            match row.choice {
                Some(c) => {
                    prop_assert!(c.ratio >= min_ratio && c.ratio <= 1.0);
                    prop_assert_eq!(c.latency_s, lat(row.rank, c.ratio));
                    prop_assert!(c.latency_s <= budget);
                }
                None => prop_assert!(lat(row.rank, 1.0) > budget && lat(row.rank, min_ratio) > budget),
            }
        }
    }

    #[test]
    fn continuous_grid_finds_the_limit_of_a_monotone_latency(
        a in 0.0..0.5_f64, k in 0.01..1.0_f64, budget in 0.05..2.0_f64, r in 1..64_usize,
    ) {
        let lat = move |r: usize, rho: f64| a + k * rho * r as f64;
        let limit = (budget - a) / (k * r as f64);
        let model = BoundModel::new(
            BoundParams::default(),
            EnergyProfile::from_singular_values(&[1.0]).unwrap(),
            CovarianceModel::Linear { intercept: 0.0, slope: 0.0 },
        ).unwrap();
        let tol = 1e-8;
        let stage = OfflineStage { budget_s: budget, ratio_grid: RatioGrid::Continuous { min_ratio: 1e-4, tolerance: tol } };
        let table = rank_table(&model, &stage, &[r], &lat).unwrap();
        match table.rows[0].choice {
            Some(c) if limit >= 1.0 => prop_assert_eq!(c.ratio, 1.0),
            Some(c) => prop_assert!(c.ratio <= limit + 1e-12 && c.ratio >= limit - tol, "{} vs {}", c.ratio, limit),
            None => prop_assert!(limit < 1e-4),
        }
    }

    #[test]
    fn gradient_variance_matches_the_moment_formula(
        seed in any::<u64>(), n in 2..20_usize, dim in 1..30_usize, b in 1..64_u32,
    ) {
        // Independent: Σ_j ‖g_j − ḡ‖² = Σ_j ‖g_j‖² − n‖ḡ‖².
        let mut rng = StdRng::seed_from_u64(seed);
        let g: Vec<Vec<f64>> = (0..n).map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect()).collect();
        let sum_sq: f64 = g.iter().flatten().map(|x| x * x).sum();
        let mean_sq: f64 = (0..dim).map(|i| (g.iter().map(|r| r[i]).sum::<f64>() / n as f64).powi(2)).sum();
        let want = f64::from(b) * (sum_sq - n as f64 * mean_sq) / (n - 1) as f64;
        let got = gradient_variance(&g, b).unwrap();
        prop_assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{} vs {}", got, want);
    }

    #[test]
    fn secants_of_a_quadratic_lie_between_its_extreme_curvatures(
        seed in any::<u64>(), dim in 1..20_usize, pairs in 1..10_usize,
    ) {
        // F(x) = ½ Σ λ_i x_i², ∇F = λ ⊙ x: every secant is in [λ_min, λ_max].
        let mut rng = StdRng::seed_from_u64(seed);
        let lambda: Vec<f64> = (0..dim).map(|_| rng.random_range(0.1..10.0)).collect();
        let (lo, hi) = lambda.iter().fold((f64::INFINITY, 0.0_f64), |(l, h), &v| (l.min(v), h.max(v)));
        let grad = |x: &[f64]| x.iter().zip(&lambda).map(|(x, l)| x * l).collect::<Vec<_>>();
        let mut secants = Vec::new();
        // Rounding: a secant of two nearby points is ill-conditioned. Its
        // relative error is a few ε·(hi/lo)·(‖x₁‖+‖x₂‖)/‖x₁−x₂‖ (found in a
        // stress run: dim 1, two points 1e-5 apart).
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut tol = 1e-12_f64;
        for _ in 0..pairs {
            let x1: Vec<f64> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let x2: Vec<f64> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let gap: Vec<f64> = x1.iter().zip(&x2).map(|(a, b)| a - b).collect();
            tol = tol.max(8.0 * f64::EPSILON * (hi / lo) * (norm(&x1) + norm(&x2)) / norm(&gap));
            secants.push(secant_ratio(&x1, &x2, &grad(&x1), &grad(&x2)).unwrap());
        }
        let l = smoothness(&secants).unwrap();
        prop_assert!(l >= lo * (1.0 - tol) && l <= hi * (1.0 + tol), "{l} not in [{lo}, {hi}] ± {tol:e}");
    }
}

#[test]
fn bad_selection_inputs_are_typed_errors() {
    let model = BoundModel::new(
        BoundParams::default(),
        EnergyProfile::from_singular_values(&[1.0]).unwrap(),
        CovarianceModel::Linear {
            intercept: 0.0,
            slope: 0.0,
        },
    )
    .unwrap();
    let ok = |_: usize, _: f64| 0.1;
    let stage = OfflineStage {
        budget_s: 1.0,
        ratio_grid: RatioGrid::Components,
    };
    let bad_budget = OfflineStage {
        budget_s: 0.0,
        ..stage
    };
    assert!(matches!(
        select_rank(&model, &bad_budget, &[1], &ok),
        Err(BoundError::InvalidValue {
            field: "budget_s",
            ..
        })
    ));
    let bad_grid = OfflineStage {
        budget_s: 1.0,
        ratio_grid: RatioGrid::Continuous {
            min_ratio: 0.0,
            tolerance: 1e-3,
        },
    };
    assert!(matches!(
        select_rank(&model, &bad_grid, &[1], &ok),
        Err(BoundError::InvalidValue {
            field: "min_ratio",
            ..
        })
    ));
    let bad_tol = OfflineStage {
        budget_s: 1.0,
        ratio_grid: RatioGrid::Continuous {
            min_ratio: 0.1,
            tolerance: f64::NAN,
        },
    };
    assert!(matches!(
        select_rank(&model, &bad_tol, &[1], &ok),
        Err(BoundError::InvalidValue {
            field: "tolerance",
            ..
        })
    ));
    assert!(matches!(
        select_rank(&model, &stage, &[], &ok),
        Err(BoundError::TooFew { field: "ranks", .. })
    ));
    assert!(matches!(
        select_rank(&model, &stage, &[2, 2], &ok),
        Err(BoundError::InvalidElement {
            field: "ranks",
            index: 1,
            ..
        })
    ));
    assert!(matches!(
        select_rank(&model, &stage, &[0, 1], &ok),
        Err(BoundError::InvalidElement {
            field: "ranks",
            index: 0,
            ..
        })
    ));
    let nan = |_: usize, _: f64| f64::NAN;
    assert!(matches!(
        select_rank(&model, &stage, &[4], &nan),
        Err(BoundError::InvalidLatency { rank: 4, .. })
    ));
    let neg = |_: usize, _: f64| -1.0;
    assert!(matches!(
        select_rank(&model, &stage, &[4], &neg),
        Err(BoundError::InvalidLatency { .. })
    ));
    // +inf everywhere: every rank infeasible, reported as such.
    let inf = |_: usize, _: f64| f64::INFINITY;
    assert!(matches!(
        select_rank(&model, &stage, &[1, 2], &inf),
        Err(BoundError::NoFeasibleRank { least_latency_s, .. }) if least_latency_s.is_infinite()
    ));
    assert!(matches!(
        candidate_ranks(0),
        Err(BoundError::InvalidValue { field: "r_max", .. })
    ));
    assert_eq!(candidate_ranks(1).unwrap(), vec![1]);
    assert_eq!(candidate_ranks(12).unwrap(), vec![1, 2, 4, 8, 12]);
    // The stage config parses, with the components grid as default.
    let s: OfflineStage = serde_json::from_str(r#"{"budget_s": 0.5}"#).unwrap();
    assert_eq!(
        s,
        OfflineStage {
            budget_s: 0.5,
            ratio_grid: RatioGrid::Components
        }
    );
    let s: OfflineStage = serde_json::from_str(
        r#"{"budget_s": 0.5, "ratio_grid": {"kind": "continuous", "min_ratio": 0.01, "tolerance": 1e-6}}"#,
    )
    .unwrap();
    assert!(matches!(s.ratio_grid, RatioGrid::Continuous { .. }));
}
