//! Breakwater simulations: many real `breakwater_node` nodes in one tokio
//! runtime over a shaped in-memory network ([`network`]), driven through a
//! scripted scenario ([`scenario`], [`run`]), measured ([`metrics`]) and
//! reported ([`report`], [`plots`]). The binary in `main.rs` is a thin CLI
//! over [`simulate`]. [`fuzz`] runs every decoder under mutation.

pub mod bench;
pub mod chaos;
pub mod fuzz;
pub mod hostile;
pub mod machine;
pub mod metrics;
pub mod network;
pub mod plots;
pub mod raw;
pub mod report;
pub mod run;
pub mod scenario;
pub mod spread;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::report::Report;
use crate::run::{PhaseData, PhaseOptions, run_phase};
use crate::scenario::{Plan, Scenario};

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed.
    pub seed: u64,
    /// Overrides the scenario's node count.
    pub nodes: Option<usize>,
    /// Also measure the unimpaired baseline.
    pub baseline: bool,
    /// Where the temp stores go.
    pub work_dir: PathBuf,
    /// Print the script as it runs.
    pub verbose: bool,
    /// OS processes the nodes are spread over ([`spread`]); 1: this one.
    pub processes: usize,
}

impl Options {
    /// Defaults: seed 1, baseline on, stores in `/dev/shm` when present.
    pub fn new(seed: u64) -> Options {
        let shm = Path::new("/dev/shm");
        Options {
            seed,
            nodes: None,
            baseline: true,
            work_dir: if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            },
            verbose: false,
            processes: 1,
        }
    }
}

/// A finished simulation.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `report.json`.
    pub report: Report,
    /// Raw records of the scenario.
    pub scenario: PhaseData,
    /// Raw records of the baseline.
    pub baseline: Option<PhaseData>,
}

/// Runs `scenario` (after its baseline, when asked) and builds the report.
pub async fn simulate(scenario: &Scenario, options: &Options) -> anyhow::Result<Outcome> {
    let mut scenario = scenario.clone();
    if let Some(n) = options.nodes {
        scenario.nodes = n;
    }
    scenario.check()?;
    let plan = Plan::new(&scenario, options.seed)?;
    if options.processes > 1
        && let Some(what) = spread::unsupported(&plan)
    {
        anyhow::bail!(
            "--processes: a run spread over processes cannot have {what}; {} can only run in one",
            scenario.name
        );
    }
    let phase = PhaseOptions {
        work_dir: options.work_dir.clone(),
        verbose: options.verbose,
        processes: options.processes,
    };
    let (baseline, baseline_note) = if !options.baseline {
        (
            None,
            "No baseline was measured (--no-baseline).".to_string(),
        )
    } else if !scenario.is_impaired() {
        (
            None,
            "The scenario has no impairment, so it is its own baseline.".to_string(),
        )
    } else {
        let clean = plan.unimpaired();
        if options.verbose {
            eprintln!("baseline: {} nodes, no impairment", clean.n());
        }
        let data = run_phase(&clean, &phase)
            .await
            .context("baseline phase failed")?;
        (
            Some(data),
            "The baseline ran first in the same process: same seed, topology and publishing script, without impairments, partitions, crashes or late joiners; hostile members run as passive honest nodes.".to_string(),
        )
    };
    if options.verbose {
        eprintln!("scenario {}: {} nodes", scenario.name, plan.n());
    }
    let data = run_phase(&plan, &phase)
        .await
        .context("scenario phase failed")?;
    let figures = metrics::figures(&data);
    let report = Report {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        seed: options.seed,
        nodes: plan.n(),
        honest_nodes: plan.honest().len(),
        hostile_nodes: plan.hostile.len(),
        baseline: match (&baseline, scenario.is_impaired()) {
            (Some(b), _) => Some(metrics::figures(b)),
            (None, false) if options.baseline => Some(figures.clone()),
            _ => None,
        },
        figures,
        baseline_note,
        machine: machine::machine(),
        settings: scenario,
        notes: report::NOTES.iter().map(|s| s.to_string()).collect(),
    };
    Ok(Outcome {
        report,
        scenario: data,
        baseline,
    })
}

/// Writes `report.json`, `report.md` and the plots into `dir`.
pub fn write_outputs(outcome: &Outcome, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    outcome.report.write_json(dir)?;
    plots::delivery(
        &dir.join("delivery.svg"),
        &outcome.scenario,
        outcome.baseline.as_ref(),
    )?;
    plots::convergence(&dir.join("convergence.svg"), &outcome.scenario)?;
    plots::bytes(&dir.join("bytes.svg"), &outcome.scenario)?;
    let md = dir.join("report.md");
    std::fs::write(&md, report::markdown(&outcome.report))
        .with_context(|| format!("cannot write {}", md.display()))?;
    Ok(())
}
