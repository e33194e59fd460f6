//! The docs say what Gatehouse accepts: every TOML example in the README and `docs/` is a
//! config Gatehouse accepts (the docs cannot name a key, a value or a table shape that
//! `gatehouse check` would refuse), and every config key Gatehouse accepts is documented.
//!
//! Most examples are fragments (one `[pool.app.sticky]` table, a route without its pool), so
//! each is completed the way a reader would complete it before validating: a listener when it
//! has none (and an address for a listener shown without one), backends for a pool shown
//! without them, the pools its routes name, and a pool around a bare pool body (`backends =
//! […]` at the top). Nothing in the example itself is changed or dropped. The files examples
//! name (certificates, htpasswd files, address lists under `/etc/gatehouse/`) do not exist
//! here, so "No such file" errors about them are the only ones allowed.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// A fenced TOML block: where it starts, and its text.
struct Example {
    file: PathBuf,
    line: usize,
    text: String,
}

/// The Markdown files of `docs/`, sorted.
fn doc_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs
}

fn examples() -> Vec<Example> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    files.extend(doc_files());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a doc");
        let mut block: Option<(usize, String)> = None;
        for (index, line) in text.lines().enumerate() {
            match &mut block {
                None if line.trim_start() == "```toml" => block = Some((index + 1, String::new())),
                None => {}
                Some(_) if line.trim_start() == "```" => {
                    let (start, body) = block.take().expect("inside a block");
                    found.push(Example {
                        file: file.clone(),
                        line: start,
                        text: body,
                    });
                }
                Some((_, body)) => {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
        assert!(
            block.is_none(),
            "{}: a ```toml block never ends",
            file.display()
        );
    }
    found
}

/// The example made a whole config (see the top comment).
fn completed(example: &Table) -> Table {
    let mut config = example.clone();
    if config.contains_key("backends") {
        let mut pool = Table::new();
        for key in config.keys().cloned().collect::<Vec<_>>() {
            let value = config.remove(&key).expect("key just listed");
            pool.insert(key, value);
        }
        let mut pools = Table::new();
        pools.insert("example".into(), Value::Table(pool));
        config.insert("pool".into(), Value::Table(pools));
    }
    let address = || Value::String("127.0.0.1:0".into());
    match config.remove("listener") {
        Some(Value::Table(mut one)) => {
            one.entry("address").or_insert_with(address);
            config.insert("listener".into(), Value::Array(vec![Value::Table(one)]));
        }
        Some(Value::Array(mut many)) => {
            for listener in &mut many {
                if let Value::Table(listener) = listener {
                    listener.entry("address").or_insert_with(address);
                }
            }
            config.insert("listener".into(), Value::Array(many));
        }
        Some(other) => {
            config.insert("listener".into(), other);
        }
        None => {
            let mut one = Table::new();
            one.insert("address".into(), address());
            config.insert("listener".into(), Value::Array(vec![Value::Table(one)]));
        }
    }
    let named: Vec<String> = match config.get("route") {
        Some(Value::Array(routes)) => routes
            .iter()
            .filter_map(|r| r.get("pool").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let pools = config
        .entry("pool")
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(pools) = pools {
        for name in named {
            pools
                .entry(name)
                .or_insert_with(|| Value::Table(Table::new()));
        }
        for (_, pool) in pools.iter_mut() {
            if let Value::Table(pool) = pool {
                pool.entry("backends")
                    .or_insert_with(|| Value::Array(vec![Value::String("127.0.0.1:9".into())]));
            }
        }
    }
    config
}

#[test]
fn every_toml_example_in_the_docs_is_a_config_gatehouse_accepts() {
    let examples = examples();
    // README's example, and the configuration reference's, at the least.
    assert!(
        examples.len() >= 20,
        "found only {} TOML examples",
        examples.len()
    );
    let mut failures = Vec::new();
    for example in &examples {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let file = example.file.strip_prefix(root).unwrap_or(&example.file);
        let place = format!("{}:{}", file.display(), example.line);
        let table: Table = match toml::from_str(&example.text) {
            Ok(table) => table,
            Err(e) => {
                failures.push(format!("{place}: not TOML: {e}"));
                continue;
            }
        };
        let text = toml::to_string(&completed(&table)).expect("a table serialises");
        let Err(errors) = gatehouse::config::parse(Path::new(&place), &text) else {
            continue;
        };
        let refused: Vec<String> = errors
            .0
            .iter()
            .filter(|e| !e.message.contains("No such file or directory"))
            .map(|e| format!("  in `{}`: {}", e.key, e.message))
            .collect();
        if !refused.is_empty() {
            failures.push(format!(
                "{place}: refused:\n{}\n  as completed:\n{}",
                refused.join("\n"),
                text.lines()
                    .map(|l| format!("    {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} examples are refused:\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n")
    );
}

#[test]
fn a_wrong_key_in_an_example_would_be_caught() {
    // The completion must not hide what the example gets wrong.
    let table: Table = toml::from_str("[pool.app]\nbakends = [\"127.0.0.1:1\"]\n").expect("TOML");
    let text = toml::to_string(&completed(&table)).expect("serialises");
    let errors = gatehouse::config::parse(Path::new("example"), &text).expect_err("refused");
    assert!(
        errors.0.iter().any(|e| e.message.contains("bakends")),
        "{errors}"
    );
}

/// The keys a config table accepts, as the config parser lists them when it meets one it does
/// not know: `text` must put the key `zz_unknown` in that table.
fn accepted_keys(text: &str) -> Vec<String> {
    let errors = gatehouse::config::parse(Path::new("probe"), text).expect_err("refused");
    let message = errors
        .0
        .iter()
        .map(|e| e.message.as_str())
        .find(|m| m.contains("unknown field `zz_unknown`"))
        .unwrap_or_else(|| panic!("no unknown-field error for:\n{text}\n{errors}"));
    let (_, expected) = message.split_once("expected").expect("a list of keys");
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_config_key_is_documented() {
    let docs: String = doc_files()
        .iter()
        .map(|path| std::fs::read_to_string(path).expect("read a doc"))
        .collect();
    let listener = "[[listener]]\naddress = \"127.0.0.1:0\"\n";
    let pool = "[pool.app]\nbackends = [\"127.0.0.1:9\"]\n";
    let route = "[[route]]\npool = \"app\"\n";
    let whole = format!("{listener}{pool}{route}");
    let tables: Vec<(&str, String)> = vec![
        ("the top level", format!("zz_unknown = 1\n{whole}")),
        ("[server]", format!("{whole}[server]\nzz_unknown = 1\n")),
        ("[timeouts]", format!("{whole}[timeouts]\nzz_unknown = 1\n")),
        (
            "[forwarded]",
            format!("{whole}[forwarded]\nzz_unknown = 1\n"),
        ),
        ("[security]", format!("{whole}[security]\nzz_unknown = 1\n")),
        ("[log]", format!("{whole}[log]\nzz_unknown = 1\n")),
        (
            "[access_log]",
            format!("{whole}[access_log]\nzz_unknown = 1\n"),
        ),
        ("[admin]", format!("{whole}[admin]\nzz_unknown = 1\n")),
        (
            "[compression]",
            format!("{whole}[compression]\nzz_unknown = 1\n"),
        ),
        ("[cache]", format!("{whole}[cache]\nzz_unknown = 1\n")),
        (
            "[cache.disk]",
            format!("{whole}[cache.disk]\nzz_unknown = 1\n"),
        ),
        (
            "[[listener]]",
            format!("{listener}zz_unknown = 1\n{pool}{route}"),
        ),
        (
            "[listener.tls]",
            format!("{listener}tls = {{ self_signed = true, zz_unknown = 1 }}\n{pool}{route}"),
        ),
        (
            "[pool.NAME]",
            format!("{listener}{pool}zz_unknown = 1\n{route}"),
        ),
        (
            "a backend",
            format!(
                "{listener}[pool.app]\nbackends = [{{ address = \"127.0.0.1:9\", zz_unknown = 1 }}]\n{route}"
            ),
        ),
        (
            "[pool.NAME.health_check]",
            format!("{whole}[pool.app.health_check]\npath = \"/\"\nzz_unknown = 1\n"),
        ),
        (
            "[pool.NAME.sticky]",
            format!("{whole}[pool.app.sticky]\nzz_unknown = 1\n"),
        ),
        (
            "[pool.NAME.retry]",
            format!("{whole}[pool.app.retry]\nzz_unknown = 1\n"),
        ),
        (
            "[pool.NAME.tls]",
            format!("{whole}[pool.app.tls]\nzz_unknown = 1\n"),
        ),
        ("[[route]]", format!("{whole}zz_unknown = 1\n")),
        (
            "a route's timeouts",
            format!("{whole}timeouts = {{ zz_unknown = 1 }}\n"),
        ),
    ];
    let mut undocumented = Vec::new();
    let mut counted = 0;
    for (table, text) in &tables {
        for key in accepted_keys(text) {
            counted += 1;
            // Documented as `key`, as `key.sub` or `table.key` in a reference row, as a
            // section (`[key]`, `[[key]]`, `[key.NAME]`), or set in an example.
            let documented = docs.contains(&format!("`{key}`"))
                || docs.contains(&format!("`[{key}]`"))
                || docs.contains(&format!("`[[{key}]]`"))
                || docs.contains(&format!("`[{key}."))
                || docs.contains(&format!("`{key}."))
                || docs.contains(&format!(".{key}`"))
                || docs.contains(&format!("\n{key} = "));
            if !documented {
                undocumented.push(format!("{table}: `{key}`"));
            }
        }
    }
    assert!(counted > 100, "only {counted} keys found");
    assert!(
        undocumented.is_empty(),
        "config keys no doc in docs/ mentions:\n{}",
        undocumented.join("\n")
    );
}
