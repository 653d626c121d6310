//! Tests of the protocol crate's contract: pinned wire vectors, round-trips,
//! decode-never-panics, tampering, confidentiality, roster rules, time and
//! equivocation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod batch;
mod commitment;
mod fuzz_findings;
mod green;
mod hardening;
mod props;
mod vectors;

use std::collections::HashMap;

use breakwater_protocol::body::Bulletin;
use breakwater_protocol::fixture::{Fixture, bulletin_draft};
use breakwater_protocol::*;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

pub const NOW: u64 = 1_790_000_000_000;

/// An in-memory store view for validation.
#[derive(Debug, Default)]
pub struct MemState {
    pub feeds: HashMap<(NodePublicKey, u64), Digest>,
    pub envelopes: HashMap<Digest, Vec<u8>>,
    /// Organisations recorded at acceptance (M1).
    pub orgs: HashMap<Digest, OrgId>,
}

impl MemState {
    pub fn insert(&mut self, bytes: &[u8]) {
        let env = Envelope::decode(bytes).unwrap();
        let id = env.id();
        self.feeds.insert((env.header.author, env.header.seq), id);
        self.envelopes.insert(id, bytes.to_vec());
    }
}

impl AuthorState for MemState {
    fn id_at(&self, author: &NodePublicKey, seq: u64) -> Option<Digest> {
        self.feeds.get(&(*author, seq)).copied()
    }
    fn envelope(&self, id: &Digest) -> Option<Vec<u8>> {
        self.envelopes.get(id).cloned()
    }
    fn author_of(&self, id: &Digest) -> Option<NodePublicKey> {
        let bytes = self.envelopes.get(id)?;
        Some(Envelope::decode(bytes).ok()?.header.author)
    }
    fn org_of(&self, id: &Digest) -> Option<OrgId> {
        self.orgs.get(id).cloned()
    }
    fn frontier(&self, author: &NodePublicKey) -> u64 {
        let mut seq = 0;
        while self.feeds.contains_key(&(*author, seq + 1)) {
            seq += 1;
        }
        seq
    }
}

pub fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(7)
}

pub fn fixture() -> Fixture {
    Fixture::legacy(5, 2).unwrap()
}

fn org(f: &Fixture, i: usize) -> OrgId {
    f.orgs[i].org_id.clone()
}

fn sealed(f: &Fixture, author: usize, tlp: Tlp, to: &[OrgId], seq: u64, prev: Digest) -> Envelope {
    let keys = f.keys(author, 0).unwrap();
    seal(
        keys,
        f.roster(),
        bulletin_draft(seq, prev, tlp, "Ransomware at berth 4", NOW),
        to,
        &mut rng(),
    )
    .unwrap()
}

fn accept(verdict: Verdict) -> Accepted {
    match verdict {
        Verdict::Accept(a) => a,
        other => panic!("expected accept, got {other:?}"),
    }
}

fn reject(verdict: Verdict) -> Rejection {
    match verdict {
        Verdict::Reject(r) => r,
        other => panic!("expected reject, got {other:?}"),
    }
}

#[test]
fn green_opens_for_every_node_of_every_member() {
    let f = fixture();
    let env = sealed(&f, 1, Tlp::Green, &[], 1, Digest::ZERO);
    assert_eq!(env.header.seal.recipients().len(), 10);
    for o in &f.orgs {
        for k in &o.keys {
            let body = open(&env, k).unwrap();
            assert!(matches!(body, Body::Bulletin(b) if b.title == "Ransomware at berth 4"));
        }
    }
}

#[test]
fn amber_opens_for_named_orgs_and_author_only() {
    let f = fixture();
    let env = sealed(&f, 0, Tlp::Amber, &[org(&f, 2)], 1, Digest::ZERO);
    for (i, o) in f.orgs.iter().enumerate() {
        for k in &o.keys {
            let opened = open(&env, k);
            if i == 0 || i == 2 {
                opened.unwrap();
            } else {
                assert_eq!(
                    opened.unwrap_err(),
                    OpenError::NotARecipient,
                    "org {i} must not open"
                );
            }
        }
    }
    let outsider = NodeKeys::from_seed([9; 32]);
    assert_eq!(open(&env, &outsider).unwrap_err(), OpenError::NotARecipient);
}

#[test]
fn clear_is_signed_not_encrypted() {
    let f = fixture();
    let env = sealed(&f, 0, Tlp::Clear, &[], 1, Digest::ZERO);
    assert!(env.header.seal.recipients().is_empty());
    env.verify().unwrap();
    let outsider = NodeKeys::from_seed([9; 32]);
    assert!(matches!(open(&env, &outsider).unwrap(), Body::Bulletin(_)));
}

#[test]
fn named_recipients_need_an_amber_or_red_label_and_known_orgs() {
    let f = fixture();
    let keys = f.keys(0, 0).unwrap();
    let draft = bulletin_draft(1, Digest::ZERO, Tlp::Green, "t", NOW);
    let err = seal(keys, f.roster(), draft.clone(), &[org(&f, 1)], &mut rng()).unwrap_err();
    assert_eq!(err, SealError::RecipientsNotAllowed(Tlp::Green));
    let mut amber = draft;
    amber.tlp = Tlp::Red;
    let err = seal(
        keys,
        f.roster(),
        amber,
        &["nobody".parse().unwrap()],
        &mut rng(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "unknown org nobody");
}

#[test]
fn payload_moved_under_another_header_fails() {
    let f = fixture();
    let a = sealed(&f, 0, Tlp::Green, &[], 1, Digest::ZERO);
    let b = sealed(&f, 0, Tlp::Green, &[], 2, a.id());
    let reader = f.keys(3, 0).unwrap();
    let mut moved = b.clone();
    moved.payload = a.payload.clone();
    assert!(open(&moved, reader).is_err());
    // Re-signing does not help: the wrap and AAD bind the header hash.
    let resigned = Envelope::sign(
        moved.header.clone(),
        moved.payload.clone(),
        f.keys(0, 0).unwrap(),
    );
    assert!(open(&resigned, reader).is_err());
}

#[test]
fn wrap_moved_to_another_envelope_fails() {
    let f = fixture();
    let a = sealed(&f, 0, Tlp::Green, &[], 1, Digest::ZERO);
    let b = sealed(&f, 0, Tlp::Green, &[], 2, a.id());
    let mut moved = b.clone();
    moved.header.seal = a.header.seal.clone();
    let moved = Envelope::sign(moved.header, moved.payload, f.keys(0, 0).unwrap());
    assert_eq!(
        open(&moved, f.keys(3, 0).unwrap()).unwrap_err(),
        OpenError::NotARecipient
    );
}

#[test]
fn every_single_byte_flip_is_rejected() {
    let f = fixture();
    let env = sealed(&f, 0, Tlp::Amber, &[org(&f, 1)], 1, Digest::ZERO);
    let bytes = env.encode();
    let reader = f.keys(1, 0).unwrap();
    let state = MemState::default();
    for pos in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut tampered = bytes.clone();
            tampered[pos] ^= mask;
            let caught = match validate(&tampered, NOW, f.roster(), &state) {
                Verdict::Reject(_) => true,
                Verdict::Ignore(_) => false,
                Verdict::Accept(a) => open(&a.envelope, reader).is_err(),
            };
            assert!(
                caught,
                "flip {mask:#x} at byte {pos} of {} was not caught",
                bytes.len()
            );
        }
    }
}

#[test]
fn valid_envelope_is_accepted_and_a_duplicate_ignored() {
    let f = fixture();
    let bytes = sealed(&f, 2, Tlp::Green, &[], 1, Digest::ZERO).encode();
    let mut state = MemState::default();
    let accepted = accept(validate(&bytes, NOW, f.roster(), &state));
    assert_eq!(accepted.author_org, org(&f, 2));
    assert_eq!(accepted.gap, None);
    state.insert(&bytes);
    assert_eq!(
        validate(&bytes, NOW, f.roster(), &state),
        Verdict::Ignore(IgnoreReason::Duplicate)
    );
}

#[test]
fn wrong_consortium_non_member_and_revoked_are_rejected() {
    let f = fixture();
    let state = MemState::default();
    // Another consortium with the same members.
    let other = Roster::genesis(
        "Elsewhere",
        f.orgs.iter().map(|o| o.card.clone()).collect(),
        vec![org(&f, 0)],
        1,
    )
    .unwrap();
    let keys = f.keys(1, 0).unwrap();
    let foreign = seal(
        keys,
        &other,
        bulletin_draft(1, Digest::ZERO, Tlp::Clear, "t", NOW),
        &[],
        &mut rng(),
    )
    .unwrap();
    assert!(matches!(
        reject(validate(&foreign.encode(), NOW, f.roster(), &state)),
        Rejection::WrongConsortium { .. }
    ));
    // A non-member signs a well-formed envelope for this consortium.
    let stranger = NodeKeys::from_seed([77; 32]);
    let draft = bulletin_draft(1, Digest::ZERO, Tlp::Clear, "t", NOW);
    let env = seal_to(&stranger, f.roster(), None, draft, &[], &mut rng()).unwrap();
    assert_eq!(
        reject(validate(&env.encode(), NOW, f.roster(), &state)),
        Rejection::UnknownAuthor(stranger.node_public())
    );
    // Revoked member.
    let revoked = f.roster().with_revoked(&org(&f, 3)).unwrap();
    let env = sealed(&f, 3, Tlp::Clear, &[], 1, Digest::ZERO);
    assert!(matches!(
        reject(validate(&env.encode(), NOW, &revoked, &state)),
        Rejection::RevokedAuthor { .. }
    ));
    // And revocation removes the org from GREEN recipients.
    let keys = f.keys(0, 0).unwrap();
    let green = seal(
        keys,
        &revoked,
        bulletin_draft(1, Digest::ZERO, Tlp::Green, "t", NOW),
        &[],
        &mut rng(),
    )
    .unwrap();
    assert_eq!(green.header.seal.recipients().len(), 8);
    assert!(open(&green, f.keys(3, 0).unwrap()).is_err());
}

#[test]
fn forged_signature_is_rejected() {
    let f = fixture();
    let mut env = sealed(&f, 1, Tlp::Green, &[], 1, Digest::ZERO);
    // Claim another member's authorship.
    env.header.author = f.keys(2, 0).unwrap().node_public();
    let state = MemState::default();
    assert!(matches!(
        reject(validate(&env.encode(), NOW, f.roster(), &state)),
        Rejection::BadSignature(_)
    ));
}

#[test]
fn expired_is_ignored_and_future_is_rejected() {
    let f = fixture();
    let keys = f.keys(0, 0).unwrap();
    let state = MemState::default();
    let mut draft = bulletin_draft(1, Digest::ZERO, Tlp::Green, "t", NOW);
    draft.expires_at = NOW + 1000;
    let env = seal(keys, f.roster(), draft, &[], &mut rng()).unwrap();
    assert!(matches!(
        validate(&env.encode(), NOW + 1000, f.roster(), &state),
        Verdict::Ignore(IgnoreReason::Expired { seq: 1, .. })
    ));
    accept(validate(&env.encode(), NOW + 999, f.roster(), &state));
    let future = seal(
        keys,
        f.roster(),
        bulletin_draft(1, Digest::ZERO, Tlp::Green, "t", NOW + 5 * 60_000 + 1),
        &[],
        &mut rng(),
    )
    .unwrap();
    assert!(matches!(
        reject(validate(&future.encode(), NOW, f.roster(), &state)),
        Rejection::FromTheFuture { .. }
    ));
    let skewed = seal(
        keys,
        f.roster(),
        bulletin_draft(1, Digest::ZERO, Tlp::Green, "t", NOW + 5 * 60_000),
        &[],
        &mut rng(),
    )
    .unwrap();
    accept(validate(&skewed.encode(), NOW, f.roster(), &state));
}

#[test]
fn equivocation_is_rejected_with_both_envelopes_as_evidence() {
    let f = fixture();
    let first = sealed(&f, 1, Tlp::Clear, &[], 1, Digest::ZERO).encode();
    let keys = f.keys(1, 0).unwrap();
    let second = seal(
        keys,
        f.roster(),
        bulletin_draft(1, Digest::ZERO, Tlp::Clear, "different", NOW),
        &[],
        &mut rng(),
    )
    .unwrap()
    .encode();
    assert_ne!(first, second);
    let mut state = MemState::default();
    state.insert(&first);
    match reject(validate(&second, NOW, f.roster(), &state)) {
        Rejection::Equivocation(ev) => {
            assert_eq!(ev.seq, 1);
            assert_eq!(ev.author, keys.node_public());
            assert_eq!(ev.first, first);
            assert_eq!(ev.second, second);
        }
        other => panic!("expected equivocation, got {other:?}"),
    }
}

#[test]
fn seq_gap_is_accepted_and_reported_and_prev_is_checked() {
    let f = fixture();
    let a1 = sealed(&f, 0, Tlp::Clear, &[], 1, Digest::ZERO);
    let a2 = sealed(&f, 0, Tlp::Clear, &[], 2, a1.id());
    let a5 = sealed(&f, 0, Tlp::Clear, &[], 5, Digest([3; 32]));
    let mut state = MemState::default();
    state.insert(&a1.encode());
    let gap = accept(validate(&a5.encode(), NOW, f.roster(), &state))
        .gap
        .unwrap();
    assert_eq!((gap.from, gap.to), (2, 4));
    accept(validate(&a2.encode(), NOW, f.roster(), &state));
    let forked = sealed(&f, 0, Tlp::Clear, &[], 2, Digest([1; 32]));
    assert!(matches!(
        reject(validate(&forked.encode(), NOW, f.roster(), &state)),
        Rejection::PrevMismatch { .. }
    ));
}

#[test]
fn an_envelope_whose_stored_successor_names_another_prev_is_rejected() {
    // H1: the stored seq 3 is on another branch than the seq 2 offered now
    // (seq 2 was never stored: the feed had a gap).
    let f = fixture();
    let a1 = sealed(&f, 0, Tlp::Clear, &[], 1, Digest::ZERO);
    let a3 = sealed(&f, 0, Tlp::Clear, &[], 3, Digest([7; 32]));
    let mut state = MemState::default();
    state.insert(&a1.encode());
    state.insert(&a3.encode());
    let b2 = sealed(&f, 0, Tlp::Clear, &[], 2, a1.id());
    match reject(validate(&b2.encode(), NOW, f.roster(), &state)) {
        Rejection::NextMismatch {
            author,
            seq,
            id,
            next_prev,
        } => {
            assert_eq!(author, a1.header.author);
            assert_eq!(seq, 2);
            assert_eq!(id, b2.id());
            assert_eq!(next_prev, Digest([7; 32]));
        }
        other => panic!("expected a next mismatch, got {other:?}"),
    }
    // The seq 2 that seq 3 names links both ways and is accepted.
    let mut state = MemState::default();
    state.insert(&a1.encode());
    let a2 = sealed(&f, 0, Tlp::Clear, &[], 2, a1.id());
    let a3 = sealed(&f, 0, Tlp::Clear, &[], 3, a2.id());
    state.insert(&a3.encode());
    accept(validate(&a2.encode(), NOW, f.roster(), &state));
}

#[test]
fn retraction_by_another_org_is_rejected() {
    let f = fixture();
    let target = sealed(&f, 0, Tlp::Clear, &[], 1, Digest::ZERO);
    let mut state = MemState::default();
    state.insert(&target.encode());
    let retraction = |author: usize| {
        let (seq, prev) = if author == 0 {
            (2, target.id())
        } else {
            (1, Digest::ZERO)
        };
        let draft = Draft {
            seq,
            prev,
            created_at: NOW,
            expires_at: NOW + 1000,
            tlp: Tlp::Clear,
            kind: Kind::Retraction {
                target: target.id(),
            },
            body: Body::Retraction {
                reason: "false positive".into(),
            },
        };
        seal_to(
            f.keys(author, 0).unwrap(),
            f.roster(),
            None,
            draft,
            &[],
            &mut rng(),
        )
        .unwrap()
        .encode()
    };
    accept(validate(&retraction(0), NOW, f.roster(), &state));
    assert!(matches!(
        reject(validate(&retraction(1), NOW, f.roster(), &state)),
        Rejection::ForeignRetraction { .. }
    ));
}

#[test]
fn kind_and_body_must_match() {
    let f = fixture();
    let mut draft = bulletin_draft(1, Digest::ZERO, Tlp::Green, "t", NOW);
    draft.kind = Kind::Retraction {
        target: Digest([1; 32]),
    };
    assert!(matches!(
        seal(f.keys(0, 0).unwrap(), f.roster(), draft, &[], &mut rng()),
        Err(SealError::KindMismatch { .. })
    ));
}

#[test]
fn roster_update_rules() {
    // Three admins, threshold 2.
    let base = Fixture::legacy(5, 1).unwrap();
    let admins: Vec<OrgId> = (0..3).map(|i| org(&base, i)).collect();
    let genesis = base.roster().with_admins(admins, 2).unwrap();
    let mut signed_genesis = SignedRoster::unsigned(genesis.clone());
    signed_genesis.sign(base.keys(0, 0).unwrap());
    // version 2 is signed by the genesis authority (one admin, threshold 1).
    SignedRoster::verify_update(base.roster(), &signed_genesis).unwrap();
    let current = genesis;
    let next = current.with_revoked(&org(&base, 4)).unwrap();
    let sign = |signers: &[(usize, usize)]| {
        let mut s = SignedRoster::unsigned(next.clone());
        for &(o, n) in signers {
            s.sign(base.keys(o, n).unwrap());
        }
        s
    };
    // threshold − 1 signatures
    assert!(matches!(
        SignedRoster::verify_update(&current, &sign(&[(0, 0)])),
        Err(RosterError::NotEnoughSignatures {
            found: 1,
            threshold: 2
        })
    ));
    // signed by a non-admin
    assert!(matches!(
        SignedRoster::verify_update(&current, &sign(&[(0, 0), (3, 0)])),
        Err(RosterError::NotAnAdmin(_))
    ));
    // the same signature twice is refused outright (a repeated signer would
    // let anyone re-encode a valid roster into other bytes)
    let mut twice = sign(&[(0, 0)]);
    twice.signatures.push(twice.signatures[0].clone());
    assert!(matches!(
        SignedRoster::verify_update(&current, &twice),
        Err(RosterError::DuplicateSigner(_))
    ));
    // enough distinct admins
    SignedRoster::verify_update(&current, &sign(&[(0, 0), (2, 0)])).unwrap();
    // wrong version / prev
    let mut skipped = sign(&[(0, 0), (2, 0)]);
    skipped.roster.version += 1;
    assert!(matches!(
        SignedRoster::verify_update(&current, &skipped),
        Err(RosterError::BadVersion { .. })
    ));
    let mut bad_prev = next.clone();
    bad_prev.prev = Digest([5; 32]);
    let mut bad_prev = SignedRoster::unsigned(bad_prev);
    bad_prev.sign(base.keys(0, 0).unwrap());
    bad_prev.sign(base.keys(1, 0).unwrap());
    assert!(matches!(
        SignedRoster::verify_update(&current, &bad_prev),
        Err(RosterError::BadPrev { .. })
    ));
    // a forged signature
    let mut forged = sign(&[(0, 0), (2, 0)]);
    forged.signatures[1].signature = Signature([7; 64]);
    assert!(matches!(
        SignedRoster::verify_update(&current, &forged),
        Err(RosterError::BadSignature(_))
    ));
    // consortium id is stable across versions
    assert_eq!(next.consortium_id(), base.roster().consortium_id());
}

#[test]
fn roster_membership_operations() {
    let f = Fixture::legacy(3, 1).unwrap();
    let roster = f.roster();
    base_lookups(&f);
    let newcomer = breakwater_protocol::fixture::fixture_org(7, 2);
    let added = roster.with_member(newcomer.card.clone()).unwrap();
    assert_eq!(added.version, 2);
    assert_eq!(
        added.org_of(&newcomer.keys[1].node_public()),
        Some(&newcomer.org_id)
    );
    assert!(matches!(
        roster.with_member(f.orgs[1].card.clone()),
        Err(RosterError::AlreadyMember(_))
    ));
    let revoked = added.with_revoked(&newcomer.org_id).unwrap();
    assert_eq!(revoked.org_of(&newcomer.keys[0].node_public()), None);
    assert!(
        !revoked
            .allowed_peers()
            .contains(&newcomer.keys[0].peer_id())
    );
    assert!(matches!(
        revoked.with_revoked(&newcomer.org_id),
        Err(RosterError::Revoked(_))
    ));
    assert!(matches!(
        roster.with_admins(vec![], 1),
        Err(RosterError::Empty)
    ));
    assert!(matches!(
        roster.with_admins(vec![org(&f, 0)], 2),
        Err(RosterError::BadThreshold { .. })
    ));
    f.roster.verify_genesis().unwrap();
    let json = f.roster.to_json();
    assert_eq!(SignedRoster::from_json(&json).unwrap(), f.roster);
}

fn base_lookups(f: &Fixture) {
    let roster = f.roster();
    let k = f.keys(2, 0).unwrap();
    assert_eq!(roster.org_of(&k.node_public()), Some(&org(f, 2)));
    assert_eq!(
        roster.sealing_keys_of(&org(f, 2)).unwrap(),
        vec![k.sealing_public()]
    );
    assert_eq!(roster.allowed_peers().len(), 3);
    assert!(roster.allowed_peers().contains(&k.peer_id()));
}

#[test]
fn keys_round_trip_and_map_to_peer_ids() {
    let keys = NodeKeys::generate(&mut rng());
    let again = NodeKeys::from_secret_json(&keys.to_secret_json()).unwrap();
    assert_eq!(again.node_public(), keys.node_public());
    assert_eq!(again.sealing_public(), keys.sealing_public());
    assert_eq!(keys.node_public().peer_id(), Some(keys.peer_id()));
    assert_eq!(
        NodePublicKey::from_peer_id(&keys.peer_id()),
        Some(keys.node_public())
    );
    assert_eq!(keys.libp2p_keypair().public().to_peer_id(), keys.peer_id());
    assert!(NodeKeys::from_secret_json("{\"node_key\":\"zz\",\"sealing_key\":\"00\"}").is_err());
    assert!(NodeKeys::from_secret_json("not json").is_err());
}

#[test]
fn member_card_round_trips_through_json() {
    let f = Fixture::legacy(2, 2).unwrap();
    let mut card = f.orgs[1].card.clone();
    card.nodes[0].addrs.push("/ip4/127.0.0.1/tcp/7400".into());
    let json = card.to_json();
    assert_eq!(MemberCard::from_json(&json).unwrap(), card);
    assert!(MemberCard::from_json("{\"org_id\":\"Bad Id\"}").is_err());
    let mut empty = card.clone();
    empty.nodes.clear();
    assert!(MemberCard::from_json(&empty.to_json()).is_err());
}

#[test]
fn indicators_are_checked_by_kind() {
    let ok = [
        ("ipv4:203.0.113.7", "ipv4:203.0.113.7"),
        ("ipv6:2001:DB8::1", "ipv6:2001:db8::1"),
        ("domain:Evil.Example.COM.", "domain:evil.example.com"),
        (
            "url:HTTPS://evil.example/x?y",
            "url:https://evil.example/x?y",
        ),
        ("email:Ops@Evil.Example", "email:Ops@evil.example"),
        (
            "md5:D41D8CD98F00B204E9800998ECF8427E",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
        ),
        (
            "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709",
        ),
        (
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        ("cve:cve-2023-4966", "cve:CVE-2023-4966"),
        ("file-name:invoice.pdf.exe", "file-name:invoice.pdf.exe"),
    ];
    for (input, normal) in ok {
        assert_eq!(
            Indicator::parse(input).unwrap().to_string(),
            normal,
            "{input}"
        );
    }
    let bad = [
        "ipv4:999.1.1.1",
        "ipv4:evil.example",
        "ipv6:1.2.3.4",
        "domain:no_tld",
        "url:evil.example/path",
        "email:nobody",
        "md5:xyz",
        "sha1:1234",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
        "cve:2023-1",
        "file-name:../etc/passwd",
        "colour:red",
        "no-colon",
    ];
    for input in bad {
        let err = Indicator::parse(input).unwrap_err().to_string();
        let named = input.split_once(':').map_or(input, |(_, v)| v);
        assert!(
            err.contains(named) || err.contains(input),
            "error {err:?} does not name {input:?}"
        );
    }
}

#[test]
fn bulletin_fields_are_checked() {
    let mut b = Bulletin::new("", Severity::Low);
    assert!(b.check().unwrap_err().to_string().contains("title"));
    b.title = "ok".into();
    b.stix = Some("not json".into());
    assert!(b.check().unwrap_err().to_string().contains("stix"));
    b.stix = Some(r#"{"type":"bundle","id":"bundle--1","objects":[]}"#.into());
    b.check().unwrap();
    assert_eq!("amber+strict".parse::<Tlp>().unwrap(), Tlp::AmberStrict);
    assert_eq!("TLP:RED".parse::<Tlp>().unwrap(), Tlp::Red);
    assert!("purple".parse::<Tlp>().is_err());
    assert!("urgent".parse::<Severity>().is_err());
}

#[test]
fn frontier_digest_and_missing_ranges() {
    let a = NodePublicKey([1; 32]);
    let b = NodePublicKey([2; 32]);
    let mine = Frontier([(a, 3), (b, 10)].into_iter().collect());
    let theirs = Frontier(
        [(a, 5), (b, 10), (NodePublicKey([3; 32]), 2)]
            .into_iter()
            .collect(),
    );
    assert_ne!(mine.digest(), theirs.digest());
    assert_eq!(mine.digest(), mine.clone().digest());
    let missing = mine.missing_from(&theirs);
    assert_eq!(missing.len(), 2);
    assert_eq!((missing[0].from, missing[0].to), (4, 5));
    assert_eq!((missing[1].from, missing[1].to), (1, 2));
    assert!(theirs.missing_from(&mine).is_empty());
}

#[test]
fn in_sync_hello_is_small() {
    // A roster of 100 members, already in sync: one Hello and one InSync.
    let frontier = Frontier(
        (0..100u8)
            .map(|i| (NodePublicKey([i; 32]), 1000 + i as u64))
            .collect(),
    );
    let hello = SyncRequest::Hello {
        digest: frontier.digest(),
        roster_version: 3,
        roster_hash: Digest([9; 32]),
    }
    .encode();
    let reply = SyncResponse::InSync.encode();
    assert!(
        hello.len() + reply.len() < 96,
        "{} + {}",
        hello.len(),
        reply.len()
    );
}

#[test]
fn sync_caps_are_enforced() {
    let ranges = vec![
        SeqRange {
            author: NodePublicKey([1; 32]),
            from: 1,
            to: 2
        };
        sync::MAX_RANGES + 1
    ];
    assert!(SyncRequest::decode(&SyncRequest::Ranges(ranges).encode()).is_err());
    let bad = SyncRequest::Ranges(vec![SeqRange {
        author: NodePublicKey([1; 32]),
        from: 5,
        to: 2,
    }]);
    assert!(SyncRequest::decode(&bad.encode()).is_err());
    assert!(SyncResponse::decode(&vec![1u8; sync::MAX_SYNC_MESSAGE + 1]).is_err());
}

#[test]
fn oversized_envelope_is_rejected_by_decode() {
    let big = vec![1u8; MAX_ENVELOPE_BYTES + 1];
    assert!(matches!(Envelope::decode(&big), Err(DecodeError::Frame(_))));
    let f = fixture();
    let keys = f.keys(0, 0).unwrap();
    let mut draft = bulletin_draft(1, Digest::ZERO, Tlp::Green, "t", NOW);
    if let Body::Bulletin(b) = &mut draft.body {
        b.summary = "x".repeat(60 * 1024);
        b.references = (0..64).map(|i| format!("{i}{}", "r".repeat(500))).collect();
        b.tags = (0..64).map(|i| format!("{i}{}", "t".repeat(500))).collect();
        b.sectors = (0..64).map(|i| format!("{i}{}", "s".repeat(500))).collect();
        b.stix = Some(format!(
            r#"{{"type":"bundle","pad":"{}"}}"#,
            "p".repeat(150 * 1024)
        ));
    }
    assert!(matches!(
        seal(keys, f.roster(), draft, &[], &mut rng()),
        Err(SealError::TooLarge(_))
    ));
}

#[test]
fn h4_a_lifetime_longer_than_a_year_is_rejected_by_every_node() {
    let f = fixture();
    let keys = f.keys(0, 0).unwrap();
    let state = MemState::default();
    let with_lifetime = |lifetime: u64| {
        let mut draft = bulletin_draft(1, Digest::ZERO, Tlp::Green, "t", NOW);
        draft.expires_at = NOW + lifetime;
        seal(keys, f.roster(), draft, &[], &mut rng())
            .unwrap()
            .encode()
    };
    accept(validate(
        &with_lifetime(MAX_LIFETIME_MS),
        NOW,
        f.roster(),
        &state,
    ));
    let too_long = with_lifetime(MAX_LIFETIME_MS + 1);
    assert_eq!(
        reject(validate(&too_long, NOW, f.roster(), &state)),
        Rejection::LifetimeTooLong {
            lifetime_ms: MAX_LIFETIME_MS + 1
        }
    );
    // A protocol rule: the store-free precheck refuses it, whatever the state.
    assert!(matches!(
        precheck(&too_long, f.roster()),
        Err(Rejection::LifetimeTooLong { .. })
    ));
    assert!(matches!(
        &precheck_batch(&[too_long.clone(), with_lifetime(1)], f.roster())[..],
        [Err(Rejection::LifetimeTooLong { .. }), Ok(_)]
    ));
    // The review's 100-year bulletin.
    let century = with_lifetime(100 * MAX_LIFETIME_MS);
    assert!(matches!(
        reject(validate(&century, NOW, f.roster(), &state)),
        Rejection::LifetimeTooLong { .. }
    ));
}

#[test]
fn m1_a_retraction_checks_the_organisation_recorded_with_its_target() {
    let f = fixture();
    // Node 0 of org 0 publishes the target, then leaves its card (key rotation).
    let target = sealed(&f, 0, Tlp::Clear, &[], 1, Digest::ZERO);
    let rotated_out = f.keys(0, 0).unwrap().node_public();
    let mut rotated = f.roster().next();
    for member in &mut rotated.members {
        member.card.nodes.retain(|n| n.node_key != rotated_out);
    }
    assert!(rotated.node(&rotated_out).is_none());
    let retraction = |org: usize| {
        let draft = Draft {
            seq: 1,
            prev: Digest::ZERO,
            created_at: NOW,
            expires_at: NOW + 1000,
            tlp: Tlp::Clear,
            kind: Kind::Retraction {
                target: target.id(),
            },
            body: Body::Retraction {
                reason: "published by a compromised key".into(),
            },
        };
        seal_to(
            f.keys(org, 1).unwrap(),
            &rotated,
            None,
            draft,
            &[],
            &mut rng(),
        )
        .unwrap()
        .encode()
    };
    let mut state = MemState::default();
    state.insert(&target.encode());
    // Without a recorded organisation the rotated-out author is unknown.
    assert!(matches!(
        reject(validate(&retraction(0), NOW, &rotated, &state)),
        Rejection::ForeignRetraction { .. }
    ));
    // With it, the organisation's other node may retract; others still not.
    state.orgs.insert(target.id(), org(&f, 0));
    accept(validate(&retraction(0), NOW, &rotated, &state));
    assert!(matches!(
        reject(validate(&retraction(1), NOW, &rotated, &state)),
        Rejection::ForeignRetraction { .. }
    ));
}
