//! Bytes in flight per user: how much of the server's memory one user's requests
//! that are still arriving may hold at once, over every connection (HTTP bodies,
//! QAP1 messages). `limits.max_body_bytes` and `limits.qap_max_message_bytes` bound
//! one request; this bounds their sum, so opening more connections does not buy a
//! user more of the server's memory. A reservation grows with the bytes that arrive
//! and is given back when the request has been read.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// The per-user accountant.
#[derive(Debug)]
pub struct InFlight {
    limit: u64,
    held: Mutex<HashMap<String, u64>>,
}

/// A reservation would pass the user's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// What the user's other requests hold, with this one so far.
    pub held: u64,
    pub limit: u64,
}

impl InFlight {
    /// `limit` bytes per user; 0 is no limit.
    pub fn new(limit: u64) -> Arc<InFlight> {
        Arc::new(InFlight {
            limit,
            held: Mutex::new(HashMap::new()),
        })
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
        self.held.lock().get(user).copied().unwrap_or(0)
    }

    fn take(&self, user: &str, n: u64) -> Result<(), OverBudget> {
        let mut held = self.held.lock();
        let now = held.get(user).copied().unwrap_or(0);
        let after = now.saturating_add(n);
        if self.limit > 0 && after > self.limit {
            return Err(OverBudget {
                held: now,
                limit: self.limit,
            });
        }
        held.insert(user.to_owned(), after);
        Ok(())
    }

    fn give_back(&self, user: &str, n: u64) {
        let mut held = self.held.lock();
        if let Some(h) = held.get_mut(user) {
            *h = h.saturating_sub(n);
            if *h == 0 {
                held.remove(user);
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
    /// Takes `n` more bytes, or refuses (holding what it held) past the budget.
    pub fn grow(&mut self, n: u64) -> Result<(), OverBudget> {
        self.owner.take(&self.user, n)?;
        self.bytes += n;
        Ok(())
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
        let f = InFlight::new(100);
        let mut a = f.reservation("ada");
        let mut b = f.reservation("ada");
        let mut c = f.reservation("bob");
        a.grow(60).unwrap();
        assert_eq!(
            b.grow(50),
            Err(OverBudget {
                held: 60,
                limit: 100
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
        assert!(f.held.lock().is_empty(), "no entry left behind");
        let unlimited = InFlight::new(0);
        unlimited.reservation("x").grow(u64::MAX).unwrap();
    }
}
