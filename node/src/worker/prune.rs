//! Pruning, when the event loop's timer asks: drops the plaintext and
//! indicator index of expired envelopes; deletes their ciphertext once the
//! storage policy's grace period has passed, and every envelope of an
//! organisation revoked longer than the policy's purge delay, leaving
//! tombstones so feeds stay contiguous. Talks only to the store.

use breakwater_protocol::{Digest, Envelope, NodePublicKey};

use super::{Opened, Worker, now_ms};
use crate::store::{EXPIRY_NONE, StoreError, WriteBatch};

/// Name of the meta entry that says every stored envelope has its expiry
/// recorded in its `i` entry (stores written before layout 2.1 without an
/// expiry index get it at start).
const EXPIRY_RECORDED: &str = "expiry-recorded";

/// Prefix of the meta entries that record when this node first saw an
/// organisation revoked (unix ms, 8 bytes BE).
const REVOKED_AT: &str = "revoked-at/";

/// Most envelopes turned into tombstones per write.
const TOMBSTONES_PER_BATCH: usize = 1024;

impl Worker {
    /// One pruning pass: expired plaintext, then expired ciphertext past its
    /// grace period, then revoked organisations past the purge delay.
    pub(super) fn prune(&mut self) -> Result<(), StoreError> {
        let now = now_ms();
        self.prune_plaintext(now)?;
        self.index_expiry()?;
        self.delete_expired(now)?;
        self.purge_revoked(now)?;
        self.write_succeeded();
        Ok(())
    }

    /// Drops the plaintext and index entries of expired envelopes, in one
    /// write.
    fn prune_plaintext(&self, now: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        for entry in self.store.plaintext_iter() {
            let (id, raw) = entry?;
            let Some(opened) = Opened::decode(&raw) else {
                continue;
            };
            if opened.expires_at() > now {
                continue;
            }
            for indicator in opened.indicators() {
                batch.unindex_indicator(&indicator.key(), &id);
            }
            batch.remove_plaintext(&id);
        }
        if !batch.is_empty() {
            self.store.write(batch)?;
        }
        Ok(())
    }

    /// Records the expiry of every stored envelope that has none recorded,
    /// once, for stores written before the store kept expiries (layout 2.1
    /// folds the rest when it opens); the envelope's header says it, and a
    /// tombstone has nothing left to delete. A fresh or already complete
    /// store costs one scan of the `i` family, then only the marker read.
    pub(super) fn index_expiry(&self) -> Result<(), StoreError> {
        if self.store.meta(EXPIRY_RECORDED)?.is_some() {
            return Ok(());
        }
        for chunk in self.store.expiry_unrecorded()?.chunks(TOMBSTONES_PER_BATCH) {
            let mut batch = WriteBatch::new();
            for id in chunk {
                let expires_at = match self.store.envelope(id)? {
                    None => EXPIRY_NONE,
                    Some(bytes) => match Envelope::decode(&bytes) {
                        Ok(envelope) => envelope.header.expires_at,
                        // Stored envelopes decoded when they were accepted;
                        // one that no longer does is left for `doctor`.
                        Err(_) => continue,
                    },
                };
                batch.record_expiry(id, expires_at);
            }
            self.store.write(batch)?;
        }
        self.store.put_meta(EXPIRY_RECORDED, &[1])?;
        Ok(())
    }

    /// Stages the deletion of envelope `id` at `(author, seq)`: its
    /// ciphertext and plaintext go, its indicators are unindexed, a
    /// tombstone stays. Returns the ciphertext bytes freed.
    fn stage_tombstone(
        &self,
        batch: &mut WriteBatch<'_>,
        author: &[u8; 32],
        seq: u64,
        id: &[u8; 32],
    ) -> Result<u64, StoreError> {
        let Some(bytes) = self.store.envelope(id)? else {
            // Already a tombstone: nothing left to delete.
            batch.record_expiry(id, EXPIRY_NONE);
            return Ok(0);
        };
        if let Some(opened) = self.opened(&Digest(*id))? {
            for indicator in opened.indicators() {
                batch.unindex_indicator(&indicator.key(), id);
            }
        }
        batch.tombstone(author, seq, id);
        Ok(bytes.len() as u64)
    }

    /// Deletes the ciphertext of envelopes expired for longer than the
    /// grace period, in writes of [`TOMBSTONES_PER_BATCH`].
    fn delete_expired(&mut self, now: u64) -> Result<(), StoreError> {
        let until = now.saturating_sub(self.policy.expired_grace_ms);
        let mut after = None;
        loop {
            let expiring = self
                .store
                .expiring(until, TOMBSTONES_PER_BATCH, after.as_ref())?;
            let Some(&(_, last, _, _)) = expiring.last() else {
                return Ok(());
            };
            after = Some(last);
            let mut batch = WriteBatch::new();
            let mut freed = Vec::with_capacity(expiring.len());
            for (_, id, author, seq) in &expiring {
                let bytes = self.stage_tombstone(&mut batch, author, *seq, id)?;
                freed.push((NodePublicKey(*author), bytes));
            }
            self.store.write(batch)?;
            for (author, bytes) in freed {
                self.count_deleted(&author, bytes);
            }
            if expiring.len() < TOMBSTONES_PER_BATCH {
                return Ok(());
            }
        }
    }

    /// Deletes the ciphertext of every envelope of the nodes of each
    /// organisation revoked (as first seen by this node) longer ago than the
    /// purge delay; tombstones stay.
    fn purge_revoked(&mut self, now: u64) -> Result<(), StoreError> {
        let revoked: Vec<_> = self
            .roster
            .roster
            .members
            .iter()
            .filter(|member| member.revoked)
            .map(|member| (member.card.org_id.clone(), member.card.nodes.clone()))
            .collect();
        for (org, nodes) in revoked {
            let key = format!("{REVOKED_AT}{org}");
            let since = match self.store.meta(&key)? {
                Some(raw) => raw
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(now),
                None => {
                    self.store.put_meta(&key, &now.to_be_bytes())?;
                    now
                }
            };
            if now.saturating_sub(since) < self.policy.revoked_purge_after_ms {
                continue;
            }
            for node in nodes {
                let author = node.node_key;
                for chunk in self
                    .store
                    .live_feed(&author.0)?
                    .chunks(TOMBSTONES_PER_BATCH)
                {
                    let mut batch = WriteBatch::new();
                    let mut freed = 0u64;
                    for (seq, id) in chunk {
                        freed += self.stage_tombstone(&mut batch, &author.0, *seq, id)?;
                    }
                    self.store.write(batch)?;
                    self.count_deleted(&author, freed);
                }
            }
        }
        Ok(())
    }
}
