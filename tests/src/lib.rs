//! Helpers for end-to-end tests: build and start the real binaries, talk to them as a proxy would,
//! and run a mesh in network namespaces ([`mesh`]) with test apps ([`apps`]).

#![forbid(unsafe_code)]

pub mod kube;
pub mod local;
pub mod scenario;
pub mod wire;

pub use smidge_local_cluster::{apps, mesh};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use smidge_protocol::{ClientMessage, FrameCodec, ProxyId, ServerMessage, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// The directory of this program's build profile: `target/<profile>` (tests run from its
/// `deps/`, binaries from the directory itself).
fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("locating the target directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().context("locating the target directory")?;
    }
    Ok(dir.to_path_buf())
}

/// The path of a workspace binary, built (once per process, in this program's profile) if needed.
///
/// Debug builds run `cargo build --workspace --all-targets`: the same units `cargo nextest run
/// --workspace` and `.ci/run` build, with dev-dependency features unified the same way, so it is a
/// no-op under the test runner. (A `--bins` build resolves features without dev-dependencies and
/// would rebuild the binaries over the test build's copies, and back again, on every run.)
pub fn binary(package: &str, name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = profile_dir()?;
    let release = dir.file_name().is_some_and(|n| n == "release");
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace"]);
        if release {
            cmd.args(["--release", "--bins"]);
        } else {
            cmd.arg("--all-targets");
        }
        let status = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo build --workspace failed: {status}"))
        }
    });
    built
        .clone()
        .map_err(|e| anyhow::anyhow!("building {package}: {e}"))?;
    let path = dir.join(name);
    if !path.exists() {
        bail!("{} was not built", path.display());
    }
    Ok(path)
}

/// A running `smidge-controller` on the file provider; killed when dropped.
pub struct Controller {
    child: Child,
    pub push: SocketAddr,
    pub admin: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Controller {
    /// Starts the controller on `manifests` with ephemeral ports and waits until it is ready.
    pub fn start(manifests: &Path, extra: &[&str]) -> anyhow::Result<Controller> {
        Self::start_with(manifests, "127.0.0.1:0", extra, &[])
    }

    /// Like [`start`](Self::start), with the push port at `listen` and the controller run under
    /// `wrapper` (for example `["prlimit", "--nofile=100:100", "--"]`) when it is not empty.
    pub fn start_with(
        manifests: &Path,
        listen: &str,
        extra: &[&str],
        wrapper: &[&str],
    ) -> anyhow::Result<Controller> {
        let mut args = vec!["--provider", "file", "--manifests"];
        let manifests = manifests.to_str().context("a manifest path in UTF-8")?;
        args.extend([manifests, "--listen", listen]);
        args.extend(extra);
        Self::spawn(&args, &[], wrapper)
    }

    /// Starts the controller on the `kubernetes` provider with the credentials of
    /// `kubeconfig` and ephemeral ports, and waits until it is ready.
    pub fn start_kubernetes(kubeconfig: &Path, extra: &[&str]) -> anyhow::Result<Controller> {
        let kubeconfig = kubeconfig.to_str().context("a kubeconfig path in UTF-8")?;
        let mut args = vec!["--provider", "kubernetes", "--listen", "127.0.0.1:0"];
        args.extend(extra);
        Self::spawn(&args, &[("KUBECONFIG", kubeconfig)], &[])
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], wrapper: &[&str]) -> anyhow::Result<Controller> {
        let bin = binary("smidge-controller", "smidge-controller")?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = command
            .args(args)
            .args(["--admin", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting smidge-controller")?;
        let stderr = child.stderr.take().context("controller stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("controller listening") {
                    let _ = tx.send(line.clone());
                }
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .context("the controller did not start listening")?;
        let field = |name: &str| -> anyhow::Result<SocketAddr> {
            let start = line.find(&format!("{name}=")).context("listening line")? + name.len() + 1;
            let end = line[start..].find(' ').map_or(line.len(), |e| start + e);
            Ok(line[start..end].parse()?)
        };
        let controller = Controller {
            push: field("push")?,
            admin: field("admin")?,
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(controller.admin, "/ready")
            .map(|(code, _)| code)
            .ok()
            != Some(200)
        {
            if Instant::now() > deadline {
                bail!(
                    "the controller did not become ready; log:\n{}",
                    controller.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(controller)
    }

    /// Everything the controller has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits up to `limit` for the log to hold `needle` (lines reach it through a reader thread, so
    /// after whatever caused them); the whole log, or an error quoting it.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return Ok(log);
            }
            if Instant::now() > deadline {
                bail!("no {needle:?} in the controller's log within {limit:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET` on the admin endpoint; the status code and body.
    pub fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.admin, path)
    }
}

impl Controller {
    /// The controller's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 GET, enough for admin endpoints.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text.split(' ').nth(1).context("status line")?.parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// A protocol client, as a proxy would be.
pub struct ProxyClient {
    conn: Framed<TcpStream, FrameCodec<ServerMessage, ClientMessage>>,
}

impl ProxyClient {
    /// Connects and says Hello; fails unless the controller answers Welcome.
    pub async fn connect(addr: SocketAddr, pod: &str) -> anyhow::Result<ProxyClient> {
        let mut client = Self::connect_raw(addr).await?;
        let proxy = ProxyId {
            namespace: "ns".into(),
            pod: pod.into(),
            service_account: "default".into(),
        };
        client
            .send(ClientMessage::Hello {
                protocol_version: PROTOCOL_VERSION,
                proxy,
                token: None,
            })
            .await?;
        match client.recv(Duration::from_secs(5)).await? {
            ServerMessage::Welcome { .. } => Ok(client),
            other => bail!("expected Welcome, got {other:?}"),
        }
    }

    /// Connects without saying anything.
    pub async fn connect_raw(addr: SocketAddr) -> anyhow::Result<ProxyClient> {
        let stream = TcpStream::connect(addr).await?;
        Ok(ProxyClient {
            conn: Framed::new(stream, FrameCodec::default()),
        })
    }

    pub async fn send(&mut self, msg: ClientMessage) -> anyhow::Result<()> {
        self.conn.send(msg).await?;
        Ok(())
    }

    /// The next message, or an error after `wait`.
    pub async fn recv(&mut self, wait: Duration) -> anyhow::Result<ServerMessage> {
        match tokio::time::timeout(wait, self.conn.next()).await {
            Ok(Some(Ok(msg))) => Ok(msg),
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(None) => bail!("the controller closed the connection"),
            Err(_) => bail!("nothing received within {wait:?}"),
        }
    }
}

/// Parses `/metrics` text as Prometheus exposition and sums the samples of `metric` whose labels
/// include every pair in `labels`.
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).context("parsing /metrics")?;
    Ok(scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum())
}
