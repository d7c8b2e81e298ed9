//! TSFA's online stage for a handful of clients: solve the drift-plus-penalty
//! allocation round by round and watch the virtual queue price latency.
//!
//! Five clients sit in a seeded cell (`wflora_channel::Network`: placement,
//! path loss, Rayleigh fading redrawn every round). Each offers the payload
//! levels `m ∈ {1, 2, 4, 8}` kept rank components of a rank-8 LoRA adapter
//! on 24 matrices of size 384×384, with bits `S(m)` counted as SOFT sends
//! them and a sparsification penalty `D_k(m)`, the share of the client's
//! component energy left out (its importances decay at its own rate). For
//! each round the program builds a [`RoundProblem`], solves it with the
//! default policy (drift-plus-penalty, per-client ratios, hull solver) and
//! prints per client the kept components, the bandwidth share and the
//! finish time, then the round latency against the budget `T̄` and the queue
//! update `Q ← max(Q + τ − T̄, 0)`.
//!
//! ```sh
//! cargo run -p wflora-alloc --example one_round -- [BUDGET_S] [ROUNDS] [SEED]
//! ```
//! (defaults: `T̄ = 0.25` s, 6 rounds, seed 3). With an empty queue the first
//! round buys the lowest penalty whatever the latency; once the queue holds a
//! backlog, later rounds trade kept components for time.

use wflora_alloc::{
    ClientRound, Level, Policy, RoundProblem, SearchOptions, VirtualQueue, solve_round,
};
use wflora_channel::{ChannelConfig, ComputeLoad, Network, units::linear_to_db};

/// Number of clients.
const CLIENTS: usize = 5;
/// LoRA rank.
const RANK: u32 = 8;
/// Adapted matrices in the model (12 blocks × query and value).
const MATRICES: u32 = 24;
/// Rows `d` and columns `l` of each adapted matrix.
const D: u32 = 384;
/// See [`D`].
const L: u32 = 384;
/// Penalty weight `V` of drift-plus-penalty.
const V: f64 = 1.0;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let budget_s: f64 = parse(args.first(), "BUDGET_S", 0.25)?;
    let rounds: u64 = parse(args.get(1), "ROUNDS", 6)?;
    let seed: u64 = parse(args.get(2), "SEED", 3)?;

    let net = Network::new(ChannelConfig::default(), CLIENTS, seed)?;
    let load = ComputeLoad {
        local_steps: 10,
        batch_size: 32,
        cycles_per_sample: 2e5,
    };
    let compute_s: Vec<f64> = net
        .sites()
        .iter()
        .map(|s| load.latency_s(s.cpu_freq_hz))
        .collect::<Result<_, _>>()?;
    // Client k's importances decay as decay_k^i: a faster decay loses less
    // energy when only the top components are kept.
    let decay: Vec<f64> = (0..CLIENTS).map(|k| 0.55 + 0.08 * k as f64).collect();
    let menus: Vec<Vec<Level>> = decay.iter().map(|&q| levels(q)).collect();

    println!(
        "{CLIENTS} clients, rank {RANK}, {MATRICES} matrices of {D}×{L}; V = {V}, budget T̄ = {budget_s} s"
    );
    for (k, site) in net.sites().iter().enumerate() {
        let menu: Vec<String> = menus[k]
            .iter()
            .map(|l| {
                format!(
                    "m={} {:.2} Mbit D={:.3}",
                    l.components,
                    l.bits / 1e6,
                    l.penalty
                )
            })
            .collect();
        println!(
            "  client {k}: {:5.0} m, path gain {:6.1} dB, compute {:.3} s; levels {}",
            site.distance_m,
            linear_to_db(site.path_gain),
            compute_s[k],
            menu.join(", ")
        );
    }

    let mut queue = VirtualQueue::new(budget_s)?;
    let weight = 1.0 / CLIENTS as f64;
    for round in 0..rounds {
        let links = net.uplinks(round);
        let clients = links
            .iter()
            .zip(&compute_s)
            .zip(&menus)
            .map(|((&link, &t_cmp), menu)| ClientRound {
                link,
                compute_latency_s: t_cmp,
                weight,
                levels: menu.clone(),
            })
            .collect();
        let problem = RoundProblem {
            clients,
            v: V,
            queue: queue.backlog_s,
        };
        let a = solve_round(&problem, &Policy::default(), &SearchOptions::default())?;
        println!("\nround {round} (Q = {:.4} s)", queue.backlog_s);
        for k in 0..CLIENTS {
            let c = &problem.clients[k];
            let bits = a.levels[k].map_or(0.0, |j| c.levels[j].bits);
            let finish = if a.components[k] == 0 {
                "sits out".to_string()
            } else {
                let rate = c.link.rate_bps(a.shares[k]);
                format!("finishes at {:.3} s", c.compute_latency_s + bits / rate)
            };
            println!(
                "  client {k}: fading {:5.2}, keeps m = {} of {RANK}, share β = {:.3}, {finish}",
                net.fading(k, round),
                a.components[k],
                a.shares[k],
            );
        }
        let before = queue.backlog_s;
        let after = queue.update(a.tau_s)?;
        println!(
            "  Σβ = {:.4}; latency τ = {:.3} s vs budget {budget_s} s ({}); penalty Σp·D = {:.4}; \
             objective {:.4} (lower bound {:.4})",
            a.shares.iter().sum::<f64>(),
            a.tau_s,
            if a.tau_s <= budget_s {
                "within"
            } else {
                "over"
            },
            a.penalty,
            a.objective,
            a.lower_bound,
        );
        println!(
            "  queue: Q = max({before:.4} + {:.4} − {budget_s}, 0) = {after:.4} s",
            a.tau_s
        );
    }
    Ok(())
}

/// The payload levels `m ∈ {1, 2, 4, 8}` of a client whose component
/// importances decay as `q^i`: SOFT's bits for `m` components on every
/// matrix (`m(d+l)` 32-bit values and `m⌈log2 r⌉` index bits, none at
/// `m = r`) and the dropped-energy share `D(m) = Σ_{i≥m} s_i² / Σ_i s_i²`
/// (what `wflora_soft::dropped_energy` computes from a client's importances).
fn levels(q: f64) -> Vec<Level> {
    let energy: Vec<f64> = (0..RANK).map(|i| q.powf(2.0 * f64::from(i))).collect();
    let total: f64 = energy.iter().sum();
    let index_bits = u32::BITS - (RANK - 1).leading_zeros();
    [1u32, 2, 4, 8]
        .into_iter()
        .map(|m| {
            let per_matrix = m * (D + L) * 32 + if m < RANK { m * index_bits } else { 0 };
            let dropped = energy[m as usize..].iter().fold(0.0, |acc, e| acc + e);
            Level {
                components: m,
                bits: f64::from(MATRICES) * f64::from(per_matrix),
                penalty: dropped / total,
            }
        })
        .collect()
}

/// Parses an optional positional argument, or returns the default.
fn parse<T: std::str::FromStr>(arg: Option<&String>, name: &str, default: T) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    match arg {
        Some(s) => s
            .parse()
            .map_err(|e| format!("{name}: cannot parse {s:?}: {e}")),
        None => Ok(default),
    }
}
