//! 2,000 rounds of Rayleigh channels with the virtual queue (docs/method.md §5).
#![allow(clippy::unwrap_used)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_alloc::{
    ClientRound, Level, Policy, RatioMode, RoundProblem, SearchOptions, Solver, VirtualQueue,
    solve_round,
};
use wflora_channel::{ChannelConfig, Network};

/// Ten clients in a default cell, rank 8, payload `m·590k` bits, penalty
/// the dropped share of random importance energy. With `V = 1` and the
/// weights summing to 1, the queue obeys `Q^t ≤ V·Σp_k / min_k T_cmp,k +
/// max_t T^t` (if `Q > V·Σp/T_cmp,min`, any participation costs `Q·τ >
/// V·Σp`, the all-sit-out objective, so the round is empty and `Q` falls;
/// otherwise `Q` rises by at most `T^t`). Drift-plus-penalty then gives
/// `(1/T)Σ T^t ≤ T̄ + Q^T/T`.
#[test]
fn long_run_average_latency_meets_budget() {
    let k = 10;
    let rounds = 2000u64;
    let net = Network::new(ChannelConfig::default(), k, 2024).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let t_cmp: Vec<f64> = net.sites().iter().map(|s| 3.2e8 / s.cpu_freq_hz).collect();
    let budget = 0.45;
    let mut queue = VirtualQueue::new(budget).unwrap();
    let v = 1.0;
    let policy = Policy::DriftPlusPenalty {
        mode: RatioMode::PerClient,
        solver: Solver::Hull,
    };
    let (mut sum_t, mut max_t, mut max_q, mut participants) = (0.0, 0.0f64, 0.0f64, 0usize);
    for t in 0..rounds {
        let links = net.uplinks(t);
        let clients = (0..k)
            .map(|i| {
                let mut s: Vec<f64> = (0..8).map(|_| rng.random_range(0.1..1.0f64)).collect();
                s.sort_by(|a, b| b.total_cmp(a));
                let total: f64 = s.iter().map(|x| x * x).sum();
                let levels = (1..=8u32)
                    .map(|m| Level {
                        components: m,
                        bits: f64::from(m) * 590_000.0,
                        penalty: s[m as usize..].iter().map(|x| x * x).sum::<f64>() / total,
                    })
                    .collect();
                ClientRound {
                    link: links[i],
                    compute_latency_s: t_cmp[i],
                    weight: 0.1,
                    levels,
                }
            })
            .collect();
        let p = RoundProblem {
            clients,
            v,
            queue: queue.backlog_s,
        };
        let a = solve_round(&p, &policy, &SearchOptions::default()).unwrap();
        assert!(a.shares.iter().sum::<f64>() <= 1.0 + 1e-9);
        participants += a.participants();
        sum_t += a.tau_s;
        max_t = max_t.max(a.tau_s);
        queue.update(a.tau_s).unwrap();
        max_q = max_q.max(queue.backlog_s);
    }
    let avg = sum_t / rounds as f64;
    let t_cmp_min = t_cmp.iter().copied().fold(f64::INFINITY, f64::min);
    let bound = v * 1.0 / t_cmp_min + max_t;
    eprintln!(
        "avg latency {avg:.4} s (budget {budget}), max τ {max_t:.3}, max Q {max_q:.3} (bound {bound:.3}), mean participants {:.2}",
        participants as f64 / rounds as f64
    );
    assert!(
        avg <= budget * 1.02,
        "average latency {avg} over budget {budget}"
    );
    assert!(max_q <= bound, "queue {max_q} above its bound {bound}");
    // The budget binds: clients do take part (not a trivially empty schedule).
    assert!(participants as f64 / rounds as f64 > 3.0);
}
