//! The injector's settings: the `inject.json` key of ConfigMap `smidge-config`, rendered by the
//! chart (camelCase, the contract's keys). Every key has the chart's default, so `{}` is a valid
//! file; a wrong type or value is an error naming the field; unknown keys are returned so the
//! caller can warn about them (a newer chart may add keys this controller does not know).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything the injector needs besides the trust anchor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    /// The namespace of the control plane; injected pods get the label
    /// `smidge.io/control-plane-ns` with this value.
    pub control_plane_namespace: String,
    /// Where proxies reach the controller: `host:port` (resolved by the proxy at each connect).
    pub controller_address: String,
    /// The DNS name in the controller's certificate, which proxies check.
    pub controller_name: String,
    pub trust_domain: String,
    /// The audience of the projected ServiceAccount token proxies present to the controller.
    pub token_audience: String,
    pub proxy: Proxy,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            control_plane_namespace: "smidge-system".into(),
            controller_address: "smidge-controller.smidge-system.svc.cluster.local:8086".into(),
            controller_name: "smidge-controller".into(),
            trust_domain: "cluster.local".into(),
            token_audience: "smidge-identity".into(),
            proxy: Proxy::default(),
        }
    }
}

/// `.Values.proxy` of the chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Proxy {
    pub image: Image,
    /// The proxy's uid; the iptables rules exempt its connections.
    pub uid: i64,
    /// The uid of the init container (non-root: it needs only NET_ADMIN and NET_RAW).
    pub init_uid: i64,
    /// The proxy's log filter (`RUST_LOG`).
    pub log_level: String,
    pub ports: Ports,
    pub resources: Resources,
    /// Ports whose connections skip protocol detection; empty keeps the proxy's own list.
    pub opaque_ports: Vec<u16>,
    pub skip_inbound_ports: Vec<u16>,
    pub skip_outbound_ports: Vec<u16>,
    #[serde(rename = "skipOutboundCIDRs")]
    pub skip_outbound_cidrs: Vec<String>,
    /// The proxy as an init container with `restartPolicy: Always` (Kubernetes ≥ 1.29); false:
    /// the first of the pod's containers.
    pub native_sidecar: bool,
    /// Serve `/metrics` on the admin port (pod IP), for Prometheus.
    pub metrics_public: bool,
    /// Appended to the proxy's `run` arguments.
    pub extra_args: Vec<String>,
}

impl Default for Proxy {
    fn default() -> Proxy {
        Proxy {
            image: Image::default(),
            uid: 2102,
            init_uid: 65534,
            log_level: "info".into(),
            ports: Ports::default(),
            resources: Resources::default(),
            opaque_ports: Vec::new(),
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_outbound_cidrs: Vec::new(),
            native_sidecar: true,
            metrics_public: true,
            extra_args: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Image {
    pub repository: String,
    /// Empty: this build's version (the chart renders its appVersion instead).
    pub tag: String,
    pub pull_policy: String,
}

impl Default for Image {
    fn default() -> Image {
        Image {
            repository: "ghcr.io/smidge-mesh/smidge-proxy".into(),
            tag: String::new(),
            pull_policy: "IfNotPresent".into(),
        }
    }
}

impl Image {
    /// `repository:tag`.
    pub fn reference(&self) -> String {
        let tag = if self.tag.is_empty() {
            env!("CARGO_PKG_VERSION")
        } else {
            &self.tag
        };
        format!("{}:{tag}", self.repository)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Ports {
    pub inbound: u16,
    pub outbound: u16,
    pub admin: u16,
}

impl Default for Ports {
    fn default() -> Ports {
        Ports {
            inbound: 4143,
            outbound: 4140,
            admin: 4191,
        }
    }
}

/// Requests and limits by resource name (`cpu`, `memory`), as quantities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Resources {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

impl Default for Resources {
    fn default() -> Resources {
        Resources {
            requests: [("cpu", "10m"), ("memory", "16Mi")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            limits: [("memory".to_string(), "128Mi".to_string())].into(),
        }
    }
}

/// A settings file that cannot be used: the field (a JSON path) and why.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {message}")]
pub struct SettingsError {
    pub field: String,
    pub message: String,
}

impl SettingsError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> SettingsError {
        SettingsError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses `inject.json`: the settings and the paths of keys it did not know.
pub fn parse(text: &str) -> Result<(Settings, Vec<String>), SettingsError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| SettingsError::new("(file)", format!("not JSON: {e}")))?;
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(value, &mut note);
    let settings: Settings = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        SettingsError::new(field, e.into_inner().to_string())
    })?;
    settings.validate()?;
    Ok((settings, unknown))
}

impl Settings {
    /// Checks the values serde cannot: non-empty names, non-zero distinct ports, CIDRs,
    /// quantities, a host:port address.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let non_empty = |field: &str, v: &str| {
            if v.trim().is_empty() {
                Err(SettingsError::new(field, "must not be empty"))
            } else {
                Ok(())
            }
        };
        non_empty("controlPlaneNamespace", &self.control_plane_namespace)?;
        non_empty("controllerName", &self.controller_name)?;
        non_empty("trustDomain", &self.trust_domain)?;
        non_empty("tokenAudience", &self.token_audience)?;
        non_empty("proxy.image.repository", &self.proxy.image.repository)?;
        non_empty("proxy.logLevel", &self.proxy.log_level)?;
        host_port(&self.controller_address)
            .map_err(|m| SettingsError::new("controllerAddress", m))?;
        if !matches!(
            self.proxy.image.pull_policy.as_str(),
            "Always" | "IfNotPresent" | "Never"
        ) {
            return Err(SettingsError::new(
                "proxy.image.pullPolicy",
                format!(
                    "{:?} is not Always, IfNotPresent or Never",
                    self.proxy.image.pull_policy
                ),
            ));
        }
        for (field, uid) in [
            ("proxy.uid", self.proxy.uid),
            ("proxy.initUid", self.proxy.init_uid),
        ] {
            if !(1..=i64::from(u32::MAX)).contains(&uid) {
                return Err(SettingsError::new(
                    field,
                    format!("{uid} is not a non-root uid (1..{})", u32::MAX),
                ));
            }
        }
        let p = &self.proxy.ports;
        for (field, port) in [
            ("proxy.ports.inbound", p.inbound),
            ("proxy.ports.outbound", p.outbound),
            ("proxy.ports.admin", p.admin),
        ] {
            if port == 0 {
                return Err(SettingsError::new(field, "must not be 0"));
            }
        }
        if p.inbound == p.outbound || p.inbound == p.admin || p.outbound == p.admin {
            return Err(SettingsError::new(
                "proxy.ports",
                "inbound, outbound and admin must differ",
            ));
        }
        for (i, cidr) in self.proxy.skip_outbound_cidrs.iter().enumerate() {
            super::overrides::check_cidr(cidr)
                .map_err(|m| SettingsError::new(format!("proxy.skipOutboundCIDRs[{i}]"), m))?;
        }
        for (kind, list) in [
            ("requests", &self.proxy.resources.requests),
            ("limits", &self.proxy.resources.limits),
        ] {
            for (name, q) in list {
                super::overrides::check_quantity(q)
                    .map_err(|m| SettingsError::new(format!("proxy.resources.{kind}.{name}"), m))?;
            }
        }
        Ok(())
    }
}

/// `host:port` with a non-empty host and a non-zero port (`[v6]:port` too).
pub fn host_port(address: &str) -> Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("{address:?} is not host:port"));
    };
    if host.is_empty()
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .is_empty()
    {
        return Err(format!("{address:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{address:?}: {port:?} is not a port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_contract_defaults() {
        let (s, unknown) = parse("{}").expect("parse");
        assert!(unknown.is_empty());
        assert_eq!(s, Settings::default());
        assert_eq!(s.control_plane_namespace, "smidge-system");
        assert_eq!(
            s.controller_address,
            "smidge-controller.smidge-system.svc.cluster.local:8086"
        );
        assert_eq!(s.controller_name, "smidge-controller");
        assert_eq!(s.trust_domain, "cluster.local");
        assert_eq!(s.token_audience, "smidge-identity");
        let p = &s.proxy;
        assert_eq!(p.image.repository, "ghcr.io/smidge-mesh/smidge-proxy");
        assert_eq!(p.image.tag, "");
        assert_eq!(p.image.pull_policy, "IfNotPresent");
        assert_eq!((p.uid, p.init_uid), (2102, 65534));
        assert_eq!(p.log_level, "info");
        assert_eq!(
            (p.ports.inbound, p.ports.outbound, p.ports.admin),
            (4143, 4140, 4191)
        );
        assert_eq!(p.resources.requests["cpu"], "10m");
        assert_eq!(p.resources.requests["memory"], "16Mi");
        assert_eq!(p.resources.limits["memory"], "128Mi");
        assert_eq!(p.resources.limits.len(), 1);
        assert!(p.opaque_ports.is_empty() && p.skip_inbound_ports.is_empty());
        assert!(p.skip_outbound_ports.is_empty() && p.skip_outbound_cidrs.is_empty());
        assert!(p.native_sidecar && p.metrics_public);
        assert!(p.extra_args.is_empty());
    }

    #[test]
    fn the_chart_rendering_reads_with_its_exact_keys() {
        let text = r#"{"controlPlaneNamespace": "mesh", "controllerAddress": "smidge-controller.mesh.svc.cluster.local:8086",
          "controllerName": "smidge-controller", "trustDomain": "example.org", "tokenAudience": "aud",
          "proxy": {"image": {"repository": "r/p", "tag": "1.2", "pullPolicy": "Always"}, "uid": 7, "initUid": 8,
            "logLevel": "debug", "ports": {"inbound": 1, "outbound": 2, "admin": 3},
            "resources": {"requests": {"cpu": "1"}, "limits": {}}, "opaquePorts": [25],
            "skipInboundPorts": [22], "skipOutboundPorts": [443], "skipOutboundCIDRs": ["169.254.169.254/32"],
            "nativeSidecar": false, "metricsPublic": false, "extraArgs": ["--threads", "2"]}}"#;
        let (s, unknown) = parse(text).expect("parse");
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(s.trust_domain, "example.org");
        assert_eq!(s.proxy.image.reference(), "r/p:1.2");
        assert_eq!(s.proxy.skip_outbound_cidrs, ["169.254.169.254/32"]);
        assert!(!s.proxy.native_sidecar && !s.proxy.metrics_public);
        assert_eq!(s.proxy.resources.limits.len(), 0);
        assert_eq!(s.proxy.extra_args, ["--threads", "2"]);
    }

    #[test]
    fn a_missing_tag_means_this_build() {
        assert_eq!(
            Image::default().reference(),
            format!(
                "ghcr.io/smidge-mesh/smidge-proxy:{}",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn unknown_keys_are_reported_not_fatal() {
        let (_, mut unknown) = parse(r#"{"proxy": {"await": true}, "extra": 1}"#).expect("parse");
        unknown.sort();
        assert_eq!(unknown, ["extra", "proxy.await"]);
    }

    #[test]
    fn errors_name_the_field() {
        let field = |text: &str| parse(text).expect_err(text).field;
        assert_eq!(field(r#"{"proxy": {"uid": "x"}}"#), "proxy.uid");
        assert_eq!(
            field(r#"{"proxy": {"ports": {"admin": 70000}}}"#),
            "proxy.ports.admin"
        );
        assert_eq!(
            field(r#"{"proxy": {"ports": {"admin": 0}}}"#),
            "proxy.ports.admin"
        );
        assert_eq!(
            field(r#"{"proxy": {"ports": {"admin": 4143}}}"#),
            "proxy.ports"
        );
        assert_eq!(field(r#"{"proxy": {"uid": 0}}"#), "proxy.uid");
        assert_eq!(field(r#"{"proxy": {"initUid": -1}}"#), "proxy.initUid");
        assert_eq!(
            field(r#"{"proxy": {"skipOutboundCIDRs": ["10.0.0.0/8", "x"]}}"#),
            "proxy.skipOutboundCIDRs[1]"
        );
        assert_eq!(
            field(r#"{"proxy": {"resources": {"limits": {"memory": "lots"}}}}"#),
            "proxy.resources.limits.memory"
        );
        assert_eq!(
            field(r#"{"proxy": {"image": {"pullPolicy": "Sometimes"}}}"#),
            "proxy.image.pullPolicy"
        );
        assert_eq!(
            field(r#"{"controllerAddress": "nohost"}"#),
            "controllerAddress"
        );
        assert_eq!(
            field(r#"{"controllerAddress": ":80"}"#),
            "controllerAddress"
        );
        assert_eq!(field(r#"{"trustDomain": ""}"#), "trustDomain");
        assert_eq!(field("not json"), "(file)");
    }

    #[test]
    fn host_port_accepts_names_ips_and_v6() {
        for ok in [
            "a:1",
            "10.0.0.1:8086",
            "[::1]:8086",
            "smidge-controller.ns.svc:8086",
        ] {
            host_port(ok).expect(ok);
        }
        for bad in ["a", "a:0", "a:x", ":1", "[]:1"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }
}
