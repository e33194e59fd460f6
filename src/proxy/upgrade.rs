//! HTTP/1.1 upgrades (WebSocket and friends): once the backend answers `101 Switching
//! Protocols`, both connections become a byte tunnel, copied in both directions until either
//! side closes.

use http::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::error::ProxyError;
use crate::body::{ResponseBody, UpstreamBody};
use crate::server::DrainToken;
use crate::upstream::BackendLease;

/// Turns the backend's 101 response into the client's, and splices the two upgraded
/// connections together in a task of their own.
///
/// The task holds `drain`, so graceful shutdown waits for open tunnels up to its grace period,
/// and `lease`, so the tunnel counts as a request in flight to its backend while it is open.
pub fn splice(
    mut response: Response<UpstreamBody>,
    client_upgrade: OnUpgrade,
    drain: DrainToken,
    lease: Option<BackendLease>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let _drain = drain;
        let _lease = lease;
        let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((to_upstream, to_client)) => {
                tracing::debug!(to_upstream, to_client, "upgraded connection closed");
            }
            Err(error) => tracing::debug!(%error, "upgraded connection ended with an error"),
        }
    });
    Ok(response.map(|_| ResponseBody::empty()))
}
