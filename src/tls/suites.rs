//! Which cipher suite a connection gets: AES-128-GCM, the cheapest strong suite on CPUs with AES
//! instructions, unless the client says it would rather have ChaCha20-Poly1305; and, towards
//! backends, which suites Gatehouse offers first as a client.
//!
//! rustls either follows the client's order or its own (`ignore_client_order`), one rule for
//! every client. Neither fits: OpenSSL-based clients (curl, wrk, most service clients) list
//! AES-256-GCM-SHA384 first, which costs a handshake, full or resumed, about 12 % more CPU than
//! AES-128-GCM-SHA256 (measured; SHA-384's transcript hash and key schedule, and on AMD CPUs
//! aws-lc's SHA-512 runs its portable code), and more per byte; while a client that lists ChaCha20 first is telling us it has no AES hardware and
//! must keep it. So the listener decides per ClientHello, as Go's crypto/tls does: when the
//! first suite the client offers that we support is an AES-GCM one (and this machine has AES
//! instructions), our order; otherwise the client's.

use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, SupportedCipherSuite};

/// The bulk cipher of a suite, as far as the choice cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Bulk {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20,
    Other,
}

fn bulk(suite: CipherSuite) -> Bulk {
    use CipherSuite::*;
    match suite {
        TLS13_AES_128_GCM_SHA256
        | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Bulk::Aes128Gcm,
        TLS13_AES_256_GCM_SHA384
        | TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Bulk::Aes256Gcm,
        TLS13_CHACHA20_POLY1305_SHA256
        | TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Bulk::ChaCha20,
        _ => Bulk::Other,
    }
}

/// `provider` with its cipher suites in our order: AES-128-GCM, then AES-256-GCM, then
/// ChaCha20-Poly1305 (suites of other ciphers last). The sort is stable, so each protocol
/// version and key type keeps its own relative order.
pub(super) fn in_server_order(mut provider: CryptoProvider) -> CryptoProvider {
    provider.cipher_suites.sort_by_key(|s| bulk(s.suite()));
    provider
}

/// `provider` with its cipher suites in the order Gatehouse offers them as a client (towards
/// backends): with AES instructions, our server order (AES-128-GCM first, as browsers and Go
/// offer; most servers follow the client's order, and rustls's default offers AES-256-GCM
/// first); without them ChaCha20-Poly1305 first, which a server following our order rule also
/// keeps.
pub(super) fn in_client_order(provider: CryptoProvider, aes_hardware: bool) -> CryptoProvider {
    let mut provider = in_server_order(provider);
    if !aes_hardware {
        provider
            .cipher_suites
            .sort_by_key(|s| bulk(s.suite()) != Bulk::ChaCha20);
    }
    provider
}

/// Whether a handshake whose client offered `offered` (in its order of preference) should get
/// our order rather than the client's. `supported` is what the listener can negotiate;
/// suites it cannot (GREASE values, the renegotiation SCSV, old ciphers) are passed over.
pub(super) fn prefer_server_order(
    offered: &[CipherSuite],
    supported: &[SupportedCipherSuite],
    aes_hardware: bool,
) -> bool {
    aes_hardware
        && offered
            .iter()
            .find(|s| supported.iter().any(|ours| ours.suite() == **s))
            .is_some_and(|first| matches!(bulk(*first), Bulk::Aes128Gcm | Bulk::Aes256Gcm))
}

/// Whether this CPU has the instructions that make AES-GCM fast (AES rounds and carry-less
/// multiplication); without them ChaCha20 is the faster suite and the client's order stands.
/// Cheap to call per handshake: std caches what the CPU reported.
pub fn aes_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CipherSuite::*;

    fn ours() -> Vec<SupportedCipherSuite> {
        in_server_order(crate::tls::crypto()).cipher_suites
    }

    #[test]
    fn our_order_puts_aes_128_first_within_each_version() {
        let names: Vec<CipherSuite> = ours().iter().map(|s| s.suite()).collect();
        let tls13: Vec<_> = names
            .iter()
            .filter(|s| format!("{s:?}").starts_with("TLS13_"))
            .copied()
            .collect();
        assert_eq!(
            tls13,
            [
                TLS13_AES_128_GCM_SHA256,
                TLS13_AES_256_GCM_SHA384,
                TLS13_CHACHA20_POLY1305_SHA256
            ]
        );
        let ecdsa: Vec<_> = names
            .iter()
            .filter(|s| format!("{s:?}").starts_with("TLS_ECDHE_ECDSA"))
            .copied()
            .collect();
        assert_eq!(
            ecdsa,
            [
                TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            ]
        );
        // Nothing is lost or added by the reordering.
        assert_eq!(names.len(), crate::tls::crypto().cipher_suites.len());
    }

    #[test]
    fn openssl_style_clients_get_our_order() {
        // OpenSSL 3's default TLS 1.3 list, then TLS 1.2 ones.
        let openssl = [
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ];
        assert!(prefer_server_order(&openssl, &ours(), true));
        // Only TLS 1.2 suites, AES first.
        assert!(prefer_server_order(
            &[
                TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            ],
            &ours(),
            true
        ));
    }

    #[test]
    fn clients_preferring_chacha20_keep_their_order() {
        let mobile = [
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
        ];
        assert!(!prefer_server_order(&mobile, &ours(), true));
        assert!(!prefer_server_order(
            &[TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256],
            &ours(),
            true
        ));
    }

    #[test]
    fn suites_we_cannot_negotiate_are_passed_over() {
        // A GREASE value, an old CBC suite and the renegotiation SCSV before ChaCha20: the
        // client's first usable preference is ChaCha20.
        let offered = [
            CipherSuite::Unknown(0x0a0a),
            TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
            TLS_EMPTY_RENEGOTIATION_INFO_SCSV,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
        ];
        assert!(!prefer_server_order(&offered, &ours(), true));
        // The same ahead of AES.
        let offered = [
            CipherSuite::Unknown(0x0a0a),
            TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ];
        assert!(prefer_server_order(&offered, &ours(), true));
        // Nothing usable: the client's order (the handshake fails either way).
        assert!(!prefer_server_order(
            &[TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA],
            &ours(),
            true
        ));
        assert!(!prefer_server_order(&[], &ours(), true));
    }

    #[test]
    fn as_a_client_we_offer_aes_128_first_or_chacha20_first_without_aes_hardware() {
        let tls13 = |aes: bool| -> Vec<CipherSuite> {
            in_client_order(crate::tls::crypto(), aes)
                .cipher_suites
                .iter()
                .map(|s| s.suite())
                .filter(|s| format!("{s:?}").starts_with("TLS13_"))
                .collect()
        };
        assert_eq!(
            tls13(true),
            [
                TLS13_AES_128_GCM_SHA256,
                TLS13_AES_256_GCM_SHA384,
                TLS13_CHACHA20_POLY1305_SHA256
            ]
        );
        assert_eq!(
            tls13(false),
            [
                TLS13_CHACHA20_POLY1305_SHA256,
                TLS13_AES_128_GCM_SHA256,
                TLS13_AES_256_GCM_SHA384
            ]
        );
        // Our own listener, given what we offer without AES hardware, keeps ChaCha20.
        let offered: Vec<CipherSuite> = in_client_order(crate::tls::crypto(), false)
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert!(!prefer_server_order(&offered, &ours(), true));
    }

    #[test]
    fn without_aes_hardware_the_client_order_stands() {
        assert!(!prefer_server_order(
            &[TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256],
            &ours(),
            false
        ));
    }
}
