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
///
/// Kept in the direct exchange's connection box, or boxed with hyper's body (see
/// `body::UpstreamSource`): inline in every response body, its 16 bytes made the copies of
/// responses along the request path cost ~0.7 % more instructions per request.
#[derive(Debug)]
pub struct ReadTimeout {
    /// Made at the first wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// The timeout in milliseconds.
    millis: u32,
    /// Bytes came since the timer was last set.
    moved: bool,
}

impl ReadTimeout {
    /// A watch with `timeout` between two arrivals (to the millisecond, at most 49 days).
    pub fn new(timeout: Duration) -> Self {
        ReadTimeout {
            timer: None,
            millis: u32::try_from(timeout.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
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
        let timeout = self.timeout();
        let timer = match &mut self.timer {
            Some(timer) => {
                if self.moved {
                    // Moving a deadline later is cheap in tokio's timer (no wheel update).
                    timer.as_mut().reset(Instant::now() + timeout);
                }
                timer
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep(timeout))),
        };
        self.moved = false;
        timer.as_mut().poll(cx).is_ready()
    }

    /// The timeout, for the error message.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.millis.into())
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
