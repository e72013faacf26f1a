//! One set of store behaviours, run against both backends: each function takes a
//! [`Place`] (a state file in a fresh directory, or a state in the test server) and
//! the `both!` macro makes a `local::NAME` and a `pg::NAME` test of it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use statesafe::{BackupPolicy, Change, Error, Settings, Store, StoreOptions};

/// Where a test's state lives.
pub enum Place {
    File(tempfile::TempDir),
    Pg(String),
}

impl Place {
    pub fn local() -> Place {
        Place::File(tempfile::tempdir().unwrap())
    }

    pub fn pg(name: &str) -> Option<Place> {
        let cluster = crate::cluster::cluster()?;
        Some(Place::Pg(cluster.url(name)))
    }

    pub fn open_with<T: Serialize + DeserializeOwned>(&self, opts: StoreOptions<T>) -> Store<T> {
        match self {
            Place::File(dir) => opts.open(dir.path().join("state.json")).unwrap(),
            Place::Pg(url) => opts.open_url(url).unwrap(),
        }
    }

    pub fn open<T: Serialize + DeserializeOwned>(&self) -> Store<T> {
        self.open_with(Store::options().lock_timeout(Duration::from_secs(10)))
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod local {
            $( #[test] fn $name() { super::$name(&super::Place::local()) } )*
        }
        mod pg {
            $( #[test] fn $name() {
                let Some(place) = super::Place::pg(stringify!($name)) else { return };
                super::$name(&place)
            } )*
        }
    };
}

both!(
    generations_count_commits,
    a_missing_state_is_not_found,
    a_closure_error_aborts_with_nothing_written,
    a_panic_inside_update_writes_nothing_and_releases_the_lock,
    compare_and_swap_detects_conflicts,
    a_validation_rule_refuses_with_nothing_written,
    a_recorded_schema_binds_every_writer,
    a_document_over_max_bytes_is_refused,
    a_sound_version_of_the_wrong_shape_is_a_mismatch,
    backups_follow_the_retention,
    history_rebuilds_every_generation,
    restore_brings_a_backup_back_as_a_new_generation,
    check_and_info_report_a_sound_state,
    threads_lose_no_update,
    a_lock_timeout_names_the_holder,
);

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    n: u64,
}

fn generations_count_commits(place: &Place) {
    let store: Store = place.open();
    assert_eq!(store.create(json!({"n": 1})).unwrap(), 1);
    store.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(store.generation().unwrap(), 2);
    // A commit that changes nothing writes nothing.
    store.update(|_| ()).unwrap();
    assert_eq!(store.generation().unwrap(), 2);
    assert_eq!(store.replace(json!({"n": 3})).unwrap(), 3);
    let snap = store.load().unwrap();
    assert_eq!((snap.state, snap.generation), (json!({"n": 3}), 3));
    // Another handle sees the same.
    let other: Store = place.open();
    assert_eq!(other.load().unwrap().generation, 3);
}

fn a_missing_state_is_not_found(place: &Place) {
    let store: Store<Counter> = place.open();
    assert!(matches!(store.load(), Err(Error::NotFound { .. })));
    assert!(matches!(store.begin(), Err(Error::NotFound { .. })));
    assert_eq!(store.generation().unwrap(), 0);
    assert_eq!(store.load_or_default().unwrap().generation, 0);
    store.update_or_default(|c| c.n += 1).unwrap();
    assert_eq!(
        store.load().unwrap(),
        statesafe::Snapshot {
            state: Counter { n: 1 },
            generation: 1
        }
    );
}

fn a_closure_error_aborts_with_nothing_written(place: &Place) {
    let store: Store = place.open();
    store.create(json!({"balance": 10})).unwrap();
    let r: Result<(), Error> = store.try_update(|s| {
        s["balance"] = (-5).into();
        Err(Error::Invalid {
            path: "x".into(),
            message: "refused".into(),
        })
    });
    assert!(r.is_err());
    assert_eq!(store.load().unwrap().state, json!({"balance": 10}));
    assert_eq!(store.generation().unwrap(), 1);
    // The lock was released: a writer that waits not at all gets in.
    let quick: Store = place.open_with(Store::options().lock_timeout(Duration::ZERO));
    quick.update(|s| s["balance"] = 11.into()).unwrap();
    assert_eq!(store.generation().unwrap(), 2);
}

fn a_panic_inside_update_writes_nothing_and_releases_the_lock(place: &Place) {
    let store: Store = place.open();
    store.create(json!({"n": 1})).unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        store
            .update(|s| {
                s["n"] = 99.into();
                panic!("deliberate");
            })
            .unwrap();
    }));
    assert!(r.is_err());
    assert_eq!(store.load().unwrap().state, json!({"n": 1}));
    let quick: Store = place.open_with(Store::options().lock_timeout(Duration::ZERO));
    quick.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(store.load().unwrap().state, json!({"n": 2}));
}

fn compare_and_swap_detects_conflicts(place: &Place) {
    let store: Store = place.open();
    assert_eq!(store.replace_if(0, json!({"serial": 1})).unwrap(), 1);
    let read = store.load().unwrap();
    store.update(|s| s["serial"] = 2.into()).unwrap();
    match store.update_if(read.generation, |s| s["serial"] = 3.into()) {
        Err(Error::GenerationConflict {
            expected: 1,
            found: 2,
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store.replace_if(1, json!({"serial": 4})) {
        Err(Error::GenerationConflict {
            expected: 1,
            found: 2,
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        store.create(json!({})),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(store.load().unwrap().state, json!({"serial": 2}));
    assert_eq!(store.replace_if(2, json!({"serial": 5})).unwrap(), 3);
    let mut tx = store.begin().unwrap();
    assert_eq!(tx.generation(), 3);
    assert!(tx.existed());
    tx.expect_generation(3).unwrap();
    tx.state_mut()["serial"] = 6.into();
    assert_eq!(tx.commit().unwrap(), 4);
}

fn a_validation_rule_refuses_with_nothing_written(place: &Place) {
    let store: Store<Counter> = place.open_with(Store::options().validate(|c: &Counter| {
        if c.n < 10 {
            Ok(())
        } else {
            Err("n must stay below 10".into())
        }
    }));
    store.update_or_default(|c| c.n = 5).unwrap();
    let err = store.update(|c| c.n = 10).unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { message, .. } if message.contains("below 10")),
        "{err}"
    );
    assert_eq!(
        store.load().unwrap(),
        statesafe::Snapshot {
            state: Counter { n: 5 },
            generation: 1
        }
    );
}

fn a_recorded_schema_binds_every_writer(place: &Place) {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"]});
    let store: Store = place.open();
    let settings = Settings {
        schema: Some(schema),
        ..Settings::default()
    };
    assert_eq!(store.create_with(&settings, json!({"n": 1})).unwrap(), 1);
    // A writer that opens it later, knowing nothing of the schema, is bound by it.
    let later: Store = place.open();
    assert!(later.settings().schema.is_some());
    let err = later.update(|s| s["n"] = (-1).into()).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    later.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(later.load().unwrap().state, json!({"n": 2}));
}

fn a_document_over_max_bytes_is_refused(place: &Place) {
    let store: Store = place.open_with(Store::options().max_bytes(100));
    store.create(json!({"s": "small"})).unwrap();
    let err = store
        .update(|s| s["s"] = "x".repeat(200).into())
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 100, .. }), "{err}");
    assert_eq!(store.load().unwrap().state, json!({"s": "small"}));
}

fn a_sound_version_of_the_wrong_shape_is_a_mismatch(place: &Place) {
    let untyped: Store = place.open();
    untyped.create(json!({"n": "not a number"})).unwrap();
    let typed: Store<Counter> = place.open();
    let err = typed.load().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Mismatch {
                committed: true,
                generation: 1,
                ..
            }
        ),
        "{err}"
    );
    // Nothing was changed.
    assert_eq!(untyped.load().unwrap().state, json!({"n": "not a number"}));
}

/// The generations of the backups kept, newest first.
fn backup_generations(store: &Store) -> Vec<u64> {
    let list = store.backups().unwrap().backups;
    list.iter().map(|b| b.generation).collect()
}

fn backups_follow_the_retention(place: &Place) {
    let keeping = |keep: u32| -> Store {
        place.open_with(Store::options().backups(BackupPolicy {
            keep,
            hourly: 0,
            daily: 0,
        }))
    };
    let store = keeping(2);
    store.create(json!({"n": 0})).unwrap();
    for n in 1..=4 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    assert_eq!(backup_generations(&store), vec![4, 3]);
    assert_eq!(store.document_at(4).unwrap(), json!({"n": 3}));
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.backups_valid, 2);
    // Raised, then lowered below what is kept: the prune catches up in one write.
    let kept_after_a_write = |keep: u32| {
        let store = keeping(keep);
        store
            .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
            .unwrap();
        backup_generations(&store)
    };
    assert_eq!(kept_after_a_write(3), vec![5, 4, 3]);
    assert_eq!(kept_after_a_write(3), vec![6, 5, 4]);
    assert_eq!(kept_after_a_write(1), vec![7]);
    assert_eq!(kept_after_a_write(2), vec![8, 7]);
}

fn history_rebuilds_every_generation(place: &Place) {
    let store: Store = place.open_with(Store::options().backups(BackupPolicy {
        keep: 0,
        hourly: 0,
        daily: 0,
    }));
    store.create(json!({"list": []})).unwrap();
    for i in 0..5 {
        store
            .update(|s| s["list"].as_array_mut().unwrap().push(i.into()))
            .unwrap();
    }
    let history = store.history().unwrap();
    let gens: Vec<u64> = history.iter().map(|e| e.generation).collect();
    assert_eq!(gens, vec![1, 2, 3, 4, 5, 6]);
    assert!(
        history
            .iter()
            .all(|e| e.change == Change::Commit && e.writer.is_some())
    );
    for g in 1..=6u64 {
        let expected: Vec<u64> = (0..g - 1).collect();
        assert_eq!(
            store.document_at(g).unwrap(),
            json!({"list": expected}),
            "generation {g}"
        );
    }
    let patch = store.diff(2, 4).unwrap();
    assert_eq!(patch.0.len(), 2);
}

fn restore_brings_a_backup_back_as_a_new_generation(place: &Place) {
    let store: Store = place.open();
    store.create(json!({"v": "first"})).unwrap();
    store.update(|s| s["v"] = "second".into()).unwrap();
    store.update(|s| s["v"] = "third".into()).unwrap();
    assert_eq!(store.restore(1).unwrap(), 4);
    assert_eq!(store.load().unwrap().state, json!({"v": "first"}));
    let last = store.history().unwrap().pop().unwrap();
    assert_eq!(
        (last.generation, last.change),
        (4, Change::Restore { from: 1 })
    );
    assert!(matches!(
        store.restore(99),
        Err(Error::GenerationUnavailable { generation: 99, .. })
    ));
}

fn check_and_info_report_a_sound_state(place: &Place) {
    let store: Store = place.open();
    let report = store.check().unwrap();
    assert!(!report.exists);
    store.create(json!({"a": 1})).unwrap();
    store.update(|s| s["a"] = 2.into()).unwrap();
    let report = store.check().unwrap();
    assert!(
        report.exists && report.is_ok() && report.generation == 2,
        "{report:?}"
    );
    let info = store.info().unwrap();
    assert!(info.exists);
    assert_eq!(info.generation, 2);
    assert_eq!(info.backups.len(), 1);
    assert!(info.lock_holder.is_none());
    let (writer, _) = info.last_writer.expect("the last writer is recorded");
    assert_eq!(writer.pid, std::process::id());
}

fn threads_lose_no_update(place: &Place) {
    const THREADS: u64 = 8;
    const EACH: u64 = 100;
    let store: Arc<Store<Counter>> =
        Arc::new(place.open_with(Store::options().lock_timeout(Duration::from_secs(60))));
    store.create(Counter::default()).unwrap();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    store.update(|c| c.n += 1).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let snap = store.load().unwrap();
    assert_eq!(snap.state.n, THREADS * EACH);
    assert_eq!(snap.generation, THREADS * EACH + 1);
}

fn a_lock_timeout_names_the_holder(place: &Place) {
    let store: Store = place.open();
    store.create(json!({"n": 0})).unwrap();
    let held = Arc::new(Barrier::new(2));
    let done = Arc::new(Barrier::new(2));
    std::thread::scope(|scope| {
        let (h, d) = (Arc::clone(&held), Arc::clone(&done));
        let store = &store;
        scope.spawn(move || {
            let tx = store.begin().unwrap();
            h.wait();
            d.wait();
            drop(tx);
        });
        held.wait();
        let waiter: Store =
            place.open_with(Store::options().lock_timeout(Duration::from_millis(200)));
        let err = waiter.update(|s| s["n"] = 1.into()).unwrap_err();
        done.wait();
        match err {
            Error::LockTimeout {
                holder: Some(holder),
                ..
            } => {
                assert_eq!(holder.pid, std::process::id());
                assert_eq!(holder.operation, "update");
            }
            other => panic!("expected a lock timeout naming the holder, got {other:?}"),
        }
    });
    assert_eq!(store.load().unwrap().state, json!({"n": 0}));
}
