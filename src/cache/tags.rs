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
/// commas, trimmed, empty and over-long names dropped, duplicates removed, at most
/// [`MAX_KEYS_PER_URL`].
pub fn surrogate_keys(headers: &HeaderMap) -> Vec<String> {
    let spaced = headers
        .get_all(SURROGATE_KEY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split_ascii_whitespace());
    let listed = headers
        .get_all(CACHE_TAG)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    let mut keys: Vec<String> = Vec::new();
    for key in spaced.chain(listed) {
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
}
