//! Property tests: every wire type round-trips, and no decoder or validator
//! panics on arbitrary or mutated input.

use breakwater_protocol::body::Bulletin;
use breakwater_protocol::*;
use proptest::prelude::*;

use std::sync::LazyLock;

use breakwater_protocol::fixture::Fixture;

use super::{MemState, NOW, fixture};

static MUTATION_BASE: LazyLock<(Fixture, Vec<u8>)> = LazyLock::new(|| {
    let f = fixture();
    let env = super::sealed(
        &f,
        1,
        Tlp::Amber,
        &[f.orgs[2].org_id.clone()],
        1,
        Digest::ZERO,
    );
    let bytes = env.encode();
    (f, bytes)
});

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}

fn node_key() -> impl Strategy<Value = NodePublicKey> {
    any::<[u8; 32]>().prop_map(NodePublicKey)
}

fn tlp() -> impl Strategy<Value = Tlp> {
    prop::sample::select(Tlp::ALL.to_vec())
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Bulletin),
        digest().prop_map(|target| Kind::Retraction { target }),
        digest().prop_map(|target| Kind::Sighting { target }),
    ]
}

fn recipient() -> impl Strategy<Value = Recipient> {
    (any::<[u8; 8]>(), prop::collection::vec(any::<u8>(), 80)).prop_map(|(id, wrap)| Recipient {
        key_id: KeyId(id),
        wrap,
    })
}

prop_compose! {
    fn envelope()(
        consortium in digest(), author in node_key(), seq in 1u64..u64::MAX, prev in digest(),
        created_at in 0u64..u64::MAX / 2, life in 1u64..1 << 40, tlp in tlp(), kind in kind(),
        recipients in prop::collection::vec(recipient(), 1..6),
        payload in prop::collection::vec(any::<u8>(), 0..512), sig in prop::collection::vec(any::<u8>(), 64),
    ) -> Envelope {
        let prev = if seq == 1 { Digest::ZERO } else if prev.is_zero() { Digest([1; 32]) } else { prev };
        let seal = if tlp.is_sealed() { Seal::Nodes(recipients) } else { Seal::Clear };
        Envelope {
            header: Header {
                version: 1, consortium, author, seq, prev, created_at,
                expires_at: created_at + life, tlp, kind, seal,
            },
            payload,
            signature: Signature::from_slice(&sig).unwrap(),
        }
    }
}

prop_compose! {
    fn envelope_v2()(
        mut env in envelope(), epoch in 1u64..u64::MAX, key_id in any::<[u8; 8]>(),
        wrap in prop::collection::vec(any::<u8>(), 48), nodes in any::<bool>(),
    ) -> Envelope {
        env.header.version = 2;
        if env.header.tlp == Tlp::Green && !nodes {
            env.header.seal = Seal::Epoch { epoch, key_id: KeyId(key_id), wrap };
        }
        env
    }
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9 ]{0,39}"
}

fn indicator() -> impl Strategy<Value = Indicator> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| Indicator::parse(&format!(
            "ipv4:{}.{}.{}.{}",
            o[0], o[1], o[2], o[3]
        ))
        .unwrap()),
        any::<[u8; 32]>()
            .prop_map(|h| Indicator::parse(&format!("sha256:{}", hex::encode(h))).unwrap()),
        "[a-z]{1,10}\\.[a-z]{2,5}".prop_map(|d| Indicator::parse(&format!("domain:{d}")).unwrap()),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (
            text(),
            text(),
            prop::collection::vec(text(), 0..3),
            prop::collection::vec(indicator(), 0..5),
            prop::option::of(digest())
        )
            .prop_map(|(title, summary, tags, indicators, supersedes)| {
                let mut b = Bulletin::new(&title, Severity::Critical);
                b.summary = summary;
                b.tags = tags;
                b.indicators = indicators;
                b.supersedes = supersedes;
                Body::Bulletin(b)
            }),
        text().prop_map(|reason| Body::Retraction { reason }),
        (indicator(), any::<u64>(), prop::option::of(text())).prop_map(
            |(indicator, seen_at, note)| Body::Sighting {
                indicator,
                seen_at,
                note
            }
        ),
    ]
}

fn frontier() -> impl Strategy<Value = Frontier> {
    prop::collection::btree_map(node_key(), any::<u64>(), 0..20).prop_map(Frontier)
}

fn request() -> impl Strategy<Value = SyncRequest> {
    prop_oneof![
        (digest(), any::<u64>()).prop_map(|(digest, roster_version)| SyncRequest::HelloV1 {
            digest,
            roster_version
        }),
        (digest(), any::<u64>(), digest()).prop_map(|(digest, roster_version, roster_hash)| {
            SyncRequest::Hello {
                digest,
                roster_version,
                roster_hash,
            }
        }),
        prop::collection::vec((node_key(), 1u64..1000, 0u64..1000), 0..10).prop_map(|v| {
            SyncRequest::Ranges(
                v.into_iter()
                    .map(|(author, from, len)| SeqRange {
                        author,
                        from,
                        to: from + len,
                    })
                    .collect(),
            )
        }),
        any::<u64>().prop_map(|after| SyncRequest::Rosters { after }),
    ]
}

fn response() -> impl Strategy<Value = SyncResponse> {
    prop_oneof![
        Just(SyncResponse::InSync),
        (frontier(), any::<u64>()).prop_map(|(frontier, roster_version)| {
            SyncResponse::FrontierV1 {
                frontier,
                roster_version,
            }
        }),
        (frontier(), any::<u64>(), digest()).prop_map(|(frontier, roster_version, roster_hash)| {
            SyncResponse::Frontier {
                frontier,
                roster_version,
                roster_hash,
            }
        }),
        (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..10),
            any::<bool>()
        )
            .prop_map(|(items, more)| SyncResponse::Envelopes { items, more }),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..5)
            .prop_map(SyncResponse::Rosters),
        text().prop_map(SyncResponse::Refused),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(512) })]

    #[test]
    fn envelope_round_trips(env in envelope()) {
        let bytes = env.encode();
        prop_assert_eq!(bytes.len(), env.encoded_len());
        prop_assert_eq!(Envelope::decode(&bytes).unwrap(), env);
    }

    #[test]
    fn body_round_trips(body in body()) {
        prop_assert_eq!(Body::decode_for(&body.encode(), &match body {
            Body::Bulletin(_) => Kind::Bulletin,
            Body::Retraction { .. } => Kind::Retraction { target: Digest::ZERO },
            Body::Sighting { .. } => Kind::Sighting { target: Digest::ZERO },
        }).unwrap(), body);
    }

    #[test]
    fn sealed_envelope_round_trips_and_opens(body in body(), seed in any::<u64>(), tlp in tlp()) {
        use rand::SeedableRng;
        let f = fixture();
        let kind = match &body {
            Body::Bulletin(_) => Kind::Bulletin,
            Body::Retraction { .. } => Kind::Retraction { target: Digest([9; 32]) },
            Body::Sighting { .. } => Kind::Sighting { target: Digest([9; 32]) },
        };
        let draft = Draft { seq: 1, prev: Digest::ZERO, created_at: NOW, expires_at: NOW + 1, tlp, kind, body: body.clone() };
        let keys = f.keys(0, 0).unwrap();
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
        let env = seal(keys, f.roster(), draft, &[], &mut rng).unwrap();
        let decoded = Envelope::decode(&env.encode()).unwrap();
        prop_assert_eq!(&decoded, &env);
        decoded.verify().unwrap();
        prop_assert_eq!(open(&decoded, keys).unwrap(), body);
    }

    #[test]
    fn sync_messages_round_trip(req in request(), resp in response()) {
        prop_assert_eq!(SyncRequest::decode(&req.encode()).unwrap(), req);
        prop_assert_eq!(SyncResponse::decode(&resp.encode()).unwrap(), resp);
    }

    #[test]
    fn v2_envelope_round_trips(env in envelope_v2()) {
        let bytes = env.encode();
        prop_assert_eq!(bytes[1], 2);
        prop_assert_eq!(Envelope::decode(&bytes).unwrap(), env);
    }

    #[test]
    fn frontier_round_trips(f in frontier()) {
        let resp = SyncResponse::Frontier { frontier: f.clone(), roster_version: 1, roster_hash: Digest([7; 32]) };
        prop_assert_eq!(SyncResponse::decode(&resp.encode()).unwrap(), resp);
    }

    #[test]
    fn roster_round_trips(n in 1usize..6, nodes in 1usize..3) {
        let f = breakwater_protocol::fixture::Fixture::new(n, nodes).unwrap();
        prop_assert_eq!(SignedRoster::decode(&f.roster.encode()).unwrap(), f.roster.clone());
        prop_assert_eq!(SignedRoster::from_json(&f.roster.to_json()).unwrap(), f.roster.clone());
        let card = &f.orgs[0].card;
        prop_assert_eq!(&MemberCard::from_json(&card.to_json()).unwrap(), card);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(10_000) })]

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Envelope::decode(&bytes);
        let _ = SignedRoster::decode(&bytes);
        let _ = SyncRequest::decode(&bytes);
        let _ = SyncResponse::decode(&bytes);
        let mut framed = bytes.clone();
        framed.insert(0, FORMAT_VERSION);
        let _ = Envelope::decode(&framed);
        let _ = SyncRequest::decode(&framed);
        let _ = SyncResponse::decode(&framed);
        let _ = SignedRoster::decode(&framed);
        framed[0] = 2;
        let _ = Envelope::decode(&framed);
        let _ = SignedRoster::decode(&framed);
        framed.insert(1, 2);
        let _ = Envelope::decode(&framed);
    }

    #[test]
    fn validate_never_panics_on_mutated_envelopes(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let (f, valid) = &*MUTATION_BASE;
        let mut bytes = valid.clone();
        for (pos, value) in edits {
            let len = bytes.len();
            bytes[pos % len] = value;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Verdict::Accept(a) = validate(&bytes, NOW, f.roster(), &MemState::default()) {
            let _ = open(&a.envelope, f.keys(2, 0).unwrap());
        }
    }
}
