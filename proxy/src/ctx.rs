//! What every connection handler shares.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use smidge_protocol::Identity;
use tokio::sync::watch;

use crate::balance::Loads;
use crate::discovery::{Discovery, ViewState};
use crate::http::pool::Pool;
use crate::identity::MeshIdentity;
use crate::inbound::identity::PeerIdentity;
use crate::metrics::Metrics;

/// Settings of the data path.
#[derive(Clone, Debug)]
pub struct Settings {
    pub detect_timeout: Duration,
    pub detect_max_bytes: usize,
    /// Ports whose connections skip protocol detection (server-speaks-first protocols).
    pub opaque_ports: BTreeSet<u16>,
    /// How long a first connection to a destination waits for the controller's answer.
    pub discovery_wait: Duration,
    pub connect_timeout: Duration,
    /// An opaque TCP connection idle both ways for this long is closed (`None`: never).
    pub tcp_idle_timeout: Option<Duration>,
    /// This proxy's inbound port: a connection addressed to it is a peer proxy's opaque mTLS.
    pub inbound_port: u16,
    /// The inbound port of peer proxies.
    pub peer_inbound_port: u16,
    /// This proxy's listening ports: never a destination it forwards to.
    pub own_ports: crate::inbound::guard::OwnPorts,
}

/// Shared state of the proxy.
pub struct Ctx {
    pub settings: Settings,
    /// The workload this proxy stands beside.
    pub identity: Identity,
    /// How metrics name `identity`: its SPIFFE ID with mTLS, else `ns/sa`. Made once.
    pub identity_label: String,
    /// mTLS material; `None` when the mesh runs without identity.
    pub mesh: Option<Arc<MeshIdentity>>,
    pub discovery: Discovery,
    pub pool: Arc<Pool>,
    pub loads: Loads,
    pub metrics: Arc<Metrics>,
    pub peers: Arc<dyn PeerIdentity>,
    /// The inbound policy of this workload.
    pub policy: watch::Receiver<ViewState>,
    /// The apps' probes the kubelet asks this proxy to make.
    pub app_probes: crate::app_probe::AppProbes,
}
