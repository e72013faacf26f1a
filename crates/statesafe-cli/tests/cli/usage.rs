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
        no_args.stderr.contains("Exit codes:"),
        "{}",
        no_args.snapshot()
    );
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
        eprintln!(
            "SKIPPED colour_on_a_terminal_unless_no_color: util-linux `script` is not installed"
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
