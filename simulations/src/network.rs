//! The shaped in-memory network every simulated node runs over: a raw libp2p
//! [`Transport`] ([`SimTransport`]) whose connections are pairs of byte pipes
//! with per-link latency, jitter, a bandwidth cap, stalls and resets, and a
//! shared [`Network`] the scenario driver mutates (topology, impairment,
//! partitions). Nodes get it through `breakwater_node::net::upgrade`, so
//! Noise and Yamux run on top exactly as in production.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use breakwater_node::net::{self, TransportKind};
use futures::{AsyncRead, AsyncWrite};
use libp2p::Multiaddr;
use libp2p::core::Transport;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

/// Bytes a writer may have in flight on one direction of a connection before
/// it is held back (a socket send buffer).
const SEND_BUFFER: usize = 1024 * 1024;
/// Largest chunk one write queues.
const MAX_CHUNK: usize = 64 * 1024;

/// Undirected links `(min, max)` of a topology.
pub type Links = HashSet<(usize, usize)>;

/// How every link behaves at the moment; changed by impairment windows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shape {
    /// One-way delay per link, ms.
    pub latency_ms: f64,
    /// Uniform jitter added to the delay, ± ms.
    pub jitter_ms: f64,
    /// Per-connection, per-direction bandwidth cap, Mbit/s.
    pub bandwidth_mbit: Option<f64>,
    /// Probability that a dial is refused.
    pub refuse_dial: f64,
}

/// Counters of what the network did to the nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetworkCounters {
    /// Connections established.
    pub connections: u64,
    /// Dials refused (no link in the topology, partition, random refusal, nobody listening).
    pub refused_dials: u64,
    /// Connections reset by chaos or by a partition.
    pub resets: u64,
    /// Connection stalls injected.
    pub stalls: u64,
}

/// The shared network of one simulation phase. Cloning shares it.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("nodes", &self.inner.tx.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    seed: u64,
    state: Mutex<State>,
    tx: Vec<AtomicU64>,
    rx: Vec<AtomicU64>,
    next_conn: AtomicU64,
}

struct State {
    listeners: HashMap<u64, mpsc::UnboundedSender<Incoming>>,
    /// Undirected links `(min, max)`; `None` means every pair may connect.
    links: Option<Links>,
    /// Group of each node while split.
    partition: Option<Vec<usize>>,
    shape: Shape,
    conns: Vec<Weak<Conn>>,
    rng: ChaCha8Rng,
    counters: NetworkCounters,
    /// Where the nodes of the other processes of a spread run are.
    remote: Option<Remote>,
}

/// The other processes of a run spread over several (see [`Network::spread`]).
#[derive(Debug, Clone)]
struct Remote {
    /// The process of each node.
    owner: Vec<usize>,
    /// This process.
    me: usize,
    /// Loopback TCP port of each process (empty until [`Network::set_ports`]).
    ports: Vec<u16>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The memory port node `node` listens on.
pub fn port_of(node: usize) -> u64 {
    node as u64 + 1
}

/// The listen address of node `node`.
pub fn addr_of(node: usize) -> String {
    format!("/memory/{}", port_of(node))
}

fn node_of(port: u64) -> Option<usize> {
    port.checked_sub(1).map(|n| n as usize)
}

fn memory_port(addr: &Multiaddr) -> Option<u64> {
    addr.iter().find_map(|p| match p {
        Protocol::Memory(port) => Some(port),
        _ => None,
    })
}

impl Network {
    /// A network of `n_nodes`; `links` lists the undirected pairs allowed to
    /// connect (`None`: all pairs).
    pub fn new(n_nodes: usize, seed: u64, links: Option<Links>) -> Network {
        Network {
            inner: Arc::new(Inner {
                seed,
                state: Mutex::new(State {
                    listeners: HashMap::new(),
                    links,
                    partition: None,
                    shape: Shape::default(),
                    conns: Vec::new(),
                    rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0001),
                    counters: NetworkCounters::default(),
                    remote: None,
                }),
                tx: (0..n_nodes).map(|_| AtomicU64::new(0)).collect(),
                rx: (0..n_nodes).map(|_| AtomicU64::new(0)).collect(),
                next_conn: AtomicU64::new(0),
            }),
        }
    }

    /// The transport for node `node`, upgraded with Noise and Yamux as in production.
    pub fn transport(&self, node: usize) -> TransportKind {
        let network = self.clone();
        TransportKind::Custom(Box::new(move |keypair| {
            net::upgrade(SimTransport::new(network, node), keypair)
        }))
    }

    /// Sets the shape of every link (existing connections included).
    pub fn set_shape(&self, shape: Shape) {
        lock(&self.inner.state).shape = shape;
    }

    /// The current shape.
    pub fn shape(&self) -> Shape {
        lock(&self.inner.state).shape
    }

    /// Splits the nodes into groups (`group[node]`): connections across
    /// groups are reset and dials across them refused until [`Network::heal`].
    pub fn split(&self, group: Vec<usize>) {
        let cut: Vec<Arc<Conn>> = {
            let mut state = lock(&self.inner.state);
            let cut = state
                .live_conns()
                .into_iter()
                .filter(|c| group.get(c.dialer) != group.get(c.listener))
                .collect::<Vec<_>>();
            state.partition = Some(group);
            state.counters.resets += cut.len() as u64;
            cut
        };
        for conn in cut {
            conn.reset();
        }
    }

    /// Ends a partition.
    pub fn heal(&self) {
        lock(&self.inner.state).partition = None;
    }

    /// Resets each live connection with probability `p`; returns how many.
    pub fn reset_random(&self, p: f64) -> usize {
        let hit = self.pick_random(p);
        lock(&self.inner.state).counters.resets += hit.len() as u64;
        for conn in &hit {
            conn.reset();
        }
        hit.len()
    }

    /// Stalls each live connection with probability `p` for `duration`.
    pub fn stall_random(&self, p: f64, duration: Duration) -> usize {
        let hit = self.pick_random(p);
        lock(&self.inner.state).counters.stalls += hit.len() as u64;
        let until = Instant::now() + duration;
        for conn in &hit {
            conn.stall(until);
        }
        hit.len()
    }

    fn pick_random(&self, p: f64) -> Vec<Arc<Conn>> {
        if p <= 0.0 {
            return Vec::new();
        }
        let mut state = lock(&self.inner.state);
        let live = state.live_conns();
        let p = p.min(1.0);
        live.into_iter()
            .filter(|_| state.rng.random_bool(p))
            .collect()
    }

    /// Bytes node `node` has written to the network.
    pub fn bytes_sent(&self, node: usize) -> u64 {
        self.inner
            .tx
            .get(node)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Bytes delivered to node `node`.
    pub fn bytes_received(&self, node: usize) -> u64 {
        self.inner
            .rx
            .get(node)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Bytes written by all nodes.
    pub fn total_sent(&self) -> u64 {
        self.inner
            .tx
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Counters so far.
    pub fn counters(&self) -> NetworkCounters {
        lock(&self.inner.state).counters
    }

    /// Whether `a` and `b` may talk now.
    fn may_connect(state: &State, a: usize, b: usize) -> bool {
        let linked = state
            .links
            .as_ref()
            .is_none_or(|links| links.contains(&(a.min(b), a.max(b))));
        let same_side = state
            .partition
            .as_ref()
            .is_none_or(|group| group.get(a) == group.get(b));
        linked && same_side
    }

    /// Decides a dial from `from` to `port` now: the one-way delay before the
    /// connection attempt lands, or why it is refused.
    fn admit_dial(&self, from: usize, port: u64) -> Result<Duration, io::Error> {
        let mut state = lock(&self.inner.state);
        let to = node_of(port).ok_or_else(|| refused("no such node"))?;
        let refuse = if !Network::may_connect(&state, from, to) {
            true
        } else {
            let p = state.shape.refuse_dial.clamp(0.0, 1.0);
            p > 0.0 && state.rng.random_bool(p)
        };
        if refuse {
            state.counters.refused_dials += 1;
            return Err(refused("dial refused by the simulated network"));
        }
        Ok(Duration::from_secs_f64(
            state.shape.latency_ms.max(0.0) / 1000.0,
        ))
    }

    /// Completes a dial: hands one end to the listener, returns the other.
    fn connect(&self, from: usize, port: u64) -> Result<Link, io::Error> {
        let to = node_of(port).ok_or_else(|| refused("no such node"))?;
        let mut state = lock(&self.inner.state);
        if !Network::may_connect(&state, from, to) {
            state.counters.refused_dials += 1;
            return Err(refused("dial refused by the simulated network"));
        }
        let Some(listener) = state.listeners.get(&port).cloned() else {
            state.counters.refused_dials += 1;
            return Err(refused("nobody listens there"));
        };
        state.counters.connections += 1;
        let (dialer_end, listener_end) = self.new_conn(&mut state, from, to, None);
        drop(state);
        listener
            .send(Incoming {
                link: listener_end,
                from_port: port_of(from),
            })
            .map_err(|_| refused("listener closed"))?;
        Ok(dialer_end)
    }

    /// A connection between `from` (dialing) and `to`: the dialer's end and
    /// the listener's. `quiet` names the pipe (0: dialer → listener) that
    /// feeds another process over TCP: it adds no delay, which the other
    /// process's pipe applies.
    fn new_conn(
        &self,
        state: &mut State,
        from: usize,
        to: usize,
        quiet: Option<usize>,
    ) -> (Link, Link) {
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let pipe = |i: usize| {
            let mut pipe = Pipe::new();
            pipe.quiet = quiet == Some(i);
            Mutex::new(pipe)
        };
        let conn = Arc::new(Conn {
            dialer: from,
            listener: to,
            pipes: [pipe(0), pipe(1)],
        });
        state.conns.retain(|c| c.strong_count() > 0);
        state.conns.push(Arc::downgrade(&conn));
        let seed = self.inner.seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (
            Link::new(self.clone(), conn.clone(), 0, seed),
            Link::new(self.clone(), conn, 1, seed ^ 1),
        )
    }

    /// Makes this network the part `me` of a run spread over processes:
    /// `owner[node]` is the process that runs each node. Dials to nodes of
    /// other processes go over loopback TCP once [`Network::set_ports`] has
    /// said where each process listens, and [`Network::serve`] takes theirs.
    pub fn spread(&self, owner: Vec<usize>, me: usize) {
        lock(&self.inner.state).remote = Some(Remote {
            owner,
            me,
            ports: Vec::new(),
        });
    }

    /// The loopback TCP port of each process of a spread run.
    pub fn set_ports(&self, ports: Vec<u16>) {
        if let Some(remote) = lock(&self.inner.state).remote.as_mut() {
            remote.ports = ports;
        }
    }

    /// The TCP port of the process that runs `node`, when that is not this one.
    fn remote_port(&self, node: usize) -> Option<u16> {
        let state = lock(&self.inner.state);
        let remote = state.remote.as_ref()?;
        let owner = *remote.owner.get(node)?;
        if owner == remote.me {
            return None;
        }
        Some(remote.ports.get(owner).copied().unwrap_or(0))
    }

    /// Dials `to` in another process (listening on `tcp_port`): a loopback
    /// TCP connection that names both nodes, answered with one byte (1:
    /// accepted). The link delay is applied once, by the receiving process.
    async fn connect_remote(&self, from: usize, to: usize, tcp_port: u16) -> io::Result<Link> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let dialled = async {
            if tcp_port == 0 {
                return Err(refused("the other process has not said where it listens"));
            }
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port)).await?;
            stream.set_nodelay(true)?;
            let mut hello = [0u8; 8];
            hello[..4].copy_from_slice(&(to as u32).to_be_bytes());
            hello[4..].copy_from_slice(&(from as u32).to_be_bytes());
            stream.write_all(&hello).await?;
            let mut answer = [0u8; 1];
            stream.read_exact(&mut answer).await?;
            Ok((stream, answer[0]))
        };
        let (stream, answer) = match dialled.await {
            Ok(dialled) => dialled,
            Err(e) => {
                lock(&self.inner.state).counters.refused_dials += 1;
                return Err(e);
            }
        };
        let mut state = lock(&self.inner.state);
        if answer != 1 || !Network::may_connect(&state, from, to) {
            state.counters.refused_dials += 1;
            return Err(refused("dial refused by the other process"));
        }
        state.counters.connections += 1;
        let (dialer_end, proxy) = self.new_conn(&mut state, from, to, Some(0));
        drop(state);
        pump(proxy, stream);
        Ok(dialer_end)
    }

    /// Takes the dials of other processes' nodes on `listener` until the
    /// network is dropped.
    pub fn serve(&self, listener: tokio::net::TcpListener) {
        let network = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let accepted = listener.accept().await;
                let Some(inner) = network.upgrade() else {
                    break;
                };
                match accepted {
                    Ok((stream, _)) => {
                        let network = Network { inner };
                        tokio::spawn(async move {
                            let _ = network.accept_remote(stream).await;
                        });
                    }
                    // Out of descriptors, or a dial that gave up: that one
                    // dial fails (its node redials), the next is taken.
                    Err(e) => {
                        tracing::debug!("loopback accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }

    async fn accept_remote(&self, mut stream: tokio::net::TcpStream) -> io::Result<()> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        stream.set_nodelay(true)?;
        let mut hello = [0u8; 8];
        stream.read_exact(&mut hello).await?;
        let to = u32::from_be_bytes([hello[0], hello[1], hello[2], hello[3]]) as usize;
        let from = u32::from_be_bytes([hello[4], hello[5], hello[6], hello[7]]) as usize;
        let accepted = {
            let mut state = lock(&self.inner.state);
            let listener = state.listeners.get(&port_of(to)).cloned();
            match listener {
                Some(listener) if Network::may_connect(&state, from, to) => {
                    let (proxy, listener_end) = self.new_conn(&mut state, from, to, Some(1));
                    Some((listener, proxy, listener_end))
                }
                _ => None,
            }
        };
        let Some((listener, proxy, listener_end)) = accepted else {
            stream.write_all(&[0]).await?;
            return Ok(());
        };
        stream.write_all(&[1]).await?;
        listener
            .send(Incoming {
                link: listener_end,
                from_port: port_of(from),
            })
            .map_err(|_| refused("listener closed"))?;
        pump(proxy, stream);
        Ok(())
    }

    fn register(&self, port: u64, sender: mpsc::UnboundedSender<Incoming>) -> bool {
        let mut state = lock(&self.inner.state);
        if state.listeners.contains_key(&port) {
            return false;
        }
        state.listeners.insert(port, sender);
        true
    }

    fn unregister(&self, port: u64) {
        lock(&self.inner.state).listeners.remove(&port);
    }

    fn count_tx(&self, node: usize, n: usize) {
        if let Some(c) = self.inner.tx.get(node) {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn count_rx(&self, node: usize, n: usize) {
        if let Some(c) = self.inner.rx.get(node) {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

impl State {
    fn live_conns(&mut self) -> Vec<Arc<Conn>> {
        self.conns.retain(|c| c.strong_count() > 0);
        self.conns.iter().filter_map(Weak::upgrade).collect()
    }
}

fn refused(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, what.to_string())
}

/// Copies bytes both ways between `link` (the local end standing for a node
/// of another process) and `stream`, closing each side when the other ends.
fn pump(link: Link, stream: tokio::net::TcpStream) {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut tcp_read, mut tcp_write) = stream.into_split();
    let (mut link_read, mut link_write) = link.split();
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_CHUNK];
        while let Ok(n @ 1..) = link_read.read(&mut buf).await {
            if tcp_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = tcp_write.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_CHUNK];
        while let Ok(n @ 1..) = tcp_read.read(&mut buf).await {
            if link_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = link_write.close().await;
    });
}

/// One connection: a pipe each way. `pipes[0]` carries dialer → listener.
struct Conn {
    dialer: usize,
    listener: usize,
    pipes: [Mutex<Pipe>; 2],
}

impl Conn {
    fn reset(&self) {
        for pipe in &self.pipes {
            let wakers = {
                let mut pipe = lock(pipe);
                pipe.reset = true;
                pipe.queue.clear();
                pipe.queued = 0;
                [pipe.reader.take(), pipe.writer.take()]
            };
            wakers.into_iter().flatten().for_each(Waker::wake);
        }
    }

    fn stall(&self, until: Instant) {
        for pipe in &self.pipes {
            let reader = {
                let mut pipe = lock(pipe);
                pipe.stall_until = pipe.stall_until.max(until);
                pipe.reader.take()
            };
            if let Some(waker) = reader {
                waker.wake();
            }
        }
    }
}

struct Chunk {
    at: Instant,
    data: Vec<u8>,
    pos: usize,
}

/// One direction of a connection.
struct Pipe {
    queue: VecDeque<Chunk>,
    queued: usize,
    /// The writer closed its half: end of stream once drained.
    eof: bool,
    /// The reader is gone: writes fail.
    reader_gone: bool,
    reset: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// When the (capped) link finishes serialising what is queued.
    tx_free_at: Instant,
    /// Delivery time of the last chunk (deliveries keep their order).
    last_at: Instant,
    stall_until: Instant,
    /// Feeds another process, whose pipe adds the link's delay: none here.
    quiet: bool,
}

impl Pipe {
    fn new() -> Pipe {
        let now = Instant::now();
        Pipe {
            queue: VecDeque::new(),
            queued: 0,
            eof: false,
            reader_gone: false,
            reset: false,
            reader: None,
            writer: None,
            tx_free_at: now,
            last_at: now,
            stall_until: now,
            quiet: false,
        }
    }
}

/// One end of a simulated connection: an `AsyncRead + AsyncWrite` byte stream.
pub struct Link {
    network: Network,
    conn: Arc<Conn>,
    /// 0: the dialer's end; 1: the listener's.
    side: usize,
    sleep: Pin<Box<Sleep>>,
    rng: ChaCha8Rng,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("dialer", &self.conn.dialer)
            .field("listener", &self.conn.listener)
            .field("side", &self.side)
            .finish()
    }
}

impl Link {
    fn new(network: Network, conn: Arc<Conn>, side: usize, seed: u64) -> Link {
        Link {
            network,
            conn,
            side,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn me(&self) -> usize {
        if self.side == 0 {
            self.conn.dialer
        } else {
            self.conn.listener
        }
    }

    fn outgoing(&self) -> &Mutex<Pipe> {
        &self.conn.pipes[self.side & 1]
    }

    fn incoming(&self) -> &Mutex<Pipe> {
        &self.conn.pipes[(self.side + 1) & 1]
    }
}

fn reset_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection reset by the simulated network",
    )
}

impl AsyncRead for Link {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let now = Instant::now();
            let mut pipe = lock(this.incoming());
            if pipe.reset {
                return Poll::Ready(Err(reset_error()));
            }
            let Some(head) = pipe.queue.front() else {
                if pipe.eof {
                    return Poll::Ready(Ok(0));
                }
                pipe.reader = Some(cx.waker().clone());
                return Poll::Pending;
            };
            let due = head.at.max(pipe.stall_until);
            if due > now {
                pipe.reader = Some(cx.waker().clone());
                drop(pipe);
                this.sleep.as_mut().reset(due);
                if this.sleep.as_mut().poll(cx).is_ready() {
                    continue;
                }
                return Poll::Pending;
            }
            let mut copied = 0;
            while copied < buf.len() {
                let stall = pipe.stall_until;
                let Some(chunk) = pipe.queue.front_mut() else {
                    break;
                };
                if chunk.at.max(stall) > now {
                    break;
                }
                let available = &chunk.data[chunk.pos..];
                let n = available.len().min(buf.len() - copied);
                buf[copied..copied + n].copy_from_slice(&available[..n]);
                chunk.pos += n;
                copied += n;
                if chunk.pos == chunk.data.len() {
                    pipe.queue.pop_front();
                }
            }
            pipe.queued = pipe.queued.saturating_sub(copied);
            let writer = pipe.writer.take();
            drop(pipe);
            if let Some(waker) = writer {
                waker.wake();
            }
            this.network.count_rx(this.me(), copied);
            return Poll::Ready(Ok(copied));
        }
    }
}

impl AsyncWrite for Link {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let shape = this.network.shape();
        let jitter = if shape.jitter_ms > 0.0 {
            this.rng.random_range(-shape.jitter_ms..=shape.jitter_ms)
        } else {
            0.0
        };
        let mut pipe = lock(this.outgoing());
        if pipe.reset {
            return Poll::Ready(Err(reset_error()));
        }
        if pipe.reader_gone || pipe.eof {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the other end is gone",
            )));
        }
        if pipe.queued >= SEND_BUFFER {
            pipe.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(MAX_CHUNK);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let now = Instant::now();
        let serialise = shape
            .bandwidth_mbit
            .filter(|mbit| *mbit > 0.0 && !pipe.quiet)
            .map_or(Duration::ZERO, |mbit| {
                Duration::from_secs_f64(n as f64 * 8.0 / (mbit * 1e6))
            });
        pipe.tx_free_at = pipe.tx_free_at.max(now) + serialise;
        let delay = if pipe.quiet {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((shape.latency_ms + jitter).max(0.0) / 1000.0)
        };
        let at = (pipe.tx_free_at + delay).max(pipe.last_at);
        pipe.last_at = at;
        pipe.queue.push_back(Chunk {
            at,
            data: buf[..n].to_vec(),
            pos: 0,
        });
        pipe.queued += n;
        let reader = pipe.reader.take();
        drop(pipe);
        if let Some(waker) = reader {
            waker.wake();
        }
        this.network.count_tx(this.me(), n);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let reader = {
            let mut pipe = lock(self.outgoing());
            pipe.eof = true;
            pipe.reader.take()
        };
        if let Some(waker) = reader {
            waker.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let reader = {
            let mut pipe = lock(self.outgoing());
            pipe.eof = true;
            pipe.reader.take()
        };
        let writer = {
            let mut pipe = lock(self.incoming());
            pipe.reader_gone = true;
            pipe.queue.clear();
            pipe.queued = 0;
            pipe.writer.take()
        };
        reader.into_iter().chain(writer).for_each(Waker::wake);
    }
}

struct Incoming {
    link: Link,
    from_port: u64,
}

struct Listener {
    id: ListenerId,
    port: u64,
    incoming: mpsc::UnboundedReceiver<Incoming>,
}

/// The raw transport of one node over the simulated network.
pub struct SimTransport {
    network: Network,
    node: usize,
    listeners: Vec<Listener>,
    pending: VecDeque<TransportEvent<<Self as Transport>::ListenerUpgrade, io::Error>>,
}

impl std::fmt::Debug for SimTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTransport")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl SimTransport {
    /// The transport of node `node` on `network`.
    pub fn new(network: Network, node: usize) -> SimTransport {
        SimTransport {
            network,
            node,
            listeners: Vec::new(),
            pending: VecDeque::new(),
        }
    }
}

impl Drop for SimTransport {
    fn drop(&mut self) {
        for listener in &self.listeners {
            self.network.unregister(listener.port);
        }
    }
}

impl Transport for SimTransport {
    type Output = Link;
    type Error = io::Error;
    type ListenerUpgrade = futures::future::Ready<Result<Link, io::Error>>;
    type Dial = Pin<Box<dyn Future<Output = Result<Link, io::Error>> + Send>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let Some(port) = memory_port(&addr).filter(|p| *p != 0) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let (sender, incoming) = mpsc::unbounded_channel();
        if !self.network.register(port, sender) {
            return Err(TransportError::Other(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("memory port {port} in use"),
            )));
        }
        self.listeners.push(Listener { id, port, incoming });
        self.pending.push_back(TransportEvent::NewAddress {
            listener_id: id,
            listen_addr: addr,
        });
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(index) = self.listeners.iter().position(|l| l.id == id) else {
            return false;
        };
        let listener = self.listeners.remove(index);
        self.network.unregister(listener.port);
        self.pending.push_back(TransportEvent::ListenerClosed {
            listener_id: id,
            reason: Ok(()),
        });
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(port) = memory_port(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let delay = self
            .network
            .admit_dial(self.node, port)
            .map_err(TransportError::Other)?;
        let network = self.network.clone();
        let from = self.node;
        let remote = node_of(port).and_then(|to| Some((to, network.remote_port(to)?)));
        Ok(Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match remote {
                Some((to, tcp_port)) => network.connect_remote(from, to, tcp_port).await,
                None => network.connect(from, port),
            }
        }))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        if let Some(event) = self.pending.pop_front() {
            return Poll::Ready(event);
        }
        for listener in &mut self.listeners {
            if let Poll::Ready(Some(incoming)) = listener.incoming.poll_recv(cx) {
                return Poll::Ready(TransportEvent::Incoming {
                    listener_id: listener.id,
                    upgrade: futures::future::ready(Ok(incoming.link)),
                    local_addr: Protocol::Memory(listener.port).into(),
                    send_back_addr: Protocol::Memory(incoming.from_port).into(),
                });
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt};

    async fn pair(network: &Network) -> (Link, Link) {
        let mut listener = SimTransport::new(network.clone(), 1);
        listener
            .listen_on(ListenerId::next(), addr_of(1).parse().unwrap())
            .unwrap();
        let mut dialer = SimTransport::new(network.clone(), 0);
        let dial = dialer
            .dial(
                addr_of(1).parse().unwrap(),
                DialOpts {
                    role: libp2p::core::Endpoint::Dialer,
                    port_use: libp2p::core::transport::PortUse::New,
                },
            )
            .unwrap();
        let ours = dial.await.unwrap();
        let theirs = loop {
            match futures::future::poll_fn(|cx| Pin::new(&mut listener).poll(cx)).await {
                TransportEvent::Incoming { upgrade, .. } => break upgrade.await.unwrap(),
                _ => continue,
            }
        };
        (ours, theirs)
    }

    #[tokio::test]
    async fn latency_delays_and_keeps_order() {
        let network = Network::new(2, 1, None);
        network.set_shape(Shape {
            latency_ms: 80.0,
            jitter_ms: 20.0,
            ..Shape::default()
        });
        let (mut a, mut b) = pair(&network).await;
        let start = Instant::now();
        for i in 0..10u8 {
            a.write_all(&[i; 100]).await.unwrap();
        }
        let mut got = vec![0u8; 1000];
        b.read_exact(&mut got).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(60));
        for (i, chunk) in got.chunks(100).enumerate() {
            assert!(chunk.iter().all(|&x| x == i as u8));
        }
        assert_eq!(network.bytes_sent(0), 1000);
        assert_eq!(network.bytes_received(1), 1000);
    }

    #[tokio::test]
    async fn bandwidth_cap_paces_delivery() {
        let network = Network::new(2, 1, None);
        network.set_shape(Shape {
            bandwidth_mbit: Some(1.0),
            ..Shape::default()
        });
        let (mut a, mut b) = pair(&network).await;
        let start = Instant::now();
        a.write_all(&[7u8; 25_000]).await.unwrap();
        let mut got = vec![0u8; 25_000];
        b.read_exact(&mut got).await.unwrap();
        // 200 kbit at 1 Mbit/s: 200 ms.
        assert!(start.elapsed() >= Duration::from_millis(190));
    }

    #[tokio::test]
    async fn reset_and_partition_fail_the_link() {
        let network = Network::new(2, 1, None);
        let (mut a, mut b) = pair(&network).await;
        network.split(vec![0, 1]);
        let mut buf = [0u8; 4];
        assert!(b.read(&mut buf).await.is_err());
        assert!(a.write_all(b"x").await.is_err());
        assert_eq!(network.counters().resets, 1);
        let mut dialer = SimTransport::new(network.clone(), 0);
        let opts = DialOpts {
            role: libp2p::core::Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::New,
        };
        assert!(dialer.dial(addr_of(1).parse().unwrap(), opts).is_err());
        network.heal();
        let (mut a, mut b) = pair(&network).await;
        a.write_all(b"ok").await.unwrap();
        b.read_exact(&mut buf[..2]).await.unwrap();
        assert_eq!(&buf[..2], b"ok");
    }

    /// Two parts of a spread run, each with its own `Network` and loopback
    /// port: a dial across them carries bytes both ways with the link delay
    /// applied once, and the topology still refuses unlinked pairs.
    #[tokio::test]
    async fn a_link_between_processes_carries_bytes_with_the_delay_applied_once() {
        let links: Links = [(0, 1), (0, 2)].into_iter().collect();
        let parts: Vec<Network> = (0..2)
            .map(|me| {
                let network = Network::new(4, 1, Some(links.clone()));
                network.set_shape(Shape {
                    latency_ms: 100.0,
                    ..Shape::default()
                });
                network.spread(vec![0, 1, 1, 1], me);
                network
            })
            .collect();
        let mut ports = Vec::new();
        for network in &parts {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap();
            ports.push(listener.local_addr().unwrap().port());
            network.serve(listener);
        }
        for network in &parts {
            network.set_ports(ports.clone());
        }
        let mut listener = SimTransport::new(parts[1].clone(), 1);
        listener
            .listen_on(ListenerId::next(), addr_of(1).parse().unwrap())
            .unwrap();
        let opts = DialOpts {
            role: libp2p::core::Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::New,
        };
        let mut dialer = SimTransport::new(parts[0].clone(), 0);
        let dial = dialer.dial(addr_of(1).parse().unwrap(), opts).unwrap();
        let accept = async {
            loop {
                match futures::future::poll_fn(|cx| Pin::new(&mut listener).poll(cx)).await {
                    TransportEvent::Incoming { upgrade, .. } => break upgrade.await.unwrap(),
                    _ => continue,
                }
            }
        };
        let (ours, theirs) = futures::join!(dial, accept);
        let (mut ours, mut theirs) = (ours.unwrap(), theirs);
        assert_eq!(parts[0].counters().connections, 1);

        async fn one_way(from: &mut Link, to: &mut Link) {
            let start = Instant::now();
            from.write_all(b"across").await.unwrap();
            let mut got = [0u8; 6];
            to.read_exact(&mut got).await.unwrap();
            let took = start.elapsed();
            assert_eq!(&got, b"across");
            assert!(took >= Duration::from_millis(95), "{took:?}");
            assert!(
                took < Duration::from_millis(190),
                "delay applied twice: {took:?}"
            );
        }
        one_way(&mut ours, &mut theirs).await;
        one_way(&mut theirs, &mut ours).await;
        // Closing one end ends the other's stream.
        ours.close().await.unwrap();
        let mut rest = Vec::new();
        theirs.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());

        // Node 3 (in part 1) is not linked to node 0: refused at the dial.
        let mut stranger = SimTransport::new(parts[0].clone(), 0);
        assert!(stranger.dial(addr_of(3).parse().unwrap(), opts).is_err());
        assert_eq!(parts[0].counters().refused_dials, 1);
        // Node 2 is linked but nobody listens for it in part 1: part 1
        // answers no, and the dial fails and counts as refused.
        let dial = stranger.dial(addr_of(2).parse().unwrap(), opts).unwrap();
        assert!(dial.await.is_err());
        assert_eq!(parts[0].counters().refused_dials, 2);
        assert_eq!(parts[0].counters().connections, 1);
        // A part that is not there (its port closed): refused too.
        let gone = Network::new(4, 1, Some(links.clone()));
        gone.spread(vec![0, 1, 1, 1], 0);
        let closed = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        gone.set_ports(vec![ports[0], closed_port]);
        let mut dialer = SimTransport::new(gone.clone(), 0);
        let dial = dialer.dial(addr_of(1).parse().unwrap(), opts).unwrap();
        assert!(dial.await.is_err());
        assert_eq!(gone.counters().refused_dials, 1);
    }

    #[tokio::test]
    async fn topology_refuses_unlinked_pairs() {
        let network = Network::new(3, 1, Some([(0, 1)].into_iter().collect()));
        let mut dialer = SimTransport::new(network.clone(), 2);
        let opts = DialOpts {
            role: libp2p::core::Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::New,
        };
        assert!(dialer.dial(addr_of(1).parse().unwrap(), opts).is_err());
        assert_eq!(network.counters().refused_dials, 1);
    }
}
