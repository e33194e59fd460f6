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
        let request_id = self.request_id.to_str().unwrap_or("-");
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

    #[test]
    fn json_lines_parse_back() {
        let line = record(LogFormat::Json).line(7, Duration::from_millis(2), false);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 7);
        assert_eq!(value["request_id"], "rid-1");
        assert_eq!(value["complete"], false);
    }
}
