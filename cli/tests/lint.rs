//! `smidge lint` as users run it: one line per problem with file and object, exit 1 on problems.

use std::process::Command;

fn smidge(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smidge"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn clean_files_exit_zero_and_problems_exit_one_with_file_and_object() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: rg, namespace: ns}\nspec: {matches: [{name: all, pathRegex: '.*'}]}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: skipped}\n",
    )
    .unwrap();
    assert_eq!(
        smidge(&["lint", good.to_str().unwrap()]),
        (0, String::new())
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: rg2, namespace: ns}\nspec: {matches: [{name: x, pathRegex: '(unclosed'}]}\n---\n\
         apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: tt, namespace: ns}\n\
         spec: {destination: {kind: ServiceAccount, name: b}, sources: [{kind: ServiceAccount, name: a}], rules: [{kind: HTTPRouteGroup, name: rg, matches: [nope]}]}\n",
    )
    .unwrap();
    let (code, out) = smidge(&["lint", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("bad.yaml: HTTPRouteGroup ns/rg2: spec.matches[0].pathRegex:"),
        "{out}"
    );
    assert!(lines[1].contains("bad.yaml: TrafficTarget ns/tt: spec.rules[0].matches[0]: HTTPRouteGroup ns/rg has no match named \"nope\""), "{out}");
}

#[test]
fn crds_prints_the_five_smi_crds() {
    let (code, out) = smidge(&["crds"]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("kind: CustomResourceDefinition").count(), 5);
}
