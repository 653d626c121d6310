//! The libp2p networking layer of a node: builds the swarm (transport, connection gates,
//! gossipsub, anti-entropy sync) that the node's event loop owns and drives.
//!
//! Nothing here interprets envelopes or rosters. The event loop decides who is allowed
//! ([`Behaviour::set_allowed`] on every roster change), what a message id is
//! ([`NetConfig::message_id_fn`] computes the envelope id), whether a gossip message is valid
//! (it reports the verdict to gossipsub), and what sync bytes mean.
//!
//! Submodules: [`transport`] (TCP/QUIC, memory, and the [`upgrade`] seam for simulations),
//! [`behaviour`] (the composed [`Behaviour`] and its gossipsub/scoring settings), [`codec`]
//! (the `/breakwater/sync/1` framing), [`clock`] (the `/breakwater/clock/1` clock
//! exchange), [`inbound`] (pending inbound connections per source IP,
//! with a reserve for members).

pub mod behaviour;
pub mod clock;
pub mod codec;
pub mod inbound;
pub mod transport;

#[cfg(test)]
mod tests;

use std::{
    fmt, io,
    sync::{Arc, Mutex},
    time::Duration,
};

use libp2p::{
    Swarm,
    gossipsub::{self, IdentTopic, MessageId},
    identity::Keypair,
    metrics::Registry,
    noise, swarm,
};

pub use self::{
    behaviour::{AllowListChange, Behaviour, BehaviourEvent},
    codec::{MAX_SYNC_FRAME, SYNC_PROTOCOL, SyncCodec},
    transport::{
        BoxedTransport, TransportConstructor, TransportKind, memory_transport,
        production_transport, upgrade,
    },
};

/// Computes the gossipsub message id of a received or published message.
///
/// The node passes one that computes the envelope id from `message.data`; it must not panic on
/// arbitrary bytes, since it runs on every message a peer sends before validation.
pub type MessageIdFn = Arc<dyn Fn(&gossipsub::Message) -> MessageId + Send + Sync>;

/// Errors from building the networking layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The Noise configuration could not be derived from the node key.
    #[error("cannot set up noise with the node key")]
    Noise(#[source] noise::Error),
    /// The gossipsub configuration was rejected by its builder.
    #[error("invalid gossipsub configuration")]
    GossipsubConfig(#[source] gossipsub::ConfigBuilderError),
    /// Gossipsub refused the authenticity/validation combination.
    #[error("gossipsub rejected its setup: {reason}")]
    Gossipsub {
        /// Gossipsub's explanation.
        reason: String,
    },
    /// The peer-scoring parameters were rejected.
    #[error("invalid peer scoring parameters: {reason}")]
    PeerScore {
        /// Gossipsub's explanation.
        reason: String,
    },
    /// mDNS was enabled but could not start.
    #[error("cannot start mdns discovery")]
    Mdns(#[source] io::Error),
    /// The consortium id is not lower-case hex.
    #[error("consortium id {consortium:?} is not lower-case hex")]
    InvalidConsortium {
        /// The offending id (truncated).
        consortium: String,
    },
    /// Subscribing to a gossip topic failed.
    #[error("cannot subscribe to topic {topic}")]
    Subscribe {
        /// The topic name.
        topic: String,
        /// Why gossipsub refused.
        #[source]
        source: gossipsub::SubscriptionError,
    },
    /// A caller-supplied transport constructor failed.
    #[error("cannot build the transport: {reason}")]
    Transport {
        /// What went wrong.
        reason: String,
    },
}

/// Settings of the networking layer. [`Default`] suits a node on a real network;
/// simulations scale the intervals down.
#[derive(Clone)]
pub struct NetConfig {
    /// Gossipsub heartbeat (mesh maintenance, gossip emission); also its initial delay.
    pub heartbeat: Duration,
    /// How long an anti-entropy request may wait for its response.
    pub sync_request_timeout: Duration,
    /// How long a connection with no active streams and nothing keeping it alive stays open.
    pub idle_connection_timeout: Duration,
    /// Interval between liveness pings on each connection.
    pub ping_interval: Duration,
    /// Whether to discover peers on the local network with mDNS (off by default: peers come
    /// from the roster and configured bootstrap addresses).
    pub enable_mdns: bool,
    /// The gossipsub message id; see [`MessageIdFn`]. Default: BLAKE3 of the message data.
    pub message_id_fn: MessageIdFn,
    /// Concurrent inbound plus outbound sync streams per connection.
    pub max_concurrent_sync_streams: usize,
    /// Established connections in total.
    pub max_established: u32,
    /// Established connections per peer. Two, not one: when two nodes dial each other at the
    /// same moment each side would otherwise keep its own outbound connection and refuse the
    /// other's, and both connections can die; two also lets a node hold TCP and QUIC at once.
    pub max_established_per_peer: u32,
    /// Incoming connections still in the handshake. Outsiders are refused only once Noise has
    /// proved their PeerId, so this bounds the work an outsider can cause; of these, one IP
    /// that is not a member's may hold [`inbound::MAX_PENDING_PER_IP`], and such IPs together
    /// all but [`inbound::MEMBER_RESERVE`] (see [`inbound::InboundGate`]).
    pub max_pending_incoming: u32,
    /// Outgoing dials in progress.
    pub max_pending_outgoing: u32,
    /// Where gossipsub registers its Prometheus metrics (message counts with and without
    /// duplicates, mesh sizes, scores); `None` keeps none.
    pub metrics: Option<Arc<Mutex<Registry>>>,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            sync_request_timeout: Duration::from_secs(30),
            idle_connection_timeout: Duration::from_secs(300),
            ping_interval: Duration::from_secs(15),
            enable_mdns: false,
            message_id_fn: Arc::new(content_message_id),
            max_concurrent_sync_streams: 16,
            max_established: 256,
            max_established_per_peer: 2,
            max_pending_incoming: 32,
            max_pending_outgoing: 64,
            metrics: None,
        }
    }
}

impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetConfig")
            .field("heartbeat", &self.heartbeat)
            .field("sync_request_timeout", &self.sync_request_timeout)
            .field("idle_connection_timeout", &self.idle_connection_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("enable_mdns", &self.enable_mdns)
            .field("message_id_fn", &format_args!("<fn>"))
            .field(
                "max_concurrent_sync_streams",
                &self.max_concurrent_sync_streams,
            )
            .field("max_established", &self.max_established)
            .field("max_established_per_peer", &self.max_established_per_peer)
            .field("max_pending_incoming", &self.max_pending_incoming)
            .field("max_pending_outgoing", &self.max_pending_outgoing)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// The default message id: BLAKE3 of the message data, so identical envelopes share an id.
pub fn content_message_id(message: &gossipsub::Message) -> MessageId {
    MessageId::new(blake3::hash(&message.data).as_bytes())
}

/// The consortium's gossip topics: `(/breakwater/<consortium>/envelopes/1,
/// /breakwater/<consortium>/roster/1)`.
pub fn topics(consortium_hex: &str) -> (IdentTopic, IdentTopic) {
    (
        IdentTopic::new(format!("/breakwater/{consortium_hex}/envelopes/1")),
        IdentTopic::new(format!("/breakwater/{consortium_hex}/roster/1")),
    )
}

/// Builds the swarm of the node with identity `keypair` over `transport`.
///
/// The swarm runs its connection tasks on the current tokio runtime. Its allow-list is empty
/// and it is subscribed to nothing: the caller admits the roster with
/// [`Behaviour::set_allowed`], joins the topics with [`Behaviour::join_consortium`], and
/// listens and dials.
pub fn build_swarm(
    keypair: Keypair,
    transport: TransportKind,
    config: &NetConfig,
) -> Result<Swarm<Behaviour>, NetError> {
    let transport = transport.build(&keypair)?;
    let behaviour = Behaviour::new(&keypair, config)?;
    let local_peer_id = keypair.public().to_peer_id();
    Ok(Swarm::new(
        transport,
        behaviour,
        local_peer_id,
        swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(config.idle_connection_timeout),
    ))
}
