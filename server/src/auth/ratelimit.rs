//! Failed-login limits per user name and per client address, so that passwords
//! cannot be guessed quickly. Owns only counters in memory: it never sees a password,
//! and successful logins never count.
//!
//! Each failure is one cell of a keyed GCRA limiter (`governor`): `burst` failures
//! pass, then one per `per`. Governor has no way to ask "would the next cell pass?"
//! without spending it, so when a failure leaves a key without capacity the key is
//! written into a small map of block deadlines, which [`LoginLimiter::check`] reads.
//! Both are pruned every [`PRUNE_EVERY`] calls, so memory holds only keys that failed
//! recently.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};
use parking_lot::Mutex;

/// Calls between two prunings of stale keys.
pub const PRUNE_EVERY: u64 = 256;

/// Longest user-name key kept: longer names are not valid anyway and must not cost
/// memory.
const MAX_USER_KEY_CHARS: usize = 64;

/// `burst` failures may happen at once; after that, one per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSpec {
    pub burst: u32,
    pub per: Duration,
}

impl LimitSpec {
    /// 5 failures, then one per 30 s: the limit for one user name.
    pub const PER_USER: LimitSpec = LimitSpec {
        burst: 5,
        per: Duration::from_secs(30),
    };
    /// 20 failures, then one per 3 s: the limit for one client address.
    pub const PER_ADDR: LimitSpec = LimitSpec {
        burst: 20,
        per: Duration::from_secs(3),
    };

    /// The governor quota; a zero burst or period counts as the smallest one.
    fn quota(self) -> Quota {
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        let per = self.per.max(Duration::from_nanos(1));
        Quota::with_period(per)
            .expect("the period is not zero")
            .allow_burst(burst)
    }
}

/// Counts failed logins and says when the next attempt may be made.
#[derive(Debug)]
pub struct LoginLimiter {
    users: Keyed<String>,
    addrs: Keyed<IpAddr>,
    calls: AtomicU64,
    /// A cluster's shared store: failures per user name are also counted there, so
    /// that spreading guesses over the nodes gains nothing (see [`SHARED_MOST`]).
    shared: Option<std::sync::Arc<dyn crate::store::Store>>,
}

/// How many failures per user name, counted over every node within
/// [`SHARED_WINDOW_SECS`], block further attempts.
pub const SHARED_MOST: u64 = 5;
/// The shared count's window, in seconds (the per-user limit's burst at its rate).
pub const SHARED_WINDOW_SECS: i64 = 150;
/// How long a login blocked by the shared count is told to wait.
const SHARED_WAIT: Duration = Duration::from_secs(30);

impl Default for LoginLimiter {
    /// [`LimitSpec::PER_USER`] and [`LimitSpec::PER_ADDR`].
    fn default() -> Self {
        LoginLimiter::new(LimitSpec::PER_USER, LimitSpec::PER_ADDR)
    }
}

impl LoginLimiter {
    pub fn new(per_user: LimitSpec, per_addr: LimitSpec) -> LoginLimiter {
        LoginLimiter {
            users: Keyed::new(per_user),
            addrs: Keyed::new(per_addr),
            calls: AtomicU64::new(0),
            shared: None,
        }
    }

    /// Also counts failures per user name in `store`, shared by every node on it.
    pub fn sharing(mut self, store: std::sync::Arc<dyn crate::store::Store>) -> LoginLimiter {
        self.shared = Some(store);
        self
    }

    /// Forgets shared failures older than the window (housekeeping).
    pub fn purge_shared(&self) {
        if let Some(store) = &self.shared {
            let before = crate::admin::now() - SHARED_WINDOW_SECS;
            if let Err(e) = store.purge_login_failures(before) {
                tracing::warn!(error = %e, "purging shared login failures failed");
            }
        }
    }

    /// Whether a login attempt for `user` from `addr` may be made now, without
    /// counting it. `Err` holds how long to wait (the longer of the two limits).
    pub fn check(&self, user: &str, addr: IpAddr) -> Result<(), Duration> {
        self.tick();
        let now = Instant::now();
        let wait = Option::max(
            self.users.blocked_for(&user_key(user), now),
            self.addrs.blocked_for(&addr_key(addr), now),
        );
        if let Some(wait) = wait {
            return Err(wait);
        }
        if let Some(store) = &self.shared {
            let since = crate::admin::now() - SHARED_WINDOW_SECS;
            // A store that does not answer blocks nothing here: the login's own
            // lookup of the user fails next, with a clear 503.
            if store
                .login_failures_since(&user_key(user), since)
                .is_ok_and(|n| n >= SHARED_MOST)
            {
                return Err(SHARED_WAIT);
            }
        }
        Ok(())
    }

    /// Counts one failed login for `user` and for `addr`.
    pub fn record_failure(&self, user: &str, addr: IpAddr) {
        self.tick();
        self.users.record(user_key(user));
        self.addrs.record(addr_key(addr));
        if let Some(store) = &self.shared {
            if let Err(e) = store.record_login_failure(&user_key(user), crate::admin::now()) {
                tracing::warn!(error = %e, "a failed login was not counted in the shared store");
            }
        }
    }

    /// Keys held (user names + addresses), for metrics and tests.
    pub fn tracked_keys(&self) -> usize {
        self.users.len() + self.addrs.len()
    }

    /// Drops every key whose state is as good as fresh and every past deadline.
    pub fn prune(&self) {
        let now = Instant::now();
        self.users.prune(now);
        self.addrs.prune(now);
    }

    fn tick(&self) {
        if self.calls.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
    }
}

/// A user name as a key: capped, so junk names cannot hold much memory.
fn user_key(user: &str) -> String {
    user.chars().take(MAX_USER_KEY_CHARS).collect()
}

/// An address as a key. IPv4-mapped IPv6 is IPv4, and IPv6 counts per /64: one host
/// usually holds a whole /64, so single addresses would be free to change.
fn addr_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

type Limiter<K> = DefaultKeyedRateLimiter<K, StateInformationMiddleware>;
type GovernorInstant = <governor::clock::DefaultClock as Clock>::Instant;

/// One limit: the failure counter and the deadlines of keys out of capacity.
#[derive(Debug)]
struct Keyed<K: Hash + Eq + Clone> {
    limiter: Limiter<K>,
    blocked: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(spec: LimitSpec) -> Self {
        Keyed {
            limiter: RateLimiter::keyed(spec.quota()).with_middleware(),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    fn blocked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let until = *self.blocked.lock().get(key)?;
        until
            .checked_duration_since(now)
            .filter(|wait| !wait.is_zero())
    }

    /// Spends one cell for `key`; blocks the key when no capacity is left.
    fn record(&self, key: K) {
        match self.limiter.check_key(&key) {
            Ok(state) if state.remaining_burst_capacity() > 0 => {}
            // Out of capacity: a second, refused, check tells until when (a refused
            // check spends nothing).
            Ok(_) => {
                if let Err(not_until) = self.limiter.check_key(&key) {
                    self.block(key, &not_until);
                }
            }
            // A failure while blocked (a race with `check`): keep the key blocked.
            Err(not_until) => self.block(key, &not_until),
        }
    }

    fn block(&self, key: K, not_until: &NotUntil<GovernorInstant>) {
        let wait = not_until.wait_time_from(self.limiter.clock().now());
        let until = Instant::now() + wait;
        let mut blocked = self.blocked.lock();
        let deadline = blocked.entry(key).or_insert(until);
        *deadline = (*deadline).max(until);
    }

    fn prune(&self, now: Instant) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let mut blocked = self.blocked.lock();
        blocked.retain(|_, until| *until > now);
        blocked.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.len().max(self.blocked.lock().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: LimitSpec = LimitSpec {
        burst: 2,
        per: Duration::from_secs(60),
    };
    const LOOSE: LimitSpec = LimitSpec {
        burst: 1000,
        per: Duration::from_secs(60),
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_user_is_blocked_after_burst_failures() {
        let limiter = LoginLimiter::new(TINY, LOOSE);
        let addr = ip("192.0.2.1");
        assert_eq!(limiter.check("alice", addr), Ok(()));
        limiter.record_failure("alice", addr);
        assert_eq!(limiter.check("alice", addr), Ok(()), "one failure of two");
        limiter.record_failure("alice", addr);
        let wait = limiter.check("alice", addr).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= TINY.per, "{wait:?}");
        assert!(
            limiter.check("alice", addr).is_err(),
            "check spends nothing"
        );
    }

    #[test]
    fn other_users_and_addresses_are_not_blocked() {
        let limiter = LoginLimiter::new(TINY, TINY);
        let addr = ip("192.0.2.1");
        limiter.record_failure("alice", addr);
        limiter.record_failure("alice", addr);
        assert!(limiter.check("alice", ip("192.0.2.2")).is_err(), "per user");
        assert!(limiter.check("bob", addr).is_err(), "per address");
        assert_eq!(limiter.check("bob", ip("192.0.2.2")), Ok(()));
    }

    #[test]
    fn an_address_is_blocked_across_user_names() {
        let limiter = LoginLimiter::new(LOOSE, TINY);
        let addr = ip("198.51.100.7");
        limiter.record_failure("a", addr);
        assert_eq!(limiter.check("c", addr), Ok(()));
        limiter.record_failure("b", addr);
        assert!(limiter.check("c", addr).is_err());
        assert_eq!(limiter.check("c", ip("198.51.100.8")), Ok(()));
    }

    #[test]
    fn checks_and_successes_do_not_count() {
        let limiter = LoginLimiter::new(TINY, TINY);
        let addr = ip("192.0.2.1");
        for _ in 0..100 {
            assert_eq!(limiter.check("alice", addr), Ok(()));
        }
        limiter.record_failure("alice", addr);
        assert_eq!(limiter.check("alice", addr), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limiter = LoginLimiter::new(LOOSE, TINY);
        limiter.record_failure("a", ip("2001:db8:1:2::1"));
        limiter.record_failure("a", ip("2001:db8:1:2:ffff::9"));
        assert!(limiter.check("b", ip("2001:db8:1:2::77")).is_err());
        assert_eq!(limiter.check("b", ip("2001:db8:1:3::1")), Ok(()));
        limiter.record_failure("a", ip("::ffff:192.0.2.9"));
        limiter.record_failure("a", ip("192.0.2.9"));
        assert!(limiter.check("b", ip("192.0.2.9")).is_err());
    }

    #[test]
    fn blocks_expire_and_pruning_forgets_stale_keys() {
        let quick = LimitSpec {
            burst: 1,
            per: Duration::from_millis(20),
        };
        let limiter = LoginLimiter::new(quick, quick);
        let addr = ip("192.0.2.1");
        limiter.record_failure("alice", addr);
        assert!(limiter.check("alice", addr).is_err());
        assert!(limiter.tracked_keys() >= 2);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(limiter.check("alice", addr), Ok(()));
        limiter.prune();
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn pruning_runs_on_its_own() {
        let quick = LimitSpec {
            burst: 1000,
            per: Duration::from_nanos(1),
        };
        let limiter = LoginLimiter::new(quick, quick);
        for i in 0..PRUNE_EVERY {
            limiter.record_failure(&format!("user{i}"), ip("192.0.2.1"));
        }
        assert!(limiter.tracked_keys() < PRUNE_EVERY as usize);
    }

    #[test]
    fn long_names_are_capped() {
        assert_eq!(user_key(&"x".repeat(10_000)).len(), MAX_USER_KEY_CHARS);
        assert_eq!(user_key("alice"), "alice");
    }
}
