//! The admin servers: `/ready`, `/live` and the apps' probes (`/app-probe/…`, see
//! [`crate::app_probe`]) for the kubelet on the pod IP, and `/metrics` and
//! `/views` (the whole inbound policy, header values included) on loopback only, unless
//! `--metrics-public` also exposes `/metrics` on the pod IP.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::ctx::Ctx;
use crate::discovery::ViewState;
use crate::metrics::ViewLabels;

/// Which endpoints a listener answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// Reachable from other pods and the node: the probes, and `/metrics` if `metrics` is set.
    Public { metrics: bool },
    /// Bound to loopback, reachable only from inside the pod: every endpoint.
    Private,
}

impl Exposure {
    /// Whether this listener serves `path`; the others answer 404 there.
    pub fn serves(self, path: &str) -> bool {
        match (self, path) {
            (_, "/ready" | "/live") | (Exposure::Private, _) => true,
            (_, p) if p.starts_with(smidge_protocol::probes::PATH_PREFIX) => true,
            (Exposure::Public { metrics }, "/metrics") => metrics,
            (Exposure::Public { .. }, _) => false,
        }
    }
}

/// Bounds on one admin listener's connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A connection that has not sent a whole request head by then (idle keep-alive too) is closed.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones are closed at accept.
    pub max_connections: usize,
    /// Pause after a failed accept (out of file descriptors), so the loop does not spin.
    pub accept_backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 64,
            accept_backoff: Duration::from_millis(50),
        }
    }
}

/// Serves the admin endpoints `exposure` allows until the process ends.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>, exposure: Exposure, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, ?exposure, "admin accept failed");
                tokio::time::sleep(limits.accept_backoff).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, ?exposure, "admin connection refused: too many open");
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(route(&ctx, exposure, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

/// Answers 404 for what this listener does not serve, else the endpoint.
async fn route(ctx: &Ctx, exposure: Exposure, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() == Method::GET && !exposure.serves(req.uri().path()) {
        return text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not served on this listener: /views, and /metrics unless --metrics-public, answer \
             only on the loopback admin listener (--admin-private)\n"
                .into(),
        );
    }
    if req.method() == Method::GET
        && req
            .uri()
            .path()
            .starts_with(smidge_protocol::probes::PATH_PREFIX)
    {
        let (status, body) = crate::app_probe::answer(&ctx.app_probes, req.uri().path()).await;
        return text(status, "text/plain", body);
    }
    handle(ctx, req)
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
    // Only views the mesh answered with content: an app dialing many addresses outside the mesh
    // holds an `Absent` view for each, and a series each would make the label set unbounded.
    for s in ctx.discovery.snapshot() {
        let ViewState::Ready(r) = &s.state else {
            continue;
        };
        let labels = ViewLabels {
            key: s.key.to_string(),
        };
        m.view_version
            .get_or_create(&labels)
            .set(i64::try_from(r.version).unwrap_or(i64::MAX));
        m.view_age
            .get_or_create(&labels)
            .set(now.saturating_duration_since(r.received).as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::Exposure;

    #[test]
    fn the_public_listener_serves_only_the_probes() {
        let public = Exposure::Public { metrics: false };
        assert!(public.serves("/ready"));
        assert!(public.serves("/live"));
        assert!(public.serves("/app-probe/web/readiness"));
        for path in [
            "/views",
            "/metrics",
            "/views/",
            "/",
            "/anything",
            "/app-probe",
        ] {
            assert!(!public.serves(path), "{path}");
        }
    }

    #[test]
    fn metrics_public_adds_only_metrics() {
        let public = Exposure::Public { metrics: true };
        assert!(public.serves("/metrics"));
        assert!(!public.serves("/views"));
    }

    #[test]
    fn the_loopback_listener_serves_everything() {
        for path in ["/ready", "/live", "/metrics", "/views"] {
            assert!(Exposure::Private.serves(path), "{path}");
        }
    }
}
