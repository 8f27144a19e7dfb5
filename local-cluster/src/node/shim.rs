//! The container shim: one small process per container, as conmon is for CRI-O. It joins the
//! pod's network namespace, gives the container a private mount namespace with the pod's
//! volumes and hosts file bound in, starts the program (under its uid, with its capabilities),
//! waits for it and writes how it ended. The node agent starts shims detached from itself, so
//! containers outlive an agent restart, and a restarted agent learns a container's exit from the
//! file the shim wrote.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What one container runs and where; written as JSON beside its log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Spec {
    /// The pod's network namespace (under `/run/netns`).
    pub netns: String,
    /// Bound over `/etc/hosts`.
    pub hosts: Option<PathBuf>,
    /// Volume directories (or files) bound at their mount paths.
    pub mounts: Vec<BindMount>,
    /// The program (absolute path) and its arguments; `argv[0]` as the pod spec names it.
    pub program: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// `runAsUser` / `runAsGroup`; none runs as root.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Capabilities kept by a non-root container (`securityContext.capabilities.add`), e.g.
    /// `NET_ADMIN`.
    pub capabilities: Vec<String>,
    /// Where the container's stdout and stderr go (appended).
    pub log: PathBuf,
    /// Written when the container ends: an [`Exit`] as JSON.
    pub exit: PathBuf,
    /// Written once the container runs: its pid.
    pub pid: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// How a container ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Exit {
    pub code: i32,
    pub signal: Option<i32>,
    /// Seconds since the epoch.
    pub finished_at: i64,
    /// Set when the program could not be started at all.
    pub error: Option<String>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The shim's main: never returns while the container runs; exits 0 once the exit file is
/// written.
pub fn run(spec_path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("reading {}", spec_path.display()))?;
    let spec: Spec = serde_json::from_str(&text)
        .with_context(|| format!("parsing the shim spec {}", spec_path.display()))?;
    let outcome = start_and_wait(&spec);
    let exit = match outcome {
        Ok(exit) => exit,
        Err(e) => {
            let message = format!("{e:#}");
            if let Ok(mut log) = open_log(&spec.log) {
                let _ = writeln!(log, "smidge: the container could not start: {message}");
            }
            Exit {
                code: 128,
                signal: None,
                finished_at: now(),
                error: Some(message),
            }
        }
    };
    let tmp = spec.exit.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&exit)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &spec.exit)
        .with_context(|| format!("writing {}", spec.exit.display()))?;
    Ok(())
}

fn open_log(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn start_and_wait(spec: &Spec) -> anyhow::Result<Exit> {
    use std::os::unix::process::ExitStatusExt;
    crate::netns::enter_netns(&spec.netns)?;
    private_mounts(spec)?;
    let out = open_log(&spec.log)?;
    let err = out.try_clone().context("duplicating the log handle")?;
    let mut cmd = match spec.uid {
        // setpriv drops to the uid and keeps only the capabilities asked for (ambient, so
        // they survive the exec of a non-root program).
        Some(uid) => {
            let mut c = Command::new("setpriv");
            let gid = spec.gid.unwrap_or(uid);
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups");
            if spec.capabilities.is_empty() {
                c.arg("--no-new-privs");
            } else {
                let caps = spec
                    .capabilities
                    .iter()
                    .map(|c| format!("+{}", c.to_ascii_lowercase()))
                    .collect::<Vec<_>>()
                    .join(",");
                c.arg(format!("--inh-caps={caps}"))
                    .arg(format!("--ambient-caps={caps}"));
            }
            c.arg("--").arg(&spec.program);
            c
        }
        None => Command::new(&spec.program),
    };
    if let Some(first) = spec.argv.first() {
        if spec.uid.is_none() {
            use std::os::unix::process::CommandExt;
            cmd.arg0(first);
        }
    }
    cmd.args(spec.argv.iter().skip(1))
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(spec.workdir.as_deref().unwrap_or("/"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // The daemon blocks SIGTERM and SIGINT (one thread takes them) and a signal mask survives
    // fork and exec: unblocked here, in the shim's one thread, the container sees the SIGTERM
    // of a graceful deletion instead of only the SIGKILL at the end of the grace period.
    nix::sys::signal::SigSet::all()
        .thread_unblock()
        .context("unblocking signals for the container")?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", spec.program.display()))?;
    std::fs::write(&spec.pid, child.id().to_string())
        .with_context(|| format!("writing {}", spec.pid.display()))?;
    let status = child.wait().context("waiting for the container")?;
    Ok(Exit {
        code: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        signal: status.signal(),
        finished_at: now(),
        error: None,
    })
}

/// A mount namespace of the container's own: nothing it binds leaks to the host or other
/// containers.
fn private_mounts(spec: &Spec) -> anyhow::Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("making a mount namespace for the container")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making the container's mounts private")?;
    let mut binds: Vec<BindMount> = Vec::new();
    if let Some(hosts) = &spec.hosts {
        binds.push(BindMount {
            source: hosts.clone(),
            target: "/etc/hosts".into(),
            read_only: true,
        });
    }
    binds.extend(spec.mounts.iter().cloned());
    for b in &binds {
        if b.source.is_dir() {
            std::fs::create_dir_all(&b.target)
                .with_context(|| format!("creating the mount point {}", b.target.display()))?;
        } else if !b.target.exists() {
            if let Some(parent) = b.target.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&b.target, b"")
                .with_context(|| format!("creating the mount point {}", b.target.display()))?;
        }
        mount(
            Some(&b.source),
            &b.target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("binding {} at {}", b.source.display(), b.target.display()))?;
        if b.read_only {
            mount(
                None::<&str>,
                &b.target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("making {} read-only", b.target.display()))?;
        }
    }
    Ok(())
}

/// Starts a shim for `spec` (written to `spec_path` first), in a process group of its own so
/// that nothing sent to the agent's group reaches it. `shim` is the `smidge-node` program.
pub fn spawn(shim: &Path, spec: &Spec, spec_path: &Path) -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    std::fs::write(spec_path, serde_json::to_vec_pretty(spec)?)
        .with_context(|| format!("writing {}", spec_path.display()))?;
    for stale in [&spec.exit, &spec.pid] {
        let _ = std::fs::remove_file(stale);
    }
    Command::new(shim)
        .arg("shim")
        .arg(spec_path)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting the shim {}", shim.display()))
}

/// How the container of `spec` ended, once the shim wrote it.
pub fn exit(spec: &Spec) -> Option<Exit> {
    let text = std::fs::read(&spec.exit).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The container's pid, once it runs.
pub fn container_pid(spec: &Spec) -> Option<u32> {
    std::fs::read_to_string(&spec.pid).ok()?.trim().parse().ok()
}
