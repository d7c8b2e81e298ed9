//! The configuration of one federated run (TOML/JSON through serde).
//!
//! Every section rejects unknown fields, and [`RunConfig::validate`] checks
//! the values, naming the field in its error. The hash of the canonical JSON
//! form ([`RunConfig::hash`]) identifies a run for checkpoints and caches.

use crate::FedError;
use crate::task::TaskConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wflora_alloc::RatioMode;
use wflora_channel::ChannelConfig;
use wflora_data::Scheme;
use wflora_lora::{
    AdamWParams, FineTuneMode, LoraConfig, LoraTarget, OptimizerKind, RegulariserKind,
};
use wflora_soft::MethodKind;

/// What the clients train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainMode {
    /// LoRA adapters and the head.
    Lora,
    /// The head only (frozen backbone baseline; nothing to compress, the head
    /// is sent densely).
    HeadOnly,
}

/// Model and LoRA settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// LoRA or head-only.
    pub mode: TrainMode,
    /// LoRA rank `r`.
    pub rank: usize,
    /// LoRA `α` (the adapter is `(α/r)·B·A`).
    pub alpha: f64,
    /// Adapted matrices in every block.
    pub targets: Vec<LoraTarget>,
    /// Orthogonality regulariser weight `ζ` (METHOD §1).
    pub zeta: f64,
    /// Plain (as written in the paper) or scale-invariant regulariser.
    pub regulariser: RegulariserKind,
}

impl ModelSettings {
    /// The model crate's mode.
    #[must_use]
    pub fn fine_tune_mode(&self) -> FineTuneMode {
        match self.mode {
            TrainMode::Lora => FineTuneMode::Lora(LoraConfig {
                rank: self.rank,
                alpha: self.alpha,
                targets: self.targets.clone(),
            }),
            TrainMode::HeadOnly => FineTuneMode::HeadOnly,
        }
    }
}

/// Local training of a client in a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// Local steps `E` per round.
    pub steps: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Optimiser (state reset every round).
    pub optimizer: OptimizerKind,
}

/// The federation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSettings {
    /// Number of clients `K`.
    pub clients: usize,
    /// Clients sampled per round (uniformly without replacement).
    pub clients_per_round: usize,
    /// Rounds `T`.
    pub rounds: usize,
    /// How the fine-tuning pool is split among clients.
    pub partition: Scheme,
    /// Evaluate on the test set every this many rounds (and after the last).
    pub eval_every: usize,
    /// Local-only baseline: clients never communicate; the reported accuracy
    /// is the mean of the clients' own models (evaluated after the last round).
    pub local_only: bool,
    /// Client models trained concurrently (1: one at a time, each using
    /// candle's own threads).
    pub workers: usize,
}

/// Compression of the uploads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionSettings {
    /// The sparsifier (METHOD §2).
    pub method: MethodKind,
    /// Ratio `ρ ∈ (0, 1]` for the fixed-ratio policies (ILoRA always sends everything).
    pub rho: f64,
    /// Error feedback (on by default for every method).
    pub error_feedback: bool,
}

/// The sparsification penalty `D_k(m)` of TSFA's online stage (METHOD §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyKind {
    /// The share of the client's SOFT importance energy that keeping the
    /// top-`m` components of every adapted matrix drops, pooled over the
    /// matrices (`Σ_j Σ_{i∉top m} s_{j,i}² / Σ_j Σ_i s_{j,i}²`). The default.
    #[default]
    DroppedEnergy,
    /// The bound's error-feedback factor `(1−ρ)/ρ²` at `ρ = m/r`, divided by
    /// its value at `ρ = 1/r` so that it lies in `[0, 1]` like the sit-out
    /// penalty `D(0) = 1` (our normalisation; `0` for every `m` when `r = 1`).
    BoundFactor,
}

/// How bandwidth (and, for TSFA, the ratios) are allocated each round.
///
/// The latency budget of the TSFA policies is `T̄ = budget_rel · T_ILoRA`,
/// where `T_ILoRA` is the round latency of ILoRA (all `r` components) with
/// every client taking part, equal bandwidth shares `1/K`, at the mean
/// channel (`|h|² = 1`), computed once when the simulation is built
/// (METHOD §3, last bullet; see [`crate::tsfa::LatencyModel`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AllocationSettings {
    /// Fixed `ρ` for every client, equal bandwidth shares.
    EqualBandwidth,
    /// Fixed `ρ`, shares that make every client finish at once.
    Equalising,
    /// TSFA's online stage: Lyapunov drift-plus-penalty with the virtual
    /// latency queue (METHOD §5); `compression.rho` is not used.
    DriftPlusPenalty {
        /// Penalty weight `V >= 0` (the `O(1/V)` / `O(V)` trade-off).
        v: f64,
        /// `T̄ / T_ILoRA`, finite and `> 0`.
        budget_rel: f64,
        /// Per-client ratios or one tied ratio (default per client).
        #[serde(default)]
        mode: RatioMode,
        /// Least kept components `m_min` of a participant, `1..=model.rank`.
        m_min: usize,
        /// The penalty `D_k(m)` (default dropped importance energy).
        #[serde(default)]
        penalty: PenaltyKind,
        /// The rank at which `T_ILoRA` is evaluated (default `model.rank`).
        /// Set it to the same value in runs at different ranks (TSFA at
        /// `r*`, online-only at `r_max`) so that they share one budget `T̄`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget_rank: Option<usize>,
    },
    /// Single-stage baseline: meet `T̄` in every round, no queue (least
    /// dropped importance energy with `τ <= T̄`).
    Myopic {
        /// `T̄ / T_ILoRA`, finite and `> 0`.
        budget_rel: f64,
        /// Per-client ratios or one tied ratio (default per client).
        #[serde(default)]
        mode: RatioMode,
        /// Least kept components `m_min` of a participant, `1..=model.rank`.
        m_min: usize,
        /// The rank at which `T_ILoRA` is evaluated (default `model.rank`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget_rank: Option<usize>,
    },
}

impl AllocationSettings {
    /// `(budget_rel, budget_rank)` of the TSFA policies, `None` for the
    /// fixed-ratio ones.
    #[must_use]
    pub fn budget(&self) -> Option<(f64, Option<usize>)> {
        match *self {
            Self::DriftPlusPenalty {
                budget_rel,
                budget_rank,
                ..
            }
            | Self::Myopic {
                budget_rel,
                budget_rank,
                ..
            } => Some((budget_rel, budget_rank)),
            Self::EqualBandwidth | Self::Equalising => None,
        }
    }

    /// Checks the TSFA fields against the model rank, naming the field.
    ///
    /// # Errors
    /// [`FedError::Config`].
    pub fn validate(&self, rank: usize) -> Result<(), FedError> {
        let bad = |field: &str, reason: String| {
            Err(FedError::config(
                &format!("wireless.allocation.{field}"),
                reason,
            ))
        };
        let (budget_rel, m_min, budget_rank) = match *self {
            Self::EqualBandwidth | Self::Equalising => return Ok(()),
            Self::DriftPlusPenalty {
                v,
                budget_rel,
                m_min,
                budget_rank,
                ..
            } => {
                if !(v.is_finite() && v >= 0.0) {
                    return bad("v", format!("{v} must be finite and >= 0"));
                }
                (budget_rel, m_min, budget_rank)
            }
            Self::Myopic {
                budget_rel,
                m_min,
                budget_rank,
                ..
            } => (budget_rel, m_min, budget_rank),
        };
        if !(budget_rel.is_finite() && budget_rel > 0.0) {
            return bad("budget_rel", format!("{budget_rel} must be finite and > 0"));
        }
        if m_min == 0 || m_min > rank {
            return bad(
                "m_min",
                format!("{m_min} must lie in 1..={rank} (model.rank)"),
            );
        }
        if budget_rank == Some(0) {
            return bad("budget_rank", "must be at least 1".into());
        }
        Ok(())
    }
}

/// The wireless uplink of the simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WirelessSettings {
    /// Cell, powers, bandwidth, clocks.
    pub channel: ChannelConfig,
    /// Bandwidth/ratio allocation.
    pub allocation: AllocationSettings,
    /// FLOPs a client CPU retires per cycle (turns the model's FLOPs per
    /// sample into the cycles per sample `c(r)` of METHOD §3; 16 is a
    /// 256-bit FMA unit in f32: our choice).
    pub flops_per_cycle: f64,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// A label for the run (appears in outputs).
    pub name: String,
    /// Run seed: partition, initialisation, sampling, batches, channel.
    pub seed: u64,
    /// Data and backbone.
    pub task: TaskConfig,
    /// Model.
    pub model: ModelSettings,
    /// Local training.
    pub local: LocalSettings,
    /// Federation.
    pub federation: FederationSettings,
    /// Compression.
    pub compression: CompressionSettings,
    /// Uplink.
    pub wireless: WirelessSettings,
}

impl RunConfig {
    /// The embedded default run: SOFT at `ρ = 0.25` on the embedded task.
    #[must_use]
    pub fn embedded_default() -> Self {
        Self {
            name: "default".into(),
            seed: 1,
            task: TaskConfig::embedded_default(),
            model: ModelSettings {
                mode: TrainMode::Lora,
                rank: 8,
                alpha: 16.0,
                targets: vec![LoraTarget::Q, LoraTarget::V],
                // SOFT's orthogonality weight, chosen once by fig8's rule
                // (docs/figures.md); baselines run with ζ = 0.
                zeta: 0.1,
                regulariser: RegulariserKind::Plain,
            },
            local: LocalSettings {
                steps: 10,
                batch_size: 32,
                optimizer: OptimizerKind::AdamW(AdamWParams {
                    lr: 2e-3,
                    ..AdamWParams::default()
                }),
            },
            federation: FederationSettings {
                clients: 10,
                clients_per_round: 10,
                rounds: 20,
                partition: Scheme::Dirichlet {
                    alpha: 0.3,
                    min_size: 32,
                    max_attempts: 1000,
                },
                eval_every: 1,
                local_only: false,
                workers: 2,
            },
            compression: CompressionSettings {
                method: MethodKind::Soft,
                rho: 0.25,
                error_feedback: true,
            },
            wireless: WirelessSettings {
                channel: ChannelConfig::default(),
                allocation: AllocationSettings::Equalising,
                flops_per_cycle: 16.0,
            },
        }
    }

    /// Parses TOML, naming the file in errors.
    ///
    /// # Errors
    /// [`FedError::Config`] with the parser's message (which names the field).
    pub fn from_toml(text: &str, file: &str) -> Result<Self, FedError> {
        let cfg: Self = toml::from_str(text).map_err(|e| FedError::config(file, e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value, naming the first bad field.
    ///
    /// # Errors
    /// [`FedError::Config`].
    pub fn validate(&self) -> Result<(), FedError> {
        let bad = |field: &str, reason: String| Err(FedError::config(field, reason));
        self.task.validate()?;
        let f = &self.federation;
        if f.clients == 0 {
            return bad("federation.clients", "must be at least 1".into());
        }
        if f.clients_per_round == 0 || f.clients_per_round > f.clients {
            return bad(
                "federation.clients_per_round",
                format!("{} must lie in 1..={}", f.clients_per_round, f.clients),
            );
        }
        if f.rounds == 0 {
            return bad("federation.rounds", "must be at least 1".into());
        }
        if f.eval_every == 0 {
            return bad("federation.eval_every", "must be at least 1".into());
        }
        if f.workers == 0 {
            return bad("federation.workers", "must be at least 1".into());
        }
        if self.local.steps == 0 {
            return bad("local.steps", "must be at least 1".into());
        }
        if self.local.batch_size == 0 {
            return bad("local.batch_size", "must be at least 1".into());
        }
        let c = &self.compression;
        if !(c.rho > 0.0 && c.rho <= 1.0) {
            return bad("compression.rho", format!("{} must lie in (0, 1]", c.rho));
        }
        if self.model.mode == TrainMode::Lora {
            if self.model.rank == 0 {
                return bad("model.rank", "must be at least 1".into());
            }
            self.model
                .fine_tune_mode()
                .validate()
                .map_err(|e| FedError::config("model", e.to_string()))?;
        }
        if !(self.model.zeta.is_finite() && self.model.zeta >= 0.0) {
            return bad(
                "model.zeta",
                format!("{} must be finite and >= 0", self.model.zeta),
            );
        }
        wflora_lora::TrainOptions {
            optimizer: self.local.optimizer,
            zeta: self.model.zeta,
            regulariser: self.model.regulariser,
            keep_optimizer_state: false,
            shards: 1,
        }
        .validate()
        .map_err(|e| FedError::config("local.optimizer", e.to_string()))?;
        self.wireless
            .channel
            .validate()
            .map_err(|e| FedError::config("wireless.channel", e.to_string()))?;
        if self.wireless.allocation.budget().is_some() {
            if self.model.mode != TrainMode::Lora {
                return bad(
                    "wireless.allocation.kind",
                    "the TSFA policies choose LoRA ratios and need model.mode = lora".into(),
                );
            }
            if self.compression.method == MethodKind::ILora {
                return bad(
                    "wireless.allocation.kind",
                    "ILoRA ignores the ratio and always sends everything; use `equalising` or `equal_bandwidth`".into(),
                );
            }
        }
        self.wireless.allocation.validate(self.model.rank)?;
        if !(self.wireless.flops_per_cycle.is_finite() && self.wireless.flops_per_cycle > 0.0) {
            return bad(
                "wireless.flops_per_cycle",
                format!("{} must be finite and > 0", self.wireless.flops_per_cycle),
            );
        }
        Ok(())
    }

    /// Kept components per adapted matrix at the configured ratio,
    /// `m = ⌈ρ·r⌉` (all of them for ILoRA).
    #[must_use]
    pub fn kept_components(&self) -> usize {
        if self.compression.method == MethodKind::ILora {
            return self.model.rank;
        }
        let m = (self.compression.rho * self.model.rank as f64 - 1e-9).ceil() as usize;
        m.clamp(1, self.model.rank)
    }

    /// The configured ratio, or 1 for ILoRA.
    #[must_use]
    pub fn effective_rho(&self) -> f64 {
        if self.compression.method == MethodKind::ILora {
            1.0
        } else {
            self.compression.rho
        }
    }

    /// sha256 of the canonical JSON form (hex).
    #[must_use]
    pub fn hash(&self) -> String {
        // Serialising plain data to JSON cannot fail (no maps with non-string
        // keys, no non-finite floats survive `validate`); an empty string
        // would still hash deterministically.
        let json = serde_json::to_string(self).unwrap_or_default();
        crate::hex(&Sha256::digest(json.as_bytes()))
    }
}
