//! Reload on file change (`gatehouse run --watch`): notices when the configuration file, or a
//! file it names (IP lists, htpasswd files), has new contents.
//!
//! As for certificates, the parent directories are watched rather than the files, because
//! editors, configuration management and Kubernetes ConfigMaps replace files by rename or symlink
//! swap, which a watch on the old inode would miss. A directory event is only a hint: the files
//! are read again and their contents compared with the last seen, so a write to some other file
//! in the same directory (or an editor's swap file) does not reload anything, and a burst of
//! events (a save in several steps) is folded into one reload after a quiet period.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Config;

/// Quiet time after the last event before the files are compared.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// The files a configuration depends on: the file itself, the `file:` IP lists of listeners,
/// routes, `trusted_proxies` and `cache.purge_allow`, and routes' htpasswd files. Relative
/// paths are taken from the working directory, as the server reads them.
pub fn watched_files(config_path: &Path, config: &Config) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::from([config_path.to_path_buf()]);
    let lists = config
        .listeners
        .iter()
        .flat_map(|l| l.allow.iter().chain(l.deny.iter()))
        .chain(
            config
                .routes
                .iter()
                .flat_map(|r| r.allow.iter().chain(r.deny.iter())),
        )
        .flatten()
        .chain(config.security.trusted_proxies.iter())
        .chain(config.cache.purge_allow.iter());
    for entry in lists {
        if let Some(path) = entry.get_ref().trim().strip_prefix("file:") {
            files.insert(PathBuf::from(path.trim()));
        }
    }
    for route in &config.routes {
        if let Some(auth) = &route.basic_auth {
            files.insert(PathBuf::from(&auth.get_ref().htpasswd));
        }
    }
    files
}

/// What each watched file holds (`None`: unreadable or missing), to tell a real change from
/// directory noise.
type Contents = BTreeMap<PathBuf, Option<Vec<u8>>>;

fn read_all(files: &BTreeSet<PathBuf>) -> Contents {
    files
        .iter()
        .map(|path| (path.clone(), std::fs::read(path).ok()))
        .collect()
}

/// Watches a set of files; [`ConfigWatch::changed`] resolves when one has new contents.
pub struct ConfigWatch {
    // Kept only so the watch lives as long as this value.
    _watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<()>,
    files: BTreeSet<PathBuf>,
    last: Contents,
    // An event arrived and the files have not been compared since: kept across a cancelled
    // `changed` (it runs in a `select!`), so no change is lost.
    pending: bool,
}

impl std::fmt::Debug for ConfigWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatch")
            .field("files", &self.files)
            .finish()
    }
}

impl ConfigWatch {
    /// Starts watching `files` (their contents now are the baseline).
    pub fn start(files: BTreeSet<PathBuf>) -> Result<ConfigWatch, String> {
        let (sender, events) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Access-only events (reads, opens) change nothing; everything else is a hint.
                if let Ok(event) = event
                    && !event.kind.is_access()
                {
                    let _ = sender.send(());
                }
            })
            .map_err(|e| format!("cannot watch the configuration files: {e}"))?;
        let directories: BTreeSet<PathBuf> = files
            .iter()
            .map(|file| match file.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        for directory in &directories {
            watcher
                .watch(directory, RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch {}: {e}", directory.display()))?;
        }
        let last = read_all(&files);
        Ok(ConfigWatch {
            _watcher: watcher,
            events,
            files,
            last,
            pending: false,
        })
    }

    /// The files watched.
    pub fn files(&self) -> &BTreeSet<PathBuf> {
        &self.files
    }

    /// Resolves once a watched file's contents differ from the last seen (and records them).
    pub async fn changed(&mut self) {
        loop {
            if !self.pending {
                if self.events.recv().await.is_none() {
                    // The watcher is gone (it never drops its sender while we hold it).
                    std::future::pending::<()>().await;
                }
                self.pending = true;
            }
            // Fold the burst into one look, once the writer has been quiet for a moment.
            loop {
                tokio::time::sleep(DEBOUNCE).await;
                let mut more = false;
                while self.events.try_recv().is_ok() {
                    more = true;
                }
                if !more {
                    break;
                }
            }
            let now = read_all(&self.files);
            self.pending = false;
            if now != self.last {
                self.last = now;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_a_configuration_names_are_watched() {
        let text = r#"
[security]
trusted_proxies = ["10.0.0.0/8", "file:/etc/gatehouse/proxies.txt"]

[cache]
purge_allow = ["file:/etc/gatehouse/purgers.txt"]

[[listener]]
address = "127.0.0.1:0"
deny = ["file:lists/deny.txt"]

[pool.app]
backends = ["127.0.0.1:9"]

[[route]]
pool = "app"
allow = ["192.0.2.0/24", " file: /srv/allow.txt"]
basic_auth = { htpasswd = "/etc/gatehouse/htpasswd" }
"#;
        let config: Config = toml::from_str(text).expect("config parses");
        let files = watched_files(Path::new("/etc/gatehouse/gatehouse.toml"), &config);
        let names: Vec<&str> = files.iter().filter_map(|p| p.to_str()).collect();
        assert_eq!(
            names,
            [
                "/etc/gatehouse/gatehouse.toml",
                "/etc/gatehouse/htpasswd",
                "/etc/gatehouse/proxies.txt",
                "/etc/gatehouse/purgers.txt",
                "/srv/allow.txt",
                "lists/deny.txt",
            ]
        );
    }

    #[tokio::test]
    async fn a_new_content_fires_and_a_touch_of_another_file_does_not() {
        let dir = std::env::temp_dir().join(format!("gatehouse-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("gatehouse.toml");
        std::fs::write(&config, "# one\n").expect("write");
        let mut watch = ConfigWatch::start(BTreeSet::from([config.clone()])).expect("watch");

        // Another file in the directory: events, but no watched content changed.
        std::fs::write(dir.join("access.log"), "GET /\n").expect("write");
        let quiet = tokio::time::timeout(Duration::from_millis(1500), watch.changed()).await;
        assert!(quiet.is_err(), "an unrelated file fired a reload");

        // Replaced by rename, as editors do.
        let staged = dir.join(".gatehouse.toml.swp");
        std::fs::write(&staged, "# two\n").expect("write");
        std::fs::rename(&staged, &config).expect("rename");
        let fired = tokio::time::timeout(Duration::from_secs(20), watch.changed()).await;
        assert!(fired.is_ok(), "the new contents were not noticed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
