//! The messages of the store worker's channels: [`Job`]s that the event
//! loop and [`crate::handle::NodeHandle`]s send to the worker, and the
//! [`Outcome`]s the worker sends back to the event loop. `handle` and
//! `event_loop` import these rather than `worker`; the jobs carry
//! `handle`'s request and answer types.
//!
//! Jobs travel in three bounded queues ([`job_queues`]), so that a flood of
//! one kind never crowds out another (review finding L1): gossip (dropped
//! when full: anti-entropy delivers later), serving peers' sync requests
//! (dropped when full: the peer asks again), and everything else (our own
//! sync rounds and their answers, the API, timers). The worker takes the
//! last first, and alternates between the other two.

use breakwater_protocol::{Digest, Indicator, SignedRoster};
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::{mpsc, oneshot};

use crate::event_loop::Misbehaviour;

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
        offset: usize,
        limit: Option<usize>,
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
    /// Stored envelopes with the bodies this node opens (interop exports).
    Export {
        filter: crate::export::ExportFilter,
        reply: Reply<crate::export::Exported>,
    },
    /// An air-gap bundle's items, validated and stored as sync does.
    Import {
        request: crate::export::ImportRequest,
        reply: Reply<crate::export::ImportReport>,
    },
    /// A page of the `added` index, for the TAXII server.
    Added {
        from: u64,
        max: usize,
        cap: breakwater_protocol::EgressCap,
        reply: Reply<crate::worker::AddedPage>,
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
    /// Hold `what` against `peer` in its gossip score.
    Misbehaved { peer: PeerId, what: Misbehaviour },
}

/// Capacity of the gossip queue.
pub(crate) const GOSSIP_QUEUE: usize = 1024;
/// Capacity of the queue of peers' sync requests.
pub(crate) const SERVE_QUEUE: usize = 256;
/// Capacity of the queue of everything else.
pub(crate) const CONTROL_QUEUE: usize = 1024;

/// Each worker queue's name with a sender that does not keep it open.
pub(crate) type QueueWatch = [(&'static str, mpsc::WeakSender<Job>); 3];

/// The sending side of the worker's queues: routes each job to its queue.
#[derive(Debug, Clone)]
pub(crate) struct JobSenders {
    /// Our sync rounds and their answers, the API, timers, stop.
    pub control: mpsc::Sender<Job>,
    /// Envelopes and rosters received by gossip.
    pub gossip: mpsc::Sender<Job>,
    /// Peers' sync requests.
    pub serve: mpsc::Sender<Job>,
}

impl JobSenders {
    /// Each queue's name with a sender that does not keep it open, for the
    /// `breakwater_queue_depth` metric.
    pub fn watch(&self) -> QueueWatch {
        [
            ("control", self.control.downgrade()),
            ("gossip", self.gossip.downgrade()),
            ("serve", self.serve.downgrade()),
        ]
    }

    fn queue_for(&self, job: &Job) -> &mpsc::Sender<Job> {
        match job {
            Job::Ingest {
                origin: Origin::Gossip { .. },
                ..
            }
            | Job::GossipRoster { .. } => &self.gossip,
            Job::ServeSync { .. } => &self.serve,
            _ => &self.control,
        }
    }

    /// Queues `job` without waiting; fails when its queue is full.
    // The job comes back in the error, as with mpsc's own `try_send`.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, job: Job) -> Result<(), TrySendError<Job>> {
        self.queue_for(&job).try_send(job)
    }

    /// Queues `job`, waiting for room.
    pub async fn send(&self, job: Job) -> Result<(), SendError<Job>> {
        self.queue_for(&job).send(job).await
    }

    /// Queues `job` from outside the runtime, blocking for room.
    // The job comes back in the error, as with mpsc's own `blocking_send`.
    #[allow(clippy::result_large_err)]
    pub fn blocking_send(&self, job: Job) -> Result<(), SendError<Job>> {
        self.queue_for(&job).blocking_send(job)
    }
}

/// The worker's side of its queues.
#[derive(Debug)]
pub(crate) struct JobQueues {
    control: mpsc::Receiver<Job>,
    gossip: mpsc::Receiver<Job>,
    serve: mpsc::Receiver<Job>,
    /// Whether gossip goes before serving on the next turn.
    gossip_first: bool,
}

impl JobQueues {
    /// The next job of the gossip queue, if one waits (for taking gossip
    /// together; the other queues keep their turn at the next
    /// [`JobQueues::next_blocking`]).
    pub fn try_gossip(&mut self) -> Option<Job> {
        self.gossip.try_recv().ok()
    }

    /// The next job, blocking until there is one: a control job if any is
    /// waiting, else gossip and serving by turns. `None` once every sender
    /// of every queue is gone and the queues are empty.
    pub fn next_blocking(&mut self) -> Option<Job> {
        if let Ok(job) = self.control.try_recv() {
            return Some(job);
        }
        self.gossip_first = !self.gossip_first;
        let (first, second) = if self.gossip_first {
            (&mut self.gossip, &mut self.serve)
        } else {
            (&mut self.serve, &mut self.gossip)
        };
        if let Ok(job) = first.try_recv() {
            return Some(job);
        }
        if let Ok(job) = second.try_recv() {
            return Some(job);
        }
        let (control, gossip, serve) = (&mut self.control, &mut self.gossip, &mut self.serve);
        futures::executor::block_on(async {
            tokio::select! {
                biased;
                Some(job) = control.recv() => Some(job),
                Some(job) = gossip.recv() => Some(job),
                Some(job) = serve.recv() => Some(job),
                else => None,
            }
        })
    }
}

#[cfg(test)]
impl JobQueues {
    /// The next job [`JobQueues::next_blocking`] would take, if one waits.
    fn try_next(&mut self) -> Option<Job> {
        let waiting = !self.control.is_empty() || !self.gossip.is_empty() || !self.serve.is_empty();
        waiting.then(|| self.next_blocking()).flatten()
    }
}

/// The worker's queues with the default capacities.
pub(crate) fn job_queues() -> (JobSenders, JobQueues) {
    job_queues_with(CONTROL_QUEUE, GOSSIP_QUEUE, SERVE_QUEUE)
}

/// The worker's queues with the given capacities.
pub(crate) fn job_queues_with(
    control: usize,
    gossip: usize,
    serve: usize,
) -> (JobSenders, JobQueues) {
    let (control_tx, control_rx) = mpsc::channel(control);
    let (gossip_tx, gossip_rx) = mpsc::channel(gossip);
    let (serve_tx, serve_rx) = mpsc::channel(serve);
    (
        JobSenders {
            control: control_tx,
            gossip: gossip_tx,
            serve: serve_tx,
        },
        JobQueues {
            control: control_rx,
            gossip: gossip_rx,
            serve: serve_rx,
            gossip_first: false,
        },
    )
}

#[cfg(test)]
mod tests;
