//! What a running gateway serves now: the stack, the configuration it was
//! compiled from, and the state the admin API reports. Shared by the
//! listeners, the reloader and the admin server.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::config::{Config, ConfigErrors};
use crate::policy::Registry;
use crate::stack::{ListenerPlan, ServerSettings, Stack};

/// The live state of a gateway.
#[derive(Debug)]
pub struct Live {
    registry: Arc<Registry>,
    stack: ArcSwap<Stack>,
    config: ArcSwap<Config>,
    listeners: Vec<ListenerPlan>,
    /// Each listener's TLS settings now: those it was bound with, then
    /// those of the last reload (renewed certificates, at the same paths or
    /// new ones), taken by each new connection.
    tls: Vec<ArcSwapOption<rustls::ServerConfig>>,
    /// The connection-level settings the listeners run with.
    server: ServerSettings,
    draining: AtomicBool,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_reload_error: Mutex<Option<ConfigErrors>>,
    /// Held through a whole reload (load, compile, apply, record): a
    /// reload from the file watcher or SIGHUP and one from the admin API
    /// never interleave, so the stack, the shown config and the counters
    /// always come from the same reload, the later one last.
    reloading: Mutex<()>,
}

/// Reload counters, for the admin API and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadStats {
    /// Reloads applied.
    pub ok: u64,
    /// Reloads refused (invalid file).
    pub failed: u64,
    /// Why the last refused reload was refused, if the last reload failed.
    pub last_error: Option<ConfigErrors>,
}

// === impl Live ===

impl Live {
    pub(crate) fn new(
        registry: Arc<Registry>,
        stack: Arc<Stack>,
        config: Arc<Config>,
        listeners: Vec<ListenerPlan>,
        server: ServerSettings,
    ) -> Self {
        // Whatever a gateway starts with was loaded.
        registry.metrics().config_loaded();
        let tls = listeners
            .iter()
            .map(|l| ArcSwapOption::new(l.tls.clone()))
            .collect();
        Self {
            registry,
            stack: ArcSwap::new(stack),
            config: ArcSwap::new(config),
            listeners,
            tls,
            server,
            draining: AtomicBool::new(false),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload_error: Mutex::new(None),
            reloading: Mutex::new(()),
        }
    }

    /// State that survives reloads (rate-limit buckets, store connections).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// The stack new requests use.
    pub fn stack(&self) -> Arc<Stack> {
        self.stack.load_full()
    }

    /// The configuration the live stack was compiled from.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The TLS settings a new connection to listener `i` gets.
    pub(crate) fn listener_tls(&self, i: usize) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.get(i).and_then(ArcSwapOption::load_full)
    }

    /// Takes the TLS settings of a reload's listeners, for each running
    /// TLS listener that the reload still has at its address with TLS. The
    /// session cache and ticket keys carry over, so clients keep resuming
    /// their sessions across the reload.
    pub(crate) fn swap_tls(&self, plans: &[ListenerPlan]) {
        for (slot, running) in self.tls.iter().zip(&self.listeners) {
            let Some(old) = slot.load_full() else {
                continue;
            };
            let Some(new) = plans
                .iter()
                .find(|p| p.addr == running.addr)
                .and_then(|p| p.tls.as_ref())
            else {
                continue;
            };
            let mut new = (**new).clone();
            new.session_storage = old.session_storage.clone();
            new.ticketer = old.ticketer.clone();
            // The protocols the running listener speaks (`http2` is only
            // changed by a restart): offering `h2` to a listener that
            // refuses it would break every connection that picks it.
            new.alpn_protocols = old.alpn_protocols.clone();
            slot.store(Some(Arc::new(new)));
        }
    }

    /// The connection-level settings the listeners run with.
    pub(crate) fn server_settings(&self) -> &ServerSettings {
        &self.server
    }

    /// The listeners as bound at start (reloads do not rebind).
    pub fn listeners(&self) -> &[ListenerPlan] {
        &self.listeners
    }

    /// Whether a graceful shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Swaps in a new stack and configuration atomically: new requests use
    /// them, requests in flight finish on what they started with.
    pub fn apply(&self, stack: Arc<Stack>, config: Arc<Config>) {
        // The stack first: the config is only what the admin API shows.
        self.stack.store(stack);
        self.config.store(config);
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.last_reload_error.lock() {
            *e = None;
        }
    }

    /// Waits for any reload in progress, then holds off others until the
    /// guard is dropped.
    pub(crate) fn reload_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // A reload that panicked leaves nothing half-done behind the lock
        // (it only orders reloads): go on.
        self.reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn record_failure(&self, errors: ConfigErrors) {
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.last_reload_error.lock() {
            *e = Some(errors);
        }
    }

    /// Reload counters.
    pub fn reload_stats(&self) -> ReloadStats {
        ReloadStats {
            ok: self.reloads_ok.load(Ordering::Relaxed),
            failed: self.reloads_failed.load(Ordering::Relaxed),
            last_error: self.last_reload_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}
