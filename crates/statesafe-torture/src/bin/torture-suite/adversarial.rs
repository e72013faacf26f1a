//! The adversarial layer (issue 10): the attacks an independent review ran against the
//! `statesafe` CLI in a shared sticky directory, re-created as two unprivileged users
//! (A the attacker, B the victim), a read-only user C, and root.
//!
//! Each attack runs in a fresh world (a sticky 1777 directory, home directories, a
//! root-owned directory and a bystander directory), once with
//! `/proc/sys/fs/protected_symlinks` set to 0 and once with 1 (the original value is
//! restored afterwards). Before the victim's command every file the attacker aims at
//! is recorded (content, mode, owner; whole trees for directories); afterwards each must
//! be unchanged, the command must have finished before its deadline, and a refusal must
//! say `error:` and `hint:`. Attacks 6 to 8 have their own checks on top (no lost
//! update, the lock not held by a reader, a write not blocked). See `docs/torture.md`.

mod attacks;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::run::{Cli, Outcome, User};
use crate::snapshot::Snapshot;
use crate::tally::Tally;

/// The exit status of a layer that could not run here (as automake's "skipped").
pub const SKIPPED: u8 = 77;

const SYSCTL: &str = "/proc/sys/fs/protected_symlinks";

/// How long any one command may take: far beyond any honest run of it, so only a
/// blocked command reaches it.
const DEADLINE: Duration = Duration::from_secs(30);

/// Why the layer cannot run on this machine, if it cannot.
pub fn cannot_run() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root: the attacks need two unprivileged uids (setpriv) and the fs.protected_symlinks sysctl".into());
    }
    match std::process::Command::new("setpriv")
        .arg("--version")
        .output()
    {
        Ok(o) if o.status.success() => {}
        _ => {
            return Some(
                "`setpriv` (util-linux) is not available to drop to unprivileged uids".into(),
            );
        }
    }
    if let Err(e) = std::fs::OpenOptions::new().write(true).open(SYSCTL) {
        return Some(format!("cannot write `{SYSCTL}`: {e}"));
    }
    None
}

/// `fs.protected_symlinks`, restored to its original value when dropped.
struct Sysctl {
    original: String,
}

impl Sysctl {
    fn save() -> Result<Sysctl, String> {
        let original =
            std::fs::read_to_string(SYSCTL).map_err(|e| format!("cannot read `{SYSCTL}`: {e}"))?;
        Ok(Sysctl {
            original: original.trim().to_string(),
        })
    }

    fn set(&self, value: &str) -> Result<(), String> {
        std::fs::write(SYSCTL, value).map_err(|e| format!("cannot write `{SYSCTL}`: {e}"))
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = self.set(&self.original) {
            eprintln!(
                "adversarial: WARNING: {e}: restore it by hand to {}",
                self.original
            );
        }
    }
}

/// One attack's world, all under one fresh directory.
pub struct World {
    /// The shared sticky directory (1777, root's), where the state files live.
    pub shared: PathBuf,
    home_a: PathBuf,
    /// B's home: `notes.txt` and `.ssh/` (`id_rsa` 0600, `authorized_keys`).
    pub home_b: PathBuf,
    home_c: PathBuf,
    /// Root's directory (0755): `secret` (0600) and `config.json` (0600).
    pub rootdir: PathBuf,
    /// A bystander directory beside the shared one: `victim.txt` (root's, 0644).
    pub other: PathBuf,
    /// A directory everyone may write, for the markers of background commands.
    pub marks: PathBuf,
}

impl World {
    fn new(base: &Path, label: &str, shared_mode: u32) -> Result<World, String> {
        let top = base.join(label);
        mkdir(&top, User::Root, 0o755)?;
        let w = World {
            shared: top.join("shared"),
            home_a: top.join("home-a"),
            home_b: top.join("home-b"),
            home_c: top.join("home-c"),
            rootdir: top.join("root"),
            other: top.join("other"),
            marks: top.join("marks"),
        };
        mkdir(&w.shared, User::Root, shared_mode)?;
        mkdir(&w.home_a, User::A, 0o755)?;
        mkdir(&w.home_b, User::B, 0o755)?;
        mkdir(&w.home_c, User::C, 0o755)?;
        mkdir(&w.rootdir, User::Root, 0o755)?;
        mkdir(&w.other, User::Root, 0o755)?;
        mkdir(&w.marks, User::Root, 0o777)?;
        write(
            &w.home_b.join("notes.txt"),
            b"B's notes: nothing to see\n",
            User::B,
            0o644,
        )?;
        mkdir(&w.home_b.join(".ssh"), User::B, 0o700)?;
        write(
            &w.home_b.join(".ssh/id_rsa"),
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n-----END OPENSSH PRIVATE KEY-----\n",
            User::B,
            0o600,
        )?;
        write(
            &w.home_b.join(".ssh/authorized_keys"),
            b"ssh-ed25519 AAAA b@host\n",
            User::B,
            0o644,
        )?;
        write(
            &w.rootdir.join("secret"),
            b"root's secret\n",
            User::Root,
            0o600,
        )?;
        write(
            &w.rootdir.join("config.json"),
            b"{\"root\": \"config\"}\n",
            User::Root,
            0o600,
        )?;
        write(
            &w.other.join("victim.txt"),
            b"a bystander's file\n",
            User::Root,
            0o644,
        )?;
        Ok(w)
    }

    pub fn home(&self, user: User) -> &Path {
        match user {
            User::Root => &self.rootdir,
            User::A => &self.home_a,
            User::B => &self.home_b,
            User::C => &self.home_c,
        }
    }

    /// The files outside every sidecar that some attack aims at.
    pub fn outside(&self) -> Vec<PathBuf> {
        vec![
            self.home_b.clone(),
            self.rootdir.clone(),
            self.other.clone(),
        ]
    }

    /// A sidecar in the shared directory.
    pub fn sidecar(&self, name: &str) -> PathBuf {
        self.shared.join(format!(".{name}.statesafe"))
    }
}

fn owner(path: &Path, user: User, link: bool) -> Result<(), String> {
    let id = Some(user.uid());
    if link {
        std::os::unix::fs::lchown(path, id, id)
    } else {
        std::os::unix::fs::chown(path, id, id)
    }
    .map_err(|e| format!("cannot chown `{}`: {e}", path.display()))
}

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod `{}`: {e}", path.display()))
}

/// Makes a directory as `user` would (owner and exact mode, whatever the umask).
pub fn mkdir(path: &Path, user: User, mode: u32) -> Result<(), String> {
    std::fs::create_dir(path).map_err(|e| format!("cannot create `{}`: {e}", path.display()))?;
    owner(path, user, false)?;
    chmod(path, mode)
}

/// Writes a file as `user` would.
pub fn write(path: &Path, bytes: &[u8], user: User, mode: u32) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    owner(path, user, false)?;
    chmod(path, mode)
}

/// Plants a symlink `link` -> `to` owned by `user`.
pub fn symlink(to: &Path, link: &Path, user: User) -> Result<(), String> {
    std::os::unix::fs::symlink(to, link)
        .map_err(|e| format!("cannot plant the symlink `{}`: {e}", link.display()))?;
    owner(link, user, true)
}

/// Plants a FIFO owned by `user`.
pub fn mkfifo(path: &Path, user: User) -> Result<(), String> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .map_err(|e| format!("cannot plant the FIFO `{}`: {e}", path.display()))?;
    owner(path, user, false)?;
    chmod(path, 0o666)
}

/// What one attack came to.
pub struct Verdict {
    pub problems: Vec<String>,
    /// How it was stopped or why it was harmless, when there is no problem.
    pub outcome: String,
}

/// The verdict of an attack whose victim ran one command: nothing outside the
/// sidecar changed, no hang, and a refusal that explains itself.
pub fn judge(victim: &Outcome, before: &Snapshot, after: &Snapshot) -> Verdict {
    let mut problems: Vec<String> = before
        .changes(after)
        .into_iter()
        .map(|c| format!("outside file changed: {c}"))
        .collect();
    problems.extend(unexplained(victim));
    let outcome = if victim.ok() {
        "harmless (exit 0, files outside the sidecar unchanged)".to_string()
    } else {
        format!("refused ({})", victim.summary())
    };
    Verdict { problems, outcome }
}

/// A hang, or a failure without `error:` and `hint:`.
pub fn unexplained(o: &Outcome) -> Option<String> {
    if o.hung {
        Some(format!(
            "{} (deadline {} s)",
            o.summary(),
            DEADLINE.as_secs()
        ))
    } else if !o.ok() && !o.explained() {
        Some(format!(
            "`{}` failed without `error:` and `hint:` ({})",
            o.shown,
            o.summary()
        ))
    } else {
        None
    }
}

/// What an attack needs: the binary under test and its world.
pub struct Ctx<'a> {
    pub cli: &'a Cli,
    pub world: &'a World,
}

impl Ctx<'_> {
    /// Runs `statesafe ARGS` as `user` in the shared directory.
    pub fn run(&self, user: User, args: &[&str]) -> Result<Outcome, String> {
        self.cli.run(
            user,
            &self.world.shared,
            self.world.home(user),
            args,
            DEADLINE,
        )
    }

    /// A preparation step, which must succeed.
    pub fn setup(&self, user: User, args: &[&str]) -> Result<(), String> {
        let o = self.run(user, args)?;
        if o.ok() {
            Ok(())
        } else {
            Err(format!(
                "preparation `{}` failed: {}",
                o.shown,
                o.stderr.trim()
            ))
        }
    }

    pub fn start(&self, user: User, args: &[&str]) -> Result<crate::run::Running, String> {
        self.cli
            .start(user, &self.world.shared, self.world.home(user), args)
    }

    pub fn deadline(&self) -> Duration {
        DEADLINE
    }
}

/// The counter `/n` of a state file, read directly (not through the binary under test).
pub fn counter(file: &Path) -> Result<u64, String> {
    let bytes =
        std::fs::read(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("`{}` is not JSON: {e}", file.display()))?;
    doc.pointer("/n")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("`{}` has no counter `/n`", file.display()))
}

/// Runs every attack with `fs.protected_symlinks` 0 and then 1.
pub fn layer(statesafe: &Path, base: &Path, tally: &Tally) -> Result<(), String> {
    // The users must reach the worlds, and see the files as a login shell makes them.
    chmod(base, 0o755)?;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let bin_dir = base.join("bin");
    mkdir(&bin_dir, User::Root, 0o755)?;
    let bin = bin_dir.join("statesafe");
    std::fs::copy(statesafe, &bin).map_err(|e| {
        format!(
            "cannot copy the binary under test `{}`: {e}",
            statesafe.display()
        )
    })?;
    chmod(&bin, 0o755)?;
    let logs = base.join("logs");
    mkdir(&logs, User::Root, 0o700)?;
    let cli = Cli::new(bin, logs);
    println!("adversarial: attacking `{}`", statesafe.display());

    let sysctl = Sysctl::save()?;
    for setting in ["0", "1"] {
        sysctl.set(setting)?;
        for (attack, mode) in attacks::ATTACKS
            .iter()
            .flat_map(|a| a.places.iter().map(move |m| (a, *m)))
        {
            let label = format!(
                "attack {} ({}), shared/ {mode:o}, protected_symlinks={setting}",
                attack.number, attack.title
            );
            let world = format!("{}-{mode:o}-ps{setting}", attack.slug);
            let verdict = World::new(base, &world, mode).and_then(|world| {
                (attack.run)(&Ctx {
                    cli: &cli,
                    world: &world,
                })
            });
            let problems = match verdict {
                Ok(v) if v.problems.is_empty() => {
                    println!("{label}: {}", v.outcome);
                    Vec::new()
                }
                Ok(v) => {
                    println!("{label}: VIOLATION: {}", v.problems.join("; "));
                    v.problems
                }
                Err(e) => {
                    println!("{label}: HARNESS ERROR: {e}");
                    vec![format!("harness error: {e}")]
                }
            };
            tally.record(&label, problems);
        }
    }
    drop(sysctl);
    Ok(())
}
