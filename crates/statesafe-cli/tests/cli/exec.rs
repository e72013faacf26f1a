//! `statesafe exec`.

use crate::common::Env;
use crate::snap;

fn env() -> Env {
    let env = Env::new();
    env.state("s.json", "{\n  \"n\": 1\n}\n");
    env
}

#[test]
fn commits_the_output() {
    let env = env();
    env.script("bump.sh", r#"sed 's/"n": 1/"n": 2/'"#);
    snap!(
        "exec_commit",
        env.run(&["exec", "s.json", "--json", "--", "./bump.sh"])
    );
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 2\n}\n");
}

#[test]
fn passes_stderr_and_environment() {
    let env = env();
    env.script(
        "show.sh",
        r#"cat >/dev/null; echo "file=$STATESAFE_FILE generation=$STATESAFE_GENERATION" >&2; echo '{"replaced": true}'"#,
    );
    snap!(
        "exec_env_and_stderr",
        env.run(&["exec", "s.json", "--", "./show.sh"])
    );
    assert_eq!(env.read_string("s.json"), "{\n  \"replaced\": true\n}\n");
}

#[test]
fn large_documents_do_not_deadlock() {
    let env = Env::new();
    let items: Vec<_> = (0..40_000).map(|i| format!("\"item {i}\"")).collect();
    env.state("big.json", &format!("[{}]", items.join(",")));
    let run = env.run(&["exec", "big.json", "--", "cat"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let doc: serde_json::Value = serde_json::from_slice(&env.read("big.json")).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 40_000);
}

#[test]
fn failing_command_leaves_the_file() {
    let env = env();
    env.script(
        "fail.sh",
        "cat >/dev/null; echo '{\"n\": 99}'; echo 'bad things' >&2; exit 3",
    );
    snap!(
        "exec_failing_command",
        env.run_unchanged("s.json", &["exec", "s.json", "--", "./fail.sh"])
    );
    env.script("die.sh", "kill -9 $$");
    snap!(
        "exec_killed_command",
        env.run_unchanged("s.json", &["exec", "s.json", "--", "./die.sh"])
    );
}

#[test]
fn invalid_output_leaves_the_file() {
    let env = env();
    snap!(
        "exec_invalid_output",
        env.run_unchanged("s.json", &["exec", "s.json", "--", "echo", "{n: 2}"])
    );
    snap!(
        "exec_two_documents",
        env.run_unchanged("s.json", &["exec", "s.json", "--", "echo", "{} {}"])
    );
    snap!(
        "exec_no_output",
        env.run_unchanged("s.json", &["exec", "s.json", "--", "true"])
    );
    snap!(
        "exec_invalid_output_json",
        env.run_unchanged(
            "s.json",
            &["--json", "exec", "s.json", "--", "echo", "nope"]
        )
    );
}

#[test]
fn commands_that_cannot_run() {
    let env = env();
    snap!(
        "exec_missing_dashes",
        env.run_unchanged("s.json", &["exec", "s.json", "cat"])
    );
    snap!(
        "exec_no_command",
        env.run_unchanged("s.json", &["exec", "s.json", "--"])
    );
    snap!(
        "exec_command_not_found",
        env.run_unchanged("s.json", &["exec", "s.json", "--", "no-such-command-xyz"])
    );
    env.write("not-executable.sh", "echo {}");
    snap!(
        "exec_not_executable",
        env.run_unchanged("s.json", &["exec", "s.json", "--", "./not-executable.sh"])
    );
}

#[test]
fn missing_file() {
    let env = Env::new();
    snap!(
        "exec_missing_file",
        env.run(&["exec", "new.json", "--", "cat"])
    );
    assert!(!env.path("new.json").exists());
    assert_eq!(
        env.run(&["exec", "new.json", "--create", "--", "cat"]).code,
        0
    );
    assert_eq!(env.read_string("new.json"), "{}\n");
}

/// A command that prints without end (`yes`, `cat /dev/zero`, a runaway loop) is
/// stopped at a memory allowance, as a jq expression is: its output is not gathered
/// until the machine runs out of memory (2 GB resident after 5 s of `cat /dev/zero`
/// before). The allowance is 1 GiB (or four times the document, if larger).
#[test]
fn endless_output_is_cut_at_the_memory_allowance() {
    let env = env();
    let run = env.run_unchanged(
        "s.json",
        &[
            "exec",
            "s.json",
            "--eval-timeout",
            "10m",
            "--",
            "sh",
            "-c",
            "cat >/dev/null; head -c 1200M /dev/zero",
        ],
    );
    assert_eq!(run.code, 15, "{}", run.snapshot());
    assert!(run.stderr.contains("printed more than"), "{}", run.stderr);
    // The lock was released: a writer goes through at once.
    let run = env.run(&["set", "s.json", "/n", "2", "--lock-timeout", "0"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
}
