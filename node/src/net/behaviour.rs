//! The node's composed libp2p [`Behaviour`]: who may connect (roster allow-list, revocation
//! block-list, connection caps), gossipsub for the fast path, request-response for anti-entropy
//! sync, and ping/identify/mDNS housekeeping. The node's event loop owns the swarm and talks
//! to these sub-behaviours through the public fields and the helper methods here.

use std::{collections::HashSet, convert::Infallible, fmt, sync::Mutex, time::Duration};

use libp2p::{
    PeerId, allow_block_list,
    allow_block_list::{AllowedPeers, BlockedPeers},
    connection_limits::{self, ConnectionLimits},
    gossipsub::{self, IdentTopic, MessageAuthenticity, TopicHash, ValidationMode},
    identify,
    identity::Keypair,
    mdns,
    metrics::Registry,
    ping,
    request_response::{self, ProtocolSupport},
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
};

use super::{
    NetConfig, NetError,
    clock::{CLOCK_PROTOCOL, ClockCodec, ClockTime},
    codec::SYNC_PROTOCOL,
    codec::SyncCodec,
    inbound::InboundGate,
    topics,
};

/// Envelope size cap in bytes (256 KiB); mirrors the protocol crate's envelope limit.
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;

/// Gossipsub mesh degree (D).
pub const MESH_N: usize = 3;
/// Fewest mesh peers before grafting more (D_lo).
pub const MESH_N_LOW: usize = 2;
/// Most mesh peers before pruning (D_hi).
pub const MESH_N_HIGH: usize = 4;
/// Outbound connections the mesh keeps at least (D_out).
pub const MESH_OUTBOUND_MIN: usize = 1;
/// Non-mesh peers that get IHAVE gossip each heartbeat (D_lazy).
pub const GOSSIP_LAZY: usize = 6;

/// Room on top of [`MAX_ENVELOPE_BYTES`] for gossipsub's protobuf framing and topic name.
pub const GOSSIP_FRAMING_SLACK: usize = 16 * 1024;

/// The identify protocol version string Breakwater nodes announce.
pub const IDENTIFY_PROTOCOL: &str = "/breakwater/id/1";

/// The libp2p behaviour of a Breakwater node.
///
/// Field order matters: the connection gates (`allow`, `blocked`, `inbound`, `limits`) come first so that
/// a denied connection is refused before any protocol behaviour builds a handler for it.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "BehaviourEvent")]
pub struct Behaviour {
    /// Only peers in this set (the current roster's node keys) may connect, in either
    /// direction. Removing a peer closes its connections.
    pub allow: allow_block_list::Behaviour<AllowedPeers>,
    /// Peers refused even if allowed (revoked nodes), so that a stale or out-of-order roster
    /// can never re-admit them. Blocking a peer closes its connections.
    pub blocked: allow_block_list::Behaviour<BlockedPeers>,
    /// Pending inbound connections per source IP, with a reserve for members' IPs (the event
    /// loop sets them from the roster); see [`InboundGate`].
    pub inbound: InboundGate,
    /// Caps on pending and established connections; see [`NetConfig`].
    pub limits: connection_limits::Behaviour,
    /// Envelope and roster gossip: anonymous messages, application validation.
    pub gossipsub: gossipsub::Behaviour,
    /// Anti-entropy sync on [`SYNC_PROTOCOL`]: opaque byte requests and responses.
    pub sync: request_response::Behaviour<SyncCodec>,
    /// Wall-clock exchange on [`CLOCK_PROTOCOL`], for the clock offset
    /// against each peer.
    pub clock: request_response::Behaviour<ClockCodec>,
    /// Liveness checks; failures close dead connections.
    pub ping: ping::Behaviour,
    /// Exchanges listen addresses and protocols with connected peers.
    pub identify: identify::Behaviour,
    /// Local-network discovery, present only when [`NetConfig::enable_mdns`] is set.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

/// An event from one of the protocol behaviours (the connection gates emit none).
#[derive(Debug)]
pub enum BehaviourEvent {
    /// A gossipsub event: a message to validate, a (un)subscription, a slow peer.
    Gossipsub(gossipsub::Event),
    /// An anti-entropy sync request, response or failure.
    Sync(request_response::Event<Vec<u8>, Vec<u8>>),
    /// A clock request, response or failure.
    Clock(request_response::Event<ClockTime, ClockTime>),
    /// A ping result.
    Ping(ping::Event),
    /// An identify exchange (boxed: it carries the peer's full info).
    Identify(Box<identify::Event>),
    /// Peers discovered or expired by mDNS.
    Mdns(mdns::Event),
}

impl From<Infallible> for BehaviourEvent {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

impl From<gossipsub::Event> for BehaviourEvent {
    fn from(event: gossipsub::Event) -> Self {
        BehaviourEvent::Gossipsub(event)
    }
}

impl From<request_response::Event<Vec<u8>, Vec<u8>>> for BehaviourEvent {
    fn from(event: request_response::Event<Vec<u8>, Vec<u8>>) -> Self {
        BehaviourEvent::Sync(event)
    }
}

impl From<request_response::Event<ClockTime, ClockTime>> for BehaviourEvent {
    fn from(event: request_response::Event<ClockTime, ClockTime>) -> Self {
        BehaviourEvent::Clock(event)
    }
}

impl From<ping::Event> for BehaviourEvent {
    fn from(event: ping::Event) -> Self {
        BehaviourEvent::Ping(event)
    }
}

impl From<identify::Event> for BehaviourEvent {
    fn from(event: identify::Event) -> Self {
        BehaviourEvent::Identify(Box::new(event))
    }
}

impl From<mdns::Event> for BehaviourEvent {
    fn from(event: mdns::Event) -> Self {
        BehaviourEvent::Mdns(event)
    }
}

/// What [`Behaviour::set_allowed`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowListChange {
    /// Peers newly allowed (candidates to dial).
    pub added: Vec<PeerId>,
    /// Peers no longer allowed; their connections are being closed.
    pub removed: Vec<PeerId>,
}

impl Behaviour {
    /// Builds the behaviour for the node with identity `keypair`.
    ///
    /// The allow-list starts empty: no peer can connect until [`Behaviour::set_allowed`] (or
    /// [`Behaviour::allow_peer`]) admits it.
    pub fn new(keypair: &Keypair, config: &NetConfig) -> Result<Self, NetError> {
        let local_peer_id = keypair.public().to_peer_id();

        let mut gossipsub = gossipsub_behaviour(config, gossipsub_config(config)?)?;
        gossipsub
            .with_peer_score(peer_score_params(), peer_score_thresholds())
            .map_err(|reason| NetError::PeerScore { reason })?;

        let sync = request_response::Behaviour::with_codec(
            SyncCodec::default(),
            [(SYNC_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.sync_request_timeout)
                .with_max_concurrent_streams(config.max_concurrent_sync_streams),
        );

        let clock = request_response::Behaviour::with_codec(
            ClockCodec,
            [(CLOCK_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
        );

        let limits = connection_limits::Behaviour::new(
            ConnectionLimits::default()
                .with_max_pending_incoming(Some(config.max_pending_incoming))
                .with_max_pending_outgoing(Some(config.max_pending_outgoing))
                .with_max_established(Some(config.max_established))
                .with_max_established_per_peer(Some(config.max_established_per_peer)),
        );

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), keypair.public())
                .with_agent_version(format!("breakwater/{}", env!("CARGO_PKG_VERSION"))),
        );

        let mdns = if config.enable_mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), local_peer_id)
                    .map_err(NetError::Mdns)?,
            )
        } else {
            None
        };

        Ok(Self {
            allow: allow_block_list::Behaviour::default(),
            blocked: allow_block_list::Behaviour::default(),
            inbound: InboundGate::new(config.max_pending_incoming as usize),
            limits,
            gossipsub,
            sync,
            clock,
            ping: ping::Behaviour::new(ping::Config::new().with_interval(config.ping_interval)),
            identify,
            mdns: Toggle::from(mdns),
        })
    }

    /// Admits `peer`; returns whether it was newly added.
    pub fn allow_peer(&mut self, peer: PeerId) -> bool {
        self.allow.allow_peer(peer)
    }

    /// Removes `peer` from the allow-list and closes every connection to it; returns whether
    /// it was allowed before.
    pub fn disallow_peer(&mut self, peer: PeerId) -> bool {
        self.allow.disallow_peer(peer)
    }

    /// Replaces the allow-list with `peers` (the node keys of the current roster).
    ///
    /// Peers that drop out have their connections closed (the allow-list behaviour does that
    /// itself when a peer is disallowed); the returned change lists who was added and removed.
    pub fn set_allowed(&mut self, peers: impl IntoIterator<Item = PeerId>) -> AllowListChange {
        let wanted: HashSet<PeerId> = peers.into_iter().collect();
        let removed: Vec<PeerId> = self
            .allow
            .allowed_peers()
            .iter()
            .filter(|peer| !wanted.contains(peer))
            .copied()
            .collect();
        for peer in &removed {
            self.allow.disallow_peer(*peer);
        }
        let added: Vec<PeerId> = wanted
            .into_iter()
            .filter(|peer| self.allow.allow_peer(*peer))
            .collect();
        AllowListChange { added, removed }
    }

    /// The peers currently on the allow-list.
    pub fn allowed_peers(&self) -> &HashSet<PeerId> {
        self.allow.allowed_peers()
    }

    /// Refuses `peer` regardless of the allow-list (revocation) and closes its connections;
    /// returns whether it was newly blocked.
    pub fn block_peer(&mut self, peer: PeerId) -> bool {
        self.blocked.block_peer(peer)
    }

    /// Lifts a block set by [`Behaviour::block_peer`]; returns whether `peer` was blocked.
    pub fn unblock_peer(&mut self, peer: PeerId) -> bool {
        self.blocked.unblock_peer(peer)
    }

    /// Whether a connection with `peer` would currently be admitted.
    pub fn is_permitted(&self, peer: &PeerId) -> bool {
        self.allow.allowed_peers().contains(peer) && !self.blocked.blocked_peers().contains(peer)
    }

    /// Subscribes to the consortium's envelope and roster topics and installs their peer
    /// scoring parameters; returns `(envelopes, roster)`.
    ///
    /// `consortium_hex` is the consortium id in lower-case hex.
    pub fn join_consortium(
        &mut self,
        consortium_hex: &str,
    ) -> Result<(IdentTopic, IdentTopic), NetError> {
        if consortium_hex.is_empty()
            || !consortium_hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(NetError::InvalidConsortium {
                consortium: consortium_hex.chars().take(80).collect(),
            });
        }
        let (envelopes, roster) = topics(consortium_hex);
        for topic in [&envelopes, &roster] {
            self.gossipsub
                .set_topic_params(topic.clone(), topic_score_params())
                .map_err(|reason| NetError::PeerScore {
                    reason: reason.to_owned(),
                })?;
            self.gossipsub
                .subscribe(topic)
                .map_err(|source| NetError::Subscribe {
                    topic: topic.to_string(),
                    source,
                })?;
        }
        Ok((envelopes, roster))
    }
}

impl fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Behaviour")
            .field("allowed", &self.allow.allowed_peers().len())
            .field("blocked", &self.blocked.blocked_peers().len())
            .field("mdns", &self.mdns.is_enabled())
            .finish_non_exhaustive()
    }
}

/// The gossipsub configuration of a node: [`gossipsub_config_builder`] plus application
/// validation, so nothing is forwarded until the node reports a verdict.
pub fn gossipsub_config(config: &NetConfig) -> Result<gossipsub::Config, NetError> {
    gossipsub_config_builder(config)
        .validate_messages()
        .build()
        .map_err(NetError::GossipsubConfig)
}

/// Every gossipsub setting of a node except application validation: anonymous,
/// content-addressed messages, flood publishing, IDONTWANT, the envelope size cap and the
/// heartbeat. The benchmark's raw-gossipsub baseline builds its swarms from this too.
pub fn gossipsub_config_builder(config: &NetConfig) -> gossipsub::ConfigBuilder {
    let message_id_fn = config.message_id_fn.clone();
    let mut builder = gossipsub::ConfigBuilder::default();
    builder
        // The envelope carries its own signature; gossipsub's author/seqno/signature fields
        // must be absent, which `Anonymous` validation enforces on receipt.
        .validation_mode(ValidationMode::Anonymous)
        .message_id_fn(move |message| message_id_fn(message))
        .flood_publish(true)
        // A mesh of 3 (2..=4) instead of gossipsub's 6 (5..=12): each node receives an envelope
        // from about as many mesh peers as forward it, so the mesh degree sets the duplicates.
        // Lazy gossip (IHAVE to 6 more peers) and anti-entropy cover what a thinner mesh misses.
        .mesh_n(MESH_N)
        .mesh_n_low(MESH_N_LOW)
        .mesh_n_high(MESH_N_HIGH)
        .mesh_outbound_min(MESH_OUTBOUND_MIN)
        .gossip_lazy(GOSSIP_LAZY)
        // IDONTWANT (gossipsub v1.2) is on for every message above the threshold; envelopes are
        // rarely smaller than this, and the control message is ~40 bytes a peer.
        .idontwant_message_size_threshold(256)
        .idontwant_on_publish(true)
        .max_transmit_size(MAX_ENVELOPE_BYTES + GOSSIP_FRAMING_SLACK)
        .heartbeat_interval(config.heartbeat)
        .heartbeat_initial_delay(config.heartbeat);
    builder
}

/// A gossipsub behaviour with `gossipsub_config`, anonymous authorship, and its metrics in
/// [`NetConfig::metrics`] (prefixed `gossipsub_`) when set.
pub fn gossipsub_behaviour(
    config: &NetConfig,
    gossipsub_config: gossipsub::Config,
) -> Result<gossipsub::Behaviour, NetError> {
    let mut gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossipsub_config)
        .map_err(|reason| NetError::Gossipsub {
            reason: reason.to_owned(),
        })?;
    if let Some(registry) = &config.metrics {
        let mut registry = registry.lock().unwrap_or_else(|p| p.into_inner());
        gossipsub = gossipsub.with_metrics(
            registry.sub_registry_with_prefix("gossipsub"),
            gossipsub::MetricsConfig::default(),
        );
    }
    Ok(gossipsub)
}

/// Gossip messages received on `topic`, duplicates included, from the metrics a
/// [`gossipsub_behaviour`] registered in `registry` (gossipsub drops known message ids before
/// the application sees them, so only its own counter sees duplicates).
pub fn gossip_messages_received(registry: &Mutex<Registry>, topic: &TopicHash) -> u64 {
    let registry = registry.lock().unwrap_or_else(|p| p.into_inner());
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        return 0;
    }
    let label = format!("hash=\"{}\"", topic.as_str());
    text.lines()
        .filter(|line| line.starts_with("gossipsub_topic_msg_recv_counts_unfiltered_total{"))
        .filter(|line| line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Global peer-scoring parameters.
///
/// Every peer is an allow-listed roster member, so the anti-Sybil terms are off (IP
/// colocation: organisations behind one NAT, and simulations on one host, are normal) and
/// scoring exists to shed peers that relay invalid data or misbehave in the protocol.
/// [`gossipsub::Behaviour::set_application_score`] (weight 1) lets the node punish, e.g.,
/// equivocation directly.
pub fn peer_score_params() -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        topic_score_cap: 50.0,
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: -10.0,
        behaviour_penalty_threshold: 6.0,
        behaviour_penalty_decay: gossipsub::score_parameter_decay(Duration::from_secs(600)),
        ..gossipsub::PeerScoreParams::default()
    }
}

/// Score thresholds. One rejected message costs -10 (no effect), two -40 (no gossip or
/// publishes to the peer), three -90 (graylisted: its RPCs are ignored); the penalty decays to
/// nothing over about ten minutes.
pub fn peer_score_thresholds() -> gossipsub::PeerScoreThresholds {
    gossipsub::PeerScoreThresholds {
        gossip_threshold: -20.0,
        publish_threshold: -40.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    }
}

/// Per-topic scoring for the envelope and roster topics: the mesh-delivery penalties (P3,
/// P3b) are off because bulletins are rare and a quiet mesh peer is not a faulty one; invalid
/// messages (P4) are penalised; time in mesh and first deliveries earn a small, capped credit.
pub fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 3600.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(3600)),
        first_message_deliveries_cap: 20.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(
            600,
        )),
        ..gossipsub::TopicScoreParams::default()
    }
}
