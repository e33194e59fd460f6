//! Diagnostic logging through `tracing`, to stderr, as text or JSON.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber; `RUST_LOG` overrides the configured level.
/// Calling it twice is harmless (the second call is ignored).
pub fn init(settings: &LogSettings) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|wanted| EnvFilter::try_new(quiet_tls(&wanted)).ok())
        .or_else(|| EnvFilter::try_new(quiet_tls(&settings.level)).ok())
        .unwrap_or_else(|| EnvFilter::new(quiet_tls("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a journal or a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// `filter` with rustls held to errors, unless the filter names rustls itself.
///
/// rustls reports a peer's protocol mistakes with `warn!` on every connection — an IP address sent
/// as SNI, which wrk and other clients do on each handshake, is one line per connection — so any
/// client could fill the log at will. Gatehouse logs failed handshakes itself (`debug`) and counts
/// them (`gatehouse_tls_handshake_failures_total`).
fn quiet_tls(filter: &str) -> String {
    if filter.contains("rustls") {
        filter.to_owned()
    } else if filter.trim().is_empty() {
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
}
