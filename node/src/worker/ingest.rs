//! Ingest: validates batches of envelopes from gossip and sync with the
//! protocol's pure verdict (on every core for large batches; duplicates
//! recognised by id before any crypto; one ed25519 batch verification per
//! chunk), and stores each chunk's valid envelopes with everything `index`
//! stages for them in one sled batch.
//! Reports gossip verdicts to the event loop and starts a sync round with a
//! relay that revealed a gap or a roster we lack.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use breakwater_protocol::envelope::id_of;
use breakwater_protocol::{
    AuthorState, Body, Digest, Envelope, EpochKeys, IgnoreReason, NodeKeys, NodePublicKey, OrgId,
    Prechecked, Rejection, Verdict, precheck_batch_in, validate_prechecked,
};
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use tracing::{debug, warn};

use super::index::Staged;
use super::{Origin, Outcome, Worker, now_ms, open_as};
use crate::event_loop::Misbehaviour;
use crate::handle::NodeEvent;
use crate::store::{NewEnvelope, Store};

/// The store as validation sees it (sync, gossip and air-gap imports alike).
pub(super) struct StoreView<'a>(pub(super) &'a Store);

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
    fn org_of(&self, id: &Digest) -> Option<OrgId> {
        self.0.org_of(&id.0).ok().flatten()?.parse().ok()
    }
}

/// Batches this large are checked on every core, as a pipeline.
const MIN_PARALLEL: usize = 16;

/// The cores this process may use, asked of the OS once:
/// `available_parallelism` reads the cgroup files on every call, which a
/// profile of a 300-node mesh put at 6 % of its CPU when it was asked per
/// gossip message.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Most items in a pipeline chunk: small enough that writing overlaps the
/// checks of the chunks after it.
const PIPELINE_CHUNK: usize = 256;

/// What the store-free checks made of one item.
enum Checked {
    /// Already stored (its id is in the store): not checked any further.
    Stored,
    /// Failed a store-free check.
    Rejected(Rejection),
    /// Passed them; with the body where this node is a recipient.
    Passed(Box<Prechecked>, Option<Body>),
}

/// A validated item to write: index in the batch, id, author, seq, and the
/// envelope with its body and organisation (`None` for one kept only as a
/// tombstone for its feed position: expired, or living longer than this
/// node stores).
type AcceptedItem = (
    usize,
    Digest,
    NodePublicKey,
    u64,
    Option<(Envelope, Option<Body>, OrgId)>,
);

/// The store-free checks of a chunk and, where `keys` is a recipient,
/// opening: they dominate ingest, and chunks are independent of one
/// another, so they run on every core.
///
/// An item already in the store is recognised by its id (the hash of its
/// bytes) first, before any signature check or decryption: identical bytes
/// were checked when first stored. The others are prechecked together, with
/// one ed25519 batch verification ([`precheck_batch_in`]: a batch that fails
/// is verified one by one, so the bad item is still named).
fn precheck_chunk(
    items: &[Vec<u8>],
    store: &Store,
    roster: &breakwater_protocol::Roster,
    consortium: Digest,
    keys: &NodeKeys,
    epoch_keys: &EpochKeys,
    fork_keys: &EpochKeys,
) -> Vec<Checked> {
    let stored: Vec<bool> = items
        .iter()
        .map(|bytes| store.contains(&id_of(bytes).0).unwrap_or(false))
        .collect();
    let fresh: Vec<&[u8]> = items
        .iter()
        .zip(&stored)
        .filter(|(_, stored)| !**stored)
        .map(|(bytes, _)| bytes.as_slice())
        .collect();
    let mut prechecked = precheck_batch_in(&fresh, roster, consortium).into_iter();
    stored
        .into_iter()
        .map(|stored| {
            if stored {
                return Checked::Stored;
            }
            match prechecked.next() {
                Some(Ok(pre)) => {
                    let body = open_as(pre.envelope(), keys, epoch_keys, fork_keys);
                    Checked::Passed(Box::new(pre), body)
                }
                Some(Err(rejection)) => Checked::Rejected(rejection),
                // One result per fresh item: unreachable.
                None => Checked::Stored,
            }
        })
        .collect()
}

/// A batch being ingested.
struct Ingest<'a> {
    now: u64,
    origins: Origins<'a>,
    overlay: BatchView<'a>,
    acceptances: Vec<MessageAcceptance>,
    /// Items that showed a gap in their feed (or a roster ahead of ours):
    /// a sync round with whoever sent them fetches what is missing.
    gaps: Vec<usize>,
    /// Items ignored as duplicates or expired: stale replays, if they came
    /// by gossip.
    ignored: Vec<usize>,
}

/// Where the items of a batch came from: one origin for all (a sync answer,
/// one gossip message), or one each (gossip messages taken together).
#[derive(Clone, Copy)]
enum Origins<'a> {
    One(&'a Origin),
    Each {
        each: &'a [Origin],
        /// For an index past `each` (never asked for).
        fallback: &'a Origin,
    },
}

impl<'a> Origins<'a> {
    /// The origin of item `index`.
    fn of(&self, index: usize) -> &'a Origin {
        match *self {
            Origins::One(origin) => origin,
            Origins::Each { each, fallback } => each.get(index).unwrap_or(fallback),
        }
    }

    /// The origin of every item, by index.
    fn indexed(&self, len: usize) -> impl Iterator<Item = (usize, &'a Origin)> + '_ {
        (0..len).map(|index| (index, self.of(index)))
    }
}

/// The store as seen by a batch being validated: what is stored plus what
/// earlier items of the batch will store.
struct BatchView<'a> {
    store: &'a Store,
    items: &'a [Vec<u8>],
    by_seq: HashMap<(NodePublicKey, u64), Digest>,
    by_id: HashMap<Digest, (NodePublicKey, usize)>,
    by_org: HashMap<Digest, OrgId>,
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
    fn org_of(&self, id: &Digest) -> Option<OrgId> {
        match self.by_org.get(id) {
            Some(org) => Some(org.clone()),
            None => StoreView(self.store).org_of(id),
        }
    }
}

impl Worker {
    /// Validates a batch exactly as gossip and sync both require, stores the
    /// valid ones with batched writes, then opens and indexes the new ones.
    ///
    /// A batch of [`MIN_PARALLEL`] or more (a sync answer) is a pipeline:
    /// every core prechecks chunks while this thread validates and writes the
    /// chunks already checked, in order, so the sequential store work
    /// overlaps the crypto of the chunks after it.
    pub(super) fn ingest(&mut self, items: Vec<Vec<u8>>, origin: Origin) {
        self.ingest_from(items, Origins::One(&origin));
    }

    /// Ingests gossip messages that waited in the queue together, as one
    /// batch: one batch signature verification and one store write for all
    /// of them (a busy node catches up instead of falling further behind),
    /// each with its own verdict for its own message and relay.
    pub(super) fn ingest_gossip(&mut self, messages: Vec<(Vec<u8>, MessageId, PeerId)>) {
        let (items, origins): (Vec<Vec<u8>>, Vec<Origin>) = messages
            .into_iter()
            .map(|(item, message_id, source)| (item, Origin::Gossip { message_id, source }))
            .unzip();
        let Some(fallback) = origins.first() else {
            return;
        };
        let each = Origins::Each {
            each: &origins,
            fallback,
        };
        self.ingest_from(items, each);
    }

    fn ingest_from(&mut self, items: Vec<Vec<u8>>, origins: Origins<'_>) {
        let now = now_ms();
        let store = self.store.clone();
        let mut batch = Ingest {
            now,
            origins,
            overlay: BatchView {
                store: &store,
                items: &items,
                by_seq: HashMap::new(),
                by_id: HashMap::new(),
                by_org: HashMap::new(),
                frontiers: HashMap::new(),
            },
            acceptances: vec![MessageAcceptance::Ignore; items.len()],
            gaps: Vec::new(),
            ignored: Vec::new(),
        };
        if let Origins::One(Origin::Sync { .. }) = origins {
            self.traffic.sync_received += items.len() as u64;
        }
        let label = source_label(origins.of(0));
        let threads = if items.len() < MIN_PARALLEL {
            1
        } else {
            cores()
        };
        if threads < 2 {
            let (roster, keys) = (&self.roster.roster, &self.keys);
            let (epoch_keys, fork_keys) = (&self.epoch_keys, &self.fork_keys);
            let checked = precheck_chunk(
                &items,
                &store,
                roster,
                self.consortium,
                keys,
                epoch_keys,
                fork_keys,
            );
            let accepted = self.validate_part(&items, 0, checked, &mut batch);
            // A valid gossip message is forwarded as soon as it is validated:
            // the next hop need not wait on this node's disk. Should the write
            // then fail, a valid envelope went on that this node lacks; sync
            // brings it back.
            self.report_gossip(origins, &batch.acceptances);
            self.write_part(&items, accepted, label);
        } else {
            self.pipeline(&items, threads, &mut batch);
            self.report_gossip(origins, &batch.acceptances);
        }
        // A replay of an envelope stored long ago (past gossipsub's
        // seen-cache) or an expired one: a few are normal, a flood counts
        // against the sender (L1).
        for &index in &batch.ignored {
            if let Origin::Gossip { source, .. } = origins.of(index) {
                self.misbehaved(*source, Misbehaviour::Ignored);
            }
        }
        let mut synced = Vec::new();
        for &index in &batch.gaps {
            if let Origin::Gossip { source, .. } = origins.of(index)
                && !synced.contains(source)
            {
                synced.push(*source);
                self.start_sync(*source);
            }
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
                // A feed held at a fork takes nothing beyond the fork point.
                Checked::Passed(pre, _)
                    if self
                        .forks
                        .get(&pre.envelope().header.author)
                        .is_some_and(|&held| pre.envelope().header.seq > held) =>
                {
                    self.metrics.ignored("fork_held");
                    continue;
                }
                Checked::Passed(pre, body) => (*pre, body),
                // Ignored as a duplicate, as validation would.
                Checked::Stored => {
                    self.metrics.ignored("duplicate");
                    batch.ignored.push(index);
                    continue;
                }
                Checked::Rejected(rejection) => {
                    self.metrics.rejected(&rejection);
                    let origin = batch.origins.of(index);
                    batch.acceptances[index] = self.on_rejection(rejection, origin, None);
                    continue;
                }
            };
            let (author, seq) = (pre.envelope().header.author, pre.envelope().header.seq);
            match validate_prechecked(pre, bytes, batch.now, &self.roster.roster, &batch.overlay) {
                Verdict::Accept(a) => {
                    let (author, seq) = (a.envelope.header.author, a.envelope.header.seq);
                    let header = &a.envelope.header;
                    let lifetime = header.expires_at.saturating_sub(header.created_at);
                    if lifetime > self.policy.max_lifetime_ms {
                        // Longer than this node stores: ignored, its feed
                        // position kept as a tombstone.
                        self.metrics.ignored("lifetime");
                        if self.over_quota(&author, 0, batch.now).is_none() {
                            self.count_stored(&author, 0, batch.now);
                            batch.overlay.add(index, a.id, author, seq);
                            accepted.push((index, a.id, author, seq, None));
                        }
                        continue;
                    }
                    let size = bytes.len() as u64;
                    if self.over_quota(&author, size, batch.now).is_some() {
                        // Ignored, not rejected: the quota is this node's.
                        self.metrics.ignored("quota");
                        continue;
                    }
                    self.count_stored(&author, size, batch.now);
                    // A gap in the feed, or GREEN under a roster version we
                    // lack: a sync round with the relay fetches either.
                    let roster_ahead = a
                        .envelope
                        .header
                        .seal
                        .epoch()
                        .is_some_and(|epoch| epoch > self.roster.roster.version);
                    if a.gap.is_some() || roster_ahead {
                        batch.gaps.push(index);
                    }
                    batch.overlay.add(index, a.id, author, seq);
                    batch.overlay.by_org.insert(a.id, a.author_org.clone());
                    let org = a.author_org;
                    accepted.push((index, a.id, author, seq, Some((a.envelope, body, org))));
                    batch.acceptances[index] = MessageAcceptance::Accept;
                }
                Verdict::Ignore(IgnoreReason::Expired {
                    id, author, seq, ..
                }) => {
                    // Kept as a tombstone, for its feed position only.
                    self.metrics.ignored("expired");
                    if self.over_quota(&author, 0, batch.now).is_none() {
                        self.count_stored(&author, 0, batch.now);
                        batch.overlay.add(index, id, author, seq);
                        accepted.push((index, id, author, seq, None));
                    }
                    batch.ignored.push(index);
                }
                Verdict::Ignore(IgnoreReason::Duplicate) => {
                    self.metrics.ignored("duplicate");
                    batch.ignored.push(index);
                }
                Verdict::Reject(rejection) => {
                    self.metrics.rejected(&rejection);
                    // A fork shows as a `prev` conflict with a stored
                    // neighbour: the sender holds the other branch's
                    // envelope at the neighbouring seq, and asking for it
                    // turns the fork into evidence.
                    let neighbour = match &rejection {
                        Rejection::PrevMismatch { .. } => seq.checked_sub(1),
                        Rejection::NextMismatch { .. } => seq.checked_add(1),
                        _ => None,
                    };
                    let origin = batch.origins.of(index);
                    if let Some(neighbour) = neighbour {
                        self.probe(origin.peer(), author, neighbour);
                        batch.gaps.push(index);
                    }
                    batch.acceptances[index] = self.on_rejection(rejection, origin, Some(author));
                }
            }
        }
        accepted
    }

    /// Writes validated items and everything that goes with them (plaintext
    /// records, indicators, retractions, pending-epoch entries) with one
    /// `Store::write`, then announces the new ones.
    fn write_part(&mut self, items: &[Vec<u8>], accepted: Vec<AcceptedItem>, source: &'static str) {
        let mut staged = Staged::new();
        for (index, id, author, seq, envelope) in &accepted {
            let Some(bytes) = items.get(*index) else {
                continue;
            };
            let mut new = NewEnvelope {
                id: id.0,
                author: author.0,
                seq: *seq,
                bytes,
            };
            let staging = match envelope {
                Some((envelope, body, org)) => {
                    self.stage(&mut staged, new, envelope, body.as_ref(), org)
                }
                // A tombstone: the feed position without the ciphertext.
                None => {
                    new.bytes = &[];
                    staged.batch().envelope(new);
                    Ok(())
                }
            };
            if let Err(e) = staging {
                return self.write_failed("staging envelopes", &e);
            }
        }
        match self.commit(staged) {
            Ok(outcomes) => {
                self.write_succeeded();
                let new = outcomes
                    .iter()
                    .filter(|r| r.as_ref().is_ok_and(|i| i.new))
                    .count() as u64;
                self.traffic.stored_from_peers += new;
                self.metrics.stored(source, new);
            }
            Err(e) => self.write_failed("storing envelopes", &e),
        }
    }

    /// Checks and writes a batch as a pipeline: `threads` threads precheck
    /// chunks (decode, membership, signature, opening) while this thread
    /// validates and writes the chunks already checked, in order.
    fn pipeline(&mut self, items: &[Vec<u8>], threads: usize, batch: &mut Ingest<'_>) {
        let (roster, keys, consortium, epoch_keys, fork_keys, store) = (
            self.roster.roster.clone(),
            self.keys.clone(),
            self.consortium,
            self.epoch_keys.clone(),
            self.fork_keys.clone(),
            self.store.clone(),
        );
        let chunk = PIPELINE_CHUNK.min(items.len().div_ceil(threads)).max(1);
        let chunks: Vec<&[Vec<u8>]> = items.chunks(chunk).collect();
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            let mut checkers = Vec::with_capacity(threads);
            for _ in 0..threads {
                let (tx, next, chunks) = (tx.clone(), &next, &chunks);
                let (roster, keys, store) = (&roster, &keys, &store);
                let (epoch_keys, fork_keys) = (&epoch_keys, &fork_keys);
                checkers.push(scope.spawn(move || {
                    loop {
                        let c = next.fetch_add(1, Ordering::Relaxed);
                        let Some(part) = chunks.get(c) else { break };
                        let checked = precheck_chunk(
                            part, store, roster, consortium, keys, epoch_keys, fork_keys,
                        );
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
                    self.write_part(items, accepted, source_label(batch.origins.of(0)));
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
                    precheck_chunk(
                        part,
                        &store,
                        &roster,
                        consortium,
                        &keys,
                        &epoch_keys,
                        &fork_keys,
                    )
                });
                let accepted = self.validate_part(items, want * chunk, checked, batch);
                self.write_part(items, accepted, source_label(batch.origins.of(0)));
                want += 1;
            }
        });
    }

    /// Reports gossip verdicts (forward, drop, or drop and score down); sync
    /// batches have none.
    fn report_gossip(&self, origins: Origins<'_>, acceptances: &[MessageAcceptance]) {
        for (index, origin) in origins.indexed(acceptances.len()) {
            if let (Origin::Gossip { message_id, source }, Some(acceptance)) =
                (origin, acceptances.get(index))
            {
                self.send(Outcome::Verdict {
                    message_id: message_id.clone(),
                    source: *source,
                    acceptance: *acceptance,
                });
            }
        }
    }

    /// Records what a rejection calls for and says how gossip should score
    /// it (M2): `Reject`, which scores the relay down, only for what every
    /// node decides alike ([`Rejection::decided_alike`]); `Ignore` for what
    /// depends on this node's roster, store or clock, since an honest relay
    /// judged it against its own. Equivocation evidence is still recorded,
    /// and held against the author's own peer, not the relay; any other
    /// state-dependent failure sent by its `author` itself counts as an
    /// ignored message against it.
    ///
    /// An author this roster does not know (or knows as revoked) may be news
    /// from a newer roster the relay has and we lack: that starts a catch-up.
    fn on_rejection(
        &mut self,
        rejection: Rejection,
        origin: &Origin,
        author: Option<NodePublicKey>,
    ) -> MessageAcceptance {
        let (from, gossip) = match origin {
            Origin::Gossip { source, .. } => (*source, true),
            Origin::Sync { peer } => (*peer, false),
        };
        if rejection.decided_alike() {
            debug!(peer = %from, "rejected envelope: {rejection}");
            return MessageAcceptance::Reject;
        }
        let mut acceptance = MessageAcceptance::Ignore;
        match &rejection {
            Rejection::UnknownAuthor(_) | Rejection::RevokedAuthor { .. } => {
                debug!(peer = %from, "envelope from outside this roster: {rejection}");
                if gossip {
                    // Junk under a random author key costs no signature
                    // check; a flood of it counts against the sender.
                    self.misbehaved(from, Misbehaviour::Ignored);
                    if !self.rounds.contains_key(&from) {
                        self.start_sync(from);
                    }
                }
            }
            Rejection::Equivocation(evidence) => {
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
                    Ok(new) => {
                        self.note_fork(evidence.author, evidence.seq);
                        warn!(author = %evidence.author, seq = evidence.seq, "equivocation evidence recorded");
                        if new {
                            if let Some(peer) = evidence.author.peer_id() {
                                self.misbehaved(peer, Misbehaviour::Equivocation);
                            }
                            // Both signed envelopes go out on gossip once, so
                            // that nodes holding either branch record the
                            // evidence too (a fork at equal seqs is invisible
                            // to frontiers).
                            for bytes in [&evidence.first, &evidence.second] {
                                if !bytes.is_empty() {
                                    self.send(Outcome::PublishEnvelope(bytes.clone()));
                                }
                            }
                            // The branch that came by gossip is already in
                            // gossipsub's seen cache, so publishing it again
                            // is a duplicate that never leaves: forward it
                            // instead, so evidence spreads past one hop.
                            if gossip {
                                acceptance = MessageAcceptance::Accept;
                            }
                        }
                        self.emit(NodeEvent::Equivocation {
                            author: evidence.author,
                            seq: evidence.seq,
                        });
                    }
                    Err(e) => warn!("recording equivocation evidence failed: {e}"),
                }
            }
            _ => {
                debug!(peer = %from, "ignored envelope: {rejection}");
                if gossip && author.and_then(|a| a.peer_id()) == Some(from) {
                    self.misbehaved(from, Misbehaviour::Ignored);
                }
            }
        }
        acceptance
    }

    /// Asks the event loop to hold `what` against `peer` in its gossip
    /// score.
    fn misbehaved(&self, peer: libp2p::PeerId, what: Misbehaviour) {
        self.send(Outcome::Misbehaved { peer, what });
    }
}

/// The `source` label of `breakwater_envelopes_stored_total`.
fn source_label(origin: &Origin) -> &'static str {
    match origin {
        Origin::Gossip { .. } => "gossip",
        Origin::Sync { .. } => "sync",
    }
}

#[cfg(test)]
mod tests;
