//! Import: a STIX 2.1 bundle (or a TAXII envelope's `objects`) to the parts
//! of a bulletin: indicators from `indicator` patterns and `vulnerability`
//! CVEs, title, summary, tags and severity from a single `report`, the TLP
//! from the markings (the strictest wins, a requested TLP may only tighten,
//! no marking is refused), and every object that cannot be mapped kept for
//! the bulletin's attached bundle.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::ids::sdo_id;
use super::marking::{self, DefinitionTlp, TLP2_EXTENSION, tlp_of_label};
use super::pattern::{observable_of, parse_pattern};
use crate::body::{
    BodyError, Bulletin, Indicator, IndicatorKind, Severity, is_forbidden_char, limits,
};
use crate::tlp::Tlp;

/// Why a bundle cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Not JSON.
    #[error("not JSON ({0})")]
    Json(String),
    /// The top-level value is not a STIX bundle.
    #[error("not a STIX bundle (the top-level object's \"type\" is not \"bundle\")")]
    NotBundle,
    /// There are no objects.
    #[error("the bundle has no objects")]
    Empty,
    /// An entry of `objects` is not a STIX object.
    #[error("object #{index} is not a STIX object (no string \"type\" and \"id\")")]
    Malformed {
        /// Its position in `objects`, from 0.
        index: usize,
    },
    /// Nothing in the bundle says its TLP.
    #[error(
        "the bundle carries no TLP marking (no TLP 2.0 or 1.0 marking-definition, OpenCTI TLP marking or tlp:* label); mark it, the import does not guess"
    )]
    NoMarking,
    /// A marking or label claims TLP but names no known level.
    #[error("{object} carries the TLP marking {marking:?}, which names no TLP 2.0 level")]
    UnknownTlp {
        /// The object (or marking-definition) carrying it.
        object: String,
        /// The marking or label as written.
        marking: String,
    },
    /// The requested TLP is looser than the bundle's markings.
    #[error(
        "requested tlp {requested} is looser than the bundle's marking {marked}; a requested tlp may only tighten it"
    )]
    Loosens {
        /// What was requested.
        requested: Tlp,
        /// The strictest marking in the bundle.
        marked: Tlp,
    },
    /// More indicators than one bulletin may carry.
    #[error("the bundle maps to {0} indicators, more than a bulletin's {max}", max = limits::INDICATORS)]
    TooManyIndicators(usize),
    /// The objects that cannot be mapped do not fit a bulletin's attachment.
    #[error(
        "the {count} objects that cannot be mapped take {bytes} bytes, more than a bulletin's STIX attachment may carry ({max} bytes)",
        max = limits::STIX
    )]
    KeptTooLarge {
        /// How many objects.
        count: usize,
        /// Their encoded size.
        bytes: usize,
    },
}

/// Title, summary and labels of the bundle's single `report`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReportFacts {
    /// Its `name`.
    pub name: String,
    /// Its `description`.
    pub description: String,
    /// Severity from a `severity:<level>` label.
    pub severity: Option<Severity>,
    /// Sectors from `sector:<name>` labels.
    pub sectors: Vec<String>,
    /// Its other labels (not `tlp:*`, `severity:*` or `sector:*`).
    pub tags: Vec<String>,
    /// URLs (or descriptions) of its external references, except
    /// Breakwater's own envelope reference.
    pub references: Vec<String>,
}

/// What a bundle imports as.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The TLP to publish at: the strictest marking, or the requested TLP
    /// when that is stricter.
    pub tlp: Tlp,
    /// The strictest TLP the bundle's markings carry.
    pub marked: Tlp,
    /// Indicators mapped from `indicator` patterns and `vulnerability` CVEs,
    /// without duplicates, in bundle order.
    pub indicators: Vec<Indicator>,
    /// The single, unrevoked `report`, if the bundle has exactly one.
    pub report: Option<ReportFacts>,
    /// The objects that could not be mapped, as a bundle for the bulletin's
    /// `stix` attachment; `None` when every object was mapped or dropped.
    pub kept: Option<String>,
    /// How many objects were mapped (indicators, vulnerabilities, the report).
    pub mapped: usize,
    /// How many objects were kept in `kept`.
    pub kept_count: usize,
    /// How many objects were dropped because export makes them again: TLP
    /// marking-definitions, the TLP 2.0 extension-definition, and the
    /// observables of mapped indicators.
    pub dropped: usize,
}

impl Imported {
    /// A bulletin from this import: the report's name, description, tags,
    /// sectors, severity and references where it has them, `fallback_title`
    /// and `fallback_severity` otherwise; text is cleaned of characters a
    /// bulletin refuses and cut to the bulletin's limits.
    pub fn to_bulletin(
        &self,
        fallback_title: &str,
        fallback_severity: Severity,
    ) -> Result<Bulletin, BodyError> {
        let report = self.report.clone().unwrap_or_default();
        let title = clean(&report.name, false, limits::TITLE, true);
        let title = if title.trim().is_empty() {
            fallback_title.to_string()
        } else {
            title
        };
        let mut bulletin = Bulletin::new(&title, report.severity.unwrap_or(fallback_severity));
        bulletin.summary = clean(&report.description, true, limits::SUMMARY, false);
        let list = |items: &[String]| -> Vec<String> {
            let mut out: Vec<String> = Vec::new();
            for item in items {
                let item = clean(item, false, limits::ITEM, false);
                if !item.trim().is_empty() && !out.contains(&item) && out.len() < limits::LIST {
                    out.push(item);
                }
            }
            out
        };
        bulletin.tags = list(&report.tags);
        bulletin.sectors = list(&report.sectors);
        bulletin.references = list(&report.references);
        bulletin.indicators = self.indicators.clone();
        bulletin.stix = self.kept.clone();
        bulletin.check()?;
        Ok(bulletin)
    }
}

/// `text` without characters a bulletin field refuses (replaced by spaces),
/// cut to `max` bytes (or characters, when `chars`) on a character boundary.
fn clean(text: &str, multiline: bool, max: usize, chars: bool) -> String {
    let mut out = String::new();
    for (count, c) in text.trim().chars().enumerate() {
        let c = if is_forbidden_char(c, multiline) {
            ' '
        } else {
            c
        };
        if (chars && count >= max) || (!chars && out.len() + c.len_utf8() > max) {
            break;
        }
        out.push(c);
    }
    out.trim().to_string()
}

/// Imports a STIX 2.1 bundle given as JSON text; see [`import_objects`].
pub fn import(text: &str, requested: Option<Tlp>) -> Result<Imported, ImportError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ImportError::Json(e.to_string()))?;
    if value.get("type").and_then(Value::as_str) != Some("bundle") {
        return Err(ImportError::NotBundle);
    }
    let objects = match value.get("objects") {
        Some(Value::Array(objects)) => objects.as_slice(),
        _ => &[],
    };
    import_objects(objects, requested)
}

/// Imports STIX objects (a bundle's `objects`, or the `objects` of a TAXII
/// envelope):
/// - the TLP is the strictest of every marking that names one: references
///   (object-level and granular) to TLP 2.0 or 1.0 ids, to OpenCTI's TLP
///   ids or to TLP marking-definitions in the bundle, the TLP
///   marking-definitions present, and `tlp:*` labels; none at all is
///   refused, as is a TLP marking that names no known level;
/// - `requested` may only tighten it;
/// - an unrevoked `indicator` whose STIX pattern is one or more equality
///   comparisons on the mapping table's paths joined by `OR` gives those
///   indicators; an unrevoked `vulnerability` with a `cve` external id (or a
///   CVE name) gives a `cve` indicator; its `description` becomes the note
///   unless it is just the report's name;
/// - exactly one unrevoked `report` gives the bulletin's text;
/// - TLP marking-definitions, the TLP 2.0 extension-definition and the
///   observables of mapped indicators are dropped (export makes them
///   again); every other object is kept, unchanged, for the attachment.
pub fn import_objects(objects: &[Value], requested: Option<Tlp>) -> Result<Imported, ImportError> {
    if objects.is_empty() {
        return Err(ImportError::Empty);
    }
    let mut typed: Vec<(&Map<String, Value>, &str, &str)> = Vec::new();
    for (index, item) in objects.iter().enumerate() {
        let Value::Object(object) = item else {
            return Err(ImportError::Malformed { index });
        };
        let (Some(Value::String(stix_type)), Some(Value::String(id))) =
            (object.get("type"), object.get("id"))
        else {
            return Err(ImportError::Malformed { index });
        };
        typed.push((object, stix_type, id));
    }
    let marked = strictest_marking(&typed)?.ok_or(ImportError::NoMarking)?;
    let tlp = match requested {
        Some(requested) if requested < marked => {
            return Err(ImportError::Loosens { requested, marked });
        }
        Some(requested) => requested,
        None => marked,
    };

    let revoked: HashSet<&str> = typed
        .iter()
        .filter(|(object, _, _)| object.get("revoked").and_then(Value::as_bool) == Some(true))
        .map(|&(_, _, id)| id)
        .collect();
    let mut report_ids: Vec<&str> = typed
        .iter()
        .filter(|(_, stix_type, id)| *stix_type == "report" && !revoked.contains(id))
        .map(|&(_, _, id)| id)
        .collect();
    report_ids.dedup();
    // Exactly one report (possibly in several versions): its latest listed
    // version gives the text.
    let report_used: Option<&str> = match report_ids.as_slice() {
        [only] => Some(*only),
        _ => None,
    };
    let report = report_used.and_then(|used| {
        typed
            .iter()
            .rev()
            .find(|(_, stix_type, id)| *stix_type == "report" && *id == used)
            .map(|(object, _, _)| report_facts(object))
    });
    let report_name = report.as_ref().map(|r| r.name.clone()).unwrap_or_default();

    let mut indicators: Vec<Indicator> = Vec::new();
    let mut mapped_ids: HashSet<&str> = HashSet::new();
    let mut observables: HashSet<String> = HashSet::new();
    for &(object, stix_type, id) in &typed {
        if revoked.contains(id) {
            continue;
        }
        let found = match stix_type {
            "indicator" => indicator_of(object),
            "vulnerability" => vulnerability_of(object).map(|i| vec![i]),
            _ => None,
        };
        let Some(found) = found else {
            continue;
        };
        let note = object
            .get("description")
            .and_then(Value::as_str)
            .map(|d| clean(d, false, limits::ITEM, false))
            .filter(|d| !d.is_empty() && *d != report_name);
        mapped_ids.insert(id);
        for mut indicator in found {
            if let Some(sco) = observable_of(&indicator)
                && let Some(sco_id) = sco.get("id").and_then(Value::as_str)
            {
                observables.insert(sco_id.to_string());
            }
            indicator.note = note.clone();
            if !indicators
                .iter()
                .any(|i| i.kind == indicator.kind && i.value == indicator.value)
            {
                indicators.push(indicator);
            }
        }
    }
    if indicators.len() > limits::INDICATORS {
        return Err(ImportError::TooManyIndicators(indicators.len()));
    }

    let mut kept: Vec<Value> = Vec::new();
    let mut dropped = 0;
    for &(object, stix_type, id) in &typed {
        if mapped_ids.contains(id) || Some(id) == report_used {
            continue;
        }
        let is_tlp_definition = stix_type == "marking-definition"
            && marking::tlp_of_definition(&Value::Object(object.clone())) != DefinitionTlp::None;
        if is_tlp_definition || id == TLP2_EXTENSION || observables.contains(id) {
            dropped += 1;
            continue;
        }
        kept.push(Value::Object(object.clone()));
    }
    let mapped = mapped_ids.len() + usize::from(report_used.is_some());
    let kept_count = kept.len();
    let kept = if kept.is_empty() {
        None
    } else {
        let bundle_id = {
            let ids: Vec<&[u8]> = kept
                .iter()
                .filter_map(|o| o.get("id").and_then(Value::as_str))
                .map(str::as_bytes)
                .collect();
            sdo_id("bundle", "kept", &ids)
        };
        let bundle = json!({
            "type": "bundle",
            "id": bundle_id,
            "objects": kept,
        });
        let text = bundle.to_string();
        if text.len() > limits::STIX {
            return Err(ImportError::KeptTooLarge {
                count: kept_count,
                bytes: text.len(),
            });
        }
        Some(text)
    };
    Ok(Imported {
        tlp,
        marked,
        indicators,
        report,
        kept,
        mapped,
        kept_count,
        dropped,
    })
}

/// The strictest TLP any marking in `objects` names.
fn strictest_marking(
    objects: &[(&Map<String, Value>, &str, &str)],
) -> Result<Option<Tlp>, ImportError> {
    let mut definitions: HashMap<&str, Tlp> = HashMap::new();
    let mut strictest: Option<Tlp> = None;
    for &(object, stix_type, id) in objects {
        if stix_type != "marking-definition" {
            continue;
        }
        match marking::tlp_of_definition(&Value::Object(object.clone())) {
            DefinitionTlp::Level(tlp) => {
                definitions.insert(id, tlp);
                strictest = strictest.max(Some(tlp));
            }
            DefinitionTlp::Unknown(claim) => {
                return Err(ImportError::UnknownTlp {
                    object: id.to_string(),
                    marking: claim,
                });
            }
            DefinitionTlp::None => {}
        }
    }
    for &(object, _, id) in objects {
        for reference in marking::marking_refs_in(object) {
            let tlp =
                marking::tlp_of_known_id(reference).or_else(|| definitions.get(reference).copied());
            strictest = strictest.max(tlp);
        }
        for label in object
            .get("labels")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            match tlp_of_label(label) {
                Some(Ok(tlp)) => strictest = strictest.max(Some(tlp)),
                Some(Err(label)) => {
                    return Err(ImportError::UnknownTlp {
                        object: id.to_string(),
                        marking: label,
                    });
                }
                None => {}
            }
        }
    }
    Ok(strictest)
}

/// The indicators of an `indicator` object with a mappable STIX pattern.
fn indicator_of(object: &Map<String, Value>) -> Option<Vec<Indicator>> {
    let pattern_type = object
        .get("pattern_type")
        .and_then(Value::as_str)
        .unwrap_or("stix");
    if !pattern_type.eq_ignore_ascii_case("stix") {
        return None;
    }
    parse_pattern(object.get("pattern")?.as_str()?)
}

/// The CVE of a `vulnerability`: its `cve` external id, else its name.
fn vulnerability_of(object: &Map<String, Value>) -> Option<Indicator> {
    let external = object
        .get("external_references")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| {
            r.get("source_name")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case("cve"))
        })
        .filter_map(|r| r.get("external_id").and_then(Value::as_str));
    let name = object.get("name").and_then(Value::as_str);
    external
        .chain(name)
        .find_map(|candidate| Indicator::new(IndicatorKind::Cve, candidate).ok())
}

/// The bulletin text of a `report`.
fn report_facts(object: &Map<String, Value>) -> ReportFacts {
    let text = |name: &str| {
        object
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut facts = ReportFacts {
        name: text("name"),
        description: text("description"),
        ..ReportFacts::default()
    };
    for label in object
        .get("labels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let lower = label.trim().to_ascii_lowercase();
        if tlp_of_label(label).is_some() {
            continue;
        }
        if let Some(level) = lower.strip_prefix("severity:")
            && let Ok(severity) = level.parse::<Severity>()
        {
            facts.severity = facts.severity.max(Some(severity));
            continue;
        }
        if let Some(sector) = label.trim().strip_prefix("sector:") {
            facts.sectors.push(sector.to_string());
            continue;
        }
        facts.tags.push(label.to_string());
    }
    for reference in object
        .get("external_references")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let source = reference
            .get("source_name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if source == "breakwater" {
            continue;
        }
        let url = reference.get("url").and_then(Value::as_str);
        let description = reference.get("description").and_then(Value::as_str);
        if let Some(text) = url.or(if source == "reference" {
            description
        } else {
            None
        }) {
            facts.references.push(text.to_string());
        }
    }
    facts
}
