//! Human-readable output: aligned tables, times, durations, and ANSI colour
//! that is used only when stdout is a terminal.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use breakwater_node::Summary;
use breakwater_protocol::{Severity, Tlp};

/// Whether stdout gets colour.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Wraps `text` in an ANSI colour when `on`.
pub fn paint(text: &str, code: &str, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// `text` with every character a terminal would act on (C0/C1 controls,
/// DEL, line separators, bidi overrides and isolates) shown as a `\u{..}`
/// escape, so text from other organisations cannot forge rows, move the
/// cursor or set the window title. `multiline` keeps `\n` and `\t`. The
/// protocol already refuses such characters; this guards older envelopes
/// and every other string that reaches the terminal.
pub fn clean(text: &str, multiline: bool) -> String {
    if !breakwater_protocol::body::has_forbidden_char(text, multiline) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if breakwater_protocol::body::is_forbidden_char(c, multiline) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The colour of a TLP label.
pub fn tlp_colour(tlp: Tlp) -> &'static str {
    match tlp {
        Tlp::Clear => "1;37",
        Tlp::Green => "1;32",
        Tlp::Amber | Tlp::AmberStrict => "1;33",
        Tlp::Red => "1;31",
    }
}

/// The colour of a severity.
pub fn severity_colour(severity: Severity) -> &'static str {
    match severity {
        Severity::Low => "36",
        Severity::Medium => "33",
        Severity::High => "31",
        Severity::Critical => "1;31",
    }
}

/// A table printed with aligned columns; each cell may carry a colour.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<(String, Option<&'static str>)>>,
}

impl Table {
    /// A table with these headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| (h.to_string(), None)).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<(String, Option<&'static str>)>) {
        self.rows.push(cells);
    }

    /// Renders the table, colouring cells when `colour`. Cells are escaped
    /// with [`clean`], so each row stays one line.
    pub fn render(&self, colour: bool) -> String {
        let rows: Vec<Vec<(String, Option<&'static str>)>> = self
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|(text, code)| (clean(text, false), *code))
                    .collect()
            })
            .collect();
        let n_columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..n_columns)
            .map(|column| {
                rows.iter()
                    .filter_map(|row| row.get(column))
                    .map(|(text, _)| text.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (row_idx, row) in rows.iter().enumerate() {
            let mut line = String::new();
            for (column, (text, code)) in row.iter().enumerate() {
                let last = column + 1 == row.len();
                let pad = widths
                    .get(column)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(text.chars().count());
                let shown = match code {
                    Some(code) => paint(text, code, colour),
                    None if row_idx == 0 => paint(text, "1", colour),
                    None => text.clone(),
                };
                line.push_str(&shown);
                if !last {
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Now, in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A unix-ms time as `YYYY-MM-DD HH:MMZ`.
pub fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let rem = secs % 86_400;
    let (year, month, day) = breakwater_protocol::stix::civil_from_days(secs / 86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Parses `30s`, `5m`, `2h`, `7d`, `2w` or `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let Ok(number) = number.parse::<u64>() else {
        bail!("duration {text:?} must be a number followed by ms, s, m, h, d or w (e.g. 30s, 7d)");
    };
    let ms_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "s" | "sec" | "secs" => 1000,
        "m" | "min" | "mins" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 7 * 86_400_000,
        _ => bail!(
            "duration {text:?} must be a number followed by ms, s, m, h, d or w (e.g. 30s, 7d)"
        ),
    };
    match number.checked_mul(ms_per_unit) {
        Some(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        Some(_) => bail!("duration {text:?} must be longer than zero"),
        None => bail!("duration {text:?} is too long"),
    }
}

/// A short envelope id.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// The listing table of envelopes.
pub fn summaries(items: &[Summary], colour: bool) -> String {
    let mut table = Table::new(&["ID", "TLP", "SEVERITY", "ORG", "CREATED", "TITLE"]);
    for item in items {
        let id = item.id.to_hex();
        let severity = item
            .severity
            .map(|s| (s.to_string(), Some(severity_colour(s))))
            .unwrap_or(("-".into(), None));
        let title = match (item.kind.as_str(), &item.title, item.target) {
            (_, Some(title), _) if item.retracted => format!("{title} [retracted]"),
            (_, Some(title), _) => title.clone(),
            ("retraction", _, Some(target)) if item.readable => {
                format!("(retraction of {})", short_id(&target.to_hex()))
            }
            ("sighting", _, Some(target)) if item.readable => {
                format!("(sighting on {})", short_id(&target.to_hex()))
            }
            _ if !item.readable => format!("(sealed {}: not addressed to this org)", item.kind),
            _ => format!("({})", item.kind),
        };
        table.row(vec![
            (short_id(&id), None),
            (item.tlp.to_string(), Some(tlp_colour(item.tlp))),
            severity,
            (item.author_org.clone(), None),
            (time(item.created_at), None),
            (title, if item.retracted { Some("9") } else { None }),
        ]);
    }
    table.render(colour)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(time(0), "1970-01-01 00:00Z");
        assert_eq!(time(1_764_102_600_000), "2025-11-25 20:30Z");
    }

    fn sample_summary() -> Summary {
        Summary {
            id: breakwater_protocol::Digest([0; 32]),
            author_org: "org".into(),
            author: breakwater_protocol::NodePublicKey([1; 32]),
            seq: 1,
            kind: "bulletin".into(),
            target: None,
            tlp: Tlp::Green,
            created_at: 0,
            expires_at: 0,
            readable: true,
            retracted: false,
            severity: Some(Severity::Low),
            title: None,
            indicators: None,
        }
    }

    #[test]
    fn m7_listing_escapes_remote_text() {
        use breakwater_protocol::Digest;
        let item = Summary {
            id: Digest([0xff; 32]),
            title: Some(
                "a\nffffffffffff  red  critical  port-authority\x1b[2J\x1b]0;t\x07\u{202e}x".into(),
            ),
            author_org: "org\r".into(),
            ..sample_summary()
        };
        let out = summaries(&[item], false);
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(!out.contains('\x1b') && !out.contains('\u{202e}') && !out.contains('\r'));
        assert!(out.contains("\\u{1b}[2J"));
    }

    #[test]
    fn clean_keeps_newlines_only_in_multiline_text() {
        assert_eq!(clean("a\nb\tc", true), "a\nb\tc");
        assert_eq!(clean("a\nb", false), "a\\u{a}b");
        assert_eq!(clean("Störung – 港口", false), "Störung – 港口");
    }

    #[test]
    fn table_aligns() {
        let mut table = Table::new(&["A", "BB"]);
        table.row(vec![("xxx".into(), None), ("y".into(), None)]);
        assert_eq!(table.render(false), "A    BB\nxxx  y\n");
    }
}
