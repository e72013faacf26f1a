//! `statesafe get`.

use std::io::Read;
use std::process::Stdio;

use crate::common::Env;
use crate::snap;

fn env() -> Env {
    let env = Env::new();
    env.state(
        "s.json",
        "{\n  \"name\": \"ada\",\n  \"users\": [{\"id\": 1}, {\"id\": 2}],\n  \"a/b\": true\n}\n",
    );
    env
}

#[test]
fn whole_document() {
    snap!("get_whole_document", env().run(&["get", "s.json"]));
}

#[test]
fn value_at_pointer() {
    let env = env();
    snap!("get_pointer", env.run(&["get", "s.json", "/users/1"]));
    snap!("get_pointer_escaped", env.run(&["get", "s.json", "/a~1b"]));
}

#[test]
fn raw_and_compact() {
    let env = env();
    snap!("get_string", env.run(&["get", "s.json", "/name"]));
    snap!("get_raw", env.run(&["get", "s.json", "/name", "--raw"]));
    snap!("get_compact", env.run(&["get", "s.json", "--compact"]));
}

#[test]
fn json_output_has_the_generation() {
    let env = env();
    let run = env.run(&["--json", "get", "s.json", "/name"]);
    snap!("get_json", run);
    let run = env.run(&["set", "s.json", "/n", "1"]);
    assert_eq!(run.code, 0);
    let out = env.run(&["get", "s.json", "/n", "--json"]).json();
    assert!(out["generation"].as_u64().unwrap() >= 1, "{out}");
}

#[test]
fn missing_file_is_not_found() {
    let env = Env::new();
    snap!("get_missing_file", env.run(&["get", "nope.json"]));
    snap!(
        "get_missing_file_json",
        env.run(&["get", "nope.json", "--json"])
    );
}

#[test]
fn missing_value_is_not_found() {
    let env = env();
    snap!(
        "get_missing_value",
        env.run(&["get", "s.json", "/users/7/id"])
    );
    snap!("get_through_scalar", env.run(&["get", "s.json", "/name/x"]));
}

#[test]
fn bad_pointer() {
    let env = env();
    snap!(
        "get_pointer_without_slash",
        env.run(&["get", "s.json", "users.0"])
    );
    snap!(
        "get_pointer_bad_escape",
        env.run(&["get", "s.json", "/a~2"])
    );
}

#[test]
fn directory_as_file() {
    let env = env();
    std::fs::create_dir(env.path("d")).unwrap();
    snap!("get_directory", env.run(&["get", "d"]));
}

#[test]
fn corrupt_file() {
    let env = Env::new();
    env.write("bad.json", "{\"a\": [1, 2\n");
    snap!(
        "get_corrupt",
        env.run_unchanged("bad.json", &["get", "bad.json"])
    );
}

/// `statesafe get big.json | head -c 1`: the reader goes away; exit quietly.
#[test]
fn closed_pipe_exits_quietly() {
    let env = Env::new();
    let items: Vec<_> = (0..50_000)
        .map(|i| format!("\"item number {i}\""))
        .collect();
    env.write("big.json", format!("[{}]", items.join(",")));
    let mut child = std::process::Command::new(crate::common::bin())
        .current_dir(env.dir())
        .args(["get", "big.json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"[");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
}
