//! Serving a detected HTTP connection, and forwarding one request upstream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};

use super::limits::HttpLimits;
use super::pool::{ForwardError, Pool, Target};
use super::{is_upgrade, stream, strip_hop_by_hop, to_mesh_h2, Body};
use crate::net::detect::Protocol;

/// Serves one client connection in the detected HTTP version until it closes.
pub async fn serve<I, S>(
    io: I,
    protocol: Protocol,
    limits: &HttpLimits,
    service: S,
) -> Result<(), hyper::Error>
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
            // The windows keep a slow stream to itself; keepalive finds a silently dead peer.
            http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.max_concurrent_streams)
                .initial_stream_window_size(limits.stream_window)
                .initial_connection_window_size(limits.connection_window())
                .max_header_list_size(limits.max_header_bytes)
                .keep_alive_interval(limits.keepalive_interval)
                .keep_alive_timeout(limits.keepalive_timeout)
                // The app's response keeps its own headers: no Date is added.
                .auto_date_header(false)
                .serve_connection(io, service)
                .await
        }
        _ => {
            // Half-close: a client that shuts its write side after the request still gets
            // the response.
            http1::Builder::new()
                .timer(TokioTimer::new())
                .half_close(true)
                .header_read_timeout(limits.header_read_timeout)
                .auto_date_header(false)
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
    limits: &HttpLimits,
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
    if let Err(e) = serve(io, protocol, limits, service).await {
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
    // Hyper would send it as `CONNECT /` (or not at all): refused rather than mangled.
    if req.method() == http::Method::CONNECT {
        return Err(ForwardError::Connect405);
    }
    let version = req.version();
    let meshed = target.peer.is_some()
        && !upgrade
        && version != http::Version::HTTP_2
        && pool.mesh_protocol() == super::pool::MeshProtocol::Http2;
    if meshed {
        to_mesh_h2(&mut req, addr);
    }
    // One head limit on every hop: checked here, before the peer would refuse it for the
    // whole connection.
    let limits = pool.limits();
    limits
        .request_fits(&req)
        .map_err(|size| ForwardError::RequestHeadTooLarge {
            size,
            limit: limits.max_header_bytes,
        })?;
    let downstream = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut resp, slot) = pool.send(target, req).await?;
    limits
        .response_fits(&resp)
        .map_err(|size| ForwardError::ResponseHeadTooLarge {
            addr,
            size,
            limit: limits.max_header_bytes,
        })?;
    *resp.version_mut() = version;
    if meshed {
        super::reason_from_header(&mut resp);
    }
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
    Ok(resp.map(|body| match slot {
        Some(slot) => stream(body)
            .map_frame(move |frame| {
                // Holds the HTTP/2 stream slot until the body is done or dropped.
                let _held = &slot;
                frame
            })
            .boxed(),
        None => stream(body),
    }))
}
