//! `statesafe completions` and `statesafe man`.

use crate::common::Env;
use crate::snap;

#[test]
fn completions_for_every_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let run = env.run(&["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        for word in ["statesafe", "update", "lock-timeout"] {
            assert!(
                run.stdout.contains(word),
                "{shell} completions lack `{word}`"
            );
        }
    }
    snap!(
        "completions_unknown_shell",
        env.run(&["completions", "tcsh"])
    );
}

#[test]
fn bash_completions_load() {
    let env = Env::new();
    let script = env.run(&["completions", "bash"]).stdout;
    env.write("c.bash", script);
    let out = std::process::Command::new("bash")
        .current_dir(env.dir())
        .args(["-c", "source ./c.bash && complete -p statesafe"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn man_page() {
    let env = Env::new();
    let run = env.run(&["man"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.starts_with(".ie \\n(.g .ds Aq") || run.stdout.contains(".TH statesafe"),
        "{}",
        &run.stdout[..200.min(run.stdout.len())]
    );
    assert!(run.stdout.contains("Exit codes"));
    let dir = env.path("man1");
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(env.run(&["man", "--dir", "man1"]).code, 0);
    for page in [
        "statesafe.1",
        "statesafe-update.1",
        "statesafe-lock.1",
        "statesafe-edit.1",
    ] {
        assert!(dir.join(page).is_file(), "missing {page}");
    }
    snap!("man_missing_dir", env.run(&["man", "--dir", "no/such/dir"]));
}

/// Issue 12 item 9: `statesafe man > statesafe.1` is the whole manual: every
/// subcommand with its options on the one page, no references to
/// `statesafe-get(1)` pages that exist only with `--dir`.
#[test]
fn man_single_page_has_every_subcommands_options() {
    let env = Env::new();
    let run = env.run(&["man"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let page = &run.stdout;
    assert!(!page.contains("(1)"), "refers to other pages:\n{page}");
    for sub in [
        "get",
        "set",
        "del",
        "update",
        "write",
        "init",
        "exec",
        "lock",
        "edit",
        "check",
        "recover",
        "backups",
        "restore",
        "log",
        "diff",
        "info",
        "settings",
        "completions",
        "man",
        "torture",
    ] {
        assert!(
            page.contains(&format!(".SS \"statesafe {sub}\"")),
            "no section for `{sub}`"
        );
    }
    for option in [
        "missing\\-ok",
        "if\\-generation",
        "argjson",
        "keep\\-backups",
        "no\\-schema",
        "\\-\\-patch",
        "\\-\\-timeout",
        "\\-\\-create",
        "\\-\\-exist\\-ok",
    ] {
        assert!(page.contains(option), "the page lacks `{option}`");
    }
    assert_eq!(
        page.matches("Exit codes:").count(),
        1,
        "one exit-code table"
    );
    assert!(page.contains(".SH \"EXIT STATUS\""));
}
