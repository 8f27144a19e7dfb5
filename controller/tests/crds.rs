//! The committed CRDs are what `smidge crds` generates, they name and serve what upstream does,
//! and every SMI object of the upstream conformance steps validates against them.

use std::path::{Path, PathBuf};

use serde_json::Value;
use smidge_controller::crds;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn upstream() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/upstream")
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    smidge_controller::manifest::split_documents(&text)
        .into_iter()
        .filter_map(|(_, doc)| serde_yaml_ng::from_str::<Value>(&doc).ok())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn committed_crds_match_the_generated_ones() {
    for (name, crd) in crds::all() {
        let path = repo().join("crds/smi").join(name);
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            committed,
            crds::to_yaml(&crd).unwrap(),
            "{} is stale: run `cargo run -p smidge-cli -- crds --dir crds/smi` and commit",
            path.display()
        );
    }
}

#[test]
fn crds_use_upstream_group_names_short_names_and_served_versions() {
    for (name, ours) in crds::all() {
        let theirs = yaml_docs(&upstream().join("crds").join(name)).remove(0);
        let ours = serde_json::to_value(&ours).unwrap();
        assert_eq!(
            ours["metadata"]["name"], theirs["metadata"]["name"],
            "{name}"
        );
        assert_eq!(ours["spec"]["group"], theirs["spec"]["group"], "{name}");
        assert_eq!(ours["spec"]["scope"], theirs["spec"]["scope"], "{name}");
        for field in ["kind", "plural", "singular", "shortNames"] {
            assert_eq!(
                ours["spec"]["names"][field], theirs["spec"]["names"][field],
                "{name}: names.{field}"
            );
        }
        let versions = |crd: &Value, served_only: bool| -> Vec<(String, bool)> {
            crd["spec"]["versions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| !served_only || v["served"] == Value::Bool(true))
                .map(|v| {
                    (
                        v["name"].as_str().unwrap().to_string(),
                        v["storage"].as_bool().unwrap(),
                    )
                })
                .collect()
        };
        // Upstream serves only the newest version; smidge serves every version (converting
        // through its webhook) and stores the one upstream stores.
        let ours_served = versions(&ours, true);
        assert_eq!(
            ours_served,
            versions(&ours, false),
            "{name}: every version served"
        );
        let storage = |vs: &[(String, bool)]| -> Vec<String> {
            vs.iter()
                .filter(|(_, s)| *s)
                .map(|(n, _)| n.clone())
                .collect()
        };
        assert_eq!(
            storage(&ours_served),
            storage(&versions(&theirs, true)),
            "{name}: storage version"
        );
        for (version, _) in versions(&theirs, false) {
            assert!(
                ours_served.iter().any(|(v, _)| *v == version),
                "{name}: upstream lists {version}, smidge does not serve it"
            );
        }
        let kind = ours["spec"]["names"]["kind"].as_str().unwrap();
        let group = ours["spec"]["group"].as_str().unwrap();
        let expected = smidge_controller::convert::kind_versions(group, kind).unwrap();
        assert_eq!(
            ours_served
                .iter()
                .map(|(v, _)| v.as_str())
                .collect::<Vec<_>>(),
            expected.versions,
            "{name}"
        );
        let conversion = &ours["spec"]["conversion"];
        if expected.versions.len() > 1 {
            assert_eq!(conversion["strategy"], "Webhook", "{name}");
            assert_eq!(
                conversion["webhook"]["clientConfig"]["service"],
                serde_json::json!({"namespace": "smidge-system", "name": "smidge-controller", "path": "/convert", "port": 443}),
                "{name}"
            );
        } else {
            assert_eq!(conversion["strategy"], "None", "{name}");
        }
        for v in ours["spec"]["versions"].as_array().unwrap() {
            assert_eq!(v["subresources"]["status"], serde_json::json!({}), "{name}");
            let conditions =
                &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
            assert_eq!(
                conditions["x-kubernetes-list-map-keys"],
                serde_json::json!(["type"])
            );
            let columns: Vec<&str> = v["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert!(columns.contains(&"Accepted"), "{name}: {columns:?}");
        }
    }
    assert_eq!(crds::all().len(), 5, "one CRD per SMI kind");
}

fn conformance_files() -> Vec<PathBuf> {
    let root = upstream().join("conformance/smi-conformance/test-gen/test-yamls");
    let mut files = Vec::new();
    for case in ["traffic-access", "traffic-spec", "traffic-split"] {
        for entry in std::fs::read_dir(root.join(case)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_smi_object_of_the_upstream_conformance_steps_validates_against_our_schemas() {
    let schemas: Vec<(String, String, Value)> = crds::all()
        .into_iter()
        .flat_map(|(_, crd)| {
            crd.spec
                .versions
                .iter()
                .map(|v| {
                    let schema = serde_json::to_value(
                        v.schema
                            .as_ref()
                            .unwrap()
                            .open_api_v3_schema
                            .as_ref()
                            .unwrap(),
                    )
                    .unwrap();
                    (
                        format!("{}/{}", crd.spec.group, v.name),
                        crd.spec.names.kind.clone(),
                        schema,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut checked = 0;
    for file in conformance_files() {
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("<NAMESPACE>", "kudo-test-x");
        let tmp = std::env::temp_dir().join(format!("smidge-crd-test-{}", std::process::id()));
        std::fs::write(&tmp, text).unwrap();
        for doc in yaml_docs(&tmp) {
            let (api, kind) = (
                doc["apiVersion"].as_str().unwrap_or(""),
                doc["kind"].as_str().unwrap_or(""),
            );
            if !api.contains("smi-spec.io") {
                continue;
            }
            let (_, _, schema) = schemas
                .iter()
                .find(|(a, k, _)| a == api && k == kind)
                .unwrap_or_else(|| {
                    panic!("{}: {kind} {api} is not served by our CRDs", file.display())
                });
            let validator = jsonschema::validator_for(schema).unwrap();
            let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "{}: {kind} {}: {errors:?}",
                file.display(),
                doc["metadata"]["name"]
            );
            checked += 1;
        }
        let _ = std::fs::remove_file(&tmp);
    }
    assert_eq!(checked, 22, "SMI objects in the upstream conformance steps");
}
