//! `gatehouse check`: a valid config exits 0; a broken one prints file, line, column and key for
//! every error and exits non-zero. One test per class of config error, run through the real binary.

use std::path::PathBuf;
use std::process::Command;

use crate::support::TempDir;

/// Writes `text` to a fresh file and runs `gatehouse check -c FILE`; returns (success, stdout,
/// stderr, path). The file is gone when it returns: the path is for matching messages.
fn check(name: &str, text: &str) -> (bool, String, String, PathBuf) {
    let dir = TempDir::new(&format!("check-{name}"));
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, text).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run gatehouse check");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        path,
    )
}

const VALID: &str = r#"[server]
grace_period = "10s"
max_body = "10MiB"

[[listener]]
name = "public"
address = "127.0.0.1:8080"

[pool.app]
backends = ["127.0.0.1:9001", "localhost:9002"]

[[route]]
name = "api"
host = ["api.example.com", "*.api.example.com"]
path_prefix = "/v1/"
pool = "app"
timeouts = { upstream_header = "5s" }
"#;

/// Asserts that checking `text` fails with an error at `line:column` in `key` whose message
/// contains `fragment`.
fn assert_error(name: &str, text: &str, line: usize, column: usize, key: &str, fragment: &str) {
    let (ok, _, stderr, path) = check(name, text);
    assert!(!ok, "{name}: config should be refused; stderr:\n{stderr}");
    let expected = format!("{}:{line}:{column}: error in `{key}`: ", path.display());
    let found = stderr.lines().find(|l| l.starts_with(&expected));
    let line_text =
        found.unwrap_or_else(|| panic!("{name}: no line starting with {expected:?} in:\n{stderr}"));
    assert!(
        line_text.contains(fragment),
        "{name}: {line_text:?} should mention {fragment:?}"
    );
}

#[test]
fn a_valid_config_passes_with_a_summary() {
    let (ok, stdout, stderr, _) = check("valid", VALID);
    assert!(ok, "valid config refused:\n{stderr}");
    assert!(
        stdout.contains("OK (1 listener(s), 1 pool(s), 1 route(s))"),
        "{stdout}"
    );
}

#[test]
fn toml_syntax_errors_are_located() {
    let text = VALID.replace("name = \"api\"", "name = \"api");
    let (ok, _, stderr, path) = check("syntax", &text);
    assert!(!ok);
    assert!(
        stderr.starts_with(&format!("{}:13:12:", path.display())),
        "{stderr}"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let text = VALID.replace("pool = \"app\"\n", "pool = \"app\"\nretries = 3\n");
    assert_error(
        "unknown",
        &text,
        17,
        1,
        "route[0].retries",
        "unknown field `retries`",
    );
}

#[test]
fn unknown_keys_in_nested_tables_are_refused() {
    let text = VALID.replace("upstream_header = \"5s\"", "upstream_headers = \"5s\"");
    assert_error(
        "nested",
        &text,
        17,
        14,
        "route[0].timeouts.upstream_headers",
        "unknown field",
    );
}

#[test]
fn wrong_types_are_refused() {
    let text = VALID.replace("[server]\n", "[server]\nworkers = \"two\"\n");
    assert_error("type", &text, 2, 11, "server.workers", "invalid type");
}

#[test]
fn bad_durations_and_sizes_are_refused() {
    let text = VALID.replace("\"10s\"", "\"ten seconds\"");
    assert_error(
        "duration",
        &text,
        2,
        16,
        "server.grace_period",
        "invalid duration",
    );
    let text = VALID.replace("\"10MiB\"", "\"10 parsecs\"");
    assert_error("size", &text, 3, 12, "server.max_body", "invalid size");
}

#[test]
fn references_to_undefined_pools_are_refused() {
    let text = VALID.replace("pool = \"app\"", "pool = \"ap\"");
    assert_error(
        "pool-ref",
        &text,
        16,
        8,
        "route[0].pool",
        "pool \"ap\" is not defined (defined pools: app)",
    );
}

#[test]
fn duplicate_names_are_refused() {
    let text = format!("{VALID}\n[[route]]\nname = \"api\"\npool = \"app\"\n");
    assert_error("dup-route", &text, 20, 8, "route[1].name", "used twice");
    let text = format!("{VALID}\n[[listener]]\nname = \"public\"\naddress = \"127.0.0.1:8081\"\n");
    assert_error(
        "dup-listener",
        &text,
        20,
        8,
        "listener[1].name",
        "used twice",
    );
    let (ok, _, stderr, _) = check(
        "dup-pool",
        &format!("{VALID}\n[pool.app]\nbackends = [\"127.0.0.1:1\"]\n"),
    );
    assert!(
        !ok && stderr.contains(":19:7: error in `pool.app`: duplicate key"),
        "{stderr}"
    );
}

#[test]
fn unparsable_addresses_are_refused() {
    let text = VALID.replace("\"127.0.0.1:8080\"", "\"127.0.0.1\"");
    assert_error(
        "listen-addr",
        &text,
        7,
        11,
        "listener[0].address",
        "not a socket address",
    );
    let text = VALID.replace("\"localhost:9002\"", "\"http://localhost:9002\"");
    assert_error(
        "backend-addr",
        &text,
        10,
        31,
        "pool.app.backends[1]",
        "not a backend address",
    );
}

#[test]
fn bad_patterns_and_headers_are_refused() {
    let text = VALID.replace("path_prefix = \"/v1/\"", "path_regex = \"^/v1/(\"");
    assert_error(
        "regex",
        &text,
        15,
        14,
        "route[0].path_regex",
        "invalid regular expression",
    );
    let text = VALID.replace("\"*.api.example.com\"", "\"api.*.com\"");
    assert_error("host", &text, 14, 8, "route[0].host", "not a host pattern");
    let text = VALID.replace(
        "pool = \"app\"\n",
        "pool = \"app\"\nrequest_headers = { set = { \"bad header\" = \"x\" } }\n",
    );
    assert_error(
        "header",
        &text,
        17,
        44,
        "route[0].request_headers.set.bad header",
        "not a valid header name",
    );
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let text = VALID
        .replace("\"127.0.0.1:8080\"", "\"nowhere\"")
        .replace("pool = \"app\"", "pool = \"missing\"");
    let (ok, _, stderr, _) = check("many", &text);
    assert!(!ok);
    let errors = stderr
        .lines()
        .filter(|l| l.contains(": error in `"))
        .count();
    assert_eq!(errors, 2, "{stderr}");
    assert!(stderr.contains("2 error(s)"), "{stderr}");
}

#[test]
fn a_config_without_listeners_is_refused() {
    let (ok, _, stderr, _) = check("no-listener", "[pool.app]\nbackends = [\"127.0.0.1:1\"]\n");
    assert!(!ok);
    assert!(stderr.contains("no [[listener]]"), "{stderr}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "-c", "/nonexistent/gatehouse.toml"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/gatehouse.toml: error: cannot read config file"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_a_broken_config_and_does_not_start() {
    let dir = TempDir::new("run-broken");
    let path = dir.join("broken.toml");
    std::fs::write(&path, VALID.replace("pool = \"app\"", "pool = \"nope\"")).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("route[0].pool") && stderr.contains("not starting"),
        "{stderr}"
    );
}

#[test]
fn a_missing_list_or_htpasswd_file_is_found_by_check() {
    let listener = "[[listener]]\naddress = \"127.0.0.1:8080\"\ndeny = [\"file:/nonexistent/gatehouse-deny.txt\"]\n\n[pool.app]\nbackends = [\"127.0.0.1:9001\"]\n\n";
    assert_error(
        "missing-listener-list",
        &format!("{listener}[[route]]\npool = \"app\"\n"),
        3,
        9,
        "listener[0].deny[0]",
        "gatehouse-deny.txt",
    );
    let route = "[[listener]]\naddress = \"127.0.0.1:8080\"\n\n[pool.app]\nbackends = [\"127.0.0.1:9001\"]\n\n[[route]]\npool = \"app\"\nbasic_auth = { htpasswd = \"/nonexistent/gatehouse.htpasswd\" }\n";
    assert_error(
        "missing-htpasswd",
        route,
        9,
        14,
        "route[0].basic_auth",
        "cannot read htpasswd file",
    );
}
