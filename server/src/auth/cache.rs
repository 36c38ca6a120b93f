//! A short-lived memory of successful password checks, so that a client that
//! reconnects often (QAP1 clients open a connection per task) does not pay argon2id's
//! deliberate cost every time. Entries are keyed by an HMAC-SHA-256, under a random
//! per-process key, of the user name, the password and the stored hash: no password
//! is kept, a changed password or hash never matches an old entry, and failures are
//! never remembered (the rate limiter counts those).
//!
//! It also bounds how many argon2id checks run at once (one per core):
//! each takes 19 MiB for its few tens of milliseconds, so a burst of logins (with
//! right or wrong passwords, for names that exist or not) would otherwise cost the
//! server 19 MiB per login in flight. Past the bound a check waits its turn, and
//! after [`MAX_WAIT`] gives up with [`HashersBusy`] (503, never a wrong 401).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use parking_lot::{Condvar, Mutex};
use sha2::Sha256;

use super::password;

/// Most entries kept; past this, expired ones are dropped, then the oldest.
const MAX_ENTRIES: usize = 10_000;

/// How long a password check waits for a free hasher before [`HashersBusy`].
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Every hasher was taken for [`MAX_WAIT`]: the check was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once ({0} run at a time); retry shortly")]
pub struct HashersBusy(pub usize);

/// Remembers successful verifications for `ttl`.
pub struct VerifyCache {
    key: [u8; 32],
    ttl: Duration,
    seen: Mutex<HashMap<[u8; 32], Instant>>,
    hashers: Hashers,
}

/// A counting semaphore over argon2id computations.
struct Hashers {
    most: usize,
    free: Mutex<usize>,
    freed: Condvar,
}

/// One hasher, given back on drop.
struct Hasher<'a>(&'a Hashers);

impl Hashers {
    fn new(most: usize) -> Hashers {
        Hashers {
            most,
            free: Mutex::new(most),
            freed: Condvar::new(),
        }
    }

    fn take(&self, wait: Duration) -> Result<Hasher<'_>, HashersBusy> {
        let deadline = Instant::now() + wait;
        let mut free = self.free.lock();
        while *free == 0 {
            if self.freed.wait_until(&mut free, deadline).timed_out() && *free == 0 {
                return Err(HashersBusy(self.most));
            }
        }
        *free -= 1;
        Ok(Hasher(self))
    }
}

impl Drop for Hasher<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.freed.notify_one();
    }
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
            hashers: Hashers::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
        }
    }

    /// Whether `password` is `user`'s, whose stored argon2id hash is `phc`: from
    /// memory when this exact check succeeded within the TTL, else by argon2id (once
    /// a hasher is free: see the module's documentation).
    pub fn verify(&self, user: &str, password: &str, phc: &str) -> Result<bool, HashersBusy> {
        let tag = self.tag(user, password, phc);
        let now = Instant::now();
        if self.seen.lock().get(&tag).is_some_and(|t| now < *t) {
            return Ok(true);
        }
        let hasher = self.hashers.take(MAX_WAIT)?;
        let matched = password::verify(password, phc);
        drop(hasher);
        if matched {
            self.remember(tag, Instant::now() + self.ttl);
        }
        Ok(matched)
    }

    /// [`password::verify_dummy`] under the same bound: for a name that does not
    /// exist, so that it costs what a real check costs.
    pub fn verify_unknown(&self, password: &str) -> Result<(), HashersBusy> {
        let _hasher = self.hashers.take(MAX_WAIT)?;
        password::verify_dummy(password);
        Ok(())
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
        assert!(!cache.verify("ann", "wrong horse", &phc).unwrap());
        assert!(cache.is_empty(), "failures are not remembered");
        assert!(cache.verify("ann", "correct horse", &phc).unwrap());
        assert_eq!(cache.len(), 1);
        assert!(
            cache.verify("ann", "correct horse", &phc).unwrap(),
            "from memory"
        );
        assert!(!cache.verify("ann", "correct horsf", &phc).unwrap());
        assert!(!cache
            .verify("bob", "correct horse", "$argon2id$v=19$bogus")
            .unwrap());
        let new_phc = password::hash("correct horse").unwrap();
        let other = password::hash("battery staple").unwrap();
        assert!(
            !cache.verify("ann", "correct horse", &other).unwrap(),
            "a changed password"
        );
        assert!(cache.verify("ann", "correct horse", &new_phc).unwrap());
        assert_eq!(cache.len(), 2, "a new hash is a new entry");
    }

    #[test]
    fn checks_past_the_bound_wait_their_turn_then_give_up() {
        let hashers = Hashers::new(2);
        let a = hashers.take(Duration::ZERO).unwrap();
        let _b = hashers.take(Duration::ZERO).unwrap();
        assert_eq!(
            hashers.take(Duration::from_millis(20)).err(),
            Some(HashersBusy(2))
        );
        std::thread::scope(|s| {
            let waiter = s.spawn(|| hashers.take(Duration::from_secs(60)).is_ok());
            std::thread::sleep(Duration::from_millis(50));
            drop(a);
            assert!(
                waiter.join().unwrap(),
                "a hasher given back is taken by a waiter"
            );
        });
        assert_eq!(*hashers.free.lock(), 1, "the waiter gave it back in turn");
    }

    #[test]
    fn entries_expire() {
        let cache = VerifyCache::new(Duration::ZERO);
        let phc = password::hash("correct horse").unwrap();
        assert!(cache.verify("ann", "correct horse", &phc).unwrap());
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
