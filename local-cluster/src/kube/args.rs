//! The command lines of etcd, kube-apiserver, kube-controller-manager and kube-scheduler for
//! one local control plane. Pure: paths and ports in, argument lists out.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::pki::Files;

/// The control plane's ports, all on loopback except the API server's (on `address`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
    pub controller_manager: u16,
    pub scheduler: u16,
}

/// Everything the command lines refer to.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The state directory: etcd's data, the PKI, kubeconfigs and the components' own dirs.
    pub state: PathBuf,
    /// The address the API server listens on and advertises (for the `kubernetes` Service).
    pub address: Ipv4Addr,
    /// The Service CIDR: ClusterIPs are allocated from it, and its first address is the
    /// `kubernetes` Service's.
    pub service_cidr: String,
    pub ports: Ports,
}

/// File stems of the certificates in the PKI directory.
pub mod certs {
    pub const ETCD: &str = "etcd";
    pub const APISERVER: &str = "apiserver";
    pub const APISERVER_ETCD_CLIENT: &str = "apiserver-etcd-client";
    pub const ADMIN: &str = "admin";
    pub const CONTROLLER_MANAGER: &str = "controller-manager";
    pub const SCHEDULER: &str = "scheduler";
    /// The API server's client certificate towards kubelets (logs).
    pub const APISERVER_KUBELET_CLIENT: &str = "apiserver-kubelet-client";
    /// The node agent's client certificate: `system:node:<node>` in `system:nodes`.
    pub const NODE: &str = "node";
    /// The node agent's serving certificate (its log endpoint), for the node's address.
    pub const NODE_SERVING: &str = "node-serving";
    /// kube-proxy's client certificate: `system:kube-proxy` (bound to `system:node-proxier`).
    pub const KUBE_PROXY: &str = "kube-proxy";
}

/// The one node of the local cluster.
pub const NODE_NAME: &str = "smidge-node";

/// Where the service-account tokens say they come from (and the API audience).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The etcd member's name.
const ETCD_NAME: &str = "smidge";

impl Layout {
    pub fn pki(&self) -> Files {
        Files {
            dir: self.state.join("pki"),
        }
    }
    /// etcd's data: its component directory.
    pub fn etcd_data(&self) -> PathBuf {
        self.component_dir("etcd")
    }
    /// The admin's kubeconfig (user `admin` in `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.state.join("kubeconfig")
    }
    pub fn controller_manager_kubeconfig(&self) -> PathBuf {
        self.state.join("controller-manager.kubeconfig")
    }
    pub fn scheduler_kubeconfig(&self) -> PathBuf {
        self.state.join("scheduler.kubeconfig")
    }
    /// The node agent's kubeconfig (its node identity).
    pub fn node_kubeconfig(&self) -> PathBuf {
        self.state.join("node.kubeconfig")
    }
    /// kube-proxy's kubeconfig (the node agent's second identity).
    pub fn kube_proxy_kubeconfig(&self) -> PathBuf {
        self.state.join("kube-proxy.kubeconfig")
    }
    /// Where a component writes its own files (self-signed serving certificates).
    pub fn component_dir(&self, name: &str) -> PathBuf {
        self.state.join(name)
    }
    pub fn apiserver_url(&self) -> String {
        format!("https://{}:{}", self.address, self.ports.apiserver)
    }
    fn etcd_client_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.etcd_client)
    }
    fn etcd_peer_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.etcd_peer)
    }
}

fn flag(name: &str, value: impl AsRef<str>) -> String {
    format!("--{name}={}", value.as_ref())
}

fn path(p: impl AsRef<Path>) -> String {
    p.as_ref().display().to_string()
}

/// etcd: one member on loopback, TLS with client certificates on both client and peer ports.
pub fn etcd(l: &Layout) -> Vec<String> {
    let pki = l.pki();
    let (cert, key, ca) = (
        path(pki.cert(certs::ETCD)),
        path(pki.key(certs::ETCD)),
        path(pki.cert(Files::CA)),
    );
    vec![
        flag("name", ETCD_NAME),
        flag("data-dir", path(l.etcd_data())),
        flag("listen-client-urls", l.etcd_client_url()),
        flag("advertise-client-urls", l.etcd_client_url()),
        flag("listen-peer-urls", l.etcd_peer_url()),
        flag("initial-advertise-peer-urls", l.etcd_peer_url()),
        flag(
            "initial-cluster",
            format!("{ETCD_NAME}={}", l.etcd_peer_url()),
        ),
        flag("cert-file", &cert),
        flag("key-file", &key),
        flag("trusted-ca-file", &ca),
        "--client-cert-auth".into(),
        flag("peer-cert-file", &cert),
        flag("peer-key-file", &key),
        flag("peer-trusted-ca-file", &ca),
        "--peer-client-cert-auth".into(),
        flag("auto-compaction-retention", "1"),
        flag("log-level", "warn"),
    ]
}

/// kube-apiserver: client-certificate and service-account authentication, Node and RBAC
/// authorization, the default admission plugins plus NodeRestriction (webhooks included).
///
/// On a loopback address the `kubernetes` Service gets no endpoints (the API server refuses to
/// advertise a loopback address in them), so in-cluster clients reach the API only when the
/// control plane listens on an address they can route to.
pub fn apiserver(l: &Layout) -> Vec<String> {
    let pki = l.pki();
    let mut args = vec![
        flag("etcd-servers", l.etcd_client_url()),
        flag("etcd-cafile", path(pki.cert(Files::CA))),
        flag(
            "etcd-certfile",
            path(pki.cert(certs::APISERVER_ETCD_CLIENT)),
        ),
        flag("etcd-keyfile", path(pki.key(certs::APISERVER_ETCD_CLIENT))),
        flag("bind-address", l.address.to_string()),
        flag("advertise-address", l.address.to_string()),
        flag("secure-port", l.ports.apiserver.to_string()),
        flag("cert-dir", path(l.component_dir("kube-apiserver"))),
        flag("tls-cert-file", path(pki.cert(certs::APISERVER))),
        flag("tls-private-key-file", path(pki.key(certs::APISERVER))),
        flag("client-ca-file", path(pki.cert(Files::CA))),
        flag("authorization-mode", "Node,RBAC"),
        flag(
            "enable-admission-plugins",
            "NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
        ),
        flag("service-cluster-ip-range", &l.service_cidr),
        flag("service-account-issuer", SERVICE_ACCOUNT_ISSUER),
        flag(
            "service-account-key-file",
            path(pki.public_key(Files::SERVICE_ACCOUNTS)),
        ),
        flag(
            "service-account-signing-key-file",
            path(pki.key(Files::SERVICE_ACCOUNTS)),
        ),
        flag("allow-privileged", "true"),
        flag("profiling", "false"),
        // `kubectl logs`: the API server calls the node's log endpoint by its InternalIP, with
        // a client certificate, and checks the endpoint's certificate against the cluster CA.
        flag(
            "kubelet-client-certificate",
            path(pki.cert(certs::APISERVER_KUBELET_CLIENT)),
        ),
        flag(
            "kubelet-client-key",
            path(pki.key(certs::APISERVER_KUBELET_CLIENT)),
        ),
        flag("kubelet-certificate-authority", path(pki.cert(Files::CA))),
        flag("kubelet-preferred-address-types", "InternalIP"),
        // Webhooks and aggregated APIs are dialled at their endpoints' pod IPs, which the API
        // server (in the node's network namespace) reaches directly on the bridge.
        flag("enable-aggregator-routing", "true"),
    ];
    if l.address.is_loopback() {
        args.push(flag("endpoint-reconciler-type", "none"));
    }
    args
}

/// The flags kube-controller-manager and kube-scheduler share: their API credentials (also
/// for delegated authentication and authorization of their own endpoints) and serving port.
fn component(l: &Layout, name: &str, kubeconfig: &Path, port: u16) -> Vec<String> {
    let kubeconfig = path(kubeconfig);
    vec![
        flag("kubeconfig", &kubeconfig),
        flag("authentication-kubeconfig", &kubeconfig),
        flag("authorization-kubeconfig", &kubeconfig),
        flag("bind-address", "127.0.0.1"),
        flag("secure-port", port.to_string()),
        flag("cert-dir", path(l.component_dir(name))),
        flag("profiling", "false"),
    ]
}

/// kube-controller-manager: the default controllers, each with its own service account; signs
/// CSRs and service-account tokens; publishes the cluster CA into every namespace.
pub fn controller_manager(l: &Layout) -> Vec<String> {
    let pki = l.pki();
    let mut args = component(
        l,
        "kube-controller-manager",
        &l.controller_manager_kubeconfig(),
        l.ports.controller_manager,
    );
    args.extend([
        flag("root-ca-file", path(pki.cert(Files::CA))),
        flag(
            "service-account-private-key-file",
            path(pki.key(Files::SERVICE_ACCOUNTS)),
        ),
        "--use-service-account-credentials".into(),
        flag("cluster-signing-cert-file", path(pki.cert(Files::CA))),
        flag("cluster-signing-key-file", path(pki.key(Files::CA))),
        flag("service-cluster-ip-range", &l.service_cidr),
        flag("cluster-name", "smidge-local"),
    ]);
    args
}

/// kube-scheduler with its default profile.
pub fn scheduler(l: &Layout) -> Vec<String> {
    component(
        l,
        "kube-scheduler",
        &l.scheduler_kubeconfig(),
        l.ports.scheduler,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            state: "/s".into(),
            address: Ipv4Addr::LOCALHOST,
            service_cidr: "10.96.0.0/16".into(),
            ports: Ports {
                etcd_client: 1,
                etcd_peer: 2,
                apiserver: 3,
                controller_manager: 4,
                scheduler: 5,
            },
        }
    }

    #[test]
    fn the_apiserver_authorizes_with_rbac_admits_webhooks_and_uses_the_service_cidr() {
        let args = apiserver(&layout());
        for want in [
            "--authorization-mode=Node,RBAC",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--etcd-servers=https://127.0.0.1:1",
            "--secure-port=3",
            "--client-ca-file=/s/pki/ca.crt",
            "--service-account-signing-key-file=/s/pki/sa.key",
            "--service-account-key-file=/s/pki/sa.pub",
            "--kubelet-client-certificate=/s/pki/apiserver-kubelet-client.crt",
            "--kubelet-certificate-authority=/s/pki/ca.crt",
            "--enable-aggregator-routing=true",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
        }
        let admission = args
            .iter()
            .find_map(|a| a.strip_prefix("--enable-admission-plugins="))
            .unwrap();
        assert!(admission.contains("MutatingAdmissionWebhook"));
        assert!(admission.contains("ValidatingAdmissionWebhook"));
    }

    #[test]
    fn only_a_routable_apiserver_address_is_advertised_in_the_kubernetes_service() {
        let none = "--endpoint-reconciler-type=none".to_string();
        assert!(apiserver(&layout()).contains(&none));
        let routable = Layout {
            address: Ipv4Addr::new(10, 88, 0, 1),
            ..layout()
        };
        let args = apiserver(&routable);
        assert!(!args.contains(&none));
        assert!(args.contains(&"--advertise-address=10.88.0.1".to_string()));
    }

    #[test]
    fn etcd_requires_client_certificates_on_both_ports() {
        let args = etcd(&layout());
        for want in [
            "--client-cert-auth",
            "--peer-client-cert-auth",
            "--listen-client-urls=https://127.0.0.1:1",
            "--initial-cluster=smidge=https://127.0.0.1:2",
            "--data-dir=/s/etcd",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
        }
    }

    #[test]
    fn the_controller_manager_signs_with_the_cluster_ca_and_per_controller_accounts() {
        let args = controller_manager(&layout());
        for want in [
            "--kubeconfig=/s/controller-manager.kubeconfig",
            "--root-ca-file=/s/pki/ca.crt",
            "--service-account-private-key-file=/s/pki/sa.key",
            "--use-service-account-credentials",
            "--cluster-signing-key-file=/s/pki/ca.key",
            "--secure-port=4",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
        }
        assert!(scheduler(&layout()).contains(&"--secure-port=5".to_string()));
    }
}
