//! Roster forks (two valid signed rosters for one version): the evidence a
//! node keeps in its store when it meets one, and the re-base an operator
//! runs to resolve it (`breakwater consortium resolve-fork`). Used by the
//! store worker (detection) and by the offline operations in [`crate::node`]
//! (resolution); talks only to the [`Store`].
//!
//! While a fork is recorded the node applies no roster update. Resolving
//! keeps every envelope: only the roster chain from the fork's version on
//! is replaced by the branch the operator keeps, and the dropped versions
//! stay in the store as resolved evidence.

use breakwater_protocol::{Digest, SignedRoster};
use serde::{Deserialize, Serialize};

use crate::handle::RosterFork;
use crate::store::{Store, StoreError};

/// Metadata name of the unresolved fork's evidence.
const FORK_META: &str = "roster-fork";
/// Metadata name prefix of resolved forks' evidence (`…<version>/<at>`).
const RESOLVED_META: &str = "roster-fork-resolved/";

/// Evidence of a roster fork: both signed rosters of one version, as
/// stored (JSON, rosters in hex of their binary encoding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkEvidence {
    /// The version both rosters claim.
    pub version: u64,
    /// This node's signed roster of that version (hex).
    pub ours: String,
    /// The other signed roster of that version (hex).
    pub theirs: String,
    /// When it was noticed (unix ms).
    pub detected_at: u64,
    /// The peer the other roster came from, if any.
    #[serde(default)]
    pub peer: Option<String>,
    /// Once resolved: the versions this node dropped (hex, oldest first;
    /// empty when it kept its own branch) and when.
    #[serde(default)]
    pub dropped: Vec<String>,
    /// When it was resolved (unix ms).
    #[serde(default)]
    pub resolved_at: Option<u64>,
}

impl ForkEvidence {
    /// Evidence of `ours` and `theirs`, two signed rosters of one version.
    pub fn new(
        ours: &SignedRoster,
        theirs: &SignedRoster,
        detected_at: u64,
        peer: Option<String>,
    ) -> ForkEvidence {
        ForkEvidence {
            version: ours.roster.version,
            ours: hex::encode(ours.encode()),
            theirs: hex::encode(theirs.encode()),
            detected_at,
            peer,
            dropped: Vec::new(),
            resolved_at: None,
        }
    }

    /// What `status` shows of it.
    pub fn summary(&self) -> RosterFork {
        let hash = |hex_bytes: &str| {
            hex::decode(hex_bytes)
                .ok()
                .and_then(|bytes| SignedRoster::decode(&bytes).ok())
                .map_or(Digest::ZERO, |r| r.roster.hash())
        };
        RosterFork {
            version: self.version,
            ours: hash(&self.ours),
            theirs: hash(&self.theirs),
            detected_at: self.detected_at,
            peer: self.peer.clone(),
        }
    }
}

/// The unresolved fork recorded in `store`, if any.
pub fn recorded(store: &Store) -> Result<Option<ForkEvidence>, StoreError> {
    let Some(bytes) = store.meta(FORK_META)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            tree: "kv/m",
            detail: format!("roster fork evidence: {e}"),
        })
}

/// Records `evidence` and flushes, unless a fork is recorded already (the
/// first is kept). Returns whether it was recorded.
pub fn record(store: &Store, evidence: &ForkEvidence) -> Result<bool, StoreError> {
    if recorded(store)?.is_some() {
        return Ok(false);
    }
    let json = serde_json::to_vec(evidence).unwrap_or_default();
    store.put_meta(FORK_META, &json)?;
    store.flush()?;
    Ok(true)
}

/// Every resolved fork's evidence, oldest name first.
pub fn resolved(store: &Store) -> Result<Vec<ForkEvidence>, StoreError> {
    Ok(store
        .meta_with_prefix(RESOLVED_META)?
        .into_iter()
        .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
        .collect())
}

/// Why a fork could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The roster to keep is not acceptable.
    #[error("{0}")]
    Refused(String),
}

/// What [`resolve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The version re-based onto (the fork's version).
    pub version: u64,
    /// True when this node was on the kept branch already (nothing dropped).
    pub kept_ours: bool,
    /// The versions dropped from this node's chain.
    pub dropped: Vec<u64>,
}

/// Resolves a roster fork in favour of `keep`, a signed roster of the
/// fork's version that the admins of the common ancestor (the stored
/// version before it) signed to their threshold. If it is not the version
/// this node holds, the stored versions from there on are replaced by it;
/// envelopes are kept. The fork evidence moves to the resolved records and
/// roster updates resume.
pub fn resolve(store: &Store, keep: &SignedRoster, now: u64) -> Result<Resolved, ResolveError> {
    let refused = |why: String| Err(ResolveError::Refused(why));
    let version = keep.roster.version;
    let fork = recorded(store)?;
    if let Some(fork) = &fork
        && fork.version != version
    {
        return refused(format!(
            "the fork is at roster version {}, but the roster to keep is version {version}",
            fork.version
        ));
    }
    if version < 2 {
        return refused("a genesis roster cannot be forked: keep a version after 1".into());
    }
    let decode = |v: u64| -> Result<Option<SignedRoster>, ResolveError> {
        match store.roster(v)? {
            None => Ok(None),
            Some(bytes) => SignedRoster::decode(&bytes).map(Some).map_err(|e| {
                ResolveError::Refused(format!("stored roster version {v} does not decode: {e}"))
            }),
        }
    };
    let Some(ancestor) = decode(version - 1)? else {
        return refused(format!(
            "this node holds no roster version {}, the common ancestor of version {version}",
            version - 1
        ));
    };
    SignedRoster::verify_update(&ancestor.roster, keep).map_err(|e| {
        ResolveError::Refused(format!(
            "roster version {version} is not a valid successor of the common ancestor (version {}): {e}",
            version - 1
        ))
    })?;
    let ours = decode(version)?;
    let kept_ours = ours
        .as_ref()
        .is_some_and(|ours| ours.roster.hash() == keep.roster.hash());
    if kept_ours && fork.is_none() {
        return refused(format!(
            "no roster fork is recorded and version {version} is already this node's: nothing to resolve"
        ));
    }
    if fork.is_none() && ours.is_none() {
        return refused(format!(
            "no roster fork is recorded and this node holds no version {version}: apply it with `breakwater join`"
        ));
    }
    let dropped = if kept_ours {
        Vec::new()
    } else {
        store.rebase_rosters(version, &keep.encode())?
    };
    let mut evidence = match (fork, ours) {
        (Some(fork), _) => fork,
        (None, Some(ours)) => ForkEvidence::new(&ours, keep, now, None),
        (None, None) => return refused("nothing to resolve".into()),
    };
    evidence.dropped = dropped.iter().map(|(_, b)| hex::encode(b)).collect();
    evidence.resolved_at = Some(now);
    let json = serde_json::to_vec(&evidence).unwrap_or_default();
    store.put_meta(&format!("{RESOLVED_META}{version:020}/{now:020}"), &json)?;
    store.remove_meta(FORK_META)?;
    requeue_green(store, version)?;
    store.flush()?;
    Ok(Resolved {
        version,
        kept_ours,
        dropped: dropped.into_iter().map(|(v, _)| v).collect(),
    })
}

/// Puts every stored GREEN envelope sealed under a roster epoch from
/// `version` on that this node has not opened back into the pending-GREEN
/// index: sealed under the other branch's key, it could not be opened
/// while this node held its own. The node opens them at its next start (or
/// when their roster version arrives), with the kept roster's key or a key
/// of the fork evidence.
fn requeue_green(store: &Store, version: u64) -> Result<usize, StoreError> {
    let mut batch = crate::store::WriteBatch::new();
    let mut queued = 0usize;
    for entry in store.envelopes_iter() {
        let (id, bytes) = entry?;
        let Ok(envelope) = breakwater_protocol::Envelope::decode(&bytes) else {
            continue;
        };
        let Some(epoch) = envelope.header.seal.epoch() else {
            continue;
        };
        if epoch >= version && store.plaintext(&id)?.is_none() {
            batch.pending_epoch(epoch, &id);
            queued += 1;
        }
    }
    if queued > 0 {
        store.write(batch)?;
    }
    Ok(queued)
}

/// Every signed roster kept as fork evidence (recorded and resolved: both
/// sides and the dropped versions). Their GREEN keys still open what was
/// sealed under them, after this node moved to another branch.
pub fn evidence_rosters(store: &Store) -> Result<Vec<SignedRoster>, StoreError> {
    let mut all = resolved(store)?;
    all.extend(recorded(store)?);
    Ok(all
        .iter()
        .flat_map(|e| {
            [&e.ours, &e.theirs]
                .into_iter()
                .chain(e.dropped.iter())
                .cloned()
                .collect::<Vec<_>>()
        })
        .filter_map(|h| hex::decode(h).ok())
        .filter_map(|bytes| SignedRoster::decode(&bytes).ok())
        .collect())
}
