//! The one internal model every provider feeds and the compiler reads: version-independent,
//! validated, and small. Conversions from the API shapes live next to those shapes.

use std::fmt;
use std::net::IpAddr;

use smidge_protocol::{DefaultPolicy, HttpMatch};

/// The kinds smidge reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    ServiceAccount,
    Service,
    EndpointSlice,
    Endpoints,
    Pod,
    TrafficTarget,
    HttpRouteGroup,
    TcpRoute,
    UdpRoute,
    TrafficSplit,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Endpoints => "Endpoints",
            Kind::Pod => "Pod",
            Kind::TrafficTarget => "TrafficTarget",
            Kind::HttpRouteGroup => "HTTPRouteGroup",
            Kind::TcpRoute => "TCPRoute",
            Kind::UdpRoute => "UDPRoute",
            Kind::TrafficSplit => "TrafficSplit",
        }
    }

    /// The kind named `name` (as written in `kind:`), if smidge reads it.
    pub fn parse(name: &str) -> Option<Kind> {
        const ALL: [Kind; 11] = [
            Kind::Namespace,
            Kind::ServiceAccount,
            Kind::Service,
            Kind::EndpointSlice,
            Kind::Endpoints,
            Kind::Pod,
            Kind::TrafficTarget,
            Kind::HttpRouteGroup,
            Kind::TcpRoute,
            Kind::UdpRoute,
            Kind::TrafficSplit,
        ];
        ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn is_smi(self) -> bool {
        matches!(
            self,
            Kind::TrafficTarget
                | Kind::HttpRouteGroup
                | Kind::TcpRoute
                | Kind::UdpRoute
                | Kind::TrafficSplit
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A namespace and a name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsName {
    pub namespace: String,
    pub name: String,
}

impl NsName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        NsName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for NsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Which object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub kind: Kind,
    pub key: NsName,
}

impl ObjectId {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectId {
            kind,
            key: NsName::new(namespace, name),
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.key)
    }
}

/// A validated object of any kind smidge reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub id: ObjectId,
    /// The API version it was written in (`access.smi-spec.io/v1alpha3`, `v1`, …).
    pub api_version: String,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Namespace(Namespace),
    ServiceAccount,
    Service(Service),
    /// EndpointSlices and (legacy) Endpoints, both as slices.
    Endpoints(EndpointSet),
    Pod(Pod),
    TrafficTarget(TrafficTarget),
    HttpRouteGroup(HttpRouteGroup),
    /// TCPRoute and UDPRoute.
    PortRoute(PortRoute),
    TrafficSplit(TrafficSplit),
}

/// The mesh-relevant parts of a Namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Namespace {
    /// Whether pods here get a proxy (the injection label or annotation).
    pub meshed: bool,
    /// The default policy annotation, if set.
    pub default_policy: Option<DefaultPolicy>,
}

/// A Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub protocol: String,
}

/// The mesh-relevant parts of a Service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Service {
    /// Empty for headless Services.
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
}

/// One EndpointSlice (or an Endpoints object, which reads as one slice).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointSet {
    /// The Service these endpoints belong to.
    pub service: String,
    /// Port name → port number on the endpoints.
    pub ports: Vec<(String, u16)>,
    pub endpoints: Vec<EndpointAddress>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EndpointAddress {
    pub ip: IpAddr,
    pub ready: bool,
    /// The pod behind this address, when the slice names it.
    pub pod: Option<String>,
}

/// The mesh-relevant parts of a Pod. Nothing else is kept: a mesh has a Pod per endpoint, and
/// its labels alone (EndpointSlices already say which Service a pod backs) cost more than the
/// rest of the object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pod {
    pub service_account: String,
    pub ips: Vec<IpAddr>,
    /// `Some(true)`/`Some(false)` when the pod's own annotation opts in or out of the mesh.
    pub inject: Option<bool>,
}

/// A reference to a ServiceAccount (or, for forward compatibility, another subject kind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    /// Defaulted to the TrafficTarget's namespace when the object leaves it out.
    pub namespace: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    HttpRouteGroup,
    TcpRoute,
    UdpRoute,
}

impl RouteKind {
    pub fn kind(self) -> Kind {
        match self {
            RouteKind::HttpRouteGroup => Kind::HttpRouteGroup,
            RouteKind::TcpRoute => Kind::TcpRoute,
            RouteKind::UdpRoute => Kind::UdpRoute,
        }
    }

    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "HTTPRouteGroup" => Some(RouteKind::HttpRouteGroup),
            "TCPRoute" => Some(RouteKind::TcpRoute),
            "UDPRoute" => Some(RouteKind::UdpRoute),
            _ => None,
        }
    }
}

/// One rule of a TrafficTarget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetRule {
    pub kind: RouteKind,
    pub name: String,
    /// Match names of an HTTPRouteGroup; empty means all of its matches.
    pub matches: Vec<String>,
}

/// A TrafficTarget, any version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficTarget {
    pub destination: Subject,
    pub sources: Vec<Subject>,
    pub rules: Vec<TargetRule>,
    /// `destination.port` of access v1alpha1/v1alpha2 (removed in v1alpha3).
    pub destination_port: Option<u16>,
}

/// An HTTPRouteGroup, any version; match names are plain (not yet qualified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRouteGroup {
    pub matches: Vec<HttpMatch>,
}

/// A TCPRoute or UDPRoute: the ports it covers, empty meaning all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRoute {
    pub ports: Vec<u16>,
}

/// One backend of a TrafficSplit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitBackend {
    pub service: String,
    /// Relative weight; 0 never receives traffic.
    pub weight: u64,
}

/// A TrafficSplit, any version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficSplit {
    /// The apex (root) Service clients address.
    pub service: String,
    pub backends: Vec<SplitBackend>,
    /// HTTPRouteGroup names; only requests matching them are split (v1alpha3+).
    pub matches: Vec<String>,
}

/// A shared object filed by its own id: a set of these is a map from id to object that does not
/// keep a second copy of every id (70,000 objects make that worth it).
#[derive(Clone, Debug)]
pub struct ById(pub std::sync::Arc<Object>);

impl ById {
    /// Whether this entry already holds `obj` (the same allocation, or an equal object).
    pub fn holds(&self, obj: &std::sync::Arc<Object>) -> bool {
        std::sync::Arc::ptr_eq(&self.0, obj) || *self.0 == **obj
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.id.cmp(&other.0.id)
    }
}

impl std::hash::Hash for ById {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id.hash(state)
    }
}

impl std::borrow::Borrow<ObjectId> for ById {
    fn borrow(&self) -> &ObjectId {
        &self.0.id
    }
}
