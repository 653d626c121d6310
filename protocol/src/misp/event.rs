//! One opened bulletin (plus its retraction, if any) to a MISP event:
//! deterministic uuids, the TLP tag plus the bulletin's own tags, one
//! attribute per indicator and reference, the summary as an event report,
//! and the feed metadata (manifest entry, `hashes.csv` lines) of the event.

use md5::{Digest as _, Md5};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::body::{Body, Bulletin, IndicatorKind, Severity};
use crate::bytes::Digest;
use crate::card::OrgId;
use crate::envelope::{Envelope, Header, Kind};
use crate::roster::Roster;
use crate::stix::{Opened, Org, timestamp};
use crate::tlp::Tlp;

/// The UUIDv5 namespace of every MISP uuid Breakwater derives:
/// UUIDv5(URL namespace, `urn:breakwater:misp`) =
/// `9a570b35-b5f9-5d19-a6a2-7d806c074041`.
pub const MISP_NAMESPACE: Uuid = Uuid::from_bytes([
    0x9a, 0x57, 0x0b, 0x35, 0xb5, 0xf9, 0x5d, 0x19, 0xa6, 0xa2, 0x7d, 0x80, 0x6c, 0x07, 0x40, 0x41,
]);

/// Why an envelope cannot become a MISP event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MispError {
    /// Only bulletins become events (sightings are not part of feeds).
    #[error("envelope {id}: a {kind} is not a bulletin, so it is not a MISP event")]
    NotABulletin {
        /// The envelope.
        id: Digest,
        /// Its kind.
        kind: &'static str,
    },
    /// The retraction given does not withdraw this bulletin, or is by
    /// another organisation.
    #[error("envelope {given} does not retract bulletin {id}")]
    WrongRetraction {
        /// The bulletin.
        id: Digest,
        /// The envelope given as its retraction.
        given: Digest,
    },
    /// The envelope's author is in no version of the roster given.
    #[error("envelope {id}: its author is not in the roster")]
    UnknownAuthor {
        /// The envelope.
        id: Digest,
    },
    /// An event was added to the feed of another TLP level.
    #[error("event {uuid} is {tlp}, not for the {feed} feed")]
    WrongFeed {
        /// The event.
        uuid: String,
        /// Its level.
        tlp: Tlp,
        /// The feed's level.
        feed: Tlp,
    },
    /// An existing `manifest.json` or `hashes.csv` could not be read.
    #[error("{file}: {reason}")]
    BadFeedFile {
        /// Which file.
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn v5(name: &str) -> String {
    Uuid::new_v5(&MISP_NAMESPACE, name.as_bytes())
        .hyphenated()
        .to_string()
}

/// The event uuid of bulletin `envelope`: UUIDv5 in [`MISP_NAMESPACE`] of
/// `event:<envelope id hex>`, so a re-export updates the event.
pub fn event_uuid(envelope: &Digest) -> String {
    v5(&format!("event:{}", envelope.to_hex()))
}

/// The uuid of the attribute `kind:value` of bulletin `envelope`
/// (`kind` an indicator kind, or `reference`): UUIDv5 of
/// `attribute:<envelope id hex>:<kind>:<value>`.
pub fn attribute_uuid(envelope: &Digest, kind: &str, value: &str) -> String {
    v5(&format!("attribute:{}:{kind}:{value}", envelope.to_hex()))
}

/// The uuid of the summary's event report: UUIDv5 of
/// `event-report:<envelope id hex>`.
pub fn event_report_uuid(envelope: &Digest) -> String {
    v5(&format!("event-report:{}", envelope.to_hex()))
}

/// The uuid of an organisation (`Orgc`): UUIDv5 of
/// `org:<consortium id hex>:<org id>`.
pub fn org_uuid(consortium: &Digest, org: &OrgId) -> String {
    v5(&format!("org:{}:{org}", consortium.to_hex()))
}

/// The MISP attribute type, category and `to_ids` of an indicator kind
/// (interop.md §3.2).
pub fn attribute_type(kind: IndicatorKind) -> (&'static str, &'static str, bool) {
    match kind {
        IndicatorKind::Ipv4 | IndicatorKind::Ipv6 => ("ip-dst", "Network activity", true),
        IndicatorKind::Domain => ("domain", "Network activity", true),
        IndicatorKind::Url => ("url", "Network activity", true),
        IndicatorKind::Email => ("email-src", "Payload delivery", true),
        IndicatorKind::Md5 => ("md5", "Payload delivery", true),
        IndicatorKind::Sha1 => ("sha1", "Payload delivery", true),
        IndicatorKind::Sha256 => ("sha256", "Payload delivery", true),
        IndicatorKind::FileName => ("filename", "Payload delivery", true),
        IndicatorKind::Cve => ("vulnerability", "External analysis", false),
    }
}

/// MISP's `threat_level_id`: "1" high (critical too), "2" medium, "3" low.
fn threat_level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "1",
        Severity::Medium => "2",
        Severity::Low => "3",
    }
}

/// The colour of a `tlp:*` tag (FIRST's TLP colours).
fn tlp_colour(tlp: Tlp) -> &'static str {
    match tlp {
        Tlp::Clear => "#ffffff",
        Tlp::Green => "#33ff00",
        Tlp::Amber | Tlp::AmberStrict => "#ffc000",
        Tlp::Red => "#ff2b2b",
    }
}

fn tag(name: &str, colour: &str) -> Value {
    json!({ "name": name, "colour": colour, "local": false, "relationship_type": "" })
}

/// True when a reference looks like a URL (a `link` attribute; other
/// references become `text`).
fn is_link(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            && !rest.is_empty()
    }) && !text.chars().any(char::is_whitespace)
}

/// One bulletin as a MISP feed event.
#[derive(Debug, Clone, PartialEq)]
pub struct MispEvent {
    /// The event uuid ([`event_uuid`]).
    pub uuid: String,
    /// The bulletin's label: the feed directory it belongs in.
    pub tlp: Tlp,
    /// `timestamp` (unix seconds): the bulletin's time, or for a retracted
    /// one a later time.
    pub timestamp: u64,
    /// Whether the event carries a retraction.
    pub retracted: bool,
    /// The event file's content, `{"Event": {…}}`.
    pub event: Value,
}

impl MispEvent {
    /// `<uuid>.json`.
    pub fn file_name(&self) -> String {
        format!("{}.json", self.uuid)
    }

    /// The event file as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.event).unwrap_or_default()
    }

    /// The event's `manifest.json` entry (the value under its uuid):
    /// `Orgc`, `Tag`, `info`, `date`, `analysis`, `threat_level_id`,
    /// `timestamp`, as PyMISP's `MISPEvent.manifest` writes them.
    pub fn manifest_entry(&self) -> Value {
        let event = &self.event["Event"];
        let int = |key: &str| {
            event[key]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .map_or(Value::Null, Value::from)
        };
        json!({
            "Orgc": event["Orgc"],
            "Tag": event["Tag"],
            "info": event["info"],
            "date": event["date"],
            "analysis": int("analysis"),
            "threat_level_id": int("threat_level_id"),
            "timestamp": self.timestamp,
        })
    }

    /// The event's `hashes.csv` lines, `md5(value),event uuid`, one per
    /// attribute that is not deleted (a retracted event has none).
    pub fn hash_lines(&self) -> Vec<String> {
        self.event["Event"]["Attribute"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["deleted"] != json!(true))
            .filter_map(|a| a["value"].as_str())
            .map(|value| {
                format!(
                    "{},{}",
                    hex::encode(Md5::digest(value.as_bytes())),
                    self.uuid
                )
            })
            .collect()
    }
}

/// The MISP event of an opened bulletin and, when it has been withdrawn,
/// its opened retraction (by the same organisation, targeting it).
///
/// - `uuid` from the envelope id; `info` = title; `date` = the day of
///   `created_at`; `threat_level_id` from the severity; `analysis` "2";
///   `published` true; `timestamp` = `publish_timestamp` = `created_at` in
///   seconds; `Orgc` = the author organisation;
/// - `Tag`: `tlp:<level>`, then the bulletin's tags (except `tlp:*` ones:
///   an event carries exactly one TLP), `breakwater:severity="<level>"`,
///   `breakwater:sector="<s>"` per sector;
/// - `Attribute`: one per indicator (type per [`attribute_type`], comment =
///   its note) and per reference (`link` if it is a URL, else `text`,
///   category External analysis, `to_ids` false);
/// - `EventReport`: the summary, when not empty.
///
/// A retraction makes the timestamps max(retraction time, bulletin time +
/// 1 s), every attribute and the report `deleted: true` and `to_ids:
/// false`, and adds the tag `workflow:state="rejected"`. The retraction's
/// reason is not exported.
pub fn event(
    bulletin: &Opened<'_>,
    retraction: Option<&Opened<'_>>,
) -> Result<MispEvent, MispError> {
    if let Some(r) = retraction
        && !matches!(r.body, Body::Retraction { .. })
    {
        return Err(MispError::WrongRetraction {
            id: bulletin.id,
            given: r.id,
        });
    }
    build(
        bulletin,
        retraction.map(|r| (r.id, r.header, r.org.org_id.clone())),
    )
}

/// [`event`] for a stored bulletin this node has opened (`body`), its
/// author's organisation looked up in `roster` (revoked members too), and,
/// when it has been withdrawn, the retraction envelope. Only the
/// retraction's signed header is used (its target, author and time, which
/// every relay sees), never its body, so applying it lets nothing out
/// beyond the bulletin's own label, and a node that cannot open the
/// retraction still exports the withdrawal. The caller checks
/// `egress_allowed(envelope.header.tlp, cap)` first.
pub fn event_of(
    envelope: &Envelope,
    body: &Body,
    retraction: Option<&Envelope>,
    roster: &Roster,
) -> Result<MispEvent, MispError> {
    let org_of = |e: &Envelope| {
        Org::of(roster, &e.header.author).ok_or(MispError::UnknownAuthor { id: e.id() })
    };
    let org = org_of(envelope)?;
    let opened = Opened {
        id: envelope.id(),
        header: &envelope.header,
        org: &org,
        body,
    };
    let retraction = match retraction {
        Some(r) => Some((r.id(), &r.header, org_of(r)?.org_id)),
        None => None,
    };
    build(&opened, retraction)
}

fn build(
    bulletin: &Opened<'_>,
    retraction: Option<(Digest, &Header, OrgId)>,
) -> Result<MispEvent, MispError> {
    let (Kind::Bulletin, Body::Bulletin(body)) = (bulletin.header.kind, bulletin.body) else {
        return Err(MispError::NotABulletin {
            id: bulletin.id,
            kind: bulletin.header.kind.as_str(),
        });
    };
    if let Some((id, header, org)) = &retraction {
        let targets = matches!(header.kind, Kind::Retraction { target } if target == bulletin.id);
        if !targets || *org != bulletin.org.org_id {
            return Err(MispError::WrongRetraction {
                id: bulletin.id,
                given: *id,
            });
        }
    }
    let created = bulletin.header.created_at / 1000;
    let stamp = match &retraction {
        Some((_, header, _)) => (header.created_at / 1000).max(created.saturating_add(1)),
        None => created,
    };
    let retracted = retraction.is_some();
    Ok(MispEvent {
        uuid: event_uuid(&bulletin.id),
        tlp: bulletin.header.tlp,
        timestamp: stamp,
        retracted,
        event: json!({ "Event": event_body(bulletin, body, stamp, retracted) }),
    })
}

fn event_body(bulletin: &Opened<'_>, body: &Bulletin, stamp: u64, retracted: bool) -> Value {
    let id = &bulletin.id;
    let tlp = bulletin.header.tlp;
    let stamp_text = stamp.to_string();
    let date: String = timestamp(bulletin.header.created_at)
        .chars()
        .take(10)
        .collect();
    let mut tags = vec![tag(&format!("tlp:{}", tlp.as_str()), tlp_colour(tlp))];
    let mut names: Vec<String> = vec![format!("tlp:{}", tlp.as_str())];
    let mut push = |name: String, colour: &str, tags: &mut Vec<Value>| {
        if !names.contains(&name) {
            tags.push(tag(&name, colour));
            names.push(name);
        }
    };
    for t in &body.tags {
        if !t.trim().to_ascii_lowercase().starts_with("tlp:") {
            push(t.clone(), "#ffffff", &mut tags);
        }
    }
    push(
        format!("breakwater:severity=\"{}\"", body.severity),
        "#0088cc",
        &mut tags,
    );
    for sector in &body.sectors {
        push(
            format!("breakwater:sector=\"{sector}\""),
            "#0088cc",
            &mut tags,
        );
    }
    if retracted {
        push(
            "workflow:state=\"rejected\"".to_string(),
            "#ff0000",
            &mut tags,
        );
    }
    let attribute =
        |kind: &str, value: &str, (mtype, category, to_ids): (&str, &str, bool), comment: &str| {
            json!({
                "uuid": attribute_uuid(id, kind, value),
                "type": mtype,
                "category": category,
                "value": value,
                "to_ids": to_ids && !retracted,
                "comment": comment,
                "timestamp": stamp_text,
                "deleted": retracted,
                "disable_correlation": false,
            })
        };
    let mut attributes: Vec<Value> = Vec::new();
    let mut seen: Vec<(IndicatorKind, &str)> = Vec::new();
    for indicator in &body.indicators {
        if seen.contains(&(indicator.kind, indicator.value.as_str())) {
            continue;
        }
        seen.push((indicator.kind, indicator.value.as_str()));
        attributes.push(attribute(
            indicator.kind.as_str(),
            &indicator.value,
            attribute_type(indicator.kind),
            indicator.note.as_deref().unwrap_or(""),
        ));
    }
    let mut references: Vec<&str> = Vec::new();
    for reference in &body.references {
        if references.contains(&reference.as_str()) {
            continue;
        }
        references.push(reference);
        let mtype = if is_link(reference) { "link" } else { "text" };
        attributes.push(attribute(
            "reference",
            reference,
            (mtype, "External analysis", false),
            "reference",
        ));
    }
    let mut event = Map::new();
    event.insert("uuid".into(), json!(event_uuid(id)));
    event.insert("info".into(), json!(body.title));
    event.insert("date".into(), json!(date));
    event.insert("threat_level_id".into(), json!(threat_level(body.severity)));
    event.insert("analysis".into(), json!("2"));
    event.insert("published".into(), json!(true));
    event.insert("timestamp".into(), json!(stamp_text));
    event.insert("publish_timestamp".into(), json!(stamp_text));
    event.insert(
        "Orgc".into(),
        json!({
            "name": bulletin.org.name,
            "uuid": org_uuid(&bulletin.org.consortium, &bulletin.org.org_id),
        }),
    );
    event.insert("Tag".into(), Value::Array(tags));
    event.insert("Attribute".into(), Value::Array(attributes));
    if !body.summary.trim().is_empty() {
        event.insert(
            "EventReport".into(),
            json!([{
                "uuid": event_report_uuid(id),
                "name": "Summary",
                "content": body.summary,
                "timestamp": stamp_text,
                "deleted": retracted,
            }]),
        );
    }
    Value::Object(event)
}
