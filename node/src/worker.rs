//! The store worker: one OS thread that owns every blocking sled operation.
//! It validates incoming envelopes with the protocol's pure verdict, stores
//! them, opens what this node may read, indexes indicators, applies
//! retractions and rosters, seals local publications, and answers sync
//! requests. It talks to the event loop only through bounded channels.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use breakwater_protocol::sync::{
    MAX_BATCH_BYTES, MAX_BATCH_ITEMS, MAX_RANGES, MAX_ROSTERS, SeqRange,
};
use breakwater_protocol::{
    AuthorState, Body, Digest, Draft, Envelope, Frontier, IgnoreReason, Indicator, Kind, NodeKeys,
    NodePublicKey, OrgId, Prechecked, Rejection, SealingPublicKey, SignedRoster, SyncRequest,
    SyncResponse, Tlp, Verdict, open, precheck_in, seal, seal_to, validate_prechecked,
};
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::handle::{
    Detail, ListFilter, NodeEvent, PublishRequest, Published, RequestError, Status, Summary,
    Traffic,
};
use crate::store::{NewEnvelope, Store, StoreError};

type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// Work for the store thread.
#[derive(Debug)]
pub(crate) enum Job {
    /// Envelopes received from a peer.
    Ingest {
        items: Vec<Vec<u8>>,
        origin: Origin,
    },
    /// A roster received by gossip.
    GossipRoster {
        bytes: Vec<u8>,
        message_id: MessageId,
        source: PeerId,
    },
    /// Start a sync round with a peer.
    StartSync {
        peer: PeerId,
    },
    /// A peer's sync request to answer.
    ServeSync {
        request: Vec<u8>,
        token: u64,
    },
    /// A peer's answer to our sync request.
    SyncAnswer {
        peer: PeerId,
        response: Vec<u8>,
    },
    /// Our sync request to a peer failed; `retry` starts the round again.
    SyncFailed {
        peer: PeerId,
        retry: bool,
    },
    /// Drop expired plaintext.
    Prune,
    Publish {
        request: PublishRequest,
        reply: Reply<Published>,
    },
    Retract {
        target: Digest,
        reason: String,
        reply: Reply<Published>,
    },
    Sight {
        target: Digest,
        indicator: Indicator,
        reply: Reply<Published>,
    },
    List {
        filter: ListFilter,
        reply: Reply<Vec<Summary>>,
    },
    Get {
        id: String,
        reply: Reply<Detail>,
    },
    Search {
        indicator: Indicator,
        reply: Reply<Vec<Summary>>,
    },
    Roster {
        reply: Reply<SignedRoster>,
    },
    Join {
        roster: Box<SignedRoster>,
        reply: Reply<u64>,
    },
    Status {
        reply: Reply<Status>,
    },
    /// The event loop has ended: flush and stop, even while handles remain.
    Stop,
}

/// Where received envelopes came from.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    Gossip {
        message_id: MessageId,
        source: PeerId,
    },
    Sync {
        peer: PeerId,
    },
}

/// What the worker asks of the event loop.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Report a gossip validation verdict.
    Verdict {
        message_id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    },
    /// Gossip a locally published envelope.
    PublishEnvelope(Vec<u8>),
    /// Gossip a newly applied roster.
    PublishRoster(Vec<u8>),
    /// Send a sync request.
    SyncRequest { peer: PeerId, request: Vec<u8> },
    /// Answer a peer's sync request.
    SyncReply { token: u64, response: Vec<u8> },
    /// A new roster is in force.
    RosterApplied(Box<SignedRoster>),
}

/// The opened content of an envelope, as kept in the `plaintext` tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    tlp: Tlp,
    created_at: u64,
    expires_at: u64,
    body: Body,
}

/// Per-peer state of an outgoing sync round: a single chain of request and
/// answer.
#[derive(Debug)]
struct Round {
    /// Their frontier, once they answered the Hello.
    theirs: Option<Frontier>,
    /// Our frontier digest after the last batch (see [`Round::advanced`]).
    last_digest: Option<Digest>,
    /// Last request or answer; a round quiet for [`ROUND_STALE`] is dead
    /// (an answer dropped on a full queue) and may be replaced.
    active_at: Instant,
    /// Another round was asked for meanwhile (a gossip gap, a tick): start
    /// it when this one ends, since their frontier has moved on.
    again: bool,
    /// The ranges of the last request.
    asked: Vec<SeqRange>,
}

impl Round {
    /// Records `digest`, our frontier after a batch; false when the batch
    /// moved it nothing since the last one.
    fn advanced(&mut self, digest: Digest) -> bool {
        let moved = self.last_digest != Some(digest);
        self.last_digest = Some(digest);
        moved
    }
}

/// How long a round may go without an answer before a new one replaces it
/// (twice the sync request timeout).
const ROUND_STALE: Duration = Duration::from_secs(60);

pub(crate) struct Worker {
    pub store: Store,
    pub keys: NodeKeys,
    pub roster: SignedRoster,
    pub default_ttl_ms: u64,
    pub events: broadcast::Sender<NodeEvent>,
    pub outcomes: mpsc::Sender<Outcome>,
    rounds: HashMap<PeerId, Round>,
    rng: rand::rngs::ThreadRng,
    /// Sync-received and newly stored counts for `Status::traffic`.
    traffic: Traffic,
    /// The consortium id, the same in every roster version (for a genesis
    /// roster it is a hash of the whole roster, so it is computed once).
    consortium: Digest,
}

/// Unix ms now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn store_err(e: StoreError) -> RequestError {
    RequestError::Store(e.to_string())
}

struct StoreView<'a>(&'a Store);

impl AuthorState for StoreView<'_> {
    fn id_at(&self, author: &NodePublicKey, seq: u64) -> Option<Digest> {
        self.0.id_at(&author.0, seq).ok().flatten().map(Digest)
    }
    fn envelope(&self, id: &Digest) -> Option<Vec<u8>> {
        self.0.envelope(&id.0).ok().flatten()
    }
    fn author_of(&self, id: &Digest) -> Option<NodePublicKey> {
        let bytes = self.0.envelope(&id.0).ok().flatten()?;
        Some(Envelope::decode(&bytes).ok()?.header.author)
    }
    fn frontier(&self, author: &NodePublicKey) -> u64 {
        self.0.frontier_of(&author.0).unwrap_or(0)
    }
}

/// Meta key under which retractions wait for their target.
fn pending_key(target: &Digest) -> String {
    format!("pending-retraction/{target}")
}

/// The body of `envelope`, if `keys` is among its recipients and it opens.
fn open_as(envelope: &Envelope, keys: &NodeKeys) -> Option<Body> {
    let key_id = keys.sealing_public().key_id();
    let recipient = !envelope.header.tlp.is_sealed()
        || envelope
            .header
            .recipients
            .iter()
            .any(|r| r.key_id == key_id);
    recipient.then(|| open(envelope, keys).ok()).flatten()
}

/// Batches this large are checked on every core, as a pipeline.
const MIN_PARALLEL: usize = 16;

/// Most items in a pipeline chunk: small enough that writing overlaps the
/// checks of the chunks after it.
const PIPELINE_CHUNK: usize = 256;

/// A precheck and, where this node is a recipient, the opened body.
type Checked = Result<(Prechecked, Option<Body>), Rejection>;

/// A validated item to write: index in the batch, id, author, seq, and the
/// envelope with its body (`None` for an expired one kept for its feed
/// position).
type AcceptedItem = (
    usize,
    Digest,
    NodePublicKey,
    u64,
    Option<(Envelope, Option<Body>)>,
);

/// The store-free checks of one item (decode, membership, signature) and,
/// where `keys` is a recipient, opening: they dominate ingest, and items are
/// independent of one another, so they run on every core.
fn precheck_one(
    bytes: &[u8],
    roster: &breakwater_protocol::Roster,
    consortium: Digest,
    keys: &NodeKeys,
) -> Checked {
    precheck_in(bytes, roster, consortium).map(|pre| {
        let body = open_as(pre.envelope(), keys);
        (pre, body)
    })
}

/// What is left of `asked` (served in order) once a batch ended with
/// `author`'s `seq`; `None` when that matches no asked range or nothing is
/// left.
fn rest_of(asked: &[SeqRange], author: NodePublicKey, seq: u64) -> Option<Vec<SeqRange>> {
    let at = asked
        .iter()
        .position(|r| r.author == author && r.from <= seq && seq <= r.to)?;
    let mut rest = Vec::with_capacity(asked.len() - at);
    if let Some(range) = asked.get(at)
        && seq < range.to
    {
        rest.push(SeqRange {
            author,
            from: seq + 1,
            to: range.to,
        });
    }
    rest.extend_from_slice(asked.get(at + 1..).unwrap_or_default());
    (!rest.is_empty()).then_some(rest)
}

/// A batch being ingested.
struct Ingest<'a> {
    now: u64,
    origin: &'a Origin,
    overlay: BatchView<'a>,
    acceptances: Vec<MessageAcceptance>,
    gap: bool,
}

/// The store as seen by a batch being validated: what is stored plus what
/// earlier items of the batch will store.
struct BatchView<'a> {
    store: &'a Store,
    items: &'a [Vec<u8>],
    by_seq: HashMap<(NodePublicKey, u64), Digest>,
    by_id: HashMap<Digest, (NodePublicKey, usize)>,
    frontiers: HashMap<NodePublicKey, u64>,
}

impl BatchView<'_> {
    fn add(&mut self, index: usize, id: Digest, author: NodePublicKey, seq: u64) {
        self.by_seq.insert((author, seq), id);
        self.by_id.insert(id, (author, index));
        let mut frontier = self.frontier(&author);
        while self.by_seq.contains_key(&(author, frontier + 1)) {
            frontier += 1;
        }
        self.frontiers.insert(author, frontier);
    }
}

impl AuthorState for BatchView<'_> {
    fn id_at(&self, author: &NodePublicKey, seq: u64) -> Option<Digest> {
        self.by_seq
            .get(&(*author, seq))
            .copied()
            .or_else(|| StoreView(self.store).id_at(author, seq))
    }
    fn envelope(&self, id: &Digest) -> Option<Vec<u8>> {
        match self.by_id.get(id) {
            Some((_, index)) => self.items.get(*index).cloned(),
            None => StoreView(self.store).envelope(id),
        }
    }
    fn author_of(&self, id: &Digest) -> Option<NodePublicKey> {
        self.by_id
            .get(id)
            .map(|(author, _)| *author)
            .or_else(|| StoreView(self.store).author_of(id))
    }
    fn frontier(&self, author: &NodePublicKey) -> u64 {
        match self.frontiers.get(author) {
            Some(seq) => *seq,
            None => StoreView(self.store).frontier(author),
        }
    }
}

impl Worker {
    pub fn new(
        store: Store,
        keys: NodeKeys,
        roster: SignedRoster,
        default_ttl_ms: u64,
        events: broadcast::Sender<NodeEvent>,
        outcomes: mpsc::Sender<Outcome>,
    ) -> Worker {
        Worker {
            consortium: roster.roster.consortium_id(),
            store,
            keys,
            roster,
            default_ttl_ms,
            events,
            outcomes,
            rounds: HashMap::new(),
            rng: rand::rng(),
            traffic: Traffic::default(),
        }
    }

    /// Runs until every job sender is gone.
    pub fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.blocking_recv() {
            if matches!(job, Job::Stop) {
                break;
            }
            self.on_job(job);
        }
        if let Err(e) = self.store.flush() {
            warn!("flush on shutdown failed: {e}");
        }
    }

    fn send(&self, outcome: Outcome) {
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
            } => {
                let acceptance = match SignedRoster::decode(&bytes) {
                    Ok(roster) if roster.roster.version > self.roster.roster.version + 1 => {
                        // We are behind, not the relay: catch up by sync.
                        self.start_sync(source);
                        MessageAcceptance::Ignore
                    }
                    Ok(roster) => match self.apply_roster(roster) {
                        Ok(Some(_)) => MessageAcceptance::Accept,
                        Ok(None) => MessageAcceptance::Ignore,
                        Err(_) => MessageAcceptance::Reject,
                    },
                    Err(_) => MessageAcceptance::Reject,
                };
                self.send(Outcome::Verdict {
                    message_id,
                    source,
                    acceptance,
                });
            }
            Job::StartSync { peer } => self.start_sync(peer),
            Job::ServeSync { request, token } => {
                let response = self.serve_sync(&request);
                self.send(Outcome::SyncReply {
                    token,
                    response: response.encode(),
                });
            }
            Job::SyncAnswer { peer, response } => self.on_sync_answer(peer, &response),
            Job::SyncFailed { peer, retry } => {
                let again = self.rounds.remove(&peer).is_some_and(|r| r.again);
                if retry || again {
                    self.start_sync(peer);
                }
            }
            Job::Prune => {
                if let Err(e) = self.prune() {
                    warn!("pruning expired plaintext failed: {e}");
                }
            }
            Job::Publish { request, reply } => {
                let _ = reply.send(self.publish(request));
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
            Job::Search { indicator, reply } => {
                let _ = reply.send(self.search(&indicator));
            }
            Job::Roster { reply } => {
                let _ = reply.send(Ok(self.roster.clone()));
            }
            Job::Join { roster, reply } => {
                let result = match self.apply_roster(*roster) {
                    Ok(Some(version)) => Ok(version),
                    Ok(None) => Err(RequestError::Invalid(format!(
                        "roster version is not newer than the one in force ({})",
                        self.roster.roster.version
                    ))),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Job::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Job::Stop => {}
        }
    }

    // ------------------------------------------------------------------ ingest

    /// Validates a batch exactly as gossip and sync both require, stores the
    /// valid ones with batched writes, then opens and indexes the new ones.
    ///
    /// A batch of [`MIN_PARALLEL`] or more (a sync answer) is a pipeline:
    /// every core prechecks chunks while this thread validates and writes the
    /// chunks already checked, in order, so the sequential store work
    /// overlaps the crypto of the chunks after it.
    fn ingest(&mut self, items: Vec<Vec<u8>>, origin: Origin) {
        let now = now_ms();
        let store = self.store.clone();
        let mut batch = Ingest {
            now,
            origin: &origin,
            overlay: BatchView {
                store: &store,
                items: &items,
                by_seq: HashMap::new(),
                by_id: HashMap::new(),
                frontiers: HashMap::new(),
            },
            acceptances: vec![MessageAcceptance::Ignore; items.len()],
            gap: false,
        };
        if let Origin::Sync { .. } = origin {
            self.traffic.sync_received += items.len() as u64;
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if items.len() < MIN_PARALLEL || threads < 2 {
            let (roster, keys) = (&self.roster.roster, &self.keys);
            let checked = items
                .iter()
                .map(|b| precheck_one(b, roster, self.consortium, keys))
                .collect();
            let accepted = self.validate_part(&items, 0, checked, &mut batch);
            // A valid gossip message is forwarded as soon as it is validated:
            // the next hop need not wait on this node's disk. Should the write
            // then fail, a valid envelope went on that this node lacks; sync
            // brings it back.
            self.report_gossip(&origin, &batch.acceptances);
            self.write_part(&items, accepted);
        } else {
            self.pipeline(&items, threads, &mut batch);
            self.report_gossip(&origin, &batch.acceptances);
        }
        if let (Origin::Gossip { source, .. }, true) = (&origin, batch.gap) {
            self.start_sync(*source);
        }
    }

    /// Validates prechecked items `offset..` of a batch in order against the
    /// store plus what the batch accepted so far; returns what to write.
    fn validate_part(
        &mut self,
        items: &[Vec<u8>],
        offset: usize,
        checked: Vec<Checked>,
        batch: &mut Ingest<'_>,
    ) -> Vec<AcceptedItem> {
        let mut accepted = Vec::new();
        for (k, pre) in checked.into_iter().enumerate() {
            let index = offset + k;
            let Some(bytes) = items.get(index) else { break };
            let (pre, body) = match pre {
                Ok(pre) => pre,
                Err(rejection) => {
                    batch.acceptances[index] = self.on_rejection(rejection, batch.origin);
                    continue;
                }
            };
            match validate_prechecked(pre, bytes, batch.now, &self.roster.roster, &batch.overlay) {
                Verdict::Accept(a) => {
                    batch.gap |= a.gap.is_some();
                    let (author, seq) = (a.envelope.header.author, a.envelope.header.seq);
                    batch.overlay.add(index, a.id, author, seq);
                    accepted.push((index, a.id, author, seq, Some((a.envelope, body))));
                    batch.acceptances[index] = MessageAcceptance::Accept;
                }
                Verdict::Ignore(IgnoreReason::Expired {
                    id, author, seq, ..
                }) => {
                    batch.overlay.add(index, id, author, seq);
                    accepted.push((index, id, author, seq, None));
                }
                Verdict::Ignore(IgnoreReason::Duplicate) => {}
                Verdict::Reject(rejection) => {
                    batch.acceptances[index] = self.on_rejection(rejection, batch.origin);
                }
            }
        }
        accepted
    }

    /// Writes validated items in one batched write, then opens and indexes
    /// the new ones.
    fn write_part(&mut self, items: &[Vec<u8>], accepted: Vec<AcceptedItem>) {
        let writes: Vec<NewEnvelope<'_>> = accepted
            .iter()
            .filter_map(|(index, id, author, seq, _)| {
                Some(NewEnvelope {
                    id: id.0,
                    author: author.0,
                    seq: *seq,
                    bytes: items.get(*index)?,
                })
            })
            .collect();
        match self.store.insert_envelopes(&writes) {
            Ok(results) => {
                self.traffic.stored_from_peers += results
                    .iter()
                    .filter(|r| r.as_ref().is_ok_and(|i| i.new))
                    .count() as u64;
                for ((_, id, _, _, envelope), result) in accepted.into_iter().zip(results) {
                    if let (Ok(inserted), Some((envelope, body))) = (result, envelope)
                        && inserted.new
                        && let Err(e) = self.after_insert(envelope, id, body)
                    {
                        warn!("indexing envelope failed: {e}");
                    }
                }
            }
            Err(e) => warn!("storing envelopes failed: {e}"),
        }
    }

    /// Checks and writes a batch as a pipeline: `threads` threads precheck
    /// chunks (decode, membership, signature, opening) while this thread
    /// validates and writes the chunks already checked, in order.
    fn pipeline(&mut self, items: &[Vec<u8>], threads: usize, batch: &mut Ingest<'_>) {
        let (roster, keys, consortium) = (
            self.roster.roster.clone(),
            self.keys.clone(),
            self.consortium,
        );
        let chunk = PIPELINE_CHUNK.min(items.len().div_ceil(threads)).max(1);
        let chunks: Vec<&[Vec<u8>]> = items.chunks(chunk).collect();
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            let mut checkers = Vec::with_capacity(threads);
            for _ in 0..threads {
                let (tx, next, chunks) = (tx.clone(), &next, &chunks);
                let (roster, keys) = (&roster, &keys);
                checkers.push(scope.spawn(move || {
                    loop {
                        let c = next.fetch_add(1, Ordering::Relaxed);
                        let Some(part) = chunks.get(c) else { break };
                        let checked: Vec<_> = part
                            .iter()
                            .map(|b| precheck_one(b, roster, consortium, keys))
                            .collect();
                        if tx.send((c, checked)).is_err() {
                            break;
                        }
                    }
                }));
            }
            drop(tx);
            let mut ready = BTreeMap::new();
            let mut want = 0;
            for (c, checked) in rx {
                ready.insert(c, checked);
                while let Some(checked) = ready.remove(&want) {
                    let accepted = self.validate_part(items, want * chunk, checked, batch);
                    self.write_part(items, accepted);
                    want += 1;
                }
            }
            // A checking thread that panicked (a bug) left chunks behind:
            // joined here, so its panic ends with it, and its chunks are
            // checked in place.
            for checker in checkers {
                let _ = checker.join();
            }
            while let Some(part) = chunks.get(want) {
                let checked = ready.remove(&want).unwrap_or_else(|| {
                    part.iter()
                        .map(|b| precheck_one(b, &roster, consortium, &keys))
                        .collect()
                });
                let accepted = self.validate_part(items, want * chunk, checked, batch);
                self.write_part(items, accepted);
                want += 1;
            }
        });
    }

    /// Reports gossip verdicts (forward, drop, or drop and score down); sync
    /// batches have none.
    fn report_gossip(&self, origin: &Origin, acceptances: &[MessageAcceptance]) {
        if let Origin::Gossip { message_id, source } = origin {
            for acceptance in acceptances {
                self.send(Outcome::Verdict {
                    message_id: message_id.clone(),
                    source: *source,
                    acceptance: *acceptance,
                });
            }
        }
    }

    /// Records what a rejection calls for and says how gossip should score
    /// it. An author this roster does not know (or knows as revoked) may be
    /// news from a newer roster the relay has and we lack: that is ignored,
    /// not held against the relay, and starts a catch-up.
    fn on_rejection(&mut self, rejection: Rejection, origin: &Origin) -> MessageAcceptance {
        let from = match origin {
            Origin::Gossip { source, .. } => *source,
            Origin::Sync { peer } => *peer,
        };
        if matches!(
            rejection,
            Rejection::UnknownAuthor(_) | Rejection::RevokedAuthor { .. }
        ) {
            debug!(peer = %from, "envelope from outside this roster: {rejection}");
            if matches!(origin, Origin::Gossip { .. }) && !self.rounds.contains_key(&from) {
                self.start_sync(from);
            }
            return MessageAcceptance::Ignore;
        }
        if let Rejection::Equivocation(evidence) = &rejection {
            let record = serde_json::json!({
                "first": hex::encode(&evidence.first),
                "second": hex::encode(&evidence.second),
                "reported_by": from.to_string(),
                "at": now_ms(),
            });
            match self.store.put_evidence(
                &evidence.author.0,
                evidence.seq,
                record.to_string().as_bytes(),
            ) {
                Ok(_) => {
                    warn!(author = %evidence.author, seq = evidence.seq, "equivocation evidence recorded");
                    self.emit(NodeEvent::Equivocation {
                        author: evidence.author,
                        seq: evidence.seq,
                    });
                }
                Err(e) => warn!("recording equivocation evidence failed: {e}"),
            }
        } else {
            debug!(peer = %from, "rejected envelope: {rejection}");
        }
        MessageAcceptance::Reject
    }

    /// Opens (if this node is a recipient), indexes and announces a newly
    /// stored envelope, and applies it if it is a retraction.
    fn after_insert(
        &self,
        envelope: Envelope,
        id: Digest,
        body: Option<Body>,
    ) -> Result<(), StoreError> {
        let header = &envelope.header;
        if let Some(body) = &body {
            let record = Record {
                tlp: header.tlp,
                created_at: header.created_at,
                expires_at: header.expires_at,
                body: body.clone(),
            };
            self.store
                .put_plaintext(&id.0, &serde_json::to_vec(&record).unwrap_or_default())?;
        }
        self.resolve_pending_retractions(&id, &header.author)?;
        let retracted = self.retraction_of(&id, &header.author)?;
        if let (Some(Body::Bulletin(bulletin)), None) = (&body, retracted) {
            for indicator in &bulletin.indicators {
                self.store.index_indicator(&indicator.key(), &id.0)?;
            }
        }
        if let Kind::Retraction { target } = header.kind {
            self.apply_retraction(target, id, &header.author)?;
        }
        self.emit(NodeEvent::Stored(self.summary(
            id,
            &envelope,
            body.as_ref(),
            retracted.is_some(),
        )));
        Ok(())
    }

    /// The body, if this node is a recipient and it opens.
    fn open(&self, envelope: &Envelope) -> Option<Body> {
        open_as(envelope, &self.keys)
    }

    fn org_of(&self, author: &NodePublicKey) -> Option<OrgId> {
        self.roster
            .roster
            .node(author)
            .map(|(m, _)| m.card.org_id.clone())
    }

    /// The retraction of `id` already stored, if it came from the author's org.
    fn retraction_of(
        &self,
        id: &Digest,
        author: &NodePublicKey,
    ) -> Result<Option<Digest>, StoreError> {
        let Some(by) = self.store.retracted_by(&id.0)? else {
            return Ok(None);
        };
        let by_author = self
            .store
            .envelope(&by)?
            .and_then(|b| Envelope::decode(&b).ok())
            .map(|e| e.header.author);
        let same_org = by_author
            .and_then(|a| self.org_of(&a))
            .is_some_and(|org| Some(org) == self.org_of(author));
        Ok(same_org.then_some(Digest(by)))
    }

    fn apply_retraction(
        &self,
        target: Digest,
        by: Digest,
        author: &NodePublicKey,
    ) -> Result<(), StoreError> {
        let Some(bytes) = self.store.envelope(&target.0)? else {
            // The target has not arrived: whether this retraction is its own
            // org's can only be told then (see `resolve_pending_retractions`).
            let key = pending_key(&target);
            let mut pending = self.store.meta(&key)?.unwrap_or_default();
            if pending.len() < 32 * 64 {
                pending.extend_from_slice(&by.0);
                self.store.put_meta(&key, &pending)?;
            }
            return Ok(());
        };
        let owner = Envelope::decode(&bytes).ok().map(|e| e.header.author);
        if owner.and_then(|o| self.org_of(&o)) != self.org_of(author) {
            return Ok(()); // validation rejects this; never act on it
        }
        self.store.mark_retracted(&target.0, &by.0)?;
        if let Some(record) = self.record(&target)?
            && let Body::Bulletin(bulletin) = record.body
        {
            for indicator in &bulletin.indicators {
                self.store.unindex_indicator(&indicator.key(), &target.0)?;
            }
        }
        info!(%target, %by, "envelope retracted");
        self.emit(NodeEvent::Retracted { target, by });
        Ok(())
    }

    /// Applies the retractions of `id` that arrived before it, now that its
    /// organisation is known; those by another organisation are dropped.
    fn resolve_pending_retractions(
        &self,
        id: &Digest,
        author: &NodePublicKey,
    ) -> Result<(), StoreError> {
        let key = pending_key(id);
        let Some(pending) = self.store.meta(&key)? else {
            return Ok(());
        };
        let owner_org = self.org_of(author);
        for by in pending.chunks_exact(32).filter_map(Digest::from_slice) {
            let by_author = self
                .store
                .envelope(&by.0)?
                .and_then(|b| Envelope::decode(&b).ok())
                .map(|e| e.header.author);
            if owner_org.is_some() && by_author.and_then(|a| self.org_of(&a)) == owner_org {
                self.store.mark_retracted(&id.0, &by.0)?;
                info!(target = %id, %by, "envelope retracted");
                self.emit(NodeEvent::Retracted { target: *id, by });
            }
        }
        self.store.put_meta(&key, &[])
    }

    fn record(&self, id: &Digest) -> Result<Option<Record>, StoreError> {
        Ok(self
            .store
            .plaintext(&id.0)?
            .and_then(|raw| serde_json::from_slice(&raw).ok()))
    }

    // ----------------------------------------------------------------- rosters

    /// Verifies and applies a roster. `Ok(None)` when it is not newer.
    fn apply_roster(&mut self, next: SignedRoster) -> Result<Option<u64>, RequestError> {
        let current = &self.roster.roster;
        if next.roster.consortium_id() != current.consortium_id() {
            return Err(RequestError::Invalid(format!(
                "roster belongs to consortium {}, not {}",
                next.roster.consortium_id(),
                current.consortium_id()
            )));
        }
        if next.roster.version <= current.version {
            return Ok(None);
        }
        SignedRoster::verify_update(current, &next)
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        self.store
            .put_roster(next.roster.version, &next.encode())
            .map_err(store_err)?;
        let version = next.roster.version;
        info!(version, "roster applied");
        self.roster = next.clone();
        self.send(Outcome::RosterApplied(Box::new(next.clone())));
        self.send(Outcome::PublishRoster(next.encode()));
        self.emit(NodeEvent::RosterApplied { version });
        Ok(Some(version))
    }

    // -------------------------------------------------------------------- sync

    fn frontier(&self) -> Frontier {
        let map = self.store.frontier().unwrap_or_default();
        Frontier(
            map.into_iter()
                .map(|(k, v)| (NodePublicKey(k), v))
                .collect(),
        )
    }

    /// Starts a round with `peer`, unless one is under way: one chain of
    /// requests per peer, so two rounds never fetch the same ranges. A start
    /// asked for during a round runs when it ends.
    fn start_sync(&mut self, peer: PeerId) {
        if let Some(round) = self.rounds.get_mut(&peer)
            && round.active_at.elapsed() < ROUND_STALE
        {
            round.again = true;
            return;
        }
        let request = SyncRequest::Hello {
            digest: self.frontier().digest(),
            roster_version: self.roster.roster.version,
        };
        self.rounds.insert(
            peer,
            Round {
                theirs: None,
                last_digest: None,
                active_at: Instant::now(),
                again: false,
                asked: Vec::new(),
            },
        );
        self.traffic.sync_requests += 1;
        self.send(Outcome::SyncRequest {
            peer,
            request: request.encode(),
        });
    }

    /// Ends the round with `peer`, starting the next one if it was asked for.
    fn end_round(&mut self, peer: PeerId) {
        if self.rounds.remove(&peer).is_some_and(|r| r.again) {
            self.start_sync(peer);
        }
    }

    fn serve_sync(&self, request: &[u8]) -> SyncResponse {
        let request = match SyncRequest::decode(request) {
            Ok(r) => r,
            Err(e) => return SyncResponse::Refused(e.to_string()),
        };
        match request {
            SyncRequest::Hello {
                digest,
                roster_version,
            } => {
                let frontier = self.frontier();
                let ours = self.roster.roster.version;
                if digest == frontier.digest() && roster_version == ours {
                    SyncResponse::InSync
                } else {
                    SyncResponse::Frontier {
                        frontier,
                        roster_version: ours,
                    }
                }
            }
            SyncRequest::Ranges(ranges) => {
                let mut items = Vec::new();
                let mut bytes = 0usize;
                let mut more = false;
                for range in ranges {
                    if bytes >= MAX_BATCH_BYTES || items.len() >= MAX_BATCH_ITEMS {
                        more = true;
                        break;
                    }
                    match self.store.range(
                        &range.author.0,
                        range.from,
                        range.to,
                        MAX_BATCH_BYTES - bytes,
                        MAX_BATCH_ITEMS - items.len(),
                    ) {
                        Ok((found, cut)) => {
                            bytes += found.iter().map(Vec::len).sum::<usize>();
                            items.extend(found);
                            // A batch ends with the range it cut, so the
                            // asker can tell from its last item where to go on.
                            if cut {
                                more = true;
                                break;
                            }
                        }
                        Err(e) => return SyncResponse::Refused(format!("store: {e}")),
                    }
                }
                SyncResponse::Envelopes { items, more }
            }
            SyncRequest::Rosters { after } => match self.store.rosters() {
                Ok(all) => {
                    // Oldest first, bounded like envelope batches; the
                    // requester asks again for the rest.
                    let mut bytes = 0usize;
                    let rosters = all
                        .into_iter()
                        .filter(|(v, _)| *v > after)
                        .take(MAX_ROSTERS)
                        .take_while(|(_, b)| {
                            bytes += b.len();
                            bytes <= MAX_BATCH_BYTES || bytes == b.len()
                        })
                        .map(|(_, b)| b)
                        .collect();
                    SyncResponse::Rosters(rosters)
                }
                Err(e) => SyncResponse::Refused(format!("store: {e}")),
            },
        }
    }

    fn on_sync_answer(&mut self, peer: PeerId, response: &[u8]) {
        if let Some(round) = self.rounds.get_mut(&peer) {
            round.active_at = Instant::now();
        }
        let response = match SyncResponse::decode(response) {
            Ok(r) => r,
            Err(e) => {
                debug!(%peer, "bad sync response: {e}");
                self.end_round(peer);
                return;
            }
        };
        match response {
            SyncResponse::InSync | SyncResponse::Refused(_) => self.end_round(peer),
            SyncResponse::Frontier {
                frontier,
                roster_version,
            } => {
                let Some(round) = self.rounds.get_mut(&peer) else {
                    // The round was replaced or failed meanwhile.
                    return;
                };
                round.theirs = Some(frontier);
                if roster_version > self.roster.roster.version {
                    let request = SyncRequest::Rosters {
                        after: self.roster.roster.version,
                    };
                    self.traffic.sync_requests += 1;
                    self.send(Outcome::SyncRequest {
                        peer,
                        request: request.encode(),
                    });
                } else {
                    self.request_missing(peer);
                }
            }
            SyncResponse::Rosters(rosters) => {
                for bytes in rosters {
                    match SignedRoster::decode(&bytes)
                        .map_err(|e| RequestError::Invalid(e.to_string()))
                    {
                        Ok(roster) => {
                            if let Err(e) = self.apply_roster(roster) {
                                debug!(%peer, "roster from sync refused: {e}");
                                break;
                            }
                        }
                        Err(e) => {
                            debug!(%peer, "roster from sync undecodable: {e}");
                            break;
                        }
                    }
                }
                self.request_missing(peer);
            }
            SyncResponse::Envelopes { items, more } => {
                // The rest is asked for before this batch is checked, so the
                // peer serves it while this node works.
                let asked_ahead = more && self.ask_for_the_rest(peer, items.last());
                self.ingest(items, Origin::Sync { peer });
                if asked_ahead {
                    self.check_progress(peer);
                } else {
                    self.request_missing(peer);
                }
            }
        }
    }

    /// Ends the round with `peer` if the batch just taken moved nothing
    /// forward (a peer answering with junk, or envelopes it cannot prove):
    /// the request already sent ahead then finds no round and stops.
    fn check_progress(&mut self, peer: PeerId) {
        let digest = self.frontier().digest();
        let Some(round) = self.rounds.get_mut(&peer) else {
            return;
        };
        if !round.advanced(digest) {
            self.end_round(peer);
        }
    }

    /// After a batch that `peer` cut short, asks at once for what it did not
    /// send of the ranges last asked: ranges are served in order, so the last
    /// item says where the batch stopped. Returns whether it asked; when the
    /// last item matches no asked range, the frontier decides after ingest.
    fn ask_for_the_rest(&mut self, peer: PeerId, last: Option<&Vec<u8>>) -> bool {
        let Some(last) = last.and_then(|bytes| Envelope::decode(bytes).ok()) else {
            return false;
        };
        let Some(round) = self.rounds.get_mut(&peer) else {
            return false;
        };
        let Some(rest) = rest_of(&round.asked, last.header.author, last.header.seq) else {
            return false;
        };
        round.asked = rest.clone();
        round.active_at = Instant::now();
        self.traffic.sync_requests += 1;
        self.send(Outcome::SyncRequest {
            peer,
            request: SyncRequest::Ranges(rest).encode(),
        });
        true
    }

    /// Asks `peer` for the ranges it has and we lack, while that makes progress.
    fn request_missing(&mut self, peer: PeerId) {
        let mine = self.frontier();
        let digest = mine.digest();
        let Some(round) = self.rounds.get_mut(&peer) else {
            return;
        };
        if round.theirs.is_none() {
            return;
        }
        if !round.advanced(digest) {
            // The last batch moved nothing forward: stop rather than loop.
            self.end_round(peer);
            return;
        }
        let Some(theirs) = &round.theirs else {
            return;
        };
        // Feeds of authors we would reject (revoked, unknown) are never
        // requested: they could never advance and would starve the rest.
        let roster = &self.roster.roster;
        let mut missing: Vec<_> = mine
            .missing_from(theirs)
            .into_iter()
            .filter(|r| roster.org_of(&r.author).is_some())
            .collect();
        if missing.is_empty() {
            self.end_round(peer);
            return;
        }
        round.active_at = Instant::now();
        missing.truncate(MAX_RANGES);
        round.asked = missing.clone();
        self.traffic.sync_requests += 1;
        self.send(Outcome::SyncRequest {
            peer,
            request: SyncRequest::Ranges(missing).encode(),
        });
    }

    // ----------------------------------------------------------------- publish

    fn publish(&mut self, request: PublishRequest) -> Result<Published, RequestError> {
        request
            .bulletin
            .check()
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        let now = now_ms();
        let ttl = request.ttl_ms.unwrap_or(self.default_ttl_ms).max(1);
        let (seq, prev) = self.next_seq()?;
        let draft = Draft {
            seq,
            prev,
            created_at: now,
            expires_at: now.saturating_add(ttl),
            tlp: request.tlp,
            kind: Kind::Bulletin,
            body: Body::Bulletin(request.bulletin),
        };
        let envelope = seal(
            &self.keys,
            &self.roster.roster,
            draft,
            &request.to,
            &mut self.rng,
        )
        .map_err(|e| RequestError::Invalid(e.to_string()))?;
        self.commit_own(envelope)
    }

    fn retract(&mut self, target: Digest, reason: String) -> Result<Published, RequestError> {
        let envelope = self.own_org_target(&target)?;
        self.follow_up(
            &envelope,
            Kind::Retraction { target },
            Body::Retraction { reason },
        )
    }

    fn sight(&mut self, target: Digest, indicator: Indicator) -> Result<Published, RequestError> {
        let envelope = self.stored_envelope(&target)?;
        let body = Body::Sighting {
            indicator,
            seen_at: now_ms(),
            note: None,
        };
        self.follow_up(&envelope, Kind::Sighting { target }, body)
    }

    /// Seals a retraction or sighting of `target` to the target's recipients
    /// under the target's label, and commits it.
    fn follow_up(
        &mut self,
        target: &Envelope,
        kind: Kind,
        body: Body,
    ) -> Result<Published, RequestError> {
        let recipients = self.recipients_of(target);
        let (seq, prev) = self.next_seq()?;
        let now = now_ms();
        let draft = Draft {
            seq,
            prev,
            created_at: now,
            expires_at: target.header.expires_at.max(now + 1),
            tlp: target.header.tlp,
            kind,
            body,
        };
        let sealed = seal_to(
            &self.keys,
            self.roster.roster.consortium_id(),
            draft,
            &recipients,
            &mut self.rng,
        )
        .map_err(|e| RequestError::Invalid(e.to_string()))?;
        self.commit_own(sealed)
    }

    fn stored_envelope(&self, id: &Digest) -> Result<Envelope, RequestError> {
        let bytes = self
            .store
            .envelope(&id.0)
            .map_err(store_err)?
            .ok_or_else(|| RequestError::NotFound(id.to_hex()))?;
        Envelope::decode(&bytes).map_err(|e| RequestError::Store(e.to_string()))
    }

    fn own_org_target(&self, target: &Digest) -> Result<Envelope, RequestError> {
        let envelope = self.stored_envelope(target)?;
        let owner = self.org_of(&envelope.header.author);
        let mine = self.org_of(&self.keys.node_public());
        match (owner, mine) {
            (Some(owner), Some(mine)) if owner == mine => Ok(envelope),
            (owner, _) => Err(RequestError::Invalid(format!(
                "envelope {} belongs to org {}; only its own organisation may retract it",
                target,
                owner
                    .map(|o| o.to_string())
                    .unwrap_or_else(|| "unknown".into())
            ))),
        }
    }

    /// Sealing keys of the target's recipients that are still in the roster
    /// (always including this org), for retractions and sightings.
    fn recipients_of(&self, envelope: &Envelope) -> Vec<SealingPublicKey> {
        if !envelope.header.tlp.is_sealed() {
            return Vec::new();
        }
        let wanted: BTreeSet<_> = envelope
            .header
            .recipients
            .iter()
            .map(|r| r.key_id)
            .collect();
        let mine = self.org_of(&self.keys.node_public());
        self.roster
            .roster
            .active_nodes()
            .filter(|(org, node)| {
                wanted.contains(&node.sealing_key.key_id()) || Some(*org) == mine.as_ref()
            })
            .map(|(_, node)| node.sealing_key)
            .collect()
    }

    fn next_seq(&self) -> Result<(u64, Digest), RequestError> {
        let me = self.keys.node_public();
        let last = self.store.frontier_of(&me.0).map_err(store_err)?;
        let prev = if last == 0 {
            Digest::ZERO
        } else {
            self.store
                .id_at(&me.0, last)
                .map_err(store_err)?
                .map(Digest)
                .unwrap_or(Digest::ZERO)
        };
        Ok((last + 1, prev))
    }

    /// Stores and flushes an own envelope, then hands it to gossip.
    fn commit_own(&mut self, envelope: Envelope) -> Result<Published, RequestError> {
        let bytes = envelope.encode();
        let id = envelope.id();
        let seq = envelope.header.seq;
        let recipients = envelope.header.recipients.len();
        // A clash at our own (author, seq) is a failure, never an ack.
        let header = &envelope.header;
        let inserted = self
            .store
            .insert_envelope(&id.0, &header.author.0, header.seq, &bytes)
            .map_err(store_err)?;
        if inserted.new {
            // Once stored, the envelope is published whatever happens to the
            // local index: it will be flushed and synced, so report success.
            let body = self.open(&envelope);
            if let Err(e) = self.after_insert(envelope, id, body) {
                warn!("indexing own envelope failed: {e}");
            }
        }
        self.store.flush().map_err(store_err)?;
        self.send(Outcome::PublishEnvelope(bytes));
        Ok(Published {
            id,
            seq,
            recipients,
        })
    }

    // ----------------------------------------------------------------- queries

    fn summary(
        &self,
        id: Digest,
        envelope: &Envelope,
        body: Option<&Body>,
        retracted: bool,
    ) -> Summary {
        let header = &envelope.header;
        let bulletin = match body {
            Some(Body::Bulletin(b)) => Some(b),
            _ => None,
        };
        Summary {
            id,
            author_org: self
                .org_of(&header.author)
                .map(|o| o.to_string())
                .unwrap_or_else(|| "unknown".into()),
            author: header.author,
            seq: header.seq,
            kind: header.kind.as_str().to_string(),
            target: header.kind.target(),
            tlp: header.tlp,
            created_at: header.created_at,
            expires_at: header.expires_at,
            readable: body.is_some(),
            retracted,
            severity: bulletin.map(|b| b.severity),
            title: bulletin.map(|b| b.title.clone()),
            indicators: bulletin.map(|b| b.indicators.clone()),
        }
    }

    fn load(&self, id: &Digest) -> Result<Option<(Envelope, Option<Body>, bool)>, StoreError> {
        let Some(bytes) = self.store.envelope(&id.0)? else {
            return Ok(None);
        };
        let Ok(envelope) = Envelope::decode(&bytes) else {
            return Ok(None);
        };
        let body = self.record(id)?.map(|r| r.body);
        let retracted = self.retraction_of(id, &envelope.header.author)?.is_some();
        Ok(Some((envelope, body, retracted)))
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Summary>, RequestError> {
        let mut out = Vec::new();
        for entry in self.store.envelopes_iter() {
            let (id, _) = entry.map_err(store_err)?;
            let id = Digest(id);
            let Some((envelope, body, retracted)) = self.load(&id).map_err(store_err)? else {
                continue;
            };
            let summary = self.summary(id, &envelope, body.as_ref(), retracted);
            if !summary.is_bulletin()
                || (!filter.all && !summary.readable)
                || (filter.hide_retracted && summary.retracted)
                || filter.since.is_some_and(|since| summary.created_at < since)
                || filter.tlp.is_some_and(|tlp| summary.tlp != tlp)
                || filter
                    .severity
                    .is_some_and(|min| summary.severity.is_none_or(|s| s < min))
                || summary.expires_at <= now_ms()
            {
                continue;
            }
            out.push(summary);
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    fn resolve(&self, id: &str) -> Result<Digest, RequestError> {
        let id = id.trim().to_ascii_lowercase();
        if let Ok(full) = id.parse::<Digest>() {
            return Ok(full);
        }
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RequestError::Invalid(format!(
                "{id:?} is not an envelope id (hex, at least 4 characters)"
            )));
        }
        let mut found = None;
        for entry in self.store.envelopes_iter() {
            let (candidate, _) = entry.map_err(store_err)?;
            if hex::encode(candidate).starts_with(&id) {
                if found.is_some() {
                    return Err(RequestError::Invalid(format!(
                        "id prefix {id} is ambiguous"
                    )));
                }
                found = Some(Digest(candidate));
            }
        }
        found.ok_or(RequestError::NotFound(id))
    }

    fn get(&self, id: &str) -> Result<Detail, RequestError> {
        let id = self.resolve(id)?;
        let (envelope, body, retracted) = self
            .load(&id)
            .map_err(store_err)?
            .ok_or_else(|| RequestError::NotFound(id.to_hex()))?;
        let retracted_by = self
            .store
            .retracted_by(&id.0)
            .map_err(store_err)?
            .map(Digest)
            .filter(|_| retracted);
        let key_ids: BTreeSet<_> = envelope
            .header
            .recipients
            .iter()
            .map(|r| r.key_id)
            .collect();
        let recipients = self
            .roster
            .roster
            .members
            .iter()
            .filter(|m| {
                m.card
                    .nodes
                    .iter()
                    .any(|n| key_ids.contains(&n.sealing_key.key_id()))
            })
            .map(|m| m.card.org_id.to_string())
            .collect();
        let size = envelope.encoded_len();
        Ok(Detail {
            summary: self.summary(id, &envelope, body.as_ref(), retracted),
            body,
            retracted_by,
            recipients,
            size,
        })
    }

    fn search(&self, indicator: &Indicator) -> Result<Vec<Summary>, RequestError> {
        let mut out = Vec::new();
        for id in self
            .store
            .lookup_indicator(&indicator.key())
            .map_err(store_err)?
        {
            let id = Digest(id);
            if let Some((envelope, body, retracted)) = self.load(&id).map_err(store_err)?
                && !retracted
            {
                out.push(self.summary(id, &envelope, body.as_ref(), retracted));
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(out)
    }

    fn status(&self) -> Result<Status, RequestError> {
        let counts = self.store.counts();
        let me = self.keys.node_public();
        Ok(Status {
            org_id: self.org_of(&me).map(|o| o.to_string()).unwrap_or_default(),
            node_key: me,
            peer_id: self.keys.peer_id().to_string(),
            consortium: self.roster.roster.consortium_id(),
            roster_version: self.roster.roster.version,
            listen: Vec::new(),
            peers: Vec::new(),
            frontier: self.frontier().0.into_iter().collect(),
            envelopes: counts.envelopes,
            readable: counts.plaintext,
            evidence: counts.evidence,
            disk_bytes: self.store.size_on_disk().unwrap_or(0),
            traffic: self.traffic,
        })
    }

    /// Drops the plaintext and index entries of expired envelopes. Feed
    /// positions and ciphertext stay, so sync does not fetch them again.
    fn prune(&self) -> Result<(), StoreError> {
        let now = now_ms();
        for entry in self.store.plaintext_iter() {
            let (id, raw) = entry?;
            let Ok(record) = serde_json::from_slice::<Record>(&raw) else {
                continue;
            };
            if record.expires_at > now {
                continue;
            }
            if let Body::Bulletin(bulletin) = &record.body {
                for indicator in &bulletin.indicators {
                    self.store.unindex_indicator(&indicator.key(), &id)?;
                }
            }
            self.store.remove_plaintext(&id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn range(author: u8, from: u64, to: u64) -> SeqRange {
        SeqRange {
            author: NodePublicKey([author; 32]),
            from,
            to,
        }
    }

    #[test]
    fn the_rest_of_a_cut_batch_starts_after_its_last_item() {
        let asked = [range(1, 1, 100), range(2, 5, 9), range(3, 1, 1)];
        let a = NodePublicKey([1; 32]);
        let b = NodePublicKey([2; 32]);
        // Cut inside the first range: the rest of it, then the others.
        assert_eq!(
            rest_of(&asked, a, 40),
            Some(vec![range(1, 41, 100), range(2, 5, 9), range(3, 1, 1)])
        );
        // Cut at the end of a range: the ranges after it.
        assert_eq!(
            rest_of(&asked, a, 100),
            Some(vec![range(2, 5, 9), range(3, 1, 1)])
        );
        assert_eq!(
            rest_of(&asked, b, 7),
            Some(vec![range(2, 8, 9), range(3, 1, 1)])
        );
        // Nothing left.
        assert_eq!(rest_of(&asked, NodePublicKey([3; 32]), 1), None);
        // An item outside every asked range (a confused or hostile peer)
        // asks for nothing: the frontier decides after ingest.
        assert_eq!(rest_of(&asked, a, 101), None);
        assert_eq!(rest_of(&asked, b, 4), None);
        assert_eq!(rest_of(&asked, NodePublicKey([9; 32]), 1), None);
        assert_eq!(rest_of(&[], a, 1), None);
    }
}
