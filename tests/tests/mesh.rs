//! The data plane end to end: real controller, real proxies with real iptables rules, in
//! network namespaces; the apps inside the pods are the test's own.

use std::time::Duration;

use anyhow::Context;
use smidge_e2e::apps::{self, BANNER_PORT, ECHO_PORT, H1, WS_PORT};
use smidge_e2e::mesh::in_pod;
use smidge_e2e::metric_sum;
use smidge_e2e::scenario::{manifests, start, web};

#[test]
fn every_protocol_reaches_its_backend_through_both_proxies() -> anyhow::Result<()> {
    // A long detection timeout: the banner below only arrives in time if its port skips detection.
    let mesh = start(
        "proto",
        &manifests(1, 0, true),
        &["--detect-timeout-ms", "20000"],
    )?;
    let client = mesh.pod("client").pod.clone();
    let result = in_pod(&client, || async {
        let mut h1 = H1::connect(web(80)).await?;
        for i in 0..10 {
            let a = h1
                .get("web.mesh.svc.cluster.local", &format!("/hello/{i}"))
                .await?;
            anyhow::ensure!(a.status == 200, "HTTP/1.1 got {a:?}");
            anyhow::ensure!(a.backend() == "v1", "HTTP/1.1 reached {:?}", a.backend());
            // Routed by destination address, and the Host header arrives untouched.
            anyhow::ensure!(
                a.body.contains("host=web.mesh.svc.cluster.local"),
                "{}",
                a.body
            );
        }
        let trailers = apps::h2_stream(web(80), &["one", "two", "three"]).await?;
        anyhow::ensure!(
            trailers.get("grpc-status").map(|v| v.as_bytes()) == Some(b"0"),
            "trailers {trailers:?}"
        );
        apps::websocket_echo(web(WS_PORT), &["ping", "pong"]).await?;
        apps::tcp_echo(web(ECHO_PORT), "opaque bytes").await?;
        let hello = apps::banner(web(BANNER_PORT), Duration::from_secs(10)).await?;
        anyhow::ensure!(hello.starts_with("220 v1"), "banner {hello:?}");
        anyhow::Ok(())
    })?;
    result.with_context(|| mesh.logs())?;

    // 10 GETs, one h2 stream, one WebSocket upgrade: 12 requests, all answered.
    let client_metrics = mesh.metrics("client")?;
    let out = metric_sum(
        &client_metrics,
        "smidge_requests_total",
        &[("direction", "outbound")],
    )?;
    assert_eq!(out, 12.0, "client proxy metrics:\n{client_metrics}");
    let v1_metrics = mesh.metrics("web-v1")?;
    let inb = metric_sum(
        &v1_metrics,
        "smidge_requests_total",
        &[
            ("direction", "inbound"),
            ("src_identity", "spiffe://cluster.local/ns/mesh/sa/client"),
            ("tls", "true"),
        ],
    )?;
    assert_eq!(inb, 12.0, "web-v1 proxy metrics:\n{v1_metrics}");
    let tcp = metric_sum(
        &client_metrics,
        "smidge_tcp_opened_total",
        &[("direction", "outbound")],
    )?;
    assert_eq!(tcp, 2.0, "echo and banner: {client_metrics}");
    Ok(())
}

/// Sends `n` GETs over `h1` and counts the answers per backend.
async fn tally(h1: &mut H1, n: usize) -> anyhow::Result<(usize, usize)> {
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..n {
        let a = h1.get("web", "/").await?;
        anyhow::ensure!(a.status == 200, "got {a:?}");
        match a.backend() {
            "v1" => v1 += 1,
            "v2" => v2 += 1,
            other => anyhow::bail!("answer from {other:?}"),
        }
    }
    Ok((v1, v2))
}

/// Sends GETs over `h1` until one is answered by `backend`, for at most `within`.
async fn until_backend(h1: &mut H1, backend: &str, within: Duration) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + within;
    let mut sent = 0;
    loop {
        let a = h1.get("web", "/").await?;
        sent += 1;
        if a.backend() == backend {
            return Ok(sent);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no answer from {backend} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn split_weights_apply_per_request_on_one_keep_alive_connection() -> anyhow::Result<()> {
    let mesh = start("split", &manifests(1, 0, true), &[])?;
    let client = mesh.pod("client").pod.clone();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<anyhow::Result<usize>>();
    let (edit_tx, edit_rx) = std::sync::mpsc::channel::<()>();
    // The client runs on its own thread in its pod, on one connection, while the test edits
    // the manifests between phases.
    std::thread::spawn(move || {
        let r = in_pod(&client, move || async move {
            let mut h1 = H1::connect(web(80)).await?;
            let (v1, v2) = tally(&mut h1, 200).await?;
            anyhow::ensure!((v1, v2) == (200, 0), "1/0 gave v1={v1} v2={v2}");
            tx.send(())?;
            edit_rx.recv()?;
            let polled = until_backend(&mut h1, "v2", Duration::from_secs(5)).await?;
            let (v1, v2) = tally(&mut h1, 200).await?;
            anyhow::ensure!((v1, v2) == (0, 200), "0/1 gave v1={v1} v2={v2}");
            anyhow::ensure!(h1.is_open(), "the keep-alive connection was closed");
            Ok(400 + polled)
        });
        let _ = done_tx.send(r.and_then(|r| r));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .with_context(|| format!("phase 1 did not finish\n{}", mesh.logs()))?;
    mesh.write_manifests(&manifests(0, 1, true))?;
    edit_tx.send(())?;
    let sent = done_rx
        .recv_timeout(Duration::from_secs(60))?
        .with_context(|| mesh.logs())?;

    let metrics = mesh.metrics("client")?;
    let counted = metric_sum(
        &metrics,
        "smidge_requests_total",
        &[("direction", "outbound")],
    )?;
    assert_eq!(counted, sent as f64, "{metrics}");

    // 75/25 over 2,000 requests, on a fresh connection.
    mesh.write_manifests(&manifests(75, 25, true))?;
    let client = mesh.pod("client").pod.clone();
    let (v1, v2) = in_pod(&client, || async {
        let mut h1 = H1::connect(web(80)).await?;
        until_backend(&mut h1, "v1", Duration::from_secs(5)).await?;
        tally(&mut h1, 2000).await
    })??;
    let share = v1 as f64 / 2000.0 * 100.0;
    assert!(
        (70.0..=80.0).contains(&share),
        "75/25 gave {share:.1}% to v1 ({v1} vs {v2})"
    );
    Ok(())
}

#[test]
fn a_traffic_target_turns_403_into_200_and_back_on_an_open_connection() -> anyhow::Result<()> {
    let mesh = start("authz", &manifests(1, 0, false), &[])?;
    let client = mesh.pod("client").pod.clone();
    // Opaque TCP is decided per connection: denied, the connection is closed without an echo.
    let denied_tcp = in_pod(&client, || apps::tcp_echo(web(ECHO_PORT), "let me in"))?;
    assert!(denied_tcp.is_err(), "a denied TCP connection was answered");
    let client_pod = client.clone();
    let (step_tx, step_rx) = std::sync::mpsc::channel::<&'static str>();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<anyhow::Result<(u16, String)>>();
    let errors = seen_tx.clone();
    std::thread::spawn(move || {
        let r = in_pod(&client, move || async move {
            let mut h1 = H1::connect(web(80)).await?;
            let first = h1.get("web", "/").await?;
            let reason = first
                .headers
                .get("smidge-denied")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            seen_tx.send(Ok((first.status.as_u16(), reason)))?;
            // For each edit: how long until the answer flips, on this same connection.
            while let Ok(want) = step_rx.recv() {
                let want: u16 = if want == "allow" { 200 } else { 403 };
                let started = tokio::time::Instant::now();
                loop {
                    let a = h1.get("web", "/").await?;
                    if a.status.as_u16() == want {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                anyhow::ensure!(h1.is_open(), "the connection was closed");
                seen_tx.send(Ok((want, format!("{}", started.elapsed().as_millis()))))?;
            }
            anyhow::Ok(())
        });
        if let Err(e) = r.and_then(|r| r) {
            let _ = errors.send(Err(e));
        }
    });
    let wait = Duration::from_secs(1);
    let (code, reason) = seen_rx.recv_timeout(Duration::from_secs(30))??;
    assert_eq!((code, reason.as_str()), (403, "default-deny"));

    mesh.write_manifests(&manifests(1, 0, true))?;
    step_tx.send("allow")?;
    let (code, ms) = seen_rx
        .recv_timeout(wait)
        .with_context(|| format!("still 403 after {wait:?}\n{}", mesh.logs()))??;
    assert_eq!(code, 200, "after {ms} ms");
    in_pod(&client_pod, || {
        apps::tcp_echo(web(ECHO_PORT), "now allowed")
    })??;

    mesh.write_manifests(&manifests(1, 0, false))?;
    step_tx.send("deny")?;
    let (code, ms) = seen_rx
        .recv_timeout(wait)
        .with_context(|| format!("still 200 after {wait:?}\n{}", mesh.logs()))??;
    assert_eq!(code, 403, "after {ms} ms");
    let metrics = mesh.metrics("web-v1")?;
    assert!(
        metric_sum(
            &metrics,
            "smidge_authz_denied_total",
            &[("reason", "default-deny")]
        )? >= 2.0,
        "{metrics}"
    );
    Ok(())
}

#[test]
fn killing_the_controller_fails_no_request_and_a_restart_brings_changes() -> anyhow::Result<()> {
    let mut mesh = start("ctrl", &manifests(1, 0, true), &[])?;
    let client = mesh.pod("client").pod.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // Requests flow without pause while the controller goes away and comes back.
    std::thread::spawn(move || {
        let r = in_pod(&client, move || async move {
            let mut h1 = H1::connect(web(80)).await?;
            let mut sent = 0usize;
            let mut stop = stop_rx;
            loop {
                let a = h1.get("web", "/").await?;
                sent += 1;
                anyhow::ensure!(a.status == 200, "request {sent} got {a:?}");
                // A fresh connection each time too: new connections use the last views.
                let b = H1::connect(web(80)).await?.get("web", "/").await?;
                sent += 1;
                anyhow::ensure!(b.status == 200, "request {sent} got {b:?}");
                if stop.try_recv().is_ok() {
                    return Ok(sent);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let _ = done_tx.send(r.and_then(|r| r));
    });
    std::thread::sleep(Duration::from_millis(300));
    mesh.stop_controller();
    // Long enough for every proxy to notice and retry a few times.
    std::thread::sleep(Duration::from_secs(2));
    let _ = stop_tx.send(());
    let sent = done_rx
        .recv_timeout(Duration::from_secs(30))?
        .with_context(|| mesh.logs())?;
    assert!(sent > 10, "only {sent} requests were sent");

    mesh.write_manifests(&manifests(0, 1, true))?;
    mesh.restart_controller()?;
    let client = mesh.pod("client").pod.clone();
    in_pod(&client, || async {
        let mut h1 = H1::connect(web(80)).await?;
        until_backend(&mut h1, "v2", Duration::from_secs(20)).await
    })?
    .with_context(|| mesh.logs())?;
    Ok(())
}

#[test]
fn programs_in_a_pod_reach_services_by_name() -> anyhow::Result<()> {
    let mesh = start("names", &manifests(1, 0, true), &[])?;
    let client = &mesh.pod("client").pod;
    for name in [
        "web.mesh.svc.cluster.local",
        "web.mesh.svc.cluster.local.",
        "web.mesh",
        "web",
    ] {
        let out = client
            .command(std::path::Path::new("getent"), None)
            .args(["hosts", name])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("10.96.0.10 "),
            "{name} resolved to {text:?}"
        );
    }
    // A shell's own connection by name, through the client's proxy and mTLS to web-v1.
    let out = client
        .command(std::path::Path::new("bash"), None)
        .args([
            "-c",
            "exec 3<>/dev/tcp/web.mesh.svc.cluster.local/80 && \
             printf 'GET /by-name HTTP/1.0\\r\\nHost: web\\r\\n\\r\\n' >&3 && timeout 10 cat <&3",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}\n{}", mesh.logs());
    assert!(text.contains("x-backend: v1"), "{text}");
    Ok(())
}

#[test]
fn a_dead_endpoint_is_avoided_after_its_first_failure() -> anyhow::Result<()> {
    // No TrafficSplit: the web Service's own endpoints, web-v1 and web-v2, share the traffic.
    let all = manifests(1, 0, true);
    let text: Vec<&str> = all
        .split("---\n")
        .filter(|doc| !doc.contains("kind: TrafficSplit"))
        .collect();
    let mut mesh = start("dead", &text.join("---\n"), &[])?;
    let client = mesh.pod("client").pod.clone();
    let (v1, v2) = in_pod(&client, || async {
        let mut h1 = H1::connect(web(80)).await?;
        tally(&mut h1, 40).await
    })??;
    assert_eq!(v1 + v2, 40);

    // web-v2 dies: its proxy goes, so connections to it are refused.
    if let Some(p) = mesh.pods.iter_mut().find(|p| p.pod.name == "web-v2") {
        p.proxy.kill();
    }
    let (ok, failed) = in_pod(&client, || async {
        let mut h1 = H1::connect(web(80)).await?;
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..100 {
            let a = h1.get("web", "/").await?;
            if a.status == 200 && a.backend() == "v1" {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        anyhow::Ok((ok, failed))
    })??;
    // Without failure accounting a dead endpoint fails fast, looks fast and draws the traffic.
    assert!(
        failed <= 3,
        "{failed} of 100 requests failed ({ok} ok)\n{}",
        mesh.logs()
    );
    Ok(())
}
