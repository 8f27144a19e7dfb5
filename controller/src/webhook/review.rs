//! One `ConversionReview` in, one out: every object converted to the desired version, in order.
//! If any object cannot be converted the review fails (the API server takes all or nothing), with
//! a message naming each such object and its field.

use kube::core::conversion::{ConversionRequest, ConversionResponse, ConversionReview};
use kube::core::Status;
use serde_json::Value;

use crate::convert;

/// How the message names an object: `TrafficSplit shop/web`.
fn object_name(object: &Value) -> String {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let meta = object.get("metadata");
    let text = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    let name = text("name").or(text("generateName")).unwrap_or("(unnamed)");
    match text("namespace") {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// Answers `request`.
pub fn review(request: ConversionReview) -> ConversionReview {
    let request = match ConversionRequest::from_review(request) {
        Ok(r) => r,
        Err(e) => {
            return ConversionResponse::invalid(Status::failure(&e.to_string(), "BadRequest"))
                .into_review()
        }
    };
    let desired = request.desired_api_version.clone();
    let mut converted = Vec::with_capacity(request.objects.len());
    let mut failures = Vec::new();
    for object in &request.objects {
        match convert::convert(object, &desired) {
            Ok(c) => converted.push(c),
            Err(e) => {
                let from = object
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                failures.push(format!(
                    "{} ({from} to {desired}): {e}",
                    object_name(object)
                ));
            }
        }
    }
    let response = ConversionResponse::for_request(request);
    if failures.is_empty() {
        response.success(converted)
    } else {
        tracing::info!(failures = ?failures, "refused a conversion");
        response.failure(Status::failure(&failures.join("; "), "Invalid"))
    }
    .into_review()
}

/// Answers the JSON body of a request; a body that is no `ConversionReview` gets an invalid one.
pub fn review_json(body: &[u8]) -> Vec<u8> {
    let answer = match serde_json::from_slice::<ConversionReview>(body) {
        Ok(request) => review(request),
        Err(e) => ConversionResponse::invalid(Status::failure(
            &format!("the body is not a ConversionReview: {e}"),
            "BadRequest",
        ))
        .into_review(),
    };
    serde_json::to_vec(&answer).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(objects: Vec<Value>, desired: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
            "request": {"uid": "u-1", "desiredAPIVersion": desired, "objects": objects}
        }))
        .unwrap()
    }

    fn split(name: &str, weight: Value) -> Value {
        json!({"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"service": "a", "backends": [{"service": "b", "weight": weight}]}})
    }

    fn answer(body: Vec<u8>) -> Value {
        serde_json::from_slice(&review_json(&body)).unwrap()
    }

    #[test]
    fn every_object_is_converted_in_order() {
        let a = answer(request(
            vec![split("one", json!("1")), split("two", json!("500m"))],
            "split.smi-spec.io/v1alpha4",
        ));
        assert_eq!(a["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(a["kind"], "ConversionReview");
        let r = &a["response"];
        assert_eq!(r["uid"], "u-1");
        assert_eq!(r["result"]["status"], "Success");
        let objects = r["convertedObjects"].as_array().unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0]["metadata"]["name"], "one");
        assert_eq!(objects[1]["metadata"]["name"], "two");
        assert_eq!(objects[1]["apiVersion"], "split.smi-spec.io/v1alpha4");
    }

    #[test]
    fn a_failed_object_fails_the_review_naming_the_object_and_field() {
        let a = answer(request(
            vec![split("good", json!("1")), split("bad", json!("lots"))],
            "split.smi-spec.io/v1alpha4",
        ));
        let r = &a["response"];
        assert_eq!(r["uid"], "u-1");
        assert_eq!(r["result"]["status"], "Failure");
        let message = r["result"]["message"].as_str().unwrap();
        assert!(message.contains("TrafficSplit shop/bad"), "{message}");
        assert!(message.contains("spec.backends[0].weight"), "{message}");
        assert!(!message.contains("shop/good"), "{message}");
    }

    #[test]
    fn a_body_that_is_no_review_gets_a_failure_not_a_panic() {
        for body in [
            &b"not json"[..],
            b"{}",
            b"{\"apiVersion\":\"x\",\"kind\":\"y\"}",
        ] {
            let a: Value = serde_json::from_slice(&review_json(body)).unwrap();
            assert_eq!(a["response"]["result"]["status"], "Failure", "{a}");
        }
    }
}
