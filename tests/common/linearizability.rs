//! A linearizability checker for one read/write register: the Wing & Gong
//! search with Lowe's memoisation ("WGL"; G. Lowe, *Testing for
//! linearizability*, 2017; the algorithm porcupine and knossos implement).
//!
//! Why not a crate: stateright's `LinearizabilityTester` (0.31) searches by
//! plain recursion without memoisation (exponential on the concurrent
//! windows a leader kill makes, and as deep as the history is long) and
//! brings an explorer web server (tiny_http) and a dozen other crates with
//! it. A register's WGL is small enough to read here.
//!
//! A history is a set of operations, each with the time it was invoked and
//! the time it returned. An operation whose outcome is unknown (a write
//! that timed out or failed after it was sent) has no return time: it may
//! take effect at any point after its invocation, or never. The history is
//! linearizable when some total order of the operations (all completed
//! ones, and any subset of the unknown ones) (a) respects real time: if
//! `a` returned before `b` was invoked, `a` comes first; and (b) is a legal
//! sequential run of a register: every read returns the last value written
//! before it, or `None` before any write.
//!
//! The search (Lowe's "algorithm 2"): the calls and returns of all
//! operations form one list in time order (on a tie the call comes first:
//! operations that touch the same instant are treated as concurrent, the
//! lenient reading). Walking the list from its head, a call may be
//! linearized now if the register allows it; it is then lifted out of the
//! list with its return, and the walk restarts at the head. Reaching a
//! return means the operation it closes was not linearized before it
//! returned: undo the last choice (backtrack) and try the next call. The
//! search succeeds when the list is empty and fails when it must backtrack
//! past the first choice. A cache of (set of linearized operations,
//! register value) pairs already explored keeps it from exploring the
//! same configuration twice. Writes of unknown outcome are first closed
//! ([`close_unknown_writes`]): dropped when nobody read their value, else
//! given the earliest return of a read of it; both keep the verdict.
//! Values must be unique (each written once), which is what lets a read
//! name the write it saw.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// A register value: a write's unique value ID.
pub type Value = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Write(Value),
    /// What the read returned (`None`: the key did not exist).
    Read(Option<Value>),
}

/// One operation of a history; times in any monotonic unit (ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Who ran it (for the report only).
    pub client: usize,
    pub kind: Kind,
    pub invoked: u64,
    /// `None`: the outcome is unknown (only for writes).
    pub returned: Option<u64>,
}

/// Why a history is not linearizable: the operation whose return the
/// deepest search could not get past, and the operations concurrent with
/// it, for the report.
#[derive(Debug)]
pub struct Violation {
    pub stuck_on: Op,
    /// The register's value in that deepest configuration.
    pub value_then: Option<Value>,
    pub linearized_then: usize,
    /// For a read: the write of the value it returned, if any.
    pub write_read: Option<Op>,
    pub concurrent: Vec<Op>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "not linearizable: after linearizing {} operations (register = {:?}) no order \
             lets this operation take effect before it returned:\n  {:?}\nconcurrent with it:",
            self.linearized_then, self.value_then, self.stuck_on
        )?;
        if let Some(w) = &self.write_read {
            writeln!(f, "  (it read the value of {w:?})")?;
        }
        for op in &self.concurrent {
            writeln!(f, "  {op:?}")?;
        }
        Ok(())
    }
}

/// Give every write of unknown outcome a return time, or drop it, without
/// changing the verdict (values are unique, so a read of `v` names its
/// write):
///
/// - a write whose value no read returned can always be linearized last
///   (or never), where it changes nothing: drop it;
/// - a write whose value was read must be linearized before every read of
///   it, so before the earliest return of one: that is its return time.
///
/// Left at infinity, each unknown write stays pending to the end of the
/// history, and the search has to consider every subset of the pending
/// ones at every step (hours instead of milliseconds on a failing history).
pub fn close_unknown_writes(ops: &[Op]) -> Vec<Op> {
    let mut first_read_return: HashMap<Value, u64> = HashMap::new();
    for o in ops {
        if let (Kind::Read(Some(v)), Some(r)) = (o.kind, o.returned) {
            let at = first_read_return.entry(v).or_insert(r);
            *at = (*at).min(r);
        }
    }
    ops.iter()
        .filter_map(|o| match (o.kind, o.returned) {
            (Kind::Write(v), None) => first_read_return.get(&v).map(|&r| Op {
                // A read that returned before the write was invoked leaves
                // an empty interval: keep it so the search rejects it.
                returned: Some(r.max(o.invoked)),
                ..o.clone()
            }),
            _ => Some(o.clone()),
        })
        .collect()
}

/// One call or return in the event list (a doubly linked list over a Vec;
/// index 0 is the head sentinel).
#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    call: bool,
    /// For a call: its return's index.
    matching: usize,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

/// Check that `ops` is linearizable for a register that starts empty.
pub fn check(ops: &[Op]) -> Result<(), Violation> {
    for o in ops {
        assert!(
            o.returned.is_none_or(|r| r >= o.invoked),
            "an operation returned before it was invoked: {o:?}"
        );
        assert!(
            o.returned.is_some() || matches!(o.kind, Kind::Write(_)),
            "only writes can have an unknown outcome: {o:?}"
        );
    }
    let mut written = HashSet::new();
    for o in ops {
        if let Kind::Write(v) = o.kind {
            assert!(written.insert(v), "value {v} is written twice");
        }
    }
    let ops = &close_unknown_writes(ops)[..];
    // Events in time order; calls before returns on a tie.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, o) in ops.iter().enumerate() {
        events.push((o.invoked, 0, i));
        events.push((o.returned.expect("closed above"), 1, i));
    }
    events.sort_unstable();
    let mut list: Vec<Entry> = Vec::with_capacity(events.len() + 1);
    list.push(Entry {
        op: NIL,
        call: false,
        matching: NIL,
        prev: NIL,
        next: NIL,
    });
    let mut call_at = vec![NIL; ops.len()];
    for (n, &(_, kind, op)) in events.iter().enumerate() {
        let at = n + 1;
        list.push(Entry {
            op,
            call: kind == 0,
            matching: NIL,
            prev: at - 1,
            next: if n + 1 < events.len() { at + 1 } else { NIL },
        });
        if kind == 0 {
            call_at[op] = at;
        } else {
            list[call_at[op]].matching = at;
        }
    }
    if list.len() > 1 {
        list[0].next = 1;
    }

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<Value>)> = HashSet::new();
    // (call entry, register value before it) for every choice made.
    let mut choices: Vec<(usize, Option<Value>)> = Vec::new();
    let mut value: Option<Value> = None;
    let mut deepest: Option<(usize, usize, Option<Value>)> = None;
    let mut at = list[0].next;
    while list[0].next != NIL {
        let e = list[at];
        if e.call {
            let next_value = match ops[e.op].kind {
                Kind::Write(v) => Some(Some(v)),
                Kind::Read(r) => (r == value).then_some(value),
            };
            if let Some(next_value) = next_value {
                let mut with = linearized.clone();
                with[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((with.clone(), next_value)) {
                    choices.push((at, value));
                    value = next_value;
                    linearized = with;
                    lift(&mut list, at);
                    at = list[0].next;
                    continue;
                }
            }
            at = e.next;
        } else {
            // A return whose call was not linearized: backtrack.
            if deepest.is_none_or(|(depth, _, _)| choices.len() > depth) {
                deepest = Some((choices.len(), e.op, value));
            }
            let Some((call, before)) = choices.pop() else {
                let (depth, op, value_then) = deepest.expect("set just above");
                return Err(violation(ops, op, value_then, depth));
            };
            let op = list[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            value = before;
            unlift(&mut list, call);
            at = list[call].next;
        }
    }
    Ok(())
}

/// Take a call and its return out of the list.
fn lift(list: &mut [Entry], call: usize) {
    for at in [call, list[call].matching] {
        let Entry { prev, next, .. } = list[at];
        list[prev].next = next;
        if next != NIL {
            list[next].prev = prev;
        }
    }
}

/// Put them back (the reverse of [`lift`]).
fn unlift(list: &mut [Entry], call: usize) {
    for at in [list[call].matching, call] {
        let Entry { prev, next, .. } = list[at];
        list[prev].next = at;
        if next != NIL {
            list[next].prev = at;
        }
    }
}

fn violation(ops: &[Op], stuck: usize, value_then: Option<Value>, depth: usize) -> Violation {
    let me = &ops[stuck];
    let end = me.returned.unwrap_or(u64::MAX);
    let mut concurrent: Vec<Op> = ops
        .iter()
        .enumerate()
        .filter(|(i, o)| {
            *i != stuck && o.invoked <= end && o.returned.unwrap_or(u64::MAX) >= me.invoked
        })
        .map(|(_, o)| o.clone())
        .collect();
    concurrent.sort_by_key(|o| o.invoked);
    concurrent.truncate(40);
    let write_read = match me.kind {
        Kind::Read(Some(v)) => ops.iter().find(|o| o.kind == Kind::Write(v)).cloned(),
        _ => None,
    };
    Violation {
        stuck_on: me.clone(),
        value_then,
        linearized_then: depth,
        write_read,
        concurrent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(client: usize, v: Value, invoked: u64, returned: u64) -> Op {
        Op {
            client,
            kind: Kind::Write(v),
            invoked,
            returned: Some(returned),
        }
    }

    fn w_unknown(client: usize, v: Value, invoked: u64) -> Op {
        Op {
            client,
            kind: Kind::Write(v),
            invoked,
            returned: None,
        }
    }

    fn r(client: usize, v: Option<Value>, invoked: u64, returned: u64) -> Op {
        Op {
            client,
            kind: Kind::Read(v),
            invoked,
            returned: Some(returned),
        }
    }

    #[test]
    fn accepts_overlapping_writes_and_reads_that_fit_an_order() {
        // w1 and w2 overlap; r(2) then r(1) is fine only if w2 < r(2) < w1 < r(1).
        let h = [
            w(0, 1, 0, 10),
            w(1, 2, 0, 10),
            r(2, Some(2), 1, 4),
            r(3, Some(1), 5, 12),
            r(2, Some(1), 13, 14),
        ];
        check(&h).expect("linearizable");
        assert!(check(&[]).is_ok());
        assert!(check(&[r(0, None, 0, 1)]).is_ok());
    }

    #[test]
    fn rejects_a_read_of_an_overwritten_value() {
        // w1 returned, then w2 returned, then a read sees 1: a lost write.
        let h = [w(0, 1, 0, 1), w(0, 2, 2, 3), r(1, Some(1), 4, 5)];
        let e = check(&h).expect_err("stale read");
        assert_eq!(e.stuck_on, h[2]);
        assert_eq!(e.write_read, Some(h[0].clone()));
        assert!(e.to_string().contains("not linearizable"), "{e}");
    }

    #[test]
    fn rejects_a_read_of_nothing_after_an_acknowledged_write() {
        let h = [w(0, 1, 0, 1), r(1, None, 2, 3)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn rejects_two_reads_that_go_back_in_time() {
        // While w1 is in flight a read sees 1, and a later read sees nothing.
        let h = [w(0, 1, 0, 100), r(1, Some(1), 10, 20), r(2, None, 30, 40)];
        assert!(check(&h).is_err());
        // Overlapping reads may see it in either order.
        let h = [w(0, 1, 0, 100), r(1, Some(1), 10, 40), r(2, None, 30, 50)];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        // Never: nothing reads it.
        let h = [w_unknown(0, 1, 0), r(1, None, 10, 11)];
        assert!(check(&h).is_ok());
        // Late: first unseen, then seen, long after its invocation.
        let h = [
            w_unknown(0, 1, 0),
            r(1, None, 10, 11),
            r(1, Some(1), 20, 21),
        ];
        assert!(check(&h).is_ok());
        // But once seen it cannot be unseen.
        let h = [
            w_unknown(0, 1, 0),
            r(1, Some(1), 10, 11),
            r(1, None, 20, 21),
        ];
        assert!(check(&h).is_err());
        // And it cannot take effect before it was invoked.
        let h = [r(1, Some(1), 0, 1), w_unknown(0, 1, 5)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn unknown_writes_close_at_their_first_read_or_go() {
        let h = vec![
            w_unknown(0, 1, 0),
            w_unknown(0, 2, 0),
            w(0, 3, 0, 1),
            r(1, Some(2), 10, 11),
            r(2, Some(2), 5, 20),
        ];
        let closed = close_unknown_writes(&h);
        let mut w2 = h[1].clone();
        w2.returned = Some(11);
        assert_eq!(closed, vec![w2, h[2].clone(), h[3].clone(), h[4].clone()]);
    }

    #[test]
    #[should_panic(expected = "written twice")]
    fn values_must_be_unique() {
        let _ = check(&[w(0, 1, 0, 1), w(0, 1, 2, 3)]);
    }

    /// A sequential run of a real register, spread into random overlapping
    /// intervals around each operation's instant, is always linearizable;
    /// moving one read's result to an older value across a real-time gap
    /// makes it non-linearizable.
    #[test]
    fn random_histories_of_a_real_register_pass_and_a_stale_read_fails() {
        for seed in 0..50u64 {
            let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut next = |m: u64| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (rng >> 33) % m
            };
            let mut value = None;
            let mut ops = Vec::new();
            let mut v = 0;
            // Linearization points 100 apart; intervals up to 250 wide
            // around them, so neighbours overlap.
            for i in 0..300u64 {
                let point = 1_000 + i * 100;
                let invoked = point - next(120);
                let returned = point + next(120);
                let client = usize::try_from(next(4)).expect("small");
                if next(2) == 0 {
                    v += 1;
                    value = Some(v);
                    if next(10) == 0 {
                        ops.push(w_unknown(client, v, invoked));
                    } else {
                        ops.push(w(client, v, invoked, returned));
                    }
                } else {
                    ops.push(r(client, value, invoked, returned));
                }
            }
            check(&ops).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            // A read after the end that sees the first value written.
            let first = ops.iter().find_map(|o| match o.kind {
                Kind::Write(v) => Some(v),
                Kind::Read(_) => None,
            });
            let last_written = ops.iter().rev().find_map(|o| match o.kind {
                Kind::Write(v) => Some(v),
                Kind::Read(_) => None,
            });
            if first != last_written {
                let mut bad = ops.clone();
                bad.push(r(9, first, 100_000, 100_001));
                assert!(check(&bad).is_err(), "seed {seed}: a stale read passed");
            }
        }
    }
}
