//! The local cluster keeps pods apart: each pod's proxy has a uid of its own that owns only
//! its token, apps run unprivileged, the state directory may sit in a private directory, and
//! `down` removes the identity keys.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use smidge_e2e::local::LocalCluster;

const YAML: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: iso, labels: {smidge.io/inject: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: a, namespace: iso}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: b, namespace: iso}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: a, namespace: iso}
spec:
  replicas: 1
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec:
      serviceAccountName: a
      containers: [{name: app, image: smidge/echo:latest, ports: [{name: http, containerPort: 80}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: b, namespace: iso}
spec:
  replicas: 1
  selector: {matchLabels: {app: b}}
  template:
    metadata: {labels: {app: b}}
    spec:
      serviceAccountName: b
      containers: [{name: app, image: smidge/echo:latest, env: [{name: PORT, value: "80"}]}]
"#;

/// A running process: its pid, command line and environment.
struct Proc {
    pid: u32,
    cmdline: Vec<String>,
    environ: Vec<String>,
}

fn processes() -> Vec<Proc> {
    let split = |b: Vec<u8>| -> Vec<String> {
        b.split(|c| *c == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            Some(Proc {
                pid,
                cmdline: split(std::fs::read(format!("/proc/{pid}/cmdline")).ok()?),
                environ: split(std::fs::read(format!("/proc/{pid}/environ")).ok()?),
            })
        })
        .collect()
}

/// A field of `/proc/PID/status` (`Uid`, `CapEff`, ...): its first value.
fn status(pid: u32, field: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string)
        .with_context(|| format!("no {field} for pid {pid}"))
}

/// The proxy of `pod`: its uid and its token file.
fn proxy_of(procs: &[Proc], pod: &str) -> anyhow::Result<(u32, PathBuf)> {
    let p = procs
        .iter()
        .find(|p| {
            p.cmdline
                .first()
                .is_some_and(|c| c.ends_with("smidge-proxy"))
                && p.cmdline.windows(2).any(|w| w[0] == "--pod" && w[1] == pod)
        })
        .with_context(|| format!("no proxy process for {pod}"))?;
    let token = p
        .cmdline
        .windows(2)
        .find(|w| w[0] == "--token-file")
        .map(|w| PathBuf::from(&w[1]))
        .context("the proxy has no --token-file")?;
    Ok((status(p.pid, "Uid")?.parse()?, token))
}

/// The app process of `pod` (started with `HOSTNAME=<pod>`).
fn app_of(procs: &[Proc], pod: &str) -> anyhow::Result<u32> {
    procs
        .iter()
        .find(|p| {
            p.cmdline
                .first()
                .is_some_and(|c| c.ends_with("smidge-echo"))
                && p.environ.iter().any(|e| *e == format!("HOSTNAME={pod}"))
        })
        .map(|p| p.pid)
        .with_context(|| format!("no app process for {pod}"))
}

/// Whether something in the network namespace of `pid` listens on TCP `port`.
fn listens(pid: u32, port: u16) -> anyhow::Result<bool> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))?;
    let local = format!(":{port:04X}");
    Ok(table.lines().skip(1).any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() > 3 && cols[1].ends_with(&local) && cols[3] == "0A"
    }))
}

/// Whether `uid` can read `file`: `cat` run as that uid, with no groups.
fn can_read(uid: u32, gid: u32, file: &Path) -> anyhow::Result<bool> {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("cat")
        .arg(file)
        .output()?;
    Ok(out.status.success())
}

#[test]
fn pods_are_apart_and_a_private_state_directory_works() -> anyhow::Result<()> {
    let cluster = LocalCluster::up()?;
    let state = cluster.state_dir();
    // As `mktemp -d` makes it: only root may enter the parent of the state directory.
    let parent = state.parent().context("parent")?;
    assert_eq!(
        std::fs::metadata(parent)?.permissions().mode() & 0o777,
        0o700
    );
    cluster.apply(YAML)?;
    let pods = cluster.pods("iso")?;
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods.iter().all(|p| p.ready), "{pods:?}\n{}", cluster.logs());

    let by_app: BTreeMap<String, String> = pods
        .iter()
        .map(|p| (p.labels["app"].clone(), p.name.clone()))
        .collect();
    let procs = processes();
    let (a_proxy_uid, a_token) = proxy_of(&procs, &by_app["a"])?;
    let (b_proxy_uid, b_token) = proxy_of(&procs, &by_app["b"])?;
    assert_ne!(a_proxy_uid, b_proxy_uid, "two pods' proxies share a uid");
    assert_ne!(a_proxy_uid, 0);

    let a_app = app_of(&procs, &by_app["a"])?;
    let app_uid: u32 = status(a_app, "Uid")?.parse()?;
    let app_gid: u32 = status(a_app, "Gid")?.parse()?;
    assert_ne!(app_uid, 0, "the app runs as root");
    assert_eq!(status(a_app, "CapEff")?, "0000000000000000");
    assert_ne!(app_uid, a_proxy_uid);
    assert_ne!(app_uid, b_proxy_uid);

    // An unprivileged app still binds a port below 1024 (b's echo serves on 80).
    let b_app = app_of(&procs, &by_app["b"])?;
    assert_ne!(status(b_app, "Uid")?, "0");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !listens(b_app, 80)? {
        assert!(
            std::time::Instant::now() < deadline,
            "b's app never listened on port 80:\n{}",
            cluster.pod_log("iso", &by_app["b"], "app")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Each proxy reads its own token and no other; the app reads none, nor the keys.
    assert!(can_read(a_proxy_uid, a_proxy_uid, &a_token)?);
    assert!(!can_read(a_proxy_uid, a_proxy_uid, &b_token)?);
    assert!(
        !can_read(app_uid, app_gid, &b_token)?,
        "a's app read b's token"
    );
    assert!(
        !can_read(app_uid, app_gid, &a_token)?,
        "a's app read its proxy's token"
    );
    for key in ["identity/issuer.key", "identity/token.key"] {
        assert!(state.join(key).exists(), "{key}");
        assert!(!can_read(app_uid, app_gid, &state.join(key))?, "{key}");
        assert!(
            !can_read(a_proxy_uid, a_proxy_uid, &state.join(key))?,
            "{key}"
        );
    }

    // `down` removes the keys (and the tokens with the proxies' directory).
    cluster.ok(&["down"])?;
    assert!(!state.join("identity").exists());
    assert!(!a_token.exists() && !b_token.exists());
    Ok(())
}
