//! STIX patterns and observables for indicator kinds: the pattern and the
//! SCO an exported indicator carries, and the small parser the import uses
//! (equality comparisons on the paths of the mapping table, joined by `OR`).

use serde_json::{Value, json};

use super::ids::sco_id;
use crate::body::{Indicator, IndicatorKind};

/// The object path a kind's pattern compares, e.g. `ipv4-addr:value` or
/// `file:hashes.'SHA-256'`; `None` for CVE, which maps to a vulnerability.
pub fn path_of(kind: IndicatorKind) -> Option<&'static str> {
    Some(match kind {
        IndicatorKind::Ipv4 => "ipv4-addr:value",
        IndicatorKind::Ipv6 => "ipv6-addr:value",
        IndicatorKind::Domain => "domain-name:value",
        IndicatorKind::Url => "url:value",
        IndicatorKind::Email => "email-addr:value",
        IndicatorKind::Md5 => "file:hashes.MD5",
        IndicatorKind::Sha1 => "file:hashes.'SHA-1'",
        IndicatorKind::Sha256 => "file:hashes.'SHA-256'",
        IndicatorKind::FileName => "file:name",
        IndicatorKind::Cve => return None,
    })
}

/// `value` as a quoted pattern string literal: `\` becomes `\\`, then `'`
/// becomes `\'`.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The STIX pattern of an indicator, e.g. `[ipv4-addr:value = '203.0.113.7']`;
/// `None` for CVE.
pub fn pattern_of(indicator: &Indicator) -> Option<String> {
    path_of(indicator.kind).map(|path| format!("[{path} = {}]", quote(&indicator.value)))
}

/// The observable (SCO) an indicator describes, with its deterministic id;
/// `None` for CVE.
pub fn observable_of(indicator: &Indicator) -> Option<Value> {
    let value = indicator.value.as_str();
    let (sco_type, contributing) = match indicator.kind {
        IndicatorKind::Ipv4 => ("ipv4-addr", json!({ "value": value })),
        IndicatorKind::Ipv6 => ("ipv6-addr", json!({ "value": value })),
        IndicatorKind::Domain => ("domain-name", json!({ "value": value })),
        IndicatorKind::Url => ("url", json!({ "value": value })),
        IndicatorKind::Email => ("email-addr", json!({ "value": value })),
        IndicatorKind::Md5 => ("file", json!({ "hashes": { "MD5": value } })),
        IndicatorKind::Sha1 => ("file", json!({ "hashes": { "SHA-1": value } })),
        IndicatorKind::Sha256 => ("file", json!({ "hashes": { "SHA-256": value } })),
        IndicatorKind::FileName => ("file", json!({ "name": value })),
        IndicatorKind::Cve => return None,
    };
    let mut object = json!({
        "type": sco_type,
        "spec_version": "2.1",
        "id": sco_id(sco_type, &contributing),
    });
    if let (Some(target), Value::Object(fields)) = (object.as_object_mut(), contributing) {
        target.extend(fields);
    }
    Some(object)
}

/// The indicator kind an object path names (`ipv4-addr:value`,
/// `file:hashes.'SHA-256'`, `file:hashes.sha256`, …), if the mapping table
/// has it.
fn kind_of_path(path: &str) -> Option<IndicatorKind> {
    let (object_type, property) = path.split_once(':')?;
    let kind = match (object_type.to_ascii_lowercase().as_str(), property) {
        ("ipv4-addr", "value") => IndicatorKind::Ipv4,
        ("ipv6-addr", "value") => IndicatorKind::Ipv6,
        ("domain-name", "value") => IndicatorKind::Domain,
        ("url", "value") => IndicatorKind::Url,
        ("email-addr", "value") => IndicatorKind::Email,
        ("file", "name") => IndicatorKind::FileName,
        ("file", hashes) => {
            let algorithm = hashes.strip_prefix("hashes.")?;
            let algorithm = algorithm
                .trim_matches('\'')
                .to_ascii_uppercase()
                .replace('-', "");
            match algorithm.as_str() {
                "MD5" => IndicatorKind::Md5,
                "SHA1" => IndicatorKind::Sha1,
                "SHA256" => IndicatorKind::Sha256,
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(kind)
}

/// A small cursor over a pattern's characters.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// `OR` as a whole word.
    fn eat_or(&mut self) -> bool {
        self.skip_space();
        let Some(after) = self
            .rest
            .get(..2)
            .filter(|word| word.eq_ignore_ascii_case("or"))
            .and_then(|_| self.rest.get(2..))
        else {
            return false;
        };
        if after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return false;
        }
        self.rest = after;
        true
    }

    /// An object path: everything up to whitespace or `=`, with quoted
    /// segments kept whole.
    fn path(&mut self) -> Option<&'a str> {
        self.skip_space();
        let mut in_quote = false;
        let mut end = self.rest.len();
        for (i, c) in self.rest.char_indices() {
            if c == '\'' {
                in_quote = !in_quote;
            } else if !in_quote && (c.is_whitespace() || c == '=' || c == '!' || c == ']') {
                end = i;
                break;
            }
        }
        let path = &self.rest[..end];
        self.rest = &self.rest[end..];
        (!path.is_empty() && !in_quote).then_some(path)
    }

    /// A quoted string literal, unescaping `\\` and `\'`.
    fn literal(&mut self) -> Option<String> {
        self.skip_space();
        let mut chars = self.rest.char_indices();
        if chars.next().map(|(_, c)| c) != Some('\'') {
            return None;
        }
        let mut out = String::new();
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                if c != '\\' && c != '\'' {
                    return None;
                }
                out.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '\'' {
                self.rest = &self.rest[i + 1..];
                return Some(out);
            } else {
                out.push(c);
            }
        }
        None
    }
}

/// The indicators a STIX pattern names, if it is one or more equality
/// comparisons on the mapping table's paths joined by `OR` (inside one
/// observation, or across observations `[…] OR […]`) and every value is
/// valid for its kind; `None` for anything else (`AND`, other operators,
/// qualifiers, other paths, CIDR ranges, …), which the import keeps as is.
pub fn parse_pattern(pattern: &str) -> Option<Vec<Indicator>> {
    let mut cursor = Cursor { rest: pattern };
    let mut found = Vec::new();
    loop {
        if !cursor.eat("[") {
            return None;
        }
        loop {
            let path = cursor.path()?;
            if !cursor.eat("=") {
                return None;
            }
            let value = cursor.literal()?;
            let kind = kind_of_path(path)?;
            found.push(Indicator::new(kind, &value).ok()?);
            if cursor.eat("]") {
                break;
            }
            if !cursor.eat_or() {
                return None;
            }
        }
        cursor.skip_space();
        if cursor.rest.is_empty() {
            return Some(found);
        }
        if !cursor.eat_or() {
            return None;
        }
    }
}
