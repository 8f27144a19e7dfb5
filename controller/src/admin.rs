//! The controller's admin endpoint: `/live`, `/ready`, `/problems` (every current report, JSON)
//! and `/proxies` (every connected proxy with the view versions it acknowledged, JSON).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::provider::Report;
use crate::push::registry::Registry;

/// What the admin endpoint shows.
#[derive(Debug, Default)]
pub struct Status {
    /// Set once the provider's first full read is in the index.
    pub ready: bool,
    pub problems: Vec<Report>,
    pub objects: usize,
    pub views: usize,
}

/// At most this many admin connections at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves forever. Accept errors (out of file descriptors) are logged and waited out.
pub async fn serve(
    listener: TcpListener,
    status: Arc<Mutex<Status>>,
    registry: Arc<Mutex<Registry>>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed; pausing");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("too many admin connections; closed a new one");
            continue;
        };
        let (status, registry) = (status.clone(), registry.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                respond(req, status.clone(), registry.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    status: Arc<Mutex<Status>>,
    registry: Arc<Mutex<Registry>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |code: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        Ok(r)
    };
    if req.uri().path() == "/proxies" {
        return match proxies(&registry) {
            Some(body) => reply(StatusCode::OK, "application/json", body),
            None => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "registry lock poisoned\n".into(),
            ),
        };
    }
    let Ok(status) = status.lock() else {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "status lock poisoned\n".into(),
        );
    };
    match req.uri().path() {
        "/live" => reply(StatusCode::OK, "text/plain", "live\n".into()),
        "/ready" if status.ready => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        "/ready" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: the provider has not finished its first read\n".into(),
        ),
        "/problems" => {
            let body = serde_json::json!({ "objects": status.objects, "views": status.views, "problems": status.problems });
            reply(StatusCode::OK, "application/json", format!("{body:#}\n"))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /live, /ready, /problems or /proxies\n".into(),
        ),
    }
}

/// The `/proxies` body: a JSON list of [`crate::push::connected::ProxyStatus`]. The table is read
/// first and the registry locked after, never both at once.
fn proxies(registry: &Mutex<Registry>) -> Option<String> {
    let table = registry.lock().ok()?.connected();
    let keys_current =
        |key: &smidge_protocol::ViewKey| registry.lock().ok().and_then(|r| r.current_version(key));
    let list = table.snapshot(keys_current);
    Some(format!("{:#}\n", serde_json::json!(list)))
}
