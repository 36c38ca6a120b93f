//! The engine's only `fork`, `exec` set-up, signal handler and `_exit`.
//!
//! Owns the process operations that need `unsafe`: starting the zygote with its
//! control socket on a known fd, forking a worker from the single-threaded zygote,
//! the worker's SIGINT handler, closing inherited fds, and leaving a process without
//! running R's (or libc's) exit path. Everything else about processes is done with
//! rustix's safe wrappers in the modules that use this one. The engine's only other
//! `unsafe` code maps shared memory (`crate::shm`, `crate::mailbox`).
#![expect(
    unsafe_code,
    reason = "fork, pre_exec, sigaction, close_range, mallopt, a Landlock probe and _exit; each block has a SAFETY note"
)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// The fd number the zygote finds its control socket on.
pub(crate) const ZYGOTE_CONTROL_FD: RawFd = 3;

/// Which side of a fork this is.
pub(crate) enum Forked {
    Child,
    Parent(rustix::process::Pid),
}

/// Forks the calling process.
///
/// # Safety
///
/// The calling process must be single-threaded (the zygote is: it runs R on its main
/// thread and never starts another), so that no lock, allocator arena or R state is
/// held by a thread that does not exist in the child. The child must leave through
/// [`exit_now`], never by returning into code that would run atexit handlers or
/// R's exit path.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: the caller guarantees a single-threaded process (see above).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(
            rustix::process::Pid::from_raw(pid).ok_or_else(|| io::Error::other("fork: pid 0"))?,
        )),
    }
}

/// Ends the process at once: no atexit handlers, no stdio flush, no R clean-up (which
/// would delete the temp dir shared with the zygote).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// Starts `cmd` with `control` on fd [`ZYGOTE_CONTROL_FD`] (without `CLOEXEC`) and
/// nothing else beyond stdio inherited. Safe to call from a multi-threaded host: the
/// child only runs async-signal-safe calls before `exec`.
pub(crate) fn spawn_with_control_fd(cmd: &mut Command, control: &OwnedFd) -> io::Result<Child> {
    let fd = control.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and calls only dup2
    // and fcntl, which are async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            if fd == ZYGOTE_CONTROL_FD {
                // dup2 onto itself would keep CLOEXEC; clear it instead.
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, ZYGOTE_CONTROL_FD) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd.spawn()
}

/// Takes ownership of the control socket the host left on [`ZYGOTE_CONTROL_FD`], and
/// marks it `CLOEXEC` so that nothing R runs inherits it.
pub(crate) fn take_control_fd() -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only checks that the fd is open.
    if unsafe { libc::fcntl(ZYGOTE_CONTROL_FD, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the host placed the control socket on this fd for us (the environment
    // variable that brought us here says so), and nothing else in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(ZYGOTE_CONTROL_FD) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(fd)
}

/// Closes every fd above 2 except `keep`.
pub(crate) fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    keep.sort_unstable();
    let mut from: u32 = 3;
    for fd in keep {
        let fd = fd as u32;
        if fd > from {
            close_range(from, fd - 1)?;
        }
        from = fd + 1;
    }
    close_range(from, u32::MAX)
}

fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range only closes fds; the callers own every fd in the range (the
    // process is a fresh fork that keeps only the fds it names), and no Rust object in
    // this process refers to them afterwards (the child never returns to the zygote's
    // code that owned them).
    match unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

extern "C" fn on_interrupt(_sig: libc::c_int) {
    // Async-signal-safe: one atomic store to R's pending-interrupt flag.
    rookery_ffi::interrupt();
}

/// Sets the worker's signal dispositions:
/// - SIGINT is an R interrupt: R unwinds at its next check (`Sys.sleep`, loops,
///   `R_CheckUserInterrupt`) with an "interrupt" condition. No `SA_RESTART`, so a
///   blocking system call returns `EINTR` and R gets to check the flag.
/// - SIGPIPE is caught and does nothing: a write to a closed socket is an `EPIPE`
///   error for the worker (as under Rust's runtime, which ignores it), while a
///   program its code starts with `system()` gets the default again at `exec` (an
///   ignored signal would stay ignored there, and `yes | head -1` would complain
///   of a broken pipe instead of ending quietly, as in an R console).
/// - SIGSEGV and SIGBUS go back to the default (end the process): Rust's runtime
///   handler, inherited from the zygote, would let a sent signal pass unnoticed.
pub(crate) fn install_signal_dispositions() -> io::Result<()> {
    set_disposition(
        libc::SIGINT,
        on_interrupt as extern "C" fn(libc::c_int) as usize,
    )?;
    set_disposition(
        libc::SIGPIPE,
        on_sigpipe as extern "C" fn(libc::c_int) as usize,
    )?;
    set_disposition(libc::SIGSEGV, libc::SIG_DFL)?;
    set_disposition(libc::SIGBUS, libc::SIG_DFL)
}

/// SIGPIPE's handler: nothing (the failing write returns `EPIPE`).
extern "C" fn on_sigpipe(_: libc::c_int) {}

fn set_disposition(signal: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; `handler` is
    // SIG_DFL, SIG_IGN, `on_interrupt`, which only performs an atomic store, or
    // `on_sigpipe`, which does nothing (both async-signal-safe).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, std::ptr::null_mut()) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Keeps large freed blocks in the heap instead of returning them to the kernel, so
/// that the next large vector reuses pages already mapped (a 1e6-double vector then
/// converts 3x faster). Costs private memory after a large call, which the pool's
/// memory limit bounds by recycling the worker.
pub(crate) fn tune_malloc() {
    // SAFETY: mallopt only changes allocator parameters; the process is
    // single-threaded here, before any user code runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// For a host process (the server), the opposite of [`tune_malloc`]: every block
/// over 128 KiB (glibc's own starting threshold) is mapped on its own and unmapped
/// when freed, always. glibc's default raises that threshold to the size of the
/// largest block freed so far (up to 32 MiB), and each thread has an arena of its
/// own (up to 8 per core), so a 19 MiB block allocated and freed once on each of
/// many threads (argon2id, a decoded result) would stay resident in every arena:
/// 24 logins at once left the server 430 MB larger. A fixed 1 MiB threshold did as
/// well there but kept the blocks between 128 KiB and 1 MiB (body pieces, buffers)
/// in the arenas, and the soak's RSS grew faster (docs/benchmarks.md, "Allocators").
pub(crate) fn tune_host_malloc() {
    // SAFETY: mallopt only changes allocator parameters, under the allocator's own
    // lock; blocks already allocated are unaffected.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Ignores SIGXFSZ, so that a write past `RLIMIT_FSIZE` fails with `EFBIG` (an R
/// error) instead of killing the worker.
pub(crate) fn ignore_sigxfsz() -> io::Result<()> {
    set_disposition(libc::SIGXFSZ, libc::SIG_IGN)
}

/// The kernel's Landlock ABI version, 0 when it has none.
pub(crate) fn landlock_abi() -> u8 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag, the call
    // only returns the ABI version (or fails); it reads and writes no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u8::try_from(v).unwrap_or(0)
}

/// Backs the zygote's large anonymous mappings (R's heap) with transparent huge
/// pages, once, before it forks: `fork` then copies one page-table entry per 2 MiB
/// instead of 512, and a worker's exit frees as few. A worker's first write to a
/// shared huge page splits it for that worker only. Returns the bytes collapsed;
/// kernels without `MADV_COLLAPSE` (before 6.1) or with THP disabled collapse none.
pub(crate) fn collapse_heap() -> usize {
    const MADV_COLLAPSE: libc::c_int = 25;
    const HUGE: usize = 2 << 20;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut collapsed = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let name = fields.nth(3).unwrap_or("");
        if !perms.starts_with("rw-p") || !(name.is_empty() || name == "[heap]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let (start, end) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if end <= start {
            continue;
        }
        // SAFETY: MADV_COLLAPSE changes only how the range is backed, never its
        // contents; the range lies inside a private anonymous mapping of this
        // (single-threaded) process, read from /proc/self/maps just above.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, MADV_COLLAPSE) };
        if rc == 0 {
            collapsed += end - start;
        }
    }
    collapsed
}
