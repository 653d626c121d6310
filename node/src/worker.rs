//! The store worker: one OS thread that owns every blocking sled operation.
//! [`Job`]s arrive from the event loop and from
//! [`crate::handle::NodeHandle`]s over a bounded channel; [`Outcome`]s go
//! back to the event loop over another (both defined in [`crate::job`]), and
//! [`NodeEvent`]s go out on the broadcast channel. This file holds the
//! [`Worker`] itself, the job dispatch and the helpers every part shares;
//! each responsibility has its own file under `worker/`:
//!
//! - `ingest`: validating and storing envelopes from gossip and sync;
//! - `index`: everything written with a new envelope, staged into the one
//!   batch of its chunk (plaintext record, indicators, retractions, the
//!   pending-epoch entry), and the events emitted once it is written;
//! - `sync`: serving peers' sync requests and driving our own rounds;
//! - `publish`: sealing and committing local publications, retractions and
//!   sightings;
//! - `roster`: applying roster updates;
//! - `green`: GREEN epoch keys, their audit, and envelopes waiting for one;
//! - `query`: list, show, search and status;
//! - `quota`: the storage policy and each author's usage against it;
//! - `prune`: deleting expired ciphertext and plaintext behind tombstones,
//!   and purging revoked organisations.

mod export;
mod green;
mod import;
mod index;
mod ingest;
mod prune;
mod publish;
mod query;
mod quota;
mod roster;
mod sync;
mod taxii;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use breakwater_protocol::{
    Body, Digest, Envelope, EpochKeys, Frontier, Header, Indicator, NodeKeys, NodePublicKey, OrgId,
    Seal, Severity, SignedRoster, Tlp, open_with,
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tracing::warn;

use crate::handle::{NodeEvent, RequestError, Traffic};
use crate::job::{Job, JobQueues, Origin, Outcome};
use crate::store::{Store, StoreError};

/// The opened content of an envelope that is costly to open again (sealed to
/// nodes: one X25519 each time), kept whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    tlp: Tlp,
    created_at: u64,
    expires_at: u64,
    body: Body,
}

/// What `list`, `search` and pruning need of an envelope that is cheap to
/// open again (CLEAR, or sealed under a GREEN epoch key: two AEAD operations):
/// its body is not kept, `show` reopens the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Brief {
    tlp: Tlp,
    created_at: u64,
    expires_at: u64,
    /// For a bulletin: its severity, title and indicators.
    severity: Option<Severity>,
    title: Option<String>,
    indicators: Option<Vec<Indicator>>,
}

impl Brief {
    fn of(header: &Header, body: &Body) -> Brief {
        Brief::from_parts(header.tlp, header.created_at, header.expires_at, body)
    }

    fn from_parts(tlp: Tlp, created_at: u64, expires_at: u64, body: &Body) -> Brief {
        let bulletin = match body {
            Body::Bulletin(bulletin) => Some(bulletin),
            _ => None,
        };
        Brief {
            tlp,
            created_at,
            expires_at,
            severity: bulletin.map(|b| b.severity),
            title: bulletin.map(|b| b.title.clone()),
            indicators: bulletin.map(|b| b.indicators.clone()),
        }
    }
}

/// A plaintext record as the store keeps it (`p` family): the tag byte
/// [`RECORD_POSTCARD`] and the postcard of this. Records written as JSON by
/// earlier versions (a [`Record`], first byte `{`) still read.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Opened {
    /// The whole body (sealed to nodes).
    Full(Record),
    /// Only what listing needs (cheap to reopen).
    Brief(Brief),
}

/// First byte of a postcard plaintext record.
const RECORD_POSTCARD: u8 = 0x01;

impl Opened {
    /// What to keep of the opened `body` of an envelope with `header`.
    fn of(header: &Header, body: &Body) -> Opened {
        match header.seal {
            Seal::Nodes(_) => Opened::Full(Record {
                tlp: header.tlp,
                created_at: header.created_at,
                expires_at: header.expires_at,
                body: body.clone(),
            }),
            Seal::Clear | Seal::Epoch { .. } => Opened::Brief(Brief::of(header, body)),
        }
    }

    fn encode(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        postcard::to_extend(self, vec![RECORD_POSTCARD]).unwrap_or_default()
    }

    fn decode(raw: &[u8]) -> Option<Opened> {
        match raw.split_first() {
            Some((&RECORD_POSTCARD, rest)) => postcard::from_bytes(rest).ok(),
            Some((b'{', _)) => serde_json::from_slice(raw).ok().map(Opened::Full),
            _ => None,
        }
    }

    fn brief(&self) -> Brief {
        match self {
            Opened::Full(record) => Brief::from_parts(
                record.tlp,
                record.created_at,
                record.expires_at,
                &record.body,
            ),
            Opened::Brief(brief) => brief.clone(),
        }
    }

    fn expires_at(&self) -> u64 {
        match self {
            Opened::Full(record) => record.expires_at,
            Opened::Brief(brief) => brief.expires_at,
        }
    }

    /// The indicators the envelope was indexed under (a bulletin's).
    fn indicators(&self) -> Vec<Indicator> {
        match self {
            Opened::Full(Record {
                body: Body::Bulletin(bulletin),
                ..
            }) => bulletin.indicators.clone(),
            Opened::Full(_) => Vec::new(),
            Opened::Brief(brief) => brief.indicators.clone().unwrap_or_default(),
        }
    }
}

pub(crate) use quota::StoragePolicy;
pub use taxii::{AddedItem, AddedPage};

pub(crate) struct Worker {
    pub store: Store,
    /// What this node stores and for how long.
    pub policy: StoragePolicy,
    quotas: quota::Quotas,
    /// The last store write failure (a full disk), logged once until a
    /// write succeeds again.
    write_failure: Option<String>,
    /// Write failures logged at warn level (one per episode).
    write_failure_warnings: u64,
    pub keys: NodeKeys,
    pub roster: SignedRoster,
    pub default_ttl_ms: u64,
    pub events: broadcast::Sender<NodeEvent>,
    pub outcomes: mpsc::Sender<Outcome>,
    rounds: HashMap<PeerId, sync::Round>,
    /// Single seqs to ask a peer for because what it sent conflicts with a
    /// stored neighbour (a `prev` mismatch either way): the answer turns a
    /// fork into equivocation evidence.
    probes: HashMap<PeerId, Vec<breakwater_protocol::sync::SeqRange>>,
    /// Feeds a peer's batches did not move forward, backed off per peer and
    /// author (see `sync`).
    stalled: HashMap<(PeerId, NodePublicKey), sync::Stall>,
    /// What each peer may still have served (L2).
    budgets: HashMap<PeerId, sync::Budget>,
    /// Every `(author, seq)` with equivocation evidence.
    evidenced: BTreeSet<(NodePublicKey, u64)>,
    /// Feeds held at a fork: the lowest seq with evidence per author. Nothing
    /// beyond it is stored or requested.
    forks: BTreeMap<NodePublicKey, u64>,
    /// Set once this node may publish without risking a seq it used
    /// before (L7): a sync round with a peer has completed, so its own feed
    /// is as far as that peer knows it, or the roster lists no other node.
    own_feed_ready: Option<tokio::sync::watch::Sender<bool>>,
    rng: rand::rngs::ThreadRng,
    /// Sync-received and newly stored counts for `Status::traffic`.
    traffic: Traffic,
    /// The consortium id, the same in every roster version (for a genesis
    /// roster it is a hash of the whole roster, so it is computed once).
    consortium: Digest,
    /// The hash of `roster` (of its whole encoding: hundreds of µs for a
    /// large consortium), which every sync hello carries; kept with it.
    roster_hash: Digest,
    /// The GREEN keys of every stored roster version this node is in,
    /// re-derived from the stored rosters at start-up (nothing secret is
    /// stored). Shared with the ingest pipeline's checking threads.
    epoch_keys: Arc<EpochKeys>,
    /// Why this node distrusts a GREEN key package, if it does.
    green_problem: Option<String>,
    /// The roster fork recorded in the store, if any: while it is set no
    /// roster update is applied.
    fork: Option<crate::handle::RosterFork>,
    /// GREEN keys of the rosters kept as fork evidence that differ from the
    /// keys of the chain in force: what was sealed on another branch (or on
    /// this node's own branch before a re-base) still opens.
    fork_keys: Arc<EpochKeys>,
    /// Prometheus metrics fed from the counts here.
    pub metrics: crate::metrics::Metrics,
    /// Webhooks: each new envelope stages its outbox entries.
    pub webhooks: crate::webhook::Hooks,
}

/// Unix ms now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn store_err(e: StoreError) -> RequestError {
    RequestError::Store(store_error_line(&e))
}

/// A store error on one line, with its cause (sled's I/O error names a full
/// disk: "No space left on device").
fn store_error_line(e: &StoreError) -> String {
    match e {
        StoreError::Sled(sled::Error::Io(io))
            if io.kind() == std::io::ErrorKind::StorageFull
                || io.to_string().contains("No space left on device") =>
        {
            "store I/O failed: the disk is full (No space left on device)".to_owned()
        }
        StoreError::Sled(sled::Error::Io(io)) => format!("store I/O failed: {io}"),
        StoreError::Sled(other) => format!("store: {other}"),
        other => other.to_string(),
    }
}

/// The key ids of `envelope`'s per-node wraps (empty unless sealed per node).
fn recipient_key_ids(
    envelope: &Envelope,
) -> std::collections::BTreeSet<breakwater_protocol::KeyId> {
    envelope
        .header
        .seal
        .recipients()
        .iter()
        .map(|r| r.key_id)
        .collect()
}

/// The body of `envelope`, if `keys` (with the GREEN keys `epoch_keys`) is
/// among its recipients and it opens.
fn open_in(envelope: &Envelope, keys: &NodeKeys, epoch_keys: &EpochKeys) -> Option<Body> {
    let key_id = keys.sealing_public().key_id();
    let recipient = match &envelope.header.seal {
        Seal::Clear => true,
        Seal::Nodes(recipients) => recipients.iter().any(|r| r.key_id == key_id),
        Seal::Epoch { epoch, .. } => epoch_keys.contains_key(epoch),
    };
    recipient
        .then(|| open_with(envelope, keys, epoch_keys).ok())
        .flatten()
}

/// The body of `envelope` for `keys`: opened with the GREEN keys of the
/// chain in force, or else, when sealed under an epoch that a roster kept
/// as fork evidence keys differently, with that key. The worker and the
/// ingest pipeline's checking threads both open through here, so a GREEN
/// envelope of another branch that arrives after a fork is resolved opens
/// as it would have before.
fn open_as(
    envelope: &Envelope,
    keys: &NodeKeys,
    epoch_keys: &EpochKeys,
    fork_keys: &EpochKeys,
) -> Option<Body> {
    open_in(envelope, keys, epoch_keys).or_else(|| {
        let sealed_elsewhere = matches!(
            envelope.header.seal,
            Seal::Epoch { epoch, .. } if fork_keys.contains_key(&epoch)
        );
        sealed_elsewhere
            .then(|| open_in(envelope, keys, fork_keys))
            .flatten()
    })
}

/// Most gossip messages ingested together (see [`Worker::run`]).
const GOSSIP_BATCH: usize = 64;

impl Worker {
    pub fn new(
        store: Store,
        keys: NodeKeys,
        roster: SignedRoster,
        default_ttl_ms: u64,
        events: broadcast::Sender<NodeEvent>,
        outcomes: mpsc::Sender<Outcome>,
    ) -> Worker {
        let mut worker = Worker {
            consortium: roster.roster.consortium_id(),
            roster_hash: roster.roster.hash(),
            store,
            policy: StoragePolicy::default(),
            quotas: quota::Quotas::default(),
            write_failure: None,
            write_failure_warnings: 0,
            keys,
            roster,
            default_ttl_ms,
            events,
            outcomes,
            rounds: HashMap::new(),
            probes: HashMap::new(),
            stalled: HashMap::new(),
            budgets: HashMap::new(),
            evidenced: BTreeSet::new(),
            forks: BTreeMap::new(),
            own_feed_ready: None,
            rng: rand::rng(),
            traffic: Traffic::default(),
            epoch_keys: Arc::new(EpochKeys::new()),
            green_problem: None,
            fork: None,
            fork_keys: Arc::new(EpochKeys::new()),
            metrics: crate::metrics::Metrics::default(),
            webhooks: crate::webhook::Hooks::default(),
        };
        worker.fork = match crate::fork::recorded(&worker.store) {
            Ok(fork) => fork.map(|evidence| evidence.summary()),
            Err(e) => {
                warn!("reading roster fork evidence failed: {e}");
                None
            }
        };
        if let Some(fork) = &worker.fork {
            warn!(
                version = fork.version,
                ours = %fork.ours,
                theirs = %fork.theirs,
                "a roster fork is recorded: no roster update is applied until an operator resolves it (breakwater consortium resolve-fork)"
            );
        }
        worker.load_epoch_keys();
        worker.load_fork_keys();
        match worker.store.evidence() {
            Ok(all) => {
                for (author, seq, _) in all {
                    worker.note_fork(NodePublicKey(author), seq);
                }
            }
            Err(e) => warn!("reading equivocation evidence failed: {e}"),
        }
        // Before serving anything: pruning reads the expiries recorded.
        if let Err(e) = worker.index_expiry() {
            warn!("recording the expiry of stored envelopes failed: {e}");
        }
        if let Err(e) = worker.index_added() {
            warn!("indexing opened envelopes by arrival (TAXII date_added) failed: {e}");
        }
        worker
    }

    /// Fills [`Worker::fork_keys`] from the fork evidence in the store.
    pub(super) fn load_fork_keys(&mut self) {
        let rosters = match crate::fork::evidence_rosters(&self.store) {
            Ok(rosters) => rosters,
            Err(e) => return warn!("reading roster fork evidence failed: {e}"),
        };
        let mut fork_keys = (*self.fork_keys).clone();
        for signed in rosters {
            let Ok(key) = breakwater_protocol::open_epoch_key(&signed.roster, &self.keys) else {
                continue;
            };
            let in_force = self.epoch_keys.get(&key.epoch).map(|k| k.key_id);
            if in_force != Some(key.key_id) {
                fork_keys.entry(key.epoch).or_insert(key);
            }
        }
        self.fork_keys = Arc::new(fork_keys);
    }

    /// Notes evidence at `(author, seq)`: the feed is held at its lowest
    /// evidenced seq from now on.
    fn note_fork(&mut self, author: NodePublicKey, seq: u64) {
        self.evidenced.insert((author, seq));
        let held = self.forks.entry(author).or_insert(seq);
        *held = (*held).min(seq);
    }

    /// Signals on `ready` once this node's own feed is synced with a peer
    /// (see [`Worker::own_feed_synced`]).
    pub fn with_own_feed_signal(mut self, ready: tokio::sync::watch::Sender<bool>) -> Worker {
        self.own_feed_ready = Some(ready);
        self
    }

    /// Marks this node's own feed as synced: publishing may go ahead.
    fn own_feed_synced(&self) {
        if let Some(ready) = &self.own_feed_ready {
            ready.send_if_modified(|synced| !std::mem::replace(synced, true));
        }
    }

    /// Runs until every job sender is gone.
    pub fn run(mut self, mut jobs: JobQueues) {
        // With no other node in the roster (a one-node consortium) nobody
        // can hold seqs of ours that this store lacks.
        let me = self.keys.node_public();
        let alone = self
            .roster
            .roster
            .members
            .iter()
            .flat_map(|m| &m.card.nodes)
            .all(|n| n.node_key == me);
        if alone {
            self.own_feed_synced();
        }
        // A crash between storing a roster and opening what waited for its
        // key leaves pending entries behind: open them now.
        self.open_pending_green();
        let mut next = None;
        while let Some(job) = next.take().or_else(|| jobs.next_blocking()) {
            match job {
                Job::Stop => break,
                Job::Ingest {
                    items,
                    origin: Origin::Gossip { message_id, source },
                } => {
                    // Gossip that queued up while this thread was busy is
                    // taken together: one verification batch, one write.
                    let mut messages: Vec<_> = items
                        .into_iter()
                        .map(|item| (item, message_id.clone(), source))
                        .collect();
                    while messages.len() < GOSSIP_BATCH {
                        match jobs.try_gossip() {
                            Some(Job::Ingest {
                                items,
                                origin: Origin::Gossip { message_id, source },
                            }) => messages.extend(
                                items
                                    .into_iter()
                                    .map(|item| (item, message_id.clone(), source)),
                            ),
                            Some(other) => {
                                next = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    self.ingest_gossip(messages);
                }
                job => self.on_job(job),
            }
        }
        // A clean stop: the next start answers `status` without a scan.
        if let Err(e) = self.store.save_tally() {
            warn!("flush on shutdown failed: {e}");
        }
    }

    fn send(&self, outcome: Outcome) {
        match &outcome {
            Outcome::SyncRequest { request, .. } => self.metrics.sync_bytes(true, request.len()),
            Outcome::SyncReply { response, .. } => self.metrics.sync_bytes(true, response.len()),
            _ => {}
        }
        // The event loop never blocks on the worker, so this cannot deadlock;
        // it fails only when the event loop is gone.
        let _ = self.outcomes.blocking_send(outcome);
    }

    fn emit(&self, event: NodeEvent) {
        let _ = self.events.send(event);
    }

    fn on_job(&mut self, job: Job) {
        match job {
            Job::Ingest { items, origin } => self.ingest(items, origin),
            Job::GossipRoster {
                bytes,
                message_id,
                source,
            } => self.on_gossip_roster(&bytes, message_id, source),
            Job::StartSync { peer } => self.start_sync(peer),
            Job::ServeSync {
                peer,
                request,
                token,
            } => {
                self.metrics.sync_bytes(false, request.len());
                let response = self.serve_sync_for(peer, &request);
                self.send(Outcome::SyncReply { token, response });
            }
            Job::SyncAnswer { peer, response } => {
                self.metrics.sync_bytes(false, response.len());
                self.on_sync_answer(peer, &response)
            }
            Job::SyncFailed { peer, retry } => self.sync_failed(peer, retry),
            Job::Prune => {
                if let Err(e) = self.prune() {
                    self.write_failed("pruning expired data", &e);
                }
            }
            Job::Publish { request, reply } => {
                let started = std::time::Instant::now();
                let published = self.publish(request);
                if published.is_ok() {
                    self.metrics
                        .publish_flushed(started.elapsed().as_secs_f64());
                }
                let _ = reply.send(published);
            }
            Job::Retract {
                target,
                reason,
                reply,
            } => {
                let _ = reply.send(self.retract(target, reason));
            }
            Job::Sight {
                target,
                indicator,
                reply,
            } => {
                let _ = reply.send(self.sight(target, indicator));
            }
            Job::List { filter, reply } => {
                let _ = reply.send(self.list(&filter));
            }
            Job::Get { id, reply } => {
                let _ = reply.send(self.get(&id));
            }
            Job::Search {
                indicator,
                offset,
                limit,
                reply,
            } => {
                let _ = reply.send(
                    self.search(&indicator)
                        .map(|items| crate::handle::page(items, offset, limit)),
                );
            }
            Job::Roster { reply } => {
                let _ = reply.send(Ok(self.roster.clone()));
            }
            Job::Join { roster, reply } => {
                let _ = reply.send(self.join(*roster));
            }
            Job::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Job::Export { filter, reply } => {
                let _ = reply.send(self.export(&filter));
            }
            Job::Import { request, reply } => {
                let _ = reply.send(self.import(request));
            }
            Job::Added {
                from,
                max,
                cap,
                reply,
            } => {
                let _ = reply.send(self.added_items(from, max, cap));
            }
            Job::Stop => {}
        }
    }

    // ---------------------------------------------------------- shared helpers

    /// The body, if this node is a recipient and it opens.
    fn open(&self, envelope: &Envelope) -> Option<Body> {
        open_as(envelope, &self.keys, &self.epoch_keys, &self.fork_keys)
    }

    /// Logs a failed store write once, not once per batch: a full disk
    /// fails every write until space is freed.
    fn write_failed(&mut self, what: &str, e: &StoreError) {
        let message = format!("{what} failed: {}", store_error_line(e));
        if self.write_failure.is_none() {
            self.write_failure_warnings += 1;
            warn!("{message}; further write failures are not logged until a write succeeds");
        } else {
            tracing::debug!("{message}");
        }
        self.write_failure = Some(message);
    }

    /// Records that a store write succeeded (ends a write-failure episode).
    fn write_succeeded(&mut self) {
        if self.write_failure.take().is_some() {
            tracing::info!("store writes succeed again");
        }
    }

    /// The organisation envelope `id` by `author` belongs to: the one
    /// recorded when it was accepted, else its author's in the roster in
    /// force (envelopes stored before organisations were recorded).
    fn org_of_envelope(&self, id: &Digest, author: &NodePublicKey) -> Option<OrgId> {
        match self.store.org_of(&id.0) {
            Ok(Some(org)) => org.parse().ok(),
            _ => self.org_of(author),
        }
    }

    fn org_of(&self, author: &NodePublicKey) -> Option<OrgId> {
        self.roster
            .roster
            .node(author)
            .map(|(m, _)| m.card.org_id.clone())
    }

    /// The plaintext record kept for `id`, if any.
    fn opened(&self, id: &Digest) -> Result<Option<Opened>, StoreError> {
        Ok(self
            .store
            .plaintext(&id.0)?
            .and_then(|raw| Opened::decode(&raw)))
    }

    /// The frontier this node states in sync (its digest in `Hello`, the map
    /// in a `Frontier` answer): every feed that can still converge. Feeds
    /// of authors the roster does not hold as active members (revoked,
    /// removed) and feeds held at a fork are left out: no node would fetch
    /// them, so they would keep two nodes' digests apart for good (L6).
    fn sync_frontier(&self) -> Frontier {
        let roster = &self.roster.roster;
        let mut frontier = self.frontier();
        frontier.0.retain(|author, _| {
            roster.org_of(author).is_some() && !self.forks.contains_key(author)
        });
        frontier
    }

    /// This node's frontier: the highest contiguous seq of every feed.
    fn frontier(&self) -> Frontier {
        let map = self.store.frontier().unwrap_or_default();
        Frontier(
            map.into_iter()
                .map(|(k, v)| (NodePublicKey(k), v))
                .collect(),
        )
    }
}
