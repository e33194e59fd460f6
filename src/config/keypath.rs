//! Finds the dotted key path (`route[2].timeouts.upstream_header`) at a byte offset of a TOML text.
//!
//! serde errors carry only a byte span; operators think in keys. The text is parsed a second time
//! into toml's span-preserving tree (`DeTable`) and walked to the innermost key whose key or value
//! covers the offset. A key line the tree leaves out (a duplicate key, a value extended with a
//! dotted key: the very lines errors point at) is named from its own text, within its table.

use std::ops::Range;

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

/// The dotted path of the innermost key at `offset`, or an empty string if none covers it.
pub fn key_at(text: &str, offset: usize) -> String {
    let (root, _) = DeTable::parse_recoverable(text);
    let at = At::new(text, offset);
    let mut path = String::new();
    if !walk_table(root.get_ref(), &at, &mut path)
        && let Some(key) = at.line_key()
    {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&key);
    }
    path
}

/// The offset, and the line it is on.
struct At<'t> {
    text: &'t str,
    offset: usize,
    /// Where the offset's line starts.
    line: usize,
}

impl<'t> At<'t> {
    fn new(text: &'t str, offset: usize) -> Self {
        At {
            text,
            offset,
            line: line_start(text, offset),
        }
    }

    /// Whether a span starting at `start` (at or before the offset) tells where the offset
    /// is: it is on the offset's line, or on a table header (`[name]`, `[[name]]`), which holds
    /// the lines up to the next one. A key on an earlier line of the same table does not.
    fn tells(&self, start: usize) -> bool {
        start >= self.line
            || self
                .text
                .get(line_start(self.text, start)..)
                .is_some_and(|line| line.trim_start().starts_with('['))
    }

    /// The key of a `key = value` line at the offset, parts unquoted and joined with dots.
    fn line_key(&self) -> Option<String> {
        let line = self.text.get(self.line..)?;
        let line = line.split('\n').next().unwrap_or("");
        let (key, _) = line.split_once('=')?;
        let mut parts = vec![String::new()];
        let mut quote = None;
        for c in key.trim().chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => parts.last_mut()?.push(c),
                (None, '"' | '\'') => quote = Some(c),
                (None, '.') => parts.push(String::new()),
                (None, c) if c == ' ' || c == '\t' => {}
                (None, c) if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                    parts.last_mut()?.push(c)
                }
                (None, _) => return None,
            }
        }
        (quote.is_none() && parts.iter().all(|p| !p.is_empty())).then(|| parts.join("."))
    }
}

/// Where the line holding byte `offset` starts.
fn line_start(text: &str, offset: usize) -> usize {
    let before = &text.as_bytes()[..offset.min(text.len())];
    before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1)
}

fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

/// Walks `table` to the key at the offset, appending to `path`; false when no key of the table
/// holds the offset (the path stops at the table).
fn walk_table(table: &DeTable<'_>, at: &At<'_>, path: &mut String) -> bool {
    // Tables declared by headers (`[[route]]`, `[pool.app]`) do not always have a value span
    // covering their body, and an array of tables may be split around other tables. So when no
    // entry covers the offset, the entry with the latest telling span starting before it wins.
    let mut best: Option<(&Spanned<_>, &Spanned<DeValue<'_>>, usize)> = None;
    for (key, value) in table.iter() {
        if covers(&key.span(), at.offset) || covers(&value.span(), at.offset) {
            best = Some((key, value, usize::MAX));
            break;
        }
        let anchor = latest_start(key.span(), value, at);
        if let Some(anchor) = anchor
            && best.is_none_or(|(_, _, a)| a < anchor)
        {
            best = Some((key, value, anchor));
        }
    }
    let Some((key, value, anchor)) = best else {
        return false;
    };
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key.get_ref());
    if covers(&key.span(), at.offset) {
        return true;
    }
    // Inside a value (between the braces of an inline table, say), the key is found even
    // where no inner key holds the offset.
    walk_value(value, at, path) || anchor == usize::MAX
}

/// The latest start, at or before the offset, of any telling span in a key and its value's
/// subtree.
fn latest_start(key: Range<usize>, value: &Spanned<DeValue<'_>>, at: &At<'_>) -> Option<usize> {
    let mut latest = None;
    let mut consider = |start: usize| {
        if start <= at.offset && at.tells(start) && latest.is_none_or(|l| l < start) {
            latest = Some(start);
        }
    };
    consider(key.start);
    consider(value.span().start);
    match value.get_ref() {
        DeValue::Table(table) => {
            for (k, v) in table.iter() {
                if let Some(start) = latest_start(k.span(), v, at) {
                    consider(start);
                }
            }
        }
        DeValue::Array(items) => {
            for item in items.iter() {
                if let Some(start) = latest_start(item.span().start..item.span().start, item, at) {
                    consider(start);
                }
            }
        }
        _ => {}
    }
    latest
}

fn walk_value(value: &Spanned<DeValue<'_>>, at: &At<'_>, path: &mut String) -> bool {
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, at, path),
        DeValue::Array(items) => {
            let mut best = None;
            let mut best_anchor = 0;
            for (i, item) in items.iter().enumerate() {
                if covers(&item.span(), at.offset) {
                    best = Some((i, item));
                    break;
                }
                let span = item.span();
                if let Some(anchor) = latest_start(span.start..span.start, item, at)
                    && (best.is_none() || anchor > best_anchor)
                {
                    best = Some((i, item));
                    best_anchor = anchor;
                }
            }
            if let Some((i, item)) = best {
                path.push_str(&format!("[{i}]"));
                walk_value(item, at, path)
            } else {
                // On an array's line but in no element (a bracket, a comma): the array.
                true
            }
        }
        _ => true,
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

    /// Regression: a key line the recovered tree leaves out (a duplicate key, a value extended
    /// with a dotted key, a later dotted key of an implicit table) was named as the key on a
    /// line before it: `t.toml:7:1: error in `route[0].timeouts.upstream_header`: duplicate key`
    /// for a repeated `timeouts` on line 7, and `pool.x = 1` reported as the same key.
    #[test]
    fn lines_the_tree_leaves_out_are_named_from_their_own_text() {
        let text = "[[route]]\npool = \"p\"\ntimeouts.upstream_header = \"1s\"\n\
                    pool.x = 1\ntimeouts = 5\n";
        assert_eq!(at(text, "pool.x"), "route[0].pool.x");
        assert_eq!(at(text, "x = 1"), "route[0].pool.x");
        assert_eq!(at(text, "timeouts = 5"), "route[0].timeouts");
        let dotted = "[[route]]\ntimeouts.upstream_header = \"1s\"\ntimeouts.upstream_read = 1\n";
        assert_eq!(
            at(dotted, "timeouts.upstream_read"),
            "route[0].timeouts.upstream_read"
        );
        let cut = "[[route]]\npool = \"p\"\nmax_body = ";
        assert_eq!(key_at(cut, cut.len()), "route[0].max_body");
        // Not inside a value the tree holds: the brace of an inline table names its key.
        let inline = "[[route]]\nbasic_auth = { htpasswd = \"/x\" }\n";
        assert_eq!(at(inline, "{"), "route[0].basic_auth");
    }

    #[test]
    fn finds_keys_in_inline_tables() {
        let text = "[[route]]\ntimeouts = { upstream_header = \"x\" }\n";
        assert_eq!(at(text, "\"x\""), "route[0].timeouts.upstream_header");
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// A value, written as TOML.
        #[derive(Debug, Clone)]
        enum Value {
            Scalar(&'static str),
            /// Scalars.
            Array(Vec<&'static str>),
            /// Keys (distinct) and scalars.
            Inline(Vec<(&'static str, &'static str)>),
        }

        /// Scalars, some holding what looks like TOML structure.
        fn scalar() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "1",
                "-7",
                "true",
                "1.5",
                "\"a\"",
                "\"x = 1\"",
                "\"[route]\"",
                "\"# no comment\"",
                "\"q\\\"uote\\\\\"",
                "'lit[eral]'",
                "\"\"",
                "1979-05-27T07:32:00Z",
            ])
        }

        fn value() -> impl Strategy<Value = Value> {
            prop_oneof![
                4 => scalar().prop_map(Value::Scalar),
                1 => vec(scalar(), 0..4).prop_map(Value::Array),
                1 => prop::sample::subsequence(vec!["x", "y", "upstream_header"], 0..=3)
                    .prop_flat_map(|keys| {
                        let n = keys.len();
                        (Just(keys), vec(scalar(), n))
                    })
                    .prop_map(|(keys, values)| {
                        Value::Inline(keys.into_iter().zip(values).collect())
                    }),
            ]
        }

        /// Where a document's lines start: the root, a table, or an array of tables.
        #[derive(Debug, Clone)]
        enum Header {
            Table(&'static str),
            Array(&'static str),
        }

        /// A section: its header (none for the root) and its keys (distinct; a quoted one is
        /// written with its quotes and named without them; `timeouts.` ones are dotted keys).
        #[derive(Debug, Clone)]
        struct Section {
            header: Option<Header>,
            keys: Vec<(&'static str, Value)>,
        }

        /// Keys of a table; `pool` only below the root, where it is not also `[pool.app]`.
        fn keys(root: bool) -> impl Strategy<Value = Vec<(&'static str, Value)>> {
            let mut names = vec![
                "a",
                "path_prefix",
                "x-y",
                "\"quoted key\"",
                "\"dot.ted\"",
                "timeouts.upstream",
                "timeouts.connect",
            ];
            if !root {
                names.push("pool");
            }
            prop::sample::subsequence(names, 0..=5)
                .prop_flat_map(|keys| {
                    let n = keys.len();
                    (Just(keys), vec(value(), n))
                })
                .prop_map(|(keys, values)| keys.into_iter().zip(values).collect())
        }

        /// A valid document: root keys, then tables (each at most once, some with dotted
        /// names) and arrays of tables (split around the rest) in any order.
        fn document() -> impl Strategy<Value = Vec<Section>> {
            let tables = prop::sample::subsequence(
                vec![
                    "server",
                    "tls",
                    "pool.app",
                    "pool.web",
                    "limits.client.body",
                ],
                0..=5,
            )
            .prop_map(|names| names.into_iter().map(Header::Table).collect::<Vec<_>>());
            let arrays = vec(prop::sample::select(vec!["route", "listener"]), 0..5)
                .prop_map(|names| names.into_iter().map(Header::Array).collect::<Vec<_>>());
            (tables, arrays)
                .prop_flat_map(|(mut tables, arrays)| {
                    tables.extend(arrays);
                    Just(tables).prop_shuffle()
                })
                .prop_flat_map(|headers| {
                    let n = headers.len();
                    (keys(true), Just(headers), vec(keys(false), n))
                })
                .prop_map(|(root, headers, keys)| {
                    let mut sections = vec![Section {
                        header: None,
                        keys: root,
                    }];
                    sections.extend(headers.into_iter().zip(keys).map(|(header, keys)| Section {
                        header: Some(header),
                        keys,
                    }));
                    sections
                })
        }

        /// A byte range of the text and the key path every offset in it must get.
        /// A byte range of the text and the key paths an offset in it may get (one, but two
        /// for the first part of a dotted key: that part where the tree holds it, the whole key
        /// where it is a repeat the tree does not hold).
        type Expectation = (Range<usize>, Vec<String>);

        /// A few offsets of `range`: its ends and its middle (every offset would parse the
        /// document hundreds of times per case).
        fn probes(range: &Range<usize>) -> Vec<usize> {
            let len = range.end.saturating_sub(range.start);
            let mut offsets: Vec<usize> = [0, len / 2, len.saturating_sub(1)]
                .into_iter()
                .filter(|&o| o < len)
                .map(|o| range.start + o)
                .collect();
            offsets.dedup();
            offsets
        }

        /// Writes the document, noting for each key the path of its key, of its value and of
        /// each element or inner key of the value.
        fn write(sections: &[Section], blank: bool) -> (String, Vec<Expectation>) {
            let (text, expect, _) = write_with(sections, blank, None);
            (text, expect)
        }

        /// As [`write`], with one more line after key `key` of section `section`: the key again
        /// with `suffix` (`""`: a duplicate key; `".x"`: extending a value), an error that the
        /// span-preserving tree leaves out. Every offset in that line must still name its key.
        fn write_with(
            sections: &[Section],
            blank: bool,
            insert: Option<(usize, usize, &str)>,
        ) -> (String, Vec<Expectation>, Option<Expectation>) {
            let mut text = String::new();
            let mut expect = Vec::new();
            let mut inserted = None;
            let mut counts: std::collections::HashMap<&str, usize> = Default::default();
            for (s, section) in sections.iter().enumerate() {
                let prefix = match &section.header {
                    None => String::new(),
                    Some(Header::Table(name)) => {
                        text.push_str(&format!("[{name}]\n"));
                        format!("{name}.")
                    }
                    Some(Header::Array(name)) => {
                        let count = counts.entry(name).or_default();
                        text.push_str(&format!("[[{name}]]\n"));
                        *count += 1;
                        format!("{name}[{}].", *count - 1)
                    }
                };
                for (k, (key, value)) in section.keys.iter().enumerate() {
                    let path = format!("{prefix}{}", key.trim_matches('"'));
                    let start = text.len();
                    text.push_str(key);
                    text.push_str(" = ");
                    let value_start = text.len();
                    match value {
                        Value::Scalar(v) => text.push_str(v),
                        Value::Array(items) => {
                            text.push('[');
                            for (i, item) in items.iter().enumerate() {
                                if i > 0 {
                                    text.push_str(", ");
                                }
                                let at = text.len();
                                text.push_str(item);
                                expect.push((at..text.len(), vec![format!("{path}[{i}]")]));
                            }
                            text.push(']');
                        }
                        Value::Inline(entries) => {
                            text.push_str("{ ");
                            for (i, (k, v)) in entries.iter().enumerate() {
                                if i > 0 {
                                    text.push_str(", ");
                                }
                                let at = text.len();
                                text.push_str(&format!("{k} = {v}"));
                                expect.push((at..text.len(), vec![format!("{path}.{k}")]));
                            }
                            text.push_str(" }");
                        }
                    }
                    // Scalars: the whole line from the key on; arrays and inline tables: the
                    // key. The first part of a dotted key names that part (an error about the
                    // part, such as an unknown key, points there); the rest names the whole.
                    let mut from = start;
                    if let Some((first, _)) = key.split_once('.').filter(|_| !key.starts_with('"'))
                    {
                        expect.push((
                            start..start + first.len(),
                            vec![format!("{prefix}{first}"), path.clone()],
                        ));
                        from = start + first.len() + 1;
                    }
                    match value {
                        Value::Scalar(_) => expect.push((from..text.len(), vec![path.clone()])),
                        _ => {
                            expect.push((from..start + key.len(), vec![path.clone()]));
                            // The opening bracket or brace: the key, not an element.
                            expect.push((value_start..value_start + 1, vec![path.clone()]));
                        }
                    }
                    text.push_str(if blank { "  # note\n\n" } else { "\n" });
                    if let Some((_, _, suffix)) = insert.filter(|&(is, ik, _)| (is, ik) == (s, k)) {
                        let start = text.len();
                        text.push_str(&format!("{key}{suffix} = 1"));
                        inserted = Some((start..text.len(), vec![format!("{path}{suffix}")]));
                        text.push('\n');
                    }
                }
            }
            (text, expect, inserted)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// In a generated document, every offset in a `key = value` line names that key
            /// (with its tables, array indexes and dotted parts); inside an array or an inline
            /// table, the element or inner key.
            #[test]
            fn offsets_in_a_key_value_line_name_that_key(
                sections in document(),
                blank in any::<bool>(),
            ) {
                let (text, expect) = write(&sections, blank);
                let parsed = text.parse::<toml::Table>();
                prop_assert!(parsed.is_ok(), "an invalid document: {:?}\n{}", parsed, text);
                for (range, paths) in &expect {
                    for offset in probes(range) {
                        let got = key_at(&text, offset);
                        prop_assert!(
                            paths.contains(&got),
                            "{:?} not in {:?} at {} ({:?}) in\n{}",
                            got, paths, offset, &text[offset..range.end], text
                        );
                    }
                }
            }

            /// A key line the tree leaves out (a duplicate key, a value extended with a dotted
            /// key) is named from its own text, within its table: not as the key before it.
            #[test]
            fn keys_left_out_of_the_tree_are_named_from_their_line(
                (sections, at) in document()
                    .prop_filter("a key to repeat", |d| d.iter().any(|s| !s.keys.is_empty()))
                    .prop_flat_map(|d| {
                        let keyed: Vec<(usize, usize)> = d
                            .iter()
                            .enumerate()
                            .flat_map(|(s, section)| (0..section.keys.len()).map(move |k| (s, k)))
                            .collect();
                        (Just(d), prop::sample::select(keyed))
                    }),
                suffix in prop::sample::select(vec!["", ".x"]),
                blank in any::<bool>(),
            ) {
                let (text, _, inserted) =
                    write_with(&sections, blank, Some((at.0, at.1, suffix)));
                prop_assert!(text.parse::<toml::Table>().is_err(), "{}", text);
                prop_assert!(inserted.is_some());
                let (range, paths) = inserted.unwrap_or_default();
                for offset in probes(&range) {
                    prop_assert_eq!(
                        &vec![key_at(&text, offset)], &paths,
                        "offset {} ({:?}) in\n{}", offset, &text[offset..range.end], text
                    );
                }
            }

            /// Any text, any offset (past the end too): no panic, and a path only where the
            /// text has something at or before the offset.
            #[test]
            fn any_text_and_offset_gets_a_path_or_nothing(
                text in prop_oneof![
                    any::<String>(),
                    vec(
                        prop::sample::select(vec![
                            "[", "]", "[[", "]]", "a", "b.c", "\"k\"", "=", " = ", "1", "\"s\"",
                            "{", "}", ",", "\n", "#", "'", "\"\"\"", "x = [", "é", "\r\n",
                        ]),
                        0..24,
                    )
                    .prop_map(|pieces| pieces.concat()),
                ],
                offsets in vec(any::<prop::sample::Index>(), 4),
                huge in any::<usize>(),
            ) {
                for offset in offsets
                    .iter()
                    .map(|i| i.index(text.len() + 2))
                    .chain([huge, usize::MAX, text.len()])
                {
                    let path = key_at(&text, offset);
                    prop_assert!(path.is_empty() || !text.trim().is_empty(), "{:?}", path);
                }
            }
        }
    }
}
