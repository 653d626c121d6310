//! Starting and stopping a node: [`spawn`] opens the store, loads keys and
//! roster from the data directory, builds the swarm over the injected
//! transport, starts the store worker thread and the event loop, and returns
//! a [`Node`]. Also the offline roster operations the CLI uses when no node
//! is running.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use breakwater_protocol::{SignedRoster, envelope::id_of};
use libp2p::gossipsub::MessageId;
use libp2p::metrics::Registry;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, DataDir};
use crate::event_loop::EventLoop;
use crate::handle::{NodeEvent, NodeHandle};
use crate::net::{self, NetConfig, NetError, TransportKind};
use crate::store::{Store, StoreError};
use crate::worker::Worker;

/// Capacity of the command and outcome channels (the job queues' are in
/// [`crate::job`]).
const CHANNEL_CAPACITY: usize = 1024;
/// Capacity of the event broadcast (slow subscribers miss events, never block the node).
const EVENT_CAPACITY: usize = 4096;

/// Why a node could not start, or an offline operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The data directory is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened (is another node running on it?).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The stored roster is corrupt.
    #[error("stored roster: {0}")]
    Roster(String),
    /// The node has not joined a consortium yet.
    #[error("no roster: run `breakwater join --data-dir DIR ROSTER` first")]
    NoRoster,
    /// The roster offered to join is not acceptable.
    #[error("{0}")]
    Join(String),
    /// The swarm could not be built or could not listen.
    #[error("network: {0}")]
    Net(#[from] NetError),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// Commands and queries.
    pub handle: NodeHandle,
    /// Events from the start on.
    pub events: broadcast::Receiver<NodeEvent>,
    task: JoinHandle<()>,
    worker_done: oneshot::Receiver<()>,
    /// Where the store lives, for the checkpoint of a clean stop.
    store_path: std::path::PathBuf,
}

impl Node {
    /// Waits until the node has stopped (after its shutdown future fired) and
    /// its store is closed, then checkpoints the store
    /// ([`Store::checkpoint`]) so that the next start need not replay its
    /// log.
    pub async fn wait(self) {
        let path = self.finish().await;
        let checkpoint = tokio::task::spawn_blocking(move || Store::checkpoint(&path)).await;
        if let Ok(Err(e)) = checkpoint {
            tracing::debug!("store checkpoint after the stop skipped: {e}");
        }
    }

    /// Stops the node abruptly: the event loop is aborted mid-flight and
    /// nothing is flushed beyond what was already acknowledged. Returns once
    /// the store is closed, so the same directory can be reopened.
    pub async fn crash(self) {
        self.task.abort();
        self.finish().await;
    }

    /// Waits for the event loop and the worker; returns the store's path.
    async fn finish(self) -> std::path::PathBuf {
        let Node {
            handle,
            events,
            task,
            worker_done,
            store_path,
        } = self;
        drop(events);
        drop(handle);
        let _ = task.await;
        let _ = worker_done.await;
        store_path
    }
}

/// Loads the newest stored roster that decodes. A newer version that does
/// not (e.g. one stored before rosters were size-checked, H3) is skipped
/// with a warning, so the node still starts on the last good version.
pub(crate) fn stored_roster(store: &Store) -> Result<Option<SignedRoster>, SpawnError> {
    let Some((latest, bytes)) = store.latest_roster()? else {
        return Ok(None);
    };
    let first_error = match SignedRoster::decode(&bytes) {
        Ok(roster) => return Ok(Some(roster)),
        Err(e) => e,
    };
    tracing::warn!(
        "stored roster version {latest} cannot be decoded ({first_error}); falling back to an older version"
    );
    let mut version = latest;
    while version > 1 {
        version -= 1;
        let Some(bytes) = store.roster(version)? else {
            continue;
        };
        match SignedRoster::decode(&bytes) {
            Ok(roster) => {
                tracing::warn!(
                    "running on stored roster version {version}: version {latest} cannot be decoded"
                );
                return Ok(Some(roster));
            }
            Err(e) => {
                tracing::warn!("stored roster version {version} cannot be decoded either ({e})")
            }
        }
    }
    Err(SpawnError::Roster(format!(
        "no stored roster version decodes (version {latest}: {first_error})"
    )))
}

/// Starts the node of `data_dir` with `config` over `transport`. It runs
/// until `shutdown` completes.
pub async fn spawn(
    data_dir: &DataDir,
    config: Config,
    transport: TransportKind,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Node, SpawnError> {
    config.check()?;
    let keys = data_dir.keys()?;
    // Before the store opens: a bad webhook stops the start, touching nothing.
    let webhooks = crate::webhook::Hooks::load(&config.webhooks, data_dir.root())?;
    let store_path = data_dir.store_path();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_path))
        .await
        .map_err(|e| SpawnError::Roster(format!("store task failed: {e}")))??;
    store.set_reserve(config.min_free_disk_mb.saturating_mul(1024 * 1024));
    // The `added` index serves only TAXII's `date_added`.
    store.set_index_added(config.taxii.is_some());
    let roster = stored_roster(&store)?.ok_or(SpawnError::NoRoster)?;

    let metrics = Arc::new(Mutex::new(Registry::default()));
    let breakwater_metrics = crate::metrics::Metrics::new(metrics.clone());
    let net_config = NetConfig {
        metrics: Some(metrics.clone()),
        heartbeat: config.heartbeat,
        enable_mdns: config.mdns,
        message_id_fn: Arc::new(|message| MessageId::new(id_of(&message.data).as_bytes())),
        ..NetConfig::default()
    };
    let mut swarm = net::build_swarm(keys.libp2p_keypair(), transport, &net_config)?;
    let (envelopes_topic, roster_topic) = swarm
        .behaviour_mut()
        .join_consortium(&roster.roster.consortium_id().to_hex())?;
    let mut listeners = Vec::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| SpawnError::Listen {
                addr: addr.to_string(),
                reason: format!("{e:?}"),
            })?;
        listeners.push(id);
    }

    let (command_tx, command_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (job_tx, job_rx) = crate::job::job_queues();
    let (outcome_tx, outcome_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (event_tx, event_rx) = broadcast::channel(EVENT_CAPACITY);
    let (done_tx, done_rx) = oneshot::channel();

    let worker_keys = keys.clone();
    let worker_roster = roster.clone();
    let worker_events = event_tx.clone();
    let ttl = config.default_ttl.as_millis() as u64;
    let (own_feed_tx, own_feed_rx) = tokio::sync::watch::channel(false);
    let publish_wait_until = tokio::time::Instant::now() + config.publish_sync_wait;
    let policy = crate::worker::StoragePolicy::from_config(&config);
    let worker_metrics = breakwater_metrics.clone();
    let worker_webhooks = webhooks.clone();
    let dispatch_store = (!webhooks.is_empty()).then(|| store.clone());
    std::thread::Builder::new()
        .name("breakwater-store".into())
        .spawn(move || {
            let mut worker = Worker::new(
                store,
                worker_keys,
                worker_roster,
                ttl,
                worker_events,
                outcome_tx,
            )
            .with_own_feed_signal(own_feed_tx);
            worker.policy = policy;
            worker.metrics = worker_metrics;
            worker.webhooks = worker_webhooks;
            worker.run(job_rx);
            let _ = done_tx.send(());
        })
        .map_err(|e| SpawnError::Roster(format!("cannot start the store thread: {e}")))?;

    let handle = NodeHandle {
        commands: command_tx,
        jobs: job_tx.control.clone(),
        events: event_tx.clone(),
        peer_id: keys.peer_id(),
        own_feed: own_feed_rx,
        publish_wait_until,
        metrics: breakwater_metrics.clone(),
    };
    breakwater_metrics.watch_queues(job_tx.watch());
    if let Some(store) = dispatch_store {
        crate::webhook::dispatch::spawn(
            &webhooks,
            store,
            breakwater_metrics.clone(),
            config.webhook_max_backoff,
            job_tx.control.clone(),
        );
    }
    let event_loop = EventLoop {
        swarm,
        commands: command_rx,
        outcomes: outcome_rx,
        jobs: job_tx,
        events: event_tx,
        envelopes_topic,
        roster_topic,
        roster: roster.roster,
        bootstrap: config.bootstrap.clone(),
        dial_orgs: config
            .dial_orgs
            .as_ref()
            .map(|orgs| orgs.iter().cloned().collect()),
        metrics,
        breakwater_metrics,
        sync_interval: config.sync_interval,
        max_backoff: config.max_redial_backoff,
        pending_replies: HashMap::new(),
        pending_requests: HashMap::new(),
        next_token: 0,
        redial: HashMap::new(),
        connected: HashMap::new(),
        listeners,
        retried: HashSet::new(),
        scores: crate::event_loop::Scores::new(std::time::Instant::now()),
        pending_clock: HashMap::new(),
        clock_offsets: HashMap::new(),
    };
    let task = tokio::spawn(event_loop.run(shutdown));
    Ok(Node {
        handle,
        events: event_rx,
        task,
        worker_done: done_rx,
        store_path: data_dir.store_path(),
    })
}

/// Verifies `roster` (as genesis for a fresh node, as the next version
/// otherwise) and stores it. Fails while a node runs on this directory.
pub fn join_offline(data_dir: &DataDir, roster: &SignedRoster) -> Result<u64, SpawnError> {
    let keys = data_dir.keys()?;
    check_own_entry(&keys, roster)?;
    let store = Store::open(&data_dir.store_path())?;
    match stored_roster(&store)? {
        None => roster
            .verify_genesis()
            .map_err(|e| SpawnError::Join(e.to_string()))?,
        Some(current) => {
            if let Some(fork) = crate::fork::recorded(&store)? {
                return Err(SpawnError::Join(format!(
                    "a roster fork at version {} is recorded: no roster update is applied until it is resolved (`breakwater consortium resolve-fork`)",
                    fork.version
                )));
            }
            if roster.roster.consortium_id() != current.roster.consortium_id() {
                return Err(SpawnError::Join(format!(
                    "roster belongs to consortium {}, not {}",
                    roster.roster.consortium_id(),
                    current.roster.consortium_id()
                )));
            }
            if roster.roster.version <= current.roster.version {
                return Err(SpawnError::Join(format!(
                    "roster version {} is not newer than the one in force ({})",
                    roster.roster.version, current.roster.version
                )));
            }
            SignedRoster::verify_update(&current.roster, roster)
                .map_err(|e| SpawnError::Join(e.to_string()))?;
        }
    }
    store.put_roster(roster.roster.version, &roster.encode())?;
    Ok(roster.roster.version)
}

/// Refuses a roster that lists this node's node key with a sealing key this
/// node does not hold (a card altered on its way to the admins, or a typo):
/// the node can check what no one else can, that it owns the key every
/// wrap to it is sealed to.
pub(crate) fn check_own_entry(
    keys: &breakwater_protocol::NodeKeys,
    roster: &SignedRoster,
) -> Result<(), SpawnError> {
    if let Some((member, entry)) = roster.roster.node(&keys.node_public())
        && entry.sealing_key != keys.sealing_public()
    {
        return Err(SpawnError::Join(format!(
            "roster version {} lists this node (org {}) with sealing key {}, but this node's sealing key is {}: wraps to it could not be opened; ask the admins to fix its card",
            roster.roster.version,
            member.card.org_id,
            entry.sealing_key,
            keys.sealing_public()
        )));
    }
    Ok(())
}

/// The newest stored roster, read without a running node.
pub fn roster_offline(data_dir: &DataDir) -> Result<Option<SignedRoster>, SpawnError> {
    data_dir.keys()?;
    let store = Store::open(&data_dir.store_path())?;
    stored_roster(&store)
}

/// Resolves a recorded roster fork on a stopped node in favour of `keep`
/// (see [`crate::fork::resolve`]): the roster chain is re-based onto it,
/// envelopes are kept. Fails while a node runs on this directory.
pub fn resolve_fork_offline(
    data_dir: &DataDir,
    keep: &SignedRoster,
) -> Result<crate::fork::Resolved, SpawnError> {
    data_dir.keys()?;
    let store = Store::open(&data_dir.store_path())?;
    let current = stored_roster(&store)?.ok_or(SpawnError::NoRoster)?;
    if keep.roster.consortium_id() != current.roster.consortium_id() {
        return Err(SpawnError::Join(format!(
            "roster belongs to consortium {}, not {}",
            keep.roster.consortium_id(),
            current.roster.consortium_id()
        )));
    }
    let resolved =
        crate::fork::resolve(&store, keep, crate::worker::now_ms()).map_err(|e| match e {
            crate::fork::ResolveError::Store(e) => SpawnError::Store(e),
            crate::fork::ResolveError::Refused(why) => SpawnError::Join(why),
        })?;
    tracing::warn!(
        version = resolved.version,
        kept_ours = resolved.kept_ours,
        "roster fork resolved; roster updates resume"
    );
    Ok(resolved)
}
