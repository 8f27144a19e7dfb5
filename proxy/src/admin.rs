//! The admin server: `/metrics`, `/ready`, `/live` and `/views` (a JSON dump of the views).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::ctx::Ctx;
use crate::discovery::ViewState;
use crate::metrics::ViewLabels;

/// Serves the admin endpoints until the process ends.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(&ctx, req)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "text/plain", "live\n".into()),
        "/ready"
            if ctx
                .mesh
                .as_ref()
                .is_some_and(|m| !m.has_valid_certificate()) =>
        {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "waiting for a certificate from the controller\n".into(),
            )
        }
        "/ready" => match &*ctx.policy.borrow() {
            ViewState::Pending => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "waiting for this workload's inbound policy from the controller\n".into(),
            ),
            _ => text(StatusCode::OK, "text/plain", "ready\n".into()),
        },
        "/metrics" => {
            refresh_view_metrics(ctx);
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &ctx.metrics.registry) {
                Ok(()) => text(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("encoding metrics: {e}\n"),
                ),
            }
        }
        "/views" => {
            let now = Instant::now();
            let views: Vec<serde_json::Value> = ctx
                .discovery
                .snapshot()
                .into_iter()
                .map(|s| {
                    let (state, version, age, view) = match &s.state {
                        ViewState::Pending => ("pending", None, None, None),
                        ViewState::Absent { version } => ("absent", Some(*version), None, None),
                        ViewState::Ready(r) => (
                            "ready",
                            Some(r.version),
                            Some(now.saturating_duration_since(r.received).as_secs_f64()),
                            serde_json::to_value(&r.view).ok(),
                        ),
                    };
                    json!({
                        "key": s.key.to_string(),
                        "state": state,
                        "version": version,
                        "age_seconds": age,
                        "idle_seconds": s.idle.as_secs_f64(),
                        "view": view,
                    })
                })
                .collect();
            let body = json!({
                "identity": ctx.identity.to_string(),
                "controller_connected": ctx.discovery.connected(),
                "views": views,
            });
            text(StatusCode::OK, "application/json", format!("{body:#}\n"))
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /ready, /live or /views\n".into(),
        ),
    }
}

/// View versions and ages are read at scrape time.
fn refresh_view_metrics(ctx: &Ctx) {
    let m = &ctx.metrics;
    m.controller_connected
        .set(i64::from(ctx.discovery.connected()));
    if let Some(mesh) = &ctx.mesh {
        use std::sync::atomic::Ordering;
        let expiry = mesh.current().map_or(0, |c| c.not_after);
        m.cert_expiry.set(i64::try_from(expiry).unwrap_or(i64::MAX));
        let renewals = mesh.renewals.load(Ordering::Relaxed);
        m.cert_renewals
            .inc_by(renewals.saturating_sub(m.cert_renewals.get()));
        let failures = mesh.failures.load(Ordering::Relaxed);
        m.cert_failures
            .inc_by(failures.saturating_sub(m.cert_failures.get()));
    }
    m.view_version.clear();
    m.view_age.clear();
    let now = Instant::now();
    for s in ctx.discovery.snapshot() {
        let labels = ViewLabels {
            key: s.key.to_string(),
        };
        if let Some(v) = s.state.version() {
            m.view_version
                .get_or_create(&labels)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        if let ViewState::Ready(r) = &s.state {
            m.view_age
                .get_or_create(&labels)
                .set(now.saturating_duration_since(r.received).as_secs_f64());
        }
    }
}
