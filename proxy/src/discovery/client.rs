//! The connection to the controller: Hello, subscriptions, updates, acks; reconnects with
//! exponential backoff and jitter, keeping every view it had.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use smidge_protocol::{ClientMessage, FrameCodec, ProxyId, ServerMessage, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use super::{Command, Discovery};

/// Where the controller is and how patiently to talk to it.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub controller: SocketAddr,
    pub connect_timeout: Duration,
    /// A subscription nobody used for this long is dropped.
    pub idle_after: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

type Conn = Framed<TcpStream, FrameCodec<ServerMessage, ClientMessage>>;

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
        TcpStream::connect(config.controller),
    )
    .await
    .context("connect timed out")?
    .context("connect")?;
    stream.set_nodelay(true)?;
    let mut conn: Conn = Framed::new(stream, FrameCodec::default());
    conn.send(ClientMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        proxy: proxy.clone(),
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
    Ok(Ended::Lost(loop {
        tokio::select! {
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
