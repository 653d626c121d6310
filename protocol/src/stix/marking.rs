//! TLP in STIX: the five official TLP 2.0 marking-definition objects that
//! exports carry, the markings imports recognise (TLP 2.0 and 1.0 ids,
//! OpenCTI's TLP markings, TLP marking-definition objects of any id, MISP's
//! `tlp:*` labels), and the up-marking that keeps an attached object at
//! least as strict as its envelope.

use serde_json::{Map, Value, json};

use crate::tlp::Tlp;

/// The TLP 2.0 extension-definition the official marking objects use.
pub const TLP2_EXTENSION: &str = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d";

/// The official TLP 2.0 marking-definition id of `tlp`
/// (oasis-open/cti-stix-common-objects).
pub fn marking_id(tlp: Tlp) -> &'static str {
    match tlp {
        Tlp::Clear => "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
        Tlp::Green => "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
        Tlp::Amber => "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
        Tlp::AmberStrict => "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
        Tlp::Red => "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
    }
}

/// The official TLP 2.0 marking-definition object of `tlp`, exactly as
/// published (no other fields: the extension's schema forbids them).
pub fn marking_definition(tlp: Tlp) -> Value {
    let name = match tlp {
        Tlp::Clear => "TLP:CLEAR",
        Tlp::Green => "TLP:GREEN",
        Tlp::Amber => "TLP:AMBER",
        Tlp::AmberStrict => "TLP:AMBER+STRICT",
        Tlp::Red => "TLP:RED",
    };
    json!({
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": marking_id(tlp),
        "created": "2022-10-01T00:00:00.000Z",
        "name": name,
        "extensions": {
            TLP2_EXTENSION: {
                "extension_type": "property-extension",
                "tlp_2_0": tlp.as_str(),
            }
        }
    })
}

/// Marking-definition ids that mean a TLP level wherever they appear: the
/// official TLP 2.0 ids; the TLP 1.0 ids of STIX 2.1 §7.2.1.4 (WHITE is
/// CLEAR), which OpenCTI also uses for CLEAR, GREEN, AMBER and RED; OpenCTI's
/// fixed AMBER+STRICT id (pycti `MarkingDefinition.generate_id`); and the id
/// the `stix2` 0.1 crate writes for AMBER+STRICT.
const KNOWN_IDS: [(&str, Tlp); 11] = [
    (
        "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
        Tlp::Clear,
    ),
    (
        "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
        Tlp::Green,
    ),
    (
        "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
        Tlp::Amber,
    ),
    (
        "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
        Tlp::AmberStrict,
    ),
    (
        "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
        Tlp::Red,
    ),
    (
        "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
        Tlp::Clear,
    ),
    (
        "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
        Tlp::Green,
    ),
    (
        "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
        Tlp::Amber,
    ),
    (
        "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
        Tlp::Red,
    ),
    (
        "marking-definition--826578e1-40ad-459f-bc73-ede076f81f37",
        Tlp::AmberStrict,
    ),
    (
        "marking-definition--826578e1-40a3-4b26-bf02-f8e3c5d7f8a8",
        Tlp::AmberStrict,
    ),
];

/// The TLP a well-known marking-definition id stands for.
pub fn tlp_of_known_id(id: &str) -> Option<Tlp> {
    KNOWN_IDS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(id))
        .map(|&(_, tlp)| tlp)
}

/// A TLP value written by some tool (`amber`, `TLP:AMBER+STRICT`,
/// `TLP:WHITE`, …), or `None` when it names no TLP 2.0 level.
pub fn parse_tlp_text(text: &str) -> Option<Tlp> {
    let lower = text.trim().to_ascii_lowercase();
    let bare = lower.strip_prefix("tlp:").unwrap_or(&lower).trim();
    if bare == "white" {
        return Some(Tlp::Clear);
    }
    bare.parse().ok()
}

/// What a marking-definition object says about TLP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefinitionTlp {
    /// Not a TLP marking.
    None,
    /// A TLP marking of this level.
    Level(Tlp),
    /// It claims to be TLP but names no level this importer knows.
    Unknown(String),
}

/// What a marking-definition object says about TLP: its well-known id; a
/// TLP 2.0 extension (`tlp_2_0`); a TLP 1.0 definition (`definition_type:
/// "tlp"`); OpenCTI's `x_opencti_definition_type: "TLP"`; or a `name`
/// starting with `TLP:`.
pub fn tlp_of_definition(object: &Value) -> DefinitionTlp {
    let mut claims: Vec<String> = Vec::new();
    if let Some(tlp) = object
        .get("id")
        .and_then(Value::as_str)
        .and_then(tlp_of_known_id)
    {
        claims.push(tlp.as_str().to_string());
    }
    if let Some(level) = object
        .get("extensions")
        .and_then(|e| e.get(TLP2_EXTENSION))
        .and_then(|e| e.get("tlp_2_0"))
    {
        claims.push(level.as_str().unwrap_or("?").to_string());
    }
    let str_field = |name: &str| object.get(name).and_then(Value::as_str);
    if str_field("definition_type").is_some_and(|t| t.eq_ignore_ascii_case("tlp")) {
        let level = object
            .get("definition")
            .and_then(|d| d.get("tlp"))
            .and_then(Value::as_str)
            .or_else(|| str_field("name"))
            .unwrap_or("?");
        claims.push(level.to_string());
    }
    if str_field("x_opencti_definition_type").is_some_and(|t| t.eq_ignore_ascii_case("tlp")) {
        claims.push(str_field("x_opencti_definition").unwrap_or("?").to_string());
    }
    if let Some(name) = str_field("name")
        && name.trim().to_ascii_lowercase().starts_with("tlp:")
    {
        claims.push(name.to_string());
    }
    let mut strictest: Option<Tlp> = None;
    for claim in claims {
        match parse_tlp_text(&claim) {
            Some(tlp) => strictest = strictest.max(Some(tlp)),
            None => return DefinitionTlp::Unknown(claim),
        }
    }
    strictest.map_or(DefinitionTlp::None, DefinitionTlp::Level)
}

/// What a label says about TLP: `Some(Ok(level))` for `tlp:<level>`,
/// `Some(Err(label))` for a `tlp:` label naming no known level, `None` for
/// any other label.
pub fn tlp_of_label(label: &str) -> Option<Result<Tlp, String>> {
    let lower = label.trim().to_ascii_lowercase();
    if !lower.starts_with("tlp:") {
        return None;
    }
    Some(parse_tlp_text(&lower).ok_or_else(|| label.to_string()))
}

/// Marks `object` at least as strictly as `floor`, in place: every TLP
/// marking ref (object-level or granular) becomes the official TLP 2.0 id of
/// max(its level, `floor`), an object without an object-level TLP ref gets
/// `floor`'s, and `tlp:*` labels are removed (the marking says it).
/// `tlp_of_ref` resolves ids that are not well known (e.g. a bundle's own
/// TLP marking-definitions).
pub fn force_at_least(
    object: &mut Map<String, Value>,
    floor: Tlp,
    tlp_of_ref: &dyn Fn(&str) -> Option<Tlp>,
) {
    let raise = |id: &str| -> Option<Value> {
        tlp_of_ref(id).map(|tlp| Value::String(marking_id(tlp.max(floor)).to_string()))
    };
    let mut refs: Vec<Value> = match object.get("object_marking_refs") {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    let mut has_tlp = false;
    for item in refs.iter_mut() {
        if let Some(raised) = item.as_str().and_then(raise) {
            *item = raised;
            has_tlp = true;
        }
    }
    if !has_tlp {
        refs.push(Value::String(marking_id(floor).to_string()));
    }
    let mut seen = Vec::new();
    refs.retain(|r| {
        let fresh = !seen.contains(r);
        seen.push(r.clone());
        fresh
    });
    object.insert("object_marking_refs".into(), Value::Array(refs));
    if let Some(Value::Array(granular)) = object.get_mut("granular_markings") {
        for marking in granular.iter_mut() {
            if let Some(slot) = marking.get_mut("marking_ref")
                && let Some(raised) = slot.as_str().and_then(raise)
            {
                *slot = raised;
            }
        }
    }
    let mut drop_labels = false;
    if let Some(Value::Array(labels)) = object.get_mut("labels") {
        labels.retain(|l| l.as_str().and_then(tlp_of_label).is_none());
        drop_labels = labels.is_empty();
    }
    if drop_labels {
        object.remove("labels");
    }
}

/// Every marking reference an object carries: `object_marking_refs` and the
/// `marking_ref` of each granular marking.
pub(crate) fn marking_refs(object: &Value) -> impl Iterator<Item = &str> {
    object.as_object().into_iter().flat_map(marking_refs_in)
}

/// [`marking_refs`] of an object already taken as a JSON map.
pub(crate) fn marking_refs_in(object: &Map<String, Value>) -> impl Iterator<Item = &str> {
    let object_refs = object
        .get("object_marking_refs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let granular_refs = object
        .get("granular_markings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("marking_ref"));
    object_refs.chain(granular_refs).filter_map(Value::as_str)
}
