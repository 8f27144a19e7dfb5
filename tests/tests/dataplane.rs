//! The data plane under unusual traffic, end to end through two proxies with mTLS: requests
//! from one pod to one endpoint share the proxies' HTTP/2 connections, and one slow, long or
//! oversized request must not hang or cut the others. Each case is from the robustness review
//! (R2–R5, R8–R10); the app is a raw HTTP/1.1 server in this file, so it can misbehave on purpose.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use smidge_e2e::mesh::{in_pod, spawn_in_pod, Mesh};
use smidge_e2e::scenario::{manifests, start, V1_IP, V2_IP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The app's HTTP port in web-v1 and web-v2 (Service port 80); nothing listens on `CLOSED_PORT`
/// (81); `TCP_PORT` (82) is a TCP server that resets or holds connections on demand.
const APP_PORT: u16 = 9000;
const CLOSED_PORT: u16 = 9001;
const TCP_PORT: u16 = 9002;
/// Service `dp1`: web-v1 only. Service `dp`: web-v1 and web-v2.
const DP1_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 21);
const DP_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
/// How long a client waits for any answer: far beyond every timeout a test sets, far below a
/// hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

fn dp1() -> SocketAddr {
    SocketAddr::new(DP1_IP.into(), 80)
}

fn dp() -> SocketAddr {
    SocketAddr::new(DP_IP.into(), 80)
}

/// The scenario's manifests plus the two Services of this file (port 80 → the app, 81 → a
/// closed port), under the same client → web TrafficTarget.
fn dp_manifests() -> String {
    let mut text = manifests(1, 1, true);
    for (svc, ip, pods) in [
        ("dp", DP_IP, &[("web-v1", V1_IP), ("web-v2", V2_IP)][..]),
        ("dp1", DP1_IP, &[("web-v1", V1_IP)][..]),
    ] {
        text.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata: {{name: {svc}, namespace: mesh}}
spec:
  clusterIP: {ip}
  ports:
  - {{name: http, port: 80, targetPort: {APP_PORT}}}
  - {{name: closed, port: 81, targetPort: {CLOSED_PORT}}}
  - {{name: tcp, port: 82, targetPort: {TCP_PORT}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {svc}-1, namespace: mesh, labels: {{kubernetes.io/service-name: {svc}}}}}
addressType: IPv4
ports: [{{name: http, port: {APP_PORT}}}, {{name: closed, port: {CLOSED_PORT}}}, {{name: tcp, port: {TCP_PORT}}}]
endpoints:
"#
        ));
        for (pod, addr) in pods {
            text.push_str(&format!(
                "- {{addresses: [{addr}], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: {pod}}}}}\n"
            ));
        }
    }
    text
}

/// What the app saw, shared with the test (the app runs on a thread of this process).
#[derive(Default)]
struct App {
    /// Requests to `/hang` or `/upload` the app holds without answering.
    held: AtomicUsize,
    /// Downloads `/big` started, and bytes of them written so far.
    big_started: AtomicUsize,
    big_written: AtomicU64,
    /// `/drip` sent its first byte; it sends the rest once `release` is set.
    drip_started: AtomicBool,
    release: AtomicBool,
}

/// Starts the app in web-v1 (answering `x-backend: v1`) and web-v2.
fn start_apps(mesh: &Mesh) -> anyhow::Result<Arc<App>> {
    let app = Arc::new(App::default());
    for (pod, name) in [("web-v1", "v1"), ("web-v2", "v2")] {
        let app = app.clone();
        spawn_in_pod(&mesh.pod(pod).pod, move || async move {
            tokio::join!(serve_app(app, name), serve_tcp());
        })?;
    }
    Ok(app)
}

async fn serve_app(app: Arc<App>, name: &'static str) {
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, APP_PORT)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("app {name}: binding {APP_PORT}: {e}");
            return;
        }
    };
    while let Ok((stream, _)) = listener.accept().await {
        let app = app.clone();
        tokio::spawn(async move {
            let _ = handle(app, name, stream).await;
        });
    }
}

/// A TCP server: after the line `reset` it resets the connection, after `hold` it keeps it
/// open and silent.
async fn serve_tcp() {
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, TCP_PORT)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("binding {TCP_PORT}: {e}");
            return;
        }
    };
    while let Ok((mut s, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut line = [0u8; 6];
            if s.read_exact(&mut line[..5]).await.is_err() {
                return;
            }
            match &line[..5] {
                b"reset" => {
                    let _ = s.set_zero_linger();
                }
                _ => tokio::time::sleep(Duration::from_secs(3600)).await,
            }
        });
    }
}

/// Reads one request head; returns it and the body bytes read past it.
async fn read_head(s: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Ok((head, buf[end + 4..].to_vec()));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before the end of the head");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn handle(app: Arc<App>, name: &'static str, mut s: TcpStream) -> anyhow::Result<()> {
    let (head, mut body) = read_head(&mut s).await?;
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    let answer = |status: &str, extra: &str, body: &[u8]| {
        let mut out = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\nx-backend: {name}\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    };
    match path.as_str() {
        "/hang" | "/upload" => {
            // Never answers, and never reads a body.
            app.held.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        "/big" => {
            app.big_started.fetch_add(1, Ordering::SeqCst);
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n")
                .await?;
            let chunk = vec![b'x'; 64 * 1024];
            loop {
                s.write_all(&chunk).await?;
                app.big_written
                    .fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        }
        "/post" => {
            let want = content_length(&head);
            while body.len() < want {
                let mut chunk = vec![0u8; 64 * 1024];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    bail!("body cut short");
                }
                body.extend_from_slice(&chunk[..n]);
            }
            let text = format!("got {}", body.len());
            s.write_all(&answer("200 OK", "", text.as_bytes())).await?;
        }
        "/bighdr" => {
            let big = format!("x-big: {}\r\n", "a".repeat(70 * 1024));
            s.write_all(&answer("200 OK", &big, b"big")).await?;
        }
        "/drip" => {
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\na")
                .await?;
            app.drip_started.store(true, Ordering::SeqCst);
            let until = Instant::now() + Duration::from_secs(60);
            while !app.release.load(Ordering::SeqCst) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            s.write_all(b"bcdef").await?;
        }
        "/reason" => {
            s.write_all(&answer("501 Unsupported method", "", b"no"))
                .await?
        }
        "/reset" => {
            s.set_zero_linger()?;
            drop(s);
            return Ok(());
        }
        _ => s.write_all(&answer("200 OK", "", b"ok")).await?,
    }
    s.shutdown().await?;
    Ok(())
}

/// A response as the client read it.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

fn parse_reply(raw: &[u8]) -> anyhow::Result<Reply> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no response head in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok(Reply {
        status,
        head,
        body: String::from_utf8_lossy(&raw[end + 4..]).into_owned(),
    })
}

/// Sends `raw` (then half-closes if `shut`), reads to the end, at most [`ANSWER_WITHIN`].
async fn exchange_with(addr: SocketAddr, raw: Vec<u8>, shut: bool) -> anyhow::Result<Reply> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&raw).await?;
    if shut {
        s.shutdown().await?;
    }
    let mut out = Vec::new();
    tokio::time::timeout(ANSWER_WITHIN, s.read_to_end(&mut out))
        .await
        .with_context(|| {
            format!(
                "no complete answer within {ANSWER_WITHIN:?} (got {:?})",
                String::from_utf8_lossy(&out)
            )
        })??;
    parse_reply(&out)
}

async fn exchange(addr: SocketAddr, raw: Vec<u8>) -> anyhow::Result<Reply> {
    exchange_with(addr, raw, false).await
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: dp\r\nconnection: close\r\n{extra}\r\n").into_bytes()
}

fn post(path: &str, len: usize) -> Vec<u8> {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nhost: dp\r\nconnection: close\r\ncontent-length: {len}\r\n\r\n"
    )
    .into_bytes();
    raw.extend(std::iter::repeat_n(b'u', len));
    raw
}

/// One request first, so that the proxies' connection exists before concurrent requests
/// arrive (else each might open its own, and the case under test would not arise).
async fn warm(addr: SocketAddr) -> anyhow::Result<()> {
    let reply = exchange(addr, get("/small", "")).await?;
    anyhow::ensure!(reply.status == 200, "warming up: {reply:?}");
    Ok(())
}

/// Waits until `value` stops growing for a second (a stalled transfer), at most a minute.
async fn until_stalled(what: &str, value: impl Fn() -> u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut since) = (value(), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = value();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if now > 0 && since.elapsed() >= Duration::from_secs(1) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("{what} never stalled ({now} bytes)");
        }
    }
}

async fn until(what: &str, cond: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// R3: the shared connection's stream limit must not hang the next request: with 1,001
/// requests held open to one endpoint (four connections' worth at the default 256 streams each),
/// request 1,002 still gets its answer.
#[test]
fn a_request_succeeds_while_1001_others_to_the_same_endpoint_hang() -> anyhow::Result<()> {
    const HELD: usize = 1_001;
    let mesh = start("dp-streams", &dp_manifests(), &[])?;
    let app = start_apps(&mesh)?;
    let reply = in_pod(&mesh.pod("client").pod, move || async move {
        warm(dp1()).await?;
        let mut held = Vec::new();
        for _ in 0..HELD {
            let mut s = TcpStream::connect(dp1()).await?;
            s.write_all(&get("/hang", "")).await?;
            held.push(s);
        }
        // Every one at the app: they fill the first connection's slots (and more), so the next
        // request needs a stream on a connection of its own.
        until("1,001 requests at the app", || {
            app.held.load(Ordering::SeqCst) >= HELD
        })
        .await?;
        let reply = exchange(dp1(), get("/small", "")).await;
        drop(held);
        reply
    })??;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "ok"),
        "{reply:?}"
    );
    Ok(())
}

/// R2, downloads: clients that stop reading hold their own streams, not the connection.
#[test]
fn stalled_downloads_do_not_stall_other_requests_to_the_same_endpoint() -> anyhow::Result<()> {
    let mesh = start("dp-hol-down", &dp_manifests(), &[])?;
    let app = start_apps(&mesh)?;
    let (small, upload) = in_pod(&mesh.pod("client").pod, move || async move {
        warm(dp1()).await?;
        let mut stalled = Vec::new();
        for _ in 0..4 {
            let socket = TcpSocket::new_v4()?;
            socket.set_recv_buffer_size(4096)?;
            let mut s = socket.connect(dp1()).await?;
            s.write_all(&get("/big", "")).await?;
            stalled.push(s);
        }
        until("4 downloads", || {
            app.big_started.load(Ordering::SeqCst) >= 4
        })
        .await?;
        until_stalled("the downloads", || app.big_written.load(Ordering::SeqCst)).await?;
        let small = exchange(dp1(), get("/small", "")).await;
        let upload = exchange(dp1(), post("/post", 100_000)).await;
        drop(stalled);
        anyhow::Ok((small?, upload?))
    })??;
    assert_eq!(
        (small.status, small.body.as_str()),
        (200, "ok"),
        "{small:?}"
    );
    assert_eq!(
        (upload.status, upload.body.as_str()),
        (200, "got 100000"),
        "{upload:?}"
    );
    Ok(())
}

/// R2, uploads: an app that does not read one upload holds that stream only.
#[test]
fn an_upload_the_app_does_not_read_does_not_stall_other_uploads() -> anyhow::Result<()> {
    let mesh = start("dp-hol-up", &dp_manifests(), &[])?;
    let app = start_apps(&mesh)?;
    let reply = in_pod(&mesh.pod("client").pod, move || async move {
        warm(dp1()).await?;
        let sent = Arc::new(AtomicU64::new(0));
        let mut s = TcpStream::connect(dp1()).await?;
        let len = 200 * 1024 * 1024;
        s.write_all(
            format!("POST /upload HTTP/1.1\r\nhost: dp\r\ncontent-length: {len}\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let counter = sent.clone();
        let uploading = tokio::spawn(async move {
            let chunk = vec![b'u'; 64 * 1024];
            while s.write_all(&chunk).await.is_ok() {
                counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        });
        until("the upload at the app", || {
            app.held.load(Ordering::SeqCst) >= 1
        })
        .await?;
        until_stalled("the upload", || sent.load(Ordering::SeqCst)).await?;
        let reply = exchange(dp1(), post("/post", 10_240)).await;
        uploading.abort();
        reply
    })??;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "got 10240"),
        "{reply:?}"
    );
    Ok(())
}

/// R4: an oversized head is refused for its own request; a stream beside it is intact.
#[test]
fn a_64_kib_header_gets_431_or_502_for_its_request_alone() -> anyhow::Result<()> {
    let mesh = start("dp-hdr", &dp_manifests(), &[])?;
    let app = start_apps(&mesh)?;
    let (drip, request, response, after) = in_pod(&mesh.pod("client").pod, move || async move {
        let drip = tokio::spawn(exchange(dp1(), get("/drip", "")));
        until("the drip's first byte", || {
            app.drip_started.load(Ordering::SeqCst)
        })
        .await?;
        let big = format!("x-big: {}\r\n", "a".repeat(64 * 1024));
        let request = exchange(dp1(), get("/small", &big)).await?;
        let response = exchange(dp1(), get("/bighdr", "")).await?;
        let after = exchange(dp1(), get("/small", "")).await?;
        app.release.store(true, Ordering::SeqCst);
        anyhow::Ok((drip.await??, request, response, after))
    })??;
    assert_eq!(request.status, 431, "{request:?}");
    assert_eq!(
        request.header("smidge-error"),
        Some("request-headers-too-large")
    );
    assert_eq!(response.status, 502, "{response:?}");
    assert_eq!(
        response.header("smidge-error"),
        Some("response-headers-too-large")
    );
    assert_eq!((after.status, after.body.as_str()), (200, "ok"));
    assert_eq!(
        (drip.status, drip.body.as_str()),
        (200, "abcdef"),
        "the stream beside them was cut: {drip:?}"
    );
    Ok(())
}

/// R5: a backend that never answers gets 504 at the response timeout.
#[test]
fn a_backend_that_never_answers_gets_504_at_the_response_timeout() -> anyhow::Result<()> {
    let mesh = start(
        "dp-timeout",
        &dp_manifests(),
        &["--response-timeout-ms", "1000"],
    )?;
    let _app = start_apps(&mesh)?;
    let reply = in_pod(&mesh.pod("client").pod, || {
        exchange(dp1(), get("/hang", ""))
    })??;
    assert_eq!(reply.status, 504, "{reply:?}");
    assert_eq!(reply.header("smidge-error"), Some("timeout"), "{reply:?}");
    Ok(())
}

/// Drops every packet between the client pod and web-v1, in web-v1's namespace.
fn black_hole(mesh: &Mesh) -> anyhow::Result<()> {
    let client = "10.88.0.10";
    for rule in [
        ["-I", "INPUT", "-s", client, "-j", "DROP"],
        ["-I", "OUTPUT", "-d", client, "-j", "DROP"],
    ] {
        let out = mesh
            .pod("web-v1")
            .pod
            .command(Path::new("iptables"), None)
            .args(rule)
            .output()?;
        if !out.status.success() {
            bail!("iptables: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}

/// R5: a silently dead peer is found by HTTP/2 keepalive: the request on its connection is
/// answered, and with a second endpoint the next requests go there.
#[test]
fn a_black_holed_peer_is_detected_and_requests_go_to_the_other_endpoint() -> anyhow::Result<()> {
    let mesh = start(
        "dp-blackhole",
        &dp_manifests(),
        &[
            "--h2-keepalive-interval-ms",
            "500",
            "--h2-keepalive-timeout-ms",
            "1000",
            "--connect-timeout-ms",
            "1000",
        ],
    )?;
    let _app = start_apps(&mesh)?;
    let client = mesh.pod("client").pod.clone();
    let warm = in_pod(&client, || exchange(dp1(), get("/small", "")))??;
    assert_eq!(warm.status, 200, "{warm:?}");
    black_hole(&mesh)?;
    // On the pooled connection to the dead peer.
    let lost = in_pod(&client, || exchange(dp1(), get("/small", "")))??;
    // Keepalive gives up on the connection (the response timeout is a minute away).
    assert_eq!(
        (lost.status, lost.header("smidge-error")),
        (504, Some("timeout")),
        "{lost:?}"
    );
    let replies = in_pod(&client, || async {
        let mut replies = Vec::new();
        for _ in 0..8 {
            replies.push(exchange(dp(), get("/small", "")).await?);
        }
        anyhow::Ok(replies)
    })??;
    let backends: Vec<(u16, Option<&str>, Option<&str>)> = replies
        .iter()
        .map(|r| (r.status, r.header("x-backend"), r.header("smidge-error")))
        .collect();
    assert!(
        backends[3..].iter().all(|b| *b == (200, Some("v2"), None)),
        "{backends:?}"
    );
    Ok(())
}

/// R8: a client that half-closes after its request still gets the response.
#[test]
fn a_client_that_half_closes_still_gets_its_response() -> anyhow::Result<()> {
    let mesh = start("dp-halfclose", &dp_manifests(), &[])?;
    let _app = start_apps(&mesh)?;
    let raw = b"GET /small HTTP/1.1\r\nhost: dp\r\n\r\n".to_vec();
    let reply = in_pod(&mesh.pod("client").pod, || exchange_with(dp1(), raw, true))??;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "ok"),
        "{reply:?}"
    );
    Ok(())
}

/// R10: the reason says what happened.
#[test]
fn error_reasons_say_what_happened() -> anyhow::Result<()> {
    let mesh = start("dp-reasons", &dp_manifests(), &[])?;
    let _app = start_apps(&mesh)?;
    let (reset, refused) = in_pod(&mesh.pod("client").pod, || async {
        let reset = exchange(dp1(), get("/reset", "")).await?;
        let closed = SocketAddr::new(DP1_IP.into(), 81);
        let refused = exchange(closed, get("/", "")).await?;
        anyhow::Ok((reset, refused))
    })??;
    let seen = |r: &Reply| (r.status, r.header("smidge-error").map(String::from));
    assert_eq!(seen(&reset), (502, Some("app-reset".into())), "{reset:?}");
    assert_eq!(
        seen(&refused),
        (502, Some("connection-refused".into())),
        "{refused:?}"
    );
    Ok(())
}

/// R16, R10: the app's reason phrase crosses unchanged and no Date is added; what cannot
/// cross unchanged is refused by name (CONNECT, a Host that is no authority).
#[test]
fn the_app_s_reason_phrase_crosses_and_connect_or_a_bad_host_is_refused() -> anyhow::Result<()> {
    let mesh = start("dp-verbatim", &dp_manifests(), &[])?;
    let _app = start_apps(&mesh)?;
    let (reason, connect, host) = in_pod(&mesh.pod("client").pod, || async {
        let reason = exchange(dp1(), get("/reason", "")).await?;
        let connect = exchange(
            dp1(),
            b"CONNECT 10.88.0.11:9002 HTTP/1.1\r\nhost: 10.88.0.11:9002\r\nconnection: close\r\n\r\n"
                .to_vec(),
        )
        .await?;
        let host = exchange(
            dp1(),
            b"GET / HTTP/1.1\r\nhost: a b\r\nconnection: close\r\n\r\n".to_vec(),
        )
        .await?;
        anyhow::Ok((reason, connect, host))
    })??;
    assert!(
        reason
            .head
            .starts_with("HTTP/1.1 501 Unsupported method\r\n"),
        "{reason:?}"
    );
    assert_eq!(reason.header("date"), None, "{reason:?}");
    assert_eq!(connect.status, 405, "{connect:?}");
    assert_eq!(connect.header("smidge-error"), Some("connect-unsupported"));
    assert_eq!(host.status, 400, "{host:?}");
    assert_eq!(host.header("smidge-denied"), Some("bad-host"));
    Ok(())
}

/// How a TCP client's connection ended after sending `line`: `Ok(bytes)` at EOF, `Err` at a
/// reset (or no end within [`ANSWER_WITHIN`]).
async fn tcp_ending(addr: SocketAddr, line: &[u8]) -> anyhow::Result<std::io::Result<usize>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(line).await?;
    let mut out = Vec::new();
    tokio::time::timeout(ANSWER_WITHIN, s.read_to_end(&mut out))
        .await
        .with_context(|| format!("the connection did not end within {ANSWER_WITHIN:?}"))
}

/// R9: an upstream's reset reaches a TCP client as a reset, not as a clean end of stream.
#[test]
fn an_upstream_reset_reaches_a_tcp_client_as_a_reset() -> anyhow::Result<()> {
    let mesh = start("dp-tcp-reset", &dp_manifests(), &[])?;
    let _app = start_apps(&mesh)?;
    let tcp = SocketAddr::new(DP1_IP.into(), 82);
    let ended = in_pod(&mesh.pod("client").pod, move || tcp_ending(tcp, b"reset"))??;
    match ended {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("a clean end after {n} bytes: the reset was lost"),
    }
    Ok(())
}

/// R5: an opaque TCP connection idle both ways is closed at the idle timeout.
#[test]
fn an_idle_tcp_connection_is_closed_at_the_idle_timeout() -> anyhow::Result<()> {
    let mesh = start(
        "dp-tcp-idle",
        &dp_manifests(),
        &["--tcp-idle-timeout-secs", "1"],
    )?;
    let _app = start_apps(&mesh)?;
    let tcp = SocketAddr::new(DP1_IP.into(), 82);
    // Any ending will do: the connection must not stay open.
    let _ended = in_pod(&mesh.pod("client").pod, move || tcp_ending(tcp, b"hold\n"))??;
    Ok(())
}
