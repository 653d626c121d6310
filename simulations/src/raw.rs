//! The raw-gossipsub baseline of `bench`: one plain rust-libp2p gossipsub
//! swarm per node over the same simulated network, topology, link shape, seed
//! and publishing script as a Breakwater phase, carrying seeded random
//! payloads of the envelope's size. No sealing, no validation, no storage:
//! a message counts as arrived when gossipsub hands it to the application.
//!
//! The swarms use the node's own gossipsub settings
//! ([`net::behaviour::gossipsub_config_builder`]) without application
//! validation, the same Noise + Yamux upgrade ([`Network::transport`]) and
//! dial only their topology neighbours, as Breakwater nodes do with
//! `dial_orgs`. The phase returns the same [`PhaseData`] as
//! [`crate::run::run_phase`], so one `metrics::figures` measures both.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use breakwater_node::net::{self, NetConfig};
use breakwater_protocol::{Digest, NodePublicKey};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::identity::Keypair;
use libp2p::metrics::Registry;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{self, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::machine;
use crate::network::{Network, addr_of};
use crate::run::{CONNECT_DEADLINE, CopyCounts, PhaseData, Publication, StoredRecord, lock};
use crate::scenario::{Action, Plan};

/// How often a swarm redials neighbours it is not connected to.
const REDIAL: Duration = Duration::from_millis(500);

/// What a raw node reports about itself.
#[derive(Debug, Clone, Copy, Default)]
struct RawStatus {
    peers: usize,
    received: u64,
    first: u64,
}

enum RawCommand {
    Publish {
        data: Vec<u8>,
        reply: oneshot::Sender<bool>,
    },
    Status(oneshot::Sender<RawStatus>),
}

struct RawNode {
    commands: mpsc::Sender<RawCommand>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

type Arrivals = Arc<Mutex<Vec<StoredRecord>>>;

/// The identity of raw node `i` under `seed`.
fn keypair(seed: u64, i: usize) -> anyhow::Result<Keypair> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7a70_0000 ^ ((i as u64) << 20));
    let mut secret = [0u8; 32];
    rng.fill(&mut secret);
    Keypair::ed25519_from_bytes(secret).context("raw node key")
}

/// Stand-in author key for the shared record type.
fn author_key(i: usize) -> NodePublicKey {
    NodePublicKey(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes())
}

struct Setup {
    index: usize,
    keypair: Keypair,
    neighbours: Vec<(PeerId, Multiaddr)>,
    heartbeat: Duration,
    network: Network,
    origin: Instant,
    arrivals: Arrivals,
}

fn spawn_node(setup: Setup) -> anyhow::Result<RawNode> {
    let registry = Arc::new(Mutex::new(Registry::default()));
    let config = NetConfig {
        heartbeat: setup.heartbeat,
        metrics: Some(registry.clone()),
        ..NetConfig::default()
    };
    let gossipsub_config = net::behaviour::gossipsub_config_builder(&config)
        .build()
        .context("raw gossipsub config")?;
    let mut behaviour = net::behaviour::gossipsub_behaviour(&config, gossipsub_config)?;
    let topic = IdentTopic::new("/bench/raw/1");
    behaviour.subscribe(&topic)?;
    let transport = setup.network.transport(setup.index).build(&setup.keypair)?;
    let peer_id = setup.keypair.public().to_peer_id();
    let mut swarm = Swarm::new(
        transport,
        behaviour,
        peer_id,
        swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(config.idle_connection_timeout),
    );
    swarm.listen_on(addr_of(setup.index).parse()?)?;
    let (commands, mut inbox) = mpsc::channel(1024);
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let Setup {
            index,
            neighbours,
            origin,
            arrivals,
            ..
        } = setup;
        let hash = topic.hash();
        let mut first = 0u64;
        let mut redial = tokio::time::interval(REDIAL);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                command = inbox.recv() => match command {
                    Some(RawCommand::Publish { data, reply }) => {
                        let sent = swarm.behaviour_mut().publish(topic.clone(), data).is_ok();
                        let _ = reply.send(sent);
                    }
                    Some(RawCommand::Status(reply)) => {
                        let _ = reply.send(RawStatus {
                            peers: swarm.connected_peers().count(),
                            received: net::behaviour::gossip_messages_received(&registry, &hash),
                            first,
                        });
                    }
                    None => break,
                },
                event = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) = event {
                        first += 1;
                        let t_ms = origin.elapsed().as_secs_f64() * 1000.0;
                        let id = Digest(*blake3::hash(&message.data).as_bytes());
                        lock(&arrivals).push(StoredRecord {
                            node: index,
                            id,
                            author: author_key(0),
                            seq: 0,
                            readable: true,
                            t_ms,
                        });
                    }
                }
                _ = redial.tick() => {
                    for (peer, addr) in &neighbours {
                        if !swarm.is_connected(peer) {
                            let opts = DialOpts::peer_id(*peer)
                                .condition(PeerCondition::DisconnectedAndNotDialing)
                                .addresses(vec![addr.clone()])
                                .build();
                            let _ = swarm.dial(opts);
                        }
                    }
                }
            }
        }
    });
    Ok(RawNode {
        commands,
        stop,
        task,
    })
}

async fn statuses(nodes: &[RawNode]) -> Vec<RawStatus> {
    futures::future::join_all(nodes.iter().map(|node| async move {
        let (reply, answer) = oneshot::channel();
        if node.commands.send(RawCommand::Status(reply)).await.is_err() {
            return RawStatus::default();
        }
        answer.await.unwrap_or_default()
    }))
    .await
}

/// Runs `plan`'s publishing script over raw gossipsub with payloads of
/// `payload_bytes` and returns what was measured. The plan may only publish
/// GREEN (every node is an intended recipient); anything else is an error.
pub async fn run_raw_phase(plan: &Plan, payload_bytes: usize) -> anyhow::Result<PhaseData> {
    let n = plan.n();
    let scenario = &plan.scenario;
    if !plan.hostile.is_empty() || !plan.late.is_empty() {
        anyhow::bail!("the raw gossipsub baseline runs unimpaired plans only");
    }
    if let Some(timed) = plan
        .actions
        .iter()
        .find(|t| !matches!(&t.action, Action::Publish { to, .. } if to.is_empty()))
    {
        anyhow::bail!(
            "the raw gossipsub baseline only publishes GREEN; the plan has {:?}",
            timed.action
        );
    }
    machine::reset_peak_rss();
    let cpu_before = machine::cpu_seconds();
    let started = Instant::now();
    let keys: Vec<Keypair> = (0..n)
        .map(|i| keypair(plan.seed, i))
        .collect::<anyhow::Result<_>>()?;
    let peer_ids: Vec<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let network = Network::new(n, plan.seed, plan.links.clone());
    network.set_shape(scenario.link.shape());
    let origin = Instant::now();
    let arrivals: Arrivals = Arc::new(Mutex::new(Vec::new()));
    let mut nodes = Vec::with_capacity(n);
    for (i, keypair) in keys.into_iter().enumerate() {
        let neighbours = plan
            .neighbours
            .get(i)
            .into_iter()
            .flatten()
            .map(|&j| Ok((peer_ids[j], addr_of(j).parse()?)))
            .collect::<anyhow::Result<_>>()?;
        nodes.push(spawn_node(Setup {
            index: i,
            keypair,
            neighbours,
            heartbeat: Duration::from_millis(scenario.node.heartbeat_ms),
            network: network.clone(),
            origin,
            arrivals: arrivals.clone(),
        })?);
    }
    let result = drive(plan, &network, &nodes, payload_bytes, origin, &arrivals).await;
    for node in nodes {
        let _ = node.stop.send(());
        let _ = node.task.await;
    }
    let mut data = result?;
    data.startup_s = started.elapsed().as_secs_f64() - (data.end_ms / 1000.0);
    data.cpu_seconds = machine::cpu_seconds() - cpu_before;
    data.peak_rss_mb = machine::peak_rss_mb();
    Ok(data)
}

async fn drive(
    plan: &Plan,
    network: &Network,
    nodes: &[RawNode],
    payload_bytes: usize,
    origin: Instant,
    arrivals: &Arrivals,
) -> anyhow::Result<PhaseData> {
    let n = plan.n();
    let scenario = &plan.scenario;
    // Every node connected to each of its neighbours, as for Breakwater.
    let deadline = Instant::now() + CONNECT_DEADLINE;
    loop {
        let short = statuses(nodes)
            .await
            .iter()
            .enumerate()
            .filter(|(i, s)| s.peers < plan.neighbours.get(*i).map_or(0, Vec::len))
            .count();
        if short == 0 {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{short} raw nodes miss neighbours after {:?}",
                CONNECT_DEADLINE
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let idle_from = network.total_sent();
    let warmup = Duration::from_secs_f64(scenario.warmup_s.max(0.5));
    let warmup_cpu_from = machine::cpu_seconds();
    tokio::time::sleep(warmup).await;
    let script_cpu_from = machine::cpu_seconds();
    let warmup_cpu_seconds = script_cpu_from - warmup_cpu_from;
    let threads_before = machine::cpu_seconds_by_thread();
    let idle_bytes_per_s = (network.total_sent() - idle_from) as f64 / warmup.as_secs_f64();
    let before = statuses(nodes).await;
    let sent_before: Vec<u64> = (0..n).map(|i| network.bytes_sent(i)).collect();
    let received_before: Vec<u64> = (0..n).map(|i| network.bytes_received(i)).collect();

    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed ^ 0x7a70_da7a);
    let script_start = Instant::now();
    let script_start_ms = origin.elapsed().as_secs_f64() * 1000.0;
    let mut publications = Vec::new();
    let mut pending = Vec::new();
    let mut failed = 0u64;
    for (k, timed) in plan.actions.iter().enumerate() {
        let Action::Publish { node, .. } = timed.action else {
            continue;
        };
        tokio::time::sleep_until(script_start + Duration::from_millis(timed.at_ms)).await;
        let mut data = vec![0u8; payload_bytes.max(16)];
        rng.fill(&mut data[..]);
        data[..8].copy_from_slice(&(k as u64).to_le_bytes());
        let id = Digest(*blake3::hash(&data).as_bytes());
        let t_ms = origin.elapsed().as_secs_f64() * 1000.0;
        let (reply, sent) = oneshot::channel();
        let Some(raw) = nodes.get(node) else {
            failed += 1;
            continue;
        };
        if raw
            .commands
            .send(RawCommand::Publish { data, reply })
            .await
            .is_err()
        {
            failed += 1;
            continue;
        }
        pending.push(sent);
        publications.push(Publication {
            id,
            author: node,
            t_ms,
            recipients: (0..n).filter(|&r| r != node).collect(),
        });
    }
    let script_ms = script_start.elapsed().as_secs_f64() * 1000.0;
    let mut acknowledged = Vec::new();
    for (publication, sent) in publications.into_iter().zip(pending) {
        if sent.await.unwrap_or(false) {
            acknowledged.push(publication);
        } else {
            failed += 1;
        }
    }
    let intended: usize = acknowledged.iter().map(|p| p.recipients.len()).sum();
    let drain_deadline = Instant::now() + Duration::from_secs_f64(scenario.drain_s);
    while lock(arrivals).len() < intended && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end_ms = script_start.elapsed().as_secs_f64() * 1000.0;
    let script_cpu_seconds = machine::cpu_seconds() - script_cpu_from;
    let script_cpu_by_thread =
        machine::cpu_delta(&threads_before, &machine::cpu_seconds_by_thread());
    let after = statuses(nodes).await;
    let copies = before
        .iter()
        .zip(&after)
        .fold(CopyCounts::default(), |sum, (b, a)| CopyCounts {
            received: sum.received + a.received.saturating_sub(b.received),
            new: sum.new + a.first.saturating_sub(b.first),
            sync: 0,
        });
    let stores = lock(arrivals).clone();
    Ok(PhaseData {
        n,
        honest: (0..n).collect(),
        script_start_ms,
        script_ms,
        end_ms,
        publications: acknowledged,
        failed_publishes: failed,
        stores,
        down: vec![Vec::new(); n],
        frontiers_equal_at_end: true,
        bytes_sent: (0..n)
            .map(|i| network.bytes_sent(i).saturating_sub(sent_before[i]))
            .collect(),
        bytes_received: (0..n)
            .map(|i| network.bytes_received(i).saturating_sub(received_before[i]))
            .collect(),
        idle_bytes_per_s,
        envelope_bytes: payload_bytes as f64,
        copies,
        counters: network.counters(),
        script_cpu_seconds,
        warmup_cpu_seconds,
        script_cpu_by_thread,
        processes: 1,
        ..PhaseData::default()
    })
}
