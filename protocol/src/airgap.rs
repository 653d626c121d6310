//! The air-gap bundle file: ciphertext envelopes and the signed rosters
//! they need, in one file that a USB key carries to a node with no network
//! path to the mesh. Pure encode and decode: the file carries exactly the
//! bytes sync carries (nothing is opened or re-sealed), decoding never
//! panics, and a truncated or tampered file is refused item by item with a
//! reason. The node's `export envelopes` is a thin wrapper around
//! [`Writer`], and its `import` around [`decode`]: apply
//! [`Decoded::rosters`] in version order as roster sync does, hand each of
//! [`Decoded::envelopes`] to the same validation as sync, and count the
//! outcomes in an [`ImportTally`].
//!
//! Layout (integers big-endian):
//!
//! ```text
//! magic "BWAIRGAP" (8) ‖ version u8 = 1 ‖ count u32 ‖ count × item
//! item = kind u8 (1 signed roster, 2 envelope) ‖ len u32 ‖ len bytes
//! ```

use std::fmt;

use crate::bytes::{Digest, NodePublicKey};
use crate::envelope::{DecodeError, Envelope, MAX_ENVELOPE_BYTES};
use crate::roster::{MAX_ROSTER_BYTES, RosterError, SignedRoster};
use crate::tlp::Tlp;

/// The first 8 bytes of every air-gap file.
pub const MAGIC: [u8; 8] = *b"BWAIRGAP";
/// The file format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Bytes before the first item: magic, version, count.
pub const HEADER_LEN: usize = 8 + 1 + 4;
/// Bytes before an item's content: kind, length.
pub const ITEM_HEADER_LEN: usize = 1 + 4;
/// Most items one file may hold.
pub const MAX_ITEMS: u32 = 1_000_000;
/// Largest file accepted (1 GiB); check a file's size with
/// [`check_file_size`] before reading it.
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Item kind of a signed roster (its binary encoding).
pub const KIND_ROSTER: u8 = 1;
/// Item kind of an envelope (its canonical encoding).
pub const KIND_ENVELOPE: u8 = 2;

/// Why a whole file is refused (nothing in it is looked at).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Shorter than the header.
    #[error("not a Breakwater air-gap file: {0} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
    /// The magic bytes are wrong.
    #[error("not a Breakwater air-gap file (wrong magic bytes)")]
    BadMagic,
    /// A format version this build does not read.
    #[error(
        "air-gap file format version {0} is not supported (this build reads version {VERSION})"
    )]
    Version(u8),
    /// The header declares more items than a file may hold.
    #[error("air-gap file declares {0} items, more than {MAX_ITEMS}")]
    TooManyItems(u32),
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("air-gap file of {0} bytes exceeds the {MAX_FILE_BYTES}-byte limit")]
    TooLarge(u64),
}

/// Refuses a file larger than [`MAX_FILE_BYTES`] before it is read.
pub fn check_file_size(len: u64) -> Result<(), FileError> {
    if len > MAX_FILE_BYTES {
        return Err(FileError::TooLarge(len));
    }
    Ok(())
}

/// Why one item is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// The file ends inside the item.
    #[error("truncated: the item needs {needed} bytes, {left} are left")]
    Truncated {
        /// Bytes the item header says (or the header itself needs).
        needed: usize,
        /// Bytes left in the file.
        left: usize,
    },
    /// The item is larger than any item of its kind may be.
    #[error("item of {len} bytes exceeds the {cap}-byte limit for its kind")]
    TooLarge {
        /// Its declared length.
        len: usize,
        /// The cap.
        cap: usize,
    },
    /// An item kind this build does not know.
    #[error("unknown item kind {0}")]
    UnknownKind(u8),
    /// The envelope does not decode.
    #[error("envelope does not decode: {0}")]
    Envelope(DecodeError),
    /// The envelope's signature is not its author's.
    #[error("envelope {0}: signature does not verify (tampered)")]
    Signature(Digest),
    /// The roster does not decode.
    #[error("roster does not decode: {0}")]
    Roster(RosterError),
}

/// What a well-formed item holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A signed roster (structure decoded; its signatures are checked when
    /// it is applied, against the previous version).
    Roster(SignedRoster),
    /// An envelope whose structure and author signature are good, with its
    /// bytes as they travel (for the same validation as sync).
    Envelope {
        /// The decoded envelope.
        envelope: Envelope,
        /// Its canonical encoding.
        bytes: Vec<u8>,
    },
}

/// One item of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Its position, from 0.
    pub index: usize,
    /// Byte offset of its header in the file.
    pub offset: usize,
    /// What it holds, or why it is refused.
    pub content: Result<Content, ItemError>,
}

/// A decoded file: every item read, in file order, and what is wrong with
/// the file as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Items the header declares.
    pub declared: u32,
    /// The items read (a refused item included; after an item whose length
    /// cannot be trusted, reading stops).
    pub items: Vec<Item>,
    /// Declared items that were never read (truncated file, or reading
    /// stopped).
    pub missing: u32,
    /// Bytes after the last declared item.
    pub trailing: usize,
}

/// Decodes a file. The whole file is refused only when it is not an
/// air-gap file of a known version (magic, version, item count); otherwise
/// every item is decoded on its own, and a damaged one is refused with its
/// reason while the others stand. Never panics.
pub fn decode(bytes: &[u8]) -> Result<Decoded, FileError> {
    check_file_size(u64::try_from(bytes.len()).unwrap_or(u64::MAX))?;
    let Some((header, mut rest)) = bytes.split_at_checked(HEADER_LEN) else {
        return Err(FileError::TooShort(bytes.len()));
    };
    let (magic, header) = header.split_at(8);
    if magic != MAGIC {
        return Err(FileError::BadMagic);
    }
    let (version, count) = header.split_at(1);
    if version != [VERSION] {
        return Err(FileError::Version(version.first().copied().unwrap_or(0)));
    }
    let declared = u32::from_be_bytes(count.try_into().map_err(|_| FileError::BadMagic)?);
    if declared > MAX_ITEMS {
        return Err(FileError::TooManyItems(declared));
    }
    let mut items = Vec::new();
    let mut offset = HEADER_LEN;
    let mut read = 0u32;
    while read < declared {
        let index = items.len();
        let Some((item_header, after)) = rest.split_at_checked(ITEM_HEADER_LEN) else {
            if !rest.is_empty() {
                items.push(refused(
                    index,
                    offset,
                    truncated(ITEM_HEADER_LEN, rest.len()),
                ));
                read += 1;
            }
            rest = &[];
            break;
        };
        let (kind, len) = item_header.split_at(1);
        let kind = kind.first().copied().unwrap_or(0);
        let len = u32::from_be_bytes(len.try_into().unwrap_or([0xff; 4]));
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        // Unknown kinds are skipped, within the largest cap of any kind.
        let cap = match kind {
            KIND_ENVELOPE => MAX_ENVELOPE_BYTES,
            _ => MAX_ROSTER_BYTES,
        };
        read += 1;
        if len > cap {
            // A length no item may have: where the next item starts is
            // unknown, so reading stops here.
            items.push(refused(index, offset, ItemError::TooLarge { len, cap }));
            rest = &[];
            break;
        }
        let Some((content, after)) = after.split_at_checked(len) else {
            items.push(refused(
                index,
                offset,
                truncated(ITEM_HEADER_LEN + len, ITEM_HEADER_LEN + after.len()),
            ));
            rest = &[];
            break;
        };
        items.push(Item {
            index,
            offset,
            content: decode_item(kind, content),
        });
        offset += ITEM_HEADER_LEN + len;
        rest = after;
    }
    Ok(Decoded {
        declared,
        items,
        missing: declared - read,
        trailing: rest.len(),
    })
}

fn truncated(needed: usize, left: usize) -> ItemError {
    ItemError::Truncated { needed, left }
}

fn refused(index: usize, offset: usize, error: ItemError) -> Item {
    Item {
        index,
        offset,
        content: Err(error),
    }
}

fn decode_item(kind: u8, bytes: &[u8]) -> Result<Content, ItemError> {
    match kind {
        KIND_ROSTER => SignedRoster::decode(bytes)
            .map(Content::Roster)
            .map_err(ItemError::Roster),
        KIND_ENVELOPE => {
            let envelope = Envelope::decode(bytes).map_err(ItemError::Envelope)?;
            if envelope.verify().is_err() {
                return Err(ItemError::Signature(envelope.id()));
            }
            Ok(Content::Envelope {
                envelope,
                bytes: bytes.to_vec(),
            })
        }
        other => Err(ItemError::UnknownKind(other)),
    }
}

impl Decoded {
    /// True when every declared item was read and decoded and nothing
    /// follows them.
    pub fn is_intact(&self) -> bool {
        self.missing == 0
            && self.trailing == 0
            && self.items.iter().all(|item| item.content.is_ok())
    }

    /// The well-formed rosters in ascending version (the order to apply
    /// them in; file order among equal versions), with their item index.
    /// Two different rosters of one version are both listed: applying the
    /// second is a conflicting version, which the node's roster path
    /// handles (and keeps as evidence) as it does one from sync.
    pub fn rosters(&self) -> Vec<(usize, &SignedRoster)> {
        let mut rosters: Vec<(usize, &SignedRoster)> = self
            .items
            .iter()
            .filter_map(|item| match &item.content {
                Ok(Content::Roster(roster)) => Some((item.index, roster)),
                _ => None,
            })
            .collect();
        rosters.sort_by_key(|(_, r)| r.roster.version);
        rosters
    }

    /// The well-formed envelopes, in file order: (item index, decoded
    /// envelope, bytes to validate as sync does).
    pub fn envelopes(&self) -> impl Iterator<Item = (usize, &Envelope, &[u8])> {
        self.items.iter().filter_map(|item| match &item.content {
            Ok(Content::Envelope { envelope, bytes }) => {
                Some((item.index, envelope, bytes.as_slice()))
            }
            _ => None,
        })
    }

    /// The refused items: (item index, reason).
    pub fn refused(&self) -> impl Iterator<Item = (usize, &ItemError)> {
        self.items
            .iter()
            .filter_map(|item| item.content.as_ref().err().map(|e| (item.index, e)))
    }

    /// What each item is, one summary per item read.
    pub fn report(&self) -> Vec<ItemSummary> {
        self.items.iter().map(describe).collect()
    }

    /// One line per problem with the file as a whole (missing items,
    /// trailing bytes); empty for a complete file.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.missing > 0 {
            out.push(format!(
                "file declares {} items but {} were never read (truncated or damaged)",
                self.declared, self.missing
            ));
        }
        if self.trailing > 0 {
            out.push(format!(
                "{} unexpected bytes after the last item",
                self.trailing
            ));
        }
        out
    }
}

/// What one item is, for a listing or an import report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemSummary {
    /// A signed roster.
    Roster {
        /// Item index.
        index: usize,
        /// Roster version.
        version: u64,
        /// Its consortium.
        consortium: Digest,
        /// Its hash.
        hash: Digest,
        /// How many signatures it carries.
        signatures: usize,
    },
    /// An envelope (ciphertext unless CLEAR; only the signed header is
    /// described).
    Envelope {
        /// Item index.
        index: usize,
        /// Envelope id.
        id: Digest,
        /// Author node.
        author: NodePublicKey,
        /// Sequence number.
        seq: u64,
        /// Its label.
        tlp: Tlp,
        /// `bulletin`, `retraction` or `sighting`.
        kind: &'static str,
        /// Unix ms.
        created_at: u64,
        /// Encoded size.
        size: usize,
    },
    /// A refused item.
    Refused {
        /// Item index.
        index: usize,
        /// Why.
        reason: String,
    },
}

/// What `item` is.
pub fn describe(item: &Item) -> ItemSummary {
    match &item.content {
        Ok(Content::Roster(signed)) => ItemSummary::Roster {
            index: item.index,
            version: signed.roster.version,
            consortium: signed.roster.consortium_id(),
            hash: signed.roster.hash(),
            signatures: signed.signatures.len(),
        },
        Ok(Content::Envelope { envelope, bytes }) => ItemSummary::Envelope {
            index: item.index,
            id: envelope.id(),
            author: envelope.header.author,
            seq: envelope.header.seq,
            tlp: envelope.header.tlp,
            kind: envelope.header.kind.as_str(),
            created_at: envelope.header.created_at,
            size: bytes.len(),
        },
        Err(error) => ItemSummary::Refused {
            index: item.index,
            reason: error.to_string(),
        },
    }
}

impl fmt::Display for ItemSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemSummary::Roster {
                index,
                version,
                consortium,
                hash,
                signatures,
            } => write!(
                f,
                "#{index} roster v{version} of consortium {consortium} (hash {hash}, {signatures} signatures)"
            ),
            ItemSummary::Envelope {
                index,
                id,
                author,
                seq,
                tlp,
                kind,
                created_at,
                size,
            } => write!(
                f,
                "#{index} envelope {id}: {kind} {tlp} by {author} seq {seq}, created {created_at}, {size} bytes"
            ),
            ItemSummary::Refused { index, reason } => write!(f, "#{index} refused: {reason}"),
        }
    }
}

/// Why a [`Writer`] cannot take an item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The bytes are not a well-formed, correctly signed envelope.
    #[error("not an envelope: {0}")]
    Envelope(ItemError),
    /// The roster encodes larger than a roster may.
    #[error("roster v{version} encodes to {len} bytes, more than {MAX_ROSTER_BYTES}")]
    RosterTooLarge {
        /// Its version.
        version: u64,
        /// Its size.
        len: usize,
    },
    /// The file would hold more than [`MAX_ITEMS`] items or
    /// [`MAX_FILE_BYTES`] bytes.
    #[error(
        "the file would exceed {MAX_ITEMS} items or {MAX_FILE_BYTES} bytes; export less (e.g. with --since)"
    )]
    Full,
}

/// Builds an air-gap file: rosters first (ascending version, one per
/// version), then envelopes in the order added (one per id). Add envelopes
/// per author in sequence order, so that an importer fills no gaps it
/// could avoid.
#[derive(Debug, Clone, Default)]
pub struct Writer {
    rosters: Vec<(u64, Vec<u8>)>,
    envelopes: Vec<Vec<u8>>,
    ids: std::collections::HashSet<Digest>,
    /// Bytes of the items added so far.
    size: u64,
}

impl Writer {
    /// An empty file.
    pub fn new() -> Writer {
        Writer::default()
    }

    fn room(&mut self, len: usize) -> Result<(), WriteError> {
        let size = self.size + (ITEM_HEADER_LEN + len) as u64;
        let count = self.rosters.len() + self.envelopes.len() + 1;
        if HEADER_LEN as u64 + size > MAX_FILE_BYTES || count > MAX_ITEMS as usize {
            return Err(WriteError::Full);
        }
        self.size = size;
        Ok(())
    }

    /// Adds a signed roster (a second roster of the same version is
    /// ignored).
    pub fn add_roster(&mut self, roster: &SignedRoster) -> Result<(), WriteError> {
        let version = roster.roster.version;
        if self.rosters.iter().any(|(v, _)| *v == version) {
            return Ok(());
        }
        let bytes = roster.encode();
        if bytes.len() > MAX_ROSTER_BYTES {
            return Err(WriteError::RosterTooLarge {
                version,
                len: bytes.len(),
            });
        }
        self.room(bytes.len())?;
        self.rosters.push((version, bytes));
        Ok(())
    }

    /// Adds an envelope as stored (its canonical bytes), checked as the
    /// importer will check it: it must decode and carry its author's
    /// signature. An envelope already added is ignored.
    pub fn add_envelope(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let content = decode_item(KIND_ENVELOPE, bytes).map_err(WriteError::Envelope)?;
        let Content::Envelope { envelope, .. } = content else {
            return Ok(());
        };
        if !self.ids.insert(envelope.id()) {
            return Ok(());
        }
        if let Err(e) = self.room(bytes.len()) {
            self.ids.remove(&envelope.id());
            return Err(e);
        }
        self.envelopes.push(bytes.to_vec());
        Ok(())
    }

    /// Rosters and envelopes added.
    pub fn counts(&self) -> (usize, usize) {
        (self.rosters.len(), self.envelopes.len())
    }

    /// The file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut rosters: Vec<&(u64, Vec<u8>)> = self.rosters.iter().collect();
        rosters.sort_by_key(|(version, _)| *version);
        let count = rosters.len() + self.envelopes.len();
        let mut out = Vec::with_capacity(HEADER_LEN + usize::try_from(self.size).unwrap_or(0));
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_be_bytes());
        let items = rosters
            .into_iter()
            .map(|(_, bytes)| (KIND_ROSTER, bytes))
            .chain(self.envelopes.iter().map(|bytes| (KIND_ENVELOPE, bytes)));
        for (kind, bytes) in items {
            out.push(kind);
            out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }
}

/// What the importer did with one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Validated and stored (an envelope), or applied (a roster).
    Accepted,
    /// The node already held it.
    AlreadyHeld,
    /// Refused, with the reason (a decode failure from the file, or the
    /// verdict of validation).
    Refused(String),
}

/// The counts an import prints: accepted, already held, and refused with
/// each reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportTally {
    /// Items accepted.
    pub accepted: usize,
    /// Items the node already held.
    pub already_held: usize,
    /// Refused items: (item index, reason).
    pub refused: Vec<(usize, String)>,
    /// File-level problems ([`Decoded::problems`]).
    pub problems: Vec<String>,
}

impl ImportTally {
    /// A tally that starts with the file's refused items and problems.
    pub fn of(decoded: &Decoded) -> ImportTally {
        ImportTally {
            accepted: 0,
            already_held: 0,
            refused: decoded
                .refused()
                .map(|(index, error)| (index, error.to_string()))
                .collect(),
            problems: decoded.problems(),
        }
    }

    /// Records what happened to item `index`.
    pub fn record(&mut self, index: usize, outcome: Outcome) {
        match outcome {
            Outcome::Accepted => self.accepted += 1,
            Outcome::AlreadyHeld => self.already_held += 1,
            Outcome::Refused(reason) => self.refused.push((index, reason)),
        }
    }
}

impl fmt::Display for ImportTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} accepted, {} already held, {} refused",
            self.accepted,
            self.already_held,
            self.refused.len()
        )?;
        let mut refused: Vec<&(usize, String)> = self.refused.iter().collect();
        refused.sort_by_key(|(index, _)| *index);
        for (index, reason) in refused {
            write!(f, "\n  item #{index}: {reason}")?;
        }
        for problem in &self.problems {
            write!(f, "\n  file: {problem}")?;
        }
        Ok(())
    }
}
