//! The scenario most end-to-end tests use: a `client` pod calling the `web` Service, which a
//! TrafficSplit spreads over `web-v1` and `web-v2` (one pod each, ServiceAccount `web`).

use std::net::{Ipv4Addr, SocketAddr};

use crate::apps::{self, BANNER_PORT, ECHO_PORT, WS_PORT};
use crate::mesh::{spawn_in_pod, Binaries, Mesh, PodSpec};

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 10);
pub const V1_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 11);
pub const V2_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 12);
/// The `web` Service's ClusterIP; nothing listens there, only the proxy knows it.
pub const WEB_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

pub fn web(port: u16) -> SocketAddr {
    SocketAddr::new(WEB_IP.into(), port)
}

/// What the mesh knows, with the split's weights and whether client may call web.
pub fn manifests(v1: u32, v2: u32, allow: bool) -> String {
    let mut text = String::from(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {smidge.io/inject: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: mesh}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: mesh}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: mesh}
spec: {serviceAccountName: client, containers: [{name: app, image: client}]}
status: {podIP: 10.88.0.10}
"#,
    );
    for (svc, ip, pods) in [
        ("web", "10.96.0.10", &["web-v1", "web-v2"][..]),
        ("web-v1", "10.96.0.11", &["web-v1"][..]),
        ("web-v2", "10.96.0.12", &["web-v2"][..]),
    ] {
        text.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata: {{name: {svc}, namespace: mesh}}
spec:
  clusterIP: {ip}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: ws, port: {WS_PORT}}}
  - {{name: echo, port: {ECHO_PORT}}}
  - {{name: mysql, port: {BANNER_PORT}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {svc}-1, namespace: mesh, labels: {{kubernetes.io/service-name: {svc}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}, {{name: ws, port: {WS_PORT}}}, {{name: echo, port: {ECHO_PORT}}}, {{name: mysql, port: {BANNER_PORT}}}]
endpoints:
"#
        ));
        for pod in pods {
            let addr = if *pod == "web-v1" { V1_IP } else { V2_IP };
            text.push_str(&format!(
                "- {{addresses: [{addr}], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: {pod}}}}}\n"
            ));
        }
    }
    for (pod, ip) in [("web-v1", V1_IP), ("web-v2", V2_IP)] {
        text.push_str(&format!(
            r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: mesh}}
spec: {{serviceAccountName: web, containers: [{{name: app, image: web}}]}}
status: {{podIP: {ip}}}
"#
        ));
    }
    text.push_str(&format!(
        r#"---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: web-split, namespace: mesh}}
spec:
  service: web
  backends:
  - {{service: web-v1, weight: {v1}}}
  - {{service: web-v2, weight: {v2}}}
"#
    ));
    if allow {
        text.push_str(
            r#"---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: any-port, namespace: mesh}
spec: {matches: {}}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: client-to-web, namespace: mesh}
spec:
  destination: {kind: ServiceAccount, name: web, namespace: mesh}
  sources: [{kind: ServiceAccount, name: client, namespace: mesh}]
  rules: [{kind: TCPRoute, name: any-port}]
"#,
        );
    }
    text
}

pub fn start(tag: &str, manifests: &str, proxy_args: &[&str]) -> anyhow::Result<Mesh> {
    start_with(tag, manifests, &[], proxy_args, &[])
}

/// [`start`] with extra pods (name, address, ServiceAccount), a different ServiceAccount for a
/// pod's proxy (`overrides`, to make an impostor), and controller arguments.
pub fn start_with(
    tag: &str,
    manifests: &str,
    extra: &[(&str, Ipv4Addr, &str)],
    proxy_args: &[&str],
    controller_args: &[&str],
) -> anyhow::Result<Mesh> {
    let pods = [
        PodSpec {
            name: "client",
            ip: CLIENT_IP,
            service_account: "client",
        },
        PodSpec {
            name: "web-v1",
            ip: V1_IP,
            service_account: "web",
        },
        PodSpec {
            name: "web-v2",
            ip: V2_IP,
            service_account: "web",
        },
    ];
    let mut pods = pods.to_vec();
    for (name, ip, sa) in extra {
        match pods.iter_mut().find(|p| p.name == *name) {
            Some(p) => p.service_account = sa,
            None => pods.push(PodSpec {
                name,
                ip: *ip,
                service_account: sa,
            }),
        }
    }
    let mesh = Mesh::start_with(
        &binaries()?,
        tag,
        manifests,
        "mesh",
        &pods,
        proxy_args,
        controller_args,
    )?;
    spawn_in_pod(&mesh.pod("web-v1").pod, || apps::backend("v1"))?;
    spawn_in_pod(&mesh.pod("web-v2").pod, || apps::backend("v2"))?;
    Ok(mesh)
}

/// The controller and proxy binaries of this build profile, built if needed.
pub fn binaries() -> anyhow::Result<Binaries> {
    Ok(Binaries {
        controller: crate::binary("smidge-controller", "smidge-controller")?,
        proxy: crate::binary("smidge-proxy", "smidge-proxy")?,
    })
}
