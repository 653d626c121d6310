//! Transports for the swarm, injected rather than chosen by `cfg(test)`: TCP + QUIC for
//! production, libp2p's in-process memory transport for tests, and [`upgrade`] as the seam
//! through which the simulator passes its shaped in-memory links.
//!
//! Every transport comes out as the same [`BoxedTransport`]: authenticated with Noise (the
//! PeerId is the node key) and multiplexed with Yamux, or QUIC's own TLS and streams.

use std::{fmt, time::Duration};

use futures::{AsyncRead, AsyncWrite};
use libp2p::{
    PeerId, Transport,
    core::{
        muxing::StreamMuxerBox,
        transport::{Boxed, MemoryTransport},
        upgrade::Version,
    },
    identity::Keypair,
    noise, quic, tcp, yamux,
};

use super::NetError;

/// An authenticated, multiplexed transport ready for [`libp2p::Swarm::new`].
pub type BoxedTransport = Boxed<(PeerId, StreamMuxerBox)>;

/// How long the Noise handshake and Yamux negotiation on a new connection may take.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long an incoming connection may take to finish Noise and Yamux. Short, because until
/// Noise has proved the dialer's PeerId the connection holds one of the node's pending
/// inbound slots, whoever opened it (review finding M3); a member on a slow link needs a few
/// round trips, well under this.
pub const INBOUND_UPGRADE_TIMEOUT: Duration = Duration::from_secs(5);

/// Upgrades any raw byte-stream transport with Noise (authentication, encryption) and Yamux
/// (multiplexing), and boxes it. Outgoing upgrades may take [`UPGRADE_TIMEOUT`], incoming ones
/// [`INBOUND_UPGRADE_TIMEOUT`].
///
/// This is the seam the simulator uses: it passes its own shaped in-memory transport here and
/// gets back exactly the stack a production node runs over TCP.
pub fn upgrade<T>(raw: T, keypair: &Keypair) -> Result<BoxedTransport, NetError>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let noise = noise::Config::new(keypair).map_err(NetError::Noise)?;
    Ok(raw
        .upgrade(Version::V1)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(UPGRADE_TIMEOUT)
        .inbound_timeout(INBOUND_UPGRADE_TIMEOUT)
        .boxed())
}

/// The production transport: TCP (with `TCP_NODELAY`) + Noise + Yamux, or'ed with QUIC v1.
///
/// Listen on `/ip4/…/tcp/…` and `/ip4/…/udp/…/quic-v1` addresses; dials pick the transport
/// by address.
pub fn production_transport(keypair: &Keypair) -> Result<BoxedTransport, NetError> {
    let tcp = upgrade(
        tcp::tokio::Transport::new(tcp::Config::new().nodelay(true)),
        keypair,
    )?;
    let quic = quic::tokio::Transport::new(quic::Config::new(keypair))
        .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection)));
    Ok(tcp
        .or_transport(quic)
        .map(|either, _| either.into_inner())
        .boxed())
}

/// libp2p's in-process memory transport (`/memory/<port>` addresses) + Noise + Yamux.
///
/// All memory transports in one process share a single address space, so nodes in the same
/// test or simulation can dial each other; `/memory/0` picks a free port.
pub fn memory_transport(keypair: &Keypair) -> Result<BoxedTransport, NetError> {
    upgrade(MemoryTransport::default(), keypair)
}

/// A constructor for a caller-supplied transport; receives the node's identity keypair.
pub type TransportConstructor =
    Box<dyn FnOnce(&Keypair) -> Result<BoxedTransport, NetError> + Send>;

/// Which transport a swarm runs over.
pub enum TransportKind {
    /// TCP + QUIC; see [`production_transport`].
    Production,
    /// The in-process memory transport; see [`memory_transport`].
    Memory,
    /// Anything else, e.g. the simulator's shaped links passed through [`upgrade`].
    Custom(TransportConstructor),
}

impl TransportKind {
    /// Builds the transport for the node with identity `keypair`.
    pub fn build(self, keypair: &Keypair) -> Result<BoxedTransport, NetError> {
        match self {
            TransportKind::Production => production_transport(keypair),
            TransportKind::Memory => memory_transport(keypair),
            TransportKind::Custom(constructor) => constructor(keypair),
        }
    }
}

impl fmt::Debug for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportKind::Production => f.write_str("Production"),
            TransportKind::Memory => f.write_str("Memory"),
            TransportKind::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}
