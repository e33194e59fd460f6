//! Request coalescing: while one request fetches a URL the cache lacks, other requests for it
//! wait (bounded) for that fetch to end instead of each going to the backend, then look again.
//!
//! Like nginx's `proxy_cache_lock`: the waiters are served from the cache once the first
//! response is stored; if it turns out not storable, they go to the backend at once (all of
//! them, without queueing behind each other again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// How a fetch that others waited for ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillOutcome {
    /// Still running.
    Pending,
    /// The response is stored: look again.
    Stored,
    /// The response could not be stored (not storable, too large, failed, abandoned): go to the
    /// backend.
    NotStored,
}

/// The fetches in flight, by key.
#[derive(Debug, Default)]
pub struct Locks {
    fills: Mutex<HashMap<Arc<str>, watch::Receiver<FillOutcome>>>,
}

/// The outcome of asking to fetch a key.
pub enum Acquired {
    /// No fetch was in flight: this request fetches, and tells the others through the guard.
    Leader(FillGuard),
    /// Another request is fetching: wait on this.
    Follower(watch::Receiver<FillOutcome>),
}

impl Locks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, watch::Receiver<FillOutcome>>> {
        self.fills.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Becomes the fetcher of `key`, or learns who is.
    pub fn acquire(self: &Arc<Self>, key: &Arc<str>) -> Acquired {
        let mut fills = self.lock();
        if let Some(receiver) = fills.get(key)
            && *receiver.borrow() == FillOutcome::Pending
        {
            return Acquired::Follower(receiver.clone());
        }
        let (sender, receiver) = watch::channel(FillOutcome::Pending);
        fills.insert(key.clone(), receiver.clone());
        Acquired::Leader(FillGuard {
            locks: self.clone(),
            key: key.clone(),
            sender,
            receiver,
        })
    }

    /// Fetches in flight (for tests).
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }
}

/// Held by the request that fetches a key; dropping it without [`FillGuard::finish`] tells
/// the waiters the fetch failed.
#[derive(Debug)]
pub struct FillGuard {
    locks: Arc<Locks>,
    key: Arc<str>,
    sender: watch::Sender<FillOutcome>,
    receiver: watch::Receiver<FillOutcome>,
}

impl FillGuard {
    /// Tells the waiters how the fetch ended.
    pub fn finish(self, outcome: FillOutcome) {
        self.sender.send_replace(outcome);
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        if *self.sender.borrow() == FillOutcome::Pending {
            self.sender.send_replace(FillOutcome::NotStored);
        }
        let mut fills = self.locks.lock();
        if fills
            .get(&self.key)
            .is_some_and(|r| r.same_channel(&self.receiver))
        {
            fills.remove(&self.key);
        }
    }
}

/// Waits up to `limit` for the fetch behind `receiver` to end; `NotStored` when it does not end
/// in time.
pub async fn wait(mut receiver: watch::Receiver<FillOutcome>, limit: Duration) -> FillOutcome {
    match tokio::time::timeout(limit, receiver.wait_for(|o| *o != FillOutcome::Pending)).await {
        Ok(Ok(outcome)) => *outcome,
        // The guard went away without a word (it always sends one on drop), or time ran out.
        Ok(Err(_)) | Err(_) => FillOutcome::NotStored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_and_followers_that_learn_the_outcome() {
        let locks = Arc::new(Locks::default());
        let key: Arc<str> = Arc::from("k");
        let Acquired::Leader(guard) = locks.acquire(&key) else {
            panic!("first is leader")
        };
        let Acquired::Follower(first) = locks.acquire(&key) else {
            panic!("second follows")
        };
        let Acquired::Follower(second) = locks.acquire(&key) else {
            panic!("third follows")
        };
        let waiting = tokio::spawn(wait(first, Duration::from_secs(30)));
        guard.finish(FillOutcome::Stored);
        assert_eq!(waiting.await.unwrap(), FillOutcome::Stored);
        assert_eq!(
            wait(second, Duration::from_secs(30)).await,
            FillOutcome::Stored
        );
        assert_eq!(locks.in_flight(), 0, "the guard's end frees the key");
        assert!(matches!(locks.acquire(&key), Acquired::Leader(_)));
    }

    #[tokio::test]
    async fn a_dropped_guard_releases_followers_and_waits_are_bounded() {
        let locks = Arc::new(Locks::default());
        let key: Arc<str> = Arc::from("k");
        let Acquired::Leader(guard) = locks.acquire(&key) else {
            panic!("leader")
        };
        let Acquired::Follower(follower) = locks.acquire(&key) else {
            panic!("follower")
        };
        drop(guard);
        assert_eq!(
            wait(follower, Duration::from_secs(30)).await,
            FillOutcome::NotStored
        );
        let Acquired::Leader(_held) = locks.acquire(&key) else {
            panic!("leader again")
        };
        let Acquired::Follower(follower) = locks.acquire(&key) else {
            panic!("follower")
        };
        assert_eq!(
            wait(follower, Duration::from_millis(10)).await,
            FillOutcome::NotStored
        );
    }
}
