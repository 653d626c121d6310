//! Sync, both sides: serves peers' requests (Hello, ranges, rosters) from
//! the store, and drives this node's rounds with each peer — one chain of
//! request and answer per peer, asking ahead when a peer cuts a batch short.
//! Rounds with several peers run at once (on connect, on a gossip gap, on
//! the tick), so the ranges one round has asked for are its own: another
//! round asks only for what no round is fetching, and waits for the rest
//! until the fetching round ends. Requests and replies go to the event loop
//! as outcomes; received envelopes go to `ingest`, received rosters to
//! `roster`.

use std::collections::BTreeMap;
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
    /// The ranges of the request in flight. No other round asks for them
    /// while this one is alive and fetching (see [`Round::holds_claims`]).
    asked: Vec<SeqRange>,
    /// When this round first asked for ranges.
    fetching_since: Option<Instant>,
    /// Everything this round could ask for is being fetched by other rounds:
    /// it has nothing in flight and asks for what is still missing when one
    /// of them ends.
    waiting: bool,
}

impl Round {
    /// Whether other rounds leave this one's ranges to it: not while it is
    /// quiet for [`CLAIM_QUIET`] (an answer lost, a stalled peer), nor once
    /// it has fetched for [`CLAIM_MAX`] (a peer trickling batches must not
    /// hold ranges back from the rest for long): others then fetch too.
    fn holds_claims(&self) -> bool {
        self.active_at.elapsed() < CLAIM_QUIET
            && self
                .fetching_since
                .is_some_and(|since| since.elapsed() < CLAIM_MAX)
    }

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

/// How long a round's ranges keep other rounds from asking for them while
/// its peer does not answer. Short: a request to a peer behind a partition
/// that dropped no connection hangs until the request timeout (30 s), and
/// the ranges must be asked elsewhere long before that (a 10 s hold made
/// convergence after a heal take 10 s and more). A sync answer that takes
/// longer than this is rare; its ranges are then fetched twice.
const CLAIM_QUIET: Duration = Duration::from_secs(3);

/// How long a round's ranges keep other rounds from asking for them at all.
const CLAIM_MAX: Duration = Duration::from_secs(30);

/// Most seqs looked up in the store to leave out of a request the ones
/// already held above the frontier (from gossip); beyond that, ranges are
/// asked whole.
const MAX_PROBES: u64 = 16 * 1024;

/// `ranges` less every seq in `taken`, in order.
fn subtract(ranges: Vec<SeqRange>, taken: &[SeqRange]) -> Vec<SeqRange> {
    let mut by_author: BTreeMap<NodePublicKey, Vec<(u64, u64)>> = BTreeMap::new();
    for t in taken {
        by_author.entry(t.author).or_default().push((t.from, t.to));
    }
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let mut parts = vec![(range.from, range.to)];
        for &(t_from, t_to) in by_author.get(&range.author).into_iter().flatten() {
            parts = parts
                .into_iter()
                .flat_map(|(from, to)| {
                    let before = (from < t_from).then(|| (from, to.min(t_from - 1)));
                    let after = (t_to < to).then(|| (from.max(t_to + 1), to));
                    before.into_iter().chain(after)
                })
                .collect();
        }
        out.extend(parts.into_iter().map(|(from, to)| SeqRange {
            author: range.author,
            from,
            to,
        }));
    }
    out
}

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
    /// Our request to `peer` failed: drops the round, lets rounds waiting on
    /// its ranges ask for them elsewhere, and starts a new one if `retry`
    /// says so or one was asked for meanwhile.
    pub(super) fn sync_failed(&mut self, peer: PeerId, retry: bool) {
        let again = self.rounds.remove(&peer).is_some_and(|r| r.again);
        self.wake_waiting();
        if retry || again {
            self.start_sync(peer);
        }
    }

    /// Starts a round with `peer`, unless one is under way: one chain of
    /// requests per peer. A start asked for during a round runs when it
    /// ends; a round waiting on other rounds' ranges has nothing in flight
    /// and is replaced at once, since their frontier has moved on.
    pub(super) fn start_sync(&mut self, peer: PeerId) {
        if let Some(round) = self.rounds.get_mut(&peer)
            && !round.waiting
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
                fetching_since: None,
                waiting: false,
            },
        );
        self.traffic.sync_requests += 1;
        self.send(Outcome::SyncRequest {
            peer,
            request: request.encode(),
        });
    }

    /// Ends the round with `peer`: rounds waiting on its ranges ask for what
    /// is still missing, and the next round with `peer` starts if it was
    /// asked for.
    fn end_round(&mut self, peer: PeerId) {
        let again = self.rounds.remove(&peer).is_some_and(|r| r.again);
        self.wake_waiting();
        if again {
            self.start_sync(peer);
        }
    }

    /// Lets every round waiting on other rounds' ranges ask again for what
    /// is still missing and no round is fetching.
    fn wake_waiting(&mut self) {
        let waiting: Vec<PeerId> = self
            .rounds
            .iter()
            .filter(|(_, r)| r.waiting)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in waiting {
            // An earlier one may have ended it, or woken it already.
            let Some(round) = self.rounds.get_mut(&peer) else {
                continue;
            };
            if !round.waiting {
                continue;
            }
            round.waiting = false;
            // It took no batch while waiting: nothing to hold against it.
            round.last_digest = None;
            self.request_missing(peer);
        }
    }

    /// The ranges other rounds than `peer`'s have asked for and not yet
    /// received.
    fn taken_by_others(&self, peer: PeerId) -> Vec<SeqRange> {
        self.rounds
            .iter()
            .filter(|(p, r)| **p != peer && r.holds_claims())
            .flat_map(|(_, r)| r.asked.iter().copied())
            .collect()
    }

    /// `ranges` less the seqs already stored (above the frontier, from
    /// gossip), looking up at most [`MAX_PROBES`] seqs.
    fn lacking(&self, ranges: Vec<SeqRange>) -> Vec<SeqRange> {
        let mut probes = MAX_PROBES;
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            let author = range.author;
            // The first lacking seq of the hole being walked, and the first
            // seq not looked up yet.
            let mut start = None;
            let mut next = range.from;
            let mut done = false;
            while probes > 0 {
                probes -= 1;
                let seq = next;
                let held = matches!(self.store.id_at(&author.0, seq), Ok(Some(_)));
                match (held, start) {
                    (false, None) => start = Some(seq),
                    (true, Some(from)) => {
                        out.push(SeqRange {
                            author,
                            from,
                            to: seq - 1,
                        });
                        start = None;
                    }
                    _ => {}
                }
                if seq >= range.to {
                    done = true;
                    break;
                }
                next = seq + 1;
            }
            // Out of probes, the seqs not looked up are asked for whole.
            let from = if done { start } else { start.or(Some(next)) };
            if let Some(from) = from {
                out.push(SeqRange {
                    author,
                    from,
                    to: range.to,
                });
            }
        }
        out
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

    /// Asks `peer` for the ranges it has and we lack, while that makes
    /// progress — except what we hold already and what other rounds are
    /// fetching. When other rounds fetch all of it, the round waits for them.
    fn request_missing(&mut self, peer: PeerId) {
        let mine = self.frontier();
        let digest = mine.digest();
        let backed_off = self.backed_off(super::now_ms());
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
        // Nor those of authors over their storage quota until their window
        // ends (back-off): they would only be ignored again.
        let roster = &self.roster.roster;
        let missing: Vec<_> = mine
            .missing_from(theirs)
            .into_iter()
            .filter(|r| roster.org_of(&r.author).is_some() && !backed_off.contains(&r.author))
            .collect();
        if missing.is_empty() {
            self.end_round(peer);
            return;
        }
        let mut ask = subtract(self.lacking(missing), &self.taken_by_others(peer));
        let Some(round) = self.rounds.get_mut(&peer) else {
            return;
        };
        round.active_at = Instant::now();
        if ask.is_empty() {
            round.asked.clear();
            round.waiting = true;
            return;
        }
        ask.truncate(MAX_RANGES);
        round.asked = ask.clone();
        round.fetching_since.get_or_insert_with(Instant::now);
        self.traffic.sync_requests += 1;
        self.send(Outcome::SyncRequest {
            peer,
            request: SyncRequest::Ranges(ask).encode(),
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

    #[test]
    fn ranges_other_rounds_fetch_are_left_out() {
        // Nothing taken: unchanged.
        assert_eq!(subtract(vec![range(1, 1, 10)], &[]), vec![range(1, 1, 10)]);
        // Another author's ranges do not matter.
        assert_eq!(
            subtract(vec![range(1, 1, 10)], &[range(2, 1, 10)]),
            vec![range(1, 1, 10)]
        );
        // The middle taken: both ends left.
        assert_eq!(
            subtract(vec![range(1, 1, 10)], &[range(1, 4, 6)]),
            vec![range(1, 1, 3), range(1, 7, 10)]
        );
        // Overlapping either end, several takers.
        assert_eq!(
            subtract(
                vec![range(1, 5, 20), range(2, 1, 3)],
                &[range(1, 1, 6), range(1, 18, 30), range(1, 10, 10)]
            ),
            vec![range(1, 7, 9), range(1, 11, 17), range(2, 1, 3)]
        );
        // All of it taken.
        assert_eq!(subtract(vec![range(1, 3, 4)], &[range(1, 1, 9)]), vec![]);
        // Extremes do not overflow.
        assert_eq!(
            subtract(vec![range(1, 1, u64::MAX)], &[range(1, 1, u64::MAX)]),
            vec![]
        );
        assert_eq!(
            subtract(vec![range(1, 1, u64::MAX)], &[range(1, 2, u64::MAX)]),
            vec![range(1, 1, 1)]
        );
    }
}
