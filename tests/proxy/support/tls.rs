//! TLS helpers for the end-to-end tests: a test CA and the certificates it signs (rcgen), TLS
//! clients that report what the handshake gave them (peer certificate, ALPN, version), HTTP/1.1
//! and HTTP/2 requests over them, and a TLS origin that records SNI, ALPN and client certificates.
//!
//! Every rustls config is built with an explicit aws-lc-rs provider; nothing relies on a process
//! default.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};

use super::TempDir;

/// The provider every test TLS config is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `path` as a TOML basic string, quotes included.
pub fn toml_path(path: &std::path::Path) -> String {
    format!("{:?}", path.display().to_string())
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A certificate authority made for one test.
pub struct TestCa {
    /// The CA certificate (PEM).
    pub cert_pem: String,
    /// The CA certificate (DER).
    pub der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate signed by a [`TestCa`] (or self-signed) and its private key.
#[derive(Clone)]
pub struct Leaf {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The certificate (DER), to compare with what a peer presented.
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCa {
    /// A fresh CA whose subject is `CN={name}`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            cert_pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses; the first is also the CN).
    pub fn server(&self, names: &[&str]) -> Leaf {
        let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(owned).expect("server params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        self.sign(params)
    }

    /// A client certificate whose subject is the RDNs `subject`, in encoding order
    /// (e.g. `[(DnType::OrganizationName, "Example"), (DnType::CommonName, "client")]`).
    pub fn client_with(&self, subject: &[(DnType, &str)]) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name = DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        self.sign(params)
    }

    /// A client certificate with subject `CN={cn}`.
    pub fn client(&self, cn: &str) -> Leaf {
        self.client_with(&[(DnType::CommonName, cn)])
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// Writes the CA certificate to `{name}.pem` in `dir`.
    pub fn write(&self, dir: &TempDir, name: &str) -> PathBuf {
        let path = dir.join(&format!("{name}.pem"));
        std::fs::write(&path, &self.cert_pem).expect("write CA");
        path
    }

    /// A root store holding only this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("add CA to roots");
        roots
    }
}

impl Leaf {
    /// Writes `{name}.pem` (certificate) and `{name}.key` (key) in `dir`.
    pub fn write(&self, dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(&format!("{name}.pem"));
        let key = dir.join(&format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    /// The certificate as a one-element chain.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.der.clone()]
    }

    /// The private key.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// Replaces `path` with `contents` the way certificate tools do: write a temp file, then rename.
pub fn replace_file(path: &std::path::Path, contents: &str) {
    let temp = path.with_extension(format!(
        "tmp-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::write(&temp, contents).expect("write temp file");
    std::fs::rename(&temp, path).expect("rename over the file");
}

/// The DNS names in the subjectAltName of `cert`.
pub fn san_dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).expect("parse cert");
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    names
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// How a test client checks the server's certificate.
#[derive(Clone)]
pub enum Trust {
    /// Verify the chain and the name against these roots.
    Roots(Arc<RootCertStore>),
    /// Accept any certificate (the test inspects it afterwards).
    Anything,
}

/// A client config with `trust`, offering `alpn`, presenting `identity` if given.
pub fn client_config(trust: &Trust, alpn: &[&[u8]], identity: Option<&Leaf>) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("client protocol versions");
    let builder = match trust {
        Trust::Roots(roots) => builder.with_root_certificates(roots.clone()),
        Trust::Anything => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything)),
    };
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(leaf.chain(), leaf.key())
            .expect("client identity"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// What a client learned from a completed handshake.
#[derive(Debug, Clone)]
pub struct HandshakeFacts {
    /// The server's leaf certificate.
    pub peer_leaf: Option<CertificateDer<'static>>,
    /// The protocol agreed by ALPN.
    pub alpn: Option<Vec<u8>>,
    /// The TLS version agreed.
    pub version: Option<rustls::ProtocolVersion>,
}

/// Opens TCP to `addr` and runs a TLS handshake sending `sni` (`None`: no SNI at all).
pub async fn tls_connect(
    addr: SocketAddr,
    sni: Option<&str>,
    config: Arc<ClientConfig>,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, HandshakeFacts), String> {
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_owned()).expect("valid SNI name"),
        // rustls never sends an IP address as SNI.
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let attempt = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))
    };
    let stream = tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .map_err(|_| "TLS handshake did not finish within 20 s".to_owned())??;
    let (_, connection) = stream.get_ref();
    let facts = HandshakeFacts {
        peer_leaf: connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .cloned(),
        alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
        version: connection.protocol_version(),
    };
    Ok((stream, facts))
}

/// The server certificate a client sending `sni` gets (any certificate accepted).
pub async fn presented_certificate(
    addr: SocketAddr,
    sni: Option<&str>,
) -> Result<CertificateDer<'static>, String> {
    let config = Arc::new(client_config(&Trust::Anything, &[b"http/1.1"], None));
    let (_, facts) = tls_connect(addr, sni, config).await?;
    facts
        .peer_leaf
        .ok_or_else(|| "no server certificate".to_owned())
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// A response read in full.
#[derive(Debug)]
pub struct FullResponse {
    /// Status code.
    pub status: u16,
    /// HTTP version of the response.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl FullResponse {
    /// Header `name` as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is text").to_owned())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP connection over TLS: HTTP/2 when ALPN agreed `h2`, HTTP/1.1 otherwise.
pub struct TlsHttp {
    sender: Sender,
    /// What the handshake gave.
    pub facts: HandshakeFacts,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsHttp {
    /// Connects, handshakes TLS with `sni` and then HTTP according to ALPN.
    pub async fn open(
        addr: SocketAddr,
        sni: Option<&str>,
        config: Arc<ClientConfig>,
    ) -> Result<TlsHttp, String> {
        let (stream, facts) = tls_connect(addr, sni, config).await?;
        let io = TokioIo::new(stream);
        let (sender, task) = if facts.alpn.as_deref() == Some(b"h2") {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
            (
                Sender::H2(sender),
                tokio::spawn(async move {
                    let _ = connection.await;
                }),
            )
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("http1 handshake: {e}"))?;
            (
                Sender::H1(sender),
                tokio::spawn(async move {
                    let _ = connection.await;
                }),
            )
        };
        Ok(TlsHttp {
            sender,
            facts,
            task,
        })
    }

    /// GET `path` with `Host`/`:authority` `host` and extra `headers`; the whole response.
    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<FullResponse, String> {
        let attempt = async {
            let response = match &mut self.sender {
                Sender::H1(sender) => {
                    let mut builder = Request::get(path).header("host", host);
                    for (name, value) in headers {
                        builder = builder.header(*name, *value);
                    }
                    let request = builder.body(Full::new(Bytes::new())).expect("request");
                    sender
                        .ready()
                        .await
                        .map_err(|e| format!("connection not ready: {e}"))?;
                    sender
                        .send_request(request)
                        .await
                        .map_err(|e| format!("request failed: {e}"))?
                }
                Sender::H2(sender) => {
                    let mut builder = Request::get(format!("https://{host}{path}"));
                    for (name, value) in headers {
                        builder = builder.header(*name, *value);
                    }
                    let request = builder.body(Full::new(Bytes::new())).expect("request");
                    sender
                        .ready()
                        .await
                        .map_err(|e| format!("connection not ready: {e}"))?;
                    sender
                        .send_request(request)
                        .await
                        .map_err(|e| format!("request failed: {e}"))?
                }
            };
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("response body: {e}"))?
                .to_bytes();
            Ok(FullResponse {
                status: parts.status.as_u16(),
                version: parts.version,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(20), attempt)
            .await
            .map_err(|_| "no response within 20 s".to_owned())?
    }
}

/// One request on a fresh connection.
pub async fn tls_get(
    addr: SocketAddr,
    sni: Option<&str>,
    config: Arc<ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<FullResponse, String> {
    let host = sni.unwrap_or("localhost");
    TlsHttp::open(addr, sni, config)
        .await?
        .get(host, path, headers)
        .await
}

/// Accepts any server certificate; only for tests that inspect the certificate themselves.
#[derive(Debug)]
struct AcceptAnything;

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// A TLS origin
// ---------------------------------------------------------------------------------------------

/// What a TLS origin saw of one request, and of the connection it came on.
#[derive(Debug, Clone)]
pub struct TlsSeen {
    /// SNI the client (the proxy) sent.
    pub sni: Option<String>,
    /// Protocol agreed by ALPN.
    pub alpn: Option<Vec<u8>>,
    /// The client certificate the proxy presented, if any.
    pub client_cert: Option<CertificateDer<'static>>,
    /// The cipher suite agreed (the origin follows the client's order, rustls's default).
    pub suite: Option<rustls::CipherSuite>,
    /// HTTP version of the request.
    pub version: Version,
    /// Request headers.
    pub headers: HeaderMap,
}

/// An HTTP/1.1 + HTTP/2 origin behind TLS, answering 200 `tls-origin` to everything.
pub struct TlsOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received.
    pub seen: Arc<Mutex<Vec<TlsSeen>>>,
    /// Handshakes that failed.
    pub failed_handshakes: Arc<AtomicUsize>,
    /// Handshakes that succeeded (one per connection).
    pub handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server config for a test origin presenting `leaf`, offering ALPN h2 and http/1.1, and
/// requiring a client certificate signed by `client_ca` when given.
pub fn origin_config(leaf: &Leaf, client_ca: Option<&TestCa>) -> ServerConfig {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("server protocol versions");
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider())
                .build()
                .expect("client verifier"),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(leaf.chain(), leaf.key())
        .expect("origin certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

impl TlsOrigin {
    /// Starts an origin with `config` on an ephemeral loopback port.
    pub async fn start(config: ServerConfig) -> TlsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let task = {
            let (seen, failed) = (seen.clone(), failed_handshakes.clone());
            let handshaken = handshakes.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, seen, failed) = (acceptor.clone(), seen.clone(), failed.clone());
                    let handshaken = handshaken.clone();
                    tokio::spawn(async move {
                        let accepted =
                            tokio::time::timeout(Duration::from_secs(20), acceptor.accept(tcp))
                                .await;
                        let Ok(Ok(stream)) = accepted else {
                            failed.fetch_add(1, Ordering::SeqCst);
                            return;
                        };
                        handshaken.fetch_add(1, Ordering::SeqCst);
                        let (_, connection) = stream.get_ref();
                        let sni = connection.server_name().map(str::to_owned);
                        let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
                        let client_cert = connection
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .cloned();
                        let suite = connection.negotiated_cipher_suite().map(|s| s.suite());
                        let service = service_fn(move |request: Request<Incoming>| {
                            seen.lock().expect("seen lock").push(TlsSeen {
                                sni: sni.clone(),
                                alpn: alpn.clone(),
                                client_cert: client_cert.clone(),
                                suite,
                                version: request.version(),
                                headers: request.headers().clone(),
                            });
                            async move { Ok::<_, Infallible>(super::text(200, "tls-origin")) }
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        TlsOrigin {
            addr,
            seen,
            failed_handshakes,
            handshakes,
            task,
        }
    }

    /// The last request seen.
    pub fn last(&self) -> TlsSeen {
        self.seen
            .lock()
            .expect("seen lock")
            .last()
            .cloned()
            .expect("origin saw a request")
    }

    /// Number of requests seen.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("seen lock").len()
    }
}
