//! Sync, both sides: serves peers' requests (Hello, ranges, rosters) from
//! the store, and drives this node's rounds with each peer — one chain of
//! request and answer per peer, asking ahead when a peer cuts a batch short.
//! Requests and replies go to the event loop as outcomes; received
//! envelopes go to `ingest`, received rosters to `roster`.

use std::time::{Duration, Instant};

use breakwater_protocol::sync::{
    MAX_BATCH_BYTES, MAX_BATCH_ITEMS, MAX_RANGES, MAX_ROSTERS, SeqRange,
};
use breakwater_protocol::{
    Digest, Envelope, Frontier, NodePublicKey, SignedRoster, SyncRequest, SyncResponse,
};
use libp2p::PeerId;
use tracing::debug;

use super::{Origin, Outcome, Worker};
use crate::handle::RequestError;

/// Per-peer state of an outgoing sync round: a single chain of request and
/// answer.
#[derive(Debug)]
pub(super) struct Round {
    /// Their frontier, once they answered the Hello.
    theirs: Option<Frontier>,
    /// Our frontier digest after the last batch (see [`Round::advanced`]).
    last_digest: Option<Digest>,
    /// Last request or answer; a round quiet for [`ROUND_STALE`] is dead
    /// (an answer dropped on a full queue) and may be replaced.
    active_at: Instant,
    /// Another round was asked for meanwhile (a gossip gap, a tick): start
    /// it when this one ends, since their frontier has moved on.
    again: bool,
    /// The ranges of the last request.
    asked: Vec<SeqRange>,
}

impl Round {
    /// Records `digest`, our frontier after a batch; false when the batch
    /// moved it nothing since the last one.
    fn advanced(&mut self, digest: Digest) -> bool {
        let moved = self.last_digest != Some(digest);
        self.last_digest = Some(digest);
        moved
    }
}

/// How long a round may go without an answer before a new one replaces it
/// (twice the sync request timeout).
const ROUND_STALE: Duration = Duration::from_secs(60);

/// What is left of `asked` (served in order) once a batch ended with
/// `author`'s `seq`; `None` when that matches no asked range or nothing is
/// left.
fn rest_of(asked: &[SeqRange], author: NodePublicKey, seq: u64) -> Option<Vec<SeqRange>> {
    let at = asked
        .iter()
        .position(|r| r.author == author && r.from <= seq && seq <= r.to)?;
    let mut rest = Vec::with_capacity(asked.len() - at);
    if let Some(range) = asked.get(at)
        && seq < range.to
    {
        rest.push(SeqRange {
            author,
            from: seq + 1,
            to: range.to,
        });
    }
    rest.extend_from_slice(asked.get(at + 1..).unwrap_or_default());
    (!rest.is_empty()).then_some(rest)
}

impl Worker {
    /// Our request to `peer` failed: drops the round and starts a new one if
    /// `retry` says so or one was asked for meanwhile.
    pub(super) fn sync_failed(&mut self, peer: PeerId, retry: bool) {
        let again = self.rounds.remove(&peer).is_some_and(|r| r.again);
        if retry || again {
            self.start_sync(peer);
        }
    }

    /// Starts a round with `peer`, unless one is under way: one chain of
    /// requests per peer, so two rounds never fetch the same ranges. A start
    /// asked for during a round runs when it ends.
    pub(super) fn start_sync(&mut self, peer: PeerId) {
        if let Some(round) = self.rounds.get_mut(&peer)
            && round.active_at.elapsed() < ROUND_STALE
        {
            round.again = true;
            return;
        }
        let request = SyncRequest::Hello {
            digest: self.frontier().digest(),
            roster_version: self.roster.roster.version,
        };
        self.rounds.insert(
            peer,
            Round {
                theirs: None,
                last_digest: None,
                active_at: Instant::now(),
                again: false,
                asked: Vec::new(),
            },
        );
        self.traffic.sync_requests += 1;
        self.send(Outcome::SyncRequest {
            peer,
            request: request.encode(),
        });
    }

    /// Ends the round with `peer`, starting the next one if it was asked for.
    fn end_round(&mut self, peer: PeerId) {
        if self.rounds.remove(&peer).is_some_and(|r| r.again) {
            self.start_sync(peer);
        }
    }

    pub(super) fn serve_sync(&self, request: &[u8]) -> SyncResponse {
        let request = match SyncRequest::decode(request) {
            Ok(r) => r,
            Err(e) => return SyncResponse::Refused(e.to_string()),
        };
        match request {
            SyncRequest::Hello {
                digest,
                roster_version,
            } => {
                let frontier = self.frontier();
                let ours = self.roster.roster.version;
                if digest == frontier.digest() && roster_version == ours {
                    SyncResponse::InSync
                } else {
                    SyncResponse::Frontier {
                        frontier,
                        roster_version: ours,
                    }
                }
            }
            SyncRequest::Ranges(ranges) => {
                let mut items = Vec::new();
                let mut bytes = 0usize;
                let mut more = false;
                for range in ranges {
                    if bytes >= MAX_BATCH_BYTES || items.len() >= MAX_BATCH_ITEMS {
                        more = true;
                        break;
                    }
                    match self.store.range(
                        &range.author.0,
                        range.from,
                        range.to,
                        MAX_BATCH_BYTES - bytes,
                        MAX_BATCH_ITEMS - items.len(),
                    ) {
                        Ok((found, cut)) => {
                            bytes += found.iter().map(Vec::len).sum::<usize>();
                            items.extend(found);
                            // A batch ends with the range it cut, so the
                            // asker can tell from its last item where to go on.
                            if cut {
                                more = true;
                                break;
                            }
                        }
                        Err(e) => return SyncResponse::Refused(format!("store: {e}")),
                    }
                }
                SyncResponse::Envelopes { items, more }
            }
            SyncRequest::Rosters { after } => match self.store.rosters() {
                Ok(all) => {
                    // Oldest first, bounded like envelope batches; the
                    // requester asks again for the rest.
                    let mut bytes = 0usize;
                    let rosters = all
                        .into_iter()
                        .filter(|(v, _)| *v > after)
                        .take(MAX_ROSTERS)
                        .take_while(|(_, b)| {
                            bytes += b.len();
                            bytes <= MAX_BATCH_BYTES || bytes == b.len()
                        })
                        .map(|(_, b)| b)
                        .collect();
                    SyncResponse::Rosters(rosters)
                }
                Err(e) => SyncResponse::Refused(format!("store: {e}")),
            },
        }
    }

    pub(super) fn on_sync_answer(&mut self, peer: PeerId, response: &[u8]) {
        if let Some(round) = self.rounds.get_mut(&peer) {
            round.active_at = Instant::now();
        }
        let response = match SyncResponse::decode(response) {
            Ok(r) => r,
            Err(e) => {
                debug!(%peer, "bad sync response: {e}");
                self.end_round(peer);
                return;
            }
        };
        match response {
            SyncResponse::InSync | SyncResponse::Refused(_) => self.end_round(peer),
            SyncResponse::Frontier {
                frontier,
                roster_version,
            } => {
                let Some(round) = self.rounds.get_mut(&peer) else {
                    // The round was replaced or failed meanwhile.
                    return;
                };
                round.theirs = Some(frontier);
                if roster_version > self.roster.roster.version {
                    let request = SyncRequest::Rosters {
                        after: self.roster.roster.version,
                    };
                    self.traffic.sync_requests += 1;
                    self.send(Outcome::SyncRequest {
                        peer,
                        request: request.encode(),
                    });
                } else {
                    self.request_missing(peer);
                }
            }
            SyncResponse::Rosters(rosters) => {
                for bytes in rosters {
                    match SignedRoster::decode(&bytes)
                        .map_err(|e| RequestError::Invalid(e.to_string()))
                    {
                        Ok(roster) => {
                            if let Err(e) = self.apply_roster(roster) {
                                debug!(%peer, "roster from sync refused: {e}");
                                break;
                            }
                        }
                        Err(e) => {
                            debug!(%peer, "roster from sync undecodable: {e}");
                            break;
                        }
                    }
                }
                self.request_missing(peer);
            }
            SyncResponse::Envelopes { items, more } => {
                // The rest is asked for before this batch is checked, so the
                // peer serves it while this node works.
                let asked_ahead = more && self.ask_for_the_rest(peer, items.last());
                self.ingest(items, Origin::Sync { peer });
                if asked_ahead {
                    self.check_progress(peer);
                } else {
                    self.request_missing(peer);
                }
            }
        }
    }

    /// Ends the round with `peer` if the batch just taken moved nothing
    /// forward (a peer answering with junk, or envelopes it cannot prove):
    /// the request already sent ahead then finds no round and stops.
    fn check_progress(&mut self, peer: PeerId) {
        let digest = self.frontier().digest();
        let Some(round) = self.rounds.get_mut(&peer) else {
            return;
        };
        if !round.advanced(digest) {
            self.end_round(peer);
        }
    }

    /// After a batch that `peer` cut short, asks at once for what it did not
    /// send of the ranges last asked: ranges are served in order, so the last
    /// item says where the batch stopped. Returns whether it asked; when the
    /// last item matches no asked range, the frontier decides after ingest.
    fn ask_for_the_rest(&mut self, peer: PeerId, last: Option<&Vec<u8>>) -> bool {
        let Some(last) = last.and_then(|bytes| Envelope::decode(bytes).ok()) else {
            return false;
        };
        let Some(round) = self.rounds.get_mut(&peer) else {
            return false;
        };
        let Some(rest) = rest_of(&round.asked, last.header.author, last.header.seq) else {
            return false;
        };
        round.asked = rest.clone();
        round.active_at = Instant::now();
        self.traffic.sync_requests += 1;
        self.send(Outcome::SyncRequest {
            peer,
            request: SyncRequest::Ranges(rest).encode(),
        });
        true
    }

    /// Asks `peer` for the ranges it has and we lack, while that makes progress.
    fn request_missing(&mut self, peer: PeerId) {
        let mine = self.frontier();
        let digest = mine.digest();
        let Some(round) = self.rounds.get_mut(&peer) else {
            return;
        };
        if round.theirs.is_none() {
            return;
        }
        if !round.advanced(digest) {
            // The last batch moved nothing forward: stop rather than loop.
            self.end_round(peer);
            return;
        }
        let Some(theirs) = &round.theirs else {
            return;
        };
        // Feeds of authors we would reject (revoked, unknown) are never
        // requested: they could never advance and would starve the rest.
        let roster = &self.roster.roster;
        let mut missing: Vec<_> = mine
            .missing_from(theirs)
            .into_iter()
            .filter(|r| roster.org_of(&r.author).is_some())
            .collect();
        if missing.is_empty() {
            self.end_round(peer);
            return;
        }
        round.active_at = Instant::now();
        missing.truncate(MAX_RANGES);
        round.asked = missing.clone();
        self.traffic.sync_requests += 1;
        self.send(Outcome::SyncRequest {
            peer,
            request: SyncRequest::Ranges(missing).encode(),
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn range(author: u8, from: u64, to: u64) -> SeqRange {
        SeqRange {
            author: NodePublicKey([author; 32]),
            from,
            to,
        }
    }

    #[test]
    fn the_rest_of_a_cut_batch_starts_after_its_last_item() {
        let asked = [range(1, 1, 100), range(2, 5, 9), range(3, 1, 1)];
        let a = NodePublicKey([1; 32]);
        let b = NodePublicKey([2; 32]);
        // Cut inside the first range: the rest of it, then the others.
        assert_eq!(
            rest_of(&asked, a, 40),
            Some(vec![range(1, 41, 100), range(2, 5, 9), range(3, 1, 1)])
        );
        // Cut at the end of a range: the ranges after it.
        assert_eq!(
            rest_of(&asked, a, 100),
            Some(vec![range(2, 5, 9), range(3, 1, 1)])
        );
        assert_eq!(
            rest_of(&asked, b, 7),
            Some(vec![range(2, 8, 9), range(3, 1, 1)])
        );
        // Nothing left.
        assert_eq!(rest_of(&asked, NodePublicKey([3; 32]), 1), None);
        // An item outside every asked range (a confused or hostile peer)
        // asks for nothing: the frontier decides after ingest.
        assert_eq!(rest_of(&asked, a, 101), None);
        assert_eq!(rest_of(&asked, b, 4), None);
        assert_eq!(rest_of(&asked, NodePublicKey([9; 32]), 1), None);
        assert_eq!(rest_of(&[], a, 1), None);
    }
}
