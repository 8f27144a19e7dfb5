//! The connection to the controller: Hello, subscriptions, updates, acks; reconnects with
//! exponential backoff and jitter, keeping every view it had.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use smidge_protocol::{ClientMessage, FrameCodec, ProxyId, ServerMessage, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use super::{Command, Discovery};
use crate::identity::token::TokenFile;
use crate::identity::MeshIdentity;

/// TLS to the controller, and what the proxy proves itself with.
#[derive(Clone)]
pub struct ControlTls {
    pub connector: tokio_rustls::TlsConnector,
    /// The DNS name in the controller's certificate.
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// Read again before every Hello: projected tokens rotate.
    pub token: TokenFile,
    /// Certificates for the data path.
    pub identity: Arc<MeshIdentity>,
}

impl std::fmt::Debug for ControlTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where the controller is and how patiently to talk to it.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port`, resolved again at every connect.
    pub controller: crate::net::address::HostPort,
    pub connect_timeout: Duration,
    /// The firewall mark on the connection (see `init --proxy-mark`).
    pub socket_mark: Option<u32>,
    /// A subscription nobody used for this long is dropped.
    pub idle_after: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// `None`: plaintext, no token, no certificates (a controller without identity).
    pub tls: Option<ControlTls>,
}

type Conn = Framed<Box<dyn Io>, FrameCodec<ServerMessage, ClientMessage>>;

/// How long to wait before asking again after a refused or unanswered certificate request.
const CERTIFY_RETRY: Duration = Duration::from_secs(5);

pub(super) async fn run(
    discovery: Discovery,
    config: ClientConfig,
    proxy: ProxyId,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = config.backoff_min;
    loop {
        match session(&discovery, &config, &proxy, &mut commands).await {
            Ok(Ended::Shutdown) => return,
            Ok(Ended::Lost(e)) => {
                tracing::warn!(controller = %config.controller, error = %format!("{e:#}"), "lost the controller; serving the last views");
                backoff = config.backoff_min;
            }
            Err(e) => {
                tracing::warn!(controller = %config.controller, error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "cannot reach the controller");
            }
        }
        discovery.set_connected(false);
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

/// Between half and all of `d`, so proxies that lost the controller together do not return together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64() * 0.5)
}

enum Ended {
    Shutdown,
    /// The session was established, then failed.
    Lost(anyhow::Error),
}

async fn session(
    discovery: &Discovery,
    config: &ClientConfig,
    proxy: &ProxyId,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> anyhow::Result<Ended> {
    let stream = tokio::time::timeout(
        config.connect_timeout,
        config.controller.connect(config.socket_mark),
    )
    .await
    .with_context(|| format!("connecting to {} timed out", config.controller))??;
    stream.set_nodelay(true)?;
    let io: Box<dyn Io> = match &config.tls {
        Some(tls) => Box::new(
            tokio::time::timeout(
                config.connect_timeout,
                tls.connector.connect(tls.server_name.clone(), stream),
            )
            .await
            .context("TLS handshake timed out")?
            .context("TLS handshake with the controller")?,
        ),
        None => Box::new(stream),
    };
    let token = match &config.tls {
        Some(tls) => Some(tls.token.read()?),
        None => None,
    };
    let mut conn: Conn = Framed::new(io, FrameCodec::default());
    conn.send(ClientMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        proxy: proxy.clone(),
        token,
    })
    .await?;
    match tokio::time::timeout(config.connect_timeout, conn.next()).await {
        Ok(Some(Ok(ServerMessage::Welcome { .. }))) => {}
        Ok(Some(Ok(ServerMessage::Refused { reason }))) => {
            bail!("the controller refused this proxy: {reason}")
        }
        Ok(Some(Ok(other))) => bail!("expected Welcome, got {other:?}"),
        Ok(Some(Err(e))) => return Err(e).context("reading Welcome"),
        Ok(None) => bail!("the controller closed the connection before Welcome"),
        Err(_) => bail!("no Welcome within {:?}", config.connect_timeout),
    }
    discovery.set_connected(true);
    tracing::info!(controller = %config.controller, "connected to the controller");
    // Commands queued while away are covered by subscribing to everything held now.
    while commands.try_recv().is_ok() {}
    for key in discovery.keys() {
        conn.feed(ClientMessage::Subscribe(key)).await?;
    }
    conn.flush().await?;
    let identity = config.tls.as_ref().map(|t| t.identity.clone());
    let mut certify_at = identity.as_ref().map(|i| i.renew_at());
    Ok(Ended::Lost(loop {
        let certify = async {
            match certify_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = certify => {
                let Some(id) = &identity else { continue };
                match id.csr() {
                    Ok(csr) => {
                        tracing::debug!("asking for a certificate");
                        if let Err(e) = conn.send(ClientMessage::Certify { csr }).await {
                            break e.into();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot make a certificate request"),
                }
                certify_at = Some(std::time::Instant::now() + CERTIFY_RETRY);
            }
            cmd = commands.recv() => {
                let msg = match cmd {
                    Some(Command::Subscribe(k)) => ClientMessage::Subscribe(k),
                    Some(Command::Unsubscribe(k)) => ClientMessage::Unsubscribe(k),
                    None => return Ok(Ended::Shutdown),
                };
                if let Err(e) = conn.send(msg).await {
                    break e.into();
                }
            }
            msg = conn.next() => {
                let reply = match msg {
                    Some(Ok(ServerMessage::View { key, version, update })) => {
                        match discovery.apply(&key, version, update) {
                            Ok(()) => {
                                tracing::debug!(%key, version, "view applied");
                                ClientMessage::Ack { key, version }
                            }
                            Err(reason) => {
                                tracing::warn!(%key, version, %reason, "view refused");
                                ClientMessage::Nack { key, version, reason }
                            }
                        }
                    }
                    Some(Ok(ServerMessage::Certified { chain, not_after })) => {
                        if let Some(id) = &identity {
                            match id.install(chain, not_after) {
                                Ok(()) => {
                                    id.renewals.fetch_add(1, Ordering::Relaxed);
                                    tracing::info!(not_after, "certificate in use");
                                    certify_at = Some(id.renew_at());
                                }
                                Err(e) => {
                                    id.failures.fetch_add(1, Ordering::Relaxed);
                                    tracing::warn!(error = %e, "cannot use the issued certificate");
                                }
                            }
                        }
                        continue;
                    }
                    Some(Ok(ServerMessage::SubscribeRefused { key, reason })) => {
                        // Served as a destination the mesh does not know; asked again only
                        // after the proxy drops the key and needs it anew.
                        tracing::warn!(%key, reason = ?reason, "the controller refused a subscription");
                        if let Err(reason) = discovery.apply(&key, 0, smidge_protocol::ViewUpdate::Absent) {
                            tracing::warn!(%key, %reason, "cannot mark a refused view absent");
                        }
                        continue;
                    }
                    Some(Ok(ServerMessage::CertifyRefused { reason })) => {
                        if let Some(id) = &identity {
                            id.failures.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::warn!(%reason, "the controller refused a certificate; keeping the current one");
                        continue;
                    }
                    Some(Ok(other)) => {
                        tracing::warn!(message = ?other, "unexpected message from the controller");
                        continue;
                    }
                    Some(Err(e)) => break anyhow::Error::from(e).context("reading from the controller"),
                    None => break anyhow::anyhow!("the controller closed the connection"),
                };
                if let Err(e) = conn.send(reply).await {
                    break e.into();
                }
            }
        }
    }))
}
