//! TLS with rustls: termination on listeners (certificates chosen by SNI, ALPN, mutual TLS,
//! hot certificate reload) and TLS towards backends.
//!
//! Only TLS 1.2 and 1.3 exist in rustls, with its safe default cipher suites, so older protocol
//! versions are refused by construction. The crypto provider is aws-lc-rs, installed once.

pub mod certs;
pub mod sni;
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
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub use watch::{CertificateWatcher, reload_all};

use crate::config::{ClientAuth, ListenerTls};
use sni::{CertTable, SniResolver};

/// The crypto provider every TLS config uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes aws-lc-rs the process default, for code (tests, dependencies) that asks for it.
/// Harmless when called again.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// What a completed handshake tells the request pipeline.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// The protocol agreed by ALPN (`h2`, `http/1.1`), if any.
    pub alpn: Option<Vec<u8>>,
    /// The verified client certificate's subject, with mutual TLS.
    pub client_subject: Option<HeaderValue>,
}

/// TLS termination for one listener.
pub struct TlsTerminator {
    // Swapped whole when a reload reads a new client CA bundle (the verifier is part of the
    // rustls config); certificates alone are swapped inside `resolver`.
    acceptor: ArcSwap<TlsAcceptor>,
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
        let config = server_config(spec, resolver.clone(), alpn, ticketer)?;
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
            acceptor: ArcSwap::from_pointee(TlsAcceptor::from(Arc::new(config))),
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
        let result =
            match tokio::time::timeout(self.handshake_timeout, self.acceptor.load().accept(stream))
                .await
            {
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
            // A new config around the same resolver, ALPN and ticket keys: sessions resume
            // across the swap, and handshakes in progress finish with the config they began with.
            let current = self.acceptor.load();
            let old = current.config();
            let config = server_config(
                &self.spec,
                self.resolver.clone(),
                old.alpn_protocols.clone(),
                old.ticketer.clone(),
            )?;
            self.acceptor
                .store(Arc::new(TlsAcceptor::from(Arc::new(config))));
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

/// The rustls config of a listener: its certificates (through `resolver`), client
/// verification from `spec.client_ca` (read now), `alpn` and the ticket keys.
fn server_config(
    spec: &ListenerTls,
    resolver: Arc<SniResolver>,
    alpn: Vec<Vec<u8>>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut config = match &spec.client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, spec.client_auth)?),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(resolver);
    config.alpn_protocols = alpn;
    config.ticketer = ticketer;
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
