//! kube-proxy's part in the local cluster: a Service's ClusterIP:port reaches its ready endpoints
//! for clients without a proxy (meshed clients never get here: their proxy routes by itself).

use std::collections::BTreeMap;
use std::net::IpAddr;

use smidge_controller::manifest::{read_file, Outcome};
use smidge_controller::model::{Body, EndpointSet, Service};

/// The chain holding one DNAT rule set per Service port.
pub const SERVICES_CHAIN: &str = "SMIDGE-SERVICES";
/// The chain that masquerades the DNATed traffic whose replies would not come back through the
/// node otherwise (see [`rules`]).
pub const POSTROUTING_CHAIN: &str = "SMIDGE-POSTROUTING";
/// The pods' network in both control planes (one bridge in the node namespace).
pub const POD_NETWORK: &str = "10.88.0.0/16";

/// One Service port and the ready endpoints behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub cluster_ip: IpAddr,
    pub port: u16,
    pub endpoints: Vec<(IpAddr, u16)>,
}

/// Every TCP Service port with a ClusterIP in `manifests`, and its ready endpoints. Pure.
pub fn frontends(manifests: &str) -> Vec<Frontend> {
    let mut services: BTreeMap<(String, String), Service> = BTreeMap::new();
    let mut sets: BTreeMap<(String, String), Vec<EndpointSet>> = BTreeMap::new();
    for (_, outcome) in read_file(manifests) {
        let Outcome::Object { object, .. } = outcome else {
            continue;
        };
        let ns = object.id.key.namespace.clone();
        match object.body {
            Body::Service(svc) => {
                services.insert((ns, object.id.key.name.clone()), svc);
            }
            Body::Endpoints(set) => sets.entry((ns, set.service.clone())).or_default().push(set),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (key, svc) in &services {
        for port in svc
            .ports
            .iter()
            .filter(|p| p.protocol.eq_ignore_ascii_case("tcp"))
        {
            let mut endpoints: Vec<(IpAddr, u16)> = sets
                .get(key)
                .into_iter()
                .flatten()
                .flat_map(|set| {
                    let target = set
                        .ports
                        .iter()
                        .find(|(name, _)| *name == port.name)
                        .map(|(_, p)| *p);
                    set.endpoints
                        .iter()
                        .filter(|e| e.ready)
                        .filter_map(move |e| target.map(|t| (e.ip, t)))
                })
                .collect();
            endpoints.sort();
            endpoints.dedup();
            for ip in &svc.cluster_ips {
                out.push(Frontend {
                    cluster_ip: *ip,
                    port: port.port,
                    endpoints: endpoints.clone(),
                });
            }
        }
    }
    out
}

/// An `/etc/hosts` for a pod in namespace `pod_namespace`: every Service with a ClusterIP in
/// `manifests`, as [`hosts_file`] writes them. Pure.
pub fn hosts(manifests: &str, pod_namespace: &str) -> String {
    let mut services = Vec::new();
    for (_, outcome) in read_file(manifests) {
        let Outcome::Object { object, .. } = outcome else {
            continue;
        };
        let Body::Service(svc) = object.body else {
            continue;
        };
        services.push((object.id.key.namespace, object.id.key.name, svc.cluster_ips));
    }
    hosts_file(&services, pod_namespace)
}

/// An `/etc/hosts` for a pod in namespace `pod_namespace` from `(namespace, name, ClusterIPs)`
/// of Services, in the order given: each ClusterIP as `<svc>.<ns>.svc.cluster.local`,
/// `<svc>.<ns>.svc` and `<svc>.<ns>`, plus the bare `<svc>` for its own namespace; the full name
/// also with a trailing dot, which the hosts file does not strip. The one formatter of both
/// control planes. Pure.
pub fn hosts_file(services: &[(String, String, Vec<IpAddr>)], pod_namespace: &str) -> String {
    let mut out = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for (ns, name, ips) in services {
        for ip in ips {
            out.push_str(&format!(
                "{ip} {name}.{ns}.svc.cluster.local {name}.{ns}.svc.cluster.local. {name}.{ns}.svc {name}.{ns}"
            ));
            if ns == pod_namespace {
                out.push_str(&format!(" {name}"));
            }
            out.push('\n');
        }
    }
    out
}

/// The chain rejecting connections to a Service port that has no ready endpoint (filter table).
pub const REJECT_CHAIN: &str = "SMIDGE-SVC-REJECT";

/// The node's rules for `frontends`, for `iptables-restore --noflush` (IPv4 only): nat DNAT
/// rules and a filter table rejecting ports without endpoints. Each endpoint of an n-endpoint
/// port is picked with probability 1/n, as kube-proxy does. A port without endpoints is
/// rejected at once (ICMP port unreachable, as kube-proxy does) instead of being sent on to an
/// address nobody holds.
///
/// With `bridge_netfilter` (the kernel's br_netfilter, see [`crate::netns::bridge_netfilter`]),
/// pod-to-pod traffic keeps its source address, as kube-proxy keeps it: a meshed proxy is known
/// by its pod IP (the controller binds its token to that address), and replies bridged from pod
/// to pod still pass the node's conntrack to be un-DNATed. Masqueraded are only a pod reaching
/// itself through its own Service (its kernel would drop a packet from its own address) and
/// sources outside the pod network (the node's other addresses), whose replies would not come
/// back through the node. Without it every DNATed connection is masqueraded, or bridged replies
/// would bypass the un-DNAT. Declaring a chain (`:CHAIN - [0:0]`) empties it under `--noflush`, so
/// applying again replaces every rule of our chains and leaves other chains alone.
pub fn rules(frontends: &[Frontend], bridge_netfilter: bool) -> String {
    let v4 = || frontends.iter().filter(|f| f.cluster_ip.is_ipv4());
    let mut out = format!("*nat\n:{SERVICES_CHAIN} - [0:0]\n:{POSTROUTING_CHAIN} - [0:0]\n");
    for f in v4() {
        let n = f.endpoints.len();
        for (i, (ip, port)) in f.endpoints.iter().enumerate() {
            let left = n - i;
            let pick = if left > 1 {
                format!(
                    " -m statistic --mode random --probability {:.5}",
                    1.0 / left as f64
                )
            } else {
                String::new()
            };
            out.push_str(&format!(
                "-A {SERVICES_CHAIN} -d {}/32 -p tcp --dport {}{pick} -j DNAT --to-destination {ip}:{port}\n",
                f.cluster_ip, f.port
            ));
        }
    }
    if !bridge_netfilter {
        out.push_str(&format!(
            "-A {POSTROUTING_CHAIN} -m conntrack --ctstate DNAT -j MASQUERADE\n"
        ));
    }
    let mut hairpins: Vec<IpAddr> = v4()
        .flat_map(|f| f.endpoints.iter().map(|(ip, _)| *ip))
        .collect();
    hairpins.sort();
    hairpins.dedup();
    for ip in hairpins {
        out.push_str(&format!(
            "-A {POSTROUTING_CHAIN} -s {ip}/32 -d {ip}/32 -m conntrack --ctstate DNAT -j MASQUERADE\n"
        ));
    }
    out.push_str(&format!(
        "-A {POSTROUTING_CHAIN} ! -s {POD_NETWORK} -m conntrack --ctstate DNAT -j MASQUERADE\nCOMMIT\n"
    ));
    out.push_str(&format!("*filter\n:{REJECT_CHAIN} - [0:0]\n"));
    for f in v4().filter(|f| f.endpoints.is_empty()) {
        out.push_str(&format!(
            "-A {REJECT_CHAIN} -d {}/32 -p tcp --dport {} -j REJECT --reject-with icmp-port-unreachable\n",
            f.cluster_ip, f.port
        ));
    }
    out.push_str("COMMIT\n");
    out
}

/// Where [`rules`]' chains are entered from: (table, built-in chain, our chain, match). The nat
/// OUTPUT hook serves the node's own processes (the API server, the node agent); PREROUTING the
/// pods'.
pub const HOOKS: &[(&str, &str, &str, &[&str])] = &[
    ("nat", "PREROUTING", SERVICES_CHAIN, &[]),
    ("nat", "OUTPUT", SERVICES_CHAIN, &[]),
    ("nat", "POSTROUTING", POSTROUTING_CHAIN, &[]),
    ("filter", "FORWARD", REJECT_CHAIN, NEW_ONLY),
    ("filter", "OUTPUT", REJECT_CHAIN, NEW_ONLY),
];

/// Matches a connection's first packet.
const NEW_ONLY: &[&str] = &["-m", "conntrack", "--ctstate", "NEW"];

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.88.0.11], conditions: {ready: true}}
- {addresses: [10.88.0.12], conditions: {ready: true}}
- {addresses: [10.88.0.13], conditions: {ready: false}}
"#;

    #[test]
    fn services_have_names_and_the_short_one_only_in_their_namespace() {
        let same = hosts(MANIFESTS, "shop");
        assert!(same.contains("10.96.0.10 web.shop.svc.cluster.local web.shop.svc.cluster.local. web.shop.svc web.shop web\n"), "{same}");
        let other = hosts(MANIFESTS, "elsewhere");
        assert!(other.contains("10.96.0.10 web.shop.svc.cluster.local web.shop.svc.cluster.local. web.shop.svc web.shop\n"), "{other}");
    }

    #[test]
    fn a_service_port_spreads_evenly_over_its_ready_endpoints() {
        let f = frontends(MANIFESTS);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].endpoints,
            vec![
                ("10.88.0.11".parse().expect("ip"), 8080),
                ("10.88.0.12".parse().expect("ip"), 8080)
            ]
        );
        let text = rules(&f, true);
        assert!(text.contains("--dport 80 -m statistic --mode random --probability 0.50000 -j DNAT --to-destination 10.88.0.11:8080"), "{text}");
        assert!(
            text.contains("--dport 80 -j DNAT --to-destination 10.88.0.12:8080"),
            "{text}"
        );
    }

    #[test]
    fn only_hairpin_and_off_network_sources_are_masqueraded() {
        let text = rules(&frontends(MANIFESTS), true);
        let masq: Vec<&str> = text.lines().filter(|l| l.contains("MASQUERADE")).collect();
        assert_eq!(
            masq,
            vec![
                "-A SMIDGE-POSTROUTING -s 10.88.0.11/32 -d 10.88.0.11/32 -m conntrack --ctstate DNAT -j MASQUERADE",
                "-A SMIDGE-POSTROUTING -s 10.88.0.12/32 -d 10.88.0.12/32 -m conntrack --ctstate DNAT -j MASQUERADE",
                "-A SMIDGE-POSTROUTING ! -s 10.88.0.0/16 -m conntrack --ctstate DNAT -j MASQUERADE",
            ],
            "{text}"
        );
        let all = rules(&frontends(MANIFESTS), false);
        assert!(
            all.contains("-A SMIDGE-POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE\n"),
            "without br_netfilter everything is masqueraded: {all}"
        );
    }
}
