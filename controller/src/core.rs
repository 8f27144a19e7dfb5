//! The Kubernetes core kinds smidge reads (Namespace, ServiceAccount, Service, EndpointSlice,
//! Endpoints, Pod), reduced to what the mesh needs.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::labels;
use crate::model::{
    Body, EndpointAddress, EndpointSet, Kind, Namespace, Pod, Service, ServicePort,
};
use crate::smi::{Finding, Findings};

/// Reads a core object of `api_version`/`kind`; `None` when smidge does not read that kind.
pub fn read(api_version: &str, kind: &str, value: Value) -> Option<Result<(Kind, Body), Findings>> {
    let result = match (api_version, kind) {
        ("v1", "Namespace") => typed::<core::Namespace>(value)
            .and_then(namespace)
            .map(|b| (Kind::Namespace, b)),
        ("v1", "ServiceAccount") => typed::<core::ServiceAccount>(value)
            .map(|_| (Kind::ServiceAccount, Body::ServiceAccount)),
        ("v1", "Service") => typed::<core::Service>(value)
            .and_then(service)
            .map(|b| (Kind::Service, b)),
        ("v1", "Endpoints") => typed::<core::Endpoints>(value)
            .and_then(endpoints)
            .map(|b| (Kind::Endpoints, b)),
        ("v1", "Pod") => typed::<core::Pod>(value)
            .and_then(pod)
            .map(|b| (Kind::Pod, b)),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed::<discovery::EndpointSlice>(value)
            .and_then(endpoint_slice)
            .map(|b| (Kind::EndpointSlice, b)),
        _ => return None,
    };
    Some(result)
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, Findings> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map_err(|e| Finding::new(e.path().to_string(), e.into_inner().to_string()).into())
}

fn ip(text: &str, field: &str) -> Result<IpAddr, Finding> {
    text.parse()
        .map_err(|_| Finding::new(field, format!("{text:?} is not an IP address")))
}

fn namespace(ns: core::Namespace) -> Result<Body, Findings> {
    let meta = &ns.metadata;
    let default_policy = match meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::DEFAULT_POLICY))
    {
        Some(v) => Some(v.parse().map_err(|e: String| {
            Finding::new(
                format!("metadata.annotations.{}", labels::DEFAULT_POLICY),
                e,
            )
        })?),
        None => None,
    };
    let enabled = |m: &Option<std::collections::BTreeMap<String, String>>| {
        m.as_ref()
            .and_then(|m| m.get(labels::INJECT))
            .is_some_and(|v| v == labels::INJECT_ENABLED)
    };
    Ok(Body::Namespace(Namespace {
        meshed: enabled(&meta.labels) || enabled(&meta.annotations),
        default_policy,
    }))
}

fn service(svc: core::Service) -> Result<Body, Findings> {
    let spec = svc.spec.unwrap_or_default();
    let mut errors = Findings::default();
    let mut cluster_ips = Vec::new();
    let ips = spec.cluster_ips.clone().unwrap_or_default();
    let ips = if ips.is_empty() {
        spec.cluster_ip.clone().into_iter().collect()
    } else {
        ips
    };
    for (i, text) in ips.iter().enumerate() {
        if text == "None" || text.is_empty() {
            continue;
        }
        match ip(text, &format!("spec.clusterIPs[{i}]")) {
            Ok(addr) => cluster_ips.push(addr),
            Err(f) => errors.push(f),
        }
    }
    let mut ports = Vec::new();
    for (i, p) in spec.ports.unwrap_or_default().into_iter().enumerate() {
        match u16::try_from(p.port) {
            Ok(port) if port > 0 => ports.push(ServicePort {
                name: p.name.unwrap_or_default(),
                port,
                protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
            }),
            _ => errors.push(Finding::new(
                format!("spec.ports[{i}].port"),
                format!("{} is not a port number", p.port),
            )),
        }
    }
    errors.into_result(Body::Service(Service { cluster_ips, ports }))
}

fn endpoint_slice(slice: discovery::EndpointSlice) -> Result<Body, Findings> {
    let mut errors = Findings::default();
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/service-name"))
        .cloned()
        .unwrap_or_default();
    if service.is_empty() {
        errors.push(Finding::new(
            "metadata.labels.kubernetes.io/service-name",
            "an EndpointSlice must name its Service in this label",
        ));
    }
    let ports = slice
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| Some((p.name.unwrap_or_default(), u16::try_from(p.port?).ok()?)))
        .collect();
    let mut endpoints = Vec::new();
    for (i, ep) in slice.endpoints.iter().flatten().enumerate() {
        // Kubernetes: an unknown readiness counts as ready.
        let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        let pod = ep
            .target_ref
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .and_then(|r| r.name.clone());
        for (j, addr) in ep.addresses.iter().enumerate() {
            match ip(addr, &format!("endpoints[{i}].addresses[{j}]")) {
                Ok(ip) => endpoints.push(EndpointAddress {
                    ip,
                    ready,
                    pod: pod.clone(),
                }),
                Err(f) => errors.push(f),
            }
        }
    }
    errors.into_result(Body::Endpoints(EndpointSet {
        service,
        ports,
        endpoints,
    }))
}

fn endpoints(eps: core::Endpoints) -> Result<Body, Findings> {
    let mut errors = Findings::default();
    let service = eps.metadata.name.clone().unwrap_or_default();
    let mut set = EndpointSet {
        service,
        ..Default::default()
    };
    for (i, subset) in eps.subsets.unwrap_or_default().into_iter().enumerate() {
        for p in subset.ports.unwrap_or_default() {
            if let Ok(port) = u16::try_from(p.port) {
                if !set
                    .ports
                    .iter()
                    .any(|(n, _)| *n == p.name.clone().unwrap_or_default())
                {
                    set.ports.push((p.name.unwrap_or_default(), port));
                }
            }
        }
        let lists = [
            (subset.addresses.unwrap_or_default(), true),
            (subset.not_ready_addresses.unwrap_or_default(), false),
        ];
        for (list, ready) in lists {
            for (j, a) in list.into_iter().enumerate() {
                let pod = a
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| r.name.clone());
                match ip(&a.ip, &format!("subsets[{i}].addresses[{j}].ip")) {
                    Ok(ip) => set.endpoints.push(EndpointAddress { ip, ready, pod }),
                    Err(f) => errors.push(f),
                }
            }
        }
    }
    errors.into_result(Body::Endpoints(set))
}

fn pod(pod: core::Pod) -> Result<Body, Findings> {
    let mut errors = Findings::default();
    let spec = pod.spec.unwrap_or_default();
    let status = pod.status.unwrap_or_default();
    let mut ips = Vec::new();
    let texts: Vec<String> = match status.pod_ips {
        Some(list) if !list.is_empty() => list.into_iter().map(|p| p.ip).collect(),
        _ => status.pod_ip.into_iter().collect(),
    };
    for (i, text) in texts.iter().enumerate() {
        match ip(text, &format!("status.podIPs[{i}]")) {
            Ok(a) => ips.push(a),
            Err(f) => errors.push(f),
        }
    }
    // The injector's label says the pod has a proxy, whatever its annotations asked for: the
    // kubernetes provider watches only such pods, so every pod it knows is meshed.
    let injected = pod
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(labels::MESHED));
    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::INJECT))
        .map(String::as_str);
    let inject = match annotation {
        _ if injected => Some(true),
        Some(labels::INJECT_ENABLED) => Some(true),
        Some(labels::INJECT_DISABLED) => Some(false),
        Some(other) => {
            errors.push(Finding::new(
                format!("metadata.annotations.{}", labels::INJECT),
                format!(
                    "{other:?} is neither {:?} nor {:?}",
                    labels::INJECT_ENABLED,
                    labels::INJECT_DISABLED
                ),
            ));
            None
        }
        None => None,
    };
    errors.into_result(Body::Pod(Pod {
        service_account: spec
            .service_account_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        ips,
        inject,
    }))
}
