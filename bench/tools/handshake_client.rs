//! Load client of bench/run.sh scenario 5c: full TLS 1.3 handshakes, one per request.
//!
//! `connections` loops each connect, make a **full** handshake (the client keeps no sessions,
//! so there is no resumption: certificate, X25519 exchange and the server's signature every
//! time), send `GET PATH` with `Connection: close`, read the response to its end, and start
//! over, until `seconds` have passed. wrk and h2load cannot do this (both resume the session
//! across their reconnects, which is what scenario 5b measures), and `openssl s_time -new` runs
//! one connection at a time and reports no latencies.
//!
//! ```text
//! handshake_client ADDRESS SERVER_NAME PATH CONNECTIONS SECONDS CERT_PEM [SUITE]
//! ```
//!
//! `SUITE` is `any` (the default: rustls's order, AES-256-GCM-SHA384 first as OpenSSL's clients
//! have it), `aes128` (only TLS_AES_128_GCM_SHA256, browsers' first choice) or `aes256` (only
//! TLS_AES_256_GCM_SHA384).
//!
//! The server's certificate must be the one in `CERT_PEM` (the run's self-signed certificate),
//! and its handshake signature is verified against it as any client would. Prints one line
//! `WRK_JSON {...}` with the fields `bench/tools/wrk_json.lua` prints, plus `handshakes` and
//! `resumed` (which must be 0).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, HandshakeKind, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// Bound on one connection's whole exchange.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Accepts exactly the run's certificate (pinned: it is self-signed and marked as a CA, which
/// WebPKI path building refuses as a server certificate) and verifies the handshake signature
/// with it, so the client does a real client's cryptographic work.
#[derive(Debug)]
struct PinnedCertificate {
    certificate: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What the loops counted.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    bytes: u64,
    resumed: u64,
    err_connect: u64,
    err_read: u64,
    err_status: u64,
    err_timeout: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = if args.len() == 7 || args.len() == 8 {
        run(&args[1..]).await
    } else {
        Err(
            "usage: handshake_client ADDRESS SERVER_NAME PATH CONNECTIONS SECONDS CERT_PEM [SUITE]"
                .into(),
        )
    };
    if let Err(error) = result {
        eprintln!("handshake_client: {error}");
        std::process::exit(2);
    }
}

async fn run(args: &[String]) -> Result<(), Failure> {
    let address: SocketAddr = args[0].parse()?;
    let server_name = ServerName::try_from(args[1].clone())?;
    let path = &args[2];
    let connections: usize = args[3].parse()?;
    let seconds: u64 = args[4].parse()?;
    let certificate = CertificateDer::from_pem_file(&args[5])?;

    // X25519 only, as wrk and h2load (OpenSSL 3.0) offer: a post-quantum hybrid share would make
    // the handshake dearer for the one proxy that speaks it.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    match args.get(6).map(String::as_str).unwrap_or("any") {
        "any" => {}
        "aes128" => {
            provider.cipher_suites =
                vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
        }
        "aes256" => {
            provider.cipher_suites =
                vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384];
        }
        other => return Err(format!("unknown suite {other:?} (any, aes128, aes256)").into()),
    }
    let algorithms = provider.signature_verification_algorithms;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
            certificate,
            algorithms,
        }))
        .with_no_client_auth();
    // No session kept, no ticket used: every handshake is a full one.
    config.resumption = rustls::client::Resumption::disabled();
    let connector = TlsConnector::from(Arc::new(config));
    let request: Arc<[u8]> = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        args[1]
    )
    .into_bytes()
    .into();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let request = request.clone();
        loops.spawn(async move {
            let mut tally = Tally::default();
            let mut response = Vec::with_capacity(4096);
            while Instant::now() < deadline {
                let began = Instant::now();
                response.clear();
                let outcome = tokio::time::timeout(
                    REQUEST_LIMIT,
                    exchange(&connector, address, &server_name, &request, &mut response),
                )
                .await;
                match outcome {
                    Err(_) => tally.err_timeout += 1,
                    Ok(Err(Stage::Connect)) => tally.err_connect += 1,
                    Ok(Err(Stage::Read)) => tally.err_read += 1,
                    Ok(Ok(kind)) => {
                        if kind == Some(HandshakeKind::Resumed) {
                            tally.resumed += 1;
                        }
                        if response.starts_with(b"HTTP/1.1 200 ") {
                            tally.latencies_us.push(began.elapsed().as_micros() as u64);
                            tally.bytes += response.len() as u64;
                        } else {
                            tally.err_status += 1;
                        }
                    }
                }
            }
            tally
        });
    }
    let mut all = Tally::default();
    while let Some(done) = loops.join_next().await {
        let tally = done?;
        all.latencies_us.extend(tally.latencies_us);
        all.bytes += tally.bytes;
        all.resumed += tally.resumed;
        all.err_connect += tally.err_connect;
        all.err_read += tally.err_read;
        all.err_status += tally.err_status;
        all.err_timeout += tally.err_timeout;
    }
    let duration_us = started.elapsed().as_micros();
    all.latencies_us.sort_unstable();
    let at = |q: f64| {
        let index = ((all.latencies_us.len() as f64 * q).ceil() as usize).saturating_sub(1);
        all.latencies_us.get(index).copied().unwrap_or(0)
    };
    let requests = all.latencies_us.len();
    let mean = if requests == 0 {
        0.0
    } else {
        all.latencies_us.iter().sum::<u64>() as f64 / requests as f64
    };
    println!(
        "WRK_JSON {{\"requests\":{requests},\"duration_us\":{duration_us},\"bytes\":{},\
         \"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{},\"mean_us\":{mean:.1},\
         \"err_connect\":{},\"err_read\":{},\"err_write\":0,\"err_status\":{},\"err_timeout\":{},\
         \"handshakes\":{requests},\"resumed\":{}}}",
        all.bytes,
        at(0.50),
        at(0.90),
        at(0.99),
        all.latencies_us.last().copied().unwrap_or(0),
        all.err_connect,
        all.err_read,
        all.err_status,
        all.err_timeout,
        all.resumed,
    );
    Ok(())
}

/// Where an exchange failed.
enum Stage {
    /// The TCP connection or the TLS handshake.
    Connect,
    /// Writing the request or reading the response.
    Read,
}

/// One connection: handshake, request, the whole response into `response`. Returns the kind of
/// handshake made.
async fn exchange(
    connector: &TlsConnector,
    address: SocketAddr,
    server_name: &ServerName<'static>,
    request: &[u8],
    response: &mut Vec<u8>,
) -> Result<Option<HandshakeKind>, Stage> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|_| Stage::Connect)?;
    tcp.set_nodelay(true).map_err(|_| Stage::Connect)?;
    let mut tls = connector
        .connect(server_name.clone(), tcp)
        .await
        .map_err(|_| Stage::Connect)?;
    let kind = tls.get_ref().1.handshake_kind();
    tls.write_all(request).await.map_err(|_| Stage::Read)?;
    // The server closes after the response (`Connection: close`); a missing close_notify is
    // not an error here, what was read is judged by its status line.
    match tls.read_to_end(response).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(_) => return Err(Stage::Read),
    }
    Ok(kind)
}
