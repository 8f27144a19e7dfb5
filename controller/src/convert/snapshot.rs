//! The bodies a conversion keeps in the [`ANNOTATION`](super::ANNOTATION): a JSON object from
//! version (`v1alpha1`) to the object's body in that version (everything but `apiVersion`, `kind`,
//! `metadata` and `status`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::ANNOTATION;

/// Kept bodies by version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshots(BTreeMap<String, Map<String, Value>>);

impl Snapshots {
    /// The bodies kept in `metadata`'s annotation. An annotation that is not such JSON (edited
    /// by hand) is ignored: it can only restore detail, never be needed to convert.
    pub fn from_metadata(metadata: Option<&Value>) -> Snapshots {
        let text = metadata
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(ANNOTATION))
            .and_then(Value::as_str);
        let Some(text) = text else {
            return Snapshots::default();
        };
        match serde_json::from_str::<BTreeMap<String, Value>>(text) {
            Ok(map) => Snapshots(
                map.into_iter()
                    .filter_map(|(version, body)| match body {
                        Value::Object(body) => Some((version, body)),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(_) => Snapshots::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, version: &str) -> Option<&Map<String, Value>> {
        self.0.get(version)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Map<String, Value>)> {
        self.0.iter().map(|(v, b)| (v.as_str(), b))
    }

    pub fn insert(&mut self, version: &str, body: Map<String, Value>) {
        self.0.insert(version.to_string(), body);
    }

    pub fn remove(&mut self, version: &str) -> Option<Map<String, Value>> {
        self.0.remove(version)
    }

    /// Drops the bodies that no longer convert to the object's current content.
    pub fn retain_current(&mut self, mut current: impl FnMut(&str, &Map<String, Value>) -> bool) {
        self.0.retain(|version, body| current(version, body));
    }

    /// `metadata` with these bodies in its annotation: unchanged when they equal `before` (the
    /// bodies it came with), the annotation removed when there are none (and `annotations` with
    /// it when that leaves it empty, as the API server would).
    pub fn into_metadata(self, before: &Snapshots, metadata: Option<Value>) -> Option<Value> {
        if self == *before {
            return metadata;
        }
        let mut metadata = match metadata {
            Some(Value::Object(m)) => m,
            Some(other) => return Some(other),
            None => Map::new(),
        };
        let mut annotations = match metadata.remove("annotations") {
            Some(Value::Object(a)) => a,
            _ => Map::new(),
        };
        if self.0.is_empty() {
            annotations.remove(ANNOTATION);
        } else {
            let map: Map<String, Value> = self
                .0
                .into_iter()
                .map(|(version, body)| (version, Value::Object(body)))
                .collect();
            annotations.insert(
                ANNOTATION.into(),
                Value::String(Value::Object(map).to_string()),
            );
        }
        if !annotations.is_empty() {
            metadata.insert("annotations".into(), Value::Object(annotations));
        }
        Some(Value::Object(metadata))
    }
}
