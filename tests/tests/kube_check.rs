//! `smidge check` against the real control plane (`smidge local up --kubernetes`): a fresh
//! cluster passes `--pre`; without smidge installed the CRD and existence checks fail with their
//! hints and the exit code is 1.
//!
//! Builds the control plane first when it is missing (`kube/build.sh`); `SMIDGE_SKIP_KUBE` set
//! skips instead, with a message. Extend with the installed-mesh case once the chart lands:
//! `helm install`, then `smidge check` → every line √ and exit 0.

use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;
use smidge_e2e::binary;
use smidge_e2e::kube::KubeLocal;

/// What one `smidge check` run gave.
struct Run {
    code: i32,
    stdout: String,
}

impl Run {
    /// The check lines marked `mark` (`√`, `‼`, `×`), without the mark.
    fn marked(&self, mark: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(mark))
            .map(str::trim)
            .collect()
    }

    /// The category names, in order.
    fn categories(&self) -> Vec<&str> {
        let lines: Vec<&str> = self.stdout.lines().collect();
        lines
            .windows(2)
            .filter(|w| !w[0].is_empty() && w[1] == "-".repeat(w[0].chars().count()))
            .map(|w| w[0])
            .collect()
    }
}

/// `smidge check ARGS` with the cluster's kubeconfig given as `--kubeconfig`, or through
/// `$KUBECONFIG` when `via_env`.
fn check(c: &KubeLocal, args: &[&str], via_env: bool) -> anyhow::Result<Run> {
    let mut cmd = Command::new(binary("smidge-cli", "smidge")?);
    cmd.arg("check").args(args).env_remove("KUBECONFIG");
    if via_env {
        cmd.env("KUBECONFIG", &c.kubectl.kubeconfig);
    } else {
        cmd.arg("--kubeconfig").arg(&c.kubectl.kubeconfig);
    }
    let out = cmd.output().context("running smidge check")?;
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout)?,
    };
    eprintln!(
        "smidge check {args:?} → {}\n{}{}",
        run.code,
        run.stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(run)
}

#[test]
fn check_pre_passes_on_a_fresh_cluster_and_check_without_smidge_fails_with_hints(
) -> anyhow::Result<()> {
    let Some(c) = KubeLocal::up(&[])? else {
        return Ok(());
    };
    scenario(&c).map_err(|e| anyhow::anyhow!("{e:#}\n{}", c.logs()))
}

fn scenario(c: &KubeLocal) -> anyhow::Result<()> {
    // --pre on a fresh cluster (the admin's kubeconfig, read from $KUBECONFIG): every line √.
    let pre = check(c, &["--pre", "--wait", "0"], true)?;
    if pre.code != 0 || !pre.marked("×").is_empty() || !pre.marked("‼").is_empty() {
        bail!("--pre on a fresh cluster is not all √:\n{}", pre.stdout);
    }
    assert_eq!(
        pre.categories(),
        [
            "kubernetes-api",
            "kubernetes-version",
            "pre-kubernetes-setup"
        ]
    );
    for line in [
        "can query the Kubernetes API",
        "is running the minimum Kubernetes API version",
        "control plane namespace does not already exist",
        "can create CustomResourceDefinitions",
        "can create MutatingWebhookConfigurations",
        "can create Secrets",
    ] {
        assert!(
            pre.marked("√").contains(&line),
            "no √ {line}:\n{}",
            pre.stdout
        );
    }
    assert!(pre.stdout.ends_with("Status check results are √\n"));

    // Without smidge: the CRDs are missing, which is fatal: the run stops there.
    let none = check(c, &["--wait", "0"], false)?;
    assert_eq!(none.code, 1, "{}", none.stdout);
    assert_eq!(
        none.categories(),
        ["kubernetes-api", "kubernetes-version", "smidge-crds"]
    );
    assert_eq!(none.marked("×"), ["SMI CustomResourceDefinitions exist"]);
    assert!(
        none.stdout.contains("    missing: ")
            && none.stdout.contains("trafficsplits.split.smi-spec.io")
            && none
                .stdout
                .contains("    see https://smidge.dev/checks#smidge-crds for hints"),
        "{}",
        none.stdout
    );
    assert!(none.stdout.ends_with("Status check results are ×\n"));

    // The CRDs alone (as `smidge crds | kubectl apply`): they exist and serve every version, but
    // no controller has set their caBundle, and the control plane's namespace is missing.
    let crds = Command::new(binary("smidge-cli", "smidge")?)
        .arg("crds")
        .output()?;
    c.kubectl.apply(&String::from_utf8(crds.stdout)?)?;
    let run = c.kubectl.until(
        std::time::Duration::from_secs(30),
        "the CRDs established",
        |k| {
            let out = k.run(&[
                "wait",
                "--for=condition=Established",
                "crd/trafficsplits.split.smi-spec.io",
                "--timeout=5s",
            ])?;
            Ok(out.status.success().then_some(()))
        },
    );
    run?;
    let json = check(c, &["--wait", "0", "-o", "json"], false)?;
    assert_eq!(json.code, 1);
    let report: Value = serde_json::from_str(&json.stdout)?;
    assert_eq!(report["success"], false);
    let results: Vec<(String, String, String)> = report["categories"]
        .as_array()
        .context("categories")?
        .iter()
        .flat_map(|c| {
            let name = c["categoryName"].as_str().unwrap_or_default().to_string();
            c["checks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |k| {
                    (
                        name.clone(),
                        k["description"].as_str().unwrap_or_default().to_string(),
                        k["result"].as_str().unwrap_or_default().to_string(),
                    )
                })
        })
        .collect();
    let result_of = |d: &str| {
        results
            .iter()
            .find(|r| r.1 == d)
            .map(|r| r.2.as_str())
            .unwrap_or("absent")
    };
    assert_eq!(result_of("SMI CustomResourceDefinitions exist"), "success");
    assert_eq!(
        result_of("SMI CustomResourceDefinitions serve every version"),
        "success"
    );
    assert_eq!(
        result_of("SMI CustomResourceDefinitions have their conversion webhook configured"),
        "error"
    );
    assert_eq!(result_of("control plane namespace exists"), "error");
    let last = results.last().context("no checks")?;
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("smidge-existence", "control plane namespace exists"),
        "the missing namespace is fatal: nothing runs after it"
    );
    let existence = &report["categories"]
        .as_array()
        .and_then(|c| c.last())
        .context("a last category")?["checks"][0];
    assert_eq!(
        existence["hint"], "https://smidge.dev/checks#smidge-ns",
        "{existence}"
    );
    assert!(
        existence["error"]
            .as_str()
            .is_some_and(|e| e.contains("smidge-system does not exist")),
        "{existence}"
    );
    Ok(())
}

/// The controller as the chart installs it (Deployment, Service, ServiceAccount with the RBAC
/// of controller/rbac/controller.yaml, identity Secret), applied by hand until the chart lands.
const CONTROLLER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: smidge-controller, namespace: smidge-system}
spec:
  replicas: 1
  selector: {matchLabels: {smidge.io/control-plane-component: controller}}
  template:
    metadata:
      labels: {smidge.io/control-plane-component: controller, app.kubernetes.io/name: smidge-controller}
    spec:
      serviceAccountName: smidge-controller
      terminationGracePeriodSeconds: 5
      containers:
      - name: controller
        image: ghcr.io/smidge-mesh/smidge-controller:latest
        args: [--provider=kubernetes, --listen=0.0.0.0:8086, --admin=0.0.0.0:9996,
               --webhook-listen=0.0.0.0:8443, --identity-secret=smidge-system/smidge-identity,
               --token-review, --namespace=smidge-system]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        ports:
        - {name: push, containerPort: 8086}
        - {name: webhook, containerPort: 8443}
        - {name: admin, containerPort: 9996}
        readinessProbe: {httpGet: {path: /ready, port: admin}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: smidge-controller, namespace: smidge-system}
spec:
  selector: {smidge.io/control-plane-component: controller}
  ports:
  - {name: push, port: 8086, targetPort: push}
  - {name: webhook, port: 443, targetPort: webhook}
  - {name: admin, port: 9996, targetPort: admin}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {smidge.io/inject: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: shop}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: echo, image: smidge/echo:latest}]
"#;

#[test]
fn an_installed_control_plane_passes_and_a_controller_scaled_to_zero_fails() -> anyhow::Result<()> {
    let Some(c) = KubeLocal::up(&[])? else {
        return Ok(());
    };
    installed_scenario(&c).map_err(|e| anyhow::anyhow!("{e:#}\n{}", c.logs()))
}

fn installed_scenario(c: &KubeLocal) -> anyhow::Result<()> {
    let smidge = binary("smidge-cli", "smidge")?;
    let crds = Command::new(&smidge).arg("crds").output()?;
    c.kubectl.apply(&String::from_utf8(crds.stdout)?)?;
    let rbac =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/rbac/controller.yaml");
    c.kubectl.apply(&std::fs::read_to_string(rbac)?)?;
    let identity = tempfile::tempdir()?;
    let trust = identity.path().join("trust");
    let out = Command::new(&smidge)
        .args(["identity", "gen", "--dir"])
        .arg(&trust)
        .output()?;
    if !out.status.success() {
        bail!(
            "smidge identity gen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let file = |name: &str| format!("--from-file={name}={}", trust.join(name).display());
    c.kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "smidge-identity",
        "-n",
        "smidge-system",
        &file("ca.crt"),
        &file("issuer.crt"),
        &file("issuer.key"),
        &file("token.key"),
    ])?;
    c.kubectl.apply(CONTROLLER)?;

    // Everything converges within --wait: √ everywhere, except the warnings for what this
    // hand-made install lacks (no injector webhook) and the pod the injector never saw.
    let run = check(c, &["--wait", "120"], false)?;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(
        run.categories(),
        [
            "kubernetes-api",
            "kubernetes-version",
            "smidge-crds",
            "smidge-existence",
            "smidge-identity",
            "smidge-webhook",
            "smidge-data-plane"
        ]
    );
    assert!(run.marked("×").is_empty(), "{}", run.stdout);
    assert_eq!(
        run.marked("‼"),
        [
            "injector MutatingWebhookConfiguration smidge-injector exists",
            "every pod in a namespace with injection enabled is meshed"
        ],
        "{}",
        run.stdout
    );
    for line in [
        "the controller's leader is known",
        "issuer certificate is issued by the trust anchor",
        "the API server reaches the conversion webhook",
        "webhook has a valid certificate for smidge-controller.smidge-system.svc",
        "webhook certificate is valid for at least 60 days",
        "data plane proxies are connected to the controller",
    ] {
        assert!(
            run.marked("√").contains(&line),
            "no √ {line}:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("shop/legacy"), "{}", run.stdout);

    // `smidge stat` reads Deployments, TrafficSplits and their pods: un-meshed pods are counted
    // but have no proxy to read.
    c.kubectl.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: legacy, namespace: shop}\n\
         spec: {selector: {app: none}, ports: [{port: 80}]}\n---\n\
         apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: canary, namespace: shop}\n\
         spec: {service: legacy, backends: [{service: legacy, weight: 90}, {service: gone, weight: 10}]}\n",
    )?;
    let stat = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(&smidge)
            .arg("stat")
            .args(args)
            .args(["--window", "1s", "--kubeconfig"])
            .arg(&c.kubectl.kubeconfig)
            .output()?;
        if !out.status.success() {
            bail!(
                "smidge stat {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    };
    let table = stat(&["deploy/smidge-controller", "-n", "smidge-system"])?;
    assert_eq!(
        table,
        "NAME                       MESHED   SUCCESS   RPS   LATENCY_P50   LATENCY_P99\n\
         deploy/smidge-controller   0/1      -         -     -             -\n"
    );
    let table = stat(&["ts/canary", "-n", "shop"])?;
    assert_eq!(
        table,
        "NAME     MESHED   WEIGHT   SUCCESS   RPS   LATENCY_P50   LATENCY_P99\n\
         legacy   0/0      90       -         -     -             -\n\
         gone     0/0      10       -         -     -             -\n"
    );
    let missing = Command::new(&smidge)
        .args(["stat", "deploy/nothing", "-n", "shop", "--kubeconfig"])
        .arg(&c.kubectl.kubeconfig)
        .output()?;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no Deployment shop/nothing"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // The controller scaled to 0: the existence checks fail, and the control plane's checks stop there.
    c.kubectl.ok(&[
        "scale",
        "deployment/smidge-controller",
        "-n",
        "smidge-system",
        "--replicas=0",
    ])?;
    let run = check(c, &["--wait", "0"], false)?;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(
        run.marked("×"),
        ["controller Deployment has its replicas ready"],
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("is scaled to 0")
            && run
                .stdout
                .contains("see https://smidge.dev/checks#smidge-controller for hints"),
        "{}",
        run.stdout
    );
    // The data plane is still judged from the API server: no meshed pod to miss the
    // controller, and the pod the injector never saw is named.
    assert_eq!(
        run.categories(),
        [
            "kubernetes-api",
            "kubernetes-version",
            "smidge-crds",
            "smidge-existence",
            "smidge-data-plane"
        ],
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("shop/legacy"), "{}", run.stdout);
    Ok(())
}
