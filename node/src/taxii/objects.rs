//! What a read collection serves: the STIX objects of the envelopes this
//! node opens, in `date_added` order (the `added` index), capped by the
//! collection's egress cap, filtered by the TAXII `match[…]` parameters and
//! cut into pages with a stateless `next` cursor.
//!
//! Every object of one envelope has that envelope's `date_added`. A page
//! ends between envelopes unless one envelope alone has more objects than
//! the page holds, so `X-TAXII-Date-Added-Last` is a safe `added_after`
//! cursor as well as `next`.

use std::collections::HashSet;

use breakwater_protocol::stix::{Bundle, parse_timestamp, timestamp_micros};
use breakwater_protocol::{EgressCap, Roster};
use serde_json::Value;

use crate::handle::{NodeHandle, RequestError};
use crate::worker::AddedItem;

/// Entries of the `added` index read per worker request.
const SCAN_CHUNK: usize = 128;

/// `match[version]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionMatch {
    /// The newest version of each object (the default).
    Last,
    /// The oldest version of each object.
    First,
    /// Every version.
    All,
    /// Versions with these `modified` timestamps (exactly as written).
    At(Vec<String>),
}

/// The `match[…]` filters of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filters {
    /// `match[id]`: any of these ids.
    pub ids: Vec<String>,
    /// `match[type]`: any of these types.
    pub types: Vec<String>,
    /// `match[version]`.
    pub version: VersionMatch,
    /// `match[spec_version]`: any of these (every object here is 2.1).
    pub spec_versions: Vec<String>,
}

impl Default for Filters {
    fn default() -> Filters {
        Filters {
            ids: Vec::new(),
            types: Vec::new(),
            version: VersionMatch::Last,
            spec_versions: Vec::new(),
        }
    }
}

impl Filters {
    /// A hash of the filters, bound into `next` so that a cursor cannot be
    /// replayed with other filters (answered 400, as medallion does).
    pub fn digest(&self, collection: &str) -> [u8; 8] {
        let mut hasher = blake3::Hasher::new_derive_key("breakwater/taxii-next/v1");
        let version = match &self.version {
            VersionMatch::Last => "last".to_string(),
            VersionMatch::First => "first".to_string(),
            VersionMatch::All => "all".to_string(),
            VersionMatch::At(at) => at.join(","),
        };
        for part in [
            collection.to_string(),
            self.ids.join(","),
            self.types.join(","),
            version,
            self.spec_versions.join(","),
        ] {
            hasher.update(part.as_bytes());
            hasher.update(&[0]);
        }
        let mut out = [0u8; 8];
        out.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        out
    }

    fn keeps(&self, object: &Value) -> bool {
        let field = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or("");
        (self.ids.is_empty() || self.ids.iter().any(|id| id == field("id")))
            && (self.types.is_empty() || self.types.iter().any(|t| t == field("type")))
            && (self.spec_versions.is_empty() || self.spec_versions.iter().any(|v| v == "2.1"))
            && match &self.version {
                VersionMatch::At(at) => {
                    let version = parse_timestamp(version_of(object));
                    version.is_some() && at.iter().any(|t| parse_timestamp(t) == version)
                }
                _ => true,
            }
    }
}

/// The version of an object: its `modified`, else its `created` (marking
/// definitions have no `modified`).
pub fn version_of(object: &Value) -> &str {
    object
        .get("modified")
        .or_else(|| object.get("created"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Where a page starts: the `added` time of an envelope (µs, inclusive)
/// and how many of that envelope's (filtered) objects earlier pages served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The `added` time to start from (inclusive).
    pub from: u64,
    /// Objects of the envelope at `from` already served.
    pub skip: usize,
}

impl Cursor {
    /// The `next` token: hex of `from ‖ skip ‖ filter digest`.
    pub fn token(&self, digest: [u8; 8]) -> String {
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(&self.from.to_be_bytes());
        bytes.extend_from_slice(&(self.skip as u32).to_be_bytes());
        bytes.extend_from_slice(&digest);
        hex::encode(bytes)
    }

    /// The cursor a `next` token names, if it was made for `digest`.
    pub fn parse(token: &str, digest: [u8; 8]) -> Option<Cursor> {
        let bytes = hex::decode(token.trim()).ok()?;
        if bytes.len() != 20 || bytes[12..] != digest {
            return None;
        }
        let from = u64::from_be_bytes(bytes[..8].try_into().ok()?);
        let skip = u32::from_be_bytes(bytes[8..12].try_into().ok()?) as usize;
        Some(Cursor { from, skip })
    }
}

/// One served object and its `date_added` (µs).
#[derive(Debug, Clone)]
pub struct Served {
    /// When this node could first open its envelope.
    pub added: u64,
    /// The STIX object.
    pub object: Value,
}

impl Served {
    /// Its `date_added` as a TAXII timestamp.
    pub fn date_added(&self) -> String {
        timestamp_micros(self.added)
    }
}

/// One page of a collection.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The objects, in `date_added` order.
    pub objects: Vec<Served>,
    /// Where the next page starts, when there is more.
    pub next: Option<Cursor>,
}

/// The objects of one envelope that the collection's cap lets out, in
/// the order its STIX export gives them, each with whether the filters
/// (`match[…]`, `match[version]` included) keep it. A page's `skip` counts
/// positions in this whole list, which depends only on the envelope, its
/// target, the roster and the cap, so a retraction arriving between two
/// pages cannot shift it.
fn objects_of(
    item: &AddedItem,
    cap: EgressCap,
    roster: &Roster,
    filters: &Filters,
) -> Vec<(Value, bool)> {
    let exported = |envelope, body, target| -> Vec<Value> {
        let mut bundle = Bundle::capped(cap);
        if bundle.add_envelope(envelope, body, target, roster).is_err() {
            return Vec::new();
        }
        match bundle.to_value().get_mut("objects").map(Value::take) {
            Some(Value::Array(objects)) => objects,
            _ => Vec::new(),
        }
    };
    // A retraction whose target this node cannot read exports nothing.
    let target = item.target.as_ref().map(|(e, b)| (e, b));
    let objects = exported(&item.envelope, &item.body, target);
    let ids_of = |objects: Vec<Value>| -> HashSet<String> {
        objects
            .iter()
            .filter_map(|o| o.get("id").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    // Objects that another version supersedes (newer: the retraction's
    // revoked copies; older: the retracted originals), for last / first.
    let superseded: HashSet<String> = match (&filters.version, &item.retraction, target) {
        (VersionMatch::Last, Some((retraction, body)), _) => ids_of(exported(
            retraction,
            body,
            Some((&item.envelope, &item.body)),
        )),
        (VersionMatch::First, None, Some((target, target_body)))
            if matches!(
                item.envelope.header.kind,
                breakwater_protocol::Kind::Retraction { .. }
            ) =>
        {
            ids_of(exported(target, target_body, None))
        }
        _ => HashSet::new(),
    };
    objects
        .into_iter()
        .map(|o| {
            let versioned = !matches!(
                o.get("type").and_then(Value::as_str),
                Some("marking-definition" | "identity")
            );
            let newer_elsewhere = versioned
                && o.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| superseded.contains(id));
            let keep = !newer_elsewhere && filters.keeps(&o);
            (o, keep)
        })
        .collect()
}

/// A page of at most `limit` objects of the collection with cap `cap`,
/// from `start` on.
pub async fn page(
    handle: &NodeHandle,
    roster: &Roster,
    cap: EgressCap,
    filters: &Filters,
    start: Cursor,
    limit: usize,
) -> Result<Page, RequestError> {
    let limit = limit.max(1);
    let mut page = Page::default();
    let mut from = start.from;
    loop {
        let chunk = handle.added(from, SCAN_CHUNK, cap).await?;
        for item in &chunk.items {
            let all = objects_of(item, cap, roster, filters);
            let skipped = if item.added == start.from {
                start.skip.min(all.len())
            } else {
                0
            };
            // (position in the whole list, object) of what this page may serve.
            let objects: Vec<(usize, Value)> = all
                .into_iter()
                .enumerate()
                .skip(skipped)
                .filter(|(_, (_, keep))| *keep)
                .map(|(at, (object, _))| (at, object))
                .collect();
            if objects.is_empty() {
                continue;
            }
            if page.objects.len() + objects.len() > limit {
                if page.objects.is_empty() {
                    // One envelope with more objects than a page: split it
                    // where the first object left out stands.
                    let resume = objects.get(limit).map_or(skipped, |(at, _)| *at);
                    page.next = Some(Cursor {
                        from: item.added,
                        skip: resume,
                    });
                    page.objects
                        .extend(objects.into_iter().take(limit).map(|(_, object)| Served {
                            added: item.added,
                            object,
                        }));
                } else {
                    page.next = Some(Cursor {
                        from: item.added,
                        skip: skipped,
                    });
                }
                return Ok(page);
            }
            page.objects
                .extend(objects.into_iter().map(|(_, object)| Served {
                    added: item.added,
                    object,
                }));
        }
        match chunk.next {
            Some(next) => from = next,
            None => return Ok(page),
        }
    }
}

/// Every object of the collection that `filters` keeps (for one object's
/// lookup and its versions), at most `max`.
pub async fn all(
    handle: &NodeHandle,
    roster: &Roster,
    cap: EgressCap,
    filters: &Filters,
    max: usize,
) -> Result<Vec<Served>, RequestError> {
    let page = page(
        handle,
        roster,
        cap,
        filters,
        Cursor { from: 0, skip: 0 },
        max,
    )
    .await?;
    Ok(page.objects)
}
