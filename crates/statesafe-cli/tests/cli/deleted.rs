//! lost19: a state file deleted while its sidecar shows committed generations is
//! refused by every command that would read it or start a new life from nothing
//! (exit 16, kind `deleted`), never served or written over as a fresh file;
//! `recover` puts the newest provable version back, `init --force` starts over on
//! purpose. FAILURE_MODES.md row 13 (a "recovery" that resets to defaults).

use crate::common::Env;

/// `s.json` committed as generations 1 to 3 (`{"n": 3}` last), then deleted.
fn three_commits_then_rm() -> Env {
    let env = Env::new();
    assert_eq!(env.run(&["init", "s.json", "{\"n\": 1}"]).code, 0);
    assert_eq!(env.run(&["set", "s.json", "/n", "2"]).code, 0);
    assert_eq!(env.run(&["set", "s.json", "/n", "3"]).code, 0);
    std::fs::remove_file(env.path("s.json")).unwrap();
    env
}

#[test]
fn deleted_every_command_that_would_start_from_nothing_refuses() {
    let env = three_commits_then_rm();
    for args in [
        &["get", "s.json"][..],
        &["get", "s.json", "/n"],
        &["set", "s.json", "/n", "100"],
        &["update", "s.json", ".n = 100"],
        &["update", "--create", "s.json", ".n = 100"],
        &["del", "s.json", "/n"],
        &["exec", "s.json", "--", "cat"],
        &["init", "s.json", "{\"n\": 0}"],
        &["init", "s.json", "--exist-ok"],
        &["check", "s.json"],
    ] {
        let run = env.run(args);
        run.assert_failed(args, 16, "was deleted");
        run.assert_failed(args, 16, "generation 3");
        run.assert_failed(args, 16, "statesafe recover");
        assert!(!env.path("s.json").exists(), "{args:?} wrote the file");
    }
    let run = env.run(&["get", "s.json", "--json"]);
    assert_eq!(run.code, 16, "{}", run.snapshot());
    let err: serde_json::Value = serde_json::from_str(&run.stderr).expect("a JSON error");
    assert_eq!(err["kind"], "deleted", "{}", run.snapshot());
}

#[test]
fn deleted_recover_puts_the_last_document_back() {
    let env = three_commits_then_rm();
    let run = env.run(&["recover", "s.json"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert!(run.stdout.contains("was deleted"), "{}", run.snapshot());
    let run = env.run(&["get", "s.json", "/n"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "3\n"),
        "{}",
        run.snapshot()
    );
}

#[test]
fn deleted_init_force_starts_over_on_purpose() {
    let env = three_commits_then_rm();
    let run = env.run(&["init", "s.json", "{\"fresh\": true}", "--force", "--json"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(run.json()["generation"], 4, "{}", run.snapshot());
    assert_eq!(env.read_string("s.json"), "{\n  \"fresh\": true\n}\n");
}

/// The control: a file that never existed is still "not found" (exit 3), and `init`
/// creates it.
#[test]
fn deleted_control_a_new_file_is_not_found_then_created() {
    let env = Env::new();
    env.run(&["get", "s.json"])
        .assert_failed(&["get"], 3, "does not exist");
    assert_eq!(env.run(&["init", "s.json"]).code, 0);
}

/// review20 finding 8: with the backups and the history cleaned away, nothing proves a
/// version; `recover` said "is damaged … repair the file by hand" (exit 7) about a file
/// that is not there. It says the file was deleted (exit 16, the file still is) and
/// names the ways out.
#[test]
fn deleted_recover_that_proves_nothing_says_so_and_names_init_force() {
    let env = three_commits_then_rm();
    let sidecar = env.path(".s.json.statesafe");
    std::fs::remove_dir_all(sidecar.join("backups")).unwrap();
    std::fs::remove_dir_all(sidecar.join("history")).unwrap();
    let args = &["recover", "s.json"][..];
    let run = env.run(args);
    run.assert_failed(
        args,
        16,
        "was deleted and no version of it could be put back",
    );
    run.assert_failed(args, 16, "--force");
    assert!(!run.stderr.contains("is damaged"), "{}", run.snapshot());
    assert!(!env.path("s.json").exists(), "{}", run.snapshot());
}

/// review20 finding 2: `log` and `diff` of a deleted file read its history up to the
/// last generation its sidecar knows (before: up to 0, "no history recorded", exit 0,
/// while the history held every commit).
#[test]
fn deleted_log_and_diff_still_show_the_history() {
    let env = three_commits_then_rm();
    let run = env.run(&["log", "s.json"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    for g in 1..=3 {
        assert!(
            run.stdout.contains(&format!("generation {g} ")),
            "{}",
            run.snapshot()
        );
    }
    let run = env.run(&["diff", "s.json", "1", "3"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert!(run.stdout.contains("\"value\":3"), "{}", run.snapshot());
}

/// fix21rs (5): the hints of a deleted file name its sidecar as the user named the
/// file: `recover s.json` run in the file's directory names `.s.json.statesafe`, and
/// `recover sub/s.json` names `sub/.s.json.statesafe`, not the sidecar's absolute path
/// (before, both hints named `/tmp/…/.s.json.statesafe`).
#[test]
fn deleted_hints_name_the_sidecar_as_the_file_was_named() {
    let env = three_commits_then_rm();
    let sidecar = env.path(".s.json.statesafe");
    std::fs::remove_dir_all(sidecar.join("backups")).unwrap();
    std::fs::remove_dir_all(sidecar.join("history")).unwrap();
    let absolute = sidecar.display().to_string();
    for (dir, file, named) in [
        (".", "s.json", "`.s.json.statesafe`"),
        ("sub", "../s.json", "`../.s.json.statesafe`"),
    ] {
        std::fs::create_dir_all(env.path(dir)).unwrap();
        for args in [&["recover", file][..], &["get", file]] {
            let run = env.run_in(dir, args);
            run.assert_failed(args, 16, named);
            assert!(!run.stderr.contains(&absolute), "{}", run.snapshot());
        }
    }
}

/// fix21rs (4): `statesafe info` of a deleted file says it was deleted, with the last
/// generation its sidecar knows and who committed it (text and `--json`). Before:
/// `exists: no`, `generation: 0`, `last writer: -`, as for a file never created.
#[test]
fn deleted_info_says_deleted_with_the_last_generation_known() {
    let env = three_commits_then_rm();
    let run = env.run(&["info", "s.json"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert!(run.stdout.contains("generation:  3"), "{}", run.snapshot());
    assert!(run.stdout.contains("deleted"), "{}", run.snapshot());
    assert!(
        run.stdout.contains("statesafe recover"),
        "{}",
        run.snapshot()
    );
    assert!(!run.stdout.contains("last writer: -"), "{}", run.snapshot());
    let info = env.run(&["info", "s.json", "--json"]).json();
    assert_eq!(info["exists"], false, "{info}");
    assert_eq!(info["generation"], 3, "{info}");
    assert_eq!(info["deleted"], true, "{info}");
    assert!(info["last_writer"].is_object(), "{info}");
    // The control: a file never created.
    let info = env.run(&["info", "new.json", "--json"]).json();
    assert_eq!(
        (&info["exists"], &info["generation"], &info["deleted"]),
        (&false.into(), &0.into(), &false.into()),
        "{info}"
    );
}

/// fix21rs (1), from the command line: with no backups and no history kept, a user
/// who may read the file but not write it (and so not open its lock file) is refused
/// a deleted file (exit 16) as its writers are, not told it does not exist (exit 3),
/// after which `set` by a writer would have started a new life.
#[test]
fn deleted_a_reader_who_may_not_write_is_refused_too() {
    let test = "deleted::deleted_a_reader_who_may_not_write_is_refused_too";
    if !crate::common::can_run_as_another_user(test) {
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(
        env.dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let init = [
        "init",
        "s.json",
        "{\"n\": 1}",
        "--keep-backups",
        "0",
        "--keep-history",
        "0",
    ];
    assert_eq!(env.run(&init).code, 0);
    assert_eq!(env.run(&["set", "s.json", "/n", "2"]).code, 0);
    std::fs::set_permissions(
        env.path("s.json"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let run = env.run_as(65534, &["get", "s.json", "/n"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "2\n"),
        "{}",
        run.snapshot()
    );
    std::fs::remove_file(env.path("s.json")).unwrap();
    let args = &["get", "s.json"][..];
    let run = env.run_as(65534, args);
    run.assert_failed(args, 16, "was deleted");
    let run = env.run_as(65534, &["info", "s.json", "--json"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(run.json()["deleted"], true, "{}", run.snapshot());
}
