//! Which proxies are connected now and which version of each of their views they acknowledged:
//! what the admin endpoint's `/proxies` shows (and `smidge check` reads) to tell whether the
//! data plane is in step with the controller.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use smidge_protocol::ViewKey;

/// The proxies past Hello, by connection.
#[derive(Debug, Default)]
pub struct Connected {
    next: AtomicU64,
    proxies: Mutex<HashMap<u64, Entry>>,
}

#[derive(Clone, Debug)]
struct Entry {
    namespace: String,
    pod: String,
    identity: String,
    /// Each subscribed view and the last version the proxy acknowledged.
    views: HashMap<ViewKey, Option<u64>>,
}

/// One connected proxy, as `/proxies` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub namespace: String,
    pub pod: String,
    /// `namespace/service-account` (proven by its token when the controller checks tokens).
    pub identity: String,
    pub views: Vec<ViewStatus>,
    /// Whether every subscribed view's acknowledged version is the controller's current one.
    pub current: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewStatus {
    pub view: String,
    /// The last version the proxy acknowledged; `None` before its first ack.
    pub acked: Option<u64>,
    /// The controller's current version of the view.
    pub current: Option<u64>,
}

impl Connected {
    /// Records a connection past Hello; it is forgotten when the returned handle drops.
    pub fn join(self: &Arc<Self>, namespace: &str, pod: &str, identity: &str) -> Membership {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut proxies) = self.proxies.lock() {
            proxies.insert(
                id,
                Entry {
                    namespace: namespace.to_string(),
                    pod: pod.to_string(),
                    identity: identity.to_string(),
                    views: HashMap::new(),
                },
            );
        }
        Membership {
            table: self.clone(),
            id,
        }
    }

    /// Every connected proxy, sorted by namespace and pod, with `current` giving the
    /// controller's version of a view.
    pub fn snapshot(&self, current: impl Fn(&ViewKey) -> Option<u64>) -> Vec<ProxyStatus> {
        let entries: Vec<Entry> = match self.proxies.lock() {
            Ok(proxies) => proxies.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        let mut out: Vec<ProxyStatus> = entries
            .into_iter()
            .map(|e| {
                let views: BTreeMap<String, ViewStatus> = e
                    .views
                    .iter()
                    .map(|(key, acked)| {
                        let view = key.to_string();
                        let status = ViewStatus {
                            view: view.clone(),
                            acked: *acked,
                            current: current(key),
                        };
                        (view, status)
                    })
                    .collect();
                let views: Vec<ViewStatus> = views.into_values().collect();
                ProxyStatus {
                    current: views
                        .iter()
                        .all(|v| v.acked.is_some() && v.acked == v.current),
                    namespace: e.namespace,
                    pod: e.pod,
                    identity: e.identity,
                    views,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
        out
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Entry)) {
        if let Ok(mut proxies) = self.proxies.lock() {
            if let Some(entry) = proxies.get_mut(&id) {
                f(entry);
            }
        }
    }
}

/// One connection's place in [`Connected`]; leaves it when dropped.
#[derive(Debug)]
pub struct Membership {
    table: Arc<Connected>,
    id: u64,
}

impl Membership {
    pub fn subscribed(&self, key: &ViewKey) {
        self.table.update(self.id, |e| {
            e.views.entry(key.clone()).or_insert(None);
        });
    }

    pub fn unsubscribed(&self, key: &ViewKey) {
        self.table.update(self.id, |e| {
            e.views.remove(key);
        });
    }

    /// An ack of `version`; acks of views not subscribed (late, after Unsubscribe) are ignored.
    pub fn acked(&self, key: &ViewKey, version: u64) {
        self.table.update(self.id, |e| {
            if let Some(acked) = e.views.get_mut(key) {
                *acked = Some(acked.map_or(version, |a| a.max(version)));
            }
        });
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Ok(mut proxies) = self.table.proxies.lock() {
            proxies.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ViewKey {
        ViewKey::Inbound(smidge_protocol::Identity::new("shop", name))
    }

    #[test]
    fn a_proxy_is_current_when_every_view_is_acked_at_the_current_version() {
        let table = Arc::new(Connected::default());
        let m = table.join("shop", "web-1", "shop/web");
        m.subscribed(&key("a"));
        m.subscribed(&key("b"));
        let current = |k: &ViewKey| Some(if *k == key("a") { 7 } else { 9 });
        // Nothing acked yet.
        let s = table.snapshot(current);
        assert_eq!(s.len(), 1);
        assert!(!s[0].current);
        assert_eq!(s[0].views[0].acked, None);
        m.acked(&key("a"), 7);
        m.acked(&key("b"), 8);
        assert!(!table.snapshot(current)[0].current, "b is behind");
        m.acked(&key("b"), 9);
        // An ack arriving late for an older version does not move it back.
        m.acked(&key("b"), 8);
        let s = table.snapshot(current);
        assert!(s[0].current, "{s:?}");
        assert_eq!(s[0].views[1].acked, Some(9));
    }

    #[test]
    fn unsubscribed_views_and_closed_connections_leave() {
        let table = Arc::new(Connected::default());
        let m = table.join("shop", "web-1", "shop/web");
        let other = table.join("app", "api-1", "app/api");
        m.subscribed(&key("a"));
        m.unsubscribed(&key("a"));
        // An ack after Unsubscribe does not bring the view back.
        m.acked(&key("a"), 3);
        let s = table.snapshot(|_| Some(3));
        assert_eq!(
            s.iter().map(|p| p.pod.as_str()).collect::<Vec<_>>(),
            ["api-1", "web-1"],
            "sorted by namespace"
        );
        assert!(s[1].views.is_empty());
        assert!(s[1].current, "no views: nothing to be behind on");
        drop(other);
        drop(m);
        assert!(table.snapshot(|_| None).is_empty());
    }
}
