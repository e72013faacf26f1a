//! A description of the machine and of the benchmark directory's filesystem.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The filesystem a path is on, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount point.
    pub point: PathBuf,
    /// Filesystem type (`ext4`, `tmpfs`, ...).
    pub fstype: String,
    /// The device or source.
    pub source: String,
    /// Mount options and superblock options.
    pub options: String,
}

impl Mount {
    /// For ext4: whether the filesystem has a journal (a jbd2 entry for its device).
    /// Without one, `fsync` writes the data and the inode but commits no journal
    /// transaction, which makes it cheaper than on a stock ext4.
    pub fn ext4_journal(&self) -> Option<bool> {
        if self.fstype != "ext4" {
            return None;
        }
        let dev = self.source.rsplit('/').next()?;
        let jbd2 = std::fs::read_dir("/proc/fs/jbd2").ok();
        Some(jbd2.is_some_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{dev}-"))
            })
        }))
    }
}

/// The mount holding `path` (the longest mount point that is a prefix of it).
pub fn mount_of(path: &Path) -> Option<Mount> {
    let path = path.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<Mount> = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 {
            continue;
        }
        let point = PathBuf::from(l[4].replace("\\040", " "));
        if !path.starts_with(&point) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|b| point.as_os_str().len() >= b.point.as_os_str().len());
        if longer {
            best = Some(Mount {
                point,
                fstype: r[0].to_string(),
                source: r[1].to_string(),
                options: format!("{} ({})", l[5], r[2]),
            });
        }
    }
    best
}

/// Everything the report says about the machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs available.
    pub cores: usize,
    /// Total memory in bytes.
    pub memory: u64,
    /// Kernel release.
    pub kernel: String,
    /// Operating system (PRETTY_NAME).
    pub os: String,
    /// rustc version.
    pub rustc: String,
    /// The benchmark directory.
    pub dir: PathBuf,
    /// Its filesystem.
    pub mount: Option<Mount>,
    /// UTC date and time of the run.
    pub date: String,
    /// Load averages at the start of the run.
    pub load_start: String,
    /// The commit measured, and whether the library had uncommitted changes.
    pub commit: String,
}

fn first_line_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':').or_else(|| l.split_once('=')))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

/// Load averages (1, 5, 15 min) and running/total tasks.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn commit() -> String {
    let root = crate::run::workspace_root();
    let root = root.to_string_lossy();
    let Some(head) = command_line("git", &["-C", &root, "rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    match command_line(
        "git",
        &["-C", &root, "status", "--porcelain", "crates/statesafe"],
    ) {
        Some(s) if s.is_empty() => head,
        Some(_) => format!("{head} with uncommitted changes in crates/statesafe"),
        None => head,
    }
}

/// Describes this machine, with `dir` as the benchmark directory.
pub fn describe(dir: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = first_line_field(&meminfo, "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    Machine {
        cpu: first_line_field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
        os: first_line_field(&os_release, "PRETTY_NAME").unwrap_or_else(|| "unknown".into()),
        rustc: command_line("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        dir: dir.to_path_buf(),
        mount: mount_of(dir),
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
            .unwrap_or_else(|| "unknown".into()),
        load_start: loadavg(),
        commit: commit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_mounted() {
        let m = mount_of(Path::new("/")).expect("/ has a mount");
        assert_eq!(m.point, PathBuf::from("/"));
        assert!(!m.fstype.is_empty());
    }
}
