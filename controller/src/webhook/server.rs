//! The webhook's HTTPS server: `POST /convert` takes a `ConversionReview`, `POST /inject` an
//! `AdmissionReview` of a Pod; `GET /healthz` says the server is up; anything else is 404.
//! Bodies are bounded; slow clients time out.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::inject::Injector;
use super::review::review_json;

/// The largest review body accepted (the API server sends lists of objects).
pub const MAX_BODY: usize = 32 * 1024 * 1024;
/// At most this many connections at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client has for the TLS handshake and for a request's headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves on `listener` with `tls` until the task is dropped, with the injector off. Accept
/// errors (out of file descriptors) are logged and waited out.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>) -> std::io::Result<()> {
    serve_with(listener, tls, None).await
}

/// [`serve`] with the injector answering `/inject` (`None`: every pod allowed unchanged, with a
/// warning).
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    injector: Option<Arc<Injector>>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "webhook accept failed; pausing");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("too many webhook connections; closed a new one");
            continue;
        };
        let acceptor = acceptor.clone();
        let injector = injector.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| respond(req, injector.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
            drop(slot);
        });
    }
}

fn reply(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The request's body, or the 413 answer when it is over [`MAX_BODY`].
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain",
            format!("cannot read the body (at most {MAX_BODY} bytes): {e}\n").into_bytes(),
        )),
    }
}

async fn respond(
    req: Request<Incoming>,
    injector: Option<Arc<Injector>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = |code, s: &str| Ok(reply(code, "text/plain", format!("{s}\n").into_bytes()));
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/inject") => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(too_large) => return Ok(too_large),
            };
            let answer = super::inject::review(injector.as_deref(), &body).await;
            Ok(reply(StatusCode::OK, "application/json", answer))
        }
        (&Method::POST, "/convert") => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(too_large) => return Ok(too_large),
            };
            // Conversion is pure and quick, but a big list should not hold up the runtime.
            match tokio::task::spawn_blocking(move || review_json(&body)).await {
                Ok(answer) => Ok(reply(StatusCode::OK, "application/json", answer)),
                Err(e) => {
                    tracing::error!(error = %e, "a conversion task failed");
                    text(StatusCode::INTERNAL_SERVER_ERROR, "the conversion failed")
                }
            }
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (_, "/convert") => text(StatusCode::METHOD_NOT_ALLOWED, "POST a ConversionReview"),
        (_, "/inject") => text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview"),
        _ => text(StatusCode::NOT_FOUND, "not found: POST /convert or /inject"),
    }
}
