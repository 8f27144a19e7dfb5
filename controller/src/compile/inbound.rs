//! The inbound view: who may call a workload (TrafficTarget semantics, REFERENCE §3.2).
//!
//! One authorization per TrafficTarget whose destination is the workload's ServiceAccount and
//! which lives in the destination's namespace (a TrafficTarget elsewhere could grant access to
//! someone else's workload, so it is ignored and reported). Within one TrafficTarget:
//! - ports: all, unless it has TCPRoute/UDPRoute rules; then the union of its TCPRoute ports
//!   (a route with no ports means all). UDP rules admit no TCP port. A v1alpha1/v1alpha2
//!   `destination.port` narrows that further to the one port.
//! - HTTP: unrestricted unless it has HTTPRouteGroup rules; then a request must match one of the
//!   referenced matches (a rule without `matches` means all matches of its group).
//! - Not HTTP (opaque TCP): admitted on its ports unless it has HTTPRouteGroup rules; with them,
//!   only when it also has a TCPRoute rule (the v1alpha3 L7 example: a TCPRoute for the port
//!   plus HTTP rules). HTTP rules alone make their ports HTTP only, so a client cannot skip
//!   them by sending something that is not HTTP.
//! - A rule naming a route that does not exist admits nothing.

use smidge_protocol::{Authorization, HttpMatch, Identity, InboundView, PortRule};

use super::MeshConfig;
use crate::index::{DepKey, Lookup};
use crate::model::{Body, NsName, RouteKind, TrafficTarget};

/// Compiles the inbound view of the workload running as `id`.
pub fn inbound(lookup: &Lookup<'_>, id: &Identity, config: &MeshConfig) -> InboundView {
    let default_policy = lookup
        .namespace(&id.namespace)
        .and_then(|n| n.default_policy)
        .unwrap_or(config.default_policy);
    let authorizations = lookup
        .under(DepKey::Targets(id.clone()))
        .into_iter()
        .filter(|o| o.id.key.namespace == id.namespace)
        .filter_map(|o| match &o.body {
            Body::TrafficTarget(tt) => Some(authorization(lookup, &o.id.key, tt)),
            _ => None,
        })
        .collect();
    InboundView {
        default_policy,
        authorizations,
    }
}

fn authorization(lookup: &Lookup<'_>, name: &NsName, tt: &TrafficTarget) -> Authorization {
    let mut l4_rules = false;
    let mut tcp_route = false;
    let mut tcp_ports: Option<Vec<u16>> = Some(Vec::new()); // None = any port
    let mut http: Option<Vec<HttpMatch>> = None;
    for rule in &tt.rules {
        let key = NsName::new(name.namespace.clone(), &rule.name);
        let body = lookup.route(rule.kind, &key).map(|o| &o.body);
        match (rule.kind, body) {
            (RouteKind::HttpRouteGroup, body) => {
                let list = http.get_or_insert_with(Vec::new);
                if let Some(Body::HttpRouteGroup(group)) = body {
                    let wanted =
                        |m: &&HttpMatch| rule.matches.is_empty() || rule.matches.contains(&m.name);
                    list.extend(group.matches.iter().filter(wanted).map(|m| HttpMatch {
                        name: format!("{key}/{}", m.name),
                        ..m.clone()
                    }));
                }
            }
            (RouteKind::TcpRoute, body) => {
                l4_rules = true;
                tcp_route |= matches!(body, Some(Body::PortRoute(_)));
                if let (Some(Body::PortRoute(route)), Some(ports)) = (body, tcp_ports.as_mut()) {
                    if route.ports.is_empty() {
                        tcp_ports = None;
                    } else {
                        ports.extend(&route.ports);
                    }
                }
            }
            (RouteKind::UdpRoute, _) => l4_rules = true,
        }
    }
    let mut ports = match (l4_rules, tcp_ports) {
        (false, _) | (true, None) => PortRule::Any,
        (true, Some(mut ports)) => {
            ports.sort_unstable();
            ports.dedup();
            PortRule::Only(ports)
        }
    };
    if let Some(p) = tt.destination_port {
        ports = PortRule::Only(if ports.contains(p) { vec![p] } else { vec![] });
    }
    let sources = tt
        .sources
        .iter()
        .filter(|s| s.kind == "ServiceAccount")
        .map(|s| Identity::new(s.namespace.clone(), s.name.clone()))
        .collect();
    Authorization {
        name: name.to_string(),
        sources,
        ports,
        opaque: http.is_none() || tcp_route,
        http,
    }
}
