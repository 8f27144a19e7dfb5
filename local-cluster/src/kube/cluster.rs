//! The local cluster with a real Kubernetes control plane (`smidge local up --kubernetes`):
//! the node namespace and its bridge, etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler inside it, the node agent (kubelet and kube-proxy of the one Node, a process
//! of its own so it can be restarted under running pods), and a relay that makes the API server
//! reachable from the host at `127.0.0.1` for kubectl and helm.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::args::{Layout, NODE_NAME};
use super::control_plane::{ControlPlane, Options};
use super::kubeconfig;
use super::pki::Files;
use crate::cluster::Programs;
use crate::mesh::GATEWAY;
use crate::netns::{self, Node};
use crate::node::agent::AgentConfig;

/// Tag of the node namespace (stale runs are found by it).
pub const TAG: &str = "kube";
/// The namespace and name the node agent is shown and controlled under.
pub const AGENT_NAMESPACE: &str = "smidge-system";
pub const AGENT_POD: &str = "smidge-node";
/// The node agent's log endpoint port, on the node's address.
pub const LOG_PORT: u16 = 10250;
/// Pods' addresses: the node bridge's network.
pub const POD_CIDR: &str = crate::services::POD_NETWORK;

/// The running cluster. [`KubeCluster::shutdown`] stops it; dropping it kills what is left.
pub struct KubeCluster {
    state: PathBuf,
    plane: Option<ControlPlane>,
    layout: Layout,
    agent: Option<Child>,
    agent_restarts: u32,
    agent_down_since: Option<Instant>,
    agent_stopped: bool,
    programs: Programs,
    relay_port: u16,
    /// Last: the namespace goes after everything in it.
    node: Node,
}

impl KubeCluster {
    /// Starts everything and returns once the node is registered and Ready. `bin` holds the
    /// control plane's binaries. Moves the calling thread into the node's network namespace
    /// (after binding the host-side relay).
    pub fn start(programs: Programs, state: &Path, bin: &Path) -> anyhow::Result<KubeCluster> {
        std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
        // Bound in the host's namespace, before this thread leaves it.
        let relay = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding the API server's host-side relay")?;
        let relay_port = relay.local_addr()?.port();
        let node = Node::create(TAG, GATEWAY)?;
        node.enter()?;
        crate::mesh::enable_forwarding(node.netns())?;
        let mut options = Options::new(state.join("control-plane"), bin);
        options.address = GATEWAY;
        let plane = ControlPlane::start(&options)?;
        let layout = plane.layout().clone();
        write_user_kubeconfig(&layout, state, relay_port)?;
        spawn_relay(relay, SocketAddr::from((GATEWAY, layout.ports.apiserver)))?;
        let mut cluster = KubeCluster {
            state: state.to_path_buf(),
            plane: Some(plane),
            layout: layout.clone(),
            agent: None,
            agent_restarts: 0,
            agent_down_since: None,
            agent_stopped: false,
            programs,
            relay_port,
            node,
        };
        cluster.agent = Some(cluster.spawn_agent()?);
        cluster.wait_node_ready(&layout, Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// The user's kubeconfig (through the relay).
    pub fn kubeconfig(&self) -> PathBuf {
        self.state.join("kubeconfig")
    }

    pub fn relay_port(&self) -> u16 {
        self.relay_port
    }

    fn agent_config(&self) -> AgentConfig {
        let layout = &self.layout;
        let pki = layout.pki();
        AgentConfig {
            node_name: NODE_NAME.into(),
            node_ip: GATEWAY,
            node_netns: self.node.netns().into(),
            pod_cidr: POD_CIDR.into(),
            state: self.state.join("node"),
            kubeconfig: layout.node_kubeconfig(),
            proxy_kubeconfig: layout.kube_proxy_kubeconfig(),
            programs: self.programs.apps.clone(),
            log_port: LOG_PORT,
            serving_cert: pki.cert(super::args::certs::NODE_SERVING),
            serving_key: pki.key(super::args::certs::NODE_SERVING),
            client_ca: pki.cert(Files::CA),
            token_refresh_secs: std::env::var("SMIDGE_NODE_TOKEN_REFRESH_SECS")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }

    fn spawn_agent(&self) -> anyhow::Result<Child> {
        let config = self.agent_config();
        std::fs::create_dir_all(&config.state)?;
        let path = config.state.join("agent.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.state.join("agent.log"))?;
        std::process::Command::new(self.programs.apps.join("smidge-node"))
            .arg("agent")
            .arg(&path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the node agent (smidge-node)")
    }

    /// Waits until the node is Ready and the `default` namespace's ServiceAccount exists.
    fn wait_node_ready(&mut self, layout: &Layout, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = runtime.block_on(super::control_plane::client(&layout.kubeconfig()))?;
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
        // Pods in `default` are refused until kube-controller-manager made its ServiceAccount;
        // `up` returns once they would be admitted.
        let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(client, "default");
        loop {
            let ready = runtime
                .block_on(nodes.get_opt(NODE_NAME))
                .ok()
                .flatten()
                .and_then(|n| n.status)
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let account = runtime
                .block_on(accounts.get_opt("default"))
                .ok()
                .flatten()
                .is_some();
            if ready && account {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.agent.as_mut().map(|c| c.try_wait()) {
                anyhow::bail!(
                    "the node agent exited ({status}); its log: {}",
                    self.state.join("node/agent.log").display()
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "the node did not become Ready in {timeout:?}; see {}",
                    self.state.join("node/agent.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Restarts the node agent after a crash (1 s, doubling, at most 10 s), unless stopped.
    pub fn supervise(&mut self) {
        if self.agent_stopped {
            return;
        }
        if let Some(c) = self.agent.as_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                return;
            }
            self.agent = None;
            self.agent_down_since = Some(Instant::now());
        }
        let backoff =
            Duration::from_secs(1 << self.agent_restarts.min(3)).min(Duration::from_secs(10));
        if self.agent_down_since.is_some_and(|t| t.elapsed() < backoff) {
            return;
        }
        match self.spawn_agent() {
            Ok(c) => {
                self.agent = Some(c);
                self.agent_restarts += 1;
                self.agent_down_since = None;
                tracing::info!("node agent restarted");
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "restarting the node agent"),
        }
    }

    /// Kill (restarted after the back-off), stop (SIGKILL, kept down) or start the node agent.
    pub fn agent_action(&mut self, action: crate::cluster::PodAction) -> anyhow::Result<String> {
        use crate::cluster::PodAction;
        let kill = |c: &mut Option<Child>| {
            if let Some(mut child) = c.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        };
        match action {
            PodAction::Kill => {
                kill(&mut self.agent);
                self.agent_down_since = Some(Instant::now());
                Ok(format!("pod/{AGENT_POD} killed"))
            }
            PodAction::Stop => {
                kill(&mut self.agent);
                self.agent_stopped = true;
                Ok(format!("pod/{AGENT_POD} stopped"))
            }
            PodAction::Start | PodAction::Restart => {
                if action == PodAction::Restart {
                    kill(&mut self.agent);
                }
                self.agent_stopped = false;
                if self.agent.is_none() {
                    self.agent = Some(self.spawn_agent()?);
                    self.agent_restarts += 1;
                }
                Ok(format!("pod/{AGENT_POD} started"))
            }
        }
    }

    /// The node agent's pid, while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Stops the node agent, every pod (their processes and namespaces), then the control plane.
    pub fn shutdown(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let prefix = format!("{}-", self.node.netns());
        for ns in netns::netns_with_prefix(&prefix) {
            netns::kill_in_netns(&ns);
            if let Err(e) = netns::remove_netns(&ns) {
                tracing::warn!(netns = %ns, error = format!("{e:#}"), "removing a pod namespace");
            }
        }
        netns::remove_etc_with_prefix(&prefix);
        if let Some(plane) = self.plane.take() {
            if let Err(e) = plane.stop() {
                tracing::warn!(error = format!("{e:#}"), "stopping the control plane");
            }
        }
        netns::kill_in_netns(self.node.netns());
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `<state>/kubeconfig`: the admin's credentials, the server at the host-side relay.
fn write_user_kubeconfig(layout: &Layout, state: &Path, relay_port: u16) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let pki = layout.pki();
    let admin = super::args::certs::ADMIN;
    let text = kubeconfig::render(
        &format!("https://127.0.0.1:{relay_port}"),
        &pki.cert(Files::CA),
        &pki.cert(admin),
        &pki.key(admin),
    )?;
    let path = state.join("kubeconfig");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Forwards every connection to the host-side `listener` to `target` (the API server in the
/// node's namespace), on a thread of its own, which starts in the node namespace.
fn spawn_relay(listener: std::net::TcpListener, target: SocketAddr) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("apiserver-relay".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "the API server relay could not start");
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "the API server relay could not listen");
                        return;
                    }
                };
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    tokio::spawn(async move {
                        match tokio::net::TcpStream::connect(target).await {
                            Ok(mut outbound) => {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                            Err(e) => tracing::warn!(error = %e, "relaying to the API server"),
                        }
                    });
                }
            });
        })
        .context("starting the API server relay")?;
    Ok(())
}
