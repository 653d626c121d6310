//! Byte-level and JSON-level mutators for the fuzz engine: flips, inserts,
//! deletes, duplicated spans, length-field (varint) tweaks, truncation and
//! splicing of two valid encodings; and, for JSON inputs, edits of one value
//! of the parsed document. Pure functions of their input and the RNG.

use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use serde_json::Value;

/// Bytes that often sit on a boundary: zero, one, the varint continuation
/// bit and the largest values.
const INTERESTING: [u8; 8] = [0x00, 0x01, 0x02, 0x7f, 0x80, 0x81, 0xfe, 0xff];

/// Applies one to three byte-level mutations to `input` (`other` is a second
/// valid encoding to splice with); returns the mutant and what was done.
pub fn bytes(rng: &mut ChaCha8Rng, input: &[u8], other: &[u8]) -> (Vec<u8>, String) {
    let mut data = input.to_vec();
    let mut done = Vec::new();
    for _ in 0..rng.random_range(1..=3u32) {
        done.push(one(rng, &mut data, other));
    }
    (data, done.join(", "))
}

fn pos(rng: &mut ChaCha8Rng, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        rng.random_range(0..len)
    }
}

/// A span length, mostly short.
fn span(rng: &mut ChaCha8Rng) -> usize {
    if rng.random_bool(0.8) {
        rng.random_range(1..=8)
    } else {
        rng.random_range(1..=256)
    }
}

fn one(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, other: &[u8]) -> String {
    let len = data.len();
    match rng.random_range(0..9u32) {
        0 => {
            let at = pos(rng, len);
            let bit = rng.random_range(0..8u32);
            if let Some(b) = data.get_mut(at) {
                *b ^= 1 << bit;
            }
            format!("flip bit {bit} at {at}")
        }
        1 => {
            let at = pos(rng, len);
            let value = INTERESTING[rng.random_range(0..INTERESTING.len())];
            if let Some(b) = data.get_mut(at) {
                *b = value;
            }
            format!("set byte {at} to {value:#04x}")
        }
        2 => {
            let at = pos(rng, len + 1);
            let n = span(rng);
            let insert: Vec<u8> = (0..n).map(|_| rng.random::<u8>()).collect();
            data.splice(at..at, insert);
            format!("insert {n} random bytes at {at}")
        }
        3 => {
            let at = pos(rng, len);
            let end = (at + span(rng)).min(len);
            data.drain(at..end);
            format!("delete {at}..{end}")
        }
        4 => {
            let at = pos(rng, len);
            let end = (at + span(rng)).min(len);
            let copy = data.get(at..end).unwrap_or_default().to_vec();
            let to = pos(rng, data.len() + 1);
            data.splice(to..to, copy);
            format!("duplicate {at}..{end} at {to}")
        }
        5 => {
            // A length or count is a postcard varint: nudge one byte as if
            // it were one, or make it claim a continuation.
            let at = pos(rng, len);
            let delta = [1i16, -1, 2, -2, 16, -16, 127, 128][rng.random_range(0..8)];
            if let Some(b) = data.get_mut(at) {
                if rng.random_bool(0.2) {
                    *b |= 0x80;
                } else {
                    *b = (i16::from(*b) + delta).rem_euclid(256) as u8;
                }
            }
            format!("length tweak {delta:+} at {at}")
        }
        6 => {
            let at = pos(rng, len + 1);
            data.truncate(at);
            format!("truncate to {at}")
        }
        7 => {
            let cut = pos(rng, len + 1);
            let from = pos(rng, other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(other.get(from..).unwrap_or_default());
            format!("splice: own ..{cut} + other {from}..")
        }
        _ => {
            // Overwrite a span with the same span of the other encoding
            // (keeps the length: reaches deeper than a splice).
            let at = pos(rng, len);
            let end = (at + span(rng)).min(len).min(other.len());
            if at < end
                && let (Some(dst), Some(src)) = (data.get_mut(at..end), other.get(at..end))
            {
                dst.copy_from_slice(src);
            }
            format!("overwrite {at}..{end} from other")
        }
    }
}

/// Mutates one value of a parsed JSON document: a string made empty, long,
/// or given control characters; a number pushed to an extreme or negative;
/// a value of another type; a key removed or an unknown one added; an array
/// element duplicated or removed. Returns the mutated document's text.
pub fn json(rng: &mut ChaCha8Rng, text: &[u8]) -> Option<(Vec<u8>, String)> {
    let mut doc: Value = serde_json::from_slice(text).ok()?;
    let mut paths = Vec::new();
    collect(&doc, &mut Vec::new(), &mut paths);
    let path = paths.get(pos(rng, paths.len()))?.clone();
    let what = edit(rng, &mut doc, &path)?;
    let out = if rng.random_bool(0.5) {
        serde_json::to_vec(&doc).ok()?
    } else {
        serde_json::to_vec_pretty(&doc).ok()?
    };
    Some((out, format!("json {}: {what}", show(&path))))
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn show(path: &[Step]) -> String {
    let mut out = String::from("$");
    for step in path {
        match step {
            Step::Key(k) => out.push_str(&format!(".{k}")),
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn collect(value: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(path.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                path.push(Step::Key(k.clone()));
                collect(v, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(Step::Index(i));
                collect(v, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut here = value;
    for step in path {
        here = match step {
            Step::Key(k) => here.get_mut(k.as_str())?,
            Step::Index(i) => here.get_mut(*i)?,
        };
    }
    Some(here)
}

const NASTY_STRINGS: [&str; 10] = [
    "",
    " ",
    "a\u{1b}[2Jb",
    "line\nbreak",
    "\u{202e}evil",
    "\u{0}",
    "ipv4:1.2.3.4",
    "red",
    "zz:zz",
    "00000000000000000000000000000000000000000000000000000000000000zz",
];

fn edit(rng: &mut ChaCha8Rng, doc: &mut Value, path: &[Step]) -> Option<String> {
    // Structural edits on the parent: remove this entry, duplicate it.
    if let Some((last, parent_path)) = path.split_last()
        && rng.random_bool(0.25)
    {
        let parent = at(doc, parent_path)?;
        return Some(match (parent, last) {
            (Value::Object(map), Step::Key(k)) => {
                if rng.random_bool(0.5) {
                    map.remove(k);
                    "removed".into()
                } else {
                    map.insert(format!("{k}_extra"), Value::Bool(true));
                    "unknown sibling key added".into()
                }
            }
            (Value::Array(items), Step::Index(i)) => {
                if rng.random_bool(0.5) {
                    items.remove(*i);
                    "element removed".into()
                } else {
                    let copy = items.get(*i)?.clone();
                    let n = if rng.random_bool(0.2) { 40 } else { 1 };
                    for _ in 0..n {
                        items.insert(*i, copy.clone());
                    }
                    format!("element duplicated {n}x")
                }
            }
            _ => return None,
        });
    }
    let target = at(doc, path)?;
    let choice = rng.random_range(0..6u32);
    let (new, what): (Value, String) = match (&*target, choice) {
        (Value::String(_), 0) => {
            let n = [129usize, 257, 4097, 70_000][rng.random_range(0..4)];
            (Value::String("x".repeat(n)), format!("string of {n} chars"))
        }
        (Value::String(s), 1) => {
            let mut chars: Vec<char> = s.chars().collect();
            if !chars.is_empty() {
                let i = rng.random_range(0..chars.len());
                chars[i] = char::from_u32(rng.random_range(0..0x250u32)).unwrap_or('?');
            }
            let s: String = chars.into_iter().collect();
            (Value::String(s), "one char changed".into())
        }
        (Value::String(_), _) => {
            let s = NASTY_STRINGS[rng.random_range(0..NASTY_STRINGS.len())];
            (Value::String(s.into()), format!("string {s:?}"))
        }
        (Value::Number(_), c) if c < 4 => {
            let n: Value = match rng.random_range(0..6u32) {
                0 => 0.into(),
                1 => u64::MAX.into(),
                2 => (-1).into(),
                3 => serde_json::json!(1.5),
                4 => (u64::from(u32::MAX) + 1).into(),
                _ => rng.random_range(0..300u64).into(),
            };
            let what = format!("number {n}");
            (n, what)
        }
        (Value::Array(items), c) if c < 3 && !items.is_empty() => {
            (Value::Array(Vec::new()), "array emptied".into())
        }
        _ => {
            let n = match rng.random_range(0..6u32) {
                0 => Value::Null,
                1 => Value::Bool(true),
                2 => Value::String("x".into()),
                3 => 7.into(),
                4 => Value::Array(vec![Value::Null]),
                _ => Value::Object(Default::default()),
            };
            let what = format!("replaced by {n}");
            (n, what)
        }
    };
    *target = new;
    Some(what)
}
