//! A Kubernetes client chosen as kubectl chooses one: `--kubeconfig FILE`, else `$KUBECONFIG`
//! (a list of files, merged), else `~/.kube/config`, else the in-cluster ServiceAccount; the
//! kubeconfig's current context unless `--context` names another.

use std::path::PathBuf;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The flags every command that talks to a cluster takes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KubeArgs {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
}

impl KubeArgs {
    /// The client configuration these flags select.
    pub async fn config(&self) -> anyhow::Result<kube::Config> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        if let Some(path) = &self.kubeconfig {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            return kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()));
        }
        match kube::Config::from_kubeconfig(&options).await {
            Ok(config) => Ok(config),
            // As kubectl: no kubeconfig at all inside a pod means the pod's own ServiceAccount.
            Err(kubeconfig_err) if self.context.is_none() => {
                kube::Config::incluster().map_err(|incluster_err| {
                    anyhow::anyhow!(
                        "no usable kubeconfig ($KUBECONFIG or ~/.kube/config: {kubeconfig_err}) \
                         and not inside a cluster ({incluster_err})"
                    )
                })
            }
            Err(e) => Err(e).context("reading the kubeconfig ($KUBECONFIG or ~/.kube/config)"),
        }
    }

    /// A client for the cluster these flags select.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let config = self.config().await?;
        kube::Client::try_from(config).context("building the Kubernetes client")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CONTEXTS: &str = r#"
apiVersion: v1
kind: Config
current-context: one
clusters:
- name: a
  cluster: {server: "https://127.0.0.1:6443"}
- name: b
  cluster: {server: "https://127.0.0.2:7443"}
contexts:
- name: one
  context: {cluster: a, user: u, namespace: first}
- name: two
  context: {cluster: b, user: u, namespace: second}
users:
- name: u
  user: {token: t}
"#;

    fn args(path: &std::path::Path, context: Option<&str>) -> KubeArgs {
        KubeArgs {
            kubeconfig: Some(path.to_path_buf()),
            context: context.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn the_current_context_unless_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        std::fs::write(&path, TWO_CONTEXTS).expect("write");
        let current = args(&path, None).config().await.expect("current");
        assert_eq!(current.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(current.default_namespace, "first");
        let two = args(&path, Some("two")).config().await.expect("two");
        assert_eq!(two.cluster_url.to_string(), "https://127.0.0.2:7443/");
        assert_eq!(two.default_namespace, "second");
    }

    #[tokio::test]
    async fn errors_name_the_file_and_the_missing_context() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        let e = args(&path, None).config().await.expect_err("no file");
        assert!(
            format!("{e:#}").contains(&path.display().to_string()),
            "{e:#}"
        );
        std::fs::write(&path, TWO_CONTEXTS).expect("write");
        let e = args(&path, Some("three"))
            .config()
            .await
            .expect_err("no context");
        assert!(format!("{e:#}").contains("three"), "{e:#}");
    }
}
