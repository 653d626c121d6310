//! The decoders under mutation, each as a [`Target`]: its valid seed
//! encodings, its structure-aware mutator (decode a seed, change one field,
//! re-encode without re-signing) and its check, which runs the decoder and
//! the validation a node runs after it and names any broken invariant.
//!
//! Invariants: a mutant of a signed object (envelope, roster, and those
//! carried inside sync responses) is never accepted unless its bytes equal
//! a seed's (for roster JSON: unless it parses to a seed's value); whatever
//! decodes re-encodes to something that decodes to the same value; and
//! nothing panics (the engine catches that).

use breakwater_node::api::{PublishBody, RetractBody, SightBody};
use breakwater_protocol::envelope::{HEADER_V1, HEADER_V2};
use breakwater_protocol::fixture::{Fixture, bulletin_draft, fixture_green_key, fixture_org};
use breakwater_protocol::sync::{MAX_BATCH_ITEMS, MAX_RANGES, MAX_ROSTERS};
use breakwater_protocol::{
    AuthorState, Body, Bulletin, Digest, Draft, Envelope, EpochKeys, Frontier, Indicator, KeyId,
    Kind, MemberCard, NodeKeys, NodePublicKey, Roster, Seal, SeqRange, Severity, SignedRoster,
    SyncRequest, SyncResponse, Tlp, Verdict, open_epoch_key, open_with, precheck_in, seal_with,
    validate,
};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::mutate;

/// What one check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The decoder took the input.
    pub decoded: bool,
    /// The node would act on it: a signed object verified, a body passed
    /// every check the API makes.
    pub accepted: bool,
    /// A broken invariant, if any.
    pub problem: Option<String>,
}

impl Outcome {
    fn rejected() -> Outcome {
        Outcome::default()
    }

    fn decoded(accepted: bool) -> Outcome {
        Outcome {
            decoded: true,
            accepted,
            problem: None,
        }
    }

    fn broken(mut self, problem: impl Into<String>) -> Outcome {
        self.problem = Some(problem.into());
        self
    }
}

/// One decoder under test.
pub trait Target: Sync {
    /// Its name in reports and on the command line.
    fn name(&self) -> &'static str;
    /// Valid encodings that mutation starts from.
    fn seeds(&self) -> &[Vec<u8>];
    /// A structure-aware mutant of seed `seed`: decoded, one field
    /// changed, re-encoded (never re-signed). `None` when nothing applies.
    fn structured(&self, rng: &mut ChaCha8Rng, seed: usize) -> Option<(Vec<u8>, String)>;
    /// Runs the decoder and the validation after it on `input`.
    fn check(&self, input: &[u8]) -> Outcome;
}

/// The time every check runs at (unix ms).
const NOW: u64 = 1_800_000_000_000;

/// An author state that knows nothing: every seq is new.
struct Empty;

impl AuthorState for Empty {
    fn id_at(&self, _: &NodePublicKey, _: u64) -> Option<Digest> {
        None
    }
    fn envelope(&self, _: &Digest) -> Option<Vec<u8>> {
        None
    }
    fn author_of(&self, _: &Digest) -> Option<NodePublicKey> {
        None
    }
    fn frontier(&self, _: &NodePublicKey) -> u64 {
        0
    }
}

/// The consortia, keys and valid objects every target draws on.
#[derive(Debug)]
pub struct World {
    /// A consortium past its flag day (format-2 roster, v2 envelopes).
    keyed: Fixture,
    /// A consortium from before protocol v2 (format-1 roster, v1 envelopes).
    legacy: Fixture,
    /// Every valid envelope (v1 and v2; CLEAR, GREEN per node and under the
    /// epoch key, AMBER, RED; bulletins, retractions, sightings).
    envelopes: Vec<Vec<u8>>,
    /// Every valid signed roster (formats 1 and 2, genesis and updates).
    rosters: Vec<Vec<u8>>,
    /// The GREEN key of the keyed genesis, as node 0 holds it.
    epoch_keys: EpochKeys,
    /// Node 0's keys (a recipient of everything sealed here).
    reader: NodeKeys,
    /// The consortium ids of `keyed` and `legacy`, computed once.
    consortia: [Digest; 2],
}

fn bulletin(title: &str) -> Bulletin {
    let mut b = Bulletin::new(title, Severity::High);
    b.summary = "Phishing wave against the gate appointment system.\nBlock at the edge.".into();
    b.tags = vec!["phishing".into(), "gate".into()];
    b.indicators = ["ipv4:203.0.113.7", "domain:gate-appt.example"]
        .iter()
        .filter_map(|text| Indicator::parse(text).ok())
        .collect();
    b
}

impl World {
    /// Builds the fixtures and seals the seed envelopes (deterministic).
    pub fn new() -> anyhow::Result<World> {
        let keyed = Fixture::new(4, 1)?;
        let legacy = Fixture::legacy(4, 1)?;
        let mut rng = ChaCha8Rng::seed_from_u64(0xf022);
        let key = |f: &Fixture, org: usize| -> anyhow::Result<NodeKeys> {
            f.keys(org, 0)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("fixture has no org {org}"))
        };
        let org = |f: &Fixture, org: usize| f.orgs[org].org_id.clone();
        let mut envelopes = Vec::new();
        for (fixture, version) in [(&keyed, HEADER_V2), (&legacy, HEADER_V1)] {
            let roster = fixture.roster();
            let author = key(fixture, 0)?;
            let epoch = open_epoch_key(roster, &author).ok();
            let mut prev = Digest::ZERO;
            let mut first = Digest::ZERO;
            let plan: [(Tlp, Vec<_>, Option<Kind>); 5] = [
                (Tlp::Clear, vec![], None),
                (Tlp::Green, vec![], None),
                (Tlp::Amber, vec![org(fixture, 1)], None),
                (Tlp::Red, vec![org(fixture, 2)], None),
                (
                    Tlp::Green,
                    vec![],
                    Some(Kind::Retraction {
                        target: Digest::ZERO,
                    }),
                ),
            ];
            for (i, (tlp, to, kind)) in plan.into_iter().enumerate() {
                let seq = i as u64 + 1;
                let mut draft =
                    bulletin_draft(seq, prev, tlp, &format!("Seed {version}.{seq}"), NOW);
                draft.body = Body::Bulletin(bulletin(&format!("Seed {version}.{seq}")));
                if kind.is_some() {
                    draft.kind = Kind::Retraction { target: first };
                    draft.body = Body::Retraction {
                        reason: "false positive".into(),
                    };
                }
                let envelope = seal_with(&author, roster, epoch.as_ref(), draft, &to, &mut rng)?;
                prev = envelope.id();
                if seq == 1 {
                    first = prev;
                }
                envelopes.push(envelope.encode());
            }
            // A sighting by another org, GREEN one wrap per node (no epoch key).
            let other = key(fixture, 1)?;
            let draft = Draft {
                seq: 1,
                prev: Digest::ZERO,
                created_at: NOW,
                expires_at: NOW + 86_400_000,
                tlp: Tlp::Green,
                kind: Kind::Sighting { target: first },
                body: Body::Sighting {
                    indicator: Indicator::parse("ipv4:203.0.113.7")?,
                    seen_at: NOW - 1000,
                    note: Some("seen at gate 4".into()),
                },
            };
            envelopes.push(seal_with(&other, roster, None, draft, &[], &mut rng)?.encode());
        }
        let mut rosters = vec![keyed.roster.encode(), legacy.roster.encode()];
        let newcomer = fixture_org(4, 1).card;
        for (fixture, keyed_format) in [(&keyed, true), (&legacy, false)] {
            let next = fixture.roster().with_member(newcomer.clone())?;
            let next = if keyed_format {
                next.with_green_key(&fixture_green_key(2))?
            } else {
                next
            };
            let mut signed = SignedRoster::unsigned(next);
            signed.sign(&key(fixture, 0)?);
            SignedRoster::verify_update(fixture.roster(), &signed)?;
            rosters.push(signed.encode());
        }
        let reader = key(&keyed, 0)?;
        let mut epoch_keys = EpochKeys::new();
        if let Ok(k) = open_epoch_key(keyed.roster(), &reader) {
            epoch_keys.insert(k.epoch, k);
        }
        let consortia = [
            keyed.roster().consortium_id(),
            legacy.roster().consortium_id(),
        ];
        let world = World {
            consortia,
            keyed,
            legacy,
            envelopes,
            rosters,
            epoch_keys,
            reader,
        };
        for seed in &world.envelopes {
            let accepted = world.authorities().into_iter().any(|roster| {
                matches!(
                    validate(seed, NOW + 1000, roster, &Empty),
                    Verdict::Accept(_)
                )
            });
            anyhow::ensure!(
                accepted && world.envelope_accepted(seed),
                "a seed envelope is invalid"
            );
        }
        for seed in &world.rosters {
            anyhow::ensure!(world.roster_accepted(seed), "a seed roster is invalid");
        }
        Ok(world)
    }

    fn authorities(&self) -> [&Roster; 2] {
        [self.keyed.roster(), self.legacy.roster()]
    }

    /// Whether a node of either consortium could accept `bytes`: it passes
    /// `precheck` (decode, consortium, author, signature, CLEAR body).
    /// `validate` runs `precheck` first and then only adds refusals, so
    /// what fails here is never accepted (the seeds check that `validate`
    /// accepts each seed).
    fn envelope_accepted(&self, bytes: &[u8]) -> bool {
        self.authorities()
            .into_iter()
            .zip(self.consortia)
            .any(|(roster, consortium)| precheck_in(bytes, roster, consortium).is_ok())
    }

    /// Whether a node would take this signed roster: as a genesis, or as
    /// the successor of either consortium's genesis.
    fn signed_roster_accepted(&self, roster: &SignedRoster) -> bool {
        roster.verify_genesis().is_ok()
            || self
                .authorities()
                .iter()
                .any(|current| SignedRoster::verify_update(current, roster).is_ok())
    }

    fn roster_accepted(&self, bytes: &[u8]) -> bool {
        SignedRoster::decode(bytes).is_ok_and(|r| self.signed_roster_accepted(&r))
    }

    /// The targets, in report order.
    pub fn targets(&self) -> anyhow::Result<Vec<Box<dyn Target + '_>>> {
        Ok(vec![
            Box::new(EnvelopeTarget { world: self }),
            Box::new(RosterTarget { world: self }),
            Box::new(CardTarget::new(self)),
            Box::new(SyncRequestTarget::new(self)),
            Box::new(SyncResponseTarget::new(self)),
            Box::new(ApiTarget::publish()?),
            Box::new(ApiTarget::retract()?),
            Box::new(ApiTarget::sighting()?),
            Box::new(RosterJsonTarget::new(self)?),
        ])
    }
}

fn pick<T>(rng: &mut ChaCha8Rng, items: &[T]) -> usize {
    rng.random_range(0..items.len().max(1))
}

fn flip(rng: &mut ChaCha8Rng, bytes: &mut [u8]) {
    if !bytes.is_empty() {
        let i = rng.random_range(0..bytes.len());
        bytes[i] ^= 1 << rng.random_range(0..8u32);
    }
}

/// Whether a decoded value re-encodes to something that decodes equal.
fn round_trips<T: PartialEq, E>(
    value: &T,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> Result<T, E>,
) -> bool {
    decode(&encode(value)).is_ok_and(|again| &again == value)
}

// ------------------------------------------------------------- envelopes

struct EnvelopeTarget<'a> {
    world: &'a World,
}

/// Changes one field of a decoded envelope (never re-signed).
fn mutate_envelope(world: &World, rng: &mut ChaCha8Rng, e: &mut Envelope) -> String {
    let h = &mut e.header;
    let others: Vec<NodePublicKey> = world
        .keyed
        .orgs
        .iter()
        .flat_map(|o| o.keys.iter().map(NodeKeys::node_public))
        .collect();
    match rng.random_range(0..16u32) {
        0 => {
            h.seq = [0, 1, 2, h.seq + 1, h.seq.wrapping_sub(1), u64::MAX][rng.random_range(0..6)];
            format!("seq {}", h.seq)
        }
        1 => {
            flip(rng, &mut h.prev.0);
            "prev flipped".into()
        }
        2 => {
            h.created_at = [0, h.created_at + 1, NOW + 3_600_000, h.expires_at, u64::MAX]
                [rng.random_range(0..5)];
            format!("created_at {}", h.created_at)
        }
        3 => {
            h.expires_at = [0, h.expires_at + 1, h.created_at, u64::MAX][rng.random_range(0..4)];
            format!("expires_at {}", h.expires_at)
        }
        4 => {
            h.tlp = [
                Tlp::Clear,
                Tlp::Green,
                Tlp::Amber,
                Tlp::AmberStrict,
                Tlp::Red,
            ][rng.random_range(0..5)];
            format!("tlp {}", h.tlp)
        }
        5 => {
            let target = Digest([rng.random::<u8>(); 32]);
            h.kind = [
                Kind::Bulletin,
                Kind::Retraction { target },
                Kind::Sighting { target },
            ][rng.random_range(0..3)];
            format!("kind {}", h.kind.as_str())
        }
        6 => {
            h.author = others[pick(rng, &others)];
            "author swapped for another member".into()
        }
        7 => {
            flip(rng, &mut h.consortium.0);
            "consortium flipped".into()
        }
        8 => {
            h.version = if h.version == HEADER_V1 {
                HEADER_V2
            } else {
                HEADER_V1
            };
            format!("header version {}", h.version)
        }
        9 => match &mut h.seal {
            Seal::Nodes(recipients) if !recipients.is_empty() => {
                let i = rng.random_range(0..recipients.len());
                match rng.random_range(0..4u32) {
                    0 => {
                        recipients.remove(i);
                        "a recipient dropped".into()
                    }
                    1 => {
                        let copy = recipients[i].clone();
                        recipients.push(copy);
                        "a recipient duplicated".into()
                    }
                    2 => {
                        flip(rng, &mut recipients[i].wrap);
                        "a wrap flipped".into()
                    }
                    _ => {
                        flip(rng, &mut recipients[i].key_id.0);
                        "a recipient key id flipped".into()
                    }
                }
            }
            Seal::Epoch {
                epoch,
                key_id,
                wrap,
            } => match rng.random_range(0..3u32) {
                0 => {
                    *epoch = [0, *epoch + 1, u64::MAX][rng.random_range(0..3)];
                    format!("epoch {epoch}")
                }
                1 => {
                    flip(rng, &mut key_id.0);
                    "epoch key id flipped".into()
                }
                _ => {
                    flip(rng, wrap);
                    "epoch wrap flipped".into()
                }
            },
            _ => {
                h.seal = Seal::Epoch {
                    epoch: 1,
                    key_id: KeyId([0; 8]),
                    wrap: vec![0; 48],
                };
                "seal replaced by an epoch seal".into()
            }
        },
        10 => {
            h.seal = [
                Seal::Clear,
                Seal::Nodes(Vec::new()),
                Seal::Epoch {
                    epoch: 1,
                    key_id: KeyId([1; 8]),
                    wrap: vec![7; 48],
                },
            ][rng.random_range(0..3)]
            .clone();
            format!("seal {}", h.seal.as_str())
        }
        11 | 12 => {
            flip(rng, &mut e.payload);
            "payload flipped".into()
        }
        13 => {
            let n = rng.random_range(0..=e.payload.len());
            e.payload.truncate(n);
            format!("payload truncated to {n}")
        }
        14 => {
            e.payload.extend_from_slice(&[0u8; 16]);
            "payload extended".into()
        }
        _ => {
            flip(rng, &mut e.signature.0);
            "signature flipped".into()
        }
    }
}

impl EnvelopeTarget<'_> {
    /// Decodes, validates under both consortia, and opens what decodes.
    fn check_envelope(world: &World, input: &[u8]) -> Outcome {
        let Ok(envelope) = Envelope::decode(input) else {
            return Outcome::rejected();
        };
        let accepted = world.envelope_accepted(input);
        let outcome = Outcome::decoded(accepted);
        if envelope.encode() != input {
            return outcome.broken("decoded envelope re-encodes to other bytes");
        }
        // A node opens only what it accepted; opening must still never panic.
        let _ = open_with(&envelope, &world.reader, &world.epoch_keys);
        if accepted && !world.envelopes.iter().any(|seed| seed == input) {
            return outcome.broken("a mutated envelope was accepted");
        }
        outcome
    }
}

impl Target for EnvelopeTarget<'_> {
    fn name(&self) -> &'static str {
        "envelope"
    }

    fn seeds(&self) -> &[Vec<u8>] {
        &self.world.envelopes
    }

    fn structured(&self, rng: &mut ChaCha8Rng, seed: usize) -> Option<(Vec<u8>, String)> {
        let mut envelope = Envelope::decode(self.world.envelopes.get(seed)?).ok()?;
        let what = mutate_envelope(self.world, rng, &mut envelope);
        Some((envelope.encode(), what))
    }

    fn check(&self, input: &[u8]) -> Outcome {
        EnvelopeTarget::check_envelope(self.world, input)
    }
}

// --------------------------------------------------------------- rosters

struct RosterTarget<'a> {
    world: &'a World,
}

/// Changes one field of a decoded signed roster (never re-signed).
fn mutate_roster(world: &World, rng: &mut ChaCha8Rng, s: &mut SignedRoster) -> String {
    let r = &mut s.roster;
    match rng.random_range(0..14u32) {
        0 => {
            r.version = [0, 1, 2, 3, u64::MAX][rng.random_range(0..5)];
            format!("version {}", r.version)
        }
        1 => {
            flip(rng, &mut r.prev.0);
            "prev flipped".into()
        }
        2 => {
            flip(rng, &mut r.consortium.0);
            "consortium flipped".into()
        }
        3 => {
            r.name = ["", "x", "San Pedro Bay\u{1b}[2J", "Evil Bay"][rng.random_range(0..4)].into();
            format!("name {:?}", r.name)
        }
        4 => {
            r.threshold = [0, 1, 2, u32::MAX][rng.random_range(0..4)];
            format!("threshold {}", r.threshold)
        }
        5 => {
            let i = pick(rng, &r.members);
            if let Some(m) = r.members.get_mut(i) {
                m.revoked = !m.revoked;
            }
            "a member's revocation toggled".into()
        }
        6 => {
            let card = world.keyed.orgs[rng.random_range(0..world.keyed.orgs.len())]
                .card
                .clone();
            r.members.push(breakwater_protocol::Member {
                card,
                revoked: false,
            });
            "a member duplicated".into()
        }
        7 => {
            let i = pick(rng, &r.members);
            if let Some(node) = r.members.get_mut(i).and_then(|m| m.card.nodes.first_mut()) {
                if rng.random_bool(0.5) {
                    flip(rng, &mut node.node_key.0);
                } else {
                    flip(rng, &mut node.sealing_key.0);
                }
            }
            "a node or sealing key flipped".into()
        }
        8 => {
            let i = pick(rng, &r.members);
            if let Some(node) = r.members.get_mut(i).and_then(|m| m.card.nodes.first_mut()) {
                node.addrs.push("/ip4/198.51.100.9/tcp/7400".into());
            }
            "an address added".into()
        }
        9 => {
            let admin = world.keyed.orgs[rng.random_range(0..world.keyed.orgs.len())]
                .org_id
                .clone();
            r.admins.push(admin);
            "an admin added".into()
        }
        10 if r.green.is_some() && rng.random_bool(0.3) => {
            r.green = None;
            "GREEN package removed".into()
        }
        10 => match &mut r.green {
            Some(package) => {
                if rng.random_bool(0.5) {
                    flip(rng, &mut package.commit.0);
                    "GREEN commit flipped".into()
                } else {
                    let i = pick(rng, &package.wraps);
                    if let Some(w) = package.wraps.get_mut(i) {
                        flip(rng, &mut w.wrap);
                    }
                    "a GREEN wrap flipped".into()
                }
            }
            None => {
                r.members.clear();
                "members cleared".into()
            }
        },
        11 => {
            s.signatures.clear();
            "signatures dropped".into()
        }
        12 => {
            if let Some(sig) = s.signatures.first().cloned() {
                s.signatures.push(sig);
            }
            "a signature duplicated".into()
        }
        _ => {
            let i = pick(rng, &s.signatures);
            if let Some(sig) = s.signatures.get_mut(i) {
                if rng.random_bool(0.5) {
                    flip(rng, &mut sig.signature.0);
                } else {
                    flip(rng, &mut sig.signer.0);
                }
            }
            "a signature or signer flipped".into()
        }
    }
}

impl Target for RosterTarget<'_> {
    fn name(&self) -> &'static str {
        "roster"
    }

    fn seeds(&self) -> &[Vec<u8>] {
        &self.world.rosters
    }

    fn structured(&self, rng: &mut ChaCha8Rng, seed: usize) -> Option<(Vec<u8>, String)> {
        let mut roster = SignedRoster::decode(self.world.rosters.get(seed)?).ok()?;
        let what = mutate_roster(self.world, rng, &mut roster);
        Some((roster.encode(), what))
    }

    fn check(&self, input: &[u8]) -> Outcome {
        check_roster_bytes(self.world, input)
    }
}

fn check_roster_bytes(world: &World, input: &[u8]) -> Outcome {
    let Ok(roster) = SignedRoster::decode(input) else {
        return Outcome::rejected();
    };
    let accepted = world.signed_roster_accepted(&roster);
    let outcome = Outcome::decoded(accepted);
    if roster.encode() != input {
        return outcome.broken("decoded roster re-encodes to other bytes");
    }
    if accepted && !world.rosters.iter().any(|seed| seed == input) {
        return outcome.broken("a mutated signed roster was accepted");
    }
    outcome
}

// ---------------------------------------------------------- roster JSON

/// `POST /v1/roster` (and `join FILE`): a signed roster as JSON.
struct RosterJsonTarget<'a> {
    world: &'a World,
    seeds: Vec<Vec<u8>>,
    values: Vec<SignedRoster>,
}

impl<'a> RosterJsonTarget<'a> {
    fn new(world: &'a World) -> anyhow::Result<RosterJsonTarget<'a>> {
        let values: Vec<SignedRoster> = world
            .rosters
            .iter()
            .map(|bytes| SignedRoster::decode(bytes))
            .collect::<Result<_, _>>()?;
        let seeds = values.iter().map(|r| r.to_json().into_bytes()).collect();
        Ok(RosterJsonTarget {
            world,
            seeds,
            values,
        })
    }
}

impl Target for RosterJsonTarget<'_> {
    fn name(&self) -> &'static str {
        "api-roster"
    }

    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }

    fn structured(&self, rng: &mut ChaCha8Rng, seed: usize) -> Option<(Vec<u8>, String)> {
        mutate::json(rng, self.seeds.get(seed)?)
    }

    fn check(&self, input: &[u8]) -> Outcome {
        let Ok(roster) = serde_json::from_slice::<SignedRoster>(input) else {
            return Outcome::rejected();
        };
        let accepted = self.world.signed_roster_accepted(&roster);
        let outcome = Outcome::decoded(accepted);
        if !round_trips(
            &roster,
            |r| r.to_json().into_bytes(),
            |b| serde_json::from_slice::<SignedRoster>(b),
        ) {
            return outcome.broken("roster JSON does not round-trip");
        }
        if accepted && !self.values.contains(&roster) {
            return outcome.broken("a mutated signed roster (JSON) was accepted");
        }
        outcome
    }
}

// ----------------------------------------------------------------- cards

/// Member cards as `consortium create/add` read them (JSON, then checked).
struct CardTarget {
    seeds: Vec<Vec<u8>>,
}

impl CardTarget {
    fn new(world: &World) -> CardTarget {
        let seeds = world
            .keyed
            .orgs
            .iter()
            .enumerate()
            .map(|(i, org)| {
                let mut card = org.card.clone();
                if let Some(node) = card.nodes.first_mut() {
                    node.addrs = vec![format!("/ip4/127.0.0.1/tcp/{}", 7400 + i)];
                }
                card.to_json().into_bytes()
            })
            .collect();
        CardTarget { seeds }
    }
}

impl Target for CardTarget {
    fn name(&self) -> &'static str {
        "card"
    }

    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }

    fn structured(&self, rng: &mut ChaCha8Rng, seed: usize) -> Option<(Vec<u8>, String)> {
        mutate::json(rng, self.seeds.get(seed)?)
    }

    fn check(&self, input: &[u8]) -> Outcome {
        let Ok(text) = std::str::from_utf8(input) else {
            return Outcome::rejected();
        };
        let decoded = serde_json::from_str::<MemberCard>(text).is_ok();
        match MemberCard::from_json(text) {
            Ok(card) => {
                let outcome = Outcome::decoded(true);
                if MemberCard::from_json(&card.to_json()).ok().as_ref() != Some(&card) {
                    return outcome.broken("an accepted card does not round-trip");
                }
                outcome
            }
            Err(_) => Outcome {
                decoded,
                ..Outcome::default()
            },
        }
    }
}

// ------------------------------------------------------------------ sync

/// Every request variant; `request_variant` must name each.
const REQUEST_VARIANTS: [&str; 4] = ["hello", "hello-v1", "ranges", "rosters"];
/// Every response variant; `response_variant` must name each.
const RESPONSE_VARIANTS: [&str; 6] = [
    "in-sync",
    "frontier",
    "frontier-v1",
    "envelopes",
    "rosters",
    "refused",
];

/// Exhaustive on purpose: a new variant does not compile until it is named
/// here, in [`REQUEST_VARIANTS`] and among the seeds.
fn request_variant(request: &SyncRequest) -> &'static str {
    match request {
        SyncRequest::Hello { .. } => "hello",
        SyncRequest::HelloV1 { .. } => "hello-v1",
        SyncRequest::Ranges(_) => "ranges",
        SyncRequest::Rosters { .. } => "rosters",
    }
}

/// Exhaustive on purpose, as [`request_variant`].
fn response_variant(response: &SyncResponse) -> &'static str {
    match response {
        SyncResponse::InSync => "in-sync",
        SyncResponse::Frontier { .. } => "frontier",
        SyncResponse::FrontierV1 { .. } => "frontier-v1",
        SyncResponse::Envelopes { .. } => "envelopes",
        SyncResponse::Rosters(_) => "rosters",
        SyncResponse::Refused(_) => "refused",
    }
}

fn authors(world: &World) -> Vec<NodePublicKey> {
    world
        .keyed
        .orgs
        .iter()
        .flat_map(|o| o.keys.iter().map(NodeKeys::node_public))
        .collect()
}

struct SyncRequestTarget<'a> {
    world: &'a World,
    seeds: Vec<Vec<u8>>,
}

impl<'a> SyncRequestTarget<'a> {
    fn new(world: &'a World) -> SyncRequestTarget<'a> {
        let authors = authors(world);
        let frontier = Frontier(authors.iter().map(|a| (*a, 5)).collect());
        let requests = [
            SyncRequest::Hello {
                digest: frontier.digest(),
                roster_version: 2,
                roster_hash: frontier.digest(),
            },
            SyncRequest::HelloV1 {
                digest: frontier.digest(),
                roster_version: 2,
            },
            SyncRequest::Ranges(
                authors
                    .iter()
                    .map(|a| SeqRange {
                        author: *a,
                        from: 1,
                        to: 20,
                    })
                    .collect(),
            ),
            SyncRequest::Rosters { after: 1 },
        ];
        SyncRequestTarget {
            world,
            seeds: requests.iter().map(SyncRequest::encode).collect(),
        }
    }
}

impl Target for SyncRequestTarget<'_> {
    fn name(&self) -> &'static str {
        "sync-request"
    }

    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }

    fn structured(&self, rng: &mut ChaCha8Rng, seed: usize) -> Option<(Vec<u8>, String)> {
        let mut request = SyncRequest::decode(self.seeds.get(seed)?).ok()?;
        let what = match &mut request {
            SyncRequest::Hello {
                digest,
                roster_version,
                ..
            }
            | SyncRequest::HelloV1 {
                digest,
                roster_version,
            } => {
                if rng.random_bool(0.5) {
                    flip(rng, &mut digest.0);
                    "hello digest flipped".to_string()
                } else {
                    *roster_version = [0, u64::MAX][rng.random_range(0..2)];
                    format!("hello roster_version {roster_version}")
                }
            }
            SyncRequest::Ranges(ranges) => match rng.random_range(0..4u32) {
                0 => {
                    let i = pick(rng, ranges);
                    if let Some(r) = ranges.get_mut(i) {
                        r.from = 0;
                    }
                    "a range from 0".into()
                }
                1 => {
                    let i = pick(rng, ranges);
                    if let Some(r) = ranges.get_mut(i) {
                        r.to = r.from.saturating_sub(1);
                        r.from = u64::MAX;
                    }
                    "an inverted range".into()
                }
                2 => {
                    let copy = ranges.first().copied()?;
                    ranges.resize(MAX_RANGES + 1, copy);
                    format!("{} ranges", MAX_RANGES + 1)
                }
                _ => {
                    let authors = authors(self.world);
                    let i = pick(rng, ranges);
                    if let Some(r) = ranges.get_mut(i) {
                        r.author = authors[pick(rng, &authors)];
                        r.to = u64::MAX;
                    }
                    "a range to u64::MAX".into()
                }
            },
            SyncRequest::Rosters { after } => {
                *after = [0, u64::MAX][rng.random_range(0..2)];
                format!("rosters after {after}")
            }
        };
        Some((request.encode(), what))
    }

    fn check(&self, input: &[u8]) -> Outcome {
        let Ok(request) = SyncRequest::decode(input) else {
            return Outcome::rejected();
        };
        let outcome = Outcome::decoded(true);
        if !round_trips(&request, SyncRequest::encode, SyncRequest::decode) {
            return outcome.broken("sync request does not round-trip");
        }
        if let SyncRequest::Ranges(ranges) = &request
            && (ranges.len() > MAX_RANGES || ranges.iter().any(|r| r.from == 0 || r.from > r.to))
        {
            return outcome.broken("a sync request past its caps decoded");
        }
        outcome
    }
}

struct SyncResponseTarget<'a> {
    world: &'a World,
    seeds: Vec<Vec<u8>>,
}

impl<'a> SyncResponseTarget<'a> {
    fn new(world: &'a World) -> SyncResponseTarget<'a> {
        let frontier = Frontier(authors(world).iter().map(|a| (*a, 5)).collect());
        let responses = [
            SyncResponse::InSync,
            SyncResponse::Frontier {
                frontier: frontier.clone(),
                roster_version: 2,
                roster_hash: frontier.digest(),
            },
            SyncResponse::FrontierV1 {
                frontier,
                roster_version: 2,
            },
            SyncResponse::Envelopes {
                items: world.envelopes.clone(),
                more: true,
            },
            SyncResponse::Rosters(world.rosters.clone()),
            SyncResponse::Refused("busy".into()),
        ];
        SyncResponseTarget {
            world,
            seeds: responses.iter().map(SyncResponse::encode).collect(),
        }
    }
}

impl Target for SyncResponseTarget<'_> {
    fn name(&self) -> &'static str {
        "sync-response"
    }

    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }

    fn structured(&self, rng: &mut ChaCha8Rng, seed: usize) -> Option<(Vec<u8>, String)> {
        let mut response = SyncResponse::decode(self.seeds.get(seed)?).ok()?;
        if response == SyncResponse::InSync {
            let refused = SyncResponse::Refused(String::new());
            return Some((
                refused.encode(),
                "in-sync replaced by an empty refusal".into(),
            ));
        }
        let what = match &mut response {
            SyncResponse::InSync => "in-sync".to_string(),
            SyncResponse::Frontier {
                frontier,
                roster_version,
                ..
            }
            | SyncResponse::FrontierV1 {
                frontier,
                roster_version,
            } => match rng.random_range(0..3u32) {
                0 => {
                    for seq in frontier.0.values_mut() {
                        *seq = u64::MAX;
                    }
                    "frontier at u64::MAX".into()
                }
                1 => {
                    frontier.0.clear();
                    "frontier emptied".into()
                }
                _ => {
                    *roster_version = u64::MAX;
                    "roster_version u64::MAX".into()
                }
            },
            SyncResponse::Envelopes { items, more } => match rng.random_range(0..4u32) {
                0 | 1 => {
                    let i = pick(rng, items);
                    let item = items.get_mut(i)?;
                    let what = if let Ok(mut envelope) = Envelope::decode(item) {
                        let what = mutate_envelope(self.world, rng, &mut envelope);
                        *item = envelope.encode();
                        what
                    } else {
                        "none".into()
                    };
                    format!("item {i}: {what}")
                }
                2 => {
                    items.resize(MAX_BATCH_ITEMS + 1, Vec::new());
                    format!("{} items", MAX_BATCH_ITEMS + 1)
                }
                _ => {
                    *more = !*more;
                    "more toggled".into()
                }
            },
            SyncResponse::Rosters(rosters) => match rng.random_range(0..3u32) {
                0 | 1 => {
                    let i = pick(rng, rosters);
                    let item = rosters.get_mut(i)?;
                    let what = if let Ok(mut roster) = SignedRoster::decode(item) {
                        let what = mutate_roster(self.world, rng, &mut roster);
                        *item = roster.encode();
                        what
                    } else {
                        "none".into()
                    };
                    format!("roster {i}: {what}")
                }
                _ => {
                    rosters.resize(MAX_ROSTERS + 1, Vec::new());
                    format!("{} rosters", MAX_ROSTERS + 1)
                }
            },
            SyncResponse::Refused(reason) => {
                *reason = "\u{1b}[2J".repeat(rng.random_range(1..1000));
                "refusal with control characters".into()
            }
        };
        Some((response.encode(), what))
    }

    fn check(&self, input: &[u8]) -> Outcome {
        let Ok(response) = SyncResponse::decode(input) else {
            return Outcome::rejected();
        };
        let mut outcome = Outcome::decoded(true);
        if !round_trips(&response, SyncResponse::encode, SyncResponse::decode) {
            return outcome.broken("sync response does not round-trip");
        }
        // What a node does with what it decoded: validate every envelope
        // and roster it carries.
        match &response {
            SyncResponse::Envelopes { items, .. } => {
                // Items equal to a seed are known good: check only the others.
                for item in items.iter().filter(|i| !self.world.envelopes.contains(i)) {
                    let inner = EnvelopeTarget::check_envelope(self.world, item);
                    if inner.problem.is_some() {
                        return Outcome {
                            problem: inner.problem.map(|p| format!("inside a batch: {p}")),
                            ..outcome
                        };
                    }
                    outcome.accepted &= inner.accepted;
                }
            }
            SyncResponse::Rosters(rosters) => {
                for item in rosters.iter().filter(|i| !self.world.rosters.contains(i)) {
                    let inner = check_roster_bytes(self.world, item);
                    if inner.problem.is_some() {
                        return Outcome {
                            problem: inner.problem.map(|p| format!("inside a batch: {p}")),
                            ..outcome
                        };
                    }
                    outcome.accepted &= inner.accepted;
                }
            }
            SyncResponse::InSync
            | SyncResponse::Frontier { .. }
            | SyncResponse::FrontierV1 { .. }
            | SyncResponse::Refused(_) => {}
        }
        outcome
    }
}

/// Checks that the sync seeds cover every variant.
pub(super) fn check_sync_coverage(world: &World) -> anyhow::Result<()> {
    let requests = SyncRequestTarget::new(world);
    let mut seen: Vec<&str> = requests
        .seeds
        .iter()
        .filter_map(|b| SyncRequest::decode(b).ok())
        .map(|r| request_variant(&r))
        .collect();
    seen.sort();
    let mut want = REQUEST_VARIANTS.to_vec();
    want.sort();
    anyhow::ensure!(
        seen == want,
        "sync request seeds cover {seen:?}, not {want:?}"
    );
    let responses = SyncResponseTarget::new(world);
    let mut seen: Vec<&str> = responses
        .seeds
        .iter()
        .filter_map(|b| SyncResponse::decode(b).ok())
        .map(|r| response_variant(&r))
        .collect();
    seen.sort();
    let mut want = RESPONSE_VARIANTS.to_vec();
    want.sort();
    anyhow::ensure!(
        seen == want,
        "sync response seeds cover {seen:?}, not {want:?}"
    );
    Ok(())
}

// ------------------------------------------------------------- API bodies

/// Which body an [`ApiTarget`] parses.
#[derive(Debug, Clone, Copy)]
enum Route {
    Publish,
    Retract,
    Sighting,
}

/// A JSON body of the local API, parsed and checked as the API does before
/// it asks the node anything.
struct ApiTarget {
    route: Route,
    seeds: Vec<Vec<u8>>,
}

impl ApiTarget {
    fn publish() -> anyhow::Result<ApiTarget> {
        let body = |tlp: &str, to: &[&str]| PublishBody {
            tlp: tlp.into(),
            to: to.iter().map(|s| s.to_string()).collect(),
            severity: "high".into(),
            title: "Phishing wave against gate appointments".into(),
            summary: "Block at the edge.\nCall the SOC.".into(),
            indicators: vec!["ipv4:203.0.113.7".into(), "domain:gate-appt.example".into()],
            tags: vec!["phishing".into()],
            sectors: vec!["terminal-operator".into()],
            references: vec!["https://example.org/advisory".into()],
            stix: None,
            ttl_ms: Some(86_400_000),
        };
        let mut with_stix = body("clear", &[]);
        with_stix.stix = Some(
            r#"{"type":"bundle","id":"bundle--5d0092c5-5f74-4287-9642-33f4c354e56d","objects":[]}"#
                .into(),
        );
        let bodies = [
            body("green", &[]),
            body("amber", &["shipping-line"]),
            body("red", &["railroad", "trucking"]),
            with_stix,
        ];
        Ok(ApiTarget {
            route: Route::Publish,
            seeds: bodies
                .iter()
                .map(serde_json::to_vec)
                .collect::<Result<Vec<_>, _>>()?,
        })
    }

    fn retract() -> anyhow::Result<ApiTarget> {
        Ok(ApiTarget {
            route: Route::Retract,
            seeds: vec![serde_json::to_vec(&RetractBody {
                reason: "false positive: the address belongs to a CDN".into(),
            })?],
        })
    }

    fn sighting() -> anyhow::Result<ApiTarget> {
        let seeds = ["ipv4:203.0.113.7", "domain:gate-appt.example"]
            .iter()
            .map(|indicator| {
                serde_json::to_vec(&SightBody {
                    indicator: indicator.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ApiTarget {
            route: Route::Sighting,
            seeds,
        })
    }
}

impl Target for ApiTarget {
    fn name(&self) -> &'static str {
        match self.route {
            Route::Publish => "api-publish",
            Route::Retract => "api-retract",
            Route::Sighting => "api-sighting",
        }
    }

    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }

    fn structured(&self, rng: &mut ChaCha8Rng, seed: usize) -> Option<(Vec<u8>, String)> {
        mutate::json(rng, self.seeds.get(seed)?)
    }

    fn check(&self, input: &[u8]) -> Outcome {
        match self.route {
            Route::Publish => {
                let Ok(body) = serde_json::from_slice::<PublishBody>(input) else {
                    return Outcome::rejected();
                };
                let Ok(request) = body.into_request() else {
                    return Outcome::decoded(false);
                };
                let outcome = Outcome::decoded(true);
                // What the node then seals must decode back as it was.
                let body = Body::Bulletin(request.bulletin);
                if Body::decode_for(&body.encode(), &Kind::Bulletin)
                    .ok()
                    .as_ref()
                    != Some(&body)
                {
                    return outcome.broken("an accepted bulletin does not round-trip");
                }
                outcome
            }
            Route::Retract => match serde_json::from_slice::<RetractBody>(input) {
                Ok(body) => Outcome::decoded(body.into_reason().is_ok()),
                Err(_) => Outcome::rejected(),
            },
            Route::Sighting => match serde_json::from_slice::<SightBody>(input) {
                Ok(body) => Outcome::decoded(body.into_indicator().is_ok()),
                Err(_) => Outcome::rejected(),
            },
        }
    }
}
