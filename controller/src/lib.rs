//! The smidge controller: reads SMI and Kubernetes objects from a provider, keeps them in a pure
//! [`index`], compiles per-proxy views with the pure [`compile`] functions, and pushes them to
//! proxies over the compact protocol of `smidge-protocol`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod compile;
pub mod convert;
pub mod core;
pub mod crds;
pub mod diagnose;
pub mod identity;
pub mod index;
pub mod inject;
pub mod labels;
pub mod lint;
pub mod manifest;
pub mod model;
pub mod provider;
pub mod push;
pub mod smi;
pub mod status;
pub mod webhook;
