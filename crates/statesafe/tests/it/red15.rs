//! Red team, session 15: the holes session 14 left open, each shown by a test that
//! failed before its fix.

use std::path::Path;

use serde_json::{Value, json};
use statesafe::{Format, Settings, Store};

use crate::common::{self, sidecar};

fn create_journal(path: &Path, doc: Value) -> Store {
    let store: Store = Store::open(path).unwrap();
    let settings = Settings {
        format: Format::Journal,
        ..Settings::default()
    };
    store.create_with(&settings, doc).unwrap();
    store
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

/// review15 item 5: `accept_snapshot` with an older copy of the snapshot's journal
/// left in its place writes the copy's newest version over a base built as not valid
/// (`Base::of(&cur, false, …)`), and a commit reports an external change only for a
/// valid base (a damaged one is quarantined, not accepted): would a snapshot changed
/// outside statesafe go unreported there? It cannot get there: that path needs the
/// snapshot's record to note a journal *and* match its bytes, which a change by hand
/// (in place, or another program's file renamed over it) does not. The change is
/// refused as one beside a journal, `accept_snapshot` accepts nothing, and once the
/// journal is moved aside (as the refusal says) the change is accepted and reported.
#[test]
fn review15_a_snapshot_changed_by_hand_beside_an_older_journal_copy_is_reported() {
    for replaced in [false, true] {
        let dir = common::test_dir();
        let path = dir.path().join("state.json");
        let store = create_journal(&path, json!({"n": 0}));
        store.update(|s| s["n"] = 1.into()).unwrap();
        store.update(|s| s["kept"] = true.into()).unwrap();
        let journal = sidecar(&path).join("journal");
        let older = std::fs::read(&journal).unwrap();
        for n in 2..=3u64 {
            store.update(|s| s["n"] = n.into()).unwrap();
        }
        std::fs::write(&journal, &older).unwrap();
        assert!(fresh(&path).is_err(), "the older copy was not refused");
        let edit = b"{\"n\": 100, \"by\": \"hand\"}\n";
        if replaced {
            let other = dir.path().join("other.json");
            std::fs::write(&other, edit).unwrap();
            std::fs::rename(&other, &path).unwrap();
        } else {
            std::fs::write(&path, edit).unwrap();
        }
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&events);
        let writer: Store = Store::options()
            .on_event(move |e| sink.lock().unwrap().push(e.clone()))
            .open(&path)
            .unwrap();
        let accepted = writer.accept_snapshot();
        assert!(
            matches!(accepted, Ok(None)),
            "replaced {replaced}: accepted {accepted:?}"
        );
        let refused = writer.load();
        assert!(
            matches!(&refused, Err(statesafe::Error::Corrupt { reason, .. })
                if reason.contains("changed outside statesafe")),
            "replaced {replaced}: {refused:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), edit, "replaced {replaced}");
        // As the refusal says: move the journal aside to accept the change.
        std::fs::rename(&journal, dir.path().join("journal.aside")).unwrap();
        let loaded = writer.load().unwrap();
        assert_eq!(
            loaded.state,
            json!({"n": 100, "by": "hand"}),
            "replaced {replaced}"
        );
        writer.update(|s| s["n"] = 101.into()).unwrap();
        let seen = events.lock().unwrap().clone();
        assert!(
            seen.iter()
                .any(|e| matches!(e, statesafe::Event::ExternalChange { .. })),
            "replaced {replaced}: the change made by hand was not reported: {seen:?}"
        );
    }
}
