//! The command line's one piece of platform code: a command that dies with us.

use std::process::Command;

/// Makes `command`, once spawned, get SIGKILL from the kernel when the thread that
/// spawns it ends, which for `statesafe lock FILE -- CMD` (it waits for CMD on that
/// thread) means: when `statesafe` dies first, killed with SIGKILL (Linux,
/// `PR_SET_PDEATHSIG`). CMD runs under the lock that dies with `statesafe`: its
/// writers would be refused anyway (its pass is dead), and it is better stopped than
/// left running on reads another writer may make stale. Its own children are not
/// killed (they hold the dead pass and are refused as writers); a set-user-ID CMD
/// loses the setting at its `exec`. Elsewhere: nothing (CMD runs on, its writers
/// refused).
pub fn die_with_parent(command: &mut Command) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::unix::process::CommandExt;
        let parent = rustix::process::getpid();
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before `exec`; it makes only
        // two raw system calls (prctl, getppid), which are async-signal-safe, and
        // allocates nothing, takes no lock.
        unsafe {
            command.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                // The parent died before the prctl: the signal would never come.
                // (An error from a raw errno: nothing to allocate in the child.)
                if rustix::process::getppid() != Some(parent) {
                    return Err(rustix::io::Errno::SRCH.into());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = command;
}
