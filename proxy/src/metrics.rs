//! The proxy's Prometheus metrics.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of one HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: &'static str,
    /// The Service (outbound) or the original destination (inbound) the request went to.
    pub authority: String,
    /// The TrafficSplit route (outbound) or the TrafficTarget that admitted it (inbound).
    pub route: String,
    pub status_class: &'static str,
    pub src_identity: String,
    pub dst_identity: String,
    pub tls: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub direction: &'static str,
    pub authority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub direction: &'static str,
    pub authority: String,
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenyLabels {
    pub reason: &'static str,
    pub src_identity: String,
    /// From [`PortLabels::label`]: bounded.
    pub port: String,
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewLabels {
    pub key: String,
}

/// The authority label of traffic to destinations outside the mesh: one label set for all of
/// them, however many addresses the app dials (each would otherwise add series for good).
pub const PASSTHROUGH_AUTHORITY: &str = "passthrough";
/// The port label shared by ports seen after [`MAX_PORT_LABELS`] others.
pub const OTHER_PORT: &str = "other";
/// Distinct ports that get a label of their own on the inbound side.
pub const MAX_PORT_LABELS: usize = 32;

/// Bounds the inbound port labels: a caller can reach any of 65,535 ports, so only the first
/// [`MAX_PORT_LABELS`] distinct ones are named; later ones are labelled [`OTHER_PORT`].
#[derive(Debug, Default)]
pub struct PortLabels {
    named: Mutex<BTreeSet<u16>>,
}

impl PortLabels {
    /// The port's label: itself if named (or room is left to name it), else `other`.
    pub fn label(&self, port: u16) -> String {
        let Ok(mut named) = self.named.lock() else {
            return OTHER_PORT.to_string();
        };
        if named.contains(&port) || named.len() < MAX_PORT_LABELS {
            named.insert(port);
            port.to_string()
        } else {
            OTHER_PORT.to_string()
        }
    }
}

type LatencyFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

/// Every metric the proxy exports.
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: LatencyFamily,
    pub tcp_opened: Family<TcpLabels, Counter>,
    pub tcp_closed: Family<TcpLabels, Counter>,
    pub tcp_open: Family<TcpLabels, Gauge>,
    pub tcp_read_bytes: Family<TcpLabels, Counter>,
    pub tcp_write_bytes: Family<TcpLabels, Counter>,
    pub denied: Family<DenyLabels, Counter>,
    pub view_version: Family<ViewLabels, Gauge>,
    pub view_age: Family<ViewLabels, Gauge<f64, AtomicU64>>,
    pub controller_connected: Gauge,
    pub cert_expiry: Gauge,
    pub cert_renewals: Counter,
    pub cert_failures: Counter,
    /// Which inbound ports are named in labels.
    pub ports: PortLabels,
    pub registry: Registry,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("smidge");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            tcp_open: Family::default(),
            tcp_read_bytes: Family::default(),
            tcp_write_bytes: Family::default(),
            denied: Family::default(),
            view_version: Family::default(),
            view_age: Family::default(),
            controller_connected: Gauge::default(),
            cert_expiry: Gauge::default(),
            cert_renewals: Counter::default(),
            cert_failures: Counter::default(),
            ports: PortLabels::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "HTTP requests that got a response, by direction, authority, route, status class, identities and TLS",
            m.requests.clone(),
        );
        registry.register(
            "response_latency_seconds",
            "Time from request to response headers",
            m.latency.clone(),
        );
        registry.register(
            "tcp_opened",
            "TCP connections accepted",
            m.tcp_opened.clone(),
        );
        registry.register("tcp_closed", "TCP connections closed", m.tcp_closed.clone());
        registry.register(
            "tcp_open_connections",
            "TCP connections open now",
            m.tcp_open.clone(),
        );
        registry.register(
            "tcp_read_bytes",
            "Bytes read from the client side of closed TCP connections",
            m.tcp_read_bytes.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Bytes written to the client side of closed TCP connections",
            m.tcp_write_bytes.clone(),
        );
        registry.register(
            "authz_denied",
            "Inbound requests and connections the authorization policy refused",
            m.denied.clone(),
        );
        registry.register(
            "view_version",
            "The version of each subscribed view",
            m.view_version.clone(),
        );
        registry.register(
            "view_age_seconds",
            "Seconds since each subscribed view last changed",
            m.view_age.clone(),
        );
        registry.register(
            "controller_connected",
            "1 while connected to the controller",
            m.controller_connected.clone(),
        );
        registry.register(
            "identity_cert_expiry_timestamp_seconds",
            "When the proxy's certificate expires (Unix seconds; 0 without one)",
            m.cert_expiry.clone(),
        );
        registry.register(
            "identity_certificates",
            "Certificates received from the controller",
            m.cert_renewals.clone(),
        );
        registry.register(
            "identity_certificate_failures",
            "Certificate requests refused or unusable",
            m.cert_failures.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The authority label of inbound traffic to `dst` (this pod's address): port bounded.
    pub fn inbound_authority(&self, dst: SocketAddr) -> String {
        format!("{}:{}", dst.ip(), self.ports.label(dst.port()))
    }

    pub fn observe_latency(&self, direction: &'static str, authority: &str, d: Duration) {
        self.latency
            .get_or_create(&LatencyLabels {
                direction,
                authority: authority.to_string(),
            })
            .observe(d.as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `2xx`, `4xx`, ... for a status code.
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_labels_stay_bounded() {
        let ports = PortLabels::default();
        let labels: BTreeSet<String> = (20_000..21_000).map(|p| ports.label(p)).collect();
        assert_eq!(labels.len(), MAX_PORT_LABELS + 1);
        assert!(labels.contains(OTHER_PORT));
        // A port named once keeps its label.
        assert_eq!(ports.label(20_000), "20000");
        assert_eq!(ports.label(20_999), OTHER_PORT);
    }
}
