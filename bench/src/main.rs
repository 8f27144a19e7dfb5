//! `smidge-bench`: benchmarks that print one summary line per figure and write JSON.
//!
//! `cargo run --release -p smidge-bench -- proxy|memory|control-plane [--quick]`

#![forbid(unsafe_code)]

mod control_plane;
mod load;
mod memory;
mod mesh;
mod peers;
mod procstat;
mod proxy;
mod report;
mod server;
mod topology;

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
    /// The two-hop sidecar path through smidge, Envoy, HAProxy and nginx against the direct
    /// path: max throughput, latency at 1,000 RPS, CPU per request, RSS (--quick: one round).
    Proxy {
        #[arg(long)]
        quick: bool,
    },
    /// Proxy memory idle, at 1,000 RPS, at max load, per idle connection, and with 10,000
    /// Services in the mesh against 10.
    Memory {
        #[arg(long)]
        quick: bool,
    },
    /// The 1 KiB upstream the proxy scenarios call (started by them inside a pod).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

/// The workspace's binaries, built in release mode first (the bench measures them).
fn binaries() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        // Not this program: `cargo run -p smidge-bench` resolved its features alone, and a
        // workspace build would relink it (differently) under the running process.
        .args(["build", "--quiet", "--release", "--workspace", "--bins"])
        .args(["--exclude", "smidge-bench"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release --workspace --bins --exclude smidge-bench failed");
    }
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("the target directory")?.to_path_buf())
}

/// The proxy scenarios build pods from network namespaces and pin processes to two cores.
fn preflight() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the proxy and memory scenarios make network namespaces: run them as root");
    }
    if procstat::cores() < 2 {
        bail!("the proxy and memory scenarios need two cores (proxies on one, load on the other)");
    }
    let _ = smidge_proxy::identity::crypto_provider().install_default();
    Ok(())
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
        Scenario::Proxy { quick } => {
            let bins = binaries()?;
            preflight()?;
            eprintln!("proxy{}:", if quick { " (quick)" } else { "" });
            let plan = if quick {
                proxy::Plan::quick()
            } else {
                proxy::Plan::full()
            };
            proxy::run(&bins, plan, quick)?
        }
        Scenario::Memory { quick } => {
            let bins = binaries()?;
            preflight()?;
            eprintln!("memory{}:", if quick { " (quick)" } else { "" });
            let scale = if quick {
                memory::Scale::quick()
            } else {
                memory::Scale::full()
            };
            memory::run(&bins, scale, quick)?
        }
        Scenario::Serve { listen } => {
            server::serve(listen)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    print!("{}", report.summary());
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report.json())?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
