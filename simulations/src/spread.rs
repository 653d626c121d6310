//! A phase with its nodes spread over several OS processes
//! (`--processes K`). In one process, every node's sled store shares sled
//! 0.34's process-wide lock (`concurrency_control`): each write batch takes
//! it exclusively and, once any batch has run, every read takes it shared,
//! so 300 stores in one process wait on each other, which 300 machines never
//! do. Spread over processes, each part runs its nodes with the same
//! simulated network: links inside a part are the in-memory pipes, and links
//! between parts are loopback TCP connections behind the same shaped pipes
//! (the delay applied once, by the receiving part; see
//! [`Network::spread`]).
//!
//! The parent ([`run_phase_spread`]) prepares the consortium, writes a
//! [`Spec`], starts `breakwater-simulations part --spec FILE --part K` for
//! each part and talks to each over its stdin and stdout, one JSON object per
//! line ([`Order`] down, [`Report`] up). Times cross the processes as
//! microseconds of the system clock, which every process of one machine
//! shares. Each part publishes its own nodes' share of the script and
//! reports every `Stored` event; the parent turns it all into the same
//! [`PhaseData`] as a one-process run. Only plans that publish on a healthy
//! network (the bench's meshes, the `baseline` scenarios) can be spread:
//! impairments, partitions, crashes and hostile nodes need the one driver
//! that sees every node.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use breakwater_node::{DataDir, NodeEvent, NodeHandle, Traffic};
use breakwater_protocol::{Digest, NodePublicKey, OrgId, Tlp};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::machine;
use crate::network::{Network, Shape};
use crate::run::{
    CONNECT_DEADLINE, CONNECT_PER_NODE, CopyCounts, PhaseData, PhaseOptions, Publication,
    StoredRecord, bulletin_request, prepare_consortium, recipients, start_node,
};
use crate::scenario::{Action, Plan};

/// Overrides the binary the parts run (default: this executable). Tests,
/// whose executable is the test harness, point it at `breakwater-simulations`.
pub const PART_EXE_ENV: &str = "BREAKWATER_SIM_EXE";

/// How long the parts may take to start their nodes, at least.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// More per node of the whole run.
const START_PER_NODE: Duration = Duration::from_millis(500);

/// What every part needs to know, written by the parent as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// Nodes.
    pub n: usize,
    /// The plan's seed.
    pub seed: u64,
    /// Undirected links (`None`: every pair).
    pub links: Option<Vec<(usize, usize)>>,
    /// Topology neighbours of each node.
    pub neighbours: Vec<Vec<usize>>,
    /// Link latency, ms.
    pub latency_ms: f64,
    /// Link jitter, ± ms.
    pub jitter_ms: f64,
    /// Each node's data directory, initialised and joined.
    pub dirs: Vec<PathBuf>,
    /// The part that runs each node.
    pub owner: Vec<usize>,
    /// The publishing script, in time order.
    pub publish: Vec<Publish>,
    /// Each node's organisation (AMBER recipients are named by it).
    pub orgs: Vec<String>,
    /// How long a part waits for its nodes to reach their neighbours, ms.
    pub connect_deadline_ms: u64,
}

/// One publication of the script.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publish {
    /// ms after the script start.
    pub at_ms: u64,
    /// Author node.
    pub node: usize,
    /// The bulletin's number in the run (its title and indicator).
    pub k: u64,
    /// AMBER recipient nodes besides the author's organisation (empty: GREEN).
    pub to: Vec<usize>,
}

/// Parent → part.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// The loopback port of each part.
    Ports(Vec<u16>),
    /// Start the warm-up now; the script starts at this system time, µs.
    Go {
        /// System time of the script start, µs since the epoch.
        script_start_us: u64,
    },
    /// The drain is over: measure, stop the nodes, report and exit.
    Stop,
}

/// Part → parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The part's loopback TCP port.
    Listening(u16),
    /// Every node of the part runs.
    Started,
    /// Every node of the part reaches its neighbours (or the part's wait
    /// for that is over).
    Ready,
    /// A publish was acknowledged.
    Published {
        /// Author node.
        node: usize,
        /// Its place in the script.
        index: usize,
        /// Envelope id.
        id: Digest,
        /// System time of the publish call, µs.
        t_us: u64,
    },
    /// A publish failed.
    Failed {
        /// Author node.
        node: usize,
    },
    /// A node stored an envelope.
    Stored {
        /// Where.
        node: usize,
        /// Envelope id.
        id: Digest,
        /// Author key.
        author: NodePublicKey,
        /// Seq.
        seq: u64,
        /// Opened there.
        readable: bool,
        /// System time, µs.
        t_us: u64,
    },
    /// What the part measured, sent just before it exits.
    Done(PartFigures),
    /// The part's output ended (the parent's own note; never on the wire).
    #[serde(skip)]
    Gone,
}

/// One part's own measurements.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartFigures {
    /// CPU seconds of the part's process over its whole life.
    pub cpu_s: f64,
    /// Of those, during the warm-up.
    pub warmup_cpu_s: f64,
    /// Of those, from the script start to the stop.
    pub script_cpu_s: f64,
    /// Script CPU seconds by thread name.
    pub script_cpu_by_thread: Vec<(String, f64)>,
    /// Peak resident memory, MiB.
    pub peak_rss_mb: f64,
    /// Traffic counters of each of the part's nodes at the script start and at the stop.
    pub traffic: Vec<(usize, Option<Traffic>, Option<Traffic>)>,
    /// Bytes each node wrote and received over the script.
    pub bytes: Vec<(usize, u64, u64)>,
    /// Bytes the part's nodes wrote per second during the warm-up.
    pub idle_bytes_per_s: f64,
    /// Encoded sizes of up to 32 of the part's publications.
    pub envelope_sizes: Vec<f64>,
    /// Connections the part's nodes dialled.
    pub connections: u64,
    /// Dials refused.
    pub refused_dials: u64,
    /// Events lost by lagging subscriptions.
    pub lagged_events: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Which part runs node `i` of `n` in a run over `processes` parts: nodes
/// dealt round-robin, so every part holds nodes from all over the topology.
pub fn owner_of(i: usize, processes: usize) -> usize {
    i % processes.max(1)
}

/// Why `plan` cannot be spread over processes, if it cannot.
pub fn unsupported(plan: &Plan) -> Option<String> {
    let s = &plan.scenario;
    if !plan.hostile.is_empty() || plan.equivocator.is_some() || !plan.late.is_empty() {
        return Some("hostile nodes, an equivocator or late joiners".into());
    }
    if !s.impairments.is_empty() || !s.partitions.is_empty() || !s.crashes.is_empty() {
        return Some("impairments, partitions or crashes".into());
    }
    let shape = s.link.shape();
    if shape.bandwidth_mbit.is_some() || shape.refuse_dial > 0.0 {
        return Some("a bandwidth cap or refused dials".into());
    }
    plan.actions.iter().find_map(|t| match &t.action {
        Action::Publish { .. } => None,
        other => Some(format!("the action {other:?}")),
    })
}

/// Runs `plan` with its nodes spread over `options.processes` processes and
/// returns what a one-process run would.
pub async fn run_phase_spread(plan: &Plan, options: &PhaseOptions) -> anyhow::Result<PhaseData> {
    if let Some(what) = unsupported(plan) {
        anyhow::bail!("a run spread over processes cannot have {what}; use --processes 1");
    }
    let n = plan.n();
    let processes = options.processes.clamp(1, n.max(1));
    let scenario = &plan.scenario;
    let cpu_before = machine::cpu_seconds();
    let started = Instant::now();
    let root = options.temp_dir("breakwater-spread-")?;
    let (_fixture, dirs, configs) = prepare_consortium(
        root.path(),
        &scenario.node,
        &plan.neighbours,
        &BTreeSet::new(),
    )
    .await?;
    let mut k = 0u64;
    let publish: Vec<Publish> = plan
        .actions
        .iter()
        .filter_map(|t| match &t.action {
            Action::Publish { node, to } => {
                k += 1;
                Some(Publish {
                    at_ms: t.at_ms,
                    node: *node,
                    k,
                    to: to.clone(),
                })
            }
            _ => None,
        })
        .collect();
    let spec = Spec {
        n,
        seed: plan.seed,
        links: plan
            .links
            .as_ref()
            .map(|links| links.iter().copied().collect()),
        neighbours: plan.neighbours.clone(),
        latency_ms: scenario.link.latency_ms,
        jitter_ms: scenario.link.jitter_ms,
        dirs: dirs.iter().map(|d| d.root().to_path_buf()).collect(),
        owner: (0..n).map(|i| owner_of(i, processes)).collect(),
        publish,
        orgs: configs.iter().map(|c| c.org_id.clone()).collect(),
        // The parts share the machine's cores, so each waits as long as one
        // process running every node would.
        connect_deadline_ms: (CONNECT_DEADLINE + CONNECT_PER_NODE * n as u32).as_millis() as u64,
    };
    let spec_path = root.path().join("spread.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec)?)
        .with_context(|| format!("cannot write {}", spec_path.display()))?;

    let exe = match std::env::var_os(PART_EXE_ENV) {
        Some(exe) => PathBuf::from(exe),
        None => std::env::current_exe().context("cannot find this executable")?,
    };
    let (reports, mut inbox) = mpsc::unbounded_channel::<(usize, Report)>();
    let mut parts = Vec::new();
    for part in 0..processes {
        parts.push(Part::spawn(&exe, &spec_path, part, reports.clone())?);
    }
    drop(reports);
    let result = drive(plan, options, &spec, &mut parts, &mut inbox, started).await;
    // After their reports the parts exit by themselves; after an error, or
    // if one hangs, they are killed.
    let grace = if result.is_ok() {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    };
    for Part {
        mut child, stdin, ..
    } in parts
    {
        // The end of its stdin lets a part's runtime shut down.
        drop(stdin);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
    let mut data = result?;
    data.cpu_seconds += machine::cpu_seconds() - cpu_before;
    drop(root);
    Ok(data)
}

/// One part process.
struct Part {
    index: usize,
    child: Child,
    stdin: ChildStdin,
}

impl Part {
    fn spawn(
        exe: &Path,
        spec: &Path,
        part: usize,
        reports: mpsc::UnboundedSender<(usize, Report)>,
    ) -> anyhow::Result<Part> {
        let mut child = Command::new(exe)
            .arg("part")
            .arg("--spec")
            .arg(spec)
            .arg("--part")
            .arg(part.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} part", exe.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            anyhow::bail!("part {part} has no stdin or stdout");
        };
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Report>(&line) {
                    Ok(report) => {
                        if reports.send((part, report)).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("part {part}: unreadable report ({e}): {line}"),
                }
            }
            let _ = reports.send((part, Report::Gone));
        });
        Ok(Part {
            index: part,
            child,
            stdin,
        })
    }

    async fn order(&mut self, order: &Order) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(order)?;
        line.push(b'\n');
        let sent = async {
            self.stdin.write_all(&line).await?;
            self.stdin.flush().await
        };
        sent.await
            .with_context(|| format!("part {} is gone (its error is above)", self.index))
    }
}

/// What the parent has heard so far.
#[derive(Default)]
struct Heard {
    publications: Vec<Publication>,
    failed: u64,
    stores: Vec<StoredRecord>,
    readable: HashSet<(Digest, usize)>,
    /// Every (author, seq) stored anywhere, and how many each node stored.
    stored: HashSet<(NodePublicKey, u64)>,
    stored_by: HashMap<usize, usize>,
    done: BTreeMap<usize, PartFigures>,
}

impl Heard {
    fn take(&mut self, report: Report, origin_us: u64, spec: &Spec, honest: &[usize]) {
        let ms = |t_us: u64| t_us.saturating_sub(origin_us) as f64 / 1000.0;
        match report {
            Report::Published {
                node,
                index,
                id,
                t_us,
            } => self.publications.push(Publication {
                id,
                author: node,
                t_ms: ms(t_us),
                recipients: spec
                    .publish
                    .get(index)
                    .map(|p| recipients(honest, p.node, &p.to))
                    .unwrap_or_default(),
            }),
            Report::Failed { .. } => self.failed += 1,
            Report::Stored {
                node,
                id,
                author,
                seq,
                readable,
                t_us,
            } => {
                if readable {
                    self.readable.insert((id, node));
                }
                self.stored.insert((author, seq));
                *self.stored_by.entry(node).or_default() += 1;
                self.stores.push(StoredRecord {
                    node,
                    id,
                    author,
                    seq,
                    readable,
                    t_ms: ms(t_us),
                });
            }
            Report::Listening(_)
            | Report::Started
            | Report::Ready
            | Report::Done(_)
            | Report::Gone => {}
        }
    }

    fn delivered_all(&self) -> bool {
        self.publications.iter().all(|p| {
            p.recipients
                .iter()
                .all(|&r| self.readable.contains(&(p.id, r)))
        })
    }

    /// Whether every honest node stored every envelope stored anywhere (a
    /// node stores an AMBER envelope it cannot open too), by the events.
    fn frontiers_equal(&self, honest: &[usize]) -> bool {
        honest
            .iter()
            .all(|i| self.stored_by.get(i).copied().unwrap_or(0) == self.stored.len())
    }
}

/// Waits for one report of `kind` from every part, taking the others as they come.
async fn from_every_part<T>(
    inbox: &mut mpsc::UnboundedReceiver<(usize, Report)>,
    parts: usize,
    deadline: Duration,
    what: &str,
    mut pick: impl FnMut(&Report) -> Option<T>,
) -> anyhow::Result<Vec<T>> {
    let mut got: BTreeMap<usize, T> = BTreeMap::new();
    let until = Instant::now() + deadline;
    while got.len() < parts {
        let Ok(next) = tokio::time::timeout_at(until, inbox.recv()).await else {
            anyhow::bail!("{} of {parts} parts {what} within {deadline:?}", got.len());
        };
        match next {
            Some((part, Report::Gone)) => {
                anyhow::bail!("part {part} exited before it {what} (its error is above)")
            }
            Some((part, report)) => {
                if let Some(value) = pick(&report) {
                    got.insert(part, value);
                }
            }
            None => anyhow::bail!("every part exited before it {what}"),
        }
    }
    Ok(got.into_values().collect())
}

/// Waits for every part to start its nodes (within `start`), then for every
/// part to reach its neighbours (within `connect` of the last start); a
/// part may be ready before another has started.
async fn start_up(
    inbox: &mut mpsc::UnboundedReceiver<(usize, Report)>,
    parts: usize,
    start: Duration,
    connect: Duration,
) -> anyhow::Result<()> {
    let mut started = BTreeSet::new();
    let mut ready = BTreeSet::new();
    let mut until = Instant::now() + start;
    while ready.len() < parts {
        let what = if started.len() < parts {
            "started its nodes"
        } else {
            "reached its neighbours"
        };
        let Ok(next) = tokio::time::timeout_at(until, inbox.recv()).await else {
            let waiting = if started.len() < parts {
                started.len()
            } else {
                ready.len()
            };
            anyhow::bail!("{waiting} of {parts} parts {what} in time");
        };
        match next {
            Some((part, Report::Started)) => {
                started.insert(part);
                if started.len() == parts {
                    until = Instant::now() + connect;
                }
            }
            Some((part, Report::Ready)) => {
                ready.insert(part);
            }
            Some((part, Report::Gone)) => {
                anyhow::bail!("part {part} exited before it {what} (its error is above)")
            }
            Some(_) => {}
            None => anyhow::bail!("every part exited before it {what}"),
        }
    }
    Ok(())
}

async fn drive(
    plan: &Plan,
    options: &PhaseOptions,
    spec: &Spec,
    parts: &mut [Part],
    inbox: &mut mpsc::UnboundedReceiver<(usize, Report)>,
    started: Instant,
) -> anyhow::Result<PhaseData> {
    let scenario = &plan.scenario;
    let count = parts.len();
    let ports = from_every_part(
        inbox,
        count,
        Duration::from_secs(60),
        "listened",
        |r| match r {
            Report::Listening(port) => Some(*port),
            _ => None,
        },
    )
    .await?;
    for part in parts.iter_mut() {
        part.order(&Order::Ports(ports.clone())).await?;
    }
    // Starting a node checks the whole roster, so starting them all takes
    // time in proportion to the square of the nodes on the shared cores
    // (1,000 took about 3 minutes in one process here).
    let start = START_DEADLINE + START_PER_NODE * spec.n as u32;
    let connect = Duration::from_millis(spec.connect_deadline_ms) + Duration::from_secs(30);
    start_up(inbox, count, start, connect).await?;
    let startup_s = started.elapsed().as_secs_f64();
    let warmup = Duration::from_secs_f64(scenario.warmup_s.max(0.5));
    let origin_us = now_us();
    let script_start_us = origin_us + warmup.as_micros() as u64;
    for part in parts.iter_mut() {
        part.order(&Order::Go { script_start_us }).await?;
    }
    let script_start = Instant::now() + warmup;
    let script_end = script_start + Duration::from_secs_f64(scenario.duration_s);
    let drain_deadline = script_end + Duration::from_secs_f64(scenario.drain_s);
    let expected = spec.publish.len() as u64;
    let honest = plan.honest();
    let mut heard = Heard::default();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            next = inbox.recv() => match next {
                Some((part, Report::Gone)) => {
                    anyhow::bail!("part {part} exited during the run (its error is above)")
                }
                Some((_, report)) => heard.take(report, origin_us, spec, &honest),
                None => anyhow::bail!("every part exited before the drain ended"),
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let acknowledged = heard.publications.len() as u64 + heard.failed;
                // As in one process: everything delivered, and every node
                // holding what any node holds.
                if now >= script_end
                    && acknowledged >= expected
                    && heard.delivered_all()
                    && heard.frontiers_equal(&honest)
                {
                    break;
                }
                if now >= drain_deadline {
                    if options.verbose {
                        eprintln!("drain deadline: {acknowledged}/{expected} publications answered");
                    }
                    break;
                }
            }
        }
    }
    let end_ms = Instant::now()
        .saturating_duration_since(script_start)
        .as_secs_f64()
        * 1000.0;
    for part in parts.iter_mut() {
        part.order(&Order::Stop).await?;
    }
    let until = Instant::now() + Duration::from_secs(120);
    while heard.done.len() < count {
        let Ok(Some((part, report))) = tokio::time::timeout_at(until, inbox.recv()).await else {
            anyhow::bail!("{} of {count} parts reported at the stop", heard.done.len());
        };
        match report {
            Report::Done(figures) => {
                heard.done.insert(part, figures);
            }
            Report::Gone => {
                anyhow::bail!("part {part} exited before it reported (its error is above)")
            }
            other => heard.take(other, origin_us, spec, &honest),
        }
    }
    Ok(phase_data(
        plan,
        spec,
        heard,
        origin_us,
        script_start_us,
        end_ms,
        startup_s,
    ))
}

fn phase_data(
    plan: &Plan,
    spec: &Spec,
    heard: Heard,
    origin_us: u64,
    script_start_us: u64,
    end_ms: f64,
    startup_s: f64,
) -> PhaseData {
    let n = spec.n;
    let mut before: Vec<Option<Traffic>> = vec![None; n];
    let mut after: Vec<Option<Traffic>> = vec![None; n];
    let mut bytes_sent = vec![0; n];
    let mut bytes_received = vec![0; n];
    let mut by_thread: BTreeMap<String, f64> = BTreeMap::new();
    let mut data = PhaseData {
        n,
        honest: plan.honest(),
        script_start_ms: script_start_us.saturating_sub(origin_us) as f64 / 1000.0,
        script_ms: plan.scenario.duration_s * 1000.0,
        end_ms,
        startup_s,
        ..PhaseData::default()
    };
    let mut sizes = Vec::new();
    for figures in heard.done.values() {
        data.cpu_seconds += figures.cpu_s;
        data.warmup_cpu_seconds += figures.warmup_cpu_s;
        data.script_cpu_seconds += figures.script_cpu_s;
        data.peak_rss_mb += figures.peak_rss_mb;
        data.idle_bytes_per_s += figures.idle_bytes_per_s;
        data.lagged_events += figures.lagged_events;
        data.counters.connections += figures.connections;
        data.counters.refused_dials += figures.refused_dials;
        for (name, s) in &figures.script_cpu_by_thread {
            *by_thread.entry(name.clone()).or_default() += s;
        }
        for (i, then, now) in &figures.traffic {
            if let (Some(b), Some(a)) = (before.get_mut(*i), after.get_mut(*i)) {
                *b = *then;
                *a = *now;
            }
        }
        for &(i, sent, received) in &figures.bytes {
            if let (Some(s), Some(r)) = (bytes_sent.get_mut(i), bytes_received.get_mut(i)) {
                *s = sent;
                *r = received;
            }
        }
        sizes.extend(figures.envelope_sizes.iter().copied());
    }
    let mut by_thread: Vec<(String, f64)> = by_thread.into_iter().collect();
    by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    data.script_cpu_by_thread = by_thread;
    data.copies = CopyCounts::since(&before, &after);
    data.bytes_sent = bytes_sent;
    data.bytes_received = bytes_received;
    data.envelope_bytes = if sizes.is_empty() {
        0.0
    } else {
        sizes.iter().sum::<f64>() / sizes.len() as f64
    };
    data.frontiers_equal_at_end = heard.frontiers_equal(&data.honest);
    data.processes = heard.done.len();
    data.publications = heard.publications;
    data.failed_publishes = heard.failed;
    data.stores = heard.stores;
    data
}

/// Part `part` of a spread run (the hidden `part` command): runs its nodes
/// as [`Spec`] and the parent's [`Order`]s say, reporting on stdout.
pub async fn part(spec_path: &Path, part: usize) -> anyhow::Result<()> {
    let spec: Spec = serde_json::from_slice(
        &std::fs::read(spec_path)
            .with_context(|| format!("cannot read {}", spec_path.display()))?,
    )
    .with_context(|| format!("{} is not a spread spec", spec_path.display()))?;
    let mine: Vec<usize> = (0..spec.n)
        .filter(|&i| spec.owner.get(i) == Some(&part))
        .collect();
    let (out, mut outbox) = mpsc::unbounded_channel::<Report>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(report) = outbox.recv().await {
            let Ok(mut line) = serde_json::to_vec(&report) else {
                continue;
            };
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() {
                break;
            }
            if outbox.is_empty() && stdout.flush().await.is_err() {
                break;
            }
        }
        let _ = stdout.flush().await;
    });
    let (orders, mut order_rx) = mpsc::unbounded_channel::<Order>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Order>(&line) {
                Ok(order) => {
                    if orders.send(order).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("part: unreadable order ({e}): {line}"),
            }
        }
    });

    let network = Network::new(
        spec.n,
        spec.seed,
        spec.links.as_ref().map(|l| l.iter().copied().collect()),
    );
    network.set_shape(Shape {
        latency_ms: spec.latency_ms,
        jitter_ms: spec.jitter_ms,
        ..Shape::default()
    });
    network.spread(spec.owner.clone(), part);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot listen on loopback")?;
    let port = listener.local_addr()?.port();
    network.serve(listener);
    let _ = out.send(Report::Listening(port));
    match order_rx.recv().await {
        Some(Order::Ports(ports)) => network.set_ports(ports),
        other => anyhow::bail!("part {part}: expected the ports, got {other:?}"),
    }

    let lagged = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut nodes = Vec::new();
    let mut forwards = Vec::new();
    for &i in &mine {
        let dir = DataDir::new(spec.dirs.get(i).context("no directory for a node")?);
        let config = dir.config()?;
        let (mut node, stop) = start_node(&dir, &config, &network, i).await?;
        let fresh = node.handle.subscribe();
        let events = std::mem::replace(&mut node.events, fresh);
        forwards.push(tokio::spawn(forward(
            i,
            events,
            out.clone(),
            lagged.clone(),
        )));
        nodes.push((i, node, stop));
    }
    let handles: Vec<(usize, NodeHandle)> = nodes
        .iter()
        .map(|(i, node, _)| (*i, node.handle.clone()))
        .collect();
    let _ = out.send(Report::Started);
    let lonely = wait_for_neighbours(&spec, &handles).await;
    if lonely > 0 {
        anyhow::bail!(
            "part {part}: {lonely} nodes still have no peer after {} ms",
            spec.connect_deadline_ms
        );
    }
    futures::future::join_all(handles.iter().map(|(_, h)| h.own_feed_synced())).await;
    let _ = out.send(Report::Ready);

    let script_start_us = match order_rx.recv().await {
        Some(Order::Go { script_start_us }) => script_start_us,
        other => anyhow::bail!("part {part}: expected go, got {other:?}"),
    };
    let warmup_cpu_from = machine::cpu_seconds();
    let idle_from: u64 = mine.iter().map(|&i| network.bytes_sent(i)).sum();
    let warmup = Duration::from_micros(script_start_us.saturating_sub(now_us()));
    let script_start = Instant::now() + warmup;
    tokio::time::sleep_until(script_start).await;
    let script_cpu_from = machine::cpu_seconds();
    let threads_before = machine::cpu_seconds_by_thread();
    let idle_bytes_per_s = (mine.iter().map(|&i| network.bytes_sent(i)).sum::<u64>() - idle_from)
        as f64
        / warmup.as_secs_f64().max(0.001);
    let traffic_before = traffic(&handles).await;
    let sent_before: Vec<u64> = mine.iter().map(|&i| network.bytes_sent(i)).collect();
    let received_before: Vec<u64> = mine.iter().map(|&i| network.bytes_received(i)).collect();

    let (published_tx, mut published_rx) = mpsc::unbounded_channel::<Digest>();
    let script: Vec<(usize, &Publish)> = spec
        .publish
        .iter()
        .enumerate()
        .filter(|(_, p)| spec.owner.get(p.node) == Some(&part))
        .collect();
    let by_node: HashMap<usize, NodeHandle> = handles.iter().cloned().collect();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        while let Some(order) = order_rx.recv().await {
            if matches!(order, Order::Stop) {
                let _ = stop_tx.send(());
                break;
            }
        }
    });
    let mut next = 0;
    loop {
        let due = script
            .get(next)
            .map(|(_, p)| script_start + Duration::from_millis(p.at_ms));
        tokio::select! {
            _ = &mut stop_rx => break,
            () = async {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(&(index, publish)) = script.get(next) {
                    next += 1;
                    let node = publish.node;
                    let handle = by_node.get(&node).cloned();
                    let out = out.clone();
                    let published = published_tx.clone();
                    let (tlp, to) = if publish.to.is_empty() {
                        (Tlp::Green, Vec::new())
                    } else {
                        let to = publish
                            .to
                            .iter()
                            .filter_map(|&o| spec.orgs.get(o)?.parse::<OrgId>().ok())
                            .collect();
                        (Tlp::Amber, to)
                    };
                    let k = publish.k;
                    tokio::spawn(async move {
                        let t_us = now_us();
                        let request = bulletin_request(k, node, tlp, to);
                        let result = match handle {
                            Some(h) => h.publish(request).await.ok(),
                            None => None,
                        };
                        match result {
                            Some(p) => {
                                let _ = published.send(p.id);
                                let _ = out.send(Report::Published { node, index, id: p.id, t_us });
                            }
                            None => {
                                let _ = out.send(Report::Failed { node });
                            }
                        }
                    });
                }
            }
        }
    }
    let script_cpu_s = machine::cpu_seconds() - script_cpu_from;
    let script_cpu_by_thread =
        machine::cpu_delta(&threads_before, &machine::cpu_seconds_by_thread());
    let traffic_after = traffic(&handles).await;
    let mut ids = Vec::new();
    while let Ok(id) = published_rx.try_recv() {
        ids.push(id);
    }
    let mut envelope_sizes = Vec::new();
    if let Some((_, handle)) = handles.first() {
        for id in ids.into_iter().take(32) {
            if let Ok(detail) = handle.get(id.to_hex()).await {
                envelope_sizes.push(detail.size as f64);
            }
        }
    }
    let counters = network.counters();
    let figures = PartFigures {
        cpu_s: 0.0,
        warmup_cpu_s: script_cpu_from - warmup_cpu_from,
        script_cpu_s,
        script_cpu_by_thread,
        peak_rss_mb: 0.0,
        traffic: mine
            .iter()
            .zip(traffic_before.into_iter().zip(traffic_after))
            .map(|(&i, (b, a))| (i, b, a))
            .collect(),
        bytes: mine
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                (
                    i,
                    network.bytes_sent(i).saturating_sub(sent_before[k]),
                    network.bytes_received(i).saturating_sub(received_before[k]),
                )
            })
            .collect(),
        idle_bytes_per_s,
        envelope_sizes,
        connections: counters.connections,
        refused_dials: counters.refused_dials,
        lagged_events: lagged.load(std::sync::atomic::Ordering::Relaxed),
    };
    futures::future::join_all(nodes.into_iter().map(|(_, node, stop)| async move {
        let _ = stop.send(());
        node.wait().await;
    }))
    .await;
    // The handles keep the nodes' event channels open: drop them and the
    // forwarders, so the writer ends once the last report is out.
    drop((handles, by_node));
    for forward in forwards {
        forward.abort();
    }
    let _ = out.send(Report::Done(PartFigures {
        cpu_s: machine::cpu_seconds(),
        peak_rss_mb: machine::peak_rss_mb(),
        ..figures
    }));
    drop(out);
    let _ = writer.await;
    Ok(())
}

/// Sends node `node`'s `Stored` events to the parent.
async fn forward(
    node: usize,
    mut events: tokio::sync::broadcast::Receiver<NodeEvent>,
    out: mpsc::UnboundedSender<Report>,
    lagged: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(NodeEvent::Stored(summary)) => {
                let report = Report::Stored {
                    node,
                    id: summary.id,
                    author: summary.author,
                    seq: summary.seq,
                    readable: summary.readable,
                    t_us: now_us(),
                };
                if out.send(report).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                lagged.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
            Err(RecvError::Closed) => break,
        }
    }
}

/// Waits until each node reaches every topology neighbour, or the
/// deadline; returns how many nodes have no peer at all then.
async fn wait_for_neighbours(spec: &Spec, handles: &[(usize, NodeHandle)]) -> usize {
    let deadline = Instant::now() + Duration::from_millis(spec.connect_deadline_ms);
    loop {
        let peers = futures::future::join_all(handles.iter().map(|(_, h)| h.peers())).await;
        let counts: Vec<(usize, usize)> = handles
            .iter()
            .zip(&peers)
            .map(|((i, _), peers)| {
                let want = spec.neighbours.get(*i).map_or(0, Vec::len);
                (peers.as_ref().map_or(0, Vec::len), want)
            })
            .collect();
        let short = counts.iter().any(|(have, want)| have < want);
        if !short || Instant::now() > deadline {
            return counts.iter().filter(|(have, _)| *have == 0).count();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn traffic(handles: &[(usize, NodeHandle)]) -> Vec<Option<Traffic>> {
    futures::future::join_all(
        handles
            .iter()
            .map(|(_, h)| async move { h.status().await.ok().map(|s| s.traffic) }),
    )
    .await
}
