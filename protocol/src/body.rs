//! The plaintext inside an envelope: bulletins, retraction reasons and
//! sightings, with indicators parsed and checked by kind.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::bytes::Digest;

/// Bounds on body fields.
pub mod limits {
    /// Longest title, in characters.
    pub const TITLE: usize = 200;
    /// Longest summary, in bytes.
    pub const SUMMARY: usize = 64 * 1024;
    /// Most indicators in one bulletin.
    pub const INDICATORS: usize = 2000;
    /// Longest indicator value, in bytes.
    pub const INDICATOR_VALUE: usize = 2048;
    /// Most tags, sectors or references.
    pub const LIST: usize = 64;
    /// Longest tag, sector, note or reference.
    pub const ITEM: usize = 512;
    /// Largest STIX bundle, in bytes.
    pub const STIX: usize = 192 * 1024;
}

/// True for characters no text field may carry, because a terminal or a
/// renderer would act on them: C0 and C1 controls and DEL (except `\n` and
/// `\t` in multi-line fields), the line and paragraph separators, and the
/// bidi embedding, override and isolate controls (U+202A-U+202E,
/// U+2066-U+2069).
pub fn is_forbidden_char(c: char, multiline: bool) -> bool {
    if multiline && (c == '\n' || c == '\t') {
        return false;
    }
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// True when `text` carries a character [`is_forbidden_char`] refuses.
pub fn has_forbidden_char(text: &str, multiline: bool) -> bool {
    text.chars().any(|c| is_forbidden_char(c, multiline))
}

/// The problem reported for a field with a forbidden character.
pub const FORBIDDEN_CHAR: &str = "contains a control or bidi-override character";

/// Why a body is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// A field is empty, too long or has too many items.
    #[error("bulletin field {field}: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// An indicator is malformed.
    #[error(transparent)]
    Indicator(#[from] IndicatorError),
    /// The STIX attachment is not a JSON STIX bundle.
    #[error("stix attachment is not a STIX 2.1 bundle: {0}")]
    Stix(String),
}

/// Bulletin severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// All severities, lowest first.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown severity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity {0:?} (expected low, medium, high or critical)")]
pub struct SeverityError(pub String);

impl FromStr for Severity {
    type Err = SeverityError;
    fn from_str(s: &str) -> Result<Severity, SeverityError> {
        let lower = s.trim().to_ascii_lowercase();
        Severity::ALL
            .into_iter()
            .find(|sev| sev.as_str() == lower)
            .ok_or_else(|| SeverityError(s.to_string()))
    }
}

/// What an indicator's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IndicatorKind {
    /// IPv4 address.
    Ipv4,
    /// IPv6 address.
    Ipv6,
    /// DNS domain name.
    Domain,
    /// URL.
    Url,
    /// E-mail address.
    Email,
    /// MD5 file hash.
    Md5,
    /// SHA-1 file hash.
    Sha1,
    /// SHA-256 file hash.
    Sha256,
    /// CVE identifier.
    Cve,
    /// File name.
    FileName,
}

impl IndicatorKind {
    /// All kinds.
    pub const ALL: [IndicatorKind; 10] = [
        IndicatorKind::Ipv4,
        IndicatorKind::Ipv6,
        IndicatorKind::Domain,
        IndicatorKind::Url,
        IndicatorKind::Email,
        IndicatorKind::Md5,
        IndicatorKind::Sha1,
        IndicatorKind::Sha256,
        IndicatorKind::Cve,
        IndicatorKind::FileName,
    ];

    /// The kind as written before the colon: `ipv4`, `file-name`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            IndicatorKind::Ipv4 => "ipv4",
            IndicatorKind::Ipv6 => "ipv6",
            IndicatorKind::Domain => "domain",
            IndicatorKind::Url => "url",
            IndicatorKind::Email => "email",
            IndicatorKind::Md5 => "md5",
            IndicatorKind::Sha1 => "sha1",
            IndicatorKind::Sha256 => "sha256",
            IndicatorKind::Cve => "cve",
            IndicatorKind::FileName => "file-name",
        }
    }
}

impl fmt::Display for IndicatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A malformed indicator; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndicatorError {
    /// Not of the form `KIND:VALUE`.
    #[error("indicator {0:?} is not KIND:VALUE")]
    Syntax(String),
    /// The kind is unknown.
    #[error(
        "indicator {input:?}: unknown kind {kind:?} (expected one of ipv4, ipv6, domain, url, email, md5, sha1, sha256, cve, file-name)"
    )]
    UnknownKind {
        /// Full input.
        input: String,
        /// The kind given.
        kind: String,
    },
    /// The value is not valid for its kind.
    #[error("indicator {kind}:{value}: {problem}")]
    BadValue {
        /// Kind.
        kind: IndicatorKind,
        /// Value given (truncated).
        value: String,
        /// What is wrong.
        problem: &'static str,
    },
}

impl FromStr for IndicatorKind {
    type Err = IndicatorError;
    fn from_str(s: &str) -> Result<IndicatorKind, IndicatorError> {
        let lower = s.trim().to_ascii_lowercase().replace('_', "-");
        IndicatorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == lower)
            .ok_or_else(|| IndicatorError::UnknownKind {
                input: s.to_string(),
                kind: s.to_string(),
            })
    }
}

/// One indicator of compromise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Indicator {
    /// Kind.
    pub kind: IndicatorKind,
    /// Normalised value.
    pub value: String,
    /// Optional analyst note.
    #[serde(default)]
    pub note: Option<String>,
}

impl Indicator {
    /// Checks and normalises `value` for `kind` (hashes and domains lower-case,
    /// CVE ids upper-case, IPv6 in canonical form).
    pub fn new(kind: IndicatorKind, value: &str) -> Result<Indicator, IndicatorError> {
        let value = normalise(kind, value.trim())?;
        Ok(Indicator {
            kind,
            value,
            note: None,
        })
    }

    /// Parses `KIND:VALUE`, e.g. `ipv4:203.0.113.7` or `sha256:…`.
    pub fn parse(input: &str) -> Result<Indicator, IndicatorError> {
        let (kind, value) = input
            .split_once(':')
            .ok_or_else(|| IndicatorError::Syntax(input.to_string()))?;
        let kind = kind
            .parse::<IndicatorKind>()
            .map_err(|_| IndicatorError::UnknownKind {
                input: input.to_string(),
                kind: kind.to_string(),
            })?;
        Indicator::new(kind, value)
    }

    /// Checks that the stored value is valid and normalised for its kind.
    pub fn check(&self) -> Result<(), IndicatorError> {
        let normal = normalise(self.kind, &self.value)?;
        if normal != self.value {
            return Err(self.bad("is not in normal form"));
        }
        if let Some(note) = &self.note {
            if note.len() > limits::ITEM {
                return Err(self.bad("note is too long"));
            }
            if has_forbidden_char(note, false) {
                return Err(self.bad("note contains a control or bidi-override character"));
            }
        }
        Ok(())
    }

    fn bad(&self, problem: &'static str) -> IndicatorError {
        bad(self.kind, &self.value, problem)
    }

    /// The index key, `kind:value`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind, self.value)
    }
}

impl fmt::Display for Indicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

fn bad(kind: IndicatorKind, value: &str, problem: &'static str) -> IndicatorError {
    IndicatorError::BadValue {
        kind,
        value: value.chars().take(120).collect(),
        problem,
    }
}

fn is_hex(value: &str, len: usize) -> bool {
    value.len() == len && value.bytes().all(|b| b.is_ascii_hexdigit())
}

fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && labels
            .last()
            .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
}

fn normalise(kind: IndicatorKind, value: &str) -> Result<String, IndicatorError> {
    let fail = |problem| Err(bad(kind, value, problem));
    if value.is_empty() {
        return fail("value is empty");
    }
    if value.len() > limits::INDICATOR_VALUE {
        return fail("value is too long");
    }
    if has_forbidden_char(value, false) {
        return fail(FORBIDDEN_CHAR);
    }
    match kind {
        IndicatorKind::Ipv4 => match value.parse::<Ipv4Addr>() {
            Ok(addr) => Ok(addr.to_string()),
            Err(_) => fail("not an IPv4 address"),
        },
        IndicatorKind::Ipv6 => match value.parse::<Ipv6Addr>() {
            Ok(addr) => Ok(addr.to_string()),
            Err(_) => fail("not an IPv6 address"),
        },
        IndicatorKind::Domain => {
            let lower = value.trim_end_matches('.').to_ascii_lowercase();
            if valid_domain(&lower) {
                Ok(lower)
            } else {
                fail("not a domain name")
            }
        }
        IndicatorKind::Url => {
            let Some((scheme, rest)) = value.split_once("://") else {
                return fail("not a URL (missing scheme://)");
            };
            let scheme_ok = !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            if !scheme_ok
                || host.is_empty()
                || value.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return fail("not a URL");
            }
            Ok(format!("{}://{}", scheme.to_ascii_lowercase(), rest))
        }
        IndicatorKind::Email => {
            let Some((local, domain)) = value.rsplit_once('@') else {
                return fail("not an e-mail address");
            };
            let domain = domain.to_ascii_lowercase();
            let local_ok = !local.is_empty()
                && local.len() <= 64
                && !local
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '@');
            if local_ok && valid_domain(&domain) {
                Ok(format!("{local}@{domain}"))
            } else {
                fail("not an e-mail address")
            }
        }
        IndicatorKind::Md5 | IndicatorKind::Sha1 | IndicatorKind::Sha256 => {
            let (len, problem) = match kind {
                IndicatorKind::Md5 => (32, "an md5 must be 32 hex characters"),
                IndicatorKind::Sha1 => (40, "a sha1 must be 40 hex characters"),
                _ => (64, "a sha256 must be 64 hex characters"),
            };
            if is_hex(value, len) {
                Ok(value.to_ascii_lowercase())
            } else {
                fail(problem)
            }
        }
        IndicatorKind::Cve => {
            let upper = value.to_ascii_uppercase();
            let mut parts = upper.splitn(3, '-');
            let ok = parts.next() == Some("CVE")
                && parts
                    .next()
                    .is_some_and(|y| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()))
                && parts.next().is_some_and(|n| {
                    (4..=19).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit())
                });
            if ok {
                Ok(upper)
            } else {
                fail("not a CVE id (CVE-YYYY-NNNN)")
            }
        }
        IndicatorKind::FileName => {
            if value.len() > 255
                || value.contains(['/', '\\', '\0'])
                || value.chars().any(char::is_control)
            {
                fail(
                    "not a file name (no path separators or control characters, at most 255 bytes)",
                )
            } else {
                Ok(value.to_string())
            }
        }
    }
}

/// A threat bulletin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bulletin {
    /// One-line title.
    pub title: String,
    /// Markdown summary.
    #[serde(default)]
    pub summary: String,
    /// Severity.
    pub severity: Severity,
    /// Free tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Sectors concerned.
    #[serde(default)]
    pub sectors: Vec<String>,
    /// Indicators of compromise.
    #[serde(default)]
    pub indicators: Vec<Indicator>,
    /// A STIX 2.1 bundle, as JSON text.
    #[serde(default)]
    pub stix: Option<String>,
    /// References (URLs, advisories).
    #[serde(default)]
    pub references: Vec<String>,
    /// An earlier bulletin this one replaces.
    #[serde(default)]
    pub supersedes: Option<Digest>,
}

impl Bulletin {
    /// A bulletin with a title and severity and nothing else.
    pub fn new(title: &str, severity: Severity) -> Bulletin {
        Bulletin {
            title: title.to_string(),
            summary: String::new(),
            severity,
            tags: Vec::new(),
            sectors: Vec::new(),
            indicators: Vec::new(),
            stix: None,
            references: Vec::new(),
            supersedes: None,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn check(&self) -> Result<(), BodyError> {
        let field = |field, problem: &str| BodyError::Field {
            field,
            problem: problem.to_string(),
        };
        if self.title.trim().is_empty() {
            return Err(field("title", "is empty"));
        }
        if self.title.chars().count() > limits::TITLE {
            return Err(field("title", "is longer than 200 characters"));
        }
        if has_forbidden_char(&self.title, false) {
            return Err(field("title", FORBIDDEN_CHAR));
        }
        if self.summary.len() > limits::SUMMARY {
            return Err(field("summary", "is longer than 64 KiB"));
        }
        if has_forbidden_char(&self.summary, true) {
            return Err(field("summary", FORBIDDEN_CHAR));
        }
        for (name, list) in [
            ("tags", &self.tags),
            ("sectors", &self.sectors),
            ("references", &self.references),
        ] {
            if list.len() > limits::LIST {
                return Err(field(name, "has more than 64 items"));
            }
            if list
                .iter()
                .any(|item| item.trim().is_empty() || item.len() > limits::ITEM)
            {
                return Err(field(name, "has an empty or over-long item"));
            }
            if list.iter().any(|item| has_forbidden_char(item, false)) {
                return Err(field(
                    name,
                    "has an item with a control or bidi-override character",
                ));
            }
        }
        if self.indicators.len() > limits::INDICATORS {
            return Err(field("indicators", "has more than 2000 items"));
        }
        for indicator in &self.indicators {
            indicator.check()?;
        }
        if let Some(stix) = &self.stix {
            check_stix(stix)?;
        }
        Ok(())
    }
}

/// Checks that `text` is a JSON STIX 2.1 bundle (`"type": "bundle"`).
pub fn check_stix(text: &str) -> Result<(), BodyError> {
    if text.len() > limits::STIX {
        return Err(BodyError::Stix("larger than 192 KiB".into()));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| BodyError::Stix(format!("not JSON ({e})")))?;
    match value.get("type").and_then(|t| t.as_str()) {
        Some("bundle") => Ok(()),
        _ => Err(BodyError::Stix(
            "the top-level object's \"type\" is not \"bundle\"".into(),
        )),
    }
}

/// The plaintext of an envelope; its variant must match the header's kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Body {
    /// A threat bulletin.
    Bulletin(Bulletin),
    /// Why the target was withdrawn.
    Retraction {
        /// The reason.
        reason: String,
    },
    /// An indicator of the target was seen.
    Sighting {
        /// The indicator seen.
        indicator: Indicator,
        /// When, unix ms.
        seen_at: u64,
        /// Optional note.
        #[serde(default)]
        note: Option<String>,
    },
}

impl Body {
    /// True when this body is the kind of body `kind` carries.
    pub fn matches(&self, kind: &crate::envelope::Kind) -> bool {
        use crate::envelope::Kind;
        matches!(
            (kind, self),
            (Kind::Bulletin, Body::Bulletin(_))
                | (Kind::Retraction { .. }, Body::Retraction { .. })
                | (Kind::Sighting { .. }, Body::Sighting { .. })
        )
    }

    /// Encodes a body (format byte + postcard), as it is sealed.
    pub fn encode(&self) -> Vec<u8> {
        crate::wire::encode(self)
    }

    /// Decodes plaintext into a body of the given kind and checks its fields.
    pub fn decode_for(plaintext: &[u8], kind: &crate::envelope::Kind) -> Result<Body, String> {
        let body: Body = crate::wire::decode(plaintext, crate::envelope::MAX_ENVELOPE_BYTES, true)
            .map_err(|e| e.to_string())?;
        if !body.matches(kind) {
            return Err(format!(
                "body does not match envelope kind {}",
                kind.as_str()
            ));
        }
        body.check().map_err(|e| e.to_string())?;
        Ok(body)
    }

    /// Checks the body's fields.
    pub fn check(&self) -> Result<(), BodyError> {
        match self {
            Body::Bulletin(bulletin) => bulletin.check(),
            Body::Retraction { reason } => {
                if reason.trim().is_empty() || reason.len() > limits::SUMMARY {
                    return Err(BodyError::Field {
                        field: "reason",
                        problem: "must be 1 byte to 64 KiB".into(),
                    });
                }
                if has_forbidden_char(reason, true) {
                    return Err(BodyError::Field {
                        field: "reason",
                        problem: FORBIDDEN_CHAR.into(),
                    });
                }
                Ok(())
            }
            Body::Sighting {
                indicator, note, ..
            } => {
                indicator.check()?;
                if note.as_ref().is_some_and(|n| n.len() > limits::ITEM) {
                    return Err(BodyError::Field {
                        field: "note",
                        problem: "is too long".into(),
                    });
                }
                if note.as_ref().is_some_and(|n| has_forbidden_char(n, false)) {
                    return Err(BodyError::Field {
                        field: "note",
                        problem: FORBIDDEN_CHAR.into(),
                    });
                }
                Ok(())
            }
        }
    }
}
