//! The node agent's process (`smidge-node agent`): wires its tasks together. Registration and
//! the Lease ([`super::registration`]), the pods bound to this node ([`super::kubelet`]),
//! kube-proxy's rules and the pods' names ([`super::proxier`]), and the log endpoint
//! ([`super::logs`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::kubelet::Kubelet;
use super::registration::NodeFacts;

/// What the agent is told by the cluster that starts it (as JSON in a file).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentConfig {
    pub node_name: String,
    /// The node's address on the pod bridge (its InternalIP), also the pods' gateway.
    pub node_ip: Ipv4Addr,
    /// The node's network namespace, which this agent runs in.
    pub node_netns: String,
    pub pod_cidr: String,
    /// The agent's own files: pod records, volumes, logs.
    pub state: PathBuf,
    /// The node identity (`system:node:<name>`).
    pub kubeconfig: PathBuf,
    /// kube-proxy's identity (`system:kube-proxy`).
    pub proxy_kubeconfig: PathBuf,
    /// The workspace's binaries (the image table's programs, and `smidge-node` itself).
    pub programs: PathBuf,
    pub log_port: u16,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub client_ca: PathBuf,
    /// Refresh projected tokens once they are this old, even before the kubelet's rule (80%
    /// of their life) asks: tokens live at least 10 minutes, too long to watch one refresh in
    /// a test. From `SMIDGE_NODE_TOKEN_REFRESH_SECS`.
    #[serde(default)]
    pub token_refresh_secs: Option<u64>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> anyhow::Result<AgentConfig> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Runs the agent until the process is killed.
pub fn main(config_path: &Path) -> anyhow::Result<()> {
    let config = AgentConfig::load(config_path)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the agent's runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: AgentConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(config.state.join("pods"))?;
    let client = crate::kube::control_plane::client(&config.kubeconfig).await?;
    let proxy_client = crate::kube::control_plane::client(&config.proxy_kubeconfig).await?;
    let facts = NodeFacts {
        name: config.node_name.clone(),
        ip: config.node_ip,
        log_port: config.log_port,
        pod_cidr: config.pod_cidr.clone(),
    };
    tokio::spawn(super::registration::run(client.clone(), facts));

    let kubelet = Arc::new(Kubelet::new(config.clone(), client.clone()));
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((config.node_ip, config.log_port)))
            .await
            .with_context(|| format!("listening on {}:{}", config.node_ip, config.log_port))?;
    let tls = super::logs::server_config(
        &read(&config.serving_cert)?,
        &read(&config.serving_key)?,
        &read(&config.client_ca)?,
    )?;
    let logs = tokio::spawn(super::logs::serve(
        listener,
        Arc::new(tls),
        kubelet.clone() as Arc<dyn super::logs::LogSource>,
    ));
    let proxier = tokio::spawn(super::proxier::run(proxy_client, kubelet.clone()));
    let pods = tokio::spawn(kubelet.clone().run());
    tokio::select! {
        r = logs => anyhow::bail!("the log endpoint ended: {r:?}"),
        r = proxier => anyhow::bail!("kube-proxy ended: {r:?}"),
        r = pods => anyhow::bail!("the pod loop ended: {r:?}"),
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
