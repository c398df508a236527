//! Property tests of the discovery KV state machine against a `BTreeMap`
//! model: values, Create/ModifyIndex, cas outcomes, and that blocking indexes
//! never go backwards (deletes, delete-tree and tombstone reaping included);
//! plus snapshot/restore equivalence.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use pilotfish::discovery::server::state::{Command, Outcome, Snapshot, State};
use proptest::prelude::*;

const KEYS: &[&str] = &["a", "a/b", "a/c", "a/b/d", "ab", "b", "b/x"];
const PREFIXES: &[&str] = &["", "a", "a/", "a/b", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    Set(usize, u8, u64),
    /// cas with: 0 = create-only, 1 = the key's current ModifyIndex, 2 = a wrong index
    Cas(usize, u8, u8),
    Delete(usize),
    DeleteCas(usize, bool),
    DeleteTree(usize),
    Reap(u64),
    Get(usize),
    List(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    let p = 0..PREFIXES.len();
    prop_oneof![
        4 => (k.clone(), 0u8..3, 0u64..3).prop_map(|(k, v, f)| Op::Set(k, v, f)),
        3 => (k.clone(), 0u8..3, 0u8..3).prop_map(|(k, v, c)| Op::Cas(k, v, c)),
        2 => k.clone().prop_map(Op::Delete),
        2 => (k.clone(), any::<bool>()).prop_map(|(k, right)| Op::DeleteCas(k, right)),
        1 => p.clone().prop_map(Op::DeleteTree),
        1 => (0u64..40).prop_map(Op::Reap),
        2 => k.prop_map(Op::Get),
        2 => p.prop_map(Op::List),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct ModelEntry {
    value: Vec<u8>,
    flags: u64,
    create: u64,
    modify: u64,
}

#[derive(Default)]
struct Model {
    map: BTreeMap<String, ModelEntry>,
}

impl Model {
    /// Consul's set: CreateIndex kept, an identical write is a no-op.
    fn set(&mut self, idx: u64, key: &str, value: Vec<u8>, flags: u64) {
        match self.map.get_mut(key) {
            Some(e) if e.value == value && e.flags == flags => {}
            Some(e) => {
                e.value = value;
                e.flags = flags;
                e.modify = idx;
            }
            None => {
                self.map.insert(
                    key.to_string(),
                    ModelEntry {
                        value,
                        flags,
                        create: idx,
                        modify: idx,
                    },
                );
            }
        }
    }
}

fn value(v: u8) -> Vec<u8> {
    vec![v; v as usize]
}

/// Apply one op to both the state and the model, checking the outcome.
fn step(state: &mut State, model: &mut Model, idx: &mut u64, op: &Op) -> Result<(), TestCaseError> {
    let mut write = |state: &mut State, cmd: Command| {
        *idx += 1;
        state.apply(*idx, 0, cmd)
    };
    match op {
        Op::Set(k, v, f) => {
            let key = KEYS[*k];
            let r = write(
                state,
                Command::KvSet {
                    key: key.into(),
                    value: value(*v),
                    flags: *f,
                },
            );
            prop_assert_eq!(r, Ok(Outcome::Bool(true)));
            model.set(*idx, key, value(*v), *f);
        }
        Op::Cas(k, v, c) => {
            let key = KEYS[*k];
            let current = model.map.get(key).map(|e| e.modify);
            let index = match c {
                0 => 0,
                1 => current.unwrap_or(1),
                _ => current.map_or(1_000, |m| m + 1_000),
            };
            let expect = match current {
                None => index == 0,
                Some(m) => index != 0 && index == m,
            };
            let r = write(
                state,
                Command::KvCas {
                    key: key.into(),
                    value: value(*v),
                    flags: 0,
                    index,
                },
            );
            prop_assert_eq!(r, Ok(Outcome::Bool(expect)));
            if expect {
                model.set(*idx, key, value(*v), 0);
            }
        }
        Op::Delete(k) => {
            let key = KEYS[*k];
            let r = write(state, Command::KvDelete { key: key.into() });
            prop_assert_eq!(r, Ok(Outcome::Bool(true)));
            model.map.remove(key);
        }
        Op::DeleteCas(k, right) => {
            let key = KEYS[*k];
            let current = model.map.get(key).map(|e| e.modify);
            let index = match (current, right) {
                (Some(m), true) => m,
                (Some(m), false) => m + 1_000,
                (None, _) => 7,
            };
            // Consul: an absent key + cas is `true`.
            let expect = current.is_none() || *right;
            let r = write(
                state,
                Command::KvDeleteCas {
                    key: key.into(),
                    index,
                },
            );
            prop_assert_eq!(r, Ok(Outcome::Bool(expect)));
            if expect {
                model.map.remove(key);
            }
        }
        Op::DeleteTree(p) => {
            let prefix = PREFIXES[*p];
            let r = write(
                state,
                Command::KvDeleteTree {
                    prefix: prefix.into(),
                },
            );
            prop_assert_eq!(r, Ok(Outcome::Bool(true)));
            model.map.retain(|k, _| !k.starts_with(prefix));
        }
        Op::Reap(up_to) => {
            let r = write(state, Command::ReapTombstones { up_to: *up_to });
            prop_assert_eq!(r, Ok(Outcome::Done));
        }
        Op::Get(k) => {
            let key = KEYS[*k];
            let (got, index) = state.kv_get(key);
            match (got, model.map.get(key)) {
                (None, None) => {}
                (Some(e), Some(m)) => {
                    prop_assert_eq!(&e.value, &m.value);
                    prop_assert_eq!(e.flags, m.flags);
                    prop_assert_eq!(e.create_index, m.create);
                    prop_assert_eq!(e.modify_index, m.modify);
                    prop_assert_eq!(index, m.modify, "a present key answers its ModifyIndex");
                }
                (got, want) => prop_assert!(false, "get {key}: state {got:?} model {want:?}"),
            }
        }
        Op::List(p) => {
            let prefix = PREFIXES[*p];
            let (list, _) = state.kv_list(prefix);
            let got: Vec<(String, Vec<u8>, u64)> = list
                .iter()
                .map(|e| (e.key.clone(), e.value.clone(), e.modify_index))
                .collect();
            let want: Vec<(String, Vec<u8>, u64)> = model
                .map
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, e)| (k.clone(), e.value.clone(), e.modify))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
    Ok(())
}

/// Every KV blocking index a client could be holding.
fn probes(state: &State) -> Vec<u64> {
    KEYS.iter()
        .map(|k| state.kv_key_index(k))
        .chain(PREFIXES.iter().map(|p| state.kv_prefix_index(p)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn kv_matches_model_and_indexes_never_decrease(ops in prop::collection::vec(op(), 1..80)) {
        let mut state = State::new();
        let mut model = Model::default();
        let mut idx = 0;
        let mut last = probes(&state);
        prop_assert!(last.iter().all(|i| *i >= 1), "indexes are never 0");
        for op in &ops {
            step(&mut state, &mut model, &mut idx, op)?;
            let now = probes(&state);
            for (n, (before, after)) in last.iter().zip(&now).enumerate() {
                prop_assert!(after >= before, "probe {} went backwards: {} -> {} after {:?}", n, before, after, op);
            }
            // A prefix index covers every key under it.
            for p in PREFIXES {
                for k in KEYS.iter().filter(|k| k.starts_with(p)) {
                    prop_assert!(state.kv_prefix_index(p) >= state.kv_key_index(k));
                }
            }
            last = now;
        }
        let (all, _) = state.kv_list("");
        prop_assert_eq!(all.len(), model.map.len());
    }

    #[test]
    fn snapshot_restore_is_equivalent(
        before in prop::collection::vec(op(), 0..40),
        after in prop::collection::vec(op(), 0..40),
    ) {
        let mut state = State::new();
        let mut model = Model::default();
        let mut idx = 0;
        for op in &before {
            step(&mut state, &mut model, &mut idx, op)?;
        }
        let json = serde_json::to_vec(&state.snapshot()).unwrap();
        let snapshot: Snapshot = serde_json::from_slice(&json).unwrap();
        let mut restored = State::restore(snapshot);
        prop_assert_eq!(&restored, &state);
        prop_assert_eq!(probes(&restored), probes(&state));
        // Both continue identically.
        let mut model2 = Model { map: model.map.clone() };
        let mut idx2 = idx;
        for op in &after {
            step(&mut state, &mut model, &mut idx, op)?;
            step(&mut restored, &mut model2, &mut idx2, op)?;
        }
        prop_assert_eq!(&restored, &state);
    }
}
