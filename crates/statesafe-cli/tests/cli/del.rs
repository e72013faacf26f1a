//! `statesafe del`.

use crate::common::Env;
use crate::snap;

fn env() -> Env {
    let env = Env::new();
    env.state(
        "s.json",
        "{\n  \"a\": 1,\n  \"b\": {\n    \"c\": [1, 2]\n  },\n  \"d\": 4\n}\n",
    );
    env
}

#[test]
fn deletes_and_keeps_order() {
    let env = env();
    snap!("del_value", env.run(&["del", "s.json", "/a"]));
    assert_eq!(env.run(&["del", "s.json", "/b/c/0"]).code, 0);
    assert_eq!(
        env.read_string("s.json"),
        "{\n  \"b\": {\n    \"c\": [\n      2\n    ]\n  },\n  \"d\": 4\n}\n"
    );
}

#[test]
fn missing_value() {
    let env = env();
    snap!(
        "del_missing_value",
        env.run_unchanged("s.json", &["del", "s.json", "/zz"])
    );
    let before = env.read("s.json");
    snap!(
        "del_missing_ok",
        env.run(&["del", "s.json", "/zz", "--missing-ok", "--json"])
    );
    assert_eq!(env.read("s.json"), before);
}

#[test]
fn refusals() {
    let env = env();
    snap!(
        "del_root",
        env.run_unchanged("s.json", &["del", "s.json", ""])
    );
    snap!(
        "del_through_scalar",
        env.run_unchanged("s.json", &["del", "s.json", "/a/x"])
    );
    snap!("del_missing_file", env.run(&["del", "nope.json", "/a"]));
}
