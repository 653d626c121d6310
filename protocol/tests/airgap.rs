//! Tests of the air-gap bundle file (`breakwater_protocol::airgap`): the
//! layout, a round trip with per-item summaries, file-level refusals,
//! truncation at every offset, tampered items refused one by one, damaged
//! length prefixes, and the import flow a node wraps (rosters applied as
//! roster sync does, envelopes validated as sync does, outcomes tallied).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use breakwater_protocol::airgap::{
    self, FileError, HEADER_LEN, ITEM_HEADER_LEN, ImportTally, ItemError, ItemSummary, MAGIC,
    MAX_FILE_BYTES, MAX_ITEMS, Outcome, Writer,
};
use breakwater_protocol::fixture::{Fixture, fixture_org};
use breakwater_protocol::*;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

const NOW: u64 = 1_790_000_000_000;

#[derive(Default)]
struct MemState {
    feeds: HashMap<(NodePublicKey, u64), Digest>,
    envelopes: HashMap<Digest, Vec<u8>>,
}

impl MemState {
    fn insert(&mut self, bytes: &[u8]) {
        let env = Envelope::decode(bytes).unwrap();
        self.feeds
            .insert((env.header.author, env.header.seq), env.id());
        self.envelopes.insert(env.id(), bytes.to_vec());
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
        Some(
            Envelope::decode(self.envelopes.get(id)?)
                .ok()?
                .header
                .author,
        )
    }
    fn frontier(&self, author: &NodePublicKey) -> u64 {
        let mut seq = 0;
        while self.feeds.contains_key(&(*author, seq + 1)) {
            seq += 1;
        }
        seq
    }
}

/// A consortium of three, a second roster version that adds a fourth
/// organisation, and envelopes of all four (the fourth's need version 2).
struct World {
    genesis: SignedRoster,
    v2: SignedRoster,
    envelopes: Vec<Envelope>,
}

fn world() -> World {
    let fixture = Fixture::legacy(3, 1).unwrap();
    let newcomer = fixture_org(3, 1);
    let mut v2 =
        SignedRoster::unsigned(fixture.roster().with_member(newcomer.card.clone()).unwrap());
    v2.sign(fixture.keys(0, 0).unwrap());
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut envelopes = Vec::new();
    let to = [fixture.orgs[1].org_id.clone()];
    let mut prev = Digest::ZERO;
    for (seq, tlp) in [(1, Tlp::Amber), (2, Tlp::Clear), (3, Tlp::Red)] {
        let draft = fixture::bulletin_draft(seq, prev, tlp, &format!("bulletin {seq}"), NOW);
        let envelope = seal(
            fixture.keys(0, 0).unwrap(),
            fixture.roster(),
            draft,
            if tlp.names_recipients() { &to[..] } else { &[] },
            &mut rng,
        )
        .unwrap();
        prev = envelope.id();
        envelopes.push(envelope);
    }
    let draft = fixture::bulletin_draft(1, Digest::ZERO, Tlp::Clear, "from the newcomer", NOW);
    envelopes.push(seal(&newcomer.keys[0], &v2.roster, draft, &[], &mut rng).unwrap());
    World {
        genesis: fixture.roster.clone(),
        v2,
        envelopes,
    }
}

fn file_of(world: &World) -> Vec<u8> {
    let mut writer = Writer::new();
    // Added out of order and twice: the file holds each once, rosters first.
    writer.add_roster(&world.v2).unwrap();
    writer.add_roster(&world.genesis).unwrap();
    writer.add_roster(&world.v2).unwrap();
    for envelope in &world.envelopes {
        writer.add_envelope(&envelope.encode()).unwrap();
    }
    writer.add_envelope(&world.envelopes[0].encode()).unwrap();
    assert_eq!(writer.counts(), (2, 4));
    writer.to_bytes()
}

/// Offsets and lengths of the items of an intact file.
fn item_spans(file: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = HEADER_LEN;
    while at < file.len() {
        let len = u32::from_be_bytes(file[at + 1..at + 5].try_into().unwrap()) as usize;
        spans.push((at, ITEM_HEADER_LEN + len));
        at += ITEM_HEADER_LEN + len;
    }
    spans
}

#[test]
fn a_file_round_trips_and_lists_what_each_item_is() {
    let world = world();
    let file = file_of(&world);
    assert_eq!(&file[..8], &MAGIC);
    assert_eq!(file[8], 1, "format version");
    assert_eq!(&file[9..13], &6u32.to_be_bytes(), "item count");
    assert_eq!(file[HEADER_LEN], airgap::KIND_ROSTER);
    let decoded = airgap::decode(&file).unwrap();
    assert!(decoded.is_intact());
    assert!(decoded.problems().is_empty());
    assert_eq!(decoded.declared, 6);
    let versions: Vec<(usize, u64)> = decoded
        .rosters()
        .iter()
        .map(|(i, r)| (*i, r.roster.version))
        .collect();
    assert_eq!(versions, [(0, 1), (1, 2)]);
    assert_eq!(decoded.rosters()[1].1, &world.v2);
    let carried: Vec<Vec<u8>> = decoded.envelopes().map(|(_, _, b)| b.to_vec()).collect();
    let expected: Vec<Vec<u8>> = world.envelopes.iter().map(Envelope::encode).collect();
    assert_eq!(carried, expected, "ciphertext bytes as stored, in order");
    let report = decoded.report();
    assert_eq!(report.len(), 6);
    assert!(matches!(
        report[0],
        ItemSummary::Roster {
            index: 0,
            version: 1,
            signatures: 1,
            ..
        }
    ));
    assert!(matches!(
        report[1],
        ItemSummary::Roster {
            index: 1,
            version: 2,
            ..
        }
    ));
    for (i, envelope) in world.envelopes.iter().enumerate() {
        let ItemSummary::Envelope {
            index,
            id,
            author,
            seq,
            tlp,
            kind,
            created_at,
            size,
        } = &report[i + 2]
        else {
            panic!("item {} is {:?}", i + 2, report[i + 2]);
        };
        assert_eq!(*index, i + 2);
        assert_eq!(*id, envelope.id());
        assert_eq!(*author, envelope.header.author);
        assert_eq!(*seq, envelope.header.seq);
        assert_eq!(*tlp, envelope.header.tlp);
        assert_eq!(*kind, "bulletin");
        assert_eq!(*created_at, NOW);
        assert_eq!(*size, envelope.encode().len());
    }
    let lines: Vec<String> = report.iter().map(ToString::to_string).collect();
    assert!(
        lines[0].starts_with("#0 roster v1 of consortium "),
        "{}",
        lines[0]
    );
    assert!(lines[2].contains("bulletin amber by "), "{}", lines[2]);
    // The file carries ciphertext: no sealed title appears in it.
    let text = String::from_utf8_lossy(&file);
    assert!(!text.contains("bulletin 1") && !text.contains("bulletin 3"));
    assert!(text.contains("bulletin 2"), "CLEAR is plaintext anyway");
}

#[test]
fn files_that_are_not_air_gap_files_are_refused_whole() {
    let world = world();
    let file = file_of(&world);
    assert_eq!(airgap::decode(&[]), Err(FileError::TooShort(0)));
    assert_eq!(airgap::decode(&file[..12]), Err(FileError::TooShort(12)));
    let mut magic = file.clone();
    magic[0] = b'X';
    assert_eq!(airgap::decode(&magic), Err(FileError::BadMagic));
    let mut version = file.clone();
    version[8] = 2;
    assert_eq!(airgap::decode(&version), Err(FileError::Version(2)));
    let mut count = file.clone();
    count[9..13].copy_from_slice(&(MAX_ITEMS + 1).to_be_bytes());
    assert_eq!(
        airgap::decode(&count),
        Err(FileError::TooManyItems(MAX_ITEMS + 1))
    );
    assert_eq!(
        airgap::check_file_size(MAX_FILE_BYTES + 1),
        Err(FileError::TooLarge(MAX_FILE_BYTES + 1))
    );
    assert_eq!(airgap::check_file_size(MAX_FILE_BYTES), Ok(()));
    assert!(
        FileError::BadMagic
            .to_string()
            .starts_with("not a Breakwater air-gap file")
    );
    // An envelope on its own is not an air-gap file.
    assert_eq!(
        airgap::decode(&world.envelopes[0].encode()),
        Err(FileError::BadMagic)
    );
}

#[test]
fn a_file_truncated_anywhere_keeps_its_whole_items_and_says_what_is_missing() {
    let world = world();
    let file = file_of(&world);
    let spans = item_spans(&file);
    assert_eq!(spans.len(), 6);
    for cut in 0..file.len() {
        let Ok(decoded) = airgap::decode(&file[..cut]) else {
            assert!(cut < HEADER_LEN, "cut {cut}");
            continue;
        };
        let whole = spans.iter().filter(|(at, len)| at + len <= cut).count();
        let ok = decoded.items.iter().filter(|i| i.content.is_ok()).count();
        assert_eq!(ok, whole, "cut {cut}");
        assert!(!decoded.is_intact(), "cut {cut}");
        assert_eq!(
            decoded.items.len() + decoded.missing as usize,
            6,
            "cut {cut}: every declared item is read or counted missing"
        );
        let partial = spans.iter().any(|(at, len)| *at < cut && cut < at + len);
        if partial {
            let last = decoded.items.last().unwrap();
            assert!(
                matches!(last.content, Err(ItemError::Truncated { .. })),
                "cut {cut}: {:?}",
                last.content
            );
        }
        // Either the cut item says it is truncated, or the file says items
        // are missing (a cut between items).
        assert!(partial || decoded.missing > 0, "cut {cut}");
        if decoded.missing > 0 {
            assert!(
                decoded.problems()[0].contains("were never read"),
                "cut {cut}"
            );
        }
    }
}

#[test]
fn a_tampered_envelope_is_refused_alone_with_its_reason() {
    let world = world();
    let file = file_of(&world);
    let spans = item_spans(&file);
    // Flip the last byte of item 3 (inside its signature) and a byte in
    // the middle of item 4 (its ciphertext or header).
    let mut tampered = file.clone();
    let (at3, len3) = spans[3];
    tampered[at3 + len3 - 1] ^= 0x01;
    let (at4, len4) = spans[4];
    tampered[at4 + len4 / 2] ^= 0x80;
    let decoded = airgap::decode(&tampered).unwrap();
    assert_eq!(decoded.items.len(), 6);
    assert_eq!(decoded.missing, 0);
    let refused: Vec<usize> = decoded.refused().map(|(i, _)| i).collect();
    assert_eq!(refused, [3, 4]);
    assert_eq!(
        decoded.items[3].content,
        Err(ItemError::Signature(
            Envelope::decode(&tampered[at3 + ITEM_HEADER_LEN..at3 + len3])
                .unwrap()
                .id()
        ))
    );
    let reason = decoded.report()[4].to_string();
    assert!(reason.starts_with("#4 refused: "), "{reason}");
    // The others are untouched.
    let carried: Vec<usize> = decoded.envelopes().map(|(i, _, _)| i).collect();
    assert_eq!(carried, [2, 5]);
    assert_eq!(decoded.rosters().len(), 2);
}

#[test]
fn damaged_item_headers_are_refused_and_reading_stops_only_when_it_must() {
    let world = world();
    let file = file_of(&world);
    let spans = item_spans(&file);
    // An unknown kind: that item is refused, its length is still trusted.
    let mut kind = file.clone();
    kind[spans[2].0] = 9;
    let decoded = airgap::decode(&kind).unwrap();
    assert_eq!(decoded.items[2].content, Err(ItemError::UnknownKind(9)));
    assert_eq!(decoded.items.len(), 6);
    assert_eq!(decoded.envelopes().count(), 3);
    // A length beyond any cap: refused, and nothing after it can be found.
    let mut length = file.clone();
    length[spans[3].0 + 1..spans[3].0 + 5].copy_from_slice(&u32::MAX.to_be_bytes());
    let decoded = airgap::decode(&length).unwrap();
    assert!(matches!(
        decoded.items[3].content,
        Err(ItemError::TooLarge { .. })
    ));
    assert_eq!(decoded.items.len(), 4);
    assert_eq!(decoded.missing, 2);
    // A roster item whose bytes are not a roster.
    let mut roster = file.clone();
    roster[spans[0].0 + ITEM_HEADER_LEN] = 0xee;
    let decoded = airgap::decode(&roster).unwrap();
    assert!(matches!(
        decoded.items[0].content,
        Err(ItemError::Roster(_))
    ));
    assert_eq!(decoded.rosters().len(), 1);
    // Bytes after the last declared item.
    let mut trailing = file.clone();
    trailing.extend_from_slice(b"junk");
    let decoded = airgap::decode(&trailing).unwrap();
    assert_eq!(decoded.trailing, 4);
    assert!(!decoded.is_intact());
    assert_eq!(decoded.envelopes().count(), 4);
    assert!(decoded.problems()[0].contains("4 unexpected bytes"));
}

#[test]
fn the_writer_takes_only_well_formed_signed_envelopes() {
    let world = world();
    let mut writer = Writer::new();
    let mut bytes = world.envelopes[0].encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(
        writer.add_envelope(&bytes),
        Err(airgap::WriteError::Envelope(ItemError::Signature(_)))
    ));
    assert!(matches!(
        writer.add_envelope(b"not an envelope"),
        Err(airgap::WriteError::Envelope(ItemError::Envelope(_)))
    ));
    assert_eq!(writer.counts(), (0, 0));
    let empty = airgap::decode(&writer.to_bytes()).unwrap();
    assert!(empty.is_intact());
    assert_eq!(empty.declared, 0);
}

/// What `breakwater import FILE` does, as a node would wrap it: apply the
/// rosters newer than its own in order (as roster sync does), validate each
/// envelope exactly as sync does, store what is accepted, and tally.
fn import(file: &[u8], roster: &mut Roster, state: &mut MemState) -> ImportTally {
    let decoded = airgap::decode(file).unwrap();
    let mut tally = ImportTally::of(&decoded);
    for (index, signed) in decoded.rosters() {
        if signed.roster.version <= roster.version {
            let same = signed.roster.version == roster.version && signed.roster == *roster;
            tally.record(
                index,
                if same || signed.roster.version < roster.version {
                    Outcome::AlreadyHeld
                } else {
                    Outcome::Refused("conflicts with the roster held".into())
                },
            );
            continue;
        }
        match SignedRoster::verify_update(roster, signed) {
            Ok(()) => {
                *roster = signed.roster.clone();
                tally.record(index, Outcome::Accepted);
            }
            Err(e) => tally.record(index, Outcome::Refused(e.to_string())),
        }
    }
    for (index, _, bytes) in decoded.envelopes() {
        match validate(bytes, NOW, roster, state) {
            Verdict::Accept(accepted) => {
                state.insert(&accepted.envelope.encode());
                tally.record(index, Outcome::Accepted);
            }
            Verdict::Ignore(IgnoreReason::Duplicate) => tally.record(index, Outcome::AlreadyHeld),
            Verdict::Ignore(reason) => tally.record(index, Outcome::Refused(reason.to_string())),
            Verdict::Reject(reason) => tally.record(index, Outcome::Refused(reason.to_string())),
        }
    }
    tally
}

#[test]
fn an_import_validates_as_sync_does_and_counts_each_outcome() {
    let world = world();
    let file = file_of(&world);
    let mut roster = world.genesis.roster.clone();
    let mut state = MemState::default();
    let first = import(&file, &mut roster, &mut state);
    assert_eq!(first.to_string(), "5 accepted, 1 already held, 0 refused");
    assert_eq!(
        roster.version, 2,
        "the newcomer's envelope needed version 2"
    );
    assert_eq!(state.envelopes.len(), 4);
    let again = import(&file, &mut roster, &mut state);
    assert_eq!(again.to_string(), "0 accepted, 6 already held, 0 refused");

    // Without version 2 the newcomer's envelope is refused, with the reason.
    let mut old_roster = world.genesis.roster.clone();
    let mut writer = Writer::new();
    writer.add_roster(&world.genesis).unwrap();
    writer.add_envelope(&world.envelopes[3].encode()).unwrap();
    let tally = import(
        &writer.to_bytes(),
        &mut old_roster,
        &mut MemState::default(),
    );
    assert_eq!(tally.accepted, 0);
    assert_eq!(tally.refused.len(), 1);
    assert!(tally.refused[0].1.contains("not a member"), "{tally}");

    // A tampered file: refused item by item, the rest imported.
    let spans = item_spans(&file);
    let mut tampered = file.clone();
    let (at, len) = spans[3];
    tampered[at + len - 1] ^= 0x01;
    // A roster signature byte flipped: it decodes, but does not verify.
    let (at1, len1) = spans[1];
    tampered[at1 + len1 - 1] ^= 0x01;
    tampered.truncate(spans[5].0 + 10);
    let mut roster = world.genesis.roster.clone();
    let mut state = MemState::default();
    let tally = import(&tampered, &mut roster, &mut state);
    assert_eq!(tally.accepted, 2, "{tally}");
    assert_eq!(tally.already_held, 1, "{tally}");
    let refused: Vec<usize> = {
        let mut r: Vec<usize> = tally.refused.iter().map(|(i, _)| *i).collect();
        r.sort();
        r
    };
    assert_eq!(refused, [1, 3, 5], "{tally}");
    let text = tally.to_string();
    assert!(
        text.starts_with("2 accepted, 1 already held, 3 refused"),
        "{text}"
    );
    assert!(text.contains("item #3: envelope "), "{text}");
    assert!(text.contains("item #5: truncated"), "{text}");
    assert_eq!(roster.version, 1);
}

#[test]
fn decoding_random_damage_never_panics_and_never_yields_an_altered_envelope() {
    let world = world();
    let file = file_of(&world);
    let originals: Vec<Vec<u8>> = world.envelopes.iter().map(Envelope::encode).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for round in 0..300 {
        let mut damaged = file.clone();
        let flips = rng.random_range(1..4);
        for _ in 0..flips {
            let at = rng.random_range(0..damaged.len());
            damaged[at] ^= 1 << rng.random_range(0..8);
        }
        if round % 3 == 0 {
            let cut = rng.random_range(0..damaged.len());
            damaged.truncate(cut);
        }
        let Ok(decoded) = airgap::decode(&damaged) else {
            continue;
        };
        for (_, _, bytes) in decoded.envelopes() {
            assert!(
                originals.iter().any(|o| o == bytes),
                "round {round}: an altered envelope passed"
            );
        }
        let _ = decoded.report();
    }
}

#[test]
fn two_rosters_of_one_version_are_both_listed_for_the_roster_path_to_judge() {
    let world = world();
    let fixture = Fixture::legacy(3, 1).unwrap();
    let mut fork = SignedRoster::unsigned(
        fixture
            .roster()
            .with_member(fixture_org(4, 1).card)
            .unwrap(),
    );
    fork.sign(fixture.keys(0, 0).unwrap());
    assert_eq!(fork.roster.version, 2);
    // The writer keeps one roster per version, so craft the file by hand.
    let mut file = MAGIC.to_vec();
    file.push(1);
    file.extend_from_slice(&2u32.to_be_bytes());
    for roster in [&world.v2, &fork] {
        let bytes = roster.encode();
        file.push(airgap::KIND_ROSTER);
        file.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
        file.extend_from_slice(&bytes);
    }
    let decoded = airgap::decode(&file).unwrap();
    assert!(decoded.is_intact());
    let listed: Vec<(usize, &SignedRoster)> = decoded.rosters();
    assert_eq!(listed, [(0, &world.v2), (1, &fork)]);
    let mut roster = world.genesis.roster.clone();
    let tally = import(&file, &mut roster, &mut MemState::default());
    assert_eq!(tally.accepted, 1);
    assert_eq!(
        tally.refused,
        [(1, "conflicts with the roster held".to_string())]
    );
    assert_eq!(roster, world.v2.roster);
}
