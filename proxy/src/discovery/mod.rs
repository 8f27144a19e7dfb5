//! The config client: on-demand subscriptions to views, kept current by one connection to the
//! controller, and kept (last known) while the controller is away.

mod client;
pub mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smidge_protocol::{ProxyId, ViewKey};
use tokio::sync::{mpsc, watch};

pub use client::{ClientConfig, ControlTls};
pub use state::ViewState;

/// Called with the endpoints that left an outbound view.
type RemovedHook = Box<dyn Fn(&[std::net::SocketAddr]) + Send + Sync>;

/// A handle to the views this proxy uses. Cheap to clone.
#[derive(Clone)]
pub struct Discovery {
    shared: Arc<Shared>,
}

struct Shared {
    entries: Mutex<HashMap<ViewKey, Entry>>,
    commands: mpsc::UnboundedSender<Command>,
    connected: AtomicBool,
    /// Set once the controller has answered at least once since the proxy started.
    ever_connected: AtomicBool,
    /// Told which endpoints left an outbound view, so per-endpoint state can be forgotten.
    on_removed: std::sync::OnceLock<RemovedHook>,
}

struct Entry {
    tx: watch::Sender<ViewState>,
    last_used: Instant,
    /// Pinned views (the proxy's own inbound policy) are never dropped for idleness.
    pinned: bool,
}

#[derive(Debug)]
enum Command {
    Subscribe(ViewKey),
    Unsubscribe(ViewKey),
}

/// One line of the view dump.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub key: ViewKey,
    pub state: ViewState,
    pub idle: Duration,
}

impl Discovery {
    /// Starts the client task on the current runtime.
    pub fn start(config: ClientConfig, proxy: ProxyId) -> Discovery {
        let (commands, rx) = mpsc::unbounded_channel();
        let discovery = Discovery {
            shared: Arc::new(Shared {
                entries: Mutex::new(HashMap::new()),
                commands,
                connected: AtomicBool::new(false),
                ever_connected: AtomicBool::new(false),
                on_removed: std::sync::OnceLock::new(),
            }),
        };
        let idle = config.idle_after;
        tokio::spawn(client::run(discovery.clone(), config, proxy, rx));
        let sweeper = discovery.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(100)));
            loop {
                tick.tick().await;
                sweeper.sweep(idle);
            }
        });
        discovery
    }

    /// Subscribes to `key` if needed and returns a receiver of its state.
    pub fn watch(&self, key: &ViewKey) -> watch::Receiver<ViewState> {
        self.watch_inner(key, false)
    }

    /// Like [`watch`](Self::watch), for a view that must never be dropped for idleness.
    pub fn pin(&self, key: &ViewKey) -> watch::Receiver<ViewState> {
        self.watch_inner(key, true)
    }

    fn watch_inner(&self, key: &ViewKey, pinned: bool) -> watch::Receiver<ViewState> {
        let Ok(mut entries) = self.shared.entries.lock() else {
            let (_, rx) = watch::channel(ViewState::Pending);
            return rx;
        };
        if let Some(e) = entries.get_mut(key) {
            e.last_used = Instant::now();
            e.pinned |= pinned;
            return e.tx.subscribe();
        }
        let (tx, rx) = watch::channel(ViewState::Pending);
        entries.insert(
            key.clone(),
            Entry {
                tx,
                last_used: Instant::now(),
                pinned,
            },
        );
        let _ = self.shared.commands.send(Command::Subscribe(key.clone()));
        rx
    }

    /// The state of `key` once the controller has answered, or still `Pending` after `wait`.
    pub async fn resolve(&self, key: &ViewKey, wait: Duration) -> watch::Receiver<ViewState> {
        let mut rx = self.watch(key);
        let _ = tokio::time::timeout(wait, rx.wait_for(|s| !s.is_pending())).await;
        rx
    }

    /// Drops subscriptions nobody holds that were last used more than `idle` ago.
    pub fn sweep(&self, idle: Duration) {
        let Ok(mut entries) = self.shared.entries.lock() else {
            return;
        };
        let now = Instant::now();
        let stale: Vec<ViewKey> = entries
            .iter()
            .filter(|(_, e)| {
                !e.pinned
                    && e.tx.receiver_count() == 0
                    && now.saturating_duration_since(e.last_used) >= idle
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            entries.remove(&key);
            tracing::debug!(%key, "dropping idle subscription");
            let _ = self.shared.commands.send(Command::Unsubscribe(key));
        }
    }

    /// Whether the proxy is connected to the controller now.
    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Every subscribed view with its state.
    pub fn snapshot(&self) -> Vec<Snapshot> {
        let Ok(entries) = self.shared.entries.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut out: Vec<Snapshot> = entries
            .iter()
            .map(|(k, e)| Snapshot {
                key: k.clone(),
                state: e.tx.borrow().clone(),
                idle: now.saturating_duration_since(e.last_used),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    fn keys(&self) -> Vec<ViewKey> {
        self.shared
            .entries
            .lock()
            .map(|e| e.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Applies a received update; `Err` carries the reason for a Nack.
    fn apply(
        &self,
        key: &ViewKey,
        version: u64,
        update: smidge_protocol::ViewUpdate,
    ) -> Result<(), String> {
        let Ok(entries) = self.shared.entries.lock() else {
            return Err("proxy state poisoned".into());
        };
        let Some(entry) = entries.get(key) else {
            // Unsubscribed meanwhile: nothing to keep.
            return Ok(());
        };
        let current = entry.tx.borrow().clone();
        let next = state::next_state(&current, version, update, Instant::now())?;
        let removed = state::removed_endpoints(&current, &next);
        entry.tx.send_replace(next);
        drop(entries);
        if let (false, Some(f)) = (removed.is_empty(), self.shared.on_removed.get()) {
            f(&removed);
        }
        Ok(())
    }

    /// Registers who is told when endpoints leave an outbound view (once; later calls are
    /// ignored). A restarted pod at the same address then starts afresh, not penalized.
    pub fn on_endpoints_removed(
        &self,
        f: impl Fn(&[std::net::SocketAddr]) + Send + Sync + 'static,
    ) {
        let _ = self.shared.on_removed.set(Box::new(f));
    }

    fn set_connected(&self, up: bool) {
        self.shared.connected.store(up, Ordering::Relaxed);
        if up {
            self.shared.ever_connected.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_unheld_unpinned_subscriptions_are_dropped_when_idle() {
        let discovery = Discovery::start(
            ClientConfig {
                // Nothing listens there: the views stay pending, which is all this test needs.
                controller: "127.0.0.1:9".parse().expect("addr"),
                connect_timeout: Duration::from_millis(100),
                socket_mark: None,
                idle_after: Duration::from_secs(3600),
                backoff_min: Duration::from_secs(60),
                backoff_max: Duration::from_secs(60),
                tls: None,
            },
            ProxyId {
                namespace: "ns".into(),
                pod: "p".into(),
                service_account: "sa".into(),
            },
        );
        let key = |n: u8| ViewKey::Outbound(format!("10.0.0.{n}:80").parse().expect("addr"));
        let held = discovery.watch(&key(1));
        drop(discovery.watch(&key(2)));
        drop(discovery.pin(&key(3)));
        discovery.sweep(Duration::from_secs(3600));
        assert_eq!(
            discovery.snapshot().len(),
            3,
            "nothing is idle for an hour yet"
        );
        discovery.sweep(Duration::ZERO);
        let left: Vec<ViewKey> = discovery.snapshot().into_iter().map(|s| s.key).collect();
        assert_eq!(left, vec![key(1), key(3)]);
        drop(held);
    }
}
