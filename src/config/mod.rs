//! Configuration: read `gatehouse.toml`, check it as a whole, and report every problem precisely.
//!
//! Parsing and validation are kept apart from the runtime: [`load`] returns a [`Config`] that is
//! known to compile, or [`ConfigErrors`] naming the file, line, column and key of each fault.

mod keypath;
mod protect;
mod schema;
pub mod units;
mod validate;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use protect::*;
pub use schema::*;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, or 0 when the problem has no position (e.g. an unreadable file).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted path of the key at fault, e.g. `route[2].pool`; empty when unknown.
    pub key: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": error")?;
        if !self.key.is_empty() {
            write!(f, " in `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Parses and validates config `text`; `file` is only used in error messages.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let located = |span: Option<Range<usize>>, message: String| -> ConfigError {
        let (line, column, key) = match span {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                (line, column, keypath::key_at(text, span.start))
            }
            None => (0, 0, String::new()),
        };
        ConfigError {
            file: file.to_owned(),
            line,
            column,
            key,
            message,
        }
    };
    let mut config: Config = toml::from_str(text)
        .map_err(|e| ConfigErrors(vec![located(e.span(), e.message().trim().to_owned())]))?;
    config.source = Some(text.to_owned());
    let problems = validate::validate(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        let mut errors: Vec<ConfigError> = problems
            .into_iter()
            .map(|p| located(p.span, p.message))
            .collect();
        errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(errors))
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Fuzz entry (`fuzz/`, `--features fuzzing`): `data` as a config file. It is refused with
/// located, worded errors, or accepted and then compiled or refused; never a panic.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_parse_and_compile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(Path::new("fuzz.toml"), text) {
        Ok(config) => {
            let _ = crate::runtime::Generation::compile(&config);
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            let lines = text.lines().count() + 1;
            for error in &errors.0 {
                assert!(!error.message.is_empty() && error.line <= lines, "{error}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(text: &str) -> Vec<ConfigError> {
        parse(Path::new("test.toml"), text)
            .expect_err("config should be refused")
            .0
    }

    const MINIMAL: &str = r#"
[[listener]]
address = "127.0.0.1:8080"

[pool.app]
backends = ["127.0.0.1:9001"]

[[route]]
pool = "app"
"#;

    #[test]
    fn a_minimal_config_is_accepted_with_defaults() {
        let config = parse(Path::new("t.toml"), MINIMAL).expect("valid");
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.timeouts.client_header.0.as_secs(), 10);
        assert!(config.forwarded.x_forwarded_for);
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn unknown_key_names_line_column_and_key() {
        let text = MINIMAL.replace("pool = \"app\"", "pool = \"app\"\ntimeout = \"5s\"");
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 10, "{errors:?}");
        assert_eq!(errors[0].column, 1);
        assert_eq!(errors[0].key, "route[0].timeout");
        assert!(
            errors[0].message.contains("unknown field"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn every_semantic_error_is_reported_not_just_the_first() {
        let text = r#"
[[listener]]
address = "not an address"

[pool.app]
backends = ["127.0.0.1:http"]

[[route]]
pool = "missing"
"#;
        let errors = errors_of(text);
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listener[0].address",
                "pool.app.backends[0]",
                "route[0].pool"
            ]
        );
        assert_eq!((errors[2].line, errors[2].column), (9, 8));
    }

    #[test]
    fn display_has_file_line_column_and_key() {
        let errors = errors_of(&MINIMAL.replace("\"app\"\n", "\"nope\"\n"));
        let shown = errors[0].to_string();
        assert!(
            shown.starts_with("test.toml:9:8: error in `route[0].pool`: "),
            "{shown}"
        );
    }

    /// A lower-case standard method is a method of its own that clients never send: in a
    /// route's `methods` the route would never match, in a health check every backend would
    /// answer `405` and be marked down. Refused as the typo it is, where it was written.
    #[test]
    fn a_lower_case_method_is_refused_as_a_typo_wherever_it_is_written() {
        let text = MINIMAL.replace(
            "pool = \"app\"\n",
            "pool = \"app\"\nmethods = [\"GET\", \"post\"]\n",
        );
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "route[0].methods[1]");
        assert_eq!((errors[0].line, errors[0].column), (10, 19));
        assert!(
            errors[0].message.contains("did you mean \"POST\""),
            "{}",
            errors[0].message
        );

        let text = MINIMAL.replace(
            "backends = [\"127.0.0.1:9001\"]\n",
            "backends = [\"127.0.0.1:9001\"]\nhealth_check = { method = \"head\" }\n",
        );
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].key.starts_with("pool.app.health_check"),
            "{errors:?}"
        );
        assert!(
            errors[0].message.contains("did you mean \"HEAD\""),
            "{}",
            errors[0].message
        );

        // An extension method keeps its spelling.
        let text = MINIMAL.replace(
            "pool = \"app\"\n",
            "pool = \"app\"\nmethods = [\"PROPFIND\", \"QUERY\", \"x-sync\"]\n",
        );
        assert!(parse(Path::new("t.toml"), &text).is_ok());
    }

    /// Random edits of a config that uses most sections (lines dropped, doubled or cut, values
    /// swapped for hostile ones): the file is refused with located errors or accepted, and an
    /// accepted one compiles or is refused; never a panic (a reload must keep the old
    /// generation running, whatever the operator wrote).
    mod properties {
        use super::*;
        use proptest::prelude::*;

        const RICH: &str = r#"
[server]
workers = 1
grace_period = "30s"
max_requests_per_connection = 1000

[timeouts]
client_header = "10s"
upstream_header = "60s"
client_send = "30s"

[forwarded]
forwarded = true

[compression]
enabled = true
algorithms = ["zstd", "br", "gzip"]
min_size = "1KiB"

[cache]
enabled = true
max_size = "64MiB"
max_object_size = "1MiB"
purge_allow = ["127.0.0.1/32"]
key_headers = ["accept-language"]

[security]
trusted_proxies = ["10.0.0.0/24"]

[[listener]]
name = "public"
address = "127.0.0.1:8080"
max_connections = 20000
max_connections_per_ip = 64
new_connections_per_ip = "20/s"
new_connections_burst = 40

[pool.api]
backends = ["10.0.0.11:9000", "10.0.0.12:9000"]
balance = "least_requests"
health_check = { path = "/healthz" }

[pool.web]
backends = ["127.0.0.1:3000"]
protocol = "h2c"

[[route]]
name = "api"
host = ["api.example.com", "*.api.example.com"]
path_prefix = "/v1/"
methods = ["GET", "POST"]
pool = "api"
strip_prefix = "/v1"
request_headers = { set = { "x-env" = "prod" }, remove = ["cookie"] }
response_headers = { add = { "x-frame-options" = "DENY" } }
timeouts = { upstream_header = "5s" }
max_body = "10MiB"
rate_limit = { rate = "50/s", burst = 100 }

[[route]]
name = "admin"
host = "admin.example.com"
pool = "web"
allow = ["192.0.2.0/24"]

[[route]]
name = "web"
pool = "web"
"#;

        /// Values an operator (or a typo) may put anywhere.
        fn hostile_value() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("0".to_owned()),
                Just("-1".to_owned()),
                Just("18446744073709551616".to_owned()),
                Just("9223372036854775807".to_owned()),
                Just("1e309".to_owned()),
                Just("nan".to_owned()),
                Just("true".to_owned()),
                Just("\"\"".to_owned()),
                Just("\"0s\"".to_owned()),
                Just("\"500000000000years\"".to_owned()),
                Just("\"99999999999999999999GiB\"".to_owned()),
                Just("\"0/s\"".to_owned()),
                Just("\"4294967296/ms\"".to_owned()),
                Just("\"*.*\"".to_owned()),
                Just("\"[::1]:0\"".to_owned()),
                Just("\"300.1.1.1/33\"".to_owned()),
                Just("[]".to_owned()),
                Just("{}".to_owned()),
                Just("[\"\", \"*\"]".to_owned()),
                "\"[ -~]{0,12}\"",
                "[0-9]{1,25}",
            ]
        }

        #[derive(Debug, Clone)]
        enum Edit {
            Drop(usize),
            Double(usize),
            Value(usize, String),
            Cut(usize),
        }

        fn edit() -> impl Strategy<Value = Edit> {
            prop_oneof![
                any::<usize>().prop_map(Edit::Drop),
                any::<usize>().prop_map(Edit::Double),
                (any::<usize>(), hostile_value()).prop_map(|(at, value)| Edit::Value(at, value)),
                any::<usize>().prop_map(Edit::Cut),
            ]
        }

        fn edited(edits: &[Edit]) -> String {
            let mut lines: Vec<String> = RICH.lines().map(str::to_owned).collect();
            for edit in edits {
                let count = lines.len().max(1);
                match edit {
                    Edit::Drop(at) if !lines.is_empty() => {
                        lines.remove(at % count);
                    }
                    Edit::Double(at) if !lines.is_empty() => {
                        let line = lines[at % count].clone();
                        lines.insert(at % count, line);
                    }
                    Edit::Value(at, value) if !lines.is_empty() => {
                        let line = &mut lines[at % count];
                        if let Some(equals) = line.find(" = ") {
                            line.truncate(equals + 3);
                            line.push_str(value);
                        }
                    }
                    Edit::Cut(at) if !lines.is_empty() => {
                        let line = &mut lines[at % count];
                        let mut end = at % (line.len() + 1);
                        while !line.is_char_boundary(end) {
                            end -= 1;
                        }
                        line.truncate(end);
                    }
                    _ => {}
                }
            }
            lines.join("\n")
        }

        #[test]
        fn the_unedited_config_is_accepted_and_compiles() {
            let config = parse(Path::new("rich.toml"), RICH).expect("valid");
            crate::runtime::Generation::compile(&config).expect("compiles");
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn an_edited_config_is_refused_with_located_errors_or_compiles(
                edits in proptest::collection::vec(edit(), 1..4),
            ) {
                let text = edited(&edits);
                let lines = text.lines().count() + 1;
                match parse(Path::new("rich.toml"), &text) {
                    Ok(config) => {
                        // Accepted or refused, but with words either way.
                        if let Err(error) = crate::runtime::Generation::compile(&config) {
                            prop_assert!(!error.to_string().is_empty());
                        }
                    }
                    Err(errors) => {
                        prop_assert!(!errors.0.is_empty());
                        for error in &errors.0 {
                            prop_assert!(!error.message.is_empty());
                            prop_assert!(error.line <= lines, "{} beyond {} lines", error, lines);
                            prop_assert!(error.to_string().starts_with("rich.toml"));
                        }
                    }
                }
            }
        }
    }
}
