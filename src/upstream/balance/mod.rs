//! Backend selection policies, behind one small trait so the pool can filter backends (health,
//! ejection, drain, circuit breaking, retries) without knowing the algorithm, and each algorithm
//! stays pure: it sees a list of eligible candidates and its own state, never a socket or a
//! clock it did not get as an argument.

mod ewma;
mod hash;
mod least;
mod random;
mod round_robin;

use std::fmt::Debug;

pub use ewma::{PeakEwma, PeakEwmaBalancer};
pub use hash::HashRing;
pub use least::LeastRequests;
pub use random::WeightedRandom;
pub use round_robin::SmoothRoundRobin;

/// A backend that may serve the request being balanced, with what the policies weigh.
///
/// The pool builds the list per pick from its backends' live state, leaving out those that are
/// down, ejected, drained, saturated or already tried; candidates are in ascending `index`
/// order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The backend's position in the pool's backend list (stable for the pool's lifetime).
    pub index: usize,
    /// Effective weight: the configured weight, scaled down while the backend slow-starts.
    /// Always > 0.
    pub weight: f64,
    /// Requests in flight to the backend now.
    pub in_flight: u32,
    /// Peak-EWMA latency estimate in nanoseconds (decayed to now); `0.0` before any sample.
    pub latency_ns: f64,
}

/// Chooses which of the eligible candidates serves a request.
pub trait Balancer: Send + Sync + Debug {
    /// The `index` of the chosen candidate, or `None` when `candidates` is empty.
    ///
    /// `key` is the request's hash key, for policies that use one (`None` when the request has
    /// none, e.g. the configured header is missing; policies then choose as they see fit).
    fn pick(&self, candidates: &[Candidate], key: Option<u64>) -> Option<usize>;
}

#[cfg(test)]
mod tests {
    /// What the pool does around the policies (docs/load-balancing.md, "How a backend is
    /// chosen"), for every policy: down, ejected, drained and tried backends are left out,
    /// backups serve only while no primary is eligible, a sticky backend wins while it is
    /// available, and when nothing is eligible every backend not drained or tried is tried.
    mod properties {
        use std::future::Future;
        use std::pin::pin;
        use std::task::{Context, Poll, Waker};
        use std::time::Duration;

        use proptest::collection::vec;
        use proptest::prelude::*;
        use tokio::time::Instant;

        use crate::config::{PoolConfig, Timeouts};
        use crate::upstream::state::{EjectionPolicy, Outcome};
        use crate::upstream::{SelectError, SelectionKey, UpstreamPool};

        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Health {
            Up,
            Down,
            Ejected,
            Draining,
        }

        #[derive(Debug, Clone)]
        struct Spec {
            weight: u32,
            backup: bool,
            health: Health,
            tried: bool,
        }

        fn spec() -> impl Strategy<Value = Spec> {
            (
                1u32..=3,
                prop::bool::weighted(0.3),
                prop_oneof![
                    3 => Just(Health::Up),
                    1 => Just(Health::Down),
                    1 => Just(Health::Ejected),
                    1 => Just(Health::Draining),
                ],
                prop::bool::weighted(0.25),
            )
                .prop_map(|(weight, backup, health, tried)| Spec {
                    weight,
                    backup,
                    health,
                    tried,
                })
        }

        fn policy() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "round_robin",
                "least_requests",
                "peak_ewma",
                "hash",
                "random",
            ])
        }

        fn pool(specs: &[Spec], balance: &str) -> UpstreamPool {
            let backends: Vec<String> = specs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    format!(
                        "{{ address = \"127.0.0.1:{}\", weight = {}, backup = {} }}",
                        i + 1,
                        s.weight,
                        s.backup
                    )
                })
                .collect();
            let text = format!(
                "backends = [{}]\nbalance = \"{balance}\"",
                backends.join(", ")
            );
            let config: PoolConfig = toml::from_str(&text).expect("pool config");
            UpstreamPool::new("app", &config, &Timeouts::default()).expect("pool")
        }

        /// Runs a selection that must not wait (no `max_connections`, so it never queues).
        fn select_now(
            pool: &UpstreamPool,
            key: SelectionKey,
            tried: &[usize],
            now: Instant,
        ) -> Result<usize, SelectError> {
            let mut now = now;
            let mut future = pin!(pool.select_at(key, tried, &mut now));
            match future
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
            {
                Poll::Ready(result) => result.map(|lease| lease.index),
                Poll::Pending => panic!("a pool without max_connections waited"),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn only_eligible_backends_are_picked_and_backups_only_without_primaries(
                specs in vec(spec(), 1..=5),
                balance in policy(),
                sticky in prop::option::of(0usize..6),
                hashes in vec(prop::option::of(any::<u64>()), 1..6),
            ) {
                let mut specs = specs;
                // A pool needs at least one primary.
                specs[0].backup = false;
                let pool = pool(&specs, balance);
                let now = Instant::now();
                let ejection = EjectionPolicy {
                    consecutive_failures: 1,
                    base: Duration::from_secs(10),
                    max: Duration::from_secs(10),
                };
                for (index, spec) in specs.iter().enumerate() {
                    let state = &pool.backend(index).unwrap().state;
                    match spec.health {
                        Health::Up => {}
                        Health::Down => {
                            state.record_check(false, 1, 1, now);
                        }
                        Health::Ejected => {
                            state.record_outcome(Outcome::Failure, &ejection, true, now);
                        }
                        Health::Draining => state.set_draining(true),
                    }
                }
                let tried: Vec<usize> = (0..specs.len()).filter(|&i| specs[i].tried).collect();
                let eligible = |backup: bool| -> Vec<usize> {
                    (0..specs.len())
                        .filter(|&i| {
                            specs[i].backup == backup
                                && !specs[i].tried
                                && specs[i].health == Health::Up
                        })
                        .collect()
                };
                let primaries = eligible(false);
                let backups = eligible(true);
                let fail_open: Vec<usize> = (0..specs.len())
                    .filter(|&i| !specs[i].tried && specs[i].health != Health::Draining)
                    .collect();
                let any_primary_up = specs.iter().any(|s| !s.backup && s.health == Health::Up);
                let sticky_wins = sticky.filter(|&s| {
                    s < specs.len()
                        && !specs[s].tried
                        && specs[s].health == Health::Up
                        && (!specs[s].backup || !any_primary_up)
                });
                for hash in hashes {
                    let key = SelectionKey { hash, sticky };
                    let chosen = select_now(&pool, key, &tried, now);
                    let allowed = if let Some(s) = sticky_wins {
                        vec![s]
                    } else if !primaries.is_empty() {
                        primaries.clone()
                    } else if !backups.is_empty() {
                        backups.clone()
                    } else {
                        fail_open.clone()
                    };
                    match chosen {
                        Ok(index) => prop_assert!(
                            allowed.contains(&index),
                            "{:?} (tried {:?}, sticky {:?}): picked {}, allowed {:?}",
                            specs, tried, sticky, index, allowed
                        ),
                        Err(error) => {
                            prop_assert_eq!(error, SelectError::NoBackend);
                            prop_assert!(allowed.is_empty(), "{:?}: nothing picked", specs);
                        }
                    }
                    // The lease is dropped: nothing stays in flight.
                    for index in 0..specs.len() {
                        prop_assert_eq!(pool.backend(index).unwrap().state.in_flight(), 0);
                    }
                }
            }
        }
    }
}
