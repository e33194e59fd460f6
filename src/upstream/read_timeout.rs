//! The backend read timeout of a response body (`timeouts.upstream_read`, nginx's
//! `proxy_read_timeout`): a backend that stops sending in the middle of a body would otherwise
//! hold the client's response, and both connections, for ever.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Watches the polls of one response body and says when the backend has sent nothing for the
/// timeout while the body was waited on.
///
/// The clock runs only while the body is pending: a body that is not polled (its client is slow)
/// is not the backend's fault. It starts at the first poll that finds nothing after bytes came,
/// which is about when they came, as the body is polled again at once; so a body whose bytes all
/// come with its head never reads the clock or makes a timer.
#[derive(Debug)]
pub struct ReadTimeout {
    timeout: Duration,
    /// Made at the first wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes came since the timer was last set.
    moved: bool,
}

impl ReadTimeout {
    /// A watch with `timeout` between two arrivals.
    pub fn new(timeout: Duration) -> Self {
        ReadTimeout {
            timeout,
            timer: None,
            moved: false,
        }
    }

    /// Call after each poll of the body, with `waiting` when it was pending; `true` when the
    /// backend has now sent nothing for the timeout. While waiting, the task is woken when the
    /// timeout runs out.
    pub fn expired(&mut self, waiting: bool, cx: &mut Context<'_>) -> bool {
        if !waiting {
            self.moved = true;
            return false;
        }
        let timer = match &mut self.timer {
            Some(timer) => {
                if self.moved {
                    // Moving a deadline later is cheap in tokio's timer (no wheel update).
                    timer.as_mut().reset(Instant::now() + self.timeout);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep(self.timeout))),
        };
        self.moved = false;
        timer.as_mut().poll(cx).is_ready()
    }

    /// The timeout, for the error message.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    /// Polls `watch` once, as the body's poll would, with a no-op waker.
    fn poll(watch: &mut ReadTimeout, waiting: bool) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        watch.expired(waiting, &mut cx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_waited_on_for_the_timeout_expires() {
        let mut watch = ReadTimeout::new(TIMEOUT);
        assert!(!poll(&mut watch, true));
        tokio::time::advance(TIMEOUT - Duration::from_millis(1)).await;
        assert!(!poll(&mut watch, true));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(poll(&mut watch, true));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_that_come_restart_the_clock() {
        let mut watch = ReadTimeout::new(TIMEOUT);
        assert!(!poll(&mut watch, true));
        for _ in 0..10 {
            tokio::time::advance(TIMEOUT / 2).await;
            assert!(!poll(&mut watch, false), "bytes came");
            assert!(!poll(&mut watch, true), "waiting again, from now");
        }
        tokio::time::advance(TIMEOUT).await;
        assert!(poll(&mut watch, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_not_polled_is_not_timed() {
        // Its client is slow: the body is not asked for more for longer than the timeout.
        let mut watch = ReadTimeout::new(TIMEOUT);
        assert!(!poll(&mut watch, true));
        assert!(!poll(&mut watch, false));
        tokio::time::advance(TIMEOUT * 5).await;
        assert!(!poll(&mut watch, true), "the clock starts at this wait");
        tokio::time::advance(TIMEOUT).await;
        assert!(poll(&mut watch, true));
    }

    #[test]
    fn a_body_that_never_waits_makes_no_timer() {
        let mut watch = ReadTimeout::new(TIMEOUT);
        assert!(!poll(&mut watch, false));
        assert!(!poll(&mut watch, false));
        assert!(watch.timer.is_none());
    }
}
