//! A pod's `status` from what runs, as the kubelet's `generateAPIPodStatus` writes it: phase, IPs,
//! start time, the kubelet's conditions (PodReadyToStartContainers, Initialized, ContainersReady,
//! Ready, PodScheduled) and the init-container and container statuses with their states, restart
//! counts and waiting reasons (CrashLoopBackOff during a back-off). Pure: the caller passes the
//! observed containers and the time.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::lifecycle::{
    finished, restart_at, will_restart, ContainerSpec, ContainerState, Exit, Kind, Observed,
    RestartPolicy,
};

/// The waiting reason of a container whose restart waits out its back-off.
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
/// The scheme of the container IDs in the status (`containerd://…` on a real node).
pub const CONTAINER_ID_SCHEME: &str = "smidge://";

/// The condition types the kubelet owns; it keeps the others (readiness gates…) as they are.
const KUBELET_CONDITIONS: [&str; 5] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
];

/// What the status needs to know of the pod itself.
#[derive(Clone, Debug)]
pub struct PodFacts<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    /// `metadata.generation`, reported back as `observedGeneration`.
    pub generation: Option<i64>,
    /// The pod's address, once its network namespace (the sandbox) exists.
    pub pod_ip: Option<IpAddr>,
    pub host_ip: IpAddr,
    /// When the node agent took the pod on (kept from `previous` once set).
    pub start_time: Timestamp,
    /// The pod has a deletionTimestamp.
    pub deleting: bool,
    /// `spec.readinessGates[].conditionType`.
    pub readiness_gates: &'a [String],
    /// The status the API server has now: its conditions keep their lastTransitionTime while
    /// unchanged, the conditions the kubelet does not own (readiness gates…) are kept, a
    /// terminal phase stays, and qosClass and startTime carry over.
    pub previous: Option<&'a PodStatus>,
}

/// One container as the runtime sees it, in spec order.
#[derive(Clone, Debug)]
pub struct ContainerReport {
    pub name: String,
    pub image: String,
    pub kind: Kind,
    /// The id of the current (or, after an exit, the last) instance, written as
    /// `smidge://<id>`; none before it first ran.
    pub container_id: Option<String>,
    /// The lifecycle state the caller keeps (observed, started, restarts, back-off).
    pub state: ContainerState,
    /// The readiness probe's result, or without one whether it has started. Only counts while
    /// the container runs.
    pub ready: bool,
    /// How the instance before the current one ended.
    pub last_termination: Option<Exit>,
}

/// The pod's status. `containers` are in spec order: init containers (sidecars among them),
/// then app containers.
pub fn pod_status(
    facts: &PodFacts<'_>,
    restart: RestartPolicy,
    containers: &[ContainerReport],
    now: Timestamp,
) -> PodStatus {
    let spec: Vec<ContainerSpec> = containers
        .iter()
        .map(|c| ContainerSpec {
            name: c.name.clone(),
            kind: c.kind,
        })
        .collect();
    let states: Vec<ContainerState> = containers.iter().map(|c| c.state.clone()).collect();
    let terminal = facts.deleting || finished(&spec, restart, &states).is_some();
    let has_init = containers.iter().any(|c| c.kind != Kind::App);

    let statuses: Vec<(Kind, ContainerStatus)> = containers
        .iter()
        .map(|c| {
            (
                c.kind,
                container_status(facts, restart, terminal, has_init, c, now),
            )
        })
        .collect();
    let phase = phase(&statuses, restart, terminal, facts);

    let previous = facts.previous;
    let kept: Vec<PodCondition> = previous
        .and_then(|p| p.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let containers_ready = containers_ready(&statuses, phase);
    let ready = pod_ready(&containers_ready, &kept, facts.readiness_gates);
    let sandbox = Condition::new(
        "PodReadyToStartContainers",
        facts.pod_ip.is_some(),
        None,
        None,
    );
    let scheduled = Condition::new("PodScheduled", true, None, None);
    let mine = [
        sandbox,
        initialized(&statuses, phase),
        ready,
        containers_ready,
        scheduled,
    ];
    let mut conditions = kept;
    conditions.extend(mine.into_iter().map(|c| c.into_api(facts, now)));

    let (init_statuses, app_statuses): (Vec<_>, Vec<_>) =
        statuses.into_iter().partition(|(k, _)| *k != Kind::App);
    let strip = |v: Vec<(Kind, ContainerStatus)>| -> Option<Vec<ContainerStatus>> {
        (!v.is_empty()).then(|| v.into_iter().map(|(_, s)| s).collect())
    };
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(facts.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: facts.host_ip.to_string(),
        }]),
        pod_ip: facts.pod_ip.map(|ip| ip.to_string()),
        pod_ips: facts.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(
            previous
                .and_then(|p| p.start_time.clone())
                .unwrap_or(Time(facts.start_time)),
        ),
        init_container_statuses: strip(init_statuses),
        container_statuses: strip(app_statuses),
        qos_class: previous.and_then(|p| p.qos_class.clone()),
        observed_generation: facts.generation,
        ..PodStatus::default()
    }
}

/// One container's status.
fn container_status(
    facts: &PodFacts<'_>,
    restart: RestartPolicy,
    terminal: bool,
    has_init: bool,
    c: &ContainerReport,
    now: Timestamp,
) -> ContainerStatus {
    let id = c
        .container_id
        .as_ref()
        .map(|id| format!("{CONTAINER_ID_SCHEME}{id}"));
    let mut last_state = c.last_termination.as_ref().map(|e| terminated(e, None));
    let (state, running) = match &c.state.observed {
        Observed::NotCreated => {
            let reason = if has_init {
                "PodInitializing"
            } else {
                "ContainerCreating"
            };
            (waiting(reason, None), false)
        }
        Observed::Waiting {
            reason, message, ..
        } => (waiting(reason, Some(message.as_str())), false),
        Observed::Running { since } => (
            ApiState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*since)),
                }),
                ..ApiState::default()
            },
            true,
        ),
        Observed::Exited(exit) => {
            let at = restart_at(c.state.backoff.as_ref(), exit.finished);
            match &c.state.backoff {
                Some(entry)
                    if !terminal && will_restart(c.kind, restart, exit.code) && now < at =>
                {
                    last_state = Some(terminated(exit, id.clone()));
                    let message = format!(
                        "back-off {} restarting failed container={} pod={}_{}({})",
                        go_duration(entry.delay),
                        c.name,
                        facts.name,
                        facts.namespace,
                        facts.uid
                    );
                    (waiting(CRASH_LOOP_BACK_OFF, Some(&message)), false)
                }
                _ => (terminated(exit, id.clone()), false),
            }
        }
    };
    let completed_init =
        c.kind == Kind::Init && matches!(c.state.observed, Observed::Exited(Exit { code: 0, .. }));
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image.clone(),
        container_id: id,
        ready: (running && c.ready) || completed_init,
        started: Some(running && c.state.started),
        restart_count: i32::try_from(c.state.restarts).unwrap_or(i32::MAX),
        state: Some(state),
        last_state,
        ..ContainerStatus::default()
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ApiState {
    ApiState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: message.filter(|m| !m.is_empty()).map(str::to_string),
        }),
        ..ApiState::default()
    }
}

fn terminated(exit: &Exit, container_id: Option<String>) -> ApiState {
    ApiState {
        terminated: Some(ContainerStateTerminated {
            container_id,
            exit_code: exit.code,
            signal: exit.signal,
            reason: Some(if exit.code == 0 { "Completed" } else { "Error" }.to_string()),
            started_at: Some(Time(exit.started)),
            finished_at: Some(Time(exit.finished)),
            message: None,
        }),
        ..ApiState::default()
    }
}

/// A duration as Go's `time.Duration.String` prints whole and fractional seconds (`10s`, `5m0s`).
fn go_duration(d: Duration) -> String {
    let total = d.as_secs();
    let nanos = d.subsec_nanos();
    if total == 0 {
        return match nanos {
            0 => "0s".to_string(),
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}µs", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let mut secs = format!("{}", total % 60);
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        secs.push('.');
        secs.push_str(frac.trim_end_matches('0'));
    }
    let (h, m) = (total / 3600, total / 60 % 60);
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// The kubelet's `getPhase`, from the container statuses built above.
fn phase(
    statuses: &[(Kind, ContainerStatus)],
    restart: RestartPolicy,
    terminal: bool,
    facts: &PodFacts<'_>,
) -> &'static str {
    // Pods never leave a terminal phase.
    match facts.previous.and_then(|p| p.phase.as_deref()) {
        Some("Succeeded") => return "Succeeded",
        Some("Failed") => return "Failed",
        _ => {}
    }
    let (mut pending_init, mut failed_init, mut pending_sidecars) = (0, 0, 0);
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    let app_running = statuses
        .iter()
        .any(|(k, s)| *k == Kind::App && state_of(s).running.is_some());
    for (kind, s) in statuses {
        let st = state_of(s);
        let last_exit = s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .map(|t| t.exit_code);
        match kind {
            Kind::Init => {
                if st.running.is_some() {
                    pending_init += 1;
                } else if let Some(t) = &st.terminated {
                    failed_init += usize::from(t.exit_code != 0);
                } else {
                    match last_exit {
                        Some(code) => failed_init += usize::from(code != 0),
                        None => pending_init += 1,
                    }
                }
            }
            Kind::Sidecar => {
                if st.running.is_some() {
                    pending_sidecars += usize::from(s.started != Some(true));
                    running += 1;
                } else if st.waiting.is_some() && last_exit.is_none() {
                    pending_sidecars += 1;
                    waiting += 1;
                }
            }
            Kind::App => {
                if st.running.is_some() {
                    running += 1;
                } else if let Some(t) = &st.terminated {
                    stopped += 1;
                    succeeded += usize::from(t.exit_code == 0);
                } else if last_exit.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    let phase = if failed_init > 0 && restart == RestartPolicy::Never {
        "Failed"
    } else if pending_init > 0 || (pending_sidecars > 0 && !app_running) || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        // Every app container stopped.
        if terminal {
            if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if restart == RestartPolicy::Always {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart == RestartPolicy::Never {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    };
    // A deleted pod whose containers have all stopped (or never ran) ends Failed unless it
    // reached a terminal phase by itself, as the kubelet's TerminatePod makes it.
    let any_running = statuses.iter().any(|(_, s)| state_of(s).running.is_some());
    if facts.deleting && !any_running && !matches!(phase, "Succeeded" | "Failed") {
        return "Failed";
    }
    phase
}

fn state_of(s: &ContainerStatus) -> ApiState {
    s.state.clone().unwrap_or_default()
}

/// A kubelet condition before it gets its times.
struct Condition {
    type_: &'static str,
    status: bool,
    reason: Option<&'static str>,
    message: Option<String>,
}

impl Condition {
    fn new(
        type_: &'static str,
        status: bool,
        reason: Option<&'static str>,
        message: Option<String>,
    ) -> Self {
        Condition {
            type_,
            status,
            reason,
            message,
        }
    }

    /// The API condition: its lastTransitionTime stays while its status is unchanged.
    fn into_api(self, facts: &PodFacts<'_>, now: Timestamp) -> PodCondition {
        let status = if self.status { "True" } else { "False" };
        let last_transition_time = facts
            .previous
            .and_then(|p| p.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == self.type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        PodCondition {
            type_: self.type_.to_string(),
            status: status.to_string(),
            reason: self.reason.map(str::to_string),
            message: self.message,
            last_transition_time: Some(last_transition_time),
            last_probe_time: None,
            observed_generation: facts.generation,
        }
    }
}

/// Names as Go prints a `[]string`: `[a b]`.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// `GeneratePodInitializedCondition`.
fn initialized(statuses: &[(Kind, ContainerStatus)], phase: &str) -> Condition {
    let incomplete: Vec<&str> = statuses
        .iter()
        .filter(|(k, s)| match k {
            Kind::Sidecar => s.started != Some(true),
            Kind::Init => !s.ready,
            Kind::App => false,
        })
        .map(|(_, s)| s.name.as_str())
        .collect();
    if phase == "Succeeded" {
        return Condition::new("Initialized", true, Some("PodCompleted"), None);
    }
    // An app container that started means the pod was initialized (sidecars may be restarting).
    let app_started = statuses.iter().any(|(k, s)| {
        let st = state_of(s);
        *k == Kind::App && (st.running.is_some() || st.terminated.is_some())
    });
    if app_started || incomplete.is_empty() {
        return Condition::new("Initialized", true, None, None);
    }
    Condition::new(
        "Initialized",
        false,
        Some("ContainersNotInitialized"),
        Some(format!(
            "containers with incomplete status: {}",
            go_list(&incomplete)
        )),
    )
}

/// `GenerateContainersReadyCondition`: sidecars count as app containers do.
fn containers_ready(statuses: &[(Kind, ContainerStatus)], phase: &str) -> Condition {
    match phase {
        "Succeeded" => {
            return Condition::new("ContainersReady", false, Some("PodCompleted"), None);
        }
        "Failed" => return Condition::new("ContainersReady", false, Some("PodFailed"), None),
        _ => {}
    }
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|(k, s)| *k != Kind::Init && !s.ready)
        .map(|(_, s)| s.name.as_str())
        .collect();
    if unready.is_empty() {
        return Condition::new("ContainersReady", true, None, None);
    }
    Condition::new(
        "ContainersReady",
        false,
        Some("ContainersNotReady"),
        Some(format!(
            "containers with unready status: {}",
            go_list(&unready)
        )),
    )
}

/// `GeneratePodReadyCondition`: ContainersReady, and every readiness gate's condition True.
fn pod_ready(containers: &Condition, kept: &[PodCondition], gates: &[String]) -> Condition {
    if !containers.status {
        return Condition::new(
            "Ready",
            false,
            containers.reason,
            containers.message.clone(),
        );
    }
    let unmet: Vec<String> = gates
        .iter()
        .filter_map(|gate| match kept.iter().find(|c| &c.type_ == gate) {
            None => Some(format!(
                "corresponding condition of pod readiness gate {gate:?} does not exist."
            )),
            Some(c) if c.status != "True" => Some(format!(
                "the status of pod readiness gate {gate:?} is not \"True\", but {}",
                c.status
            )),
            Some(_) => None,
        })
        .collect();
    if unmet.is_empty() {
        Condition::new("Ready", true, None, None)
    } else {
        Condition::new(
            "Ready",
            false,
            Some("ReadinessGatesNotReady"),
            Some(unmet.join(", ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::lifecycle::Backoff;
    use RestartPolicy::{Always, Never, OnFailure};

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn facts<'a>() -> PodFacts<'a> {
        PodFacts {
            namespace: "shop",
            name: "web-0",
            uid: "uid-1",
            generation: Some(2),
            pod_ip: Some("10.88.0.5".parse().unwrap()),
            host_ip: "192.168.1.1".parse().unwrap(),
            start_time: t(0),
            deleting: false,
            readiness_gates: &[],
            previous: None,
        }
    }

    fn report(name: &str, kind: Kind, observed: Observed, ready: bool) -> ContainerReport {
        let started = matches!(observed, Observed::Running { .. });
        ContainerReport {
            name: name.to_string(),
            image: format!("smidge/{name}"),
            kind,
            container_id: (observed != Observed::NotCreated).then(|| format!("{name}-1")),
            state: ContainerState {
                observed,
                started,
                ..ContainerState::NEW
            },
            ready,
            last_termination: None,
        }
    }

    fn running(since: i64) -> Observed {
        Observed::Running { since: t(since) }
    }

    fn exited(code: i32, started: i64, finished: i64) -> Observed {
        Observed::Exited(Exit {
            code,
            signal: None,
            started: t(started),
            finished: t(finished),
        })
    }

    /// Type → (status, reason, message) of the conditions.
    fn conditions(s: &PodStatus) -> Vec<(String, String, Option<String>, Option<String>)> {
        s.conditions
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                )
            })
            .collect()
    }

    fn condition<'s>(s: &'s PodStatus, type_: &str) -> &'s PodCondition {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    fn cond(
        type_: &str,
        status: &str,
        reason: Option<&str>,
        message: Option<&str>,
    ) -> (String, String, Option<String>, Option<String>) {
        (
            type_.to_string(),
            status.to_string(),
            reason.map(str::to_string),
            message.map(str::to_string),
        )
    }

    fn phase_of(s: &PodStatus) -> &str {
        s.phase.as_deref().unwrap()
    }

    fn state(s: &ContainerStatus) -> &ApiState {
        s.state.as_ref().unwrap()
    }

    #[test]
    fn pending_while_an_init_container_runs() {
        let containers = [
            report("init", Kind::Init, running(1), false),
            report("app", Kind::App, Observed::NotCreated, false),
        ];
        let s = pod_status(&facts(), Always, &containers, t(2));
        assert_eq!(phase_of(&s), "Pending");
        assert_eq!(
            condition(&s, "Initialized").message.as_deref(),
            Some("containers with incomplete status: [init]")
        );
        assert_eq!(
            condition(&s, "Initialized").reason.as_deref(),
            Some("ContainersNotInitialized")
        );
        let init = &s.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!(init.started, Some(true));
        assert!(!init.ready);
        let app = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            state(app).waiting.as_ref().unwrap().reason.as_deref(),
            Some("PodInitializing")
        );
        assert_eq!(app.container_id, None);
    }

    #[test]
    fn running_and_ready_with_every_field() {
        let containers = [
            report("init", Kind::Init, exited(0, 1, 2), false),
            report("app", Kind::App, running(3), true),
        ];
        let s = pod_status(&facts(), Always, &containers, t(4));
        assert_eq!(phase_of(&s), "Running");
        assert_eq!(
            conditions(&s),
            vec![
                cond("PodReadyToStartContainers", "True", None, None),
                cond("Initialized", "True", None, None),
                cond("Ready", "True", None, None),
                cond("ContainersReady", "True", None, None),
                cond("PodScheduled", "True", None, None),
            ]
        );
        assert!(s.conditions.iter().flatten().all(|c| {
            c.last_transition_time == Some(Time(t(4))) && c.observed_generation == Some(2)
        }));
        assert_eq!(s.pod_ip.as_deref(), Some("10.88.0.5"));
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.88.0.5");
        assert_eq!(s.host_ip.as_deref(), Some("192.168.1.1"));
        assert_eq!(s.host_ips.as_ref().unwrap()[0].ip, "192.168.1.1");
        assert_eq!(s.start_time, Some(Time(t(0))));
        assert_eq!(s.observed_generation, Some(2));

        let init = &s.init_container_statuses.as_ref().unwrap()[0];
        let done = state(init).terminated.as_ref().unwrap();
        assert_eq!(
            (done.exit_code, done.reason.as_deref()),
            (0, Some("Completed"))
        );
        assert_eq!(done.finished_at, Some(Time(t(2))));
        assert!(init.ready);
        assert_eq!(init.started, Some(false));

        let app = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(app.name, "app");
        assert_eq!(app.image, "smidge/app");
        assert_eq!(app.image_id, "smidge/app");
        assert_eq!(app.container_id.as_deref(), Some("smidge://app-1"));
        assert!(app.ready);
        assert_eq!(app.started, Some(true));
        assert_eq!(app.restart_count, 0);
        assert_eq!(
            state(app).running.as_ref().unwrap().started_at,
            Some(Time(t(3)))
        );
    }

    #[test]
    fn sidecars_gate_initialization_and_count_toward_readiness() {
        let mut proxy = report("proxy", Kind::Sidecar, running(1), false);
        proxy.state.started = false;
        let containers = [proxy, report("app", Kind::App, Observed::NotCreated, false)];
        let s = pod_status(&facts(), Always, &containers, t(2));
        assert_eq!(phase_of(&s), "Pending");
        assert_eq!(
            condition(&s, "Initialized").message.as_deref(),
            Some("containers with incomplete status: [proxy]")
        );

        let containers = [
            report("proxy", Kind::Sidecar, running(1), false),
            report("app", Kind::App, running(2), true),
        ];
        let s = pod_status(&facts(), Always, &containers, t(3));
        assert_eq!(phase_of(&s), "Running");
        let unready = Some("containers with unready status: [proxy]");
        assert_eq!(condition(&s, "Initialized").status, "True");
        for type_ in ["ContainersReady", "Ready"] {
            let c = condition(&s, type_);
            assert_eq!(c.status, "False");
            assert_eq!(c.reason.as_deref(), Some("ContainersNotReady"));
            assert_eq!(c.message.as_deref(), unready);
        }
        let proxy = &s.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!((proxy.started, proxy.ready), (Some(true), false));
    }

    #[test]
    fn initialized_stays_true_while_a_sidecar_restarts() {
        let containers = [
            report("proxy", Kind::Sidecar, exited(1, 0, 5), false),
            report("app", Kind::App, running(1), true),
        ];
        let s = pod_status(&facts(), Always, &containers, t(5));
        assert_eq!(condition(&s, "Initialized").status, "True");
        assert_eq!(phase_of(&s), "Running");
    }

    fn crashed(backoff: Option<Backoff>) -> ContainerReport {
        let mut app = report("app", Kind::App, exited(1, 90, 100), false);
        app.state.restarts = 2;
        app.state.backoff = backoff;
        app.last_termination = Some(Exit {
            code: 1,
            signal: None,
            started: t(70),
            finished: t(80),
        });
        app
    }

    #[test]
    fn a_container_in_back_off_waits_in_crash_loop_back_off() {
        let entry = Backoff {
            delay: Duration::from_secs(20),
            updated: t(90),
        };
        let s = pod_status(&facts(), Always, &[crashed(Some(entry))], t(105));
        let app = &s.container_statuses.as_ref().unwrap()[0];
        let waiting = state(app).waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(
            waiting.message.as_deref(),
            Some("back-off 20s restarting failed container=app pod=web-0_shop(uid-1)")
        );
        // The exit that started the back-off is the last state.
        let last = app
            .last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
        assert_eq!(last.finished_at, Some(Time(t(100))));
        assert_eq!(app.restart_count, 2);
        assert!(!app.ready);
        assert_eq!(phase_of(&s), "Running");

        // Once the back-off is over (or before the first restart, which has none), the exit shows.
        for (entry, now) in [(Some(entry), 120), (None, 100)] {
            let s = pod_status(&facts(), Always, &[crashed(entry)], t(now));
            let app = &s.container_statuses.as_ref().unwrap()[0];
            assert_eq!(state(app).terminated.as_ref().unwrap().exit_code, 1);
            let last = app
                .last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap();
            assert_eq!(last.finished_at, Some(Time(t(80))));
        }
        // A container that will not restart never shows the back-off.
        let s = pod_status(&facts(), Never, &[crashed(Some(entry))], t(105));
        let app = &s.container_statuses.as_ref().unwrap()[0];
        assert!(state(app).terminated.is_some());
    }

    #[test]
    fn waiting_reasons_of_containers_not_running() {
        let image = Observed::Waiting {
            reason: "ErrImagePull".into(),
            message: "no program for image \"nginx\"".into(),
            since: t(0),
        };
        let containers = [
            report("app", Kind::App, image, false),
            report("web", Kind::App, Observed::NotCreated, false),
        ];
        let s = pod_status(&facts(), Always, &containers, t(1));
        let statuses = s.container_statuses.as_ref().unwrap();
        let w = state(&statuses[0]).waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("ErrImagePull"));
        assert_eq!(w.message.as_deref(), Some("no program for image \"nginx\""));
        let w = state(&statuses[1]).waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
        assert_eq!(phase_of(&s), "Pending");
        assert!(s.init_container_statuses.is_none());
    }

    #[test]
    fn succeeded_and_failed() {
        let done = |code| [report("job", Kind::App, exited(code, 0, 5), false)];
        let s = pod_status(&facts(), Never, &done(0), t(6));
        assert_eq!(phase_of(&s), "Succeeded");
        assert_eq!(
            conditions(&s)[1..4],
            [
                cond("Initialized", "True", Some("PodCompleted"), None),
                cond("Ready", "False", Some("PodCompleted"), None),
                cond("ContainersReady", "False", Some("PodCompleted"), None),
            ]
        );
        let s = pod_status(&facts(), OnFailure, &done(0), t(6));
        assert_eq!(phase_of(&s), "Succeeded");
        let s = pod_status(&facts(), Never, &done(3), t(6));
        assert_eq!(phase_of(&s), "Failed");
        assert_eq!(
            condition(&s, "ContainersReady").reason.as_deref(),
            Some("PodFailed")
        );
        assert_eq!(condition(&s, "Ready").reason.as_deref(), Some("PodFailed"));
        // OnFailure restarts a failed container: the pod runs on.
        let s = pod_status(&facts(), OnFailure, &done(3), t(6));
        assert_eq!(phase_of(&s), "Running");
        let s = pod_status(&facts(), Always, &done(0), t(6));
        assert_eq!(phase_of(&s), "Running");
    }

    #[test]
    fn a_failed_init_container_fails_the_pod_only_under_never() {
        let containers = [
            report("init", Kind::Init, exited(1, 0, 1), false),
            report("app", Kind::App, Observed::NotCreated, false),
        ];
        let s = pod_status(&facts(), Never, &containers, t(2));
        assert_eq!(phase_of(&s), "Failed");
        let s = pod_status(&facts(), OnFailure, &containers, t(2));
        assert_eq!(phase_of(&s), "Pending");
    }

    #[test]
    fn a_finished_pod_runs_until_its_sidecars_stopped() {
        let containers = [
            report("proxy", Kind::Sidecar, running(0), true),
            report("job", Kind::App, exited(0, 1, 5), false),
        ];
        let s = pod_status(&facts(), Never, &containers, t(5));
        assert_eq!(phase_of(&s), "Running");
        let containers = [
            report("proxy", Kind::Sidecar, exited(143, 0, 6), false),
            report("job", Kind::App, exited(0, 1, 5), false),
        ];
        let s = pod_status(&facts(), Never, &containers, t(6));
        assert_eq!(phase_of(&s), "Succeeded");
    }

    #[test]
    fn deletion_keeps_ready_and_ends_in_a_terminal_phase() {
        let mut f = facts();
        f.deleting = true;
        let s = pod_status(
            &f,
            Always,
            &[report("app", Kind::App, running(0), true)],
            t(5),
        );
        assert_eq!(phase_of(&s), "Running");
        assert_eq!(condition(&s, "Ready").status, "True");
        let killed = [report("app", Kind::App, exited(143, 0, 6), false)];
        let s = pod_status(&f, Always, &killed, t(6));
        assert_eq!(phase_of(&s), "Failed");
        let clean = [report("app", Kind::App, exited(0, 0, 6), false)];
        let s = pod_status(&f, Always, &clean, t(6));
        assert_eq!(phase_of(&s), "Succeeded");
        let never_ran = [report("app", Kind::App, Observed::NotCreated, false)];
        let s = pod_status(&f, Always, &never_ran, t(6));
        assert_eq!(phase_of(&s), "Failed");
        // An init container still running is not stopped yet.
        let initializing = [
            report("init", Kind::Init, running(0), false),
            report("app", Kind::App, Observed::NotCreated, false),
        ];
        let s = pod_status(&f, Always, &initializing, t(6));
        assert_eq!(phase_of(&s), "Pending");
    }

    #[test]
    fn a_terminal_phase_stays() {
        let previous = PodStatus {
            phase: Some("Succeeded".into()),
            ..PodStatus::default()
        };
        let mut f = facts();
        f.previous = Some(&previous);
        let s = pod_status(
            &f,
            Always,
            &[report("app", Kind::App, running(0), true)],
            t(5),
        );
        assert_eq!(phase_of(&s), "Succeeded");
    }

    fn previous_condition(type_: &str, status: &str, at: i64) -> PodCondition {
        PodCondition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: Some(Time(t(at))),
            ..PodCondition::default()
        }
    }

    #[test]
    fn last_transition_time_stays_while_the_status_does() {
        let previous = PodStatus {
            conditions: Some(vec![
                previous_condition("Ready", "False", 5),
                previous_condition("PodScheduled", "True", 1),
                previous_condition("Initialized", "True", 5),
            ]),
            qos_class: Some("BestEffort".into()),
            start_time: Some(Time(t(-10))),
            ..PodStatus::default()
        };
        let mut f = facts();
        f.previous = Some(&previous);
        let s = pod_status(
            &f,
            Always,
            &[report("app", Kind::App, running(0), true)],
            t(50),
        );
        assert_eq!(
            condition(&s, "Ready").last_transition_time,
            Some(Time(t(50)))
        );
        assert_eq!(
            condition(&s, "PodScheduled").last_transition_time,
            Some(Time(t(1)))
        );
        assert_eq!(
            condition(&s, "Initialized").last_transition_time,
            Some(Time(t(5)))
        );
        assert_eq!(
            condition(&s, "ContainersReady").last_transition_time,
            Some(Time(t(50)))
        );
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        assert_eq!(s.start_time, Some(Time(t(-10))));
    }

    #[test]
    fn readiness_gates_hold_ready_back() {
        let gates = ["example.com/lb".to_string()];
        let app = [report("app", Kind::App, running(0), true)];
        let mut f = facts();
        f.readiness_gates = &gates;
        let s = pod_status(&f, Always, &app, t(5));
        let ready = condition(&s, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some(
                "corresponding condition of pod readiness gate \"example.com/lb\" does not exist."
            )
        );
        assert_eq!(condition(&s, "ContainersReady").status, "True");

        let gate_false = PodStatus {
            conditions: Some(vec![previous_condition("example.com/lb", "False", 2)]),
            ..PodStatus::default()
        };
        f.previous = Some(&gate_false);
        let s = pod_status(&f, Always, &app, t(5));
        assert_eq!(
            condition(&s, "Ready").message.as_deref(),
            Some("the status of pod readiness gate \"example.com/lb\" is not \"True\", but False")
        );
        // The gate's condition, set by someone else, is kept as it was.
        assert_eq!(
            condition(&s, "example.com/lb"),
            &previous_condition("example.com/lb", "False", 2)
        );

        let gate_true = PodStatus {
            conditions: Some(vec![previous_condition("example.com/lb", "True", 2)]),
            ..PodStatus::default()
        };
        f.previous = Some(&gate_true);
        let s = pod_status(&f, Always, &app, t(5));
        assert_eq!(condition(&s, "Ready").status, "True");
    }

    #[test]
    fn no_sandbox_no_pod_ip() {
        let mut f = facts();
        f.pod_ip = None;
        let s = pod_status(
            &f,
            Always,
            &[report("app", Kind::App, Observed::NotCreated, false)],
            t(1),
        );
        assert_eq!(condition(&s, "PodReadyToStartContainers").status, "False");
        assert_eq!(s.pod_ip, None);
        assert_eq!(s.pod_ips, None);
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        let cases = [
            (0, "0s"),
            (10, "10s"),
            (160, "2m40s"),
            (300, "5m0s"),
            (3600, "1h0m0s"),
        ];
        for (secs, text) in cases {
            assert_eq!(go_duration(Duration::from_secs(secs)), text);
        }
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    }
}
