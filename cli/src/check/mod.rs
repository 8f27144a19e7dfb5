//! `smidge check`: is the cluster ready for smidge (`--pre`), and is the installed mesh healthy?
//!
//! As `linkerd check`: categories of checks, each `√` (passed), `‼` (a warning failed) or `×`
//! (failed), every failure with its error and a hint link; a failed fatal check stops the run
//! (but for the data plane, judged from the API server when the controller is down);
//! checks whose state may still converge are tried again until `--wait` ends; exit 1 when a
//! check that is not a warning failed.
//!
//! [`gather`] reads the cluster (the only I/O), [`checks`] and [`certs`] judge what it read
//! (pure), [`render`] prints the report.

pub mod certs;
pub mod checks;
pub mod gather;
pub mod render;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Where the hints live: `see <HINT_BASE><anchor> for hints`.
pub const HINT_BASE: &str = "https://smidge.dev/checks#";

/// How long to pause before trying a converging check again.
pub const RETRY_PAUSE: Duration = Duration::from_secs(5);

/// How much a failed check matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Failed: the run stops (later checks would only repeat the cause).
    Fatal,
    /// Failed: the run goes on, and exits 1.
    Error,
    /// Failed: shown as `‼`; the exit code stays 0.
    Warning,
}

/// One check: what it says when it runs, and how its failure counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub description: String,
    /// The hint's anchor on the checks page.
    pub anchor: &'static str,
    pub severity: Severity,
    /// Whether a failure is worth trying again while `--wait` lasts (pods starting, say).
    pub retry: bool,
}

/// A check that fails with an error (not fatal, not retried) unless made otherwise.
pub fn check(description: impl Into<String>, anchor: &'static str) -> Check {
    Check {
        description: description.into(),
        anchor,
        severity: Severity::Error,
        retry: false,
    }
}

impl Check {
    pub fn fatal(mut self) -> Check {
        self.severity = Severity::Fatal;
        self
    }

    pub fn warning(mut self) -> Check {
        self.severity = Severity::Warning;
        self
    }

    pub fn retry(mut self) -> Check {
        self.retry = true;
        self
    }

    /// Its outcome: passed, or failed with `error`.
    pub fn result(self, result: Result<(), String>) -> Outcome {
        Outcome {
            check: self,
            error: result.err(),
        }
    }
}

/// A check that ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub check: Check,
    /// Why it failed; `None` when it passed.
    pub error: Option<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.error.is_none()
    }

    /// Failed in a way that fails the run (fatal or error, not a warning).
    pub fn failed_hard(&self) -> bool {
        self.error.is_some() && self.check.severity != Severity::Warning
    }

    pub fn hint(&self) -> String {
        format!("{HINT_BASE}{}", self.check.anchor)
    }
}

/// The checks of one category, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CategoryResult {
    pub name: &'static str,
    pub outcomes: Vec<Outcome>,
}

/// Every category that ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub categories: Vec<CategoryResult>,
}

impl Report {
    /// No check failed other than warnings.
    pub fn success(&self) -> bool {
        !self
            .categories
            .iter()
            .flat_map(|c| &c.outcomes)
            .any(Outcome::failed_hard)
    }

    /// The process exit code: 0, or 1 when a check that is not a warning failed.
    pub fn exit_code(&self) -> u8 {
        if self.success() {
            0
        } else {
            1
        }
    }
}

/// What `smidge check` was asked.
#[derive(Clone, Debug)]
pub struct Options {
    /// The control plane's namespace.
    pub namespace: String,
    /// Check the cluster before an install instead of the installed mesh.
    pub pre: bool,
    /// How long checks that may still converge are tried again.
    pub wait: Duration,
}

/// Runs the checks against the cluster `kube` selects.
pub async fn check_cluster(kube: &crate::kube::KubeArgs, options: &Options) -> Report {
    let client = match kube.config().await {
        Ok(mut config) => {
            // Each request gets at most this long, as Linkerd's per-check timeout.
            config.read_timeout = Some(Duration::from_secs(30));
            kube::Client::try_from(config).map_err(|e| format!("{e:#}"))
        }
        Err(e) => Err(format!("{e:#}")),
    };
    let gatherer = gather::Gatherer {
        client,
        namespace: options.namespace.clone(),
    };
    let g = &gatherer;
    run_resuming(
        &gather::categories(options.pre),
        |c| g.evaluate(c),
        options.wait,
        RETRY_PAUSE,
        gather::runs_after_a_fatal_failure_in,
    )
    .await
}

/// Keeps the outcomes up to and including the first failed fatal one: later checks of the
/// category depend on it.
fn cut_at_fatal(outcomes: Vec<Outcome>) -> (Vec<Outcome>, bool) {
    let mut kept = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        let fatal = !o.passed() && o.check.severity == Severity::Fatal;
        kept.push(o);
        if fatal {
            return (kept, true);
        }
    }
    (kept, false)
}

/// Runs `categories` in order through `evaluate` (which gathers and judges one category). A
/// category with a failed retryable check is evaluated again after `pause` until `wait` has
/// passed since the start; a failed fatal check ends the run after its category, except that
/// after the fatal failure `failed` in category `stopped`, a later category `c` still runs when
/// `resumes(stopped, failed, c)`: one that does not depend on what failed (the pods of the data
/// plane are read from the API server even when the controller is down).
pub async fn run_resuming<C, F, Fut>(
    categories: &[(&'static str, C)],
    mut evaluate: F,
    wait: Duration,
    pause: Duration,
    resumes: impl Fn(C, &Outcome, C) -> bool,
) -> Report
where
    C: Copy,
    F: FnMut(C) -> Fut,
    Fut: Future<Output = Vec<Outcome>>,
{
    let deadline = Instant::now() + wait;
    let mut report = Report::default();
    let mut stopped: Option<(C, Outcome)> = None;
    for (name, category) in categories {
        if let Some((at, failed)) = &stopped {
            if !resumes(*at, failed, *category) {
                continue;
            }
        }
        let (outcomes, stop) = loop {
            let (outcomes, stop) = cut_at_fatal(evaluate(*category).await);
            let converging = outcomes.iter().any(|o| !o.passed() && o.check.retry);
            if converging && Instant::now() + pause < deadline {
                tracing::debug!(category = name, "a check may still converge; trying again");
                tokio::time::sleep(pause).await;
                continue;
            }
            break (outcomes, stop);
        };
        if stop && stopped.is_none() {
            if let Some(failed) = outcomes.last() {
                stopped = Some((*category, failed.clone()));
            }
        }
        report.categories.push(CategoryResult { name, outcomes });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`run_resuming`] where no category runs after a fatal failure.
    async fn run<C, F, Fut>(
        categories: &[(&'static str, C)],
        evaluate: F,
        wait: Duration,
        pause: Duration,
    ) -> Report
    where
        C: Copy,
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Vec<Outcome>>,
    {
        run_resuming(categories, evaluate, wait, pause, |_, _, _| false).await
    }

    fn ok(d: &str) -> Outcome {
        check(d, "a").result(Ok(()))
    }

    fn fail(c: Check) -> Outcome {
        c.result(Err("broken".into()))
    }

    #[test]
    fn warnings_do_not_fail_the_run_errors_do() {
        let mut report = Report {
            categories: vec![CategoryResult {
                name: "x",
                outcomes: vec![ok("a"), fail(check("w", "w").warning())],
            }],
        };
        assert!(report.success());
        assert_eq!(report.exit_code(), 0);
        report.categories[0].outcomes.push(fail(check("e", "e")));
        assert!(!report.success());
        assert_eq!(report.exit_code(), 1);
    }

    #[tokio::test]
    async fn a_failed_fatal_check_stops_its_category_and_the_run() {
        let categories = [("first", 1), ("second", 2), ("third", 3)];
        let mut seen = Vec::new();
        let report = run(
            &categories,
            |c| {
                seen.push(c);
                async move {
                    match c {
                        1 => vec![ok("a"), fail(check("e", "e"))],
                        2 => vec![ok("b"), fail(check("f", "f").fatal()), ok("after")],
                        _ => vec![ok("c")],
                    }
                }
            },
            Duration::ZERO,
            Duration::ZERO,
        )
        .await;
        assert_eq!(seen, [1, 2], "the third category never ran");
        assert_eq!(report.categories.len(), 2);
        let second: Vec<&str> = report.categories[1]
            .outcomes
            .iter()
            .map(|o| o.check.description.as_str())
            .collect();
        assert_eq!(
            second,
            ["b", "f"],
            "checks after the fatal one are not shown"
        );
        assert_eq!(report.exit_code(), 1);
    }

    #[tokio::test]
    async fn a_category_that_does_not_depend_on_the_failure_still_runs() {
        let categories = [("api", 1), ("controller", 2), ("webhook", 3), ("pods", 4)];
        let mut seen = Vec::new();
        let report = run_resuming(
            &categories,
            |c| {
                seen.push(c);
                async move {
                    match c {
                        2 => vec![fail(check("replicas", "r").fatal())],
                        _ => vec![ok("fine")],
                    }
                }
            },
            Duration::ZERO,
            Duration::ZERO,
            |stopped, failed, c| stopped != 1 && failed.check.anchor == "r" && c == 4,
        )
        .await;
        assert_eq!(seen, [1, 2, 4], "the webhook depends on the controller");
        let names: Vec<&str> = report.categories.iter().map(|c| c.name).collect();
        assert_eq!(names, ["api", "controller", "pods"]);
        assert_eq!(report.exit_code(), 1);
    }

    #[tokio::test]
    async fn a_converging_check_is_tried_again_until_it_passes_or_the_wait_ends() {
        let categories = [("pods", ())];
        let mut tries = 0;
        let report = run(
            &categories,
            |()| {
                tries += 1;
                let t = tries;
                async move {
                    let c = check("pods are ready", "p").fatal().retry();
                    vec![c.result(if t < 3 {
                        Err("1/2 ready".into())
                    } else {
                        Ok(())
                    })]
                }
            },
            Duration::from_secs(3600),
            Duration::ZERO,
        )
        .await;
        assert_eq!(tries, 3);
        assert!(report.success());

        // No wait: one try, and its failure stands.
        let mut tries = 0;
        let report = run(
            &categories,
            |()| {
                tries += 1;
                async { vec![fail(check("pods are ready", "p").retry())] }
            },
            Duration::ZERO,
            Duration::ZERO,
        )
        .await;
        assert_eq!(tries, 1);
        assert_eq!(report.exit_code(), 1);
    }

    #[tokio::test]
    async fn a_failure_that_cannot_converge_is_not_retried() {
        let mut tries = 0;
        run(
            &[("x", ())],
            |()| {
                tries += 1;
                async { vec![fail(check("version", "v"))] }
            },
            Duration::from_secs(3600),
            Duration::ZERO,
        )
        .await;
        assert_eq!(tries, 1);
    }
}
