//! Hot reload: on a change of the file or on SIGHUP, load, validate and
//! compile the new configuration, then swap the stack atomically. An invalid
//! file leaves the old configuration serving, and the log says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::{ConfigErrors, load_file};
use crate::live::Live;
use crate::stack::compile_with;

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The new stack serves.
    Applied {
        /// Whether listener settings changed (those need a restart).
        listeners_changed: bool,
    },
    /// The file was invalid; the old stack keeps serving.
    Rejected(ConfigErrors),
}

/// Reloads `path` into `live` now.
pub fn reload_now(path: &Path, live: &Live) -> ReloadOutcome {
    // One reload at a time: the file is read under the lock, so the last
    // reload to finish applies the newest file.
    let _one_at_a_time = live.reload_guard();
    let listeners = live.listeners();
    let compiled = load_file(path).and_then(|cfg| {
        compile_with(&cfg, live.registry()).map_err(|mut e| {
            e.source = Some(path.display().to_string());
            e
        })
    });
    match compiled {
        Ok(c) => {
            let listeners_changed = c.listeners.len() != listeners.len()
                || c.listeners.iter().zip(listeners).any(|(a, b)| {
                    a.addr != b.addr || a.http2 != b.http2 || a.tls.is_some() != b.tls.is_some()
                });
            c.stack.adopt_resolved(&live.stack());
            // New connections get the reloaded certificates (a renewal at
            // the same paths included), listener by listener: a listener
            // change waiting for a restart does not hold renewals back.
            live.swap_tls(&c.listeners);
            let server_changed = &c.server != live.server_settings();
            // The admin server is bound once, at start.
            let admin_changed = {
                let (old, new) = (&live.config().admin, &c.config.admin);
                old.enabled != new.enabled || old.listen != new.listen
            };
            live.apply(c.stack, c.config);
            live.registry().metrics().config_reload(true);
            let waiting: Vec<&str> = [
                (listeners_changed, "listeners"),
                (
                    server_changed,
                    "`server` (connection limits, timeouts, drain)",
                ),
                (admin_changed, "`admin.listen` and `admin.enabled`"),
            ]
            .into_iter()
            .filter_map(|(changed, what)| changed.then_some(what))
            .collect();
            if waiting.is_empty() {
                tracing::info!(file = %path.display(), "configuration reloaded");
            } else {
                tracing::warn!(file = %path.display(), "configuration reloaded; changes to {} take effect at the next restart", waiting.join(", "));
            }
            ReloadOutcome::Applied { listeners_changed }
        }
        Err(e) => {
            tracing::error!(file = %path.display(), errors = %e, "configuration rejected; the previous one keeps serving");
            live.record_failure(e.clone());
            live.registry().metrics().config_reload(false);
            ReloadOutcome::Rejected(e)
        }
    }
}

/// What woke the reloader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// SIGHUP, or an event naming the configuration file: reload.
    File,
    /// Another entry of a watched directory changed: reload if the file's
    /// content did (a Kubernetes ConfigMap swaps its `..data` symlink, and
    /// the file named in `--config` gets no event of its own).
    Directory,
}

/// Watches `path` (through its directory, since editors and deploy tools
/// replace files rather than write them in place, and through its target's
/// directory when it is a symlink) and SIGHUP, and reloads on either. Runs
/// until the returned task is aborted.
pub fn spawn_reloader(path: PathBuf, live: Arc<Live>) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel::<Trigger>(16);
    let watcher = watch_file(&path, tx.clone());
    #[cfg(unix)]
    {
        let tx = tx.clone();
        let live = live.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP");
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reopening the access log file and reloading");
                // Log rotation: lines written from now on go to a file at
                // the configured path, not to the one renamed away.
                let live = live.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    live.registry().reopen_access_log(Duration::from_secs(2));
                })
                .await;
                if tx.send(Trigger::File).await.is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(async move {
        // Keep the watcher alive as long as the reloader runs.
        let _watcher = watcher;
        let mut seen = content_digest(&path).await;
        while let Some(first) = rx.recv().await {
            // Debounce: a save is often several events.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let mut named = first == Trigger::File;
            while let Ok(t) = rx.try_recv() {
                named |= t == Trigger::File;
            }
            let now = content_digest(&path).await;
            if !named && now == seen {
                continue;
            }
            seen = now;
            let path = path.clone();
            let live = live.clone();
            // Compiling reads files and may be slow: keep it off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || reload_now(&path, &live)).await;
        }
    })
}

/// A digest of the file's content (through symlinks), `None` when it
/// cannot be read.
async fn content_digest(path: &Path) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let bytes = tokio::fs::read(path).await.ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

fn watch_file(path: &Path, tx: mpsc::Sender<Trigger>) -> Option<notify::RecommendedWatcher> {
    use notify::{Event, EventKind, RecursiveMode, Watcher};
    let file_name = path.file_name()?.to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // A symlinked file is edited where it points: watch there too.
    let target_dir = std::fs::canonicalize(path)
        .ok()
        .and_then(|t| t.parent().map(Path::to_path_buf))
        .filter(|t| std::fs::canonicalize(&dir).ok().as_deref() != Some(t.as_path()));
    let handler = move |res: notify::Result<Event>| {
        let Ok(ev) = res else { return };
        if !matches!(
            ev.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) {
            return;
        }
        let named = ev
            .paths
            .iter()
            .any(|p| p.file_name() == Some(file_name.as_os_str()));
        let _ = tx.try_send(if named {
            Trigger::File
        } else {
            Trigger::Directory
        });
    };
    match notify::recommended_watcher(handler) {
        Ok(mut w) => match w.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                if let Some(t) = &target_dir
                    && let Err(e) = w.watch(t, RecursiveMode::NonRecursive)
                {
                    tracing::warn!(error = %e, dir = %t.display(), "cannot watch the configuration's target directory");
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the configuration; SIGHUP still reloads");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher; SIGHUP still reloads");
            None
        }
    }
}
