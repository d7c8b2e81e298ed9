//! TSFA's offline stage (docs/method.md §4), above the engine: pilot runs
//! on the simulator, then the rank `r*` from the convergence bound under the
//! latency budget. The latency model it shares with the online stage lives
//! below the engine, in [`crate::online`] (re-exported here).
//!
//! **Offline stage** ([`plan_offline`]): pilot runs with ILoRA at a few
//! ranks; from the run at the reference rank (typically `r_max`) the
//! singular values of every adapted matrix's aggregated update
//! `BᵀAᵀ − B⁰A⁰` give `Γ(r)` ([`EnergyProfile`], pooled over matrices); the
//! mean reported covariance (`covariance_rel` over rounds and matrices) at
//! each pilot rank is fitted to `C(r)` ([`fit_covariance`]); then
//! [`rank_table`] finds, for every candidate rank, the largest `ρ(r)` whose
//! expected latency meets `T̄`, and `r* = argmin_r Bound(r, ρ(r))`. The
//! weights `c_Γ`, `c_C`, `c_S` are parameters ([`BoundParams`]): they are
//! uncalibrated (docs/choices.md).

use crate::FedError;
use crate::config::{AllocationSettings, RunConfig};
use crate::engine::Simulation;
use crate::metrics::RoundRecord;
pub use crate::online::{LatencyModel, bound_factor_penalty, pooled_dropped_energy};
use crate::state::ModelState;
use crate::task::Task;
use ndarray::{Array2, Axis, concatenate};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use wflora_bounds::{
    BoundModel, BoundParams, CovarianceFit, EnergyProfile, OfflineStage, RankSelection, RatioGrid,
    fit_covariance, rank_table,
};
use wflora_soft::{MethodKind, product_singular_values};

/// Settings of the offline stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineSettings {
    /// Candidate ranks, strictly increasing (e.g. `{1, 2, 4, …, r_max}`,
    /// [`wflora_bounds::candidate_ranks`]).
    pub candidates: Vec<usize>,
    /// The high rank of the reference pilot whose update spectrum gives `Γ`.
    pub reference_rank: usize,
    /// Pilot ranks at which the covariance is measured (the reference rank
    /// is added when missing; at least two distinct ranks give a slope).
    pub covariance_ranks: Vec<usize>,
    /// Rounds of every pilot run.
    pub pilot_rounds: usize,
    /// `T̄ / T_ILoRA` (as the online stage's `budget_rel`).
    pub budget_rel: f64,
    /// The rank at which `T_ILoRA` is evaluated (as the online stage's
    /// `budget_rank`; default the base configuration's `model.rank`).
    #[serde(default)]
    pub budget_rank: Option<usize>,
    /// The bound's constants, the weights `c_Γ`, `c_C`, `c_S` included.
    pub bound: BoundParams,
    /// Ratios considered at each rank (default: whole components `m/r`).
    #[serde(default)]
    pub ratio_grid: RatioGrid,
}

impl OfflineSettings {
    /// The ranks of the pilot runs, increasing: the covariance ranks and
    /// the reference rank, without repeats.
    #[must_use]
    pub fn pilot_ranks(&self) -> Vec<usize> {
        let mut ranks = self.covariance_ranks.clone();
        ranks.push(self.reference_rank);
        ranks.sort_unstable();
        ranks.dedup();
        ranks
    }

    /// Rounds of all pilot runs together.
    #[must_use]
    pub fn pilot_rounds_total(&self) -> usize {
        self.pilot_ranks().len() * self.pilot_rounds
    }

    /// Checks the settings, naming the field (`offline.…`).
    ///
    /// # Errors
    /// [`FedError::Config`].
    pub fn validate(&self) -> Result<(), FedError> {
        let bad = |field: &str, reason: String| {
            Err(FedError::config(&format!("offline.{field}"), reason))
        };
        if self.candidates.is_empty() {
            return bad("candidates", "at least one rank is needed".into());
        }
        if self.reference_rank == 0 {
            return bad("reference_rank", "must be at least 1".into());
        }
        if self.covariance_ranks.contains(&0) {
            return bad("covariance_ranks", "ranks must be at least 1".into());
        }
        if self.pilot_rounds == 0 {
            return bad("pilot_rounds", "must be at least 1".into());
        }
        if !(self.budget_rel.is_finite() && self.budget_rel > 0.0) {
            return bad(
                "budget_rel",
                format!("{} must be finite and > 0", self.budget_rel),
            );
        }
        if self.budget_rank == Some(0) {
            return bad("budget_rank", "must be at least 1".into());
        }
        Ok(())
    }
}

/// One pilot run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PilotRun {
    /// Its LoRA rank.
    pub rank: usize,
    /// Mean `covariance_rel` over its rounds and adapted matrices.
    pub mean_covariance: f64,
    /// Its round records.
    pub records: Vec<RoundRecord>,
}

/// The offline stage's answer.
#[derive(Debug, Clone, Serialize)]
pub struct OfflinePlan {
    /// `r*`.
    pub rank: usize,
    /// `ρ(r*)`.
    pub ratio: f64,
    /// `T̄ / T_ILoRA`.
    pub budget_rel: f64,
    /// The rank at which `T_ILoRA` was evaluated.
    pub budget_rank: usize,
    /// `T_ILoRA` in seconds (at the budget rank).
    pub ilora_latency_s: f64,
    /// `T̄ = budget_rel · T_ILoRA` in seconds.
    pub budget_s: f64,
    /// The selection with the whole bound table (fig2's data).
    pub selection: RankSelection,
    /// `Γ(r)` from the reference pilot.
    pub gamma: EnergyProfile,
    /// Singular values of every adapted matrix's aggregated reference update.
    pub reference_spectrum: Vec<Vec<f64>>,
    /// The fit of `C(r)` to the pilots' mean covariance.
    pub covariance: CovarianceFit,
    /// The pilot runs, ranks increasing.
    pub pilots: Vec<PilotRun>,
}

impl OfflinePlan {
    /// Applies the plan to a run: `model.rank = r*`, `compression.rho =
    /// ρ(r*)` (what the fixed-ratio "offline only" variant sends), and, for
    /// the TSFA policies, `budget_rel` and `budget_rank` set to the plan's
    /// so that the run's `T̄` is the budget the plan was made for.
    pub fn apply(&self, cfg: &mut RunConfig) {
        cfg.model.rank = self.rank;
        cfg.compression.rho = self.ratio;
        match &mut cfg.wireless.allocation {
            AllocationSettings::DriftPlusPenalty {
                budget_rel,
                budget_rank,
                ..
            }
            | AllocationSettings::Myopic {
                budget_rel,
                budget_rank,
                ..
            } => {
                *budget_rel = self.budget_rel;
                *budget_rank = Some(self.budget_rank);
            }
            AllocationSettings::EqualBandwidth | AllocationSettings::Equalising => {}
        }
    }
}

/// Singular values of the aggregated update `B¹A¹ − B⁰A⁰` of every adapted
/// matrix between two states (the `(α/r)` scale is left out: `Γ` is scale
/// free). Computed without the dense product: the stacked factors
/// `[B¹, −B⁰]·[A¹; A⁰]` (rank at most `2r`) through
/// [`product_singular_values`].
///
/// # Errors
/// [`FedError::Config`] when the states have different matrices; SVD errors.
pub fn update_spectrum(before: &ModelState, after: &ModelState) -> Result<Vec<Vec<f64>>, FedError> {
    if before.factors.len() != after.factors.len() {
        return Err(FedError::config(
            "factors",
            "the two states adapt different numbers of matrices",
        ));
    }
    before
        .factors
        .iter()
        .zip(&after.factors)
        .map(|(f0, f1)| {
            if f0.b.dim() != f1.b.dim() || f0.a.dim() != f1.a.dim() {
                return Err(FedError::config(
                    "factors",
                    format!("matrix {} has different shapes in the two states", f1.name),
                ));
            }
            let b: Array2<f32> = concatenate(Axis(1), &[f1.b.view(), (-&f0.b).view()])
                .map_err(|e| FedError::config("factors", e.to_string()))?;
            let a: Array2<f32> = concatenate(Axis(0), &[f1.a.view(), f0.a.view()])
                .map_err(|e| FedError::config("factors", e.to_string()))?;
            let mut sv = product_singular_values(&b, &a)?;
            // At most min(d, l) singular values are meaningful.
            sv.truncate(b.nrows().min(a.ncols()).min(sv.len()));
            Ok(sv)
        })
        .collect()
}

/// The pilot configuration at `rank`: ILoRA, latency-equalising shares,
/// `rounds` rounds, evaluated once at the end.
#[must_use]
pub fn pilot_config(base: &RunConfig, rank: usize, rounds: usize) -> RunConfig {
    let mut c = base.clone();
    c.name = format!("{}-pilot-r{rank}", base.name);
    c.model.rank = rank;
    c.compression.method = MethodKind::ILora;
    c.compression.rho = 1.0;
    c.wireless.allocation = AllocationSettings::Equalising;
    c.federation.rounds = rounds;
    c.federation.eval_every = rounds;
    c
}

/// TSFA's offline stage: pilots, `Γ`, `C`, the bound table and `r*`
/// (docs/method.md §4).
///
/// # Errors
/// Invalid settings or configuration, a pilot's error, a fit or bound error,
/// [`wflora_bounds::BoundError::NoFeasibleRank`] when no candidate meets
/// the budget.
pub fn plan_offline(
    base: &RunConfig,
    task: Arc<Task>,
    settings: &OfflineSettings,
) -> Result<OfflinePlan, FedError> {
    settings.validate()?;
    let ranks = settings.pilot_ranks();
    let mut pilots = Vec::with_capacity(ranks.len());
    let mut reference_spectrum = Vec::new();
    let mut latency = None;
    for &rank in &ranks {
        let mut sim = Simulation::new(
            pilot_config(base, rank, settings.pilot_rounds),
            task.clone(),
        )?;
        let before = sim.global().clone();
        let mut records = Vec::with_capacity(settings.pilot_rounds);
        while !sim.finished() {
            records.push(sim.step()?);
        }
        if rank == settings.reference_rank {
            reference_spectrum = update_spectrum(&before, sim.global())?;
        }
        let covs: Vec<f64> = records
            .iter()
            .flat_map(|r| r.covariance_rel.iter().copied())
            .collect();
        let mean_covariance = if covs.is_empty() {
            0.0
        } else {
            covs.iter().sum::<f64>() / covs.len() as f64
        };
        if latency.is_none() {
            latency = sim.latency_model().cloned();
        }
        pilots.push(PilotRun {
            rank,
            mean_covariance,
            records,
        });
    }
    let latency = latency.ok_or_else(|| {
        FedError::config("model.mode", "the offline stage needs model.mode = lora")
    })?;
    let gamma = EnergyProfile::from_layers(&reference_spectrum)?;
    let pilot_ranks: Vec<usize> = pilots.iter().map(|p| p.rank).collect();
    let pilot_covs: Vec<f64> = pilots.iter().map(|p| p.mean_covariance).collect();
    let covariance = fit_covariance(&pilot_ranks, &pilot_covs)?;
    let budget_rank = settings.budget_rank.unwrap_or(base.model.rank);
    let ilora_latency_s = latency.ilora_latency_s(budget_rank)?;
    let budget_s = settings.budget_rel * ilora_latency_s;
    let model = BoundModel::new(settings.bound, gamma.clone(), covariance.model)?;
    let selection = select_offline(
        &model,
        &latency,
        budget_s,
        &settings.candidates,
        settings.ratio_grid,
    )?;
    Ok(OfflinePlan {
        rank: selection.rank,
        ratio: selection.ratio,
        budget_rel: settings.budget_rel,
        budget_rank,
        ilora_latency_s,
        budget_s,
        selection,
        gamma,
        reference_spectrum,
        covariance,
        pilots,
    })
}

/// The selection step alone: [`rank_table`] with the expected latency of
/// `latency` (`+∞` where it cannot be computed, e.g. an unreachable client),
/// then `r* = argmin`.
///
/// # Errors
/// As [`wflora_bounds::select_rank`].
pub fn select_offline(
    model: &BoundModel,
    latency: &LatencyModel,
    budget_s: f64,
    candidates: &[usize],
    ratio_grid: RatioGrid,
) -> Result<RankSelection, FedError> {
    let stage = OfflineStage {
        budget_s,
        ratio_grid,
    };
    let t = |r: usize, rho: f64| latency.expected_latency_s(r, rho).unwrap_or(f64::INFINITY);
    Ok(rank_table(model, &stage, candidates, &t)?.select()?)
}
