//! The index: every valid object the providers know, plus the lookups the compiler needs.
//!
//! Pure and synchronous. Each object is filed under the [`DepKey`]s it can influence; the compiler
//! looks objects up by those same keys and records them, so a change only recompiles the views
//! that read one of the keys it touched.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::Bound;
use std::sync::Arc;

use smidge_protocol::Identity;

use crate::model::{Body, ById, Kind, NsName, Object, ObjectId, RouteKind};

/// Something a compiled view can depend on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DepKey {
    Namespace(String),
    Service(NsName),
    /// Which Service owns a ClusterIP.
    ServiceIp(IpAddr),
    /// The EndpointSlices (or Endpoints) of a Service.
    Endpoints(NsName),
    Pod(NsName),
    /// Which Pods hold an address.
    PodIp(IpAddr),
    /// The TrafficSplits whose root is this Service.
    Split(NsName),
    Route(RouteKind, NsName),
    /// The TrafficTargets whose destination is this identity.
    Targets(Identity),
}

/// The keys an object is filed under.
pub fn dep_keys(obj: &Object) -> Vec<DepKey> {
    let key = &obj.id.key;
    let same_ns = |name: &str| NsName::new(key.namespace.clone(), name);
    match &obj.body {
        Body::Namespace(_) => vec![DepKey::Namespace(key.name.clone())],
        Body::ServiceAccount => vec![],
        Body::Service(svc) => {
            let mut keys = vec![DepKey::Service(key.clone())];
            keys.extend(svc.cluster_ips.iter().map(|ip| DepKey::ServiceIp(*ip)));
            keys
        }
        Body::Endpoints(set) => vec![DepKey::Endpoints(same_ns(&set.service))],
        Body::Pod(pod) => {
            let mut keys = vec![DepKey::Pod(key.clone())];
            keys.extend(pod.ips.iter().map(|ip| DepKey::PodIp(*ip)));
            keys
        }
        Body::TrafficSplit(split) => vec![DepKey::Split(same_ns(&split.service))],
        Body::HttpRouteGroup(_) => vec![DepKey::Route(RouteKind::HttpRouteGroup, key.clone())],
        Body::PortRoute(_) => {
            let kind = if obj.id.kind == Kind::UdpRoute {
                RouteKind::UdpRoute
            } else {
                RouteKind::TcpRoute
            };
            vec![DepKey::Route(kind, key.clone())]
        }
        Body::TrafficTarget(tt) if tt.destination.kind == "ServiceAccount" => {
            vec![DepKey::Targets(Identity::new(
                tt.destination.namespace.clone(),
                tt.destination.name.clone(),
            ))]
        }
        Body::TrafficTarget(_) => vec![],
    }
}

/// All valid objects, filed by id and by dependency key.
#[derive(Clone, Debug, Default)]
pub struct Index {
    objects: BTreeSet<ById>,
    /// The same shared objects, by every key they are filed under (a set of one owned id
    /// would cost a B-tree node of eleven).
    by_key: HashMap<DepKey, BTreeSet<ById>>,
}

impl Index {
    /// Adds or replaces an object; returns the keys whose meaning changed (empty when the object
    /// is the same as before).
    pub fn apply(&mut self, obj: impl Into<Arc<Object>>) -> Vec<DepKey> {
        let obj: Arc<Object> = obj.into();
        if self.objects.get(&obj.id).is_some_and(|old| old.holds(&obj)) {
            return Vec::new();
        }
        let mut touched = self.delete(&obj.id);
        let keys = dep_keys(&obj);
        let filed = ById(obj);
        for key in &keys {
            self.by_key
                .entry(key.clone())
                .or_default()
                .insert(filed.clone());
        }
        touched.extend(keys);
        self.objects.insert(filed);
        touched.sort();
        touched.dedup();
        touched
    }

    /// Removes an object; returns the keys it was filed under.
    pub fn delete(&mut self, id: &ObjectId) -> Vec<DepKey> {
        let Some(ById(old)) = self.objects.take(id) else {
            return Vec::new();
        };
        let keys = dep_keys(&old);
        for key in &keys {
            if let Some(set) = self.by_key.get_mut(key) {
                set.remove(id);
                if set.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
        keys
    }

    pub fn get(&self, id: &ObjectId) -> Option<&Arc<Object>> {
        self.objects.get(id).map(|o| &o.0)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Every object, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Object>> {
        self.objects.iter().map(|o| &o.0)
    }

    /// The objects filed under `key`, in id order.
    pub fn filed_under(&self, key: &DepKey) -> impl Iterator<Item = &Arc<Object>> {
        self.by_key.get(key).into_iter().flatten().map(|o| &o.0)
    }

    /// The objects of one kind in one namespace, in name order.
    pub fn list<'a>(
        &'a self,
        kind: Kind,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Object>> + 'a {
        let from = ObjectId::new(kind, namespace, "");
        self.objects
            .range::<ObjectId, _>((Bound::Included(from), Bound::Unbounded))
            .take_while(move |o| o.0.id.kind == kind && o.0.id.key.namespace == namespace)
            .map(|o| &o.0)
    }

    /// The namespaces that hold at least one object.
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.objects
            .iter()
            .map(|o| o.0.id.key.namespace.clone())
            .filter(|n| !n.is_empty())
            .collect()
    }
}

/// A read-only view of the index that records every key the compiler looks at.
pub struct Lookup<'a> {
    index: &'a Index,
    deps: RefCell<BTreeSet<DepKey>>,
}

impl<'a> Lookup<'a> {
    pub fn new(index: &'a Index) -> Self {
        Lookup {
            index,
            deps: RefCell::new(BTreeSet::new()),
        }
    }

    pub fn into_deps(self) -> BTreeSet<DepKey> {
        self.deps.into_inner()
    }

    fn record(&self, key: DepKey) {
        self.deps.borrow_mut().insert(key);
    }

    /// The objects filed under `key`, recording the dependency.
    pub fn under(&self, key: DepKey) -> Vec<&'a Arc<Object>> {
        let found = self.index.filed_under(&key).collect();
        self.record(key);
        found
    }

    /// One object by id, recording the dependency under `key`.
    pub fn get(&self, key: DepKey, id: &ObjectId) -> Option<&'a Arc<Object>> {
        self.record(key);
        self.index.get(id)
    }

    pub fn namespace(&self, name: &str) -> Option<&'a crate::model::Namespace> {
        match &self
            .get(
                DepKey::Namespace(name.into()),
                &ObjectId::new(Kind::Namespace, "", name),
            )?
            .body
        {
            Body::Namespace(ns) => Some(ns),
            _ => None,
        }
    }

    pub fn service(&self, key: &NsName) -> Option<&'a crate::model::Service> {
        let id = ObjectId {
            kind: Kind::Service,
            key: key.clone(),
        };
        match &self.get(DepKey::Service(key.clone()), &id)?.body {
            Body::Service(svc) => Some(svc),
            _ => None,
        }
    }

    pub fn pod(&self, key: &NsName) -> Option<&'a crate::model::Pod> {
        let id = ObjectId {
            kind: Kind::Pod,
            key: key.clone(),
        };
        match &self.get(DepKey::Pod(key.clone()), &id)?.body {
            Body::Pod(pod) => Some(pod),
            _ => None,
        }
    }

    pub fn route(&self, kind: RouteKind, key: &NsName) -> Option<&'a Arc<Object>> {
        self.get(
            DepKey::Route(kind, key.clone()),
            &ObjectId {
                kind: kind.kind(),
                key: key.clone(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Service, ServicePort};

    fn svc(name: &str, ip: &str) -> Object {
        Object {
            id: ObjectId::new(Kind::Service, "ns", name),
            api_version: "v1".into(),
            body: Body::Service(Service {
                cluster_ips: vec![ip.parse().unwrap()],
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 80,
                    protocol: "TCP".into(),
                }],
            }),
        }
    }

    #[test]
    fn the_same_object_applied_twice_touches_nothing() {
        let mut index = Index::default();
        assert!(!index.apply(svc("a", "10.0.0.1")).is_empty());
        assert!(index.apply(svc("a", "10.0.0.1")).is_empty());
    }

    #[test]
    fn a_changed_object_touches_its_old_and_new_keys() {
        let mut index = Index::default();
        index.apply(svc("a", "10.0.0.1"));
        let touched = index.apply(svc("a", "10.0.0.2"));
        assert!(touched.contains(&DepKey::ServiceIp("10.0.0.1".parse().unwrap())));
        assert!(touched.contains(&DepKey::ServiceIp("10.0.0.2".parse().unwrap())));
        assert_eq!(
            index
                .filed_under(&DepKey::ServiceIp("10.0.0.1".parse().unwrap()))
                .count(),
            0
        );
        assert_eq!(
            index
                .filed_under(&DepKey::ServiceIp("10.0.0.2".parse().unwrap()))
                .count(),
            1
        );
    }

    #[test]
    fn list_stays_within_kind_and_namespace() {
        let mut index = Index::default();
        index.apply(svc("a", "10.0.0.1"));
        index.apply(svc("b", "10.0.0.2"));
        let mut other = svc("c", "10.0.0.3");
        other.id.key.namespace = "other".into();
        index.apply(other);
        let names: Vec<_> = index
            .list(Kind::Service, "ns")
            .map(|o| o.id.key.name.clone())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }
}
