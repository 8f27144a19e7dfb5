//! The subscribed views: compiled on first subscription, recompiled only when an object they read
//! changes, encoded once per version and shared by every subscriber.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use smidge_protocol::delta::{self, Change};
use smidge_protocol::{encode, Encoded, ServerMessage, View, ViewKey, ViewUpdate};
use tokio::sync::watch;

use super::connected::Connected;
use crate::compile::{compile, MeshConfig};
use crate::index::{DepKey, Index};
use crate::provider::Event;

/// One version of one view, ready to send.
#[derive(Debug)]
pub struct Published {
    pub version: u64,
    pub view: Option<Arc<View>>,
    /// The frame carrying the whole view (or `Absent`).
    pub full: Encoded,
    /// The frame carrying only endpoint changes against `.0`, when that is all that changed.
    pub delta: Option<(u64, Encoded)>,
}

struct Slot {
    tx: watch::Sender<Arc<Published>>,
    deps: BTreeSet<DepKey>,
}

/// The index plus every view some proxy is subscribed to.
pub struct Registry {
    index: Index,
    config: MeshConfig,
    slots: HashMap<ViewKey, Slot>,
    readers: HashMap<DepKey, HashSet<ViewKey>>,
    next_version: u64,
    /// Whether the provider's first batch is in the index.
    synced: bool,
    /// The proxies connected now and what they acknowledged.
    connected: Arc<Connected>,
}

impl Registry {
    /// `first_version` should grow across controller restarts (for example the start time in ms),
    /// so a proxy never sees an old version number reused.
    pub fn new(config: MeshConfig, first_version: u64) -> Self {
        Registry {
            index: Index::default(),
            config,
            slots: HashMap::new(),
            readers: HashMap::new(),
            next_version: first_version,
            synced: false,
            connected: Arc::default(),
        }
    }

    /// The table of connected proxies (connections join it past Hello).
    pub fn connected(&self) -> Arc<Connected> {
        self.connected.clone()
    }

    /// The version of `key` subscribers have now; `None` when nobody subscribes to it.
    pub fn current_version(&self, key: &ViewKey) -> Option<u64> {
        self.slots.get(key).map(|slot| slot.tx.borrow().version)
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Whether the index holds the provider's first read; until then no lookup can tell that an
    /// address is not in the mesh.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Number of views with at least one subscriber.
    pub fn view_count(&self) -> usize {
        self.slots.len()
    }

    /// A receiver that holds the current version of `key` and sees every later one.
    pub fn subscribe(
        &mut self,
        key: &ViewKey,
    ) -> Result<watch::Receiver<Arc<Published>>, smidge_protocol::CodecError> {
        if let Some(slot) = self.slots.get(key) {
            return Ok(slot.tx.subscribe());
        }
        let compiled = compile(&self.index, key, &self.config);
        let published = self.publish(key, compiled.view, None)?;
        let (tx, rx) = watch::channel(Arc::new(published));
        for dep in &compiled.deps {
            self.readers
                .entry(dep.clone())
                .or_default()
                .insert(key.clone());
        }
        self.slots.insert(
            key.clone(),
            Slot {
                tx,
                deps: compiled.deps,
            },
        );
        Ok(rx)
    }

    /// Forgets `key` when nobody holds a receiver for it any more.
    pub fn release(&mut self, key: &ViewKey) {
        if self
            .slots
            .get(key)
            .is_some_and(|s| s.tx.receiver_count() == 0)
        {
            if let Some(slot) = self.slots.remove(key) {
                self.unfile(key, &slot.deps);
            }
            self.shrink_after_burst();
        }
    }

    /// Maps keep their largest capacity: after a burst of subscriptions ends, that is memory
    /// held for nothing (MiBs after 50,000 views). Shrunk when mostly empty.
    fn shrink_after_burst(&mut self) {
        fn shrink<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
            if map.capacity() > 1024 && map.capacity() > 4 * map.len() {
                map.shrink_to_fit();
            }
        }
        shrink(&mut self.slots);
        shrink(&mut self.readers);
    }

    /// Applies provider events and republishes the views they change; returns how many changed.
    pub fn apply(&mut self, events: Vec<Event>) -> usize {
        self.synced = true;
        let mut touched: HashSet<DepKey> = HashSet::new();
        for event in events {
            touched.extend(match event {
                Event::Apply(obj) => self.index.apply(obj),
                Event::Delete(id) => self.index.delete(&id),
            });
        }
        let affected: BTreeSet<ViewKey> = touched
            .iter()
            .filter_map(|k| self.readers.get(k))
            .flatten()
            .cloned()
            .collect();
        let mut changed = 0;
        for key in affected {
            match self.recompile(&key) {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(view = %key, error = %e, "cannot encode view; proxies keep the previous version")
                }
            }
        }
        changed
    }

    fn recompile(&mut self, key: &ViewKey) -> Result<bool, smidge_protocol::CodecError> {
        let compiled = compile(&self.index, key, &self.config);
        let Some(slot) = self.slots.get(key) else {
            return Ok(false);
        };
        let current = slot.tx.borrow().clone();
        let old_deps = slot.deps.clone();
        if current.view.as_deref() == compiled.view.as_ref() {
            return Ok(false);
        }
        let published = self.publish(key, compiled.view, Some(&current))?;
        self.unfile(key, &old_deps);
        for dep in &compiled.deps {
            self.readers
                .entry(dep.clone())
                .or_default()
                .insert(key.clone());
        }
        if let Some(slot) = self.slots.get_mut(key) {
            slot.deps = compiled.deps;
            slot.tx.send_replace(Arc::new(published));
        }
        Ok(true)
    }

    fn unfile(&mut self, key: &ViewKey, deps: &BTreeSet<DepKey>) {
        for dep in deps {
            if let Some(set) = self.readers.get_mut(dep) {
                set.remove(key);
                if set.is_empty() {
                    self.readers.remove(dep);
                }
            }
        }
    }

    fn publish(
        &mut self,
        key: &ViewKey,
        view: Option<View>,
        previous: Option<&Published>,
    ) -> Result<Published, smidge_protocol::CodecError> {
        let version = self.next_version;
        self.next_version += 1;
        let frame = |update: ViewUpdate| {
            encode(&ServerMessage::View {
                key: key.clone(),
                version,
                update,
            })
            .map(Encoded)
        };
        let full = frame(match &view {
            Some(v) => ViewUpdate::Full(v.clone()),
            None => ViewUpdate::Absent,
        })?;
        let delta = match (
            previous.and_then(|p| p.view.as_deref().map(|v| (p.version, v))),
            &view,
        ) {
            (Some((base, View::Outbound(old))), Some(View::Outbound(new))) => {
                match delta::diff(old, new) {
                    Some(changes) if !changes.is_empty() => {
                        let d = frame(ViewUpdate::Delta {
                            base,
                            changes: changes as Vec<Change>,
                        })?;
                        (d.0.len() < full.0.len()).then_some((base, d))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        Ok(Published {
            version,
            view: view.map(Arc::new),
            full,
            delta,
        })
    }
}
