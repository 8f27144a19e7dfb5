//! The apps the end-to-end tests run inside pods: a backend that names itself over HTTP/1,
//! h2c (with a streaming echo that ends in trailers), WebSocket, TCP echo and a
//! server-speaks-first banner; and the clients that call them.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Ports the backend listens on.
pub const HTTP_PORT: u16 = 8080;
pub const WS_PORT: u16 = 8090;
pub const ECHO_PORT: u16 = 7000;
/// In the proxy's default opaque ports, like MySQL's.
pub const BANNER_PORT: u16 = 3306;

type Body = BoxBody<Bytes, hyper::Error>;

fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

/// Runs every backend listener until the thread ends; `name` is how it answers.
pub async fn backend(name: &'static str) {
    let http = serve_http(name, HTTP_PORT);
    let ws = serve_ws();
    let echo = serve_echo(ECHO_PORT, None);
    let banner = serve_echo(BANNER_PORT, Some(name));
    let _ = tokio::join!(http, ws, echo, banner);
}

/// The `smidge/echo` image: HTTP (HTTP/1 and h2c) on `http_port` answering with `name`, and TCP
/// echo on `echo_port`. Ends with an error when a port cannot be bound.
pub async fn echo_server(name: &'static str, http_port: u16, echo_port: u16) -> anyhow::Result<()> {
    tokio::try_join!(serve_http(name, http_port), serve_echo(echo_port, None))?;
    Ok(())
}

async fn serve_http(name: &'static str, port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .await
        .with_context(|| format!("binding port {port}"))?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(name, req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(name: &'static str, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let mut resp = if req.uri().path() == "/stream" {
        // Echo each request frame as it arrives, then end with gRPC-style trailers.
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(4);
        let mut body = req.into_body();
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(data) = f.into_data() {
                            if tx.send(Ok(Frame::data(data))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(_) => return,
                }
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("x-backend", HeaderValue::from_static(name));
            let _ = tx.send(Ok(Frame::trailers(trailers))).await;
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        r
    } else {
        let host = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        Response::new(full(format!("{name} {} host={host}", req.uri().path())))
    };
    resp.headers_mut()
        .insert("x-backend", HeaderValue::from_static(name));
    Ok(resp)
}

async fn serve_ws() -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, WS_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Echoes bytes back; with a `banner`, first says who it is (a server-speaks-first protocol).
async fn serve_echo(port: u16, banner: Option<&'static str>) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .await
        .with_context(|| format!("binding port {port}"))?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Some(name) = banner {
                if stream
                    .write_all(format!("220 {name} ready\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// An HTTP/1.1 client on one keep-alive connection.
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

/// A response, reduced to what tests look at.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<H1> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(H1 { sender })
    }

    /// Whether the connection is still open (the test relies on one connection throughout).
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    pub async fn get(&mut self, host: &str, path: &str) -> anyhow::Result<Answer> {
        self.request("GET", host, path).await
    }

    /// A request without a body, with any method.
    pub async fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
    ) -> anyhow::Result<Answer> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .body(Empty::new())?;
        self.sender.ready().await?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.sender.send_request(req))
            .await
            .context("no response within 10 s")??;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A bidirectional h2c stream to `/stream`: each chunk sent must come back before the next is
/// sent (so both directions stream), then the trailers must arrive. Returns the trailers.
pub async fn h2_stream(addr: SocketAddr, chunks: &[&str]) -> anyhow::Result<HeaderMap> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let req = Request::post(format!("http://{addr}/stream"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(ReceiverStream::new(rx)))?;
    let resp = sender.send_request(req).await?;
    if resp.status() != StatusCode::OK {
        bail!("h2 stream answered {}", resp.status());
    }
    let mut body = resp.into_body();
    for chunk in chunks {
        tx.send(Ok(Frame::data(Bytes::from(chunk.to_string()))))
            .await
            .map_err(|_| anyhow::anyhow!("request stream closed"))?;
        let mut got = Vec::new();
        while got.len() < chunk.len() {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .context("no echo within 10 s: the stream is buffered somewhere")?
                .context("response ended early")??;
            match frame.into_data() {
                Ok(data) => got.extend_from_slice(&data),
                Err(_) => bail!("trailers before the echo"),
            }
        }
        if got != chunk.as_bytes() {
            bail!("echo {:?} for {chunk:?}", String::from_utf8_lossy(&got));
        }
    }
    drop(tx);
    while let Some(frame) = body.frame().await {
        if let Ok(trailers) = frame?.into_trailers() {
            return Ok(trailers);
        }
    }
    bail!("the stream ended without trailers")
}

/// Sends each message over a WebSocket and expects it echoed.
pub async fn websocket_echo(addr: SocketAddr, messages: &[&str]) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::Message;
    let stream = TcpStream::connect(addr).await?;
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://web.mesh:{}/echo", addr.port()), stream)
            .await?;
    for m in messages {
        ws.send(Message::text(m.to_string())).await?;
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no WebSocket echo within 10 s")?
            .context("WebSocket closed")??;
        if back.to_text()? != *m {
            bail!("WebSocket echoed {back:?} for {m:?}");
        }
    }
    ws.close(None).await?;
    Ok(())
}

/// Writes `text` and reads it back over plain TCP.
pub async fn tcp_echo(addr: SocketAddr, text: &str) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(text.as_bytes()).await?;
    let mut back = vec![0; text.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .context("no TCP echo within 10 s")??;
    if back != text.as_bytes() {
        bail!("TCP echoed {:?}", String::from_utf8_lossy(&back));
    }
    Ok(())
}

/// Connects and reads the server's first line without sending anything.
pub async fn banner(addr: SocketAddr, wait: Duration) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let mut buf = vec![0; 64];
    let n = tokio::time::timeout(wait, s.read(&mut buf))
        .await
        .with_context(|| format!("the server did not speak first within {wait:?}"))??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
