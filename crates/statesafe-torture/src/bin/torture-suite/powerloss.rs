//! Layer c in journal mode: a power-loss simulator driven by a trace of the real library.
//!
//! The library's own simulator (`crates/statesafe/src/sim.rs`) runs the whole-file
//! protocol through a filesystem seam; journal mode writes through the system calls
//! directly. So this layer runs the real driver once under `strace -xx` (every byte
//! written, every `fsync`/`fdatasync`, every directory change, in order), replays the
//! trace into a model that keeps what is durable apart from what is only in the page
//! cache, and after every call that changes a file (and at the acknowledgement)
//! writes out every crash state the model allows into a scratch directory, where the
//! library reads it and the next writer commits on it.
//!
//! The model, as in `sim.rs`: a file's writes since its last `fsync`/`fdatasync` may
//! have reached the disk in any order and in part; a directory's creates, links,
//! renames and unlinks since its last `fsync` survive as a prefix, in order. What a
//! crash may leave of a file's unsynced writes:
//!
//! - none of them (a lost flush: the durable bytes only);
//! - the first k of them, for every k, and any subset of them (each whole or not,
//!   applied in order) when there are two to six: writes to different pages reach the
//!   disk in any order;
//! - the first k and part of the next (a torn write): the write is cut into
//!   [`CHUNK`]-byte pieces, finer than any device's atomic unit, and every subset of
//!   them is tried for a write of up to six pieces (a journal record's head without its
//!   body, its body without its checksum, ...), else the halves, quarters, first and
//!   last pieces, all but the first or the last, and every other piece; a piece not
//!   reached reads as what was there, the journal's preallocated zeros. When more than
//!   four writes are unsynced (the zeros a new journal starts with), only the
//!   first and the last are torn;
//! - the written regions as zeros at the new length (delayed allocation);
//!
//! and its user attributes (statesafe's metadata) old or new, since only `fsync`
//! persists them. States are varied one file at a time (the others all old, or all
//! new) under every combination of directory prefixes, and deduplicated.
//!
//! Crash points: after every call that changes a file or a directory, or flushes,
//! except a write followed at once by another write to the same descriptor (the
//! states after the last write of such a run include every prefix of it).
//!
//! Several appenders ([`Op::JournalAppendMany`]): the driver starts three processes
//! appending to one file and the trace is `strace -f`'s, every line prefixed with the
//! caller's id. Descriptors are the model's per process; a call that another process
//! interrupted (`<unfinished ...>`, later `<... NAME resumed>`) is applied at its
//! completion; a state must then hold every increment up to the highest generation
//! any of them has acknowledged so far. A write, flush or attribute change through a
//! descriptor the model did not see opened, under the model's directories, is a
//! harness error (a descriptor opened in one thread and used in another would be
//! one).
//!
//! Every state must read (through `Store::load`, which must not find damage to
//! repair) as the old version or the new one, the new one once the driver printed its
//! acknowledgement, and the next writer must commit on it. A torn tail is a commit
//! that never returned: it is dropped, never quarantined as damage. Finally a record
//! with good records after it is damaged on purpose (one digit of its patch changed,
//! so the bytes still parse): the library must notice (quarantine and recovery, or a
//! `corrupt` error), never serve it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use statesafe::Store;
use statesafe_torture::Doc;

use crate::check;
use crate::driver::{self, Op};
use crate::strace::{self, Report};
use crate::tally::Tally;

/// The piece size torn writes are cut into.
pub const CHUNK: usize = 16;

/// The system calls traced: everything that changes a file or a directory, or makes
/// a change durable, and the descriptor bookkeeping. A call here that the model does
/// not know, on a file it follows, is a harness error (never silently ignored).
const TRACED: &str = "openat,open,creat,write,writev,pwrite64,pwritev,pwritev2,ftruncate,truncate,fallocate,copy_file_range,sendfile,fsetxattr,setxattr,lsetxattr,fremovexattr,removexattr,lremovexattr,rename,renameat,renameat2,link,linkat,unlink,unlinkat,mkdir,mkdirat,rmdir,symlink,symlinkat,fsync,fdatasync,sync_file_range,syncfs,sync,close,dup,dup2,dup3,fcntl";

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
    /// Writes since the last flush, in order: offset and bytes.
    pending: Vec<(usize, Vec<u8>)>,
    attrs: BTreeMap<String, Vec<u8>>,
    synced_attrs: BTreeMap<String, Vec<u8>>,
    mode: u32,
}

impl Inode {
    fn dirty(&self) -> bool {
        self.data != self.synced || self.attrs != self.synced_attrs
    }

    /// Every content a crash may leave (deduplicated, the durable bytes first).
    fn data_choices(&self) -> Vec<Vec<u8>> {
        let mut out = vec![self.synced.clone()];
        let mut acc = self.synced.clone();
        let torn_for = |i: usize| i == 0 || i + 1 == self.pending.len() || self.pending.len() <= 4;
        for (i, (off, bytes)) in self.pending.iter().enumerate() {
            if torn_for(i) {
                let pieces = bytes.len().div_ceil(CHUNK);
                for subset in torn_subsets(pieces) {
                    let mut d = acc.clone();
                    for p in subset {
                        let from = p * CHUNK;
                        let to = (from + CHUNK).min(bytes.len());
                        put(&mut d, off + from, &bytes[from..to]);
                    }
                    out.push(d);
                }
            }
            put(&mut acc, *off, bytes);
            out.push(acc.clone());
        }
        // Whole writes in any subset, not only a prefix: writes to different pages
        // reach the disk in any order (with several appends waiting for one flush, a
        // later record may survive an earlier one). Every subset for up to six.
        let n = self.pending.len();
        if (2..=6).contains(&n) {
            for mask in 1..(1usize << n) - 1 {
                let mut d = self.synced.clone();
                for (i, (off, bytes)) in self.pending.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        put(&mut d, *off, bytes);
                    }
                }
                out.push(d);
            }
        }
        let mut zeros = self.synced.clone();
        for (off, bytes) in &self.pending {
            put(&mut zeros, *off, &vec![0; bytes.len()]);
        }
        out.push(zeros);
        let mut seen = HashSet::new();
        out.retain(|d| seen.insert(fingerprint(d)));
        out
    }
}

/// Writes `bytes` at `off`, filling a hole with zeros.
fn put(data: &mut Vec<u8>, off: usize, bytes: &[u8]) {
    if data.len() < off + bytes.len() {
        data.resize(off + bytes.len(), 0);
    }
    data[off..off + bytes.len()].copy_from_slice(bytes);
}

/// The proper, non-empty subsets of `n` pieces a torn write is tried with.
fn torn_subsets(n: usize) -> Vec<Vec<usize>> {
    if n <= 1 {
        return Vec::new();
    }
    if n <= 6 {
        return (1..(1usize << n) - 1)
            .map(|mask| (0..n).filter(|i| mask & (1 << i) != 0).collect())
            .collect();
    }
    let range = |a: usize, b: usize| (a..b).collect::<Vec<_>>();
    let mut out = vec![
        range(0, n / 4),
        range(0, n / 2),
        range(0, 3 * n / 4),
        range(n / 2, n),
        vec![0],
        vec![n - 1],
        range(1, n),
        range(0, n - 1),
        (0..n).step_by(2).collect(),
    ];
    out.retain(|s| !s.is_empty() && s.len() < n);
    out
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Node {
    File(usize),
    Dir(usize),
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, Node),
    Rename(String, String),
    Unlink(String),
}

fn apply(entries: &mut BTreeMap<String, Node>, op: &DirOp) {
    match op {
        DirOp::Link(name, node) => {
            entries.insert(name.clone(), *node);
        }
        DirOp::Rename(from, to) => {
            if let Some(node) = entries.remove(from) {
                entries.insert(to.clone(), node);
            }
        }
        DirOp::Unlink(name) => {
            entries.remove(name);
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Dir {
    live: BTreeMap<String, Node>,
    durable: BTreeMap<String, Node>,
    pending: Vec<DirOp>,
    mode: u32,
}

#[derive(Debug, Clone, Copy)]
struct Fd {
    node: Node,
    pos: usize,
    append: bool,
}

/// The filesystem under the prepared directory, durable and volatile.
#[derive(Debug, Clone, Default)]
struct Model {
    inodes: Vec<Inode>,
    dirs: Vec<Dir>,
    /// Absolute path of each directory, and back.
    dir_paths: HashMap<String, usize>,
    /// Open descriptors by process (0 in a trace of one process) and number.
    fds: HashMap<(u32, i64), Fd>,
}

/// One state a crash may leave: each directory's kept prefix and each file's bytes
/// and attributes.
#[derive(Debug, Clone)]
struct CrashState {
    prefix: Vec<usize>,
    files: HashMap<usize, Content>,
}

/// One file's bytes and attributes in a crash state, shared between states and hashed
/// once.
#[derive(Debug, Clone)]
struct Content {
    data: Arc<Vec<u8>>,
    attrs: Arc<BTreeMap<String, Vec<u8>>>,
    hash: u64,
}

impl Content {
    fn new(data: Arc<Vec<u8>>, attrs: Arc<BTreeMap<String, Vec<u8>>>) -> Content {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        fingerprint(&data).hash(&mut h);
        attrs.hash(&mut h);
        Content {
            data,
            attrs,
            hash: h.finish(),
        }
    }
}

impl Model {
    /// Reads the prepared directory as it is (everything in it durable).
    fn load(root: &Path) -> Result<Model, String> {
        let mut m = Model::default();
        m.load_dir(root)?;
        Ok(m)
    }

    fn load_dir(&mut self, path: &Path) -> Result<usize, String> {
        use std::os::unix::fs::MetadataExt;
        let idx = self.dirs.len();
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.dirs.push(Dir {
            mode: meta.mode() & 0o7777,
            ..Dir::default()
        });
        self.dir_paths.insert(path.display().to_string(), idx);
        let mut entries = BTreeMap::new();
        for e in std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = e.file_type().map_err(|e| e.to_string())?;
            let node = if ft.is_dir() {
                Node::Dir(self.load_dir(&e.path())?)
            } else if ft.is_file() {
                let data = std::fs::read(e.path()).map_err(|e| e.to_string())?;
                let attrs = read_attrs(&e.path())?;
                let mode = e.metadata().map_err(|e| e.to_string())?.mode() & 0o7777;
                self.inodes.push(Inode {
                    synced: data.clone(),
                    data,
                    pending: Vec::new(),
                    synced_attrs: attrs.clone(),
                    attrs,
                    mode,
                });
                Node::File(self.inodes.len() - 1)
            } else {
                return Err(format!("unexpected file type at `{}`", e.path().display()));
            };
            entries.insert(name, node);
        }
        self.dirs[idx].live = entries.clone();
        self.dirs[idx].durable = entries;
        Ok(idx)
    }

    /// The directory an `openat`-style (dirfd, name) pair names, and the last
    /// component; `None` when it is outside the model.
    fn resolve(&self, dirfd: &Arg, name: &str) -> Option<(usize, String)> {
        let (dir_path, base) = if name.starts_with('/') {
            let p = Path::new(name);
            if let Some(&d) = self.dir_paths.get(name.trim_end_matches('/')) {
                // The directory itself.
                return Some((d, ".".into()));
            }
            (
                p.parent()?.display().to_string(),
                p.file_name()?.to_string_lossy().into_owned(),
            )
        } else {
            let parent = dirfd.path.clone()?;
            // A model directory opened by name from its parent outside the model (the
            // library walks to the state's directory one component at a time:
            // `sys::open_dir_nofollow`), as an absolute path names it above.
            if let Some(&d) = self
                .dir_paths
                .get(&format!("{parent}/{}", name.trim_end_matches('/')))
            {
                return Some((d, ".".into()));
            }
            (parent, name.to_string())
        };
        let d = *self.dir_paths.get(&dir_path)?;
        Some((d, base))
    }

    /// The descriptor `arg` names in process `pid`. `Err` when the model did not see
    /// it opened although `-y` shows a path under the model: a call on a file the
    /// model follows is never silently ignored (a descriptor opened in another thread
    /// than the one using it would be one).
    fn fd(&self, pid: u32, arg: &Arg) -> Result<Option<Fd>, String> {
        let Some(n) = arg.fd else {
            return Ok(None);
        };
        match self.fds.get(&(pid, n)) {
            Some(fd) => Ok(Some(*fd)),
            None if self.inside(arg) => Err(format!(
                "a descriptor under the model that the model did not see opened: {}",
                arg.raw
            )),
            None => Ok(None),
        }
    }

    /// Whether `-y` shows `arg`'s path under one of the model's directories.
    fn inside(&self, arg: &Arg) -> bool {
        arg.path.as_ref().is_some_and(|p| {
            self.dir_paths
                .keys()
                .any(|d| p == d || p.starts_with(&format!("{d}/")))
        })
    }

    /// Applies one traced call. `Ok(true)` when it changed the model.
    fn step(&mut self, call: &Traced) -> Result<bool, String> {
        if call.ret < 0 {
            return Ok(false);
        }
        let a = &call.args;
        let arg = |i: usize| {
            a.get(i)
                .ok_or_else(|| format!("too few arguments: {}", call.line))
        };
        match call.name.as_str() {
            "open" | "openat" => {
                let (dirfd, name, flags, mode) = if call.name == "open" {
                    (Arg::cwd(), arg(0)?.string()?, &arg(1)?.raw, a.get(2))
                } else {
                    (arg(0)?.clone(), arg(1)?.string()?, &arg(2)?.raw, a.get(3))
                };
                let Some((d, base)) = self.resolve(&dirfd, &String::from_utf8_lossy(&name)) else {
                    return Ok(false);
                };
                let node = if base == "." {
                    Node::Dir(d)
                } else if let Some(&n) = self.dirs[d].live.get(&base) {
                    if flags.contains("O_TRUNC") {
                        return Err(format!("O_TRUNC is not modelled: {}", call.line));
                    }
                    n
                } else if flags.contains("O_CREAT") {
                    let mode = mode
                        .and_then(|m| u32::from_str_radix(m.raw.trim_start_matches('0'), 8).ok())
                        .unwrap_or(0o600);
                    self.inodes.push(Inode {
                        mode,
                        ..Inode::default()
                    });
                    let n = Node::File(self.inodes.len() - 1);
                    self.dirs[d].live.insert(base.clone(), n);
                    self.dirs[d].pending.push(DirOp::Link(base, n));
                    self.fds.insert(
                        (call.pid, call.ret),
                        Fd {
                            node: n,
                            pos: 0,
                            append: flags.contains("O_APPEND"),
                        },
                    );
                    return Ok(true);
                } else {
                    return Err(format!(
                        "opened a file the model does not have: {}",
                        call.line
                    ));
                };
                self.fds.insert(
                    (call.pid, call.ret),
                    Fd {
                        node,
                        pos: 0,
                        append: flags.contains("O_APPEND"),
                    },
                );
                Ok(false)
            }
            "close" => {
                if let Some(fd) = arg(0)?.fd {
                    self.fds.remove(&(call.pid, fd));
                }
                Ok(false)
            }
            "write" | "writev" | "pwrite64" => {
                let Some(mut fd) = self.fd(call.pid, arg(0)?)? else {
                    return Ok(false);
                };
                let Node::File(ino) = fd.node else {
                    return Err(format!("a write to a directory: {}", call.line));
                };
                let mut bytes = if call.name == "writev" {
                    arg(1)?.iov()?
                } else {
                    arg(1)?.string()?
                };
                bytes.truncate(call.ret as usize);
                let off = if call.name == "pwrite64" {
                    arg(3)?
                        .raw
                        .parse::<usize>()
                        .map_err(|e| format!("{e}: {}", call.line))?
                } else if fd.append {
                    self.inodes[ino].data.len()
                } else {
                    fd.pos
                };
                if call.name != "pwrite64" {
                    fd.pos = off + bytes.len();
                    self.fds
                        .insert((call.pid, arg(0)?.fd.expect("tracked")), fd);
                }
                let inode = &mut self.inodes[ino];
                put(&mut inode.data, off, &bytes);
                inode.pending.push((off, bytes));
                Ok(true)
            }
            "fsetxattr" | "fremovexattr" => {
                let Some(fd) = self.fd(call.pid, arg(0)?)? else {
                    return Ok(false);
                };
                let Node::File(ino) = fd.node else {
                    return Err(format!("an attribute on a directory: {}", call.line));
                };
                let name = String::from_utf8_lossy(&arg(1)?.string()?).into_owned();
                // Permissions (ACLs) are not modelled: a power loss cannot tear them
                // from the data in a way statesafe's reading depends on.
                if !name.starts_with("user.") {
                    return Ok(false);
                }
                if call.name == "fsetxattr" {
                    let mut value = arg(2)?.string()?;
                    value.truncate(arg(3)?.raw.parse().unwrap_or(value.len()));
                    self.inodes[ino].attrs.insert(name, value);
                } else {
                    self.inodes[ino].attrs.remove(&name);
                }
                Ok(true)
            }
            "fsync" | "fdatasync" => {
                let Some(fd) = self.fd(call.pid, arg(0)?)? else {
                    return Ok(false);
                };
                match fd.node {
                    Node::File(ino) => {
                        let i = &mut self.inodes[ino];
                        i.synced = i.data.clone();
                        i.pending.clear();
                        if call.name == "fsync" {
                            i.synced_attrs = i.attrs.clone();
                        }
                    }
                    Node::Dir(d) => {
                        let dir = &mut self.dirs[d];
                        dir.durable = dir.live.clone();
                        dir.pending.clear();
                    }
                }
                Ok(true)
            }
            "rename" | "renameat" | "renameat2" => {
                let (od, on, nd, nn) = if call.name == "rename" {
                    (Arg::cwd(), arg(0)?.string()?, Arg::cwd(), arg(1)?.string()?)
                } else {
                    (
                        arg(0)?.clone(),
                        arg(1)?.string()?,
                        arg(2)?.clone(),
                        arg(3)?.string()?,
                    )
                };
                let from = self.resolve(&od, &String::from_utf8_lossy(&on));
                let to = self.resolve(&nd, &String::from_utf8_lossy(&nn));
                match (from, to) {
                    (None, None) => Ok(false),
                    (Some((d1, from)), Some((d2, to))) if d1 == d2 => {
                        let dir = &mut self.dirs[d1];
                        let node = dir.live.remove(&from).ok_or_else(|| {
                            format!("renamed a name the model does not have: {}", call.line)
                        })?;
                        dir.live.insert(to.clone(), node);
                        dir.pending.push(DirOp::Rename(from, to));
                        Ok(true)
                    }
                    _ => Err(format!(
                        "a rename across directories is not modelled: {}",
                        call.line
                    )),
                }
            }
            "linkat" | "link" => {
                let (od, on, nd, nn) = if call.name == "link" {
                    (Arg::cwd(), arg(0)?.string()?, Arg::cwd(), arg(1)?.string()?)
                } else {
                    (
                        arg(0)?.clone(),
                        arg(1)?.string()?,
                        arg(2)?.clone(),
                        arg(3)?.string()?,
                    )
                };
                let from = self.resolve(&od, &String::from_utf8_lossy(&on));
                let to = self.resolve(&nd, &String::from_utf8_lossy(&nn));
                match (from, to) {
                    (None, None) => Ok(false),
                    (Some((d1, from)), Some((d2, to))) => {
                        let node = *self.dirs[d1].live.get(&from).ok_or_else(|| {
                            format!("linked a name the model does not have: {}", call.line)
                        })?;
                        self.dirs[d2].live.insert(to.clone(), node);
                        self.dirs[d2].pending.push(DirOp::Link(to, node));
                        Ok(true)
                    }
                    _ => Err(format!("a link into or out of the model: {}", call.line)),
                }
            }
            "unlinkat" | "unlink" => {
                let (d, n) = if call.name == "unlink" {
                    (Arg::cwd(), arg(0)?.string()?)
                } else {
                    (arg(0)?.clone(), arg(1)?.string()?)
                };
                let Some((d, name)) = self.resolve(&d, &String::from_utf8_lossy(&n)) else {
                    return Ok(false);
                };
                let dir = &mut self.dirs[d];
                dir.live.remove(&name);
                dir.pending.push(DirOp::Unlink(name));
                Ok(true)
            }
            "mkdirat" | "mkdir" => {
                let (d, n, mode) = if call.name == "mkdir" {
                    (Arg::cwd(), arg(0)?.string()?, arg(1)?)
                } else {
                    (arg(0)?.clone(), arg(1)?.string()?, arg(2)?)
                };
                let Some((d, name)) = self.resolve(&d, &String::from_utf8_lossy(&n)) else {
                    return Ok(false);
                };
                let idx = self.dirs.len();
                let path = format!(
                    "{}/{name}",
                    self.dir_paths
                        .iter()
                        .find(|(_, i)| **i == d)
                        .map(|(p, _)| p.clone())
                        .unwrap_or_default()
                );
                self.dirs.push(Dir {
                    mode: u32::from_str_radix(mode.raw.trim_start_matches('0'), 8).unwrap_or(0o700),
                    ..Dir::default()
                });
                self.dir_paths.insert(path, idx);
                self.dirs[d].live.insert(name.clone(), Node::Dir(idx));
                self.dirs[d].pending.push(DirOp::Link(name, Node::Dir(idx)));
                Ok(true)
            }
            "fcntl" => {
                let dup = a.get(1).is_some_and(|c| c.raw.starts_with("F_DUPFD"));
                if dup && self.fd(call.pid, arg(0)?)?.is_some() {
                    return Err(format!(
                        "a duplicated descriptor is not modelled: {}",
                        call.line
                    ));
                }
                Ok(false)
            }
            _ => {
                // Anything else traced (truncate, fallocate, dup, sync_file_range, ...)
                // on a file of the model is a call the model does not know.
                let touches = a.iter().any(|x| {
                    self.fds.contains_key(&(call.pid, x.fd.unwrap_or(-1)))
                        || x.path.as_ref().is_some_and(|p| {
                            self.dir_paths.keys().any(|d| p.starts_with(d.as_str()))
                        })
                });
                if touches {
                    return Err(format!(
                        "a system call the power-loss model does not know: {}",
                        call.line
                    ));
                }
                Ok(false)
            }
        }
    }

    /// Every crash state now, deduplicated by `seen`.
    fn crash_states(&self, seen: &mut HashSet<u64>) -> Vec<CrashState> {
        // Directory prefixes: every combination, or each directory varied alone when
        // there would be too many.
        let lens: Vec<usize> = self.dirs.iter().map(|d| d.pending.len()).collect();
        let mut prefixes: Vec<Vec<usize>> = vec![vec![0; lens.len()]];
        for (d, &len) in lens.iter().enumerate() {
            if len == 0 {
                continue;
            }
            let mut next = Vec::new();
            for p in &prefixes {
                for k in 0..=len {
                    let mut q = p.clone();
                    q[d] = k;
                    next.push(q);
                }
            }
            prefixes = next;
        }
        if prefixes.len() > 64 {
            prefixes = vec![vec![0; lens.len()], lens.clone()];
            for (d, &len) in lens.iter().enumerate() {
                for k in 1..len {
                    let mut q = lens.clone();
                    q[d] = k;
                    prefixes.push(q);
                    let mut q = vec![0; lens.len()];
                    q[d] = k;
                    prefixes.push(q);
                }
            }
        }
        // Each file's contents: durable, live, and (for a dirty file) every choice,
        // computed and hashed once.
        let mut synced: HashMap<usize, Content> = HashMap::new();
        let mut live: HashMap<usize, Content> = HashMap::new();
        let mut choices: HashMap<usize, Vec<Content>> = HashMap::new();
        let mut out = Vec::new();
        for prefix in prefixes {
            let files = self.reachable(&prefix);
            let dirty: Vec<usize> = files
                .iter()
                .copied()
                .filter(|&i| self.inodes[i].dirty())
                .collect();
            for &i in &files {
                let inode = &self.inodes[i];
                let s = synced.entry(i).or_insert_with(|| {
                    Content::new(
                        Arc::new(inode.synced.clone()),
                        Arc::new(inode.synced_attrs.clone()),
                    )
                });
                let s = s.clone();
                live.entry(i).or_insert_with(|| {
                    if inode.dirty() {
                        Content::new(Arc::new(inode.data.clone()), Arc::new(inode.attrs.clone()))
                    } else {
                        s
                    }
                });
            }
            let base = |others_live: bool| -> HashMap<usize, Content> {
                files
                    .iter()
                    .map(|&i| {
                        (
                            i,
                            if others_live {
                                live[&i].clone()
                            } else {
                                synced[&i].clone()
                            },
                        )
                    })
                    .collect()
            };
            let mut candidates = vec![base(false), base(true)];
            for &i in &dirty {
                let list = choices.entry(i).or_insert_with(|| {
                    let inode = &self.inodes[i];
                    let attr_choices = if inode.attrs == inode.synced_attrs {
                        vec![Arc::new(inode.attrs.clone())]
                    } else {
                        vec![
                            Arc::new(inode.synced_attrs.clone()),
                            Arc::new(inode.attrs.clone()),
                        ]
                    };
                    let mut list = Vec::new();
                    for data in inode.data_choices() {
                        let data = Arc::new(data);
                        for attrs in &attr_choices {
                            list.push(Content::new(Arc::clone(&data), Arc::clone(attrs)));
                        }
                    }
                    list
                });
                for content in list.iter() {
                    for others_live in [false, true] {
                        let mut files = base(others_live);
                        files.insert(i, content.clone());
                        candidates.push(files);
                    }
                }
            }
            for files in candidates {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                self.describe_view(&prefix, &files).hash(&mut h);
                if seen.insert(h.finish()) {
                    out.push(CrashState {
                        prefix: prefix.clone(),
                        files,
                    });
                }
            }
        }
        out
    }

    /// The entries of directory `d` under `prefix`.
    fn view(&self, d: usize, prefix: &[usize]) -> BTreeMap<String, Node> {
        let dir = &self.dirs[d];
        let mut entries = dir.durable.clone();
        for op in &dir.pending[..prefix[d]] {
            apply(&mut entries, op);
        }
        entries
    }

    /// The files reachable from the root (directory 0) under `prefix`.
    fn reachable(&self, prefix: &[usize]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = vec![0];
        let mut visited = HashSet::new();
        while let Some(d) = stack.pop() {
            if !visited.insert(d) {
                continue;
            }
            for node in self.view(d, prefix).values() {
                match *node {
                    Node::File(i) => {
                        if !out.contains(&i) {
                            out.push(i);
                        }
                    }
                    Node::Dir(s) => stack.push(s),
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// A canonical description of a state, for deduplication.
    fn describe_view(
        &self,
        prefix: &[usize],
        files: &HashMap<usize, Content>,
    ) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![(0usize, String::new())];
        while let Some((d, path)) = stack.pop() {
            for (name, node) in self.view(d, prefix) {
                let p = format!("{path}/{name}");
                match node {
                    Node::File(i) => out.push((p, files[&i].hash)),
                    Node::Dir(s) => {
                        out.push((p.clone(), u64::MAX));
                        stack.push((s, p));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Writes `state` out under `root` (which must not exist).
    fn materialize(&self, state: &CrashState, root: &Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let mut stack = vec![(0usize, root.to_path_buf())];
        while let Some((d, path)) = stack.pop() {
            std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(self.dirs[d].mode))
                .map_err(|e| e.to_string())?;
            for (name, node) in self.view(d, &state.prefix) {
                let p = path.join(&name);
                match node {
                    Node::File(i) => {
                        let Content { data, attrs, .. } = &state.files[&i];
                        std::fs::write(&p, data.as_slice())
                            .map_err(|e| format!("{}: {e}", p.display()))?;
                        std::fs::set_permissions(
                            &p,
                            std::fs::Permissions::from_mode(self.inodes[i].mode),
                        )
                        .map_err(|e| e.to_string())?;
                        for (k, v) in attrs.iter() {
                            rustix::fs::setxattr(
                                &p,
                                k.as_str(),
                                v,
                                rustix::fs::XattrFlags::empty(),
                            )
                            .map_err(|e| format!("cannot set `{k}` on `{}`: {e}", p.display()))?;
                        }
                    }
                    Node::Dir(s) => stack.push((s, p)),
                }
            }
        }
        Ok(())
    }
}

fn read_attrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::listxattr(path, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(out),
        Err(e) => {
            return Err(format!(
                "cannot list attributes of `{}`: {e}",
                path.display()
            ));
        }
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if !name.starts_with("user.") {
            continue;
        }
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::getxattr(path, name.as_str(), &mut value)
            .map_err(|e| format!("cannot read `{name}` of `{}`: {e}", path.display()))?;
        value.truncate(len);
        out.insert(name, value);
    }
    Ok(out)
}

/// One argument of a traced call.
#[derive(Debug, Clone, Default)]
struct Arg {
    raw: String,
    /// A descriptor number (`7</path>`, or the number alone).
    fd: Option<i64>,
    /// The path `-y` shows for a descriptor.
    path: Option<String>,
}

impl Arg {
    fn cwd() -> Arg {
        Arg {
            raw: "AT_FDCWD".into(),
            ..Arg::default()
        }
    }

    fn parse(raw: &str) -> Arg {
        let raw = raw.trim().to_string();
        let mut arg = Arg {
            raw: raw.clone(),
            ..Arg::default()
        };
        if let Some(lt) = raw.find('<')
            && raw.ends_with('>')
        {
            let head = &raw[..lt];
            if let Ok(fd) = head.parse() {
                arg.fd = Some(fd);
            }
            if head == "AT_FDCWD" || arg.fd.is_some() {
                arg.path = Some(
                    String::from_utf8_lossy(&unescape(&raw[lt + 1..raw.len() - 1])).into_owned(),
                );
            }
        } else if let Ok(fd) = raw.parse() {
            arg.fd = Some(fd);
        }
        arg
    }

    /// The bytes of a quoted string argument.
    fn string(&self) -> Result<Vec<u8>, String> {
        let s = self.raw.as_str();
        if s.ends_with("...") {
            return Err(format!(
                "a string cut short by strace's -s: {}",
                &s[..s.len().min(80)]
            ));
        }
        let inner = s
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .ok_or_else(|| format!("not a string: {}", &s[..s.len().min(80)]))?;
        Ok(unescape(inner))
    }

    /// The bytes of a `writev` vector, in order.
    fn iov(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut rest = self.raw.as_str();
        while let Some(at) = rest.find("iov_base=\"") {
            rest = &rest[at + "iov_base=".len()..];
            let end = rest[1..].find('"').ok_or("an unterminated iov_base")? + 1;
            out.extend(unescape(&rest[1..end]));
            rest = &rest[end + 1..];
        }
        Ok(out)
    }
}

/// Decodes strace's escapes (`-xx` writes every byte as `\xHH`; the rest are kept
/// for safety).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 4 + 1);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'x' if i + 4 <= b.len() => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("");
                    if let Ok(v) = u8::from_str_radix(hex, 16) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                    out.push(b'x');
                    i += 2;
                }
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                }
                b't' => {
                    out.push(b'\t');
                    i += 2;
                }
                _ => {
                    out.push(b[i + 1]);
                    i += 2;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// A traced call: name, arguments, return value.
#[derive(Debug, Clone)]
struct Traced {
    /// The process (or thread) that made the call: `strace -f`'s prefix, 0 without.
    pid: u32,
    name: String,
    args: Vec<Arg>,
    ret: i64,
    line: String,
}

/// The calls of a trace, in the order they completed. With `strace -f` each line
/// starts with the caller's id, and a call another process interrupted is split into
/// `name(args <unfinished ...>` and `<... name resumed>rest`: joined here, at the
/// place of its completion (a call takes effect at some instant before it returns,
/// and the calls that change the files are ordered by the writers' lock anyway).
///
/// A resumed call whose start is missing, or that does not parse once joined, is an
/// error: a dropped write would leave the model behind the files unnoticed.
fn calls_of(text: &str) -> Result<Vec<Traced>, String> {
    const UNFINISHED: &str = " <unfinished ...>";
    let mut started: HashMap<u32, String> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        let (pid, rest) = if digits > 0 && line[digits..].starts_with(' ') {
            (
                line[..digits].parse().unwrap_or(0),
                line[digits..].trim_start(),
            )
        } else {
            (0, line)
        };
        if let Some(head) = rest.strip_suffix(UNFINISHED) {
            started.insert(pid, head.to_string());
            continue;
        }
        let joined;
        let whole = match rest.strip_prefix("<... ") {
            Some(resumed) => {
                let (Some(head), Some(at)) = (started.remove(&pid), resumed.find(" resumed>"))
                else {
                    return Err(format!("a resumed call without its start: {line}"));
                };
                joined = format!("{head}{}", &resumed[at + " resumed>".len()..]);
                if parse_line(&joined).is_none() {
                    return Err(format!(
                        "a resumed call that does not parse: {}",
                        &joined[..joined.len().min(200)]
                    ));
                }
                joined.as_str()
            }
            None => rest,
        };
        if let Some(mut call) = parse_line(whole) {
            call.pid = pid;
            out.push(call);
        }
    }
    Ok(out)
}

/// Splits `name(args) = ret` at top-level commas.
fn parse_line(line: &str) -> Option<Traced> {
    let open = line.find('(')?;
    let name = &line[..open];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    // strace pads short lines (and a resumed call's tail) to align the `=`.
    let eq = line.rfind(" = ")?;
    let close = line[..eq].trim_end().strip_suffix(')')?.len();
    let ret_text = line[eq + 3..].trim();
    let ret_num: String = ret_text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    let ret = ret_num.parse().ok()?;
    let body = &line[open + 1..close];
    let mut args = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if quoted {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'"' {
                quoted = false;
            }
        } else {
            match c {
                b'"' => quoted = true,
                b'[' | b'{' | b'<' | b'(' => depth += 1,
                b']' | b'}' | b'>' | b')' => depth -= 1,
                b',' if depth == 0 => {
                    args.push(Arg::parse(&body[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    if start < body.len() {
        args.push(Arg::parse(&body[start..]));
    }
    Some(Traced {
        pid: 0,
        name: name.to_string(),
        args,
        ret,
        line: line.chars().take(200).collect(),
    })
}

/// The settings of the layer.
pub struct PowerLoss<'a> {
    pub exe: &'a Path,
    pub base: &'a Path,
    pub ops: &'a [Op],
}

/// The journal-mode operations this layer runs by default.
pub const OPS: &[Op] = &[
    Op::JournalAppend,
    Op::JournalAppendMany,
    Op::JournalGrow,
    Op::JournalCompact,
];

/// Runs the layer: for each operation, traces it, replays the trace, and checks every
/// crash state; then the damaged-record check.
pub fn layer(cfg: &PowerLoss<'_>, tally: &Tally) -> Result<(), String> {
    for &op in cfg.ops {
        run_op(cfg, op, tally)?;
    }
    damaged_record(cfg, tally)
}

fn run_op(cfg: &PowerLoss<'_>, op: Op, tally: &Tally) -> Result<(), String> {
    let dir = cfg.base.join("prepared").join("d");
    let file = driver::prepare(&dir, op)?;
    let root = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = root.join(file.file_name().ok_or("no file name")?);
    let many = op == Op::JournalAppendMany;
    // The generation of the prepared version (counter `OLD_COUNTER`): generation
    // `prepared + k` holds counter `OLD_COUNTER + k`.
    let prepared = Store::<Doc>::open(&file)
        .and_then(|s| s.load())
        .map_err(|e| format!("{}: cannot read the prepared file: {e}", op.name()))?
        .generation;
    let mut model = Model::load(&root)?;
    let trace_file = strace::trace_path(&dir, "powerloss");
    let mut args = vec![
        "-y".to_string(),
        "-xx".into(),
        "-s".into(),
        "16777216".into(),
        "-e".into(),
        format!("trace={TRACED}"),
        "-o".into(),
        trace_file.display().to_string(),
    ];
    if many {
        args.push("-f".into());
    }
    let outcome = strace::run(&args, cfg.exe, op, &file, |_| None)?;
    if !matches!(outcome.report, Report::Ack(_)) {
        return Err(format!(
            "{}: the driver failed without any fault ({:?}): {}",
            op.name(),
            outcome.report,
            outcome.stderr.trim()
        ));
    }
    let text = std::fs::read_to_string(&trace_file)
        .map_err(|e| format!("cannot read the trace `{}`: {e}", trace_file.display()))?;
    let _ = std::fs::remove_file(&trace_file);
    let calls = calls_of(&text).map_err(|e| format!("{}: {e}", op.name()))?;
    let marker = |c: &Traced, what: &str| {
        (c.name == "write" || c.name == "writev")
            && c.args.first().and_then(|a| a.fd) == Some(2)
            && c.args
                .get(1)
                .and_then(|a| a.string().ok())
                .is_some_and(|s| s.starts_with(what.as_bytes()))
    };
    let begin = calls
        .iter()
        .position(|c| marker(c, "torture-driver: begin"))
        .ok_or("the trace has no begin marker")?;
    // The driver that printed it (with several appenders, their parent): its end
    // marker ends the window; the appenders' own markers do not.
    let root_pid = calls[begin].pid;
    let mut seen = HashSet::new();
    let work = cfg.base.join("crash");
    let mut points = 0;
    let mut acked = false;
    // The highest generation acknowledged so far, by any process.
    let mut newest_acked = None;
    let check = |model: &Model,
                 point: &str,
                 acked: Option<u64>,
                 seen: &mut HashSet<u64>|
     -> Result<(), String> {
        for (n, state) in model.crash_states(seen).into_iter().enumerate() {
            let _ = std::fs::remove_dir_all(&work);
            model.materialize(&state, &work)?;
            let problems = if many {
                check_many(&work, prepared, acked)
            } else {
                check_state(&work, op, acked.is_some())
            };
            tally.record(
                &format!("{} / power loss {point}, state {n}", op.name()),
                problems,
            );
        }
        Ok(())
    };
    let window = &calls[begin + 1..];
    for (k, c) in window.iter().enumerate() {
        if c.pid == root_pid && marker(c, "torture-driver: end") {
            break;
        }
        let ack = (c.name == "writev" && c.args.first().and_then(|a| a.fd) == Some(1))
            .then(|| c.args.get(1).and_then(|a| a.iov().ok()))
            .flatten()
            .and_then(|s| {
                let line = String::from_utf8_lossy(&s).into_owned();
                line.trim().strip_prefix("ack ")?.parse::<u64>().ok()
            });
        if let Some(generation) = ack {
            acked = true;
            newest_acked = newest_acked.max(Some(generation));
            // Every state the model allows at the acknowledgement, checked again
            // under the stricter rule: the acknowledged version or a later one.
            seen.clear();
            check(
                &model,
                &format!("at the acknowledgement of generation {generation}"),
                newest_acked,
                &mut seen,
            )?;
            points += 1;
            continue;
        }
        // A write followed at once by another write to the same descriptor is checked
        // with the last of the run: every prefix of the run is a choice there.
        let is_write = |c: &Traced| matches!(c.name.as_str(), "write" | "pwrite64" | "writev");
        let run_continues = is_write(c)
            && window.get(k + 1).is_some_and(|n| {
                is_write(n) && n.args.first().map(|a| &a.raw) == c.args.first().map(|a| &a.raw)
            });
        if model.step(c).map_err(|e| format!("{}: {e}", op.name()))? && !run_continues {
            points += 1;
            check(
                &model,
                &format!("after `{}`", short(c)),
                newest_acked,
                &mut seen,
            )?;
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    if !acked {
        return Err(format!("{}: no acknowledgement in the trace", op.name()));
    }
    if points < 2 {
        return Err(format!(
            "{}: the trace shows no change to the files",
            op.name()
        ));
    }
    Ok(())
}

/// A call for messages: its name and the file its first argument names.
fn short(call: &Traced) -> String {
    let target = call
        .args
        .first()
        .and_then(|a| a.path.clone())
        .unwrap_or_default();
    let name = call
        .args
        .get(1)
        .and_then(|a| a.string().ok())
        .filter(|_| call.name.ends_with("at"))
        .map(|n| format!(", {}", String::from_utf8_lossy(&n)))
        .unwrap_or_default();
    let target = Path::new(&target)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or(target);
    format!("{}({target}{name})", call.name)
}

/// The checks of one crash state, written out at `dir`.
fn check_state(dir: &Path, op: Op, acked: bool) -> Vec<String> {
    let file = dir.join("state.json");
    let mut problems = Vec::new();
    match check::version(&file, op) {
        Ok(check::Version::Old) if acked => {
            problems.push("acknowledged, but a power loss leaves the old version".into());
        }
        Ok(_) => {}
        Err(e) => problems.push(e),
    }
    if problems.is_empty()
        && let Err(e) = check::recover(dir)
    {
        problems.push(e);
    }
    problems
}

/// The checks of one crash state of [`Op::JournalAppendMany`]: the counter is the
/// prepared one plus some of the appenders' increments, at least up to the highest
/// generation acknowledged (`acked`; the appenders' commits are serialized, so that
/// version holds every commit before it), and the next writer commits on it.
fn check_many(dir: &Path, prepared: u64, acked: Option<u64>) -> Vec<String> {
    let file = dir.join("state.json");
    let least = driver::OLD_COUNTER + acked.map_or(0, |g| g.saturating_sub(prepared));
    let most = driver::OLD_COUNTER + driver::APPENDERS as u64;
    let mut problems = Vec::new();
    match check::counter(&file) {
        Ok(Some(n)) if (least..=most).contains(&n) => {}
        Ok(Some(n)) => problems.push(format!(
            "the state file holds counter {n}, outside {least}..={most} (generation {acked:?} acknowledged)"
        )),
        Ok(None) => problems.push("the state file is gone".into()),
        Err(e) => problems.push(e),
    }
    if problems.is_empty()
        && let Err(e) = check::recover(dir)
    {
        problems.push(e);
    }
    problems
}

/// A record with a good record after it, changed into another valid patch: the
/// library must notice (recover or refuse), never serve it.
fn damaged_record(cfg: &PowerLoss<'_>, tally: &Tally) -> Result<(), String> {
    let dir = cfg.base.join("damaged").join("d");
    let file = driver::prepare(&dir, Op::JournalAppend)?;
    // A second record after the first (counter 1, then 2).
    Store::<Doc>::open(&file)
        .and_then(|s| s.update(|d| d.counter = driver::NEW_COUNTER))
        .map_err(|e| format!("cannot prepare the damaged journal: {e}"))?;
    let journal = dir.join(".state.json.statesafe").join("journal");
    let mut bytes = std::fs::read(&journal).map_err(|e| e.to_string())?;
    // The first record's value, `"value":1`, becomes `"value":7`.
    let needle = b"\"value\":";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .ok_or("no patch value in the journal")?
        + needle.len();
    bytes[at] = if bytes[at] == b'7' { b'8' } else { b'7' };
    std::fs::write(&journal, &bytes).map_err(|e| e.to_string())?;
    let repaired = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&repaired);
    let loaded = Store::<Doc>::options()
        .on_event(move |e| {
            if matches!(e, statesafe::Event::Recovered { .. }) {
                seen.store(true, Ordering::SeqCst);
            }
        })
        .open(&file)
        .and_then(|s| s.load());
    let problems = match loaded {
        Ok(_) if repaired.load(Ordering::SeqCst) => Vec::new(),
        Err(e) if e.kind() == "corrupt" => Vec::new(),
        Ok(s) => vec![format!(
            "a journal record with a changed byte and a good record after it was accepted silently (counter {})",
            s.state.counter
        )],
        Err(e) => vec![format!("the damaged journal gave an unexpected error: {e}")],
    };
    tally.record("journal with a damaged record before a good one", problems);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model with one directory, `/r`, and nothing in it.
    fn model_of_r() -> Model {
        let mut m = Model {
            dirs: vec![Dir::default()],
            ..Model::default()
        };
        m.dir_paths.insert("/r".into(), 0);
        m
    }

    #[test]
    fn lines_parse_with_descriptors_strings_and_vectors() {
        let c = parse_line(r#"pwrite64(6</\x74\x6d\x70/j>, "\x2e\x00\x41", 3, 104) = 3"#).unwrap();
        assert_eq!(c.name, "pwrite64");
        assert_eq!(c.args[0].fd, Some(6));
        assert_eq!(c.args[0].path.as_deref(), Some("/tmp/j"));
        assert_eq!(c.args[1].string().unwrap(), b".\0A");
        assert_eq!(c.args[3].raw, "104");
        assert_eq!(c.ret, 3);
        let c = parse_line(r#"writev(1</o>, [{iov_base="\x61\x63\x6b", iov_len=3}, {iov_base="\x0a", iov_len=1}], 2) = 4"#).unwrap();
        assert_eq!(c.args[1].iov().unwrap(), b"ack\n");
        let c = parse_line(
            r#"openat(3</d>, "\x78", O_RDONLY) = -1 ENOENT (No such file or directory)"#,
        )
        .unwrap();
        assert_eq!(c.ret, -1);
        assert!(
            parse_line(r#"pwrite64(6</j>, "\x00"..., 3, 0) = 3"#)
                .unwrap()
                .args[1]
                .string()
                .is_err()
        );
    }

    #[test]
    fn several_processes_calls_are_joined_and_kept_apart() {
        // `strace -f`: the caller's id first; a call another process interrupted is
        // split, and its tail padded to align the `=`.
        let text = concat!(
            "101 pwrite64(6</j>, \"\\x41\\x42\", 2, 8 <unfinished ...>\n",
            "102 openat(AT_FDCWD</r>, \"\\x6a\", O_RDWR) = 6</r/j>\n",
            "101 <... pwrite64 resumed>)           = 2\n",
            "102 fdatasync(6</r/j>)                  = 0\n",
            "102 +++ exited with 0 +++\n",
        );
        let calls = calls_of(text).unwrap();
        let summary: Vec<_> = calls
            .iter()
            .map(|c| (c.pid, c.name.as_str(), c.ret))
            .collect();
        assert_eq!(
            summary,
            [
                (102, "openat", 6),
                (101, "pwrite64", 2),
                (102, "fdatasync", 0)
            ]
        );
        assert_eq!(calls[1].args[1].string().unwrap(), b"AB");
        assert_eq!(calls[1].args[3].raw, "8");
        // Without the prefix (one process traced), the caller is 0.
        assert_eq!(calls_of("close(3) = 0\n").unwrap()[0].pid, 0);
        // A tail without its start would drop a call: refused.
        assert!(calls_of("7 <... pwrite64 resumed>) = 2\n").is_err());
    }

    #[test]
    fn descriptors_belong_to_their_process() {
        let mut m = model_of_r();
        let calls = calls_of(concat!(
            "1 openat(3</r>, \"\\x61\", O_WRONLY|O_CREAT|O_EXCL, 0600) = 4</r/a>\n",
            "1 write(4</r/a>, \"\\x68\", 1) = 1\n",
            "2 write(4</r/a>, \"\\x69\", 1) = 1\n",
            "2 write(4</elsewhere>, \"\\x69\", 1) = 1\n",
        ))
        .unwrap();
        assert!(m.step(&calls[0]).unwrap());
        assert!(m.step(&calls[1]).unwrap());
        // Process 2 never opened its descriptor 4: a write through it to a file under
        // the model is an error, not a write to process 1's file nor one ignored.
        let err = m.step(&calls[2]).unwrap_err();
        assert!(err.contains("did not see opened"), "{err}");
        // Outside the model it is none of the model's business.
        assert!(!m.step(&calls[3]).unwrap());
        assert_eq!(m.inodes[0].data, b"h");
    }

    #[test]
    fn torn_writes_cover_every_subset_of_a_small_write() {
        assert_eq!(torn_subsets(3).len(), 6);
        assert!(torn_subsets(1).is_empty());
        assert!(
            torn_subsets(100)
                .iter()
                .all(|s| !s.is_empty() && s.len() < 100)
        );
        // A 40-byte append (3 pieces) into preallocated zeros: the durable zeros, every
        // torn subset, the whole write.
        let inode = Inode {
            data: [vec![0; 8], vec![1; 40], vec![0; 16]].concat(),
            synced: vec![0; 64],
            pending: vec![(8, vec![1; 40])],
            ..Inode::default()
        };
        let choices = inode.data_choices();
        assert!(choices.contains(&vec![0; 64]));
        assert!(choices.contains(&inode.data));
        // Only the head piece: 8 zeros, 16 ones, zeros after.
        let head = [vec![0; 8], vec![1; 16], vec![0; 40]].concat();
        assert!(choices.contains(&head), "{}", choices.len());
        assert_eq!(choices.len(), 2 + 6, "{choices:?}");
    }

    #[test]
    fn unsynced_writes_survive_in_any_subset_not_only_a_prefix() {
        // Two appends waiting for one flush, on different pages: the second may reach
        // the disk without the first.
        let inode = Inode {
            data: [vec![0; 8], vec![1; 8], vec![2; 8], vec![0; 8]].concat(),
            synced: vec![0; 32],
            pending: vec![(8, vec![1; 8]), (16, vec![2; 8])],
            ..Inode::default()
        };
        let choices = inode.data_choices();
        let second_only = [vec![0; 16], vec![2; 8], vec![0; 8]].concat();
        assert!(choices.contains(&second_only), "{choices:?}");
        assert!(choices.contains(&inode.data));
        assert!(choices.contains(&vec![0; 32]));
    }

    #[test]
    fn a_directory_change_is_durable_only_after_the_directory_fsync() {
        let mut m = model_of_r();
        let open = parse_line(r#"openat(3</r>, "\x61", O_WRONLY|O_CREAT|O_EXCL, 0600) = 4</r/a>"#)
            .unwrap();
        assert!(m.step(&open).unwrap());
        let write = parse_line(r#"write(4</r/a>, "\x68\x69", 2) = 2"#).unwrap();
        assert!(m.step(&write).unwrap());
        let mut seen = HashSet::new();
        let states = m.crash_states(&mut seen);
        // The file missing, or present with nothing, "h", "i" at 1 (hole), "hi", zeros.
        assert!(states.iter().any(|s| m.view(0, &s.prefix).is_empty()));
        assert!(
            states
                .iter()
                .any(|s| s.files.get(&0).is_some_and(|f| f.data.as_slice() == b"hi"))
        );
        let fsync = parse_line(r#"fsync(4</r/a>) = 0"#).unwrap();
        m.step(&fsync).unwrap();
        let dsync = parse_line(r#"fsync(3</r>) = 0"#).unwrap();
        // Directory 3 was not seen opened, though `-y` names a directory of the
        // model: an error, never a flush silently skipped.
        assert!(m.step(&dsync).is_err());
        m.fds.insert(
            (0, 3),
            Fd {
                node: Node::Dir(0),
                pos: 0,
                append: false,
            },
        );
        assert!(m.step(&dsync).unwrap());
        let mut seen = HashSet::new();
        let states = m.crash_states(&mut seen);
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].files[&0].data.as_slice(), b"hi");
    }
}
