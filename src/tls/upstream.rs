//! TLS towards backends: certificate verification against the system's roots or a given CA,
//! an optional client certificate (mutual TLS), and an explicit, loudly named escape hatch that
//! skips verification for tests. The suites are offered AES-128-GCM first (see `suites`).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{certs, crypto, provider, suites};
use crate::config::UpstreamTls;

/// Builds the client config for a pool; `alpn` lists the protocols to offer.
pub fn client_config(spec: &UpstreamTls, alpn: &[&[u8]]) -> Result<ClientConfig, String> {
    let offered = suites::in_client_order(crypto(), suites::aes_hardware());
    let builder = ClientConfig::builder_with_provider(Arc::new(offered))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if spec.danger_accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate))
    } else {
        builder.with_root_certificates(roots(spec.ca.as_deref())?)
    };
    let mut config = match (&spec.client_cert, &spec.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                certs::load_chain(cert.as_ref())?,
                certs::load_key(key.as_ref())?,
            )
            .map_err(|e| format!("client certificate {cert}: {e}"))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("client_cert and client_key go together".to_owned()),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn roots(ca: Option<&str>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in certs::load_chain(path.as_ref())? {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca {path}: unusable CA certificate: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no system CA certificates found; set `ca` on the pool's tls".to_owned(),
                );
            }
        }
    }
    Ok(roots)
}

/// Accepts any server certificate. Only reachable through `danger_accept_invalid_certs`.
#[derive(Debug)]
struct AcceptAnyCertificate;

impl ServerCertVerifier for AcceptAnyCertificate {
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
