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
            live.apply(c.stack, c.config);
            live.registry().metrics().config_reload(true);
            if listeners_changed {
                tracing::warn!(file = %path.display(), "configuration reloaded; listener changes take effect at the next restart");
            } else if server_changed {
                tracing::warn!(file = %path.display(), "configuration reloaded; changes to `server` (connection limits, timeouts, drain) take effect at the next restart");
            } else {
                tracing::info!(file = %path.display(), "configuration reloaded");
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

/// Watches `path` (through its directory, since editors and deploy tools
/// replace files rather than write them in place) and SIGHUP, and reloads on
/// either. Runs until the returned task is aborted.
pub fn spawn_reloader(path: PathBuf, live: Arc<Live>) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel::<()>(16);
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
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(async move {
        // Keep the watcher alive as long as the reloader runs.
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            // Debounce: a save is often several events.
            tokio::time::sleep(Duration::from_millis(150)).await;
            while rx.try_recv().is_ok() {}
            let path = path.clone();
            let live = live.clone();
            // Compiling reads files and may be slow: keep it off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || reload_now(&path, &live)).await;
        }
    })
}

fn watch_file(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::{Event, EventKind, RecursiveMode, Watcher};
    let file_name = path.file_name()?.to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |res: notify::Result<Event>| {
        if let Ok(ev) = res
            && matches!(ev.kind, EventKind::Create(_) | EventKind::Modify(_))
            && ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(file_name.as_os_str()))
        {
            let _ = tx.try_send(());
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(mut w) => match w.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
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
