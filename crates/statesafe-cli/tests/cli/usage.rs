//! Usage errors (exit 2) and help.

use crate::common::Env;
use crate::snap;

#[test]
fn help_lists_commands_and_exit_codes() {
    let env = Env::new();
    snap!("help", env.run(&["--help"]));
    snap!("help_update", env.run(&["update", "--help"]));
    let no_args = env.run(&[]);
    assert_eq!(no_args.code, 2);
    assert!(
        no_args.stderr.contains("Commands:") && no_args.stderr.contains("--help"),
        "{}",
        no_args.snapshot()
    );
}

/// Issue 12 item 11: `-h` is the short help, without the exit-code table that
/// `--help` ends with; `lock --timeout` says what its default is like every writer.
#[test]
fn short_help_leaves_the_exit_codes_to_long_help() {
    let env = Env::new();
    snap!("help_short_lock", env.run(&["lock", "-h"]));
    for args in [&["-h"][..], &["update", "-h"], &["get", "-h"]] {
        let short = env.run(args);
        assert_eq!(short.code, 0);
        assert!(
            !short.stdout.contains("Exit codes:"),
            "{}",
            short.snapshot()
        );
    }
    for args in [&["--help"][..], &["update", "--help"], &["lock", "--help"]] {
        let long = env.run(args);
        assert!(long.stdout.contains("Exit codes:"), "{}", long.snapshot());
    }
}

/// Issue 12 item 11: a negative count is told it must be 0 or more, not to write
/// `-- -1`.
#[test]
fn negative_counts_must_be_0_or_more() {
    let env = Env::new();
    snap!(
        "usage_negative_keep_backups",
        env.run(&["settings", "s.json", "--keep-backups", "-1"])
    );
    for args in [
        &["init", "s.json", "--keep-history", "-2"][..],
        &["settings", "s.json", "--max-bytes", "-1"],
        &["restore", "s.json", "--generation", "-1"],
        &["log", "s.json", "-n", "-5"],
        &["diff", "s.json", "-1"],
        &["write", "s.json", "--if-generation", "-1"],
    ] {
        env.run(args).assert_failed(args, 2, "must be 0 or more");
    }
    assert!(!env.path("s.json").exists());
}

#[test]
fn version() {
    snap!("version", Env::new().run(&["--version"]));
}

#[test]
fn unknown_flags_and_commands() {
    let env = Env::new();
    snap!(
        "usage_unknown_flag",
        env.run(&["get", "s.json", "--frobnicate"])
    );
    snap!("usage_unknown_command", env.run(&["frobnicate", "s.json"]));
    snap!("usage_missing_argument", env.run(&["set", "s.json", "/a"]));
    snap!(
        "usage_unknown_flag_json",
        env.run(&["--json", "get", "s.json", "--frobnicate"])
    );
    snap!(
        "usage_missing_dashes_json",
        env.run(&["exec", "s.json", "--json", "cat"])
    );
    assert!(!env.path("s.json").exists());
}

/// No colour when stderr is not a terminal, and with `NO_COLOR` set.
#[test]
fn no_colour_without_a_terminal() {
    let env = Env::new();
    let plain = env.run(&["get", "nope.json"]);
    assert!(!plain.stderr.contains('\x1b'), "{:?}", plain.stderr);
    let out = env
        .cmd()
        .env("NO_COLOR", "1")
        .args(["get", "nope.json"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\x1b'));
}

/// On a terminal (a pty from util-linux `script`), `error:` is coloured, unless
/// `NO_COLOR` is set.
#[test]
fn colour_on_a_terminal_unless_no_color() {
    let env = Env::new();
    let Some(script) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("script"))
        .find(|p| p.is_file())
    else {
        crate::common::skipped(
            "colour_on_a_terminal_unless_no_color",
            "util-linux `script` is not installed",
        );
        return;
    };
    let command = format!("{} get nope.json", crate::common::bin());
    let run = |no_color: bool| {
        let mut cmd = std::process::Command::new(&script);
        cmd.current_dir(env.dir())
            .args(["-qec", &command, "/dev/null"])
            .env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    let coloured = run(false);
    assert!(coloured.contains("\x1b[1;31merror:\x1b[0m"), "{coloured:?}");
    let plain = run(true);
    assert!(plain.contains("error: state file"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "{plain:?}");
}
