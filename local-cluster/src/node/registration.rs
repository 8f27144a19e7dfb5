//! The Node object and its Lease: the node agent registers its Node (Ready, addresses,
//! capacity, the log endpoint's port) and renews `kube-node-lease/<node>` every 10 s, as the
//! kubelet does; the Lease is what kube-controller-manager's node lifecycle watches.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

/// The kubelet's defaults: a 40 s lease renewed every quarter of it.
pub const LEASE_SECONDS: i32 = 40;
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often the Node's conditions are rewritten (the Lease carries liveness in between).
pub const STATUS_EVERY: Duration = Duration::from_secs(60);
/// Pods the node takes, as the kubelet's default `maxPods`.
const MAX_PODS: &str = "110";

/// What the Node says of itself.
#[derive(Clone, Debug)]
pub struct NodeFacts {
    pub name: String,
    pub ip: Ipv4Addr,
    pub log_port: u16,
    pub pod_cidr: String,
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}

fn micro_now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Microsecond)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}

/// Memory in KiB from `/proc/meminfo`, CPUs from the scheduler's view of this process.
fn capacity() -> (String, String) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(1024 * 1024);
    (cpus.to_string(), format!("{mem_kib}Ki"))
}

/// The Node's status: Ready with no pressure, its address, capacity and log endpoint.
pub fn status(facts: &NodeFacts, transitions: &str) -> serde_json::Value {
    let now = now();
    let (cpu, memory) = capacity();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": transitions,
        })
    };
    let resources =
        json!({"cpu": cpu, "memory": memory, "pods": MAX_PODS, "ephemeral-storage": "100Gi"});
    json!({
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "the node agent does not track memory pressure"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "the node agent does not track disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "the node agent does not track PID pressure"),
            condition("Ready", "True", "KubeletReady", "smidge node agent is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": facts.ip.to_string()},
            {"type": "Hostname", "address": facts.name},
        ],
        "capacity": resources,
        "allocatable": resources,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.log_port}},
        "nodeInfo": {
            "architecture": std::env::consts::ARCH,
            "operatingSystem": "linux",
            "osImage": "smidge local cluster",
            "kernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "kubeletVersion": "v1.37.2",
            "kubeProxyVersion": "v1.37.2",
            "containerRuntimeVersion": concat!("smidge://", env!("CARGO_PKG_VERSION")),
            "machineID": "", "systemUUID": "", "bootID": "",
        },
    })
}

/// Creates the Node if it is missing (keeping it if it exists: pods stay bound to it) and
/// writes its status. Returns the Node's uid, for the Lease's owner reference.
pub async fn register(nodes: &Api<Node>, facts: &NodeFacts) -> anyhow::Result<String> {
    let existing = nodes
        .get_opt(&facts.name)
        .await
        .with_context(|| format!("reading node {}", facts.name))?;
    let node = match existing {
        Some(n) => n,
        None => {
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": facts.name, "labels": {
                    "kubernetes.io/hostname": facts.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
                }},
                "spec": {"podCIDR": facts.pod_cidr, "podCIDRs": [facts.pod_cidr]},
            }))?;
            let created = nodes
                .create(&PostParams::default(), &node)
                .await
                .with_context(|| format!("registering node {}", facts.name))?;
            tracing::info!(node = %facts.name, "node registered");
            created
        }
    };
    write_status(nodes, facts).await?;
    node.metadata
        .uid
        .with_context(|| format!("node {} has no uid", facts.name))
}

/// Rewrites the Node's status (heartbeat).
pub async fn write_status(nodes: &Api<Node>, facts: &NodeFacts) -> anyhow::Result<()> {
    let transitions = now();
    let current = nodes.get_status(&facts.name).await.ok();
    // Keep each condition's transition time while its status stays the same.
    let mut status = status(facts, &transitions);
    if let (Some(current), Some(conds)) = (
        current.and_then(|n| n.status).and_then(|s| s.conditions),
        status["conditions"].as_array_mut(),
    ) {
        for c in conds.iter_mut() {
            if let Some(old) = current
                .iter()
                .find(|o| Some(o.type_.as_str()) == c["type"].as_str())
            {
                if Some(old.status.as_str()) == c["status"].as_str() {
                    if let Some(t) = &old.last_transition_time {
                        c["lastTransitionTime"] = json!(t.0.to_string());
                    }
                }
            }
        }
    }
    nodes
        .patch_status(
            &facts.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .with_context(|| format!("writing node {}'s status", facts.name))?;
    Ok(())
}

/// Creates or renews the node's Lease.
pub async fn renew_lease(leases: &Api<Lease>, node: &str, node_uid: &str) -> anyhow::Result<()> {
    let renew = micro_now();
    match leases
        .get_opt(node)
        .await
        .context("reading the node lease")?
    {
        Some(_) => {
            leases
                .patch(
                    node,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {
                        "holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew,
                    }})),
                )
                .await
                .context("renewing the node lease")?;
        }
        None => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease", "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid,
                }]},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew},
            }))?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .context("creating the node lease")?;
        }
    }
    Ok(())
}

/// Registers, then renews the Lease every [`RENEW_EVERY`] and the status every
/// [`STATUS_EVERY`]; errors are logged and retried, never fatal.
pub async fn run(client: kube::Client, facts: NodeFacts) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let uid = loop {
        match register(&nodes, &facts).await {
            Ok(uid) => break uid,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "registering the node; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut last_status = tokio::time::Instant::now();
    loop {
        if let Err(e) = renew_lease(&leases, &facts.name, &uid).await {
            tracing::warn!(error = format!("{e:#}"), "renewing the node lease");
        }
        if last_status.elapsed() >= STATUS_EVERY {
            match write_status(&nodes, &facts).await {
                Ok(()) => last_status = tokio::time::Instant::now(),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "node heartbeat"),
            }
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}
