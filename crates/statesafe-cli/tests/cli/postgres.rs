//! `statesafe` with a PostgreSQL URL in place of FILE, against a real server (the
//! fixture in crates/statesafe/tests/postgres/cluster.rs).
//!
//! The multi-machine stand-in: 8 processes running `statesafe update URL '.n += 1'`
//! N times each, at the same time as 8 threads of this process doing N library
//! updates each, on the same state: the count is exact. N is 100 here
//! (`STATESAFE_PG_ROUNDS` raises it; the acceptance figure is 500).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use statesafe::Store;

#[path = "../../../statesafe/tests/postgres/cluster.rs"]
mod cluster;

use crate::common::bin;

fn statesafe(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env_remove("PGPASSWORD")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = statesafe(args);
    assert!(
        out.status.success(),
        "statesafe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn get_set_update_init_info_check_take_a_url() {
    let Some(pg) = cluster::cluster() else {
        return;
    };
    let url = pg.url("cli_basic");
    let url = url.as_str();
    ok(&["init", url, r#"{"grades": []}"#]);
    assert_eq!(ok(&["get", "--compact", url, "/grades"]), "[]\n");
    ok(&["set", url, "/grades/-", r#""math: 8.5""#]);
    ok(&["update", url, ".n = 41 | .n += 1"]);
    let got: Value = serde_json::from_str(&ok(&["get", url])).unwrap();
    assert_eq!(got, json!({"grades": ["math: 8.5"], "n": 42}));
    let info: Value = serde_json::from_str(&ok(&["--json", "info", url])).unwrap();
    assert_eq!(info["generation"], 3);
    assert_eq!(info["backups"], json!([2, 1]));
    let check: Value = serde_json::from_str(&ok(&["--json", "check", url])).unwrap();
    assert_eq!(check["ok"], true);
    // init of an existing state refuses, as for a file.
    let out = statesafe(&["init", url, "{}"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // The library sees what the CLI wrote.
    let store: Store = Store::options().open_url(url).unwrap();
    assert_eq!(store.load().unwrap().generation, 3);
}

#[test]
fn a_password_in_the_url_and_lock_are_refused_with_nothing_done() {
    let Some(pg) = cluster::cluster() else {
        return;
    };
    let url = pg.url("cli_refused");
    let with_password = url.replacen("@", ":secret@", 1);
    let out = statesafe(&["set", &with_password, "/a", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("password") && err.contains("PGPASSWORD"),
        "{err}"
    );
    assert!(!err.contains("secret"), "the password is echoed: {err}");
    let out = statesafe(&["lock", &url, "--", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not take a PostgreSQL URL"));
    let store: Store = Store::options().open_url(&url).unwrap();
    assert!(matches!(
        store.load(),
        Err(statesafe::Error::NotFound { .. })
    ));
}

#[test]
fn processes_and_threads_lose_no_update() {
    let Some(pg) = cluster::cluster() else {
        return;
    };
    let rounds: u64 = std::env::var("STATESAFE_PG_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    const WORKERS: u64 = 8;
    let url = pg.url("cli_counter");
    ok(&["init", &url, r#"{"n": 0}"#]);
    let script = format!(
        "i=0; while [ $i -lt {rounds} ]; do \"$0\" update --lock-timeout 600s \"$1\" '.n += 1' >/dev/null || exit 1; i=$((i+1)); done"
    );
    let children: Vec<_> = (0..WORKERS)
        .map(|_| {
            Command::new("sh")
                .arg("-c")
                .arg(&script)
                .arg(bin())
                .arg(&url)
                .spawn()
                .unwrap()
        })
        .collect();
    let store: Arc<Store> = Arc::new(
        Store::options()
            .lock_timeout(Duration::from_secs(600))
            .open_url(&url)
            .unwrap(),
    );
    let threads: Vec<_> = (0..WORKERS)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    store
                        .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a statesafe process failed");
    }
    let snap = store.load().unwrap();
    assert_eq!(snap.state["n"].as_u64().unwrap(), 2 * WORKERS * rounds);
    assert_eq!(snap.generation, 2 * WORKERS * rounds + 1);
}

#[test]
fn passwords_come_from_pgpassword_or_a_private_password_file() {
    let Some(pg) = cluster::cluster() else {
        return;
    };
    if !pg.ours() {
        cluster::skipped(
            "password tests: STATESAFE_PG_URL names a server whose roles the tests do not know",
        );
        return;
    }
    let (user, password) = cluster::PASSWORD_USER;
    let url = format!(
        "postgres://{user}@127.0.0.1:{}/{}?state=pw",
        pg.port,
        cluster::DATABASE
    );
    let home = tempfile::tempdir().unwrap();
    let run = |url: &str, env: &[(&str, &str)]| {
        let mut cmd = Command::new(bin());
        cmd.args(["set", url, "/a", "1"])
            .env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE")
            .env("HOME", home.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    // None given, or a wrong one: refused, and the hint says where a password goes.
    let out = run(&url, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("asks for a password") && err.contains("PGPASSWORD"),
        "{err}"
    );
    let out = run(&url, &[("PGPASSWORD", "wrong")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused the credentials") && !err.contains("wrong"),
        "{err}"
    );
    // PGPASSWORD.
    let out = run(&url, &[("PGPASSWORD", password)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ~/.pgpass, readable by its owner only; ignored when others may read it.
    let pgpass = home.path().join(".pgpass");
    let line = format!(
        "# test\n127.0.0.1:{}:{}:{user}:{password}\n",
        pg.port,
        cluster::DATABASE
    );
    std::fs::write(&pgpass, &line).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&url, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&url, &[]);
    assert!(!out.status.success(), "a world-readable ~/.pgpass was used");
    // A password file named in the URL (wildcards match).
    let named = home.path().join("named-passfile");
    std::fs::write(&named, format!("*:*:*:{user}:{password}\n")).unwrap();
    std::fs::set_permissions(&named, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_file = format!("{url}&passfile={}", named.display());
    let out = run(&with_file, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The library takes `passfile=` too; every `set` wrote the same value, so one
    // generation.
    let store: Store = Store::options().open_url(&with_file).unwrap();
    assert_eq!(
        store.load().unwrap(),
        statesafe::Snapshot {
            state: json!({"a": 1}),
            generation: 1
        }
    );
}
