//! `Store::begin_streaming` and `Transaction::commit_streaming` (issue #12, item 7):
//! a large document read from the file and written into the new one without its text
//! in memory gives the same files, generations, backups and history as `begin` and
//! `commit`, and every check of the normal path still holds.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Serialize, Serializer};
use serde_json::{Value, json};
use statesafe::{Error, Layout, Store};

use crate::common::{temp_files, test_dir};

/// A document of about 1.3 MiB (past the streaming threshold of 1 MiB), with
/// numbers in several forms, escapes and non-ASCII text.
fn large() -> Value {
    let items: Vec<Value> = (0..9000)
        .map(|i| {
            json!({
                "id": i,
                "name": format!("item {i} \"quoted\" é\n"),
                "price": serde_json::from_str::<Value>(&format!("{i}.50")).unwrap(),
                "big": serde_json::from_str::<Value>("18446744073709551616").unwrap(),
                "tags": ["a", "b\\c"],
                "ok": i % 2 == 0,
                "none": null,
            })
        })
        .collect();
    json!({"n": 1, "items": items})
}

/// Two stores on the same starting file, in their own directories: one used the
/// usual way, one streamed.
struct Pair {
    _dir: tempfile::TempDir,
    plain: Store,
    streamed: Store,
}

impl Pair {
    fn new(layout: Layout, doc: &Value) -> Pair {
        let dir = test_dir();
        let open = |name: &str| {
            Store::<Value>::options()
                .layout(layout)
                .open(dir.path().join(name))
                .unwrap()
        };
        let (plain, streamed) = (open("a.json"), open("b.json"));
        plain.create(doc.clone()).unwrap();
        streamed.create(doc.clone()).unwrap();
        assert!(std::fs::metadata(plain.path()).unwrap().len() > 1 << 20);
        Pair {
            _dir: dir,
            plain,
            streamed,
        }
    }

    /// Applies `f` through both; returns the two generations.
    fn update(&self, f: impl Fn(&mut Value)) -> (u64, u64) {
        let mut tx = self.plain.begin().unwrap();
        f(tx.state_mut());
        let a = tx.commit().unwrap();
        let mut tx = self
            .streamed
            .begin_streaming(None::<fn() -> Value>)
            .unwrap();
        f(tx.state_mut());
        let b = tx.commit_streaming().unwrap();
        (a, b)
    }

    fn assert_same(&self) {
        let read = |p: &Path| std::fs::read(p).unwrap();
        assert!(
            read(self.plain.path()) == read(self.streamed.path()),
            "the streamed file differs"
        );
        assert_eq!(
            self.plain.generation().unwrap(),
            self.streamed.generation().unwrap()
        );
        let history = |s: &Store| -> Vec<(u64, Option<String>, Option<String>, bool)> {
            s.history()
                .unwrap()
                .into_iter()
                .map(|e| {
                    (
                        e.generation,
                        e.patch.map(|p| serde_json::to_string(&p).unwrap()),
                        e.note,
                        e.snapshot.is_some(),
                    )
                })
                .collect()
        };
        assert_eq!(history(&self.plain), history(&self.streamed));
        let backups = |s: &Store| -> Vec<u64> {
            s.backups()
                .unwrap()
                .backups
                .iter()
                .map(|b| b.generation)
                .collect()
        };
        assert_eq!(backups(&self.plain), backups(&self.streamed));
        assert!(self.streamed.check().unwrap().is_ok());
        assert!(temp_files(self.streamed.path().parent().unwrap(), "b.json").is_empty());
    }
}

#[test]
fn a_streamed_transaction_writes_what_a_plain_one_does_in_every_layout() {
    let doc = large();
    for layout in [Layout::Compact, Layout::Pretty, Layout::Keep] {
        let pair = Pair::new(layout, &doc);
        // A change within one value (the history's patch from the bytes), a change
        // of the whole shape, no change at all, and a document shrunk below the
        // threshold and grown past it again.
        let (a, b) = pair.update(|v| v["n"] = json!(2));
        assert_eq!((a, b), (2, 2));
        pair.assert_same();
        pair.update(|v| v["items"][7]["name"] = json!("renamed ✓"));
        pair.assert_same();
        pair.update(|v| v["items"].as_array_mut().unwrap().truncate(4000));
        pair.assert_same();
        let (a, b) = pair.update(|_| {});
        assert_eq!(a, b, "an unchanged document commits nothing either way");
        pair.assert_same();
        pair.update(|v| *v = json!({"small": true}));
        pair.assert_same();
        pair.update(|v| *v = doc.clone());
        pair.assert_same();
        let history = pair.streamed.history().unwrap();
        assert!(
            history.iter().any(|e| e.patch.is_some()),
            "some commits are recorded as patches"
        );
    }
}

#[test]
fn a_version_not_committed_by_statesafe_is_read_as_begin_reads_it() {
    let doc = large();
    let pair = Pair::new(Layout::Compact, &doc);
    // Edited in place by another program: the record no longer vouches for it.
    for store in [&pair.plain, &pair.streamed] {
        let text = std::fs::read_to_string(store.path()).unwrap();
        std::fs::write(store.path(), text.replacen("\"n\":1", "\"n\":5", 1)).unwrap();
    }
    let (a, b) = pair.update(|v| v["n"] = json!(v["n"].as_u64().unwrap() + 1));
    assert_eq!((a, b), (3, 3));
    assert_eq!(pair.streamed.get().unwrap()["n"], 6);
    pair.assert_same();
    // Damaged (cut short): recovered from the backup the same way.
    for store in [&pair.plain, &pair.streamed] {
        let text = std::fs::read(store.path()).unwrap();
        std::fs::write(store.path(), &text[..text.len() / 2]).unwrap();
    }
    let (a, b) = pair.update(|v| v["n"] = json!(100));
    assert_eq!(a, b);
    pair.assert_same();
    assert_eq!(pair.streamed.get().unwrap()["n"], 100);
}

#[test]
fn a_missing_file_starts_from_init_and_a_small_one_takes_the_plain_path() {
    let dir = test_dir();
    let store: Store = Store::open(dir.path().join("s.json")).unwrap();
    let err = store.begin_streaming(None::<fn() -> Value>).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let mut tx = store.begin_streaming(Some(|| json!({"n": 0}))).unwrap();
    assert_eq!(tx.generation(), 0);
    tx.state_mut()["n"] = json!(1);
    assert_eq!(tx.commit_streaming().unwrap(), 1);
    let mut tx = store.begin_streaming(None::<fn() -> Value>).unwrap();
    tx.state_mut()["n"] = json!(2);
    assert_eq!(tx.commit_streaming().unwrap(), 2);
    assert_eq!(store.get().unwrap(), json!({"n": 2}));
}

/// A document whose text holds a lone surrogate (through a raw value).
#[derive(Serialize, serde::Deserialize)]
struct WithRaw {
    items: Vec<String>,
    raw: Box<serde_json::value::RawValue>,
}

#[test]
fn what_a_commit_refuses_is_refused_with_the_same_error_when_streamed() {
    let dir = test_dir();
    let store = Store::<WithRaw>::open(dir.path().join("r.json")).unwrap();
    let items: Vec<String> = (0..60_000).map(|i| format!("value number {i}")).collect();
    let raw = |text: &str| serde_json::value::RawValue::from_string(text.into()).unwrap();
    store
        .create(WithRaw {
            items: items.clone(),
            raw: raw("1"),
        })
        .unwrap();
    let before = std::fs::read(store.path()).unwrap();
    assert!(before.len() > 1 << 20);
    let refuse = |text: &str| -> (String, String) {
        let mut tx = store.begin().unwrap();
        tx.state_mut().raw = raw(text);
        let plain = tx.commit().unwrap_err();
        let mut tx = store.begin_streaming(None::<fn() -> WithRaw>).unwrap();
        tx.state_mut().raw = raw(text);
        let streamed = tx.commit_streaming().unwrap_err();
        (format!("{plain:?}"), format!("{streamed:?}"))
    };
    let (plain, streamed) = refuse(r#""half \ud800 of it""#);
    assert!(plain.contains("lone UTF-16 surrogate"), "{plain}");
    assert_eq!(plain, streamed);
    let mut deep = json!([]);
    for _ in 0..600 {
        deep = Value::Array(vec![deep]);
    }
    let deep = serde_json::value::to_raw_value(&deep).unwrap();
    let (plain, streamed) = refuse(deep.get());
    assert!(plain.contains("512"), "{plain}");
    assert_eq!(plain, streamed);
    assert_eq!(std::fs::read(store.path()).unwrap(), before);
    assert_eq!(store.generation().unwrap(), 1);
}

/// How many times a [`Fickle`] was serialized.
static FICKLE_CALLS: AtomicU64 = AtomicU64::new(0);

/// A document that serializes differently every time.
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct Fickle {
    items: Vec<u64>,
}

impl Serialize for Fickle {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut items = self.items.clone();
        items[0] = FICKLE_CALLS.fetch_add(1, Ordering::Relaxed);
        items.serialize(s)
    }
}

#[test]
fn a_document_that_serializes_differently_the_second_time_is_not_committed() {
    let dir = test_dir();
    let store = Store::<Fickle>::open(dir.path().join("f.json")).unwrap();
    store
        .create(Fickle {
            items: (1_000_000..1_200_000).collect(),
        })
        .unwrap();
    let before = std::fs::read(store.path()).unwrap();
    assert!(before.len() > 1 << 20);
    let tx = store.begin_streaming(None::<fn() -> Fickle>).unwrap();
    let err = tx.commit_streaming().unwrap_err();
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        matches!(err, Error::Io { .. })
            && cause
                .as_deref()
                .is_some_and(|c| c.contains("serialized differently")),
        "{err}: {cause:?}"
    );
    assert_eq!(std::fs::read(store.path()).unwrap(), before);
    assert_eq!(store.generation().unwrap(), 1);
    assert!(temp_files(dir.path(), "f.json").is_empty());
    assert_eq!(
        store.backups().unwrap().backups.len(),
        0,
        "no backup left behind"
    );
}
