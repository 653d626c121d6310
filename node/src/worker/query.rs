//! Queries: list, show (by id or unique prefix), search by indicator and
//! status, read from the store for `NodeHandle`; also the [`Summary`] every
//! `Stored` event carries.

use breakwater_protocol::{Digest, Envelope, Indicator};

use super::{Brief, Opened, Worker, now_ms, recipient_key_ids, store_err};
use crate::handle::{Detail, ListFilter, RequestError, Status, Summary};
use crate::store::StoreError;

impl Worker {
    /// The summary of stored envelope `id`; `brief` is what its plaintext
    /// record says (`None` if this node cannot read it).
    pub(super) fn summary(
        &self,
        id: Digest,
        envelope: &Envelope,
        brief: Option<&Brief>,
        retracted: bool,
    ) -> Summary {
        let header = &envelope.header;
        Summary {
            id,
            author_org: self
                .org_of_envelope(&id, &header.author)
                .map(|o| o.to_string())
                .unwrap_or_else(|| "unknown".into()),
            author: header.author,
            seq: header.seq,
            kind: header.kind.as_str().to_string(),
            target: header.kind.target(),
            tlp: header.tlp,
            created_at: header.created_at,
            expires_at: header.expires_at,
            readable: brief.is_some(),
            retracted,
            severity: brief.and_then(|b| b.severity),
            title: brief.and_then(|b| b.title.clone()),
            indicators: brief.and_then(|b| b.indicators.clone()),
        }
    }

    /// Stored envelope `id`, its plaintext record and whether it is
    /// retracted.
    fn load(&self, id: &Digest) -> Result<Option<(Envelope, Option<Opened>, bool)>, StoreError> {
        let Some(bytes) = self.store.envelope(&id.0)? else {
            return Ok(None);
        };
        let Ok(envelope) = Envelope::decode(&bytes) else {
            return Ok(None);
        };
        let opened = self.opened(id)?;
        let retracted = self.retraction_of(id, &envelope.header.author)?.is_some();
        Ok(Some((envelope, opened, retracted)))
    }

    pub(super) fn list(&self, filter: &ListFilter) -> Result<Vec<Summary>, RequestError> {
        let now = now_ms();
        let mut out = Vec::new();
        for entry in self.store.ids_iter() {
            let id = Digest(entry.map_err(store_err)?);
            // The record alone rules most envelopes out without reading them.
            let opened = self.opened(&id).map_err(store_err)?;
            let brief = opened.as_ref().map(Opened::brief);
            if let Some(brief) = &brief
                && (filter.since.is_some_and(|since| brief.created_at < since)
                    || filter.tlp.is_some_and(|tlp| brief.tlp != tlp)
                    || brief.expires_at <= now)
            {
                continue;
            }
            if brief.is_none() && !filter.all {
                continue;
            }
            let Some(bytes) = self.store.envelope(&id.0).map_err(store_err)? else {
                continue;
            };
            let Ok(envelope) = Envelope::decode(&bytes) else {
                continue;
            };
            let retracted = self
                .retraction_of(&id, &envelope.header.author)
                .map_err(store_err)?
                .is_some();
            let summary = self.summary(id, &envelope, brief.as_ref(), retracted);
            if !summary.is_bulletin()
                || (!filter.all && !summary.readable)
                || (filter.hide_retracted && summary.retracted)
                || filter.since.is_some_and(|since| summary.created_at < since)
                || filter.tlp.is_some_and(|tlp| summary.tlp != tlp)
                || filter
                    .severity
                    .is_some_and(|min| summary.severity.is_none_or(|s| s < min))
                || summary.expires_at <= now
            {
                continue;
            }
            out.push(summary);
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(crate::handle::page(out, filter.offset, filter.limit))
    }

    fn resolve(&self, id: &str) -> Result<Digest, RequestError> {
        let id = id.trim().to_ascii_lowercase();
        if let Ok(full) = id.parse::<Digest>() {
            return Ok(full);
        }
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RequestError::Invalid(format!(
                "{id:?} is not an envelope id (hex, at least 4 characters)"
            )));
        }
        let mut found = None;
        for entry in self.store.ids_iter() {
            let candidate = entry.map_err(store_err)?;
            if hex::encode(candidate).starts_with(&id) {
                if found.is_some() {
                    return Err(RequestError::Invalid(format!(
                        "id prefix {id} is ambiguous"
                    )));
                }
                found = Some(Digest(candidate));
            }
        }
        found.ok_or(RequestError::NotFound(id))
    }

    pub(super) fn get(&self, id: &str) -> Result<Detail, RequestError> {
        let id = self.resolve(id)?;
        let (envelope, opened, retracted) = self
            .load(&id)
            .map_err(store_err)?
            .ok_or_else(|| RequestError::NotFound(id.to_hex()))?;
        let brief = opened.as_ref().map(Opened::brief);
        // Only bodies sealed to nodes are kept whole; the others reopen
        // cheaply (a CLEAR decode, or two AEAD operations under the GREEN key).
        let body = match opened {
            Some(Opened::Full(record)) => Some(record.body),
            Some(Opened::Brief(_)) => self.open(&envelope),
            None => None,
        };
        let retracted_by = self
            .store
            .retracted_by(&id.0)
            .map_err(store_err)?
            .map(Digest)
            .filter(|_| retracted);
        let key_ids = recipient_key_ids(&envelope);
        let epoch_sealed = envelope.header.seal.epoch().is_some();
        let recipients = self
            .roster
            .roster
            .members
            .iter()
            .filter(|m| {
                (epoch_sealed && !m.revoked)
                    || m.card
                        .nodes
                        .iter()
                        .any(|n| key_ids.contains(&n.sealing_key.key_id()))
            })
            .map(|m| m.card.org_id.to_string())
            .collect();
        let size = envelope.encoded_len();
        Ok(Detail {
            summary: self.summary(id, &envelope, brief.as_ref(), retracted),
            body,
            retracted_by,
            recipients,
            size,
            seal: envelope.header.seal.as_str().to_string(),
            epoch: envelope.header.seal.epoch(),
        })
    }

    pub(super) fn search(&self, indicator: &Indicator) -> Result<Vec<Summary>, RequestError> {
        let mut out = Vec::new();
        for id in self
            .store
            .lookup_indicator(&indicator.key())
            .map_err(store_err)?
        {
            let id = Digest(id);
            if let Some((envelope, opened, retracted)) = self.load(&id).map_err(store_err)?
                && !retracted
            {
                let brief = opened.as_ref().map(Opened::brief);
                out.push(self.summary(id, &envelope, brief.as_ref(), retracted));
            }
        }
        // A total order (newest first, then by id), so pages do not overlap.
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    pub(super) fn status(&self) -> Result<Status, RequestError> {
        // Kept by the writes, not scanned: a status poll costs no scan of
        // the store (a node polled every 10 ms while catching up spent most
        // of its time counting).
        let counts = self.store.tally();
        let me = self.keys.node_public();
        Ok(Status {
            org_id: self.org_of(&me).map(|o| o.to_string()).unwrap_or_default(),
            node_key: me,
            peer_id: self.keys.peer_id().to_string(),
            consortium: self.consortium,
            roster_version: self.roster.roster.version,
            listen: Vec::new(),
            peers: Vec::new(),
            frontier: self.frontier().0.into_iter().collect(),
            envelopes: counts.envelopes,
            readable: counts.plaintext,
            evidence: counts.evidence,
            equivocations: self
                .evidenced
                .iter()
                .map(|&(author, seq)| crate::handle::Equivocated { author, seq })
                .collect(),
            disk_bytes: self.store.size_on_disk().unwrap_or(0),
            traffic: self.traffic,
            green_epoch: self.sealing_epoch_key().map(|k| k.epoch),
            pending_green: counts.pending_green,
            green_key_problem: self.green_problem.clone(),
            roster_fork: self.fork.clone(),
            tombstones: counts.tombstones,
            store_write_error: self.write_failure.clone(),
            webhooks: self.webhooks.status(&self.store),
        })
    }
}
