//! The case format (see conformance/README.md): a directory of `NN-<name>.yaml` files, grouped
//! into steps by `NN` and run in order. Reading and parsing are pure; [`load`] only reads files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

use crate::traffic::{self, TrafficCheck};

/// The placeholder upstream's files use for the test namespace.
pub const NAMESPACE_PLACEHOLDER: &str = "<NAMESPACE>";
/// Seconds an assert (or errors) file is retried by default, as kuttl does.
pub const DEFAULT_ASSERT_TIMEOUT: u64 = 30;

/// A case directory, read.
#[derive(Clone, Debug)]
pub struct Case {
    /// The directory's name.
    pub name: String,
    pub dir: PathBuf,
    /// From `case.yaml`: what the report calls it (Meshery's `smi_specification`, `smi_version`).
    pub specification: String,
    pub version: String,
    pub steps: Vec<StepFiles>,
}

/// The files of one step, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepFiles {
    pub number: u32,
    /// `NN-name` of its shortest-named file that is not an assert or errors file.
    pub name: String,
    /// (file name, text), in name order.
    pub files: Vec<(String, String)>,
}

/// An object to delete.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

/// One step, ready to run: deletes, then applies, then asserts and errors (retried up to the
/// timeout), then traffic checks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    pub number: u32,
    pub name: String,
    pub deletes: Vec<ObjectRef>,
    pub apply: Vec<Value>,
    pub asserts: Vec<Value>,
    pub errors: Vec<Value>,
    pub checks: Vec<TrafficCheck>,
    pub timeout: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseMeta {
    specification: String,
    version: String,
}

/// Reads a case directory.
pub fn load(dir: &Path) -> anyhow::Result<Case> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("a case directory needs a name")?
        .to_string();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(file) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if step_file(&file).is_some() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            files.push((file, text));
        }
    }
    let meta_path = dir.join("case.yaml");
    let (specification, version) = match std::fs::read_to_string(&meta_path) {
        Ok(text) => {
            let m: CaseMeta = serde_yaml_ng::from_str(&text).with_context(|| {
                format!(
                    "{}: expected specification and version",
                    meta_path.display()
                )
            })?;
            (m.specification, m.version)
        }
        Err(_) => (name.clone(), String::new()),
    };
    let steps = group(files).map_err(|e| anyhow::anyhow!("case {name}: {e}"))?;
    Ok(Case {
        name,
        dir: dir.to_path_buf(),
        specification,
        version,
        steps,
    })
}

/// `(NN, name)` of a step file name, `NN-name.yaml`.
fn step_file(file: &str) -> Option<(u32, &str)> {
    let stem = file
        .strip_suffix(".yaml")
        .or_else(|| file.strip_suffix(".yml"))?;
    let (number, name) = stem.split_once('-')?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    Some((number.parse().ok()?, name))
}

fn is_assert(name: &str) -> bool {
    name.starts_with("assert")
}

fn is_errors(name: &str) -> bool {
    name.starts_with("errors")
}

/// Groups step files by number. Pure.
pub fn group(mut files: Vec<(String, String)>) -> Result<Vec<StepFiles>, String> {
    files.sort();
    let mut steps: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
    for (file, text) in files {
        let (n, _) = step_file(&file).ok_or_else(|| format!("{file} is not NN-name.yaml"))?;
        steps.entry(n).or_default().push((file, text));
    }
    Ok(steps
        .into_iter()
        .map(|(number, files)| {
            // The shortest action file names the step (`02-install` beside
            // `02-install-harness`), else the first file.
            let named = files
                .iter()
                .filter_map(|(f, _)| step_file(f))
                .filter(|(_, name)| !is_assert(name) && !is_errors(name))
                .min_by_key(|(_, name)| (name.len(), name.to_string()))
                .or_else(|| files.first().and_then(|(f, _)| step_file(f)));
            let name = named
                .map(|(_, n)| format!("{number:02}-{n}"))
                .unwrap_or_else(|| format!("{number:02}"));
            StepFiles {
                number,
                name,
                files,
            }
        })
        .collect())
}

fn is_test_step(v: &Value) -> bool {
    let api = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    v.get("kind").and_then(Value::as_str) == Some("TestStep")
        && (api.starts_with("kuttl.dev/") || api.starts_with("kudo.dev/"))
}

fn is_test_assert(v: &Value) -> bool {
    let api = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    v.get("kind").and_then(Value::as_str) == Some("TestAssert")
        && (api.starts_with("kuttl.dev/") || api.starts_with("kudo.dev/"))
}

fn is_check(v: &Value) -> bool {
    v.get("apiVersion").and_then(Value::as_str) == Some(traffic::API_VERSION)
        && v.get("kind").and_then(Value::as_str) == Some(traffic::KIND)
}

/// Kinds that live outside namespaces.
fn cluster_scoped(kind: &str) -> bool {
    matches!(kind, "Namespace" | "CustomResourceDefinition")
}

/// Parses a step's files for a run in `namespace`: `<NAMESPACE>` is replaced, and objects that
/// name no namespace go into it. Errors name the file and document. Pure.
pub fn parse_step(step: &StepFiles, namespace: &str) -> Result<Step, String> {
    let mut out = Step {
        number: step.number,
        name: step.name.clone(),
        timeout: DEFAULT_ASSERT_TIMEOUT,
        ..Step::default()
    };
    for (file, text) in &step.files {
        let (_, part) = step_file(file).ok_or_else(|| format!("{file}: not a step file"))?;
        let text = text.replace(NAMESPACE_PLACEHOLDER, namespace);
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let at = format!("{file} document {}", i + 1);
            let mut v =
                Value::deserialize(doc).map_err(|e| format!("{at}: not valid YAML: {e}"))?;
            if v.is_null() {
                continue;
            }
            if !v.is_object() {
                return Err(format!("{at}: a document must be a mapping"));
            }
            if is_test_step(&v) {
                for (key, value) in v.as_object().into_iter().flatten() {
                    match key.as_str() {
                        "apiVersion" | "kind" | "metadata" => {}
                        "delete" => {
                            let mut refs: Vec<ObjectRef> = serde_json::from_value(value.clone())
                                .map_err(|e| format!("{at}: delete: {e}"))?;
                            for r in &mut refs {
                                if r.namespace.is_empty() && !cluster_scoped(&r.kind) {
                                    r.namespace = namespace.to_string();
                                }
                            }
                            out.deletes.extend(refs);
                        }
                        other => {
                            return Err(format!(
                                "{at}: TestStep field {other:?} is not supported (only delete)"
                            ))
                        }
                    }
                }
                continue;
            }
            if is_test_assert(&v) {
                if let Some(t) = v.get("timeout") {
                    out.timeout = t
                        .as_u64()
                        .ok_or_else(|| format!("{at}: timeout must be whole seconds"))?;
                }
                continue;
            }
            if is_check(&v) {
                let check: TrafficCheck = serde_json::from_value(v)
                    .map_err(|e| format!("{at}: {} {e}", traffic::KIND))?;
                out.checks.push(check);
                continue;
            }
            let kind = v
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if kind.is_empty() || v.get("apiVersion").and_then(Value::as_str).is_none() {
                return Err(format!("{at}: apiVersion and kind are required"));
            }
            if !cluster_scoped(&kind) {
                if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.entry("namespace")
                        .or_insert_with(|| Value::String(namespace.to_string()));
                }
            }
            if is_assert(part) {
                out.asserts.push(v);
            } else if is_errors(part) {
                out.errors.push(v);
            } else {
                out.apply.push(v);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn files_group_into_numbered_steps_named_after_their_first_action() {
        let steps = group(files(&[
            ("02-assert.yaml", ""),
            ("01-assert.yaml", ""),
            ("02-install.yaml", ""),
            ("02-install-harness.yaml", ""),
            ("03-trafficDefault.yaml", ""),
        ]))
        .expect("valid");
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["01-assert", "02-install", "03-trafficDefault"]);
        assert_eq!(steps[1].files.len(), 3);
    }

    #[test]
    fn a_step_splits_into_deletes_applies_asserts_errors_and_checks() {
        let step = StepFiles {
            number: 6,
            name: "06-install".into(),
            files: files(&[
                (
                    "06-install.yaml",
                    "apiVersion: kudo.dev/v1alpha1\nkind: TestStep\ndelete:\n- {apiVersion: access.smi-spec.io/v1alpha3, kind: TrafficTarget, name: t}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n",
                ),
                (
                    "06-errors.yaml",
                    "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: t, namespace: <NAMESPACE>}\n",
                ),
                (
                    "06-assert.yaml",
                    "apiVersion: kuttl.dev/v1beta1\nkind: TestAssert\ntimeout: 5\n",
                ),
                (
                    "06-traffic.yaml",
                    "apiVersion: conformance.smidge.io/v1\nkind: TrafficCheck\ncalls: []\nexpect: []\n",
                ),
            ]),
        };
        let s = parse_step(&step, "case-ns").expect("valid");
        assert_eq!(s.deletes[0].namespace, "case-ns");
        assert_eq!(s.apply[0]["metadata"]["namespace"], "case-ns");
        assert_eq!(s.errors[0]["metadata"]["namespace"], "case-ns");
        assert_eq!(s.timeout, 5);
        assert_eq!(s.checks.len(), 1);
    }

    #[test]
    fn unsupported_test_step_fields_are_refused_by_file_and_document() {
        let step = StepFiles {
            number: 1,
            name: "01-x".into(),
            files: files(&[(
                "01-x.yaml",
                "apiVersion: kuttl.dev/v1beta1\nkind: TestStep\ncommands: [{command: rm -rf /}]\n",
            )]),
        };
        assert_eq!(
            parse_step(&step, "n"),
            Err(
                "01-x.yaml document 1: TestStep field \"commands\" is not supported (only delete)"
                    .into()
            )
        );
    }
}
