//! What follows a new envelope's write, for ingest and own publications
//! alike: keeps its plaintext, indexes its indicators, applies retractions
//! (including those that arrived before their target) and announces it on
//! the node's event channel. Talks only to the store and the event channel.

use breakwater_protocol::{Body, Digest, Envelope, Kind, NodePublicKey};
use tracing::info;

use super::{Record, Worker};
use crate::handle::NodeEvent;
use crate::store::StoreError;

/// Meta key under which retractions wait for their target.
fn pending_key(target: &Digest) -> String {
    format!("pending-retraction/{target}")
}

impl Worker {
    /// Opens (if this node is a recipient), indexes and announces a newly
    /// stored envelope, and applies it if it is a retraction.
    pub(super) fn after_insert(
        &self,
        envelope: Envelope,
        id: Digest,
        body: Option<Body>,
    ) -> Result<(), StoreError> {
        let header = &envelope.header;
        if let Some(body) = &body {
            let record = Record {
                tlp: header.tlp,
                created_at: header.created_at,
                expires_at: header.expires_at,
                body: body.clone(),
            };
            self.store
                .put_plaintext(&id.0, &serde_json::to_vec(&record).unwrap_or_default())?;
        }
        self.resolve_pending_retractions(&id, &header.author)?;
        let retracted = self.retraction_of(&id, &header.author)?;
        if let (Some(Body::Bulletin(bulletin)), None) = (&body, retracted) {
            for indicator in &bulletin.indicators {
                self.store.index_indicator(&indicator.key(), &id.0)?;
            }
        }
        if let Kind::Retraction { target } = header.kind {
            self.apply_retraction(target, id, &header.author)?;
        }
        self.emit(NodeEvent::Stored(self.summary(
            id,
            &envelope,
            body.as_ref(),
            retracted.is_some(),
        )));
        Ok(())
    }

    /// The retraction of `id` already stored, if it came from the author's org.
    pub(super) fn retraction_of(
        &self,
        id: &Digest,
        author: &NodePublicKey,
    ) -> Result<Option<Digest>, StoreError> {
        let Some(by) = self.store.retracted_by(&id.0)? else {
            return Ok(None);
        };
        let by_author = self
            .store
            .envelope(&by)?
            .and_then(|b| Envelope::decode(&b).ok())
            .map(|e| e.header.author);
        let same_org = by_author
            .and_then(|a| self.org_of(&a))
            .is_some_and(|org| Some(org) == self.org_of(author));
        Ok(same_org.then_some(Digest(by)))
    }

    fn apply_retraction(
        &self,
        target: Digest,
        by: Digest,
        author: &NodePublicKey,
    ) -> Result<(), StoreError> {
        let Some(bytes) = self.store.envelope(&target.0)? else {
            // The target has not arrived: whether this retraction is its own
            // org's can only be told then (see `resolve_pending_retractions`).
            let key = pending_key(&target);
            let mut pending = self.store.meta(&key)?.unwrap_or_default();
            if pending.len() < 32 * 64 {
                pending.extend_from_slice(&by.0);
                self.store.put_meta(&key, &pending)?;
            }
            return Ok(());
        };
        let owner = Envelope::decode(&bytes).ok().map(|e| e.header.author);
        if owner.and_then(|o| self.org_of(&o)) != self.org_of(author) {
            return Ok(()); // validation rejects this; never act on it
        }
        self.store.mark_retracted(&target.0, &by.0)?;
        if let Some(record) = self.record(&target)?
            && let Body::Bulletin(bulletin) = record.body
        {
            for indicator in &bulletin.indicators {
                self.store.unindex_indicator(&indicator.key(), &target.0)?;
            }
        }
        info!(%target, %by, "envelope retracted");
        self.emit(NodeEvent::Retracted { target, by });
        Ok(())
    }

    /// Applies the retractions of `id` that arrived before it, now that its
    /// organisation is known; those by another organisation are dropped.
    fn resolve_pending_retractions(
        &self,
        id: &Digest,
        author: &NodePublicKey,
    ) -> Result<(), StoreError> {
        let key = pending_key(id);
        let Some(pending) = self.store.meta(&key)? else {
            return Ok(());
        };
        let owner_org = self.org_of(author);
        for by in pending.chunks_exact(32).filter_map(Digest::from_slice) {
            let by_author = self
                .store
                .envelope(&by.0)?
                .and_then(|b| Envelope::decode(&b).ok())
                .map(|e| e.header.author);
            if owner_org.is_some() && by_author.and_then(|a| self.org_of(&a)) == owner_org {
                self.store.mark_retracted(&id.0, &by.0)?;
                info!(target = %id, %by, "envelope retracted");
                self.emit(NodeEvent::Retracted { target: *id, by });
            }
        }
        self.store.put_meta(&key, &[])
    }
}
