//! Anti-entropy sync messages: the frontier (author → highest contiguous
//! seq), its digest, range requests and size-bounded envelope batches, plus
//! roster catch-up. Exchanged over `/breakwater/sync/1`.
//!
//! A round starts with [`SyncRequest::Hello`]. Peers already in sync answer
//! [`SyncResponse::InSync`]: one round trip of well under a kilobyte. Otherwise
//! the answer is the responder's frontier; the requester asks for the ranges
//! it lacks, batch by batch, and for newer roster versions. Both `Hello` and
//! `Frontier` carry the hash of the sender's roster in force, so two nodes
//! on the same version of different rosters (a roster fork) notice it; the
//! forms without it (`HelloV1`, `FrontierV1`) are still decoded and served
//! for nodes built before fork detection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bytes::{Digest, NodePublicKey};
use crate::wire::{self, FrameError};

/// Largest encoded sync message.
pub const MAX_SYNC_MESSAGE: usize = 4 * 1024 * 1024;
/// Most authors in a frontier.
pub const MAX_FRONTIER_AUTHORS: usize = 16 * 1024;
/// Most ranges in one request.
pub const MAX_RANGES: usize = 1024;
/// Target payload of one envelope batch (a batch holds at least one envelope).
pub const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Most envelopes in one batch.
pub const MAX_BATCH_ITEMS: usize = 8192;
/// Most roster versions in one response.
pub const MAX_ROSTERS: usize = 64;

const FRONTIER_DOMAIN: &str = "breakwater/frontier/v1";

/// Why a sync message is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Framing failed.
    #[error("sync message: {0}")]
    Frame(#[from] FrameError),
    /// A list exceeds its cap.
    #[error("sync message field {field} has {len} items, more than {cap}")]
    TooMany {
        /// Field.
        field: &'static str,
        /// Items.
        len: usize,
        /// Cap.
        cap: usize,
    },
    /// A range is empty or inverted.
    #[error("invalid seq range {from}..={to}")]
    BadRange {
        /// Start.
        from: u64,
        /// End.
        to: u64,
    },
}

/// Highest contiguous seq per author.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontier(pub BTreeMap<NodePublicKey, u64>);

impl Frontier {
    /// Digest of the frontier: equal digests mean equal frontiers.
    pub fn digest(&self) -> Digest {
        Digest(wire::hash(FRONTIER_DOMAIN, &[&wire::encode(self)]))
    }

    /// Highest contiguous seq for `author`.
    pub fn get(&self, author: &NodePublicKey) -> u64 {
        self.0.get(author).copied().unwrap_or(0)
    }

    /// The ranges `theirs` holds that `self` lacks.
    pub fn missing_from(&self, theirs: &Frontier) -> Vec<SeqRange> {
        theirs
            .0
            .iter()
            .filter_map(|(author, &their_seq)| {
                let mine = self.get(author);
                (their_seq > mine).then_some(SeqRange {
                    author: *author,
                    from: mine + 1,
                    to: their_seq,
                })
            })
            .collect()
    }
}

/// An inclusive range of one author's seqs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRange {
    /// Author.
    pub author: NodePublicKey,
    /// First seq.
    pub from: u64,
    /// Last seq (inclusive).
    pub to: u64,
}

/// A sync request. Variants are encoded by position: new ones go last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// The Hello of nodes built before fork detection (no roster hash).
    /// Served with [`SyncResponse::FrontierV1`]; never sent.
    HelloV1 {
        /// Digest of the requester's frontier.
        digest: Digest,
        /// The requester's latest roster version.
        roster_version: u64,
    },
    /// "Send me these ranges."
    Ranges(Vec<SeqRange>),
    /// "Send me roster versions after this one."
    Rosters {
        /// Latest version the requester has.
        after: u64,
    },
    /// "Here is my state in brief."
    Hello {
        /// Digest of the requester's frontier.
        digest: Digest,
        /// The requester's roster version in force.
        roster_version: u64,
        /// The hash of that version: the same version with another hash is
        /// a roster fork.
        roster_hash: Digest,
    },
}

/// A sync response. Variants are encoded by position: new ones go last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// Same frontier digest, roster version and roster hash: nothing to do.
    InSync,
    /// The answer to a [`SyncRequest::HelloV1`] (no roster hash).
    FrontierV1 {
        /// Responder's frontier.
        frontier: Frontier,
        /// Responder's latest roster version.
        roster_version: u64,
    },
    /// Envelopes (encoded) for the requested ranges, in order.
    Envelopes {
        /// Encoded envelopes.
        items: Vec<Vec<u8>>,
        /// True when the batch stopped before the requested ranges ended.
        more: bool,
    },
    /// Encoded signed rosters, oldest first.
    Rosters(Vec<Vec<u8>>),
    /// The request was refused.
    Refused(String),
    /// The responder's state, when it differs from the [`SyncRequest::Hello`].
    Frontier {
        /// Responder's frontier.
        frontier: Frontier,
        /// Responder's roster version in force.
        roster_version: u64,
        /// The hash of that version.
        roster_hash: Digest,
    },
}

fn cap(field: &'static str, len: usize, cap: usize) -> Result<(), SyncError> {
    if len > cap {
        Err(SyncError::TooMany { field, len, cap })
    } else {
        Ok(())
    }
}

impl SyncRequest {
    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes and checks caps.
    pub fn decode(bytes: &[u8]) -> Result<SyncRequest, SyncError> {
        let request: SyncRequest = wire::decode(bytes, MAX_SYNC_MESSAGE, false)?;
        if let SyncRequest::Ranges(ranges) = &request {
            cap("ranges", ranges.len(), MAX_RANGES)?;
            if let Some(r) = ranges.iter().find(|r| r.from == 0 || r.from > r.to) {
                return Err(SyncError::BadRange {
                    from: r.from,
                    to: r.to,
                });
            }
        }
        Ok(request)
    }
}

impl SyncResponse {
    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes and checks caps.
    pub fn decode(bytes: &[u8]) -> Result<SyncResponse, SyncError> {
        let response: SyncResponse = wire::decode(bytes, MAX_SYNC_MESSAGE, false)?;
        match &response {
            SyncResponse::Frontier { frontier, .. } | SyncResponse::FrontierV1 { frontier, .. } => {
                cap("frontier", frontier.0.len(), MAX_FRONTIER_AUTHORS)?
            }
            SyncResponse::Envelopes { items, .. } => cap("items", items.len(), MAX_BATCH_ITEMS)?,
            SyncResponse::Rosters(rosters) => cap("rosters", rosters.len(), MAX_ROSTERS)?,
            SyncResponse::InSync | SyncResponse::Refused(_) => {}
        }
        Ok(response)
    }
}
