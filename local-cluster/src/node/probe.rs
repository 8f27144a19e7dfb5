//! One probe of one container instance: its results → its state, as the kubelet's prober worker
//! keeps it. Nothing runs before the initial delay; readiness starts not ready and flips after
//! `success_threshold` consecutive successes (back after `failure_threshold` failures); liveness
//! and startup start passing and fail after `failure_threshold` consecutive failures, which kills
//! the container. Readiness and liveness wait until the startup probe (if any) has passed. Pure:
//! the caller runs the probe (with [`ProbeConfig::timeout`]) and passes the time in; a restarted
//! container gets fresh states.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::jiff::Timestamp;

use super::lifecycle::later;

/// `periodSeconds` when the spec gives none.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
/// `timeoutSeconds` when the spec gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// `successThreshold` when the spec gives none (and always, for startup and liveness probes).
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// `failureThreshold` when the spec gives none.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

/// Which probe of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

/// Readiness and liveness probes do not run until the container has started (its startup probe
/// passed, or it has none): call [`ProbeState::due`] for them only then.
pub fn gated_by_startup(kind: ProbeKind) -> bool {
    kind != ProbeKind::Startup
}

/// Whether the probe keeps running while the pod terminates: readiness does (the endpoint goes
/// unready), liveness and startup stop (a terminating container is not restarted).
pub fn runs_while_terminating(kind: ProbeKind) -> bool {
    kind == ProbeKind::Readiness
}

/// When and how often a probe runs, and how many results in a row change its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    pub initial_delay: Duration,
    pub period: Duration,
    /// How long the caller lets one probe run; a probe that times out failed.
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            initial_delay: Duration::ZERO,
            period: DEFAULT_PERIOD,
            timeout: DEFAULT_TIMEOUT,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
        }
    }
}

impl ProbeConfig {
    /// The timing of a pod spec's probe: absent or non-positive fields take the API server's
    /// defaults, and startup and liveness probes need a single success (as validation demands).
    pub fn from_probe(kind: ProbeKind, probe: &Probe) -> ProbeConfig {
        let secs = |v: Option<i32>, default: Duration| match v {
            Some(s) if s > 0 => Duration::from_secs(s.unsigned_abs().into()),
            _ => default,
        };
        let count = |v: Option<i32>, default: u32| match v {
            Some(n) if n > 0 => n.unsigned_abs(),
            _ => default,
        };
        let success_threshold = match kind {
            ProbeKind::Readiness => count(probe.success_threshold, DEFAULT_SUCCESS_THRESHOLD),
            ProbeKind::Startup | ProbeKind::Liveness => 1,
        };
        ProbeConfig {
            initial_delay: secs(probe.initial_delay_seconds, Duration::ZERO),
            period: secs(probe.period_seconds, DEFAULT_PERIOD),
            timeout: secs(probe.timeout_seconds, DEFAULT_TIMEOUT),
            success_threshold,
            failure_threshold: count(probe.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
        }
    }
}

/// A change of a probe's state that the caller acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The readiness probe passed `success_threshold` times in a row: the container is ready.
    Ready,
    /// The readiness probe failed `failure_threshold` times in a row: the container is not ready.
    NotReady,
    /// The startup probe passed: the container has started; readiness and liveness may run.
    Started,
    /// The liveness or startup probe failed `failure_threshold` times in a row: kill the
    /// container (it then restarts per its policy). The probe stops until then.
    Kill,
}

/// One probe of one container instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeState {
    kind: ProbeKind,
    config: ProbeConfig,
    next_at: Timestamp,
    /// The last result and how many times in a row it came.
    last: Option<bool>,
    run: u32,
    /// The result in effect (readiness: ready; liveness: alive; startup: started).
    passing: bool,
    /// Stopped: the startup probe passed, or a kill is under way.
    stopped: bool,
}

impl ProbeState {
    /// The probe of a container instance that started at `container_started_at`: first due
    /// `initial_delay` later.
    pub fn new(kind: ProbeKind, config: ProbeConfig, container_started_at: Timestamp) -> Self {
        ProbeState {
            kind,
            config,
            next_at: later(container_started_at, config.initial_delay),
            last: None,
            run: 0,
            passing: kind == ProbeKind::Liveness,
            stopped: false,
        }
    }

    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// Whether the probe should run now. For readiness and liveness the caller also waits until
    /// the container has started ([`gated_by_startup`]).
    pub fn due(&self, now: Timestamp) -> bool {
        !self.stopped && now >= self.next_at
    }

    /// When the probe is next due (meaningless once it stopped: see [`ProbeState::stopped`]).
    pub fn next_at(&self) -> Timestamp {
        self.next_at
    }

    /// Whether the probe runs no more for this container instance.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The result in effect: ready (readiness), alive (liveness), started (startup).
    pub fn passing(&self) -> bool {
        self.passing
    }

    /// Record a probe's result, finished at `now`; the next one is due a period after this one
    /// was (at once if it overran). Returns the transition this result causes, if any.
    pub fn record(&mut self, success: bool, now: Timestamp) -> Option<Transition> {
        if self.stopped {
            return None;
        }
        self.next_at = later(self.next_at, self.config.period).max(now);
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let threshold = if success {
            self.config.success_threshold
        } else {
            self.config.failure_threshold
        };
        if self.run < threshold {
            return None;
        }
        let was = self.passing;
        self.passing = success;
        match (self.kind, success) {
            (ProbeKind::Readiness, true) => (!was).then_some(Transition::Ready),
            (ProbeKind::Readiness, false) => was.then_some(Transition::NotReady),
            (ProbeKind::Liveness, true) => None,
            (ProbeKind::Startup, true) => {
                self.stopped = true;
                Some(Transition::Started)
            }
            (ProbeKind::Liveness | ProbeKind::Startup, false) => {
                self.stopped = true;
                Some(Transition::Kill)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn config(delay: u64, success: u32, failure: u32) -> ProbeConfig {
        ProbeConfig {
            initial_delay: Duration::from_secs(delay),
            success_threshold: success,
            failure_threshold: failure,
            ..ProbeConfig::default()
        }
    }

    #[test]
    fn nothing_runs_before_the_initial_delay() {
        let p = ProbeState::new(ProbeKind::Readiness, config(15, 1, 3), t(0));
        assert!(!p.due(t(0)));
        assert!(!p.due(t(14)));
        assert!(p.due(t(15)));
        assert_eq!(p.next_at(), t(15));
    }

    #[test]
    fn probes_run_every_period() {
        let mut p = ProbeState::new(ProbeKind::Liveness, config(0, 1, 3), t(0));
        assert!(p.due(t(0)));
        assert_eq!(p.record(true, t(0)), None);
        assert_eq!(p.next_at(), t(10));
        assert!(!p.due(t(9)));
        // A probe that overran its period is due again at once.
        assert_eq!(p.record(true, t(25)), None);
        assert_eq!(p.next_at(), t(25));
    }

    #[test]
    fn readiness_starts_unready_and_needs_its_thresholds() {
        let mut p = ProbeState::new(ProbeKind::Readiness, config(0, 2, 3), t(0));
        assert!(!p.passing());
        assert_eq!(p.record(true, t(0)), None);
        assert_eq!(p.record(true, t(10)), Some(Transition::Ready));
        assert!(p.passing());
        assert_eq!(p.record(true, t(20)), None);
        assert_eq!(p.record(false, t(30)), None);
        assert_eq!(p.record(false, t(40)), None);
        // A success in between starts the count again.
        assert_eq!(p.record(true, t(50)), None);
        assert_eq!(p.record(false, t(60)), None);
        assert_eq!(p.record(false, t(70)), None);
        assert_eq!(p.record(false, t(80)), Some(Transition::NotReady));
        assert!(!p.passing());
        assert_eq!(p.record(false, t(90)), None);
        assert!(!p.stopped());
    }

    #[test]
    fn liveness_starts_passing_and_kills_after_its_failures() {
        let mut p = ProbeState::new(ProbeKind::Liveness, config(0, 1, 3), t(0));
        assert!(p.passing());
        assert_eq!(p.record(false, t(0)), None);
        assert_eq!(p.record(false, t(10)), None);
        assert!(p.passing());
        assert_eq!(p.record(false, t(20)), Some(Transition::Kill));
        assert!(!p.passing());
        // It stops until the container is replaced.
        assert!(p.stopped());
        assert!(!p.due(t(100)));
        assert_eq!(p.record(false, t(100)), None);
    }

    #[test]
    fn startup_passes_once_and_stops() {
        let mut p = ProbeState::new(ProbeKind::Startup, config(0, 1, 3), t(0));
        assert!(!p.passing());
        assert_eq!(p.record(false, t(0)), None);
        assert_eq!(p.record(true, t(10)), Some(Transition::Started));
        assert!(p.passing());
        assert!(p.stopped());
        assert!(!p.due(t(20)));
    }

    #[test]
    fn startup_kills_after_its_failures() {
        let mut p = ProbeState::new(ProbeKind::Startup, config(0, 1, 2), t(0));
        assert_eq!(p.record(false, t(0)), None);
        assert_eq!(p.record(false, t(10)), Some(Transition::Kill));
        assert!(p.stopped());
    }

    #[test]
    fn readiness_and_liveness_wait_for_startup() {
        assert!(gated_by_startup(ProbeKind::Readiness));
        assert!(gated_by_startup(ProbeKind::Liveness));
        assert!(!gated_by_startup(ProbeKind::Startup));
        assert!(runs_while_terminating(ProbeKind::Readiness));
        assert!(!runs_while_terminating(ProbeKind::Liveness));
    }

    #[test]
    fn config_from_the_spec_with_defaults() {
        let empty = Probe::default();
        assert_eq!(
            ProbeConfig::from_probe(ProbeKind::Readiness, &empty),
            ProbeConfig::default()
        );
        let probe = Probe {
            initial_delay_seconds: Some(5),
            period_seconds: Some(2),
            timeout_seconds: Some(3),
            success_threshold: Some(4),
            failure_threshold: Some(6),
            ..Probe::default()
        };
        let readiness = ProbeConfig::from_probe(ProbeKind::Readiness, &probe);
        assert_eq!(
            readiness,
            ProbeConfig {
                initial_delay: Duration::from_secs(5),
                period: Duration::from_secs(2),
                timeout: Duration::from_secs(3),
                success_threshold: 4,
                failure_threshold: 6,
            }
        );
        // Startup and liveness probes succeed after one success, whatever the spec says.
        assert_eq!(
            ProbeConfig::from_probe(ProbeKind::Startup, &probe).success_threshold,
            1
        );
        assert_eq!(
            ProbeConfig::from_probe(ProbeKind::Liveness, &probe).success_threshold,
            1
        );
        let negative = Probe {
            period_seconds: Some(-1),
            failure_threshold: Some(0),
            ..Probe::default()
        };
        assert_eq!(
            ProbeConfig::from_probe(ProbeKind::Liveness, &negative),
            ProbeConfig::default()
        );
    }
}
