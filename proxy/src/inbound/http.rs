//! Inbound HTTP: every request is authorized against the policy as it is now, so a change
//! applies on connections already open.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use smidge_protocol::Identity;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Caller;
use crate::ctx::Ctx;
use crate::http::guard::{only_websocket_upgrade, prepare};
use crate::http::observe::Labels;
use crate::http::pool::Target;
use crate::http::serve::forward;
use crate::http::{
    from_mesh_h2, local_response, reason_to_header, Body, Head, DENIED_HEADER, ERROR_HEADER,
    REASON_HEADER,
};
use crate::metrics::DenyLabels;
use crate::net::detect::Protocol;

pub async fn serve<I>(
    ctx: Arc<Ctx>,
    io: I,
    protocol: Protocol,
    dst: SocketAddr,
    app: Target,
    caller: Caller,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let authorize = Authorize {
        ctx: ctx.clone(),
        dst,
        authority: ctx.metrics.inbound_authority(dst),
        app,
        src_label: caller.label(&ctx),
        tls: caller.tls,
        client: caller.identity.map(Arc::new),
    };
    crate::http::serve::serve_observed(
        &ctx.metrics,
        "inbound",
        io,
        protocol,
        ctx.pool.limits(),
        authorize,
    )
    .await;
}

/// Authorizes each request of one connection, then forwards it to the app.
#[derive(Clone)]
struct Authorize {
    ctx: Arc<Ctx>,
    dst: SocketAddr,
    /// The metrics authority of `dst`, labelled once per connection (its port label never changes).
    authority: String,
    app: Target,
    src_label: String,
    tls: bool,
    client: Option<Arc<Identity>>,
}

impl tower::Service<Request<Incoming>> for Authorize {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let ctx = self.ctx.clone();
        let app = self.app.clone();
        let port = self.dst.port();
        let client = self.client.clone();
        let tls = self.tls;
        let mut labels = Labels {
            authority: self.authority.clone(),
            src_identity: self.src_label.clone(),
            dst_identity: ctx.identity_label.clone(),
            tls,
            ..Labels::default()
        };
        let mut req = req;
        let meshed = tls && from_mesh_h2(&mut req);
        // Checked and normalized before authorization, so the policy judges what the app gets.
        let decision = match prepare(&mut req) {
            Err(reason) => Err((StatusCode::BAD_REQUEST, reason)),
            Ok(()) => {
                if only_websocket_upgrade(&mut req) {
                    tracing::debug!(port, "an Upgrade other than websocket removed");
                }
                super::decide(&ctx, client.as_deref(), port, Some(&Head(&req)))
                    .map_err(|reason| (StatusCode::FORBIDDEN, reason))
            }
        };
        Box::pin(async move {
            let mut resp = match decision {
                Ok(by) => {
                    labels.route = by;
                    match forward(&ctx.pool, &app, req).await {
                        Ok(mut resp) => {
                            // Only this proxy says what the app's reason phrase was.
                            resp.headers_mut().remove(REASON_HEADER);
                            if meshed {
                                reason_to_header(&mut resp);
                            }
                            resp
                        }
                        Err(e) => {
                            tracing::info!(app = %app.addr, error = %e, "inbound request failed");
                            let (status, reason) = e.answer(crate::http::pool::Hop::App);
                            local_response(status, ERROR_HEADER, reason)
                        }
                    }
                }
                Err((status, reason)) => {
                    ctx.metrics
                        .denied
                        .get_or_create(&DenyLabels {
                            reason,
                            src_identity: labels.src_identity.clone(),
                            port: ctx.metrics.ports.label(port),
                            protocol: "http",
                        })
                        .inc();
                    tracing::debug!(port, reason, client = %labels.src_identity, "request denied");
                    local_response(status, DENIED_HEADER, reason)
                }
            };
            resp.extensions_mut().insert(labels);
            Ok(resp)
        })
    }
}
