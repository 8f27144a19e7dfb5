//! `smidge`: the command users run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use smidge_controller::{crds, lint};

mod demo;

#[derive(Parser)]
#[command(name = "smidge", version, about = "A lightweight SMI service mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check SMI objects offline: unknown references, regexes, weights, ports, mixed versions.
    /// Prints one line per problem; exits 1 when there is any.
    Lint {
        /// Manifest files or directories (their .yaml/.yml/.json files, recursively).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the SMI CRDs smidge installs (or write them, one file each, into --dir).
    Crds {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run a small shop on this machine (network namespaces, the real controller and proxies):
    /// a canary split in three steps and an access rule, with a table per step. Needs root.
    Demo {
        /// Requests the storefront sends per step.
        #[arg(long, default_value = "2000")]
        requests: usize,
        /// Keep-alive connections they are spread over.
        #[arg(long, default_value = "8")]
        connections: usize,
        /// Leave the shop running until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smidge: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Lint { paths } => {
            let files = lint::expand(&paths).context("listing the files to lint")?;
            let mut contents = Vec::with_capacity(files.len());
            for f in files {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?;
                contents.push((f, text));
            }
            let problems = lint::lint(&contents);
            for p in &problems {
                println!("{p}");
            }
            eprintln!(
                "{} file(s) checked, {} problem(s)",
                contents.len(),
                problems.len()
            );
            Ok(if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Crds { dir } => {
            for (name, crd) in crds::all() {
                let yaml = crds::to_yaml(&crd).context("rendering a CRD")?;
                match &dir {
                    Some(dir) => {
                        let path = dir.join(name);
                        std::fs::write(&path, yaml)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                    None => print!("{yaml}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            requests,
            connections,
            keep,
        } => {
            demo::run(demo::Options {
                requests,
                connections,
                keep,
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
