//! A linearizability checker for a single register (Wing & Gong's search with Lowe's memoization,
//! as in Knossos/Porcupine).
//!
//! Operations are writes of a value and reads that returned a value. An operation whose outcome
//! is unknown (a write that timed out) gets a return time of "never": it may take effect at any
//! point after its call, or not at all (linearizing it after every other operation is the same
//! as it never happening, as far as any read can tell).

use std::collections::HashSet;

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Write(u64),
    /// A read that returned this value (0: the initial, never-written value).
    Read(u64),
}

/// One operation of the history. Times are nanoseconds since an arbitrary origin.
#[derive(Clone, Copy, Debug)]
pub struct Op {
    pub client: u64,
    pub kind: Kind,
    pub call: u64,
    /// `None`: the outcome is unknown.
    pub ret: Option<u64>,
}

/// Whether `history` is linearizable for a register that starts at 0.
///
/// Returns `Err` with a description of the first operation that could not be placed when it is
/// not.
pub fn check(history: &[Op]) -> Result<(), String> {
    let n = history.len();
    if n == 0 {
        return Ok(());
    }
    // Events: (time, is_return, op). Calls sort before returns at the same instant, which only
    // widens the allowed overlaps.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in history.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret.unwrap_or(u64::MAX), true, i));
    }
    events.sort_by_key(|(time, is_return, op)| (*time, *is_return, *op));

    // A doubly linked list over the events, with a head sentinel at index 0.
    let len = events.len() + 1;
    let mut next: Vec<usize> = (1..=len).collect();
    let mut prev: Vec<usize> = (0..len).map(|i| i.wrapping_sub(1)).collect();
    next[len - 1] = usize::MAX;
    // For each op, the list positions of its call and return.
    let mut call_pos = vec![0; n];
    let mut ret_pos = vec![0; n];
    for (pos, (_, is_return, op)) in events.iter().enumerate() {
        if *is_return {
            ret_pos[*op] = pos + 1;
        } else {
            call_pos[*op] = pos + 1;
        }
    }
    let node_op = |pos: usize| events[pos - 1].2;
    let node_is_return = |pos: usize| events[pos - 1].1;

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, u64)> = HashSet::new();
    let mut stack: Vec<(usize, u64)> = Vec::new();
    let mut state: u64 = 0;
    let mut entry = next[0];
    let mut deepest = 0;

    let unlink = |pos: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, q) = (prev[pos], next[pos]);
        next[p] = q;
        if q != usize::MAX {
            prev[q] = p;
        }
    };
    let relink = |pos: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, q) = (prev[pos], next[pos]);
        next[p] = pos;
        if q != usize::MAX {
            prev[q] = pos;
        }
    };

    while next[0] != usize::MAX {
        if entry == usize::MAX {
            // Cannot happen: a return is always reached before the end of the list.
            return Err("internal: ran off the end of the history".into());
        }
        if !node_is_return(entry) {
            let op = node_op(entry);
            let (ok, new_state) = match history[op].kind {
                Kind::Write(value) => (true, value),
                Kind::Read(value) => (value == state, state),
            };
            if ok {
                let mut candidate = linearized.clone();
                candidate[op / 64] |= 1 << (op % 64);
                if cache.insert((candidate.clone(), new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    linearized = candidate;
                    deepest = deepest.max(stack.len());
                    // Lift the op: remove its call and return from the list.
                    unlink(call_pos[op], &mut next, &mut prev);
                    unlink(ret_pos[op], &mut next, &mut prev);
                    entry = next[0];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // A return of an op not linearized yet: backtrack.
            let Some((call_entry, old_state)) = stack.pop() else {
                let op = &history[node_op(entry)];
                return Err(format!(
                    "not linearizable: no order explains client {}'s {:?} called at {} ns \
                     (deepest search {deepest} of {n} ops)",
                    op.client, op.kind, op.call
                ));
            };
            let op = node_op(call_entry);
            state = old_state;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(ret_pos[op], &mut next, &mut prev);
            relink(call_pos[op], &mut next, &mut prev);
            entry = next[call_entry];
        }
    }
    Ok(())
}

// === tests of the checker itself ===

fn op(kind: Kind, call: u64, ret: Option<u64>) -> Op {
    Op {
        client: 0,
        kind,
        call,
        ret,
    }
}

#[test]
fn sequential_histories() {
    use Kind::*;
    let ok = [
        op(Write(1), 0, Some(1)),
        op(Read(1), 2, Some(3)),
        op(Write(2), 4, Some(5)),
        op(Read(2), 6, Some(7)),
    ];
    assert!(check(&ok).is_ok());
    let stale = [
        op(Write(1), 0, Some(1)),
        op(Write(2), 2, Some(3)),
        op(Read(1), 4, Some(5)),
    ];
    assert!(check(&stale).is_err());
    let initial = [op(Read(0), 0, Some(1)), op(Write(1), 2, Some(3))];
    assert!(check(&initial).is_ok());
    let from_the_future = [op(Read(1), 0, Some(1)), op(Write(1), 2, Some(3))];
    assert!(check(&from_the_future).is_err());
}

#[test]
fn concurrent_histories() {
    use Kind::*;
    // A read overlapping a write may see either value.
    let either = [
        op(Write(1), 0, Some(1)),
        op(Write(2), 2, Some(10)),
        op(Read(2), 3, Some(4)),
        op(Read(2), 5, Some(6)),
    ];
    assert!(check(&either).is_ok());
    // But once a read saw the new value, a later read cannot see the old one.
    let flip_back = [
        op(Write(1), 0, Some(1)),
        op(Write(2), 2, Some(10)),
        op(Read(2), 3, Some(4)),
        op(Read(1), 5, Some(6)),
    ];
    assert!(check(&flip_back).is_err());
}

#[test]
fn unknown_outcomes() {
    use Kind::*;
    // A timed-out write may have happened, late...
    let happened = [
        op(Write(1), 0, Some(1)),
        op(Write(2), 2, None),
        op(Read(1), 3, Some(4)),
        op(Read(2), 10, Some(11)),
    ];
    assert!(check(&happened).is_ok());
    // ...or not at all.
    let never = [
        op(Write(1), 0, Some(1)),
        op(Write(2), 2, None),
        op(Read(1), 30, Some(31)),
    ];
    assert!(check(&never).is_ok());
    // But it cannot have happened before it was called.
    let early = [op(Read(2), 0, Some(1)), op(Write(2), 2, None)];
    assert!(check(&early).is_err());
    // And a lost acknowledged write is caught.
    let lost = [
        op(Write(1), 0, Some(1)),
        op(Write(2), 2, Some(3)),
        op(Read(1), 4, Some(5)),
        op(Write(3), 1, None),
    ];
    assert!(check(&lost).is_err());
}
