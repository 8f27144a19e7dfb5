//! From proxies' Prometheus text to a row of `smidge stat`: request and success counts and the
//! latency histogram of one direction, their growth between two samples, quantiles from the
//! buckets (as Prometheus' `histogram_quantile`), and the table. Pure.

use std::collections::BTreeMap;
use std::time::Duration;

/// The proxy's metric names (proxy/src/metrics.rs, prefix `smidge`).
pub const REQUESTS: &str = "smidge_requests_total";
pub const LATENCY: &str = "smidge_response_latency_seconds";

/// Counts of one proxy (or a sum of proxies) at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub requests: f64,
    /// Requests answered with anything but 5xx.
    pub successes: f64,
    /// Cumulative bucket counts by upper bound. The key is the bound's bits, which order as the
    /// numbers do for the non-negative bounds a latency histogram has (`+Inf` last).
    pub buckets: BTreeMap<u64, f64>,
}

/// Reads the totals of `direction` (`inbound` or `outbound`) from a `/metrics` body.
pub fn parse(text: &str, direction: &str) -> Result<Totals, String> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape =
        prometheus_parse::Scrape::parse(lines).map_err(|e| format!("not Prometheus text: {e}"))?;
    let mut t = Totals::default();
    for sample in scrape.samples {
        if sample.labels.get("direction") != Some(direction) {
            continue;
        }
        match (sample.metric.as_str(), &sample.value) {
            (
                REQUESTS,
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v),
            ) => {
                t.requests += v;
                if sample.labels.get("status_class") != Some("5xx") {
                    t.successes += v;
                }
            }
            (LATENCY, prometheus_parse::Value::Histogram(buckets)) => {
                for b in buckets {
                    if b.less_than >= 0.0 {
                        *t.buckets.entry(b.less_than.to_bits()).or_default() += b.count;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(t)
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.successes += other.successes;
        for (le, count) in &other.buckets {
            *self.buckets.entry(*le).or_default() += count;
        }
    }

    /// What grew from `earlier` to `self` on one proxy. A counter that went down means the
    /// proxy restarted in between: then everything it counted since is the growth.
    pub fn since(&self, earlier: &Totals) -> Totals {
        let reset = self.requests < earlier.requests
            || self
                .buckets
                .iter()
                .any(|(le, c)| *c < earlier.buckets.get(le).copied().unwrap_or(0.0));
        if reset {
            return self.clone();
        }
        Totals {
            requests: self.requests - earlier.requests,
            successes: (self.successes - earlier.successes).max(0.0),
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| (*le, c - earlier.buckets.get(le).copied().unwrap_or(0.0)))
                .collect(),
        }
    }

    /// The `q` quantile (0..=1) of the latency in seconds, interpolated linearly inside the
    /// bucket it falls in (as Prometheus does); the highest finite bound when it falls in
    /// `+Inf`; `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let buckets: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|(le, c)| (f64::from_bits(*le), *c))
            .collect();
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower = (0.0, 0.0);
        for (le, count) in &buckets {
            if *count >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = count - lower.1;
                if in_bucket <= 0.0 {
                    return Some(*le);
                }
                return Some(lower.0 + (le - lower.0) * (rank - lower.1) / in_bucket);
            }
            lower = (*le, *count);
        }
        Some(lower.0)
    }
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    /// Pods with a proxy whose metrics were read, of all pods.
    pub meshed: (usize, usize),
    /// The TrafficSplit weight of a backend.
    pub weight: Option<String>,
    /// The growth over the window, summed over the pods.
    pub growth: Totals,
    pub window: Duration,
}

impl Row {
    pub fn rps(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        self.growth.requests / secs
    }

    /// Successes over requests; `None` without requests.
    pub fn success_rate(&self) -> Option<f64> {
        (self.growth.requests > 0.0).then(|| self.growth.successes / self.growth.requests)
    }
}

fn latency(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.0}ms", (s * 1000.0).max(0.0)),
        Some(s) => format!("{s:.2}s"),
    }
}

/// The rows as an aligned table with a header.
pub fn table(rows: &[Row]) -> String {
    let show_weight = rows.iter().any(|r| r.weight.is_some());
    let mut lines: Vec<Vec<String>> = vec![{
        let mut h = vec!["NAME".to_string(), "MESHED".into()];
        if show_weight {
            h.push("WEIGHT".into());
        }
        h.extend(["SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P99"].map(String::from));
        h
    }];
    for r in rows {
        let mut l = vec![r.name.clone(), format!("{}/{}", r.meshed.0, r.meshed.1)];
        if show_weight {
            l.push(r.weight.clone().unwrap_or_else(|| "-".into()));
        }
        let has_traffic = r.growth.requests > 0.0;
        l.push(
            r.success_rate()
                .map_or("-".into(), |s| format!("{:.2}%", s * 100.0)),
        );
        l.push(if has_traffic {
            format!("{:.1}rps", r.rps())
        } else {
            "-".into()
        });
        l.push(latency(r.growth.quantile(0.5)));
        l.push(latency(r.growth.quantile(0.99)));
        lines.push(l);
    }
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in lines {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What prometheus-client writes for the proxy (abridged): counters with `_total`, and a
    /// histogram with cumulative buckets.
    fn metrics(ok: u64, errors: u64, buckets: &[(&str, u64)]) -> String {
        let mut s =
            String::from("# HELP smidge_requests HTTP requests.\n# TYPE smidge_requests counter\n");
        s.push_str(&format!(
            "smidge_requests_total{{direction=\"inbound\",authority=\"10.0.0.1:8080\",route=\"\",status_class=\"2xx\",src_identity=\"a\",dst_identity=\"b\",tls=\"true\"}} {ok}\n"
        ));
        s.push_str(&format!(
            "smidge_requests_total{{direction=\"inbound\",authority=\"10.0.0.1:8080\",route=\"\",status_class=\"5xx\",src_identity=\"a\",dst_identity=\"b\",tls=\"true\"}} {errors}\n"
        ));
        s.push_str("smidge_requests_total{direction=\"outbound\",authority=\"x\",route=\"\",status_class=\"2xx\",src_identity=\"a\",dst_identity=\"b\",tls=\"true\"} 1000\n");
        s.push_str("# HELP smidge_response_latency_seconds Time.\n# TYPE smidge_response_latency_seconds histogram\n");
        let total = buckets.last().map_or(0, |b| b.1);
        s.push_str(&format!(
            "smidge_response_latency_seconds_sum{{direction=\"inbound\",authority=\"10.0.0.1:8080\"}} 1.5\n\
             smidge_response_latency_seconds_count{{direction=\"inbound\",authority=\"10.0.0.1:8080\"}} {total}\n"
        ));
        for (le, c) in buckets {
            s.push_str(&format!(
                "smidge_response_latency_seconds_bucket{{le=\"{le}\",direction=\"inbound\",authority=\"10.0.0.1:8080\"}} {c}\n"
            ));
        }
        s.push_str("smidge_response_latency_seconds_bucket{le=\"+Inf\",direction=\"outbound\",authority=\"x\"} 1000\n# EOF\n");
        s
    }

    #[test]
    fn counts_one_direction_and_tells_5xx_from_success() {
        let t = parse(
            &metrics(90, 10, &[("0.001", 50), ("0.002", 90), ("+Inf", 100)]),
            "inbound",
        )
        .expect("parse");
        assert_eq!(t.requests, 100.0);
        assert_eq!(t.successes, 90.0);
        assert_eq!(t.buckets.len(), 3);
        assert_eq!(t.buckets.get(&f64::INFINITY.to_bits()), Some(&100.0));
    }

    #[test]
    fn rates_come_from_the_growth_between_samples() {
        let before = parse(
            &metrics(100, 0, &[("0.001", 100), ("+Inf", 100)]),
            "inbound",
        )
        .expect("before");
        let after = parse(
            &metrics(290, 10, &[("0.001", 200), ("0.002", 300), ("+Inf", 300)]),
            "inbound",
        )
        .expect("after");
        let growth = after.since(&before);
        assert_eq!(growth.requests, 200.0);
        assert_eq!(growth.successes, 190.0);
        let row = Row {
            name: "deploy/web".into(),
            meshed: (2, 2),
            weight: None,
            growth,
            window: Duration::from_secs(10),
        };
        assert_eq!(row.rps(), 20.0);
        assert_eq!(row.success_rate(), Some(0.95));
    }

    #[test]
    fn a_restarted_proxy_counts_from_zero() {
        let before = parse(&metrics(500, 0, &[("+Inf", 500)]), "inbound").expect("before");
        let after = parse(&metrics(7, 0, &[("+Inf", 7)]), "inbound").expect("after");
        assert_eq!(after.since(&before).requests, 7.0);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut t = Totals::default();
        for (le, c) in [
            (0.001, 50.0),
            (0.002, 90.0),
            (0.004, 100.0),
            (f64::INFINITY, 100.0),
        ] {
            t.buckets.insert(f64::to_bits(le), c);
        }
        // Rank 50 is the top of the first bucket.
        assert!((t.quantile(0.5).expect("p50") - 0.001).abs() < 1e-12);
        // Rank 99: 9 of the 10 observations in (0.002, 0.004].
        assert!((t.quantile(0.99).expect("p99") - 0.0038).abs() < 1e-12);
        // In the first bucket: from 0.
        assert!((t.quantile(0.1).expect("p10") - 0.0002).abs() < 1e-12);
        // Beyond every finite bound: the highest finite bound.
        let mut slow = Totals::default();
        slow.buckets.insert(f64::to_bits(0.001), 1.0);
        slow.buckets.insert(f64::INFINITY.to_bits(), 10.0);
        assert_eq!(slow.quantile(0.99), Some(0.001));
        assert_eq!(Totals::default().quantile(0.5), None);
    }

    #[test]
    fn sums_over_pods_add_buckets_of_the_same_bound() {
        let a = parse(&metrics(10, 0, &[("0.001", 10), ("+Inf", 10)]), "inbound").expect("a");
        let b = parse(&metrics(5, 5, &[("0.001", 2), ("+Inf", 10)]), "inbound").expect("b");
        let mut sum = Totals::default();
        sum.add(&a);
        sum.add(&b);
        assert_eq!(sum.requests, 20.0);
        assert_eq!(sum.successes, 15.0);
        assert_eq!(sum.buckets.get(&0.001f64.to_bits()), Some(&12.0));
        assert_eq!(sum.buckets.get(&f64::INFINITY.to_bits()), Some(&20.0));
    }

    #[test]
    fn the_table_aligns_and_shows_dashes_without_traffic() {
        let mut busy = Totals {
            requests: 50.0,
            successes: 49.0,
            ..Totals::default()
        };
        busy.buckets.insert(0.004f64.to_bits(), 50.0);
        busy.buckets.insert(f64::INFINITY.to_bits(), 50.0);
        let rows = [
            Row {
                name: "web-v1".into(),
                meshed: (1, 1),
                weight: Some("900".into()),
                growth: busy,
                window: Duration::from_secs(10),
            },
            Row {
                name: "web-v2".into(),
                meshed: (0, 1),
                weight: Some("100".into()),
                growth: Totals::default(),
                window: Duration::from_secs(10),
            },
        ];
        let want = "\
NAME     MESHED   WEIGHT   SUCCESS   RPS      LATENCY_P50   LATENCY_P99
web-v1   1/1      900      98.00%    5.0rps   2ms           4ms
web-v2   0/1      100      -         -        -             -
";
        assert_eq!(table(&rows), want);
    }
}
