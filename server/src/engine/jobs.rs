//! Batch jobs: a service's function over a large table, split in chunks over all of
//! the service's workers by the engine's batch API, in the background. Owns starting,
//! progress, cancelling, and writing the result into the owner's `jobs` folder; the
//! job records live in the store so they outlive the server. In a cluster (a shared
//! store and folder) jobs go to `shared_jobs.rs` instead, and every node scores them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rookery_engine::{BatchOptions, CancelHandle, Progress, Value};

use super::Error;
use crate::admin::now;
use crate::files::ConfinedDir;
use crate::formats::tabular::{value_to_json, Layout};
use crate::store::{JobRecord, JobState, Store};

use super::shared_jobs::SharedJobs;
use super::LiveService;

/// A job started by this server process.
#[derive(Debug)]
pub struct JobHandle {
    record: Mutex<JobRecord>,
    cancel: CancelHandle,
}

impl JobHandle {
    pub fn snapshot(&self) -> JobRecord {
        self.record.lock().clone()
    }
}

/// The jobs of this process, by id.
#[derive(Debug)]
pub struct Jobs {
    store: Arc<dyn Store>,
    live: Mutex<HashMap<String, Arc<JobHandle>>>,
    chunk_rows: usize,
    chunk_timeout: Duration,
    /// Set in a cluster: jobs are queued for every node.
    shared: Option<Arc<SharedJobs>>,
}

/// The file a job's result is written to, in its owner's `jobs` folder.
pub fn result_file(id: &str) -> String {
    format!("{id}.json")
}

impl Jobs {
    pub fn new(store: Arc<dyn Store>, limits: &crate::config::Limits) -> Jobs {
        Jobs {
            store,
            live: Mutex::new(HashMap::new()),
            chunk_rows: limits.batch_chunk_rows,
            chunk_timeout: Duration::from_secs(limits.chunk_timeout_secs),
            shared: None,
        }
    }

    /// Jobs queued in the store for every node of a cluster (see `shared_jobs.rs`).
    pub fn shared(mut self, shared: Arc<SharedJobs>) -> Jobs {
        self.shared = Some(shared);
        self
    }

    /// The cluster's part, when jobs are shared.
    pub fn shared_part(&self) -> Option<&Arc<SharedJobs>> {
        self.shared.as_ref()
    }

    /// The result of a succeeded job, as stored (JSON records). Blocking.
    pub fn read_result(
        &self,
        job: &JobRecord,
        dirs: &crate::files::UserDirs,
    ) -> Result<Vec<u8>, Error> {
        match &self.shared {
            Some(shared) => {
                let path = shared.result_path(&job.id);
                std::fs::read(&path).map_err(|e| {
                    Error::Internal(format!("reading the result of job `{}`: {e}", job.id))
                })
            }
            None => Ok(dirs.user(&job.owner)?.jobs()?.read(&result_file(&job.id))?),
        }
    }

    /// Marks jobs left queued or running by a previous server process as failed.
    /// Shared jobs are left alone: other nodes finish them.
    pub fn recover(&self) -> Result<usize, Error> {
        if self.shared.is_some() {
            return Ok(0);
        }
        let records = self.store.unfinished_jobs()?;
        let n = records.len();
        for mut r in records {
            r.state = JobState::Failed;
            r.error = Some("the server stopped while the job ran".into());
            r.finished_at = Some(now());
            self.store.put_job(&r)?;
        }
        Ok(n)
    }

    /// Starts `service` over `table` for `owner`; the result goes to `out`.
    pub fn start(
        &self,
        owner: &str,
        service: Arc<LiveService>,
        table: Value,
        out: ConfinedDir,
    ) -> Result<JobRecord, Error> {
        if let Some(shared) = &self.shared {
            return shared.submit(owner, &service, &table);
        }
        let rows = table.nrow().unwrap_or(table.len());
        let record = JobRecord::queued(
            owner,
            &service.record.name,
            &service.record.version,
            rows as u64,
            rows.div_ceil(self.chunk_rows) as u64,
            now(),
        );
        self.store.put_job(&record)?;
        let cancel = CancelHandle::new()
            .map_err(|e| Error::Internal(format!("cannot make a cancel handle: {e}")))?;
        let handle = Arc::new(JobHandle {
            record: Mutex::new(record.clone()),
            cancel,
        });
        self.live.lock().insert(record.id.clone(), handle.clone());
        let run = Run {
            store: self.store.clone(),
            handle,
            service,
            out,
            chunk_rows: self.chunk_rows,
            chunk_timeout: self.chunk_timeout,
        };
        std::thread::Builder::new()
            .name("rookery-job".into())
            .spawn(move || run.run(table))
            .map_err(|e| Error::Internal(format!("cannot start the job thread: {e}")))?;
        Ok(record)
    }

    /// The job `id` if `caller` owns it (or is an admin); others' jobs look missing.
    pub fn get(&self, id: &str, caller: &crate::auth::AuthUser) -> Result<JobRecord, Error> {
        let live = self.live.lock().get(id).map(|h| h.snapshot());
        let record = match live {
            Some(r) => Some(r),
            None => self.store.job(id)?,
        };
        record
            .filter(|r| caller.owns(&r.owner))
            .ok_or_else(|| Error::not_found(format!("job `{id}`")))
    }

    /// Cancels a running job; a finished one is left as it is.
    pub fn cancel(&self, id: &str, caller: &crate::auth::AuthUser) -> Result<JobRecord, Error> {
        let record = self.get(id, caller)?;
        if let Some(shared) = &self.shared {
            shared.cancel(id)?;
            return Ok(self.store.job(id)?.unwrap_or(record));
        }
        if let Some(h) = self.live.lock().get(id) {
            h.cancel.cancel();
        }
        Ok(record)
    }

    /// Forgets finished jobs of this process (their records stay in the store).
    pub fn prune(&self) {
        self.live
            .lock()
            .retain(|_, h| !h.snapshot().state.is_finished());
    }
}

/// One job's background run.
struct Run {
    store: Arc<dyn Store>,
    handle: Arc<JobHandle>,
    service: Arc<LiveService>,
    out: ConfinedDir,
    chunk_rows: usize,
    chunk_timeout: Duration,
}

impl Run {
    fn run(self, table: Value) {
        self.update(|r| r.state = JobState::Running);
        let progress_handle = self.handle.clone();
        let opts = BatchOptions {
            progress: Some(Arc::new(move |p: Progress| {
                let mut r = progress_handle.record.lock();
                r.rows_done = p.rows_done as u64;
                r.chunks_done = p.chunks_done as u64;
                r.chunks_failed = p.chunks_failed as u64;
            })),
            cancel: Some(self.handle.cancel.clone()),
            chunk_timeout: Some(self.chunk_timeout),
            ..BatchOptions::default()
        };
        let outcome = self.service.pool.batch_with(
            &self.service.record.function,
            &table,
            self.chunk_rows,
            &opts,
        );
        drop(table);
        let (state, error) = match outcome {
            _ if self.handle.cancel.is_cancelled() => (JobState::Cancelled, None),
            Err(e) => (JobState::Failed, Some(e.to_string())),
            Ok(outcome) => match outcome.into_value() {
                Err(failure) => (JobState::Failed, Some(failure.to_string())),
                Ok(value) => self.write_result(&value),
            },
        };
        self.update(|r| {
            r.state = state;
            r.error = error;
            r.finished_at = Some(now());
        });
    }

    fn write_result(&self, value: &Value) -> (JobState, Option<String>) {
        let id = self.handle.snapshot().id;
        let bytes = value_to_json(value, Layout::Records);
        match self.out.write(&result_file(&id), &bytes) {
            Ok(()) => (JobState::Succeeded, None),
            Err(e) => (JobState::Failed, Some(format!("writing the result: {e}"))),
        }
    }

    fn update(&self, f: impl FnOnce(&mut JobRecord)) {
        let snapshot = {
            let mut r = self.handle.record.lock();
            f(&mut r);
            r.clone()
        };
        if let Err(e) = self.store.put_job(&snapshot) {
            tracing::error!(job = %snapshot.id, error = %e, "saving a job record failed");
        }
    }
}
