//! Sealing by TLP 2.0: the body is encrypted with a fresh content key
//! (ChaCha20-Poly1305, AAD = header hash). The key is wrapped once per
//! recipient node with a one-way Noise handshake
//! (`Noise_N_25519_ChaChaPoly_BLAKE2s`, prologue = domain tag ‖ header hash),
//! or, for GREEN in a consortium whose roster carries a GREEN key package,
//! once under the roster's epoch key ([`crate::green`]).

use std::collections::BTreeSet;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand_core::CryptoRng;
use snow::params::NoiseParams;
use snow::resolvers::{BoxedCryptoResolver, CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::body::{Body, BodyError};
use crate::bytes::{Digest, SealingPublicKey};
use crate::card::OrgId;
use crate::envelope::{
    Envelope, HEADER_V1, HEADER_V2, Header, Kind, MAX_ENVELOPE_BYTES, MAX_RECIPIENTS, Recipient,
    Seal,
};
use crate::green::{EpochKey, EpochKeys, open_epoch_key};
use crate::keys::NodeKeys;
use crate::roster::{Roster, RosterError};
use crate::tlp::Tlp;

const NOISE_PATTERN: &str = "Noise_N_25519_ChaChaPoly_BLAKE2s";
const WRAP_PROLOGUE: &[u8] = b"breakwater/wrap/v1";

/// Why an envelope could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The author is not an active member.
    #[error("author node is not an active member of the roster")]
    NotAMember,
    /// An organisation named in `to` is unknown or revoked.
    #[error(transparent)]
    Roster(#[from] RosterError),
    /// Named recipients with a label that does not take them.
    #[error("tlp {0} does not take named recipients (only amber, amber+strict and red do)")]
    RecipientsNotAllowed(Tlp),
    /// The body does not match the header's kind.
    #[error("a {kind} envelope needs a {kind} body")]
    KindMismatch {
        /// The kind.
        kind: &'static str,
    },
    /// The body is invalid.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// Too many recipients.
    #[error("{0} recipients, more than {MAX_RECIPIENTS}")]
    TooManyRecipients(usize),
    /// The envelope would exceed the size cap.
    #[error("envelope would be {0} bytes, more than the 256 KiB cap")]
    TooLarge(usize),
    /// Lifetime is empty.
    #[error("expires_at must be after created_at")]
    Lifetime,
    /// `seq`/`prev` are inconsistent.
    #[error("seq must start at 1 and prev must be zero exactly for seq 1")]
    SeqPrev,
    /// The Noise or AEAD layer failed.
    #[error("crypto failure: {0}")]
    Crypto(String),
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// This node's key is not among the recipients (or no wrap opens).
    #[error("this node is not a recipient")]
    NotARecipient,
    /// The payload does not decrypt under the unwrapped key and this header.
    #[error("payload does not decrypt")]
    Decrypt,
    /// The plaintext is not a valid body.
    #[error("malformed body: {0}")]
    Body(String),
    /// Sealed under the GREEN key of a roster version this node does not
    /// hold a key for (yet: the roster may still be on its way).
    #[error("no GREEN key for epoch {0}")]
    NoEpochKey(u64),
    /// The envelope names a key id that is not the one this node holds for
    /// its epoch: the author used a forked roster.
    #[error("GREEN key id of epoch {0} differs from the roster's")]
    EpochKeyMismatch(u64),
}

/// What the author wants to send; [`seal`] turns it into an envelope.
#[derive(Debug, Clone)]
pub struct Draft {
    /// This author's next seq.
    pub seq: u64,
    /// Id of this author's previous envelope (zero for seq 1).
    pub prev: Digest,
    /// Unix ms.
    pub created_at: u64,
    /// Unix ms.
    pub expires_at: u64,
    /// Label.
    pub tlp: Tlp,
    /// Kind (and target).
    pub kind: Kind,
    /// Plaintext.
    pub body: Body,
}

/// The recipient nodes for `tlp`: none for CLEAR, every active node for
/// GREEN, the named organisations' nodes for AMBER, AMBER+STRICT and RED. The
/// author's own organisation is always included when sealed.
pub fn recipients_for(
    roster: &Roster,
    author: &crate::bytes::NodePublicKey,
    tlp: Tlp,
    to: &[OrgId],
) -> Result<Vec<SealingPublicKey>, SealError> {
    let author_org = roster.org_of(author).ok_or(SealError::NotAMember)?;
    if !to.is_empty() && !tlp.names_recipients() {
        return Err(SealError::RecipientsNotAllowed(tlp));
    }
    let keys = match tlp {
        Tlp::Clear => Vec::new(),
        Tlp::Green => roster.all_sealing_keys(),
        Tlp::Amber | Tlp::AmberStrict | Tlp::Red => {
            let mut keys = roster.sealing_keys_of(author_org)?;
            for org in to {
                keys.extend(roster.sealing_keys_of(org)?);
            }
            keys
        }
    };
    let mut seen = BTreeSet::new();
    Ok(keys.into_iter().filter(|k| seen.insert(*k)).collect())
}

/// Seals `draft` for the recipients its TLP and `to` imply under `roster`.
/// GREEN goes under the roster's epoch key when it has one (opened here from
/// `keys`: one X25519; a node that seals often keeps the key and calls
/// [`seal_with`]).
pub fn seal<R: CryptoRng + ?Sized>(
    keys: &NodeKeys,
    roster: &Roster,
    draft: Draft,
    to: &[OrgId],
    rng: &mut R,
) -> Result<Envelope, SealError> {
    let epoch_key = if draft.tlp == Tlp::Green {
        open_epoch_key(roster, keys).ok()
    } else {
        None
    };
    seal_with(keys, roster, epoch_key.as_ref(), draft, to, rng)
}

/// [`seal`] with the author's GREEN key of `roster` already at hand (`None`
/// when the roster has no package, or this node's wrap is unusable: GREEN
/// then falls back to one wrap per node).
pub fn seal_with<R: CryptoRng + ?Sized>(
    keys: &NodeKeys,
    roster: &Roster,
    epoch_key: Option<&EpochKey>,
    draft: Draft,
    to: &[OrgId],
    rng: &mut R,
) -> Result<Envelope, SealError> {
    let consortium = roster.consortium_id();
    seal_with_in(keys, roster, consortium, epoch_key, draft, to, rng)
}

/// [`seal_with`] with `roster`'s consortium id computed once by the caller:
/// for a genesis roster it is the hash of the whole roster (tens of KB with
/// a GREEN key package), which a node should not recompute per envelope.
pub fn seal_with_in<R: CryptoRng + ?Sized>(
    keys: &NodeKeys,
    roster: &Roster,
    consortium: Digest,
    epoch_key: Option<&EpochKey>,
    draft: Draft,
    to: &[OrgId],
    rng: &mut R,
) -> Result<Envelope, SealError> {
    let epoch_key = epoch_key.filter(|_| draft.tlp == Tlp::Green && roster.green.is_some());
    let recipients = match epoch_key {
        // Only the membership check is needed: the epoch key covers everyone.
        Some(_) => {
            if !to.is_empty() {
                return Err(SealError::RecipientsNotAllowed(draft.tlp));
            }
            roster
                .org_of(&keys.node_public())
                .ok_or(SealError::NotAMember)?;
            Vec::new()
        }
        None => recipients_for(roster, &keys.node_public(), draft.tlp, to)?,
    };
    seal_to_in(keys, roster, consortium, epoch_key, draft, &recipients, rng)
}

/// Seals `draft` for exactly `recipients` (used for retractions and
/// sightings, which go to the recipients of their target), or, for GREEN
/// with an `epoch_key`, under that key. The header is v2 when `roster`
/// carries a GREEN key package (the consortium is past its flag day), v1
/// otherwise.
pub fn seal_to<R: CryptoRng + ?Sized>(
    keys: &NodeKeys,
    roster: &Roster,
    epoch_key: Option<&EpochKey>,
    draft: Draft,
    recipients: &[SealingPublicKey],
    rng: &mut R,
) -> Result<Envelope, SealError> {
    let consortium = roster.consortium_id();
    seal_to_in(keys, roster, consortium, epoch_key, draft, recipients, rng)
}

/// [`seal_to`] with `roster`'s consortium id computed once by the caller.
pub fn seal_to_in<R: CryptoRng + ?Sized>(
    keys: &NodeKeys,
    roster: &Roster,
    consortium: Digest,
    epoch_key: Option<&EpochKey>,
    draft: Draft,
    recipients: &[SealingPublicKey],
    rng: &mut R,
) -> Result<Envelope, SealError> {
    if !draft.body.matches(&draft.kind) {
        return Err(SealError::KindMismatch {
            kind: draft.kind.as_str(),
        });
    }
    draft.body.check()?;
    if draft.expires_at <= draft.created_at {
        return Err(SealError::Lifetime);
    }
    if draft.seq == 0 || (draft.seq == 1) != draft.prev.is_zero() {
        return Err(SealError::SeqPrev);
    }
    if recipients.len() > MAX_RECIPIENTS {
        return Err(SealError::TooManyRecipients(recipients.len()));
    }
    let keyed = roster.green.is_some();
    let epoch_key = epoch_key.filter(|_| keyed && draft.tlp == Tlp::Green);
    let mut header = Header {
        version: if keyed { HEADER_V2 } else { HEADER_V1 },
        consortium,
        author: keys.node_public(),
        seq: draft.seq,
        prev: draft.prev,
        created_at: draft.created_at,
        expires_at: draft.expires_at,
        tlp: draft.tlp,
        kind: draft.kind,
        seal: match (draft.tlp.is_sealed(), epoch_key) {
            (false, _) => Seal::Clear,
            (true, None) => Seal::Nodes(Vec::new()),
            (true, Some(key)) => Seal::Epoch {
                epoch: key.epoch,
                key_id: key.key_id,
                wrap: Vec::new(),
            },
        },
    };
    let plaintext = Zeroizing::new(draft.body.encode());
    let payload = if draft.tlp.is_sealed() {
        let header_hash = header.core_hash();
        let mut content_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(content_key.as_mut());
        match (&mut header.seal, epoch_key) {
            (Seal::Epoch { wrap, .. }, Some(key)) => {
                *wrap = key
                    .wrap_content_key(&header_hash, &content_key)
                    .ok_or_else(|| SealError::Crypto("epoch wrap failed".into()))?;
            }
            (seal, _) => {
                let prologue = prologue(&header_hash);
                let mut wraps = Vec::with_capacity(recipients.len());
                for recipient in recipients {
                    let mut ephemeral = Zeroizing::new([0u8; 32]);
                    rng.fill_bytes(ephemeral.as_mut());
                    let wrap = wrap_key(&content_key, recipient, &prologue, *ephemeral)?;
                    wraps.push(Recipient {
                        key_id: recipient.key_id(),
                        wrap,
                    });
                }
                *seal = Seal::Nodes(wraps);
            }
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(content_key.as_ref()));
        cipher
            .encrypt(
                Nonce::from_slice(&[0u8; 12]),
                Payload {
                    msg: &plaintext,
                    aad: header_hash.as_bytes(),
                },
            )
            .map_err(|_| SealError::Crypto("body encryption failed".into()))?
    } else {
        plaintext.to_vec()
    };
    let envelope = Envelope::sign(header, payload, keys);
    let len = envelope.encoded_len();
    if len > MAX_ENVELOPE_BYTES {
        return Err(SealError::TooLarge(len));
    }
    Ok(envelope)
}

/// Opens an envelope as the node holding `keys`, without epoch keys: an
/// epoch-sealed envelope gives [`OpenError::NoEpochKey`]. Does not verify the
/// signature: validate first.
pub fn open(envelope: &Envelope, keys: &NodeKeys) -> Result<Body, OpenError> {
    open_with(envelope, keys, &EpochKeys::new())
}

/// Opens an envelope as the node holding `keys` and the GREEN keys
/// `epoch_keys`. For CLEAR it just decodes the body. Does not verify the
/// signature: validate first.
pub fn open_with(
    envelope: &Envelope,
    keys: &NodeKeys,
    epoch_keys: &EpochKeys,
) -> Result<Body, OpenError> {
    let header = &envelope.header;
    let header_hash = || header.core_hash();
    let content_key = match &header.seal {
        Seal::Clear => None,
        Seal::Nodes(recipients) => {
            let public = keys.sealing_public();
            let key_id = public.key_id();
            let header_hash = header_hash();
            let prologue = prologue(&header_hash);
            let secret = Zeroizing::new(keys.sealing_secret().to_bytes());
            let key = recipients
                .iter()
                .filter(|r| r.key_id == key_id)
                .find_map(|r| unwrap_key(&r.wrap, &secret, &public, &prologue))
                .ok_or(OpenError::NotARecipient)?;
            Some((key, header_hash))
        }
        Seal::Epoch {
            epoch,
            key_id,
            wrap,
        } => {
            let epoch_key = epoch_keys.get(epoch).ok_or(OpenError::NoEpochKey(*epoch))?;
            if epoch_key.key_id != *key_id {
                return Err(OpenError::EpochKeyMismatch(*epoch));
            }
            let header_hash = header_hash();
            let key = epoch_key
                .unwrap_content_key(&header_hash, wrap)
                .ok_or(OpenError::Decrypt)?;
            Some((key, header_hash))
        }
    };
    let plaintext = match content_key {
        Some((content_key, header_hash)) => {
            let cipher = ChaCha20Poly1305::new(Key::from_slice(content_key.as_ref()));
            Zeroizing::new(
                cipher
                    .decrypt(
                        Nonce::from_slice(&[0u8; 12]),
                        Payload {
                            msg: &envelope.payload,
                            aad: header_hash.as_bytes(),
                        },
                    )
                    .map_err(|_| OpenError::Decrypt)?,
            )
        }
        None => Zeroizing::new(envelope.payload.clone()),
    };
    Body::decode_for(&plaintext, &header.kind).map_err(OpenError::Body)
}

fn noise_params() -> Result<NoiseParams, snow::Error> {
    NOISE_PATTERN.parse()
}

fn prologue(header_hash: &Digest) -> Vec<u8> {
    [WRAP_PROLOGUE, header_hash.as_bytes().as_slice()].concat()
}

/// One Noise_N message carrying `content_key` to `recipient`, with the
/// initiator's ephemeral secret `ephemeral`.
pub(crate) fn wrap_key(
    content_key: &[u8; 32],
    recipient: &SealingPublicKey,
    prologue: &[u8],
    ephemeral: [u8; 32],
) -> Result<Vec<u8>, SealError> {
    let crypto = |e: snow::Error| SealError::Crypto(e.to_string());
    let resolver: BoxedCryptoResolver = Box::new(Resolver {
        ephemeral: Some(Zeroizing::new(ephemeral)),
        own: None,
    });
    let mut handshake = snow::Builder::with_resolver(noise_params().map_err(crypto)?, resolver)
        .remote_public_key(recipient.as_bytes())
        .map_err(crypto)?
        .prologue(prologue)
        .map_err(crypto)?
        .build_initiator()
        .map_err(crypto)?;
    let mut wrap = vec![0u8; crate::envelope::WRAP_LEN];
    let len = handshake
        .write_message(content_key, &mut wrap)
        .map_err(crypto)?;
    wrap.truncate(len);
    Ok(wrap)
}

/// Reads a wrap made by [`wrap_key`] with the recipient's secret.
pub(crate) fn unwrap_key(
    wrap: &[u8],
    secret: &[u8; 32],
    public: &SealingPublicKey,
    prologue: &[u8],
) -> Option<Zeroizing<[u8; 32]>> {
    let resolver: BoxedCryptoResolver = Box::new(Resolver {
        ephemeral: None,
        own: Some((Zeroizing::new(*secret), public.0)),
    });
    let mut handshake = snow::Builder::with_resolver(noise_params().ok()?, resolver)
        .local_private_key(secret)
        .ok()?
        .prologue(prologue)
        .ok()?
        .build_responder()
        .ok()?;
    let mut key = Zeroizing::new([0u8; 64]);
    let len = handshake.read_message(wrap, key.as_mut()).ok()?;
    if len != 32 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&key[..32]);
    Some(out)
}

/// snow's default hash and cipher with two changes. The one random value a
/// Noise_N initiator draws (its ephemeral key) comes from the caller's RNG,
/// so sealing is deterministic given the RNG and this crate never touches the
/// OS. And X25519 is x25519-dalek's (with precomputed base-point tables), told
/// our own public key when it is known, so the responder does not derive it.
struct Resolver {
    ephemeral: Option<Zeroizing<[u8; 32]>>,
    own: Option<(Zeroizing<[u8; 32]>, [u8; 32])>,
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        // A Noise_N responder draws nothing; its "RNG" refuses if asked.
        Some(Box::new(FixedBytes {
            bytes: self.ephemeral.clone(),
        }))
    }
    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            snow::params::DHChoice::Curve25519 => Some(Box::new(X25519 {
                private: Zeroizing::new([0; 32]),
                public: [0; 32],
                own: self.own.clone(),
            })),
            _ => None,
        }
    }
    fn resolve_hash(&self, choice: &snow::params::HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &snow::params::CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// X25519 for snow, on x25519-dalek.
struct X25519 {
    private: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    own: Option<(Zeroizing<[u8; 32]>, [u8; 32])>,
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        let mut private = Zeroizing::new([0u8; 32]);
        let len = privkey.len().min(32);
        private[..len].copy_from_slice(&privkey[..len]);
        self.public = match &self.own {
            Some((own_private, own_public)) if **own_private == *private => *own_public,
            _ => x25519_dalek::PublicKey::from(&StaticSecret::from(*private)).to_bytes(),
        };
        self.private = private;
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut private = Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(private.as_mut())?;
        self.set(private.as_ref());
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        self.private.as_ref()
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let public: [u8; 32] = pubkey
            .get(..32)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let shared = StaticSecret::from(*self.private)
            .diffie_hellman(&x25519_dalek::PublicKey::from(public));
        let target = out.get_mut(..32).ok_or(snow::Error::Dh)?;
        target.copy_from_slice(shared.as_bytes());
        Ok(())
    }
}

struct FixedBytes {
    bytes: Option<Zeroizing<[u8; 32]>>,
}

impl Random for FixedBytes {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        match (&self.bytes, dest.len()) {
            (Some(bytes), 32) => {
                dest.copy_from_slice(bytes.as_ref());
                Ok(())
            }
            _ => Err(snow::Error::Rng),
        }
    }
}
