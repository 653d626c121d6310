//! The public face of a running node: [`NodeHandle`] (cloneable, sends
//! commands over bounded channels, each with a oneshot reply), the
//! [`NodeEvent`]s it emits, and the query and request types the local API
//! and the CLI speak.

use breakwater_protocol::{
    Body, Digest, Indicator, Kind, NodePublicKey, OrgId, Severity, SignedRoster, Tlp,
};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::job::Job;

/// Something that happened on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NodeEvent {
    /// A new envelope was stored (by gossip, sync or local publish).
    Stored(Summary),
    /// An envelope was retracted by its organisation.
    Retracted {
        /// The withdrawn envelope.
        target: Digest,
        /// The retraction.
        by: Digest,
    },
    /// A member signed two different envelopes for one seq.
    Equivocation {
        /// The author.
        author: NodePublicKey,
        /// The seq.
        seq: u64,
    },
    /// A new roster version took effect.
    RosterApplied {
        /// Its version.
        version: u64,
    },
    /// A roster version's GREEN key package does not give this node (or
    /// every node) the same committed key: a forged or broken package. This
    /// node seals its own GREEN per node until a good version arrives.
    GreenKeyProblem {
        /// The roster version.
        version: u64,
        /// What is wrong.
        problem: String,
    },
    /// A second valid roster for a version this node holds: a roster fork.
    /// Kept as evidence in the store; from now on this node applies no
    /// roster update until an operator resolves it
    /// (`breakwater consortium resolve-fork`).
    RosterFork {
        /// The version both rosters claim.
        version: u64,
        /// Hash of this node's roster of that version.
        ours: Digest,
        /// Hash of the other one.
        theirs: Digest,
    },
    /// A peer connected.
    PeerConnected {
        /// The peer.
        peer: String,
    },
    /// A peer's last connection closed.
    PeerDisconnected {
        /// The peer.
        peer: String,
    },
}

/// One envelope as listed: header metadata, plus title and indicators when
/// this node can read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Envelope id (hex).
    pub id: Digest,
    /// Author's organisation.
    pub author_org: String,
    /// Author node key.
    pub author: NodePublicKey,
    /// Author seq.
    pub seq: u64,
    /// `bulletin`, `retraction` or `sighting`.
    pub kind: String,
    /// Target of a retraction or sighting.
    pub target: Option<Digest>,
    /// TLP label.
    pub tlp: Tlp,
    /// Unix ms.
    pub created_at: u64,
    /// Unix ms.
    pub expires_at: u64,
    /// Whether this node could open it.
    pub readable: bool,
    /// Whether its organisation retracted it.
    pub retracted: bool,
    /// Severity, when readable and a bulletin.
    pub severity: Option<Severity>,
    /// Title, when readable and a bulletin.
    pub title: Option<String>,
    /// Indicators, when readable and a bulletin.
    pub indicators: Option<Vec<Indicator>>,
}

/// One envelope in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// Metadata.
    #[serde(flatten)]
    pub summary: Summary,
    /// The body, when readable.
    pub body: Option<Body>,
    /// Retraction that withdrew it, if any.
    pub retracted_by: Option<Digest>,
    /// Organisations whose nodes are recipients (empty for CLEAR).
    pub recipients: Vec<String>,
    /// Encoded size in bytes.
    pub size: usize,
    /// How the content key travels: `clear`, `nodes` (one wrap per
    /// recipient node) or `epoch` (under a roster's GREEN key).
    #[serde(default)]
    pub seal: String,
    /// The roster version whose GREEN key seals it, for `epoch`.
    #[serde(default)]
    pub epoch: Option<u64>,
}

/// Filters for [`NodeHandle::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListFilter {
    /// Only envelopes created at or after this unix ms.
    pub since: Option<u64>,
    /// Only bulletins of at least this severity.
    pub severity: Option<Severity>,
    /// Only this label.
    pub tlp: Option<Tlp>,
    /// Include envelopes this node cannot open.
    pub all: bool,
    /// Include retracted ones (default: yes, marked).
    pub hide_retracted: bool,
    /// Skip this many matches (newest first) before the first one returned.
    pub offset: usize,
    /// Return at most this many matches (`None`: all; the API always sets
    /// one, see [`crate::api::DEFAULT_PAGE`]).
    pub limit: Option<usize>,
}

/// Applies `offset` and `limit` to a list sorted newest first.
pub(crate) fn page<T>(items: Vec<T>, offset: usize, limit: Option<usize>) -> Vec<T> {
    items
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

/// What to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRequest {
    /// Label.
    pub tlp: Tlp,
    /// Organisations to seal to (AMBER, AMBER+STRICT, RED).
    #[serde(default)]
    pub to: Vec<OrgId>,
    /// The bulletin.
    pub bulletin: breakwater_protocol::Bulletin,
    /// Lifetime in ms (default: the node's `default_ttl`).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

/// A published envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// Its id.
    pub id: Digest,
    /// Its seq.
    pub seq: u64,
    /// Recipient nodes.
    pub recipients: usize,
}

/// Node state at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This node's org.
    pub org_id: String,
    /// This node's key.
    pub node_key: NodePublicKey,
    /// This node's PeerId.
    pub peer_id: String,
    /// Consortium id.
    pub consortium: Digest,
    /// Roster version in force.
    pub roster_version: u64,
    /// Listening addresses.
    pub listen: Vec<String>,
    /// Connected peers.
    pub peers: Vec<PeerInfo>,
    /// Highest contiguous seq per author.
    pub frontier: Vec<(NodePublicKey, u64)>,
    /// Stored envelopes.
    pub envelopes: u64,
    /// Envelopes this node can read.
    pub readable: u64,
    /// Equivocation evidence records.
    pub evidence: u64,
    /// Every `(author, seq)` with equivocation evidence, by author then
    /// seq. An author's feed is held at its lowest one.
    #[serde(default)]
    pub equivocations: Vec<Equivocated>,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// Envelope copies received from peers since the node started.
    #[serde(default)]
    pub traffic: Traffic,
    /// The roster version whose GREEN key this node seals with (`None`
    /// before the consortium's first keyed roster, or after an alarm).
    #[serde(default)]
    pub green_epoch: Option<u64>,
    /// Stored GREEN envelopes that wait for a newer roster's key.
    #[serde(default)]
    pub pending_green: u64,
    /// Why this node distrusts a GREEN key package, if it does.
    #[serde(default)]
    pub green_key_problem: Option<String>,
    /// Feed positions whose ciphertext was deleted (expired past the grace
    /// period, or of a purged organisation); counted in `envelopes`.
    #[serde(default)]
    pub tombstones: u64,
    /// The last store write failure (a full disk), until a write succeeds
    /// again. Reads keep working meanwhile.
    #[serde(default)]
    pub store_write_error: Option<String>,
    /// The roster fork this node has recorded, if any: while it is set the
    /// node applies no roster update.
    #[serde(default)]
    pub roster_fork: Option<RosterFork>,
    /// Each configured webhook's last success and backlog.
    #[serde(default)]
    pub webhooks: Vec<crate::webhook::WebhookStatus>,
}

/// A recorded roster fork, as `status` shows it (the two signed rosters are
/// kept in the store as evidence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterFork {
    /// The version both rosters claim.
    pub version: u64,
    /// Hash of this node's roster of that version.
    pub ours: Digest,
    /// Hash of the other roster of that version.
    pub theirs: Digest,
    /// When this node noticed it (unix ms).
    pub detected_at: u64,
    /// The peer it came from, if it came from one.
    #[serde(default)]
    pub peer: Option<String>,
}

/// Equivocation evidence held against one `(author, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Equivocated {
    /// The author (node key) that signed two envelopes for `seq`.
    pub author: NodePublicKey,
    /// The seq.
    pub seq: u64,
}

/// Envelope copies a node received from its peers since it started: what
/// gossip and sync cost in redundant transfers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Envelope gossip messages received, duplicates included (gossipsub's
    /// own count; it drops known message ids before the node sees them).
    pub gossip_received: u64,
    /// Envelopes received in sync responses.
    pub sync_received: u64,
    /// Envelopes from peers that were new to this node's store.
    pub stored_from_peers: u64,
    /// Anti-entropy requests this node sent (one per round trip).
    pub sync_requests: u64,
    /// Rounds a peer answered `InSync` (same frontier digest and roster
    /// version): the one-round-trip fast path.
    #[serde(default)]
    pub sync_in_sync: u64,
}

impl Traffic {
    /// Copies received beyond the first of each stored envelope.
    pub fn duplicates(&self) -> u64 {
        (self.gossip_received + self.sync_received).saturating_sub(self.stored_from_peers)
    }
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// PeerId.
    pub peer_id: String,
    /// Its organisation, from the roster.
    pub org_id: Option<String>,
    /// Remote addresses of its connections.
    pub addrs: Vec<String>,
    /// Its wall clock minus ours, in milliseconds, from the last clock
    /// exchange (`/breakwater/clock/1`); `None` before the first answer.
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
}

/// Why a node request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RequestError {
    /// The request is invalid (unknown org, bad label, malformed body, …).
    #[error("{0}")]
    Invalid(String),
    /// No such envelope.
    #[error("no envelope {0}")]
    NotFound(String),
    /// Storage failed.
    #[error("storage error: {0}")]
    Store(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    Closed,
}

/// What only the event loop knows.
#[derive(Debug)]
pub(crate) struct NetworkView {
    pub peers: Vec<PeerInfo>,
    pub listen: Vec<Multiaddr>,
    /// Envelope gossip messages received, duplicates included.
    pub gossip_received: u64,
}

/// A command for the event loop (things only the swarm knows).
#[derive(Debug)]
pub(crate) enum Command {
    /// Connected peers and listen addresses.
    Network { reply: oneshot::Sender<NetworkView> },
    /// Dial an address.
    Dial { addr: Multiaddr },
    /// Run a sync round with a peer now.
    Sync { peer: Option<PeerId> },
    /// Gossipsub's score of a peer.
    GossipScore {
        peer: PeerId,
        reply: oneshot::Sender<Option<f64>>,
    },
}

/// A cloneable handle to a running node.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) jobs: mpsc::Sender<Job>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    pub(crate) peer_id: PeerId,
    /// True once the node's own feed is synced with a peer (L7).
    pub(crate) own_feed: tokio::sync::watch::Receiver<bool>,
    /// Until when a publish waits for `own_feed`.
    pub(crate) publish_wait_until: tokio::time::Instant,
    /// The node's Prometheus metrics.
    pub(crate) metrics: crate::metrics::Metrics,
}

impl NodeHandle {
    async fn ask<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> Job,
    ) -> Result<T, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(job(reply))
            .await
            .map_err(|_| RequestError::Closed)?;
        answer.await.map_err(|_| RequestError::Closed)?
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Seals, signs, stores and flushes a bulletin, then gossips it. Returns
    /// only after the envelope and its seq are on disk.
    pub async fn publish(&self, request: PublishRequest) -> Result<Published, RequestError> {
        self.own_feed_synced().await;
        self.ask(|reply| Job::Publish { request, reply }).await
    }

    /// Waits until this node's own feed is synced with a peer, for as long
    /// as `publish_sync_wait` after start allows: a node restored from an
    /// older copy of its data must learn the seqs it already signed before
    /// it signs the next one (L7). Returns whether it is synced.
    pub async fn own_feed_synced(&self) -> bool {
        let mut own_feed = self.own_feed.clone();
        let waited = tokio::time::timeout_at(self.publish_wait_until, async {
            own_feed.wait_for(|synced| *synced).await.is_ok()
        })
        .await;
        match waited {
            Ok(synced) => synced,
            Err(_) => {
                let synced = *self.own_feed.borrow();
                if !synced {
                    tracing::warn!(
                        "publishing before any sync round with a peer completed: a seq this node \
                         used before a restore may be signed again"
                    );
                }
                synced
            }
        }
    }

    /// Retracts an envelope of this organisation.
    pub async fn retract(&self, target: Digest, reason: String) -> Result<Published, RequestError> {
        self.own_feed_synced().await;
        self.ask(|reply| Job::Retract {
            target,
            reason,
            reply,
        })
        .await
    }

    /// Reports a sighting of an indicator of `target`.
    pub async fn sight(
        &self,
        target: Digest,
        indicator: Indicator,
    ) -> Result<Published, RequestError> {
        self.own_feed_synced().await;
        self.ask(|reply| Job::Sight {
            target,
            indicator,
            reply,
        })
        .await
    }

    /// Lists envelopes, newest first.
    pub async fn list(&self, filter: ListFilter) -> Result<Vec<Summary>, RequestError> {
        self.ask(|reply| Job::List { filter, reply }).await
    }

    /// One envelope in full (id or unique id prefix in hex).
    pub async fn get(&self, id: String) -> Result<Detail, RequestError> {
        self.ask(|reply| Job::Get { id, reply }).await
    }

    /// Readable, unretracted bulletins carrying this indicator.
    pub async fn search(&self, indicator: Indicator) -> Result<Vec<Summary>, RequestError> {
        self.search_page(indicator, 0, None).await
    }

    /// [`NodeHandle::search`], newest first, skipping `offset` matches and
    /// returning at most `limit`.
    pub async fn search_page(
        &self,
        indicator: Indicator,
        offset: usize,
        limit: Option<usize>,
    ) -> Result<Vec<Summary>, RequestError> {
        self.ask(|reply| Job::Search {
            indicator,
            offset,
            limit,
            reply,
        })
        .await
    }

    /// The roster in force.
    pub async fn roster(&self) -> Result<SignedRoster, RequestError> {
        self.ask(|reply| Job::Roster { reply }).await
    }

    /// Applies a newer roster version (verified against the current one).
    pub async fn join(&self, roster: SignedRoster) -> Result<u64, RequestError> {
        self.ask(|reply| Job::Join {
            roster: Box::new(roster),
            reply,
        })
        .await
    }

    /// Node status.
    pub async fn status(&self) -> Result<Status, RequestError> {
        let network = self.network().await?;
        let mut status = self.ask(|reply| Job::Status { reply }).await?;
        status.peers = network.peers;
        status.listen = network.listen.iter().map(|a| a.to_string()).collect();
        status.traffic.gossip_received = network.gossip_received;
        Ok(status)
    }

    /// Stored envelopes with the bodies this node opens, for the interop
    /// exports (the caller applies the egress policy).
    pub async fn export(
        &self,
        filter: crate::export::ExportFilter,
    ) -> Result<crate::export::Exported, RequestError> {
        self.ask(|reply| Job::Export { filter, reply }).await
    }

    /// At most `max` entries of the `added` index from `from` µs on
    /// (inclusive): the envelopes this node could open, in the order it
    /// could first open them (TAXII's `date_added`).
    pub async fn added(
        &self,
        from: u64,
        max: usize,
        cap: breakwater_protocol::EgressCap,
    ) -> Result<crate::worker::AddedPage, RequestError> {
        self.ask(|reply| Job::Added {
            from,
            max,
            cap,
            reply,
        })
        .await
    }

    /// Imports an air-gap bundle's items through the roster and sync ingest
    /// paths; one outcome per item.
    pub async fn import(
        &self,
        request: crate::export::ImportRequest,
    ) -> Result<crate::export::ImportReport, RequestError> {
        self.ask(|reply| Job::Import { request, reply }).await
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, RequestError> {
        Ok(self.network().await?.peers)
    }

    /// Addresses the node listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, RequestError> {
        Ok(self.network().await?.listen)
    }

    async fn network(&self) -> Result<NetworkView, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Network { reply })
            .await
            .map_err(|_| RequestError::Closed)?;
        answer.await.map_err(|_| RequestError::Closed)
    }

    /// Gossipsub's score of `peer` (`None` when gossipsub does not know
    /// it): what the node's gossip holds against a peer, for diagnostics
    /// and tests.
    pub async fn gossip_score(&self, peer: PeerId) -> Result<Option<f64>, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::GossipScore { peer, reply })
            .await
            .map_err(|_| RequestError::Closed)?;
        answer.await.map_err(|_| RequestError::Closed)
    }

    /// Dials an address (in addition to the roster's).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), RequestError> {
        self.commands
            .send(Command::Dial { addr })
            .await
            .map_err(|_| RequestError::Closed)
    }

    /// Starts an anti-entropy round now (with `peer`, or a random one).
    pub async fn sync_now(&self, peer: Option<PeerId>) -> Result<(), RequestError> {
        self.commands
            .send(Command::Sync { peer })
            .await
            .map_err(|_| RequestError::Closed)
    }

    /// Subscribes to node events.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }
}

impl Summary {
    /// True when the envelope is a bulletin.
    pub fn is_bulletin(&self) -> bool {
        self.kind == Kind::Bulletin.as_str()
    }
}
