//! smidge-proxy: the micro-proxy beside each meshed pod.
//!
//! ```text
//! app ──► iptables ──► outbound listener ─ detect ─┬─ HTTP: route → split → P2C ─► peer proxy
//!                                                   └─ TCP:  split → P2C ─────────► peer proxy
//! peer ─► iptables ──► inbound listener ─ identify ─ detect ─ authorize ──────────► app (pod IP)
//!                      discovery ◄──── views ──── controller        admin: /metrics /ready /views
//! ```

#![forbid(unsafe_code)]

pub mod admin;
pub mod app_probe;
pub mod balance;
pub mod ctx;
pub mod discovery;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod init;
pub mod metrics;
pub mod net;
pub mod outbound;
pub mod run;
pub mod tcp;
pub mod views;
