//! The running local cluster: the node, the controller, and a pod (network namespace, `init`
//! rules, proxy, app processes) for every replica the applied Deployments ask for. A reconcile
//! brings what runs in line with what is stored, restarts what crashed, probes readiness, and
//! rewrites the controller's manifests, the node's Service rules and the pods' hosts files when
//! they change. The daemon calls it; the pure decisions live in [`crate::workloads`] and
//! [`crate::render`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use smidge_controller::identity::{self, Trust};

use crate::mesh::{
    allow_unprivileged_ports, apply_services, proxy_command, write_token, Exemption, PodUids,
    Workload, CONTROLLER_PORT, GATEWAY, SLOTS, TRUST_DOMAIN,
};
use crate::netns::{self, Node};
use crate::objects::{Kind, Store};
use crate::render::{self, Phase, PodView};
use crate::workloads::{self, Deployment, PodTemplate};

/// The namespace and name `smidge local` shows the controller under, as if it were a pod.
pub const SYSTEM_NAMESPACE: &str = "smidge-system";
pub const CONTROLLER_POD: &str = "smidge-controller";
/// Tag of the node namespace, for finding a crashed run's leftovers.
pub const TAG: &str = "local";
/// The proxy's admin port, where readiness is read.
const ADMIN_PORT: u16 = 4191;
/// Tokens outlive any local session; the proxy renews its certificate with the same token.
const TOKEN_TTL_SECS: u64 = 365 * 86_400;
const FIRST_POD_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 1, 1);
/// Pod addresses from [`FIRST_POD_IP`] on, staying inside 10.88.0.0/16.
const POD_ADDRESSES: u32 = 65_000;

/// Where the programs are: the controller, the proxy, and the stand-ins for images.
#[derive(Clone, Debug)]
pub struct Programs {
    pub controller: PathBuf,
    pub proxy: PathBuf,
    /// Where image programs (`smidge-echo`, `smidge-sample-app`) are looked up.
    pub apps: PathBuf,
}

impl Programs {
    /// The programs beside the running executable (as `cargo build --bins` leaves them).
    pub fn beside_current_exe() -> anyhow::Result<Programs> {
        let bins = crate::mesh::Binaries::beside_current_exe()?;
        let apps = bins
            .proxy
            .parent()
            .context("the programs' directory")?
            .to_path_buf();
        Ok(Programs {
            controller: bins.controller,
            proxy: bins.proxy,
            apps,
        })
    }
}

/// A process the cluster started, its restarts and back-off.
struct Supervised {
    child: Option<Child>,
    restarts: u32,
    /// When it was found dead (or killed), for the back-off.
    down_since: Option<Instant>,
    /// Set by `stop`: not restarted until started again.
    stopped: bool,
}

impl Supervised {
    fn new(child: Option<Child>) -> Supervised {
        Supervised {
            child,
            restarts: 0,
            down_since: None,
            stopped: false,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True while the process runs; notes when it ended.
    fn alive(&mut self) -> bool {
        let exited = match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        };
        if exited {
            self.child = None;
            if self.down_since.is_none() {
                self.down_since = Some(Instant::now());
            }
        }
        !exited
    }

    /// Whether the back-off after a crash has passed: 1 s, doubling per restart, at most 10 s.
    fn due(&self) -> bool {
        let backoff = Duration::from_secs(1 << self.restarts.min(3)).min(Duration::from_secs(10));
        !self.stopped && self.down_since.is_none_or(|t| t.elapsed() >= backoff)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One running pod.
struct LivePod {
    view: PodView,
    netns: netns::Pod,
    template: PodTemplate,
    proxy: Option<Supervised>,
    apps: Vec<Supervised>,
    log_dir: PathBuf,
    token: Option<PathBuf>,
    /// Its slot's uids; used when the proxy is exempt by uid (not in a user namespace).
    uids: PodUids,
}

/// What `smidge local` can do to one pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PodAction {
    /// SIGKILL its processes; they come back after the crash back-off, as a kubelet would.
    Kill,
    /// Stop its processes and keep them stopped.
    Stop,
    /// Start a stopped pod.
    Start,
    /// Stop and start its processes now.
    Restart,
}

/// Where a pod lives, for `exec` and `logs`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Location {
    pub netns: String,
    pub log_dir: PathBuf,
}

/// The local cluster. Dropping it stops every process and removes every namespace.
pub struct Cluster {
    pub store: Store,
    pods: BTreeMap<(String, String), LivePod>,
    controller: Supervised,
    programs: Programs,
    state: PathBuf,
    trust: Trust,
    /// What the proxies read (the trust anchor, each its own token), outside the state
    /// directory, which may sit in a directory their uids cannot enter. Removed on drop.
    runtime: tempfile::TempDir,
    anchor: PathBuf,
    manifests: PathBuf,
    /// The manifests last written, to write (and re-apply rules) only on change.
    written: String,
    /// What they were last rendered from: the store's revision and the pods.
    published: Option<(u64, Vec<PodView>)>,
    names: u64,
    /// Offset of the last pod address handed out.
    last_ip: u32,
    exemption: Exemption,
    /// Deployments whose last pod could not be made: when, how many times in a row, and why.
    failures: BTreeMap<(String, String), (Instant, u32, String)>,
    // Last: namespaces go after the processes in them.
    node: Node,
}

fn log_file(path: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn spawn_logged(mut cmd: Command, log: &Path) -> anyhow::Result<Child> {
    let out = log_file(log)?;
    let err = out.try_clone()?;
    cmd.env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting a process logging to {}", log.display()))
}

impl Cluster {
    /// Creates the node and trust material under `state` and starts the controller; returns
    /// once the controller accepts connections. Moves the calling thread into the node's network
    /// namespace.
    pub fn start(
        programs: Programs,
        state: &Path,
        exemption: Exemption,
    ) -> anyhow::Result<Cluster> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
        // Keys, manifests and logs: for us alone. Pods read nothing here.
        std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700))?;
        let identity_dir = state.join("identity");
        if identity_dir.exists() {
            std::fs::remove_dir_all(&identity_dir)?;
        }
        identity::generate(&identity_dir, TRUST_DOMAIN)?;
        std::fs::set_permissions(&identity_dir, std::fs::Permissions::from_mode(0o700))?;
        let trust = Trust::load(&identity_dir)?;
        for dir in ["manifests", "tokens", "pods"] {
            let d = state.join(dir);
            if d.exists() {
                std::fs::remove_dir_all(&d)?;
            }
            if dir != "tokens" {
                std::fs::create_dir_all(&d)?;
            }
        }
        let runtime = runtime_dir(&identity_dir)?;
        let anchor = runtime.path().join(identity::trust::ANCHOR_FILE);
        let node = Node::create(TAG, GATEWAY)?;
        // Pods and the controller are reached by address from the node (readiness probes);
        // threads this one starts from here on begin in the node's namespace too.
        node.enter()?;
        let store = Store::new();
        let manifests = state.join("manifests").join("cluster.yaml");
        let written = render::controller_manifests(&store, &[]);
        std::fs::write(&manifests, &written)?;
        apply_services(node.netns(), &written)?;
        let mut cluster = Cluster {
            store,
            pods: BTreeMap::new(),
            controller: Supervised::new(None),
            programs,
            state: state.to_path_buf(),
            trust,
            runtime,
            anchor,
            manifests,
            written,
            published: None,
            names: u64::from(std::process::id()) << 20,
            last_ip: POD_ADDRESSES - 1,
            exemption,
            failures: BTreeMap::new(),
            node,
        };
        cluster.controller = Supervised::new(Some(cluster.spawn_controller()?));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.controller_ready() {
            if !cluster.controller.alive() || Instant::now() > deadline {
                bail!(
                    "the controller did not start; its log ({}):\n{}",
                    cluster.controller_log().display(),
                    std::fs::read_to_string(cluster.controller_log()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    fn controller_log(&self) -> PathBuf {
        self.state.join("controller.log")
    }

    fn spawn_controller(&self) -> anyhow::Result<Child> {
        let mut cmd = self.node.command(&self.programs.controller);
        cmd.env("RUST_LOG", "info")
            .args(["--provider", "file", "--manifests"])
            .arg(self.manifests.parent().context("manifest dir")?)
            .arg("--listen")
            .arg(format!("0.0.0.0:{CONTROLLER_PORT}"))
            .args(["--admin", "127.0.0.1:0"])
            .arg("--identity-dir")
            .arg(self.state.join("identity"))
            .args(["--trust-domain", TRUST_DOMAIN]);
        spawn_logged(cmd, &self.controller_log())
    }

    fn controller_ready(&self) -> bool {
        TcpStream::connect_timeout(
            &SocketAddr::from((GATEWAY, CONTROLLER_PORT)),
            Duration::from_millis(300),
        )
        .is_ok()
    }

    /// Applies files (name, text); one line per object, kubectl-style, and whether all applied.
    pub fn apply(&mut self, files: &[(String, String)]) -> (String, bool) {
        let mut out = String::new();
        let mut ok = true;
        for (source, text) in files {
            for r in self.store.apply_text(source, text) {
                match r {
                    Ok((key, change)) => out.push_str(&format!("{key} {change}\n")),
                    Err(e) => {
                        ok = false;
                        out.push_str(&format!("error: {e}\n"));
                    }
                }
            }
        }
        (out, ok)
    }

    /// Deletes what files name.
    pub fn delete(&mut self, files: &[(String, String)]) -> (String, bool) {
        let mut out = String::new();
        let mut ok = true;
        for (source, text) in files {
            for r in self.store.delete_text(source, text) {
                match r {
                    Ok(key) => out.push_str(&format!("{key} deleted\n")),
                    Err(e) => {
                        ok = false;
                        out.push_str(&format!("error: {e}\n"));
                    }
                }
            }
        }
        (out, ok)
    }

    /// Deletes pods by name; their Deployment replaces them, as in Kubernetes.
    pub fn delete_pods(&mut self, namespace: &str, names: &[String]) -> (String, bool) {
        let mut out = String::new();
        let mut ok = true;
        for name in names {
            match self.pods.remove(&(namespace.to_string(), name.clone())) {
                Some(pod) => {
                    self.remove_pod(pod);
                    out.push_str(&format!("pod/{name} deleted\n"));
                }
                None => {
                    ok = false;
                    out.push_str(&format!("error: pod {namespace}/{name} not found\n"));
                }
            }
        }
        (out, ok)
    }

    /// Brings the running pods in line with the store, restarts crashed processes, probes
    /// readiness, and publishes what changed.
    pub fn reconcile(&mut self) {
        self.scale();
        self.supervise();
        self.probe();
        if let Err(e) = self.publish() {
            tracing::warn!(error = format!("{e:#}"), "publishing the cluster's state");
        }
    }

    /// Creates and removes pods so each Deployment has its replicas of its current template.
    fn scale(&mut self) {
        let mut wanted: BTreeMap<(String, String), Deployment> = BTreeMap::new();
        for (key, stored) in self.store.list(Kind::Deployment, None) {
            match Deployment::from_value(&stored.applied) {
                Ok(d) => {
                    wanted.insert((key.namespace.clone(), key.name.clone()), d);
                }
                Err(e) => {
                    tracing::warn!(deployment = %key, field = %e.field, error = %e.message, "skipped")
                }
            }
        }
        // Pods whose Deployment is gone.
        let orphans: Vec<_> = self
            .pods
            .iter()
            .filter(|(_, p)| {
                !wanted.contains_key(&(p.view.namespace.clone(), p.view.owner.clone()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in orphans {
            if let Some(pod) = self.pods.remove(&key) {
                self.remove_pod(pod);
            }
        }
        for ((ns, name), d) in wanted {
            let have: Vec<(String, String)> = self
                .pods
                .values()
                .filter(|p| p.view.namespace == ns && p.view.owner == name)
                .map(|p| (p.view.name.clone(), p.view.template_hash.clone()))
                .collect();
            let (remove, add) = workloads::scale(&d, &have);
            for pod_name in remove {
                if let Some(pod) = self.pods.remove(&(ns.clone(), pod_name)) {
                    self.remove_pod(pod);
                }
            }
            let key = (ns.clone(), name.clone());
            if let Some((at, n, _)) = self.failures.get(&key) {
                // After a failure, wait 1 s, doubling per failure in a row, at most 30 s.
                let backoff = Duration::from_secs(1 << (*n).min(5)).min(Duration::from_secs(30));
                if add > 0 && at.elapsed() < backoff {
                    continue;
                }
            }
            for _ in 0..add {
                match self.create_pod(&ns, &name, &d.template) {
                    Ok(()) => {
                        self.failures.remove(&key);
                    }
                    Err(e) => {
                        let why = format!("{e:#}");
                        tracing::warn!(deployment = %format!("{ns}/{name}"), error = %why, "creating a pod");
                        let n = self.failures.get(&key).map_or(0, |f| f.1) + 1;
                        self.failures.insert(key.clone(), (Instant::now(), n, why));
                        break;
                    }
                }
            }
        }
    }

    /// The next free pod address after the last one handed out, as host-local IPAM does: an
    /// address just freed is not reused at once, so peers' neighbour caches holding the old
    /// pod's MAC cannot strand traffic to a new pod.
    /// The lowest pod slot (and so uids) no running pod holds.
    fn free_slot(&self) -> anyhow::Result<PodUids> {
        (0..SLOTS)
            .map(PodUids::for_slot)
            .find(|u| !self.pods.values().any(|p| p.uids == *u))
            .with_context(|| format!("all {SLOTS} pod uids are in use"))
    }

    fn free_ip(&mut self) -> anyhow::Result<Ipv4Addr> {
        let start = u32::from(FIRST_POD_IP);
        let ip = (1..=POD_ADDRESSES)
            .map(|i| Ipv4Addr::from(start + (self.last_ip + i) % POD_ADDRESSES))
            .find(|ip| !self.pods.values().any(|p| p.view.ip == *ip))
            .context("the pod network 10.88.0.0/16 is full")?;
        self.last_ip = u32::from(ip) - start;
        Ok(ip)
    }

    fn create_pod(
        &mut self,
        namespace: &str,
        owner: &str,
        template: &PodTemplate,
    ) -> anyhow::Result<()> {
        self.names += 1;
        let name = format!(
            "{owner}-{}-{}",
            template.hash,
            workloads::suffix(self.names.wrapping_mul(0x9e37_79b9_7f4a_7c15), 5)
        );
        let ip = self.free_ip()?;
        let uids = self.free_slot()?;
        let meshed = workloads::meshed(template, &self.store.namespace_meta(namespace));
        let log_dir = self.state.join("pods").join(namespace).join(&name);
        std::fs::create_dir_all(&log_dir)?;
        let netns = self.node.add_pod(&name, ip)?;
        if self.exemption == Exemption::Uid {
            if let Err(e) = allow_unprivileged_ports(&netns) {
                self.node.remove_pod(&netns)?;
                return Err(e);
            }
        }
        netns.write_hosts(&crate::services::hosts(&self.written, namespace))?;
        let mut pod = LivePod {
            view: PodView {
                namespace: namespace.into(),
                name: name.clone(),
                owner: owner.into(),
                template_hash: template.hash.clone(),
                ip,
                labels: template.labels.clone(),
                service_account: template.service_account.clone(),
                containers: template.containers.clone(),
                meshed,
                phase: Phase::Running,
                ready: false,
                restarts: 0,
            },
            netns,
            template: template.clone(),
            proxy: None,
            apps: Vec::new(),
            log_dir,
            token: None,
            uids,
        };
        if meshed {
            let out = pod
                .netns
                .command(&self.programs.proxy, None)
                .arg("init")
                .args(self.exemption.init_args(uids))
                .output()?;
            std::fs::write(
                pod.log_dir.join("init.log"),
                [out.stdout, out.stderr].concat(),
            )?;
            if !out.status.success() {
                self.node.remove_pod(&pod.netns)?;
                let log = std::fs::read_to_string(pod.log_dir.join("init.log")).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&pod.log_dir);
                bail!("init in pod {namespace}/{name} failed: {}", log.trim());
            }
            pod.token = Some(write_token(
                &self.trust,
                (self.exemption == Exemption::Uid).then_some(uids.proxy),
                &self
                    .runtime
                    .path()
                    .join("tokens")
                    .join(format!("{namespace}.{name}")),
                namespace,
                &template.service_account,
                &name,
                TOKEN_TTL_SECS,
            )?);
            pod.proxy = Some(Supervised::new(None));
        }
        pod.apps = template
            .containers
            .iter()
            .map(|_| Supervised::new(None))
            .collect();
        self.start_processes(&mut pod);
        tracing::info!(pod = %format!("{namespace}/{name}"), %ip, meshed, "pod created");
        self.pods.insert((namespace.into(), name), pod);
        Ok(())
    }

    /// Starts whichever of the pod's processes are not running.
    fn start_processes(&self, pod: &mut LivePod) {
        if let (Some(proxy), Some(token)) = (pod.proxy.as_mut(), pod.token.as_ref()) {
            if proxy.child.is_none() {
                let mut cmd = proxy_command(
                    &pod.netns,
                    self.exemption,
                    pod.uids,
                    &self.programs.proxy,
                    &self.anchor,
                    token,
                    Workload {
                        namespace: &pod.view.namespace,
                        pod: &pod.view.name,
                        service_account: &pod.view.service_account,
                    },
                );
                cmd.env("RUST_LOG", "info");
                match spawn_logged(cmd, &pod.log_dir.join("proxy.log")) {
                    Ok(c) => proxy.child = Some(c),
                    Err(e) => {
                        tracing::warn!(pod = %pod.view.name, error = format!("{e:#}"), "starting the proxy")
                    }
                }
            }
        }
        for (i, (app, container)) in pod
            .apps
            .iter_mut()
            .zip(&pod.template.containers)
            .enumerate()
        {
            if app.child.is_some() {
                continue;
            }
            let log = pod.log_dir.join(if i == 0 {
                "app.log".to_string()
            } else {
                format!("{}.log", container.name)
            });
            let program = self.programs.apps.join(container.program.executable());
            if !program.exists() {
                let _ = log_file(&log).and_then(|mut f| {
                    writeln!(
                        f,
                        "{} (the program for image {}) is missing: build every binary first",
                        program.display(),
                        container.image
                    )
                    .map_err(Into::into)
                });
                continue;
            }
            // Unprivileged, as its slot's app uid: no capability, no other pod's files. In a user
            // namespace only one uid is mapped, so apps share it with the proxy there.
            let app_uid = (self.exemption == Exemption::Uid).then_some(pod.uids.app);
            let mut cmd = pod.netns.command(&program, app_uid);
            cmd.args(&container.args)
                .current_dir("/")
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOSTNAME", &pod.view.name)
                .envs(container.env.iter().map(|(k, v)| (k, v)));
            match spawn_logged(cmd, &log) {
                Ok(c) => app.child = Some(c),
                Err(e) => {
                    tracing::warn!(pod = %pod.view.name, error = format!("{e:#}"), "starting an app")
                }
            }
        }
    }

    fn remove_pod(&mut self, mut pod: LivePod) {
        if let Some(p) = pod.proxy.as_mut() {
            p.kill();
        }
        for a in &mut pod.apps {
            a.kill();
        }
        if let Err(e) = self.node.remove_pod(&pod.netns) {
            tracing::warn!(pod = %pod.view.name, error = format!("{e:#}"), "removing the pod's namespace");
        }
        if let Some(t) = &pod.token {
            let _ = std::fs::remove_file(t);
        }
        tracing::info!(pod = %format!("{}/{}", pod.view.namespace, pod.view.name), "pod removed");
    }

    /// Restarts crashed processes after their back-off, and the controller likewise.
    fn supervise(&mut self) {
        if !self.controller.alive() && self.controller.due() {
            match self.spawn_controller() {
                Ok(c) => {
                    self.controller.child = Some(c);
                    self.controller.restarts += 1;
                    self.controller.down_since = None;
                    tracing::info!("controller restarted");
                }
                Err(e) => tracing::warn!(error = format!("{e:#}"), "restarting the controller"),
            }
        }
        let keys: Vec<_> = self.pods.keys().cloned().collect();
        for key in keys {
            let Some(mut pod) = self.pods.remove(&key) else {
                continue;
            };
            let mut dead = false;
            let mut restart = true;
            for p in pod.proxy.iter_mut().chain(pod.apps.iter_mut()) {
                if !p.alive() {
                    dead = true;
                    restart &= p.due();
                }
            }
            if dead && restart {
                pod.view.restarts += 1;
                for p in pod.proxy.iter_mut().chain(pod.apps.iter_mut()) {
                    if p.child.is_none() {
                        p.restarts += 1;
                        p.down_since = None;
                    }
                }
                self.start_processes(&mut pod);
            }
            let stopped = pod.apps.iter().any(|a| a.stopped);
            pod.view.phase = match (stopped, dead && !restart) {
                (true, _) => Phase::Stopped,
                (false, true) => Phase::CrashLoopBackOff,
                (false, false) => Phase::Running,
            };
            self.pods.insert(key, pod);
        }
    }

    /// Readiness: the proxy's `/ready` for meshed pods, else the first container port accepting
    /// connections (or just running, without ports).
    fn probe(&mut self) {
        for pod in self.pods.values_mut() {
            let running = pod.apps.iter().all(|a| a.child.is_some())
                && pod.proxy.as_ref().is_none_or(|p| p.child.is_some());
            pod.view.ready = running
                && if pod.view.meshed {
                    proxy_ready(pod.view.ip)
                } else {
                    match pod.template.containers.iter().flat_map(|c| &c.ports).next() {
                        Some(p) => TcpStream::connect_timeout(
                            &SocketAddr::from((pod.view.ip, p.port)),
                            Duration::from_millis(300),
                        )
                        .is_ok(),
                        None => true,
                    }
                };
        }
    }

    /// Writes the controller's manifests, the node's Service rules and the pods' hosts files
    /// when what they are made from changed.
    fn publish(&mut self) -> anyhow::Result<()> {
        let views = self.views();
        // Most reconciles change nothing: skip rendering when its inputs are the same.
        let inputs = (self.store.revision, views);
        if self.published.as_ref() == Some(&inputs) {
            return Ok(());
        }
        let text = render::controller_manifests(&self.store, &inputs.1);
        if text == self.written {
            self.published = Some(inputs);
            return Ok(());
        }
        let tmp = self.manifests.with_extension("tmp");
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, &self.manifests)?;
        apply_services(self.node.netns(), &text)?;
        // A pod's hosts file depends only on its namespace: one comparison per namespace.
        let namespaces: std::collections::BTreeSet<&str> = self
            .pods
            .values()
            .map(|p| p.view.namespace.as_str())
            .collect();
        let changed: BTreeMap<&str, String> = namespaces
            .into_iter()
            .filter_map(|ns| {
                let hosts = crate::services::hosts(&text, ns);
                (crate::services::hosts(&self.written, ns) != hosts).then_some((ns, hosts))
            })
            .collect();
        for pod in self.pods.values() {
            if let Some(hosts) = changed.get(pod.view.namespace.as_str()) {
                pod.netns.write_hosts(hosts)?;
            }
        }
        self.written = text;
        // Only once everything is written: a failure is retried on the next reconcile.
        self.published = Some(inputs);
        Ok(())
    }

    fn views(&self) -> Vec<PodView> {
        self.pods.values().map(|p| p.view.clone()).collect()
    }

    /// Kills, stops, starts or restarts a pod (or the controller, under its system name).
    pub fn pod_action(
        &mut self,
        namespace: &str,
        name: &str,
        action: PodAction,
    ) -> anyhow::Result<String> {
        if namespace == SYSTEM_NAMESPACE && name == CONTROLLER_POD {
            match action {
                PodAction::Kill | PodAction::Restart => {
                    self.controller.kill();
                    self.controller.down_since = Some(Instant::now());
                    if action == PodAction::Restart {
                        self.controller.child = Some(self.spawn_controller()?);
                        self.controller.restarts += 1;
                        self.controller.down_since = None;
                    }
                }
                PodAction::Stop | PodAction::Start => {
                    bail!("the controller can be killed or restarted, not stopped")
                }
            }
            return Ok(format!("pod/{name} {}", past(action)));
        }
        let key = (namespace.to_string(), name.to_string());
        let Some(mut pod) = self.pods.remove(&key) else {
            bail!("pod {namespace}/{name} not found");
        };
        for p in pod.proxy.iter_mut().chain(pod.apps.iter_mut()) {
            match action {
                PodAction::Kill => {
                    p.kill();
                    p.down_since = Some(Instant::now());
                }
                PodAction::Stop => {
                    p.kill();
                    p.stopped = true;
                }
                PodAction::Start => {
                    p.stopped = false;
                    p.down_since = None;
                }
                PodAction::Restart => {
                    p.kill();
                    p.down_since = None;
                }
            }
        }
        if matches!(action, PodAction::Start | PodAction::Restart) {
            if action == PodAction::Restart {
                pod.view.restarts += 1;
            }
            self.start_processes(&mut pod);
        }
        pod.view.ready = false;
        self.pods.insert(key, pod);
        self.reconcile();
        Ok(format!("pod/{name} {}", past(action)))
    }

    /// Where a pod's namespace and logs are.
    pub fn locate(&self, namespace: &str, name: &str) -> anyhow::Result<Location> {
        if namespace == SYSTEM_NAMESPACE && name == CONTROLLER_POD {
            return Ok(Location {
                netns: self.node.netns().to_string(),
                log_dir: self.state.clone(),
            });
        }
        let pod = self
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .with_context(|| format!("pod {namespace}/{name} not found"))?;
        Ok(Location {
            netns: pod.netns.netns.clone(),
            log_dir: pod.log_dir.clone(),
        })
    }

    /// Every pod as `get` shows it, the controller included under the system namespace.
    pub fn pod_views(&mut self) -> Vec<PodView> {
        let mut views = self.views();
        let ready = self.controller.child.is_some() && self.controller_ready();
        views.push(PodView {
            namespace: SYSTEM_NAMESPACE.into(),
            name: CONTROLLER_POD.into(),
            owner: CONTROLLER_POD.into(),
            template_hash: String::new(),
            ip: GATEWAY,
            labels: [("app".to_string(), CONTROLLER_POD.to_string())].into(),
            service_account: CONTROLLER_POD.into(),
            containers: Vec::new(),
            meshed: false,
            phase: if self.controller.child.is_some() {
                Phase::Running
            } else {
                Phase::CrashLoopBackOff
            },
            ready,
            restarts: self.controller.restarts,
        });
        views
    }

    /// Why the last pod of a Deployment could not be made, while that keeps happening.
    pub fn failure(&self, namespace: &str, name: &str) -> Option<&str> {
        self.failures
            .get(&(namespace.to_string(), name.to_string()))
            .map(|f| f.2.as_str())
    }

    /// Deployments whose rollout is not complete: "ns/name: ready/wanted".
    pub fn unready(&self) -> Vec<String> {
        let views = self.views();
        self.store
            .list(Kind::Deployment, None)
            .filter_map(|(key, stored)| {
                let d = Deployment::from_value(&stored.applied).ok()?;
                let mine: Vec<_> = views
                    .iter()
                    .filter(|p| p.namespace == key.namespace && p.owner == key.name)
                    .collect();
                let ready = mine
                    .iter()
                    .filter(|p| p.ready && p.template_hash == d.template.hash)
                    .count();
                let why = self
                    .failure(&key.namespace, &key.name)
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default();
                (ready != d.replicas as usize || mine.len() != d.replicas as usize).then(|| {
                    format!(
                        "{}/{}: {ready}/{} ready{why}",
                        key.namespace, key.name, d.replicas
                    )
                })
            })
            .collect()
    }

    /// Stops every process, removes the pods' namespaces (the node's goes on drop) and the
    /// identity keys (`up` makes new ones; left on disk they would mint tokens and certificates).
    pub fn shutdown(&mut self) {
        let pods = std::mem::take(&mut self.pods);
        for (_, pod) in pods {
            self.remove_pod(pod);
        }
        self.controller.kill();
        remove_identity(&self.state);
    }
}

fn past(action: PodAction) -> &'static str {
    match action {
        PodAction::Kill => "killed",
        PodAction::Stop => "stopped",
        PodAction::Start => "started",
        PodAction::Restart => "restarted",
    }
}

/// `GET /ready` on a pod's proxy admin port (which `init` leaves un-redirected).
fn proxy_ready(ip: Ipv4Addr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &SocketAddr::from((ip, ADMIN_PORT)),
        Duration::from_millis(300),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /ready HTTP/1.0\r\nHost: admin\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// Removes the identity directory (CA and token signing keys) under `state`.
pub fn remove_identity(state: &Path) {
    let dir = state.join("identity");
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "removing the identity keys");
        }
    }
}

/// A fresh directory for what the proxies read: the trust anchor (world-readable) and a
/// `tokens/` directory (each token readable only by its proxy's uid). It lives in the temporary
/// directory, not under the state directory, whose parents may be closed to other uids
/// (`mktemp -d` makes 0700 ones).
fn runtime_dir(identity_dir: &Path) -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("smidge-local-")
        .tempdir()
        .context("creating the proxies' runtime directory")?;
    let enterable = || std::fs::Permissions::from_mode(0o711);
    std::fs::set_permissions(dir.path(), enterable())?;
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens)?;
    std::fs::set_permissions(&tokens, enterable())?;
    let anchor = dir.path().join(identity::trust::ANCHOR_FILE);
    std::fs::copy(identity_dir.join(identity::trust::ANCHOR_FILE), &anchor)
        .context("copying the trust anchor for the proxies")?;
    std::fs::set_permissions(&anchor, std::fs::Permissions::from_mode(0o644))?;
    Ok(dir)
}

/// Cleans what a crashed earlier run left: its namespaces (killing what runs in them).
pub fn remove_stale() -> anyhow::Result<usize> {
    netns::remove_stale(TAG)
}
