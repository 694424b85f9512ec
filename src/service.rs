//! One service's life: its state machine and its restart policy, as pure functions.
//!
//! Owns: [`State`] (data that exists in one state lives in that variant: a pid only while a
//! process runs, a deadline only while one is armed), [`Service`] (the spec, the state, what
//! is wanted of it, and its restart history) and [`decide`], the restart policy: systemd's
//! `Restart=` meanings, exponential backoff from `restart-sec` to `restart-max-sec`, reset
//! once a run was healthy, and the start limit with its action.
//! Must not: read the clock or make syscalls. The supervisor passes `now` in and turns the
//! results into actions; that keeps every rule unit-testable with hand-built instants.

use crate::plan::{Kind, LimitAction, RestartPolicy, ServiceSpec};
use crate::reap::Exit;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// A service's index in the supervisor's table. Ids are never reused, so a stale id (a
/// timer, a control request) can never reach a different service.
pub type ServiceId = usize;

/// A run that lasted at least this long was healthy: the next restart is immediate and the
/// backoff starts over (runit's rule: a service that died young waits, one that ran does not).
pub const HEALTHY_RUN: Duration = Duration::from_secs(1);

/// What a service is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not running and not scheduled: never started, stopped on request, or ended cleanly
    /// with no restart due.
    Inactive,
    /// Wanted up; waiting for its dependencies to be ready.
    Waiting,
    /// A spawn was requested; the runtime answers with the pid or a failure.
    Spawning,
    /// Running as `pid` since `since`, not ready yet (a oneshot stays here until it exits).
    Starting {
        /// The main process.
        pid: i32,
        /// When it was spawned.
        since: Instant,
    },
    /// Running and ready.
    Running {
        /// The main process.
        pid: i32,
        /// When it was spawned.
        since: Instant,
    },
    /// Its stop signal was sent; waiting for the main process to exit.
    Stopping {
        /// The main process.
        pid: i32,
        /// When it was spawned.
        since: Instant,
        /// What happens once it is gone.
        then: AfterStop,
    },
    /// Ended; a restart is scheduled at `until`.
    Backoff {
        /// When the restart is due.
        until: Instant,
    },
    /// A oneshot that exited 0: its dependents may start.
    Done,
    /// Ended for good after a failure (or blocked by a failed requirement). Logged when it
    /// happens; an explicit start (`keel ctl start`, a reload) tries again.
    Failed {
        /// Why, for logs and `keel ctl status`.
        reason: String,
    },
}

impl State {
    /// The main process, while there is one.
    pub fn pid(&self) -> Option<i32> {
        match self {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// A short name for logs and the control protocol.
    pub fn name(&self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Waiting => "waiting",
            State::Spawning => "spawning",
            State::Starting { .. } => "starting",
            State::Running { .. } => "running",
            State::Stopping { .. } => "stopping",
            State::Backoff { .. } => "backoff",
            State::Done => "done",
            State::Failed { .. } => "failed",
        }
    }

    /// Whether a process of this service may be alive (or is about to be).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            State::Spawning
                | State::Starting { .. }
                | State::Running { .. }
                | State::Stopping { .. }
        )
    }
}

/// What a stopping service does once its main process is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStop {
    /// Stay down (a requested stop, a shutdown).
    Stay,
    /// Start again at once (a requested restart, a changed configuration).
    Restart,
    /// Count as a failure for the restart policy (start timeout, failed readiness check,
    /// watchdog): the reason is logged and kept.
    Fail(String),
}

/// Whether the service should be up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Keep it running (or done, for a oneshot).
    Up,
    /// Keep it stopped.
    Down,
}

/// How a run ended, as the restart policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The main process exited or was killed.
    Exited(Exit),
    /// It could not be started (the child reported why); `permanent` failures such as a
    /// missing program are not retried.
    SpawnFailed {
        /// Retrying cannot help.
        permanent: bool,
    },
    /// Not ready in time, readiness check exhausted, or watchdog expired (systemd counts
    /// these as abnormal).
    Timeout,
    /// The kernel's OOM killer killed a process of the run in the service's cgroup (systemd's
    /// `oom-kill` result: abnormal, a failure).
    Oom,
}

impl Ending {
    /// systemd's "clean" exit: code 0, or death by SIGHUP, SIGINT, SIGTERM or SIGPIPE.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            Ending::Exited(Exit::Code(0))
                | Ending::Exited(Exit::Signal(
                    libc::SIGHUP | libc::SIGINT | libc::SIGTERM | libc::SIGPIPE
                ))
        )
    }

    /// An unclean signal, a timeout or a watchdog: what `on-abnormal` restarts for.
    pub fn is_abnormal(&self) -> bool {
        match self {
            Ending::Exited(Exit::Signal(_)) => !self.is_clean(),
            Ending::Timeout | Ending::Oom => true,
            Ending::Exited(Exit::Code(_)) | Ending::SpawnFailed { .. } => false,
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Exited(e) => write!(f, "{e}"),
            Ending::SpawnFailed { .. } => f.write_str("could not be started"),
            Ending::Timeout => f.write_str("timed out"),
            Ending::Oom => f.write_str("an OOM kill"),
        }
    }
}

/// What the restart policy says about an ended run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Done for good, cleanly (or a oneshot's success: see [`State::Done`]).
    Stay,
    /// Restart after this delay (zero: at once).
    Restart(Duration),
    /// Done for good: failed.
    Fail(String),
    /// The start limit was hit and its action is to shut the container down.
    Shutdown(String),
}

/// One service as the supervisor tracks it.
#[derive(Debug, Clone)]
pub struct Service {
    /// What it is.
    pub spec: ServiceSpec,
    /// What it is doing.
    pub state: State,
    /// What it should be doing.
    pub want: Want,
    /// Restarts so far (for `keel ctl status`).
    pub restarts: u32,
    /// How its last run ended.
    pub last_exit: Option<Exit>,
    /// The last `STATUS=` it sent over sd_notify.
    pub status: Option<String>,
    /// Consecutive quick failures: the backoff exponent.
    attempt: u32,
    /// Start times inside the start-limit window, oldest first (at most burst + 1).
    starts: VecDeque<Instant>,
    /// When the current run became ready (resets the backoff once it lasts).
    pub ready_at: Option<Instant>,
    /// Removed by a reload: gone from the table once stopped.
    pub retired: bool,
    /// Processes of this service the OOM killer killed, over every run.
    pub oom_kills: u64,
}

impl Service {
    /// A service that has not started.
    pub fn new(spec: ServiceSpec) -> Service {
        Service {
            spec,
            state: State::Inactive,
            want: Want::Up,
            restarts: 0,
            last_exit: None,
            status: None,
            attempt: 0,
            starts: VecDeque::new(),
            ready_at: None,
            retired: false,
            oom_kills: 0,
        }
    }

    /// Record a start at `now` for the start limit.
    pub fn note_start(&mut self, now: Instant) {
        let window = self.spec.start_limit_interval;
        while self
            .starts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.starts.pop_front();
        }
        self.starts.push_back(now);
        let cap = self.spec.start_limit_burst as usize + 1;
        while self.starts.len() > cap {
            self.starts.pop_front();
        }
    }

    /// Forget the restart history (an explicit start gets a fresh budget).
    pub fn reset_history(&mut self) {
        self.attempt = 0;
        self.starts.clear();
    }

    /// Apply the restart policy to a run that ended with `ending`, having started at
    /// `since` (`None`: it never ran). Updates the backoff state.
    pub fn decide(&mut self, ending: &Ending, since: Option<Instant>, now: Instant) -> Decision {
        let spec = &self.spec;
        if spec.kind == Kind::Oneshot && ending == &Ending::Exited(Exit::Code(0)) {
            return Decision::Stay;
        }
        if let Ending::SpawnFailed { permanent: true } = ending {
            return Decision::Fail(format!("{ending}; not retrying"));
        }
        let restart = match spec.restart {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !ending.is_clean(),
            RestartPolicy::OnAbnormal => ending.is_abnormal(),
        };
        if !restart {
            return if ending.is_clean() {
                Decision::Stay
            } else {
                Decision::Fail(ending.to_string())
            };
        }
        // A healthy run (ready, or simply up, for long enough) starts the backoff over.
        let ran = since.map(|s| now.saturating_duration_since(s));
        if ran.is_some_and(|d| d >= HEALTHY_RUN.max(spec.restart_sec)) {
            self.attempt = 0;
        }
        let delay = backoff(spec.restart_sec, spec.restart_max_sec, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        // The start limit: `burst` starts inside the window already; one more would pass it.
        let recent = self
            .starts
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < spec.start_limit_interval)
            .count();
        let window_full = recent >= spec.start_limit_burst as usize;
        if window_full && spec.start_limit_burst > 0 {
            let why = format!(
                "started {} times within {}",
                self.starts.len(),
                crate::duration::display(spec.start_limit_interval)
            );
            return match spec.start_limit_action {
                LimitAction::Continue => Decision::Restart(delay.max(spec.restart_max_sec)),
                LimitAction::GiveUp => Decision::Fail(format!("{ending}; {why}; gave up")),
                LimitAction::Shutdown => Decision::Shutdown(format!("{ending}; {why}")),
            };
        }
        Decision::Restart(delay)
    }
}

/// The delay before restart number `attempt` (0-based) of a run of quick failures: the
/// first is immediate, then `base`, doubling up to `cap`.
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn svc(f: impl FnOnce(&mut ServiceSpec)) -> Service {
        let mut s = ServiceSpec::new("s".into(), vec![OsString::from("x")]);
        f(&mut s);
        Service::new(s)
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let b = Duration::from_millis(100);
        let c = Duration::from_secs(1);
        let got: Vec<_> = (0..7).map(|a| backoff(b, c, a).as_millis()).collect();
        assert_eq!(got, [0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(b, c, 200), c);
    }

    #[test]
    fn policies_follow_systemd() {
        let now = Instant::now();
        let cases = [
            (RestartPolicy::No, Exit::Code(1), false),
            (RestartPolicy::Always, Exit::Code(0), true),
            (RestartPolicy::OnFailure, Exit::Code(0), false),
            (RestartPolicy::OnFailure, Exit::Code(3), true),
            (RestartPolicy::OnFailure, Exit::Signal(libc::SIGTERM), false),
            (RestartPolicy::OnFailure, Exit::Signal(libc::SIGKILL), true),
            (RestartPolicy::OnAbnormal, Exit::Code(3), false),
            (RestartPolicy::OnAbnormal, Exit::Signal(libc::SIGSEGV), true),
            (
                RestartPolicy::OnAbnormal,
                Exit::Signal(libc::SIGPIPE),
                false,
            ),
        ];
        for (policy, exit, restarts) in cases {
            let mut s = svc(|s| s.restart = policy);
            let d = s.decide(&Ending::Exited(exit), Some(now), now);
            assert_eq!(
                matches!(d, Decision::Restart(_)),
                restarts,
                "{policy:?} {exit:?}: {d:?}"
            );
        }
        let mut s = svc(|s| s.restart = RestartPolicy::OnAbnormal);
        assert!(matches!(
            s.decide(&Ending::Timeout, Some(now), now),
            Decision::Restart(_)
        ));
        // Without a restart: clean stays, unclean fails.
        let mut s = svc(|_| {});
        assert_eq!(
            s.decide(&Ending::Exited(Exit::Code(0)), Some(now), now),
            Decision::Stay
        );
        assert!(matches!(
            s.decide(&Ending::Exited(Exit::Code(2)), Some(now), now),
            Decision::Fail(_)
        ));
    }

    #[test]
    fn oneshot_success_and_permanent_spawn_failure() {
        let now = Instant::now();
        let mut s = svc(|s| {
            s.kind = Kind::Oneshot;
            s.restart = RestartPolicy::Always;
        });
        assert_eq!(
            s.decide(&Ending::Exited(Exit::Code(0)), Some(now), now),
            Decision::Stay
        );
        assert!(matches!(
            s.decide(&Ending::Exited(Exit::Code(1)), Some(now), now),
            Decision::Restart(_)
        ));
        let mut s = svc(|s| s.restart = RestartPolicy::Always);
        assert!(matches!(
            s.decide(&Ending::SpawnFailed { permanent: true }, None, now),
            Decision::Fail(_)
        ));
        assert!(matches!(
            s.decide(&Ending::SpawnFailed { permanent: false }, None, now),
            Decision::Restart(_)
        ));
    }

    #[test]
    fn quick_failures_back_off_and_a_healthy_run_resets() {
        let t0 = Instant::now();
        let mut s = svc(|s| {
            s.restart = RestartPolicy::Always;
            s.start_limit_burst = 100;
        });
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..4 {
            s.note_start(now);
            let d = s.decide(&Ending::Exited(Exit::Code(1)), Some(now), now);
            let Decision::Restart(d) = d else {
                panic!("{d:?}")
            };
            delays.push(d.as_millis());
            now += d;
        }
        assert_eq!(delays, [0, 100, 200, 400]);
        // Up for 2 s: immediate again.
        s.note_start(now);
        let later = now + Duration::from_secs(2);
        assert_eq!(
            s.decide(&Ending::Exited(Exit::Code(1)), Some(now), later),
            Decision::Restart(Duration::ZERO)
        );
    }

    #[test]
    fn start_limit_actions() {
        let now = Instant::now();
        for (action, want) in [
            (LimitAction::GiveUp, "fail"),
            (LimitAction::Shutdown, "shutdown"),
            (LimitAction::Continue, "restart-capped"),
        ] {
            let mut s = svc(|s| {
                s.restart = RestartPolicy::Always;
                s.start_limit_burst = 3;
                s.start_limit_action = action;
            });
            let mut last = Decision::Stay;
            for i in 0..4 {
                let t = now + Duration::from_millis(i);
                s.note_start(t);
                last = s.decide(&Ending::Exited(Exit::Code(1)), Some(t), t);
            }
            let got = match last {
                Decision::Fail(_) => "fail",
                Decision::Shutdown(_) => "shutdown",
                Decision::Restart(d) if d == s.spec.restart_max_sec => "restart-capped",
                other => panic!("{other:?}"),
            };
            assert_eq!(got, want);
        }
        // Starts spread wider than the window never hit the limit.
        let mut s = svc(|s| {
            s.restart = RestartPolicy::Always;
            s.start_limit_burst = 2;
            s.start_limit_action = LimitAction::GiveUp;
        });
        for i in 0..10 {
            let t = now + Duration::from_secs(11 * i);
            s.note_start(t);
            assert!(matches!(
                s.decide(&Ending::Exited(Exit::Code(1)), Some(t), t),
                Decision::Restart(_)
            ));
        }
    }
}
