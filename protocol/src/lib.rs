//! The controller ↔ proxy protocol of smidge.
//!
//! A proxy holds one long-lived connection to the controller. Frames are length-delimited
//! (a 4-byte big-endian length, then a postcard-encoded message). The proxy says [`Hello`],
//! subscribes to the views it needs, and the controller answers each subscription with the
//! current view and then only its changes (full views, or endpoint deltas). The proxy acks or
//! nacks every version it receives.
//!
//! This crate also holds the pure rules both sides must agree on: HTTP route matching
//! ([`matching`]) and the authorization decision ([`authz`]).
//!
//! [`Hello`]: message::ClientMessage::Hello

#![forbid(unsafe_code)]

pub mod authz;
pub mod codec;
pub mod delta;
pub mod matching;
pub mod message;
pub mod names;
pub mod path;
pub mod probes;
pub mod view;

pub use codec::{
    decode, encode, CodecError, Encoded, FrameCodec, MAX_CLIENT_FRAME_LEN, MAX_FRAME_LEN,
    MAX_HELLO_LEN,
};
pub use message::{ClientMessage, ProxyId, ServerMessage, ViewUpdate, PROTOCOL_VERSION};
pub use view::{
    Authorization, Backend, DefaultPolicy, Endpoint, HttpMatch, Identity, InboundView,
    OutboundView, PeerView, PortRule, Route, ServiceRef, View, ViewKey, WeightedTarget,
};
