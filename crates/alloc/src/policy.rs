//! Allocation policies: the drift-plus-penalty rule and the single-stage
//! baselines, behind one entry point, [`solve_round`].

use serde::{Deserialize, Serialize};

use crate::error::{AllocError, positive};
use crate::problem::{Link, RoundProblem};
use crate::search::{Settings, knapsack_at, reachability, search};

/// Whether every participating client keeps the same number of components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatioMode {
    /// Each client has its own `m_k`.
    #[default]
    PerClient,
    /// One `m` for all participating clients (the paper's single
    /// "sparsification ratio"); clients may still sit out.
    Tied,
}

/// The per-`τ` knapsack oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Solver {
    /// LP relaxation by the greedy on each client's convex hull, rounded
    /// down at the single fractional client and improved with the leftover
    /// band. Fast (`O(K·L log(K·L))` per `τ`); near-optimal with a
    /// certified gap ([`Allocation::lower_bound`]).
    #[default]
    Hull,
    /// Exact MILP through good_lp with the pure-Rust microlp solver: the
    /// reference path.
    Milp,
}

/// How a round is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Policy {
    /// TSFA's online stage: minimise `V·Σ p_k D_k(m_k) + Q·τ` over levels,
    /// shares and `τ`.
    DriftPlusPenalty {
        /// Per-client or tied ratios.
        #[serde(default)]
        mode: RatioMode,
        /// Knapsack oracle.
        #[serde(default)]
        solver: Solver,
    },
    /// Meet the budget every round, no queue: minimise the penalty subject
    /// to `τ ≤ T̄` (then report the least such `τ` for that choice).
    Myopic {
        /// Per-client or tied ratios.
        #[serde(default)]
        mode: RatioMode,
        /// Knapsack oracle.
        #[serde(default)]
        solver: Solver,
        /// The per-round latency budget `T̄` in seconds.
        budget_s: f64,
    },
    /// Every reachable client sends the level with `components` kept
    /// components; the band is split so that all finish together.
    FixedRatio {
        /// Kept components of every client.
        components: u32,
    },
    /// Every reachable client sends the level with `components` kept
    /// components with an equal share `1/K'` of the band (`K'` reachable clients).
    EqualBandwidth {
        /// Kept components of every client.
        components: u32,
    },
}

impl Default for Policy {
    fn default() -> Self {
        Self::DriftPlusPenalty {
            mode: RatioMode::PerClient,
            solver: Solver::Hull,
        }
    }
}

/// Search tolerances of the drift-plus-penalty policies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchOptions {
    /// Relative objective tolerance of the `τ` search (scaled by the larger
    /// of `V·Σp_k` and `Q·τ_min`).
    pub rel_tol: f64,
    /// Cap on knapsack evaluations per round.
    pub max_evaluations: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            rel_tol: 1e-3,
            max_evaluations: 200,
        }
    }
}

/// One round's allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// Kept components `m_k` per client; `0`: the client sits out.
    pub components: Vec<u32>,
    /// Index into the client's `levels` (`None`: sits out).
    pub levels: Vec<Option<usize>>,
    /// Bandwidth shares `β_k` (0 for clients that sit out); `Σ β_k ≤ 1`.
    pub shares: Vec<f64>,
    /// Round latency `τ` in seconds: every participant finishes by it (0
    /// when nobody participates).
    pub tau_s: f64,
    /// Weighted penalty `Σ_k p_k D_k(m_k)`.
    pub penalty: f64,
    /// `V·penalty + Q·τ`.
    pub objective: f64,
    /// A certified lower bound on the optimal objective (drift-plus-penalty
    /// policies); equal to `objective` for the fixed baselines.
    pub lower_bound: f64,
    /// Clients that cannot send any level in finite time (zero rate cap,
    /// deep fade). Fallback: they sit out, penalty 1, no band.
    pub unreachable: Vec<usize>,
    /// Knapsack evaluations used.
    pub evaluations: usize,
}

impl Allocation {
    /// Number of participating clients.
    #[must_use]
    pub fn participants(&self) -> usize {
        self.components.iter().filter(|&&m| m > 0).count()
    }
}

/// Solves one round with `policy`.
///
/// # Errors
/// [`AllocError::InvalidField`] for invalid input; [`AllocError::MissingLevel`]
/// when a fixed-level policy names a level a client lacks;
/// [`AllocError::Solver`] when microlp fails.
pub fn solve_round<L: Link>(
    problem: &RoundProblem<L>,
    policy: &Policy,
    options: &SearchOptions,
) -> Result<Allocation, AllocError> {
    problem.validate()?;
    positive(|| "options.rel_tol".into(), options.rel_tol)?;
    let reachable = reachability(problem);
    let unreachable: Vec<usize> = (0..reachable.len()).filter(|&k| !reachable[k]).collect();
    let (choice, tau, lower_bound, evaluations, equal) = match *policy {
        Policy::DriftPlusPenalty { mode, solver } => {
            let s = Settings {
                mode,
                solver,
                rel_tol: options.rel_tol,
                max_evaluations: options.max_evaluations.max(1),
            };
            let f = search(problem, &reachable, &s)?;
            (f.choice, f.tau_s, Some(f.lower_bound), f.evaluations, false)
        }
        Policy::Myopic {
            mode,
            solver,
            budget_s,
        } => {
            positive(|| "policy.budget_s".into(), budget_s)?;
            let s = Settings {
                mode,
                solver,
                rel_tol: options.rel_tol,
                max_evaluations: 1,
            };
            let ks = knapsack_at(problem, &reachable, budget_s, &s)?;
            let tau = problem
                .least_latency(&ks.choice, budget_s)
                .unwrap_or(budget_s);
            (ks.choice, tau, None, 1, false)
        }
        Policy::FixedRatio { components } | Policy::EqualBandwidth { components } => {
            let name = if matches!(policy, Policy::FixedRatio { .. }) {
                "fixed_ratio"
            } else {
                "equal_bandwidth"
            };
            let mut choice = Vec::with_capacity(reachable.len());
            for (k, c) in problem.clients.iter().enumerate() {
                let j = c
                    .levels
                    .iter()
                    .position(|l| l.components == components)
                    .ok_or(AllocError::MissingLevel {
                        client: k,
                        components,
                        policy: name,
                    })?;
                choice.push(problem.threshold_s(k, j).is_finite().then_some(j));
            }
            if matches!(policy, Policy::FixedRatio { .. }) {
                let tau = problem.least_latency(&choice, 0.0).unwrap_or(0.0);
                (choice, tau, None, 0, false)
            } else {
                (choice, 0.0, None, 0, true)
            }
        }
    };
    Ok(finish(
        problem,
        choice,
        tau,
        lower_bound,
        evaluations,
        equal,
        unreachable,
    ))
}

/// Fills in shares, `τ` and the objective for a choice.
fn finish<L: Link>(
    p: &RoundProblem<L>,
    choice: Vec<Option<usize>>,
    tau: f64,
    lower_bound: Option<f64>,
    evaluations: usize,
    equal: bool,
    unreachable: Vec<usize>,
) -> Allocation {
    let n = choice.len();
    let participants = choice.iter().filter(|c| c.is_some()).count();
    let mut shares = vec![0.0; n];
    let mut tau_s = tau;
    if equal {
        tau_s = 0.0;
        for k in 0..n {
            if let Some(j) = choice[k] {
                shares[k] = 1.0 / participants as f64;
                let c = &p.clients[k];
                let bits = c.levels[j].bits;
                let air = if bits > 0.0 {
                    bits / c.link.rate_bps(shares[k])
                } else {
                    0.0
                };
                tau_s = tau_s.max(c.compute_latency_s + air);
            }
        }
    } else if participants == 0 {
        tau_s = 0.0;
    } else {
        for k in 0..n {
            if let Some(j) = choice[k] {
                shares[k] = p.share_at(k, j, tau_s);
            }
        }
    }
    let penalty = p.penalty_of(&choice);
    let objective = p.v * penalty + p.queue * tau_s;
    let components = choice
        .iter()
        .enumerate()
        .map(|(k, c)| c.map_or(0, |j| p.clients[k].levels[j].components))
        .collect();
    Allocation {
        components,
        levels: choice,
        shares,
        tau_s,
        penalty,
        objective,
        lower_bound: lower_bound.unwrap_or(objective).min(objective),
        unreachable,
        evaluations,
    }
}
