//! The inbound connection gate: bounds how many incoming connections still
//! in their handshake one source IP may hold, and keeps a reserve of those
//! pending slots for the IPs of roster members, so that outsiders who can
//! reach the port cannot lock members out (review finding M3). Outsiders are
//! refused by the allow-list only once Noise has proved their PeerId; until
//! then this gate and the short inbound upgrade timeout
//! ([`super::transport::INBOUND_UPGRADE_TIMEOUT`]) bound what they hold.
//!
//! Member IPs are the IP addresses in the roster's node addresses (set by the
//! event loop on every roster change) plus the source IPs of connections that
//! were established (only allow-listed peers get that far). Connections
//! without an IP (the in-memory transports of tests and simulations) pass.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::{ConnectionEstablished, ListenFailure};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Pending inbound connections one IP that is not a member's may hold.
pub const MAX_PENDING_PER_IP: usize = 4;

/// Pending inbound connections one member IP may hold (several members may
/// share an address: one host, one NAT).
pub const MAX_PENDING_PER_MEMBER_IP: usize = 16;

/// Pending inbound slots (of [`super::NetConfig::max_pending_incoming`])
/// that only member IPs may use.
pub const MEMBER_RESERVE: usize = 8;

/// Source IPs of established connections remembered as member IPs.
const MAX_LEARNT_IPS: usize = 1024;

/// Why the gate refused a connection.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(&'static str);

/// The gate; see the module documentation.
#[derive(Debug)]
pub struct InboundGate {
    /// Pending inbound slots in total (outsiders get this less
    /// [`MEMBER_RESERVE`]).
    max_pending: usize,
    /// IPs in the roster's addresses.
    roster_ips: HashSet<IpAddr>,
    /// Source IPs of established connections, oldest first.
    learnt_ips: VecDeque<IpAddr>,
    /// Pending inbound connections by id: their source IP and whether it
    /// was a member IP when they arrived.
    pending: HashMap<ConnectionId, (IpAddr, bool)>,
    /// Pending inbound connections per source IP.
    per_ip: HashMap<IpAddr, usize>,
    /// Pending inbound connections from IPs that are not members'.
    outsiders: usize,
}

/// The IP of a multiaddr's first component, if it is an IP.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

impl InboundGate {
    /// A gate for `max_pending` pending inbound connections in total.
    pub fn new(max_pending: usize) -> InboundGate {
        InboundGate {
            max_pending,
            roster_ips: HashSet::new(),
            learnt_ips: VecDeque::new(),
            pending: HashMap::new(),
            per_ip: HashMap::new(),
            outsiders: 0,
        }
    }

    /// Replaces the member IPs taken from the roster's addresses.
    pub fn set_roster_ips(&mut self, ips: impl IntoIterator<Item = IpAddr>) {
        self.roster_ips = ips.into_iter().collect();
    }

    /// Whether `ip` is a member's.
    pub fn is_member_ip(&self, ip: &IpAddr) -> bool {
        self.roster_ips.contains(ip) || self.learnt_ips.contains(ip)
    }

    /// Admits or refuses a new inbound connection from `remote`.
    pub fn admit(&mut self, id: ConnectionId, remote: &Multiaddr) -> Result<(), Refused> {
        let Some(ip) = ip_of(remote) else {
            return Ok(());
        };
        let member = self.is_member_ip(&ip);
        let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        if member {
            if from_ip >= MAX_PENDING_PER_MEMBER_IP {
                return Err(Refused("too many pending connections from this address"));
            }
        } else {
            if from_ip >= MAX_PENDING_PER_IP {
                return Err(Refused("too many pending connections from this address"));
            }
            if self.outsiders >= self.max_pending.saturating_sub(MEMBER_RESERVE) {
                return Err(Refused(
                    "pending connection slots for unknown addresses are full",
                ));
            }
            self.outsiders += 1;
        }
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.pending.insert(id, (ip, member));
        Ok(())
    }

    /// A pending connection ended (established or failed).
    pub fn release(&mut self, id: ConnectionId) {
        let Some((ip, member)) = self.pending.remove(&id) else {
            return;
        };
        if !member {
            self.outsiders = self.outsiders.saturating_sub(1);
        }
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Remembers the source IP of an established connection as a member's.
    fn learn(&mut self, remote: &Multiaddr) {
        let Some(ip) = ip_of(remote) else { return };
        if self.roster_ips.contains(&ip) || self.learnt_ips.contains(&ip) {
            return;
        }
        if self.learnt_ips.len() >= MAX_LEARNT_IPS {
            self.learnt_ips.pop_front();
        }
        self.learnt_ips.push_back(ip);
    }

    /// Pending inbound connections held now (for tests).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

impl NetworkBehaviour for InboundGate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit(connection_id, remote_addr)
            .map_err(ConnectionDenied::new)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release(connection_id);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.release(connection_id)
            }
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                connection_id,
                endpoint,
                ..
            }) => {
                self.release(connection_id);
                self.learn(endpoint.get_remote_address());
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
