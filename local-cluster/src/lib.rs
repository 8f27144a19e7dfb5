//! A mesh on one Linux machine without Kubernetes.
//!
//! Built so far: [`netns`], a node network namespace with a bridge and "pods" (network
//! namespaces with a veth on that bridge), used by the end-to-end tests. The local cluster of
//! DESIGN.md (Services with kube-proxy-like DNAT, names, the demo) is not built yet.

pub mod netns;
