//! `smidge-node`: the local cluster's node agent (`agent CONFIG`), the kubelet and kube-proxy of
//! one Node of a real Kubernetes control plane, and the per-container shim it starts
//! (`shim SPEC`).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "smidge-node",
    about = "The local cluster's node agent and container shim"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent with the configuration the local cluster wrote.
    Agent { config: PathBuf },
    /// Run one container as its spec says, and record how it ended.
    Shim { spec: PathBuf },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Agent { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_ansi(false)
                .init();
            smidge_local_cluster::node::agent::main(&config)
        }
        Command::Shim { spec } => smidge_local_cluster::node::shim::run(&spec),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smidge-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
