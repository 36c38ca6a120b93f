//! A short-lived memory of successful password checks, so that a client that
//! reconnects often (QAP1 clients open a connection per task) does not pay argon2id's
//! deliberate cost every time. Entries are keyed by an HMAC-SHA-256, under a random
//! per-process key, of the user name, the password and the stored hash: no password
//! is kept, a changed password or hash never matches an old entry, and failures are
//! never remembered (the rate limiter counts those).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

use super::password;

/// Most entries kept; past this, expired ones are dropped, then the oldest.
const MAX_ENTRIES: usize = 10_000;

/// Remembers successful verifications for `ttl`.
pub struct VerifyCache {
    key: [u8; 32],
    ttl: Duration,
    seen: Mutex<HashMap<[u8; 32], Instant>>,
}

impl std::fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyCache")
            .field("ttl", &self.ttl)
            .field("entries", &self.seen.lock().len())
            .finish_non_exhaustive()
    }
}

impl VerifyCache {
    pub fn new(ttl: Duration) -> VerifyCache {
        VerifyCache {
            key: rand::random(),
            ttl,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `password` is `user`'s, whose stored argon2id hash is `phc`: from
    /// memory when this exact check succeeded within the TTL, else by argon2id.
    pub fn verify(&self, user: &str, password: &str, phc: &str) -> bool {
        let tag = self.tag(user, password, phc);
        let now = Instant::now();
        if self.seen.lock().get(&tag).is_some_and(|t| now < *t) {
            return true;
        }
        if !password::verify(password, phc) {
            return false;
        }
        self.remember(tag, now + self.ttl);
        true
    }

    fn tag(&self, user: &str, password: &str, phc: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        for part in [user, password, phc] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    fn remember(&self, tag: [u8; 32], until: Instant) {
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_ENTRIES {
            let now = Instant::now();
            seen.retain(|_, t| *t > now);
        }
        if seen.len() >= MAX_ENTRIES {
            if let Some(oldest) = seen.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                seen.remove(&oldest);
            }
        }
        seen.insert(tag, until);
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

    #[test]
    fn remembers_successes_only_and_never_across_a_password_change() {
        let cache = VerifyCache::new(Duration::from_secs(60));
        let phc = password::hash("correct horse").unwrap();
        assert!(!cache.verify("ann", "wrong horse", &phc));
        assert!(cache.is_empty(), "failures are not remembered");
        assert!(cache.verify("ann", "correct horse", &phc));
        assert_eq!(cache.len(), 1);
        assert!(cache.verify("ann", "correct horse", &phc), "from memory");
        assert!(!cache.verify("ann", "correct horsf", &phc));
        assert!(!cache.verify("bob", "correct horse", "$argon2id$v=19$bogus"));
        let new_phc = password::hash("correct horse").unwrap();
        let other = password::hash("battery staple").unwrap();
        assert!(
            !cache.verify("ann", "correct horse", &other),
            "a changed password"
        );
        assert!(cache.verify("ann", "correct horse", &new_phc));
        assert_eq!(cache.len(), 2, "a new hash is a new entry");
    }

    #[test]
    fn entries_expire() {
        let cache = VerifyCache::new(Duration::ZERO);
        let phc = password::hash("correct horse").unwrap();
        assert!(cache.verify("ann", "correct horse", &phc));
        let tag = cache.tag("ann", "correct horse", &phc);
        assert!(
            cache
                .seen
                .lock()
                .get(&tag)
                .is_some_and(|t| *t <= Instant::now()),
            "an entry with a zero TTL is already stale"
        );
    }
}
