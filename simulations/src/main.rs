//! The `breakwater-simulations` binary: `run SCENARIO --seed N --out DIR`
//! runs a scenario file with real nodes, prints the summary table and writes
//! `report.json`, `report.md` and the plots; `bench --out DIR [--quick]`
//! measures Breakwater against raw gossipsub and writes `bench.json` and
//! `bench.md`; `fuzz [--cases N] [--seed S]` runs every decoder under
//! mutation and exits non-zero on any failure; `chaos --out DIR [--quick]`
//! runs real `breakwater` processes in network namespaces under injected
//! faults and writes `chaos.json` and `chaos.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use breakwater_simulations::bench::{self, BenchSettings, Section};
use breakwater_simulations::chaos;
use breakwater_simulations::run::PhaseOptions;
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
        /// Spreads the nodes over this many OS processes (scenarios that
        /// publish on a healthy network only).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        processes: u16,
    },
    /// Measures Breakwater against raw gossipsub and the crypto limit; writes
    /// bench.json and bench.md.
    Bench {
        /// Where bench.json and bench.md go.
        #[arg(long)]
        out: PathBuf,
        /// Smaller sizes: about 80 s instead of about 6 minutes.
        #[arg(long, conflicts_with = "tiny")]
        quick: bool,
        /// Toy sizes that only exercise every path (seconds).
        #[arg(long, hide = true)]
        tiny: bool,
        /// Runs only these parts (comma-separated); the others are null in bench.json.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<Section>,
        /// Mesh sizes for the latency part, e.g. 50,100,300.
        #[arg(long, value_delimiter = ',')]
        latency_nodes: Vec<usize>,
        /// Makes every plan repeatable.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Where the temporary stores go (default /dev/shm, else the temp dir).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Prints progress.
        #[arg(long, short)]
        verbose: bool,
        /// Spreads the Breakwater nodes of the mesh parts over this many OS
        /// processes (raw gossipsub stays in one).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        processes: u16,
    },
    /// Runs every decoder (envelope, roster, card, sync, API bodies) on
    /// mutated valid encodings; exits non-zero if one panics or accepts a
    /// mutated signed object.
    Fuzz {
        /// Cases per decoder.
        #[arg(long, default_value_t = 1_000_000)]
        cases: u64,
        /// Makes every case repeatable.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Only these decoders (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Runs only this case index (replays a reported failure).
        #[arg(long)]
        case: Option<u64>,
        /// Runs the input in FILE through the one decoder named by --only.
        #[arg(long, conflicts_with = "case")]
        replay: Option<PathBuf>,
        /// Where failing inputs are written.
        #[arg(long, default_value = "fuzz-failures")]
        failures: PathBuf,
    },
    /// Runs real `breakwater run` processes in network namespaces under a
    /// seeded fault schedule, checks the recorded history and writes
    /// chaos.json and chaos.md (needs root, ip, tc and iptables).
    Chaos {
        /// A short run: 5 nodes, 45 s of faults (unless set otherwise).
        #[arg(long)]
        quick: bool,
        /// Makes the fault schedule and the workload repeatable.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Nodes, at least 5 (default 7, or 5 with --quick).
        #[arg(long)]
        nodes: Option<usize>,
        /// Length of the fault-and-workload phase, e.g. 90s, 30m (default 5m, or 45s with --quick).
        #[arg(long)]
        duration: Option<String>,
        /// Where chaos.json, chaos.md, the timeline and the history go.
        #[arg(long)]
        out: PathBuf,
        /// The breakwater binary (default: next to this one, built first under cargo run).
        #[arg(long)]
        breakwater: Option<PathBuf>,
        /// Prints the faults as they are applied and keeps the node logs.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Used by `bench`: starts the node at DATA_DIR in this fresh process,
    /// prints its start time and memory as JSON, and stops it.
    #[command(hide = true)]
    ColdStart {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Used by `--processes`: runs one part of a spread run as the spec and
    /// the orders on stdin say, reporting on stdout.
    #[command(hide = true)]
    Part {
        /// The spread spec the parent wrote.
        #[arg(long)]
        spec: PathBuf,
        /// Which part this is.
        #[arg(long)]
        part: usize,
    },
}

fn main() -> ExitCode {
    let process_start = std::time::Instant::now();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli, process_start) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, process_start: std::time::Instant) -> anyhow::Result<()> {
    if let Command::Fuzz {
        cases,
        seed,
        only,
        case,
        replay,
        failures,
    } = cli.command
    {
        return fuzz(cases, seed, only, case, replay, failures);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run {
            scenario,
            seed,
            out,
            nodes,
            no_baseline,
            work_dir,
            verbose,
            processes,
        } => {
            let scenario = Scenario::load(&scenario)?;
            let mut options = Options::new(seed);
            options.nodes = nodes;
            options.baseline = !no_baseline;
            options.verbose = verbose;
            options.processes = usize::from(processes);
            if let Some(dir) = work_dir {
                options.work_dir = dir;
            }
            let outcome = runtime.block_on(simulate(&scenario, &options))?;
            write_outputs(&outcome, &out)?;
            println!("{}", report::summary_table(&outcome.report));
            println!("wrote {}", out.join("report.md").display());
        }
        Command::Bench {
            out,
            quick,
            tiny,
            only,
            latency_nodes,
            seed,
            work_dir,
            verbose,
            processes,
        } => {
            let mut settings = if tiny {
                BenchSettings::tiny()
            } else if quick {
                BenchSettings::quick()
            } else {
                BenchSettings::full()
            };
            if !only.is_empty() {
                settings.sections = only;
            }
            if latency_nodes.iter().any(|&n| n < 2) {
                anyhow::bail!("--latency-nodes: a mesh needs at least 2 nodes");
            }
            if !latency_nodes.is_empty() {
                settings.latency_nodes = latency_nodes;
            }
            let mut options = Options::new(seed);
            if let Some(dir) = work_dir {
                options.work_dir = dir;
            }
            let phase = PhaseOptions {
                work_dir: options.work_dir,
                verbose,
                processes: usize::from(processes),
            };
            let report = runtime.block_on(bench::bench(&settings, seed, &phase))?;
            let md = bench::write(&report, &out)?;
            println!("{}", bench::markdown(&report));
            println!("wrote {} and bench.json", md.display());
        }
        Command::Fuzz { .. } => {}
        Command::Chaos {
            quick,
            seed,
            nodes,
            duration,
            out,
            breakwater,
            verbose,
        } => {
            let bin = match breakwater {
                Some(bin) => bin,
                None => chaos::sibling_binary()?,
            };
            let mut options = chaos::ChaosOptions::new(quick, bin, out.clone());
            options.seed = seed;
            options.verbose = verbose;
            if let Some(n) = nodes {
                options.nodes = n;
            }
            if let Some(text) = duration {
                options.duration = chaos::parse_duration(&text).context("--duration")?;
                options.converge_deadline = options.converge_deadline.max(options.duration / 4);
            }
            let report = chaos::run(&options)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            println!("wrote {}", out.join("chaos.md").display());
            if !report.passed() {
                anyhow::bail!(
                    "the chaos run broke a promise; history and logs are in {}",
                    out.display()
                );
            }
        }
        Command::ColdStart { data_dir } => {
            runtime.block_on(bench::node::cold_start_child(&data_dir, process_start))?;
        }
        Command::Part { spec, part } => {
            runtime.block_on(breakwater_simulations::spread::part(&spec, part))?;
        }
    }
    Ok(())
}

fn fuzz(
    cases: u64,
    seed: u64,
    only: Vec<String>,
    case: Option<u64>,
    replay: Option<PathBuf>,
    failures: PathBuf,
) -> anyhow::Result<()> {
    use breakwater_simulations::fuzz;
    let world = fuzz::World::new()?;
    if let Some(path) = replay {
        let [decoder] = only.as_slice() else {
            anyhow::bail!("--replay needs exactly one decoder in --only");
        };
        let input = std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let outcome = fuzz::replay(&world, decoder, &input)?;
        println!(
            "{decoder}: decoded {} accepted {}",
            outcome.decoded, outcome.accepted
        );
        return match outcome.problem {
            Some(problem) => anyhow::bail!("{decoder}: {problem}"),
            None => Ok(()),
        };
    }
    let options = fuzz::FuzzOptions {
        cases,
        seed,
        only,
        case,
        failures_dir: Some(failures),
    };
    let reports = fuzz::fuzz(&world, &options, |decoder, done| {
        if done % 100_000 == 0 {
            eprintln!("{decoder}: {done} cases");
        }
    })?;
    print!("{}", fuzz::table(&reports));
    let failed: Vec<_> = reports.iter().flat_map(|r| &r.failures).collect();
    for failure in &failed {
        println!("FAIL {failure}");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} failing case(s)", failed.len())
    }
}
