//! The `proxy` scenario: the two-hop sidecar path through smidge and each installed peer,
//! against the direct path, in interleaved rounds; medians over rounds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::load::{self, Latency, Throughput};
use crate::procstat::{self, Memory};
use crate::report::{Figure, Report};
use crate::topology::{Route, Topology};

/// How long and how often.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub rounds: usize,
    pub warmup: Duration,
    pub window: Duration,
    /// Closed-loop connections.
    pub connections: usize,
    /// Open-loop rate and connections.
    pub rate: u32,
    pub rate_connections: usize,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            rounds: 5,
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(5),
            connections: 16,
            rate: 1000,
            rate_connections: 16,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            rounds: 1,
            warmup: Duration::from_millis(500),
            window: Duration::from_secs(2),
            ..Plan::full()
        }
    }
}

/// One route's figures in one round.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub throughput: Throughput,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub latency_errors: u64,
    /// Both proxies' CPU time per request at the fixed rate, in µs.
    pub cpu_us: f64,
    /// The largest VmRSS/RssAnon any of the route's proxies reached under max load.
    pub max_load: Memory,
    /// The same at the fixed rate, read as the window closed.
    pub at_rate: Memory,
}

/// Every route's samples, by route name, in route order.
pub type Samples = Vec<(String, Vec<Sample>)>;

/// Runs the plan's rounds over every route, interleaved (A B C … A B C …).
pub fn measure(topology: &Topology, plan: Plan) -> anyhow::Result<Samples> {
    let mut samples: Samples = topology
        .routes
        .iter()
        .map(|r| (r.name.clone(), Vec::new()))
        .collect();
    for round in 0..plan.rounds {
        for (i, route) in topology.routes.iter().enumerate() {
            topology.pin()?;
            let sample = measure_route(route, plan)?;
            eprintln!(
                "  round {}/{} {:>8}: {:>8.0} req/s  p50 {:.3} p99 {:.3} p99.9 {:.3} ms  cpu {:.1} µs/req  rss {:.1}/{:.1} MiB{}",
                round + 1,
                plan.rounds,
                route.name,
                sample.throughput.rps(),
                sample.p50_ms,
                sample.p99_ms,
                sample.p999_ms,
                sample.cpu_us,
                sample.max_load.vm_rss_mib(),
                sample.max_load.rss_anon_mib(),
                match sample.throughput.errors + sample.latency_errors {
                    0 => String::new(),
                    e => format!("  ERRORS {e}"),
                }
            );
            samples[i].1.push(sample);
        }
    }
    Ok(samples)
}

fn largest(a: Memory, b: Memory) -> Memory {
    Memory {
        vm_rss: a.vm_rss.max(b.vm_rss),
        rss_anon: a.rss_anon.max(b.rss_anon),
    }
}

fn measure_route(route: &Route, plan: Plan) -> anyhow::Result<Sample> {
    let pids: Vec<u32> = route.proxies.iter().map(|(_, p)| *p).collect();
    let read_memory = |pids: &[u32]| -> Memory {
        pids.iter()
            .filter_map(|p| procstat::memory(*p).ok())
            .fold(Memory::default(), largest)
    };
    let mut max_load = Memory::default();
    let throughput = load::closed_loop(
        &route.target,
        plan.connections,
        plan.warmup,
        plan.window,
        || max_load = largest(max_load, read_memory(&pids)),
    )?;
    let cpu = |pids: &[u32]| -> u64 { pids.iter().filter_map(|p| procstat::cpu_ns(*p).ok()).sum() };
    let mut cpu_open = 0;
    let mut cpu_close = 0;
    let mut at_rate = Memory::default();
    let latency: Latency = load::open_loop(
        &route.target,
        plan.rate_connections,
        plan.rate,
        plan.warmup,
        plan.window,
        || cpu_open = cpu(&pids),
        || {
            cpu_close = cpu(&pids);
            at_rate = read_memory(&pids);
        },
    )?;
    let requests = latency.histogram.len() + latency.errors;
    Ok(Sample {
        throughput,
        p50_ms: latency.quantile_ms(0.5),
        p99_ms: latency.quantile_ms(0.99),
        p999_ms: latency.quantile_ms(0.999),
        latency_errors: latency.errors,
        cpu_us: if requests == 0 {
            0.0
        } else {
            cpu_close.saturating_sub(cpu_open) as f64 / requests as f64 / 1e3
        },
        max_load,
        at_rate,
    })
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Per-route medians of the figures the table shows.
#[derive(Clone, Debug)]
pub struct Medians {
    pub rps: f64,
    pub p50_added: f64,
    pub p99_added: f64,
    pub p999_added: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub cpu_us: f64,
    pub max_load_mib: f64,
    pub max_load_anon_mib: f64,
    pub errors: u64,
}

/// Medians per route; added latency is each round's quantile minus the direct path's in the
/// same round (zero when there is no direct path).
pub fn medians(samples: &Samples) -> BTreeMap<String, Medians> {
    let direct = samples.iter().find(|(n, _)| n == "direct").map(|(_, s)| s);
    let mut out = BTreeMap::new();
    for (name, s) in samples {
        let added = |f: fn(&Sample) -> f64| -> f64 {
            median(
                s.iter()
                    .enumerate()
                    .map(|(i, x)| f(x) - direct.and_then(|d| d.get(i)).map_or(0.0, f))
                    .collect(),
            )
        };
        out.insert(
            name.clone(),
            Medians {
                rps: median(s.iter().map(|x| x.throughput.rps()).collect()),
                p50_added: added(|x| x.p50_ms),
                p99_added: added(|x| x.p99_ms),
                p999_added: added(|x| x.p999_ms),
                p50: median(s.iter().map(|x| x.p50_ms).collect()),
                p99: median(s.iter().map(|x| x.p99_ms).collect()),
                p999: median(s.iter().map(|x| x.p999_ms).collect()),
                cpu_us: median(s.iter().map(|x| x.cpu_us).collect()),
                max_load_mib: median(s.iter().map(|x| x.max_load.vm_rss_mib()).collect()),
                max_load_anon_mib: median(s.iter().map(|x| x.max_load.rss_anon_mib()).collect()),
                errors: s
                    .iter()
                    .map(|x| x.throughput.errors + x.latency_errors)
                    .sum(),
            },
        );
    }
    out
}

/// The peers' values of one figure, for the summary line: "envoy 7.0k, haproxy 17.3k, …".
pub fn peer_values(
    medians: &BTreeMap<String, Medians>,
    missing: &[(crate::peers::Kind, String)],
    f: fn(&Medians) -> f64,
    format: fn(f64) -> String,
) -> String {
    let mut parts: Vec<String> = medians
        .iter()
        .filter(|(n, _)| *n != "smidge" && *n != "direct")
        .map(|(n, m)| format!("{n} {}", format(f(m))))
        .collect();
    for (kind, _) in missing {
        parts.push(format!("{} not installed", kind.name()));
    }
    parts.join(", ")
}

/// The best peer by `f` (largest when `larger` is better).
fn best_peer(
    medians: &BTreeMap<String, Medians>,
    f: impl Fn(&Medians) -> f64,
    larger: bool,
) -> Option<(String, f64)> {
    medians
        .iter()
        .filter(|(n, _)| *n != "smidge" && *n != "direct")
        .map(|(n, m)| (n.clone(), f(m)))
        .max_by(|a, b| {
            if larger {
                a.1.total_cmp(&b.1)
            } else {
                b.1.total_cmp(&a.1)
            }
        })
}

/// The table of every route, printed to stderr.
pub fn table(medians: &BTreeMap<String, Medians>, order: &[String]) -> String {
    let mut out = String::from(
        "route      max req/s  p50 ms  p99 ms  p99.9 ms  added p50  added p99  added p99.9  cpu µs/req  RSS@max VmRSS/Anon MiB  errors\n",
    );
    for name in order {
        if let Some(m) = medians.get(name) {
            out.push_str(&format!(
                "{name:<10} {:>9.0}  {:>6.3}  {:>6.3}  {:>8.3}  {:>9.3}  {:>9.3}  {:>11.3}  {:>10.1}  {:>12.1} / {:<8.1}  {}\n",
                m.rps,
                m.p50,
                m.p99,
                m.p999,
                m.p50_added,
                m.p99_added,
                m.p999_added,
                m.cpu_us,
                m.max_load_mib,
                m.max_load_anon_mib,
                m.errors
            ));
        }
    }
    out
}

/// Runs the scenario and reports smidge's figures with the peers' beside them.
pub fn run(bins: &Path, plan: Plan, quick: bool) -> anyhow::Result<Report> {
    let topology = Topology::start(bins, "bench-proxy", 0, true)?;
    let mut report = Report::new(if quick { "proxy (quick)" } else { "proxy" });
    report.note(format!(
        "{} rounds, interleaved; closed loop {} connections, open loop {} RPS over {} connections; {:?} warm-up, {:?} windows; proxies and upstream on core {}, load on core {}",
        plan.rounds,
        plan.connections,
        plan.rate,
        plan.rate_connections,
        plan.warmup,
        plan.window,
        crate::topology::PROXY_CORE,
        crate::topology::LOAD_CORE,
    ));
    for (kind, why) in &topology.missing {
        report.note(format!("{}: {why}", kind.name()));
    }
    let samples = measure(&topology, plan)?;
    let order: Vec<String> = samples.iter().map(|(n, _)| n.clone()).collect();
    let medians = medians(&samples);
    eprint!("{}", table(&medians, &order));
    let smidge = medians
        .get("smidge")
        .ok_or_else(|| anyhow::anyhow!("no smidge figures"))?;
    if smidge.errors > 0 {
        report.note(format!(
            "smidge answered {} requests with an error: its figures are not valid\n{}",
            smidge.errors,
            topology.logs()
        ));
    }
    let kilo: fn(f64) -> String = |v| format!("{:.1}k req/s", v / 1e3);
    let ms: fn(f64) -> String = |v| format!("{v:.3} ms");
    let us: fn(f64) -> String = |v| format!("{v:.0} µs");
    let mib: fn(f64) -> String = |v| format!("{v:.1} MiB");
    let peers = |f: fn(&Medians) -> f64, format: fn(f64) -> String| {
        peer_values(&medians, &topology.missing, f, format)
    };
    let best_rps = best_peer(&medians, |m| m.rps, true);
    report.push(
        Figure::new("two-hop max throughput, one core", smidge.rps, "req/s")
            .target(match &best_rps {
                Some((n, v)) => format!(">= 1.2 x {n} = {:.0}", 1.2 * v),
                None => ">= 1.2 x the best peer".into(),
            })
            .peer(peers(|m| m.rps, kilo)),
    );
    if let Some((n, v)) = &best_rps {
        report.push(
            Figure::new(format!("throughput / best peer ({n})"), smidge.rps / v, "x")
                .target(">= 1.2"),
        );
    }
    if let Some(direct) = medians.get("direct") {
        report.push(Figure::new(
            "direct path max throughput",
            direct.rps,
            "req/s",
        ));
        report.push(Figure::new(
            "direct path p99 at 1,000 RPS",
            direct.p99,
            "ms",
        ));
    }
    let best_p99 = best_peer(&medians, |m| m.p99_added, false);
    let p99 = "latency added by two hops at 1,000 RPS, p99";
    report.push(
        Figure::new(p99, smidge.p99_added, "ms")
            .target(match &best_p99 {
                Some((n, v)) => format!("<= {n} {v:.3}"),
                None => "<= the best peer".into(),
            })
            .peer(peers(|m| m.p99_added, ms)),
    );
    let p50 = "latency added at 1,000 RPS, p50";
    report.push(Figure::new(p50, smidge.p50_added, "ms").peer(peers(|m| m.p50_added, ms)));
    let p999 = "latency added at 1,000 RPS, p99.9";
    report.push(Figure::new(p999, smidge.p999_added, "ms").peer(peers(|m| m.p999_added, ms)));
    let cpu = "CPU per request at 1,000 RPS, both proxies";
    report.push(
        Figure::new(cpu, smidge.cpu_us, "µs")
            .target("<= 100")
            .peer(peers(|m| m.cpu_us, us)),
    );
    let rss = "proxy VmRSS at max load";
    report.push(
        Figure::new(rss, smidge.max_load_mib, "MiB")
            .target("<= 6")
            .peer(peers(|m| m.max_load_mib, mib)),
    );
    let anon = "proxy RssAnon at max load";
    report.push(
        Figure::new(anon, smidge.max_load_anon_mib, "MiB")
            .peer(peers(|m| m.max_load_anon_mib, mib)),
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rps_ok: u64, p99: f64) -> Sample {
        Sample {
            throughput: Throughput {
                ok: rps_ok,
                errors: 0,
                secs: 1.0,
            },
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            p999_ms: p99 * 2.0,
            ..Sample::default()
        }
    }

    #[test]
    fn the_median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn added_latency_is_taken_against_the_direct_path_of_the_same_round() {
        let samples: Samples = vec![
            (
                "direct".into(),
                vec![sample(100, 1.0), sample(100, 5.0), sample(100, 1.0)],
            ),
            (
                "smidge".into(),
                vec![sample(50, 1.2), sample(60, 5.3), sample(70, 1.1)],
            ),
        ];
        let m = medians(&samples);
        let smidge = &m["smidge"];
        // Per round: 0.2, 0.3, 0.1 → median 0.2 (a median of absolutes would say 0.2 too,
        // but a noisy direct round must not be charged to another round).
        assert!(
            (smidge.p99_added - 0.2).abs() < 1e-9,
            "{}",
            smidge.p99_added
        );
        assert_eq!(smidge.rps, 60.0);
        assert_eq!(m["direct"].p99_added, 0.0);
    }

    #[test]
    fn peers_are_listed_with_the_missing_ones_named() {
        let samples: Samples = vec![
            ("smidge".into(), vec![sample(50, 1.0)]),
            ("nginx".into(), vec![sample(40, 1.0)]),
        ];
        let m = medians(&samples);
        let text = peer_values(
            &m,
            &[(crate::peers::Kind::Envoy, "not installed".into())],
            |m| m.rps,
            |v| format!("{v:.0}"),
        );
        assert_eq!(text, "nginx 40, envoy not installed");
        assert_eq!(best_peer(&m, |m| m.rps, true), Some(("nginx".into(), 40.0)));
    }
}
