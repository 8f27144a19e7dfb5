//! The node's pod runtime: a pod's sandbox (a network namespace on the node bridge), its files
//! (volumes, logs, shim specs under `<state>/pods/<uid>/`), its containers (each a shim and the
//! program it runs) and the record that lets a restarted agent adopt all of it instead of
//! recreating it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::shim::{self, Exit, Spec};
use crate::netns;

/// Where one pod's files are.
#[derive(Clone, Debug)]
pub struct PodDirs {
    pub root: PathBuf,
}

impl PodDirs {
    pub fn new(state: &Path, uid: &str) -> PodDirs {
        PodDirs {
            root: state.join("pods").join(uid),
        }
    }
    pub fn record(&self) -> PathBuf {
        self.root.join("record.json")
    }
    pub fn volume(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }
    pub fn container(&self, name: &str) -> PathBuf {
        self.root.join("containers").join(name)
    }
    /// The log of a container's `attempt`-th run (0 first).
    pub fn log(&self, container: &str, attempt: u32) -> PathBuf {
        self.container(container).join(format!("{attempt}.log"))
    }
}

/// What survives an agent restart, per pod.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PodRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub netns: String,
    pub link: String,
    pub ip: Option<Ipv4Addr>,
    /// Seconds since the epoch the sandbox was made (the pod's startTime).
    pub started_at: i64,
    pub containers: BTreeMap<String, ContainerRecord>,
}

/// One container's runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    /// Runs started so far (the current one is `attempts - 1`); restarts are `attempts - 1`.
    pub attempts: u32,
    /// The running shim, if any.
    pub shim_pid: Option<u32>,
    pub started_at: i64,
    /// How the last run ended, and when it had started.
    pub last_exit: Option<(Exit, i64)>,
    /// When the current run ended (not yet restarted).
    pub exited: Option<Exit>,
}

impl PodRecord {
    pub fn load(path: &Path) -> anyhow::Result<PodRecord> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }
}

/// Every pod record under `<state>/pods`.
pub fn records(state: &Path) -> Vec<PodRecord> {
    let Ok(entries) = std::fs::read_dir(state.join("pods")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| match PodRecord::load(&e.path().join("record.json")) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "skipping a pod record");
                None
            }
        })
        .collect()
}

/// The sandbox's names for a pod uid: namespace `<node>-<8 hex>` and link `k<8 hex>`.
pub fn sandbox_names(node_netns: &str, uid: &str) -> (String, String) {
    let short: String = uid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    (format!("{node_netns}-{short}"), format!("k{short}"))
}

/// Makes the pod's network namespace on the node bridge at `ip`.
pub fn create_sandbox(
    node_netns: &str,
    gateway: Ipv4Addr,
    record: &PodRecord,
    ip: Ipv4Addr,
) -> anyhow::Result<()> {
    if netns::netns_exists(&record.netns) {
        // Left by an attempt that failed half-way.
        let _ = netns::remove_netns(&record.netns);
    }
    netns::attach_pod(node_netns, gateway, &record.netns, &record.link, ip).with_context(|| {
        format!(
            "making the sandbox of pod {}/{}",
            record.namespace, record.name
        )
    })
}

/// Kills whatever still runs in the pod's namespace and removes it.
pub fn remove_sandbox(record: &PodRecord) {
    if netns::netns_exists(&record.netns) {
        netns::kill_in_netns(&record.netns);
        if let Err(e) = netns::remove_netns(&record.netns) {
            tracing::warn!(netns = %record.netns, error = format!("{e:#}"), "removing a pod sandbox");
        }
    }
    // Its /etc/netns files, also when the namespace was already gone.
    if let Some(dir) = netns::hosts_path(&record.netns).parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// One file of a volume: a path relative to the volume, its bytes and mode.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeFile {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
    /// Owner and group when the pod's user or fsGroup must read it (a private token).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Writes a volume's files into `dir`, each replaced by rename so that a reader never sees
/// half a file (tokens are refreshed this way while containers read them), and removes files
/// no longer in it. Paths with `..` or a leading `/` are refused.
pub fn write_volume(dir: &Path, files: &[VolumeFile]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for f in files {
        let rel = Path::new(&f.path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            anyhow::bail!("volume file path {:?} is not a plain relative path", f.path);
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let current = std::fs::read(&path).ok();
        let owner = std::fs::metadata(&path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.mode() & 0o777, m.uid(), m.gid())
        });
        let same_owner = owner.is_some_and(|(mode, uid, gid)| {
            mode == f.mode && f.uid.is_none_or(|u| u == uid) && f.gid.is_none_or(|g| g == gid)
        });
        if current.as_deref() == Some(&f.data[..]) && same_owner {
            continue;
        }
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().map_or("f".into(), |n| n.to_string_lossy())
        ));
        std::fs::write(&tmp, &f.data).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(f.mode))?;
        if f.uid.is_some() || f.gid.is_some() {
            std::os::unix::fs::chown(&tmp, f.uid, f.gid)
                .with_context(|| format!("changing the owner of {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    // Files of an earlier version no longer projected.
    let keep: std::collections::BTreeSet<PathBuf> =
        files.iter().map(|f| dir.join(&f.path)).collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_file() && !keep.contains(&p) {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    Ok(())
}

/// A running (or ended) container: its shim and what it runs.
pub struct Container {
    pub spec: Spec,
    pub spec_path: PathBuf,
    /// The shim, when this agent started it (else adopted: watched by pid).
    child: Option<Child>,
    pub shim_pid: Option<u32>,
}

impl Container {
    /// Starts a shim for `spec`.
    pub fn start(shim_bin: &Path, spec: Spec, spec_path: PathBuf) -> anyhow::Result<Container> {
        let child = shim::spawn(shim_bin, &spec, &spec_path)?;
        Ok(Container {
            shim_pid: Some(child.id()),
            spec,
            spec_path,
            child: Some(child),
        })
    }

    /// A container whose shim an earlier agent started: kept if that shim still runs this
    /// spec (a pid reused by another program is not mistaken for it).
    pub fn adopt(spec_path: PathBuf, shim_pid: Option<u32>) -> Option<Container> {
        let text = std::fs::read(&spec_path).ok()?;
        let spec: Spec = serde_json::from_slice(&text).ok()?;
        let pid = shim_pid.filter(|pid| {
            netns::process_alive(*pid)
                && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let path = spec_path.to_string_lossy();
                    String::from_utf8_lossy(&c).contains(path.as_ref())
                })
        });
        Some(Container {
            spec,
            spec_path,
            child: None,
            shim_pid: pid,
        })
    }

    /// How the container ended, once it has (reaping the shim if it is ours).
    pub fn poll(&mut self) -> Option<Exit> {
        if let Some(c) = self.child.as_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                return None;
            }
            self.child = None;
        } else if self.shim_pid.is_some_and(netns::process_alive) {
            return None;
        }
        self.shim_pid = None;
        Some(shim::exit(&self.spec).unwrap_or(Exit {
            code: 137,
            signal: Some(9),
            finished_at: now(),
            error: Some("the container's shim ended without saying how the container did".into()),
        }))
    }

    /// Sends `signal` to the container's program.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = shim::container_pid(&self.spec) {
            if netns::process_alive(pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
            }
        }
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Finds a program: the workspace's binaries in `programs` first, then `PATH`.
pub fn locate(programs: &Path, name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let here = programs.join(name);
    if here.is_file() {
        return Some(here);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_else(|| vec!["/usr/local/bin".into(), "/usr/bin".into(), "/bin".into()])
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_names_fit_the_kernels_limits() {
        let (ns, link) = sandbox_names("smg-local-42-0", "3f1c9a2e-1111-2222-3333-444455556666");
        assert_eq!(ns, "smg-local-42-0-3f1c9a2e");
        assert_eq!(link, "k3f1c9a2e");
        assert!(link.len() <= 15);
    }

    #[test]
    fn volumes_are_written_replaced_and_pruned_and_refuse_escaping_paths() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("v");
        let file = |p: &str, d: &str, mode| VolumeFile {
            path: p.into(),
            data: d.as_bytes().to_vec(),
            mode,
            uid: None,
            gid: None,
        };
        write_volume(
            &v,
            &[file("token", "a", 0o600), file("sub/ca.crt", "b", 0o644)],
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(v.join("token")).unwrap(), "a");
        let mode = std::fs::metadata(v.join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        write_volume(&v, &[file("token", "c", 0o600)]).unwrap();
        assert_eq!(std::fs::read_to_string(v.join("token")).unwrap(), "c");
        for bad in ["../x", "/etc/passwd", "a/../../x"] {
            let err = write_volume(&v, &[file(bad, "x", 0o644)]).unwrap_err();
            assert!(err.to_string().contains("plain relative path"), "{err}");
        }
    }

    #[test]
    fn programs_are_found_in_the_workspace_first_then_on_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("smidge-echo"), "").unwrap();
        assert_eq!(
            locate(dir.path(), "smidge-echo"),
            Some(dir.path().join("smidge-echo"))
        );
        assert!(locate(dir.path(), "sh").is_some());
        assert_eq!(locate(dir.path(), "no-such-program-anywhere"), None);
    }
}
