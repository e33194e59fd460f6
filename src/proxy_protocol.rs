//! The PROXY protocol (HAProxy's v1 text and v2 binary connection headers): reading the header
//! a load balancer puts before a client connection's bytes, and writing one for a backend.
//!
//! Parsing is the `ppp` crate's (no dependencies of its own, both versions, partial-input aware);
//! this module adds what a server needs around it: reading from a socket without consuming a
//! byte past the header (the TLS handshake or HTTP request that follows belongs to someone
//! else), a bound on the header's size, and one answer for "which client does this announce".
//!
//! Reading takes one `peek` and one exact `read` in the usual case (the whole header arrived in
//! one segment). A header split over segments is read exactly: v2 announces its length after 16
//! bytes; v1 is read a byte at a time up to its line end (at most 107 bytes), so nothing after
//! the header is ever taken from the socket.

use std::net::{IpAddr, SocketAddr};

use ppp::{v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest v1 header the specification allows, line end included.
pub const V1_MAX_LEN: usize = 107;

/// The longest v2 header accepted, the 16 fixed bytes included. The format allows 64 KiB of
/// addresses and TLVs; load balancers send well under 1 KiB, and a bound keeps a connection
/// that has not yet said who it is from costing more than this.
pub const V2_MAX_LEN: usize = 4096;

/// The 12 bytes every v2 header starts with.
const V2_SIGNATURE: &[u8] = v2::PROTOCOL_PREFIX;

/// Bytes looked at in the first `peek`: room for any v1 header and a v2 header with a few TLVs.
const PEEK_LEN: usize = 256;

/// Which client a PROXY header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// A TCP client (`PROXY TCP4/TCP6`, or v2 `PROXY` over IPv4/IPv6): where the client
    /// connected from, and the address it connected to.
    Client {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to (on the load balancer).
        destination: SocketAddr,
    },
    /// No client to speak of: v1 `UNKNOWN`, v2 `LOCAL` (the balancer's own health checks), or a
    /// v2 address family other than IPv4/IPv6 (unspecified, UNIX sockets). The TCP peer stays
    /// the client.
    Unknown,
}

/// The outcome of parsing the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `length` bytes.
    Complete {
        /// What it announces.
        announced: Announced,
        /// Its length in bytes (what follows it is not part of it).
        length: usize,
    },
    /// A valid beginning: at least `needed` more bytes are part of the header.
    Incomplete {
        /// Bytes still to read that certainly belong to the header (at least 1).
        needed: usize,
    },
    /// Not a PROXY header, or a malformed one; more bytes cannot fix it.
    Invalid(String),
}

/// Why no header could be read from a connection.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the connection before a whole header arrived.
    #[error("connection closed before a whole PROXY header")]
    Closed,
    /// Reading failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a valid PROXY header.
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
}

/// Parses the beginning of a connection: a v2 header (by its signature), a v1 header (by
/// `PROXY `), or neither.
pub fn parse(input: &[u8]) -> Parsed {
    let Some(&first) = input.first() else {
        return Parsed::Incomplete { needed: 1 };
    };
    match first {
        b'\r' => parse_v2(input),
        b'P' => parse_v1(input),
        _ => Parsed::Invalid("the connection does not start with a PROXY header".to_owned()),
    }
}

fn parse_v2(input: &[u8]) -> Parsed {
    let fixed = V2_SIGNATURE.len() + 4;
    match v2::Header::try_from(input) {
        Ok(header) if header.len() > V2_MAX_LEN => Parsed::Invalid(too_long(header.len())),
        Ok(header) => Parsed::Complete {
            announced: announced_v2(&header),
            length: header.len(),
        },
        Err(v2::ParseError::Incomplete(got)) => Parsed::Incomplete {
            needed: fixed.saturating_sub(got).max(1),
        },
        Err(v2::ParseError::Partial(got, length)) => {
            if fixed + length > V2_MAX_LEN {
                Parsed::Invalid(too_long(fixed + length))
            } else {
                Parsed::Incomplete {
                    needed: length.saturating_sub(got).max(1),
                }
            }
        }
        Err(error) => Parsed::Invalid(format!("v2: {}", one_line(&error))),
    }
}

fn too_long(length: usize) -> String {
    format!("v2 header of {length} bytes is over the {V2_MAX_LEN}-byte limit")
}

fn announced_v2(header: &v2::Header<'_>) -> Announced {
    if header.command == v2::Command::Local {
        return Announced::Unknown;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => Announced::Client {
            source: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
            destination: SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
        },
        v2::Addresses::IPv6(a) => Announced::Client {
            source: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
            destination: SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
        },
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => Announced::Unknown,
    }
}

fn parse_v1(input: &[u8]) -> Parsed {
    const PREFIX: &[u8] = b"PROXY ";
    let started = input.len().min(PREFIX.len());
    if input[..started] != PREFIX[..started] {
        return Parsed::Invalid("the connection does not start with a PROXY header".to_owned());
    }
    // The line is parsed whole: `ppp` judges some cut lines (one ending in a space) invalid
    // rather than incomplete, and a v1 line is short enough to wait for.
    let Some(end) = input.iter().position(|&b| b == b'\n') else {
        return if input.len() >= V1_MAX_LEN {
            Parsed::Invalid(format!("v1 header longer than {V1_MAX_LEN} bytes"))
        } else if input
            .iter()
            .any(|&b| b != b'\r' && !(b' '..=b'~').contains(&b))
        {
            Parsed::Invalid("v1 header with a byte that is not printable ASCII".to_owned())
        } else {
            Parsed::Incomplete { needed: 1 }
        };
    };
    let line = &input[..=end];
    if line.len() > V1_MAX_LEN {
        return Parsed::Invalid(format!("v1 header longer than {V1_MAX_LEN} bytes"));
    }
    let result = v1::Header::try_from(line);
    match result {
        Ok(header) => {
            let announced = match header.addresses {
                v1::Addresses::Tcp4(a) => Announced::Client {
                    source: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
                    destination: SocketAddr::new(
                        IpAddr::V4(a.destination_address),
                        a.destination_port,
                    ),
                },
                v1::Addresses::Tcp6(a) => Announced::Client {
                    source: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
                    destination: SocketAddr::new(
                        IpAddr::V6(a.destination_address),
                        a.destination_port,
                    ),
                },
                v1::Addresses::Unknown => Announced::Unknown,
            };
            Parsed::Complete {
                announced,
                length: header.header.len(),
            }
        }
        Err(error) => Parsed::Invalid(format!("v1: {}", one_line(&error))),
    }
}

/// Reads the PROXY header at the start of `stream`, leaving every byte after it unread.
///
/// Waits for as long as the peer takes: the caller bounds it with a timeout.
pub async fn read_header(stream: &mut TcpStream) -> Result<Announced, ReadError> {
    let mut peeked = [0u8; PEEK_LEN];
    let n = stream.peek(&mut peeked).await?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    let mut needed = match parse(&peeked[..n]) {
        Parsed::Complete { announced, length } => {
            // `length <= n`: the header is among the bytes peeked. Take exactly those.
            let take = peeked.get_mut(..length).ok_or(ReadError::Closed)?;
            stream.read_exact(take).await.map_err(closed_or_io)?;
            return Ok(announced);
        }
        Parsed::Invalid(why) => return Err(ReadError::Invalid(why)),
        Parsed::Incomplete { needed } => needed,
    };
    // Split over segments: every byte peeked is part of the header, and so are the `needed`
    // bytes after them, so reading exactly that much never takes a byte of what follows.
    let mut header = Vec::with_capacity(n + needed);
    header.extend_from_slice(&peeked[..n]);
    stream
        .read_exact(&mut peeked[..n])
        .await
        .map_err(closed_or_io)?;
    loop {
        if header.len() + needed > V2_MAX_LEN {
            return Err(ReadError::Invalid(too_long(header.len() + needed)));
        }
        let start = header.len();
        header.resize(start + needed, 0);
        stream
            .read_exact(&mut header[start..])
            .await
            .map_err(closed_or_io)?;
        match parse(&header) {
            Parsed::Complete { announced, .. } => return Ok(announced),
            Parsed::Invalid(why) => return Err(ReadError::Invalid(why)),
            Parsed::Incomplete { needed: more } => needed = more,
        }
    }
}

/// A parse error's words with control characters escaped: `ppp` puts a literal CRLF in some,
/// and the message goes to the log, where it must stay on one line.
fn one_line(error: &impl std::fmt::Display) -> String {
    error.to_string().escape_debug().to_string()
}

fn closed_or_io(error: std::io::Error) -> ReadError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        ReadError::Closed
    } else {
        ReadError::Io(error)
    }
}

/// The PROXY protocol version a pool sends to its backends.
pub use crate::config::ProxyProtocolVersion as Version;

/// The header announcing `client` (which connected to `local`), or with `None` a header that
/// announces no client (v1 `UNKNOWN`, v2 `LOCAL`), as health checks send.
pub fn encode(version: Version, addresses: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    // Both addresses must be of one family: an IPv4 one goes as IPv4-mapped IPv6 next to IPv6.
    let addresses = addresses.map(|(client, local)| match (client, local) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (client, local)
        }
        _ => (as_v6(client), as_v6(local)),
    });
    match version {
        Version::V1 => match addresses {
            None => b"PROXY UNKNOWN\r\n".to_vec(),
            Some((client, local)) => {
                let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
                format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    client.ip(),
                    local.ip(),
                    client.port(),
                    local.port()
                )
                .into_bytes()
            }
        },
        Version::V2 => {
            let built = match addresses {
                None => v2::Builder::new(
                    v2::Version::Two | v2::Command::Local,
                    v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
                )
                .build(),
                Some(pair) => v2::Builder::with_addresses(
                    v2::Version::Two | v2::Command::Proxy,
                    v2::Protocol::Stream,
                    pair,
                )
                .build(),
            };
            // Writing fixed-size fields into a Vec cannot fail; should it ever, LOCAL is the
            // header that claims nothing.
            built.unwrap_or_else(|_| {
                let mut local = V2_SIGNATURE.to_vec();
                local.extend_from_slice(&[0x20, 0x00, 0, 0]);
                local
            })
        }
    }
}

fn as_v6(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        v6 => v6,
    }
}

/// Fuzz entry (`fuzz/`, `--features fuzzing`): what [`read_header`] relies on, for any bytes: a
/// whole header lies within them, and a beginning never asks for more than the limit allows.
/// A header found must parse the same with anything after it.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_parse(data: &[u8]) {
    match parse(data) {
        Parsed::Complete { announced, length } => {
            assert!(length > 0 && length <= data.len() && length <= V2_MAX_LEN);
            assert_eq!(
                parse(&data[..length]),
                Parsed::Complete { announced, length },
                "a header is the same without what follows it"
            );
        }
        Parsed::Incomplete { needed } => {
            assert!(needed >= 1 && data.len() + needed <= V2_MAX_LEN + 1)
        }
        Parsed::Invalid(why) => assert!(!why.is_empty() && !why.chars().any(char::is_control)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn v2_ipv4(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.push(command);
        bytes.push(family);
        bytes.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    const IPV4_PAYLOAD: [u8; 12] = [192, 0, 2, 7, 10, 0, 0, 1, 0x30, 0x39, 0x01, 0xbb];

    #[test]
    fn v1_tcp4_tcp6_and_unknown_parse_with_their_length() {
        let text = b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(text),
            Parsed::Complete {
                announced: Announced::Client {
                    source: addr("192.0.2.7:12345"),
                    destination: addr("10.0.0.1:443"),
                },
                length: 41,
            }
        );
        let text = b"PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n";
        assert!(matches!(
            parse(text),
            Parsed::Complete { announced: Announced::Client { source, .. }, length: 40 }
                if source == addr("[2001:db8::7]:1")
        ));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\nrest"),
            Parsed::Complete {
                announced: Announced::Unknown,
                length: 15
            }
        );
    }

    #[test]
    fn v2_proxy_and_local_parse_with_their_length() {
        let mut bytes = v2_ipv4(0x21, 0x11, &IPV4_PAYLOAD);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&bytes),
            Parsed::Complete {
                announced: Announced::Client {
                    source: addr("192.0.2.7:12345"),
                    destination: addr("10.0.0.1:443"),
                },
                length: 28,
            }
        );
        // LOCAL: the balancer speaking for itself, whatever addresses follow.
        assert!(matches!(
            parse(&v2_ipv4(0x20, 0x11, &IPV4_PAYLOAD)),
            Parsed::Complete {
                announced: Announced::Unknown,
                length: 28
            }
        ));
        // TLVs after the addresses are part of the header and otherwise ignored.
        let mut with_tlv = IPV4_PAYLOAD.to_vec();
        with_tlv.extend_from_slice(&[0x04, 0x00, 0x02, b'h', b'i']);
        assert!(matches!(
            parse(&v2_ipv4(0x21, 0x11, &with_tlv)),
            Parsed::Complete { length: 33, .. }
        ));
    }

    #[test]
    fn truncated_headers_ask_for_more() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 443\r\n";
        for cut in 1..v1.len() {
            assert!(
                matches!(parse(&v1[..cut]), Parsed::Incomplete { .. }),
                "v1 cut at {cut}: {:?}",
                parse(&v1[..cut])
            );
        }
        let v2 = v2_ipv4(0x21, 0x11, &IPV4_PAYLOAD);
        for cut in 1..v2.len() {
            let Parsed::Incomplete { needed } = parse(&v2[..cut]) else {
                panic!("v2 cut at {cut}: {:?}", parse(&v2[..cut]));
            };
            assert!(cut + needed <= v2.len(), "never asks past the header");
        }
    }

    #[test]
    fn the_reason_a_header_is_refused_stays_on_one_line() {
        // ppp's words for this one hold a literal CRLF, which split the log line they went to.
        let Parsed::Invalid(why) = parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 x\n") else {
            panic!("invalid")
        };
        assert!(!why.chars().any(char::is_control), "{why:?}");
    }

    #[test]
    fn garbage_and_wrong_signatures_are_invalid_at_once() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"PROXZ TCP4 1.2.3.4 1.2.3.4 1 1\r\n",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 1\r\n",
            b"PROXY TCP4 1.2.3.999 1.2.3.4 1 1\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 1\r\n",
            b"PROXY TCP4 ::1 ::1 1 1\r\n",
            b"\r\n\r\n\0\r\nQUIX\n\x21\x11\0\x0c",
            b"\0\0\0\0",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
    }

    #[test]
    fn bad_v2_versions_commands_and_families_are_invalid() {
        // Version 1 in the binary format, an undefined command, an undefined family.
        for (command, family) in [(0x11, 0x11), (0x2f, 0x11), (0x21, 0x41), (0x21, 0x1f)] {
            assert!(
                matches!(
                    parse(&v2_ipv4(command, family, &IPV4_PAYLOAD)),
                    Parsed::Invalid(_)
                ),
                "{command:#x} {family:#x}"
            );
        }
        // A length too short for the family's addresses.
        assert!(matches!(
            parse(&v2_ipv4(0x21, 0x21, &IPV4_PAYLOAD)),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn over_long_headers_are_invalid() {
        let mut v1 = b"PROXY UNKNOWN ".to_vec();
        v1.resize(V1_MAX_LEN + 10, b'x');
        assert!(matches!(parse(&v1), Parsed::Invalid(_)));
        // A v2 header announcing 60 KiB is refused from its first 16 bytes.
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0xf0, 0x00]);
        assert!(matches!(parse(&v2), Parsed::Invalid(_)));
    }

    #[test]
    fn encoded_headers_parse_back() {
        let client = addr("192.0.2.7:12345");
        let local = addr("10.0.0.1:443");
        for version in [Version::V1, Version::V2] {
            let bytes = encode(version, Some((client, local)));
            assert!(
                matches!(
                    parse(&bytes),
                    Parsed::Complete { announced: Announced::Client { source, destination }, length }
                        if source == client && destination == local && length == bytes.len()
                ),
                "{version:?}"
            );
            let bytes = encode(version, None);
            assert_eq!(
                parse(&bytes),
                Parsed::Complete {
                    announced: Announced::Unknown,
                    length: bytes.len()
                }
            );
            // Mixed families go as IPv6.
            let bytes = encode(version, Some((client, addr("[::1]:443"))));
            assert!(matches!(
                parse(&bytes),
                Parsed::Complete { announced: Announced::Client { source, .. }, .. }
                    if source == addr("[::ffff:192.0.2.7]:12345")
            ));
        }
    }

    /// A loopback pair: what the client writes, the server side reads.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn reading_leaves_what_follows_the_header_unread() {
        use tokio::io::AsyncWriteExt;
        for version in [Version::V1, Version::V2] {
            let (mut client, mut server) = pair().await;
            let mut bytes = encode(version, Some((addr("192.0.2.7:1"), addr("127.0.0.1:2"))));
            bytes.extend_from_slice(b"after");
            client.write_all(&bytes).await.unwrap();
            let announced = read_header(&mut server).await.unwrap();
            assert!(
                matches!(announced, Announced::Client { source, .. } if source == addr("192.0.2.7:1"))
            );
            let mut rest = [0u8; 5];
            server.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"after");
        }
    }

    #[tokio::test]
    async fn a_header_split_over_writes_is_read_exactly() {
        use tokio::io::AsyncWriteExt;
        for version in [Version::V1, Version::V2] {
            let (mut client, mut server) = pair().await;
            let bytes = encode(version, Some((addr("192.0.2.7:1"), addr("127.0.0.1:2"))));
            let reader = tokio::spawn(async move {
                let announced = read_header(&mut server).await;
                let mut rest = [0u8; 4];
                server.read_exact(&mut rest).await.unwrap();
                (announced.unwrap(), rest)
            });
            for chunk in bytes.chunks(5) {
                client.write_all(chunk).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            client.write_all(b"next").await.unwrap();
            let (announced, rest) = reader.await.unwrap();
            assert!(matches!(announced, Announced::Client { .. }));
            assert_eq!(&rest, b"next");
        }
    }

    #[tokio::test]
    async fn a_peer_that_closes_early_or_sends_garbage_is_an_error() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = pair().await;
        client.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
        drop(client);
        assert!(matches!(
            read_header(&mut server).await,
            Err(ReadError::Closed)
        ));
        let (mut client, mut server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(
            read_header(&mut server).await,
            Err(ReadError::Invalid(_))
        ));
    }

    /// Random inputs against what `read_header` relies on: an answer for any bytes, and for a
    /// real header, `needed` never reaching past its end (reading exactly that much must never
    /// take a byte of the request that follows).
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        fn socket_address() -> impl Strategy<Value = SocketAddr> {
            prop_oneof![
                (any::<[u8; 4]>(), any::<u16>())
                    .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
                (any::<[u8; 16]>(), any::<u16>())
                    .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
            ]
        }

        fn version() -> impl Strategy<Value = Version> {
            prop_oneof![Just(Version::V1), Just(Version::V2)]
        }

        /// What `encode` announces for a pair: mixed families go as IPv6.
        fn announced(addresses: Option<(SocketAddr, SocketAddr)>) -> Announced {
            match addresses {
                None => Announced::Unknown,
                Some((client, local)) if client.is_ipv4() != local.is_ipv4() => Announced::Client {
                    source: as_v6(client),
                    destination: as_v6(local),
                },
                Some((source, destination)) => Announced::Client {
                    source,
                    destination,
                },
            }
        }

        /// The soundness every answer must have, whatever the input.
        fn assert_sound(input: &[u8], parsed: &Parsed) -> Result<(), TestCaseError> {
            match parsed {
                Parsed::Complete { length, .. } => {
                    prop_assert!(*length > 0 && *length <= input.len());
                    prop_assert!(*length <= V2_MAX_LEN);
                }
                Parsed::Incomplete { needed } => {
                    prop_assert!(*needed >= 1);
                    prop_assert!(input.len() + needed <= V2_MAX_LEN + 1);
                }
                // The words go to the log: one line, whatever the bytes.
                Parsed::Invalid(why) => {
                    prop_assert!(
                        !why.is_empty() && !why.chars().any(char::is_control),
                        "{:?}",
                        why
                    );
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_bytes_get_a_sound_answer(input in vec(any::<u8>(), 0..300)) {
                assert_sound(&input, &parse(&input))?;
            }

            /// Past the signatures, where the parsers' own checks start.
            #[test]
            fn any_bytes_after_a_signature_get_a_sound_answer(
                v2 in any::<bool>(),
                rest in vec(any::<u8>(), 0..300),
            ) {
                let mut input = if v2 { V2_SIGNATURE.to_vec() } else { b"PROXY ".to_vec() };
                input.extend_from_slice(&rest);
                assert_sound(&input, &parse(&input))?;
            }

            #[test]
            fn an_encoded_header_parses_back_whatever_follows(
                version in version(),
                addresses in proptest::option::of((socket_address(), socket_address())),
                after in vec(any::<u8>(), 0..64),
            ) {
                let header = encode(version, addresses);
                let mut input = header.clone();
                input.extend_from_slice(&after);
                prop_assert_eq!(
                    parse(&input),
                    Parsed::Complete { announced: announced(addresses), length: header.len() }
                );
            }

            #[test]
            fn every_cut_of_a_header_asks_only_for_bytes_of_the_header(
                version in version(),
                addresses in proptest::option::of((socket_address(), socket_address())),
            ) {
                let header = encode(version, addresses);
                for cut in 0..header.len() {
                    match parse(&header[..cut]) {
                        Parsed::Incomplete { needed } => prop_assert!(
                            needed >= 1 && cut + needed <= header.len(),
                            "cut at {} of {}: needs {}", cut, header.len(), needed
                        ),
                        other => prop_assert!(false, "cut at {}: {:?}", cut, other),
                    }
                }
            }
        }
    }
}
