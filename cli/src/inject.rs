//! `smidge inject FILE|-`: adds the proxy to manifests offline, with the same pure function the
//! admission webhook uses ([`smidge_controller::inject::inject`]). Every Pod and every pod
//! template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) is treated as if its
//! namespace were opted in, as `linkerd inject` does: the template gets `smidge.io/inject:
//! enabled` too, so the webhook leaves it alone later. Other documents pass through as written.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use smidge_controller::inject::{self, Settings};
use smidge_controller::labels::{INJECT, INJECT_ENABLED};
use smidge_controller::manifest::split_documents;

#[derive(clap::Args)]
pub struct InjectArgs {
    /// A file of (multi-document) YAML, or `-` for stdin.
    pub file: String,
    /// The injector's settings (inject.json of ConfigMap smidge-config); default: read from the
    /// cluster.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The trust anchor (PEM); default: ConfigMap smidge-trust-anchor (key ca.crt) in the
    /// cluster.
    #[arg(long)]
    pub trust_anchor: Option<PathBuf>,
    /// Where smidge is installed (for the ConfigMaps).
    #[arg(long, default_value = "smidge-system")]
    pub control_plane_namespace: String,
    #[command(flatten)]
    pub kube: crate::kube::KubeArgs,
}

/// Where a kind keeps its pod template (JSON pointer to the object with metadata and spec).
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// One document's result: its text out and the report line.
fn inject_document(
    text: &str,
    settings: &Settings,
    anchor_pem: &str,
) -> anyhow::Result<(String, Option<String>)> {
    let value: Value = match serde_yaml_ng::from_str::<Option<Value>>(text).context("not YAML")? {
        Some(v) => v,
        None => return Ok((text.to_string(), None)),
    };
    let kind = value["kind"].as_str().unwrap_or("").to_string();
    let name = value["metadata"]["name"]
        .as_str()
        .or(value["metadata"]["generateName"].as_str())
        .unwrap_or("(unnamed)");
    let what = format!("{}/{name}", kind.to_lowercase());
    let Some(pointer) = template_pointer(&kind) else {
        return Ok((text.to_string(), None));
    };
    let Some(template) = value.pointer(pointer) else {
        return Ok((
            text.to_string(),
            Some(format!("{what} skipped: no pod template")),
        ));
    };
    let meta: ObjectMeta = match template.get("metadata") {
        None | Some(Value::Null) => ObjectMeta::default(),
        Some(m) => serde_json::from_value(m.clone())
            .with_context(|| format!("{what}: metadata of the pod template"))?,
    };
    let Some(spec_value) = template.get("spec") else {
        return Ok((
            text.to_string(),
            Some(format!("{what} skipped: the pod template has no spec")),
        ));
    };
    let spec: PodSpec = serde_json::from_value(spec_value.clone())
        .with_context(|| format!("{what}: spec of the pod template"))?;
    let namespace = ObjectMeta {
        labels: Some([(INJECT.to_string(), INJECT_ENABLED.to_string())].into()),
        ..ObjectMeta::default()
    };
    match inject::inject(&meta, &spec, &namespace, settings, anchor_pem) {
        Ok((mut meta, spec)) => {
            meta.annotations
                .get_or_insert_with(Default::default)
                .entry(INJECT.to_string())
                .or_insert_with(|| INJECT_ENABLED.to_string());
            let mut out = value.clone();
            let slot = out.pointer_mut(pointer).context("the template")?;
            slot["metadata"] = serde_json::to_value(&meta)?;
            slot["spec"] = serde_json::to_value(&spec)?;
            Ok((
                serde_yaml_ng::to_string(&out)?,
                Some(format!("{what} injected")),
            ))
        }
        Err(skip) => Ok((text.to_string(), Some(format!("{what} skipped: {skip}")))),
    }
}

/// Injects every document of `text`: the YAML out and one report line per workload.
pub fn inject_text(
    text: &str,
    settings: &Settings,
    anchor_pem: &str,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut report = Vec::new();
    for (position, doc) in split_documents(text) {
        if doc.trim().is_empty() {
            continue;
        }
        let (text, line) = inject_document(&doc, settings, anchor_pem)
            .with_context(|| format!("document {} (line {})", position.document, position.line))?;
        out.push(text);
        report.extend(line);
    }
    Ok((out.join("---\n"), report))
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
    }
}

fn read_file(path: &Path, flag: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))
}

/// The ConfigMaps' values from the cluster: (inject.json, ca.crt), each only if asked for.
async fn from_cluster(
    args: &InjectArgs,
    want_config: bool,
    want_anchor: bool,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let client =
        args.kube.client().await.context(
            "connecting to the cluster (give --config and --trust-anchor to work offline)",
        )?;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, &args.control_plane_namespace);
    let ns = &args.control_plane_namespace;
    let key = |cm: &str, key: &str| {
        let api = api.clone();
        let (cm, key) = (cm.to_string(), key.to_string());
        async move {
            let map = api
                .get(&cm)
                .await
                .with_context(|| format!("reading ConfigMap {ns}/{cm} (is smidge installed there? --control-plane-namespace)"))?;
            map.data
                .and_then(|mut d| d.remove(&key))
                .with_context(|| format!("ConfigMap {ns}/{cm} has no key {key}"))
        }
    };
    let config = if want_config {
        Some(key("smidge-config", "inject.json").await?)
    } else {
        None
    };
    let anchor = if want_anchor {
        Some(key("smidge-trust-anchor", "ca.crt").await?)
    } else {
        None
    };
    Ok((config, anchor))
}

/// Runs the command: the YAML on stdout, the report on stderr.
pub fn run(args: InjectArgs) -> anyhow::Result<std::process::ExitCode> {
    let input = read_input(&args.file)?;
    let mut config = args
        .config
        .as_deref()
        .map(|p| read_file(p, "--config"))
        .transpose()?;
    let mut anchor = args
        .trust_anchor
        .as_deref()
        .map(|p| read_file(p, "--trust-anchor"))
        .transpose()?;
    if config.is_none() || anchor.is_none() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (c, a) = rt.block_on(from_cluster(&args, config.is_none(), anchor.is_none()))?;
        config = config.or(c);
        anchor = anchor.or(a);
    }
    let (Some(config), Some(anchor)) = (config, anchor) else {
        bail!("no settings or trust anchor");
    };
    let (settings, unknown) =
        inject::parse(&config).map_err(|e| anyhow::anyhow!("the injector settings: {e}"))?;
    for field in unknown {
        eprintln!("warning: unknown injector setting {field} ignored");
    }
    if !anchor.contains("-----BEGIN CERTIFICATE-----") {
        bail!("the trust anchor is not a PEM certificate");
    }
    let (out, report) = inject_text(&input, &settings, &anchor)?;
    print!("{out}");
    for line in report {
        eprintln!("{line}");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: smidge/echo:1}]
";

    fn run_text(text: &str) -> (Vec<Value>, Vec<String>) {
        let (out, report) = inject_text(text, &Settings::default(), "PEM").expect("inject");
        let docs = split_documents(&out)
            .into_iter()
            .map(|(_, d)| serde_yaml_ng::from_str(&d).expect("yaml"))
            .collect();
        (docs, report)
    }

    #[test]
    fn every_workload_kind_gets_its_template_injected_and_others_pass_through() {
        let pod =
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app}]\n";
        let cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers: [{name: app}]\n";
        let service =
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n";
        let mut text = String::new();
        for kind in [
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
        ] {
            text.push_str(&DEPLOYMENT.replace("kind: Deployment", &format!("kind: {kind}")));
            text.push_str("---\n");
        }
        text.push_str(&format!("{pod}---\n{cron}---\n{service}"));
        let (docs, report) = run_text(&text);
        assert_eq!(docs.len(), 8);
        for (doc, pointer) in docs.iter().zip(
            ["/spec/template"; 5]
                .into_iter()
                .chain(["", "/spec/jobTemplate/spec/template"]),
        ) {
            let t = doc.pointer(pointer).expect("template");
            let inits: Vec<&str> = t["spec"]["initContainers"]
                .as_array()
                .expect("inits")
                .iter()
                .filter_map(|c| c["name"].as_str())
                .collect();
            assert_eq!(inits, ["smidge-init", "smidge-proxy"], "{doc}");
            assert_eq!(t["metadata"]["annotations"][INJECT], INJECT_ENABLED);
            assert_eq!(
                t["metadata"]["labels"][smidge_controller::labels::MESHED],
                "smidge-system"
            );
        }
        assert_eq!(
            docs[7],
            serde_yaml_ng::from_str::<Value>(service).expect("yaml"),
            "unchanged"
        );
        assert_eq!(report.len(), 7, "{report:?}");
        assert_eq!(report[0], "deployment/web injected");
        assert_eq!(report[6], "cronjob/c injected");
    }

    #[test]
    fn opted_out_host_network_and_injected_templates_are_reported_and_left_as_written() {
        let out_opt = DEPLOYMENT.replace(
            "metadata: {labels: {app: web}}",
            "metadata: {labels: {app: web}, annotations: {smidge.io/inject: disabled}}",
        );
        let host = DEPLOYMENT.replace(
            "      containers:",
            "      hostNetwork: true\n      containers:",
        );
        let (once, _) = inject_text(DEPLOYMENT, &Settings::default(), "PEM").expect("inject");
        let text = format!("{out_opt}---\n{host}---\n{once}");
        let (out, report) = inject_text(&text, &Settings::default(), "PEM").expect("inject");
        assert_eq!(
            report[0],
            "deployment/web skipped: pod has the annotation \"smidge.io/inject: disabled\""
        );
        assert_eq!(report[1], "deployment/web skipped: hostNetwork is enabled");
        assert!(
            report[2].starts_with("deployment/web skipped: pod has a sidecar injected already"),
            "{report:?}"
        );
        assert_eq!(out, text, "all three as written");
    }

    #[test]
    fn a_bad_document_is_named() {
        let e = format!(
            "{:#}",
            inject_text(
                "kind: Pod\nspec: {containers: 3}\n",
                &Settings::default(),
                "PEM"
            )
            .expect_err("bad")
        );
        assert!(e.contains("document 1"), "{e}");
        assert!(e.contains("pod/(unnamed): spec of the pod template"), "{e}");
    }
}
