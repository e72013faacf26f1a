//! `check`, `recover`, `backups`, `restore`, `log`, `diff`, `info`, `settings`, and
//! the per-file settings `init` records.

use crate::common::Env;
use crate::snap;

/// A file with generations 1..=5 (`n` = 0..=4), keeping 3 backups.
fn env() -> Env {
    let env = Env::new();
    assert_eq!(
        env.run(&["init", "s.json", "{\"n\": 0}", "--keep-backups", "3"])
            .code,
        0
    );
    for _ in 0..4 {
        assert_eq!(env.run(&["update", "s.json", ".n += 1"]).code, 0);
    }
    env
}

fn garble(env: &Env) {
    env.write("s.json", "{\"n\": 4, \"half");
}

#[test]
fn check_sound_and_damaged() {
    let env = env();
    snap!("check_ok", env.run(&["check", "s.json"]));
    garble(&env);
    let before = env.read("s.json");
    snap!("check_damaged", env.run(&["check", "s.json"]));
    snap!(
        "check_damaged_json",
        env.run(&["check", "s.json", "--json"])
    );
    assert_eq!(env.read("s.json"), before, "check must not repair");
    snap!("check_missing", env.run(&["check", "nope.json"]));
}

/// Issue 3: garble the primary; the next `get` restores the newest generation it can
/// prove (issue 11: backup 4 and the history's patch rebuild generation 5), prints a
/// warning, and keeps the damaged file in quarantine.
#[test]
fn get_recovers_with_a_warning() {
    let env = env();
    garble(&env);
    snap!("get_recovers", env.run(&["get", "s.json", "--compact"]));
    let quarantine = env.path(".s.json.statesafe/quarantine");
    let kept: Vec<_> = std::fs::read_dir(quarantine).unwrap().collect();
    assert_eq!(kept.len(), 1);
    snap!("check_after_recovery", env.run(&["check", "s.json"]));
}

#[test]
fn recover_command() {
    let env = env();
    snap!("recover_sound", env.run(&["recover", "s.json"]));
    garble(&env);
    snap!("recover_damaged", env.run(&["recover", "s.json", "--json"]));
    assert_eq!(
        env.run(&["get", "s.json", "/n"]).stdout,
        "4\n",
        "generation 5 rebuilt from backup 4 and the history"
    );
}

#[test]
fn unrecoverable_without_backups() {
    let env = Env::new();
    assert_eq!(
        env.run(&["init", "s.json", "{}", "--keep-backups", "0"])
            .code,
        0
    );
    garble(&env);
    snap!("get_unrecoverable", env.run(&["get", "s.json"]));
    snap!(
        "recover_unrecoverable_json",
        env.run(&["--json", "recover", "s.json"])
    );
}

#[test]
fn backups_and_restore() {
    let env = env();
    snap!("backups_list", env.run(&["backups", "s.json"]));
    let list = env.run(&["backups", "s.json", "--json"]).json();
    let gens: Vec<_> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(gens, [4, 3, 2]);
    snap!(
        "restore",
        env.run(&["restore", "s.json", "--generation", "3"])
    );
    assert_eq!(env.run(&["get", "s.json", "/n"]).stdout, "2\n");
    snap!(
        "restore_json",
        env.run(&["restore", "s.json", "-g", "4", "--json"])
    );
    let before = env.read("s.json");
    snap!(
        "restore_missing",
        env.run(&["restore", "s.json", "-g", "99"])
    );
    assert_eq!(env.read("s.json"), before);
    snap!("backups_none", Env::new().run(&["backups", "nope.json"]));
}

#[test]
fn log_and_diff() {
    let env = env();
    snap!("log", env.run(&["log", "s.json", "-n", "2"]));
    snap!(
        "log_patch",
        env.run(&["log", "s.json", "-n", "2", "--patch"])
    );
    let log = env.run(&["log", "s.json", "--json"]).json();
    assert_eq!(log["entries"].as_array().unwrap().len(), 5);
    snap!("diff", env.run(&["diff", "s.json", "2", "5"]));
    snap!(
        "diff_to_current_json",
        env.run(&["diff", "s.json", "1", "--json"])
    );
    snap!(
        "diff_unknown_generation",
        env.run(&["diff", "s.json", "77"])
    );
}

#[test]
fn info_and_settings() {
    let env = env();
    snap!("info", env.run(&["info", "s.json"]));
    let info = env.run(&["info", "s.json", "--json"]).json();
    assert_eq!(info["generation"], 5);
    assert_eq!(info["settings"]["backups"]["keep"], 3);
    snap!("settings_show", env.run(&["settings", "s.json", "--json"]));
    snap!(
        "settings_change",
        env.run(&[
            "settings",
            "s.json",
            "--max-bytes",
            "64",
            "--keep-history",
            "10"
        ])
    );
    let before = env.read("s.json");
    let big = format!("\"{}\"", "x".repeat(100));
    snap!("too_large", env.run(&["set", "s.json", "/big", &big]));
    assert_eq!(env.read("s.json"), before);
}

#[test]
fn schema_recorded_by_init_binds_every_writer() {
    let env = Env::new();
    env.write(
        "schema.json",
        r#"{"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"]}"#,
    );
    assert_eq!(
        env.run(&[
            "init",
            "s.json",
            "{\"n\": 1}",
            "--schema",
            "schema.json",
            "--format",
            "sealed"
        ])
        .code,
        0
    );
    let before = env.read("s.json");
    snap!(
        "schema_rejects_update",
        env.run(&["update", "s.json", ".n = -1"])
    );
    snap!("schema_rejects_delete", env.run(&["del", "s.json", "/n"]));
    assert_eq!(env.read("s.json"), before);
    assert_eq!(env.run(&["update", "s.json", ".n = 2"]).code, 0);
    assert_eq!(env.run(&["get", "s.json", "/n"]).stdout, "2\n");
    snap!(
        "schema_init_violates",
        env.run(&["init", "t.json", "{}", "--schema", "schema.json"])
    );
    assert!(!env.path("t.json").exists());
    env.write("bad-schema.json", r#"{"type": 12}"#);
    snap!(
        "schema_invalid",
        env.run(&["set", "s.json", "/n", "3", "--schema", "bad-schema.json"])
    );
    snap!(
        "schema_missing_file",
        env.run(&["set", "s.json", "/n", "3", "--schema", "nope.json"])
    );
    assert_eq!(env.run(&["settings", "s.json", "--no-schema"]).code, 0);
    assert_eq!(env.run(&["del", "s.json", "/n"]).code, 0);
}

/// Issue 12 item 1: the first write to a JSON file statesafe never wrote adopts it
/// with one quiet `note:` (after it succeeded); the next write says nothing; a later
/// change behind statesafe's back is the warning. Reads say nothing at all.
#[test]
fn adoption_is_a_note_once_and_later_changes_warn() {
    let env = Env::new();
    env.write("f.json", "{\"a\": 1}\n");
    let read = env.run(&["get", "f.json", "/a"]);
    assert_eq!((read.code, read.stderr.as_str()), (0, ""));
    snap!("check_not_adopted", env.run(&["check", "f.json"]));
    snap!("adopted", env.run(&["set", "f.json", "/b", "2"]));
    let again = env.run(&["set", "f.json", "/b", "3"]);
    assert_eq!((again.code, again.stderr.as_str()), (0, ""));
    let json = Env::new();
    json.write("f.json", "{}");
    let quiet = json.run(&["set", "f.json", "/b", "2", "--json"]);
    assert_eq!((quiet.code, quiet.stderr.as_str()), (0, ""));
    env.write("f.json", "{\"a\": 5}\n");
    snap!(
        "changed_after_adoption",
        env.run(&["set", "f.json", "/b", "4"])
    );

    // Writers that end without writing adopt nothing, so they say nothing; the first
    // write that does, says it.
    let env = Env::new();
    env.write("g.json", "{\"a\": 1}\n");
    for args in [
        &["init", "g.json", "--exist-ok"][..],
        &["del", "g.json", "/nothing", "--missing-ok"],
    ] {
        let run = env.run(args);
        assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{args:?}");
    }
    let first = env.run(&["update", "g.json", ".a += 1"]);
    assert_eq!(
        first.stderr,
        "note: adopted `g.json` as generation 1: statesafe had not written it before\n"
    );
}

#[test]
fn external_change_is_a_warning() {
    let env = env();
    env.write("s.json", "{\"n\": 100}\n");
    snap!("external_change", env.run(&["update", "s.json", ".n += 1"]));
    assert_eq!(env.run(&["get", "s.json", "/n"]).stdout, "101\n");
}

/// Issue 3: flip any single byte of a sealed file: `check` exits non-zero (7) naming
/// the problem, and a read under the `fail` policy refuses it. Every byte is tried
/// through the library-backed `check` of one process per flip, so this stays bounded
/// by sampling every position of a small document.
#[test]
fn check_catches_any_flipped_byte_of_a_sealed_file() {
    let env = Env::new();
    assert_eq!(
        env.run(&["init", "s.json", "{\"ok\": true}", "--format", "sealed"])
            .code,
        0
    );
    let good = env.read("s.json");
    assert_eq!(env.run(&["check", "s.json"]).code, 0);
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x20;
        env.write("s.json", &bad);
        let run = env.run(&["check", "s.json"]);
        assert_eq!(run.code, 7, "byte {i} flipped: {}", run.stderr);
        assert!(
            run.stdout.contains("s.json") || run.stderr.contains("s.json"),
            "the problem names the file: {} {}",
            run.stdout,
            run.stderr
        );
    }
}

/// Issue 3: after 50 updates, `log` shows 50 entries with correct patches.
#[test]
fn fifty_updates_fifty_log_entries() {
    let env = Env::new();
    assert_eq!(env.run(&["init", "s.json", "{\"n\": 0}"]).code, 0);
    for _ in 0..49 {
        assert_eq!(env.run(&["update", "s.json", ".n += 1"]).code, 0);
    }
    let log = env.run(&["log", "s.json", "--json", "--patch"]).json();
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 50);
    let mut generations: Vec<u64> = entries
        .iter()
        .map(|e| e["generation"].as_u64().unwrap())
        .collect();
    generations.sort_unstable();
    assert_eq!(generations, (1..=50).collect::<Vec<_>>());
    for e in entries.iter().filter(|e| e["generation"] != 1) {
        let g = e["generation"].as_u64().unwrap();
        assert_eq!(
            e["patch"],
            serde_json::json!([{"op": "replace", "path": "/n", "value": g - 1}]),
            "generation {g}"
        );
    }
    let diff = env.run(&["diff", "s.json", "10", "20", "--json"]).json();
    assert_eq!(
        diff["patch"],
        serde_json::json!([{"op": "replace", "path": "/n", "value": 19}]),
        "{diff}"
    );
}

/// Issue 12 item 5: an empty file is not recovered from nothing: the error names the
/// deliberate way to start afresh, `statesafe init FILE '{}' --force` (which works).
#[test]
fn empty_file_names_init_force() {
    let env = Env::new();
    env.write("f.json", "");
    let run = env.run(&["get", "f.json"]);
    snap!("empty_file", run);
    assert_eq!(run.code, 7);
    assert_eq!(env.run(&["init", "f.json", "{}", "--force"]).code, 0);
    assert_eq!(env.run(&["get", "f.json", "--compact"]).stdout, "{}\n");
}

/// Issue 12 item 5: a UTF-8 byte-order mark is named as such, and refused (statesafe
/// does not rewrite a file it did not write); the hint's command removes it, and the
/// document is then adopted as it is.
#[test]
fn bom_is_named_and_refused_with_a_hint() {
    let env = Env::new();
    env.write("b.json", b"\xEF\xBB\xBF{\"a\": 1}\n");
    let run = env.run(&["set", "b.json", "/c", "1"]);
    snap!("bom", run);
    assert_eq!(run.code, 7);
    assert_eq!(env.read("b.json"), b"\xEF\xBB\xBF{\"a\": 1}\n");
    let sed = std::process::Command::new("sed")
        .current_dir(env.dir())
        .args(["-i", r"1s/^\xEF\xBB\xBF//", "b.json"])
        .status()
        .unwrap();
    assert!(sed.success());
    assert_eq!(env.run(&["set", "b.json", "/c", "1"]).code, 0);
    assert_eq!(
        env.run(&["get", "b.json", "--compact"]).stdout,
        "{\"a\":1,\"c\":1}\n"
    );
}
