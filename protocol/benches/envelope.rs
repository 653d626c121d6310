//! Criterion benchmarks of the envelope hot paths: sealing and signing for
//! 1/10/100 recipient nodes, GREEN under the epoch key at 6/50/300 nodes,
//! decode + verify, open (per-node and epoch), full validation, prechecking
//! a sync chunk of 256 with one batch verification against one by one, and a
//! raw ed25519 verify as the crypto baseline.

// Benchmarks are test code: a failed setup should abort loudly, so unwrap and
// expect are fine here (the workspace denies them in non-test code).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use breakwater_protocol::body::{Body, Bulletin, Severity};
use breakwater_protocol::fixture::Fixture;
use breakwater_protocol::{
    AuthorState, Digest, Draft, Envelope, EpochKeys, Kind, NodePublicKey, SealingPublicKey, Tlp,
    Verdict, open, open_epoch_key, open_with, precheck_batch_in, precheck_in, seal_to, seal_with,
    seal_with_in, validate,
};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

/// Validation time (unix ms), fixed so results do not depend on the clock.
const NOW: u64 = 1_790_000_000_000;
/// Size of the bulletin summary.
const BODY_BYTES: usize = 4096;
/// Recipients of the envelope the read-side benchmarks use.
const READ_RECIPIENTS: usize = 10;

/// An author-state view of an empty store.
#[derive(Debug, Default)]
struct EmptyState;

impl AuthorState for EmptyState {
    fn id_at(&self, _author: &NodePublicKey, _seq: u64) -> Option<Digest> {
        None
    }
    fn envelope(&self, _id: &Digest) -> Option<Vec<u8>> {
        None
    }
    fn author_of(&self, _id: &Digest) -> Option<NodePublicKey> {
        None
    }
    fn frontier(&self, _author: &NodePublicKey) -> u64 {
        0
    }
}

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(0x6272_6561_6b77_6174)
}

/// A seq-1 AMBER bulletin draft whose summary is 4 KiB of text.
fn draft_4k() -> Draft {
    let line = "Ransomware staging observed on berth 4 crane controllers; rotate creds.\n";
    let summary: String = line.chars().cycle().take(BODY_BYTES).collect();
    assert_eq!(summary.len(), BODY_BYTES);
    let mut bulletin = Bulletin::new("Ransomware at berth 4", Severity::High);
    bulletin.summary = summary;
    Draft {
        seq: 1,
        prev: Digest::ZERO,
        created_at: NOW,
        expires_at: NOW + 30 * 24 * 3600 * 1000,
        tlp: Tlp::Amber,
        kind: Kind::Bulletin,
        body: Body::Bulletin(bulletin),
    }
}

/// Sealing keys of the first `n` orgs' (single) nodes; org 0 is the author.
fn recipients(f: &Fixture, n: usize) -> Vec<SealingPublicKey> {
    f.orgs
        .iter()
        .take(n)
        .map(|o| o.keys[0].sealing_public())
        .collect()
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
}

/// The bench bulletin of `simulations bench`: a title, one indicator.
fn bench_bulletin() -> Draft {
    let mut bulletin = Bulletin::new("Ransomware at berth 4", Severity::High);
    bulletin
        .indicators
        .push(breakwater_protocol::Indicator::parse("ipv4:203.0.113.7").expect("indicator"));
    Draft {
        tlp: Tlp::Green,
        body: Body::Bulletin(bulletin),
        ..draft_4k()
    }
}

fn green_benches(c: &mut Criterion) {
    // Seal GREEN under the epoch key: the cost must not grow with the
    // consortium.
    let mut group = c.benchmark_group("seal_green");
    for n in [6usize, 50, 300] {
        let f = Fixture::new(n, 1).expect("fixture");
        let author = f.keys(0, 0).expect("author keys");
        let key = open_epoch_key(f.roster(), author).expect("epoch key");
        // A node computes its consortium id once (for a genesis roster it
        // is a hash of the whole roster).
        let consortium = f.roster().consortium_id();
        let draft = bench_bulletin();
        let mut rng = rng();
        let env = seal_with(author, f.roster(), Some(&key), draft.clone(), &[], &mut rng).unwrap();
        println!("GREEN envelope at {n} nodes: {} bytes", env.encoded_len());
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || draft.clone(),
                |d| {
                    seal_with_in(author, f.roster(), consortium, Some(&key), d, &[], &mut rng)
                        .unwrap()
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();

    // Decode + verify + open a GREEN envelope as a member holding the key.
    let f = Fixture::new(50, 1).expect("fixture");
    let author = f.keys(0, 0).expect("author keys");
    let reader = f.keys(7, 0).expect("reader keys");
    let key = open_epoch_key(f.roster(), author).expect("epoch key");
    let env = seal_with(
        author,
        f.roster(),
        Some(&key),
        bench_bulletin(),
        &[],
        &mut rng(),
    )
    .unwrap();
    let bytes = env.encode();
    let reader_key = open_epoch_key(f.roster(), reader).expect("reader key");
    let keys = EpochKeys::from([(reader_key.epoch, reader_key)]);
    c.bench_function("open_green", |b| {
        b.iter(|| {
            let env = Envelope::decode(black_box(&bytes)).unwrap();
            env.verify().unwrap();
            open_with(&env, reader, &keys).unwrap()
        });
    });
}

/// Store-free checks of a sync chunk of 256 GREEN envelopes by 4 authors:
/// one ed25519 batch verification against one verification each.
fn precheck_benches(c: &mut Criterion) {
    const ITEMS: usize = 256;
    let f = Fixture::new(6, 1).expect("fixture");
    let roster = f.roster();
    let consortium = roster.consortium_id();
    let mut rng = rng();
    let items: Vec<Vec<u8>> = (0..ITEMS)
        .map(|i| {
            let author = f.keys(i % 4, 0).expect("author keys");
            let key = open_epoch_key(roster, author).expect("epoch key");
            let seq = (i / 4) as u64 + 1;
            let mut draft = bench_bulletin();
            draft.seq = seq;
            draft.prev = if seq == 1 {
                Digest::ZERO
            } else {
                Digest([1; 32])
            };
            seal_with(author, roster, Some(&key), draft, &[], &mut rng)
                .unwrap()
                .encode()
        })
        .collect();
    assert!(
        precheck_batch_in(&items, roster, consortium)
            .iter()
            .all(Result::is_ok)
    );
    let mut group = c.benchmark_group("precheck_batch/256");
    group.throughput(Throughput::Elements(ITEMS as u64));
    group.bench_function("batch", |b| {
        b.iter(|| precheck_batch_in(black_box(&items), roster, consortium));
    });
    group.bench_function("one_by_one", |b| {
        b.iter(|| {
            items
                .iter()
                .map(|bytes| precheck_in(black_box(bytes), roster, consortium))
                .collect::<Vec<_>>()
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    green_benches(c);
    precheck_benches(c);
    let f = Fixture::new(100, 1).expect("fixture");
    let author = f.keys(0, 0).expect("author keys");
    let roster = f.roster();
    let draft = draft_4k();

    // 1. Seal + sign for N recipients.
    let mut group = c.benchmark_group("seal_sign/4KiB");
    for n in [1usize, 10, 100] {
        let to = recipients(&f, n);
        assert_eq!(to.len(), n);
        let mut rng = rng();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &to, |b, to| {
            b.iter_batched(
                || draft.clone(),
                |d| seal_to(author, roster, None, d, black_box(to), &mut rng).unwrap(),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();

    // The envelope the read-side benchmarks work on.
    let to = recipients(&f, READ_RECIPIENTS);
    let env = seal_to(author, roster, None, draft.clone(), &to, &mut rng()).unwrap();
    let bytes = env.encode();
    let reader = f.keys(READ_RECIPIENTS - 1, 0).expect("reader keys");
    assert!(matches!(
        validate(&bytes, NOW, f.roster(), &EmptyState),
        Verdict::Accept(_)
    ));
    assert!(matches!(open(&env, reader), Ok(Body::Bulletin(_))));
    println!(
        "read-side envelope: {} recipients, {} bytes encoded",
        READ_RECIPIENTS,
        bytes.len()
    );

    // 2. Decode + verify.
    c.bench_function("decode_verify", |b| {
        b.iter(|| {
            let env = Envelope::decode(black_box(&bytes)).unwrap();
            env.verify().unwrap();
            env
        });
    });

    // 3. Decode + verify + open as a recipient.
    c.bench_function("open", |b| {
        b.iter(|| {
            let env = Envelope::decode(black_box(&bytes)).unwrap();
            env.verify().unwrap();
            open(&env, reader).unwrap()
        });
    });

    // 4. Full validation against an empty store.
    c.bench_function("validate", |b| {
        b.iter(|| validate(black_box(&bytes), NOW, f.roster(), &EmptyState));
    });

    // 5. Raw ed25519 verify of a 32-byte message (the crypto baseline).
    let message = [7u8; 32];
    let signature = author.sign(&message);
    let public = author.node_public();
    c.bench_function("raw_ed25519_verify", |b| {
        b.iter(|| {
            public
                .verify(black_box(&message), black_box(&signature))
                .unwrap()
        });
    });
}

criterion_group! {
    name = envelope;
    config = config();
    targets = benches
}
criterion_main!(envelope);
