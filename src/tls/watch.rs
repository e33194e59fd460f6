//! Certificate hot reload: watch the certificate and key files and reload the listeners that use
//! them when they change.
//!
//! The parent directories are watched, not the files, because editors, certbot and Kubernetes
//! replace certificates by rename or symlink swap, which a watch on the old inode would miss.
//! Changes are debounced: a renewal writes the chain and the key in two steps.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::TlsTerminator;

const DEBOUNCE: Duration = Duration::from_millis(300);

/// Keeps the file watch alive; dropping it stops watching.
pub struct CertificateWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CertificateWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for CertificateWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertificateWatcher")
    }
}

impl CertificateWatcher {
    /// Watches the files of `terminators`; `None` when none has certificate files.
    pub fn start(terminators: Vec<Arc<TlsTerminator>>) -> Result<Option<Self>, String> {
        let files: HashSet<PathBuf> = terminators.iter().flat_map(|t| t.watched_files()).collect();
        if files.is_empty() {
            return Ok(None);
        }
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watched = files.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && event.paths.iter().any(|p| {
                        watched.contains(p)
                            || p.parent()
                                .is_some_and(|d| watched.iter().any(|f| f.parent() == Some(d)))
                    })
                {
                    let _ = sender.send(());
                }
            })
            .map_err(|e| format!("cannot watch certificate files: {e}"))?;
        let directories: HashSet<PathBuf> = files
            .iter()
            .map(|f| {
                f.parent()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
            })
            .collect();
        for directory in &directories {
            watcher
                .watch(directory, RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch {}: {e}", directory.display()))?;
        }
        let task = tokio::spawn(async move {
            while receiver.recv().await.is_some() {
                // Let the writer finish, and fold the burst of events into one reload.
                tokio::time::sleep(DEBOUNCE).await;
                while receiver.try_recv().is_ok() {}
                reload_all(&terminators);
            }
        });
        Ok(Some(CertificateWatcher {
            _watcher: watcher,
            task,
        }))
    }
}

/// Reloads every terminator, logging the outcome; a failure keeps the old certificates.
pub fn reload_all(terminators: &[Arc<TlsTerminator>]) {
    for terminator in terminators {
        match terminator.reload() {
            Ok(()) => {
                tracing::info!(files = ?terminator.watched_files(), "TLS certificates reloaded")
            }
            Err(error) => {
                tracing::error!(%error, "TLS certificate reload failed; the previous certificates stay in use")
            }
        }
    }
}
