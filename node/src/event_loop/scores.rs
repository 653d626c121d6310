//! Application-specific gossipsub scores (`set_application_score`, weight 1):
//! what this node holds against a peer beyond gossipsub's own counters
//! (review findings M2 and L1). The event loop records misbehaviour the
//! store worker reports and applies the resulting score; penalties decay.
//!
//! - **Equivocation**: a peer whose node key signed two envelopes for one
//!   seq is the author itself, so it is penalised directly, not whoever
//!   relayed the evidence (the relay forwarded a message that was valid by
//!   its own store, and gossip reports it `Ignore`).
//! - **Ignored messages**: gossip reported `Ignore` because the message was
//!   a duplicate (a replay of an envelope stored long ago), expired, from an
//!   author outside the roster, or state-dependently invalid and sent by its
//!   author itself. An honest relay sends a few of those; a flood costs
//!   validation, so beyond an allowance each one lowers the score.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Penalty per equivocation: one crosses gossipsub's publish threshold
/// (−40), two its graylist threshold (−80).
pub(crate) const EQUIVOCATION_PENALTY: f64 = 50.0;

/// Ignored gossip messages a peer may send (decaying) before it is penalised.
pub(crate) const IGNORED_ALLOWANCE: f64 = 100.0;

/// Penalty per ignored message beyond [`IGNORED_ALLOWANCE`]: 160 more
/// cross the graylist threshold.
pub(crate) const IGNORED_WEIGHT: f64 = 0.5;

/// The lowest application score given.
pub(crate) const MAX_PENALTY: f64 = 1000.0;

/// Equivocation penalties fall to 1 % over this time (as gossipsub's
/// invalid-message penalty does).
const EQUIVOCATION_DECAY: Duration = Duration::from_secs(600);

/// The ignored-message count falls to 1 % over this time.
const IGNORED_DECAY: Duration = Duration::from_secs(60);

/// What a peer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Misbehaviour {
    /// It is the author of an equivocation.
    Equivocation,
    /// It sent a gossip message that was ignored (see the module docs).
    Ignored,
}

#[derive(Debug, Default, Clone, Copy)]
struct Ledger {
    equivocations: f64,
    ignored: f64,
}

impl Ledger {
    fn score(&self) -> f64 {
        let ignored = (self.ignored - IGNORED_ALLOWANCE).max(0.0) * IGNORED_WEIGHT;
        -(self.equivocations * EQUIVOCATION_PENALTY + ignored).min(MAX_PENALTY)
    }
}

/// Per-peer ledgers of misbehaviour, with decay.
#[derive(Debug)]
pub(crate) struct Scores {
    peers: HashMap<PeerId, Ledger>,
    decayed_at: Instant,
}

/// `0.01^(elapsed / over)`: what remains after `elapsed` of a decay to 1 %
/// over `over`.
fn remaining(elapsed: Duration, over: Duration) -> f64 {
    0.01f64.powf(elapsed.as_secs_f64() / over.as_secs_f64())
}

impl Scores {
    pub fn new(now: Instant) -> Scores {
        Scores {
            peers: HashMap::new(),
            decayed_at: now,
        }
    }

    /// Records `what` against `peer`; returns its new application score.
    pub fn record(&mut self, peer: PeerId, what: Misbehaviour) -> f64 {
        let ledger = self.peers.entry(peer).or_default();
        match what {
            Misbehaviour::Equivocation => ledger.equivocations += 1.0,
            Misbehaviour::Ignored => ledger.ignored += 1.0,
        }
        ledger.score()
    }

    /// The application score of `peer` (0 when nothing is held against it).
    #[cfg(test)]
    pub fn score(&self, peer: &PeerId) -> f64 {
        self.peers.get(peer).map_or(0.0, Ledger::score)
    }

    /// Decays every ledger to `now`; returns the scores of every peer with
    /// a ledger, and forgets (with a final score of 0) those decayed to
    /// nothing.
    pub fn decay(&mut self, now: Instant) -> Vec<(PeerId, f64)> {
        let elapsed = now.saturating_duration_since(self.decayed_at);
        self.decayed_at = now;
        let (equivocations, ignored) = (
            remaining(elapsed, EQUIVOCATION_DECAY),
            remaining(elapsed, IGNORED_DECAY),
        );
        let mut scores = Vec::with_capacity(self.peers.len());
        self.peers.retain(|peer, ledger| {
            ledger.equivocations *= equivocations;
            ledger.ignored *= ignored;
            if ledger.equivocations < 0.01 {
                ledger.equivocations = 0.0;
            }
            if ledger.ignored < 1.0 {
                ledger.ignored = 0.0;
            }
            scores.push((*peer, ledger.score()));
            ledger.equivocations > 0.0 || ledger.ignored > 0.0
        });
        scores
    }
}

#[cfg(test)]
mod tests;
