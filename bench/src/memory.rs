//! The `memory` scenario: proxy RSS idle (certificate and views held), at 1,000 RPS, at max
//! load, per idle keep-alive connection (plain into the client-side proxy, mTLS into the
//! server-side one), and with 10,000 Services in the mesh against 10.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::procstat::{self, Memory};
use crate::proxy::{self, Plan};
use crate::report::{Figure, Report};
use crate::topology::{self, Route, Topology};

/// How many idle connections per proxy, and how big the large mesh is.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub idle_connections: usize,
    pub large_mesh: u32,
    pub load: Plan,
}

impl Scale {
    pub fn full() -> Scale {
        Scale {
            idle_connections: 1000,
            large_mesh: 10_000,
            load: Plan {
                rounds: 1,
                ..Plan::full()
            },
        }
    }

    pub fn quick() -> Scale {
        Scale {
            idle_connections: 1000,
            large_mesh: 10_000,
            load: Plan {
                warmup: Duration::from_millis(300),
                window: Duration::from_secs(1),
                ..Plan::quick()
            },
        }
    }
}

/// The largest VmRSS and RssAnon of the route's proxies.
fn route_memory(route: &Route) -> anyhow::Result<Memory> {
    let mut m = Memory::default();
    for (_, pid) in &route.proxies {
        let x = procstat::memory(*pid)?;
        m.vm_rss = m.vm_rss.max(x.vm_rss);
        m.rss_anon = m.rss_anon.max(x.rss_anon);
    }
    Ok(m)
}

fn role_pid(route: &Route, role: &str) -> anyhow::Result<u32> {
    route
        .proxies
        .iter()
        .find(|(r, _)| *r == role)
        .map(|(_, p)| *p)
        .with_context(|| format!("no {role} proxy on the {} path", route.name))
}

/// KiB of VmRSS each of `n` connections adds to `pid`, measured around `open`.
fn per_connection<T>(
    pid: u32,
    n: usize,
    open: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<f64> {
    let before = procstat::memory(pid)?;
    let t = std::time::Instant::now();
    let held = open()?;
    eprintln!(
        "  {n} connections opened in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Let the proxy finish with what the connections' first requests left behind.
    std::thread::sleep(Duration::from_millis(500));
    let after = procstat::memory(pid)?;
    drop(held);
    Ok((after.vm_rss as f64 - before.vm_rss as f64) / n as f64)
}

pub fn run(bins: &Path, scale: Scale, quick: bool) -> anyhow::Result<Report> {
    let mut report = Report::new(if quick { "memory (quick)" } else { "memory" });
    let started = std::time::Instant::now();
    let topology = Topology::start(bins, "bench-mem", 0, true)?;
    for (kind, why) in &topology.missing {
        report.note(format!("{}: {why}", kind.name()));
    }
    topology::touch_used_services(&topology)?;
    // Settle: start-up allocations freed, certificates and views in place.
    std::thread::sleep(Duration::from_secs(2));
    let proxied: Vec<&Route> = topology
        .routes
        .iter()
        .filter(|r| !r.proxies.is_empty())
        .collect();
    let mut idle = BTreeMap::new();
    for r in &proxied {
        idle.insert(r.name.clone(), route_memory(r)?);
    }
    if let Some(smidge) = proxied.iter().find(|r| r.name == "smidge") {
        let pid = role_pid(smidge, "outbound")?;
        let parts = procstat::rss_by_mapping(pid)?
            .into_iter()
            .take(6)
            .map(|(name, kib)| {
                let short = name.rsplit('/').next().unwrap_or(&name).to_string();
                format!("{short} {kib} KiB")
            })
            .collect::<Vec<_>>();
        report.note(format!(
            "idle smidge proxy VmRSS by mapping: {}",
            parts.join(", ")
        ));
    }

    eprintln!(
        "  idle figures read at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let samples = proxy::measure(&topology, scale.load)?;
    let medians = proxy::medians(&samples);

    let n = scale.idle_connections;
    let mut plain = BTreeMap::new();
    let mut tls = BTreeMap::new();
    let node = topology.node_netns();
    for r in &proxied {
        let out = role_pid(r, "outbound")?;
        plain.insert(
            r.name.clone(),
            per_connection(out, n, || crate::load::open_idle(&r.target, n, true))
                .with_context(|| format!("idle plain connections into {}", r.name))?,
        );
        if let Some(inbound) = &r.inbound {
            let inb = role_pid(r, "inbound")?;
            tls.insert(
                r.name.clone(),
                per_connection(inb, n, || crate::load::open_tls_idle(&node, inbound, n))
                    .with_context(|| format!("idle mTLS connections into {}", r.name))?,
            );
        }
    }
    drop(topology);
    eprintln!(
        "  per-connection figures read at {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let peers = |values: &BTreeMap<String, f64>, unit: &str| -> String {
        values
            .iter()
            .filter(|(k, _)| *k != "smidge")
            .map(|(k, v)| format!("{k} {v:.1} {unit}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pick = |values: &BTreeMap<String, f64>| values.get("smidge").copied().unwrap_or(f64::NAN);
    let idle_rss: BTreeMap<String, f64> = idle
        .iter()
        .map(|(k, m)| (k.clone(), m.vm_rss_mib()))
        .collect();
    let idle_anon: BTreeMap<String, f64> = idle
        .iter()
        .map(|(k, m)| (k.clone(), m.rss_anon_mib()))
        .collect();
    report.push(
        Figure::new(
            "proxy VmRSS idle (certificate, 5 views)",
            pick(&idle_rss),
            "MiB",
        )
        .target("<= 4")
        .peer(peers(&idle_rss, "MiB")),
    );
    report.push(
        Figure::new("proxy RssAnon idle", pick(&idle_anon), "MiB")
            .target("<= 1.5")
            .peer(peers(&idle_anon, "MiB")),
    );
    let at_rate: BTreeMap<String, f64> = samples
        .iter()
        .filter(|(n, _)| n != "direct")
        .map(|(n, s)| {
            (
                n.clone(),
                proxy::median(s.iter().map(|x| x.at_rate.vm_rss_mib()).collect()),
            )
        })
        .collect();
    report.push(
        Figure::new("proxy VmRSS at 1,000 RPS", pick(&at_rate), "MiB").peer(peers(&at_rate, "MiB")),
    );
    let at_max: BTreeMap<String, f64> = medians
        .iter()
        .filter(|(n, _)| *n != "direct")
        .map(|(n, m)| (n.clone(), m.max_load_mib))
        .collect();
    report.push(
        Figure::new("proxy VmRSS at max load", pick(&at_max), "MiB")
            .target("<= 6")
            .peer(peers(&at_max, "MiB")),
    );
    report.push(
        Figure::new(
            format!("memory per idle mTLS connection into the inbound proxy ({n})"),
            pick(&tls),
            "KiB",
        )
        .target("<= 8")
        .peer(peers(&tls, "KiB")),
    );
    report.push(
        Figure::new(
            format!("memory per idle plain connection into the outbound proxy ({n})"),
            pick(&plain),
            "KiB",
        )
        .target("<= 1")
        .peer(peers(&plain, "KiB")),
    );

    // Mesh size: the client uses 5 Services either way.
    let mut by_size = Vec::new();
    for services in [10, scale.large_mesh] {
        let filler = services - topology::USED_SERVICES;
        let topology = Topology::start(bins, "bench-size", filler, false)
            .with_context(|| format!("a mesh of {services} Services"))?;
        topology::touch_used_services(&topology)?;
        std::thread::sleep(Duration::from_secs(2));
        let client = role_pid(&topology.routes[0], "outbound")?;
        let m = procstat::memory(client)?;
        eprintln!(
            "  mesh of {services} Services: client proxy {:.2} MiB VmRSS / {:.2} RssAnon",
            m.vm_rss_mib(),
            m.rss_anon_mib()
        );
        by_size.push((services, m));
        eprintln!("  at {:.1} s", started.elapsed().as_secs_f64());
    }
    if let [(small_n, small), (large_n, large)] = by_size[..] {
        report.push(Figure::new(
            format!("client proxy VmRSS, mesh of {small_n} Services"),
            small.vm_rss_mib(),
            "MiB",
        ));
        report.push(Figure::new(
            format!("client proxy VmRSS, mesh of {large_n} Services (5 used)"),
            large.vm_rss_mib(),
            "MiB",
        ));
        report.push(
            Figure::new(
                format!("RSS growth from {small_n} to {large_n} Services"),
                (large.vm_rss as f64 / small.vm_rss as f64 - 1.0) * 100.0,
                "%",
            )
            .target("<= 10")
            .peer("Envoy grows with mesh size"),
        );
    }
    Ok(report)
}
