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

/// The test server (`None`: there is none, and `cluster()` said so) and the URL of
/// `state`, created by `statesafe init URL init...`.
fn initialized(state: &str, init: &[&str]) -> Option<(&'static cluster::Cluster, String)> {
    let pg = cluster::cluster()?;
    let url = pg.url(state);
    ok(&[&["init", url.as_str()][..], init].concat());
    Some((pg, url))
}

/// The number the environment variable `name` holds, or `default`.
fn from_env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The JSON error of a run of `args` (with `--json`) that must fail.
fn failed(args: &[&str]) -> Value {
    let out = statesafe(args);
    assert!(!out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stderr).unwrap()
}

/// The document the quarantine table keeps for `state` (one row).
fn quarantined(pg: &cluster::Cluster, state: &str) -> String {
    pg.client()
        .query_one(
            "SELECT document FROM statesafe_quarantine WHERE state = $1",
            &[&state],
        )
        .unwrap()
        .get(0)
}

/// `name` in `dir`, as text.
fn path_in(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_str().unwrap().to_owned()
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
    let Some((_pg, url)) = initialized("cli_basic", &[r#"{"grades": []}"#]) else {
        return;
    };
    let url = url.as_str();
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

fn ok_with_stdin(args: &[&str], input: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("PGPASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "statesafe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn backup_generations(url: &str) -> Vec<u64> {
    let backups = json_of(&ok(&["--json", "backups", url]));
    backups["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["generation"].as_u64().unwrap())
        .collect()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The verbs the first test leaves out, each on a URL: `del`, `write` (stdin),
/// `exec`, `backups`, `log`, `diff`, `restore` and `settings`, with the outputs a
/// file gives (docs/cli.md).
#[test]
fn del_write_exec_backups_log_diff_restore_settings_take_a_url() {
    let Some((_pg, url)) = initialized("cli_verbs", &[r#"{"a": 1, "b": 2}"#]) else {
        return;
    };
    let url = url.as_str();
    ok(&["del", url, "/b"]);
    assert_eq!(json_of(&ok(&["get", url])), json!({"a": 1}));
    ok_with_stdin(
        &["write", url],
        r#"{"a": 5, "c": [1], "big": 18446744073709551616}"#,
    );
    // exec: the command gets the document on stdin and its environment names the state.
    ok(&[
        "exec",
        url,
        "--",
        "sh",
        "-c",
        // Python's integers keep every digit (jq 1.6 would turn the big one into a double).
        r#"test "$STATESAFE_GENERATION" = 3 && python3 -c 'import json,sys; d=json.load(sys.stdin); d["a"]+=1; print(json.dumps(d, separators=(",", ":")))'"#,
    ]);
    let got = ok(&["get", "--compact", url]);
    assert_eq!(got, "{\"a\":6,\"c\":[1],\"big\":18446744073709551616}\n");

    assert_eq!(backup_generations(url), [3, 2, 1]);

    let log = json_of(&ok(&["--json", "log", url, "-n", "2"]));
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["generation"], 4);
    assert_eq!(entries[1]["generation"], 3);
    assert_eq!(entries[0]["change"], "commit");
    assert!(
        entries[0]["writer"]["command"]
            .as_str()
            .unwrap()
            .contains("exec"),
        "{log}"
    );

    let diff = ok(&["diff", url, "1", "4"]);
    let mut ops: Vec<Value> = diff.lines().map(json_of).collect();
    ops.sort_by_key(|op| op["path"].as_str().unwrap().to_owned());
    let expected: Vec<Value> = [
        r#"{"op": "replace", "path": "/a", "value": 6}"#,
        r#"{"op": "remove", "path": "/b"}"#,
        r#"{"op": "add", "path": "/big", "value": 18446744073709551616}"#,
        r#"{"op": "add", "path": "/c", "value": [1]}"#,
    ]
    .into_iter()
    .map(json_of)
    .collect();
    assert_eq!(ops, expected);
    // The big number keeps its digits in the diff's text.
    assert!(diff.contains("18446744073709551616"), "{diff}");

    let restored = json_of(&ok(&["--json", "restore", url, "--generation", "1"]));
    assert_eq!(restored["generation"], 5);
    assert_eq!(restored["restored_from"], 1);
    assert_eq!(json_of(&ok(&["get", url])), json!({"a": 1, "b": 2}));
    let log = json_of(&ok(&["--json", "log", url, "-n", "1"]));
    assert_eq!(log["entries"][0]["change"], json!({"restore": {"from": 1}}));

    let settings = json_of(&ok(&["--json", "settings", url, "--keep-backups", "2"]));
    assert_eq!(settings["changed"], true);
    assert_eq!(settings["settings"]["backups"]["keep"], 2);
    // The setting binds the next write: after it, two backups are left.
    ok(&["set", url, "/a", "7"]);
    assert_eq!(backup_generations(url), [5, 4]);
    let settings = json_of(&ok(&["--json", "settings", url]));
    assert_eq!(settings["changed"], false);
    assert_eq!(settings["settings"]["backups"]["keep"], 2);
}

#[test]
fn a_password_in_the_url_is_refused_with_nothing_done() {
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
    // `lock` of a state that does not exist is refused, as for a file.
    let out = statesafe(&["lock", &url, "--", "true"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
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
    let rounds: u64 = from_env("STATESAFE_PG_ROUNDS", 100);
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
    cluster::increment_n(WORKERS, rounds, || Arc::clone(&store));
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

fn wait_for(path: &std::path::Path) {
    let start = std::time::Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `statesafe lock URL -- CMD`: CMD's own `statesafe` writers on the state go through
/// (here 20 of them, and a nested `lock`-free `update`), while another process's
/// writer waits (it times out naming the holder, and a writer with a long timeout
/// gets in only after CMD ended, on top of CMD's writes); CMD's status is `lock`'s.
#[test]
fn lock_lets_the_commands_own_writers_through_and_holds_off_others() {
    let Some((_pg, url)) = initialized("cli_lock", &[r#"{"n": 0, "log": []}"#]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ready, release) = (dir.path().join("ready"), dir.path().join("release"));
    let script = format!(
        "i=0; while [ $i -lt 20 ]; do \"$0\" update --lock-timeout 5s \"$1\" '.n += 1' >/dev/null || exit 9; i=$((i+1)); done; \
         touch {ready}; while [ ! -e {release} ]; do sleep 0.02; done; \
         \"$0\" update --lock-timeout 5s \"$1\" '.log += [\"cmd\"]' >/dev/null || exit 9; exit 7",
        ready = ready.display(),
        release = release.display()
    );
    let mut holder = Command::new(bin())
        .args(["lock", &url, "--timeout", "10s", "--", "sh", "-c", &script])
        .arg(bin())
        .arg(&url)
        .env_remove("STATESAFE_PG_LOCKS")
        .spawn()
        .unwrap();
    wait_for(&ready);
    // Another process: refused at its timeout, naming the holder; nothing written.
    let out = statesafe(&[
        "--json",
        "update",
        "--lock-timeout",
        "300ms",
        &url,
        ".n = -1",
    ]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["kind"], "lock_timeout");
    assert_eq!(err["holder"]["operation"], "lock", "{err}");
    assert_eq!(err["holder"]["pid"], holder.id(), "{err}");
    // Reads never wait.
    assert_eq!(ok(&["get", &url, "/n"]), "20\n");
    // A waiting writer in another process gets in after CMD, on top of its writes.
    let waiter = Command::new(bin())
        .args([
            "update",
            "--lock-timeout",
            "60s",
            &url,
            ".log += [\"waiter\"]",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&release, "").unwrap();
    assert_eq!(holder.wait().unwrap().code(), Some(7));
    assert!(waiter.wait_with_output().unwrap().status.success());
    let got: Value = serde_json::from_str(&ok(&["get", &url])).unwrap();
    assert_eq!(got, json!({"n": 20, "log": ["cmd", "waiter"]}));
    let info: Value = serde_json::from_str(&ok(&["--json", "info", &url])).unwrap();
    assert_eq!(info["generation"], 23);
}

/// `statesafe recover URL` on a row damaged by hand: with `--recovery fail` a read is
/// a typed error naming the state and the next step; `recover` quarantines the row
/// (kept in `statesafe_quarantine`) and restores the newest valid backup; reads work.
#[test]
fn recover_takes_a_url_and_repairs_a_damaged_row() {
    let Some((pg, url)) = initialized("cli_recover", &[r#"{"n": 1}"#, "--recovery", "fail"]) else {
        return;
    };
    ok(&["set", &url, "/n", "2"]);
    let out = statesafe(&["--json", "recover", &url]);
    assert!(out.status.success(), "{out:?}");
    let sound: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sound["recovered"], false, "{sound}");
    pg.client()
        .execute(
            "UPDATE statesafe SET document = '{\"n\": 666}' WHERE state = 'cli_recover'",
            &[],
        )
        .unwrap();
    let err = failed(&["--json", "get", &url]);
    assert_eq!(err["kind"], "corrupt", "{err}");
    let message = err.to_string();
    assert!(
        message.contains("state=cli_recover") && message.contains("statesafe recover URL"),
        "{message}"
    );
    let out = statesafe(&["--json", "recover", &url]);
    assert!(out.status.success(), "{out:?}");
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&done["recovered"], &done["generation"]),
        (&json!(true), &json!(3)),
        "{done}"
    );
    // The acknowledged generation 2, rebuilt from backup 1 by its history entry.
    assert_eq!(ok(&["get", &url, "/n"]), "2\n");
    assert_eq!(quarantined(pg, "cli_recover"), "{\"n\": 666}");
}

/// `statesafe write URL` (stdin) and `statesafe restore URL` over a row damaged by
/// hand: the damaged row is moved into the quarantine table, and a warning on stderr
/// names where (`URL#quarantine=ID`), as for a file: never replaced silently.
#[test]
fn write_and_restore_over_a_damaged_row_say_where_it_was_kept() {
    use std::io::Write as _;
    let Some((pg, url)) = initialized(
        "cli_replace_damaged",
        &[r#"{"n": 1}"#, "--recovery", "fail"],
    ) else {
        return;
    };
    ok(&["set", &url, "/n", "2"]);
    let damage = || {
        pg.client()
            .execute(
                "UPDATE statesafe SET document = '{\"n\": 666}' WHERE state = 'cli_replace_damaged'",
                &[],
            )
            .unwrap()
    };
    let ids = || -> Vec<i64> {
        pg.client()
            .query(
                "SELECT id FROM statesafe_quarantine WHERE state = 'cli_replace_damaged' ORDER BY id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    damage();
    let mut child = Command::new(bin())
        .args(["write", &url])
        .env_remove("PGPASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"n": 7}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kept = ids();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        stderr.contains("warning") && stderr.contains(&format!("{url}#quarantine={}", kept[0])),
        "{stderr}"
    );
    assert_eq!(quarantined(pg, "cli_replace_damaged"), "{\"n\": 666}");
    assert_eq!(ok(&["get", &url, "/n"]), "7\n");
    // restore, with --json: the warning is a JSON line naming the kind.
    damage();
    let out = statesafe(&["--json", "restore", &url, "--generation", "1"]);
    assert!(out.status.success(), "{out:?}");
    let warning: Value = serde_json::from_slice(&out.stderr).unwrap();
    let kept = ids();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(warning["warning"], "quarantined", "{warning}");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{url}#quarantine={}", kept[1])),
        "{warning}"
    );
    assert_eq!(ok(&["get", &url, "/n"]), "1\n");
}

/// Damaged recorded settings (a hand edit of the `settings` column): every command
/// refuses the state with a hint naming `statesafe recover URL`, which works: the
/// settings are moved into the quarantine table as they were (said on stdout), the
/// state goes on with the default settings, and reads work again (red12).
#[test]
fn recover_moves_damaged_settings_aside_as_the_hint_says() {
    let Some((pg, url)) = initialized("cli_bad_settings", &[r#"{"n": 1}"#, "--keep-backups", "3"])
    else {
        return;
    };
    pg.client()
        .execute(
            "UPDATE statesafe SET settings = '{\"backups\": 7}' WHERE state = 'cli_bad_settings'",
            &[],
        )
        .unwrap();
    let err = failed(&["--json", "get", &url]);
    assert_eq!(err["kind"], "corrupt", "{err}");
    let hint = err["hint"].as_str().unwrap_or_default();
    assert!(hint.contains(&format!("statesafe recover {url}")), "{err}");
    let text = ok(&["recover", &url]);
    assert!(
        text.contains("settings") && text.contains("#quarantine="),
        "{text}"
    );
    assert_eq!(ok(&["get", &url, "/n"]), "1\n");
    assert_eq!(quarantined(pg, "cli_bad_settings"), "{\"backups\": 7}");
    // Sound now: nothing more is moved.
    let again: Value = serde_json::from_str(&ok(&["--json", "recover", &url])).unwrap();
    assert_eq!(again["settings_quarantined"], Value::Null, "{again}");
}

/// A `lock` nested inside a `lock` on the same URL passes through, as the outer
/// one's own writers do (it used to wait for the outer one until its timeout):
/// the innermost CMD's writer gets in, and once both end the state is free again.
#[test]
fn a_lock_nested_in_a_lock_on_the_same_url_passes_through() {
    let Some((_pg, url)) = initialized("cli_lock_nested", &[r#"{"n": 0}"#]) else {
        return;
    };
    let out = Command::new(bin())
        .args(["lock", &url, "--timeout", "2s", "--"])
        .arg(bin())
        .args(["lock", &url, "--timeout", "2s", "--"])
        .arg(bin())
        .args(["update", "--lock-timeout", "2s", &url, ".n += 1"])
        .env_remove("STATESAFE_PG_LOCKS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the nested lock did not pass: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok(&["get", &url, "/n"]), "1\n");
    // Nothing is left held: another process's writer gets in at once.
    ok(&["update", "--lock-timeout", "0", &url, ".n += 1"]);
    assert_eq!(ok(&["get", &url, "/n"]), "2\n");
}

/// The holder SIGKILLed while CMD runs: the server ends its transaction when its
/// connection closes, so the lock is freed without any lease to expire: a waiting
/// writer gets in.
#[test]
fn lock_holder_killed_frees_the_lock() {
    let Some((_pg, url)) = initialized("cli_lock_killed", &[r#"{"n": 0}"#]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ready, pid) = (dir.path().join("ready"), dir.path().join("pid"));
    let mut holder = Command::new(bin())
        .args(["lock", &url, "--", "sh", "-c"])
        .arg(format!(
            "echo $$ > {}; touch {}; exec sleep 600",
            pid.display(),
            ready.display()
        ))
        .spawn()
        .unwrap();
    wait_for(&ready);
    let out = statesafe(&["update", "--lock-timeout", "0", &url, ".n += 1"]);
    assert_eq!(out.status.code(), Some(5), "held: {out:?}");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = statesafe(&["update", "--lock-timeout", "60s", &url, ".n += 1"]);
    assert!(out.status.success(), "the lock was not freed: {out:?}");
    assert_eq!(ok(&["get", &url, "/n"]), "1\n");
    // CMD (the `sleep`) outlives the killed holder; end it.
    let orphan = std::fs::read_to_string(&pid).unwrap();
    let _ = Command::new("kill").arg(orphan.trim()).status();
}

/// The versions a state can rebuild, oldest first (its history), ending with the
/// current one.
fn versions(location: &str) -> Vec<Value> {
    let store: Store = if statesafe::postgres::is_url(location) {
        Store::options().open_url(location).unwrap()
    } else {
        Store::open(location).unwrap()
    };
    let mut generations: Vec<u64> = store
        .history()
        .unwrap()
        .iter()
        .map(|e| e.generation)
        .collect();
    generations.sort_unstable();
    generations.dedup();
    generations
        .into_iter()
        .map(|g| store.document_at(g).unwrap())
        .collect()
}

/// `statesafe copy` in every direction (file to server, server to server, server to
/// file, file to file): the destination has the source's versions, in order, and its
/// settings.
#[test]
fn copy_moves_a_state_with_its_history_in_every_direction() {
    let Some(pg) = cluster::cluster() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file: &str = &path_in(&dir, "source.json");
    ok(&["init", file, r#"{"n": 0, "tags": []}"#]);
    ok(&["settings", file, "--keep-backups", "7"]);
    for expr in [".n += 1", ".tags += [\"a\"]", ".n = 1E2", "del(.tags)"] {
        ok(&["update", file, expr]);
    }
    let expected = versions(file);
    assert_eq!(expected.len(), 5);
    assert_eq!(expected[4].to_string(), r#"{"n":1E2}"#);
    let server = pg.url("copy_a");
    let server2 = pg.url("copy_b");
    let back: &str = &path_in(&dir, "back.json");
    let again: &str = &path_in(&dir, "again.json");
    for (from, to) in [
        (file, server.as_str()),
        (server.as_str(), server2.as_str()),
        (server2.as_str(), back),
        (back, again),
    ] {
        let out: Value = serde_json::from_str(&ok(&["--json", "copy", from, to])).unwrap();
        assert_eq!(out["versions"], 5, "{from} -> {to}: {out}");
        assert_eq!(out["generation"], 5, "{from} -> {to}: {out}");
        assert_eq!(versions(to), expected, "{from} -> {to}");
        let settings: Value = serde_json::from_str(&ok(&["--json", "settings", to])).unwrap();
        assert_eq!(
            settings["settings"]["backups"]["keep"], 7,
            "{from} -> {to}: {settings}"
        );
        // The numbers keep their text through every hop.
        assert_eq!(
            ok(&["get", "--compact", to]),
            "{\"n\":1E2}\n",
            "{from} -> {to}"
        );
    }
    let log = ok(&["log", "--patch", &server2]);
    assert!(
        log.contains(r#"{"op":"add","path":"/tags/0","value":"a"}"#),
        "{log}"
    );
}

/// The destination is compared and swapped: an existing one is refused unless
/// `--replace` or `--if-generation` its generation; a stale `--if-generation` is
/// refused; nothing is written when refused.
#[test]
fn copy_refuses_a_destination_that_exists_or_changed() {
    let Some(pg) = cluster::cluster() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file: &str = &path_in(&dir, "source.json");
    ok(&["init", file, r#"{"from": "file"}"#]);
    let server = pg.url("copy_cas");
    ok(&["init", &server, r#"{"from": "server"}"#]);
    ok(&["update", &server, ".n = 1"]);
    let unchanged = |what: &str| {
        assert_eq!(
            ok(&["get", "--compact", &server]),
            "{\"from\":\"server\",\"n\":1}\n",
            "{what}"
        );
        let info: Value = serde_json::from_str(&ok(&["--json", "info", &server])).unwrap();
        assert_eq!(info["generation"], 2, "{what}");
    };
    let out = statesafe(&["copy", file, &server]);
    assert_eq!(out.status.code(), Some(12), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--replace") && err.contains("--if-generation 2"),
        "{err}"
    );
    unchanged("exists");
    let out = statesafe(&["copy", file, &server, "--if-generation", "1"]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    unchanged("stale --if-generation");
    let out = statesafe(&["copy", file, &server, "--if-generation", "0"]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    unchanged("--if-generation 0");
    // The other way: a file destination is refused the same way.
    let out = statesafe(&["copy", &server, file]);
    assert_eq!(out.status.code(), Some(12), "{out:?}");
    assert_eq!(ok(&["get", "--compact", file]), "{\"from\":\"file\"}\n");
    // With its generation, on top of it: its own versions stay in its history.
    ok(&["copy", file, &server, "--if-generation", "2"]);
    assert_eq!(ok(&["get", "--compact", &server]), "{\"from\":\"file\"}\n");
    assert_eq!(
        versions(&server),
        vec![
            json!({"from": "server"}),
            json!({"from": "server", "n": 1}),
            json!({"from": "file"})
        ]
    );
    ok(&["copy", &server, file, "--replace"]);
    assert_eq!(ok(&["get", "--compact", file]), "{\"from\":\"file\"}\n");
    // A missing source is an error, with nothing written.
    let out = statesafe(&[
        "copy",
        &pg.url("copy_missing"),
        dir.path().join("x.json").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(!dir.path().join("x.json").exists());
}

/// The issue's fault loop with processes: 8 shell loops, each running `statesafe
/// update URL '.wK += 1'` on its own key over and over, while the server is stopped
/// as a crash would (`pg_ctl stop -m immediate`) and started again at random moments.
/// Each loop writes one letter per run to its tally: `a` acknowledged (exit 0), `u`
/// outcome unknown (exit 11), `f` failed with nothing committed (exit 10, the server
/// unreachable or the connection lost before `COMMIT`), anything else a test failure.
/// Afterwards every key is at least its acknowledged updates and at most those plus
/// its unknown ones, and every loop got updates through after the last restart on its
/// own. 5 restarts here (each writer process connects anew, so this is slower than
/// the threads' loop); `STATESAFE_PG_RESTARTS=50` runs the acceptance size.
#[test]
fn processes_lose_no_acknowledged_update_across_server_crashes() {
    let Some(pg) = cluster::cluster() else {
        return;
    };
    let restarts: u32 = from_env("STATESAFE_PG_RESTARTS", 5);
    const WRITERS: usize = 8;
    let url = pg.url("cli_crashes");
    let initial: serde_json::Map<String, Value> =
        (0..WRITERS).map(|i| (format!("w{i}"), json!(0))).collect();
    ok(&["init", &url, &Value::Object(initial).to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let stop = dir.path().join("stop");
    let script = r#"
bin=$1 url=$2 key=$3 tally=$4 stop=$5
while [ ! -e "$stop" ]; do
  "$bin" update --lock-timeout 30s "$url" ".$key += 1" >/dev/null 2>>"$tally.err"
  case $? in
    0) printf a >>"$tally" ;;
    11) printf u >>"$tally" ;;
    10) printf f >>"$tally"; sleep 0.01 ;;
    *) printf x >>"$tally" ;;
  esac
done
"#;
    let tally = |i: usize| dir.path().join(format!("w{i}"));
    let children: Vec<_> = (0..WRITERS)
        .map(|i| {
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg("sh")
                .arg(bin())
                .arg(&url)
                .arg(format!("w{i}"))
                .arg(tally(i))
                .arg(&stop)
                .spawn()
                .unwrap()
        })
        .collect();
    let count = |i: usize, c: char| {
        std::fs::read_to_string(tally(i))
            .unwrap_or_default()
            .chars()
            .filter(|x| *x == c)
            .count() as u64
    };
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    for _ in 0..restarts {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(100 + (seed >> 33) % 700));
        assert!(pg.crash_and_restart(), "not our server: cannot crash it");
    }
    let at_last: Vec<u64> = (0..WRITERS).map(|i| count(i, 'a')).collect();
    let mut recovered = false;
    for _ in 0..600 {
        if (0..WRITERS).all(|i| count(i, 'a') > at_last[i]) {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&stop, "").unwrap();
    for mut c in children {
        c.wait().unwrap();
    }
    assert!(
        recovered,
        "writers did not recover after the server came back"
    );
    let state: Value = serde_json::from_str(&ok(&["get", &url])).unwrap();
    let mut met_a_crash = 0;
    for i in 0..WRITERS {
        let (acked, unknown, failed) = (count(i, 'a'), count(i, 'u'), count(i, 'f'));
        let errors =
            std::fs::read_to_string(dir.path().join(format!("w{i}.err"))).unwrap_or_default();
        assert_eq!(
            count(i, 'x'),
            0,
            "w{i}: an unexpected exit status: {errors}"
        );
        met_a_crash += unknown + failed;
        let v = state[format!("w{i}")].as_u64().unwrap();
        println!("w{i}: {v} (acked {acked}, unknown {unknown}, failed {failed})");
        assert!(
            acked <= v && v <= acked + unknown,
            "w{i} = {v}, but acked {acked}, unknown {unknown}: an acknowledged update was lost, or a failed one was applied"
        );
    }
    assert!(met_a_crash > 0, "no write ever met a crash");
    let check: Value = serde_json::from_str(&ok(&["--json", "check", &url])).unwrap();
    assert_eq!(check["ok"], true, "{check}");
}

/// review22 findings 2 and 3 on a server: a `copy --replace` onto a state with a
/// schema keeps that schema in force for every other writer while it runs, and a
/// copy killed midway leaves it recorded (the copy's own versions bypass it through
/// its store's options, never through recorded settings without it).
#[test]
fn a_copy_onto_a_server_keeps_its_schema_for_other_writers_and_when_killed() {
    let Some(pg) = cluster::cluster() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file: &str = &path_in(&dir, "source.json");
    let schema: &str = &path_in(&dir, "schema.json");
    std::fs::write(
        schema,
        r#"{"type": "object", "properties": {"n": {"type": "integer"}}}"#,
    )
    .unwrap();
    ok(&["init", file, r#"{"n": 0}"#]);
    for i in 1..=150 {
        ok(&["set", file, "/n", &i.to_string(), "--durability", "none"]);
    }
    // The source has the schema too: a `set` just after a copy ended is refused
    // as well, and only one let past the schema during the copy is accepted.
    ok(&["settings", file, "--schema", schema]);
    let server = pg.url("copy_keeps_schema");
    ok(&["init", &server, r#"{"n": 0}"#]);
    ok(&["settings", &server, "--schema", schema]);
    let invalid = ["set", server.as_str(), "/n", "\"not a number\""];
    assert_eq!(statesafe(&invalid).status.code(), Some(4));
    let generation = || {
        let info: Value = serde_json::from_str(&ok(&["--json", "info", &server])).unwrap();
        info["generation"].as_u64().unwrap()
    };
    let spawn_copy = || {
        Command::new(bin())
            .args(["copy", file, &server, "--replace"])
            .env_remove("PGPASSWORD")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Killed once it put a few versions in (of 151).
    let before = generation();
    let mut copy = spawn_copy();
    let mut killed = false;
    while copy.try_wait().unwrap().is_none() {
        if generation() >= before + 3 {
            copy.kill().unwrap();
            killed = true;
            break;
        }
    }
    copy.wait().unwrap();
    assert!(killed, "the copy finished before it could be killed midway");
    let out = statesafe(&invalid);
    assert_eq!(
        out.status.code(),
        Some(4),
        "after a killed copy the server's state accepted what its schema refuses: {out:?}"
    );
    // Another writer while a copy runs: refused every time.
    let before = generation();
    let mut copy = spawn_copy();
    let mut tries = 0;
    while copy.try_wait().unwrap().is_none() {
        if generation() <= before {
            continue;
        }
        tries += 1;
        let out = statesafe(&invalid);
        assert_eq!(
            out.status.code(),
            Some(4),
            "try {tries}: another writer got past the schema during the copy: {out:?}"
        );
    }
    copy.wait().unwrap();
    let n = ok(&["get", &server, "/n"]);
    assert!(n.trim().parse::<u64>().is_ok(), "{n}");
}
