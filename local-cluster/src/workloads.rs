//! Deployments as the local cluster runs them: what a Deployment asks for, which local program
//! stands in for each container image, and which pods should exist. Pure: no I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// A program the local cluster runs for a container image: one of the workspace's programs in
/// the image table both control planes share ([`crate::node::images`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program(&'static str);

impl Program {
    /// `smidge-echo`: HTTP (`PORT`, 8080) answering with its name, and TCP echo (`ECHO_PORT`,
    /// 7000).
    pub const ECHO: Program = Program("smidge-echo");
    /// The SMI conformance sample app (`smidge-sample-app`, REFERENCE.md §8.2).
    pub const SAMPLE_APP: Program = Program("smidge-sample-app");

    /// The executable's file name, looked up beside the `smidge` binary.
    pub fn executable(self) -> &'static str {
        self.0
    }
}

/// The program for `image` (any tag or digest), if the image table has one built by the
/// workspace (the embedded cluster runs only those; host-tool images need the Kubernetes node).
pub fn program_for(image: &str) -> Option<Program> {
    use crate::node::images;
    images::lookup(image)
        .filter(|i| i.location == images::Location::Workspace)
        .and_then(|i| i.entrypoint.first())
        .map(|e| Program(e))
}

/// The images [`program_for`] knows, for messages.
fn image_names() -> String {
    use crate::node::images;
    images::TABLE
        .iter()
        .filter(|(_, i)| i.location == images::Location::Workspace)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
}

/// One container: the program that stands in for its image, and what it is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub program: Program,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<ContainerPort>,
}

/// What every pod of a Deployment looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTemplate {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub service_account: String,
    pub containers: Vec<Container>,
    /// Names pods by template, so a changed template replaces its pods.
    pub hash: String,
}

/// A Deployment, as far as the local cluster runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub replicas: u32,
    pub selector: BTreeMap<String, String>,
    pub template: PodTemplate,
}

/// A field of a Deployment that cannot be run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

impl Deployment {
    /// Reads and checks an `apps/v1` Deployment.
    pub fn from_value(value: &Value) -> Result<Deployment, FieldError> {
        let d: apps::Deployment = serde_path_to_error::deserialize(value.clone())
            .map_err(|e| err(e.path().to_string(), e.into_inner().to_string()))?;
        let spec = d.spec;
        let replicas = match spec.replicas {
            None => 1,
            Some(n) => {
                u32::try_from(n).map_err(|_| err("spec.replicas", "must not be negative"))?
            }
        };
        if spec
            .selector
            .match_expressions
            .as_ref()
            .is_some_and(|m| !m.is_empty())
        {
            return Err(err(
                "spec.selector.matchExpressions",
                "is not supported by the local cluster (use matchLabels)",
            ));
        }
        let selector = spec.selector.match_labels.unwrap_or_default();
        if selector.is_empty() {
            return Err(err("spec.selector.matchLabels", "is empty"));
        }
        let meta = spec.template.metadata.unwrap_or_default();
        let labels = meta.labels.unwrap_or_default();
        if let Some((k, v)) = selector.iter().find(|(k, v)| labels.get(*k) != Some(*v)) {
            return Err(err(
                "spec.template.metadata.labels",
                format!("does not match spec.selector ({k}: {v})"),
            ));
        }
        let pod = spec
            .template
            .spec
            .ok_or_else(|| err("spec.template.spec", "is missing"))?;
        let service_account = pod
            .service_account_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        if pod.containers.is_empty() {
            return Err(err("spec.template.spec.containers", "is empty"));
        }
        let mut containers = Vec::new();
        for (i, c) in pod.containers.iter().enumerate() {
            let field = format!("spec.template.spec.containers[{i}]");
            let image = c.image.clone().unwrap_or_default();
            let program = program_for(&image).ok_or_else(|| {
                err(
                    format!("{field}.image"),
                    format!(
                        "{image:?} has no local program (the local cluster runs {})",
                        image_names()
                    ),
                )
            })?;
            let mut env = Vec::new();
            for (j, e) in c.env.iter().flatten().enumerate() {
                if e.value_from.is_some() {
                    return Err(err(
                        format!("{field}.env[{j}].valueFrom"),
                        "is not supported by the local cluster (use value)",
                    ));
                }
                env.push((e.name.clone(), e.value.clone().unwrap_or_default()));
            }
            let mut ports = Vec::new();
            for (j, p) in c.ports.iter().flatten().enumerate() {
                let port = u16::try_from(p.container_port)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        err(
                            format!("{field}.ports[{j}].containerPort"),
                            format!("{} is not a port (1–65535)", p.container_port),
                        )
                    })?;
                ports.push(ContainerPort {
                    name: p.name.clone(),
                    port,
                });
            }
            let args = c
                .command
                .iter()
                .flatten()
                .chain(c.args.iter().flatten())
                .cloned()
                .collect();
            containers.push(Container {
                name: c.name.clone(),
                image,
                program,
                args,
                env,
                ports,
            });
        }
        let template_json = value
            .pointer("/spec/template")
            .map(Value::to_string)
            .unwrap_or_default();
        Ok(Deployment {
            replicas,
            selector,
            template: PodTemplate {
                labels,
                annotations: meta.annotations.unwrap_or_default(),
                service_account,
                containers,
                hash: short_hash(&template_json),
            },
        })
    }
}

/// The alphabet Kubernetes uses for generated name parts (no vowels, no look-alikes).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A stable 9-character name part for `text` (FNV-1a), like `pod-template-hash`.
pub fn short_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    suffix(h, 9)
}

/// `len` characters from the Kubernetes alphabet, drawn from `seed`.
pub fn suffix(mut seed: u64, len: usize) -> String {
    let n = ALPHABET.len() as u64;
    (0..len)
        .map(|_| {
            let c = ALPHABET[(seed % n) as usize] as char;
            seed /= n;
            c
        })
        .collect()
}

/// True when every selector label is on `labels`.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether a pod of `template` in a namespace with `namespace_meta` (labels and annotations)
/// gets a proxy: the pod's own annotation wins, then the namespace's.
pub fn meshed(template: &PodTemplate, namespace_meta: &BTreeMap<String, String>) -> bool {
    use smidge_controller::labels::{INJECT, INJECT_DISABLED, INJECT_ENABLED};
    match template.annotations.get(INJECT).map(String::as_str) {
        Some(INJECT_ENABLED) => true,
        Some(INJECT_DISABLED) => false,
        _ => namespace_meta.get(INJECT).map(String::as_str) == Some(INJECT_ENABLED),
    }
}

/// What a reconcile does for one Deployment, given the names of its pods and their template
/// hashes: pods to remove (old templates first, then the newest extras) and how many to add.
pub fn scale(want: &Deployment, have: &[(String, String)]) -> (Vec<String>, usize) {
    let (current, old): (Vec<_>, Vec<_>) = have
        .iter()
        .partition(|(_, hash)| *hash == want.template.hash);
    let mut remove: Vec<String> = old.into_iter().map(|(n, _)| n.clone()).collect();
    let keep = want.replicas as usize;
    if current.len() > keep {
        remove.extend(current[keep..].iter().map(|(n, _)| n.clone()));
    }
    (remove, keep.saturating_sub(current.len()))
}

/// A Service port's target on one pod: a number, a container port name, or (absent) the
/// Service port itself. `None` when the pod has no port of that name.
pub fn target_port(
    target: Option<&IntOrString>,
    service_port: u16,
    containers: &[Container],
) -> Option<u16> {
    match target {
        None => Some(service_port),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => match name.parse::<u16>() {
            Ok(n) => Some(n),
            Err(_) => containers
                .iter()
                .flat_map(|c| &c.ports)
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.port),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(extra: &str) -> Result<Deployment, FieldError> {
        let text = format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web, version: v1}}}}
    spec:
      serviceAccountName: web
      containers:
      - name: app
        image: smidge/echo:1.0
        env: [{{name: SERVICE_NAME, value: web-v1}}]
        ports: [{{name: http, containerPort: 8080}}]
{extra}"#
        );
        let v: Value = serde_yaml_ng::from_str(&text).expect("test yaml");
        Deployment::from_value(&v)
    }

    #[test]
    fn a_deployment_reads_into_what_its_pods_run() {
        let d = deployment("").expect("valid");
        assert_eq!(d.replicas, 2);
        assert_eq!(d.template.service_account, "web");
        let c = &d.template.containers[0];
        assert_eq!(c.program, Program::ECHO);
        assert_eq!(c.env, [("SERVICE_NAME".to_string(), "web-v1".to_string())]);
        assert_eq!(
            c.ports,
            [ContainerPort {
                name: Some("http".into()),
                port: 8080
            }]
        );
        assert_eq!(d.template.hash.len(), 9);
    }

    #[test]
    fn what_cannot_run_is_named_by_field() {
        let e = deployment("").map(|_| ()).and_then(|_| {
            let v: Value = serde_yaml_ng::from_str(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec: {replicas: two, selector: {matchLabels: {a: b}}, template: {}}",
            )
            .expect("yaml");
            Deployment::from_value(&v).map(|_| ())
        });
        assert_eq!(e.map_err(|e| e.field), Err("spec.replicas".to_string()));
        let v: Value = serde_yaml_ng::from_str(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: 'nginx:1.27'}]}}}",
        )
        .expect("yaml");
        let e = Deployment::from_value(&v).expect_err("nginx has no program");
        assert_eq!(e.field, "spec.template.spec.containers[0].image");
        assert!(
            e.message.starts_with("\"nginx:1.27\" has no local program"),
            "{}",
            e.message
        );
        let v: Value = serde_yaml_ng::from_str(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: c}}, spec: {containers: [{name: c, image: smidge/echo}]}}}",
        )
        .expect("yaml");
        let e = Deployment::from_value(&v).expect_err("selector mismatch");
        assert_eq!(e.field, "spec.template.metadata.labels");
    }

    #[test]
    fn images_match_with_any_tag_digest_or_registry_port() {
        assert_eq!(
            program_for("layer5/learn-layer5:latest"),
            Some(Program::SAMPLE_APP)
        );
        assert_eq!(
            program_for("docker.io/layer5/learn-layer5:smi"),
            Some(Program::SAMPLE_APP)
        );
        assert_eq!(program_for("smidge/echo@sha256:abc"), Some(Program::ECHO));
        assert_eq!(program_for("smidge/echo"), Some(Program::ECHO));
        assert_eq!(program_for("localhost:5000/smidge/echo"), None);
        assert_eq!(program_for("nginx"), None);
    }

    #[test]
    fn a_changed_template_replaces_old_pods_and_scaling_trims_the_extras() {
        let d = deployment("").expect("valid");
        let h = d.template.hash.clone();
        let have = vec![
            ("web-old-1".to_string(), "old".to_string()),
            ("web-a".to_string(), h.clone()),
        ];
        assert_eq!(scale(&d, &have), (vec!["web-old-1".to_string()], 1));
        let three = vec![
            ("web-a".to_string(), h.clone()),
            ("web-b".to_string(), h.clone()),
            ("web-c".to_string(), h),
        ];
        assert_eq!(scale(&d, &three), (vec!["web-c".to_string()], 0));
        let edited = deployment("        args: [--verbose]\n").expect("valid");
        assert_ne!(edited.template.hash, d.template.hash);
    }

    #[test]
    fn pods_join_the_mesh_by_namespace_unless_their_annotation_says_otherwise() {
        let mut d = deployment("").expect("valid");
        let on: BTreeMap<_, _> = [("smidge.io/inject".to_string(), "enabled".to_string())].into();
        assert!(meshed(&d.template, &on));
        assert!(!meshed(&d.template, &BTreeMap::new()));
        d.template
            .annotations
            .insert("smidge.io/inject".into(), "disabled".into());
        assert!(!meshed(&d.template, &on));
    }

    #[test]
    fn target_ports_resolve_by_number_name_or_default() {
        let d = deployment("").expect("valid");
        let c = &d.template.containers;
        assert_eq!(target_port(None, 80, c), Some(80));
        assert_eq!(
            target_port(Some(&IntOrString::Int(9090)), 80, c),
            Some(9090)
        );
        assert_eq!(
            target_port(Some(&IntOrString::String("http".into())), 80, c),
            Some(8080)
        );
        assert_eq!(
            target_port(Some(&IntOrString::String("grpc".into())), 80, c),
            None
        );
    }
}
