//! The per-proxy views the controller compiles and the proxy enforces.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// What a proxy subscribes to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ViewKey {
    /// How to reach whatever listens at this original destination (a Service's ClusterIP:port).
    Outbound(SocketAddr),
    /// Who may call the workload that runs as this ServiceAccount.
    Inbound(Identity),
    /// Which workload a peer address belongs to: the interim caller identity of an inbound proxy
    /// until mutual TLS carries it (a pod cannot choose its source address without privileges).
    Peer(IpAddr),
}

impl fmt::Display for ViewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewKey::Outbound(addr) => write!(f, "outbound:{addr}"),
            ViewKey::Inbound(id) => write!(f, "inbound:{id}"),
            ViewKey::Peer(ip) => write!(f, "peer:{ip}"),
        }
    }
}

/// A workload identity: a ServiceAccount in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    pub fn new(namespace: impl Into<String>, service_account: impl Into<String>) -> Self {
        Identity {
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)
    }
}

/// A compiled view, outbound or inbound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum View {
    Outbound(OutboundView),
    Inbound(InboundView),
    Peer(PeerView),
}

/// The workload behind one pod address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// The pod's identity when it is meshed; `None` for an un-meshed pod.
    pub identity: Option<Identity>,
}

/// A Service port named by its namespace, name and port number.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub port: u16,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.svc.cluster.local:{}",
            self.name, self.namespace, self.port
        )
    }
}

/// How a client reaches one Service port: routes decide per request, backends hold endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundView {
    /// The service the client addressed (for metrics and logs; routing uses the original destination).
    pub service: ServiceRef,
    /// Tried in order; the first route whose matches accept the request wins.
    pub routes: Vec<Route>,
    /// The backend Services the routes point into, by index.
    pub backends: Vec<Backend>,
}

/// One routing rule: which requests, and how to spread them over backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The TrafficSplit this route comes from, or empty for the Service's own endpoints.
    pub name: String,
    /// Empty: every request (and every opaque TCP connection). Otherwise any one must match.
    pub matches: Vec<HttpMatch>,
    /// Weighted choice among backends; weights are relative and never zero.
    /// Empty: the route has no usable backend and requests fail with 503.
    pub targets: Vec<WeightedTarget>,
}

/// A backend index with its relative weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedTarget {
    pub backend: u16,
    pub weight: u32,
}

/// A backend Service and its ready endpoints, sorted by address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
}

/// A ready endpoint: the pod address and port to dial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The pod's identity when it runs a smidge proxy; `None` for an un-meshed pod.
    pub identity: Option<Identity>,
}

/// One HTTPRouteGroup match, as SMI defines it (see [`crate::matching`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpMatch {
    /// `namespace/group/match` for reasons and metrics.
    pub name: String,
    /// A regex anchored at the start of the path; `None` matches every path.
    pub path_regex: Option<String>,
    /// Upper-case method names; empty or containing `*` matches every method.
    pub methods: Vec<String>,
    /// Header name (lower case) and a value regex; all must match.
    pub headers: Vec<(String, String)>,
}

/// What a workload's proxy admits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundView {
    /// Applies only while no authorization names this workload.
    pub default_policy: DefaultPolicy,
    /// One per TrafficTarget whose destination is this workload; any one admitting is enough.
    pub authorizations: Vec<Authorization>,
}

/// The policy for a workload that no TrafficTarget names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DefaultPolicy {
    /// SMI's default: nothing is admitted.
    Deny,
    /// Any client with a mesh identity.
    AllowMeshed,
    /// Any client, meshed or not.
    AllowAll,
}

impl DefaultPolicy {
    /// The spelling used in annotations and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::Deny => "deny",
            DefaultPolicy::AllowMeshed => "allow-meshed",
            DefaultPolicy::AllowAll => "allow-all",
        }
    }
}

impl std::str::FromStr for DefaultPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deny" => Ok(DefaultPolicy::Deny),
            "allow-meshed" => Ok(DefaultPolicy::AllowMeshed),
            "allow-all" => Ok(DefaultPolicy::AllowAll),
            other => Err(format!(
                "unknown default policy {other:?}: expected deny, allow-meshed or allow-all"
            )),
        }
    }
}

/// One TrafficTarget, compiled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    /// `namespace/name` of the TrafficTarget.
    pub name: String,
    pub sources: Vec<Identity>,
    /// The destination ports this authorization covers.
    pub ports: PortRule,
    /// `None`: the TrafficTarget has no HTTPRouteGroup rule, so HTTP is not restricted by route.
    /// `Some`: an HTTP request must match one of these (an empty list admits no HTTP request).
    pub http: Option<Vec<HttpMatch>>,
    /// Whether a connection that is not HTTP (opaque TCP, TLS that is not the mesh's, a client
    /// that never sends a request line) is admitted on `ports`: always without HTTPRouteGroup
    /// rules; with them, only when a TCPRoute rule of the same TrafficTarget covers the ports.
    /// Otherwise such a port admits HTTP only, so route rules cannot be skipped by not
    /// speaking HTTP.
    pub opaque: bool,
}

/// A set of destination ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortRule {
    Any,
    /// Sorted; may be empty, which admits no port.
    Only(Vec<u16>),
}

impl PortRule {
    pub fn contains(&self, port: u16) -> bool {
        match self {
            PortRule::Any => true,
            PortRule::Only(ports) => ports.binary_search(&port).is_ok(),
        }
    }
}

/// Why a received view cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidView {
    #[error("route {route:?} points at backend {backend}, but the view has {count} backends")]
    BackendOutOfRange {
        route: String,
        backend: u16,
        count: usize,
    },
    #[error("route {route:?} has a zero weight for backend {backend}")]
    ZeroWeight { route: String, backend: u16 },
    #[error("match {name:?}: {reason}")]
    BadMatch { name: String, reason: String },
}

impl View {
    /// Checks what the type cannot: indexes in range, weights positive, regexes compile.
    pub fn validate(&self) -> Result<(), InvalidView> {
        match self {
            View::Outbound(v) => v.validate(),
            View::Inbound(v) => {
                for a in &v.authorizations {
                    for m in a.http.iter().flatten() {
                        crate::matching::CompiledMatch::compile(m)?;
                    }
                }
                Ok(())
            }
            View::Peer(_) => Ok(()),
        }
    }
}

impl OutboundView {
    fn validate(&self) -> Result<(), InvalidView> {
        for route in &self.routes {
            for t in &route.targets {
                if usize::from(t.backend) >= self.backends.len() {
                    return Err(InvalidView::BackendOutOfRange {
                        route: route.name.clone(),
                        backend: t.backend,
                        count: self.backends.len(),
                    });
                }
                if t.weight == 0 {
                    return Err(InvalidView::ZeroWeight {
                        route: route.name.clone(),
                        backend: t.backend,
                    });
                }
            }
            for m in &route.matches {
                crate::matching::CompiledMatch::compile(m)?;
            }
        }
        Ok(())
    }
}
