//! The `kubernetes` provider: one watch per kind (Namespaces, ServiceAccounts, Services,
//! EndpointSlices, the Pods with the injector's label [`labels::MESHED`] (the meshed ones), and
//! every SMI kind at the version smidge serves), each a source of the runtime.
//!
//! Every object arrives as untyped JSON ([`DynamicObject`]) and is converted by the same code as
//! the file provider ([`manifest::read_value`]), so both providers give the same model objects
//! and a malformed custom resource is reported and skipped instead of failing its watch (what
//! `DeserializeGuard` does for Linkerd). Only the model object is kept: metadata is reduced to
//! what the converters read before converting, and no copy of the API object stays.
//! [`KindSet`] is the pure part; [`run`] drives it from a kube-runtime watcher.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use serde_json::{Map, Value};

use super::{Event, Report, Severity, Sink};
use crate::labels;
use crate::manifest::{read_value, Outcome};
use crate::model::{ById, Kind, Object, ObjectId};
use crate::smi::{access, specs, split};

/// The annotations a converter reads; every other one is dropped before converting.
const READ_ANNOTATIONS: [&str; 2] = [labels::INJECT, labels::DEFAULT_POLICY];

/// The most watch events taken into one batch.
const BATCH: usize = 512;

/// One watched kind.
#[derive(Clone, Debug)]
pub struct Watched {
    pub kind: Kind,
    pub resource: ApiResource,
    /// A label selector: only the objects it selects are watched.
    pub selector: Option<&'static str>,
}

/// Every kind the provider watches, at the version it reads (the API server converts objects
/// stored in other versions).
pub fn kinds() -> Vec<Watched> {
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::discovery::v1 as discovery;
    use kube::Resource;
    fn erase<K: Resource<DynamicType = ()>>(kind: Kind) -> Watched {
        Watched {
            kind,
            resource: ApiResource::erase::<K>(&()),
            selector: None,
        }
    }
    vec![
        erase::<core::Namespace>(Kind::Namespace),
        erase::<core::ServiceAccount>(Kind::ServiceAccount),
        erase::<core::Service>(Kind::Service),
        erase::<discovery::EndpointSlice>(Kind::EndpointSlice),
        // Only the pods the injector gave a proxy: the meshed ones.
        Watched {
            selector: Some(labels::MESHED),
            ..erase::<core::Pod>(Kind::Pod)
        },
        erase::<access::v1alpha3::TrafficTarget>(Kind::TrafficTarget),
        erase::<specs::v1alpha4::HTTPRouteGroup>(Kind::HttpRouteGroup),
        erase::<specs::v1alpha4::TCPRoute>(Kind::TcpRoute),
        erase::<specs::v1alpha4::UDPRoute>(Kind::UdpRoute),
        erase::<split::v1alpha4::TrafficSplit>(Kind::TrafficSplit),
    ]
}

/// One API object read into the model.
#[derive(Debug)]
enum Read {
    Valid(Arc<Object>, Vec<Report>),
    /// Refused: the reports say why.
    Refused(ObjectId, Vec<Report>),
}

/// The objects of one kind the index holds, and the reports about that kind. Pure.
#[derive(Debug)]
pub struct KindSet {
    watched: Watched,
    /// Shared with the index: one allocation per object.
    known: HashSet<ById>,
    /// By object: refusals and tolerated deviations.
    reports: BTreeMap<ObjectId, Vec<Report>>,
    /// A relist in progress (between the watcher's `Init` and `InitDone`).
    relist: Option<Relist>,
}

#[derive(Debug, Default)]
struct Relist {
    valid: Vec<Arc<Object>>,
    refused: Vec<ObjectId>,
    reports: BTreeMap<ObjectId, Vec<Report>>,
}

impl KindSet {
    pub fn new(watched: Watched) -> Self {
        KindSet {
            watched,
            known: HashSet::new(),
            reports: BTreeMap::new(),
            relist: None,
        }
    }

    /// An object was added or changed. A refused change keeps the last good version.
    pub fn apply(&mut self, obj: DynamicObject) -> Vec<Event> {
        match self.read(obj) {
            Read::Valid(obj, notes) => {
                self.file_reports(obj.id.clone(), notes);
                if self.known.get(&obj.id).is_some_and(|k| k.holds(&obj)) {
                    return Vec::new();
                }
                self.known.replace(ById(obj.clone()));
                vec![Event::Apply(obj)]
            }
            Read::Refused(id, reports) => {
                self.file_reports(id, reports);
                Vec::new()
            }
        }
    }

    /// An object was deleted (whether or not it was valid).
    pub fn delete(&mut self, obj: DynamicObject) -> Vec<Event> {
        let id = self.id(&obj);
        self.reports.remove(&id);
        if self.known.remove(&id) {
            vec![Event::Delete(id)]
        } else {
            Vec::new()
        }
    }

    /// A (re)list starts: what it lists replaces the whole kind when it is done.
    pub fn init(&mut self) {
        self.relist = Some(Relist::default());
    }

    pub fn init_apply(&mut self, obj: DynamicObject) {
        let read = self.read(obj);
        let relist = self.relist.get_or_insert_with(Relist::default);
        match read {
            Read::Valid(obj, notes) => {
                if !notes.is_empty() {
                    relist.reports.insert(obj.id.clone(), notes);
                }
                relist.valid.push(obj);
            }
            Read::Refused(id, reports) => {
                relist.reports.insert(id.clone(), reports);
                relist.refused.push(id);
            }
        }
    }

    /// The (re)list is complete: objects it did not list were deleted meanwhile. A refused
    /// object keeps its last good version, if there was one.
    pub fn init_done(&mut self) -> Vec<Event> {
        let relist = self.relist.take().unwrap_or_default();
        let mut next: HashSet<ById> = relist.valid.into_iter().map(ById).collect();
        for id in &relist.refused {
            if let Some(good) = self.known.get(id) {
                next.insert(good.clone());
            }
        }
        let mut events: Vec<Event> = self
            .known
            .iter()
            .filter(|k| !next.contains(&k.0.id))
            .map(|k| Event::Delete(k.0.id.clone()))
            .collect();
        for obj in &next {
            if !self.known.get(&obj.0.id).is_some_and(|k| k.holds(&obj.0)) {
                events.push(Event::Apply(obj.0.clone()));
            }
        }
        self.known = next;
        self.reports = relist.reports;
        events
    }

    /// Every current report of this kind, by object.
    pub fn reports(&self) -> Vec<Report> {
        self.reports.values().flatten().cloned().collect()
    }

    /// How many objects of this kind the index holds.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    fn file_reports(&mut self, id: ObjectId, reports: Vec<Report>) {
        if reports.is_empty() {
            self.reports.remove(&id);
        } else {
            self.reports.insert(id, reports);
        }
    }

    fn id(&self, obj: &DynamicObject) -> ObjectId {
        let namespace = match self.watched.kind {
            Kind::Namespace => String::new(),
            _ => obj.metadata.namespace.clone().unwrap_or_default(),
        };
        ObjectId::new(
            self.watched.kind,
            namespace,
            obj.metadata.name.clone().unwrap_or_default(),
        )
    }

    /// Converts an API object as the file provider converts a document.
    fn read(&self, obj: DynamicObject) -> Read {
        let id = self.id(&obj);
        let report = |severity, field: String, message: String| Report {
            refused: (severity == Severity::Error).then(|| id.clone()),
            severity,
            file: None,
            object: id.to_string(),
            field,
            message,
        };
        let mut outcome = None;
        read_value(self.document(obj), &mut |o| {
            outcome.get_or_insert(o);
        });
        match outcome {
            Some(Outcome::Object { object, notices }) if object.id == id => {
                let notes = notices
                    .into_iter()
                    .map(|n| report(Severity::Warning, n.field, n.message))
                    .collect();
                Read::Valid(Arc::new(object), notes)
            }
            Some(Outcome::Invalid { errors, .. }) => {
                let kept = if self.known.contains(&id) {
                    "; the last good version stays in effect"
                } else {
                    "; the object is not in effect"
                };
                let reports = errors
                    .0
                    .into_iter()
                    .map(|e| report(Severity::Error, e.field, format!("{}{kept}", e.message)))
                    .collect();
                Read::Refused(id, reports)
            }
            other => {
                let what = match other {
                    Some(Outcome::Object { object, .. }) => format!("it read as {}", object.id),
                    _ => "smidge does not read it".into(),
                };
                let message = format!("{what}; the object is not in effect");
                let reports = vec![report(Severity::Error, String::new(), message)];
                Read::Refused(id, reports)
            }
        }
    }

    /// The object as a manifest document: its type (list items come without it), and of its
    /// metadata only what a converter reads (no managedFields, no last-applied annotation).
    fn document(&self, obj: DynamicObject) -> Value {
        let DynamicObject { metadata, data, .. } = obj;
        let mut doc = match data {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let resource = &self.watched.resource;
        doc.insert("apiVersion".into(), resource.api_version.clone().into());
        doc.insert("kind".into(), resource.kind.clone().into());
        let mut meta = Map::new();
        let text = |v: Option<String>| v.map(Value::String);
        if let Some(name) = text(metadata.name) {
            meta.insert("name".into(), name);
        }
        if let Some(ns) = text(metadata.namespace) {
            meta.insert("namespace".into(), ns);
        }
        if let Some(labels) = metadata.labels {
            meta.insert("labels".into(), string_map(labels.into_iter()));
        }
        if let Some(annotations) = metadata.annotations {
            let read = annotations
                .into_iter()
                .filter(|(k, _)| READ_ANNOTATIONS.contains(&k.as_str()));
            meta.insert("annotations".into(), string_map(read));
        }
        doc.insert("metadata".into(), Value::Object(meta));
        Value::Object(doc)
    }
}

fn string_map(entries: impl Iterator<Item = (String, String)>) -> Value {
    Value::Object(entries.map(|(k, v)| (k, Value::String(v))).collect())
}

/// The watcher's settings for `watched`: its label selector, if any.
fn watch_config(watched: &Watched) -> watcher::Config {
    let config = watcher::Config::default();
    match watched.selector {
        Some(selector) => config.labels(selector),
        None => config,
    }
}

/// Watches one kind and sends its batches: the first when the first list is complete, then
/// one per burst of changes, and a replace-all after every relist (a 410 Gone, a reconnect
/// the API server could not resume). Errors are logged and retried with kube-runtime's
/// default backoff; they never end the watch.
pub async fn run(client: kube::Client, watched: Watched, sink: Sink) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::all_with(client, &watched.resource);
    let kind = watched.kind;
    let stream = watcher(api, watch_config(&watched))
        .default_backoff()
        .ready_chunks(BATCH);
    futures_util::pin_mut!(stream);
    let mut set = KindSet::new(watched);
    let (mut listed, mut last_reports) = (false, Vec::new());
    while let Some(chunk) = stream.next().await {
        let mut events = Vec::new();
        let mut relisted = false;
        for item in chunk {
            match item {
                Ok(watcher::Event::Init) => set.init(),
                Ok(watcher::Event::InitApply(obj)) => set.init_apply(obj),
                Ok(watcher::Event::InitDone) => {
                    events.extend(set.init_done());
                    relisted = true;
                }
                Ok(watcher::Event::Apply(obj)) => events.extend(set.apply(obj)),
                Ok(watcher::Event::Delete(obj)) => events.extend(set.delete(obj)),
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff")
                }
            }
        }
        if relisted {
            tracing::info!(%kind, objects = set.len(), changes = events.len(), "listed");
        }
        let reports = set.reports();
        let first = relisted && !listed;
        listed |= relisted;
        if listed && (first || !events.is_empty() || reports != last_reports) {
            last_reports.clone_from(&reports);
            if sink.send((events, reports)).await.is_err() {
                return Ok(());
            }
        }
    }
    anyhow::bail!("the {kind} watch ended")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn watched(kind: Kind) -> Watched {
        kinds()
            .into_iter()
            .find(|w| w.kind == kind)
            .expect("watched kind")
    }

    fn split(name: &str, weight: Value) -> DynamicObject {
        // As a list item: no apiVersion or kind.
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": "n", "resourceVersion": "7",
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            },
            "spec": {"service": "a", "backends": [{"service": "b", "weight": weight}]},
        }))
        .expect("object")
    }

    fn names(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Apply(o) => format!("apply {}", o.id),
                Event::Delete(id) => format!("delete {id}"),
            })
            .collect()
    }

    fn weight_of(events: &[Event]) -> u64 {
        match events {
            [Event::Apply(o)] => match &o.body {
                crate::model::Body::TrafficSplit(s) => s.backends[0].weight,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn changes_apply_once_and_deletes_remove() {
        let mut set = KindSet::new(watched(Kind::TrafficSplit));
        set.init();
        assert!(set.init_done().is_empty());
        assert_eq!(weight_of(&set.apply(split("s", json!(1)))), 1);
        assert!(set.apply(split("s", json!(1))).is_empty(), "unchanged");
        assert_eq!(weight_of(&set.apply(split("s", json!(2)))), 2);
        assert_eq!(
            names(&set.delete(split("s", json!(2)))),
            ["delete TrafficSplit n/s"]
        );
        assert!(set.delete(split("s", json!(2))).is_empty());
        assert!(set.is_empty());
    }

    #[test]
    fn a_malformed_object_is_reported_and_keeps_its_last_good_version() {
        let mut set = KindSet::new(watched(Kind::TrafficSplit));
        set.apply(split("s", json!(1)));
        for bad in [json!(-1), json!(1.5), json!("ten")] {
            assert!(set.apply(split("s", bad.clone())).is_empty(), "{bad}");
            let reports = set.reports();
            assert_eq!(reports.len(), 1, "{reports:?}");
            assert_eq!(reports[0].severity, Severity::Error);
            assert_eq!(reports[0].object, "TrafficSplit n/s");
            assert_eq!(reports[0].field, "spec.backends[0].weight", "{bad}");
            assert!(
                reports[0]
                    .message
                    .ends_with("the last good version stays in effect"),
                "{}",
                reports[0].message
            );
        }
        assert_eq!(set.len(), 1);
        // A new malformed object is not in effect; the good one is untouched.
        assert!(set.apply(split("t", json!(-1))).is_empty());
        assert!(set.reports()[1]
            .message
            .ends_with("the object is not in effect"));
        assert_eq!(weight_of(&set.apply(split("s", json!(3)))), 3);
        assert_eq!(set.reports().len(), 1, "only t's report is left");
        set.delete(split("t", json!(-1)));
        assert!(set.reports().is_empty());
    }

    #[test]
    fn a_relist_replaces_the_whole_kind() {
        let mut set = KindSet::new(watched(Kind::TrafficSplit));
        set.init();
        for (name, w) in [("gone", 1), ("same", 1), ("changed", 1), ("broken", 1)] {
            set.init_apply(split(name, json!(w)));
        }
        assert_eq!(set.init_done().len(), 4);
        // After a 410 Gone: `gone` was deleted and `changed` edited meanwhile, `broken` is now
        // malformed, `new` appeared.
        set.init();
        set.init_apply(split("same", json!(1)));
        set.init_apply(split("changed", json!(2)));
        set.init_apply(split("broken", json!(-1)));
        set.init_apply(split("new", json!(1)));
        let mut events = names(&set.init_done());
        events.sort();
        assert_eq!(
            events,
            [
                "apply TrafficSplit n/changed",
                "apply TrafficSplit n/new",
                "delete TrafficSplit n/gone"
            ]
        );
        assert_eq!(set.len(), 4, "broken keeps its last good version");
        assert_eq!(set.reports().len(), 1);
        assert_eq!(set.reports()[0].object, "TrafficSplit n/broken");
    }

    #[test]
    fn events_during_a_relist_wait_for_its_end() {
        let mut set = KindSet::new(watched(Kind::TrafficSplit));
        set.init();
        set.init_apply(split("s", json!(1)));
        assert_eq!(set.len(), 0, "nothing is in effect before InitDone");
        assert_eq!(names(&set.init_done()), ["apply TrafficSplit n/s"]);
    }

    #[test]
    fn only_the_annotations_a_converter_reads_are_kept() {
        let set = KindSet::new(watched(Kind::Namespace));
        let ns: DynamicObject = serde_json::from_value(json!({
            "metadata": {
                "name": "shop",
                "labels": {"smidge.io/inject": "enabled"},
                "annotations": {
                    "smidge.io/default-policy": "allow-all",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}",
                },
                "managedFields": [{"manager": "kubectl"}],
                "uid": "u",
            },
            "spec": {"finalizers": ["kubernetes"]},
        }))
        .expect("object");
        let doc = set.document(ns);
        assert_eq!(
            doc,
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": "shop",
                    "labels": {"smidge.io/inject": "enabled"},
                    "annotations": {"smidge.io/default-policy": "allow-all"},
                },
                "spec": {"finalizers": ["kubernetes"]},
            })
        );
    }

    #[test]
    fn only_pods_with_the_injectors_label_are_watched() {
        for w in kinds() {
            let config = watch_config(&w);
            match w.kind {
                Kind::Pod => assert_eq!(config.label_selector.as_deref(), Some(labels::MESHED)),
                _ => assert_eq!(config.label_selector, None, "{}", w.kind),
            }
        }
    }

    /// The objects of `items` (as list items: no type) through their kind's watch, into an index.
    fn watched_index(items: Vec<(Kind, Value)>) -> crate::index::Index {
        let mut index = crate::index::Index::default();
        for (kind, item) in items {
            let mut set = KindSet::new(watched(kind));
            for e in set.apply(serde_json::from_value(item).expect("object")) {
                match e {
                    Event::Apply(o) => {
                        index.apply(o);
                    }
                    Event::Delete(id) => panic!("{id}"),
                }
            }
        }
        index
    }

    /// In a namespace without the injection label: a pod the labelled watch delivers is meshed
    /// (its endpoint carries its identity); an endpoint whose pod the watch never delivered (an
    /// unmeshed pod) is not, though the pod asks for injection in an annotation.
    #[test]
    fn a_pod_of_the_labelled_watch_is_meshed_and_an_endpoint_of_an_unknown_pod_is_not() {
        use smidge_protocol::{Identity, View, ViewKey};
        let index = watched_index(vec![
            (Kind::Namespace, json!({"metadata": {"name": "n"}})),
            (
                Kind::Service,
                json!({"metadata": {"name": "a", "namespace": "n"},
                       "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}}),
            ),
            (
                Kind::EndpointSlice,
                json!({"metadata": {"name": "a-1", "namespace": "n",
                             "labels": {"kubernetes.io/service-name": "a"}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
                "endpoints": [
                    {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "p"}},
                    {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "name": "q"}},
                ]}),
            ),
            (
                Kind::Pod,
                json!({"metadata": {"name": "p", "namespace": "n",
                                    "labels": {labels::MESHED: "smidge-system"}},
                       "spec": {"serviceAccountName": "sa", "containers": [{"name": "app"}]},
                       "status": {"podIP": "10.0.0.1"}}),
            ),
        ]);
        let compiled = crate::compile::compile(
            &index,
            &ViewKey::Outbound("10.96.0.10:80".parse().expect("addr")),
            &crate::compile::MeshConfig::default(),
        );
        let Some(View::Outbound(view)) = compiled.view else {
            panic!("{:?}", compiled.view)
        };
        let identities: Vec<_> = view.backends[0]
            .endpoints
            .iter()
            .map(|e| (e.addr.to_string(), e.identity.clone()))
            .collect();
        assert_eq!(
            identities,
            [
                ("10.0.0.1:8080".to_string(), Some(Identity::new("n", "sa"))),
                ("10.0.0.2:8080".to_string(), None),
            ]
        );
    }

    #[test]
    fn the_injectors_label_outranks_an_opt_out_annotation() {
        let mut set = KindSet::new(watched(Kind::Pod));
        let pod = json!({"metadata": {"name": "p", "namespace": "n",
                                      "labels": {labels::MESHED: "smidge-system"},
                                      "annotations": {labels::INJECT: labels::INJECT_DISABLED}},
                         "spec": {"containers": [{"name": "app"}]}});
        match &set.apply(serde_json::from_value(pod).expect("object"))[..] {
            [Event::Apply(o)] => match &o.body {
                crate::model::Body::Pod(p) => assert_eq!(p.inject, Some(true)),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    /// The same objects through the file provider's reader and through a watch give equal
    /// model objects.
    #[test]
    fn both_providers_read_the_same_objects() {
        let yaml = "\
apiVersion: v1
kind: Namespace
metadata: {name: n, labels: {smidge.io/inject: enabled}, annotations: {smidge.io/default-policy: allow-meshed}}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: n}
spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10], ports: [{name: http, port: 80, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: a-1, namespace: n, labels: {kubernetes.io/service-name: a}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1], conditions: {ready: true}, targetRef: {kind: Pod, name: p}}]
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: n, annotations: {smidge.io/inject: enabled}}
spec: {serviceAccountName: sa, containers: [{name: app, image: app}]}
status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}]}
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: s, namespace: n}
spec: {service: a, backends: [{service: b, weight: 3}], matches: [{kind: HTTPRouteGroup, name: r}]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: r, namespace: n}
spec: {matches: [{name: m, pathRegex: /api, methods: [GET]}]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: t, namespace: n}
spec:
  destination: {kind: ServiceAccount, name: sa, namespace: n}
  sources: [{kind: ServiceAccount, name: c, namespace: n}]
  rules: [{kind: HTTPRouteGroup, name: r, matches: [m]}]
";
        for (_, outcome) in crate::manifest::read_file(yaml) {
            let Outcome::Object { object, .. } = outcome else {
                panic!("{outcome:?}")
            };
            let mut value: Value = serde_json::to_value(
                serde_yaml_ng::from_str::<Value>(
                    &crate::manifest::split_documents(yaml)
                        .into_iter()
                        .map(|(_, d)| d)
                        .find(|d| d.contains(&format!("kind: {}\n", object.id.kind)))
                        .expect("document"),
                )
                .expect("yaml"),
            )
            .expect("json");
            // As the API server sends list items: without their type.
            let map = value.as_object_mut().expect("map");
            map.remove("apiVersion");
            map.remove("kind");
            let obj: DynamicObject = serde_json::from_value(value).expect("object");
            let mut set = KindSet::new(watched(object.id.kind));
            let events = set.apply(obj);
            match &events[..] {
                [Event::Apply(watched)] => assert_eq!(**watched, object),
                other => panic!("{}: {other:?}", object.id),
            }
        }
    }
}
