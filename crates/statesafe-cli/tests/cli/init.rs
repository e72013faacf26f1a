//! `statesafe init`.

use crate::common::Env;
use crate::snap;

#[test]
fn creates() {
    let env = Env::new();
    snap!("init_default", env.run(&["init", "a.json"]));
    assert_eq!(env.read_string("a.json"), "{}\n");
    snap!(
        "init_with_document",
        env.run(&["init", "b.json", "[1, 2]", "--json"])
    );
    assert_eq!(env.read_string("b.json"), "[\n  1,\n  2\n]\n");
    assert_eq!(
        env.run_stdin(&["init", "c.json", "-"], "{\"from\": \"stdin\"}")
            .code,
        0
    );
    assert_eq!(env.read_string("c.json"), "{\n  \"from\": \"stdin\"\n}\n");
}

#[test]
fn existing_file() {
    let env = Env::new();
    env.state("s.json", "{\"precious\": true}\n");
    snap!(
        "init_exists",
        env.run_unchanged("s.json", &["init", "s.json"])
    );
    let before = env.read("s.json");
    snap!(
        "init_exist_ok",
        env.run(&["init", "s.json", "--exist-ok", "--json"])
    );
    assert_eq!(env.read("s.json"), before);
    snap!(
        "init_force",
        env.run(&["init", "s.json", "[]", "--force", "--json"])
    );
    assert_eq!(env.read_string("s.json"), "[]\n");
    snap!(
        "init_force_and_exist_ok",
        env.run(&["init", "s.json", "--force", "--exist-ok"])
    );
}

#[test]
fn exist_ok_still_checks_the_file() {
    let env = Env::new();
    env.write("s.json", "{oops\n");
    snap!(
        "init_exist_ok_corrupt",
        env.run_unchanged("s.json", &["init", "s.json", "--exist-ok"])
    );
}

#[test]
fn invalid_document() {
    let env = Env::new();
    snap!("init_invalid", env.run(&["init", "s.json", "{\"a\" 1}"]));
    assert!(!env.path("s.json").exists());
}
