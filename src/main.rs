//! The `gatehouse` command line: `run`, `check`, `demo` and `route` (explain a request).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gatehouse::config::{self, Config};
use gatehouse::observe::logging;
use gatehouse::server::config_watch::ConfigWatch;
use gatehouse::{demo, server};

mod allocator;

/// mimalloc rather than glibc's malloc: memory freed when idle connections are parked goes back
/// to the system (glibc keeps a burst's peak), and allocation is a little cheaper on the request
/// path (docs/performance-log.md, "Changes of 2026-11-27, second part").
#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3 alike): how long freed pages wait before
/// they are returned to the system. The crate exports no name for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Once a second, has mimalloc return the pages whose purge delay has passed. It purges only
/// when it is called, so after a burst that ends in a quiet spell (connections that all parked)
/// pages would stay resident for as long as the quiet lasts. One call is a walk over the
/// calling thread's pages and the arenas' bitmaps.
async fn collect_freed_memory() {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        ticks.tick().await;
        // SAFETY: `mi_collect` takes no pointers; it is mimalloc's own routine, safe to call
        // from any thread at any time.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

/// Freed pages go back to the system 100 ms after they empty. mimalloc purges lazily, when it
/// is next called: with its default delay, pages freed in the last second before a quiet spell
/// (a burst of connections that all parked) stay resident; at 0 every emptied page is purged at
/// once, which costs `madvise` calls and page faults when connections come and go (0.50 per
/// request in scenario 3, against 0.08 at 100 ms; docs/performance.md).
fn tune_allocator() {
    // SAFETY: `mi_option_set` only stores the option's value (mimalloc reads it atomically);
    // it takes no pointers.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
}

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "A reverse proxy in one memory-safe binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a configuration until SIGTERM or Ctrl-C.
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = "gatehouse.toml")]
        config: PathBuf,
        /// Reload when the configuration file, or a list or htpasswd file it names, changes
        /// (as on SIGHUP; a broken file is refused and the running configuration stays).
        #[arg(long)]
        watch: bool,
    },
    /// Validate a configuration: exit 0 if it is valid, else print every error and exit 1.
    Check {
        /// The configuration file.
        #[arg(short, long, default_value = "gatehouse.toml")]
        config: PathBuf,
    },
    /// Start three demo origins and a proxy in front of them, all on loopback.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo's HTTPS listener (self-signed certificate) listens; by default the
        /// `--listen` port plus 363 (8080 → 8443).
        #[arg(long)]
        tls_listen: Option<SocketAddr>,
    },
    /// Explain which route, pool, backends and policies a request would meet, without sending it.
    Route {
        /// The configuration file.
        #[arg(short, long, default_value = "gatehouse.toml")]
        config: PathBuf,
        /// The request method, e.g. GET (case-sensitive, as on the wire).
        method: String,
        /// The request target: `http://host/path?query`, or `/path?query` with `-H "Host: ..."`.
        url: String,
        /// A request header, `"Name: value"`; repeat for more.
        #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The client's address, for `hash_key = "client_ip"`.
        #[arg(long, default_value = "127.0.0.1")]
        client_ip: std::net::IpAddr,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config, watch } => match config::load(&config) {
            Ok(parsed) => serve(parsed, config, watch),
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!(
                    "gatehouse: {} error(s) in {}; not starting",
                    errors.0.len(),
                    config.display()
                );
                ExitCode::FAILURE
            }
        },
        Command::Demo { listen, tls_listen } => {
            logging::init(&Default::default());
            let tls_listen = tls_listen.unwrap_or_else(|| {
                SocketAddr::new(listen.ip(), listen.port().checked_add(363).unwrap_or(0))
            });
            with_runtime(0, demo::run(listen, tls_listen))
        }
        Command::Route {
            config,
            method,
            url,
            headers,
            client_ip,
        } => gatehouse::explain::command(&config, &method, &url, &headers, client_ip),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            println!(
                "{}: OK ({} listener(s), {} pool(s), {} route(s))",
                path.display(),
                config.listeners.len(),
                config.pools.len(),
                config.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config, path: std::path::PathBuf, watch: bool) -> ExitCode {
    logging::init(&config.log);
    let workers = config.server.workers;
    with_runtime(workers, async move {
        tokio::spawn(collect_freed_memory());
        // Installed before the listeners open, so a SIGHUP right after start cannot kill us.
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut rotate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
        // Watching starts (and takes its snapshot of the files) before the listeners open: a
        // change made as soon as the proxy answers must not slip in before the snapshot.
        let mut watching = if watch {
            Some(start_watch(&path, &config)?)
        } else {
            None
        };
        let server = server::start_with_path(&config, Some(path.clone())).await?;
        loop {
            tokio::select! {
                _ = wait_for_signal() => break,
                () = changed(&mut watching) => {
                    tracing::info!(file = %path.display(), "configuration files changed: reloading");
                    // The files to watch may have changed with the configuration.
                    if let Ok(new) = config::load(&path) {
                        let files = gatehouse::server::config_watch::watched_files(&path, &new);
                        if watching.as_ref().is_some_and(|w| *w.files() != files) {
                            match ConfigWatch::start(files) {
                                Ok(watch) => watching = Some(watch),
                                Err(error) => tracing::error!(%error, "cannot watch the new configuration's files; keeping the old watch"),
                            }
                        }
                    }
                    let control = server.control().clone();
                    tokio::spawn(async move {
                        if let Err(error) = control.reload_from_file().await {
                            tracing::error!("reload refused; the previous configuration stays in force: {error:#}");
                        }
                    });
                }
                _ = hangup.recv() => {
                    tracing::info!(file = %path.display(), "SIGHUP: reloading the configuration and TLS certificates");
                    // In a task of its own, so a slow first health check cannot hold up SIGTERM.
                    let control = server.control().clone();
                    tokio::spawn(async move {
                        if let Err(error) = control.reload_from_file().await {
                            tracing::error!("reload refused; the previous configuration stays in force: {error:#}");
                        }
                        control.reload_certificates();
                    });
                }
                _ = rotate.recv() => {
                    tracing::info!("SIGUSR1: reopening the access log");
                    server.state().access_log().reopen();
                }
            }
        }
        tracing::info!(grace = ?server.grace_period(), "shutting down: finishing in-flight requests");
        tokio::select! {
            drained = server.shutdown() => {
                if drained {
                    tracing::info!("all connections finished; bye");
                }
            }
            _ = wait_for_signal() => tracing::warn!("second signal: closing at once"),
        }
        Ok(())
    })
}

/// Watches the configuration's files, logging which.
fn start_watch(path: &std::path::Path, config: &Config) -> anyhow::Result<ConfigWatch> {
    let files = gatehouse::server::config_watch::watched_files(path, config);
    let watch = ConfigWatch::start(files).map_err(anyhow::Error::msg)?;
    tracing::info!(files = ?watch.files(), "watching the configuration files for changes");
    Ok(watch)
}

/// Resolves when the watched files change; never when there is no watch.
async fn changed(watching: &mut Option<ConfigWatch>) {
    match watching {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

fn with_runtime(workers: usize, task: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    // One worker: everything on the main thread, no work-stealing machinery and no hand-offs
    // between the thread running the signal loop and the worker (measured: 1.5 KiB less per
    // idle connection; see docs/performance.md). The end-to-end tests run the proxy this way.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().thread_name("gatehouse-worker");
    if workers > 1 {
        builder.worker_threads(workers);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gatehouse: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gatehouse: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C will stop the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
