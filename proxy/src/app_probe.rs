//! The apps' kubelet probes, made by the proxy (see [`smidge_protocol::probes`]): the kubelet
//! asks the public admin port at `/app-probe/<container>/<kind>` and the proxy checks the app at
//! the pod's address. The proxy's own connections are not intercepted, so the check reaches the
//! app as the kubelet's would have, whatever the inbound policy says about the kubelet.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use smidge_protocol::probes::AppProbe;

/// The probes the injector moved to this proxy, and where the app is.
#[derive(Clone, Debug, Default)]
pub struct AppProbes {
    pub probes: smidge_protocol::probes::AppProbes,
    /// The pod's address (the kubelet probes the pod IP); loopback when unknown.
    pub app_ip: Option<IpAddr>,
    /// The proxy's `--socket-mark`, so a pod exempting the proxy by mark does not intercept
    /// the check.
    pub socket_mark: Option<u32>,
}

/// What the kubelet gets: 200 when the app passed (HTTP 200–399 or a TCP connect), 503 when it
/// did not, each with a line saying what the app did; 404 for a path no probe has.
pub async fn answer(probes: &AppProbes, path: &str) -> (StatusCode, String) {
    let Some(probe) = probes.probes.get(path) else {
        return (StatusCode::NOT_FOUND, format!("no app probe at {path}\n"));
    };
    let ip = probes
        .app_ip
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let addr = SocketAddr::new(ip, probe.port);
    let timeout = Duration::from_secs(u64::from(probe.timeout_seconds.max(1)));
    match tokio::time::timeout(timeout, check(probe, addr, probes.socket_mark)).await {
        Ok(Ok(Some(status))) if (200..400).contains(&status.as_u16()) => {
            (StatusCode::OK, format!("the app answered {status}\n"))
        }
        Ok(Ok(Some(status))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the app answered {status}\n"),
        ),
        Ok(Ok(None)) => (StatusCode::OK, format!("{addr} accepts connections\n")),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("probing {addr}: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("probing {addr}: no answer within {timeout:?}\n"),
        ),
    }
}

/// The check itself: the app's status for an HTTP probe, `None` for a TCP probe that connected.
async fn check(
    probe: &AppProbe,
    addr: SocketAddr,
    mark: Option<u32>,
) -> anyhow::Result<Option<StatusCode>> {
    let stream = crate::net::connect::connect(addr, mark).await?;
    let Some(path) = &probe.http_path else {
        return Ok(None);
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::get(path.as_str()).body(Empty::<Bytes>::new())?;
    // The probe's own headers win, as with the kubelet; the defaults fill in what they lack.
    let headers = req.headers_mut();
    for (name, value) in &probe.headers {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes())?,
            http::HeaderValue::from_str(value)?,
        );
    }
    for (name, value) in [
        (http::header::HOST, addr.to_string()),
        (
            http::header::USER_AGENT,
            "kube-probe/smidge-proxy".to_string(),
        ),
        (http::header::ACCEPT, "*/*".to_string()),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, http::HeaderValue::from_str(&value)?);
        }
    }
    let resp = sender.send_request(req).await?;
    Ok(Some(resp.status()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn probes(port: u16, http_path: Option<&str>) -> AppProbes {
        let mut probes = smidge_protocol::probes::AppProbes::new();
        probes.insert(
            "/app-probe/web/readiness".into(),
            AppProbe {
                port,
                http_path: http_path.map(str::to_string),
                headers: vec![("x-probe".into(), "yes".into())],
                timeout_seconds: 1,
            },
        );
        AppProbes {
            probes,
            app_ip: None,
            socket_mark: None,
        }
    }

    /// An app answering every request with `status`, sending back the request head it read.
    async fn app(status: u16) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
            s.write_all(resp.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&head).into_owned()
        });
        (port, task)
    }

    #[tokio::test]
    async fn an_http_probe_passes_on_2xx_and_3xx_and_fails_otherwise() {
        for (status, want) in [(200, 200), (302, 200), (500, 503), (404, 503)] {
            let (port, app) = app(status).await;
            let (got, body) = answer(
                &probes(port, Some("/healthz?x=1")),
                "/app-probe/web/readiness",
            )
            .await;
            assert_eq!(got.as_u16(), want, "{status}: {body}");
            let head = app.await.expect("app");
            assert!(head.starts_with("GET /healthz?x=1 HTTP/1.1\r\n"), "{head}");
            assert!(head.to_ascii_lowercase().contains("x-probe: yes"), "{head}");
        }
    }

    #[tokio::test]
    async fn the_probes_own_host_header_replaces_the_default() {
        let (port, app) = app(200).await;
        let mut p = probes(port, Some("/"));
        if let Some(probe) = p.probes.get_mut("/app-probe/web/readiness") {
            probe.headers = vec![("Host".into(), "web.example".into())];
        }
        let (got, body) = answer(&p, "/app-probe/web/readiness").await;
        assert_eq!(got, StatusCode::OK, "{body}");
        let head = app.await.expect("app").to_ascii_lowercase();
        assert_eq!(head.matches("host:").count(), 1, "{head}");
        assert!(head.contains("host: web.example\r\n"), "{head}");
        assert!(head.contains("user-agent: kube-probe/"), "{head}");
    }

    #[tokio::test]
    async fn a_tcp_probe_passes_while_the_port_accepts_and_unknown_paths_are_404() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (got, _) = answer(&probes(port, None), "/app-probe/web/readiness").await;
        assert_eq!(got, StatusCode::OK);
        drop(listener);
        let (got, body) = answer(&probes(port, None), "/app-probe/web/readiness").await;
        assert_eq!(got, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains(&format!("127.0.0.1:{port}")), "{body}");
        let (got, _) = answer(&probes(port, None), "/app-probe/web/liveness").await;
        assert_eq!(got, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn an_app_that_never_answers_fails_at_the_probes_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (got, body) = answer(&probes(port, Some("/")), "/app-probe/web/readiness").await;
        assert_eq!(got, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("no answer within"), "{body}");
        drop(listener);
    }
}
