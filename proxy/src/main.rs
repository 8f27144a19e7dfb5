//! `smidge-proxy`: `run` serves as the sidecar; `init` writes the pod's iptables rules.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use smidge_proxy::init::{self, Cidr, Rules};
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
struct RunArgs {
    /// The controller's push address.
    #[arg(long)]
    controller: SocketAddr,
    #[arg(long)]
    namespace: String,
    #[arg(long)]
    pod: String,
    #[arg(long, default_value = "default")]
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
    /// The mesh's trust anchor (PEM). With it the proxy gets a certificate from the controller,
    /// speaks mTLS to meshed peers and TLS to the controller.
    #[arg(long, requires = "token_file")]
    trust_anchor: Option<std::path::PathBuf>,
    /// The ServiceAccount token that proves this proxy's identity to the controller.
    #[arg(long, requires = "trust_anchor")]
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
            let identity = match (&args.trust_anchor, &args.token_file) {
                (Some(anchor), Some(token)) => {
                    let read = |p: &std::path::Path| {
                        std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
                    };
                    // The token is read now to fail early, and again before every Hello.
                    let token_file = smidge_proxy::identity::token::TokenFile::new(token);
                    match (
                        read(anchor),
                        token_file.read().map_err(|e| format!("{e:#}")),
                    ) {
                        (Ok(anchor_pem), Ok(_)) => Some(run::IdentitySettings {
                            trust_domain: args.trust_domain.clone(),
                            anchor_pem,
                            token: token_file,
                            controller_name: args.controller_name.clone(),
                        }),
                        (Err(e), _) | (_, Err(e)) => {
                            eprintln!("smidge-proxy: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                _ => None,
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
