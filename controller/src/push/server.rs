//! The push server: one long-lived connection per proxy. Hello first, then subscriptions; each
//! subscription gets the current view and then only its changes; acks and nacks come back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use smidge_protocol::{
    encode, ClientMessage, Encoded, FrameCodec, ServerMessage, ViewKey, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::StreamMap;
use tokio_util::codec::Framed;

use super::registry::Registry;
use crate::identity::{Authority, Claims, Proof};

/// The identity side of the push server: TLS for the channel, tokens, certificates.
pub struct Secured {
    pub authority: Arc<Authority>,
    pub tls: tokio_rustls::TlsAcceptor,
    /// How tokens in Hello are checked.
    pub proof: Arc<Proof>,
}

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts proxy connections until the listener fails. With `secured`, connections are TLS,
/// Hello must carry a valid token for the proxy it names, and proxies may ask for certificates.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Mutex<Registry>>,
    secured: Option<Arc<Secured>>,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let registry = registry.clone();
        let secured = secured.clone();
        tokio::spawn(async move {
            let result = match secured {
                Some(s) => match tokio::time::timeout(HELLO_TIMEOUT, s.tls.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        connection(
                            tls,
                            peer,
                            registry,
                            Some((s.authority.clone(), s.proof.clone())),
                        )
                        .await
                    }
                    Ok(Err(e)) => Err(anyhow::anyhow!("TLS handshake: {e}")),
                    Err(_) => Err(anyhow::anyhow!("no TLS handshake within {HELLO_TIMEOUT:?}")),
                },
                None => connection(stream, peer, registry, None).await,
            };
            match result {
                Ok(()) => tracing::debug!(%peer, "proxy disconnected"),
                Err(e) => tracing::info!(%peer, error = %e, "proxy connection ended"),
            }
        });
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks the token of a Hello against the proxy it names. The error never contains the token.
async fn admit(
    proof: &Proof,
    proxy: &smidge_protocol::ProxyId,
    token: Option<&str>,
) -> Result<Claims, String> {
    let token = token.ok_or("this controller requires a ServiceAccount token in Hello")?;
    let claims = proof.verify(token, unix_now()).await?;
    if claims.ns != proxy.namespace || claims.sa != proxy.service_account || claims.pod != proxy.pod
    {
        return Err(format!(
            "the token proves {}/{} (pod {}), but Hello says {}/{} (pod {})",
            claims.ns, claims.sa, claims.pod, proxy.namespace, proxy.service_account, proxy.pod
        ));
    }
    Ok(claims)
}

/// The last version sent on a connection for one view, and whether it went as a delta.
struct Sent {
    published: Arc<super::registry::Published>,
    was_delta: bool,
}

type Conn<IO> = Framed<IO, FrameCodec<ClientMessage, Encoded>>;

async fn send<IO: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<IO>,
    msg: &ServerMessage,
) -> anyhow::Result<()> {
    conn.send(Encoded(encode(msg)?)).await?;
    Ok(())
}

async fn connection<IO: AsyncRead + AsyncWrite + Unpin>(
    stream: IO,
    peer: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    secured: Option<(Arc<Authority>, Arc<Proof>)>,
) -> anyhow::Result<()> {
    let authority = secured.as_ref().map(|(a, _)| a.clone());
    let mut conn: Conn<IO> = Framed::new(stream, FrameCodec::default());
    let (proxy, token) = match tokio::time::timeout(HELLO_TIMEOUT, conn.next()).await {
        Ok(Some(Ok(ClientMessage::Hello {
            protocol_version,
            proxy,
            token,
        }))) if protocol_version == PROTOCOL_VERSION => (proxy, token),
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
    let claims = match &secured {
        Some((_, proof)) => match admit(proof, &proxy, token.as_deref()).await {
            Ok(c) => Some(c),
            Err(reason) => {
                tracing::warn!(%peer, namespace = %proxy.namespace, pod = %proxy.pod, service_account = %proxy.service_account, %reason, "refused a proxy");
                send(
                    &mut conn,
                    &ServerMessage::Refused {
                        reason: reason.clone(),
                    },
                )
                .await?;
                anyhow::bail!(reason);
            }
        },
        None => None,
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
                Some(Ok(ClientMessage::Certify { csr })) => {
                    let answer = match (&authority, &claims) {
                        (Some(a), Some(c)) => match a.issue(c, &csr, time::OffsetDateTime::now_utc()) {
                            Ok(issued) => {
                                tracing::info!(namespace = %c.ns, service_account = %c.sa, pod = %c.pod, not_after = issued.not_after, "issued a certificate");
                                ServerMessage::Certified { chain: issued.chain, not_after: issued.not_after }
                            }
                            Err(e) => {
                                tracing::warn!(namespace = %c.ns, service_account = %c.sa, pod = %c.pod, reason = %e, "refused a certificate request");
                                ServerMessage::CertifyRefused { reason: e.to_string() }
                            }
                        },
                        _ => ServerMessage::CertifyRefused {
                            reason: "this controller runs no identity CA (start it with --identity-dir)".into(),
                        },
                    };
                    send(&mut conn, &answer).await?;
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::token::AUDIENCE;
    use smidge_protocol::ProxyId;

    fn authority() -> (tempfile::TempDir, Authority) {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::identity::generate(dir.path(), "cluster.local").expect("generate");
        let trust = crate::identity::Trust::load(dir.path()).expect("load");
        let a = Authority::new(trust, "cluster.local", Duration::from_secs(60)).expect("authority");
        (dir, a)
    }

    fn proxy(sa: &str) -> ProxyId {
        ProxyId {
            namespace: "shop".into(),
            pod: "p".into(),
            service_account: sa.into(),
        }
    }

    #[tokio::test]
    async fn a_token_is_admitted_only_for_the_proxy_it_names() {
        let (dir, a) = authority();
        let proof = Proof::Local(
            crate::identity::Trust::load(dir.path())
                .expect("load")
                .token_key,
        );
        let token = a.token_key.sign(&Claims {
            ns: "shop".into(),
            sa: "storefront".into(),
            pod: "p".into(),
            aud: AUDIENCE.into(),
            exp: unix_now() + 60,
        });
        assert!(admit(&proof, &proxy("storefront"), Some(&token))
            .await
            .is_ok());
        // Replayed by a proxy claiming another ServiceAccount.
        let e = admit(&proof, &proxy("checkout"), Some(&token))
            .await
            .expect_err("replay");
        assert!(e.contains("the token proves shop/storefront"), "{e}");
        assert!(!e.contains(&token), "the reason leaks the token");
        assert!(admit(&proof, &proxy("storefront"), None).await.is_err());
    }
}
