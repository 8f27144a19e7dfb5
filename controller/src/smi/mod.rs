//! SMI objects of every version: their API types (kube custom resources) and their conversion
//! into the one internal [model](crate::model).
//!
//! Reading is tolerant where the ecosystem disagrees (headers as a map or a list, `matches` at the
//! top level or under `spec`, ports as numbers or strings, quantity weights), and every tolerance
//! leaves a [`Finding`] behind so `smidge lint` can point at it.

pub mod access;
pub mod fields;
pub mod specs;
pub mod split;

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::model::{Body, Kind};

pub const ACCESS_GROUP: &str = "access.smi-spec.io";
pub const SPECS_GROUP: &str = "specs.smi-spec.io";
pub const SPLIT_GROUP: &str = "split.smi-spec.io";

/// Which SMI versions are compatible with each other (the "Compatible with" line of each spec).
pub fn compatible_specs_versions(access_or_split: (&str, &str)) -> &'static [&'static str] {
    match access_or_split {
        (ACCESS_GROUP, "v1alpha1") => &["v1alpha1", "v1alpha2"],
        (ACCESS_GROUP, "v1alpha2") => &["v1alpha3"],
        (ACCESS_GROUP, "v1alpha3") => &["v1alpha4"],
        (SPLIT_GROUP, "v1alpha3") => &["v1alpha3"],
        (SPLIT_GROUP, "v1alpha4") => &["v1alpha4"],
        _ => &[],
    }
}

/// Something wrong (or tolerated) at one field of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Dotted path, as in `spec.backends[1].weight`; empty for the object as a whole.
    pub field: String,
    pub message: String,
}

impl Finding {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Findings that together reject an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings(pub Vec<Finding>);

impl Findings {
    pub fn push(&mut self, f: Finding) {
        self.0.push(f);
    }

    /// `Ok(value)` when nothing was found, else the findings.
    pub fn into_result<T>(self, value: T) -> Result<T, Findings> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    pub fn merge(mut self, other: Findings) -> Findings {
        self.0.extend(other.0);
        self
    }
}

impl From<Finding> for Findings {
    fn from(f: Finding) -> Self {
        Findings(vec![f])
    }
}

impl fmt::Display for Findings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, finding) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{finding}")?;
        }
        Ok(())
    }
}

/// An SMI object read into the model, with the tolerances it needed.
#[derive(Debug)]
pub struct ReadSmi {
    pub kind: Kind,
    pub body: Body,
    pub notices: Vec<Finding>,
}

/// Reads `value` as an SMI object of `group`/`version`/`kind`. `None` when it is no SMI kind smidge
/// reads (for example `TrafficMetrics`); `Some(Err)` when the object is invalid.
///
/// An object that a conversion left with a current body of its original version (a v1alpha2
/// `destination.port` stored in v1alpha3) is read as that body, so it means what its author wrote
/// whichever version it is read in ([`crate::convert::as_written`]).
pub fn read(
    group: &str,
    version: &str,
    kind: &str,
    value: Value,
    own_ns: &str,
) -> Option<Result<ReadSmi, Findings>> {
    if let Some(written) = crate::convert::as_written(&value) {
        let api_version = written.get("apiVersion").and_then(Value::as_str);
        if let Some((g, v)) = api_version.and_then(|a| a.rsplit_once('/')) {
            let (g, v) = (g.to_string(), v.to_string());
            return read_as(&g, &v, kind, written, own_ns);
        }
    }
    read_as(group, version, kind, value, own_ns)
}

fn read_as(
    group: &str,
    version: &str,
    kind: &str,
    mut value: Value,
    own_ns: &str,
) -> Option<Result<ReadSmi, Findings>> {
    let mut notices = Vec::new();
    let top_level_layout = matches!(version, "v1alpha1" | "v1alpha2");
    let api_version = format!("{group}/{version}");
    let obj = value.as_object_mut()?;
    let result = match (group, kind) {
        (ACCESS_GROUP, "TrafficTarget") => {
            let fields: &[&str] = if version == "v1alpha1" {
                &["destination", "specs", "sources"]
            } else {
                &["destination", "rules", "sources"]
            };
            fix_layout(
                obj,
                fields,
                version == "v1alpha1",
                &api_version,
                &mut notices,
            );
            check_destination_port(obj, version, &mut notices);
            let body = |r: Result<_, Findings>| r.map(Body::TrafficTarget);
            match version {
                "v1alpha1" => typed::<access::v1alpha1::TrafficTarget>(value, &mut notices)
                    .and_then(|t| body(t.to_model(own_ns))),
                "v1alpha2" => typed::<access::v1alpha2::TrafficTarget>(value, &mut notices)
                    .and_then(|t| body(t.to_model(own_ns))),
                "v1alpha3" => typed::<access::v1alpha3::TrafficTarget>(value, &mut notices)
                    .and_then(|t| body(t.to_model(own_ns))),
                _ => Err(unsupported(
                    &api_version,
                    kind,
                    "v1alpha1, v1alpha2, v1alpha3",
                )),
            }
        }
        (SPECS_GROUP, "HTTPRouteGroup") => {
            fix_layout(
                obj,
                &["matches"],
                top_level_layout,
                &api_version,
                &mut notices,
            );
            let group = |m: &[specs::HttpRouteMatch], f: &str| {
                specs::route_group(m, f).map(Body::HttpRouteGroup)
            };
            match version {
                "v1alpha1" => typed::<specs::v1alpha1::HTTPRouteGroup>(value, &mut notices)
                    .and_then(|g| group(&g.spec.matches, "matches")),
                "v1alpha2" => typed::<specs::v1alpha2::HTTPRouteGroup>(value, &mut notices)
                    .and_then(|g| group(&g.spec.matches, "matches")),
                "v1alpha3" => typed::<specs::v1alpha3::HTTPRouteGroup>(value, &mut notices)
                    .and_then(|g| group(&g.spec.matches, "spec.matches")),
                "v1alpha4" => typed::<specs::v1alpha4::HTTPRouteGroup>(value, &mut notices)
                    .and_then(|g| group(&g.spec.matches, "spec.matches")),
                _ => Err(unsupported(&api_version, kind, "v1alpha1 to v1alpha4")),
            }
        }
        (SPECS_GROUP, "TCPRoute" | "UDPRoute") => {
            let all_ports = || Ok(Body::PortRoute(crate::model::PortRoute { ports: vec![] }));
            match (kind, version) {
                ("TCPRoute", "v1alpha1") => typed::<specs::v1alpha1::TCPRoute>(value, &mut notices)
                    .and_then(|_| all_ports()),
                ("TCPRoute", "v1alpha2") => typed::<specs::v1alpha2::TCPRoute>(value, &mut notices)
                    .and_then(|_| all_ports()),
                ("TCPRoute", "v1alpha3") => {
                    if !obj.contains_key("spec") {
                        obj.insert("spec".into(), Value::Object(Map::new()));
                    }
                    typed::<specs::v1alpha3::TCPRoute>(value, &mut notices)
                        .and_then(|_| all_ports())
                }
                (_, "v1alpha4") => {
                    // An object without `spec` covers every port, like the older TCPRoute versions.
                    if !obj.contains_key("spec") {
                        obj.insert("spec".into(), serde_json::json!({"matches": {"ports": []}}));
                    }
                    let port_route = |m: &specs::PortMatch| {
                        specs::port_route(m, "spec.matches").map(Body::PortRoute)
                    };
                    if kind == "TCPRoute" {
                        typed::<specs::v1alpha4::TCPRoute>(value, &mut notices)
                            .and_then(|r| port_route(&r.spec.matches))
                    } else {
                        typed::<specs::v1alpha4::UDPRoute>(value, &mut notices)
                            .and_then(|r| port_route(&r.spec.matches))
                    }
                }
                ("UDPRoute", _) => Err(unsupported(&api_version, kind, "v1alpha4")),
                _ => Err(unsupported(&api_version, kind, "v1alpha1 to v1alpha4")),
            }
        }
        (SPLIT_GROUP, "TrafficSplit") => {
            let body = |r: Result<_, Findings>| r.map(Body::TrafficSplit);
            match version {
                "v1alpha1" => typed::<split::v1alpha1::TrafficSplit>(value, &mut notices)
                    .and_then(|s| body(s.to_model())),
                "v1alpha2" => typed::<split::v1alpha2::TrafficSplit>(value, &mut notices)
                    .and_then(|s| body(s.to_model())),
                "v1alpha3" => typed::<split::v1alpha3::TrafficSplit>(value, &mut notices)
                    .and_then(|s| body(s.to_model())),
                "v1alpha4" => typed::<split::v1alpha4::TrafficSplit>(value, &mut notices)
                    .and_then(|s| body(s.to_model())),
                _ => Err(unsupported(&api_version, kind, "v1alpha1 to v1alpha4")),
            }
        }
        _ => return None,
    };
    // Every arm above handled a kind `Kind::parse` knows.
    let kind = Kind::parse(kind)?;
    Some(result.map(|body| ReadSmi {
        kind,
        body,
        notices,
    }))
}

fn unsupported(api_version: &str, kind: &str, known: &str) -> Findings {
    Finding::new(
        "apiVersion",
        format!("{kind} is not defined in {api_version}; known versions: {known}"),
    )
    .into()
}

/// Deserializes into `T`, turning unknown fields into notices and type errors into findings that
/// name the field.
fn typed<T: DeserializeOwned>(value: Value, notices: &mut Vec<Finding>) -> Result<T, Findings> {
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(value, &mut note);
    let result = serde_path_to_error::deserialize::<_, T>(de);
    for path in unknown {
        // kube-derive keeps apiVersion/kind itself; anything else unknown is pruned by the API server.
        if path != "apiVersion" && path != "kind" && !path.starts_with("status") {
            notices.push(Finding::new(
                path,
                "unknown field: the API server drops it and smidge ignores it",
            ));
        }
    }
    result.map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        Finding::new(field, e.into_inner().to_string()).into()
    })
}

/// Moves `fields` to where this version keeps them (top level for v1alpha1 layouts, under `spec`
/// otherwise) when the object has them in the other place, and says so.
fn fix_layout(
    obj: &mut Map<String, Value>,
    fields: &[&str],
    top_level: bool,
    api_version: &str,
    notices: &mut Vec<Finding>,
) {
    let misplaced: Vec<&str> = if top_level {
        let spec = obj.get("spec").and_then(Value::as_object);
        fields
            .iter()
            .copied()
            .filter(|f| !obj.contains_key(*f) && spec.is_some_and(|s| s.contains_key(*f)))
            .collect()
    } else {
        fields
            .iter()
            .copied()
            .filter(|f| {
                obj.contains_key(*f)
                    && !obj
                        .get("spec")
                        .and_then(Value::as_object)
                        .is_some_and(|s| s.contains_key(*f))
            })
            .collect()
    };
    for field in misplaced {
        if top_level {
            let moved = obj
                .get_mut("spec")
                .and_then(Value::as_object_mut)
                .and_then(|s| s.remove(field));
            if let Some(v) = moved {
                obj.insert(field.to_string(), v);
            }
            notices.push(Finding::new(
                format!("spec.{field}"),
                format!("{api_version} keeps `{field}` at the top level, not under `spec`; read here as `{field}`, but an API server drops it"),
            ));
        } else {
            if let Some(v) = obj.remove(field) {
                let spec = obj
                    .entry("spec")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(spec) = spec.as_object_mut() {
                    spec.insert(field.to_string(), v);
                }
            }
            notices.push(Finding::new(
                field,
                format!("`{field}` is at the top level (the v1alpha1/v1alpha2 layout), but {api_version} keeps it under `spec`; read here as `spec.{field}`, but an API server with the SMI CRDs drops it"),
            ));
        }
    }
}

/// access v1alpha3 removed `destination.port` and older versions type it as a number: say so (and
/// how it was written) instead of reporting a plain unknown field or a type error.
fn check_destination_port(obj: &mut Map<String, Value>, version: &str, notices: &mut Vec<Finding>) {
    let (holder, prefix) = if version == "v1alpha1" {
        (Some(&mut *obj), "")
    } else {
        (obj.get_mut("spec").and_then(Value::as_object_mut), "spec.")
    };
    let Some(dest) = holder
        .and_then(|h| h.get_mut("destination"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let field = format!("{prefix}destination.port");
    let written = |v: &Value| match v {
        Value::String(s) => format!("the string {s:?}"),
        other => other.to_string(),
    };
    if version == "v1alpha3" {
        if let Some(port) = dest.remove("port") {
            notices.push(Finding::new(
                field,
                format!("{}: access v1alpha3 has no destination port (it moved to TCPRoute/UDPRoute `spec.matches.ports`); ignored here, and an API server drops it", written(&port)),
            ));
        }
    } else if let Some(port @ Value::String(_)) = dest.get("port") {
        notices.push(Finding::new(
            field,
            format!("{}: the CRD types the port as a number; read here as a number, but an API server refuses it", written(port)),
        ));
    }
}
