//! Hostile members: a raw libp2p swarm with a valid member key, built with the
//! node's own `net::build_swarm` over the simulated network, that gossips
//! garbage, envelopes with forged signatures or tampered payloads, and
//! equivocating pairs (two envelopes for one seq). It records what it sent so
//! the report can count honest acceptances of it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use breakwater_node::net::{self, NetConfig};
use breakwater_protocol::envelope::id_of;
use breakwater_protocol::fixture::bulletin_draft;
use breakwater_protocol::{Digest, NodeKeys, NodePublicKey, SignedRoster, Tlp, seal};
use futures::StreamExt;
use libp2p::gossipsub::MessageId;
use libp2p::{Multiaddr, PeerId};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::network::{Network, addr_of};

/// What a hostile node sent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostileLog {
    /// Messages that are not envelopes.
    pub garbage: u64,
    /// Envelopes claiming another member as author.
    pub forged: u64,
    /// Validly signed envelopes with a flipped payload byte.
    pub tampered: u64,
    /// Equivocating pairs `(seq, first, twin)`.
    pub twins: Vec<(u64, Digest, Digest)>,
    /// Ids of everything invalid it sent (garbage, forged, tampered).
    #[serde(skip)]
    pub invalid_ids: Vec<Digest>,
}

/// A running hostile node.
#[derive(Debug)]
pub struct HostileNode {
    /// Its roster index.
    pub index: usize,
    /// Its author key.
    pub key: NodePublicKey,
    /// What it sent so far.
    pub log: Arc<Mutex<HostileLog>>,
    attack: watch::Sender<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// What a hostile node needs to start.
#[derive(Debug)]
pub struct HostileSetup<'a> {
    /// The network.
    pub network: &'a Network,
    /// Its roster index.
    pub index: usize,
    /// Its keys (a real member's).
    pub keys: &'a NodeKeys,
    /// The roster.
    pub roster: &'a SignedRoster,
    /// Honest peers it lets in.
    pub honest: Vec<PeerId>,
    /// Author keys of honest members, to forge.
    pub victims: Vec<NodePublicKey>,
    /// Its topology neighbours.
    pub neighbours: Vec<usize>,
    /// Messages per second once attacking.
    pub rate_per_s: f64,
    /// Gossipsub heartbeat.
    pub heartbeat: Duration,
    /// Randomness.
    pub seed: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl HostileNode {
    /// Starts the swarm: it connects and subscribes, and attacks after [`HostileNode::attack`].
    pub fn spawn(setup: HostileSetup<'_>) -> anyhow::Result<HostileNode> {
        let config = NetConfig {
            heartbeat: setup.heartbeat,
            message_id_fn: Arc::new(|m| MessageId::new(id_of(&m.data).as_bytes())),
            ..NetConfig::default()
        };
        let mut swarm = net::build_swarm(
            setup.keys.libp2p_keypair(),
            setup.network.transport(setup.index),
            &config,
        )?;
        swarm
            .behaviour_mut()
            .set_allowed(setup.honest.iter().copied());
        let (topic, _) = swarm
            .behaviour_mut()
            .join_consortium(&setup.roster.roster.consortium_id().to_hex())?;
        swarm.listen_on(addr_of(setup.index).parse()?)?;
        for &peer in &setup.neighbours {
            let addr: Multiaddr = addr_of(peer).parse()?;
            let _ = swarm.dial(addr);
        }
        let log = Arc::new(Mutex::new(HostileLog::default()));
        let (attack, mut attacking) = watch::channel(false);
        let (stop, mut stopped) = oneshot::channel();
        let keys = setup.keys.clone();
        let roster = setup.roster.roster.clone();
        let victims = setup.victims;
        let task_log = log.clone();
        let gap = Duration::from_secs_f64(1.0 / setup.rate_per_s.max(0.1));
        let mut rng = ChaCha8Rng::seed_from_u64(setup.seed);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(gap);
            let mut seq = 0u64;
            let mut prev = Digest::ZERO;
            let mut step = 0u64;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    // Events are dropped, sync requests included: an unanswered
                    // request fails at once instead of timing out.
                    _ = swarm.select_next_some() => {}
                    _ = tick.tick() => {
                        if !*attacking.borrow_and_update() {
                            continue;
                        }
                        let now = now_ms();
                        let mut messages = Vec::new();
                        let mut log = task_log.lock().unwrap_or_else(|p| p.into_inner());
                        match step % 4 {
                            0 => {
                                let len = rng.random_range(16..2048);
                                let garbage: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                                log.garbage += 1;
                                log.invalid_ids.push(id_of(&garbage));
                                messages.push(garbage);
                            }
                            1 => {
                                let draft = bulletin_draft(seq + 1, prev, Tlp::Green, "forged", now);
                                if let Ok(mut envelope) = seal(&keys, &roster, draft, &[], &mut rng)
                                    && let Some(victim) = victims.get(rng.random_range(0..victims.len().max(1)))
                                {
                                    envelope.header.author = *victim;
                                    let bytes = envelope.encode();
                                    log.forged += 1;
                                    log.invalid_ids.push(id_of(&bytes));
                                    messages.push(bytes);
                                }
                            }
                            2 => {
                                let draft = bulletin_draft(seq + 1, prev, Tlp::Green, "tampered", now);
                                if let Ok(envelope) = seal(&keys, &roster, draft, &[], &mut rng) {
                                    let mut bytes = envelope.encode();
                                    let at = bytes.len() / 2;
                                    if let Some(b) = bytes.get_mut(at) {
                                        *b ^= 0x40;
                                    }
                                    log.tampered += 1;
                                    log.invalid_ids.push(id_of(&bytes));
                                    messages.push(bytes);
                                }
                            }
                            _ => {
                                seq += 1;
                                let first = seal(&keys, &roster, bulletin_draft(seq, prev, Tlp::Green, "first", now), &[], &mut rng);
                                let twin = seal(&keys, &roster, bulletin_draft(seq, prev, Tlp::Green, "equivocating twin", now), &[], &mut rng);
                                if let (Ok(first), Ok(twin)) = (first, twin) {
                                    prev = first.id();
                                    log.twins.push((seq, first.id(), twin.id()));
                                    messages.push(first.encode());
                                    messages.push(twin.encode());
                                }
                            }
                        }
                        drop(log);
                        step += 1;
                        for bytes in messages {
                            let _ = swarm.behaviour_mut().gossipsub.publish(topic.clone(), bytes);
                        }
                    }
                }
            }
        });
        Ok(HostileNode {
            index: setup.index,
            key: setup.keys.node_public(),
            log,
            attack,
            stop: Some(stop),
            task,
        })
    }

    /// Starts the attack.
    pub fn attack(&self) {
        let _ = self.attack.send(true);
    }

    /// Stops the swarm.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
