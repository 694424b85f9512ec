//! The supervisor: keel's decisions, as a pure function from `(state, input, now)` to actions.
//!
//! Owns: the table of services and their dependency graph, signal routing, start order,
//! restarts, readiness, shutdown order under one deadline, the drain of stragglers, and
//! keel's exit code.
//! Must not: make syscalls or read the clock. The runtime feeds it [`Input`]s (facts, in the
//! past tense) and performs the [`Action`]s it returns (requests, imperative). That keeps every
//! decision testable without processes, and keeps one place where state changes.
//!
//! A single-command run is this supervisor with one service, the main command, whose exit
//! ends keel and which receives every signal keel gets (tini's contract). In services mode
//! (a configuration), TERM/INT shut down, HUP reloads, other signals go to the main command
//! if there is one; the main command starts after every configured service is ready, and its
//! exit, or a critical service's end, shuts the container down (s6-overlay's model).

use crate::duration;
use crate::plan::{Dialect, ForwardTo, KILL_WAIT, Kind, Plan, Readiness, ServiceSpec};
use crate::reap::{Exit, Reaped};
use crate::service::{AfterStop, Decision, Ending, Service, ServiceId, State, Want};
use crate::signals::{self, SigSet};
use crate::spawn::{ExecError, Stage};
use std::time::{Duration, Instant};

/// A fact the runtime reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The loop is up: start the services.
    Booted,
    /// A signal reached keel (never SIGCHLD: the runtime turns that into [`Input::Reaped`]).
    Signal {
        /// The signal number.
        signo: i32,
        /// Sent by keel itself (e.g. the kernel's SIGPIPE for one of keel's own writes).
        from_self: bool,
    },
    /// A service's process was forked.
    Spawned {
        /// Which service.
        id: ServiceId,
        /// Its pid.
        pid: i32,
        /// keel gave up its controlling terminal for the child's new session; the kernel
        /// then sends SIGHUP and SIGCONT, which are not meant for the child.
        released_tty: bool,
    },
    /// A service could not be forked (or its setup failed in keel): there is no child.
    SpawnFailed {
        /// Which service.
        id: ServiceId,
        /// Why.
        err: String,
    },
    /// A child reported that it could not exec (it exits with 127/126 next).
    ExecFailed {
        /// The child's pid.
        pid: i32,
        /// Why.
        err: ExecError,
    },
    /// Children were reaped (readiness checks already taken out by the runtime).
    Reaped(Reaped),
    /// A timer armed by [`Action::ArmTimer`] expired.
    Timer(TimerId),
    /// A service said it is ready (notify fd, `READY=1`) or its readiness check passed.
    Ready(ServiceId),
    /// One readiness check attempt failed.
    ProbeFailed(ServiceId),
    /// A service sent an sd_notify message other than `READY=1`.
    Notified(ServiceId, Note),
    /// The configuration was read again after [`Action::Reload`]: the new service set, or
    /// why it was rejected.
    Reloaded(Result<Vec<ServiceSpec>, String>),
    /// An operator's request (`keel ctl`).
    Request(Request),
    /// The OOM killer killed `kills` processes in a service's cgroup (the runtime reads the
    /// cgroup's events before it reports the exits of the same wake-up).
    Oom {
        /// Which service.
        id: ServiceId,
        /// How many processes since the last report.
        kills: u64,
    },
}

/// sd_notify messages the supervisor acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// `STATUS=...`
    Status(String),
    /// `STOPPING=1`
    Stopping,
    /// `MAINPID=n`: the service's main process is now `n`.
    MainPid(i32),
    /// `WATCHDOG=1`: a keep-alive ping.
    Watchdog,
    /// `WATCHDOG_USEC=n`: set the watchdog timeout (zero disables it).
    WatchdogTimeout(Duration),
    /// `WATCHDOG=trigger`: the service asks to be treated as hung.
    WatchdogTrigger,
}

/// An operator's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Start a service (and what it requires), with a fresh restart budget.
    Start(ServiceId),
    /// Stop a service (and what requires it); it stays down.
    Stop(ServiceId),
    /// Stop and start again.
    Restart(ServiceId),
    /// Send a signal to a service's process group.
    Signal(ServiceId, i32),
    /// Shut the container down, as SIGTERM does.
    Shutdown,
    /// Read the configuration again, as SIGHUP does.
    Reload,
}

/// What the supervisor asks the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fork and exec this service.
    Spawn(ServiceId),
    /// Start one readiness check attempt for this service (exec or TCP, per its spec);
    /// answered by [`Input::Ready`] or [`Input::ProbeFailed`].
    Probe(ServiceId),
    /// Abandon the running check attempt (kill the check command, close the socket).
    CancelProbe(ServiceId),
    /// `kill(pid, sig)`; a negative pid is a process group.
    Signal {
        /// Target (negative: process group).
        pid: i32,
        /// Signal.
        sig: i32,
    },
    /// Send `sig` to every remaining descendant of keel.
    SignalAll(i32),
    /// Stop keel itself (SIGSTOP), as a job-control-aware init does after passing on a
    /// terminal stop.
    StopSelf,
    /// Read the configuration files again; answer with [`Input::Reloaded`].
    Reload,
    /// Arm (or re-arm) a timer.
    ArmTimer(TimerId, Instant),
    /// Disarm a timer if armed.
    CancelTimer(TimerId),
    /// Exit keel with this code. Final.
    Exit(u8),
}

/// Why a timer was armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerId {
    /// Single-command mode: `--stop-timeout` after a stop signal reached the main child.
    StopTimeout,
    /// The stragglers' grace after the services are gone.
    Grace,
    /// The last wait after SIGKILLing stragglers.
    KillWait,
    /// Services mode: the whole shutdown's deadline.
    Shutdown,
    /// One service's timer.
    Service(ServiceId, Timer),
}

/// A service timer's purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The backoff before a restart.
    Restart,
    /// `start-timeout`: not ready in time.
    StartTimeout,
    /// `stop-timeout`: SIGKILL after the stop signal.
    StopKill,
    /// The next readiness check attempt.
    Probe,
    /// One readiness check attempt's time limit.
    ProbeTimeout,
    /// The sd_notify watchdog.
    Watchdog,
}

/// Where keel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Running services.
    Up,
    /// Stopping services in reverse dependency order; `code` is the exit code decided so
    /// far (the service that caused the shutdown), if any.
    Stopping { code: Option<u8> },
    /// Every service is down; the stop signal went to the stragglers.
    Draining { code: u8 },
    /// SIGKILL sent; waiting briefly for the kernel to finish them.
    Killing { code: u8 },
    /// Exit requested.
    Done,
}

/// Per-service bookkeeping beside [`Service`] that only the supervisor uses.
#[derive(Debug, Clone, Default)]
struct Extra {
    /// Dependencies: (service, required).
    deps: Vec<(ServiceId, bool)>,
    /// The exec failure reported for the current process, if any.
    exec_failed: Option<ExecError>,
    /// Failed readiness checks in this start.
    probe_failures: u32,
    /// A check attempt is running.
    probing: bool,
    /// sd_notify watchdog timeout, once the service set one.
    watchdog: Option<Duration>,
    /// Single-command mode: the stop signal forwarded while `--stop-timeout` runs.
    forwarded_stop: Option<i32>,
    /// The OOM killer struck the current run: it ends as [`Ending::Oom`].
    oom: bool,
}

/// The supervisor's whole state.
pub struct Supervisor {
    plan: Plan,
    services: Vec<Service>,
    extra: Vec<Extra>,
    /// The main command's service, if there is one.
    main: Option<ServiceId>,
    phase: Phase,
    /// Signals to drop once each (the SIGHUP/SIGCONT of a terminal hand-off).
    swallow: SigSet,
    /// A reload was requested and not answered yet.
    reloading: bool,
    /// When the shutdown must be over (services mode, once it began).
    deadline: Option<Instant>,
    /// The reaping pass being handled found no child left (so a drain has nothing to
    /// wait for).
    none_left: bool,
}

impl Supervisor {
    /// A supervisor for `plan`, nothing started.
    pub fn new(mut plan: Plan) -> Supervisor {
        let mut services: Vec<Service> = std::mem::take(&mut plan.services)
            .into_iter()
            .map(Service::new)
            .collect();
        let main = plan.main.take().map(|mut spec| {
            // The main command is the container's reason to exist: never restarted, and
            // its end ends keel.
            spec.critical = true;
            services.push(Service::new(spec));
            services.len() - 1
        });
        let mut s = Supervisor {
            extra: vec![Extra::default(); services.len()],
            services,
            main,
            plan,
            phase: Phase::Up,
            swallow: SigSet::EMPTY,
            reloading: false,
            none_left: false,
            deadline: None,
        };
        s.link();
        s
    }

    /// Every service, by id (retired ones included; see [`Service::retired`]).
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// One service.
    pub fn service(&self, id: ServiceId) -> Option<&Service> {
        self.services.get(id)
    }

    /// The id of the live service called `name`.
    pub fn find(&self, name: &str) -> Option<ServiceId> {
        self.services
            .iter()
            .position(|s| !s.retired && s.spec.name == name)
    }

    /// The main command's service.
    pub fn main(&self) -> Option<ServiceId> {
        self.main
    }

    /// Whether keel is shutting down.
    pub fn shutting_down(&self) -> bool {
        self.phase != Phase::Up
    }

    /// Resolve dependency names to ids (after the table changed).
    fn link(&mut self) {
        let names: Vec<(String, bool)> = self
            .services
            .iter()
            .map(|s| (s.spec.name.clone(), s.retired))
            .collect();
        let lookup = |n: &str| names.iter().position(|(name, r)| !r && name == n);
        let config_ids: Vec<ServiceId> = (0..self.services.len())
            .filter(|&i| Some(i) != self.main && !self.services[i].retired)
            .collect();
        for (i, svc) in self.services.iter().enumerate() {
            let mut deps = Vec::new();
            if Some(i) == self.main {
                // The main command starts once everything configured is ready.
                deps.extend(config_ids.iter().map(|&d| (d, false)));
            } else {
                for n in &svc.spec.requires {
                    if let Some(d) = lookup(n) {
                        deps.push((d, true));
                    }
                }
                for n in &svc.spec.after {
                    if let Some(d) = lookup(n)
                        && !deps.iter().any(|(x, _)| *x == d)
                    {
                        deps.push((d, false));
                    }
                }
            }
            if let Some(e) = self.extra.get_mut(i) {
                e.deps = deps;
            }
        }
    }

    /// Apply one input. Returns the actions to perform, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Done {
            return out;
        }
        match input {
            Input::Booted => {}
            Input::Spawned {
                id,
                pid,
                released_tty,
            } => self.on_spawned(id, pid, released_tty, now, &mut out),
            Input::SpawnFailed { id, err } => self.on_spawn_failed(id, err, now, &mut out),
            Input::ExecFailed { pid, err } => self.on_exec_failed(pid, err),
            Input::Signal { signo, from_self } => self.on_signal(signo, from_self, now, &mut out),
            Input::Reaped(r) => self.on_reaped(r, now, &mut out),
            Input::Timer(t) => self.on_timer(t, now, &mut out),
            Input::Ready(id) => self.on_ready(id, now, &mut out),
            Input::ProbeFailed(id) => self.on_probe_failed(id, now, &mut out),
            Input::Notified(id, note) => self.on_note(id, note, now, &mut out),
            Input::Reloaded(r) => self.on_reloaded(r, now, &mut out),
            Input::Request(r) => self.on_request(r, now, &mut out),
            Input::Oom { id, kills } => self.on_oom(id, kills, now, &mut out),
        }
        if self.phase != Phase::Done {
            self.settle(now, &mut out);
        }
        self.none_left = false;
        out
    }

    fn name(&self, id: ServiceId) -> &str {
        self.services.get(id).map_or("?", |s| s.spec.name.as_str())
    }

    /// Whether `id`'s dependents may start: ready, done, or (for an ordering-only
    /// dependency) ended for good.
    fn satisfies(&self, dep: ServiceId, required: bool) -> bool {
        let Some(d) = self.services.get(dep) else {
            return true;
        };
        match &d.state {
            State::Running { .. } | State::Done => true,
            State::Inactive => d.want == Want::Down,
            State::Failed { .. } => !required,
            State::Waiting
            | State::Spawning
            | State::Starting { .. }
            | State::Stopping { .. }
            | State::Backoff { .. } => false,
        }
    }

    /// Move every service toward what is wanted: start those whose dependencies are
    /// satisfied; while shutting down, stop those nothing running depends on, and drain
    /// once all are down.
    fn settle(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Up => {
                // Starting one service can satisfy another: repeat until nothing changes.
                loop {
                    let mut changed = false;
                    for id in 0..self.services.len() {
                        let s = &self.services[id];
                        if s.retired
                            || s.want != Want::Up
                            || !matches!(s.state, State::Inactive | State::Waiting)
                        {
                            continue;
                        }
                        let deps = self.extra[id].deps.clone();
                        if let Some(&(bad, _)) = deps.iter().find(|&&(d, req)| {
                            req && matches!(self.services[d].state, State::Failed { .. })
                        }) {
                            let reason = format!("requires '{}', which failed", self.name(bad));
                            log::error!("{}: not starting: {reason}", self.name(id));
                            self.set_failed(id, reason, now, out);
                            changed = true;
                            continue;
                        }
                        if deps.iter().all(|&(d, req)| self.satisfies(d, req)) {
                            self.spawn(id, now, out);
                            changed = true;
                        } else if self.services[id].state != State::Waiting {
                            self.services[id].state = State::Waiting;
                            log::debug!("{}: waiting for its dependencies", self.name(id));
                        }
                    }
                    if !changed {
                        break;
                    }
                }
            }
            Phase::Stopping { code } => {
                for id in 0..self.services.len() {
                    if !self.services[id].state.is_active() {
                        // Scheduled or waiting services simply stay down.
                        if matches!(
                            self.services[id].state,
                            State::Waiting | State::Backoff { .. }
                        ) {
                            out.push(Action::CancelTimer(TimerId::Service(id, Timer::Restart)));
                            self.services[id].state = State::Inactive;
                        }
                        continue;
                    }
                    if matches!(self.services[id].state, State::Stopping { .. }) {
                        continue;
                    }
                    let needed = (0..self.services.len()).any(|other| {
                        self.services[other].state.is_active()
                            && self.extra[other].deps.iter().any(|(d, _)| *d == id)
                    });
                    if !needed {
                        self.stop(id, AfterStop::Stay, None, now, out);
                    }
                }
                if !self.services.iter().any(|s| s.state.is_active()) {
                    let code = code.unwrap_or(0);
                    out.push(Action::CancelTimer(TimerId::Shutdown));
                    self.start_drain(code, now, out);
                }
            }
            Phase::Draining { .. } | Phase::Killing { .. } | Phase::Done => {}
        }
    }

    fn spawn(&mut self, id: ServiceId, now: Instant, out: &mut Vec<Action>) {
        let s = &mut self.services[id];
        s.state = State::Spawning;
        s.note_start(now);
        self.extra[id].exec_failed = None;
        self.extra[id].probe_failures = 0;
        self.extra[id].probing = false;
        self.extra[id].watchdog = None;
        self.extra[id].oom = false;
        out.push(Action::Spawn(id));
    }

    /// OOM kills in a service's cgroup: counted and logged; a run that is up is stopped and
    /// counts as failed (systemd's `OOMPolicy=stop`: a service missing a worker is not
    /// healthy), so its restart policy decides what follows.
    fn on_oom(&mut self, id: ServiceId, kills: u64, now: Instant, out: &mut Vec<Action>) {
        let Some(s) = self.services.get_mut(id) else {
            return;
        };
        s.oom_kills = s.oom_kills.saturating_add(kills);
        log::error!(
            "{}: the OOM killer killed {kills} process(es) in its cgroup ({} so far)",
            s.spec.name,
            s.oom_kills
        );
        if matches!(s.state, State::Starting { .. } | State::Running { .. }) {
            self.extra[id].oom = true;
            self.stop(id, AfterStop::Fail("an OOM kill".into()), None, now, out);
        } else if matches!(s.state, State::Stopping { .. }) {
            self.extra[id].oom = true;
        }
    }

    fn on_spawned(
        &mut self,
        id: ServiceId,
        pid: i32,
        released_tty: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self.services.get_mut(id) else {
            return;
        };
        if s.state != State::Spawning {
            log::debug!(
                "{}: unexpected spawn report in {}",
                s.spec.name,
                s.state.name()
            );
            return;
        }
        if released_tty {
            self.swallow = SigSet::EMPTY.with(libc::SIGHUP).with(libc::SIGCONT);
        }
        s.state = State::Starting { pid, since: now };
        s.ready_at = None;
        let spec = &s.spec;
        log::debug!("started '{}' as pid {pid}", spec.name);
        if let Some(t) = spec.start_timeout {
            out.push(Action::ArmTimer(
                TimerId::Service(id, Timer::StartTimeout),
                duration::later(now, t),
            ));
        }
        match (&spec.ready, spec.kind) {
            (_, Kind::Oneshot) => {}
            (Readiness::Started, Kind::Simple) => self.on_ready(id, now, out),
            (Readiness::Exec { timeout, .. } | Readiness::Tcp { timeout, .. }, _) => {
                let timeout = *timeout;
                self.extra[id].probing = true;
                out.push(Action::Probe(id));
                out.push(Action::ArmTimer(
                    TimerId::Service(id, Timer::ProbeTimeout),
                    duration::later(now, timeout),
                ));
            }
            (Readiness::Started | Readiness::NotifyFd(_) | Readiness::SdNotify, _) => {}
        }
    }

    fn on_spawn_failed(&mut self, id: ServiceId, err: String, now: Instant, out: &mut Vec<Action>) {
        let Some(s) = self.services.get(id) else {
            return;
        };
        if s.state != State::Spawning {
            return;
        }
        log::error!("cannot start '{}': {err}", s.spec.name);
        if Some(id) == self.main {
            self.services[id].state = State::Failed { reason: err };
            self.services[id].want = Want::Down;
            if self.plan.is_services_mode() {
                self.begin_shutdown(Some(1), now, out);
            } else {
                self.finish(1, out);
            }
            return;
        }
        self.ended(id, Ending::SpawnFailed { permanent: false }, None, now, out);
    }

    fn on_exec_failed(&mut self, pid: i32, err: ExecError) {
        let Some(id) = self.by_pid(pid) else {
            log::debug!("pid {pid} could not exec: {err}");
            return;
        };
        let spec = &self.services[id].spec;
        let prog = spec
            .argv
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        if Some(id) == self.main && !self.plan.is_services_mode() {
            match self.plan.dialect {
                Dialect::Keel if err.stage == Stage::Exec => {
                    log::error!("cannot run '{prog}': {err}")
                }
                Dialect::Keel => log::error!("cannot start '{prog}': {err}"),
                Dialect::Tini => log::error!("exec {prog} failed: {err}"),
                Dialect::DumbInit => log::error!("{prog}: {err}"),
                Dialect::Catatonit => log::error!("failed to exec pid1: {err}"),
            }
        } else if err.stage == Stage::Exec {
            log::error!("{}: cannot run '{prog}': {err}", spec.name);
        } else {
            log::error!("{}: cannot start: {err}", spec.name);
        }
        self.extra[id].exec_failed = Some(err);
    }

    fn by_pid(&self, pid: i32) -> Option<ServiceId> {
        self.services
            .iter()
            .position(|s| s.state.pid() == Some(pid))
    }

    fn on_signal(&mut self, signo: i32, from_self: bool, now: Instant, out: &mut Vec<Action>) {
        if from_self {
            // e.g. SIGPIPE raised by one of keel's own writes: not meant for the child.
            log::debug!("ignoring SIG{} raised by keel itself", signals::name(signo));
            return;
        }
        if self.swallow.contains(signo) {
            self.swallow = self.swallow.without(signo);
            log::debug!(
                "ignoring SIG{} from the terminal hand-off",
                signals::name(signo)
            );
            return;
        }
        if self.main.is_none() && !self.plan.is_services_mode() {
            // Pause mode: TERM and INT end keel; everything else is ignored.
            if signo == libc::SIGTERM || signo == libc::SIGINT {
                log::debug!("SIG{} in pause mode: exiting 0", signals::name(signo));
                self.finish(0, out);
            }
            return;
        }
        if matches!(self.phase, Phase::Draining { .. } | Phase::Killing { .. }) {
            // The services are gone: whoever is left gets what was sent to keel.
            let sig = self.plan.rewrite.apply(signo);
            if sig != 0 {
                log::debug!(
                    "forwarding SIG{} to every remaining process",
                    signals::name(sig)
                );
                out.push(Action::SignalAll(sig));
            }
            return;
        }
        if self.plan.is_services_mode() {
            match signo {
                libc::SIGTERM | libc::SIGINT => {
                    if self.phase == Phase::Up {
                        log::info!("SIG{}: shutting down", signals::name(signo));
                        self.begin_shutdown(None, now, out);
                    } else {
                        log::warn!(
                            "SIG{} again while shutting down: killing every service now",
                            signals::name(signo)
                        );
                        self.kill_everything(now, out);
                    }
                    return;
                }
                libc::SIGHUP => {
                    self.request_reload(out);
                    return;
                }
                _ => {}
            }
        }
        self.forward_to_main(signo, now, out);
    }

    /// Pass a signal to the main command (single-command mode: every signal).
    fn forward_to_main(&mut self, signo: i32, now: Instant, out: &mut Vec<Action>) {
        let sig = self.plan.rewrite.apply(signo);
        if sig == 0 {
            log::debug!("dropping SIG{} (rewritten to 0)", signals::name(signo));
            return;
        }
        let Some(id) = self.main else {
            log::info!(
                "SIG{} ignored: there is no main command to forward it to",
                signals::name(signo)
            );
            return;
        };
        let Some(pid) = self.services[id].state.pid() else {
            log::debug!(
                "SIG{} arrived with no process to forward it to",
                signals::name(signo)
            );
            return;
        };
        let target = match self.plan.forward_to {
            ForwardTo::Child => pid,
            ForwardTo::Group => -pid,
        };
        log::debug!(
            "forwarding SIG{} to {}{pid}",
            signals::name(sig),
            if target < 0 { "process group " } else { "pid " }
        );
        out.push(Action::Signal { pid: target, sig });
        if self.plan.stop_self_after.contains(signo) {
            out.push(Action::StopSelf);
        }
        if let (Some(t), None) = (self.plan.stop_timeout, self.extra[id].forwarded_stop)
            && crate::plan::is_stop_request(signo)
        {
            self.extra[id].forwarded_stop = Some(sig);
            out.push(Action::ArmTimer(
                TimerId::StopTimeout,
                duration::later(now, t),
            ));
        }
    }

    fn request_reload(&mut self, out: &mut Vec<Action>) {
        if self.phase != Phase::Up {
            log::info!("not reloading: shutting down");
        } else if self.reloading {
            log::info!("reload already in progress");
        } else {
            log::info!("reloading the configuration");
            self.reloading = true;
            out.push(Action::Reload);
        }
    }

    fn on_reaped(&mut self, r: Reaped, now: Instant, out: &mut Vec<Action>) {
        self.none_left = r.none_left;
        for (pid, exit) in &r.exits {
            match self.by_pid(*pid) {
                Some(id) => self.on_exit(id, *exit, now, out),
                None if self.plan.warn_on_reap => {
                    log::warn!("Reaped zombie process with pid={pid}");
                }
                None => log::debug!("reaped pid {pid} ({exit})"),
            }
            if self.phase == Phase::Done {
                return;
            }
        }
        if r.none_left {
            match self.phase {
                Phase::Draining { code } | Phase::Killing { code } => {
                    log::debug!("no processes left; exiting {code}");
                    out.push(Action::CancelTimer(TimerId::Grace));
                    out.push(Action::CancelTimer(TimerId::KillWait));
                    self.finish(code, out);
                }
                Phase::Up | Phase::Stopping { .. } | Phase::Done => {}
            }
        }
    }

    /// A service's main process exited.
    fn on_exit(&mut self, id: ServiceId, exit: Exit, now: Instant, out: &mut Vec<Action>) {
        let state = std::mem::replace(&mut self.services[id].state, State::Inactive);
        self.services[id].last_exit = Some(exit);
        out.push(Action::CancelTimer(TimerId::Service(id, Timer::StopKill)));
        self.end_start_checks(id, out);
        let (since, then, pid) = match state {
            State::Starting { since, pid } | State::Running { since, pid } => {
                if self.plan.is_services_mode() && Some(id) != self.main {
                    // What the service left behind in its process group would otherwise
                    // hold its ports and files against the restart.
                    out.push(Action::Signal {
                        pid: -pid,
                        sig: libc::SIGTERM,
                    });
                }
                (Some(since), None, pid)
            }
            State::Stopping { since, then, pid } => (Some(since), Some(then), pid),
            other => {
                self.services[id].state = other;
                return;
            }
        };
        if Some(id) == self.main {
            self.main_ended(id, pid, exit, now, out);
            return;
        }
        let oom = std::mem::take(&mut self.extra[id].oom);
        let ending = match self.extra[id].exec_failed.take() {
            Some(e) => Ending::SpawnFailed {
                permanent: e.stage == Stage::Exec && matches!(e.errno, libc::ENOENT | libc::EACCES),
            },
            None if oom => Ending::Oom,
            None => Ending::Exited(exit),
        };
        match then {
            None => {
                log::info!("{} ended with {exit}", self.name(id));
                self.ended(id, ending, since, now, out);
            }
            Some(AfterStop::Stay) => {
                log::info!("{} stopped ({exit})", self.name(id));
                self.services[id].state = State::Inactive;
            }
            Some(AfterStop::Restart) => {
                log::info!("{} stopped ({exit}); starting it again", self.name(id));
                self.services[id].restarts += 1;
                self.services[id].state = State::Inactive;
                self.services[id].want = Want::Up;
            }
            Some(AfterStop::Fail(reason)) => {
                log::info!("{} stopped after {reason} ({exit})", self.name(id));
                let ending = if oom { Ending::Oom } else { Ending::Timeout };
                self.ended(id, ending, since, now, out);
            }
        }
    }

    /// A run is over (or being stopped): disarm what watched its start and its health, and
    /// abandon a readiness check in flight.
    fn end_start_checks(&mut self, id: ServiceId, out: &mut Vec<Action>) {
        for t in [
            Timer::StartTimeout,
            Timer::Probe,
            Timer::ProbeTimeout,
            Timer::Watchdog,
        ] {
            out.push(Action::CancelTimer(TimerId::Service(id, t)));
        }
        if self.extra[id].probing {
            self.extra[id].probing = false;
            out.push(Action::CancelProbe(id));
        }
    }

    /// The main command ended: keel's exit code is decided.
    fn main_ended(
        &mut self,
        id: ServiceId,
        pid: i32,
        exit: Exit,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let code = self.plan.remap_exit.apply(exit.code());
        let pid_hint = self.services[id].spec.name.clone();
        self.services[id].want = Want::Down;
        self.services[id].state = State::Inactive;
        out.push(Action::CancelTimer(TimerId::StopTimeout));
        if self.plan.is_services_mode() {
            log::info!("main command '{pid_hint}' ended with {exit}; keel will exit {code}");
            let code = match self.phase {
                Phase::Stopping { code: Some(c) } => Some(c),
                _ => Some(code),
            };
            self.begin_shutdown(code, now, out);
        } else {
            log::info!(
                "main process {pid} ('{pid_hint}') ended with {exit}; keel will exit {code}"
            );
            if self.plan.term_group_on_exit {
                out.push(Action::Signal {
                    pid: -pid,
                    sig: libc::SIGTERM,
                });
            }
            // Single-command mode: keel's exit follows at once or after the drain.
            self.start_drain(code, now, out);
        }
    }

    /// A run ended on its own (or its start failed): apply the restart policy.
    fn ended(
        &mut self,
        id: ServiceId,
        ending: Ending,
        since: Option<Instant>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.phase != Phase::Up {
            self.services[id].state = State::Inactive;
            return;
        }
        let decision = self.services[id].decide(&ending, since, now);
        let code = match &ending {
            Ending::Exited(e) => e.code(),
            Ending::SpawnFailed { .. } | Ending::Timeout | Ending::Oom => 1,
        };
        let critical = self.services[id].spec.critical;
        match decision {
            Decision::Stay => {
                let s = &mut self.services[id];
                s.want = Want::Down;
                if s.spec.kind == Kind::Oneshot && ending == Ending::Exited(Exit::Code(0)) {
                    s.state = State::Done;
                    log::info!("{} done", s.spec.name);
                } else {
                    s.state = State::Inactive;
                    if critical {
                        log::info!("critical service {} ended: shutting down", s.spec.name);
                        self.begin_shutdown(Some(code), now, out);
                    }
                }
            }
            Decision::Restart(delay) => {
                let s = &mut self.services[id];
                s.restarts += 1;
                if delay.is_zero() {
                    log::info!("restarting {}", s.spec.name);
                    self.spawn(id, now, out);
                } else {
                    log::info!("restarting {} in {}", s.spec.name, duration::display(delay));
                    s.state = State::Backoff {
                        until: duration::later(now, delay),
                    };
                    out.push(Action::ArmTimer(
                        TimerId::Service(id, Timer::Restart),
                        duration::later(now, delay),
                    ));
                }
            }
            Decision::Fail(reason) => {
                log::error!("{} failed: {reason}", self.name(id));
                self.set_failed(id, reason, now, out);
                if critical {
                    log::info!("critical service {} failed: shutting down", self.name(id));
                    self.begin_shutdown(Some(code), now, out);
                }
            }
            Decision::Shutdown(reason) => {
                log::error!(
                    "{}: start limit hit ({reason}): shutting down",
                    self.name(id)
                );
                self.set_failed(id, reason, now, out);
                self.begin_shutdown(Some(code.max(1)), now, out);
            }
        }
    }

    /// Mark a service failed for good, and stop what requires it.
    fn set_failed(&mut self, id: ServiceId, reason: String, now: Instant, out: &mut Vec<Action>) {
        self.services[id].state = State::Failed { reason };
        self.services[id].want = Want::Down;
        for other in 0..self.services.len() {
            let requires = self.extra[other].deps.iter().any(|&(d, r)| d == id && r);
            if requires && self.services[other].state.is_active() {
                let reason = format!("requires '{}', which failed", self.name(id));
                log::warn!("stopping {}: {reason}", self.name(other));
                self.stop(other, AfterStop::Stay, None, now, out);
                self.services[other].want = Want::Down;
            }
        }
    }

    /// Send a service its stop signal (or `sig`) and arm its SIGKILL deadline.
    fn stop(
        &mut self,
        id: ServiceId,
        then: AfterStop,
        sig: Option<i32>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let state = self.services[id].state.clone();
        match state {
            State::Starting { pid, since } | State::Running { pid, since } => {
                let is_main = Some(id) == self.main;
                let spec = &self.services[id].spec;
                let sig = sig.unwrap_or(if is_main {
                    self.plan.rewrite.apply(spec.stop_signal)
                } else {
                    spec.stop_signal
                });
                let target = if is_main && self.plan.forward_to == ForwardTo::Child {
                    pid
                } else {
                    -pid
                };
                log::debug!("stopping {} with SIG{}", spec.name, signals::name(sig));
                if sig != 0 {
                    out.push(Action::Signal { pid: target, sig });
                }
                out.push(Action::ArmTimer(
                    TimerId::Service(id, Timer::StopKill),
                    duration::later(now, spec.stop_timeout),
                ));
                self.end_start_checks(id, out);
                self.services[id].state = State::Stopping { pid, since, then };
            }
            State::Stopping { pid, since, .. } => {
                // Already stopping: only what happens afterwards changes.
                self.services[id].state = State::Stopping { pid, since, then };
            }
            State::Backoff { .. } | State::Waiting => {
                out.push(Action::CancelTimer(TimerId::Service(id, Timer::Restart)));
                self.services[id].state = State::Inactive;
            }
            State::Inactive | State::Spawning | State::Done | State::Failed { .. } => {}
        }
    }

    fn on_ready(&mut self, id: ServiceId, now: Instant, out: &mut Vec<Action>) {
        let Some(s) = self.services.get_mut(id) else {
            return;
        };
        let State::Starting { pid, since } = s.state else {
            log::debug!("{}: readiness in state {}", s.spec.name, s.state.name());
            return;
        };
        if s.spec.kind == Kind::Oneshot {
            return;
        }
        s.state = State::Running { pid, since };
        s.ready_at = Some(now);
        if s.spec.ready != Readiness::Started {
            log::info!("{} is ready", s.spec.name);
        }
        if s.spec.start_timeout.is_some() {
            out.push(Action::CancelTimer(TimerId::Service(
                id,
                Timer::StartTimeout,
            )));
        }
        if matches!(s.spec.ready, Readiness::Exec { .. } | Readiness::Tcp { .. }) {
            self.extra[id].probing = false;
            out.push(Action::CancelTimer(TimerId::Service(
                id,
                Timer::ProbeTimeout,
            )));
            out.push(Action::CancelTimer(TimerId::Service(id, Timer::Probe)));
        }
    }

    fn on_probe_failed(&mut self, id: ServiceId, now: Instant, out: &mut Vec<Action>) {
        let Some(s) = self.services.get(id) else {
            return;
        };
        if !matches!(s.state, State::Starting { .. }) || !self.extra[id].probing {
            return;
        }
        let (interval, retries) = match &s.spec.ready {
            Readiness::Exec {
                interval, retries, ..
            }
            | Readiness::Tcp {
                interval, retries, ..
            } => (*interval, *retries),
            _ => return,
        };
        let e = &mut self.extra[id];
        e.probing = false;
        e.probe_failures += 1;
        out.push(Action::CancelTimer(TimerId::Service(
            id,
            Timer::ProbeTimeout,
        )));
        if retries > 0 && e.probe_failures >= retries {
            let reason = format!("readiness check failed {} times", e.probe_failures);
            log::error!("{}: {reason}", self.name(id));
            self.stop(id, AfterStop::Fail(reason), None, now, out);
        } else {
            out.push(Action::ArmTimer(
                TimerId::Service(id, Timer::Probe),
                duration::later(now, interval),
            ));
        }
    }

    fn on_note(&mut self, id: ServiceId, note: Note, now: Instant, out: &mut Vec<Action>) {
        let Some(s) = self.services.get_mut(id) else {
            return;
        };
        let name = s.spec.name.clone();
        if let Note::MainPid(pid) = note
            && (pid <= 0 || self.by_pid(pid).is_some_and(|other| other != id))
        {
            log::warn!("{name}: ignoring MAINPID={pid}: not a process of its own");
            return;
        }
        let s = &mut self.services[id];
        match note {
            Note::Status(text) => {
                log::debug!("{name}: status: {text}");
                s.status = Some(text);
            }
            Note::Stopping => log::info!("{name} says it is stopping"),
            Note::MainPid(pid) => match s.state.clone() {
                State::Starting { since, .. } => {
                    log::info!("{name}: main process is now {pid}");
                    s.state = State::Starting { pid, since };
                }
                State::Running { since, .. } => {
                    log::info!("{name}: main process is now {pid}");
                    s.state = State::Running { pid, since };
                }
                _ => {}
            },
            Note::WatchdogTimeout(d) => {
                if d.is_zero() {
                    self.extra[id].watchdog = None;
                    out.push(Action::CancelTimer(TimerId::Service(id, Timer::Watchdog)));
                } else {
                    self.extra[id].watchdog = Some(d);
                    out.push(Action::ArmTimer(
                        TimerId::Service(id, Timer::Watchdog),
                        duration::later(now, d),
                    ));
                }
            }
            Note::Watchdog => {
                if let Some(d) = self.extra[id].watchdog
                    && matches!(s.state, State::Starting { .. } | State::Running { .. })
                {
                    out.push(Action::ArmTimer(
                        TimerId::Service(id, Timer::Watchdog),
                        duration::later(now, d),
                    ));
                }
            }
            Note::WatchdogTrigger => {
                log::error!("{name}: watchdog triggered by the service");
                self.stop(
                    id,
                    AfterStop::Fail("watchdog triggered".into()),
                    Some(libc::SIGABRT),
                    now,
                    out,
                );
            }
        }
    }

    fn on_reloaded(
        &mut self,
        r: Result<Vec<ServiceSpec>, String>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.reloading = false;
        let specs = match r {
            Ok(s) => s,
            Err(e) => {
                log::error!("new configuration rejected; the running services are unchanged: {e}");
                return;
            }
        };
        if self.phase != Phase::Up {
            return;
        }
        let (mut added, mut removed, mut changed) = (0, 0, 0);
        // Removed services stop and retire.
        for id in 0..self.services.len() {
            let s = &self.services[id];
            if s.retired || Some(id) == self.main {
                continue;
            }
            if !specs.iter().any(|n| n.name == s.spec.name) {
                log::info!(
                    "{}: removed from the configuration; stopping it",
                    s.spec.name
                );
                removed += 1;
                self.services[id].retired = true;
                self.services[id].want = Want::Down;
                self.stop(id, AfterStop::Stay, None, now, out);
            }
        }
        for spec in specs {
            match self.find(&spec.name) {
                Some(id) if Some(id) == self.main => {
                    log::error!(
                        "service '{}' has the main command's name; ignoring it",
                        spec.name
                    );
                }
                Some(id) if self.services[id].spec == spec => {}
                Some(id) => {
                    log::info!("{}: configuration changed; restarting it", spec.name);
                    changed += 1;
                    let s = &mut self.services[id];
                    s.spec = spec;
                    s.reset_history();
                    s.want = Want::Up;
                    if s.state.is_active() {
                        self.stop(id, AfterStop::Restart, None, now, out);
                    } else {
                        out.push(Action::CancelTimer(TimerId::Service(id, Timer::Restart)));
                        self.services[id].state = State::Inactive;
                    }
                }
                None => {
                    log::info!("{}: added by the configuration", spec.name);
                    added += 1;
                    self.services.push(Service::new(spec));
                    self.extra.push(Extra::default());
                }
            }
        }
        self.link();
        log::info!("configuration reloaded: {added} added, {removed} removed, {changed} changed");
    }

    fn on_request(&mut self, r: Request, now: Instant, out: &mut Vec<Action>) {
        match r {
            Request::Shutdown => {
                if self.phase == Phase::Up {
                    log::info!("shutdown requested");
                    self.begin_shutdown(None, now, out);
                }
            }
            Request::Reload => self.request_reload(out),
            Request::Start(id) => {
                if self.phase != Phase::Up || self.services.get(id).is_none_or(|s| s.retired) {
                    return;
                }
                // Start what it requires too (systemd's Requires= pulls them in).
                let mut todo = vec![id];
                while let Some(i) = todo.pop() {
                    let s = &mut self.services[i];
                    if s.want == Want::Up && !matches!(s.state, State::Failed { .. }) {
                        continue;
                    }
                    s.want = Want::Up;
                    s.reset_history();
                    if matches!(s.state, State::Failed { .. } | State::Done) {
                        s.state = State::Inactive;
                    }
                    todo.extend(
                        self.extra[i]
                            .deps
                            .iter()
                            .filter(|(_, req)| *req)
                            .map(|(d, _)| *d),
                    );
                }
            }
            Request::Stop(id) => {
                if self.services.get(id).is_none() {
                    return;
                }
                // Stop what requires it too.
                let mut todo = vec![id];
                while let Some(i) = todo.pop() {
                    if self.services[i].want == Want::Down && !self.services[i].state.is_active() {
                        continue;
                    }
                    self.services[i].want = Want::Down;
                    self.stop(i, AfterStop::Stay, None, now, out);
                    for other in 0..self.services.len() {
                        if self.extra[other].deps.iter().any(|&(d, r)| d == i && r) {
                            todo.push(other);
                        }
                    }
                }
            }
            Request::Restart(id) => {
                let Some(s) = self.services.get_mut(id) else {
                    return;
                };
                s.want = Want::Up;
                s.reset_history();
                if s.state.is_active() {
                    self.stop(id, AfterStop::Restart, None, now, out);
                } else {
                    out.push(Action::CancelTimer(TimerId::Service(id, Timer::Restart)));
                    self.services[id].state = State::Inactive;
                }
            }
            Request::Signal(id, sig) => {
                if let Some(pid) = self.services.get(id).and_then(|s| s.state.pid()) {
                    out.push(Action::Signal { pid: -pid, sig });
                }
            }
        }
    }

    /// Shut down: stop every service in reverse dependency order under one deadline.
    fn begin_shutdown(&mut self, code: Option<u8>, now: Instant, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Up => {
                self.phase = Phase::Stopping { code };
                let deadline = duration::later(now, self.plan.shutdown_timeout);
                self.deadline = Some(deadline);
                out.push(Action::ArmTimer(TimerId::Shutdown, deadline));
                // Nothing is restarted or started from here on.
                for s in &mut self.services {
                    s.want = Want::Down;
                }
            }
            Phase::Stopping { code: None } if code.is_some() => {
                self.phase = Phase::Stopping { code };
            }
            _ => {}
        }
    }

    /// The deadline passed, or a second TERM: SIGKILL every service's process group.
    fn kill_everything(&mut self, now: Instant, out: &mut Vec<Action>) {
        for id in 0..self.services.len() {
            if let Some(pid) = self.services[id].state.pid() {
                out.push(Action::Signal {
                    pid: -pid,
                    sig: libc::SIGKILL,
                });
                if Some(id) == self.main && self.plan.forward_to == ForwardTo::Child {
                    out.push(Action::Signal {
                        pid,
                        sig: libc::SIGKILL,
                    });
                }
            }
        }
        let code = match self.phase {
            Phase::Stopping { code } => code,
            _ => None,
        };
        self.phase = Phase::Killing {
            code: code.unwrap_or(0),
        };
        out.push(Action::SignalAll(libc::SIGKILL));
        out.push(Action::CancelTimer(TimerId::Shutdown));
        out.push(Action::CancelTimer(TimerId::Grace));
        out.push(Action::ArmTimer(TimerId::KillWait, now + KILL_WAIT));
    }

    /// Every service is gone with exit `code`: stop the rest, gracefully.
    fn start_drain(&mut self, code: u8, now: Instant, out: &mut Vec<Action>) {
        if self.none_left || self.plan.grace.is_zero() {
            // tini's behaviour (grace 0): exit at once, and as PID 1 the kernel kills what is
            // left.
            self.finish(code, out);
            return;
        }
        self.phase = Phase::Draining { code };
        let sig = self.plan.rewrite.apply(libc::SIGTERM);
        if sig != 0 {
            out.push(Action::SignalAll(sig));
        }
        // In services mode the drain ends at the shutdown deadline too: the whole stop stays
        // under it (and so under Docker's timeout).
        let mut at = duration::later(now, self.plan.grace);
        if let Some(deadline) = self.deadline {
            at = at.min(deadline.max(now));
        }
        out.push(Action::ArmTimer(TimerId::Grace, at));
    }

    fn finish(&mut self, code: u8, out: &mut Vec<Action>) {
        self.phase = Phase::Done;
        out.push(Action::Exit(code));
    }

    fn on_timer(&mut self, t: TimerId, now: Instant, out: &mut Vec<Action>) {
        match t {
            TimerId::StopTimeout => {
                let Some(id) = self.main else { return };
                let (Some(pid), Some(sig)) =
                    (self.services[id].state.pid(), self.extra[id].forwarded_stop)
                else {
                    log::debug!("stale stop timer");
                    return;
                };
                let timeout = self.plan.stop_timeout.map(duration::display);
                log::warn!(
                    "main process {pid} ('{}') still running {} after SIG{}; sending SIGKILL",
                    self.name(id),
                    timeout.unwrap_or_default(),
                    signals::name(sig)
                );
                let target = match self.plan.forward_to {
                    ForwardTo::Child => pid,
                    ForwardTo::Group => -pid,
                };
                out.push(Action::Signal {
                    pid: target,
                    sig: libc::SIGKILL,
                });
            }
            TimerId::Grace => {
                if let Phase::Draining { code } = self.phase {
                    log::warn!(
                        "processes still running {} after the services ended; sending SIGKILL",
                        duration::display(self.plan.grace)
                    );
                    self.phase = Phase::Killing { code };
                    out.push(Action::SignalAll(libc::SIGKILL));
                    out.push(Action::ArmTimer(TimerId::KillWait, now + KILL_WAIT));
                }
            }
            TimerId::KillWait => {
                if let Phase::Killing { code } = self.phase {
                    log::warn!(
                        "processes survived SIGKILL for {}; exiting anyway",
                        duration::display(KILL_WAIT)
                    );
                    self.finish(code, out);
                }
            }
            TimerId::Shutdown => {
                if let Phase::Stopping { .. } = self.phase {
                    log::warn!(
                        "shutdown deadline ({}) passed; killing everything",
                        duration::display(self.plan.shutdown_timeout)
                    );
                    self.kill_everything(now, out);
                }
            }
            TimerId::Service(id, timer) => self.on_service_timer(id, timer, now, out),
        }
    }

    fn on_service_timer(
        &mut self,
        id: ServiceId,
        timer: Timer,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self.services.get(id) else {
            return;
        };
        let state = s.state.clone();
        match (timer, state) {
            (Timer::Restart, State::Backoff { .. }) => {
                self.services[id].state = State::Inactive;
                // settle() spawns it, or makes it wait for its dependencies.
            }
            (Timer::StartTimeout, State::Starting { .. }) => {
                let reason = format!(
                    "not ready within {}",
                    self.services[id]
                        .spec
                        .start_timeout
                        .map(duration::display)
                        .unwrap_or_default()
                );
                log::error!("{}: {reason}", self.name(id));
                self.stop(id, AfterStop::Fail(reason), None, now, out);
            }
            (Timer::StopKill, State::Stopping { pid, .. }) => {
                log::warn!(
                    "{} still running {} after its stop signal; sending SIGKILL",
                    self.name(id),
                    duration::display(self.services[id].spec.stop_timeout)
                );
                out.push(Action::Signal {
                    pid: -pid,
                    sig: libc::SIGKILL,
                });
                if Some(id) == self.main && self.plan.forward_to == ForwardTo::Child {
                    out.push(Action::Signal {
                        pid,
                        sig: libc::SIGKILL,
                    });
                }
            }
            (Timer::Probe, State::Starting { .. }) => {
                if let Readiness::Exec { timeout, .. } | Readiness::Tcp { timeout, .. } =
                    self.services[id].spec.ready
                {
                    self.extra[id].probing = true;
                    out.push(Action::Probe(id));
                    out.push(Action::ArmTimer(
                        TimerId::Service(id, Timer::ProbeTimeout),
                        duration::later(now, timeout),
                    ));
                }
            }
            (Timer::ProbeTimeout, State::Starting { .. }) => {
                if self.extra[id].probing {
                    log::debug!("{}: readiness check timed out", self.name(id));
                    out.push(Action::CancelProbe(id));
                    self.on_probe_failed(id, now, out);
                }
            }
            (Timer::Watchdog, State::Starting { .. } | State::Running { .. }) => {
                log::error!("{}: watchdog timeout; aborting it", self.name(id));
                self.stop(
                    id,
                    AfterStop::Fail("watchdog timeout".into()),
                    Some(libc::SIGABRT),
                    now,
                    out,
                );
            }
            (_, state) => log::debug!("{}: stale timer in state {}", self.name(id), state.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{LimitAction, Plan, RestartPolicy};
    use crate::reap::Exit;
    use std::ffi::OsString;
    use std::time::Duration;

    fn sup(f: impl FnOnce(&mut Plan)) -> Supervisor {
        let mut p = Plan::single(vec![OsString::from("app")]);
        f(&mut p);
        Supervisor::new(p)
    }

    fn reaped(exits: &[(i32, Exit)], none_left: bool) -> Input {
        Input::Reaped(Reaped {
            exits: exits.to_vec(),
            none_left,
        })
    }

    fn sig(signo: i32) -> Input {
        Input::Signal {
            signo,
            from_self: false,
        }
    }

    fn spawned(id: ServiceId, pid: i32) -> Input {
        Input::Spawned {
            id,
            pid,
            released_tty: false,
        }
    }

    fn started(s: &mut Supervisor, now: Instant) {
        assert_eq!(s.handle(Input::Booted, now), vec![Action::Spawn(0)]);
        assert!(s.handle(spawned(0, 10), now).is_empty());
    }

    // ---- single-command mode: tini's contract ----

    #[test]
    fn forwards_to_child_or_group() {
        let now = Instant::now();
        let mut s = sup(|_| {});
        started(&mut s, now);
        assert_eq!(
            s.handle(sig(libc::SIGUSR1), now),
            vec![Action::Signal {
                pid: 10,
                sig: libc::SIGUSR1
            }]
        );
        let mut s = sup(|p| p.forward_to = ForwardTo::Group);
        started(&mut s, now);
        assert_eq!(
            s.handle(sig(libc::SIGHUP), now),
            vec![Action::Signal {
                pid: -10,
                sig: libc::SIGHUP
            }]
        );
    }

    #[test]
    fn rewrites_and_drops() {
        let now = Instant::now();
        let mut s = sup(|p| {
            p.rewrite.set(libc::SIGTERM, libc::SIGQUIT);
            p.rewrite.set(libc::SIGUSR2, 0);
        });
        started(&mut s, now);
        assert_eq!(
            s.handle(sig(libc::SIGTERM), now),
            vec![Action::Signal {
                pid: 10,
                sig: libc::SIGQUIT
            }]
        );
        assert!(s.handle(sig(libc::SIGUSR2), now).is_empty());
        // Self-raised signals are never forwarded.
        assert!(
            s.handle(
                Input::Signal {
                    signo: libc::SIGPIPE,
                    from_self: true
                },
                now
            )
            .is_empty()
        );
    }

    #[test]
    fn exits_at_once_when_nothing_is_left() {
        let now = Instant::now();
        let mut s = sup(|_| {});
        started(&mut s, now);
        let a = s.handle(reaped(&[(10, Exit::Code(3))], true), now);
        assert_eq!(a.last(), Some(&Action::Exit(3)));
        assert!(!a.iter().any(|a| matches!(a, Action::SignalAll(_))));
    }

    #[test]
    fn remaps_and_signal_codes() {
        let now = Instant::now();
        let mut s = sup(|p| p.remap_exit.set(143, 0));
        started(&mut s, now);
        let a = s.handle(reaped(&[(10, Exit::Signal(libc::SIGTERM))], true), now);
        assert_eq!(a.last(), Some(&Action::Exit(0)));
        let mut s = sup(|_| {});
        started(&mut s, now);
        let a = s.handle(reaped(&[(10, Exit::Signal(libc::SIGKILL))], true), now);
        assert_eq!(a.last(), Some(&Action::Exit(137)));
    }

    #[test]
    fn drains_stragglers_then_kills() {
        let now = Instant::now();
        let mut s = sup(|p| p.grace = Duration::from_secs(3));
        started(&mut s, now);
        let a = s.handle(
            reaped(&[(11, Exit::Code(0)), (10, Exit::Code(5))], false),
            now,
        );
        assert!(a.contains(&Action::SignalAll(libc::SIGTERM)));
        assert!(a.contains(&Action::ArmTimer(
            TimerId::Grace,
            now + Duration::from_secs(3)
        )));
        // A signal sent to keel now reaches everyone left.
        assert_eq!(
            s.handle(sig(libc::SIGUSR1), now),
            vec![Action::SignalAll(libc::SIGUSR1)]
        );
        let a = s.handle(Input::Timer(TimerId::Grace), now);
        assert!(a.contains(&Action::SignalAll(libc::SIGKILL)));
        let a = s.handle(reaped(&[(12, Exit::Signal(9))], true), now);
        assert_eq!(a.last(), Some(&Action::Exit(5)));
        // Nothing after exit.
        assert!(s.handle(sig(libc::SIGTERM), now).is_empty());
    }

    #[test]
    fn drain_uses_the_rewritten_stop_signal_and_can_give_up() {
        let now = Instant::now();
        let mut s = sup(|p| p.rewrite.set(libc::SIGTERM, libc::SIGINT));
        started(&mut s, now);
        let a = s.handle(reaped(&[(10, Exit::Code(0))], false), now);
        assert!(a.contains(&Action::SignalAll(libc::SIGINT)));
        s.handle(Input::Timer(TimerId::Grace), now);
        let a = s.handle(Input::Timer(TimerId::KillWait), now);
        assert_eq!(a, vec![Action::Exit(0)]);
    }

    #[test]
    fn zero_grace_exits_immediately() {
        let now = Instant::now();
        let mut s = sup(|p| p.grace = Duration::ZERO);
        started(&mut s, now);
        let a = s.handle(reaped(&[(10, Exit::Code(4))], false), now);
        assert_eq!(a.last(), Some(&Action::Exit(4)));
        assert!(!a.iter().any(|a| matches!(a, Action::SignalAll(_))));
    }

    #[test]
    fn stop_timeout_kills_the_main_child_once() {
        let now = Instant::now();
        let t = Duration::from_secs(2);
        let mut s = sup(|p| {
            p.stop_timeout = Some(t);
            p.forward_to = ForwardTo::Group;
        });
        started(&mut s, now);
        // Not a stop request: no timer.
        assert_eq!(s.handle(sig(libc::SIGUSR1), now).len(), 1);
        let a = s.handle(sig(libc::SIGTERM), now);
        assert!(a.contains(&Action::ArmTimer(TimerId::StopTimeout, now + t)));
        // A second TERM does not push the deadline back.
        let a = s.handle(sig(libc::SIGTERM), now + t / 2);
        assert!(!a.iter().any(|a| matches!(a, Action::ArmTimer(..))));
        assert_eq!(
            s.handle(Input::Timer(TimerId::StopTimeout), now + t),
            vec![Action::Signal {
                pid: -10,
                sig: libc::SIGKILL
            }]
        );
    }

    #[test]
    fn stale_timers_and_orphans_are_harmless() {
        let now = Instant::now();
        let mut s = sup(|_| {});
        started(&mut s, now);
        assert!(s.handle(Input::Timer(TimerId::StopTimeout), now).is_empty());
        assert!(s.handle(Input::Timer(TimerId::Grace), now).is_empty());
        assert!(
            s.handle(reaped(&[(99, Exit::Code(1))], false), now)
                .is_empty()
        );
    }

    #[test]
    fn fork_failure_exits_1() {
        let now = Instant::now();
        let mut s = sup(|_| {});
        s.handle(Input::Booted, now);
        let a = s.handle(
            Input::SpawnFailed {
                id: 0,
                err: "fork: Resource temporarily unavailable".into(),
            },
            now,
        );
        assert_eq!(a, vec![Action::Exit(1)]);
    }

    #[test]
    fn pause_mode_exits_on_term() {
        let now = Instant::now();
        let mut s = sup(|p| p.main = None);
        assert!(s.handle(Input::Booted, now).is_empty());
        assert!(s.handle(sig(libc::SIGUSR1), now).is_empty());
        assert_eq!(s.handle(sig(libc::SIGINT), now), vec![Action::Exit(0)]);
    }

    // ---- services mode ----

    fn spec(name: &str, f: impl FnOnce(&mut ServiceSpec)) -> ServiceSpec {
        let mut s = ServiceSpec::new(name.into(), vec![OsString::from(name)]);
        f(&mut s);
        s
    }

    /// A services-mode supervisor; with `main`, the command is the last id.
    fn services(specs: Vec<ServiceSpec>, main: bool) -> Supervisor {
        let mut p = Plan::single(vec![OsString::from("cmd")]);
        if !main {
            p.main = None;
        }
        p.services = specs;
        p.config = Some(Vec::new());
        Supervisor::new(p)
    }

    fn spawns(a: &[Action]) -> Vec<ServiceId> {
        a.iter()
            .filter_map(|a| match a {
                Action::Spawn(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn signals_sent(a: &[Action]) -> Vec<(i32, i32)> {
        a.iter()
            .filter_map(|a| match a {
                Action::Signal { pid, sig } => Some((*pid, *sig)),
                _ => None,
            })
            .collect()
    }

    fn state(s: &Supervisor, id: ServiceId) -> &'static str {
        s.services()[id].state.name()
    }

    #[test]
    fn starts_in_dependency_order_in_parallel_where_independent() {
        let now = Instant::now();
        let mut s = services(
            vec![
                spec("init", |s| s.kind = Kind::Oneshot),
                spec("api", |s| s.after = vec!["init".into()]),
                spec("web", |s| s.requires = vec!["api".into()]),
                spec("term", |_| {}),
            ],
            true,
        );
        // init and term are independent; the main command (4) waits for everything.
        assert_eq!(spawns(&s.handle(Input::Booted, now)), [0, 3]);
        assert_eq!(state(&s, 1), "waiting");
        assert_eq!(state(&s, 4), "waiting");
        assert!(spawns(&s.handle(spawned(0, 100), now)).is_empty());
        assert!(spawns(&s.handle(spawned(3, 103), now)).is_empty());
        // The oneshot's success releases api; api's readiness releases web.
        let a = s.handle(reaped(&[(100, Exit::Code(0))], false), now);
        assert_eq!(state(&s, 0), "done");
        assert_eq!(spawns(&a), [1]);
        assert_eq!(spawns(&s.handle(spawned(1, 101), now)), [2]);
        assert_eq!(spawns(&s.handle(spawned(2, 102), now)), [4]);
    }

    #[test]
    fn failed_oneshot_blocks_required_dependents_only() {
        let now = Instant::now();
        let mut s = services(
            vec![
                spec("init", |s| s.kind = Kind::Oneshot),
                spec("needs", |s| s.requires = vec!["init".into()]),
                spec("orders", |s| s.after = vec!["init".into()]),
            ],
            false,
        );
        assert_eq!(spawns(&s.handle(Input::Booted, now)), [0]);
        s.handle(spawned(0, 100), now);
        let a = s.handle(reaped(&[(100, Exit::Code(1))], false), now);
        assert_eq!(state(&s, 0), "failed");
        assert_eq!(state(&s, 1), "failed");
        assert_eq!(spawns(&a), [2]);
    }

    #[test]
    fn restarts_at_once_after_a_healthy_run_then_backs_off() {
        let t0 = Instant::now();
        let mut s = services(
            vec![spec("web", |s| {
                s.restart = RestartPolicy::Always;
                s.start_limit_burst = 100;
            })],
            false,
        );
        s.handle(Input::Booted, t0);
        s.handle(spawned(0, 10), t0);
        let t1 = t0 + Duration::from_secs(5);
        let a = s.handle(reaped(&[(10, Exit::Signal(libc::SIGKILL))], false), t1);
        assert_eq!(spawns(&a), [0], "immediate respawn after a healthy run");
        // Its leftovers get TERM.
        assert!(signals_sent(&a).contains(&(-10, libc::SIGTERM)));
        s.handle(spawned(0, 11), t1);
        let a = s.handle(reaped(&[(11, Exit::Code(1))], false), t1);
        assert!(spawns(&a).is_empty());
        let at = t1 + Duration::from_millis(100);
        assert!(a.contains(&Action::ArmTimer(TimerId::Service(0, Timer::Restart), at)));
        assert_eq!(state(&s, 0), "backoff");
        assert_eq!(
            spawns(&s.handle(Input::Timer(TimerId::Service(0, Timer::Restart)), at)),
            [0]
        );
        assert_eq!(s.services()[0].restarts, 2);
    }

    #[test]
    fn oom_kill_of_a_worker_stops_the_run_and_counts_as_abnormal() {
        let t0 = Instant::now();
        let mut s = services(
            vec![
                spec("hog", |s| s.restart = RestartPolicy::OnAbnormal),
                spec("calm", |_| {}),
            ],
            false,
        );
        s.handle(Input::Booted, t0);
        s.handle(spawned(0, 10), t0);
        s.handle(spawned(1, 20), t0);
        let t1 = t0 + Duration::from_secs(5);
        // The OOM killer took a worker: the main process lives, the run is over anyway.
        let a = s.handle(Input::Oom { id: 0, kills: 1 }, t1);
        assert_eq!(signals_sent(&a), [(-10, libc::SIGTERM)]);
        assert_eq!(state(&s, 0), "stopping");
        assert_eq!(s.services()[0].oom_kills, 1);
        // The main exits cleanly on SIGTERM: still an OOM ending, so on-abnormal restarts.
        let a = s.handle(reaped(&[(10, Exit::Signal(libc::SIGTERM))], false), t1);
        assert_eq!(spawns(&a), [0]);
        assert_eq!(s.services()[0].restarts, 1);
        // The other service is untouched.
        assert_eq!(state(&s, 1), "running");
        assert!(!signals_sent(&a).iter().any(|(p, _)| *p == -20 || *p == 20));
    }

    #[test]
    fn oom_killed_main_process_fails_without_restart_and_counts_every_kill() {
        let t0 = Instant::now();
        let mut s = services(vec![spec("hog", |s| s.restart = RestartPolicy::No)], false);
        s.handle(Input::Booted, t0);
        s.handle(spawned(0, 10), t0);
        // The runtime reads the cgroup's events before the exits of the same wake-up.
        s.handle(Input::Oom { id: 0, kills: 2 }, t0);
        let a = s.handle(reaped(&[(10, Exit::Signal(libc::SIGKILL))], false), t0);
        assert!(spawns(&a).is_empty());
        assert_eq!(state(&s, 0), "failed");
        assert_eq!(s.services()[0].oom_kills, 2);
        // A late report (the counter moved after the exit) is counted, nothing else.
        assert!(s.handle(Input::Oom { id: 0, kills: 1 }, t0).is_empty());
        assert_eq!(s.services()[0].oom_kills, 3);
        assert_eq!(state(&s, 0), "failed");
    }

    #[test]
    fn oom_flag_does_not_leak_into_the_next_run() {
        let t0 = Instant::now();
        let mut s = services(
            vec![spec("hog", |s| {
                s.restart = RestartPolicy::OnFailure;
                s.start_limit_burst = 100;
            })],
            false,
        );
        s.handle(Input::Booted, t0);
        s.handle(spawned(0, 10), t0);
        s.handle(Input::Oom { id: 0, kills: 1 }, t0);
        let t1 = t0 + Duration::from_secs(5);
        s.handle(reaped(&[(10, Exit::Signal(libc::SIGKILL))], false), t1);
        s.handle(Input::Timer(TimerId::Service(0, Timer::Restart)), t1);
        let t2 = t1 + Duration::from_secs(1);
        s.handle(spawned(0, 11), t2);
        // A clean exit of the next run is clean: on-failure does not restart it.
        let a = s.handle(reaped(&[(11, Exit::Code(0))], false), t2);
        assert!(spawns(&a).is_empty());
        assert_eq!(state(&s, 0), "inactive");
    }

    #[test]
    fn start_limit_shutdown_exits_nonzero() {
        let now = Instant::now();
        let mut s = services(
            vec![spec("web", |s| {
                s.restart = RestartPolicy::Always;
                s.start_limit_burst = 2;
                s.start_limit_action = LimitAction::Shutdown;
            })],
            false,
        );
        s.handle(Input::Booted, now);
        s.handle(spawned(0, 10), now);
        s.handle(reaped(&[(10, Exit::Code(0))], false), now);
        s.handle(spawned(0, 11), now);
        let a = s.handle(reaped(&[(11, Exit::Code(0))], true), now);
        assert_eq!(state(&s, 0), "failed");
        assert_eq!(a.last(), Some(&Action::Exit(1)));
    }

    #[test]
    fn shutdown_stops_in_reverse_order_then_drains() {
        let now = Instant::now();
        let mut s = services(
            vec![
                spec("db", |_| {}),
                spec("api", |s| s.requires = vec!["db".into()]),
                spec("solo", |s| s.stop_signal = libc::SIGINT),
            ],
            false,
        );
        s.handle(Input::Booted, now);
        s.handle(spawned(0, 10), now);
        s.handle(spawned(2, 12), now);
        s.handle(spawned(1, 11), now);
        let a = s.handle(sig(libc::SIGTERM), now);
        // api and solo first, in parallel; db waits for api.
        assert_eq!(
            signals_sent(&a),
            [(-11, libc::SIGTERM), (-12, libc::SIGINT)]
        );
        assert!(a.contains(&Action::ArmTimer(
            TimerId::Shutdown,
            now + crate::plan::DEFAULT_SHUTDOWN_TIMEOUT
        )));
        let a = s.handle(reaped(&[(11, Exit::Signal(libc::SIGTERM))], false), now);
        assert_eq!(signals_sent(&a), [(-10, libc::SIGTERM)]);
        // No restart during shutdown, whatever the policy.
        s.handle(reaped(&[(12, Exit::Code(0))], false), now);
        let a = s.handle(reaped(&[(10, Exit::Code(0))], false), now);
        assert!(a.contains(&Action::SignalAll(libc::SIGTERM)));
        let a = s.handle(reaped(&[], true), now);
        assert_eq!(a.last(), Some(&Action::Exit(0)));
    }

    #[test]
    fn main_command_code_is_keels() {
        let now = Instant::now();
        let mut s = services(vec![spec("svc", |_| {})], true);
        assert_eq!(spawns(&s.handle(Input::Booted, now)), [0]);
        assert_eq!(spawns(&s.handle(spawned(0, 10), now)), [1]);
        s.handle(spawned(1, 20), now);
        // Other signals go to the main command.
        assert_eq!(
            signals_sent(&s.handle(sig(libc::SIGUSR1), now)),
            [(20, libc::SIGUSR1)]
        );
        let a = s.handle(reaped(&[(20, Exit::Code(3))], false), now);
        assert_eq!(signals_sent(&a), [(-10, libc::SIGTERM)]);
        let a = s.handle(reaped(&[(10, Exit::Signal(libc::SIGTERM))], true), now);
        assert_eq!(a.last(), Some(&Action::Exit(3)));
    }

    #[test]
    fn requested_stop_with_main_uses_mains_code() {
        let now = Instant::now();
        let mut s = services(vec![spec("svc", |_| {})], true);
        s.handle(Input::Booted, now);
        s.handle(spawned(0, 10), now);
        s.handle(spawned(1, 20), now);
        let a = s.handle(sig(libc::SIGTERM), now);
        // The main command goes first; svc waits for it.
        assert_eq!(signals_sent(&a), [(20, libc::SIGTERM)]);
        let a = s.handle(reaped(&[(20, Exit::Signal(libc::SIGTERM))], false), now);
        assert_eq!(signals_sent(&a), [(-10, libc::SIGTERM)]);
        let a = s.handle(reaped(&[(10, Exit::Code(0))], true), now);
        assert_eq!(a.last(), Some(&Action::Exit(143)));
    }

    #[test]
    fn critical_failure_shuts_down_with_its_code() {
        let now = Instant::now();
        let mut s = services(
            vec![spec("core", |s| s.critical = true), spec("side", |_| {})],
            false,
        );
        s.handle(Input::Booted, now);
        s.handle(spawned(0, 10), now);
        s.handle(spawned(1, 11), now);
        let a = s.handle(reaped(&[(10, Exit::Code(7))], false), now);
        assert!(signals_sent(&a).contains(&(-11, libc::SIGTERM)));
        let a = s.handle(reaped(&[(11, Exit::Code(0))], true), now);
        assert_eq!(a.last(), Some(&Action::Exit(7)));
    }

    #[test]
    fn stop_timeout_then_deadline_then_second_term() {
        let now = Instant::now();
        let mut s = services(
            vec![spec("stubborn", |s| {
                s.stop_timeout = Duration::from_secs(1)
            })],
            false,
        );
        s.handle(Input::Booted, now);
        s.handle(spawned(0, 10), now);
        let a = s.handle(sig(libc::SIGTERM), now);
        let kill_at = now + Duration::from_secs(1);
        assert!(a.contains(&Action::ArmTimer(
            TimerId::Service(0, Timer::StopKill),
            kill_at
        )));
        let a = s.handle(Input::Timer(TimerId::Service(0, Timer::StopKill)), kill_at);
        assert_eq!(signals_sent(&a), [(-10, libc::SIGKILL)]);
        // A second TERM kills everything at once.
        let a = s.handle(sig(libc::SIGTERM), kill_at);
        assert!(a.contains(&Action::SignalAll(libc::SIGKILL)));
        let a = s.handle(reaped(&[(10, Exit::Signal(9))], true), kill_at);
        assert_eq!(a.last(), Some(&Action::Exit(0)));
    }

    #[test]
    fn shutdown_deadline_kills_everything() {
        let now = Instant::now();
        let mut s = services(vec![spec("a", |_| {})], false);
        s.handle(Input::Booted, now);
        s.handle(spawned(0, 10), now);
        s.handle(sig(libc::SIGINT), now);
        let a = s.handle(Input::Timer(TimerId::Shutdown), now);
        assert!(signals_sent(&a).contains(&(-10, libc::SIGKILL)));
        assert!(a.contains(&Action::SignalAll(libc::SIGKILL)));
        let a = s.handle(Input::Timer(TimerId::KillWait), now);
        assert_eq!(a, vec![Action::Exit(0)]);
    }

    #[test]
    fn readiness_checks_retry_then_fail_the_start() {
        let now = Instant::now();
        let ready = Readiness::Tcp {
            addr: "127.0.0.1:1".parse().unwrap(),
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(200),
            retries: 2,
        };
        let mut s = services(
            vec![
                spec("web", |s| {
                    s.ready = ready;
                    s.restart = RestartPolicy::OnFailure;
                }),
                spec("after", |s| s.after = vec!["web".into()]),
            ],
            false,
        );
        s.handle(Input::Booted, now);
        let a = s.handle(spawned(0, 10), now);
        assert!(a.contains(&Action::Probe(0)));
        let a = s.handle(Input::ProbeFailed(0), now);
        let next = now + Duration::from_millis(50);
        assert!(a.contains(&Action::ArmTimer(TimerId::Service(0, Timer::Probe), next)));
        assert_eq!(
            s.handle(Input::Timer(TimerId::Service(0, Timer::Probe)), next)
                .first(),
            Some(&Action::Probe(0))
        );
        // The attempt times out: cancelled, counted, and the second failure ends the start.
        let a = s.handle(Input::Timer(TimerId::Service(0, Timer::ProbeTimeout)), next);
        assert!(a.contains(&Action::CancelProbe(0)));
        assert_eq!(signals_sent(&a), [(-10, libc::SIGTERM)]);
        assert_eq!(state(&s, 1), "waiting");
        // The stop ends as a failure: on-failure restarts it.
        let a = s.handle(reaped(&[(10, Exit::Signal(libc::SIGTERM))], false), next);
        assert_eq!(spawns(&a), [0]);
        let a = s.handle(spawned(0, 11), next);
        assert!(a.contains(&Action::Probe(0)));
        let a = s.handle(Input::Ready(0), next);
        assert_eq!(spawns(&a), [1]);
        assert_eq!(state(&s, 0), "running");
    }

    #[test]
    fn notify_ready_status_watchdog_and_mainpid() {
        let now = Instant::now();
        let mut s = services(
            vec![spec("d", |s| {
                s.kind = Kind::Notify;
                s.ready = Readiness::SdNotify;
                s.restart = RestartPolicy::OnAbnormal;
            })],
            false,
        );
        s.handle(Input::Booted, now);
        s.handle(spawned(0, 10), now);
        assert_eq!(state(&s, 0), "starting");
        s.handle(Input::Notified(0, Note::Status("warming".into())), now);
        assert_eq!(s.services()[0].status.as_deref(), Some("warming"));
        s.handle(Input::Ready(0), now);
        assert_eq!(state(&s, 0), "running");
        let d = Duration::from_secs(2);
        let a = s.handle(Input::Notified(0, Note::WatchdogTimeout(d)), now);
        assert!(a.contains(&Action::ArmTimer(
            TimerId::Service(0, Timer::Watchdog),
            now + d
        )));
        s.handle(Input::Notified(0, Note::MainPid(77)), now);
        assert_eq!(s.services()[0].state.pid(), Some(77));
        let a = s.handle(Input::Timer(TimerId::Service(0, Timer::Watchdog)), now + d);
        assert_eq!(signals_sent(&a), [(-77, libc::SIGABRT)]);
        // The launcher's exit is an orphan's now; the main pid's ends the run.
        assert!(spawns(&s.handle(reaped(&[(10, Exit::Code(0))], false), now + d)).is_empty());
        let a = s.handle(reaped(&[(77, Exit::Signal(libc::SIGABRT))], false), now + d);
        assert_eq!(spawns(&a), [0], "watchdog counts as abnormal");
    }

    #[test]
    fn reload_adds_removes_changes_and_rejects() {
        let now = Instant::now();
        let mut s = services(
            vec![
                spec("keep", |_| {}),
                spec("gone", |_| {}),
                spec("edit", |_| {}),
            ],
            false,
        );
        s.handle(Input::Booted, now);
        for (id, pid) in [(0, 10), (1, 11), (2, 12)] {
            s.handle(spawned(id, pid), now);
        }
        assert_eq!(s.handle(sig(libc::SIGHUP), now), vec![Action::Reload]);
        // A second HUP while reloading does nothing more.
        assert!(s.handle(sig(libc::SIGHUP), now).is_empty());
        let new = vec![
            spec("keep", |_| {}),
            spec("edit", |s| s.argv.push(OsString::from("--new"))),
            spec("added", |_| {}),
        ];
        let a = s.handle(Input::Reloaded(Ok(new)), now);
        assert_eq!(
            signals_sent(&a),
            [(-11, libc::SIGTERM), (-12, libc::SIGTERM)]
        );
        assert_eq!(spawns(&a), [3]);
        assert_eq!(s.find("gone"), None);
        // The changed one comes back with its new spec once stopped.
        let a = s.handle(
            reaped(&[(12, Exit::Signal(15)), (11, Exit::Signal(15))], false),
            now,
        );
        assert_eq!(spawns(&a), [2]);
        assert_eq!(s.services()[2].spec.argv.len(), 2);
        assert_eq!(state(&s, 1), "inactive");
        // A rejected configuration changes nothing.
        s.handle(sig(libc::SIGHUP), now);
        let a = s.handle(Input::Reloaded(Err("bad".into())), now);
        assert!(a.is_empty());
        // In single-command mode HUP is the child's.
        let mut single = sup(|_| {});
        started(&mut single, now);
        assert_eq!(
            single.handle(sig(libc::SIGHUP), now),
            vec![Action::Signal {
                pid: 10,
                sig: libc::SIGHUP
            }]
        );
    }

    #[test]
    fn requests_start_stop_restart_signal() {
        let now = Instant::now();
        let mut s = services(
            vec![
                spec("db", |_| {}),
                spec("api", |s| s.requires = vec!["db".into()]),
            ],
            false,
        );
        s.handle(Input::Booted, now);
        s.handle(spawned(0, 10), now);
        s.handle(spawned(1, 11), now);
        // Stopping db stops api, which requires it.
        let a = s.handle(Input::Request(Request::Stop(0)), now);
        assert_eq!(
            signals_sent(&a),
            [(-10, libc::SIGTERM), (-11, libc::SIGTERM)]
        );
        s.handle(
            reaped(&[(10, Exit::Code(0)), (11, Exit::Code(0))], false),
            now,
        );
        assert_eq!((state(&s, 0), state(&s, 1)), ("inactive", "inactive"));
        // Starting api pulls db in first.
        let a = s.handle(Input::Request(Request::Start(1)), now);
        assert_eq!(spawns(&a), [0]);
        assert_eq!(spawns(&s.handle(spawned(0, 20), now)), [1]);
        s.handle(spawned(1, 21), now);
        let a = s.handle(Input::Request(Request::Restart(1)), now);
        assert_eq!(signals_sent(&a), [(-21, libc::SIGTERM)]);
        assert_eq!(
            spawns(&s.handle(reaped(&[(21, Exit::Code(0))], false), now)),
            [1]
        );
        s.handle(spawned(1, 22), now);
        assert_eq!(
            signals_sent(&s.handle(Input::Request(Request::Signal(1, libc::SIGUSR1)), now)),
            [(-22, libc::SIGUSR1)]
        );
        assert_eq!(s.services()[1].restarts, 1);
    }

    #[test]
    fn permanent_exec_failure_is_not_retried() {
        let now = Instant::now();
        let mut s = services(
            vec![spec("typo", |s| s.restart = RestartPolicy::Always)],
            false,
        );
        s.handle(Input::Booted, now);
        s.handle(spawned(0, 10), now);
        s.handle(
            Input::ExecFailed {
                pid: 10,
                err: ExecError {
                    stage: Stage::Exec,
                    errno: libc::ENOENT,
                },
            },
            now,
        );
        let a = s.handle(reaped(&[(10, Exit::Code(127))], false), now);
        assert!(spawns(&a).is_empty());
        assert_eq!(state(&s, 0), "failed");
    }

    /// Random inputs in random order never panic, never emit more than one Exit, and
    /// nothing follows it (style.md: every (state, input) pair must return).
    #[test]
    fn random_inputs_never_panic() {
        let rounds: u64 = std::env::var("KEEL_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let t0 = Instant::now();
        for _ in 0..rounds {
            let mut s = services(
                vec![
                    spec("a", |s| {
                        s.kind = Kind::Oneshot;
                        s.restart = RestartPolicy::OnFailure;
                    }),
                    spec("b", |s| {
                        s.requires = vec!["a".into()];
                        s.restart = RestartPolicy::Always;
                        s.start_timeout = Some(Duration::from_secs(1));
                    }),
                    spec("c", |s| {
                        s.after = vec!["b".into()];
                        s.ready = Readiness::Exec {
                            argv: vec![OsString::from("true")],
                            interval: Duration::from_millis(10),
                            timeout: Duration::from_millis(10),
                            retries: 3,
                        };
                    }),
                ],
                rnd(2) == 0,
            );
            let mut exits = 0;
            let mut pid = 100;
            for step in 0..60u64 {
                let now = t0 + Duration::from_millis(step * 37);
                let n = s.services().len() as u64;
                let id = rnd(n + 1) as usize; // sometimes out of range
                let live: Vec<i32> = s.services().iter().filter_map(|x| x.state.pid()).collect();
                let some_pid = live
                    .get(rnd(live.len() as u64 + 1) as usize)
                    .copied()
                    .unwrap_or(999);
                let input =
                    match rnd(15) {
                        0 => Input::Booted,
                        1 => {
                            pid += 1;
                            spawned(id, pid)
                        }
                        2 => reaped(&[(some_pid, Exit::Code(rnd(3) as u8))], rnd(4) == 0),
                        3 => sig([libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGINT]
                            [rnd(4) as usize]),
                        4 => Input::Ready(id),
                        5 => Input::ProbeFailed(id),
                        6 => Input::Timer(TimerId::Service(
                            id,
                            [
                                Timer::Restart,
                                Timer::StartTimeout,
                                Timer::StopKill,
                                Timer::Probe,
                                Timer::ProbeTimeout,
                                Timer::Watchdog,
                            ][rnd(6) as usize],
                        )),
                        7 => Input::Timer(
                            [
                                TimerId::Grace,
                                TimerId::KillWait,
                                TimerId::Shutdown,
                                TimerId::StopTimeout,
                            ][rnd(4) as usize],
                        ),
                        8 => Input::Request(
                            [
                                Request::Start(id),
                                Request::Stop(id),
                                Request::Restart(id),
                                Request::Signal(id, 10),
                            ][rnd(4) as usize]
                                .clone(),
                        ),
                        9 => Input::Reloaded(Ok(vec![
                            spec("b", |_| {}),
                            spec("d", |s| s.after = vec!["b".into()]),
                        ])),
                        10 => Input::Notified(id, Note::MainPid(some_pid)),
                        11 => Input::SpawnFailed {
                            id,
                            err: "fork".into(),
                        },
                        13 => Input::Oom {
                            id,
                            kills: 1 + rnd(3),
                        },
                        12 => Input::ExecFailed {
                            pid: some_pid,
                            err: ExecError {
                                stage: Stage::Exec,
                                errno: libc::ENOENT,
                            },
                        },
                        _ => Input::Notified(id, Note::WatchdogTimeout(Duration::from_millis(5))),
                    };
                let a = s.handle(input, now);
                let e = a.iter().filter(|x| matches!(x, Action::Exit(_))).count();
                if e > 0 {
                    assert_eq!(a.last().map(|x| matches!(x, Action::Exit(_))), Some(true));
                }
                exits += e;
                assert!(exits <= 1);
                // A pid belongs to at most one service.
                let mut pids: Vec<i32> =
                    s.services().iter().filter_map(|x| x.state.pid()).collect();
                let n = pids.len();
                pids.sort();
                pids.dedup();
                assert_eq!(n, pids.len(), "a pid shared by two services");
            }
        }
    }
}
