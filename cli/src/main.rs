//! `smidge`: the command users run.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use smidge_controller::{crds, lint};

mod check;
mod demo;
mod inject;
mod kube;
mod local;
mod stat;

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
    /// Add the smidge proxy to the Pods and pod templates of manifests (as the injector webhook
    /// would), writing the YAML to stdout and one line per workload to stderr.
    Inject(inject::InjectArgs),
    /// Print the SMI CRDs smidge installs (or write them, one file each, into --dir).
    Crds {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check that the cluster is ready for smidge (--pre) or that the installed mesh is healthy:
    /// groups of √/‼/× lines, each failure with its error and a hint. Exits 1 when a check that
    /// is not a warning failed.
    Check {
        /// Check the cluster before an install: permissions, and that the namespace is new.
        #[arg(long)]
        pre: bool,
        /// The control plane's namespace.
        #[arg(long, short = 'n', default_value = "smidge-system")]
        namespace: String,
        /// How the result is printed.
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: check::render::Format,
        /// Seconds to keep trying checks that may still converge (pods starting).
        #[arg(long, default_value = "300")]
        wait: u64,
        #[command(flatten)]
        kube: kube::KubeArgs,
    },
    /// Traffic of a Deployment or of a TrafficSplit's backends, from their proxies' metrics:
    /// requests per second, success rate, p50 and p99 latency.
    Stat {
        /// `deploy/NAME` or `trafficsplit/NAME` (also `deployment/`, `ts/`).
        target: String,
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
        /// Time between the two samples that rates are computed from.
        #[arg(long, default_value = "10s", value_parser = stat::parse_window)]
        window: std::time::Duration,
        #[command(flatten)]
        kube: kube::KubeArgs,
    },
    /// Trust material for an install, and tokens for proxies outside Kubernetes.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
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
    /// A cluster on this machine, driven like kubectl: up, apply, get, exec, logs, down. Needs
    /// root.
    Local {
        /// Where the cluster keeps its socket, state and logs (default: $SMIDGE_LOCAL_DIR, else
        /// /run/smidge-local). Several clusters may run side by side in different directories.
        #[arg(long, global = true)]
        state_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: local::LocalCommand,
    },
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Write a fresh set (ECDSA P-256): ca.crt (10-year trust anchor), issuer.crt and issuer.key
    /// (1-year issuer), token.key. Refuses to overwrite.
    Gen {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
    /// Print a token proving a ServiceAccount to the controller (the `file` provider's stand-in
    /// for Kubernetes' projected tokens).
    Token {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        service_account: String,
        #[arg(long)]
        pod: String,
        /// Seconds until it expires.
        #[arg(long, default_value = "86400")]
        ttl: u64,
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

/// A single-threaded runtime for the commands that talk to a cluster.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
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
        Command::Inject(args) => inject::run(args),
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
        Command::Identity { command } => {
            match command {
                IdentityCommand::Gen { dir, trust_domain } => {
                    smidge_controller::identity::generate(&dir, &trust_domain)?;
                    println!(
                        "wrote ca.crt, issuer.crt, issuer.key and token.key to {}",
                        dir.display()
                    );
                }
                IdentityCommand::Token {
                    dir,
                    namespace,
                    service_account,
                    pod,
                    ttl,
                } => {
                    let trust = smidge_controller::identity::Trust::load(&dir)?;
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_secs();
                    println!(
                        "{}",
                        trust.token_key.sign(&smidge_controller::identity::Claims {
                            ns: namespace,
                            sa: service_account,
                            pod,
                            aud: smidge_controller::identity::token::AUDIENCE.into(),
                            exp: now + ttl,
                        })
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            pre,
            namespace,
            output,
            wait,
            kube,
        } => {
            let options = check::Options {
                namespace,
                pre,
                wait: std::time::Duration::from_secs(wait),
            };
            let report = runtime()?.block_on(check::check_cluster(&kube, &options));
            print!("{}", check::render::render(&report, output));
            Ok(ExitCode::from(report.exit_code()))
        }
        Command::Stat {
            target,
            namespace,
            window,
            kube,
        } => {
            let target = stat::Target::parse(&target)?;
            let table = runtime()?.block_on(stat::stat(&kube, &namespace, &target, window))?;
            print!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Local { state_dir, command } => local::run(&local::state_dir(state_dir), command),
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
