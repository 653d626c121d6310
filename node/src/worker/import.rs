//! Import of an air-gap bundle's items: rosters through the roster path,
//! envelopes through the same ingest path as a sync answer, then one
//! outcome per item (accepted, already held, or refused with the reason the
//! protocol's validation gives).

use breakwater_protocol::envelope::id_of;
use breakwater_protocol::{SignedRoster, Verdict};

use super::ingest::StoreView;
use super::roster::ForkCheck;
use super::{Origin, Worker, now_ms};
use crate::export::{ImportReport, ImportRequest, ItemOutcome};
use crate::handle::RequestError;

impl Worker {
    pub(crate) fn import(&mut self, request: ImportRequest) -> Result<ImportReport, RequestError> {
        let mut outcomes = Vec::new();
        for (index, text) in request.rosters {
            let roster = hex::decode(&text)
                .map_err(|e| e.to_string())
                .and_then(|bytes| SignedRoster::decode(&bytes).map_err(|e| e.to_string()));
            let outcome = match roster {
                Err(e) => ItemOutcome::Refused(format!("roster: {e}")),
                Ok(roster) => {
                    let version = roster.roster.version;
                    let encoded = roster.encode();
                    match self.apply_roster(roster.clone()) {
                        Ok(Some(_)) => ItemOutcome::Accepted,
                        Ok(None) => match self.store.roster(version) {
                            Ok(Some(held)) if held == encoded => ItemOutcome::AlreadyHeld,
                            // Validly signed by the admins of the version
                            // before it: a roster fork, kept as evidence as
                            // one met in sync would be.
                            _ if self.check_fork(&roster, None) == ForkCheck::Fork => {
                                ItemOutcome::Refused(format!(
                                    "roster version {version} conflicts with the one this node holds and both are validly signed: a roster fork, kept as evidence (status shows it; resolve it with `breakwater consortium resolve-fork`)"
                                ))
                            }
                            _ => ItemOutcome::Refused(format!(
                                "roster version {version} differs from the one this node holds"
                            )),
                        },
                        Err(e) => ItemOutcome::Refused(format!("roster version {version}: {e}")),
                    }
                }
            };
            outcomes.push((index, outcome));
        }
        let mut fresh: Vec<(usize, Vec<u8>)> = Vec::new();
        for (index, text) in request.envelopes {
            match hex::decode(&text) {
                Err(e) => outcomes.push((index, ItemOutcome::Refused(format!("not hex: {e}")))),
                Ok(bytes) => {
                    let held = self
                        .store
                        .contains(&id_of(&bytes).0)
                        .map_err(super::store_err)?;
                    if held {
                        outcomes.push((index, ItemOutcome::AlreadyHeld));
                    } else {
                        fresh.push((index, bytes));
                    }
                }
            }
        }
        if !fresh.is_empty() {
            let items: Vec<Vec<u8>> = fresh.iter().map(|(_, bytes)| bytes.clone()).collect();
            let peer = self.keys.peer_id();
            self.ingest(items, Origin::Sync { peer });
        }
        let now = now_ms();
        for (index, bytes) in fresh {
            let stored = self
                .store
                .contains(&id_of(&bytes).0)
                .map_err(super::store_err)?;
            let outcome = if stored {
                ItemOutcome::Accepted
            } else {
                let reason = match breakwater_protocol::validate(
                    &bytes,
                    now,
                    &self.roster.roster,
                    &StoreView(&self.store),
                ) {
                    Verdict::Reject(rejection) => rejection.to_string(),
                    Verdict::Ignore(reason) => reason.to_string(),
                    Verdict::Accept(_) => "not stored (a store error; see the node's log)".into(),
                };
                ItemOutcome::Refused(reason)
            };
            outcomes.push((index, outcome));
        }
        Ok(ImportReport { outcomes })
    }
}
