//! The lock's wake-up call: waiters for the writers' lock sleep on a futex in a page of
//! the lock file, and a releaser wakes one of them as it lets go.
//!
//! `flock` has no timed wait, so a waiter polls `try_lock` ([`crate::lock`]). Polling
//! with short sleeps cost twice over when commits are short (a journal-mode commit holds
//! the lock for tens of microseconds): the lock lay free until the next poll, and on a
//! machine of few cores the pollers' wake-ups took the CPU from the holder, which held
//! the lock longer. Here a waiter sleeps until a releaser bumps the page's release count
//! and wakes it (`FUTEX_WAKE` of one: a hand-off, no herd); the poll stays as the
//! backstop, with a longer sleep, for a releaser that cannot call (killed, or a build
//! without this page).
//!
//! The page is only a hint. The lock is still the `flock`, taken with `try_lock` after
//! every wake-up: whatever the page holds (another writer of the lock file can write
//! anything there), nobody holds the lock who did not get the `flock`. What such a
//! writer can do is make waiters wake too often or too late (never later than the
//! backstop), which they can do to the lock anyway by holding it. It lives at
//! [`PAGE_AT`], past the holder record (`0..2048`) and the journal's published ends
//! (`4096..8192`): the file is made that long when shorter (never shortened; nothing in
//! statesafe ever shortens the lock file), and mapped shared, read-write (the lock file
//! is opened read-write: only a user who may write the state takes the lock).
//!
//! **This process never touches the mapped page itself.** Another writer of the lock
//! file may truncate it, and a load or store of this process into a mapped page past
//! the file's end is killed by `SIGBUS` (a test of an earlier build that used atomics on
//! the page: the child died of signal 7). So the page is only ever read and written by
//! the kernel: the release count is read with `pread` (the same page of the page cache
//! the mapping shows), compared and slept on with `FUTEX_WAIT`, and bumped with the
//! wake-up itself (`FUTEX_WAKE_OP`: add 1, wake one). The kernel reports a page past
//! the end as `EFAULT`, never as a signal; the waiter then sleeps the backstop and
//! polls, as with no page. The futex calls take the page's address as a raw pointer
//! (`libc::syscall`), never as a Rust reference, for the same reason: nothing in this
//! process may assume the page readable.
//!
//! The caller maps the page through a descriptor of its own, never the one it locks
//! (`lock.rs`, `OpenLock::wake`): a mapping holds its open file description, and with
//! it any `flock` on that description, for as long as a forked child keeps a copy.
//!
//! Where a shared mapping of the file cannot be made (a filesystem without it), there is
//! no page and the waiters poll as before. The futex wakes waiters of this machine only:
//! on a network filesystem, other machines' waiters poll.

#![allow(unsafe_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::time::Duration;

use rustix::mm::{MapFlags, ProtFlags};

/// Where the page is in the lock file.
pub(crate) const PAGE_AT: u64 = 8192;
const PAGE_LEN: usize = 4096;

/// A shared mapping of the lock file's wake page, whose first word is the release count
/// (the futex word). Only the kernel reads or writes it (see the module's text).
pub(crate) struct Wake {
    page: NonNull<u8>,
}

// SAFETY: the mapping is never read or written by this process, only passed to the
// kernel's futex calls (which are safe from any thread); it is unmapped once, in
// `drop`.
unsafe impl Send for Wake {}
// SAFETY: as for `Send`.
unsafe impl Sync for Wake {}

impl Wake {
    /// Maps `file`'s wake page (making the file long enough first); `None` when that
    /// cannot be done: the caller polls.
    pub(crate) fn map(file: &File) -> Option<Wake> {
        // Where a write to a mapped page may need a block of its own (copy-on-write
        // filesystems allocate at each write) or where the lock is not this machine's
        // alone (network and cluster filesystems): no page, waiters poll.
        if super::special_filesystem(file).is_some() || copy_on_write(file) {
            return None;
        }
        let end = PAGE_AT + PAGE_LEN as u64;
        let len = file.metadata().ok()?.len();
        if len < end {
            // Zeros written past the file's end, blocks and all (never `set_len`: a
            // sparse hole would need a block at the kernel's first write to the page,
            // which fails on a full disk, and would make `durable::reserve` take the
            // journal slots for written). From the slots' region on, as `reserve`
            // does: a full disk fails this write, and there is no page. A slot
            // published past `len` meanwhile may be zeroed, which only makes a later
            // writer wait or compact (as with `reserve`).
            let from = len.max(4096);
            let zeros = vec![0u8; usize::try_from(end - from).ok()?];
            file.write_all_at(&zeros, from).ok()?;
        }
        // SAFETY: a new shared mapping of a whole page of an open file, at an address
        // the kernel chooses: nothing else in this process is at that address, and
        // nothing in this process reads or writes it (a truncation by another writer
        // of the file would make such an access a `SIGBUS`).
        let page = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                PAGE_LEN,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file,
                PAGE_AT,
            )
        }
        .ok()?;
        Some(Wake {
            page: NonNull::new(page.cast::<u8>())?,
        })
    }

    /// The release count's address, for the kernel only.
    fn word(&self) -> *mut u32 {
        self.page.as_ptr().cast::<u32>()
    }

    /// The release count to sleep on if a try of the lock fails, read (from `file`,
    /// the lock file this page maps) before the try: a releaser that unlocks after
    /// this read bumps the count after it too, and the sleep returns at once. `None`:
    /// the page is past the file's end (truncated by another writer), and the caller
    /// sleeps the backstop instead.
    pub(crate) fn enter(&self, file: &File) -> Option<u32> {
        let mut word = [0u8; 4];
        file.read_exact_at(&mut word, PAGE_AT).ok()?;
        Some(u32::from_ne_bytes(word))
    }

    /// Sleeps until a release after `seen` wakes this waiter, or for `limit` at most
    /// (at once if one came already); `true` if woken by a release. Where the futex
    /// cannot be used (the page gone past the file's end: `EFAULT`), sleeps `limit`.
    pub(crate) fn sleep(&self, seen: Option<u32>, limit: Duration) -> bool {
        let Some(seen) = seen else {
            std::thread::sleep(limit);
            return false;
        };
        let timeout = libc::timespec {
            tv_sec: limit.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            tv_nsec: limit.subsec_nanos().into(),
        };
        // SAFETY: `FUTEX_WAIT` reads the word at `self.word()` in the kernel (a page
        // past the file's end is `EFAULT`, not a signal) and the timeout from a live
        // local; no memory of this process is written.
        let done = unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.word(),
                libc::FUTEX_WAIT,
                seen,
                &raw const timeout,
                std::ptr::null::<u32>(),
                0u32,
            )
        };
        if done == 0 {
            return true;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            // The count moved before the sleep began: a release came.
            Some(libc::EAGAIN) => true,
            // Timed out, or a signal: the caller tries the lock again either way.
            Some(libc::ETIMEDOUT | libc::EINTR) => false,
            // The page cannot be read (`EFAULT`: truncated under the mapping), or a
            // kernel without futexes: sleep the limit, as a poller does.
            _ => {
                std::thread::sleep(limit);
                false
            }
        }
    }

    /// After the lock was let go: bumps the release count and wakes one sleeper, in
    /// one call (`FUTEX_WAKE_OP` on the count itself: add 1, wake one; the second wake
    /// is of none). Failures are left: the waiters' backstop polls.
    pub(crate) fn released(&self) {
        // FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_EQ, 0): `*word += 1`, and the
        // comparison's wake is of `nr_wake2 = 0` waiters.
        const ADD_ONE: u32 = (1 << 28) | (1 << 12);
        // SAFETY: `FUTEX_WAKE_OP` adds to the word at `self.word()` in the kernel
        // (`EFAULT` past the file's end, not a signal) and wakes waiters; the pointer
        // arguments are that word, and the integer `nr_wake2` in the timeout's place.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.word(),
                libc::FUTEX_WAKE_OP,
                1u32,
                0usize,
                self.word(),
                ADD_ONE,
            );
        }
    }
}

/// Whether `file` is on a copy-on-write filesystem (btrfs, bcachefs, ZFS), where a
/// write to a mapped page allocates a block.
fn copy_on_write(file: &File) -> bool {
    const BTRFS: u32 = 0x9123_683e;
    const BCACHEFS: u32 = 0xca45_1a4e;
    const ZFS: u32 = 0x2fc1_2fc1;
    rustix::fs::fstatfs(file)
        .map(|st| matches!(st.f_type as u32, BTRFS | BCACHEFS | ZFS))
        .unwrap_or(true)
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The page's words are not read here: only the kernel touches the page.
        f.debug_struct("Wake").field("page", &self.page).finish()
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        // SAFETY: the page mapped in `map`, with its length; no reference into it
        // outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.page.as_ptr().cast(), PAGE_LEN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::sync::Arc;

    fn lock_file(dir: &std::path::Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("lock"))
            .unwrap()
    }

    #[test]
    fn a_release_through_one_mapping_wakes_a_sleeper_on_another() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (lock_file(dir.path()), lock_file(dir.path()));
        let waiter = Arc::new(Wake::map(&a).expect("a shared mapping of a file in a temp dir"));
        let releaser = Wake::map(&b).unwrap();
        assert_eq!(
            a.metadata().unwrap().len(),
            PAGE_AT + PAGE_LEN as u64,
            "the file was made long enough for the page"
        );
        let seen = waiter.enter(&a);
        assert_eq!(seen, Some(0));
        let sleeping = {
            let waiter = Arc::clone(&waiter);
            // A limit no test run reaches: a missed wake-up fails the assertion below
            // instead of passing late.
            std::thread::spawn(move || waiter.sleep(seen, Duration::from_secs(600)))
        };
        // Released after the sleeper read the count: it is woken, whether it was
        // already asleep or not yet (then the moved count ends its sleep at once).
        releaser.released();
        assert!(
            sleeping.join().unwrap(),
            "the sleeper was woken by the release"
        );
        assert_eq!(
            waiter.enter(&a),
            Some(1),
            "the release count, seen by pread"
        );
    }

    #[test]
    fn a_sleep_with_no_release_ends_at_its_limit_unwoken() {
        let dir = tempfile::tempdir().unwrap();
        let file = lock_file(dir.path());
        let wake = Wake::map(&file).unwrap();
        let seen = wake.enter(&file);
        assert!(!wake.sleep(seen, Duration::from_millis(1)));
    }

    /// Another writer of the lock file (anyone who may write the state) truncates it
    /// under the mapped page: every call on the page must still return (the lock's
    /// waiters fall back to polling), never kill the process with `SIGBUS`. Run in a
    /// forked child, whose death by a signal the parent sees.
    #[test]
    fn a_lock_file_truncated_under_the_page_kills_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let file = lock_file(dir.path());
        let wake = Wake::map(&file).unwrap();
        file.set_len(0).unwrap();
        // SAFETY: the child only makes system calls through `wake` and exits; no lock
        // of this test process's other threads is taken in it.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let seen = wake.enter(&file);
            let _ = wake.sleep(seen, Duration::from_millis(1));
            // The futex calls on the page past the end (`enter` saw no page, so
            // `FUTEX_WAIT` was not reached above).
            let _ = wake.sleep(Some(0), Duration::from_millis(1));
            wake.released();
            // SAFETY: ends the forked child at once, without running the test
            // harness's code after the fork; 3: `enter` read a count past the end.
            unsafe { libc::_exit(if seen.is_none() { 0 } else { 3 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child died: wait status {status:#x} (signal {})",
            if libc::WIFSIGNALED(status) {
                libc::WTERMSIG(status)
            } else {
                0
            }
        );
    }

    #[test]
    fn the_page_leaves_the_lock_files_other_bytes_and_a_longer_file_as_they_were() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let file = lock_file(dir.path());
        file.write_all_at(b"record", 0).unwrap();
        file.write_all_at(b"slot", 4096).unwrap();
        file.set_len(PAGE_AT + 3 * PAGE_LEN as u64).unwrap();
        let wake = Wake::map(&file).unwrap();
        wake.released();
        wake.released();
        assert_eq!(
            file.metadata().unwrap().len(),
            PAGE_AT + 3 * PAGE_LEN as u64
        );
        let mut buf = [0u8; 6];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"record");
        let mut buf = [0u8; 4];
        file.read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!(&buf, b"slot");
        file.read_exact_at(&mut buf, PAGE_AT).unwrap();
        assert_eq!(u32::from_ne_bytes(buf), 2, "the release count, in the file");
    }
}
