//! Bytes in flight: how much of the server's memory requests still arriving (HTTP
//! bodies, QAP1 messages) and large results still being sent (HTTP answers, QAP1
//! replies) may hold at once, per user and over the whole server. `limits.max_body_bytes`,
//! `limits.qap_max_message_bytes` and `limits.max_result_bytes` bound one of them;
//! this bounds their sum: per user (`limits.max_inflight_bytes_per_user`), so that
//! opening more connections does not buy a user more of the server's memory, and in
//! all (`limits.max_inflight_bytes`), so that many users together cannot take it
//! all. A reservation grows with the bytes that arrive (or takes a result's size at
//! once) and is given back when the request has been read or the answer sent.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// The accountant: per user, and in all.
#[derive(Debug)]
pub struct InFlight {
    limit: u64,
    total_limit: u64,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    by_user: HashMap<String, u64>,
    total: u64,
}

/// A reservation would pass a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// What the user's other requests hold, with this one so far (for the server's
    /// budget: what everyone's hold).
    pub held: u64,
    pub limit: u64,
    /// The server's budget, not the user's, is the one that would pass.
    pub server: bool,
}

impl InFlight {
    /// `limit` bytes per user and `total_limit` in all; 0 is no limit.
    pub fn new(limit: u64, total_limit: u64) -> Arc<InFlight> {
        Arc::new(InFlight {
            limit,
            total_limit,
            held: Mutex::new(Held::default()),
        })
    }

    /// What everyone holds now, and the server's budget (0: none).
    pub fn total(&self) -> (u64, u64) {
        (self.held.lock().total, self.total_limit)
    }

    /// An empty reservation for `user`.
    pub fn reservation(self: &Arc<Self>, user: &str) -> Reservation {
        Reservation {
            owner: self.clone(),
            user: user.to_owned(),
            bytes: 0,
        }
    }

    /// What `user` holds now.
    pub fn held(&self, user: &str) -> u64 {
        self.held.lock().by_user.get(user).copied().unwrap_or(0)
    }

    fn take(&self, user: &str, n: u64) -> Result<(), OverBudget> {
        let mut held = self.held.lock();
        let now = held.by_user.get(user).copied().unwrap_or(0);
        let after = now.saturating_add(n);
        if self.limit > 0 && after > self.limit {
            return Err(OverBudget {
                held: now,
                limit: self.limit,
                server: false,
            });
        }
        let total = held.total.saturating_add(n);
        if self.total_limit > 0 && total > self.total_limit {
            return Err(OverBudget {
                held: held.total,
                limit: self.total_limit,
                server: true,
            });
        }
        held.total = total;
        held.by_user.insert(user.to_owned(), after);
        Ok(())
    }

    fn give_back(&self, user: &str, n: u64) {
        let mut held = self.held.lock();
        held.total = held.total.saturating_sub(n);
        if let Some(h) = held.by_user.get_mut(user) {
            *h = h.saturating_sub(n);
            if *h == 0 {
                // Users with nothing in flight leave the map: it never grows with
                // the number of users seen.
                held.by_user.remove(user);
            }
        }
    }
}

/// Bytes one request holds of its user's budget; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    owner: Arc<InFlight>,
    user: String,
    bytes: u64,
}

impl Reservation {
    /// Takes `n` more bytes, or refuses (holding what it held) past a budget.
    pub fn grow(&mut self, n: u64) -> Result<(), OverBudget> {
        self.owner.take(&self.user, n)?;
        self.bytes += n;
        Ok(())
    }

    /// [`Reservation::grow`], retried every 20 ms for up to `wait` while the budget
    /// is full (others' answers finishing give bytes back). A request larger than a
    /// budget by itself is refused at once.
    pub async fn grow_within(
        &mut self,
        n: u64,
        wait: std::time::Duration,
    ) -> Result<(), OverBudget> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.grow(n) {
                Ok(()) => return Ok(()),
                Err(over) if n > over.limit || tokio::time::Instant::now() >= deadline => {
                    return Err(over)
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    /// [`Reservation::grow_within`] for a thread that may block (a QAP1
    /// connection's): the same retries, sleeping between them.
    pub fn grow_blocking(&mut self, n: u64, wait: std::time::Duration) -> Result<(), OverBudget> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.grow(n) {
                Ok(()) => return Ok(()),
                Err(over) if n > over.limit || std::time::Instant::now() >= deadline => {
                    return Err(over)
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.owner.give_back(&self.user, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_add_up_per_user_and_are_given_back() {
        let f = InFlight::new(100, 0);
        let mut a = f.reservation("ada");
        let mut b = f.reservation("ada");
        let mut c = f.reservation("bob");
        a.grow(60).unwrap();
        assert_eq!(
            b.grow(50),
            Err(OverBudget {
                held: 60,
                limit: 100,
                server: false,
            })
        );
        b.grow(40).unwrap();
        c.grow(100).unwrap();
        assert_eq!(f.held("ada"), 100);
        drop(a);
        assert_eq!(f.held("ada"), 40);
        b.grow(60).unwrap();
        drop(b);
        drop(c);
        assert_eq!(f.held("ada"), 0);
        assert!(f.held.lock().by_user.is_empty(), "no entry left behind");
        let unlimited = InFlight::new(0, 0);
        unlimited.reservation("x").grow(u64::MAX).unwrap();
    }

    #[test]
    fn the_servers_budget_bounds_all_users_together() {
        let f = InFlight::new(100, 150);
        let mut a = f.reservation("ada");
        let mut b = f.reservation("bob");
        a.grow(100).unwrap();
        assert_eq!(
            b.grow(60),
            Err(OverBudget {
                held: 100,
                limit: 150,
                server: true,
            })
        );
        b.grow(50).unwrap();
        assert_eq!(f.total(), (150, 150));
        drop(a);
        assert_eq!(f.total(), (50, 150));
        b.grow(50).unwrap();
        drop(b);
        assert_eq!(f.total(), (0, 150));
    }

    #[tokio::test]
    async fn a_full_budget_is_waited_for_briefly() {
        let f = InFlight::new(0, 100);
        let mut a = f.reservation("ada");
        a.grow(80).unwrap();
        let mut b = f.reservation("bob");
        let wait = std::time::Duration::from_millis(100);
        assert!(b.grow_within(50, wait).await.unwrap_err().server);
        assert!(
            b.grow_within(500, wait).await.is_err(),
            "larger than the budget"
        );
        let freed = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            drop(a);
        });
        b.grow_within(50, std::time::Duration::from_secs(30))
            .await
            .unwrap();
        freed.await.unwrap();
    }
}
