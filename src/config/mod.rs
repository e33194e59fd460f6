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
}
