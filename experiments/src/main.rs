//! The `wflora` command line: see `wflora --help`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use wflora_experiments::cli;

#[derive(Parser)]
#[command(name = "wflora", version, about = "Wireless federated LoRA fine-tuning (SOFT, TSFA): runs, figures, benchmarks")]
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
        /// Output directory (default: results/runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue a run from its checkpoint.
        #[arg(long)]
        resume: bool,
    },
    /// Print the embedded default run configuration as TOML.
    DefaultConfig,
    /// Solve allocation problems given as JSON.
    Alloc {
        #[command(subcommand)]
        command: AllocCommand,
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, out, resume } => cli::run(&config, out.as_deref(), resume),
        Command::DefaultConfig => cli::default_config(),
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
