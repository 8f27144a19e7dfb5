//! Every kind, every pair of versions, objects as the ecosystem writes them.

use serde_json::{json, Value};

use super::*;
use crate::model::Body;

/// Objects as Linkerd, OSM, Traefik Mesh, Argo Rollouts, Flagger and the SMI docs write them
/// (shared with the end-to-end test, which applies them to a real API server).
fn samples() -> Vec<(String, Value)> {
    let all: Vec<Value> =
        serde_json::from_str(include_str!("../../tests/data/smi-samples.json")).unwrap();
    all.into_iter()
        .map(|s| (s["what"].as_str().unwrap().to_string(), s["object"].clone()))
        .collect()
}

fn group_version(object: &Value) -> (String, String) {
    let api = object["apiVersion"].as_str().unwrap();
    let (g, v) = api.rsplit_once('/').unwrap();
    (g.to_string(), v.to_string())
}

fn versions_of(object: &Value) -> KindVersions {
    let (g, _) = group_version(object);
    kind_versions(&g, object["kind"].as_str().unwrap()).unwrap()
}

fn to(object: &Value, version: &str) -> Value {
    let kv = versions_of(object);
    convert(object, &format!("{}/{version}", kv.group))
        .unwrap_or_else(|e| panic!("{object} to {version}: {e}"))
}

/// The model `smi::read` gives.
fn model(object: &Value) -> Body {
    let (g, v) = group_version(object);
    let kind = object["kind"].as_str().unwrap();
    crate::smi::read(&g, &v, kind, object.clone(), "shop")
        .unwrap()
        .unwrap_or_else(|e| panic!("{object}: {e}"))
        .body
}

#[test]
fn every_object_round_trips_exactly_through_every_version() {
    for (what, object) in samples() {
        let (_, own) = group_version(&object);
        for version in versions_of(&object).versions {
            let there = to(&object, version);
            assert_eq!(
                there["apiVersion"],
                format!("{}/{version}", versions_of(&object).group)
            );
            let back = to(&there, &own);
            assert_eq!(back, object, "{what}: {own} → {version} → {own}");
        }
    }
}

#[test]
fn every_chain_of_versions_comes_back_exactly() {
    for (what, object) in samples() {
        let (_, own) = group_version(&object);
        let versions = versions_of(&object).versions;
        for a in versions {
            for b in versions {
                let back = to(&to(&to(&object, a), b), &own);
                assert_eq!(back, object, "{what}: {own} → {a} → {b} → {own}");
            }
        }
    }
}

#[test]
fn every_converted_object_reads_as_the_original() {
    for (what, object) in samples() {
        let original = model(&object);
        for version in versions_of(&object).versions {
            let converted = to(&object, version);
            assert_eq!(
                model(&converted),
                original,
                "{what} read in {version}: {converted}"
            );
        }
    }
}

#[test]
fn older_objects_become_their_newest_version_twins() {
    let twins = [
        (
            json!({"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
                "metadata": {"name": "s"}, "spec": {"service": "a", "backends": [
                    {"service": "b", "weight": "10"}, {"service": "c", "weight": 90}]}}),
            json!({"apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
                "metadata": {"name": "s"}, "spec": {"service": "a", "backends": [
                    {"service": "b", "weight": 10}, {"service": "c", "weight": 90}]}}),
        ),
        (
            json!({"apiVersion": "access.smi-spec.io/v1alpha1", "kind": "TrafficTarget",
                "metadata": {"name": "t"},
                "destination": {"kind": "ServiceAccount", "name": "b"},
                "specs": [{"kind": "TCPRoute", "name": "r"}],
                "sources": [{"kind": "ServiceAccount", "name": "a"}]}),
            json!({"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
                "metadata": {"name": "t"}, "spec": {
                "destination": {"kind": "ServiceAccount", "name": "b"},
                "rules": [{"kind": "TCPRoute", "name": "r"}],
                "sources": [{"kind": "ServiceAccount", "name": "a"}]}}),
        ),
        (
            json!({"apiVersion": "specs.smi-spec.io/v1alpha2", "kind": "HTTPRouteGroup",
                "metadata": {"name": "g"}, "matches": [{"name": "m", "pathRegex": "/x"}]}),
            json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
                "metadata": {"name": "g"}, "spec": {"matches": [{"name": "m", "pathRegex": "/x"}]}}),
        ),
        (
            json!({"apiVersion": "specs.smi-spec.io/v1alpha2", "kind": "TCPRoute",
                "metadata": {"name": "r"}}),
            json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
                "metadata": {"name": "r"}, "spec": {"matches": {"ports": []}}}),
        ),
    ];
    for (old, twin) in twins {
        let hub = versions_of(&old).hub();
        let up = to(&old, hub);
        // The weight 90 written as a number comes back as the string Go writes: kept aside.
        let mut without = up.clone();
        if let Some(m) = without["metadata"].as_object_mut() {
            m.remove("annotations");
        }
        assert_eq!(without, twin, "{old}");
        assert_eq!(model(&old), model(&twin), "{old}");
        assert_eq!(to(&twin, &group_version(&old).1), {
            let mut o = old.clone();
            if o["kind"] == "TrafficSplit" {
                o["spec"]["backends"][1]["weight"] = json!("90");
            }
            o
        });
    }
}

#[test]
fn quantity_weights_keep_their_ratio_and_their_text() {
    let old = &samples()[0].1;
    let hub = to(old, "v1alpha4");
    assert_eq!(hub["spec"]["backends"][0]["weight"], json!(1));
    assert_eq!(hub["spec"]["backends"][1]["weight"], json!(2));
    let kept: Value =
        serde_json::from_str(hub["metadata"]["annotations"][ANNOTATION].as_str().unwrap()).unwrap();
    assert_eq!(kept["v1alpha1"]["spec"]["backends"][0]["weight"], "500m");
    let back = to(&hub, "v1alpha1");
    assert_eq!(back["spec"]["backends"][0]["weight"], "500m");
    assert!(back["metadata"].get("annotations").is_none(), "{back}");
}

#[test]
fn a_v1alpha2_destination_port_is_kept_and_still_limits_access_in_v1alpha3() {
    let old = &samples()[9].1;
    let hub = to(old, "v1alpha3");
    assert!(hub["spec"]["destination"].get("port").is_none(), "{hub}");
    let crate::model::Body::TrafficTarget(tt) = model(&hub) else {
        panic!("not a TrafficTarget");
    };
    assert_eq!(tt.destination_port, Some(8080));
    // v1alpha1 can hold the port too: read there, it shows it.
    let v1 = to(&hub, "v1alpha1");
    assert_eq!(v1["destination"]["port"], "8080", "{v1}");
    assert_eq!(to(&v1, "v1alpha2"), *old);
}

#[test]
fn what_an_older_version_cannot_express_comes_back_from_it() {
    let hub = &samples()[7].1;
    let old = to(hub, "v1alpha2");
    assert!(old["spec"].get("matches").is_none(), "{old}");
    assert_eq!(old["status"], hub["status"]);
    assert_eq!(old["metadata"]["annotations"]["team"], "web");
    assert_eq!(to(&old, "v1alpha4"), *hub);
    // A v1alpha4 TCPRoute's ports in v1alpha3, which has none.
    let ports = &samples()[18].1;
    let v3 = to(ports, "v1alpha3");
    assert_eq!(v3["spec"], json!({}));
    assert_eq!(to(&v3, "v1alpha4"), *ports);
}

#[test]
fn an_edit_in_another_version_wins_over_the_kept_body() {
    let old = &samples()[0].1;
    let mut hub = to(old, "v1alpha4");
    hub["spec"]["backends"][0]["weight"] = json!(3);
    let back = to(&hub, "v1alpha1");
    assert_eq!(back["spec"]["backends"][0]["weight"], "3");
    assert_eq!(back["spec"]["backends"][1]["weight"], "2");
    assert!(back["metadata"].get("annotations").is_none(), "{back}");
    // And the edited v1alpha2 form of a v1alpha4 split with matches loses them for good.
    let mut v2 = to(&samples()[7].1, "v1alpha2");
    v2["spec"]["service"] = json!("other");
    let up = to(&v2, "v1alpha4");
    assert!(up["spec"].get("matches").is_none(), "{up}");
    assert!(
        up["metadata"]["annotations"].get(ANNOTATION).is_none(),
        "{up}"
    );
}

#[test]
fn unknown_fields_metadata_and_status_carry_over() {
    let object = json!({"apiVersion": "access.smi-spec.io/v1alpha1", "kind": "TrafficTarget",
        "metadata": {"name": "t", "namespace": "n", "uid": "u", "resourceVersion": "7",
            "labels": {"a": "b"}, "finalizers": ["x"]},
        "destination": {"kind": "ServiceAccount", "name": "b", "extra": 1},
        "specs": [{"kind": "TCPRoute", "name": "r"}],
        "sources": [{"kind": "ServiceAccount", "name": "a"}],
        "status": {"conditions": []},
        "x-unknown": {"kept": true}});
    let hub = to(&object, "v1alpha3");
    assert_eq!(hub["metadata"], object["metadata"]);
    assert_eq!(hub["status"], object["status"]);
    assert_eq!(hub["x-unknown"], object["x-unknown"]);
    assert_eq!(hub["spec"]["destination"]["extra"], 1);
    assert_eq!(to(&hub, "v1alpha1"), object);
}

#[test]
fn a_weight_that_is_no_quantity_is_refused_naming_the_field() {
    let object = json!({"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
        "metadata": {"name": "s"}, "spec": {"service": "a", "backends": [
            {"service": "b", "weight": "1"}, {"service": "c", "weight": "lots"}]}});
    let e = convert(&object, "split.smi-spec.io/v1alpha4").unwrap_err();
    assert_eq!(e.field, "spec.backends[1].weight");
    assert!(e.message.contains("lots"), "{e}");
    let bad_type = json!({"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
        "metadata": {"name": "s"}, "spec": {"service": "a", "backends": [
            {"service": "b", "weight": [1]}]}});
    let e = convert(&bad_type, "split.smi-spec.io/v1alpha4").unwrap_err();
    assert_eq!(e.field, "spec.backends[0].weight");
}

#[test]
fn kinds_versions_and_groups_that_do_not_exist_are_refused() {
    let udp = &samples()[19].1;
    let e = convert(udp, "specs.smi-spec.io/v1alpha3").unwrap_err();
    assert_eq!(e.field, "apiVersion");
    assert!(e.message.contains("UDPRoute"), "{e}");
    let e = convert(udp, "split.smi-spec.io/v1alpha4").unwrap_err();
    assert!(e.message.contains("another API group"), "{e}");
    let e = convert(
        &json!({"apiVersion": "split.smi-spec.io/v1alpha9", "kind": "TrafficSplit"}),
        "split.smi-spec.io/v1alpha4",
    )
    .unwrap_err();
    assert!(e.message.contains("v1alpha1, v1alpha2"), "{e}");
    let e = convert(
        &json!({"apiVersion": "metrics.smi-spec.io/v1alpha1", "kind": "TrafficMetrics"}),
        "metrics.smi-spec.io/v1alpha2",
    )
    .unwrap_err();
    assert_eq!(e.field, "kind");
    assert!(convert(&json!([1]), "split.smi-spec.io/v1alpha4").is_err());
    assert!(convert(&samples()[1].1, "v1alpha4").is_err());
}

#[test]
fn a_hand_edited_conversion_annotation_is_ignored() {
    let mut hub = to(&samples()[0].1, "v1alpha4");
    hub["metadata"]["annotations"][ANNOTATION] = json!("{not json");
    let old = to(&hub, "v1alpha1");
    assert_eq!(old["spec"]["backends"][0]["weight"], "1");
    assert_eq!(old["spec"]["backends"][1]["weight"], "2");
}
