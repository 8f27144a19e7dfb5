//! A small HTTP/1.1 load generator for tests on the local cluster, run inside a pod with
//! `smidge local exec`: keep-alive connections to one URL (names resolved through the pod's hosts
//! file), reconnecting after a transport error, for a number of requests or a duration. Prints one
//! JSON object: `{"events": [[ms, status, backend], ...]}`, status 0 for a transport error.
//!
//! `load URL [--connections N] [--requests N | --duration-ms MS] [--interval-ms MS] [--method M]`

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use smidge_e2e::apps::H1;

struct Options {
    url: String,
    connections: usize,
    requests: Option<usize>,
    duration: Option<Duration>,
    interval: Duration,
    method: String,
}

fn options() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        url: String::new(),
        connections: 1,
        requests: None,
        duration: None,
        interval: Duration::ZERO,
        method: "GET".into(),
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--connections" => o.connections = value()?.parse()?,
            "--requests" => o.requests = Some(value()?.parse()?),
            "--duration-ms" => o.duration = Some(Duration::from_millis(value()?.parse()?)),
            "--interval-ms" => o.interval = Duration::from_millis(value()?.parse()?),
            "--method" => o.method = value()?,
            url if !url.starts_with("--") && o.url.is_empty() => o.url = url.to_string(),
            other => bail!("unknown argument {other}"),
        }
    }
    if o.url.is_empty() {
        bail!("usage: load URL [--connections N] [--requests N | --duration-ms MS] [--interval-ms MS] [--method M]");
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    let rest = o.url.strip_prefix("http://").context("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = authority.to_string();
    let target = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let events = rt.block_on(async move {
        let addr = tokio::net::lookup_host(&target)
            .await
            .with_context(|| format!("resolving {target}"))?
            .next()
            .with_context(|| format!("{target} has no address"))?;
        let start = Instant::now();
        let per_connection = o.requests.map(|r| r.div_ceil(o.connections));
        let mut tasks = Vec::new();
        for _ in 0..o.connections {
            let (host, path, method) = (host.clone(), path.to_string(), o.method.clone());
            let (duration, interval) = (o.duration, o.interval);
            tasks.push(tokio::spawn(async move {
                let mut events = Vec::new();
                let mut conn: Option<H1> = None;
                let mut sent = 0;
                loop {
                    if per_connection.is_some_and(|n| sent >= n)
                        || duration.is_some_and(|d| start.elapsed() >= d)
                    {
                        break;
                    }
                    sent += 1;
                    if conn.as_ref().is_none_or(|c| !c.is_open()) {
                        conn = H1::connect(addr).await.ok();
                    }
                    let at = start.elapsed().as_millis() as u64;
                    let outcome = match conn.as_mut() {
                        Some(c) => c.request(&method, &host, &path).await,
                        None => Err(anyhow::anyhow!("connect failed")),
                    };
                    match outcome {
                        Ok(a) => events.push((at, a.status.as_u16(), a.backend().to_string())),
                        Err(_) => {
                            conn = None;
                            events.push((at, 0, String::new()));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    if !interval.is_zero() {
                        tokio::time::sleep(interval).await;
                    }
                }
                events
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await?);
        }
        all.sort();
        anyhow::Ok(all)
    })?;
    println!("{}", serde_json::json!({ "events": events }));
    Ok(())
}
