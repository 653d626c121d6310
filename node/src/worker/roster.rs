//! Roster updates: verifies a new roster version against the one in force,
//! stores it and tells the event loop (to gossip it and update the
//! allow-list). Rosters come from gossip, from sync and from a local join.

use breakwater_protocol::SignedRoster;
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use tracing::info;

use super::{Outcome, Worker, store_err};
use crate::handle::{NodeEvent, RequestError};

impl Worker {
    /// Judges a roster received by gossip and reports the verdict: `Reject`
    /// (the relay is scored down) only when it does not decode or names
    /// another consortium, which every node decides alike; a roster that
    /// does not follow the one in force here (a fork, a lagging or leading
    /// relay, signatures by admins this version does not have) is ignored,
    /// since the relay judged it against its own roster (M2).
    pub(super) fn on_gossip_roster(&mut self, bytes: &[u8], message_id: MessageId, source: PeerId) {
        let acceptance = match SignedRoster::decode(bytes) {
            Ok(roster) if roster.roster.consortium_id() != self.consortium => {
                MessageAcceptance::Reject
            }
            Ok(roster) if roster.roster.version > self.roster.roster.version + 1 => {
                // We are behind, not the relay: catch up by sync.
                self.start_sync(source);
                MessageAcceptance::Ignore
            }
            Ok(roster) => match self.apply_roster(roster) {
                Ok(Some(_)) => MessageAcceptance::Accept,
                Ok(None) | Err(_) => MessageAcceptance::Ignore,
            },
            Err(_) => MessageAcceptance::Reject,
        };
        self.send(Outcome::Verdict {
            message_id,
            source,
            acceptance,
        });
    }

    /// Applies a roster handed over by a local join; one that is not newer
    /// is an error.
    pub(super) fn join(&mut self, roster: SignedRoster) -> Result<u64, RequestError> {
        match self.apply_roster(roster) {
            Ok(Some(version)) => Ok(version),
            Ok(None) => Err(RequestError::Invalid(format!(
                "roster version is not newer than the one in force ({})",
                self.roster.roster.version
            ))),
            Err(e) => Err(e),
        }
    }

    /// Verifies and applies a roster. `Ok(None)` when it is not newer.
    pub(super) fn apply_roster(&mut self, next: SignedRoster) -> Result<Option<u64>, RequestError> {
        let current = &self.roster.roster;
        if next.roster.consortium_id() != current.consortium_id() {
            return Err(RequestError::Invalid(format!(
                "roster belongs to consortium {}, not {}",
                next.roster.consortium_id(),
                current.consortium_id()
            )));
        }
        if next.roster.version <= current.version {
            return Ok(None);
        }
        SignedRoster::verify_update(current, &next)
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        self.store
            .put_roster(next.roster.version, &next.encode())
            .map_err(store_err)?;
        let version = next.roster.version;
        info!(version, "roster applied");
        self.roster = next.clone();
        self.on_new_epoch(&next.roster);
        self.send(Outcome::RosterApplied(Box::new(next.clone())));
        self.send(Outcome::PublishRoster(next.encode()));
        self.emit(NodeEvent::RosterApplied { version });
        Ok(Some(version))
    }
}
