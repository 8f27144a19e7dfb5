//! Property tests: decoding never panics, messages round-trip, deltas reproduce the new view.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use proptest::prelude::*;
use smidge_protocol::delta::{apply, diff};
use smidge_protocol::*;

fn identity() -> impl Strategy<Value = Identity> {
    ("[a-z]{1,8}", "[a-z]{1,8}").prop_map(|(n, s)| Identity::new(n, s))
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (any::<[u8; 4]>(), 1u16.., proptest::option::of(identity())).prop_map(|(ip, port, identity)| {
        Endpoint {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port),
            identity,
        }
    })
}

fn backend() -> impl Strategy<Value = Backend> {
    ("[a-z]{1,6}", proptest::collection::vec(endpoint(), 0..6)).prop_map(|(name, mut endpoints)| {
        endpoints.sort_by_key(|e| e.addr);
        endpoints.dedup_by_key(|e| e.addr);
        Backend { name, endpoints }
    })
}

fn outbound() -> impl Strategy<Value = OutboundView> {
    proptest::collection::vec(backend(), 1..4).prop_map(|backends| OutboundView {
        service: ServiceRef {
            namespace: "ns".into(),
            name: "svc".into(),
            port: 80,
        },
        routes: vec![Route {
            name: String::new(),
            matches: vec![],
            targets: (0..backends.len() as u16)
                .map(|b| WeightedTarget {
                    backend: b,
                    weight: 1,
                })
                .collect(),
        }],
        backends,
    })
}

proptest! {
    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<ClientMessage>(&bytes, MAX_FRAME_LEN);
        let _ = decode::<ServerMessage>(&bytes, MAX_FRAME_LEN);
    }

    #[test]
    fn decoding_a_valid_header_with_random_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let _ = decode::<ServerMessage>(&frame, MAX_FRAME_LEN);
        let _ = decode::<ClientMessage>(&frame, MAX_FRAME_LEN);
    }

    #[test]
    fn views_round_trip(view in outbound(), version in any::<u64>()) {
        let msg = ServerMessage::View {
            key: ViewKey::Outbound("10.0.0.1:80".parse().unwrap()),
            version,
            update: ViewUpdate::Full(View::Outbound(view)),
        };
        let frame = encode(&msg).unwrap();
        let (back, used) = decode::<ServerMessage>(&frame, MAX_FRAME_LEN).unwrap().unwrap();
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn a_diff_applied_to_the_old_view_gives_the_new_one(old in outbound(), new_backends in proptest::collection::vec(backend(), 1..4)) {
        let mut new = old.clone();
        for (b, nb) in new.backends.iter_mut().zip(new_backends) {
            b.endpoints = nb.endpoints;
        }
        let changes = diff(&old, &new).expect("only endpoints differ");
        prop_assert_eq!(apply(&old, &changes).unwrap(), new);
    }
}

#[test]
fn an_oversized_length_is_refused_before_reading_the_body() {
    let frame = u32::MAX.to_be_bytes();
    let err = decode::<ClientMessage>(&frame, MAX_FRAME_LEN).unwrap_err();
    assert!(matches!(err, CodecError::TooLarge { .. }), "{err}");
}

#[test]
fn a_partial_frame_waits_for_more() {
    let frame = encode(&ClientMessage::Subscribe(ViewKey::Outbound(
        "10.0.0.1:80".parse().unwrap(),
    )))
    .unwrap();
    for cut in 0..frame.len() {
        assert!(decode::<ClientMessage>(&frame[..cut], MAX_FRAME_LEN)
            .unwrap()
            .is_none());
    }
}

#[test]
fn trailing_bytes_inside_a_frame_are_refused() {
    let body = postcard::to_stdvec(&ClientMessage::Unsubscribe(ViewKey::Inbound(
        Identity::new("a", "b"),
    )))
    .unwrap();
    let mut frame = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame.push(0);
    assert!(matches!(
        decode::<ClientMessage>(&frame, MAX_FRAME_LEN),
        Err(CodecError::Trailing(1))
    ));
}

#[test]
fn a_delta_against_a_missing_endpoint_is_refused() {
    let view = OutboundView {
        service: ServiceRef {
            namespace: "ns".into(),
            name: "svc".into(),
            port: 80,
        },
        routes: vec![],
        backends: vec![Backend {
            name: "svc".into(),
            endpoints: vec![],
        }],
    };
    let changes = [smidge_protocol::delta::Change::Remove {
        backend: 0,
        addr: "10.0.0.9:80".parse().unwrap(),
    }];
    assert!(apply(&view, &changes).is_err());
    let changes = [smidge_protocol::delta::Change::Remove {
        backend: 7,
        addr: "10.0.0.9:80".parse().unwrap(),
    }];
    assert!(apply(&view, &changes).is_err());
}

#[test]
fn validation_refuses_out_of_range_backends_and_zero_weights() {
    let mut view = OutboundView {
        service: ServiceRef {
            namespace: "ns".into(),
            name: "svc".into(),
            port: 80,
        },
        routes: vec![Route {
            name: "r".into(),
            matches: vec![],
            targets: vec![WeightedTarget {
                backend: 1,
                weight: 1,
            }],
        }],
        backends: vec![Backend {
            name: "svc".into(),
            endpoints: vec![],
        }],
    };
    assert!(View::Outbound(view.clone()).validate().is_err());
    view.routes[0].targets[0] = WeightedTarget {
        backend: 0,
        weight: 0,
    };
    assert!(View::Outbound(view.clone()).validate().is_err());
    view.routes[0].targets[0].weight = 3;
    assert!(View::Outbound(view).validate().is_ok());
}
