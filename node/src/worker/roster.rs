//! Roster updates: verifies a new roster version against the one in force,
//! stores it and tells the event loop (to gossip it and update the
//! allow-list). Rosters come from gossip, from sync and from a local join.
//! Also roster fork detection: a second valid roster for a version this node
//! holds is recorded as evidence (see [`crate::fork`]), raised as
//! [`NodeEvent::RosterFork`], and stops every further roster update until an
//! operator resolves it.

use breakwater_protocol::{RosterError, SignedRoster};
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use tracing::{debug, info, warn};

use super::{Outcome, Worker, now_ms, store_err};
use crate::fork::ForkEvidence;
use crate::handle::{NodeEvent, RequestError};

/// How a roster of a version this node holds compares with its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ForkCheck {
    /// The same roster, or one this node cannot compare (newer than ours,
    /// not stored, undecodable): nothing to say.
    Same,
    /// A different roster that is a valid successor of our previous version:
    /// a fork at its version (recorded now, or one is recorded already).
    Fork,
    /// A different roster whose `prev` is not our previous version: the
    /// chains parted earlier.
    Deeper,
    /// A different roster that is not validly signed: junk, not evidence.
    Invalid,
}

impl Worker {
    /// Judges a roster received by gossip and reports the verdict: `Reject`
    /// (the relay is scored down) only when it does not decode or names
    /// another consortium, which every node decides alike; a roster that
    /// does not follow the one in force here (a fork, a lagging or leading
    /// relay, signatures by admins this version does not have) is ignored,
    /// since the relay judged it against its own roster (M2).
    pub(super) fn on_gossip_roster(&mut self, bytes: &[u8], message_id: MessageId, source: PeerId) {
        let current = self.roster.roster.version;
        let acceptance = match SignedRoster::decode(bytes) {
            Ok(roster) if roster.roster.consortium_id() != self.consortium => {
                MessageAcceptance::Reject
            }
            Ok(_) if self.fork.is_some() => MessageAcceptance::Ignore,
            Ok(roster) if roster.roster.version > current + 1 => {
                // We are behind, not the relay: catch up by sync.
                self.start_sync(source);
                MessageAcceptance::Ignore
            }
            Ok(roster) if roster.roster.version <= current => {
                if self.check_fork(&roster, Some(source)) == ForkCheck::Deeper {
                    self.start_sync(source);
                }
                MessageAcceptance::Ignore
            }
            Ok(roster) if roster.roster.prev != self.roster_hash => {
                // The successor of another version `current`: a fork, which
                // sync finds and records.
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
        crate::node::check_own_entry(&self.keys, &roster)
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        match self.apply_roster(roster) {
            Ok(Some(version)) => Ok(version),
            Ok(None) => Err(RequestError::Invalid(format!(
                "roster version is not newer than the one in force ({})",
                self.roster.roster.version
            ))),
            Err(e) => Err(e),
        }
    }

    /// The refusal of every roster update while a fork is recorded.
    fn fork_refusal(&self) -> Option<RequestError> {
        self.fork.as_ref().map(|fork| {
            RequestError::Invalid(format!(
                "a roster fork at version {} is recorded (ours {}, theirs {}): no roster update is applied until it is resolved (`breakwater consortium resolve-fork`)",
                fork.version, fork.ours, fork.theirs
            ))
        })
    }

    /// Verifies and applies a roster. `Ok(None)` when it is not newer (a
    /// different roster of a version we hold is checked as a fork).
    pub(super) fn apply_roster(&mut self, next: SignedRoster) -> Result<Option<u64>, RequestError> {
        let current = &self.roster.roster;
        if next.roster.consortium_id() != current.consortium_id() {
            return Err(RequestError::Invalid(format!(
                "roster belongs to consortium {}, not {}",
                next.roster.consortium_id(),
                current.consortium_id()
            )));
        }
        if let Some(refusal) = self.fork_refusal() {
            warn!(
                version = next.roster.version,
                "roster update not applied: {refusal}"
            );
            return Err(refusal);
        }
        if next.roster.version <= current.version {
            self.check_fork(&next, None);
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
        self.roster_hash = next.roster.hash();
        self.on_new_epoch(&next.roster);
        self.send(Outcome::RosterApplied(Box::new(next.clone())));
        self.send(Outcome::PublishRoster(next.encode()));
        self.emit(NodeEvent::RosterApplied { version });
        Ok(Some(version))
    }

    /// The hash of our roster of `version`, if we hold it.
    pub(super) fn our_roster_hash(&self, version: u64) -> Option<breakwater_protocol::Digest> {
        if version == self.roster.roster.version {
            return Some(self.roster_hash);
        }
        let bytes = self.store.roster(version).ok().flatten()?;
        SignedRoster::decode(&bytes).ok().map(|r| r.roster.hash())
    }

    /// Compares `theirs` with our roster of the same version. A different
    /// one that our previous version's admins signed to their threshold is
    /// a fork: the first is recorded as evidence (flushed), logged at WARN
    /// and raised as [`NodeEvent::RosterFork`].
    pub(super) fn check_fork(&mut self, theirs: &SignedRoster, peer: Option<PeerId>) -> ForkCheck {
        let version = theirs.roster.version;
        if version > self.roster.roster.version || version < 2 {
            return ForkCheck::Same;
        }
        let stored = |v: u64| {
            self.store
                .roster(v)
                .ok()
                .flatten()
                .and_then(|bytes| SignedRoster::decode(&bytes).ok())
        };
        let ours = if version == self.roster.roster.version {
            Some(self.roster.clone())
        } else {
            stored(version)
        };
        let (Some(ours), Some(ancestor)) = (ours, stored(version - 1)) else {
            return ForkCheck::Same;
        };
        if ours.roster.hash() == theirs.roster.hash() {
            return ForkCheck::Same;
        }
        match SignedRoster::verify_update(&ancestor.roster, theirs) {
            Ok(()) => {}
            Err(RosterError::BadPrev { .. }) => return ForkCheck::Deeper,
            Err(e) => {
                debug!(
                    version,
                    "a different roster of a version we hold does not verify: {e}"
                );
                return ForkCheck::Invalid;
            }
        }
        if self.fork.is_some() {
            return ForkCheck::Fork;
        }
        let evidence = ForkEvidence::new(&ours, theirs, now_ms(), peer.map(|p| p.to_string()));
        match crate::fork::record(&self.store, &evidence) {
            Ok(_) => {}
            Err(e) => warn!(version, "storing roster fork evidence failed: {e}"),
        }
        let fork = evidence.summary();
        warn!(
            version,
            ours = %fork.ours,
            theirs = %fork.theirs,
            peer = fork.peer.as_deref().unwrap_or("-"),
            "ROSTER FORK: two valid rosters for one version; evidence kept; no roster update is applied until an operator resolves it (breakwater consortium resolve-fork)"
        );
        self.emit(NodeEvent::RosterFork {
            version,
            ours: fork.ours,
            theirs: fork.theirs,
        });
        self.fork = Some(fork);
        self.load_fork_keys();
        ForkCheck::Fork
    }
}
