//! A MISP feed directory's metadata: its name per TLP level, its
//! `manifest.json` (one entry per event uuid) and its `hashes.csv`
//! (`md5(value),event uuid` per live attribute), loaded from an existing
//! directory so that a re-export updates it in place.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::event::{MispError, MispEvent};
use crate::egress::EgressCap;
use crate::tlp::Tlp;

/// The directory of a level's feed: `clear`, `green`, `amber`,
/// `amber+strict`, `red`.
pub fn feed_dir(tlp: Tlp) -> &'static str {
    tlp.as_str()
}

/// The levels (and their directories) a feed export writes under `cap`
/// (no `red` unless the cap explicitly allows RED).
pub fn feed_dirs(cap: EgressCap) -> Vec<(Tlp, &'static str)> {
    cap.levels().map(|tlp| (tlp, feed_dir(tlp))).collect()
}

/// The metadata of one level's feed directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Feed {
    tlp: Tlp,
    manifest: BTreeMap<String, Value>,
    hashes: BTreeMap<String, Vec<String>>,
}

impl Feed {
    /// An empty feed for level `tlp`.
    pub fn new(tlp: Tlp) -> Feed {
        Feed {
            tlp,
            manifest: BTreeMap::new(),
            hashes: BTreeMap::new(),
        }
    }

    /// The feed of level `tlp` as a directory holds it: its
    /// `manifest.json` and `hashes.csv` (`None` for a file that does not
    /// exist yet). A file that cannot be read is refused with one line.
    pub fn load(tlp: Tlp, manifest: Option<&str>, hashes: Option<&str>) -> Result<Feed, MispError> {
        let mut feed = Feed::new(tlp);
        if let Some(text) = manifest {
            let bad = |reason: String| MispError::BadFeedFile {
                file: "manifest.json",
                reason,
            };
            let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
            let Value::Object(entries) = value else {
                return Err(bad("not a JSON object".into()));
            };
            for (uuid, entry) in entries {
                if !entry.is_object() {
                    return Err(bad(format!("entry {uuid} is not an object")));
                }
                feed.manifest.insert(uuid, entry);
            }
        }
        if let Some(text) = hashes {
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let Some((hash, uuid)) = line.split_once(',') else {
                    return Err(MispError::BadFeedFile {
                        file: "hashes.csv",
                        reason: format!("line {}: expected md5,uuid", n + 1),
                    });
                };
                feed.hashes
                    .entry(uuid.trim().to_string())
                    .or_default()
                    .push(format!("{},{}", hash.trim(), uuid.trim()));
            }
        }
        Ok(feed)
    }

    /// The feed's level.
    pub fn tlp(&self) -> Tlp {
        self.tlp
    }

    /// Number of events in the manifest.
    pub fn len(&self) -> usize {
        self.manifest.len()
    }

    /// True when the manifest lists no event.
    pub fn is_empty(&self) -> bool {
        self.manifest.is_empty()
    }

    /// The `timestamp` the manifest holds for event `uuid`.
    pub fn timestamp_of(&self, uuid: &str) -> Option<u64> {
        self.manifest
            .get(uuid)
            .and_then(|e| e["timestamp"].as_u64())
    }

    /// Adds or updates an event. Returns true when its file must be
    /// (re)written: the event is new here, or newer than the manifest's
    /// copy; an event that is not newer changes nothing. An event of
    /// another level is refused.
    pub fn add(&mut self, event: &MispEvent) -> Result<bool, MispError> {
        if event.tlp != self.tlp {
            return Err(MispError::WrongFeed {
                uuid: event.uuid.clone(),
                tlp: event.tlp,
                feed: self.tlp,
            });
        }
        if self
            .timestamp_of(&event.uuid)
            .is_some_and(|held| held >= event.timestamp)
        {
            return Ok(false);
        }
        self.manifest
            .insert(event.uuid.clone(), event.manifest_entry());
        self.hashes.insert(event.uuid.clone(), event.hash_lines());
        Ok(true)
    }

    /// `manifest.json`: `{"<uuid>": {…}, …}`, uuids sorted.
    pub fn manifest_json(&self) -> String {
        let map: Map<String, Value> = self
            .manifest
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        serde_json::to_string(&Value::Object(map)).unwrap_or_default()
    }

    /// `hashes.csv`: one `md5,uuid` line per live attribute, events in uuid
    /// order.
    pub fn hashes_csv(&self) -> String {
        let mut out = String::new();
        for line in self.hashes.values().flatten() {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}
