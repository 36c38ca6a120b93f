//! Batch jobs shared by the nodes of a cluster (a PostgreSQL store and a shared
//! folder): the node that accepts a job cuts its table into chunks, writes each
//! chunk's rows into the shared folder and queues the chunks in the store; every
//! node's runner threads then claim chunks of the versions it serves (`FOR UPDATE
//! SKIP LOCKED`), score them, write the answers beside the inputs and mark them
//! done, renewing a lease while they work. A node that dies stops renewing: after
//! [`LEASE`] its chunks are claimed again, and the store counts each chunk once.
//! When the last chunk is done an assemble chunk is queued; whoever claims it glues
//! the answers in input order into the job's result, in the shared folder too.
//!
//! ```text
//!  POST .../batch ─▶ node A: in-0 in-1 ... (shared dir) + job_chunks (store)
//!  node A runner ─┐                     node B runner ─┐
//!    claim ─▶ read in-k ─▶ R ─▶ out-k ─▶ done   (lease renewed every RENEW_EVERY)
//!  last chunk done ─▶ assemble: out-0 ++ out-1 ++ ... ─▶ result.json ─▶ succeeded
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rookery_engine::value::codec;
use rookery_engine::{CallOptions, CancelHandle, Value};

use super::{Error, LiveService, Services};
use crate::admin::now;
use crate::formats::tabular::{value_to_json, Layout};
use crate::store::{ChunkClaim, ChunkDone, ChunkKind, JobRecord, JobState, Store, Timestamp};

/// How long a claimed chunk stays its node's without a renewal, in seconds: the
/// most a dead node's chunk waits before another node takes it over.
pub const LEASE: Timestamp = 10;
/// How often a node renews the leases of the chunks it is scoring.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How long an idle runner waits before asking the store again (a job accepted
/// by this node wakes it at once).
const POLL: Duration = Duration::from_millis(500);
/// A chunk whose claimers stopped this many times fails its job (it may be what
/// kills them).
const MAX_ATTEMPTS: u64 = 3;

/// This node's part in the cluster's batch jobs.
#[derive(Debug)]
pub struct SharedJobs {
    store: Arc<dyn Store>,
    /// `<shared_dir>/jobs`: one folder per job.
    dir: PathBuf,
    node: String,
    chunk_rows: usize,
    chunk_timeout: Duration,
    stopping: AtomicBool,
    metrics: Arc<crate::metrics::Metrics>,
    /// Chunks being scored here, with what interrupts them.
    running: Mutex<Vec<(String, u64, CancelHandle)>>,
    /// Runner threads still running.
    runners: AtomicUsize,
    wake: Condvar,
    wake_lock: Mutex<u64>,
}

impl SharedJobs {
    pub fn new(
        store: Arc<dyn Store>,
        shared_dir: &Path,
        node: String,
        limits: &crate::config::Limits,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<SharedJobs, Error> {
        let dir = shared_dir.join("jobs");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))?;
        Ok(SharedJobs {
            store,
            dir,
            node,
            chunk_rows: limits.batch_chunk_rows.max(1),
            chunk_timeout: Duration::from_secs(limits.chunk_timeout_secs),
            stopping: AtomicBool::new(false),
            metrics,
            running: Mutex::new(Vec::new()),
            runners: AtomicUsize::new(0),
            wake: Condvar::new(),
            wake_lock: Mutex::new(0),
        })
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Where the result of job `id` is, once it succeeded.
    pub fn result_path(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("result.json")
    }

    /// Queues `service` over `table` for `owner`: the chunks' rows are written to
    /// the shared folder, then the job and its chunks are stored in one go.
    /// Blocking (it writes the whole table).
    pub fn submit(
        &self,
        owner: &str,
        service: &LiveService,
        table: &Value,
    ) -> Result<JobRecord, Error> {
        let rows = table.nrow().unwrap_or(table.len());
        let chunks: Vec<(u64, u64)> = (0..rows.div_ceil(self.chunk_rows))
            .map(|i| {
                let first = i * self.chunk_rows;
                (first as u64, (self.chunk_rows.min(rows - first)) as u64)
            })
            .collect();
        let record = JobRecord::queued(
            owner,
            &service.record.name,
            &service.record.version,
            rows as u64,
            chunks.len() as u64,
            now(),
        );
        let dir = self.job_dir(&record.id);
        std::fs::create_dir(&dir).map_err(|e| io_error(&dir, e))?;
        let mut bytes = Vec::new();
        for (seq, &(first, n)) in chunks.iter().enumerate() {
            let part = table.slice_rows(first as usize..(first + n) as usize);
            bytes.clear();
            codec::encode(&part, &mut bytes);
            write_whole(&dir.join(input_file(seq as u64)), &bytes, false)?;
        }
        if let Err(e) = self.store.put_shared_job(&record, &chunks) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        self.wake_all();
        Ok(record)
    }

    /// Ends job `id` as cancelled (its chunks are never handed out again; the ones
    /// scoring on this node are interrupted now, on others at their next renewal).
    /// False when it had already ended.
    pub fn cancel(&self, id: &str) -> Result<bool, Error> {
        let ended = self
            .store
            .end_job(id, JobState::Cancelled, None, false, now())?;
        for (job, _, cancel) in self.running.lock().iter() {
            if job == id {
                cancel.cancel();
            }
        }
        if ended {
            self.forget_files(id, false);
        }
        Ok(ended)
    }

    /// Starts `n` runner threads claiming chunks of the versions `services` runs.
    pub fn spawn_runners(self: &Arc<Self>, services: Arc<Services>, n: usize) {
        for i in 0..n.max(1) {
            let (me, services) = (self.clone(), services.clone());
            self.runners.fetch_add(1, Ordering::AcqRel);
            let spawned = std::thread::Builder::new()
                .name(format!("rookery-chunks-{i}"))
                .spawn(move || {
                    me.run(&services);
                    me.runners.fetch_sub(1, Ordering::AcqRel);
                    me.wake_all();
                });
            if let Err(e) = spawned {
                self.runners.fetch_sub(1, Ordering::AcqRel);
                tracing::error!(error = %e, "cannot start a batch runner thread");
            }
        }
    }

    /// Claims no more chunks (the chunks being scored go on).
    pub fn stop_claiming(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Stops claiming; waits up to `grace` for the chunks being scored here, then
    /// hands what is left back to the queue for the other nodes.
    pub fn stop(&self, grace: Duration) {
        self.stop_claiming();
        let deadline = std::time::Instant::now() + grace;
        let mut lock = self.wake_lock.lock();
        while self.runners.load(Ordering::Acquire) > 0 {
            if self.wake.wait_until(&mut lock, deadline).timed_out() {
                break;
            }
        }
        drop(lock);
        for (_, _, cancel) in self.running.lock().iter() {
            cancel.cancel();
        }
        match self.store.release_chunks(&self.node) {
            Ok(0) => {}
            Ok(n) => tracing::info!(chunks = n, "handed unfinished batch chunks back"),
            Err(e) => tracing::warn!(error = %e, "could not hand batch chunks back"),
        }
    }

    fn wake_all(&self) {
        *self.wake_lock.lock() += 1;
        self.wake.notify_all();
    }

    fn run(&self, services: &Services) {
        while !self.stopping.load(Ordering::Acquire) {
            let serving: Vec<(String, String)> = services
                .all()
                .iter()
                .map(|s| (s.record.name.clone(), s.record.version.clone()))
                .collect();
            let at = now();
            match self.store.claim_chunk(&self.node, &serving, at, at + LEASE) {
                Ok(Some(claim)) => self.process(claim, services),
                Ok(None) => self.idle(),
                Err(e) => {
                    tracing::debug!(error = %e, "claiming a batch chunk failed");
                    self.idle();
                }
            }
        }
    }

    fn idle(&self) {
        let mut lock = self.wake_lock.lock();
        if !self.stopping.load(Ordering::Acquire) {
            self.wake.wait_for(&mut lock, POLL);
        }
    }

    fn process(&self, claim: ChunkClaim, services: &Services) {
        let what = describe(&claim);
        if claim.attempt > MAX_ATTEMPTS {
            let error = format!(
                "{what} was started {MAX_ATTEMPTS} times, and each time its node stopped \
                 before it finished"
            );
            self.fail(&claim, &error);
            return;
        }
        let Some(service) = services.get(&claim.service, &claim.version) else {
            // Retired here since the claim: let another node take it at once.
            let _ = self.store.renew_chunk(&claim.job, claim.seq, &self.node, 0);
            return;
        };
        let cancel = match CancelHandle::new() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot make a cancel handle");
                let _ = self.store.renew_chunk(&claim.job, claim.seq, &self.node, 0);
                return;
            }
        };
        self.running
            .lock()
            .push((claim.job.clone(), claim.seq, cancel.clone()));
        let outcome = self.with_lease(&claim, &cancel, || match claim.kind {
            ChunkKind::Rows => self.score(&claim, &service, &cancel),
            ChunkKind::Assemble => self.assemble(&claim),
        });
        self.running
            .lock()
            .retain(|(job, seq, _)| !(*job == claim.job && *seq == claim.seq));
        let counted = match outcome {
            Ok(counted) => counted,
            // The lease was lost (the job ended, or another node took the chunk):
            // whatever this node did is not counted.
            Err(_) if cancel.is_cancelled() => false,
            Err(error) => {
                self.fail(&claim, &format!("{what} failed: {error}"));
                self.metrics.batch_chunk("failed");
                return;
            }
        };
        self.metrics.batch_chunk(match (counted, claim.kind) {
            (false, _) => "lost",
            (true, ChunkKind::Rows) => "scored",
            (true, ChunkKind::Assemble) => "assembled",
        });
    }

    /// Runs `work` while a thread renews the chunk's lease; a renewal refused (the
    /// chunk is no longer this node's) interrupts the work.
    fn with_lease<T>(
        &self,
        claim: &ChunkClaim,
        cancel: &CancelHandle,
        work: impl FnOnce() -> T,
    ) -> T {
        let done = (Mutex::new(false), Condvar::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut finished = done.0.lock();
                while !*finished {
                    if !done.1.wait_for(&mut finished, RENEW_EVERY).timed_out() {
                        continue;
                    }
                    let at = now();
                    match self
                        .store
                        .renew_chunk(&claim.job, claim.seq, &self.node, at + LEASE)
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            cancel.cancel();
                            return;
                        }
                        // The store is away: keep working; the lease may still hold.
                        Err(e) => tracing::debug!(error = %e, "renewing a chunk's lease failed"),
                    }
                }
            });
            let out = work();
            *done.0.lock() = true;
            done.1.notify_all();
            out
        })
    }

    fn score(
        &self,
        claim: &ChunkClaim,
        service: &LiveService,
        cancel: &CancelHandle,
    ) -> Result<bool, String> {
        let dir = self.job_dir(&claim.job);
        let bytes = std::fs::read(dir.join(input_file(claim.seq)))
            .map_err(|e| format!("reading its rows: {e}"))?;
        let chunk = codec::decode(&bytes).map_err(|e| format!("decoding its rows: {e}"))?;
        drop(bytes);
        let opts = CallOptions {
            timeout: Some(self.chunk_timeout),
            cancel: Some(cancel.clone()),
            max_result_bytes: None,
        };
        let value = service
            .pool
            .call_with(&service.record.function, &[("", &chunk)], &opts)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        codec::encode(&value, &mut out);
        write_whole(&dir.join(output_file(claim.seq)), &out, false).map_err(|e| e.to_string())?;
        match self.store.chunk_done(&claim.job, claim.seq, &self.node) {
            Ok(ChunkDone::Counted { last }) => {
                if last {
                    self.wake_all();
                }
                Ok(true)
            }
            Ok(ChunkDone::Lost) => Ok(false),
            Err(e) => Err(format!("recording it: {e}")),
        }
    }

    /// Glues every chunk's answer, in input order, into the result; false when
    /// the job had already ended.
    fn assemble(&self, claim: &ChunkClaim) -> Result<bool, String> {
        let job = match self.store.job(&claim.job) {
            Ok(Some(job)) => job,
            Ok(None) => return Ok(false),
            Err(e) => return Err(e.to_string()),
        };
        let dir = self.job_dir(&job.id);
        let mut parts = Vec::with_capacity(job.chunks_total as usize);
        for seq in 0..job.chunks_total {
            let bytes = std::fs::read(dir.join(output_file(seq)))
                .map_err(|e| format!("reading chunk {seq}'s answer: {e}"))?;
            parts.push(codec::decode(&bytes).map_err(|e| format!("chunk {seq}'s answer: {e}"))?);
        }
        let value = Value::concat_rows(&parts)
            .map_err(|e| format!("chunk results do not fit together: {e}"))?;
        drop(parts);
        let json = value_to_json(&value, Layout::Records);
        drop(value);
        write_whole(&self.result_path(&job.id), &json, true).map_err(|e| e.to_string())?;
        let ended = self
            .store
            .end_job(&job.id, JobState::Succeeded, None, false, now())
            .map_err(|e| e.to_string())?;
        if ended {
            self.forget_files(&job.id, true);
        }
        Ok(ended)
    }

    fn fail(&self, claim: &ChunkClaim, error: &str) {
        match self
            .store
            .end_job(&claim.job, JobState::Failed, Some(error), true, now())
        {
            Ok(true) => {
                tracing::warn!(job = %claim.job, error, "batch job failed");
                self.forget_files(&claim.job, false);
            }
            Ok(false) => {}
            Err(e) => tracing::error!(job = %claim.job, error = %e, "recording a failed job"),
        }
    }

    /// Removes a finished job's chunk files (keeping its result, if any).
    fn forget_files(&self, id: &str, keep_result: bool) {
        let dir = self.job_dir(id);
        if !keep_result {
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name() != "result.json" {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn describe(claim: &ChunkClaim) -> String {
    match claim.kind {
        ChunkKind::Rows => format!(
            "chunk {} (rows {}..{})",
            claim.seq,
            claim.first_row,
            claim.first_row + claim.rows
        ),
        ChunkKind::Assemble => "assembling the result".to_owned(),
    }
}

fn input_file(seq: u64) -> String {
    format!("in-{seq}.bin")
}

fn output_file(seq: u64) -> String {
    format!("out-{seq}.bin")
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` whole or not at all (a temporary file renamed over it):
/// two nodes writing the same chunk's answer leave one whole copy. `durable`: on
/// disk before the rename (a job's result); a chunk's rows and answer live only
/// until the job ends, and a power cut that loses one fails its job clearly.
fn write_whole(path: &Path, bytes: &[u8], durable: bool) -> Result<(), Error> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = path.with_file_name(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&temp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_data()?;
        }
        std::fs::rename(&temp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        io_error(path, e)
    })
}
