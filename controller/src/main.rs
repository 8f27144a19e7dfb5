//! `smidge-controller`: reads SMI and Kubernetes objects and pushes per-proxy views.

// One reviewed exception: `release_free_memory` calls glibc's `malloc_trim`.
#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use smidge_controller::admin::{self, Status};
use smidge_controller::compile::MeshConfig;
use smidge_controller::diagnose::{self, Scope};
use smidge_controller::provider::{self, Report, Severity};
use smidge_controller::push::{registry::Registry, server};
use smidge_protocol::DefaultPolicy;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProviderKind {
    /// A directory of Kubernetes YAML, re-read on change.
    File,
    /// The Kubernetes API (not built yet).
    Kubernetes,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "smidge-controller",
    version,
    about = "The smidge control plane"
)]
struct Args {
    #[arg(long, value_enum, default_value = "file")]
    provider: ProviderKind,
    /// The manifest directory of the file provider.
    #[arg(long, required_if_eq("provider", "file"))]
    manifests: Option<PathBuf>,
    /// Where proxies connect.
    #[arg(long, default_value = "0.0.0.0:8086")]
    listen: SocketAddr,
    /// The admin endpoint (/live, /ready, /problems). Loopback by default: /problems names
    /// objects and files, which is not for every pod to read.
    #[arg(long, default_value = "127.0.0.1:9996")]
    admin: SocketAddr,
    /// The most proxy connections that may be between accept and an accepted Hello at once;
    /// more are closed at once.
    #[arg(long, default_value_t = server::MAX_UNAUTHENTICATED)]
    max_unauthenticated: usize,
    /// The default policy of namespaces without the `smidge.io/default-policy` annotation.
    #[arg(long, default_value = "deny", value_parser = |s: &str| s.parse::<DefaultPolicy>())]
    default_policy: DefaultPolicy,
    #[arg(long, value_enum, default_value = "plain")]
    log_format: LogFormat,
    /// Trust material (ca.crt, issuer.crt, issuer.key, token.key; `smidge identity gen` makes
    /// them). With it the control channel is TLS, proxies prove their ServiceAccount with a token
    /// and get certificates. Without it: plaintext and no certificates (development only).
    #[arg(long)]
    identity_dir: Option<PathBuf>,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Lifetime of proxy certificates.
    #[arg(long, default_value = "86400")]
    cert_lifetime_secs: u64,
    /// Trust material from a Kubernetes Secret `NAMESPACE/NAME` (keys ca.crt, issuer.crt,
    /// issuer.key, token.key) instead of --identity-dir.
    #[arg(long, conflicts_with = "identity_dir")]
    identity_secret: Option<String>,
    /// Check proxy tokens with the Kubernetes TokenReview API (projected ServiceAccount tokens
    /// bound to the `smidge-identity` audience and a pod) instead of local tokens.
    #[arg(long)]
    token_review: bool,
    /// The DNS name in the controller's own certificate, which proxies check.
    #[arg(long, default_value = "smidge-controller")]
    identity_name: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("smidge-controller: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    raise_open_file_limit();
    let kube_client = if args.identity_secret.is_some() || args.token_review {
        Some(kube::Client::try_default().await.context(
            "connecting to the Kubernetes API (for --identity-secret or --token-review)",
        )?)
    } else {
        None
    };
    let trust = match (&args.identity_dir, &args.identity_secret, &kube_client) {
        (Some(dir), _, _) => Some(
            smidge_controller::identity::Trust::load(dir)
                .with_context(|| format!("--identity-dir {}", dir.display()))?,
        ),
        (None, Some(secret), Some(client)) => {
            let (ns, name) = secret
                .split_once('/')
                .context("--identity-secret must be NAMESPACE/NAME")?;
            let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                kube::Api::namespaced(client.clone(), ns);
            let found = api
                .get(name)
                .await
                .with_context(|| format!("reading Secret {secret}"))?;
            let data = found.data.unwrap_or_default();
            Some(
                smidge_controller::identity::Trust::from_source(
                    &smidge_controller::identity::trust::SecretData {
                        name: secret.clone(),
                        data: &data,
                    },
                )
                .with_context(|| format!("--identity-secret {secret}"))?,
            )
        }
        _ => None,
    };
    let secured = match trust {
        Some(trust) => {
            let proof = match (&kube_client, args.token_review) {
                (Some(client), true) => smidge_controller::identity::Proof::Kubernetes(
                    smidge_controller::identity::TokenReviewer::new(client.clone()),
                ),
                _ => smidge_controller::identity::Proof::Local(trust.token_key.clone()),
            };
            let authority = Arc::new(smidge_controller::identity::Authority::new(
                trust,
                &args.trust_domain,
                std::time::Duration::from_secs(args.cert_lifetime_secs),
            )?);
            let tls =
                tokio_rustls::TlsAcceptor::from(authority.server_config(&args.identity_name)?);
            Some(Arc::new(server::Secured {
                authority,
                tls,
                proof: Arc::new(proof),
            }))
        }
        None => {
            if args.token_review {
                anyhow::bail!(
                    "--token-review needs trust material (--identity-dir or --identity-secret)"
                );
            }
            tracing::warn!("no --identity-dir: the control channel is plaintext and proxies get no certificates");
            None
        }
    };
    let dir = match (args.provider, args.manifests) {
        (ProviderKind::File, Some(dir)) => dir,
        (ProviderKind::File, None) => anyhow::bail!("--provider file needs --manifests DIR"),
        (ProviderKind::Kubernetes, _) => {
            anyhow::bail!("the kubernetes provider is not built yet; use --provider file")
        }
    };
    if !dir.is_dir() {
        anyhow::bail!("--manifests {}: not a directory", dir.display());
    }
    let first_version = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let registry = Arc::new(Mutex::new(Registry::new(
        MeshConfig {
            default_policy: args.default_policy,
        },
        first_version,
    )));
    let status = Arc::new(Mutex::new(Status::default()));

    let push = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the push listener on {}", args.listen))?;
    let admin_listener = TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("binding the admin listener on {}", args.admin))?;
    tracing::info!(push = %push.local_addr()?, admin = %admin_listener.local_addr()?, manifests = %dir.display(), "controller listening");

    let (tx, mut rx) = mpsc::channel(16);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move { provider::file::run(dir, tx).await.context("file provider") });
    let reg = registry.clone();
    let churn = Arc::new(server::Churn::default());
    let limits = server::Limits {
        max_unauthenticated: args.max_unauthenticated.max(1),
    };
    let ch = churn.clone();
    tasks.spawn(async move {
        server::serve(push, reg, secured, limits, ch)
            .await
            .context("push server")
    });
    tasks.spawn(async move {
        trim_after_bursts(&churn).await;
        Ok(())
    });
    let st = status.clone();
    tasks.spawn(async move {
        admin::serve(admin_listener, st)
            .await
            .context("admin server")
    });

    let mut shown: Vec<Report> = Vec::new();
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some((events, mut reports)) = batch else { anyhow::bail!("the provider stopped") };
                let n = events.len();
                // Compiling and diagnosing a large mesh is CPU work: done in place of a worker
                // thread, so the proxies' connection tasks (woken by the new views) move to
                // another worker instead of waiting behind it.
                let started = std::time::Instant::now();
                let (changed, objects, views, applied_in) = tokio::task::block_in_place(|| {
                    let changed = {
                        let mut r = registry.lock().map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
                        r.apply(events)
                    };
                    let applied_in = started.elapsed();
                    let r = registry.lock().map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
                    for p in diagnose::all(r.index(), Scope { only_where_present: false }) {
                        reports.push(Report { severity: Severity::Warning, file: None, object: p.object.to_string(), field: p.finding.field, message: p.finding.message });
                    }
                    anyhow::Ok((changed, r.index().len(), r.view_count(), applied_in))
                })?;
                if n > 0 {
                    tracing::info!(events = n, views_changed = changed, objects, apply_ms = applied_in.as_millis() as u64, total_ms = started.elapsed().as_millis() as u64, "applied changes");
                }
                if n >= TRIM_AFTER_EVENTS {
                    release_free_memory();
                }
                for report in reports.iter().filter(|r| !shown.contains(r)) {
                    match report.severity {
                        Severity::Error => tracing::warn!(file = ?report.file, object = %report.object, field = %report.field, "refused: {}", report.message),
                        Severity::Warning => tracing::info!(file = ?report.file, object = %report.object, field = %report.field, "{}", report.message),
                    }
                }
                shown = reports.clone();
                if let Ok(mut s) = status.lock() {
                    s.ready = true;
                    s.problems = reports;
                    s.objects = objects;
                    s.views = views;
                }
            }
            Some(done) = tasks.join_next() => {
                return match done {
                    Ok(Ok(())) => Err(anyhow::anyhow!("a controller task stopped")),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(anyhow::anyhow!("a controller task panicked: {e}")),
                };
            }
            _ = shutdown() => {
                tracing::info!("shutting down");
                return Ok(());
            }
        }
    }
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// A batch this large (a first sync, a big file rewritten) leaves the parser's garbage spread
/// over the allocator's arenas; glibc keeps those pages unless asked.
const TRIM_AFTER_EVENTS: usize = 1000;

/// Connections and subscriptions released since the last trim that make one worth it.
const TRIM_AFTER_RELEASED: u64 = 1000;

/// Returns freed memory once a burst of connections or subscriptions is over: checked every few
/// seconds, trimmed when many were released since the last trim and none in the last interval.
async fn trim_after_bursts(churn: &server::Churn) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    let (mut trimmed_at, mut last) = (churn.total(), churn.total());
    loop {
        tick.tick().await;
        let now = churn.total();
        if now == last && now - trimmed_at >= TRIM_AFTER_RELEASED {
            release_free_memory();
            tracing::debug!(
                released = now - trimmed_at,
                "returned free memory after a burst"
            );
            trimmed_at = now;
        }
        last = now;
    }
}

/// Raises the soft limit of open files to the hard limit: every proxy holds a connection, and
/// the usual soft limit (1,024) is far below what a mesh needs.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// Returns free heap pages to the kernel (tens of MiB after a sync of 50,000 endpoints).
#[allow(unsafe_code)]
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes no pointers
    // from us and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_endpoint_listens_on_loopback_by_default() {
        let args =
            Args::try_parse_from(["smidge-controller", "--manifests", "/tmp"]).expect("parse");
        assert!(args.admin.ip().is_loopback(), "{}", args.admin);
    }
}
