//! Serving a detected HTTP connection, and forwarding one request upstream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};

use super::pool::{ForwardError, Pool, Target};
use super::{is_upgrade, stream, strip_hop_by_hop, to_mesh_h2, Body};
use crate::net::detect::Protocol;

/// Serves one client connection in the detected HTTP version until it closes.
pub async fn serve<I, S>(io: I, protocol: Protocol, service: S) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(io);
    let service = TowerToHyperService::new(service);
    match protocol {
        Protocol::Http2 => {
            http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .serve_connection(io, service)
                .await
        }
        _ => {
            http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(io, service)
                .with_upgrades()
                .await
        }
    }
}

/// Serves a connection through the metrics layer around `service`, logging how it ended.
pub async fn serve_observed<I, S>(
    metrics: &Arc<crate::metrics::Metrics>,
    direction: &'static str,
    io: I,
    protocol: Protocol,
    service: S,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let service = tower::ServiceBuilder::new()
        .layer(super::observe::ObserveLayer::new(
            metrics.clone(),
            direction,
        ))
        .service(service);
    if let Err(e) = serve(io, protocol, service).await {
        tracing::debug!(direction, error = %e, "HTTP connection ended");
    }
}

/// Forwards one request to `target`, streaming both bodies; a protocol upgrade the upstream
/// accepts is spliced through once both sides have switched (the inbound side lets only
/// WebSocket ask, see [`super::guard::only_websocket_upgrade`]). `smidge-*` headers the client
/// sent are removed. HTTP/1 requests to a meshed peer
/// travel as HTTP/2 over the mTLS connection (multiplexed) and are turned back on the other side.
pub async fn forward(
    pool: &Arc<Pool>,
    target: &Target,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ForwardError> {
    let addr: SocketAddr = target.addr;
    let upgrade = is_upgrade(&req);
    strip_hop_by_hop(req.headers_mut(), upgrade);
    // Only proxies set these, and only between themselves (`to_mesh_h2` adds its own below).
    super::guard::strip_mesh_headers(req.headers_mut());
    let version = req.version();
    if target.peer.is_some()
        && !upgrade
        && version != http::Version::HTTP_2
        && pool.mesh_protocol() == super::pool::MeshProtocol::Http2
    {
        to_mesh_h2(&mut req, addr);
    }
    let downstream = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut resp = pool.send(target, req).await?;
    *resp.version_mut() = version;
    match downstream {
        Some(downstream) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let upstream = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match (downstream.await, upstream.await) {
                    (Ok(down), Ok(up)) => {
                        let mut down = TokioIo::new(down);
                        let mut up = TokioIo::new(up);
                        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                            tracing::debug!(%addr, error = %e, "upgraded connection ended");
                        }
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::debug!(%addr, error = %e, "upgrade did not complete")
                    }
                }
            });
        }
        _ => strip_hop_by_hop(resp.headers_mut(), false),
    }
    Ok(resp.map(stream))
}
