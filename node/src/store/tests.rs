//! Tests of the sled store against real database files in temporary
//! directories.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use tempfile::TempDir;

use super::*;

const ALICE: AuthorKey = [0xa1; 32];
const BOB: AuthorKey = [0xb0; 32];

/// A distinct fake envelope id for `(author, seq, variant)`.
fn id_of(author: &AuthorKey, seq: u64, variant: u8) -> Id {
    let mut id = [variant; 32];
    id[..8].copy_from_slice(&author[..8]);
    id[8..16].copy_from_slice(&seq.to_be_bytes());
    id
}

/// Stores a fake envelope of `len` bytes for `(author, seq)`.
fn insert(store: &Store, author: &AuthorKey, seq: u64, len: usize) -> Result<Inserted, StoreError> {
    let id = id_of(author, seq, 0);
    // Byte 0 names the author, byte 1 the seq (mod 251), so tests can check
    // what a range returned.
    let mut bytes = vec![u8::try_from(seq % 251).unwrap(); len];
    bytes[0] = author[0];
    store.insert_envelope(&id, author, seq, &bytes)
}

fn open(dir: &Path) -> Store {
    Store::open(dir).expect("open store")
}

#[test]
fn reserved_seqs_survive_reopen_and_never_repeat() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let first = {
        let store = open(dir.path());
        assert_eq!(store.own_seq()?, 0);
        let first = store.reserve_seq()?;
        assert_eq!(first, 1);
        assert_eq!(store.reserve_seq()?, 2);
        assert_eq!(store.own_seq()?, 2);
        // Dropped without any explicit flush: reserve_seq flushed by itself.
        first
    };
    let store = open(dir.path());
    assert_eq!(store.own_seq()?, 2);
    let next = store.reserve_seq()?;
    assert!(next > first + 1, "seq {next} reused after reopen");
    assert_eq!(next, 3);
    Ok(())
}

#[test]
fn frontier_advances_contiguously_and_jumps_when_a_gap_fills() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    assert_eq!(store.frontier_of(&ALICE)?, 0);

    assert_eq!(
        insert(&store, &ALICE, 1, 10)?,
        Inserted {
            new: true,
            frontier: 1
        }
    );
    assert_eq!(
        insert(&store, &ALICE, 2, 10)?,
        Inserted {
            new: true,
            frontier: 2
        }
    );
    // 3 is missing: 4, 5 and 6 are stored but the frontier stays at 2.
    for seq in 4..=6 {
        assert_eq!(
            insert(&store, &ALICE, seq, 10)?,
            Inserted {
                new: true,
                frontier: 2
            }
        );
    }
    assert_eq!(store.frontier_of(&ALICE)?, 2);
    // Bob's first envelope is seq 2: he has nothing contiguous yet.
    assert_eq!(
        insert(&store, &BOB, 2, 10)?,
        Inserted {
            new: true,
            frontier: 0
        }
    );
    assert_eq!(store.frontier()?, BTreeMap::from([(ALICE, 2)]));

    // Filling 3 jumps across 4, 5 and 6.
    assert_eq!(
        insert(&store, &ALICE, 3, 10)?,
        Inserted {
            new: true,
            frontier: 6
        }
    );
    assert_eq!(
        insert(&store, &BOB, 1, 10)?,
        Inserted {
            new: true,
            frontier: 2
        }
    );
    assert_eq!(store.frontier()?, BTreeMap::from([(ALICE, 6), (BOB, 2)]));
    assert_eq!(store.id_at(&ALICE, 5)?, Some(id_of(&ALICE, 5, 0)));
    assert_eq!(store.id_at(&ALICE, 7)?, None);
    Ok(())
}

#[test]
fn same_envelope_twice_is_idempotent() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    assert!(insert(&store, &ALICE, 1, 10)?.new);
    assert_eq!(
        insert(&store, &ALICE, 1, 10)?,
        Inserted {
            new: false,
            frontier: 1
        }
    );
    // A duplicate of an envelope beyond a gap reports the unchanged frontier.
    assert!(insert(&store, &ALICE, 3, 10)?.new);
    assert_eq!(
        insert(&store, &ALICE, 3, 10)?,
        Inserted {
            new: false,
            frontier: 1
        }
    );
    assert_eq!(store.counts().envelopes, 2);
    Ok(())
}

#[test]
fn equivocation_is_reported_and_not_overwritten() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    let original = id_of(&ALICE, 1, 0);
    let rival = id_of(&ALICE, 1, 9);
    store.insert_envelope(&original, &ALICE, 1, b"original")?;

    match store.insert_envelope(&rival, &ALICE, 1, b"rival") {
        Err(StoreError::Equivocation(Equivocation {
            author,
            seq,
            existing,
        })) => {
            assert_eq!((author, seq, existing), (ALICE, 1, original));
        }
        other => panic!("expected equivocation, got {other:?}"),
    }
    assert_eq!(store.id_at(&ALICE, 1)?, Some(original));
    assert_eq!(
        store.envelope(&original)?.as_deref(),
        Some(&b"original"[..])
    );
    assert!(!store.contains(&rival)?);
    assert_eq!(store.frontier_of(&ALICE)?, 1);

    // The caller records the evidence; the first piece is kept.
    assert!(store.put_evidence(&ALICE, 1, b"both envelopes")?);
    assert!(!store.put_evidence(&ALICE, 1, b"another copy")?);
    assert_eq!(
        store.evidence()?,
        vec![(ALICE, 1, b"both envelopes".to_vec())]
    );
    Ok(())
}

#[test]
fn seq_zero_is_refused() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    let result = store.insert_envelope(&[1; 32], &ALICE, 0, b"x");
    assert!(matches!(result, Err(StoreError::SeqZero)), "{result:?}");
    assert_eq!(store.counts().envelopes, 0);
    Ok(())
}

#[test]
fn range_is_ordered_and_respects_limits() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    for seq in [1, 2, 3, 5, 6, 7, 300] {
        insert(&store, &ALICE, seq, 100)?;
    }
    insert(&store, &BOB, 4, 100)?;
    let seqs =
        |batch: &[Vec<u8>]| -> Vec<u64> { batch.iter().map(|bytes| u64::from(bytes[1])).collect() };

    let all = store.range(&ALICE, 1, u64::MAX, usize::MAX, usize::MAX)?.0;
    assert_eq!(seqs(&all), vec![1, 2, 3, 5, 6, 7, 300 % 251]);
    assert!(
        all.iter().all(|bytes| bytes[0] == ALICE[0]),
        "other author leaked in"
    );

    // Inclusive bounds, gaps skipped, Bob's seq 4 not included.
    assert_eq!(
        seqs(&store.range(&ALICE, 2, 6, usize::MAX, usize::MAX)?.0),
        vec![2, 3, 5, 6]
    );
    // 350 bytes fit three 100-byte envelopes, not four.
    assert_eq!(
        seqs(&store.range(&ALICE, 1, 7, 350, usize::MAX)?.0),
        vec![1, 2, 3]
    );
    assert_eq!(
        seqs(&store.range(&ALICE, 1, 7, 300, usize::MAX)?.0),
        vec![1, 2, 3]
    );
    // Always at least one, even if it alone exceeds max_bytes.
    assert_eq!(seqs(&store.range(&ALICE, 5, 7, 10, usize::MAX)?.0), vec![5]);
    assert_eq!(
        seqs(&store.range(&ALICE, 1, 7, usize::MAX, 2)?.0),
        vec![1, 2]
    );
    assert!(store.range(&ALICE, 1, 7, usize::MAX, 0)?.0.is_empty());
    // Whether a limit cut the range short: only when more remains in it.
    let cut = |from, to, bytes, items| -> anyhow::Result<(Vec<u64>, bool)> {
        let (batch, cut) = store.range(&ALICE, from, to, bytes, items)?;
        Ok((seqs(&batch), cut))
    };
    assert_eq!(cut(1, 7, 350, usize::MAX)?, (vec![1, 2, 3], true));
    assert_eq!(cut(1, 7, usize::MAX, 2)?, (vec![1, 2], true));
    assert_eq!(cut(1, 3, usize::MAX, 3)?, (vec![1, 2, 3], false));
    assert_eq!(cut(5, 7, 300, usize::MAX)?, (vec![5, 6, 7], false));
    assert_eq!(cut(8, 299, usize::MAX, usize::MAX)?, (vec![], false));
    assert!(
        store
            .range(&ALICE, 8, 299, usize::MAX, usize::MAX)?
            .0
            .is_empty()
    );
    assert!(
        store
            .range(&ALICE, 7, 1, usize::MAX, usize::MAX)?
            .0
            .is_empty()
    );
    assert!(
        store
            .range(&[0x77; 32], 1, u64::MAX, usize::MAX, usize::MAX)?
            .0
            .is_empty()
    );
    Ok(())
}

#[test]
fn indicator_lookup_is_exact() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    let (a, b, c) = ([1; 32], [2; 32], [3; 32]);
    store.index_indicator("ipv4:1.2.3.4", &a)?;
    store.index_indicator("ipv4:1.2.3.4", &b)?;
    store.index_indicator("ipv4:1.2.3.45", &c)?;
    store.index_indicator("ipv4:1.2.3.", &c)?;
    store.index_indicator("domain:example.com", &a)?;

    assert_eq!(store.lookup_indicator("ipv4:1.2.3.4")?, vec![a, b]);
    assert_eq!(store.lookup_indicator("ipv4:1.2.3.45")?, vec![c]);
    assert_eq!(store.lookup_indicator("ipv4:1.2.3.")?, vec![c]);
    assert!(store.lookup_indicator("ipv4:1.2.3")?.is_empty());
    assert!(store.lookup_indicator("ipv4:")?.is_empty());
    assert!(store.lookup_indicator("")?.is_empty());

    // Indexing twice is harmless; unindexing removes exactly one pairing.
    store.index_indicator("ipv4:1.2.3.4", &a)?;
    store.unindex_indicator("ipv4:1.2.3.4", &a)?;
    assert_eq!(store.lookup_indicator("ipv4:1.2.3.4")?, vec![b]);
    assert_eq!(store.lookup_indicator("domain:example.com")?, vec![a]);
    Ok(())
}

#[test]
fn plaintext_round_trips() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    let (a, b) = ([1; 32], [2; 32]);
    store.put_plaintext(&b, b"record b")?;
    store.put_plaintext(&a, b"record a")?;
    assert_eq!(store.plaintext(&a)?.as_deref(), Some(&b"record a"[..]));
    let all = store.plaintext_iter().collect::<Result<Vec<_>, _>>()?;
    assert_eq!(
        all,
        vec![(a, b"record a".to_vec()), (b, b"record b".to_vec())]
    );
    store.remove_plaintext(&a)?;
    assert_eq!(store.plaintext(&a)?, None);
    assert_eq!(store.counts().plaintext, 1);
    Ok(())
}

#[test]
fn the_smallest_retraction_wins() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    let target = [7; 32];
    assert_eq!(store.retracted_by(&target)?, None);
    store.mark_retracted(&target, &[5; 32])?;
    store.mark_retracted(&target, &[9; 32])?;
    assert_eq!(store.retracted_by(&target)?, Some([5; 32]));
    store.mark_retracted(&target, &[3; 32])?;
    assert_eq!(store.retracted_by(&target)?, Some([3; 32]));
    Ok(())
}

#[test]
fn l2_rosters_after_a_version_are_a_bounded_range() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    for v in 1..=10u64 {
        store.put_roster(v, &[v as u8; 100])?;
    }
    let versions =
        |found: Vec<(u64, Vec<u8>)>| found.into_iter().map(|(v, _)| v).collect::<Vec<_>>();
    assert_eq!(
        versions(store.rosters_after(7, 64, 1 << 20)?),
        vec![8, 9, 10]
    );
    assert_eq!(versions(store.rosters_after(0, 3, 1 << 20)?), vec![1, 2, 3]);
    // Bytes: stop before the total would exceed the cap, the first always in.
    assert_eq!(versions(store.rosters_after(2, 64, 250)?), vec![3, 4]);
    assert_eq!(versions(store.rosters_after(2, 64, 10)?), vec![3]);
    assert!(store.rosters_after(10, 64, 1 << 20)?.is_empty());
    assert!(store.rosters_after(u64::MAX, 64, 1 << 20)?.is_empty());
    Ok(())
}

#[test]
fn latest_roster_is_the_highest_version() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    assert_eq!(store.latest_roster()?, None);
    store.put_roster(1, b"genesis")?;
    store.put_roster(300, b"v300")?;
    store.put_roster(2, b"v2")?;
    assert_eq!(store.latest_roster()?, Some((300, b"v300".to_vec())));
    assert_eq!(store.roster(2)?.as_deref(), Some(&b"v2"[..]));
    assert_eq!(store.roster(3)?, None);
    assert_eq!(
        store.rosters()?,
        vec![
            (1, b"genesis".to_vec()),
            (2, b"v2".to_vec()),
            (300, b"v300".to_vec())
        ]
    );

    // The same bytes again are fine; different bytes are a conflict.
    store.put_roster(2, b"v2")?;
    let conflict = store.put_roster(2, b"forked v2");
    assert!(
        matches!(conflict, Err(StoreError::RosterConflict { version: 2 })),
        "{conflict:?}"
    );
    assert_eq!(store.roster(2)?.as_deref(), Some(&b"v2"[..]));
    Ok(())
}

#[test]
fn data_survives_reopen() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    {
        let store = open(dir.path());
        for seq in [1, 2, 4] {
            insert(&store, &ALICE, seq, 64)?;
        }
        store.put_plaintext(&id_of(&ALICE, 1, 0), b"opened")?;
        store.index_indicator("cve:CVE-2017-0144", &id_of(&ALICE, 1, 0))?;
        store.mark_retracted(&id_of(&ALICE, 2, 0), &id_of(&ALICE, 4, 0))?;
        store.put_evidence(&BOB, 3, b"evidence")?;
        store.put_meta("consortium", b"c0ffee")?;
        store.put_roster(1, b"genesis")?;
        store.flush()?;
    }
    let store = open(dir.path());
    assert_eq!(store.frontier()?, BTreeMap::from([(ALICE, 2)]));
    assert_eq!(store.id_at(&ALICE, 4)?, Some(id_of(&ALICE, 4, 0)));
    assert_eq!(
        store.range(&ALICE, 1, 10, usize::MAX, usize::MAX)?.0.len(),
        3
    );
    assert_eq!(
        store.plaintext(&id_of(&ALICE, 1, 0))?.as_deref(),
        Some(&b"opened"[..])
    );
    assert_eq!(
        store.lookup_indicator("cve:CVE-2017-0144")?,
        vec![id_of(&ALICE, 1, 0)]
    );
    assert_eq!(
        store.retracted_by(&id_of(&ALICE, 2, 0))?,
        Some(id_of(&ALICE, 4, 0))
    );
    assert_eq!(store.evidence()?, vec![(BOB, 3, b"evidence".to_vec())]);
    assert_eq!(store.meta("consortium")?.as_deref(), Some(&b"c0ffee"[..]));
    assert_eq!(
        store.meta("own_seq")?,
        None,
        "user meta keys are namespaced"
    );
    assert_eq!(store.latest_roster()?, Some((1, b"genesis".to_vec())));
    // Filling the gap after reopen still jumps the frontier.
    assert_eq!(insert(&store, &ALICE, 3, 64)?.frontier, 4);
    assert_eq!(
        store.counts(),
        Counts {
            envelopes: 4,
            authors: 1,
            plaintext: 1,
            indicators: 1,
            retracted: 1,
            rosters: 1,
            evidence: 1,
            pending_green: 0,
            tombstones: 0,
        }
    );
    assert!(store.size_on_disk()? > 0);
    Ok(())
}

#[test]
fn corrupt_values_give_errors_not_panics() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    {
        let store = open(dir.path());
        insert(&store, &ALICE, 1, 10)?;
        store.reserve_seq()?;
        store.flush()?;
    }
    {
        let raw = sled::open(dir.path())?;
        let kv = raw.open_tree("kv")?;
        kv.insert(kv_key(family::FRONTIER, &[&ALICE]), &b"garbage"[..])?;
        kv.insert(envelope_key(&BOB, 1), &b"short"[..])?;
        kv.insert(kv_key(family::META, &[META_OWN_SEQ]), &b"?"[..])?;
        raw.open_tree("rosters")?.insert(b"v1", &b"roster"[..])?;
        kv.insert(kv_key(family::EVIDENCE, &[b"too short"]), &b"evidence"[..])?;
        kv.insert(kv_key(family::PLAINTEXT, &[b"not an id"]), &b"record"[..])?;
        kv.insert(kv_key(family::ID, &[&[9; 32]]), &b"not a position"[..])?;
        kv.insert(
            kv_key(family::ID, &[&[8; 32]]),
            &feed_position(&ALICE, 7)[..],
        )?;
        kv.insert(kv_key(family::PENDING_EPOCH, &[b"short"]), &b""[..])?;
        kv.insert(kv_key(family::RETRACTED, &[&[7; 32]]), &b"short"[..])?;
        raw.flush()?;
    }
    let store = open(dir.path());
    let is_corrupt = |result: Result<_, StoreError>, tree: &str| match result {
        Err(StoreError::Corrupt { tree: found, .. }) => assert_eq!(found, tree),
        Err(other) => panic!("expected corrupt {tree}, got {other:?}"),
        Ok(_) => panic!("expected corrupt {tree}, got Ok"),
    };
    is_corrupt(store.frontier_of(&ALICE).map(drop), "kv/n");
    is_corrupt(store.frontier().map(drop), "kv/n");
    is_corrupt(insert(&store, &ALICE, 2, 10).map(drop), "kv/n");
    is_corrupt(store.id_at(&BOB, 1).map(drop), "kv/e");
    is_corrupt(insert(&store, &BOB, 1, 10).map(drop), "kv/e");
    is_corrupt(store.range(&BOB, 1, 1, usize::MAX, 1).map(drop), "kv/e");
    is_corrupt(store.reserve_seq().map(drop), "kv/m");
    is_corrupt(store.own_seq().map(drop), "kv/m");
    is_corrupt(store.latest_roster().map(drop), "rosters");
    is_corrupt(store.evidence().map(drop), "kv/q");
    is_corrupt(
        store
            .plaintext_iter()
            .collect::<Result<Vec<_>, _>>()
            .map(drop),
        "kv/p",
    );
    is_corrupt(store.envelope(&[9; 32]).map(drop), "kv/i");
    is_corrupt(store.envelope(&[8; 32]).map(drop), "kv/i");
    is_corrupt(
        store
            .envelopes_iter()
            .collect::<Result<Vec<_>, _>>()
            .map(drop),
        "kv/i",
    );
    is_corrupt(store.pending_up_to(u64::MAX).map(drop), "kv/g");
    is_corrupt(store.retracted_by(&[7; 32]).map(drop), "kv/r");
    is_corrupt(store.mark_retracted(&[7; 32], &[1; 32]), "kv/r");
    // Nothing was written by the failed insert.
    assert!(!store.contains(&id_of(&ALICE, 2, 0))?);
    Ok(())
}

#[test]
fn batch_insert_reports_each_envelope() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    insert(&store, &ALICE, 2, 10)?;
    let rival = id_of(&ALICE, 2, 9);
    // Sizes that v1 split into several transactions; v2 writes one batch.
    const MAX_TRANSACTION_ITEMS: usize = 256;
    let big = vec![0u8; 256 * 1024];
    let mut batch = vec![
        NewEnvelope {
            id: id_of(&ALICE, 3, 0),
            author: ALICE,
            seq: 3,
            bytes: b"three",
        },
        NewEnvelope {
            id: rival,
            author: ALICE,
            seq: 2,
            bytes: b"rival",
        },
        NewEnvelope {
            id: id_of(&ALICE, 1, 0),
            author: ALICE,
            seq: 1,
            bytes: b"one",
        },
        NewEnvelope {
            id: id_of(&ALICE, 1, 0),
            author: ALICE,
            seq: 1,
            bytes: b"one",
        },
        NewEnvelope {
            id: id_of(&BOB, 1, 0),
            author: BOB,
            seq: 1,
            bytes: &big,
        },
    ];
    // Enough envelopes to span several v1 transactions.
    let filler: Vec<NewEnvelope<'_>> = (2..=2 * MAX_TRANSACTION_ITEMS as u64)
        .map(|seq| NewEnvelope {
            id: id_of(&BOB, seq, 0),
            author: BOB,
            seq,
            bytes: b"filler",
        })
        .collect();
    batch.extend(filler);

    let outcomes = store.insert_envelopes(&batch)?;
    assert_eq!(outcomes.len(), batch.len());
    assert_eq!(
        outcomes[0],
        Ok(Inserted {
            new: true,
            frontier: 0
        })
    );
    assert_eq!(
        outcomes[1],
        Err(Equivocation {
            author: ALICE,
            seq: 2,
            existing: id_of(&ALICE, 2, 0)
        })
    );
    assert_eq!(
        outcomes[2],
        Ok(Inserted {
            new: true,
            frontier: 3
        })
    );
    assert_eq!(
        outcomes[3],
        Ok(Inserted {
            new: false,
            frontier: 3
        })
    );
    assert_eq!(
        outcomes[4],
        Ok(Inserted {
            new: true,
            frontier: 1
        })
    );
    assert_eq!(
        outcomes.last().copied(),
        Some(Ok(Inserted {
            new: true,
            frontier: 2 * MAX_TRANSACTION_ITEMS as u64
        }))
    );
    assert_eq!(
        store.frontier()?,
        BTreeMap::from([(ALICE, 3), (BOB, 2 * MAX_TRANSACTION_ITEMS as u64)])
    );
    assert!(!store.contains(&rival)?);

    let refused = store.insert_envelopes(&[
        NewEnvelope {
            id: [8; 32],
            author: BOB,
            seq: 9_999,
            bytes: b"x",
        },
        NewEnvelope {
            id: [9; 32],
            author: BOB,
            seq: 0,
            bytes: b"x",
        },
    ]);
    assert!(matches!(refused, Err(StoreError::SeqZero)), "{refused:?}");
    assert!(!store.contains(&[8; 32])?, "a refused batch writes nothing");
    Ok(())
}

#[test]
fn concurrent_inserts_keep_the_frontier_exact() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    let n_threads = 4u64;
    let per_thread = 250u64;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n_threads)
            .map(|thread_idx| {
                let store = store.clone();
                // Thread k stores seqs k+1, k+1+n, …, so every thread fills
                // the gaps the others leave.
                scope.spawn(move || -> Result<(), StoreError> {
                    for round in 0..per_thread {
                        insert(&store, &ALICE, round * n_threads + thread_idx + 1, 32)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(result) => result?,
                Err(_) => panic!("insert thread panicked"),
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    assert_eq!(store.frontier_of(&ALICE)?, n_threads * per_thread);
    Ok(())
}

#[test]
fn twenty_thousand_one_kib_envelopes() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let store = open(dir.path());
    let authors: Vec<AuthorKey> = (0u8..10).map(|n| [n; 32]).collect();
    let per_author = 2_000u64;
    let started = std::time::Instant::now();
    // Seqs arrive in two interleaved passes (odd then even) so half the
    // inserts are gap fills.
    for parity in [1, 0] {
        for seq in (1..=per_author).filter(|seq| seq % 2 == parity) {
            for author in &authors {
                let inserted = insert(&store, author, seq, 1024)?;
                assert!(inserted.new);
            }
        }
    }
    store.flush()?;
    let elapsed = started.elapsed();
    eprintln!("inserted 20000 envelopes in {elapsed:?}");
    assert_eq!(store.counts().envelopes, 20_000);
    let frontier = store.frontier()?;
    assert_eq!(frontier.len(), authors.len());
    assert!(frontier.values().all(|&seq| seq == per_author));
    let batch = store
        .range(&authors[3], 1, per_author, 64 * 1024, usize::MAX)?
        .0;
    assert_eq!(batch.len(), 64);
    Ok(())
}

#[test]
fn a_store_reopens_at_once_but_not_while_held() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Closed and reopened by one process, as an offline join does.
    for _ in 0..20 {
        let store = Store::open(dir.path())?;
        store.flush()?;
    }
    let held = Store::open(dir.path())?;
    let started = std::time::Instant::now();
    let Err(error) = Store::open(dir.path()) else {
        panic!("a held store opened twice");
    };
    assert!(
        format!("{error:?}").contains("could not acquire lock"),
        "{error:?}"
    );
    assert!(started.elapsed() >= LOCK_WAIT);
    drop(held);
    Ok(())
}

// ------------------------------------------------------------ write batches

fn envelope<'a>(author: &AuthorKey, seq: u64, variant: u8, bytes: &'a [u8]) -> NewEnvelope<'a> {
    NewEnvelope {
        id: id_of(author, seq, variant),
        author: *author,
        seq,
        bytes,
    }
}

#[test]
fn attached_writes_happen_only_for_new_envelopes() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    insert(&store, &ALICE, 1, 10)?;
    let (one, rival, two) = (
        id_of(&ALICE, 1, 0),
        id_of(&ALICE, 1, 9),
        id_of(&ALICE, 2, 0),
    );
    let (target, opened_later) = ([0x77; 32], [0x66; 32]);
    let mut batch = WriteBatch::new();
    batch
        .envelope(envelope(&ALICE, 1, 0, b"one"))
        .plaintext(&b"duplicate"[..])
        .indicator("cve:CVE-1")
        .pending_epoch(1);
    let rival_index = batch
        .envelope(envelope(&ALICE, 1, 9, b"rival"))
        .plaintext(&b"rival"[..])
        .indicator("cve:CVE-1")
        .pending_epoch(3)
        .retracts(&target)
        .index();
    batch
        .envelope(envelope(&ALICE, 2, 0, b"two"))
        .plaintext(&b"two"[..])
        .indicator("cve:CVE-1")
        .pending_epoch(3)
        .retracts(&target)
        .retracts_pending(&[0x55; 32]);
    batch.put_plaintext(&opened_later, &b"unconditional"[..]);
    assert_eq!((rival_index, batch.envelope_count()), (1, 3));

    let outcomes = store.write(batch)?;
    assert_eq!(
        outcomes,
        vec![
            Ok(Inserted {
                new: false,
                frontier: 1
            }),
            Err(Equivocation {
                author: ALICE,
                seq: 1,
                existing: one
            }),
            Ok(Inserted {
                new: true,
                frontier: 2
            }),
        ]
    );
    assert_eq!(store.plaintext(&one)?, None);
    assert_eq!(store.plaintext(&rival)?, None);
    assert!(!store.contains(&rival)?);
    assert_eq!(store.plaintext(&two)?.as_deref(), Some(&b"two"[..]));
    assert_eq!(
        store.plaintext(&opened_later)?.as_deref(),
        Some(&b"unconditional"[..])
    );
    assert_eq!(store.lookup_indicator("cve:CVE-1")?, vec![two]);
    assert_eq!(store.pending_up_to(u64::MAX)?, vec![(3, two)]);
    assert_eq!(store.retracted_by(&target)?, Some(two));
    assert_eq!(store.pending_retractions(&[0x55; 32])?, vec![two]);
    assert_eq!(store.envelope(&two)?.as_deref(), Some(&b"two"[..]));
    assert_eq!(store.ids_iter().collect::<Result<Vec<_>, _>>()?, {
        let mut ids = vec![one, two];
        ids.sort();
        ids
    });
    Ok(())
}

#[test]
fn a_batch_reads_its_own_writes() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    let mut batch = WriteBatch::new();
    for (seq, variant) in [(3, 0), (1, 0), (1, 0), (1, 9), (2, 0)] {
        batch.envelope(envelope(&ALICE, seq, variant, b"x"));
    }
    let target = [0x44; 32];
    batch.mark_retracted(&target, &[9; 32]);
    batch.mark_retracted(&target, &[4; 32]);
    batch.mark_retracted(&target, &[6; 32]);
    batch.index_indicator("domain:example.com", &[1; 32]);
    batch.unindex_indicator("domain:example.com", &[1; 32]);
    batch.index_indicator("domain:example.com", &[2; 32]);
    batch.put_meta("k", &b"first"[..]);
    batch.put_meta("k", &b"second"[..]);
    let outcomes = store.write(batch)?;
    let frontiers: Vec<_> = outcomes
        .iter()
        .map(|outcome| outcome.map(|inserted| (inserted.new, inserted.frontier)))
        .collect();
    assert_eq!(
        frontiers,
        vec![
            Ok((true, 0)),
            Ok((true, 1)),
            Ok((false, 1)),
            Err(Equivocation {
                author: ALICE,
                seq: 1,
                existing: id_of(&ALICE, 1, 0)
            }),
            Ok((true, 3)),
        ]
    );
    assert_eq!(store.frontier_of(&ALICE)?, 3);
    assert_eq!(store.retracted_by(&target)?, Some([4; 32]));
    assert_eq!(store.lookup_indicator("domain:example.com")?, vec![[2; 32]]);
    assert_eq!(store.meta("k")?.as_deref(), Some(&b"second"[..]));
    assert!(store.write(WriteBatch::new())?.is_empty());
    Ok(())
}

#[test]
fn pending_epochs_are_listed_up_to_an_epoch_and_cleared_with_the_plaintext() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    let mut batch = WriteBatch::new();
    batch
        .pending_epoch(5, &[1; 32])
        .pending_epoch(2, &[3; 32])
        .pending_epoch(2, &[2; 32])
        .pending_epoch(u64::MAX, &[4; 32]);
    store.write(batch)?;
    assert!(store.pending_up_to(1)?.is_empty());
    assert_eq!(store.pending_up_to(2)?, vec![(2, [2; 32]), (2, [3; 32])]);
    assert_eq!(
        store.pending_up_to(u64::MAX)?,
        vec![
            (2, [2; 32]),
            (2, [3; 32]),
            (5, [1; 32]),
            (u64::MAX, [4; 32])
        ]
    );

    // The key of epoch 2 arrives: both open, in one batch with their records.
    let mut batch = WriteBatch::new();
    for (epoch, id) in store.pending_up_to(2)? {
        batch
            .put_plaintext(&id, &b"opened"[..])
            .clear_pending_epoch(epoch, &id);
    }
    store.write(batch)?;
    assert_eq!(
        store.pending_up_to(u64::MAX)?,
        vec![(5, [1; 32]), (u64::MAX, [4; 32])]
    );
    assert_eq!(store.counts().plaintext, 2);
    Ok(())
}

#[test]
fn pending_retractions_are_kept_per_target_and_cleared_together() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    let (target, other) = ([0x10; 32], [0x20; 32]);
    let mut batch = WriteBatch::new();
    batch
        .add_pending_retraction(&target, &[9; 32])
        .add_pending_retraction(&target, &[3; 32])
        .add_pending_retraction(&other, &[5; 32]);
    store.write(batch)?;
    assert_eq!(store.pending_retractions(&target)?, vec![[3; 32], [9; 32]]);

    // Cleared on disk and in the batch so far; what comes after stays.
    let mut batch = WriteBatch::new();
    batch
        .add_pending_retraction(&target, &[1; 32])
        .clear_pending_retractions(&target)
        .add_pending_retraction(&target, &[7; 32]);
    store.write(batch)?;
    assert_eq!(store.pending_retractions(&target)?, vec![[7; 32]]);
    assert_eq!(store.pending_retractions(&other)?, vec![[5; 32]]);
    assert!(store.pending_retractions(&[0x30; 32])?.is_empty());
    Ok(())
}

#[test]
fn a_new_store_has_no_v1_trees() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    {
        let store = open(dir.path());
        insert(&store, &ALICE, 1, 10)?;
        store.flush()?;
    }
    let store = open(dir.path());
    let names = store.db.tree_names();
    for old in migrate::OLD_TREES {
        assert!(!names.iter().any(|name| name == old.as_bytes()), "{old}");
    }
    assert_eq!(store.frontier_of(&ALICE)?, 1);
    Ok(())
}

#[test]
fn a_bad_migration_marker_is_corrupt() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    {
        let raw = sled::open(dir.path())?;
        raw.open_tree("kv")?
            .insert(kv_key(family::META, &[migrate::MARKER_NAME]), &b"??"[..])?;
        raw.flush()?;
    }
    match Store::open(dir.path()) {
        Err(StoreError::Corrupt { tree: "kv/m", .. }) => Ok(()),
        other => panic!("expected a corrupt marker, got {other:?}"),
    }
}

// ---------------------------------------------------------------- migration

const CAROL: AuthorKey = [0xc3; 32];

/// Feed positions in the v1 fixture: Alice 1..=400, Bob 1..=10 and 12..=300
/// (a gap at 11), Carol 2 and 3 (nothing contiguous).
fn fixture_positions() -> Vec<(AuthorKey, u64)> {
    let mut positions: Vec<_> = (1..=400).map(|seq| (ALICE, seq)).collect();
    positions.extend((1..=300).filter(|&seq| seq != 11).map(|seq| (BOB, seq)));
    positions.extend([(CAROL, 2), (CAROL, 3)]);
    positions
}

fn fixture_bytes(author: &AuthorKey, seq: u64) -> Vec<u8> {
    let mut bytes = vec![u8::try_from(seq % 251).unwrap(); 20 + usize::try_from(seq % 50).unwrap()];
    bytes[0] = author[0];
    bytes
}

fn fixture_indicator(seq: u64) -> String {
    format!("ipv4:10.0.{}.{}", seq / 256, seq % 256)
}

/// Writes a store with the v1 code, as a node of the previous release did.
fn write_v1_fixture(dir: &Path) -> anyhow::Result<()> {
    let store = legacy::Store::open(dir)?;
    for (author, seq) in fixture_positions() {
        let bytes = fixture_bytes(&author, seq);
        store.insert_envelope(&id_of(&author, seq, 0), &author, seq, &bytes)?;
    }
    for seq in 1..=400 {
        let record = format!(r#"{{"tlp":"green","seq":{seq},"body":{{"title":"t{seq}"}}}}"#);
        store.put_plaintext(&id_of(&ALICE, seq, 0), record.as_bytes())?;
    }
    for seq in 1..=300 {
        store.index_indicator(&fixture_indicator(seq), &id_of(&ALICE, seq, 0))?;
    }
    for seq in 1..=5 {
        store.index_indicator("cve:CVE-2017-0144", &id_of(&BOB, seq, 0))?;
    }
    store.mark_retracted(&id_of(&ALICE, 10, 0), &id_of(&ALICE, 20, 0))?;
    store.mark_retracted(&id_of(&ALICE, 11, 0), &id_of(&BOB, 12, 0))?;
    store.put_evidence(&BOB, 11, b"both envelopes")?;
    store.put_evidence(&CAROL, 1, b"evidence")?;
    store.put_meta("consortium", b"c0ffee")?;
    store.put_meta("pending-retraction/abcd", &[0x42; 64])?;
    for _ in 0..3 {
        store.reserve_seq()?;
    }
    store.put_roster(1, b"genesis")?;
    store.put_roster(2, b"v2")?;
    store.flush()?;
    Ok(())
}

/// Everything a store answers about the fixture, through the same-named
/// methods of the v1 and v2 code.
#[derive(Debug, PartialEq)]
struct Snapshot {
    envelopes: Vec<(Id, Vec<u8>)>,
    feeds: Vec<(AuthorKey, u64, Option<Id>)>,
    frontier: BTreeMap<AuthorKey, u64>,
    plaintext: Vec<(Id, Vec<u8>)>,
    indicators: Vec<(String, Vec<Id>)>,
    retracted: Vec<(Id, Option<Id>)>,
    evidence: Vec<(AuthorKey, u64, Vec<u8>)>,
    rosters: Vec<(u64, Vec<u8>)>,
    own_seq: u64,
    meta: Vec<Option<Vec<u8>>>,
    counts: [u64; 7],
}

macro_rules! snapshot {
    ($store:expr) => {{
        let store = &$store;
        let envelopes = store.envelopes_iter().collect::<Result<Vec<_>, _>>()?;
        let mut feeds = Vec::new();
        for (author, seq) in fixture_positions() {
            feeds.push((author, seq, store.id_at(&author, seq)?));
        }
        let mut indicators = Vec::new();
        for key in (1..=300)
            .map(fixture_indicator)
            .chain(["cve:CVE-2017-0144".to_owned(), "ipv4:10.0.0.0".to_owned()])
        {
            let ids = store.lookup_indicator(&key)?;
            indicators.push((key, ids));
        }
        let mut retracted = Vec::new();
        for (id, _) in &envelopes {
            retracted.push((*id, store.retracted_by(id)?));
        }
        let counts = store.counts();
        Snapshot {
            feeds,
            frontier: store.frontier()?,
            plaintext: store.plaintext_iter().collect::<Result<Vec<_>, _>>()?,
            indicators,
            retracted,
            evidence: store.evidence()?,
            rosters: store.rosters()?,
            own_seq: store.own_seq()?,
            meta: vec![
                store.meta("consortium")?,
                store.meta("pending-retraction/abcd")?,
                store.meta("own_seq")?,
            ],
            counts: [
                counts.envelopes,
                counts.authors,
                counts.plaintext,
                counts.indicators,
                counts.retracted,
                counts.rosters,
                counts.evidence,
            ],
            envelopes,
        }
    }};
}

/// The v1 fixture and what the v1 code answers about it.
fn v1_fixture() -> anyhow::Result<(TempDir, Snapshot)> {
    let dir = TempDir::new()?;
    write_v1_fixture(dir.path())?;
    let expected = snapshot!(legacy::Store::open(dir.path())?);
    assert_eq!(expected.envelopes.len(), 701);
    assert_eq!(expected.frontier, BTreeMap::from([(ALICE, 400), (BOB, 10)]));
    assert_eq!(expected.counts, [701, 2, 400, 305, 2, 2, 2]);
    Ok((dir, expected))
}

/// Checks a migrated store against the v1 answers, then that it keeps
/// working: its old trees are gone and filling Bob's gap jumps his frontier.
fn check_migrated(dir: &Path, expected: &Snapshot) -> anyhow::Result<()> {
    let store = open(dir);
    assert_eq!(&snapshot!(store), expected);
    let names = store.db.tree_names();
    for old in migrate::OLD_TREES {
        assert!(
            !names.iter().any(|name| name == old.as_bytes()),
            "{old} left"
        );
    }
    for (author, seq) in [(ALICE, 1), (BOB, 300), (CAROL, 3)] {
        assert_eq!(
            store.range(&author, seq, seq, usize::MAX, 1)?.0,
            vec![fixture_bytes(&author, seq)]
        );
        assert_eq!(
            store.envelope(&id_of(&author, seq, 0))?,
            Some(fixture_bytes(&author, seq))
        );
    }
    assert_eq!(store.reserve_seq()?, 4);
    assert_eq!(insert(&store, &ALICE, 401, 10)?.frontier, 401);
    assert_eq!(insert(&store, &BOB, 11, 10)?.frontier, 300);
    assert!(insert(&store, &CAROL, 2, 10).is_ok_and(|inserted| !inserted.new));
    Ok(())
}

/// Copies a closed sled directory.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[test]
fn a_v1_store_is_migrated_on_open_and_nothing_is_lost() -> anyhow::Result<()> {
    let (dir, expected) = v1_fixture()?;
    check_migrated(dir.path(), &expected)?;
    // Opening again finds the marker and migrates nothing.
    let store = open(dir.path());
    assert_eq!(store.frontier_of(&ALICE)?, 401);
    // 701 migrated, Alice 401 and Bob 11 added; Carol 2 was a duplicate.
    assert_eq!(store.counts().envelopes, 703);
    Ok(())
}

#[test]
fn a_migration_cut_short_anywhere_resumes_on_open() -> anyhow::Result<()> {
    let (fixture, expected) = v1_fixture()?;
    let mut finished_at = None;
    for budget in 0..40 {
        let dir = TempDir::new()?;
        copy_dir(fixture.path(), dir.path())?;
        let (finished, envelopes) = {
            let db = sled::open(dir.path())?;
            let kv = db.open_tree("kv")?;
            let finished = migrate::run(&db, &kv, budget)?;
            // A stop between two steps. Each step is one atomic batch (or
            // one dropped tree), so a kill anywhere leaves the store as it
            // was after some step; sled's flush on drop stands in for the
            // background flush that would have made it durable.
            (finished, kv.scan_prefix([family::ENVELOPE]).count())
        };
        // Batches of 256 envelopes: a cut after the first leaves 256 copied.
        if budget == 1 {
            assert_eq!(envelopes, BATCH_ITEMS);
        }
        check_migrated(dir.path(), &expected)?;
        if finished {
            finished_at = Some(budget);
            break;
        }
    }
    // 11 copy batches, the check, 8 dropped trees.
    assert_eq!(finished_at, Some(20));
    Ok(())
}

#[test]
fn legacy_pending_retraction_blobs_move_to_their_family_at_open() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let target = id_of(&ALICE, 7, 0);
    let (first, second) = (id_of(&BOB, 1, 0), id_of(&BOB, 2, 0));
    {
        let store = open(dir.path());
        let mut blob = first.to_vec();
        blob.extend_from_slice(&second);
        // What nodes before the `t` family wrote, by way of `put_meta`.
        store.put_meta(
            &format!("pending-retraction/{}", hex::encode(target)),
            &blob,
        )?;
        // A blob of another shape is left alone.
        store.put_meta("pending-retraction/not-an-id", &first)?;
        store.flush()?;
    }
    let store = open(dir.path());
    assert_eq!(store.pending_retractions(&target)?, vec![first, second]);
    let name = format!("pending-retraction/{}", hex::encode(target));
    assert_eq!(store.meta(&name)?, None);
    assert_eq!(
        store.meta("pending-retraction/not-an-id")?,
        Some(first.to_vec())
    );
    Ok(())
}

#[test]
fn every_write_is_one_apply_batch() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    let before = store.batches_applied();
    let envelopes: Vec<(Id, Vec<u8>)> = (1..=300u64)
        .map(|seq| (id_of(&ALICE, seq, 0), vec![0xa1; 100]))
        .collect();
    let mut batch = WriteBatch::new();
    for (seq, (id, bytes)) in (1..).zip(&envelopes) {
        batch
            .envelope(NewEnvelope {
                id: *id,
                author: ALICE,
                seq,
                bytes,
            })
            .plaintext(b"record".as_slice())
            .indicator("ipv4:192.0.2.1");
    }
    store.write(batch)?;
    assert_eq!(store.batches_applied(), before + 1);
    assert_eq!(store.frontier_of(&ALICE)?, 300);
    assert_eq!(store.counts().plaintext, 300);
    // A batch that writes nothing applies nothing.
    store.write(WriteBatch::new())?;
    assert_eq!(store.batches_applied(), before + 1);
    Ok(())
}

#[test]
fn h4_a_tombstone_keeps_the_feed_position_and_is_not_served() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    {
        let store = open(dir.path());
        for seq in 1..=3 {
            insert(&store, &ALICE, seq, 100)?;
        }
        let (id2, id3) = (id_of(&ALICE, 2, 0), id_of(&ALICE, 3, 0));
        let mut batch = WriteBatch::new();
        batch
            .envelope(NewEnvelope {
                id: id_of(&BOB, 1, 0),
                author: BOB,
                seq: 1,
                bytes: b"bob",
            })
            .org("port-authority")
            .expires(500);
        store.write(batch)?;
        assert_eq!(
            store.org_of(&id_of(&BOB, 1, 0))?.as_deref(),
            Some("port-authority")
        );
        assert_eq!(store.expiring(499, 10, None)?, vec![]);
        assert_eq!(
            store.expiring(500, 10, None)?,
            vec![(500, id_of(&BOB, 1, 0), BOB, 1)]
        );
        // Two sled entries fewer per envelope (layout 2.1): no `o`, no `y`.
        for family in [family::ORG, family::EXPIRY] {
            assert_eq!(store.kv.scan_prefix([family]).count(), 0);
        }
        assert_eq!(store.feed_usage(&ALICE)?, (300, 3));

        let mut batch = WriteBatch::new();
        batch.put_plaintext(&id2, b"record".as_slice());
        batch.tombstone(&ALICE, 2, &id2);
        // A tombstone for an id not at that position changes nothing.
        batch.tombstone(&ALICE, 3, &id2);
        store.write(batch)?;
        assert!(store.is_tombstone(&ALICE, 2)?);
        assert!(!store.is_tombstone(&ALICE, 3)?);
        assert_eq!(store.envelope(&id2)?, None);
        assert!(store.envelope(&id3)?.is_some());
        assert_eq!(store.plaintext(&id2)?, None);
        assert!(store.contains(&id2)?);
        assert_eq!(store.id_at(&ALICE, 2)?, Some(id2));
        assert_eq!(store.feed_usage(&ALICE)?, (200, 2));
        assert_eq!(
            store.live_feed(&ALICE)?,
            vec![(1, id_of(&ALICE, 1, 0)), (3, id3)]
        );
        let counts = store.counts();
        assert_eq!((counts.envelopes, counts.tombstones), (4, 1));
    }
    // After a reopen: the frontier did not regress, a range skips the
    // tombstone, the same id is a duplicate, another one an equivocation.
    let store = open(dir.path());
    assert_eq!(store.frontier_of(&ALICE)?, 3);
    let (served, more) = store.range(&ALICE, 1, 3, usize::MAX, 100)?;
    assert!(!more);
    assert_eq!(served.len(), 2);
    assert_eq!((served[0][1], served[1][1]), (1, 3));
    let id2 = id_of(&ALICE, 2, 0);
    assert!(!store.insert_envelope(&id2, &ALICE, 2, b"again")?.new);
    assert!(matches!(
        store.insert_envelope(&id_of(&ALICE, 2, 9), &ALICE, 2, b"rival"),
        Err(StoreError::Equivocation(_))
    ));
    assert_eq!(store.envelopes_iter().count(), 3);
    Ok(())
}

#[test]
fn h4_an_injected_write_failure_writes_nothing() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    insert(&store, &ALICE, 1, 10)?;
    store.fail_writes(true);
    let error = insert(&store, &ALICE, 2, 10).unwrap_err();
    assert!(error.to_string().contains("sled"), "{error}");
    assert_eq!(store.frontier_of(&ALICE)?, 1);
    store.fail_writes(false);
    insert(&store, &ALICE, 2, 10)?;
    assert_eq!(store.frontier_of(&ALICE)?, 2);
    Ok(())
}

#[test]
fn h4_a_write_that_would_eat_into_the_reserve_writes_nothing() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let store = open(dir.path());
    insert(&store, &ALICE, 1, 10)?;
    // No filesystem has this much free: every kind of write refuses.
    store.set_reserve(u64::MAX);
    let error = insert(&store, &ALICE, 2, 10).unwrap_err();
    assert!(matches!(error, StoreError::DiskFull { .. }), "{error}");
    assert!(
        error.to_string().starts_with("the disk is full: "),
        "{error}"
    );
    assert!(matches!(
        store.reserve_seq(),
        Err(StoreError::DiskFull { .. })
    ));
    assert!(matches!(
        store.put_roster(9, b"r"),
        Err(StoreError::DiskFull { .. })
    ));
    assert!(matches!(
        store.put_meta("k", b"v"),
        Err(StoreError::DiskFull { .. })
    ));
    assert_eq!(store.frontier_of(&ALICE)?, 1);
    assert_eq!(store.own_seq()?, 0);
    assert_eq!(store.roster(9)?, None);
    // Within the reserve (and with the check off) writes work.
    store.set_reserve(1);
    insert(&store, &ALICE, 2, 10)?;
    store.set_reserve(0);
    insert(&store, &ALICE, 3, 10)?;
    assert_eq!(store.frontier_of(&ALICE)?, 3);
    Ok(())
}

#[test]
fn the_added_index_is_strictly_increasing_whole_milliseconds_once_per_id() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let ids: Vec<Id> = (1..=5).map(|seq| id_of(&ALICE, seq, 0)).collect();
    {
        let store = open(dir.path());
        // Three in one batch, two more in their own writes.
        let mut batch = WriteBatch::new();
        for id in &ids[..3] {
            batch.put_plaintext(id, b"record".to_vec());
        }
        store.write(batch)?;
        for id in &ids[3..] {
            let mut batch = WriteBatch::new();
            batch.put_plaintext(id, b"record".to_vec());
            store.write(batch)?;
        }
        // Written again: no second entry.
        let mut batch = WriteBatch::new();
        batch.put_plaintext(&ids[0], b"record again".to_vec());
        store.write(batch)?;
        store.flush()?;
    }
    // After a reopen the next entry still comes after every earlier one.
    let store = open(dir.path());
    let later = id_of(&BOB, 1, 0);
    let mut batch = WriteBatch::new();
    batch.put_plaintext(&later, b"record".to_vec());
    store.write(batch)?;
    let added = store.added_from(0, 100)?;
    let order: Vec<Id> = added.iter().map(|(_, id)| *id).collect();
    let mut expected = ids.clone();
    expected.push(later);
    assert_eq!(order, expected);
    for pair in added.windows(2) {
        assert!(pair[0].0 < pair[1].0, "{added:?}");
    }
    assert!(added.iter().all(|(at, _)| at % 1000 == 0), "{added:?}");
    assert_eq!(store.last_added()?, added.last().map(|(at, _)| *at));
    // From an entry on (inclusive), as TAXII pages read it.
    let from_third = store.added_from(added[2].0, 2)?;
    assert_eq!(from_third, added[2..4].to_vec());
    Ok(())
}

/// What [`Store::tally`] says matches a full count.
fn assert_tally_matches(store: &Store) {
    let (tally, counts) = (store.tally(), store.counts());
    assert_eq!(
        (
            tally.envelopes,
            tally.plaintext,
            tally.pending_green,
            tally.tombstones,
            tally.evidence
        ),
        (
            counts.envelopes,
            counts.plaintext,
            counts.pending_green,
            counts.tombstones,
            counts.evidence
        )
    );
}

#[test]
fn the_tally_stays_equal_to_a_full_count_through_every_kind_of_write() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let store = open(dir.path());
    insert(&store, &ALICE, 1, 100)?;
    // Counted once here; from now on every write keeps it.
    assert_tally_matches(&store);
    for seq in 2..=4 {
        insert(&store, &ALICE, seq, 100)?;
    }
    insert(&store, &ALICE, 2, 100)?; // again: nothing new
    let (id2, id3, id4) = (
        id_of(&ALICE, 2, 0),
        id_of(&ALICE, 3, 0),
        id_of(&ALICE, 4, 0),
    );
    let mut batch = WriteBatch::new();
    batch.put_plaintext(&id2, b"a".as_slice());
    batch.put_plaintext(&id3, b"b".as_slice());
    batch.pending_epoch(7, &id4);
    store.write(batch)?;
    let mut batch = WriteBatch::new();
    batch.put_plaintext(&id2, b"a again".as_slice()); // overwritten, not new
    batch.clear_pending_epoch(7, &id4);
    batch.pending_epoch(8, &id4);
    store.write(batch)?;
    assert_tally_matches(&store);
    assert_eq!(store.tally().plaintext, 2);
    assert_eq!(store.tally().pending_green, 1);
    // A tombstone replaces the ciphertext and removes the plaintext; a
    // second tombstone of the same position changes nothing.
    let mut batch = WriteBatch::new();
    batch.tombstone(&ALICE, 3, &id3);
    store.write(batch)?;
    let mut batch = WriteBatch::new();
    batch.tombstone(&ALICE, 3, &id3);
    batch.remove_plaintext(&id2);
    batch.clear_pending_epoch(8, &id4);
    store.write(batch)?;
    store.put_evidence(&ALICE, 2, b"pair")?;
    assert_tally_matches(&store);
    let tally = store.tally();
    assert_eq!(
        (
            tally.envelopes,
            tally.plaintext,
            tally.tombstones,
            tally.evidence
        ),
        (4, 0, 1, 1)
    );
    // A refused write changes nothing, the tally neither.
    store.fail_writes(true);
    assert!(insert(&store, &ALICE, 5, 100).is_err());
    store.fail_writes(false);
    assert_tally_matches(&store);
    // Pending retractions: found while any are stored, across a reopen;
    // none stored, none found without a scan.
    let (target, by) = (id_of(&BOB, 9, 0), id_of(&ALICE, 9, 0));
    assert!(store.pending_retractions(&target)?.is_empty());
    let mut batch = WriteBatch::new();
    batch.add_pending_retraction(&target, &by);
    store.write(batch)?;
    assert_eq!(store.pending_retractions(&target)?, vec![by]);
    // Reopened: counted again, the same.
    drop(store);
    let store = open(dir.path());
    assert_tally_matches(&store);
    assert_eq!(store.tally().envelopes, 4);
    assert_eq!(store.pending_retractions(&target)?, vec![by]);
    let mut batch = WriteBatch::new();
    batch.clear_pending_retractions(&target);
    store.write(batch)?;
    assert!(store.pending_retractions(&target)?.is_empty());
    let mut batch = WriteBatch::new();
    batch.add_pending_retraction(&target, &by);
    store.write(batch)?;
    assert_eq!(store.pending_retractions(&target)?, vec![by]);
    // New envelopes with their plaintext attached, which the batch knows are
    // absent and counts without reading; the same envelope again in the batch
    // (a duplicate, so its plaintext is dropped); a rival at a taken seq.
    let mut batch = WriteBatch::new();
    for (seq, variant) in [(1, 0), (1, 0), (2, 0), (2, 1)] {
        batch
            .envelope(NewEnvelope {
                id: id_of(&BOB, seq, variant),
                author: BOB,
                seq,
                bytes: b"bob",
            })
            .plaintext(b"bob's".as_slice())
            .expires(9)
            .org("rail");
    }
    store.write(batch)?;
    assert_tally_matches(&store);
    assert_eq!((store.tally().envelopes, store.tally().plaintext), (6, 2));
    Ok(())
}

/// Writes `i`, `o` and `y` entries as layout 2.0 (the release before 2.1)
/// wrote them for envelope `(author, seq)`, stored with `insert`.
fn write_layout_2_0(
    store: &Store,
    author: &AuthorKey,
    seq: u64,
    org: Option<&str>,
    expires_at: Option<u64>,
) -> anyhow::Result<Id> {
    insert(store, author, seq, 50)?;
    let id = id_of(author, seq, 0);
    let kv = &store.kv;
    kv.insert(kv_key(family::ID, &[&id]), &feed_position(author, seq)[..])?;
    if let Some(org) = org {
        kv.insert(kv_key(family::ORG, &[&id]), org.as_bytes())?;
    }
    if let Some(expires_at) = expires_at {
        kv.insert(
            kv_key(family::EXPIRY, &[&expires_at.to_be_bytes(), &id]),
            &feed_position(author, seq)[..],
        )?;
    }
    Ok(id)
}

#[test]
fn scale_a_layout_2_0_store_folds_its_expiry_and_org_entries_into_the_id_index_on_open()
-> anyhow::Result<()> {
    let dir = TempDir::new()?;
    // More than one fold batch, so the loop is exercised.
    let count = BATCH_ITEMS as u64 + 10;
    let (old, unindexed) = {
        let store = open(dir.path());
        for seq in 1..=count {
            write_layout_2_0(
                &store,
                &ALICE,
                seq,
                Some("port-authority"),
                Some(1_000 + seq),
            )?;
        }
        // Stored before the expiry index existed: an organisation, no `y`.
        let unindexed = write_layout_2_0(&store, &BOB, 1, Some("rail"), None)?;
        store.flush()?;
        (store.counts().envelopes, unindexed)
    };
    let store = open(dir.path());
    assert_eq!(store.counts().envelopes, old, "nothing lost");
    assert_eq!(store.kv.scan_prefix([family::EXPIRY]).count(), 0);
    // Only the `o` entry of the envelope without an expiry is left.
    assert_eq!(store.kv.scan_prefix([family::ORG]).count(), 1);
    let first = id_of(&ALICE, 1, 0);
    assert_eq!(
        store.id_entry(&first)?,
        Some(IdEntry {
            author: ALICE,
            seq: 1,
            expires_at: Some(1_001),
            org: Some("port-authority".to_owned()),
        })
    );
    assert_eq!(store.org_of(&first)?.as_deref(), Some("port-authority"));
    assert_eq!(store.org_of(&unindexed)?.as_deref(), Some("rail"));
    assert_eq!(store.expiry_unrecorded()?, vec![unindexed]);
    let expiring = store.expiring(1_000 + count, usize::MAX, None)?;
    assert_eq!(expiring.len() as u64, count);
    assert_eq!(store.expiring(1_002, usize::MAX, None)?.len(), 2);
    // Paging by id: the second page starts after the first's last id.
    let page = store.expiring(u64::MAX - 1, 5, None)?;
    let rest = store.expiring(u64::MAX - 1, usize::MAX, Some(&page[4].1))?;
    assert_eq!(page.len() + rest.len(), count as usize);
    assert!(rest.iter().all(|e| e.1 > page[4].1));

    // The node records the missing expiry; the `o` entry is folded with it.
    let mut batch = WriteBatch::new();
    batch.record_expiry(&unindexed, 77);
    store.write(batch)?;
    assert_eq!(store.kv.scan_prefix([family::ORG]).count(), 0);
    assert_eq!(store.expiry_unrecorded()?, Vec::<Id>::new());
    assert_eq!(store.org_of(&unindexed)?.as_deref(), Some("rail"));
    assert_eq!(store.expiring(77, 10, None)?, vec![(77, unindexed, BOB, 1)]);

    // A tombstone is not expiring any more, and keeps its organisation.
    let mut batch = WriteBatch::new();
    batch.tombstone(&BOB, 1, &unindexed);
    store.write(batch)?;
    assert_eq!(store.expiring(77, 10, None)?, vec![]);
    assert_eq!(
        store.id_entry(&unindexed)?.map(|e| e.expires_at),
        Some(Some(EXPIRY_NONE))
    );
    assert_eq!(store.org_of(&unindexed)?.as_deref(), Some("rail"));
    Ok(())
}

#[test]
fn scale_a_malformed_id_entry_is_a_corrupt_error_not_a_panic() -> anyhow::Result<()> {
    let store = Store::temporary()?;
    insert(&store, &ALICE, 1, 10)?;
    let id = id_of(&ALICE, 1, 0);
    for bad in [&[0u8; 39][..], &[0u8; 44][..]] {
        store.kv.insert(kv_key(family::ID, &[&id]), bad)?;
        assert!(matches!(
            store.envelope(&id),
            Err(StoreError::Corrupt { tree: "kv/i", .. })
        ));
        assert!(store.expiring(u64::MAX - 1, 10, None).is_err());
    }
    let mut bad_org = feed_position(&ALICE, 1).to_vec();
    bad_org.extend_from_slice(&5u64.to_be_bytes());
    bad_org.extend_from_slice(&[0xff, 0xfe]);
    store.kv.insert(kv_key(family::ID, &[&id]), bad_org)?;
    assert!(store.org_of(&id).is_err());
    Ok(())
}

#[test]
fn a_tally_saved_at_a_clean_close_is_read_at_open_and_dropped_by_the_next_write()
-> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let saved_key = kv_key(family::META, &[META_TALLY]);
    {
        let store = open(dir.path());
        for seq in 1..=5 {
            insert(&store, &ALICE, seq, 40)?;
        }
        // Not counted yet: nothing to save.
        store.save_tally()?;
        assert!(!store.kv.contains_key(&saved_key)?);
        assert_eq!(store.tally().envelopes, 5);
        store.save_tally()?;
        assert!(store.kv.contains_key(&saved_key)?);
    }
    {
        // Known at open, before anything counted it.
        let store = open(dir.path());
        assert_eq!(store.lock_writer().tally.map(|t| t.envelopes), Some(5));
        assert_tally_matches(&store);
        // A write that changes nothing keeps it; the next real one drops it
        // in its own batch, then the store crashes (no clean close).
        store.write(WriteBatch::new())?;
        assert!(store.kv.contains_key(&saved_key)?);
        insert(&store, &ALICE, 6, 40)?;
        assert!(!store.kv.contains_key(&saved_key)?);
        store.flush()?;
    }
    // No stale tally after the crash: counted again, and right.
    let store = open(dir.path());
    assert_eq!(store.lock_writer().tally, None);
    assert_eq!(store.tally().envelopes, 6);
    assert_tally_matches(&store);
    // A saved value of the wrong shape is ignored, not trusted.
    store.kv.insert(&saved_key, &[1, 2, 3][..])?;
    store.flush()?;
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.lock_writer().tally, None);
    assert_tally_matches(&store);
    Ok(())
}

#[test]
fn a_checkpoint_after_a_clean_close_keeps_every_write_and_the_saved_tally() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    {
        let store = open(dir.path());
        for seq in 1..=300 {
            insert(&store, &ALICE, seq, 60)?;
        }
        assert_eq!(store.tally().envelopes, 300);
        store.save_tally()?;
    }
    Store::checkpoint(dir.path())?;
    // Twice is harmless.
    Store::checkpoint(dir.path())?;
    let store = open(dir.path());
    assert_eq!(store.lock_writer().tally.map(|t| t.envelopes), Some(300));
    assert_tally_matches(&store);
    assert_eq!(store.frontier_of(&ALICE)?, 300);
    assert_eq!(
        store.range(&ALICE, 1, 300, usize::MAX, usize::MAX)?.0.len(),
        300
    );
    Ok(())
}
