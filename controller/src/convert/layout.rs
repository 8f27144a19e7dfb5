//! Where each SMI version keeps its fields, as pure functions on an object's body (everything but
//! `apiVersion`, `kind`, `metadata` and `status`). `up` goes from an older version to the hub and
//! fails only on a value the hub cannot hold; `down` goes from the hub to an older version and never
//! fails (reads of stored objects must not). Fields a function does not know stay where they are.

use serde_json::{Map, Value};

use super::weights;
use super::ConvertError;
use crate::smi::fields::NumberOrString;

type Body = Map<String, Value>;

/// `body` of a `kind` object in `version`, in the hub version.
pub fn up(kind: &str, version: &str, body: Body) -> Result<Body, ConvertError> {
    match (kind, version) {
        ("TrafficTarget", "v1alpha1") => {
            let mut body = body;
            let mut spec = take_spec(&mut body)?;
            if let Some(mut destination) = body.remove("destination") {
                if let Some(d) = destination.as_object_mut() {
                    d.remove("port");
                }
                spec.insert("destination".into(), destination);
            }
            move_into(&mut body, &mut spec, "specs", "rules");
            move_into(&mut body, &mut spec, "sources", "sources");
            body.insert("spec".into(), Value::Object(spec));
            Ok(body)
        }
        ("TrafficTarget", "v1alpha2") => {
            let mut body = body;
            if let Some(d) = body
                .get_mut("spec")
                .and_then(|s| s.get_mut("destination"))
                .and_then(Value::as_object_mut)
            {
                d.remove("port");
            }
            Ok(body)
        }
        ("HTTPRouteGroup", "v1alpha1" | "v1alpha2") => {
            let mut body = body;
            let mut spec = take_spec(&mut body)?;
            move_into(&mut body, &mut spec, "matches", "matches");
            body.insert("spec".into(), Value::Object(spec));
            Ok(body)
        }
        ("TCPRoute", "v1alpha1" | "v1alpha2" | "v1alpha3") => {
            let mut body = body;
            let mut spec = take_spec(&mut body)?;
            spec.entry("matches")
                .or_insert_with(|| serde_json::json!({ "ports": [] }));
            body.insert("spec".into(), Value::Object(spec));
            Ok(body)
        }
        ("TrafficSplit", "v1alpha1") => {
            let mut body = body;
            quantities_to_whole(&mut body)?;
            Ok(body)
        }
        // Versions whose layout is the hub's.
        _ => Ok(body),
    }
}

/// `body` of a `kind` object in the hub version, in `version`.
pub fn down(kind: &str, version: &str, body: Body) -> Body {
    let mut body = body;
    match (kind, version) {
        ("TrafficTarget", "v1alpha1") => {
            if let Some(Value::Object(mut spec)) = body.remove("spec") {
                move_into(&mut spec, &mut body, "destination", "destination");
                move_into(&mut spec, &mut body, "rules", "specs");
                move_into(&mut spec, &mut body, "sources", "sources");
                if !spec.is_empty() {
                    body.insert("spec".into(), Value::Object(spec));
                }
            }
        }
        ("HTTPRouteGroup", "v1alpha1" | "v1alpha2") => {
            if let Some(Value::Object(mut spec)) = body.remove("spec") {
                move_into(&mut spec, &mut body, "matches", "matches");
                if !spec.is_empty() {
                    body.insert("spec".into(), Value::Object(spec));
                }
            }
        }
        ("TCPRoute", "v1alpha1" | "v1alpha2" | "v1alpha3") => {
            if let Some(Value::Object(mut spec)) = body.remove("spec") {
                spec.remove("matches");
                if !spec.is_empty() || version == "v1alpha3" {
                    body.insert("spec".into(), Value::Object(spec));
                }
            }
        }
        ("TrafficSplit", "v1alpha1" | "v1alpha2") => {
            if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("matches");
                if version == "v1alpha1" {
                    whole_to_quantities(spec);
                }
            }
        }
        _ => {}
    }
    body
}

/// The body's `spec` (a new one when there is none); an `spec` that is not an object is refused.
fn take_spec(body: &mut Body) -> Result<Body, ConvertError> {
    match body.remove("spec") {
        None => Ok(Map::new()),
        Some(Value::Object(spec)) => Ok(spec),
        Some(other) => {
            body.insert("spec".into(), other);
            Err(ConvertError::new("spec", "expected an object"))
        }
    }
}

/// Moves `from[key]` to `to[new_key]`, if present.
fn move_into(from: &mut Body, to: &mut Body, key: &str, new_key: &str) {
    if let Some(v) = from.remove(key) {
        to.insert(new_key.into(), v);
    }
}

/// v1alpha1 quantity weights to whole weights with the same ratios (see [`weights`]).
fn quantities_to_whole(body: &mut Body) -> Result<(), ConvertError> {
    let Some(backends) = body
        .get_mut("spec")
        .and_then(|s| s.get_mut("backends"))
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    let mut at = Vec::new();
    let mut quantities = Vec::new();
    for (i, backend) in backends.iter().enumerate() {
        let Some(weight) = backend.get("weight") else {
            continue;
        };
        let quantity = serde_json::from_value::<NumberOrString>(weight.clone()).map_err(|_| {
            ConvertError::new(
                format!("spec.backends[{i}].weight"),
                format!("{weight} is not a quantity weight such as 1, 10, 500m or 1500m"),
            )
        })?;
        at.push(i);
        quantities.push(quantity);
    }
    let whole = weights::from_quantities(&quantities).map_err(|(j, e)| {
        ConvertError::new(
            format!("spec.backends[{}].weight", at.get(j).copied().unwrap_or(j)),
            e,
        )
    })?;
    for (i, w) in at.into_iter().zip(whole) {
        if let Some(b) = backends.get_mut(i).and_then(Value::as_object_mut) {
            b.insert("weight".into(), Value::from(w));
        }
    }
    Ok(())
}

/// Whole weights to quantities, written as Go's `resource.Quantity` writes them (strings).
fn whole_to_quantities(spec: &mut Body) {
    let Some(backends) = spec.get_mut("backends").and_then(Value::as_array_mut) else {
        return;
    };
    for b in backends.iter_mut().filter_map(Value::as_object_mut) {
        if let Some(Value::Number(n)) = b.get("weight") {
            let text = n.to_string();
            b.insert("weight".into(), Value::String(text));
        }
    }
}

/// Copies into `body` (of `version`, made by [`down`]) what a kept body of another older version
/// holds and the hub cannot, where `version` can hold it too: access v1alpha1 and v1alpha2 both
/// have `destination.port`, v1alpha3 has not.
pub fn carry(kind: &str, from_version: &str, from: &Body, version: &str, body: &mut Body) {
    if kind != "TrafficTarget" {
        return;
    }
    let holder = |v: &str, b: &Body| -> Option<Value> {
        match v {
            "v1alpha1" => b.get("destination").cloned(),
            "v1alpha2" => b.get("spec")?.get("destination").cloned(),
            _ => None,
        }
    };
    let Some(port) = holder(from_version, from).and_then(|d| d.get("port").cloned()) else {
        return;
    };
    let destination = match version {
        "v1alpha1" => body.get_mut("destination"),
        "v1alpha2" => body.get_mut("spec").and_then(|s| s.get_mut("destination")),
        _ => None,
    };
    if let Some(d) = destination.and_then(Value::as_object_mut) {
        d.insert("port".into(), port);
    }
}
