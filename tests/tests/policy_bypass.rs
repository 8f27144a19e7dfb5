//! HTTP route rules hold end to end (security review F1, F2, F16; robustness review R1, R11):
//! a source that a TrafficTarget allows only `GET /api/.*` never reaches `/admin` at the app,
//! whatever it does to make its request look "not HTTP", to hide `/admin` in the path, or to
//! switch protocols after an allowed request.
//!
//! The app in web-v1 is the test's own: it records every byte it receives, so "never reached
//! the app" is checked where it matters, not inferred from a status code.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use smidge_e2e::apps::{tcp_echo, BANNER_PORT, ECHO_PORT};
use smidge_e2e::mesh::{in_pod, spawn_in_pod, Mesh, PodSpec};
use smidge_e2e::scenario::{binaries, manifests, web, CLIENT_IP, V1_IP};
use smidge_local_cluster::netns::Pod;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// client → web: HTTP only `GET /api/.*` on every port, and anything on the echo port.
fn policy() -> String {
    let mut text = manifests(1, 0, false);
    text.push_str(&format!(
        r#"---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {{name: api-only, namespace: mesh}}
spec:
  matches:
  - {{name: api, pathRegex: "/api/.*", methods: [GET]}}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {{name: client-api, namespace: mesh}}
spec:
  destination: {{kind: ServiceAccount, name: web, namespace: mesh}}
  sources: [{{kind: ServiceAccount, name: client, namespace: mesh}}]
  rules: [{{kind: HTTPRouteGroup, name: api-only, matches: [api]}}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {{name: echo-port, namespace: mesh}}
spec: {{matches: {{ports: [{ECHO_PORT}]}}}}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {{name: client-echo, namespace: mesh}}
spec:
  destination: {{kind: ServiceAccount, name: web, namespace: mesh}}
  sources: [{{kind: ServiceAccount, name: client, namespace: mesh}}]
  rules: [{{kind: TCPRoute, name: echo-port}}]
"#
    ));
    text
}

/// Everything the app received, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<u8>>>);

impl Seen {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The app: reads one request head (CRLF or bare LF), records it, answers `200 app <target>`
/// and closes. A request that asks to upgrade is answered 101, as an app that speaks h2c
/// would, and whatever follows on that connection is recorded too.
async fn app(port: u16, seen: Seen) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if let Ok(mut s) = seen.0.lock() {
                    s.extend_from_slice(&buf[..n]);
                }
                head.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&head).to_string();
                if text.contains("\r\n\r\n") || text.contains("\n\n") {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            if text.contains("\nupgrade:") {
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n")
                    .await;
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    if let Ok(mut s) = seen.0.lock() {
                        s.extend_from_slice(&buf[..n]);
                    }
                }
                return;
            }
            let line = text.trim_start().lines().next().unwrap_or("").to_string();
            let target = line.split(' ').nth(1).unwrap_or("").to_string();
            let body = format!("app {target}");
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        });
    }
}

/// Echoes bytes back (the TCPRoute's port).
async fn echo(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

fn start(tag: &str) -> anyhow::Result<(Mesh, Seen)> {
    let pods = [
        PodSpec {
            name: "client",
            ip: CLIENT_IP,
            service_account: "client",
        },
        PodSpec {
            name: "web-v1",
            ip: V1_IP,
            service_account: "web",
        },
    ];
    let mesh = Mesh::start(&binaries()?, tag, &policy(), "mesh", &pods, &[])?;
    let seen = Seen::default();
    let recorder = seen.clone();
    spawn_in_pod(&mesh.pod("web-v1").pod, move || async move {
        let _ = tokio::join!(app(8080, recorder), echo(ECHO_PORT), echo(BANNER_PORT));
    })?;
    Ok((mesh, seen))
}

/// Opens a connection to `addr`, waits `pause`, sends `bytes` and returns all that comes back
/// until the connection closes (or 10 s pass: then what came so far).
async fn raw(addr: SocketAddr, pause: Duration, bytes: Vec<u8>) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    s.write_all(&bytes).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The status code of the first response in `answer`, or 0 when the connection was closed
/// without one.
fn status(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Sends each `(name, pause, bytes)` from the client pod to the web Service and returns the
/// answers.
fn send_all(
    mesh: &Mesh,
    vectors: Vec<(&'static str, Duration, Vec<u8>)>,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    send_from(&mesh.pod("client").pod, web(80), vectors)
}

/// [`send_all`] from any pod to any address.
fn send_from(
    pod: &Pod,
    to: SocketAddr,
    vectors: Vec<(&'static str, Duration, Vec<u8>)>,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    in_pod(pod, move || async move {
        let mut answers = Vec::new();
        for (name, pause, bytes) in vectors {
            answers.push((name, raw(to, pause, bytes).await?));
        }
        anyhow::Ok(answers)
    })?
}

fn now(bytes: &str) -> (Duration, Vec<u8>) {
    (Duration::ZERO, bytes.as_bytes().to_vec())
}

#[test]
fn requests_that_do_not_look_like_http_never_reach_a_route_restricted_port() -> anyhow::Result<()> {
    let (mut mesh, seen) = start("bypass")?;
    let pad = "a".repeat(4200);
    let long = format!("GET /admin?pad={pad} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n");
    let allowed = send_all(
        &mesh,
        vec![
            (
                "crlf",
                Duration::ZERO,
                b"GET /api/x HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n".to_vec(),
            ),
            (
                "bare-lf",
                Duration::ZERO,
                b"GET /api/x HTTP/1.1\nHost: web\nConnection: close\n\n".to_vec(),
            ),
            (
                "long-query",
                Duration::ZERO,
                format!("GET /api/x?pad={pad} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
                    .into_bytes(),
            ),
        ],
    )
    .with_context(|| mesh.logs())?;
    for (name, answer) in &allowed {
        assert_eq!(status(answer), 200, "{name}: {answer}\n{}", mesh.logs());
        assert!(answer.contains("app /api/x"), "{name}: {answer}");
    }

    let vectors = vec![
        ("long-request-line", Duration::ZERO, long.into_bytes()),
        (
            "bare-lf",
            Duration::ZERO,
            b"GET /admin HTTP/1.1\nHost: web\nConnection: close\n\n".to_vec(),
        ),
        (
            "leading-crlf",
            Duration::ZERO,
            b"\r\nGET /admin HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "leading-lf",
            Duration::ZERO,
            b"\nGET /admin HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "lowercase-method",
            Duration::ZERO,
            b"get /admin HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "silence-first",
            Duration::from_millis(1200),
            b"GET /admin HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "delete-bare-lf",
            Duration::ZERO,
            b"DELETE /admin HTTP/1.1\nHost: web\nConnection: close\n\n".to_vec(),
        ),
        (
            "tab-separated",
            Duration::ZERO,
            b"GET\t/admin HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n".to_vec(),
        ),
    ];
    let mut answers = send_all(&mesh, vectors.clone())?;
    // The same bytes from a pod outside the mesh reach web's inbound proxy directly (in
    // plaintext, so without an identity: refused whatever the detection says).
    let outsider = mesh
        .node
        .add_pod("outsider", std::net::Ipv4Addr::new(10, 88, 0, 15))?;
    // The web-v1 Service: its one endpoint exists (web-v2 runs no pod here).
    let web_v1 = SocketAddr::new(std::net::Ipv4Addr::new(10, 96, 0, 11).into(), 80);
    answers.extend(send_from(&outsider, web_v1, vectors)?);
    let app_saw = seen.text();
    for (name, answer) in &answers {
        let code = status(answer);
        assert!(
            matches!(code, 0 | 400 | 403),
            "{name}: answered {code}: {answer}\napp saw:\n{app_saw}"
        );
        assert!(!answer.contains("app /admin"), "{name}: {answer}");
    }
    assert!(
        !app_saw.contains("/admin"),
        "the app received /admin:\n{app_saw}"
    );
    // Opaque TCP on the TCPRoute's port is still admitted; on a port only the HTTP rules
    // cover it is refused, also where the proxies skip detection (MySQL's port: mTLS with
    // ALPN smidge-opaque/1 between them).
    let client = mesh.pod("client").pod.clone();
    in_pod(&client, || async {
        tcp_echo(web(ECHO_PORT), "opaque bytes").await
    })?
    .with_context(|| mesh.logs())?;
    let skipped = in_pod(&client, || async {
        tcp_echo(web(BANNER_PORT), "opaque bytes").await
    })?;
    assert!(skipped.is_err(), "opaque TCP passed an HTTP-only port");
    Ok(())
}

#[test]
fn paths_are_normalized_before_matching_and_forwarded_normalized() -> anyhow::Result<()> {
    let (mesh, seen) = start("paths")?;
    let req = |path: &str| {
        now(&format!(
            "GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
        ))
    };
    let answers = send_all(
        &mesh,
        [
            ("dot-dot", "/api/../admin"),
            ("encoded-dot-dot", "/api/%2e%2e/admin"),
            ("encoded-slash", "/api/..%2fadmin"),
            ("two-up", "/api/x/../../admin"),
            ("path-parameter", "/api/;/../admin"),
            ("backslash", "/api/..\\admin"),
        ]
        .into_iter()
        .map(|(name, path)| {
            let (pause, bytes) = req(path);
            (name, pause, bytes)
        })
        .collect(),
    )?;
    for (name, answer) in &answers {
        let code = status(answer);
        assert!(
            matches!(code, 400 | 403),
            "{name}: answered {code}: {answer}"
        );
    }
    let refused = |name: &str| -> String {
        answers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    };
    for name in [
        "encoded-dot-dot",
        "encoded-slash",
        "path-parameter",
        "backslash",
    ] {
        let answer = refused(name);
        assert_eq!(status(&answer), 400, "{name}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("smidge-denied: path-"),
            "{name}: {answer}"
        );
    }
    let app_saw = seen.text();
    assert!(
        !app_saw.contains("admin"),
        "the app received admin:\n{app_saw}"
    );
    let (pause, bytes) = req("/api/./x?q=/../y");
    let dot = send_all(&mesh, vec![("dot", pause, bytes)])?;
    assert_eq!(status(&dot[0].1), 200, "{}", dot[0].1);
    assert!(
        dot[0].1.contains("app /api/x?q=/../y"),
        "the app saw: {}",
        dot[0].1
    );
    Ok(())
}

#[test]
fn upgrades_other_than_websocket_and_mesh_headers_and_host_tricks_do_not_pass() -> anyhow::Result<()>
{
    let (mesh, seen) = start("upgrade")?;
    // An allowed request asks to switch to h2c; a smuggled request follows on the same bytes.
    let h2c = "GET /api/x HTTP/1.1\r\nHost: web\r\nConnection: Upgrade, HTTP2-Settings\r\n\
               Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n\
               GET /admin HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n";
    let answers = send_all(
        &mesh,
        vec![
            ("h2c", Duration::ZERO, h2c.as_bytes().to_vec()),
            (
                "mesh-header",
                Duration::ZERO,
                b"GET /api/x HTTP/1.1\r\nHost: web\r\nsmidge-orig-proto: HTTP/1.0\r\nsmidge-x: 1\r\nConnection: close\r\n\r\n".to_vec(),
            ),
            (
                "two-hosts",
                Duration::ZERO,
                b"GET /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n".to_vec(),
            ),
            (
                "connection-host",
                Duration::ZERO,
                b"GET /api/x HTTP/1.1\r\nHost: web\r\nConnection: host, close\r\n\r\n".to_vec(),
            ),
        ],
    )?;
    let app_saw = seen.text();
    let answer = |name: &str| -> &str {
        answers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| a.as_str())
            .unwrap_or("")
    };
    let h2c = answer("h2c");
    assert_eq!(status(h2c), 200, "h2c: {h2c}\napp saw:\n{app_saw}");
    assert!(!h2c.contains(" 101 "), "h2c switched: {h2c}");
    assert!(
        !app_saw.to_ascii_lowercase().contains("upgrade"),
        "the app was asked to upgrade:\n{app_saw}"
    );
    assert!(!app_saw.contains("/admin"), "smuggled:\n{app_saw}");
    assert_eq!(
        status(answer("mesh-header")),
        200,
        "{}",
        answer("mesh-header")
    );
    assert!(
        !app_saw.to_ascii_lowercase().contains("smidge-"),
        "a mesh header reached the app:\n{app_saw}"
    );
    for name in ["two-hosts", "connection-host"] {
        assert_eq!(status(answer(name)), 400, "{name}: {}", answer(name));
    }
    Ok(())
}
