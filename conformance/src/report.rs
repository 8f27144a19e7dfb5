//! The run's report: a table per case and step for people, and JSON in the shape Meshery stores
//! conformance results in (REFERENCE.md §8.5), with every step added.

use std::time::Duration;

use serde_json::{json, Value};

use crate::run::{CaseResult, Outcome};

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// Steps passed, and steps in all.
fn totals(results: &[CaseResult]) -> (usize, usize) {
    let steps = results.iter().flat_map(|c| &c.steps);
    let passed = steps
        .clone()
        .filter(|s| s.outcome == Outcome::Passed)
        .count();
    (passed, steps.count())
}

/// One table per case: step, result, duration, and why a step failed.
pub fn table(results: &[CaseResult]) -> String {
    let mut out = String::new();
    for case in results {
        let passed = case
            .steps
            .iter()
            .filter(|s| s.outcome == Outcome::Passed)
            .count();
        out.push_str(&format!(
            "\n{} ({}, namespace {}): {}/{} steps passed in {}\n",
            case.name,
            case.version,
            case.namespace,
            passed,
            case.steps.len(),
            secs(case.duration)
        ));
        let width = case
            .steps
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        out.push_str(&format!(
            "  {:<width$}  {:<7}  {:>7}  detail\n",
            "step", "result", "time"
        ));
        for s in &case.steps {
            let (result, detail) = match &s.outcome {
                Outcome::Passed => ("PASSED", String::new()),
                Outcome::Failed(why) => ("FAILED", why.clone()),
                Outcome::NotRun => ("NOT RUN", "an earlier step failed".to_string()),
            };
            out.push_str(&format!(
                "  {:<width$}  {result:<7}  {:>7}  {detail}\n",
                s.name,
                secs(s.duration)
            ));
        }
    }
    let (passed, total) = totals(results);
    out.push_str(&format!(
        "\n{passed}/{total} steps passed; {}/{} cases passed\n",
        results.iter().filter(|c| c.passed()).count(),
        results.len()
    ));
    out
}

/// Meshery's result shape: cases passed counts steps, capability is FULL when every step
/// passed, HALF when at least half did, else NONE.
pub fn meshery_json(results: &[CaseResult], mesh_version: &str, date: &str) -> Value {
    let (passed, total) = totals(results);
    let details: Vec<Value> = results
        .iter()
        .map(|c| {
            let ok = c.steps.iter().filter(|s| s.outcome == Outcome::Passed).count();
            let first_failure = c.steps.iter().find_map(|s| match &s.outcome {
                Outcome::Failed(why) => Some((s.name.clone(), why.clone())),
                _ => None,
            });
            let capability = if ok == c.steps.len() {
                "FULL"
            } else if ok >= c.steps.len() / 2 {
                "HALF"
            } else {
                "NONE"
            };
            json!({
                "smi_specification": c.specification,
                "smi_version": c.version,
                "time": secs(c.duration),
                "assertions": c.steps.len().to_string(),
                "result": match &first_failure {
                    None => "All test passed".to_string(),
                    Some((step, _)) => format!("failed in step {step}"),
                },
                "reason": first_failure.map(|(_, why)| why).unwrap_or_default(),
                "capability": capability,
                "status": if c.passed() { "PASSED" } else { "FAILED" },
                "steps": c.steps.iter().map(|s| json!({
                    "name": s.name,
                    "time": secs(s.duration),
                    "status": match &s.outcome {
                        Outcome::Passed => "PASSED",
                        Outcome::Failed(_) => "FAILED",
                        Outcome::NotRun => "NOT RUN",
                    },
                    "reason": match &s.outcome { Outcome::Failed(w) => w.clone(), _ => String::new() },
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let percent = if total == 0 {
        0.0
    } else {
        (passed as f64 * 10_000.0 / total as f64).round() / 100.0
    };
    json!({
        "id": format!("smidge-{date}"),
        "date": date,
        "mesh_name": "smidge",
        "mesh_version": mesh_version,
        "cases_passed": passed.to_string(),
        "passing_percentage": format!("{percent:.2}"),
        "status": if passed == total && total > 0 { "PASSED" } else { "FAILED" },
        "more_details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::StepResult;

    fn result(outcomes: Vec<Outcome>) -> CaseResult {
        CaseResult {
            name: "traffic-split".into(),
            specification: "traffic-split".into(),
            version: "v0.6.0/v1alpha4".into(),
            namespace: "smidge-conf-traffic-split".into(),
            steps: outcomes
                .into_iter()
                .enumerate()
                .map(|(i, outcome)| StepResult {
                    name: format!("{:02}-step", i + 1),
                    outcome,
                    duration: Duration::from_millis(1500),
                })
                .collect(),
            duration: Duration::from_secs(3),
        }
    }

    #[test]
    fn a_failed_step_names_itself_in_the_table_and_the_json() {
        let r = vec![result(vec![
            Outcome::Passed,
            Outcome::Failed("app-c ReqReceived has 50 entries, expected exactly 0".into()),
            Outcome::NotRun,
        ])];
        let t = table(&r);
        assert!(
            t.contains("02-step  FAILED    1.500s  app-c ReqReceived"),
            "{t}"
        );
        assert!(t.contains("03-step  NOT RUN"), "{t}");
        assert!(t.contains("1/3 steps passed; 0/1 cases passed"), "{t}");
        let j = meshery_json(&r, "0.1.0", "2026-11-22");
        assert_eq!(j["cases_passed"], "1");
        assert_eq!(j["passing_percentage"], "33.33");
        assert_eq!(j["more_details"][0]["result"], "failed in step 02-step");
        assert_eq!(j["more_details"][0]["capability"], "HALF");
        assert_eq!(j["more_details"][0]["steps"][1]["status"], "FAILED");
    }
}
