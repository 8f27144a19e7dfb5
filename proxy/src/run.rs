//! Starting the proxy: listeners, discovery, admin.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use smidge_protocol::{Identity, ProxyId, ViewKey};
use tokio::net::TcpListener;

use crate::balance::Loads;
use crate::ctx::{Ctx, Settings};
use crate::discovery::{ClientConfig, ControlTls, Discovery};
use crate::http::pool::{Pool, PoolConfig};
use crate::identity::token::TokenFile;
use crate::identity::MeshIdentity;
use crate::inbound::identity::ByPeerAddress;
use crate::metrics::Metrics;

/// Everything `smidge-proxy run` needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The controller's `host:port` (a name is resolved at every connect).
    pub controller: crate::net::address::HostPort,
    pub namespace: String,
    pub pod: String,
    pub service_account: String,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    /// The admin listener other pods and the kubelet reach: probes (and `/metrics` if
    /// `metrics_public`).
    pub admin: SocketAddr,
    /// The loopback admin listener: every endpoint, `/views` and `/metrics` included.
    pub admin_private: SocketAddr,
    /// Also serve `/metrics` on `admin`, for scrapers outside the pod.
    pub metrics_public: bool,
    pub opaque_ports: BTreeSet<u16>,
    pub detect_timeout: Duration,
    pub discovery_wait: Duration,
    pub connect_timeout: Duration,
    /// The firewall mark on the proxy's own connections (`init --proxy-mark` exempts it).
    pub socket_mark: Option<u32>,
    pub idle_subscription: Duration,
    /// How the app's HTTP/1 requests cross between proxies.
    pub mesh_protocol: crate::http::pool::MeshProtocol,
    /// Header limit, HTTP/2 windows and streams, keepalive and HTTP timeouts.
    pub http: crate::http::limits::HttpLimits,
    /// An opaque TCP connection with no bytes either way for this long is closed (`None`: never).
    pub tcp_idle_timeout: Option<Duration>,
    /// mTLS and the secured control channel; `None` only against a controller without identity.
    pub identity: Option<IdentitySettings>,
    /// The apps' probes moved to the admin port by the injector.
    pub app_probes: crate::app_probe::AppProbes,
}

/// Where the proxy's identity comes from.
#[derive(Clone)]
pub struct IdentitySettings {
    pub trust_domain: String,
    /// PEM of the trust anchor.
    pub anchor_pem: String,
    /// The ServiceAccount token the controller checks, read again before every Hello.
    pub token: TokenFile,
    /// The DNS name in the controller's certificate.
    pub controller_name: String,
}

/// Written by hand so that no field that could ever hold a secret is printed.
impl std::fmt::Debug for IdentitySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySettings")
            .field("trust_domain", &self.trust_domain)
            .field("token_file", &self.token.path())
            .field("controller_name", &self.controller_name)
            .finish_non_exhaustive()
    }
}

/// Binds the listeners and serves until the process is stopped.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let outbound = TcpListener::bind(config.outbound)
        .await
        .with_context(|| format!("binding the outbound listener on {}", config.outbound))?;
    let inbound = TcpListener::bind(config.inbound)
        .await
        .with_context(|| format!("binding the inbound listener on {}", config.inbound))?;
    let admin = TcpListener::bind(config.admin)
        .await
        .with_context(|| format!("binding the admin listener on {}", config.admin))?;
    let admin_private = TcpListener::bind(config.admin_private)
        .await
        .with_context(|| {
            format!(
                "binding the private admin listener on {}",
                config.admin_private
            )
        })?;
    if !config.admin_private.ip().is_loopback() {
        tracing::warn!(admin_private = %config.admin_private, "the private admin listener (/views, /metrics) is not on loopback: other pods can read it");
    }

    let identity = Identity::new(config.namespace.clone(), config.service_account.clone());
    let (mesh, tls) = match &config.identity {
        Some(settings) => {
            let mesh = Arc::new(
                MeshIdentity::new(
                    identity.clone(),
                    &settings.trust_domain,
                    &settings.anchor_pem,
                )
                .context("the trust anchor")?,
            );
            let control =
                rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
                    .with_root_certificates(mesh.roots())
                    .with_no_client_auth();
            let tls = ControlTls {
                connector: tokio_rustls::TlsConnector::from(Arc::new(control)),
                server_name: rustls::pki_types::ServerName::try_from(
                    settings.controller_name.clone(),
                )
                .context("--controller-name")?,
                token: settings.token.clone(),
                identity: mesh.clone(),
            };
            (Some(mesh), Some(tls))
        }
        None => {
            tracing::warn!(
                "no identity configured: no mTLS; callers are identified by source address"
            );
            (None, None)
        }
    };
    let discovery = Discovery::start(
        ClientConfig {
            controller: config.controller.clone(),
            connect_timeout: config.connect_timeout,
            socket_mark: config.socket_mark,
            idle_after: config.idle_subscription,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            tls,
        },
        ProxyId {
            namespace: config.namespace.clone(),
            pod: config.pod.clone(),
            service_account: config.service_account.clone(),
        },
    );
    let policy = discovery.pin(&ViewKey::Inbound(identity.clone()));
    let pool = Pool::new(
        PoolConfig {
            connect_timeout: config.connect_timeout,
            socket_mark: config.socket_mark,
            idle_timeout: Duration::from_secs(30),
            max_idle_per_addr: 16,
            mesh_protocol: config.mesh_protocol,
            limits: config.http.clone(),
        },
        mesh.clone(),
    );
    let ctx = Arc::new(Ctx {
        settings: Settings {
            detect_timeout: config.detect_timeout,
            detect_max_bytes: 4096,
            opaque_ports: config.opaque_ports.clone(),
            discovery_wait: config.discovery_wait,
            connect_timeout: config.connect_timeout,
            tcp_idle_timeout: config.tcp_idle_timeout,
            inbound_port: config.inbound.port(),
            peer_inbound_port: config.inbound.port(),
            own_ports: crate::inbound::guard::OwnPorts {
                outbound: config.outbound.port(),
                inbound: config.inbound.port(),
                admin: config.admin.port(),
                admin_private: config.admin_private.port(),
            },
        },
        identity_label: match &mesh {
            Some(m) => smidge_protocol::names::spiffe_id(&m.trust_domain, &identity),
            None => identity.to_string(),
        },
        identity,
        mesh,
        discovery: discovery.clone(),
        pool: pool.clone(),
        loads: Loads::default(),
        metrics: Arc::new(Metrics::new()),
        peers: Arc::new(ByPeerAddress {
            discovery,
            wait: config.discovery_wait,
        }),
        policy,
        app_probes: config.app_probes.clone(),
    });

    tracing::info!(
        outbound = %outbound.local_addr()?,
        inbound = %inbound.local_addr()?,
        admin = %admin.local_addr()?,
        admin_private = %admin_private.local_addr()?,
        metrics_public = config.metrics_public,
        identity = %ctx.identity,
        controller = %config.controller,
        "proxy listening"
    );

    // Weak: the context owns discovery, which keeps this hook.
    let weak = Arc::downgrade(&ctx);
    ctx.discovery.on_endpoints_removed(move |addrs| {
        if let Some(ctx) = weak.upgrade() {
            ctx.loads.forget(addrs);
        }
    });
    let limits = crate::admin::Limits::default();
    tokio::spawn(crate::admin::serve(
        admin,
        ctx.clone(),
        crate::admin::Exposure::Public {
            metrics: config.metrics_public,
        },
        limits,
    ));
    tokio::spawn(crate::admin::serve(
        admin_private,
        ctx.clone(),
        crate::admin::Exposure::Private,
        limits,
    ));
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                ctx.pool.sweep();
                ctx.loads.prune(Duration::from_secs(60));
            }
        });
    }
    let inbound_ctx = ctx.clone();
    tokio::spawn(async move {
        loop {
            match inbound.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(crate::inbound::accept(inbound_ctx.clone(), stream, peer));
                }
                Err(e) => accept_failed("inbound", e).await,
            }
        }
    });
    loop {
        match outbound.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(crate::outbound::accept(ctx.clone(), stream));
            }
            Err(e) => accept_failed("outbound", e).await,
        }
    }
}

/// Out of file descriptors and the like: say so and pause rather than spin.
async fn accept_failed(listener: &str, e: std::io::Error) {
    tracing::warn!(listener, error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_never_print_the_token() {
        let path = std::env::temp_dir().join(format!(
            "smidge-token-settings-debug-{}",
            std::process::id()
        ));
        std::fs::write(&path, "eyJhbGciOiJIUzI1NiJ9.secret-body.signature").expect("write");
        let settings = IdentitySettings {
            trust_domain: "cluster.local".into(),
            anchor_pem: "-----BEGIN CERTIFICATE-----".into(),
            token: TokenFile::new(&path),
            controller_name: "smidge-controller".into(),
        };
        let shown = format!("{settings:?} {settings:#?}");
        assert!(
            !shown.contains("secret-body") && !shown.contains("eyJ"),
            "{shown}"
        );
        assert!(shown.contains("token"), "{shown}");
        let _ = std::fs::remove_file(&path);
    }
}
