//! The conformance runner against the local cluster: the 24 upstream steps (fixed) pass, and
//! each kind of traffic check fails its step when the policy under test is wrong.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use smidge_e2e::binary;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/cases")
}

/// Runs the runner on `dir`; returns its exit code, its table and its JSON report.
fn run(dir: &Path) -> anyhow::Result<(i32, String, Value)> {
    let report = tempfile::NamedTempFile::new()?;
    let out = Command::new(binary("smidge-conformance", "smidge-conformance")?)
        .args(["run", "--target", "local", "--report"])
        .arg(report.path())
        .arg(dir)
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let json: Value = serde_json::from_slice(&std::fs::read(report.path())?)
        .map_err(|e| anyhow::anyhow!("{e}: {table}\n{}", String::from_utf8_lossy(&out.stderr)))?;
    Ok((out.status.code().unwrap_or(-1), table, json))
}

/// Every step of the report as (case, step, status).
fn steps(report: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for case in report["more_details"].as_array().into_iter().flatten() {
        for s in case["steps"].as_array().into_iter().flatten() {
            out.push((
                case["smi_specification"].as_str().unwrap_or("").to_string(),
                s["name"].as_str().unwrap_or("").to_string(),
                s["status"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    out
}

#[test]
fn the_fixed_upstream_suite_passes_all_24_steps() -> anyhow::Result<()> {
    let (code, table, report) = run(&cases_dir())?;
    assert_eq!(code, 0, "{table}");
    assert_eq!(report["cases_passed"], "24", "{table}");
    assert_eq!(report["passing_percentage"], "100.00");
    let all = steps(&report);
    assert_eq!(all.len(), 24);
    assert!(all.iter().all(|(_, _, s)| s == "PASSED"), "{all:?}");
    // The table names every step with its result and duration.
    for (_, step, _) in &all {
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with(step.as_str()))
            .unwrap_or_else(|| panic!("{step} is not in the table:\n{table}"));
        assert!(line.contains("PASSED") && line.contains('s'), "{line}");
    }
    Ok(())
}

/// Copies a case, with `edit` applied to one file and traffic checks given a short timeout.
fn broken_case(
    into: &Path,
    case: &str,
    file: &str,
    edit: impl Fn(&str) -> String,
) -> anyhow::Result<()> {
    let from = cases_dir().join(case);
    let to = into.join(case);
    std::fs::create_dir_all(&to)?;
    for entry in std::fs::read_dir(&from)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let mut text = std::fs::read_to_string(&path)?;
        if name == file {
            let edited = edit(&text);
            assert_ne!(edited, text, "the edit of {case}/{file} changed nothing");
            text = edited;
        }
        text = text.replace("kind: TrafficCheck\n", "kind: TrafficCheck\ntimeout: 3\n");
        std::fs::write(to.join(&name), text)?;
    }
    Ok(())
}

#[test]
fn each_kind_of_traffic_check_fails_its_step_under_a_wrong_policy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Access: the TrafficTarget that admits app-a is missing (only its TCPRoute is applied).
    broken_case(dir.path(), "traffic-access", "04-install.yaml", |t| {
        t.split("---")
            .filter(|d| !d.contains("kind: TrafficTarget"))
            .collect::<Vec<_>>()
            .join("---")
    })?;
    std::fs::remove_file(dir.path().join("traffic-access/04-assert.yaml"))?;
    // Spec: the route admits every method, so POST gets through.
    broken_case(dir.path(), "traffic-spec", "05-install.yaml", |t| {
        t.replace("methods: \n    - GET", "methods: [\"*\"]")
    })?;
    std::fs::remove_file(dir.path().join("traffic-spec/05-assert.yaml"))?;
    // Split: the weights are swapped.
    broken_case(dir.path(), "traffic-split", "04-install.yaml", |t| {
        t.replace("weight: 1", "weight: X")
            .replace("weight: 0", "weight: 1")
            .replace("weight: X", "weight: 0")
    })?;
    std::fs::remove_file(dir.path().join("traffic-split/04-assert.yaml"))?;

    let (code, table, report) = run(dir.path())?;
    assert_eq!(code, 1, "{table}");
    let failed: Vec<(String, String)> = steps(&report)
        .into_iter()
        .filter(|(_, _, s)| s == "FAILED")
        .map(|(c, s, _)| (c, s))
        .collect();
    assert_eq!(
        failed,
        [
            (
                "traffic-access".to_string(),
                "05-trafficAllowed".to_string()
            ),
            ("traffic-spec".to_string(), "06-trafficMethod".to_string()),
            ("traffic-split".to_string(), "05-trafficOnlyB".to_string()),
        ],
        "{table}"
    );
    assert!(
        table.contains("app-b ReqReceived has 0 entries, expected exactly 50"),
        "{table}"
    );
    Ok(())
}
