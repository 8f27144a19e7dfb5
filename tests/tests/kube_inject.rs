//! The injector against the real API server: a MutatingWebhookConfiguration points at smidge's
//! webhook (run in this test on 127.0.0.1, by `url` as envtest does; its caBundle set by the
//! controller's `ensure_injector_ca_bundle`). A Deployment in a labelled namespace gets its pods
//! stored with the proxy and the meshed label, and an `Injected` Event on the Deployment; pods in
//! an unlabelled namespace, hostNetwork pods and opted-out pods are stored as sent; and
//! `smidge inject` of the same Deployment, applied in an unlabelled namespace, stores a pod
//! whose injected containers and volumes equal the webhook's (both after the API server's
//! defaulting).

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use smidge_controller::identity::{generate, Authority, Trust};
use smidge_controller::inject::Settings;
use smidge_controller::labels::{INJECT, MESHED};
use smidge_controller::webhook;
use smidge_e2e::kube::{binaries, Kubectl};
use smidge_local_cluster::kube::{control_plane, ControlPlane, Options};

/// How long the API server and the controllers get to make a change happen.
const SETTLE: Duration = Duration::from_secs(60);

fn deployment(namespace: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: smidge/echo:latest
        ports: [{{name: http, containerPort: 8080}}]
"#
    )
}

fn pod(namespace: &str, name: &str, annotations: &str, host_network: bool) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, annotations: {{{annotations}}}}}
spec:
  hostNetwork: {host_network}
  containers: [{{name: app, image: smidge/echo:latest}}]
"#
    )
}

/// The names of a pod's init containers and containers.
fn containers(pod: &Value) -> (Vec<String>, Vec<String>) {
    let names = |key: &str| {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    (names("initContainers"), names("containers"))
}

/// The first pod of app=web in `namespace`.
fn web_pod(k: &Kubectl, namespace: &str) -> anyhow::Result<Option<Value>> {
    Ok(k.items(&["get", "pods", "-n", namespace, "-l", "app=web"])?
        .into_iter()
        .next())
}

/// The injected parts of a stored pod, without what differs between any two pods: the
/// ServiceAccount token volume's random name and its mounts.
fn injected_parts(pod: &Value) -> Value {
    let strip_mounts = |c: &Value| {
        let mut c = c.clone();
        if let Some(m) = c["volumeMounts"].as_array_mut() {
            m.retain(|m| {
                !m["name"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("kube-api-access-")
            });
        }
        c
    };
    let list = |key: &str| -> Vec<Value> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .map(strip_mounts)
            .collect()
    };
    let volumes: Vec<Value> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| {
            !v["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("kube-api-access-")
        })
        .cloned()
        .collect();
    json!({"initContainers": list("initContainers"), "containers": list("containers"),
        "volumes": volumes, "meshed": pod["metadata"]["labels"][MESHED]})
}

#[test]
fn the_api_server_injects_opted_in_pods_through_the_webhook_and_smidge_inject_agrees(
) -> anyhow::Result<()> {
    let Some(bin) = binaries()? else {
        return Ok(());
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let smidge = smidge_e2e::binary("smidge-cli", "smidge")?;
    let state = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let plane = ControlPlane::start(&Options::new(state.path(), &bin))?;
    let k = Kubectl {
        program: bin.join("kubectl"),
        kubeconfig: plane.kubeconfig(),
    };

    // The webhook, its certificate from the identity CA for the address the API server dials.
    let trust_dir = work.path().join("trust");
    std::fs::create_dir_all(&trust_dir)?;
    generate(&trust_dir, "cluster.local")?;
    let authority = Authority::new(
        Trust::load(&trust_dir)?,
        "cluster.local",
        Duration::from_secs(3600),
    )?;
    let tls = webhook::serving_cert(&authority, &["127.0.0.1".to_string()])?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(control_plane::client(&plane.kubeconfig()))?;
    let settings = Settings::default();
    let injector = webhook::inject::Injector::new(
        settings.clone(),
        authority.anchor_pem.clone(),
        Some(client.clone()),
        Some("test".into()),
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    let _server = rt.spawn(webhook::serve_with(
        listener,
        tls,
        Some(std::sync::Arc::new(injector)),
    ));

    // The chart's webhook configuration, by url, without a caBundle: the controller sets it.
    k.apply(&format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: smidge-injector}}
webhooks:
- name: inject.smidge.io
  clientConfig: {{url: "https://127.0.0.1:{port}/inject"}}
  rules: [{{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods], scope: Namespaced}}]
  objectSelector: {{matchExpressions: [{{key: smidge.io/control-plane-component, operator: DoesNotExist}}]}}
  namespaceSelector: {{matchExpressions: [{{key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system]}}, {{key: config.smidge.io/admission-webhooks, operator: NotIn, values: [disabled]}}]}}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 10
"#
    ))?;
    assert!(rt.block_on(webhook::ca_bundle::ensure_injector_ca_bundle(
        client.clone(),
        &authority.anchor_pem
    ))?);
    assert!(
        !rt.block_on(webhook::ca_bundle::ensure_injector_ca_bundle(
            client.clone(),
            &authority.anchor_pem
        ))?,
        "current: no second write"
    );

    k.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: meshed, labels: {{{INJECT}: enabled}}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: plain}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: offline}}\n"
    ))?;
    // The API server trusts the new caBundle after a moment: until then creation fails (Fail).
    k.until(SETTLE, "a first pod admitted through the webhook", |k| {
        let _ = k.run(&[
            "delete",
            "pod",
            "-n",
            "meshed",
            "first",
            "--ignore-not-found",
        ]);
        k.apply(&pod("meshed", "first", "", false))?;
        let stored = k.json(&["get", "pod", "-n", "meshed", "first"])?;
        Ok(
            (containers(&stored).0.first().map(String::as_str) == Some("smidge-init"))
                .then_some(()),
        )
    })?;

    // A Deployment in the labelled namespace: its pod is stored injected.
    k.apply(&deployment("meshed"))?;
    let meshed = k.until(SETTLE, "the meshed web pod", |k| web_pod(k, "meshed"))?;
    let (inits, apps) = containers(&meshed);
    assert_eq!(inits, ["smidge-init", "smidge-proxy"], "{meshed}");
    assert_eq!(apps, ["web"]);
    assert_eq!(meshed["metadata"]["labels"][MESHED], "smidge-system");
    assert_eq!(
        meshed["spec"]["initContainers"][1]["restartPolicy"],
        "Always"
    );
    assert_eq!(
        meshed["spec"]["initContainers"][1]["env"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == "SMIDGE_TRUST_ANCHORS"))
            .map(|e| e["value"].clone()),
        Some(Value::String(authority.anchor_pem.clone()))
    );
    // The Event names the Deployment, not the ReplicaSet or the pod.
    k.until(SETTLE, "an Injected Event on the Deployment", |k| {
        let events = k.items(&["get", "events.v1.events.k8s.io", "-n", "meshed"])?;
        Ok(events
            .iter()
            .any(|e| {
                e["reason"] == "Injected"
                    && e["regarding"]["kind"] == "Deployment"
                    && e["regarding"]["name"] == "web"
            })
            .then_some(()))
    })?;

    // Left alone: an unlabelled namespace, hostNetwork, an opted-out pod.
    k.apply(&pod("plain", "unlabelled", "", false))?;
    k.apply(&pod("meshed", "host", "", true))?;
    k.apply(&pod(
        "meshed",
        "opted-out",
        &format!("{INJECT}: disabled"),
        false,
    ))?;
    for (ns, name) in [
        ("plain", "unlabelled"),
        ("meshed", "host"),
        ("meshed", "opted-out"),
    ] {
        let stored = k.json(&["get", "pod", "-n", ns, name])?;
        assert_eq!(
            containers(&stored),
            (vec![], vec!["app".to_string()]),
            "{ns}/{name}: {stored}"
        );
        assert!(
            stored["metadata"]["labels"][MESHED].is_null(),
            "{ns}/{name}"
        );
    }
    let skipped = k.until(
        SETTLE,
        "an InjectionSkipped Event for the opted-out pod",
        |k| {
            let events = k.items(&["get", "events.v1.events.k8s.io", "-n", "meshed"])?;
            Ok(events.into_iter().find(|e| {
                e["reason"] == "InjectionSkipped" && e["regarding"]["name"] == "opted-out"
            }))
        },
    )?;
    assert!(
        skipped["note"]
            .as_str()
            .is_some_and(|n| n.contains("disabled")),
        "{skipped}"
    );

    // smidge inject of the same Deployment, applied where the webhook would not inject.
    let config = work.path().join("inject.json");
    std::fs::write(&config, serde_json::to_string(&settings)?)?;
    let anchor = trust_dir.join(smidge_controller::identity::trust::ANCHOR_FILE);
    let input = work.path().join("web.yaml");
    std::fs::write(&input, deployment("offline"))?;
    let out = std::process::Command::new(&smidge)
        .arg("inject")
        .arg(&input)
        .arg("--config")
        .arg(&config)
        .arg("--trust-anchor")
        .arg(&anchor)
        .output()
        .context("running smidge inject")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.trim(), "deployment/web injected");
    k.apply(&String::from_utf8(out.stdout)?)?;
    let offline = k.until(SETTLE, "the offline-injected web pod", |k| {
        web_pod(k, "offline")
    })?;
    assert_eq!(
        injected_parts(&offline),
        injected_parts(&meshed),
        "smidge inject and the webhook differ"
    );
    // The webhook saw the already-injected pod and left it alone.
    assert_eq!(containers(&offline).0, ["smidge-init", "smidge-proxy"]);

    plane.stop()
}
