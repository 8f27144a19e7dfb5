//! The outbound view: how a client reaches one Service port (TrafficSplit semantics, REFERENCE §4).

use std::net::SocketAddr;

use smidge_protocol::{
    Backend, Endpoint, HttpMatch, Identity, OutboundView, Route, ServiceRef, WeightedTarget,
};

use crate::index::{DepKey, Lookup};
use crate::model::{Body, Kind, NsName, RouteKind, TrafficSplit};

/// Compiles the view of the Service that owns `addr` (ClusterIP:port), or else of the meshed pod
/// at that address; `None` when neither does.
pub fn outbound(lookup: &Lookup<'_>, addr: SocketAddr) -> Option<OutboundView> {
    let Some(owner) = lookup
        .under(DepKey::ServiceIp(addr.ip()))
        .into_iter()
        .find(|o| o.id.kind == Kind::Service)
    else {
        return pod_outbound(lookup, addr);
    };
    let root = owner.id.key.clone();
    let root_svc = lookup.service(&root)?;
    let port = root_svc.ports.iter().find(|p| p.port == addr.port())?;
    let service = ServiceRef {
        namespace: root.namespace.clone(),
        name: root.name.clone(),
        port: port.port,
    };

    let mut backends: Vec<Backend> = Vec::new();
    let root_route = |backends: &mut Vec<Backend>| Route {
        name: String::new(),
        matches: vec![],
        targets: backend_index(lookup, &root, port.port, backends)
            .map(|backend| vec![WeightedTarget { backend, weight: 1 }])
            .unwrap_or_default(),
    };

    let routes = match active_split(lookup, &root) {
        None => vec![root_route(&mut backends)],
        Some((name, split)) => {
            let targets = split_targets(lookup, &root, port.port, split, &mut backends);
            if split.matches.is_empty() {
                vec![Route {
                    name,
                    matches: vec![],
                    targets,
                }]
            } else {
                let matches = split_matches(lookup, &root.namespace, split);
                let mut routes = Vec::with_capacity(2);
                // Matches that resolve to nothing must not turn into a catch-all.
                if !matches.is_empty() {
                    routes.push(Route {
                        name,
                        matches,
                        targets,
                    });
                }
                routes.push(root_route(&mut backends));
                routes
            }
        }
    };
    Some(OutboundView {
        service,
        routes,
        backends,
    })
}

/// The view of a meshed pod called by its own address (headless Services, StatefulSet peers,
/// clients that resolve endpoints themselves): one route to one backend with one endpoint, the
/// pod with its identity, so the caller's proxy uses mTLS as it does for a Service. Any port:
/// the pod's proxy authorizes it. `None` unless exactly one identity of a meshed pod holds the
/// address (the same rule as the peer view).
fn pod_outbound(lookup: &Lookup<'_>, addr: SocketAddr) -> Option<OutboundView> {
    let identity = super::peer(lookup, addr.ip()).identity?;
    let pod = lookup
        .under(DepKey::PodIp(addr.ip()))
        .into_iter()
        .filter(|o| o.id.kind == Kind::Pod && o.id.key.namespace == identity.namespace)
        .map(|o| o.id.key.name.clone())
        .min()?;
    Some(OutboundView {
        service: ServiceRef {
            namespace: identity.namespace.clone(),
            name: pod.clone(),
            port: addr.port(),
        },
        routes: vec![Route {
            name: String::new(),
            matches: vec![],
            targets: vec![WeightedTarget {
                backend: 0,
                weight: 1,
            }],
        }],
        backends: vec![Backend {
            name: pod,
            endpoints: vec![Endpoint {
                addr,
                identity: Some(identity),
            }],
        }],
    })
}

/// The TrafficSplit in effect for a root Service: the first by name when several claim it.
pub fn active_split<'a>(lookup: &Lookup<'a>, root: &NsName) -> Option<(String, &'a TrafficSplit)> {
    lookup
        .under(DepKey::Split(root.clone()))
        .into_iter()
        .find_map(|o| match &o.body {
            Body::TrafficSplit(s) => Some((o.id.key.to_string(), s)),
            _ => None,
        })
}

fn split_targets(
    lookup: &Lookup<'_>,
    root: &NsName,
    port: u16,
    split: &TrafficSplit,
    backends: &mut Vec<Backend>,
) -> Vec<WeightedTarget> {
    let max = split.backends.iter().map(|b| b.weight).max().unwrap_or(0);
    // Weights are relative: scale down only when they would not fit the wire's u32.
    let divisor = (max / u64::from(u32::MAX)) + 1;
    split
        .backends
        .iter()
        .filter(|b| b.weight > 0)
        .filter_map(|b| {
            let weight = u32::try_from(b.weight / divisor).ok().filter(|w| *w > 0)?;
            let backend = backend_index(
                lookup,
                &NsName::new(root.namespace.clone(), &b.service),
                port,
                backends,
            )?;
            Some(WeightedTarget { backend, weight })
        })
        .collect()
}

/// All matches of the HTTPRouteGroups a split names, merged into one list.
fn split_matches(lookup: &Lookup<'_>, namespace: &str, split: &TrafficSplit) -> Vec<HttpMatch> {
    let mut out = Vec::new();
    for group in &split.matches {
        let key = NsName::new(namespace, group);
        if let Some(Body::HttpRouteGroup(g)) = lookup
            .route(RouteKind::HttpRouteGroup, &key)
            .map(|o| &o.body)
        {
            out.extend(g.matches.iter().map(|m| HttpMatch {
                name: format!("{key}/{}", m.name),
                ..m.clone()
            }));
        }
    }
    out
}

/// The index of `service`'s backend in `backends`, adding it; `None` when the Service does not exist
/// or has no port with the root's port number (such a backend gets no traffic).
fn backend_index(
    lookup: &Lookup<'_>,
    service: &NsName,
    port: u16,
    backends: &mut Vec<Backend>,
) -> Option<u16> {
    if let Some(i) = backends.iter().position(|b| b.name == service.name) {
        return u16::try_from(i).ok();
    }
    let svc = lookup.service(service)?;
    let svc_port = svc.ports.iter().find(|p| p.port == port)?;
    let endpoints = endpoints(lookup, service, &svc_port.name);
    backends.push(Backend {
        name: service.name.clone(),
        endpoints,
    });
    u16::try_from(backends.len() - 1).ok()
}

/// The ready endpoints of a Service port, sorted by address, with the identity of meshed pods.
fn endpoints(lookup: &Lookup<'_>, service: &NsName, port_name: &str) -> Vec<Endpoint> {
    let sets = lookup.under(DepKey::Endpoints(service.clone()));
    // Like kube-proxy: EndpointSlices when there are any, else the legacy Endpoints object.
    let use_slices = sets.iter().any(|o| o.id.kind == Kind::EndpointSlice);
    let ns_meshed = lookup
        .namespace(&service.namespace)
        .is_some_and(|n| n.meshed);
    let mut out: Vec<Endpoint> = Vec::new();
    for obj in sets {
        let Body::Endpoints(set) = &obj.body else {
            continue;
        };
        if (obj.id.kind == Kind::EndpointSlice) != use_slices {
            continue;
        }
        let Some(port) = set
            .ports
            .iter()
            .find(|(name, _)| name == port_name)
            .map(|(_, p)| *p)
        else {
            continue;
        };
        for ep in set.endpoints.iter().filter(|e| e.ready) {
            let identity = ep.pod.as_ref().and_then(|pod_name| {
                let pod = lookup.pod(&NsName::new(service.namespace.clone(), pod_name))?;
                pod.inject
                    .unwrap_or(ns_meshed)
                    .then(|| Identity::new(service.namespace.clone(), pod.service_account.clone()))
            });
            out.push(Endpoint {
                addr: SocketAddr::new(ep.ip, port),
                identity,
            });
        }
    }
    out.sort_by_key(|e| e.addr);
    out.dedup_by_key(|e| e.addr);
    out
}
