//! Listeners and client connections: binding, accepting, serving HTTP/1.1 and h2c on one port,
//! the client header/idle timeouts, and graceful shutdown.
//!
//! Shutdown has two phases. *Draining*: listeners close (new connections are refused), every
//! connection is asked to finish its current requests and close (HTTP/1.1 stops keep-alive,
//! HTTP/2 sends GOAWAY). *Closing*, once the grace period is over: whatever is left is dropped.
//! A [`DrainToken`] is held by every connection and tunnel, so "all tokens dropped" means
//! "nothing left in flight".

pub mod activity;
mod auto;
pub mod config_watch;
mod h1;
#[cfg(any(test, feature = "fuzzing"))]
pub use h1::fuzz_request_heads;
mod write_coalesce;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Poll, Wake, Waker};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use futures_util::task::AtomicWaker;

use crate::body::ResponseBody;
use crate::config::{Config, ListenerConfig};
use crate::observe::access_log::AccessLog;
use crate::protect::conn_limit::{
    ConnGuard, ConnLimitSettings, ConnLimiter, Refusal, RequestGuard,
};
use crate::proxy::{ConnInfo, ProxyState, pipeline};
use crate::runtime::{Generation, ListenerSpec};
use crate::tls::{CertificateWatcher, TlsTerminator};
use activity::{
    ClientClock, ClientTimeouts, ConnActivity, Expired, InFlight, StreamSend, TrackedIo,
};

/// Held by anything graceful shutdown must wait for; see the module comment.
#[derive(Debug, Clone)]
pub struct DrainToken(#[allow(dead_code)] mpsc::Sender<()>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining,
    Closing,
}

/// A started proxy: its listeners, the admin listener, and the means to reload and stop it.
#[derive(Debug)]
pub struct RunningServer {
    control: Arc<Control>,
    phase: watch::Sender<Phase>,
    drained: mpsc::Receiver<()>,
    own_token: Option<DrainToken>,
    admin: Option<crate::observe::admin::AdminServer>,
    upkeep: JoinHandle<()>,
}

/// What reloads and the admin API act on: the proxy state and the open listeners.
#[derive(Debug)]
pub struct Control {
    /// The shared proxy state.
    pub state: Arc<ProxyState>,
    listeners: tokio::sync::Mutex<Listeners>,
    /// The file the config was loaded from, for reloads; `None` when started from text.
    pub config_path: Option<std::path::PathBuf>,
    /// The config text in force.
    source: std::sync::Mutex<Option<String>>,
    /// Settings of the config in force that only a restart changes.
    restart_only: std::sync::Mutex<RestartOnly>,
    grace: std::sync::Mutex<Duration>,
    phase: watch::Receiver<Phase>,
    /// When the server started.
    pub started: std::time::Instant,
    last_reload: std::sync::Mutex<Option<ReloadReport>>,
    /// Handshake failures of TLS terminators a reload replaced, so the total never goes back.
    retired_tls_failures: std::sync::atomic::AtomicU64,
    /// One reload at a time, from reading the file to the swap, so two cannot cross.
    reloading: tokio::sync::Mutex<()>,
    /// The listeners' names and bound addresses, updated when a reload changes them.
    addresses: std::sync::Mutex<Vec<(Arc<str>, SocketAddr)>>,
}

/// Settings a reload cannot change.
#[derive(Debug, Clone, PartialEq)]
struct RestartOnly {
    workers: usize,
    log: String,
    admin: Option<crate::config::AdminSettings>,
}

impl RestartOnly {
    fn of(config: &Config) -> Self {
        RestartOnly {
            workers: config.server.workers,
            log: format!("{:?}", config.log),
            admin: config.admin.as_ref().map(|a| a.get_ref().clone()),
        }
    }
}

/// The outcome of the last reload, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// Whether the new config is in force.
    pub ok: bool,
    /// Why not, when it is not.
    pub error: Option<String>,
    /// Unix time of the attempt.
    pub at_unix: u64,
}

#[derive(Debug, Default)]
struct Listeners {
    active: Vec<ActiveListener>,
    /// Handed to each new accept loop; taken away at shutdown.
    drain: Option<DrainToken>,
    watcher: Option<CertificateWatcher>,
}

#[derive(Debug)]
struct ActiveListener {
    spec: ListenerSpec,
    bound: SocketAddr,
    serving: Arc<ArcSwap<Serving>>,
    task: JoinHandle<()>,
    /// Set when a reload removes the listener: its connections finish and close.
    retired: watch::Sender<bool>,
}

impl Listeners {
    fn terminators(&self) -> Vec<Arc<TlsTerminator>> {
        self.active
            .iter()
            .filter_map(|l| l.serving.load().tls.clone())
            .collect()
    }
}

impl RunningServer {
    /// The address the first listener is bound to (with the real port if it asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs()
            .first()
            .map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)), |(_, addr)| *addr)
    }

    /// Every listener's name and bound address, in config order.
    pub fn local_addrs(&self) -> Vec<(Arc<str>, SocketAddr)> {
        self.control.local_addrs()
    }

    /// The admin listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The shared proxy state (current generation, access log, metrics).
    pub fn state(&self) -> &Arc<ProxyState> {
        &self.control.state
    }

    /// The control handle reloads and the admin API use.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The grace period in force (a reload may have changed it).
    pub fn grace_period(&self) -> Duration {
        *self.control.grace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `config` without a restart; see [`Control::reload`].
    pub async fn reload(&self, config: &Config) -> anyhow::Result<()> {
        self.control.reload(config).await
    }

    /// Re-reads every TLS listener's certificate files (as on SIGHUP); a listener whose new
    /// files are bad keeps its current certificates.
    pub fn reload_certificates(&self) {
        self.control.reload_certificates();
    }

    /// TLS handshakes that failed or timed out, over all listeners.
    pub fn tls_handshake_failures(&self) -> u64 {
        self.control.tls_handshake_failures()
    }

    /// Stops accepting, lets in-flight requests finish for up to the grace period, then closes
    /// what is left. Returns true if everything finished within the grace period.
    pub async fn shutdown(mut self) -> bool {
        let _ = self.phase.send(Phase::Draining);
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        let grace = *self.control.grace.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut listeners = self.control.listeners.lock().await;
            listeners.drain = None;
            listeners.watcher = None;
            for listener in listeners.active.drain(..) {
                let _ = listener.task.await;
            }
        }
        self.upkeep.abort();
        self.own_token = None;
        let drained = tokio::time::timeout(grace, self.drained.recv())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(?grace, "grace period over; closing remaining connections");
            let _ = self.phase.send(Phase::Closing);
            let _ = tokio::time::timeout(Duration::from_secs(2), self.drained.recv()).await;
        }
        drained
    }
}

impl Control {
    /// Every listener's name and bound address, in config order.
    pub fn local_addrs(&self) -> Vec<(Arc<str>, SocketAddr)> {
        self.addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies `config` without a restart. Everything is built and bound first; if any of it
    /// fails, nothing changes and the error is returned. Then listeners that stay keep their
    /// sockets (their settings are swapped for new connections), new ones open, removed ones
    /// close (their connections finish), backends that stay in a pool keep their state, and
    /// new requests run on the new routes while requests in flight finish on the old ones.
    pub async fn reload(&self, config: &Config) -> anyhow::Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        self.reload_locked(config).await
    }

    async fn reload_locked(&self, config: &Config) -> anyhow::Result<()> {
        let result = self.reload_inner(config).await;
        let report = ReloadReport {
            ok: result.is_ok(),
            error: result.as_ref().err().map(|e| format!("{e:#}")),
            at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let metrics = &self.state.metrics;
        metrics
            .counter(
                "gatehouse_reloads_total",
                &[("result", if report.ok { "success" } else { "failure" })],
            )
            .increment(1);
        metrics
            .gauge("gatehouse_last_reload_success", &[])
            .set(if report.ok { 1.0 } else { 0.0 });
        metrics
            .gauge("gatehouse_last_reload_timestamp_seconds", &[])
            .set(report.at_unix as f64);
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
        result
    }

    /// Re-reads the config file and applies it (SIGHUP and the admin API).
    pub async fn reload_from_file(&self) -> anyhow::Result<()> {
        let Some(path) = &self.config_path else {
            anyhow::bail!("the server was not started from a config file");
        };
        let _one_at_a_time = self.reloading.lock().await;
        match crate::config::load(path) {
            Ok(config) => self.reload_locked(&config).await,
            Err(errors) => {
                let error = anyhow::anyhow!("{errors}");
                // Counted and reported like any other failed reload.
                self.reload_failed(&error);
                Err(error)
            }
        }
    }

    fn reload_failed(&self, error: &anyhow::Error) {
        let at_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let metrics = &self.state.metrics;
        metrics
            .counter("gatehouse_reloads_total", &[("result", "failure")])
            .increment(1);
        metrics.gauge("gatehouse_last_reload_success", &[]).set(0.0);
        metrics
            .gauge("gatehouse_last_reload_timestamp_seconds", &[])
            .set(at_unix as f64);
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(ReloadReport {
            ok: false,
            error: Some(format!("{error:#}")),
            at_unix,
        });
    }

    /// The outcome of the last reload, if there was one.
    pub fn last_reload(&self) -> Option<ReloadReport> {
        self.last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The config text in force, if the server was started from text.
    pub fn source(&self) -> Option<String> {
        self.source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn reload_inner(&self, config: &Config) -> anyhow::Result<()> {
        let generation = Generation::compile_with(config, &self.state.registry)?;
        let restart_only = RestartOnly::of(config);
        {
            let current = self.restart_only.lock().unwrap_or_else(|e| e.into_inner());
            if *current != restart_only {
                tracing::warn!(
                    "changes to server.workers, [log] and [admin] take effect at the next restart"
                );
            }
        }
        let access_log = if *self.state.access_log().settings() == config.access_log {
            None
        } else {
            Some(AccessLog::open(&config.access_log).context("opening the access log")?)
        };
        // Before the listeners are locked: a first check may take a whole check timeout, and
        // shutdown must not wait for it. If a later step fails, the generation and its checks go.
        generation.start_health_checks().await;
        let mut listeners = self.listeners.lock().await;
        let Some(drain) = listeners.drain.clone() else {
            anyhow::bail!("the server is shutting down");
        };
        // Match each new listener to an open one: same address (a renamed listener keeps its
        // socket), or for port-0 listeners (any free port) same name and address.
        let mut kept: Vec<Option<usize>> = Vec::with_capacity(generation.listeners.len());
        let mut taken = vec![false; listeners.active.len()];
        for spec in &generation.listeners {
            let found = listeners.active.iter().enumerate().position(|(i, open)| {
                !taken[i]
                    && open.spec.address == spec.address
                    && (spec.address.port() != 0 || open.spec.name == spec.name)
            });
            if let Some(i) = found {
                taken[i] = true;
            }
            kept.push(found);
        }
        // Build every new listener's settings and bind every new socket before changing anything.
        let mut prepared = Vec::with_capacity(generation.listeners.len());
        // The generation's listeners are compiled from the config's, one for one and in order.
        for ((spec, kept), listener) in generation
            .listeners
            .iter()
            .zip(&kept)
            .zip(&config.listeners)
        {
            let open = kept.and_then(|i| listeners.active.get(i));
            let serving = serving_for(
                spec,
                listener,
                &generation,
                &self.state,
                &self.phase,
                &drain,
                open,
            )?;
            let socket = match kept {
                Some(_) => None,
                None => Some(bind(spec.address).with_context(|| {
                    format!("binding listener {} on {}", spec.name, spec.address)
                })?),
            };
            prepared.push((spec.clone(), serving, socket));
        }

        // Nothing can fail from here on.
        let mut old: Vec<Option<ActiveListener>> = listeners.active.drain(..).map(Some).collect();
        let mut active = Vec::with_capacity(prepared.len());
        for ((spec, serving, socket), kept) in prepared.into_iter().zip(kept) {
            match (
                kept.and_then(|i| old.get_mut(i).and_then(Option::take)),
                socket,
            ) {
                (Some(open), _) => {
                    open.serving.store(Arc::new(serving));
                    active.push(ActiveListener { spec, ..open });
                }
                (None, Some(socket)) => active.push(spawn_listener(spec, socket, serving)?),
                (None, None) => {}
            }
        }
        for closed in old.into_iter().flatten() {
            tracing::info!(listener = %closed.spec.name, address = %closed.bound, "listener closed by reload");
            closed.task.abort();
            // Its connections finish what they are doing and close, as at shutdown.
            let _ = closed.retired.send(true);
            self.retired_tls_failures.fetch_add(
                closed
                    .serving
                    .load()
                    .tls
                    .as_ref()
                    .map_or(0, |t| t.handshake_failures()),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        *self.addresses.lock().unwrap_or_else(|e| e.into_inner()) = active
            .iter()
            .map(|l| (l.spec.name.clone(), l.bound))
            .collect();
        listeners.active = active;
        listeners.watcher = CertificateWatcher::start(listeners.terminators())
            .map_err(|e| anyhow::anyhow!(e))
            .unwrap_or_else(|error| {
                tracing::error!(%error, "cannot watch certificate files; reload with SIGHUP");
                None
            });
        drop(listeners);
        if let Some(access_log) = access_log {
            self.state.set_access_log(access_log);
        }
        *self.grace.lock().unwrap_or_else(|e| e.into_inner()) = config.server.grace_period.0;
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = config.source.clone();
        self.state.swap(generation);
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Re-reads every TLS listener's certificate files.
    pub fn reload_certificates(&self) {
        if let Ok(listeners) = self.listeners.try_lock() {
            crate::tls::reload_all(&listeners.terminators());
        }
    }

    /// TLS handshakes that failed or timed out, over all open listeners.
    pub fn tls_handshake_failures(&self) -> u64 {
        let live = self.listeners.try_lock().map_or(0, |listeners| {
            listeners
                .terminators()
                .iter()
                .map(|t| t.handshake_failures())
                .sum()
        });
        live + self
            .retired_tls_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Copies values that live elsewhere (backend health and load, TLS failures) into the
    /// metrics, then renders them.
    pub fn render_metrics(&self) -> String {
        let metrics = &self.state.metrics;
        let generation = self.state.generation();
        let now = tokio::time::Instant::now();
        for pool in generation.pools.values() {
            for backend in &pool.backends {
                let labels = [
                    ("pool", &*pool.name),
                    ("backend", backend.authority.as_str()),
                ];
                let up =
                    backend.state.availability(now) == crate::upstream::Availability::Available;
                metrics
                    .gauge("gatehouse_backend_up", &labels)
                    .set(if up { 1.0 } else { 0.0 });
                metrics
                    .gauge("gatehouse_backend_in_flight", &labels)
                    .set(f64::from(backend.state.in_flight()));
                metrics
                    .counter("gatehouse_backend_ejections_total", &labels)
                    .absolute(backend.state.ejections_total());
            }
        }
        metrics
            .counter("gatehouse_tls_handshake_failures_total", &[])
            .absolute(self.tls_handshake_failures());
        metrics
            .counter("gatehouse_access_log_dropped_total", &[])
            .absolute(self.state.access_log().dropped());
        metrics.render()
    }
}

/// Compiles `config`, opens the access log, runs the first health checks, binds every listener
/// (and the admin listener) and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    start_with_path(config, None).await
}

/// As [`start`], remembering the file `config` came from so SIGHUP and the admin API can reload
/// it.
pub async fn start_with_path(
    config: &Config,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<RunningServer> {
    let registry = crate::upstream::BackendRegistry::new();
    let generation = Generation::compile_with(config, &registry)?;
    let access_log = AccessLog::open(&config.access_log).context("opening the access log")?;
    // No traffic before each checked backend has had its first check.
    generation.start_health_checks().await;
    let grace = generation.server.grace_period.0;
    let state = Arc::new(ProxyState::new(generation, access_log, registry));
    let (phase, phase_receiver) = watch::channel(Phase::Running);
    let (token_sender, drained) = mpsc::channel(1);
    let own_token = DrainToken(token_sender);

    let generation = state.generation();
    let mut active = Vec::new();
    for (spec, listener) in generation.listeners.iter().zip(&config.listeners) {
        let serving = serving_for(
            spec,
            listener,
            &generation,
            &state,
            &phase_receiver,
            &own_token,
            None,
        )?;
        let socket = bind(spec.address)
            .with_context(|| format!("binding listener {} on {}", spec.name, spec.address))?;
        active.push(spawn_listener(spec.clone(), socket, serving)?);
    }
    let addresses = active
        .iter()
        .map(|l: &ActiveListener| (l.spec.name.clone(), l.bound))
        .collect();
    let mut listeners = Listeners {
        active,
        drain: Some(own_token.clone()),
        watcher: None,
    };
    listeners.watcher =
        CertificateWatcher::start(listeners.terminators()).map_err(|e| anyhow::anyhow!(e))?;
    let control = Arc::new(Control {
        state: state.clone(),
        listeners: tokio::sync::Mutex::new(listeners),
        config_path,
        source: std::sync::Mutex::new(config.source.clone()),
        restart_only: std::sync::Mutex::new(RestartOnly::of(config)),
        grace: std::sync::Mutex::new(grace),
        phase: phase_receiver,
        started: std::time::Instant::now(),
        last_reload: std::sync::Mutex::new(None),
        retired_tls_failures: std::sync::atomic::AtomicU64::new(0),
        reloading: tokio::sync::Mutex::new(()),
        addresses: std::sync::Mutex::new(addresses),
    });
    let admin = match &config.admin {
        Some(settings) => Some(
            crate::observe::admin::AdminServer::start(settings.get_ref(), control.clone())
                .await
                .context("starting the admin listener")?,
        ),
        None => None,
    };
    let upkeep = {
        let metrics = state.metrics.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(5));
            loop {
                ticks.tick().await;
                metrics.run_upkeep();
            }
        })
    };
    Ok(RunningServer {
        control,
        phase,
        drained,
        own_token: Some(own_token),
        admin,
        upkeep,
    })
}

/// The settings a listener's new connections are served with. `previous` is the open listener
/// a reload keeps for `spec`: its TLS terminator is reused when the TLS settings and protocols
/// are the same, and its connection counts always.
fn serving_for(
    spec: &ListenerSpec,
    listener: &ListenerConfig,
    generation: &Generation,
    state: &Arc<ProxyState>,
    phase: &watch::Receiver<Phase>,
    drain: &DrainToken,
    previous: Option<&ActiveListener>,
) -> anyhow::Result<Serving> {
    let previous = previous.map(|open| (open, open.serving.load_full()));
    let reuse_tls = previous
        .as_ref()
        // ALPN is fixed when a terminator is built: reuse it only for the same protocols.
        .filter(|(open, _)| {
            open.spec.tls == spec.tls
                && open.spec.http1 == spec.http1
                && open.spec.http2 == spec.http2
        })
        .and_then(|(_, serving)| serving.tls.clone());
    let limiter = ConnLimiter::new(
        &ConnLimitSettings::of(listener),
        previous.as_ref().map(|(_, serving)| &*serving.limiter),
    )
    .map_err(|e| anyhow::anyhow!("listener {}: {e}", spec.name))?;
    let tls = match (&spec.tls, reuse_tls) {
        (Some(_), Some(terminator)) => Some(terminator),
        (Some(tls), None) => Some(Arc::new(
            TlsTerminator::new(tls, spec.http1, spec.http2)
                .map_err(|e| anyhow::anyhow!("listener {}: {e}", spec.name))?,
        )),
        (None, _) => None,
    };
    Ok(Serving {
        state: state.clone(),
        builder: Arc::new(http_builder(spec, &generation.server, &state.metrics)),
        phase: phase.clone(),
        drain: drain.clone(),
        timeouts: ClientTimeouts {
            header: generation.timeouts.client_header.0,
            idle: generation.timeouts.client_idle.0,
            send: generation.timeouts.client_send.limit(),
            park_after: generation.timeouts.client_idle_release.limit(),
        },
        tls,
        redirect_https: spec.redirect_https,
        access: spec.access.clone(),
        connections: state
            .metrics
            .gauge("gatehouse_active_connections", &[("listener", &spec.name)]),
        name: spec.name.clone(),
        limiter: Arc::new(limiter),
        refused: Arc::new(Refused::register(&state.metrics, &spec.name)),
        max_requests_per_connection: generation.server.max_requests_per_connection,
        max_head_bytes: header_bytes(&generation.server),
        proxy_protocol: listener.proxy_protocol,
    })
}

fn spawn_listener(
    spec: ListenerSpec,
    socket: TcpListener,
    serving: Serving,
) -> anyhow::Result<ActiveListener> {
    let bound = socket.local_addr()?;
    let scheme = if serving.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(listener = %spec.name, address = %bound, scheme, "listening");
    let (retired, retired_receiver) = watch::channel(false);
    let serving = Arc::new(ArcSwap::from_pointee(serving));
    let task = tokio::spawn(accept_loop(socket, serving.clone(), retired_receiver));
    Ok(ActiveListener {
        spec,
        bound,
        serving,
        task,
        retired,
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
    // Responses are written whole; waiting to coalesce small writes only adds latency. On Linux
    // accepted connections inherit it from the listener, which saves a system call per
    // connection (the accept loop sets it per connection elsewhere).
    socket.set_tcp_nodelay(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    // Delayed acknowledgement for accepted connections (HAProxy's `tcp-smart-accept`): the
    // ACK of a client's first request rides on the response instead of leaving as a packet of
    // its own; the kernel still sends it after ~40 ms if the response takes longer. Set after
    // `listen`, which resets it; accepted connections inherit it.
    #[cfg(target_os = "linux")]
    socket.set_tcp_quickack(false)?;
    TcpListener::from_std(socket.into())
}

fn http_builder(
    spec: &ListenerSpec,
    settings: &crate::config::ServerSettings,
    metrics: &crate::observe::metrics::Metrics,
) -> HttpBuilder {
    let listener = [("listener", &*spec.name)];
    if spec.http2 && !spec.http1 {
        return HttpBuilder::Http2(http2_builder(settings));
    }
    HttpBuilder::Auto(Arc::new(auto::Builders {
        http1: http1_builder(settings),
        // HTTP/1-only: no sniffing, an HTTP/2 preface is a malformed HTTP/1 request.
        http2: spec.http2.then(|| http2_builder(settings)),
        parked: metrics.counter("gatehouse_client_connections_parked_total", &listener),
        spliced: metrics.counter("gatehouse_response_bytes_spliced_total", &listener),
        limits: h1::Limits {
            max_headers: settings.max_headers,
            max_head: header_bytes(settings),
        },
    }))
}

/// The largest request head accepted, in bytes (hyper wants at least 8 KiB of buffer).
fn header_bytes(settings: &crate::config::ServerSettings) -> usize {
    usize::try_from(settings.max_header_bytes.0)
        .unwrap_or(usize::MAX)
        .max(8192)
}

fn http1_builder(settings: &crate::config::ServerSettings) -> http1::Builder {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // Header and idle timeouts are enforced by `activity`, which tells the two apart.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_headers(settings.max_headers)
        .max_buf_size(header_bytes(settings));
    http1
}

fn http2_builder(settings: &crate::config::ServerSettings) -> http2::Builder<TokioExecutor> {
    let header_list = u32::try_from(header_bytes(settings)).unwrap_or(u32::MAX);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(settings.h2_max_pending_reset_streams)
        .max_local_error_reset_streams(settings.h2_max_local_error_resets)
        .max_header_list_size(header_list);
    http2
}

/// The HTTP versions a listener serves, as the hyper builder(s) that serve exactly those.
///
/// A listener with `http2 = false` must not serve h2c: there an HTTP/2 preface is a malformed
/// HTTP/1 request.
enum HttpBuilder {
    /// HTTP/1.1, and HTTP/2 when the listener serves it, told apart by the HTTP/2 connection
    /// preface ([`auto`]), which also parks idle HTTP/1 connections.
    Auto(Arc<auto::Builders>),
    /// HTTP/2 only (h2c with prior knowledge on a cleartext listener).
    Http2(http2::Builder<TokioExecutor>),
}

/// What every connection of one listener shares.
#[derive(Clone)]
struct Serving {
    state: Arc<ProxyState>,
    builder: Arc<HttpBuilder>,
    phase: watch::Receiver<Phase>,
    drain: DrainToken,
    /// The `[timeouts]` of client connections.
    timeouts: ClientTimeouts,
    tls: Option<Arc<TlsTerminator>>,
    redirect_https: Option<u16>,
    connections: metrics::Gauge,
    /// The listener's `deny`/`allow`, checked on the TCP peer at accept (on a `proxy_protocol`
    /// listener, on the client the header names, once it is read).
    access: Option<Arc<crate::protect::access::AccessPolicy>>,
    /// The listener's name, for logs.
    name: Arc<str>,
    /// The listener's connection and per-client request limits, checked on the TCP peer (on a
    /// `proxy_protocol` listener, per-client ones on the client the header names).
    limiter: Arc<ConnLimiter>,
    refused: Arc<Refused>,
    /// `server.max_requests_per_connection`; 0 for no limit.
    max_requests_per_connection: u64,
    /// The largest request head accepted, in bytes.
    max_head_bytes: usize,
    /// Connections start with a PROXY protocol header.
    proxy_protocol: bool,
}

/// The refusal counters of one listener, registered once.
struct Refused {
    /// `gatehouse_connections_refused_total`, by [`Refusal::index`].
    connections: [metrics::Counter; Refusal::ALL.len()],
    /// `gatehouse_requests_refused_total{reason="per_ip"}`.
    requests: metrics::Counter,
    /// `gatehouse_client_header_timeouts_total`: connections cut off because a request head
    /// did not arrive in `timeouts.client_header` (slowloris, or a very slow link).
    header_timeouts: metrics::Counter,
    /// `gatehouse_client_send_timeouts_total`: connections cut off because the client took no
    /// bytes of a response for `timeouts.client_send` (a slow or stalled reader).
    send_timeouts: metrics::Counter,
}

impl Refused {
    fn register(metrics: &crate::observe::metrics::Metrics, listener: &str) -> Self {
        Refused {
            connections: Refusal::ALL.map(|reason| {
                metrics.counter(
                    "gatehouse_connections_refused_total",
                    &[("listener", listener), ("reason", reason.as_str())],
                )
            }),
            requests: metrics.counter(
                "gatehouse_requests_refused_total",
                &[("listener", listener), ("reason", Refusal::PerIp.as_str())],
            ),
            header_timeouts: metrics.counter(
                "gatehouse_client_header_timeouts_total",
                &[("listener", listener)],
            ),
            send_timeouts: metrics.counter(
                "gatehouse_client_send_timeouts_total",
                &[("listener", listener)],
            ),
        }
    }
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("timeouts", &self.timeouts)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Accepts connections until shutdown. The listener's settings are read per connection, so a
/// reload changes them for new connections without touching the socket.
async fn accept_loop(
    listener: TcpListener,
    serving: Arc<ArcSwap<Serving>>,
    retired: watch::Receiver<bool>,
) {
    let mut phase = serving.load().phase.clone();
    // A connection's local address is the listener's, unless the listener is bound to every
    // address: then it takes a `getsockname` per connection to know which.
    let bound = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let current = serving.load();
                    // Behind a PROXY header the client is not known yet: only the listener's
                    // own cap now, the rest once the header names the client.
                    let admitted = if current.proxy_protocol {
                        current.limiter.admit_connection()
                    } else {
                        admit(&current, peer)
                    };
                    let admitted = match admitted {
                        Ok(admitted) => admitted,
                        Err(reason) => {
                            // Closed unanswered, before any TLS or HTTP work: a refused peer
                            // learns nothing, and costs no task.
                            refuse(&current, peer, reason);
                            drop(stream);
                            continue;
                        }
                    };
                    let current = Serving::clone(&current);
                    // Inherited from the listener on Linux (see `bind`).
                    #[cfg(not(target_os = "linux"))]
                    let _ = stream.set_nodelay(true);
                    let retired = retired.clone();
                    // Boxed: tokio moves a task's future by value a few times when it spawns it
                    // and when it ends, and the task then holds a pointer.
                    if current.proxy_protocol {
                        tokio::spawn(Box::pin(serve_proxied(
                            stream, peer, current, admitted, retired,
                        )));
                    } else {
                        let local = bound.unwrap_or_else(|| local_of(&stream));
                        tokio::spawn(serve_admitted(
                            stream, peer, local, current, admitted, retired,
                        ));
                    }
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

/// Counts and logs a refused connection.
fn refuse(serving: &Serving, peer: SocketAddr, reason: Refusal) {
    serving.refused.connections[reason.index()].increment(1);
    tracing::debug!(
        listener = %serving.name,
        client = %peer,
        reason = reason.as_str(),
        "connection refused"
    );
}

/// The address a connection was accepted on.
fn local_of(stream: &TcpStream) -> SocketAddr {
    stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// A `proxy_protocol` listener's connection: the PROXY header first (within the client header
/// timeout, before any TLS), then the listener's access lists and per-client limits on the
/// client it names, then TLS and HTTP as on any listener.
///
/// Its own future ends before the connection is served, so that a long-lived (and parked)
/// connection's task does not carry the header reading's state.
async fn serve_proxied(
    stream: TcpStream,
    peer: SocketAddr,
    serving: Serving,
    admitted: ConnGuard,
    retired: watch::Receiver<bool>,
) {
    let Some((stream, client, local, serving, admitted)) =
        Box::pin(admit_proxied(stream, peer, serving, admitted)).await
    else {
        return;
    };
    serve_admitted(stream, client, local, serving, admitted, retired).await;
}

/// Reads a `proxy_protocol` connection's header and admits the client it names: the stream,
/// the client and local addresses to serve it with, the settings and its place in the limits;
/// `None` when it was refused (and closed).
///
/// The header's addresses are believed only from a peer in `security.trusted_proxies`; from any
/// other peer the header is read and ignored, and the peer stays the client (as nginx does), so
/// a client that reaches the listener directly cannot claim another address. A connection with
/// no valid header is closed unanswered.
async fn admit_proxied(
    mut stream: TcpStream,
    peer: SocketAddr,
    serving: Serving,
    mut admitted: ConnGuard,
) -> Option<(TcpStream, SocketAddr, SocketAddr, Serving, ConnGuard)> {
    use crate::proxy_protocol::{Announced, read_header};
    let announced = match tokio::time::timeout(serving.timeouts.header, read_header(&mut stream))
        .await
    {
        Ok(Ok(announced)) => announced,
        Ok(Err(error)) => {
            tracing::debug!(listener = %serving.name, client = %peer, %error, "no valid PROXY header");
            refuse(&serving, peer, Refusal::ProxyProtocol);
            return None;
        }
        Err(_) => {
            tracing::debug!(listener = %serving.name, client = %peer, "no PROXY header within the client header timeout");
            refuse(&serving, peer, Refusal::ProxyProtocol);
            return None;
        }
    };
    let local = local_of(&stream);
    let trusted = serving
        .state
        .generation()
        .trusted_proxies
        .is_trusted(peer.ip());
    let (client, local) = match announced {
        Announced::Client {
            source,
            destination,
        } if trusted => (
            SocketAddr::new(source.ip().to_canonical(), source.port()),
            destination,
        ),
        Announced::Client { source, .. } => {
            tracing::debug!(listener = %serving.name, client = %peer, announced = %source, "PROXY header from an untrusted peer ignored");
            (peer, local)
        }
        Announced::Unknown => (peer, local),
    };
    if let Some(access) = &serving.access
        && !access.admits(client.ip())
    {
        refuse(&serving, client, Refusal::Acl);
        return None;
    }
    if let Err(reason) = serving
        .limiter
        .admit_client(&mut admitted, client.ip(), Instant::now())
    {
        refuse(&serving, client, reason);
        return None;
    }
    Some((stream, client, local, serving, admitted))
}

/// The listener's access lists, then its connection limits: the place the connection holds, or
/// why it is refused.
fn admit(serving: &Serving, peer: SocketAddr) -> Result<ConnGuard, Refusal> {
    if let Some(access) = &serving.access
        && !access.admits(peer.ip())
    {
        return Err(Refusal::Acl);
    }
    serving.limiter.admit(peer.ip(), Instant::now())
}

/// What the TLS handshake (if any) established for a connection.
struct Secured {
    proto: &'static str,
    subject_header: Option<http::HeaderName>,
    client_subject: Option<http::HeaderValue>,
}

/// Serves an admitted connection, cleartext or TLS, as one boxed future.
///
/// An idle keep-alive connection's memory is mostly this future: the set-up runs before it is
/// made, so that it holds no set-up arguments, and cleartext connections get no layer around
/// `serve_http`'s own future.
fn serve_admitted(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    serving: Serving,
    admitted: ConnGuard,
    retired: watch::Receiver<bool>,
) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    match serving.tls.clone() {
        None => Box::pin(serve_plain(stream, peer, local, serving, admitted, retired)),
        Some(tls) => Box::pin(serve_tls(
            tls, stream, peer, local, serving, admitted, retired,
        )),
    }
}

/// Serves a cleartext connection: the `serve_http` future itself, with no layer of its own.
///
/// An idle keep-alive connection's memory is mostly its task's future (hyper's buffers are
/// released while it is parked), and an `async fn` around `serve_http` keeps its own arguments
/// and the TLS handshake's state next to it for the connection's life (5.6 KiB in all, against
/// about 2 KiB for `serve_http`'s future alone).
fn serve_plain(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    serving: Serving,
    admitted: ConnGuard,
    retired: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send {
    let plain = Secured {
        proto: "http",
        subject_header: None,
        client_subject: None,
    };
    let stream = Admitted::new(stream, admitted);
    serve_http(stream, peer, local, serving, plain, retired)
}

/// Serves a connection on a TLS listener: the handshake, then HTTP.
async fn serve_tls(
    tls: Arc<TlsTerminator>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    serving: Serving,
    admitted: ConnGuard,
    retired: watch::Receiver<bool>,
) {
    // Boxed: the handshake's state (rustls' connection, over a KiB) would otherwise stay in the
    // connection's task for its whole life.
    match Box::pin(tls.accept(stream)).await {
        Ok((stream, handshake)) => {
            let secured = Secured {
                proto: "https",
                subject_header: tls.subject_header.clone(),
                client_subject: handshake.client_subject,
            };
            serve_http(
                // Boxed: the TLS state is over a KiB, and the stream is passed and moved.
                Admitted::new(Box::new(stream), admitted),
                peer,
                local,
                serving,
                secured,
                retired,
            )
            .await;
        }
        // Scanners and clients with no common protocol do this all day: not worth more than debug.
        Err(error) => tracing::debug!(client = %peer, %error, "TLS handshake failed"),
    }
}

/// Serves HTTP on an accepted (and, for TLS, handshaken) stream until the connection ends.
///
/// The set-up runs here, outside the returned future, which then holds only what the
/// connection needs while it lives: the future is most of an idle connection's memory, and an
/// `async fn` would keep its arguments and set-up locals in it too.
fn serve_http<IO>(
    stream: IO,
    peer: SocketAddr,
    local: SocketAddr,
    serving: Serving,
    secured: Secured,
    retired: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + auto::WaitReadable + Unpin + Send + 'static,
{
    let Serving {
        state,
        builder,
        phase,
        drain,
        timeouts,
        tls: _,
        redirect_https,
        connections,
        access: _,
        name: _,
        limiter,
        refused,
        max_requests_per_connection,
        max_head_bytes,
        proxy_protocol: _,
    } = serving;
    connections.increment(1.0);
    let open = OpenConnection(connections);
    let activity = Arc::new(ConnActivity::new());
    let info = Arc::new(ConnInfo {
        peer,
        local,
        private_upstreams: Default::default(),
        peer_ip: crate::proxy::headers::address_value_cached(peer.ip()),
        proto: secured.proto,
        activity: activity.clone(),
        drain,
        subject_header: secured.subject_header,
        client_subject: secured.client_subject,
        redirect_https,
    });
    let limits = Arc::new(RequestLimits {
        limiter,
        refused,
        max_per_connection: max_requests_per_connection,
        served: AtomicU64::new(0),
        enough: Notify::new(),
    });
    let enough = limits.clone();
    // HTTP/2 streams stalled by flow control are caught only by watching each one.
    let watch_streams = timeouts.send.is_some();
    let service = service_fn(move |request: http::Request<crate::body::ClientBody>| {
        let state = state.clone();
        let info = info.clone();
        let limits = limits.clone();
        async move {
            let in_flight = info.activity.start_request();
            let version = request.version();
            let last = limits.count_request();
            if last && version == http::Version::HTTP_2 {
                // GOAWAY now rather than after the response: fewer new streams race it.
                limits.enough.notify_one();
            }
            let mut response = match limits.limiter.start_request(info.peer.ip()) {
                Ok(held) => pipeline::handle(&state, &info, in_flight, request)
                    .await
                    .map(|body| Held::new(body, held)),
                Err(_) => limits
                    .refuse(&state, &info, in_flight, &request)
                    .map(|body| Held::new(body, None)),
            };
            if version == http::Version::HTTP_2 && watch_streams {
                response.body_mut().watch(info.activity.watch_stream());
            }
            if last
                && version != http::Version::HTTP_2
                && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
            {
                // hyper ends an HTTP/1 connection after a response that says so.
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response)
        }
    });
    let io = TrackedIo::new(stream, activity.clone(), max_head_bytes);
    let watch = ConnWatch {
        peer,
        activity,
        timeouts: ClientTimeouts {
            park_after: timeouts
                .park_after
                .filter(|_| auto::WaitReadable::can_wait(&io)),
            ..timeouts
        },
        phase,
        enough,
        retired,
    };
    let mut watch = watch;
    match &*builder {
        HttpBuilder::Auto(builders) => {
            // Built here and moved into the future whole, where it is polled in place (it is
            // `Unpin`): the future holds it once, not also the stream and service it is made of.
            let mut conn = auto::AutoConnection::new(io, service, builders.clone());
            futures_util::future::Either::Left(async move {
                let _open = open;
                let control = ConnControl {
                    shut_down: auto::AutoConnection::graceful_shutdown,
                    park: auto::AutoConnection::park,
                };
                drive(Pin::new(&mut conn), control, &mut watch).await;
            })
        }
        HttpBuilder::Http2(builder) => {
            // Boxed: inline, hyper's HTTP/2 connection (several KiB) would size the task of
            // every connection, HTTP/1 ones included, parked ones too.
            let mut conn = Box::pin(builder.serve_connection(
                TokioIo::new(io),
                auto::BoxedFutures(auto::FromHyper(service)),
            ));
            futures_util::future::Either::Right(async move {
                let _open = open;
                let control = ConnControl {
                    shut_down: http2::Connection::graceful_shutdown,
                    park: |_| {},
                };
                drive(conn.as_mut(), control, &mut watch).await;
            })
        }
    }
}

/// What a served connection is watched for besides its own progress.
struct ConnWatch {
    peer: SocketAddr,
    activity: Arc<ConnActivity>,
    /// The client timeouts; `park_after` only where the connection can be parked.
    timeouts: ClientTimeouts,
    phase: watch::Receiver<Phase>,
    enough: Arc<RequestLimits>,
    retired: watch::Receiver<bool>,
}

/// Wakes a connection's task for its control events (its timers, shutdown, reload, request
/// limit) and remembers that one came, so that the connection's own wake-ups, one or more per
/// request, poll the connection alone: each control future costs a lock or a timer look-up to
/// poll, and they fire about once per connection.
#[derive(Debug)]
struct ControlSignal {
    raised: AtomicBool,
    task: AtomicWaker,
}

impl ControlSignal {
    fn new() -> Self {
        ControlSignal {
            // Control futures must be polled once to register.
            raised: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }

    /// Makes the next poll of the task look at its control futures (new ones must register).
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
    }

    /// Registers the task to be woken by a control event, then tells whether one came since
    /// the last call (registering first, so none is missed in between).
    fn take(&self, task: &Waker) -> bool {
        self.task.register(task);
        self.raised.load(Ordering::Acquire) && self.raised.swap(false, Ordering::AcqRel)
    }
}

impl Wake for ControlSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.raise();
        self.task.wake();
    }
}

/// How [`drive`] acts on a connection of type `C`.
struct ConnControl<C: ?Sized> {
    /// Asks it to close (hyper's `graceful_shutdown` for its type).
    shut_down: fn(Pin<&mut C>),
    /// Parks it between requests ([`auto::AutoConnection::park`]); a no-op where there is no
    /// parking.
    park: fn(Pin<&mut C>),
}

/// Why [`drive`] stopped polling: the connection ended, or a control event came.
enum Event<E> {
    Ended(Result<(), E>),
    /// The server's phase changed, or its sender is gone (`true`).
    Phase(bool),
    /// The client clock ran out.
    Expired(Expired),
    /// A connection asked to close did not within its time.
    CloseBy,
    /// `max_requests_per_connection` was reached on an HTTP/2 connection.
    Enough,
    /// The listener was retired by a reload, or its task is gone (`true`).
    Retired(bool),
}

/// Runs a served connection to its end, asking it to close (`shut_down`, which is hyper's
/// `graceful_shutdown` for its type) when it goes idle, the server drains, the listener is
/// retired or the connection has served its requests, and dropping it when the client is too
/// slow or does not close when asked.
///
/// The connection is polled first on every wake-up; the control futures only when one of them
/// woke the task ([`ControlSignal`]).
async fn drive<C, E>(mut conn: Pin<&mut C>, control: ConnControl<C>, watch: &mut ConnWatch)
where
    C: std::future::Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Borrowed, not moved: the caller's future holds the watch already.
    let ConnWatch {
        peer,
        activity,
        timeouts,
        phase,
        enough,
        retired,
    } = watch;
    let (peer, header_timeout) = (*peer, timeouts.header);
    let mut clock = std::pin::pin!(ClientClock::new(activity.clone(), *timeouts));
    // Once asked to close, a connection with nothing in flight gets `header_timeout` to do so: an
    // HTTP/2 client that never acknowledges the GOAWAY's PING would otherwise keep it forever.
    let mut close_by = std::pin::pin!(None::<tokio::time::Sleep>);
    let signal = Arc::new(ControlSignal::new());
    let control_waker = Waker::from(signal.clone());
    loop {
        let event = {
            // New futures each round (a round ends with a control event, which is rare): they
            // borrow the receivers, which the handling below reads.
            let mut phase_changed = std::pin::pin!(phase.changed());
            let mut retired_changed = std::pin::pin!(retired.changed());
            let mut enough_notified = std::pin::pin!(enough.enough.notified());
            signal.raise();
            std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Event::Ended(result));
                }
                clock.as_mut().after_io();
                if !signal.take(cx.waker()) {
                    return Poll::Pending;
                }
                let mut control = std::task::Context::from_waker(&control_waker);
                if let Poll::Ready(changed) = phase_changed.as_mut().poll(&mut control) {
                    return Poll::Ready(Event::Phase(changed.is_err()));
                }
                if let Some(close_by) = close_by.as_mut().as_pin_mut() {
                    // Closing: only the phase and this deadline still matter.
                    return close_by.poll(&mut control).map(|()| Event::CloseBy);
                }
                if let Poll::Ready(expired) = clock.as_mut().poll_expired(&mut control) {
                    return Poll::Ready(Event::Expired(expired));
                }
                // Only a limit can be reached: without one, the connection does not register
                // with the `Notify` at all (a lock and a list insertion and removal each).
                if enough.max_per_connection != 0
                    && enough_notified.as_mut().poll(&mut control).is_ready()
                {
                    return Poll::Ready(Event::Enough);
                }
                retired_changed
                    .as_mut()
                    .poll(&mut control)
                    .map(|gone| Event::Retired(gone.is_err()))
            })
            .await
        };
        let closing = close_by.is_some();
        let ask_to_close = match event {
            Event::Ended(result) => {
                if let Err(error) = result {
                    log_connection_error(peer, &*error.into());
                }
                break;
            }
            Event::Phase(gone) => match (gone, *phase.borrow()) {
                (true, _) | (_, Phase::Closing) => break,
                (_, Phase::Draining) => !closing,
                _ => false,
            },
            Event::Expired(Expired::Header) => {
                enough.refused.header_timeouts.increment(1);
                tracing::debug!(client = %peer, "client header timeout; closing connection");
                break;
            }
            Event::Expired(Expired::Send) => {
                enough.refused.send_timeouts.increment(1);
                tracing::debug!(client = %peer, "client send timeout: the client takes no bytes; closing connection");
                break;
            }
            Event::Expired(Expired::Idle) => {
                tracing::trace!(client = %peer, "client idle timeout");
                true
            }
            Event::Expired(Expired::Park) => {
                // Not while closing: the close is under way.
                if !closing {
                    (control.park)(conn.as_mut());
                }
                false
            }
            Event::CloseBy => {
                if activity.in_flight() == 0 {
                    tracing::debug!(client = %peer, "connection did not close when asked; closing it");
                    break;
                }
                // The clock is not polled while closing: a stalled response is caught here.
                if clock.send_overdue() {
                    enough.refused.send_timeouts.increment(1);
                    tracing::debug!(client = %peer, "client send timeout while closing; closing connection");
                    break;
                }
                close_by.set(Some(tokio::time::sleep(header_timeout)));
                false
            }
            Event::Enough => {
                tracing::debug!(client = %peer, "max_requests_per_connection reached; closing connection");
                true
            }
            // A reload removed this listener (or its task ended): finish and close.
            Event::Retired(gone) => gone || *retired.borrow(),
        };
        if ask_to_close {
            (control.shut_down)(conn.as_mut());
            close_by.set(Some(tokio::time::sleep(header_timeout)));
        }
    }
}

/// What the requests of one connection share: the per-client request limit and the count of
/// requests served on the connection.
struct RequestLimits {
    limiter: Arc<ConnLimiter>,
    refused: Arc<Refused>,
    /// `server.max_requests_per_connection`; 0 for no limit.
    max_per_connection: u64,
    served: AtomicU64,
    /// Told when an HTTP/2 connection has had its last request.
    enough: Notify,
}

impl RequestLimits {
    /// Counts one request; true when it is the last the connection may serve (or past it, for
    /// HTTP/2 streams that raced the GOAWAY).
    fn count_request(&self) -> bool {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_per_connection != 0 && served >= self.max_per_connection
    }

    /// The answer to a request over `max_requests_per_ip`: 429 with `Retry-After: 1`. 429 rather
    /// than 503: the client is told it sends too much, not that the service is down, and
    /// well-behaved clients back off rather than retry elsewhere at once.
    fn refuse(
        &self,
        state: &ProxyState,
        info: &ConnInfo,
        in_flight: InFlight,
        request: &http::Request<crate::body::ClientBody>,
    ) -> http::Response<ResponseBody> {
        self.refused.requests.increment(1);
        let request_id = crate::proxy::headers::request_id(request.headers());
        tracing::debug!(
            client = %info.peer,
            request_id = request_id.to_str().unwrap_or("-"),
            "request refused: the client is at max_requests_per_ip"
        );
        let status = http::StatusCode::TOO_MANY_REQUESTS;
        let mut response =
            crate::proxy::error::error_response(status, &request_id, request.headers());
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        if request.version() != http::Version::HTTP_2
            && !http_body::Body::is_end_stream(request.body())
        {
            // The request body is left unread; the connection cannot be reused.
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        state
            .unrouted
            .count(&state.metrics, request.method(), response.status());
        response
            .body_mut()
            .observe(Box::new(Answered(Some(in_flight))));
        response
    }
}

/// Keeps a request counted as in flight on its connection until its response body is done.
struct Answered(Option<InFlight>);

impl crate::body::BodyObserver for Answered {
    fn finished(&mut self, _bytes: u64, _complete: bool) {
        self.0 = None;
    }
}

/// A client stream that holds the connection's place in the listener's limits for as long as
/// it exists: while HTTP is served on it and, after an upgrade, for the life of the tunnel.
struct Admitted<IO> {
    io: IO,
    _place: ConnGuard,
}

impl<IO> Admitted<IO> {
    fn new(io: IO, place: ConnGuard) -> Self {
        Admitted { io, _place: place }
    }
}

impl<IO: auto::WaitReadable> auto::WaitReadable for Admitted<IO> {
    fn can_wait(&self) -> bool {
        self.io.can_wait()
    }

    fn closes_on_drop(&self) -> bool {
        self.io.closes_on_drop()
    }

    fn plain_tcp(&self) -> Option<&tokio::net::TcpStream> {
        self.io.plain_tcp()
    }

    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.poll_read_ready(cx)
    }
}

/// TLS connections are not parked: rustls keeps its own buffers whatever hyper does, and a
/// readable socket may hold records with no request bytes in them.
impl auto::WaitReadable for Box<tokio_rustls::server::TlsStream<TcpStream>> {
    fn can_wait(&self) -> bool {
        false
    }

    fn poll_read_ready(&self, _cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Admitted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Admitted<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's place in `max_requests_per_ip` until the body
    /// ends (or is dropped), so a slow download counts as a request in flight; on HTTP/2, it
    /// also tells the send clock how its stream takes it.
    struct Held<B> {
        #[pin]
        body: B,
        place: Option<RequestGuard>,
        stream: Option<Arc<StreamSend>>,
    }
}

impl<B> Held<B> {
    fn new(body: B, place: Option<RequestGuard>) -> Self {
        Held {
            body,
            place,
            stream: None,
        }
    }

    /// Reports each poll of the body to `stream` (an HTTP/2 response).
    fn watch(&mut self, stream: Arc<StreamSend>) {
        self.stream = Some(stream);
    }
}

impl<B: http_body::Body> http_body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let Some(stream) = this.stream {
            stream.polled(matches!(&polled, Poll::Ready(Some(Ok(frame))) if frame.is_data()));
        }
        let polled = std::task::ready!(polled);
        if !matches!(polled, Some(Ok(_))) {
            *this.place = None;
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The place is held until the spliced body is dropped, as until a polled one ends.
impl<B: crate::splice::SpliceSource> crate::splice::SpliceSource for Held<B> {
    fn splice_len(&self) -> Option<u64> {
        self.body.splice_len()
    }

    fn poll_splice(
        self: Pin<&mut Self>,
        pipe: &mut crate::splice::Pipe,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<usize, crate::body::BoxError>> {
        let this = self.project();
        let moved = std::task::ready!(this.body.poll_splice(pipe, cx));
        if moved.is_err() {
            *this.place = None;
        }
        Poll::Ready(moved)
    }
}

/// Counts a client connection as open until dropped.
struct OpenConnection(metrics::Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A parked idle connection holds little more than its task's future, so that future must
    /// stay small: set-up locals, the TLS handshake or hyper's HTTP/2 connection inline in it
    /// would cost every idle connection KiB (it was 5.6 KiB with an `async fn` layer around it and
    /// the handshake inline; 1,840 bytes in debug when this test was written, 1,448 once hyper's
    /// HTTP/1 connection, now only for requests that are not plain, was boxed).
    #[tokio::test]
    async fn a_cleartext_connection_future_stays_small() {
        let text = "[access_log]\nenabled = false\n[[listener]]\naddress = \"127.0.0.1:0\"\n\
                    [pool.p]\nbackends = [\"127.0.0.1:1\"]\n[[route]]\npool = \"p\"\n";
        let config =
            crate::config::parse(std::path::Path::new("t.toml"), text).expect("valid config");
        let registry = crate::upstream::BackendRegistry::new();
        let generation = Generation::compile_with(&config, &registry).expect("generation");
        let access_log = AccessLog::open(&config.access_log).expect("access log");
        let state = Arc::new(ProxyState::new(generation, access_log, registry));
        let (_phase, phase) = watch::channel(Phase::Running);
        let (token, _drained) = mpsc::channel(1);
        let generation = state.generation();
        let serving = serving_for(
            &generation.listeners[0],
            &config.listeners[0],
            &generation,
            &state,
            &phase,
            &DrainToken(token),
            None,
        )
        .expect("serving");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let _client = TcpStream::connect(address).await.expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        let admitted = admit(&serving, peer).expect("admitted");
        let (_retire, retired) = watch::channel(false);
        let local = local_of(&stream);
        let future = serve_plain(stream, peer, local, serving, admitted, retired);
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= 2048,
            "a cleartext connection's future is {size} bytes"
        );
    }

    /// The accept loop leaves TCP_NODELAY to the listener on Linux: the accepted socket must
    /// have it all the same.
    #[tokio::test]
    async fn accepted_connections_have_nodelay_from_the_listener() {
        let listener = bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let address = listener.local_addr().expect("address");
        let _client = TcpStream::connect(address).await.expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        assert!(stream.nodelay().expect("nodelay"));
    }
}
