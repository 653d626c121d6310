//! The messages of the store worker's two channels: [`Job`]s that the event
//! loop and [`crate::handle::NodeHandle`]s send to the worker, and the
//! [`Outcome`]s the worker sends back to the event loop. `handle` and
//! `event_loop` import these rather than `worker`; the jobs carry
//! `handle`'s request and answer types.

use breakwater_protocol::{Digest, Indicator, SignedRoster};
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use tokio::sync::oneshot;

use crate::handle::{Detail, ListFilter, PublishRequest, Published, RequestError, Status, Summary};

/// Where a request's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// Work for the store thread.
#[derive(Debug)]
pub(crate) enum Job {
    /// Envelopes received from a peer.
    Ingest {
        items: Vec<Vec<u8>>,
        origin: Origin,
    },
    /// A roster received by gossip.
    GossipRoster {
        bytes: Vec<u8>,
        message_id: MessageId,
        source: PeerId,
    },
    /// Start a sync round with a peer.
    StartSync {
        peer: PeerId,
    },
    /// A peer's sync request to answer.
    ServeSync {
        peer: PeerId,
        request: Vec<u8>,
        token: u64,
    },
    /// A peer's answer to our sync request.
    SyncAnswer {
        peer: PeerId,
        response: Vec<u8>,
    },
    /// Our sync request to a peer failed; `retry` starts the round again.
    SyncFailed {
        peer: PeerId,
        retry: bool,
    },
    /// Drop expired plaintext.
    Prune,
    Publish {
        request: PublishRequest,
        reply: Reply<Published>,
    },
    Retract {
        target: Digest,
        reason: String,
        reply: Reply<Published>,
    },
    Sight {
        target: Digest,
        indicator: Indicator,
        reply: Reply<Published>,
    },
    List {
        filter: ListFilter,
        reply: Reply<Vec<Summary>>,
    },
    Get {
        id: String,
        reply: Reply<Detail>,
    },
    Search {
        indicator: Indicator,
        reply: Reply<Vec<Summary>>,
    },
    Roster {
        reply: Reply<SignedRoster>,
    },
    Join {
        roster: Box<SignedRoster>,
        reply: Reply<u64>,
    },
    Status {
        reply: Reply<Status>,
    },
    /// The event loop has ended: flush and stop, even while handles remain.
    Stop,
}

/// Where received envelopes came from.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    Gossip {
        message_id: MessageId,
        source: PeerId,
    },
    Sync {
        peer: PeerId,
    },
}

impl Origin {
    /// The peer the envelopes came from (the gossip relay, or the sync
    /// peer).
    pub(crate) fn peer(&self) -> PeerId {
        match self {
            Origin::Gossip { source, .. } => *source,
            Origin::Sync { peer } => *peer,
        }
    }
}

/// What the worker asks of the event loop.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Report a gossip validation verdict.
    Verdict {
        message_id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    },
    /// Gossip a locally published envelope.
    PublishEnvelope(Vec<u8>),
    /// Gossip a newly applied roster.
    PublishRoster(Vec<u8>),
    /// Send a sync request.
    SyncRequest { peer: PeerId, request: Vec<u8> },
    /// Answer a peer's sync request.
    SyncReply { token: u64, response: Vec<u8> },
    /// A new roster is in force.
    RosterApplied(Box<SignedRoster>),
}
