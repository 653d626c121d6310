//! Sync, both sides: serves peers' requests (Hello, ranges, rosters) from
//! the store, and drives this node's rounds with each peer — one chain of
//! request and answer per peer, asking ahead when a peer cuts a batch short.
//! Rounds with several peers run at once (on connect, on a gossip gap, on
//! the tick), so the ranges one round has asked for are its own: another
//! round asks only for what no round is fetching, and waits for the rest
//! until the fetching round ends. Requests and replies go to the event loop
//! as outcomes; received envelopes go to `ingest`, received rosters to
//! `roster`.
//!
//! Catch-up cannot be starved by one feed (H1): a batch is shared fairly
//! between the feeds asked for, progress is judged per feed, a feed a
//! peer's batch does not move forward is dropped from the round and backed
//! off for that peer, and a `prev` conflict asks the peer for the
//! neighbouring seq so that a fork becomes equivocation evidence.

use std::collections::{BTreeMap, HashMap, HashSet};
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
use crate::store::StoreError;

/// A feed a peer's batches did not move forward: not asked of that peer
/// again until `until`, unless our frontier of it has moved meanwhile.
#[derive(Debug)]
pub(super) struct Stall {
    /// Our frontier of the feed when it stalled.
    frontier: u64,
    /// End of the back-off.
    until: Instant,
    /// This back-off's length; doubled when it stalls again at the same
    /// frontier.
    step: Duration,
}

/// A peer's serving budget (L2): a bucket of bytes that refills at
/// [`SERVE_RATE`] up to [`SERVE_BURST`]. A request that finds it empty is
/// refused; a served answer is charged whole, so one answer may overdraw it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    bytes: f64,
    at: Instant,
}

/// Bytes per second a peer may have served, sustained.
pub(super) const SERVE_RATE: f64 = 8.0 * 1024.0 * 1024.0;

/// Bytes a peer may have served at once (a catch-up of that much runs at
/// full speed).
pub(super) const SERVE_BURST: f64 = 64.0 * 1024.0 * 1024.0;

impl Budget {
    pub(super) fn new(now: Instant) -> Budget {
        Budget {
            bytes: SERVE_BURST,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.bytes = (self.bytes + elapsed * SERVE_RATE).min(SERVE_BURST);
        self.at = now;
    }

    /// Whether a request may be served at `now`.
    pub(super) fn allows(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.bytes > 0.0
    }

    /// Charges an answer of `bytes`.
    pub(super) fn charge(&mut self, bytes: usize, now: Instant) {
        self.refill(now);
        self.bytes -= bytes as f64;
    }
}

/// First back-off of a stalled feed.
const STALL_FIRST: Duration = Duration::from_secs(30);

/// Longest back-off of a stalled feed.
const STALL_MAX: Duration = Duration::from_secs(600);

/// Most conflict probes queued for one peer.
const MAX_PROBES_PER_PEER: usize = 32;

/// Per-peer state of an outgoing sync round: a single chain of request and
/// answer.
#[derive(Debug)]
pub(super) struct Round {
    /// Their frontier, once they answered the Hello.
    theirs: Option<Frontier>,
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
    /// The peer's roster chain parts from ours: the `after` of the
    /// `Rosters` request in flight that looks for the version where it does.
    fork_probe: Option<u64>,
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

/// What is left of `asked` once a batch cut short served `served` (author
/// and seq of each item): the feeds it served nothing of come first, whole
/// (the batch ran out before them, so they go first next time), then what
/// follows the last served seq of each feed it served in part. Items
/// outside every asked range are left out of the reckoning. `None` when
/// nothing is left.
fn rest_of(asked: &[SeqRange], served: &[(NodePublicKey, u64)]) -> Option<Vec<SeqRange>> {
    let mut last: HashMap<NodePublicKey, u64> = HashMap::new();
    for &(author, seq) in served {
        if asked
            .iter()
            .any(|r| r.author == author && r.from <= seq && seq <= r.to)
        {
            let at = last.entry(author).or_insert(seq);
            *at = (*at).max(seq);
        }
    }
    let mut unserved = Vec::new();
    let mut partial = Vec::new();
    for range in asked {
        match last.get(&range.author) {
            None => unserved.push(*range),
            Some(&l) if range.to <= l => {}
            Some(&l) if range.from > l => partial.push(*range),
            Some(&l) => partial.push(SeqRange {
                from: l + 1,
                ..*range
            }),
        }
    }
    unserved.extend(partial);
    (!unserved.is_empty()).then_some(unserved)
}

/// One feed being served: its ranges in the order asked, where serving
/// stands, and what it has taken.
struct Serving {
    ranges: Vec<SeqRange>,
    /// Index of the range being served.
    next: usize,
    /// Next seq to serve in that range.
    from: u64,
    items: Vec<Vec<u8>>,
}

impl Serving {
    fn done(&self) -> bool {
        self.next >= self.ranges.len()
    }
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
            digest: self.sync_frontier().digest(),
            roster_version: self.roster.roster.version,
            roster_hash: self.roster_hash,
        };
        self.rounds.insert(
            peer,
            Round {
                theirs: None,
                active_at: Instant::now(),
                again: false,
                asked: Vec::new(),
                fetching_since: None,
                waiting: false,
                fork_probe: None,
            },
        );
        self.metrics.sync_round();
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
        let round = self.rounds.remove(&peer);
        if round.as_ref().is_some_and(|r| r.theirs.is_some()) {
            // The peer told us its frontier and we fetched what we lacked of
            // it, our own feed included.
            self.own_feed_synced();
        }
        let again = round.is_some_and(|r| r.again);
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

    /// Answers `peer`'s sync request within its serving budget (L2), and
    /// returns the encoded answer.
    pub(super) fn serve_sync_for(&mut self, peer: PeerId, request: &[u8]) -> Vec<u8> {
        let now = Instant::now();
        let budget = self.budgets.entry(peer).or_insert_with(|| Budget::new(now));
        if !budget.allows(now) {
            debug!(%peer, "sync request refused: serving budget spent");
            return SyncResponse::Refused("serving budget spent; retry later".into()).encode();
        }
        let response = self.serve_sync(request).encode();
        if let Some(budget) = self.budgets.get_mut(&peer) {
            budget.charge(response.len(), now);
        }
        response
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
                roster_hash,
            } => {
                let frontier = self.sync_frontier();
                let ours = self.roster.roster.version;
                let hash = self.roster_hash;
                if digest == frontier.digest() && roster_version == ours && roster_hash == hash {
                    SyncResponse::InSync
                } else {
                    SyncResponse::Frontier {
                        frontier,
                        roster_version: ours,
                        roster_hash: hash,
                    }
                }
            }
            // A node built before fork detection: answered as it expects.
            SyncRequest::HelloV1 {
                digest,
                roster_version,
            } => {
                let frontier = self.sync_frontier();
                let ours = self.roster.roster.version;
                if digest == frontier.digest() && roster_version == ours {
                    SyncResponse::InSync
                } else {
                    SyncResponse::FrontierV1 {
                        frontier,
                        roster_version: ours,
                    }
                }
            }
            SyncRequest::Ranges(ranges) => match self.serve_ranges(ranges) {
                Ok(response) => response,
                Err(e) => SyncResponse::Refused(format!("store: {e}")),
            },
            SyncRequest::Rosters { after } => {
                // Oldest first, bounded like envelope batches; the requester
                // asks again for the rest. A range scan (L2): a request
                // reads only the versions it returns.
                match self
                    .store
                    .rosters_after(after, MAX_ROSTERS, MAX_BATCH_BYTES)
                {
                    Ok(rosters) => {
                        SyncResponse::Rosters(rosters.into_iter().map(|(_, b)| b).collect())
                    }
                    Err(e) => SyncResponse::Refused(format!("store: {e}")),
                }
            }
        }
    }

    /// Serves `ranges` fairly between feeds: the ranges of each author
    /// together get an equal share of [`MAX_BATCH_BYTES`] and
    /// [`MAX_BATCH_ITEMS`] (at least one envelope each while the batch has
    /// room), then what the feeds that needed less left over goes to the
    /// others in order. Items come grouped by feed, in the order the feeds
    /// were first asked for, each feed's in seq order; `more` says some
    /// feed was cut short. One huge feed thus never starves the feeds
    /// after it.
    fn serve_ranges(&self, ranges: Vec<SeqRange>) -> Result<SyncResponse, StoreError> {
        let mut feeds: Vec<Serving> = Vec::new();
        for range in ranges {
            match feeds
                .iter_mut()
                .find(|f| f.ranges[0].author == range.author)
            {
                Some(feed) => feed.ranges.push(range),
                None => feeds.push(Serving {
                    from: range.from,
                    ranges: vec![range],
                    next: 0,
                    items: Vec::new(),
                }),
            }
        }
        let n = feeds.len().max(1);
        let (share, item_share) = ((MAX_BATCH_BYTES / n).max(1), (MAX_BATCH_ITEMS / n).max(1));
        let (mut bytes, mut count) = (0usize, 0usize);
        for pass in 0..2 {
            for feed in feeds.iter_mut() {
                if feed.done() || bytes >= MAX_BATCH_BYTES || count >= MAX_BATCH_ITEMS {
                    continue;
                }
                let (room, room_items) = if pass == 0 {
                    (share, item_share)
                } else {
                    (usize::MAX, usize::MAX)
                };
                let room = room.min(MAX_BATCH_BYTES - bytes);
                let room_items = room_items.min(MAX_BATCH_ITEMS - count);
                let (b, c) = self.fill(feed, room, room_items)?;
                bytes += b;
                count += c;
            }
        }
        let more = feeds.iter().any(|f| !f.done());
        let items = feeds.into_iter().flat_map(|f| f.items).collect();
        Ok(SyncResponse::Envelopes { items, more })
    }

    /// Serves `feed` onward within `room` bytes and `room_items` items (at
    /// least one envelope if it has any left); returns what it took.
    fn fill(
        &self,
        feed: &mut Serving,
        room: usize,
        room_items: usize,
    ) -> Result<(usize, usize), StoreError> {
        let (mut bytes, mut count) = (0usize, 0usize);
        while let Some(range) = feed.ranges.get(feed.next).copied() {
            if count >= room_items || (count > 0 && bytes >= room) {
                break;
            }
            let (found, cut) = self.store.range(
                &range.author.0,
                feed.from,
                range.to,
                room.saturating_sub(bytes).max(1),
                room_items - count,
            )?;
            bytes += found.iter().map(Vec::len).sum::<usize>();
            count += found.len();
            let last_seq = found
                .last()
                .and_then(|b| Envelope::decode(b).ok())
                .map(|e| e.header.seq);
            feed.items.extend(found);
            match last_seq {
                Some(seq) if cut && seq < range.to => feed.from = seq + 1,
                _ => {
                    feed.next += 1;
                    if let Some(next) = feed.ranges.get(feed.next) {
                        feed.from = next.from;
                    }
                }
            }
            if cut {
                break;
            }
        }
        Ok((bytes, count))
    }

    /// Whether `author`'s feed is backed off with `peer` at our frontier
    /// `frontier` of it.
    fn is_stalled(&self, peer: PeerId, author: NodePublicKey, frontier: u64) -> bool {
        self.stalled
            .get(&(peer, author))
            .is_some_and(|s| s.frontier == frontier && Instant::now() < s.until)
    }

    /// Backs `author`'s feed off with `peer`: its batches did not move our
    /// frontier `frontier` of it.
    fn stall(&mut self, peer: PeerId, author: NodePublicKey, frontier: u64) {
        let step = match self.stalled.get(&(peer, author)) {
            Some(s) if s.frontier == frontier => (s.step * 2).min(STALL_MAX),
            _ => STALL_FIRST,
        };
        debug!(%peer, %author, frontier, "feed stalled, backed off for {step:?}");
        self.stalled.insert(
            (peer, author),
            Stall {
                frontier,
                until: Instant::now() + step,
                step,
            },
        );
    }

    /// Queues a probe: `author`'s envelope at `seq`, to ask `peer` for
    /// because what it sent conflicts with a stored neighbour.
    pub(super) fn probe(&mut self, peer: PeerId, author: NodePublicKey, seq: u64) {
        if seq == 0 || self.forks.contains_key(&author) {
            return;
        }
        let range = SeqRange {
            author,
            from: seq,
            to: seq,
        };
        let probes = self.probes.entry(peer).or_default();
        if probes.len() < MAX_PROBES_PER_PEER && !probes.contains(&range) {
            probes.push(range);
        }
    }

    /// Sends the probes queued for `peer` within its round, if there are
    /// any; returns whether it did.
    fn send_probes(&mut self, peer: PeerId) -> bool {
        let Some(round) = self.rounds.get_mut(&peer) else {
            return false;
        };
        let Some(probes) = self.probes.remove(&peer).filter(|p| !p.is_empty()) else {
            return false;
        };
        round.theirs.get_or_insert_with(Frontier::default);
        round.asked = probes.clone();
        round.active_at = Instant::now();
        self.traffic.sync_requests += 1;
        self.send(Outcome::SyncRequest {
            peer,
            request: SyncRequest::Ranges(probes).encode(),
        });
        true
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
            SyncResponse::InSync | SyncResponse::Refused(_) => {
                if matches!(response, SyncResponse::InSync) {
                    self.traffic.sync_in_sync += 1;
                    self.own_feed_synced();
                }
                if !self.send_probes(peer) {
                    self.end_round(peer)
                }
            }
            SyncResponse::Frontier {
                frontier,
                roster_version,
                roster_hash,
            } => self.on_frontier(peer, frontier, roster_version, Some(roster_hash)),
            SyncResponse::FrontierV1 {
                frontier,
                roster_version,
            } => self.on_frontier(peer, frontier, roster_version, None),
            SyncResponse::Rosters(rosters) => {
                let probe = self.rounds.get_mut(&peer).and_then(|r| r.fork_probe.take());
                let asked_again = match probe {
                    Some(after) => self.probe_fork(peer, after, &rosters),
                    None => self.apply_synced_rosters(peer, &rosters),
                };
                if !asked_again {
                    self.request_missing(peer);
                }
            }
            SyncResponse::Envelopes { items, more } => {
                let asked = self
                    .rounds
                    .get(&peer)
                    .map(|r| r.asked.clone())
                    .unwrap_or_default();
                let served: Vec<(NodePublicKey, u64)> = items
                    .iter()
                    .filter_map(|bytes| Envelope::decode(bytes).ok())
                    .map(|e| (e.header.author, e.header.seq))
                    .collect();
                // The rest is asked for before this batch is checked, so the
                // peer serves it while this node works.
                let asked_ahead = more && self.ask_for_the_rest(peer, &asked, &served);
                let before: HashMap<NodePublicKey, u64> = asked
                    .iter()
                    .map(|r| (r.author, self.store.frontier_of(&r.author.0).unwrap_or(0)))
                    .collect();
                self.ingest(items, Origin::Sync { peer });
                let progressed = self.judge(peer, &before, &served, asked_ahead);
                if !asked_ahead {
                    self.request_missing(peer);
                } else if !progressed {
                    // Nothing moved: the request sent ahead then finds no
                    // round and stops.
                    self.end_round(peer);
                }
            }
        }
    }

    /// The peer's state: looks into a roster fork when its roster of a
    /// version we hold is not ours (`hash`, absent from nodes built before
    /// fork detection), fetches newer roster versions, then asks for the
    /// envelopes we lack.
    fn on_frontier(
        &mut self,
        peer: PeerId,
        frontier: Frontier,
        roster_version: u64,
        hash: Option<Digest>,
    ) {
        let Some(round) = self.rounds.get_mut(&peer) else {
            // The round was replaced or failed meanwhile.
            return;
        };
        round.theirs = Some(frontier);
        let ours = self.roster.roster.version;
        if self.fork.is_some() {
            // No roster update is applied until the fork is resolved.
            self.request_missing(peer);
            return;
        }
        if let Some(hash) = hash
            && roster_version >= 2
            && roster_version <= ours
            && self
                .our_roster_hash(roster_version)
                .is_some_and(|mine| mine != hash)
        {
            // Same version, another roster: fetch theirs to see.
            self.ask_rosters(peer, roster_version - 1, true);
        } else if roster_version > ours {
            self.ask_rosters(peer, ours, false);
        } else {
            self.request_missing(peer);
        }
    }

    /// Sends `Rosters{after}` to `peer`; `probe` marks it as looking for
    /// where the peer's roster chain parts from ours.
    fn ask_rosters(&mut self, peer: PeerId, after: u64, probe: bool) {
        if let Some(round) = self.rounds.get_mut(&peer) {
            round.fork_probe = probe.then_some(after);
            round.active_at = Instant::now();
        }
        self.traffic.sync_requests += 1;
        self.send(Outcome::SyncRequest {
            peer,
            request: SyncRequest::Rosters { after }.encode(),
        });
    }

    /// Applies newer roster versions from `peer` in order, stopping at the
    /// first failure. A successor of another version than ours (BadPrev)
    /// means the chains parted: looks for where. Returns whether it asked
    /// `peer` again.
    fn apply_synced_rosters(&mut self, peer: PeerId, rosters: &[Vec<u8>]) -> bool {
        for bytes in rosters {
            let roster = match SignedRoster::decode(bytes) {
                Ok(roster) => roster,
                Err(e) => {
                    debug!(%peer, "roster from sync undecodable: {e}");
                    return false;
                }
            };
            let current = &self.roster.roster;
            let parted = self.fork.is_none()
                && roster.roster.consortium_id() == self.consortium
                && roster.roster.version == current.version + 1
                && roster.roster.prev != self.roster_hash
                && current.version >= 2;
            if parted {
                let after = current.version - 1;
                self.ask_rosters(peer, after, true);
                return true;
            }
            if let Err(e) = self.apply_roster(roster) {
                debug!(%peer, "roster from sync refused: {e}");
                return false;
            }
        }
        false
    }

    /// Looks for a roster fork in versions `peer` sent after `after`
    /// (oldest first): the first that differs from ours is checked against
    /// our version before it. When their chain parted from ours before it,
    /// asks for older versions. Returns whether it asked `peer` again.
    fn probe_fork(&mut self, peer: PeerId, after: u64, rosters: &[Vec<u8>]) -> bool {
        for bytes in rosters {
            let Ok(roster) = SignedRoster::decode(bytes) else {
                return false;
            };
            if roster.roster.consortium_id() != self.consortium
                || roster.roster.version > self.roster.roster.version
            {
                return false;
            }
            match self.check_fork(&roster, Some(peer)) {
                super::roster::ForkCheck::Same => continue,
                super::roster::ForkCheck::Deeper if after > 0 => {
                    // Their previous version differs too: look further back.
                    let earlier = after.saturating_sub(MAX_ROSTERS as u64 / 2);
                    self.ask_rosters(peer, earlier, true);
                    return true;
                }
                _ => return false,
            }
        }
        false
    }

    /// Judges a batch from `peer` feed by feed, once it is ingested:
    /// `before` holds our frontier of each feed asked for, `served` the
    /// items' authors and seqs, `cut` whether the peer cut the batch short
    /// (a feed it served nothing of may then come in the rest). A feed
    /// whose items did not move our frontier forward (a fork, junk, replays)
    /// or that the peer served nothing of when it could have is backed off
    /// with this peer, so the round goes on with the others. Returns
    /// whether any feed moved forward.
    fn judge(
        &mut self,
        peer: PeerId,
        before: &HashMap<NodePublicKey, u64>,
        served: &[(NodePublicKey, u64)],
        cut: bool,
    ) -> bool {
        let served: HashSet<NodePublicKey> = served.iter().map(|(a, _)| *a).collect();
        let mut progressed = false;
        for (author, &was) in before {
            let now = self.store.frontier_of(&author.0).unwrap_or(0);
            if now > was {
                progressed = true;
            } else if served.contains(author) || !cut {
                self.stall(peer, *author, now);
            }
        }
        progressed
    }

    /// After a batch that `peer` cut short, asks at once for what it did not
    /// send of the ranges last asked (see [`rest_of`]). Returns whether it
    /// asked.
    fn ask_for_the_rest(
        &mut self,
        peer: PeerId,
        asked: &[SeqRange],
        served: &[(NodePublicKey, u64)],
    ) -> bool {
        let Some(round) = self.rounds.get_mut(&peer) else {
            return false;
        };
        let Some(rest) = rest_of(asked, served) else {
            return false;
        };
        if rest.len() == asked.len() && rest.iter().zip(asked).all(|(a, b)| a == b) {
            // Nothing asked for came: not a batch cut short.
            return false;
        }
        round.asked = rest.clone();
        round.active_at = Instant::now();
        self.traffic.sync_requests += 1;
        self.send(Outcome::SyncRequest {
            peer,
            request: SyncRequest::Ranges(rest).encode(),
        });
        true
    }

    /// Asks `peer` for the ranges it has and we lack, feed by feed while
    /// that makes progress, plus any conflict probes queued for it — except
    /// what we hold already, what other rounds are fetching, feeds backed
    /// off with this peer and feeds held at a fork. When other rounds fetch
    /// all of it, the round waits for them.
    fn request_missing(&mut self, peer: PeerId) {
        let mine = self.frontier();
        let backed_off = self.backed_off(super::now_ms());
        let Some(round) = self.rounds.get(&peer) else {
            return;
        };
        let Some(theirs) = &round.theirs else {
            return;
        };
        // Feeds of authors we would reject (revoked, unknown) are never
        // requested: they could never advance. Feeds held at a fork neither.
        // Nor those of authors over their storage quota until their window
        // ends (back-off): they would only be ignored again.
        let roster = &self.roster.roster;
        let missing: Vec<_> = mine
            .missing_from(theirs)
            .into_iter()
            .filter(|r| {
                roster.org_of(&r.author).is_some()
                    && !self.forks.contains_key(&r.author)
                    && !backed_off.contains(&r.author)
                    && !self.is_stalled(peer, r.author, mine.get(&r.author))
            })
            .collect();
        let probes = self.probes.remove(&peer).unwrap_or_default();
        if missing.is_empty() && probes.is_empty() {
            self.end_round(peer);
            return;
        }
        let mut ask = probes;
        if !missing.is_empty() {
            ask.extend(subtract(self.lacking(missing), &self.taken_by_others(peer)));
        }
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
    fn the_rest_of_a_cut_batch_puts_unserved_feeds_first() {
        let asked = [range(1, 1, 100), range(2, 5, 9), range(3, 1, 1)];
        let key = NodePublicKey;
        // Cut inside the first feed, nothing of the others: they come first.
        assert_eq!(
            rest_of(&asked, &[(key([1; 32]), 1), (key([1; 32]), 40)]),
            Some(vec![range(2, 5, 9), range(3, 1, 1), range(1, 41, 100)])
        );
        // A feed served to its end is done; a feed served in part goes on.
        assert_eq!(
            rest_of(&asked, &[(key([1; 32]), 100), (key([2; 32]), 7)]),
            Some(vec![range(3, 1, 1), range(2, 8, 9)])
        );
        // A feed's later ranges stay whole after a cut in an earlier one.
        let split = [range(1, 1, 10), range(1, 20, 30)];
        assert_eq!(
            rest_of(&split, &[(key([1; 32]), 4)]),
            Some(vec![range(1, 5, 10), range(1, 20, 30)])
        );
        // Nothing left.
        assert_eq!(
            rest_of(
                &asked,
                &[(key([1; 32]), 100), (key([2; 32]), 9), (key([3; 32]), 1)]
            ),
            None
        );
        // Items outside every asked range (a confused or hostile peer)
        // count for nothing.
        assert_eq!(
            rest_of(&asked, &[(key([1; 32]), 101), (key([9; 32]), 1)]),
            Some(asked.to_vec())
        );
        assert_eq!(rest_of(&[], &[(key([1; 32]), 1)]), None);
    }

    #[test]
    fn l2_a_peer_spending_its_serving_budget_is_refused_until_it_refills() {
        let start = Instant::now();
        let mut budget = Budget::new(start);
        assert!(budget.allows(start));
        // A burst's worth of answers, one 2 MiB batch at a time.
        let batch = 2 * 1024 * 1024;
        let mut served = 0usize;
        while budget.allows(start) {
            budget.charge(batch, start);
            served += batch;
        }
        assert_eq!(served as f64, SERVE_BURST);
        assert!(!budget.allows(start));
        // Refilled at the sustained rate (8 MiB/s); an answer may overdraw.
        let t = start + Duration::from_millis(100);
        assert!(budget.allows(t));
        budget.charge(10 * 1024 * 1024, t);
        assert!(!budget.allows(t + Duration::from_secs(1)));
        assert!(budget.allows(t + Duration::from_millis(1500)));
        // Never above the burst, however long it waits.
        let mut idle = Budget::new(start);
        idle.charge(1, start);
        assert!(idle.allows(start + Duration::from_secs(3600)));
        idle.charge(SERVE_BURST as usize, start + Duration::from_secs(3600));
        assert!(!idle.allows(start + Duration::from_secs(3600)));
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
