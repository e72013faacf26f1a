//! `statesafe update`.

use crate::common::{Env, Run};
use crate::snap;

fn env() -> Env {
    let env = Env::new();
    env.state(
        "c.json",
        "{\n  \"n\": 1,\n  \"tags\": [\"x\"],\n  \"z\": null\n}\n",
    );
    env
}

#[test]
fn applies_the_expression() {
    let env = env();
    snap!(
        "update_increment",
        env.run(&["update", "c.json", ".n += 1"])
    );
    snap!("update_increment_result", env.run(&["get", "c.json"]));
    snap!(
        "update_json",
        env.run(&["update", "c.json", ".n += 1", "--json"])
    );
}

#[test]
fn args_and_argjson() {
    let env = env();
    let run = env.run(&[
        "update",
        "c.json",
        ".tags += [$t] | .cfg = $c",
        "--arg",
        "t",
        "y",
        "--argjson",
        "c",
        "{\"on\": true}",
    ]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    snap!(
        "update_args_result",
        env.run(&["get", "c.json", "--compact"])
    );
}

#[test]
fn the_environment_is_bound_as_in_jq() {
    // `$ENV` is built only for expressions that can name it: both spellings work.
    let env = env();
    let run = Run::from(
        env.cmd()
            .args([
                "update",
                "c.json",
                ".who = $ENV.STATESAFE_TEST_WHO | .home = env.STATESAFE_TEST_HOME",
            ])
            .env("STATESAFE_TEST_WHO", "cron")
            .env("STATESAFE_TEST_HOME", "/srv")
            .output()
            .expect("run statesafe"),
    );
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(env.run(&["get", "c.json", "/who"]).stdout, "\"cron\"\n");
    assert_eq!(env.run(&["get", "c.json", "/home"]).stdout, "\"/srv\"\n");
}

#[test]
fn deletion_keeps_key_order() {
    let env = env();
    assert_eq!(env.run(&["update", "c.json", "del(.n)"]).code, 0);
    assert_eq!(
        env.read_string("c.json"),
        "{\n  \"tags\": [\n    \"x\"\n  ],\n  \"z\": null\n}\n"
    );
}

#[test]
fn expression_that_does_not_parse() {
    let env = env();
    snap!(
        "update_parse_error",
        env.run_unchanged("c.json", &["update", "c.json", ".n += (1"])
    );
    snap!(
        "update_parse_error_multiline",
        env.run_unchanged("c.json", &["update", "c.json", ".n as $x\n| .m = ]"])
    );
    snap!(
        "update_undefined_filter",
        env.run_unchanged("c.json", &["update", "c.json", ".n | frobnicate"])
    );
    snap!(
        "update_undefined_variable",
        env.run_unchanged("c.json", &["update", "c.json", ".n = $nope"])
    );
    snap!(
        "update_parse_error_json",
        env.run_unchanged("c.json", &["--json", "update", "c.json", "{"])
    );
}

#[test]
fn expression_must_produce_one_value() {
    let env = env();
    snap!(
        "update_no_value",
        env.run_unchanged("c.json", &["update", "c.json", "empty"])
    );
    snap!(
        "update_two_values",
        env.run_unchanged("c.json", &["update", "c.json", ".n, .n"])
    );
    snap!(
        "update_runtime_error",
        env.run_unchanged("c.json", &["update", "c.json", ".n + \"x\""])
    );
    snap!(
        "update_null_parent",
        env.run_unchanged("c.json", &["update", "c.json", ".z.k = 1"])
    );
    snap!(
        "update_halt",
        env.run_unchanged("c.json", &["update", "c.json", "halt_error"])
    );
    snap!(
        "update_bytes",
        env.run_unchanged("c.json", &["update", "c.json", "\"x\" | tobytes"])
    );
}

#[test]
fn missing_file() {
    let env = Env::new();
    snap!(
        "update_missing_file",
        env.run(&["update", "new.json", ".n += 1"])
    );
    assert!(!env.path("new.json").exists());
    snap!(
        "update_create",
        env.run(&["update", "new.json", ".n += 1", "--create", "--json"])
    );
    assert_eq!(env.read_string("new.json"), "{\n  \"n\": 1\n}\n");
}

#[test]
fn bad_argjson() {
    let env = env();
    snap!(
        "update_bad_argjson",
        env.run_unchanged(
            "c.json",
            &["update", "c.json", "$x", "--argjson", "x", "{oops"]
        )
    );
}
