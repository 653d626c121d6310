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
    rfc3339(unix_ms / 1000, &format!("{:03}", unix_ms % 1000))
}

/// A timestamp with microseconds (`YYYY-MM-DDTHH:MM:SS.uuuuuuZ`, UTC) for
/// unix microseconds: TAXII's `date_added`, which must be exact enough to
/// serve as an `added_after` cursor.
pub fn timestamp_micros(unix_us: u64) -> String {
    rfc3339(unix_us / 1_000_000, &format!("{:06}", unix_us % 1_000_000))
}

/// `YYYY-MM-DDTHH:MM:SS.<fraction>Z` for unix seconds.
fn rfc3339(secs: u64, fraction: &str) -> String {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Unix microseconds of an RFC 3339 UTC timestamp as STIX and TAXII write
/// them (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`, at most microseconds counted;
/// finer digits are truncated). `None` for anything else, or a date before
/// 1970.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z').or_else(|| text.strip_suffix('z'))?;
    let (date, time) = text.split_once(['T', 't'])?;
    let mut date_parts = date.splitn(3, '-');
    let number = |part: Option<&str>, len: usize| -> Option<u64> {
        let part = part?;
        (part.len() == len && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let year = number(date_parts.next(), 4)?;
    let month = number(date_parts.next(), 2)?;
    let day = number(date_parts.next(), 2)?;
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let mut clock_parts = clock.splitn(3, ':');
    let hour = number(clock_parts.next(), 2)?;
    let minute = number(clock_parts.next(), 2)?;
    let second = number(clock_parts.next(), 2)?;
    let micros = match fraction {
        None => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            let digits: String = f.chars().chain(std::iter::repeat('0')).take(6).collect();
            digits.parse::<u64>().ok()?
        }
        Some(_) => return None,
    };
    let valid = (1970..=9999).contains(&year)
        && (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    if !valid {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date from 1970 on (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian date (year, month, day) of `days` after 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for non-negative days). The one
/// calendar conversion of the workspace: the CLI and the dashboard format
/// times through it too.
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_microseconds() {
        for us in [
            0u64,
            951_782_400_000_001,   // 2000-02-29, a leap day
            1_767_225_599_999_999, // 2025-12-31T23:59:59.999999
            1_780_000_000_123_456,
        ] {
            let text = timestamp_micros(us);
            assert_eq!(parse_timestamp(&text), Some(us), "{text}");
        }
        assert_eq!(timestamp_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            parse_timestamp("2016-01-01T01:01:01Z"),
            Some(1_451_610_061_000_000)
        );
        // Milliseconds, and digits past microseconds truncated.
        assert_eq!(
            parse_timestamp("2016-01-01T01:01:01.5Z"),
            Some(1_451_610_061_500_000)
        );
        assert_eq!(
            parse_timestamp("2016-01-01T01:01:01.1234567Z"),
            Some(1_451_610_061_123_456)
        );
        assert_eq!(
            parse_timestamp(&timestamp(1_451_610_061_042)),
            Some(1_451_610_061_042_000)
        );
    }

    #[test]
    fn malformed_timestamps_are_none() {
        for bad in [
            "",
            "2016-01-01",
            "2016-01-01T01:01:01",
            "2016-01-01T01:01:01+01:00",
            "2016-02-30T00:00:00Z",
            "2015-02-29T00:00:00Z",
            "2016-13-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2016-01-01T24:00:00Z",
            "2016-01-01T01:01:01.Z",
            "2016-01-01T01:01:01.x1Z",
            "20160101T010101Z",
            "2016-1-01T01:01:01Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }
}
