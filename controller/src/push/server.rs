//! The push server: one long-lived connection per proxy. Hello first, then subscriptions; each
//! subscription gets the current view and then only its changes; acks and nacks come back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use smidge_protocol::{
    encode, ClientMessage, Encoded, FrameCodec, ServerMessage, ViewKey, PROTOCOL_VERSION,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::StreamMap;
use tokio_util::codec::Framed;

use super::registry::Registry;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts proxy connections until the listener fails.
pub async fn serve(listener: TcpListener, registry: Arc<Mutex<Registry>>) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let registry = registry.clone();
        tokio::spawn(async move {
            match connection(stream, peer, registry).await {
                Ok(()) => tracing::debug!(%peer, "proxy disconnected"),
                Err(e) => tracing::info!(%peer, error = %e, "proxy connection ended"),
            }
        });
    }
}

/// The last version sent on a connection for one view, and whether it went as a delta.
struct Sent {
    published: Arc<super::registry::Published>,
    was_delta: bool,
}

type Conn = Framed<TcpStream, FrameCodec<ClientMessage, Encoded>>;

async fn send(conn: &mut Conn, msg: &ServerMessage) -> anyhow::Result<()> {
    conn.send(Encoded(encode(msg)?)).await?;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    registry: Arc<Mutex<Registry>>,
) -> anyhow::Result<()> {
    let mut conn: Conn = Framed::new(stream, FrameCodec::default());
    let proxy = match tokio::time::timeout(HELLO_TIMEOUT, conn.next()).await {
        Ok(Some(Ok(ClientMessage::Hello {
            protocol_version,
            proxy,
        }))) if protocol_version == PROTOCOL_VERSION => proxy,
        Ok(Some(Ok(ClientMessage::Hello {
            protocol_version, ..
        }))) => {
            let reason = format!("protocol version {protocol_version} is not supported; this controller speaks {PROTOCOL_VERSION}");
            send(
                &mut conn,
                &ServerMessage::Refused {
                    reason: reason.clone(),
                },
            )
            .await?;
            anyhow::bail!(reason);
        }
        Ok(Some(Ok(other))) => {
            send(
                &mut conn,
                &ServerMessage::Refused {
                    reason: "the first message must be Hello".into(),
                },
            )
            .await?;
            anyhow::bail!("first message was {other:?}, not Hello");
        }
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(None) => return Ok(()),
        Err(_) => anyhow::bail!("no Hello within {HELLO_TIMEOUT:?}"),
    };
    send(
        &mut conn,
        &ServerMessage::Welcome {
            protocol_version: PROTOCOL_VERSION,
        },
    )
    .await?;
    tracing::info!(%peer, namespace = %proxy.namespace, pod = %proxy.pod, service_account = %proxy.service_account, "proxy connected");

    let mut subscriptions: StreamMap<ViewKey, WatchStream<Arc<super::registry::Published>>> =
        StreamMap::new();
    let mut sent: std::collections::HashMap<ViewKey, Sent> = std::collections::HashMap::new();
    let result = loop {
        tokio::select! {
            msg = conn.next() => match msg {
                None => break Ok(()),
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(ClientMessage::Subscribe(key))) => {
                    if subscriptions.contains_key(&key) {
                        continue;
                    }
                    let rx = match registry.lock() {
                        Ok(mut r) => r.subscribe(&key),
                        Err(_) => break Err(anyhow::anyhow!("registry lock poisoned")),
                    };
                    match rx {
                        Ok(rx) => { subscriptions.insert(key, WatchStream::new(rx)); }
                        Err(e) => tracing::error!(view = %key, error = %e, "cannot encode view"),
                    }
                }
                Some(Ok(ClientMessage::Unsubscribe(key))) => {
                    subscriptions.remove(&key);
                    sent.remove(&key);
                    if let Ok(mut r) = registry.lock() { r.release(&key); }
                }
                Some(Ok(ClientMessage::Ack { key, version })) => {
                    tracing::debug!(pod = %proxy.pod, view = %key, version, "ack");
                }
                Some(Ok(ClientMessage::Nack { key, version, reason })) => {
                    tracing::warn!(namespace = %proxy.namespace, pod = %proxy.pod, view = %key, version, %reason, "proxy refused a view");
                    // A refused delta means the proxy holds another base: the full view of the same
                    // version brings it back in step. A refused full view is logged and left.
                    if let Some(last) = sent.get_mut(&key).filter(|l| l.published.version == version && l.was_delta) {
                        last.was_delta = false;
                        let frame = last.published.full.clone();
                        conn.send(frame).await?;
                    }
                }
                Some(Ok(ClientMessage::Hello { .. })) => break Err(anyhow::anyhow!("Hello sent twice")),
            },
            Some((key, published)) = subscriptions.next(), if !subscriptions.is_empty() => {
                let delta = match (&published.delta, sent.get(&key)) {
                    (Some((base, delta)), Some(have)) if *base == have.published.version => Some(delta.clone()),
                    _ => None,
                };
                let was_delta = delta.is_some();
                let frame = delta.unwrap_or_else(|| published.full.clone());
                sent.insert(key, Sent { published, was_delta });
                conn.send(frame).await?;
            }
        }
    };
    let keys: Vec<ViewKey> = subscriptions.keys().cloned().collect();
    drop(subscriptions);
    if let Ok(mut r) = registry.lock() {
        for key in &keys {
            r.release(key);
        }
    }
    result
}
