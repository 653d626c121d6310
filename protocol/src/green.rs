//! The GREEN epoch key: each roster version from the first keyed one carries
//! a fresh 256-bit key `K`, wrapped once per active node in the roster's
//! [`GreenKeyPackage`]. A GREEN envelope then carries one 48-byte wrap of its
//! content key under `kek = derive_key("breakwater/green-kek/v1", K ‖ header
//! hash)` instead of one wrap per node.
//!
//! The package's wraps are deterministic: the Noise_N ephemeral for a node is
//! derived from `K`, the roster's core hash and the node's sealing key, so
//! anyone who holds `K` can recompute every wrap byte for byte
//! ([`audit_package`]) and catch a proposer who gave different nodes
//! different keys. Pure: the caller draws `K` and passes it in.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use zeroize::Zeroizing;

use crate::bytes::{Digest, KeyId, SealingPublicKey};
use crate::envelope::Recipient;
use crate::keys::NodeKeys;
use crate::roster::{GreenKeyPackage, Roster, RosterError};
use crate::seal::{unwrap_key, wrap_key};
use crate::wire;

const COMMIT_DOMAIN: &str = "breakwater/green-key-commit/v1";
const EPHEMERAL_DOMAIN: &str = "breakwater/green-eph/v1";
const KEK_DOMAIN: &str = "breakwater/green-kek/v1";
/// Noise prologue tag of a package wrap (followed by the roster core hash).
pub(crate) const PACKAGE_PROLOGUE: &[u8] = b"breakwater/green-epoch/v1";

/// The GREEN key of one roster version, as a node holds it in memory.
#[derive(Clone)]
pub struct EpochKey {
    /// The roster version.
    pub epoch: u64,
    /// First 8 bytes of the key's commitment: what envelopes name.
    pub key_id: KeyId,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochKey")
            .field("epoch", &self.epoch)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Epoch keys by roster version.
pub type EpochKeys = BTreeMap<u64, EpochKey>;

/// Why a node cannot take the GREEN key of a roster version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochKeyError {
    /// The version carries no GREEN key package.
    #[error("roster version {0} carries no GREEN key package")]
    NoPackage(u64),
    /// No wrap names this node's sealing key: it is not an active node of
    /// the version (joined later, or revoked).
    #[error("roster version {0} wraps no GREEN key to this node")]
    NotARecipient(u64),
    /// This node's wrap does not open, or opens to a key that does not match
    /// the commitment: the package is forged or broken.
    #[error("the GREEN key package of roster version {0} does not open to its committed key")]
    BadWrap(u64),
    /// A wrap differs from the one the key determines: the proposer gave
    /// some node a different key, or wrapped it to another key.
    #[error(
        "the GREEN key package of roster version {epoch} gives node key {key_id} a different key"
    )]
    Inconsistent {
        /// The roster version.
        epoch: u64,
        /// The wrap that differs.
        key_id: KeyId,
    },
}

impl EpochKey {
    /// Takes `key` as the GREEN key of `roster` (whose package must commit
    /// to it). For the admin who drew the key, and for tests.
    pub fn from_key(roster: &Roster, key: &[u8; 32]) -> Result<EpochKey, EpochKeyError> {
        let package = roster
            .green
            .as_ref()
            .ok_or(EpochKeyError::NoPackage(roster.version))?;
        let commit = commit(key, &roster.core_hash());
        if commit != package.commit {
            return Err(EpochKeyError::BadWrap(roster.version));
        }
        Ok(EpochKey {
            epoch: roster.version,
            key_id: key_id_of(&commit),
            key: Zeroizing::new(*key),
        })
    }

    /// The key-encryption key for one envelope's content key.
    pub(crate) fn kek(&self, header_hash: &Digest) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(wire::hash(
            KEK_DOMAIN,
            &[self.key.as_ref(), header_hash.as_bytes()],
        ))
    }

    /// Encrypts a content key for the header `header_hash` (48 bytes).
    pub(crate) fn wrap_content_key(
        &self,
        header_hash: &Digest,
        content_key: &[u8; 32],
    ) -> Option<Vec<u8>> {
        let kek = self.kek(header_hash);
        ChaCha20Poly1305::new(Key::from_slice(kek.as_ref()))
            .encrypt(
                Nonce::from_slice(&[0u8; 12]),
                Payload {
                    msg: content_key,
                    aad: header_hash.as_bytes(),
                },
            )
            .ok()
    }

    /// Decrypts a content key wrapped by [`EpochKey::wrap_content_key`].
    pub(crate) fn unwrap_content_key(
        &self,
        header_hash: &Digest,
        wrap: &[u8],
    ) -> Option<Zeroizing<[u8; 32]>> {
        let kek = self.kek(header_hash);
        let plain = Zeroizing::new(
            ChaCha20Poly1305::new(Key::from_slice(kek.as_ref()))
                .decrypt(
                    Nonce::from_slice(&[0u8; 12]),
                    Payload {
                        msg: wrap,
                        aad: header_hash.as_bytes(),
                    },
                )
                .ok()?,
        );
        let key: [u8; 32] = plain.as_slice().try_into().ok()?;
        Some(Zeroizing::new(key))
    }
}

fn commit(key: &[u8; 32], core_hash: &Digest) -> Digest {
    Digest(wire::hash(COMMIT_DOMAIN, &[key, core_hash.as_bytes()]))
}

fn key_id_of(commit: &Digest) -> KeyId {
    let mut id = [0u8; 8];
    id.copy_from_slice(&commit.0[..8]);
    KeyId(id)
}

fn prologue(core_hash: &Digest) -> Vec<u8> {
    [PACKAGE_PROLOGUE, core_hash.as_bytes().as_slice()].concat()
}

fn wrap_for(
    key: &[u8; 32],
    core_hash: &Digest,
    sealing_key: &SealingPublicKey,
) -> Result<Vec<u8>, RosterError> {
    let ephemeral = Zeroizing::new(wire::hash(
        EPHEMERAL_DOMAIN,
        &[key, core_hash.as_bytes(), sealing_key.as_bytes()],
    ));
    wrap_key(key, sealing_key, &prologue(core_hash), *ephemeral)
        .map_err(|e| RosterError::GreenPackage(e.to_string()))
}

/// The package of `roster` (whose `green` is ignored) for `key`: one
/// deterministic wrap per active node, sorted by key id.
pub(crate) fn package(roster: &Roster, key: &[u8; 32]) -> Result<GreenKeyPackage, RosterError> {
    let core_hash = roster.core_hash();
    let mut wraps = roster
        .active_nodes()
        .map(|(_, node)| {
            Ok(Recipient {
                key_id: node.sealing_key.key_id(),
                wrap: wrap_for(key, &core_hash, &node.sealing_key)?,
            })
        })
        .collect::<Result<Vec<_>, RosterError>>()?;
    wraps.sort_by_key(|w| w.key_id);
    Ok(GreenKeyPackage {
        commit: commit(key, &core_hash),
        wraps,
    })
}

/// Opens this node's wrap in `roster`'s package and checks it against the
/// commitment: one X25519.
pub fn open_epoch_key(roster: &Roster, keys: &NodeKeys) -> Result<EpochKey, EpochKeyError> {
    let epoch = roster.version;
    let package = roster
        .green
        .as_ref()
        .ok_or(EpochKeyError::NoPackage(epoch))?;
    let public = keys.sealing_public();
    let key_id = public.key_id();
    let wrap = package
        .wraps
        .iter()
        .find(|w| w.key_id == key_id)
        .ok_or(EpochKeyError::NotARecipient(epoch))?;
    let core_hash = roster.core_hash();
    let secret = Zeroizing::new(keys.sealing_secret().to_bytes());
    let key = unwrap_key(&wrap.wrap, &secret, &public, &prologue(&core_hash))
        .ok_or(EpochKeyError::BadWrap(epoch))?;
    EpochKey::from_key(roster, &key)
}

/// Recomputes every wrap of `roster`'s package from `key` and compares them
/// byte for byte: any holder of the key can tell whether every active node
/// was given the same key. Two X25519 per node.
pub fn audit_package(roster: &Roster, key: &EpochKey) -> Result<(), EpochKeyError> {
    let epoch = roster.version;
    let package = roster
        .green
        .as_ref()
        .ok_or(EpochKeyError::NoPackage(epoch))?;
    let core_hash = roster.core_hash();
    if commit(&key.key, &core_hash) != package.commit {
        return Err(EpochKeyError::BadWrap(epoch));
    }
    let mut by_id: BTreeMap<KeyId, &SealingPublicKey> = BTreeMap::new();
    let nodes: Vec<_> = roster.active_nodes().map(|(_, n)| n.sealing_key).collect();
    for sealing_key in &nodes {
        by_id.insert(sealing_key.key_id(), sealing_key);
    }
    for wrap in &package.wraps {
        let Some(sealing_key) = by_id.get(&wrap.key_id) else {
            return Err(EpochKeyError::Inconsistent {
                epoch,
                key_id: wrap.key_id,
            });
        };
        let expected = wrap_for(&key.key, &core_hash, sealing_key).map_err(|_| {
            EpochKeyError::Inconsistent {
                epoch,
                key_id: wrap.key_id,
            }
        })?;
        if expected != wrap.wrap {
            return Err(EpochKeyError::Inconsistent {
                epoch,
                key_id: wrap.key_id,
            });
        }
    }
    Ok(())
}
