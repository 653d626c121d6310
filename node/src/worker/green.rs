//! GREEN epoch keys: derives this node's key of every stored roster version
//! from the stored rosters and its sealing key (nothing secret is stored),
//! audits each new version's key package, keeps GREEN envelopes that arrive
//! before their roster in the pending index, and opens them once the key is
//! here (when the roster is applied, and again at start-up). Talks to the
//! store and the event channel.

use std::sync::Arc;

use breakwater_protocol::{
    Body, Digest, Envelope, EpochKeyError, EpochKeys, Roster, SignedRoster, audit_package,
    open_epoch_key,
};
use tracing::{info, warn};

use super::index::Staged;
use super::{Opened, Worker};
use crate::handle::NodeEvent;

impl Worker {
    /// Fills the epoch-key cache from every stored roster version.
    pub(super) fn load_epoch_keys(&mut self) {
        let rosters = match self.store.rosters() {
            Ok(rosters) => rosters,
            Err(e) => {
                warn!("reading stored rosters for GREEN keys failed: {e}");
                Vec::new()
            }
        };
        let mut keys = EpochKeys::new();
        let latest = self.roster.roster.version;
        for (_, bytes) in rosters {
            let Ok(signed) = SignedRoster::decode(&bytes) else {
                continue;
            };
            let audit = signed.roster.version == latest;
            self.take_epoch_key(&signed.roster, audit, &mut keys);
        }
        if !keys.contains_key(&latest) {
            let roster = self.roster.roster.clone();
            self.take_epoch_key(&roster, true, &mut keys);
        }
        self.epoch_keys = Arc::new(keys);
    }

    /// Opens this node's GREEN key of `roster` into `keys` and, when `audit`,
    /// checks that the package gives every active node the same key. A
    /// package that fails either is an alarm: this node then seals its own
    /// GREEN per node.
    fn take_epoch_key(&mut self, roster: &Roster, audit: bool, keys: &mut EpochKeys) {
        let version = roster.version;
        let key = match open_epoch_key(roster, &self.keys) {
            Ok(key) => key,
            Err(EpochKeyError::NoPackage(_) | EpochKeyError::NotARecipient(_)) => return,
            Err(e) => return self.green_alarm(version, e),
        };
        if audit && let Err(e) = audit_package(roster, &key) {
            return self.green_alarm(version, e);
        }
        keys.insert(version, key);
    }

    fn green_alarm(&mut self, version: u64, problem: EpochKeyError) {
        warn!(version, "GREEN key package problem: {problem}");
        self.green_problem = Some(problem.to_string());
        self.emit(NodeEvent::GreenKeyProblem {
            version,
            problem: problem.to_string(),
        });
    }

    /// After `roster` took effect: takes its GREEN key (audited) and opens
    /// what waited for it.
    pub(super) fn on_new_epoch(&mut self, roster: &Roster) {
        let mut keys = (*self.epoch_keys).clone();
        self.take_epoch_key(roster, true, &mut keys);
        self.epoch_keys = Arc::new(keys);
        self.open_pending_green();
    }

    /// Opens every pending GREEN envelope whose roster version is in force,
    /// keeps its record, indexes it and announces it as readable, in one
    /// write. Entries this node has no key for (it is not in that version)
    /// are dropped: they never will open.
    pub(super) fn open_pending_green(&mut self) {
        let pending = match self.store.pending_up_to(self.roster.roster.version) {
            Ok(pending) => pending,
            Err(e) => return warn!("reading pending GREEN envelopes failed: {e}"),
        };
        if pending.is_empty() {
            return;
        }
        let mut staged = Staged::new();
        let mut opened = 0usize;
        for (epoch, id) in pending {
            let envelope = self
                .store
                .envelope(&id)
                .ok()
                .flatten()
                .and_then(|bytes| Envelope::decode(&bytes).ok());
            if let Some(envelope) = envelope
                && let Some(body) = self.open(&envelope)
            {
                let id = Digest(id);
                let retracted = match self.retraction_of(&id, &envelope.header.author) {
                    Ok(retracted) => retracted.is_some(),
                    Err(e) => {
                        warn!("reading the retraction of a pending GREEN envelope failed: {e}");
                        continue;
                    }
                };
                opened += 1;
                let record = Opened::of(&envelope.header, &body);
                let batch = staged.batch();
                batch.put_plaintext(&id.0, record.encode());
                if let (Body::Bulletin(bulletin), false) = (&body, retracted) {
                    for indicator in &bulletin.indicators {
                        batch.index_indicator(&indicator.key(), &id.0);
                    }
                }
                let brief = record.brief();
                staged.event(NodeEvent::Stored(self.summary(
                    id,
                    &envelope,
                    Some(&brief),
                    retracted,
                )));
            }
            staged.batch().clear_pending_epoch(epoch, &id);
        }
        if let Err(e) = self.commit(staged) {
            return warn!("storing opened GREEN envelopes failed: {e}");
        }
        if opened > 0 {
            info!(
                opened,
                "opened GREEN envelopes that arrived before their roster"
            );
        }
    }
}
