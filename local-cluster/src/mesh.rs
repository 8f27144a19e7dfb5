//! A mesh in network namespaces: a node running the real controller, pods each with the real
//! proxy (after its real `init` rules), and the test's apps running inside the pods.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::{Node, Pod};
use anyhow::{bail, Context};

/// The first proxy uid: the proxy of the pod in slot `n` runs as `PROXY_UID + n`, which `init`
/// exempts and which owns only that pod's token.
pub const PROXY_UID: u32 = 2102;
/// The first app uid: the apps of the pod in slot `n` run as `APP_UID + n`, unprivileged, so
/// they can read no token, signal or trace no other pod's processes and change no rules.
pub const APP_UID: u32 = 102_102;
/// Pod slots, and so uids, in each range.
pub const SLOTS: u32 = 65_000;

/// The uids of one pod's processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodUids {
    pub proxy: u32,
    pub app: u32,
}

impl PodUids {
    /// The uids of the pod in `slot` (`0..SLOTS`).
    pub fn for_slot(slot: u32) -> PodUids {
        PodUids {
            proxy: PROXY_UID + slot,
            app: APP_UID + slot,
        }
    }
}
/// The proxy's admin port on the pod IP: `/ready` and `/live` (the kubelet's probes).
pub const ADMIN_PORT: u16 = 4191;
/// The proxy's loopback admin port: `/metrics` and `/views` too, only from inside the pod.
pub const ADMIN_PRIVATE_PORT: u16 = 4192;
/// Where the controller listens inside the node.
pub const CONTROLLER_PORT: u16 = 8086;
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
/// The mesh's trust domain.
pub const TRUST_DOMAIN: &str = "cluster.local";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A process whose stderr is collected; killed when dropped.
pub struct Process {
    child: Mutex<Child>,
    log: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `cmd` with its stderr collected (and `RUST_LOG=info`).
    pub fn spawn(mut cmd: Command, what: &str) -> anyhow::Result<Process> {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stderr = child.stderr.take().context("stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        Ok(Process {
            child: Mutex::new(child),
            log,
        })
    }

    /// Everything logged so far, and the exit status if the process ended.
    pub fn log(&self) -> String {
        let mut text = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        if let Ok(mut c) = self.child.lock() {
            if let Ok(Some(status)) = c.try_wait() {
                text.push_str(&format!("[exited: {status}]\n"));
            }
        }
        text
    }

    pub fn kill(&mut self) {
        if let Ok(c) = self.child.get_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id of the program itself (`ip netns exec` and `setpriv` exec into it).
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().ok().map(|c| c.id())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One meshed pod: its namespace and its proxy.
pub struct MeshPod {
    pub pod: Pod,
    pub proxy: Process,
    /// Its proxy's uid, and the uid its apps would run as.
    pub uids: PodUids,
}

/// The node, the controller and the pods. Dropping it stops everything and removes the
/// namespaces.
pub struct Mesh {
    pub pods: Vec<MeshPod>,
    pub controller: Option<Process>,
    controller_bin: PathBuf,
    controller_args: Vec<String>,
    namespace: String,
    manifests: PathBuf,
    _dir: tempfile::TempDir,
    // Last: namespaces go after the processes in them.
    pub node: Node,
}

/// Where the real binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub controller: PathBuf,
    pub proxy: PathBuf,
}

impl Binaries {
    /// The binaries beside the running program (as `cargo build --bins` leaves them).
    pub fn beside_current_exe() -> anyhow::Result<Binaries> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("the program's directory")?;
        let bins = Binaries {
            controller: dir.join("smidge-controller"),
            proxy: dir.join("smidge-proxy"),
        };
        for b in [&bins.controller, &bins.proxy] {
            if !b.exists() {
                bail!(
                    "{} is missing: build every binary first (cargo build --release --bins)",
                    b.display()
                );
            }
        }
        Ok(bins)
    }
}

/// A pod to create: name, address, ServiceAccount.
#[derive(Clone, Debug)]
pub struct PodSpec<'a> {
    pub name: &'a str,
    pub ip: Ipv4Addr,
    pub service_account: &'a str,
}

impl Mesh {
    /// Starts the controller on `manifests` (namespace `namespace`) and a proxy per pod.
    pub fn start(
        bins: &Binaries,
        tag: &str,
        manifests: &str,
        namespace: &str,
        pods: &[PodSpec<'_>],
        proxy_args: &[&str],
    ) -> anyhow::Result<Mesh> {
        Self::start_with(bins, tag, manifests, namespace, pods, proxy_args, &[])
    }

    /// [`start`](Self::start) with extra controller arguments.
    pub fn start_with(
        bins: &Binaries,
        tag: &str,
        manifests: &str,
        namespace: &str,
        pods: &[PodSpec<'_>],
        proxy_args: &[&str],
        controller_args: &[&str],
    ) -> anyhow::Result<Mesh> {
        let controller_bin = bins.controller.clone();
        let proxy_bin = bins.proxy.clone();
        let mut node = Node::create(tag, GATEWAY)?;
        let dir = tempfile::tempdir()?;
        // The proxies run under their own uid and read the anchor and their token from here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        let manifest_dir = dir.path().join("manifests");
        std::fs::create_dir(&manifest_dir)?;
        let file = manifest_dir.join("mesh.yaml");
        std::fs::write(&file, manifests)?;
        // Fresh trust material per mesh; each proxy proves its ServiceAccount with a token.
        let identity_dir = dir.path().join("identity");
        smidge_controller::identity::generate(&identity_dir, TRUST_DOMAIN)?;
        let trust = smidge_controller::identity::Trust::load(&identity_dir)?;
        let anchor = identity_dir.join(smidge_controller::identity::trust::ANCHOR_FILE);
        apply_services(node.netns(), manifests)?;
        let mut mesh_pods = Vec::new();
        for (slot, spec) in (0..).zip(pods) {
            let pod = node.add_pod(spec.name, spec.ip)?;
            let uids = PodUids::for_slot(slot);
            allow_unprivileged_ports(&pod)?;
            let out = pod
                .command(&proxy_bin, None)
                .arg("init")
                .args(Exemption::Uid.init_args(uids))
                .output()?;
            if !out.status.success() {
                bail!(
                    "init in {} failed: {}",
                    spec.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let token_file = write_token(
                &trust,
                Some(uids.proxy),
                &dir.path().join(format!("{}.token", spec.name)),
                namespace,
                spec.service_account,
                spec.name,
                86_400,
            )?;
            let mut cmd = proxy_command(
                &pod,
                Exemption::Uid,
                uids,
                &proxy_bin,
                &anchor,
                &token_file,
                Workload {
                    namespace,
                    pod: spec.name,
                    service_account: spec.service_account,
                },
            );
            cmd.args(proxy_args);
            let proxy = Process::spawn(cmd, "smidge-proxy")?;
            mesh_pods.push(MeshPod { pod, proxy, uids });
        }
        let mut mesh = Mesh {
            pods: mesh_pods,
            controller: None,
            controller_bin: controller_bin.clone(),
            namespace: namespace.to_string(),
            controller_args: controller_args
                .iter()
                .map(|a| a.to_string())
                .chain([
                    "--identity-dir".to_string(),
                    identity_dir.display().to_string(),
                    "--trust-domain".to_string(),
                    TRUST_DOMAIN.to_string(),
                ])
                .collect(),
            manifests: file,
            _dir: dir,
            node,
        };
        mesh.write_names(manifests)?;
        mesh.start_controller(&controller_bin)?;
        for p in &mesh.pods {
            mesh.wait_ready(p)?;
        }
        Ok(mesh)
    }

    fn start_controller(&mut self, bin: &Path) -> anyhow::Result<()> {
        let mut cmd = self.node.command(bin);
        cmd.args(["--provider", "file", "--manifests"])
            .arg(self.manifests.parent().context("manifest dir")?)
            .arg("--listen")
            .arg(format!("0.0.0.0:{CONTROLLER_PORT}"))
            .args(["--admin", "127.0.0.1:0"])
            .args(&self.controller_args);
        self.controller = Some(Process::spawn(cmd, "smidge-controller")?);
        Ok(())
    }

    /// The trust material of this mesh (ca.crt, issuer.crt, issuer.key, token.key).
    pub fn identity_dir(&self) -> PathBuf {
        self._dir.path().join("identity")
    }

    /// Kills the controller.
    pub fn stop_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            c.kill();
        }
    }

    /// Starts the controller again on the same address.
    pub fn restart_controller(&mut self) -> anyhow::Result<()> {
        self.stop_controller();
        let bin = self.controller_bin.clone();
        self.start_controller(&bin)
    }

    /// Replaces the manifests (atomically, as an editor's save or `kubectl apply` would), and
    /// the node's Service rules with them.
    pub fn write_manifests(&self, text: &str) -> anyhow::Result<()> {
        let tmp = self.manifests.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.manifests)?;
        self.write_names(text)?;
        apply_services(self.node.netns(), text)
    }

    /// Service names in every pod's `/etc/hosts`.
    fn write_names(&self, manifests: &str) -> anyhow::Result<()> {
        let hosts = crate::services::hosts(manifests, &self.namespace);
        for p in &self.pods {
            p.pod.write_hosts(&hosts)?;
        }
        Ok(())
    }

    pub fn pod(&self, name: &str) -> &MeshPod {
        match self.pods.iter().find(|p| p.pod.name == name) {
            Some(p) => p,
            None => panic!("no pod {name} in this mesh"),
        }
    }

    fn wait_ready(&self, p: &MeshPod) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = in_pod(&p.pod, || async {
                admin_get(ADMIN_PORT, "/ready")
                    .await
                    .map(|(code, _)| code == 200)
            })?;
            if matches!(ready, Ok(true)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the proxy of {} did not become ready; proxy log:\n{}\ncontroller log:\n{}",
                    p.pod.name,
                    p.proxy.log(),
                    self.controller
                        .as_ref()
                        .map(|c| c.log())
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the processes logged, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Some(c) = &self.controller {
            out.push_str(&format!("--- controller\n{}", c.log()));
        }
        for p in &self.pods {
            out.push_str(&format!("--- proxy {}\n{}", p.pod.name, p.proxy.log()));
        }
        out
    }

    /// The proxy's `/metrics` text, read on its loopback admin port from inside the pod.
    pub fn metrics(&self, pod: &str) -> anyhow::Result<String> {
        let (code, body) = in_pod(&self.pod(pod).pod, || {
            admin_get(ADMIN_PRIVATE_PORT, "/metrics")
        })??;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(body)
    }
}

/// How the proxy keeps its own connections out of the pod's redirect rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exemption {
    /// Each pod's proxy runs as a uid of its own ([`PodUids`]; as root, or in Kubernetes).
    Uid,
    /// The proxy shares the app's uid and marks its sockets with [`PROXY_MARK`] (in a user
    /// namespace, where only one uid is mapped).
    Mark,
}

/// The firewall mark of the proxy's connections under [`Exemption::Mark`].
pub const PROXY_MARK: u32 = 0x2102;

impl Exemption {
    /// `smidge-proxy init`'s arguments for this exemption, in a pod whose processes run as `uids`.
    pub fn init_args(self, uids: PodUids) -> Vec<String> {
        match self {
            Exemption::Uid => vec![format!("--proxy-uid={}", uids.proxy)],
            Exemption::Mark => vec![
                "--proxy-uid=none".to_string(),
                format!("--proxy-mark={PROXY_MARK:#x}"),
            ],
        }
    }
}

/// Writes a token proving `namespace`/`service_account` for `pod` to `path`, readable only by
/// the proxy: `owner`, or us when it shares our uid.
pub(crate) fn write_token(
    trust: &smidge_controller::identity::Trust,
    owner: Option<u32>,
    path: &Path,
    namespace: &str,
    service_account: &str,
    pod: &str,
    ttl_secs: u64,
) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let token = trust.token_key.sign(&smidge_controller::identity::Claims {
        ns: namespace.to_string(),
        sa: service_account.to_string(),
        pod: pod.to_string(),
        aud: smidge_controller::identity::token::AUDIENCE.to_string(),
        exp: unix_now() + ttl_secs,
    });
    std::fs::write(path, token).with_context(|| format!("writing {}", path.display()))?;
    if let Some(uid) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(uid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path.to_path_buf())
}

/// Whose proxy: the pod's namespace, name and ServiceAccount.
pub(crate) struct Workload<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub service_account: &'a str,
}

/// `smidge-proxy run` inside `pod`, kept out of its own redirect by `exemption`, pointed at the
/// node's controller.
pub(crate) fn proxy_command(
    pod: &Pod,
    exemption: Exemption,
    uids: PodUids,
    proxy_bin: &Path,
    anchor: &Path,
    token_file: &Path,
    who: Workload<'_>,
) -> Command {
    let mut cmd = match exemption {
        Exemption::Uid => pod.command(proxy_bin, Some(uids.proxy)),
        Exemption::Mark => {
            let mut c = pod.command(proxy_bin, None);
            c.arg("run").arg(format!("--socket-mark={PROXY_MARK:#x}"));
            c
        }
    };
    if exemption == Exemption::Uid {
        cmd.arg("run");
    }
    cmd.arg("--controller")
        .arg(format!("{GATEWAY}:{CONTROLLER_PORT}"))
        .args(["--namespace", who.namespace, "--pod", who.pod])
        .args(["--service-account", who.service_account])
        .arg("--trust-anchor")
        .arg(anchor)
        .arg("--token-file")
        .arg(token_file)
        .args(["--trust-domain", TRUST_DOMAIN]);
    cmd
}

/// Lets the pod's unprivileged apps bind ports below 1024, as container runtimes do for pods
/// (the sysctl is per network namespace).
pub(crate) fn allow_unprivileged_ports(pod: &Pod) -> anyhow::Result<()> {
    let out = pod
        .command(Path::new("sysctl"), None)
        .args(["-qw", "net.ipv4.ip_unprivileged_port_start=0"])
        .output()
        .context("running sysctl")?;
    if !out.status.success() {
        bail!(
            "allowing low ports in pod {}: {}",
            pod.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Makes the node route ClusterIP traffic of un-meshed clients to the Services' endpoints.
pub(crate) fn apply_services(node_netns: &str, manifests: &str) -> anyhow::Result<()> {
    apply_frontends(Some(node_netns), &crate::services::frontends(manifests))
}

/// A command run in `netns`, or in the caller's own namespace for `None`.
fn in_node(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, program]);
            cmd
        }
        None => Command::new(program),
    }
}

/// kube-proxy's rules for `frontends` in the node namespace `node_netns` (`None`: the caller's
/// own namespace): forwarding on, [`crate::services::rules`] applied (replacing what an earlier
/// call wrote) and entered from the built-in chains ([`crate::services::HOOKS`], once each).
/// The one rule writer of both control planes.
pub fn apply_frontends(
    node_netns: Option<&str>,
    frontends: &[crate::services::Frontend],
) -> anyhow::Result<()> {
    use std::io::Write;
    let run = |program: &str, args: &[&str]| -> anyhow::Result<std::process::Output> {
        in_node(node_netns, program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))
    };
    crate::netns::write_sysctl(
        node_netns,
        IP_FORWARD,
        "1",
        "enabling forwarding in the node",
    )?;
    let text = crate::services::rules(frontends, crate::netns::bridge_netfilter());
    let mut child = in_node(node_netns, "iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running iptables-restore")?;
    child
        .stdin
        .take()
        .context("iptables-restore stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "Service rules in the node: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for &(table, builtin, ours, matches) in crate::services::HOOKS {
        let rule: Vec<&str> = [builtin]
            .into_iter()
            .chain(matches.iter().copied())
            .chain(["-j", ours])
            .collect();
        let check: Vec<&str> = ["-t", table, "-C"]
            .into_iter()
            .chain(rule.iter().copied())
            .collect();
        if !run("iptables", &check)?.status.success() {
            let add: Vec<&str> = ["-t", table, "-A"]
                .into_iter()
                .chain(rule.iter().copied())
                .collect();
            let out = run("iptables", &add)?;
            if !out.status.success() {
                bail!(
                    "jump from {table} {builtin} to {ours}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    Ok(())
}

/// Removes what [`apply_frontends`] wrote in `node_netns` (`None`: the caller's own namespace):
/// the jumps from the built-in chains, then our chains. For a node that is the host's own
/// namespace, where nothing else removes them; a node namespace takes them along when deleted.
/// What is already gone is skipped, so it may run twice.
pub fn remove_frontends(node_netns: Option<&str>) -> anyhow::Result<()> {
    let iptables = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        in_node(node_netns, "iptables")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running iptables")
    };
    for &(table, builtin, ours, matches) in crate::services::HOOKS {
        let rule: Vec<&str> = ["-t", table, "-D", builtin]
            .into_iter()
            .chain(matches.iter().copied())
            .chain(["-j", ours])
            .collect();
        // Deleting a rule that is not there fails: that ends the loop.
        while iptables(&rule)?.status.success() {}
    }
    for &(table, _, ours, _) in crate::services::HOOKS {
        if !iptables(&["-t", table, "-n", "-L", ours])?.status.success() {
            continue;
        }
        for op in ["-F", "-X"] {
            let out = iptables(&["-t", table, op, ours])?;
            if !out.status.success() {
                bail!(
                    "removing {table} {ours}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
    Ok(())
}

/// Routes `cidr` (the Service CIDR) out of `device` in the node namespace `node_netns` (`None`:
/// the caller's own), so that the node's own processes can connect to ClusterIPs at all: a
/// connection needs a route before the nat OUTPUT chain rewrites its destination. Not needed
/// where a default route covers the CIDR. Also stops the node sending ICMP redirects: with
/// ClusterIPs routed back out of the bridge the pods came in on, the node would otherwise tell
/// pods to reach a ClusterIP directly, and the redirects use up the ICMP budget that the
/// rejection of a port without endpoints needs. Idempotent.
pub fn route_service_cidr(
    node_netns: Option<&str>,
    cidr: &str,
    device: &str,
) -> anyhow::Result<()> {
    if device.contains(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_' && c != '.') {
        bail!("{device:?} is not a network device name");
    }
    let script = format!(
        "for d in all default {device}; do echo 0 > /proc/sys/net/ipv4/conf/$d/send_redirects || exit 1; done"
    );
    let out = in_node(node_netns, "sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .context("running sh")?;
    if !out.status.success() {
        bail!(
            "turning ICMP redirects off in the node: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let out = in_node(node_netns, "ip")
        .args(["route", "replace", cidr, "dev", device])
        .stdin(Stdio::null())
        .output()
        .context("running ip route")?;
    if !out.status.success() {
        bail!(
            "routing the Service CIDR {cidr} out of {device}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` to completion on a fresh thread inside the pod's network namespace.
pub fn in_pod<F, Fut, T>(pod: &Pod, f: F) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let name = pod.name.clone();
    let pod = pod.clone();
    std::thread::spawn(move || -> anyhow::Result<T> {
        pod.enter()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(f()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in pod {name} panicked"))?
}

/// Starts `f` on a thread inside the pod's namespace and leaves it running.
pub fn spawn_in_pod<F, Fut>(pod: &Pod, f: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let pod = pod.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let entered = pod.enter();
        let ok = entered.is_ok();
        let _ = tx.send(entered);
        if !ok {
            return;
        }
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(f());
        }
    });
    rx.recv().context("pod thread")??;
    Ok(())
}

/// `GET` on a proxy's admin port from inside its pod.
pub async fn admin_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text)).await??;
    let code = text.split(' ').nth(1).context("status line")?.parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Turns on IPv4 forwarding in the node namespace `node_netns` (pods reach each other, the
/// node and Services through it).
pub(crate) fn enable_forwarding(node_netns: &str) -> anyhow::Result<()> {
    crate::netns::write_sysctl(
        Some(node_netns),
        IP_FORWARD,
        "1",
        "enabling forwarding in the node",
    )
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
