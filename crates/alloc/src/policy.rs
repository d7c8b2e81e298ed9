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
    /// components; the band is split so that all finish together: the least
    /// shares at the least common latency `τ`, scaled up so that they sum
    /// to 1 (to the last ulp or so; every client then finishes by `τ`).
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
    /// Relative objective tolerance of the `τ` search: `tol = rel_tol ·
    /// max(V·Σp_k, Q·τ_min)`, `τ_min` the least latency at which anything
    /// can be sent. With [`Solver::Milp`] the returned objective is at most
    /// the optimum plus `tol` (and `Q·τ·1e-11` from finding each least
    /// latency); with [`Solver::Hull`] at most the optimum plus `tol` plus
    /// one client's penalty swing `V·max_k p_k·max(1, max_m D_k(m))`,
    /// unless `max_evaluations` stops the search first.
    pub rel_tol: f64,
    /// Cap on knapsack evaluations per round.
    pub max_evaluations: usize,
}

impl SearchOptions {
    /// The smallest accepted [`SearchOptions::rel_tol`]: the `τ` search
    /// resolves latencies to about `1e-11` relative, so a finer objective
    /// tolerance could not be honoured, only searched for without end.
    pub const MIN_REL_TOL: f64 = 1e-9;
    /// The largest accepted [`SearchOptions::max_evaluations`] (about 10
    /// are needed at K = 100).
    pub const MAX_EVALUATIONS: usize = 100_000;

    /// Checks both fields.
    ///
    /// # Errors
    /// [`AllocError::InvalidField`] naming `options.rel_tol` (outside
    /// `[MIN_REL_TOL, 1]`) or `options.max_evaluations` (outside
    /// `1..=MAX_EVALUATIONS`).
    pub fn validate(&self) -> Result<(), AllocError> {
        positive(|| "options.rel_tol".into(), self.rel_tol)?;
        if !(Self::MIN_REL_TOL..=1.0).contains(&self.rel_tol) {
            return Err(AllocError::InvalidField {
                field: "options.rel_tol".into(),
                value: self.rel_tol,
                expected: "a number from 1e-9 to 1",
            });
        }
        if !(1..=Self::MAX_EVALUATIONS).contains(&self.max_evaluations) {
            return Err(AllocError::InvalidField {
                field: "options.max_evaluations".into(),
                value: self.max_evaluations as f64,
                expected: "a whole number from 1 to 100000",
            });
        }
        Ok(())
    }
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
    options.validate()?;
    let reachable = reachability(problem);
    let unreachable: Vec<usize> = (0..reachable.len()).filter(|&k| !reachable[k]).collect();
    let (choice, tau, lower_bound, evaluations, split) = match *policy {
        Policy::DriftPlusPenalty { mode, solver } => {
            let s = Settings {
                mode,
                solver,
                rel_tol: options.rel_tol,
                max_evaluations: options.max_evaluations.max(1),
            };
            let f = search(problem, &reachable, &s)?;
            (
                f.choice,
                f.tau_s,
                Some(f.lower_bound),
                f.evaluations,
                Split::Least,
            )
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
            (ks.choice, tau, None, 1, Split::Least)
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
                (choice, tau, None, 0, Split::Fill)
            } else {
                (choice, 0.0, None, 0, Split::Equal)
            }
        }
    };
    Ok(finish(
        problem,
        choice,
        tau,
        lower_bound,
        evaluations,
        split,
        unreachable,
    ))
}

/// How [`finish`] splits the band among the participants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Each participant's least share at `τ` (`Σβ ≤ 1`).
    Least,
    /// The least shares at `τ` scaled up to fill the band (`Σβ = 1`).
    Fill,
    /// `1/K'` each; `τ` is the latest finish.
    Equal,
}

/// Fills in shares, `τ` and the objective for a choice.
fn finish<L: Link>(
    p: &RoundProblem<L>,
    choice: Vec<Option<usize>>,
    tau: f64,
    lower_bound: Option<f64>,
    evaluations: usize,
    split: Split,
    unreachable: Vec<usize>,
) -> Allocation {
    let n = choice.len();
    let participants = choice.iter().filter(|c| c.is_some()).count();
    let mut shares = vec![0.0; n];
    let mut tau_s = tau;
    if split == Split::Equal {
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
        if split == Split::Fill {
            fill_band(&mut shares);
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

/// Scales shares with `0 < Σβ < 1` up so that they sum to 1 (to the last
/// ulp or so): every share only grows, so every participant still finishes
/// by `τ`. The rounding residual goes to the largest share when that keeps
/// it at or above its least share.
fn fill_band(shares: &mut [f64]) {
    let sum: f64 = shares.iter().sum();
    if !(sum > 0.0 && sum < 1.0) {
        return;
    }
    let least = shares.to_vec();
    for b in shares.iter_mut() {
        *b /= sum;
    }
    let residual = 1.0 - shares.iter().sum::<f64>();
    let Some(i) = (0..shares.len()).max_by(|&a, &b| shares[a].total_cmp(&shares[b])) else {
        return;
    };
    let b = shares[i] + residual;
    if b >= least[i] {
        shares[i] = b;
    }
}
