//! Unit tests of the inbound gate's per-IP limits and member reserve.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use libp2p::swarm::ConnectionId;

use super::*;

fn tcp(ip: &str) -> Multiaddr {
    format!("/ip4/{ip}/tcp/40000").parse().unwrap()
}

#[test]
fn one_outsider_ip_holds_at_most_four_pending_connections() {
    let mut gate = InboundGate::new(32);
    let ids: Vec<ConnectionId> = (0..MAX_PENDING_PER_IP)
        .map(ConnectionId::new_unchecked)
        .collect();
    for id in &ids {
        gate.admit(*id, &tcp("192.0.2.1")).unwrap();
    }
    let extra = ConnectionId::new_unchecked(100);
    assert!(gate.admit(extra, &tcp("192.0.2.1")).is_err());
    // Another IP is unaffected; a finished handshake frees a slot.
    gate.admit(extra, &tcp("192.0.2.2")).unwrap();
    gate.release(ids[0]);
    gate.admit(ids[0], &tcp("192.0.2.1")).unwrap();
}

#[test]
fn outsiders_leave_a_reserve_for_member_ips() {
    let mut gate = InboundGate::new(32);
    gate.set_roster_ips(["198.51.100.7".parse().unwrap()]);
    let mut n = 0u32;
    let mut admitted = 0;
    // Many outsider IPs, four connections each.
    'outer: for host in 1..=50 {
        for _ in 0..MAX_PENDING_PER_IP {
            n += 1;
            let id = ConnectionId::new_unchecked(n as usize);
            if gate.admit(id, &tcp(&format!("203.0.113.{host}"))).is_err() {
                break 'outer;
            }
            admitted += 1;
        }
    }
    assert_eq!(admitted, 32 - MEMBER_RESERVE);
    // The member still gets in, up to its own per-IP limit.
    for k in 0..MEMBER_RESERVE {
        let id = ConnectionId::new_unchecked(10_000 + k);
        gate.admit(id, &tcp("198.51.100.7")).unwrap();
    }
    assert_eq!(gate.pending(), 32);
}

#[test]
fn established_connections_teach_member_ips_and_memory_addresses_pass() {
    let mut gate = InboundGate::new(32);
    let ip: IpAddr = "192.0.2.9".parse().unwrap();
    assert!(!gate.is_member_ip(&ip));
    gate.learn(&tcp("192.0.2.9"));
    assert!(gate.is_member_ip(&ip));
    let memory: Multiaddr = "/memory/1234".parse().unwrap();
    for k in 0..100 {
        gate.admit(ConnectionId::new_unchecked(k), &memory).unwrap();
    }
    assert_eq!(gate.pending(), 0);
}
