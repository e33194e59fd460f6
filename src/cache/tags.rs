//! Surrogate keys: the `Surrogate-Key` and `Cache-Tag` names a backend gives its responses,
//! indexed so an operator can purge every stored URL that carries one name.
//!
//! The index maps each name to the URLs (primary keys) whose stored responses carry it. It is
//! bounded by the store: at most [`MAX_KEYS_PER_URL`] names of at most [`MAX_KEY_LEN`] bytes per
//! URL, and a URL's names leave the index when its entry leaves the store (the store's eviction
//! listener calls [`SurrogateIndex::forget`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use http::HeaderMap;

/// Most surrogate keys indexed per URL (over its variants); more are ignored.
pub const MAX_KEYS_PER_URL: usize = 64;

/// Longest surrogate key indexed, in bytes; longer ones are ignored.
pub const MAX_KEY_LEN: usize = 256;

/// `Surrogate-Key`: space-separated names (Fastly's convention).
pub const SURROGATE_KEY: &str = "surrogate-key";

/// `Cache-Tag`: comma-separated names (Cloudflare's and Akamai's convention).
pub const CACHE_TAG: &str = "cache-tag";

/// The surrogate keys of a response: `Surrogate-Key` split on spaces and `Cache-Tag` split on
/// commas, trimmed, empty, over-long and not visible-ASCII names dropped, duplicates removed, at
/// most [`MAX_KEYS_PER_URL`].
pub fn surrogate_keys(headers: &HeaderMap) -> Vec<String> {
    // Split as bytes and judged name by name: a name with bytes other than visible ASCII is
    // dropped by itself. (Dropping the whole line left the other names on it out of the index,
    // so a purge by one of them missed the URL.)
    let spaced = headers
        .get_all(SURROGATE_KEY)
        .iter()
        .flat_map(|v| v.as_bytes().split(u8::is_ascii_whitespace));
    let listed = headers
        .get_all(CACHE_TAG)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    let mut keys: Vec<String> = Vec::new();
    for key in spaced.chain(listed) {
        // Inner spaces and tabs can only be in a `Cache-Tag` name, as before.
        if !key
            .iter()
            .all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        {
            continue;
        }
        let Ok(key) = std::str::from_utf8(key) else {
            continue;
        };
        if key.is_empty() || key.len() > MAX_KEY_LEN || keys.iter().any(|k| k == key) {
            continue;
        }
        if keys.len() == MAX_KEYS_PER_URL {
            break;
        }
        keys.push(key.to_owned());
    }
    keys
}

/// One URL's indexed names, and which stored entry they came from.
#[derive(Debug)]
struct Indexed {
    /// Identifies the store entry (see [`SurrogateIndex::record`]).
    entry: usize,
    keys: Vec<Arc<str>>,
}

#[derive(Debug, Default)]
struct Maps {
    by_key: HashMap<Arc<str>, HashSet<Arc<str>>>,
    by_url: HashMap<Arc<str>, Indexed>,
}

impl Maps {
    fn unlink(&mut self, url: &Arc<str>, keys: &[Arc<str>]) {
        for key in keys {
            if let Some(urls) = self.by_key.get_mut(key) {
                urls.remove(url);
                if urls.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
    }
}

/// Surrogate key → stored URLs.
#[derive(Debug, Default)]
pub struct SurrogateIndex {
    maps: Mutex<Maps>,
}

impl SurrogateIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store entry `entry` (an identity of the stored value, unique while it lives) now
    /// holds `url`, its responses carrying `keys`: replaces what was indexed for `url`.
    pub fn record(&self, url: &Arc<str>, entry: usize, keys: Vec<String>) {
        let mut maps = self.lock();
        if let Some(old) = maps.by_url.remove(url) {
            maps.unlink(url, &old.keys);
        }
        if keys.is_empty() {
            return;
        }
        let keys: Vec<Arc<str>> = keys.into_iter().map(Arc::from).collect();
        for key in &keys {
            maps.by_key
                .entry(key.clone())
                .or_default()
                .insert(url.clone());
        }
        maps.by_url.insert(url.clone(), Indexed { entry, keys });
    }

    /// The store entry `entry` of `url` is gone: its names leave the index, unless a newer
    /// entry for `url` was recorded meanwhile.
    pub fn forget(&self, url: &Arc<str>, entry: usize) {
        let mut maps = self.lock();
        if maps.by_url.get(url).is_some_and(|i| i.entry == entry)
            && let Some(old) = maps.by_url.remove(url)
        {
            maps.unlink(url, &old.keys);
        }
    }

    /// The URLs whose stored responses carry `key`.
    pub fn urls(&self, key: &str) -> Vec<Arc<str>> {
        self.lock()
            .by_key
            .get(key)
            .map(|urls| urls.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Names indexed (for tests and sizing).
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn surrogate_key_is_space_separated_and_cache_tag_comma_separated() {
        let mut headers = HeaderMap::new();
        headers.append(SURROGATE_KEY, HeaderValue::from_static("  a  b\tc "));
        headers.append(SURROGATE_KEY, HeaderValue::from_static("d a"));
        headers.append(CACHE_TAG, HeaderValue::from_static("e, f ,,g h"));
        assert_eq!(
            surrogate_keys(&headers),
            ["a", "b", "c", "d", "e", "f", "g h"]
        );
    }

    #[test]
    fn names_are_bounded_in_number_and_length() {
        let mut headers = HeaderMap::new();
        let many: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        headers.insert(
            SURROGATE_KEY,
            HeaderValue::from_str(&many.join(" ")).unwrap(),
        );
        headers.insert(
            CACHE_TAG,
            HeaderValue::from_str(&"x".repeat(MAX_KEY_LEN + 1)).unwrap(),
        );
        let keys = surrogate_keys(&headers);
        assert_eq!(keys.len(), MAX_KEYS_PER_URL);
        assert!(keys.iter().all(|k| k.len() <= MAX_KEY_LEN));
    }

    #[test]
    fn the_index_follows_the_entries_it_was_recorded_for() {
        let index = SurrogateIndex::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("http://h/a"), Arc::from("http://h/b"));
        index.record(&a, 1, vec!["red".into(), "blue".into()]);
        index.record(&b, 2, vec!["red".into()]);
        let mut red = index.urls("red");
        red.sort();
        assert_eq!(red, [a.clone(), b.clone()]);
        // A new entry for `a` replaces its names.
        index.record(&a, 3, vec!["green".into()]);
        assert!(index.urls("blue").is_empty());
        assert_eq!(index.urls("red").len(), 1);
        // The old entry's removal does not touch the new one's names.
        index.forget(&a, 1);
        assert_eq!(index.urls("green").len(), 1);
        index.forget(&a, 3);
        index.forget(&b, 2);
        assert!(index.is_empty());
    }

    /// Regression (found by `names_follow_the_split_and_trim_model`): a line holding one name
    /// with a non-ASCII byte was skipped whole, so the other names on it were not indexed and
    /// a purge by one of them (`{"key": "product-1"}`) left the URL in the cache.
    #[test]
    fn a_non_ascii_name_costs_only_itself() {
        let mut headers = HeaderMap::new();
        headers.append(
            SURROGATE_KEY,
            HeaderValue::from_bytes("product-1 caf\u{e9} home".as_bytes()).unwrap(),
        );
        headers.append(CACHE_TAG, HeaderValue::from_bytes(b"a, b\xff, c").unwrap());
        assert_eq!(surrogate_keys(&headers), ["product-1", "home", "a", "c"]);
    }

    /// Properties of surrogate keys (docs/caching.md, purging): names come from any bytes a
    /// backend sends as a split/trim model says, and the index answers what was recorded.
    mod properties {
        use std::collections::{BTreeSet, HashMap};

        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Header value bytes: names from a small pool (so they repeat), separators, obs-text,
        /// anything a header value may hold.
        fn line() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                4 => prop::sample::select(vec!["a", "b", "red", "blue", "k1", "x-y", "g h"])
                    .prop_map(|s| s.as_bytes().to_vec()),
                3 => prop::sample::select(vec![" ", "  ", "\t", ",", ", ", " ,"])
                    .prop_map(|s| s.as_bytes().to_vec()),
                1 => Just("é".as_bytes().to_vec()),
                1 => Just(vec![0xff]),
                1 => Just(vec![b'n'; 257]),
                1 => Just(vec![b'm'; 256]),
                2 => vec(any::<u8>(), 1..6),
            ];
            vec(piece, 0..24).prop_map(|pieces| {
                pieces
                    .concat()
                    .into_iter()
                    .map(|b| {
                        if (b < 0x20 && b != b'\t') || b == 0x7f {
                            b'~'
                        } else {
                            b
                        }
                    })
                    .collect()
            })
        }

        /// The names of the lines as docs/caching.md words it: `Surrogate-Key` split on
        /// spaces, `Cache-Tag` on commas and trimmed; empty names, names over 256 bytes and
        /// names that are not visible ASCII (inner spaces allowed in `Cache-Tag`) left out,
        /// each on its own; first occurrences, at most 64.
        fn model(spaced: &[Vec<u8>], listed: &[Vec<u8>]) -> Vec<String> {
            let printable = |name: &[u8]| {
                name.iter()
                    .all(|&b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b))
            };
            let mut names: Vec<Vec<u8>> = Vec::new();
            for line in spaced {
                names.extend(line.split(|&b| b == b' ' || b == b'\t').map(<[u8]>::to_vec));
            }
            for line in listed {
                for name in line.split(|&b| b == b',') {
                    let start = name.iter().position(|&b| b != b' ' && b != b'\t');
                    let end = name.iter().rposition(|&b| b != b' ' && b != b'\t');
                    if let (Some(start), Some(end)) = (start, end) {
                        names.push(name[start..=end].to_vec());
                    }
                }
            }
            let mut keys: Vec<String> = Vec::new();
            for name in names {
                if name.is_empty() || name.len() > MAX_KEY_LEN || !printable(&name) {
                    continue;
                }
                let name = String::from_utf8(name).unwrap();
                if !keys.contains(&name) && keys.len() < MAX_KEYS_PER_URL {
                    keys.push(name);
                }
            }
            keys
        }

        #[derive(Debug, Clone)]
        enum Op {
            Record(usize, usize, Vec<String>),
            Forget(usize, usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            let key =
                prop::sample::select(vec!["red", "blue", "green", "k"]).prop_map(String::from);
            prop_oneof![
                (0usize..4, 0usize..6, vec(key, 0..4)).prop_map(|(u, e, mut keys)| {
                    keys.sort();
                    keys.dedup();
                    Op::Record(u, e, keys)
                }),
                (0usize..4, 0usize..6).prop_map(|(u, e)| Op::Forget(u, e)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any `Surrogate-Key` and `Cache-Tag` lines: no panic, and the names are the
            /// model's, in order; a name the index cannot hold costs only itself, never the
            /// other names on its line.
            #[test]
            fn names_follow_the_split_and_trim_model(
                spaced in vec(line(), 0..4),
                listed in vec(line(), 0..4),
            ) {
                let mut headers = HeaderMap::new();
                for line in &spaced {
                    headers.append(SURROGATE_KEY, HeaderValue::from_bytes(line).unwrap());
                }
                for line in &listed {
                    headers.append(CACHE_TAG, HeaderValue::from_bytes(line).unwrap());
                }
                let keys = surrogate_keys(&headers);
                prop_assert_eq!(&keys, &model(&spaced, &listed));
                prop_assert!(keys.len() <= MAX_KEYS_PER_URL);
            }

            /// After any records and forgets, each name leads to exactly the URLs whose latest
            /// record carries it (a forget of an older entry changes nothing), and the index
            /// holds no other name.
            #[test]
            fn the_index_answers_what_was_recorded(ops in vec(op(), 0..40)) {
                let index = SurrogateIndex::default();
                let urls: Vec<Arc<str>> =
                    (0..4).map(|i| Arc::from(format!("http://h/{i}").as_str())).collect();
                let mut model: HashMap<usize, (usize, Vec<String>)> = HashMap::new();
                for op in ops {
                    match op {
                        Op::Record(u, entry, keys) => {
                            index.record(&urls[u], entry, keys.clone());
                            if keys.is_empty() {
                                model.remove(&u);
                            } else {
                                model.insert(u, (entry, keys));
                            }
                        }
                        Op::Forget(u, entry) => {
                            index.forget(&urls[u], entry);
                            if model.get(&u).is_some_and(|(e, _)| *e == entry) {
                                model.remove(&u);
                            }
                        }
                    }
                    let mut names = BTreeSet::new();
                    for key in ["red", "blue", "green", "k"] {
                        let got: BTreeSet<Arc<str>> = index.urls(key).into_iter().collect();
                        let want: BTreeSet<Arc<str>> = model
                            .iter()
                            .filter(|(_, (_, keys))| keys.iter().any(|k| k == key))
                            .map(|(u, _)| urls[*u].clone())
                            .collect();
                        if !want.is_empty() {
                            names.insert(key);
                        }
                        prop_assert_eq!(got, want, "key {}", key);
                    }
                    prop_assert_eq!(index.len(), names.len());
                }
            }
        }
    }
}
