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

/// The depth-first search over one sorted history.
///
/// One mutable set of placed ops is extended and undone as the search goes deeper and
/// backtracks (Wing & Gong); every step only looks at the window of ops that overlap the
/// earliest pending return, so long histories of a few concurrent clients stay linear.
struct Search<'a> {
    /// Sorted by call time.
    ops: &'a [Op],
    /// Return times, `u64::MAX` for unknown outcomes.
    ret: Vec<u64>,
    /// Ops that must be placed for the history to be explained: those that returned.
    required: usize,
}

/// What to undo when backtracking over one placed op.
struct Placed {
    op: usize,
    value_before: u64,
    base_before: usize,
    /// The highest index placed so far, this op included.
    high: usize,
}

// === impl Search ===

impl<'a> Search<'a> {
    fn new(ops: &'a [Op]) -> Self {
        let ret: Vec<u64> = ops.iter().map(ret_or_never).collect();
        let required = ops.iter().filter(|op| op.ret.is_some()).count();
        Self { ops, ret, required }
    }

    fn is_done(done: &[u64], i: usize) -> bool {
        done[i / 64] & (1 << (i % 64)) != 0
    }

    fn flip(done: &mut [u64], i: usize) {
        done[i / 64] ^= 1 << (i % 64);
    }

    /// The earliest return among ops not placed yet: nothing called after it can go next.
    /// Ops before `base` are all placed; ops are sorted by call, so the scan stops as soon as
    /// calls pass the best return found.
    fn horizon(&self, done: &[u64], base: usize) -> u64 {
        let mut best = u64::MAX;
        for i in base..self.ops.len() {
            if self.ops[i].call > best {
                break;
            }
            if !Self::is_done(done, i) {
                best = best.min(self.ret[i]);
            }
        }
        best
    }

    /// The memo key of a search state: everything before `base` is placed, so only the words
    /// from `base` to the highest placed op tell states apart.
    fn key(done: &[u64], base: usize, high: usize, value: u64) -> (usize, Vec<u64>, u64) {
        let from = base / 64;
        let to = (high / 64 + 1).max(from);
        (base, done[from..to.min(done.len())].to_vec(), value)
    }

    fn run(&self) -> Result<(), String> {
        let n = self.ops.len();
        if self.required == 0 {
            return Ok(());
        }
        let mut done = vec![0u64; n.div_ceil(64)];
        let mut seen: HashSet<(usize, Vec<u64>, u64)> = HashSet::new();
        let mut stack: Vec<Placed> = Vec::new();
        let (mut value, mut base, mut placed_required) = (0u64, 0usize, 0usize);
        // Where to look for the next candidate at the current depth.
        let mut cursor = 0usize;
        // The best attempt, for the error message: (placed, value, stuck op).
        let mut deepest: (usize, u64, Option<usize>) = (0, 0, None);
        loop {
            let horizon = self.horizon(&done, base);
            let high = stack.last().map_or(0, |p| p.high);
            let mut found = None;
            let mut i = cursor.max(base);
            while i < n && self.ops[i].call <= horizon {
                if !Self::is_done(&done, i) {
                    let next_value = match self.ops[i].kind {
                        Kind::Write(v) => Some(v),
                        Kind::Read(v) if v == value => Some(v),
                        Kind::Read(_) => None,
                    };
                    if let Some(next_value) = next_value {
                        Self::flip(&mut done, i);
                        let mut next_base = base;
                        while next_base < n && Self::is_done(&done, next_base) {
                            next_base += 1;
                        }
                        let key = Self::key(&done, next_base, high.max(i), next_value);
                        if seen.insert(key) {
                            found = Some((i, next_value, next_base));
                            break;
                        }
                        Self::flip(&mut done, i);
                    }
                }
                i += 1;
            }
            match found {
                Some((i, next_value, next_base)) => {
                    stack.push(Placed {
                        op: i,
                        value_before: value,
                        base_before: base,
                        high: high.max(i),
                    });
                    value = next_value;
                    base = next_base;
                    cursor = base;
                    if self.ops[i].ret.is_some() {
                        placed_required += 1;
                        if placed_required == self.required {
                            return Ok(());
                        }
                    }
                    if placed_required > deepest.0 {
                        deepest = (placed_required, value, None);
                    }
                }
                None => {
                    if deepest.0 == placed_required && deepest.2.is_none() {
                        // Stuck here: the op whose return closes the window.
                        deepest.2 = (base..n)
                            .find(|j| !Self::is_done(&done, *j) && self.ret[*j] == horizon);
                    }
                    let Some(undo) = stack.pop() else {
                        return Err(self.explain(deepest));
                    };
                    Self::flip(&mut done, undo.op);
                    if self.ops[undo.op].ret.is_some() {
                        placed_required -= 1;
                    }
                    value = undo.value_before;
                    base = undo.base_before;
                    cursor = undo.op + 1;
                }
            }
        }
    }

    /// Describes where the best attempt got stuck.
    fn explain(&self, (placed, value, stuck): (usize, u64, Option<usize>)) -> String {
        let stuck = stuck.map(|i| self.ops[i]);
        let around: Vec<String> = match stuck {
            Some(op) => self
                .ops
                .iter()
                .filter(|o| o.call <= op.ret.unwrap_or(u64::MAX) && ret_or_never(o) >= op.call)
                .take(12)
                .map(|o| format!("{o:?}"))
                .collect(),
            None => Vec::new(),
        };
        format!(
            "not linearizable: after placing {placed} of {} acknowledged operations (register = \
             {value}), no order explains {stuck:?}; operations overlapping it:\n  {}",
            self.required,
            around.join("\n  ")
        )
    }
}

/// An op's return time, `u64::MAX` when unknown.
fn ret_or_never(op: &Op) -> u64 {
    op.ret.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
