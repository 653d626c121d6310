//! The chaos workload, through the real CLI: one writer per organisation
//! (GREEN bulletins, AMBER to random organisations, retractions of its own
//! bulletins, sightings of bulletins it can read) and concurrent readers
//! (`list --all --json` on random nodes). Every answer goes into the
//! [`History`]; the writers' in-flight flags let the fault schedule kill a
//! node while a publish is under way.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breakwater_node::Summary;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::cluster::Cluster;
use super::history::{History, Op, OpKind, Outcome, Read};

/// An acknowledged bulletin the writers may follow up on.
#[derive(Debug, Clone)]
struct Known {
    id: String,
    author: usize,
    /// Nodes that can read it.
    audience: BTreeSet<usize>,
    indicator: String,
    retracted: bool,
}

/// State shared by the writers, the readers and the fault schedule.
#[derive(Debug)]
pub struct Workload {
    cluster: Arc<Cluster>,
    history: Arc<History>,
    stop: AtomicBool,
    next_op: AtomicU64,
    known: Mutex<Vec<Known>>,
    /// Per node: a write is in flight.
    pub in_flight: Vec<AtomicBool>,
}

/// Whether a failed CLI call may still have reached the node: the process
/// was killed or timed out, or the connection died after the request went
/// out.
fn indeterminate(out: &std::process::Output, stderr: &str) -> bool {
    if out.status.code().is_none()
        || out.status.code() == Some(124)
        || out.status.code() == Some(137)
    {
        return true;
    }
    [
        "request to",
        "error reading",
        "connection",
        "unexpected answer",
        "broken pipe",
        "reset",
        // A publish whose envelope is stored but not flushed (full disk).
        "whether it is published is unknown",
    ]
    .iter()
    .any(|needle| stderr.to_lowercase().contains(needle))
        && !stderr.contains("no node running")
}

/// A summary of about 3 KB, so stores grow past sled's first segment and
/// the full disk bites.
fn filler(op: u64) -> String {
    let line =
        format!("Observed during chaos op {op}: beaconing to the indicator from crane PLCs. ");
    line.repeat(3072 / line.len() + 1)
}

impl Workload {
    /// A workload over `cluster`, recording into `history`.
    pub fn new(cluster: Arc<Cluster>, history: Arc<History>) -> Arc<Workload> {
        let n = cluster.slots.len();
        Arc::new(Workload {
            cluster,
            history,
            stop: AtomicBool::new(false),
            next_op: AtomicU64::new(1),
            known: Mutex::new(Vec::new()),
            in_flight: (0..n).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    /// Asks writers and readers to stop after their current call.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Starts one writer per node and `readers` readers; returns their threads.
    pub fn spawn(self: &Arc<Self>, seed: u64, readers: usize) -> Vec<std::thread::JoinHandle<()>> {
        let mut threads = Vec::new();
        for i in 0..self.cluster.slots.len() {
            let me = Arc::clone(self);
            threads.push(std::thread::spawn(move || me.writer(i, seed)));
        }
        for r in 0..readers {
            let me = Arc::clone(self);
            threads.push(std::thread::spawn(move || me.reader(r, seed)));
        }
        threads
    }

    fn writer(&self, i: usize, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0x5717_e400 + i as u64));
        let n = self.cluster.slots.len();
        while !self.stopped() {
            std::thread::sleep(Duration::from_millis(rng.random_range(250..900)));
            if self.stopped() {
                break;
            }
            let roll = rng.random_range(0..100);
            let op = self.next_op.fetch_add(1, Ordering::SeqCst);
            let (own, readable) = self.candidates(i);
            if roll < 12 && !own.is_empty() {
                let target = own[rng.random_range(0..own.len())].clone();
                let reason = format!("chaos op {op}: withdrawn");
                self.write(
                    i,
                    op,
                    OpKind::Retract,
                    vec![],
                    Some(target.id.clone()),
                    &["retract", &target.id, "--reason", &reason],
                );
            } else if roll < 30 && !readable.is_empty() {
                let target = readable[rng.random_range(0..readable.len())].clone();
                self.write(
                    i,
                    op,
                    OpKind::Sight,
                    vec![],
                    Some(target.id.clone()),
                    &["sight", &target.id, "--indicator", &target.indicator],
                );
            } else if roll < 65 || n < 2 {
                let title = format!("chaos op {op} from {}", self.org(i));
                let indicator = format!("domain:op{op}.chaos.example");
                let summary = filler(op);
                self.write(
                    i,
                    op,
                    OpKind::Green,
                    vec![],
                    None,
                    &[
                        "publish",
                        "--tlp",
                        "green",
                        "--severity",
                        "high",
                        "--title",
                        &title,
                        "--summary",
                        &summary,
                        "--indicator",
                        &indicator,
                    ],
                );
            } else {
                let mut to = BTreeSet::new();
                for _ in 0..rng.random_range(1..=2) {
                    let j = rng.random_range(0..n);
                    if j != i {
                        to.insert(self.org(j));
                    }
                }
                if to.is_empty() {
                    to.insert(self.org((i + 1) % n));
                }
                let to: Vec<String> = to.into_iter().collect();
                let title = format!("chaos op {op} from {}", self.org(i));
                let indicator = format!("domain:op{op}.chaos.example");
                let to_arg = to.join(",");
                let summary = filler(op);
                self.write(
                    i,
                    op,
                    OpKind::Amber,
                    to.clone(),
                    None,
                    &[
                        "publish",
                        "--tlp",
                        "amber",
                        "--to",
                        &to_arg,
                        "--severity",
                        "medium",
                        "--title",
                        &title,
                        "--summary",
                        &summary,
                        "--indicator",
                        &indicator,
                    ],
                );
            }
        }
    }

    fn org(&self, i: usize) -> String {
        self.cluster
            .slots
            .get(i)
            .map(|s| s.org.clone())
            .unwrap_or_default()
    }

    /// Node `i`'s own unretracted bulletins, and the bulletins it can read.
    fn candidates(&self, i: usize) -> (Vec<Known>, Vec<Known>) {
        let known = self.known.lock().map(|k| k.clone()).unwrap_or_default();
        let own = known
            .iter()
            .filter(|k| k.author == i && !k.retracted)
            .cloned()
            .collect();
        let readable = known
            .into_iter()
            .filter(|k| k.audience.contains(&i))
            .collect();
        (own, readable)
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        i: usize,
        op: u64,
        kind: OpKind,
        to: Vec<String>,
        target: Option<String>,
        args: &[&str],
    ) {
        let flag = self.in_flight.get(i);
        if let Some(flag) = flag {
            flag.store(true, Ordering::SeqCst);
        }
        let start_ms = self.cluster.now_ms();
        let result = self.cluster.cli(i, args);
        let end_ms = self.cluster.now_ms();
        if let Some(flag) = flag {
            flag.store(false, Ordering::SeqCst);
        }
        let outcome = match result {
            Err(e) => Outcome::Refused {
                error: format!("{e:#}"),
            },
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let stderr = String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', " ");
                if out.status.success() && stdout.len() == 64 {
                    Outcome::Ack { id: stdout }
                } else if indeterminate(&out, &stderr) {
                    Outcome::Indeterminate {
                        error: format!("{} ({})", stderr, out.status),
                    }
                } else {
                    Outcome::Refused { error: stderr }
                }
            }
        };
        if let Outcome::Ack { id } = &outcome {
            self.learn(i, op, kind, &to, target.as_deref(), id);
        }
        self.history.op(Op {
            op,
            node: i,
            org: self.org(i),
            kind,
            to,
            target,
            start_ms,
            end_ms,
            outcome,
        });
    }

    /// Remembers an acknowledged bulletin (or marks a retraction's target).
    fn learn(
        &self,
        i: usize,
        op: u64,
        kind: OpKind,
        to: &[String],
        target: Option<&str>,
        id: &str,
    ) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        let n = self.cluster.slots.len();
        match kind {
            OpKind::Green | OpKind::Amber => {
                let audience = if kind == OpKind::Green {
                    (0..n).collect()
                } else {
                    (0..n)
                        .filter(|&j| j == i || to.contains(&self.org(j)))
                        .collect()
                };
                known.push(Known {
                    id: id.to_string(),
                    author: i,
                    audience,
                    indicator: format!("domain:op{op}.chaos.example"),
                    retracted: false,
                });
            }
            OpKind::Retract => {
                for k in known.iter_mut().filter(|k| Some(k.id.as_str()) == target) {
                    k.retracted = true;
                }
            }
            OpKind::Sight => {}
        }
    }

    fn reader(&self, r: usize, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0x0ead_e400 + r as u64));
        let n = self.cluster.slots.len();
        while !self.stopped() {
            std::thread::sleep(Duration::from_millis(rng.random_range(200..600)));
            let i = rng.random_range(0..n);
            let t_ms = self.cluster.now_ms();
            let listed: Option<Vec<Summary>> = self.cluster.list_all(i).ok();
            self.history.read(Read {
                node: i,
                t_ms,
                stored: listed.as_ref().map(Vec::len),
                readable: listed
                    .as_ref()
                    .map(|l| l.iter().filter(|s| s.readable).count()),
            });
        }
    }
}
