//! The version-1 store layout (one sled tree per kind of value), kept
//! verbatim from the code that wrote it so that tests can build a real v1
//! store and check that [`super::Store::open`] migrates it to layout v2.
//!
//! Test-only: nothing outside `store::tests` uses it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use sled::{IVec, Transactional, Tree};

/// Id of an envelope: the hash of its complete signed encoding.
pub type Id = [u8; 32];

/// Ed25519 public key of the node that authored an envelope.
pub type AuthorKey = [u8; 32];

/// Byte that separates an indicator key from the envelope id in the
/// `indicators` tree. `0xff` never occurs in UTF-8, so no key is a prefix of
/// another key plus this separator.
const INDICATOR_SEPARATOR: u8 = 0xff;

/// Key of the own sequence counter in the `meta` tree.
const META_OWN_SEQ: &[u8] = b"own_seq";

/// Prefix of the keys that [`Store::put_meta`] writes, so that callers' keys
/// never collide with the store's own bookkeeping.
const META_USER_PREFIX: &[u8] = b"user/";

/// Default sled page-cache size for [`Store::open`]: enough for the working
/// set of a busy node, small enough to run dozens of nodes in one simulation.
pub const DEFAULT_CACHE_CAPACITY: u64 = 256 * 1024 * 1024;

/// How long [`Store::open`] waits for a lock this process just released.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an I/O or internal error.
    #[error("sled storage error")]
    Sled(#[from] sled::Error),
    /// A value read back from disk does not have the shape the store wrote.
    #[error("corrupt value in tree {tree}: {detail}")]
    Corrupt {
        /// The tree holding the bad value.
        tree: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// The author already has a different envelope at this sequence number;
    /// nothing was written.
    #[error(transparent)]
    Equivocation(#[from] Equivocation),
    /// Sequence numbers start at 1; an envelope at seq 0 cannot be stored.
    #[error("envelope seq 0 is invalid, sequences start at 1")]
    SeqZero,
    /// A different roster is already stored under this version. Roster
    /// versions are append-only, so the new one was not written.
    #[error("a different roster is already stored as version {version}")]
    RosterConflict {
        /// The version both rosters claim.
        version: u64,
    },
    /// The own sequence counter cannot be incremented any further.
    #[error("own sequence numbers are exhausted")]
    SeqExhausted,
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(error: TransactionError<StoreError>) -> Self {
        match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => StoreError::Sled(error),
        }
    }
}

/// Most envelopes [`Store::insert_envelopes`] writes in one sled transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 256;

/// Most envelope bytes [`Store::insert_envelopes`] writes in one sled
/// transaction (a single larger envelope still gets a transaction of its own).
pub const MAX_TRANSACTION_BYTES: usize = 256 * 1024;

/// An envelope to store with [`Store::insert_envelopes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEnvelope<'a> {
    /// The envelope id.
    pub id: Id,
    /// The node key that signed it.
    pub author: AuthorKey,
    /// Its sequence number in the author's feed, from 1.
    pub seq: u64,
    /// The complete signed encoding.
    pub bytes: &'a [u8],
}

/// An author signed two different envelopes with the same sequence number.
/// The store keeps the first; the caller should keep both as evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("author {} already has envelope {} at seq {seq}", short_hex(.author), short_hex(.existing))]
pub struct Equivocation {
    /// The author that signed both envelopes.
    pub author: AuthorKey,
    /// The sequence number both envelopes claim.
    pub seq: u64,
    /// The id of the envelope already stored at `(author, seq)`.
    pub existing: Id,
}

/// Outcome of [`Store::insert_envelope`] when no equivocation was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// `true` if the envelope was not stored before this call.
    pub new: bool,
    /// The author's highest contiguous seq after this call.
    pub frontier: u64,
}

/// Number of entries in each tree, as reported by [`Store::counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Stored envelopes, including those this node cannot open.
    pub envelopes: u64,
    /// Authors with at least one contiguous envelope from seq 1.
    pub authors: u64,
    /// Envelopes this node has opened and kept the plaintext of.
    pub plaintext: u64,
    /// Entries of the indicator index (one per indicator per envelope).
    pub indicators: u64,
    /// Envelopes marked retracted.
    pub retracted: u64,
    /// Stored roster versions.
    pub rosters: u64,
    /// Stored pieces of equivocation evidence.
    pub evidence: u64,
}

/// Handle to the node's sled database. Cloning is cheap and every clone
/// shares the same database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    envelopes: Tree,
    feeds: Tree,
    frontier: Tree,
    plaintext: Tree,
    indicators: Tree,
    retracted: Tree,
    rosters: Tree,
    evidence: Tree,
    meta: Tree,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("was_recovered", &self.db.was_recovered())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in the directory `path` with
    /// [`DEFAULT_CACHE_CAPACITY`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache_capacity(path, DEFAULT_CACHE_CAPACITY)
    }

    /// Opens (or creates) the store in the directory `path` with a sled page
    /// cache of at most `cache_capacity` bytes.
    ///
    /// sled releases a dropped store's file lock from a background thread a
    /// moment later, so a store closed and reopened by one process (an
    /// offline `join` reads the roster, then writes it) may find the lock
    /// still held: the open is retried for up to [`LOCK_WAIT`]. A lock that
    /// another process holds (a running node) still fails, then.
    pub fn open_with_cache_capacity(path: &Path, cache_capacity: u64) -> Result<Store, StoreError> {
        let started = std::time::Instant::now();
        loop {
            match sled::Config::new()
                .path(path)
                .cache_capacity(cache_capacity)
                .open()
            {
                Ok(db) => return Store::from_db(db),
                // sled reports a held lock only in the message of an
                // `ErrorKind::Other`.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && started.elapsed() < LOCK_WAIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Opens a store that lives only as long as its last handle; its files
    /// are deleted when it is dropped. For tests and throwaway nodes.
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(DEFAULT_CACHE_CAPACITY)
            .open()?;
        Store::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Store, StoreError> {
        Ok(Store {
            envelopes: db.open_tree("envelopes")?,
            feeds: db.open_tree("feeds")?,
            frontier: db.open_tree("frontier")?,
            plaintext: db.open_tree("plaintext")?,
            indicators: db.open_tree("indicators")?,
            retracted: db.open_tree("retracted")?,
            rosters: db.open_tree("rosters")?,
            evidence: db.open_tree("evidence")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Makes every write so far durable without blocking the calling
    /// thread; sled does the work on its own thread pool.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Size of the database files on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Number of entries in each tree. Costs a scan of every tree.
    pub fn counts(&self) -> Counts {
        let len = |tree: &Tree| u64::try_from(tree.len()).unwrap_or(u64::MAX);
        Counts {
            envelopes: len(&self.envelopes),
            authors: len(&self.frontier),
            plaintext: len(&self.plaintext),
            indicators: len(&self.indicators),
            retracted: len(&self.retracted),
            rosters: len(&self.rosters),
            evidence: len(&self.evidence),
        }
    }

    // ---------------------------------------------------------------- own seq

    /// Reserves the next sequence number for an envelope this node authors
    /// (1 the first time) and flushes before returning, so that a number is
    /// never handed out twice, even across a crash. A number that is reserved
    /// but never used leaves a gap, which the protocol tolerates.
    pub fn reserve_seq(&self) -> Result<u64, StoreError> {
        loop {
            let current = self.meta.get(META_OWN_SEQ)?;
            let seq = match &current {
                Some(bytes) => decode_u64("meta", bytes)?,
                None => 0,
            };
            let next = seq.checked_add(1).ok_or(StoreError::SeqExhausted)?;
            let swapped =
                self.meta
                    .compare_and_swap(META_OWN_SEQ, current, Some(&next.to_be_bytes()[..]))?;
            if swapped.is_ok() {
                self.db.flush()?;
                return Ok(next);
            }
        }
    }

    /// The last sequence number [`Store::reserve_seq`] handed out, 0 if none.
    pub fn own_seq(&self) -> Result<u64, StoreError> {
        match self.meta.get(META_OWN_SEQ)? {
            Some(bytes) => decode_u64("meta", &bytes),
            None => Ok(0),
        }
    }

    /// Stores an opaque metadata value under `key` (for example the
    /// consortium id). Not flushed: call [`Store::flush`] if it must survive
    /// a crash.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(meta_key(key), value)?;
        Ok(())
    }

    /// The metadata value stored under `key`, if any.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(meta_key(key))?.map(|value| value.to_vec()))
    }

    // -------------------------------------------------------------- envelopes

    /// Stores an envelope of `author` at `seq` together with its feed entry,
    /// and advances the author's frontier across every contiguous seq now
    /// present (filling a gap may move it by many steps). All of it is one
    /// sled transaction; nothing is flushed.
    ///
    /// Storing the same envelope again is a no-op that reports `new: false`.
    /// If `(author, seq)` already holds a different id, nothing is written and
    /// [`StoreError::Equivocation`] names the stored id.
    ///
    /// Each sled transaction costs a log-buffer write, so when several
    /// envelopes are at hand (a sync batch, a burst of gossip) prefer
    /// [`Store::insert_envelopes`].
    pub fn insert_envelope(
        &self,
        id: &Id,
        author: &AuthorKey,
        seq: u64,
        bytes: &[u8],
    ) -> Result<Inserted, StoreError> {
        let envelope = NewEnvelope {
            id: *id,
            author: *author,
            seq,
            bytes,
        };
        let mut outcomes = self.insert_envelopes(&[envelope])?;
        match outcomes.pop() {
            Some(outcome) => Ok(outcome?),
            None => Err(StoreError::Corrupt {
                tree: "envelopes",
                detail: "a one-envelope insert reported no outcome".to_owned(),
            }),
        }
    }

    /// Stores many envelopes as [`Store::insert_envelope`] does, returning
    /// one outcome per envelope in order: equivocations are reported per
    /// envelope and do not stop the others. Envelopes are written in sled
    /// transactions of up to [`MAX_TRANSACTION_ITEMS`] envelopes or
    /// [`MAX_TRANSACTION_BYTES`] bytes, so each envelope is stored atomically
    /// with its feed entry and frontier; if an error is returned, an earlier
    /// part of the batch may already be stored. Nothing is flushed.
    pub fn insert_envelopes(
        &self,
        batch: &[NewEnvelope<'_>],
    ) -> Result<Vec<Result<Inserted, Equivocation>>, StoreError> {
        if batch.iter().any(|envelope| envelope.seq == 0) {
            return Err(StoreError::SeqZero);
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut rest = batch;
        while !rest.is_empty() {
            let mut chunk_len = 0;
            let mut chunk_bytes = 0usize;
            for envelope in rest.iter().take(MAX_TRANSACTION_ITEMS) {
                chunk_bytes = chunk_bytes.saturating_add(envelope.bytes.len());
                if chunk_len > 0 && chunk_bytes > MAX_TRANSACTION_BYTES {
                    break;
                }
                chunk_len += 1;
            }
            let (chunk, tail) = rest.split_at(chunk_len);
            rest = tail;
            let chunk_outcomes = (&self.envelopes, &self.feeds, &self.frontier).transaction(
                |(envelopes, feeds, frontier)| {
                    chunk
                        .iter()
                        .map(|envelope| insert_one(envelopes, feeds, frontier, envelope))
                        .collect::<Result<Vec<_>, _>>()
                },
            );
            outcomes.extend(chunk_outcomes?);
        }
        Ok(outcomes)
    }

    /// The stored bytes of envelope `id`, if any.
    pub fn envelope(&self, id: &Id) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.envelopes.get(id)?.map(|bytes| bytes.to_vec()))
    }

    /// Whether envelope `id` is stored.
    pub fn contains(&self, id: &Id) -> Result<bool, StoreError> {
        Ok(self.envelopes.contains_key(id)?)
    }

    /// The id of the envelope stored at `(author, seq)`, if any.
    pub fn id_at(&self, author: &AuthorKey, seq: u64) -> Result<Option<Id>, StoreError> {
        self.feeds
            .get(feed_key(author, seq))?
            .map(|bytes| decode_id("feeds", &bytes))
            .transpose()
    }

    /// Every author's highest contiguous seq. Authors with nothing contiguous
    /// from seq 1 are absent.
    pub fn frontier(&self) -> Result<BTreeMap<AuthorKey, u64>, StoreError> {
        self.frontier
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                Ok((
                    decode_key("frontier", &key)?,
                    decode_u64("frontier", &value)?,
                ))
            })
            .collect()
    }

    /// `author`'s highest contiguous seq, 0 if it has none.
    pub fn frontier_of(&self, author: &AuthorKey) -> Result<u64, StoreError> {
        match self.frontier.get(author)? {
            Some(bytes) => decode_u64("frontier", &bytes),
            None => Ok(0),
        }
    }

    /// Stored envelopes of `author` with `from_seq <= seq <= to_seq`, in seq
    /// order, skipping seqs not stored, and whether a limit cut the range
    /// short (it may hold more after the last one returned). Stops at
    /// `max_items` envelopes, and before the total size would exceed
    /// `max_bytes` — but returns at least one envelope if any is in range
    /// (and `max_items > 0`), so a peer can always make progress.
    pub fn range(
        &self,
        author: &AuthorKey,
        from_seq: u64,
        to_seq: u64,
        max_bytes: usize,
        max_items: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
        let mut batch = Vec::new();
        if from_seq > to_seq || max_items == 0 {
            return Ok((batch, false));
        }
        let mut total = 0usize;
        let feed = self
            .feeds
            .range(feed_key(author, from_seq)..=feed_key(author, to_seq));
        for entry in feed {
            if batch.len() >= max_items {
                return Ok((batch, true));
            }
            let (_, id) = entry?;
            let id = decode_id("feeds", &id)?;
            let bytes = self.envelopes.get(id)?.ok_or_else(|| StoreError::Corrupt {
                tree: "feeds",
                detail: format!("feed entry points to missing envelope {}", short_hex(&id)),
            })?;
            let size = total.saturating_add(bytes.len());
            if !batch.is_empty() && size > max_bytes {
                return Ok((batch, true));
            }
            total = size;
            batch.push(bytes.to_vec());
        }
        Ok((batch, false))
    }

    // -------------------------------------------------------------- plaintext

    /// Stores the opened record of envelope `id` (opaque to the store).
    pub fn put_plaintext(&self, id: &Id, record: &[u8]) -> Result<(), StoreError> {
        self.plaintext.insert(id, record)?;
        Ok(())
    }

    /// The opened record of envelope `id`, if this node keeps one.
    pub fn plaintext(&self, id: &Id) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.plaintext.get(id)?.map(|record| record.to_vec()))
    }

    /// Forgets the opened record of envelope `id`. The indicator index is
    /// left alone: unindex its indicators with
    /// [`Store::unindex_indicator`].
    pub fn remove_plaintext(&self, id: &Id) -> Result<(), StoreError> {
        self.plaintext.remove(id)?;
        Ok(())
    }

    /// Every stored envelope, in id order. The iterator does not borrow the store.
    pub fn envelopes_iter(
        &self,
    ) -> impl Iterator<Item = Result<(Id, Vec<u8>), StoreError>> + use<> {
        self.envelopes.iter().map(|entry| {
            let (id, bytes) = entry?;
            Ok((decode_id("envelopes", &id)?, bytes.to_vec()))
        })
    }

    /// Every plaintext record, in id order. The iterator does not borrow the store.
    pub fn plaintext_iter(
        &self,
    ) -> impl Iterator<Item = Result<(Id, Vec<u8>), StoreError>> + use<> {
        self.plaintext.iter().map(|entry| {
            let (id, record) = entry?;
            Ok((decode_id("plaintext", &id)?, record.to_vec()))
        })
    }

    // ------------------------------------------------------------- indicators

    /// Records that envelope `id` carries the indicator `key` (by convention
    /// `"kind:value"`, already normalised by the caller).
    pub fn index_indicator(&self, key: &str, id: &Id) -> Result<(), StoreError> {
        self.indicators.insert(indicator_key(key, id), &[])?;
        Ok(())
    }

    /// Removes the record that envelope `id` carries the indicator `key`.
    pub fn unindex_indicator(&self, key: &str, id: &Id) -> Result<(), StoreError> {
        self.indicators.remove(indicator_key(key, id))?;
        Ok(())
    }

    /// Ids of the envelopes indexed under exactly `key`, in id order.
    /// `"ipv4:1.2.3.4"` never matches `"ipv4:1.2.3.45"`.
    pub fn lookup_indicator(&self, key: &str) -> Result<Vec<Id>, StoreError> {
        let mut prefix = Vec::with_capacity(key.len() + 1);
        prefix.extend_from_slice(key.as_bytes());
        prefix.push(INDICATOR_SEPARATOR);
        self.indicators
            .scan_prefix(&prefix)
            .map(|entry| {
                let (entry_key, _) = entry?;
                decode_id("indicators", &entry_key[prefix.len()..])
            })
            .collect()
    }

    // ------------------------------------------------------------ retractions

    /// Marks envelope `target` retracted by the retraction envelope `by`.
    /// If several retractions target the same envelope, the smallest
    /// retraction id is kept, so every node ends up with the same answer
    /// whatever order they arrive in.
    pub fn mark_retracted(&self, target: &Id, by: &Id) -> Result<(), StoreError> {
        loop {
            let current = self.retracted.get(target)?;
            if let Some(existing) = &current
                && decode_id("retracted", existing)? <= *by
            {
                return Ok(());
            }
            let swapped = self
                .retracted
                .compare_and_swap(target, current, Some(&by[..]))?;
            if swapped.is_ok() {
                return Ok(());
            }
        }
    }

    /// The id of the retraction that withdrew envelope `target`, if any.
    pub fn retracted_by(&self, target: &Id) -> Result<Option<Id>, StoreError> {
        self.retracted
            .get(target)?
            .map(|by| decode_id("retracted", &by))
            .transpose()
    }

    // ---------------------------------------------------------------- rosters

    /// Stores a signed roster (opaque bytes, validated by the caller) as
    /// `version` and flushes. Storing the same bytes again is a no-op;
    /// different bytes under a stored version give
    /// [`StoreError::RosterConflict`] and are not written.
    pub fn put_roster(&self, version: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let key = version.to_be_bytes();
        let swapped = self
            .rosters
            .compare_and_swap(key, None as Option<&[u8]>, Some(bytes))?;
        if let Err(conflict) = swapped
            && conflict.current.as_deref() != Some(bytes)
        {
            return Err(StoreError::RosterConflict { version });
        }
        self.db.flush()?;
        Ok(())
    }

    /// The signed roster stored as `version`, if any.
    pub fn roster(&self, version: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .rosters
            .get(version.to_be_bytes())?
            .map(|bytes| bytes.to_vec()))
    }

    /// The stored roster with the highest version, if any.
    pub fn latest_roster(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.rosters
            .last()?
            .map(|(key, bytes)| Ok((decode_u64("rosters", &key)?, bytes.to_vec())))
            .transpose()
    }

    /// Every stored roster, oldest version first.
    pub fn rosters(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.rosters
            .iter()
            .map(|entry| {
                let (key, bytes) = entry?;
                Ok((decode_u64("rosters", &key)?, bytes.to_vec()))
            })
            .collect()
    }

    // --------------------------------------------------------------- evidence

    /// Stores equivocation evidence (opaque bytes, typically both conflicting
    /// envelopes) against `author` at `seq`. One piece of evidence proves the
    /// equivocation, so the first one stored is kept; returns whether this
    /// call stored it.
    pub fn put_evidence(
        &self,
        author: &AuthorKey,
        seq: u64,
        bytes: &[u8],
    ) -> Result<bool, StoreError> {
        let swapped = self.evidence.compare_and_swap(
            feed_key(author, seq),
            None as Option<&[u8]>,
            Some(bytes),
        )?;
        Ok(swapped.is_ok())
    }

    /// Every piece of equivocation evidence, ordered by author then seq.
    pub fn evidence(&self) -> Result<Vec<(AuthorKey, u64, Vec<u8>)>, StoreError> {
        self.evidence
            .iter()
            .map(|entry| {
                let (key, bytes) = entry?;
                let (author, seq) = decode_feed_key("evidence", &key)?;
                Ok((author, seq, bytes.to_vec()))
            })
            .collect()
    }
}

/// The body of [`Store::insert_envelopes`] for one envelope, inside a sled
/// transaction over `envelopes`, `feeds` and `frontier`.
fn insert_one(
    envelopes: &TransactionalTree,
    feeds: &TransactionalTree,
    frontier: &TransactionalTree,
    envelope: &NewEnvelope<'_>,
) -> ConflictableTransactionResult<Result<Inserted, Equivocation>, StoreError> {
    let NewEnvelope {
        id,
        author,
        seq,
        bytes,
    } = *envelope;
    let mut current = match frontier.get(author)? {
        Some(value) => decode_u64("frontier", &value).map_err(abort)?,
        None => 0,
    };
    let key = feed_key(&author, seq);
    if let Some(existing) = feeds.get(key)? {
        let existing = decode_id("feeds", &existing).map_err(abort)?;
        if existing == id {
            return Ok(Ok(Inserted {
                new: false,
                frontier: current,
            }));
        }
        return Ok(Err(Equivocation {
            author,
            seq,
            existing,
        }));
    }
    envelopes.insert(&id[..], bytes)?;
    feeds.insert(&key[..], &id[..])?;
    if current.checked_add(1) == Some(seq) {
        current = seq;
        while let Some(next) = current.checked_add(1) {
            if feeds.get(feed_key(&author, next))?.is_none() {
                break;
            }
            current = next;
        }
        frontier.insert(&author[..], &current.to_be_bytes()[..])?;
    }
    Ok(Ok(Inserted {
        new: true,
        frontier: current,
    }))
}

/// Wraps a store error so that it aborts a sled transaction.
fn abort(error: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(error)
}

/// `author ‖ seq (big-endian)`: sorts an author's entries by seq.
fn feed_key(author: &AuthorKey, seq: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(author);
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// `key ‖ 0xff ‖ id`.
fn indicator_key(key: &str, id: &Id) -> Vec<u8> {
    let mut entry = Vec::with_capacity(key.len() + 1 + id.len());
    entry.extend_from_slice(key.as_bytes());
    entry.push(INDICATOR_SEPARATOR);
    entry.extend_from_slice(id);
    entry
}

fn meta_key(key: &str) -> Vec<u8> {
    let mut entry = Vec::with_capacity(META_USER_PREFIX.len() + key.len());
    entry.extend_from_slice(META_USER_PREFIX);
    entry.extend_from_slice(key.as_bytes());
    entry
}

fn decode_u64(tree: &'static str, bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        tree,
        detail: format!("expected an 8-byte integer, found {} bytes", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

fn decode_id(tree: &'static str, bytes: &[u8]) -> Result<Id, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        tree,
        detail: format!("expected a 32-byte id, found {} bytes", bytes.len()),
    })
}

fn decode_key(tree: &'static str, bytes: &[u8]) -> Result<AuthorKey, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        tree,
        detail: format!("expected a 32-byte author key, found {} bytes", bytes.len()),
    })
}

fn decode_feed_key(tree: &'static str, bytes: &IVec) -> Result<(AuthorKey, u64), StoreError> {
    if bytes.len() != 40 {
        return Err(StoreError::Corrupt {
            tree,
            detail: format!(
                "expected a 40-byte author and seq key, found {} bytes",
                bytes.len()
            ),
        });
    }
    Ok((
        decode_key(tree, &bytes[..32])?,
        decode_u64(tree, &bytes[32..])?,
    ))
}

/// First eight bytes of `bytes` in hex, for error messages.
fn short_hex(bytes: &[u8; 32]) -> String {
    bytes[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
