//! Random sequences of operations against a simple model: content and generation after
//! every `create`, `replace`, `update`, `update_if`, `replace_if`, aborted `try_update`
//! and reopen agree with a map and a counter, and every refused operation leaves the
//! file byte-for-byte unchanged.
//!
//! Defends FAILURE_MODES.md row 3 (generations and compare-and-swap are what optimistic
//! writers rely on) and row 17's "original intact on every refusal".

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use statesafe::{Durability, Error, Store};

use crate::common;

type Doc = BTreeMap<String, i64>;

#[derive(Debug, Clone)]
enum Op {
    Create(Doc),
    Replace(Doc),
    Set(String, i64),
    /// `update_if` with the expected generation off by this much from the real one.
    SetIf(i8, String, i64),
    ReplaceIf(i8, Doc),
    Abort(String, i64),
    Reopen,
}

fn doc() -> impl Strategy<Value = Doc> {
    proptest::collection::btree_map("[a-c]", -2i64..3, 0..3)
}

fn op() -> impl Strategy<Value = Op> {
    let key = "[a-c]";
    prop_oneof![
        doc().prop_map(Op::Create),
        doc().prop_map(Op::Replace),
        (key, -2i64..3).prop_map(|(k, v)| Op::Set(k, v)),
        (-1i8..=1, key, -2i64..3).prop_map(|(o, k, v)| Op::SetIf(o, k, v)),
        (-1i8..=1, doc()).prop_map(|(o, d)| Op::ReplaceIf(o, d)),
        (key, -2i64..3).prop_map(|(k, v)| Op::Abort(k, v)),
        Just(Op::Reopen),
    ]
}

fn open(path: &std::path::Path) -> Store<Doc> {
    Store::options()
        .durability(Durability::None)
        .lock_timeout(Duration::ZERO)
        .open(path)
        .unwrap()
}

/// The expected generation after a commit of `new` over `model` (no bump if unchanged).
fn committed(model: &mut Option<(Doc, u64)>, new: Doc) {
    *model = match model.take() {
        Some((old, g)) if old == new => Some((old, g)),
        Some((_, g)) => Some((new, g + 1)),
        None => Some((new, 1)),
    };
}

fn expected_gen(model: &Option<(Doc, u64)>, offset: i8) -> u64 {
    let g = model.as_ref().map_or(0, |m| m.1);
    g.saturating_add_signed(i64::from(offset))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn operations_agree_with_a_model(ops in proptest::collection::vec(op(), 1..24)) {
        let dir = common::test_dir();
        let path = dir.path().join("state.json");
        let mut store = open(&path);
        let mut model: Option<(Doc, u64)> = None;
        for op in ops {
            let before = std::fs::read(&path).ok();
            let refused = match op.clone() {
                Op::Create(d) => match store.create(d.clone()) {
                    Ok(g) => { prop_assert!(model.is_none()); committed(&mut model, d); prop_assert_eq!(g, 1); false }
                    Err(Error::AlreadyExists { .. }) => { prop_assert!(model.is_some()); true }
                    Err(e) => panic!("{op:?}: {e:?}"),
                },
                Op::Replace(d) => {
                    let g = store.replace(d.clone()).unwrap();
                    committed(&mut model, d);
                    prop_assert_eq!(g, model.as_ref().unwrap().1);
                    false
                }
                Op::Set(k, v) => match store.update(|s| { s.insert(k.clone(), v); }) {
                    Ok(()) => {
                        let mut d = model.as_ref().unwrap().0.clone();
                        d.insert(k, v);
                        committed(&mut model, d);
                        false
                    }
                    Err(Error::NotFound { .. }) => { prop_assert!(model.is_none()); true }
                    Err(e) => panic!("{op:?}: {e:?}"),
                },
                Op::SetIf(off, k, v) => {
                    let expected = expected_gen(&model, off);
                    match store.update_if(expected, |s| { s.insert(k.clone(), v); }) {
                        Ok(()) => {
                            prop_assert_eq!(off, 0);
                            let mut d = model.as_ref().unwrap().0.clone();
                            d.insert(k, v);
                            committed(&mut model, d);
                            false
                        }
                        Err(Error::GenerationConflict { expected: e, found, .. }) => {
                            prop_assert!(off != 0 || model.is_none());
                            prop_assert_eq!(e, expected);
                            prop_assert_eq!(found, model.as_ref().map_or(0, |m| m.1));
                            true
                        }
                        Err(Error::NotFound { .. }) => { prop_assert!(model.is_none()); true }
                        Err(e) => panic!("{op:?}: {e:?}"),
                    }
                }
                Op::ReplaceIf(off, d) => {
                    let expected = expected_gen(&model, off);
                    match store.replace_if(expected, d.clone()) {
                        Ok(g) => {
                            prop_assert_eq!(expected, model.as_ref().map_or(0, |m| m.1));
                            committed(&mut model, d);
                            prop_assert_eq!(g, model.as_ref().unwrap().1);
                            false
                        }
                        Err(Error::GenerationConflict { found, .. }) => {
                            prop_assert_eq!(found, model.as_ref().map_or(0, |m| m.1));
                            prop_assert_ne!(found, expected);
                            true
                        }
                        Err(e) => panic!("{op:?}: {e:?}"),
                    }
                }
                Op::Abort(k, v) => {
                    let r: Result<(), Error> = store.try_update(|s| {
                        s.insert(k, v);
                        Err(Error::Invalid { path: path.clone(), message: "abort".into() })
                    });
                    prop_assert!(r.is_err());
                    true
                }
                Op::Reopen => {
                    store = open(&path);
                    true
                }
            };
            if refused {
                prop_assert_eq!(std::fs::read(&path).ok(), before, "{:?} changed the file", op);
            }
            match &model {
                Some((d, g)) => {
                    let snap = store.load().unwrap();
                    prop_assert_eq!(&snap.state, d, "after {:?}", op);
                    prop_assert_eq!(snap.generation, *g, "after {:?}", op);
                }
                None => {
                    let missing = matches!(store.load(), Err(Error::NotFound { .. }));
                    prop_assert!(missing, "after {:?} the file should not exist", op);
                }
            }
        }
        prop_assert!(common::temp_files(dir.path(), "state.json").is_empty());
    }
}
