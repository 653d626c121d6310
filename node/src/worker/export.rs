//! Export: stored envelopes with the bodies this node can open, for the
//! interop commands (see [`crate::export`]).

use breakwater_protocol::{Digest, Envelope, SignedRoster};

use super::{Worker, now_ms, store_err};
use crate::export::{ExportFilter, ExportItem, Exported};
use crate::handle::RequestError;

impl Worker {
    pub(crate) fn export(&self, filter: &ExportFilter) -> Result<Exported, RequestError> {
        let now = now_ms();
        let prefixes: Vec<String> = filter
            .ids
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        let mut items: Vec<(u64, ExportItem)> = Vec::new();
        for entry in self.store.ids_iter() {
            let id = Digest(entry.map_err(store_err)?);
            let Some(bytes) = self.store.envelope(&id.0).map_err(store_err)? else {
                continue;
            };
            let Ok(envelope) = Envelope::decode(&bytes) else {
                continue;
            };
            let header = &envelope.header;
            if !prefixes.is_empty() {
                let hex = id.to_hex();
                let target = header.kind.target().map(|t| t.to_hex());
                let named = |p: &String| {
                    hex.starts_with(p.as_str())
                        || target.as_deref().is_some_and(|t| t.starts_with(p.as_str()))
                };
                if !prefixes.iter().any(named) {
                    continue;
                }
            }
            if filter.since.is_some_and(|since| header.created_at < since) {
                continue;
            }
            if let Some(org) = &filter.author
                && self.org_of(&header.author).map(|o| o.to_string()).as_ref() != Some(org)
            {
                continue;
            }
            let body = if header.expires_at > now {
                self.open(&envelope)
            } else {
                None
            };
            if body.is_none() && !filter.all {
                continue;
            }
            let retracted_by = self.retraction_of(&id, &header.author).map_err(store_err)?;
            items.push((
                header.created_at,
                ExportItem {
                    id,
                    envelope: hex::encode(&bytes),
                    body,
                    retracted_by,
                },
            ));
        }
        items.sort_by_key(|(created_at, item)| (*created_at, item.id));
        let mut rosters = Vec::new();
        for (_, bytes) in self.store.rosters().map_err(store_err)? {
            if let Ok(roster) = SignedRoster::decode(&bytes) {
                rosters.push(roster);
            }
        }
        Ok(Exported {
            roster: self.roster.clone(),
            rosters,
            items: items.into_iter().map(|(_, item)| item).collect(),
        })
    }
}
