//! `smidge-conformance`: runs SMI conformance cases (conformance/cases, or any case directories)
//! against a cluster and reports every step.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use smidge_conformance::{case, report, run, target};

#[derive(Parser)]
#[command(
    name = "smidge-conformance",
    version,
    about = "Run SMI conformance cases against smidge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run case directories (a directory holding NN-*.yaml files), or every case directory
    /// inside the given directories.
    Run {
        #[arg(long, value_enum, default_value = "local")]
        target: TargetKind,
        /// The local cluster's state directory (default: a fresh one, removed after the run).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Leave the cluster and the case namespaces in place afterwards.
        #[arg(long)]
        keep: bool,
        /// The harness image for --target kube (this repository's sample app).
        #[arg(long, default_value = "ghcr.io/smidge-mesh/sample-app:latest")]
        harness_image: String,
        /// Write the report as JSON (Meshery's result shape) to this file.
        #[arg(long, default_value = "conformance-report.json")]
        report: PathBuf,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetKind {
    /// The local cluster (`smidge local`), started for the run.
    Local,
    /// The current kubectl context (or the in-cluster config).
    Kube,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run_cli(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smidge-conformance: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The case directories under `paths`, in order.
fn cases(paths: &[PathBuf]) -> anyhow::Result<Vec<case::Case>> {
    let is_case = |dir: &Path| -> bool {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.split('-')
                    .next()
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    && (name.ends_with(".yaml") || name.ends_with(".yml"))
            })
        })
    };
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            bail!("{} is not a directory", p.display());
        }
        if is_case(p) {
            out.push(case::load(p)?);
            continue;
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading {}", p.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|d| d.is_dir() && is_case(d))
            .collect();
        dirs.sort();
        if dirs.is_empty() {
            bail!(
                "{} holds no case directories (directories of NN-name.yaml files)",
                p.display()
            );
        }
        for d in dirs {
            out.push(case::load(&d)?);
        }
    }
    Ok(out)
}

/// Today as YYYY-MM-DD (UTC).
fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn run_cli(cli: Cli) -> anyhow::Result<ExitCode> {
    let Command::Run {
        target: kind,
        state_dir,
        keep,
        harness_image,
        report: report_path,
        paths,
    } = cli.command;
    let cases = cases(&paths)?;
    let programs = std::env::current_exe()?
        .parent()
        .context("the program's directory")?
        .to_path_buf();
    let scratch = tempfile::tempdir()?;
    let state = state_dir.unwrap_or_else(|| scratch.path().join("cluster"));
    let mut target: Box<dyn target::Target> = match kind {
        TargetKind::Local => Box::new(target::Local::start(&programs, &state)?),
        TargetKind::Kube => Box::new(target::Kube::start(&harness_image)?),
    };
    let mut results = Vec::new();
    for case in &cases {
        eprintln!("running {} ({} steps)", case.name, case.steps.len());
        results.push(run::run_case(target.as_mut(), case, keep));
    }
    if keep {
        eprintln!(
            "the cluster stays up: smidge local --state-dir {} ...",
            state.display()
        );
        std::mem::forget(target);
        std::mem::forget(scratch);
    } else {
        drop(target);
    }
    print!("{}", report::table(&results));
    let json = report::meshery_json(&results, env!("CARGO_PKG_VERSION"), &today());
    std::fs::write(&report_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("report: {}", report_path.display());
    Ok(if results.iter().all(run::CaseResult::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
