//! `statesafe edit`, with `EDITOR` set to scripts and no terminal.

use crate::common::{Env, Run};
use crate::snap;

fn env() -> Env {
    let env = Env::new();
    env.state("s.json", "{\n  \"n\": 1\n}\n");
    env
}

fn edit(env: &Env, editor: &str, args: &[&str]) -> Run {
    let mut all = vec!["edit", "s.json"];
    all.extend_from_slice(args);
    Run::from(env.cmd().env("EDITOR", editor).args(&all).output().unwrap())
}

/// util-linux `script`, to give `statesafe edit` a terminal; `None` (after a loud
/// SKIPPED line) where it is not installed.
fn script_program(test: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("script"))
        .find(|p| p.is_file());
    if found.is_none() {
        crate::common::skipped(test, "util-linux `script` is not installed");
    }
    found
}

/// Runs `statesafe edit s.json ARGS` with `editor` on a terminal (a pty from
/// `script`); everything it prints is in `stdout`, with `\n` line ends.
fn edit_on_terminal(env: &Env, script: &std::path::Path, editor: &str, args: &[&str]) -> Run {
    let command = std::iter::once(format!("{} edit s.json", crate::common::bin()))
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new(script)
        .current_dir(env.dir())
        .env("EDITOR", editor)
        .env("TMPDIR", env.dir())
        .env_remove("VISUAL")
        .env("NO_COLOR", "1")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let mut run = Run::from(out);
    run.stdout = run.stdout.replace("\r\n", "\n");
    run
}

#[test]
fn valid_edit() {
    let env = env();
    env.script("ed.sh", r#"sed -i 's/"n": 1/"n": 2/' "$1""#);
    snap!("edit_valid", edit(&env, "./ed.sh", &["--json"]));
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 2\n}\n");
}

#[test]
fn editor_arguments_and_visual() {
    let env = env();
    // `sh -c` runs the editor, so arguments in $EDITOR work; $VISUAL wins over $EDITOR.
    env.script(
        "ed.sh",
        r#"[ "$1" = --wait ] || exit 9; echo '{"by": "visual"}' > "$2""#,
    );
    let run = Run::from(
        env.cmd()
            .env("VISUAL", "./ed.sh --wait")
            .env("EDITOR", "false")
            .args(["edit", "s.json"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(env.read_string("s.json"), "{\n  \"by\": \"visual\"\n}\n");
}

#[test]
fn invalid_then_valid() {
    let Some(script) = script_program("invalid_then_valid") else {
        return;
    };
    let env = env();
    // First round: save invalid JSON. Second round (the error is shown at the top):
    // keep a copy of what the editor showed, then save a valid document.
    env.script(
        "ed.sh",
        r#"if grep -q '^// statesafe:' "$1"; then cp "$1" seen.txt; echo '{"n": 3}' > "$1"; else printf '{\n  "n": 2,\n}\n' > "$1"; fi"#,
    );
    snap!(
        "edit_invalid_then_valid",
        edit_on_terminal(&env, &script, "./ed.sh", &[])
    );
    insta::with_settings!({filters => crate::common::filters(), prepend_module_to_snapshot => true, omit_expression => true}, {
        insta::assert_snapshot!("edit_error_shown_in_file", env.read_string("seen.txt"));
    });
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 3\n}\n");
}

#[test]
fn still_invalid_is_abandoned() {
    let Some(script) = script_program("still_invalid_is_abandoned") else {
        return;
    };
    let env = env();
    env.script(
        "ed.sh",
        r#"grep -q '^// statesafe:' "$1" || echo '{oops' > "$1""#,
    );
    snap!(
        "edit_still_invalid",
        edit_on_terminal(&env, &script, "./ed.sh", &[])
    );
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 1\n}\n");
}

/// Issue 12 item 4: without a terminal, an editor (a script) whose output is not
/// JSON is not relaunched (it was, forever, when the output changed each time): the
/// edit is abandoned at once, the edited text kept in a file named in the error.
#[test]
fn invalid_without_a_terminal_is_abandoned_at_once() {
    let env = env();
    // A different invalid document on every launch; valid from the third on, so
    // that the relaunching build ends (and commits) instead of hanging the test.
    env.script(
        "ed.sh",
        r#"n=$(cat launches 2>/dev/null || echo 0); n=$((n + 1)); echo $n > launches
if [ $n -ge 3 ]; then echo '{"n": 9}' > "$1"; else echo "not json $n" > "$1"; fi"#,
    );
    let run = edit(&env, "./ed.sh", &[]);
    snap!("edit_invalid_without_terminal", run);
    assert_eq!(env.read_string("launches"), "1\n");
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 1\n}\n");
    let json = Run::from(
        env.cmd()
            .env("EDITOR", "./ed.sh")
            .args(["edit", "s.json", "--json"])
            .write_stdin("")
            .output()
            .unwrap(),
    );
    assert_eq!(json.code, 4, "{}", json.snapshot());
    let err: serde_json::Value = serde_json::from_str(&json.stderr).unwrap();
    let kept = err["kept"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "not json 2\n");
    assert_eq!(env.read_string("launches"), "2\n");

    // A schema refusal is abandoned the same way.
    env.write(
        "schema.json",
        r#"{"type": "object", "properties": {"n": {"type": "integer"}}}"#,
    );
    env.script("ed2.sh", r#"echo '{"n": "seven"}' > "$1""#);
    snap!(
        "edit_refused_without_terminal",
        edit(&env, "./ed2.sh", &["--schema", "schema.json"])
    );
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 1\n}\n");
}

#[test]
fn editor_failing() {
    let env = env();
    env.script("ed.sh", r#"echo '{"n": 5}' > "$1"; exit 1"#);
    snap!("edit_editor_fails", edit(&env, "./ed.sh", &[]));
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 1\n}\n");
    snap!("edit_editor_missing", edit(&env, "no-such-editor-xyz", &[]));
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 1\n}\n");
}

#[test]
fn empty_file_abandons_and_no_change_is_no_write() {
    let env = env();
    env.script("empty.sh", r#": > "$1""#);
    snap!("edit_empty", edit(&env, "./empty.sh", &[]));
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 1\n}\n");
    snap!("edit_no_change", edit(&env, "true", &["--json"]));
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 1\n}\n");
}

/// Someone else writes while the editor is open: without a terminal to ask on, the
/// edit is abandoned, the other change stays, and the user's version is kept.
#[test]
fn concurrent_change_without_terminal() {
    let env = env();
    let bin = crate::common::bin();
    env.script(
        "ed.sh",
        &format!(r#"{bin} update s.json '.other += 1' && sed -i 's/"n": 1/"n": 2/' "$1""#),
    );
    let run = edit(&env, "./ed.sh", &[]);
    snap!("edit_conflict", run);
    assert_eq!(
        env.read_string("s.json"),
        "{\n  \"n\": 1,\n  \"other\": 1\n}\n"
    );
    let kept: Vec<_> = std::fs::read_dir(env.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("statesafe-edit-kept-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read_to_string(&kept[0]).unwrap(),
        "{\n  \"n\": 2\n}\n"
    );
    let json = Run::from(
        env.cmd()
            .env("EDITOR", "./ed.sh")
            .args(["--json", "edit", "s.json"])
            .output()
            .unwrap(),
    );
    assert_eq!(json.code, 6);
    let err: serde_json::Value = serde_json::from_str(&json.stderr).unwrap();
    assert_eq!(err["kind"], "generation_conflict");
}

#[test]
fn missing_file() {
    let env = Env::new();
    snap!("edit_missing_file", env.run(&["edit", "new.json"]));
    env.script("ed.sh", r#"echo '{"fresh": true}' > "$1""#);
    let run = Run::from(
        env.cmd()
            .env("EDITOR", "./ed.sh")
            .args(["edit", "new.json", "--create"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(env.read_string("new.json"), "{\n  \"fresh\": true\n}\n");
}

/// The temporary copy is private and removed afterwards.
#[test]
fn temporary_copy_is_private_and_removed() {
    let env = env();
    env.script(
        "ed.sh",
        r#"stat -c %a "$1" > mode.txt; echo "$1" > path.txt"#,
    );
    assert_eq!(edit(&env, "./ed.sh", &[]).code, 0);
    assert_eq!(env.read_string("mode.txt"), "600\n");
    let path = env.read_string("path.txt");
    assert!(!std::path::Path::new(path.trim()).exists());
}

/// A document that breaks the schema reopens the editor with the reason on top.
#[test]
fn schema_violation_reopens_the_editor() {
    let Some(script) = script_program("schema_violation_reopens_the_editor") else {
        return;
    };
    let env = env();
    env.write(
        "schema.json",
        r#"{"type": "object", "properties": {"n": {"type": "integer"}}}"#,
    );
    env.script(
        "ed.sh",
        r#"if grep -q '^// statesafe:' "$1"; then head -1 "$1" > seen.txt; echo '{"n": 7}' > "$1"; else echo '{"n": "seven"}' > "$1"; fi"#,
    );
    snap!(
        "edit_schema_violation",
        edit_on_terminal(&env, &script, "./ed.sh", &["--schema", "schema.json"])
    );
    insta::with_settings!({filters => crate::common::filters(), prepend_module_to_snapshot => true, omit_expression => true}, {
        insta::assert_snapshot!("edit_schema_error_shown", env.read_string("seen.txt"));
    });
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 7\n}\n");
}

/// With a terminal (a pty from util-linux `script`), a concurrent change asks the
/// user: `r` reopens the editor on the other writer's version, `a` abandons.
#[test]
fn concurrent_change_on_a_terminal_asks() {
    let Some(script) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("script"))
        .find(|p| p.is_file())
    else {
        crate::common::skipped(
            "concurrent_change_on_a_terminal_asks",
            "util-linux `script` is not installed",
        );
        return;
    };
    for (answer, code, n) in [("r", 0, 3), ("a", 6, 1)] {
        let env = env();
        let bin = crate::common::bin();
        // First session: another writer commits, then the user's edit. Second
        // session (after `r`): keep what the editor showed, edit on top of it.
        env.script(
            "ed.sh",
            &format!(
                r#"if [ ! -e marker ]; then touch marker; {bin} update s.json '.other = 1' && sed -i 's/"n": 1/"n": 2/' "$1"; else cp "$1" seen.txt; sed -i 's/"n": 1/"n": 3/' "$1"; fi"#
            ),
        );
        let mut child = std::process::Command::new(&script)
            .current_dir(env.dir())
            .env("EDITOR", "./ed.sh")
            .env("TMPDIR", env.dir())
            .args(["-qec", &format!("{bin} edit s.json"), "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{answer}: {text}");
        assert!(
            text.contains("Edit again on top of the new version? [r]etry / [a]bandon"),
            "{text}"
        );
        let doc: serde_json::Value = serde_json::from_slice(&env.read("s.json")).unwrap();
        assert_eq!(doc, serde_json::json!({"n": n, "other": 1}), "{answer}");
        if answer == "r" {
            let seen = env.read_string("seen.txt");
            assert!(
                seen.starts_with("// statesafe: `s.json` changed while you were editing"),
                "{seen}"
            );
        }
    }
}
