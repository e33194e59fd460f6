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
    // covering their body, and an array of tables may be split around other tables. So when no
    // entry covers the offset, the entry with the latest span starting before it wins.
    let mut best: Option<(&Spanned<_>, &Spanned<DeValue<'_>>, usize)> = None;
    for (key, value) in table.iter() {
        if covers(&key.span(), offset) || covers(&value.span(), offset) {
            best = Some((key, value, usize::MAX));
            break;
        }
        let anchor = latest_start(key.span(), value, offset);
        if let Some(anchor) = anchor
            && best.is_none_or(|(_, _, a)| a < anchor)
        {
            best = Some((key, value, anchor));
        }
    }
    let Some((key, value, _)) = best else { return };
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key.get_ref());
    if covers(&key.span(), offset) {
        return;
    }
    walk_value(value, offset, path);
}

/// The latest start, at or before `offset`, of any span in a key and its value's subtree.
fn latest_start(key: Range<usize>, value: &Spanned<DeValue<'_>>, offset: usize) -> Option<usize> {
    let mut latest = (key.start <= offset).then_some(key.start);
    let mut consider = |start: usize| {
        if start <= offset && latest.is_none_or(|l| l < start) {
            latest = Some(start);
        }
    };
    consider(value.span().start);
    match value.get_ref() {
        DeValue::Table(table) => {
            for (k, v) in table.iter() {
                if let Some(start) = latest_start(k.span(), v, offset) {
                    consider(start);
                }
            }
        }
        DeValue::Array(items) => {
            for item in items.iter() {
                if let Some(start) =
                    latest_start(item.span().start..item.span().start, item, offset)
                {
                    consider(start);
                }
            }
        }
        _ => {}
    }
    latest
}

fn walk_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut String) {
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, offset, path),
        DeValue::Array(items) => {
            let mut best = None;
            let mut best_anchor = 0;
            for (i, item) in items.iter().enumerate() {
                if covers(&item.span(), offset) {
                    best = Some((i, item));
                    break;
                }
                let span = item.span();
                if let Some(anchor) = latest_start(span.start..span.start, item, offset)
                    && (best.is_none() || anchor > best_anchor)
                {
                    best = Some((i, item));
                    best_anchor = anchor;
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
    fn finds_keys_in_arrays_of_tables_split_around_other_tables() {
        let text =
            "[[listener]]\nname = \"a\"\n[[route]]\npool = \"p\"\n[[listener]]\nname = \"b\"\n";
        assert_eq!(at(text, "\"b\""), "listener[1].name");
        assert_eq!(at(text, "\"p\""), "route[0].pool");
        assert_eq!(at(text, "\"a\""), "listener[0].name");
    }

    #[test]
    fn finds_keys_in_inline_tables() {
        let text = "[[route]]\ntimeouts = { upstream_header = \"x\" }\n";
        assert_eq!(at(text, "\"x\""), "route[0].timeouts.upstream_header");
    }
}
