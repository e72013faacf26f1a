//! `statesafe write`.

use crate::common::Env;
use crate::snap;

#[test]
fn writes_stdin() {
    let env = Env::new();
    snap!(
        "write_new",
        env.run_stdin(
            &["write", "s.json", "--json"],
            "{\"b\": 1, \"a\": [true, null]}"
        )
    );
    assert_eq!(
        env.read_string("s.json"),
        "{\n  \"b\": 1,\n  \"a\": [\n    true,\n    null\n  ]\n}\n"
    );
}

#[test]
fn invalid_stdin_leaves_the_file() {
    let env = Env::new();
    env.state("s.json", "{\"keep\": 1}\n");
    let before = env.read("s.json");
    snap!(
        "write_invalid_json",
        env.run_stdin(&["write", "s.json"], "{\"a\": 1,\n \"b\": }")
    );
    snap!(
        "write_truncated_json",
        env.run_stdin(&["write", "s.json"], "{\"a\": [1, 2")
    );
    snap!(
        "write_two_documents",
        env.run_stdin(&["write", "s.json"], "{} {}")
    );
    snap!("write_empty_stdin", env.run_stdin(&["write", "s.json"], ""));
    snap!(
        "write_blank_stdin",
        env.run_stdin(&["write", "s.json", "--json"], " \n\t")
    );
    assert_eq!(env.read("s.json"), before);
}

#[test]
fn if_generation() {
    let env = Env::new();
    assert_eq!(
        env.run_stdin(&["write", "s.json", "--if-generation", "0"], "1")
            .code,
        0
    );
    let generation = env.run(&["get", "s.json", "--json"]).json()["generation"]
        .as_u64()
        .unwrap();
    assert_eq!(
        env.run_stdin(
            &[
                "write",
                "s.json",
                "--if-generation",
                &generation.to_string()
            ],
            "2"
        )
        .code,
        0
    );
    let before = env.read("s.json");
    let stale = env.run_stdin(
        &[
            "write",
            "s.json",
            "--if-generation",
            &generation.to_string(),
        ],
        "3",
    );
    snap!("write_generation_conflict", stale);
    assert_eq!(env.read("s.json"), before);
}
