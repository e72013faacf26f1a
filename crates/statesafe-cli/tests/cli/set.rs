//! `statesafe set`.

use std::os::unix::fs::PermissionsExt;

use crate::common::Env;
use crate::snap;

#[test]
fn creates_the_file_and_parents() {
    let env = Env::new();
    snap!(
        "set_new_file",
        env.run(&["set", "s.json", "/a/b/c", "[1, 2]"])
    );
    snap!("set_new_file_content", env.run(&["get", "s.json"]));
}

/// Issue 12 item 11: a missing parent followed by an index becomes an array, as in
/// jq's `.users[0].name = "ada"` (it used to be an object with the key "0").
#[test]
fn missing_parent_before_an_index_is_an_array() {
    let env = Env::new();
    let run = env.run(&["set", "new.json", "/users/0/name", "--string", "ada"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&env.read("new.json")).unwrap(),
        serde_json::json!({"users": [{"name": "ada"}]})
    );
    assert_eq!(
        env.run(&["set", "new.json", "/users/-/name", "--string", "bo"])
            .code,
        0
    );
    assert_eq!(
        env.run(&["get", "new.json", "/users/1/name", "--raw"])
            .stdout,
        "bo\n"
    );
    snap!(
        "set_new_array_past_its_end",
        env.run(&["set", "new.json", "/tags/3", "1"])
    );
}

#[test]
fn string_flag_and_root() {
    let env = Env::new();
    assert_eq!(
        env.run(&["set", "s.json", "/owner", "--string", "ada"])
            .code,
        0
    );
    assert_eq!(env.read_string("s.json"), "{\n  \"owner\": \"ada\"\n}\n");
    assert_eq!(env.run(&["set", "s.json", "", "[true]"]).code, 0);
    assert_eq!(env.read_string("s.json"), "[\n  true\n]\n");
    assert_eq!(env.run(&["set", "s.json", "/-", "false"]).code, 0);
    assert_eq!(env.run(&["set", "s.json", "/-", "-1.5"]).code, 0);
    assert_eq!(env.run(&["del", "s.json", "/2"]).code, 0);
    assert_eq!(env.run(&["set", "s.json", "/0", "0"]).code, 0);
    assert_eq!(env.read_string("s.json"), "[\n  0,\n  false\n]\n");
}

#[test]
fn json_output() {
    let env = Env::new();
    snap!("set_json", env.run(&["--json", "set", "s.json", "/n", "1"]));
    snap!(
        "set_json_same_value",
        env.run(&["--json", "set", "s.json", "/n", "1"])
    );
}

#[test]
fn pointer_through_a_non_object() {
    let env = Env::new();
    env.state("s.json", "{\"n\": 5, \"list\": [1]}\n");
    snap!(
        "set_through_number",
        env.run_unchanged("s.json", &["set", "s.json", "/n/x", "1"])
    );
    snap!(
        "set_through_array",
        env.run_unchanged("s.json", &["set", "s.json", "/list/x", "1"])
    );
    snap!(
        "set_index_out_of_range",
        env.run_unchanged("s.json", &["set", "s.json", "/list/5", "1"])
    );
}

#[test]
fn value_that_is_not_json() {
    let env = Env::new();
    env.state("s.json", "{}\n");
    snap!(
        "set_unquoted_string",
        env.run_unchanged("s.json", &["set", "s.json", "/name", "ada"])
    );
    snap!(
        "set_invalid_json",
        env.run_unchanged("s.json", &["set", "s.json", "/a", "{\"a\":"])
    );
}

#[test]
fn invalid_pointer() {
    let env = Env::new();
    env.state("s.json", "{}\n");
    snap!(
        "set_invalid_pointer",
        env.run_unchanged("s.json", &["set", "s.json", "a.b", "1"])
    );
}

#[test]
fn bad_paths() {
    let env = Env::new();
    std::fs::create_dir(env.path("d")).unwrap();
    snap!("set_directory", env.run(&["set", "d", "/a", "1"]));
    snap!(
        "set_missing_parent_directory",
        env.run(&["set", "no/such/dir/s.json", "/a", "1"])
    );
    assert!(!env.path("no").exists());
}

#[test]
fn private_new_file_and_kept_mode() {
    let env = Env::new();
    assert_eq!(env.run(&["set", "p.json", "/a", "1", "--private"]).code, 0);
    let mode = std::fs::metadata(env.path("p.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    env.state("k.json", "{}");
    std::fs::set_permissions(env.path("k.json"), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(env.run(&["set", "k.json", "/a", "1"]).code, 0);
    let mode = std::fs::metadata(env.path("k.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn bad_lock_timeout_is_a_usage_error() {
    let env = Env::new();
    snap!(
        "set_bad_duration",
        env.run(&["set", "s.json", "/a", "1", "--lock-timeout", "5 parsecs"])
    );
    snap!(
        "set_bad_durability",
        env.run(&["set", "s.json", "/a", "1", "--durability", "some"])
    );
    assert!(!env.path("s.json").exists());
}

/// A step after a durable commit that fails (here: the history segment is a FIFO
/// another user planted, which statesafe refuses to open) never turns the commit into
/// an error, but it is not silent either: the command warns on stderr.
#[test]
fn a_failed_history_record_is_a_warning_not_silence() {
    let env = Env::new();
    assert_eq!(env.run(&["set", "s.json", "/a", "1"]).code, 0);
    let history = env.path(".s.json.statesafe/history");
    let segment = std::fs::read_dir(&history)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("a history segment after the first commit");
    std::fs::remove_file(&segment).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&segment)
        .status()
        .unwrap();
    assert!(made.success());
    let run = env.run(&["set", "s.json", "/a", "2"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert!(
        run.stderr.contains("warning") && run.stderr.contains("recording history failed"),
        "{}",
        run.snapshot()
    );
    assert_eq!(env.run(&["get", "s.json", "/a"]).stdout, "2\n");
}
