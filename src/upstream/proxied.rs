//! Backend connections that start with a PROXY protocol header (`proxy_protocol` on a pool):
//! each one names one client, so each belongs to one client connection and is never shared.
//!
//! A connection's header is written once, at connect, so a pooled connection shared between
//! clients would tell the backend the wrong client for every request but the first one's. As
//! HAProxy does with `send-proxy`, such connections are private to the client connection that
//! opened them: they live in that connection's [`PrivateConnections`], are reused by its later
//! requests (HTTP/1.1: one request at a time per backend connection; h2c: multiplexed), and close
//! when it closes. The cost is one backend connection (and handshake) per client connection
//! instead of a shared keep-alive pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use super::dial::{Dialer, Sender, UpstreamTlsSide, failed, to_origin_form};
use super::{Backend, UpstreamError};
use crate::body::RequestBody;
use crate::proxy_protocol::{Version, encode};

/// Idle or busy HTTP/1.1 connections one client connection keeps to one backend; more are
/// closed after their exchange.
const MAX_KEPT_PER_BACKEND: usize = 8;

/// Tells apart the pools (of every generation) whose connections a client connection keeps.
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// Who a request to a PROXY-protocol pool is for: carried in the request's extensions.
#[derive(Clone)]
pub struct ClientOrigin {
    /// The client's address, as the listener established it (after a trusted PROXY header).
    pub client: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// The client connection's private backend connections.
    pub connections: PrivateConnections,
}

/// The backend connections private to one client connection (cheap to clone: shared).
#[derive(Clone, Default)]
pub struct PrivateConnections(Arc<Mutex<Vec<Kept>>>);

/// A connection kept by a client connection: for pool `pool`, backend `backend`.
struct Kept {
    pool: u64,
    backend: usize,
    sender: Sender,
}

/// The lazily created [`PrivateConnections`] of a client connection: nothing is allocated until
/// a request goes to a PROXY-protocol pool.
#[derive(Default, Clone)]
pub struct LazyPrivateConnections(OnceLock<PrivateConnections>);

impl LazyPrivateConnections {
    /// The connection's private backend connections, created on first use.
    pub fn get(&self) -> PrivateConnections {
        self.0.get_or_init(PrivateConnections::default).clone()
    }
}

impl std::fmt::Debug for LazyPrivateConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LazyPrivateConnections")
    }
}

impl PrivateConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        // A panic while the list is locked leaves it as it was: take it as it is.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kept connection to send on now: an HTTP/1.1 one that is idle (taken out of the list
    /// while in use) or an h2c one (shared). Closed connections are forgotten on the way.
    fn take(&self, pool: u64, backend: usize) -> Option<Sender> {
        let mut kept = self.lock();
        kept.retain(|k| !k.sender.is_closed());
        let position = kept.iter().position(|k| {
            k.pool == pool
                && k.backend == backend
                && match &k.sender {
                    Sender::Http1(s) => s.is_ready(),
                    Sender::Http2(_) => true,
                }
        })?;
        match &kept[position].sender {
            Sender::Http2(s) => Some(Sender::Http2(s.clone())),
            Sender::Http1(_) => Some(kept.swap_remove(position).sender),
        }
    }

    /// Keeps `sender` for later requests of this client connection (an HTTP/1.1 one becomes
    /// usable again once its exchange is over).
    fn keep(&self, pool: u64, backend: usize, sender: Sender) {
        let mut kept = self.lock();
        let same = kept
            .iter()
            .filter(|k| k.pool == pool && k.backend == backend)
            .count();
        let room = match sender {
            // One multiplexed connection per backend is enough.
            Sender::Http2(_) => same == 0,
            Sender::Http1(_) => same < MAX_KEPT_PER_BACKEND,
        };
        if room {
            kept.push(Kept {
                pool,
                backend,
                sender,
            });
        }
    }

    /// Backend connections kept open (for tests and the curious).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a PROXY-protocol pool reaches its backends.
pub struct ProxiedTransport {
    id: u64,
    version: Version,
    dialer: Dialer,
}

/// Why a kept connection could not be used.
enum Reuse {
    /// It closed before taking the request: send it on a new connection.
    Again(Box<Request<RequestBody>>),
    Failed(UpstreamError),
}

impl ProxiedTransport {
    /// The transport of a pool sending `version` headers, over TLS when `tls` is set, speaking
    /// h2c (or h2 over TLS) when `http2`.
    pub fn new(
        version: Version,
        connect_timeout: Duration,
        tls: Option<&crate::config::UpstreamTls>,
        http2: bool,
    ) -> Result<Self, String> {
        let tls = match tls {
            Some(spec) => {
                let alpn: &[&[u8]] = if http2 { &[b"h2"] } else { &[b"http/1.1"] };
                Some(UpstreamTlsSide::new(spec, alpn)?)
            }
            None => None,
        };
        Ok(ProxiedTransport {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            version,
            dialer: Dialer::new(connect_timeout, tls, http2),
        })
    }

    /// True when the backends are reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.dialer.is_tls()
    }

    /// Sends `request` to `backend` on a connection private to the request's client connection
    /// (its [`ClientOrigin`] extension). A request without one gets a connection of its own that
    /// announces no client.
    pub async fn send(
        &self,
        backend: &Backend,
        mut request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        if !self.dialer.is_http2() {
            to_origin_form(request.uri_mut());
        }
        let origin = request.extensions_mut().remove::<ClientOrigin>();
        let Some(origin) = origin else {
            let mut sender = self.connect(backend, None).await?;
            return send_on(&mut sender, request).await;
        };
        if let Some(sender) = origin.connections.take(self.id, backend.index) {
            match reuse(sender, request).await {
                Ok((response, sender)) => {
                    origin.connections.keep(self.id, backend.index, sender);
                    return Ok(response);
                }
                Err(Reuse::Again(again)) => request = *again,
                Err(Reuse::Failed(error)) => return Err(error),
            }
        }
        let mut sender = self
            .connect(backend, Some((origin.client, origin.local)))
            .await?;
        let response = send_on(&mut sender, request).await?;
        origin.connections.keep(self.id, backend.index, sender);
        Ok(response)
    }

    /// Connects to `backend`, writes the PROXY header for `addresses`, then TLS and the HTTP
    /// handshake.
    async fn connect(
        &self,
        backend: &Backend,
        addresses: Option<(SocketAddr, SocketAddr)>,
    ) -> Result<Sender, UpstreamError> {
        self.dialer
            .dial(backend, Some(&encode(self.version, addresses)))
            .await
    }
}

/// Sends on a new connection.
async fn send_on(
    sender: &mut Sender,
    request: Request<RequestBody>,
) -> Result<Response<Incoming>, UpstreamError> {
    let result = match sender {
        Sender::Http1(s) => {
            s.ready().await.map_err(|e| UpstreamError::Connect {
                timed_out: false,
                cause: format!("connection not ready: {e}"),
            })?;
            s.send_request(request).await
        }
        Sender::Http2(s) => {
            s.ready().await.map_err(|e| UpstreamError::Connect {
                timed_out: false,
                cause: format!("h2 connection not ready: {e}"),
            })?;
            s.send_request(request).await
        }
    };
    result.map_err(failed)
}

/// Sends on a kept connection; gives the request back when the connection closed before
/// taking it.
async fn reuse(
    mut sender: Sender,
    request: Request<RequestBody>,
) -> Result<(Response<Incoming>, Sender), Reuse> {
    let result = match &mut sender {
        Sender::Http1(s) => s.try_send_request(request).await,
        Sender::Http2(s) => s.try_send_request(request).await,
    };
    match result {
        Ok(response) => Ok((response, sender)),
        Err(mut error) => match error.take_message() {
            Some(request) => Err(Reuse::Again(Box::new(request))),
            None => Err(Reuse::Failed(failed(error.into_error()))),
        },
    }
}
