//! Pushing views to proxies: the [`registry`] of subscribed views and the [`server`] that speaks
//! the protocol on each proxy connection.

pub mod registry;
pub mod server;
