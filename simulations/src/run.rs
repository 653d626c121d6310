//! The driver: starts real `breakwater_node` nodes on temp sled stores over
//! one simulated [`Network`], plays a [`Plan`]'s script against them
//! (publishing, impairing, splitting, crashing, restarting, attacking),
//! records every `NodeEvent::Stored` with its time, waits for delivery, and
//! hands the raw [`PhaseData`] to `metrics`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use breakwater_node::export::{ImportRequest, ItemOutcome};
use breakwater_node::node::join_offline;
use breakwater_node::{
    Config, DataDir, Node, NodeEvent, NodeHandle, PublishRequest, Traffic, spawn,
};
use breakwater_protocol::fixture::{Fixture, bulletin_draft};
use breakwater_protocol::seal;
use breakwater_protocol::{Bulletin, Digest, Indicator, NodePublicKey, OrgId, Severity, Tlp};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::hostile::{HostileLog, HostileNode, HostileSetup};
use crate::machine;
use crate::network::{Network, NetworkCounters, addr_of};
use crate::scenario::{Action, NodeSettings, Plan};

/// How long to wait for the initial nodes to connect, at least.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(60);
/// More time to connect per node: a large mesh dials for minutes on two
/// cores (1,000 nodes took about 3 minutes to start here).
pub const CONNECT_PER_NODE: Duration = Duration::from_millis(150);
/// Monitoring period of the driver.
const TICK: Duration = Duration::from_millis(50);

/// An acknowledged publication.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Envelope id.
    pub id: Digest,
    /// Author node.
    pub author: usize,
    /// ms since the clock origin when publish was called.
    pub t_ms: f64,
    /// Intended honest recipient nodes, author excluded.
    pub recipients: Vec<usize>,
}

/// One `NodeEvent::Stored`.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// Where.
    pub node: usize,
    /// What.
    pub id: Digest,
    /// Its author.
    pub author: NodePublicKey,
    /// Its seq.
    pub seq: u64,
    /// Opened at this node.
    pub readable: bool,
    /// ms since the clock origin.
    pub t_ms: f64,
}

/// A shaded window on the plots.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Window {
    /// `impairment`, `partition` or `crash`.
    pub kind: String,
    /// ms since the script start.
    pub start_ms: f64,
    /// ms since the script start.
    pub end_ms: f64,
}

/// Everything measured in one phase (the scenario, or its baseline).
#[derive(Debug, Clone, Default)]
pub struct PhaseData {
    /// Nodes.
    pub n: usize,
    /// Honest node indices.
    pub honest: Vec<usize>,
    /// Hostile node indices.
    pub hostile: BTreeSet<usize>,
    /// Hostile author keys.
    pub hostile_keys: Vec<NodePublicKey>,
    /// Clock origin → script start, ms.
    pub script_start_ms: f64,
    /// Script length, ms.
    pub script_ms: f64,
    /// Script start → end of the drain, ms.
    pub end_ms: f64,
    /// Acknowledged publications.
    pub publications: Vec<Publication>,
    /// Publishes that failed.
    pub failed_publishes: u64,
    /// Every store, in arrival order.
    pub stores: Vec<StoredRecord>,
    /// Events lost by lagging subscriptions.
    pub lagged_events: u64,
    /// Shaded windows.
    pub windows: Vec<Window>,
    /// Down intervals per node (ms since script start).
    pub down: Vec<Vec<(f64, f64)>>,
    /// Last heal (partition end or restart), ms since script start.
    pub heal_ms: Option<f64>,
    /// Heal → every frontier equal, ms.
    pub convergence_ms: Option<f64>,
    /// Whether `status().frontier` confirmed that moment.
    pub convergence_confirmed: bool,
    /// Whether every honest node's `status().frontier` was equal at the end.
    pub frontiers_equal_at_end: bool,
    /// Equivocation evidence records over honest nodes.
    pub evidence: u64,
    /// Honest nodes that hold any equivocation evidence.
    pub evidence_nodes: u64,
    /// Whether every honest node's `status().frontier` held, at the end,
    /// every acknowledged publication of every honest author (`None`: not
    /// measured).
    pub honest_feeds_complete: Option<bool>,
    /// Envelopes of the equivocator pushed into honest nodes (0 without one).
    pub equivocator_pushed: u64,
    /// Bytes written per node over the measured run.
    pub bytes_sent: Vec<u64>,
    /// Bytes delivered per node over the measured run.
    pub bytes_received: Vec<u64>,
    /// Network-wide bytes written per second while idle (warm-up).
    pub idle_bytes_per_s: f64,
    /// Mean encoded envelope size (sampled).
    pub envelope_bytes: f64,
    /// Envelope copies honest nodes received over the measured run, from
    /// their own counters.
    pub copies: CopyCounts,
    /// Network counters.
    pub counters: NetworkCounters,
    /// What hostile nodes sent.
    pub hostile_logs: Vec<HostileLog>,
    /// CPU seconds of the process during the phase.
    pub cpu_seconds: f64,
    /// Of those, the CPU seconds from the script's start to the end of the
    /// drain: the work of publishing and delivering, without starting the
    /// nodes and the warm-up.
    pub script_cpu_seconds: f64,
    /// Of those, the CPU seconds of the warm-up (idle mesh).
    pub warmup_cpu_seconds: f64,
    /// `script_cpu_seconds` of the threads alive at both ends, by thread
    /// name (see [`machine::cpu_seconds_by_thread`]), largest first.
    pub script_cpu_by_thread: Vec<(String, f64)>,
    /// Peak resident memory during the phase, MiB.
    pub peak_rss_mb: f64,
    /// Seconds spent starting nodes.
    pub startup_s: f64,
    /// OS processes that ran the nodes and reported their figures.
    pub processes: usize,
}

/// Envelope copies received from peers, summed over nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyCounts {
    /// Copies received: gossip (duplicates included) and sync.
    pub received: u64,
    /// Of those, the first copy of an envelope at that node.
    pub new: u64,
    /// Copies that came in sync responses.
    pub sync: u64,
}

impl CopyCounts {
    /// Redundant copies per first copy; `None` before anything arrived.
    pub fn duplicates_per_envelope(&self) -> Option<f64> {
        (self.new > 0).then(|| self.received.saturating_sub(self.new) as f64 / self.new as f64)
    }

    /// What `after` adds to `before` (a restarted node's counters begin again).
    pub fn since(before: &[Option<Traffic>], after: &[Option<Traffic>]) -> CopyCounts {
        let mut counts = CopyCounts::default();
        for (i, now) in after.iter().enumerate() {
            let Some(now) = now else { continue };
            let then = before.get(i).copied().flatten().unwrap_or_default();
            let (then_received, now_received) = (
                then.gossip_received + then.sync_received,
                now.gossip_received + now.sync_received,
            );
            let restarted = now_received < then_received
                || now.stored_from_peers < then.stored_from_peers
                || now.sync_received < then.sync_received;
            let then = if restarted { Traffic::default() } else { then };
            counts.received += now_received - (then.gossip_received + then.sync_received);
            counts.new += now.stored_from_peers - then.stored_from_peers;
            counts.sync += now.sync_received - then.sync_received;
        }
        counts
    }
}

/// Per-node frontier tracking from `Stored` events.
#[derive(Debug, Default)]
struct Frontiers {
    contiguous: HashMap<NodePublicKey, u64>,
    above: HashMap<NodePublicKey, BTreeSet<u64>>,
}

impl Frontiers {
    fn add(&mut self, author: NodePublicKey, seq: u64) {
        let front = self.contiguous.entry(author).or_insert(0);
        let above = self.above.entry(author).or_default();
        above.insert(seq);
        while above.remove(&(*front + 1)) {
            *front += 1;
        }
    }
}

#[derive(Debug, Default)]
struct RecState {
    stores: Vec<StoredRecord>,
    readable: HashSet<(Digest, usize)>,
    frontiers: Vec<Frontiers>,
    lagged: u64,
}

#[derive(Debug, Clone)]
struct Recorder {
    origin: Instant,
    state: Arc<Mutex<RecState>>,
}

/// Locks `mutex`, taking over a poisoned one (a recorder that panicked).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recorder {
    fn now_ms(&self) -> f64 {
        self.origin.elapsed().as_secs_f64() * 1000.0
    }

    async fn record(self, node: usize, mut events: broadcast::Receiver<NodeEvent>) {
        loop {
            match events.recv().await {
                Ok(NodeEvent::Stored(summary)) => {
                    let t_ms = self.now_ms();
                    let mut state = lock(&self.state);
                    if summary.readable {
                        state.readable.insert((summary.id, node));
                    }
                    if let Some(f) = state.frontiers.get_mut(node) {
                        f.add(summary.author, summary.seq);
                    }
                    state.stores.push(StoredRecord {
                        node,
                        id: summary.id,
                        author: summary.author,
                        seq: summary.seq,
                        readable: summary.readable,
                        t_ms,
                    });
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => lock(&self.state).lagged += n,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
}

struct Running {
    node: Node,
    stop: oneshot::Sender<()>,
    recorder: JoinHandle<()>,
}

/// One phase's nodes and state.
struct Sim<'a> {
    plan: &'a Plan,
    network: Network,
    fixture: Fixture,
    dirs: Vec<DataDir>,
    configs: Vec<Config>,
    nodes: Vec<Option<Running>>,
    hostile: Vec<HostileNode>,
    recorder: Recorder,
    publications: Arc<Mutex<Vec<Publication>>>,
    failed: Arc<Mutex<u64>>,
    in_flight: Vec<JoinHandle<()>>,
    script_start: Instant,
    windows: Vec<Window>,
    open_windows: HashMap<String, f64>,
    down: Vec<Vec<(f64, f64)>>,
    down_since: Vec<Option<f64>>,
    chaos: Option<(f64, f64, Duration)>,
    next_chaos: Instant,
    heal_at: Option<Instant>,
    heal_ms: Option<f64>,
    convergence_ms: Option<f64>,
    convergence_confirmed: bool,
    /// When frontiers were last polled by status while the event view
    /// disagreed (a lagged event stream must not hide convergence).
    last_status_poll: Instant,
    published: u64,
    verbose: bool,
    /// Partition groups while split.
    groups: Option<Vec<usize>>,
    /// The equivocator's author key: its feed is held at the fork, so it is
    /// left out of frontier comparisons.
    equivocator_key: Option<NodePublicKey>,
    /// Envelopes of the equivocator pushed so far.
    equivocator_pushed: u64,
}

impl Sim<'_> {
    fn script_ms(&self) -> f64 {
        Instant::now()
            .saturating_duration_since(self.script_start)
            .as_secs_f64()
            * 1000.0
    }

    fn honest_up(&self) -> Vec<usize> {
        (0..self.plan.n())
            .filter(|&i| self.plan.is_honest(i) && self.running(i).is_some())
            .collect()
    }

    fn running(&self, i: usize) -> Option<&Running> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    fn handle(&self, i: usize) -> Option<NodeHandle> {
        self.running(i).map(|r| r.node.handle.clone())
    }

    async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        if self.running(i).is_some() || !self.plan.is_honest(i) {
            return Ok(());
        }
        let (mut node, stop) =
            start_node(&self.dirs[i], &self.configs[i], &self.network, i).await?;
        let fresh = node.handle.subscribe();
        let events = std::mem::replace(&mut node.events, fresh);
        let recorder = tokio::spawn(self.recorder.clone().record(i, events));
        self.nodes[i] = Some(Running {
            node,
            stop,
            recorder,
        });
        if let Some(since) = self.down_since[i].take() {
            let now = self.script_ms();
            self.down[i].push((since, now));
        }
        Ok(())
    }

    async fn crash(&mut self, nodes: &[usize]) {
        let mut crashing = Vec::new();
        for &i in nodes {
            if let Some(running) = self.nodes.get_mut(i).and_then(Option::take) {
                crashing.push(running);
                self.down_since[i] = Some(self.script_ms());
            }
        }
        futures::future::join_all(crashing.into_iter().map(|r| async move {
            r.node.crash().await;
            finish_recorder(r.recorder).await;
        }))
        .await;
    }

    async fn stop_all(&mut self) {
        let running: Vec<Running> = self.nodes.iter_mut().filter_map(Option::take).collect();
        futures::future::join_all(running.into_iter().map(|r| async move {
            let _ = r.stop.send(());
            r.node.wait().await;
            finish_recorder(r.recorder).await;
        }))
        .await;
        for hostile in self.hostile.drain(..) {
            hostile.stop().await;
        }
    }

    fn publish(&mut self, node: usize, to: &[usize]) {
        let Some(handle) = self.handle(node) else {
            *lock(&self.failed) += 1;
            return;
        };
        self.published += 1;
        let k = self.published;
        let tlp = if to.is_empty() {
            Tlp::Green
        } else {
            Tlp::Amber
        };
        let recipients = recipients(&self.plan.honest(), node, to);
        let to_orgs: Vec<OrgId> = to
            .iter()
            .filter_map(|&o| self.fixture.orgs.get(o).map(|org| org.org_id.clone()))
            .collect();
        let request = bulletin_request(k, node, tlp, to_orgs);
        let t_ms = self.recorder.now_ms();
        let publications = self.publications.clone();
        let failed = self.failed.clone();
        let verbose = self.verbose;
        self.in_flight.push(tokio::spawn(async move {
            match handle.publish(request).await {
                Ok(published) => lock(&publications).push(Publication {
                    id: published.id,
                    author: node,
                    t_ms,
                    recipients,
                }),
                Err(e) => {
                    if verbose {
                        eprintln!("publish at node {node} failed: {e}");
                    }
                    *lock(&failed) += 1;
                }
            }
        }));
    }

    fn open_window(&mut self, kind: &str) {
        let now = self.script_ms();
        self.open_windows.entry(kind.to_string()).or_insert(now);
    }

    fn close_window(&mut self, kind: &str) {
        if let Some(start_ms) = self.open_windows.remove(kind) {
            let end_ms = self.script_ms();
            self.windows.push(Window {
                kind: kind.to_string(),
                start_ms,
                end_ms,
            });
        }
    }

    fn healed(&mut self) {
        self.heal_at = Some(Instant::now());
        self.heal_ms = Some(self.script_ms());
        self.convergence_ms = None;
        self.convergence_confirmed = false;
    }

    async fn apply(&mut self, action: &Action) -> anyhow::Result<()> {
        if self.verbose {
            if let Action::Publish { .. } = action {
            } else {
                eprintln!("t={:>7.0} ms  {action:?}", self.script_ms());
            }
        }
        match action {
            Action::Publish { node, to } => self.publish(*node, to),
            Action::Impair { window } => {
                if let Some(w) = self.plan.scenario.impairments.get(*window) {
                    self.network.set_shape(w.shape());
                    self.chaos = Some((
                        w.resets_per_min,
                        w.stalls_per_min,
                        Duration::from_millis(w.stall_ms),
                    ));
                    self.next_chaos = Instant::now() + Duration::from_secs(1);
                    self.open_window("impairment");
                }
            }
            Action::Unimpair => {
                self.network.set_shape(self.plan.scenario.link.shape());
                self.chaos = None;
                self.close_window("impairment");
            }
            Action::Split(group) => {
                self.groups = Some(group.clone());
                self.network.split(group.clone());
                self.open_window("partition");
            }
            Action::Heal => {
                if self.open_windows.contains_key("partition") {
                    self.groups = None;
                    self.network.heal();
                    self.close_window("partition");
                    self.healed();
                }
            }
            Action::Crash(nodes) => {
                self.crash(nodes).await;
                self.open_window("crash");
            }
            Action::Restart(nodes) => {
                let mut restarted = false;
                for &i in nodes {
                    if self.running(i).is_none() {
                        self.start(i).await?;
                        restarted = true;
                    }
                }
                if restarted {
                    self.close_window("crash");
                    self.healed();
                }
            }
            Action::Join(nodes) => {
                for &i in nodes {
                    self.start(i).await?;
                }
            }
            Action::Attack => {
                for hostile in &self.hostile {
                    hostile.attack();
                }
            }
            Action::Equivocate => self.equivocate().await?,
        }
        Ok(())
    }

    /// Pushes the equivocator's valid feed into honest nodes, sync-free
    /// (through the import path, as an air-gap bundle would arrive): seqs
    /// below the fork to both halves, branch A (`fork_seq`) to one half and
    /// branch B (`fork_seq`, `fork_seq + 1`) to the other. Halves are the
    /// partition groups 0 and 1 while split, else alternate topology
    /// neighbours; each half is its members among the equivocator's
    /// neighbours, or its first node when it has none. No node is handed
    /// both branches, so evidence comes only from the mesh.
    async fn equivocate(&mut self) -> anyhow::Result<()> {
        let (Some(e), Some(settings)) = (self.plan.equivocator, &self.plan.scenario.equivocator)
        else {
            return Ok(());
        };
        let keys = self
            .fixture
            .keys(e, 0)
            .ok_or_else(|| anyhow::anyhow!("no keys for the equivocator {e}"))?
            .clone();
        let roster = self.fixture.roster.roster.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(self.plan.seed ^ 0x6571_7569_766f_6361);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let fork = settings.fork_seq.max(1);
        let mut seal_one = |seq: u64, prev: Digest, title: &str| {
            seal(
                &keys,
                &roster,
                bulletin_draft(seq, prev, Tlp::Green, title, now),
                &[],
                &mut rng,
            )
            .map_err(|e| anyhow::anyhow!("sealing the equivocator's seq {seq}: {e}"))
        };
        let mut common = Vec::new();
        let mut prev = Digest::ZERO;
        for seq in 1..fork {
            let envelope = seal_one(seq, prev, &format!("equivocator bulletin {seq}"))?;
            prev = envelope.id();
            common.push(envelope.encode());
        }
        let a = seal_one(fork, prev, "equivocator branch A")?;
        let b = seal_one(fork, prev, "equivocator branch B")?;
        let b_next = seal_one(fork + 1, b.id(), "equivocator branch B continues")?;
        let branch_a: Vec<Vec<u8>> = common.iter().cloned().chain([a.encode()]).collect();
        let branch_b: Vec<Vec<u8>> = common
            .iter()
            .cloned()
            .chain([b.encode(), b_next.encode()])
            .collect();

        let up = self.honest_up();
        let near: Vec<usize> = self
            .plan
            .neighbours
            .get(e)
            .map(|ns| ns.iter().copied().filter(|j| up.contains(j)).collect())
            .unwrap_or_default();
        let halves: [Vec<usize>; 2] = match &self.groups {
            Some(groups) => {
                let in_group = |g: usize, from: &[usize]| -> Vec<usize> {
                    from.iter()
                        .copied()
                        .filter(|&i| groups.get(i) == Some(&g))
                        .collect()
                };
                [0, 1].map(|g| {
                    let mut half = in_group(g, &near);
                    if half.is_empty() {
                        half = in_group(g, &up).into_iter().take(1).collect();
                    }
                    half
                })
            }
            None => {
                let mut pool = near.clone();
                for &i in &up {
                    if pool.len() >= 2 {
                        break;
                    }
                    if !pool.contains(&i) {
                        pool.push(i);
                    }
                }
                [0, 1].map(|h| pool.iter().copied().skip(h).step_by(2).collect())
            }
        };
        if halves.iter().any(Vec::is_empty) {
            anyhow::bail!("the equivocator has no honest node to push a branch to");
        }
        for (half, branch) in halves.iter().zip([&branch_a, &branch_b]) {
            let request = ImportRequest {
                rosters: Vec::new(),
                envelopes: branch
                    .iter()
                    .enumerate()
                    .map(|(k, bytes)| (k, to_hex(bytes)))
                    .collect(),
            };
            for &i in half {
                let Some(handle) = self.handle(i) else {
                    continue;
                };
                let report = handle
                    .import(request.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("pushing a branch into node {i}: {e}"))?;
                let refused: Vec<_> = report
                    .outcomes
                    .iter()
                    .filter(|(_, o)| !matches!(o, ItemOutcome::Accepted | ItemOutcome::AlreadyHeld))
                    .collect();
                if self.verbose && !refused.is_empty() {
                    eprintln!("node {i} refused equivocator envelopes: {refused:?}");
                }
                self.equivocator_pushed += branch.len() as u64;
            }
        }
        if self.verbose {
            eprintln!(
                "t={:>7.0} ms  equivocator {e} forked seq {fork}: branch A to {:?}, branch B to {:?}",
                self.script_ms(),
                halves[0],
                halves[1]
            );
        }
        Ok(())
    }

    /// (evidence records, honest nodes holding some) over running honest nodes.
    async fn evidence(&self) -> (u64, u64) {
        let mut evidence = 0;
        let mut nodes = 0;
        for i in self.honest_up() {
            if let Some(handle) = self.handle(i)
                && let Ok(status) = handle.status().await
            {
                evidence += status.evidence;
                nodes += u64::from(status.evidence > 0);
            }
        }
        (evidence, nodes)
    }

    /// Whether every running honest node's frontier holds every acknowledged
    /// publication of every honest author.
    async fn honest_feeds_complete(&self) -> bool {
        let mut expected: HashMap<NodePublicKey, u64> = HashMap::new();
        for p in lock(&self.publications).iter() {
            if let Some(keys) = self.fixture.keys(p.author, 0) {
                *expected.entry(keys.node_public()).or_default() += 1;
            }
        }
        for i in self.honest_up() {
            let Some(handle) = self.handle(i) else {
                return false;
            };
            let Ok(status) = handle.status().await else {
                return false;
            };
            let frontier: HashMap<NodePublicKey, u64> = status.frontier.into_iter().collect();
            if expected
                .iter()
                .any(|(author, &count)| frontier.get(author).copied().unwrap_or(0) < count)
            {
                return false;
            }
        }
        true
    }

    /// Periodic work: chaos on impaired links, convergence after a heal.
    async fn on_tick(&mut self) {
        if let Some((resets, stalls, stall)) = self.chaos
            && Instant::now() >= self.next_chaos
        {
            self.next_chaos += Duration::from_secs(1);
            self.network.reset_random(resets / 60.0);
            self.network.stall_random(stalls / 60.0, stall);
        }
        // Stored events are the fast signal; status is the truth, polled at
        // most every second (more rarely for large meshes) when the events
        // say no, so an event that never arrived cannot hide convergence.
        let poll_every = Duration::from_millis(1000.max(20 * self.dirs.len() as u64));
        let poll = self.last_status_poll.elapsed() >= poll_every;
        if let Some(heal_at) = self.heal_at
            && self.convergence_ms.is_none()
            && (self.frontiers_equal_by_events() || poll)
            && {
                self.last_status_poll = Instant::now();
                self.frontiers_equal_by_status().await
            }
        {
            self.convergence_ms = Some(heal_at.elapsed().as_secs_f64() * 1000.0);
            self.convergence_confirmed = true;
            if self.verbose {
                eprintln!(
                    "t={:>7.0} ms  converged {:.0} ms after the heal",
                    self.script_ms(),
                    self.convergence_ms.unwrap_or_default()
                );
            }
        }
    }

    fn frontiers_equal_by_events(&self) -> bool {
        let up = self.honest_up();
        let state = lock(&self.recorder.state);
        let skip = self.equivocator_key;
        let view = |f: &Frontiers| -> HashMap<NodePublicKey, u64> {
            f.contiguous
                .iter()
                .filter(|(k, _)| Some(**k) != skip)
                .map(|(k, v)| (*k, *v))
                .collect()
        };
        let mut frontiers = up.iter().filter_map(|&i| state.frontiers.get(i)).map(view);
        let Some(first) = frontiers.next() else {
            return true;
        };
        frontiers.all(|f| f == first)
    }

    async fn frontiers_equal_by_status(&self) -> bool {
        let handles: Vec<NodeHandle> = self
            .honest_up()
            .into_iter()
            .filter_map(|i| self.handle(i))
            .collect();
        let statuses =
            futures::future::join_all(handles.iter().map(|h| async move { h.status().await }))
                .await;
        let mut frontiers = Vec::new();
        for status in statuses {
            match status {
                Ok(s) => {
                    let mut f = s.frontier;
                    f.retain(|(k, _)| Some(*k) != self.equivocator_key);
                    f.sort();
                    frontiers.push(f);
                }
                Err(_) => return false,
            }
        }
        frontiers.windows(2).all(|w| w[0] == w[1])
    }

    /// Every honest node's traffic counters (`None` where it is down).
    async fn traffic(&self) -> Vec<Option<Traffic>> {
        let handles: Vec<Option<NodeHandle>> = (0..self.plan.n())
            .map(|i| {
                if !self.plan.is_honest(i) {
                    None
                } else {
                    self.handle(i)
                }
            })
            .collect();
        futures::future::join_all(handles.iter().map(|h| async move {
            match h {
                Some(h) => h.status().await.ok().map(|s| s.traffic),
                None => None,
            }
        }))
        .await
    }

    fn delivery(&self) -> (usize, usize) {
        let publications = lock(&self.publications);
        let state = lock(&self.recorder.state);
        let mut intended = 0;
        let mut delivered = 0;
        for p in publications.iter() {
            for &r in &p.recipients {
                intended += 1;
                if state.readable.contains(&(p.id, r)) {
                    delivered += 1;
                }
            }
        }
        (delivered, intended)
    }

    /// Mean encoded size of up to 32 published envelopes.
    async fn envelope_bytes(&self) -> f64 {
        let ids: Vec<Digest> = lock(&self.publications)
            .iter()
            .take(32)
            .map(|p| p.id)
            .collect();
        let Some(handle) = self.honest_up().first().and_then(|&i| self.handle(i)) else {
            return 0.0;
        };
        let mut sizes = Vec::new();
        for id in ids {
            if let Ok(detail) = handle.get(id.to_hex()).await {
                sizes.push(detail.size as f64);
            }
        }
        if sizes.is_empty() {
            0.0
        } else {
            sizes.iter().sum::<f64>() / sizes.len() as f64
        }
    }
}

/// The nodes meant to open a publication of `node` to AMBER recipients `to`
/// (empty: GREEN, every honest node), the author excluded.
pub(crate) fn recipients(honest: &[usize], node: usize, to: &[usize]) -> Vec<usize> {
    let all = if to.is_empty() { honest } else { to };
    all.iter().copied().filter(|&r| r != node).collect()
}

/// The `k`-th bulletin of a run, published by node `node`.
pub(crate) fn bulletin_request(k: u64, node: usize, tlp: Tlp, to: Vec<OrgId>) -> PublishRequest {
    let mut bulletin = Bulletin::new(
        &format!("simulated bulletin {k} from node {node}"),
        Severity::High,
    );
    if let Ok(indicator) = Indicator::parse(&format!("ipv4:198.51.100.{}", k % 250 + 1)) {
        bulletin.indicators.push(indicator);
    }
    PublishRequest {
        tlp,
        to,
        bulletin,
        ttl_ms: None,
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn finish_recorder(recorder: JoinHandle<()>) {
    let abort = recorder.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), recorder)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// Settings of one phase.
#[derive(Debug, Clone)]
pub struct PhaseOptions {
    /// Where the temp stores go.
    pub work_dir: PathBuf,
    /// Print the script as it runs.
    pub verbose: bool,
    /// OS processes the nodes are spread over (1: all in this one; more:
    /// [`crate::spread`]).
    pub processes: usize,
}

impl PhaseOptions {
    /// A fresh temp directory under `work_dir` for one phase's stores.
    pub fn temp_dir(&self, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.work_dir)
            .with_context(|| format!("cannot create a temp dir in {}", self.work_dir.display()))
    }
}

/// Runs one phase of `plan` and returns what was measured.
pub async fn run_phase(plan: &Plan, options: &PhaseOptions) -> anyhow::Result<PhaseData> {
    if options.processes > 1 {
        return crate::spread::run_phase_spread(plan, options).await;
    }
    let n = plan.n();
    let scenario = &plan.scenario;
    machine::reset_peak_rss();
    let cpu_before = machine::cpu_seconds();
    let setup_started = Instant::now();
    let root = options.temp_dir("breakwater-sim-")?;
    let mut not_run = plan.hostile.clone();
    not_run.extend(plan.equivocator);
    let (fixture, dirs, configs) =
        prepare_consortium(root.path(), &scenario.node, &plan.neighbours, &not_run).await?;

    let network = Network::new(n, plan.seed, plan.links.clone());
    network.set_shape(scenario.link.shape());
    let origin = Instant::now();
    let recorder = Recorder {
        origin,
        state: Arc::new(Mutex::new(RecState {
            frontiers: (0..n).map(|_| Frontiers::default()).collect(),
            ..RecState::default()
        })),
    };
    let mut sim = Sim {
        plan,
        network: network.clone(),
        fixture,
        dirs,
        configs,
        nodes: (0..n).map(|_| None).collect(),
        hostile: Vec::new(),
        recorder,
        publications: Arc::new(Mutex::new(Vec::new())),
        failed: Arc::new(Mutex::new(0)),
        in_flight: Vec::new(),
        script_start: origin,
        windows: Vec::new(),
        open_windows: HashMap::new(),
        down: vec![Vec::new(); n],
        down_since: vec![None; n],
        chaos: None,
        next_chaos: origin,
        heal_at: None,
        heal_ms: None,
        convergence_ms: None,
        convergence_confirmed: false,
        last_status_poll: Instant::now(),
        published: 0,
        verbose: options.verbose,
        groups: None,
        equivocator_key: None,
        equivocator_pushed: 0,
    };
    sim.equivocator_key = plan
        .equivocator
        .and_then(|e| sim.fixture.keys(e, 0).map(|k| k.node_public()));
    let setup_s = setup_started.elapsed().as_secs_f64();
    let result = drive(&mut sim, options).await;
    sim.stop_all().await;
    let mut data = result?;
    data.startup_s += setup_s;
    data.cpu_seconds = machine::cpu_seconds() - cpu_before;
    data.peak_rss_mb = machine::peak_rss_mb();
    drop(root);
    Ok(data)
}

/// Starts node `i` of `network` from `dir`; it runs until the returned
/// sender fires (or is dropped).
pub async fn start_node(
    dir: &DataDir,
    config: &Config,
    network: &Network,
    i: usize,
) -> anyhow::Result<(Node, oneshot::Sender<()>)> {
    let (stop, stopped) = oneshot::channel::<()>();
    let node = spawn(dir, config.clone(), network.transport(i), async move {
        let _ = stopped.await;
    })
    .await
    .with_context(|| format!("node {i} did not start"))?;
    Ok((node, stop))
}

/// A consortium of one-node organisations, one per entry of `neighbours`,
/// whose cards name their simulated addresses, and a data directory for each
/// under `root`, initialised and joined to the roster (except `skip`). Each
/// node listens on its simulated address and dials only its neighbours.
pub async fn prepare_consortium(
    root: &Path,
    settings: &NodeSettings,
    neighbours: &[Vec<usize>],
    skip: &BTreeSet<usize>,
) -> anyhow::Result<(Fixture, Vec<DataDir>, Vec<Config>)> {
    let n = neighbours.len();
    let fixture = Fixture::with_cards(n, 1, |org| {
        // Every card publishes its node's memory address; the topology is
        // enforced by the network refusing dials between unlinked nodes.
        let index = org_index(&org.org_id);
        if let Some(node) = org.card.nodes.first_mut() {
            node.addrs.push(addr_of(index));
        }
    })
    .map_err(|e| anyhow::anyhow!("fixture: {e}"))?;
    let mut dirs = Vec::new();
    let mut configs = Vec::new();
    for (i, near) in neighbours.iter().enumerate() {
        let config = Config {
            org_id: fixture
                .orgs
                .get(i)
                .map(|o| o.org_id.to_string())
                .unwrap_or_default(),
            listen: vec![addr_of(i).parse()?],
            sync_interval: Duration::from_millis(settings.sync_interval_ms),
            heartbeat: Duration::from_millis(settings.heartbeat_ms),
            max_redial_backoff: Duration::from_millis(settings.max_redial_backoff_ms),
            // Each node dials only its topology neighbours, as an operator of
            // a large consortium would configure it.
            dial_orgs: Some(
                near.iter()
                    .filter_map(|&j| fixture.orgs.get(j).map(|o| o.org_id.to_string()))
                    .collect(),
            ),
            ..Config::default()
        };
        dirs.push(DataDir::new(root.join(format!("node-{i:03}"))));
        configs.push(config);
    }
    {
        let dirs = dirs.clone();
        let configs = configs.clone();
        let fixture = fixture.clone();
        let skip = skip.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for (i, (dir, config)) in dirs.iter().zip(&configs).enumerate() {
                if skip.contains(&i) {
                    continue;
                }
                let keys = fixture
                    .keys(i, 0)
                    .ok_or_else(|| anyhow::anyhow!("no keys for node {i}"))?;
                dir.init(config, keys, "simulation")?;
                join_offline(dir, &fixture.roster)?;
            }
            Ok(())
        })
        .await??;
    }
    Ok((fixture, dirs, configs))
}

fn org_index(org: &OrgId) -> usize {
    // Fixture orgs: the San Pedro Bay cast first, then `member-N` (1-based).
    let cast = breakwater_protocol::fixture::SAN_PEDRO_BAY;
    if let Some(i) = cast.iter().position(|(id, _, _)| *id == org.as_str()) {
        return i;
    }
    org.as_str()
        .strip_prefix("member-")
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(0, |n| n.saturating_sub(1))
}

async fn drive(sim: &mut Sim<'_>, options: &PhaseOptions) -> anyhow::Result<PhaseData> {
    let plan = sim.plan;
    let scenario = &plan.scenario;
    let n = plan.n();
    let started = Instant::now();
    // Hostile swarms first, so honest nodes find them listening.
    let honest_peers: Vec<_> = plan
        .honest()
        .iter()
        .filter_map(|&i| sim.fixture.keys(i, 0).map(|k| k.peer_id()))
        .collect();
    let victims: Vec<NodePublicKey> = plan
        .honest()
        .iter()
        .filter_map(|&i| sim.fixture.keys(i, 0).map(|k| k.node_public()))
        .collect();
    for &h in &plan.hostile {
        let keys = sim
            .fixture
            .keys(h, 0)
            .ok_or_else(|| anyhow::anyhow!("no keys for hostile node {h}"))?
            .clone();
        let node = HostileNode::spawn(HostileSetup {
            network: &sim.network,
            index: h,
            keys: &keys,
            roster: &sim.fixture.roster,
            honest: honest_peers.clone(),
            victims: victims.clone(),
            neighbours: plan.neighbours.get(h).cloned().unwrap_or_default(),
            rate_per_s: scenario.hostile.as_ref().map_or(1.0, |h| h.rate_per_s),
            heartbeat: Duration::from_millis(scenario.node.heartbeat_ms),
            seed: plan.seed ^ (h as u64) << 32,
        })?;
        sim.hostile.push(node);
    }
    for i in 0..n {
        if !plan.late.contains(&i) {
            sim.start(i).await?;
        } else {
            sim.down_since[i] = Some(0.0);
        }
    }
    // Every running honest node is connected to each of its running
    // neighbours (at least one is required; all are waited for until the
    // deadline, so the warm-up measures steady idle traffic).
    let connect_deadline = CONNECT_DEADLINE + CONNECT_PER_NODE * n as u32;
    let deadline = Instant::now() + connect_deadline;
    let up: HashSet<usize> = (0..n)
        .filter(|i| !plan.late.contains(i) && Some(*i) != plan.equivocator)
        .collect();
    loop {
        let nodes = sim.honest_up();
        let handles: Vec<NodeHandle> = nodes.iter().filter_map(|&i| sim.handle(i)).collect();
        let peers =
            futures::future::join_all(handles.iter().map(|h| async move { h.peers().await })).await;
        let mut lonely = 0;
        let mut short = 0;
        for (&i, peers) in nodes.iter().zip(&peers) {
            let have = peers.as_ref().map_or(0, Vec::len);
            let want = plan
                .neighbours
                .get(i)
                .map_or(0, |ns| ns.iter().filter(|j| up.contains(j)).count());
            if have == 0 {
                lonely += 1;
            }
            if have < want {
                short += 1;
            }
        }
        if short == 0 {
            break;
        }
        if Instant::now() > deadline {
            if lonely > 0 {
                anyhow::bail!("{lonely} nodes still have no peer after {connect_deadline:?}");
            }
            if options.verbose {
                eprintln!("{short} nodes miss some neighbours; starting anyway");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every node ready to publish: its own feed synced with a peer (L7), or
    // its wait for that over, so that the script measures steady state, not
    // the start-up wait of the last nodes started.
    let handles: Vec<NodeHandle> = sim
        .honest_up()
        .iter()
        .filter_map(|&i| sim.handle(i))
        .collect();
    futures::future::join_all(handles.iter().map(|h| h.own_feed_synced())).await;
    let startup_s = started.elapsed().as_secs_f64();
    // Warm-up: idle traffic.
    let idle_from = sim.network.total_sent();
    let warmup = Duration::from_secs_f64(scenario.warmup_s.max(0.5));
    let warmup_cpu_from = machine::cpu_seconds();
    tokio::time::sleep(warmup).await;
    let script_cpu_from = machine::cpu_seconds();
    let warmup_cpu_seconds = script_cpu_from - warmup_cpu_from;
    let threads_before = machine::cpu_seconds_by_thread();
    let idle_bytes_per_s =
        (sim.network.total_sent() - idle_from) as f64 / warmup.as_secs_f64().max(0.001);
    let traffic_before = sim.traffic().await;
    let sent_before: Vec<u64> = (0..n).map(|i| sim.network.bytes_sent(i)).collect();
    let received_before: Vec<u64> = (0..n).map(|i| sim.network.bytes_received(i)).collect();

    sim.script_start = Instant::now();
    for i in 0..n {
        if sim.down_since[i].is_some() {
            sim.down_since[i] = Some(0.0);
        }
    }
    let script_start_ms = sim.recorder.now_ms();
    let end = sim.script_start + Duration::from_secs_f64(scenario.duration_s);
    let mut tick = tokio::time::interval(TICK);
    let mut next = 0;
    while next < plan.actions.len() {
        let due = sim.script_start + Duration::from_millis(plan.actions[next].at_ms);
        tokio::select! {
            () = tokio::time::sleep_until(due) => {
                while let Some(timed) = plan.actions.get(next) {
                    if sim.script_start + Duration::from_millis(timed.at_ms) > Instant::now() {
                        break;
                    }
                    sim.apply(&timed.action).await?;
                    next += 1;
                }
            }
            _ = tick.tick() => sim.on_tick().await,
        }
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            _ = tick.tick() => sim.on_tick().await,
        }
    }
    // Lift everything that is still on.
    sim.apply(&Action::Unimpair).await?;
    sim.apply(&Action::Heal).await?;
    let down: Vec<usize> = (0..n)
        .filter(|&i| plan.is_honest(i) && sim.running(i).is_none())
        .collect();
    if !down.is_empty() {
        let late: Vec<usize> = down
            .iter()
            .copied()
            .filter(|i| plan.late.contains(i))
            .collect();
        let crashed: Vec<usize> = down
            .iter()
            .copied()
            .filter(|i| !plan.late.contains(i))
            .collect();
        sim.apply(&Action::Join(late)).await?;
        if !crashed.is_empty() {
            sim.apply(&Action::Restart(crashed)).await?;
        }
    }
    let mut hostile_logs = Vec::new();
    for hostile in sim.hostile.drain(..).collect::<Vec<_>>() {
        let log = hostile.log.clone();
        hostile.stop().await;
        hostile_logs.push(lock(&log).clone());
    }
    let script_ms = sim.script_ms();
    for task in std::mem::take(&mut sim.in_flight) {
        let _ = task.await;
    }
    // Drain: everything delivered, every frontier equal and, after a heal,
    // convergence confirmed.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(scenario.drain_s);
    let mut evidence_polled = Instant::now();
    loop {
        let (delivered, intended) = sim.delivery();
        let converged = sim.heal_at.is_none() || sim.convergence_ms.is_some();
        // Non-recipients store sealed envelopes too: wait for equal frontiers.
        if delivered == intended && converged && sim.frontiers_equal_by_events() {
            // With an equivocator, also wait for its evidence everywhere
            // (polled at most every second).
            if plan.equivocator.is_none() {
                break;
            }
            if evidence_polled.elapsed() >= Duration::from_secs(1) {
                evidence_polled = Instant::now();
                let (_, nodes) = sim.evidence().await;
                if nodes as usize >= sim.honest_up().len() {
                    break;
                }
            }
        }
        if Instant::now() > drain_deadline {
            if options.verbose {
                eprintln!(
                    "drain deadline: {delivered}/{intended} delivered, converged {converged}"
                );
            }
            break;
        }
        tick.tick().await;
        sim.on_tick().await;
    }
    let end_ms = sim.script_ms();
    let script_cpu_seconds = machine::cpu_seconds() - script_cpu_from;
    let script_cpu_by_thread =
        machine::cpu_delta(&threads_before, &machine::cpu_seconds_by_thread());
    // Let frontier stragglers settle for one more look.
    let frontiers_equal_at_end = sim.frontiers_equal_by_status().await;
    let envelope_bytes = sim.envelope_bytes().await;
    let copies = CopyCounts::since(&traffic_before, &sim.traffic().await);
    let (evidence, evidence_nodes) = sim.evidence().await;
    let honest_feeds_complete = Some(sim.honest_feeds_complete().await);
    let bytes_sent = (0..n)
        .map(|i| sim.network.bytes_sent(i).saturating_sub(sent_before[i]))
        .collect();
    let bytes_received = (0..n)
        .map(|i| {
            sim.network
                .bytes_received(i)
                .saturating_sub(received_before[i])
        })
        .collect();
    for (kind, _) in sim.open_windows.clone() {
        sim.close_window(&kind);
    }
    let hostile_keys = plan
        .hostile
        .iter()
        .filter_map(|&h| sim.fixture.keys(h, 0).map(|k| k.node_public()))
        .collect();
    let stores = {
        let state = lock(&sim.recorder.state);
        state.stores.clone()
    };
    let lagged_events = lock(&sim.recorder.state).lagged;
    let mut down = sim.down.clone();
    for (i, since) in sim.down_since.iter().enumerate() {
        if let Some(since) = since {
            down[i].push((*since, end_ms));
        }
    }
    let publications = lock(&sim.publications).clone();
    let failed_publishes = *lock(&sim.failed);
    Ok(PhaseData {
        n,
        honest: plan.honest(),
        hostile: plan.hostile.clone(),
        hostile_keys,
        script_start_ms,
        script_ms,
        end_ms,
        publications,
        failed_publishes,
        stores,
        lagged_events,
        windows: sim.windows.clone(),
        down,
        heal_ms: sim.heal_ms,
        convergence_ms: sim.convergence_ms,
        convergence_confirmed: sim.convergence_confirmed,
        frontiers_equal_at_end,
        evidence,
        evidence_nodes,
        honest_feeds_complete,
        equivocator_pushed: sim.equivocator_pushed,
        bytes_sent,
        bytes_received,
        idle_bytes_per_s,
        envelope_bytes,
        copies,
        counters: sim.network.counters(),
        hostile_logs,
        cpu_seconds: 0.0,
        script_cpu_seconds,
        warmup_cpu_seconds,
        script_cpu_by_thread,
        peak_rss_mb: 0.0,
        startup_s,
        processes: 1,
    })
}
