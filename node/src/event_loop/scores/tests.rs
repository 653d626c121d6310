//! Unit tests of the application-score ledgers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::*;

#[test]
fn a_few_ignored_messages_cost_nothing_a_flood_graylists() {
    let now = Instant::now();
    let mut scores = Scores::new(now);
    let honest = PeerId::random();
    for _ in 0..IGNORED_ALLOWANCE as usize {
        assert_eq!(scores.record(honest, Misbehaviour::Ignored), 0.0);
    }
    let flooder = PeerId::random();
    let mut last = 0.0;
    for _ in 0..10_000 {
        last = scores.record(flooder, Misbehaviour::Ignored);
    }
    assert!(
        last < -80.0,
        "a flood crosses the graylist threshold: {last}"
    );
    assert!(last >= -MAX_PENALTY);
    // After a few minutes without more, the flooder's count has decayed.
    let later = scores.decay(now + Duration::from_secs(180));
    let flooder_score = later.iter().find(|(p, _)| *p == flooder).map(|(_, s)| *s);
    assert_eq!(flooder_score, Some(0.0));
}

#[test]
fn an_equivocating_author_is_penalised_and_forgiven_over_time() {
    let now = Instant::now();
    let mut scores = Scores::new(now);
    let author = PeerId::random();
    assert!(scores.record(author, Misbehaviour::Equivocation) <= -40.0);
    assert!(scores.record(author, Misbehaviour::Equivocation) <= -80.0);
    let after = scores.decay(now + Duration::from_secs(300));
    assert!(after[0].1 < 0.0 && after[0].1 > -80.0, "{after:?}");
    scores.decay(now + Duration::from_secs(1200));
    assert_eq!(scores.score(&author), 0.0);
    assert!(scores.decay(now + Duration::from_secs(1300)).is_empty());
}
