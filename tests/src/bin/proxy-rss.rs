//! Measures the proxy's resident memory idle and under load, in the namespace mesh of the
//! end-to-end tests (release binaries when run with `--release`).
//!
//! `cargo run --release -p smidge-e2e --bin proxy-rss -- [connections] [seconds]`

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::Context;
use smidge_e2e::apps::H1;
use smidge_e2e::mesh::{in_pod, Mesh};
use smidge_e2e::scenario::{manifests, start, web};

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn proxies(mesh: &Mesh) -> anyhow::Result<(u64, u64)> {
    let pid = |name: &str| mesh.pod(name).proxy.pid().context("proxy pid");
    Ok((rss_kib(pid("client")?)?, rss_kib(pid("web-v1")?)?))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let connections: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let mesh = start("rss", &manifests(1, 0, true), &[])?;
    let client = mesh.pod("client").pod.clone();
    // One request so both proxies hold their views and a pooled connection.
    in_pod(&client, || async {
        H1::connect(web(80)).await?.get("web", "/").await
    })??;
    let idle = proxies(&mesh)?;

    let load = std::thread::spawn(move || {
        in_pod(&client, move || async move {
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let mut tasks = Vec::new();
            for _ in 0..connections {
                tasks.push(tokio::spawn(async move {
                    let mut h1 = H1::connect(web(80)).await?;
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let a = h1.get("web", "/").await?;
                        anyhow::ensure!(a.status == 200, "got {a:?}");
                        n += 1;
                    }
                    anyhow::Ok(n)
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await??;
            }
            anyhow::Ok(total)
        })
    });
    std::thread::sleep(Duration::from_secs(seconds / 2));
    let busy = proxies(&mesh)?;
    let total = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))???;
    std::thread::sleep(Duration::from_secs(2));
    let after = proxies(&mesh)?;

    println!(
        "connections={connections} seconds={seconds} requests={total} rps={:.0}",
        total as f64 / seconds as f64
    );
    println!(
        "{:<28} {:>12} {:>12}",
        "VmRSS (KiB)", "client-side", "server-side"
    );
    for (what, (c, s)) in [
        ("idle", idle),
        ("under load", busy),
        ("2 s after load", after),
    ] {
        println!("{what:<28} {c:>12} {s:>12}");
    }
    Ok(())
}
