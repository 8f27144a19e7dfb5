//! Reading multi-document Kubernetes YAML into model objects, one document at a time, so one broken
//! document never hides the others.

use serde_json::Value;

use crate::model::{Kind, Object, ObjectId};
use crate::smi::{self, Finding, Findings};

/// Where a document starts in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// 1-based document number in the file.
    pub document: usize,
    /// 1-based line of the document's first line.
    pub line: usize,
}

/// What one document (or one item of a `List`) turned out to be.
#[derive(Debug)]
pub enum Outcome {
    /// A kind smidge reads, valid. `notices` are tolerated deviations worth a warning.
    Object {
        object: Object,
        notices: Vec<Finding>,
    },
    /// A kind smidge does not read (Deployment, a test step, …), left alone.
    Skipped {
        api_version: String,
        kind: String,
        name: String,
    },
    /// A kind smidge reads, but invalid; `id` is known when kind and name could be read.
    Invalid {
        id: Option<ObjectId>,
        what: String,
        errors: Findings,
    },
}

/// Splits a file at `---` lines, as kubectl does.
pub fn split_documents(text: &str) -> Vec<(Position, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") && line[3..].trim().is_empty() {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs.into_iter()
        .enumerate()
        .map(|(i, (line, text))| {
            (
                Position {
                    document: i + 1,
                    line,
                },
                text,
            )
        })
        .collect()
}

/// Reads every document of a file. Empty documents are left out.
pub fn read_file(text: &str) -> Vec<(Position, Outcome)> {
    let mut out = Vec::new();
    for (pos, doc) in split_documents(text) {
        match serde_yaml_ng::from_str::<Value>(&doc) {
            Ok(Value::Null) => {}
            Ok(value) => read_value(value, &mut |o| out.push((pos, o))),
            Err(e) => out.push((
                pos,
                Outcome::Invalid {
                    id: None,
                    what: format!("document {}", pos.document),
                    errors: Finding::new("", format!("not valid YAML: {e}")).into(),
                },
            )),
        }
    }
    out
}

/// Reads one parsed document; a `List` yields each of its items.
pub fn read_value(value: Value, emit: &mut dyn FnMut(Outcome)) {
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let api_version = text(&value, "apiVersion");
    let kind = text(&value, "kind");
    if kind == "List" || kind.ends_with("List") && value.get("items").is_some_and(Value::is_array) {
        if let Some(Value::Array(items)) = value.get("items") {
            for item in items.clone() {
                read_value(item, emit);
            }
        }
        return;
    }
    let meta = value.get("metadata").cloned().unwrap_or(Value::Null);
    let name = text(&meta, "name");
    let namespace = match text(&meta, "namespace") {
        ns if ns.is_empty() && kind != "Namespace" => "default".to_string(),
        ns => ns,
    };
    let what = if name.is_empty() {
        format!("{kind} (unnamed)")
    } else if kind == "Namespace" {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    };
    if value.as_object().is_none() {
        emit(Outcome::Invalid {
            id: None,
            what: "document".into(),
            errors: Finding::new("", "a Kubernetes object must be a mapping").into(),
        });
        return;
    }
    if api_version.is_empty() || kind.is_empty() {
        emit(Outcome::Invalid {
            id: None,
            what,
            errors: Finding::new(
                if kind.is_empty() {
                    "kind"
                } else {
                    "apiVersion"
                },
                "is missing",
            )
            .into(),
        });
        return;
    }
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    let read = match smi::read(group, version, &kind, value.clone(), &namespace) {
        Some(r) => Some(r.map(|s| (s.kind, s.body, s.notices))),
        None => crate::core::read(&api_version, &kind, value)
            .map(|r| r.map(|(k, b)| (k, b, Vec::new()))),
    };
    let Some(read) = read else {
        emit(Outcome::Skipped {
            api_version,
            kind,
            name,
        });
        return;
    };
    let known_kind = read
        .as_ref()
        .ok()
        .map(|(k, _, _)| *k)
        .or_else(|| Kind::parse(&kind));
    let id = match (known_kind, name.is_empty()) {
        (Some(k), false) => Some(ObjectId::new(
            k,
            if k == Kind::Namespace {
                String::new()
            } else {
                namespace
            },
            name,
        )),
        _ => None,
    };
    match (read, id) {
        (Ok((_, body, notices)), Some(id)) => emit(Outcome::Object {
            object: Object {
                id,
                api_version,
                body,
            },
            notices,
        }),
        (Ok(_), None) => emit(Outcome::Invalid {
            id: None,
            what,
            errors: Finding::new("metadata.name", "is missing").into(),
        }),
        (Err(errors), id) => emit(Outcome::Invalid { id, what, errors }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_separator_lines_only() {
        let docs = split_documents("a: 1\n---\nb: '---'\n--- \nc: 3\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(
            docs[1].0,
            Position {
                document: 2,
                line: 3
            }
        );
        assert_eq!(docs[2].1, "c: 3\n");
    }

    #[test]
    fn a_broken_document_does_not_hide_the_next_one() {
        let text = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: n}\n---\nkey: [unclosed\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: b}\n";
        let out = read_file(text);
        assert_eq!(out.len(), 3);
        assert!(
            matches!(&out[0].1, Outcome::Object { object, .. } if object.id == ObjectId::new(Kind::ServiceAccount, "n", "a"))
        );
        assert!(matches!(&out[1].1, Outcome::Invalid { id: None, .. }));
        assert!(
            matches!(&out[2].1, Outcome::Object { object, .. } if object.id == ObjectId::new(Kind::ServiceAccount, "default", "b"))
        );
    }

    #[test]
    fn unknown_kinds_are_skipped_not_errors() {
        let out = read_file("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n");
        assert!(matches!(&out[0].1, Outcome::Skipped { kind, .. } if kind == "Deployment"));
    }

    #[test]
    fn an_invalid_object_keeps_its_identity() {
        let out = read_file("apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: s, namespace: n}\nspec: {service: a, backends: [{service: b, weight: -2}]}\n");
        match &out[0].1 {
            Outcome::Invalid {
                id: Some(id),
                errors,
                ..
            } => {
                assert_eq!(*id, ObjectId::new(Kind::TrafficSplit, "n", "s"));
                assert_eq!(errors.0[0].field, "spec.backends[0].weight");
            }
            other => panic!("{other:?}"),
        }
    }
}
