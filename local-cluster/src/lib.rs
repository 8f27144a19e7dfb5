//! A mesh on one Linux machine without Kubernetes.
//!
//! Built so far: [`netns`] (a node namespace with a bridge, pods as namespaces on it), [`mesh`]
//! (the real controller on the `file` provider and a real proxy with its `init` rules per pod) and
//! [`apps`] (programs that stand in for container images). Used by the end-to-end tests and
//! `smidge demo`. Not built yet: Services reachable by un-meshed clients (DNAT), names inside
//! pods, Deployments, and the kubectl-like `smidge local` commands.

pub mod apps;
pub mod mesh;
pub mod netns;
pub mod services;
