//! A deterministic consortium (fixed keys from seeds) for tests, benchmarks,
//! the demo and simulations. Nothing here is secret: never use these keys
//! for a real consortium.

use crate::body::{Body, Bulletin, Severity};
use crate::bytes::Digest;
use crate::card::{MemberCard, NodeEntry, OrgId};
use crate::envelope::Kind;
use crate::keys::NodeKeys;
use crate::roster::{Roster, RosterError, SignedRoster};
use crate::seal::Draft;
use crate::tlp::Tlp;

/// The San Pedro Bay cast, in the order fixtures use it.
pub const SAN_PEDRO_BAY: [(&str, &str, &str); 5] = [
    (
        "port-authority",
        "Port of San Pedro Bay Authority",
        "port-authority",
    ),
    ("shipping-line", "Pacific Shipping Line", "shipping-line"),
    (
        "terminal-operator",
        "Harbor Marine Terminal",
        "terminal-operator",
    ),
    ("railroad", "Alameda Corridor Railroad", "railroad"),
    ("trucking", "Drayage Trucking Co", "trucking"),
];

/// One organisation of a fixture: its cards and its nodes' secret keys.
#[derive(Debug, Clone)]
pub struct FixtureOrg {
    /// Org id.
    pub org_id: OrgId,
    /// Secret keys of its nodes.
    pub keys: Vec<NodeKeys>,
    /// Its member card.
    pub card: MemberCard,
}

/// A consortium of fixture organisations with a signed genesis roster
/// (admin: the first org, threshold 1).
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Organisations.
    pub orgs: Vec<FixtureOrg>,
    /// Signed genesis roster.
    pub roster: SignedRoster,
}

/// The fixture org at index `i`: the San Pedro Bay cast first, then `member-N`.
pub fn fixture_org(i: usize, nodes_per_org: usize) -> FixtureOrg {
    let (org, name, sector) = match SAN_PEDRO_BAY.get(i) {
        Some(&(org, name, sector)) => (org.to_string(), name.to_string(), sector.to_string()),
        None => (
            format!("member-{}", i + 1),
            format!("Member {}", i + 1),
            "other".to_string(),
        ),
    };
    let keys: Vec<NodeKeys> = (0..nodes_per_org)
        .map(|n| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            seed[8..16].copy_from_slice(&(n as u64).to_le_bytes());
            seed[16] = 42;
            NodeKeys::from_seed(seed)
        })
        .collect();
    let nodes = keys
        .iter()
        .map(|k| NodeEntry {
            node_key: k.node_public(),
            sealing_key: k.sealing_public(),
            addrs: Vec::new(),
        })
        .collect();
    let org_id = OrgId::try_from(org).unwrap_or_else(|_| fallback_org());
    FixtureOrg {
        card: MemberCard {
            org_id: org_id.clone(),
            name,
            sector,
            nodes,
        },
        org_id,
        keys,
    }
}

#[allow(clippy::expect_used)]
fn fallback_org() -> OrgId {
    "member".parse().expect("static slug is valid") // ok: constant input
}

/// The fixed GREEN key fixtures use for roster version `version` (tests
/// only: a real consortium draws each key from the OS).
pub fn fixture_green_key(version: u64) -> [u8; 32] {
    crate::wire::hash("breakwater/fixture/green-key/v1", &[&version.to_be_bytes()])
}

impl Fixture {
    /// `n_orgs` organisations with `nodes_per_org` nodes each, under a
    /// genesis roster with a GREEN key package ([`fixture_green_key`]), as
    /// `consortium create` makes one.
    pub fn new(n_orgs: usize, nodes_per_org: usize) -> Result<Fixture, RosterError> {
        Fixture::with_cards(n_orgs, nodes_per_org, |_| {})
    }

    /// Like [`Fixture::new`], but with a format-1 genesis roster (no GREEN
    /// key package), as consortia made before protocol v2 have one.
    pub fn legacy(n_orgs: usize, nodes_per_org: usize) -> Result<Fixture, RosterError> {
        Fixture::build(n_orgs, nodes_per_org, false, |_| {})
    }

    /// Like [`Fixture::new`], letting the caller edit each card (e.g. to set
    /// addresses) before the roster is signed.
    pub fn with_cards(
        n_orgs: usize,
        nodes_per_org: usize,
        edit: impl FnMut(&mut FixtureOrg),
    ) -> Result<Fixture, RosterError> {
        Fixture::build(n_orgs, nodes_per_org, true, edit)
    }

    fn build(
        n_orgs: usize,
        nodes_per_org: usize,
        keyed: bool,
        mut edit: impl FnMut(&mut FixtureOrg),
    ) -> Result<Fixture, RosterError> {
        let mut orgs: Vec<FixtureOrg> =
            (0..n_orgs).map(|i| fixture_org(i, nodes_per_org)).collect();
        orgs.iter_mut().for_each(&mut edit);
        let admin = orgs.first().map(|o| o.org_id.clone()).into_iter().collect();
        let roster = Roster::genesis(
            "San Pedro Bay",
            orgs.iter().map(|o| o.card.clone()).collect(),
            admin,
            1,
        )?;
        let roster = if keyed {
            roster.with_green_key(&fixture_green_key(1))?
        } else {
            roster
        };
        let mut signed = SignedRoster::unsigned(roster);
        if let Some(key) = orgs.first().and_then(|o| o.keys.first()) {
            signed.sign(key);
        }
        Ok(Fixture {
            orgs,
            roster: signed,
        })
    }

    /// The roster.
    pub fn roster(&self) -> &Roster {
        &self.roster.roster
    }

    /// Keys of node `node` of org `org`.
    pub fn keys(&self, org: usize, node: usize) -> Option<&NodeKeys> {
        self.orgs.get(org).and_then(|o| o.keys.get(node))
    }
}

/// A bulletin draft with a fixed lifetime of 30 days from `now`.
pub fn bulletin_draft(seq: u64, prev: Digest, tlp: Tlp, title: &str, now: u64) -> Draft {
    Draft {
        seq,
        prev,
        created_at: now,
        expires_at: now + 30 * 24 * 3600 * 1000,
        tlp,
        kind: Kind::Bulletin,
        body: Body::Bulletin(Bulletin::new(title, Severity::High)),
    }
}
