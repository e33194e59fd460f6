//! Diagnostic logging through `tracing`, to stderr, as text or JSON.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber; `RUST_LOG` overrides the configured level.
/// Calling it twice is harmless (the second call is ignored).
pub fn init(settings: &LogSettings) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|wanted| EnvFilter::try_new(quiet_tls(&wanted)).ok())
        .or_else(|| EnvFilter::try_new(quiet_tls(&settings.level)).ok())
        .unwrap_or_else(|| EnvFilter::new(quiet_tls("info")));
    // Colour codes only for a person at a terminal, never into a journal or a file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = subscriber(settings.format, filter, ansi, std::io::stderr).try_init();
}

/// The subscriber [`init`] installs, writing each event to `writer`.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    match format {
        LogFormat::Json => Box::new(builder.json().finish()),
        LogFormat::Text => Box::new(builder.finish()),
    }
}

/// `filter` with rustls held to errors, unless the filter names rustls itself.
///
/// rustls reports a peer's protocol mistakes with `warn!` on every connection — an IP address sent
/// as SNI, which wrk and other clients do on each handshake, is one line per connection — so any
/// client could fill the log at will. Gatehouse logs failed handshakes itself (`debug`) and counts
/// them (`gatehouse_tls_handshake_failures_total`).
///
/// The directives are passed on without the whitespace around them: tracing-subscriber 0.3 reads
/// a directive that starts with whitespace at the wrong offsets, so `info, gatehouse=debug` was
/// refused (and the configured filter silently replaced), ` info` read as a target, and a
/// multi-byte character after the space (` ঽ[`) panicked.
fn quiet_tls(filter: &str) -> String {
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    // A directive names rustls when its target is `rustls` or a module of it; `tokio_rustls`
    // and `hyper_rustls` are other crates.
    let names_rustls = directives.iter().any(|directive| {
        let target = directive.split(['=', '[']).next().unwrap_or("").trim();
        target == "rustls" || target.starts_with("rustls::")
    });
    let filter = directives.join(",");
    if names_rustls {
        filter
    } else if filter.is_empty() {
        "rustls=error".to_owned()
    } else {
        format!("{filter},rustls=error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_is_held_to_errors_unless_named() {
        assert_eq!(quiet_tls("info"), "info,rustls=error");
        assert_eq!(
            quiet_tls("gatehouse=debug,warn"),
            "gatehouse=debug,warn,rustls=error"
        );
        assert_eq!(quiet_tls(""), "rustls=error");
        assert_eq!(quiet_tls("debug,rustls=trace"), "debug,rustls=trace");
        for filter in ["info", "gatehouse=debug,warn", "", "debug,rustls=trace"] {
            assert!(EnvFilter::try_new(quiet_tls(filter)).is_ok(), "{filter}");
        }
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use std::sync::{Arc, Mutex};

        /// What a subscriber wrote.
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);

        impl std::io::Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }

            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        impl Capture {
            fn text(&self) -> String {
                String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
                    .into_owned()
            }
        }

        /// Runs `log` under the subscriber `init` would install (no colours), returning what
        /// it wrote.
        fn logged(format: LogFormat, filter: &str, log: impl FnOnce()) -> String {
            let capture = Capture::default();
            let writer = capture.clone();
            let filter = EnvFilter::try_new(filter).expect("a valid filter");
            tracing::subscriber::with_default(
                subscriber(format, filter, false, move || writer.clone()),
                log,
            );
            capture.text()
        }

        /// Text a client controls (a request path or host, which the proxy logs as a
        /// field): line breaks, quotes, backslashes, escape sequences, any characters.
        fn hostile() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                3 => "[ -~]{0,8}",
                3 => prop::sample::select(vec![
                    "\r", "\n", "\"", "\\", "\0", "\t", "\x1b[31m", "\u{85}", "\u{2028}", "=",
                    " level=ERROR", "\"}", "{\"",
                ])
                .prop_map(str::to_owned),
                1 => any::<String>(),
            ];
            vec(piece, 0..6).prop_map(|pieces| pieces.concat())
        }

        /// Undoes Rust's `{:?}` escapes of a string.
        fn unescape(s: &str) -> Option<String> {
            let mut out = String::new();
            let mut chars = s.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                out.push(match chars.next()? {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    '0' => '\0',
                    c @ ('\\' | '"' | '\'') => c,
                    'u' => {
                        if chars.next()? != '{' {
                            return None;
                        }
                        let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                        char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                    }
                    _ => return None,
                });
            }
            Some(out)
        }

        /// The quoted value of field `name` in a text line: up to the first unescaped quote.
        fn text_field(line: &str, name: &str) -> Option<String> {
            let start = line.find(&format!(" {name}=\""))? + name.len() + 3;
            let rest = &line[start..];
            let mut escaped = false;
            let end = rest.char_indices().find_map(|(i, c)| match c {
                '"' if !escaped => Some(i),
                '\\' if !escaped => {
                    escaped = true;
                    None
                }
                _ => {
                    escaped = false;
                    None
                }
            })?;
            unescape(&rest[..end])
        }

        /// A filter: directives with targets from a pool (rustls, crates whose names contain
        /// it, targets it starts with), levels or none, in any order, with or without spaces
        /// after the commas (`info, gatehouse=debug`) and around the whole.
        fn filter() -> impl Strategy<Value = String> {
            let target = prop::sample::select(vec![
                "",
                "gatehouse",
                "gatehouse::proxy",
                "hyper",
                "rustls",
                "rustls::server",
                "tokio_rustls",
                "hyper_rustls",
                "rust",
            ]);
            let level =
                prop::sample::select(vec!["", "trace", "debug", "info", "warn", "error", "off"]);
            let space = prop::sample::select(vec!["", "", " ", "\t "]);
            (vec((target, level, space.clone()), 0..4), space).prop_map(|(directives, end)| {
                let directives: Vec<String> = directives
                    .into_iter()
                    .map(|(target, level, space)| {
                        let directive = match (target, level) {
                            ("", "") => "info".to_owned(),
                            ("", level) => level.to_owned(),
                            (target, "") => target.to_owned(),
                            (target, level) => format!("{target}={level}"),
                        };
                        format!("{space}{directive}")
                    })
                    .collect();
                format!("{}{end}", directives.join(","))
            })
        }

        /// `filter`'s directives without the whitespace around them.
        fn trimmed(filter: &str) -> String {
            let directives: Vec<&str> = filter
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .collect();
            directives.join(",")
        }

        /// Whether a directive of `filter` is about rustls: its target is `rustls` or in it.
        fn names_rustls(filter: &str) -> bool {
            filter.split(',').any(|directive| {
                let target = directive.split(['=', '[']).next().unwrap_or("").trim();
                target == "rustls" || target.starts_with("rustls::")
            })
        }

        /// Regression: a directive after a comma and a space (`info, gatehouse=debug`) made
        /// the whole filter invalid, so `init` silently used the default instead; ` info` was
        /// read as a target (all but rustls errors silenced); ` ঽ[` panicked in
        /// tracing-subscriber's parser, so such a `[log] level` or `RUST_LOG` crashed start-up.
        #[test]
        fn whitespace_around_directives_is_dropped_before_tracing_reads_them() {
            assert_eq!(
                quiet_tls("info, gatehouse=debug"),
                "info,gatehouse=debug,rustls=error"
            );
            assert_eq!(quiet_tls(" info "), "info,rustls=error");
            assert_eq!(quiet_tls("warn, rustls=info"), "warn,rustls=info");
            assert!(EnvFilter::try_new(quiet_tls("info, gatehouse=debug")).is_ok());
            assert!(EnvFilter::try_new(quiet_tls(" ঽ[")).is_err());
            let out = logged(
                LogFormat::Text,
                &quiet_tls(" info, gatehouse=debug"),
                || {
                    tracing::debug!(target: "gatehouse::proxy", "debug shown");
                    tracing::info!(target: "hyper", "info shown");
                },
            );
            assert!(
                out.contains("debug shown") && out.contains("info shown"),
                "{out:?}"
            );
        }

        /// Regression: any filter containing "rustls" counted as naming it, so with
        /// `info,tokio_rustls=debug` (or `hyper_rustls`) rustls was not held to errors and a
        /// client could fill the log with a rustls warning per handshake (an IP sent as SNI).
        #[test]
        fn crates_named_like_rustls_do_not_count_as_naming_it() {
            assert_eq!(
                quiet_tls("info,tokio_rustls=debug"),
                "info,tokio_rustls=debug,rustls=error"
            );
            assert_eq!(
                quiet_tls("hyper_rustls=trace"),
                "hyper_rustls=trace,rustls=error"
            );
            assert_eq!(
                quiet_tls("info,rustls::server=warn"),
                "info,rustls::server=warn"
            );
            assert_eq!(quiet_tls("rustls"), "rustls");
            let out = logged(
                LogFormat::Text,
                &quiet_tls("info,tokio_rustls=debug"),
                || {
                    tracing::warn!(target: "rustls::server::hs", "client sent an IP as SNI");
                },
            );
            assert_eq!(out, "");
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Client-controlled text logged as a field stays on the event's one line: escaped
            /// in text (and read back from the escapes), a JSON string in JSON.
            #[test]
            fn fields_a_client_controls_stay_on_one_line(path in hostile(), host in hostile()) {
                for format in [LogFormat::Text, LogFormat::Json] {
                    let out = logged(format, "info", || {
                        tracing::warn!(
                            route = "api",
                            path = path.as_str(),
                            host = host.as_str(),
                            status = 502,
                            "upstream request failed"
                        );
                    });
                    let line = out.strip_suffix('\n');
                    prop_assert!(line.is_some(), "{:?}", out);
                    let line = line.unwrap_or_default();
                    prop_assert!(!line.contains(['\n', '\r']), "{:?}", out);
                    match format {
                        LogFormat::Text => {
                            let read = (text_field(line, "path"), text_field(line, "host"));
                            let sent = (Some(path.clone()), Some(host.clone()));
                            prop_assert_eq!(read, sent, "{:?}", line);
                        }
                        LogFormat::Json => {
                            let value: serde_json::Value = match serde_json::from_str(line) {
                                Ok(value) => value,
                                Err(e) => return Err(TestCaseError::fail(format!("{e}: {line:?}"))),
                            };
                            prop_assert_eq!(value["fields"]["path"].as_str(), Some(path.as_str()));
                            prop_assert_eq!(value["fields"]["host"].as_str(), Some(host.as_str()));
                            prop_assert_eq!(value["level"].as_str(), Some("WARN"));
                        }
                    }
                }
            }

            /// Any filter: `quiet_tls` gives its directives (trimmed) and, unless one names
            /// rustls, `rustls=error` after them; what it gives is refused or accepted by
            /// `EnvFilter`, never a panic, and accepted when the filter is well formed; under it
            /// rustls warnings are dropped and its errors kept, unless the filter names rustls.
            #[test]
            fn rustls_is_held_to_errors_unless_the_filter_names_it(
                (filter, well_formed) in prop_oneof![
                    3 => filter().prop_map(|f| (f, true)),
                    1 => any::<String>().prop_map(|f| (f, false)),
                ],
            ) {
                let quiet = quiet_tls(&filter);
                let expected = match trimmed(&filter) {
                    f if names_rustls(&f) => f,
                    f if f.is_empty() => "rustls=error".to_owned(),
                    f => format!("{f},rustls=error"),
                };
                prop_assert_eq!(&quiet, &expected);
                let parsed = EnvFilter::try_new(&quiet);
                prop_assert!(parsed.is_ok() || !well_formed, "{:?}: {:?}", quiet, parsed);
                if parsed.is_ok() && !names_rustls(&filter) {
                    let out = logged(LogFormat::Text, &quiet, || {
                        tracing::warn!(target: "rustls::server::hs", "client sent an IP as SNI");
                        tracing::error!(target: "rustls::conn", "rustls failed");
                    });
                    prop_assert!(!out.contains("as SNI"), "{:?} lets rustls warn", quiet);
                    prop_assert!(out.contains("rustls failed"), "{:?} drops rustls errors", quiet);
                }
            }
        }
    }
}
