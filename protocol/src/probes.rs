//! Apps' kubelet probes, moved to the proxy by the injector: the kubelet asks the proxy's public
//! admin port at [`path`] and the proxy makes the original check against the app itself (its own
//! connections are not intercepted). A probe sent to the app's port would meet the inbound
//! policy, which refuses the kubelet (not meshed) in any namespace that is not `allow-all`.
//! The injector writes these as JSON into the proxy's [`ENV`]; both sides share this type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The proxy's environment variable holding the probes (a JSON object, path → [`AppProbe`]).
pub const ENV: &str = "SMIDGE_APP_PROBES";
/// Every rewritten probe's path starts with this.
pub const PATH_PREFIX: &str = "/app-probe/";

/// The original check of one probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppProbe {
    /// The app's port.
    pub port: u16,
    /// `Some`: an HTTP GET of this path (200–399 passes, as for the kubelet); `None`: a TCP
    /// connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    /// Headers the probe sends (name, value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The probe's own timeout.
    pub timeout_seconds: u32,
}

/// Probes by the path the kubelet now asks for.
pub type AppProbes = BTreeMap<String, AppProbe>;

/// The path of `container`'s probe of `kind` (readiness, liveness, startup).
pub fn path(container: &str, kind: &str) -> String {
    format!("{PATH_PREFIX}{container}/{kind}")
}

/// Reads [`ENV`]'s value; the error says what is wrong.
pub fn parse(json: &str) -> Result<AppProbes, String> {
    let probes: AppProbes =
        serde_json::from_str(json).map_err(|e| format!("{ENV} is not valid: {e}"))?;
    if let Some(bad) = probes.keys().find(|k| !k.starts_with(PATH_PREFIX)) {
        return Err(format!(
            "{ENV}: probe path {bad:?} does not start with {PATH_PREFIX}"
        ));
    }
    Ok(probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_back_what_the_injector_writes() {
        let mut probes = AppProbes::new();
        probes.insert(
            path("web", "readiness"),
            AppProbe {
                port: 8080,
                http_path: Some("/healthz".into()),
                headers: vec![("x-probe".into(), "1".into())],
                timeout_seconds: 2,
            },
        );
        probes.insert(
            path("web", "liveness"),
            AppProbe {
                port: 8080,
                http_path: None,
                headers: vec![],
                timeout_seconds: 1,
            },
        );
        let json = serde_json::to_string(&probes).expect("json");
        assert_eq!(parse(&json), Ok(probes));
    }

    #[test]
    fn a_bad_value_is_refused_with_the_reason() {
        let err = parse(r#"{"/other": {"port": 1, "timeoutSeconds": 1}}"#).expect_err("path");
        assert!(err.contains("\"/other\""), "{err}");
        let err =
            parse(r#"{"/app-probe/a/b": {"port": 70000, "timeoutSeconds": 1}}"#).expect_err("port");
        assert!(err.contains("SMIDGE_APP_PROBES"), "{err}");
    }
}
