//! Pruning: drops the plaintext and indicator index of expired envelopes
//! when the event loop's timer asks; talks only to the store.

use breakwater_protocol::Body;

use super::{Record, Worker, now_ms};
use crate::store::StoreError;

impl Worker {
    /// Drops the plaintext and index entries of expired envelopes. Feed
    /// positions and ciphertext stay, so sync does not fetch them again.
    pub(super) fn prune(&self) -> Result<(), StoreError> {
        let now = now_ms();
        for entry in self.store.plaintext_iter() {
            let (id, raw) = entry?;
            let Ok(record) = serde_json::from_slice::<Record>(&raw) else {
                continue;
            };
            if record.expires_at > now {
                continue;
            }
            if let Body::Bulletin(bulletin) = &record.body {
                for indicator in &bulletin.indicators {
                    self.store.unindex_indicator(&indicator.key(), &id)?;
                }
            }
            self.store.remove_plaintext(&id)?;
        }
        Ok(())
    }
}
