//! Upstream HTTP connections, pooled per address: idle HTTP/1 connections wait for reuse,
//! one multiplexed HTTP/2 connection per address.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use smidge_protocol::Identity;

use crate::identity::{Alpn, MeshIdentity};
use crate::net::BoxIo;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    #[error("mTLS with {addr} (expected {expected}): {source}")]
    Tls {
        addr: SocketAddr,
        expected: String,
        source: io::Error,
    },
    #[error("HTTP handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("forwarding to {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

impl ForwardError {
    /// The endpoint could not be reached at all (as opposed to failing mid-request).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ForwardError::Connect { .. }
                | ForwardError::ConnectTimeout { .. }
                | ForwardError::Tls { .. }
                | ForwardError::Handshake { .. }
        )
    }
}

struct Idle {
    sender: http1::SendRequest<Incoming>,
    since: Instant,
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub connect_timeout: Duration,
    /// The firewall mark on connections to peers (see `init --proxy-mark`).
    pub socket_mark: Option<u32>,
    pub idle_timeout: Duration,
    pub max_idle_per_addr: usize,
    /// How HTTP/1 requests cross to a meshed peer: multiplexed as HTTP/2 on one connection
    /// (the default), or as HTTP/1.1 on pooled connections.
    pub mesh_protocol: MeshProtocol,
}

/// The protocol between proxies for the app's HTTP/1 requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MeshProtocol {
    /// One multiplexed connection per peer: fewest connections and handshakes.
    #[default]
    #[value(name = "h2")]
    Http2,
    /// Pooled HTTP/1.1 connections: no HTTP/2 conversion per request, a connection per
    /// concurrent request.
    #[value(name = "http1")]
    Http1,
}

/// Where a request goes: an address and, for a meshed peer, the identity it must prove.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Some`: mTLS, and the peer's certificate must name this identity.
    pub peer: Option<Identity>,
}

/// The proxy's upstream connections.
pub struct Pool {
    config: PoolConfig,
    mesh: Option<Arc<MeshIdentity>>,
    h1: Mutex<HashMap<Target, Vec<Idle>>>,
    h2: Mutex<HashMap<Target, http2::SendRequest<Incoming>>>,
}

impl Pool {
    pub fn new(config: PoolConfig, mesh: Option<Arc<MeshIdentity>>) -> Arc<Pool> {
        Arc::new(Pool {
            config,
            mesh,
            h1: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
        })
    }

    /// How HTTP/1 requests cross to meshed peers.
    pub fn mesh_protocol(&self) -> MeshProtocol {
        self.config.mesh_protocol
    }

    /// The target as this proxy will reach it: mTLS only when both sides are meshed.
    pub fn target(&self, addr: SocketAddr, peer: Option<&Identity>) -> Target {
        Target {
            addr,
            peer: peer.filter(|_| self.mesh.is_some()).cloned(),
        }
    }

    /// Sends `req` to `target` in the request's own HTTP version.
    pub async fn send(
        self: &Arc<Self>,
        target: &Target,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, ForwardError> {
        if req.version() == Version::HTTP_2 {
            self.send_h2(target, req).await
        } else {
            self.send_h1(target, req).await
        }
    }

    /// A connection to `target`: TCP, wrapped in mTLS for a meshed peer.
    pub async fn connect(&self, target: &Target, alpn: Alpn) -> Result<BoxIo, ForwardError> {
        let addr = target.addr;
        let after = self.config.connect_timeout;
        let stream = tokio::time::timeout(
            after,
            crate::net::connect::connect(addr, self.config.socket_mark),
        )
        .await
        .map_err(|_| ForwardError::ConnectTimeout { addr, after })?
        .map_err(|source| ForwardError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let (Some(peer), Some(mesh)) = (&target.peer, &self.mesh) else {
            return Ok(Box::new(stream));
        };
        let expected = smidge_protocol::names::spiffe_id(&mesh.trust_domain, peer);
        let name = mesh.server_name(peer).map_err(|e| ForwardError::Tls {
            addr,
            expected: expected.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
        })?;
        let tls = tokio::time::timeout(
            after,
            tokio_rustls::TlsConnector::from(mesh.client(alpn)).connect(name, stream),
        )
        .await
        .map_err(|_| ForwardError::ConnectTimeout { addr, after })?
        .map_err(|source| ForwardError::Tls {
            addr,
            expected,
            source,
        })?;
        Ok(Box::new(tls))
    }

    async fn send_h1(
        self: &Arc<Self>,
        target: &Target,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let addr = target.addr;
        // A pooled connection the server closed before our request went out is retried once on
        // a fresh connection; a request that went out is never sent twice.
        if let Some(mut sender) = self.take_h1(target) {
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.recycle_h1(target.clone(), sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => {
                        return Err(ForwardError::Http {
                            addr,
                            source: e.into_error(),
                        })
                    }
                },
            }
        }
        let mut sender = self.connect_h1(target).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|source| ForwardError::Http { addr, source })?;
        self.recycle_h1(target.clone(), sender);
        Ok(resp)
    }

    fn take_h1(&self, target: &Target) -> Option<http1::SendRequest<Incoming>> {
        let mut pools = self.h1.lock().ok()?;
        let idle = pools.get_mut(target)?;
        let timeout = self.config.idle_timeout;
        while let Some(i) = idle.pop() {
            if !i.sender.is_closed() && i.sender.is_ready() && i.since.elapsed() < timeout {
                return Some(i.sender);
            }
        }
        pools.remove(target);
        None
    }

    /// Returns the connection to the pool once its response has been read to the end.
    fn recycle_h1(self: &Arc<Self>, target: Target, mut sender: http1::SendRequest<Incoming>) {
        let pool = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            if let Ok(mut pools) = pool.h1.lock() {
                let idle = pools.entry(target).or_default();
                if idle.len() < pool.config.max_idle_per_addr {
                    idle.push(Idle {
                        sender,
                        since: Instant::now(),
                    });
                }
            }
        });
    }

    async fn connect_h1(
        &self,
        target: &Target,
    ) -> Result<http1::SendRequest<Incoming>, ForwardError> {
        let addr = target.addr;
        let io = TokioIo::new(self.connect(target, Alpn::Http1).await?);
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|source| ForwardError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/1 connection ended");
            }
        });
        Ok(sender)
    }

    async fn send_h2(
        &self,
        target: &Target,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let addr = target.addr;
        let existing = self
            .h2
            .lock()
            .ok()
            .and_then(|m| m.get(target).filter(|s| !s.is_closed()).cloned());
        let mut sender = match existing {
            Some(s) => s,
            None => {
                let s = self.connect_h2(target).await?;
                if let Ok(mut m) = self.h2.lock() {
                    m.insert(target.clone(), s.clone());
                }
                s
            }
        };
        sender
            .ready()
            .await
            .map_err(|source| ForwardError::Http { addr, source })?;
        sender
            .send_request(req)
            .await
            .map_err(|source| ForwardError::Http { addr, source })
    }

    async fn connect_h2(
        &self,
        target: &Target,
    ) -> Result<http2::SendRequest<Incoming>, ForwardError> {
        let addr = target.addr;
        let io = TokioIo::new(self.connect(target, Alpn::H2).await?);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|source| ForwardError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        Ok(sender)
    }

    /// Drops idle connections past their time and closed HTTP/2 connections.
    pub fn sweep(&self) {
        let timeout = self.config.idle_timeout;
        if let Ok(mut pools) = self.h1.lock() {
            pools.retain(|_, idle| {
                idle.retain(|i| !i.sender.is_closed() && i.since.elapsed() < timeout);
                !idle.is_empty()
            });
        }
        if let Ok(mut m) = self.h2.lock() {
            m.retain(|_, s| !s.is_closed());
        }
    }
}
