//! Everything written with a new envelope, for ingest, own publications and
//! GREEN envelopes opened late alike: staged into the one [`WriteBatch`] of
//! its chunk — the envelope, its plaintext record, its indicators, the
//! retractions it makes or that waited for it, its pending-epoch entry — and
//! the events announced once that batch is written, for the envelopes that
//! were new. Talks only to the store and the event channel.

use std::collections::HashMap;

use breakwater_protocol::{Body, Digest, Envelope, Kind, NodePublicKey, Seal};
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
    /// Envelopes staged so far: author and, if opened, what list needs.
    staged: HashMap<Digest, (NodePublicKey, Option<Brief>)>,
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
    ) -> Result<(), StoreError> {
        let id = Digest(new.id);
        let header = &envelope.header;
        let author = header.author;
        let owner_org = self.org_of(&author);
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
            let by_author = match staged.staged.get(by) {
                Some((by_author, _)) => Some(*by_author),
                None => self.author_of_stored(by)?,
            };
            if owner_org.is_some() && by_author.and_then(|a| self.org_of(&a)) == owner_org {
                retracted_by.push(*by);
            }
        }
        // The target of this retraction, if stored: its author and the
        // indicators it is indexed under.
        let target = match header.kind {
            Kind::Retraction { target } => {
                let found = self.target_of(staged, &target)?.map(|(owner, indicators)| {
                    let same_org = owner.and_then(|o| self.org_of(&o)) == owner_org;
                    (same_org, indicators)
                });
                Some((target, found))
            }
            _ => None,
        };

        let index;
        {
            let mut writes = staged.batch.envelope(new);
            index = writes.index();
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
                    writes.retracts_pending(&target.0);
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
            Some((target, None)) => {
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
        staged.staged.insert(id, (author, brief));
        Ok(())
    }

    /// Writes a staged chunk with one `Store::write`, then announces the
    /// events of the envelopes that were new. Returns each envelope's
    /// outcome, in the order staged.
    pub(super) fn commit(&self, staged: Staged<'_>) -> Result<Vec<EnvelopeOutcome>, StoreError> {
        let Staged { batch, events, .. } = staged;
        let outcomes = self.store.write(batch)?;
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

    /// The author of `target` (`None` if it does not decode) and the
    /// indicators it is indexed under, if it is stored or staged.
    #[allow(clippy::type_complexity)]
    fn target_of(
        &self,
        staged: &Staged<'_>,
        target: &Digest,
    ) -> Result<Option<(Option<NodePublicKey>, Vec<breakwater_protocol::Indicator>)>, StoreError>
    {
        if let Some((author, brief)) = staged.staged.get(target) {
            let indicators = brief
                .as_ref()
                .and_then(|brief| brief.indicators.clone())
                .unwrap_or_default();
            return Ok(Some((Some(*author), indicators)));
        }
        let Some(bytes) = self.store.envelope(&target.0)? else {
            return Ok(None);
        };
        let owner = Envelope::decode(&bytes).ok().map(|e| e.header.author);
        let indicators = self
            .opened(target)?
            .map(|opened| opened.indicators())
            .unwrap_or_default();
        Ok(Some((owner, indicators)))
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
        let by_author = self.author_of_stored(&Digest(by))?;
        let same_org = by_author
            .and_then(|a| self.org_of(&a))
            .is_some_and(|org| Some(org) == self.org_of(author));
        Ok(same_org.then_some(Digest(by)))
    }
}
