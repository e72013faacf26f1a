//! Red team, session 15: the holes session 14 left open, each shown by a test that
//! failed before its fix.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use statesafe::{Format, Settings, Store};

use crate::common;

fn create_journal(path: &Path, doc: Value) -> Store {
    let store: Store = Store::open(path).unwrap();
    let settings = Settings {
        format: Format::Journal,
        ..Settings::default()
    };
    store.create_with(&settings, doc).unwrap();
    store
}

fn sidecar(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap().to_str().unwrap();
    path.with_file_name(format!(".{name}.statesafe"))
}

fn fresh(path: &Path) -> statesafe::Result<(Value, u64)> {
    let snap = Store::<Value>::open(path)?.load()?;
    Ok((snap.state, snap.generation))
}

/// The lock file's slots (`journal/durable.rs`: 64 slots of 64 bytes from offset
/// 4096; slot 0 is the shared one), each as `Some(end)` when it holds a publication.
fn slots(lock: &Path) -> Vec<Option<u64>> {
    let bytes = std::fs::read(lock).unwrap();
    let mut region = bytes.get(4096..).unwrap_or_default().to_vec();
    region.resize(64 * 64, 0);
    region
        .chunks_exact(64)
        .map(|s| {
            (&s[..8] == b"SSDURAB1").then(|| u64::from_le_bytes(s[32..40].try_into().unwrap()))
        })
        .collect()
}

/// Each store (each lock-file description) claims a slot of its own for its journal
/// publications; a process whose pid equals another's modulo 64 no longer shares one
/// (`journal::durable::tests::two_processes_whose_ids_are_equal_modulo_64_never_share_a_slot`
/// shows the interleaving that lost an end). Past the 63rd store open at once there is
/// no slot left: those stores publish in the shared slot with the writers' lock held.
/// Each round the slot-less stores and one with a slot commit at once, and a fresh
/// reader of the journal cut at the published end must serve the last acknowledged
/// generation or refuse, as in red14's test of a slot shared by threads.
#[test]
fn stores_past_the_63rd_publish_in_the_shared_slot_and_nothing_is_hidden() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let first = create_journal(&path, json!({"n": 0}));
    let lock = sidecar(&path).join("lock");
    let journal = sidecar(&path).join("journal");
    let mut stores = vec![first];
    stores.extend((1..66).map(|_| Store::<Value>::open(&path).unwrap()));
    for (i, store) in stores.iter().enumerate() {
        store.update(|d| d[format!("s{i}")] = i.into()).unwrap();
    }
    let held = slots(&lock);
    // On a network or user-space filesystem no store claims a slot.
    let claimed = stores[0].special_filesystem().is_none();
    assert!(
        held[1..].iter().all(|s| s.is_some() == claimed),
        "every slot but the shared one was claimed: {held:?}"
    );
    assert!(
        held[0].is_some(),
        "a store without a slot published in the shared one"
    );
    for round in 0..100u64 {
        std::thread::scope(|s| {
            for i in [0, 63, 64, 65] {
                let store = &stores[i];
                s.spawn(move || store.update(|d| d[format!("s{i}")] = round.into()).unwrap());
            }
        });
        let acknowledged = [0, 63, 64, 65]
            .iter()
            .map(|&i| stores[i].generation().unwrap())
            .max()
            .unwrap();
        let whole = std::fs::read(&journal).unwrap();
        let end = slots(&lock).into_iter().flatten().max().unwrap_or(0) as usize;
        if end >= whole.len() {
            continue;
        }
        let mut cut = whole.clone();
        cut[end..].fill(0);
        if cut == whole {
            continue;
        }
        std::fs::write(&journal, &cut).unwrap();
        let read = fresh(&path);
        std::fs::write(&journal, &whole).unwrap();
        if let Ok((state, generation)) = read {
            assert!(
                generation >= acknowledged,
                "round {round}: the lock file witnesses the journal only up to byte {end}; the journal cut there was served as generation {generation} ({state}), older than the acknowledged {acknowledged}"
            );
        }
    }
}
