//! The user's story on the real control plane, everything started for real: `helm install` of
//! `charts/smidge`, `smidge check`, a namespace labelled for injection whose Deployments the API
//! server's call to the injector meshes, mTLS on the wire between them, a TrafficSplit applied
//! with kubectl that shifts their traffic and `smidge stat` that shows it, `helm upgrade` without a
//! failed request, the controller scaled to 0 (`smidge check` fails, new pods still start
//! un-meshed and are named), and `helm uninstall` (everything but the CRDs goes).
//!
//! Builds the control plane and fetches helm first when missing; `SMIDGE_SKIP_KUBE` set skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use smidge_e2e::kube::{helm, KubeLocal, Kubectl};
use smidge_e2e::wire::capture_of;

const NS: &str = "smidge-system";

/// How long pods and rollouts may take on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(180);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn smidge() -> anyhow::Result<PathBuf> {
    smidge_e2e::binary("smidge-cli", "smidge")
}

/// The apps: `web` (Service) over `web-v1` and `web-v2` (echo Deployments answering with their
/// names) in `shop` (meshed callers only), and the `client` sample app in `shop-client`, which
/// the API server's pod proxy (not meshed) reaches.
fn apps() -> String {
    let mut docs = vec![r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {smidge.io/inject: enabled}
  annotations: {smidge.io/default-policy: allow-meshed}
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop-client
  labels: {smidge.io/inject: enabled}
  annotations: {smidge.io/default-policy: allow-all}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: shop-client}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: shop-client}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      serviceAccountName: client
      containers:
      - name: client
        image: ghcr.io/smidge-mesh/sample-app
        env: [{name: SERVICE_NAME, value: client}]
        ports: [{name: http, containerPort: 9091}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#
    .to_string()];
    for v in ["v1", "v2"] {
        docs.push(format!(
            r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: web-{v}, namespace: shop}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-{v}, namespace: shop}}
spec:
  selector: {{app: web, version: {v}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web-{v}, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web, version: {v}}}}}
  template:
    metadata: {{labels: {{app: web, version: {v}}}}}
    spec:
      serviceAccountName: web-{v}
      containers:
      - name: web
        image: smidge/echo
        env: [{{name: SERVICE_NAME, value: web-{v}}}]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
"#
        ));
    }
    docs.join("\n---\n")
}

const SPLIT_TO_V2: &str = r#"
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: web, namespace: shop}
spec:
  service: web
  backends:
  - {service: web-v1, weight: 0}
  - {service: web-v2, weight: 100}
"#;

/// A cluster with smidge installed by the chart.
struct Installed {
    cluster: KubeLocal,
    helm: PathBuf,
    smidge: PathBuf,
}

impl Installed {
    fn start() -> anyhow::Result<Option<Installed>> {
        let Some(helm) = helm()? else {
            return Ok(None);
        };
        let Some(cluster) = KubeLocal::up(&[])? else {
            return Ok(None);
        };
        let me = Installed {
            cluster,
            helm,
            smidge: smidge()?,
        };
        me.helm(&[
            "install",
            "smidge",
            &workspace().join("charts/smidge").display().to_string(),
            "-n",
            NS,
            "--create-namespace",
            "--wait",
            "--timeout",
            "5m",
        ])?;
        Ok(Some(me))
    }

    fn kubectl(&self) -> &Kubectl {
        &self.cluster.kubectl
    }

    fn kubeconfig(&self) -> String {
        self.kubectl().kubeconfig.display().to_string()
    }

    fn helm(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.helm)
            .args(args)
            .args(["--kubeconfig", &self.kubeconfig()])
            .output()
            .context("running helm")?;
        if !out.status.success() {
            bail!(
                "helm {args:?} failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.diagnostics()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `smidge ARGS --kubeconfig …`: its output, whatever its exit code.
    fn smidge(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(&self.smidge)
            .args(args)
            .args(["--kubeconfig", &self.kubeconfig()])
            .output()
            .context("running smidge")
    }

    /// The controller's pods, nodes' logs and events, for failure messages.
    fn diagnostics(&self) -> String {
        let k = self.kubectl();
        let get = |args: &[&str]| match k.run(args) {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("{e:#}"),
        };
        format!(
            "--- pods\n{}\n--- events\n{}\n--- controller log\n{}\n{}",
            get(&["get", "pods", "-A", "-o", "wide"]),
            get(&["get", "events", "-A"]),
            get(&[
                "logs",
                "-n",
                NS,
                "-l",
                "app.kubernetes.io/name=smidge-controller",
                "--tail",
                "100"
            ]),
            self.cluster.logs()
        )
    }

    /// Waits for every pod of the `app=LABEL` selector in `ns` to be Ready, `count` of them.
    fn ready_pods(&self, ns: &str, selector: &str, count: usize) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let pods = self
                .kubectl()
                .items(&["get", "pods", "-n", ns, "-l", selector, "-o", "json"])?;
            let ready: Vec<Value> = pods
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter(|p| {
                    p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .cloned()
                .collect();
            let live = pods
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .count();
            if ready.len() == count && live == count {
                return Ok(ready);
            }
            if Instant::now() > deadline {
                bail!(
                    "{ns}/{selector}: {} of {count} pods ready\n{}",
                    ready.len(),
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A call made by the client's sample app (`POST /call` through the API server's pod proxy):
    /// the callee's status and body.
    fn call(&self, client_pod: &str, url: &str) -> anyhow::Result<(u16, String)> {
        call(self.kubectl(), client_pod, url)
    }

    fn node_netns(&self) -> anyhow::Result<String> {
        let prefix = format!("smg-kube-{}-", self.cluster.daemon_pid()?);
        smidge_local_cluster::netns::netns_with_prefix(&prefix)
            .into_iter()
            .min_by_key(String::len)
            .context("the node's network namespace")
    }
}

fn call(kubectl: &Kubectl, client_pod: &str, url: &str) -> anyhow::Result<(u16, String)> {
    let body = json!({"url": url, "method": "GET"}).to_string();
    let mut child = Command::new(&kubectl.program)
        .arg("--kubeconfig")
        .arg(&kubectl.kubeconfig)
        .args([
            "create",
            "--raw",
            &format!("/api/v1/namespaces/shop-client/pods/{client_pod}:9091/proxy/call"),
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    use std::io::Write as _;
    child
        .stdin
        .take()
        .context("kubectl's stdin")?
        .write_all(body.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "calling {url} from {client_pod}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // kubectl prints the body of a 2xx answer; the sample app relays the callee's status in it.
    Ok((200, String::from_utf8(out.stdout)?))
}

#[test]
fn helm_install_check_inject_mtls_split_stat_upgrade_and_uninstall() -> anyhow::Result<()> {
    let Some(mesh) = Installed::start()? else {
        return Ok(());
    };
    // The controller runs through the node agent, as its ServiceAccount, with the chart's RBAC.
    let controller = mesh.ready_pods(NS, "app.kubernetes.io/name=smidge-controller", 1)?;
    assert_eq!(
        controller[0]["spec"]["serviceAccountName"], "smidge-controller",
        "{}",
        controller[0]
    );

    // smidge check: every check √, exit 0.
    let check = mesh.smidge(&["check", "--wait", "120"])?;
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success() && !text.contains('×') && !text.contains('‼'),
        "smidge check:\n{text}{}\n{}",
        String::from_utf8_lossy(&check.stderr),
        mesh.diagnostics()
    );

    // Deployments in labelled namespaces get their proxies from the API server's call.
    mesh.kubectl().apply(&apps())?;
    let web = mesh.ready_pods("shop", "app=web", 2)?;
    let client = mesh.ready_pods("shop-client", "app=client", 1)?;
    for pod in web.iter().chain(&client) {
        let sidecars: Vec<&str> = pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(sidecars, ["smidge-init", "smidge-proxy"], "{pod}");
        assert_eq!(pod["metadata"]["labels"]["smidge.io/control-plane-ns"], NS);
    }
    let client = client[0]["metadata"]["name"]
        .as_str()
        .context("client pod name")?
        .to_string();

    // Meshed traffic is TLS on the node's bridge: the path never crosses in clear between the
    // client and the web pods (the test's own call reaches the client through the API server,
    // in clear, and is not part of the mesh).
    let web_ips = web
        .iter()
        .map(|p| {
            p["status"]["podIP"]
                .as_str()
                .context("a web pod's IP")?
                .parse()
                .context("a web pod's IP")
        })
        .collect::<anyhow::Result<Vec<std::net::Ipv4Addr>>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let sniffer = capture_of(mesh.node_netns()?, stop.clone(), web_ips);
    let mut backends = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..20 {
        let (_, body) = mesh.call(&client, "http://web.shop.svc.cluster.local/a-secret-path")?;
        *backends.entry(body.trim().to_string()).or_default() += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let wire = sniffer
        .join()
        .map_err(|_| anyhow::anyhow!("capture panicked"))??;
    let contains = |n: &[u8]| wire.windows(n.len()).any(|w| w == n);
    assert!(
        contains(b"serviceaccount.identity"),
        "captured {} bytes without the mesh handshake",
        wire.len()
    );
    assert!(
        !contains(b"a-secret-path"),
        "the request path crossed in clear"
    );

    // A TrafficSplit applied with kubectl shifts the traffic.
    mesh.kubectl().apply(SPLIT_TO_V2)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = mesh.call(&client, "http://web.shop.svc.cluster.local/")?;
        if body.contains("web-v2") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the split did not take: {body}\n{}", mesh.diagnostics());
        }
    }
    for _ in 0..20 {
        let (_, body) = mesh.call(&client, "http://web.shop.svc.cluster.local/")?;
        assert!(body.contains("web-v2"), "{body}");
    }

    // smidge stat shows the split while traffic flows.
    let calling = Arc::new(AtomicBool::new(true));
    let (kubectl, pod, flag) = (
        Kubectl {
            program: mesh.kubectl().program.clone(),
            kubeconfig: mesh.kubectl().kubeconfig.clone(),
        },
        client.clone(),
        calling.clone(),
    );
    let failures = Arc::new(AtomicUsize::new(0));
    let failed = failures.clone();
    let caller = std::thread::spawn(move || {
        let mut n = 0usize;
        while flag.load(Ordering::Relaxed) {
            if call(&kubectl, &pod, "http://web.shop.svc.cluster.local/").is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            n += 1;
        }
        n
    });
    let stat = mesh.smidge(&["stat", "trafficsplit/web", "-n", "shop", "--window", "5s"])?;
    let table = String::from_utf8_lossy(&stat.stdout).into_owned();
    assert!(
        stat.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&stat.stderr)
    );
    assert!(table.contains("web-v2"), "{table}");

    // helm upgrade with changed values rolls the controller; no request between meshed pods fails.
    mesh.helm(&[
        "upgrade",
        "smidge",
        &workspace().join("charts/smidge").display().to_string(),
        "-n",
        NS,
        "--reuse-values",
        "--set",
        "controller.logLevel=debug",
        "--wait",
        "--timeout",
        "5m",
    ])?;
    mesh.ready_pods(NS, "app.kubernetes.io/name=smidge-controller", 1)?;
    calling.store(false, Ordering::Relaxed);
    let made = caller
        .join()
        .map_err(|_| anyhow::anyhow!("caller panicked"))?;
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "{made} calls across the upgrade\n{}",
        mesh.diagnostics()
    );

    // The controller scaled to 0: check fails and exits 1; a new pod still starts, un-meshed.
    mesh.kubectl().ok(&[
        "scale",
        "-n",
        NS,
        "deployment/smidge-controller",
        "--replicas=0",
    ])?;
    mesh.kubectl().ok(&[
        "wait",
        "-n",
        NS,
        "--for=delete",
        "pod",
        "-l",
        "app.kubernetes.io/name=smidge-controller",
        "--timeout=120s",
    ])?;
    mesh.kubectl().apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: late, namespace: shop}
spec:
  containers: [{name: late, image: smidge/echo}]
"#,
    )?;
    mesh.kubectl().ok(&[
        "wait",
        "-n",
        "shop",
        "--for=condition=Ready",
        "pod/late",
        "--timeout=120s",
    ])?;
    let check = mesh.smidge(&["check", "--wait", "0"])?;
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(text.contains('×'), "{text}");
    assert!(
        text.contains("shop/late"),
        "the un-meshed pod is named:\n{text}"
    );

    // helm uninstall: everything but the CRDs goes.
    mesh.kubectl()
        .ok(&["delete", "namespace", "shop", "shop-client", "--wait=false"])?;
    mesh.helm(&["uninstall", "smidge", "-n", NS, "--wait"])?;
    let left = mesh.kubectl().ok(&[
        "get",
        "all,configmaps,secrets,serviceaccounts,roles,rolebindings,leases",
        "-n",
        NS,
        "-o",
        "name",
    ])?;
    let left: Vec<&str> = left
        .lines()
        .filter(|l| !l.contains("kube-root-ca.crt") && !l.ends_with("/default"))
        .collect();
    assert!(left.is_empty(), "left in {NS}: {left:?}");
    for kind in [
        "clusterroles",
        "clusterrolebindings",
        "mutatingwebhookconfigurations",
    ] {
        let names = mesh.kubectl().ok(&["get", kind, "-o", "name"])?;
        assert!(!names.contains("smidge"), "{kind} left: {names}");
    }
    let crds = mesh.kubectl().ok(&["get", "crds", "-o", "name"])?;
    assert!(crds.contains("trafficsplits.split.smi-spec.io"), "{crds}");
    Ok(())
}

#[test]
fn the_conformance_suite_passes_against_smidge_installed_by_the_chart() -> anyhow::Result<()> {
    let Some(mesh) = Installed::start()? else {
        return Ok(());
    };
    let runner = smidge_e2e::binary("smidge-conformance", "smidge-conformance")?;
    let dir = tempfile::tempdir()?;
    let out = Command::new(runner)
        .args(["run", "--target", "kube", "--report"])
        .arg(dir.path().join("report.json"))
        .arg(workspace().join("conformance/cases"))
        .env("KUBECONFIG", mesh.kubeconfig())
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{table}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        mesh.diagnostics()
    );
    assert!(table.contains("24/24 steps passed"), "{table}");
    Ok(())
}
