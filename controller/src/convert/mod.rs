//! Converting SMI objects between the versions smidge's CRDs serve, always through the hub (the
//! newest version of each kind), as a CRD conversion webhook must.
//!
//! Each conversion is a pair of pure layout functions per kind ([`layout`]): `up` from an older
//! version to the hub, `down` from the hub to an older one. Where one side cannot express what the
//! other holds (a v1alpha1 quantity as written, access v1alpha2's `destination.port`, split
//! v1alpha3's `matches`), the object's exact body in the richer version is kept in the
//! [`ANNOTATION`] ([`snapshot`]), so converting back restores it exactly, as Kubernetes converters
//! do. A kept body is used only while it still converts to the object's current content, so an
//! edit made in another version always wins over it.

pub mod layout;
pub mod snapshot;
pub mod weights;

#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::{Map, Value};

use crate::smi::{ACCESS_GROUP, SPECS_GROUP, SPLIT_GROUP};
use snapshot::Snapshots;

/// The annotation that keeps what a conversion could not express (JSON: version → body).
pub const ANNOTATION: &str = "smidge.io/conversion-data";

/// The versions one SMI kind is served in, oldest first; the last is the hub and storage version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindVersions {
    pub group: &'static str,
    pub kind: &'static str,
    pub versions: &'static [&'static str],
}

impl KindVersions {
    /// The newest version: the hub of every conversion and the storage version.
    pub fn hub(&self) -> &'static str {
        self.versions.last().copied().unwrap_or_default()
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.contains(&version)
    }
}

/// Every SMI kind smidge serves, with its versions.
pub const KINDS: [KindVersions; 5] = [
    KindVersions {
        group: ACCESS_GROUP,
        kind: "TrafficTarget",
        versions: &["v1alpha1", "v1alpha2", "v1alpha3"],
    },
    KindVersions {
        group: SPECS_GROUP,
        kind: "HTTPRouteGroup",
        versions: &["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"],
    },
    KindVersions {
        group: SPECS_GROUP,
        kind: "TCPRoute",
        versions: &["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"],
    },
    KindVersions {
        group: SPECS_GROUP,
        kind: "UDPRoute",
        versions: &["v1alpha4"],
    },
    KindVersions {
        group: SPLIT_GROUP,
        kind: "TrafficSplit",
        versions: &["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"],
    },
];

/// The versions of `group`/`kind`, if smidge serves it.
pub fn kind_versions(group: &str, kind: &str) -> Option<KindVersions> {
    KINDS
        .into_iter()
        .find(|k| k.group == group && k.kind == kind)
}

/// Why an object cannot be converted: the field (dotted path, empty for the whole object) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertError {
    pub field: String,
    pub message: String,
}

impl ConvertError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConvertError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConvertError {}

/// `group/version` split at the last slash.
fn split_api_version(api_version: &str) -> Option<(&str, &str)> {
    api_version
        .rsplit_once('/')
        .filter(|(g, v)| !g.is_empty() && !v.is_empty())
}

/// An object taken apart: what every version shares, and the version-specific body.
struct Parts {
    kind_versions: KindVersions,
    version: String,
    metadata: Option<Value>,
    status: Option<Value>,
    body: Map<String, Value>,
    snapshots: Snapshots,
}

fn parts(object: &Value) -> Result<Parts, ConvertError> {
    let obj = object
        .as_object()
        .ok_or_else(|| ConvertError::new("", "not a JSON object"))?;
    let text = |key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| ConvertError::new(key, "missing or not a string"))
    };
    let api_version = text("apiVersion")?;
    let kind = text("kind")?;
    let (group, version) = split_api_version(api_version).ok_or_else(|| {
        ConvertError::new(
            "apiVersion",
            format!("{api_version:?} is not of the form group/version"),
        )
    })?;
    let kind_versions = kind_versions(group, kind).ok_or_else(|| {
        ConvertError::new(
            "kind",
            format!("{kind} in {group} is no SMI kind smidge converts"),
        )
    })?;
    if !kind_versions.serves(version) {
        return Err(unserved(&kind_versions, api_version));
    }
    let mut body = obj.clone();
    for key in ["apiVersion", "kind"] {
        body.remove(key);
    }
    let metadata = body.remove("metadata");
    let status = body.remove("status");
    let snapshots = Snapshots::from_metadata(metadata.as_ref());
    Ok(Parts {
        kind_versions,
        version: version.to_string(),
        metadata,
        status,
        body,
        snapshots,
    })
}

fn unserved(kv: &KindVersions, api_version: &str) -> ConvertError {
    ConvertError::new(
        "apiVersion",
        format!(
            "{} is not defined in {api_version}; served versions: {}",
            kv.kind,
            kv.versions.join(", ")
        ),
    )
}

/// `body` (of `version`) in the hub version: a kept hub body while it is current, else `up`.
fn to_hub(p: &Parts) -> Result<Map<String, Value>, ConvertError> {
    let kind = p.kind_versions.kind;
    let hub = p.kind_versions.hub();
    if p.version == hub {
        return Ok(p.body.clone());
    }
    if let Some(kept) = p.snapshots.get(hub) {
        if layout::down(kind, &p.version, kept.clone()) == p.body {
            return Ok(kept.clone());
        }
    }
    layout::up(kind, &p.version, p.body.clone())
}

/// Converts `object` to `desired_api_version` (same group), through the hub. Metadata, status and
/// fields a version does not know carry over; what the target version cannot express is kept in
/// the [`ANNOTATION`] so that converting back gives the object exactly.
pub fn convert(object: &Value, desired_api_version: &str) -> Result<Value, ConvertError> {
    let p = parts(object)?;
    let kv = p.kind_versions;
    let (group, desired) = split_api_version(desired_api_version).ok_or_else(|| {
        ConvertError::new(
            "",
            format!("the desired version {desired_api_version:?} is not of the form group/version"),
        )
    })?;
    if group != kv.group {
        return Err(ConvertError::new(
            "apiVersion",
            format!(
                "{} {}/{} cannot become {desired_api_version}: another API group",
                kv.kind, kv.group, p.version
            ),
        ));
    }
    if !kv.serves(desired) {
        return Err(unserved(&kv, desired_api_version));
    }
    if desired == p.version {
        return Ok(object.clone());
    }
    let kind = kv.kind;
    let hub = kv.hub();
    let hub_body = to_hub(&p)?;
    let mut kept = p.snapshots.clone();
    kept.remove(hub);
    kept.retain_current(|version, body| {
        layout::up(kind, version, body.clone()).ok().as_ref() == Some(&hub_body)
    });
    if p.version != hub && layout::down(kind, &p.version, hub_body.clone()) != p.body {
        kept.insert(&p.version, p.body.clone());
    }
    let body = if desired == hub {
        hub_body.clone()
    } else {
        match kept.remove(desired) {
            Some(body) => body,
            None => {
                let mut body = layout::down(kind, desired, hub_body.clone());
                for (version, kept_body) in kept.iter() {
                    layout::carry(kind, version, kept_body, desired, &mut body);
                }
                body
            }
        }
    };
    if desired != hub {
        // A kept body the result itself gives back (v1alpha1 and v1alpha2 both hold a port) is
        // no longer needed.
        kept.retain_current(|version, kept_body| {
            let mut sideways = layout::down(kind, version, hub_body.clone());
            layout::carry(kind, desired, &body, version, &mut sideways);
            sideways != *kept_body
        });
    }
    if desired != hub && layout::up(kind, desired, body.clone()).ok().as_ref() != Some(&hub_body) {
        kept.insert(hub, hub_body);
    }
    let mut out = Map::new();
    out.insert(
        "apiVersion".into(),
        Value::String(desired_api_version.into()),
    );
    out.insert("kind".into(), Value::String(kind.into()));
    if let Some(metadata) = kept.into_metadata(&p.snapshots, p.metadata) {
        out.insert("metadata".into(), metadata);
    }
    out.extend(body);
    if let Some(status) = p.status {
        out.insert("status".into(), status);
    }
    Ok(Value::Object(out))
}

/// The object as its author wrote it, when it differs from `object` in meaning: a hub object whose
/// [`ANNOTATION`] keeps a current body of the older version it was written in (a v1alpha2
/// `destination.port`), or an older-version object that keeps the hub body it was read from (a
/// split's `matches`). `None` when `object` says all there is. Readers use this so that an
/// object means the same whichever version it is stored or read in.
pub fn as_written(object: &Value) -> Option<Value> {
    // Most objects never went through a lossy conversion: no copy for them.
    object
        .get("metadata")?
        .get("annotations")?
        .get(ANNOTATION)?;
    let p = parts(object).ok()?;
    if p.snapshots.is_empty() {
        return None;
    }
    let kv = p.kind_versions;
    let hub_api = format!("{}/{}", kv.group, kv.hub());
    let hub_object = convert(object, &hub_api).ok()?;
    let at_hub = parts(&hub_object).ok()?;
    if let Some(version) = kv
        .versions
        .iter()
        .find(|v| **v != kv.hub() && at_hub.snapshots.get(v).is_some())
    {
        if *version == p.version {
            return None;
        }
        return convert(&hub_object, &format!("{}/{version}", kv.group)).ok();
    }
    let restored_hub = p.version != kv.hub()
        && p.snapshots
            .get(kv.hub())
            .is_some_and(|kept| *kept == at_hub.body);
    restored_hub.then_some(hub_object)
}
