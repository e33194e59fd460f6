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
use hyper::client::conn::http2::SendRequest;
use tokio::sync::Mutex;

use super::dial::{Dialer, Sender, UpstreamTlsSide, failed};
use super::{Backend, UpstreamError};
use crate::body::RequestBody;

/// The HTTP/2 connections of one pool, one slot per backend.
pub struct H2Connections {
    slots: Vec<Mutex<Option<SendRequest<RequestBody>>>>,
    dialer: Dialer,
}

impl H2Connections {
    /// Slots for `backends` backends; nothing is connected until first use. Over TLS when
    /// `tls` is set (which must offer ALPN `h2`).
    pub(super) fn new(
        backends: usize,
        connect_timeout: Duration,
        tls: Option<UpstreamTlsSide>,
    ) -> Self {
        H2Connections {
            slots: (0..backends).map(|_| Mutex::new(None)).collect(),
            dialer: Dialer::new(connect_timeout, tls, true),
        }
    }

    /// True when the backends are reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.dialer.is_tls()
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
        sender.send_request(request).await.map_err(failed)
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
        let sender = match self.dialer.dial(backend, None).await? {
            Sender::Http2(sender) => sender,
            Sender::Http1(_) => {
                return Err(UpstreamError::Connect {
                    timed_out: false,
                    cause: "an h2c pool dialled an HTTP/1.1 connection".to_owned(),
                });
            }
        };
        *slot = Some(sender.clone());
        Ok(sender)
    }
}
