//! The server's side of R: interactive sessions (one forked worker each), published
//! services (a warm pool per version, model preloaded), and batch jobs. Everything
//! here reaches R through `rookery-engine` on tokio's blocking pool, never on an
//! async thread, and hands back plain data.

mod error;
mod jobs;
mod ready;
mod services;
mod sessions;
mod shared_jobs;
mod start;

pub use error::{Error, RFailure, RFailureKind};
pub use jobs::{JobHandle, Jobs};
pub use services::{record_for, LiveService, Reconciled, ServiceSpec, Services};
pub use sessions::{is_r_name, QapPassError, SessionEntry, Sessions};
pub use shared_jobs::SharedJobs;

/// Runs a blocking engine call on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    Ok(tokio::task::spawn_blocking(f).await?)
}
