//! `gatehouse route`: runs the real binary on temporary config files and checks its exit codes
//! (0 explained, 404 included; 1 bad config; 2 bad request) and its `key: value` output lines.

use std::path::PathBuf;
use std::process::Command;

const CONFIG: &str = r#"
[[listener]]
address = "127.0.0.1:8080"

[pool.app]
backends = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }, { address = "127.0.0.1:9003", backup = true }]
health_check = { path = "/health", interval = "5s", rise = 2, fall = 3 }

[pool.users]
backends = ["127.0.0.1:9101", "127.0.0.1:9102"]
balance = "hash"
hash_key = "header:x-user"
retry = { tries = 2, non_idempotent = true }

[[route]]
name = "site"
host = "*.example.com"
pool = "app"

[[route]]
name = "api"
host = "api.example.com"
path_prefix = "/v1"
strip_prefix = "/v1"
add_prefix = "/internal"
host_header = "backend.internal"
max_body = "10MiB"
pool = "users"
"#;

/// Output of one run: exit code, stdout, stderr.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The value of the stdout line `key: value`, if there is one.
    fn value(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}:");
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(str::trim)
    }
}

/// Writes `config` to a fresh file named after `name`.
fn config_file(name: &str, config: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-route-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// Runs `gatehouse route -c FILE ARGS...` with `config` written to a fresh file.
fn route(name: &str, config: &str, args: &[&str]) -> Run {
    let path = config_file(name, config);
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("route")
        .arg("-c")
        .arg(&path)
        .args(args)
        .output()
        .expect("run gatehouse route");
    if let Some(dir) = path.parent() {
        // Best effort: a leftover directory in the temp dir is all that is lost.
        let _ = std::fs::remove_dir_all(dir);
    }
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn a_matching_request_is_explained_line_by_line() {
    let run = route(
        "match",
        CONFIG,
        &[
            "POST",
            "http://api.example.com/v1/users?x=1",
            "-H",
            "X-User: alice",
        ],
    );
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert_eq!(
        run.value("request"),
        Some("POST http://api.example.com/v1/users?x=1")
    );
    assert_eq!(run.value("route"), Some("api (config order 2)"));
    assert_eq!(
        run.value("matched by"),
        Some("host api.example.com, path prefix /v1")
    );
    assert_eq!(run.value("pool"), Some("users (hash, http1)"));
    assert_eq!(
        run.value("backends"),
        Some("127.0.0.1:9101 weight 1; 127.0.0.1:9102 weight 1")
    );
    let hash = run.value("hash key").expect("hash key line");
    assert!(
        hash.starts_with("header:x-user → present (goes to 127.0.0.1:910"),
        "{hash}"
    );
    assert_eq!(run.value("sticky cookie"), Some("none"));
    assert_eq!(run.value("forwarded path"), Some("/internal/users?x=1"));
    assert_eq!(run.value("host header"), Some("fixed backend.internal"));
    assert_eq!(
        run.value("timeouts"),
        Some("upstream_header 1m; upstream_read 1m; connect 5s")
    );
    assert_eq!(run.value("max body"), Some("10MiB"));
    assert_eq!(
        run.value("retries"),
        Some("2 tries; statuses 502,503,504; any method; POST may be retried")
    );
    assert_eq!(run.value("health check"), Some("none"));
    assert_eq!(run.value("compression"), Some("off"));
    assert_eq!(run.value("cache"), Some("none (not implemented yet)"));
    assert_eq!(run.value("limits"), Some("none (not implemented yet)"));
}

#[test]
fn origin_form_takes_the_host_from_the_host_header() {
    let run = route(
        "origin",
        CONFIG,
        &["GET", "/cart", "-H", "Host: Shop.Example.com:8080"],
    );
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert_eq!(
        run.value("host"),
        Some("Shop.Example.com:8080 (from the Host header)")
    );
    assert_eq!(run.value("route"), Some("site (config order 1)"));
    assert_eq!(
        run.value("matched by"),
        Some("host *.example.com, any path")
    );
    assert_eq!(run.value("pool"), Some("app (round_robin, http1)"));
    assert_eq!(
        run.value("backends"),
        Some("127.0.0.1:9001 weight 1; 127.0.0.1:9002 weight 3; 127.0.0.1:9003 weight 1 backup")
    );
    assert_eq!(run.value("hash key"), None);
    assert_eq!(run.value("forwarded path"), Some("/cart"));
    assert_eq!(
        run.value("host header"),
        Some("preserved Shop.Example.com:8080")
    );
    assert_eq!(
        run.value("health check"),
        Some("http GET /health expect 200-399 every 5s (timeout 2s, rise 2, fall 3)")
    );
    // Without the header the hash key is reported missing.
    let missing = route(
        "missing-key",
        CONFIG,
        &["GET", "http://api.example.com/v1/"],
    );
    assert_eq!(
        missing.value("hash key"),
        Some("header:x-user → missing (no affinity: any backend)")
    );
}

#[test]
fn no_matching_route_is_a_404_and_still_exit_0() {
    let run = route("nomatch", CONFIG, &["GET", "http://other.test/"]);
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert!(
        run.stdout
            .lines()
            .any(|l| l == "route:          none — the request would get 404"),
        "{}",
        run.stdout
    );
    assert_eq!(run.value("pool"), None);
    let no_host = route("nohost", CONFIG, &["GET", "/"]);
    assert_eq!(no_host.code, Some(0));
    assert_eq!(
        no_host.value("route"),
        Some("none — the request would get 404")
    );
}

#[test]
fn a_bad_config_prints_its_errors_and_exits_1() {
    let broken = CONFIG.replace("pool = \"app\"", "pool = \"nope\"");
    let run = route("badconfig", &broken, &["GET", "/"]);
    assert_eq!(run.code, Some(1), "stdout:\n{}", run.stdout);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains("error in `route[0].pool`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("1 error(s)"), "{}", run.stderr);

    let missing = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["route", "-c", "/nonexistent/gatehouse.toml", "GET", "/"])
        .output()
        .expect("run gatehouse route");
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn a_bad_request_is_refused_with_exit_2() {
    for (name, args, fragment) in [
        ("method", &["G T", "/"][..], "not an HTTP method"),
        ("url", &["GET", "not a url"][..], "is not valid"),
        ("relative", &["GET", "example.com"][..], "must be absolute"),
        ("scheme", &["GET", "ftp://example.com/"][..], "scheme"),
        ("header", &["GET", "/", "-H", "NoColon"][..], "Name: value"),
        (
            "hosts",
            &["GET", "/", "-H", "Host: a.test", "-H", "Host: b.test"][..],
            "more than one Host",
        ),
        ("connect", &["CONNECT", "/"][..], "CONNECT"),
        (
            "client-ip",
            &["GET", "/", "--client-ip", "nope"][..],
            "nope",
        ),
    ] {
        let run = route(&format!("bad-{name}"), CONFIG, args);
        assert_eq!(run.code, Some(2), "{name}: stdout:\n{}", run.stdout);
        assert!(run.stdout.is_empty(), "{name}: {}", run.stdout);
        assert!(
            run.stderr.contains(fragment),
            "{name}: stderr should mention {fragment:?}:\n{}",
            run.stderr
        );
    }
}
