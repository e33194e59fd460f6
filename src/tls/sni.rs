//! Certificate selection by SNI: exact names first, then one-label wildcards (`*.example.com`
//! covers `a.example.com`, not `a.b.example.com`, as in RFC 6125), then the configured fallback.
//!
//! rustls's own `ResolvesServerCertUsingSni` has no wildcards and no fallback, hence this type.
//! The table sits behind an `ArcSwap` so certificates can be replaced while handshakes run.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::dns_names;
use crate::config::UnknownSni;

/// Certificates indexed by the names they serve.
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*` (`.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    fallback: Option<Arc<CertifiedKey>>,
}

impl CertTable {
    /// Indexes `certificates` (earlier ones win a name both serve).
    pub fn new(certificates: &[Arc<CertifiedKey>], unknown_sni: UnknownSni) -> Self {
        let mut table = CertTable::default();
        for key in certificates {
            let Some(leaf) = key.cert.first() else {
                continue;
            };
            for name in dns_names(leaf) {
                match name.strip_prefix('*') {
                    Some(suffix) if suffix.starts_with('.') => {
                        table
                            .wildcard
                            .entry(suffix.to_owned())
                            .or_insert_with(|| key.clone());
                    }
                    _ => {
                        table.exact.entry(name).or_insert_with(|| key.clone());
                    }
                }
            }
        }
        if unknown_sni == UnknownSni::First {
            table.fallback = certificates.first().cloned();
        }
        table
    }

    /// The certificate for a client that sent `sni` (already lower-case, as rustls gives it).
    pub fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = sni else {
            return self.fallback.clone();
        };
        if let Some(key) = self.exact.get(name) {
            return Some(key.clone());
        }
        if let Some(dot) = name.find('.')
            && let Some(key) = self.wildcard.get(&name[dot..])
        {
            return Some(key.clone());
        }
        self.fallback.clone()
    }
}

/// Resolves the certificate for each handshake from a replaceable [`CertTable`].
#[derive(Debug)]
pub struct SniResolver {
    table: ArcSwap<CertTable>,
}

impl SniResolver {
    /// A resolver serving `table`.
    pub fn new(table: CertTable) -> Self {
        SniResolver {
            table: ArcSwap::from_pointee(table),
        }
    }

    /// Serves `table` from the next handshake on; connections already established are unaffected.
    pub fn replace(&self, table: CertTable) {
        self.table.store(Arc::new(table));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table.load().lookup(client_hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::self_signed;

    fn names(list: &[&str]) -> Arc<CertifiedKey> {
        self_signed(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_names_beat_wildcards_which_cover_one_label() {
        let apex = names(&["example.test", "www.example.test"]);
        let wild = names(&["*.example.test"]);
        let table = CertTable::new(&[wild.clone(), apex.clone()], UnknownSni::Refuse);
        assert!(Arc::ptr_eq(
            &table.lookup(Some("www.example.test")).unwrap(),
            &apex
        ));
        assert!(Arc::ptr_eq(
            &table.lookup(Some("example.test")).unwrap(),
            &apex
        ));
        assert!(Arc::ptr_eq(
            &table.lookup(Some("shop.example.test")).unwrap(),
            &wild
        ));
        assert!(
            table.lookup(Some("a.b.example.test")).is_none(),
            "one label only"
        );
        assert!(table.lookup(Some("other.test")).is_none());
        assert!(table.lookup(None).is_none());
    }

    #[test]
    fn unknown_names_get_the_first_certificate_when_configured() {
        let first = names(&["first.test"]);
        let second = names(&["second.test"]);
        let table = CertTable::new(&[first.clone(), second], UnknownSni::First);
        assert!(Arc::ptr_eq(&table.lookup(None).unwrap(), &first));
        assert!(Arc::ptr_eq(
            &table.lookup(Some("nobody.test")).unwrap(),
            &first
        ));
    }
}
