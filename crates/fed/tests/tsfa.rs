//! TSFA in the engine (docs/method.md §4–§5): feasibility of every round's
//! allocation, the queue recursion, the long-run latency against `T̄`, the
//! allocator's `V` statement on engine-built rounds, resume with the queue,
//! `T_ILoRA` by hand, and the offline plan against brute force.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use wflora_alloc::{RatioMode, SearchOptions, solve_round};
use wflora_bounds::{BoundParams, RatioGrid};
use wflora_fed::tsfa::update_spectrum;
use wflora_fed::{
    AllocationSettings, OfflineSettings, PenaltyKind, RunConfig, Simulation, Task, plan_offline,
    run_to_end, run_until,
};

fn dpp(v: f64, budget_rel: f64, mode: RatioMode, penalty: PenaltyKind) -> AllocationSettings {
    AllocationSettings::DriftPlusPenalty {
        v,
        budget_rel,
        mode,
        m_min: 1,
        penalty,
        budget_rank: None,
    }
}

mod common;

/// The small run with SOFT, all 4 clients every round, evaluated at the end.
fn small(allocation: AllocationSettings) -> RunConfig {
    let mut c = common::small_base(scratch("cache"));
    c.federation.clients_per_round = 4;
    c.federation.eval_every = 4;
    c.wireless.allocation = allocation;
    c
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("tsfa", name)
}

fn task() -> Arc<Task> {
    common::task("tsfa")
}

#[test]
fn tsfa_settings_parse_from_toml_and_bad_values_name_the_field() {
    let table = r#"
        kind = "drift_plus_penalty"
        v = 0.5
        budget_rel = 0.6
        mode = "tied"
        m_min = 2
        penalty = "bound_factor"
    "#;
    let a: AllocationSettings = toml::from_str(table).unwrap();
    assert_eq!(
        a,
        AllocationSettings::DriftPlusPenalty {
            v: 0.5,
            budget_rel: 0.6,
            mode: RatioMode::Tied,
            m_min: 2,
            penalty: PenaltyKind::BoundFactor,
            budget_rank: None,
        }
    );
    // Defaults: per-client mode, dropped-energy penalty.
    let m: AllocationSettings =
        toml::from_str("kind = \"myopic\"\nbudget_rel = 0.5\nm_min = 1\nbudget_rank = 16").unwrap();
    assert_eq!(
        m,
        AllocationSettings::Myopic {
            budget_rel: 0.5,
            mode: RatioMode::PerClient,
            m_min: 1,
            budget_rank: Some(16),
        }
    );
    let unknown = toml::from_str::<AllocationSettings>(
        "kind = \"myopic\"\nbudget_rel = 0.5\nm_min = 1\nvv = 2",
    );
    assert!(unknown.unwrap_err().to_string().contains("vv"));

    // A whole run through TOML, and validation naming the field.
    let cfg = small(dpp(
        1.0,
        0.5,
        RatioMode::PerClient,
        PenaltyKind::DroppedEnergy,
    ));
    let text = toml::to_string(&cfg).unwrap();
    assert_eq!(RunConfig::from_toml(&text, "run.toml").unwrap(), cfg);
    for (alloc, field) in [
        (
            dpp(-1.0, 0.5, RatioMode::PerClient, PenaltyKind::DroppedEnergy),
            "wireless.allocation.v",
        ),
        (
            dpp(1.0, 0.0, RatioMode::PerClient, PenaltyKind::DroppedEnergy),
            "wireless.allocation.budget_rel",
        ),
        (
            AllocationSettings::Myopic {
                budget_rel: 0.5,
                mode: RatioMode::PerClient,
                m_min: 9,
                budget_rank: None,
            },
            "wireless.allocation.m_min",
        ),
    ] {
        let err = small(alloc).validate().unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
    let mut ilora = small(dpp(
        1.0,
        0.5,
        RatioMode::PerClient,
        PenaltyKind::DroppedEnergy,
    ));
    ilora.compression.method = wflora_soft::MethodKind::ILora;
    assert!(
        ilora
            .validate()
            .unwrap_err()
            .to_string()
            .contains("wireless.allocation.kind")
    );
}

#[test]
fn t_ilora_matches_a_hand_computation_for_one_client() {
    let mut cfg = small(dpp(
        1.0,
        0.5,
        RatioMode::PerClient,
        PenaltyKind::DroppedEnergy,
    ));
    cfg.federation.clients = 1;
    cfg.federation.clients_per_round = 1;
    let sim = Simulation::new(cfg.clone(), task()).unwrap();
    let site = sim.network().sites()[0];
    let ch = &cfg.wireless.channel;
    // docs/method.md §3 by hand: PL = 128.1 + 37.6·log10(d_km) dB, |h|² = 1 (mean
    // channel), the whole band (K = 1), R = W·log2(1 + P·g/(W·N0)).
    let pl_db = 128.1 + 37.6 * (site.distance_m / 1000.0).log10();
    let gain = 10f64.powf(-pl_db / 10.0);
    let p_w = 10f64.powf(ch.tx_power_dbm / 10.0) / 1000.0;
    let n0_w = 10f64.powf(ch.noise_psd_dbm_per_hz / 10.0) / 1000.0;
    let rate = ch.bandwidth_hz * (1.0 + p_w * gain / (ch.bandwidth_hz * n0_w)).log2();
    // ILoRA: tiny ViT, 4 blocks × (q, v), 64×64, rank 8, no index bits; head 5×64 + 5.
    let bits = (8.0 * 8.0 * (64.0 + 64.0) + (5.0 * 64.0 + 5.0)) * 32.0;
    // T_cmp = E·batch·FLOPs/(flops_per_cycle·f).
    let flops = task().vit.flops_per_sample(&cfg.model.fine_tune_mode(), 5);
    let t_cmp = 2.0 * 32.0 * flops / (16.0 * site.cpu_freq_hz);
    let want = t_cmp + bits / rate;
    let got = sim.ilora_latency_s().unwrap();
    assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
    assert!((sim.budget_s().unwrap() - 0.5 * want).abs() <= 1e-9 * want);
    assert_eq!(sim.queue_s(), Some(0.0));
    // The fixed-ratio policies have no budget.
    let plain = Simulation::new(small(AllocationSettings::Equalising), task()).unwrap();
    assert_eq!(plain.budget_s(), None);
}

/// Checks one round: shares, finish times, levels, and the queue recursion.
fn check_round(
    sim: &Simulation,
    rec: &wflora_fed::RoundRecord,
    q_before: f64,
    m_min: u32,
    tied: bool,
) {
    let la = sim.last_allocation().unwrap();
    let a = &la.allocation;
    assert_eq!(la.queue_before_s, q_before);
    let sum: f64 = a.shares.iter().sum();
    assert!(sum <= 1.0 + 1e-9, "Σβ = {sum}");
    let r = sim.config().model.rank as u32;
    let mut latency = 0.0f64;
    for (i, &m) in a.components.iter().enumerate() {
        match la.finish_s[i] {
            Some(f) => {
                assert!((m_min..=r).contains(&m));
                assert!(
                    f <= a.tau_s * (1.0 + 1e-9),
                    "client {i} finishes at {f} > τ = {}",
                    a.tau_s
                );
                latency = latency.max(f);
            }
            None => {
                assert_eq!(m, 0);
                assert_eq!(a.shares[i], 0.0);
            }
        }
    }
    if tied {
        let kept: Vec<u32> = a.components.iter().copied().filter(|&m| m > 0).collect();
        assert!(kept.windows(2).all(|w| w[0] == w[1]), "{kept:?}");
    }
    assert_eq!(rec.latency_s, latency);
    assert_eq!(rec.participants, a.participants());
    // Q^{t+1} = max(Q^t + T^t − T̄, 0), by hand.
    if let Some(q) = sim.queue_s() {
        let want = (q_before + rec.latency_s - sim.budget_s().unwrap()).max(0.0);
        assert_eq!(q, want);
        assert_eq!(rec.queue_s, want);
    }
}

#[test]
fn every_round_is_feasible_and_the_queue_follows_its_recursion() {
    let settings = [
        (
            dpp(1.0, 0.5, RatioMode::PerClient, PenaltyKind::DroppedEnergy),
            false,
        ),
        (
            dpp(1.0, 0.5, RatioMode::Tied, PenaltyKind::BoundFactor),
            true,
        ),
    ];
    for (alloc, tied) in settings {
        let mut sim = Simulation::new(small(alloc), task()).unwrap();
        let mut grew = false;
        while !sim.finished() {
            let q = sim.queue_s().unwrap();
            let rec = sim.step().unwrap();
            check_round(&sim, &rec, q, 1, tied);
            grew |= rec.queue_s > 0.0;
        }
        assert!(grew, "T̄ = 0.5·T_ILoRA should build a queue");
    }
    // Myopic: every round meets T̄ (no queue).
    let myopic = AllocationSettings::Myopic {
        budget_rel: 0.5,
        mode: RatioMode::PerClient,
        m_min: 1,
        budget_rank: None,
    };
    let mut sim = Simulation::new(small(myopic), task()).unwrap();
    let t_bar = sim.budget_s().unwrap();
    for _ in 0..2 {
        let rec = sim.step().unwrap();
        check_round(&sim, &rec, 0.0, 1, false);
        assert!(
            rec.latency_s <= t_bar * (1.0 + 1e-9),
            "{} > {t_bar}",
            rec.latency_s
        );
        assert_eq!(rec.queue_s, 0.0);
    }
}

#[test]
fn running_average_latency_ends_near_the_budget() {
    // With the tiny model compute is most of T_ILoRA, so budgets much below
    // 0.8·T_ILoRA cannot be met by all clients at once.
    let mut cfg = small(dpp(
        1e-3,
        0.8,
        RatioMode::PerClient,
        PenaltyKind::DroppedEnergy,
    ));
    cfg.federation.rounds = 40;
    cfg.federation.eval_every = 40;
    cfg.local.steps = 1;
    cfg.local.batch_size = 16;
    let mut sim = Simulation::new(cfg, task()).unwrap();
    let t_bar = sim.budget_s().unwrap();
    let mut last = None;
    while !sim.finished() {
        last = Some(sim.step().unwrap());
    }
    let last = last.unwrap();
    // Exact consequence of the recursion: (1/T)·Σ T^t <= T̄ + Q^T/T.
    assert!(last.mean_latency_s <= t_bar + last.queue_s / 40.0 + 1e-12);
    // Tolerance (ours): within 10% of T̄ after 40 rounds (V is small against
    // the latency scale, so the queue prices time within a few rounds).
    assert!(
        last.mean_latency_s <= 1.1 * t_bar,
        "mean latency {} vs T̄ {t_bar} (queue {})",
        last.mean_latency_s,
        last.queue_s
    );
}

#[test]
fn larger_v_gives_no_larger_penalty_on_an_engine_round() {
    // What the allocator guarantees (docs/alloc-instance.md): for one round's
    // problem, a larger V never gives a larger penalty, up to the certified
    // gaps: P(V2) <= P(V1) + (ε1 + ε2)/(V2 − V1).
    let mut sim = Simulation::new(
        small(dpp(
            1.0,
            0.5,
            RatioMode::PerClient,
            PenaltyKind::DroppedEnergy,
        )),
        task(),
    )
    .unwrap();
    sim.step().unwrap();
    sim.step().unwrap();
    let (mut problem, policy) = sim.next_round_problem().unwrap();
    assert!(problem.queue > 0.0, "a queue is needed for V to matter");
    let opts = SearchOptions::default();
    let mut last: Option<(f64, wflora_alloc::Allocation)> = None;
    for v in [0.01, 0.1, 1.0, 10.0] {
        problem.v = v;
        let a = solve_round(&problem, &policy, &opts).unwrap();
        if let Some((v1, a1)) = &last {
            let slack = (a1.objective - a1.lower_bound + a.objective - a.lower_bound) / (v - v1);
            assert!(
                a.penalty <= a1.penalty + slack + 1e-12,
                "V {v1} → {v}: {} → {}",
                a1.penalty,
                a.penalty
            );
        }
        last = Some((v, a));
    }
}

#[test]
fn killed_and_resumed_tsfa_run_is_bit_identical() {
    let cfg = small(dpp(
        0.5,
        0.5,
        RatioMode::PerClient,
        PenaltyKind::DroppedEnergy,
    ));
    let a = scratch("whole");
    let b = scratch("killed");
    let mut sim = Simulation::new(cfg.clone(), task()).unwrap();
    let whole = run_to_end(&mut sim, &a, false, |_| {}).unwrap();
    assert!(
        whole[..3].iter().any(|r| r.queue_s > 0.0),
        "the queue must be live at the kill"
    );
    let mut first = Simulation::new(cfg.clone(), task()).unwrap();
    run_until(&mut first, &b, false, 2, |_| {}).unwrap();
    drop(first);
    let mut resumed = Simulation::new(cfg, task()).unwrap();
    let rest = run_to_end(&mut resumed, &b, true, |_| {}).unwrap();
    // Bit-identical: the records (the first two read back from
    // metrics.jsonl), the metrics file, the queue and the factors.
    assert_eq!(rest, whole);
    let lines = |d: &PathBuf| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    assert_eq!(lines(&a), lines(&b));
    assert_eq!(
        resumed.queue_s().map(f64::to_bits),
        sim.queue_s().map(f64::to_bits)
    );
    assert_eq!(resumed.global(), sim.global());
}

#[test]
fn offline_plan_picks_the_brute_force_argmin_of_its_table() {
    let base = small(dpp(
        1.0,
        0.5,
        RatioMode::PerClient,
        PenaltyKind::DroppedEnergy,
    ));
    let settings = OfflineSettings {
        candidates: vec![1, 2, 4, 8],
        reference_rank: 8,
        covariance_ranks: vec![2],
        pilot_rounds: 2,
        budget_rel: 0.9,
        budget_rank: None,
        bound: BoundParams {
            sparsification_weight: 0.05,
            ..BoundParams::default()
        },
        ratio_grid: RatioGrid::Components,
    };
    let plan = plan_offline(&base, task(), &settings).unwrap();
    let lat = Simulation::new(base.clone(), task()).unwrap();
    let lat = lat.latency_model().unwrap();
    // Budget: the same T̄ as the online stage of the base configuration.
    let t_bar = 0.9 * lat.ilora_latency_s(8).unwrap();
    assert_eq!(plan.budget_s, t_bar);
    // Brute force over the table: every row's ratio is the largest m/r whose
    // expected latency meets T̄, and r* is the least total (ties: smaller r).
    let mut best: Option<(usize, f64)> = None;
    for row in &plan.selection.table.rows {
        let feasible_m = (1..=row.rank)
            .filter(|&m| {
                lat.expected_latency_s(row.rank, m as f64 / row.rank as f64)
                    .unwrap()
                    <= t_bar
            })
            .max();
        assert_eq!(
            row.choice.and_then(|c| c.kept_components),
            feasible_m,
            "rank {}",
            row.rank
        );
        if let Some(c) = row.choice {
            let gamma = plan.gamma.gamma(row.rank);
            assert_eq!(row.gamma, gamma);
            if best.is_none_or(|(_, t)| c.terms.total < t) {
                best = Some((row.rank, c.terms.total));
            }
        }
    }
    assert_eq!(Some(plan.rank), best.map(|b| b.0));
    // Applied to the TSFA run: rank r*, and the budget of the plan (T̄ is
    // evaluated at the base rank 8, whatever r* is).
    let mut tsfa = base.clone();
    plan.apply(&mut tsfa);
    assert_eq!(tsfa.model.rank, plan.rank);
    let run = Simulation::new(tsfa, task()).unwrap();
    assert_eq!(run.budget_s(), Some(plan.budget_s));
    // Pilots at ranks 2 and 8; C fitted to their mean covariance.
    assert_eq!(
        plan.pilots.iter().map(|p| p.rank).collect::<Vec<_>>(),
        vec![2, 8]
    );
    assert!(
        plan.pilots
            .iter()
            .all(|p| p.mean_covariance > 0.0 && p.records.len() == 2)
    );
    assert_eq!(plan.covariance.points, 2);
    // Γ's spectrum: 8 matrices, Σσ² = ‖B¹A¹ − B⁰A⁰‖_F² (Frobenius identity).
    assert_eq!(plan.reference_spectrum.len(), 8);
    let mut pilot = Simulation::new(wflora_fed::tsfa::pilot_config(&base, 8, 1), task()).unwrap();
    let before = pilot.global().clone();
    pilot.step().unwrap();
    let spectrum = update_spectrum(&before, pilot.global()).unwrap();
    for ((f0, f1), sv) in before
        .factors
        .iter()
        .zip(&pilot.global().factors)
        .zip(&spectrum)
    {
        let w = |f: &wflora_lora::AdapterFactors| f.b.mapv(f64::from).dot(&f.a.mapv(f64::from));
        let frob: f64 = (w(f1) - w(f0)).iter().map(|x| x * x).sum();
        let energy: f64 = sv.iter().map(|x| x * x).sum();
        assert!(
            (frob - energy).abs() <= 1e-4 * frob.max(1e-30),
            "{frob} vs {energy}"
        );
    }
}
