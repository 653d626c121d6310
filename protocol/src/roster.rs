//! The consortium roster: members, admins and threshold, versioned as a hash
//! chain, with admin signatures. Also the lookups every other part needs
//! (node key → organisation, organisation → sealing keys).

use std::collections::BTreeSet;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::bytes::{Digest, NodePublicKey, SealingPublicKey, Signature};
use crate::card::{CardError, MemberCard, NodeEntry, OrgId};
use crate::envelope::{MAX_RECIPIENTS, Recipient, WRAP_LEN};
use crate::keys::NodeKeys;
use crate::wire::{self, FrameError};

/// Format byte of a roster without a GREEN key package (the original layout).
pub const ROSTER_FORMAT_V1: u8 = 1;
/// Format byte of a roster with a GREEN key package.
pub const ROSTER_FORMAT_V2: u8 = 2;

/// Largest encoded signed roster accepted.
pub const MAX_ROSTER_BYTES: usize = 1024 * 1024;

/// Room kept for signatures: an unsigned roster may encode to at most
/// `MAX_ROSTER_BYTES - SIGNATURE_RESERVE` bytes.
pub const SIGNATURE_RESERVE: usize = 64 * 1024;

/// Longest consortium name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// Domain tag of roster hashes.
const ROSTER_HASH_DOMAIN: &str = "breakwater/roster/v1";
/// Domain tag of roster signatures.
const ROSTER_SIGN_DOMAIN: &str = "breakwater/roster-signature/v1";

/// Why a roster or a roster update is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    /// A member card is invalid.
    #[error(transparent)]
    Card(#[from] CardError),
    /// Two members share an org id.
    #[error("org {0} appears more than once")]
    DuplicateOrg(OrgId),
    /// An org is listed twice as an admin.
    #[error("admin {0} is listed more than once")]
    DuplicateAdmin(OrgId),
    /// The consortium name is empty, too long or carries control characters.
    #[error(
        "consortium name must be 1-{MAX_NAME_CHARS} characters without control or bidi-override characters"
    )]
    BadName,
    /// The roster encodes larger than a node can decode.
    #[error("roster encodes to {size} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An org named by an operation or as an admin is not a member.
    #[error("unknown org {0}")]
    UnknownOrg(OrgId),
    /// The org is already a member.
    #[error("org {0} is already a member")]
    AlreadyMember(OrgId),
    /// The org is revoked, so it cannot be an admin or be revoked again.
    #[error("org {0} is revoked")]
    Revoked(OrgId),
    /// Threshold is zero or above the number of admins.
    #[error("threshold {threshold} must be between 1 and the number of admins ({admins})")]
    BadThreshold {
        /// Requested threshold.
        threshold: u32,
        /// Number of admins.
        admins: usize,
    },
    /// The roster has no member or no admin.
    #[error("a roster needs at least one member and one admin")]
    Empty,
    /// The version does not follow the current one.
    #[error("roster version {found} does not follow version {current}")]
    BadVersion {
        /// Current version.
        current: u64,
        /// Offered version.
        found: u64,
    },
    /// `prev` is not the hash of the current version.
    #[error("roster prev {found} is not the hash of the current version ({expected})")]
    BadPrev {
        /// Hash of the current version.
        expected: Digest,
        /// Offered prev.
        found: Digest,
    },
    /// The roster belongs to another consortium.
    #[error("roster belongs to consortium {found}, not {expected}")]
    WrongConsortium {
        /// This consortium.
        expected: Digest,
        /// The roster's.
        found: Digest,
    },
    /// A genesis roster must have version 1 and zero `prev` and `consortium`.
    #[error("not a genesis roster (version 1 with zero prev and consortium)")]
    NotGenesis,
    /// Too few distinct admins signed.
    #[error("{found} distinct admin signatures, {threshold} required")]
    NotEnoughSignatures {
        /// Distinct admins that signed validly.
        found: usize,
        /// Required.
        threshold: u32,
    },
    /// The signing key does not belong to an admin of the current version.
    #[error("signer {0} is not a node of an admin organisation")]
    NotAnAdmin(NodePublicKey),
    /// A signature does not verify.
    #[error("signature by {0} does not verify")]
    BadSignature(NodePublicKey),
    /// One node signed twice: [`SignedRoster::sign`] never does that, and
    /// accepting it would let anyone re-encode a signed roster into other
    /// bytes (found by the decoder fuzzing of issue 11).
    #[error("signer {0} appears more than once")]
    DuplicateSigner(NodePublicKey),
    /// The encoding is malformed.
    #[error("malformed roster: {0}")]
    Decode(#[from] FrameError),
    /// The JSON form is malformed.
    #[error("malformed roster file: {0}")]
    Json(String),
    /// The previous version carried a GREEN key package and this one does not.
    #[error("roster version {0} has no GREEN key package, but the version before it had one")]
    GreenKeyMissing(u64),
    /// The GREEN key package does not wrap the key exactly once to every
    /// active node.
    #[error("GREEN key package: {0}")]
    GreenPackage(String),
}

/// The GREEN epoch key of one roster version, wrapped to every active node
/// of that version. It is part of the roster, so the admins' signatures
/// cover it. See [`crate::green`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GreenKeyPackage {
    /// Commitment to the key: `derive_key("breakwater/green-key-commit/v1",
    /// K ‖ core hash)`. Its first 8 bytes are the key id envelopes name.
    pub commit: Digest,
    /// One deterministic Noise_N wrap of the key per active node, sorted by
    /// key id: exactly the active nodes' sealing keys.
    pub wraps: Vec<Recipient>,
}

/// One organisation in the roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The organisation's card.
    pub card: MemberCard,
    /// Revoked members stay listed so their past is known, but their nodes may
    /// neither connect nor author.
    pub revoked: bool,
}

/// One version of the consortium's membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// 1 for genesis, then +1 per update.
    pub version: u64,
    /// Hash of the previous version; zero for genesis.
    pub prev: Digest,
    /// The consortium id (hash of genesis); zero in genesis itself.
    pub consortium: Digest,
    /// Consortium display name.
    pub name: String,
    /// Members, sorted by org id.
    pub members: Vec<Member>,
    /// Admin organisations, sorted.
    pub admins: Vec<OrgId>,
    /// Distinct admins whose signatures an update needs.
    pub threshold: u32,
    /// The GREEN epoch key of this version, from the first version that
    /// carries one; every later version must carry a fresh one. A roster
    /// without it encodes exactly as format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub green: Option<GreenKeyPackage>,
}

/// A format-1 roster as it is on the wire (no `green` field at all).
#[derive(Serialize, Deserialize)]
struct RosterV1Wire {
    version: u64,
    prev: Digest,
    consortium: Digest,
    name: String,
    members: Vec<Member>,
    admins: Vec<OrgId>,
    threshold: u32,
}

/// A format-1 signed roster as it is on the wire.
#[derive(Serialize, Deserialize)]
struct SignedRosterV1Wire {
    roster: RosterV1Wire,
    signatures: Vec<RosterSignature>,
}

/// An admin node's signature over a roster version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterSignature {
    /// Signing node key.
    pub signer: NodePublicKey,
    /// Signature over the roster hash.
    pub signature: Signature,
}

/// A roster version with admin signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRoster {
    /// The roster.
    pub roster: Roster,
    /// Admin signatures.
    pub signatures: Vec<RosterSignature>,
}

impl Roster {
    /// A genesis roster (version 1) from member cards.
    pub fn genesis(
        name: &str,
        cards: Vec<MemberCard>,
        admins: Vec<OrgId>,
        threshold: u32,
    ) -> Result<Roster, RosterError> {
        let mut roster = Roster {
            version: 1,
            prev: Digest::ZERO,
            consortium: Digest::ZERO,
            name: name.to_string(),
            members: cards
                .into_iter()
                .map(|card| Member {
                    card,
                    revoked: false,
                })
                .collect(),
            admins,
            threshold,
            green: None,
        };
        roster.normalise();
        roster.check()?;
        Ok(roster)
    }

    fn normalise(&mut self) {
        self.members
            .sort_by(|a, b| a.card.org_id.cmp(&b.card.org_id));
        // Not deduplicated: a repeated admin is refused by `check`.
        self.admins.sort();
    }

    /// Checks internal consistency: a sensible name, valid cards, distinct
    /// orgs, node keys and sealing keys, distinct admins that are active
    /// members, a sensible threshold, and an encoding that leaves room for
    /// signatures under [`MAX_ROSTER_BYTES`].
    pub fn check(&self) -> Result<(), RosterError> {
        if self.name.trim().is_empty()
            || self.name.chars().count() > MAX_NAME_CHARS
            || crate::body::has_forbidden_char(&self.name, false)
        {
            return Err(RosterError::BadName);
        }
        if self.members.is_empty() || self.admins.is_empty() {
            return Err(RosterError::Empty);
        }
        let mut orgs = BTreeSet::new();
        let mut keys = BTreeSet::new();
        let mut sealing = BTreeSet::new();
        for member in &self.members {
            member.card.check()?;
            if !orgs.insert(&member.card.org_id) {
                return Err(RosterError::DuplicateOrg(member.card.org_id.clone()));
            }
            for node in &member.card.nodes {
                if !keys.insert(node.node_key) {
                    return Err(CardError::DuplicateNode(node.node_key).into());
                }
                if !sealing.insert(node.sealing_key) {
                    return Err(CardError::DuplicateSealingKey(node.sealing_key).into());
                }
            }
        }
        let mut admins = BTreeSet::new();
        for admin in &self.admins {
            if !admins.insert(admin) {
                return Err(RosterError::DuplicateAdmin(admin.clone()));
            }
            match self.member(admin) {
                None => return Err(RosterError::UnknownOrg(admin.clone())),
                Some(m) if m.revoked => return Err(RosterError::Revoked(admin.clone())),
                Some(_) => {}
            }
        }
        if self.threshold == 0 || self.threshold as usize > self.admins.len() {
            return Err(RosterError::BadThreshold {
                threshold: self.threshold,
                admins: self.admins.len(),
            });
        }
        if let Some(package) = &self.green {
            self.check_package(package)?;
        }
        let size = wire::encode_as(self.format(), self).len();
        let max = MAX_ROSTER_BYTES - SIGNATURE_RESERVE;
        if size > max {
            return Err(RosterError::TooLarge { size, max });
        }
        Ok(())
    }

    /// The package's wraps name exactly the active nodes' sealing keys, once
    /// each, sorted, each 80 bytes.
    fn check_package(&self, package: &GreenKeyPackage) -> Result<(), RosterError> {
        let bad = |why: String| Err(RosterError::GreenPackage(why));
        if package.wraps.len() > MAX_RECIPIENTS {
            return bad(format!(
                "{} wraps, more than {MAX_RECIPIENTS}",
                package.wraps.len()
            ));
        }
        if let Some(w) = package.wraps.iter().find(|w| w.wrap.len() != WRAP_LEN) {
            return bad(format!(
                "a wrap of {} bytes, expected {WRAP_LEN}",
                w.wrap.len()
            ));
        }
        if !package.wraps.windows(2).all(|p| p[0].key_id < p[1].key_id) {
            return bad("wraps are not sorted by key id without duplicates".into());
        }
        let mut expected: Vec<_> = self
            .active_nodes()
            .map(|(_, node)| node.sealing_key.key_id())
            .collect();
        expected.sort();
        if expected.windows(2).any(|p| p[0] == p[1]) {
            return bad("two active nodes share a sealing key id".into());
        }
        let found: Vec<_> = package.wraps.iter().map(|w| w.key_id).collect();
        if found != expected {
            return bad("wraps do not name exactly the active nodes' sealing keys".into());
        }
        Ok(())
    }

    /// The format byte this version encodes with: 2 with a GREEN key package,
    /// else 1 (so rosters without one keep their bytes and hashes).
    pub fn format(&self) -> u8 {
        if self.green.is_some() {
            ROSTER_FORMAT_V2
        } else {
            ROSTER_FORMAT_V1
        }
    }

    /// Hash of this version (what `prev` of the next version names).
    pub fn hash(&self) -> Digest {
        Digest(wire::hash(
            ROSTER_HASH_DOMAIN,
            &[&wire::encode_as(self.format(), self)],
        ))
    }

    /// The hash of this version without its GREEN key package: what the
    /// package is bound to (the package cannot cover itself).
    pub fn core_hash(&self) -> Digest {
        if self.green.is_none() {
            return self.hash();
        }
        let core = Roster {
            green: None,
            ..self.clone()
        };
        core.hash()
    }

    /// This version with a GREEN key package for `key`: the key wrapped to
    /// every active node with deterministic wraps (see [`crate::green`]).
    /// The caller draws `key` fresh for every version.
    pub fn with_green_key(mut self, key: &[u8; 32]) -> Result<Roster, RosterError> {
        self.green = None;
        let package = crate::green::package(&self, key)?;
        self.green = Some(package);
        self.check()?;
        Ok(self)
    }

    /// The consortium id: the hash of the genesis roster.
    pub fn consortium_id(&self) -> Digest {
        if self.version == 1 && self.consortium.is_zero() {
            self.hash()
        } else {
            self.consortium
        }
    }

    /// The skeleton of the next version: version + 1, `prev` = this hash,
    /// and no GREEN key package (each version needs a fresh key: see
    /// [`Roster::with_green_key`]).
    pub fn next(&self) -> Roster {
        let mut next = self.clone();
        next.version = self.version + 1;
        next.prev = self.hash();
        next.consortium = self.consortium_id();
        next.green = None;
        next
    }

    /// The next version with the same members, admins and threshold, for a
    /// fresh GREEN key ([`Roster::with_green_key`]).
    pub fn rekeyed(&self) -> Roster {
        self.next()
    }

    /// The next version with `card` added as a member.
    pub fn with_member(&self, card: MemberCard) -> Result<Roster, RosterError> {
        if self.member(&card.org_id).is_some() {
            return Err(RosterError::AlreadyMember(card.org_id));
        }
        let mut next = self.next();
        next.members.push(Member {
            card,
            revoked: false,
        });
        next.normalise();
        next.check()?;
        Ok(next)
    }

    /// The next version with `org` revoked. An admin must be removed from the
    /// admins first if that would leave fewer admins than the threshold.
    pub fn with_revoked(&self, org: &OrgId) -> Result<Roster, RosterError> {
        match self.member(org) {
            None => return Err(RosterError::UnknownOrg(org.clone())),
            Some(m) if m.revoked => return Err(RosterError::Revoked(org.clone())),
            Some(_) => {}
        }
        let mut next = self.next();
        for member in &mut next.members {
            if &member.card.org_id == org {
                member.revoked = true;
            }
        }
        next.admins.retain(|admin| admin != org);
        next.check()?;
        Ok(next)
    }

    /// The next version with new admins and threshold.
    pub fn with_admins(&self, admins: Vec<OrgId>, threshold: u32) -> Result<Roster, RosterError> {
        let mut next = self.next();
        next.admins = admins;
        next.threshold = threshold;
        next.normalise();
        next.check()?;
        Ok(next)
    }

    /// A member by org id, revoked or not.
    pub fn member(&self, org: &OrgId) -> Option<&Member> {
        self.members.iter().find(|m| &m.card.org_id == org)
    }

    /// Members that are not revoked.
    pub fn active_members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !m.revoked)
    }

    /// The member a node belongs to, revoked or not, and its entry.
    pub fn node(&self, key: &NodePublicKey) -> Option<(&Member, &NodeEntry)> {
        self.members.iter().find_map(|member| {
            member
                .card
                .nodes
                .iter()
                .find(|n| &n.node_key == key)
                .map(|node| (member, node))
        })
    }

    /// The active organisation of a node key, if it has one.
    pub fn org_of(&self, key: &NodePublicKey) -> Option<&OrgId> {
        match self.node(key) {
            Some((member, _)) if !member.revoked => Some(&member.card.org_id),
            _ => None,
        }
    }

    /// The sealing keys of an active organisation's nodes.
    pub fn sealing_keys_of(&self, org: &OrgId) -> Result<Vec<SealingPublicKey>, RosterError> {
        match self.member(org) {
            None => Err(RosterError::UnknownOrg(org.clone())),
            Some(m) if m.revoked => Err(RosterError::Revoked(org.clone())),
            Some(m) => Ok(m.card.nodes.iter().map(|n| n.sealing_key).collect()),
        }
    }

    /// The sealing keys of every node of every active member.
    pub fn all_sealing_keys(&self) -> Vec<SealingPublicKey> {
        self.active_members()
            .flat_map(|m| m.card.nodes.iter().map(|n| n.sealing_key))
            .collect()
    }

    /// The active nodes of the roster.
    pub fn active_nodes(&self) -> impl Iterator<Item = (&OrgId, &NodeEntry)> {
        self.active_members()
            .flat_map(|m| m.card.nodes.iter().map(move |n| (&m.card.org_id, n)))
    }

    /// PeerIds allowed to connect: every node of every active member.
    pub fn allowed_peers(&self) -> Vec<PeerId> {
        self.active_nodes()
            .filter_map(|(_, node)| node.node_key.peer_id())
            .collect()
    }

    /// True when `org` is an admin of this version.
    pub fn is_admin(&self, org: &OrgId) -> bool {
        self.admins.contains(org)
    }

    /// Pretty JSON for roster files.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

fn signing_input(roster: &Roster) -> [u8; 32] {
    wire::hash(ROSTER_SIGN_DOMAIN, &[roster.hash().as_bytes()])
}

impl SignedRoster {
    /// Wraps a roster with no signatures yet.
    pub fn unsigned(roster: Roster) -> SignedRoster {
        SignedRoster {
            roster,
            signatures: Vec::new(),
        }
    }

    /// Adds this node's signature (replacing an earlier one by the same key).
    pub fn sign(&mut self, keys: &NodeKeys) {
        let signer = keys.node_public();
        let signature = keys.sign(&signing_input(&self.roster));
        self.signatures.retain(|s| s.signer != signer);
        self.signatures.push(RosterSignature { signer, signature });
    }

    /// Distinct organisations, admins of `authority`, whose nodes signed
    /// this roster validly. A signer that is not such a node is an error.
    fn admin_signers(&self, authority: &Roster) -> Result<BTreeSet<OrgId>, RosterError> {
        let input = signing_input(&self.roster);
        let mut orgs = BTreeSet::new();
        let mut signers = BTreeSet::new();
        for sig in &self.signatures {
            if !signers.insert(sig.signer) {
                return Err(RosterError::DuplicateSigner(sig.signer));
            }
            let org = match authority.org_of(&sig.signer) {
                Some(org) if authority.is_admin(org) => org.clone(),
                _ => return Err(RosterError::NotAnAdmin(sig.signer)),
            };
            sig.signer
                .verify(&input, &sig.signature)
                .map_err(|_| RosterError::BadSignature(sig.signer))?;
            orgs.insert(org);
        }
        Ok(orgs)
    }

    fn check_threshold(&self, authority: &Roster) -> Result<(), RosterError> {
        let found = self.admin_signers(authority)?.len();
        if found < authority.threshold as usize {
            return Err(RosterError::NotEnoughSignatures {
                found,
                threshold: authority.threshold,
            });
        }
        Ok(())
    }

    /// Verifies a genesis roster: well formed, and signed by at least
    /// `threshold` of its own admins.
    pub fn verify_genesis(&self) -> Result<(), RosterError> {
        let roster = &self.roster;
        if roster.version != 1 || !roster.prev.is_zero() || !roster.consortium.is_zero() {
            return Err(RosterError::NotGenesis);
        }
        roster.check()?;
        self.check_size()?;
        self.check_threshold(roster)
    }

    /// Refuses a signed roster that encodes larger than [`decode`]
    /// accepts, so nothing is stored that cannot be read back.
    ///
    /// [`decode`]: SignedRoster::decode
    pub fn check_size(&self) -> Result<(), RosterError> {
        let size = self.encode().len();
        if size > MAX_ROSTER_BYTES {
            return Err(RosterError::TooLarge {
                size,
                max: MAX_ROSTER_BYTES,
            });
        }
        Ok(())
    }

    /// Verifies `next` as the successor of `current`: version + 1, `prev` =
    /// hash(current), same consortium, well formed, and signed by at least
    /// `current.threshold` distinct admins of `current`.
    pub fn verify_update(current: &Roster, next: &SignedRoster) -> Result<(), RosterError> {
        let roster = &next.roster;
        if roster.version != current.version + 1 {
            return Err(RosterError::BadVersion {
                current: current.version,
                found: roster.version,
            });
        }
        if roster.consortium != current.consortium_id() {
            return Err(RosterError::WrongConsortium {
                expected: current.consortium_id(),
                found: roster.consortium,
            });
        }
        if roster.prev != current.hash() {
            return Err(RosterError::BadPrev {
                expected: current.hash(),
                found: roster.prev,
            });
        }
        if current.green.is_some() && roster.green.is_none() {
            return Err(RosterError::GreenKeyMissing(roster.version));
        }
        roster.check()?;
        next.check_size()?;
        next.check_threshold(current)
    }

    /// Binary encoding (format byte + postcard): format 1 without a GREEN key
    /// package, 2 with one.
    pub fn encode(&self) -> Vec<u8> {
        wire::encode_as(self.roster.format(), self)
    }

    /// Decodes a binary signed roster (structure only; verify separately).
    pub fn decode(bytes: &[u8]) -> Result<SignedRoster, RosterError> {
        match wire::peek_format(bytes, MAX_ROSTER_BYTES)? {
            ROSTER_FORMAT_V1 => {
                let w: SignedRosterV1Wire =
                    wire::decode_as(ROSTER_FORMAT_V1, bytes, MAX_ROSTER_BYTES, true)?;
                let r = w.roster;
                Ok(SignedRoster {
                    roster: Roster {
                        version: r.version,
                        prev: r.prev,
                        consortium: r.consortium,
                        name: r.name,
                        members: r.members,
                        admins: r.admins,
                        threshold: r.threshold,
                        green: None,
                    },
                    signatures: w.signatures,
                })
            }
            // A format-2 roster without a package re-encodes as format 1, so
            // the canonical check refuses it.
            ROSTER_FORMAT_V2 => Ok(wire::decode_as(
                ROSTER_FORMAT_V2,
                bytes,
                MAX_ROSTER_BYTES,
                true,
            )?),
            other => Err(FrameError::UnknownVersion(other).into()),
        }
    }

    /// Pretty JSON for roster files.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses a roster file.
    pub fn from_json(text: &str) -> Result<SignedRoster, RosterError> {
        serde_json::from_str(text).map_err(|e| RosterError::Json(e.to_string()))
    }
}
