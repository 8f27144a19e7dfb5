//! Upstream HTTP connections, pooled per address: idle HTTP/1 connections wait for reuse;
//! HTTP/2 connections are multiplexed, and another is opened when every one is at the stream
//! limit, so a request never waits for a stream slot.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use smidge_protocol::Identity;

use super::limits::HttpLimits;
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
    #[error("CONNECT is not forwarded")]
    Connect405,
    #[error("no response head from {addr} within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("request head of {size} bytes is over the limit of {limit}")]
    RequestHeadTooLarge { size: usize, limit: u32 },
    #[error("response head of {size} bytes from {addr} is over the limit of {limit}")]
    ResponseHeadTooLarge {
        addr: SocketAddr,
        size: usize,
        limit: u32,
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
                | ForwardError::Timeout { .. }
        ) || matches!(self, ForwardError::Http { source, .. } if source.is_timeout())
    }
}

/// Which hop a forwarding error is about, as the `smidge-error` reason names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    /// The inbound proxy's app.
    App,
    /// The outbound proxy's upstream: a peer proxy or an un-meshed server.
    Upstream,
}

impl Hop {
    fn unreachable(self) -> &'static str {
        match self {
            Hop::App => "app-unreachable",
            Hop::Upstream => "upstream-unreachable",
        }
    }

    fn reset(self) -> &'static str {
        match self {
            Hop::App => "app-reset",
            Hop::Upstream => "upstream-reset",
        }
    }

    fn protocol_error(self) -> &'static str {
        match self {
            Hop::App => "app-protocol-error",
            Hop::Upstream => "upstream-protocol-error",
        }
    }
}

impl ForwardError {
    /// The status and `smidge-error` reason for the client: what happened, and at which hop.
    pub fn answer(&self, hop: Hop) -> (http::StatusCode, &'static str) {
        use http::StatusCode as S;
        match self {
            ForwardError::Connect { source, .. }
                if source.kind() == io::ErrorKind::ConnectionRefused =>
            {
                (S::BAD_GATEWAY, "connection-refused")
            }
            ForwardError::Connect { .. }
            | ForwardError::Tls { .. }
            | ForwardError::Handshake { .. } => (S::BAD_GATEWAY, hop.unreachable()),
            ForwardError::ConnectTimeout { .. } => (S::GATEWAY_TIMEOUT, "connect-timeout"),
            ForwardError::Connect405 => (S::METHOD_NOT_ALLOWED, "connect-unsupported"),
            ForwardError::Timeout { .. } => (S::GATEWAY_TIMEOUT, "timeout"),
            ForwardError::RequestHeadTooLarge { .. } => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request-headers-too-large",
            ),
            ForwardError::ResponseHeadTooLarge { .. } => {
                (S::BAD_GATEWAY, "response-headers-too-large")
            }
            ForwardError::Http { source, .. } => http_answer(source, hop),
        }
    }
}

/// Sorts a failure after the request was handed to the connection.
fn http_answer(e: &hyper::Error, hop: Hop) -> (http::StatusCode, &'static str) {
    use http::StatusCode as S;
    if e.is_timeout() {
        return (S::GATEWAY_TIMEOUT, "timeout");
    }
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return (S::BAD_GATEWAY, hop.protocol_error());
    }
    if e.is_user() {
        return (S::BAD_REQUEST, "bad-request");
    }
    if e.is_incomplete_message() || io_kind(e).is_some_and(is_reset) {
        return (S::BAD_GATEWAY, hop.reset());
    }
    if e.is_canceled() || e.is_closed() {
        return (S::BAD_GATEWAY, hop.unreachable());
    }
    (S::BAD_GATEWAY, hop.protocol_error())
}

/// The kind of the I/O error under `e`, if one caused it.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        cause = c.source();
    }
    None
}

fn is_reset(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
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
    /// Header limit, windows, keepalive and the response timeout.
    pub limits: HttpLimits,
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
    h2: Mutex<HashMap<Target, Vec<H2Conn>>>,
}

/// One multiplexed connection and how many of its streams are in use.
struct H2Conn {
    sender: http2::SendRequest<Incoming>,
    streams: Arc<AtomicUsize>,
}

/// One stream slot on an [`H2Conn`], given back when dropped (with the response body).
#[derive(Debug)]
pub struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(streams: &Arc<AtomicUsize>) -> StreamSlot {
        streams.fetch_add(1, Ordering::Relaxed);
        StreamSlot(streams.clone())
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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

    /// The data path's limits and timeouts.
    pub fn limits(&self) -> &HttpLimits {
        &self.config.limits
    }

    /// Sends `req` to `target` in the request's own HTTP version, waiting for the response
    /// head at most the response timeout. An HTTP/2 response comes with the stream slot it
    /// holds, to be dropped with its body.
    pub async fn send(
        self: &Arc<Self>,
        target: &Target,
        req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Option<StreamSlot>), ForwardError> {
        let sending = async {
            if req.version() == Version::HTTP_2 {
                self.send_h2(target, req)
                    .await
                    .map(|(resp, slot)| (resp, Some(slot)))
            } else {
                self.send_h1(target, req).await.map(|resp| (resp, None))
            }
        };
        match self.config.limits.response_timeout() {
            None => sending.await,
            Some(after) => {
                tokio::time::timeout(after, sending)
                    .await
                    .map_err(|_| ForwardError::Timeout {
                        addr: target.addr,
                        after,
                    })?
            }
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
    ) -> Result<(Response<Incoming>, StreamSlot), ForwardError> {
        let addr = target.addr;
        let (mut sender, slot) = match self.h2_slot(target) {
            Some(found) => found,
            None => {
                let sender = self.connect_h2(target).await?;
                let streams = Arc::new(AtomicUsize::new(0));
                let slot = StreamSlot::take(&streams);
                if let Ok(mut m) = self.h2.lock() {
                    m.entry(target.clone()).or_default().push(H2Conn {
                        sender: sender.clone(),
                        streams,
                    });
                }
                (sender, slot)
            }
        };
        sender
            .ready()
            .await
            .map_err(|source| ForwardError::Http { addr, source })?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|source| ForwardError::Http { addr, source })?;
        Ok((resp, slot))
    }

    /// A free stream on an open connection to `target`, if one has room; closed connections
    /// are forgotten on the way.
    fn h2_slot(&self, target: &Target) -> Option<(http2::SendRequest<Incoming>, StreamSlot)> {
        let max = self.config.limits.max_concurrent_streams.max(1) as usize;
        let mut m = self.h2.lock().ok()?;
        let conns = m.get_mut(target)?;
        conns.retain(|c| !c.sender.is_closed());
        conns
            .iter()
            .find(|c| c.streams.load(Ordering::Relaxed) < max)
            .map(|c| (c.sender.clone(), StreamSlot::take(&c.streams)))
    }

    async fn connect_h2(
        &self,
        target: &Target,
    ) -> Result<http2::SendRequest<Incoming>, ForwardError> {
        let addr = target.addr;
        let io = TokioIo::new(self.connect(target, Alpn::H2).await?);
        let limits = &self.config.limits;
        // Keepalive finds a silently dead peer; the windows keep a slow stream to itself.
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(limits.stream_window)
            .initial_connection_window_size(limits.connection_window())
            .max_header_list_size(limits.max_header_bytes)
            .keep_alive_interval(limits.keepalive_interval)
            .keep_alive_timeout(limits.keepalive_timeout)
            .keep_alive_while_idle(true)
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
            m.retain(|_, conns| {
                conns.retain(|c| !c.sender.is_closed());
                !conns.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn each_failure_is_answered_with_what_happened_and_where() {
        let addr: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        let connect = |kind| ForwardError::Connect {
            addr,
            source: io::Error::from(kind),
        };
        let after = Duration::from_secs(1);
        for (error, hop, expected) in [
            (
                connect(io::ErrorKind::ConnectionRefused),
                Hop::App,
                (StatusCode::BAD_GATEWAY, "connection-refused"),
            ),
            (
                connect(io::ErrorKind::HostUnreachable),
                Hop::App,
                (StatusCode::BAD_GATEWAY, "app-unreachable"),
            ),
            (
                connect(io::ErrorKind::HostUnreachable),
                Hop::Upstream,
                (StatusCode::BAD_GATEWAY, "upstream-unreachable"),
            ),
            (
                ForwardError::ConnectTimeout { addr, after },
                Hop::Upstream,
                (StatusCode::GATEWAY_TIMEOUT, "connect-timeout"),
            ),
            (
                ForwardError::Timeout { addr, after },
                Hop::App,
                (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ),
            (
                ForwardError::RequestHeadTooLarge {
                    size: 70_000,
                    limit: 65_536,
                },
                Hop::Upstream,
                (
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request-headers-too-large",
                ),
            ),
            (
                ForwardError::ResponseHeadTooLarge {
                    addr,
                    size: 70_000,
                    limit: 65_536,
                },
                Hop::App,
                (StatusCode::BAD_GATEWAY, "response-headers-too-large"),
            ),
            (
                ForwardError::Connect405,
                Hop::Upstream,
                (StatusCode::METHOD_NOT_ALLOWED, "connect-unsupported"),
            ),
        ] {
            assert_eq!(error.answer(hop), expected, "{error}");
        }
    }

    #[test]
    fn timeouts_and_failed_connections_count_against_the_endpoint_and_oversized_heads_do_not() {
        let addr: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        let after = Duration::from_secs(1);
        assert!(ForwardError::Timeout { addr, after }.is_unreachable());
        assert!(ForwardError::ConnectTimeout { addr, after }.is_unreachable());
        assert!(!ForwardError::RequestHeadTooLarge { size: 1, limit: 0 }.is_unreachable());
        assert!(!ForwardError::Connect405.is_unreachable());
    }

    #[test]
    fn a_stream_slot_is_given_back_when_dropped() {
        let streams = Arc::new(AtomicUsize::new(0));
        let a = StreamSlot::take(&streams);
        let b = StreamSlot::take(&streams);
        assert_eq!(streams.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(streams.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(streams.load(Ordering::Relaxed), 0);
    }
}
