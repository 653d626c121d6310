//! The envelope: the signed unit that travels and is stored. A header (all
//! fields signed), a payload (plaintext body for CLEAR, ciphertext otherwise)
//! and an ed25519 signature. The id is the hash of the complete encoding.

use serde::{Deserialize, Serialize};

use crate::bytes::{Digest, KeyId, NodePublicKey, Signature};
use crate::keys::NodeKeys;
use crate::tlp::Tlp;
use crate::wire::{self, FrameError};

/// Hard cap on an encoded envelope.
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;
/// Most recipients one envelope may name.
pub const MAX_RECIPIENTS: usize = 2048;
/// Length of one content-key wrap (Noise_N message: e ‖ AEAD(key)).
pub const WRAP_LEN: usize = 80;
/// Header format version.
pub const HEADER_VERSION: u8 = 1;

const SIGN_DOMAIN: &str = "breakwater/envelope/v1";
const ID_DOMAIN: &str = "breakwater/envelope-id/v1";
const HEADER_DOMAIN: &str = "breakwater/header/v1";

/// Why bytes are not a well-formed envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Framing failed: size cap, version byte, postcard, trailing bytes,
    /// non-canonical form.
    #[error("envelope: {0}")]
    Frame(#[from] FrameError),
    /// The header names a version this build does not speak.
    #[error("envelope header version {0} is not supported")]
    HeaderVersion(u8),
    /// Too many recipients.
    #[error("envelope names {0} recipients, more than {MAX_RECIPIENTS}")]
    TooManyRecipients(usize),
    /// A wrap is not 80 bytes.
    #[error("recipient wrap of {0} bytes, expected {WRAP_LEN}")]
    WrapLength(usize),
    /// CLEAR with recipients, or a sealed label without any.
    #[error("tlp {tlp} with {recipients} recipients")]
    TlpRecipients {
        /// The label.
        tlp: Tlp,
        /// How many recipients.
        recipients: usize,
    },
    /// `seq` is zero, or `prev` is not zero exactly when `seq` is 1.
    #[error("seq {seq} does not fit prev {prev}")]
    SeqPrev {
        /// seq.
        seq: u64,
        /// prev.
        prev: Digest,
    },
    /// `expires_at` is not after `created_at`.
    #[error("expires_at {expires_at} is not after created_at {created_at}")]
    Lifetime {
        /// created_at.
        created_at: u64,
        /// expires_at.
        expires_at: u64,
    },
}

/// What an envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A threat bulletin.
    Bulletin,
    /// Withdraws an earlier envelope of the same organisation.
    Retraction {
        /// The withdrawn envelope.
        target: Digest,
    },
    /// Reports that an indicator of an envelope was seen.
    Sighting {
        /// The envelope whose indicator was seen.
        target: Digest,
    },
}

impl Kind {
    /// Short name: `bulletin`, `retraction`, `sighting`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Bulletin => "bulletin",
            Kind::Retraction { .. } => "retraction",
            Kind::Sighting { .. } => "sighting",
        }
    }

    /// The envelope this one refers to, if any.
    pub fn target(&self) -> Option<Digest> {
        match self {
            Kind::Bulletin => None,
            Kind::Retraction { target } | Kind::Sighting { target } => Some(*target),
        }
    }
}

/// One recipient node: which key, and the content key wrapped to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// Id of the recipient's sealing key.
    pub key_id: KeyId,
    /// Noise_N message carrying the content key (80 bytes).
    pub wrap: Vec<u8>,
}

/// The signed header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Header format version.
    pub version: u8,
    /// Consortium id.
    pub consortium: Digest,
    /// Author node key.
    pub author: NodePublicKey,
    /// Per-author sequence number, from 1.
    pub seq: u64,
    /// Id of the author's previous envelope; zero for seq 1.
    pub prev: Digest,
    /// Creation time, unix ms.
    pub created_at: u64,
    /// Expiry time, unix ms.
    pub expires_at: u64,
    /// TLP label.
    pub tlp: Tlp,
    /// Kind (and target).
    pub kind: Kind,
    /// Recipient nodes with their wraps; empty for CLEAR.
    pub recipients: Vec<Recipient>,
}

/// The header fields that the wraps and the body encryption are bound to:
/// everything but the recipients (which are computed from this hash).
#[derive(Serialize)]
struct HeaderCore<'a> {
    version: u8,
    consortium: &'a Digest,
    author: &'a NodePublicKey,
    seq: u64,
    prev: &'a Digest,
    created_at: u64,
    expires_at: u64,
    tlp: Tlp,
    kind: &'a Kind,
}

impl Header {
    /// The header hash: a domain-separated hash of every header field except
    /// the recipient list. It is the AAD of the body encryption and part of
    /// every wrap's Noise prologue, so neither can move to another envelope.
    pub fn core_hash(&self) -> Digest {
        let core = HeaderCore {
            version: self.version,
            consortium: &self.consortium,
            author: &self.author,
            seq: self.seq,
            prev: &self.prev,
            created_at: self.created_at,
            expires_at: self.expires_at,
            tlp: self.tlp,
            kind: &self.kind,
        };
        Digest(wire::hash(HEADER_DOMAIN, &[&wire::encode(&core)]))
    }
}

/// A complete envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Signed header.
    pub header: Header,
    /// Body: plaintext for CLEAR, ChaCha20-Poly1305 ciphertext otherwise.
    pub payload: Vec<u8>,
    /// ed25519 signature by `header.author` over [`Envelope::signing_hash`].
    pub signature: Signature,
}

#[derive(Serialize)]
struct Unsigned<'a> {
    header: &'a Header,
    payload: &'a [u8],
}

impl Envelope {
    /// Signs header and payload with `keys` (whose public key must be the
    /// header's author).
    pub fn sign(header: Header, payload: Vec<u8>, keys: &NodeKeys) -> Envelope {
        let hash = signing_hash(&header, &payload);
        let signature = keys.sign(hash.as_bytes());
        Envelope {
            header,
            payload,
            signature,
        }
    }

    /// The encoding: format byte ‖ postcard(header, payload, signature).
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Length of [`Envelope::encode`].
    pub fn encoded_len(&self) -> usize {
        self.encode().len()
    }

    /// Decodes and checks the structure (not the signature). Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let envelope: Envelope = wire::decode(bytes, MAX_ENVELOPE_BYTES, true)?;
        envelope.check_structure()?;
        Ok(envelope)
    }

    fn check_structure(&self) -> Result<(), DecodeError> {
        let h = &self.header;
        if h.version != HEADER_VERSION {
            return Err(DecodeError::HeaderVersion(h.version));
        }
        if h.recipients.len() > MAX_RECIPIENTS {
            return Err(DecodeError::TooManyRecipients(h.recipients.len()));
        }
        if let Some(r) = h.recipients.iter().find(|r| r.wrap.len() != WRAP_LEN) {
            return Err(DecodeError::WrapLength(r.wrap.len()));
        }
        if h.tlp.is_sealed() == h.recipients.is_empty() {
            return Err(DecodeError::TlpRecipients {
                tlp: h.tlp,
                recipients: h.recipients.len(),
            });
        }
        if h.seq == 0 || (h.seq == 1) != h.prev.is_zero() {
            return Err(DecodeError::SeqPrev {
                seq: h.seq,
                prev: h.prev,
            });
        }
        if h.expires_at <= h.created_at {
            return Err(DecodeError::Lifetime {
                created_at: h.created_at,
                expires_at: h.expires_at,
            });
        }
        Ok(())
    }

    /// The hash the author signs.
    pub fn signing_hash(&self) -> Digest {
        signing_hash(&self.header, &self.payload)
    }

    /// Verifies the author's signature.
    pub fn verify(&self) -> Result<(), crate::keys::KeyError> {
        self.header
            .author
            .verify(self.signing_hash().as_bytes(), &self.signature)
    }

    /// The envelope id: hash of the complete signed encoding.
    pub fn id(&self) -> Digest {
        id_of(&self.encode())
    }
}

fn signing_hash(header: &Header, payload: &[u8]) -> Digest {
    Digest(wire::hash(
        SIGN_DOMAIN,
        &[&wire::encode(&Unsigned { header, payload })],
    ))
}

/// The id of an encoded envelope (valid for canonical encodings, which is all
/// that [`Envelope::decode`] accepts).
pub fn id_of(bytes: &[u8]) -> Digest {
    Digest(wire::hash(ID_DOMAIN, &[bytes]))
}
