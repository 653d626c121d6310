//! Validation as a pure verdict: given envelope bytes, the time, the roster
//! and what the store knows about the author, decide Accept, Ignore or
//! Reject. The node acts on the verdict; gossip and sync use the same call.

use std::collections::HashMap;

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::VerifyingKey;

use crate::body::Body;
use crate::bytes::{Digest, NodePublicKey};
use crate::card::OrgId;
use crate::envelope::{DecodeError, Envelope, Kind, id_of};
use crate::roster::Roster;
use crate::sync::SeqRange;

/// How far in the future `created_at` may be (clock skew allowance).
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// Longest lifetime (`expires_at - created_at`) an envelope may have: one
/// year. A protocol rule every node applies alike, so an envelope that
/// breaks it is rejected everywhere; it bounds how long any ciphertext is
/// kept.
pub const MAX_LIFETIME_MS: u64 = 365 * 24 * 60 * 60 * 1000;

/// What the node's store knows, as far as validation needs it.
pub trait AuthorState {
    /// Id stored at `(author, seq)`, if any (including expired tombstones).
    fn id_at(&self, author: &NodePublicKey, seq: u64) -> Option<Digest>;
    /// Encoded envelope by id (to return as equivocation evidence).
    fn envelope(&self, id: &Digest) -> Option<Vec<u8>>;
    /// Author of a stored envelope (to check retractions).
    fn author_of(&self, id: &Digest) -> Option<NodePublicKey>;
    /// Highest contiguous seq stored for `author` (0 if none).
    fn frontier(&self, author: &NodePublicKey) -> u64;
    /// The organisation the stored envelope `id` was accepted from, fixed
    /// when it was stored. A node key later removed from its card (key
    /// rotation) keeps its envelopes in that organisation, so they stay
    /// retractable by it. The default knows none: the author's organisation
    /// is then looked up in the roster in force.
    fn org_of(&self, _id: &Digest) -> Option<OrgId> {
        None
    }
    /// The GREEN epoch of the stored envelope `id`, if it is epoch-sealed.
    /// The default decodes the stored envelope; a store that keeps the epoch
    /// elsewhere may answer faster.
    fn epoch_of(&self, id: &Digest) -> Option<u64> {
        let bytes = self.envelope(id)?;
        Envelope::decode(&bytes).ok()?.header.seal.epoch()
    }
    /// The `prev` of the stored envelope `id`. The default decodes it.
    fn prev_of(&self, id: &Digest) -> Option<Digest> {
        let bytes = self.envelope(id)?;
        Some(Envelope::decode(&bytes).ok()?.header.prev)
    }
}

/// The outcome of [`validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Verdict {
    /// Store it (and forward it, if it came by gossip).
    Accept(Accepted),
    /// Harmless, but do not store or forward.
    Ignore(IgnoreReason),
    /// Invalid: drop it and score the sender down.
    Reject(Rejection),
}

/// An accepted envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The decoded envelope.
    pub envelope: Envelope,
    /// Its id.
    pub id: Digest,
    /// The author's organisation.
    pub author_org: OrgId,
    /// Seqs of this author the store lacks below this one: start a catch-up.
    pub gap: Option<SeqRange>,
}

/// Why an envelope is ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreReason {
    /// Past `expires_at`. The node may still record the feed position.
    #[error("expired at {expires_at} (now {now})")]
    Expired {
        /// Id.
        id: Digest,
        /// Author.
        author: NodePublicKey,
        /// Seq.
        seq: u64,
        /// Expiry.
        expires_at: u64,
        /// Validation time.
        now: u64,
    },
    /// Already stored.
    #[error("already stored")]
    Duplicate,
}

/// Two different envelopes signed by one author for one seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    /// The author.
    pub author: NodePublicKey,
    /// The seq both claim.
    pub seq: u64,
    /// The stored envelope's encoding.
    pub first: Vec<u8>,
    /// The new envelope's encoding.
    pub second: Vec<u8>,
}

/// Why an envelope is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Undecodable, oversized or structurally invalid.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Names another consortium.
    #[error("envelope is for consortium {found}, not {expected}")]
    WrongConsortium {
        /// Ours.
        expected: Digest,
        /// Theirs.
        found: Digest,
    },
    /// The author is not in the roster.
    #[error("author {0} is not a member node")]
    UnknownAuthor(NodePublicKey),
    /// The author's organisation is revoked.
    #[error("author {author} belongs to revoked org {org}")]
    RevokedAuthor {
        /// Author.
        author: NodePublicKey,
        /// Its org.
        org: OrgId,
    },
    /// The signature does not verify.
    #[error("bad signature by {0}")]
    BadSignature(NodePublicKey),
    /// `created_at` is too far in the future.
    #[error("created_at {created_at} is more than 5 minutes after now ({now})")]
    FromTheFuture {
        /// created_at.
        created_at: u64,
        /// Validation time.
        now: u64,
    },
    /// A second, different envelope for the same `(author, seq)`.
    #[error("equivocation by {} at seq {}", .0.author, .0.seq)]
    Equivocation(Box<Equivocation>),
    /// `prev` does not name the author's stored envelope at `seq - 1`.
    #[error("prev {found} does not match the stored envelope {expected} at seq {seq}")]
    PrevMismatch {
        /// Seq of this envelope.
        seq: u64,
        /// Stored id at seq − 1.
        expected: Digest,
        /// prev.
        found: Digest,
    },
    /// The author's stored envelope at `seq + 1` names another `prev` than
    /// this envelope's id: the stored one is on another branch of a fork.
    #[error("the stored envelope at seq {} names prev {next_prev}, not this envelope {id} at seq {seq}", .seq + 1)]
    NextMismatch {
        /// The author.
        author: NodePublicKey,
        /// Seq of this envelope.
        seq: u64,
        /// Its id.
        id: Digest,
        /// The `prev` of the stored envelope at `seq + 1`.
        next_prev: Digest,
    },
    /// A retraction of another organisation's envelope.
    #[error("org {by} may not retract an envelope of org {owner}")]
    ForeignRetraction {
        /// Retracting org.
        by: OrgId,
        /// Target's org.
        owner: String,
    },
    /// `expires_at - created_at` is longer than [`MAX_LIFETIME_MS`].
    #[error(
        "lifetime of {lifetime_ms} ms is longer than the one-year limit ({MAX_LIFETIME_MS} ms)"
    )]
    LifetimeTooLong {
        /// `expires_at - created_at`.
        lifetime_ms: u64,
    },
    /// A CLEAR payload that is not a body of the header's kind.
    #[error("clear payload is not a valid body: {0}")]
    ClearBody(String),
    /// An epoch-sealed envelope under an older epoch than the author's
    /// envelope before it: an author never goes back to an older roster's
    /// GREEN key (a node restored from an old backup would, and keep sealing
    /// to members revoked since).
    #[error("seq {seq} is sealed under epoch {epoch}, older than epoch {previous} of seq {}", .seq - 1)]
    EpochRegression {
        /// Seq of this envelope.
        seq: u64,
        /// Its epoch.
        epoch: u64,
        /// The epoch of the author's envelope at `seq - 1`.
        previous: u64,
    },
}

impl Rejection {
    /// Whether every node decides this rejection alike, whatever its roster,
    /// store or clock: the bytes do not decode, name another consortium,
    /// carry a bad signature, a CLEAR payload that is not a valid body, or a
    /// lifetime longer than a year.
    /// Only these are reported to gossip as `Reject`, which scores down the
    /// peer that relayed the message.
    ///
    /// The others depend on the validating node's own state, so an honest
    /// relay that checked the message against its state may forward it: an
    /// author unknown to or revoked in this roster (the relay's may be
    /// newer), `created_at` in the future by this node's clock, an
    /// equivocation, a `prev` or epoch that disagrees with what this node
    /// stored at `seq - 1` (or a stored `seq + 1` whose `prev` is not this one), a foreign retraction (only decidable once the
    /// target is stored). A node ignores those and scores no relay for them.
    pub fn decided_alike(&self) -> bool {
        match self {
            Rejection::Decode(_)
            | Rejection::WrongConsortium { .. }
            | Rejection::BadSignature(_)
            | Rejection::ClearBody(_)
            | Rejection::LifetimeTooLong { .. } => true,
            Rejection::UnknownAuthor(_)
            | Rejection::RevokedAuthor { .. }
            | Rejection::FromTheFuture { .. }
            | Rejection::Equivocation(_)
            | Rejection::PrevMismatch { .. }
            | Rejection::NextMismatch { .. }
            | Rejection::ForeignRetraction { .. }
            | Rejection::EpochRegression { .. } => false,
        }
    }
}

/// An envelope that passed every check that needs no store: it decodes,
/// names this consortium, its author is an active member and its signature
/// (and, for CLEAR, its body) is valid. Only [`precheck`] makes one, so
/// [`validate_prechecked`] can trust it. Prechecks are independent of each
/// other, so a node may run them in parallel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prechecked {
    envelope: Envelope,
    id: Digest,
    author_org: OrgId,
}

impl Prechecked {
    /// The decoded envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Its id.
    pub fn id(&self) -> Digest {
        self.id
    }
}

/// Validates `bytes` at time `now` (unix ms) under `roster`.
pub fn validate(bytes: &[u8], now: u64, roster: &Roster, state: &impl AuthorState) -> Verdict {
    match precheck(bytes, roster) {
        Ok(pre) => validate_prechecked(pre, bytes, now, roster, state),
        Err(rejection) => Verdict::Reject(rejection),
    }
}

/// The store-free half of [`validate`]: decode, consortium, author, signature.
pub fn precheck(bytes: &[u8], roster: &Roster) -> Result<Prechecked, Rejection> {
    precheck_in(bytes, roster, roster.consortium_id())
}

/// [`precheck`] with `roster`'s consortium id computed once by the caller:
/// for a genesis roster it is the hash of the whole roster, which a node
/// checking thousands of envelopes should not recompute for each.
pub fn precheck_in(
    bytes: &[u8],
    roster: &Roster,
    consortium: Digest,
) -> Result<Prechecked, Rejection> {
    let (envelope, author_org) = admit(bytes, roster, consortium)?;
    envelope
        .verify()
        .map_err(|_| Rejection::BadSignature(envelope.header.author))?;
    finish(envelope, author_org, bytes)
}

/// The checks of [`precheck_in`] before the signature: decode, consortium,
/// author.
fn admit(
    bytes: &[u8],
    roster: &Roster,
    consortium: Digest,
) -> Result<(Envelope, OrgId), Rejection> {
    let envelope = Envelope::decode(bytes)?;
    let header = &envelope.header;
    if header.consortium != consortium {
        return Err(Rejection::WrongConsortium {
            expected: consortium,
            found: header.consortium,
        });
    }
    let author = header.author;
    let author_org = match roster.node(&author) {
        None => return Err(Rejection::UnknownAuthor(author)),
        Some((member, _)) if member.revoked => {
            return Err(Rejection::RevokedAuthor {
                author,
                org: member.card.org_id.clone(),
            });
        }
        Some((member, _)) => member.card.org_id.clone(),
    };
    Ok((envelope, author_org))
}

/// The checks of [`precheck_in`] after the signature: the lifetime is at
/// most [`MAX_LIFETIME_MS`], and a CLEAR body must be a body of the header's
/// kind.
fn finish(envelope: Envelope, author_org: OrgId, bytes: &[u8]) -> Result<Prechecked, Rejection> {
    let header = &envelope.header;
    let lifetime_ms = header.expires_at.saturating_sub(header.created_at);
    if lifetime_ms > MAX_LIFETIME_MS {
        return Err(Rejection::LifetimeTooLong { lifetime_ms });
    }
    if !header.tlp.is_sealed() {
        Body::decode_for(&envelope.payload, &header.kind).map_err(Rejection::ClearBody)?;
    }
    Ok(Prechecked {
        id: id_of(bytes),
        envelope,
        author_org,
    })
}

/// [`precheck_in`] for many envelopes at once, with one ed25519 batch
/// verification for all their signatures instead of one verification each.
/// Returns one result per item, in order, equal to what [`precheck_in`]
/// returns for it.
///
/// Each item is decoded and its consortium and author checked as
/// [`precheck_in`] does. The signatures of the items that pass go into one
/// batch verification; if it fails, each of them is verified on its own, so
/// a bad signature is still named ([`Rejection::BadSignature`]) and the good
/// ones around it still pass. Deterministic: the batch's random
/// coefficients are derived from its inputs (no RNG is needed).
///
/// The batch equation is checked without the cofactor, like the strict
/// single verification; what strict verification rejects on sight (a
/// small-order or non-canonically encoded `R`, a small-order key) never
/// enters the batch but is verified on its own. One difference remains in
/// theory: the holder of a signing key can craft a signature whose `R`
/// carries a small torsion component, which strict verification rejects and
/// a batch accepts with probability at most 1/2. Only the author itself can
/// make one, and it could as well sign two envelopes for one seq.
pub fn precheck_batch_in<B: AsRef<[u8]>>(
    items: &[B],
    roster: &Roster,
    consortium: Digest,
) -> Vec<Result<Prechecked, Rejection>> {
    let mut admitted: Vec<Result<(Envelope, OrgId), Rejection>> = items
        .iter()
        .map(|bytes| admit(bytes.as_ref(), roster, consortium))
        .collect();
    let mut keys: HashMap<NodePublicKey, Option<VerifyingKey>> = HashMap::new();
    // Items whose signature goes into the batch: index, signed hash,
    // signature, key.
    let mut batch: Vec<(usize, Digest, ed25519_dalek::Signature, VerifyingKey)> = Vec::new();
    for (index, entry) in admitted.iter_mut().enumerate() {
        let Ok((envelope, _)) = entry else { continue };
        let author = envelope.header.author;
        let key = *keys.entry(author).or_insert_with(|| {
            VerifyingKey::from_bytes(&author.0)
                .ok()
                .filter(|k| !k.is_weak())
        });
        let signature = ed25519_dalek::Signature::from_bytes(&envelope.signature.0);
        match key {
            Some(key) if batchable_r(&envelope.signature.0) => {
                batch.push((index, envelope.signing_hash(), signature, key));
            }
            // What strict verification rejects on sight: verified alone.
            _ => {
                if envelope.verify().is_err() {
                    *entry = Err(Rejection::BadSignature(author));
                }
            }
        }
    }
    let batch_ok = match batch.len() {
        0 => true,
        1 => false, // a batch of one is no cheaper: verify it alone
        _ => {
            let messages: Vec<&[u8]> = batch
                .iter()
                .map(|(_, hash, _, _)| hash.as_bytes().as_slice())
                .collect();
            let signatures: Vec<_> = batch
                .iter()
                .map(|(_, _, signature, _)| *signature)
                .collect();
            let keys: Vec<_> = batch.iter().map(|(_, _, _, key)| *key).collect();
            ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        }
    };
    if !batch_ok {
        for (index, hash, signature, key) in &batch {
            if key.verify_strict(hash.as_bytes(), signature).is_err()
                && let Some(entry) = admitted.get_mut(*index)
                && let Ok((envelope, _)) = entry
            {
                *entry = Err(Rejection::BadSignature(envelope.header.author));
            }
        }
    }
    admitted
        .into_iter()
        .zip(items)
        .map(|(entry, bytes)| {
            let (envelope, author_org) = entry?;
            finish(envelope, author_org, bytes.as_ref())
        })
        .collect()
}

/// [`precheck_batch_in`] with the consortium id computed from `roster`.
pub fn precheck_batch<B: AsRef<[u8]>>(
    items: &[B],
    roster: &Roster,
) -> Vec<Result<Prechecked, Rejection>> {
    precheck_batch_in(items, roster, roster.consortium_id())
}

/// Whether the `R` half of `signature` may go into a batch: it decodes to a
/// point, canonically, and is not of small order (strict verification
/// rejects those outright; a batch would not).
fn batchable_r(signature: &[u8; 64]) -> bool {
    let mut r = [0u8; 32];
    r.copy_from_slice(&signature[..32]);
    // y must be below p = 2^255 - 19: the only non-canonical encodings have
    // every bit of y set from bit 4 up and y's low byte at least 0xed.
    let mut y = r;
    y[31] &= 0x7f;
    let non_canonical = y[0] >= 0xed && y[1..31].iter().all(|&b| b == 0xff) && y[31] == 0x7f;
    !non_canonical
        && CompressedEdwardsY(r)
            .decompress()
            .is_some_and(|point| !point.is_small_order())
}

/// The stateful half of [`validate`]: time, duplicates, equivocation, the
/// author's chain, retraction ownership and gaps. `bytes` must be the input
/// that `pre` came from (it is returned as equivocation evidence).
pub fn validate_prechecked(
    pre: Prechecked,
    bytes: &[u8],
    now: u64,
    roster: &Roster,
    state: &impl AuthorState,
) -> Verdict {
    match check(pre, bytes, now, roster, state) {
        Ok(verdict) => verdict,
        Err(rejection) => Verdict::Reject(rejection),
    }
}

fn check(
    pre: Prechecked,
    bytes: &[u8],
    now: u64,
    roster: &Roster,
    state: &impl AuthorState,
) -> Result<Verdict, Rejection> {
    let Prechecked {
        envelope,
        id,
        author_org,
    } = pre;
    let header = &envelope.header;
    let author = header.author;
    let stored = state.id_at(&author, header.seq);
    if stored == Some(id) {
        return Ok(Verdict::Ignore(IgnoreReason::Duplicate));
    }
    if header.created_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(Rejection::FromTheFuture {
            created_at: header.created_at,
            now,
        });
    }
    if let Some(first_id) = stored {
        return Err(Rejection::Equivocation(Box::new(Equivocation {
            author,
            seq: header.seq,
            first: state.envelope(&first_id).unwrap_or_default(),
            second: bytes.to_vec(),
        })));
    }
    if header.expires_at <= now {
        return Ok(Verdict::Ignore(IgnoreReason::Expired {
            id,
            author,
            seq: header.seq,
            expires_at: header.expires_at,
            now,
        }));
    }
    let previous = if header.seq > 1 {
        state.id_at(&author, header.seq - 1)
    } else {
        None
    };
    if let Some(expected) = previous
        && expected != header.prev
    {
        return Err(Rejection::PrevMismatch {
            seq: header.seq,
            expected,
            found: header.prev,
        });
    }
    if let Some(next) = header
        .seq
        .checked_add(1)
        .and_then(|seq| state.id_at(&author, seq))
        && let Some(next_prev) = state.prev_of(&next)
        && next_prev != id
    {
        return Err(Rejection::NextMismatch {
            author,
            seq: header.seq,
            id,
            next_prev,
        });
    }
    if let (Some(epoch), Some(previous)) = (header.seal.epoch(), previous)
        && let Some(previous_epoch) = state.epoch_of(&previous)
        && epoch < previous_epoch
    {
        return Err(Rejection::EpochRegression {
            seq: header.seq,
            epoch,
            previous: previous_epoch,
        });
    }
    if let Kind::Retraction { target } = header.kind
        && let Some(owner) = state.author_of(&target)
    {
        // The target's organisation as fixed when it was stored, else the
        // roster's: a node key rotated out of its card stays its org's.
        let owner_org = state.org_of(&target).or_else(|| {
            roster
                .node(&owner)
                .map(|(member, _)| member.card.org_id.clone())
        });
        match owner_org {
            Some(owner_org) if owner_org == author_org => {}
            Some(owner_org) => {
                return Err(Rejection::ForeignRetraction {
                    by: author_org,
                    owner: owner_org.to_string(),
                });
            }
            None => {
                return Err(Rejection::ForeignRetraction {
                    by: author_org,
                    owner: owner.to_hex(),
                });
            }
        }
    }
    let frontier = state.frontier(&author);
    let gap = (header.seq > frontier + 1).then(|| SeqRange {
        author,
        from: frontier + 1,
        to: header.seq - 1,
    });
    Ok(Verdict::Accept(Accepted {
        envelope,
        id,
        author_org,
        gap,
    }))
}
