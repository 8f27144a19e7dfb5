//! The report as text (Linkerd's layout: category, underline, `√`/`‼`/`×` lines, a failure's
//! error and hint indented four spaces, the overall result last), as short text (failures and
//! warnings only), or as JSON (Linkerd's shape).

use serde_json::json;

use super::{Outcome, Report, Severity};

/// How `-o` prints the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Every check.
    #[default]
    Table,
    /// Only failed checks and warnings.
    Short,
    Json,
}

fn mark(o: &Outcome) -> &'static str {
    match (&o.error, o.check.severity) {
        (None, _) => "√",
        (Some(_), Severity::Warning) => "‼",
        (Some(_), _) => "×",
    }
}

/// The report in `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Table => text(report, false),
        Format::Short => text(report, true),
        Format::Json => format!("{:#}\n", to_json(report)),
    }
}

fn text(report: &Report, short: bool) -> String {
    let mut out = String::new();
    for category in &report.categories {
        let shown: Vec<&Outcome> = category
            .outcomes
            .iter()
            .filter(|o| !short || !o.passed())
            .collect();
        if shown.is_empty() {
            continue;
        }
        out.push_str(category.name);
        out.push('\n');
        out.push_str(&"-".repeat(category.name.chars().count()));
        out.push('\n');
        for o in shown {
            out.push_str(&format!("{} {}\n", mark(o), o.check.description));
            if let Some(e) = &o.error {
                for line in e.lines() {
                    out.push_str(&format!("    {line}\n"));
                }
                out.push_str(&format!("    see {} for hints\n", o.hint()));
            }
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "Status check results are {}\n",
        if report.success() { "√" } else { "×" }
    ));
    out
}

fn to_json(report: &Report) -> serde_json::Value {
    let categories: Vec<serde_json::Value> = report
        .categories
        .iter()
        .map(|c| {
            let checks: Vec<serde_json::Value> = c
                .outcomes
                .iter()
                .map(|o| {
                    let result = match (&o.error, o.check.severity) {
                        (None, _) => "success",
                        (Some(_), Severity::Warning) => "warning",
                        (Some(_), _) => "error",
                    };
                    let mut v = json!({
                        "description": o.check.description,
                        "hint": o.hint(),
                        "result": result,
                    });
                    if let Some(e) = &o.error {
                        v["error"] = json!(e);
                    }
                    v
                })
                .collect();
            json!({ "categoryName": c.name, "checks": checks })
        })
        .collect();
    json!({ "success": report.success(), "categories": categories })
}

#[cfg(test)]
mod tests {
    use super::super::{check, CategoryResult};
    use super::*;

    fn report() -> Report {
        Report {
            categories: vec![
                CategoryResult {
                    name: "kubernetes-api",
                    outcomes: vec![
                        check("can initialize the client", "k8s-api").result(Ok(())),
                        check("can query the Kubernetes API", "k8s-api").result(Ok(())),
                    ],
                },
                CategoryResult {
                    name: "smidge-identity",
                    outcomes: vec![
                        check("trust anchor is valid for at least 60 days", "anchor")
                            .warning()
                            .result(Err("expires in 3 days".into())),
                        check("issuer certificate is issued by the trust anchor", "issuer")
                            .result(Err("not signed\nby it".into())),
                    ],
                },
            ],
        }
    }

    #[test]
    fn text_as_linkerd_prints_it() {
        let want = "\
kubernetes-api
--------------
√ can initialize the client
√ can query the Kubernetes API

smidge-identity
---------------
‼ trust anchor is valid for at least 60 days
    expires in 3 days
    see https://smidge.dev/checks#anchor for hints
× issuer certificate is issued by the trust anchor
    not signed
    by it
    see https://smidge.dev/checks#issuer for hints

Status check results are ×
";
        assert_eq!(render(&report(), Format::Table), want);
    }

    #[test]
    fn short_shows_only_what_failed() {
        let out = render(&report(), Format::Short);
        assert!(!out.contains("kubernetes-api"), "{out}");
        assert!(
            out.starts_with("smidge-identity\n---------------\n‼ trust anchor"),
            "{out}"
        );
        let all_good = Report {
            categories: vec![report().categories.remove(0)],
        };
        assert_eq!(
            render(&all_good, Format::Short),
            "Status check results are √\n"
        );
    }

    #[test]
    fn json_has_linkerds_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&report(), Format::Json)).expect("json");
        assert_eq!(v["success"], false);
        assert_eq!(v["categories"][0]["categoryName"], "kubernetes-api");
        let ok = &v["categories"][0]["checks"][0];
        assert_eq!(ok["result"], "success");
        assert_eq!(ok["hint"], "https://smidge.dev/checks#k8s-api");
        assert!(ok.get("error").is_none(), "{ok}");
        let warn = &v["categories"][1]["checks"][0];
        assert_eq!(warn["result"], "warning");
        assert_eq!(warn["error"], "expires in 3 days");
        assert_eq!(v["categories"][1]["checks"][1]["result"], "error");
        assert_eq!(
            v["categories"][1]["checks"][1]["description"],
            "issuer certificate is issued by the trust anchor"
        );
    }
}
