//! The event loop: owns the swarm and nothing else. Its `select!` arms only
//! produce events; `on_command`, `on_swarm_event`, `on_outcome` and the
//! timers act on them, moving bytes between the swarm and the store worker.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use breakwater_protocol::{NodePublicKey, Roster};
use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::metrics::Registry;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm};
use rand::seq::IteratorRandom;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info};

mod scores;

pub(crate) use self::scores::{Misbehaviour, Scores};
use crate::handle::{Command, NetworkView, NodeEvent, PeerInfo};
use crate::job::{Job, JobSenders, Origin, Outcome};
use crate::net::clock::{ClockTime, offset_ms};
use crate::net::{Behaviour, BehaviourEvent};

/// Peers a sync tick starts rounds with. Rounds with several peers fetch
/// each range once (the worker leaves ranges one round fetches to it), so a
/// second peer costs a Hello, and what one peer missed spreads about twice
/// as fast.
const TICK_PEERS: usize = 2;

/// Redial state of one roster peer.
#[derive(Debug)]
pub(crate) struct Redial {
    next: Instant,
    backoff: Duration,
}

pub(crate) struct EventLoop {
    pub swarm: Swarm<Behaviour>,
    pub commands: mpsc::Receiver<Command>,
    pub outcomes: mpsc::Receiver<Outcome>,
    pub jobs: JobSenders,
    pub events: broadcast::Sender<NodeEvent>,
    pub envelopes_topic: IdentTopic,
    pub roster_topic: IdentTopic,
    pub roster: Roster,
    pub bootstrap: Vec<Multiaddr>,
    pub sync_interval: Duration,
    pub max_backoff: Duration,
    pub pending_replies: HashMap<u64, ResponseChannel<Vec<u8>>>,
    pub pending_requests: HashMap<OutboundRequestId, PeerId>,
    pub next_token: u64,
    pub redial: HashMap<PeerId, Redial>,
    pub connected: HashMap<PeerId, HashSet<Multiaddr>>,
    pub listeners: Vec<ListenerId>,
    /// Peers whose failed sync round was retried once already; cleared by a
    /// response, so a peer that keeps failing waits for the next interval.
    pub retried: HashSet<PeerId>,
    /// Organisations whose nodes this node dials (`None`: every member).
    pub dial_orgs: Option<HashSet<String>>,
    /// Gossipsub's metrics.
    pub metrics: Arc<Mutex<Registry>>,
    /// Breakwater's own series (in the same registry).
    pub breakwater_metrics: crate::metrics::Metrics,
    /// What this node holds against peers, applied as gossipsub application
    /// scores.
    pub scores: Scores,
    /// Clock requests in flight, with our clock when each was sent.
    pub pending_clock: HashMap<OutboundRequestId, u64>,
    /// Each connected peer's clock minus ours (ms), from the last exchange.
    pub clock_offsets: HashMap<PeerId, i64>,
}

impl Drop for EventLoop {
    /// Releases listen addresses however the loop ends (shutdown or abort),
    /// as the OS releases a crashed process's ports.
    fn drop(&mut self) {
        for id in self.listeners.drain(..) {
            self.swarm.remove_listener(id);
        }
        // The worker stops with the event loop, whoever still holds a handle.
        if let Err(mpsc::error::TrySendError::Full(stop)) = self.jobs.try_send(Job::Stop) {
            let jobs = self.jobs.clone();
            std::thread::spawn(move || {
                let _ = jobs.blocking_send(stop);
            });
        }
    }
}

impl EventLoop {
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut sync_tick = tokio::time::interval(self.sync_interval);
        let mut dial_tick = tokio::time::interval(Duration::from_millis(500));
        // Expired plaintext is pruned every minute, or more often when sync is
        // scaled down (tests, simulations).
        // The first prune waits one period: a start has enough to do, and a
        // status request must not queue behind a scan of every record.
        let prune_every = Duration::from_secs(60).min(self.sync_interval * 4);
        let mut prune_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + prune_every, prune_every);
        self.apply_roster();
        for addr in self.bootstrap.clone() {
            let _ = self.swarm.dial(addr);
        }
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(outcome) = self.outcomes.recv() => self.on_outcome(outcome),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = sync_tick.tick() => self.on_sync_tick(None),
                _ = dial_tick.tick() => {
                    self.maintain_connections();
                    self.decay_scores();
                }
                _ = prune_tick.tick() => {
                    self.to_worker(Job::Prune);
                    let peers: Vec<PeerId> = self.connected.keys().copied().collect();
                    for peer in peers {
                        self.ask_clock(peer);
                    }
                }
            }
        }
        info!("event loop stopped");
    }

    /// Hands a job to the worker without ever blocking the event loop. A full
    /// queue drops the job: gossip messages are then reported `Ignore` and
    /// anti-entropy delivers them later.
    fn to_worker(&self, job: Job) -> bool {
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(e) => {
                debug!("store worker busy, dropping a job: {e}");
                false
            }
        }
    }

    /// Hands the end of one of our sync requests (an answer or a failure) to
    /// the worker without ever dropping it: while a request is outstanding
    /// its round keeps other rounds from asking for the same ranges, so the
    /// worker must learn how it ended. A full queue is waited on in a task.
    fn to_worker_surely(&self, job: Job) {
        if let Err(mpsc::error::TrySendError::Full(job)) = self.jobs.try_send(job) {
            debug!("store worker busy, a sync answer waits for room");
            let jobs = self.jobs.clone();
            tokio::spawn(async move {
                let _ = jobs.send(job).await;
            });
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Network { reply } => {
                let gossip_received = self.gossip_received();
                let peers = self
                    .connected
                    .iter()
                    .map(|(peer, addrs)| PeerInfo {
                        peer_id: peer.to_string(),
                        org_id: NodePublicKey::from_peer_id(peer).and_then(|k| {
                            self.roster.node(&k).map(|(m, _)| m.card.org_id.to_string())
                        }),
                        addrs: addrs.iter().map(|a| a.to_string()).collect(),
                        clock_offset_ms: self.clock_offsets.get(peer).copied(),
                    })
                    .collect();
                let listen = self.swarm.listeners().cloned().collect();
                let _ = reply.send(NetworkView {
                    peers,
                    listen,
                    gossip_received,
                });
            }
            Command::Dial { addr } => {
                if let Err(e) = self.swarm.dial(addr) {
                    debug!("dial failed: {e}");
                }
            }
            Command::Sync { peer } => self.on_sync_tick(peer),
            Command::GossipScore { peer, reply } => {
                let _ = reply.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
            }
        }
    }

    /// Holds `what` against `peer` and applies its new application score
    /// (gossipsub keeps it only while the peer is connected; the next decay
    /// re-applies it).
    fn misbehaved(&mut self, peer: PeerId, what: Misbehaviour) {
        let score = self.scores.record(peer, what);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, score);
    }

    /// Decays what is held against peers and applies the scores.
    fn decay_scores(&mut self) {
        for (peer, score) in self.scores.decay(Instant::now()) {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .set_application_score(&peer, score);
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Verdict {
                message_id,
                source,
                acceptance,
            } => self.report(&message_id, &source, acceptance),
            Outcome::PublishEnvelope(bytes) => self.publish(self.envelopes_topic.clone(), bytes),
            Outcome::PublishRoster(bytes) => self.publish(self.roster_topic.clone(), bytes),
            Outcome::SyncRequest { peer, request } => {
                if self.connected.contains_key(&peer) {
                    let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                    self.pending_requests.insert(id, peer);
                } else {
                    // The peer left: the round ends, and what it would have
                    // fetched is asked of others.
                    self.to_worker_surely(Job::SyncFailed { peer, retry: false });
                }
            }
            Outcome::SyncReply { token, response } => {
                if let Some(channel) = self.pending_replies.remove(&token) {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, response);
                }
            }
            Outcome::RosterApplied(roster) => {
                self.roster = roster.roster;
                self.apply_roster();
            }
            Outcome::Misbehaved { peer, what } => self.misbehaved(peer, what),
        }
    }

    /// Reports a gossip validation verdict (forward, drop, or drop and score down).
    fn report(
        &mut self,
        message_id: &gossipsub::MessageId,
        source: &PeerId,
        acceptance: MessageAcceptance,
    ) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(message_id, source, acceptance);
    }

    fn publish(&mut self, topic: IdentTopic, bytes: Vec<u8>) {
        // No subscribed peer is normal (alone, or partitioned): anti-entropy
        // delivers what gossip cannot.
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            debug!("gossip publish did not go out: {e}");
        }
    }

    /// Admits exactly the roster's active nodes, blocks revoked ones, and
    /// schedules dials to members we are not connected to.
    fn apply_roster(&mut self) {
        let me = *self.swarm.local_peer_id();
        let allowed: Vec<PeerId> = self
            .roster
            .allowed_peers()
            .into_iter()
            .filter(|p| *p != me)
            .collect();
        let change = self
            .swarm
            .behaviour_mut()
            .set_allowed(allowed.iter().copied());
        for member in self.roster.members.iter().filter(|m| m.revoked) {
            for node in &member.card.nodes {
                if let Some(peer) = node.node_key.peer_id() {
                    self.swarm.behaviour_mut().block_peer(peer);
                    self.redial.remove(&peer);
                }
            }
        }
        for peer in &change.removed {
            self.redial.remove(peer);
        }
        // Members' IPs keep a reserve of pending inbound slots (M3).
        let member_ips: Vec<std::net::IpAddr> = self
            .roster
            .members
            .iter()
            .filter(|m| !m.revoked)
            .flat_map(|m| m.card.nodes.iter())
            .flat_map(|node| node.addrs.iter())
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .filter_map(|a| crate::net::inbound::ip_of(&a))
            .collect();
        self.swarm
            .behaviour_mut()
            .inbound
            .set_roster_ips(member_ips);
        let now = Instant::now();
        for peer in allowed {
            if !self.dials(&peer) {
                continue;
            }
            self.redial.entry(peer).or_insert(Redial {
                next: now,
                backoff: Duration::from_millis(250),
            });
        }
    }

    /// Whether this node dials `peer` (a roster node) itself; others may
    /// still dial in.
    fn dials(&self, peer: &PeerId) -> bool {
        let Some(orgs) = &self.dial_orgs else {
            return true;
        };
        NodePublicKey::from_peer_id(peer)
            .and_then(|k| self.roster.node(&k).map(|(m, _)| m.card.org_id.to_string()))
            .is_some_and(|org| orgs.contains(&org))
    }

    /// Envelope gossip messages received, duplicates included.
    fn gossip_received(&self) -> u64 {
        crate::net::behaviour::gossip_messages_received(&self.metrics, &self.envelopes_topic.hash())
    }

    fn addresses_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let Some(key) = NodePublicKey::from_peer_id(peer) else {
            return Vec::new();
        };
        self.roster
            .node(&key)
            .map(|(_, node)| {
                // Only the shapes a card may carry (L4), also from a roster
                // stored before cards were checked for them.
                node.addrs
                    .iter()
                    .filter(|a| breakwater_protocol::check_addr(a).is_ok())
                    .filter_map(|a| a.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn maintain_connections(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .redial
            .iter()
            .filter(|(peer, r)| r.next <= now && !self.connected.contains_key(peer))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            let addrs = self.addresses_of(&peer);
            if let Some(r) = self.redial.get_mut(&peer) {
                r.next = now + r.backoff;
                r.backoff = (r.backoff * 2).min(self.max_backoff);
            }
            if addrs.is_empty() {
                continue;
            }
            let opts = DialOpts::peer_id(peer).addresses(addrs).build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, "dial not started: {e}");
            }
        }
        if self.connected.is_empty() {
            for addr in self.bootstrap.clone() {
                let _ = self.swarm.dial(addr);
            }
        }
    }

    /// Asks `peer` for its clock (answered in [`Self::on_behaviour_event`]).
    fn ask_clock(&mut self, peer: PeerId) {
        let now = crate::worker::now_ms();
        let id = self
            .swarm
            .behaviour_mut()
            .clock
            .send_request(&peer, ClockTime(now));
        self.pending_clock.insert(id, now);
    }

    /// Starts a round with `peer`, or on the tick with [`TICK_PEERS`] random
    /// peers.
    fn on_sync_tick(&mut self, peer: Option<PeerId>) {
        let peers = match peer {
            Some(peer) => vec![peer],
            None => self
                .connected
                .keys()
                .copied()
                .sample(&mut rand::rng(), TICK_PEERS),
        };
        for peer in peers {
            self.to_worker(Job::StartSync { peer });
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr { address, .. } => info!(%address, "listening"),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let first = num_established.get() == 1;
                self.connected
                    .entry(peer_id)
                    .or_default()
                    .insert(endpoint.get_remote_address().clone());
                if let Some(r) = self.redial.get_mut(&peer_id) {
                    r.backoff = Duration::from_millis(250);
                }
                if first {
                    info!(peer = %peer_id, "peer connected");
                    let _ = self.events.send(NodeEvent::PeerConnected {
                        peer: peer_id.to_string(),
                    });
                    self.to_worker(Job::StartSync { peer: peer_id });
                    self.ask_clock(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if let Some(addrs) = self.connected.get_mut(&peer_id) {
                    addrs.remove(endpoint.get_remote_address());
                }
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                    self.clock_offsets.remove(&peer_id);
                    info!(peer = %peer_id, "peer disconnected");
                    let _ = self.events.send(NodeEvent::PeerDisconnected {
                        peer: peer_id.to_string(),
                    });
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                debug!("incoming connection refused: {error}")
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, "dial failed: {error}");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let job = if message.topic == self.envelopes_topic.hash() {
                    Job::Ingest {
                        items: vec![message.data],
                        origin: Origin::Gossip {
                            message_id: message_id.clone(),
                            source: propagation_source,
                        },
                    }
                } else if message.topic == self.roster_topic.hash() {
                    Job::GossipRoster {
                        bytes: message.data,
                        message_id: message_id.clone(),
                        source: propagation_source,
                    }
                } else {
                    self.report(&message_id, &propagation_source, MessageAcceptance::Reject);
                    return;
                };
                if !self.to_worker(job) {
                    self.breakwater_metrics.ignored("queue_full");
                    self.report(&message_id, &propagation_source, MessageAcceptance::Ignore);
                }
            }
            BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        let token = self.next_token;
                        self.next_token += 1;
                        if self.to_worker(Job::ServeSync {
                            peer,
                            request,
                            token,
                        }) {
                            self.pending_replies.insert(token, channel);
                        }
                    }
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        self.pending_requests.remove(&request_id);
                        self.retried.remove(&peer);
                        self.to_worker_surely(Job::SyncAnswer { peer, response });
                    }
                }
            }
            BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            }) => {
                self.pending_requests.remove(&request_id);
                debug!(%peer, "sync request failed: {error}");
                // A round cut short (a connection replaced during a
                // simultaneous dial, a busy peer) starts again at once rather
                // than waiting a whole sync interval.
                let retry = self.connected.contains_key(&peer) && self.retried.insert(peer);
                self.to_worker_surely(Job::SyncFailed { peer, retry });
            }
            BehaviourEvent::Clock(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request { channel, .. } => {
                        let now = ClockTime(crate::worker::now_ms());
                        let _ = self.swarm.behaviour_mut().clock.send_response(channel, now);
                    }
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        if let Some(sent) = self.pending_clock.remove(&request_id) {
                            let offset = offset_ms(sent, response.0, crate::worker::now_ms());
                            debug!(%peer, offset_ms = offset, "clock offset");
                            if self.connected.contains_key(&peer) {
                                self.clock_offsets.insert(peer, offset);
                            }
                        }
                    }
                }
            }
            BehaviourEvent::Clock(request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            }) => {
                self.pending_clock.remove(&request_id);
                debug!(%peer, "clock request failed: {error}");
            }
            BehaviourEvent::Sync(request_response::Event::InboundFailure {
                peer, error, ..
            }) => {
                debug!(%peer, "sync response failed: {error}");
            }
            _ => {}
        }
    }
}
