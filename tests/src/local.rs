//! The local cluster driven the way users drive it: the real `smidge local` commands, each test
//! with a state directory (and so a cluster) of its own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::binary;

/// A running local cluster; `smidge local down` when dropped.
pub struct LocalCluster {
    dir: tempfile::TempDir,
    smidge: PathBuf,
    load: PathBuf,
    applied: std::cell::Cell<usize>,
    /// Runs every command as this uid (an ordinary user) when set.
    user: Option<u32>,
}

/// One pod, as `get pods -o yaml` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub ip: String,
    pub ready: bool,
    pub restarts: u64,
    pub labels: BTreeMap<String, String>,
}

/// What a load run saw: (ms since start, status or 0 for a transport error, backend).
pub type Events = Vec<(u64, u16, String)>;

impl LocalCluster {
    /// `smidge local up` in a fresh state directory, inside a directory only root may enter
    /// (as `mktemp -d` makes it).
    pub fn up() -> anyhow::Result<LocalCluster> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let cluster = LocalCluster {
            dir,
            smidge: binary("smidge-cli", "smidge")?,
            load: binary("smidge-e2e", "load")?,
            applied: std::cell::Cell::new(0),
            user: None,
        };
        cluster.ok(&["up"])?;
        Ok(cluster)
    }

    /// `smidge local up` run by the ordinary user `uid`, with copies of the binaries it can
    /// read and a state directory it owns.
    pub fn up_as(uid: u32) -> anyhow::Result<LocalCluster> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin)?;
        for (package, name) in [
            ("smidge-cli", "smidge"),
            ("smidge-controller", "smidge-controller"),
            ("smidge-proxy", "smidge-proxy"),
            ("smidge-local-cluster", "smidge-echo"),
            ("smidge-e2e", "load"),
        ] {
            std::fs::copy(binary(package, name)?, bin.join(name))?;
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
        let state = dir.path().join("state");
        std::fs::create_dir(&state)?;
        std::os::unix::fs::chown(&state, Some(uid), Some(uid))?;
        let cluster = LocalCluster {
            smidge: bin.join("smidge"),
            load: bin.join("load"),
            dir,
            applied: std::cell::Cell::new(0),
            user: Some(uid),
        };
        cluster.ok(&["up"])?;
        Ok(cluster)
    }

    /// The state directory (`--state-dir`), inside a fresh `mktemp -d`-style directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The daemon's pid.
    pub fn daemon_pid(&self) -> anyhow::Result<u32> {
        let text = std::fs::read_to_string(self.dir.path().join("state/daemon.pid"))?;
        Ok(text.trim().parse()?)
    }

    /// `smidge local ARGS` with this cluster's state directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match self.user {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(&self.smidge)
                    .env("HOME", self.dir.path());
                c
            }
            None => Command::new(&self.smidge),
        };
        cmd.arg("local")
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(args);
        cmd
    }

    /// Runs `smidge local ARGS`, whatever its exit status.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("running smidge local {}", args.join(" ")))
    }

    /// Runs `smidge local ARGS` and returns its stdout; fails with its stderr.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "smidge local {} failed ({}):\n{}{}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes `yaml` to a file and `apply -f FILE --wait`s it; returns what apply printed.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        let n = self.applied.get() + 1;
        self.applied.set(n);
        let file = self.dir.path().join(format!("apply-{n}.yaml"));
        std::fs::write(&file, yaml)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        let path = file.display().to_string();
        self.ok(&["apply", "-f", &path, "--wait"])
    }

    /// The pods of a namespace.
    pub fn pods(&self, namespace: &str) -> anyhow::Result<Vec<PodInfo>> {
        let text = self.ok(&["get", "pods", "-n", namespace, "-o", "yaml"])?;
        let mut pods = Vec::new();
        for doc in text.split("\n---\n").filter(|d| !d.trim().is_empty()) {
            let v: Value = serde_yaml_ng::from_str(doc).context("get pods -o yaml")?;
            let text = |p: &str| {
                v.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            pods.push(PodInfo {
                name: text("/metadata/name"),
                ip: text("/status/podIP"),
                ready: text("/status/conditions/0/status") == "True",
                restarts: v
                    .pointer("/status/containerStatuses/0/restartCount")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                labels: serde_json::from_value(
                    v.pointer("/metadata/labels").cloned().unwrap_or_default(),
                )
                .unwrap_or_default(),
            });
        }
        Ok(pods)
    }

    /// The first pod whose `app` label is `app`.
    pub fn pod(&self, namespace: &str, app: &str) -> anyhow::Result<PodInfo> {
        self.pods(namespace)?
            .into_iter()
            .find(|p| p.labels.get("app").is_some_and(|a| a == app))
            .with_context(|| format!("no pod with app={app} in {namespace}"))
    }

    /// Starts the load tool inside `pod` (`smidge local exec`); read it with [`finish`].
    pub fn start_load(&self, namespace: &str, pod: &str, args: &[&str]) -> anyhow::Result<Child> {
        let load = self.load.display().to_string();
        let mut all = vec!["exec", "-n", namespace, pod, "--", load.as_str()];
        all.extend_from_slice(args);
        self.command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the load tool")
    }

    /// Runs the load tool inside `pod` to the end.
    pub fn load(&self, namespace: &str, pod: &str, args: &[&str]) -> anyhow::Result<Events> {
        finish(self.start_load(namespace, pod, args)?)
    }

    /// The daemon's and the controller's logs, for failure messages.
    pub fn logs(&self) -> String {
        let state = self.dir.path().join("state");
        let read = |f: &str| std::fs::read_to_string(state.join(f)).unwrap_or_default();
        format!(
            "--- daemon.log\n{}\n--- controller.log\n{}",
            read("daemon.log"),
            read("controller.log")
        )
    }

    /// A pod's log (`app`, `proxy`, `init`).
    pub fn pod_log(&self, namespace: &str, pod: &str, which: &str) -> String {
        self.run(&["logs", "-n", namespace, pod, which])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// Waits for a load run and reads its events.
pub fn finish(child: Child) -> anyhow::Result<Events> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "the load tool failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("the load tool's output")?;
    Ok(serde_json::from_value(v["events"].clone())?)
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}
