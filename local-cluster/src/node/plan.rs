//! A Pod as the node agent runs it: what each container executes (through the [`images`]
//! table), with which environment, mounts, identity and probes, and what each volume holds.
//! Pure: no I/O. [`plan`] reads the Pod once; [`environment`], [`expand_argv`] and
//! [`volume_files`] resolve what needs the cluster's other objects (ConfigMaps, Secrets, tokens)
//! and the pod's runtime facts (its IPs), through [`Lookup`] and [`Facts`].
//!
//! The rules are the kubelet's (`pkg/kubelet/kubelet_pods.go`, `pkg/volume/{configmap,secret,
//! downwardapi,projected}`, `third_party/forked/golang/expansion`), down to its error messages
//! where the agent reports them in a container's waiting reason.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::images::{self, Location};

mod env;
mod volumes;

pub use env::{environment, expand, expand_argv};
pub use volumes::{
    next_refresh, refresh_due, token_requests, volume_files, FileProjection, TokenSpec,
};

/// A field of a Pod the local cluster cannot run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    /// The field's path, e.g. `spec.containers[1].env[0].valueFrom`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for PlanError {}

fn err(field: impl Into<String>, message: impl Into<String>) -> PlanError {
    PlanError {
        field: field.into(),
        message: message.into(),
    }
}

/// The pod's `restartPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// A Pod, read once, as the runtime runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodPlan {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `spec.serviceAccountName` (or the deprecated `serviceAccount`), else `default`.
    pub service_account: String,
    /// `spec.nodeName`: empty until the pod is bound.
    pub node_name: Option<String>,
    /// `spec.hostname`, else the pod's name cut to 63 characters (as the kubelet does).
    pub hostname: String,
    /// `spec.hostNetwork`: the pod runs in the node's network namespace.
    pub host_network: bool,
    pub restart_policy: RestartPolicy,
    /// `spec.terminationGracePeriodSeconds` (default 30): SIGTERM to SIGKILL.
    pub grace_period_seconds: i64,
    /// The pod's `securityContext.runAsUser`/`runAsGroup` (the containers' plans already
    /// include them as defaults).
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    /// `securityContext.fsGroup`: group owner of the volumes' files (they get group read).
    pub fs_group: Option<i64>,
    /// The kubelet's `FsUserFrom`: the one user every (init) container runs as, if they all
    /// set the same; owner of the token files.
    pub fs_user: Option<i64>,
    /// Init containers, in order (native sidecars among them, marked).
    pub init: Vec<ContainerPlan>,
    pub containers: Vec<ContainerPlan>,
    pub volumes: Vec<VolumePlan>,
}

/// One container as the runtime runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    /// An init container with `restartPolicy: Always` (a native sidecar): started in order
    /// with the init containers, not awaited, and kept running beside the app containers.
    pub sidecar: bool,
    pub argv: Argv,
    /// `env`, in order (resolved by [`environment`]).
    pub env: Vec<EnvVar>,
    /// `envFrom`, in order (resolved by [`environment`]).
    pub env_from: Vec<EnvFrom>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    /// The container's `runAsUser`/`runAsGroup`, else the pod's.
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot`, the container's else the pod's.
    pub run_as_non_root: bool,
    /// `capabilities.add` and `.drop`, as written (e.g. `NET_ADMIN`).
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub privileged: bool,
    pub ports: Vec<Port>,
    pub startup_probe: Option<Probe>,
    pub readiness_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
}

/// What a container executes, or why it cannot start. An unknown image or command leaves that
/// container waiting (`ErrImagePull` / `RunContainerError` with the message); the pod's other
/// containers still run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Argv {
    /// Execute `executable` (found per `location`) with `argv` (argv[0] as the pod wrote it;
    /// `$(VAR)` not yet expanded: see [`expand_argv`]).
    Resolved {
        executable: &'static str,
        location: Location,
        argv: Vec<String>,
    },
    /// The image is not in the table.
    UnknownImage(String),
    /// The image is known but does not provide the command.
    UnknownCommand(String),
}

/// A container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: Option<String>,
    pub container_port: u16,
    /// `TCP` (default), `UDP` or `SCTP`.
    pub protocol: String,
}

/// One `env` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub source: EnvSource,
}

/// Where an `env` entry's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvSource {
    /// `value` (may hold `$(VAR)` references to earlier variables).
    Value(String),
    /// `valueFrom.fieldRef`.
    Field(FieldPath),
    /// `valueFrom.configMapKeyRef`.
    ConfigMapKey {
        name: String,
        key: String,
        optional: bool,
    },
    /// `valueFrom.secretKeyRef`.
    SecretKey {
        name: String,
        key: String,
        optional: bool,
    },
}

/// One `envFrom` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvFrom {
    /// Put before every key (empty when none).
    pub prefix: String,
    pub source: EnvFromSource,
}

/// The object an `envFrom` entry reads every key of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvFromSource {
    ConfigMap { name: String, optional: bool },
    Secret { name: String, optional: bool },
}

/// A downward-API field (`fieldRef.fieldPath`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldPath {
    /// `metadata.name`
    Name,
    /// `metadata.namespace`
    Namespace,
    /// `metadata.uid`
    Uid,
    /// `metadata.labels` (volumes only): every label, `key="value"` lines.
    Labels,
    /// `metadata.annotations` (volumes only).
    Annotations,
    /// `metadata.labels['key']`
    Label(String),
    /// `metadata.annotations['key']`
    Annotation(String),
    /// `spec.nodeName` (env only)
    NodeName,
    /// `spec.serviceAccountName` (env only)
    ServiceAccountName,
    /// `status.hostIP` (env only)
    HostIp,
    /// `status.hostIPs` (env only): comma-separated.
    HostIps,
    /// `status.podIP` (env only)
    PodIp,
    /// `status.podIPs` (env only): comma-separated.
    PodIps,
}

/// Where a `fieldRef` is used: the API allows different fields in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldUse {
    Env,
    Volume,
}

impl FieldPath {
    /// Parses a `fieldRef`, allowing what the API allows in `use_`.
    fn parse(
        r: &core::ObjectFieldSelector,
        use_: FieldUse,
        field: &str,
    ) -> Result<Self, PlanError> {
        if let Some(v) = r.api_version.as_deref().filter(|v| *v != "v1") {
            return Err(err(
                format!("{field}.apiVersion"),
                format!("{v:?} is not supported (only v1)"),
            ));
        }
        let path = r.field_path.as_str();
        let subscript = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix("['"))
                .and_then(|rest| rest.strip_suffix("']"))
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
        };
        let parsed = match path {
            "metadata.name" => Some(FieldPath::Name),
            "metadata.namespace" => Some(FieldPath::Namespace),
            "metadata.uid" => Some(FieldPath::Uid),
            "metadata.labels" if use_ == FieldUse::Volume => Some(FieldPath::Labels),
            "metadata.annotations" if use_ == FieldUse::Volume => Some(FieldPath::Annotations),
            "spec.nodeName" if use_ == FieldUse::Env => Some(FieldPath::NodeName),
            "spec.serviceAccountName" if use_ == FieldUse::Env => {
                Some(FieldPath::ServiceAccountName)
            }
            "status.hostIP" if use_ == FieldUse::Env => Some(FieldPath::HostIp),
            "status.hostIPs" if use_ == FieldUse::Env => Some(FieldPath::HostIps),
            "status.podIP" if use_ == FieldUse::Env => Some(FieldPath::PodIp),
            "status.podIPs" if use_ == FieldUse::Env => Some(FieldPath::PodIps),
            _ => subscript("metadata.labels")
                .map(FieldPath::Label)
                .or_else(|| subscript("metadata.annotations").map(FieldPath::Annotation)),
        };
        parsed.ok_or_else(|| {
            err(
                format!("{field}.fieldPath"),
                format!(
                    "{path:?} is not supported in {}",
                    match use_ {
                        FieldUse::Env => "env",
                        FieldUse::Volume => "a downwardAPI volume",
                    }
                ),
            )
        })
    }
}

/// A volume mounted into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The pod volume's name (checked to exist).
    pub volume: String,
    pub mount_path: String,
    /// A relative path inside the volume (no `..`).
    pub sub_path: Option<String>,
    pub read_only: bool,
}

/// A probe, with the API's defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub action: ProbeAction,
    pub initial_delay_seconds: u32,
    /// Default 10.
    pub period_seconds: u32,
    /// Default 1.
    pub timeout_seconds: u32,
    /// Default 1.
    pub success_threshold: u32,
    /// Default 3.
    pub failure_threshold: u32,
    /// The probe's own grace period on a liveness/startup failure, if set.
    pub termination_grace_period_seconds: Option<i64>,
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeAction {
    HttpGet {
        /// `host`; the pod's IP when `None`.
        host: Option<String>,
        /// Default `/`.
        path: String,
        /// Named ports are resolved against the container's ports.
        port: u16,
        https: bool,
        headers: Vec<(String, String)>,
    },
    TcpSocket {
        host: Option<String>,
        port: u16,
    },
    /// Run in the container (argv[0] resolved against its image like its command).
    Exec {
        command: Vec<String>,
    },
}

/// A pod volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumePlan {
    pub name: String,
    pub source: VolumeSource,
}

/// What a volume holds (files from [`volume_files`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeSource {
    /// An empty directory for the pod's life (also `medium: Memory`).
    EmptyDir,
    ConfigMap {
        name: String,
        /// All keys when empty.
        items: Vec<KeyToPath>,
        optional: bool,
        default_mode: u32,
    },
    Secret {
        name: String,
        items: Vec<KeyToPath>,
        optional: bool,
        default_mode: u32,
    },
    DownwardApi {
        items: Vec<DownwardItem>,
        default_mode: u32,
    },
    Projected {
        sources: Vec<Projection>,
        default_mode: u32,
    },
    /// A kind the local cluster does not provide (its field name, e.g. `hostPath`): the agent
    /// leaves the pod waiting with this named.
    Unsupported(String),
}

/// An `items` entry of a ConfigMap or Secret volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyToPath {
    pub key: String,
    /// Relative, without `..`.
    pub path: String,
    pub mode: Option<u32>,
}

/// An `items` entry of a downwardAPI volume or projection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownwardItem {
    pub path: String,
    pub field: FieldPath,
    pub mode: Option<u32>,
}

/// One source of a projected volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Projection {
    /// A token from the TokenRequest API, bound to the pod.
    ServiceAccountToken {
        /// The API server's default audiences when `None`.
        audience: Option<String>,
        /// Default 3600; at least 600.
        expiration_seconds: i64,
        path: String,
    },
    ConfigMap {
        name: String,
        items: Vec<KeyToPath>,
        optional: bool,
    },
    Secret {
        name: String,
        items: Vec<KeyToPath>,
        optional: bool,
    },
    DownwardApi(Vec<DownwardItem>),
}

/// The kubelet's default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 30;
/// The API's default volume file mode (`defaultMode: 420`).
pub const DEFAULT_MODE: u32 = 0o644;
/// The API's default and minimum `expirationSeconds` of a projected token.
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;
pub const MIN_TOKEN_EXPIRATION_SECONDS: i64 = 600;

/// Reads a Pod into what the runtime runs. Fails, naming the field, on what the API would
/// refuse or the local cluster cannot do; an unknown image or command fails only that
/// container's [`Argv`].
pub fn plan(pod: &core::Pod) -> Result<PodPlan, PlanError> {
    let meta = &pod.metadata;
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| err("metadata.name", "is missing"))?;
    let uid = meta
        .uid
        .clone()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| err("metadata.uid", "is missing"))?;
    let spec = pod.spec.as_ref().ok_or_else(|| err("spec", "is missing"))?;
    let restart_policy = match spec.restart_policy.as_deref() {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure,
        Some("Never") => RestartPolicy::Never,
        Some(other) => {
            return Err(err(
                "spec.restartPolicy",
                format!("{other:?} is not one of Always, OnFailure, Never"),
            ));
        }
    };
    let grace_period_seconds = match spec.termination_grace_period_seconds {
        None => DEFAULT_GRACE_PERIOD_SECONDS,
        Some(s) if s >= 0 => s,
        Some(s) => {
            return Err(err(
                "spec.terminationGracePeriodSeconds",
                format!("{s} is negative"),
            ));
        }
    };
    let psc = spec.security_context.clone().unwrap_or_default();

    let mut volumes = Vec::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("spec.volumes[{i}]");
        if volumes.iter().any(|p: &VolumePlan| p.name == v.name) {
            return Err(err(
                format!("{field}.name"),
                format!("{:?} is used twice", v.name),
            ));
        }
        volumes.push(volumes::volume(v, &field)?);
    }

    let read =
        |c: &core::Container, field: String, init: bool| container(c, &field, init, &psc, &volumes);
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| read(c, format!("spec.initContainers[{i}]"), true))
        .collect::<Result<Vec<_>, _>>()?;
    if spec.containers.is_empty() {
        return Err(err("spec.containers", "is empty"));
    }
    let containers = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| read(c, format!("spec.containers[{i}]"), false))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::BTreeSet::new();
    for c in init.iter().chain(&containers) {
        if !seen.insert(c.name.as_str()) {
            return Err(err(
                "spec.containers",
                format!("container name {:?} is used twice", c.name),
            ));
        }
    }
    // The kubelet's FsUserFrom: one user for every init and app container, else none.
    let users: Vec<Option<i64>> = init
        .iter()
        .chain(&containers)
        .map(|c| c.run_as_user)
        .collect();
    let fs_user = match users.first() {
        Some(Some(u)) if users.iter().all(|x| *x == Some(*u)) => Some(*u),
        _ => None,
    };

    Ok(PodPlan {
        uid,
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        hostname: hostname(spec.hostname.as_deref(), &name),
        name,
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        service_account: spec
            .service_account_name
            .clone()
            .or_else(|| spec.service_account.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
        host_network: spec.host_network.unwrap_or(false),
        restart_policy,
        grace_period_seconds,
        run_as_user: psc.run_as_user,
        run_as_group: psc.run_as_group,
        fs_group: psc.fs_group,
        fs_user,
        init,
        containers,
        volumes,
    })
}

/// The kubelet's pod hostname: `spec.hostname`, else the name cut to a DNS label's 63
/// characters without a trailing `-` or `.`.
fn hostname(hostname: Option<&str>, name: &str) -> String {
    if let Some(h) = hostname.filter(|h| !h.is_empty()) {
        return h.to_owned();
    }
    let cut = name.get(..63).unwrap_or(name);
    cut.trim_end_matches(['-', '.']).to_owned()
}

/// What a container executes: `command` + `args` when a command is given (its argv[0] must
/// be one of the image's commands), else the image's entrypoint + `args`.
pub fn argv(image: &str, command: &[String], args: &[String]) -> Argv {
    let Some(entry) = images::lookup(image) else {
        return Argv::UnknownImage(format!(
            "image {image:?} is not in the local cluster's image table (its images: {}); \
             see the README's \"Images\"",
            images::names()
        ));
    };
    let argv: Vec<String> = if command.is_empty() {
        entry
            .entrypoint
            .iter()
            .map(|s| s.to_string())
            .chain(args.iter().cloned())
            .collect()
    } else {
        command.iter().chain(args).cloned().collect()
    };
    let first = argv.first().map(String::as_str).unwrap_or_default();
    match images::executable(entry, first) {
        Some(executable) => Argv::Resolved {
            executable,
            location: entry.location,
            argv,
        },
        None => Argv::UnknownCommand(format!(
            "image {image:?} provides no command {first:?} (it provides {})",
            entry.commands.join(", ")
        )),
    }
}

fn container(
    c: &core::Container,
    field: &str,
    init: bool,
    psc: &core::PodSecurityContext,
    volumes: &[VolumePlan],
) -> Result<ContainerPlan, PlanError> {
    if c.name.is_empty() {
        return Err(err(format!("{field}.name"), "is empty"));
    }
    let image = c
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| err(format!("{field}.image"), "is missing"))?;
    let sidecar = match c.restart_policy.as_deref() {
        None => false,
        Some("Always") if init => true,
        Some(other) => {
            return Err(err(
                format!("{field}.restartPolicy"),
                format!(
                    "{other:?} is not supported (only Always, on init containers: a native sidecar)"
                ),
            ));
        }
    };

    let mut ports = Vec::new();
    for (j, p) in c.ports.iter().flatten().enumerate() {
        let port = port_number(p.container_port).ok_or_else(|| {
            err(
                format!("{field}.ports[{j}].containerPort"),
                not_a_port(p.container_port),
            )
        })?;
        ports.push(Port {
            name: p.name.clone().filter(|n| !n.is_empty()),
            container_port: port,
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        });
    }

    let mut env = Vec::new();
    for (j, e) in c.env.iter().flatten().enumerate() {
        env.push(env::env_var(e, &format!("{field}.env[{j}]"))?);
    }
    let mut env_from = Vec::new();
    for (j, e) in c.env_from.iter().flatten().enumerate() {
        env_from.push(env::env_from(e, &format!("{field}.envFrom[{j}]"))?);
    }

    let mut mounts = Vec::new();
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        let f = format!("{field}.volumeMounts[{j}]");
        if !volumes.iter().any(|v| v.name == m.name) {
            return Err(err(
                format!("{f}.name"),
                format!("{:?} is not a volume of the pod", m.name),
            ));
        }
        if m.mount_path.is_empty() {
            return Err(err(format!("{f}.mountPath"), "is empty"));
        }
        if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(err(
                format!("{f}.subPathExpr"),
                "is not supported by the local cluster (use subPath)",
            ));
        }
        let sub_path = m.sub_path.clone().filter(|s| !s.is_empty());
        if let Some(s) = &sub_path {
            check_relative(s).map_err(|m| err(format!("{f}.subPath"), m))?;
        }
        mounts.push(Mount {
            volume: m.name.clone(),
            mount_path: m.mount_path.clone(),
            sub_path,
            read_only: m.read_only.unwrap_or(false),
        });
    }

    let sc = c.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.clone().unwrap_or_default();
    let probe = |p: &Option<core::Probe>, which: &str| {
        p.as_ref()
            .map(|p| probe(p, &format!("{field}.{which}"), &ports))
            .transpose()
    };
    Ok(ContainerPlan {
        name: c.name.clone(),
        argv: argv(
            &image,
            c.command.as_deref().unwrap_or_default(),
            c.args.as_deref().unwrap_or_default(),
        ),
        image,
        sidecar,
        env,
        env_from,
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        mounts,
        run_as_user: sc.run_as_user.or(psc.run_as_user),
        run_as_group: sc.run_as_group.or(psc.run_as_group),
        run_as_non_root: sc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false),
        add_capabilities: caps.add.unwrap_or_default(),
        drop_capabilities: caps.drop.unwrap_or_default(),
        privileged: sc.privileged.unwrap_or(false),
        startup_probe: probe(&c.startup_probe, "startupProbe")?,
        readiness_probe: probe(&c.readiness_probe, "readinessProbe")?,
        liveness_probe: probe(&c.liveness_probe, "livenessProbe")?,
        ports,
    })
}

fn port_number(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p > 0)
}

fn not_a_port(n: i32) -> String {
    format!("{n} is not a port (1–65535)")
}

/// A probe's port: a number, or the name of one of the container's ports.
fn probe_port(port: &IntOrString, field: &str, ports: &[Port]) -> Result<u16, PlanError> {
    match port {
        IntOrString::Int(n) => port_number(*n).ok_or_else(|| err(field, not_a_port(*n))),
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| {
                err(
                    field,
                    format!("{name:?} is not the name of one of the container's ports"),
                )
            }),
    }
}

fn probe(p: &core::Probe, field: &str, ports: &[Port]) -> Result<Probe, PlanError> {
    let mut actions = Vec::new();
    if let Some(h) = &p.http_get {
        let scheme = h.scheme.as_deref().unwrap_or("HTTP");
        let https = match scheme {
            "HTTP" => false,
            "HTTPS" => true,
            other => {
                return Err(err(
                    format!("{field}.httpGet.scheme"),
                    format!("{other:?} is not HTTP or HTTPS"),
                ));
            }
        };
        actions.push(ProbeAction::HttpGet {
            host: h.host.clone().filter(|h| !h.is_empty()),
            path: h
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into()),
            port: probe_port(&h.port, &format!("{field}.httpGet.port"), ports)?,
            https,
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        });
    }
    if let Some(t) = &p.tcp_socket {
        actions.push(ProbeAction::TcpSocket {
            host: t.host.clone().filter(|h| !h.is_empty()),
            port: probe_port(&t.port, &format!("{field}.tcpSocket.port"), ports)?,
        });
    }
    if let Some(e) = &p.exec {
        let command = e.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err(err(format!("{field}.exec.command"), "is empty"));
        }
        actions.push(ProbeAction::Exec { command });
    }
    if p.grpc.is_some() {
        return Err(err(
            format!("{field}.grpc"),
            "is not supported by the local cluster (use httpGet, tcpSocket or exec)",
        ));
    }
    let action = match actions.len() {
        1 => actions.remove(0),
        0 => return Err(err(field, "has no action (httpGet, tcpSocket or exec)")),
        _ => return Err(err(field, "has more than one action")),
    };
    let count = |v: Option<i32>, default: u32, name: &str| -> Result<u32, PlanError> {
        match v {
            None | Some(0) => Ok(default),
            Some(n) => u32::try_from(n)
                .map_err(|_| err(format!("{field}.{name}"), format!("{n} is negative"))),
        }
    };
    Ok(Probe {
        action,
        initial_delay_seconds: count(p.initial_delay_seconds, 0, "initialDelaySeconds")?,
        period_seconds: count(p.period_seconds, 10, "periodSeconds")?,
        timeout_seconds: count(p.timeout_seconds, 1, "timeoutSeconds")?,
        success_threshold: count(p.success_threshold, 1, "successThreshold")?,
        failure_threshold: count(p.failure_threshold, 3, "failureThreshold")?,
        termination_grace_period_seconds: p.termination_grace_period_seconds,
    })
}

/// A path inside a volume: relative, not empty, without a `..` element.
pub(crate) fn check_relative(path: &str) -> Result<(), String> {
    if path.is_empty() {
        Err("is empty".into())
    } else if path.starts_with('/') {
        Err(format!("{path:?} is absolute (must be relative)"))
    } else if path.split('/').any(|part| part == "..") {
        Err(format!("{path:?} contains '..'"))
    } else {
        Ok(())
    }
}

/// What a pod is when it runs, beyond the Pod object: for `fieldRef`s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The pod's IPs (the first is `status.podIP`).
    pub pod_ips: Vec<String>,
    /// The node's IPs (the first is `status.hostIP`).
    pub host_ips: Vec<String>,
}

/// A ConfigMap's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigMapData {
    pub data: BTreeMap<String, String>,
    pub binary_data: BTreeMap<String, Vec<u8>>,
}

impl From<&core::ConfigMap> for ConfigMapData {
    fn from(cm: &core::ConfigMap) -> Self {
        ConfigMapData {
            data: cm.data.clone().unwrap_or_default(),
            binary_data: cm
                .binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
        }
    }
}

/// A Secret's contents (`data`, decoded; `stringData` is merged into it by the API server).
pub fn secret_data(secret: &core::Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

/// The cluster's ConfigMaps and Secrets, as the agent's watches know them.
pub trait Lookup {
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMapData>;
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
}

/// The value of a `fieldRef` for `pod`.
pub fn field_value(pod: &PodPlan, field: &FieldPath, facts: &Facts) -> String {
    let first = |ips: &[String]| ips.first().cloned().unwrap_or_default();
    match field {
        FieldPath::Name => pod.name.clone(),
        FieldPath::Namespace => pod.namespace.clone(),
        FieldPath::Uid => pod.uid.clone(),
        FieldPath::Labels => format_map(&pod.labels),
        FieldPath::Annotations => format_map(&pod.annotations),
        FieldPath::Label(k) => pod.labels.get(k).cloned().unwrap_or_default(),
        FieldPath::Annotation(k) => pod.annotations.get(k).cloned().unwrap_or_default(),
        FieldPath::NodeName => pod.node_name.clone().unwrap_or_default(),
        FieldPath::ServiceAccountName => pod.service_account.clone(),
        FieldPath::HostIp => first(&facts.host_ips),
        FieldPath::HostIps => facts.host_ips.join(","),
        FieldPath::PodIp => first(&facts.pod_ips),
        FieldPath::PodIps => facts.pod_ips.join(","),
    }
}

/// The kubelet's `fieldpath.FormatMap`: sorted `key="value"` lines, values quoted as Go's
/// `%q` does.
fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
