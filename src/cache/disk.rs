//! The disk tier: stored responses as files in one directory, bounded in bytes by evicting the
//! least recently used, found again after a restart by scanning the directory.
//!
//! Hand-written rather than built on a crate: `foyer` brings its own memory tier, runtime and
//! file layout (we already have the moka memory tier, and want one file per response that a
//! scan can check), and `cacache` is stale. What is needed here is small: a file format, an
//! index, and one writer thread.
//!
//! One file per stored response (per URL and `Vary` variant), named by a hash of both:
//!
//! ```text
//! "GHC1" | metadata length (u32 LE) | metadata (JSON) | body
//! ```
//!
//! The metadata holds the key, status, headers, the `Vary` fields and the request's values for
//! them, the freshness facts (`Age` after a restart counts the time since the response was
//! received) and the body's length and xxh3 hash. A file is written under a temporary name and
//! renamed into place, so a reader never sees half an entry; a file cut short by a crash or
//! damaged later fails the length or hash check and is deleted, never served. (So no fsync is
//! needed for correctness: an entry lost in a power cut is a miss.)
//!
//! Writes leave the request path: [`DiskStore::write`] hands the response to a writer thread
//! through a bounded queue, and skips the write when the queue is full. Reads run on tokio's
//! blocking pool. Bodies are read whole: a stored body is at most the route's
//! `max_object_size`, which the memory tier holds whole anyway, and a disk hit is promoted to
//! memory.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::directives::CacheControl;
use super::policy::Freshness;
use super::store::StoredResponse;

/// First bytes of every entry file (format version 1).
const MAGIC: &[u8; 4] = b"GHC1";
/// Extension of entry files; anything else in the directory is left alone (temporary files
/// of ours excepted).
const EXTENSION: &str = "ghc";
/// Prefix of files being written.
const TEMP_PREFIX: &str = ".tmp-";
/// Largest metadata block accepted when reading (headers are bounded far below this).
const MAX_METADATA: u32 = 4 << 20;
/// Responses waiting for the writer; beyond this new ones are not written to disk.
const QUEUE: usize = 64;
/// Most variants kept per URL, as in the memory tier.
const MAX_VARIANTS: usize = 16;
/// Most per-key removals remembered for the writer (see [`Removals`]).
const MAX_REMOVALS: usize = 1024;

/// Where and how much: the `[cache] disk` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLimits {
    /// The directory (created if missing).
    pub dir: PathBuf,
    /// Most bytes the entry files take together.
    pub max_size: u64,
    /// Largest entry file written.
    pub max_object_size: u64,
}

/// The metadata block of an entry file.
#[derive(Debug, Serialize, Deserialize)]
struct Metadata {
    key: String,
    status: u16,
    /// Header values as Latin-1 text: every byte one char, so any value round-trips.
    headers: Vec<(String, String)>,
    vary_fields: Vec<String>,
    vary_key: Vec<Option<String>>,
    lifetime: u64,
    initial_age: u64,
    response_time_secs: u64,
    response_time_nanos: u32,
    body_len: u64,
    body_xxh3: u64,
}

/// Why a file is not a usable entry.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// Not an entry file of this version.
    #[error("bad magic")]
    Magic,
    /// The metadata does not parse or has impossible values.
    #[error("bad metadata: {0}")]
    Metadata(String),
    /// Shorter or longer than its metadata says (a write cut short).
    #[error("length mismatch")]
    Length,
    /// The body's hash does not match (damaged).
    #[error("body hash mismatch")]
    Hash,
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn from_latin1(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

/// The bytes of an entry file for `response` stored under `key`.
pub fn encode(key: &str, response: &StoredResponse) -> Vec<u8> {
    let since_epoch = response
        .freshness
        .response_time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let metadata = Metadata {
        key: key.to_owned(),
        status: response.status.as_u16(),
        headers: response
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), latin1(value.as_bytes())))
            .collect(),
        vary_fields: response
            .vary_fields
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect(),
        vary_key: response.vary_key.clone(),
        lifetime: response.freshness.lifetime,
        initial_age: response.freshness.initial_age,
        response_time_secs: since_epoch.as_secs(),
        response_time_nanos: since_epoch.subsec_nanos(),
        body_len: response.body.len() as u64,
        body_xxh3: xxhash_rust::xxh3::xxh3_64(&response.body),
    };
    // Serialising plain strings and numbers cannot fail.
    let json = serde_json::to_vec(&metadata).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + json.len() + response.body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&response.body);
    out
}

/// Reads the magic and metadata at the start of `reader`; `file_len` is checked against them.
fn read_head(reader: &mut impl Read, file_len: u64) -> Result<(Metadata, u64), FormatError> {
    let mut head = [0u8; 8];
    reader.read_exact(&mut head).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FormatError::Length,
        _ => FormatError::Io(e),
    })?;
    if &head[..4] != MAGIC {
        return Err(FormatError::Magic);
    }
    let json_len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if json_len > MAX_METADATA || u64::from(json_len) + 8 > file_len {
        return Err(FormatError::Length);
    }
    let mut json = vec![0u8; json_len as usize];
    reader.read_exact(&mut json)?;
    let metadata: Metadata =
        serde_json::from_slice(&json).map_err(|e| FormatError::Metadata(e.to_string()))?;
    if 8 + u64::from(json_len) + metadata.body_len != file_len {
        return Err(FormatError::Length);
    }
    Ok((metadata, 8 + u64::from(json_len)))
}

/// The key and response in an entry file's bytes, checked whole.
pub fn decode(bytes: &[u8]) -> Result<(String, StoredResponse), FormatError> {
    let (metadata, body_at) = read_head(&mut &bytes[..], bytes.len() as u64)?;
    let body = bytes.get(body_at as usize..).ok_or(FormatError::Length)?;
    if xxhash_rust::xxh3::xxh3_64(body) != metadata.body_xxh3 {
        return Err(FormatError::Hash);
    }
    let body = Bytes::copy_from_slice(body);
    into_response(metadata, body)
}

fn into_response(metadata: Metadata, body: Bytes) -> Result<(String, StoredResponse), FormatError> {
    let bad = |what: &str| FormatError::Metadata(what.to_owned());
    let status = StatusCode::from_u16(metadata.status).map_err(|_| bad("status"))?;
    let mut headers = HeaderMap::with_capacity(metadata.headers.len());
    for (name, value) in &metadata.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("header name"))?;
        let value = from_latin1(value)
            .and_then(|v| HeaderValue::from_bytes(&v).ok())
            .ok_or_else(|| bad("header value"))?;
        headers.append(name, value);
    }
    let vary_fields = metadata
        .vary_fields
        .iter()
        .map(|f| HeaderName::from_bytes(f.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("vary field"))?;
    if vary_fields.len() != metadata.vary_key.len() || metadata.response_time_nanos >= 1_000_000_000
    {
        return Err(bad("vary key or time"));
    }
    let response_time = UNIX_EPOCH
        .checked_add(Duration::new(
            metadata.response_time_secs,
            metadata.response_time_nanos,
        ))
        .ok_or_else(|| bad("time"))?;
    let freshness = Freshness {
        cc: CacheControl::of(&headers),
        lifetime: metadata.lifetime,
        initial_age: metadata.initial_age,
        response_time,
    };
    Ok((
        metadata.key,
        StoredResponse {
            status,
            headers,
            body,
            freshness,
            vary_fields,
            vary_key: metadata.vary_key,
        },
    ))
}

/// The file name of `key`'s variant with secondary key `vary_key`.
fn file_id(key: &str, vary_key: &[Option<String>]) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(key.as_bytes());
    for value in vary_key {
        match value {
            // Separators no header value contains keep ("a", "b") apart from ("ab").
            Some(value) => {
                hasher.update(b"\0s");
                hasher.update(value.as_bytes());
            }
            None => hasher.update(b"\0n"),
        }
    }
    hasher.digest128()
}

/// One entry file in the index.
#[derive(Debug)]
struct FileEntry {
    key: Arc<str>,
    vary_fields: Vec<HeaderName>,
    vary_key: Vec<Option<String>>,
    size: u64,
    /// Position in the recency order (higher is more recent).
    last_use: u64,
}

/// Removals the writer must respect: a response queued before its key was removed (an unsafe
/// request, a purge) must not be written after the removal. Each removal gets a number; a
/// queued write carries the number current when it was queued. Bounded: beyond
/// `MAX_REMOVALS` keys, `floor` rises instead and every write queued before it is dropped.
#[derive(Debug, Default)]
struct Removals {
    counter: u64,
    floor: u64,
    keys: HashMap<Arc<str>, u64>,
}

impl Removals {
    fn removed(&mut self, key: &Arc<str>) {
        self.counter += 1;
        if self.keys.len() >= MAX_REMOVALS {
            self.removed_all();
        } else {
            self.keys.insert(key.clone(), self.counter);
        }
    }

    fn removed_all(&mut self) {
        self.floor = self.counter;
        self.keys.clear();
    }

    fn outdated(&self, key: &str, queued_at: u64) -> bool {
        queued_at < self.floor || self.keys.get(key).is_some_and(|&at| queued_at < at)
    }
}

#[derive(Debug, Default)]
struct Index {
    files: HashMap<u128, FileEntry>,
    by_key: HashMap<Arc<str>, Vec<u128>>,
    /// Recency order: `last_use` → file.
    recency: BTreeMap<u64, u128>,
    tick: u64,
    total: u64,
    removals: Removals,
}

impl Index {
    fn touch(&mut self, id: u128) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(entry) = self.files.get_mut(&id) {
            self.recency.remove(&entry.last_use);
            entry.last_use = tick;
            self.recency.insert(tick, id);
        }
    }

    fn add(&mut self, id: u128, entry: FileEntry) {
        self.forget(id);
        self.tick += 1;
        let entry = FileEntry {
            last_use: self.tick,
            ..entry
        };
        self.recency.insert(entry.last_use, id);
        self.by_key.entry(entry.key.clone()).or_default().push(id);
        self.total += entry.size;
        self.files.insert(id, entry);
    }

    /// Drops `id` from the index; the caller deletes the file.
    fn forget(&mut self, id: u128) -> Option<FileEntry> {
        let entry = self.files.remove(&id)?;
        self.recency.remove(&entry.last_use);
        self.total -= entry.size;
        if let Some(ids) = self.by_key.get_mut(&entry.key) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_key.remove(&entry.key);
            }
        }
        Some(entry)
    }

    /// Forgets least recently used files until `incoming` more bytes fit under `max_size`.
    fn make_room(&mut self, incoming: u64, max_size: u64) -> Vec<u128> {
        let mut victims = Vec::new();
        while self.total + incoming > max_size {
            let Some((_, id)) = self.recency.pop_first() else {
                break;
            };
            self.forget(id);
            victims.push(id);
        }
        victims
    }
}

#[derive(Debug)]
struct Shared {
    limits: DiskLimits,
    index: Mutex<Index>,
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: u128) -> PathBuf {
        self.limits.dir.join(format!("{id:032x}.{EXTENSION}"))
    }

    fn delete(&self, ids: &[u128]) {
        for id in ids {
            // Already gone is fine; anything else leaves a file the next scan accounts for.
            let _ = fs::remove_file(self.path(*id));
        }
    }
}

struct Job {
    key: Arc<str>,
    response: Arc<StoredResponse>,
    queued_at: u64,
}

/// The disk tier of one cache directory.
pub struct DiskStore {
    shared: Arc<Shared>,
    queue: SyncSender<Job>,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

/// Creates `dir` if needed and proves it writable by writing and removing a file in it.
pub fn check_writable(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let probe = dir.join(format!(
        "{TEMP_PREFIX}probe-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let written = File::create(&probe).and_then(|mut f| f.write_all(b"probe"));
    let removed = fs::remove_file(&probe);
    written.and(removed)
}

impl DiskStore {
    /// Opens the directory of `limits` (creating it), indexes the entry files found there
    /// (deleting damaged ones and leftover temporary files, then the least recently written
    /// beyond `max_size`) and starts the writer thread, which ends when the store is dropped.
    pub fn open(limits: DiskLimits) -> io::Result<DiskStore> {
        check_writable(&limits.dir)?;
        let shared = Arc::new(Shared {
            index: Mutex::new(scan(&limits.dir)?),
            limits,
        });
        {
            let mut index = shared.index();
            let victims = index.make_room(0, shared.limits.max_size);
            drop(index);
            shared.delete(&victims);
        }
        let (queue, jobs) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("gatehouse-cache-disk".to_owned())
            .spawn(move || write_loop(&writer, &jobs))?;
        Ok(DiskStore { shared, queue })
    }

    /// Its directory and bounds.
    pub fn limits(&self) -> &DiskLimits {
        &self.shared.limits
    }

    /// Bytes the indexed entry files take.
    pub fn total_size(&self) -> u64 {
        self.shared.index().total
    }

    /// Entry files indexed.
    pub fn entry_count(&self) -> usize {
        self.shared.index().files.len()
    }

    /// The stored response for `key` that `request` selects, read from its file; `None` when
    /// there is none or its file turns out damaged (it is then deleted).
    pub async fn find(&self, key: &str, request: &HeaderMap) -> Option<StoredResponse> {
        let (id, size) = {
            let mut index = self.shared.index();
            let id = index.by_key.get(key)?.iter().copied().find(|id| {
                index.files.get(id).is_some_and(|entry| {
                    super::vary::secondary_key(&entry.vary_fields, request) == entry.vary_key
                })
            })?;
            let size = index.files.get(&id)?.size;
            index.touch(id);
            (id, size)
        };
        let path = self.shared.path(id);
        let read = tokio::task::spawn_blocking(move || -> Result<_, FormatError> {
            // Never more than the size the index knows: a file that grew since (replaced
            // behind Gatehouse's back) is refused rather than read whole into memory.
            let mut bytes = Vec::new();
            io::Read::take(fs::File::open(path)?, size.saturating_add(1))
                .read_to_end(&mut bytes)?;
            if bytes.len() as u64 != size {
                return Err(FormatError::Length);
            }
            decode(&bytes)
        })
        .await;
        match read {
            Ok(Ok((stored_key, response))) if stored_key == key => Some(response),
            outcome => {
                if let Ok(Err(error)) = &outcome {
                    tracing::warn!(%key, %error, "damaged cache file deleted");
                }
                // Damaged, gone, or (astronomically unlikely) another key with the same hash.
                self.shared.index().forget(id);
                self.shared.delete(&[id]);
                None
            }
        }
    }

    /// Queues `response` to be written under `key`. Not written when larger than
    /// `max_object_size`, or when the writer is behind (the queue is full).
    pub fn write(&self, key: &Arc<str>, response: Arc<StoredResponse>) {
        // `max_object_size` bounds bodies, as the memory tier's does.
        if response.body.len() as u64 > self.shared.limits.max_object_size {
            return;
        }
        let queued_at = self.shared.index().removals.counter;
        let job = Job {
            key: key.clone(),
            response,
            queued_at,
        };
        if let Err(TrySendError::Full(job)) = self.queue.try_send(job) {
            tracing::debug!(key = %job.key, "cache disk writer behind; entry not written");
        }
    }

    /// Removes every variant of `key`; true if there was any.
    pub fn remove(&self, key: &str) -> bool {
        let key: Arc<str> = Arc::from(key);
        let mut index = self.shared.index();
        index.removals.removed(&key);
        let ids = index.by_key.get(&key).cloned().unwrap_or_default();
        for id in &ids {
            index.forget(*id);
        }
        drop(index);
        self.shared.delete(&ids);
        !ids.is_empty()
    }

    /// Removes every key that starts with `prefix`; returns the keys removed.
    pub fn remove_prefix(&self, prefix: &str) -> Vec<Arc<str>> {
        let mut index = self.shared.index();
        index.removals.counter += 1;
        index.removals.removed_all();
        let keys: Vec<Arc<str>> = index
            .by_key
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect();
        let mut ids = Vec::new();
        for key in &keys {
            ids.extend(index.by_key.get(key).cloned().unwrap_or_default());
        }
        for id in &ids {
            index.forget(*id);
        }
        drop(index);
        self.shared.delete(&ids);
        keys
    }
}

/// Indexes the entry files in `dir`, oldest first in the recency order.
fn scan(dir: &Path) -> io::Result<Index> {
    let mut found = Vec::new();
    for item in fs::read_dir(dir)? {
        let Ok(item) = item else { continue };
        let path = item.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            // A write cut short by a crash.
            let _ = fs::remove_file(&path);
            continue;
        }
        let Some(id) = name
            .strip_suffix(&format!(".{EXTENSION}"))
            .and_then(|hex| u128::from_str_radix(hex, 16).ok())
        else {
            continue;
        };
        match index_file(&path, id) {
            Ok((entry, modified)) => found.push((modified, id, entry)),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "damaged cache file deleted");
                let _ = fs::remove_file(&path);
            }
        }
    }
    found.sort_by_key(|(modified, _, _)| *modified);
    let mut index = Index::default();
    for (_, id, entry) in found {
        index.add(id, entry);
    }
    Ok(index)
}

/// The index entry of one file, from its head only (the body is checked when read).
fn index_file(path: &Path, id: u128) -> Result<(FileEntry, SystemTime), FormatError> {
    let mut file = File::open(path)?;
    let info = file.metadata()?;
    let (metadata, _) = read_head(&mut io::BufReader::new(&mut file), info.len())?;
    if file_id(&metadata.key, &metadata.vary_key) != id {
        return Err(FormatError::Metadata("name does not match".to_owned()));
    }
    let vary_fields = metadata
        .vary_fields
        .iter()
        .map(|f| HeaderName::from_bytes(f.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| FormatError::Metadata("vary field".to_owned()))?;
    let entry = FileEntry {
        key: Arc::from(metadata.key),
        vary_fields,
        vary_key: metadata.vary_key,
        size: info.len(),
        last_use: 0,
    };
    Ok((entry, info.modified().unwrap_or(UNIX_EPOCH)))
}

/// The writer thread: writes queued responses until the store is dropped.
fn write_loop(shared: &Shared, jobs: &Receiver<Job>) {
    loop {
        let job = match jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Empty) => {
                // Nothing queued: every write queued later carries a newer number than the
                // removals so far, so they need not be remembered any longer.
                shared.index().removals.removed_all();
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(TryRecvError::Disconnected) => return,
        };
        if let Err(error) = write_one(shared, &job) {
            tracing::warn!(key = %job.key, %error, "cache entry not written to disk");
        }
    }
}

fn write_one(shared: &Shared, job: &Job) -> io::Result<()> {
    let bytes = encode(&job.key, &job.response);
    let size = bytes.len() as u64;
    if size > shared.limits.max_size {
        return Ok(());
    }
    let id = file_id(&job.key, &job.response.vary_key);
    {
        let mut index = shared.index();
        if index.removals.outdated(&job.key, job.queued_at) {
            return Ok(());
        }
        // The file about to be replaced frees its size (and is overwritten by the rename).
        let replaced = index.forget(id).map(|_| id);
        let mut victims = index.make_room(size, shared.limits.max_size);
        drop(index);
        // Removed before the rename below, so the new file is never deleted as a victim.
        victims.extend(replaced);
        victims.retain(|victim| *victim != id);
        shared.delete(&victims);
    }
    let temp = shared.limits.dir.join(format!(
        "{TEMP_PREFIX}{id:032x}-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    // From here on `id` is out of the index: whatever happens, no file of the old version may
    // stay behind untracked (a removal meanwhile could not see it, and a restart would serve it).
    let abandon = |temp: &Path| {
        let _ = fs::remove_file(temp);
        shared.delete(&[id]);
    };
    let written = File::create(&temp).and_then(|mut file| file.write_all(&bytes));
    if let Err(error) = written {
        abandon(&temp);
        return Err(error);
    }
    let mut index = shared.index();
    // A removal may have come while the file was written.
    if index.removals.outdated(&job.key, job.queued_at) {
        drop(index);
        abandon(&temp);
        return Ok(());
    }
    if let Err(error) = fs::rename(&temp, shared.path(id)) {
        drop(index);
        abandon(&temp);
        return Err(error);
    }
    // The memory tier's rule: a response that varies on other fields than before replaces
    // every older variant; and at most MAX_VARIANTS per URL.
    let mut dropped = Vec::new();
    let siblings = index.by_key.get(&job.key).cloned().unwrap_or_default();
    for sibling in &siblings {
        let differs = index
            .files
            .get(sibling)
            .is_some_and(|entry| entry.vary_fields != job.response.vary_fields);
        if differs {
            index.forget(*sibling);
            dropped.push(*sibling);
        }
    }
    let kept: Vec<u128> = index.by_key.get(&job.key).cloned().unwrap_or_default();
    if kept.len() >= MAX_VARIANTS {
        let mut by_age: Vec<(u64, u128)> = kept
            .iter()
            .filter_map(|id| index.files.get(id).map(|e| (e.last_use, *id)))
            .collect();
        by_age.sort_unstable();
        for (_, old) in by_age.iter().take(kept.len() + 1 - MAX_VARIANTS) {
            index.forget(*old);
            dropped.push(*old);
        }
    }
    index.add(
        id,
        FileEntry {
            key: job.key.clone(),
            vary_fields: job.response.vary_fields.clone(),
            vary_key: job.response.vary_key.clone(),
            size,
            last_use: 0,
        },
    );
    drop(index);
    shared.delete(&dropped);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &str, vary: Option<(&str, &str)>) -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        headers.append("x-multi", HeaderValue::from_static("one"));
        headers.append("x-multi", HeaderValue::from_bytes(b"two \xe9").unwrap());
        let now = SystemTime::now();
        StoredResponse {
            status: StatusCode::OK,
            freshness: Freshness::of(StatusCode::OK, &headers, now, now, 0.1),
            headers,
            body: Bytes::from(body.to_owned()),
            vary_fields: vary
                .iter()
                .map(|(name, _)| HeaderName::from_bytes(name.as_bytes()).unwrap())
                .collect(),
            vary_key: vary
                .iter()
                .map(|(_, value)| Some(value.to_string()))
                .collect(),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-disk-{name}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn limits(dir: &Path, max_size: u64) -> DiskLimits {
        DiskLimits {
            dir: dir.to_owned(),
            max_size,
            max_object_size: 1 << 20,
        }
    }

    /// Waits (bounded) until the writer has indexed `count` entries.
    fn wait_for(store: &DiskStore, count: usize) {
        for _ in 0..500 {
            if store.entry_count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the writer did not write {count} entries");
    }

    fn entry_files(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == EXTENSION))
            .collect()
    }

    #[test]
    fn entries_round_trip_through_the_file_format() {
        let original = response("hello body", Some(("accept-language", "fr")));
        let bytes = encode("http://a/x", &original);
        let (key, decoded) = decode(&bytes).unwrap();
        assert_eq!(key, "http://a/x");
        assert_eq!(decoded.status, original.status);
        assert_eq!(decoded.headers, original.headers);
        assert_eq!(decoded.body, original.body);
        assert_eq!(decoded.vary_fields, original.vary_fields);
        assert_eq!(decoded.vary_key, original.vary_key);
        assert_eq!(decoded.freshness.lifetime, 60);
        assert_eq!(
            decoded.freshness.response_time,
            original.freshness.response_time
        );
        assert_eq!(decoded.freshness.cc.max_age, Some(60));
    }

    #[test]
    fn truncated_extended_or_damaged_files_are_rejected() {
        let bytes = encode("http://a/x", &response("hello body", None));
        for cut in [0, 3, 8, 20, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(b'!');
        assert!(matches!(decode(&longer), Err(FormatError::Length)));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(decode(&flipped), Err(FormatError::Hash)));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(matches!(decode(&magic), Err(FormatError::Magic)));
        let mut huge_length = bytes;
        huge_length[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge_length).is_err());
    }

    #[tokio::test]
    async fn entries_survive_reopening_and_damaged_files_are_deleted() {
        let dir = temp_dir("reopen");
        let store = DiskStore::open(limits(&dir, 1 << 20)).unwrap();
        store.write(&Arc::from("http://a/x"), Arc::new(response("x body", None)));
        store.write(&Arc::from("http://a/y"), Arc::new(response("y body", None)));
        wait_for(&store, 2);
        drop(store);
        // A damaged copy of a real entry, a stray temporary file, an unrelated file.
        let damaged = dir.join(format!("{:032x}.{EXTENSION}", file_id("http://a/z", &[])));
        let mut bytes = encode("http://a/z", &response("z body", None));
        bytes.truncate(bytes.len() - 2);
        fs::write(&damaged, bytes).unwrap();
        fs::write(dir.join(".tmp-leftover"), b"half").unwrap();
        fs::write(dir.join("README"), b"not ours").unwrap();

        let store = DiskStore::open(limits(&dir, 1 << 20)).unwrap();
        assert_eq!(store.entry_count(), 2);
        assert!(!damaged.exists());
        assert!(!dir.join(".tmp-leftover").exists());
        assert!(dir.join("README").exists());
        let found = store.find("http://a/x", &HeaderMap::new()).await.unwrap();
        assert_eq!(found.body, Bytes::from_static(b"x body"));
        assert!(store.find("http://a/z", &HeaderMap::new()).await.is_none());

        // Damaged after indexing: found on read, deleted, not served.
        let y = dir.join(format!("{:032x}.{EXTENSION}", file_id("http://a/y", &[])));
        let mut bytes = fs::read(&y).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&y, bytes).unwrap();
        assert!(store.find("http://a/y", &HeaderMap::new()).await.is_none());
        assert!(!y.exists());
        assert_eq!(store.entry_count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn variants_are_found_by_their_vary_values() {
        let dir = temp_dir("vary");
        let store = DiskStore::open(limits(&dir, 1 << 20)).unwrap();
        let key: Arc<str> = Arc::from("http://a/v");
        store.write(
            &key,
            Arc::new(response("en", Some(("accept-language", "en")))),
        );
        store.write(
            &key,
            Arc::new(response("fr", Some(("accept-language", "fr")))),
        );
        wait_for(&store, 2);
        let mut request = HeaderMap::new();
        request.insert("accept-language", HeaderValue::from_static("fr"));
        let found = store.find("http://a/v", &request).await.unwrap();
        assert_eq!(found.body, Bytes::from_static(b"fr"));
        request.insert("accept-language", HeaderValue::from_static("de"));
        assert!(store.find("http://a/v", &request).await.is_none());
        assert!(store.remove("http://a/v"));
        assert_eq!(store.entry_count(), 0);
        assert!(entry_files(&dir).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_least_recently_used_files_go_beyond_max_size() {
        let dir = temp_dir("evict");
        let body = "b".repeat(10_000);
        let one = encode("http://a/0", &response(&body, None)).len() as u64;
        // Room for three entries, not four.
        let store = DiskStore::open(limits(&dir, one * 3 + one / 2)).unwrap();
        for i in 0..3 {
            store.write(
                &Arc::from(format!("http://a/{i}")),
                Arc::new(response(&body, None)),
            );
        }
        wait_for(&store, 3);
        // Used recently: survives the next write, unlike /1.
        assert!(store.find("http://a/0", &HeaderMap::new()).await.is_some());
        store.write(&Arc::from("http://a/3"), Arc::new(response(&body, None)));
        for _ in 0..500 {
            if store.find("http://a/3", &HeaderMap::new()).await.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(store.find("http://a/3", &HeaderMap::new()).await.is_some());
        assert!(store.find("http://a/1", &HeaderMap::new()).await.is_none());
        assert!(store.find("http://a/0", &HeaderMap::new()).await.is_some());
        let on_disk: u64 = entry_files(&dir)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert!(on_disk <= one * 3 + one / 2, "{on_disk}");
        assert_eq!(on_disk, store.total_size());
        // Too large for max_object_size: not written.
        let mut small = limits(&dir, 1 << 20);
        small.max_object_size = 100;
        drop(store);
        let store = DiskStore::open(small).unwrap();
        assert_eq!(store.entry_count(), 3);
        store.write(&Arc::from("http://a/big"), Arc::new(response(&body, None)));
        store.write(&Arc::from("http://a/small"), Arc::new(response("s", None)));
        wait_for(&store, 4);
        assert!(
            store
                .find("http://a/big", &HeaderMap::new())
                .await
                .is_none()
        );
        assert_eq!(store.remove_prefix("http://a/").len(), 4);
        assert!(entry_files(&dir).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_queued_before_a_removal_is_not_written_after_it() {
        let mut removals = Removals::default();
        let queued_at = removals.counter;
        removals.removed(&Arc::from("http://a/x"));
        assert!(removals.outdated("http://a/x", queued_at));
        assert!(!removals.outdated("http://a/y", queued_at));
        assert!(!removals.outdated("http://a/x", removals.counter));
        removals.counter += 1;
        removals.removed_all();
        assert!(removals.outdated("http://a/y", queued_at));
    }
}
