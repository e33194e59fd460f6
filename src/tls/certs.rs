//! Certificates: PEM loading (RSA, ECDSA and Ed25519 keys), the DNS names a certificate serves,
//! subjects of client certificates, and self-signed certificates made at start-up.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::provider;

/// Reads a PEM certificate chain (leaf first).
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificate file {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
    }
    Ok(chain)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read private key {}: {e}", path.display()))
}

/// Loads a certificate chain and its key and checks that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain = load_chain(cert)?;
    let key = load_key(key)?;
    certified(chain, key).map_err(|e| format!("{}: {e}", cert.display()))
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, String> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("the private key does not match the certificate: {e}"))?;
    Ok(Arc::new(certified))
}

/// The DNS names a certificate is valid for: its subjectAltName DNS entries, or its common name
/// when it has none. Lower-case; wildcards kept as `*.example.com`.
pub fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty()
        && let Some(cn) = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
    {
        names.push(cn.to_ascii_lowercase());
    }
    names
}

/// The subject of a certificate as an RFC 4514 string (`CN=client,O=Example`).
pub fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(rfc4514(parsed.subject()))
}

/// RFC 4514 §2: the RDNs from the last to the first, joined by `,`; the attributes of a
/// multi-valued RDN joined by `+`; the short names of §3 for the types that have one, with the
/// value as escaped text; anything else as `dotted.oid=#hex` of the DER value. Characters outside
/// printable ASCII are escaped as `\XX` too, so the result is always a valid header value and one
/// certificate's value can never pose as another attribute.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    use x509_parser::asn1_rs::ToDer;
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type().to_id_string();
                    match (short_name(&oid), attribute.as_str()) {
                        (Some(short), Ok(value)) => format!("{short}={}", escape_value(value)),
                        _ => {
                            let der = attribute.attr_value().to_der_vec().unwrap_or_default();
                            let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
                            format!("{oid}=#{hex}")
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// The attribute type names of RFC 4514 §3.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 4514 §2.4 escaping of an attribute value.
fn escape_value(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    for (i, &byte) in bytes.iter().enumerate() {
        let special = matches!(byte, b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\')
            || (i == 0 && matches!(byte, b' ' | b'#'))
            || (i == bytes.len() - 1 && byte == b' ');
        if special {
            out.push('\\');
            out.push(byte as char);
        } else if byte.is_ascii_graphic() || byte == b' ' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("\\{byte:02X}"));
        }
    }
    out
}

/// A self-signed certificate for `names`, made now.
pub fn self_signed(names: &[String]) -> Result<Arc<CertifiedKey>, String> {
    let generated = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    let chain = vec![generated.cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    certified(chain, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificates_serve_their_names() {
        let key = self_signed(&["example.test".to_owned(), "*.example.test".to_owned()]).unwrap();
        assert_eq!(dns_names(&key.cert[0]), ["example.test", "*.example.test"]);
    }

    #[test]
    fn subjects_are_rfc_4514_strings() {
        let make = |attributes: &[(rcgen::DnType, &str)]| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            for (kind, value) in attributes {
                params.distinguished_name.push(kind.clone(), *value);
            }
            let key = rcgen::KeyPair::generate().unwrap();
            params.self_signed(&key).unwrap().der().clone()
        };
        use rcgen::DnType::*;
        assert_eq!(
            subject(&make(&[(CommonName, "client")])).unwrap(),
            "CN=client"
        );
        assert_eq!(
            subject(&make(&[
                (CountryName, "DE"),
                (OrganizationName, "Example"),
                (OrganizationalUnitName, "Ops"),
                (CommonName, "client"),
            ]))
            .unwrap(),
            "CN=client,OU=Ops,O=Example,C=DE"
        );
        assert_eq!(
            subject(&make(&[
                (OrganizationName, "Example"),
                (CommonName, "mallory,O=Admins"),
            ]))
            .unwrap(),
            "CN=mallory\\,O=Admins,O=Example"
        );
        assert_eq!(
            subject(&make(&[(CommonName, " #a+b;c<d>e\"q\\r\n ")])).unwrap(),
            "CN=\\ #a\\+b\\;c\\<d\\>e\\\"q\\\\r\\0A\\ "
        );
        assert_eq!(
            subject(&make(&[(CommonName, "Jörg")])).unwrap(),
            "CN=J\\C3\\B6rg"
        );
        assert_eq!(subject(&make(&[(CommonName, "#x#")])).unwrap(), "CN=\\#x#");
        // A type without an RFC 4514 name: dotted OID and the DER value in hex.
        let custom = rcgen::DnType::CustomDnType(vec![1, 2, 3, 4]);
        assert_eq!(
            subject(&make(&[(custom, "x"), (CommonName, "c")])).unwrap(),
            "CN=c,1.2.3.4=#0c0178"
        );
    }

    #[test]
    fn missing_and_garbage_files_are_clear_errors() {
        let error = load_pair(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .unwrap_err();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
        let dir = std::env::temp_dir().join(format!("gh-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let error = load_chain(&garbage).unwrap_err();
        // Removed before asserting, so that a failure leaves nothing behind either.
        let _ = std::fs::remove_dir_all(&dir);
        assert!(error.contains("no certificate"), "{error}");
    }
}
