//! TLS with rustls: termination on listeners (certificates chosen by SNI, ALPN, mutual TLS,
//! hot certificate reload) and TLS towards backends.
//!
//! Only TLS 1.2 and 1.3 exist in rustls, with its safe default cipher suites, so older protocol
//! versions are refused by construction. The crypto provider is aws-lc-rs, installed once.
//! Which suite a client gets is decided per ClientHello (see `suites`).

pub mod certs;
pub mod sni;
mod suites;
pub mod upstream;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

pub use suites::aes_hardware;
pub use watch::{CertificateWatcher, reload_all};

use crate::config::{ClientAuth, ListenerTls};
use sni::{CertTable, SniResolver};

/// The crypto provider every TLS config uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto())
}

/// The crypto every TLS config is built from (aws-lc-rs), owned, for configs that reorder
/// its cipher suites (see `suites`).
fn crypto() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Makes aws-lc-rs the process default, for code (tests, dependencies) that asks for it.
/// Harmless when called again.
pub fn install_default_provider() {
    let _ = crypto().install_default();
}

/// What a completed handshake tells the request pipeline.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// The protocol agreed by ALPN (`h2`, `http/1.1`), if any.
    pub alpn: Option<Vec<u8>>,
    /// The verified client certificate's subject, with mutual TLS.
    pub client_subject: Option<HeaderValue>,
}

/// A listener's two rustls configs, alike but for whose cipher suite order counts; each
/// handshake takes one after its ClientHello is read (see `suites`).
struct ListenerConfigs {
    server_order: Arc<ServerConfig>,
    client_order: Arc<ServerConfig>,
}

impl ListenerConfigs {
    fn new(
        spec: &ListenerTls,
        resolver: Arc<SniResolver>,
        shared: SharedState,
    ) -> Result<Self, String> {
        // Read once for both, so that the two cannot see different bundles.
        let verifier = match &spec.client_ca {
            Some(ca) => Some(client_verifier(ca, spec.client_auth)?),
            None => None,
        };
        let mut server_order = server_config(
            suites::in_server_order(crypto()),
            verifier.clone(),
            resolver.clone(),
            shared.clone(),
        )?;
        let client_order = server_config(crypto(), verifier, resolver, shared)?;
        server_order.ignore_client_order = true;
        Ok(ListenerConfigs {
            server_order: Arc::new(server_order),
            client_order: Arc::new(client_order),
        })
    }

    /// The config for a client that offered `offered`.
    fn for_client(&self, offered: &[rustls::CipherSuite]) -> &Arc<ServerConfig> {
        if suites::prefer_server_order(
            offered,
            &self.server_order.crypto_provider().cipher_suites,
            suites::aes_hardware(),
        ) {
            &self.server_order
        } else {
            &self.client_order
        }
    }

    /// What both configs share and a rebuilt pair must keep: ALPN, the ticket keys and the
    /// session cache, so that a session made under one config resumes under the other or
    /// under a rebuilt one.
    fn shared(&self) -> SharedState {
        let config = &self.client_order;
        SharedState {
            alpn: config.alpn_protocols.clone(),
            ticketer: config.ticketer.clone(),
            sessions: config.session_storage.clone(),
        }
    }
}

/// The parts of a listener's rustls configs that outlive a rebuild.
#[derive(Clone)]
struct SharedState {
    alpn: Vec<Vec<u8>>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
}

/// TLS termination for one listener.
pub struct TlsTerminator {
    // Swapped whole when a reload reads a new client CA bundle (the verifier is part of the
    // rustls config); certificates alone are swapped inside `resolver`.
    configs: ArcSwap<ListenerConfigs>,
    resolver: Arc<SniResolver>,
    spec: ListenerTls,
    /// How long a client has to finish the handshake.
    pub handshake_timeout: Duration,
    /// The header that carries the client certificate subject (with mutual TLS).
    pub subject_header: Option<HeaderName>,
    failures: AtomicU64,
}

impl std::fmt::Debug for TlsTerminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTerminator")
            .field("files", &self.watched_files())
            .finish_non_exhaustive()
    }
}

impl TlsTerminator {
    /// Loads the certificates and builds the server config; `http2` adds `h2` to ALPN.
    pub fn new(spec: &ListenerTls, http1: bool, http2: bool) -> Result<Self, String> {
        let resolver = Arc::new(SniResolver::new(load_table(spec)?));
        let alpn = match (http1, http2) {
            (true, true) => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            (false, true) => vec![b"h2".to_vec()],
            _ => vec![b"http/1.1".to_vec()],
        };
        // Session resumption: stateless tickets (rotating keys) and the default session cache.
        let ticketer =
            rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("TLS tickets: {e}"))?;
        let shared = SharedState {
            alpn,
            ticketer,
            sessions: rustls::server::ServerSessionMemoryCache::new(256),
        };
        let configs = ListenerConfigs::new(spec, resolver.clone(), shared)?;
        let subject_header = match &spec.client_ca {
            Some(_) => Some(
                HeaderName::from_bytes(spec.client_subject_header.as_bytes()).map_err(|_| {
                    format!(
                        "client_subject_header {:?} is not a header name",
                        spec.client_subject_header
                    )
                })?,
            ),
            None => None,
        };
        Ok(TlsTerminator {
            configs: ArcSwap::from_pointee(configs),
            resolver,
            spec: spec.clone(),
            handshake_timeout: spec.handshake_timeout.0,
            subject_header,
            failures: AtomicU64::new(0),
        })
    }

    /// Runs the server side of a handshake, bounded by the handshake timeout.
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> Result<(TlsStream<TcpStream>, Handshake), String> {
        let handshake = async {
            let start =
                LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
            let config = self
                .configs
                .load()
                .for_client(start.client_hello().cipher_suites())
                .clone();
            start.into_stream(config).await
        };
        let result = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Err(_) => Err("TLS handshake timed out".to_owned()),
            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
            Ok(Ok(stream)) => Ok(stream),
        };
        let stream = result.inspect_err(|_| {
            self.failures.fetch_add(1, Ordering::Relaxed);
        })?;
        let (_, connection) = stream.get_ref();
        let handshake = Handshake {
            alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
            client_subject: connection
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(certs::subject)
                .and_then(|s| HeaderValue::from_str(&s).ok()),
        };
        Ok((stream, handshake))
    }

    /// Handshakes that failed or timed out since start.
    pub fn handshake_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Re-reads the certificate files and the client CA bundle. On error everything in use
    /// stays in use: both are read before either is replaced.
    pub fn reload(&self) -> Result<(), String> {
        let table = if self.spec.certificates.is_empty() {
            None
        } else {
            Some(load_table(&self.spec)?)
        };
        if self.spec.client_ca.is_some() {
            // New configs around the same resolver, ALPN, ticket keys and session cache:
            // sessions resume across the swap, and handshakes in progress finish with the
            // config they began with.
            let shared = self.configs.load().shared();
            let configs = ListenerConfigs::new(&self.spec, self.resolver.clone(), shared)?;
            self.configs.store(Arc::new(configs));
        }
        if let Some(table) = table {
            self.resolver.replace(table);
        }
        Ok(())
    }

    /// The certificate, key and client CA files this listener reads.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.spec
            .certificates
            .iter()
            .flat_map(|c| [PathBuf::from(&c.cert), PathBuf::from(&c.key)])
            .chain(self.spec.client_ca.iter().map(PathBuf::from))
            .collect()
    }
}

fn load_table(spec: &ListenerTls) -> Result<CertTable, String> {
    let mut keys = Vec::new();
    for files in &spec.certificates {
        keys.push(certs::load_pair(files.cert.as_ref(), files.key.as_ref())?);
    }
    if spec.self_signed {
        keys.push(certs::self_signed(&spec.self_signed_names)?);
    }
    if keys.is_empty() {
        return Err("a TLS listener needs `certificates` or `self_signed = true`".to_owned());
    }
    Ok(CertTable::new(&keys, spec.unknown_sni))
}

/// A rustls config of a listener: `provider`'s suites, its certificates (through `resolver`),
/// client certificates checked by `verifier` (mutual TLS) if given, and the `shared` ALPN,
/// ticket keys and session cache.
fn server_config(
    provider: CryptoProvider,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    resolver: Arc<SniResolver>,
    shared: SharedState,
) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut config = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(resolver);
    config.alpn_protocols = shared.alpn;
    config.ticketer = shared.ticketer;
    config.session_storage = shared.sessions;
    Ok(config)
}

fn client_verifier(ca: &str, auth: ClientAuth) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs::load_chain(ca.as_ref())? {
        roots
            .add(cert)
            .map_err(|e| format!("client_ca {ca}: unusable CA certificate: {e}"))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = match auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    builder.build().map_err(|e| format!("client_ca {ca}: {e}"))
}

/// Checks that a listener's TLS settings load, for `gatehouse check`.
pub fn check_listener(spec: &ListenerTls) -> Result<(), String> {
    TlsTerminator::new(spec, true, true).map(|_| ())
}
