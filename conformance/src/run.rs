//! Runs cases against a [`Target`]: steps in order, the first failing step fails its case and the
//! rest are not run (as kuttl does); every step is timed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::case::{parse_step, Case, Step};
use crate::matching::contains;
use crate::sample_app::{CallRequest, Counters};
use crate::target::Target;
use crate::traffic::TrafficCheck;

/// How one step went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    /// After an earlier step failed.
    NotRun,
}

#[derive(Clone, Debug)]
pub struct StepResult {
    pub name: String,
    pub outcome: Outcome,
    pub duration: Duration,
}

#[derive(Clone, Debug)]
pub struct CaseResult {
    pub name: String,
    pub specification: String,
    pub version: String,
    pub namespace: String,
    pub steps: Vec<StepResult>,
    pub duration: Duration,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.outcome == Outcome::Passed)
    }
}

/// The namespace a case runs in: a DNS label from its name.
pub fn namespace_for(case: &str) -> String {
    let clean: String = case
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut ns = format!("smidge-conf-{}", clean.trim_matches('-'));
    ns.truncate(63);
    ns.trim_end_matches('-').to_string()
}

/// Runs one case in a fresh namespace labelled for injection; removes the namespace after,
/// unless `keep`.
pub fn run_case(target: &mut dyn Target, case: &Case, keep: bool) -> CaseResult {
    let started = Instant::now();
    let namespace = namespace_for(&case.name);
    let mut steps = Vec::new();
    let ns_object = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {"smidge.io/inject": "enabled"}},
    });
    let mut failed = target
        .apply(&[ns_object])
        .err()
        .map(|e| format!("creating namespace {namespace}: {e}"));
    for files in &case.steps {
        let step_started = Instant::now();
        let outcome = match &failed {
            Some(_) if steps.is_empty() => Outcome::Failed(failed.clone().unwrap_or_default()),
            Some(_) => Outcome::NotRun,
            None => match parse_step(files, &namespace) {
                Err(e) => Outcome::Failed(e),
                Ok(step) => match run_step(target, &step, &namespace) {
                    Ok(()) => Outcome::Passed,
                    Err(e) => Outcome::Failed(e),
                },
            },
        };
        if let Outcome::Failed(e) = &outcome {
            failed = Some(e.clone());
        }
        tracing::info!(case = %case.name, step = %files.name, outcome = ?outcome, "step done");
        steps.push(StepResult {
            name: files.name.clone(),
            outcome,
            duration: step_started.elapsed(),
        });
    }
    if !keep {
        let _ = target.delete(&[crate::case::ObjectRef {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: namespace.clone(),
            namespace: String::new(),
        }]);
    }
    CaseResult {
        name: case.name.clone(),
        specification: case.specification.clone(),
        version: case.version.clone(),
        namespace,
        steps,
        duration: started.elapsed(),
    }
}

fn describe(v: &Value) -> String {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    match v.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Deletes, applies, then waits for the asserts and errors to hold, then runs the checks (whose
/// app names are Services in `namespace`).
pub fn run_step(target: &mut dyn Target, step: &Step, namespace: &str) -> Result<(), String> {
    if !step.deletes.is_empty() {
        target.delete(&step.deletes)?;
    }
    if !step.apply.is_empty() {
        target.apply(&step.apply)?;
    }
    if !step.asserts.is_empty() || !step.errors.is_empty() {
        let deadline = Instant::now() + Duration::from_secs(step.timeout);
        loop {
            let problems = object_problems(target, step)?;
            if problems.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("after {} s: {}", step.timeout, problems.join("; ")));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    for check in &step.checks {
        run_check(target, check, namespace)?;
    }
    Ok(())
}

fn object_problems(target: &mut dyn Target, step: &Step) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    for (expected, must_exist) in step
        .asserts
        .iter()
        .map(|a| (a, true))
        .chain(step.errors.iter().map(|e| (e, false)))
    {
        let kind = expected.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = expected
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{}: an assert needs metadata.name", describe(expected)))?;
        let namespace = expected
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        let api_version = expected
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let actual = target.get(api_version, kind, namespace, name)?;
        match (actual, must_exist) {
            (None, true) => problems.push(format!("{} does not exist", describe(expected))),
            (Some(a), true) => {
                if let Err(diff) = contains(expected, &a) {
                    problems.push(format!("{}: {diff}", describe(expected)));
                }
            }
            (Some(a), false) => {
                if contains(expected, &a).is_ok() {
                    problems.push(format!("{} still exists", describe(expected)));
                }
            }
            (None, false) => {}
        }
    }
    Ok(problems)
}

/// An app's base URL: its Service in the case's namespace.
fn app_url(app: &str, namespace: &str, port: u16) -> String {
    format!("http://{app}.{namespace}.svc.cluster.local:{port}")
}

fn run_check(target: &mut dyn Target, check: &TrafficCheck, namespace: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(check.timeout);
    let mut apps: Vec<String> = check.expect.iter().map(|e| e.app.clone()).collect();
    apps.extend(
        check
            .expect
            .iter()
            .filter_map(|e| e.more_than.as_ref().map(|o| o.app.clone())),
    );
    apps.sort();
    apps.dedup();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let problems = attempt(target, check, namespace, &apps);
        if problems.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "traffic check failed after {attempts} attempt(s) in {} s: {}",
                check.timeout,
                problems.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One try: reset, call, read, compare. Returns what did not hold.
fn attempt(
    target: &mut dyn Target,
    check: &TrafficCheck,
    namespace: &str,
    apps: &[String],
) -> Vec<String> {
    for app in &check.reset {
        // Errors are ignored, as upstream does: the counters are read (and checked) below.
        let _ = target.fetch(
            "DELETE",
            &format!("{}/metrics", app_url(app, namespace, check.port)),
            "",
        );
    }
    let mut problems = Vec::new();
    for call in &check.calls {
        let body = match serde_json::to_string(&CallRequest {
            url: call.url.clone(),
            method: call.method.clone(),
            ..Default::default()
        }) {
            Ok(b) => b,
            Err(e) => return vec![e.to_string()],
        };
        let call_url = format!("{}/call", app_url(&call.from, namespace, check.port));
        for _ in 0..call.times {
            if let Err(e) = target.fetch("POST", &call_url, &body) {
                problems.push(e);
                break;
            }
        }
    }
    let mut counters: BTreeMap<String, Counters> = BTreeMap::new();
    for app in apps {
        let url = format!("{}/metrics", app_url(app, namespace, check.port));
        match target.fetch("GET", &url, "") {
            Ok((200, body)) => match serde_json::from_str::<Counters>(&body) {
                Ok(c) => {
                    counters.insert(app.clone(), c);
                }
                Err(e) => problems.push(format!(
                    "{app}'s /metrics is not the sample app's JSON: {e}"
                )),
            },
            Ok((status, body)) => problems.push(format!(
                "reading {app}'s /metrics answered {status}: {}",
                body.lines().next().unwrap_or("")
            )),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        problems = crate::traffic::unmet(&check.expect, &counters);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_namespaces_are_dns_labels() {
        assert_eq!(
            namespace_for("traffic-access"),
            "smidge-conf-traffic-access"
        );
        assert_eq!(namespace_for("My_Case"), "smidge-conf-my-case");
        assert!(namespace_for(&"x".repeat(100)).len() <= 63);
    }
}
