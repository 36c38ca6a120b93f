//! This node's place in the registry: who it is (an id, the address other nodes
//! reach it at), how often its heartbeat (sent by `serve.rs`) renews its entry
//! ([`HEARTBEAT_EVERY`]), leaving
//! the registry when it stops, and the list `GET /api/v1/nodes` and `rookery
//! nodes` show. A node whose heartbeat is older than [`SILENT_AFTER`] is shown as
//! not alive; after [`FORGET_AFTER`] any node's heartbeat removes it.

use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

use crate::store::{NodeRecord, Store, Timestamp};

/// How often a node renews its entry.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A node silent this long (seconds) is not alive.
pub const SILENT_AFTER: Timestamp = 10;
/// A node silent this long (seconds) is removed from the registry.
pub const FORGET_AFTER: Timestamp = 300;

/// Who this server is among the nodes.
#[derive(Debug)]
pub struct ThisNode {
    pub id: String,
    pub started_at: Timestamp,
    /// `http(s)://HOST:PORT` other nodes use: `serve --advertise`, else the
    /// address the HTTP listener bound. Set once it is listening.
    address: OnceLock<String>,
}

impl ThisNode {
    /// `id`, or a fresh UUID.
    pub fn new(id: Option<String>) -> ThisNode {
        ThisNode {
            id: id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            started_at: crate::admin::now(),
            address: OnceLock::new(),
        }
    }

    pub fn set_address(&self, address: String) {
        let _ = self.address.set(address);
    }

    pub fn address(&self) -> Option<&str> {
        self.address.get().map(String::as_str)
    }
}

/// Takes this node out of the registry (a clean stop).
pub fn leave(store: &dyn Store, node: &ThisNode) {
    match store.remove_node(&node.id) {
        Ok(_) => tracing::info!(node = %node.id, "left the registry"),
        Err(e) => tracing::warn!(node = %node.id, error = %e, "could not leave the registry"),
    }
}

/// A registered node as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub node: NodeRecord,
    /// Its heartbeat is recent (within [`SILENT_AFTER`] seconds).
    pub alive: bool,
}

/// Every registered node, alive or not, by id.
pub fn list(store: &dyn Store) -> Result<Vec<Listed>, crate::store::StoreError> {
    let now = crate::admin::now();
    Ok(store
        .nodes()?
        .into_iter()
        .map(|node| Listed {
            alive: now - node.heartbeat_at <= SILENT_AFTER,
            node,
        })
        .collect())
}
