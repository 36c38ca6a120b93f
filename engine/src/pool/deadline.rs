//! `Deadline`: the interrupt-then-kill rule of a call that runs too long, shared by
//! both ways a worker runs calls: [`super::worker_conn::WorkerConn::request`] (one
//! call, timed from when it was sent) and `WorkerConn::serve_qap` (QAP1 direct mode,
//! where the worker runs its client's calls itself and stamps when each began).
//!
//! Past `timeout` the call is interrupted (SIGINT: R unwinds at its next check); if
//! the same call still runs `grace` after that, the worker is killed. Owns the
//! decision only: the caller sends the signals and decides what the worker is worth
//! afterwards.

use std::time::{Duration, Instant};

/// What a caller must do about the call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overdue {
    /// Nothing yet.
    No,
    /// Send SIGINT to the worker: the call has run past the timeout.
    Interrupt,
    /// Kill the worker: it did not unwind within the grace period.
    Kill,
}

/// One worker's deadline state: when its current call was interrupted, if it was.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    timeout: Duration,
    grace: Duration,
    interrupted: Option<Instant>,
}

impl Deadline {
    pub fn new(timeout: Duration, grace: Duration) -> Self {
        Deadline {
            timeout,
            grace,
            interrupted: None,
        }
    }

    /// The timeout this deadline enforces.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the current call has been interrupted.
    pub fn interrupted(&self) -> bool {
        self.interrupted.is_some()
    }

    /// What to do about a call that has been running for `busy` (`None`: no call is
    /// running). A call that began after the interrupt is timed afresh.
    pub fn check(&mut self, busy: Option<Duration>, now: Instant) -> Overdue {
        match (busy, self.interrupted) {
            (None, _) => {
                self.interrupted = None;
                Overdue::No
            }
            (Some(busy), Some(at)) if busy < now.saturating_duration_since(at) => {
                self.interrupted = None;
                Overdue::No
            }
            (Some(busy), None) if busy > self.timeout => {
                self.interrupted = Some(now);
                Overdue::Interrupt
            }
            (Some(_), Some(at)) if now.saturating_duration_since(at) > self.grace => Overdue::Kill,
            _ => Overdue::No,
        }
    }

    /// When a call that began at `started` next needs a [`Deadline::check`]: at its
    /// timeout, or at the end of the grace period once interrupted.
    pub fn next_check(&self, started: Instant) -> Instant {
        match self.interrupted {
            Some(at) => at + self.grace,
            None => started + self.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_call_within_its_timeout_is_left_alone() {
        let mut d = Deadline::new(100 * MS, 50 * MS);
        let now = Instant::now();
        assert_eq!(d.check(Some(99 * MS), now), Overdue::No);
        assert_eq!(d.check(None, now), Overdue::No);
        assert!(!d.interrupted());
    }

    #[test]
    fn past_the_timeout_interrupt_once_then_kill_after_the_grace() {
        let mut d = Deadline::new(100 * MS, 50 * MS);
        let t0 = Instant::now();
        assert_eq!(d.check(Some(101 * MS), t0), Overdue::Interrupt);
        assert!(d.interrupted());
        assert_eq!(d.next_check(t0), t0 + 50 * MS);
        assert_eq!(d.check(Some(130 * MS), t0 + 29 * MS), Overdue::No);
        assert_eq!(d.check(Some(152 * MS), t0 + 51 * MS), Overdue::Kill);
    }

    #[test]
    fn a_call_that_began_after_the_interrupt_is_timed_afresh() {
        let mut d = Deadline::new(100 * MS, 50 * MS);
        let t0 = Instant::now();
        assert_eq!(d.check(Some(101 * MS), t0), Overdue::Interrupt);
        // The interrupted call ended and a new one has run 10 ms, 40 ms after it.
        assert_eq!(d.check(Some(10 * MS), t0 + 40 * MS), Overdue::No);
        assert!(!d.interrupted());
        assert_eq!(d.check(Some(60 * MS), t0 + 90 * MS), Overdue::No);
    }

    #[test]
    fn no_call_running_clears_the_interrupt() {
        let mut d = Deadline::new(100 * MS, 50 * MS);
        let t0 = Instant::now();
        assert_eq!(d.check(Some(101 * MS), t0), Overdue::Interrupt);
        assert_eq!(d.check(None, t0 + MS), Overdue::No);
        assert!(!d.interrupted());
        assert_eq!(d.next_check(t0), t0 + 100 * MS);
    }
}
