//! Shared helpers: the one test-directory helper, child processes that re-run this test
//! binary, temp-file listing, a cheap PRNG, and tmpfs mounts for the fault tests.
//!
//! Every test directory comes from [`test_dir`], which honours `STATESAFE_TEST_DIR`, so
//! the whole suite can be pointed at tmpfs, a loop mount or a FUSE mount.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// Environment variable that points the suite at another filesystem.
pub const TEST_DIR_ENV: &str = "STATESAFE_TEST_DIR";

/// Environment variable that selects a child role; child "tests" do nothing without it.
const ROLE_ENV: &str = "STATESAFE_IT_ROLE";

/// Prefix of the parameters passed to a child (`STATESAFE_IT_PATH`, ...).
const ARG_PREFIX: &str = "STATESAFE_IT_";

/// Marker that starts every line a child reports to its parent (libtest prints its own
/// lines on the same stdout).
pub const MARK: &str = "@@";

/// A fresh, empty directory for one test, removed when dropped.
pub fn test_dir() -> tempfile::TempDir {
    let base = std::env::var_os(TEST_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix("statesafe-it-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| {
            panic!(
                "cannot create a test directory in `{}`: {e}",
                base.display()
            )
        })
}

/// The temporary files of state file `name` left in `dir` (`.NAME.statesafe-tmp-*`).
pub fn temp_files(dir: &Path, name: &str) -> Vec<String> {
    let prefix = format!(".{name}.statesafe-tmp-");
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    found.sort();
    found
}

/// Inode number of a path (without following a final symlink).
///
/// Two numbers compared prove "the same file" only while the first file cannot have
/// been freed in between: ext4 gives a new file the number a deleted one freed (seen
/// in CI). Where the file may be replaced more than once between the two looks, use
/// [`HeldInode`].
pub fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().ino()
}

/// Another program saving `path` again and again (`{"external": i}` written beside it
/// and renamed over it, as an editor saves) until the file at `path` has the inode
/// number it had before the first save: ext4 gives a freed number to the next new
/// file. Returns the save at which it came back (`None` after 2,000 saves: a
/// filesystem that does not reuse numbers at once, such as tmpfs).
pub fn save_until_inode_comes_back(path: &Path) -> Option<usize> {
    let read = inode(path);
    let other = path.with_file_name("other.json");
    for i in 0..2000 {
        std::fs::write(&other, format!("{{\"external\": {i}}}\n")).unwrap();
        std::fs::rename(&other, path).unwrap();
        if inode(path) == read {
            return Some(i);
        }
    }
    None
}

/// A file held open by its descriptor: while this lives the inode is not freed, even
/// if every name of it is removed, so no new file can be given its (device, inode)
/// and "the path still names this file" is a sound test across any window.
pub struct HeldInode {
    _file: std::fs::File,
    id: (u64, u64),
}

impl HeldInode {
    /// Opens `path` for reading (a regular file; a final symlink is not followed).
    pub fn hold(path: &Path) -> HeldInode {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot hold `{}` open: {e}", path.display()));
        let st = file.metadata().unwrap();
        HeldInode {
            id: (st.dev(), st.ino()),
            _file: file,
        }
    }

    /// Whether `path` (without following a final symlink) still names the held file.
    pub fn is_at(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok_and(|st| (st.dev(), st.ino()) == self.id)
    }
}

/// Permission bits (including set-id and sticky bits) of a path.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// Whether this process runs as root (mounts, chown and set-id bits need it).
pub fn is_root() -> bool {
    proc_status_field("Uid:")
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .is_some_and(|euid| euid == "0")
}

/// The command that runs the program after it as `nobody` (uid and gid 65534, no
/// groups): a second user, for [`ChildCmd::wrapped`] or [`std::process::Command`].
pub const AS_NOBODY: [&str; 5] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--",
];

/// Whether `test` can act as a second user ([`AS_NOBODY`]: root, and `setpriv`);
/// says so loudly ([`skipped`]) when not.
pub fn can_act_as_nobody(test: &str) -> bool {
    if !is_root() {
        skipped(test, "needs root to act as two users");
        return false;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        skipped(test, "setpriv (util-linux) is not installed");
        return false;
    }
    true
}

/// This process's umask.
pub fn umask() -> u32 {
    let v = proc_status_field("Umask:").expect("the kernel reports Umask in /proc/self/status");
    u32::from_str_radix(v.trim(), 8).unwrap()
}

fn proc_status_field(field: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).map(str::to_owned))
}

/// Prints the loud line that says a test could not run here, and why, and records it
/// for the closing summary of `scripts/test` (the file `STATESAFE_SUMMARY` names;
/// nextest hides the output of passing tests).
pub fn skipped(test: &str, reason: &str) {
    println!("SKIPPED: {test}: {reason}");
    eprintln!("SKIPPED: {test}: {reason}");
    if let Some(summary) = std::env::var_os("STATESAFE_SUMMARY") {
        use std::io::Write;
        let line = format!("SKIPPED statesafe test {test}: {reason}\n");
        // One append of one short line: lines of parallel tests never interleave.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&summary)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .expect("append to the STATESAFE_SUMMARY file");
    }
}

// ---------------------------------------------------------------------------------------
// Child processes

/// The role this process was started in, if it is the child for `role`.
pub fn child_role(role: &str) -> bool {
    std::env::var(ROLE_ENV).is_ok_and(|r| r == role)
}

/// A parameter passed to a child with [`ChildCmd::arg`].
pub fn child_arg(name: &str) -> String {
    std::env::var(format!("{ARG_PREFIX}{name}"))
        .unwrap_or_else(|_| panic!("child started without {ARG_PREFIX}{name}"))
}

/// A child process that runs the test `test` of this binary in role `role`.
pub struct ChildCmd {
    cmd: Command,
}

impl ChildCmd {
    /// Re-runs this test binary with only `test` (its full name, `module::name`).
    pub fn new(test: &str, role: &str) -> ChildCmd {
        ChildCmd::wrapped(&[], test, role)
    }

    /// Like [`ChildCmd::new`], but run under `wrapper` (for example `strace ...` or
    /// `sh -c 'umask 027; exec "$0" "$@"'`): the test binary and its arguments follow it.
    pub fn wrapped(wrapper: &[&str], test: &str, role: &str) -> ChildCmd {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        ChildCmd { cmd }
    }

    /// Like [`ChildCmd::new`], but under `strace -f -qq -y -o LOG -e trace=CALLS`
    /// (every thread and child, descriptors shown with their paths): the trace the
    /// strace tests read back from `log`.
    pub fn traced(log: &std::path::Path, calls: &str, test: &str, role: &str) -> ChildCmd {
        let trace = format!("trace={calls}");
        let log = log.to_str().expect("invariant: test paths are UTF-8");
        ChildCmd::wrapped(
            &["strace", "-f", "-qq", "-y", "-o", log, "-e", &trace],
            test,
            role,
        )
    }

    /// Passes a parameter, read in the child with [`child_arg`].
    pub fn arg(mut self, name: &str, value: impl AsRef<OsStr>) -> ChildCmd {
        self.cmd.env(format!("{ARG_PREFIX}{name}"), value);
        self
    }

    /// Gives the child a pipe as stdin (it can then wait for the parent to close it).
    pub fn piped_stdin(mut self) -> ChildCmd {
        self.cmd.stdin(Stdio::piped());
        self
    }

    /// Starts the child; it is killed if the guard is dropped while it still runs.
    pub fn spawn(mut self) -> ChildGuard {
        let mut child = self.cmd.spawn().unwrap();
        let out = child.stdout.take().map(BufReader::new);
        ChildGuard {
            child: Some(child),
            out,
        }
    }

    /// Runs the child to completion and returns its report lines; panics if it failed.
    pub fn run(self) -> Vec<String> {
        let mut guard = self.spawn();
        let out = guard.read_all();
        let status = guard.wait();
        assert!(
            status.success(),
            "child failed with {status}; its report: {out:?}"
        );
        out
    }
}

/// A running child; killed with SIGKILL when dropped, so a failing parent leaves no
/// orphans. It keeps the read end of the child's stdout open until dropped.
pub struct ChildGuard {
    child: Option<Child>,
    out: Option<BufReader<ChildStdout>>,
}

impl ChildGuard {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("invariant: a guard holds its child until waited for")
            .id()
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("invariant: a guard holds its child until waited for")
    }

    /// Reads report lines until one equals `line` (panics at the end of the output).
    pub fn wait_for(&mut self, line: &str) {
        let out = self.out.as_mut().expect("the child's stdout is piped");
        let mut buf = String::new();
        loop {
            buf.clear();
            let n = out.read_line(&mut buf).unwrap();
            assert!(n > 0, "child ended before reporting `{line}`");
            if report(&buf) == Some(line) {
                return;
            }
        }
    }

    /// Closes the child's stdin (a child waiting on it then finishes).
    pub fn close_stdin(&mut self) {
        drop(self.child_mut().stdin.take());
    }

    /// The report lines the child printed from here to the end of its output.
    pub fn read_all(&mut self) -> Vec<String> {
        let mut text = String::new();
        if let Some(out) = &mut self.out {
            out.read_to_string(&mut text).unwrap();
        }
        reports(&text)
    }

    /// Sends SIGKILL (what `Child::kill` sends on Unix) and reaps the child.
    pub fn kill(&mut self) {
        let child = self.child_mut();
        // An error means the child already exited; reaping below covers both cases.
        let _ = child.kill();
        child.wait().unwrap();
    }

    /// Waits for the child to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let status = self.child_mut().wait().unwrap();
        self.child = None;
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The report in one line of child output (after [`MARK`]), if it has one.
pub fn report(line: &str) -> Option<&str> {
    line.find(MARK).map(|at| line[at + MARK.len()..].trim_end())
}

/// All reports in a child's output.
pub fn reports(text: &str) -> Vec<String> {
    text.lines().filter_map(report).map(str::to_owned).collect()
}

/// Prints one report line for the parent.
pub fn say(line: impl std::fmt::Display) {
    println!("{MARK}{line}");
}

// ---------------------------------------------------------------------------------------
// Randomness

/// A cheap PRNG (xorshift64*), seeded from `STATESAFE_IT_SEED` or the clock; the seed is
/// printed so a failing run can be repeated.
pub struct Rng(u64);

impl Rng {
    /// A generator for test `test`, printing its seed.
    pub fn for_test(test: &str) -> Rng {
        let seed = std::env::var("STATESAFE_IT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
            });
        println!("{test}: seed {seed} (repeat with STATESAFE_IT_SEED={seed})");
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------------
// Mounts

/// A filesystem mounted for one test; unmounted when dropped.
pub struct Mount {
    path: PathBuf,
}

/// Runs a command, turning any failure into the reason a test cannot run.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Mount {
    /// Mounts a tmpfs of `size` bytes on `path` (created if needed), or says why not.
    pub fn tmpfs(path: &Path, size: u64) -> Result<Mount, String> {
        if !is_root() {
            return Err("mounting a filesystem needs root".into());
        }
        std::fs::create_dir_all(path).unwrap();
        let size = format!("size={size}");
        run(
            "mount",
            &[
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "-o".as_ref(),
                size.as_ref(),
                "tmpfs".as_ref(),
                path.as_ref(),
            ],
        )?;
        Ok(Mount {
            path: path.to_path_buf(),
        })
    }

    /// Mounts a fresh ext4 filesystem of `size` bytes with blocks of `block` bytes (no
    /// blocks reserved for root), made in the image file `image`, on `path` (created if
    /// needed), or says why not.
    pub fn ext4(path: &Path, image: &Path, size: u64, block: u32) -> Result<Mount, String> {
        if !is_root() {
            return Err("mounting a filesystem needs root".into());
        }
        std::fs::create_dir_all(path).unwrap();
        std::fs::File::create(image).unwrap().set_len(size).unwrap();
        let block = block.to_string();
        run(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-F".as_ref(),
                "-m".as_ref(),
                "0".as_ref(),
                "-b".as_ref(),
                block.as_ref(),
                image.as_ref(),
            ],
        )?;
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                image.as_ref(),
                path.as_ref(),
            ],
        )?;
        Ok(Mount {
            path: path.to_path_buf(),
        })
    }

    /// Bind-mounts the file or directory `source` on `path` (which must exist), as a
    /// container runtime mounts a single file (`docker run -v a.json:/app/state.json`),
    /// or says why not.
    pub fn bind(source: &Path, path: &Path) -> Result<Mount, String> {
        if !is_root() {
            return Err("a bind mount needs root".into());
        }
        run(
            "mount",
            &["--bind".as_ref(), source.as_ref(), path.as_ref()],
        )?;
        Ok(Mount {
            path: path.to_path_buf(),
        })
    }

    /// Remounts it read-only (every file open for writing must be closed first).
    pub fn remount_read_only(&self) -> Result<(), String> {
        run(
            "mount",
            &["-o".as_ref(), "remount,ro".as_ref(), self.path.as_ref()],
        )
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if run("umount", &[self.path.as_ref()]).is_err() {
            // Lazy unmount so the test directory can still be removed.
            let _ = run("umount", &["-l".as_ref(), self.path.as_ref()]);
        }
    }
}

/// For a test that reads a child's `strace`: a fresh test directory and its real path
/// (`strace -y` shows descriptors by their resolved paths), or `None` after reporting
/// `test` skipped when strace cannot run here.
pub fn strace_test_dir(test: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    if let Err(reason) = strace_usable() {
        skipped(test, &reason);
        return None;
    }
    let dir = test_dir();
    let real = std::fs::canonicalize(dir.path()).unwrap();
    Some((dir, real))
}

/// Whether `strace` can trace a process here (it needs ptrace, which containers may forbid).
pub fn strace_usable() -> Result<(), String> {
    match Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("strace cannot trace here (exit {s})")),
        Err(e) => Err(format!("strace is not installed ({e})")),
    }
}

/// One traced call: its name, the path of its first descriptor (`-y`), and the quoted
/// strings of its arguments (a rename's names): a line of `strace -y` output.
#[derive(Debug)]
pub struct Call {
    pub name: String,
    pub fd_path: String,
    pub quoted: Vec<String>,
}

pub fn parse_call(line: &str) -> Option<Call> {
    let start = line.find(|c: char| c.is_ascii_alphabetic())?;
    let call = &line[start..];
    let name = call[..call.find('(')?].to_string();
    let args = &call[name.len() + 1..];
    let fd_path = match (args.find('<'), args.find('>')) {
        (Some(a), Some(b)) if a < b => args[a + 1..b].to_string(),
        _ => String::new(),
    };
    let quoted = args
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some(Call {
        name,
        fd_path,
        quoted,
    })
}

/// Forks: the child's pid in the parent, `None` in the child, which must end with
/// [`exit_now`].
#[allow(unsafe_code)] // fork(2): no safe wrapper in the dependencies
pub fn fork() -> Option<libc::pid_t> {
    // SAFETY: the child runs only store calls, then `exit_now`; nextest runs each
    // test in its own process.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    (pid != 0).then_some(pid)
}

/// Ends a forked child at once: no unwinding, no destructors.
#[allow(unsafe_code)] // _exit(2): no safe wrapper in the dependencies
pub fn exit_now(code: i32) -> ! {
    // SAFETY: only ever called in a forked child.
    unsafe { libc::_exit(code) }
}

/// Waits for the child `pid` and returns its exit code.
#[allow(unsafe_code)] // waitpid(2): no safe wrapper in the dependencies
pub fn exit_code_of(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waits for a child this process forked.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "child status {status}");
    libc::WEXITSTATUS(status)
}

/// The sidecar directory of the state file `path` (`.NAME.statesafe` beside it).
pub fn sidecar(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap().to_string_lossy();
    path.with_file_name(format!(".{name}.statesafe"))
}

/// Puts backup `generation` of the plain file `path` back in its place with its
/// metadata, as `cp -a` of an old backup (or a backup tool that keeps extended
/// attributes) does: a new inode with the backup's bytes and its `user.statesafe`
/// attribute, which names the old generation and the bytes' checksum.
pub fn put_back_with_metadata(path: &Path, generation: u64) {
    let backup = sidecar(path).join(format!("backups/gen-{generation:020}.json"));
    let aside = path.with_file_name("restored-copy");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&backup)
        .arg(&aside)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a failed");
    std::fs::rename(&aside, path).unwrap();
}

/// A plain file at generation 4 (`{"n": 4}`), with backups of generations 1 to 3.
pub fn four_generations(path: &Path) -> statesafe::Store {
    let store: statesafe::Store = statesafe::Store::open(path).unwrap();
    store.create(serde_json::json!({"n": 1})).unwrap();
    for n in 2..=4 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    assert_eq!(store.generation().unwrap(), 4);
    store
}

/// Replaces the state at `path` (a version put back by hand in place of committed
/// generation `committed`) and checks that the commit took a generation above it,
/// never one a commit already had.
pub fn replace_lands_above(path: &Path, committed: u64) {
    let store: statesafe::Store = statesafe::Store::open(path).unwrap();
    let generation = store.replace(serde_json::json!({"n": 5})).unwrap();
    assert!(
        generation > committed,
        "generation {generation} written again after committed generation {committed}"
    );
    let snap = statesafe::Store::<serde_json::Value>::open(path)
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(
        (snap.state, snap.generation),
        (serde_json::json!({"n": 5}), generation)
    );
}
