//! Unit tests of ingest: one store write per chunk, batch verification with
//! its fallback, briefs and records, pending epoch entries, duplicates first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use breakwater_protocol::fixture::{Fixture, bulletin_draft, fixture_green_key};
use breakwater_protocol::{Digest, Envelope, Indicator, Roster, Seal, Tlp, seal};
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use rand::SeedableRng;
use tokio::sync::{broadcast, mpsc};

use super::super::{Opened, Worker, now_ms};
use super::*;
use crate::handle::NodeEvent;
use crate::job::{Job, Outcome};

const DAY_MS: u64 = 24 * 3600 * 1000;

struct Harness {
    worker: Worker,
    outcomes: mpsc::Receiver<Outcome>,
    events: broadcast::Receiver<NodeEvent>,
}

/// A worker for node 0 of org `org`, on a temporary store.
fn harness(f: &Fixture, org: usize) -> Harness {
    harness_on(f, org, Store::temporary().unwrap())
}

/// A worker for node 0 of org `org` on `store`, as a node start makes one.
fn harness_on(f: &Fixture, org: usize, store: Store) -> Harness {
    let (events, events_rx) = broadcast::channel(8192);
    let (outcomes, outcomes_rx) = mpsc::channel(8192);
    let worker = Worker::new(
        store,
        f.keys(org, 0).unwrap().clone(),
        f.roster.clone(),
        30 * DAY_MS,
        events,
        outcomes,
    );
    Harness {
        worker,
        outcomes: outcomes_rx,
        events: events_rx,
    }
}

/// A feed of `n` bulletins of `tlp` by node 0 of org 1, sealed under
/// `roster` (GREEN under its epoch key), each with one indicator.
fn feed(f: &Fixture, roster: &Roster, tlp: Tlp, n: u64) -> Vec<Envelope> {
    let keys = f.keys(1, 0).unwrap();
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(9);
    let mut prev = Digest::ZERO;
    let to = [f.orgs[0].org_id.clone(), f.orgs[1].org_id.clone()];
    (1..=n)
        .map(|seq| {
            let mut draft = bulletin_draft(seq, prev, tlp, &format!("Bulletin {seq}"), now_ms());
            if let Body::Bulletin(bulletin) = &mut draft.body {
                bulletin.summary = "a long summary that is not kept ".repeat(20);
                bulletin.indicators =
                    vec![Indicator::parse(&format!("ipv4:192.0.2.{}", seq % 250)).unwrap()];
            }
            let to: &[_] = if tlp == Tlp::Amber { &to } else { &[] };
            let envelope = seal(keys, roster, draft, to, &mut rng).unwrap();
            prev = envelope.id();
            envelope
        })
        .collect()
}

fn sync() -> Origin {
    Origin::Sync {
        peer: PeerId::random(),
    }
}

#[test]
fn a_sync_batch_is_one_store_write_per_chunk_and_a_forged_item_is_named() {
    let f = Fixture::new(3, 1).unwrap();
    let mut h = harness(&f, 0);
    let envelopes = feed(&f, f.roster(), Tlp::Green, 600);
    let mut items: Vec<Vec<u8>> = envelopes.iter().map(Envelope::encode).collect();
    // A well-formed signature by the wrong key, in the middle.
    let real = &envelopes[300];
    let forged = Envelope::sign(
        real.header.clone(),
        real.payload.clone(),
        f.keys(2, 0).unwrap(),
    );
    items[300] = forged.encode();

    let store = h.worker.store.clone();
    let before = store.batches_applied();
    h.worker.ingest(items, sync());
    let threads = super::cores();
    let expected = if threads < 2 {
        1
    } else {
        600usize.div_ceil(PIPELINE_CHUNK.min(600usize.div_ceil(threads)))
    };
    assert_eq!(store.batches_applied() - before, expected as u64);

    assert_eq!(store.counts().envelopes, 599);
    assert!(!store.contains(&forged.id().0).unwrap());
    assert!(!store.contains(&real.id().0).unwrap());
    // Every stored GREEN envelope is readable and indexed.
    assert_eq!(store.counts().plaintext, 599);
    let stored = (0..h.events.len())
        .filter(|_| matches!(h.events.try_recv(), Ok(NodeEvent::Stored(s)) if s.readable))
        .count();
    assert_eq!(stored, 599);
}

#[test]
fn epoch_sealed_bodies_are_not_stored_but_show_reopens_them() {
    let f = Fixture::new(3, 1).unwrap();
    let mut h = harness(&f, 0);
    let green = feed(&f, f.roster(), Tlp::Green, 2);
    let amber = &feed(&f, f.roster(), Tlp::Amber, 1)[0];
    // (The AMBER one is seq 1 of the same feed: it goes to another node.)
    let items: Vec<Vec<u8>> = green.iter().map(Envelope::encode).collect();
    h.worker.ingest(items, sync());
    let id = green[0].id();
    let raw = h.worker.store.plaintext(&id.0).unwrap().unwrap();
    assert_eq!(raw[0], 0x01, "postcard record");
    assert!(matches!(Opened::decode(&raw), Some(Opened::Brief(_))));
    assert!(
        !raw.windows(12).any(|w| w == b"long summary"),
        "the body is not kept"
    );
    let detail = h.worker.get(&id.to_hex()).unwrap();
    let Some(Body::Bulletin(bulletin)) = detail.body else {
        panic!("show reopens the body: {:?}", detail.body)
    };
    assert!(bulletin.summary.starts_with("a long summary"));
    assert_eq!(detail.summary.title.as_deref(), Some("Bulletin 1"));
    // list and search work from the brief alone.
    let listed = h.worker.list(&Default::default()).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|s| s.readable && s.indicators.is_some()));
    let indicator = Indicator::parse("ipv4:192.0.2.1").unwrap();
    assert_eq!(h.worker.search(&indicator).unwrap().len(), 1);
    assert_eq!(h.worker.status().unwrap().readable, 2);

    // Sealed to nodes: the whole record is kept.
    let mut other = harness(&f, 0);
    other.worker.ingest(vec![amber.encode()], sync());
    let raw = other
        .worker
        .store
        .plaintext(&amber.id().0)
        .unwrap()
        .unwrap();
    let Some(Opened::Full(record)) = Opened::decode(&raw) else {
        panic!("a node-sealed record is kept whole")
    };
    assert!(matches!(record.body, Body::Bulletin(_)));
    let detail = other.worker.get(&amber.id().to_hex()).unwrap();
    assert!(detail.body.is_some());
}

#[test]
fn postcard_records_round_trip_and_legacy_json_records_still_read() {
    let f = Fixture::new(3, 1).unwrap();
    let h = harness(&f, 0);
    let amber = &feed(&f, f.roster(), Tlp::Amber, 1)[0];
    let body = h.worker.open(amber).unwrap();
    let opened = Opened::of(&amber.header, &body);
    let encoded = opened.encode();
    let Some(Opened::Full(back)) = Opened::decode(&encoded) else {
        panic!("round trip")
    };
    assert_eq!(back.body, body);
    let green = &feed(&f, f.roster(), Tlp::Green, 1)[0];
    let body = h.worker.open(green).unwrap();
    let brief = Opened::of(&green.header, &body);
    let Some(Opened::Brief(back)) = Opened::decode(&brief.encode()) else {
        panic!("round trip")
    };
    assert_eq!(Some(back), Some(brief.brief()));

    // A record as earlier versions wrote it: JSON.
    let store = &h.worker.store;
    let id = amber.id();
    store
        .insert_envelope(&id.0, &amber.header.author.0, 1, &amber.encode())
        .unwrap();
    let legacy = serde_json::json!({
        "tlp": amber.header.tlp,
        "created_at": amber.header.created_at,
        "expires_at": amber.header.expires_at,
        "body": body_of(&h, amber),
    });
    store
        .put_plaintext(&id.0, legacy.to_string().as_bytes())
        .unwrap();
    let detail = h.worker.get(&id.to_hex()).unwrap();
    assert_eq!(detail.body, Some(body_of(&h, amber)));
    assert!(detail.summary.readable);
    assert_eq!(detail.summary.title.as_deref(), Some("Bulletin 1"));
}

fn body_of(h: &Harness, envelope: &Envelope) -> Body {
    h.worker.open(envelope).unwrap()
}

#[test]
fn a_pending_epoch_entry_is_written_with_its_envelope() {
    let f = Fixture::new(3, 1).unwrap();
    let mut h = harness(&f, 0);
    // Roster version 2 (org 2 revoked, a new GREEN key), which this node
    // has not applied: GREEN sealed under it cannot open yet.
    let v2 = f
        .roster()
        .with_revoked(&f.orgs[2].org_id)
        .unwrap()
        .with_green_key(&fixture_green_key(2))
        .unwrap();
    let envelope = &feed(&f, &v2, Tlp::Green, 1)[0];
    assert!(matches!(envelope.header.seal, Seal::Epoch { epoch: 2, .. }));
    let store = h.worker.store.clone();
    let before = store.batches_applied();
    h.worker.ingest(vec![envelope.encode()], sync());
    assert_eq!(store.batches_applied() - before, 1);
    assert_eq!(store.pending_up_to(2).unwrap(), vec![(2, envelope.id().0)]);
    assert!(store.contains(&envelope.id().0).unwrap());
    assert_eq!(store.counts().plaintext, 0);
}

#[test]
fn a_stored_duplicate_is_recognised_before_any_signature_check() {
    let f = Fixture::new(3, 1).unwrap();
    let mut h = harness(&f, 0);
    let real = &feed(&f, f.roster(), Tlp::Green, 1)[0];
    // Its signature is wrong: checking it again would reject it. Put it
    // in the store directly, as if it had been stored long ago.
    let forged = Envelope::sign(
        real.header.clone(),
        real.payload.clone(),
        f.keys(2, 0).unwrap(),
    );
    let bytes = forged.encode();
    let id = forged.id();
    let store = h.worker.store.clone();
    store
        .insert_envelope(&id.0, &forged.header.author.0, 1, &bytes)
        .unwrap();

    // Sync and gossip chunks alike: recognised by id, never prechecked.
    let (roster, keys) = (&h.worker.roster.roster, &h.worker.keys);
    let consortium = h.worker.consortium;
    let checked = precheck_chunk(
        &[bytes.clone(), real.encode()],
        &store,
        roster,
        consortium,
        keys,
        &h.worker.epoch_keys,
        &h.worker.fork_keys,
    );
    assert!(matches!(checked[0], Checked::Stored));
    // The same forgery not yet stored is rejected by its signature.
    let fresh = Store::temporary().unwrap();
    let checked = precheck_chunk(
        std::slice::from_ref(&bytes),
        &fresh,
        roster,
        consortium,
        keys,
        &h.worker.epoch_keys,
        &h.worker.fork_keys,
    );
    assert!(matches!(
        checked[0],
        Checked::Rejected(Rejection::BadSignature(_))
    ));

    // By gossip: ignored (a duplicate), not rejected (a bad signature).
    let before = store.batches_applied();
    h.worker.ingest(
        vec![bytes],
        Origin::Gossip {
            message_id: MessageId::new(b"dup"),
            source: PeerId::random(),
        },
    );
    match h.outcomes.try_recv() {
        Ok(Outcome::Verdict { acceptance, .. }) => {
            assert_eq!(acceptance, MessageAcceptance::Ignore)
        }
        other => panic!("expected a verdict, got {other:?}"),
    }
    assert_eq!(store.batches_applied(), before, "nothing to write");
}

/// Every outcome the worker has sent so far.
fn drain(h: &mut Harness) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    while let Ok(outcome) = h.outcomes.try_recv() {
        outcomes.push(outcome);
    }
    outcomes
}

fn verdict(outcomes: &[Outcome]) -> MessageAcceptance {
    let verdicts: Vec<MessageAcceptance> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Verdict { acceptance, .. } => Some(*acceptance),
            _ => None,
        })
        .collect();
    assert_eq!(verdicts.len(), 1, "{outcomes:?}");
    verdicts[0]
}

fn held_against(outcomes: &[Outcome]) -> Vec<(PeerId, Misbehaviour)> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Misbehaved { peer, what } => Some((*peer, *what)),
            _ => None,
        })
        .collect()
}

/// M2 (security review 2026-11): gossip reports `Reject` (which scores the
/// relay down) only for failures every node decides alike; an equivocation
/// is forwarded when it makes the evidence new (and ignored after that), a
/// future timestamp is ignored, the equivocating author (not the relay) is
/// penalised, and the evidence is recorded.
#[test]
fn m2_only_failures_decided_alike_are_rejected_on_gossip() {
    let f = Fixture::new(3, 1).unwrap();
    let mut h = harness(&f, 0);
    let roster = &f.roster.roster;
    let author = f.keys(1, 0).unwrap();
    let author_peer = author.peer_id();
    let relay = PeerId::random();
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(5);
    let now = now_ms();
    let mut sealed = |seq, prev, title: &str, at| {
        seal(
            author,
            roster,
            bulletin_draft(seq, prev, Tlp::Clear, title, at),
            &[],
            &mut rng,
        )
        .unwrap()
    };
    let first = sealed(1, Digest::ZERO, "first", now);
    let twin = sealed(1, Digest::ZERO, "twin", now);
    // From another author: after the twin above, author 1's feed is held
    // at its fork (H1), so its later envelopes are not judged at all.
    let other = f.keys(2, 0).unwrap();
    let other_peer = other.peer_id();
    let future = seal(
        other,
        roster,
        bulletin_draft(1, Digest::ZERO, Tlp::Clear, "future", now + 10 * 60 * 1000),
        &[],
        &mut rand::rngs::ChaCha8Rng::seed_from_u64(6),
    )
    .unwrap();
    let mut forged = sealed(2, first.id(), "forged", now);
    forged.signature.0[0] ^= 1;
    let gossip = |source: PeerId, n: u8| Origin::Gossip {
        message_id: MessageId::new(&[n]),
        source,
    };

    h.worker.ingest(vec![first.encode()], gossip(relay, 1));
    assert_eq!(verdict(&drain(&mut h)), MessageAcceptance::Accept);

    // The twin makes the evidence new here: it is forwarded (Accept), so the
    // evidence spreads past this hop; the relay is not scored down either way.
    h.worker.ingest(vec![twin.encode()], gossip(relay, 2));
    let outcomes = drain(&mut h);
    assert_eq!(verdict(&outcomes), MessageAcceptance::Accept);
    assert_eq!(
        held_against(&outcomes),
        vec![(author_peer, Misbehaviour::Equivocation)],
        "the author, not the relay"
    );
    assert_eq!(h.worker.store.evidence().unwrap().len(), 1);
    // The same evidence again is neither forwarded nor held against the
    // author twice.
    h.worker.ingest(vec![twin.encode()], gossip(relay, 3));
    let outcomes = drain(&mut h);
    assert_eq!(verdict(&outcomes), MessageAcceptance::Ignore);
    assert!(held_against(&outcomes).is_empty());

    // A future timestamp by this node's clock: ignored; held against the
    // sender only when it is the author itself.
    h.worker.ingest(vec![future.encode()], gossip(relay, 4));
    let outcomes = drain(&mut h);
    assert_eq!(verdict(&outcomes), MessageAcceptance::Ignore);
    assert!(held_against(&outcomes).is_empty());
    h.worker
        .ingest(vec![future.encode()], gossip(other_peer, 5));
    let outcomes = drain(&mut h);
    assert_eq!(verdict(&outcomes), MessageAcceptance::Ignore);
    assert_eq!(
        held_against(&outcomes),
        vec![(other_peer, Misbehaviour::Ignored)]
    );

    // A bad signature is decided alike everywhere: rejected.
    h.worker.ingest(vec![forged.encode()], gossip(relay, 6));
    assert_eq!(verdict(&drain(&mut h)), MessageAcceptance::Reject);
}

#[test]
fn the_added_index_is_kept_only_with_taxii_and_back_filled_when_taxii_comes_back() {
    let f = Fixture::new(3, 1).unwrap();
    let envelopes = feed(&f, f.roster(), Tlp::Green, 30);
    let items: Vec<Vec<u8>> = envelopes.iter().map(Envelope::encode).collect();
    let dir = tempfile::TempDir::new().unwrap();
    let open = |taxii: bool| {
        let store = Store::open(dir.path()).unwrap();
        store.set_index_added(taxii);
        store
    };
    // With TAXII: indexed on arrival.
    let mut worker = harness_on(&f, 0, open(true)).worker;
    worker.ingest(items[..10].to_vec(), sync());
    let first = worker.store.added_from(0, usize::MAX).unwrap();
    assert_eq!(first.len(), 10);
    drop(worker);
    // Without TAXII: no `added` entry is written.
    let mut worker = harness_on(&f, 0, open(false)).worker;
    worker.ingest(items[10..20].to_vec(), sync());
    assert_eq!(worker.store.counts().plaintext, 20);
    assert_eq!(worker.store.added_from(0, usize::MAX).unwrap(), first);
    drop(worker);
    // TAXII again: the ten that came meanwhile are back-filled after the
    // first ten, and new arrivals follow them.
    let mut worker = harness_on(&f, 0, open(true)).worker;
    let back_filled = worker.store.added_from(0, usize::MAX).unwrap();
    assert_eq!(back_filled.len(), 20);
    assert_eq!(back_filled[..10], first[..]);
    let newer: Vec<Digest> = envelopes[10..20].iter().map(Envelope::id).collect();
    let mut got: Vec<Digest> = back_filled[10..]
        .iter()
        .map(|(_, id)| Digest(*id))
        .collect();
    got.sort();
    let mut want = newer.clone();
    want.sort();
    assert_eq!(got, want);
    worker.ingest(items[20..].to_vec(), sync());
    let all = worker.store.added_from(0, usize::MAX).unwrap();
    assert_eq!(all.len(), 30);
    assert!(all.windows(2).all(|pair| pair[0].0 < pair[1].0));
}

#[test]
fn gossip_taken_together_is_one_store_write_with_a_verdict_per_message_and_relay() {
    let f = Fixture::new(3, 1).unwrap();
    let mut h = harness(&f, 0);
    let envelopes = feed(&f, f.roster(), Tlp::Green, 6);
    let (honest, liar) = (PeerId::random(), PeerId::random());
    let forged = Envelope::sign(
        envelopes[3].header.clone(),
        envelopes[3].payload.clone(),
        f.keys(2, 0).unwrap(),
    );
    // Seqs 1-3 by the honest relay, a forgery of seq 4 by the liar, a
    // repeat of seq 1 by the liar, then seq 5 (after a gap: 4 is missing).
    let sent = [
        (envelopes[0].encode(), honest),
        (envelopes[1].encode(), honest),
        (envelopes[2].encode(), honest),
        (forged.encode(), liar),
        (envelopes[0].encode(), liar),
        (envelopes[4].encode(), honest),
    ];
    let messages: Vec<(Vec<u8>, MessageId, PeerId)> = sent
        .iter()
        .enumerate()
        .map(|(i, (item, peer))| (item.clone(), MessageId::new(&[i as u8]), *peer))
        .collect();
    let store = h.worker.store.clone();
    let before = store.batches_applied();
    h.worker.ingest_gossip(messages);
    assert_eq!(store.batches_applied() - before, 1, "one write for all");
    assert_eq!(store.counts().envelopes, 4);
    assert!(!store.contains(&forged.id().0).unwrap());

    let outcomes = drain(&mut h);
    let verdicts: Vec<(Vec<u8>, PeerId, MessageAcceptance)> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Verdict {
                message_id,
                source,
                acceptance,
            } => Some((message_id.0.clone(), *source, *acceptance)),
            _ => None,
        })
        .collect();
    use MessageAcceptance::{Accept, Ignore, Reject};
    assert_eq!(
        verdicts,
        vec![
            (vec![0], honest, Accept),
            (vec![1], honest, Accept),
            (vec![2], honest, Accept),
            (vec![3], liar, Reject),
            (vec![4], liar, Ignore),
            (vec![5], honest, Accept),
        ]
    );
    // The repeat counts against the liar alone; the gap asks the honest
    // relay (who sent seq 5) for the rest.
    let held = held_against(&outcomes);
    assert!(held.contains(&(liar, Misbehaviour::Ignored)), "{held:?}");
    assert!(held.iter().all(|(peer, _)| *peer == liar), "{held:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Outcome::SyncRequest { peer, .. } if *peer == honest)),
        "{outcomes:?}"
    );
}

#[test]
fn the_worker_takes_gossip_that_queued_up_together_and_leaves_other_jobs_their_turn() {
    let f = Fixture::new(3, 1).unwrap();
    let h = harness(&f, 0);
    let store = h.worker.store.clone();
    let envelopes = feed(&f, f.roster(), Tlp::Green, 5);
    let (senders, queues) = crate::job::job_queues();
    let relay = PeerId::random();
    // Three gossip messages, a roster by gossip (not an envelope: it ends
    // the group and keeps its turn), two more messages, then stop.
    for (i, envelope) in envelopes[..3].iter().enumerate() {
        senders
            .try_send(Job::Ingest {
                items: vec![envelope.encode()],
                origin: Origin::Gossip {
                    message_id: MessageId::new(&[i as u8]),
                    source: relay,
                },
            })
            .unwrap();
    }
    senders
        .try_send(Job::GossipRoster {
            bytes: vec![1, 2, 3],
            message_id: MessageId::new(b"roster"),
            source: relay,
        })
        .unwrap();
    for (i, envelope) in envelopes[3..].iter().enumerate() {
        senders
            .try_send(Job::Ingest {
                items: vec![envelope.encode()],
                origin: Origin::Gossip {
                    message_id: MessageId::new(&[3 + i as u8]),
                    source: relay,
                },
            })
            .unwrap();
    }
    let before = store.batches_applied();
    let Harness {
        worker,
        mut outcomes,
        ..
    } = h;
    // With every sender gone, the worker stops once the queues are empty.
    drop(senders);
    worker.run(queues);
    assert_eq!(store.counts().envelopes, 5);
    // Two groups (three, then two), one write each.
    assert_eq!(store.batches_applied() - before, 2);
    let mut verdicts = Vec::new();
    while let Ok(outcome) = outcomes.try_recv() {
        if let Outcome::Verdict {
            message_id,
            acceptance,
            ..
        } = outcome
        {
            verdicts.push((message_id.0, acceptance));
        }
    }
    // Every message has its verdict, the undecodable roster its Reject,
    // in the order they came.
    let ids: Vec<Vec<u8>> = verdicts.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        ids,
        vec![
            vec![0],
            vec![1],
            vec![2],
            b"roster".to_vec(),
            vec![3],
            vec![4]
        ]
    );
    assert!(
        verdicts
            .iter()
            .filter(|(id, _)| id.len() == 1)
            .all(|(_, a)| *a == MessageAcceptance::Accept),
        "{verdicts:?}"
    );
}
