//! Outbound HTTP: per request, a route by match, a backend by weight, an endpoint by load.
//! The view is read per request, so a change applies on connections already open.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::ctx::Ctx;
use crate::discovery::ViewState;
use crate::http::observe::Labels;
use crate::http::serve::forward;
use crate::http::{local_response, Body, Head, DENIED_HEADER, ERROR_HEADER};
use crate::net::detect::Protocol;
use crate::views::{pick_weighted, total_weight, Compiled};

pub async fn serve<I>(
    ctx: Arc<Ctx>,
    io: I,
    protocol: Protocol,
    dst: SocketAddr,
    rx: watch::Receiver<ViewState>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = Router {
        ctx: ctx.clone(),
        dst,
        rx,
    };
    crate::http::serve::serve_observed(
        &ctx.metrics,
        "outbound",
        io,
        protocol,
        ctx.pool.limits(),
        router,
    )
    .await;
}

/// Routes each request of one client connection.
#[derive(Clone)]
struct Router {
    ctx: Arc<Ctx>,
    dst: SocketAddr,
    rx: watch::Receiver<ViewState>,
}

impl tower::Service<Request<Incoming>> for Router {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let ctx = self.ctx.clone();
        let dst = self.dst;
        let state = self.rx.borrow().clone();
        Box::pin(async move { Ok(route(ctx, dst, state, req).await) })
    }
}

async fn route(
    ctx: Arc<Ctx>,
    dst: SocketAddr,
    state: ViewState,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let mut labels = Labels {
        authority: crate::metrics::PASSTHROUGH_AUTHORITY.to_string(),
        src_identity: ctx.identity_label.clone(),
        ..Labels::default()
    };
    // Routes match the normalized request, and that is what crosses the mesh.
    if let Err(reason) = crate::http::guard::prepare(&mut req) {
        tracing::debug!(%dst, reason, "outbound request refused");
        return with_labels(
            local_response(StatusCode::BAD_REQUEST, DENIED_HEADER, reason),
            labels,
        );
    }
    let ready = match state {
        ViewState::Ready(r) => r,
        // The controller has not answered: never downgrade to plaintext passthrough.
        ViewState::Pending => {
            return with_labels(
                local_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ERROR_HEADER,
                    super::DISCOVERY_UNAVAILABLE,
                ),
                labels,
            )
        }
        // The Service left the mesh while this connection was open: as an un-meshed pod would.
        _ => return send(&ctx, ctx.pool.target(dst, None), req, labels, None).await,
    };
    let Compiled::Outbound(routes) = &ready.compiled else {
        return send(&ctx, ctx.pool.target(dst, None), req, labels, None).await;
    };
    labels.authority = routes.service.clone();
    let Some(route) = routes.route_request(&Head(&req)) else {
        return with_labels(
            local_response(StatusCode::SERVICE_UNAVAILABLE, ERROR_HEADER, "no-route"),
            labels,
        );
    };
    labels.route = route.name.clone();
    let total = total_weight(&route.targets);
    let Some(backend) = pick_weighted(&route.targets, fastrand::u64(..total.max(1)))
        .and_then(|b| routes.backend(b))
    else {
        return with_labels(
            local_response(StatusCode::SERVICE_UNAVAILABLE, ERROR_HEADER, "no-backend"),
            labels,
        );
    };
    let addrs: Vec<SocketAddr> = backend.endpoints.iter().map(|e| e.addr).collect();
    let Some((addr, load)) = ctx.loads.pick(&addrs) else {
        return with_labels(
            local_response(
                StatusCode::SERVICE_UNAVAILABLE,
                ERROR_HEADER,
                "no-endpoints",
            ),
            labels,
        );
    };
    let peer = backend
        .endpoints
        .iter()
        .find(|e| e.addr == addr)
        .and_then(|e| e.identity.as_ref());
    let target = ctx.pool.target(addr, peer);
    labels.dst_identity = match (&target.peer, &ctx.mesh, peer) {
        (Some(p), Some(m), _) => smidge_protocol::names::spiffe_id(&m.trust_domain, p),
        (_, _, Some(p)) => p.to_string(),
        _ => String::new(),
    };
    labels.tls = target.peer.is_some();
    let in_flight = load.start();
    drop(ready);
    send(&ctx, target, req, labels, Some(in_flight)).await
}

async fn send(
    ctx: &Arc<Ctx>,
    target: crate::http::pool::Target,
    req: Request<Incoming>,
    labels: Labels,
    in_flight: Option<crate::balance::InFlight>,
) -> Response<Body> {
    let addr = target.addr;
    let resp = match forward(&ctx.pool, &target, req).await {
        Ok(resp) => {
            drop(in_flight);
            resp
        }
        Err(e) => {
            tracing::info!(%addr, error = %e, "outbound request failed");
            // An endpoint that cannot be reached fails fast; it must not look fast.
            match in_flight {
                Some(f) if e.is_unreachable() => f.failed(),
                other => drop(other),
            }
            let (status, reason) = e.answer(crate::http::pool::Hop::Upstream);
            local_response(status, ERROR_HEADER, reason)
        }
    };
    with_labels(resp, labels)
}

fn with_labels(mut resp: Response<Body>, labels: Labels) -> Response<Body> {
    resp.extensions_mut().insert(labels);
    resp
}
