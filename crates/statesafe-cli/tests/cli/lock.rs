//! `statesafe lock`.

use std::path::Path;
use std::time::Duration;

use crate::common::Env;
use crate::snap;

#[test]
fn exits_with_the_commands_status() {
    let env = Env::new();
    env.state("s.json", "{\"n\": 0}\n");
    let before = env.read("s.json");
    snap!(
        "lock_ok",
        env.run(&["lock", "s.json", "--", "echo", "inside"])
    );
    snap!(
        "lock_status",
        env.run(&["lock", "s.json", "--", "sh", "-c", "exit 7"])
    );
    snap!(
        "lock_signal",
        env.run(&["lock", "s.json", "--", "sh", "-c", "kill -9 $$"])
    );
    assert_eq!(
        env.read("s.json"),
        before,
        "lock must not change the state file"
    );
}

#[test]
fn commands_that_cannot_run() {
    let env = Env::new();
    env.state("s.json", "{\"n\": 0}\n");
    snap!(
        "lock_missing_dashes",
        env.run(&["lock", "s.json", "sleep", "1"])
    );
    snap!(
        "lock_command_not_found",
        env.run(&["lock", "s.json", "--", "no-such-command-xyz"])
    );
    snap!(
        "lock_bad_timeout",
        env.run(&["lock", "s.json", "--timeout", "soon", "--", "true"])
    );
}

fn wait_for(path: &Path) {
    while !path.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// While `lock` runs its command, an `update` with a short lock timeout fails with
/// the lock-timeout code and names the holder; once the command ends, it succeeds.
#[test]
fn holds_off_writers() {
    let env = Env::new();
    env.state("s.json", "{\"n\": 0}\n");
    let mut child = std::process::Command::new(crate::common::bin())
        .current_dir(env.dir())
        .args([
            "lock",
            "s.json",
            "--",
            "sh",
            "-c",
            "touch ready; while [ ! -e release ]; do sleep 0.02; done",
        ])
        .spawn()
        .unwrap();
    wait_for(&env.path("ready"));
    let before = env.read("s.json");
    let blocked = env.run(&["update", "s.json", ".n += 1", "--lock-timeout", "100ms"]);
    snap!("lock_holds_off_update", blocked);
    let blocked_json = env.run(&[
        "update",
        "s.json",
        ".n += 1",
        "--lock-timeout",
        "0",
        "--json",
    ]);
    assert_eq!(blocked_json.code, 5);
    let err: serde_json::Value = serde_json::from_str(&blocked_json.stderr).unwrap();
    assert_eq!(err["kind"], "lock_timeout");
    assert_eq!(err["holder"]["operation"], "lock");
    assert_eq!(err["holder"]["pid"], child.id());
    assert_eq!(env.read("s.json"), before);
    // Reads never wait.
    assert_eq!(env.run(&["get", "s.json", "/n"]).stdout, "0\n");
    env.write("release", "");
    assert!(child.wait().unwrap().success());
    let after = env.run(&["update", "s.json", ".n += 1", "--lock-timeout", "0"]);
    assert_eq!(after.code, 0, "{}", after.snapshot());
    assert_eq!(env.run(&["get", "s.json", "/n"]).stdout, "1\n");
}

/// Issue 11: SIGTERM (or SIGINT, SIGHUP) sent to `statesafe lock` reaches CMD, and the
/// lock is released only once CMD has ended; before, `lock` died at once and CMD ran
/// on without the lock.
#[test]
fn termination_signals_are_passed_to_the_command_which_ends_before_the_lock_is_released() {
    let env = Env::new();
    env.state("s.json", "{\"n\": 0}\n");
    for signal in ["TERM", "INT", "HUP"] {
        let _ = std::fs::remove_file(env.path("ready"));
        let _ = std::fs::remove_file(env.path("trapped"));
        let script = format!(
            "trap 'sleep 0.3; echo {signal} > trapped; exit 3' {signal}; touch ready; \
             i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done"
        );
        let mut child = std::process::Command::new(crate::common::bin())
            .current_dir(env.dir())
            .args(["lock", "s.json", "--", "sh", "-c", &script])
            .spawn()
            .unwrap();
        wait_for(&env.path("ready"));
        let sent = std::process::Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = child.wait().unwrap();
        assert_eq!(
            env.read_string("trapped"),
            format!("{signal}\n"),
            "CMD had not ended when `lock` exited"
        );
        assert_eq!(status.code(), Some(3), "SIG{signal}: {status}");
        // The lock is free again.
        let run = env.run(&["update", "s.json", ".n += 1", "--lock-timeout", "0"]);
        assert_eq!(run.code, 0, "{}", run.snapshot());
    }
}

/// A cleanup that deletes the sidecar while CMD runs lets other writers in: `lock`
/// says so (exit 5) instead of passing CMD's success on (issue 10, attack 6).
#[test]
fn a_lock_removed_while_the_command_runs_is_reported() {
    let env = Env::new();
    env.state("s.json", "{\"n\": 0}\n");
    let out = env.run(&["lock", "s.json", "--", "rm", "-rf", ".s.json.statesafe"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    snap!("lock_lost", out);
}
