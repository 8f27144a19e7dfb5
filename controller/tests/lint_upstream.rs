//! `smidge lint` over the upstream conformance steps reports exactly their known defects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use smidge_controller::lint::{lint, LintProblem};

fn steps(suite: &str, case: &str) -> BTreeMap<String, Vec<(PathBuf, String)>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/upstream/conformance")
        .join(suite)
        .join("smi-conformance/test-gen/test-yamls")
        .join(case);
    let mut by_step: BTreeMap<String, Vec<(PathBuf, String)>> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let step = name[..2].to_string();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("<NAMESPACE>", "kudo-test-x");
        by_step
            .entry(step)
            .or_default()
            .push((PathBuf::from(name), text));
    }
    by_step
}

/// Lints each step's files together; returns (file, field) of every problem.
fn problems(suite: &str, case: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (_, files) in steps(suite, case) {
        for p in lint(&files) {
            let LintProblem {
                file,
                field,
                object,
                ..
            } = p;
            out.push((file.display().to_string(), object, field));
        }
    }
    out.sort();
    out
}

fn owned(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

#[test]
fn current_suite_traffic_access_and_split_are_clean() {
    assert_eq!(problems("", "traffic-access"), vec![]);
    assert_eq!(problems("", "traffic-split"), vec![]);
}

#[test]
fn current_suite_traffic_spec_reports_the_v1alpha1_layout_matches_and_the_string_port() {
    let rg = "HTTPRouteGroup kudo-test-x/http-rg";
    let tt = "TrafficTarget kudo-test-x/service-targets";
    assert_eq!(
        problems("", "traffic-spec"),
        owned(&[
            ("03-assert.yaml", rg, "matches"),
            ("03-assert.yaml", tt, "spec.destination.port"),
            ("03-install.yaml", rg, "matches"),
            ("03-install.yaml", tt, "spec.destination.port"),
            // Step 05 re-applies "the same TrafficTarget" (REFERENCE §8.4), string port included.
            ("05-assert.yaml", tt, "spec.destination.port"),
            ("05-install.yaml", tt, "spec.destination.port"),
        ])
    );
}

#[test]
fn pre_v0_6_0_suite_reports_only_the_string_port() {
    assert_eq!(problems("pre-v0.6.0@5088dfab", "traffic-access"), vec![]);
    assert_eq!(problems("pre-v0.6.0@5088dfab", "traffic-split"), vec![]);
    let tt = "TrafficTarget kudo-test-x/service-targets";
    assert_eq!(
        problems("pre-v0.6.0@5088dfab", "traffic-spec"),
        owned(&[
            ("03-assert.yaml", tt, "destination.port"),
            ("03-install.yaml", tt, "destination.port"),
            ("05-assert.yaml", tt, "destination.port"),
            ("05-install.yaml", tt, "destination.port"),
        ])
    );
}
