//! Own publications: seals bulletins to their recipients, and retractions
//! and sightings to the recipients of their target, at this node's next seq;
//! stores and flushes each before handing it to the event loop to gossip.
//! Answers `NodeHandle::publish`, `retract` and `sight`.

use super::index::Staged;
use super::{Outcome, Worker, now_ms, recipient_key_ids, store_err};
use crate::handle::{PublishRequest, Published, RequestError};
use crate::store::{NewEnvelope, StoreError};
use breakwater_protocol::{
    Body, Digest, Draft, Envelope, EpochKey, Indicator, Kind, Seal, SealingPublicKey, seal_to_in,
    seal_with_in,
};

const DAY_MS: u64 = 24 * 3600 * 1000;

impl Worker {
    pub(super) fn publish(&mut self, request: PublishRequest) -> Result<Published, RequestError> {
        request
            .bulletin
            .check()
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        let now = now_ms();
        let ttl = request.ttl_ms.unwrap_or(self.default_ttl_ms).max(1);
        if ttl > self.policy.max_lifetime_ms {
            return Err(RequestError::Invalid(format!(
                "lifetime of {} days is longer than this node stores ({} days; the protocol allows at most 365)",
                ttl / DAY_MS,
                self.policy.max_lifetime_ms / DAY_MS
            )));
        }
        let (seq, prev) = self.next_seq()?;
        let draft = Draft {
            seq,
            prev,
            created_at: now,
            expires_at: now.saturating_add(ttl),
            tlp: request.tlp,
            kind: Kind::Bulletin,
            body: Body::Bulletin(request.bulletin),
        };
        let epoch_key = self.sealing_epoch_key();
        let envelope = seal_with_in(
            &self.keys,
            &self.roster.roster,
            self.consortium,
            epoch_key.as_ref(),
            draft,
            &request.to,
            &mut self.rng,
        )
        .map_err(|e| RequestError::Invalid(e.to_string()))?;
        self.commit_own(envelope)
    }

    pub(super) fn retract(
        &mut self,
        target: Digest,
        reason: String,
    ) -> Result<Published, RequestError> {
        let envelope = self.own_org_target(&target)?;
        self.follow_up(
            &envelope,
            Kind::Retraction { target },
            Body::Retraction { reason },
        )
    }

    pub(super) fn sight(
        &mut self,
        target: Digest,
        indicator: Indicator,
    ) -> Result<Published, RequestError> {
        let envelope = self.stored_envelope(&target)?;
        let body = Body::Sighting {
            indicator,
            seen_at: now_ms(),
            note: None,
        };
        self.follow_up(&envelope, Kind::Sighting { target }, body)
    }

    /// Seals a retraction or sighting of `target` to the target's recipients
    /// under the target's label, and commits it.
    fn follow_up(
        &mut self,
        target: &Envelope,
        kind: Kind,
        body: Body,
    ) -> Result<Published, RequestError> {
        let recipients = self.recipients_of(target);
        let (seq, prev) = self.next_seq()?;
        let now = now_ms();
        let draft = Draft {
            seq,
            prev,
            created_at: now,
            expires_at: target
                .header
                .expires_at
                .max(now + 1)
                .min(now.saturating_add(self.policy.max_lifetime_ms)),
            tlp: target.header.tlp,
            kind,
            body,
        };
        let epoch_key = self.sealing_epoch_key();
        let sealed = seal_to_in(
            &self.keys,
            &self.roster.roster,
            self.consortium,
            epoch_key.as_ref(),
            draft,
            &recipients,
            &mut self.rng,
        )
        .map_err(|e| RequestError::Invalid(e.to_string()))?;
        self.commit_own(sealed)
    }

    fn stored_envelope(&self, id: &Digest) -> Result<Envelope, RequestError> {
        let bytes = self
            .store
            .envelope(&id.0)
            .map_err(store_err)?
            .ok_or_else(|| RequestError::NotFound(id.to_hex()))?;
        Envelope::decode(&bytes).map_err(|e| RequestError::Store(e.to_string()))
    }

    fn own_org_target(&self, target: &Digest) -> Result<Envelope, RequestError> {
        let envelope = self.stored_envelope(target)?;
        // The organisation fixed when it was stored: a key rotated out of
        // its card stays its organisation's.
        let owner = self.stored_org(target).map_err(store_err)?;
        let mine = self.org_of(&self.keys.node_public());
        match (owner, mine) {
            (Some(owner), Some(mine)) if owner == mine => Ok(envelope),
            (owner, _) => Err(RequestError::Invalid(format!(
                "envelope {} belongs to org {}; only its own organisation may retract it",
                target,
                owner
                    .map(|o| o.to_string())
                    .unwrap_or_else(|| "unknown".into())
            ))),
        }
    }

    /// Sealing keys of the target's recipients that are still in the roster
    /// (always including this org), for retractions and sightings.
    fn recipients_of(&self, envelope: &Envelope) -> Vec<SealingPublicKey> {
        if !envelope.header.tlp.is_sealed() {
            return Vec::new();
        }
        if let Seal::Epoch { .. } = envelope.header.seal {
            // A GREEN follow-up goes under the current epoch key; without
            // one, to every active node.
            return self.roster.roster.all_sealing_keys();
        }
        let wanted = recipient_key_ids(envelope);
        let mine = self.org_of(&self.keys.node_public());
        self.roster
            .roster
            .active_nodes()
            .filter(|(org, node)| {
                wanted.contains(&node.sealing_key.key_id()) || Some(*org) == mine.as_ref()
            })
            .map(|(_, node)| node.sealing_key)
            .collect()
    }

    /// The GREEN key this node seals with: the one of the roster in force,
    /// unless a package alarm says not to trust it.
    pub(super) fn sealing_epoch_key(&self) -> Option<EpochKey> {
        if self.green_problem.is_some() {
            return None;
        }
        self.epoch_keys.get(&self.roster.roster.version).cloned()
    }

    fn next_seq(&self) -> Result<(u64, Digest), RequestError> {
        let me = self.keys.node_public();
        let last = self.store.frontier_of(&me.0).map_err(store_err)?;
        let prev = if last == 0 {
            Digest::ZERO
        } else {
            self.store
                .id_at(&me.0, last)
                .map_err(store_err)?
                .map(Digest)
                .unwrap_or(Digest::ZERO)
        };
        Ok((last + 1, prev))
    }

    /// Stores and flushes an own envelope, then hands it to gossip.
    fn commit_own(&mut self, envelope: Envelope) -> Result<Published, RequestError> {
        let bytes = envelope.encode();
        let id = envelope.id();
        let seq = envelope.header.seq;
        let recipients = match &envelope.header.seal {
            Seal::Clear => 0,
            Seal::Nodes(wraps) => wraps.len(),
            Seal::Epoch { .. } => self.roster.roster.active_nodes().count(),
        };
        // One write for the envelope and everything that goes with it; a
        // clash at our own (author, seq) is a failure, never an ack.
        let header = &envelope.header;
        let org = self.org_of(&header.author).ok_or_else(|| {
            RequestError::Invalid("this node is not an active member of the roster".into())
        })?;
        let now = now_ms();
        if let Some(exceeded) = self.over_quota(&header.author, bytes.len() as u64, now) {
            return Err(RequestError::Invalid(format!(
                "publish refused: {exceeded}"
            )));
        }
        let body = self.open(&envelope);
        let mut staged = Staged::new();
        let new = NewEnvelope {
            id: id.0,
            author: header.author.0,
            seq: header.seq,
            bytes: &bytes,
        };
        self.stage(&mut staged, new, &envelope, body.as_ref(), &org)
            .map_err(store_err)?;
        let outcomes = self.commit(staged).map_err(store_err)?;
        if let Some(Err(equivocation)) = outcomes.first() {
            return Err(store_err(StoreError::Equivocation(*equivocation)));
        }
        // The envelope is in the store now, so a failed flush is no refusal:
        // sync may still serve it once the disk recovers, or it is lost if
        // the node stops first. Say so, so that nobody publishes it twice.
        self.store.flush().map_err(|e| {
            RequestError::Store(format!(
                "envelope {} is stored but could not be flushed to disk ({e}); whether it is published is unknown: it may still reach peers when the disk recovers, or be lost if the node stops first; check with `breakwater show {}` before publishing it again",
                id.to_hex(),
                id.to_hex()
            ))
        })?;
        self.count_stored(&envelope.header.author, bytes.len() as u64, now);
        self.metrics.stored("local", 1);
        self.send(Outcome::PublishEnvelope(bytes));
        Ok(Published {
            id,
            seq,
            recipients,
        })
    }
}
