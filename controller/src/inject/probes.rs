//! Moves the apps' HTTP and TCP probes to the proxy's admin port (see
//! [`smidge_protocol::probes`]): each probe the kubelet would send to the app now asks the proxy,
//! which checks the app directly. Probes this cannot carry (HTTPS, gRPC, another host, a port
//! name the container does not declare, a path that is not a URI path) and probes of ports that
//! skip the proxy are left as they are; exec probes never meet the proxy.

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use smidge_protocol::probes::{path, AppProbe, AppProbes};

/// Rewrites the probes of `spec`'s app containers to `admin_port` (and of its user sidecars when
/// `sidecars`: only a proxy that is itself a native sidecar starts before them), returning what
/// the proxy must check for each. Probes of `skip_inbound` ports reach the app directly anyway
/// and stay. Call before adding the proxy's own containers.
pub fn rewrite(
    spec: &mut PodSpec,
    admin_port: u16,
    skip_inbound: &[u16],
    sidecars: bool,
) -> AppProbes {
    let mut out = AppProbes::new();
    let sidecars = spec
        .init_containers
        .iter_mut()
        .flatten()
        .filter(|c| sidecars && c.restart_policy.as_deref() == Some("Always"));
    for c in spec.containers.iter_mut().chain(sidecars) {
        let Container {
            name,
            ports,
            readiness_probe,
            liveness_probe,
            startup_probe,
            ..
        } = c;
        for (kind, probe) in [
            ("readiness", readiness_probe),
            ("liveness", liveness_probe),
            ("startup", startup_probe),
        ] {
            let Some(probe) = probe.as_mut() else {
                continue;
            };
            let Some(check) = original(probe, ports.as_deref().unwrap_or_default()) else {
                continue;
            };
            if skip_inbound.contains(&check.port) {
                continue;
            }
            let key = path(name, kind);
            probe.tcp_socket = None;
            probe.http_get = Some(HTTPGetAction {
                path: Some(key.clone()),
                port: IntOrString::Int(i32::from(admin_port)),
                ..HTTPGetAction::default()
            });
            out.insert(key, check);
        }
    }
    out
}

/// The check `probe` makes, if the proxy can make it for the kubelet.
fn original(
    probe: &Probe,
    ports: &[k8s_openapi::api::core::v1::ContainerPort],
) -> Option<AppProbe> {
    let port = |p: &IntOrString| -> Option<u16> {
        match p {
            IntOrString::Int(n) => u16::try_from(*n).ok().filter(|n| *n != 0),
            IntOrString::String(name) => ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok()),
        }
    };
    let timeout_seconds = probe
        .timeout_seconds
        .and_then(|t| u32::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(1);
    let no_host = |h: &Option<String>| h.as_deref().unwrap_or_default().is_empty();
    if let Some(get) = &probe.http_get {
        let plain = get
            .scheme
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case("HTTP"));
        if !plain || !no_host(&get.host) {
            return None;
        }
        // As the kubelet's URL does: a path without its leading slash gets one.
        let path = match get.path.as_deref().unwrap_or_default() {
            "" => "/".to_string(),
            p if p.starts_with('/') => p.to_string(),
            p => format!("/{p}"),
        };
        path.parse::<http::uri::PathAndQuery>().ok()?;
        return Some(AppProbe {
            port: port(&get.port)?,
            http_path: Some(path),
            headers: get
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            timeout_seconds,
        });
    }
    if let Some(tcp) = &probe.tcp_socket {
        if !no_host(&tcp.host) {
            return None;
        }
        return Some(AppProbe {
            port: port(&tcp.port)?,
            http_path: None,
            headers: Vec::new(),
            timeout_seconds,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> PodSpec {
        serde_json::from_value(json).expect("a pod spec")
    }

    #[test]
    fn http_and_tcp_probes_move_to_the_admin_port_and_keep_their_timing() {
        let mut s = spec(serde_json::json!({"containers": [{
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http",
                "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "periodSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 3},
            "startupProbe": {"exec": {"command": ["true"]}}
        }]}));
        let probes = rewrite(&mut s, 4191, &[], true);
        let web = &s.containers[0];
        let ready = web.readiness_probe.as_ref().expect("readiness");
        let get = ready.http_get.as_ref().expect("httpGet");
        assert_eq!(get.path.as_deref(), Some("/app-probe/web/readiness"));
        assert_eq!(get.port, IntOrString::Int(4191));
        assert!(get.http_headers.is_none());
        assert_eq!(ready.period_seconds, Some(2));
        let live = web.liveness_probe.as_ref().expect("liveness");
        assert!(live.tcp_socket.is_none());
        assert_eq!(
            live.http_get.as_ref().and_then(|g| g.path.as_deref()),
            Some("/app-probe/web/liveness")
        );
        assert_eq!(live.timeout_seconds, Some(3));
        // exec probes stay.
        assert!(web.startup_probe.as_ref().expect("startup").exec.is_some());
        assert_eq!(
            probes["/app-probe/web/readiness"],
            AppProbe {
                port: 8080,
                http_path: Some("/ready".into()),
                headers: vec![("X-Probe".into(), "1".into())],
                timeout_seconds: 1
            }
        );
        assert_eq!(
            probes["/app-probe/web/liveness"],
            AppProbe {
                port: 8080,
                http_path: None,
                headers: vec![],
                timeout_seconds: 3
            }
        );
        assert_eq!(probes.len(), 2);
    }

    #[test]
    fn probes_the_proxy_cannot_make_are_left_alone() {
        let original = spec(serde_json::json!({"containers": [{
            "name": "web",
            "readinessProbe": {"httpGet": {"path": "/", "port": 8443, "scheme": "HTTPS"}},
            "livenessProbe": {"httpGet": {"path": "/", "port": "undeclared"}},
            "startupProbe": {"tcpSocket": {"port": 53, "host": "10.0.0.1"}}
        }]}));
        let mut s = original.clone();
        assert!(rewrite(&mut s, 4191, &[], true).is_empty());
        assert_eq!(s, original);
    }

    #[test]
    fn paths_get_their_slash_and_skipped_ports_keep_their_probes() {
        let mut s = spec(serde_json::json!({"containers": [{
            "name": "web",
            "readinessProbe": {"httpGet": {"path": "healthz?full=1", "port": 8080}},
            "livenessProbe": {"tcpSocket": {"port": 9000}},
            "startupProbe": {"httpGet": {"path": "/a b", "port": 8080}}
        }]}));
        let probes = rewrite(&mut s, 4191, &[9000], true);
        assert_eq!(
            probes.keys().collect::<Vec<_>>(),
            ["/app-probe/web/readiness"]
        );
        assert_eq!(
            probes["/app-probe/web/readiness"].http_path.as_deref(),
            Some("/healthz?full=1")
        );
        let web = &s.containers[0];
        assert!(web
            .liveness_probe
            .as_ref()
            .expect("liveness")
            .tcp_socket
            .is_some());
        assert_eq!(
            web.startup_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|g| g.path.as_deref()),
            Some("/a b"),
            "not a URI path: left to the kubelet"
        );
    }

    #[test]
    fn user_sidecars_are_covered_and_plain_init_containers_are_not() {
        let mut s = spec(serde_json::json!({
            "initContainers": [
                {"name": "setup", "readinessProbe": {"tcpSocket": {"port": 1}}},
                {"name": "agent", "restartPolicy": "Always",
                 "readinessProbe": {"httpGet": {"port": 9000}}}
            ],
            "containers": [{"name": "web"}]
        }));
        let probes = rewrite(&mut s, 4191, &[], true);
        assert_eq!(
            probes.keys().collect::<Vec<_>>(),
            ["/app-probe/agent/readiness"]
        );
        assert_eq!(
            probes["/app-probe/agent/readiness"].http_path.as_deref(),
            Some("/")
        );
        // Without a native-sidecar proxy, user sidecars start before it: their probes stay.
        let mut s = spec(serde_json::json!({
            "initContainers": [{"name": "agent", "restartPolicy": "Always",
                 "readinessProbe": {"httpGet": {"port": 9000}}}],
            "containers": [{"name": "web"}]
        }));
        assert!(rewrite(&mut s, 4191, &[], false).is_empty());
    }
}
