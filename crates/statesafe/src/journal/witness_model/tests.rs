//! The witness model's schedules: the protocol's properties, the finding, and the
//! wrong rules each caught.

use super::*;
use proptest::prelude::*;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// One step; `evict`: evictions of pages whose write-back failed among them.
fn op(evict: bool) -> impl Strategy<Value = Op> {
    let fails = prop_oneof![4 => Just(0u16), 1 => any::<u16>()];
    let next = (
        0..4usize,
        1..120usize,
        fails.clone(),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.2),
    );
    prop_oneof![
        20 => next.prop_map(|(w, l, f, p, g)| Op::Next(w, l, f, p, g)),
        1 => (0..4usize).prop_map(Op::Open),
        4 => (any::<u8>(), prop::bool::weighted(0.3)).prop_map(|(p, f)| Op::WriteBack(p, f)),
        u32::from(evict) => any::<u8>().prop_map(Op::Evict),
    ]
}

/// One random case: kernel, page size, writers, steps, power-loss choices.
fn case(evict: bool) -> impl Strategy<Value = (Kernel, usize, usize, Vec<Op>, Vec<u64>)> {
    (
        prop_oneof![Just(Kernel::V4_13), Just(Kernel::Mainline)],
        prop_oneof![Just(64usize), Just(256), Just(4096)],
        2..=4usize,
        prop::collection::vec(op(evict), 1..60),
        prop::collection::vec(prop_oneof![Just(0u64), Just(1), any::<u64>()], 1..16),
    )
}

/// Whether the random search finds a schedule that `rules` gets wrong (the
/// protocol's generator, without evictions, fixed seed, at most 2048 cases).
fn search_finds(rules: Rules) -> Option<String> {
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        ProptestConfig {
            cases: 2048,
            failure_persistence: None,
            max_shrink_iters: 0,
            ..ProptestConfig::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let result = runner.run(&case(false), |(kernel, page, writers, ops, crash)| {
        run(rules, kernel, page, writers, &ops, &crash)
            .map(|_| ())
            .map_err(TestCaseError::fail)
    });
    result.err().map(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any interleaving of 2 to 4 writers' opens, appends, flushes (pages failing
    /// at random), acknowledgements, publications and compactions with background
    /// write-back (failing too), a power loss after any step: the reader keeps
    /// every acknowledged commit and never reports damage, as long as the page
    /// cache keeps what it was given (no eviction of a page whose write-back
    /// failed: see `the_protocol_loses_a_commit_when_a_failed_page_is_evicted`).
    #[test]
    fn every_acknowledged_commit_survives_a_power_loss_at_any_step(
        (kernel, page, writers, ops, crash) in case(false),
    ) {
        let m = run(PROTOCOL, kernel, page, writers, &ops, &crash);
        prop_assert!(m.is_ok(), "{}", m.err().unwrap_or_default());
    }

    /// The same with evictions of pages whose write-back failed (reads then
    /// return their durable copy), under either fix of the protocol, and under
    /// the rule as built (the witness checked before the append).
    #[test]
    fn with_either_fix_or_as_built_evicting_failed_pages_loses_no_acknowledged_commit(
        (kernel, page, writers, ops, crash) in case(true),
        fix in prop_oneof![Just(COMPACT_ON_TORN_TAIL), Just(REREAD_BEFORE_ACK), Just(AS_BUILT)],
    ) {
        let m = run(fix, kernel, page, writers, &ops, &crash);
        prop_assert!(m.is_ok(), "{}", m.err().unwrap_or_default());
    }
}

/// A's r0 loses its first page (write-back failed; the cache still shows it) and
/// A's and B's flushes report it. A reopens (errseq tells the new descriptor
/// nothing, on either kernel) and appends r2 at 128, E_open 128. The failed page
/// is evicted: the cache now reads r0 as torn, a torn tail from 32 to 176. B
/// opens (E_open 32), zeroes that tail and appends r3 at [32, 128), over r0 and
/// r1; its flush succeeds and B publishes 128. A's flush (nothing dirty) succeeds
/// and D = 128 >= E_open 128: A acknowledges r2, whose bytes are now zeros.
const EVICTION_SCHEDULE: [Op; 16] = [
    Op::Open(A),
    Op::Append(A, 1),
    Op::Open(B),
    Op::WriteBack(0, true),
    Op::Append(B, 1),
    Op::Flush(A, 0),
    Op::Flush(B, 0),
    Op::Open(A),
    Op::Append(A, 1),
    Op::Evict(0),
    Op::Open(B),
    Op::Append(B, 47),
    Op::Flush(B, 0),
    Op::Ack(B, true),
    Op::Flush(A, 0),
    Op::Ack(A, false),
];

#[test]
fn either_fix_or_the_rule_as_built_survives_the_eviction_schedule() {
    for kernel in [Kernel::V4_13, Kernel::Mainline] {
        // As specified: A acknowledges r2 (id 2), which no reader finds.
        let why = run(PROTOCOL, kernel, 64, 2, &EVICTION_SCHEDULE, &[1]).unwrap_err();
        assert!(
            why.contains("acknowledged r2 is not in what the page cache reads"),
            "{why}"
        );
        // Fix 1: B finds the torn tail and compacts (r3 is the snapshot's), so
        // nobody publishes past 32 in the old journal and A waits, then compacts:
        // r2 is not in the cache's reading, so A reports OutcomeUnknown.
        let mut ops = EVICTION_SCHEDULE.to_vec();
        ops.push(Op::Compact(A));
        let m = run(COMPACT_ON_TORN_TAIL, kernel, 64, 2, &ops, &[1]).unwrap();
        assert_eq!((m.acked.clone(), m.snapshot.clone()), (vec![3], vec![3]));
        // Fix 2: A reads r2 back as zeros, does not acknowledge, and compacts
        // without it.
        let m = run(REREAD_BEFORE_ACK, kernel, 64, 2, &ops, &[1]).unwrap();
        assert_eq!((m.acked.clone(), m.snapshot.clone()), (vec![3], vec![3]));
        // As built: no descriptor appends before a published end reaches its
        // E_open, so B (E_open 80) does not append after the lost r0, nor A
        // (reopened at 80) after the eviction; B reopens at 32 (the cache's end
        // now), appends r1 over r0's offsets and publishes 128, which proves A's
        // descriptor: A appends r2 after r1, and both survive.
        ops.pop();
        ops.extend([
            Op::Next(A, 1, 0, true, true),
            Op::Flush(A, 0),
            Op::Ack(A, true),
        ]);
        let m = run(AS_BUILT, kernel, 64, 2, &ops, &[1]).unwrap();
        let appends: Vec<&String> = m.log.iter().filter(|l| l.contains("appends")).collect();
        assert_eq!(
            appends,
            [
                "w0 appends r0 (generation 5) at [32, 80) claiming 32",
                "w1 appends r1 (generation 5) at [32, 128) claiming 32",
                "w0 appends r2 (generation 6) at [128, 176) claiming 128",
            ]
        );
        assert_eq!((m.acked.clone(), m.snapshot.clone()), (vec![1, 2], vec![]));
    }
}

#[test]
fn acknowledging_without_the_witness_loses_a_commit_on_another_writers_lost_record() {
    // A's flush fails on every page of r0 (lost, the cache still shows it); B
    // opens after, so errseq never tells B; B appends r1 after r0 and its flush
    // succeeds (r1's pages, and r0's tail where it shares a page).
    let ops = [
        Op::Open(A),
        Op::Append(A, 60),
        Op::Flush(A, u16::MAX),
        Op::Open(B),
        Op::Append(B, 60),
        Op::Flush(B, 0),
        Op::Ack(B, true),
        Op::Compact(B),
    ];
    let wrong = Rules {
        ack_needs_witness: false,
        ..PROTOCOL
    };
    for kernel in [Kernel::V4_13, Kernel::Mainline] {
        // Acknowledged on its own flush: r1 follows a lost r0 and claims only the
        // header durable, so the reader drops it as a torn tail.
        let why = run(wrong, kernel, 64, 2, &ops, &[1]).unwrap_err();
        assert!(why.contains("acknowledged r1 lost"), "{why}");
        // The protocol: no published end reaches E_open(B) (r0's end), so B waits,
        // then compacts what the cache shows, r0 and r1, and acknowledges.
        let m = run(PROTOCOL, kernel, 64, 2, &ops, &[1]).unwrap();
        assert_eq!((m.acked.clone(), m.snapshot.clone()), (vec![1], vec![0, 1]));
    }
}

#[test]
fn zeroing_a_record_after_a_failed_flush_loses_a_later_acknowledged_commit() {
    // One page: A appends r0, B appends r1; B's flush writes both, B acknowledges
    // and publishes. C appends r2; its page's write-back fails, so A's flush fails
    // too (errseq advanced since A opened).
    let ops = [
        Op::Open(A),
        Op::Open(B),
        Op::Open(C),
        Op::Append(A, 40),
        Op::Append(B, 40),
        Op::Flush(B, 0),
        Op::Ack(B, true),
        Op::Append(C, 40),
        Op::WriteBack(0, true),
        Op::Flush(A, 0),
        Op::WriteBack(0, false),
    ];
    let wrong = Rules {
        zero_after_failed_flush: true,
        ..PROTOCOL
    };
    // A zeroes r0, and the zeros reach the disk: r1, acknowledged, now follows a
    // bad record (and r2 claims r1's end durable: damage).
    let why = run(wrong, Kernel::Mainline, 4096, 3, &ops, &[0]).unwrap_err();
    assert!(why.contains("damage"), "{why}");
    // Without r2 the loss is silent: the page, whose write-back failed, is
    // evicted (back to r0 and r1) before A zeroes r0, and r1 claims the header
    // only: a torn tail, in the page cache at once and on disk after a power loss.
    let mut silent = ops[..9].to_vec();
    silent.extend([Op::Evict(0), Op::Flush(A, 0), Op::WriteBack(0, false)]);
    let why = run(wrong, Kernel::Mainline, 4096, 3, &silent, &[0]).unwrap_err();
    assert!(why.contains("acknowledged r1 is not in what"), "{why}");
    let m = run(PROTOCOL, Kernel::Mainline, 4096, 3, &silent, &[0]).unwrap();
    assert_eq!(m.acked, vec![1]);
    // The protocol leaves r0 in the file: A's commit is OutcomeUnknown, r1 kept.
    let m = run(PROTOCOL, Kernel::Mainline, 4096, 3, &ops, &[0]).unwrap();
    assert_eq!(m.acked, vec![1]);
}

#[test]
fn claiming_ones_own_offset_durable_turns_a_torn_tail_into_damage() {
    // A appends r0 and B r1, neither flushed; the power loss keeps r1's pages but
    // not r0's first ones (their write-back fails; r1's succeeds).
    let ops = [
        Op::Open(A),
        Op::Open(B),
        Op::Append(A, 60),
        Op::Append(B, 60),
        Op::WriteBack(0, true),
        Op::WriteBack(0, true),
        Op::WriteBack(0, false),
        Op::WriteBack(0, false),
        Op::WriteBack(0, false),
    ];
    let wrong = Rules {
        claim_own_start: true,
        ..PROTOCOL
    };
    let why = run(wrong, Kernel::V4_13, 64, 2, &ops, &[0]).unwrap_err();
    assert!(why.contains("damage"), "{why}");
    // Claiming the published end (the header's): a torn tail, nothing was
    // acknowledged, nothing reported.
    let m = run(PROTOCOL, Kernel::V4_13, 64, 2, &ops, &[0]).unwrap();
    assert!(m.acked.is_empty());
}

#[test]
fn the_random_search_finds_each_wrong_rule() {
    for wrong in [
        Rules {
            ack_needs_witness: false,
            ..PROTOCOL
        },
        Rules {
            zero_after_failed_flush: true,
            ..PROTOCOL
        },
        Rules {
            claim_own_start: true,
            ..PROTOCOL
        },
    ] {
        let found = search_finds(wrong);
        assert!(found.is_some(), "{wrong:?} not caught");
    }
}
