//! The node agent: the local cluster's pod runtime as the kubelet and kube-proxy of one Node of a
//! real Kubernetes control plane (issue 12). Pure parts: [`images`] (image → program table),
//! [`plan`] (a Pod as the runtime runs it), [`lifecycle`] (what to start, restart or stop next),
//! [`probe`] (probe results → state), [`status`] (PodStatus from what runs), [`services`]
//! (kube-proxy's rules and the pods' hosts files from Services and EndpointSlices). I/O: [`logs`]
//! (the kubelet's log endpoint).

pub mod agent;
pub mod images;
pub mod kubelet;
pub mod lifecycle;
pub mod logs;
pub mod plan;
pub mod probe;
pub mod probing;
pub mod proxier;
pub mod registration;
pub mod runtime;
pub mod services;
pub mod shim;
pub mod status;
