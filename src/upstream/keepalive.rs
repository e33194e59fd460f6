//! The shared HTTP/1.1 keep-alive connections of one pool: a list of open connections per
//! backend, indexed by the backend's position, so a request takes an idle connection to the
//! backend the balancer chose without hashing an address.
//!
//! Written over hyper's `client::conn::http1` rather than hyper-util's pooled client, which keys
//! its pool by `(scheme, authority)` (hashed on every checkout and return), spawns a task per
//! request to return the connection and boxes each request's future: together about a sixth of
//! Gatehouse's instructions per request in the scenario-1 profile (docs/performance.md).
//!
//! GET and HEAD requests without a body (nearly all of a typical site's requests) are exchanged by
//! Gatehouse itself (`h1.rs`) on connections of their own: one list per backend of idle
//! [`DirectConnection`]s, each back in its list once its response body has ended. Other
//! requests go through hyper's client connection, whose own task drives it: such a connection
//! goes back into its list as soon as the response head has arrived, while the body may still be
//! streaming, and is taken again only once hyper reports it ready for the next request. Lists are
//! capped at `max_idle_per_backend` connections each; a background task closes the ones idle
//! longer than the pool's idle timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Either;
use http::{Method, Request, Response};
use hyper::client::conn::http1::SendRequest;

use super::dial::{Dialer, Sender, failed, to_origin_form};
use super::h1::DirectConnection;
use super::{Backend, UpstreamError};
use crate::body::{RequestBody, UpstreamBody};

/// How many times a request whose kept connection closed before taking it moves on to the next
/// kept connection before a new one is dialled.
const MAX_STALE_TRIES: usize = 4;

/// Idle-timeout checks per idle timeout: a connection closes between 1× and 1.25× the timeout
/// after its last use.
const CHECKS_PER_TIMEOUT: u32 = 4;

/// The open connections to one backend.
type Kept = Mutex<Vec<KeptConnection>>;

struct KeptConnection {
    sender: SendRequest<RequestBody>,
    /// The idle-check tick at which it was last returned or last seen busy.
    tick: u64,
}

/// An idle connection for Gatehouse's own exchanges.
struct KeptDirect {
    connection: Box<DirectConnection>,
    /// The idle-check tick at which it was returned.
    tick: u64,
}

/// The open connections to each backend, shared with the idle-timeout task and with the
/// response bodies that will return their connections.
struct Lists {
    per_backend: Vec<Kept>,
    direct: Vec<Mutex<Vec<KeptDirect>>>,
    /// Advanced by the idle-timeout task at each check; connections are stamped with it.
    tick: AtomicU64,
    /// Connections kept per backend and list, at most.
    max_kept: usize,
}

/// Where a [`DirectConnection`] goes back to when its exchange is over: its backend's list.
pub(super) struct Homecoming {
    lists: Arc<Lists>,
    index: usize,
}

impl Homecoming {
    /// Keeps `connection` for the next request to its backend, unless the list is full.
    pub(super) fn put(self, connection: Box<DirectConnection>) {
        let Some(list) = self.lists.direct.get(self.index) else {
            return;
        };
        let tick = self.lists.tick.load(Ordering::Relaxed);
        let mut kept = lock(list);
        if kept.len() < self.lists.max_kept {
            kept.push(KeptDirect { connection, tick });
        }
    }
}

/// Whether Gatehouse's own exchange (`h1.rs`) can carry `request`: a GET or HEAD without a body,
/// no upgrade and no `Expect`.
fn is_direct(request: &Request<RequestBody>) -> bool {
    (request.method() == Method::GET || request.method() == Method::HEAD)
        && http_body::Body::is_end_stream(request.body())
        // One pass over the names: cheaper than three hashed lookups for a request's handful.
        && !request.headers().keys().any(|name| {
            name == http::header::TRANSFER_ENCODING
                || name == http::header::UPGRADE
                || name == http::header::EXPECT
        })
}

/// HTTP/1.1 keep-alive connections to a pool's backends (optionally over TLS).
pub(super) struct KeepAlivePool {
    dialer: Dialer,
    lists: Arc<Lists>,
    idle_timeout: Duration,
    /// The idle-timeout task, started with the first kept connection (building a pool needs no
    /// runtime; `gatehouse check` builds them without one).
    reaper: OnceLock<()>,
}

impl KeepAlivePool {
    /// A pool of `backends` lists; nothing is connected until first use.
    pub(super) fn new(
        dialer: Dialer,
        backends: usize,
        max_kept: usize,
        idle_timeout: Duration,
    ) -> Self {
        KeepAlivePool {
            dialer,
            lists: Arc::new(Lists {
                per_backend: (0..backends).map(|_| Mutex::new(Vec::new())).collect(),
                direct: (0..backends).map(|_| Mutex::new(Vec::new())).collect(),
                tick: AtomicU64::new(0),
                max_kept,
            }),
            idle_timeout,
            reaper: OnceLock::new(),
        }
    }

    /// True when the connections are TLS.
    pub(super) fn is_tls(&self) -> bool {
        self.dialer.is_tls()
    }

    /// Sends `request` to `backend` on an idle kept connection, or on a new one.
    ///
    /// Not an `async fn`: the choice between the two ways of sending is made before the future
    /// exists, so the future holds only the chosen one's state (and not the request twice).
    pub(super) fn send<'a>(
        &'a self,
        backend: &'a Backend,
        mut request: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + 'a {
        to_origin_form(request.uri_mut());
        if is_direct(&request) {
            let kept = self.take_direct(backend.index);
            // With none of its own idle, a GET reuses an idle hyper connection rather than
            // opening a new one (a backend that also serves other methods needs no more
            // connections than before).
            if kept.is_some() || !self.has_ready(backend.index) {
                return Either::Left(
                    self.send_direct(backend, request, kept)
                        .map(|sent| sent.map(|r| r.map(UpstreamBody::from))),
                );
            }
        }
        // Boxed: hyper's client future is three times the size of the direct exchange's, and
        // requests with a body are the rarer kind; inline, it would size every request's future.
        Either::Right(
            Box::pin(self.send_hyper(backend, request))
                .map(|sent| sent.map(|r| r.map(UpstreamBody::from))),
        )
    }

    /// Sends a GET or HEAD without a body by Gatehouse's own exchange, on `kept` or another kept
    /// connection, or a new one.
    ///
    /// Not an `async fn`: the request is taken apart before the future is made, so the future
    /// (inline in every request's) holds only the parts it sends.
    fn send_direct<'a>(
        &'a self,
        backend: &'a Backend,
        request: Request<RequestBody>,
        mut kept: Option<Box<DirectConnection>>,
    ) -> impl Future<Output = Result<Response<super::h1::DirectBody>, UpstreamError>> + Send + 'a
    {
        let (parts, _) = request.into_parts();
        async move {
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            for _ in 0..MAX_STALE_TRIES {
                let Some(connection) = kept.take().or_else(|| self.take_direct(backend.index))
                else {
                    break;
                };
                let home = self.homecoming(backend.index);
                match connection
                    .exchange(&parts.method, target, &parts.headers, home)
                    .await
                {
                    Ok(response) => return Ok(response),
                    // Nothing came back on a kept connection: the backend closed it while it
                    // was idle (its keep-alive timeout), most likely before it saw the request.
                    // A GET or HEAD may be repeated (RFC 9110 §9.2.2), as nginx and hyper's
                    // client do.
                    Err(error) if error.silent => {
                        tracing::debug!(backend = %backend.authority, cause = %error.cause, "kept connection failed; trying another");
                    }
                    Err(error) => return Err(UpstreamError::Failed(error.cause)),
                }
            }
            // Boxed, like the hyper path's dial: connecting is the rare path.
            let stream = Box::pin(self.dialer.connect(backend, None)).await?;
            let home = self.homecoming(backend.index);
            DirectConnection::new(stream)
                .exchange(&parts.method, target, &parts.headers, home)
                .await
                .map_err(|error| UpstreamError::Failed(error.cause))
        }
    }

    fn homecoming(&self, index: usize) -> Homecoming {
        self.start_reaper();
        Homecoming {
            lists: self.lists.clone(),
            index,
        }
    }

    /// An idle connection for Gatehouse's own exchanges to backend `index`; ones the backend
    /// closed are dropped on the way.
    fn take_direct(&self, index: usize) -> Option<Box<DirectConnection>> {
        let mut kept = lock(self.lists.direct.get(index)?);
        while let Some(mut last) = kept.pop() {
            if last.connection.is_usable() {
                return Some(last.connection);
            }
        }
        None
    }

    /// Sends `request` through hyper's client connection, on an idle kept one or a new one.
    async fn send_hyper(
        &self,
        backend: &Backend,
        mut request: Request<RequestBody>,
    ) -> Result<Response<hyper::body::Incoming>, UpstreamError> {
        for _ in 0..MAX_STALE_TRIES {
            let Some(mut sender) = self.take(backend.index) else {
                break;
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.keep(backend.index, sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    // It closed (the backend's own idle timeout, usually) before writing
                    // anything: the request is untouched and may go elsewhere.
                    Some(untouched) => request = untouched,
                    None => return Err(failed(error.into_error())),
                },
            }
        }
        // Boxed: connecting (TCP, TLS, handshake) is the rare path and its future is large;
        // inline, it would grow every request's future, which is moved around and kept per
        // client connection.
        let mut sender = match Box::pin(self.dialer.dial(backend, None)).await? {
            Sender::Http1(sender) => sender,
            Sender::Http2(_) => {
                return Err(UpstreamError::Connect {
                    timed_out: false,
                    cause: "an HTTP/1.1 pool dialled an HTTP/2 connection".to_owned(),
                });
            }
        };
        let response = sender.send_request(request).await.map_err(failed)?;
        self.keep(backend.index, sender);
        Ok(response)
    }

    /// An idle connection to backend `index`, taken out of its list; closed ones are dropped on
    /// the way.
    fn take(&self, index: usize) -> Option<SendRequest<RequestBody>> {
        let mut kept = lock(self.lists.per_backend.get(index)?);
        let mut position = 0;
        while position < kept.len() {
            let sender = &kept[position].sender;
            if sender.is_ready() {
                return Some(kept.swap_remove(position).sender);
            }
            if sender.is_closed() {
                kept.swap_remove(position);
            } else {
                position += 1;
            }
        }
        None
    }

    /// True when backend `index` has an idle hyper connection ready for a request.
    fn has_ready(&self, index: usize) -> bool {
        self.lists
            .per_backend
            .get(index)
            .is_some_and(|list| lock(list).iter().any(|kept| kept.sender.is_ready()))
    }

    /// Keeps `sender` for later requests (usable again once its exchange is over), unless the
    /// backend's list is full: then it closes after its exchange.
    fn keep(&self, index: usize, sender: SendRequest<RequestBody>) {
        let Some(list) = self.lists.per_backend.get(index) else {
            return;
        };
        let tick = self.lists.tick.load(Ordering::Relaxed);
        {
            let mut kept = lock(list);
            if kept.len() >= self.lists.max_kept {
                return;
            }
            kept.push(KeptConnection { sender, tick });
        }
        self.start_reaper();
    }

    fn start_reaper(&self) {
        self.reaper.get_or_init(|| {
            let period = (self.idle_timeout / CHECKS_PER_TIMEOUT).max(Duration::from_millis(50));
            tokio::spawn(close_idle(Arc::downgrade(&self.lists), period));
        });
    }

    /// Connections open in backend `index`'s lists (for tests).
    #[cfg(test)]
    pub(super) fn kept(&self, index: usize) -> usize {
        let hyper = self
            .lists
            .per_backend
            .get(index)
            .map_or(0, |l| lock(l).len());
        let direct = self.lists.direct.get(index).map_or(0, |l| lock(l).len());
        hyper + direct
    }
}

fn lock<T>(list: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while a list is locked; if something did, the list is still consistent.
    list.lock().unwrap_or_else(|p| p.into_inner())
}

/// Closes kept connections idle for longer than `CHECKS_PER_TIMEOUT` checks, until the pool is
/// gone (a reload replaced it and its last request finished).
async fn close_idle(lists: Weak<Lists>, period: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(lists) = lists.upgrade() else {
            return;
        };
        let now = lists.tick.fetch_add(1, Ordering::Relaxed) + 1;
        for list in &lists.per_backend {
            lock(list).retain_mut(|kept| {
                if kept.sender.is_closed() {
                    return false;
                }
                if !kept.sender.is_ready() {
                    // Busy (a body still streaming): its idle time starts later.
                    kept.tick = now;
                    return true;
                }
                now - kept.tick <= u64::from(CHECKS_PER_TIMEOUT)
            });
        }
        for list in &lists.direct {
            lock(list).retain_mut(|kept| {
                now - kept.tick <= u64::from(CHECKS_PER_TIMEOUT) && kept.connection.is_usable()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;
    use crate::upstream::BackendRegistry;

    /// What the test origin saw: connections accepted and request targets.
    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        targets: Mutex<Vec<String>>,
    }

    /// A real HTTP/1.1 origin on loopback; `close_after_each` makes it close every connection
    /// after one response, as a backend with keep-alive off does.
    async fn origin(close_after_each: bool) -> (std::net::SocketAddr, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let seen = Arc::new(Seen::default());
        let counted = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.connections.fetch_add(1, Ordering::SeqCst);
                let seen = counted.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        lock_targets(&seen).push(request.uri().to_string());
                        // A body too large to be buffered whole keeps its connection busy
                        // until the client reads it.
                        let body = if request.uri().path() == "/big" {
                            bytes::Bytes::from(vec![b'x'; 4 << 20])
                        } else {
                            bytes::Bytes::from_static(b"hello")
                        };
                        async move {
                            Ok::<_, std::convert::Infallible>(Response::new(
                                http_body_util::Full::new(body),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close_after_each)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (address, seen)
    }

    fn lock_targets(seen: &Seen) -> std::sync::MutexGuard<'_, Vec<String>> {
        seen.targets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn backend(address: std::net::SocketAddr) -> Backend {
        let authority = super::super::parse_backend_address(&address.to_string()).expect("address");
        Backend {
            index: 0,
            state: BackendRegistry::new().state_for("p", authority.as_str()),
            authority,
            weight: 1,
            backup: false,
            metrics: OnceLock::new(),
        }
    }

    fn pool(max_kept: usize, idle_timeout: Duration) -> KeepAlivePool {
        KeepAlivePool::new(
            Dialer::new(Duration::from_secs(5), None, false),
            1,
            max_kept,
            idle_timeout,
        )
    }

    fn get(backend: &Backend, target: &str) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::empty());
        *request.uri_mut() = format!("http://{}{target}", backend.authority)
            .parse()
            .expect("uri");
        request
    }

    async fn exchange(pool: &KeepAlivePool, backend: &Backend, target: &str) -> bytes::Bytes {
        let response = pool
            .send(backend, get(backend, target))
            .await
            .expect("response");
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection_and_go_in_origin_form() {
        let (address, seen) = origin(false).await;
        let backend = backend(address);
        let pool = pool(8, Duration::from_secs(60));
        for _ in 0..5 {
            assert_eq!(exchange(&pool, &backend, "/a?b=c").await, "hello");
            // The connection is usable again once hyper has seen the end of the exchange.
            tokio::task::yield_now().await;
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
        assert_eq!(pool.kept(0), 1);
        assert!(lock_targets(&seen).iter().all(|t| t == "/a?b=c"));
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_replaced() {
        let (address, seen) = origin(true).await;
        let backend = backend(address);
        let pool = pool(8, Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(exchange(&pool, &backend, "/").await, "hello");
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn concurrent_requests_beyond_the_cap_are_not_kept() {
        let (address, seen) = origin(false).await;
        let backend = backend(address);
        let pool = pool(1, Duration::from_secs(60));
        // Both heads arrive before either body is read: two connections are needed at once.
        let first = pool
            .send(&backend, get(&backend, "/big"))
            .await
            .expect("first");
        let second = pool
            .send(&backend, get(&backend, "/big"))
            .await
            .expect("second");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
        // A direct exchange's connection comes back when its body has ended.
        assert_eq!(pool.kept(0), 0);
        for response in [first, second] {
            let body = response.into_body().collect().await.expect("body");
            assert_eq!(body.to_bytes().len(), 4 << 20);
        }
        assert_eq!(pool.kept(0), 1, "the second connection is over the cap");
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let (address, seen) = origin(false).await;
        let backend = backend(address);
        let pool = pool(8, Duration::from_secs(60));
        let response = pool
            .send(&backend, get(&backend, "/big"))
            .await
            .expect("response");
        drop(response);
        assert_eq!(pool.kept(0), 0);
        assert_eq!(exchange(&pool, &backend, "/").await, "hello");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn requests_with_a_body_go_through_hyper_on_connections_of_their_own() {
        let (address, seen) = origin(false).await;
        let backend = backend(address);
        let pool = pool(8, Duration::from_secs(60));
        assert_eq!(exchange(&pool, &backend, "/").await, "hello");
        let mut post = get(&backend, "/form");
        *post.method_mut() = Method::POST;
        let response = pool.send(&backend, post).await.expect("response");
        assert!(!response.body().is_direct());
        let body = response.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes(), "hello");
        tokio::task::yield_now().await;
        let response = pool
            .send(&backend, get(&backend, "/"))
            .await
            .expect("response");
        assert!(response.body().is_direct());
        drop(response);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_request_future_stays_small() {
        // Every request's future holds this one; connecting (boxed; its future is several KiB)
        // must not be inline in it, nor hyper's client future (boxed; the rarer path). The bound
        // has room for debug builds, whose futures are larger than release ones (424 bytes here
        // in debug: the direct exchange's request parts, kept connection and write state).
        let backend = backend("127.0.0.1:1".parse().expect("address"));
        let pool = pool(8, Duration::from_secs(60));
        let future = pool.send(&backend, get(&backend, "/"));
        let size = std::mem::size_of_val(&future);
        assert!(size <= 768, "KeepAlivePool::send's future is {size} bytes");
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (address, _seen) = origin(false).await;
        let backend = backend(address);
        let pool = pool(8, Duration::from_millis(200));
        exchange(&pool, &backend, "/").await;
        assert_eq!(pool.kept(0), 1);
        // Generous bound: the check runs every 50 ms; a loaded machine may delay it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while pool.kept(0) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pool.kept(0), 0, "the idle connection was not closed");
    }
}
