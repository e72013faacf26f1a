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
    // `info` names the live holder (FAILURE_MODES.md row 14: "state is locked" with no
    // idea by whom), in both forms.
    let info = env.run(&["info", "s.json", "--json"]);
    assert_eq!(info.code, 0, "{}", info.snapshot());
    let info: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    assert_eq!(info["lock_holder"]["pid"], child.id());
    assert_eq!(info["lock_holder"]["operation"], "lock");
    let text = env.run(&["info", "s.json"]).stdout;
    assert!(
        text.lines().any(|l| l.starts_with("locked by:")
            && l.contains(&format!("pid {} ", child.id()))
            && l.contains("doing lock")),
        "{text}"
    );
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

/// Runs `lock s.json` with a command that waits for the file `release`; returns once
/// the lock is held.
fn hold_until_released(env: &Env) -> std::process::Child {
    let child = std::process::Command::new(crate::common::bin())
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
    child
}

/// `update s.json '.n += 1'` with `STATESAFE_LOCKS=pass` and a lock timeout.
fn update_with(
    env: &Env,
    pass: impl AsRef<std::ffi::OsStr>,
    timeout: &str,
) -> std::process::Output {
    env.cmd()
        .env("STATESAFE_LOCKS", pass)
        .args(["update", "s.json", ".n += 1", "--lock-timeout", timeout])
        .output()
        .unwrap()
}

/// `lock FILE -- CMD` lets CMD's own writers of FILE through (one at a time), and its
/// nested `lock` too; before, they waited for the lock CMD's parent held until their
/// timeout (the issue 15 semantics, which the PostgreSQL lock already had).
#[test]
fn the_commands_own_writers_are_let_through_one_at_a_time() {
    let env = Env::new();
    env.state("s.json", "{\"n\": 0}\n");
    let bin = crate::common::bin();
    // 4 concurrent loops of 25 increments inside the lock: exact if they exclude
    // each other; a short timeout so that a writer left waiting fails the test.
    let script = format!(
        "for w in 1 2 3 4; do (i=0; while [ $i -lt 25 ]; do \
         {bin} update s.json '.n += 1' --lock-timeout 20s >/dev/null || exit 1; \
         i=$((i+1)); done) & done; wait; \
         {bin} lock s.json --timeout 1s -- {bin} set s.json /nested true --lock-timeout 1s"
    );
    let run = env.run(&[
        "lock",
        "s.json",
        "--timeout",
        "1s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(env.run(&["get", "s.json", "/n"]).stdout, "100\n");
    assert_eq!(env.run(&["get", "s.json", "/nested"]).stdout, "true\n");
    // The passes are gone with their locks.
    let sidecar = env.path(".s.json.statesafe");
    let passes: Vec<_> = std::fs::read_dir(&sidecar)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pass-"))
        .collect();
    assert!(passes.is_empty(), "{passes:?}");
}

/// Writers outside CMD still wait; a variable copied out of CMD (a daemon CMD
/// started, which runs on after the lock ends) or made up lets nobody through.
#[test]
fn a_pass_lets_nobody_else_through_and_dies_with_its_lock() {
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
            "echo \"$STATESAFE_LOCKS\" > pass.tmp; mv pass.tmp pass; \
             while [ ! -e release ]; do sleep 0.02; done",
        ])
        .spawn()
        .unwrap();
    wait_for(&env.path("pass"));
    let pass = env.read_string("pass").trim().to_string();
    let (file, token) = pass.rsplit_once(':').unwrap();
    assert_eq!(token.len(), 32, "{pass}");
    let outside = env.run(&["update", "s.json", ".n += 1", "--lock-timeout", "100ms"]);
    assert_eq!(outside.code, 5, "{}", outside.snapshot());
    // A made-up token for the right lock file opens nothing.
    let forged = env
        .cmd()
        .env("STATESAFE_LOCKS", format!("{file}:{}", "0".repeat(32)))
        .args(["update", "s.json", ".n += 1", "--lock-timeout", "100ms"])
        .output()
        .unwrap();
    assert_eq!(forged.status.code(), Some(5), "{forged:?}");
    // The real one does.
    let inside = update_with(&env, &pass, "1s");
    assert_eq!(inside.status.code(), Some(0), "{inside:?}");
    env.write("release", "");
    assert!(child.wait().unwrap().success());
    // The lock ended: another holder takes it, and the old pass is worth nothing.
    let _ = std::fs::remove_file(env.path("release"));
    let _ = std::fs::remove_file(env.path("ready"));
    let mut other = hold_until_released(&env);
    let stale = update_with(&env, &pass, "100ms");
    assert_eq!(stale.status.code(), Some(5), "{stale:?}");
    env.write("release", "");
    assert!(other.wait().unwrap().success());
    assert_eq!(env.run(&["get", "s.json", "/n"]).stdout, "1\n");
}

/// A `lock` killed (SIGKILL) while CMD runs on leaves its pass file behind, but its
/// lock is gone: CMD's writers are refused (exit 5) instead of writing beside the
/// next holder, or after it on what CMD read under the dead lock (review22).
#[test]
fn the_pass_of_a_killed_lock_lets_nobody_through() {
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
            "echo \"$STATESAFE_LOCKS\" > pass.tmp; mv pass.tmp pass; sleep 5",
        ])
        // The orphaned `sh` keeps nothing of the test's open.
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&env.path("pass"));
    let pass = env.read_string("pass").trim().to_string();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut other = hold_until_released(&env);
    let orphan = update_with(&env, &pass, "100ms");
    assert_eq!(orphan.status.code(), Some(5), "{orphan:?}");
    assert!(
        String::from_utf8_lossy(&orphan.stderr).contains("lost the lock"),
        "{orphan:?}"
    );
    env.write("release", "");
    assert!(other.wait().unwrap().success());
    // With the lock free, it is refused just the same: it would commit on a read
    // made under the dead lock.
    let later = update_with(&env, &pass, "100ms");
    assert_eq!(later.status.code(), Some(5), "{later:?}");
    assert_eq!(env.run(&["get", "s.json", "/n"]).stdout, "0\n");
    // The dead one's pass file stays (the record that refuses them); the next
    // `lock`'s own went at its end.
    let left: Vec<_> = std::fs::read_dir(env.path(".s.json.statesafe"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pass-"))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

/// Whether process `pid` has ended (gone, or a zombie not yet reaped).
fn ended(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `PID (COMM) STATE ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
    }
}

/// A `lock` killed with SIGKILL takes CMD with it (Linux, `PR_SET_PDEATHSIG`): CMD
/// read the state under the lock that died. CMD here would go on (and leave
/// `survived`) once `stop` appears, written only after `lock` was reaped; the kernel
/// sends CMD its SIGKILL as `lock` exits, before that.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_lock_takes_its_command_with_it() {
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
            "echo $$ > pid.tmp; mv pid.tmp pid; while [ ! -e stop ]; do sleep 0.01; done; touch survived",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&env.path("pid"));
    let pid = env.read_string("pid").trim().to_string();
    child.kill().unwrap();
    child.wait().unwrap();
    env.write("stop", "");
    while !ended(&pid) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !env.path("survived").exists(),
        "CMD (pid {pid}) ran on after its `statesafe lock` was killed"
    );
}
