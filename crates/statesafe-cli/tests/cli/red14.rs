//! Red team, session 14: the CLI side of session 13's open suspicions (the library's
//! tests are in `crates/statesafe/tests/it/red14.rs`).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::{Env, bin, skipped};

/// `recover --accept-snapshot` after an older copy of the journal was put back keeps
/// the newest version the copy still holds (generation 2 here) and says so, naming
/// the generations lost; it used to accept the bare snapshot (generation 1's
/// document) and say only that "the commits of the lost journal are gone".
#[test]
fn accepting_after_an_older_copy_keeps_and_names_what_survived() {
    let env = Env::new();
    let run = env.run(&["init", "s.json", "{\"n\": 0}", "--format", "journal"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(env.run(&["set", "s.json", "/n", "1"]).code, 0);
    let older = env.read(".s.json.statesafe/journal");
    for n in 2..=3 {
        assert_eq!(env.run(&["set", "s.json", "/n", &n.to_string()]).code, 0);
    }
    env.write(".s.json.statesafe/journal", &older);
    let run = env.run(&["get", "s.json", "/n"]);
    assert_eq!(run.code, 7, "{}", run.snapshot());
    let run = env.run(&["recover", "s.json", "--accept-snapshot"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    for part in [
        "the document of generation 2",
        "after generation 2 are gone",
    ] {
        assert!(run.stdout.contains(part), "`{part}`: {}", run.snapshot());
    }
    let run = env.run(&["get", "s.json", "/n"]);
    assert_eq!(run.stdout, "1\n", "{}", run.snapshot());
}

/// A second user granted write to a journal-mode file by `chmod 0666 FILE` commits
/// once the sidecar followed (at the owner's next commit, an append included), and
/// before that is refused with an error that names the lock file, the cause and the
/// way out (the hint used to send the user to the state file's permissions, which
/// were right: the sidecar had not followed them yet).
#[test]
fn a_user_granted_write_by_chmod_commits_in_journal_mode() {
    let test = "red14::a_user_granted_write_by_chmod_commits_in_journal_mode";
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root || Command::new("setpriv").arg("--version").output().is_err() {
        return skipped(
            test,
            "needs root and setpriv to run the binary as another user",
        );
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let run = env.run(&["init", "s.json", "{\"n\": 0}", "--format", "journal"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(env.run(&["set", "s.json", "/n", "1"]).code, 0);
    std::fs::set_permissions(env.path("s.json"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let as_other = |n: &str| {
        Command::new("setpriv")
            .args(["--reuid=4242", "--regid=4242", "--clear-groups", "--"])
            .arg(bin())
            .args(["set", "s.json", "/n", n])
            .current_dir(env.dir())
            .output()
            .unwrap()
    };
    let before = as_other("5");
    let stderr = String::from_utf8_lossy(&before.stderr).into_owned();
    if !before.status.success() {
        assert!(
            stderr.contains("s.json") && stderr.contains("one commit by the file's owner"),
            "the refusal before the owner's commit names no file or way out: {stderr}"
        );
    }
    assert_eq!(env.run(&["set", "s.json", "/m", "1"]).code, 0);
    let after = as_other("6");
    assert!(
        after.status.success(),
        "after the owner's commit: {}",
        String::from_utf8_lossy(&after.stderr)
    );
    let run = env.run(&["get", "s.json", "/n"]);
    assert_eq!(run.stdout, "6\n", "{}", run.snapshot());
    eprintln!(
        "before the owner's commit: {:?} {stderr}",
        before.status.code()
    );
}
