//! `Session`: one worker held by one caller across calls, with state kept between them.
//!
//! Owns the worker for the session's life and gives it back on drop: the worker ends
//! the session (drops its environment) and checks itself like after a stateless call,
//! so the next user of that worker never sees this session's variables, options or
//! packages (a worker that cannot prove it is clean is replaced). A fresh session's
//! worker was forked for it alone and is discarded; such a session evaluates in R's
//! global environment, as an R console (and Rserve) does: `ls()`, `<<-`,
//! `globalenv()` and closures defined in it behave as users expect. A session on a
//! pooled worker keeps a private environment, which is dropped at the end.

use std::time::Duration;

use rookery_ffi::Value;

use super::worker_conn::{Limits, WorkerConn};
use super::{call_on, eval_on, CallOptions, Pool};
use crate::confine::Confinement;
use crate::protocol::{self, Request};
use crate::{Error, Evaluation};

/// A worker held across calls. `Send`, so it can move between threads (or tasks)
/// between calls; one call at a time (`&mut self`).
#[derive(Debug)]
pub struct Session {
    pool: Pool,
    worker: Option<WorkerConn>,
    fresh: bool,
}

fn _ensure_send() {
    fn ensure<T: Send>() {}
    ensure::<Session>();
}

impl Session {
    pub(super) fn open(pool: Pool, worker: WorkerConn, fresh: bool) -> Result<Session, Error> {
        let mut session = Session {
            pool,
            worker: Some(worker),
            fresh,
        };
        session.simple(|id| Request::Open { id, global: fresh })?;
        Ok(session)
    }

    /// Whether the session still has a live worker (one killed while it waited, by
    /// the OOM killer or an operator, is not).
    pub fn is_alive(&self) -> bool {
        self.worker
            .as_ref()
            .is_some_and(|w| !w.wait_exit(Duration::ZERO))
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.worker.as_ref().map_or(0, |w| w.pid)
    }

    /// Parses and evaluates `code` in the session's environment.
    pub fn eval(&mut self, code: &str) -> Result<Evaluation, Error> {
        self.eval_with(code, &CallOptions::default())
    }

    /// [`Session::eval`] with a deadline or a cancel handle. After a timeout or a
    /// cancel the session's worker is gone, and so is its state: later calls fail
    /// with [`Error::Closed`].
    pub fn eval_with(&mut self, code: &str, opts: &CallOptions) -> Result<Evaluation, Error> {
        self.eval_bound(code, &[], opts, None)
    }

    /// [`Session::eval_with`], with the OOB messages the code sends (Rserve's
    /// `self.oobSend` and `self.oobMessage`) handed to `oob` while the call waits:
    /// what it answers is what `self.oobMessage` returns. Without it (every other
    /// call) they are an R error.
    pub fn eval_with_oob(
        &mut self,
        code: &str,
        opts: &CallOptions,
        oob: &mut crate::OobSink<'_>,
    ) -> Result<Evaluation, Error> {
        self.eval_bound(code, &[], opts, Some(oob))
    }

    /// Binds `bindings` in the session's environment and evaluates `code` there,
    /// in one trip to the worker (what [`Session::assign`] then
    /// [`Session::eval_with`] would do in two); `oob` as in
    /// [`Session::eval_with_oob`].
    pub fn eval_bound(
        &mut self,
        code: &str,
        bindings: &[(&str, &Value)],
        opts: &CallOptions,
        oob: Option<&mut crate::OobSink<'_>>,
    ) -> Result<Evaluation, Error> {
        let pool = self.pool.clone();
        self.run(|w| eval_on(&pool, w, code, opts, bindings, oob))
    }

    /// Calls an R function in the session's environment.
    pub fn call(&mut self, function: &str, args: &[(&str, &Value)]) -> Result<Value, Error> {
        let pool = self.pool.clone();
        let opts = CallOptions::default();
        self.run(|w| call_on(&pool, w, function, args, &opts))
            .map(|ev| ev.value)
    }

    /// Binds `name` to `value` in the session's environment.
    pub fn assign(&mut self, name: &str, value: &Value) -> Result<(), Error> {
        self.request(|id, region| {
            let value = protocol::put_value(value, region, protocol::DEFAULT_INLINE_LIMIT)?;
            Ok(Request::Assign {
                id,
                name: name.to_owned(),
                value,
            })
        })
        .map(|_| ())
    }

    /// The value bound to `name` in the session's environment (or its parents, the
    /// global environment and the search path).
    pub fn get(&mut self, name: &str) -> Result<Value, Error> {
        let max_result = self.pool.result_limit(&CallOptions::default());
        self.request(|id, _| {
            Ok(Request::Get {
                id,
                name: name.to_owned(),
                max_result,
            })
        })
        .map(|ev| ev.value)
    }

    /// Locks this session's worker in for the rest of its life: identity, folders,
    /// system calls, limits (see [`Confinement`]), and moves it to the job's working
    /// directory and temp dir. Only for a session from [`Pool::fresh_session`], whose
    /// worker is discarded when the session ends. If any layer cannot be applied the
    /// worker is discarded and the session is closed.
    pub fn confine(&mut self, spec: &Confinement) -> Result<(), Error> {
        if !self.fresh {
            return Err(Error::Confinement(
                "only a fresh session's worker can be confined (it is never reused)".into(),
            ));
        }
        if let Some((memory, pids)) = spec.cgroup_limits {
            let w = self.worker.as_mut().ok_or(Error::Closed)?;
            let limited = match &w.cgroup {
                Some(cgroup) => cgroup
                    .set_limits(memory, pids)
                    .map_err(|e| format!("setting the worker's cgroup limits: {e}")),
                None => {
                    Err("this pool gives workers no cgroup (PoolBuilder::worker_cgroups)".into())
                }
            };
            if let Err(why) = limited {
                w.broken = true;
                self.release();
                return Err(Error::Confinement(why));
            }
        }
        match self.simple(|id| Request::Confine {
            id,
            spec: Box::new(spec.clone()),
        }) {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(w) = self.worker.as_mut() {
                    w.broken = true;
                }
                self.release();
                Err(match e {
                    Error::R(e) => Error::Confinement(e.to_string()),
                    other => other,
                })
            }
        }
    }

    /// Lets this session's worker serve a QAP1 client's `socket` itself until it
    /// hands the connection back (QAP1 direct mode, see [`crate::qap::direct`]).
    /// Each call the worker runs on its own has `timeout` (interrupted, then the
    /// worker killed after the pool's grace: [`Error::Timeout`], and the session is
    /// closed like after any timeout).
    pub fn serve_qap(
        &mut self,
        socket: std::os::fd::BorrowedFd<'_>,
        options: crate::qap::direct::QapServe,
        timeout: Option<Duration>,
    ) -> Result<crate::qap::direct::QapYield, crate::qap::direct::QapFailed> {
        let limits = Limits {
            timeout,
            grace: self.pool.shared().config.grace,
            cancel: None,
        };
        let w = self.worker.as_mut().ok_or(crate::qap::direct::QapFailed {
            error: Error::Closed,
            in_flight: false,
        })?;
        let result = w.serve_qap(limits, socket, options);
        if w.broken {
            self.release();
        }
        result
    }

    fn simple(&mut self, make: impl FnOnce(u64) -> Request) -> Result<Evaluation, Error> {
        self.request(|id, _| Ok(make(id)))
    }

    fn request(
        &mut self,
        build: impl FnOnce(u64, &mut crate::shm::ShmRegion) -> Result<Request, protocol::ProtocolError>,
    ) -> Result<Evaluation, Error> {
        let defaults = CallOptions::default();
        let limits = self.pool.limits(&defaults);
        let w = self.worker.as_mut().ok_or(Error::Closed)?;
        let answer = w.request(limits, build);
        let broken = w.broken;
        if broken {
            self.release();
        }
        answer.map(super::evaluation)
    }

    fn run(
        &mut self,
        f: impl FnOnce(&mut WorkerConn) -> Result<Evaluation, Error>,
    ) -> Result<Evaluation, Error> {
        let w = self.worker.as_mut().ok_or(Error::Closed)?;
        let result = f(w);
        if w.broken {
            self.release();
        }
        result
    }

    /// Ends the session and gives the worker back (or discards it).
    fn release(&mut self) {
        let Some(mut w) = self.worker.take() else {
            return;
        };
        let shared = self.pool.shared();
        if self.fresh {
            // Its worker served no one else and never will: end it, and everything it
            // started (its process group, which confined code cannot leave), at once.
            w.kill();
            let _ = w.wait_exit(Duration::from_millis(500));
            w.zygote.forget(w.pid);
            return;
        }
        if !w.broken {
            let limits = Limits {
                timeout: Some(Duration::from_secs(5)),
                grace: shared.config.grace,
                cancel: None,
            };
            let _ = w.request(limits, |id, _| Ok(Request::Reset { id }));
        }
        shared.checkin(w);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.release();
    }
}
