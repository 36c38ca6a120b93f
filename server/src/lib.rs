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
//!
//! The public API is what the `rookery` binary, the benchmark tools and the
//! integration tests use: [`Server`] and [`Config`] to run one, and the store, admin,
//! auth, confine, engine, files, demo and QAP1 modules the CLI drives. The HTTP layer
//! itself (routes, the HTTP error, metrics, the OpenAPI document) is crate-private and
//! reached only through [`router`].
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod config;
pub mod confine;
pub mod demo;
pub mod engine;
pub(crate) mod error;
pub mod files;
pub mod forward;
pub mod inflight;
pub mod nodes;
pub use rookery_formats as formats;
pub(crate) mod metrics;
pub(crate) mod openapi;
pub mod qap;
pub(crate) mod routes;
pub mod serve;
pub mod state;
pub mod store;

pub use config::Config;
pub use routes::router;
pub use serve::{run, ServeError, Server};
pub use state::AppState;
