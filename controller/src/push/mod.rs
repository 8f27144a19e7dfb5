//! Pushing views to proxies: the [`registry`] of subscribed views and the [`server`] that speaks
//! the protocol on each proxy connection, with the checks it applies: [`hello`] names,
//! [`authorize`]d subscriptions and per-connection [`limits`]; the [`connected`] proxies and
//! what they acknowledged.

pub mod authorize;
pub mod connected;
pub mod hello;
pub mod limits;
pub mod registry;
pub mod server;
