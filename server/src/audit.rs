//! The audit log: who ran what (user, route, session or service, SHA-256 of the
//! code, outcome). Handlers record entries through a channel; one background thread
//! writes them to the store in batches, so a scoring call never waits on the disk.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::admin::now;
use crate::store::{AuditEntry, Store};

/// Entries waiting to be written; beyond this the oldest news is dropped with a
/// warning rather than slowing requests down.
const BACKLOG: usize = 65_536;

/// A cheap handle for recording entries.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: SyncSender<AuditEntry>,
}

impl AuditLog {
    /// Starts the writer thread.
    pub fn start(store: Arc<dyn Store>) -> AuditLog {
        let (tx, rx) = mpsc::sync_channel(BACKLOG);
        let spawned = std::thread::Builder::new()
            .name("rookery-audit".into())
            .spawn(move || write_loop(store, rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the audit writer");
        }
        AuditLog { tx }
    }

    /// Records one entry.
    pub fn record(&self, entry: Entry<'_>) {
        let entry = AuditEntry {
            at: now(),
            request_id: entry.request_id.to_owned(),
            user: entry.user.map(str::to_owned),
            route: entry.route.to_owned(),
            target: entry.target,
            code_hash: entry.code.map(code_hash),
            outcome: entry.outcome,
        };
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(e)) => {
                tracing::warn!(user = ?e.user, route = %e.route, "audit backlog full; entry dropped")
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("the audit writer has stopped")
            }
        }
    }
}

/// What a handler knows about the request it audits.
#[derive(Debug)]
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub user: Option<&'a str>,
    pub route: &'a str,
    pub target: Option<String>,
    pub code: Option<&'a str>,
    pub outcome: String,
}

/// SHA-256 of the code, in hex.
pub fn code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}

/// How long the writer lets entries gather after the first one of a batch. It sleeps
/// instead of waiting on the channel, so a busy server (tens of thousands of QAP1
/// evals a second) does not wake it once per entry.
const GATHER: Duration = Duration::from_millis(5);

/// Most entries written in one transaction.
const BATCH: usize = 4096;

fn write_loop(store: Arc<dyn Store>, rx: Receiver<AuditEntry>) {
    while let Ok(first) = rx.recv() {
        std::thread::sleep(GATHER);
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(BATCH - 1));
        if let Err(err) = store.append_audit_batch(&batch) {
            tracing::error!(error = %err, entries = batch.len(), "writing the audit log failed");
        }
    }
}
