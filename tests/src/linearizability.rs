//! A linearizability checker for histories of one register (a depth-first search over the
//! operations that may take effect next, memoizing visited (done-set, value) states, after Wing
//! & Gong and Lowe, as Knossos and Porcupine do).
//!
//! A history is what clients saw: each operation's call and return time on one clock, and what
//! it wrote or read. A write whose outcome the client does not know (a timeout, a dropped
//! connection, a 503 that may have come after the entry was proposed) has no return time: it may
//! take effect at any moment after its call, or never. Reads that failed are left out (they
//! observed nothing). Written values must be unique, which lets [`check`] settle unknown
//! outcomes before searching.

use std::collections::HashSet;

/// What an operation did to the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Wrote this value.
    Write(u64),
    /// Read this value (`0`: the register was never written).
    Read(u64),
}

/// One operation. Times are nanoseconds since any fixed origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// Who issued it (for messages).
    pub client: u64,
    /// What it did.
    pub kind: Kind,
    /// When it was called.
    pub call: u64,
    /// When it returned; `None` when its outcome is unknown.
    pub ret: Option<u64>,
}

/// How much a history holds, for progress checks and messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Acknowledged writes.
    pub writes: usize,
    /// Writes with an unknown outcome.
    pub unknown_writes: usize,
    /// Reads.
    pub reads: usize,
    /// Reads that saw something other than the initial value.
    pub reads_of_writes: usize,
}

/// Counts the kinds of operations in `history`.
pub fn summarize(history: &[Op]) -> Summary {
    let mut summary = Summary::default();
    for op in history {
        match (op.kind, op.ret) {
            (Kind::Write(_), Some(_)) => summary.writes += 1,
            (Kind::Write(_), None) => summary.unknown_writes += 1,
            (Kind::Read(value), _) => {
                summary.reads += 1;
                if value != 0 {
                    summary.reads_of_writes += 1;
                }
            }
        }
    }
    summary
}

/// Checks that `history` is linearizable for a register that starts at `0`.
///
/// Every write must write a distinct non-zero value; that lets unknown outcomes be resolved
/// before the search: a write nobody read may as well never have happened (dropped), and a write
/// somebody read took effect before the first such read returned (that becomes its return
/// time). The search then only sees operations with known return times, which keeps it fast.
///
/// `Err` explains the operation no order could place, with the ops around it.
pub fn check(history: &[Op]) -> Result<(), String> {
    let mut written = HashSet::new();
    // The earliest return of a read of each value.
    let mut first_read: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for op in history {
        if let Some(ret) = op.ret
            && ret < op.call
        {
            return Err(format!("{op:?} returned before it was called"));
        }
        match op.kind {
            Kind::Write(0) => return Err(format!("{op:?} writes the initial value 0")),
            Kind::Write(value) if !written.insert(value) => {
                return Err(format!(
                    "value {value} is written twice; values must be unique"
                ));
            }
            Kind::Write(_) => {}
            Kind::Read(value) => {
                let ret = op.ret.unwrap_or(u64::MAX);
                let first = first_read.entry(value).or_insert(ret);
                *first = (*first).min(ret);
            }
        }
    }
    let mut ops: Vec<Op> = Vec::with_capacity(history.len());
    for op in history {
        match (op.kind, op.ret) {
            (Kind::Write(value), None) => match first_read.get(&value) {
                Some(&read) if read < op.call => {
                    return Err(format!(
                        "not linearizable: value {value} was read (returning at {read} ns) \
                         before {op:?} was called"
                    ));
                }
                Some(&read) => ops.push(Op {
                    ret: Some(read),
                    ..*op
                }),
                None => {}
            },
            _ => ops.push(*op),
        }
    }
    ops.sort_by_key(|op| (op.call, op.ret.unwrap_or(u64::MAX)));
    let search = Search::new(&ops);
    search.run()
}

/// The search state shared by every step.
struct Search<'a> {
    ops: &'a [Op],
    /// Return times, `u64::MAX` for unknown outcomes.
    ret: Vec<u64>,
    /// Ops that must be placed for the history to be explained: those that returned.
    required: usize,
}

/// One level of the depth-first search: the ops placed so far and the register's value.
#[derive(Clone)]
struct Frame {
    done: Vec<u64>,
    value: u64,
    placed_required: usize,
    /// The next candidate index to try at this level.
    next: usize,
}

// === impl Search ===

impl<'a> Search<'a> {
    fn new(ops: &'a [Op]) -> Self {
        let ret: Vec<u64> = ops.iter().map(|op| op.ret.unwrap_or(u64::MAX)).collect();
        let required = ops.iter().filter(|op| op.ret.is_some()).count();
        Self { ops, ret, required }
    }

    fn is_done(done: &[u64], i: usize) -> bool {
        done[i / 64] & (1 << (i % 64)) != 0
    }

    /// The earliest return among ops not placed yet: nothing called after it can go next.
    fn horizon(&self, done: &[u64]) -> u64 {
        (0..self.ops.len())
            .filter(|i| !Self::is_done(done, *i))
            .map(|i| self.ret[i])
            .min()
            .unwrap_or(u64::MAX)
    }

    fn run(&self) -> Result<(), String> {
        if self.required == 0 {
            return Ok(());
        }
        let words = self.ops.len().div_ceil(64);
        let mut seen: HashSet<(Vec<u64>, u64)> = HashSet::new();
        let mut stack = vec![Frame {
            done: vec![0; words],
            value: 0,
            placed_required: 0,
            next: 0,
        }];
        // The deepest point reached, for the error message.
        let mut deepest = stack[0].clone();
        while let Some(frame) = stack.last_mut() {
            let horizon = self.horizon(&frame.done);
            let mut child = None;
            while frame.next < self.ops.len() {
                let i = frame.next;
                frame.next += 1;
                let op = &self.ops[i];
                if op.call > horizon {
                    // Sorted by call: every later op is past the horizon too.
                    frame.next = self.ops.len();
                    break;
                }
                if Self::is_done(&frame.done, i) {
                    continue;
                }
                let value = match op.kind {
                    Kind::Write(value) => value,
                    Kind::Read(value) if value == frame.value => value,
                    Kind::Read(_) => continue,
                };
                let mut done = frame.done.clone();
                done[i / 64] |= 1 << (i % 64);
                if !seen.insert((done.clone(), value)) {
                    continue;
                }
                let placed_required = frame.placed_required + usize::from(op.ret.is_some());
                child = Some(Frame {
                    done,
                    value,
                    placed_required,
                    next: 0,
                });
                break;
            }
            match child {
                Some(child) if child.placed_required == self.required => return Ok(()),
                Some(child) => {
                    if child.placed_required > deepest.placed_required {
                        deepest = child.clone();
                    }
                    stack.push(child);
                }
                None => {
                    stack.pop();
                }
            }
        }
        Err(self.explain(&deepest))
    }

    /// Describes where the best attempt got stuck.
    fn explain(&self, deepest: &Frame) -> String {
        let horizon = self.horizon(&deepest.done);
        let stuck = (0..self.ops.len())
            .filter(|i| !Self::is_done(&deepest.done, *i) && self.ret[*i] == horizon)
            .map(|i| self.ops[i])
            .next();
        let pending: Vec<String> = (0..self.ops.len())
            .filter(|i| !Self::is_done(&deepest.done, *i) && self.ops[*i].call <= horizon)
            .take(12)
            .map(|i| format!("{:?}", self.ops[i]))
            .collect();
        format!(
            "not linearizable: after placing {} of {} acknowledged operations (register = {}), \
             no order explains {stuck:?}; operations that could go next:\n  {}",
            deepest.placed_required,
            self.required,
            deepest.value,
            pending.join("\n  ")
        )
    }
}

#[cfg(test)]
mod tests;
