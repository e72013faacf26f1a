//! Reads that neither wait nor write (issue 11 item 2, issue 12 items 2 and 3): a
//! damaged file is served read-only while another process holds the lock; read-only
//! commands never create a sidecar; a file statesafe never wrote is never quarantined;
//! a write that fails leaves no backup, uses no generation, and warns of nothing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Env, bin, can_run_as_another_user};
use crate::snap;

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "`{}` never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `statesafe lock` holding the lock until dropped (then its command ends and it
/// is reaped), so a failing test leaves no holder behind.
struct Holder {
    child: std::process::Child,
    release: std::path::PathBuf,
}

impl Holder {
    fn start(env: &Env, file: &str) -> Holder {
        let child = Command::new(bin())
            .current_dir(env.dir())
            .args([
                "lock",
                file,
                "--",
                "sh",
                "-c",
                "touch ready; while [ ! -e release ]; do sleep 0.02; done",
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&env.path("ready"));
        Holder {
            child,
            release: env.path("release"),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.release, "");
        let _ = self.child.wait();
    }
}

#[test]
fn get_on_a_damaged_file_while_the_lock_is_held_returns_at_once() {
    let env = Env::new();
    assert_eq!(env.run(&["init", "s.json", "{\"n\": 0}"]).code, 0);
    for _ in 0..3 {
        assert_eq!(env.run(&["update", "s.json", ".n += 1"]).code, 0);
    }
    env.write("s.json", "{\"n\": 3, \"half");
    let damaged = env.read("s.json");
    let _holder = Holder::start(&env, "s.json");
    let start = Instant::now();
    let run = env.run(&["get", "s.json", "--compact"]);
    let took = start.elapsed();
    // The issue asks for 100 ms; a shared, busy machine gets a generous margin.
    assert!(took < Duration::from_secs(1), "get waited {took:?}");
    snap!("get_damaged_while_locked", run);
    assert_eq!(
        env.read("s.json"),
        damaged,
        "a read wrote under a held lock"
    );
    assert!(!env.path(".s.json.statesafe/quarantine").exists());
}

/// Every read-only command, on a file statesafe never wrote.
const READ_ONLY: &[&[&str]] = &[
    &["get", "f.json"],
    &["check", "f.json"],
    &["info", "f.json"],
    &["backups", "f.json"],
    &["log", "f.json"],
    &["diff", "f.json", "--from", "1", "--to", "1"],
];

#[test]
fn read_only_commands_never_create_a_sidecar() {
    let env = Env::new();
    env.write("f.json", "{\"a\": 1}\n");
    for args in READ_ONLY {
        let run = env.run(args);
        assert!(
            !env.path(".f.json.statesafe").exists(),
            "`statesafe {}` created a sidecar: {}",
            args.join(" "),
            run.snapshot()
        );
    }
}

#[test]
fn a_file_statesafe_never_wrote_that_is_not_json_is_never_quarantined() {
    let env = Env::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let passwd = elsewhere.path().join("passwd");
    std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::os::unix::fs::symlink(&passwd, env.path("f.json")).unwrap();
    for args in READ_ONLY {
        let run = env.run(args);
        if args[0] == "get" {
            snap!("get_not_json_never_written", run);
        }
    }
    let names: Vec<_> = std::fs::read_dir(elsewhere.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["passwd"], "a read wrote next to a foreign file");
    assert!(!env.path(".f.json.statesafe").exists());
}

#[test]
fn lock_on_a_missing_file_leaves_no_sidecar() {
    let env = Env::new();
    snap!(
        "lock_missing_file",
        env.run(&["lock", "nothere.json", "--", "true"])
    );
    assert!(!env.path(".nothere.json.statesafe").exists());
}

#[test]
fn a_write_that_fails_for_lack_of_permission_records_nothing() {
    let test = "reads::a_write_that_fails_for_lack_of_permission_records_nothing";
    if !can_run_as_another_user(test) {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    // A shared directory like /tmp: anyone may create files, only owners rename theirs.
    std::fs::set_permissions(env.dir(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    env.write("f.json", "{\"a\": 1}\n");
    std::fs::set_permissions(env.path("f.json"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let before = env.read("f.json");
    for _ in 0..3 {
        let run = env.run_as(65534, &["set", "f.json", "/b", "2"]);
        let stderr = run.stderr;
        assert_eq!(run.code, 8, "{stderr}");
        assert!(stderr.starts_with("error: permission denied"), "{stderr}");
        assert!(!stderr.contains("accepted as generation"), "{stderr}");
    }
    assert_eq!(env.read("f.json"), before);
    assert_eq!(std::fs::metadata(env.path("f.json")).unwrap().nlink(), 1);
    let backups = env.path(".f.json.statesafe/backups");
    let kept: Vec<_> = match std::fs::read_dir(&backups) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name()).collect(),
        Err(_) => Vec::new(),
    };
    assert!(kept.is_empty(), "failed writes left backups {kept:?}");
    // The first write that does happen adopts the file as generation 1.
    let run = env.run(&["set", "f.json", "/b", "2", "--json"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(run.json()["generation"], 2);
}
