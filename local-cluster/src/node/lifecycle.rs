//! What the kubelet does next for one pod, with Kubernetes ≥ 1.29 semantics (native sidecars):
//! which containers to start, which to restart once their crash-loop back-off ends, which to kill
//! after a failed probe, and whether the pod has finished. Pure: the caller observes the processes,
//! keeps each container's [`ContainerState`], and passes the time in.
//!
//! The rules follow the kubelet's `computePodActions` / `computeInitContainerActions` and
//! client-go's `flowcontrol.Backoff` as the kubelet uses it.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::probe::ProbeKind;

/// The first crash-loop back-off: the delay before the second restart of a crashing container.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// The longest crash-loop back-off (`MaxContainerBackOff`).
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran longer than this since its last restart starts its back-off afresh
/// (client-go resets an entry idle for twice its maximum).
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How long a container whose start failed (it is [`Observed::Waiting`]) waits before the next try.
pub const START_RETRY: Duration = Duration::from_secs(10);

/// Which list of the pod spec a container comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `spec.initContainers[]` without `restartPolicy`: runs to completion before the next one.
    Init,
    /// `spec.initContainers[]` with `restartPolicy: Always`: a native sidecar, kept running.
    Sidecar,
    /// `spec.containers[]`.
    App,
}

impl Kind {
    /// The kind of an entry of `spec.initContainers`, from its `restartPolicy`.
    pub fn of_init_container(restart_policy: Option<&str>) -> Kind {
        if restart_policy == Some("Always") {
            Kind::Sidecar
        } else {
            Kind::Init
        }
    }
}

/// The pod's `spec.restartPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// Parse `spec.restartPolicy`; absent means Always (the API server's default). `None` for an
    /// unknown value.
    pub fn from_spec(value: Option<&str>) -> Option<RestartPolicy> {
        match value {
            None | Some("Always") => Some(RestartPolicy::Always),
            Some("OnFailure") => Some(RestartPolicy::OnFailure),
            Some("Never") => Some(RestartPolicy::Never),
            Some(_) => None,
        }
    }
}

/// One container of the pod, in spec order (init containers, sidecars among them, then apps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub kind: Kind,
}

/// How a container's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit code; a process killed by a signal reports 128 + the signal, as runtimes do.
    pub code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    pub started: Timestamp,
    pub finished: Timestamp,
}

/// What the runtime observed of a container's current instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Never started.
    NotCreated,
    /// The last attempt to start it failed before a process ran (an unknown image, a missing
    /// ConfigMap key…): `reason` as the kubelet gives it (e.g. `ErrImagePull`,
    /// `CreateContainerConfigError`), `since` when that attempt failed.
    Waiting {
        reason: String,
        message: String,
        since: Timestamp,
    },
    /// Its process runs.
    Running { since: Timestamp },
    /// Its process exited.
    Exited(Exit),
}

/// The kubelet's crash-loop back-off entry for one container (client-go `flowcontrol.Backoff`):
/// the delay a restart now waits after an exit, and when the entry last advanced (the last restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub delay: Duration,
    pub updated: Timestamp,
}

/// What the caller keeps for one container between calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerState {
    pub observed: Observed,
    /// The startup probe has passed, or the container has none (set it as soon as it runs then).
    /// Meaningful while running.
    pub started: bool,
    /// A liveness or startup probe of the running instance failed past its threshold.
    pub probe_failed: Option<ProbeKind>,
    /// `restartCount`: how many times it was restarted after an exit.
    pub restarts: u32,
    /// Its back-off entry: none until its first restart; replace it with the one an
    /// [`Action::Restart`] carries.
    pub backoff: Option<Backoff>,
}

impl ContainerState {
    /// A container not started yet.
    pub const NEW: ContainerState = ContainerState {
        observed: Observed::NotCreated,
        started: false,
        probe_failed: None,
        restarts: 0,
        backoff: None,
    };
}

/// What the caller does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create and start the container (its first start, or a retry after a failed start).
    Start { name: String },
    /// Start the container again after its exit: count a restart and keep `backoff` as its entry.
    Restart { name: String, backoff: Backoff },
    /// Kill the running container after a failed probe; `reason` (`LivenessProbe`,
    /// `StartupProbe`) and `message` as the kubelet's Killing event gives them. Whether it then
    /// restarts follows from its exit, as for any exit. Repeated on every call until the
    /// container has exited: the caller ignores a kill already under way.
    Kill {
        name: String,
        reason: &'static str,
        message: String,
    },
    /// Every app container is done and none restarts: stop what still runs (sidecars) in
    /// [`stop_order`], as on deletion. The pod then reaches its terminal phase.
    Terminate,
    /// Nothing is due before this instant (a back-off or a start retry ends), unless something
    /// new is observed first.
    WaitUntil(Timestamp),
}

/// The instant `d` after `t` (saturating at the end of time).
pub(crate) fn later(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// How long from `from` to `to` (zero if `to` is earlier).
pub(crate) fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

/// The crash-loop back-off before a restart of a container restarted `restarts` times since its
/// back-off last reset: none for the first restart, then 10 s, 20 s, 40 s… capped at 300 s.
/// (The sequence [`restart_at`] and [`advance`] produce for a container that keeps crashing.)
pub fn backoff(restarts: u32) -> Duration {
    if restarts == 0 {
        return Duration::ZERO;
    }
    let doublings = restarts - 1;
    if doublings >= 6 {
        return BACKOFF_MAX;
    }
    (BACKOFF_INITIAL * (1 << doublings)).min(BACKOFF_MAX)
}

/// Whether `entry` has lapsed for an exit at `finished`: the container ran longer than
/// [`BACKOFF_RESET`] since the entry last advanced.
fn lapsed(entry: &Backoff, finished: Timestamp) -> bool {
    elapsed(entry.updated, finished) > BACKOFF_RESET
}

/// When a container that exited at `finished` may restart (client-go `IsInBackOffSince`): at
/// once without an entry or with a lapsed one, else `delay` after the exit.
pub fn restart_at(entry: Option<&Backoff>, finished: Timestamp) -> Timestamp {
    match entry {
        Some(e) if !lapsed(e, finished) => later(finished, e.delay),
        _ => finished,
    }
}

/// The entry after restarting, at `now`, a container that exited at `finished` (client-go
/// `Next`): [`BACKOFF_INITIAL`] when new or lapsed, else doubled up to [`BACKOFF_MAX`].
pub fn advance(entry: Option<&Backoff>, finished: Timestamp, now: Timestamp) -> Backoff {
    let delay = match entry {
        Some(e) if !lapsed(e, finished) => (e.delay * 2).min(BACKOFF_MAX),
        _ => BACKOFF_INITIAL,
    };
    Backoff {
        delay,
        updated: now,
    }
}

/// Whether the kubelet restarts a container of `kind` that exited with `code`, while the pod runs.
/// Sidecars always; init containers on failure unless the policy is Never; apps per the policy.
pub fn will_restart(kind: Kind, policy: RestartPolicy, code: i32) -> bool {
    match kind {
        Kind::Sidecar => true,
        Kind::Init => code != 0 && policy != RestartPolicy::Never,
        Kind::App => match policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        },
    }
}

/// Whether the pod has finished: `Some(true)` when every app container exited 0 and none will
/// restart, `Some(false)` when they all exited and will not restart with at least one failure, or
/// an init container failed under restartPolicy Never; `None` while it runs. Sidecars do not count:
/// they are stopped once the apps are done. `states[i]` belongs to `spec[i]`.
pub fn finished(
    spec: &[ContainerSpec],
    restart: RestartPolicy,
    states: &[ContainerState],
) -> Option<bool> {
    let pairs = || {
        spec.iter()
            .enumerate()
            .map(|(i, s)| (s, states.get(i).unwrap_or(&ContainerState::NEW)))
    };
    let init_failed = pairs().any(|(s, st)| {
        s.kind == Kind::Init
            && restart == RestartPolicy::Never
            && matches!(st.observed, Observed::Exited(e) if e.code != 0)
    });
    if init_failed {
        return Some(false);
    }
    let mut apps = 0;
    let mut all_zero = true;
    for (_, st) in pairs().filter(|(s, _)| s.kind == Kind::App) {
        apps += 1;
        let Observed::Exited(e) = st.observed else {
            return None;
        };
        if will_restart(Kind::App, restart, e.code) {
            return None;
        }
        all_zero &= e.code == 0;
    }
    (apps > 0).then_some(all_zero)
}

/// The order the kubelet stops a pod's containers in (≥ 1.29): first every container that is not
/// a sidecar, together, then the sidecars one at a time in reverse spec order, each once the one
/// before has exited. Each inner list is stopped together; skip the containers not running.
pub fn stop_order(spec: &[ContainerSpec]) -> Vec<Vec<String>> {
    let mut stages = Vec::new();
    let first: Vec<String> = spec
        .iter()
        .filter(|s| s.kind != Kind::Sidecar)
        .map(|s| s.name.clone())
        .collect();
    if !first.is_empty() {
        stages.push(first);
    }
    stages.extend(
        spec.iter()
            .rev()
            .filter(|s| s.kind == Kind::Sidecar)
            .map(|s| vec![s.name.clone()]),
    );
    stages
}

/// The actions and the earliest wake-up of one call of [`next`].
struct Plan {
    now: Timestamp,
    restart: RestartPolicy,
    actions: Vec<Action>,
    wake: Option<Timestamp>,
}

impl Plan {
    fn wait_until(&mut self, at: Timestamp) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    /// Start a container that never ran, or retry one whose start failed.
    fn start(&mut self, spec: &ContainerSpec, state: &ContainerState) {
        match &state.observed {
            Observed::NotCreated => self.actions.push(Action::Start {
                name: spec.name.clone(),
            }),
            Observed::Waiting { since, .. } => {
                let at = later(*since, START_RETRY);
                if self.now >= at {
                    self.actions.push(Action::Start {
                        name: spec.name.clone(),
                    });
                } else {
                    self.wait_until(at);
                }
            }
            Observed::Running { .. } | Observed::Exited(_) => {}
        }
    }

    /// Restart an exited container if its kind and the policy say so, once its back-off ends.
    fn restart_exited(&mut self, spec: &ContainerSpec, state: &ContainerState, exit: &Exit) {
        if !will_restart(spec.kind, self.restart, exit.code) {
            return;
        }
        let at = restart_at(state.backoff.as_ref(), exit.finished);
        if self.now >= at {
            self.actions.push(Action::Restart {
                name: spec.name.clone(),
                backoff: advance(state.backoff.as_ref(), exit.finished, self.now),
            });
        } else {
            self.wait_until(at);
        }
    }

    /// Keep a container going: start it, retry its start, or restart it after an exit.
    fn keep_up(&mut self, spec: &ContainerSpec, state: &ContainerState) {
        match &state.observed {
            Observed::Exited(e) => self.restart_exited(spec, state, e),
            _ => self.start(spec, state),
        }
    }
}

/// What the kubelet does next for a pod whose containers are `spec` (in spec order) and whose
/// observed states are `states` (`states[i]` belongs to `spec[i]`; missing ones are not created).
///
/// Init containers run one at a time, each to exit 0 before the next; a failed one restarts
/// with back-off unless the policy is Never (then the pod has failed). A sidecar starts in its
/// place in that order and the next one waits until it has started; sidecars restart whenever
/// they exit. App containers all start together once every init container completed and every
/// sidecar started, and restart per the policy. While `deleting`, nothing starts (the caller
/// stops the pod in [`stop_order`]). At most one [`Action::WaitUntil`], last.
pub fn next(
    spec: &[ContainerSpec],
    restart: RestartPolicy,
    states: &[ContainerState],
    deleting: bool,
    now: Timestamp,
) -> Vec<Action> {
    if deleting {
        return Vec::new();
    }
    let state = |i: usize| states.get(i).unwrap_or(&ContainerState::NEW);
    let running = |i: usize| matches!(state(i).observed, Observed::Running { .. });
    if finished(spec, restart, states).is_some() {
        return if (0..spec.len()).any(running) {
            vec![Action::Terminate]
        } else {
            Vec::new()
        };
    }
    let mut plan = Plan {
        now,
        restart,
        actions: Vec::new(),
        wake: None,
    };

    for (i, s) in spec.iter().enumerate() {
        if let (true, Some(kind)) = (running(i), state(i).probe_failed) {
            plan.actions.push(kill(s, kind, restart));
        }
    }

    if initialized(spec, states, &mut plan) {
        for (i, s) in spec.iter().enumerate().filter(|(_, s)| s.kind == Kind::App) {
            plan.keep_up(s, state(i));
        }
    }

    let mut actions = plan.actions;
    if let Some(at) = plan.wake {
        actions.push(Action::WaitUntil(at));
    }
    actions
}

/// The kill of a container whose `kind` of probe failed, worded as the kubelet's event.
fn kill(spec: &ContainerSpec, kind: ProbeKind, restart: RestartPolicy) -> Action {
    let (reason, what) = match kind {
        ProbeKind::Startup => ("StartupProbe", "startup"),
        ProbeKind::Liveness | ProbeKind::Readiness => ("LivenessProbe", "liveness"),
    };
    let mut message = format!("Container {} failed {what} probe", spec.name);
    // The killed process exits non-zero, so it restarts unless the policy is Never.
    if spec.kind == Kind::Sidecar || restart != RestartPolicy::Never {
        message.push_str(", will be restarted");
    }
    Action::Kill {
        name: spec.name.clone(),
        reason,
        message,
    }
}

/// The init-container part of `computeInitContainerActions`: adds the starts and restarts of
/// init containers and sidecars to `plan`, and says whether the app containers may run.
fn initialized(spec: &[ContainerSpec], states: &[ContainerState], plan: &mut Plan) -> bool {
    let state = |i: usize| states.get(i).unwrap_or(&ContainerState::NEW);
    let inits: Vec<usize> = (0..spec.len())
        .filter(|&i| spec[i].kind != Kind::App)
        .collect();
    // A running app container means the pod initialized before: only sidecars are kept up.
    let app_running = (0..spec.len()).any(|i| {
        spec[i].kind == Kind::App && matches!(state(i).observed, Observed::Running { .. })
    });
    // The last init container that has been created marks the progress; those before it ran.
    let last = if app_running {
        None
    } else {
        inits
            .iter()
            .rposition(|&i| state(i).observed != Observed::NotCreated)
    };
    let before = if app_running {
        inits.len()
    } else {
        last.unwrap_or(0)
    };
    for &i in &inits[..before] {
        if spec[i].kind == Kind::Sidecar && !matches!(state(i).observed, Observed::Running { .. }) {
            plan.keep_up(&spec[i], state(i));
        }
    }
    if app_running {
        return true;
    }
    let Some(k) = last else {
        // Nothing ran yet: start the first init container, or the apps if there is none.
        match inits.first() {
            Some(&i) => {
                plan.start(&spec[i], state(i));
                return false;
            }
            None => return true,
        }
    };
    let i = inits[k];
    let st = state(i);
    let done = match (&spec[i].kind, &st.observed) {
        (Kind::Init, Observed::Exited(e)) if e.code == 0 => true,
        (Kind::Sidecar, Observed::Running { .. }) => st.started,
        (_, Observed::Running { .. }) => false,
        _ => {
            plan.keep_up(&spec[i], st);
            false
        }
    };
    if !done {
        return false;
    }
    match inits.get(k + 1) {
        Some(&n) => {
            plan.start(&spec[n], state(n));
            false
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn c(name: &str, kind: Kind) -> ContainerSpec {
        ContainerSpec {
            name: name.to_string(),
            kind,
        }
    }

    fn running(since: i64, started: bool) -> ContainerState {
        ContainerState {
            observed: Observed::Running { since: t(since) },
            started,
            ..ContainerState::NEW
        }
    }

    fn exited(code: i32, started: i64, finished: i64) -> ContainerState {
        ContainerState {
            observed: Observed::Exited(Exit {
                code,
                signal: None,
                started: t(started),
                finished: t(finished),
            }),
            ..ContainerState::NEW
        }
    }

    fn start(name: &str) -> Action {
        Action::Start {
            name: name.to_string(),
        }
    }

    fn restart(name: &str, delay: u64, now: i64) -> Action {
        Action::Restart {
            name: name.to_string(),
            backoff: Backoff {
                delay: Duration::from_secs(delay),
                updated: t(now),
            },
        }
    }

    const NEW: ContainerState = ContainerState::NEW;
    use RestartPolicy::{Always, Never, OnFailure};

    fn pod() -> Vec<ContainerSpec> {
        vec![
            c("init-a", Kind::Init),
            c("init-b", Kind::Init),
            c("app", Kind::App),
        ]
    }

    #[test]
    fn init_containers_run_one_at_a_time_in_order() {
        let spec = pod();
        assert_eq!(next(&spec, Always, &[], false, t(0)), vec![start("init-a")]);
        let states = [running(0, true), NEW, NEW];
        assert_eq!(next(&spec, Always, &states, false, t(1)), vec![]);
        let states = [exited(0, 0, 2), NEW, NEW];
        assert_eq!(
            next(&spec, Always, &states, false, t(2)),
            vec![start("init-b")]
        );
        let states = [exited(0, 0, 2), running(2, true), NEW];
        assert_eq!(next(&spec, Always, &states, false, t(3)), vec![]);
        let states = [exited(0, 0, 2), exited(0, 2, 4), NEW];
        assert_eq!(
            next(&spec, Always, &states, false, t(4)),
            vec![start("app")]
        );
        // Once the app runs, completed init containers are left alone.
        let states = [exited(0, 0, 2), exited(0, 2, 4), running(4, true)];
        assert_eq!(next(&spec, Always, &states, false, t(5)), vec![]);
    }

    #[test]
    fn a_failed_init_container_restarts_with_back_off_unless_never() {
        let spec = pod();
        let states = [exited(1, 0, 5), NEW, NEW];
        for policy in [Always, OnFailure] {
            // The first restart is immediate and starts the back-off at 10 s.
            assert_eq!(
                next(&spec, policy, &states, false, t(5)),
                vec![restart("init-a", 10, 5)]
            );
            assert_eq!(finished(&spec, policy, &states), None);
        }
        // Under Never the pod has failed: nothing restarts.
        assert_eq!(next(&spec, Never, &states, false, t(5)), vec![]);
        assert_eq!(finished(&spec, Never, &states), Some(false));
    }

    #[test]
    fn a_crashing_init_container_waits_out_its_back_off() {
        let spec = pod();
        let mut a = exited(1, 20, 25);
        a.restarts = 1;
        a.backoff = Some(Backoff {
            delay: Duration::from_secs(10),
            updated: t(20),
        });
        let states = [a, NEW, NEW];
        assert_eq!(
            next(&spec, OnFailure, &states, false, t(30)),
            vec![Action::WaitUntil(t(35))]
        );
        assert_eq!(
            next(&spec, OnFailure, &states, false, t(35)),
            vec![restart("init-a", 20, 35)]
        );
    }

    fn sidecar_pod() -> Vec<ContainerSpec> {
        vec![
            c("init", Kind::Init),
            c("proxy", Kind::Sidecar),
            c("setup", Kind::Init),
            c("app", Kind::App),
            c("web", Kind::App),
        ]
    }

    #[test]
    fn the_next_init_container_waits_until_the_sidecar_started() {
        let spec = sidecar_pod();
        let states = [exited(0, 0, 1), NEW, NEW, NEW, NEW];
        assert_eq!(
            next(&spec, Always, &states, false, t(1)),
            vec![start("proxy")]
        );
        // Running but its startup probe has not passed yet.
        let states = [exited(0, 0, 1), running(1, false), NEW, NEW, NEW];
        assert_eq!(next(&spec, Always, &states, false, t(2)), vec![]);
        let states = [exited(0, 0, 1), running(1, true), NEW, NEW, NEW];
        assert_eq!(
            next(&spec, Always, &states, false, t(3)),
            vec![start("setup")]
        );
    }

    #[test]
    fn app_containers_start_together_after_init_and_sidecars() {
        let spec = sidecar_pod();
        let states = [exited(0, 0, 1), running(1, true), exited(0, 2, 3), NEW, NEW];
        assert_eq!(
            next(&spec, Always, &states, false, t(3)),
            vec![start("app"), start("web")]
        );
        // A pod with only app containers starts them all at once.
        let spec = [c("a", Kind::App), c("b", Kind::App)];
        assert_eq!(
            next(&spec, Never, &[], false, t(0)),
            vec![start("a"), start("b")]
        );
    }

    #[test]
    fn a_sidecar_restarts_even_under_never() {
        let spec = sidecar_pod();
        let states = [
            exited(0, 0, 1),
            exited(1, 1, 10),
            exited(0, 2, 3),
            running(3, true),
            running(3, true),
        ];
        assert_eq!(
            next(&spec, Never, &states, false, t(10)),
            vec![restart("proxy", 10, 10)]
        );
        // Before the app started: the sidecar restarts and `setup` waits for it again.
        let states = [exited(0, 0, 1), exited(1, 1, 2), NEW, NEW, NEW];
        assert_eq!(
            next(&spec, Never, &states, false, t(2)),
            vec![restart("proxy", 10, 2)]
        );
        // A sidecar that exits after the next init container started is restarted beside it.
        let states = [exited(0, 0, 1), exited(0, 1, 4), running(2, true), NEW, NEW];
        assert_eq!(
            next(&spec, Never, &states, false, t(4)),
            vec![restart("proxy", 10, 4)]
        );
    }

    #[test]
    fn apps_restart_per_policy() {
        let spec = [c("app", Kind::App), c("other", Kind::App)];
        let cases = [
            (Always, 0, true),
            (Always, 1, true),
            (OnFailure, 0, false),
            (OnFailure, 1, true),
            (Never, 0, false),
            (Never, 1, false),
        ];
        for (policy, code, restarts) in cases {
            let states = [exited(code, 0, 5), running(0, true)];
            let expected = if restarts {
                vec![restart("app", 10, 5)]
            } else {
                vec![]
            };
            assert_eq!(
                next(&spec, policy, &states, false, t(5)),
                expected,
                "{policy:?} exit {code}"
            );
        }
    }

    #[test]
    fn back_off_doubles_to_its_cap() {
        let seconds: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(seconds, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
        // The entries `advance` and `restart_at` make follow the same sequence for a container
        // that crashes right after each restart.
        let mut entry: Option<Backoff> = None;
        let mut now = t(0);
        for n in 0..9 {
            let at = restart_at(entry.as_ref(), now);
            assert_eq!(elapsed(now, at), backoff(n), "restart {n}");
            entry = Some(advance(entry.as_ref(), now, at));
            now = later(at, Duration::from_secs(1));
        }
    }

    #[test]
    fn back_off_resets_after_ten_minutes_of_running() {
        let spec = [c("app", Kind::App)];
        let entry = Backoff {
            delay: Duration::from_secs(160),
            updated: t(0),
        };
        // Crashed 10 min after its last restart: still in back-off (not longer than the reset).
        let mut state = exited(1, 0, 600);
        state.backoff = Some(entry);
        assert_eq!(
            next(&spec, Always, std::slice::from_ref(&state), false, t(600)),
            vec![Action::WaitUntil(t(760))]
        );
        // Crashed after more than 10 min: restarts at once, back-off back to 10 s.
        state.observed = exited(1, 0, 601).observed;
        assert_eq!(
            next(&spec, Always, std::slice::from_ref(&state), false, t(601)),
            vec![restart("app", 10, 601)]
        );
    }

    #[test]
    fn a_failed_probe_kills_the_container() {
        let spec = [c("app", Kind::App)];
        let mut state = running(0, true);
        state.probe_failed = Some(ProbeKind::Liveness);
        assert_eq!(
            next(&spec, Always, std::slice::from_ref(&state), false, t(40)),
            vec![Action::Kill {
                name: "app".into(),
                reason: "LivenessProbe",
                message: "Container app failed liveness probe, will be restarted".into(),
            }]
        );
        state.probe_failed = Some(ProbeKind::Startup);
        assert_eq!(
            next(&spec, Never, std::slice::from_ref(&state), false, t(40)),
            vec![Action::Kill {
                name: "app".into(),
                reason: "StartupProbe",
                message: "Container app failed startup probe".into(),
            }]
        );
    }

    #[test]
    fn a_failed_start_is_retried_later() {
        let spec = [c("app", Kind::App)];
        let state = ContainerState {
            observed: Observed::Waiting {
                reason: "ErrImagePull".into(),
                message: "unknown image".into(),
                since: t(0),
            },
            ..NEW
        };
        let states = std::slice::from_ref(&state);
        assert_eq!(
            next(&spec, Always, states, false, t(3)),
            vec![Action::WaitUntil(t(10))]
        );
        assert_eq!(
            next(&spec, Always, states, false, t(10)),
            vec![start("app")]
        );
    }

    #[test]
    fn deleting_starts_nothing() {
        let spec = pod();
        assert_eq!(next(&spec, Always, &[], true, t(0)), vec![]);
        let states = [exited(0, 0, 1), exited(0, 1, 2), exited(1, 2, 3)];
        assert_eq!(next(&spec, Always, &states, true, t(3)), vec![]);
    }

    #[test]
    fn finished_pods() {
        let spec = [c("a", Kind::App), c("b", Kind::App)];
        let ok = [exited(0, 0, 1), exited(0, 0, 2)];
        let failed = [exited(0, 0, 1), exited(2, 0, 2)];
        let one_running = [exited(1, 0, 1), running(0, true)];
        assert_eq!(finished(&spec, Never, &ok), Some(true));
        assert_eq!(finished(&spec, OnFailure, &ok), Some(true));
        assert_eq!(finished(&spec, Always, &ok), None);
        assert_eq!(finished(&spec, Never, &failed), Some(false));
        assert_eq!(finished(&spec, OnFailure, &failed), None);
        assert_eq!(finished(&spec, Never, &one_running), None);
        assert_eq!(finished(&spec, Never, &[]), None);
    }

    #[test]
    fn a_finished_pod_stops_its_sidecars() {
        let spec = [c("proxy", Kind::Sidecar), c("job", Kind::App)];
        let states = [running(0, true), exited(0, 1, 5)];
        assert_eq!(finished(&spec, OnFailure, &states), Some(true));
        assert_eq!(
            next(&spec, OnFailure, &states, false, t(5)),
            vec![Action::Terminate]
        );
        let states = [exited(143, 0, 6), exited(0, 1, 5)];
        assert_eq!(next(&spec, OnFailure, &states, false, t(6)), vec![]);
    }

    #[test]
    fn stop_order_is_apps_then_sidecars_in_reverse() {
        let spec = sidecar_pod();
        let spec = [
            spec[0].clone(),
            spec[1].clone(),
            c("log", Kind::Sidecar),
            spec[3].clone(),
        ];
        assert_eq!(
            stop_order(&spec),
            vec![
                vec!["init".to_string(), "app".to_string()],
                vec!["log".to_string()],
                vec!["proxy".to_string()],
            ]
        );
    }

    #[test]
    fn parses_the_spec_values() {
        assert_eq!(RestartPolicy::from_spec(None), Some(Always));
        assert_eq!(RestartPolicy::from_spec(Some("OnFailure")), Some(OnFailure));
        assert_eq!(RestartPolicy::from_spec(Some("Never")), Some(Never));
        assert_eq!(RestartPolicy::from_spec(Some("Sometimes")), None);
        assert_eq!(Kind::of_init_container(Some("Always")), Kind::Sidecar);
        assert_eq!(Kind::of_init_container(None), Kind::Init);
    }
}
