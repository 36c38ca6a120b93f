//! A short memory of bearer tokens already looked up, so that a scoring call makes
//! no store round trip: on PostgreSQL (a cluster's registry) a token and its user
//! are two queries, which would cost more than the call itself. An entry is kept
//! for [`TTL`] at most, so a token revoked or a user removed or changed anywhere
//! (another node, the CLI) is refused everywhere within that; this node's own
//! changes (logout, the users API) forget the entries at once. Only tokens the store
//! accepted are kept, keyed by their SHA-256 (never the token), and the memory is
//! bounded ([`MAX_ENTRIES`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::store::{Role, Timestamp, TokenKind};

/// How long a looked-up token is trusted without asking the store again.
pub const TTL: Duration = Duration::from_millis(750);

/// Most tokens kept; past this, expired entries go, then all of them.
const MAX_ENTRIES: usize = 10_000;

/// What a token stood for when the store was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub user: String,
    pub role: Role,
    pub grants: Vec<String>,
    pub kind: TokenKind,
    /// The token's own expiry (checked on every use, not only when looked up).
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Default)]
pub struct TokenCache {
    seen: Mutex<HashMap<[u8; 32], (Known, Instant)>>,
}

impl TokenCache {
    pub fn new() -> TokenCache {
        TokenCache::default()
    }

    /// The token of hash `hash`, if it was looked up within [`TTL`].
    pub fn get(&self, hash: &[u8; 32]) -> Option<Known> {
        let seen = self.seen.lock();
        let (known, at) = seen.get(hash)?;
        (at.elapsed() < TTL).then(|| known.clone())
    }

    /// Remembers what the store said of `hash` just now.
    pub fn put(&self, hash: [u8; 32], known: Known) {
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_ENTRIES {
            seen.retain(|_, (_, at)| at.elapsed() < TTL);
            if seen.len() >= MAX_ENTRIES {
                seen.clear();
            }
        }
        seen.insert(hash, (known, Instant::now()));
    }

    /// Forgets one token (a logout here).
    pub fn forget(&self, hash: &[u8; 32]) {
        self.seen.lock().remove(hash);
    }

    /// Forgets every token of `user` (removed, or its role, grants or password
    /// changed here).
    pub fn forget_user(&self, user: &str) {
        self.seen.lock().retain(|_, (k, _)| k.user != user);
    }

    pub fn len(&self) -> usize {
        self.seen.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(user: &str) -> Known {
        Known {
            user: user.into(),
            role: Role::User,
            grants: vec![],
            kind: TokenKind::Access,
            expires_at: None,
        }
    }

    #[test]
    fn entries_last_the_ttl_and_can_be_forgotten() {
        let c = TokenCache::new();
        c.put([1; 32], known("ada"));
        c.put([2; 32], known("ada"));
        c.put([3; 32], known("bob"));
        assert_eq!(c.get(&[1; 32]), Some(known("ada")));
        assert_eq!(c.get(&[9; 32]), None);
        c.forget(&[1; 32]);
        assert_eq!(c.get(&[1; 32]), None);
        c.forget_user("ada");
        assert_eq!(c.get(&[2; 32]), None);
        assert_eq!(c.get(&[3; 32]), Some(known("bob")));
        std::thread::sleep(TTL);
        assert_eq!(c.get(&[3; 32]), None, "stale after the TTL");
    }

    #[test]
    fn the_memory_is_bounded() {
        let c = TokenCache::new();
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let mut hash = [0; 32];
            hash[..4].copy_from_slice(&i.to_le_bytes());
            c.put(hash, known("ada"));
        }
        assert!(c.len() <= MAX_ENTRIES);
    }
}
