//! Security-review hardening (2026-11): M7 (control and bidi characters),
//! H3 (size caps at every entry point), L3 (sealing keys), L8 (roster
//! footguns). Each test fails on the code before its fix.

use breakwater_protocol::body::Bulletin;
use breakwater_protocol::fixture::{Fixture, fixture_org};
use breakwater_protocol::*;

/// Strings that must never reach a terminal from a peer.
const HOSTILE: &[&str] = &[
    "a\x1b[2Jb",         // ESC: clear screen
    "a\x1b]0;pwned\x07", // OSC: window title
    "a\rb",              // carriage return
    "a\u{7}b",           // BEL
    "a\u{85}b",          // C1 NEL
    "a\u{9b}2J",         // C1 CSI
    "a\u{202e}gpj.exe",  // RIGHT-TO-LEFT OVERRIDE
    "a\u{202a}b",        // LRE
    "a\u{2066}b",        // LRI
    "a\u{2069}b",        // PDI
    "a\0b",
];

#[test]
fn m7_bulletin_text_refuses_controls_and_bidi() {
    for bad in HOSTILE {
        let mut title = Bulletin::new("ok", Severity::Low);
        title.title = (*bad).to_string();
        assert!(title.check().is_err(), "title {bad:?} accepted");

        let mut summary = Bulletin::new("ok", Severity::Low);
        summary.summary = (*bad).to_string();
        assert!(summary.check().is_err(), "summary {bad:?} accepted");

        for list in ["tags", "sectors", "references"] {
            let mut b = Bulletin::new("ok", Severity::Low);
            let v = vec![(*bad).to_string()];
            match list {
                "tags" => b.tags = v,
                "sectors" => b.sectors = v,
                _ => b.references = v,
            }
            assert!(b.check().is_err(), "{list} {bad:?} accepted");
        }
        let reason = Body::Retraction {
            reason: (*bad).to_string(),
        };
        assert!(reason.check().is_err(), "reason {bad:?} accepted");
        let sighting = Body::Sighting {
            indicator: Indicator::new(IndicatorKind::Ipv4, "192.0.2.1").unwrap(),
            seen_at: 1,
            note: Some((*bad).to_string()),
        };
        assert!(sighting.check().is_err(), "note {bad:?} accepted");
    }
    // A file-name or URL indicator cannot smuggle a bidi override either.
    assert!(Indicator::new(IndicatorKind::FileName, "invoice\u{202e}fdp.exe").is_err());
    assert!(Indicator::new(IndicatorKind::Url, "https://x.example/\u{202e}a").is_err());
    assert!(Indicator::new(IndicatorKind::Email, "a\u{2066}b@x.example").is_err());
}

#[test]
fn m7_multiline_summaries_stay_valid() {
    let mut b = Bulletin::new("Gate OS advisory", Severity::High);
    b.summary = "line one\nline two\n\tindented".into();
    b.check().unwrap();
    let reason = Body::Retraction {
        reason: "false positive\nsee ticket 12".into(),
    };
    reason.check().unwrap();
    // Ordinary non-ASCII text is fine.
    b.title = "Hafenbehörde: Störung – 港口".into();
    b.check().unwrap();
}

#[test]
fn m7_card_and_roster_names_refuse_controls() {
    let mut org = fixture_org(0, 1);
    org.card.name = "Port\x1b[31m Authority".into();
    assert!(org.card.check().is_err());
    let mut org = fixture_org(0, 1);
    org.card.sector = "port\u{202e}".into();
    assert!(org.card.check().is_err());
    let org = fixture_org(0, 1);
    assert!(
        Roster::genesis("Bay\x1b]0;x\x07", vec![org.card], vec![org.org_id], 1).is_err(),
        "roster name with OSC accepted"
    );
}

fn big_card(i: usize, addrs: usize) -> MemberCard {
    let mut org = fixture_org(i, 1);
    org.card.nodes[0].addrs = (0..addrs)
        .map(|n| format!("/dns4/{n:0>200}.example/tcp/7400"))
        .collect();
    org.card
}

#[test]
fn h3_roster_over_the_decode_cap_is_refused_everywhere() {
    let fixture = Fixture::new(2, 1).unwrap();
    let v1 = fixture.roster();
    // 5,000 addresses of ~230 bytes: ~1.2 MB, over MAX_ROSTER_BYTES.
    let card = big_card(5, 5000);
    let next = v1.with_member(card.clone());
    let Ok(next) = next else {
        return; // refused at construction: good
    };
    let mut signed = SignedRoster::unsigned(next);
    signed.sign(fixture.keys(0, 0).unwrap());
    let encoded = signed.encode();
    assert!(encoded.len() > 1024 * 1024);
    assert!(
        SignedRoster::verify_update(v1, &signed).is_err(),
        "verify_update accepted a roster the decoder refuses"
    );
    assert!(signed.roster.check().is_err());
}

#[test]
fn h3_genesis_over_the_decode_cap_is_refused() {
    let card = big_card(0, 5000);
    let keys = fixture_org(0, 1).keys.remove(0);
    let org = card.org_id.clone();
    let Ok(roster) = Roster::genesis("Big", vec![card], vec![org], 1) else {
        return;
    };
    let mut signed = SignedRoster::unsigned(roster);
    signed.sign(&keys);
    assert!(signed.encode().len() > 1024 * 1024);
    assert!(
        signed.verify_genesis().is_err(),
        "verify_genesis accepted a roster the decoder refuses"
    );
}

#[test]
fn h3_cards_bound_addresses_and_nodes() {
    // 17 short addresses: each fine, but too many for one node.
    let card = {
        let mut org = fixture_org(0, 1);
        org.card.nodes[0].addrs = (0..17)
            .map(|n| format!("/ip4/192.0.2.{n}/tcp/7400"))
            .collect();
        org.card
    };
    assert!(card.check().is_err(), "17 addresses per node accepted");
    // 16 are fine.
    let mut ok = card.clone();
    ok.nodes[0].addrs.truncate(16);
    ok.check().unwrap();
    // 17 nodes in one card.
    let many = fixture_org(0, 17).card;
    assert!(many.check().is_err(), "17 nodes per card accepted");
    fixture_org(0, 16).card.check().unwrap();
}

#[test]
fn l3_low_order_and_zero_sealing_keys_are_refused() {
    // Canonical encodings of the low-order points of Curve25519 and its twist.
    let mut low_order: Vec<[u8; 32]> = vec![[0u8; 32], {
        let mut one = [0u8; 32];
        one[0] = 1;
        one
    }];
    for hex in [
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ] {
        let bytes = hex::decode(hex).unwrap();
        low_order.push(bytes.try_into().unwrap());
    }
    for key in low_order {
        let mut org = fixture_org(1, 1);
        org.card.nodes[0].sealing_key = SealingPublicKey(key);
        assert!(
            org.card.check().is_err(),
            "low-order sealing key {} accepted",
            hex::encode(key)
        );
    }
    // Non-canonical: the top bit set (X25519 ignores it, so it would be a
    // second spelling of a key).
    let mut org = fixture_org(1, 1);
    org.card.nodes[0].sealing_key.0[31] |= 0x80;
    assert!(
        org.card.check().is_err(),
        "non-canonical sealing key accepted"
    );
}

/// `is_valid` compares with the five canonical low-order encodings instead
/// of multiplying: it agrees with the multiplication it replaced (a key is
/// refused exactly when a clamped scalar maps it to zero) on every listed
/// encoding, every key below 256 and 2,000 random canonical keys.
#[test]
fn scale_the_low_order_check_agrees_with_the_scalar_multiplication() {
    use rand::{RngExt, SeedableRng};
    let ladder_zero = |u: [u8; 32]| x25519_dalek::x25519([0x5a; 32], u) == [0u8; 32];
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(3);
    let mut keys: Vec<[u8; 32]> = Vec::new();
    for hex in [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ] {
        keys.push(hex::decode(hex).unwrap().try_into().unwrap());
    }
    for small in 0u8..=255 {
        let mut u = [0u8; 32];
        u[0] = small;
        keys.push(u);
    }
    for _ in 0..2_000 {
        let mut u = [0u8; 32];
        rng.fill(&mut u);
        u[31] &= 0x7f;
        keys.push(u);
    }
    for u in keys {
        let key = SealingPublicKey(u);
        assert_eq!(key.is_valid(), !ladder_zero(u), "{}", hex::encode(u));
    }
}

#[test]
fn l3_duplicate_sealing_keys_are_refused() {
    let a = fixture_org(0, 1);
    let mut b = fixture_org(1, 1);
    b.card.nodes[0].sealing_key = a.card.nodes[0].sealing_key;
    let result = Roster::genesis(
        "Bay",
        vec![a.card.clone(), b.card.clone()],
        vec![a.org_id.clone()],
        1,
    );
    assert!(result.is_err(), "two orgs with one sealing key accepted");
    // Within one card too.
    let mut c = fixture_org(2, 2);
    c.card.nodes[1].sealing_key = c.card.nodes[0].sealing_key;
    assert!(c.card.check().is_err());
}

#[test]
fn l8_duplicate_admins_are_refused_not_deduped() {
    let a = fixture_org(0, 1);
    let b = fixture_org(1, 1);
    let result = Roster::genesis(
        "Bay",
        vec![a.card.clone(), b.card.clone()],
        vec![a.org_id.clone(), a.org_id.clone()],
        2,
    );
    assert!(result.is_err(), "duplicate admins accepted");
    // A hand-built roster with duplicate admins fails check().
    let mut roster =
        Roster::genesis("Bay", vec![a.card, b.card], vec![a.org_id.clone()], 1).unwrap();
    roster.admins = vec![a.org_id.clone(), a.org_id.clone()];
    roster.threshold = 2;
    assert!(roster.check().is_err(), "check() accepted duplicate admins");
    // with_admins refuses them as well.
    let fixture = Fixture::new(2, 1).unwrap();
    let org0 = fixture.orgs[0].org_id.clone();
    assert!(
        fixture
            .roster()
            .with_admins(vec![org0.clone(), org0], 1)
            .is_err()
    );
}

#[test]
fn l8_roster_name_is_bounded() {
    let a = fixture_org(0, 1);
    assert!(Roster::genesis("", vec![a.card.clone()], vec![a.org_id.clone()], 1).is_err());
    assert!(
        Roster::genesis(
            &"x".repeat(129),
            vec![a.card.clone()],
            vec![a.org_id.clone()],
            1
        )
        .is_err()
    );
    Roster::genesis(&"x".repeat(128), vec![a.card], vec![a.org_id], 1).unwrap();
}

/// Signs `roster` with the first node of each org in `signers`.
fn signed_by(fixture: &Fixture, roster: Roster, signers: &[usize]) -> SignedRoster {
    let key = breakwater_protocol::fixture::fixture_green_key(roster.version);
    let mut signed = SignedRoster::unsigned(roster.with_green_key(&key).unwrap());
    for &org in signers {
        signed.sign(fixture.keys(org, 0).unwrap());
    }
    signed
}

#[test]
fn h2_two_successors_of_one_version_both_verify() {
    // Threshold 1 of 2 admins (not a majority): two admins each sign a
    // different version 2, and both are valid successors of version 1.
    let fixture = Fixture::new(4, 1).unwrap();
    let admins = vec![
        fixture.orgs[0].org_id.clone(),
        fixture.orgs[1].org_id.clone(),
    ];
    let v2 = signed_by(
        &fixture,
        fixture.roster().with_admins(admins, 1).unwrap(),
        &[0],
    );
    SignedRoster::verify_update(fixture.roster(), &v2).unwrap();
    let v3a = signed_by(
        &fixture,
        v2.roster.with_revoked(&fixture.orgs[2].org_id).unwrap(),
        &[0],
    );
    let v3b = signed_by(
        &fixture,
        v2.roster.with_revoked(&fixture.orgs[3].org_id).unwrap(),
        &[1],
    );
    assert_ne!(v3a.roster.hash(), v3b.roster.hash());
    assert_eq!(v3a.roster.version, v3b.roster.version);
    SignedRoster::verify_update(&v2.roster, &v3a).unwrap();
    SignedRoster::verify_update(&v2.roster, &v3b).unwrap();
    // Each branch's successor is refused on the other: BadPrev, the
    // signal that a node on the other branch uses to look for the fork.
    let v4a = signed_by(&fixture, v3a.roster.rekeyed(), &[0]);
    assert!(matches!(
        SignedRoster::verify_update(&v3b.roster, &v4a),
        Err(RosterError::BadPrev { .. })
    ));

    // With a majority threshold (2 of 3) a fork needs an admin that signs
    // both versions: admin 1 here, whose two signatures are the evidence.
    let admins: Vec<_> = (0..3).map(|i| fixture.orgs[i].org_id.clone()).collect();
    let v2 = signed_by(
        &fixture,
        fixture.roster().with_admins(admins, 2).unwrap(),
        &[0],
    );
    SignedRoster::verify_update(fixture.roster(), &v2).unwrap();
    let v3a = signed_by(&fixture, v2.roster.rekeyed(), &[0, 1]);
    let v3b = signed_by(
        &fixture,
        v2.roster.with_revoked(&fixture.orgs[3].org_id).unwrap(),
        &[1, 2],
    );
    SignedRoster::verify_update(&v2.roster, &v3a).unwrap();
    SignedRoster::verify_update(&v2.roster, &v3b).unwrap();
    let signer = fixture.keys(1, 0).unwrap().node_public();
    assert!(v3a.signatures.iter().any(|s| s.signer == signer));
    assert!(v3b.signatures.iter().any(|s| s.signer == signer));
    // One admin alone cannot fork a majority roster.
    let lone = signed_by(&fixture, v2.roster.rekeyed(), &[2]);
    assert!(SignedRoster::verify_update(&v2.roster, &lone).is_err());
}

#[test]
fn h2_hello_and_frontier_carry_the_roster_hash() {
    let hash = Digest([0xab; 32]);
    let hello = SyncRequest::Hello {
        digest: Digest([1; 32]),
        roster_version: 7,
        roster_hash: hash,
    };
    let bytes = hello.encode();
    // Format byte, variant 3, digest, version, hash.
    assert_eq!(bytes[..2], [1, 3]);
    assert_eq!(bytes.len(), 2 + 33 + 1 + 33);
    assert_eq!(bytes[bytes.len() - 32..], [0xab; 32]);
    assert_eq!(SyncRequest::decode(&bytes).unwrap(), hello);
    let frontier = SyncResponse::Frontier {
        frontier: Frontier::default(),
        roster_version: 7,
        roster_hash: hash,
    };
    let bytes = frontier.encode();
    assert_eq!(bytes[..2], [1, 5]);
    assert_eq!(SyncResponse::decode(&bytes).unwrap(), frontier);
    // The Hello of nodes built before fork detection still decodes: variant
    // 0, no hash; its answer is the old Frontier (variant 1).
    let mut legacy = vec![1u8, 0, 0x20];
    legacy.extend_from_slice(&[1; 32]);
    legacy.push(7);
    assert_eq!(
        SyncRequest::decode(&legacy).unwrap(),
        SyncRequest::HelloV1 {
            digest: Digest([1; 32]),
            roster_version: 7,
        }
    );
    let old = SyncResponse::FrontierV1 {
        frontier: Frontier::default(),
        roster_version: 7,
    };
    assert_eq!(old.encode(), vec![1, 1, 0, 7]);
}

#[test]
fn l4_node_addresses_must_be_dialable_shapes() {
    let peer = fixture_org(0, 1).card.nodes[0]
        .node_key
        .peer_id()
        .unwrap()
        .to_string();
    let good = [
        "/ip4/203.0.113.7/tcp/7400".to_string(),
        "/ip4/127.0.0.1/tcp/7400".to_string(),
        "/ip4/10.1.2.3/udp/7400/quic-v1".to_string(),
        "/ip4/198.18.0.1/tcp/1".to_string(),
        "/ip6/2001:db8::7/tcp/7400".to_string(),
        "/ip6/::1/udp/65535/quic-v1".to_string(),
        "/dns/node.port-authority.example/tcp/7400".to_string(),
        "/dns4/node-1.example/udp/7400/quic-v1".to_string(),
        "/dns6/node.example./tcp/7400".to_string(),
        format!("/ip4/203.0.113.7/tcp/7400/p2p/{peer}"),
        "/memory/1000001".to_string(),
    ];
    for addr in &good {
        check_addr(addr).unwrap_or_else(|e| panic!("{addr} refused: {e}"));
        let mut org = fixture_org(0, 1);
        org.card.nodes[0].addrs = vec![addr.clone()];
        org.card.check().unwrap();
    }
    let bad = [
        "",
        "ip4/203.0.113.7/tcp/7400",
        "/ip4/203.0.113.7",
        "/ip4/203.0.113.7/tcp",
        "/ip4/203.0.113.7/tcp/0",
        "/ip4/203.0.113.7/tcp/65536",
        "/ip4/203.0.113.7/tcp/7400/ws",
        "/ip4/203.0.113.7/udp/7400",
        "/ip4/203.0.113.7/udp/7400/quic",
        "/ip4/203.0.113.7/tcp/7400/p2p/not-a-peer-id",
        "/ip4/203.0.113.7/tcp/7400/p2p-circuit",
        "/ip4/0.0.0.0/tcp/7400",
        "/ip4/255.255.255.255/tcp/7400",
        "/ip4/224.0.0.1/udp/7400/quic-v1",
        "/ip4/999.0.0.1/tcp/7400",
        "/ip6/::/tcp/7400",
        "/ip6/ff02::1/tcp/7400",
        "/dns4/-bad.example/tcp/7400",
        "/dns4/a..b/tcp/7400",
        "/dns4/under_score.example/tcp/7400",
        "/unix/%2Ftmp%2Fsock",
        "/onion3/abc:1234",
        "/memory/0",
        "/memory/x",
        "/ip4/203.0.113.7/tcp/7400/ip4/203.0.113.8/tcp/7400",
    ];
    for addr in bad {
        assert!(
            matches!(check_addr(addr), Err(CardError::BadAddr { .. })),
            "{addr:?} accepted"
        );
        let mut org = fixture_org(0, 1);
        org.card.nodes[0].addrs = vec![addr.to_string()];
        assert!(org.card.check().is_err(), "card with {addr:?} accepted");
        let roster = Roster::genesis("Bay", vec![org.card], vec![org.org_id], 1);
        assert!(roster.is_err(), "genesis roster with {addr:?} accepted");
    }
    // The error names the address in one line.
    let message = check_addr("/ip4/203.0.113.7/tcp/7400/ws")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("/ip4/203.0.113.7/tcp/7400/ws"),
        "{message}"
    );
    assert!(!message.contains('\n'));
}
