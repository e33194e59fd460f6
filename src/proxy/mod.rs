//! The reverse-proxy request path: shared state, per-connection facts, and the pipeline that
//! turns a client request into a backend request and back.

pub mod error;
pub mod field_memo;
pub mod headers;
pub mod pipeline;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::observe::access_log::AccessLog;
use crate::observe::metrics::{Metrics, RouteMetrics};
use crate::runtime::Generation;
use crate::server::DrainToken;
use crate::server::activity::ConnActivity;
use crate::upstream::BackendRegistry;

/// State shared by every connection: the current generation and the access log.
#[derive(Debug)]
pub struct ProxyState {
    generation: ArcSwap<Generation>,
    access_log: ArcSwap<AccessLog>,
    /// Backend state shared by every generation.
    pub registry: BackendRegistry,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// Metrics of requests that matched no route.
    pub unrouted: Arc<RouteMetrics>,
}

impl ProxyState {
    /// State serving `generation`.
    pub fn new(generation: Generation, access_log: AccessLog, registry: BackendRegistry) -> Self {
        let metrics = Arc::new(Metrics::new());
        ProxyState {
            generation: ArcSwap::from_pointee(generation),
            access_log: ArcSwap::from_pointee(access_log),
            registry,
            unrouted: Arc::new(metrics.route("-")),
            metrics,
        }
    }

    /// The generation new requests run against.
    pub fn generation(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// Where access log lines go.
    pub fn access_log(&self) -> Arc<AccessLog> {
        self.access_log.load_full()
    }

    /// Replaces the access log (a reload changed its settings); lines of requests in flight go
    /// to the old one, whose writer ends once they are written.
    pub fn set_access_log(&self, log: AccessLog) {
        self.access_log.store(Arc::new(log));
    }

    /// Makes `generation` the one new requests run against; requests in flight keep theirs.
    pub fn swap(&self, generation: Generation) {
        self.generation.store(Arc::new(generation));
    }
}

/// Facts about one client connection that requests on it need.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address: the TCP peer's, or on a `proxy_protocol` listener the one a
    /// trusted peer's PROXY header announced.
    pub peer: SocketAddr,
    /// The address the client connected to: the listener's, or the one a trusted PROXY header
    /// announced.
    pub local: SocketAddr,
    /// Backend connections that start with a PROXY header naming this client: private to this
    /// connection (see [`crate::upstream::proxied`]).
    pub private_upstreams: crate::upstream::proxied::LazyPrivateConnections,
    /// The client's IP as a header value (for `X-Forwarded-For`), formatted once.
    pub peer_ip: http::HeaderValue,
    /// `"http"` (and `"https"` once TLS lands).
    pub proto: &'static str,
    /// In-flight tracking for the connection's timeouts.
    pub activity: Arc<ConnActivity>,
    /// Held by work that graceful shutdown must wait for.
    pub drain: DrainToken,
    /// With mutual TLS: the header that carries the client certificate subject.
    pub subject_header: Option<http::HeaderName>,
    /// The verified client certificate's subject, if the client presented one.
    pub client_subject: Option<http::HeaderValue>,
    /// On a redirecting listener: the HTTPS port every request is redirected to.
    pub redirect_https: Option<u16>,
}

impl ConnInfo {
    /// What a pool that sends PROXY headers needs to know about this connection's client.
    pub fn upstream_origin(&self) -> crate::upstream::proxied::ClientOrigin {
        crate::upstream::proxied::ClientOrigin {
            client: self.peer,
            local: self.local,
            connections: self.private_upstreams.get(),
        }
    }
}
