//! Wire sizes the design promises: a one-endpoint view in a few hundred bytes at most, an endpoint
//! change in tens. Sizes are deterministic, so these are exact checks, not benchmarks.

use smidge_protocol::delta::Change;
use smidge_protocol::*;

fn one_endpoint_view() -> ServerMessage {
    let view = OutboundView {
        service: ServiceRef {
            namespace: "shop".into(),
            name: "checkout".into(),
            port: 8080,
        },
        routes: vec![Route {
            name: String::new(),
            matches: vec![],
            targets: vec![WeightedTarget {
                backend: 0,
                weight: 1,
            }],
        }],
        backends: vec![Backend {
            name: "checkout".into(),
            endpoints: vec![Endpoint {
                addr: "10.244.1.17:8080".parse().unwrap(),
                identity: Some(Identity::new("shop", "checkout")),
            }],
        }],
    };
    ServerMessage::View {
        key: ViewKey::Outbound("10.96.12.34:8080".parse().unwrap()),
        version: 1_795_000_000_000,
        update: ViewUpdate::Full(View::Outbound(view)),
    }
}

#[test]
fn a_one_endpoint_view_and_an_endpoint_add_fit_their_budgets() {
    let full = encode(&one_endpoint_view()).unwrap();
    let delta = encode(&ServerMessage::View {
        key: ViewKey::Outbound("10.96.12.34:8080".parse().unwrap()),
        version: 1_795_000_000_001,
        update: ViewUpdate::Delta {
            base: 1_795_000_000_000,
            changes: vec![Change::Upsert {
                backend: 0,
                endpoint: Endpoint {
                    addr: "10.244.2.9:8080".parse().unwrap(),
                    identity: Some(Identity::new("shop", "checkout")),
                },
            }],
        },
    })
    .unwrap();
    eprintln!(
        "one-endpoint view: {} bytes; endpoint-add delta: {} bytes (frame header included)",
        full.len(),
        delta.len()
    );
    assert!(full.len() <= 200, "{} bytes", full.len());
    assert!(delta.len() <= 64, "{} bytes", delta.len());
}
