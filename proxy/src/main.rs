//! `smidge-proxy`: `run` serves as the sidecar; `init` writes the pod's iptables rules.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use smidge_proxy::init::{self, Cidr, Rules};
use smidge_proxy::net::address::HostPort;
use smidge_proxy::run::{self, Config};

/// jemalloc with its background thread purges freed pages after a decay (10 s), so a burst of
/// connections does not stay in RSS; glibc's malloc kept it until the proxy restarted.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "smidge-proxy", version, about = "The smidge micro-proxy")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Log format.
    #[arg(long, value_enum, default_value = "plain", global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve as the pod's sidecar.
    Run(Box<RunArgs>),
    /// Write the pod's iptables rules (needs root or CAP_NET_ADMIN in the pod's network namespace).
    Init(InitArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("anchor").args(["trust_anchor", "trust_anchor_pem"]).multiple(false)))]
struct RunArgs {
    /// The controller's push address, `host:port`: an IP, or a name resolved again at every
    /// connect (pods resolve the controller's Service name through /etc/hosts or DNS).
    #[arg(long)]
    controller: HostPort,
    /// The pod's namespace (the injector sets it from the downward API).
    #[arg(long, env = "SMIDGE_POD_NAMESPACE")]
    namespace: String,
    #[arg(long, env = "SMIDGE_POD_NAME")]
    pod: String,
    #[arg(long, env = "SMIDGE_SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    #[arg(long, default_value = "127.0.0.1:4140")]
    outbound: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:4143")]
    inbound: SocketAddr,
    /// The admin listener the kubelet probes on the pod IP: `/ready` and `/live` only.
    #[arg(long, default_value = "0.0.0.0:4191")]
    admin: SocketAddr,
    /// The loopback admin listener: `/ready`, `/live`, `/metrics` and `/views` (the policy).
    #[arg(long, default_value = "127.0.0.1:4192")]
    admin_private: SocketAddr,
    /// Also serve `/metrics` on `--admin`, for a Prometheus that scrapes pod IPs. Metrics name
    /// who calls whom; without this flag scrape through the loopback listener
    /// (`kubectl port-forward <pod> 4192`).
    #[arg(long)]
    metrics_public: bool,
    /// Ports whose connections skip protocol detection (server-speaks-first: SMTP, MySQL, ...).
    #[arg(long, value_delimiter = ',', default_values_t = [25u16, 587, 3306, 4444, 5432, 6379, 9300, 11211])]
    opaque_ports: Vec<u16>,
    /// How long a connection may stay silent before it is treated as opaque TCP.
    #[arg(long, default_value = "1000")]
    detect_timeout_ms: u64,
    /// How long a first connection to a destination waits for the controller's answer.
    #[arg(long, default_value = "2000")]
    discovery_wait_ms: u64,
    #[arg(long, default_value = "3000")]
    connect_timeout_ms: u64,
    /// A subscription unused for this long is dropped.
    #[arg(long, default_value = "300")]
    idle_subscription_secs: u64,
    /// Worker threads; 1 runs everything on one thread (the smallest footprint).
    #[arg(long, default_value = "1")]
    threads: usize,
    /// The mesh's trust anchor (a PEM file). With it the proxy gets a certificate from the
    /// controller, speaks mTLS to meshed peers and TLS to the controller.
    #[arg(long, requires = "token_file")]
    trust_anchor: Option<std::path::PathBuf>,
    /// The trust anchor itself (PEM text), instead of --trust-anchor: the injector puts it in
    /// the proxy's environment.
    #[arg(
        long,
        env = "SMIDGE_TRUST_ANCHORS",
        hide_env_values = true,
        requires = "token_file"
    )]
    trust_anchor_pem: Option<String>,
    /// The ServiceAccount token that proves this proxy's identity to the controller.
    #[arg(long, requires = "anchor")]
    token_file: Option<std::path::PathBuf>,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// The DNS name in the controller's certificate.
    #[arg(long, default_value = "smidge-controller")]
    controller_name: String,
    /// Mark the proxy's own connections (to peers and the controller) with this firewall mark,
    /// for pods whose rules exempt the proxy by mark (`init --proxy-mark`). Needs CAP_NET_ADMIN.
    #[arg(long, value_parser = parse_mark)]
    socket_mark: Option<u32>,
    /// How the app's HTTP/1 requests cross to meshed peers: h2 multiplexes them on one mTLS
    /// connection per peer; http1 sends them as HTTP/1.1 on pooled mTLS connections.
    #[arg(long, value_enum, default_value = "h2")]
    mesh_protocol: smidge_proxy::http::pool::MeshProtocol,
    /// The largest request or response head, counted as HTTP/2 does (name + value + 32 bytes
    /// per header). The same on every hop: over it a request gets 431, a response 502.
    #[arg(long, default_value = "65536", value_parser = clap::value_parser!(u32).range(16384..))]
    max_header_bytes: u32,
    /// Concurrent streams per HTTP/2 connection (advertised, and where the pool opens another
    /// connection to the same peer).
    #[arg(long, default_value = "256", value_parser = clap::value_parser!(u32).range(1..))]
    h2_max_concurrent_streams: u32,
    /// The HTTP/2 window of one stream; a connection's window is this times the stream limit,
    /// so one slow stream never stalls the others.
    #[arg(long, default_value = "1048576", value_parser = clap::value_parser!(u32).range(65535..=8388608))]
    h2_stream_window_bytes: u32,
    /// How long a request waits for the response head before a 504 (`smidge-error: timeout`);
    /// 0 waits forever.
    #[arg(long, default_value = "60000")]
    response_timeout_ms: u64,
    /// HTTP/2 PING between proxies after this much silence, so a dead peer is found.
    #[arg(long, default_value = "10000", value_parser = clap::value_parser!(u64).range(1..))]
    h2_keepalive_interval_ms: u64,
    /// A PING unanswered for this long drops the connection.
    #[arg(long, default_value = "10000", value_parser = clap::value_parser!(u64).range(1..))]
    h2_keepalive_timeout_ms: u64,
    /// How long an HTTP/1 client may take to send a request head.
    #[arg(long, default_value = "30000", value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_ms: u64,
    /// An opaque TCP connection idle both ways for this long is closed; 0 never.
    #[arg(long, default_value = "3600")]
    tcp_idle_timeout_secs: u64,
    /// The pod's IP (the downward API's status.podIP): where the apps' probes are made.
    #[arg(long, env = "SMIDGE_POD_IP")]
    pod_ip: Option<std::net::IpAddr>,
    /// The apps' probes the injector moved to the admin port (JSON, written by the injector).
    #[arg(long, env = smidge_protocol::probes::ENV, hide_env_values = true, value_parser = smidge_protocol::probes::parse)]
    app_probes: Option<smidge_protocol::probes::AppProbes>,
}

/// `--proxy-uid`: a uid, or none.
#[derive(Clone, Copy, Debug)]
struct ProxyUid(Option<u32>);

fn parse_uid(text: &str) -> Result<ProxyUid, String> {
    if text == "none" {
        return Ok(ProxyUid(None));
    }
    text.parse()
        .map(|u| ProxyUid(Some(u)))
        .map_err(|_| format!("{text:?} is not a uid (or none)"))
}

/// A mark in decimal or `0x` hex.
fn parse_mark(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed
        .ok()
        .filter(|m| *m != 0)
        .ok_or_else(|| format!("{text:?} is not a non-zero 32-bit mark"))
}

#[derive(clap::Args)]
struct InitArgs {
    /// The uid the proxy runs as; its own connections are not redirected.
    /// `none` when the proxy shares the app's uid (then give --proxy-mark).
    #[arg(long, default_value = "2102", value_parser = parse_uid)]
    proxy_uid: ProxyUid,
    /// Also leave connections with this firewall mark alone (the proxy's `--socket-mark`).
    #[arg(long, value_parser = parse_mark)]
    proxy_mark: Option<u32>,
    #[arg(long, default_value = "4140")]
    outbound_port: u16,
    #[arg(long, default_value = "4143")]
    inbound_port: u16,
    #[arg(long, default_value = "4191")]
    admin_port: u16,
    #[arg(long, value_delimiter = ',')]
    skip_outbound_ports: Vec<u16>,
    #[arg(long, value_delimiter = ',')]
    skip_inbound_ports: Vec<u16>,
    /// Destinations reached directly, e.g. 169.254.169.254/32.
    #[arg(long, value_delimiter = ',')]
    skip_outbound_cidrs: Vec<Cidr>,
    /// Print the rules instead of applying them.
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = smidge_proxy::identity::crypto_provider().install_default();
    init_logging(cli.log_format);
    match cli.command {
        Cmd::Init(args) => {
            if args.proxy_uid.0.is_none() && args.proxy_mark.is_none() {
                eprintln!("smidge-proxy init: with --proxy-uid none, give --proxy-mark (or the proxy's own traffic would loop)");
                return ExitCode::from(2);
            }
            let rules = Rules {
                proxy_uid: args.proxy_uid.0,
                proxy_mark: args.proxy_mark,
                outbound_port: args.outbound_port,
                inbound_port: args.inbound_port,
                admin_port: args.admin_port,
                skip_outbound_ports: args.skip_outbound_ports,
                skip_inbound_ports: args.skip_inbound_ports,
                skip_outbound_cidrs: args.skip_outbound_cidrs,
            };
            if args.dry_run {
                print!(
                    "# iptables-restore --noflush\n{}# ip6tables-restore --noflush\n{}",
                    rules.restore_input(),
                    rules.restore_input_v6()
                );
                return ExitCode::SUCCESS;
            }
            match init::apply(&rules) {
                Ok(()) => {
                    tracing::info!(proxy_uid = ?rules.proxy_uid, proxy_mark = ?rules.proxy_mark, "iptables rules in place");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("smidge-proxy init: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Run(args) => {
            let threads = args.threads.max(1);
            let identity = match identity(&args) {
                Ok(identity) => identity,
                Err(e) => {
                    eprintln!("smidge-proxy: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let config = Config {
                controller: args.controller,
                namespace: args.namespace,
                pod: args.pod,
                service_account: args.service_account,
                outbound: args.outbound,
                inbound: args.inbound,
                admin: args.admin,
                admin_private: args.admin_private,
                metrics_public: args.metrics_public,
                opaque_ports: args.opaque_ports.into_iter().collect::<BTreeSet<u16>>(),
                detect_timeout: Duration::from_millis(args.detect_timeout_ms),
                discovery_wait: Duration::from_millis(args.discovery_wait_ms),
                connect_timeout: Duration::from_millis(args.connect_timeout_ms),
                socket_mark: args.socket_mark,
                idle_subscription: Duration::from_secs(args.idle_subscription_secs),
                mesh_protocol: args.mesh_protocol,
                http: smidge_proxy::http::limits::HttpLimits {
                    max_header_bytes: args.max_header_bytes,
                    max_concurrent_streams: args.h2_max_concurrent_streams,
                    stream_window: args.h2_stream_window_bytes,
                    response_timeout: Duration::from_millis(args.response_timeout_ms),
                    keepalive_interval: Duration::from_millis(args.h2_keepalive_interval_ms),
                    keepalive_timeout: Duration::from_millis(args.h2_keepalive_timeout_ms),
                    header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
                },
                tcp_idle_timeout: (args.tcp_idle_timeout_secs > 0)
                    .then(|| Duration::from_secs(args.tcp_idle_timeout_secs)),
                identity,
                app_probes: smidge_proxy::app_probe::AppProbes {
                    probes: args.app_probes.unwrap_or_default(),
                    app_ip: args.pod_ip,
                    socket_mark: args.socket_mark,
                },
            };
            let runtime = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build()
            };
            let runtime = match runtime {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("smidge-proxy: starting the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("smidge-proxy: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The identity settings from `--trust-anchor` or `--trust-anchor-pem` and `--token-file`; none
/// without them (clap makes them come together). Errors name the file or flag.
fn identity(args: &RunArgs) -> Result<Option<run::IdentitySettings>, String> {
    let Some(token) = &args.token_file else {
        return Ok(None);
    };
    let anchor_pem = match (&args.trust_anchor, &args.trust_anchor_pem) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| format!("--trust-anchor {}: {e}", path.display()))?,
        (None, Some(pem)) => pem.clone(),
        (None, None) => {
            return Err("--token-file needs --trust-anchor or --trust-anchor-pem".into())
        }
    };
    // The token is read now to fail early, and again before every Hello.
    let token_file = smidge_proxy::identity::token::TokenFile::new(token);
    token_file.read().map_err(|e| format!("{e:#}"))?;
    Ok(Some(run::IdentitySettings {
        trust_domain: args.trust_domain.clone(),
        anchor_pem,
        token: token_file,
        controller_name: args.controller_name.clone(),
    }))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> Result<RunArgs, String> {
        let mut argv = vec!["smidge-proxy", "run", "--namespace", "ns", "--pod", "p"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Cmd::Run(args),
                ..
            }) => Ok(*args),
            Ok(_) => Err("not run".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn the_controller_is_a_name_or_an_ip_with_a_port() {
        let name = run_args(&[
            "--controller",
            "smidge-controller.smidge-system.svc.cluster.local:8086",
        ])
        .expect("a name");
        assert_eq!(
            name.controller.to_string(),
            "smidge-controller.smidge-system.svc.cluster.local:8086"
        );
        run_args(&["--controller", "10.0.0.1:8086"]).expect("an IP");
        let e = run_args(&["--controller", "smidge-controller"])
            .err()
            .expect("no port");
        assert!(e.contains("\"smidge-controller\" is not host:port"), "{e}");
    }

    #[test]
    fn the_anchor_comes_from_a_file_or_pem_text_never_both_and_only_with_a_token() {
        let c = ["--controller", "127.0.0.1:8086"];
        let with = |more: &[&str]| run_args(&[&c[..], more].concat());
        let args = with(&["--trust-anchor-pem", "PEM", "--token-file", "/t"]).expect("pem text");
        assert_eq!(args.trust_anchor_pem.as_deref(), Some("PEM"));
        with(&["--trust-anchor", "/a", "--token-file", "/t"]).expect("a file");
        assert!(with(&[
            "--trust-anchor",
            "/a",
            "--trust-anchor-pem",
            "PEM",
            "--token-file",
            "/t"
        ])
        .is_err());
        assert!(with(&["--trust-anchor-pem", "PEM"]).is_err(), "no token");
        assert!(with(&["--token-file", "/t"]).is_err(), "no anchor");
        let none = with(&[]).expect("no identity");
        assert!(identity(&none).expect("ok").is_none());
    }

    #[test]
    fn pem_text_and_a_token_file_make_the_identity() {
        let path = std::env::temp_dir().join(format!("smidge-proxy-token-{}", std::process::id()));
        std::fs::write(&path, "tok").expect("write");
        let token = path.to_str().expect("utf-8");
        let args = run_args(&[
            "--controller",
            "127.0.0.1:1",
            "--trust-anchor-pem",
            "PEM",
            "--token-file",
            token,
        ])
        .expect("args");
        let id = identity(&args).expect("identity").expect("some");
        assert_eq!(id.anchor_pem, "PEM");
        let args = run_args(&[
            "--controller",
            "127.0.0.1:1",
            "--trust-anchor",
            "/nonexistent/ca.crt",
            "--token-file",
            token,
        ])
        .expect("args");
        let e = identity(&args).expect_err("missing file");
        assert!(e.contains("--trust-anchor /nonexistent/ca.crt"), "{e}");
        let _ = std::fs::remove_file(&path);
    }
}
