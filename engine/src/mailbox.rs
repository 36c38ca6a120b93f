//! `Mailbox`: the shared control page of one worker, and the wait/wake protocol on it.
//!
//! Owns a one-page memfd mapped by the parent and its worker, holding two lanes (one
//! per direction). A lane is a sequence number, the `(offset, len)` of the frame the
//! sender wrote into the worker's [`crate::shm::ShmRegion`], and a "receiver sleeps"
//! flag. It must not know about messages: [`crate::channel`] decides what a frame is.
//!
//! ```text
//!  sender                                   receiver
//!  write frame into region                  spin on seq (budget: a few tens of µs)
//!  off/len.store; seq.fetch_add(SeqCst) ─▶  seq changed? read off/len, take frame
//!  if sleeping.swap(0) == 1:                else: sleeping = 1 (SeqCst), re-check seq,
//!      write 1 byte to the socket  ──────▶      poll(socket, extra fds, deadline)
//! ```
//!
//! A call that follows soon after the last one costs no system call at all; a sleeping
//! receiver costs one socket write and one wake-up. The socket doubles as the liveness
//! signal: a peer that dies closes it. The Dekker-style pair of `SeqCst` operations
//! (sender: bump seq, then read the flag; receiver: set the flag, then re-read seq)
//! guarantees that one of the two sides sees the other, so no wake-up is lost; a
//! spurious doorbell byte is drained and costs one extra loop.
#![expect(
    unsafe_code,
    reason = "maps the shared control page and reads its atomics; each block has a SAFETY note"
)]

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

const PAGE: usize = 4096;

/// One direction of the mailbox.
#[repr(C, align(64))]
struct Lane {
    seq: AtomicU32,
    /// The last `seq` the receiver took: lets the sender tell, after the receiver
    /// died, whether its last frame was ever picked up.
    taken: AtomicU32,
    sleeping: AtomicU32,
    offset: AtomicU64,
    len: AtomicU64,
}

#[repr(C)]
struct Page {
    to_worker: Lane,
    to_parent: Lane,
    /// When the worker started the call it is running, in `CLOCK_MONOTONIC`
    /// nanoseconds; 0 while it waits. Set only while it serves a connection itself
    /// (QAP1 direct mode), where the parent has no request of its own to time.
    busy_since: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Page>() <= PAGE);

/// Which lane a side reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Parent,
    Worker,
}

/// What ended a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A frame arrived at `(offset, len)` of the region.
    Frame { offset: u64, len: u64 },
    /// The peer closed the socket (it exited, or dropped its end).
    Hangup,
    /// Extra fd number `i` became readable (a pidfd: the peer died; an eventfd: cancel).
    Extra(usize),
    /// The deadline passed.
    TimedOut,
}

/// The mapped control page plus this side's read cursor.
pub struct Mailbox {
    fd: OwnedFd,
    page: NonNull<Page>,
    side: Side,
    /// Last sequence number this side consumed from its incoming lane.
    seen: u32,
}

// SAFETY: the page holds only atomics, which may be used from any thread; the mapping
// is owned by this value and not tied to the creating thread.
unsafe impl Send for Mailbox {}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("fd", &self.fd)
            .field("side", &self.side)
            .field("seen", &self.seen)
            .finish()
    }
}

impl Mailbox {
    /// Creates the page (parent side). The worker maps the same fd with [`Mailbox::from_fd`].
    pub fn create() -> io::Result<Mailbox> {
        let fd = rustix::fs::memfd_create(
            "rookery-mailbox",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, PAGE as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW)?;
        Self::map(fd, Side::Parent)
    }

    /// Maps a page made by [`Mailbox::create`] (worker side). Rejects an fd that could
    /// shrink under the mapping.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Mailbox> {
        let seals = rustix::fs::fcntl_get_seals(&fd)?;
        let size = rustix::fs::fstat(&fd)?.st_size;
        if !seals.contains(SealFlags::SHRINK) || size < PAGE as i64 {
            return Err(io::Error::other("mailbox fd is not a sealed page"));
        }
        Self::map(fd, Side::Worker)
    }

    fn map(fd: OwnedFd, side: Side) -> io::Result<Mailbox> {
        // SAFETY: a fresh shared mapping (null hint) of one page of a file that is at
        // least a page long and sealed against shrinking, so it stays backed. It aliases
        // no Rust object; `Drop` unmaps it.
        let raw = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                PAGE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }?;
        let page = NonNull::new(raw.cast::<Page>())
            .ok_or_else(|| io::Error::other("mailbox mapped at address 0"))?;
        // A new memfd reads as zeros, and a worker maps it before any frame was sent;
        // both sides start with seen = 0.
        Ok(Mailbox {
            fd,
            page,
            side,
            seen: 0,
        })
    }

    fn page(&self) -> &Page {
        // SAFETY: `page` points at a live, page-aligned mapping of at least
        // `size_of::<Page>()` bytes for as long as `self` lives. `Page` is made only of
        // atomics, for which any bit pattern is valid and concurrent access from another
        // process is the same as from another thread.
        unsafe { self.page.as_ref() }
    }

    fn lanes(&self) -> (&Lane, &Lane) {
        let page = self.page();
        match self.side {
            Side::Parent => (&page.to_parent, &page.to_worker),
            Side::Worker => (&page.to_worker, &page.to_parent),
        }
    }

    /// Marks the start (`true`) or end of a call this worker runs on its own.
    pub fn set_busy(&self, busy: bool) {
        let now = if busy { monotonic_ns().max(1) } else { 0 };
        self.page().busy_since.store(now, Ordering::Release);
    }

    /// How long the worker has been running the call it started on its own, if it
    /// runs one.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.page().busy_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_nanos(monotonic_ns().saturating_sub(since))),
        }
    }

    /// Hands the peer a frame at `(offset, len)` of the region, ringing its doorbell on
    /// `socket` if it sleeps.
    pub fn publish(&self, offset: u64, len: u64, socket: BorrowedFd<'_>) -> io::Result<()> {
        let (_, out) = self.lanes();
        out.offset.store(offset, Ordering::Relaxed);
        out.len.store(len, Ordering::Relaxed);
        out.seq.fetch_add(1, Ordering::SeqCst);
        if out.sleeping.swap(0, Ordering::SeqCst) == 1 {
            ring(socket)?;
        }
        Ok(())
    }

    /// Whether the peer took the last frame this side published.
    pub fn delivered(&self) -> bool {
        let (_, out) = self.lanes();
        out.taken.load(Ordering::Acquire) == out.seq.load(Ordering::Acquire)
    }

    /// The next frame if one is waiting, without blocking.
    fn try_take(&mut self) -> Option<Woken> {
        let (incoming, _) = self.lanes();
        let seq = incoming.seq.load(Ordering::Acquire);
        if seq == self.seen {
            return None;
        }
        let frame = Woken::Frame {
            offset: incoming.offset.load(Ordering::Relaxed),
            len: incoming.len.load(Ordering::Relaxed),
        };
        incoming.taken.store(seq, Ordering::Release);
        self.seen = seq;
        Some(frame)
    }

    /// Waits for the next frame: spins for `spin`, then sleeps in `poll` on `socket`
    /// and `extra` until `deadline` (forever if `None`).
    pub fn wait(
        &mut self,
        spin: Duration,
        socket: BorrowedFd<'_>,
        extra: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
    ) -> io::Result<Woken> {
        if let Some(frame) = self.spin(spin) {
            return Ok(frame);
        }
        loop {
            let (incoming, _) = self.lanes();
            incoming.sleeping.store(1, Ordering::SeqCst);
            if let Some(frame) = self.try_take() {
                self.lanes().0.sleeping.store(0, Ordering::SeqCst);
                return Ok(frame);
            }
            let woken = sleep(socket, extra, deadline)?;
            self.lanes().0.sleeping.store(0, Ordering::SeqCst);
            if let Some(frame) = self.try_take() {
                return Ok(frame);
            }
            if let Some(woken) = woken {
                return Ok(woken);
            }
        }
    }

    fn spin(&mut self, budget: Duration) -> Option<Woken> {
        if let Some(frame) = self.try_take() {
            return Some(frame);
        }
        if budget.is_zero() {
            return None;
        }
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
                if let Some(frame) = self.try_take() {
                    return Some(frame);
                }
            }
            if start.elapsed() >= budget {
                return None;
            }
            // Past the first quarter of the budget, let a runnable thread have this
            // core: when callers outnumber cores, spinning would hold back the very
            // peer it waits for. With a core to spare, this returns at once; quick
            // round trips never get here.
            if start.elapsed() >= budget / 4 {
                rustix::thread::sched_yield();
            }
        }
    }
}

impl AsFd for Mailbox {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        // SAFETY: the live one-page mapping this value owns; no reference into it
        // outlives `&mut self`. A failure only leaks address space.
        let _ = unsafe { rustix::mm::munmap(self.page.as_ptr().cast::<c_void>(), PAGE) };
    }
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// Writes one doorbell byte. A full socket buffer means doorbells are already pending,
/// which wakes the peer just as well.
fn ring(socket: BorrowedFd<'_>) -> io::Result<()> {
    // A peer that is gone (EPIPE, ECONNRESET) is noticed by the wait that follows.
    match rustix::net::send(socket, &[1], rustix::net::SendFlags::NOSIGNAL) {
        Ok(_)
        | Err(rustix::io::Errno::AGAIN | rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET) => {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// One `poll`. `None` means "doorbell rung, look at the lane"; `Some` is the reason
/// the wait ends without a frame.
fn sleep(
    socket: BorrowedFd<'_>,
    extra: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> io::Result<Option<Woken>> {
    let mut fds = Vec::with_capacity(1 + extra.len());
    fds.push(PollFd::new(&socket, PollFlags::IN));
    fds.extend(extra.iter().map(|fd| PollFd::new(fd, PollFlags::IN)));
    let timeout = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        })
    });
    match rustix::event::poll(&mut fds, timeout.as_ref()) {
        Ok(0) => return Ok(Some(Woken::TimedOut)),
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    if let Some(i) = fds[1..].iter().position(|p| !p.revents().is_empty()) {
        return Ok(Some(Woken::Extra(i)));
    }
    let revents = fds[0].revents();
    if revents.contains(PollFlags::IN) && drain(socket)? {
        return Ok(Some(Woken::Hangup));
    }
    if revents.intersects(PollFlags::HUP | PollFlags::ERR) {
        return Ok(Some(Woken::Hangup));
    }
    Ok(None)
}

/// Reads every pending doorbell byte; true when the peer closed the socket.
fn drain(socket: BorrowedFd<'_>) -> io::Result<bool> {
    let mut buf = [0u8; 64];
    loop {
        match rustix::io::read(socket, &mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) if n < buf.len() => return Ok(false),
            Ok(_) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(false),
            Err(rustix::io::Errno::CONNRESET) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn pair() -> (Mailbox, Mailbox, UnixStream, UnixStream) {
        let parent = Mailbox::create().unwrap();
        let worker = Mailbox::from_fd(parent.fd.try_clone().unwrap()).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (parent, worker, a, b)
    }

    #[test]
    fn frame_crosses_while_spinning_and_while_sleeping() {
        let (mut parent, mut worker, psock, wsock) = pair();
        parent.publish(8, 16, psock.as_fd()).unwrap();
        assert!(!parent.delivered());
        let got = worker.wait(Duration::from_micros(10), wsock.as_fd(), &[], None);
        assert_eq!(got.unwrap(), Woken::Frame { offset: 8, len: 16 });
        assert!(parent.delivered());

        let t = std::thread::spawn(move || {
            let got = parent
                .wait(Duration::ZERO, psock.as_fd(), &[], None)
                .unwrap();
            (got, parent, psock)
        });
        std::thread::sleep(Duration::from_millis(50));
        worker.publish(24, 4, wsock.as_fd()).unwrap();
        let (got, _parent, _psock) = t.join().unwrap();
        assert_eq!(got, Woken::Frame { offset: 24, len: 4 });
    }

    #[test]
    fn deadline_and_hangup_end_a_wait() {
        let (mut parent, _worker, psock, wsock) = pair();
        let deadline = Some(Instant::now() + Duration::from_millis(20));
        let got = parent.wait(Duration::ZERO, psock.as_fd(), &[], deadline);
        assert_eq!(got.unwrap(), Woken::TimedOut);
        drop(wsock);
        let got = parent.wait(Duration::ZERO, psock.as_fd(), &[], None);
        assert_eq!(got.unwrap(), Woken::Hangup);
    }

    #[test]
    fn an_unsealed_fd_is_refused() {
        let fd = rustix::fs::memfd_create("x", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, PAGE as u64).unwrap();
        assert!(Mailbox::from_fd(fd).is_err());
    }
}
