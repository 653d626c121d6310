//! Export: one opened envelope (its signed header facts, its author's
//! organisation and its body) to STIX 2.1 objects, and a [`Bundle`] that
//! gathers the objects of many envelopes. Every timestamp comes from the
//! envelope and every id from [`super::ids`], so all nodes that can open an
//! envelope export byte-identical objects.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::ids::{sdo_id, timestamp};
use super::marking::{self, DefinitionTlp, force_at_least, marking_definition, marking_id};
use super::pattern::{observable_of, pattern_of};
use crate::body::{Body, Bulletin, Indicator, IndicatorKind};
use crate::bytes::{Digest, NodePublicKey};
use crate::card::OrgId;
use crate::egress::{EgressCap, egress_allowed};
use crate::envelope::{Envelope, Header, Kind};
use crate::roster::Roster;
use crate::tlp::Tlp;

/// `created` and `modified` of identity objects. An identity's id is
/// derived from everything it says (consortium, org id, display name), so
/// it never needs a second version and its timestamps can be fixed.
pub const IDENTITY_CREATED: &str = "1970-01-01T00:00:00.000Z";

/// The organisation that authored an envelope, as its roster names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    /// The consortium it belongs to.
    pub consortium: Digest,
    /// Its slug.
    pub org_id: OrgId,
    /// Its display name.
    pub name: String,
    /// Its sector.
    pub sector: String,
}

impl Org {
    /// The organisation of node `author` in `roster` (revoked members too:
    /// their past envelopes stay exportable).
    pub fn of(roster: &Roster, author: &NodePublicKey) -> Option<Org> {
        roster.node(author).map(|(member, _)| Org {
            consortium: roster.consortium_id(),
            org_id: member.card.org_id.clone(),
            name: member.card.name.clone(),
            sector: member.card.sector.clone(),
        })
    }
}

/// One envelope this node has opened: its id, its signed header, its
/// author's organisation and its body.
#[derive(Debug, Clone, Copy)]
pub struct Opened<'a> {
    /// The envelope id.
    pub id: Digest,
    /// Its signed header (times, TLP, kind and target).
    pub header: &'a Header,
    /// The author's organisation.
    pub org: &'a Org,
    /// The opened body.
    pub body: &'a Body,
}

/// Why an envelope cannot be exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The envelope's author is in no version of the roster given.
    #[error("envelope {id}: its author is not in the roster")]
    UnknownAuthor {
        /// The envelope.
        id: Digest,
    },
    /// The body is not the kind the header says.
    #[error("envelope {id}: body does not match envelope kind {kind}")]
    KindMismatch {
        /// The envelope.
        id: Digest,
        /// The header's kind.
        kind: &'static str,
    },
    /// A retraction was given without its target bulletin.
    #[error("retraction {id}: exporting it needs the bulletin it withdraws ({target})")]
    MissingTarget {
        /// The retraction.
        id: Digest,
        /// The envelope it withdraws.
        target: Digest,
    },
    /// A retraction was given a target that is not the one it withdraws, or
    /// that is not a bulletin of the same organisation.
    #[error("retraction {id}: withdraws {target}, not the envelope {given} given with it")]
    WrongTarget {
        /// The retraction.
        id: Digest,
        /// The envelope it withdraws.
        target: Digest,
        /// The envelope given.
        given: Digest,
    },
}

/// The STIX objects of one envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// The objects: TLP marking-definitions, identities, then the envelope's
    /// own objects and, for a bulletin, its attached bundle's objects.
    pub objects: Vec<Value>,
    /// Entries of the attached bundle that were not STIX objects (no string
    /// `type` and `id`) and were left out.
    pub skipped: usize,
}

/// The id of the `report` of bulletin `envelope`.
pub fn report_id(envelope: &Digest) -> String {
    sdo_id("report", "report", &[&envelope.0])
}

/// The id of the `indicator` (or, for a CVE, the `vulnerability`) that
/// `indicator` of bulletin `envelope` becomes.
pub fn indicator_id(envelope: &Digest, indicator: &Indicator) -> String {
    let (stix_type, role) = match indicator.kind {
        IndicatorKind::Cve => ("vulnerability", "vulnerability"),
        _ => ("indicator", "indicator"),
    };
    sdo_id(
        stix_type,
        role,
        &[
            &envelope.0,
            indicator.kind.as_str().as_bytes(),
            indicator.value.as_bytes(),
        ],
    )
}

/// The id of the `sighting` of sighting envelope `envelope`.
pub fn sighting_id(envelope: &Digest) -> String {
    sdo_id("sighting", "sighting", &[&envelope.0])
}

/// The id of the `derived-from` relationship from bulletin `new` to the
/// bulletin `old` it supersedes.
pub fn supersedes_id(new: &Digest, old: &Digest) -> String {
    sdo_id("relationship", "derived-from", &[&new.0, &old.0])
}

/// The id of the `identity` of an organisation.
pub fn identity_id(org: &Org) -> String {
    sdo_id(
        "identity",
        "identity",
        &[
            &org.consortium.0,
            org.org_id.as_str().as_bytes(),
            org.name.as_bytes(),
        ],
    )
}

/// The `identity` object of an organisation, marked `tlp`.
pub fn identity_of(org: &Org, tlp: Tlp) -> Value {
    json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": identity_id(org),
        "created": IDENTITY_CREATED,
        "modified": IDENTITY_CREATED,
        "name": org.name,
        "identity_class": "organization",
        "description": format!("Breakwater member {} (sector {})", org.org_id, org.sector),
        "object_marking_refs": [marking_id(tlp)],
    })
}

/// The STIX objects of one opened envelope:
/// - a bulletin gives a `report`, an `indicator` plus its observable per
///   indicator, a `vulnerability` per CVE, a `derived-from` relationship
///   when it supersedes another, and its attached bundle's objects marked
///   at least as strictly as the envelope;
/// - a sighting gives a `sighting` of the target's derived indicator;
/// - a retraction gives new versions (`revoked: true`, same `created`,
///   `modified` = the retraction's time, at least 1 ms after the target's)
///   of the target's report, indicators, vulnerabilities and relationship;
///   `target` must then be the opened bulletin it withdraws.
///
/// Every object is marked with the official TLP 2.0 marking of the
/// envelope, and the author's `identity` is included.
pub fn export(envelope: &Opened<'_>, target: Option<&Opened<'_>>) -> Result<Exported, ExportError> {
    if !envelope.body.matches(&envelope.header.kind) {
        return Err(ExportError::KindMismatch {
            id: envelope.id,
            kind: envelope.header.kind.as_str(),
        });
    }
    match (envelope.header.kind, envelope.body) {
        (Kind::Bulletin, Body::Bulletin(bulletin)) => {
            let (mut objects, attached, skipped) = bulletin_objects(envelope, bulletin);
            objects.extend(attached);
            Ok(Exported { objects, skipped })
        }
        (
            Kind::Sighting { target },
            Body::Sighting {
                indicator,
                seen_at,
                note,
            },
        ) => {
            let tlp = envelope.header.tlp;
            let mut sighting = common("sighting", sighting_id(&envelope.id), envelope, tlp);
            let seen = timestamp(*seen_at);
            sighting.insert(
                "sighting_of_ref".into(),
                json!(indicator_id(&target, indicator)),
            );
            sighting.insert(
                "where_sighted_refs".into(),
                json!([identity_id(envelope.org)]),
            );
            sighting.insert("first_seen".into(), json!(seen));
            sighting.insert("last_seen".into(), json!(seen));
            sighting.insert("count".into(), json!(1));
            sighting.insert(
                "description".into(),
                json!(
                    note.clone()
                        .unwrap_or_else(|| format!("sighting of {indicator}"))
                ),
            );
            Ok(Exported {
                objects: vec![
                    marking_definition(tlp),
                    identity_of(envelope.org, tlp),
                    Value::Object(sighting),
                ],
                skipped: 0,
            })
        }
        (Kind::Retraction { target: withdrawn }, Body::Retraction { .. }) => {
            let Some(original) = target else {
                return Err(ExportError::MissingTarget {
                    id: envelope.id,
                    target: withdrawn,
                });
            };
            let Body::Bulletin(bulletin) = original.body else {
                return Err(wrong_target(envelope.id, withdrawn, original.id));
            };
            if original.id != withdrawn
                || original.org.org_id != envelope.org.org_id
                || !matches!(original.header.kind, Kind::Bulletin)
            {
                return Err(wrong_target(envelope.id, withdrawn, original.id));
            }
            let tlp = original.header.tlp.max(envelope.header.tlp);
            let modified = timestamp(
                envelope
                    .header
                    .created_at
                    .max(original.header.created_at.saturating_add(1)),
            );
            let (own, _, _) = bulletin_objects(original, bulletin);
            let mut objects = vec![marking_definition(tlp), identity_of(original.org, tlp)];
            for object in own {
                let Value::Object(mut object) = object else {
                    continue;
                };
                let revocable = matches!(
                    object.get("type").and_then(Value::as_str),
                    Some("report" | "indicator" | "vulnerability" | "relationship")
                );
                if revocable {
                    object.insert("modified".into(), json!(modified));
                    object.insert("revoked".into(), json!(true));
                    object.insert("object_marking_refs".into(), json!([marking_id(tlp)]));
                    objects.push(Value::Object(object));
                }
            }
            Ok(Exported {
                objects,
                skipped: 0,
            })
        }
        _ => Err(ExportError::KindMismatch {
            id: envelope.id,
            kind: envelope.header.kind.as_str(),
        }),
    }
}

fn wrong_target(id: Digest, target: Digest, given: Digest) -> ExportError {
    ExportError::WrongTarget { id, target, given }
}

/// The fields every Breakwater-made SDO and SRO carries.
fn common(stix_type: &str, id: String, envelope: &Opened<'_>, tlp: Tlp) -> Map<String, Value> {
    let created = timestamp(envelope.header.created_at);
    let mut object = Map::new();
    object.insert("type".into(), json!(stix_type));
    object.insert("spec_version".into(), json!("2.1"));
    object.insert("id".into(), json!(id));
    object.insert("created".into(), json!(created));
    object.insert("modified".into(), json!(created));
    object.insert("created_by_ref".into(), json!(identity_id(envelope.org)));
    object.insert("object_marking_refs".into(), json!([marking_id(tlp)]));
    object
}

/// A reference as an external reference: a URL when it looks like one,
/// otherwise a description.
fn reference(text: &str) -> Value {
    let is_url = text.split_once("://").is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            && !rest.is_empty()
    }) && !text.chars().any(char::is_whitespace);
    if is_url {
        json!({ "source_name": "reference", "url": text })
    } else {
        json!({ "source_name": "reference", "description": text })
    }
}

/// A bulletin's own objects (markings, identity, report, indicators,
/// observables, vulnerabilities, relationship), its attached objects, and
/// how many attached entries were skipped.
fn bulletin_objects(envelope: &Opened<'_>, bulletin: &Bulletin) -> (Vec<Value>, Vec<Value>, usize) {
    let tlp = envelope.header.tlp;
    let mut objects = vec![marking_definition(tlp), identity_of(envelope.org, tlp)];
    let mut refs = vec![json!(identity_id(envelope.org))];
    let mut parts = Vec::new();
    for indicator in &bulletin.indicators {
        let id = indicator_id(&envelope.id, indicator);
        if refs.contains(&json!(id)) {
            continue;
        }
        refs.push(json!(id));
        let description = indicator
            .note
            .clone()
            .unwrap_or_else(|| bulletin.title.clone());
        if indicator.kind == IndicatorKind::Cve {
            let mut vulnerability = common("vulnerability", id, envelope, tlp);
            vulnerability.insert("name".into(), json!(indicator.value));
            vulnerability.insert("description".into(), json!(description));
            vulnerability.insert(
                "external_references".into(),
                json!([{ "source_name": "cve", "external_id": indicator.value }]),
            );
            parts.push(Value::Object(vulnerability));
            continue;
        }
        let mut sdo = common("indicator", id, envelope, tlp);
        sdo.insert("name".into(), json!(indicator.key()));
        sdo.insert("description".into(), json!(description));
        sdo.insert("indicator_types".into(), json!(["malicious-activity"]));
        sdo.insert("pattern".into(), json!(pattern_of(indicator)));
        sdo.insert("pattern_type".into(), json!("stix"));
        sdo.insert("pattern_version".into(), json!("2.1"));
        sdo.insert(
            "valid_from".into(),
            json!(timestamp(envelope.header.created_at)),
        );
        sdo.insert(
            "valid_until".into(),
            json!(timestamp(envelope.header.expires_at)),
        );
        parts.push(Value::Object(sdo));
        if let Some(Value::Object(mut sco)) = observable_of(indicator) {
            sco.insert("object_marking_refs".into(), json!([marking_id(tlp)]));
            if let Some(id) = sco.get("id")
                && !refs.contains(id)
            {
                refs.push(id.clone());
            }
            if !parts.iter().any(|p| p.get("id") == sco.get("id")) {
                parts.push(Value::Object(sco));
            }
        }
    }
    if let Some(old) = &bulletin.supersedes {
        let id = supersedes_id(&envelope.id, old);
        refs.push(json!(id));
        let mut relationship = common("relationship", id, envelope, tlp);
        relationship.insert("relationship_type".into(), json!("derived-from"));
        relationship.insert("source_ref".into(), json!(report_id(&envelope.id)));
        relationship.insert("target_ref".into(), json!(report_id(old)));
        parts.push(Value::Object(relationship));
    }
    let (attached, skipped) = match &bulletin.stix {
        Some(text) => attached_objects(text, tlp),
        None => (Vec::new(), 0),
    };
    for object in &attached {
        if object.get("type").and_then(Value::as_str) != Some("marking-definition")
            && let Some(id) = object.get("id")
            && !refs.contains(id)
        {
            refs.push(id.clone());
        }
    }
    let mut labels: Vec<String> = bulletin.tags.clone();
    labels.extend(bulletin.sectors.iter().map(|s| format!("sector:{s}")));
    labels.push(format!("severity:{}", bulletin.severity));
    let mut external = vec![json!({
        "source_name": "breakwater",
        "external_id": envelope.id.to_hex(),
    })];
    external.extend(bulletin.references.iter().map(|r| reference(r)));
    let mut report = common("report", report_id(&envelope.id), envelope, tlp);
    report.insert("name".into(), json!(bulletin.title));
    if !bulletin.summary.trim().is_empty() {
        report.insert("description".into(), json!(bulletin.summary));
    }
    report.insert(
        "published".into(),
        json!(timestamp(envelope.header.created_at)),
    );
    report.insert("report_types".into(), json!(["threat-report"]));
    report.insert("labels".into(), json!(labels));
    report.insert("external_references".into(), Value::Array(external));
    report.insert("object_refs".into(), Value::Array(refs));
    objects.push(Value::Object(report));
    objects.extend(parts);
    (objects, attached, skipped)
}

/// The objects of an attached bundle, each marked at least as strictly as
/// the envelope (`floor`); TLP marking-definitions of the attachment are
/// left out (the official ones of the levels used are exported instead),
/// and so are entries that are not STIX objects (counted).
fn attached_objects(text: &str, floor: Tlp) -> (Vec<Value>, usize) {
    let Ok(Value::Object(bundle)) = serde_json::from_str::<Value>(text) else {
        return (Vec::new(), 0);
    };
    let Some(Value::Array(items)) = bundle.get("objects") else {
        return (Vec::new(), 0);
    };
    let mut local: HashMap<String, Tlp> = HashMap::new();
    for item in items {
        if item.get("type").and_then(Value::as_str) == Some("marking-definition")
            && let Some(id) = item.get("id").and_then(Value::as_str)
        {
            match marking::tlp_of_definition(item) {
                DefinitionTlp::Level(tlp) => {
                    local.insert(id.to_string(), tlp);
                }
                // A TLP marking naming no known level: the envelope's own
                // level replaces it.
                DefinitionTlp::Unknown(_) => {
                    local.insert(id.to_string(), Tlp::Clear);
                }
                DefinitionTlp::None => {}
            }
        }
    }
    let tlp_of_ref = |id: &str| marking::tlp_of_known_id(id).or_else(|| local.get(id).copied());
    let mut objects = Vec::new();
    let mut skipped = 0;
    for item in items {
        let Value::Object(object) = item else {
            skipped += 1;
            continue;
        };
        let (Some(Value::String(stix_type)), Some(Value::String(id))) =
            (object.get("type"), object.get("id"))
        else {
            skipped += 1;
            continue;
        };
        if stix_type == "marking-definition" && tlp_of_ref(id).is_some() {
            continue;
        }
        let mut object = object.clone();
        force_at_least(&mut object, floor, &tlp_of_ref);
        objects.push(Value::Object(object));
    }
    let mut levels: Vec<Tlp> = objects
        .iter()
        .flat_map(|o| {
            marking::marking_refs(o)
                .filter_map(marking::tlp_of_known_id)
                .collect::<Vec<_>>()
        })
        .filter(|&tlp| tlp != floor)
        .collect();
    levels.sort();
    levels.dedup();
    let definitions = levels.into_iter().map(marking_definition);
    (definitions.chain(objects).collect(), skipped)
}

/// The TLP of an exported object: the strictest official TLP 2.0 marking
/// it references.
fn tlp_of_object(object: &Value) -> Option<Tlp> {
    object
        .get("object_marking_refs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().and_then(marking::tlp_of_known_id))
        .max()
}

/// The bundle of one opened bulletin or sighting, its author looked up in
/// `roster`.
pub fn bundle_of(envelope: &Envelope, body: &Body, roster: &Roster) -> Result<Bundle, ExportError> {
    let mut bundle = Bundle::new();
    bundle.add_envelope(envelope, body, None, roster)?;
    Ok(bundle)
}

/// The strictest TLP an exported object carries: its own level for an
/// official marking-definition, else the strictest TLP ref it holds
/// (object-level or granular, any known TLP id).
fn strictest_tlp(object: &Value) -> Option<Tlp> {
    let id = object.get("id").and_then(Value::as_str);
    if object.get("type").and_then(Value::as_str) == Some("marking-definition") {
        return id.and_then(marking::tlp_of_known_id);
    }
    marking::marking_refs(object)
        .filter_map(marking::tlp_of_known_id)
        .max()
}

/// A STIX 2.1 bundle gathered from many envelopes. Objects with the same
/// `id` and `modified` (identities, observables, marking-definitions shared
/// by several envelopes) appear once; when two such copies differ, the one
/// marked more strictly is kept.
///
/// A bundle made with [`Bundle::capped`] applies the egress policy
/// ([`egress_allowed`]) to everything added: an envelope whose label (for a
/// retraction, the stricter of its own and its target's) the cap does not
/// let out adds nothing, and any object whose strictest TLP marking the cap
/// does not let out (an attached object marked RED inside an AMBER
/// bulletin) is left out; both are counted.
#[derive(Debug, Clone, Default)]
pub struct Bundle {
    objects: Vec<Value>,
    index: HashMap<(String, Option<String>), usize>,
    skipped: usize,
    cap: Option<EgressCap>,
    withheld_envelopes: usize,
    withheld_objects: usize,
}

impl Bundle {
    /// An empty bundle with no cap, for callers that already applied the
    /// egress policy (or the operator's own API, [`EgressCap::ALL`]).
    pub fn new() -> Bundle {
        Bundle::default()
    }

    /// An empty bundle that lets out only what `cap` allows (the channel's
    /// cap: `export stix --max-tlp`, a TAXII collection's).
    pub fn capped(cap: EgressCap) -> Bundle {
        Bundle {
            cap: Some(cap),
            ..Bundle::default()
        }
    }

    /// The cap this bundle applies, if any.
    pub fn cap(&self) -> Option<EgressCap> {
        self.cap
    }

    /// Envelopes that added nothing because their label is above the cap.
    pub fn withheld_envelopes(&self) -> usize {
        self.withheld_envelopes
    }

    /// Objects of allowed envelopes left out because their own marking is
    /// above the cap.
    pub fn withheld_objects(&self) -> usize {
        self.withheld_objects
    }

    /// Adds the objects of one envelope ([`export`]), or nothing (counted in
    /// [`Bundle::withheld_envelopes`]) when its label is above the cap.
    pub fn add(
        &mut self,
        envelope: &Opened<'_>,
        target: Option<&Opened<'_>>,
    ) -> Result<(), ExportError> {
        let exported = export(envelope, target)?;
        if let Some(cap) = self.cap {
            let label = match (envelope.header.kind, target) {
                (Kind::Retraction { .. }, Some(target)) => {
                    envelope.header.tlp.max(target.header.tlp)
                }
                _ => envelope.header.tlp,
            };
            if !egress_allowed(label, cap) {
                self.withheld_envelopes += 1;
                return Ok(());
            }
        }
        self.skipped += exported.skipped;
        self.extend(exported.objects);
        Ok(())
    }

    /// Adds the objects of an envelope this node has opened (`body`), its
    /// author's organisation looked up in `roster`; a retraction also needs
    /// its opened target.
    pub fn add_envelope(
        &mut self,
        envelope: &Envelope,
        body: &Body,
        target: Option<(&Envelope, &Body)>,
        roster: &Roster,
    ) -> Result<(), ExportError> {
        let org_of = |e: &Envelope| {
            Org::of(roster, &e.header.author).ok_or(ExportError::UnknownAuthor { id: e.id() })
        };
        let org = org_of(envelope)?;
        let opened = Opened {
            id: envelope.id(),
            header: &envelope.header,
            org: &org,
            body,
        };
        match target {
            Some((target, target_body)) => {
                let target_org = org_of(target)?;
                let target = Opened {
                    id: target.id(),
                    header: &target.header,
                    org: &target_org,
                    body: target_body,
                };
                self.add(&opened, Some(&target))
            }
            None => self.add(&opened, None),
        }
    }

    /// Adds objects, merging duplicates and leaving out (and counting)
    /// those above the cap.
    pub fn extend(&mut self, objects: impl IntoIterator<Item = Value>) {
        for object in objects {
            let Some(id) = object.get("id").and_then(Value::as_str) else {
                continue;
            };
            if let Some(cap) = self.cap
                && let Some(tlp) = strictest_tlp(&object)
                && !egress_allowed(tlp, cap)
            {
                if object.get("type").and_then(Value::as_str) != Some("marking-definition") {
                    self.withheld_objects += 1;
                }
                continue;
            }
            let key = (
                id.to_string(),
                object
                    .get("modified")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            );
            match self.index.get(&key) {
                Some(&at) => {
                    if let Some(existing) = self.objects.get_mut(at)
                        && tlp_of_object(&object) > tlp_of_object(existing)
                    {
                        *existing = object;
                    }
                }
                None => {
                    self.index.insert(key, self.objects.len());
                    self.objects.push(object);
                }
            }
        }
    }

    /// Number of distinct objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when no object was added.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Attached-bundle entries left out because they were not STIX objects.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The bundle: `{"type":"bundle","id":…,"objects":[…]}`, marking
    /// definitions first (least strict first), then the other objects in the
    /// order they were added. Its id is derived from the (id, modified)
    /// pairs it holds.
    pub fn to_value(&self) -> Value {
        let mut keys: Vec<String> = self
            .index
            .keys()
            .map(|(id, modified)| format!("{id}|{}", modified.as_deref().unwrap_or("")))
            .collect();
        keys.sort();
        let parts: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let id = sdo_id("bundle", "bundle", &parts);
        let (mut markings, others): (Vec<&Value>, Vec<&Value>) = self
            .objects
            .iter()
            .partition(|o| o.get("type").and_then(Value::as_str) == Some("marking-definition"));
        markings.sort_by_key(|m| {
            (
                m.get("id")
                    .and_then(Value::as_str)
                    .and_then(marking::tlp_of_known_id),
                m.get("id").and_then(Value::as_str).map(str::to_string),
            )
        });
        let objects: Vec<Value> = markings.into_iter().chain(others).cloned().collect();
        let mut bundle = Map::new();
        bundle.insert("type".into(), json!("bundle"));
        bundle.insert("id".into(), json!(id));
        if !objects.is_empty() {
            bundle.insert("objects".into(), Value::Array(objects));
        }
        Value::Object(bundle)
    }

    /// The bundle as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_value()).unwrap_or_default()
    }
}
