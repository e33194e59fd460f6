//! Finds the dotted key path (`route[2].timeouts.upstream_header`) at a byte offset of a TOML text.
//!
//! serde errors carry only a byte span; operators think in keys. The text is parsed a second time
//! into toml's span-preserving tree (`DeTable`) and walked to the innermost key whose key or value
//! covers the offset.

use std::ops::Range;

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

/// The dotted path of the innermost key at `offset`, or an empty string if none covers it.
pub fn key_at(text: &str, offset: usize) -> String {
    let (root, _) = DeTable::parse_recoverable(text);
    let mut path = String::new();
    walk_table(root.get_ref(), offset, &mut path);
    path
}

fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut String) {
    // Tables declared by headers (`[[route]]`, `[pool.app]`) do not always have a value span
    // covering their body, so when no entry covers the offset, the entry that starts last before
    // it is the one the offset belongs to.
    let mut best: Option<(&Spanned<_>, &Spanned<DeValue<'_>>)> = None;
    for (key, value) in table.iter() {
        if covers(&key.span(), offset) || covers(&value.span(), offset) {
            best = Some((key, value));
            break;
        }
        let starts_before = key.span().start <= offset;
        let later = best.is_none_or(|(k, _)| k.span().start < key.span().start);
        if starts_before && later {
            best = Some((key, value));
        }
    }
    let Some((key, value)) = best else { return };
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key.get_ref());
    if covers(&key.span(), offset) {
        return;
    }
    walk_value(value, offset, path);
}

fn walk_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut String) {
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, offset, path),
        DeValue::Array(items) => {
            let mut best = None;
            for (i, item) in items.iter().enumerate() {
                if covers(&item.span(), offset) {
                    best = Some((i, item));
                    break;
                }
                if item.span().start <= offset {
                    best = Some((i, item));
                }
            }
            if let Some((i, item)) = best {
                path.push_str(&format!("[{i}]"));
                walk_value(item, offset, path);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, needle: &str) -> String {
        key_at(text, text.find(needle).expect("needle in text"))
    }

    #[test]
    fn finds_keys_in_plain_tables_and_arrays_of_tables() {
        let text =
            "[server]\nworkers = 2\n\n[[route]]\npool = \"a\"\n\n[[route]]\npool = \"b\"\nx = 1\n";
        assert_eq!(at(text, "workers"), "server.workers");
        assert_eq!(at(text, "\"a\""), "route[0].pool");
        assert_eq!(at(text, "\"b\""), "route[1].pool");
        assert_eq!(at(text, "x = 1"), "route[1].x");
    }

    #[test]
    fn finds_keys_in_dotted_headers_and_inline_arrays() {
        let text = "[pool.app]\nbackends = [\"a:1\", \"b:2\"]\n[pool.web]\nbackends = []\n";
        assert_eq!(at(text, "\"b:2\""), "pool.app.backends[1]");
        assert_eq!(at(text, "backends = []"), "pool.web.backends");
    }

    #[test]
    fn finds_keys_in_inline_tables() {
        let text = "[[route]]\ntimeouts = { upstream_header = \"x\" }\n";
        assert_eq!(at(text, "\"x\""), "route[0].timeouts.upstream_header");
    }
}
