//! Batch prechecks: one ed25519 batch verification for many envelopes gives
//! exactly the verdicts of checking each on its own, and names the bad one.

use breakwater_protocol::fixture::{Fixture, bulletin_draft};
use breakwater_protocol::*;

use super::{NOW, rng};

/// `n` valid envelopes: a feed of org 0 and one of org 1, interleaved.
fn valid(f: &Fixture, n: u64) -> Vec<Envelope> {
    let mut out = Vec::new();
    let mut prev = [Digest::ZERO, Digest::ZERO];
    for seq in 1..=n.div_ceil(2) {
        for (org, last) in prev.iter_mut().enumerate() {
            let keys = f.keys(org, 0).unwrap();
            let draft = bulletin_draft(seq, *last, Tlp::Clear, "Phishing wave", NOW);
            let to: Vec<OrgId> = Vec::new();
            let envelope = seal(keys, f.roster(), draft, &to, &mut rng()).unwrap();
            *last = envelope.id();
            out.push(envelope);
        }
    }
    out.truncate(n as usize);
    out
}

/// The envelope re-signed by another node's key: still names its author,
/// so its signature is well-formed but wrong.
fn forged(f: &Fixture, envelope: &Envelope) -> Envelope {
    let other = f.keys(2, 0).unwrap();
    Envelope::sign(envelope.header.clone(), envelope.payload.clone(), other)
}

fn one_by_one(items: &[Vec<u8>], roster: &Roster) -> Vec<Result<Prechecked, Rejection>> {
    let consortium = roster.consortium_id();
    items
        .iter()
        .map(|bytes| precheck_in(bytes, roster, consortium))
        .collect()
}

#[test]
fn a_valid_batch_passes_as_one_by_one() {
    let f = Fixture::new(3, 1).unwrap();
    let items: Vec<Vec<u8>> = valid(&f, 40).iter().map(Envelope::encode).collect();
    let batch = precheck_batch(&items, f.roster());
    assert!(batch.iter().all(Result::is_ok));
    assert_eq!(batch, one_by_one(&items, f.roster()));
}

#[test]
fn a_forged_signature_in_the_middle_of_a_batch_is_named() {
    let f = Fixture::new(3, 1).unwrap();
    let envelopes = valid(&f, 31);
    let mut items: Vec<Vec<u8>> = envelopes.iter().map(Envelope::encode).collect();
    // A well-formed signature by the wrong key, in the middle.
    items[15] = forged(&f, &envelopes[15]).encode();
    // An identity `R` (small order): strict verification rejects it outright.
    let mut small_order = envelopes[20].clone();
    small_order.signature.0[..32].copy_from_slice(&{
        let mut r = [0u8; 32];
        r[0] = 1;
        r
    });
    items[20] = small_order.encode();
    // Not an envelope at all, and a repeat of a valid one.
    items[3] = b"not an envelope".to_vec();
    items.push(items[0].clone());

    let batch = precheck_batch(&items, f.roster());
    assert_eq!(batch, one_by_one(&items, f.roster()));
    let author = envelopes[15].header.author;
    assert_eq!(batch[15], Err(Rejection::BadSignature(author)));
    assert!(matches!(batch[20], Err(Rejection::BadSignature(_))));
    assert!(matches!(batch[3], Err(Rejection::Decode(_))));
    let bad = [3, 15, 20];
    for (index, verdict) in batch.iter().enumerate() {
        assert_eq!(verdict.is_ok(), !bad.contains(&index), "item {index}");
    }
}

#[test]
fn batches_of_zero_one_and_all_forged_match_one_by_one() {
    let f = Fixture::new(3, 1).unwrap();
    let envelopes = valid(&f, 4);
    let empty: Vec<Vec<u8>> = Vec::new();
    assert!(precheck_batch(&empty, f.roster()).is_empty());
    let one = vec![forged(&f, &envelopes[0]).encode()];
    assert_eq!(
        precheck_batch(&one, f.roster()),
        one_by_one(&one, f.roster())
    );
    let all: Vec<Vec<u8>> = envelopes.iter().map(|e| forged(&f, e).encode()).collect();
    let batch = precheck_batch(&all, f.roster());
    assert!(
        batch
            .iter()
            .all(|v| matches!(v, Err(Rejection::BadSignature(_))))
    );
    assert_eq!(batch, one_by_one(&all, f.roster()));
}
