//! kube-proxy's part of the node agent, from the API's Services and EndpointSlices: the
//! ClusterIP frontends the node's DNAT rules are written from ([`crate::mesh::apply_frontends`],
//! shared with the embedded cluster) and the pods' `/etc/hosts`. Pure.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::services::Frontend;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The ClusterIPs of a Service that has them: none for headless (`None`) and ExternalName
/// Services. `clusterIPs` wins over `clusterIP` (they agree on the first).
fn cluster_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let listed: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    listed
        .into_iter()
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

fn namespace(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// Whether `protocol` (nil defaults to TCP) is TCP.
fn tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p.eq_ignore_ascii_case("tcp"))
}

/// Port name → the ready endpoints of one Service, from all its slices.
type ByPortName<'a> = BTreeMap<&'a str, Vec<(IpAddr, u16)>>;

/// Every TCP port of every ClusterIP Service, with its ready IPv4 endpoints from the
/// EndpointSlices labelled with the Service's name in its namespace. A slice port serves the
/// Service port of the same name ("" for an unnamed one); an endpoint counts when its
/// `conditions.ready` is true or unset (the API's rule). Endpoints deduplicated and sorted;
/// frontends sorted. Pure.
pub fn frontends(services: &[Service], slices: &[EndpointSlice]) -> Vec<Frontend> {
    let mut ready: BTreeMap<(&str, &str), ByPortName> = BTreeMap::new();
    for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let by_port = ready
            .entry((namespace(&slice.metadata), service.as_str()))
            .or_default();
        let addresses: Vec<Ipv4Addr> = slice
            .endpoints
            .iter()
            .flatten()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|e| e.addresses.iter().filter_map(|a| a.parse().ok()))
            .collect();
        for port in slice.ports.iter().flatten() {
            if !tcp(port.protocol.as_deref()) {
                continue;
            }
            let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            let name = port.name.as_deref().unwrap_or("");
            by_port
                .entry(name)
                .or_default()
                .extend(addresses.iter().map(|ip| (IpAddr::V4(*ip), number)));
        }
    }
    let mut out = Vec::new();
    for svc in services {
        let ips = cluster_ips(svc);
        let (Some(spec), Some(name)) = (&svc.spec, &svc.metadata.name) else {
            continue;
        };
        let by_port = ready.get(&(namespace(&svc.metadata), name.as_str()));
        for port in spec.ports.iter().flatten() {
            if !tcp(port.protocol.as_deref()) {
                continue;
            }
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let mut endpoints = by_port
                .and_then(|p| p.get(port.name.as_deref().unwrap_or("")))
                .cloned()
                .unwrap_or_default();
            endpoints.sort();
            endpoints.dedup();
            for ip in &ips {
                out.push(Frontend {
                    cluster_ip: *ip,
                    port: number,
                    endpoints: endpoints.clone(),
                });
            }
        }
    }
    out.sort_by_key(|f| (f.cluster_ip, f.port));
    out.dedup();
    out
}

/// An `/etc/hosts` for a pod in namespace `pod_namespace`: every Service with a ClusterIP,
/// sorted by namespace and name, in [`crate::services::hosts_file`]'s format. Pure.
pub fn hosts(services: &[Service], pod_namespace: &str) -> String {
    let mut named: Vec<(String, String, Vec<IpAddr>)> = services
        .iter()
        .filter_map(|svc| {
            let name = svc.metadata.name.clone()?;
            let ips = cluster_ips(svc);
            (!ips.is_empty()).then(|| (namespace(&svc.metadata).to_string(), name, ips))
        })
        .collect();
    named.sort();
    crate::services::hosts_file(&named, pod_namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services(yaml: &str) -> Vec<Service> {
        serde_yaml_ng::Deserializer::from_str(yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect()
    }

    fn slices(yaml: &str) -> Vec<EndpointSlice> {
        serde_yaml_ng::Deserializer::from_str(yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect()
    }

    fn ep(ip: &str, port: u16) -> (IpAddr, u16) {
        (ip.parse().unwrap(), port)
    }

    const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: admin, port: 9000, protocol: TCP}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: 10.96.0.11, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: shop}
spec: {clusterIP: None, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: outside, namespace: shop}
spec: {type: ExternalName, externalName: example.com, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec: {clusterIP: 10.96.0.1, ports: [{name: https, port: 443, targetPort: 6443}]}
"#;

    const SLICES: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-a, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: admin, port: 9090, protocol: TCP}]
endpoints:
- {addresses: [10.88.0.12], conditions: {ready: true}}
- {addresses: [10.88.0.13], conditions: {ready: false}}
- {addresses: [10.88.0.14]}
- {addresses: [10.88.0.15], conditions: {}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-b, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.88.0.11], conditions: {ready: true}}
- {addresses: [10.88.0.12], conditions: {ready: true}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-x, namespace: elsewhere, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.88.0.99], conditions: {ready: true}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v6, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: ["fd00::1"], conditions: {ready: true}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: "", port: 5433}]
endpoints:
- {addresses: [10.88.0.21], conditions: {ready: true}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: headless-1, namespace: shop, labels: {kubernetes.io/service-name: headless}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.88.0.31], conditions: {ready: true}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kubernetes, namespace: default, labels: {kubernetes.io/service-name: kubernetes}}
addressType: IPv4
ports: [{name: https, port: 6443, protocol: TCP}]
endpoints:
- {addresses: [10.88.0.1]}
"#;

    fn frontend(all: &[Frontend], ip: &str, port: u16) -> Vec<(IpAddr, u16)> {
        let ip: IpAddr = ip.parse().unwrap();
        let found: Vec<&Frontend> = all
            .iter()
            .filter(|f| f.cluster_ip == ip && f.port == port)
            .collect();
        assert_eq!(found.len(), 1, "{ip}:{port} in {all:?}");
        found[0].endpoints.clone()
    }

    #[test]
    fn named_ports_take_the_ready_endpoints_of_every_slice_of_their_service() {
        let all = frontends(&services(SERVICES), &slices(SLICES));
        // Ready true, unset conditions and unset ready count; ready false does not; the
        // address in both slices once; the other namespace's and the IPv6 slice are not theirs.
        assert_eq!(
            frontend(&all, "10.96.0.10", 80),
            vec![
                ep("10.88.0.11", 8080),
                ep("10.88.0.12", 8080),
                ep("10.88.0.14", 8080),
                ep("10.88.0.15", 8080),
            ]
        );
        // Matched by name, not by position: only one slice has the admin port.
        assert_eq!(
            frontend(&all, "10.96.0.10", 9000),
            vec![
                ep("10.88.0.12", 9090),
                ep("10.88.0.14", 9090),
                ep("10.88.0.15", 9090),
            ]
        );
    }

    #[test]
    fn an_unnamed_port_matches_the_unnamed_slice_port() {
        let all = frontends(&services(SERVICES), &slices(SLICES));
        assert_eq!(
            frontend(&all, "10.96.0.11", 5432),
            vec![ep("10.88.0.21", 5433)]
        );
    }

    #[test]
    fn the_api_servers_own_service_works_like_any_other() {
        let all = frontends(&services(SERVICES), &slices(SLICES));
        assert_eq!(
            frontend(&all, "10.96.0.1", 443),
            vec![ep("10.88.0.1", 6443)]
        );
    }

    #[test]
    fn headless_external_name_and_udp_get_no_frontend() {
        let all = frontends(&services(SERVICES), &slices(SLICES));
        let mut keys: Vec<(String, u16)> = all
            .iter()
            .map(|f| (f.cluster_ip.to_string(), f.port))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                ("10.96.0.1".to_string(), 443),
                ("10.96.0.10".to_string(), 80),
                ("10.96.0.10".to_string(), 9000),
                ("10.96.0.11".to_string(), 5432),
            ]
        );
    }

    #[test]
    fn a_port_without_ready_endpoints_is_kept_empty_and_rejected() {
        let only_unready = slices(
            r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{port: 5433}]
endpoints:
- {addresses: [10.88.0.21], conditions: {ready: false}}
"#,
        );
        let all = frontends(&services(SERVICES), &only_unready);
        assert!(frontend(&all, "10.96.0.11", 5432).is_empty());
        let text = crate::services::rules(&all, true);
        assert!(
            text.contains("-A SMIDGE-SVC-REJECT -d 10.96.0.11/32 -p tcp --dport 5432 -j REJECT"),
            "{text}"
        );
        assert!(!text.contains("--to-destination 10.88.0.21"), "{text}");
    }

    #[test]
    fn hosts_name_every_service_with_a_cluster_ip_sorted() {
        let text = hosts(&services(SERVICES), "shop");
        assert_eq!(
            text,
            "127.0.0.1 localhost\n::1 localhost\n\
             10.96.0.1 kubernetes.default.svc.cluster.local kubernetes.default.svc.cluster.local. kubernetes.default.svc kubernetes.default\n\
             10.96.0.11 db.shop.svc.cluster.local db.shop.svc.cluster.local. db.shop.svc db.shop db\n\
             10.96.0.10 web.shop.svc.cluster.local web.shop.svc.cluster.local. web.shop.svc web.shop web\n"
        );
        let other = hosts(&services(SERVICES), "default");
        assert!(other.contains("kubernetes.default kubernetes\n"), "{other}");
        assert!(other.contains("web.shop.svc web.shop\n"), "{other}");
    }
}
