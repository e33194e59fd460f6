//! Listeners and client connections: binding, accepting, serving HTTP/1.1 and h2c on one port,
//! the client header/idle timeouts, and graceful shutdown.
//!
//! Shutdown has two phases. *Draining*: listeners close (new connections are refused), every
//! connection is asked to finish its current requests and close (HTTP/1.1 stops keep-alive,
//! HTTP/2 sends GOAWAY). *Closing*, once the grace period is over: whatever is left is dropped.
//! A [`DrainToken`] is held by every connection and tunnel, so "all tokens dropped" means
//! "nothing left in flight".

pub mod activity;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::observe::access_log::AccessLog;
use crate::proxy::{ConnInfo, ProxyState, pipeline};
use crate::runtime::{Generation, ListenerSpec};
use crate::tls::{CertificateWatcher, TlsTerminator};
use activity::{ConnActivity, Expired, TrackedIo};

/// Held by anything graceful shutdown must wait for; see the module comment.
#[derive(Debug, Clone)]
pub struct DrainToken(#[allow(dead_code)] mpsc::Sender<()>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining,
    Closing,
}

/// A started proxy: its bound addresses and the means to stop it.
#[derive(Debug)]
pub struct RunningServer {
    addresses: Vec<(Arc<str>, SocketAddr)>,
    state: Arc<ProxyState>,
    phase: watch::Sender<Phase>,
    drained: mpsc::Receiver<()>,
    own_token: Option<DrainToken>,
    accept_tasks: Vec<JoinHandle<()>>,
    grace: Duration,
    terminators: Vec<Arc<TlsTerminator>>,
    _certificate_watcher: Option<CertificateWatcher>,
}

impl RunningServer {
    /// The address the first listener is bound to (with the real port if it asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addresses[0].1
    }

    /// Every listener's name and bound address, in config order.
    pub fn local_addrs(&self) -> &[(Arc<str>, SocketAddr)] {
        &self.addresses
    }

    /// The shared proxy state (current generation, access log).
    pub fn state(&self) -> &Arc<ProxyState> {
        &self.state
    }

    /// Replaces the routes and pools with those of `config`. Backends that stay in the same
    /// pool keep their state (health, ejection, latency); requests in flight finish on the
    /// generation they started with. Listener changes need a restart for now: they are
    /// reported and otherwise ignored.
    pub async fn reload(&self, config: &Config) -> anyhow::Result<()> {
        let generation = Generation::compile_with(config, &self.state.registry)?;
        let current = self.state.generation();
        if !same_listeners(&current.listeners, &generation.listeners) {
            tracing::warn!(
                "listener changes take effect at the next restart; routes and pools are reloaded"
            );
        }
        generation.start_health_checks().await;
        self.state.swap(generation);
        Ok(())
    }

    /// Re-reads every TLS listener's certificate files (as on SIGHUP); a listener whose new
    /// files are bad keeps its current certificates.
    pub fn reload_certificates(&self) {
        crate::tls::reload_all(&self.terminators);
    }

    /// TLS handshakes that failed or timed out, over all listeners.
    pub fn tls_handshake_failures(&self) -> u64 {
        self.terminators
            .iter()
            .map(|t| t.handshake_failures())
            .sum()
    }

    /// Stops accepting, lets in-flight requests finish for up to the grace period, then closes
    /// what is left. Returns true if everything finished within the grace period.
    pub async fn shutdown(mut self) -> bool {
        let _ = self.phase.send(Phase::Draining);
        for task in self.accept_tasks.drain(..) {
            let _ = task.await;
        }
        self.own_token = None;
        let drained = tokio::time::timeout(self.grace, self.drained.recv())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(grace = ?self.grace, "grace period over; closing remaining connections");
            let _ = self.phase.send(Phase::Closing);
            let _ = tokio::time::timeout(Duration::from_secs(2), self.drained.recv()).await;
        }
        drained
    }
}

/// Compiles `config`, opens the access log, runs the first health checks, binds every listener
/// and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    let registry = crate::upstream::BackendRegistry::new();
    let generation = Generation::compile_with(config, &registry)?;
    let access_log = AccessLog::open(&config.access_log).context("opening the access log")?;
    start_generation(generation, access_log, registry).await
}

/// Binds the listeners of `generation` and starts serving it; `registry` holds the backend
/// state the generation was compiled with.
pub async fn start_generation(
    generation: Generation,
    access_log: AccessLog,
    registry: crate::upstream::BackendRegistry,
) -> anyhow::Result<RunningServer> {
    // No traffic before each checked backend has had its first check.
    generation.start_health_checks().await;
    let listeners = generation.listeners.clone();
    let grace = generation.server.grace_period.0;
    let header_timeout = generation.timeouts.client_header.0;
    let idle_timeout = generation.timeouts.client_idle.0;
    let settings = generation.server.clone();
    let state = Arc::new(ProxyState::new(generation, access_log, registry));
    let (phase, _) = watch::channel(Phase::Running);
    let (token_sender, drained) = mpsc::channel(1);
    let own_token = DrainToken(token_sender);

    let mut addresses = Vec::new();
    let mut accept_tasks = Vec::new();
    let mut terminators = Vec::new();
    for spec in &listeners {
        let tls = match &spec.tls {
            Some(tls) => {
                let terminator = TlsTerminator::new(tls, spec.http1, spec.http2)
                    .map_err(|e| anyhow::anyhow!("listener {}: {e}", spec.name))?;
                let terminator = Arc::new(terminator);
                terminators.push(terminator.clone());
                Some(terminator)
            }
            None => None,
        };
        let listener = bind(spec.address)
            .with_context(|| format!("binding listener {} on {}", spec.name, spec.address))?;
        let bound = listener.local_addr()?;
        addresses.push((spec.name.clone(), bound));
        let builder = Arc::new(http_builder(spec, &settings));
        let serving = Serving {
            state: state.clone(),
            builder,
            phase: phase.subscribe(),
            drain: own_token.clone(),
            header_timeout,
            idle_timeout,
            tls,
            redirect_https: spec.redirect_https,
        };
        let scheme = if serving.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(listener = %spec.name, address = %bound, scheme, "listening");
        accept_tasks.push(tokio::spawn(accept_loop(listener, serving)));
    }
    Ok(RunningServer {
        addresses,
        state,
        phase,
        drained,
        own_token: Some(own_token),
        accept_tasks,
        grace,
        _certificate_watcher: CertificateWatcher::start(terminators.clone())
            .map_err(|e| anyhow::anyhow!(e))?,
        terminators,
    })
}

fn same_listeners(a: &[ListenerSpec], b: &[ListenerSpec]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.address == y.address
                && x.http1 == y.http1
                && x.http2 == y.http2
                && x.redirect_https == y.redirect_https
                && x.tls.is_some() == y.tls.is_some()
        })
}

/// Binds with a large backlog and `SO_REUSEADDR`, so a restart does not wait for TIME_WAIT.
fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

fn http_builder(
    spec: &ListenerSpec,
    settings: &crate::config::ServerSettings,
) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let header_bytes = usize::try_from(settings.max_header_bytes.0)
        .unwrap_or(usize::MAX)
        .max(8192);
    builder
        .http1()
        .timer(TokioTimer::new())
        // Header and idle timeouts are enforced by `activity`, which tells the two apart.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_headers(settings.max_headers)
        .max_buf_size(header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX));
    match (spec.http1, spec.http2) {
        (true, false) => builder.http1_only(),
        (false, true) => builder.http2_only(),
        _ => builder,
    }
}

/// What every connection of one listener shares.
#[derive(Clone)]
struct Serving {
    state: Arc<ProxyState>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    phase: watch::Receiver<Phase>,
    drain: DrainToken,
    header_timeout: Duration,
    idle_timeout: Duration,
    tls: Option<Arc<TlsTerminator>>,
    redirect_https: Option<u16>,
}

async fn accept_loop(listener: TcpListener, serving: Serving) {
    let mut phase = serving.phase.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(stream, peer, serving.clone()));
                }
                Err(error) => {
                    // Usually EMFILE/ENFILE: back off briefly instead of spinning on the error.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = phase.changed() => break,
        }
    }
}

/// What the TLS handshake (if any) established for a connection.
struct Secured {
    proto: &'static str,
    subject_header: Option<http::HeaderName>,
    client_subject: Option<http::HeaderValue>,
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, serving: Serving) {
    let Some(tls) = serving.tls.clone() else {
        let plain = Secured {
            proto: "http",
            subject_header: None,
            client_subject: None,
        };
        return serve_http(stream, peer, serving, plain).await;
    };
    match tls.accept(stream).await {
        Ok((stream, handshake)) => {
            let secured = Secured {
                proto: "https",
                subject_header: tls.subject_header.clone(),
                client_subject: handshake.client_subject,
            };
            serve_http(stream, peer, serving, secured).await;
        }
        // Scanners and clients with no common protocol do this all day: not worth more than debug.
        Err(error) => tracing::debug!(client = %peer, %error, "TLS handshake failed"),
    }
}

async fn serve_http<IO>(stream: IO, peer: SocketAddr, serving: Serving, secured: Secured)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Serving {
        state,
        builder,
        mut phase,
        drain,
        header_timeout,
        idle_timeout,
        tls: _,
        redirect_https,
    } = serving;
    let activity = Arc::new(ConnActivity::new());
    let info = Arc::new(ConnInfo {
        peer,
        // An IP address is always a valid header value.
        peer_ip: http::HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown")),
        proto: secured.proto,
        activity: activity.clone(),
        drain,
        subject_header: secured.subject_header,
        client_subject: secured.client_subject,
        redirect_https,
    });
    let service = service_fn(move |request| {
        let state = state.clone();
        let info = info.clone();
        async move {
            let in_flight = info.activity.start_request();
            Ok::<_, Infallible>(pipeline::handle(&state, &info, in_flight, request).await)
        }
    });
    let io = TokioIo::new(TrackedIo::new(stream, activity.clone()));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    // Once asked to close, a connection with nothing in flight gets `header_timeout` to do so: an
    // HTTP/2 client that never acknowledges the GOAWAY's PING would otherwise keep it forever.
    let mut close_by: Option<Instant> = None;
    loop {
        let closing = close_by.is_some();
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    log_connection_error(peer, &*error);
                }
                break;
            }
            expired = activity.expired(header_timeout, idle_timeout), if !closing => match expired {
                Expired::Header => {
                    tracing::debug!(client = %peer, "client header timeout; closing connection");
                    break;
                }
                Expired::Idle => {
                    tracing::trace!(client = %peer, "client idle timeout");
                    conn.as_mut().graceful_shutdown();
                    close_by = Some(Instant::now() + header_timeout);
                }
            },
            _ = tokio::time::sleep_until(close_by.unwrap_or_else(Instant::now)), if closing => {
                if activity.in_flight() == 0 {
                    tracing::debug!(client = %peer, "connection did not close when asked; closing it");
                    break;
                }
                close_by = Some(Instant::now() + header_timeout);
            }
            changed = phase.changed() => {
                let now = *phase.borrow();
                match (changed, now) {
                    (Err(_), _) | (_, Phase::Closing) => break,
                    (_, Phase::Draining) if !closing => {
                        conn.as_mut().graceful_shutdown();
                        close_by = Some(Instant::now() + header_timeout);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Malformed requests are answered by hyper itself (400 or 431); this is where they are logged.
fn log_connection_error(peer: SocketAddr, error: &(dyn std::error::Error + 'static)) {
    if let Some(error) = error.downcast_ref::<hyper::Error>() {
        if error.is_parse_too_large() {
            tracing::info!(client = %peer, %error, status = 431, "refused request: head too large");
            return;
        }
        if error.is_parse() || error.is_parse_status() {
            tracing::info!(client = %peer, %error, status = 400, "refused malformed request");
            return;
        }
    }
    tracing::debug!(client = %peer, %error, "client connection ended with an error");
}
