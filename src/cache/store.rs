//! The memory tier: stored responses by primary key (URL), each key holding its `Vary`
//! variants, bounded in bytes by a moka cache with a size weigher.
//!
//! Entries are immutable and shared (`Arc`): a hit clones a pointer and the body's `Bytes`
//! handle, never the body. Updating a key (a new variant, a 304 refresh) replaces its entry.
//!
//! With a disk tier ([`super::disk`]) below it, stores and removals go to both tiers, and a
//! memory miss is looked up on disk ([`Store::find_on_disk`]) and promoted.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};

use super::disk::DiskStore;
use super::policy::Freshness;
use super::tags::{SurrogateIndex, surrogate_keys};

/// Most variants kept per URL; the oldest goes when a new one would exceed it, so a header with
/// endless values (a `Vary: User-Agent`) cannot fill the cache with one URL.
const MAX_VARIANTS: usize = 16;

/// Bytes counted per stored response on top of its body and headers (bookkeeping).
const ENTRY_OVERHEAD: usize = 256;

/// One stored response.
#[derive(Debug)]
pub struct StoredResponse {
    /// The backend's status.
    pub status: StatusCode,
    /// The backend's headers (hop-by-hop fields removed, `Date` added when missing).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Freshness facts, computed when stored or refreshed.
    pub freshness: Freshness,
    /// The fields the response varies on, lowercased.
    pub vary_fields: Vec<HeaderName>,
    /// The request's normalised values of `vary_fields` (the secondary key, RFC 9111 §4.1).
    pub vary_key: Vec<Option<String>>,
}

impl StoredResponse {
    fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        self.body.len() + headers + ENTRY_OVERHEAD
    }

    /// A copy whose freshness lifetime ends at `now` (a soft purge): stale from now on, its
    /// stale windows counted from now.
    fn stale_from(&self, now: SystemTime) -> StoredResponse {
        let mut freshness = self.freshness.clone();
        freshness.lifetime = freshness.lifetime.min(freshness.current_age(now));
        StoredResponse {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
            freshness,
            vary_fields: self.vary_fields.clone(),
            vary_key: self.vary_key.clone(),
        }
    }

    /// How long after `now` this response can still be of any use: until the end of its stale
    /// windows, or without limit while it has a validator to be revalidated with.
    fn useful_for(&self, now: SystemTime) -> Option<Duration> {
        if super::conditional::has_validator(&self.headers) {
            return None;
        }
        let left = self.freshness.ttl(now).max(0) as u64;
        Some(Duration::from_secs(left) + self.freshness.stale_window())
    }
}

/// All stored variants of one URL, most recent first.
#[derive(Debug, Default)]
pub struct Variants {
    responses: Vec<Arc<StoredResponse>>,
    /// When the entry stops being useful (set when it is built).
    keep_for: Option<Duration>,
}

impl Variants {
    fn weight(&self, key: &str) -> u32 {
        let bytes: usize = self.responses.iter().map(|r| r.weight()).sum::<usize>() + key.len();
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    fn with(responses: Vec<Arc<StoredResponse>>) -> Variants {
        let now = SystemTime::now();
        let mut keep_for = Some(Duration::ZERO);
        for response in &responses {
            keep_for = match (keep_for, response.useful_for(now)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        Variants {
            responses,
            keep_for,
        }
    }
}

/// What the store holds for a request.
#[derive(Debug)]
pub enum Found {
    /// Nothing for the URL.
    Miss,
    /// Responses for the URL, none selected by this request's `Vary` values.
    VaryMiss,
    /// The most recent variant this request selects.
    Hit(Arc<StoredResponse>),
}

struct KeepFor;

impl moka::Expiry<Arc<str>, Arc<Variants>> for KeepFor {
    fn expire_after_create(
        &self,
        _: &Arc<str>,
        value: &Arc<Variants>,
        _: Instant,
    ) -> Option<Duration> {
        value.keep_for
    }

    fn expire_after_update(
        &self,
        _: &Arc<str>,
        value: &Arc<Variants>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        value.keep_for
    }
}

/// The memory tier.
pub struct Store {
    entries: moka::sync::Cache<Arc<str>, Arc<Variants>>,
    max_size: u64,
    /// Surrogate keys of the stored entries (see `tags.rs`).
    tags: Arc<SurrogateIndex>,
    disk: Option<Arc<DiskStore>>,
}

/// Identifies a stored entry while it lives (for the surrogate-key index).
fn entry_id(variants: &Arc<Variants>) -> usize {
    Arc::as_ptr(variants) as usize
}

/// Indexes the surrogate keys of `variants`, stored under `key`, and hands them back to store.
fn indexed(tags: &SurrogateIndex, key: &Arc<str>, variants: Variants) -> Arc<Variants> {
    let variants = Arc::new(variants);
    let mut names: Vec<String> = Vec::new();
    for response in &variants.responses {
        for name in surrogate_keys(&response.headers) {
            if names.len() < super::tags::MAX_KEYS_PER_URL && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    tags.record(key, entry_id(&variants), names);
    variants
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// An empty store holding at most `max_size` bytes.
    pub fn new(max_size: u64) -> Store {
        Store::with_disk(max_size, None)
    }

    /// An empty memory store holding at most `max_size` bytes, over `disk` if given.
    pub fn with_disk(max_size: u64, disk: Option<Arc<DiskStore>>) -> Store {
        let tags = Arc::new(SurrogateIndex::default());
        let index = tags.clone();
        Store {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_size)
                .weigher(|key: &Arc<str>, value: &Arc<Variants>| value.weight(key))
                .expire_after(KeepFor)
                // Whatever takes an entry away (eviction, expiry, removal, replacement) takes
                // its surrogate keys out of the index with it.
                .eviction_listener(move |key: Arc<Arc<str>>, value: Arc<Variants>, _| {
                    index.forget(&key, entry_id(&value));
                })
                .build(),
            max_size,
            tags,
            disk,
        }
    }

    /// The disk tier, if there is one.
    pub fn disk(&self) -> Option<&Arc<DiskStore>> {
        self.disk.as_ref()
    }

    /// On a memory miss: the variant `request` selects from the disk tier, promoted to memory.
    pub async fn find_on_disk(
        &self,
        key: &str,
        request: &HeaderMap,
    ) -> Option<Arc<StoredResponse>> {
        let found = Arc::new(self.disk.as_ref()?.find(key, request).await?);
        self.insert_in_memory(key, found.clone());
        Some(found)
    }

    /// The configured bound in bytes.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The variant of `key` that `request` selects (RFC 9111 §4.1).
    pub fn find(&self, key: &str, request: &HeaderMap) -> Found {
        let Some(variants) = self.entries.get(key) else {
            return Found::Miss;
        };
        variants
            .responses
            .iter()
            .find(|stored| {
                super::vary::secondary_key(&stored.vary_fields, request) == stored.vary_key
            })
            .map_or(Found::VaryMiss, |stored| Found::Hit(stored.clone()))
    }

    /// Stores `response` under `key`, replacing the variant with the same secondary key (and, if
    /// the response varies on other fields than before, every older variant: RFC 9111 §4.1
    /// selects by the most recent response's `Vary`).
    pub fn insert(&self, key: &str, response: StoredResponse) {
        let response = Arc::new(response);
        self.insert_in_memory(key, response.clone());
        if let Some(disk) = &self.disk {
            disk.write(&Arc::from(key), response);
        }
    }

    fn insert_in_memory(&self, key: &str, response: Arc<StoredResponse>) {
        let key: Arc<str> = Arc::from(key);
        self.entries
            .entry(key.clone())
            .and_compute_with(|existing| {
                let mut responses = vec![response.clone()];
                if let Some(existing) = existing {
                    responses.extend(
                        existing
                            .value()
                            .responses
                            .iter()
                            .filter(|old| {
                                old.vary_fields == response.vary_fields
                                    && old.vary_key != response.vary_key
                            })
                            .take(MAX_VARIANTS - 1)
                            .cloned(),
                    );
                }
                moka::ops::compute::Op::Put(indexed(&self.tags, &key, Variants::with(responses)))
            });
    }

    /// Replaces the stored `old` with `new` (a 304 refreshed it); nothing happens if `old` is no
    /// longer stored (a newer response replaced it meanwhile).
    pub fn replace(&self, key: &str, old: &Arc<StoredResponse>, new: Arc<StoredResponse>) {
        let key: Arc<str> = Arc::from(key);
        let mut replaced = false;
        self.entries
            .entry(key.clone())
            .and_compute_with(|existing| {
                let Some(existing) = existing else {
                    return moka::ops::compute::Op::Nop;
                };
                let responses = &existing.value().responses;
                if !responses.iter().any(|r| Arc::ptr_eq(r, old)) {
                    return moka::ops::compute::Op::Nop;
                }
                let updated = responses
                    .iter()
                    .map(|r| {
                        if Arc::ptr_eq(r, old) {
                            new.clone()
                        } else {
                            r.clone()
                        }
                    })
                    .collect();
                replaced = true;
                moka::ops::compute::Op::Put(indexed(&self.tags, &key, Variants::with(updated)))
            });
        if replaced && let Some(disk) = &self.disk {
            disk.write(&key, new);
        }
    }

    /// Removes every variant of `key`; true if there was any.
    pub fn remove(&self, key: &str) -> bool {
        let on_disk = self.disk.as_ref().is_some_and(|disk| disk.remove(key));
        self.entries.remove(key).is_some() || on_disk
    }

    /// Removes every key that starts with `prefix`; returns how many.
    pub fn remove_prefix(&self, prefix: &str) -> usize {
        let mut removed: std::collections::HashSet<Arc<str>> = self
            .keys_with_prefix(prefix)
            .into_iter()
            .filter(|key| self.entries.remove(key.as_ref()).is_some())
            .collect();
        if let Some(disk) = &self.disk {
            removed.extend(disk.remove_prefix(prefix));
        }
        removed.len()
    }

    /// Marks every variant of `key` stale from now on (a soft purge): the next request
    /// revalidates it, and until then, or if the backend fails, `stale-while-revalidate` and
    /// `stale-if-error` may still serve it. True if there was any.
    pub fn mark_stale(&self, key: &str) -> bool {
        let key: Arc<str> = Arc::from(key);
        let now = SystemTime::now();
        let mut marked = Vec::new();
        let entry = self
            .entries
            .entry(key.clone())
            .and_compute_with(|existing| {
                let Some(existing) = existing else {
                    return moka::ops::compute::Op::Nop;
                };
                let responses: Vec<Arc<StoredResponse>> = existing
                    .value()
                    .responses
                    .iter()
                    .map(|r| Arc::new(r.stale_from(now)))
                    .collect();
                marked.clone_from(&responses);
                moka::ops::compute::Op::Put(indexed(&self.tags, &key, Variants::with(responses)))
            });
        // The disk copies go stale too, or a restart (or a promotion) would make them fresh.
        if let Some(disk) = &self.disk {
            for response in marked {
                disk.write(&key, response);
            }
        }
        !matches!(entry, moka::ops::compute::CompResult::StillNone(_))
    }

    /// Marks every key that starts with `prefix` stale; returns how many.
    pub fn mark_stale_prefix(&self, prefix: &str) -> usize {
        self.keys_with_prefix(prefix)
            .iter()
            .filter(|key| self.mark_stale(key))
            .count()
    }

    /// Removes (or with `soft`, marks stale) every URL whose responses carry the surrogate key
    /// `name`; returns how many.
    pub fn purge_surrogate_key(&self, name: &str, soft: bool) -> usize {
        self.tags
            .urls(name)
            .iter()
            .filter(|key| {
                if soft {
                    self.mark_stale(key)
                } else {
                    self.remove(key)
                }
            })
            .count()
    }

    fn keys_with_prefix(&self, prefix: &str) -> Vec<Arc<str>> {
        self.entries
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| Arc::clone(&*key))
            .collect()
    }

    /// Bytes held (approximate until pending maintenance has run).
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// URLs held.
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Runs pending evictions now, so sizes are exact (tests, metrics).
    pub fn sync(&self) {
        self.entries.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn response(body: &str, vary: &[&str], key: &[Option<&str>], etag: bool) -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        if etag {
            headers.insert("etag", HeaderValue::from_static("\"e\""));
        }
        let now = SystemTime::now();
        StoredResponse {
            status: StatusCode::OK,
            freshness: Freshness::of(StatusCode::OK, &headers, now, now, 0.1),
            headers,
            body: Bytes::from(body.to_owned()),
            vary_fields: vary
                .iter()
                .map(|v| HeaderName::from_bytes(v.as_bytes()).unwrap())
                .collect(),
            vary_key: key.iter().map(|k| k.map(str::to_owned)).collect(),
        }
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn body(found: Found) -> Option<String> {
        match found {
            Found::Hit(stored) => Some(String::from_utf8_lossy(&stored.body).into_owned()),
            _ => None,
        }
    }

    #[test]
    fn variants_are_selected_by_their_secondary_key() {
        let store = Store::new(1 << 20);
        assert!(matches!(store.find("k", &HeaderMap::new()), Found::Miss));
        store.insert(
            "k",
            response("en", &["accept-language"], &[Some("en")], false),
        );
        store.insert(
            "k",
            response("fr", &["accept-language"], &[Some("fr")], false),
        );
        assert_eq!(
            body(store.find("k", &request(&[("accept-language", "fr")]))).as_deref(),
            Some("fr")
        );
        assert_eq!(
            body(store.find("k", &request(&[("accept-language", "en")]))).as_deref(),
            Some("en")
        );
        assert!(matches!(
            store.find("k", &request(&[("accept-language", "de")])),
            Found::VaryMiss
        ));
        assert!(matches!(
            store.find("k", &HeaderMap::new()),
            Found::VaryMiss
        ));
        store.insert(
            "k",
            response("en2", &["accept-language"], &[Some("en")], false),
        );
        assert_eq!(
            body(store.find("k", &request(&[("accept-language", "en")]))).as_deref(),
            Some("en2")
        );
        assert_eq!(
            body(store.find("k", &request(&[("accept-language", "fr")]))).as_deref(),
            Some("fr")
        );
        // A response that varies differently replaces every older variant.
        store.insert("k", response("any", &[], &[], false));
        assert_eq!(
            body(store.find("k", &request(&[("accept-language", "fr")]))).as_deref(),
            Some("any")
        );
    }

    #[test]
    fn replace_swaps_only_the_response_it_refreshed() {
        let store = Store::new(1 << 20);
        store.insert("k", response("v1", &[], &[], true));
        let Found::Hit(old) = store.find("k", &HeaderMap::new()) else {
            panic!("stored")
        };
        store.replace(
            "k",
            &old,
            Arc::new(response("v1-refreshed", &[], &[], true)),
        );
        assert_eq!(
            body(store.find("k", &HeaderMap::new())).as_deref(),
            Some("v1-refreshed")
        );
        // `old` is gone now: replacing it again does nothing.
        store.replace("k", &old, Arc::new(response("late", &[], &[], true)));
        assert_eq!(
            body(store.find("k", &HeaderMap::new())).as_deref(),
            Some("v1-refreshed")
        );
    }

    #[test]
    fn the_store_is_bounded_in_bytes() {
        let store = Store::new(64 * 1024);
        let big = "x".repeat(10 * 1024);
        for i in 0..50 {
            store.insert(&format!("k{i}"), response(&big, &[], &[], true));
        }
        store.sync();
        assert!(
            store.weighted_size() <= 64 * 1024,
            "{}",
            store.weighted_size()
        );
        assert!(store.entry_count() < 50);
    }

    fn tagged(body: &str, tags: &'static str) -> StoredResponse {
        let mut stored = response(body, &[], &[], true);
        stored
            .headers
            .insert("surrogate-key", HeaderValue::from_static(tags));
        stored
    }

    #[test]
    fn surrogate_keys_purge_their_urls_and_leave_the_index_with_them() {
        let store = Store::new(1 << 20);
        store.insert("http://a/1", tagged("1", "red blue"));
        store.insert("http://a/2", tagged("2", "red"));
        store.insert("http://a/3", tagged("3", "green"));
        assert_eq!(store.purge_surrogate_key("red", false), 2);
        assert!(matches!(
            store.find("http://a/1", &HeaderMap::new()),
            Found::Miss
        ));
        assert!(matches!(
            store.find("http://a/3", &HeaderMap::new()),
            Found::Hit(_)
        ));
        store.sync();
        assert_eq!(store.tags.urls("blue"), Vec::<Arc<str>>::new());
        // A replaced entry's old names go; its new ones stay.
        store.insert("http://a/3", tagged("3b", "yellow"));
        store.sync();
        assert!(store.tags.urls("green").is_empty());
        assert_eq!(store.tags.urls("yellow").len(), 1);
        store.remove("http://a/3");
        store.sync();
        assert!(store.tags.is_empty());
    }

    #[test]
    fn a_soft_purge_keeps_the_entry_but_stale() {
        let store = Store::new(1 << 20);
        store.insert("http://a/1", tagged("1", "red"));
        let now = SystemTime::now();
        let Found::Hit(before) = store.find("http://a/1", &HeaderMap::new()) else {
            panic!("stored")
        };
        assert!(before.freshness.is_fresh(now));
        assert_eq!(store.purge_surrogate_key("red", true), 1);
        let Found::Hit(after) = store.find("http://a/1", &HeaderMap::new()) else {
            panic!("still stored")
        };
        assert!(!after.freshness.is_fresh(now));
        assert_eq!(after.body, before.body);
        assert!(!store.mark_stale("http://a/none"));
        assert_eq!(store.mark_stale_prefix("http://a/"), 1);
        assert_eq!(store.tags.urls("red").len(), 1, "still indexed");
    }

    #[test]
    fn keys_are_removed_one_by_one_or_by_prefix() {
        let store = Store::new(1 << 20);
        for key in ["http://a/x", "http://a/x/1", "http://a/y"] {
            store.insert(key, response("b", &[], &[], true));
        }
        assert!(store.remove("http://a/y"));
        assert!(!store.remove("http://a/y"));
        assert_eq!(store.remove_prefix("http://a/x"), 2);
        store.sync();
        assert_eq!(store.entry_count(), 0);
    }
}
