//! The `added` index for the TAXII server ([`crate::taxii`]): envelopes in
//! the order this node could first open them, each with its body (and, for
//! a retraction, its target's; for a retracted envelope, its retraction's),
//! read in pages from a time on. Also the back-fill of that index for
//! envelopes opened while it was not kept (before it existed, or while the
//! TAXII server was off: only a node that serves TAXII keeps it).

use breakwater_protocol::{Body, Digest, EgressCap, Envelope};

use super::{Worker, now_ms, store_err};
use crate::handle::RequestError;
use crate::store::{StoreError, WriteBatch};

/// Metadata flag: every opened envelope of this store is in the `added`
/// index (set once the back-fill ran; removed at a start without TAXII,
/// whose node stops keeping the index).
const ADDED_INDEXED: &str = "added-indexed";

/// One readable envelope of the `added` index.
#[derive(Debug, Clone)]
pub struct AddedItem {
    /// When this node could first open it (µs since the epoch), unique.
    pub added: u64,
    /// The envelope.
    pub envelope: Envelope,
    /// Its body.
    pub body: Body,
    /// For a retraction: the retracted envelope and its body, when held
    /// and readable.
    pub target: Option<(Envelope, Body)>,
    /// For a retracted envelope: its (readable) retraction.
    pub retraction: Option<(Envelope, Body)>,
}

/// A page of the `added` index ([`Worker::added_items`]).
#[derive(Debug, Clone, Default)]
pub struct AddedPage {
    /// The readable, unexpired envelopes among the entries read.
    pub items: Vec<AddedItem>,
    /// Where the next page starts (µs, inclusive), or `None` when the index
    /// was read to its end.
    pub next: Option<u64>,
}

impl Worker {
    /// Reads at most `max` entries of the `added` index from `from` µs on
    /// (inclusive) and returns the readable, unexpired envelopes among them
    /// whose label `cap` lets out (checked on the header, before anything is
    /// opened: a retraction is withheld by its own label or its target's).
    pub(crate) fn added_items(
        &self,
        from: u64,
        max: usize,
        cap: EgressCap,
    ) -> Result<AddedPage, RequestError> {
        let max = max.max(1);
        let now = now_ms();
        let entries = self.store.added_from(from, max).map_err(store_err)?;
        let next = match entries.last() {
            Some((at, _)) if entries.len() >= max => Some(at.saturating_add(1)),
            _ => None,
        };
        let mut items = Vec::with_capacity(entries.len());
        for (added, id) in entries {
            let Some((envelope, body)) = self.readable(&Digest(id), now, Some(cap))? else {
                continue;
            };
            let target = match envelope.header.kind.target() {
                Some(target) => self.readable(&target, now, None)?,
                None => None,
            };
            let retraction = match self
                .retraction_of(&Digest(id), &envelope.header.author)
                .map_err(store_err)?
            {
                Some(by) => self.readable(&by, now, None)?,
                None => None,
            };
            items.push(AddedItem {
                added,
                envelope,
                body,
                target,
                retraction,
            });
        }
        Ok(AddedPage { items, next })
    }

    /// The stored envelope `id` and its body, if this node opens it, it has
    /// not expired and its label is within `cap` (when given).
    fn readable(
        &self,
        id: &Digest,
        now: u64,
        cap: Option<EgressCap>,
    ) -> Result<Option<(Envelope, Body)>, RequestError> {
        let Some(bytes) = self.store.envelope(&id.0).map_err(store_err)? else {
            return Ok(None);
        };
        let Ok(envelope) = Envelope::decode(&bytes) else {
            return Ok(None);
        };
        if envelope.header.expires_at <= now
            || cap.is_some_and(|cap| !cap.allows(envelope.header.tlp))
        {
            return Ok(None);
        }
        Ok(self.open(&envelope).map(|body| (envelope, body)))
    }

    /// Puts every opened envelope that is not in the `added` index into it,
    /// once per start that keeps the index after one that did not: at its
    /// creation time (µs), in creation order, made unique and later than
    /// every entry already there, so a TAXII client polling by
    /// `added_after` finds them. A node that does not keep the index (no
    /// TAXII server) drops the flag so that a later start with TAXII
    /// back-fills what arrived meanwhile.
    pub(super) fn index_added(&self) -> Result<(), StoreError> {
        if !self.store.indexes_added() {
            if self.store.meta(ADDED_INDEXED)?.is_some() {
                self.store.remove_meta(ADDED_INDEXED)?;
            }
            return Ok(());
        }
        if self.store.meta(ADDED_INDEXED)?.is_some() {
            return Ok(());
        }
        let indexed: std::collections::HashSet<[u8; 32]> = self
            .store
            .added_from(0, usize::MAX)?
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let mut opened = Vec::new();
        for entry in self.store.plaintext_iter() {
            let (id, _) = entry?;
            if !indexed.contains(&id)
                && let Some(bytes) = self.store.envelope(&id)?
                && let Ok(envelope) = Envelope::decode(&bytes)
            {
                opened.push((envelope.header.created_at, id));
            }
        }
        opened.sort();
        let mut batch = WriteBatch::new();
        let mut last = self.store.last_added()?.unwrap_or(0);
        for (created_at, id) in opened {
            let at = created_at
                .max((last / 1000).saturating_add(1))
                .saturating_mul(1000);
            batch.added(at, &id);
            last = at;
        }
        batch.put_meta(ADDED_INDEXED, vec![1]);
        self.store.write(batch)?;
        Ok(())
    }
}
