//! Unit tests of bounded storage and retraction records on a real worker
//! and sled store: per-author quotas and the node's lifetime cap (H4),
//! tombstones after expiry and across sync, the purge of a revoked
//! organisation, a full disk, the organisation fixed at acceptance (M1)
//! and pending retractions capped per organisation (M4).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use breakwater_protocol::fixture::{Fixture, bulletin_draft, fixture_green_key};
use breakwater_protocol::{
    Body, Bulletin, Digest, Draft, Envelope, Kind, NodeKeys, Roster, Severity, SignedRoster,
    SyncRequest, SyncResponse, Tlp, seal, seal_to,
};
use libp2p::PeerId;
use rand::SeedableRng;
use tokio::sync::{broadcast, mpsc};

use super::super::{Worker, now_ms};
use super::StoragePolicy;
use crate::handle::{NodeEvent, PublishRequest};
use crate::job::{Origin, Outcome};
use crate::store::Store;

const DAY_MS: u64 = 24 * 3600 * 1000;

struct Harness {
    worker: Worker,
    outcomes: mpsc::Receiver<Outcome>,
    _events: broadcast::Receiver<NodeEvent>,
}

/// A worker for node `node` of org `org`, on a temporary store.
fn harness(f: &Fixture, org: usize, node: usize) -> Harness {
    harness_on(f, org, node, Store::temporary().unwrap())
}

/// A worker for node `node` of org `org` on `store`, as a node start makes
/// one.
fn harness_on(f: &Fixture, org: usize, node: usize, store: Store) -> Harness {
    let (events, events_rx) = broadcast::channel(8192);
    let (outcomes, outcomes_rx) = mpsc::channel(8192);
    let worker = Worker::new(
        store,
        f.keys(org, node).unwrap().clone(),
        f.roster.clone(),
        30 * DAY_MS,
        events,
        outcomes,
    );
    Harness {
        worker,
        outcomes: outcomes_rx,
        _events: events_rx,
    }
}

fn sync() -> Origin {
    Origin::Sync {
        peer: PeerId::random(),
    }
}

/// A feed of `n` CLEAR bulletins by `keys`, from seq `first`, each living
/// `lifetime_ms` from `created_at`.
fn feed(
    keys: &NodeKeys,
    roster: &Roster,
    first: u64,
    prev: Digest,
    n: u64,
    created_at: u64,
    lifetime_ms: u64,
) -> Vec<Envelope> {
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(first);
    let mut prev = prev;
    (first..first + n)
        .map(|seq| {
            let mut draft = bulletin_draft(seq, prev, Tlp::Clear, &format!("Bulletin {seq}"), 0);
            draft.created_at = created_at;
            draft.expires_at = created_at + lifetime_ms;
            let envelope = seal(keys, roster, draft, &[], &mut rng).unwrap();
            prev = envelope.id();
            envelope
        })
        .collect()
}

/// A CLEAR retraction of `target` by `keys` at `seq`.
fn retraction(
    keys: &NodeKeys,
    roster: &Roster,
    seq: u64,
    prev: Digest,
    target: Digest,
) -> Envelope {
    let now = now_ms();
    let draft = Draft {
        seq,
        prev,
        created_at: now,
        expires_at: now + DAY_MS,
        tlp: Tlp::Clear,
        kind: Kind::Retraction { target },
        body: Body::Retraction {
            reason: "withdrawn".into(),
        },
    };
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seq);
    seal_to(keys, roster, None, draft, &[], &mut rng).unwrap()
}

fn encode(envelopes: &[Envelope]) -> Vec<Vec<u8>> {
    envelopes.iter().map(Envelope::encode).collect()
}

/// Roster version 2 made from the fixture's by `change`, signed by the admin.
fn version_2(f: &Fixture, change: impl FnOnce(&mut Roster)) -> SignedRoster {
    let mut next = f.roster().next();
    change(&mut next);
    let next = next.with_green_key(&fixture_green_key(2)).unwrap();
    let mut signed = SignedRoster::unsigned(next);
    signed.sign(f.keys(0, 0).unwrap());
    signed
}

fn stored(h: &Harness, envelope: &Envelope) -> bool {
    h.worker.store.envelope(&envelope.id().0).unwrap().is_some()
}

fn request(title: &str) -> PublishRequest {
    PublishRequest {
        tlp: Tlp::Clear,
        to: Vec::new(),
        bulletin: Bulletin::new(title, Severity::Low),
        ttl_ms: None,
    }
}

// ------------------------------------------------------------------- H4

#[test]
fn h4_an_author_over_its_quota_is_ignored_and_others_still_get_in() {
    let f = Fixture::new(3, 1).unwrap();
    let mut h = harness(&f, 0, 0);
    h.worker.policy = StoragePolicy {
        envelopes_per_window: 10,
        ..StoragePolicy::default()
    };
    let now = now_ms();
    let flood = feed(
        f.keys(1, 0).unwrap(),
        f.roster(),
        1,
        Digest::ZERO,
        40,
        now,
        DAY_MS,
    );
    h.worker.ingest(encode(&flood[..25]), sync());
    h.worker.ingest(encode(&flood[25..]), sync());
    let flooder = f.keys(1, 0).unwrap().node_public();
    assert_eq!(h.worker.store.frontier_of(&flooder.0).unwrap(), 10);
    assert_eq!(
        h.worker.status().unwrap().envelopes,
        10,
        "bounded by the quota"
    );
    assert!(h.worker.backing_off(&flooder, now_ms()), "sync backs off");
    // A third organisation's bulletin still gets in.
    let other = feed(
        f.keys(2, 0).unwrap(),
        f.roster(),
        1,
        Digest::ZERO,
        1,
        now,
        DAY_MS,
    );
    h.worker.ingest(encode(&other), sync());
    assert!(stored(&h, &other[0]));

    // Bytes: an author's stored ciphertext is bounded too.
    let mut h = harness(&f, 0, 0);
    let size = flood[0].encode().len() as u64;
    h.worker.policy = StoragePolicy {
        bytes_per_author: size * 5 + size / 2,
        ..StoragePolicy::default()
    };
    h.worker.ingest(encode(&flood), sync());
    assert_eq!(h.worker.status().unwrap().envelopes, 5);
}

#[test]
fn h4_own_publications_over_quota_get_a_clear_error() {
    let f = Fixture::new(2, 1).unwrap();
    let mut h = harness(&f, 0, 0);
    h.worker.policy = StoragePolicy {
        envelopes_per_window: 2,
        ..StoragePolicy::default()
    };
    h.worker.publish(request("one")).unwrap();
    h.worker.publish(request("two")).unwrap();
    let error = h.worker.publish(request("three")).unwrap_err().to_string();
    assert!(
        error.contains("publish refused") && error.contains("quota of 2 envelopes"),
        "{error}"
    );
    assert!(!error.contains('\n'));
    assert_eq!(h.worker.status().unwrap().envelopes, 2);
}

#[test]
fn h4_a_lifetime_beyond_the_nodes_cap_keeps_only_a_tombstone() {
    let f = Fixture::new(2, 1).unwrap();
    let mut h = harness(&f, 0, 0);
    h.worker.policy = StoragePolicy {
        max_lifetime_ms: DAY_MS,
        ..StoragePolicy::default()
    };
    let now = now_ms();
    let author = f.keys(1, 0).unwrap();
    let long = feed(author, f.roster(), 1, Digest::ZERO, 1, now, 30 * DAY_MS);
    let short = feed(author, f.roster(), 2, long[0].id(), 1, now, DAY_MS / 2);
    h.worker
        .ingest(encode(&[long[0].clone(), short[0].clone()]), sync());
    assert!(!stored(&h, &long[0]), "ciphertext not kept");
    assert!(stored(&h, &short[0]));
    assert_eq!(
        h.worker.store.frontier_of(&author.node_public().0).unwrap(),
        2
    );
    assert_eq!(h.worker.status().unwrap().tombstones, 1);
    // Own publications beyond the cap are refused.
    let mut too_long = request("too long");
    too_long.ttl_ms = Some(2 * DAY_MS);
    let error = h.worker.publish(too_long).unwrap_err().to_string();
    assert!(error.contains("longer than this node stores"), "{error}");
}

#[test]
fn h4_expired_ciphertext_becomes_a_tombstone_and_sync_serves_across_it() {
    let f = Fixture::new(2, 1).unwrap();
    let mut h = harness(&f, 0, 0);
    h.worker.policy = StoragePolicy {
        expired_grace_ms: 0,
        ..StoragePolicy::default()
    };
    let now = now_ms();
    let author = f.keys(1, 0).unwrap();
    let first = feed(author, f.roster(), 1, Digest::ZERO, 1, now, DAY_MS);
    let short = feed(author, f.roster(), 2, first[0].id(), 1, now, 300);
    let last = feed(author, f.roster(), 3, short[0].id(), 1, now, DAY_MS);
    let all = [first[0].clone(), short[0].clone(), last[0].clone()];
    h.worker.ingest(encode(&all), sync());
    assert_eq!(h.worker.status().unwrap().envelopes, 3);
    let started = Instant::now();
    while stored(&h, &short[0]) {
        assert!(started.elapsed() < Duration::from_secs(10), "never pruned");
        std::thread::sleep(Duration::from_millis(50));
        h.worker.prune().unwrap();
    }
    let status = h.worker.status().unwrap();
    assert_eq!(status.tombstones, 1);
    assert_eq!(status.envelopes, 3, "the feed position stays");
    let key = author.node_public();
    assert_eq!(h.worker.store.frontier_of(&key.0).unwrap(), 3, "no regress");
    assert_eq!(
        h.worker.store.id_at(&key.0, 2).unwrap(),
        Some(short[0].id().0)
    );
    // The same envelope again is a duplicate, not news.
    h.worker.ingest(encode(&short), sync());
    assert!(!stored(&h, &short[0]));
    // Sync serves the envelopes around the tombstone and nothing for it.
    let ask = SyncRequest::Ranges(vec![breakwater_protocol::SeqRange {
        author: key,
        from: 1,
        to: 3,
    }]);
    let SyncResponse::Envelopes { items, more } = h.worker.serve_sync(&ask.encode()) else {
        panic!("envelopes expected");
    };
    assert!(!more);
    assert_eq!(items, encode(&[first[0].clone(), last[0].clone()]));
    // A node that missed them stores both; the tombstoned seq stays a hole
    // it cannot fill (see PROTOCOL.md, "Tombstones").
    let mut other = harness(&f, 0, 0);
    other.worker.ingest(items, sync());
    assert!(stored(&other, &first[0]) && stored(&other, &last[0]));
    assert_eq!(other.worker.store.frontier_of(&key.0).unwrap(), 1);
}

#[test]
fn scale_an_envelope_stored_without_its_expiry_gets_it_from_its_header_at_start_and_is_pruned() {
    let f = Fixture::new(2, 1).unwrap();
    let now = now_ms();
    let author = f.keys(1, 0).unwrap();
    let short = feed(author, f.roster(), 1, Digest::ZERO, 1, now, 300);
    let long = feed(author, f.roster(), 2, short[0].id(), 1, now, DAY_MS);
    // Stored as a store written before expiries were recorded holds them.
    let store = Store::temporary().unwrap();
    for envelope in short.iter().chain(&long) {
        let header = &envelope.header;
        store
            .insert_envelope(
                &envelope.id().0,
                &header.author.0,
                header.seq,
                &envelope.encode(),
            )
            .unwrap();
    }
    assert_eq!(store.expiry_unrecorded().unwrap().len(), 2);
    let mut h = harness_on(&f, 0, 0, store);
    let worker = &mut h.worker;
    assert!(worker.store.expiry_unrecorded().unwrap().is_empty());
    worker.policy = StoragePolicy {
        expired_grace_ms: 0,
        ..StoragePolicy::default()
    };
    let started = Instant::now();
    while worker.store.envelope(&short[0].id().0).unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(10), "never pruned");
        std::thread::sleep(Duration::from_millis(50));
        worker.prune().unwrap();
    }
    assert!(worker.store.envelope(&long[0].id().0).unwrap().is_some());
    assert_eq!(worker.status().unwrap().tombstones, 1);
}

#[test]
fn h4_a_revoked_organisation_is_purged_after_the_policy_delay() {
    let f = Fixture::new(3, 1).unwrap();
    let mut h = harness(&f, 0, 0);
    let now = now_ms();
    let revoked = f.keys(1, 0).unwrap();
    let theirs = feed(revoked, f.roster(), 1, Digest::ZERO, 3, now, DAY_MS);
    let kept = feed(
        f.keys(2, 0).unwrap(),
        f.roster(),
        1,
        Digest::ZERO,
        1,
        now,
        DAY_MS,
    );
    h.worker.ingest(encode(&theirs), sync());
    h.worker.ingest(encode(&kept), sync());
    let org = f.orgs[1].org_id.clone();
    let v2 = version_2(&f, |r| {
        let revoked = r.with_revoked(&org).unwrap();
        r.members = revoked.members;
    });
    h.worker.join(v2).unwrap();
    // The default policy waits 30 days.
    h.worker.prune().unwrap();
    assert!(theirs.iter().all(|e| stored(&h, e)));
    h.worker.policy = StoragePolicy {
        revoked_purge_after_ms: 0,
        ..StoragePolicy::default()
    };
    h.worker.prune().unwrap();
    assert!(theirs.iter().all(|e| !stored(&h, e)), "purged");
    assert!(stored(&h, &kept[0]), "other organisations stay");
    let status = h.worker.status().unwrap();
    assert_eq!((status.envelopes, status.tombstones), (4, 3));
    assert_eq!(
        h.worker
            .store
            .frontier_of(&revoked.node_public().0)
            .unwrap(),
        3
    );
}

#[test]
fn h4_a_full_disk_fails_publish_with_one_line_and_reads_keep_working() {
    let f = Fixture::new(2, 1).unwrap();
    let mut h = harness(&f, 0, 0);
    h.worker.publish(request("before")).unwrap();
    h.worker.store.fail_writes(true);
    let error = h
        .worker
        .publish(request("disk full"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("No space left on device"), "{error}");
    assert!(!error.contains('\n'), "{error}");
    // Ingest fails, once logged; reads keep working.
    let now = now_ms();
    let theirs = feed(
        f.keys(1, 0).unwrap(),
        f.roster(),
        1,
        Digest::ZERO,
        20,
        now,
        DAY_MS,
    );
    h.worker.ingest(encode(&theirs[..10]), sync());
    h.worker.ingest(encode(&theirs[10..]), sync());
    assert_eq!(
        h.worker.write_failure_warnings, 1,
        "logged once, not per batch"
    );
    let status = h.worker.status().unwrap();
    assert_eq!(status.envelopes, 1);
    assert!(
        status
            .store_write_error
            .as_deref()
            .is_some_and(|e| e.contains("No space left on device")),
        "{status:?}"
    );
    assert_eq!(h.worker.list(&Default::default()).unwrap().len(), 1);
    // Space freed: writes work again and the episode ends.
    h.worker.store.fail_writes(false);
    h.worker.ingest(encode(&theirs), sync());
    let status = h.worker.status().unwrap();
    assert_eq!(status.envelopes, 21);
    assert_eq!(status.store_write_error, None);
    h.worker.publish(request("after")).unwrap();
}

// ------------------------------------------------------------------- M1

/// The envelope the worker handed to gossip last.
fn published(h: &mut Harness) -> Envelope {
    let mut last = None;
    while let Ok(outcome) = h.outcomes.try_recv() {
        if let Outcome::PublishEnvelope(bytes) = outcome {
            last = Some(Envelope::decode(&bytes).unwrap());
        }
    }
    last.expect("a published envelope")
}

#[test]
fn m1_a_node_key_removed_from_its_card_stays_its_organisations() {
    // Org 1 runs nodes A (1, 0) and B (1, 1); org 0 observes.
    let f = Fixture::new(2, 2).unwrap();
    let mut observer = harness(&f, 0, 0);
    let mut a = harness(&f, 1, 0);
    let mut b = harness(&f, 1, 1);
    let t = a.worker.publish(request("T")).unwrap();
    let t_envelope = published(&mut a);
    a.worker.retract(t.id, "false positive".into()).unwrap();
    let r_envelope = published(&mut a);
    a.worker.publish(request("T2")).unwrap();
    let t2_envelope = published(&mut a);
    let items = encode(&[t_envelope, r_envelope, t2_envelope.clone()]);
    observer.worker.ingest(items.clone(), sync());
    b.worker.ingest(items, sync());
    assert!(
        observer
            .worker
            .get(&t.id.to_hex())
            .unwrap()
            .summary
            .retracted
    );

    // Key rotation: A leaves org 1's card.
    let a_key = f.keys(1, 0).unwrap().node_public();
    let org = f.orgs[1].org_id.clone();
    let v2 = version_2(&f, |r| {
        let member = r.members.iter_mut().find(|m| m.card.org_id == org).unwrap();
        member.card.nodes.retain(|n| n.node_key != a_key);
    });
    observer.worker.join(v2.clone()).unwrap();
    b.worker.join(v2).unwrap();

    let t_detail = observer.worker.get(&t.id.to_hex()).unwrap();
    assert!(t_detail.summary.retracted, "T stays retracted");
    assert_eq!(t_detail.summary.author_org, org.to_string());
    // B retracts A's T2, and a peer applies it.
    b.worker
        .retract(t2_envelope.id(), "published by a compromised key".into())
        .unwrap();
    let r2 = published(&mut b);
    observer
        .worker
        .ingest(encode(std::slice::from_ref(&r2)), sync());
    let t2_detail = observer.worker.get(&t2_envelope.id().to_hex()).unwrap();
    assert!(t2_detail.summary.retracted, "T2 retracted by B");
    assert_eq!(t2_detail.retracted_by, Some(r2.id()));
}

// ------------------------------------------------------------------- M4

#[test]
fn m4_foreign_pending_retractions_cannot_crowd_out_the_owners() {
    let f = Fixture::new(3, 1).unwrap();
    let mut h = harness(&f, 0, 0);
    let now = now_ms();
    let owner = f.keys(1, 0).unwrap();
    let target = feed(owner, f.roster(), 1, Digest::ZERO, 1, now, DAY_MS).remove(0);
    // 70 retractions of T by another organisation, before T.
    let hostile = f.keys(2, 0).unwrap();
    let mut foreign = Vec::new();
    let mut prev = Digest::ZERO;
    for seq in 1..=70 {
        let r = retraction(hostile, f.roster(), seq, prev, target.id());
        prev = r.id();
        foreign.push(r);
    }
    h.worker.ingest(encode(&foreign), sync());
    // Then the owner's genuine one, then T.
    let genuine = retraction(owner, f.roster(), 2, target.id(), target.id());
    h.worker
        .ingest(encode(std::slice::from_ref(&genuine)), sync());
    let pending = h.worker.store.pending_retractions(&target.id().0).unwrap();
    assert!(pending.contains(&genuine.id().0), "the owner's is kept");
    assert!(
        pending.len() <= 16,
        "bounded per organisation: {}",
        pending.len()
    );
    h.worker
        .ingest(encode(std::slice::from_ref(&target)), sync());
    assert_eq!(
        h.worker.store.retracted_by(&target.id().0).unwrap(),
        Some(genuine.id().0)
    );
    assert!(
        h.worker
            .get(&target.id().to_hex())
            .unwrap()
            .summary
            .retracted
    );
}
