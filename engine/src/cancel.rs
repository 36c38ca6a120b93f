//! `CancelHandle`: stops calls from another thread.
//!
//! Owns a flag and an eventfd. A call that was given the handle polls the eventfd
//! while it waits for its worker, so `cancel()` wakes it at once; it then interrupts
//! the worker (and kills it after the grace period) and returns
//! [`crate::Error::Cancelled`]. One handle can cover many calls (a whole batch): the
//! eventfd stays readable once written, so every waiter sees it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Cancels the calls it was passed to. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct CancelHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cancelled: AtomicBool,
    event: OwnedFd,
}

impl CancelHandle {
    /// A handle that has not been cancelled.
    pub fn new() -> std::io::Result<CancelHandle> {
        let event = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        Ok(CancelHandle {
            inner: Arc::new(Inner {
                cancelled: AtomicBool::new(false),
                event,
            }),
        })
    }

    /// Cancels every call using this handle, now and later.
    pub fn cancel(&self) {
        if !self.inner.cancelled.swap(true, Ordering::SeqCst) {
            let _ = rustix::io::write(&self.inner.event, &1u64.to_ne_bytes());
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Readable once cancelled.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.inner.event.as_fd()
    }
}

fn _ensure_send_sync() {
    fn ensure<T: Send + Sync>() {}
    ensure::<CancelHandle>();
}
