//! The figure registry: each figure of docs/method.md §7 as a function from a
//! profile to data, plot, summary and claim checks.
//!
//! A figure runs its simulations through `wflora-fed` (each run in its own
//! subdirectory, resumable), then computes its claims from the data it wrote.

mod common;
pub use common::base_config;
pub mod fig2;
pub mod fig3;
pub mod fig4;
pub mod fig5;
pub mod fig6;
pub mod fig7;
pub mod fig8;
pub mod so;
mod stats;

use crate::cli::CliError;
use crate::report::Claim;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// How big a reproduction is (`--profile`; the `help` of each variant is
/// what `wflora reproduce --help` lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// CI: every figure end to end in about a minute; a smoke run of the
    /// pipeline whose numbers are not results (claims printed, not expected
    /// to hold).
    #[value(help = "pipeline smoke run, seconds per figure; its numbers are not results")]
    Quick,
    /// The embedded dataset and pre-trained tiny backbone; the claims are
    /// meant to hold here.
    #[value(help = "embedded Fashion-MNIST, tiny pre-trained ViT, 3 seeds; the claims' profile")]
    Default,
    /// DINOv2 ViT-S/14 on the full Fashion-MNIST at 56×56, 20 clients,
    /// Dirichlet α = 1 (needs `just fetch-assets`).
    #[value(
        help = "DINOv2 ViT-S/14 on full Fashion-MNIST, Dirichlet 1 (needs `just fetch-assets`)"
    )]
    Real,
    /// As `real` with Dirichlet α = 0.1 (strongly non-IID).
    #[value(help = "as real, Dirichlet 0.1 (strongly non-IID)")]
    RealNoniid,
    /// The paper's setup: ViT-B/16 (Hugging Face
    /// `google/vit-base-patch16-224-in21k` safetensors) on CIFAR-100, read
    /// from the paths in `WFLORA_VIT_B16` and `WFLORA_CIFAR100`.
    #[value(help = "the paper's ViT-B/16 on CIFAR-100 (paths in WFLORA_VIT_B16, WFLORA_CIFAR100)")]
    Paper,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quick" => Ok(Self::Quick),
            "default" => Ok(Self::Default),
            "real" => Ok(Self::Real),
            "real-noniid" => Ok(Self::RealNoniid),
            "paper" => Ok(Self::Paper),
            other => Err(format!(
                "unknown profile '{other}' (expected quick, default, real, real-noniid or paper)"
            )),
        }
    }
}

impl Profile {
    /// Its name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Quick => "quick",
            Self::Default => "default",
            Self::Real => "real",
            Self::RealNoniid => "real-noniid",
            Self::Paper => "paper",
        }
    }
}

/// Options common to every figure.
#[derive(Debug, Clone)]
pub struct FigureOptions {
    /// Profile.
    pub profile: Profile,
    /// Output directory of this figure (`results/<fig>` by default).
    pub out: PathBuf,
    /// Continue finished and half-finished runs instead of refusing the directory.
    pub resume: bool,
    /// Overwrite earlier results.
    pub force: bool,
    /// Changes to the profile's base run (`--set`, `--seeds`, `--rounds`).
    pub config: ConfigOverrides,
    /// Size and resolution of the PNG and SVG plots (`--plot-size`,
    /// `--dpi`); the default is 960 × 600 at 100 dpi.
    pub plot: crate::plot::PlotOptions,
}

/// What `wflora reproduce` changes in a profile's runs.
///
/// `set` and `rounds` apply to the figure's base run, after the profile's
/// settings and the figure's own base (TSFA's band and policy, say); what a
/// figure varies from run to run (the method of an arm, a ratio, the seed)
/// it still sets itself.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    /// `--set section.key=value`, in order (keys of the figure's
    /// configuration: a `RunConfig`'s for fig2–fig8, a `DflConfig`'s for
    /// so1–so3).
    pub set: Vec<wflora_fed::config::layers::Override>,
    /// `--seeds N`: seeds `1..=N` instead of the profile's.
    pub seeds: Option<u64>,
    /// `--rounds N`: rounds of the base run instead of the profile's.
    pub rounds: Option<usize>,
}

/// A figure's base configuration, as `--set` and `--rounds` reach it.
pub trait FigureConfig: Serialize + serde::de::DeserializeOwned + Clone {
    /// Sets the number of federated (or decentralized) rounds.
    fn set_rounds(&mut self, rounds: usize);
}

impl FigureConfig for wflora_fed::RunConfig {
    fn set_rounds(&mut self, rounds: usize) {
        self.federation.rounds = rounds;
    }
}

impl FigureConfig for wflora_dfl::DflConfig {
    fn set_rounds(&mut self, rounds: usize) {
        self.rounds = rounds;
    }
}

impl FigureOptions {
    /// The figure's base run `base` with [`ConfigOverrides::set`] and then
    /// [`ConfigOverrides::rounds`] applied.
    ///
    /// # Errors
    /// An unknown key or a value of the wrong type in a `--set`, named.
    pub fn apply<T: FigureConfig>(&self, base: T) -> Result<T, CliError> {
        let mut cfg = if self.config.set.is_empty() {
            base
        } else {
            wflora_fed::config::layers::apply(
                &base,
                &format!("the {} profile's base run", self.profile.name()),
                &self.config.set,
            )?
        };
        if let Some(r) = self.config.rounds {
            cfg.set_rounds(r);
        }
        Ok(cfg)
    }

    /// The seeds to run: `1..=N` with `--seeds N`, else `profile_seeds`.
    #[must_use]
    pub fn seeds(&self, profile_seeds: Vec<u64>) -> Vec<u64> {
        match self.config.seeds {
            Some(n) => (1..=n).collect(),
            None => profile_seeds,
        }
    }
}

/// What a figure reports back.
#[derive(Debug, Clone)]
pub struct FigureOutcome {
    /// The claim checks.
    pub claims: Vec<Claim>,
    /// Where everything was written.
    pub dir: PathBuf,
}

/// A registered figure.
pub struct Figure {
    /// Identifier (`fig3`).
    pub id: &'static str,
    /// What it shows.
    pub shows: &'static str,
    /// The claim it checks.
    pub claim: &'static str,
    /// Runs it.
    pub run: fn(&FigureOptions) -> Result<FigureOutcome, CliError>,
}

/// Every figure, in order.
pub const FIGURES: &[Figure] = &[
    Figure {
        id: "fig2",
        shows: "bound terms vs rank r (Γ, C, sparsification, total, chosen r*); covariance norm per round, IID vs Dirichlet α ∈ {1, 0.1}",
        claim: "U-shaped bound with an interior r*; covariance larger under non-IID",
        run: fig2::run,
    },
    Figure {
        id: "fig3",
        shows: "test accuracy vs round, ILoRA / SOFT / SLoRA / TLoRA / RLoRA at the same ratio, non-IID",
        claim: "SOFT ≈ SLoRA ≈ close to ILoRA; TLoRA and RLoRA clearly below",
        run: fig3::run,
    },
    Figure {
        id: "fig4",
        shows: "final accuracy vs ρ per method; selection time per client-round, SOFT vs SLoRA, vs layer width",
        claim: "SOFT keeps accuracy at low ρ; SOFT's selection orders of magnitude cheaper than SVD",
        run: fig4::run,
    },
    Figure {
        id: "fig5",
        shows: "TSFA vs online-only, offline-only, myopic, ILoRA: accuracy vs simulated time; running-average latency and queue vs round",
        claim: "TSFA best accuracy per unit time and its average latency meets T̄",
        run: fig5::run,
    },
    Figure {
        id: "fig6",
        shows: "sweep of V and of T̄: final accuracy, kept ratio, average latency and queue",
        claim: "the O(1/V) / O(V) trade-off",
        run: fig6::run,
    },
    Figure {
        id: "fig7",
        shows: "accuracy vs fixed rank under the budget, TSFA's r* marked",
        claim: "the offline choice sits near the best rank",
        run: fig7::run,
    },
    Figure {
        id: "fig8",
        shows: "ablations: orthogonality weight ζ (importance-vs-singular-value error, accuracy), SOFT vs SOFT-Δ, error feedback on/off",
        claim: "near-orthogonality makes s_i match singular values and keeps accuracy",
        run: fig8::run,
    },
    Figure {
        id: "so1",
        shows: "SO-LoRA vs plain decentralized LoRA, FFA-LoRA and local-only: per-task accuracy vs round and vs bits sent",
        claim: "+5 points over plain decentralized LoRA; up to 73% less communication",
        run: so::run_so1,
    },
    Figure {
        id: "so2",
        shows: "topology ablation: SO-LoRA and plain decentralized LoRA on ring, geometric, full and cluster graphs",
        claim: "the cluster topology serves SO-LoRA best; SO-LoRA above plain LoRA on every topology",
        run: so::run_so2,
    },
    Figure {
        id: "so3",
        shows: "inference on every task's inputs: implicit MoE (task codes) vs oracle hard routing vs one averaged adapter",
        claim: "implicit MoE close to hard routing and above averaging",
        run: so::run_so3,
    },
];

/// The figure called `id`.
///
/// # Errors
/// An unknown id, listing the known ones.
pub fn find(id: &str) -> Result<&'static Figure, CliError> {
    FIGURES.iter().find(|f| f.id == id).ok_or_else(|| {
        let known: Vec<_> = FIGURES.iter().map(|f| f.id).collect();
        format!(
            "unknown figure '{id}' (known: {}, or all)",
            known.join(", ")
        )
        .into()
    })
}

/// Default output directory of a figure.
#[must_use]
pub fn default_out(id: &str) -> PathBuf {
    Path::new("results").join(id)
}
