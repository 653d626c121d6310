//! The `breakwater-simulations` binary: `run SCENARIO --seed N --out DIR`
//! runs a scenario file with real nodes, prints the summary table and writes
//! `report.json`, `report.md` and the plots.

use std::path::PathBuf;
use std::process::ExitCode;

use breakwater_simulations::scenario::Scenario;
use breakwater_simulations::{Options, report, simulate, write_outputs};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "breakwater-simulations",
    about = "Breakwater nodes under degraded networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a scenario file and writes its report.
    Run {
        /// The scenario (TOML), e.g. simulations/scenarios/port-split.toml.
        scenario: PathBuf,
        /// Makes topology and schedule repeatable.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where report.json, report.md and the plots go.
        #[arg(long)]
        out: PathBuf,
        /// Overrides the scenario's node count.
        #[arg(long)]
        nodes: Option<usize>,
        /// Skips the unimpaired baseline.
        #[arg(long)]
        no_baseline: bool,
        /// Where the nodes' temporary stores go (default /dev/shm, else the temp dir).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Prints the script as it runs.
        #[arg(long, short)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Run {
        scenario,
        seed,
        out,
        nodes,
        no_baseline,
        work_dir,
        verbose,
    } = cli.command;
    let scenario = Scenario::load(&scenario)?;
    let mut options = Options::new(seed);
    options.nodes = nodes;
    options.baseline = !no_baseline;
    options.verbose = verbose;
    if let Some(dir) = work_dir {
        options.work_dir = dir;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(simulate(&scenario, &options))?;
    write_outputs(&outcome, &out)?;
    println!("{}", report::summary_table(&outcome.report));
    println!("wrote {}", out.join("report.md").display());
    Ok(())
}
