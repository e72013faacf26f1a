//! Attacks 1 to 8 of issue 10, each as the attacker prepares it and the victim then
//! runs one ordinary command. Numbers and titles follow the issue.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Ctx, Verdict, counter, judge, mkdir, mkfifo, symlink, unexplained, write};
use crate::run::User;
use crate::snapshot::Snapshot;

/// One attack of the layer.
pub struct Attack {
    pub number: &'static str,
    pub slug: &'static str,
    pub title: &'static str,
    pub run: fn(&Ctx<'_>) -> Result<Verdict, String>,
    /// The modes of `shared/` to run it in. Root writing A's file in the sticky 1777
    /// directory is refused at the door (the protected_regular rule), so attacks on
    /// root through A's sidecar also run in a 0777 directory without the sticky bit (a
    /// project folder several users write), where root does write A's file.
    pub places: &'static [u32],
}

const STICKY: &[u32] = &[0o1777];
const STICKY_AND_OPEN: &[u32] = &[0o1777, 0o777];

pub const ATTACKS: &[Attack] = &[
    Attack {
        number: "1",
        slug: "1-history-symlink",
        title: "history segment symlinked to root's 0600 file, root writes",
        run: history_symlink,
        places: STICKY_AND_OPEN,
    },
    Attack {
        number: "1b",
        slug: "1b-history-hardlink",
        title: "history segment hard-linked to root's 0600 file, root writes",
        run: history_hardlink,
        places: STICKY_AND_OPEN,
    },
    Attack {
        number: "2",
        slug: "2-planted-sidecar",
        title: "sidecar planted by A with `lock` symlinked to B's notes",
        run: planted_sidecar,
        places: STICKY,
    },
    Attack {
        number: "3",
        slug: "3-record-temp-path",
        title: "lock record temp name used as a path",
        run: record_temp_path,
        places: STICKY_AND_OPEN,
    },
    Attack {
        number: "4",
        slug: "4-sidecar-symlink",
        title: "sidecar symlinked to B's ~/.ssh",
        run: sidecar_symlink,
        places: STICKY,
    },
    Attack {
        number: "5",
        slug: "5-state-symlink",
        title: "state file symlinked by A to root's file, root writes",
        run: state_symlink,
        places: STICKY,
    },
    Attack {
        number: "5b",
        slug: "5b-planted-file",
        title: "A plants the name root means to write (0666, A's), root sets a secret",
        run: planted_file,
        places: STICKY,
    },
    Attack {
        number: "6a",
        slug: "6a-sidecar-removed",
        title: "sidecar removed while a writer holds the lock",
        run: sidecar_removed,
        places: STICKY,
    },
    Attack {
        number: "6b",
        slug: "6b-lock-removed",
        title: "lock file removed while a writer holds the lock",
        run: lock_removed,
        places: STICKY,
    },
    Attack {
        number: "7",
        slug: "7-reader-lock",
        title: "read-only user holds the writers' lock",
        run: reader_lock,
        places: STICKY,
    },
    Attack {
        number: "8a",
        slug: "8a-fifo-backup",
        title: "FIFO planted as a backup",
        run: fifo_backup,
        places: STICKY_AND_OPEN,
    },
    Attack {
        number: "8b",
        slug: "8b-temp-names",
        title: "directories and a foreign file planted under temp names",
        run: temp_names,
        places: STICKY,
    },
    Attack {
        number: "8c",
        slug: "8c-fifo-lock",
        title: "FIFO planted as the lock file",
        run: fifo_lock,
        places: STICKY_AND_OPEN,
    },
    Attack {
        number: "8d",
        slug: "8d-fifo-settings",
        title: "FIFO planted as the settings file",
        run: fifo_settings,
        places: STICKY_AND_OPEN,
    },
    Attack {
        number: "8e",
        slug: "8e-fifo-history",
        title: "FIFO planted as a history segment",
        run: fifo_history,
        places: STICKY_AND_OPEN,
    },
];

/// A's file made world-writable; A replaces its history segments with symlinks to
/// root's 0600 `secret`; root sets a value.
fn history_symlink(cx: &Ctx<'_>) -> Result<Verdict, String> {
    let secret = cx.world.rootdir.join("secret");
    plant_history(cx, |path| symlink(&secret, path, User::A))
}

/// Attack 1 with hard links instead of symlinks. The harness makes the links as
/// root; A can make them where `fs.protected_hardlinks` is 0 (the kernel's default).
fn history_hardlink(cx: &Ctx<'_>) -> Result<Verdict, String> {
    let secret = cx.world.rootdir.join("secret");
    plant_history(cx, |path| {
        std::fs::hard_link(&secret, path)
            .map_err(|e| format!("cannot plant the hard link `{}`: {e}", path.display()))
    })
}

/// A's a.json (made by A, with history), mode 0666; every history segment, and the
/// first four segment names, replaced by `plant`; then root sets a value.
fn plant_history(
    cx: &Ctx<'_>,
    plant: impl Fn(&Path) -> Result<(), String>,
) -> Result<Verdict, String> {
    let w = cx.world;
    cx.setup(User::A, &["init", "a.json", r#"{"a":1}"#])?;
    cx.setup(User::A, &["set", "a.json", "/a", "2"])?;
    let history = w.sidecar("a.json").join("history");
    if !history.exists() {
        mkdir(&history, User::A, 0o755)?;
    }
    let mut names: Vec<std::path::PathBuf> = (0..4u64)
        .map(|segment| history.join(format!("seg-{segment:020}.jsonl")))
        .collect();
    for entry in std::fs::read_dir(&history)
        .map_err(|e| format!("cannot list `{}`: {e}", history.display()))?
    {
        let path = entry.map_err(|e| e.to_string())?.path();
        if !names.contains(&path) {
            names.push(path);
        }
    }
    for path in &names {
        if std::fs::symlink_metadata(path).is_ok() {
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove `{}`: {e}", path.display()))?;
        }
        plant(path)?;
    }
    std::fs::set_permissions(
        w.shared.join("a.json"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .map_err(|e| e.to_string())?;
    let before = Snapshot::take(&w.outside())?;
    let victim = cx.run(User::Root, &["set", "a.json", "/a", "4"])?;
    Ok(judge(&victim, &before, &Snapshot::take(&w.outside())?))
}

/// A makes `.c.json.statesafe/` (0777) with `lock` -> B's notes; B creates c.json.
fn planted_sidecar(cx: &Ctx<'_>) -> Result<Verdict, String> {
    let w = cx.world;
    let sidecar = w.sidecar("c.json");
    mkdir(&sidecar, User::A, 0o777)?;
    symlink(&w.home_b.join("notes.txt"), &sidecar.join("lock"), User::A)?;
    let before = Snapshot::take(&w.outside())?;
    let victim = cx.run(User::B, &["init", "c.json", r#"{"c":1}"#])?;
    Ok(judge(&victim, &before, &Snapshot::take(&w.outside())?))
}

/// A's lock record names `.g.json.statesafe-tmp-/../../other/victim.txt` as its
/// temporary file (and A creates that directory); root sets a value.
fn record_temp_path(cx: &Ctx<'_>) -> Result<Verdict, String> {
    let w = cx.world;
    cx.setup(User::A, &["init", "g.json", r#"{"g":1}"#])?;
    let lock = w.sidecar("g.json").join("lock");
    let raw = std::fs::read(&lock).map_err(|e| format!("cannot read `{}`: {e}", lock.display()))?;
    let text = String::from_utf8_lossy(&raw);
    let mut record: serde_json::Value =
        serde_json::from_str(text.trim_end_matches([' ', '\n', '\0']))
            .unwrap_or_else(|_| serde_json::json!({ "last_generation": 1 }));
    let hostile = ".g.json.statesafe-tmp-/../../other/victim.txt";
    record["temp"] = serde_json::Value::from(hostile);
    let mut bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    bytes.resize(raw.len().max(bytes.len() + 1) - 1, b' ');
    bytes.push(b'\n');
    std::fs::write(&lock, &bytes).map_err(|e| format!("cannot write `{}`: {e}", lock.display()))?;
    mkdir(&w.shared.join(".g.json.statesafe-tmp-"), User::A, 0o755)?;
    let before = Snapshot::take(&w.outside())?;
    let victim = cx.run(User::Root, &["set", "g.json", "/g", "2"])?;
    Ok(judge(&victim, &before, &Snapshot::take(&w.outside())?))
}

/// B's b.json has no sidecar yet; A makes `.b.json.statesafe` a symlink to B's
/// `~/.ssh`; B sets a value.
fn sidecar_symlink(cx: &Ctx<'_>) -> Result<Verdict, String> {
    let w = cx.world;
    write(&w.shared.join("b.json"), b"{\"b\": 1}\n", User::B, 0o644)?;
    symlink(&w.home_b.join(".ssh"), &w.sidecar("b.json"), User::A)?;
    let before = Snapshot::take(&w.outside())?;
    let victim = cx.run(User::B, &["set", "b.json", "/b", "2"])?;
    Ok(judge(&victim, &before, &Snapshot::take(&w.outside())?))
}

/// A symlinks `shared/x.json` to root's `config.json`; root sets a value through it.
fn state_symlink(cx: &Ctx<'_>) -> Result<Verdict, String> {
    let w = cx.world;
    let link = w.shared.join("x.json");
    symlink(&w.rootdir.join("config.json"), &link, User::A)?;
    let before = Snapshot::take(&w.outside())?;
    let path = link.to_string_lossy().into_owned();
    let victim = cx.run(User::Root, &["set", &path, "/pwned", "true"])?;
    Ok(judge(&victim, &before, &Snapshot::take(&w.outside())?))
}

/// The kernel's protected_regular case: A creates `app.json` (0666, A's) in the
/// shared directory before root first writes it; root sets a secret there. Whatever
/// root does, A's file must not end up holding the secret.
fn planted_file(cx: &Ctx<'_>) -> Result<Verdict, String> {
    let w = cx.world;
    let planted = w.shared.join("app.json");
    write(&planted, b"{}\n", User::A, 0o666)?;
    let before = Snapshot::take(&w.outside())?;
    let victim = cx.run(User::Root, &["set", "app.json", "/token", "\"s3cret\""])?;
    let mut verdict = judge(&victim, &before, &Snapshot::take(&w.outside())?);
    let now =
        std::fs::read(&planted).map_err(|e| format!("cannot read `{}`: {e}", planted.display()))?;
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(&planted).map_err(|e| e.to_string())?,
    );
    if String::from_utf8_lossy(&now).contains("s3cret") && owner != 0 {
        verdict.problems.push(format!(
            "root's secret was written into A's file (uid {owner})"
        ));
    }
    Ok(verdict)
}

fn sidecar_removed(cx: &Ctx<'_>) -> Result<Verdict, String> {
    split_lock(cx, |sidecar| std::fs::remove_dir_all(sidecar))
}

fn lock_removed(cx: &Ctx<'_>) -> Result<Verdict, String> {
    split_lock(cx, |sidecar| std::fs::remove_file(sidecar.join("lock")))
}

/// Waits until `marker` exists; false if `gone()` says the process it waits for ended.
fn await_marker(marker: &Path, deadline: Duration, mut gone: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if marker.exists() {
            return true;
        }
        if gone() {
            return marker.exists();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Attack 6: B's `exec` holds the lock and has read n = 0; root (a cleanup job)
/// removes the sidecar or the lock file; B's `update '.n += 1'` runs to the end; then
/// the `exec` command prints n = 1 and `exec` commits it. Two acknowledged increments
/// and a counter of 1 is a lost update: every success must be in the counter.
fn split_lock(cx: &Ctx<'_>, remove: fn(&Path) -> std::io::Result<()>) -> Result<Verdict, String> {
    let w = cx.world;
    cx.setup(User::B, &["init", "f.json", r#"{"n":0}"#])?;
    let marks = w.marks.to_string_lossy().into_owned();
    let script = r#"cat >/dev/null; : > "$1/ready"; i=0
while [ ! -e "$1/go" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
echo '{"n":1}'"#;
    let mut holder = cx.start(
        User::B,
        &["exec", "f.json", "--", "sh", "-c", script, "sh", &marks],
    )?;
    if !await_marker(&w.marks.join("ready"), cx.deadline(), || holder.exited()) {
        let o = holder.finish(Duration::ZERO)?;
        return Err(format!("the holder never ran its command: {}", o.summary()));
    }
    let sidecar = w.sidecar("f.json");
    remove(&sidecar).map_err(|e| format!("cannot remove in `{}`: {e}", sidecar.display()))?;
    let update = cx.run(
        User::B,
        &["update", "f.json", ".n += 1", "--lock-timeout", "2s"],
    )?;
    write(&w.marks.join("go"), b"", User::Root, 0o644)?;
    let holder = holder.finish(cx.deadline())?;
    let successes = u64::from(update.ok()) + u64::from(holder.ok());
    let mut problems: Vec<String> = [&holder, &update]
        .into_iter()
        .filter_map(unexplained)
        .collect();
    match counter(&w.shared.join("f.json")) {
        Ok(n) if n == successes => {}
        Ok(n) => problems.push(format!(
            "{successes} increments acknowledged (holder: {}; update: {}), counter {n}: {} lost",
            holder.summary(),
            update.summary(),
            successes.saturating_sub(n)
        )),
        Err(e) => problems.push(e),
    }
    let outcome = match (holder.ok(), update.ok()) {
        (false, true) => format!(
            "harmless (the update committed; the holder whose lock was removed refused: {})",
            holder.summary()
        ),
        (true, false) => format!(
            "harmless (the holder committed; the update refused: {})",
            update.summary()
        ),
        _ => format!(
            "harmless (holder: {}; update: {})",
            holder.summary(),
            update.summary()
        ),
    };
    Ok(Verdict { problems, outcome })
}

/// Root's r.json (0644); C, who may only read it, runs `statesafe lock r.json --
/// sleep 600`; root's update must not time out because of it.
fn reader_lock(cx: &Ctx<'_>) -> Result<Verdict, String> {
    let w = cx.world;
    cx.setup(User::Root, &["init", "r.json", r#"{"n":0}"#])?;
    let marker = w.marks.join("held");
    let script = format!(": > '{}'; sleep 600", marker.display());
    let mut reader = cx.start(User::C, &["lock", "r.json", "--", "sh", "-c", &script])?;
    let held = await_marker(&marker, cx.deadline(), || reader.exited());
    let update = cx.run(
        User::Root,
        &["update", "r.json", ".n += 1", "--lock-timeout", "5s"],
    )?;
    // Ends C's `lock` and its sleep (its process group) if it is still there.
    let reader = reader.finish(Duration::ZERO)?;
    let mut problems = Vec::new();
    if !update.ok() {
        problems.push(format!(
            "root's update failed while C held the lock: {}",
            update.summary()
        ));
    }
    match counter(&w.shared.join("r.json")) {
        Ok(1) => {}
        Ok(n) => problems.push(format!("counter {n} after root's one update from 0")),
        Err(e) => problems.push(e),
    }
    if !held && !reader.explained() {
        problems.push(format!(
            "C's `lock` failed without `error:` and `hint:` ({})",
            reader.summary()
        ));
    }
    let outcome = if held {
        "harmless (C's `lock` ran its command, but root's update went through)".to_string()
    } else {
        format!("refused (C's `lock`: {})", reader.summary())
    };
    Ok(Verdict { problems, outcome })
}

/// A's f.json; A plants FIFOs where the next backups go; root updates it.
fn fifo_backup(cx: &Ctx<'_>) -> Result<Verdict, String> {
    let w = cx.world;
    cx.setup(User::A, &["init", "f.json", r#"{"n":0}"#])?;
    let backups = w.sidecar("f.json").join("backups");
    if !backups.exists() {
        mkdir(&backups, User::A, 0o755)?;
    }
    for generation in 0..6u64 {
        let path = backups.join(format!("gen-{generation:020}.json"));
        if std::fs::symlink_metadata(&path).is_ok() {
            std::fs::remove_file(&path).map_err(|e| e.to_string())?;
        }
        mkfifo(&path, User::A)?;
    }
    let before = Snapshot::take(&w.outside())?;
    let victim = cx.run(User::Root, &["update", "f.json", ".n += 1"])?;
    Ok(judge(&victim, &before, &Snapshot::take(&w.outside())?))
}

/// B's f.json; A plants, under names of B's temporary files, a directory
/// `.f.json.statesafe-tmp-x`, a directory and a file of the exact generated pattern.
/// In a sticky directory B may remove none of them, so none may block B's write,
/// and none may be touched (they are A's).
fn temp_names(cx: &Ctx<'_>) -> Result<Verdict, String> {
    let w = cx.world;
    cx.setup(User::B, &["init", "f.json", r#"{"n":0}"#])?;
    let planted = [
        w.shared.join(".f.json.statesafe-tmp-x"),
        w.shared.join(".f.json.statesafe-tmp-4242-0123456789abcdef"),
        w.shared.join(".f.json.statesafe-tmp-4243-0123456789abcdef"),
    ];
    mkdir(&planted[0], User::A, 0o755)?;
    mkdir(&planted[1], User::A, 0o755)?;
    write(&planted[2], b"A's file\n", User::A, 0o644)?;
    let mut guarded = w.outside();
    guarded.extend(planted.iter().cloned());
    let before = Snapshot::take(&guarded)?;
    let victim = cx.run(User::B, &["update", "f.json", ".n += 1"])?;
    let mut verdict = judge(&victim, &before, &Snapshot::take(&guarded)?);
    if !victim.ok() && !victim.hung {
        verdict.problems.push(format!(
            "objects B may not remove blocked B's write ({})",
            victim.summary()
        ));
    }
    match counter(&w.shared.join("f.json")) {
        Ok(n) if n == u64::from(victim.ok()) => {}
        Ok(n) => verdict
            .problems
            .push(format!("counter {n} after B's update")),
        Err(e) => verdict.problems.push(e),
    }
    Ok(verdict)
}

/// A's f.json (with history); A replaces the sidecar entry `entry` by a FIFO (opening
/// one blocks until the other end opens); root updates the file.
fn fifo_entry(cx: &Ctx<'_>, entry: &str) -> Result<Verdict, String> {
    let w = cx.world;
    cx.setup(User::A, &["init", "f.json", r#"{"n":0}"#])?;
    cx.setup(User::A, &["update", "f.json", ".n += 1"])?;
    let path = w.sidecar("f.json").join(entry);
    if std::fs::symlink_metadata(&path).is_ok() {
        std::fs::remove_file(&path)
            .map_err(|e| format!("cannot remove `{}`: {e}", path.display()))?;
    }
    mkfifo(&path, User::A)?;
    let before = Snapshot::take(&w.outside())?;
    let victim = cx.run(User::Root, &["update", "f.json", ".n += 1"])?;
    Ok(judge(&victim, &before, &Snapshot::take(&w.outside())?))
}

fn fifo_lock(cx: &Ctx<'_>) -> Result<Verdict, String> {
    fifo_entry(cx, "lock")
}

fn fifo_settings(cx: &Ctx<'_>) -> Result<Verdict, String> {
    fifo_entry(cx, "settings.json")
}

fn fifo_history(cx: &Ctx<'_>) -> Result<Verdict, String> {
    fifo_entry(cx, &format!("history/seg-{:020}.jsonl", 0))
}
