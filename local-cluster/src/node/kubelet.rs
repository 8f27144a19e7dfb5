//! The kubelet's pod loop: watches the pods bound to this node and, a few times a second, brings
//! each one's sandbox, volumes and containers in line with its spec ([`super::plan`]) by the
//! kubelet's rules ([`super::lifecycle`], [`super::probe`]), writes its status
//! ([`super::status`]), and carries out graceful deletion. Pods found on disk at start (a
//! restarted agent) are adopted, not recreated.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;

use super::agent::AgentConfig;
use super::lifecycle::{self, Action, ContainerState, Kind, Observed};
use super::plan::{self, Argv, ConfigMapData, ContainerPlan, Facts, Lookup, PodPlan};
use super::probe::{ProbeConfig, ProbeKind, ProbeState, Transition};
use super::runtime::{self, Container, PodDirs, PodRecord, VolumeFile};
use super::shim::{self, BindMount};

/// How often every pod is looked at (sooner when a pod changes).
const SYNC_EVERY: Duration = Duration::from_millis(250);
/// How often ConfigMaps and Secrets that volumes project are read again.
const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// The `kubernetes` Service's address, which in-cluster clients find in their environment.
const KUBERNETES_SERVICE: (&str, &str) = ("10.96.0.1", "443");

/// A pod's sandbox, as kube-proxy's hosts files need it.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub namespace: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub hostname: String,
}

/// What other tasks read of the pods: their sandboxes (hosts files) and logs.
#[derive(Default)]
struct Snapshot {
    /// (namespace, network namespace, ip, name) of each pod with a sandbox.
    sandboxes: Vec<Sandbox>,
    /// (namespace, name) → (uid, container → attempts).
    logs: BTreeMap<(String, String), (String, BTreeMap<String, u32>)>,
}

pub struct Kubelet {
    config: AgentConfig,
    client: kube::Client,
    snapshot: Mutex<Snapshot>,
    /// The Services kube-proxy last saw, for the hosts file of a new sandbox.
    services: Mutex<Vec<k8s_openapi::api::core::v1::Service>>,
}

impl Kubelet {
    pub fn new(config: AgentConfig, client: kube::Client) -> Kubelet {
        Kubelet {
            config,
            client,
            snapshot: Mutex::new(Snapshot::default()),
            services: Mutex::new(Vec::new()),
        }
    }

    /// Every pod sandbox.
    pub fn sandboxes(&self) -> Vec<Sandbox> {
        self.snapshot
            .lock()
            .map(|s| s.sandboxes.clone())
            .unwrap_or_default()
    }

    /// Notes the Services kube-proxy sees (for new sandboxes' hosts files).
    pub fn set_services(&self, services: Vec<k8s_openapi::api::core::v1::Service>) {
        if let Ok(mut s) = self.services.lock() {
            *s = services;
        }
    }

    /// The `/etc/hosts` of a pod in `namespace`: every Service's names, and the pod's own.
    pub fn hosts(&self, namespace: &str, own: Option<(Ipv4Addr, &str)>) -> String {
        let services = self.services.lock().map(|s| s.clone()).unwrap_or_default();
        let mut text = super::services::hosts(&services, namespace);
        if let Some((ip, hostname)) = own {
            text.push_str(&format!("{ip} {hostname}\n"));
        }
        text
    }

    fn shim_program(&self) -> PathBuf {
        self.config.programs.join("smidge-node")
    }

    /// The pod loop; returns only if the watch cannot be made.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let (store, writer) = reflector::store::<Pod>();
        let selector = format!("spec.nodeName={}", self.config.node_name);
        let stream = reflector(
            writer,
            watcher(pods, watcher::Config::default().fields(&selector)),
        )
        .default_backoff()
        .touched_objects();
        let (poke_tx, mut poke) = tokio::sync::mpsc::channel::<()>(1);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(_) => {
                        let _ = poke_tx.try_send(());
                    }
                    Err(e) => tracing::warn!(error = %e, "watching this node's pods"),
                }
            }
        });
        store
            .wait_until_ready()
            .await
            .context("the pod watch ended before its first list")?;
        let mut workers: BTreeMap<String, Worker> = BTreeMap::new();
        for record in runtime::records(&self.config.state) {
            tracing::info!(pod = %format!("{}/{}", record.namespace, record.name), uid = %record.uid, "adopting a pod found on disk");
            let uid = record.uid.clone();
            workers.insert(uid, Worker::adopt(&self.config, record));
        }
        let mut ipam = Ipam::default();
        loop {
            let pods: Vec<Arc<Pod>> = store.state();
            let mut seen = BTreeSet::new();
            for pod in &pods {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                seen.insert(uid.clone());
                let worker = workers
                    .entry(uid.clone())
                    .or_insert_with(|| Worker::new(&self.config, pod));
                if let Err(e) = worker.sync(&self, pod, &mut ipam).await {
                    tracing::warn!(pod = %format!("{}/{}", worker.record.namespace, worker.record.name), error = format!("{e:#}"), "syncing a pod");
                }
            }
            // Gone from the API (deleted for good, or bound elsewhere): nothing may keep running.
            let gone: Vec<String> = workers
                .keys()
                .filter(|uid| !seen.contains(*uid))
                .cloned()
                .collect();
            for uid in gone {
                if let Some(mut w) = workers.remove(&uid) {
                    tracing::info!(pod = %format!("{}/{}", w.record.namespace, w.record.name), "pod gone from the API: removing it");
                    w.teardown(&mut ipam);
                }
            }
            workers.retain(|_, w| !w.removed);
            self.publish(&workers);
            let _ = tokio::time::timeout(SYNC_EVERY, poke.recv()).await;
        }
    }

    fn publish(&self, workers: &BTreeMap<String, Worker>) {
        let mut snap = Snapshot::default();
        for w in workers.values() {
            if let Some(ip) = w.record.ip {
                snap.sandboxes.push(Sandbox {
                    namespace: w.record.namespace.clone(),
                    netns: w.record.netns.clone(),
                    ip,
                    hostname: w.record.name.clone(),
                });
            }
            snap.logs.insert(
                (w.record.namespace.clone(), w.record.name.clone()),
                (
                    w.record.uid.clone(),
                    w.record
                        .containers
                        .iter()
                        .map(|(n, c)| (n.clone(), c.attempts))
                        .collect(),
                ),
            );
        }
        if let Ok(mut s) = self.snapshot.lock() {
            *s = snap;
        }
    }
}

impl super::logs::LogSource for Kubelet {
    fn path(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Option<std::path::PathBuf> {
        let snap = self.snapshot.lock().ok()?;
        let (uid, containers) = snap.logs.get(&(namespace.to_string(), pod.to_string()))?;
        let attempts = *containers.get(container)?;
        let attempt = if previous {
            attempts.checked_sub(2)?
        } else {
            attempts.checked_sub(1)?
        };
        Some(PodDirs::new(&self.config.state, uid).log(container, attempt))
    }
}

/// Pod addresses, handed out round-robin from 10.88.1.1 as host-local IPAM does (a freed
/// address is not reused at once).
#[derive(Default)]
struct Ipam {
    used: BTreeSet<Ipv4Addr>,
    last: u32,
}

impl Ipam {
    const FIRST: Ipv4Addr = Ipv4Addr::new(10, 88, 1, 1);
    const SIZE: u32 = 65_000;

    fn allocate(&mut self) -> anyhow::Result<Ipv4Addr> {
        let start = u32::from(Self::FIRST);
        for i in 1..=Self::SIZE {
            let offset = (self.last + i) % Self::SIZE;
            let ip = Ipv4Addr::from(start + offset);
            if !self.used.contains(&ip) {
                self.used.insert(ip);
                self.last = offset;
                return Ok(ip);
            }
        }
        anyhow::bail!("the pod network 10.88.0.0/16 is full")
    }
}

/// A token the pod's projected volumes hold.
#[derive(Clone)]
struct Token {
    value: String,
    issued: SystemTime,
    expires: SystemTime,
}

/// ConfigMaps and Secrets read for one pod.
#[derive(Default)]
struct Fetched {
    config_maps: BTreeMap<String, ConfigMapData>,
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Lookup for Fetched {
    fn config_map(&self, _namespace: &str, name: &str) -> Option<ConfigMapData> {
        self.config_maps.get(name).cloned()
    }
    fn secret(&self, _namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.secrets.get(name).cloned()
    }
}

/// Graceful deletion in progress.
struct Terminating {
    /// SIGKILL for whatever still runs after this.
    deadline: Instant,
    /// Sidecars get SIGTERM once the app containers are gone.
    sidecars_signalled: bool,
}

/// One pod on this node.
struct Worker {
    record: PodRecord,
    dirs: PodDirs,
    containers: BTreeMap<String, Container>,
    states: BTreeMap<String, ContainerState>,
    probes: BTreeMap<(String, ProbeKind), ProbeState>,
    ready: BTreeMap<String, bool>,
    tokens: BTreeMap<(Option<String>, i64), Token>,
    fetched: Fetched,
    fetched_at: Option<Instant>,
    /// Why the volumes could not be written, while that lasts.
    volume_error: Option<String>,
    last_status: Option<serde_json::Value>,
    terminating: Option<Terminating>,
    /// Set once the pod is gone: the loop drops the worker.
    removed: bool,
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Worker {
    fn new(config: &AgentConfig, pod: &Pod) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let (netns, link) = runtime::sandbox_names(&config.node_netns, &uid);
        let record = PodRecord {
            uid: uid.clone(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            netns,
            link,
            ip: None,
            started_at: runtime::now(),
            containers: BTreeMap::new(),
        };
        Worker::from_record(config, record)
    }

    fn from_record(config: &AgentConfig, record: PodRecord) -> Worker {
        Worker {
            dirs: PodDirs::new(&config.state, &record.uid),
            record,
            containers: BTreeMap::new(),
            states: BTreeMap::new(),
            probes: BTreeMap::new(),
            ready: BTreeMap::new(),
            tokens: BTreeMap::new(),
            fetched: Fetched::default(),
            fetched_at: None,
            volume_error: None,
            last_status: None,
            terminating: None,
            removed: false,
        }
    }

    /// A pod an earlier agent ran: its running shims are kept, and containers that ended while
    /// no agent watched are seen as exited.
    fn adopt(config: &AgentConfig, record: PodRecord) -> Worker {
        let mut w = Worker::from_record(config, record);
        let names: Vec<String> = w.record.containers.keys().cloned().collect();
        for name in names {
            let Some(rec) = w.record.containers.get(&name).cloned() else {
                continue;
            };
            let mut state = ContainerState {
                restarts: rec.attempts.saturating_sub(1),
                ..ContainerState::NEW
            };
            let spec_path = w.dirs.container(&name).join("spec.json");
            match rec
                .shim_pid
                .and_then(|_| Container::adopt(spec_path, rec.shim_pid))
            {
                Some(c) if c.shim_pid.is_some() => {
                    state.observed = Observed::Running {
                        since: ts(rec.started_at),
                    };
                    // Probes start afresh; a container that runs was started before.
                    state.started = true;
                    w.containers.insert(name.clone(), c);
                }
                Some(mut c) => {
                    if let Some(exit) = c.poll() {
                        state.observed = Observed::Exited(lifecycle::Exit {
                            code: exit.code,
                            signal: exit.signal,
                            started: ts(rec.started_at),
                            finished: ts(exit.finished_at),
                        });
                    }
                }
                None => {
                    if let Some(exit) = rec.exited.clone() {
                        state.observed = Observed::Exited(lifecycle::Exit {
                            code: exit.code,
                            signal: exit.signal,
                            started: ts(rec.started_at),
                            finished: ts(exit.finished_at),
                        });
                    }
                }
            }
            w.states.insert(name, state);
        }
        w
    }

    fn save(&self) {
        if let Err(e) = std::fs::create_dir_all(&self.dirs.root)
            .map_err(anyhow::Error::from)
            .and_then(|()| self.record.save(&self.dirs.record()))
        {
            tracing::warn!(pod = %self.record.name, error = format!("{e:#}"), "saving a pod record");
        }
    }

    fn facts(&self, config: &AgentConfig) -> Facts {
        Facts {
            pod_ips: self.record.ip.iter().map(|ip| ip.to_string()).collect(),
            host_ips: vec![config.node_ip.to_string()],
        }
    }

    async fn sync(&mut self, k: &Kubelet, pod: &Pod, ipam: &mut Ipam) -> anyhow::Result<()> {
        if self.removed {
            return Ok(());
        }
        if let Some(ip) = self.record.ip {
            ipam.used.insert(ip);
        } else {
            let ip = ipam.allocate()?;
            std::fs::create_dir_all(&self.dirs.root)?;
            if let Err(e) =
                runtime::create_sandbox(&k.config.node_netns, k.config.node_ip, &self.record, ip)
            {
                ipam.used.remove(&ip);
                return Err(e);
            }
            self.record.ip = Some(ip);
            self.record.started_at = runtime::now();
            let hosts = k.hosts(&self.record.namespace, Some((ip, &self.record.name)));
            crate::netns::write_hosts(&self.record.netns, &hosts)?;
            self.save();
            tracing::info!(pod = %format!("{}/{}", self.record.namespace, self.record.name), %ip, "sandbox made");
        }
        let plan = match plan::plan(pod) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(pod = %self.record.name, field = %e.field, error = %e.message, "the pod cannot be run");
                return Ok(());
            }
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return self.terminate(k, pod, &plan, ipam).await;
        }
        self.refresh_volumes(k, &plan).await;
        self.observe();
        self.run_probes(&plan, &k.config.programs).await;
        self.act(k, &plan);
        self.write_status(k, pod, &plan).await;
        Ok(())
    }

    /// Every container of the plan, in order, as the lifecycle rules see them.
    fn specs(plan: &PodPlan) -> Vec<(lifecycle::ContainerSpec, &ContainerPlan)> {
        plan.init
            .iter()
            .map(|c| {
                let kind = if c.sidecar { Kind::Sidecar } else { Kind::Init };
                (c, kind)
            })
            .chain(plan.containers.iter().map(|c| (c, Kind::App)))
            .map(|(c, kind)| {
                (
                    lifecycle::ContainerSpec {
                        name: c.name.clone(),
                        kind,
                    },
                    c,
                )
            })
            .collect()
    }

    /// Reads the ConfigMaps and Secrets the pod uses, requests and refreshes its tokens, and
    /// writes its volumes.
    async fn refresh_volumes(&mut self, k: &Kubelet, plan: &PodPlan) {
        let now = SystemTime::now();
        // A pod waiting for something (the namespace's kube-root-ca.crt not yet published, a
        // ConfigMap created after it) looks again at every sync.
        let mut due = self.volume_error.is_some()
            || self.fetched_at.is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        for spec in plan::token_requests(plan) {
            let key = (spec.audience.clone(), spec.expiration_seconds);
            let early = k.config.token_refresh_secs.map(Duration::from_secs);
            let fresh = self.tokens.get(&key).is_some_and(|t| {
                !plan::refresh_due(t.issued, t.expires, now)
                    && early.is_none_or(|e| now.duration_since(t.issued).unwrap_or_default() < e)
            });
            if fresh {
                continue;
            }
            match request_token(k, plan, spec.audience.as_deref(), spec.expiration_seconds).await {
                Ok(t) => {
                    self.tokens.insert(key, t);
                    due = true;
                }
                Err(e) => {
                    tracing::warn!(pod = %plan.name, error = format!("{e:#}"), "requesting a service-account token");
                    self.volume_error = Some(format!("{e:#}"));
                }
            }
        }
        if !due {
            return;
        }
        self.fetched = fetch(k, plan).await;
        self.fetched_at = Some(Instant::now());
        let facts = self.facts(&k.config);
        let tokens = self.tokens.clone();
        let token = |aud: Option<&str>, exp: i64| {
            tokens
                .get(&(aud.map(str::to_string), exp))
                .map(|t| t.value.clone())
        };
        let mut problem = None;
        for v in &plan.volumes {
            if let plan::VolumeSource::Unsupported(kind) = &v.source {
                problem = Some(format!(
                    "volume {:?}: {kind} volumes are not supported by the local node",
                    v.name
                ));
                continue;
            }
            let dir = self.dirs.volume(&v.name);
            let result =
                plan::volume_files(plan, v, &facts, &self.fetched, &token).and_then(|files| {
                    let files: Vec<VolumeFile> = files
                        .into_iter()
                        .map(|f| VolumeFile {
                            path: f.path,
                            data: f.data,
                            mode: f.mode,
                            uid: f.uid.and_then(|u| u32::try_from(u).ok()),
                            gid: f.gid.and_then(|g| u32::try_from(g).ok()),
                        })
                        .collect();
                    runtime::write_volume(&dir, &files).map_err(|e| format!("{e:#}"))
                });
            if let Err(e) = result {
                problem = Some(format!("volume {:?}: {e}", v.name));
            }
        }
        self.volume_error = problem;
    }

    /// Notes containers that ended.
    fn observe(&mut self) {
        let names: Vec<String> = self.containers.keys().cloned().collect();
        for name in names {
            let Some(c) = self.containers.get_mut(&name) else {
                continue;
            };
            let Some(exit) = c.poll() else { continue };
            self.containers.remove(&name);
            let rec = self.record.containers.entry(name.clone()).or_default();
            rec.shim_pid = None;
            rec.exited = Some(exit.clone());
            let started = rec.started_at;
            self.ready.insert(name.clone(), false);
            self.probes.retain(|(n, _), _| *n != name);
            if let Some(state) = self.states.get_mut(&name) {
                state.observed = Observed::Exited(lifecycle::Exit {
                    code: exit.code,
                    signal: exit.signal,
                    started: ts(started),
                    finished: ts(exit.finished_at),
                });
                state.probe_failed = None;
            }
            tracing::info!(pod = %self.record.name, container = %name, code = exit.code, "container exited");
            self.save();
        }
    }

    /// Runs the probes that are due, all at once.
    async fn run_probes(&mut self, plan: &PodPlan, programs: &std::path::Path) {
        let now = Timestamp::now();
        let Some(ip) = self.record.ip else { return };
        let mut due = Vec::new();
        for (spec, c) in Self::specs(plan) {
            let Some(state) = self.states.get(&spec.name) else {
                continue;
            };
            let Observed::Running { since } = state.observed else {
                continue;
            };
            for (kind, probe) in [
                (ProbeKind::Startup, &c.startup_probe),
                (ProbeKind::Readiness, &c.readiness_probe),
                (ProbeKind::Liveness, &c.liveness_probe),
            ] {
                let Some(probe) = probe else { continue };
                if super::probe::gated_by_startup(kind) && !state.started {
                    continue;
                }
                let entry = self
                    .probes
                    .entry((spec.name.clone(), kind))
                    .or_insert_with(|| ProbeState::new(kind, probe_config(kind, probe), since));
                if entry.due(now) {
                    let pid = self
                        .containers
                        .get(&spec.name)
                        .and_then(|c| shim::container_pid(&c.spec));
                    due.push((spec.name.clone(), kind, probe.clone(), pid));
                }
            }
        }
        let netns = self.record.netns.clone();
        let programs = programs.to_path_buf();
        let results =
            futures_util::future::join_all(due.into_iter().map(|(name, kind, probe, pid)| {
                let netns = netns.clone();
                let programs = programs.clone();
                async move {
                    let ok = super::probing::run(&probe, ip, &netns, pid, &programs).await;
                    (name, kind, ok)
                }
            }))
            .await;
        let now = Timestamp::now();
        for (name, kind, ok) in results {
            if let Some(p) = self.probes.get_mut(&(name.clone(), kind)) {
                // Act on the transition, not on the result in effect: a startup probe is not
                // passing until it passes, and failing before its threshold kills nothing.
                let transition = p.record(ok, now);
                let passing = p.passing();
                if let Some(state) = self.states.get_mut(&name) {
                    match transition {
                        Some(Transition::Started) => state.started = true,
                        Some(Transition::Kill) => state.probe_failed = Some(kind),
                        Some(Transition::Ready | Transition::NotReady) | None => {}
                    }
                }
                if kind == ProbeKind::Readiness {
                    self.ready.insert(name.clone(), passing);
                }
            }
        }
    }

    /// Starts, restarts and kills containers as the lifecycle rules say.
    fn act(&mut self, k: &Kubelet, plan: &PodPlan) {
        let specs = Self::specs(plan);
        for (spec, _) in &specs {
            self.states
                .entry(spec.name.clone())
                .or_insert(ContainerState::NEW);
        }
        let list: Vec<lifecycle::ContainerSpec> = specs.iter().map(|(s, _)| s.clone()).collect();
        let states: Vec<ContainerState> = list
            .iter()
            .map(|s| {
                self.states
                    .get(&s.name)
                    .cloned()
                    .unwrap_or(ContainerState::NEW)
            })
            .collect();
        let policy = lifecycle_policy(plan.restart_policy);
        let actions = lifecycle::next(&list, policy, &states, false, Timestamp::now());
        for action in actions {
            match action {
                Action::Start { name } => self.start(k, plan, &specs, &name, None),
                Action::Restart { name, backoff } => {
                    self.start(k, plan, &specs, &name, Some(backoff))
                }
                Action::Kill {
                    name,
                    reason,
                    message,
                } => {
                    tracing::info!(pod = %plan.name, container = %name, reason, message, "killing a container");
                    if let Some(c) = self.containers.get(&name) {
                        c.signal(nix::sys::signal::Signal::SIGKILL);
                    }
                }
                Action::Terminate => {
                    for c in self.containers.values() {
                        c.signal(nix::sys::signal::Signal::SIGTERM);
                    }
                }
                Action::WaitUntil(_) => {}
            }
        }
    }

    /// Starts one container (a first start, or a restart after its back-off).
    fn start(
        &mut self,
        k: &Kubelet,
        plan: &PodPlan,
        specs: &[(lifecycle::ContainerSpec, &ContainerPlan)],
        name: &str,
        backoff: Option<lifecycle::Backoff>,
    ) {
        let Some((_, c)) = specs.iter().find(|(s, _)| s.name == name) else {
            return;
        };
        let now = Timestamp::now();
        let waiting = |reason: &str, message: String| Observed::Waiting {
            reason: reason.into(),
            message,
            since: now,
        };
        let outcome = match self.volume_error.clone() {
            Some(problem) => Err(waiting("ContainerCreating", problem)),
            None => self.container_spec(k, plan, c).and_then(|spec| {
                let attempt = self.record.containers.get(name).map_or(0, |r| r.attempts);
                let mut spec = spec;
                spec.log = self.dirs.log(name, attempt);
                let spec_path = self.dirs.container(name).join("spec.json");
                Container::start(&k.shim_program(), spec, spec_path)
                    .map_err(|e| waiting("RunContainerError", format!("{e:#}")))
            }),
        };
        let state = self
            .states
            .entry(name.to_string())
            .or_insert(ContainerState::NEW);
        match outcome {
            Ok(container) => {
                let rec = self.record.containers.entry(name.to_string()).or_default();
                if let Some(old) = rec.exited.take() {
                    rec.last_exit = Some((old, rec.started_at));
                }
                rec.attempts += 1;
                rec.shim_pid = container.shim_pid;
                rec.started_at = runtime::now();
                if let Some(b) = backoff {
                    state.restarts += 1;
                    state.backoff = Some(b);
                }
                state.observed = Observed::Running { since: now };
                state.started = c.startup_probe.is_none();
                state.probe_failed = None;
                self.ready
                    .insert(name.to_string(), c.readiness_probe.is_none());
                self.containers.insert(name.to_string(), container);
                tracing::info!(pod = %plan.name, container = %name, "container started");
                self.save();
            }
            Err(observed) => {
                if let Observed::Waiting {
                    reason, message, ..
                } = &observed
                {
                    tracing::warn!(pod = %plan.name, container = %name, reason, message, "container not started");
                }
                state.observed = observed;
            }
        }
    }

    /// What the shim runs for container `c`, or why it cannot start (as a waiting state).
    fn container_spec(
        &self,
        k: &Kubelet,
        plan: &PodPlan,
        c: &ContainerPlan,
    ) -> Result<shim::Spec, Observed> {
        let now = Timestamp::now();
        let waiting = |reason: &str, message: String| Observed::Waiting {
            reason: reason.into(),
            message,
            since: now,
        };
        let (executable, argv) = match &c.argv {
            Argv::Resolved {
                executable, argv, ..
            } => (*executable, argv.clone()),
            Argv::UnknownImage(m) => return Err(waiting("ErrImagePull", m.clone())),
            Argv::UnknownCommand(m) => return Err(waiting("RunContainerError", m.clone())),
        };
        let program = runtime::locate(&k.config.programs, executable).ok_or_else(|| {
            waiting(
                "RunContainerError",
                format!(
                    "{executable} (for image {}) is not in {} nor on PATH: build the workspace's binaries",
                    c.image,
                    k.config.programs.display()
                ),
            )
        })?;
        let facts = self.facts(&k.config);
        let mut env = plan::environment(plan, c, &facts, &self.fetched)
            .map_err(|m| waiting("CreateContainerConfigError", m))?;
        let argv = plan::expand_argv(&argv, &env);
        for (name, value) in [
            ("KUBERNETES_SERVICE_HOST", KUBERNETES_SERVICE.0),
            ("KUBERNETES_SERVICE_PORT", KUBERNETES_SERVICE.1),
            ("KUBERNETES_SERVICE_PORT_HTTPS", KUBERNETES_SERVICE.1),
        ] {
            if !env.iter().any(|(n, _)| n == name) {
                env.push((name.into(), value.into()));
            }
        }
        if !env.iter().any(|(n, _)| n == "PATH") {
            env.insert(
                0,
                (
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ),
            );
        }
        if !env.iter().any(|(n, _)| n == "HOSTNAME") {
            env.insert(0, ("HOSTNAME".into(), plan.hostname.clone()));
        }
        let mounts = c
            .mounts
            .iter()
            .map(|m| {
                let mut source = self.dirs.volume(&m.volume);
                if let Some(sub) = &m.sub_path {
                    source = source.join(sub);
                }
                BindMount {
                    source,
                    target: m.mount_path.clone().into(),
                    read_only: m.read_only,
                }
            })
            .collect();
        for m in &c.mounts {
            let dir = self.dirs.volume(&m.volume);
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return Err(waiting(
                    "CreateContainerError",
                    format!("{}: {e}", dir.display()),
                ));
            }
        }
        let dir = self.dirs.container(&c.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| waiting("CreateContainerError", format!("{}: {e}", dir.display())))?;
        let uid = c.run_as_user.or(plan.run_as_user);
        let gid = c.run_as_group.or(plan.run_as_group);
        let to_u32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        Ok(shim::Spec {
            netns: self.record.netns.clone(),
            hosts: Some(crate::netns::hosts_path(&self.record.netns)),
            mounts,
            program,
            argv,
            env,
            workdir: c.working_dir.clone(),
            uid: to_u32(uid).filter(|u| *u != 0),
            gid: to_u32(gid),
            capabilities: c.add_capabilities.clone(),
            log: dir.join("0.log"),
            exit: dir.join("exit.json"),
            pid: dir.join("pid"),
        })
    }

    /// The status of the pod as it runs now.
    fn pod_status(
        &self,
        k: &Kubelet,
        pod: &Pod,
        plan: &PodPlan,
    ) -> k8s_openapi::api::core::v1::PodStatus {
        let gates: Vec<String> = pod
            .spec
            .as_ref()
            .and_then(|s| s.readiness_gates.as_ref())
            .into_iter()
            .flatten()
            .map(|g| g.condition_type.clone())
            .collect();
        let facts = super::status::PodFacts {
            namespace: &plan.namespace,
            name: &plan.name,
            uid: &plan.uid,
            generation: pod.metadata.generation,
            pod_ip: self.record.ip.map(std::net::IpAddr::V4),
            host_ip: std::net::IpAddr::V4(k.config.node_ip),
            start_time: ts(self.record.started_at),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            readiness_gates: &gates,
            previous: pod.status.as_ref(),
        };
        let short: String = plan.uid.chars().filter(|c| *c != '-').take(12).collect();
        let reports: Vec<super::status::ContainerReport> = Self::specs(plan)
            .into_iter()
            .map(|(spec, c)| {
                let rec = self.record.containers.get(&spec.name);
                let attempts = rec.map_or(0, |r| r.attempts);
                super::status::ContainerReport {
                    name: spec.name.clone(),
                    image: c.image.clone(),
                    kind: spec.kind,
                    container_id: (attempts > 0)
                        .then(|| format!("{short}-{}-{}", spec.name, attempts - 1)),
                    state: self
                        .states
                        .get(&spec.name)
                        .cloned()
                        .unwrap_or(ContainerState::NEW),
                    ready: if c.readiness_probe.is_some() {
                        self.ready.get(&spec.name).copied().unwrap_or(false)
                    } else {
                        self.states.get(&spec.name).is_some_and(|s| s.started)
                    },
                    last_termination: rec.and_then(|r| r.last_exit.as_ref()).map(|(e, started)| {
                        lifecycle::Exit {
                            code: e.code,
                            signal: e.signal,
                            started: ts(*started),
                            finished: ts(e.finished_at),
                        }
                    }),
                }
            })
            .collect();
        let policy = lifecycle_policy(plan.restart_policy);
        super::status::pod_status(&facts, policy, &reports, Timestamp::now())
    }

    async fn write_status(&mut self, k: &Kubelet, pod: &Pod, plan: &PodPlan) {
        let status = self.pod_status(k, pod, plan);
        let value = match serde_json::to_value(&status) {
            Ok(v) => v,
            Err(_) => return,
        };
        if self.last_status.as_ref() == Some(&value) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(k.client.clone(), &plan.namespace);
        match pods
            .patch_status(
                &plan.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": value})),
            )
            .await
        {
            Ok(_) => self.last_status = Some(value),
            Err(e) => tracing::warn!(pod = %plan.name, error = %e, "writing pod status"),
        }
    }

    /// Graceful deletion: SIGTERM to the app containers, then to the sidecars, SIGKILL at the
    /// grace period's end; once nothing runs, the sandbox goes and the pod is deleted for good
    /// (grace 0, with its uid as precondition, as the kubelet does).
    async fn terminate(
        &mut self,
        k: &Kubelet,
        pod: &Pod,
        plan: &PodPlan,
        ipam: &mut Ipam,
    ) -> anyhow::Result<()> {
        use nix::sys::signal::Signal;
        self.observe();
        let specs = Self::specs(plan);
        let kind_of = |name: &str| {
            specs
                .iter()
                .find(|(s, _)| s.name == name)
                .map(|(s, _)| s.kind)
        };
        if self.terminating.is_none() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or(plan.grace_period_seconds)
                .max(0);
            tracing::info!(pod = %format!("{}/{}", plan.namespace, plan.name), grace, "stopping the pod");
            for (name, c) in &self.containers {
                if kind_of(name) != Some(Kind::Sidecar) {
                    c.signal(Signal::SIGTERM);
                }
            }
            self.terminating = Some(Terminating {
                deadline: Instant::now() + Duration::from_secs(grace as u64),
                sidecars_signalled: false,
            });
        }
        let Some(t) = self.terminating.as_mut() else {
            return Ok(());
        };
        let apps_running = self
            .containers
            .keys()
            .any(|n| kind_of(n) != Some(Kind::Sidecar));
        if !apps_running && !t.sidecars_signalled {
            t.sidecars_signalled = true;
            for (name, c) in self.containers.iter().rev() {
                if kind_of(name) == Some(Kind::Sidecar) {
                    c.signal(Signal::SIGTERM);
                }
            }
        }
        if Instant::now() >= t.deadline {
            for c in self.containers.values() {
                c.signal(Signal::SIGKILL);
            }
        }
        if !self.containers.is_empty() {
            return Ok(());
        }
        self.teardown(ipam);
        let pods: Api<Pod> = Api::namespaced(k.client.clone(), &plan.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(plan.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&plan.name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{}/{}", plan.namespace, plan.name), "pod deleted")
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e).context("the pod's final delete"),
        }
        Ok(())
    }

    /// Kills what still runs, removes the sandbox and the pod's files.
    fn teardown(&mut self, ipam: &mut Ipam) {
        for c in self.containers.values() {
            c.signal(nix::sys::signal::Signal::SIGKILL);
        }
        runtime::remove_sandbox(&self.record);
        for c in self.containers.values_mut() {
            let _ = c.poll();
        }
        self.containers.clear();
        if let Some(ip) = self.record.ip {
            ipam.used.remove(&ip);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dirs.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dirs.root.display(), error = %e, "removing a pod's files");
            }
        }
        self.removed = true;
    }
}

/// A token for the pod's service account, bound to the pod.
async fn request_token(
    k: &Kubelet,
    plan: &PodPlan,
    audience: Option<&str>,
    expiration_seconds: i64,
) -> anyhow::Result<Token> {
    let accounts: Api<ServiceAccount> = Api::namespaced(k.client.clone(), &plan.namespace);
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {
            "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
            "expirationSeconds": expiration_seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": plan.name, "uid": plan.uid},
        },
    }))?;
    let issued = SystemTime::now();
    let answer: TokenRequest = accounts
        .create_subresource(
            "token",
            &plan.service_account,
            &PostParams::default(),
            &request,
        )
        .await
        .with_context(|| {
            format!(
                "TokenRequest for serviceaccount {}/{}",
                plan.namespace, plan.service_account
            )
        })?;
    let status = answer.status.context("the TokenRequest has no status")?;
    let token = status
        .token
        .context("the TokenRequest's answer holds no token")?;
    let expires = match status.expiration_timestamp {
        Some(t) => SystemTime::UNIX_EPOCH + Duration::from_secs(t.0.as_second().max(0) as u64),
        None => issued + Duration::from_secs(expiration_seconds.max(0) as u64),
    };
    Ok(Token {
        value: token,
        issued,
        expires,
    })
}

/// The ConfigMaps and Secrets the pod names anywhere in its spec (env, envFrom, volumes,
/// projections), read with the node's credentials (the Node authorizer allows exactly these).
async fn fetch(k: &Kubelet, plan: &PodPlan) -> Fetched {
    let (config_maps, secrets) = referenced(plan);
    let mut out = Fetched::default();
    let cms: Api<ConfigMap> = Api::namespaced(k.client.clone(), &plan.namespace);
    for name in config_maps {
        match cms.get_opt(&name).await {
            Ok(Some(cm)) => {
                out.config_maps.insert(name, ConfigMapData::from(&cm));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(pod = %plan.name, configmap = %name, error = %e, "reading a ConfigMap")
            }
        }
    }
    let secs: Api<Secret> = Api::namespaced(k.client.clone(), &plan.namespace);
    for name in secrets {
        match secs.get_opt(&name).await {
            Ok(Some(s)) => {
                let mut data: BTreeMap<String, Vec<u8>> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                for (k, v) in s.string_data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                out.secrets.insert(name, data);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(pod = %plan.name, secret = %name, error = %e, "reading a Secret")
            }
        }
    }
    out
}

/// A probe's timing from the plan (which holds the API's defaults already).
fn probe_config(kind: ProbeKind, p: &plan::Probe) -> ProbeConfig {
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    ProbeConfig {
        initial_delay: secs(p.initial_delay_seconds),
        period: secs(p.period_seconds.max(1)),
        timeout: secs(p.timeout_seconds.max(1)),
        success_threshold: match kind {
            ProbeKind::Readiness => p.success_threshold.max(1),
            _ => 1,
        },
        failure_threshold: p.failure_threshold.max(1),
    }
}

/// The ConfigMaps and Secrets a pod names: env, envFrom, volumes and projections.
fn referenced(plan: &PodPlan) -> (BTreeSet<String>, BTreeSet<String>) {
    use plan::{EnvFromSource, EnvSource, Projection, VolumeSource};
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for c in plan.init.iter().chain(&plan.containers) {
        for e in &c.env {
            match &e.source {
                EnvSource::ConfigMapKey { name, .. } => {
                    cms.insert(name.clone());
                }
                EnvSource::SecretKey { name, .. } => {
                    secrets.insert(name.clone());
                }
                _ => {}
            }
        }
        for f in &c.env_from {
            match &f.source {
                EnvFromSource::ConfigMap { name, .. } => {
                    cms.insert(name.clone());
                }
                EnvFromSource::Secret { name, .. } => {
                    secrets.insert(name.clone());
                }
            }
        }
    }
    for v in &plan.volumes {
        match &v.source {
            VolumeSource::ConfigMap { name, .. } => {
                cms.insert(name.clone());
            }
            VolumeSource::Secret { name, .. } => {
                secrets.insert(name.clone());
            }
            VolumeSource::Projected { sources, .. } => {
                for p in sources {
                    match p {
                        Projection::ConfigMap { name, .. } => {
                            cms.insert(name.clone());
                        }
                        Projection::Secret { name, .. } => {
                            secrets.insert(name.clone());
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (cms, secrets)
}

fn lifecycle_policy(p: plan::RestartPolicy) -> lifecycle::RestartPolicy {
    match p {
        plan::RestartPolicy::Always => lifecycle::RestartPolicy::Always,
        plan::RestartPolicy::OnFailure => lifecycle::RestartPolicy::OnFailure,
        plan::RestartPolicy::Never => lifecycle::RestartPolicy::Never,
    }
}
