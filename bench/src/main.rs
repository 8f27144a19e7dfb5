//! `smidge-bench`: benchmarks that print one summary line per figure and write JSON.
//!
//! `cargo run --release -p smidge-bench -- control-plane [--quick]`

mod control_plane;
mod mesh;
mod report;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "smidge-bench", about = "smidge benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Where to write the figures as JSON.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Scenario {
    /// The controller with 10,000 services, 50,000 endpoints and 1,000 protocol clients
    /// (--quick: a tenth of that).
    ControlPlane {
        #[arg(long)]
        quick: bool,
    },
    /// The two-hop proxy path against Envoy, HAProxy and nginx. Not built yet.
    Proxy {
        #[arg(long)]
        quick: bool,
    },
    /// Proxy memory idle, under load and per connection. Not built yet.
    Memory {
        #[arg(long)]
        quick: bool,
    },
}

/// The workspace's binaries, built in release mode first (the bench measures them).
fn binaries() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--workspace", "--bins"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release --workspace --bins failed");
    }
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("the target directory")?.to_path_buf())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smidge-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let report = match cli.scenario {
        Scenario::ControlPlane { quick } => {
            let bins = binaries()?;
            let scale = if quick {
                control_plane::Scale::quick()
            } else {
                control_plane::Scale::full()
            };
            eprintln!("control-plane{}:", if quick { " (quick)" } else { "" });
            control_plane::run(&bins.join("smidge-controller"), scale)?
        }
        Scenario::Proxy { .. } | Scenario::Memory { .. } => {
            eprintln!("smidge-bench: this scenario is not built yet (only control-plane is)");
            return Ok(ExitCode::from(3));
        }
    };
    print!("{}", report.summary());
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report.json())?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
