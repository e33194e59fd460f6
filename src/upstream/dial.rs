//! Opening one backend connection: TCP connect within the pool's connect timeout, an optional
//! PROXY protocol header, optional TLS (`connect`), then for hyper's client the HTTP/1.1 or
//! HTTP/2 handshake, with the connection driven by a task of its own (`dial`). Gatehouse's own
//! HTTP/1.1 exchanges (`h1.rs`) take the stream as `connect` leaves it.
//!
//! Every transport (the shared keep-alive pool, h2c, PROXY-protocol connections) dials through
//! here, so connect errors read the same whichever way a pool reaches its backends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{Backend, UpstreamError};
use crate::body::RequestBody;

/// TCP keep-alive probes on backend connections, so a peer that vanished without a FIN (a
/// rebooted host, a dropped NAT entry) is noticed on an idle pooled connection.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The TLS client side of a pool whose backends speak TLS.
pub(super) struct UpstreamTlsSide {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<rustls_pki_types::ServerName<'static>>,
}

impl UpstreamTlsSide {
    /// Builds it from a pool's `tls` settings, offering `alpn` (none: no ALPN extension).
    pub(super) fn new(spec: &crate::config::UpstreamTls, alpn: &[&[u8]]) -> Result<Self, String> {
        let config = crate::tls::upstream::client_config(spec, alpn)?;
        let server_name = match &spec.server_name {
            Some(name) => Some(
                rustls_pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| format!("server_name {name:?}: {e}"))?,
            ),
            None => None,
        };
        Ok(UpstreamTlsSide {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// A handshaken backend connection, ready to send on.
pub(super) enum Sender {
    /// One request at a time.
    Http1(http1::SendRequest<RequestBody>),
    /// Multiplexed; clones share the connection.
    Http2(http2::SendRequest<RequestBody>),
}

impl Sender {
    /// True once the connection has closed.
    pub(super) fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }
}

/// An open connection to a backend, before any HTTP is spoken on it.
pub(super) enum BackendStream {
    /// Cleartext TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: rustls' connection state is large and rarely used).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Tcp(s) => s.is_write_vectored(),
            BackendStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How a pool opens connections to its backends.
pub(super) struct Dialer {
    connect_timeout: Duration,
    tls: Option<UpstreamTlsSide>,
    http2: bool,
}

impl Dialer {
    /// Connections within `connect_timeout`, over TLS when `tls` is set, speaking HTTP/2 when
    /// `http2` (HTTP/1.1 otherwise).
    pub(super) fn new(
        connect_timeout: Duration,
        tls: Option<UpstreamTlsSide>,
        http2: bool,
    ) -> Self {
        Dialer {
            connect_timeout,
            tls,
            http2,
        }
    }

    /// True when the connections are TLS.
    pub(super) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// True when the connections speak HTTP/2.
    pub(super) fn is_http2(&self) -> bool {
        self.http2
    }

    /// Connects to `backend`, writes `preface` first when given (a PROXY protocol header), then
    /// TLS and the HTTP handshake. Every failure is a [`UpstreamError::Connect`]: the request
    /// has not been sent.
    pub(super) async fn dial(
        &self,
        backend: &Backend,
        preface: Option<&[u8]>,
    ) -> Result<Sender, UpstreamError> {
        let stream = self.connect(backend, preface).await?;
        self.handshake(stream)
            .await
            .map_err(|e| UpstreamError::Connect {
                timed_out: false,
                cause: format!("{}: HTTP handshake: {e}", backend.authority),
            })
    }

    /// Connects to `backend`: TCP within the connect timeout, `preface` (a PROXY protocol
    /// header) when given, then TLS when the pool's backends speak it. Every failure is a
    /// [`UpstreamError::Connect`].
    pub(super) async fn connect(
        &self,
        backend: &Backend,
        preface: Option<&[u8]>,
    ) -> Result<BackendStream, UpstreamError> {
        let address = backend.authority.as_str();
        let connect_failed = |timed_out: bool, cause: String| UpstreamError::Connect {
            timed_out,
            cause: format!("{address}: {cause}"),
        };
        let mut stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await {
                Err(_) => return Err(connect_failed(true, "connect timed out".to_owned())),
                Ok(Err(e)) => {
                    return Err(connect_failed(
                        e.kind() == std::io::ErrorKind::TimedOut,
                        format!("connect: {e}"),
                    ));
                }
                Ok(Ok(stream)) => stream,
            };
        // Requests are written whole; waiting to coalesce small writes only adds latency.
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        if let Some(preface) = preface {
            stream
                .write_all(preface)
                .await
                .map_err(|e| connect_failed(false, format!("writing the PROXY header: {e}")))?;
        }
        let Some(tls) = &self.tls else {
            return Ok(BackendStream::Tcp(stream));
        };
        let name = match &tls.server_name {
            Some(name) => name.clone(),
            None => rustls_pki_types::ServerName::try_from(
                backend.authority.host().trim_matches(['[', ']']).to_owned(),
            )
            .map_err(|e| connect_failed(false, format!("host is not a TLS server name: {e}")))?,
        };
        let stream = tls
            .connector
            .connect(name, stream)
            .await
            .map_err(|e| connect_failed(false, format!("TLS handshake: {e}")))?;
        Ok(BackendStream::Tls(Box::new(stream)))
    }

    async fn handshake<IO>(&self, io: IO) -> Result<Sender, hyper::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if self.http2 {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30));
            let (sender, connection) = builder.handshake(io).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream h2 connection ended with an error");
                }
            });
            Ok(Sender::Http2(sender))
        } else {
            let (sender, connection) = http1::Builder::new().handshake(io).await?;
            tokio::spawn(async move {
                // Upgrades (WebSocket) go on over the same socket once the exchange is done.
                if let Err(error) = connection.with_upgrades().await {
                    tracing::debug!(%error, "upstream connection ended with an error");
                }
            });
            Ok(Sender::Http1(sender))
        }
    }
}

/// The error of a request that failed after it was handed to a connection.
pub(super) fn failed(error: hyper::Error) -> UpstreamError {
    match crate::body::client_body_fault(&error) {
        Some(fault) => UpstreamError::ClientBody {
            fault,
            cause: super::error_chain(&error),
        },
        None => UpstreamError::Failed(super::error_chain(&error)),
    }
}

/// Puts an absolute-form request target into origin form (`/path?query`): HTTP/1.1 backends
/// behind a reverse proxy expect origin form (RFC 9112 §3.2.1), and hyper writes the URI as given.
pub(super) fn to_origin_form(uri: &mut http::Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *uri = http::Uri::from(path);
}
