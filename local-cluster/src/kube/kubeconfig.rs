//! Kubeconfig files for the control plane's users: the admin and the components. They name the
//! certificate files in the state directory rather than embedding them.

use std::path::Path;

use anyhow::Context;
use serde_json::json;

/// The cluster, user and context name in every kubeconfig written here.
pub const CLUSTER: &str = "smidge-local";

/// A kubeconfig for `server`, trusting `ca`, authenticating with the client `cert` and `key`.
/// Pure.
pub fn render(server: &str, ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<String> {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER, "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": CLUSTER, "user": {
            "client-certificate": cert,
            "client-key": key,
        }}],
        "contexts": [{"name": CLUSTER, "context": {"cluster": CLUSTER, "user": CLUSTER}}],
        "current-context": CLUSTER,
    });
    serde_yaml_ng::to_string(&config).context("rendering a kubeconfig")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_server_and_the_certificate_files() {
        let text = render(
            "https://127.0.0.1:6443",
            Path::new("/s/pki/ca.crt"),
            Path::new("/s/pki/admin.crt"),
            Path::new("/s/pki/admin.key"),
        )
        .unwrap();
        let value: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(value["current-context"], CLUSTER);
        assert_eq!(
            value["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(value["users"][0]["user"]["client-key"], "/s/pki/admin.key");
    }
}
