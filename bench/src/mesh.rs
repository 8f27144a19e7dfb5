//! A generated mesh for the file provider: one namespace, `services` Services with ClusterIPs,
//! `endpoints_per_service` pods behind each (Pods and an EndpointSlice), and one TrafficSplit
//! whose apex every simulated proxy uses. Pure.

use std::net::{Ipv4Addr, SocketAddr};

/// The shape of the mesh.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub services: u32,
    pub endpoints_per_service: u32,
}

/// The namespace everything is in.
pub const NAMESPACE: &str = "bench";
/// The port of every Service.
pub const PORT: u16 = 80;

/// Service `i`'s ClusterIP: 10.96.0.0/12 counted up.
pub fn cluster_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i)
}

/// Service `i`'s address, as proxies subscribe to it.
pub fn service_addr(i: u32) -> SocketAddr {
    SocketAddr::from((cluster_ip(i), PORT))
}

/// Pod `j` of service `i`: 10.128.0.0/9 counted up.
pub fn pod_ip(shape: Shape, i: u32, j: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 1)) + i * shape.endpoints_per_service + j)
}

/// Services, Pods and EndpointSlices, as multi-document YAML.
pub fn workloads(shape: Shape) -> String {
    let mut out = String::with_capacity(
        shape.services as usize * (700 + 400 * shape.endpoints_per_service as usize),
    );
    out.push_str(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}, labels: {{smidge.io/inject: enabled}}}}\n"
    ));
    for i in 0..shape.services {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: {NAMESPACE}}}\nspec: {{clusterIP: {}, ports: [{{name: http, port: {PORT}, targetPort: 8080}}]}}\n",
            cluster_ip(i)
        ));
        out.push_str(&endpoint_slice(shape, i, shape.endpoints_per_service));
        for j in 0..shape.endpoints_per_service {
            out.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: svc-{i}-{j}, namespace: {NAMESPACE}, labels: {{app: svc-{i}}}}}\nspec: {{serviceAccountName: sa-{i}, containers: [{{name: app, image: app}}]}}\nstatus: {{podIP: {}}}\n",
                pod_ip(shape, i, j)
            ));
        }
    }
    out
}

/// Service `i`'s EndpointSlice with its first `n` pods, all ready.
pub fn endpoint_slice(shape: Shape, i: u32, n: u32) -> String {
    let mut out = format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{i}-1, namespace: {NAMESPACE}, labels: {{kubernetes.io/service-name: svc-{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
    );
    for j in 0..n {
        out.push_str(&format!(
            "- {{addresses: [{}], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: svc-{i}-{j}}}}}\n",
            pod_ip(shape, i, j)
        ));
    }
    out
}

/// A TrafficSplit of service 0 over services 1 and 2.
pub fn split(weight_1: u32, weight_2: u32) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: apex, namespace: {NAMESPACE}}}\nspec:\n  service: svc-0\n  backends: [{{service: svc-1, weight: {weight_1}}}, {{service: svc-2, weight: {weight_2}}}]\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_do_not_overlap_and_the_yaml_has_every_object() {
        let shape = Shape {
            services: 3,
            endpoints_per_service: 2,
        };
        assert_eq!(cluster_ip(0), Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(pod_ip(shape, 1, 1), Ipv4Addr::new(10, 128, 0, 4));
        let y = workloads(shape);
        assert_eq!(y.matches("kind: Service\n").count(), 3);
        assert_eq!(y.matches("kind: Pod\n").count(), 6);
        assert_eq!(y.matches("kind: EndpointSlice\n").count(), 3);
    }
}
