//! [`WriteBatch`]: everything one ingest chunk stores, written by
//! [`Store::write`] as one `sled::Batch`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use sled::{IVec, Tree};

use super::{
    AuthorKey, EXPIRY_NONE, EnvelopeOutcome, Equivocation, Id, IdEntry, Inserted, NewEnvelope,
    Store, StoreError, decode_id, envelope_key, family, indicator_key, kv_key, meta_key,
    split_envelope,
};

/// Writes for [`Store::write`], applied in the order added.
///
/// Envelopes are added with [`WriteBatch::envelope`]; what goes with one
/// envelope (its plaintext, its indicators, a pending epoch key, the
/// retraction it makes) is attached through the returned [`EnvelopeWrites`]
/// and written only if that envelope turns out to be new: a duplicate or an
/// equivocating rival drops them. The other methods write unconditionally.
///
/// ```
/// # use breakwater_node::store::{NewEnvelope, Store, WriteBatch};
/// # fn main() -> Result<(), breakwater_node::store::StoreError> {
/// let store = Store::temporary()?;
/// let (id, author, bytes) = ([1; 32], [2; 32], b"signed envelope".as_slice());
/// let mut batch = WriteBatch::new();
/// batch
///     .envelope(NewEnvelope { id, author, seq: 1, bytes })
///     .plaintext(b"record".as_slice())
///     .indicator("ipv4:192.0.2.1");
/// let outcomes = store.write(batch)?;
/// assert!(outcomes[0].is_ok_and(|inserted| inserted.new));
/// assert_eq!(store.lookup_indicator("ipv4:192.0.2.1")?, vec![id]);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct WriteBatch<'a> {
    items: Vec<Item<'a>>,
    envelopes: usize,
}

/// One write of a [`WriteBatch`].
#[derive(Debug)]
enum Item<'a> {
    /// An envelope, checked for duplicates and equivocation, with what its
    /// `i` entry records.
    Envelope(NewEnvelope<'a>, Recorded),
    /// A write, conditional on envelope number `if_new` being newly stored.
    Op { if_new: Option<usize>, op: Op },
}

/// What an envelope's `i` entry records besides its feed position
/// ([`IdEntry`]).
#[derive(Debug, Default)]
struct Recorded {
    expires_at: Option<u64>,
    org: Option<String>,
}

/// A write other than an envelope.
#[derive(Debug)]
enum Op {
    PutPlaintext { id: Id, record: Vec<u8> },
    RemovePlaintext { id: Id },
    Index { key: String, id: Id },
    Unindex { key: String, id: Id },
    MarkRetracted { target: Id, by: Id },
    AddPendingRetraction { target: Id, by: Id },
    ClearPendingRetractions { target: Id },
    PendingEpoch { epoch: u64, id: Id },
    ClearPendingEpoch { epoch: u64, id: Id },
    PutMeta { key: String, value: Vec<u8> },
    RecordExpiry { id: Id, expires_at: u64 },
    Tombstone { author: AuthorKey, seq: u64, id: Id },
    Added { at: u64, id: Id },
}

/// Writes attached to one envelope of a [`WriteBatch`]: stored only if the
/// envelope is new.
#[derive(Debug)]
pub struct EnvelopeWrites<'b, 'a> {
    batch: &'b mut WriteBatch<'a>,
    index: usize,
    item: usize,
    id: Id,
}

impl EnvelopeWrites<'_, '_> {
    /// The position of this envelope's outcome in what [`Store::write`]
    /// returns.
    pub fn index(&self) -> usize {
        self.index
    }

    fn attach(&mut self, op: Op) -> &mut Self {
        self.batch.items.push(Item::Op {
            if_new: Some(self.index),
            op,
        });
        self
    }

    /// Stores the envelope's opened record (opaque to the store).
    pub fn plaintext(&mut self, record: impl Into<Vec<u8>>) -> &mut Self {
        let (id, record) = (self.id, record.into());
        self.attach(Op::PutPlaintext { id, record })
    }

    fn recorded(&mut self) -> Option<&mut Recorded> {
        match self.batch.items.get_mut(self.item) {
            Some(Item::Envelope(_, recorded)) => Some(recorded),
            _ => None,
        }
    }

    /// Records the organisation the envelope was accepted from
    /// ([`Store::org_of`]), in its `i` entry.
    pub fn org(&mut self, org: &str) -> &mut Self {
        if let Some(recorded) = self.recorded() {
            recorded.org = Some(org.to_owned());
        }
        self
    }

    /// Records the envelope's expiry in its `i` entry ([`Store::expiring`]),
    /// so its ciphertext can be deleted once it expired.
    pub fn expires(&mut self, expires_at: u64) -> &mut Self {
        if let Some(recorded) = self.recorded() {
            recorded.expires_at = Some(expires_at);
        }
        self
    }

    /// Indexes the envelope under indicator `key` (`"kind:value"`).
    pub fn indicator(&mut self, key: &str) -> &mut Self {
        let id = self.id;
        self.attach(Op::Index {
            key: key.to_owned(),
            id,
        })
    }

    /// Records that the envelope cannot be opened until this node has the key
    /// of roster epoch `epoch` (see [`Store::pending_up_to`]).
    pub fn pending_epoch(&mut self, epoch: u64) -> &mut Self {
        let id = self.id;
        self.attach(Op::PendingEpoch { epoch, id })
    }

    /// Marks `target` retracted by this envelope (the smallest retraction id
    /// wins, as in [`Store::mark_retracted`]).
    pub fn retracts(&mut self, target: &Id) -> &mut Self {
        let (target, by) = (*target, self.id);
        self.attach(Op::MarkRetracted { target, by })
    }

    /// Keeps this envelope as a pending retraction of `target`, which is not
    /// stored yet (see [`Store::pending_retractions`]).
    pub fn retracts_pending(&mut self, target: &Id) -> &mut Self {
        let (target, by) = (*target, self.id);
        self.attach(Op::AddPendingRetraction { target, by })
    }

    /// Marks this envelope retracted by `by`, a retraction that arrived
    /// before it (the smallest retraction id wins).
    pub fn retracted_by(&mut self, by: &Id) -> &mut Self {
        let (target, by) = (self.id, *by);
        self.attach(Op::MarkRetracted { target, by })
    }

    /// Forgets every pending retraction of this envelope (once applied or
    /// dropped), including those added earlier in the batch.
    pub fn clears_pending_retractions(&mut self) -> &mut Self {
        let target = self.id;
        self.attach(Op::ClearPendingRetractions { target })
    }

    /// Stores an opaque metadata value under `key`, as [`Store::put_meta`],
    /// only if the envelope is new (a webhook outbox entry).
    pub fn put_meta(&mut self, key: &str, value: impl Into<Vec<u8>>) -> &mut Self {
        let (key, value) = (key.to_owned(), value.into());
        self.attach(Op::PutMeta { key, value })
    }

    /// Removes the index entry of envelope `id` under indicator `key` (the
    /// target of a retraction this envelope makes).
    pub fn unindexes(&mut self, key: &str, id: &Id) -> &mut Self {
        let (key, id) = (key.to_owned(), *id);
        self.attach(Op::Unindex { key, id })
    }
}

impl<'a> WriteBatch<'a> {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of envelopes in the batch: the length of what
    /// [`Store::write`] returns.
    pub fn envelope_count(&self) -> usize {
        self.envelopes
    }

    /// Adds an envelope; it is stored as [`Store::insert_envelope`] does.
    /// Writes attached to the returned handle happen only if it is new.
    pub fn envelope(&mut self, envelope: NewEnvelope<'a>) -> EnvelopeWrites<'_, 'a> {
        let index = self.envelopes;
        self.envelopes += 1;
        let (id, item) = (envelope.id, self.items.len());
        self.items
            .push(Item::Envelope(envelope, Recorded::default()));
        EnvelopeWrites {
            batch: self,
            index,
            item,
            id,
        }
    }

    fn push(&mut self, op: Op) -> &mut Self {
        self.items.push(Item::Op { if_new: None, op });
        self
    }

    /// Stores the opened record of envelope `id` (for an envelope stored
    /// earlier, opened now).
    pub fn put_plaintext(&mut self, id: &Id, record: impl Into<Vec<u8>>) -> &mut Self {
        let record = record.into();
        self.push(Op::PutPlaintext { id: *id, record })
    }

    /// Forgets the opened record of envelope `id`.
    pub fn remove_plaintext(&mut self, id: &Id) -> &mut Self {
        self.push(Op::RemovePlaintext { id: *id })
    }

    /// Indexes envelope `id` under indicator `key`.
    pub fn index_indicator(&mut self, key: &str, id: &Id) -> &mut Self {
        let key = key.to_owned();
        self.push(Op::Index { key, id: *id })
    }

    /// Removes the index entry of envelope `id` under indicator `key`.
    pub fn unindex_indicator(&mut self, key: &str, id: &Id) -> &mut Self {
        let key = key.to_owned();
        self.push(Op::Unindex { key, id: *id })
    }

    /// Marks `target` retracted by `by`; the smallest retraction id wins.
    pub fn mark_retracted(&mut self, target: &Id, by: &Id) -> &mut Self {
        self.push(Op::MarkRetracted {
            target: *target,
            by: *by,
        })
    }

    /// Keeps `by` as a retraction of `target`, which is not stored yet.
    pub fn add_pending_retraction(&mut self, target: &Id, by: &Id) -> &mut Self {
        self.push(Op::AddPendingRetraction {
            target: *target,
            by: *by,
        })
    }

    /// Forgets every pending retraction of `target` (once applied or
    /// dropped), including those added earlier in this batch.
    pub fn clear_pending_retractions(&mut self, target: &Id) -> &mut Self {
        self.push(Op::ClearPendingRetractions { target: *target })
    }

    /// Records that envelope `id` waits for the key of roster epoch `epoch`.
    pub fn pending_epoch(&mut self, epoch: u64, id: &Id) -> &mut Self {
        self.push(Op::PendingEpoch { epoch, id: *id })
    }

    /// Removes the pending-epoch entry of envelope `id`: put it in the batch
    /// that stores the envelope's plaintext.
    pub fn clear_pending_epoch(&mut self, epoch: u64, id: &Id) -> &mut Self {
        self.push(Op::ClearPendingEpoch { epoch, id: *id })
    }

    /// Records the expiry of stored envelope `id` in its `i` entry (for
    /// envelopes stored before the store recorded expiries; see
    /// [`Store::expiry_unrecorded`]), folding in its legacy `o` and `y`
    /// entries.
    /// [`EXPIRY_NONE`] for one whose ciphertext is gone. Nothing happens if
    /// `id` is not stored.
    pub fn record_expiry(&mut self, id: &Id, expires_at: u64) -> &mut Self {
        self.push(Op::RecordExpiry {
            id: *id,
            expires_at,
        })
    }

    /// Records in the `added` index that envelope `id` became readable at
    /// `at` µs (for envelopes stored before the index existed; a plaintext
    /// put through the batch is indexed by [`Store::write`] itself).
    pub fn added(&mut self, at: u64, id: &Id) -> &mut Self {
        self.push(Op::Added { at, id: *id })
    }

    /// Replaces the envelope `id` stored at `(author, seq)` by a tombstone:
    /// its ciphertext and plaintext record are deleted, its feed position,
    /// id index entry (with [`EXPIRY_NONE`] as its expiry), organisation and
    /// retraction state stay. Nothing happens if `(author, seq)` does not
    /// hold `id`. Unindex its indicators in the same batch.
    pub fn tombstone(&mut self, author: &AuthorKey, seq: u64, id: &Id) -> &mut Self {
        self.push(Op::Tombstone {
            author: *author,
            seq,
            id: *id,
        })
    }

    /// Stores an opaque metadata value under `key`, as [`Store::put_meta`].
    pub fn put_meta(&mut self, key: &str, value: impl Into<Vec<u8>>) -> &mut Self {
        let (key, value) = (key.to_owned(), value.into());
        self.push(Op::PutMeta { key, value })
    }
}

/// The writes of a batch being built, readable before they are applied: a
/// read sees the batch's own earlier writes, then the tree.
struct Overlay<'s> {
    kv: &'s Tree,
    writes: BTreeMap<Vec<u8>, Write>,
}

/// One key's write in an [`Overlay`].
struct Write {
    /// The value, or `None` for a removal.
    value: Option<IVec>,
    /// Known to be absent from the tree before the batch, so counting what
    /// the batch changes ([`tallied`]) needs no read.
    fresh: bool,
}

impl Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        match self.writes.get(key) {
            Some(write) => Ok(write.value.clone()),
            None => Ok(self.kv.get(key)?),
        }
    }

    fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        match self.writes.get(key) {
            Some(write) => Ok(write.value.is_some()),
            None => Ok(self.kv.contains_key(key)?),
        }
    }

    /// Whether the batch already writes `key`.
    fn writes(&self, key: &[u8]) -> bool {
        self.writes.contains_key(key)
    }

    fn set(&mut self, key: Vec<u8>, value: Option<IVec>, fresh: bool) {
        let fresh = fresh || self.writes.get(&key).is_some_and(|write| write.fresh);
        self.writes.insert(key, Write { value, fresh });
    }

    fn put(&mut self, key: Vec<u8>, value: impl Into<IVec>) {
        self.set(key, Some(value.into()), false);
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.set(key, None, false);
    }

    /// Removes every key that starts with `prefix`, on disk or in the batch.
    fn remove_prefix(&mut self, prefix: &[u8]) -> Result<(), StoreError> {
        let mut keys = Vec::new();
        for entry in self.kv.scan_prefix(prefix) {
            keys.push(entry?.0.to_vec());
        }
        keys.extend(
            self.writes
                .range(prefix.to_vec()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, _)| key.clone()),
        );
        for key in keys {
            self.remove(key);
        }
        Ok(())
    }

    fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, write) in self.writes {
            match write.value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }
}

impl Store {
    /// Applies `batch` as one `sled::Batch` (atomic: after a crash, all of it
    /// or none of it is there) and returns one outcome per envelope, in the
    /// order added. Nothing is flushed.
    ///
    /// Each envelope is stored as [`Store::insert_envelope`] describes:
    /// a duplicate reports `new: false`, a different id at the same
    /// `(author, seq)` reports an [`Equivocation`] and is not written, and
    /// the frontier advances across every contiguous seq. Writes attached to
    /// an envelope that is not new are dropped. If an error is returned
    /// (a seq of 0, a corrupt value, a sled error), nothing was written.
    ///
    /// Writes are serialised (see the module documentation): the checks read
    /// the store and the batch itself, and no other write can come between
    /// them and the `apply_batch`.
    pub fn write(&self, batch: WriteBatch<'_>) -> Result<Vec<EnvelopeOutcome>, StoreError> {
        let has_seq_zero = batch
            .items
            .iter()
            .any(|item| matches!(item, Item::Envelope(envelope, _) if envelope.seq == 0));
        if has_seq_zero {
            return Err(StoreError::SeqZero);
        }
        self.check_room()?;
        let mut writer = self.lock_writer();
        let mut overlay = Overlay {
            kv: &self.kv,
            writes: BTreeMap::new(),
        };
        let mut frontiers: HashMap<AuthorKey, u64> = HashMap::new();
        let mut outcomes = Vec::with_capacity(batch.envelopes);
        for item in batch.items {
            match item {
                Item::Envelope(envelope, recorded) => {
                    let current = match frontiers.get(&envelope.author) {
                        Some(&frontier) => frontier,
                        None => match writer.frontier.get(&envelope.author) {
                            Some(&frontier) => frontier,
                            None => {
                                let frontier = self.frontier_of(&envelope.author)?;
                                writer.frontier.insert(envelope.author, frontier);
                                frontier
                            }
                        },
                    };
                    let (outcome, frontier) =
                        insert_one(&mut overlay, &envelope, recorded, current)?;
                    if frontier != current {
                        frontiers.insert(envelope.author, frontier);
                    }
                    outcomes.push(outcome);
                }
                Item::Op { if_new, op } => {
                    let wanted = match if_new {
                        None => true,
                        Some(index) => {
                            matches!(outcomes.get(index), Some(Ok(Inserted { new: true, .. })))
                        }
                    };
                    if !wanted {
                        continue;
                    }
                    match op {
                        Op::PutPlaintext { id, record } => {
                            let key = kv_key(family::PLAINTEXT, &[&id]);
                            // The record of an envelope new in this batch is
                            // new too: its id was never stored.
                            let fresh = if_new.is_some() && !overlay.writes(&key);
                            // Indexed when it first becomes readable here:
                            // a plaintext written again adds no entry.
                            if self.indexes_added() && (fresh || overlay.get(&key)?.is_none()) {
                                let at = next_added(&mut writer, &self.kv)?;
                                overlay.put(kv_key(family::ADDED, &[&at.to_be_bytes()]), &id[..]);
                            }
                            overlay.set(key, Some(record.into()), fresh);
                        }
                        op => {
                            if let Op::Added { at, .. } = &op {
                                writer.last_added = writer.last_added.map(|last| last.max(*at));
                            }
                            apply_op(&mut overlay, op)?;
                        }
                    }
                }
            }
        }
        for (author, frontier) in &frontiers {
            overlay.put(
                kv_key(family::FRONTIER, &[author]),
                &frontier.to_be_bytes()[..],
            );
        }
        if writer.tally_saved && !overlay.writes.is_empty() {
            overlay.remove(kv_key(family::META, &[super::META_TALLY]));
        }
        let tally = match writer.tally {
            Some(tally) if !overlay.writes.is_empty() => Some(tallied(&self.kv, &overlay, tally)?),
            tally => tally,
        };
        let pending = pending_retractions_after(
            &self.kv,
            &overlay,
            self.pending_retraction_entries.load(Ordering::Relaxed),
        )?;
        if !overlay.writes.is_empty() {
            self.kv.apply_batch(overlay.into_batch())?;
            self.batches.fetch_add(1, Ordering::Relaxed);
            writer.tally_saved = false;
        }
        writer.tally = tally;
        self.pending_retraction_entries
            .store(pending, Ordering::Relaxed);
        writer.frontier.extend(frontiers);
        Ok(outcomes)
    }
}

/// The number of pending retraction entries, `count` now, after `overlay`
/// is applied.
fn pending_retractions_after(
    kv: &Tree,
    overlay: &Overlay<'_>,
    mut count: u64,
) -> Result<u64, StoreError> {
    let first = vec![family::PENDING_RETRACTION];
    for (key, write) in overlay
        .writes
        .range(first..)
        .take_while(|(key, _)| key.first() == Some(&family::PENDING_RETRACTION))
    {
        step(&mut count, kv.contains_key(key)?, write.value.is_some());
    }
    Ok(count)
}

/// Moves `count` by one entry that was there (`before`) or not, and is
/// there (`after`) or not.
fn step(count: &mut u64, before: bool, after: bool) {
    match (before, after) {
        (false, true) => *count += 1,
        (true, false) => *count = count.saturating_sub(1),
        _ => {}
    }
}

/// `tally` after `overlay` is applied: each written key of a tallied
/// family is compared with what is on disk before the write.
fn tallied(
    kv: &Tree,
    overlay: &Overlay<'_>,
    mut tally: super::Tally,
) -> Result<super::Tally, StoreError> {
    for (key, write) in &overlay.writes {
        let Some(&prefix) = key.first() else { continue };
        let after = write.value.is_some();
        let present =
            |key: &[u8]| -> Result<bool, StoreError> { Ok(!write.fresh && kv.contains_key(key)?) };
        match prefix {
            family::ID => step(&mut tally.envelopes, present(key)?, after),
            family::PLAINTEXT => step(&mut tally.plaintext, present(key)?, after),
            family::PENDING_EPOCH => step(&mut tally.pending_green, present(key)?, after),
            // A tombstone is an envelope entry holding only the id.
            family::ENVELOPE => {
                let before = !write.fresh && kv.get(key)?.is_some_and(|v| v.len() == 32);
                let after = write.value.as_ref().is_some_and(|v| v.len() == 32);
                step(&mut tally.tombstones, before, after);
            }
            _ => {}
        }
    }
    Ok(tally)
}

/// The next `added` time (µs, a whole millisecond): now, or one
/// millisecond past the last one given out, whichever is later, so the
/// index is strictly increasing even when the clock steps back, and a
/// TAXII client that keeps `X-TAXII-Date-Added-Last` at millisecond
/// precision (OpenCTI does) loses nothing and re-reads nothing.
fn next_added(writer: &mut super::Writer, kv: &Tree) -> Result<u64, StoreError> {
    let last = match writer.last_added {
        Some(last) => last,
        None => {
            let last = match kv.scan_prefix([family::ADDED]).next_back() {
                Some(entry) => {
                    let (key, _) = entry?;
                    super::decode_u64(family::ADDED, key.get(1..).unwrap_or(&[]))?
                }
                None => 0,
            };
            writer.last_added = Some(last);
            last
        }
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let at = now_ms
        .max((last / 1000).saturating_add(1))
        .saturating_mul(1000);
    writer.last_added = Some(at);
    Ok(at)
}

/// Adds one envelope to the overlay if `(author, seq)` is free; returns its
/// outcome and the author's frontier after it (`current` before).
fn insert_one(
    overlay: &mut Overlay<'_>,
    envelope: &NewEnvelope<'_>,
    recorded: Recorded,
    current: u64,
) -> Result<(EnvelopeOutcome, u64), StoreError> {
    let NewEnvelope {
        id,
        author,
        seq,
        bytes,
    } = *envelope;
    let key = envelope_key(&author, seq);
    let in_batch = overlay.writes(&key);
    if let Some(value) = overlay.get(&key)? {
        let (existing, _) = split_envelope(&value)?;
        let outcome = if existing == id {
            Ok(Inserted {
                new: false,
                frontier: current,
            })
        } else {
            Err(Equivocation {
                author,
                seq,
                existing,
            })
        };
        return Ok((outcome, current));
    }
    let mut value = Vec::with_capacity(id.len() + bytes.len());
    value.extend_from_slice(&id);
    value.extend_from_slice(bytes);
    // Not in the tree (nor in the batch): neither is its id, which is the
    // hash of an envelope naming this author and seq.
    let fresh = !in_batch;
    overlay.set(key, Some(value.into()), fresh);
    let entry = IdEntry {
        author,
        seq,
        // Without an expiry the organisation cannot be recorded either
        // (see `IdEntry`): the node always gives both.
        expires_at: recorded.expires_at,
        org: recorded.org.filter(|_| recorded.expires_at.is_some()),
    };
    overlay.set(
        kv_key(family::ID, &[&id]),
        Some(entry.encode().into()),
        fresh,
    );
    let mut frontier = current;
    if frontier.checked_add(1) == Some(seq) {
        frontier = seq;
        while let Some(next) = frontier.checked_add(1) {
            if !overlay.contains(&envelope_key(&author, next))? {
                break;
            }
            frontier = next;
        }
    }
    Ok((
        Ok(Inserted {
            new: true,
            frontier,
        }),
        frontier,
    ))
}

/// Rewrites the `i` entry of `id` (if stored) with `expires_at`, folding in
/// its legacy `o` entry; removes its legacy `y` entry of that expiry in any
/// case (layout 2.0, `store/migrate.rs`).
fn record_expiry(overlay: &mut Overlay<'_>, id: &Id, expires_at: u64) -> Result<(), StoreError> {
    overlay.remove(kv_key(family::EXPIRY, &[&expires_at.to_be_bytes(), id]));
    let key = kv_key(family::ID, &[id]);
    let Some(value) = overlay.get(&key)? else {
        return Ok(());
    };
    let mut entry = IdEntry::decode(&value)?;
    let org_key = kv_key(family::ORG, &[id]);
    if entry.org.is_none() {
        entry.org = super::legacy_org(&overlay.get(&org_key)?)?;
    }
    entry.expires_at = Some(expires_at);
    overlay.put(key, entry.encode());
    overlay.remove(org_key);
    Ok(())
}

/// Adds one non-envelope write to the overlay.
fn apply_op(overlay: &mut Overlay<'_>, op: Op) -> Result<(), StoreError> {
    match op {
        Op::Added { at, id } => {
            overlay.put(kv_key(family::ADDED, &[&at.to_be_bytes()]), &id[..]);
        }
        Op::PutPlaintext { id, record } => {
            overlay.put(kv_key(family::PLAINTEXT, &[&id]), record);
        }
        Op::RemovePlaintext { id } => overlay.remove(kv_key(family::PLAINTEXT, &[&id])),
        Op::Index { key, id } => overlay.put(indicator_key(&key, &id), IVec::default()),
        Op::Unindex { key, id } => overlay.remove(indicator_key(&key, &id)),
        Op::MarkRetracted { target, by } => {
            let key = kv_key(family::RETRACTED, &[&target]);
            if let Some(existing) = overlay.get(&key)?
                && decode_id(family::RETRACTED, &existing)? <= by
            {
                return Ok(());
            }
            overlay.put(key, &by[..]);
        }
        Op::AddPendingRetraction { target, by } => overlay.put(
            kv_key(family::PENDING_RETRACTION, &[&target, &by]),
            IVec::default(),
        ),
        Op::ClearPendingRetractions { target } => {
            overlay.remove_prefix(&kv_key(family::PENDING_RETRACTION, &[&target]))?;
        }
        Op::PendingEpoch { epoch, id } => overlay.put(
            kv_key(family::PENDING_EPOCH, &[&epoch.to_be_bytes(), &id]),
            IVec::default(),
        ),
        Op::ClearPendingEpoch { epoch, id } => {
            overlay.remove(kv_key(family::PENDING_EPOCH, &[&epoch.to_be_bytes(), &id]));
        }
        Op::PutMeta { key, value } => overlay.put(meta_key(&key), value),
        Op::RecordExpiry { id, expires_at } => record_expiry(overlay, &id, expires_at)?,
        Op::Tombstone { author, seq, id } => {
            let key = envelope_key(&author, seq);
            if let Some(value) = overlay.get(&key)? {
                let (stored, bytes) = split_envelope(&value)?;
                if stored == id && !bytes.is_empty() {
                    overlay.put(key, &id[..]);
                    overlay.remove(kv_key(family::PLAINTEXT, &[&id]));
                    record_expiry(overlay, &id, EXPIRY_NONE)?;
                }
            }
        }
    }
    Ok(())
}
