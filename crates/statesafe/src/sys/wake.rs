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
//! Where a shared mapping of the file cannot be made (a filesystem without it), there is
//! no page and the waiters poll as before. The futex wakes waiters of this machine only:
//! on a network filesystem, other machines' waiters poll.

#![allow(unsafe_code)]

use std::fs::File;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::mm::{MapFlags, ProtFlags};
use rustix::thread::futex;

/// Where the page is in the lock file.
pub(crate) const PAGE_AT: u64 = 8192;
const PAGE_LEN: usize = 4096;

/// A shared mapping of the lock file's wake page: a release count (the futex word) at
/// offset 0 and a count of sleeping waiters at offset 4.
pub(crate) struct Wake {
    page: NonNull<u8>,
}

// SAFETY: the mapping is only read and written through atomics, from any thread; it is
// unmapped once, in `drop`, when no reference into it is left.
unsafe impl Send for Wake {}
// SAFETY: as for `Send`: every access is atomic.
unsafe impl Sync for Wake {}

impl Wake {
    /// Maps `file`'s wake page (making the file long enough first); `None` when that
    /// cannot be done: the caller polls.
    pub(crate) fn map(file: &File) -> Option<Wake> {
        use std::os::unix::fs::FileExt;
        // Where a write to a mapped page may need a block of its own (copy-on-write
        // filesystems allocate at each write: on a full disk the process would die of
        // `SIGBUS`, not get an error) or where the lock is not this machine's alone
        // (network and cluster filesystems): no page, waiters poll.
        if super::special_filesystem(file).is_some() || copy_on_write(file) {
            return None;
        }
        let end = PAGE_AT + PAGE_LEN as u64;
        let len = file.metadata().ok()?.len();
        if len < end {
            // Zeros written past the file's end, blocks and all (never `set_len`: a
            // sparse hole would need a block at the first write through the mapping,
            // `SIGBUS` on a full disk, and would make `durable::reserve` take the
            // journal slots for written). From the slots' region on, as `reserve`
            // does: a full disk fails this write, and there is no page. A slot
            // published past `len` meanwhile may be zeroed, which only makes a later
            // writer wait or compact (as with `reserve`).
            let from = len.max(4096);
            let zeros = vec![0u8; usize::try_from(end - from).ok()?];
            file.write_all_at(&zeros, from).ok()?;
        }
        // SAFETY: a new shared mapping of a whole page of an open file, at an address
        // the kernel chooses: nothing else in this process is at that address. The
        // file is at least `end` long (checked above); only atomics touch the page.
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

    fn word(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at + 4 <= PAGE_LEN && at.is_multiple_of(4));
        // SAFETY: the page is mapped for as long as `self` lives, page-aligned (so
        // `at`, a multiple of 4, is aligned for a u32), and only ever accessed through
        // atomics, here and in every other process that maps it.
        unsafe { &*self.page.as_ptr().add(at).cast::<AtomicU32>() }
    }

    fn releases(&self) -> &AtomicU32 {
        self.word(0)
    }

    fn sleepers(&self) -> &AtomicU32 {
        self.word(4)
    }

    /// Counts this waiter in, before it tries the lock; the release count to sleep on
    /// if the try fails. (In this order, a releaser that finds no waiter counted has
    /// bumped the count before this reads it, and unlocked before this tries: the try
    /// then succeeds, or another got the lock, whose release wakes a waiter.)
    pub(crate) fn enter(&self) -> u32 {
        self.sleepers().fetch_add(1, Ordering::SeqCst);
        self.releases().load(Ordering::SeqCst)
    }

    /// Sleeps until a release after `seen` wakes this waiter, or for `limit` at most
    /// (at once if one came already); `true` if woken by a release.
    pub(crate) fn sleep(&self, seen: u32, limit: Duration) -> bool {
        let timeout = futex::Timespec {
            tv_sec: limit.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: limit.subsec_nanos().into(),
        };
        match futex::wait(self.releases(), futex::Flags::empty(), seen, Some(&timeout)) {
            Ok(()) => true,
            // The count moved before the sleep began: a release came.
            Err(e) if e == rustix::io::Errno::AGAIN => true,
            // Timed out, or a signal: the caller tries the lock again either way.
            Err(_) => false,
        }
    }

    /// Counts this waiter out (it got the lock, or gives up, or tries again).
    pub(crate) fn leave(&self) {
        self.sleepers().fetch_sub(1, Ordering::SeqCst);
    }

    /// After the lock was let go: bumps the release count and wakes one sleeper, if
    /// any is counted.
    pub(crate) fn released(&self) {
        self.releases().fetch_add(1, Ordering::SeqCst);
        if self.sleepers().load(Ordering::SeqCst) != 0 {
            let _ = futex::wake(self.releases(), futex::Flags::empty(), 1);
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
        f.debug_struct("Wake")
            .field("releases", &self.releases().load(Ordering::Relaxed))
            .field("sleepers", &self.sleepers().load(Ordering::Relaxed))
            .finish()
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
        let seen = waiter.enter();
        let sleeping = {
            let waiter = Arc::clone(&waiter);
            // A limit no test run reaches: a missed wake-up fails the assertion below
            // instead of passing late.
            std::thread::spawn(move || waiter.sleep(seen, Duration::from_secs(600)))
        };
        // Released after the sleeper counted itself in: it is woken, whether it was
        // already asleep or not yet (then the moved count ends its sleep at once).
        releaser.released();
        assert!(
            sleeping.join().unwrap(),
            "the sleeper was woken by the release"
        );
        waiter.leave();
        assert_eq!(waiter.sleepers().load(Ordering::SeqCst), 0);
        assert_eq!(waiter.releases().load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_sleep_with_no_release_ends_at_its_limit_unwoken() {
        let dir = tempfile::tempdir().unwrap();
        let file = lock_file(dir.path());
        let wake = Wake::map(&file).unwrap();
        let seen = wake.enter();
        assert!(!wake.sleep(seen, Duration::from_millis(1)));
        wake.leave();
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
        assert_eq!(u32::from_ne_bytes(buf), 1, "the release count, in the file");
    }
}
