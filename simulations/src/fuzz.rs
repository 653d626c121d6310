//! Decoders under mutation: every decoder that takes bytes from a peer, a
//! file or the local API ([`targets`]) gets structure-aware mutants of
//! valid encodings ([`mutate`]) and must neither panic nor accept a mutated
//! signed object. Seeded and deterministic: case `i` of decoder `d` under
//! seed `s` is always the same input, so a failure printed as
//! `--only d --seed s --case i` (or the input file written for it) replays.
//!
//! Run by `breakwater-simulations fuzz` (1,000,000 cases per decoder by
//! default) and by `tests/fuzz.rs` (10,000 per decoder).

pub mod mutate;
pub mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

pub use targets::{Outcome, Target, World};

/// What to run.
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    /// Cases per decoder.
    pub cases: u64,
    /// The run's seed.
    pub seed: u64,
    /// Only these decoders (empty: all).
    pub only: Vec<String>,
    /// Only this case index (to replay one failure).
    pub case: Option<u64>,
    /// Where failing inputs are written (`None`: not written).
    pub failures_dir: Option<PathBuf>,
}

impl FuzzOptions {
    /// `cases` per decoder under `seed`, every decoder, failures not written.
    pub fn new(cases: u64, seed: u64) -> FuzzOptions {
        FuzzOptions {
            cases,
            seed,
            only: Vec::new(),
            case: None,
            failures_dir: None,
        }
    }
}

/// One failing case.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The decoder.
    pub decoder: &'static str,
    /// The run's seed.
    pub seed: u64,
    /// The case index.
    pub case: u64,
    /// How the input was made.
    pub mutation: String,
    /// What went wrong (a panic's message, or the broken invariant).
    pub problem: String,
    /// The input, as written to `failures_dir`.
    pub file: Option<PathBuf>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} case {} (seed {}): {} [{}]; replay: fuzz --only {} --seed {} --case {}",
            self.decoder,
            self.case,
            self.seed,
            self.problem,
            self.mutation,
            self.decoder,
            self.seed,
            self.case
        )?;
        if let Some(file) = &self.file {
            write!(f, " (input: {})", file.display())?;
        }
        Ok(())
    }
}

/// The figures of one decoder.
#[derive(Debug, Clone)]
pub struct DecoderReport {
    /// The decoder.
    pub decoder: &'static str,
    /// Cases run.
    pub cases: u64,
    /// Cases the decoder took.
    pub decoded: u64,
    /// Cases the node would act on (signed objects: verified).
    pub accepted: u64,
    /// Of those, inputs equal to a seed (a mutation that undid itself).
    pub accepted_seeds: u64,
    /// Failing cases.
    pub failures: Vec<Failure>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Case `case` of `decoder` under `seed`: its RNG, independent of every
/// other case so any one can be replayed alone.
fn case_rng(seed: u64, decoder: &str, case: u64) -> ChaCha8Rng {
    let tag = blake3::hash(decoder.as_bytes());
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&tag.as_bytes()[..8]);
    let mixed = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(u64::from_le_bytes(prefix))
        .rotate_left(17)
        ^ case.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ChaCha8Rng::seed_from_u64(mixed)
}

/// The input of one case and how it was made.
pub fn make_case(target: &dyn Target, seed: u64, case: u64) -> (Vec<u8>, String) {
    let mut rng = case_rng(seed, target.name(), case);
    let seeds = target.seeds();
    let from = rng.random_range(0..seeds.len().max(1));
    let original = seeds.get(from).cloned().unwrap_or_default();
    // Half the cases mutate a field of the decoded value (and some of those
    // then bytes too); the rest mutate the seed's bytes.
    let structured = if rng.random_bool(0.5) {
        target.structured(&mut rng, from)
    } else {
        None
    };
    let was_structured = structured.is_some();
    let (start, mut how) = match structured {
        Some((bytes, what)) => (bytes, format!("seed {from}: {what}")),
        None => (original, format!("seed {from}")),
    };
    if !was_structured || rng.random_bool(0.3) {
        let other = rng.random_range(0..seeds.len().max(1));
        let other = seeds.get(other).map(Vec::as_slice).unwrap_or_default();
        let (bytes, what) = mutate::bytes(&mut rng, &start, other);
        how.push_str(&format!("; {what}"));
        return (bytes, how);
    }
    (start, how)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Runs `input` through `target`, turning a panic into a problem.
pub fn run_one(target: &dyn Target, input: &[u8]) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| target.check(input))) {
        Ok(outcome) => outcome,
        Err(payload) => Outcome {
            problem: Some(format!("panic: {}", panic_message(payload.as_ref()))),
            ..Outcome::default()
        },
    }
}

/// Fuzzes one target; `progress` is called now and then with cases done.
pub fn fuzz_target(
    target: &dyn Target,
    options: &FuzzOptions,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<DecoderReport> {
    let started = Instant::now();
    let mut report = DecoderReport {
        decoder: target.name(),
        cases: 0,
        decoded: 0,
        accepted: 0,
        accepted_seeds: 0,
        failures: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let range = match options.case {
        Some(case) => case..case + 1,
        None => 0..options.cases,
    };
    for case in range {
        let (input, mutation) = make_case(target, options.seed, case);
        let outcome = run_one(target, &input);
        report.cases += 1;
        report.decoded += u64::from(outcome.decoded);
        report.accepted += u64::from(outcome.accepted);
        if outcome.accepted && target.seeds().contains(&input) {
            report.accepted_seeds += 1;
        }
        if let Some(problem) = outcome.problem {
            let file = match &options.failures_dir {
                Some(dir) => Some(write_failure(
                    dir,
                    target.name(),
                    options.seed,
                    case,
                    &input,
                )?),
                None => None,
            };
            report.failures.push(Failure {
                decoder: target.name(),
                seed: options.seed,
                case,
                mutation,
                problem,
                file,
            });
        }
        if case % 10_000 == 9_999 {
            progress(case + 1);
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn write_failure(
    dir: &Path,
    decoder: &str,
    seed: u64,
    case: u64,
    input: &[u8],
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{decoder}-seed{seed}-case{case}.bin"));
    std::fs::write(&path, input).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Fuzzes every selected decoder of `world`. Panics inside a decoder are
/// caught and reported (the default panic message is silenced meanwhile).
pub fn fuzz(
    world: &World,
    options: &FuzzOptions,
    mut progress: impl FnMut(&str, u64),
) -> anyhow::Result<Vec<DecoderReport>> {
    targets::check_sync_coverage(world)?;
    let targets = world.targets()?;
    let names: Vec<&str> = targets.iter().map(|t| t.name()).collect();
    if let Some(unknown) = options.only.iter().find(|o| !names.contains(&o.as_str())) {
        anyhow::bail!("no decoder {unknown:?} (decoders: {})", names.join(", "));
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut reports = Vec::new();
    let mut result = Ok(());
    for target in &targets {
        if !options.only.is_empty() && !options.only.iter().any(|o| o == target.name()) {
            continue;
        }
        match fuzz_target(target.as_ref(), options, |done| {
            progress(target.name(), done)
        }) {
            Ok(report) => reports.push(report),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    std::panic::set_hook(hook);
    result.map(|()| reports)
}

/// Runs one saved input through decoder `decoder`.
pub fn replay(world: &World, decoder: &str, input: &[u8]) -> anyhow::Result<Outcome> {
    let targets = world.targets()?;
    let target = targets
        .iter()
        .find(|t| t.name() == decoder)
        .with_context(|| format!("no decoder {decoder:?}"))?;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = run_one(target.as_ref(), input);
    std::panic::set_hook(hook);
    Ok(outcome)
}

/// The per-decoder table.
pub fn table(reports: &[DecoderReport]) -> String {
    let mut out = format!(
        "{:<14} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10}\n",
        "decoder", "cases", "decoded", "accepted", "(seeds)", "failures", "cases/s"
    );
    for r in reports {
        let rate = r.cases as f64 / r.elapsed.as_secs_f64().max(1e-9);
        out.push_str(&format!(
            "{:<14} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10.0}\n",
            r.decoder,
            r.cases,
            r.decoded,
            r.accepted,
            r.accepted_seeds,
            r.failures.len(),
            rate
        ));
    }
    out
}
