//! Tests of the one egress policy (`breakwater_protocol::egress`): every
//! (label, cap) pair against a written-out table, cap consistency, each
//! channel's default cap, and the capped STIX bundle builder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use breakwater_protocol::body::{Body, Bulletin, Indicator, Severity};
use breakwater_protocol::envelope::Seal;
use breakwater_protocol::fixture::Fixture;
use breakwater_protocol::stix::{Bundle, Opened, Org, marking_id};
use breakwater_protocol::*;
use serde_json::{Value, json};

const NOW: u64 = 1_790_000_000_000;
const DAY: u64 = 24 * 3600 * 1000;

/// Every cap: `max_tlp` × `allow_red`.
fn caps() -> Vec<EgressCap> {
    Tlp::ALL
        .into_iter()
        .flat_map(|max_tlp| [false, true].map(|allow_red| EgressCap { max_tlp, allow_red }))
        .collect()
}

#[test]
fn egress_allowed_matches_the_table_for_every_label_and_cap() {
    // Rows: the cap (max_tlp, allow_red). Columns: clear, green, amber,
    // amber+strict, red. 1 = may leave.
    let table: [(Tlp, bool, [u8; 5]); 10] = [
        (Tlp::Clear, false, [1, 0, 0, 0, 0]),
        (Tlp::Clear, true, [1, 0, 0, 0, 0]),
        (Tlp::Green, false, [1, 1, 0, 0, 0]),
        (Tlp::Green, true, [1, 1, 0, 0, 0]),
        (Tlp::Amber, false, [1, 1, 1, 0, 0]),
        (Tlp::Amber, true, [1, 1, 1, 0, 0]),
        (Tlp::AmberStrict, false, [1, 1, 1, 1, 0]),
        (Tlp::AmberStrict, true, [1, 1, 1, 1, 0]),
        (Tlp::Red, false, [1, 1, 1, 1, 0]),
        (Tlp::Red, true, [1, 1, 1, 1, 1]),
    ];
    let mut checked = 0;
    for cap in caps() {
        let (_, _, row) = table
            .iter()
            .find(|(max, red, _)| *max == cap.max_tlp && *red == cap.allow_red)
            .unwrap();
        for (tlp, &expected) in Tlp::ALL.into_iter().zip(row) {
            assert_eq!(
                egress_allowed(tlp, cap),
                expected == 1,
                "{tlp} through {cap:?}"
            );
            assert_eq!(cap.allows(tlp), expected == 1);
            checked += 1;
        }
        let levels: Vec<Tlp> = cap.levels().collect();
        let expected: Vec<Tlp> = Tlp::ALL
            .into_iter()
            .zip(row)
            .filter(|(_, e)| **e == 1)
            .map(|(t, _)| t)
            .collect();
        assert_eq!(levels, expected);
    }
    assert_eq!(checked, 50);
}

#[test]
fn red_leaves_only_through_an_explicit_red_cap() {
    for cap in caps() {
        assert_eq!(
            egress_allowed(Tlp::Red, cap),
            cap.max_tlp == Tlp::Red && cap.allow_red,
            "{cap:?}"
        );
    }
    assert!(!EgressCap::up_to(Tlp::Red).allows(Tlp::Red));
    assert!(EgressCap::up_to(Tlp::Red).allows(Tlp::AmberStrict));
    assert!(EgressCap::ALL.allows(Tlp::Red));
}

#[test]
fn inconsistent_caps_are_refused_with_a_reason() {
    assert_eq!(
        EgressCap::new(Tlp::Red, false),
        Err(EgressCapError::RedNotAllowed)
    );
    assert_eq!(
        EgressCap::new(Tlp::Amber, true),
        Err(EgressCapError::RedAboveCap(Tlp::Amber))
    );
    assert!(
        EgressCapError::RedNotAllowed
            .to_string()
            .contains("allow_red")
    );
    assert_eq!(EgressCap::new(Tlp::Red, true), Ok(EgressCap::ALL));
    for max in [Tlp::Clear, Tlp::Green, Tlp::Amber, Tlp::AmberStrict] {
        assert_eq!(EgressCap::new(max, false), Ok(EgressCap::up_to(max)));
    }
}

#[test]
fn caps_read_from_configuration_default_to_no_red() {
    let cap: EgressCap = serde_json::from_value(json!({"max_tlp": "amber+strict"})).unwrap();
    assert_eq!(cap, EgressCap::up_to(Tlp::AmberStrict));
    let red: EgressCap = serde_json::from_value(json!({"max_tlp": "red"})).unwrap();
    assert!(!red.allows(Tlp::Red));
    assert_eq!(red.check(), Err(EgressCapError::RedNotAllowed));
    let allowed: EgressCap =
        serde_json::from_value(json!({"max_tlp": "red", "allow_red": true})).unwrap();
    assert_eq!(allowed.check(), Ok(()));
    assert!(allowed.allows(Tlp::Red));
}

#[test]
fn each_channel_has_its_default_cap() {
    let expected = [
        (Channel::LocalApi, "api", Tlp::Red),
        (Channel::Dashboard, "ui", Tlp::Red),
        (Channel::Taxii, "taxii", Tlp::AmberStrict),
        (Channel::MispFeed, "misp-feed", Tlp::AmberStrict),
        (Channel::StixExport, "stix", Tlp::AmberStrict),
        (Channel::Webhook, "webhook", Tlp::Green),
    ];
    assert_eq!(Channel::ALL.len(), expected.len());
    for (channel, name, strictest) in expected {
        let cap = channel.default_cap();
        assert_eq!(cap.check(), Ok(()), "{channel}");
        assert_eq!(channel.as_str(), name);
        assert_eq!(cap.levels().last(), Some(strictest), "{channel}");
        for tlp in Tlp::ALL {
            assert_eq!(cap.allows(tlp), tlp <= strictest, "{channel} {tlp}");
        }
    }
}

/// An opened envelope built from its facts (the conversion reads only the
/// header's times, label and kind).
struct Held {
    header: Header,
    body: Body,
    org: Org,
    id: Digest,
}

impl Held {
    fn opened(&self) -> Opened<'_> {
        Opened {
            id: self.id,
            header: &self.header,
            org: &self.org,
            body: &self.body,
        }
    }
}

fn held(fixture: &Fixture, n: u8, tlp: Tlp, kind: Kind, body: Body) -> Held {
    let author = fixture.keys(0, 0).unwrap().node_public();
    Held {
        header: Header {
            version: 2,
            consortium: fixture.roster().consortium_id(),
            author,
            seq: u64::from(n),
            prev: if n == 1 {
                Digest::ZERO
            } else {
                Digest([n - 1; 32])
            },
            created_at: NOW + u64::from(n),
            expires_at: NOW + 30 * DAY,
            tlp,
            kind,
            seal: Seal::Clear,
        },
        body,
        org: Org::of(fixture.roster(), &author).unwrap(),
        id: Digest([n; 32]),
    }
}

fn bulletin(title: &str, indicator: &str) -> Bulletin {
    let mut bulletin = Bulletin::new(title, Severity::High);
    bulletin.indicators = vec![Indicator::parse(indicator).unwrap()];
    bulletin
}

fn tlps(bundle: &Bundle) -> Vec<Tlp> {
    let value = bundle.to_value();
    let mut out = Vec::new();
    for object in value["objects"].as_array().into_iter().flatten() {
        let refs = object["object_marking_refs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let granular: Vec<Value> = object["granular_markings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| g["marking_ref"].clone())
            .collect();
        let mut ids: Vec<String> = refs
            .iter()
            .chain(&granular)
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        if object["type"] == "marking-definition" {
            ids.push(object["id"].as_str().unwrap().to_string());
        }
        for id in ids {
            if let Some(tlp) = Tlp::ALL.into_iter().find(|&t| marking_id(t) == id) {
                out.push(tlp);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn capped_stix_bundle_withholds_envelopes_above_the_cap() {
    let fixture = Fixture::legacy(2, 1).unwrap();
    let helds: Vec<Held> = Tlp::ALL
        .into_iter()
        .enumerate()
        .map(|(i, tlp)| {
            let n = u8::try_from(i + 1).unwrap();
            held(
                &fixture,
                n,
                tlp,
                Kind::Bulletin,
                Body::Bulletin(bulletin(tlp.as_str(), &format!("ipv4:203.0.113.{n}"))),
            )
        })
        .collect();
    for cap in caps() {
        let mut bundle = Bundle::capped(cap);
        assert_eq!(bundle.cap(), Some(cap));
        for held in &helds {
            bundle.add(&held.opened(), None).unwrap();
        }
        let allowed: Vec<Tlp> = cap.levels().collect();
        assert_eq!(tlps(&bundle), allowed, "{cap:?}");
        assert_eq!(bundle.withheld_envelopes(), 5 - allowed.len(), "{cap:?}");
        let reports = bundle.to_value()["objects"]
            .as_array()
            .map(|o| o.iter().filter(|o| o["type"] == "report").count())
            .unwrap_or(0);
        assert_eq!(reports, allowed.len(), "{cap:?}");
    }
    // Without a cap, everything (the operator's own view).
    let mut all = Bundle::new();
    for held in &helds {
        all.add(&held.opened(), None).unwrap();
    }
    assert_eq!(tlps(&all), Tlp::ALL.to_vec());
    assert_eq!(all.withheld_envelopes(), 0);
}

#[test]
fn capped_stix_bundle_leaves_out_attached_objects_marked_above_the_cap() {
    let fixture = Fixture::legacy(2, 1).unwrap();
    let red = marking_id(Tlp::Red);
    let mut amber = bulletin("amber with a red attachment", "domain:gate-appt.example");
    amber.stix = Some(
        json!({"type": "bundle", "id": "bundle--6b1b9f4a-4a3c-4b5e-9f1e-0c2d3e4f5a6b", "objects": [
            {"type": "malware", "spec_version": "2.1", "id": "malware--0c7b5b88-8ff7-4a4d-aa9d-feb398cd0061",
             "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
             "name": "red malware", "is_family": false, "object_marking_refs": [red]},
            {"type": "malware", "spec_version": "2.1", "id": "malware--1c7b5b88-8ff7-4a4d-aa9d-feb398cd0061",
             "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
             "name": "granular red", "is_family": false,
             "granular_markings": [{"marking_ref": red, "selectors": ["name"]}]},
            {"type": "malware", "spec_version": "2.1", "id": "malware--2c7b5b88-8ff7-4a4d-aa9d-feb398cd0061",
             "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
             "name": "clear malware", "is_family": false,
             "object_marking_refs": [marking_id(Tlp::Clear)]}
        ]})
        .to_string(),
    );
    let held = held(
        &fixture,
        1,
        Tlp::Amber,
        Kind::Bulletin,
        Body::Bulletin(amber),
    );
    let mut bundle = Bundle::capped(EgressCap::up_to(Tlp::AmberStrict));
    bundle.add(&held.opened(), None).unwrap();
    let value = bundle.to_value();
    let names: Vec<&str> = value["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == "malware")
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["clear malware"]);
    assert_eq!(bundle.withheld_objects(), 2);
    assert_eq!(bundle.withheld_envelopes(), 0);
    assert_eq!(tlps(&bundle), [Tlp::Amber]);
    // Through the operator's own cap, all three leave (the red ones as RED).
    let mut all = Bundle::capped(EgressCap::ALL);
    all.add(&held.opened(), None).unwrap();
    assert_eq!(all.withheld_objects(), 0);
    assert_eq!(tlps(&all), [Tlp::Amber, Tlp::Red]);
}

#[test]
fn capped_stix_bundle_judges_a_retraction_by_the_stricter_of_it_and_its_target() {
    let fixture = Fixture::legacy(2, 1).unwrap();
    let target = held(
        &fixture,
        1,
        Tlp::AmberStrict,
        Kind::Bulletin,
        Body::Bulletin(bulletin("strict", "ipv4:203.0.113.9")),
    );
    let retraction = held(
        &fixture,
        2,
        Tlp::Green,
        Kind::Retraction { target: target.id },
        Body::Retraction {
            reason: "false positive".into(),
        },
    );
    let mut green = Bundle::capped(EgressCap::up_to(Tlp::Green));
    green
        .add(&retraction.opened(), Some(&target.opened()))
        .unwrap();
    assert!(green.is_empty());
    assert_eq!(green.withheld_envelopes(), 1);
    let mut strict = Bundle::capped(EgressCap::up_to(Tlp::AmberStrict));
    strict
        .add(&retraction.opened(), Some(&target.opened()))
        .unwrap();
    assert_eq!(strict.withheld_envelopes(), 0);
    assert_eq!(tlps(&strict), [Tlp::AmberStrict]);
}
