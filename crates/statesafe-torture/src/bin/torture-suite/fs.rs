//! Layer d: the kill and error layers again on real filesystems, each loop-mounted
//! from an image file in the scratch directory: ext4 (`data=ordered`, and with
//! `noauto_da_alloc`), xfs, btrfs, and tmpfs.
//!
//! Mounting needs root and loop devices; where either is missing the filesystem is
//! reported `SKIPPED` with the reason, and never counted as passed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One filesystem to mount.
pub struct Fs {
    pub label: &'static str,
    /// `mkfs` program and its arguments before the image path; `None` for tmpfs.
    mkfs: Option<(&'static str, &'static [&'static str])>,
    /// Image size in MiB (xfs refuses less than 300).
    size_mib: u64,
    options: &'static str,
}

/// The filesystems of layer d.
pub const FILESYSTEMS: &[Fs] = &[
    Fs {
        label: "ext4 data=ordered",
        mkfs: Some(("mkfs.ext4", &["-q", "-F"])),
        size_mib: 64,
        options: "data=ordered",
    },
    Fs {
        label: "ext4 noauto_da_alloc",
        mkfs: Some(("mkfs.ext4", &["-q", "-F"])),
        size_mib: 64,
        options: "data=ordered,noauto_da_alloc",
    },
    Fs {
        label: "xfs",
        mkfs: Some(("mkfs.xfs", &["-q", "-f"])),
        size_mib: 320,
        options: "",
    },
    Fs {
        label: "btrfs",
        mkfs: Some(("mkfs.btrfs", &["-q", "-f"])),
        size_mib: 160,
        options: "",
    },
    Fs {
        label: "tmpfs",
        mkfs: None,
        size_mib: 64,
        options: "",
    },
];

/// A mounted filesystem; unmounted when dropped.
pub struct Mount {
    pub point: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes and mounts `fs` under `base`; `Err(reason)` means SKIPPED.
pub fn mount(fs: &Fs, base: &Path) -> Result<Mount, String> {
    if rustix::process::geteuid().as_raw() != 0 {
        return Err("not running as root, so nothing can be mounted".into());
    }
    let slug: String = fs
        .label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let point = base.join(format!("mnt-{slug}"));
    std::fs::create_dir_all(&point)
        .map_err(|e| format!("cannot create `{}`: {e}", point.display()))?;
    match fs.mkfs {
        None => {
            let mut opts = format!("size={}m", fs.size_mib);
            if !fs.options.is_empty() {
                opts = format!("{opts},{}", fs.options);
            }
            run(Command::new("mount")
                .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
                .arg(&point))?;
        }
        Some((mkfs, args)) => {
            let image = base.join(format!("{slug}.img"));
            let file = std::fs::File::create(&image)
                .map_err(|e| format!("cannot create `{}`: {e}", image.display()))?;
            file.set_len(fs.size_mib << 20)
                .map_err(|e| format!("cannot size `{}`: {e}", image.display()))?;
            drop(file);
            run(Command::new(mkfs).args(args).arg(&image))?;
            let mut opts = "loop".to_string();
            if !fs.options.is_empty() {
                opts = format!("{opts},{}", fs.options);
            }
            run(Command::new("mount")
                .args(["-o", &opts])
                .arg(&image)
                .arg(&point))?;
        }
    }
    Ok(Mount { point })
}
