//! Node-level figures of `bench`: ingest and catch-up of one node fed by a
//! peer over sync, the raw ed25519 verify rate they are compared to, the
//! cost of one sync between nodes already in sync, and storage (bytes per
//! envelope, cold start time and memory with the caught-up store).
//!
//! Real nodes and sled stores over the simulated network with unshaped
//! links. Backlogs are sealed by other members and written straight into
//! the source node's store, so the measured node validates (and, when it is
//! a recipient, opens) every envelope as it would from any peer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use breakwater_node::store::{NewEnvelope, Store, WriteBatch};
use breakwater_node::{DataDir, Node, NodeHandle, spawn};
use breakwater_protocol::fixture::{Fixture, bulletin_draft};
use breakwater_protocol::{Digest, NodeKeys, SyncRequest, SyncResponse, Tlp, seal};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::network::Network;
use crate::run::{prepare_consortium, start_node};
use crate::scenario::NodeSettings;

/// A sealed backlog entry: id, author key, seq, encoding.
/// A sealed envelope for the preload: id, author, seq, encoding, expiry and
/// the author's organisation.
type Sealed = (Digest, [u8; 32], u64, Vec<u8>, u64, String);

/// Members whose feeds make up a backlog.
const AUTHORS: usize = 4;

/// Raw ed25519 verifications per second on this machine.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct VerifyRate {
    /// One core.
    pub one_core: f64,
    /// Every core at once.
    pub all_cores: f64,
}

/// Verifies one 32-byte message (what an envelope signature covers: its
/// signing hash) in a loop for `span`, on one core and then on all.
pub fn raw_verify_rate(span: Duration) -> VerifyRate {
    let keys = NodeKeys::from_seed([9; 32]);
    let message = [7u8; 32];
    let signature = keys.sign(&message);
    let public = keys.node_public();
    let run = || {
        let started = std::time::Instant::now();
        let mut count = 0u64;
        while started.elapsed() < span {
            for _ in 0..64 {
                if public.verify(&message, &signature).is_ok() {
                    count += 1;
                }
            }
        }
        count as f64 / started.elapsed().as_secs_f64()
    };
    let one_core = run();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all_cores = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..cores).map(|_| scope.spawn(run)).collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or(0.0))
            .sum::<f64>()
    });
    VerifyRate {
        one_core,
        all_cores,
    }
}

/// A small consortium on the simulated network; node 0 holds backlogs, node 1
/// is measured. Other members only author.
struct Pair {
    fixture: Fixture,
    dirs: Vec<DataDir>,
    configs: Vec<breakwater_node::Config>,
    network: Network,
}

struct Running {
    node: Node,
    stop: oneshot::Sender<()>,
}

impl Pair {
    async fn new(root: &Path, members: usize, sync_interval: Duration) -> anyhow::Result<Pair> {
        let mut neighbours = vec![Vec::new(); members];
        neighbours[0] = vec![1];
        neighbours[1] = vec![0];
        let settings = NodeSettings {
            sync_interval_ms: sync_interval.as_millis() as u64,
            heartbeat_ms: 500,
            max_redial_backoff_ms: 1000,
        };
        let (fixture, dirs, configs) =
            prepare_consortium(root, &settings, &neighbours, &BTreeSet::new()).await?;
        Ok(Pair {
            fixture,
            dirs,
            configs,
            network: Network::new(members, 1, None),
        })
    }

    async fn start(&self, i: usize) -> anyhow::Result<Running> {
        let (node, stop) = start_node(&self.dirs[i], &self.configs[i], &self.network, i).await?;
        Ok(Running { node, stop })
    }

    /// Seals `count` envelopes from the authoring members straight into node
    /// 0's store: GREEN, or AMBER to node 0's organisation (so node 1 only
    /// validates and stores them). Returns the mean encoded size.
    async fn preload(&self, count: usize, tlp: Tlp, seed: u64) -> anyhow::Result<usize> {
        let to = if tlp == Tlp::Green {
            Vec::new()
        } else {
            vec![
                self.fixture
                    .orgs
                    .first()
                    .context("no organisations")?
                    .org_id
                    .clone(),
            ]
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let per_author = count.div_ceil(AUTHORS);
        let fixture = &self.fixture;
        // Authors seal in parallel; each feed is a chain, so one thread each.
        let feeds = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..AUTHORS)
                .map(|a| {
                    let to = to.clone();
                    scope.spawn(move || -> anyhow::Result<Vec<Sealed>> {
                        let keys = fixture.keys(a + 2, 0).context("no author keys")?;
                        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed ^ a as u64);
                        let mut prev = Digest::ZERO;
                        let mut feed = Vec::with_capacity(per_author);
                        let org = fixture
                            .roster()
                            .org_of(&keys.node_public())
                            .map(|org| org.to_string())
                            .unwrap_or_default();
                        for seq in 1..=per_author as u64 {
                            let draft =
                                bulletin_draft(seq, prev, tlp, &format!("bulletin {a}/{seq}"), now);
                            let envelope = seal(keys, fixture.roster(), draft, &to, &mut rng)
                                .map_err(|e| anyhow::anyhow!("seal: {e}"))?;
                            prev = envelope.id();
                            let expires_at = envelope.header.expires_at;
                            let encoded = envelope.encode();
                            let author = keys.node_public().0;
                            feed.push((prev, author, seq, encoded, expires_at, org.clone()));
                        }
                        Ok(feed)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("sealing thread failed")))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        let path = self.dirs[0].store_path();
        tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let store = Store::open(&path)?;
            let mut bytes = 0;
            let mut total = 0;
            for feed in &feeds {
                for chunk in feed.chunks(512) {
                    // As a node stores what it accepts: with the expiry and
                    // organisation in the id entry.
                    let mut batch = WriteBatch::new();
                    for (id, author, seq, encoded, expires_at, org) in chunk {
                        batch
                            .envelope(NewEnvelope {
                                id: id.0,
                                author: *author,
                                seq: *seq,
                                bytes: encoded,
                            })
                            .expires(*expires_at)
                            .org(org);
                    }
                    bytes += chunk.iter().map(|c| c.3.len()).sum::<usize>();
                    total += chunk.len();
                    store.write(batch)?;
                }
            }
            store.flush()?;
            Ok(bytes / total.max(1))
        })
        .await?
    }
}

async fn stop(running: Running) {
    let _ = running.stop.send(());
    running.node.wait().await;
}

/// How a sync from an empty node went.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Transfer {
    /// Envelopes moved.
    pub envelopes: usize,
    /// Mean encoded size.
    pub envelope_bytes: usize,
    /// Node start → last one stored, envelopes per second.
    pub from_start_per_s: f64,
    /// Steady state: from 10 % stored to 90 % stored, envelopes per second.
    pub ingest_per_s: f64,
    /// Envelopes the node could open.
    pub readable: u64,
}

/// Polls `status` until the node holds `count` envelopes (or nothing new
/// arrived for 60 s) and returns when it passed 10 % and 90 %, interpolated
/// between polls. (Events would lag behind a node storing thousands a second.)
async fn await_stored(handle: &NodeHandle, count: usize) -> anyhow::Result<(Instant, Instant)> {
    let (low, high) = ((count / 10) as f64, (count - count / 10) as f64);
    let mut marks: (Option<Instant>, Option<Instant>) = (None, None);
    let mut last = (Instant::now(), 0.0f64);
    let mut progress_at = Instant::now();
    loop {
        let held = handle
            .status()
            .await
            .map_err(|e| anyhow::anyhow!("status: {e}"))?
            .envelopes as f64;
        let now = Instant::now();
        let at = |mark: f64| {
            let share = if held > last.1 {
                ((mark - last.1) / (held - last.1)).clamp(0.0, 1.0)
            } else {
                1.0
            };
            last.0 + now.duration_since(last.0).mul_f64(share)
        };
        if held >= low && marks.0.is_none() {
            marks.0 = Some(at(low));
        }
        if held >= high && marks.1.is_none() {
            marks.1 = Some(at(high));
        }
        if held > last.1 {
            progress_at = now;
        }
        if held as usize >= count {
            break;
        }
        if now.duration_since(progress_at) > Duration::from_secs(60) {
            anyhow::bail!("sync stalled at {held} of {count} envelopes");
        }
        last = (now, held);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match marks {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => anyhow::bail!("nothing to store"),
    }
}

/// Node 1 starts empty and takes `count` envelopes sealed `tlp` from node 0.
/// Returns the figures and keeps node 1's directory for the storage figures.
pub async fn transfer(
    root: &Path,
    count: usize,
    tlp: Tlp,
    seed: u64,
) -> anyhow::Result<(Transfer, PathBuf)> {
    // Sync far apart: the connect-time round does the work.
    let pair = Pair::new(root, AUTHORS + 2, Duration::from_secs(600)).await?;
    let envelope_bytes = pair.preload(count, tlp, seed).await?;
    let source = pair.start(0).await?;
    let started = Instant::now();
    let sink = pair.start(1).await?;
    let envelopes = count.div_ceil(AUTHORS) * AUTHORS;
    let outcome = await_stored(&sink.node.handle, envelopes).await;
    let total = started.elapsed();
    let status = sink.node.handle.status().await;
    stop(sink).await;
    stop(source).await;
    let (t10, t90) = outcome?;
    let status = status.map_err(|e| anyhow::anyhow!("status: {e}"))?;
    if status.envelopes as usize != envelopes {
        anyhow::bail!(
            "node holds {} envelopes, expected {envelopes}",
            status.envelopes
        );
    }
    // Steady state: the middle 80 %, clear of connecting and the last batch.
    let middle = (envelopes - 2 * (envelopes / 10)) as f64;
    let span = t90.duration_since(t10).as_secs_f64();
    Ok((
        Transfer {
            envelopes,
            envelope_bytes,
            from_start_per_s: envelopes as f64 / total.as_secs_f64().max(1e-9),
            ingest_per_s: if span > 0.0 { middle / span } else { 0.0 },
            readable: status.readable,
        },
        pair.dirs[1].root().to_path_buf(),
    ))
}

/// One anti-entropy round between two nodes already in sync.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct InSync {
    /// Bytes on the wire both ways (Noise and Yamux framing included), median of 5.
    pub bytes: u64,
    /// Sync requests the round sent.
    pub round_trips: u64,
    /// Payload of the request and of the answer.
    pub payload_bytes: usize,
    /// Members in the roster.
    pub roster_members: usize,
}

/// Two of `members` run with identical (empty) stores; node 0 starts a round
/// five times while the bytes both nodes write and node 0's requests are counted.
pub async fn in_sync(root: &Path, members: usize) -> anyhow::Result<InSync> {
    let pair = Pair::new(root, members, Duration::from_secs(3600)).await?;
    let a = pair.start(0).await?;
    let b = pair.start(1).await?;
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while a.node.handle.peers().await.map_or(0, |p| p.len()) == 0 {
            if Instant::now() > deadline {
                anyhow::bail!("the two nodes did not connect");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the connect-time rounds and subscriptions settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut samples = Vec::new();
        let mut requests = Vec::new();
        for _ in 0..5 {
            let bytes_before = pair.network.total_sent();
            let requests_before = a.node.handle.status().await?.traffic.sync_requests;
            a.node.handle.sync_now(None).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            samples.push(pair.network.total_sent() - bytes_before);
            requests.push(a.node.handle.status().await?.traffic.sync_requests - requests_before);
        }
        samples.sort_unstable();
        requests.sort_unstable();
        let hello = SyncRequest::Hello {
            digest: Digest::ZERO,
            roster_version: 1,
            roster_hash: Digest::ZERO,
        }
        .encode()
        .len();
        Ok(InSync {
            bytes: samples[2],
            round_trips: requests[2],
            payload_bytes: hello + SyncResponse::InSync.encode().len(),
            roster_members: members,
        })
    }
    .await;
    stop(a).await;
    stop(b).await;
    result
}

/// What the measured node's store costs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ColdStart {
    /// Envelopes in the store.
    pub envelopes: u64,
    /// Process start (`main`) → node answering `status`, ms.
    pub cold_start_ms: f64,
    /// Peak resident memory of the process at that moment, MiB.
    pub rss_mb: f64,
}

/// Bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Starts this executable's hidden `cold-start` command on `data_dir` in a
/// fresh process and reads its report.
pub async fn cold_start(data_dir: &Path) -> anyhow::Result<ColdStart> {
    // Best effort: with root, drop the page cache so the store is read from disk.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let started = Instant::now();
    let output = tokio::process::Command::new(exe)
        .arg("cold-start")
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .await
        .context("cannot start the cold-start process")?;
    let line = String::from_utf8_lossy(&output.stdout);
    let line = line
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    let mut report: ColdStart = serde_json::from_str(line).with_context(|| {
        format!(
            "cold-start process failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })?;
    // The child measures from its `main`; the parent's wall time (exec and
    // shutdown included) is the fallback.
    if report.cold_start_ms <= 0.0 {
        report.cold_start_ms = started.elapsed().as_secs_f64() * 1000.0;
    }
    Ok(report)
}

/// The hidden `cold-start` command: opens the node at `data_dir` with an
/// in-memory transport, waits until it answers `status`, prints one JSON line
/// and stops it. `process_start` is when `main` began.
pub async fn cold_start_child(
    data_dir: &Path,
    process_start: std::time::Instant,
) -> anyhow::Result<()> {
    let data = DataDir::new(data_dir);
    let config = data.config()?;
    let (stop_tx, stopped) = oneshot::channel::<()>();
    let node = spawn(
        &data,
        config,
        breakwater_node::TransportKind::Memory,
        async move {
            let _ = stopped.await;
        },
    )
    .await?;
    let status = node.handle.status().await;
    let cold_start_ms = process_start.elapsed().as_secs_f64() * 1000.0;
    let rss_mb = crate::machine::peak_rss_mb();
    let _ = stop_tx.send(());
    node.wait().await;
    let status = status.map_err(|e| anyhow::anyhow!("status: {e}"))?;
    println!(
        "{}",
        serde_json::to_string(&ColdStart {
            envelopes: status.envelopes,
            cold_start_ms,
            rss_mb,
        })?
    );
    Ok(())
}
