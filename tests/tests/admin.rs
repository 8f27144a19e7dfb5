//! The proxy's admin endpoints and hygiene end to end: `/views` and `/metrics` only from inside
//! the pod, admin connections that time out, metric label sets that stay bounded, and memory
//! that is returned after a burst of connections.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use smidge_e2e::mesh::{admin_get, in_pod, Mesh, ADMIN_PORT, ADMIN_PRIVATE_PORT};
use smidge_e2e::scenario::{manifests, start, web, V1_IP};
use smidge_local_cluster::apps::ECHO_PORT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OUTSIDER_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 15);

/// `GET path` on `addr` over HTTP/1.0: the status code and body.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text)).await??;
    let code = text.split(' ').nth(1).context("status line")?.parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The number of samples in a `/metrics` text.
fn series(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

/// `RssAnon` of a process, in bytes.
fn rss_anon(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .context("no RssAnon")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("RssAnon value")?
        .parse()?;
    Ok(kib * 1024)
}

#[test]
fn views_and_metrics_answer_only_inside_the_pod() -> anyhow::Result<()> {
    let mut mesh = start("adm", &manifests(1, 0, true), &[])?;
    // Un-meshed, like the review's outsider: its requests reach web-v1's pod IP directly.
    let outsider = mesh.node.add_pod("outsider", OUTSIDER_IP)?;
    let public = SocketAddr::new(V1_IP.into(), ADMIN_PORT);
    let from_outside = in_pod(&outsider, move || async move {
        let mut out = Vec::new();
        for path in ["/ready", "/live", "/views", "/metrics"] {
            out.push((path, get(public, path).await?));
        }
        anyhow::Ok(out)
    })??;
    for (path, (code, body)) in &from_outside {
        match *path {
            "/ready" | "/live" => assert_eq!(*code, 200, "{path}: {body}"),
            _ => {
                assert_eq!(*code, 404, "{path} from another pod: {body}");
                assert!(!body.contains("inbound:"), "{path}: {body}");
            }
        }
    }
    // Inside the pod, on loopback, everything answers.
    let inside = in_pod(&mesh.pod("web-v1").pod, || async {
        anyhow::Ok((
            admin_get(ADMIN_PRIVATE_PORT, "/views").await?,
            admin_get(ADMIN_PRIVATE_PORT, "/metrics").await?,
            admin_get(ADMIN_PRIVATE_PORT, "/ready").await?,
        ))
    })??;
    assert_eq!(inside.0 .0, 200);
    assert!(inside.0 .1.contains("inbound:mesh/web"), "{}", inside.0 .1);
    assert_eq!(inside.1 .0, 200);
    assert!(inside.1 .1.contains("smidge_controller_connected"));
    assert_eq!(inside.2 .0, 200);
    Ok(())
}

#[test]
fn metrics_public_serves_metrics_but_not_views_on_the_pod_ip() -> anyhow::Result<()> {
    let mut mesh = start("admpub", &manifests(1, 0, true), &["--metrics-public"])?;
    let outsider = mesh.node.add_pod("outsider", OUTSIDER_IP)?;
    let public = SocketAddr::new(V1_IP.into(), ADMIN_PORT);
    let (metrics, views) = in_pod(&outsider, move || async move {
        anyhow::Ok((get(public, "/metrics").await?, get(public, "/views").await?))
    })??;
    assert_eq!(metrics.0, 200);
    assert!(metrics.1.contains("smidge_controller_connected"));
    assert_eq!(views.0, 404, "{}", views.1);
    Ok(())
}

#[test]
fn a_silent_admin_connection_is_closed() -> anyhow::Result<()> {
    let mut mesh = start("admslow", &manifests(1, 0, true), &[])?;
    let outsider = mesh.node.add_pod("outsider", OUTSIDER_IP)?;
    let public = SocketAddr::new(V1_IP.into(), ADMIN_PORT);
    // Half a request head, then silence: the server must close it (it never did before).
    let read = in_pod(&outsider, move || async move {
        let mut s = TcpStream::connect(public).await?;
        s.write_all(b"GET /ready HTTP/1.1\r\nHost: a").await?;
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(40), s.read(&mut buf))
            .await
            .context("the admin server kept a silent connection open for 40 s")??;
        anyhow::Ok(n)
    })??;
    // Closed, with at most hyper's 408 before the close.
    let _ = read;
    Ok(())
}

/// Connects to every address in `dsts` from inside the pod, a few at a time, sending a byte
/// that no protocol detection mistakes for HTTP or TLS, and waits for each to end.
async fn touch_all(dsts: Vec<SocketAddr>) -> anyhow::Result<()> {
    for chunk in dsts.chunks(50) {
        let mut tasks = Vec::new();
        for &dst in chunk {
            tasks.push(tokio::spawn(async move {
                if let Ok(mut s) = TcpStream::connect(dst).await {
                    let _ = s.write_all(b"\x00\x01\x02\x03").await;
                    let mut buf = [0u8; 64];
                    let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
    }
    Ok(())
}

#[test]
fn a_thousand_destinations_add_a_bounded_number_of_series() -> anyhow::Result<()> {
    let mut mesh = start("admcard", &manifests(1, 0, true), &[])?;
    let outsider = mesh.node.add_pod("outsider", OUTSIDER_IP)?;
    let client_before = series(&mesh.metrics("client")?);
    let web_before = series(&mesh.metrics("web-v1")?);
    // The client's app dials 1,000 ports of an un-meshed pod (passthrough), and the un-meshed
    // pod dials 1,000 ports of web-v1 (denied: it has no identity).
    let outside: Vec<SocketAddr> = (20_000..21_000)
        .map(|p| SocketAddr::new(OUTSIDER_IP.into(), p))
        .collect();
    in_pod(&mesh.pod("client").pod, move || touch_all(outside))??;
    let inside: Vec<SocketAddr> = (20_000..21_000)
        .map(|p| SocketAddr::new(V1_IP.into(), p))
        .collect();
    in_pod(&outsider, move || touch_all(inside))??;
    let client_metrics = mesh.metrics("client")?;
    let web_metrics = mesh.metrics("web-v1")?;
    let (client_after, web_after) = (series(&client_metrics), series(&web_metrics));
    eprintln!(
        "series: client {client_before} -> {client_after}, web-v1 {web_before} -> {web_after}"
    );
    // Before: +6,000 on the client and +3,000 on web-v1 (one label set per destination port).
    assert!(
        client_after < client_before + 50,
        "client: {client_before} -> {client_after}\n{client_metrics}"
    );
    assert!(
        web_after < web_before + 150,
        "web-v1: {web_before} -> {web_after}\n{web_metrics}"
    );
    Ok(())
}

/// Opens `n` connections to the echo port of `web` through the client's proxy, proves each
/// works, holds them all, and closes them.
async fn burst(n: usize) -> anyhow::Result<()> {
    let mut held = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(100) {
        let mut tasks = Vec::new();
        for _ in 0..100.min(n - chunk * 100) {
            tasks.push(tokio::spawn(async {
                let mut s = TcpStream::connect(web(ECHO_PORT)).await?;
                s.write_all(b"ping\n").await?;
                let mut buf = [0u8; 5];
                tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut buf)).await??;
                anyhow::Ok(s)
            }));
        }
        for t in tasks {
            held.push(t.await??);
        }
    }
    drop(held);
    Ok(())
}

fn proxy_pid(mesh: &Mesh, pod: &str) -> anyhow::Result<u32> {
    mesh.pod(pod).proxy.pid().context("proxy pid")
}

#[test]
fn memory_is_returned_after_a_burst_of_idle_connections() -> anyhow::Result<()> {
    let mesh = start("admmem", &manifests(1, 0, true), &[])?;
    let pid = proxy_pid(&mesh, "client")?;
    // Warm up (certificate, views, the first mTLS connections), then take the idle figure.
    in_pod(&mesh.pod("client").pod, || burst(10))??;
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_anon(pid)?;
    in_pod(&mesh.pod("client").pod, || burst(2000))??;
    let peak = rss_anon(pid)?;
    // Memory, not time: wait up to a minute for RssAnon to come back near idle.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = rss_anon(pid)?;
    while after > idle + 4 * 1024 * 1024 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        after = rss_anon(pid)?;
    }
    eprintln!(
        "client proxy RssAnon: idle {} KiB, after 2,000 connections {} KiB, a minute later at most {} KiB",
        idle / 1024,
        peak / 1024,
        after / 1024
    );
    assert!(
        peak > idle + 8 * 1024 * 1024,
        "the burst did not cost memory: {idle} -> {peak}"
    );
    // Before: glibc kept it all (~+25 MB for 2,000 connections).
    assert!(
        after <= idle + 4 * 1024 * 1024,
        "RssAnon stayed at {after} (idle {idle}, peak {peak})\n{}",
        mesh.logs()
    );
    Ok(())
}
