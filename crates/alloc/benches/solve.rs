//! Per-round solve time of the drift-plus-penalty allocation, K clients ×
//! 8 levels, hull (production) and MILP (reference) paths.
//!
//! Run: `cargo bench -p wflora-alloc --bench solve`

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_alloc::{
    ClientRound, Level, Policy, RatioMode, RoundProblem, SearchOptions, Solver, solve_round,
};
use wflora_channel::{ChannelConfig, Network, Uplink};

/// K clients of a default cell, round 0's CSI, rank 8 with 768+768-wide
/// adapters (32-bit values + 3 index bits per component), importances drawn
/// at random (penalty = dropped share of importance energy).
fn problem(k: usize, seed: u64) -> RoundProblem<Uplink> {
    let net = Network::new(ChannelConfig::default(), k, seed).unwrap_or_else(|e| panic!("{e}"));
    let links = net.uplinks(0);
    let mut rng = StdRng::seed_from_u64(seed);
    let clients = (0..k)
        .map(|i| {
            let mut s: Vec<f64> = (0..8).map(|_| rng.random_range(0.1..1.0f64)).collect();
            s.sort_by(|a, b| b.total_cmp(a));
            let total: f64 = s.iter().map(|x| x * x).sum();
            let levels = (1..=8u32)
                .map(|m| Level {
                    components: m,
                    bits: f64::from(m) * (1536.0 * 32.0 + 3.0) * 12.0,
                    penalty: s[m as usize..].iter().map(|x| x * x).sum::<f64>() / total,
                })
                .collect();
            ClientRound {
                link: links[i],
                compute_latency_s: 3.2e8 / net.sites()[i].cpu_freq_hz,
                weight: 1.0 / k as f64,
                levels,
            }
        })
        .collect();
    // Q = 20/K: a per-round price of time that keeps the trade-off open
    // (with K clients sharing the band, τ grows about linearly in K).
    RoundProblem {
        clients,
        v: 1.0,
        queue: 20.0 / k as f64,
    }
}

fn time(label: &str, k: usize, policy: Policy, reps: usize) {
    let p = problem(k, 7);
    let opts = SearchOptions::default();
    let mut ok = solve_round(&p, &policy, &opts); // warm-up
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        ok = solve_round(&p, &policy, &opts);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    match ok {
        Ok(a) => println!(
            "{label:<16} {k:>6} {:>11.3} {:>11.3} {:>6} {:>12.6} {:>10.2e}",
            times[times.len() / 2],
            times[0],
            a.evaluations,
            a.objective,
            a.objective - a.lower_bound
        ),
        Err(e) => println!("{label:<16} {k:>6} failed: {e}"),
    }
}

fn main() {
    println!(
        "{:<16} {:>6} {:>11} {:>11} {:>6} {:>12} {:>10}",
        "path", "K", "median ms", "min ms", "evals", "objective", "cert. gap"
    );
    let hull = Policy::DriftPlusPenalty {
        mode: RatioMode::PerClient,
        solver: Solver::Hull,
    };
    let milp = Policy::DriftPlusPenalty {
        mode: RatioMode::PerClient,
        solver: Solver::Milp,
    };
    let hull_tied = Policy::DriftPlusPenalty {
        mode: RatioMode::Tied,
        solver: Solver::Hull,
    };
    for &k in &[10usize, 100, 1000] {
        time("hull", k, hull, if k >= 1000 { 11 } else { 31 });
        time("hull tied", k, hull_tied, if k >= 1000 { 5 } else { 11 });
    }
    for &k in &[10usize, 100] {
        time("milp", k, milp, 3);
    }
    if std::env::args().any(|a| a == "--milp-1000") {
        time("milp", 1000, milp, 1);
    }
}
