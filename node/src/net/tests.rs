//! Tests of the networking layer with real swarms over the memory transport and over TCP and
//! QUIC on loopback, plus the sync codec's framing. Every wait has a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, bail, ensure};
use futures::{StreamExt as _, future::select_all, io::Cursor};
use libp2p::{
    Multiaddr, PeerId, Swarm,
    allow_block_list::{Blocked, NotAllowed},
    gossipsub::{self, MessageAcceptance, MessageId},
    identity::Keypair,
    request_response::{self, Codec as _},
    swarm::{DialError, ListenError, SwarmEvent, dial_opts::DialOpts},
};

use super::*;

const DEADLINE: Duration = Duration::from_secs(20);
const CONSORTIUM: &str = "c0ffee00";

fn keypair(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

/// A message id unlike the default, to prove the configured function is the one in use.
fn test_message_id(message: &gossipsub::Message) -> MessageId {
    let mut id = b"test/".to_vec();
    id.extend_from_slice(&blake3::hash(&message.data).as_bytes()[..8]);
    MessageId::new(&id)
}

fn test_config() -> NetConfig {
    NetConfig {
        heartbeat: Duration::from_millis(100),
        sync_request_timeout: Duration::from_secs(10),
        message_id_fn: Arc::new(test_message_id),
        ..NetConfig::default()
    }
}

fn node(seed: u8, transport: TransportKind) -> Swarm<Behaviour> {
    build_swarm(keypair(seed), transport, &test_config()).unwrap()
}

type Event = SwarmEvent<BehaviourEvent>;

/// Polls every swarm until `on_event` returns `Some`, or fails at the deadline. `on_event`
/// gets the index of the swarm that produced the event and mutable access to all swarms.
async fn drive<T>(
    swarms: &mut [Swarm<Behaviour>],
    mut on_event: impl FnMut(&mut [Swarm<Behaviour>], usize, Event) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let (event, idx, _) =
                select_all(swarms.iter_mut().map(|swarm| swarm.select_next_some())).await;
            if let Some(done) = on_event(swarms, idx, event)? {
                return Ok(done);
            }
        }
    })
    .await
    .context("deadline passed while driving swarms")?
}

/// Starts `swarms[idx]` listening on `addr` and returns the concrete address.
async fn listen(
    swarms: &mut [Swarm<Behaviour>],
    idx: usize,
    addr: Multiaddr,
) -> anyhow::Result<Multiaddr> {
    swarms[idx].listen_on(addr)?;
    drive(swarms, |_, from, event| {
        Ok(match event {
            SwarmEvent::NewListenAddr { address, .. } if from == idx => Some(address),
            _ => None,
        })
    })
    .await
}

/// Drives until `swarms[idx]` sees `peer` subscribe to the envelope topic.
async fn await_subscription(
    swarms: &mut [Swarm<Behaviour>],
    idx: usize,
    peer: PeerId,
) -> anyhow::Result<()> {
    let (envelopes, _) = topics(CONSORTIUM);
    drive(swarms, |_, from, event| {
        Ok(match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                peer_id,
                topic,
                ..
            })) if from == idx && peer_id == peer && topic == envelopes.hash() => Some(()),
            _ => None,
        })
    })
    .await
}

/// Two peers that allow each other connect over `transport()`, A publishes, B receives and
/// accepts with the configured message id, then B asks A for bytes over sync.
async fn gossip_and_sync_round_trip(
    transport: fn() -> TransportKind,
    listen_addr: Multiaddr,
) -> anyhow::Result<()> {
    const A: usize = 0;
    const B: usize = 1;
    let mut swarms = vec![node(1, transport()), node(2, transport())];
    let a_id = *swarms[A].local_peer_id();
    let b_id = *swarms[B].local_peer_id();
    assert!(swarms[A].behaviour_mut().allow_peer(b_id));
    assert!(swarms[B].behaviour_mut().allow_peer(a_id));
    let (envelopes, _) = swarms[A].behaviour_mut().join_consortium(CONSORTIUM)?;
    swarms[B].behaviour_mut().join_consortium(CONSORTIUM)?;

    let addr = listen(&mut swarms, A, listen_addr).await?;
    swarms[B].dial(addr)?;
    await_subscription(&mut swarms, A, b_id).await?;

    let payload = b"bulletin: TLP:CLEAR indicators for port systems".to_vec();
    let expected_id = test_message_id(&gossipsub::Message {
        source: None,
        data: payload.clone(),
        sequence_number: None,
        topic: envelopes.hash(),
    });
    let published = swarms[A]
        .behaviour_mut()
        .gossipsub
        .publish(envelopes.clone(), payload.clone())?;
    ensure!(published == expected_id, "publish returned {published}");

    let (source, message_id, message, forwarded) = drive(&mut swarms, |swarms, from, event| {
        Ok(match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) if from == B => {
                let forwarded = swarms[B]
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        MessageAcceptance::Accept,
                    );
                Some((propagation_source, message_id, message, forwarded))
            }
            _ => None,
        })
    })
    .await?;
    assert_eq!(source, a_id);
    assert_eq!(message_id, expected_id);
    assert_eq!(message.data, payload);
    assert_eq!(message.source, None, "anonymous messages carry no author");
    assert_eq!(message.topic, envelopes.hash());
    assert!(forwarded, "accepting must find the message in the cache");

    // Sync: a small request, a response large enough to span many Yamux frames.
    let request = b"frontier digest".to_vec();
    let response: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let request_id = swarms[B]
        .behaviour_mut()
        .sync
        .send_request(&a_id, request.clone());
    let got = drive(&mut swarms, |swarms, from, event| {
        let SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) = event else {
            return Ok(None);
        };
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request: got_request,
                        channel,
                        ..
                    },
                ..
            } if from == A => {
                ensure!(peer == b_id, "request from {peer}");
                ensure!(got_request == request, "request bytes changed in transit");
                if swarms[A]
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response.clone())
                    .is_err()
                {
                    bail!("response channel closed");
                }
                Ok(None)
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id: answered,
                        response,
                    },
                ..
            } if from == B => {
                ensure!(
                    peer == a_id && answered == request_id,
                    "unexpected response"
                );
                Ok(Some(response))
            }
            request_response::Event::OutboundFailure { error, .. } => {
                bail!("sync request failed: {error}")
            }
            request_response::Event::InboundFailure { error, .. } => {
                bail!("sync request failed inbound: {error}")
            }
            _ => Ok(None),
        }
    })
    .await?;
    ensure!(got == response, "response bytes changed in transit");
    Ok(())
}

#[tokio::test]
async fn memory_transport_gossips_and_syncs() -> anyhow::Result<()> {
    gossip_and_sync_round_trip(|| TransportKind::Memory, "/memory/0".parse()?).await
}

#[tokio::test]
async fn tcp_transport_gossips_and_syncs() -> anyhow::Result<()> {
    gossip_and_sync_round_trip(
        || TransportKind::Production,
        "/ip4/127.0.0.1/tcp/0".parse()?,
    )
    .await
}

#[tokio::test]
async fn quic_transport_gossips_and_syncs() -> anyhow::Result<()> {
    gossip_and_sync_round_trip(
        || TransportKind::Production,
        "/ip4/127.0.0.1/udp/0/quic-v1".parse()?,
    )
    .await
}

#[tokio::test]
async fn custom_transport_goes_through_the_upgrade_seam() -> anyhow::Result<()> {
    fn custom() -> TransportKind {
        TransportKind::Custom(Box::new(|keypair| {
            upgrade(libp2p::core::transport::MemoryTransport::default(), keypair)
        }))
    }
    gossip_and_sync_round_trip(custom, "/memory/0".parse()?).await
}

#[tokio::test]
async fn outsider_cannot_connect_or_receive() -> anyhow::Result<()> {
    const A: usize = 0;
    const B: usize = 1;
    const OUTSIDER: usize = 2;
    let mut swarms = vec![
        node(1, TransportKind::Memory),
        node(2, TransportKind::Memory),
        node(3, TransportKind::Memory),
    ];
    let a_id = *swarms[A].local_peer_id();
    let b_id = *swarms[B].local_peer_id();
    let outsider_id = *swarms[OUTSIDER].local_peer_id();
    swarms[A].behaviour_mut().set_allowed([b_id]);
    swarms[B].behaviour_mut().set_allowed([a_id]);
    // The outsider admits A, so the refusal below is A's doing.
    swarms[OUTSIDER].behaviour_mut().set_allowed([a_id]);
    let mut topic = None;
    for swarm in &mut swarms {
        topic = Some(swarm.behaviour_mut().join_consortium(CONSORTIUM)?.0);
    }
    let envelopes = topic.context("no swarms")?;

    // A refuses to dial a peer that is not allowed, before touching the network.
    let dial = swarms[A].dial(
        DialOpts::peer_id(outsider_id)
            .addresses(vec!["/memory/1".parse()?])
            .build(),
    );
    match dial {
        Err(DialError::Denied { cause }) => {
            ensure!(cause.downcast_ref::<NotAllowed>().is_some(), "{cause:?}")
        }
        other => bail!("dialing an outsider gave {other:?}"),
    }

    let addr = listen(&mut swarms, A, "/memory/0".parse()?).await?;
    swarms[B].dial(addr.clone())?;
    swarms[OUTSIDER].dial(addr)?;

    let (mut outsider_denied, mut b_subscribed) = (false, false);
    drive(&mut swarms, |_, from, event| {
        match event {
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                peer_id,
                ..
            } if from == A => {
                ensure!(cause.downcast_ref::<NotAllowed>().is_some(), "{cause:?}");
                ensure!(peer_id == Some(outsider_id), "denied {peer_id:?}");
                outsider_denied = true;
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. }
                if from == A && peer_id == outsider_id =>
            {
                bail!("A established a connection with the outsider")
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                peer_id,
                ..
            })) if from == A && peer_id == b_id => b_subscribed = true,
            _ => {}
        }
        Ok((outsider_denied && b_subscribed).then_some(()))
    })
    .await?;

    swarms[A]
        .behaviour_mut()
        .gossipsub
        .publish(envelopes, b"for members only".to_vec())?;
    drive(&mut swarms, |_, from, event| match event {
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { .. })) => {
            ensure!(from != OUTSIDER, "the outsider received a gossip message");
            Ok((from == B).then_some(()))
        }
        SwarmEvent::ConnectionEstablished { peer_id, .. }
            if from == A && peer_id == outsider_id =>
        {
            bail!("A established a connection with the outsider")
        }
        _ => Ok(None),
    })
    .await?;

    ensure!(!swarms[A].is_connected(&outsider_id));
    ensure!(
        swarms[A]
            .behaviour()
            .gossipsub
            .all_peers()
            .all(|(peer, _)| *peer != outsider_id),
        "the outsider is known to A's gossipsub"
    );
    Ok(())
}

/// Connects `swarms[1]` to `swarms[0]` over memory, both allowing each other.
async fn connected_pair() -> anyhow::Result<(Vec<Swarm<Behaviour>>, Multiaddr)> {
    let mut swarms = vec![
        node(1, TransportKind::Memory),
        node(2, TransportKind::Memory),
    ];
    let a_id = *swarms[0].local_peer_id();
    let b_id = *swarms[1].local_peer_id();
    swarms[0].behaviour_mut().set_allowed([b_id]);
    swarms[1].behaviour_mut().set_allowed([a_id]);
    let addr = listen(&mut swarms, 0, "/memory/0".parse()?).await?;
    swarms[1].dial(addr.clone())?;
    let (mut a_up, mut b_up) = (false, false);
    drive(&mut swarms, |_, from, event| {
        if let SwarmEvent::ConnectionEstablished { .. } = event {
            if from == 0 {
                a_up = true;
            } else {
                b_up = true;
            }
        }
        Ok((a_up && b_up).then_some(()))
    })
    .await?;
    Ok((swarms, addr))
}

/// Drives until both sides of the pair report their last connection to the other closed.
async fn await_disconnect(swarms: &mut [Swarm<Behaviour>]) -> anyhow::Result<()> {
    let (mut a_down, mut b_down) = (false, false);
    drive(swarms, |_, from, event| {
        if let SwarmEvent::ConnectionClosed {
            num_established: 0, ..
        } = event
        {
            if from == 0 {
                a_down = true;
            } else {
                b_down = true;
            }
        }
        Ok((a_down && b_down).then_some(()))
    })
    .await
}

/// Redials `swarms[0]` from `swarms[1]` and expects the listener to deny it with `cause E`.
async fn expect_redial_denied<E>(
    swarms: &mut [Swarm<Behaviour>],
    addr: Multiaddr,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    swarms[1].dial(addr)?;
    drive(swarms, |_, from, event| match event {
        SwarmEvent::IncomingConnectionError {
            error: ListenError::Denied { cause },
            ..
        } if from == 0 => {
            ensure!(cause.downcast_ref::<E>().is_some(), "{cause:?}");
            Ok(Some(()))
        }
        SwarmEvent::ConnectionEstablished { .. } if from == 0 => {
            bail!("a refused peer connected again")
        }
        _ => Ok(None),
    })
    .await
}

#[tokio::test]
async fn removing_a_peer_from_the_allow_set_closes_its_connection() -> anyhow::Result<()> {
    let (mut swarms, addr) = connected_pair().await?;
    let b_id = *swarms[1].local_peer_id();
    let change = swarms[0].behaviour_mut().set_allowed([]);
    assert_eq!(
        change,
        AllowListChange {
            added: vec![],
            removed: vec![b_id]
        }
    );
    await_disconnect(&mut swarms).await?;
    ensure!(!swarms[0].is_connected(&b_id));
    expect_redial_denied::<NotAllowed>(&mut swarms, addr).await
}

#[tokio::test]
async fn blocking_an_allowed_peer_closes_its_connection() -> anyhow::Result<()> {
    let (mut swarms, addr) = connected_pair().await?;
    let b_id = *swarms[1].local_peer_id();
    ensure!(swarms[0].behaviour_mut().block_peer(b_id));
    ensure!(!swarms[0].behaviour().is_permitted(&b_id));
    await_disconnect(&mut swarms).await?;
    expect_redial_denied::<Blocked>(&mut swarms, addr).await
}

#[test]
fn set_allowed_reports_the_difference() {
    let mut behaviour = Behaviour::new(&keypair(1), &NetConfig::default()).unwrap();
    let [p, q, r] = [2, 3, 4].map(|seed| keypair(seed).public().to_peer_id());
    let first = behaviour.set_allowed([p, q]);
    assert_eq!(first.removed, vec![]);
    assert_eq!(first.added.len(), 2);
    let second = behaviour.set_allowed([q, r]);
    assert_eq!(second.added, vec![r]);
    assert_eq!(second.removed, vec![p]);
    assert!(behaviour.is_permitted(&q) && !behaviour.is_permitted(&p));
}

#[test]
fn topics_follow_the_design_names() {
    let (envelopes, roster) = topics("ab12");
    assert_eq!(envelopes.to_string(), "/breakwater/ab12/envelopes/1");
    assert_eq!(roster.to_string(), "/breakwater/ab12/roster/1");
}

#[test]
fn join_consortium_rejects_non_hex_ids() {
    let mut behaviour = Behaviour::new(&keypair(1), &NetConfig::default()).unwrap();
    for bad in ["", "AB12", "ab/../cd", "xyz"] {
        assert!(
            matches!(
                behaviour.join_consortium(bad),
                Err(NetError::InvalidConsortium { .. })
            ),
            "{bad:?} accepted"
        );
    }
    let (envelopes, roster) = behaviour.join_consortium("ab12").unwrap();
    let subscribed: Vec<_> = behaviour.gossipsub.topics().cloned().collect();
    assert!(subscribed.contains(&envelopes.hash()) && subscribed.contains(&roster.hash()));
}

#[test]
fn gossipsub_config_matches_the_design() {
    let config = behaviour::gossipsub_config(&test_config()).unwrap();
    assert!(config.validate_messages());
    assert!(matches!(
        config.validation_mode(),
        gossipsub::ValidationMode::Anonymous
    ));
    assert!(config.flood_publish());
    assert!(config.idontwant_on_publish());
    assert!(config.max_transmit_size() >= behaviour::MAX_ENVELOPE_BYTES);
    assert_eq!(config.heartbeat_interval(), Duration::from_millis(100));
    behaviour::topic_score_params().validate().unwrap();
    behaviour::peer_score_params().validate().unwrap();
    behaviour::peer_score_thresholds().validate().unwrap();
    let params = behaviour::topic_score_params();
    assert_eq!(params.mesh_message_deliveries_weight, 0.0);
    assert_eq!(params.mesh_failure_penalty_weight, 0.0);
}

#[test]
fn transport_kind_debug_hides_the_constructor() {
    let custom = TransportKind::Custom(Box::new(memory_transport));
    assert_eq!(format!("{custom:?}"), "Custom(..)");
    assert_eq!(format!("{:?}", TransportKind::Memory), "Memory");
}

mod codec_framing {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut bytes = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    #[tokio::test]
    async fn round_trips_requests_and_responses() {
        let mut codec = SyncCodec::default();
        for body in [vec![], vec![7u8], vec![0xAB; 70_000]] {
            let mut wire = Cursor::new(Vec::new());
            codec
                .write_request(&SYNC_PROTOCOL, &mut wire, body.clone())
                .await
                .unwrap();
            assert_eq!(wire.get_ref(), &frame(&body));
            wire.set_position(0);
            let read = codec.read_request(&SYNC_PROTOCOL, &mut wire).await.unwrap();
            assert_eq!(read, body);

            let mut wire = Cursor::new(Vec::new());
            codec
                .write_response(&SYNC_PROTOCOL, &mut wire, body.clone())
                .await
                .unwrap();
            wire.set_position(0);
            let read = codec
                .read_response(&SYNC_PROTOCOL, &mut wire)
                .await
                .unwrap();
            assert_eq!(read, body);
        }
    }

    #[tokio::test]
    async fn oversize_declared_length_is_rejected_before_reading() {
        let mut codec = SyncCodec::default();
        let declared = u32::try_from(MAX_SYNC_FRAME + 1).unwrap();
        // Only the header is present: an allocation-first reader would still try to fill
        // 4 MiB; this one must refuse on the header alone.
        let mut wire = Cursor::new(declared.to_be_bytes().to_vec());
        let err = codec
            .read_request(&SYNC_PROTOCOL, &mut wire)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(wire.position(), 4, "nothing past the header was read");

        let mut wire = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        let err = codec
            .read_response(&SYNC_PROTOCOL, &mut wire)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_smaller_cap_is_enforced_both_ways() {
        let mut codec = SyncCodec::with_max_frame(16);
        assert_eq!(codec.max_frame(), 16);
        let mut wire = Cursor::new(Vec::new());
        let err = codec
            .write_request(&SYNC_PROTOCOL, &mut wire, vec![0; 17])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(
            wire.get_ref().is_empty(),
            "nothing written for a refused frame"
        );

        let mut wire = Cursor::new(frame(&[1; 16]));
        assert_eq!(
            codec.read_request(&SYNC_PROTOCOL, &mut wire).await.unwrap(),
            vec![1; 16]
        );
        let mut wire = Cursor::new(frame(&[1; 17]));
        let err = codec
            .read_request(&SYNC_PROTOCOL, &mut wire)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);

        assert_eq!(
            SyncCodec::with_max_frame(usize::MAX).max_frame(),
            MAX_SYNC_FRAME
        );
    }

    #[tokio::test]
    async fn every_truncation_is_an_error() {
        let mut codec = SyncCodec::default();
        let whole = frame(b"frontier: author 1 up to seq 42");
        for cut in 0..whole.len() {
            let mut wire = Cursor::new(whole[..cut].to_vec());
            let err = codec
                .read_request(&SYNC_PROTOCOL, &mut wire)
                .await
                .unwrap_err();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::UnexpectedEof,
                "cut at {cut}"
            );
        }
    }
}
