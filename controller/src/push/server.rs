//! The push server: one long-lived connection per proxy. Hello first, then subscriptions; each
//! subscription gets the current view and then only its changes; acks and nacks come back.
//!
//! Before Hello a connection is unauthenticated: it is held to a small first frame, a short
//! deadline for TLS and Hello together, and a cap on how many such connections exist at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use smidge_protocol::{
    encode, ClientMessage, Encoded, FrameCodec, Identity, ServerMessage, ViewKey, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::StreamMap;
use tokio_util::codec::Framed;

use super::authorize::{authorize, pod_ips, source_matches, NotSynced};
use super::hello;
use super::limits::{Bucket, MAX_SUBSCRIPTIONS};
use super::registry::Registry;
use crate::identity::{Authority, Claims, Proof};

/// The identity side of the push server: TLS for the channel, tokens, certificates.
pub struct Secured {
    pub authority: Arc<Authority>,
    pub tls: tokio_rustls::TlsAcceptor,
    /// How tokens in Hello are checked.
    pub proof: Arc<Proof>,
}

/// How long a new connection has for its TLS handshake and Hello together.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The default cap on connections that have not said an accepted Hello yet: each costs at most
/// its 8 KiB Hello buffer and TLS state (about 40 KiB), so about 40 MiB in all.
pub const MAX_UNAUTHENTICATED: usize = 1024;

/// Refused subscriptions logged per connection; later ones are only counted.
const REFUSALS_LOGGED: u32 = 10;

/// How the push server is limited.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections not yet past Hello; more are closed at once.
    pub max_unauthenticated: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_unauthenticated: MAX_UNAUTHENTICATED,
        }
    }
}

/// Counts what connections released (ended connections and dropped subscriptions), so the
/// controller can return freed memory once a burst is over.
#[derive(Debug, Default)]
pub struct Churn(AtomicU64);

impl Churn {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Accepts proxy connections forever. With `secured`, connections are TLS, Hello must carry a
/// valid token for the proxy it names, and proxies may ask for certificates. Accept errors (out
/// of file descriptors) are logged and waited out, never fatal.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Mutex<Registry>>,
    secured: Option<Arc<Secured>>,
    limits: Limits,
    churn: Arc<Churn>,
) -> std::io::Result<()> {
    let pending = Arc::new(Semaphore::new(limits.max_unauthenticated));
    let mut turned_away = Throttled::default();
    let mut accept_errors = Throttled::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                if let Some(n) = accept_errors.tick(Instant::now()) {
                    tracing::warn!(error = %e, errors = n, "accepting a proxy connection failed; pausing");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            drop(stream);
            if let Some(n) = turned_away.tick(Instant::now()) {
                tracing::warn!(%peer, closed = n, limit = limits.max_unauthenticated, "too many connections before Hello; closed new ones");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let registry = registry.clone();
        let secured = secured.clone();
        let churn = churn.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
            let result = match secured {
                Some(s) => match tokio::time::timeout_at(deadline, s.tls.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let secured = Some((s.authority.clone(), s.proof.clone()));
                        connection(tls, peer, registry, secured, deadline, permit, &churn).await
                    }
                    Ok(Err(e)) => Err(anyhow::anyhow!("TLS handshake: {e}")),
                    Err(_) => Err(anyhow::anyhow!(
                        "no TLS handshake and Hello within {HELLO_TIMEOUT:?}"
                    )),
                },
                None => connection(stream, peer, registry, None, deadline, permit, &churn).await,
            };
            churn.add(1);
            match result {
                Ok(()) => tracing::debug!(%peer, "proxy disconnected"),
                Err(e) => tracing::info!(%peer, error = %e, "proxy connection ended"),
            }
        });
    }
}

/// Logs at most once a second: `tick` answers how many events happened since the last log.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    count: u64,
}

impl Throttled {
    fn tick(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < Duration::from_secs(1))
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
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

/// Checks the token again for a certificate request: still valid (not expired; with TokenReview,
/// reviewed again) and still for the proxy admitted on this connection.
async fn recheck(
    proof: &Proof,
    admitted: &Claims,
    token: &str,
    now: u64,
) -> Result<Claims, String> {
    let claims = proof
        .verify(token, now)
        .await
        .map_err(|e| format!("the token of this connection no longer holds: {e}"))?;
    if (&claims.ns, &claims.sa, &claims.pod) != (&admitted.ns, &admitted.sa, &admitted.pod) {
        return Err("the token now proves another workload than at Hello".into());
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

/// Sends `Refused` and fails with the same reason.
async fn refuse<IO: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<IO>,
    reason: String,
) -> anyhow::Result<()> {
    send(
        conn,
        &ServerMessage::Refused {
            reason: reason.clone(),
        },
    )
    .await?;
    anyhow::bail!(reason)
}

/// The admitted side of a connection with identity: who, and the token that proved it.
struct Admitted {
    claims: Claims,
    token: String,
}

async fn connection<IO: AsyncRead + AsyncWrite + Unpin>(
    stream: IO,
    peer: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    secured: Option<(Arc<Authority>, Arc<Proof>)>,
    deadline: tokio::time::Instant,
    permit: OwnedSemaphorePermit,
    churn: &Churn,
) -> anyhow::Result<()> {
    let authority = secured.as_ref().map(|(a, _)| a.clone());
    let mut conn: Conn<IO> = Framed::new(stream, FrameCodec::client_frames());
    let (proxy, token) = match tokio::time::timeout_at(deadline, conn.next()).await {
        Ok(Some(Ok(ClientMessage::Hello {
            protocol_version,
            proxy,
            token,
        }))) if protocol_version == PROTOCOL_VERSION => (proxy, token),
        Ok(Some(Ok(ClientMessage::Hello {
            protocol_version, ..
        }))) => {
            let reason = format!("protocol version {protocol_version} is not supported; this controller speaks {PROTOCOL_VERSION}");
            return refuse(&mut conn, reason).await;
        }
        Ok(Some(Ok(_))) => {
            return refuse(&mut conn, "the first message must be Hello".into()).await;
        }
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(None) => return Ok(()),
        Err(_) => anyhow::bail!("no TLS handshake and Hello within {HELLO_TIMEOUT:?}"),
    };
    if let Err(reason) = hello::validate(&proxy) {
        tracing::warn!(%peer, %reason, "refused a proxy");
        return refuse(&mut conn, reason).await;
    }
    let admitted = match &secured {
        Some((_, proof)) => {
            let checked = match admit(proof, &proxy, token.as_deref()).await {
                Ok(claims) => from_its_pod(&registry, &claims, peer).map(|()| claims),
                Err(reason) => Err(reason),
            };
            match (checked, token) {
                (Ok(claims), Some(token)) => Some(Admitted { claims, token }),
                (Err(reason), _) => {
                    tracing::warn!(%peer, namespace = ?proxy.namespace, pod = ?proxy.pod, service_account = ?proxy.service_account, reason = ?reason, "refused a proxy");
                    return refuse(&mut conn, reason).await;
                }
                (Ok(_), None) => anyhow::bail!("admitted without a token"),
            }
        }
        None => None,
    };
    send(
        &mut conn,
        &ServerMessage::Welcome {
            protocol_version: PROTOCOL_VERSION,
        },
    )
    .await?;
    drop(permit);
    tracing::info!(%peer, namespace = ?proxy.namespace, pod = ?proxy.pod, service_account = ?proxy.service_account, "proxy connected");
    let who = admitted
        .as_ref()
        .map(|a| Identity::new(a.claims.ns.clone(), a.claims.sa.clone()));
    let member = match registry.lock() {
        Ok(r) => r.connected().join(
            &proxy.namespace,
            &proxy.pod,
            &format!("{}/{}", proxy.namespace, proxy.service_account),
        ),
        Err(_) => anyhow::bail!("registry lock poisoned"),
    };

    let mut subscriptions: StreamMap<ViewKey, WatchStream<Arc<super::registry::Published>>> =
        StreamMap::new();
    let mut sent: std::collections::HashMap<ViewKey, Sent> = std::collections::HashMap::new();
    let mut bucket = Bucket::subscriptions(Instant::now());
    let mut refused: u32 = 0;
    let result = loop {
        tokio::select! {
            msg = conn.next() => match msg {
                None => break Ok(()),
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(ClientMessage::Subscribe(key))) => {
                    while let Some(wait) = bucket.take(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                    if subscriptions.contains_key(&key) {
                        continue;
                    }
                    let rx = match registry.lock() {
                        Ok(mut r) => {
                            let allowed = if subscriptions.len() >= MAX_SUBSCRIPTIONS {
                                Err(format!("this connection holds {MAX_SUBSCRIPTIONS} subscriptions, the most allowed"))
                            } else if r.synced() {
                                authorize(&key, who.as_ref(), r.index())
                            } else {
                                authorize(&key, who.as_ref(), &NotSynced)
                            };
                            allowed.map(|()| r.subscribe(&key))
                        }
                        Err(_) => break Err(anyhow::anyhow!("registry lock poisoned")),
                    };
                    match rx {
                        Ok(Ok(rx)) => {
                            member.subscribed(&key);
                            subscriptions.insert(key, WatchStream::new(rx));
                        }
                        Ok(Err(e)) => tracing::error!(view = %key, error = %e, "cannot encode view"),
                        Err(reason) => {
                            refused += 1;
                            if refused <= REFUSALS_LOGGED {
                                tracing::warn!(%peer, pod = ?proxy.pod, view = %key, %reason, "refused a subscription");
                            }
                            send(&mut conn, &ServerMessage::SubscribeRefused { key, reason }).await?;
                        }
                    }
                }
                Some(Ok(ClientMessage::Unsubscribe(key))) => {
                    if subscriptions.remove(&key).is_some() {
                        churn.add(1);
                    }
                    sent.remove(&key);
                    member.unsubscribed(&key);
                    if let Ok(mut r) = registry.lock() { r.release(&key); }
                }
                Some(Ok(ClientMessage::Ack { key, version })) => {
                    tracing::debug!(pod = ?proxy.pod, view = %key, version, "ack");
                    member.acked(&key, version);
                }
                Some(Ok(ClientMessage::Nack { key, version, reason })) => {
                    tracing::warn!(namespace = ?proxy.namespace, pod = ?proxy.pod, view = %key, version, reason = ?hello::bounded(&reason), "proxy refused a view");
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
                    let answer = certify(authority.as_deref(), secured.as_ref().map(|(_, p)| &**p), admitted.as_ref(), &csr, unix_now()).await;
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
    if refused > REFUSALS_LOGGED {
        tracing::warn!(%peer, pod = ?proxy.pod, refused, "refused subscriptions on this connection");
    }
    let keys: Vec<ViewKey> = subscriptions.keys().cloned().collect();
    drop(subscriptions);
    churn.add(keys.len() as u64);
    if let Ok(mut r) = registry.lock() {
        for key in &keys {
            r.release(key);
        }
    }
    result
}

/// A token is used only from its pod's address, when the index knows that address.
fn from_its_pod(
    registry: &Mutex<Registry>,
    claims: &Claims,
    peer: SocketAddr,
) -> Result<(), String> {
    let ips = registry
        .lock()
        .map(|r| pod_ips(r.index(), &claims.ns, &claims.pod))
        .map_err(|_| "registry lock poisoned".to_string())?;
    if !source_matches(&ips, peer.ip())? {
        tracing::debug!(%peer, namespace = ?claims.ns, pod = ?claims.pod, "no address known for the token's pod; source not checked");
    }
    Ok(())
}

/// The answer to a certificate request: the token is checked again first, and the certificate
/// ends no later than the token.
async fn certify(
    authority: Option<&Authority>,
    proof: Option<&Proof>,
    admitted: Option<&Admitted>,
    csr: &[u8],
    now: u64,
) -> ServerMessage {
    let (Some(authority), Some(proof), Some(admitted)) = (authority, proof, admitted) else {
        return ServerMessage::CertifyRefused {
            reason: "this controller runs no identity CA (start it with --identity-dir)".into(),
        };
    };
    let c = &admitted.claims;
    let claims = match recheck(proof, c, &admitted.token, now).await {
        Ok(claims) => claims,
        Err(reason) => {
            tracing::warn!(namespace = ?c.ns, service_account = ?c.sa, pod = ?c.pod, %reason, "refused a certificate request");
            return ServerMessage::CertifyRefused { reason };
        }
    };
    let at = i64::try_from(now)
        .ok()
        .and_then(|n| time::OffsetDateTime::from_unix_timestamp(n).ok())
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    match authority.issue(&claims, csr, at) {
        Ok(issued) => {
            tracing::info!(namespace = ?c.ns, service_account = ?c.sa, pod = ?c.pod, not_after = issued.not_after, "issued a certificate");
            ServerMessage::Certified {
                chain: issued.chain,
                not_after: issued.not_after,
            }
        }
        Err(e) => {
            tracing::warn!(namespace = ?c.ns, service_account = ?c.sa, pod = ?c.pod, reason = %e, "refused a certificate request");
            ServerMessage::CertifyRefused {
                reason: e.to_string(),
            }
        }
    }
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

    #[tokio::test]
    async fn an_expired_token_on_an_open_connection_cannot_renew() {
        let (dir, a) = authority();
        let proof = Proof::Local(
            crate::identity::Trust::load(dir.path())
                .expect("load")
                .token_key,
        );
        let now = unix_now();
        let claims = Claims {
            ns: "shop".into(),
            sa: "storefront".into(),
            pod: "p".into(),
            aud: AUDIENCE.into(),
            exp: now + 30,
        };
        let token = a.token_key.sign(&claims);
        let admitted = Admitted {
            claims: admit(&proof, &proxy("storefront"), Some(&token))
                .await
                .expect("admitted at Hello"),
            token,
        };
        let csr = {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::default();
            params.subject_alt_names = vec![
                rcgen::SanType::URI(
                    "spiffe://cluster.local/ns/shop/sa/storefront"
                        .try_into()
                        .expect("uri"),
                ),
                rcgen::SanType::DnsName(
                    "storefront.shop.serviceaccount.identity.smidge.cluster.local"
                        .try_into()
                        .expect("dns"),
                ),
            ];
            params.serialize_request(&key).expect("csr").der().to_vec()
        };
        // While the token holds: a certificate that ends no later than the token.
        match certify(Some(&a), Some(&proof), Some(&admitted), &csr, now).await {
            ServerMessage::Certified { not_after, .. } => assert!(not_after <= now + 30),
            other => panic!("{other:?}"),
        }
        // The same connection after the token expired: refused.
        match certify(Some(&a), Some(&proof), Some(&admitted), &csr, now + 31).await {
            ServerMessage::CertifyRefused { reason } => {
                assert!(reason.contains("expired"), "{reason}");
                assert!(
                    !reason.contains(&admitted.token),
                    "the reason leaks the token"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn log_throttling_counts_what_it_does_not_log() {
        let mut t = Throttled::default();
        let t0 = Instant::now();
        assert_eq!(t.tick(t0), Some(1));
        assert_eq!(t.tick(t0), None);
        assert_eq!(t.tick(t0 + Duration::from_millis(500)), None);
        assert_eq!(t.tick(t0 + Duration::from_secs(1)), Some(3));
    }
}
