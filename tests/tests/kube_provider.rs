//! The real `smidge-controller` on `--provider kubernetes` against the real control plane
//! (etcd, kube-apiserver, kube-controller-manager, kube-scheduler built by `kube/build.sh`),
//! with a ServiceAccount bound to `controller/rbac/controller.yaml`, not the admin's
//! credentials; driven as a proxy would drive it.
//!
//! Builds the control plane first when it is missing; `SMIDGE_SKIP_KUBE` set skips instead.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use smidge_e2e::kube::{binaries, Kubectl};
use smidge_e2e::{Controller, ProxyClient};
use smidge_local_cluster::kube::pki::Files;
use smidge_local_cluster::kube::{ControlPlane, Options};
use smidge_protocol::{
    ClientMessage, Identity, OutboundView, ServerMessage, View, ViewKey, ViewUpdate,
};

/// Generous: a change normally arrives in milliseconds; this only bounds a broken run.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(20);
const APP_SVC: &str = "10.96.0.10:9091";
const APP_B: &str = "10.96.0.11:9091";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A TCP relay in front of the API server: the controller's kubeconfig names the relay, so the
/// API server can restart on another port under it, and cutting the relay takes the API server
/// away from the controller alone (kubectl still reaches it directly).
struct Relay {
    addr: SocketAddr,
    state: Arc<Mutex<RelayState>>,
}

struct RelayState {
    target: Option<SocketAddr>,
    open: Vec<TcpStream>,
}

impl Relay {
    fn start(target: SocketAddr) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(RelayState {
            target: Some(target),
            open: Vec::new(),
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Some(target) = shared.lock().ok().and_then(|s| s.target) else {
                    continue; // cut: the connection is dropped
                };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let Ok(mut s) = shared.lock() {
                    s.open.extend([c2, s2]);
                }
                for (mut from, mut to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Ok(Relay { addr, state })
    }

    /// Closes every relayed connection and, with `None`, refuses new ones.
    fn retarget(&self, target: Option<SocketAddr>) {
        if let Ok(mut s) = self.state.lock() {
            s.target = target;
            for c in s.open.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn apiserver_addr(plane: &ControlPlane) -> anyhow::Result<SocketAddr> {
    let url = plane.server();
    Ok(url
        .strip_prefix("https://")
        .context("an https URL")?
        .trim_end_matches('/')
        .parse()?)
}

/// The cluster with the SMI CRDs and the controller's RBAC, and a kubeconfig for the
/// controller's ServiceAccount that reaches the API server through `relay`.
struct Cluster {
    state: tempfile::TempDir,
    bin: PathBuf,
    plane: Option<ControlPlane>,
    kubectl: Kubectl,
    relay: Relay,
    controller_kubeconfig: PathBuf,
}

impl Cluster {
    fn start() -> anyhow::Result<Option<Cluster>> {
        let Some(bin) = binaries()? else {
            return Ok(None);
        };
        let state = tempfile::tempdir()?;
        let plane = ControlPlane::start(&Options::new(state.path(), &bin))?;
        let kubectl = Kubectl {
            program: bin.join("kubectl"),
            kubeconfig: plane.kubeconfig(),
        };
        let relay = Relay::start(apiserver_addr(&plane)?)?;
        kubectl.ok(&[
            "apply",
            "-f",
            &repo().join("crds/smi").display().to_string(),
        ])?;
        kubectl.ok(&[
            "apply",
            "-f",
            &repo()
                .join("controller/rbac/controller.yaml")
                .display()
                .to_string(),
        ])?;
        kubectl.ok(&[
            "wait",
            "--for",
            "condition=established",
            "crd",
            "--all",
            "--timeout=60s",
        ])?;
        let token = kubectl.ok(&[
            "-n",
            "smidge-system",
            "create",
            "token",
            "smidge-controller",
            "--duration=2h",
        ])?;
        let ca = plane.layout().pki().cert(Files::CA);
        let controller_kubeconfig = state.path().join("controller.kubeconfig");
        std::fs::write(
            &controller_kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"https://{}\", certificate-authority: \"{}\"}}\n\
                 users:\n- name: u\n  user: {{token: \"{}\"}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
                relay.addr,
                ca.display(),
                token.trim()
            ),
        )?;
        Ok(Some(Cluster {
            state,
            bin,
            plane: Some(plane),
            kubectl,
            relay,
            controller_kubeconfig,
        }))
    }

    /// Stops the API server (and the rest of the control plane) and starts it again on the
    /// same state; the relay follows it to its new port.
    fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(plane) = self.plane.take() {
            plane.stop()?;
        }
        let plane = ControlPlane::start(&Options::new(self.state.path(), &self.bin))?;
        self.kubectl.kubeconfig = plane.kubeconfig();
        self.relay.retarget(Some(apiserver_addr(&plane)?));
        self.plane = Some(plane);
        Ok(())
    }

    /// Compacts etcd at its current revision through etcd's JSON gateway, so that every
    /// resourceVersion a watch had is gone.
    fn compact_etcd(&self) -> anyhow::Result<u64> {
        let plane = self
            .plane
            .as_ref()
            .context("the control plane is running")?;
        let pki = plane.layout().pki();
        let url = format!("https://127.0.0.1:{}", plane.layout().ports.etcd_client);
        let curl = |path: &str, body: &str| -> anyhow::Result<serde_json::Value> {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--fail", "-X", "POST", "--cacert"])
                .arg(pki.cert(Files::CA))
                .arg("--cert")
                .arg(pki.cert("apiserver-etcd-client"))
                .arg("--key")
                .arg(pki.key("apiserver-etcd-client"))
                .args(["-d", body, &format!("{url}{path}")])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "etcd {path}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(serde_json::from_slice(&out.stdout)?)
        };
        // The key is base64 of "smidge"; only the header's revision is wanted.
        let answer = curl("/v3/kv/range", r#"{"key": "c21pZGdl"}"#)?;
        let revision: u64 = answer["header"]["revision"]
            .as_str()
            .context("a revision")?
            .parse()?;
        curl(
            "/v3/kv/compaction",
            &format!(r#"{{"revision": "{revision}", "physical": true}}"#),
        )?;
        Ok(revision)
    }
}

fn cluster_yaml() -> String {
    let mut text = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns, labels: {smidge.io/inject: enabled}}\n",
    );
    for (name, ip) in [
        ("app-svc", "10.96.0.10"),
        ("app-b", "10.96.0.11"),
        ("app-c", "10.96.0.12"),
    ] {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{clusterIP: {ip}, ports: [{{name: http, port: 9091}}]}}\n"
        ));
    }
    // app-b's pod carries the injector's label (meshed); app-c's does not, though its
    // namespace asks for injection (the injector never saw it: not meshed).
    for (svc, ip, meshed) in [("app-b", "10.0.0.11", true), ("app-c", "10.0.0.12", false)] {
        let labels = if meshed {
            format!("{{{}: smidge-system}}", smidge_controller::labels::MESHED)
        } else {
            "{}".to_string()
        };
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {svc}, namespace: ns}}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {svc}-0, namespace: ns, labels: {labels}}}\n\
             spec: {{serviceAccountName: {svc}, containers: [{{name: app, image: registry.invalid/app:1}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {svc}-1, namespace: ns, labels: {{kubernetes.io/service-name: {svc}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 9091}}]\n\
             endpoints: [{{addresses: [{ip}], targetRef: {{kind: Pod, name: {svc}-0, namespace: ns}}}}]\n"
        ));
    }
    text
}

fn split(name: &str, root: &str, b: &str, c: &str) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: {name}, namespace: ns}}\n\
         spec:\n  service: {root}\n  backends:\n  - service: app-b\n    weight: {b}\n  - service: app-c\n    weight: {c}\n"
    )
}

/// Backend name → weight of the view's first route.
fn weights(view: &OutboundView) -> Vec<(String, u32)> {
    view.routes[0]
        .targets
        .iter()
        .map(|t| (view.backends[t.backend as usize].name.clone(), t.weight))
        .collect()
}

/// A proxy's connection subscribed to one service.
struct Subscriber {
    client: ProxyClient,
    key: ViewKey,
}

impl Subscriber {
    async fn subscribe(
        push: SocketAddr,
        service: &str,
    ) -> anyhow::Result<(Subscriber, OutboundView)> {
        let mut client = ProxyClient::connect(push, "a-0").await?;
        let key = ViewKey::Outbound(service.parse()?);
        client.send(ClientMessage::Subscribe(key.clone())).await?;
        let mut sub = Subscriber { client, key };
        let view = sub.next(UPDATE_TIMEOUT).await?;
        Ok((sub, view))
    }

    /// The next full view, acked.
    async fn next(&mut self, wait: Duration) -> anyhow::Result<OutboundView> {
        match self.client.recv(wait).await? {
            ServerMessage::View {
                version,
                update: ViewUpdate::Full(View::Outbound(v)),
                ..
            } => {
                self.client
                    .send(ClientMessage::Ack {
                        key: self.key.clone(),
                        version,
                    })
                    .await?;
                Ok(v)
            }
            other => anyhow::bail!("expected a full outbound view, got {other:?}"),
        }
    }
}

/// Runs `f` on a thread of its own (outside the test's runtime).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("no panic"))
}

/// The kinds the provider watches whole, for kubectl (and Pods with the injector's label).
const WATCHED: &str = "namespaces,serviceaccounts,services,endpointslices.discovery.k8s.io,\
trafficsplits.split.smi-spec.io,traffictargets.access.smi-spec.io,httproutegroups.specs.smi-spec.io,\
tcproutes.specs.smi-spec.io,udproutes.specs.smi-spec.io";

/// The controller's index holds as many objects as the cluster has of the watched kinds, and
/// only the Pods with the injector's label (less `refused` objects that are not in effect).
fn index_matches_cluster(
    controller: &Controller,
    kubectl: &Kubectl,
    refused: usize,
) -> anyhow::Result<()> {
    kubectl.until(
        UPDATE_TIMEOUT,
        "the index holds the cluster's objects",
        |k| {
            let cluster = k.items(&["get", WATCHED, "-A"])?.len()
                + k.items(&["get", "pods", "-A", "-l", smidge_controller::labels::MESHED])?
                    .len();
            let (_, body) = controller.admin_get("/problems")?;
            let problems: serde_json::Value = serde_json::from_str(&body)?;
            let index = problems["objects"].as_u64().unwrap_or_default() as usize;
            Ok((index + refused == cluster).then_some(()))
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_follows_the_cluster_through_watches_relists_and_an_apiserver_restart(
) -> anyhow::Result<()> {
    // The control plane blocks on a runtime of its own: started off this one's threads.
    let Some(mut cluster) = off_runtime(Cluster::start)? else {
        return Ok(());
    };
    let k = &cluster.kubectl;
    k.apply(&cluster_yaml())?;
    k.apply(&split("server-split", "app-svc", "1", "0"))?;
    k.apply(&split("b-split", "app-b", "1", "1"))?;
    let controller = Controller::start_kubernetes(&cluster.controller_kubeconfig, &[])?;
    let (mut svc, view) = Subscriber::subscribe(controller.push, APP_SVC).await?;
    assert_eq!(weights(&view), [("app-b".to_string(), 1)], "{view:?}");
    assert_eq!(
        view.backends[0].endpoints[0].addr,
        "10.0.0.11:9091".parse()?
    );
    let (mut b, view) = Subscriber::subscribe(controller.push, APP_B).await?;
    assert_eq!(
        weights(&view),
        [("app-b".to_string(), 1), ("app-c".to_string(), 1)]
    );
    // Only the labelled pod is meshed: its endpoint carries its identity, the other's none.
    let identities: Vec<(&str, Option<Identity>)> = view
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.endpoints[0].identity.clone()))
        .collect();
    assert_eq!(
        identities,
        [
            ("app-b", Some(Identity::new("ns", "app-b"))),
            ("app-c", None)
        ]
    );

    // kubectl apply of a changed split reaches the subscriber.
    let applied = Instant::now();
    k.apply(&split("server-split", "app-svc", "0", "1"))?;
    let view = svc.next(UPDATE_TIMEOUT).await?;
    eprintln!("kubectl apply → new view: {:?}", applied.elapsed());
    assert_eq!(weights(&view), [("app-c".to_string(), 1)]);

    // A malformed split the schema lets through (a negative and a fractional weight: the CRD
    // says `type: number`) is reported and skipped; the watch goes on.
    k.apply(&split("bad", "app-c", "-1", "1.5"))?;
    controller.wait_for_log("TrafficSplit ns/bad", UPDATE_TIMEOUT)?;
    let (_, problems) = controller.admin_get("/problems")?;
    assert!(
        problems.contains("spec.backends[0].weight")
            && problems.contains("spec.backends[1].weight"),
        "{problems}"
    );
    k.apply(&split("server-split", "app-svc", "1", "1"))?;
    let view = svc.next(UPDATE_TIMEOUT).await?;
    assert_eq!(
        weights(&view),
        [("app-b".to_string(), 1), ("app-c".to_string(), 1)]
    );
    // The status writer says so on the refused object: Accepted=False, reason and fields.
    let (reason, message) = k.until(UPDATE_TIMEOUT * 3, "Accepted=False on ns/bad", |k| {
        Ok(split_condition(k, "bad", "Accepted")?
            .filter(|c| c.0 == "False")
            .map(|c| (c.1, c.2)))
    })?;
    assert_eq!(reason, "Invalid");
    assert!(
        message.contains("spec.backends[0].weight") && message.contains("spec.backends[1].weight"),
        "{message}"
    );

    // kubectl delete takes the split away: the root's own backend again.
    k.ok(&["-n", "ns", "delete", "trafficsplit", "server-split"])?;
    let view = svc.next(UPDATE_TIMEOUT).await?;
    let names: Vec<&str> = view.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["app-svc"], "{view:?}");
    index_matches_cluster(&controller, k, 1)?;

    // Status: a split naming a missing backend gets ResolvedRefs=False with the reason and an
    // Event (written by this replica, the Lease holder, under the RBAC manifest's rules);
    // creating the Service flips it.
    k.apply(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: ghost, namespace: ns}\n\
         spec:\n  service: app-c\n  backends:\n  - service: app-missing\n    weight: 1\n",
    )?;
    let resolved = |k: &Kubectl| -> anyhow::Result<Option<(String, String)>> {
        let out = k.ok(&["-n", "ns", "get", "trafficsplit", "ghost", "-o", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "ResolvedRefs")
            .map(|c| {
                (
                    c["status"].as_str().unwrap_or_default().to_string(),
                    c["reason"].as_str().unwrap_or_default().to_string(),
                )
            }))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((status, reason)) = resolved(k)? {
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "BackendNotFound")
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no ResolvedRefs condition on ns/ghost"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !k
        .ok(&["-n", "ns", "describe", "trafficsplit", "ghost"])?
        .contains("app-missing")
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no Event naming app-missing on ns/ghost"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    k.apply("apiVersion: v1\nkind: Service\nmetadata: {name: app-missing, namespace: ns}\nspec: {clusterIP: 10.96.0.13, ports: [{name: http, port: 9091}]}\n")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while resolved(k)?.is_none_or(|(status, _)| status != "True") {
        anyhow::ensure!(
            Instant::now() < deadline,
            "ResolvedRefs on ns/ghost did not flip"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    k.ok(&["-n", "ns", "delete", "trafficsplit", "ghost"])?;
    k.ok(&["-n", "ns", "delete", "service", "app-missing"])?;
    index_matches_cluster(&controller, k, 1)?;

    // Cut the controller off; meanwhile a split appears, one is deleted and one changes; etcd
    // is compacted past every resourceVersion the controller saw, and the API server restarts.
    cluster.relay.retarget(None);
    let k = &cluster.kubectl;
    k.apply(&split("server-split", "app-svc", "0", "1"))?;
    k.ok(&["-n", "ns", "delete", "trafficsplit", "b-split"])?;
    k.apply(&split("bad", "app-c", "1", "1"))?;
    let revision = cluster.compact_etcd()?;
    eprintln!("etcd compacted at revision {revision}");
    let down = Instant::now();
    off_runtime(|| cluster.restart())?;
    eprintln!("API server back after {:?}", down.elapsed());
    let view = svc.next(UPDATE_TIMEOUT).await?;
    assert_eq!(weights(&view), [("app-c".to_string(), 1)], "{view:?}");
    let view = b.next(UPDATE_TIMEOUT).await?;
    let names: Vec<&str> = view.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        ["app-b"],
        "b-split was deleted while the controller was away: {view:?}"
    );
    index_matches_cluster(&controller, &cluster.kubectl, 0)?;
    // The watch resumed by relisting (its resourceVersion was compacted away), not by replay.
    let log = controller.log();
    let lists = log
        .lines()
        .filter(|l| l.contains("listed") && l.contains("kind=TrafficSplit"))
        .count();
    assert!(lists >= 2, "{log}");
    let (_, problems) = controller.admin_get("/problems")?;
    assert!(
        !problems.contains("TrafficSplit ns/bad"),
        "fixed while away: {problems}"
    );
    cluster.kubectl.until(
        UPDATE_TIMEOUT * 3,
        "Accepted=True on the fixed ns/bad",
        |k| Ok(split_condition(k, "bad", "Accepted")?.filter(|c| c.0 == "True")),
    )?;
    Ok(())
}

/// `kubectl create token` for ServiceAccount `shop/web`, for `audience`, bound to pod `p`
/// (or to nothing).
fn token(k: &Kubectl, audience: &str, pod_uid: Option<&str>) -> anyhow::Result<String> {
    let mut args = vec![
        "-n",
        "shop",
        "create",
        "token",
        "web",
        "--audience",
        audience,
    ];
    if let Some(uid) = pod_uid {
        args.extend([
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "p",
            "--bound-object-uid",
            uid,
        ]);
    }
    Ok(k.ok(&args)?.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_from_a_secret_and_token_review_work_against_the_real_api_server(
) -> anyhow::Result<()> {
    let Some(cluster) = off_runtime(Cluster::start)? else {
        return Ok(());
    };
    let k = &cluster.kubectl;
    let trust = tempfile::tempdir()?;
    let material = trust.path().join("trust");
    smidge_controller::identity::generate(&material, "cluster.local")?;
    k.ok(&[
        "-n",
        "smidge-system",
        "create",
        "secret",
        "generic",
        "smidge-identity",
        &format!("--from-file={}", material.display()),
    ])?;
    // The controller reads its trust material with the RBAC-bound account (get on that one
    // Secret) and starts serving.
    let controller = Controller::start_kubernetes(
        &cluster.controller_kubeconfig,
        &[
            "--identity-secret",
            "smidge-system/smidge-identity",
            "--token-review",
        ],
    )?;
    assert!(
        controller.log().contains("controller listening"),
        "{}",
        controller.log()
    );

    // TokenReview with the same account: a projected token of smidge's audience bound to a pod
    // is accepted; one of another audience, or bound to no pod, is refused.
    k.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: shop}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\n\
         spec: {serviceAccountName: web, containers: [{name: app, image: registry.invalid/app:1}]}\n",
    )?;
    let uid = k.ok(&[
        "-n",
        "shop",
        "get",
        "pod",
        "p",
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    let audience = smidge_controller::identity::token::AUDIENCE;
    assert_eq!(audience, "smidge-identity");
    let client =
        smidge_local_cluster::kube::control_plane::client(&cluster.controller_kubeconfig).await?;
    let reviewer = smidge_controller::identity::TokenReviewer::new(client);

    let claims = reviewer
        .review(&token(k, audience, Some(&uid))?)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(
        (claims.ns.as_str(), claims.sa.as_str(), claims.pod.as_str()),
        ("shop", "web", "p")
    );
    let other = reviewer
        .review(&token(k, "identity.l5d.io", Some(&uid))?)
        .await
        .expect_err("another audience");
    assert!(other.contains("did not authenticate"), "{other}");
    let unbound = reviewer
        .review(&token(k, audience, None)?)
        .await
        .expect_err("bound to no pod");
    assert!(unbound.contains("not bound to a pod"), "{unbound}");
    Ok(())
}

/// The status Lease's holder, if there is one.
fn lease_holder(k: &Kubectl) -> anyhow::Result<Option<String>> {
    let out = k.run(&[
        "-n",
        "smidge-system",
        "get",
        "lease",
        "smidge-controller-status",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])?;
    let holder = String::from_utf8(out.stdout)?.trim().to_string();
    Ok((out.status.success() && !holder.is_empty()).then_some(holder))
}

/// `status`, `reason` and `message` of the condition `type_` on TrafficSplit `ns/name`, once
/// written.
fn split_condition(
    k: &Kubectl,
    name: &str,
    type_: &str,
) -> anyhow::Result<Option<(String, String, String)>> {
    let out = k.ok(&["-n", "ns", "get", "trafficsplit", name, "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let text = |key: &str| c[key].as_str().unwrap_or_default().to_string();
            (text("status"), text("reason"), text("message"))
        }))
}

/// The status Lease's term (the writer's default): a dead leader's claim lasts at most this long.
const LEASE_TERM: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_only_the_leader_writes_status_and_the_survivor_takes_over_keeping_its_proxies(
) -> anyhow::Result<()> {
    let Some(cluster) = off_runtime(Cluster::start)? else {
        return Ok(());
    };
    let k = &cluster.kubectl;
    k.apply(&cluster_yaml())?;
    k.apply(&split("server-split", "app-svc", "1", "0"))?;
    let ghost = "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: ghost, namespace: ns}\n\
         spec:\n  service: app-c\n  backends:\n  - service: app-missing\n    weight: 1\n";
    k.apply(ghost)?;
    let config = &cluster.controller_kubeconfig;
    let names = ["replica-a", "replica-b"];
    let mut replicas = Vec::new();
    for name in names {
        replicas.push(Controller::start_kubernetes(config, &["--pod-name", name])?);
    }
    // A protocol client on each replica.
    let mut clients = Vec::new();
    for c in &replicas {
        let (sub, view) = Subscriber::subscribe(c.push, APP_SVC).await?;
        assert_eq!(weights(&view), [("app-b".to_string(), 1)], "{view:?}");
        clients.push(sub);
    }

    // One replica holds the Lease and writes the condition; the other never writes.
    let holder = k.until(UPDATE_TIMEOUT * 3, "a status Lease holder", lease_holder)?;
    let leader = names
        .iter()
        .position(|n| *n == holder)
        .context("a replica leads")?;
    k.until(UPDATE_TIMEOUT * 3, "ResolvedRefs=False on ns/ghost", |k| {
        Ok(split_condition(k, "ghost", "ResolvedRefs")?.filter(|c| c.0 == "False"))
    })?;
    const WRITING: &str = "writing status (Lease holder)";
    let leader_log = replicas[leader].log();
    assert!(leader_log.contains(WRITING), "{leader_log}");

    // SIGKILL the leader (no Lease release): the follower takes the Lease once the term ends.
    let killed = Instant::now();
    drop(replicas.remove(leader));
    drop(clients.remove(leader));
    let (survivor, name) = (&replicas[0], names[1 - leader]);
    assert!(!survivor.log().contains(WRITING), "{}", survivor.log());
    k.until(
        LEASE_TERM + UPDATE_TIMEOUT,
        "the survivor holding the Lease",
        |k| Ok(lease_holder(k)?.filter(|h| h == name)),
    )?;
    let handed_over = killed.elapsed();
    eprintln!("leader SIGKILLed → {name} holds the Lease after {handed_over:?}");
    assert!(
        handed_over <= LEASE_TERM + Duration::from_secs(5),
        "hand-over took {handed_over:?}"
    );
    // The survivor writes: fixing the object flips its condition.
    k.apply("apiVersion: v1\nkind: Service\nmetadata: {name: app-missing, namespace: ns}\nspec: {clusterIP: 10.96.0.13, ports: [{name: http, port: 9091}]}\n")?;
    k.until(UPDATE_TIMEOUT * 3, "ResolvedRefs=True on ns/ghost", |k| {
        Ok(split_condition(k, "ghost", "ResolvedRefs")?.filter(|c| c.0 == "True"))
    })?;
    assert!(survivor.log().contains(WRITING), "{}", survivor.log());

    // The survivor's client kept its connection: its view is still there and updates arrive.
    let sub = &mut clients[0];
    k.apply(&split("server-split", "app-svc", "0", "1"))?;
    let view = sub.next(UPDATE_TIMEOUT).await?;
    assert_eq!(weights(&view), [("app-c".to_string(), 1)], "{view:?}");
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}

/// A measurement, not a check (run with `--run-ignored only`): the controller's memory with
/// 10,000 Services and 50,000 endpoints read from the real API server, and kubectl apply →
/// subscriber latency over 20 changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_memory_at_scale_and_apply_latency() -> anyhow::Result<()> {
    const SERVICES: usize = 10_000;
    const PER_SLICE: usize = 5;
    const WRITERS: usize = 4;
    // Built before anything is timed (a build under the timer counted as first-sync time).
    smidge_e2e::binary("smidge-controller", "smidge-controller")?;
    let Some(cluster) = off_runtime(Cluster::start)? else {
        return Ok(());
    };
    let k = &cluster.kubectl;
    k.apply(&cluster_yaml())?;
    k.apply(&split("server-split", "app-svc", "1", "0"))?;
    let dir = tempfile::tempdir()?;
    let mut files = vec![String::new(); WRITERS];
    for i in 0..SERVICES {
        let text = &mut files[i % WRITERS];
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: ns}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n"
        ));
        let eps: Vec<String> = (0..PER_SLICE)
            .map(|j| {
                let n = i * PER_SLICE + j;
                format!(
                    "{{addresses: [10.{}.{}.{}]}}",
                    1 + n / 65536,
                    (n / 256) % 256,
                    n % 256
                )
            })
            .collect();
        text.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{i}-1, namespace: ns, labels: {{kubernetes.io/service-name: s{i}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n",
            eps.join(", ")
        ));
    }
    let created = Instant::now();
    let writers: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let path = dir.path().join(format!("{i}.yaml"));
            std::fs::write(&path, text)?;
            Ok(std::process::Command::new(&k.program)
                .arg("--kubeconfig")
                .arg(&k.kubeconfig)
                .args(["create", "-f"])
                .arg(&path)
                .stdout(std::process::Stdio::null())
                .spawn()?)
        })
        .collect::<anyhow::Result<_>>()?;
    for mut w in writers {
        anyhow::ensure!(w.wait()?.success(), "kubectl create failed");
    }
    eprintln!(
        "created {SERVICES} Services and {} endpoints in {:?}",
        SERVICES * PER_SLICE,
        created.elapsed()
    );
    let started = Instant::now();
    let controller = Controller::start_kubernetes(&cluster.controller_kubeconfig, &[])?;
    eprintln!("controller ready after {:?}", started.elapsed());
    // The controller's own account of the first sync: each kind's list, the first apply.
    for line in controller.log().lines().filter(|l| {
        l.contains("controller listening") || l.contains("listed") || l.contains("applied changes")
    }) {
        eprintln!("  {line}");
    }
    let (_, problems) = controller.admin_get("/problems")?;
    let objects = serde_json::from_str::<serde_json::Value>(&problems)?["objects"].clone();
    let (mut svc, _) = Subscriber::subscribe(controller.push, APP_SVC).await?;
    eprintln!(
        "controller VmRSS {} KiB with {objects} objects",
        rss_kib(controller.pid())?
    );
    let mut took = Vec::new();
    for round in 0..20 {
        let (b, c) = if round % 2 == 0 {
            ("0", "1")
        } else {
            ("1", "0")
        };
        let t = Instant::now();
        k.apply(&split("server-split", "app-svc", b, c))?;
        let kubectl = t.elapsed();
        svc.next(UPDATE_TIMEOUT).await?;
        took.push((t.elapsed(), kubectl));
    }
    took.sort();
    let p = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "kubectl apply → view (with kubectl's own run): p50 {:?}, p99 {:?}",
        p(0.5),
        p(0.99)
    );
    eprintln!(
        "controller VmRSS {} KiB after the changes",
        rss_kib(controller.pid())?
    );
    Ok(())
}
