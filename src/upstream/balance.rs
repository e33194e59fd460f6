//! Backend selection policies, behind one small trait so new policies plug in without touching
//! the proxy. Policies are pure: they see the backend list and their own state, never a socket.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Backend;

/// Chooses which backend of a pool serves a request.
pub trait Balancer: Send + Sync {
    /// The index into `backends` of the chosen backend, or `None` when `backends` is empty.
    fn pick(&self, backends: &[Backend]) -> Option<usize>;
}

/// Each backend in turn, in config order.
///
/// A relaxed atomic counter is enough: exact fairness between racing threads does not matter,
/// and it costs no lock on the hot path.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round robin starting at the first backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, backends: &[Backend]) -> Option<usize> {
        if backends.is_empty() {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % backends.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: u16) -> Vec<Backend> {
        (1..=n)
            .map(|port| Backend {
                index: usize::from(port - 1),
                authority: format!("127.0.0.1:{port}").parse().expect("authority"),
            })
            .collect()
    }

    #[test]
    fn round_robin_visits_each_backend_equally_in_order() {
        let rr = RoundRobin::new();
        let pool = backends(3);
        let picks: Vec<usize> = (0..9).filter_map(|_| rr.pick(&pool)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_on_an_empty_pool_picks_nothing() {
        assert_eq!(RoundRobin::new().pick(&[]), None);
    }
}
