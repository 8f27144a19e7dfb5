//! A mesh on one Linux machine without Kubernetes.
//!
//! Pure parts: [`objects`] (the objects users apply, validated and stored), [`workloads`]
//! (Deployments, the image → program table, which pods should exist), [`render`] (Pods,
//! EndpointSlices and the controller's manifests from the running pods), [`services`]
//! (kube-proxy's DNAT rules and the pods' hosts file). I/O: [`netns`] (a node namespace with a
//! bridge, pods as namespaces on it), [`mesh`] (a fixed set of pods with the real controller and
//! proxies, for tests and the demo), [`cluster`] and [`daemon`] (the cluster behind
//! `smidge local`), [`userns`] (the same as an ordinary user), [`apps`] (programs that stand in for container images).

#![forbid(unsafe_code)]

pub mod apps;
pub mod cluster;
pub mod daemon;
pub mod kube;
pub mod mesh;
pub mod netns;
pub mod node;
pub mod objects;
pub mod render;
pub mod services;
pub mod userns;
pub mod workloads;
