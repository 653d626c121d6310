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
    AuthorState, Body, Digest, Envelope, EpochKeys, IgnoreReason, NodeKeys, NodePublicKey,
    Prechecked, Rejection, Verdict, precheck_batch_in, validate_prechecked,
};
use libp2p::gossipsub::MessageAcceptance;
use tracing::{debug, warn};

use super::index::Staged;
use super::{Origin, Outcome, Worker, now_ms, open_as};
use crate::handle::NodeEvent;
use crate::store::{NewEnvelope, Store};

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

/// Batches this large are checked on every core, as a pipeline.
const MIN_PARALLEL: usize = 16;

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
/// envelope with its body (`None` for an expired one kept for its feed
/// position).
type AcceptedItem = (
    usize,
    Digest,
    NodePublicKey,
    u64,
    Option<(Envelope, Option<Body>)>,
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
                    let body = open_as(pre.envelope(), keys, epoch_keys);
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
    /// Validates a batch exactly as gossip and sync both require, stores the
    /// valid ones with batched writes, then opens and indexes the new ones.
    ///
    /// A batch of [`MIN_PARALLEL`] or more (a sync answer) is a pipeline:
    /// every core prechecks chunks while this thread validates and writes the
    /// chunks already checked, in order, so the sequential store work
    /// overlaps the crypto of the chunks after it.
    pub(super) fn ingest(&mut self, items: Vec<Vec<u8>>, origin: Origin) {
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
            let (roster, keys, epoch_keys) = (&self.roster.roster, &self.keys, &self.epoch_keys);
            let checked = precheck_chunk(&items, &store, roster, self.consortium, keys, epoch_keys);
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
                Checked::Passed(pre, body) => (*pre, body),
                // Ignored as a duplicate, as validation would.
                Checked::Stored => continue,
                Checked::Rejected(rejection) => {
                    batch.acceptances[index] = self.on_rejection(rejection, batch.origin);
                    continue;
                }
            };
            match validate_prechecked(pre, bytes, batch.now, &self.roster.roster, &batch.overlay) {
                Verdict::Accept(a) => {
                    // A gap in the feed, or GREEN under a roster version we
                    // lack: a sync round with the relay fetches either.
                    let roster_ahead = a
                        .envelope
                        .header
                        .seal
                        .epoch()
                        .is_some_and(|epoch| epoch > self.roster.roster.version);
                    batch.gap |= a.gap.is_some() || roster_ahead;
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

    /// Writes validated items and everything that goes with them (plaintext
    /// records, indicators, retractions, pending-epoch entries) with one
    /// `Store::write`, then announces the new ones.
    fn write_part(&mut self, items: &[Vec<u8>], accepted: Vec<AcceptedItem>) {
        let mut staged = Staged::new();
        for (index, id, author, seq, envelope) in &accepted {
            let Some(bytes) = items.get(*index) else {
                continue;
            };
            let new = NewEnvelope {
                id: id.0,
                author: author.0,
                seq: *seq,
                bytes,
            };
            let staging = match envelope {
                Some((envelope, body)) => self.stage(&mut staged, new, envelope, body.as_ref()),
                // Expired: kept for its feed position only.
                None => {
                    staged.batch().envelope(new);
                    Ok(())
                }
            };
            if let Err(e) = staging {
                return warn!("staging envelopes failed: {e}");
            }
        }
        match self.commit(staged) {
            Ok(outcomes) => {
                self.traffic.stored_from_peers += outcomes
                    .iter()
                    .filter(|r| r.as_ref().is_ok_and(|i| i.new))
                    .count() as u64;
            }
            Err(e) => warn!("storing envelopes failed: {e}"),
        }
    }

    /// Checks and writes a batch as a pipeline: `threads` threads precheck
    /// chunks (decode, membership, signature, opening) while this thread
    /// validates and writes the chunks already checked, in order.
    fn pipeline(&mut self, items: &[Vec<u8>], threads: usize, batch: &mut Ingest<'_>) {
        let (roster, keys, consortium, epoch_keys, store) = (
            self.roster.roster.clone(),
            self.keys.clone(),
            self.consortium,
            self.epoch_keys.clone(),
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
                let (roster, keys, epoch_keys, store) = (&roster, &keys, &epoch_keys, &store);
                checkers.push(scope.spawn(move || {
                    loop {
                        let c = next.fetch_add(1, Ordering::Relaxed);
                        let Some(part) = chunks.get(c) else { break };
                        let checked =
                            precheck_chunk(part, store, roster, consortium, keys, epoch_keys);
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
                    precheck_chunk(part, &store, &roster, consortium, &keys, &epoch_keys)
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use breakwater_protocol::fixture::{Fixture, bulletin_draft, fixture_green_key};
    use breakwater_protocol::{Digest, Envelope, Indicator, Roster, Seal, Tlp, seal};
    use libp2p::PeerId;
    use libp2p::gossipsub::{MessageAcceptance, MessageId};
    use rand::SeedableRng;
    use tokio::sync::{broadcast, mpsc};

    use super::super::{Opened, Worker, now_ms};
    use super::*;
    use crate::handle::NodeEvent;
    use crate::job::Outcome;

    const DAY_MS: u64 = 24 * 3600 * 1000;

    struct Harness {
        worker: Worker,
        outcomes: mpsc::Receiver<Outcome>,
        events: broadcast::Receiver<NodeEvent>,
    }

    /// A worker for node 0 of org `org`, on a temporary store.
    fn harness(f: &Fixture, org: usize) -> Harness {
        let (events, events_rx) = broadcast::channel(8192);
        let (outcomes, outcomes_rx) = mpsc::channel(8192);
        let worker = Worker::new(
            Store::temporary().unwrap(),
            f.keys(org, 0).unwrap().clone(),
            f.roster.clone(),
            30 * DAY_MS,
            events,
            outcomes,
        );
        Harness {
            worker,
            outcomes: outcomes_rx,
            events: events_rx,
        }
    }

    /// A feed of `n` bulletins of `tlp` by node 0 of org 1, sealed under
    /// `roster` (GREEN under its epoch key), each with one indicator.
    fn feed(f: &Fixture, roster: &Roster, tlp: Tlp, n: u64) -> Vec<Envelope> {
        let keys = f.keys(1, 0).unwrap();
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(9);
        let mut prev = Digest::ZERO;
        let to = [f.orgs[0].org_id.clone(), f.orgs[1].org_id.clone()];
        (1..=n)
            .map(|seq| {
                let mut draft =
                    bulletin_draft(seq, prev, tlp, &format!("Bulletin {seq}"), now_ms());
                if let Body::Bulletin(bulletin) = &mut draft.body {
                    bulletin.summary = "a long summary that is not kept ".repeat(20);
                    bulletin.indicators =
                        vec![Indicator::parse(&format!("ipv4:192.0.2.{}", seq % 250)).unwrap()];
                }
                let to: &[_] = if tlp == Tlp::Amber { &to } else { &[] };
                let envelope = seal(keys, roster, draft, to, &mut rng).unwrap();
                prev = envelope.id();
                envelope
            })
            .collect()
    }

    fn sync() -> Origin {
        Origin::Sync {
            peer: PeerId::random(),
        }
    }

    #[test]
    fn a_sync_batch_is_one_store_write_per_chunk_and_a_forged_item_is_named() {
        let f = Fixture::new(3, 1).unwrap();
        let mut h = harness(&f, 0);
        let envelopes = feed(&f, f.roster(), Tlp::Green, 600);
        let mut items: Vec<Vec<u8>> = envelopes.iter().map(Envelope::encode).collect();
        // A well-formed signature by the wrong key, in the middle.
        let real = &envelopes[300];
        let forged = Envelope::sign(
            real.header.clone(),
            real.payload.clone(),
            f.keys(2, 0).unwrap(),
        );
        items[300] = forged.encode();

        let store = h.worker.store.clone();
        let before = store.batches_applied();
        h.worker.ingest(items, sync());
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let expected = if threads < 2 {
            1
        } else {
            600usize.div_ceil(PIPELINE_CHUNK.min(600usize.div_ceil(threads)))
        };
        assert_eq!(store.batches_applied() - before, expected as u64);

        assert_eq!(store.counts().envelopes, 599);
        assert!(!store.contains(&forged.id().0).unwrap());
        assert!(!store.contains(&real.id().0).unwrap());
        // Every stored GREEN envelope is readable and indexed.
        assert_eq!(store.counts().plaintext, 599);
        let stored = (0..h.events.len())
            .filter(|_| matches!(h.events.try_recv(), Ok(NodeEvent::Stored(s)) if s.readable))
            .count();
        assert_eq!(stored, 599);
    }

    #[test]
    fn epoch_sealed_bodies_are_not_stored_but_show_reopens_them() {
        let f = Fixture::new(3, 1).unwrap();
        let mut h = harness(&f, 0);
        let green = feed(&f, f.roster(), Tlp::Green, 2);
        let amber = &feed(&f, f.roster(), Tlp::Amber, 1)[0];
        // (The AMBER one is seq 1 of the same feed: it goes to another node.)
        let items: Vec<Vec<u8>> = green.iter().map(Envelope::encode).collect();
        h.worker.ingest(items, sync());
        let id = green[0].id();
        let raw = h.worker.store.plaintext(&id.0).unwrap().unwrap();
        assert_eq!(raw[0], 0x01, "postcard record");
        assert!(matches!(Opened::decode(&raw), Some(Opened::Brief(_))));
        assert!(
            !raw.windows(12).any(|w| w == b"long summary"),
            "the body is not kept"
        );
        let detail = h.worker.get(&id.to_hex()).unwrap();
        let Some(Body::Bulletin(bulletin)) = detail.body else {
            panic!("show reopens the body: {:?}", detail.body)
        };
        assert!(bulletin.summary.starts_with("a long summary"));
        assert_eq!(detail.summary.title.as_deref(), Some("Bulletin 1"));
        // list and search work from the brief alone.
        let listed = h.worker.list(&Default::default()).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|s| s.readable && s.indicators.is_some()));
        let indicator = Indicator::parse("ipv4:192.0.2.1").unwrap();
        assert_eq!(h.worker.search(&indicator).unwrap().len(), 1);
        assert_eq!(h.worker.status().unwrap().readable, 2);

        // Sealed to nodes: the whole record is kept.
        let mut other = harness(&f, 0);
        other.worker.ingest(vec![amber.encode()], sync());
        let raw = other
            .worker
            .store
            .plaintext(&amber.id().0)
            .unwrap()
            .unwrap();
        let Some(Opened::Full(record)) = Opened::decode(&raw) else {
            panic!("a node-sealed record is kept whole")
        };
        assert!(matches!(record.body, Body::Bulletin(_)));
        let detail = other.worker.get(&amber.id().to_hex()).unwrap();
        assert!(detail.body.is_some());
    }

    #[test]
    fn postcard_records_round_trip_and_legacy_json_records_still_read() {
        let f = Fixture::new(3, 1).unwrap();
        let h = harness(&f, 0);
        let amber = &feed(&f, f.roster(), Tlp::Amber, 1)[0];
        let body = h.worker.open(amber).unwrap();
        let opened = Opened::of(&amber.header, &body);
        let encoded = opened.encode();
        let Some(Opened::Full(back)) = Opened::decode(&encoded) else {
            panic!("round trip")
        };
        assert_eq!(back.body, body);
        let green = &feed(&f, f.roster(), Tlp::Green, 1)[0];
        let body = h.worker.open(green).unwrap();
        let brief = Opened::of(&green.header, &body);
        let Some(Opened::Brief(back)) = Opened::decode(&brief.encode()) else {
            panic!("round trip")
        };
        assert_eq!(Some(back), Some(brief.brief()));

        // A record as earlier versions wrote it: JSON.
        let store = &h.worker.store;
        let id = amber.id();
        store
            .insert_envelope(&id.0, &amber.header.author.0, 1, &amber.encode())
            .unwrap();
        let legacy = serde_json::json!({
            "tlp": amber.header.tlp,
            "created_at": amber.header.created_at,
            "expires_at": amber.header.expires_at,
            "body": body_of(&h, amber),
        });
        store
            .put_plaintext(&id.0, legacy.to_string().as_bytes())
            .unwrap();
        let detail = h.worker.get(&id.to_hex()).unwrap();
        assert_eq!(detail.body, Some(body_of(&h, amber)));
        assert!(detail.summary.readable);
        assert_eq!(detail.summary.title.as_deref(), Some("Bulletin 1"));
    }

    fn body_of(h: &Harness, envelope: &Envelope) -> Body {
        h.worker.open(envelope).unwrap()
    }

    #[test]
    fn a_pending_epoch_entry_is_written_with_its_envelope() {
        let f = Fixture::new(3, 1).unwrap();
        let mut h = harness(&f, 0);
        // Roster version 2 (org 2 revoked, a new GREEN key), which this node
        // has not applied: GREEN sealed under it cannot open yet.
        let v2 = f
            .roster()
            .with_revoked(&f.orgs[2].org_id)
            .unwrap()
            .with_green_key(&fixture_green_key(2))
            .unwrap();
        let envelope = &feed(&f, &v2, Tlp::Green, 1)[0];
        assert!(matches!(envelope.header.seal, Seal::Epoch { epoch: 2, .. }));
        let store = h.worker.store.clone();
        let before = store.batches_applied();
        h.worker.ingest(vec![envelope.encode()], sync());
        assert_eq!(store.batches_applied() - before, 1);
        assert_eq!(store.pending_up_to(2).unwrap(), vec![(2, envelope.id().0)]);
        assert!(store.contains(&envelope.id().0).unwrap());
        assert_eq!(store.counts().plaintext, 0);
    }

    #[test]
    fn a_stored_duplicate_is_recognised_before_any_signature_check() {
        let f = Fixture::new(3, 1).unwrap();
        let mut h = harness(&f, 0);
        let real = &feed(&f, f.roster(), Tlp::Green, 1)[0];
        // Its signature is wrong: checking it again would reject it. Put it
        // in the store directly, as if it had been stored long ago.
        let forged = Envelope::sign(
            real.header.clone(),
            real.payload.clone(),
            f.keys(2, 0).unwrap(),
        );
        let bytes = forged.encode();
        let id = forged.id();
        let store = h.worker.store.clone();
        store
            .insert_envelope(&id.0, &forged.header.author.0, 1, &bytes)
            .unwrap();

        // Sync and gossip chunks alike: recognised by id, never prechecked.
        let (roster, keys) = (&h.worker.roster.roster, &h.worker.keys);
        let consortium = h.worker.consortium;
        let checked = precheck_chunk(
            &[bytes.clone(), real.encode()],
            &store,
            roster,
            consortium,
            keys,
            &h.worker.epoch_keys,
        );
        assert!(matches!(checked[0], Checked::Stored));
        // The same forgery not yet stored is rejected by its signature.
        let fresh = Store::temporary().unwrap();
        let checked = precheck_chunk(
            std::slice::from_ref(&bytes),
            &fresh,
            roster,
            consortium,
            keys,
            &h.worker.epoch_keys,
        );
        assert!(matches!(
            checked[0],
            Checked::Rejected(Rejection::BadSignature(_))
        ));

        // By gossip: ignored (a duplicate), not rejected (a bad signature).
        let before = store.batches_applied();
        h.worker.ingest(
            vec![bytes],
            Origin::Gossip {
                message_id: MessageId::new(b"dup"),
                source: PeerId::random(),
            },
        );
        match h.outcomes.try_recv() {
            Ok(Outcome::Verdict { acceptance, .. }) => {
                assert_eq!(acceptance, MessageAcceptance::Ignore)
            }
            other => panic!("expected a verdict, got {other:?}"),
        }
        assert_eq!(store.batches_applied(), before, "nothing to write");
    }
}
