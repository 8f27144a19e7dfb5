//! What the local cluster shows of itself: Pods and EndpointSlices made from the running pods,
//! Deployment status, and the manifests the controller's `file` provider reads. Pure: no I/O.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use crate::objects::{Kind, Store};
use crate::workloads::{selects, target_port, Container, Deployment};

/// A pod as the cluster runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    /// The Deployment that owns it.
    pub owner: String,
    pub template_hash: String,
    pub ip: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub containers: Vec<Container>,
    pub meshed: bool,
    pub phase: Phase,
    pub ready: bool,
    pub restarts: u32,
}

/// Where a pod is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Its processes run.
    Running,
    /// Stopped on request (`smidge local stop`); not restarted until started.
    Stopped,
    /// A process ended; it is restarted after a back-off.
    CrashLoopBackOff,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "Running",
            Phase::Stopped => "Stopped",
            Phase::CrashLoopBackOff => "CrashLoopBackOff",
        }
    }
}

/// The Pod object for `pod`, with its status.
pub fn pod_object(pod: &PodView) -> Value {
    let containers: Vec<Value> = pod
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image,
                "env": c.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
                "ports": c.ports.iter().map(|p| match &p.name {
                    Some(n) => json!({"name": n, "containerPort": p.port}),
                    None => json!({"containerPort": p.port}),
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let ready = if pod.ready { "True" } else { "False" };
    // A pod the cluster runs itself (the controller) shows as one container named after it.
    let names: Vec<(&str, &str)> = if pod.containers.is_empty() {
        vec![(pod.owner.as_str(), pod.owner.as_str())]
    } else {
        pod.containers
            .iter()
            .map(|c| (c.name.as_str(), c.image.as_str()))
            .collect()
    };
    let statuses: Vec<Value> = names
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name, "image": image, "ready": pod.ready,
                "restartCount": pod.restarts,
                "state": {pod.phase.as_str(): {}},
            })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "labels": pod.labels,
            "annotations": {"smidge.io/proxy": if pod.meshed { "injected" } else { "none" }},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": pod.owner}],
        },
        "spec": {"serviceAccountName": pod.service_account, "containers": containers},
        "status": {
            "phase": if pod.phase == Phase::Running { "Running" } else { "Pending" },
            "podIP": pod.ip.to_string(),
            "podIPs": [{"ip": pod.ip.to_string()}],
            "conditions": [{"type": "Ready", "status": ready}],
            "containerStatuses": statuses,
        },
    })
}

/// The EndpointSlices of every Service with a selector: its pods, ready or not, one slice per
/// distinct set of target ports (as the EndpointSlice controller splits them).
pub fn endpoint_slices(store: &Store, pods: &[PodView]) -> Vec<Value> {
    let mut out = Vec::new();
    for (key, stored) in store.list(Kind::Service, None) {
        let Ok(svc) = serde_json::from_value::<core::Service>(stored.applied.clone()) else {
            continue;
        };
        let spec = svc.spec.unwrap_or_default();
        let Some(selector) = spec.selector.filter(|s| !s.is_empty()) else {
            continue;
        };
        let ports = spec.ports.unwrap_or_default();
        let mut groups: BTreeMap<Vec<Option<u16>>, Vec<&PodView>> = BTreeMap::new();
        for pod in pods
            .iter()
            .filter(|p| p.namespace == key.namespace && selects(&selector, &p.labels))
        {
            let resolved = ports
                .iter()
                .map(|sp| {
                    u16::try_from(sp.port).ok().and_then(|port| {
                        target_port(sp.target_port.as_ref(), port, &pod.containers)
                    })
                })
                .collect();
            groups.entry(resolved).or_default().push(pod);
        }
        for (i, (resolved, members)) in groups.into_iter().enumerate() {
            let slice_ports: Vec<Value> = ports
                .iter()
                .zip(&resolved)
                .filter_map(|(sp, port)| {
                    port.map(|p| {
                        json!({
                            "name": sp.name.clone().unwrap_or_default(),
                            "port": p,
                            "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        })
                    })
                })
                .collect();
            let endpoints: Vec<Value> = members
                .iter()
                .map(|p| {
                    json!({
                        "addresses": [p.ip.to_string()],
                        "conditions": {"ready": p.ready, "serving": p.ready, "terminating": false},
                        "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace},
                    })
                })
                .collect();
            out.push(json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{}-{}", key.name, i),
                    "namespace": key.namespace,
                    "labels": {"kubernetes.io/service-name": key.name},
                },
                "addressType": "IPv4",
                "ports": slice_ports,
                "endpoints": endpoints,
            }));
        }
    }
    out
}

/// A Deployment with its status filled in from its pods, and why its last pod could not be
/// made (a `ReplicaFailure` condition), if that keeps happening.
pub fn deployment_object(applied: &Value, pods: &[PodView], failure: Option<&str>) -> Value {
    let mut v = applied.clone();
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let ns = v
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mine: Vec<&PodView> = pods
        .iter()
        .filter(|p| p.namespace == ns && p.owner == name)
        .collect();
    let hash = Deployment::from_value(applied)
        .map(|d| d.template.hash)
        .unwrap_or_default();
    let ready = mine.iter().filter(|p| p.ready).count();
    let updated = mine.iter().filter(|p| p.template_hash == hash).count();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "status".into(),
            json!({
                "replicas": mine.len(),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "updatedReplicas": updated,
                "conditions": failure.map(|why| vec![json!({
                    "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": why,
                })]).unwrap_or_default(),
            }),
        );
    }
    v
}

/// Every object the controller reads, as one multi-document YAML file: the applied kinds
/// (Deployments left out: the controller sees their pods), the pods, and the EndpointSlices.
pub fn controller_manifests(store: &Store, pods: &[PodView]) -> String {
    let objects = store
        .all()
        .filter(|(k, _)| k.kind != Kind::Deployment)
        .map(|(_, s)| s.applied.clone())
        .chain(pods.iter().map(pod_object))
        .chain(endpoint_slices(store, pods));
    to_yaml(objects)
}

/// Values as multi-document YAML.
pub fn to_yaml(values: impl IntoIterator<Item = Value>) -> String {
    values
        .into_iter()
        .filter_map(|v| serde_yaml_ng::to_string(&v).ok())
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use smidge_controller::manifest::{read_file, Outcome};
    use smidge_controller::model::Body;

    const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {smidge.io/inject: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: smidge/echo, ports: [{name: http, containerPort: 8080}]}]
"#;

    fn pods(store: &Store, ready: &[bool]) -> Vec<PodView> {
        let (_, stored) = store
            .list(Kind::Deployment, None)
            .next()
            .expect("deployment");
        let d = Deployment::from_value(&stored.applied).expect("valid");
        ready
            .iter()
            .enumerate()
            .map(|(i, r)| PodView {
                namespace: "shop".into(),
                name: format!("web-{}-{i}", d.template.hash),
                owner: "web".into(),
                template_hash: d.template.hash.clone(),
                ip: Ipv4Addr::new(10, 88, 1, i as u8 + 1),
                labels: d.template.labels.clone(),
                service_account: "default".into(),
                containers: d.template.containers.clone(),
                meshed: true,
                phase: Phase::Running,
                ready: *r,
                restarts: 0,
            })
            .collect()
    }

    #[test]
    fn endpoint_slices_follow_readiness_and_resolve_named_ports() {
        let mut store = Store::new();
        store.apply_text("shop", SHOP);
        let p = pods(&store, &[true, false]);
        let text = controller_manifests(&store, &p);
        let mut slices = Vec::new();
        let mut pod_count = 0;
        for (_, o) in read_file(&text) {
            match o {
                Outcome::Object { object, .. } => match object.body {
                    Body::Endpoints(set) => slices.push(set),
                    Body::Pod(_) => pod_count += 1,
                    _ => {}
                },
                Outcome::Skipped { kind, .. } => panic!("the controller skips {kind}"),
                Outcome::Invalid { what, errors, .. } => panic!("{what}: {errors}"),
            }
        }
        assert_eq!(pod_count, 2);
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].service, "web");
        assert_eq!(slices[0].ports, [("http".to_string(), 8080)]);
        let ready: Vec<(String, bool)> = slices[0]
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.ready))
            .collect();
        assert_eq!(
            ready,
            [
                ("10.88.1.1".to_string(), true),
                ("10.88.1.2".to_string(), false)
            ]
        );
    }

    #[test]
    fn deployment_status_counts_ready_and_updated_pods() {
        let mut store = Store::new();
        store.apply_text("shop", SHOP);
        let p = pods(&store, &[true, false]);
        let (_, stored) = store
            .list(Kind::Deployment, None)
            .next()
            .expect("deployment");
        let d = deployment_object(&stored.applied, &p, None);
        assert_eq!(d["status"]["replicas"], 2);
        assert_eq!(d["status"]["readyReplicas"], 1);
        assert_eq!(d["status"]["updatedReplicas"], 2);
    }
}
