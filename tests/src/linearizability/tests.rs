//! The checker against hand-made histories, linearizable and not.

use super::{Kind, Op, check, summarize};

use Kind::{Read, Write};

fn op(client: u64, kind: Kind, call: u64, ret: Option<u64>) -> Op {
    Op {
        client,
        kind,
        call,
        ret,
    }
}

#[test]
fn histories() {
    // (name, history, linearizable)
    let cases: Vec<(&str, Vec<Op>, bool)> = vec![
        ("empty", vec![], true),
        (
            "sequential",
            vec![
                op(1, Write(1), 0, Some(1)),
                op(1, Read(1), 2, Some(3)),
                op(2, Write(2), 4, Some(5)),
                op(2, Read(2), 6, Some(7)),
            ],
            true,
        ),
        (
            "the initial value before any write",
            vec![op(1, Read(0), 0, Some(1)), op(1, Write(1), 2, Some(3))],
            true,
        ),
        (
            "a stale read after a newer acknowledged write",
            vec![
                op(1, Write(1), 0, Some(1)),
                op(1, Write(2), 2, Some(3)),
                op(2, Read(1), 4, Some(5)),
            ],
            false,
        ),
        (
            "a read from the future",
            vec![op(1, Read(1), 0, Some(1)), op(2, Write(1), 2, Some(3))],
            false,
        ),
        (
            "a read overlapping a write sees either value",
            vec![
                op(1, Write(1), 0, Some(1)),
                op(1, Write(2), 2, Some(10)),
                op(2, Read(1), 3, Some(4)),
                op(3, Read(2), 5, Some(6)),
            ],
            true,
        ),
        (
            "once a read saw the new value, a later read cannot see the old one",
            vec![
                op(1, Write(1), 0, Some(1)),
                op(1, Write(2), 2, Some(10)),
                op(2, Read(2), 3, Some(4)),
                op(3, Read(1), 5, Some(6)),
            ],
            false,
        ),
        (
            "an unknown write may take effect late",
            vec![
                op(1, Write(1), 0, Some(1)),
                op(2, Write(2), 2, None),
                op(3, Read(1), 3, Some(4)),
                op(3, Read(2), 10, Some(11)),
            ],
            true,
        ),
        (
            "an unknown write may never take effect",
            vec![
                op(1, Write(1), 0, Some(1)),
                op(2, Write(2), 2, None),
                op(3, Read(1), 30, Some(31)),
            ],
            true,
        ),
        (
            "an unknown write cannot take effect before its call",
            vec![op(1, Read(2), 0, Some(1)), op(2, Write(2), 2, None)],
            false,
        ),
        (
            "a lost acknowledged write",
            vec![
                op(1, Write(1), 0, Some(1)),
                op(1, Write(2), 2, Some(3)),
                op(2, Read(1), 4, Some(5)),
            ],
            false,
        ),
        (
            "an unknown write cannot flip back and forth",
            vec![
                op(1, Write(1), 0, Some(1)),
                op(2, Write(2), 2, None),
                op(3, Read(2), 3, Some(4)),
                op(3, Read(1), 5, Some(6)),
            ],
            false,
        ),
        (
            "a value nobody wrote",
            vec![op(1, Write(1), 0, Some(1)), op(2, Read(5), 2, Some(3))],
            false,
        ),
        (
            "an unknown write read before it was called",
            vec![op(1, Read(3), 0, Some(1)), op(2, Write(3), 5, None)],
            false,
        ),
    ];
    for (name, history, linearizable) in cases {
        let result = check(&history);
        assert_eq!(result.is_ok(), linearizable, "{name}: {result:?}");
    }
}

#[test]
fn a_long_concurrent_history_is_checked_quickly() {
    // Five clients, 2 500 operations: a correct register's trace, with unknown outcomes.
    let mut history = Vec::new();
    let (mut value, mut current) = (0, 0);
    for step in 0..500u64 {
        let t = step * 10;
        value += 1;
        history.push(op(1, Write(value), t, Some(t + 6)));
        history.push(op(2, Read(current), t + 1, Some(t + 3)));
        history.push(op(3, Read(value), t + 5, Some(t + 7)));
        // An unknown write, observed on odd steps (it took effect between t + 7 and t + 9),
        // unobserved on even ones (it never did, or was overwritten unseen).
        let unknown = 1_000_000 + step;
        history.push(op(4, Write(unknown), t + 2, None));
        current = if step % 2 == 1 { unknown } else { value };
        history.push(op(5, Read(current), t + 8, Some(t + 9)));
    }
    let started = std::time::Instant::now();
    assert_eq!(check(&history), Ok(()));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let summary = summarize(&history);
    assert_eq!(summary.writes, 500);
    assert_eq!(summary.unknown_writes, 500);
    assert_eq!(summary.reads, 1500);
    // The same trace with one read flipped back to an older value is caught.
    let mut broken = history.clone();
    broken.push(op(6, Read(100), 3_000, Some(3_001)));
    assert!(check(&broken).is_err());
}

#[test]
fn values_must_be_unique() {
    let history = [op(1, Write(1), 0, Some(1)), op(2, Write(1), 2, Some(3))];
    let error = check(&history).unwrap_err();
    assert!(error.contains("twice"), "{error}");
}

#[test]
fn the_error_names_the_stuck_operation() {
    let history = [op(1, Write(7), 0, Some(1)), op(2, Read(9), 2, Some(3))];
    let error = check(&history).unwrap_err();
    assert!(error.contains("Read(9)"), "{error}");
}
