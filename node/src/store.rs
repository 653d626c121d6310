//! The node's sled store, layout v2: envelopes in feed order, the id index,
//! per-author frontiers, opened plaintext, the indicator index, retractions,
//! pending retractions and pending epoch keys, equivocation evidence and node
//! metadata, all in one sled tree `kv`; roster versions in a tree of their
//! own.
//!
//! The store knows nothing of the wire format: envelopes, plaintext records,
//! rosters and evidence are opaque bytes that the node encodes and decodes.
//! Everything the store reads back from disk is checked, and a value that does
//! not have the shape the store wrote gives [`StoreError::Corrupt`], never a
//! panic.
//!
//! # Layout v2
//!
//! Every key of the `kv` tree starts with one byte naming its family:
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `e` | author(32) ‖ seq(8 BE) | id(32) ‖ envelope bytes |
//! | `i` | id(32) | author(32) ‖ seq(8 BE) ‖ expires_at(8 BE) ‖ organisation (UTF-8) — see [`IdEntry`] |
//! | `n` | author(32) | highest contiguous seq (8 BE) |
//! | `p` | id(32) | plaintext record (opaque) |
//! | `x` | `kind:value` ‖ 0xff ‖ id(32) | empty |
//! | `r` | target id(32) | retraction id(32) |
//! | `t` | target id(32) ‖ retraction id(32) | empty (retraction of a target not stored yet) |
//! | `g` | epoch(8 BE) ‖ id(32) | empty (stored, not openable until this node has the epoch's key) |
//! | `q` | author(32) ‖ seq(8 BE) | equivocation evidence (opaque) |
//! | `o` | id(32) | legacy (layout 2.0): the organisation, now in the `i` value |
//! | `y` | expires_at(8 BE) ‖ id(32) | legacy (layout 2.0): the expiry index, now in the `i` value |
//! | `m` | name | value (own seq, the layout marker, `user/…` for [`Store::put_meta`]) |
//!
//! An `e` value starts with the envelope id so that [`Store::id_at`] and the
//! equivocation check need no second read. An `e` value that is the id alone
//! is a **tombstone**: the envelope expired (or its organisation was purged)
//! and its ciphertext was deleted, but its feed position stays, so the
//! frontier does not regress, a copy arriving again is a duplicate and a
//! different envelope at that position is still an equivocation.
//! [`Store::envelope`] and [`Store::range`] do not return tombstones. Envelopes keyed by feed position
//! append into their author's own leaves, and a sync range is one ordered
//! scan. A store written with layout v1 (one tree per family) is migrated on
//! open, resumably (see `store/migrate.rs`).
//!
//! **Layout 2.1** keeps an envelope's expiry and its organisation at
//! acceptance in its `i` value instead of entries of their own (`y` and
//! `o` of layout 2.0): two sled entries fewer per envelope, the dominant
//! cost of ingest. Pruning finds expired envelopes by scanning `i`
//! ([`Store::expiring`]). Opening a layout-2.0 store folds every `y` entry
//! (and the `o` entry of the same id) into `i`; an `i` entry with no expiry
//! recorded (written before the expiry index existed) is completed by the
//! node, which can read the envelope's header ([`WriteBatch::record_expiry`]),
//! and until then [`Store::org_of`] still reads its `o` entry.
//!
//! # Writes
//!
//! Every write goes through [`Store::write`]: one [`WriteBatch`] becomes one
//! `sled::Batch`, applied with `Tree::apply_batch`, so all of it is durable
//! together or not at all after a crash. The single-item methods
//! ([`Store::insert_envelope`], [`Store::put_plaintext`],
//! [`Store::mark_retracted`], …) are one-item batches.
//!
//! **Invariant: writes are serialised.** The node writes only from its worker
//! thread, and the store also serialises [`Store::write`] behind its own
//! writer lock, so the reads that build a batch (duplicate and equivocation
//! checks, the frontier walk, the smallest-retraction rule) cannot race with
//! another write: nothing changes between those reads and the
//! `apply_batch`. Within one batch the reads see the batch's own earlier
//! writes (an overlay), so repeated keys in one chunk behave as if written one
//! by one. Reads never take the lock.
//!
//! Durability: writes become durable at the next [`Store::flush`] (or the
//! background flush sled runs every 500 ms). The node acknowledges a publish
//! only after [`Store::insert_envelope`] and [`Store::flush`]; own sequence
//! numbers ([`Store::reserve_seq`]) and roster versions ([`Store::put_roster`])
//! are flushed before those calls return.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sled::{IVec, Tree};

mod batch;
mod migrate;

#[cfg(test)]
mod legacy;
#[cfg(test)]
mod tests;

pub use batch::{EnvelopeWrites, WriteBatch};

/// Id of an envelope: the hash of its complete signed encoding.
pub type Id = [u8; 32];

/// Ed25519 public key of the node that authored an envelope.
pub type AuthorKey = [u8; 32];

/// Name of the sled tree that holds everything but rosters.
const KV_TREE: &str = "kv";

/// Name of the sled tree that holds roster versions.
const ROSTERS_TREE: &str = "rosters";

/// Key families of the `kv` tree: the first byte of every key.
mod family {
    /// `author ‖ seq` → `id ‖ envelope`.
    pub const ENVELOPE: u8 = b'e';
    /// `id` → `author ‖ seq`.
    pub const ID: u8 = b'i';
    /// `author` → frontier.
    pub const FRONTIER: u8 = b'n';
    /// `id` → plaintext record.
    pub const PLAINTEXT: u8 = b'p';
    /// `kind:value ‖ 0xff ‖ id` → ().
    pub const INDICATOR: u8 = b'x';
    /// `target` → retraction id.
    pub const RETRACTED: u8 = b'r';
    /// `target ‖ retraction` → ().
    pub const PENDING_RETRACTION: u8 = b't';
    /// `epoch ‖ id` → ().
    pub const PENDING_EPOCH: u8 = b'g';
    /// `author ‖ seq` → evidence.
    pub const EVIDENCE: u8 = b'q';
    /// `name` → value.
    pub const META: u8 = b'm';
    /// Legacy (layout 2.0) `id` → organisation at acceptance; folded into
    /// the `i` value.
    pub const ORG: u8 = b'o';
    /// Legacy (layout 2.0) `expires_at ‖ id` → `author ‖ seq`; folded into
    /// the `i` value.
    pub const EXPIRY: u8 = b'y';
    /// `added µs` → `id`: when this node could first open the envelope
    /// (its local arrival, or the opening of a pending GREEN), strictly
    /// increasing. TAXII's `date_added` (PROTOCOL.md §22).
    pub const ADDED: u8 = b'a';

    /// How [`super::StoreError::Corrupt`] names a family.
    pub fn name(prefix: u8) -> &'static str {
        match prefix {
            ENVELOPE => "kv/e",
            ID => "kv/i",
            FRONTIER => "kv/n",
            PLAINTEXT => "kv/p",
            INDICATOR => "kv/x",
            RETRACTED => "kv/r",
            PENDING_RETRACTION => "kv/t",
            PENDING_EPOCH => "kv/g",
            EVIDENCE => "kv/q",
            META => "kv/m",
            ORG => "kv/o",
            EXPIRY => "kv/y",
            ADDED => "kv/a",
            _ => "kv",
        }
    }
}

/// Byte that separates an indicator key from the envelope id in the `x`
/// family. `0xff` never occurs in UTF-8, so no key is a prefix of another key
/// plus this separator.
const INDICATOR_SEPARATOR: u8 = 0xff;

/// Name of the own sequence counter in the `m` family.
const META_OWN_SEQ: &[u8] = b"own_seq";

/// Name of the tally saved at a clean close ([`Store::save_tally`]) in the
/// `m` family: envelopes, plaintext, pending GREEN and tombstones, 8 bytes
/// BE each.
const META_TALLY: &[u8] = b"tally";

/// Prefix of the names that [`Store::put_meta`] writes, so that callers' keys
/// never collide with the store's own bookkeeping.
const META_USER_PREFIX: &[u8] = b"user/";

/// Default sled page-cache size for [`Store::open`]: enough for the working
/// set of a busy node, small enough to run dozens of nodes in one simulation.
pub const DEFAULT_CACHE_CAPACITY: u64 = 256 * 1024 * 1024;

/// How long [`Store::open`] waits for a lock this process just released.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Envelopes per write batch the store is tuned for: the node's ingest
/// chunks and the migration both write this many at a time. Not a limit: a
/// [`WriteBatch`] of any size is applied as one batch.
pub const BATCH_ITEMS: usize = 256;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an I/O or internal error.
    #[error("sled storage error")]
    Sled(#[from] sled::Error),
    /// A value read back from disk does not have the shape the store wrote.
    #[error("corrupt value in tree {tree}: {detail}")]
    Corrupt {
        /// Where the bad value is: `kv/<prefix>` for a key family of the `kv`
        /// tree, otherwise a tree name (a layout-v1 tree during migration).
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
    /// The store's filesystem has less free space than the reserve the node
    /// keeps ([`Store::set_reserve`]); nothing was written.
    #[error(
        "the disk is full: {} MiB free, below the {} MiB reserve (min_free_disk_mb)",
        free / MIB,
        reserve / MIB
    )]
    DiskFull {
        /// Free bytes on the store's filesystem.
        free: u64,
        /// The reserve, in bytes.
        reserve: u64,
    },
    /// The own sequence counter cannot be incremented any further.
    #[error("own sequence numbers are exhausted")]
    SeqExhausted,
}

/// An envelope to store with [`Store::insert_envelopes`] or
/// [`WriteBatch::envelope`].
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

/// Expiry recorded in an `i` entry once the envelope's ciphertext is gone
/// (a tombstone), or for an envelope that never expires: pruning has nothing
/// left to delete. No header carries it (lifetimes are capped at 365 days).
pub const EXPIRY_NONE: u64 = u64::MAX;

/// The value of an `i` entry: where envelope `id` sits in its author's feed,
/// and what pruning and retractions need of it.
///
/// `author(32) ‖ seq(8 BE) ‖ expires_at(8 BE) ‖ org (UTF-8, empty if not
/// known)`; an entry written before layout 2.1 is `author ‖ seq` alone (its
/// expiry not recorded yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdEntry {
    /// The envelope's author.
    pub author: AuthorKey,
    /// Its position in the author's feed.
    pub seq: u64,
    /// When its ciphertext may be deleted ([`EXPIRY_NONE`] once it is gone);
    /// `None` if not recorded yet.
    pub expires_at: Option<u64>,
    /// The author's organisation when the envelope was accepted, if known.
    pub org: Option<String>,
}

impl IdEntry {
    fn encode(&self) -> Vec<u8> {
        let org = self.org.as_deref().unwrap_or_default().as_bytes();
        let mut value = Vec::with_capacity(48 + org.len());
        value.extend_from_slice(&feed_position(&self.author, self.seq));
        if let Some(expires_at) = self.expires_at {
            value.extend_from_slice(&expires_at.to_be_bytes());
            value.extend_from_slice(org);
        }
        value
    }

    fn decode(value: &[u8]) -> Result<IdEntry, StoreError> {
        let tree = family::name(family::ID);
        let corrupt = |detail: String| StoreError::Corrupt { tree, detail };
        if value.len() != 40 && value.len() < 48 {
            return Err(corrupt(format!(
                "expected an author, seq, expiry and organisation, found {} bytes",
                value.len()
            )));
        }
        let (author, seq) = decode_feed_key(tree, &value[..40])?;
        let (expires_at, org) = match value.get(40..48) {
            None => (None, None),
            Some(expiry) => {
                let org = std::str::from_utf8(&value[48..])
                    .map_err(|_| corrupt("organisation is not UTF-8".to_owned()))?;
                let org = (!org.is_empty()).then(|| org.to_owned());
                (Some(decode_u64_in(tree, expiry)?), org)
            }
        };
        Ok(IdEntry {
            author,
            seq,
            expires_at,
            org,
        })
    }
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

/// Outcome of storing one envelope when no equivocation was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// `true` if the envelope was not stored before this call.
    pub new: bool,
    /// The author's highest contiguous seq after this envelope.
    pub frontier: u64,
}

/// Outcome of one envelope of a [`WriteBatch`], in the order added.
pub type EnvelopeOutcome = Result<Inserted, Equivocation>;

/// Number of entries of each kind, as reported by [`Store::counts`].
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
    /// GREEN envelopes waiting for the key of a newer roster version.
    pub pending_green: u64,
    /// Feed positions whose ciphertext was deleted (expired or purged);
    /// included in `envelopes`.
    pub tombstones: u64,
}

/// The counts [`Store::tally`] reports without a scan, kept up to date by
/// every [`Store::write`] once the first call has counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// As [`Counts::envelopes`].
    pub envelopes: u64,
    /// As [`Counts::plaintext`].
    pub plaintext: u64,
    /// As [`Counts::pending_green`].
    pub pending_green: u64,
    /// As [`Counts::tombstones`].
    pub tombstones: u64,
    /// As [`Counts::evidence`] (a small family, counted on each call).
    pub evidence: u64,
}

/// State only a writer touches, behind the store's writer lock.
#[derive(Debug, Default)]
struct Writer {
    /// The tallied families, once counted (see [`Store::tally`]).
    tally: Option<Tally>,
    /// Frontiers read or written so far. The lock makes it exact: only
    /// [`Store::write`] changes `n` entries, and it updates this map after
    /// every successful batch.
    frontier: HashMap<AuthorKey, u64>,
    /// The newest `added` time given out (µs), once read from the store.
    last_added: Option<u64>,
    /// Whether `m‖tally` holds the tally ([`Store::save_tally`]): the next
    /// write removes it in its batch.
    tally_saved: bool,
}

/// Handle to the node's sled database. Cloning is cheap and every clone
/// shares the same database and writer lock.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    kv: Tree,
    rosters: Tree,
    writer: Arc<Mutex<Writer>>,
    /// `apply_batch` calls made by [`Store::write`] since open.
    batches: Arc<AtomicU64>,
    /// Fail every [`Store::write`] as a full disk would (for tests of what
    /// the node does then; see [`Store::fail_writes`]).
    fail_writes: Arc<std::sync::atomic::AtomicBool>,
    /// Pending retraction entries in the store (counted at open, kept by
    /// every write): while there are none, [`Store::pending_retractions`]
    /// answers without a scan, which every new envelope would cost.
    pending_retraction_entries: Arc<AtomicU64>,
    /// The store's directory (none for a temporary store), whose filesystem
    /// [`Store::check_room`] measures.
    dir: Option<Arc<Path>>,
    /// Free bytes every write leaves on the store's filesystem (0: no
    /// reserve); see [`Store::set_reserve`].
    reserve: Arc<AtomicU64>,
    /// See [`Store::set_index_added`].
    index_added: Arc<AtomicBool>,
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
    /// [`DEFAULT_CACHE_CAPACITY`], migrating a layout-v1 store first.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache_capacity(path, DEFAULT_CACHE_CAPACITY)
    }

    /// Opens (or creates) the store in the directory `path` with a sled page
    /// cache of at most `cache_capacity` bytes, migrating a layout-v1 store
    /// first (resumably: a migration cut short by a crash goes on at the
    /// next open).
    ///
    /// sled releases a dropped store's file lock from a background thread a
    /// moment later, so a store closed and reopened by one process (an
    /// offline `join` reads the roster, then writes it) may find the lock
    /// still held: the open is retried for up to [`LOCK_WAIT`]. A lock that
    /// another process holds (a running node) still fails, then.
    pub fn open_with_cache_capacity(path: &Path, cache_capacity: u64) -> Result<Store, StoreError> {
        let mut store = Store::from_db(open_db(path, cache_capacity)?)?;
        store.dir = Some(Arc::from(path));
        Ok(store)
    }

    /// Opens the store at `path` once more and closes it, after a clean
    /// stop. sled 0.34 writes its recovery snapshot only when it opens a
    /// store, so the next open would replay every log write since the last
    /// one (about 150 ms for 100,000 envelopes here); this moves that work
    /// to the stop, and the next start reads the snapshot. Waits up to
    /// [`LOCK_WAIT`] for the lock the closed store releases; fails without
    /// harm if another process holds it.
    pub fn checkpoint(path: &Path) -> Result<(), StoreError> {
        let db = open_db(path, 16 * 1024 * 1024)?;
        db.flush()?;
        Ok(())
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
        let kv = db.open_tree(KV_TREE)?;
        migrate::run(&db, &kv, usize::MAX)?;
        migrate::pending_retractions(&kv)?;
        let tally = saved_tally(&kv)?;
        let pending =
            u64::try_from(kv.scan_prefix([family::PENDING_RETRACTION]).count()).unwrap_or(u64::MAX);
        let store = Store {
            pending_retraction_entries: Arc::new(AtomicU64::new(pending)),
            rosters: db.open_tree(ROSTERS_TREE)?,
            kv,
            db,
            writer: Arc::new(Mutex::new(Writer {
                tally,
                tally_saved: tally.is_some(),
                ..Writer::default()
            })),
            batches: Arc::default(),
            fail_writes: Arc::default(),
            dir: None,
            reserve: Arc::default(),
            index_added: Arc::new(AtomicBool::new(true)),
        };
        migrate::fold_expiry_and_org(&store)?;
        Ok(store)
    }

    /// Makes every later write through any handle of this store refuse,
    /// with [`StoreError::DiskFull`] and nothing written, while the store's
    /// filesystem has less than `bytes` free (0 turns the check off).
    ///
    /// sled 0.34 turns the first I/O error of a flush into the answer to
    /// every later operation, reads included, until the process restarts.
    /// A write refused before it reaches sled leaves sled untouched, so a
    /// node on a filling disk keeps serving reads.
    pub fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
    }

    /// Whether [`Store::write`] keeps the `added` index ([`family::ADDED`]),
    /// which only the TAXII server reads: on unless turned off here. A node
    /// without TAXII turns it off and saves one sled entry per envelope.
    pub fn set_index_added(&self, on: bool) {
        self.index_added.store(on, Ordering::Relaxed);
    }

    /// Whether [`Store::write`] keeps the `added` index
    /// ([`Store::set_index_added`]).
    pub fn indexes_added(&self) -> bool {
        self.index_added.load(Ordering::Relaxed)
    }

    /// Refuses a write that would eat into the reserve (see
    /// [`Store::set_reserve`]), or that [`Store::fail_writes`] fails. A
    /// filesystem that cannot be measured does not stop writes.
    fn check_room(&self) -> Result<(), StoreError> {
        self.injected_write_failure()?;
        let reserve = self.reserve.load(Ordering::Relaxed);
        if reserve == 0 {
            return Ok(());
        }
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        match fs2::available_space(dir) {
            Ok(free) if free < reserve => Err(StoreError::DiskFull { free, reserve }),
            _ => Ok(()),
        }
    }

    /// Makes every later [`Store::write`] through any handle of this store
    /// fail (`fail = true`) with the I/O error a full disk gives, or work
    /// again. For tests of how the node copes with a full disk where a
    /// real full filesystem is not available.
    #[doc(hidden)]
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::Relaxed);
    }

    /// The error [`Store::fail_writes`] injects.
    fn injected_write_failure(&self) -> Result<(), StoreError> {
        if self.fail_writes.load(Ordering::Relaxed) {
            return Err(StoreError::Sled(sled::Error::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device (os error 28, injected)",
            ))));
        }
        Ok(())
    }

    /// How many `sled::Batch`es [`Store::write`] (and every single-item
    /// method built on it) has applied through this store's handles since
    /// it was opened: one per call that wrote anything. For tests and
    /// metrics that check writes are batched.
    pub fn batches_applied(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// The writer lock. A writer that panicked left nothing half-done (a
    /// batch is applied whole or not at all, and the frontier cache is
    /// updated only after), so a poisoned lock is simply taken over.
    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// The counts `status` reports, without scanning the store: the first
    /// call counts them (a scan, under the writer lock), and every write
    /// keeps them exact from then on. Evidence, a family of a few entries,
    /// is counted on each call.
    pub fn tally(&self) -> Tally {
        let mut writer = self.lock_writer();
        let evidence = self.count_family(family::EVIDENCE);
        let tally = *writer.tally.get_or_insert_with(|| {
            let counts = self.counts();
            Tally {
                envelopes: counts.envelopes,
                plaintext: counts.plaintext,
                pending_green: counts.pending_green,
                tombstones: counts.tombstones,
                evidence: 0,
            }
        });
        Tally { evidence, ..tally }
    }

    /// Saves the tally, if counted, so that the next open knows it without
    /// a scan (a node's cold start answers `status` at once), and flushes.
    /// For a clean close: the next write through any handle removes it again
    /// in its own batch, so a store that crashed after writing more never
    /// finds a stale one (sled recovers a prefix of its writes).
    pub fn save_tally(&self) -> Result<(), StoreError> {
        let mut writer = self.lock_writer();
        if let Some(tally) = writer.tally {
            let mut value = Vec::with_capacity(32);
            for count in [
                tally.envelopes,
                tally.plaintext,
                tally.pending_green,
                tally.tombstones,
            ] {
                value.extend_from_slice(&count.to_be_bytes());
            }
            self.kv.insert(kv_key(family::META, &[META_TALLY]), value)?;
            writer.tally_saved = true;
        }
        drop(writer);
        self.flush()
    }

    /// Entries of a key family (a scan of that family).
    fn count_family(&self, prefix: u8) -> u64 {
        u64::try_from(self.kv.scan_prefix([prefix]).count()).unwrap_or(u64::MAX)
    }

    /// Number of entries of each kind. Costs a scan of the whole store.
    pub fn counts(&self) -> Counts {
        let count = |prefix: u8| self.count_family(prefix);
        Counts {
            envelopes: count(family::ID),
            authors: count(family::FRONTIER),
            plaintext: count(family::PLAINTEXT),
            indicators: count(family::INDICATOR),
            retracted: count(family::RETRACTED),
            rosters: u64::try_from(self.rosters.len()).unwrap_or(u64::MAX),
            evidence: count(family::EVIDENCE),
            pending_green: count(family::PENDING_EPOCH),
            tombstones: u64::try_from(
                self.kv
                    .scan_prefix([family::ENVELOPE])
                    .filter(|entry| entry.as_ref().is_ok_and(|(_, v)| v.len() == 32))
                    .count(),
            )
            .unwrap_or(u64::MAX),
        }
    }

    // ---------------------------------------------------------------- own seq

    /// Reserves the next sequence number for an envelope this node authors
    /// (1 the first time) and flushes before returning, so that a number is
    /// never handed out twice, even across a crash. A number that is reserved
    /// but never used leaves a gap, which the protocol tolerates.
    pub fn reserve_seq(&self) -> Result<u64, StoreError> {
        self.check_room()?;
        let key = kv_key(family::META, &[META_OWN_SEQ]);
        let next = {
            let _writer = self.lock_writer();
            let seq = match self.kv.get(&key)? {
                Some(bytes) => decode_u64(family::META, &bytes)?,
                None => 0,
            };
            let next = seq.checked_add(1).ok_or(StoreError::SeqExhausted)?;
            self.kv.insert(key, &next.to_be_bytes()[..])?;
            next
        };
        self.db.flush()?;
        Ok(next)
    }

    /// The last sequence number [`Store::reserve_seq`] handed out, 0 if none.
    pub fn own_seq(&self) -> Result<u64, StoreError> {
        match self.kv.get(kv_key(family::META, &[META_OWN_SEQ]))? {
            Some(bytes) => decode_u64(family::META, &bytes),
            None => Ok(0),
        }
    }

    /// Stores an opaque metadata value under `key` (for example the
    /// consortium id). Not flushed: call [`Store::flush`] if it must survive
    /// a crash.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.put_meta(key, value);
        self.write(batch).map(drop)
    }

    /// The metadata value stored under `key`, if any.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.kv.get(meta_key(key))?.map(|value| value.to_vec()))
    }

    /// Removes the metadata value under `key`, if any. Not flushed.
    pub fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        self.check_room()?;
        let _writer = self.lock_writer();
        self.kv.remove(meta_key(key))?;
        Ok(())
    }

    /// Every metadata value whose name starts with `prefix`, by name.
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let start = meta_key(prefix);
        let skip = meta_key("").len();
        self.kv
            .scan_prefix(&start)
            .map(|entry| {
                let (key, value) = entry?;
                let name = String::from_utf8_lossy(key.get(skip..).unwrap_or_default());
                Ok((name.into_owned(), value.to_vec()))
            })
            .collect()
    }

    // -------------------------------------------------------------- envelopes

    /// Stores an envelope of `author` at `seq` and advances the author's
    /// frontier across every contiguous seq now present (filling a gap may
    /// move it by many steps), in one batch; nothing is flushed.
    ///
    /// Storing the same envelope again is a no-op that reports `new: false`.
    /// If `(author, seq)` already holds a different id, nothing is written and
    /// [`StoreError::Equivocation`] names the stored id.
    ///
    /// When several envelopes are at hand (a sync batch, a burst of gossip),
    /// prefer one [`Store::write`] for all of them and what goes with them.
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
                tree: family::name(family::ENVELOPE),
                detail: "a one-envelope insert reported no outcome".to_owned(),
            }),
        }
    }

    /// Stores many envelopes as [`Store::insert_envelope`] does, in one
    /// batch, returning one outcome per envelope in order: equivocations are
    /// reported per envelope and do not stop the others. If an error is
    /// returned, nothing was written. Nothing is flushed.
    ///
    /// The same as a [`Store::write`] of a batch holding only these
    /// envelopes.
    pub fn insert_envelopes(
        &self,
        envelopes: &[NewEnvelope<'_>],
    ) -> Result<Vec<EnvelopeOutcome>, StoreError> {
        let mut batch = WriteBatch::new();
        for envelope in envelopes {
            batch.envelope(*envelope);
        }
        self.write(batch)
    }

    /// The stored bytes of envelope `id`, if any.
    pub fn envelope(&self, id: &Id) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(IdEntry { author, seq, .. }) = self.id_entry(id)? else {
            return Ok(None);
        };
        let Some(value) = self.kv.get(envelope_key(&author, seq))? else {
            return Err(StoreError::Corrupt {
                tree: family::name(family::ID),
                detail: format!("id {} points to an empty feed position", short_hex(id)),
            });
        };
        let (stored, bytes) = split_envelope(&value)?;
        if bytes.is_empty() && stored == *id {
            // A tombstone: the ciphertext is gone.
            return Ok(None);
        }
        if stored != *id {
            return Err(StoreError::Corrupt {
                tree: family::name(family::ID),
                detail: format!(
                    "id {} points to the feed position of {}",
                    short_hex(id),
                    short_hex(&stored)
                ),
            });
        }
        Ok(Some(bytes.to_vec()))
    }

    /// Whether envelope `id` is stored.
    pub fn contains(&self, id: &Id) -> Result<bool, StoreError> {
        Ok(self.kv.contains_key(kv_key(family::ID, &[id]))?)
    }

    /// The id of the envelope stored at `(author, seq)`, if any.
    pub fn id_at(&self, author: &AuthorKey, seq: u64) -> Result<Option<Id>, StoreError> {
        self.kv
            .get(envelope_key(author, seq))?
            .map(|value| Ok(split_envelope(&value)?.0))
            .transpose()
    }

    /// Every author's highest contiguous seq. Authors with nothing contiguous
    /// from seq 1 are absent.
    pub fn frontier(&self) -> Result<BTreeMap<AuthorKey, u64>, StoreError> {
        self.kv
            .scan_prefix([family::FRONTIER])
            .map(|entry| {
                let (key, value) = entry?;
                Ok((
                    decode_author(family::FRONTIER, &key[1..])?,
                    decode_u64(family::FRONTIER, &value)?,
                ))
            })
            .collect()
    }

    /// `author`'s highest contiguous seq, 0 if it has none.
    pub fn frontier_of(&self, author: &AuthorKey) -> Result<u64, StoreError> {
        match self.kv.get(kv_key(family::FRONTIER, &[author]))? {
            Some(bytes) => decode_u64(family::FRONTIER, &bytes),
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
            .kv
            .range(envelope_key(author, from_seq)..=envelope_key(author, to_seq));
        for entry in feed {
            if batch.len() >= max_items {
                return Ok((batch, true));
            }
            let (_, value) = entry?;
            let (_, bytes) = split_envelope(&value)?;
            if bytes.is_empty() {
                // A tombstone: nothing to serve for it.
                continue;
            }
            let size = total.saturating_add(bytes.len());
            if !batch.is_empty() && size > max_bytes {
                return Ok((batch, true));
            }
            total = size;
            batch.push(bytes.to_vec());
        }
        Ok((batch, false))
    }

    /// Every stored envelope, in id order. The iterator does not borrow the
    /// store. Costs a second read per envelope: [`Store::ids_iter`] is cheaper
    /// when only ids are wanted.
    /// Tombstones are left out.
    pub fn envelopes_iter(
        &self,
    ) -> impl Iterator<Item = Result<(Id, Vec<u8>), StoreError>> + use<> {
        let kv = self.kv.clone();
        let all = self.kv.scan_prefix([family::ID]).map(move |entry| {
            let (key, position) = entry?;
            let id = decode_id(family::ID, &key[1..])?;
            let IdEntry { author, seq, .. } = IdEntry::decode(&position)?;
            let value = kv
                .get(envelope_key(&author, seq))?
                .ok_or_else(|| StoreError::Corrupt {
                    tree: family::name(family::ID),
                    detail: format!("id {} points to an empty feed position", short_hex(&id)),
                })?;
            Ok((id, split_envelope(&value)?.1.to_vec()))
        });
        all.filter(|entry| !matches!(entry, Ok((_, bytes)) if bytes.is_empty()))
    }

    /// Whether `(author, seq)` holds a tombstone (see the module
    /// documentation).
    pub fn is_tombstone(&self, author: &AuthorKey, seq: u64) -> Result<bool, StoreError> {
        Ok(self
            .kv
            .get(envelope_key(author, seq))?
            .is_some_and(|value| value.len() == 32))
    }

    /// The ciphertext `author` has stored, tombstones left out: total bytes
    /// and number of envelopes. Costs a scan of the author's feed.
    pub fn feed_usage(&self, author: &AuthorKey) -> Result<(u64, u64), StoreError> {
        let (mut bytes, mut envelopes) = (0u64, 0u64);
        for entry in self.kv.scan_prefix(kv_key(family::ENVELOPE, &[author])) {
            let (_, value) = entry?;
            let len = value.len().saturating_sub(32) as u64;
            if len > 0 {
                bytes += len;
                envelopes += 1;
            }
        }
        Ok((bytes, envelopes))
    }

    /// `author`'s feed positions that still hold ciphertext: seq and id, in
    /// seq order.
    pub fn live_feed(&self, author: &AuthorKey) -> Result<Vec<(u64, Id)>, StoreError> {
        let prefix = kv_key(family::ENVELOPE, &[author]);
        let mut out = Vec::new();
        for entry in self.kv.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let (_, seq) = decode_feed_key(family::name(family::ENVELOPE), &key[1..])?;
            let (id, bytes) = split_envelope(&value)?;
            if !bytes.is_empty() {
                out.push((seq, id));
            }
        }
        Ok(out)
    }

    /// The `i` entry of envelope `id`, if stored.
    pub fn id_entry(&self, id: &Id) -> Result<Option<IdEntry>, StoreError> {
        self.kv
            .get(kv_key(family::ID, &[id]))?
            .map(|value| IdEntry::decode(&value))
            .transpose()
    }

    /// The organisation envelope `id` was accepted from, if recorded
    /// ([`EnvelopeWrites::org`]).
    pub fn org_of(&self, id: &Id) -> Result<Option<String>, StoreError> {
        if let Some(IdEntry { org: Some(org), .. }) = self.id_entry(id)? {
            return Ok(Some(org));
        }
        legacy_org(&self.kv.get(kv_key(family::ORG, &[id]))?)
    }

    /// Envelopes whose recorded expiry is at most `until`, in id order
    /// after `after` (from the first if `None`), at most `max`: expiry, id,
    /// author and seq. Tombstones are not among them ([`EXPIRY_NONE`]).
    /// Scans the `i` family.
    pub fn expiring(
        &self,
        until: u64,
        max: usize,
        after: Option<&Id>,
    ) -> Result<Vec<(u64, Id, AuthorKey, u64)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.id_entries_after(after) {
            if out.len() >= max {
                break;
            }
            let (id, entry) = entry?;
            if let Some(expires_at) = entry.expires_at
                && expires_at <= until
                && expires_at != EXPIRY_NONE
            {
                out.push((expires_at, id, entry.author, entry.seq));
            }
        }
        Ok(out)
    }

    /// Envelopes whose `i` entry has no expiry recorded (written before
    /// layout 2.1 by a store that had no expiry index), in id order.
    pub fn expiry_unrecorded(&self) -> Result<Vec<Id>, StoreError> {
        let mut out = Vec::new();
        for entry in self.id_entries_after(None) {
            let (id, entry) = entry?;
            if entry.expires_at.is_none() {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The `i` entries after id `after` (from the first if `None`).
    fn id_entries_after(
        &self,
        after: Option<&Id>,
    ) -> impl Iterator<Item = Result<(Id, IdEntry), StoreError>> + use<> {
        let start = match after {
            Some(id) => std::ops::Bound::Excluded(kv_key(family::ID, &[id])),
            None => std::ops::Bound::Included(vec![family::ID]),
        };
        self.kv
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|entry| !matches!(entry, Ok((key, _)) if key.first() != Some(&family::ID)))
            .map(|entry| {
                let (key, value) = entry?;
                Ok((decode_id(family::ID, &key[1..])?, IdEntry::decode(&value)?))
            })
    }

    /// Entries of the `added` index ([`family::ADDED`]) from `from` µs on
    /// (inclusive), oldest first, at most `max`: the time and the id.
    pub fn added_from(&self, from: u64, max: usize) -> Result<Vec<(u64, Id)>, StoreError> {
        let mut out = Vec::new();
        let start = kv_key(family::ADDED, &[&from.to_be_bytes()]);
        for entry in self.kv.range(start..) {
            if out.len() >= max {
                break;
            }
            let (key, value) = entry?;
            if key.first() != Some(&family::ADDED) {
                break;
            }
            if key.len() != 1 + 8 {
                return Err(StoreError::Corrupt {
                    tree: family::name(family::ADDED),
                    detail: format!("expected a 9-byte key, found {} bytes", key.len()),
                });
            }
            let at = decode_u64(family::ADDED, &key[1..])?;
            out.push((at, decode_id(family::ADDED, &value)?));
        }
        Ok(out)
    }

    /// The newest `added` time stored (µs), if any.
    pub fn last_added(&self) -> Result<Option<u64>, StoreError> {
        match self.kv.scan_prefix([family::ADDED]).next_back() {
            Some(entry) => {
                let (key, _) = entry?;
                Ok(Some(decode_u64(
                    family::ADDED,
                    key.get(1..).unwrap_or(&[]),
                )?))
            }
            None => Ok(None),
        }
    }

    /// The id of every stored envelope, in id order. The iterator does not
    /// borrow the store.
    pub fn ids_iter(&self) -> impl Iterator<Item = Result<Id, StoreError>> + use<> {
        self.kv.scan_prefix([family::ID]).map(|entry| {
            let (key, _) = entry?;
            decode_id(family::ID, &key[1..])
        })
    }

    // -------------------------------------------------------------- plaintext

    /// Stores the opened record of envelope `id` (opaque to the store).
    pub fn put_plaintext(&self, id: &Id, record: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.put_plaintext(id, record);
        self.write(batch).map(drop)
    }

    /// The opened record of envelope `id`, if this node keeps one.
    pub fn plaintext(&self, id: &Id) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .kv
            .get(kv_key(family::PLAINTEXT, &[id]))?
            .map(|record| record.to_vec()))
    }

    /// Forgets the opened record of envelope `id`. The indicator index is
    /// left alone: unindex its indicators with
    /// [`Store::unindex_indicator`].
    pub fn remove_plaintext(&self, id: &Id) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.remove_plaintext(id);
        self.write(batch).map(drop)
    }

    /// Every plaintext record, in id order. The iterator does not borrow the store.
    pub fn plaintext_iter(
        &self,
    ) -> impl Iterator<Item = Result<(Id, Vec<u8>), StoreError>> + use<> {
        self.kv.scan_prefix([family::PLAINTEXT]).map(|entry| {
            let (key, record) = entry?;
            Ok((decode_id(family::PLAINTEXT, &key[1..])?, record.to_vec()))
        })
    }

    // ------------------------------------------------------------- indicators

    /// Records that envelope `id` carries the indicator `key` (by convention
    /// `"kind:value"`, already normalised by the caller).
    pub fn index_indicator(&self, key: &str, id: &Id) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.index_indicator(key, id);
        self.write(batch).map(drop)
    }

    /// Removes the record that envelope `id` carries the indicator `key`.
    pub fn unindex_indicator(&self, key: &str, id: &Id) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.unindex_indicator(key, id);
        self.write(batch).map(drop)
    }

    /// Ids of the envelopes indexed under exactly `key`, in id order.
    /// `"ipv4:1.2.3.4"` never matches `"ipv4:1.2.3.45"`.
    pub fn lookup_indicator(&self, key: &str) -> Result<Vec<Id>, StoreError> {
        let prefix = kv_key(family::INDICATOR, &[key.as_bytes(), &[INDICATOR_SEPARATOR]]);
        self.kv
            .scan_prefix(&prefix)
            .map(|entry| {
                let (entry_key, _) = entry?;
                decode_id(family::INDICATOR, &entry_key[prefix.len()..])
            })
            .collect()
    }

    // ------------------------------------------------------------ retractions

    /// Marks envelope `target` retracted by the retraction envelope `by`.
    /// If several retractions target the same envelope, the smallest
    /// retraction id is kept, so every node ends up with the same answer
    /// whatever order they arrive in.
    pub fn mark_retracted(&self, target: &Id, by: &Id) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.mark_retracted(target, by);
        self.write(batch).map(drop)
    }

    /// The id of the retraction that withdrew envelope `target`, if any.
    pub fn retracted_by(&self, target: &Id) -> Result<Option<Id>, StoreError> {
        self.kv
            .get(kv_key(family::RETRACTED, &[target]))?
            .map(|by| decode_id(family::RETRACTED, &by))
            .transpose()
    }

    /// Retractions of `target` kept because `target` was not stored when
    /// they arrived ([`WriteBatch::add_pending_retraction`]), in id order.
    pub fn pending_retractions(&self, target: &Id) -> Result<Vec<Id>, StoreError> {
        if self.pending_retraction_entries.load(Ordering::Relaxed) == 0 {
            return Ok(Vec::new());
        }
        let prefix = kv_key(family::PENDING_RETRACTION, &[target]);
        self.kv
            .scan_prefix(&prefix)
            .map(|entry| {
                let (key, _) = entry?;
                decode_id(family::PENDING_RETRACTION, &key[prefix.len()..])
            })
            .collect()
    }

    // ----------------------------------------------------- pending epoch keys

    /// Envelopes stored but waiting for the key of a roster epoch
    /// ([`EnvelopeWrites::pending_epoch`]) whose epoch is at most `epoch`,
    /// ordered by epoch, then id. Remove each one with
    /// [`WriteBatch::clear_pending_epoch`] in the batch that stores its
    /// plaintext.
    pub fn pending_up_to(&self, epoch: u64) -> Result<Vec<(u64, Id)>, StoreError> {
        let mut pending = Vec::new();
        for entry in self.kv.scan_prefix([family::PENDING_EPOCH]) {
            let (key, _) = entry?;
            let (found, id) = decode_epoch_key(&key)?;
            if found > epoch {
                break;
            }
            pending.push((found, id));
        }
        Ok(pending)
    }

    // ---------------------------------------------------------------- rosters

    /// Stores a signed roster (opaque bytes, validated by the caller) as
    /// `version` and flushes. Storing the same bytes again is a no-op;
    /// different bytes under a stored version give
    /// [`StoreError::RosterConflict`] and are not written.
    pub fn put_roster(&self, version: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.check_room()?;
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

    /// Re-bases the roster chain onto another branch: removes every stored
    /// version from `version` on and stores `bytes` as `version`, in one
    /// batch, and flushes. Returns the removed versions with their bytes.
    /// The one exception to append-only, for resolving a roster fork: the
    /// caller has verified `bytes` as the successor of `version - 1`.
    pub fn rebase_rosters(
        &self,
        version: u64,
        bytes: &[u8],
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.check_room()?;
        let _writer = self.lock_writer();
        let mut removed = Vec::new();
        let mut batch = sled::Batch::default();
        for entry in self.rosters.range(version.to_be_bytes()..) {
            let (key, old) = entry?;
            removed.push((decode_u64_in(ROSTERS_TREE, &key)?, old.to_vec()));
            batch.remove(key);
        }
        batch.insert(&version.to_be_bytes(), bytes);
        self.rosters.apply_batch(batch)?;
        self.db.flush()?;
        Ok(removed)
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
            .map(|(key, bytes)| Ok((decode_u64_in(ROSTERS_TREE, &key)?, bytes.to_vec())))
            .transpose()
    }

    /// Stored rosters with a version above `after`, oldest first: at most
    /// `max_items`, and stopping before their total size would exceed
    /// `max_bytes` (the first always included). A range scan: only what is
    /// returned is read.
    pub fn rosters_after(
        &self,
        after: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let Some(from) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut total = 0usize;
        for entry in self.rosters.range(from.to_be_bytes()..) {
            if out.len() >= max_items {
                break;
            }
            let (key, bytes) = entry?;
            total = total.saturating_add(bytes.len());
            if !out.is_empty() && total > max_bytes {
                break;
            }
            out.push((decode_u64_in(ROSTERS_TREE, &key)?, bytes.to_vec()));
        }
        Ok(out)
    }

    /// Every stored roster, oldest version first.
    pub fn rosters(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.rosters
            .iter()
            .map(|entry| {
                let (key, bytes) = entry?;
                Ok((decode_u64_in(ROSTERS_TREE, &key)?, bytes.to_vec()))
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
        self.check_room()?;
        let _writer = self.lock_writer();
        let key = kv_key(family::EVIDENCE, &[author, &seq.to_be_bytes()]);
        if self.kv.contains_key(&key)? {
            return Ok(false);
        }
        self.kv.insert(key, bytes)?;
        Ok(true)
    }

    /// Every piece of equivocation evidence, ordered by author then seq.
    pub fn evidence(&self) -> Result<Vec<(AuthorKey, u64, Vec<u8>)>, StoreError> {
        self.kv
            .scan_prefix([family::EVIDENCE])
            .map(|entry| {
                let (key, bytes) = entry?;
                let (author, seq) = decode_feed_key(family::name(family::EVIDENCE), &key[1..])?;
                Ok((author, seq, bytes.to_vec()))
            })
            .collect()
    }
}

/// Opens the sled database at `path`, waiting up to [`LOCK_WAIT`] for a lock
/// this process just released.
fn open_db(path: &Path, cache_capacity: u64) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .open()
        {
            Ok(db) => return Ok(db),
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

/// Bytes in a MiB, for messages.
const MIB: u64 = 1024 * 1024;

/// `prefix ‖ parts…`.
fn kv_key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 1 + parts.iter().map(|part| part.len()).sum::<usize>();
    let mut key = Vec::with_capacity(len);
    key.push(prefix);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

/// `e ‖ author ‖ seq (big-endian)`: sorts an author's envelopes by seq.
fn envelope_key(author: &AuthorKey, seq: u64) -> Vec<u8> {
    kv_key(family::ENVELOPE, &[author, &seq.to_be_bytes()])
}

/// `x ‖ key ‖ 0xff ‖ id`.
fn indicator_key(key: &str, id: &Id) -> Vec<u8> {
    kv_key(
        family::INDICATOR,
        &[key.as_bytes(), &[INDICATOR_SEPARATOR], id],
    )
}

/// `m ‖ user/ ‖ key`.
fn meta_key(key: &str) -> Vec<u8> {
    kv_key(family::META, &[META_USER_PREFIX, key.as_bytes()])
}

/// `author ‖ seq (big-endian)`.
fn feed_position(author: &AuthorKey, seq: u64) -> [u8; 40] {
    let mut position = [0u8; 40];
    position[..32].copy_from_slice(author);
    position[32..].copy_from_slice(&seq.to_be_bytes());
    position
}

/// Splits an `e` value into the envelope id and the envelope bytes.
fn split_envelope(value: &[u8]) -> Result<(Id, &[u8]), StoreError> {
    if value.len() < 32 {
        return Err(StoreError::Corrupt {
            tree: family::name(family::ENVELOPE),
            detail: format!(
                "expected an id and an envelope, found {} bytes",
                value.len()
            ),
        });
    }
    let (id, bytes) = value.split_at(32);
    Ok((decode_id(family::ENVELOPE, id)?, bytes))
}

/// Decodes a `g` key into its epoch and id.
fn decode_epoch_key(key: &[u8]) -> Result<(u64, Id), StoreError> {
    if key.len() != 1 + 8 + 32 {
        return Err(StoreError::Corrupt {
            tree: family::name(family::PENDING_EPOCH),
            detail: format!("expected a 41-byte key, found {} bytes", key.len()),
        });
    }
    Ok((
        decode_u64(family::PENDING_EPOCH, &key[1..9])?,
        decode_id(family::PENDING_EPOCH, &key[9..])?,
    ))
}

fn decode_u64(prefix: u8, bytes: &[u8]) -> Result<u64, StoreError> {
    decode_u64_in(family::name(prefix), bytes)
}

fn decode_u64_in(tree: &'static str, bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        tree,
        detail: format!("expected an 8-byte integer, found {} bytes", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

fn decode_id(prefix: u8, bytes: &[u8]) -> Result<Id, StoreError> {
    decode_id_in(family::name(prefix), bytes)
}

fn decode_id_in(tree: &'static str, bytes: &[u8]) -> Result<Id, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        tree,
        detail: format!("expected a 32-byte id, found {} bytes", bytes.len()),
    })
}

fn decode_author(prefix: u8, bytes: &[u8]) -> Result<AuthorKey, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        tree: family::name(prefix),
        detail: format!("expected a 32-byte author key, found {} bytes", bytes.len()),
    })
}

/// The tally a clean close saved ([`Store::save_tally`]), if any. A value
/// of the wrong shape is ignored: the tally is counted again.
fn saved_tally(kv: &Tree) -> Result<Option<Tally>, StoreError> {
    let Some(value) = kv.get(kv_key(family::META, &[META_TALLY]))? else {
        return Ok(None);
    };
    let Ok(raw) = <[u8; 32]>::try_from(value.as_ref()) else {
        return Ok(None);
    };
    let count = |i: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&raw[i * 8..(i + 1) * 8]);
        u64::from_be_bytes(bytes)
    };
    Ok(Some(Tally {
        envelopes: count(0),
        plaintext: count(1),
        pending_green: count(2),
        tombstones: count(3),
        evidence: 0,
    }))
}

/// The organisation in a legacy `o` value, if any.
fn legacy_org(value: &Option<IVec>) -> Result<Option<String>, StoreError> {
    value
        .as_ref()
        .map(|org| {
            String::from_utf8(org.to_vec()).map_err(|_| StoreError::Corrupt {
                tree: family::name(family::ORG),
                detail: "organisation is not UTF-8".to_owned(),
            })
        })
        .transpose()
}

/// Decodes `author ‖ seq (big-endian)`.
fn decode_feed_key(tree: &'static str, bytes: &[u8]) -> Result<(AuthorKey, u64), StoreError> {
    if bytes.len() != 40 {
        return Err(StoreError::Corrupt {
            tree,
            detail: format!(
                "expected a 40-byte author and seq, found {} bytes",
                bytes.len()
            ),
        });
    }
    let author = decode_id_in(tree, &bytes[..32])?;
    Ok((author, decode_u64_in(tree, &bytes[32..])?))
}

/// First eight bytes of `bytes` in hex, for error messages.
fn short_hex(bytes: &[u8; 32]) -> String {
    bytes[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
