//! The local cluster as a target: object operations go to its daemon; calls are made by
//! `smidge local exec` in the harness pod.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;
use smidge_local_cluster::daemon::{self, Request};

use super::{Target, HARNESS_NAMESPACE};
use crate::case::ObjectRef;

/// The local cluster, started for the run (or an existing one in `state_dir`).
pub struct Local {
    smidge: PathBuf,
    sample_app: PathBuf,
    state: PathBuf,
    harness_pod: String,
    /// Set when this run started the cluster and should stop it.
    owned: bool,
}

/// The harness: a sample app with its own ServiceAccount, meshed.
const HARNESS: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: smidge-conformance, labels: {smidge.io/inject: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: harness, namespace: smidge-conformance}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: harness, namespace: smidge-conformance}
spec:
  selector: {matchLabels: {app: harness}}
  template:
    metadata: {labels: {app: harness}}
    spec:
      serviceAccountName: harness
      containers:
      - name: harness
        image: layer5/learn-layer5:latest
        env: [{name: SERVICE_NAME, value: harness}]
        ports: [{name: http, containerPort: 9091}]
"#;

impl Local {
    /// Starts a local cluster in `state` (unless one runs there) and the harness in it. The
    /// `smidge` and `smidge-sample-app` programs are looked up in `programs`.
    pub fn start(programs: &Path, state: &Path) -> anyhow::Result<Local> {
        let smidge = programs.join("smidge");
        let sample_app = programs.join("smidge-sample-app");
        for p in [&smidge, &sample_app] {
            if !p.exists() {
                bail!(
                    "{} is missing: build every binary first (cargo build --bins)",
                    p.display()
                );
            }
        }
        let owned = daemon::running(state).is_none();
        if owned {
            let out = Command::new(&smidge)
                .arg("local")
                .arg("--state-dir")
                .arg(state)
                .arg("up")
                .output()
                .context("running smidge local up")?;
            if !out.status.success() {
                bail!(
                    "smidge local up failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let mut local = Local {
            smidge,
            sample_app,
            state: state.to_path_buf(),
            harness_pod: String::new(),
            owned,
        };
        let r = local.request(&Request::Apply {
            files: vec![("harness".into(), HARNESS.into())],
        })?;
        if !r.ok {
            bail!("deploying the harness: {}", r.out);
        }
        let r = local.request(&Request::Wait { timeout_secs: 60 })?;
        if !r.ok {
            bail!("the harness did not become ready: {}", r.out);
        }
        let pods = local.request(&Request::Get {
            kind: "pods".into(),
            name: None,
            namespace: Some(HARNESS_NAMESPACE.into()),
            yaml: true,
        })?;
        local.harness_pod = documents(&pods.out)
            .into_iter()
            .filter_map(|p| {
                p.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .next()
            .context("no harness pod")?;
        Ok(local)
    }

    fn request(&self, req: &Request) -> anyhow::Result<daemon::Response> {
        daemon::request(&self.state, req)
    }
}

/// The documents of a multi-document YAML text.
pub(super) fn documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

pub(super) fn to_yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .filter_map(|o| serde_yaml_ng::to_string(o).ok())
        .collect::<Vec<_>>()
        .join("---\n")
}

impl Target for Local {
    fn apply(&mut self, objects: &[Value]) -> Result<(), String> {
        let r = self
            .request(&Request::Apply {
                files: vec![("step".into(), to_yaml(objects))],
            })
            .map_err(|e| format!("{e:#}"))?;
        if r.ok {
            Ok(())
        } else {
            Err(r
                .out
                .lines()
                .filter(|l| l.starts_with("error"))
                .collect::<Vec<_>>()
                .join("; "))
        }
    }

    fn delete(&mut self, refs: &[ObjectRef]) -> Result<(), String> {
        let docs: Vec<Value> = refs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "apiVersion": r.api_version, "kind": r.kind,
                    "metadata": {"name": r.name, "namespace": r.namespace},
                })
            })
            .collect();
        let r = self
            .request(&Request::Delete {
                files: vec![("step".into(), to_yaml(&docs))],
            })
            .map_err(|e| format!("{e:#}"))?;
        let errors: Vec<&str> = r
            .out
            .lines()
            .filter(|l| l.starts_with("error") && !l.ends_with("not found"))
            .collect();
        super::all_ok(&errors)
    }

    fn get(
        &mut self,
        _api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, String> {
        let r = self
            .request(&Request::Get {
                kind: kind.to_string(),
                name: Some(name.to_string()),
                namespace: namespace.map(str::to_string),
                yaml: true,
            })
            .map_err(|e| format!("{e:#}"))?;
        if !r.ok {
            if r.out.contains("not found") {
                return Ok(None);
            }
            return Err(r.out.trim().to_string());
        }
        Ok(documents(&r.out).into_iter().next())
    }

    fn fetch(&mut self, method: &str, url: &str, body: &str) -> Result<(u16, String), String> {
        let sample_app = self.sample_app.display().to_string();
        let out = Command::new(&self.smidge)
            .arg("local")
            .arg("--state-dir")
            .arg(&self.state)
            .args(["exec", "-n", HARNESS_NAMESPACE, &self.harness_pod, "--"])
            .args([sample_app.as_str(), "fetch", method, url, body])
            .output()
            .map_err(|e| format!("running smidge local exec: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{method} {url} from the harness: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (status, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let status = status
            .trim()
            .parse()
            .map_err(|_| format!("{method} {url}: the harness printed no status"))?;
        Ok((status, body.to_string()))
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new(&self.smidge)
                .arg("local")
                .arg("--state-dir")
                .arg(&self.state)
                .arg("down")
                .output();
        }
    }
}
