//! Migration of a layout-v1 store (one sled tree per kind of value) to
//! layout v2 (one `kv` tree), run by [`super::Store::open`].
//!
//! The v1 trees are streamed into `kv` in key order, [`BATCH_ITEMS`] entries
//! per `apply_batch`. Every batch also rewrites the marker `m ‖ layout-v2`
//! with the tree and the last key copied, so the copy and the marker are
//! durable together: a migration cut short by a crash resumes after the last
//! batch that survived. Copying an entry again would be harmless (the same
//! key gets the same value), but never happens. The v1 trees are only read
//! until the marker says `done`, which is flushed before any of them is
//! dropped; a crash between the drops leaves trees that the next open drops.
//!
//! Values are copied as they are: envelope bytes, plaintext records (JSON
//! written by the node), evidence and metadata stay byte for byte what the
//! node wrote. The `rosters` tree is the same in both layouts and is left
//! alone.

use std::ops::Bound;

use sled::{Db, IVec, Tree};

use super::{BATCH_ITEMS, INDICATOR_SEPARATOR, Store, StoreError, WriteBatch, family, kv_key};

/// The layout-v1 trees, in the order they are copied (`envelopes` is read
/// through `feeds`, which gives each envelope its feed position).
pub(super) const OLD_TREES: [&str; 8] = [
    "feeds",
    "frontier",
    "plaintext",
    "indicators",
    "retracted",
    "evidence",
    "meta",
    "envelopes",
];

/// Copy stages: one per tree of [`OLD_TREES`] but `envelopes`.
const COPY_STAGES: u8 = 7;

/// Name of the marker in the `m` family.
pub(super) const MARKER_NAME: &[u8] = b"layout-v2";

/// Marker value once the copy is complete.
const DONE: u8 = 0xff;

/// Where a migration stands, as the marker records it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Copying the tree of stage `stage` (an index into [`OLD_TREES`]),
    /// after key `after` (from its first key if `None`).
    Copy { stage: u8, after: Option<Vec<u8>> },
    /// Everything is copied; checking that no envelope was left behind.
    Check,
    /// Migrated; the v1 trees may still need dropping.
    Done,
}

impl State {
    fn encode(&self) -> Vec<u8> {
        match self {
            State::Copy { stage, after: None } => vec![*stage, 0],
            State::Copy {
                stage,
                after: Some(key),
            } => {
                let mut value = vec![*stage, 1];
                value.extend_from_slice(key);
                value
            }
            State::Check => vec![COPY_STAGES, 0],
            State::Done => vec![DONE],
        }
    }

    fn decode(value: &[u8]) -> Result<State, StoreError> {
        let corrupt = || StoreError::Corrupt {
            tree: family::name(family::META),
            detail: format!("bad layout-v2 marker {value:02x?}"),
        };
        match value {
            [DONE] => Ok(State::Done),
            [COPY_STAGES, 0] => Ok(State::Check),
            [stage, 0] if *stage < COPY_STAGES => Ok(State::Copy {
                stage: *stage,
                after: None,
            }),
            [stage, 1, key @ ..] if *stage < COPY_STAGES => Ok(State::Copy {
                stage: *stage,
                after: Some(key.to_vec()),
            }),
            _ => Err(corrupt()),
        }
    }
}

/// Migrates the v1 trees of `db` into `kv`, if there are any, taking at most
/// `budget` steps (a batch, the check, or one tree dropped); returns whether
/// the migration is complete. The store passes `usize::MAX`; tests pass less
/// to stop where a crash could.
pub(super) fn run(db: &Db, kv: &Tree, mut budget: usize) -> Result<bool, StoreError> {
    let marker_key = kv_key(family::META, &[MARKER_NAME]);
    let names = db.tree_names();
    let mut present: Vec<&'static str> = OLD_TREES
        .into_iter()
        .filter(|name| names.iter().any(|found| found == name.as_bytes()))
        .collect();
    let mut state = match kv.get(&marker_key)? {
        Some(value) => State::decode(&value)?,
        None if present.is_empty() => {
            kv.insert(&marker_key, &[DONE][..])?;
            return Ok(true);
        }
        None => State::Copy {
            stage: 0,
            after: None,
        },
    };
    loop {
        if state == State::Done && present.is_empty() {
            return Ok(true);
        }
        if budget == 0 {
            return Ok(false);
        }
        budget -= 1;
        state = match state {
            State::Copy { stage, after } => copy_batch(db, kv, &marker_key, stage, after)?,
            State::Check => {
                check(db, kv)?;
                kv.insert(&marker_key, State::Done.encode())?;
                db.flush()?;
                State::Done
            }
            State::Done => {
                if let Some(name) = present.pop() {
                    db.drop_tree(name)?;
                }
                State::Done
            }
        };
    }
}

/// Copies up to [`BATCH_ITEMS`] entries of stage `stage`'s tree after
/// `after`, together with the marker of the next state, in one batch.
fn copy_batch(
    db: &Db,
    kv: &Tree,
    marker_key: &[u8],
    stage: u8,
    after: Option<Vec<u8>>,
) -> Result<State, StoreError> {
    let name = OLD_TREES
        .get(usize::from(stage))
        .copied()
        .ok_or_else(|| StoreError::Corrupt {
            tree: family::name(family::META),
            detail: format!("layout-v2 marker names stage {stage}"),
        })?;
    let tree = db.open_tree(name)?;
    let envelopes = db.open_tree("envelopes")?;
    let entries = match &after {
        Some(key) => tree.range::<&[u8], _>((Bound::Excluded(key.as_slice()), Bound::Unbounded)),
        None => tree.iter(),
    };
    let mut batch = sled::Batch::default();
    let mut last = None;
    let mut copied = 0;
    for entry in entries.take(BATCH_ITEMS) {
        let (key, value) = entry?;
        copy_entry(&mut batch, &envelopes, name, &key, value)?;
        last = Some(key.to_vec());
        copied += 1;
    }
    let next = if copied < BATCH_ITEMS {
        match stage.checked_add(1) {
            Some(COPY_STAGES) | None => State::Check,
            Some(stage) => State::Copy { stage, after: None },
        }
    } else {
        State::Copy { stage, after: last }
    };
    batch.insert(marker_key, next.encode());
    kv.apply_batch(batch)?;
    Ok(next)
}

/// Adds the v2 form of one entry of v1 tree `tree` to `batch`, checking that
/// it has the shape v1 wrote.
fn copy_entry(
    batch: &mut sled::Batch,
    envelopes: &Tree,
    tree: &'static str,
    key: &[u8],
    value: IVec,
) -> Result<(), StoreError> {
    let expect = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                tree,
                detail: format!(
                    "expected {what}, found a {}-byte key and a {}-byte value",
                    key.len(),
                    value.len()
                ),
            })
        }
    };
    match tree {
        "feeds" => {
            expect(key.len() == 40 && value.len() == 32, "author ‖ seq → id")?;
            let Some(envelope) = envelopes.get(&value)? else {
                // v1 wrote a feed entry and its envelope in one transaction;
                // one without the other has nothing to carry over.
                tracing::warn!(
                    "v1 feed entry without its envelope, skipped in the migration to layout v2"
                );
                return Ok(());
            };
            let mut stored = Vec::with_capacity(32 + envelope.len());
            stored.extend_from_slice(&value);
            stored.extend_from_slice(&envelope);
            batch.insert(kv_key(family::ENVELOPE, &[key]), stored);
            batch.insert(kv_key(family::ID, &[&value]), key);
        }
        "frontier" => {
            expect(key.len() == 32 && value.len() == 8, "author → seq")?;
            batch.insert(kv_key(family::FRONTIER, &[key]), value);
        }
        "plaintext" => {
            expect(key.len() == 32, "id → record")?;
            batch.insert(kv_key(family::PLAINTEXT, &[key]), value);
        }
        "indicators" => {
            let separated = key
                .len()
                .checked_sub(33)
                .and_then(|at| key.get(at))
                .is_some_and(|&byte| byte == INDICATOR_SEPARATOR);
            expect(separated && value.is_empty(), "indicator ‖ 0xff ‖ id → ()")?;
            batch.insert(kv_key(family::INDICATOR, &[key]), value);
        }
        "retracted" => {
            expect(key.len() == 32 && value.len() == 32, "target → id")?;
            batch.insert(kv_key(family::RETRACTED, &[key]), value);
        }
        "evidence" => {
            expect(key.len() == 40, "author ‖ seq → evidence")?;
            batch.insert(kv_key(family::EVIDENCE, &[key]), value);
        }
        "meta" => {
            expect(key != MARKER_NAME, "no v1 key named like the v2 marker")?;
            batch.insert(kv_key(family::META, &[key]), value);
        }
        _ => {
            return Err(StoreError::Corrupt {
                tree,
                detail: "not a layout-v1 tree the migration copies".to_owned(),
            });
        }
    }
    Ok(())
}

/// Checks that every v1 envelope reached `kv`. v1 wrote each envelope with
/// its feed entry, so one without would be corruption; the migration cannot
/// place it (the store does not decode envelopes), so it stops rather than
/// drop it.
fn check(db: &Db, kv: &Tree) -> Result<(), StoreError> {
    let old = db.open_tree("envelopes")?.len();
    let new = kv.scan_prefix([family::ID]).count();
    if old != new {
        return Err(StoreError::Corrupt {
            tree: "envelopes",
            detail: format!(
                "{old} v1 envelopes but {new} reached layout v2: some have no feed entry"
            ),
        });
    }
    Ok(())
}

/// Name, under the `m` family's `user/` names, that nodes before pending
/// retractions had their own family gave the retractions waiting for target
/// `<hex id>`: one metadata value per target holding the retraction ids end
/// to end.
pub(super) const LEGACY_PENDING_RETRACTION: &[u8] = b"user/pending-retraction/";

/// Moves pending retractions kept as metadata blobs (see
/// [`LEGACY_PENDING_RETRACTION`]) into the `t` family, in one batch, and
/// removes the blobs. Cheap when there are none (one seek), so it runs at
/// every open. A blob whose name or value has another shape is left alone.
pub(super) fn pending_retractions(kv: &Tree) -> Result<usize, StoreError> {
    let prefix = kv_key(family::META, &[LEGACY_PENDING_RETRACTION]);
    let mut batch = sled::Batch::default();
    let (mut moved, mut blobs) = (0, 0);
    for entry in kv.scan_prefix(&prefix) {
        let (key, value) = entry?;
        let target = key
            .get(prefix.len()..)
            .and_then(|name| std::str::from_utf8(name).ok())
            .and_then(hex_id);
        let Some(target) = target else { continue };
        if value.len() % 32 != 0 {
            continue;
        }
        for by in value.chunks_exact(32) {
            batch.insert(
                kv_key(family::PENDING_RETRACTION, &[&target, by]),
                IVec::default(),
            );
            moved += 1;
        }
        batch.remove(key);
        blobs += 1;
    }
    if blobs > 0 {
        kv.apply_batch(batch)?;
        tracing::info!(
            blobs,
            moved,
            "pending retractions moved to their own key family"
        );
    }
    Ok(moved)
}

/// A 64-character hex id.
fn hex_id(name: &str) -> Option<[u8; 32]> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(name, &mut id).ok()?;
    Some(id)
}

/// Folds the layout-2.0 expiry index (`y`) and organisation (`o`) entries
/// into the `i` values of layout 2.1, [`BATCH_ITEMS`] envelopes per write:
/// each `y` entry becomes a [`WriteBatch::record_expiry`], which rewrites
/// the `i` entry and removes the `y` and `o` entries it folded, so a fold cut
/// short by a crash resumes where it stopped. An `o` entry whose `i` entry
/// gets no expiry here (the envelope was stored before the expiry index
/// existed) stays until the node records that expiry. Returns the number of
/// envelopes folded.
pub(super) fn fold_expiry_and_org(store: &Store) -> Result<usize, StoreError> {
    let mut folded = 0;
    loop {
        let mut batch = WriteBatch::new();
        let mut in_batch = 0;
        for entry in store.kv.scan_prefix([family::EXPIRY]).take(BATCH_ITEMS) {
            let (key, _) = entry?;
            let expires_at = super::decode_u64(family::EXPIRY, key.get(1..9).unwrap_or(&[]))?;
            let id = super::decode_id(family::EXPIRY, key.get(9..).unwrap_or(&[]))?;
            batch.record_expiry(&id, expires_at);
            in_batch += 1;
        }
        if in_batch == 0 {
            break;
        }
        store.write(batch)?;
        folded += in_batch;
    }
    if folded > 0 {
        tracing::info!(
            folded,
            "expiry and organisation entries folded into the id index (layout 2.1)"
        );
    }
    Ok(folded)
}
