//! Node tests with real swarms and real sled files in temp dirs: delivery
//! and sealing across five orgs, store-and-forward, offline catch-up,
//! partition and heal, crash safety, hostile members, outsiders,
//! revocation, bounded storage (quotas, tombstones, a full disk), over the
//! in-memory transport and TCP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breakwater_node::net::{self, TransportKind};
use breakwater_node::{
    Config, DataDir, ListFilter, Node, NodeEvent, PublishRequest, node::join_offline, spawn,
};
use breakwater_protocol::fixture::Fixture;
use breakwater_protocol::{Bulletin, Indicator, OrgId, Severity, SignedRoster, Tlp};
use futures::StreamExt;
use libp2p::core::transport::{MemoryTransport, Transport};
use libp2p::{Multiaddr, PeerId};
use tempfile::TempDir;
use tokio::sync::oneshot;

const DEADLINE: Duration = Duration::from_secs(30);

/// Mesh tests run one at a time: each starts several nodes, and on two cores
/// parallel meshes starve each other's timers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

static NEXT_PORT: AtomicU64 = AtomicU64::new(0);

fn memory_base() -> u64 {
    // Distinct memory ports per test in this process.
    1_000_000
        + NEXT_PORT.fetch_add(100, Ordering::SeqCst)
        + u64::from(std::process::id() % 1000) * 10_000
}

/// Polls `check` until it returns true or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Dial gate shared by all nodes of a test: pairs of memory ports that may
/// not connect (a partition).
#[derive(Clone, Default)]
struct Gate(Arc<Mutex<HashSet<(u64, u64)>>>);

impl Gate {
    fn split(&self, a: &[u64], b: &[u64]) {
        let mut blocked = self.0.lock().unwrap();
        for &x in a {
            for &y in b {
                blocked.insert((x, y));
                blocked.insert((y, x));
            }
        }
    }
    fn heal(&self) {
        self.0.lock().unwrap().clear();
    }
}

fn memory_port(addr: &Multiaddr) -> Option<u64> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Memory(port) => Some(port),
        _ => None,
    })
}

fn gated_memory(gate: Gate, own_port: u64) -> TransportKind {
    TransportKind::Custom(Box::new(move |keypair| {
        let raw = MemoryTransport::default().and_then(move |conn, endpoint| {
            let blocked = match &endpoint {
                libp2p::core::ConnectedPoint::Dialer { address, .. } => memory_port(address)
                    .is_some_and(|to| gate.0.lock().unwrap().contains(&(own_port, to))),
                libp2p::core::ConnectedPoint::Listener { .. } => false,
            };
            async move {
                if blocked {
                    Err(std::io::Error::other("partitioned"))
                } else {
                    Ok(conn)
                }
            }
        });
        net::upgrade(raw, keypair)
    }))
}

struct Mesh {
    fixture: Fixture,
    dirs: Vec<TempDir>,
    ports: Vec<u64>,
    nodes: Vec<Option<(Node, oneshot::Sender<()>)>>,
    gate: Gate,
    tcp: bool,
}

fn test_config(listen: Multiaddr) -> Config {
    Config {
        org_id: String::new(),
        listen: vec![listen],
        sync_interval: Duration::from_millis(700),
        heartbeat: Duration::from_millis(200),
        max_redial_backoff: Duration::from_secs(1),
        publish_sync_wait: Duration::from_secs(3),
        ..Config::default()
    }
}

impl Mesh {
    /// `n` orgs with one node each. `linked(i)` lists which other nodes' addresses
    /// node i's card publishes (None = all publish their address).
    async fn new(n: usize, published: impl Fn(usize) -> bool) -> Mesh {
        Mesh::build(n, published, false).await
    }

    /// [`Mesh::new`] under a format-1 roster (a consortium from before
    /// protocol v2: no GREEN key package).
    async fn legacy(n: usize) -> Mesh {
        Mesh::build_with(n, |_| true, false, false).await
    }

    async fn build(n: usize, published: impl Fn(usize) -> bool, tcp: bool) -> Mesh {
        Mesh::build_with(n, published, tcp, true).await
    }

    async fn build_with(
        n: usize,
        published: impl Fn(usize) -> bool,
        tcp: bool,
        keyed: bool,
    ) -> Mesh {
        let base = memory_base();
        let ports: Vec<u64> = if tcp {
            (0..n)
                .map(|_| {
                    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    u64::from(l.local_addr().unwrap().port())
                })
                .collect()
        } else {
            (0..n as u64).map(|i| base + i).collect()
        };
        let addrs: Vec<String> = ports
            .iter()
            .map(|p| {
                if tcp {
                    format!("/ip4/127.0.0.1/tcp/{p}")
                } else {
                    format!("/memory/{p}")
                }
            })
            .collect();
        let addr = |i: usize| addrs[i].clone();
        let mut idx = 0;
        let fixture = Fixture::with_cards(n, 1, |org| {
            if published(idx) {
                org.card.nodes[0].addrs.push(addr(idx));
            }
            idx += 1;
        })
        .unwrap();
        let fixture = if keyed {
            fixture
        } else {
            let mut legacy = fixture;
            let mut roster = legacy.roster.roster.clone();
            roster.green = None;
            legacy.roster = SignedRoster::unsigned(roster);
            legacy.roster.sign(legacy.orgs[0].keys.first().unwrap());
            legacy
        };
        let mut mesh = Mesh {
            fixture,
            dirs: Vec::new(),
            ports,
            nodes: Vec::new(),
            gate: Gate::default(),
            tcp,
        };
        for i in 0..n {
            let dir = TempDir::new().unwrap();
            let data = DataDir::new(dir.path());
            let config = test_config(addr(i).parse().unwrap());
            data.init(&config, mesh.fixture.keys(i, 0).unwrap(), "token")
                .unwrap();
            join_offline(&data, &mesh.fixture.roster).unwrap();
            mesh.dirs.push(dir);
            mesh.nodes.push(None);
        }
        mesh
    }

    async fn start(&mut self, i: usize) {
        let data = DataDir::new(self.dirs[i].path());
        let config = data.config().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let transport = if self.tcp {
            TransportKind::Production
        } else {
            gated_memory(self.gate.clone(), self.ports[i])
        };
        let node = spawn(&data, config, transport, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        self.nodes[i] = Some((node, stop));
    }

    async fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i).await;
        }
    }

    async fn stop(&mut self, i: usize) {
        if let Some((node, stop)) = self.nodes[i].take() {
            let _ = stop.send(());
            node.wait().await;
        }
    }

    async fn crash(&mut self, i: usize) {
        if let Some((node, _stop)) = self.nodes[i].take() {
            node.crash().await;
        }
    }

    fn node(&self, i: usize) -> &Node {
        &self.nodes[i].as_ref().expect("node running").0
    }

    fn org(&self, i: usize) -> OrgId {
        self.fixture.orgs[i].org_id.clone()
    }

    async fn publish(
        &self,
        i: usize,
        tlp: Tlp,
        to: &[usize],
        title: &str,
    ) -> breakwater_node::Published {
        let mut bulletin = Bulletin::new(title, Severity::High);
        bulletin
            .indicators
            .push(Indicator::parse("ipv4:203.0.113.7").unwrap());
        let request = PublishRequest {
            tlp,
            to: to.iter().map(|&o| self.org(o)).collect(),
            bulletin,
            ttl_ms: None,
        };
        self.node(i).handle.publish(request).await.unwrap()
    }

    async fn publish_result(
        &self,
        i: usize,
        title: &str,
    ) -> Result<breakwater_node::Published, breakwater_node::RequestError> {
        let request = PublishRequest {
            tlp: Tlp::Clear,
            to: Vec::new(),
            bulletin: Bulletin::new(title, Severity::Low),
            ttl_ms: None,
        };
        self.node(i).handle.publish(request).await
    }

    async fn count(&self, i: usize, all: bool) -> usize {
        let filter = ListFilter {
            all,
            ..ListFilter::default()
        };
        self.node(i).handle.list(filter).await.unwrap().len()
    }

    async fn wait_connected(&self, i: usize, peers: usize) {
        let handle = self.node(i).handle.clone();
        eventually(&format!("node {i} has {peers} peers"), || {
            let handle = handle.clone();
            async move { handle.peers().await.unwrap().len() >= peers }
        })
        .await;
    }
}

async fn wait_count(mesh: &Mesh, i: usize, all: bool, expected: usize) {
    let handle = mesh.node(i).handle.clone();
    eventually(&format!("node {i} lists {expected} (all={all})"), || {
        let handle = handle.clone();
        async move {
            handle
                .list(ListFilter {
                    all,
                    ..ListFilter::default()
                })
                .await
                .unwrap()
                .len()
                >= expected
        }
    })
    .await;
    assert_eq!(mesh.count(i, all).await, expected, "node {i}");
}

/// Drives a raw peer's swarm until a node event `pick` accepts arrives.
async fn drive_until<T>(
    swarm: &mut libp2p::Swarm<net::Behaviour>,
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    what: &str,
    mut pick: impl FnMut(NodeEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(DEADLINE, async {
        loop {
            tokio::select! {
                _ = swarm.select_next_some() => {}
                event = events.recv() => if let Some(found) = event.ok().and_then(&mut pick) { break found },
            }
        }
    })
    .await
    .expect(what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_orgs_green_to_all_amber_to_two() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(5, |_| true).await;
    mesh.start_all().await;
    mesh.wait_connected(0, 4).await;
    let green = mesh
        .publish(
            0,
            Tlp::Green,
            &[],
            "Phishing wave against terminal operators",
        )
        .await;
    assert_eq!(green.recipients, 5);
    for i in 0..5 {
        wait_count(&mesh, i, false, 1).await;
        let detail = mesh.node(i).handle.get(green.id.to_hex()).await.unwrap();
        assert!(detail.summary.readable);
    }
    let amber = mesh
        .publish(1, Tlp::Amber, &[3], "Credential theft at the railroad")
        .await;
    for i in 0..5 {
        wait_count(&mesh, i, true, 2).await;
        let detail = mesh.node(i).handle.get(amber.id.to_hex()).await.unwrap();
        assert_eq!(detail.summary.readable, i == 1 || i == 3, "node {i}");
        assert_eq!(detail.body.is_some(), i == 1 || i == 3, "node {i}");
        let readable = mesh.count(i, false).await;
        assert_eq!(readable, if i == 1 || i == 3 { 2 } else { 1 });
    }
    // Indicator search finds both where readable.
    let hits = mesh
        .node(3)
        .handle
        .search(Indicator::parse("ipv4:203.0.113.7").unwrap())
        .await
        .unwrap();
    assert_eq!(hits.len(), 2);
    // Every copy a node took from its peers is counted, and gossip carried them.
    let mut gossip = 0;
    for i in 0..5 {
        let traffic = mesh.node(i).handle.status().await.unwrap().traffic;
        let expected = if i <= 1 { 1 } else { 2 };
        assert_eq!(traffic.stored_from_peers, expected, "node {i}: {traffic:?}");
        assert!(
            traffic.gossip_received + traffic.sync_received >= expected,
            "node {i}: {traffic:?}"
        );
        gossip += traffic.gossip_received;
    }
    assert!(gossip >= 1, "no gossip copies counted");
    for i in 0..5 {
        mesh.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_forward_through_a_non_recipient() {
    let _serial = SERIAL.lock().await;
    // Only B (index 1) publishes an address: A and C connect to B, never to each other.
    let mut mesh = Mesh::new(3, |i| i == 1).await;
    mesh.start_all().await;
    mesh.wait_connected(1, 2).await;
    assert_eq!(mesh.node(0).handle.peers().await.unwrap().len(), 1);
    let amber = mesh
        .publish(0, Tlp::Amber, &[2], "Vessel AIS spoofing")
        .await;
    wait_count(&mesh, 2, false, 1).await;
    let at_c = mesh.node(2).handle.get(amber.id.to_hex()).await.unwrap();
    assert!(at_c.summary.readable);
    let at_b = mesh.node(1).handle.get(amber.id.to_hex()).await.unwrap();
    assert!(!at_b.summary.readable, "B is no recipient");
    assert!(at_b.body.is_none());
    for i in 0..3 {
        mesh.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_node_catches_up_after_restart() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(3, |_| true).await;
    mesh.start_all().await;
    mesh.wait_connected(2, 2).await;
    mesh.stop(2).await;
    for k in 0..50 {
        mesh.publish(k % 2, Tlp::Green, &[], &format!("bulletin {k}"))
            .await;
    }
    mesh.start(2).await;
    wait_count(&mesh, 2, false, 50).await;
    let traffic = mesh.node(2).handle.status().await.unwrap().traffic;
    assert_eq!(traffic.stored_from_peers, 50, "{traffic:?}");
    assert!(traffic.sync_received >= 50, "{traffic:?}");
    assert_eq!(
        traffic.duplicates(),
        traffic.gossip_received + traffic.sync_received - 50
    );
    for i in 0..3 {
        mesh.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_catch_up_is_checked_and_written_in_order() {
    // 700 envelopes come in one sync answer, which the node checks on every
    // core and writes chunk by chunk: all must land, readable, in feed order.
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(2, |_| true).await;
    mesh.start(0).await;
    for k in 0..700 {
        mesh.publish(0, Tlp::Green, &[], &format!("bulletin {k}"))
            .await;
    }
    mesh.start(1).await;
    wait_count(&mesh, 1, false, 700).await;
    let status = mesh.node(1).handle.status().await.unwrap();
    assert_eq!(status.envelopes, 700);
    assert_eq!(status.readable, 700);
    assert_eq!(status.traffic.stored_from_peers, 700);
    let author = mesh.node(0).handle.status().await.unwrap().node_key;
    assert_eq!(status.frontier, vec![(author, 700)]);
    for i in 0..2 {
        mesh.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heals_to_the_union() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(4, |_| true).await;
    let (left, right) = (&mesh.ports[..2].to_vec(), &mesh.ports[2..].to_vec());
    mesh.gate.split(left, right);
    mesh.start_all().await;
    mesh.wait_connected(0, 1).await;
    mesh.wait_connected(2, 1).await;
    for k in 0..5 {
        mesh.publish(0, Tlp::Green, &[], &format!("left {k}")).await;
        mesh.publish(3, Tlp::Green, &[], &format!("right {k}"))
            .await;
    }
    wait_count(&mesh, 1, false, 5).await;
    wait_count(&mesh, 2, false, 5).await;
    mesh.gate.heal();
    for i in 0..4 {
        wait_count(&mesh, i, false, 10).await;
    }
    for i in 0..4 {
        mesh.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_publish_survives_a_crash() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(2, |_| true).await;
    mesh.start(0).await;
    let first = mesh.publish(0, Tlp::Green, &[], "before the crash").await;
    mesh.crash(0).await;
    mesh.start(0).await;
    let detail = mesh.node(0).handle.get(first.id.to_hex()).await.unwrap();
    assert_eq!(detail.summary.title.as_deref(), Some("before the crash"));
    let second = mesh.publish(0, Tlp::Green, &[], "after the crash").await;
    assert!(second.seq > first.seq);
    // And the peer gets both once it comes up.
    mesh.start(1).await;
    wait_count(&mesh, 1, false, 2).await;
    mesh.stop(0).await;
    mesh.stop(1).await;
}

/// A raw swarm speaking gossip directly, for hostile and outsider peers.
async fn raw_swarm(
    keys: &breakwater_protocol::NodeKeys,
    roster: &SignedRoster,
    allow: &[PeerId],
) -> (libp2p::Swarm<net::Behaviour>, libp2p::gossipsub::IdentTopic) {
    let config = net::NetConfig {
        heartbeat: Duration::from_millis(200),
        message_id_fn: Arc::new(|m| {
            libp2p::gossipsub::MessageId::new(
                breakwater_protocol::envelope::id_of(&m.data).as_bytes(),
            )
        }),
        ..net::NetConfig::default()
    };
    let mut swarm =
        net::build_swarm(keys.libp2p_keypair(), TransportKind::Memory, &config).unwrap();
    swarm.behaviour_mut().set_allowed(allow.iter().copied());
    let (topic, _) = swarm
        .behaviour_mut()
        .join_consortium(&roster.roster.consortium_id().to_hex())
        .unwrap();
    (swarm, topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_member_cannot_plant_bad_envelopes() {
    let _serial = SERIAL.lock().await;
    use breakwater_protocol::fixture::bulletin_draft;
    use breakwater_protocol::{Digest, seal};
    use rand::SeedableRng;

    // Org 2 is the hostile member; it never runs a real node.
    let mut mesh = Mesh::new(3, |i| i != 2).await;
    mesh.start(0).await;
    mesh.start(1).await;
    mesh.wait_connected(0, 1).await;
    let mut events = mesh.node(0).handle.subscribe();
    let hostile = mesh.fixture.keys(2, 0).unwrap().clone();
    let (mut swarm, topic) = raw_link(&mesh, &hostile, 0).await;

    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(1);
    let now = breakwater_node_now();
    let roster = mesh.fixture.roster();
    let good = seal(
        &hostile,
        roster,
        bulletin_draft(1, Digest::ZERO, Tlp::Green, "first", now),
        &[],
        &mut rng,
    )
    .unwrap();
    let twin = seal(
        &hostile,
        roster,
        bulletin_draft(1, Digest::ZERO, Tlp::Green, "equivocating twin", now),
        &[],
        &mut rng,
    )
    .unwrap();
    let mut forged = seal(
        &hostile,
        roster,
        bulletin_draft(2, good.id(), Tlp::Green, "forged", now),
        &[],
        &mut rng,
    )
    .unwrap();
    forged.header.author = mesh.fixture.keys(1, 0).unwrap().node_public();
    let messages = vec![
        b"garbage that is not an envelope".to_vec(),
        forged.encode(),
        good.encode(),
        twin.encode(),
    ];
    for bytes in messages {
        push(&mut swarm, &topic, bytes).await;
    }
    // Replay the good one later: it is ignored as a duplicate.
    let _ = swarm
        .behaviour_mut()
        .gossipsub
        .publish(topic.clone(), good.encode());
    let evidence = drive_until(
        &mut swarm,
        &mut events,
        "equivocation surfaced as an event",
        |e| match e {
            NodeEvent::Equivocation { seq, .. } => Some(seq),
            _ => None,
        },
    )
    .await;
    assert_eq!(evidence, 1);
    for i in 0..2 {
        wait_count(&mesh, i, false, 1).await;
        let listed = mesh
            .node(i)
            .handle
            .list(ListFilter {
                all: true,
                ..ListFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            listed.len(),
            1,
            "node {i} stores only the first valid envelope"
        );
        assert_eq!(listed[0].title.as_deref(), Some("first"));
    }
    let status = mesh.node(0).handle.status().await.unwrap();
    assert_eq!(status.evidence, 1);
    assert_eq!(status.envelopes, 1);
    mesh.stop(0).await;
    mesh.stop(1).await;
}

fn breakwater_node_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsider_cannot_connect_or_learn() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(2, |_| true).await;
    mesh.start_all().await;
    mesh.wait_connected(0, 1).await;
    let outsider = breakwater_protocol::NodeKeys::from_seed([99; 32]);
    let peers = [mesh.node(0).handle.peer_id(), mesh.node(1).handle.peer_id()];
    let (mut swarm, _) = raw_swarm(&outsider, &mesh.fixture.roster, &peers).await;
    swarm
        .dial(
            format!("/memory/{}", mesh.ports[0])
                .parse::<Multiaddr>()
                .unwrap(),
        )
        .unwrap();
    mesh.publish(1, Tlp::Clear, &[], "public advisory").await;
    let outcome = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match swarm.select_next_some().await {
                libp2p::swarm::SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(
                    libp2p::gossipsub::Event::Message { .. },
                )) => return "learnt a message",
                libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } => {}
                _ => {}
            }
        }
    })
    .await;
    assert!(outcome.is_err(), "outsider {outcome:?}");
    let connected: Vec<String> = mesh
        .node(0)
        .handle
        .peers()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.peer_id)
        .collect();
    assert!(!connected.contains(&outsider.peer_id().to_string()));
    assert_eq!(connected.len(), 1);
    mesh.stop(0).await;
    mesh.stop(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_rejects_new_envelopes_and_closes_connections() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(3, |_| true).await;
    mesh.start_all().await;
    mesh.wait_connected(0, 2).await;
    let before = mesh.publish(2, Tlp::Green, &[], "before revocation").await;
    wait_count(&mesh, 0, false, 1).await;
    let next = mesh
        .fixture
        .roster()
        .with_revoked(&mesh.org(2))
        .unwrap()
        .with_green_key(&breakwater_protocol::fixture::fixture_green_key(2))
        .unwrap();
    let mut signed = SignedRoster::unsigned(next);
    signed.sign(mesh.fixture.keys(0, 0).unwrap());
    assert_eq!(mesh.node(0).handle.join(signed.clone()).await.unwrap(), 2);
    // The roster spreads to node 1 by gossip or sync.
    let h1 = mesh.node(1).handle.clone();
    eventually("node 1 applies roster v2", || {
        let h1 = h1.clone();
        async move { h1.roster().await.unwrap().roster.version == 2 }
    })
    .await;
    let revoked_peer = mesh.node(2).handle.peer_id().to_string();
    for i in 0..2 {
        let handle = mesh.node(i).handle.clone();
        let revoked_peer = revoked_peer.clone();
        eventually(&format!("node {i} drops the revoked peer"), || {
            let handle = handle.clone();
            let revoked_peer = revoked_peer.clone();
            async move {
                !handle
                    .peers()
                    .await
                    .unwrap()
                    .iter()
                    .any(|p| p.peer_id == revoked_peer)
            }
        })
        .await;
    }
    // Once it has the new roster, the revoked node itself refuses to author.
    let _ = mesh.node(2).handle.join(signed.clone()).await; // it may have it already
    assert_eq!(
        mesh.node(2).handle.roster().await.unwrap().roster.version,
        2
    );
    assert!(mesh.publish_result(2, "after revocation").await.is_err());
    // A hostile copy of its key that ignores the roster cannot get in to deliver one.
    mesh.stop(2).await;
    let revoked_keys = mesh.fixture.keys(2, 0).unwrap().clone();
    let honest = [mesh.node(0).handle.peer_id()];
    let (mut swarm, _) = raw_swarm(&revoked_keys, &mesh.fixture.roster, &honest).await;
    swarm
        .dial(
            format!("/memory/{}", mesh.ports[0])
                .parse::<Multiaddr>()
                .unwrap(),
        )
        .unwrap();
    // Drive the dialer for a while; the honest node refuses it at the gate.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            swarm.select_next_some().await;
        }
    })
    .await;
    let peers = mesh.node(0).handle.peers().await.unwrap();
    assert!(
        !peers
            .iter()
            .any(|p| p.peer_id == revoked_keys.peer_id().to_string()),
        "a revoked node must not connect"
    );
    for i in 0..2 {
        assert!(mesh.node(i).handle.get(before.id.to_hex()).await.is_ok());
        mesh.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_on_loopback_delivers() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::build(2, |_| true, true).await;
    mesh.start_all().await;
    mesh.wait_connected(0, 1).await;
    mesh.publish(0, Tlp::Green, &[], "over tcp").await;
    wait_count(&mesh, 1, false, 1).await;
    mesh.stop(0).await;
    mesh.stop(1).await;
}

/// Connects a raw gossip swarm holding `keys` to node `to` and waits until it
/// sees the node's subscription.
async fn raw_link(
    mesh: &Mesh,
    keys: &breakwater_protocol::NodeKeys,
    to: usize,
) -> (libp2p::Swarm<net::Behaviour>, libp2p::gossipsub::IdentTopic) {
    let (mut swarm, topic) = raw_swarm(
        keys,
        &mesh.fixture.roster,
        &[mesh.node(to).handle.peer_id()],
    )
    .await;
    swarm
        .dial(
            format!("/memory/{}", mesh.ports[to])
                .parse::<Multiaddr>()
                .unwrap(),
        )
        .unwrap();
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let libp2p::swarm::SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(
                libp2p::gossipsub::Event::Subscribed { .. },
            )) = swarm.select_next_some().await
            {
                break;
            }
        }
    })
    .await
    .expect("raw peer connected and saw a subscription");
    (swarm, topic)
}

/// Gossips `bytes` from a raw swarm and drives it long enough to send.
async fn push(
    swarm: &mut libp2p::Swarm<net::Behaviour>,
    topic: &libp2p::gossipsub::IdentTopic,
    bytes: Vec<u8>,
) {
    let _ = swarm
        .behaviour_mut()
        .gossipsub
        .publish(topic.clone(), bytes);
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        loop {
            swarm.select_next_some().await;
        }
    })
    .await;
}

/// The fixture's roster version `version`, built from the one in force by
/// `next` (which must leave the GREEN key out), keyed with the fixture key of
/// that version and signed by the admin.
fn next_version(
    mesh: &Mesh,
    current: &SignedRoster,
    next: impl FnOnce(&breakwater_protocol::Roster) -> breakwater_protocol::Roster,
) -> SignedRoster {
    let draft = next(&current.roster);
    let version = draft.version;
    let keyed = draft
        .with_green_key(&breakwater_protocol::fixture::fixture_green_key(version))
        .unwrap();
    let mut signed = SignedRoster::unsigned(keyed);
    signed.sign(mesh.fixture.keys(0, 0).unwrap());
    signed
}

/// A GREEN bulletin by `keys` at `seq`, sealed under `roster`'s epoch key.
fn green_envelope(
    keys: &breakwater_protocol::NodeKeys,
    roster: &SignedRoster,
    seq: u64,
    prev: breakwater_protocol::Digest,
    title: &str,
) -> breakwater_protocol::Envelope {
    use breakwater_protocol::{Body, fixture::bulletin_draft, seal};
    let mut draft = bulletin_draft(seq, prev, Tlp::Green, title, breakwater_node_now());
    if let Body::Bulletin(b) = &mut draft.body {
        b.indicators
            .push(Indicator::parse("domain:canary.example").unwrap());
    }
    let envelope = seal(keys, &roster.roster, draft, &[], &mut rand::rng()).unwrap();
    assert_eq!(envelope.header.seal.epoch(), Some(roster.roster.version));
    envelope
}

/// Every byte of every file under `dir` (sled's log, blobs, snapshots, conf).
fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            return true;
        }
    }
    false
}

async fn item(
    mesh: &Mesh,
    i: usize,
    id: breakwater_protocol::Digest,
) -> Option<breakwater_node::Detail> {
    mesh.node(i).handle.get(id.to_hex()).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_after_revocation_is_unreadable_to_the_revoked_member_and_its_store() {
    let _serial = SERIAL.lock().await;
    // A (org 0) authors; X (org 2) is revoked at v2 and keeps relaying.
    let mut mesh = Mesh::new(3, |_| true).await;
    mesh.start(2).await;
    let a = mesh.fixture.keys(0, 0).unwrap().clone();
    let v1 = mesh.fixture.roster.clone();
    let v2 = next_version(&mesh, &v1, |r| r.with_revoked(&mesh.org(2)).unwrap());
    let before = green_envelope(
        &a,
        &v1,
        1,
        breakwater_protocol::Digest::ZERO,
        "before revocation",
    );
    let after = green_envelope(&a, &v2, 2, before.id(), "canary-6d1e after revocation");
    assert_eq!(mesh.node(2).handle.join(v2.clone()).await.unwrap(), 2);
    let (mut swarm, topic) = raw_link(&mesh, &a, 2).await;
    push(&mut swarm, &topic, before.encode()).await;
    push(&mut swarm, &topic, after.encode()).await;
    let h = mesh.node(2).handle.clone();
    eventually("X stores both envelopes", || {
        let h = h.clone();
        async move { h.status().await.unwrap().envelopes == 2 }
    })
    .await;
    let old = item(&mesh, 2, before.id()).await.unwrap();
    assert!(old.summary.readable, "what came before stays readable to X");
    let new = item(&mesh, 2, after.id()).await.unwrap();
    assert!(!new.summary.readable && new.body.is_none());
    assert_eq!((new.seal.as_str(), new.epoch), ("epoch", Some(2)));
    let status = h.status().await.unwrap();
    assert_eq!((status.readable, status.pending_green), (1, 0));
    // Nothing of the later bulletin's plaintext is anywhere in X's files.
    mesh.stop(2).await;
    assert!(!files_contain(mesh.dirs[2].path(), b"canary-6d1e"));
    assert!(
        files_contain(mesh.dirs[2].path(), after.payload.get(..16).unwrap()),
        "the ciphertext is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_that_arrives_before_its_roster_opens_later_also_across_kill_9() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(3, |_| true).await;
    mesh.start(1).await;
    let a = mesh.fixture.keys(0, 0).unwrap().clone();
    let v1 = mesh.fixture.roster.clone();
    let v2 = next_version(&mesh, &v1, |r| r.rekeyed());
    let v3 = next_version(&mesh, &v2, |r| r.rekeyed());
    let first = green_envelope(
        &a,
        &v2,
        1,
        breakwater_protocol::Digest::ZERO,
        "under epoch 2",
    );
    let second = green_envelope(&a, &v3, 2, first.id(), "under epoch 3");
    let (mut swarm, topic) = raw_link(&mesh, &a, 1).await;
    push(&mut swarm, &topic, first.encode()).await;
    let h = mesh.node(1).handle.clone();
    eventually("B keeps the envelope pending", || {
        let h = h.clone();
        async move { h.status().await.unwrap().pending_green == 1 }
    })
    .await;
    assert!(!item(&mesh, 1, first.id()).await.unwrap().summary.readable);
    // The roster arrives: the envelope opens and is announced as readable.
    let mut events = h.subscribe();
    h.join(v2.clone()).await.unwrap();
    let opened = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Ok(NodeEvent::Stored(s)) = events.recv().await
                && s.id == first.id()
            {
                break s;
            }
        }
    })
    .await
    .expect("a Stored event for the opened envelope");
    assert!(opened.readable);
    assert_eq!(
        h.search(Indicator::parse("domain:canary.example").unwrap())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(h.status().await.unwrap().pending_green, 0);

    // Again, with a kill -9 between the envelope and its roster.
    push(&mut swarm, &topic, second.encode()).await;
    eventually("B keeps the second envelope pending", || {
        let h = h.clone();
        async move { h.status().await.unwrap().pending_green == 1 }
    })
    .await;
    mesh.crash(1).await;
    join_offline(&DataDir::new(mesh.dirs[1].path()), &v3).unwrap();
    mesh.start(1).await;
    let h = mesh.node(1).handle.clone();
    eventually("the pending envelope opens at start-up", || {
        let h = h.clone();
        let id = second.id();
        async move { h.get(id.to_hex()).await.is_ok_and(|d| d.summary.readable) }
    })
    .await;
    assert_eq!(h.status().await.unwrap().pending_green, 0);
    // Keys of older epochs are derived again after the restart, and none is
    // stored: they come from the stored rosters and this node's sealing key.
    assert!(item(&mesh, 1, first.id()).await.unwrap().summary.readable);
    mesh.stop(1).await;
    for version in 1..=3 {
        let key = breakwater_protocol::fixture::fixture_green_key(version);
        assert!(
            !files_contain(mesh.dirs[1].path(), &key),
            "epoch key {version} is on disk"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_day_and_rekey_switch_authors_to_the_new_epoch() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::legacy(3).await;
    mesh.start_all().await;
    mesh.wait_connected(0, 2).await;
    let legacy = mesh
        .publish(0, Tlp::Green, &[], "before the flag day")
        .await;
    wait_count(&mesh, 1, false, 1).await;
    let detail = item(&mesh, 1, legacy.id).await.unwrap();
    assert_eq!((detail.seal.as_str(), detail.epoch), ("nodes", None));
    // The first keyed roster is the flag day.
    let v2 = next_version(&mesh, &mesh.fixture.roster, |r| r.rekeyed());
    assert_eq!(v2.encode()[0], 2, "a keyed roster is format 2");
    mesh.node(0).handle.join(v2.clone()).await.unwrap();
    for i in 1..3 {
        let h = mesh.node(i).handle.clone();
        eventually(&format!("node {i} applies v2"), || {
            let h = h.clone();
            async move { h.status().await.unwrap().green_epoch == Some(2) }
        })
        .await;
    }
    let keyed = mesh.publish(0, Tlp::Green, &[], "after the flag day").await;
    wait_count(&mesh, 2, false, 2).await;
    let detail = item(&mesh, 2, keyed.id).await.unwrap();
    assert_eq!((detail.seal.as_str(), detail.epoch), ("epoch", Some(2)));
    assert!(detail.summary.readable);
    // A rekey moves authors to epoch 3; everything stays readable.
    let v3 = next_version(&mesh, &v2, |r| r.rekeyed());
    mesh.node(1).handle.join(v3).await.unwrap();
    let h = mesh.node(1).handle.clone();
    eventually("node 1 seals under epoch 3", || {
        let h = h.clone();
        async move { h.status().await.unwrap().green_epoch == Some(3) }
    })
    .await;
    let rekeyed = mesh.publish(1, Tlp::Green, &[], "after the rekey").await;
    wait_count(&mesh, 0, false, 3).await;
    assert_eq!(item(&mesh, 0, rekeyed.id).await.unwrap().epoch, Some(3));
    for id in [legacy.id, keyed.id, rekeyed.id] {
        for i in 0..3 {
            let h = mesh.node(i).handle.clone();
            eventually(&format!("node {i} reads {id}"), || {
                let h = h.clone();
                async move { h.get(id.to_hex()).await.is_ok_and(|d| d.summary.readable) }
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_green_key_package_raises_an_alarm_and_green_falls_back_to_per_node() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(3, |_| true).await;
    mesh.start_all().await;
    mesh.wait_connected(0, 2).await;
    // The proposer gives node 1 a different key than everyone else.
    let honest = next_version(&mesh, &mesh.fixture.roster, |r| r.rekeyed());
    let other = honest.roster.rekeyed().with_green_key(&[7; 32]).unwrap();
    let victim = mesh.fixture.keys(1, 0).unwrap().sealing_public().key_id();
    let mut forged = honest.roster.clone();
    let package = forged.green.as_mut().unwrap();
    let slot = package
        .wraps
        .iter()
        .position(|w| w.key_id == victim)
        .unwrap();
    package.wraps[slot] = other.green.as_ref().unwrap().wraps[slot].clone();
    let mut forged = SignedRoster::unsigned(forged);
    forged.sign(mesh.fixture.keys(0, 0).unwrap());
    let mut events: Vec<_> = (0..3).map(|i| mesh.node(i).handle.subscribe()).collect();
    mesh.node(0).handle.join(forged).await.unwrap();
    for (i, events) in events.iter_mut().enumerate() {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Ok(NodeEvent::GreenKeyProblem { version: 2, .. }) = events.recv().await {
                    break;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("node {i} raises a GREEN key alarm"));
        let status = mesh.node(i).handle.status().await.unwrap();
        assert!(status.green_key_problem.is_some(), "node {i}");
        assert_eq!(
            status.green_epoch, None,
            "node {i} stops sealing under the package"
        );
    }
    // GREEN keeps flowing, sealed per node.
    let published = mesh
        .publish(2, Tlp::Green, &[], "despite the forged package")
        .await;
    wait_count(&mesh, 1, false, 1).await;
    let detail = item(&mesh, 1, published.id).await.unwrap();
    assert_eq!(detail.seal, "nodes");
    assert!(detail.summary.readable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retraction_before_its_target_applies_only_from_the_owner_org() {
    use breakwater_protocol::fixture::bulletin_draft;
    use breakwater_protocol::{Body, Digest, Draft, Kind, seal, seal_to};
    use rand::SeedableRng;

    let _serial = SERIAL.lock().await;
    // Only org 1 runs; org 0 is the honest author, org 2 tries to retract org 0's bulletin.
    let mut mesh = Mesh::new(3, |i| i == 1).await;
    mesh.start(1).await;
    let mut events = mesh.node(1).handle.subscribe();
    let relay = mesh.fixture.keys(2, 0).unwrap().clone();
    let (mut swarm, topic) = raw_link(&mesh, &relay, 1).await;

    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(9);
    let now = breakwater_node_now();
    let roster = mesh.fixture.roster();
    let owner = mesh.fixture.keys(0, 0).unwrap();
    let mut draft = bulletin_draft(1, Digest::ZERO, Tlp::Green, "target", now);
    if let Body::Bulletin(b) = &mut draft.body {
        b.indicators
            .push(Indicator::parse("domain:evil.example").unwrap());
    }
    let target = seal(owner, roster, draft, &[], &mut rng).unwrap();
    let retraction = |keys: &breakwater_protocol::NodeKeys,
                      seq: u64,
                      prev: Digest,
                      rng: &mut rand::rngs::ChaCha8Rng| {
        let draft = Draft {
            seq,
            prev,
            created_at: now,
            expires_at: now + 86_400_000,
            tlp: Tlp::Clear,
            kind: Kind::Retraction {
                target: target.id(),
            },
            body: Body::Retraction {
                reason: "withdrawn".into(),
            },
        };
        seal_to(keys, roster, None, draft, &[], rng).unwrap()
    };
    let foreign = retraction(&relay, 1, Digest::ZERO, &mut rng);
    let genuine = retraction(owner, 2, target.id(), &mut rng);
    push(&mut swarm, &topic, foreign.encode()).await;
    push(&mut swarm, &topic, genuine.encode()).await;
    push(&mut swarm, &topic, target.encode()).await;

    let by = drive_until(
        &mut swarm,
        &mut events,
        "the retraction took effect once its target arrived",
        |e| match e {
            NodeEvent::Retracted { by, .. } => Some(by),
            _ => None,
        },
    )
    .await;
    assert_eq!(by, genuine.id());
    let detail = mesh.node(1).handle.get(target.id().to_hex()).await.unwrap();
    assert!(detail.summary.retracted);
    assert_eq!(detail.retracted_by, Some(genuine.id()));
    let hits = mesh
        .node(1)
        .handle
        .search(Indicator::parse("domain:evil.example").unwrap())
        .await
        .unwrap();
    assert!(
        hits.is_empty(),
        "a retracted bulletin's indicators leave the index"
    );
    mesh.stop(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_plaintext_is_pruned_but_the_feed_position_stays() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(1, |_| true).await;
    mesh.start(0).await;
    let mut bulletin = Bulletin::new("short-lived", Severity::Low);
    bulletin
        .indicators
        .push(Indicator::parse("ipv4:192.0.2.1").unwrap());
    let request = PublishRequest {
        tlp: Tlp::Green,
        to: Vec::new(),
        bulletin,
        ttl_ms: Some(1_500),
    };
    let handle = mesh.node(0).handle.clone();
    handle.publish(request).await.unwrap();
    assert_eq!(handle.status().await.unwrap().readable, 1);
    assert_eq!(
        handle
            .search(Indicator::parse("ipv4:192.0.2.1").unwrap())
            .await
            .unwrap()
            .len(),
        1
    );
    eventually("the expired plaintext is pruned", || {
        let handle = handle.clone();
        async move { handle.status().await.unwrap().readable == 0 }
    })
    .await;
    let status = handle.status().await.unwrap();
    assert_eq!(
        status.envelopes, 1,
        "the envelope (and its feed position) stays"
    );
    assert_eq!(status.frontier.len(), 1);
    assert!(
        handle
            .search(Indicator::parse("ipv4:192.0.2.1").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    let next = mesh.publish(0, Tlp::Green, &[], "after expiry").await;
    assert_eq!(next.seq, 2);
    drop(handle);
    mesh.stop(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rounds_do_not_fetch_a_range_twice() {
    // A node that comes back to three peers holding the same 200 envelopes
    // starts a round with each at once (on connect): one round fetches the
    // ranges, the others leave them to it, so every envelope comes once.
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(4, |_| true).await;
    mesh.start_all().await;
    mesh.wait_connected(3, 3).await;
    mesh.stop(3).await;
    for k in 0..200 {
        mesh.publish(k % 3, Tlp::Green, &[], &format!("bulletin {k}"))
            .await;
    }
    for i in 0..3 {
        wait_count(&mesh, i, false, 200).await;
    }
    mesh.start(3).await;
    wait_count(&mesh, 3, false, 200).await;
    mesh.wait_connected(3, 3).await;
    let traffic = mesh.node(3).handle.status().await.unwrap().traffic;
    assert_eq!(traffic.stored_from_peers, 200, "{traffic:?}");
    assert!(
        traffic.sync_received <= traffic.stored_from_peers,
        "a range came twice: {traffic:?}"
    );
    for i in 0..4 {
        mesh.stop(i).await;
    }
}

/// The roster fork each node has recorded, if any.
async fn roster_fork(mesh: &Mesh, i: usize) -> Option<breakwater_node::RosterFork> {
    mesh.node(i).handle.status().await.unwrap().roster_fork
}

/// Waits until node `i` has raised a `RosterFork` event (from its start on).
async fn wait_fork_event(
    mesh: &mut Mesh,
    i: usize,
) -> (
    u64,
    breakwater_protocol::Digest,
    breakwater_protocol::Digest,
) {
    let events = &mut mesh.nodes[i].as_mut().expect("node running").0.events;
    tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::RosterFork {
                    version,
                    ours,
                    theirs,
                }) => break (version, ours, theirs),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("node {i} events: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("node {i} raised no RosterFork"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_roster_fork_is_detected_kept_and_resolved_without_losing_envelopes() {
    // The admin (org 0; threshold 1) signs two different versions 2. Node 0
    // holds v2a and then v3a, node 1 holds v2b; they meet. Both must notice
    // (node 0 from node 1's Hello, node 1 from v3a, whose prev is not its
    // v2), keep the evidence across a restart, refuse further updates, and
    // after `resolve-fork` on both the losing node converges and keeps its
    // envelopes.
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(2, |_| true).await;
    let v1 = mesh.fixture.roster.clone();
    let v2a = next_version(&mesh, &v1, |r| r.rekeyed());
    let v3a = next_version(&mesh, &v2a, |r| r.rekeyed());
    let v2b = {
        let keyed = v1.roster.rekeyed().with_green_key(&[0xb2; 32]).unwrap();
        let mut signed = SignedRoster::unsigned(keyed);
        signed.sign(mesh.fixture.keys(0, 0).unwrap());
        signed
    };
    assert_ne!(v2a.roster.hash(), v2b.roster.hash());
    let dirs: Vec<DataDir> = mesh.dirs.iter().map(|d| DataDir::new(d.path())).collect();
    let data = |i: usize| dirs[i].clone();
    join_offline(&data(0), &v2a).unwrap();
    join_offline(&data(0), &v3a).unwrap();
    join_offline(&data(1), &v2b).unwrap();
    // Node 1 publishes on its branch before the nodes meet.
    mesh.start(1).await;
    let mut mine = Vec::new();
    for k in 0..3 {
        mine.push(
            mesh.publish(1, Tlp::Green, &[], &format!("b-side {k}"))
                .await,
        );
    }
    mine.push(mesh.publish(1, Tlp::Clear, &[], "b-side clear").await);
    mesh.start(0).await;

    let (version, ours, theirs) = wait_fork_event(&mut mesh, 0).await;
    assert_eq!(
        (version, ours, theirs),
        (2, v2a.roster.hash(), v2b.roster.hash())
    );
    let (version, ours, theirs) = wait_fork_event(&mut mesh, 1).await;
    assert_eq!(
        (version, ours, theirs),
        (2, v2b.roster.hash(), v2a.roster.hash())
    );
    let fork = roster_fork(&mesh, 1)
        .await
        .expect("status.roster_fork on node 1");
    assert_eq!(
        (fork.version, fork.ours, fork.theirs),
        (2, v2b.roster.hash(), v2a.roster.hash())
    );
    assert!(fork.detected_at > 0);
    // Node 1 did not move to v3a, and refuses every update now.
    let roster1 = mesh.node(1).handle.roster().await.unwrap();
    assert_eq!(roster1.roster.hash(), v2b.roster.hash());
    let v4a = next_version(&mesh, &v3a, |r| r.rekeyed());
    let refused = mesh.node(0).handle.join(v4a.clone()).await.unwrap_err();
    assert!(refused.to_string().contains("roster fork"), "{refused}");
    assert_eq!(
        mesh.node(0).handle.roster().await.unwrap().roster.version,
        3
    );

    // The evidence survives a restart, and so does the stop.
    for i in 0..2 {
        mesh.stop(i).await;
    }
    assert!(
        join_offline(&data(0), &v4a)
            .unwrap_err()
            .to_string()
            .contains("roster fork")
    );
    let store = breakwater_node::store::Store::open(&data(1).store_path()).unwrap();
    let evidence = breakwater_node::fork::recorded(&store).unwrap().unwrap();
    assert_eq!(hex::decode(&evidence.ours).unwrap(), v2b.encode());
    assert_eq!(hex::decode(&evidence.theirs).unwrap(), v2a.encode());
    drop(store);
    mesh.start(1).await;
    assert!(roster_fork(&mesh, 1).await.is_some());
    // Node 1 goes on publishing on its branch while node 0 is down: node 0
    // meets these only after the resolution, through sync.
    let mut after = Vec::new();
    for k in 0..2 {
        after.push(
            mesh.publish(1, Tlp::Green, &[], &format!("b-side late {k}"))
                .await,
        );
    }
    let held = mesh.count(1, true).await;
    assert!(held >= mine.len() + after.len());
    mesh.stop(1).await;

    // The admins keep branch a. Node 1 re-bases (dropping v2b), node 0
    // keeps its chain; neither loses an envelope.
    let resolved = breakwater_node::node::resolve_fork_offline(&data(1), &v2a).unwrap();
    assert!(!resolved.kept_ours);
    assert_eq!(resolved.dropped, vec![2]);
    let resolved = breakwater_node::node::resolve_fork_offline(&data(0), &v2a).unwrap();
    assert!(resolved.kept_ours);
    // A roster the ancestor's admins did not sign cannot be kept.
    let mut unsigned = v2b.clone();
    unsigned.signatures.clear();
    assert!(breakwater_node::node::resolve_fork_offline(&data(1), &unsigned).is_err());
    mesh.start_all().await;
    for i in 0..2 {
        assert!(roster_fork(&mesh, i).await.is_none(), "node {i}");
    }
    assert_eq!(mesh.node(0).handle.join(v4a.clone()).await.unwrap(), 4);
    let h1 = mesh.node(1).handle.clone();
    eventually("node 1 converges on v4a", || {
        let h1 = h1.clone();
        let want = v4a.roster.hash();
        async move { h1.roster().await.unwrap().roster.hash() == want }
    })
    .await;
    assert!(roster_fork(&mesh, 1).await.is_none());
    assert!(mesh.count(1, true).await >= held);
    for published in &mine {
        let detail = mesh
            .node(1)
            .handle
            .get(published.id.to_hex())
            .await
            .unwrap();
        assert!(detail.summary.readable, "node 1 lost {}", published.id);
        assert!(
            detail.body.is_some(),
            "node 1 cannot reopen {}",
            published.id
        );
    }
    // Node 0 kept its branch: what node 1 sealed under v2b's key opens with
    // the key of the fork evidence, whether it came before the resolution
    // (re-queued) or after it (the ingest pipeline opens with that key too).
    let h0 = mesh.node(0).handle.clone();
    for published in mine.iter().chain(&after) {
        let id = published.id.to_hex();
        eventually("node 0 reads the b-side bulletins", || {
            let (h0, id) = (h0.clone(), id.clone());
            async move { h0.get(id).await.is_ok_and(|d| d.body.is_some()) }
        })
        .await;
    }
    for i in 0..2 {
        mesh.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_join_refuses_a_roster_with_a_sealing_key_this_node_does_not_hold() {
    // Org 1's card reached the admins with a valid sealing key that is not
    // its node's (altered in transit): the node itself notices at join.
    let stranger = breakwater_protocol::fixture::fixture_org(9, 1).card.nodes[0].sealing_key;
    let mut idx = 0;
    let fixture = Fixture::with_cards(2, 1, |org| {
        if idx == 1 {
            org.card.nodes[0].sealing_key = stranger;
        }
        idx += 1;
    })
    .unwrap();
    let dirs: Vec<TempDir> = (0..2).map(|_| TempDir::new().unwrap()).collect();
    for (i, dir) in dirs.iter().enumerate() {
        let data = DataDir::new(dir.path());
        let config = test_config(format!("/memory/{}", memory_base()).parse().unwrap());
        data.init(&config, fixture.keys(i, 0).unwrap(), "token")
            .unwrap();
    }
    join_offline(&DataDir::new(dirs[0].path()), &fixture.roster).unwrap();
    let refused = join_offline(&DataDir::new(dirs[1].path()), &fixture.roster).unwrap_err();
    assert!(refused.to_string().contains("sealing key"), "{refused}");
}

/// Drives two raw swarms for `period`.
async fn drive_both(
    a: &mut libp2p::Swarm<net::Behaviour>,
    b: &mut libp2p::Swarm<net::Behaviour>,
    period: Duration,
) {
    let _ = tokio::time::timeout(period, async {
        loop {
            tokio::select! {
                _ = a.select_next_some() => {}
                _ = b.select_next_some() => {}
            }
        }
    })
    .await;
}

/// Node `i`'s gossipsub score of `peer`.
async fn score_of(mesh: &Mesh, i: usize, peer: PeerId) -> f64 {
    mesh.node(i)
        .handle
        .gossip_score(peer)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("node {i} has no score for {peer}"))
}

/// M2 (security review 2026-11): an equivocating member pushes `A_i` to
/// node 0 and `B_i` to node 1 for five rounds. Each honest node forwards its
/// branch to the other, which finds it equivocating against its own store:
/// that is Ignored, not Rejected, so neither honest node scores the other
/// down; the author's own peer is scored down instead, and the evidence is
/// still recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_equivocation_across_honest_relays_scores_the_author_not_the_relays() {
    let _serial = SERIAL.lock().await;
    use breakwater_protocol::fixture::bulletin_draft;
    use breakwater_protocol::{Digest, seal};
    use rand::SeedableRng;

    // Org 2 is the equivocating member; it never runs a real node.
    let mut mesh = Mesh::new(3, |i| i != 2).await;
    mesh.start(0).await;
    mesh.start(1).await;
    mesh.wait_connected(0, 1).await;
    mesh.wait_connected(1, 1).await;
    // Gossip flows between the honest nodes before the attack.
    mesh.publish(0, Tlp::Clear, &[], "before").await;
    wait_count(&mesh, 1, false, 1).await;
    let (peer0, peer1) = (mesh.node(0).handle.peer_id(), mesh.node(1).handle.peer_id());

    let hostile = mesh.fixture.keys(2, 0).unwrap().clone();
    let (mut to0, topic) = raw_link(&mesh, &hostile, 0).await;
    let (mut to1, _) = raw_link(&mesh, &hostile, 1).await;
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(2);
    let roster = mesh.fixture.roster().clone();
    let now = breakwater_node_now();
    let (mut prev_a, mut prev_b) = (Digest::ZERO, Digest::ZERO);
    for seq in 1..=5 {
        let mut branch = |prev: Digest, name: &str| {
            let title = format!("{name}{seq}");
            let draft = bulletin_draft(seq, prev, Tlp::Clear, &title, now);
            seal(&hostile, &roster, draft, &[], &mut rng).unwrap()
        };
        let (a, b) = (branch(prev_a, "A"), branch(prev_b, "B"));
        (prev_a, prev_b) = (a.id(), b.id());
        let _ = to0
            .behaviour_mut()
            .gossipsub
            .publish(topic.clone(), a.encode());
        let _ = to1
            .behaviour_mut()
            .gossipsub
            .publish(topic.clone(), b.encode());
        drive_both(&mut to0, &mut to1, Duration::from_millis(400)).await;
    }
    // Both honest nodes have found the equivocation.
    for i in 0..2 {
        let handle = mesh.node(i).handle.clone();
        eventually(&format!("node {i} records evidence"), || {
            let handle = handle.clone();
            async move { handle.status().await.unwrap().evidence >= 1 }
        })
        .await;
    }
    // Let the last forwards and a few heartbeats land.
    drive_both(&mut to0, &mut to1, Duration::from_secs(1)).await;

    let (of0, of1) = (
        score_of(&mesh, 1, peer0).await,
        score_of(&mesh, 0, peer1).await,
    );
    assert!(of0 >= 0.0, "node 1 scored honest node 0 down to {of0}");
    assert!(of1 >= 0.0, "node 0 scored honest node 1 down to {of1}");
    let author = hostile.peer_id();
    for i in 0..2 {
        let score = score_of(&mesh, i, author).await;
        assert!(
            score < 0.0,
            "node {i} holds nothing against the author: {score}"
        );
    }
    // Gossip between the honest nodes still flows.
    mesh.publish(1, Tlp::Clear, &[], "after").await;
    let handle = mesh.node(0).handle.clone();
    eventually("node 0 stores node 1's bulletin", || {
        let handle = handle.clone();
        async move {
            let list = handle.list(ListFilter::default()).await.unwrap();
            list.iter().any(|s| s.title.as_deref() == Some("after"))
        }
    })
    .await;
    mesh.stop(0).await;
    mesh.stop(1).await;
}

/// L1 (security review 2026-11): a member floods node 0 with gossip it must
/// ignore (envelopes by authors outside the roster, and replays of
/// envelopes node 0 stored long ago, which gossipsub's seen-cache no longer
/// catches). The flood counts against the sender's gossip score until it is
/// graylisted, and an honest bulletin published meanwhile is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_a_flood_of_ignored_gossip_does_not_delay_an_honest_bulletin() {
    let _serial = SERIAL.lock().await;
    use breakwater_protocol::fixture::bulletin_draft;
    use breakwater_protocol::{Digest, NodeKeys, seal_to};
    use rand::SeedableRng;

    const STALE: u64 = 150;
    const JUNK: usize = 1_000;
    let mut mesh = Mesh::new(3, |i| i != 2).await;
    let hostile = mesh.fixture.keys(2, 0).unwrap().clone();
    let roster = mesh.fixture.roster().clone();
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(11);
    let now = breakwater_node_now();
    // The member's old feed reaches node 1 by gossip while node 0 is down;
    // node 0 then gets it by sync, so its gossipsub never saw these ids.
    mesh.start(1).await;
    let mut stale = Vec::new();
    let mut prev = Digest::ZERO;
    for seq in 1..=STALE {
        let draft = bulletin_draft(seq, prev, Tlp::Clear, &format!("old {seq}"), now);
        let envelope = seal_to(&hostile, &roster, None, draft, &[], &mut rng).unwrap();
        prev = envelope.id();
        stale.push(envelope.encode());
    }
    {
        let (mut feeder, topic) = raw_link(&mesh, &hostile, 1).await;
        for bytes in &stale {
            let _ = feeder
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), bytes.clone());
        }
        let handle = mesh.node(1).handle.clone();
        let fed = tokio::time::timeout(DEADLINE, async {
            loop {
                tokio::select! {
                    _ = feeder.select_next_some() => {}
                    list = handle.list(ListFilter::default()) => {
                        if list.unwrap().len() >= STALE as usize {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
        .await;
        assert!(fed.is_ok(), "node 1 stored the member's feed");
    }
    mesh.start(0).await;
    wait_count(&mesh, 0, false, STALE as usize).await;

    let (mut swarm, topic) = raw_link(&mesh, &hostile, 0).await;
    let mut flood: Vec<Vec<u8>> = (0..JUNK)
        .map(|n| {
            let stranger = NodeKeys::generate(&mut rng);
            let draft = bulletin_draft(1, Digest::ZERO, Tlp::Clear, &format!("junk {n}"), now);
            seal_to(&stranger, &roster, None, draft, &[], &mut rng)
                .unwrap()
                .encode()
        })
        .collect();
    flood.extend(stale);
    for chunk in flood.chunks(50) {
        for bytes in chunk {
            let _ = swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), bytes.clone());
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), async {
            loop {
                swarm.select_next_some().await;
            }
        })
        .await;
    }
    // An honest bulletin while the flood is being worked through.
    mesh.publish(1, Tlp::Clear, &[], "honest").await;
    let published_at = tokio::time::Instant::now();
    let handle = mesh.node(0).handle.clone();
    let stored = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                _ = swarm.select_next_some() => {}
                list = handle.list(ListFilter::default()) => {
                    if list.unwrap().iter().any(|s| s.title.as_deref() == Some("honest")) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await;
    assert!(
        stored.is_ok(),
        "the honest bulletin was not stored within 10 s of the flood"
    );
    println!(
        "honest bulletin stored {:?} after publishing",
        published_at.elapsed()
    );
    // Whether gossipsub then holds the flood against the sender proved
    // timing-dependent here (scores of 0 and -8.7 in two CI runs on a loaded
    // machine, below -80 in others); the scoring rule itself is unit-tested
    // in `event_loop/scores/tests.rs`. What must hold here: the flood does
    // not delay an honest bulletin, and the honest relay is not blamed.
    // Node 1, which sent nothing node 0 ignored, is in good standing.
    let honest = score_of(&mesh, 0, mesh.node(1).handle.peer_id()).await;
    assert!(
        honest >= 0.0,
        "node 0 scored honest node 1 down to {honest}"
    );
    mesh.stop(0).await;
    mesh.stop(1).await;
}

/// M3 (security review 2026-11): an outsider holds 40 silent TCP
/// connections to node 0's listen address from another address (reopening
/// each one the node closes). Node 0 dials nobody, so node 1 reaches it only
/// by dialling in; it still connects at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3_silent_inbound_connections_do_not_lock_members_out() {
    let _serial = SERIAL.lock().await;
    use std::sync::atomic::AtomicBool;
    use tokio::io::AsyncReadExt;

    const SILENT: usize = 40;
    let mut mesh = Mesh::build(2, |_| true, true).await;
    let data = DataDir::new(mesh.dirs[0].path());
    let mut config = data.config().unwrap();
    config.dial_orgs = Some(vec![mesh.org(0).to_string()]);
    data.save_config(&config).unwrap();
    mesh.start(0).await;
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", mesh.ports[0]).parse().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let mut outsiders = Vec::new();
    for _ in 0..SILENT {
        let (stop, opened) = (stop.clone(), opened.clone());
        outsiders.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                let Ok(mut stream) = socket.connect(target).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::SeqCst);
                // Silent: never speaks, holds the connection until closed.
                let mut buf = [0u8; 256];
                while !stop.load(Ordering::SeqCst) {
                    match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf))
                        .await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) | Err(_) => {}
                    }
                }
            }
        }));
    }
    eventually("the outsider holds its connections", || {
        let opened = opened.clone();
        async move { opened.load(Ordering::SeqCst) >= SILENT as u64 }
    })
    .await;

    mesh.start(1).await;
    let started = tokio::time::Instant::now();
    let handle = mesh.node(0).handle.clone();
    let member = mesh.node(1).handle.peer_id().to_string();
    let connected = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            let peers = handle.peers().await.unwrap();
            if peers.iter().any(|p| p.peer_id == member) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let reopened = opened.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for outsider in outsiders {
        let _ = outsider.await;
    }
    assert!(
        connected.is_ok(),
        "member not connected within 4 s while {SILENT} silent connections were held ({reopened} opened)"
    );
    println!(
        "member connected after {:?}; the outsider opened {reopened} connections",
        started.elapsed()
    );
    mesh.stop(0).await;
    mesh.stop(1).await;
}

/// A CLEAR bulletin by `keys` at `seq` with `prev`, padded to about `pad`
/// bytes with an attached STIX bundle.
fn padded_envelope(
    keys: &breakwater_protocol::NodeKeys,
    roster: &SignedRoster,
    seq: u64,
    prev: breakwater_protocol::Digest,
    title: &str,
    pad: usize,
) -> breakwater_protocol::Envelope {
    use breakwater_protocol::{Body, fixture::bulletin_draft, seal};
    use rand::SeedableRng;
    let mut draft = bulletin_draft(seq, prev, Tlp::Clear, title, breakwater_node_now());
    if let (Body::Bulletin(b), true) = (&mut draft.body, pad > 0) {
        b.stix = Some(format!(
            r#"{{"type":"bundle","id":"bundle--{seq}","x_pad":"{}"}}"#,
            "x".repeat(pad)
        ));
    }
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seq);
    seal(keys, &roster.roster, draft, &[], &mut rng).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_a_fork_cannot_starve_catch_up_and_becomes_evidence() {
    // H1. Org 0 is the victim. Of orgs 1..3, the one with the smallest node
    // key is the hostile author M (it runs no node; its feed is asked for
    // first), the next one C publishes while the victim is offline, the
    // last one relays. M forks: the victim holds the odd seqs of branch B
    // (so its lacking seqs are every even one), everyone else holds branch
    // A, whose even seqs (~5.5 MiB) each fail `prev` at the victim and were
    // asked for again, first, in every round: C's bulletins never came.
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(4, |_| true).await;
    let mut roles: Vec<usize> = (1..4).collect();
    roles.sort_by_key(|&i| mesh.fixture.keys(i, 0).unwrap().node_public());
    let (hostile, third, relay) = (roles[0], roles[1], roles[2]);
    let m = mesh.fixture.keys(hostile, 0).unwrap().clone();
    let roster = mesh.fixture.roster.clone();

    // Branches A and B of M's feed, seqs 1..=60.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut prev_a, mut prev_b) = (
        breakwater_protocol::Digest::ZERO,
        breakwater_protocol::Digest::ZERO,
    );
    for seq in 1..=60u64 {
        let pad = if seq % 2 == 0 { 180 * 1024 } else { 0 };
        let ea = padded_envelope(&m, &roster, seq, prev_a, &format!("A {seq}"), pad);
        let eb = padded_envelope(&m, &roster, seq, prev_b, &format!("B {seq}"), 0);
        prev_a = ea.id();
        prev_b = eb.id();
        a.push(ea);
        b.push(eb);
    }

    // The victim, cut off from the others, gets B's odd seqs, then stops.
    let victim_port = vec![mesh.ports[0]];
    let others: Vec<u64> = mesh.ports[1..].to_vec();
    mesh.gate.split(&victim_port, &others);
    mesh.start(0).await;
    {
        let (mut swarm, topic) = raw_link(&mesh, &m, 0).await;
        for e in b.iter().filter(|e| e.header.seq % 2 == 1) {
            let _ = swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), e.encode());
        }
        let handle = mesh.node(0).handle.clone();
        tokio::time::timeout(DEADLINE, async {
            loop {
                tokio::select! {
                    _ = swarm.select_next_some() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if handle.status().await.unwrap().envelopes >= 30 { break }
                    }
                }
            }
        })
        .await
        .expect("the victim stored B's odd seqs");
    }
    mesh.stop(0).await;
    mesh.gate.heal();

    // The rest of the port: M's branch A reaches the relay and C by gossip;
    // C publishes three bulletins.
    mesh.start(relay).await;
    mesh.start(third).await;
    mesh.wait_connected(relay, 1).await;
    {
        let (mut swarm, topic) = raw_link(&mesh, &m, relay).await;
        for e in &a {
            let _ = swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), e.encode());
            let _ = tokio::time::timeout(Duration::from_millis(20), async {
                loop {
                    swarm.select_next_some().await;
                }
            })
            .await;
        }
        let handle = mesh.node(third).handle.clone();
        tokio::time::timeout(DEADLINE, async {
            loop {
                tokio::select! {
                    _ = swarm.select_next_some() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if handle.status().await.unwrap().envelopes >= 60 { break }
                    }
                }
            }
        })
        .await
        .expect("branch A reached every other node");
    }
    for k in 0..3 {
        mesh.publish(third, Tlp::Green, &[], &format!("critical {k}"))
            .await;
    }
    wait_count(&mesh, relay, false, 63).await;

    // The victim comes back: it gets C's bulletins, and the fork becomes
    // evidence that holds M's feed.
    let mut events = {
        mesh.start(0).await;
        mesh.node(0).handle.subscribe()
    };
    let handle = mesh.node(0).handle.clone();
    let c_key = mesh.fixture.keys(third, 0).unwrap().node_public();
    eventually("the victim holds C's three bulletins", || {
        let handle = handle.clone();
        async move {
            let status = handle.status().await.unwrap();
            status.frontier.iter().any(|&(k, s)| k == c_key && s >= 3)
        }
    })
    .await;
    eventually("the victim holds evidence against M", || {
        let handle = handle.clone();
        async move { handle.status().await.unwrap().evidence >= 1 }
    })
    .await;
    let status = handle.status().await.unwrap();
    assert!(
        status
            .equivocations
            .iter()
            .all(|e| e.author == m.node_public()),
        "{:?}",
        status.equivocations
    );
    assert!(!status.equivocations.is_empty());
    let mut saw_event = false;
    while let Ok(event) = events.try_recv() {
        saw_event |=
            matches!(event, NodeEvent::Equivocation { author, .. } if author == m.node_public());
    }
    assert!(saw_event, "an Equivocation event was raised");
    // M's feed is held: once the batches in flight when the evidence came
    // have landed, the victim does not keep pulling M's branch A over
    // several sync intervals.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = handle.status().await.unwrap().traffic.sync_received;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = handle.status().await.unwrap().traffic.sync_received;
    assert!(
        later - received < 10,
        "the victim keeps pulling the fork: {received} -> {later}"
    );
    for i in [0, relay, third] {
        mesh.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l6_a_revoked_feed_does_not_keep_nodes_out_of_sync() {
    // Node 0 holds a feed of org 2, which is then revoked; node 1 comes up
    // later and never fetches it. Their frontier digests used to differ
    // for good: no round ever ended InSync.
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(3, |_| true).await;
    mesh.start(0).await;
    mesh.start(2).await;
    mesh.wait_connected(0, 1).await;
    mesh.publish(2, Tlp::Green, &[], "before revocation").await;
    mesh.publish(0, Tlp::Green, &[], "from org 0").await;
    wait_count(&mesh, 0, false, 2).await;
    mesh.stop(2).await;
    let next = mesh
        .fixture
        .roster()
        .with_revoked(&mesh.org(2))
        .unwrap()
        .with_green_key(&breakwater_protocol::fixture::fixture_green_key(2))
        .unwrap();
    let mut signed = SignedRoster::unsigned(next);
    signed.sign(mesh.fixture.keys(0, 0).unwrap());
    assert_eq!(mesh.node(0).handle.join(signed).await.unwrap(), 2);
    mesh.start(1).await;
    wait_count(&mesh, 1, false, 1).await;
    for i in 0..2 {
        let handle = mesh.node(i).handle.clone();
        eventually(&format!("a round of node {i} ends InSync"), || {
            let handle = handle.clone();
            async move { handle.status().await.unwrap().traffic.sync_in_sync > 0 }
        })
        .await;
    }
    // The revoked feed is still held where it was, and only there.
    let org2 = mesh.fixture.keys(2, 0).unwrap().node_public();
    let has = |status: breakwater_node::Status| status.frontier.iter().any(|(k, _)| *k == org2);
    assert!(has(mesh.node(0).handle.status().await.unwrap()));
    assert!(!has(mesh.node(1).handle.status().await.unwrap()));
    for i in 0..2 {
        mesh.stop(i).await;
    }
}

/// Copies the directory tree `from` into `to`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_a_node_restored_from_an_older_copy_does_not_reuse_a_seq() {
    // Node 0's data directory is restored from a copy taken after its seq
    // 1; its peer holds seqs 2 and 3. It used to sign a new seq 2 at once:
    // an equivocation by an honest node.
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(2, |_| true).await;
    mesh.start_all().await;
    mesh.wait_connected(0, 1).await;
    mesh.publish(0, Tlp::Green, &[], "seq 1").await;
    wait_count(&mesh, 1, false, 1).await;
    mesh.stop(0).await;
    let backup = TempDir::new().unwrap();
    copy_tree(mesh.dirs[0].path(), backup.path());
    mesh.start(0).await;
    mesh.publish(0, Tlp::Green, &[], "seq 2").await;
    mesh.publish(0, Tlp::Green, &[], "seq 3").await;
    wait_count(&mesh, 1, false, 3).await;
    mesh.stop(0).await;
    std::fs::remove_dir_all(mesh.dirs[0].path()).unwrap();
    copy_tree(backup.path(), mesh.dirs[0].path());
    // Waiting for the first round is the default; the tests' short wait is
    // lengthened so that a loaded machine cannot make it run out.
    let data = DataDir::new(mesh.dirs[0].path());
    let mut config = data.config().unwrap();
    config.publish_sync_wait = DEADLINE;
    data.save_config(&config).unwrap();
    mesh.start(0).await;
    let published = mesh.publish(0, Tlp::Green, &[], "after the restore").await;
    assert_eq!(published.seq, 4, "a fresh seq after the restore");
    wait_count(&mesh, 1, false, 4).await;
    for i in 0..2 {
        let status = mesh.node(i).handle.status().await.unwrap();
        assert_eq!(status.evidence, 0, "node {i}: {:?}", status.equivocations);
    }
    for i in 0..2 {
        mesh.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_a_node_with_no_peer_up_publishes_after_the_wait_and_alone_at_once() {
    // The wait for a first sync round is bounded by `publish_sync_wait`, and
    // a one-node consortium does not wait at all.
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(2, |_| true).await;
    mesh.start(0).await;
    let started = tokio::time::Instant::now();
    mesh.publish(0, Tlp::Green, &[], "nobody is up").await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(9), "{waited:?}");
    mesh.stop(0).await;

    let mut alone = Mesh::new(1, |_| true).await;
    alone.start(0).await;
    let started = tokio::time::Instant::now();
    alone.publish(0, Tlp::Green, &[], "alone").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    alone.stop(0).await;
}
/// Rewrites node `i`'s `config.json` with `change` (before it starts).
fn configure(mesh: &Mesh, i: usize, change: impl FnOnce(&mut Config)) {
    let data = DataDir::new(mesh.dirs[i].path());
    let mut config = data.config().unwrap();
    change(&mut config);
    data.save_config(&config).unwrap();
}

async fn status(mesh: &Mesh, i: usize) -> breakwater_node::Status {
    mesh.node(i).handle.status().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h4_a_flooding_org_stays_within_the_quota_and_a_third_org_still_gets_through() {
    let _serial = SERIAL.lock().await;
    // Org 2 floods; node 0 allows 20 envelopes per author per hour, node 1
    // keeps the defaults (which a burst like this must not trip).
    let mut mesh = Mesh::new(3, |_| true).await;
    configure(&mesh, 0, |c| c.quota_envelopes_per_window = 20);
    mesh.start_all().await;
    mesh.wait_connected(0, 2).await;
    mesh.wait_connected(2, 2).await;
    for n in 0..60 {
        mesh.publish(2, Tlp::Clear, &[], &format!("flood {n}"))
            .await;
    }
    wait_count(&mesh, 1, false, 60).await;
    // Give node 0 every chance to take more: several sync rounds with both.
    let flooder = mesh.fixture.keys(2, 0).unwrap().node_public();
    let before = status(&mesh, 0).await.traffic.sync_requests;
    let handle = mesh.node(0).handle.clone();
    eventually("node 0 ran sync rounds", || {
        let handle = handle.clone();
        async move { handle.status().await.unwrap().traffic.sync_requests >= before + 6 }
    })
    .await;
    let held = |s: &breakwater_node::Status| {
        s.frontier
            .iter()
            .find(|(author, _)| *author == flooder)
            .map_or(0, |(_, seq)| *seq)
    };
    let s0 = status(&mesh, 0).await;
    assert_eq!(s0.envelopes, 20, "node 0 holds exactly its quota of org 2");
    assert!(held(&s0) <= 20);
    // A third organisation's bulletin still reaches node 0.
    let third = mesh.publish(1, Tlp::Green, &[], "from org 1").await;
    let handle = mesh.node(0).handle.clone();
    eventually("node 0 stores org 1's bulletin", || {
        let handle = handle.clone();
        async move { handle.get(third.id.to_hex()).await.is_ok() }
    })
    .await;
    assert_eq!(status(&mesh, 0).await.envelopes, 21);
    for i in 0..3 {
        mesh.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h4_expired_ciphertext_leaves_a_tombstone_and_sync_goes_across_it() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::new(2, |_| true).await;
    configure(&mesh, 0, |c| c.expired_grace = Duration::ZERO);
    mesh.start(0).await;
    let short = PublishRequest {
        tlp: Tlp::Green,
        to: Vec::new(),
        bulletin: Bulletin::new("short-lived", Severity::Low),
        ttl_ms: Some(1_500),
    };
    let handle = mesh.node(0).handle.clone();
    let first = handle.publish(short).await.unwrap();
    let second = mesh.publish(0, Tlp::Green, &[], "long-lived").await;
    eventually("the expired ciphertext becomes a tombstone", || {
        let handle = handle.clone();
        async move { handle.status().await.unwrap().tombstones == 1 }
    })
    .await;
    let s0 = status(&mesh, 0).await;
    assert_eq!(s0.envelopes, 2, "the feed position stays");
    assert_eq!(
        s0.frontier,
        vec![(mesh.fixture.keys(0, 0).unwrap().node_public(), 2)]
    );
    assert!(
        handle.get(first.id.to_hex()).await.is_err(),
        "ciphertext gone"
    );
    assert!(handle.get(second.id.to_hex()).await.is_ok());
    // A node that was offline gets the envelope after the tombstone.
    mesh.start(1).await;
    let h1 = mesh.node(1).handle.clone();
    let wanted = second.id.to_hex();
    eventually("node 1 syncs across the tombstone", || {
        let h1 = h1.clone();
        let wanted = wanted.clone();
        async move { h1.get(wanted).await.is_ok() }
    })
    .await;
    assert_eq!(status(&mesh, 1).await.envelopes, 1);
    // Own seqs go on after the tombstone.
    assert_eq!(mesh.publish(0, Tlp::Green, &[], "next").await.seq, 3);
    drop((handle, h1));
    mesh.stop(1).await;
    mesh.stop(0).await;
}

/// Unmounts a tmpfs when dropped, also when a test fails.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A 4 MiB tmpfs at a fresh directory, or why there is none.
fn small_tmpfs(dir: &TempDir) -> Result<Tmpfs, String> {
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run `id -u`: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not running as root, so no tmpfs can be mounted".into());
    }
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir.path())
        .status()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !mounted.success() {
        return Err(format!("mount -t tmpfs failed ({mounted})"));
    }
    Ok(Tmpfs(dir.path().to_path_buf()))
}

// Not in the default run: once sled 0.34 has recorded a failed background
// flush, that store's thread can spin inside sled holding sled's
// process-wide concurrency lock, which stalls every other node of this test
// process (seen in CI runs). Run it alone, as root:
// `cargo test -p breakwater-node --test mesh -- --ignored h4_a_real_full_disk`.
// A full disk of real processes is covered by the chaos quick run
// (tests/chaos.rs), and a failing write in-process by the store's
// `h4_an_injected_write_failure_writes_nothing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a full sled store can stall the whole test process; run alone with --ignored"]
async fn h4_a_real_full_disk_fails_publish_with_one_line_and_reads_keep_working() {
    let _serial = SERIAL.lock().await;
    let dir = TempDir::new().unwrap();
    let _tmpfs = match small_tmpfs(&dir) {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("skipped: {reason}; the injected-failure tests cover this path");
            return;
        }
    };
    let fixture = Fixture::new(1, 1).unwrap();
    let data = DataDir::new(dir.path().join("node"));
    let port = memory_base();
    let config = test_config(format!("/memory/{port}").parse().unwrap());
    data.init(&config, fixture.keys(0, 0).unwrap(), "token")
        .unwrap();
    join_offline(&data, &fixture.roster).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let node = spawn(
        &data,
        config,
        gated_memory(Gate::default(), port),
        async move {
            let _ = stopped.await;
        },
    )
    .await
    .unwrap();
    let handle = node.handle.clone();
    let filler: String = (0..60_000)
        .map(|i| char::from(b'a' + ((i * 7 + i / 13) % 26) as u8))
        .collect();
    let mut published = 0usize;
    let error = loop {
        assert!(published < 400, "4 MiB never filled up");
        let mut bulletin = Bulletin::new(&format!("filler {published}"), Severity::Low);
        bulletin.summary = filler.clone();
        let request = PublishRequest {
            tlp: Tlp::Clear,
            to: Vec::new(),
            bulletin,
            ttl_ms: None,
        };
        match handle.publish(request).await {
            Ok(_) => published += 1,
            Err(e) => break e.to_string(),
        }
    };
    println!("full after {published} publishes: {error}");
    // Full at the write (the batch is refused) or at the flush (the batch
    // is in and the outcome is unknown): either way one line that says so.
    assert!(
        error.contains("No space left on device") || error.contains("could not be flushed to disk"),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
    // Reads: served, or (once sled 0.34 has recorded the I/O error of a
    // background flush, which it then returns for every operation until a
    // restart) refused with the same one-line error; never a hang or a
    // crash, and the node still answers status.
    match handle.list(ListFilter::default()).await {
        Ok(listed) => assert!(listed.len() >= published.min(1)),
        Err(e) => {
            let e = e.to_string();
            println!("a read after the disk filled: {e}");
            assert!(
                !e.contains('\n') && e.contains("No space left on device"),
                "{e}"
            );
        }
    }
    // Open problem (reported, not fixed): once sled is in that state, the
    // store thread can block in `status` and at shutdown. Recorded here,
    // not asserted, so the test shows it without hanging.
    let status = tokio::time::timeout(Duration::from_secs(10), handle.status()).await;
    println!("status answered: {}", status.is_ok());
    drop(handle);
    let _ = stop.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(10), node.wait()).await;
    println!("node stopped: {}", stopped.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_airgap_roster_that_forks_the_chain_is_kept_as_fork_evidence() {
    // A node holds v2a; an air-gap bundle brings v2b, which the same
    // admins signed (two valid rosters of version 2). The import refuses
    // it, as before, and now keeps the fork as evidence, as sync would.
    let _serial = SERIAL.lock().await;
    let mesh = Mesh::new(2, |_| true).await;
    let v1 = mesh.fixture.roster.clone();
    let v2a = next_version(&mesh, &v1, |r| r.rekeyed());
    let v2b = {
        let keyed = v1.roster.rekeyed().with_green_key(&[0xb2; 32]).unwrap();
        let mut signed = SignedRoster::unsigned(keyed);
        signed.sign(mesh.fixture.keys(0, 0).unwrap());
        signed
    };
    let data = DataDir::new(mesh.dirs[0].path());
    join_offline(&data, &v2a).unwrap();
    let request = breakwater_node::export::ImportRequest {
        rosters: vec![(0, hex::encode(v2b.encode()))],
        envelopes: Vec::new(),
    };
    let report = breakwater_node::export::import_offline(&data, &request).unwrap();
    let [(0, breakwater_node::export::ItemOutcome::Refused(why))] = &report.outcomes[..] else {
        panic!("{:?}", report.outcomes);
    };
    assert!(why.contains("roster fork"), "{why}");
    let store = breakwater_node::store::Store::open(&data.store_path()).unwrap();
    let evidence = breakwater_node::fork::recorded(&store).unwrap().unwrap();
    assert_eq!(evidence.version, 2);
    assert_eq!(hex::decode(&evidence.ours).unwrap(), v2a.encode());
    assert_eq!(hex::decode(&evidence.theirs).unwrap(), v2b.encode());
    drop(store);
    // A roster the admins did not sign is junk, not evidence.
    let other = DataDir::new(mesh.dirs[1].path());
    join_offline(&other, &v2a).unwrap();
    let mut unsigned = v2b.clone();
    unsigned.signatures.clear();
    let request = breakwater_node::export::ImportRequest {
        rosters: vec![(0, hex::encode(unsigned.encode()))],
        envelopes: Vec::new(),
    };
    let report = breakwater_node::export::import_offline(&other, &request).unwrap();
    assert!(
        matches!(&report.outcomes[..], [(0, breakwater_node::export::ItemOutcome::Refused(why))] if !why.contains("fork")),
        "{:?}",
        report.outcomes
    );
    let store = breakwater_node::store::Store::open(&other.store_path()).unwrap();
    assert!(breakwater_node::fork::recorded(&store).unwrap().is_none());
}
