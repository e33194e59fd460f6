//! The access log: one line per request, as text (combined-like) or JSON, to stdout or a file.
//!
//! Lines are formatted on the request's task and handed to a dedicated writer thread through a
//! bounded queue, so a slow disk never stalls a request. If the queue is full the line is dropped
//! and counted: losing a log line is better than adding latency to every request.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, StatusCode, Version};
use serde::Serialize;

use crate::body::BodyObserver;
use crate::config::{AccessLogSettings, LogFormat};

const QUEUE_LINES: usize = 16_384;

/// What the writer thread is asked to do.
enum Entry {
    Line(String),
    /// Reopen the file (after log rotation moved it away).
    Reopen,
}

/// Where access log lines go.
#[derive(Debug)]
pub struct AccessLog {
    sender: Option<SyncSender<Entry>>,
    format: LogFormat,
    dropped: Arc<AtomicU64>,
    settings: AccessLogSettings,
}

impl AccessLog {
    /// An access log that writes nothing.
    pub fn disabled() -> Self {
        AccessLog {
            sender: None,
            format: LogFormat::Text,
            dropped: Arc::new(AtomicU64::new(0)),
            settings: AccessLogSettings {
                enabled: false,
                ..AccessLogSettings::default()
            },
        }
    }

    /// The settings the log was opened with.
    pub fn settings(&self) -> &AccessLogSettings {
        &self.settings
    }

    /// Whether a response with `status` is logged: errors always, others as sampled.
    pub fn wants(&self, status: StatusCode) -> bool {
        self.sender.is_some()
            && (status.as_u16() >= 400
                || self.settings.sample >= 1.0
                || fastrand::f64() < self.settings.sample)
    }

    /// Asks the writer to reopen its file (SIGUSR1, after log rotation); a no-op for stdout.
    pub fn reopen(&self) {
        if let Some(sender) = &self.sender
            && sender.try_send(Entry::Reopen).is_err()
        {
            tracing::warn!("access log queue full; the log file was not reopened");
        }
    }

    /// Opens the log as `settings` say and starts its writer thread.
    pub fn open(settings: &AccessLogSettings) -> std::io::Result<Self> {
        if !settings.enabled {
            return Ok(Self::disabled());
        }
        let path = (settings.path != "-").then(|| std::path::PathBuf::from(&settings.path));
        let out = open_output(path.as_deref())?;
        let (sender, receiver) = mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || write_lines(receiver, out, path))?;
        Ok(AccessLog {
            sender: Some(sender),
            format: settings.format,
            dropped: Arc::new(AtomicU64::new(0)),
            settings: settings.clone(),
        })
    }

    /// True when lines are written at all; callers skip building records otherwise.
    pub fn is_enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, line: String) {
        if let Some(sender) = &self.sender
            && let Err(TrySendError::Full(_)) = sender.try_send(Entry::Line(line))
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn open_output(path: Option<&std::path::Path>) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match path {
        None => Box::new(std::io::stdout()),
        Some(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
    })
}

fn write_lines(
    receiver: Receiver<Entry>,
    out: Box<dyn Write + Send>,
    path: Option<std::path::PathBuf>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    while let Ok(entry) = receiver.recv() {
        let mut next = Some(entry);
        // Drain what is queued before flushing, so a burst costs one write.
        while let Some(entry) = next {
            match entry {
                Entry::Line(line) => {
                    let _ = out.write_all(line.as_bytes());
                }
                Entry::Reopen => {
                    let _ = out.flush();
                    match open_output(path.as_deref()) {
                        Ok(reopened) => out = BufWriter::with_capacity(64 * 1024, reopened),
                        // Keep writing to the old file rather than lose lines.
                        Err(error) => eprintln!("gatehouse: cannot reopen the access log: {error}"),
                    }
                }
            }
            next = receiver.try_recv().ok();
        }
        let _ = out.flush();
    }
}

/// What is known about one request when its response starts; completed by the response body.
#[derive(Debug)]
pub struct AccessRecord {
    /// The log to write to.
    pub log: Arc<AccessLog>,
    /// When the request head was received.
    pub started: Instant,
    /// Client address.
    pub client: SocketAddr,
    /// Request method.
    pub method: Method,
    /// Host the client asked for.
    pub host: String,
    /// Path and query as received.
    pub target: String,
    /// HTTP version from the client.
    pub version: Version,
    /// Response status.
    pub status: StatusCode,
    /// Route name, or `-`.
    pub route: Arc<str>,
    /// Backend address, or `-`.
    pub upstream: String,
    /// The request id.
    pub request_id: HeaderValue,
    /// `Referer`, or empty.
    pub referer: String,
    /// `User-Agent`, or empty.
    pub user_agent: String,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    client: String,
    method: &'a str,
    host: &'a str,
    target: &'a str,
    protocol: &'a str,
    status: u16,
    bytes: u64,
    duration_ms: f64,
    route: &'a str,
    upstream: &'a str,
    request_id: &'a str,
    referer: &'a str,
    user_agent: &'a str,
    complete: bool,
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

impl AccessRecord {
    /// Formats the line for `bytes` sent over `elapsed`.
    pub fn line(&self, bytes: u64, elapsed: Duration, complete: bool) -> String {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        // Written unquoted in the text format: only an id of the kind `headers::request_id`
        // keeps, so that no future source of ids can split or forge a line.
        let request_id = self
            .request_id
            .to_str()
            .ok()
            .filter(|id| crate::proxy::headers::is_kept_request_id(id.as_bytes()))
            .unwrap_or("-");
        match self.log.format {
            LogFormat::Json => {
                let line = JsonLine {
                    time,
                    client: self.client.ip().to_string(),
                    method: self.method.as_str(),
                    host: &self.host,
                    target: &self.target,
                    protocol: protocol(self.version),
                    status: self.status.as_u16(),
                    bytes,
                    duration_ms: elapsed.as_secs_f64() * 1000.0,
                    route: &self.route,
                    upstream: &self.upstream,
                    request_id,
                    referer: &self.referer,
                    user_agent: &self.user_agent,
                    complete,
                };
                let mut text = serde_json::to_string(&line).unwrap_or_default();
                text.push('\n');
                text
            }
            LogFormat::Text => format!(
                "{client} - - [{time}] \"{method} {target} {protocol}\" {status} {bytes} \"{referer}\" \"{agent}\" host={host:?} route={route:?} upstream={upstream:?} duration={secs:.6} id={request_id}{aborted}\n",
                client = self.client.ip(),
                method = self.method,
                target = escape(&self.target),
                protocol = protocol(self.version),
                status = self.status.as_u16(),
                referer = escape(&self.referer),
                agent = escape(&self.user_agent),
                host = self.host,
                route = &*self.route,
                upstream = self.upstream,
                secs = elapsed.as_secs_f64(),
                aborted = if complete { "" } else { " aborted" },
            ),
        }
    }
}

/// Makes client-controlled text safe inside a quoted log field.
fn escape(text: &str) -> String {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return text.to_owned();
    }
    text.escape_default().to_string()
}

impl BodyObserver for AccessRecord {
    fn finished(&mut self, bytes: u64, complete: bool) {
        let line = self.line(bytes, self.started.elapsed(), complete);
        self.log.send(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(format: LogFormat) -> AccessRecord {
        AccessRecord {
            log: Arc::new(AccessLog {
                sender: None,
                format,
                dropped: Arc::new(AtomicU64::new(0)),
                settings: AccessLogSettings::default(),
            }),
            started: Instant::now(),
            client: "192.0.2.7:5555".parse().unwrap(),
            method: Method::GET,
            host: "example.com".into(),
            target: "/a?\"b\"".into(),
            version: Version::HTTP_11,
            status: StatusCode::OK,
            route: Arc::from("api"),
            upstream: "127.0.0.1:9001".into(),
            request_id: HeaderValue::from_static("rid-1"),
            referer: String::new(),
            user_agent: "curl/8".into(),
        }
    }

    #[test]
    fn text_lines_have_the_combined_fields_and_escape_quotes() {
        let line = record(LogFormat::Text).line(42, Duration::from_millis(5), true);
        assert!(line.starts_with("192.0.2.7 - - ["), "{line}");
        assert!(
            line.contains("\"GET /a?\\\"b\\\" HTTP/1.1\" 200 42 \"\" \"curl/8\""),
            "{line}"
        );
        assert!(
            line.contains("route=\"api\" upstream=\"127.0.0.1:9001\""),
            "{line}"
        );
        assert!(line.trim_end().ends_with("id=rid-1"), "{line}");
    }

    /// The text format writes the request id unquoted, so an id outside the characters
    /// `headers::request_id` keeps (none reaches here today) is written as `-` rather than
    /// let a space or a quote end the field.
    #[test]
    fn an_id_that_could_split_the_line_is_not_written() {
        let mut record = record(LogFormat::Text);
        record.request_id = HeaderValue::from_static("x aborted");
        let line = record.line(1, Duration::from_millis(1), true);
        assert!(line.trim_end().ends_with(" id=-"), "{line}");
    }

    #[test]
    fn json_lines_parse_back() {
        let line = record(LogFormat::Json).line(7, Duration::from_millis(2), false);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 7);
        assert_eq!(value["request_id"], "rid-1");
        assert_eq!(value["complete"], false);
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use std::net::IpAddr;

        /// Text a client controls: printable ASCII mixed with line breaks, quotes, backslashes,
        /// NUL, escape sequences, obs-text (bytes 0x80–0xFF read as Latin-1), Unicode line
        /// separators and combining marks, text that looks like an escape already, invalid UTF-8
        /// after a lossy conversion, and any characters at all.
        fn hostile() -> impl Strategy<Value = String> {
            let special = prop::sample::select(vec![
                "\r",
                "\n",
                "\r\n",
                "\"",
                "\\",
                "\0",
                "\t",
                "'",
                "\x1b[31m",
                "\x7f",
                "\u{85}",
                "\u{2028}",
                "\u{2029}",
                "\u{301}",
                "\u{feff}",
                "é",
                "\\\"",
                "\" ",
                "\\u{41}",
                "\\n",
                "] \"",
                "\" 200 0 \"",
                " aborted",
                " id=x",
                "host=\"",
                "%0d%0a",
            ])
            .prop_map(str::to_owned);
            let piece = prop_oneof![
                4 => "[ -~]{0,8}",
                3 => special,
                1 => vec(0x80u8..=0xff, 1..4).prop_map(|b| b.into_iter().map(char::from).collect()),
                1 => vec(any::<u8>(), 0..8).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
                1 => any::<String>(),
            ];
            vec(piece, 0..6).prop_map(|pieces| pieces.concat())
        }

        fn method() -> impl Strategy<Value = Method> {
            prop_oneof![
                prop::sample::select(vec![Method::GET, Method::POST, Method::CONNECT]),
                "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,10}"
                    .prop_map(|m| Method::from_bytes(m.as_bytes()).expect("a token")),
            ]
        }

        #[derive(Debug, Clone)]
        struct Fields {
            client: IpAddr,
            method: Method,
            host: String,
            target: String,
            version: Version,
            status: u16,
            route: String,
            upstream: String,
            request_id: String,
            referer: String,
            user_agent: String,
            bytes: u64,
            elapsed: Duration,
            complete: bool,
        }

        fn fields() -> impl Strategy<Value = Fields> {
            let versions = vec![
                Version::HTTP_09,
                Version::HTTP_10,
                Version::HTTP_11,
                Version::HTTP_2,
                Version::HTTP_3,
            ];
            (
                (any::<IpAddr>(), method(), hostile(), hostile()),
                (
                    prop::sample::select(versions),
                    100u16..=999,
                    hostile(),
                    hostile(),
                ),
                // What `headers::request_id_present` lets through from a client.
                ("[A-Za-z0-9._:-]{1,128}", hostile(), hostile()),
                (any::<u64>(), any::<u64>(), any::<bool>()),
            )
                .prop_map(
                    |(
                        (client, method, host, target),
                        (version, status, route, upstream),
                        (request_id, referer, user_agent),
                        (bytes, nanos, complete),
                    )| Fields {
                        client,
                        method,
                        host,
                        target,
                        version,
                        status,
                        route,
                        upstream,
                        request_id,
                        referer,
                        user_agent,
                        bytes,
                        elapsed: Duration::from_nanos(nanos),
                        complete,
                    },
                )
        }

        fn line(format: LogFormat, f: &Fields) -> String {
            let mut record = record(format);
            record.client = SocketAddr::new(f.client, 443);
            record.method = f.method.clone();
            record.host = f.host.clone();
            record.target = f.target.clone();
            record.version = f.version;
            record.status = StatusCode::from_u16(f.status).expect("100..=999");
            record.route = Arc::from(f.route.as_str());
            record.upstream = f.upstream.clone();
            record.request_id = HeaderValue::from_str(&f.request_id).expect("a valid id");
            record.referer = f.referer.clone();
            record.user_agent = f.user_agent.clone();
            record.line(f.bytes, f.elapsed, f.complete)
        }

        /// One line: a single line feed, at the end, and no carriage return. `printable` also
        /// refuses every other control character and the Unicode line and paragraph separators
        /// (the text format escapes them all; JSON escapes only what JSON requires, and a JSON
        /// reader takes the others as ordinary characters).
        fn one_line(line: &str, printable: bool) -> Result<(), TestCaseError> {
            let body = line.strip_suffix('\n');
            prop_assert!(body.is_some(), "no final line feed: {:?}", line);
            let bad = body.unwrap_or_default().chars().find(|&c| {
                matches!(c, '\n' | '\r')
                    || printable && (c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
            });
            prop_assert_eq!(bad, None, "{:?}", line);
            Ok(())
        }

        /// The content of the quoted field at the start of `s` (up to the first quote that no
        /// backslash escapes), and what follows its closing quote.
        fn quoted(s: &str) -> Option<(&str, &str)> {
            let body = s.strip_prefix('"')?;
            let mut escaped = false;
            for (i, c) in body.char_indices() {
                match c {
                    '"' if !escaped => return Some((&body[..i], &body[i + 1..])),
                    '\\' if !escaped => escaped = true,
                    _ => escaped = false,
                }
            }
            None
        }

        /// Undoes Rust's `escape_default` and `{:?}` escapes (`\n`, `\"`, `\u{2028}`, ...).
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

        /// The fields of a text line, read as a log parser would: quoted fields end at the
        /// first unescaped quote.
        #[derive(Debug, PartialEq)]
        struct TextLine {
            client: String,
            request: String,
            status: String,
            bytes: String,
            referer: String,
            user_agent: String,
            host: String,
            route: String,
            upstream: String,
            request_id: String,
            aborted: bool,
        }

        fn read_text(line: &str) -> Option<TextLine> {
            let rest = line.strip_suffix('\n')?;
            let (client, rest) = rest.split_once(" - - [")?;
            let (_time, rest) = rest.split_once("] ")?;
            let (request, rest) = quoted(rest)?;
            let (status, rest) = rest.strip_prefix(' ')?.split_once(' ')?;
            let (bytes, rest) = rest.split_once(' ')?;
            let (referer, rest) = quoted(rest)?;
            let (user_agent, rest) = quoted(rest.strip_prefix(' ')?)?;
            let (host, rest) = quoted(rest.strip_prefix(" host=")?)?;
            let (route, rest) = quoted(rest.strip_prefix(" route=")?)?;
            let (upstream, rest) = quoted(rest.strip_prefix(" upstream=")?)?;
            let (duration, rest) = rest.strip_prefix(" duration=")?.split_once(" id=")?;
            duration.parse::<f64>().ok()?;
            let (request_id, aborted) = match rest.strip_suffix(" aborted") {
                Some(id) => (id, true),
                None => (rest, false),
            };
            Some(TextLine {
                client: client.to_owned(),
                request: unescape(request)?,
                status: status.to_owned(),
                bytes: bytes.to_owned(),
                referer: unescape(referer)?,
                user_agent: unescape(user_agent)?,
                host: unescape(host)?,
                route: unescape(route)?,
                upstream: unescape(upstream)?,
                request_id: request_id.to_owned(),
                aborted,
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever a client puts in the target, `Host`, `Referer` or `User-Agent` (and the
            /// operator in a route or backend name), a text line stays one line, every quoted
            /// field ends where the format says, and each decodes back to what was logged.
            #[test]
            fn text_lines_cannot_be_split_or_forged(f in fields()) {
                let line = line(LogFormat::Text, &f);
                one_line(&line, true)?;
                let read = read_text(&line);
                prop_assert!(read.is_some(), "unreadable: {:?}", line);
                let expected = TextLine {
                    client: f.client.to_string(),
                    request: format!("{} {} {}", f.method, f.target, protocol(f.version)),
                    status: f.status.to_string(),
                    bytes: f.bytes.to_string(),
                    referer: f.referer.clone(),
                    user_agent: f.user_agent.clone(),
                    host: f.host.clone(),
                    route: f.route.clone(),
                    upstream: f.upstream.clone(),
                    request_id: f.request_id.clone(),
                    aborted: !f.complete,
                };
                prop_assert_eq!(read.unwrap(), expected, "{:?}", line);
            }

            /// A JSON line is one line, parses as one JSON object, and holds every field as
            /// logged.
            #[test]
            fn json_lines_are_one_object_holding_the_fields(f in fields()) {
                let line = line(LogFormat::Json, &f);
                one_line(&line, false)?;
                let value: serde_json::Value = match serde_json::from_str(&line) {
                    Ok(value) => value,
                    Err(error) => return Err(TestCaseError::fail(format!("{error}: {line:?}"))),
                };
                let text = |name: &str| value[name].as_str().map(str::to_owned);
                prop_assert_eq!(text("client"), Some(f.client.to_string()));
                prop_assert_eq!(text("method"), Some(f.method.to_string()));
                prop_assert_eq!(text("host"), Some(f.host.clone()));
                prop_assert_eq!(text("target"), Some(f.target.clone()));
                prop_assert_eq!(text("protocol"), Some(protocol(f.version).to_owned()));
                prop_assert_eq!(value["status"].as_u64(), Some(u64::from(f.status)));
                prop_assert_eq!(value["bytes"].as_u64(), Some(f.bytes));
                prop_assert!(value["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
                prop_assert_eq!(text("route"), Some(f.route.clone()));
                prop_assert_eq!(text("upstream"), Some(f.upstream.clone()));
                prop_assert_eq!(text("request_id"), Some(f.request_id.clone()));
                prop_assert_eq!(text("referer"), Some(f.referer.clone()));
                prop_assert_eq!(text("user_agent"), Some(f.user_agent.clone()));
                prop_assert_eq!(value["complete"].as_bool(), Some(f.complete));
                prop_assert_eq!(value.as_object().map(|o| o.len()), Some(15));
            }
        }
    }
}
