//! Everything written with a new envelope, for ingest, own publications and
//! GREEN envelopes opened late alike: staged into the one [`WriteBatch`] of
//! its chunk — the envelope, its plaintext record, its indicators, the
//! retractions it makes or that waited for it, its pending-epoch entry — and
//! the events announced once that batch is written, for the envelopes that
//! were new. Talks only to the store and the event channel.

use std::collections::HashMap;

use breakwater_protocol::{Body, Digest, Envelope, Kind, NodePublicKey, OrgId, Seal};
use tracing::info;

use super::{Brief, Opened, Worker};
use crate::handle::NodeEvent;
use crate::store::{EnvelopeOutcome, NewEnvelope, StoreError, WriteBatch};

/// The writes and events of one chunk, built before its one `Store::write`.
///
/// Checks made while staging (is the target of a retraction stored? which
/// retractions wait for this envelope? is it retracted?) see the store and
/// the envelopes staged before in the same chunk. The worker is the only
/// writer, so nothing changes between these reads and the write.
#[derive(Debug, Default)]
pub(super) struct Staged<'a> {
    batch: WriteBatch<'a>,
    /// Envelopes staged so far: author, organisation and, if opened, what
    /// list needs.
    staged: HashMap<Digest, (NodePublicKey, OrgId, Option<Brief>)>,
    /// Retractions staged so far whose target is not stored: target → ids.
    pending: HashMap<Digest, Vec<Digest>>,
    /// Events, each with the envelope (outcome index) that must be new for
    /// it to be announced; `None` for unconditional ones.
    events: Vec<(Option<usize>, NodeEvent)>,
}

impl<'a> Staged<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The batch, for writes that go with the staged envelopes (clearing a
    /// pending-epoch entry, a plaintext record of an envelope stored before).
    pub fn batch(&mut self) -> &mut WriteBatch<'a> {
        &mut self.batch
    }

    /// Announces `event` after the write, whatever its outcomes.
    pub fn event(&mut self, event: NodeEvent) {
        self.events.push((None, event));
    }
}

/// Most pending retractions kept per target and retracting organisation: a
/// member cannot crowd out the target's own organisation's retraction, and
/// cannot grow the pending index without bound for one target.
pub(super) const PENDING_PER_ORG: usize = 8;

impl Worker {
    /// Stages a new envelope and everything that goes with it: its
    /// plaintext record (if `body` opened), its pending-epoch entry (GREEN
    /// sealed under a roster newer than ours), the retractions of it that
    /// arrived before it (applied if by its own org, dropped otherwise), its
    /// indicators (unless retracted), and, for a retraction, the retraction
    /// of its target (or a pending entry while the target is missing). The
    /// attached writes and events take effect only if the envelope turns
    /// out new.
    pub(super) fn stage<'a>(
        &self,
        staged: &mut Staged<'a>,
        new: NewEnvelope<'a>,
        envelope: &Envelope,
        body: Option<&Body>,
        org: &OrgId,
    ) -> Result<(), StoreError> {
        let id = Digest(new.id);
        let header = &envelope.header;
        let author = header.author;
        // Fixed now, kept with the envelope: a later roster that removes
        // the author's key from its card does not change it.
        let owner_org = Some(org.clone());
        let opened = body.map(|body| Opened::of(header, body));

        // Retractions of this envelope that arrived before it.
        let mut waiting: Vec<Digest> = self
            .store
            .pending_retractions(&id.0)?
            .into_iter()
            .map(Digest)
            .collect();
        waiting.extend(staged.pending.remove(&id).unwrap_or_default());
        waiting.sort();
        waiting.dedup();
        let mut retracted_by = Vec::new();
        for by in &waiting {
            if self.staged_org(staged, by)? == owner_org {
                retracted_by.push(*by);
            }
        }
        // The target of this retraction, if stored: whether it is this
        // organisation's and the indicators it is indexed under.
        let target = match header.kind {
            Kind::Retraction { target } => {
                let found = self
                    .target_of(staged, &target)?
                    .map(|(target_org, indicators)| (target_org == owner_org, indicators));
                Some((target, found))
            }
            _ => None,
        };
        // A retraction of a target not stored yet is kept pending, at most
        // PENDING_PER_ORG per target and organisation.
        let keep_pending = match &target {
            Some((target, None)) => {
                let mut pending: Vec<Digest> = self
                    .store
                    .pending_retractions(&target.0)?
                    .into_iter()
                    .map(Digest)
                    .collect();
                pending.extend(staged.pending.get(target).into_iter().flatten().copied());
                let mut same_org = 0usize;
                for by in &pending {
                    if self.staged_org(staged, by)? == owner_org {
                        same_org += 1;
                    }
                }
                same_org < PENDING_PER_ORG
            }
            _ => false,
        };

        let index;
        {
            let mut writes = staged.batch.envelope(new);
            index = writes.index();
            writes.org(org.as_str()).expires(header.expires_at);
            if let Some(opened) = &opened {
                writes.plaintext(opened.encode());
            }
            if body.is_none()
                && let Seal::Epoch { epoch, .. } = header.seal
                && epoch > self.roster.roster.version
            {
                writes.pending_epoch(epoch);
            }
            for by in &retracted_by {
                writes.retracted_by(&by.0);
            }
            if !waiting.is_empty() {
                writes.clears_pending_retractions();
            }
            if let (Some(Body::Bulletin(bulletin)), true) = (body, retracted_by.is_empty()) {
                for indicator in &bulletin.indicators {
                    writes.indicator(&indicator.key());
                }
            }
            match &target {
                Some((target, None)) => {
                    // The target has not arrived: whether this retraction is
                    // its own org's can only be told then.
                    if keep_pending {
                        writes.retracts_pending(&target.0);
                    }
                }
                Some((target, Some((true, indicators)))) => {
                    writes.retracts(&target.0);
                    for indicator in indicators {
                        writes.unindexes(&indicator.key(), &target.0);
                    }
                }
                // Another org's target: validation rejects this; never act
                // on it.
                Some((_, Some((false, _)))) | None => {}
            }
            // Webhook deliveries are queued in the same batch, so they are
            // durable exactly when the envelope is.
            for (key, value) in self.webhooks.entries(id, header, body, org.as_str()) {
                writes.put_meta(&key, value);
            }
        }

        for by in &retracted_by {
            info!(target = %id, %by, "envelope retracted");
            let event = NodeEvent::Retracted {
                target: id,
                by: *by,
            };
            staged.events.push((Some(index), event));
        }
        match &target {
            Some((target, None)) if keep_pending => {
                staged.pending.entry(*target).or_default().push(id);
            }
            Some((target, Some((true, _)))) => {
                info!(%target, by = %id, "envelope retracted");
                let event = NodeEvent::Retracted {
                    target: *target,
                    by: id,
                };
                staged.events.push((Some(index), event));
            }
            _ => {}
        }
        let brief = opened.as_ref().map(Opened::brief);
        let summary = self.summary(id, envelope, brief.as_ref(), !retracted_by.is_empty());
        staged
            .events
            .push((Some(index), NodeEvent::Stored(summary)));
        staged.staged.insert(id, (author, org.clone(), brief));
        Ok(())
    }

    /// Writes a staged chunk with one `Store::write`, then announces the
    /// events of the envelopes that were new. Returns each envelope's
    /// outcome, in the order staged.
    pub(super) fn commit(&self, staged: Staged<'_>) -> Result<Vec<EnvelopeOutcome>, StoreError> {
        let Staged { batch, events, .. } = staged;
        let outcomes = self.store.write(batch)?;
        if !self.webhooks.is_empty() {
            self.webhooks.queued.notify_waiters();
        }
        for (index, event) in events {
            let new = index.is_none_or(|index| {
                outcomes
                    .get(index)
                    .is_some_and(|outcome| outcome.as_ref().is_ok_and(|inserted| inserted.new))
            });
            if new {
                self.emit(event);
            }
        }
        Ok(outcomes)
    }

    /// The author of stored envelope `id`, if stored.
    fn author_of_stored(&self, id: &Digest) -> Result<Option<NodePublicKey>, StoreError> {
        Ok(self
            .store
            .envelope(&id.0)?
            .and_then(|bytes| Envelope::decode(&bytes).ok())
            .map(|envelope| envelope.header.author))
    }

    /// The organisation of the staged or stored envelope `id`: the one
    /// recorded when it was accepted, else its author's in the roster.
    fn staged_org(&self, staged: &Staged<'_>, id: &Digest) -> Result<Option<OrgId>, StoreError> {
        if let Some((_, org, _)) = staged.staged.get(id) {
            return Ok(Some(org.clone()));
        }
        self.stored_org(id)
    }

    /// The organisation of the stored envelope `id` (or tombstone): the one
    /// recorded when it was accepted, else its author's in the roster.
    pub(super) fn stored_org(&self, id: &Digest) -> Result<Option<OrgId>, StoreError> {
        if let Some(org) = self.store.org_of(&id.0)? {
            return Ok(org.parse().ok());
        }
        Ok(self.author_of_stored(id)?.and_then(|a| self.org_of(&a)))
    }

    /// The organisation of `target` (`None` if unknown) and the indicators
    /// it is indexed under, if it is stored or staged.
    #[allow(clippy::type_complexity)]
    fn target_of(
        &self,
        staged: &Staged<'_>,
        target: &Digest,
    ) -> Result<Option<(Option<OrgId>, Vec<breakwater_protocol::Indicator>)>, StoreError> {
        if let Some((_, org, brief)) = staged.staged.get(target) {
            let indicators = brief
                .as_ref()
                .and_then(|brief| brief.indicators.clone())
                .unwrap_or_default();
            return Ok(Some((Some(org.clone()), indicators)));
        }
        let Some(bytes) = self.store.envelope(&target.0)? else {
            if self.store.contains(&target.0)? {
                // A tombstone: its ciphertext is gone, its organisation is
                // still known.
                let org = self.store.org_of(&target.0)?.and_then(|o| o.parse().ok());
                return Ok(Some((org, Vec::new())));
            }
            return Ok(None);
        };
        let org = Envelope::decode(&bytes)
            .ok()
            .and_then(|e| self.org_of_envelope(target, &e.header.author));
        let indicators = self
            .opened(target)?
            .map(|opened| opened.indicators())
            .unwrap_or_default();
        Ok(Some((org, indicators)))
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
        let by = Digest(by);
        let by_org = self.stored_org(&by)?;
        let same_org = by_org.is_some_and(|org| Some(org) == self.org_of_envelope(id, author));
        Ok(same_org.then_some(by))
    }
}
