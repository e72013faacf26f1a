//! `scripts/test` and its stages: the closing summary names everything that was not
//! done (issue 12 item 8). Each script runs on a copy, in a scratch tree, with fake
//! `cargo`, `strace` and harness binaries, so that only its own bookkeeping is tested.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Env, Run};

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn executable(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A scratch tree with `scripts/<script>` copied from the repository and a `fake-bin`
/// directory holding `cargo`, `cargo-nextest` and `strace` that do nothing.
fn tree(env: &Env, scripts: &[&str]) {
    for script in scripts {
        let to = env.path(&format!("scripts/{script}"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo().join("scripts").join(script), &to).unwrap();
    }
    for tool in ["cargo", "cargo-nextest", "strace"] {
        executable(&env.path(&format!("fake-bin/{tool}")), "exit 0");
    }
}

/// Runs `bash SCRIPT` in the tree with the fakes first on PATH.
fn run(env: &Env, script: &str, summary: Option<&Path>) -> Run {
    let path = format!(
        "{}:{}",
        env.path("fake-bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg(env.path(script))
        .current_dir(env.dir())
        .env("PATH", path)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("STATESAFE_COUNTS")
        .env_remove("STATESAFE_SUMMARY");
    if let Some(summary) = summary {
        cmd.env("STATESAFE_SUMMARY", summary);
    }
    Run::from(cmd.output().unwrap())
}

#[test]
fn closing_summary_lists_skips_and_missed_targets_by_name() {
    let env = Env::new();
    tree(&env, &["test"]);
    executable(
        &env.path("scripts/test.d/10-one.sh"),
        r#"echo 5 >> "$STATESAFE_COUNTS"
echo "SKIPPED layer d on xfs: mkfs.xfs is not installed" >> "$STATESAFE_SUMMARY""#,
    );
    executable(
        &env.path("scripts/test.d/20-two.sh"),
        r#"echo 3 >> "$STATESAFE_COUNTS"
echo "MISSED bench target: CLI update within 3 ms: 4.1 ms" >> "$STATESAFE_SUMMARY"
echo "SKIPPED layer d on xfs: mkfs.xfs is not installed" >> "$STATESAFE_SUMMARY""#,
    );
    let run = run(&env, "scripts/test", None);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let lines: Vec<&str> = run.stdout.lines().collect();
    let tail = &lines[lines.len() - 4..];
    assert!(
        tail[0].starts_with("==> all 2 stages passed in ")
            && tail[0].ends_with("; skipped: 1, benchmark targets missed: 1"),
        "{}",
        run.stdout
    );
    assert_eq!(
        &tail[1..],
        [
            "  SKIPPED layer d on xfs: mkfs.xfs is not installed",
            "  MISSED bench target: CLI update within 3 ms: 4.1 ms",
            "tests: 8 passed, 0 failed",
        ],
        "{}",
        run.stdout
    );
}

#[test]
fn nothing_skipped_still_ends_with_the_tests_line() {
    let env = Env::new();
    tree(&env, &["test"]);
    executable(
        &env.path("scripts/test.d/10-one.sh"),
        r#"echo 2 >> "$STATESAFE_COUNTS""#,
    );
    let run = run(&env, "scripts/test", None);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[lines.len() - 2].ends_with("; skipped: 0, benchmark targets missed: 0"));
    assert_eq!(lines[lines.len() - 1], "tests: 2 passed, 0 failed");
}

#[test]
fn a_missing_prerequisite_is_named_up_front() {
    let env = Env::new();
    tree(&env, &["test"]);
    std::fs::remove_file(env.path("fake-bin/cargo-nextest")).unwrap();
    if std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .any(|d| d.join("cargo-nextest").is_file())
    {
        // The real one is on PATH: hide it by running with a PATH of our own.
        let bash = Command::new("sh")
            .args([
                "-c",
                "command -v bash mktemp awk grep sed date dirname cat rm",
            ])
            .output()
            .unwrap();
        for tool in String::from_utf8_lossy(&bash.stdout).lines() {
            let name = Path::new(tool).file_name().unwrap();
            std::os::unix::fs::symlink(tool, env.path("fake-bin").join(name)).unwrap();
        }
        let out = Command::new(env.path("fake-bin/bash"))
            .arg(env.path("scripts/test"))
            .env("PATH", env.path("fake-bin"))
            .output()
            .unwrap();
        let run = Run::from(out);
        assert_eq!(run.code, 1, "{}", run.snapshot());
        assert!(
            run.stderr.contains("missing cargo-nextest"),
            "{}",
            run.snapshot()
        );
        assert!(run.stderr.contains(".ci/run"), "{}", run.snapshot());
        return;
    }
    let run = run(&env, "scripts/test", None);
    assert_eq!(run.code, 1, "{}", run.snapshot());
    assert!(
        run.stderr.contains("missing cargo-nextest"),
        "{}",
        run.snapshot()
    );
}

#[test]
fn torture_stage_counts_and_names_only_the_skipped_filesystems() {
    let env = Env::new();
    tree(&env, &["test.d/40-torture.sh", "release-build"]);
    executable(
        &env.path("target/release/torture-suite"),
        r#"case "$1" in
  order) [ "$2" = --eatmydata ] && exit 1; echo "order: crash states checked: 400, violations: 0" ;;
  kill|errors) echo "$1: crash states checked: 400, violations: 0" ;;
  stress) echo "stress: crash states checked: 10, violations: 0" ;;
  fs)
    echo "fs [ext4 data=ordered]: crash states checked: 50, violations: 0"
    echo "fs [xfs]: SKIPPED (not run, not passed): mkfs.xfs is not installed (xfsprogs)"
    echo "fs [btrfs]: SKIPPED (not run, not passed): mkfs.btrfs is not installed (btrfs-progs)"
    echo "fs: 2 of 5 filesystems SKIPPED" ;;
esac
exit 0"#,
    );
    let summary = env.path("summary");
    let run = run(&env, "scripts/test.d/40-torture.sh", Some(&summary));
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert!(
        run.stdout.contains(
            "torture total: crash states checked: 2060, violations: 0, filesystems skipped: 2\n"
        ),
        "{}",
        run.snapshot()
    );
    assert_eq!(
        std::fs::read_to_string(&summary).unwrap(),
        "SKIPPED 40-torture layer d on xfs: mkfs.xfs is not installed (xfsprogs)\n\
         SKIPPED 40-torture layer d on btrfs: mkfs.btrfs is not installed (btrfs-progs)\n"
    );
}

#[test]
fn bench_stage_names_skipped_sections_and_missed_targets() {
    let env = Env::new();
    tree(&env, &["test.d/60-bench.sh", "release-build"]);
    executable(
        &env.path("target/release/statesafe-bench"),
        r#"while [ $# -gt 0 ]; do
  case "$1" in --out-md) md=$2; shift ;; --out-svg) svg=$2; shift ;; esac
  shift
done
printf '## 1. Durable update\n## 2. Contended updates\n## 3. Load latency\n## 4. Peak memory\n' > "$md"
echo '<svg/>' > "$svg"
echo "cli: SKIPPED: hyperfine is not installed" >&2
printf 'targets:\n  [met] 1 KiB update within 1.5x of the floor: 1.2x\n  [MISSED] typed API memory at most 2x: 2.5x\n'"#,
    );
    let summary = env.path("summary");
    let run = run(&env, "scripts/test.d/60-bench.sh", Some(&summary));
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(
        std::fs::read_to_string(&summary).unwrap(),
        "SKIPPED 60-bench CLI timings: no target/release/statesafe\n\
         SKIPPED 60-bench cli: hyperfine is not installed\n\
         MISSED 60-bench target: typed API memory at most 2x: 2.5x\n"
    );
}
