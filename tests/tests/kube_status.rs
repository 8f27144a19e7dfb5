//! Status and Events on SMI objects against the real control plane: the status writer of
//! `smidge_controller::status`, driven with conditions computed from the objects the test applies,
//! authenticated as a ServiceAccount bound to exactly the RBAC rules the writer needs.
//!
//! Builds the control plane first when it is missing (`kube/build.sh`); `SMIDGE_SKIP_KUBE` set
//! skips instead, with a message.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use smidge_controller::index::Index;
use smidge_controller::manifest::{read_file, Outcome};
use smidge_controller::model::ObjectId;
use smidge_controller::status::{snapshot, Config, Snapshot, StatusWriter};
use smidge_e2e::kube::{binaries, Kubectl};
use smidge_local_cluster::kube::{ControlPlane, Options};
use tokio::sync::watch;

/// The writers' Lease term: the longest a dead leader's term can last.
const LEASE: Duration = Duration::from_secs(6);
/// How often the leader lists what it wrote to find status lost behind its back.
const VERIFY: Duration = Duration::from_secs(2);
/// How long a condition may take to show once the leader writes.
const SHOWS: Duration = Duration::from_secs(30);

/// The SMI CRDs smidge ships, with the status subresource and a `status` the API server keeps
/// (what the CRD work of the same issue adds).
fn crds_with_status() -> anyhow::Result<String> {
    let mut docs = Vec::new();
    for (_, crd) in smidge_controller::crds::all() {
        let mut crd = serde_json::to_value(&crd)?;
        for version in crd["spec"]["versions"]
            .as_array_mut()
            .context("CRD without versions")?
        {
            version["subresources"] = json!({"status": {}});
            version["schema"]["openAPIV3Schema"]["properties"]["status"] =
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        }
        docs.push(serde_json::to_string(&crd)?);
    }
    Ok(docs.join("\n---\n"))
}

/// Exactly what the status writer needs: read (get, list) SMI objects, patch their status, create Events,
/// and claim its Lease in `smidge-system`.
const RBAC: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: smidge-controller, namespace: smidge-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: smidge-status-writer}
rules:
- apiGroups: [split.smi-spec.io, access.smi-spec.io, specs.smi-spec.io]
  resources: [trafficsplits, traffictargets, httproutegroups, tcproutes, udproutes]
  verbs: [get, list]
- apiGroups: [split.smi-spec.io, access.smi-spec.io, specs.smi-spec.io]
  resources: [trafficsplits/status, traffictargets/status, httproutegroups/status, tcproutes/status, udproutes/status]
  verbs: [patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: smidge-status-writer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: smidge-status-writer}
subjects: [{kind: ServiceAccount, name: smidge-controller, namespace: smidge-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: smidge-status-lease, namespace: smidge-system}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: smidge-status-lease, namespace: smidge-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: smidge-status-lease}
subjects: [{kind: ServiceAccount, name: smidge-controller, namespace: smidge-system}]
"#;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: web, namespace: shop}
spec:
  service: web
  backends: [{service: web-v1, weight: 50}, {service: web-v2, weight: 50}, {service: web-v3, weight: 50}]
"#;

const WEB_V2_V3: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v3, namespace: shop}
spec: {ports: [{port: 80}]}
"#;

/// A kubeconfig for the ServiceAccount `smidge-system/smidge-controller`: the admin's cluster,
/// a token of the account as the user.
fn account_kubeconfig(kubectl: &Kubectl, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let token = kubectl.ok(&[
        "-n",
        "smidge-system",
        "create",
        "token",
        "smidge-controller",
        "--duration=1h",
    ])?;
    let admin = std::fs::read_to_string(&kubectl.kubeconfig)?;
    let mut config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&admin)?;
    config["users"][0]["user"] = serde_yaml_ng::to_value(json!({"token": token.trim()}))?;
    let path = dir.join("smidge-controller.kubeconfig");
    std::fs::write(&path, serde_yaml_ng::to_string(&config)?)?;
    Ok(path)
}

/// The Services and SMI objects of `shop` as the API server holds them, read the way the
/// controller reads them, and the desired status they give.
fn observe(kubectl: &Kubectl) -> anyhow::Result<Snapshot> {
    let mut index = Index::default();
    let mut generations: HashMap<ObjectId, i64> = HashMap::new();
    for item in kubectl.items(&["-n", "shop", "get", "services,trafficsplits"])? {
        let text = serde_json::to_string(&item)?;
        for (_, outcome) in read_file(&text) {
            match outcome {
                Outcome::Object { object, .. } => {
                    if let Some(g) = item["metadata"]["generation"].as_i64() {
                        generations.insert(object.id.clone(), g);
                    }
                    index.apply(object);
                }
                other => anyhow::bail!("not read: {other:?}"),
            }
        }
    }
    Ok(snapshot(&index, &[], |id| generations.get(id).copied()))
}

fn condition(split: &Value, type_: &str) -> Option<Value> {
    split["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// The Events on TrafficSplit shop/web with `reason`.
fn events(kubectl: &Kubectl, reason: &str) -> anyhow::Result<Vec<Value>> {
    Ok(kubectl
        .items(&["-n", "shop", "get", "events.events.k8s.io"])?
        .into_iter()
        .filter(|e| e["regarding"]["name"] == "web" && e["regarding"]["kind"] == "TrafficSplit")
        .filter(|e| e["reason"] == reason)
        .collect())
}

fn writer_config(identity: &str) -> Config {
    let mut config = Config::new(identity);
    config.lease.duration = LEASE;
    config.lease.grace = Duration::from_secs(2);
    config.resync = Duration::from_millis(500);
    config.verify = VERIFY;
    config
}

#[test]
fn the_leader_writes_conditions_and_events_and_hands_over_when_it_dies() -> anyhow::Result<()> {
    let Some(bin) = binaries()? else {
        return Ok(());
    };
    let state = tempfile::tempdir()?;
    let plane = ControlPlane::start(&Options::new(state.path(), &bin))?;
    let kubectl = Kubectl {
        program: bin.join("kubectl"),
        kubeconfig: plane.kubeconfig(),
    };
    kubectl.ok(&["create", "namespace", "shop"])?;
    kubectl.ok(&["create", "namespace", "smidge-system"])?;
    kubectl.apply(&crds_with_status()?)?;
    kubectl.ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/trafficsplits.split.smi-spec.io",
    ])?;
    kubectl.apply(RBAC)?;
    kubectl.apply(SERVICES)?;
    let kubeconfig = account_kubeconfig(&kubectl, state.path())?;

    let rt = tokio::runtime::Runtime::new()?;
    let (publish, snapshots) = watch::channel(Arc::new(observe(&kubectl)?));
    let (a, b) = rt.block_on(async {
        let a = smidge_local_cluster::kube::control_plane::client(&kubeconfig).await?;
        let b = smidge_local_cluster::kube::control_plane::client(&kubeconfig).await?;
        anyhow::Ok((
            StatusWriter::spawn(a, writer_config("replica-a"), snapshots.clone()),
            StatusWriter::spawn(b, writer_config("replica-b"), snapshots.clone()),
        ))
    })?;

    // Two missing backends: ResolvedRefs=False with its reason, Accepted=True, and an Event for
    // each (one reason, two problems: two Events, not one folded series).
    let split = kubectl.until(SHOWS, "ResolvedRefs=False on shop/web", |k| {
        let split = k.json(&["-n", "shop", "get", "trafficsplit", "web"])?;
        Ok(condition(&split, "ResolvedRefs")
            .filter(|c| c["status"] == "False")
            .map(|_| split))
    })?;
    let refs = condition(&split, "ResolvedRefs").context("ResolvedRefs")?;
    assert_eq!(refs["reason"], "BackendNotFound", "{refs}");
    let message = refs["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("shop/web-v2") && message.contains("shop/web-v3"),
        "{message}"
    );
    assert_eq!(refs["observedGeneration"], split["metadata"]["generation"]);
    let accepted = condition(&split, "Accepted").context("Accepted")?;
    assert_eq!(accepted["status"], "True", "{accepted}");
    let yaml = kubectl.ok(&["-n", "shop", "get", "trafficsplit", "web", "-o", "yaml"])?;
    assert!(yaml.contains("reason: BackendNotFound"), "{yaml}");
    kubectl.until(SHOWS, "the Events in kubectl describe", |k| {
        let described = k.ok(&["-n", "shop", "describe", "trafficsplit", "web"])?;
        // The conditions are described too: look only at the Events section.
        let events = described.split_once("\nEvents:").map_or("", |(_, e)| e);
        Ok((events.contains("BackendNotFound")
            && events.contains("shop/web-v2")
            && events.contains("shop/web-v3"))
        .then_some(()))
    })?;

    // Exactly one replica leads and writes; the status is the writer's (server-side apply).
    let (leader, follower) = if a.leading() { (a, b) } else { (b, a) };
    assert!(
        leader.leading() && !follower.leading(),
        "leading: {} {}, writes: {} {}, lease: {}",
        leader.leading(),
        follower.leading(),
        leader.writes(),
        follower.writes(),
        kubectl.ok(&["-n", "smidge-system", "get", "lease", "-o", "yaml"])?
    );
    assert!(leader.writes() >= 1);
    assert_eq!(follower.writes(), 0, "only the Lease holder writes");
    let with_managers = kubectl.json(&[
        "-n",
        "shop",
        "get",
        "trafficsplit",
        "web",
        "--show-managed-fields",
    ])?;
    let managers: Vec<(String, String)> = with_managers["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap_or_default().into(),
                m["subresource"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("smidge-controller".into(), "status".into())),
        "{managers:?}"
    );

    // Fixing the object flips the condition; Accepted keeps its transition time; the Event
    // was published once although the writer passed many times since.
    let accepted_since = accepted["lastTransitionTime"].clone();
    kubectl.apply(WEB_V2_V3)?;
    publish.send_replace(Arc::new(observe(&kubectl)?));
    let split = kubectl.until(SHOWS, "ResolvedRefs=True on shop/web", |k| {
        let split = k.json(&["-n", "shop", "get", "trafficsplit", "web"])?;
        Ok(condition(&split, "ResolvedRefs")
            .filter(|c| c["status"] == "True")
            .map(|_| split))
    })?;
    let accepted = condition(&split, "Accepted").context("Accepted")?;
    assert_eq!(accepted["lastTransitionTime"], accepted_since);
    assert_eq!(events(&kubectl, "BackendNotFound")?.len(), 2);
    assert_eq!(follower.writes(), 0);

    // Deleted and created again between two snapshots (the same desired status, so nothing new
    // to write as far as the snapshots go): the leader's verification finds the new object
    // without status and writes it.
    kubectl.ok(&["-n", "shop", "delete", "trafficsplit", "web"])?;
    kubectl.apply(SERVICES)?;
    kubectl.until(SHOWS, "status on the re-created shop/web", |k| {
        let split = k.json(&["-n", "shop", "get", "trafficsplit", "web"])?;
        Ok(condition(&split, "ResolvedRefs")
            .filter(|c| c["status"] == "True")
            .map(|_| ()))
    })?;

    // The leader dies (dropped without giving the Lease up): the other replica takes over
    // within the Lease term and writes the next change.
    drop(leader);
    let died = Instant::now();
    kubectl.ok(&["-n", "shop", "delete", "service", "web-v2"])?;
    publish.send_replace(Arc::new(observe(&kubectl)?));
    kubectl.until(LEASE * 3, "the survivor writes ResolvedRefs=False", |k| {
        let split = k.json(&["-n", "shop", "get", "trafficsplit", "web"])?;
        Ok(condition(&split, "ResolvedRefs")
            .filter(|c| c["status"] == "False")
            .map(|_| ()))
    })?;
    let handed_over = died.elapsed();
    eprintln!(
        "hand-over: the survivor wrote {handed_over:?} after the leader died (Lease {LEASE:?})"
    );
    assert!(follower.leading());
    assert!(follower.writes() >= 1);
    assert!(
        handed_over < LEASE + Duration::from_secs(3),
        "hand-over took {handed_over:?}, more than the Lease term {LEASE:?} and a pass"
    );
    // The problem came back, so its Event is due again (a third one, from the new leader).
    kubectl.until(SHOWS, "the Event again", |k| {
        Ok((events(k, "BackendNotFound")?.len() == 3).then_some(()))
    })?;

    // A graceful stop gives the Lease up at once.
    rt.block_on(follower.shutdown());
    let lease = kubectl.json(&[
        "-n",
        "smidge-system",
        "get",
        "lease",
        "smidge-controller-status",
    ])?;
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    plane.stop()?;
    Ok(())
}
