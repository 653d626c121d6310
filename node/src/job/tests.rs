//! Unit tests of the worker's queues: a full gossip queue never holds up or
//! drops a sync answer (review finding L1).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use libp2p::PeerId;
use libp2p::gossipsub::MessageId;

use super::*;

fn gossip(n: u8) -> Job {
    Job::Ingest {
        items: vec![vec![n]],
        origin: Origin::Gossip {
            message_id: MessageId::new(&[n]),
            source: PeerId::random(),
        },
    }
}

#[test]
fn a_full_gossip_queue_neither_drops_nor_delays_a_sync_answer() {
    let (senders, mut queues) = job_queues_with(4, 4, 4);
    let mut filled = 0;
    while senders.try_send(gossip(filled)).is_ok() {
        filled += 1;
    }
    assert_eq!(
        filled, 4,
        "the gossip queue holds its capacity, then refuses"
    );
    let peer = PeerId::random();
    senders
        .try_send(Job::SyncAnswer {
            peer,
            response: vec![7],
        })
        .expect("a sync answer is queued while gossip is full");
    senders
        .try_send(Job::ServeSync {
            peer,
            request: vec![1],
            token: 9,
        })
        .expect("a sync request is queued while gossip is full");
    // The answer is taken first, before the gossip that came earlier.
    match queues.next_blocking() {
        Some(Job::SyncAnswer { peer: p, response }) => {
            assert_eq!((p, response), (peer, vec![7]));
        }
        other => panic!("expected the sync answer first, got {other:?}"),
    }
    // Then gossip and serving by turns: the request is not starved.
    let mut order = Vec::new();
    while let Some(job) = queues.try_next() {
        order.push(matches!(job, Job::ServeSync { .. }));
    }
    assert_eq!(order.len(), 5);
    assert!(
        order.iter().take(2).any(|serve| *serve),
        "serving waits at most one gossip job: {order:?}"
    );
}

#[test]
fn the_queues_end_when_every_sender_is_gone() {
    let (senders, mut queues) = job_queues_with(4, 4, 4);
    senders.try_send(gossip(1)).unwrap();
    drop(senders);
    assert!(matches!(queues.next_blocking(), Some(Job::Ingest { .. })));
    assert!(queues.next_blocking().is_none());
}
