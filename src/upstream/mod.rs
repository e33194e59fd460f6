//! Upstream pools: the backends behind a name, how one is chosen, and the pooled client that talks
//! to them.
//!
//! Selection sits behind the [`Balancer`] trait so the policies of the load-balancing work plug in
//! without touching the proxy pipeline. Each pool owns one keep-alive client; the client keeps a
//! separate idle-connection list per backend address.

mod balance;
mod h2;

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use balance::{Balancer, RoundRobin};

use crate::body::RequestBody;
use crate::config::{PoolConfig, Timeouts, UpstreamProtocol};

/// Parses a backend address `HOST:PORT` (a name, an IPv4 address or a bracketed IPv6 address).
pub fn parse_backend_address(text: &str) -> Result<Authority, String> {
    let complaint = || {
        format!(
            "{text:?} is not a backend address; write HOST:PORT, e.g. \"127.0.0.1:9000\" or \"app.internal:80\""
        )
    };
    if text.contains("://") || text.contains('/') || text.contains('@') {
        return Err(complaint());
    }
    let authority: Authority = text.parse().map_err(|_| complaint())?;
    match authority.port_u16() {
        Some(port) if port > 0 && !authority.host().is_empty() => Ok(authority),
        _ => Err(complaint()),
    }
}

/// One backend server.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Position in the pool's backend list.
    pub index: usize,
    /// `host:port` to connect to.
    pub authority: Authority,
}

/// Why a request to a backend failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made; the request never reached the backend.
    Connect {
        /// The connect timeout ran out (rather than a refusal or reset).
        timed_out: bool,
        /// The cause chain, for the log.
        cause: String,
    },
    /// The connection failed after the request was sent, or the response was invalid.
    Failed(String),
    /// The client's request body failed (unreadable, or over its cap when `too_large`); the
    /// backend is not at fault.
    ClientBody {
        /// The body grew over its cap.
        too_large: bool,
        /// The cause, for the log.
        cause: String,
    },
}

/// The HTTP client of a pool whose backends speak TLS.
pub type TlsUpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, RequestBody>;

/// How a pool reaches its backends.
enum Transport {
    /// HTTP/1.1 keep-alive pool (hyper-util); the URI authority picks the connection.
    Http1(Box<UpstreamClient>),
    /// The same over TLS.
    Https1(Box<TlsUpstreamClient>),
    /// One multiplexed h2c connection per backend; the URI authority is sent as `:authority`.
    H2c(h2::H2Connections),
}

/// The HTTP client a pool uses to reach its backends.
pub type UpstreamClient = Client<HttpConnector, RequestBody>;

/// A named group of backends and the means to reach them.
pub struct UpstreamPool {
    /// The pool's name from the config.
    pub name: Arc<str>,
    /// Backends in config order.
    pub backends: Vec<Backend>,
    /// Chooses a backend per request.
    pub balancer: Box<dyn Balancer>,
    transport: Transport,
    /// HTTP version spoken to the backends.
    pub protocol: UpstreamProtocol,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.name)
            .field("backends", &self.backends)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl UpstreamPool {
    /// Builds a pool from its (validated) config.
    pub fn new(name: &str, config: &PoolConfig, timeouts: &Timeouts) -> Result<Self, String> {
        let backends = config
            .backends
            .get_ref()
            .iter()
            .enumerate()
            .map(|(index, b)| {
                parse_backend_address(b.get_ref()).map(|authority| Backend { index, authority })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let connect_timeout = config
            .connect_timeout
            .unwrap_or(timeouts.upstream_connect)
            .0;
        let idle_timeout = config.idle_timeout.unwrap_or(timeouts.upstream_idle).0;
        let tls = config.tls.as_ref().and_then(|t| t.get_ref().0.clone());
        let transport = match (config.protocol, &tls) {
            (UpstreamProtocol::Http1, None) => Transport::Http1(Box::new(build_client(
                config,
                connect_timeout,
                idle_timeout,
            ))),
            (UpstreamProtocol::Http1, Some(spec)) => {
                // hyper-rustls decides ALPN itself (none for HTTP/1.1 only) and panics if the
                // config already lists protocols.
                let tls_config = crate::tls::upstream::client_config(spec, &[])?;
                let builder = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls_config)
                    .https_only();
                let builder = match &spec.server_name {
                    Some(name) => {
                        let name = rustls_pki_types::ServerName::try_from(name.clone())
                            .map_err(|e| format!("server_name {name:?}: {e}"))?;
                        builder.with_server_name_resolver(
                            hyper_rustls::FixedServerNameResolver::new(name),
                        )
                    }
                    None => builder,
                };
                let connector = builder
                    .enable_http1()
                    .wrap_connector(http_connector(connect_timeout));
                Transport::Https1(Box::new(
                    client_builder(config, idle_timeout).build(connector),
                ))
            }
            (UpstreamProtocol::H2c, tls) => {
                let tls = match tls {
                    Some(spec) => Some(h2::TlsTarget::new(spec)?),
                    None => None,
                };
                Transport::H2c(h2::H2Connections::new(backends.len(), connect_timeout, tls))
            }
        };
        Ok(UpstreamPool {
            name: Arc::from(name),
            balancer: Box::new(RoundRobin::new()),
            transport,
            protocol: config.protocol,
            backends,
        })
    }

    /// Sends `request` to `backend`.
    ///
    /// For HTTP/1.1 the URI authority must be the backend's address (it picks the pooled
    /// connection) and `Host` is sent as a header; for h2c the URI authority is what the backend
    /// sees as `:authority` and the connection is chosen by `backend`.
    pub async fn send(
        &self,
        backend: &Backend,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match &self.transport {
            Transport::Http1(client) => client.request(request).await.map_err(classify),
            Transport::Https1(client) => client.request(request).await.map_err(classify),
            Transport::H2c(connections) => connections.send(backend, request).await,
        }
    }

    /// The URI scheme of requests to this pool's backends.
    pub fn scheme(&self) -> http::uri::Scheme {
        match &self.transport {
            Transport::Https1(_) => http::uri::Scheme::HTTPS,
            Transport::H2c(connections) if connections.is_tls() => http::uri::Scheme::HTTPS,
            _ => http::uri::Scheme::HTTP,
        }
    }

    /// The backend for the next request, or `None` when the pool has none to offer.
    pub fn pick(&self) -> Option<&Backend> {
        self.balancer
            .pick(&self.backends)
            .and_then(|i| self.backends.get(i))
    }
}

fn classify(error: hyper_util::client::legacy::Error) -> UpstreamError {
    let cause = error_chain(&error);
    if let Some(too_large) = crate::body::client_body_fault(&error) {
        return UpstreamError::ClientBody { too_large, cause };
    }
    if error.is_connect() {
        UpstreamError::Connect {
            timed_out: is_timeout(&error),
            cause,
        }
    } else {
        UpstreamError::Failed(cause)
    }
}

/// True if any cause in the chain is an I/O timeout.
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// An error and its sources on one line, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn http_connector(connect_timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    // The TLS connector wraps this one and needs `https` URIs to pass through it.
    connector.enforce_http(false);
    connector
}

fn client_builder(
    config: &PoolConfig,
    idle_timeout: Duration,
) -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .pool_max_idle_per_host(config.max_idle_per_backend)
        // The client must not invent a Host header; the pipeline decides what Host the backend sees.
        .set_host(false);
    builder
}

fn build_client(
    config: &PoolConfig,
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> UpstreamClient {
    client_builder(config, idle_timeout).build(http_connector(connect_timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses_need_a_host_and_a_port() {
        assert_eq!(
            parse_backend_address("127.0.0.1:9000").unwrap().port_u16(),
            Some(9000)
        );
        assert_eq!(parse_backend_address("[::1]:80").unwrap().host(), "[::1]");
        assert!(parse_backend_address("app.internal:8080").is_ok());
        for bad in [
            "127.0.0.1",
            "http://a:1",
            "a:1/x",
            "a:http",
            "a:0",
            ":80",
            "a:99999",
            "u@a:1",
            "",
        ] {
            assert!(
                parse_backend_address(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
