//! The benchmark's pods: a meshed client and server with smidge proxies, a plain client and
//! server for the direct path and the peers, a 1 KiB upstream in each server pod, and every
//! installed peer's outbound and inbound halves. Proxies and upstreams are pinned to one core.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use smidge_local_cluster::mesh::{Binaries, Mesh, PodSpec, Process};
use smidge_local_cluster::netns::Pod;

use crate::load::Target;
use crate::peers::{self, Certs, Kind, Side};
use crate::procstat;

/// The mesh namespace of the benchmark's workloads.
pub const NAMESPACE: &str = "bench";
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 10);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 11);
pub const PLAIN_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 20);
pub const PLAIN_SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 21);
/// The app's port in both server pods.
pub const APP_PORT: u16 = 8080;
/// How many Services the meshed client uses (`server-0` … `server-4`, all on the server pod).
pub const USED_SERVICES: u32 = 5;
/// The core that proxies and upstreams run on; the load generator takes the other.
pub const PROXY_CORE: usize = 0;
pub const LOAD_CORE: usize = 1;

/// `server-i`'s ClusterIP (clear of the generated filler Services' range).
pub fn service_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 100, 0, 10 + i as u8)
}

/// What the controller reads: the client and server workloads, `USED_SERVICES` Services on the
/// server pod, a TrafficTarget with an HTTPRouteGroup (so every request is authorized), and
/// `filler` more Services with a pod each that the client never calls.
pub fn manifests(filler: u32) -> String {
    let mut text = if filler > 0 {
        crate::mesh::workloads(crate::mesh::Shape {
            services: filler,
            endpoints_per_service: 1,
        })
    } else {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}, labels: {{smidge.io/inject: enabled}}}}\n"
        )
    };
    for (pod, ip) in [("client", CLIENT_IP), ("server", SERVER_IP)] {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {pod}, namespace: {NAMESPACE}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {NAMESPACE}, labels: {{app: {pod}}}}}\nspec: {{serviceAccountName: {pod}, containers: [{{name: app, image: app}}]}}\nstatus: {{podIP: {ip}}}\n"
        ));
    }
    for i in 0..USED_SERVICES {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: server-{i}, namespace: {NAMESPACE}}}\nspec: {{clusterIP: {}, ports: [{{name: http, port: 80, targetPort: {APP_PORT}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: server-{i}-1, namespace: {NAMESPACE}, labels: {{kubernetes.io/service-name: server-{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: {APP_PORT}}}]\nendpoints:\n- {{addresses: [{SERVER_IP}], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: server}}}}\n",
            service_ip(i)
        ));
    }
    text.push_str(&format!(
        r#"---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {{name: everything, namespace: {NAMESPACE}}}
spec:
  matches:
  - {{name: all, pathRegex: "/.*", methods: [GET]}}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {{name: client-to-server, namespace: {NAMESPACE}}}
spec:
  destination: {{kind: ServiceAccount, name: server, namespace: {NAMESPACE}}}
  sources: [{{kind: ServiceAccount, name: client, namespace: {NAMESPACE}}}]
  rules: [{{kind: HTTPRouteGroup, name: everything, matches: [all]}}]
"#
    ));
    text
}

/// One way from a client to a 1 KiB upstream, and the proxy processes on it.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub target: Target,
    /// (role, pid): the client-side proxy first, then the server-side one.
    pub proxies: Vec<(&'static str, u32)>,
    /// Where TLS connections into the server-side proxy go, and what they present.
    pub inbound: Option<Inbound>,
}

/// The server-side proxy's mTLS listener.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub addr: SocketAddr,
    pub server_name: String,
    /// The client certificate chain and key (PEM) a legitimate peer presents, and the CA.
    pub chain_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    pub alpn: Vec<u8>,
}

/// Everything running for a benchmark; dropping it stops the processes and removes the pods.
pub struct Topology {
    pub routes: Vec<Route>,
    /// Peers that are not installed, and why.
    pub missing: Vec<(Kind, String)>,
    pub upstreams: Vec<u32>,
    _processes: Vec<Process>,
    plain: Vec<Pod>,
    // After the processes: the namespaces go last.
    pub mesh: Mesh,
    _dir: tempfile::TempDir,
}

impl Topology {
    /// Starts the mesh (with `filler` unused Services) and, with `peers`, every installed peer.
    pub fn start(bins: &Path, tag: &str, filler: u32, peers: bool) -> anyhow::Result<Topology> {
        let binaries = Binaries {
            controller: bins.join("smidge-controller"),
            // Another build of the proxy (with symbols, for a profile; or a variant to compare).
            proxy: std::env::var_os("SMIDGE_BENCH_PROXY")
                .map_or_else(|| bins.join("smidge-proxy"), std::path::PathBuf::from),
        };
        // Extra `smidge-proxy run` arguments, to compare settings (`--mesh-protocol http1`).
        let proxy_args: Vec<String> = std::env::var("SMIDGE_BENCH_PROXY_ARGS")
            .map(|a| a.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        let mesh = Mesh::start(
            &binaries,
            tag,
            &manifests(filler),
            NAMESPACE,
            &[
                PodSpec {
                    name: "client",
                    ip: CLIENT_IP,
                    service_account: "client",
                },
                PodSpec {
                    name: "server",
                    ip: SERVER_IP,
                    service_account: "server",
                },
            ],
            &proxy_args.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let dir = tempfile::tempdir()?;
        // The peers' certificates and configurations; the directory lives as long as they do.
        let work = dir.path().to_path_buf();
        let me = std::env::current_exe()?;
        let mut topology = Topology {
            routes: Vec::new(),
            missing: Vec::new(),
            upstreams: Vec::new(),
            _processes: Vec::new(),
            plain: Vec::new(),
            mesh,
            _dir: dir,
        };
        let server_pod = topology.mesh.pod("server").pod.clone();
        let upstream = topology.spawn_upstream(&me, &server_pod)?;
        topology.upstreams.push(upstream);

        let client = topology.mesh.pod("client");
        let smidge_proxies = vec![
            (
                "outbound",
                client.proxy.pid().context("the client proxy's pid")?,
            ),
            (
                "inbound",
                topology
                    .mesh
                    .pod("server")
                    .proxy
                    .pid()
                    .context("the server proxy's pid")?,
            ),
        ];
        let smidge = Route {
            name: "smidge".into(),
            target: Target {
                netns: client.pod.netns.clone(),
                addr: SocketAddr::new(service_ip(0).into(), 80),
                host: format!("server-0.{NAMESPACE}.svc.cluster.local"),
                core: LOAD_CORE,
            },
            proxies: smidge_proxies,
            inbound: Some(topology.smidge_inbound()?),
        };

        if peers {
            let plain_client = topology.mesh.node.add_pod("pclient", PLAIN_CLIENT_IP)?;
            let plain_server = topology.mesh.node.add_pod("pserver", PLAIN_SERVER_IP)?;
            topology.plain = vec![plain_client.clone(), plain_server.clone()];
            let upstream = topology.spawn_upstream(&me, &plain_server)?;
            topology.upstreams.push(upstream);
            let direct = Route {
                name: "direct".into(),
                target: Target {
                    netns: plain_client.netns.clone(),
                    addr: SocketAddr::new(PLAIN_SERVER_IP.into(), APP_PORT),
                    host: "server".into(),
                    core: LOAD_CORE,
                },
                proxies: Vec::new(),
                inbound: None,
            };
            topology.routes.push(direct);
            topology.routes.push(smidge);
            let certs = Certs::generate(&work.join("certs"))?;
            for kind in Kind::ALL {
                match kind.program() {
                    Ok(program) => {
                        let route = topology.start_peer(
                            kind,
                            &program,
                            &certs,
                            &work,
                            &plain_client,
                            &plain_server,
                        )?;
                        topology.routes.push(route);
                    }
                    Err(why) => topology.missing.push((kind, why)),
                }
            }
        } else {
            topology.routes.push(smidge);
        }
        topology.pin()?;
        for route in &topology.routes {
            wait_answering(route, &topology)?;
        }
        Ok(topology)
    }

    fn spawn_upstream(&mut self, me: &Path, pod: &Pod) -> anyhow::Result<u32> {
        let mut cmd = pod.command(me, None);
        cmd.args(["serve", "--listen", &format!("0.0.0.0:{APP_PORT}")]);
        let process = Process::spawn(cmd, "the 1 KiB upstream")?;
        let pid = process.pid().context("the upstream's pid")?;
        self._processes.push(process);
        Ok(pid)
    }

    fn start_peer(
        &mut self,
        kind: Kind,
        program: &Path,
        certs: &Certs,
        dir: &Path,
        client: &Pod,
        server: &Pod,
    ) -> anyhow::Result<Route> {
        let mut pids = Vec::new();
        for (role, side, pod) in [
            (
                "outbound",
                Side::Outbound {
                    upstream: PLAIN_SERVER_IP,
                },
                client,
            ),
            ("inbound", Side::Inbound { app_port: APP_PORT }, server),
        ] {
            let (program, args) = peers::command(kind, program, side, certs, dir)?;
            let mut cmd = pod.command(&program, None);
            cmd.args(&args);
            let process = Process::spawn(cmd, kind.name())?;
            pids.push((role, process.pid().context("a peer's pid")?));
            self._processes.push(process);
        }
        let read = |f: &str| std::fs::read_to_string(certs.dir.join(f));
        Ok(Route {
            name: kind.name().into(),
            target: Target {
                netns: client.netns.clone(),
                addr: peers::outbound_addr(kind),
                host: "server".into(),
                core: LOAD_CORE,
            },
            proxies: pids,
            inbound: Some(Inbound {
                addr: SocketAddr::new(PLAIN_SERVER_IP.into(), kind.ports().1),
                server_name: peers::SERVER_NAME.into(),
                chain_pem: read("client.pem")?,
                key_pem: read("client.key")?,
                ca_pem: read("ca.pem")?,
                alpn: b"http/1.1".to_vec(),
            }),
        })
    }

    /// A certificate for the client's ServiceAccount from the mesh's issuer, as the client's
    /// proxy would hold, for TLS connections straight into the server's proxy.
    fn smidge_inbound(&self) -> anyhow::Result<Inbound> {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};
        let dir = self.mesh.identity_dir();
        let issuer_pem = std::fs::read_to_string(dir.join("issuer.crt"))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(
            &issuer_pem,
            KeyPair::from_pem(&std::fs::read_to_string(dir.join("issuer.key"))?)?,
        )?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let domain = smidge_local_cluster::mesh::TRUST_DOMAIN;
        params.subject_alt_names = vec![
            SanType::URI(format!("spiffe://{domain}/ns/{NAMESPACE}/sa/client").try_into()?),
            SanType::DnsName(
                format!("client.{NAMESPACE}.serviceaccount.identity.smidge.{domain}").try_into()?,
            ),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Inbound {
            addr: SocketAddr::new(SERVER_IP.into(), APP_PORT),
            server_name: format!("server.{NAMESPACE}.serviceaccount.identity.smidge.{domain}"),
            chain_pem: format!("{}{issuer_pem}", cert.pem()),
            key_pem: key.serialize_pem(),
            ca_pem: std::fs::read_to_string(dir.join("ca.crt"))?,
            alpn: b"http/1.1".to_vec(),
        })
    }

    /// Pins every proxy and upstream to [`PROXY_CORE`] (again: threads made since are caught).
    pub fn pin(&self) -> anyhow::Result<()> {
        let pids = self
            .routes
            .iter()
            .flat_map(|r| r.proxies.iter().map(|(_, pid)| *pid))
            .chain(self.upstreams.iter().copied());
        for pid in pids {
            procstat::pin(pid, PROXY_CORE)?;
        }
        Ok(())
    }

    /// Logs of every process, for error messages.
    pub fn logs(&self) -> String {
        let mut out = self.mesh.logs();
        for p in &self._processes {
            out.push_str(&format!("--- {}\n", p.log()));
        }
        out
    }

    /// The network namespace of the node (outside every pod).
    pub fn node_netns(&self) -> String {
        self.mesh.node.netns().to_string()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Peers and upstreams stop before their pods go.
        self._processes.clear();
        for pod in std::mem::take(&mut self.plain) {
            let _ = self.mesh.node.remove_pod(&pod);
        }
    }
}

/// Waits until `route` answers 200 (peers take a moment to listen; the mesh to discover).
fn wait_answering(route: &Route, topology: &Topology) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        match crate::load::open_idle(&route.target, 1, true) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "the {} path never answered: {last}\n{}",
        route.name,
        topology.logs()
    )
}

/// Calls each used Service once from the meshed client (so its proxy holds their views).
pub fn touch_used_services(topology: &Topology) -> anyhow::Result<()> {
    let client = topology.mesh.pod("client").pod.netns.clone();
    for i in 0..USED_SERVICES {
        let target = Target {
            netns: client.clone(),
            addr: SocketAddr::new(service_ip(i).into(), 80),
            host: format!("server-{i}"),
            core: LOAD_CORE,
        };
        // One request, answered 200, or an error naming the Service.
        crate::load::open_idle(&target, 1, true).with_context(|| format!("calling server-{i}"))?;
    }
    Ok(())
}
