//! What only a server has: damaged rows, tables altered by hand, unreachable servers
//! and missing databases, a connection terminated mid-transaction or lost during
//! `COMMIT`, a holder killed mid-transaction.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use statesafe::{Error, Store};

use crate::cluster::{self, Cluster};

fn open(url: &str) -> Store {
    Store::options()
        .lock_timeout(Duration::from_secs(30))
        .open_url(url)
        .unwrap()
}

#[test]
fn a_row_whose_checksum_does_not_match_is_corrupt_and_nothing_is_written() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("damaged");
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    pg.client()
        .execute(
            "UPDATE statesafe SET document = '{\"n\": 666}' WHERE state = 'damaged'",
            &[],
        )
        .unwrap();
    let err = store.load().unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { reason, .. } if reason.contains("checksum")),
        "{err}"
    );
    let err = store.update(|s| s["n"] = 3.into()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let report = store.check().unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(!report.is_ok());
    // Still the damaged row: nothing was written over it.
    let row = pg
        .client()
        .query_one(
            "SELECT generation, document FROM statesafe WHERE state = 'damaged'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(row.get::<_, String>(1), "{\"n\": 666}");
    // A deliberate replace is allowed (the damaged version is not kept as a backup).
    store.replace(json!({"n": 7})).unwrap();
    assert_eq!(store.load().unwrap().state, json!({"n": 7}));
}

#[test]
fn a_table_altered_by_hand_is_refused_on_open() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url_with("altered", "table=altered");
    open(&url).create(json!({})).unwrap();
    pg.client()
        .batch_execute("ALTER TABLE altered DROP COLUMN checksum")
        .unwrap();
    let err = Store::<serde_json::Value>::options()
        .open_url(&url)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { reason, .. } if reason.contains("no column `checksum`")),
        "{err}"
    );
    assert_eq!(err.kind(), "remote");
    assert!(err.hint().unwrap().contains("docs/remote.md"));
}

#[test]
fn an_unreachable_server_and_a_missing_database_are_typed_errors_with_hints() {
    let Some(pg) = cluster::cluster() else { return };
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = Store::<serde_json::Value>::options()
        .open_url(&format!(
            "postgres://{}@127.0.0.1:{port}/x?state=a",
            pg.user
        ))
        .unwrap_err();
    assert!(matches!(&err, Error::Remote { .. }), "{err}");
    assert!(err.hint().unwrap().contains("reachable"), "{err:?}");
    let err = Store::<serde_json::Value>::options()
        .open_url(&format!(
            "postgres://{}@127.0.0.1:{}/no_such_db?state=a",
            pg.user, pg.port
        ))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { reason, .. } if reason.contains("does not exist")),
        "{err}"
    );
}

#[test]
fn a_connection_terminated_mid_transaction_leaves_the_old_version_and_the_store_recovers() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("terminated");
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    let mut tx = store.begin().unwrap();
    tx.state_mut()["n"] = 2.into();
    let killed: i64 = pg
        .client()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name LIKE 'statesafe %' AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    let err = tx.commit().unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "{err}");
    assert_eq!(store.load().unwrap().state, json!({"n": 1}));
    // The next write uses a new connection, on its own.
    store.update(|s| s["n"] = 3.into()).unwrap();
    assert_eq!(
        store.load().unwrap(),
        statesafe::Snapshot {
            state: json!({"n": 3}),
            generation: 2
        }
    );
}

/// A TCP proxy in front of the server that, once armed, cuts both connections right
/// after it forwarded a `COMMIT` (before the server's answer reaches the client).
struct CommitCutter {
    port: u16,
    armed: Arc<AtomicBool>,
}

impl CommitCutter {
    fn start(server_port: u16) -> CommitCutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&armed);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let server = TcpStream::connect(("127.0.0.1", server_port)).unwrap();
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let flag = Arc::clone(&flag);
                std::thread::spawn(move || pump(client, server, Some(flag)));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        CommitCutter { port, armed }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: Option<Arc<AtomicBool>>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        let commit = buf[..n].windows(7).any(|w| w == b"COMMIT\0");
        if commit
            && cut
                .as_ref()
                .is_some_and(|f| f.swap(false, Ordering::SeqCst))
        {
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn a_connection_lost_during_commit_is_outcome_unknown_and_the_next_read_says_which_won() {
    let Some(pg) = cluster::cluster() else { return };
    let cutter = CommitCutter::start(pg.port);
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{}?state=cut",
        pg.user,
        cutter.port,
        cluster::DATABASE
    );
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    cutter.armed.store(true, Ordering::SeqCst);
    let err = store.update(|s| s["n"] = 2.into()).unwrap_err();
    match &err {
        Error::OutcomeUnknown { generation: 2, .. } => {}
        other => panic!("expected OutcomeUnknown for generation 2, got {other:?}"),
    }
    assert!(err.to_string().contains("lost during COMMIT"), "{err}");
    // Never retried by the library; the next read says which version won, whole.
    let snap = store.load().unwrap();
    match snap.generation {
        1 => assert_eq!(snap.state, json!({"n": 1})),
        2 => assert_eq!(snap.state, json!({"n": 2})),
        g => panic!("generation {g} after one lost commit"),
    }
    store.update(|s| s["after"] = true.into()).unwrap();
    assert_eq!(store.generation().unwrap(), snap.generation + 1);
}

/// The child role of the SIGKILL test: holds the row lock and waits to be killed.
#[test]
fn child_holds_the_lock_until_killed() {
    let Ok(url) = std::env::var("STATESAFE_PG_CHILD_URL") else {
        return;
    };
    let store = open(&url);
    let tx = store.begin().unwrap();
    println!("@@held");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
    drop(tx);
}

#[test]
fn a_holder_killed_mid_transaction_frees_the_lock_at_once() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("killed");
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    let mut child = spawn_holder(pg, &url);
    let holder = store.lock_holder().expect("the child holds the lock");
    assert_eq!(holder.pid, child.id());
    assert_eq!(holder.operation, "update");
    child.kill().unwrap();
    child.wait().unwrap();
    // No lease to expire: the server ended the child's transaction when its
    // connection closed. (Without that, this would wait forever: the server's
    // idle_in_transaction_session_timeout is off.)
    let waiting: Store = Store::options()
        .lock_timeout(Duration::from_secs(600))
        .open_url(&url)
        .unwrap();
    waiting.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(store.load().unwrap().state, json!({"n": 2}));
    assert!(store.lock_holder().is_none());
}

fn spawn_holder(pg: &Cluster, url: &str) -> std::process::Child {
    let _ = pg;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "remote::child_holds_the_lock_until_killed",
            "--nocapture",
        ])
        .env("STATESAFE_PG_CHILD_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let held = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("@@held"));
    assert!(held, "the child did not take the lock");
    child
}
