//! The local cluster's API server, minus the server: the objects users apply, validated the way
//! the real one (plus smidge's own checks) would, kept as applied. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde_json::Value;
use smidge_controller::manifest::{read_value, split_documents, Outcome};

use crate::workloads::Deployment;

/// The kinds users apply to the local cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    ServiceAccount,
    Service,
    Deployment,
    HttpRouteGroup,
    TcpRoute,
    UdpRoute,
    TrafficTarget,
    TrafficSplit,
}

const ALL: [Kind; 9] = [
    Kind::Namespace,
    Kind::ServiceAccount,
    Kind::Service,
    Kind::Deployment,
    Kind::HttpRouteGroup,
    Kind::TcpRoute,
    Kind::UdpRoute,
    Kind::TrafficTarget,
    Kind::TrafficSplit,
];

impl Kind {
    /// As written in `kind:`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Service => "Service",
            Kind::Deployment => "Deployment",
            Kind::HttpRouteGroup => "HTTPRouteGroup",
            Kind::TcpRoute => "TCPRoute",
            Kind::UdpRoute => "UDPRoute",
            Kind::TrafficTarget => "TrafficTarget",
            Kind::TrafficSplit => "TrafficSplit",
        }
    }

    /// `resource.group`, as kubectl prints it (`deployment.apps/web created`).
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::ServiceAccount => "serviceaccount",
            Kind::Service => "service",
            Kind::Deployment => "deployment.apps",
            Kind::HttpRouteGroup => "httproutegroup.specs.smi-spec.io",
            Kind::TcpRoute => "tcproute.specs.smi-spec.io",
            Kind::UdpRoute => "udproute.specs.smi-spec.io",
            Kind::TrafficTarget => "traffictarget.access.smi-spec.io",
            Kind::TrafficSplit => "trafficsplit.split.smi-spec.io",
        }
    }

    /// The kind `kind:` names, when the local cluster stores it.
    pub fn parse(kind: &str) -> Option<Kind> {
        ALL.into_iter().find(|k| k.name() == kind)
    }

    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// The API groups (with versions) this kind is accepted in.
    fn accepts(self, api_version: &str) -> bool {
        let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
        match self {
            Kind::Namespace | Kind::ServiceAccount | Kind::Service => api_version == "v1",
            Kind::Deployment => api_version == "apps/v1",
            Kind::HttpRouteGroup | Kind::TcpRoute | Kind::UdpRoute => group == "specs.smi-spec.io",
            Kind::TrafficTarget => group == "access.smi-spec.io",
            Kind::TrafficSplit => group == "split.smi-spec.io",
        }
    }
}

/// Which object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub kind: Kind,
    /// Empty for Namespaces.
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Key {
    /// `deployment.apps/web`, as kubectl names objects.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.resource(), self.name)
    }
}

/// What an apply did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Configured,
    Unchanged,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        })
    }
}

/// Why one document was refused; names the object (as far as it could be read) and the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub source: String,
    pub object: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.object)?;
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One stored object.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// As applied, with `metadata.namespace` filled in and `status` dropped.
    pub applied: Value,
    /// Bumped by every apply that changed it (`metadata.generation`).
    pub generation: u64,
}

/// The first address ClusterIPs are handed out from, and how many there are.
pub const SERVICE_CIDR_START: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SERVICE_CIDR_SIZE: u32 = 65_000;

/// Every object users applied, and the ClusterIPs handed out.
#[derive(Clone, Debug, Default)]
pub struct Store {
    objects: BTreeMap<Key, Stored>,
    cluster_ips: BTreeMap<(String, String), Ipv4Addr>,
    /// Bumped on every change, so watchers can tell whether anything moved.
    pub revision: u64,
}

impl Store {
    /// A store holding the `default` namespace, as every cluster does.
    pub fn new() -> Store {
        let mut s = Store::default();
        s.objects.insert(
            Key {
                kind: Kind::Namespace,
                namespace: String::new(),
                name: "default".into(),
            },
            Stored {
                applied: serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}
                }),
                generation: 1,
            },
        );
        s
    }

    /// Applies every document of `text` (from `source`, for messages), in order. Each document
    /// succeeds or is refused on its own, as with `kubectl apply`.
    pub fn apply_text(&mut self, source: &str, text: &str) -> Vec<Result<(Key, Change), Refusal>> {
        documents(source, text)
            .into_iter()
            .map(|doc| doc.and_then(|(what, v)| self.apply(source, &what, v)))
            .collect()
    }

    /// Deletes every object `text` names. Deleting a Namespace deletes what is in it.
    pub fn delete_text(&mut self, source: &str, text: &str) -> Vec<Result<Key, Refusal>> {
        documents(source, text)
            .into_iter()
            .map(|doc| {
                let (what, v) = doc?;
                let (kind, namespace, name) = identify(source, &what, &v)?;
                let key = Key {
                    kind,
                    namespace,
                    name,
                };
                self.delete(&key)
                    .then_some(key.clone())
                    .ok_or_else(|| Refusal {
                        source: source.into(),
                        object: what,
                        field: String::new(),
                        message: "not found".into(),
                    })
            })
            .collect()
    }

    /// Removes one object (and a Namespace's contents); false when it was not there.
    pub fn delete(&mut self, key: &Key) -> bool {
        if key.kind == Kind::Namespace && key.name == "default" {
            return false;
        }
        if self.objects.remove(key).is_none() {
            return false;
        }
        if key.kind == Kind::Service {
            self.cluster_ips
                .remove(&(key.namespace.clone(), key.name.clone()));
        }
        if key.kind == Kind::Namespace {
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.namespace == key.name)
                .cloned()
                .collect();
            for k in inside {
                self.delete(&k);
            }
        }
        self.revision += 1;
        true
    }

    fn apply(
        &mut self,
        source: &str,
        what: &str,
        mut value: Value,
    ) -> Result<(Key, Change), Refusal> {
        let refuse = |field: &str, message: String| Refusal {
            source: source.into(),
            object: what.into(),
            field: field.into(),
            message,
        };
        let (kind, namespace, name) = identify(source, what, &value)?;
        if kind.namespaced()
            && !self.objects.contains_key(&Key {
                kind: Kind::Namespace,
                namespace: String::new(),
                name: namespace.clone(),
            })
        {
            return Err(refuse(
                "metadata.namespace",
                format!("namespace {namespace:?} not found (apply the Namespace first)"),
            ));
        }
        if let Some(obj) = value.as_object_mut() {
            obj.remove("status");
            if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
                if kind.namespaced() {
                    meta.insert("namespace".into(), Value::String(namespace.clone()));
                }
                for server_set in ["uid", "resourceVersion", "generation", "creationTimestamp"] {
                    meta.remove(server_set);
                }
            }
        }
        // The mesh's own reading of the kinds it shares with the controller.
        if kind != Kind::Deployment {
            let mut found = None;
            read_value(value.clone(), &mut |o| found = Some(o));
            match found {
                Some(Outcome::Object { .. }) => {}
                Some(Outcome::Invalid { errors, .. }) => {
                    let first = errors.0.first();
                    return Err(refuse(
                        first.map(|f| f.field.as_str()).unwrap_or(""),
                        errors.to_string(),
                    )
                    .with_field_from_findings(&errors));
                }
                Some(Outcome::Skipped { .. }) | None => {
                    let version = value
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    return Err(refuse(
                        "apiVersion",
                        format!(
                            "{version:?} is not a version smidge reads for {}",
                            kind.name()
                        ),
                    ));
                }
            }
        } else if let Err(e) = Deployment::from_value(&value) {
            return Err(refuse(&e.field, e.message));
        }
        let key = Key {
            kind,
            namespace: namespace.clone(),
            name: name.clone(),
        };
        if kind == Kind::Service {
            self.assign_cluster_ip(&key, &mut value)
                .map_err(|m| refuse("spec.clusterIP", m))?;
        }
        let change = match self.objects.get_mut(&key) {
            Some(stored) if stored.applied == value => Change::Unchanged,
            Some(stored) => {
                stored.applied = value;
                stored.generation += 1;
                Change::Configured
            }
            None => {
                self.objects.insert(
                    key.clone(),
                    Stored {
                        applied: value,
                        generation: 1,
                    },
                );
                Change::Created
            }
        };
        if change != Change::Unchanged {
            self.revision += 1;
        }
        Ok((key, change))
    }

    /// Gives a Service its ClusterIP: the one it asks for, the one it had, or the next free one;
    /// written into `spec.clusterIP` as the API server does.
    fn assign_cluster_ip(&mut self, key: &Key, value: &mut Value) -> Result<(), String> {
        let id = (key.namespace.clone(), key.name.clone());
        let asked = value
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .map(str::to_string);
        let had = self.cluster_ips.get(&id).copied();
        let ip = match (asked.as_deref(), had) {
            (Some("None"), None) => return Ok(()),
            (Some("None"), Some(_)) => return Err("is immutable: the Service has one".into()),
            (Some(text), had) => {
                let ip: Ipv4Addr = text
                    .parse()
                    .map_err(|_| format!("{text:?} is not an IPv4 address"))?;
                if had.is_some_and(|h| h != ip) {
                    return Err(format!(
                        "is immutable: the Service has {}",
                        had.map(|h| h.to_string()).unwrap_or_default()
                    ));
                }
                if let Some((other, _)) = self
                    .cluster_ips
                    .iter()
                    .find(|(o, a)| **a == ip && **o != id)
                {
                    return Err(format!(
                        "{ip} is already allocated to Service {}/{}",
                        other.0, other.1
                    ));
                }
                ip
            }
            (None, Some(h)) => h,
            (None, None) => self.free_cluster_ip()?,
        };
        self.cluster_ips.insert(id, ip);
        if let Some(spec) = value
            .as_object_mut()
            .map(|o| o.entry("spec").or_insert_with(|| serde_json::json!({})))
            .and_then(Value::as_object_mut)
        {
            spec.insert("clusterIP".into(), Value::String(ip.to_string()));
        }
        Ok(())
    }

    fn free_cluster_ip(&self) -> Result<Ipv4Addr, String> {
        let start = u32::from(SERVICE_CIDR_START);
        (0..SERVICE_CIDR_SIZE)
            .map(|i| Ipv4Addr::from(start + i))
            .find(|ip| !self.cluster_ips.values().any(|a| a == ip))
            .ok_or_else(|| "the Service range 10.96.0.0/16 is full".into())
    }

    pub fn get(&self, key: &Key) -> Option<&Stored> {
        self.objects.get(key)
    }

    /// Objects of `kind`, in `namespace` when given, ordered by namespace and name.
    pub fn list<'a>(
        &'a self,
        kind: Kind,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Stored)> + 'a {
        self.objects
            .iter()
            .filter(move |(k, _)| k.kind == kind && namespace.is_none_or(|n| k.namespace == n))
    }

    /// Every object, in kind order (Namespaces first).
    pub fn all(&self) -> impl Iterator<Item = (&Key, &Stored)> {
        let mut all: Vec<_> = self.objects.iter().collect();
        all.sort_by_key(|(k, _)| (k.kind, k.namespace.clone(), k.name.clone()));
        all.into_iter()
    }

    /// The labels and annotations of a Namespace, merged (the injection setting may be either).
    pub fn namespace_meta(&self, name: &str) -> BTreeMap<String, String> {
        let Some(ns) = self.get(&Key {
            kind: Kind::Namespace,
            namespace: String::new(),
            name: name.into(),
        }) else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for field in ["/metadata/labels", "/metadata/annotations"] {
            if let Some(Value::Object(m)) = ns.applied.pointer(field) {
                for (k, v) in m {
                    if let Some(v) = v.as_str() {
                        out.insert(k.clone(), v.to_string());
                    }
                }
            }
        }
        out
    }
}

impl Refusal {
    /// With several findings, the message lists them all and the field is the first one's.
    fn with_field_from_findings(mut self, errors: &smidge_controller::smi::Findings) -> Refusal {
        if errors.0.len() == 1 {
            if let Some(f) = errors.0.first() {
                self.field = f.field.clone();
                self.message = f.message.clone();
            }
        } else {
            self.field = String::new();
        }
        self
    }
}

/// The documents of a file as JSON values (a `List` as its items), each with a name for messages.
fn documents(source: &str, text: &str) -> Vec<Result<(String, Value), Refusal>> {
    let mut out = Vec::new();
    for (pos, doc) in split_documents(text) {
        let what = format!("document {}", pos.document);
        match serde_yaml_ng::from_str::<Value>(&doc) {
            Ok(Value::Null) => {}
            Ok(Value::Object(o))
                if o.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List")) =>
            {
                for item in o
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    out.push(Ok((describe(item, &what), item.clone())));
                }
            }
            Ok(v) => out.push(Ok((describe(&v, &what), v))),
            Err(e) => out.push(Err(Refusal {
                source: source.into(),
                object: format!("{what} (line {})", pos.line),
                field: String::new(),
                message: format!("not valid YAML: {e}"),
            })),
        }
    }
    out
}

/// `Deployment shop/web`, or the document number while the name is unknown.
fn describe(v: &Value, fallback: &str) -> String {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let ns = v
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    match (kind, name) {
        ("", _) | (_, "") => fallback.to_string(),
        ("Namespace", n) => format!("Namespace {n}"),
        (k, n) => format!("{k} {ns}/{n}"),
    }
}

/// Kind, namespace (defaulted) and name of a document, or why they cannot be read.
fn identify(source: &str, what: &str, v: &Value) -> Result<(Kind, String, String), Refusal> {
    let refuse = |field: &str, message: String| Refusal {
        source: source.into(),
        object: what.into(),
        field: field.into(),
        message,
    };
    if !v.is_object() {
        return Err(refuse("", "a Kubernetes object must be a mapping".into()));
    }
    let kind_text = v.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind_text.is_empty() {
        return Err(refuse("kind", "is missing".into()));
    }
    let kind = Kind::parse(kind_text).ok_or_else(|| {
        refuse(
            "kind",
            format!(
                "{kind_text} is not a kind the local cluster runs (it takes {})",
                ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if !kind.accepts(api_version) {
        return Err(refuse(
            "apiVersion",
            format!("{api_version:?} is not an API version of {kind_text}"),
        ));
    }
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        return Err(refuse("metadata.name", "is missing".into()));
    }
    if !(is_dns_label(name) || kind.namespaced() && is_dns_subdomain(name)) {
        return Err(refuse(
            "metadata.name",
            format!("{name:?} must be lowercase letters, digits and '-' (a DNS label)"),
        ));
    }
    let namespace = if kind.namespaced() {
        let ns = v
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        if !is_dns_label(ns) {
            return Err(refuse(
                "metadata.namespace",
                format!("{ns:?} is not a valid namespace name"),
            ));
        }
        ns.to_string()
    } else {
        String::new()
    };
    Ok((kind, namespace, name.to_string()))
}

/// RFC 1123 label: what namespace and Service names must be.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {smidge.io/inject: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}
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
      containers: [{name: app, image: smidge/echo, ports: [{containerPort: 8080}]}]
"#;

    fn changes(out: Vec<Result<(Key, Change), Refusal>>) -> Vec<String> {
        out.into_iter()
            .map(|r| match r {
                Ok((k, c)) => format!("{k} {c}"),
                Err(e) => e.to_string(),
            })
            .collect()
    }

    #[test]
    fn the_same_yaml_applied_twice_changes_nothing_the_second_time() {
        let mut s = Store::new();
        assert_eq!(
            changes(s.apply_text("shop.yaml", SHOP)),
            [
                "namespace/shop created",
                "service/web created",
                "deployment.apps/web created"
            ]
        );
        let revision = s.revision;
        assert_eq!(
            changes(s.apply_text("shop.yaml", SHOP)),
            [
                "namespace/shop unchanged",
                "service/web unchanged",
                "deployment.apps/web unchanged"
            ]
        );
        assert_eq!(s.revision, revision);
        let edited = SHOP.replace("replicas: 2", "replicas: 3");
        assert_eq!(
            changes(s.apply_text("shop.yaml", &edited))[2],
            "deployment.apps/web configured"
        );
    }

    #[test]
    fn services_keep_their_cluster_ip_across_applies() {
        let mut s = Store::new();
        s.apply_text("a", SHOP);
        let key = Key {
            kind: Kind::Service,
            namespace: "shop".into(),
            name: "web".into(),
        };
        let ip = |s: &Store| {
            s.get(&key)
                .and_then(|o| o.applied.pointer("/spec/clusterIP"))
                .cloned()
        };
        assert_eq!(ip(&s), Some(Value::String("10.96.0.10".into())));
        s.apply_text("a", SHOP);
        assert_eq!(ip(&s), Some(Value::String("10.96.0.10".into())));
        let moved = SHOP.replace(
            "selector: {app: web}, ports",
            "clusterIP: 10.96.9.9, selector: {app: web}, ports",
        );
        let out = changes(s.apply_text("a", &moved));
        assert_eq!(
            out[1],
            "a: Service shop/web: spec.clusterIP: is immutable: the Service has 10.96.0.10"
        );
    }

    #[test]
    fn a_bad_document_is_refused_by_name_and_field_and_the_rest_applies() {
        let mut s = Store::new();
        let text = format!(
            "{SHOP}---\napiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: s, namespace: shop}}\nspec: {{service: web, backends: [{{service: web, weight: -1}}]}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: late, namespace: nowhere}}\n"
        );
        let out = changes(s.apply_text("f.yaml", &text));
        assert_eq!(out.len(), 6);
        assert!(
            out[3].starts_with("f.yaml: TrafficSplit shop/s: spec.backends[0].weight:"),
            "{}",
            out[3]
        );
        assert!(
            out[4].contains("ConfigMap is not a kind the local cluster runs"),
            "{}",
            out[4]
        );
        assert_eq!(
            out[5],
            "f.yaml: ServiceAccount nowhere/late: metadata.namespace: namespace \"nowhere\" not found (apply the Namespace first)"
        );
        assert_eq!(s.list(Kind::Deployment, Some("shop")).count(), 1);
    }

    #[test]
    fn deleting_a_namespace_deletes_what_is_in_it() {
        let mut s = Store::new();
        s.apply_text("a", SHOP);
        let out = s.delete_text(
            "a",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        );
        assert!(out[0].is_ok());
        assert_eq!(s.all().count(), 1, "only the default namespace is left");
        let again = s.delete_text(
            "a",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        );
        assert_eq!(
            again[0].as_ref().err().map(|e| e.message.as_str()),
            Some("not found")
        );
    }
}
