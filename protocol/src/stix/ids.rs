//! Deterministic STIX identifiers and timestamps: spec UUIDv5 ids for
//! observables (SCOs), blake3-derived UUIDv4-shaped ids for everything else,
//! and RFC 3339 timestamps from unix milliseconds. Pure functions, so every
//! node that exports the same envelope writes the same ids.

use serde_json::Value;
use uuid::Uuid;

/// The namespace STIX 2.1 (§2.9) fixes for deterministic SCO ids.
pub const SCO_NAMESPACE: Uuid = Uuid::from_bytes([
    0x00, 0xab, 0xed, 0xb4, 0xaa, 0x42, 0x46, 0x6c, 0x9c, 0x01, 0xfe, 0xd2, 0x33, 0x15, 0xa9, 0xb7,
]);

/// Domain tag that opens every hash behind an SDO, SRO or bundle id.
const SDO_DOMAIN: &[u8] = b"breakwater";

/// The id of an observable of type `sco_type` whose id-contributing
/// properties are `contributing` (a JSON object): UUIDv5 in
/// [`SCO_NAMESPACE`] over the canonical JSON of those properties (sorted
/// keys, no spaces, UTF-8 unescaped), as STIX 2.1 §2.9 and python-stix2 do.
pub fn sco_id(sco_type: &str, contributing: &Value) -> String {
    // serde_json's map is a BTreeMap here (no `preserve_order`), so keys come
    // out sorted; sort explicitly anyway in case a dependency turns it on.
    let canonical = canonical_json(contributing);
    let uuid = Uuid::new_v5(&SCO_NAMESPACE, canonical.as_bytes());
    format!("{sco_type}--{}", uuid.hyphenated())
}

/// Canonical JSON (RFC 8785 for the values observables use: objects,
/// strings, integers): keys sorted, no whitespace.
pub fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    let v = map.get(k).map(canonical_json).unwrap_or_default();
                    format!("{}:{v}", Value::String(k.clone()))
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// The id of a Breakwater-made SDO, SRO or bundle of type `stix_type`:
/// `blake3("breakwater" ‖ 0 ‖ role ‖ 0 ‖ part₁ ‖ 0 ‖ part₂ ‖ 0 …)`, first 16
/// bytes, with the version nibble set to 4 and the variant bits to `10`, so
/// the result is a well-formed UUIDv4 (validator check 103 stays quiet) that
/// is identical on every node.
pub fn sdo_id(stix_type: &str, role: &str, parts: &[&[u8]]) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(SDO_DOMAIN);
    hasher.update(&[0]);
    hasher.update(role.as_bytes());
    hasher.update(&[0]);
    for part in parts {
        hasher.update(part);
        hasher.update(&[0]);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_bytes()[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    format!("{stix_type}--{}", Uuid::from_bytes(bytes).hyphenated())
}

/// A STIX timestamp (`YYYY-MM-DDTHH:MM:SS.mmmZ`, UTC) for unix milliseconds.
pub fn timestamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
