//! The envelope: the signed unit that travels and is stored. A header (all
//! fields signed), a payload (plaintext body for CLEAR, ciphertext otherwise)
//! and an ed25519 signature. The id is the hash of the complete encoding.
//!
//! Two header versions exist. Version 1 lists one wrap per recipient node
//! (`recipients`); version 2 has a [`Seal`] instead, which for GREEN is one
//! 48-byte wrap under the roster's epoch key. Both decode forever, and a v1
//! envelope keeps its bytes, id and signature; the header version is the
//! byte after the format byte, so decoding dispatches on it before parsing.

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
/// Length of the content-key wrap of an epoch-sealed envelope
/// (ChaCha20-Poly1305 of a 32-byte key: 32 + 16).
pub const EPOCH_WRAP_LEN: usize = 48;
/// The original header version: one wrap per recipient node.
pub const HEADER_V1: u8 = 1;
/// The current header version: a [`Seal`] (clear, per-node or epoch).
pub const HEADER_V2: u8 = 2;
/// Header version that new envelopes of a consortium with a GREEN key
/// package carry (consortia without one keep writing [`HEADER_V1`]).
pub const HEADER_VERSION: u8 = HEADER_V2;

const SIGN_DOMAIN: &str = "breakwater/envelope/v1";
const ID_DOMAIN: &str = "breakwater/envelope-id/v1";
const HEADER_DOMAIN: &str = "breakwater/header/v1";
const HEADER_DOMAIN_V2: &str = "breakwater/header/v2";

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
    /// A seal that the label does not take: clear for a sealed label, a
    /// per-node or epoch seal for CLEAR, an epoch seal for anything but
    /// GREEN, or an epoch seal in a v1 header.
    #[error("tlp {tlp} cannot be sealed as {seal}")]
    TlpSeal {
        /// The label.
        tlp: Tlp,
        /// The seal's kind.
        seal: &'static str,
    },
    /// An epoch seal names epoch 0 or has a wrap that is not 48 bytes.
    #[error(
        "epoch seal for epoch {epoch} with a {wrap_len}-byte wrap (epochs start at 1, wraps are {EPOCH_WRAP_LEN} bytes)"
    )]
    EpochSeal {
        /// The epoch.
        epoch: u64,
        /// The wrap's length.
        wrap_len: usize,
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

/// How the content key of a sealed envelope travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seal {
    /// TLP:CLEAR: nothing is sealed.
    Clear,
    /// One Noise_N wrap per recipient node (AMBER, AMBER+STRICT, RED; and
    /// GREEN when the author has no epoch key).
    Nodes(Vec<Recipient>),
    /// TLP:GREEN under the epoch key of roster version `epoch`: the content
    /// key, encrypted under a key derived from the epoch key and the header.
    Epoch {
        /// Roster version whose GREEN key seals this envelope.
        epoch: u64,
        /// First 8 bytes of that key's commitment.
        key_id: KeyId,
        /// ChaCha20-Poly1305 of the content key (48 bytes).
        wrap: Vec<u8>,
    },
}

impl Seal {
    /// `clear`, `nodes` or `epoch`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Seal::Clear => "clear",
            Seal::Nodes(_) => "nodes",
            Seal::Epoch { .. } => "epoch",
        }
    }

    /// The per-node wraps (empty unless [`Seal::Nodes`]).
    pub fn recipients(&self) -> &[Recipient] {
        match self {
            Seal::Nodes(recipients) => recipients,
            Seal::Clear | Seal::Epoch { .. } => &[],
        }
    }

    /// The epoch of an epoch seal.
    pub fn epoch(&self) -> Option<u64> {
        match self {
            Seal::Epoch { epoch, .. } => Some(*epoch),
            Seal::Clear | Seal::Nodes(_) => None,
        }
    }

    /// The part of the seal the header hash covers: the variant and, for an
    /// epoch seal, the epoch and key id; never the wraps, which are bound to
    /// the header hash instead.
    fn core(&self) -> SealCore {
        match self {
            Seal::Clear => SealCore::Clear,
            Seal::Nodes(_) => SealCore::Nodes,
            Seal::Epoch { epoch, key_id, .. } => SealCore::Epoch {
                epoch: *epoch,
                key_id: *key_id,
            },
        }
    }
}

#[derive(Serialize)]
enum SealCore {
    Clear,
    Nodes,
    Epoch { epoch: u64, key_id: KeyId },
}

/// The signed header.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// How the content key travels. A v1 header holds only `Clear` or
    /// `Nodes` (its `recipients` list on the wire).
    pub seal: Seal,
}

/// A v1 header as it is on the wire.
#[derive(Serialize, Deserialize)]
struct HeaderV1Wire<R> {
    version: u8,
    consortium: Digest,
    author: NodePublicKey,
    seq: u64,
    prev: Digest,
    created_at: u64,
    expires_at: u64,
    tlp: Tlp,
    kind: Kind,
    recipients: R,
}

/// A v2 header as it is on the wire.
#[derive(Serialize, Deserialize)]
struct HeaderV2Wire<S> {
    version: u8,
    consortium: Digest,
    author: NodePublicKey,
    seq: u64,
    prev: Digest,
    created_at: u64,
    expires_at: u64,
    tlp: Tlp,
    kind: Kind,
    seal: S,
}

impl Serialize for Header {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.version == HEADER_V1 {
            HeaderV1Wire {
                version: self.version,
                consortium: self.consortium,
                author: self.author,
                seq: self.seq,
                prev: self.prev,
                created_at: self.created_at,
                expires_at: self.expires_at,
                tlp: self.tlp,
                kind: self.kind,
                recipients: self.seal.recipients(),
            }
            .serialize(s)
        } else {
            HeaderV2Wire {
                version: self.version,
                consortium: self.consortium,
                author: self.author,
                seq: self.seq,
                prev: self.prev,
                created_at: self.created_at,
                expires_at: self.expires_at,
                tlp: self.tlp,
                kind: self.kind,
                seal: &self.seal,
            }
            .serialize(s)
        }
    }
}

impl From<HeaderV1Wire<Vec<Recipient>>> for Header {
    fn from(h: HeaderV1Wire<Vec<Recipient>>) -> Header {
        Header {
            version: h.version,
            consortium: h.consortium,
            author: h.author,
            seq: h.seq,
            prev: h.prev,
            created_at: h.created_at,
            expires_at: h.expires_at,
            tlp: h.tlp,
            kind: h.kind,
            seal: if h.recipients.is_empty() && !h.tlp.is_sealed() {
                Seal::Clear
            } else {
                Seal::Nodes(h.recipients)
            },
        }
    }
}

impl From<HeaderV2Wire<Seal>> for Header {
    fn from(h: HeaderV2Wire<Seal>) -> Header {
        Header {
            version: h.version,
            consortium: h.consortium,
            author: h.author,
            seq: h.seq,
            prev: h.prev,
            created_at: h.created_at,
            expires_at: h.expires_at,
            tlp: h.tlp,
            kind: h.kind,
            seal: h.seal,
        }
    }
}

/// An envelope as it is on the wire, for one header layout.
#[derive(Serialize, Deserialize)]
struct EnvelopeWire<H> {
    header: H,
    payload: Vec<u8>,
    signature: Signature,
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

/// The v2 header core: the v1 fields plus the seal without its wraps.
#[derive(Serialize)]
struct HeaderCoreV2<'a> {
    core: HeaderCore<'a>,
    seal: SealCore,
}

impl Header {
    /// The header hash: a domain-separated hash of every header field except
    /// the wraps (in v2: including the seal's variant, epoch and key id). It
    /// is the AAD of the body encryption and of every wrap, and part of every
    /// Noise wrap's prologue, so none of them can move to another envelope.
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
        if self.version == HEADER_V1 {
            Digest(wire::hash(HEADER_DOMAIN, &[&wire::encode(&core)]))
        } else {
            let core = HeaderCoreV2 {
                core,
                seal: self.seal.core(),
            };
            Digest(wire::hash(HEADER_DOMAIN_V2, &[&wire::encode(&core)]))
        }
    }
}

/// A complete envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
        wire::peek_format(bytes, MAX_ENVELOPE_BYTES)?;
        // postcard writes a u8 as one byte, so the header version is the byte
        // after the format byte.
        let envelope = match bytes.get(1).copied() {
            Some(HEADER_V1) => {
                let w: EnvelopeWire<HeaderV1Wire<Vec<Recipient>>> =
                    wire::decode(bytes, MAX_ENVELOPE_BYTES, false)?;
                Envelope {
                    header: w.header.into(),
                    payload: w.payload,
                    signature: w.signature,
                }
            }
            Some(HEADER_V2) => {
                let w: EnvelopeWire<HeaderV2Wire<Seal>> =
                    wire::decode(bytes, MAX_ENVELOPE_BYTES, false)?;
                Envelope {
                    header: w.header.into(),
                    payload: w.payload,
                    signature: w.signature,
                }
            }
            Some(version) => return Err(DecodeError::HeaderVersion(version)),
            None => return Err(FrameError::Malformed("missing header".into()).into()),
        };
        if envelope.encode() != bytes {
            return Err(FrameError::NonCanonical.into());
        }
        envelope.check_structure()?;
        Ok(envelope)
    }

    fn check_structure(&self) -> Result<(), DecodeError> {
        let h = &self.header;
        if h.version != HEADER_V1 && h.version != HEADER_V2 {
            return Err(DecodeError::HeaderVersion(h.version));
        }
        match &h.seal {
            Seal::Nodes(recipients) => {
                if recipients.len() > MAX_RECIPIENTS {
                    return Err(DecodeError::TooManyRecipients(recipients.len()));
                }
                if let Some(r) = recipients.iter().find(|r| r.wrap.len() != WRAP_LEN) {
                    return Err(DecodeError::WrapLength(r.wrap.len()));
                }
                if !h.tlp.is_sealed() || recipients.is_empty() {
                    return Err(DecodeError::TlpRecipients {
                        tlp: h.tlp,
                        recipients: recipients.len(),
                    });
                }
            }
            Seal::Clear if h.tlp.is_sealed() => {
                return Err(DecodeError::TlpRecipients {
                    tlp: h.tlp,
                    recipients: 0,
                });
            }
            Seal::Clear => {}
            Seal::Epoch { epoch, wrap, .. } => {
                if h.version == HEADER_V1 || h.tlp != Tlp::Green {
                    return Err(DecodeError::TlpSeal {
                        tlp: h.tlp,
                        seal: h.seal.as_str(),
                    });
                }
                if *epoch == 0 || wrap.len() != EPOCH_WRAP_LEN {
                    return Err(DecodeError::EpochSeal {
                        epoch: *epoch,
                        wrap_len: wrap.len(),
                    });
                }
            }
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
