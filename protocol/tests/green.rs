//! GREEN under the roster epoch key (protocol v2): opening at every active
//! node, revocation, relays, package validity and audit, binding, the
//! equivocation keystream, pinned v2 vectors and the epoch-regression rule.

use breakwater_protocol::fixture::{Fixture, bulletin_draft, fixture_green_key};
use breakwater_protocol::*;

use super::{MemState, NOW, rng};

fn keys_of(f: &Fixture, org: usize) -> &NodeKeys {
    f.keys(org, 0).unwrap()
}

fn epoch_keys(roster: &Roster, keys: &NodeKeys) -> EpochKeys {
    let key = open_epoch_key(roster, keys).unwrap();
    EpochKeys::from([(key.epoch, key)])
}

fn green(
    f: &Fixture,
    roster: &Roster,
    author: usize,
    seq: u64,
    prev: Digest,
    title: &str,
) -> Envelope {
    seal(
        keys_of(f, author),
        roster,
        bulletin_draft(seq, prev, Tlp::Green, title, NOW),
        &[],
        &mut rng(),
    )
    .unwrap()
}

fn title_of(body: Body) -> String {
    match body {
        Body::Bulletin(b) => b.title,
        other => panic!("expected a bulletin, got {other:?}"),
    }
}

/// Signs `next` as the successor of the fixture's roster by its admin.
fn signed(f: &Fixture, next: Roster) -> SignedRoster {
    let mut s = SignedRoster::unsigned(next);
    s.sign(keys_of(f, 0));
    s
}

#[test]
fn green_opens_at_every_active_node_and_its_size_does_not_grow_with_the_consortium() {
    let mut sizes = Vec::new();
    for n in [6, 50, 300] {
        let f = Fixture::new(n, 1).unwrap();
        let env = green(&f, f.roster(), 1, 1, Digest::ZERO, "Ransomware at berth 4");
        assert_eq!(env.header.version, 2);
        assert!(matches!(env.header.seal, Seal::Epoch { epoch: 1, .. }));
        sizes.push(env.encoded_len());
        assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
        for i in [0, n / 2, n - 1] {
            let k = keys_of(&f, i);
            assert_eq!(
                title_of(open_with(&env, k, &epoch_keys(f.roster(), k)).unwrap()),
                "Ransomware at berth 4"
            );
            // Without the epoch key the node cannot open it, and says why.
            assert_eq!(open(&env, k).unwrap_err(), OpenError::NoEpochKey(1));
        }
    }
    assert!(sizes.iter().all(|&s| s == sizes[0]), "sizes {sizes:?}");
    assert!(sizes[0] < 1024, "a GREEN envelope is {} bytes", sizes[0]);
}

#[test]
fn a_revoked_member_cannot_open_green_sealed_after_the_revocation() {
    let f = Fixture::new(5, 1).unwrap();
    let x = keys_of(&f, 3);
    let v2 = f
        .roster()
        .with_revoked(&f.orgs[3].org_id)
        .unwrap()
        .with_green_key(&fixture_green_key(2))
        .unwrap();
    SignedRoster::verify_update(f.roster(), &signed(&f, v2.clone())).unwrap();
    let after = green(&f, &v2, 0, 1, Digest::ZERO, "canary-after-revocation");
    assert!(matches!(after.header.seal, Seal::Epoch { epoch: 2, .. }));

    // X has no wrap in v2.
    assert_eq!(
        open_epoch_key(&v2, x).unwrap_err(),
        EpochKeyError::NotARecipient(2)
    );
    // X's secret opens none of v2's wraps, whichever key id it claims.
    let package = v2.green.clone().unwrap();
    for wrap in &package.wraps {
        let mut forged = v2.clone();
        let g = forged.green.as_mut().unwrap();
        g.wraps = vec![Recipient {
            key_id: x.sealing_public().key_id(),
            wrap: wrap.wrap.clone(),
        }];
        assert_eq!(
            open_epoch_key(&forged, x).unwrap_err(),
            EpochKeyError::BadWrap(2)
        );
    }
    // X's v1 key does not open the v2 envelope: wrong key id, and with the key
    // id bypassed the AEAD fails.
    let v1_key = open_epoch_key(f.roster(), x).unwrap();
    let mut relabelled = v1_key.clone();
    relabelled.epoch = 2;
    let stale = EpochKeys::from([(2, relabelled.clone())]);
    assert_eq!(
        open_with(&after, x, &stale).unwrap_err(),
        OpenError::EpochKeyMismatch(2)
    );
    if let Seal::Epoch { key_id, .. } = after.header.seal {
        relabelled.key_id = key_id;
    }
    let bypass = EpochKeys::from([(2, relabelled)]);
    assert_eq!(
        open_with(&after, x, &bypass).unwrap_err(),
        OpenError::Decrypt
    );

    // The other members read it.
    for i in [0, 1, 2, 4] {
        let k = keys_of(&f, i);
        open_with(&after, k, &epoch_keys(&v2, k)).unwrap();
    }
    // R3's boundary: an author that has not applied v2 still seals under v1,
    // which X holds. This is the documented semantics.
    let before = green(&f, f.roster(), 0, 1, Digest::ZERO, "before");
    assert_eq!(
        title_of(open_with(&before, x, &EpochKeys::from([(1, v1_key)])).unwrap()),
        "before"
    );
}

#[test]
fn a_relay_outside_the_consortium_opens_nothing() {
    let f = Fixture::new(4, 1).unwrap();
    let outsider = NodeKeys::from_seed([99; 32]);
    let env = green(&f, f.roster(), 0, 1, Digest::ZERO, "canary-7f3a");
    assert_eq!(
        open_epoch_key(f.roster(), &outsider).unwrap_err(),
        EpochKeyError::NotARecipient(1)
    );
    assert!(open(&env, &outsider).is_err());
    // Even handed a member's wrap under its own key id, the outsider fails.
    let mut forged = f.roster().clone();
    let g = forged.green.as_mut().unwrap();
    for w in &mut g.wraps {
        w.key_id = outsider.sealing_public().key_id();
    }
    assert_eq!(
        open_epoch_key(&forged, &outsider).unwrap_err(),
        EpochKeyError::BadWrap(1)
    );
    let needle = b"canary-7f3a";
    let everything = [env.encode(), f.roster.encode()].concat();
    assert!(!everything.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn verify_update_checks_the_package() {
    let f = Fixture::new(4, 1).unwrap();
    let current = f.roster();
    let revoked = current.with_revoked(&f.orgs[3].org_id).unwrap();
    let good = revoked
        .clone()
        .with_green_key(&fixture_green_key(2))
        .unwrap();
    SignedRoster::verify_update(current, &signed(&f, good.clone())).unwrap();

    let with_package = |edit: &dyn Fn(&mut GreenKeyPackage)| {
        let mut r = good.clone();
        edit(r.green.as_mut().unwrap());
        SignedRoster::verify_update(current, &signed(&f, r)).unwrap_err()
    };
    // A wrap for the revoked node (the old version's package).
    let old = current.green.clone().unwrap();
    assert!(matches!(
        with_package(&|g| *g = old.clone()),
        RosterError::GreenPackage(_)
    ));
    // A missing wrap.
    assert!(matches!(
        with_package(&|g| {
            g.wraps.pop();
        }),
        RosterError::GreenPackage(_)
    ));
    // A duplicate key id.
    assert!(matches!(
        with_package(&|g| {
            let first = g.wraps[0].clone();
            g.wraps[1] = first;
        }),
        RosterError::GreenPackage(_)
    ));
    // A 79-byte wrap.
    assert!(matches!(
        with_package(&|g| {
            g.wraps[0].wrap.pop();
        }),
        RosterError::GreenPackage(_)
    ));
    // No package after opt-in.
    assert_eq!(
        SignedRoster::verify_update(current, &signed(&f, revoked)).unwrap_err(),
        RosterError::GreenKeyMissing(2)
    );
}

#[test]
fn a_package_that_gives_one_node_another_key_fails_the_audit_and_that_node() {
    let f = Fixture::new(3, 1).unwrap();
    let next = f.roster().rekeyed();
    let honest = next.clone().with_green_key(&fixture_green_key(2)).unwrap();
    let other = next.with_green_key(&[7u8; 32]).unwrap();
    let b = keys_of(&f, 1).sealing_public().key_id();
    let mut forged = honest.clone();
    let g = forged.green.as_mut().unwrap();
    let slot = g.wraps.iter().position(|w| w.key_id == b).unwrap();
    g.wraps[slot] = other.green.as_ref().unwrap().wraps[slot].clone();
    // Structurally fine: only a key holder can tell.
    forged.check().unwrap();
    let a_key = open_epoch_key(&forged, keys_of(&f, 0)).unwrap();
    audit_package(&honest, &a_key).unwrap();
    assert_eq!(
        audit_package(&forged, &a_key).unwrap_err(),
        EpochKeyError::Inconsistent {
            epoch: 2,
            key_id: b
        }
    );
    // B opens a key that does not match the commitment.
    assert_eq!(
        open_epoch_key(&forged, keys_of(&f, 1)).unwrap_err(),
        EpochKeyError::BadWrap(2)
    );
    // A package wrap moved to another roster version does not open.
    let mut moved = honest.clone();
    let v1 = f.roster().green.clone().unwrap();
    moved.green.as_mut().unwrap().wraps[slot] = v1.wraps[slot].clone();
    assert_eq!(
        open_epoch_key(&moved, keys_of(&f, 1)).unwrap_err(),
        EpochKeyError::BadWrap(2)
    );
}

#[test]
fn epoch_seals_are_bound_to_their_envelope() {
    let f = Fixture::new(4, 1).unwrap();
    let author = keys_of(&f, 0);
    let reader = keys_of(&f, 2);
    let keys = epoch_keys(f.roster(), reader);
    let a = green(&f, f.roster(), 0, 1, Digest::ZERO, "a");
    let b = green(&f, f.roster(), 0, 2, a.id(), "b");
    // Moving a's wrap onto b, re-signed by the author, does not open.
    let mut moved = b.clone();
    moved.header.seal = a.header.seal.clone();
    let moved = Envelope::sign(moved.header, moved.payload, author);
    assert!(open_with(&moved, reader, &keys).is_err());
    // Changing epoch, key id, seq or created_at breaks the signature, and
    // even re-signed it no longer opens.
    type Edit = Box<dyn Fn(&mut Header)>;
    let edits: Vec<Edit> = vec![
        Box::new(|h| {
            if let Seal::Epoch { key_id, .. } = &mut h.seal {
                key_id.0[0] ^= 1;
            }
        }),
        Box::new(|h| h.seq += 1),
        Box::new(|h| h.created_at += 1),
    ];
    for edit in edits {
        let mut tampered = b.clone();
        edit(&mut tampered.header);
        assert!(tampered.verify().is_err());
        let resigned = Envelope::sign(tampered.header, tampered.payload, author);
        assert!(open_with(&resigned, reader, &keys).is_err());
    }
    // Every single-byte flip is rejected by decode, signature or open.
    let bytes = b.encode();
    let state = MemState::default();
    for pos in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut t = bytes.clone();
            t[pos] ^= mask;
            let caught = match validate(&t, NOW, f.roster(), &state) {
                Verdict::Reject(_) => true,
                Verdict::Ignore(_) => false,
                Verdict::Accept(a) => open_with(&a.envelope, reader, &keys).is_err(),
            };
            assert!(caught, "flip {mask:#x} at byte {pos} was not caught");
        }
    }
}

#[test]
fn equivocating_envelopes_never_share_a_keystream() {
    let f = Fixture::new(3, 1).unwrap();
    let keys = keys_of(&f, 0);
    let mut rng = rng();
    let one = seal(
        keys,
        f.roster(),
        bulletin_draft(1, Digest::ZERO, Tlp::Green, "AAAAAAAA", NOW),
        &[],
        &mut rng,
    )
    .unwrap();
    let two = seal(
        keys,
        f.roster(),
        bulletin_draft(1, Digest::ZERO, Tlp::Green, "BBBBBBBB", NOW),
        &[],
        &mut rng,
    )
    .unwrap();
    assert_eq!(one.header.core_hash(), two.header.core_hash());
    let p1 = bulletin_draft(1, Digest::ZERO, Tlp::Green, "AAAAAAAA", NOW)
        .body
        .encode();
    let p2 = bulletin_draft(1, Digest::ZERO, Tlp::Green, "BBBBBBBB", NOW)
        .body
        .encode();
    let xor = |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(x, y)| x ^ y).collect::<Vec<u8>>();
    assert_ne!(xor(&one.payload, &two.payload), xor(&p1, &p2));
}

#[test]
fn an_author_never_goes_back_to_an_older_epoch() {
    let f = Fixture::new(3, 1).unwrap();
    let v2 = f
        .roster()
        .rekeyed()
        .with_green_key(&fixture_green_key(2))
        .unwrap();
    let first = green(&f, &v2, 0, 1, Digest::ZERO, "under v2");
    let back = green(&f, f.roster(), 0, 2, first.id(), "under v1");
    let mut state = MemState::default();
    state.insert(&first.encode());
    assert_eq!(
        validate(&back.encode(), NOW, &v2, &state),
        Verdict::Reject(Rejection::EpochRegression {
            seq: 2,
            epoch: 1,
            previous: 2
        })
    );
    // The same epoch, or a newer one, is fine.
    let same = green(&f, &v2, 0, 2, first.id(), "still v2");
    assert!(matches!(
        validate(&same.encode(), NOW, &v2, &state),
        Verdict::Accept(_)
    ));
}

#[test]
fn legacy_rosters_and_envelopes_keep_their_bytes() {
    // A format-1 roster still seals GREEN per node with a v1 header, and a
    // keyed roster's v1 core keeps the format-1 hash.
    let legacy = Fixture::legacy(3, 1).unwrap();
    let env = green(&legacy, legacy.roster(), 0, 1, Digest::ZERO, "legacy");
    assert_eq!(env.header.version, 1);
    assert_eq!(env.header.seal.recipients().len(), 3);
    assert_eq!(legacy.roster.encode()[0], 1);
    let keyed = legacy.roster().clone().with_green_key(&[1; 32]).unwrap();
    assert_eq!(keyed.core_hash(), legacy.roster().hash());
    let mut signed = SignedRoster::unsigned(keyed);
    signed.sign(keys_of(&legacy, 0));
    let bytes = signed.encode();
    assert_eq!(bytes[0], 2);
    assert_eq!(SignedRoster::decode(&bytes).unwrap(), signed);
    // A format-2 roster without a package is not canonical.
    let mut bad = legacy.roster.encode();
    bad[0] = 2;
    assert!(SignedRoster::decode(&bad).is_err());
}

#[test]
fn v2_vectors_are_pinned() {
    let f = Fixture::new(3, 1).unwrap();
    let env = green(&f, f.roster(), 0, 1, Digest::ZERO, "Phishing wave");
    let roster_hash = f.roster().hash().to_hex();
    let env_hex = hex::encode(env.encode());
    let pinned_roster = "24417c4b375ca3c5bb2a0240cff4c69acf2df994c86f6827fd697046206027df";
    let pinned_env = "01022024417c4b375ca3c5bb2a0240cff4c69acf2df994c86f6827fd697046206027df2014ebfeb602b36637547513b5a0fe1cb9c1e454b6853901f0be09e8afae580b420120000000000000000000000000000000000000000000000000000000000000000080d8c1a28c3480e8bcf6953401000201083b033c816cb9de3130e9acbb708b5eada5755dde422dc2266d2e2e35d96481e6e17a30f0df5cdb0c840099fc4a590673f7f296c9adaf3196ba283d86cc266659c8407285b59ca3bc82fe1ae1e3fd6e57a661d6270e5c16355ab2b9f07b5d3351996f407842ae2c52d77c9ad5790a016bb05c24f256dca8b87ed7cbe878505b57c6d4b0e38e0fa6cad06181869bc9f7a79425705768599948988e5aad5e8398d2831a04";
    assert!(
        roster_hash == pinned_roster && env_hex == pinned_env,
        "v2 vectors changed:\n  roster hash {roster_hash}\n  envelope {env_hex}"
    );
}
