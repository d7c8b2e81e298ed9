//! # wflora-alloc: TSFA's online stage
//!
//! Each round the server knows the clients' channels (CSI), their compute
//! latencies and, per client, a menu of payload levels: `m` kept rank
//! components cost `S_k(m)` bits and leave a sparsification penalty
//! `D_k(m)`. This crate decides who sends what and with which bandwidth
//! share, by Lyapunov drift-plus-penalty (docs/method.md §5): minimise
//! `V·Σ_k p_k D_k(m_k) + Q·τ` subject to every participant finishing by `τ`
//! and `Σ_k β_k ≤ 1`; a client may sit out (penalty 1, no band). The
//! virtual queue [`VirtualQueue`] (`Q ← max(Q + T − T̄, 0)`) turns the
//! long-run latency budget `T̄` into a per-round price of time.
//!
//! **How.** For a fixed `τ` each client's options are its levels with their
//! least shares `β_{k,m}(τ)` (from the [`Link`] trait: any monotone rate
//! model; implemented for `wflora_channel::Uplink`), and the problem is a
//! multiple-choice knapsack, solved either exactly as a MILP (good_lp +
//! microlp, [`Solver::Milp`], the reference) or by the LP relaxation on
//! convex hulls with one fractional client rounded down ([`Solver::Hull`],
//! the fast default). The outer search over `τ` is a branch and bound on
//! intervals that uses the monotonicity of the least shares; every answer
//! carries a certified lower bound on the optimum ([`Allocation::lower_bound`]).
//! The single-stage baselines (myopic, fixed ratio with latency-equalising
//! shares, equal bandwidth) are [`Policy`] variants of the same entry point,
//! [`solve_round`].
//!
//! **What it does not know.** Nothing about LoRA, the training loop, or how
//! the bits and penalties were computed: levels arrive as numbers. Nothing
//! about fading statistics either: a round is one snapshot of CSI. A client
//! that cannot send in finite time is not an error: it sits out and is
//! listed in [`Allocation::unreachable`].
//!
//! ```
//! use wflora_alloc::{ClientRound, Level, Policy, RoundProblem, SearchOptions, solve_round};
//! use wflora_channel::Uplink;
//!
//! let link = |g: f64| Uplink::new(0.2, g, 20e6, 3.98e-21).unwrap();
//! let levels = vec![
//!     Level { components: 2, bits: 2e6, penalty: 0.4 },
//!     Level { components: 8, bits: 8e6, penalty: 0.0 },
//! ];
//! let clients = [1e-10, 1e-12]
//!     .iter()
//!     .map(|&g| ClientRound { link: link(g), compute_latency_s: 0.05, weight: 0.5, levels: levels.clone() })
//!     .collect();
//! let problem = RoundProblem { clients, v: 1.0, queue: 2.0 };
//! let a = solve_round(&problem, &Policy::default(), &SearchOptions::default())?;
//! assert!(a.shares.iter().sum::<f64>() <= 1.0 + 1e-9);
//! assert!(a.objective >= a.lower_bound);
//! # Ok::<(), wflora_alloc::AllocError>(())
//! ```

mod error;
mod instance;
mod knapsack;
mod policy;
mod problem;
mod queue;
mod search;

pub use error::AllocError;
pub use instance::{Instance, InstanceClient, Solution, solve_instance_json};
pub use policy::{Allocation, Policy, RatioMode, SearchOptions, Solver, solve_round};
pub use problem::{ClientRound, Level, Link, RoundProblem, SIT_OUT_PENALTY};
pub use queue::VirtualQueue;
