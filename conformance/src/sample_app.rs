//! The SMI conformance sample app (REFERENCE.md §8.2), written here: it calls other apps on
//! request (`POST /call`), answers `GET /echo`, and counts what it received, what succeeded and
//! what failed (`GET|DELETE /metrics`). One app is deployed per service under test; the
//! conformance checks read their counters.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// The header naming the calling app.
pub const SERVICE_NAME_HEADER: &str = "ServiceName";
/// What `ReqReceived` records for a caller without that header.
pub const UNIDENTIFIED: &str = "Unidentified";
/// On `/call`'s answer: the callee's status and body are relayed (so a harness reached through
/// a proxy can tell them from the proxy's own errors).
pub const RELAYED_HEADER: &str = "smidge-relayed";
/// On `/call`'s answer when the callee gave no response at all: why.
pub const CALL_ERROR_HEADER: &str = "smidge-call-error";
/// The port when `PORT` is not set.
pub const DEFAULT_PORT: u16 = 9091;

/// `POST /call`'s body: the request to make.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRequest {
    pub url: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

/// One call made, as `/metrics` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    #[serde(rename = "URL")]
    pub url: String,
    #[serde(rename = "Method")]
    pub method: String,
    #[serde(rename = "Headers")]
    pub headers: BTreeMap<String, String>,
}

/// The counters `GET /metrics` returns, with the sample app's field names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    #[serde(rename = "ReqReceived", default)]
    pub req_received: Vec<String>,
    #[serde(rename = "RespSucceeded", default)]
    pub resp_succeeded: Vec<Call>,
    #[serde(rename = "RespFailed", default)]
    pub resp_failed: Vec<Call>,
}

impl Counters {
    /// Records a call's outcome: statuses 200–399 succeed, every other status fails. (A call
    /// that got no response at all is recorded nowhere, as upstream.)
    pub fn record(&mut self, call: Call, status: u16) {
        if (200..400).contains(&status) {
            self.resp_succeeded.push(call);
        } else {
            self.resp_failed.push(call);
        }
    }
}

/// A sample app: its name and counters, and a client that keeps connections alive across calls.
#[derive(Clone)]
pub struct App {
    name: String,
    counters: Arc<Mutex<Counters>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

impl App {
    pub fn new(name: impl Into<String>) -> App {
        App {
            name: name.into(),
            counters: Arc::default(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        self.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let app = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if path == "/call" || path == "/echo" {
            let caller = req
                .headers()
                .get(SERVICE_NAME_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(UNIDENTIFIED)
                .to_string();
            if let Ok(mut c) = self.counters.lock() {
                c.req_received.push(caller);
            }
        }
        match (path.as_str(), req.method()) {
            ("/call", &Method::POST) => self.call(req).await,
            ("/call", _) => text(StatusCode::OK, ""),
            ("/echo", _) => echo(req).await,
            ("/metrics", &Method::GET) => match serde_json::to_vec(&self.counters()) {
                Ok(json) => {
                    let mut r = text(StatusCode::OK, json);
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    r
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            },
            ("/metrics", &Method::DELETE) => {
                if let Ok(mut c) = self.counters.lock() {
                    *c = Counters::default();
                }
                text(StatusCode::OK, "")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Makes the request `POST /call` describes and records its outcome. Answers with the
    /// callee's status and body, or 500 when there was no response.
    async fn call(&self, req: Request<Incoming>) -> Response<Body> {
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("reading the body: {e}\n")),
        };
        let call: CallRequest = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the body must be {{\"url\", \"method\", \"headers\", \"body\"}}: {e}\n"
                    ),
                )
            }
        };
        let method = if call.method.is_empty() {
            "GET"
        } else {
            call.method.as_str()
        };
        let mut headers = call.headers.clone();
        headers.insert(SERVICE_NAME_HEADER.to_string(), self.name.clone());
        let mut builder = Request::builder().method(method).uri(&call.url);
        for (k, v) in &headers {
            builder = builder.header(k, v);
        }
        let request = match builder.body(Full::new(Bytes::from(call.body.clone()))) {
            Ok(r) => r,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("a bad request to make: {e}\n"),
                )
            }
        };
        let record = Call {
            url: call.url.clone(),
            method: method.to_string(),
            headers,
        };
        match self.client.request(request).await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                if let Ok(mut c) = self.counters.lock() {
                    c.record(record, status.as_u16());
                }
                let mut r = text(status, body);
                r.headers_mut()
                    .insert(RELAYED_HEADER, http::HeaderValue::from_static("1"));
                r
            }
            Err(e) => {
                let why = format!("calling {}: {e}", call.url);
                let mut r = text(StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n"));
                if let Ok(v) = http::HeaderValue::from_str(&why) {
                    r.headers_mut().insert(CALL_ERROR_HEADER, v);
                }
                r
            }
        }
    }
}

/// The request, dumped back.
async fn echo(req: Request<Incoming>) -> Response<Body> {
    let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
    for (k, v) in req.headers() {
        out.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    out.push('\n');
    if let Ok(b) = req.into_body().collect().await {
        out.push_str(&String::from_utf8_lossy(&b.to_bytes()));
    }
    text(StatusCode::OK, out)
}

/// One HTTP/1.1 request (for the harness): the status and body, or why there was none.
pub async fn fetch(method: &str, url: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| anyhow::anyhow!("no response from {url} within 30 s"))??;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Binds the app's port on every address.
pub async fn listen(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(name: &str) -> (App, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = App::new(name);
        tokio::spawn(app.clone().serve(listener));
        (app, addr)
    }

    #[tokio::test]
    async fn calls_are_counted_on_both_sides_with_the_callers_name() {
        let (a, a_addr) = start("app-a").await;
        let (b, b_addr) = start("app-b").await;
        let url = format!("http://{b_addr}/echo");
        let body = serde_json::to_string(&CallRequest {
            url: url.clone(),
            method: "GET".into(),
            ..Default::default()
        })
        .expect("json");
        let (status, echoed) = fetch("POST", &format!("http://{a_addr}/call"), &body)
            .await
            .expect("call");
        assert_eq!(status, 200);
        assert!(
            echoed.to_ascii_lowercase().contains("servicename: app-a"),
            "{echoed}"
        );
        let missing = format!("http://{b_addr}/nothing");
        let body = serde_json::to_string(&CallRequest {
            url: missing.clone(),
            ..Default::default()
        })
        .expect("json");
        fetch("POST", &format!("http://{a_addr}/call"), &body)
            .await
            .expect("call");

        let a_counters = a.counters();
        assert_eq!(a_counters.req_received, [UNIDENTIFIED, UNIDENTIFIED]);
        assert_eq!(a_counters.resp_succeeded.len(), 1);
        assert_eq!(a_counters.resp_succeeded[0].url, url);
        assert_eq!(a_counters.resp_succeeded[0].method, "GET");
        assert_eq!(a_counters.resp_failed.len(), 1, "a 404 is a failure");
        assert_eq!(a_counters.resp_failed[0].url, missing);
        assert_eq!(
            b.counters().req_received,
            ["app-a"],
            "/nothing is not counted"
        );

        let (_, json) = fetch("GET", &format!("http://{a_addr}/metrics"), "")
            .await
            .expect("metrics");
        let parsed: Counters = serde_json::from_str(&json).expect("metrics JSON");
        assert_eq!(parsed, a_counters);
        assert!(json.contains("\"RespSucceeded\":[{\"URL\""), "{json}");
        fetch("DELETE", &format!("http://{a_addr}/metrics"), "")
            .await
            .expect("clear");
        assert_eq!(a.counters(), Counters::default());
    }

    #[tokio::test]
    async fn a_call_that_gets_no_response_is_recorded_nowhere() {
        let (a, a_addr) = start("app-a").await;
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dead = closed.local_addr().expect("addr");
        drop(closed);
        let body = serde_json::to_string(&CallRequest {
            url: format!("http://{dead}/echo"),
            ..Default::default()
        })
        .expect("json");
        let (status, _) = fetch("POST", &format!("http://{a_addr}/call"), &body)
            .await
            .expect("call");
        assert_eq!(status, 500);
        let c = a.counters();
        assert!(c.resp_succeeded.is_empty() && c.resp_failed.is_empty());
    }
}
