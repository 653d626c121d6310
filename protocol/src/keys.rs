//! Node identities: the ed25519 node key (libp2p PeerId, envelope signatures)
//! and the static X25519 sealing key (content-key wrapping). Secrets encode to
//! and from a small JSON document; writing it to disk with safe permissions is
//! the node's job, since this crate does no I/O.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

/// The canonical encodings of the low-order points of Curve25519 and its
/// twist: see [`SealingPublicKey::is_valid`].
const LOW_ORDER: [[u8; 32]; 5] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

use crate::bytes::{KeyId, NodePublicKey, SealingPublicKey, Signature};
use crate::wire;

/// Why a key could not be loaded or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The secret-key document is not valid JSON of the expected shape.
    #[error("malformed secret key file: {0}")]
    Malformed(String),
    /// A key field did not hold 32 hex-encoded bytes.
    #[error("secret key field {field} is not 32 hex-encoded bytes")]
    BadField {
        /// The field name.
        field: &'static str,
    },
    /// The bytes are not a valid ed25519 public key.
    #[error("not a valid ed25519 public key")]
    BadPublicKey,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// The secret keys of one node.
#[derive(Clone)]
pub struct NodeKeys {
    node: SigningKey,
    sealing: StaticSecret,
    sealing_public: SealingPublicKey,
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKeys")
            .field("node", &self.node_public())
            .field("sealing", &self.sealing_public())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct SecretFile {
    node_key: String,
    sealing_key: String,
}

impl NodeKeys {
    /// Generates fresh keys from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> NodeKeys {
        let mut node = Zeroizing::new([0u8; 32]);
        let mut sealing = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(node.as_mut());
        rng.fill_bytes(sealing.as_mut());
        NodeKeys::from_secret_bytes(*node, *sealing)
    }

    /// Derives both keys from one 32-byte seed (tests and fixed vectors).
    pub fn from_seed(seed: [u8; 32]) -> NodeKeys {
        let node = wire::hash("breakwater/seed/node-key/v1", &[&seed]);
        let sealing = wire::hash("breakwater/seed/sealing-key/v1", &[&seed]);
        NodeKeys::from_secret_bytes(node, sealing)
    }

    /// Builds keys from raw secret bytes.
    pub fn from_secret_bytes(node: [u8; 32], sealing: [u8; 32]) -> NodeKeys {
        let sealing = StaticSecret::from(sealing);
        let sealing_public = SealingPublicKey(x25519_dalek::PublicKey::from(&sealing).to_bytes());
        NodeKeys {
            node: SigningKey::from_bytes(&node),
            sealing,
            sealing_public,
        }
    }

    /// The node's public key.
    pub fn node_public(&self) -> NodePublicKey {
        NodePublicKey(self.node.verifying_key().to_bytes())
    }

    /// The node's sealing public key.
    pub fn sealing_public(&self) -> SealingPublicKey {
        self.sealing_public
    }

    /// The libp2p identity of this node.
    pub fn libp2p_keypair(&self) -> libp2p_identity::Keypair {
        let mut secret = self.node.to_bytes();
        // A 32-byte ed25519 secret is always accepted.
        match libp2p_identity::Keypair::ed25519_from_bytes(&mut secret) {
            Ok(keypair) => keypair,
            Err(_) => unreachable_keypair(),
        }
    }

    /// The libp2p PeerId of this node.
    pub fn peer_id(&self) -> PeerId {
        self.libp2p_keypair().public().to_peer_id()
    }

    /// The X25519 secret, for opening envelopes.
    pub fn sealing_secret(&self) -> &StaticSecret {
        &self.sealing
    }

    /// Signs `message` with the node key.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.node.sign(message).to_bytes())
    }

    /// The secret-key document (JSON). Whoever writes it must make the file
    /// readable by its owner only.
    pub fn to_secret_json(&self) -> Zeroizing<String> {
        let file = SecretFile {
            node_key: hex::encode(self.node.to_bytes()),
            sealing_key: hex::encode(self.sealing.to_bytes()),
        };
        Zeroizing::new(serde_json::to_string_pretty(&file).unwrap_or_default())
    }

    /// Parses a secret-key document written by [`NodeKeys::to_secret_json`].
    pub fn from_secret_json(text: &str) -> Result<NodeKeys, KeyError> {
        let file: SecretFile =
            serde_json::from_str(text).map_err(|e| KeyError::Malformed(e.to_string()))?;
        let field = |value: &str, field: &'static str| -> Result<[u8; 32], KeyError> {
            let raw = Zeroizing::new(hex::decode(value).map_err(|_| KeyError::BadField { field })?);
            <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| KeyError::BadField { field })
        };
        let node = Zeroizing::new(field(&file.node_key, "node_key")?);
        let sealing = Zeroizing::new(field(&file.sealing_key, "sealing_key")?);
        Ok(NodeKeys::from_secret_bytes(*node, *sealing))
    }
}

#[allow(clippy::panic)]
fn unreachable_keypair() -> libp2p_identity::Keypair {
    panic!("a 32-byte ed25519 secret is always a valid libp2p keypair") // ok: not reachable from input
}

impl NodePublicKey {
    /// The libp2p PeerId for this key, or `None` if the bytes are not a
    /// valid ed25519 point (rosters never admit such keys).
    pub fn peer_id(&self) -> Option<PeerId> {
        let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.0).ok()?;
        Some(libp2p_identity::PublicKey::from(key).to_peer_id())
    }

    /// True when the bytes are a valid ed25519 public key.
    pub fn is_valid(&self) -> bool {
        VerifyingKey::from_bytes(&self.0).is_ok()
    }

    /// Recovers the node key behind a PeerId, if it is an ed25519 identity.
    pub fn from_peer_id(peer: &PeerId) -> Option<NodePublicKey> {
        let multihash = peer.as_ref();
        if multihash.code() != 0 {
            return None;
        }
        let public = libp2p_identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
        let ed = public.try_into_ed25519().ok()?;
        Some(NodePublicKey(ed.to_bytes()))
    }

    /// Verifies an ed25519 signature by this key (strict: no malleable forms).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), KeyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::BadPublicKey)?;
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &signature)
            .map_err(|_| KeyError::BadSignature)
    }
}

impl SealingPublicKey {
    /// True for a canonical X25519 public key that is not of low order:
    /// the top bit clear (X25519 ignores it, so a set bit would be a second
    /// spelling of another key), below the field prime, and not one of the
    /// points (all-zero among them) whose shared secret with any private
    /// key is zero, which would make every wrap to it readable by anyone.
    pub fn is_valid(&self) -> bool {
        let u = &self.0;
        if u[31] & 0x80 != 0 {
            return false;
        }
        let at_least_p = u[31] == 0x7f && u[1..31].iter().all(|&b| b == 0xff) && u[0] >= 0xed;
        if at_least_p {
            return false;
        }
        // Clamped scalars are multiples of the cofactor 8, so exactly the
        // points of order dividing 8 on the curve, or 4 on its twist, map to
        // zero: u = 0, 1, p − 1 and the two u of the points of order 8 (the
        // list libsodium blocks). A comparison, not a scalar multiplication:
        // a node checks every key of a roster when it starts.
        !LOW_ORDER.contains(u)
    }

    /// The short id recipients are listed under in a header.
    pub fn key_id(&self) -> KeyId {
        let hash = wire::hash("breakwater/key-id/v1", &[&self.0]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&hash[..8]);
        KeyId(id)
    }
}
