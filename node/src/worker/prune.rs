//! Pruning: drops the plaintext and indicator index of expired envelopes
//! when the event loop's timer asks, in one batch; talks only to the store.

use super::{Opened, Worker, now_ms};
use crate::store::{StoreError, WriteBatch};

impl Worker {
    /// Drops the plaintext and index entries of expired envelopes, in one
    /// write. Feed positions and ciphertext stay, so sync does not fetch them
    /// again.
    pub(super) fn prune(&self) -> Result<(), StoreError> {
        let now = now_ms();
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
}
