//! Identity: password hashing, tokens, login rate limits, and the `AuthUser`
//! extractor through which every protected route learns who is calling.

pub mod cache;
pub mod extract;
pub mod password;
pub mod ratelimit;
pub mod token;
pub mod tokens;

pub use extract::{AuthUser, Credential};
