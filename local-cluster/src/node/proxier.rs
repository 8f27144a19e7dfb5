//! kube-proxy's role on the node, as the node agent plays it: watches Services and
//! EndpointSlices (as `system:kube-proxy`) and, on every change, rewrites the node's ClusterIP
//! rules and each pod's hosts file (`<svc>.<ns>.svc.cluster.local`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;

use super::kubelet::Kubelet;

/// Coalesces bursts of changes into one rewrite.
const SETTLE: Duration = Duration::from_millis(100);

pub async fn run(client: kube::Client, kubelet: Arc<Kubelet>) -> anyhow::Result<()> {
    // The node's own processes (the API server, this agent) connect to ClusterIPs: they need a
    // route for the nat OUTPUT rules to rewrite.
    if let Err(e) = crate::mesh::route_service_cidr(None, crate::kube::SERVICE_CIDR, "br0") {
        tracing::warn!(
            error = format!("{e:#}"),
            "routing the Service CIDR in the node"
        );
    }
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let (changed_tx, mut changed) = tokio::sync::mpsc::channel::<()>(1);
    let svc_stream = reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let slice_stream = reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    for stream in [
        svc_stream.map(|r| r.map(|_| ())).boxed(),
        slice_stream.map(|r| r.map(|_| ())).boxed(),
    ] {
        let tx = changed_tx.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    tracing::warn!(error = %e, "kube-proxy watch");
                    continue;
                }
                let _ = tx.try_send(());
            }
        });
    }
    // Pods created meanwhile need their hosts file even when no Service changes.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut written_rules = String::new();
    let bridge_netfilter = crate::netns::bridge_netfilter();
    loop {
        tokio::select! {
            _ = changed.recv() => tokio::time::sleep(SETTLE).await,
            _ = tick.tick() => {}
        }
        let svcs: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
        let eps: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
        let frontends = super::services::frontends(&svcs, &eps);
        let rules = crate::services::rules(&frontends, bridge_netfilter);
        if rules != written_rules {
            match crate::mesh::apply_frontends(None, &frontends) {
                Ok(()) => written_rules = rules,
                Err(e) => tracing::warn!(error = format!("{e:#}"), "writing the Service rules"),
            }
        }
        kubelet.set_services(svcs);
        for sb in kubelet.sandboxes() {
            let (netns, namespace) = (sb.netns, sb.namespace);
            let text = kubelet.hosts(&namespace, Some((sb.ip, &sb.hostname)));
            let path = crate::netns::hosts_path(&netns);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                // Only a pod whose sandbox is still there: never recreate a removed pod's files.
                if let Err(e) = crate::netns::update_hosts(&netns, &text) {
                    tracing::warn!(
                        netns,
                        error = format!("{e:#}"),
                        "writing a pod's hosts file"
                    );
                }
            }
        }
    }
}
