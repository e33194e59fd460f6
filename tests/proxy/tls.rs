//! TLS end to end: termination on listeners (SNI with wildcards and a fallback, ALPN, protocol
//! versions, hot certificate reload, mutual TLS, handshake timeout, self-signed), HTTPS redirects
//! and HSTS, TLS towards backends (CA, server name, client certificates, the danger switch), and
//! `gatehouse check` on a broken TLS listener.
//!
//! Certificates are made per test by a test CA (rcgen) in a fresh temp dir; clients are rustls
//! with hyper's connection API, so each test sees the certificate, ALPN and version it got.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::DnType;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::tls::{
    Leaf, TestCa, TlsHttp, TlsOrigin, TlsSeen, Trust, client_config, origin_config,
    presented_certificate, replace_file, san_dns_names, tls_connect, tls_get, toml_path,
};
use crate::support::{
    BinaryProxy, Origin, Proxy, RawConn, TempDir, client, closed_within, single_pool_config,
};

/// A config whose only listener terminates TLS with `tls` (a TOML value), in front of pool `app`.
fn tls_listener_config(tls: &str, backends: &[SocketAddr], extra: &str) -> String {
    let text = single_pool_config(backends, extra);
    let listener = "[[listener]]\naddress = \"127.0.0.1:0\"\n";
    assert!(text.contains(listener));
    text.replacen(listener, &format!("{listener}tls = {tls}\n"), 1)
}

/// `{ cert = "...", key = "..." }` for files written by [`Leaf::write`].
fn cert_entry(files: &(std::path::PathBuf, std::path::PathBuf)) -> String {
    format!(
        "{{ cert = {}, key = {} }}",
        toml_path(&files.0),
        toml_path(&files.1)
    )
}

fn verifying(ca: &TestCa, alpn: &[&[u8]], identity: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    Arc::new(client_config(
        &Trust::Roots(Arc::new(ca.roots())),
        alpn,
        identity,
    ))
}

/// A proxy terminating TLS for `app.example.test` (a certificate from a fresh test CA) in
/// front of an echo origin; the fields keep the files and servers alive for the test.
struct AppOverTls {
    _dir: TempDir,
    ca: TestCa,
    /// The CA certificate's file, for `openssl s_client -CAfile`.
    ca_file: std::path::PathBuf,
    _origin: Origin,
    proxy: Proxy,
}

async fn app_over_tls(name: &str) -> AppOverTls {
    let dir = TempDir::new(name);
    let ca = TestCa::new("Gatehouse Test CA");
    let leaf = ca.server(&["app.example.test"]);
    let entry = cert_entry(&leaf.write(&dir, "app"));
    let ca_file = ca.write(&dir, "ca");
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&tls_listener_config(
        &format!("{{ certificates = [{entry}] }}"),
        &[origin.addr],
        "",
    ))
    .await;
    AppOverTls {
        _dir: dir,
        ca,
        ca_file,
        _origin: origin,
        proxy,
    }
}

const H1: &[&[u8]] = &[b"http/1.1"];
const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

// ---------------------------------------------------------------------------------------------
// 1. SNI
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name_with_one_label_wildcards() {
    let dir = TempDir::new("tls-sni");
    let ca = TestCa::new("Gatehouse Test CA");
    let a = ca.server(&["a.example.test"]);
    let b = ca.server(&["b.example.test"]);
    let wild = ca.server(&["*.example.test"]);
    let entries = [
        cert_entry(&a.write(&dir, "a")),
        cert_entry(&b.write(&dir, "b")),
        cert_entry(&wild.write(&dir, "wild")),
    ]
    .join(", ");
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&tls_listener_config(
        &format!("{{ certificates = [{entries}], unknown_sni = \"refuse\" }}"),
        &[origin.addr],
        "",
    ))
    .await;

    for (name, expected) in [
        ("a.example.test", &a),
        ("b.example.test", &b),
        ("shop.example.test", &wild),
    ] {
        let presented = presented_certificate(proxy.addr, Some(name))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            presented == expected.der,
            "{name}: got the certificate for {:?}",
            san_dns_names(&presented)
        );
        // A client that verifies the chain and the name is served too.
        let response = tls_get(proxy.addr, Some(name), verifying(&ca, H1, None), "/hi", &[])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(response.status, 200, "{name}");
        assert_eq!(response.text(), "/hi");
    }

    // A wildcard covers one label only; unknown names and clients without SNI are refused.
    for name in [Some("deep.shop.example.test"), Some("other.test"), None] {
        let result = presented_certificate(proxy.addr, name).await;
        assert!(
            result.is_err(),
            "{name:?} should be refused with unknown_sni = \"refuse\", got {:?}",
            result.map(|c| san_dns_names(&c))
        );
    }
    let response = tls_get(
        proxy.addr,
        Some("a.example.test"),
        verifying(&ca, H1, None),
        "/",
        &[],
    )
    .await
    .expect("refused handshakes do not hurt the listener");
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn unknown_names_get_the_first_certificate_by_default_or_with_first() {
    let dir = TempDir::new("tls-sni-first");
    let ca = TestCa::new("Gatehouse Test CA");
    let a = ca.server(&["a.example.test"]);
    let b = ca.server(&["b.example.test"]);
    let entries = format!(
        "{}, {}",
        cert_entry(&a.write(&dir, "a")),
        cert_entry(&b.write(&dir, "b"))
    );
    let origin = Origin::echo().await;
    for setting in ["", ", unknown_sni = \"first\""] {
        let proxy = Proxy::start(&tls_listener_config(
            &format!("{{ certificates = [{entries}]{setting} }}"),
            &[origin.addr],
            "",
        ))
        .await;
        for name in [Some("other.test"), Some("x.b.example.test"), None] {
            let presented = presented_certificate(proxy.addr, name)
                .await
                .unwrap_or_else(|e| panic!("{setting:?} {name:?}: {e}"));
            assert!(
                presented == a.der,
                "{setting:?} {name:?}: expected the first certificate, got {:?}",
                san_dns_names(&presented)
            );
        }
        let presented = presented_certificate(proxy.addr, Some("b.example.test"))
            .await
            .expect("b");
        assert!(presented == b.der, "known names still get their own");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. ALPN
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn alpn_negotiates_h2_or_http1_and_both_serve_requests() {
    let app = app_over_tls("tls-alpn").await;
    let (ca, proxy) = (&app.ca, &app.proxy);
    let host = "app.example.test";

    let mut h2 = TlsHttp::open(proxy.addr, Some(host), verifying(ca, H2_H1, None))
        .await
        .expect("h2 connection");
    assert_eq!(h2.facts.alpn.as_deref(), Some(&b"h2"[..]));
    for path in ["/one", "/two?x=1"] {
        let response = h2.get(host, path, &[]).await.expect("h2 request");
        assert_eq!(response.status, 200);
        assert_eq!(response.version, http::Version::HTTP_2);
        assert_eq!(response.text(), path);
    }

    let mut h1 = TlsHttp::open(proxy.addr, Some(host), verifying(ca, H1, None))
        .await
        .expect("http/1.1 connection");
    assert_eq!(h1.facts.alpn.as_deref(), Some(&b"http/1.1"[..]));
    for path in ["/three", "/four"] {
        let response = h1.get(host, path, &[]).await.expect("http/1.1 request");
        assert_eq!(response.status, 200);
        assert_eq!(response.version, http::Version::HTTP_11);
        assert_eq!(response.text(), path);
    }

    // A client that offers no ALPN at all speaks HTTP/1.1.
    let mut plain = TlsHttp::open(proxy.addr, Some(host), verifying(ca, &[], None))
        .await
        .expect("connection without ALPN");
    assert_eq!(plain.facts.alpn, None);
    let response = plain.get(host, "/five", &[]).await.expect("request");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "/five");
}

#[tokio::test]
async fn a_listener_without_http2_does_not_offer_h2() {
    let dir = TempDir::new("tls-alpn-h1");
    let ca = TestCa::new("Gatehouse Test CA");
    let leaf = ca.server(&["app.example.test"]);
    let entry = cert_entry(&leaf.write(&dir, "app"));
    let origin = Origin::echo().await;
    let config = tls_listener_config(
        &format!("{{ certificates = [{entry}] }}"),
        &[origin.addr],
        "",
    )
    .replacen(
        "address = \"127.0.0.1:0\"\n",
        "address = \"127.0.0.1:0\"\nhttp2 = false\n",
        1,
    );
    let proxy = Proxy::start(&config).await;
    let mut conn = TlsHttp::open(
        proxy.addr,
        Some("app.example.test"),
        verifying(&ca, H2_H1, None),
    )
    .await
    .expect("connection");
    assert_eq!(conn.facts.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let response = conn
        .get("app.example.test", "/x", &[])
        .await
        .expect("request");
    assert_eq!(response.version, http::Version::HTTP_11);
    assert_eq!(response.text(), "/x");
}

// ---------------------------------------------------------------------------------------------
// 3. Protocol versions, seen by OpenSSL
// ---------------------------------------------------------------------------------------------

/// Runs `openssl s_client` against `addr` with `args`, feeding it `input`; (success, output).
async fn s_client(addr: SocketAddr, args: &[&str], input: &str) -> (bool, String) {
    let available = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        available,
        "these tests need the `openssl` command-line tool (Debian package `openssl`); .ci/run installs it"
    );
    let mut child = tokio::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn openssl s_client");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("openssl s_client finished within 30 s")
        .expect("openssl s_client output");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn tls_1_0_and_1_1_are_refused_and_1_2_and_1_3_work() {
    let app = app_over_tls("tls-versions").await;
    let (ca_file, proxy) = (&app.ca_file, &app.proxy);

    for version in ["-tls1", "-tls1_1"] {
        // SECLEVEL=0 so that Debian's OpenSSL really offers the old protocol.
        let (ok, output) = s_client(
            proxy.addr,
            &[
                version,
                "-cipher",
                "DEFAULT@SECLEVEL=0",
                "-servername",
                "app.example.test",
            ],
            "",
        )
        .await;
        assert!(!ok, "{version}: handshake should fail:\n{output}");
        assert!(
            !output.contains("no protocols available"),
            "{version}: the client did not offer the protocol, so this proves nothing:\n{output}"
        );
        // rustls answers an old ClientHello with one fatal alert and nothing else: protocol_version,
        // or handshake_failure when it lacks the TLS 1.2 signature_algorithms extension (as
        // OpenSSL's TLS 1.0/1.1 hellos do). Either way no cipher was agreed.
        assert!(
            output.contains("SSL alert number")
                && (output.contains("alert protocol version")
                    || output.contains("alert handshake failure")),
            "{version}: the server should refuse with a fatal alert:\n{output}"
        );
        assert!(
            output.contains("Cipher is (NONE)") && output.contains("no peer certificate available"),
            "{version}: nothing may be negotiated:\n{output}"
        );
    }

    for (flag, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, output) = s_client(
            proxy.addr,
            &[
                flag,
                "-servername",
                "app.example.test",
                "-CAfile",
                ca_file.to_str().expect("utf-8 path"),
                "-verify_return_error",
                "-alpn",
                "http/1.1",
                "-ign_eof",
            ],
            "GET /v HTTP/1.1\r\nHost: app.example.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(ok, "{flag}: handshake should succeed:\n{output}");
        assert!(
            output.contains(&format!("New, {name}")),
            "{flag}: expected {name}:\n{output}"
        );
        assert!(
            output.contains("HTTP/1.1 200"),
            "{flag}: no response:\n{output}"
        );
    }
}

/// A verifying client that offers only `suites`, in that order, and TLS `versions`; sessions
/// are kept in `store` so that a second handshake can resume.
fn offering(
    ca: &TestCa,
    suites: &[rustls::SupportedCipherSuite],
    versions: &[&'static rustls::SupportedProtocolVersion],
    store: Arc<dyn rustls::client::ClientSessionStore>,
) -> Arc<rustls::ClientConfig> {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .expect("client protocol versions")
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::store(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn clients_get_aes_128_gcm_unless_they_prefer_chacha20_and_sessions_resume_either_way() {
    use rustls::CipherSuite as Suite;
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;

    let app = app_over_tls("tls-suites").await;
    let (ca, ca_file, proxy) = (&app.ca, &app.ca_file, &app.proxy);
    let host = "app.example.test";
    let aes = gatehouse::tls::aes_hardware();
    // Without AES instructions the client's order stands, whatever it is.
    let ours = |server: Suite, client_first: Suite| if aes { server } else { client_first };

    let tls13 = &[&rustls::version::TLS13];
    let tls12 = &[&rustls::version::TLS12];
    let cases: Vec<(
        &str,
        Vec<rustls::SupportedCipherSuite>,
        &[&'static rustls::SupportedProtocolVersion],
        Suite,
    )> = vec![
        (
            "TLS 1.3, AES-256 first (OpenSSL's order)",
            vec![
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_128_GCM_SHA256,
            ],
            tls13,
            ours(
                Suite::TLS13_AES_128_GCM_SHA256,
                Suite::TLS13_AES_256_GCM_SHA384,
            ),
        ),
        (
            "TLS 1.3, ChaCha20 first (a client without AES hardware)",
            vec![
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_AES_128_GCM_SHA256,
            ],
            tls13,
            Suite::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS 1.3, AES-256 only",
            vec![cs::TLS13_AES_256_GCM_SHA384],
            tls13,
            Suite::TLS13_AES_256_GCM_SHA384,
        ),
        (
            "TLS 1.2, AES-256 first",
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ],
            tls12,
            ours(
                Suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                Suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ),
        ),
        (
            "TLS 1.2, ChaCha20 first",
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ],
            tls12,
            Suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ];
    for (what, suites, versions, expected) in cases {
        let store = Arc::new(rustls::client::ClientSessionMemoryCache::new(8));
        let config = offering(ca, &suites, versions, store);
        for round in ["first", "second"] {
            let (stream, _) = tls_connect(proxy.addr, Some(host), config.clone())
                .await
                .unwrap_or_else(|e| panic!("{what}, {round} handshake: {e}"));
            let (_, connection) = stream.get_ref();
            let suite = connection.negotiated_cipher_suite().map(|s| s.suite());
            assert_eq!(suite, Some(expected), "{what}, {round} handshake");
            let kind = connection.handshake_kind();
            let expected_kind = if round == "first" {
                rustls::HandshakeKind::Full
            } else {
                rustls::HandshakeKind::Resumed
            };
            assert_eq!(kind, Some(expected_kind), "{what}, {round} handshake");
            // The connection serves requests.
            let mut stream = stream;
            let request =
                format!("GET /{round} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            stream
                .write_all(request.as_bytes())
                .await
                .expect("write request");
            let mut response = Vec::new();
            let _ = tokio::time::timeout(
                Duration::from_secs(20),
                tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response),
            )
            .await
            .expect("response within 20 s");
            let text = String::from_utf8_lossy(&response);
            assert!(text.starts_with("HTTP/1.1 200"), "{what}: {text}");
        }
    }

    // A real OpenSSL client with its default suite list, and one that puts ChaCha20 first.
    let base = [
        "-tls1_3",
        "-servername",
        host,
        "-CAfile",
        ca_file.to_str().expect("utf-8 path"),
        "-verify_return_error",
    ];
    let (ok, output) = s_client(proxy.addr, &base, "").await;
    assert!(
        ok,
        "OpenSSL's defaults: handshake should succeed:\n{output}"
    );
    let expected = if aes {
        "TLS_AES_128_GCM_SHA256"
    } else {
        "TLS_AES_256_GCM_SHA384"
    };
    assert!(
        output.contains(&format!("Cipher is {expected}")),
        "OpenSSL's defaults should get {expected}:\n{output}"
    );
    let mut chacha = base.to_vec();
    chacha.extend([
        "-ciphersuites",
        "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
    ]);
    let (ok, output) = s_client(proxy.addr, &chacha, "").await;
    assert!(ok, "ChaCha20 first: handshake should succeed:\n{output}");
    assert!(
        output.contains("Cipher is TLS_CHACHA20_POLY1305_SHA256"),
        "a client preferring ChaCha20 keeps it:\n{output}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Hot reload
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn certificates_reload_when_their_files_change_and_bad_files_keep_the_old_ones() {
    let dir = TempDir::new("tls-reload");
    let ca = TestCa::new("Gatehouse Test CA");
    let host = "app.example.test";
    let first = ca.server(&[host]);
    let second = ca.server(&[host]);
    assert!(first.der != second.der);
    let files = first.write(&dir, "app");
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&tls_listener_config(
        &format!("{{ certificates = [{}] }}", cert_entry(&files)),
        &[origin.addr],
        "",
    ))
    .await;

    let mut old = TlsHttp::open(proxy.addr, Some(host), verifying(&ca, H1, None))
        .await
        .expect("first connection");
    assert!(old.facts.peer_leaf.as_ref() == Some(&first.der));
    assert_eq!(
        old.get(host, "/before", &[]).await.expect("request").status,
        200
    );

    // Replace both files by rename, as certbot and friends do.
    replace_file(&files.0, &second.cert_pem);
    replace_file(&files.1, &second.key_pem);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let presented = presented_certificate(proxy.addr, Some(host))
            .await
            .expect("handshakes keep working during the reload");
        if presented == second.der {
            break;
        }
        assert!(
            presented == first.der,
            "neither the old nor the new certificate"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "new connections still get the old certificate 10 s after the files changed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = tls_get(
        proxy.addr,
        Some(host),
        verifying(&ca, H1, None),
        "/new",
        &[],
    )
    .await
    .expect("request on a new connection");
    assert_eq!(response.text(), "/new");
    let response = old
        .get(host, "/still", &[])
        .await
        .expect("the connection made before the reload keeps working");
    assert_eq!(response.text(), "/still");

    // Garbage: the reload fails and the certificates in use stay.
    replace_file(&files.0, "not a certificate\n");
    replace_file(&files.1, "not a key either\n");
    // Give the watcher (300 ms debounce) ample time to try, then check repeatedly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..5 {
        let presented = presented_certificate(proxy.addr, Some(host))
            .await
            .expect("handshakes still work after a failed reload");
        assert!(
            presented == second.der,
            "a failed reload must keep the last good certificate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let response = old
        .get(host, "/after-garbage", &[])
        .await
        .expect("old connection");
    assert_eq!(response.text(), "/after-garbage");

    // The watch survives the failure: good files are picked up again.
    replace_file(&files.0, &first.cert_pem);
    replace_file(&files.1, &first.key_pem);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while presented_certificate(proxy.addr, Some(host))
        .await
        .expect("handshake")
        != first.der
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "valid files written after a failed reload were not picked up within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A config for the proxy binary: one TLS listener at `addr` with certificate `entry`, all
/// requests to `origin`, no access log.
fn binary_tls_config(addr: SocketAddr, entry: &str, origin: SocketAddr) -> String {
    format!(
        "[access_log]\nenabled = false\n\n[[listener]]\naddress = \"{addr}\"\n\
         tls = {{ certificates = [{entry}] }}\n\n[pool.app]\nbackends = [\"{origin}\"]\n\n\
         [[route]]\npool = \"app\"\n"
    )
}

#[tokio::test]
async fn sighup_reloads_certificates_the_file_watch_cannot_see() {
    // The configured paths are symlinks into another directory. Replacing the files there makes
    // no event in the watched directory, so only SIGHUP can make the proxy notice.
    let watched = TempDir::new("tls-sighup-links");
    let real = TempDir::new("tls-sighup-files");
    let ca = TestCa::new("Gatehouse Test CA");
    let host = "app.example.test";
    let first = ca.server(&[host]);
    let second = ca.server(&[host]);
    let (real_cert, real_key) = first.write(&real, "app");
    let links = (watched.join("app.pem"), watched.join("app.key"));
    std::os::unix::fs::symlink(&real_cert, &links.0).expect("symlink cert");
    std::os::unix::fs::symlink(&real_key, &links.1).expect("symlink key");
    let origin = Origin::echo().await;
    let entry = cert_entry(&links);
    let mut proxy = BinaryProxy::start(|addr| binary_tls_config(addr, &entry, origin.addr)).await;
    let presented = presented_certificate(proxy.addr, Some(host))
        .await
        .expect("handshake");
    assert!(presented == first.der);

    replace_file(&real_cert, &second.cert_pem);
    replace_file(&real_key, &second.key_pem);
    // "listening" is logged before the SIGHUP handler is installed; leave it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            proxy.wait_exit(Duration::ZERO).await.is_none(),
            "SIGHUP must not stop the proxy:\n{}",
            proxy.stderr().join("\n")
        );
        let presented = presented_certificate(proxy.addr, Some(host))
            .await
            .expect("handshake after SIGHUP");
        if presented == second.der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still the old certificate 10 s after SIGHUP:\n{}",
            proxy.stderr().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = tls_get(
        proxy.addr,
        Some(host),
        verifying(&ca, H1, None),
        "/hup",
        &[],
    )
    .await
    .expect("request after the reload");
    assert_eq!(response.text(), "/hup");
}

// ---------------------------------------------------------------------------------------------
// 5. TLS to backends
// ---------------------------------------------------------------------------------------------

const PROTOCOLS: [&str; 2] = ["http1", "h2c"];

/// Pool `app` with `protocol` and `tls` (a TOML value) in front of `backend`, on a plain listener.
fn upstream_tls_config(backend: SocketAddr, protocol: &str, tls: &str) -> String {
    single_pool_config(&[backend], "").replacen(
        "[pool.app]\n",
        &format!("[pool.app]\nprotocol = \"{protocol}\"\ntls = {tls}\n"),
        1,
    )
}

async fn status_through(proxy: &Proxy) -> u16 {
    client()
        .get(proxy.url("/through"))
        .send()
        .await
        .expect("response from the proxy")
        .status()
        .as_u16()
}

/// Checks that the origin was spoken to with the pool's protocol: HTTP/2 agreed by ALPN `h2` for
/// `h2c` pools with TLS; HTTP/1.1 for `http1` pools, which may offer `http/1.1` or no ALPN at all
/// (hyper-rustls offers none when only HTTP/1.1 is enabled) but never `h2`.
fn assert_protocol(seen: &TlsSeen, protocol: &str) {
    match protocol {
        "h2c" => {
            assert_eq!(seen.version, http::Version::HTTP_2, "{protocol}");
            assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]), "{protocol}");
        }
        _ => {
            assert_eq!(seen.version, http::Version::HTTP_11, "{protocol}");
            assert!(
                matches!(seen.alpn.as_deref(), None | Some(b"http/1.1")),
                "{protocol}: ALPN {:?}",
                seen.alpn
            );
        }
    }
}

/// Gatehouse's own HTTP/1.1 exchange keeps TLS connections to backends too: a kept connection is
/// checked for use by polling it once, which must not mistake TLS records the backend sends after
/// the handshake (TLS 1.3 session tickets) for the end of the connection.
#[tokio::test]
async fn kept_tls_backend_connections_are_reused() {
    let dir = TempDir::new("tls-up-reuse");
    let ca = TestCa::new("Gatehouse Test CA");
    let origin_leaf = ca.server(&["127.0.0.1"]);
    let ca_file = ca.write(&dir, "ca");
    let origin = TlsOrigin::start(origin_config(&origin_leaf, None)).await;
    let proxy = Proxy::start(&upstream_tls_config(
        origin.addr,
        "http1",
        &format!("{{ ca = {} }}", toml_path(&ca_file)),
    ))
    .await;
    for round in 1..=3 {
        assert_eq!(status_through(&proxy).await, 200, "round {round}");
    }
    assert_eq!(origin.count(), 3);
    assert_eq!(
        origin.handshakes.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one TLS connection for three requests"
    );
}

#[tokio::test]
async fn backends_requiring_client_certificates_get_the_configured_one() {
    let dir = TempDir::new("tls-up-mtls");
    let ca = TestCa::new("Gatehouse Test CA");
    let origin_leaf = ca.server(&["127.0.0.1", "origin.test"]);
    let proxy_identity = ca.client("gatehouse");
    let ca_file = ca.write(&dir, "ca");
    let (cert, key) = proxy_identity.write(&dir, "client");
    let origin = TlsOrigin::start(origin_config(&origin_leaf, Some(&ca))).await;

    for protocol in PROTOCOLS {
        let before = origin.count();
        let proxy = Proxy::start(&upstream_tls_config(
            origin.addr,
            protocol,
            &format!(
                "{{ ca = {}, client_cert = {}, client_key = {} }}",
                toml_path(&ca_file),
                toml_path(&cert),
                toml_path(&key)
            ),
        ))
        .await;
        assert_eq!(status_through(&proxy).await, 200, "{protocol}");
        assert_eq!(
            status_through(&proxy).await,
            200,
            "{protocol}: second request"
        );
        assert_eq!(origin.count(), before + 2, "{protocol}");
        let seen = origin.last();
        assert!(
            seen.client_cert.as_ref() == Some(&proxy_identity.der),
            "{protocol}: the origin should see the configured client certificate"
        );
        assert_protocol(&seen, protocol);

        // Without a client certificate the backend refuses the handshake: 502.
        let before = origin.count();
        let proxy = Proxy::start(&upstream_tls_config(
            origin.addr,
            protocol,
            &format!("{{ ca = {} }}", toml_path(&ca_file)),
        ))
        .await;
        assert_eq!(
            status_through(&proxy).await,
            502,
            "{protocol}: no client cert"
        );
        assert_eq!(
            origin.count(),
            before,
            "{protocol}: nothing reached the origin"
        );
    }
}

#[tokio::test]
async fn backend_certificates_are_verified_against_the_pool_ca() {
    let dir = TempDir::new("tls-up-ca");
    let ca = TestCa::new("Gatehouse Test CA");
    let stranger = TestCa::new("Some Other CA");
    let origin_leaf = ca.server(&["127.0.0.1", "origin.test"]);
    let right = ca.write(&dir, "right");
    let wrong = stranger.write(&dir, "wrong");
    let origin = TlsOrigin::start(origin_config(&origin_leaf, None)).await;

    for protocol in PROTOCOLS {
        let proxy = Proxy::start(&upstream_tls_config(
            origin.addr,
            protocol,
            &format!("{{ ca = {} }}", toml_path(&right)),
        ))
        .await;
        assert_eq!(status_through(&proxy).await, 200, "{protocol}: right CA");
        assert_protocol(&origin.last(), protocol);

        let before = origin.count();
        let proxy = Proxy::start(&upstream_tls_config(
            origin.addr,
            protocol,
            &format!("{{ ca = {} }}", toml_path(&wrong)),
        ))
        .await;
        assert_eq!(status_through(&proxy).await, 502, "{protocol}: wrong CA");
        assert_eq!(
            origin.count(),
            before,
            "{protocol}: nothing reached the origin"
        );

        let proxy = Proxy::start(&upstream_tls_config(
            origin.addr,
            protocol,
            &format!(
                "{{ ca = {}, danger_accept_invalid_certs = true }}",
                toml_path(&wrong)
            ),
        ))
        .await;
        assert_eq!(
            status_through(&proxy).await,
            200,
            "{protocol}: danger_accept_invalid_certs"
        );
        assert_eq!(origin.count(), before + 1, "{protocol}");
    }
}

#[tokio::test]
async fn the_pool_server_name_is_sent_as_sni_and_verified() {
    let dir = TempDir::new("tls-up-name");
    let ca = TestCa::new("Gatehouse Test CA");
    // No IP address in this certificate: only the name override can make it verify.
    let origin_leaf = ca.server(&["origin.test"]);
    let ca_file = ca.write(&dir, "ca");
    let origin = TlsOrigin::start(origin_config(&origin_leaf, None)).await;

    for protocol in PROTOCOLS {
        let before = origin.count();
        let proxy = Proxy::start(&upstream_tls_config(
            origin.addr,
            protocol,
            &format!(
                "{{ ca = {}, server_name = \"origin.test\" }}",
                toml_path(&ca_file)
            ),
        ))
        .await;
        assert_eq!(status_through(&proxy).await, 200, "{protocol}: server_name");
        assert_eq!(origin.count(), before + 1);
        assert_eq!(
            origin.last().sni.as_deref(),
            Some("origin.test"),
            "{protocol}: the origin should see the server_name as SNI"
        );
        // The origin follows the client's suite order: Gatehouse offers AES-128-GCM first
        // on a machine with AES instructions, ChaCha20 first on one without.
        let expected = if gatehouse::tls::aes_hardware() {
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        } else {
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        };
        assert_eq!(
            origin.last().suite,
            Some(expected),
            "{protocol}: suite offered first"
        );

        for tls in [
            // The backend address is an IP the certificate does not cover.
            format!("{{ ca = {} }}", toml_path(&ca_file)),
            // A name the certificate does not cover.
            format!(
                "{{ ca = {}, server_name = \"other.test\" }}",
                toml_path(&ca_file)
            ),
        ] {
            let before = origin.count();
            let proxy = Proxy::start(&upstream_tls_config(origin.addr, protocol, &tls)).await;
            assert_eq!(status_through(&proxy).await, 502, "{protocol}: {tls}");
            assert_eq!(origin.count(), before, "{protocol}: {tls}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Mutual TLS on the listener
// ---------------------------------------------------------------------------------------------

fn subjects(origin: &Origin, header: &str) -> Vec<String> {
    origin
        .last()
        .headers
        .get_all(header)
        .iter()
        .map(|v| v.to_str().expect("text").to_owned())
        .collect()
}

#[tokio::test]
async fn required_client_certificates_are_checked_and_their_subject_forwarded() {
    let dir = TempDir::new("tls-mtls-required");
    let ca = TestCa::new("Gatehouse Test CA");
    let stranger = TestCa::new("Some Other CA");
    let host = "app.example.test";
    let entry = cert_entry(&ca.server(&[host]).write(&dir, "app"));
    let ca_file = ca.write(&dir, "ca");
    let good = ca.client("client");
    let foreign = stranger.client("client");
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&tls_listener_config(
        &format!(
            "{{ certificates = [{entry}], client_ca = {}, client_auth = \"required\" }}",
            toml_path(&ca_file)
        ),
        &[origin.addr],
        "",
    ))
    .await;

    for alpn in [H1, H2_H1] {
        let response = tls_get(
            proxy.addr,
            Some(host),
            verifying(&ca, alpn, Some(&good)),
            "/who",
            &[("x-client-subject", "CN=admin")],
        )
        .await
        .expect("a good client certificate is accepted");
        assert_eq!(response.status, 200);
        assert_eq!(
            subjects(&origin, "x-client-subject"),
            ["CN=client"],
            "the origin gets the verified subject, never the client's own header"
        );
    }

    let before = origin.count();
    for (what, identity) in [
        ("no certificate", None),
        ("a foreign certificate", Some(&foreign)),
    ] {
        // With TLS 1.3 the client may finish its side of the handshake before the server checks
        // the certificate; the refusal then shows up on the first request.
        let result = tls_get(
            proxy.addr,
            Some(host),
            verifying(&ca, H1, identity),
            "/who",
            &[],
        )
        .await;
        assert!(
            result.is_err(),
            "a client with {what} must be refused, got {:?}",
            result.map(|r| r.status)
        );
    }
    assert_eq!(origin.count(), before, "refused clients reach nothing");
}

#[tokio::test]
async fn optional_client_certificates_and_a_custom_subject_header() {
    let dir = TempDir::new("tls-mtls-optional");
    let ca = TestCa::new("Gatehouse Test CA");
    let host = "app.example.test";
    let entry = cert_entry(&ca.server(&[host]).write(&dir, "app"));
    let ca_file = ca.write(&dir, "ca");
    let good = ca.client("client");
    let origin = Origin::echo().await;
    for header in [None, Some("x-ssl-subject")] {
        let setting = header.map_or(String::new(), |h| {
            format!(", client_subject_header = \"{h}\"")
        });
        let name = header.unwrap_or("x-client-subject");
        let proxy = Proxy::start(&tls_listener_config(
            &format!(
                "{{ certificates = [{entry}], client_ca = {}, client_auth = \"optional\"{setting} }}",
                toml_path(&ca_file)
            ),
            &[origin.addr],
            "",
        ))
        .await;

        let response = tls_get(
            proxy.addr,
            Some(host),
            verifying(&ca, H1, None),
            "/anon",
            &[(name, "CN=admin")],
        )
        .await
        .expect("optional: a client without a certificate is served");
        assert_eq!(response.status, 200);
        assert_eq!(origin.last().uri.path(), "/anon");
        assert!(
            subjects(&origin, name).is_empty(),
            "{name}: a client-sent subject header must not pass"
        );

        let response = tls_get(
            proxy.addr,
            Some(host),
            verifying(&ca, H2_H1, Some(&good)),
            "/known",
            &[(name, "CN=admin")],
        )
        .await
        .expect("optional: a client with a certificate is served");
        assert_eq!(response.status, 200);
        assert_eq!(origin.last().uri.path(), "/known");
        assert_eq!(subjects(&origin, name), ["CN=client"], "{name}");
    }
}

#[tokio::test]
async fn client_subjects_are_rfc_4514_strings() {
    let dir = TempDir::new("tls-mtls-subject");
    let ca = TestCa::new("Gatehouse Test CA");
    let host = "app.example.test";
    let entry = cert_entry(&ca.server(&[host]).write(&dir, "app"));
    let ca_file = ca.write(&dir, "ca");
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&tls_listener_config(
        &format!(
            "{{ certificates = [{entry}], client_ca = {} }}",
            toml_path(&ca_file)
        ),
        &[origin.addr],
        "",
    ))
    .await;
    // RFC 4514: the last RDN of the encoding first, ',' between RDNs with no space, and
    // ',', '+', '"', '\\', '<', '>', ';' escaped so a value cannot pose as another attribute.
    for (subject, expected) in [
        (
            vec![
                (DnType::CountryName, "DE"),
                (DnType::OrganizationName, "Example"),
                (DnType::CommonName, "client"),
            ],
            "CN=client,O=Example,C=DE",
        ),
        (
            vec![
                (DnType::OrganizationName, "Example"),
                (DnType::CommonName, "mallory,O=Admins"),
            ],
            "CN=mallory\\,O=Admins,O=Example",
        ),
    ] {
        let identity = ca.client_with(&subject);
        let response = tls_get(
            proxy.addr,
            Some(host),
            verifying(&ca, H1, Some(&identity)),
            "/",
            &[],
        )
        .await
        .expect("request with a client certificate");
        assert_eq!(response.status, 200);
        assert_eq!(subjects(&origin, "x-client-subject"), [expected]);
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Handshake timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn clients_that_never_send_a_client_hello_are_disconnected() {
    let dir = TempDir::new("tls-handshake-timeout");
    let ca = TestCa::new("Gatehouse Test CA");
    let host = "app.example.test";
    let entry = cert_entry(&ca.server(&[host]).write(&dir, "app"));
    let origin = Origin::echo().await;
    // Client header and idle timeouts far away: only the handshake timeout can close the socket.
    let proxy = Proxy::start(&tls_listener_config(
        &format!("{{ certificates = [{entry}], handshake_timeout = \"500ms\" }}"),
        &[origin.addr],
        "[timeouts]\nclient_header = \"120s\"\nclient_idle = \"120s\"\n",
    ))
    .await;

    let mut silent: Vec<TcpStream> = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(proxy.addr).await.expect("connect"));
    }
    // While they sit there, others are served.
    let response = tls_get(
        proxy.addr,
        Some(host),
        verifying(&ca, H2_H1, None),
        "/busy",
        &[],
    )
    .await
    .expect("served while silent clients wait");
    assert_eq!(response.text(), "/busy");
    for (i, stream) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(8)).await,
            "silent client {i} should be disconnected by the 500 ms handshake timeout"
        );
    }
    let response = tls_get(
        proxy.addr,
        Some(host),
        verifying(&ca, H1, None),
        "/after",
        &[],
    )
    .await
    .expect("served after the timeouts");
    assert_eq!(response.text(), "/after");
}

// ---------------------------------------------------------------------------------------------
// 8. HTTPS redirect, HSTS, X-Forwarded-Proto
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn redirect_https_answers_308_to_the_same_url_over_https() {
    let origin = Origin::echo().await;
    for (setting, authority) in [
        ("redirect_https = true\n", "shop.example.test"),
        (
            "redirect_https = true\nhttps_port = 443\n",
            "shop.example.test",
        ),
        (
            "redirect_https = true\nhttps_port = 8443\n",
            "shop.example.test:8443",
        ),
    ] {
        let config = single_pool_config(&[origin.addr], "").replacen(
            "address = \"127.0.0.1:0\"\n",
            &format!("address = \"127.0.0.1:0\"\n{setting}"),
            1,
        );
        let proxy = Proxy::start(&config).await;
        let mut conn = RawConn::connect(proxy.addr).await;
        for (target, host) in [
            ("/a/b?x=1&y=2", "shop.example.test"),
            ("/", "shop.example.test:8080"),
            ("/p", "SHOP.Example.Test"),
        ] {
            conn.send(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
                .await;
            let response = conn.response().await;
            assert_eq!(response.status, 308, "{setting:?} {host} {target}");
            assert_eq!(
                response.header("location"),
                Some(format!("https://{authority}{target}").as_str()),
                "{setting:?} {host} {target}"
            );
        }
        assert_eq!(origin.count(), 0, "a redirecting listener proxies nothing");
    }
}

#[tokio::test]
async fn hsts_and_forwarded_proto_https_only_on_tls_listeners() {
    let dir = TempDir::new("tls-hsts");
    let ca = TestCa::new("Gatehouse Test CA");
    let host = "app.example.test";
    let entry = cert_entry(&ca.server(&[host]).write(&dir, "app"));
    let origin = Origin::echo().await;
    // Listener 0 plain, listener 1 TLS, one route with HSTS. (Two listeners on 127.0.0.1:0 are
    // refused as "the same address", hence 127.0.0.2, which is loopback too.)
    let config = format!(
        "[access_log]\nenabled = false\n\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\n\n\
         [[listener]]\naddress = \"127.0.0.2:0\"\ntls = {{ certificates = [{entry}] }}\n\n\
         [pool.app]\nbackends = [\"{}\"]\n\n\
         [[route]]\npool = \"app\"\nhsts = {{ max_age = \"1d\", include_subdomains = true }}\n",
        origin.addr
    );
    let proxy = Proxy::start(&config).await;
    let addresses = proxy
        .server
        .as_ref()
        .expect("running")
        .local_addrs()
        .to_vec();
    let (plain, secure) = (addresses[0].1, addresses[1].1);

    let response = client()
        .get(format!("http://{plain}/plain"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("plain request");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none(),
        "no HSTS over plain HTTP"
    );
    assert_eq!(
        origin
            .last()
            .headers
            .get("x-forwarded-proto")
            .map(|v| v.as_bytes()),
        Some(&b"http"[..])
    );

    for alpn in [H1, H2_H1] {
        let response = tls_get(
            secure,
            Some(host),
            verifying(&ca, alpn, None),
            "/secure",
            &[("x-forwarded-proto", "http")],
        )
        .await
        .expect("TLS request");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("strict-transport-security").as_deref(),
            Some("max-age=86400; includeSubDomains")
        );
        let seen = origin.last();
        assert_eq!(seen.uri.path(), "/secure");
        let proto: Vec<_> = seen.headers.get_all("x-forwarded-proto").iter().collect();
        assert_eq!(proto, ["https"], "the origin learns the client used TLS");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Self-signed
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_self_signed_listener_serves_clients_that_trust_its_certificate() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&tls_listener_config("\"self-signed\"", &[origin.addr], "")).await;

    let certificate = presented_certificate(proxy.addr, Some("localhost"))
        .await
        .expect("handshake");
    assert!(
        san_dns_names(&certificate).contains(&"localhost".to_owned()),
        "{:?}",
        san_dns_names(&certificate)
    );
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(certificate)
        .expect("trust the self-signed certificate");
    let trusting = Arc::new(client_config(&Trust::Roots(Arc::new(roots)), H2_H1, None));
    let response = tls_get(proxy.addr, Some("localhost"), trusting, "/self", &[])
        .await
        .expect("a client trusting the certificate is served");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "/self");

    // Clients that trust nothing in particular fail verification; skipping it works.
    let stranger = TestCa::new("Gatehouse Test CA");
    assert!(
        tls_connect(
            proxy.addr,
            Some("localhost"),
            verifying(&stranger, H1, None)
        )
        .await
        .is_err()
    );
    let response = tls_get(
        proxy.addr,
        Some("localhost"),
        Arc::new(client_config(&Trust::Anything, H1, None)),
        "/skip",
        &[],
    )
    .await
    .expect("a client skipping verification is served");
    assert_eq!(response.text(), "/skip");
}

// ---------------------------------------------------------------------------------------------
// 10. gatehouse check
// ---------------------------------------------------------------------------------------------

#[test]
fn check_reports_missing_certificate_files_at_the_listener_tls_key() {
    let dir = TempDir::new("tls-check");
    let missing = dir.join("missing.pem");
    let key = dir.join("missing.key");
    let text = format!(
        "[[listener]]\naddress = \"127.0.0.1:8443\"\ntls = {{ certificates = [{{ cert = {}, key = {} }}] }}\n\n\
         [pool.app]\nbackends = [\"127.0.0.1:9001\"]\n\n[[route]]\npool = \"app\"\n",
        toml_path(&missing),
        toml_path(&key)
    );
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, &text).expect("write config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run gatehouse check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "config should be refused:\n{stderr}"
    );
    let expected = format!("{}:3:7: error in `listener[0].tls`: ", path.display());
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&expected))
        .unwrap_or_else(|| panic!("no line starting with {expected:?} in:\n{stderr}"));
    assert!(
        line.contains(&missing.display().to_string()),
        "{line:?} should name the missing file"
    );

    // The same with a `[listener.tls]` table.
    let text = format!(
        "[[listener]]\naddress = \"127.0.0.1:8443\"\n\n[listener.tls]\ncertificates = [{{ cert = {}, key = {} }}]\n\n\
         [pool.app]\nbackends = [\"127.0.0.1:9001\"]\n\n[[route]]\npool = \"app\"\n",
        toml_path(&missing),
        toml_path(&key)
    );
    std::fs::write(&path, &text).expect("write config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run gatehouse check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "config should be refused:\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("error in `listener[0].tls`"))
        .unwrap_or_else(|| panic!("no error at listener[0].tls in:\n{stderr}"));
    assert!(
        line.starts_with(&format!("{}:", path.display())) && line.contains("missing.pem"),
        "{line:?}"
    );
}

#[tokio::test]
async fn a_subject_header_cannot_be_forged_through_a_plain_listener() {
    let dir = TempDir::new("tls-subject-forgery");
    let ca = TestCa::new("Gatehouse Test CA");
    let entry = cert_entry(&ca.server(&["app.example.test"]).write(&dir, "app"));
    let ca_file = ca.write(&dir, "ca");
    let origin = Origin::echo().await;
    // The mutual-TLS listener first, then a plain one on the same config.
    let config = format!(
        "{}\n[[listener]]\naddress = \"127.0.0.1:0\"\n",
        tls_listener_config(
            &format!(
                "{{ certificates = [{entry}], client_ca = {} }}",
                toml_path(&ca_file)
            ),
            &[origin.addr],
            "",
        )
    );
    let proxy = Proxy::start(&config).await;
    let plain = proxy.server.as_ref().expect("running").local_addrs()[1].1;
    let response = client()
        .get(format!("http://{plain}/forged"))
        .header("x-client-subject", "CN=admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(origin.last().uri.path(), "/forged");
    assert!(
        subjects(&origin, "x-client-subject").is_empty(),
        "a client-sent subject header never reaches the backend"
    );
}

#[tokio::test]
async fn a_new_client_ca_bundle_is_picked_up_without_a_restart() {
    // Rotating the CA that signs client certificates: the file is replaced, the watcher (or
    // SIGHUP) reloads it, and clients of the new CA get in while those of the old one no longer do.
    let dir = TempDir::new("tls-mtls-rotate");
    let old_ca = TestCa::new("Old Client CA");
    let new_ca = TestCa::new("New Client CA");
    let server_ca = TestCa::new("Gatehouse Test CA");
    let host = "app.example.test";
    let entry = cert_entry(&server_ca.server(&[host]).write(&dir, "app"));
    let ca_file = old_ca.write(&dir, "clients");
    let (old_client, new_client) = (old_ca.client("old"), new_ca.client("new"));
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&tls_listener_config(
        &format!(
            "{{ certificates = [{entry}], client_ca = {}, client_auth = \"required\" }}",
            toml_path(&ca_file)
        ),
        &[origin.addr],
        "",
    ))
    .await;
    let get = |identity| {
        tls_get(
            proxy.addr,
            Some(host),
            verifying(&server_ca, H1, Some(identity)),
            "/who",
            &[],
        )
    };
    assert!(
        get(&old_client).await.is_ok(),
        "the old CA's client is accepted"
    );
    assert!(
        get(&new_client).await.is_err(),
        "the new CA is not trusted yet"
    );

    new_ca.write(&dir, "clients");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut rotated = false;
    while tokio::time::Instant::now() < deadline {
        if get(&new_client).await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "the new client CA was not picked up within 10 s");
    assert!(
        get(&old_client).await.is_err(),
        "the old CA's clients are refused once it is replaced"
    );
    assert_eq!(
        subjects(&origin, "x-client-subject")
            .last()
            .map(String::as_str),
        Some("CN=new")
    );
}

#[tokio::test]
async fn clients_sending_an_ip_address_as_sni_do_not_fill_the_log() {
    // wrk and other clients send the address they connect to as SNI, which RFC 6066 forbids;
    // rustls ignores it and says so with a warning per handshake. Client input must not write a
    // log line per connection at the default level.
    let dir = TempDir::new("tls-ip-sni");
    let ca = TestCa::new("Gatehouse Test CA");
    let leaf = ca.server(&["app.example.test"]);
    let entry = cert_entry(&leaf.write(&dir, "app"));
    let origin = Origin::echo().await;
    let proxy = BinaryProxy::start(|addr| binary_tls_config(addr, &entry, origin.addr)).await;
    for _ in 0..3 {
        let (ok, output) = s_client(
            proxy.addr,
            &["-servername", "127.0.0.1", "-ign_eof"],
            "GET /ip-sni HTTP/1.1\r\nHost: app.example.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            ok && output.contains("HTTP/1.1 200") && output.contains("/ip-sni"),
            "the request was not served:\n{output}"
        );
    }
    // A warning would be on stderr within milliseconds of the handshake; give it two seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        let lines = proxy.stderr();
        let noisy: Vec<&String> = lines
            .iter()
            .filter(|line| line.contains("WARN") || line.contains("SNI"))
            .collect();
        assert!(noisy.is_empty(), "client input was logged: {noisy:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
