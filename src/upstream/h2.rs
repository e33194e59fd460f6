//! Cleartext HTTP/2 (h2c) to backends: one multiplexed connection per backend, opened on first
//! use and replaced when it closes.
//!
//! Written over hyper's low-level `client::conn::http2` rather than hyper-util's pooled client,
//! because the pooled client derives `:authority` from the address it connects to. A proxy that
//! preserves the client's host must send that host as `:authority`, and RFC 9113 §8.3.1 lets a
//! server reject a `Host` that differs from `:authority`, so sending both is not an option.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::{Backend, UpstreamError};
use crate::body::RequestBody;

/// TLS settings for HTTP/2 over TLS to backends (ALPN `h2`).
pub struct TlsTarget {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<rustls_pki_types::ServerName<'static>>,
}

impl TlsTarget {
    /// Builds the TLS client side from a pool's `tls` settings.
    pub fn new(spec: &crate::config::UpstreamTls) -> Result<Self, String> {
        let config = crate::tls::upstream::client_config(spec, &[b"h2"])?;
        let server_name = match &spec.server_name {
            Some(name) => Some(
                rustls_pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| format!("server_name {name:?}: {e}"))?,
            ),
            None => None,
        };
        Ok(TlsTarget {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            server_name,
        })
    }
}

/// The HTTP/2 connections of one pool, one slot per backend.
pub struct H2Connections {
    slots: Vec<Mutex<Option<SendRequest<RequestBody>>>>,
    connect_timeout: Duration,
    tls: Option<TlsTarget>,
}

impl H2Connections {
    /// Slots for `backends` backends; nothing is connected until first use.
    pub fn new(backends: usize, connect_timeout: Duration, tls: Option<TlsTarget>) -> Self {
        H2Connections {
            slots: (0..backends).map(|_| Mutex::new(None)).collect(),
            connect_timeout,
            tls,
        }
    }

    /// True when the backends are reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Sends `request` (whose URI carries the `:authority` to send) to `backend`.
    pub async fn send(
        &self,
        backend: &Backend,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.sender(backend).await?;
        if sender.ready().await.is_err() {
            // The connection went away between requests: open a new one, once.
            self.forget(backend).await;
            sender = self.sender(backend).await?;
            sender.ready().await.map_err(|e| UpstreamError::Connect {
                timed_out: false,
                cause: format!("h2 connection not ready: {e}"),
            })?;
        }
        sender
            .send_request(request)
            .await
            .map_err(|e| match crate::body::client_body_fault(&e) {
                Some(fault) => UpstreamError::ClientBody {
                    fault,
                    cause: super::error_chain(&e),
                },
                None => UpstreamError::Failed(super::error_chain(&e)),
            })
    }

    async fn forget(&self, backend: &Backend) {
        if let Some(slot) = self.slots.get(backend.index) {
            *slot.lock().await = None;
        }
    }

    /// The live connection to `backend`, connecting if there is none. Concurrent callers wait for
    /// one connect instead of each opening their own.
    async fn sender(&self, backend: &Backend) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let slot = self
            .slots
            .get(backend.index)
            .ok_or_else(|| UpstreamError::Connect {
                timed_out: false,
                cause: "backend is not part of this pool".to_owned(),
            })?;
        let mut slot = slot.lock().await;
        if let Some(sender) = slot.as_ref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        let address = backend.authority.as_str();
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await {
                Err(_) => {
                    return Err(UpstreamError::Connect {
                        timed_out: true,
                        cause: format!("connect to {address} timed out"),
                    });
                }
                Ok(Err(e)) => {
                    return Err(UpstreamError::Connect {
                        timed_out: e.kind() == std::io::ErrorKind::TimedOut,
                        cause: format!("connect to {address}: {e}"),
                    });
                }
                Ok(Ok(stream)) => stream,
            };
        let _ = stream.set_nodelay(true);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30));
        let handshake_failed = |e: hyper::Error| UpstreamError::Connect {
            timed_out: false,
            cause: format!("h2 handshake with {address}: {e}"),
        };
        let sender = match &self.tls {
            None => start(&builder, stream).await.map_err(handshake_failed)?,
            Some(tls) => {
                let name = match &tls.server_name {
                    Some(name) => name.clone(),
                    None => rustls_pki_types::ServerName::try_from(
                        backend.authority.host().trim_matches(['[', ']']).to_owned(),
                    )
                    .map_err(|e| UpstreamError::Connect {
                        timed_out: false,
                        cause: format!("backend host is not a TLS server name: {e}"),
                    })?,
                };
                let stream = tls.connector.connect(name, stream).await.map_err(|e| {
                    UpstreamError::Connect {
                        timed_out: false,
                        cause: format!("TLS handshake with {address}: {e}"),
                    }
                })?;
                start(&builder, stream).await.map_err(handshake_failed)?
            }
        };
        *slot = Some(sender.clone());
        Ok(sender)
    }
}

/// Runs the HTTP/2 handshake over `io` and drives the connection in a task of its own.
async fn start<IO>(
    builder: &http2::Builder<TokioExecutor>,
    io: IO,
) -> Result<SendRequest<RequestBody>, hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = builder.handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream h2 connection ended with an error");
        }
    });
    Ok(sender)
}
