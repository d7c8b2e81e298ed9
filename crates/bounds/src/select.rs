//! The offline stage (docs/method.md §4): for each candidate rank, the largest
//! sparsification ratio whose expected round latency meets the budget `T̄`,
//! and the rank that minimises the bound there.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::{BoundError, positive};
use crate::model::BoundModel;
use crate::params::{BoundTerms, check_ratio};

/// The expected round latency `T(r, ρ)` in seconds (average channel,
/// latency-equalising bandwidth), supplied by the engine from its channel
/// model; this crate knows nothing of channels.
///
/// It is *assumed* nondecreasing in `ρ` and in `r` (more components, more
/// bits and more compute), and the selection is exact whether or not it is:
/// the discrete grid checks every ratio, and the continuous grid only ever
/// returns a ratio it has verified (see [`RatioGrid`]). It must return a
/// number `>= 0`; `+inf` means "impossible", NaN or a negative value is an
/// error. Any `Fn(usize, f64) -> f64` closure implements it.
pub trait RoundLatency {
    /// Expected latency of one round at rank `rank` and ratio `ratio`, in
    /// seconds.
    fn expected_latency_s(&self, rank: usize, ratio: f64) -> f64;
}

impl<F: Fn(usize, f64) -> f64> RoundLatency for F {
    fn expected_latency_s(&self, rank: usize, ratio: f64) -> f64 {
        self(rank, ratio)
    }
}

/// Which sparsification ratios `ρ` the offline stage considers at rank `r`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RatioGrid {
    /// The achievable ratios `m/r`, `m = 1..=r` (SOFT keeps whole
    /// components). Every `m` is checked, so the result is the largest
    /// feasible one whatever the shape of the latency. The default.
    #[default]
    Components,
    /// Continuous `ρ ∈ [min_ratio, 1]` by bisection: `ρ = 1` if feasible;
    /// otherwise, if `min_ratio` is feasible, bisection between it and `1`
    /// down to a bracket of width `tolerance`, returning the lower end, which
    /// has been evaluated and is feasible. Under a latency nondecreasing in
    /// `ρ` it is the largest feasible ratio to within `tolerance`; otherwise
    /// it is still feasible but may not be the largest.
    Continuous {
        /// Smallest ratio considered (in `(0, 1]`).
        min_ratio: f64,
        /// Bisection stops when the bracket is this narrow (`> 0`).
        tolerance: f64,
    },
}

/// Settings of the offline stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineStage {
    /// The latency budget `T̄` in seconds (finite, `> 0`).
    pub budget_s: f64,
    /// The ratios considered at each rank. Default [`RatioGrid::Components`].
    #[serde(default)]
    pub ratio_grid: RatioGrid,
}

impl OfflineStage {
    /// Checks the budget and the grid.
    ///
    /// # Errors
    /// [`BoundError::InvalidValue`] naming `budget_s`, `min_ratio` or
    /// `tolerance`.
    pub fn validate(&self) -> Result<(), BoundError> {
        positive("budget_s", self.budget_s)?;
        if let RatioGrid::Continuous {
            min_ratio,
            tolerance,
        } = self.ratio_grid
        {
            check_ratio(min_ratio).map_err(|_| BoundError::InvalidValue {
                field: "min_ratio",
                value: min_ratio,
                expected: "a ratio in (0, 1]",
            })?;
            positive("tolerance", tolerance)?;
        }
        Ok(())
    }
}

/// The candidate ranks `{1, 2, 4, …}` up to `r_max`, with `r_max` itself
/// appended when it is not a power of two.
///
/// # Errors
/// [`BoundError::InvalidValue`] (`r_max` 0).
pub fn candidate_ranks(r_max: usize) -> Result<Vec<usize>, BoundError> {
    if r_max == 0 {
        return Err(BoundError::InvalidValue {
            field: "r_max",
            value: 0.0,
            expected: "a rank >= 1",
        });
    }
    let mut ranks: Vec<usize> = std::iter::successors(Some(1_usize), |r| r.checked_mul(2))
        .take_while(|&r| r <= r_max)
        .collect();
    if ranks.last() != Some(&r_max) {
        ranks.push(r_max);
    }
    Ok(ranks)
}

/// The ratio chosen at a feasible rank.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatioChoice {
    /// `ρ(r)`, the largest feasible ratio found.
    pub ratio: f64,
    /// `m` with `ρ = m/r` on the [`RatioGrid::Components`] grid; `None` on
    /// the continuous grid.
    pub kept_components: Option<usize>,
    /// The expected latency at `ρ(r)`, `<= T̄`.
    pub latency_s: f64,
    /// The bound at `(r, ρ(r))`.
    pub terms: BoundTerms,
}

/// One row of the rank table: a candidate rank, its `ρ`-independent terms,
/// and its ratio choice if it is feasible.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankRow {
    /// The rank `r`.
    pub rank: usize,
    /// `Γ(r)`, unweighted.
    pub gamma: f64,
    /// `C(r)`, unweighted.
    pub covariance: f64,
    /// `c_Γ·Γ(r)`.
    pub structural_term: f64,
    /// `c_C·C(r)`.
    pub covariance_term: f64,
    /// The least expected latency over the ratios evaluated at this rank.
    pub least_latency_s: f64,
    /// The ratio at which [`RankRow::least_latency_s`] was reached.
    pub least_latency_ratio: f64,
    /// `Some` when a ratio meets the budget (the rank is feasible).
    pub choice: Option<RatioChoice>,
}

impl RankRow {
    /// Whether some ratio meets the budget at this rank.
    #[must_use]
    pub fn feasible(&self) -> bool {
        self.choice.is_some()
    }

    /// `Bound(r, ρ(r))`, `None` when infeasible.
    #[must_use]
    pub fn total(&self) -> Option<f64> {
        self.choice.map(|c| c.terms.total)
    }
}

/// The whole table of the offline stage, one row per candidate rank in
/// increasing order (the data of fig2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankTable {
    /// The budget `T̄` in seconds.
    pub budget_s: f64,
    /// One row per candidate rank, ranks increasing.
    pub rows: Vec<RankRow>,
}

/// The CSV header of [`RankTable::to_csv`].
pub const CSV_HEADER: &str = "rank,feasible,ratio,kept_components,latency_s,least_latency_s,gamma,covariance,optimisation,noise,structural,covariance_term,sparsification,total";

impl RankTable {
    /// `r* = argmin_r Bound(r, ρ(r))` over the feasible rows; ties go to the
    /// smallest rank.
    ///
    /// # Errors
    /// [`BoundError::NoFeasibleRank`] with the least achievable latency when
    /// no row is feasible (rank 0 and `+inf` for a table without rows).
    pub fn select(&self) -> Result<RankSelection, BoundError> {
        let mut best: Option<(usize, RatioChoice)> = None;
        for row in &self.rows {
            if let Some(c) = row.choice
                && best.is_none_or(|(_, b)| c.terms.total < b.terms.total)
            {
                best = Some((row.rank, c));
            }
        }
        match best {
            Some((rank, c)) => Ok(RankSelection {
                rank,
                ratio: c.ratio,
                kept_components: c.kept_components,
                latency_s: c.latency_s,
                terms: c.terms,
                table: self.clone(),
            }),
            None => {
                let least = self
                    .rows
                    .iter()
                    .reduce(|a, b| {
                        if b.least_latency_s < a.least_latency_s {
                            b
                        } else {
                            a
                        }
                    })
                    .map_or((f64::INFINITY, 0, 1.0), |r| {
                        (r.least_latency_s, r.rank, r.least_latency_ratio)
                    });
                Err(BoundError::NoFeasibleRank {
                    budget_s: self.budget_s,
                    least_latency_s: least.0,
                    rank: least.1,
                    ratio: least.2,
                })
            }
        }
    }

    /// The table as CSV ([`CSV_HEADER`], then one line per rank, `feasible`
    /// written `1` or `0`); the `ρ`-dependent fields of an infeasible row
    /// are empty, its `ρ`-independent ones filled.
    #[must_use]
    pub fn to_csv(&self) -> String {
        let mut out = String::from(CSV_HEADER);
        out.push('\n');
        for r in &self.rows {
            let _ = write!(out, "{},{},", r.rank, if r.feasible() { 1 } else { 0 });
            match r.choice {
                Some(c) => {
                    let kept = c.kept_components.map(|m| m.to_string()).unwrap_or_default();
                    let _ = write!(out, "{},{},{},", c.ratio, kept, c.latency_s);
                }
                None => out.push_str(",,,"),
            }
            let (opt, noise, sparse, total) = match r.choice {
                Some(c) => (
                    c.terms.optimisation.to_string(),
                    c.terms.noise.to_string(),
                    c.terms.sparsification.to_string(),
                    c.terms.total.to_string(),
                ),
                None => Default::default(),
            };
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{}",
                r.least_latency_s,
                r.gamma,
                r.covariance,
                opt,
                noise,
                r.structural_term,
                r.covariance_term,
                sparse,
                total
            );
        }
        out
    }
}

/// The offline stage's answer: `r*`, `ρ(r*)`, the bound there, and the
/// whole table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankSelection {
    /// `r*`.
    pub rank: usize,
    /// `ρ(r*)`.
    pub ratio: f64,
    /// `m*` with `ρ(r*) = m*/r*` on the components grid.
    pub kept_components: Option<usize>,
    /// Expected round latency at `(r*, ρ(r*))`, `<= T̄`.
    pub latency_s: f64,
    /// `Bound(r*, ρ(r*))` term by term.
    pub terms: BoundTerms,
    /// Every candidate rank (for fig2).
    pub table: RankTable,
}

/// Calls the latency model and checks its answer.
fn latency_at<L: RoundLatency + ?Sized>(
    latency: &L,
    rank: usize,
    ratio: f64,
) -> Result<f64, BoundError> {
    let value = latency.expected_latency_s(rank, ratio);
    if value.is_nan() || value < 0.0 {
        Err(BoundError::InvalidLatency { rank, ratio, value })
    } else {
        Ok(value)
    }
}

/// Tracks the least latency seen at one rank (ties: the first seen).
struct Least {
    latency_s: f64,
    ratio: f64,
}

impl Least {
    /// Starts from the first evaluation.
    fn new(latency_s: f64, ratio: f64) -> Self {
        Self { latency_s, ratio }
    }

    fn see(&mut self, latency_s: f64, ratio: f64) {
        if latency_s < self.latency_s {
            self.latency_s = latency_s;
            self.ratio = ratio;
        }
    }
}

/// A feasible ratio found at one rank: `(ρ, m if on the components grid,
/// latency at ρ)`.
type Found = (f64, Option<usize>, f64);

/// Upper bound on bisection steps (the bracket halves each step, so 200 is
/// far beyond `f64` resolution).
const MAX_BISECTIONS: usize = 200;

/// The largest feasible ratio at `rank` on the grid (`None` if none is),
/// with the least latency seen.
fn ratio_at<L: RoundLatency + ?Sized>(
    stage: &OfflineStage,
    rank: usize,
    latency: &L,
) -> Result<(Option<Found>, Least), BoundError> {
    let budget = stage.budget_s;
    match stage.ratio_grid {
        RatioGrid::Components => {
            // m = r first: it seeds the least latency (rank >= 1, so it exists).
            let t_full = latency_at(latency, rank, 1.0)?;
            let mut least = Least::new(t_full, 1.0);
            if t_full <= budget {
                return Ok((Some((1.0, Some(rank), t_full)), least));
            }
            let mut best = None;
            for m in 1..rank {
                let ratio = m as f64 / rank as f64;
                let t = latency_at(latency, rank, ratio)?;
                least.see(t, ratio);
                if t <= budget {
                    best = Some((ratio, Some(m), t));
                }
            }
            Ok((best, least))
        }
        RatioGrid::Continuous {
            min_ratio,
            tolerance,
        } => {
            let t_full = latency_at(latency, rank, 1.0)?;
            let mut least = Least::new(t_full, 1.0);
            if t_full <= budget {
                return Ok((Some((1.0, None, t_full)), least));
            }
            let t_min = latency_at(latency, rank, min_ratio)?;
            least.see(t_min, min_ratio);
            if t_min > budget {
                return Ok((None, least));
            }
            let (mut lo, mut t_lo, mut hi) = (min_ratio, t_min, 1.0_f64);
            for _ in 0..MAX_BISECTIONS {
                if hi - lo <= tolerance {
                    break;
                }
                let mid = 0.5 * (lo + hi);
                if mid <= lo || mid >= hi {
                    break;
                }
                let t = latency_at(latency, rank, mid)?;
                least.see(t, mid);
                if t <= budget {
                    (lo, t_lo) = (mid, t);
                } else {
                    hi = mid;
                }
            }
            Ok((Some((lo, None, t_lo)), least))
        }
    }
}

/// Checks that ranks are nonempty, `>= 1` and strictly increasing.
fn check_ranks(ranks: &[usize]) -> Result<(), BoundError> {
    if ranks.is_empty() {
        return Err(BoundError::TooFew {
            field: "ranks",
            len: 0,
            min: 1,
        });
    }
    for (index, &r) in ranks.iter().enumerate() {
        if r == 0 || (index > 0 && r <= ranks[index - 1]) {
            return Err(BoundError::InvalidElement {
                field: "ranks",
                index,
                value: r as f64,
                expected: "strictly increasing ranks >= 1",
            });
        }
    }
    Ok(())
}

/// The offline stage's table: for each candidate rank (strictly increasing,
/// e.g. from [`candidate_ranks`]), `ρ(r)` on the stage's grid and the bound
/// there; infeasible ranks are kept with their least latency.
///
/// # Errors
/// [`BoundError::InvalidValue`] (bad stage settings);
/// [`BoundError::TooFew`] / [`BoundError::InvalidElement`] (`ranks`);
/// [`BoundError::InvalidLatency`] (the latency model returned NaN or a
/// negative number); [`BoundError::NonFiniteTerm`] (a term overflows).
pub fn rank_table<L: RoundLatency + ?Sized>(
    model: &BoundModel,
    stage: &OfflineStage,
    ranks: &[usize],
    latency: &L,
) -> Result<RankTable, BoundError> {
    stage.validate()?;
    check_ranks(ranks)?;
    let rows = ranks
        .iter()
        .map(|&rank| {
            // ρ = 1 carries no sparsification term: the ρ-independent terms.
            let base = model.evaluate(rank, 1.0)?;
            let (best, least) = ratio_at(stage, rank, latency)?;
            let choice = best
                .map(|(ratio, kept_components, latency_s)| {
                    model.evaluate(rank, ratio).map(|terms| RatioChoice {
                        ratio,
                        kept_components,
                        latency_s,
                        terms,
                    })
                })
                .transpose()?;
            Ok(RankRow {
                rank,
                gamma: model.structural().gamma(rank),
                covariance: model.covariance().predict(rank),
                structural_term: base.structural,
                covariance_term: base.covariance,
                least_latency_s: least.latency_s,
                least_latency_ratio: least.ratio,
                choice,
            })
        })
        .collect::<Result<Vec<_>, BoundError>>()?;
    Ok(RankTable {
        budget_s: stage.budget_s,
        rows,
    })
}

/// The offline stage: [`rank_table`], then [`RankTable::select`].
///
/// # Errors
/// As [`rank_table`], and [`BoundError::NoFeasibleRank`] when no candidate
/// rank meets the budget.
pub fn select_rank<L: RoundLatency + ?Sized>(
    model: &BoundModel,
    stage: &OfflineStage,
    ranks: &[usize],
    latency: &L,
) -> Result<RankSelection, BoundError> {
    rank_table(model, stage, ranks, latency)?.select()
}
