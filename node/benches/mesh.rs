//! Node-level figures (issue 3), printed by `cargo bench -p breakwater-node --bench mesh`:
//! ingest (envelopes validated, opened and stored per second by one node fed
//! by a peer over sync), catch-up of 20,000 missed envelopes, and the bytes on
//! the wire of one anti-entropy round between two nodes already in sync with
//! a 100-member roster. Real nodes, real sled files, in-memory transport with
//! a byte-counting wrapper.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use breakwater_node::net::{self, TransportKind};
use breakwater_node::node::join_offline;
use breakwater_node::store::{NewEnvelope, Store};
use breakwater_node::{Config, DataDir, Node, NodeEvent, spawn};
use breakwater_protocol::fixture::{Fixture, bulletin_draft};
use breakwater_protocol::{Digest, Tlp, seal};
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::transport::{MemoryTransport, Transport};
use rand::SeedableRng;
use tempfile::TempDir;
use tokio::sync::oneshot;

const CATCHUP: usize = 20_000;
const AUTHORS: usize = 4;

/// A stream that counts the bytes it reads and writes.
struct Counted<S> {
    inner: S,
    bytes: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.bytes.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.bytes.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

fn counted_memory(bytes: Arc<AtomicU64>) -> TransportKind {
    TransportKind::Custom(Box::new(move |keypair| {
        let raw = MemoryTransport::default().map(move |channel, _| Counted {
            inner: channel,
            bytes: bytes.clone(),
        });
        net::upgrade(raw, keypair)
    }))
}

struct Bench {
    fixture: Fixture,
    dirs: Vec<TempDir>,
}

fn config(port: u64, sync_ms: u64) -> Config {
    Config {
        listen: vec![format!("/memory/{port}").parse().unwrap()],
        sync_interval: Duration::from_millis(sync_ms),
        heartbeat: Duration::from_millis(500),
        max_redial_backoff: Duration::from_secs(1),
        ..Config::default()
    }
}

impl Bench {
    fn new(orgs: usize, base: u64, sync_ms: u64) -> Bench {
        // Every org gets a distinct memory port in its card.
        let mut idx = 0u64;
        let fixture = Fixture::with_cards(orgs, 1, |org| {
            org.card.nodes[0]
                .addrs
                .push(format!("/memory/{}", base + idx));
            idx += 1;
        })
        .unwrap();
        let mut dirs = Vec::new();
        for i in 0..orgs {
            let dir = TempDir::new().unwrap();
            let data = DataDir::new(dir.path());
            data.init(
                &config(base + i as u64, sync_ms),
                fixture.keys(i, 0).unwrap(),
                "t",
            )
            .unwrap();
            join_offline(&data, &fixture.roster).unwrap();
            dirs.push(dir);
        }
        Bench { fixture, dirs }
    }

    async fn start(&self, i: usize, transport: TransportKind) -> (Node, oneshot::Sender<()>) {
        let data = DataDir::new(self.dirs[i].path());
        let (stop, stopped) = oneshot::channel::<()>();
        let node = spawn(&data, data.config().unwrap(), transport, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        (node, stop)
    }
}

async fn stop((node, stop): (Node, oneshot::Sender<()>)) {
    let _ = stop.send(());
    node.wait().await;
}

/// Seals `CATCHUP` envelopes from `AUTHORS` members straight into node 0's
/// store: GREEN (node 1 opens them) or AMBER to node 0's org (node 1 only
/// validates and stores them).
fn preload(bench: &Bench, tlp: Tlp) -> usize {
    let to = if tlp == Tlp::Green {
        Vec::new()
    } else {
        vec![bench.fixture.orgs[0].org_id.clone()]
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(3);
    let store = Store::open(&DataDir::new(bench.dirs[0].path()).store_path()).unwrap();
    let mut total_bytes = 0;
    for author in 0..AUTHORS {
        let keys = bench.fixture.keys(author + 2, 0).unwrap();
        let mut prev = Digest::ZERO;
        let mut batch = Vec::new();
        for seq in 1..=(CATCHUP / AUTHORS) as u64 {
            let draft = bulletin_draft(seq, prev, tlp, &format!("bulletin {author}/{seq}"), now);
            let envelope = seal(keys, bench.fixture.roster(), draft, &to, &mut rng).unwrap();
            prev = envelope.id();
            batch.push((envelope.id(), keys.node_public(), seq, envelope.encode()));
        }
        for chunk in batch.chunks(256) {
            let items: Vec<NewEnvelope<'_>> = chunk
                .iter()
                .map(|(id, author, seq, bytes)| NewEnvelope {
                    id: id.0,
                    author: author.0,
                    seq: *seq,
                    bytes,
                })
                .collect();
            total_bytes += chunk.iter().map(|c| c.3.len()).sum::<usize>();
            store.insert_envelopes(&items).unwrap();
        }
    }
    store.flush().unwrap();
    total_bytes / CATCHUP
}

async fn catchup(tlp: Tlp, base: u64) {
    // Six orgs: node 0 holds the backlog, node 1 is empty; four authors are
    // other members (not running), so node 1 must validate (and, for GREEN,
    // open) and store each.
    let bench = Bench::new(6, base, 60_000);
    let t = Instant::now();
    let size = preload(&bench, tlp);
    let readable = tlp == Tlp::Green;
    println!(
        "preloaded {CATCHUP} {tlp} envelopes ({size} B each) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let source = bench.start(0, TransportKind::Memory).await;
    let started = Instant::now();
    let sink = bench.start(1, TransportKind::Memory).await;
    let mut events = sink.0.handle.subscribe();
    let mut first = None;
    let mut stored = 0usize;
    while stored < CATCHUP {
        match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
            Ok(Ok(NodeEvent::Stored(_))) => {
                stored += 1;
                first.get_or_insert_with(Instant::now);
            }
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                stored += n as usize;
                first.get_or_insert_with(Instant::now);
            }
            Ok(Err(_)) | Err(_) => panic!("catch-up stalled at {stored}"),
        }
    }
    let total = started.elapsed();
    let ingest = first.map(|f| f.elapsed()).unwrap_or(total);
    let status = sink.0.handle.status().await.unwrap();
    assert_eq!(status.envelopes as usize, CATCHUP);
    assert_eq!(status.readable as usize, if readable { CATCHUP } else { 0 });
    let what = if readable {
        "validated, opened and stored"
    } else {
        "validated and stored (not a recipient)"
    };
    println!(
        "catch-up ({tlp}): {CATCHUP} missed envelopes in {:.2} s from node start = {:.0}/s",
        total.as_secs_f64(),
        CATCHUP as f64 / total.as_secs_f64()
    );
    println!(
        "ingest ({tlp}): {CATCHUP} envelopes {what} in {:.2} s after the first = {:.0}/s",
        ingest.as_secs_f64(),
        CATCHUP as f64 / ingest.as_secs_f64()
    );
    stop(sink).await;
    stop(source).await;
}

async fn in_sync_bytes() {
    // 100 members; two of them run, with identical stores.
    let bench = Bench::new(100, 4_000_000, 3_600_000);
    let bytes = Arc::new(AtomicU64::new(0));
    let a = bench.start(0, counted_memory(bytes.clone())).await;
    let b = bench.start(1, TransportKind::Memory).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.0.handle.peers().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the connect-time syncs and gossip subscriptions settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut samples = Vec::new();
    for _ in 0..5 {
        let before = bytes.load(Ordering::Relaxed);
        a.0.handle.sync_now(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        samples.push(bytes.load(Ordering::Relaxed) - before);
    }
    samples.sort_unstable();
    let hello = breakwater_protocol::SyncRequest::Hello {
        digest: Digest::ZERO,
        roster_version: 1,
    }
    .encode()
    .len();
    let in_sync = breakwater_protocol::SyncResponse::InSync.encode().len();
    println!(
        "in-sync round, 100-member roster: {} B on the wire (median of 5; min {} B, max {} B), payload {} B + {} B, 1 round trip",
        samples[2], samples[0], samples[4], hello, in_sync
    );
    stop(a).await;
    stop(b).await;
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no options.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        in_sync_bytes().await;
        if std::env::var_os("ONLY_AMBER").is_none() {
            catchup(Tlp::Green, 3_000_000).await;
        }
        catchup(Tlp::Amber, 3_100_000).await;
    });
}
