//! rookery-server: the HTTP front of Rookery. Authenticates every caller, keeps each
//! user's files apart, and reaches R only through `rookery-engine` (never an R type).
//!
//! ```text
//!  client ─HTTP/TLS─▶ router (request id, metrics, body limit)
//!            AuthUser (bearer token ─▶ store) ─▶ handler ─▶ engine (blocking pool)
//!              sessions: one forked worker each, in users/<user>/sessions/<guid>/
//!              services: a warm pool per version, model preloaded, schema checked
//!              jobs:     the engine's batch API over a service's workers
//!            store (SQLite): users, tokens, grants, services, jobs, audit log
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod config;
pub mod confine;
pub mod demo;
pub mod engine;
pub mod error;
pub mod files;
pub use rookery_formats as formats;
pub mod metrics;
pub mod openapi;
pub mod qap;
pub mod routes;
pub mod serve;
pub mod state;
pub mod store;

pub use config::Config;
pub use routes::router;
pub use serve::{run, ServeError, Server};
pub use state::AppState;
