//! `smidge-controller`: reads SMI and Kubernetes objects and pushes per-proxy views. This file
//! only parses the flags; [`runtime`] wires the tasks.

// One reviewed exception: `release_free_memory` calls glibc's `malloc_trim`.
#![deny(unsafe_code)]

mod runtime;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use smidge_controller::push::server;
use smidge_protocol::DefaultPolicy;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProviderKind {
    /// A directory of Kubernetes YAML, re-read on change.
    File,
    /// The Kubernetes API: watches (credentials from KUBECONFIG, ~/.kube/config or the pod's
    /// ServiceAccount).
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
    /// Create the --identity-secret Secret with fresh trust material when it is missing (never
    /// overwrites; replicas racing to create it all use the one that was created). It is owned
    /// by the ConfigMap `smidge-config` when that exists.
    #[arg(long, requires = "identity_secret")]
    identity_generate: bool,
    /// Check proxy tokens with the Kubernetes TokenReview API (projected ServiceAccount tokens
    /// bound to the `smidge-identity` audience and a pod) instead of local tokens.
    #[arg(long)]
    token_review: bool,
    /// The DNS name in the controller's own certificate, which proxies check.
    #[arg(long, default_value = "smidge-controller")]
    identity_name: String,
    /// Where the CRD conversion webhook listens (HTTPS, certificate from the identity CA). Off
    /// when unset; in a cluster the Service `smidge-system/smidge-controller` maps 443 to it.
    #[arg(long)]
    webhook_listen: Option<SocketAddr>,
    /// Names on the webhook's certificate (DNS or IP); default the Service's names.
    #[arg(long, value_delimiter = ',')]
    webhook_names: Vec<String>,
    /// The webhook's certificate from this directory (tls.crt, tls.key, e.g. from cert-manager),
    /// reloaded when it changes; the controller then writes no caBundle.
    #[arg(long)]
    webhook_cert_dir: Option<PathBuf>,
    /// The injector's settings (the `inject.json` of ConfigMap smidge-config). Without it the
    /// injector is off: `/inject` allows every pod unchanged.
    #[arg(long)]
    inject_config: Option<PathBuf>,
    /// With --provider kubernetes: write SMI objects' status conditions and Events while this
    /// replica holds the Lease `<namespace>/smidge-controller-status`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    status_writer: bool,
    /// This replica's name, the Lease holder's identity (the pod's name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// The controller's namespace (its Lease's).
    #[arg(long, env = "POD_NAMESPACE", default_value = "smidge-system")]
    namespace: String,
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
    let run = async { runtime::run(config(args)?).await };
    match run.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("smidge-controller: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The runtime's configuration from the flags.
fn config(args: Args) -> anyhow::Result<runtime::Config> {
    let provider = match (args.provider, args.manifests) {
        (ProviderKind::File, Some(dir)) => runtime::Provider::File(dir),
        (ProviderKind::File, None) => anyhow::bail!("--provider file needs --manifests DIR"),
        (ProviderKind::Kubernetes, _) => runtime::Provider::Kubernetes,
    };
    let kubernetes = matches!(provider, runtime::Provider::Kubernetes);
    let inject = match &args.inject_config {
        Some(path) => Some(read_inject_config(path)?),
        None => None,
    };
    let webhook = args.webhook_listen.map(|listen| runtime::Webhook {
        cert_dir: args.webhook_cert_dir.clone(),
        inject,
        instance: args.pod_name.clone(),
        listen,
        names: if args.webhook_names.is_empty() {
            smidge_controller::webhook::service_names(
                smidge_controller::crds::WEBHOOK_SERVICE,
                smidge_controller::crds::WEBHOOK_NAMESPACE,
            )
        } else {
            args.webhook_names.clone()
        },
    });
    let status = (kubernetes && args.status_writer).then(|| runtime::StatusSettings {
        identity: args.pod_name.clone().unwrap_or_else(|| {
            format!(
                "smidge-controller-{}",
                std::fs::read_to_string("/proc/sys/kernel/random/uuid")
                    .map(|u| u.trim().chars().take(8).collect::<String>())
                    .unwrap_or_else(|_| std::process::id().to_string())
            )
        }),
        namespace: args.namespace.clone(),
    });
    Ok(runtime::Config {
        webhook,
        status,
        provider,
        listen: args.listen,
        admin: args.admin,
        max_unauthenticated: args.max_unauthenticated,
        default_policy: args.default_policy,
        identity: runtime::identity::Settings {
            dir: args.identity_dir,
            secret: args.identity_secret,
            generate: args.identity_generate,
            token_review: args.token_review,
            trust_domain: args.trust_domain,
            cert_lifetime: Duration::from_secs(args.cert_lifetime_secs),
            name: args.identity_name,
        },
    })
}

/// The injector's settings from `path`; errors name the file and the field.
fn read_inject_config(
    path: &std::path::Path,
) -> anyhow::Result<smidge_controller::inject::Settings> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--inject-config {}: {e}", path.display()))?;
    let (settings, unknown) = smidge_controller::inject::parse(&text)
        .map_err(|e| anyhow::anyhow!("--inject-config {}: {e}", path.display()))?;
    for field in unknown {
        tracing::warn!(file = %path.display(), %field, "unknown injector setting ignored");
    }
    Ok(settings)
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

    #[test]
    fn a_bad_inject_config_names_the_file_and_the_field() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("inject.json");
        std::fs::write(&path, r#"{"proxy": {"ports": {"admin": "x"}}}"#).expect("write");
        let e = format!("{:#}", read_inject_config(&path).expect_err("bad"));
        assert!(
            e.contains("--inject-config") && e.contains("inject.json"),
            "{e}"
        );
        assert!(e.contains("proxy.ports.admin"), "{e}");
        std::fs::write(&path, "{}").expect("write");
        assert_eq!(
            read_inject_config(&path).expect("defaults"),
            smidge_controller::inject::Settings::default()
        );
        let args = Args::try_parse_from([
            "smidge-controller",
            "--manifests",
            "/tmp",
            "--webhook-cert-dir",
            "/certs",
            "--inject-config",
            "/etc/smidge/config/inject.json",
        ])
        .expect("parse");
        assert_eq!(
            args.webhook_cert_dir.as_deref(),
            Some(std::path::Path::new("/certs"))
        );
    }
}
