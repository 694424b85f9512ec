//! The runtime: keel's one event loop and the only code that acts on the supervisor's
//! decisions.
//!
//! Owns: the epoll set (the signalfd, exec-status pipes, service output pipes, sd_notify
//! sockets, notification pipes, TCP readiness checks), the timers, every per-service OS
//! resource, and performing [`Action`]s. Sleeps only in `epoll_wait`, with no timeout unless a
//! timer (or a partial log line) is due, so an idle keel never wakes up.
//! Must not: decide anything about services (the supervisor does), or block anywhere but
//! `epoll_wait`.
//!
//! Order within one wake-up: read every signal, then reap every child (exec failures of a
//! reaped child are read first, so the reason is logged before the exit), then readiness
//! messages, then expired timers. Exits are thus applied before any signal, readiness or
//! timer of the same pass: a TERM arriving just after the main child died goes to the
//! stragglers, not to a reaped pid, and a service that said READY=1 and died is not ready.

use crate::cgroup::{Cgroups, Mode as CgroupMode, ServiceCgroup};
use crate::control::{self, ConnId, ControlServer, LogLine, Request as CtlRequest, Response};
use crate::logs::{self, Logs, RecentLine, RelayId, Stream};
use crate::plan::{Isolation, Kind, Limits, Output, Plan, Readiness, ServiceSpec};
use crate::readiness::{Notice, NotifyPipe, NotifySocket, PipeState, TcpProbe};
use crate::reap::{self, Exit};
use crate::service::{ServiceId, State, Want};
use crate::signals::{self, Intake, Received};
use crate::spawn::{self, ChildIo, ExecStatus, ExtraFd, Prepared};
use crate::supervisor::{Action, Input, Note, Request, Supervisor, TimerId};
use crate::sys::{Epoll, SysError};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

// epoll tokens: the high 32 bits say what, the low 32 bits which.
const KIND_SIGNALS: u64 = 0;
/// Exec-status pipes: `1 << 32 | pid`.
const KIND_EXEC: u64 = 1;
// 2 is logs::TOKEN_RANGE.
/// sd_notify sockets: `3 << 32 | service id`.
const KIND_NOTIFY: u64 = 3;
/// Notification-fd pipes: `4 << 32 | service id`.
const KIND_NOTIFY_PIPE: u64 = 4;
/// TCP readiness checks: `5 << 32 | service id`.
const KIND_TCP: u64 = 5;
// 6 and 7 are control::KIND_LISTEN and control::KIND_CONN.
/// A service cgroup's `cgroup.events`, `memory.events` or v1 OOM eventfd:
/// `8 << 32 | service id`.
const KIND_CGROUP: u64 = 8;

fn token(kind: u64, low: u64) -> u64 {
    kind << 32 | (low & 0xffff_ffff)
}

/// keel's runtime directory (sockets): `$KEEL_RUNTIME_DIR`, default `/run/keel`.
fn runtime_dir() -> PathBuf {
    control::runtime_dir(&|k| std::env::var_os(k))
}

/// How long keel waits at exit for its outputs to take the last service lines.
const FINAL_FLUSH: Duration = Duration::from_millis(500);

/// A child whose exec-status pipe is still open.
struct Pending {
    pid: i32,
    pipe: OwnedFd,
}

/// A readiness check attempt in flight.
enum ProbeRun {
    /// The check command runs as `pid`.
    Exec { pid: i32 },
    /// A connection attempt.
    Tcp(TcpProbe),
}

/// Where a service's stdout and stderr go, set up once and kept across restarts.
struct OutputFds {
    /// The `output` setting these were made for (a reload may change it).
    made_for: Output,
    /// The child's fd 1 (`None`: keel's own).
    stdout: Option<OwnedFd>,
    /// The child's fd 2 (`None`: keel's own).
    stderr: Option<OwnedFd>,
    /// The relays behind the pipes, in prefix mode.
    relays: Vec<RelayId>,
}

/// Every OS resource keel holds for one service.
#[derive(Default)]
struct Slot {
    output: Option<OutputFds>,
    notify: Option<NotifySocket>,
    notify_pipe: Option<NotifyPipe>,
    probe: Option<ProbeRun>,
    /// The cgroup of the current (or the last) run, kept until it is empty and removed.
    cgroup: Option<ServiceCgroup>,
    /// The limits that cgroup was made with.
    cgroup_limits: Limits,
    /// What the last run left in its cgroup was killed (once per run).
    leftovers_killed: bool,
    /// The limits this service's cgroup could not apply were reported (once).
    skipped_reported: bool,
    /// Released after the service was retired by a reload.
    released: bool,
}

/// Everything the loop owns.
pub struct Runtime {
    epoll: Epoll,
    intake: Intake,
    supervisor: Supervisor,
    /// The main command, ready to exec (`None` without one).
    main_cmd: Option<Prepared>,
    release_cwd: bool,
    timers: Vec<(Instant, TimerId)>,
    pending: Vec<Pending>,
    is_pid1: bool,
    my_pid: i32,
    /// Services mode: the configuration paths to read again on reload.
    config: Option<Vec<PathBuf>>,
    /// keel's environment, captured once: every service starts from it.
    keel_env: Vec<(OsString, OsString)>,
    slots: Vec<Slot>,
    /// Exec readiness checks: pid → (service, cancelled).
    probes: Vec<(i32, ServiceId, bool)>,
    /// The output relay, made when the first service in prefix mode starts.
    logs: Option<Logs>,
    dev_null: Option<OwnedFd>,
    /// The control socket (services mode), if it could be bound.
    control: Option<ControlServer>,
    /// `keel ctl wait-ready` requests not answered yet.
    waiters: Vec<Waiter>,
    /// `keel ctl logs -f` connections.
    followers: Vec<Follower>,
    /// The cgroups keel manages (services mode, when usable).
    cgroups: Option<Cgroups>,
    /// `[keel] cgroups`: with `required`, a service whose cgroup cannot be made does not start.
    cgroup_mode: CgroupMode,
    /// v1 OOM notifications that found no kill counted yet: read again at this time.
    oom_recheck: Option<Instant>,
}

/// A `wait-ready` request: answered when every service in `ids` is ready, or at `deadline`.
struct Waiter {
    conn: ConnId,
    ids: Vec<ServiceId>,
    deadline: Instant,
}

/// A `logs -f` connection: gets every new line of `name` after sequence number `seen`.
struct Follower {
    conn: ConnId,
    name: String,
    seen: u64,
}

/// How long after a v1 OOM notification the kill counters are read again.
const OOM_RECHECK: Duration = Duration::from_millis(100);

/// The longest a `wait-ready` may wait (also when the client gives no timeout).
const WAIT_READY_MAX: Duration = Duration::from_secs(3600);

impl Runtime {
    /// Set up the loop for `plan`. `intake` must already block every signal.
    pub fn new(
        plan: Plan,
        intake: Intake,
        main_cmd: Option<Prepared>,
    ) -> Result<Runtime, SysError> {
        let epoll = Epoll::new()?;
        epoll.add(intake.fd(), token(KIND_SIGNALS, 0))?;
        // SAFETY: getpid cannot fail.
        let my_pid = unsafe { libc::getpid() };
        let config = plan.config.clone();
        let cgroup_mode = plan.cgroups;
        Ok(Runtime {
            epoll,
            intake,
            release_cwd: plan.release_cwd,
            supervisor: Supervisor::new(plan),
            main_cmd,
            timers: Vec::new(),
            pending: Vec::new(),
            is_pid1: my_pid == 1,
            my_pid,
            keel_env: if config.is_some() {
                spawn::keel_env()
            } else {
                Vec::new()
            },
            config,
            slots: Vec::new(),
            probes: Vec::new(),
            logs: None,
            dev_null: None,
            control: None,
            waiters: Vec::new(),
            followers: Vec::new(),
            cgroups: None,
            cgroup_mode,
            oom_recheck: None,
        })
    }

    /// Give every service its own cgroup from now on (set up by [`Cgroups::setup`] before
    /// anything was forked).
    pub fn use_cgroups(&mut self, cgroups: Cgroups) {
        self.cgroups = Some(cgroups);
    }

    /// Serve `keel ctl` on `$KEEL_RUNTIME_DIR/control.sock` (services mode), to root, keel's
    /// own user, and members of `allowed_gid`. A failure costs only the control interface.
    pub fn serve_control(&mut self, allowed_gid: Option<u32>) {
        let path = control::default_socket(&|k| std::env::var_os(k));
        match ControlServer::bind(&path, allowed_gid, &self.epoll) {
            Ok(c) => {
                log::debug!("control socket {}", path.display());
                self.control = Some(c);
            }
            Err(e) => log::warn!(
                "no control socket ({}: {e}); `keel ctl` will not reach this keel",
                path.display()
            ),
        }
    }

    /// Run until the supervisor asks to exit; returns keel's exit code.
    pub fn run(mut self) -> u8 {
        let mut inputs: VecDeque<Input> = VecDeque::from([Input::Booted]);
        let mut ready = Vec::new();
        let mut received = Vec::new();
        loop {
            while let Some(input) = inputs.pop_front() {
                let actions = self.supervisor.handle(input, Instant::now());
                for action in actions {
                    if let Some(code) = self.perform(action, &mut inputs) {
                        return self.exit(code);
                    }
                }
            }
            self.release_retired();
            self.settle_cgroups();
            let timeout = self.timeout_ms(Instant::now());
            if let Err(e) = self.epoll.wait(&mut ready, timeout) {
                // Only a bug can get here (EBADF, EINVAL). Leave no process behind.
                log::error!("{e}; killing every process and exiting");
                self.signal_all(libc::SIGKILL);
                return self.exit(1);
            }
            // `inputs` is empty here. Rebuild it in the documented order: exec failures,
            // then exits, then signals, then readiness, then timers.
            let mut reap = false;
            let mut signal_inputs = Vec::new();
            let mut ready_inputs = Vec::new();
            let now = Instant::now();
            for &tok in &ready {
                let low = tok & 0xffff_ffff;
                match tok >> 32 {
                    KIND_SIGNALS => {
                        received.clear();
                        if let Err(e) = self.intake.drain(&mut received) {
                            log::error!("{e}");
                        }
                        for r in &received {
                            if r.signo == libc::SIGCHLD {
                                reap = true;
                            } else {
                                signal_inputs.push(self.classify(r));
                            }
                        }
                    }
                    KIND_EXEC => self.check_exec(low as u32 as i32, &mut inputs),
                    KIND_NOTIFY => self.read_notify(low as ServiceId, &mut ready_inputs),
                    KIND_NOTIFY_PIPE => self.read_notify_pipe(low as ServiceId, &mut ready_inputs),
                    KIND_TCP => self.finish_tcp(low as ServiceId, &mut ready_inputs),
                    // Before the exits of this pass: an OOM kill must be known when the
                    // killed main process's exit is judged.
                    KIND_CGROUP => self.read_cgroup_events(low as ServiceId, &mut inputs),
                    _ if ControlServer::owns(tok) => {
                        if let Some(c) = self.control.as_mut() {
                            let reqs = c.on_event(&self.epoll, tok, now);
                            for (conn, req) in reqs {
                                self.on_control(conn, req, &mut ready_inputs);
                            }
                        }
                    }
                    _ if logs::owns(tok) => {
                        if let Some(l) = self.logs.as_mut()
                            && let Err(e) = l.on_event(&self.epoll, tok, now)
                        {
                            log::debug!("service output: {e}");
                        }
                    }
                    _ => log::debug!("unknown epoll token {tok:#x}"),
                }
            }
            if reap {
                self.reap(&mut inputs);
            }
            inputs.extend(signal_inputs);
            inputs.extend(ready_inputs);
            let now = Instant::now();
            if self.oom_recheck.is_some_and(|at| at <= now) {
                self.oom_recheck = None;
                for id in 0..self.slots.len() {
                    self.read_cgroup_events(id, &mut inputs);
                }
                // Checked once: a notification with no kill (an OOM the kernel resolved
                // without killing) does not keep keel waking up.
                self.oom_recheck = None;
            }
            let (due, later): (Vec<_>, Vec<_>) = self.timers.iter().partition(|(at, _)| *at <= now);
            self.timers = later;
            inputs.extend(due.into_iter().map(|(_, t)| Input::Timer(t)));
            if let Some(l) = self.logs.as_mut()
                && l.next_deadline().is_some_and(|d| d <= now)
                && let Err(e) = l.on_timer(&self.epoll, now)
            {
                log::debug!("service output: {e}");
            }
            if let Some(c) = self.control.as_mut()
                && c.next_deadline().is_some_and(|d| d <= now)
            {
                c.on_timer(&self.epoll, now);
            }
            self.answer_waiters(now);
            self.feed_followers();
        }
    }

    /// Last words: every service line still in a pipe goes out, sockets are removed.
    fn exit(&mut self, code: u8) -> u8 {
        if let Some(l) = self.logs.as_mut()
            && !l.flush_all(Instant::now() + FINAL_FLUSH)
        {
            log::warn!("some service output could not be written before exit");
        }
        // Every service is down: what is left of their cgroups goes.
        for slot in &mut self.slots {
            if let Some(mut cg) = slot.cgroup.take() {
                if cg.populated()
                    && let Err(e) = cg.kill()
                {
                    log::warn!("{}: {e}", cg.name());
                }
                if let Err(e) = cg.remove() {
                    log::debug!("{}: cgroup left behind: {e}", cg.name());
                }
            }
        }
        // Dropping the slots unlinks the notify sockets.
        self.slots.clear();
        code
    }

    /// Turn a received signal into an input, or die of a genuine fault.
    fn classify(&self, r: &Received) -> Input {
        if signals::is_fault(r.signo) && !r.is_sent() {
            // A fault the kernel reported about keel itself, asynchronously (e.g. a machine
            // check). keel's memory cannot be trusted: die of it, as the default action would.
            log::error!(
                "received SIG{} (code {}) from the kernel: keel itself is faulting",
                signals::name(r.signo),
                r.code
            );
            signals::die_of(r.signo);
        }
        let from_self = r.code == 0 && r.pid as i32 == self.my_pid;
        Input::Signal {
            signo: r.signo,
            from_self,
        }
    }

    fn reap(&mut self, inputs: &mut VecDeque<Input>) {
        match reap::reap_all() {
            Ok(mut r) => {
                // A SIGKILL may be the OOM killer's, and its event may not have been seen
                // yet: read the cgroups' events now, so the exit is judged as an OOM kill.
                if r.exits
                    .iter()
                    .any(|(_, e)| *e == Exit::Signal(libc::SIGKILL))
                {
                    for id in 0..self.slots.len() {
                        self.read_cgroup_events(id, inputs);
                    }
                }
                // Exec failures first, so the reason is logged before the exit it causes.
                let mut front = Vec::new();
                for (pid, _) in &r.exits {
                    if let Some(input) = self.take_exec_status(*pid) {
                        front.push(input);
                    }
                }
                inputs.extend(front);
                // Readiness checks are the runtime's own children: their exit is a verdict.
                let mut verdicts = Vec::new();
                r.exits.retain(|(pid, exit)| {
                    let Some(i) = self.probes.iter().position(|(p, _, _)| p == pid) else {
                        return true;
                    };
                    let (_, id, cancelled) = self.probes.swap_remove(i);
                    if let Some(slot) = self.slots.get_mut(id)
                        && matches!(slot.probe, Some(ProbeRun::Exec { pid: p }) if p == *pid)
                    {
                        slot.probe = None;
                    }
                    if !cancelled {
                        verdicts.push(if *exit == Exit::Code(0) {
                            Input::Ready(id)
                        } else {
                            log::debug!("readiness check of service {id} ended with {exit}");
                            Input::ProbeFailed(id)
                        });
                    }
                    false
                });
                inputs.push_back(Input::Reaped(r));
                inputs.extend(verdicts);
            }
            Err(e) => log::error!("{e}"),
        }
    }

    /// Read a child's exec-status pipe when epoll says it is ready.
    fn check_exec(&mut self, pid: i32, inputs: &mut VecDeque<Input>) {
        let Some(i) = self.pending.iter().position(|p| p.pid == pid) else {
            return;
        };
        match spawn::read_status(&self.pending[i].pipe) {
            Ok(ExecStatus::Pending) => {}
            Ok(ExecStatus::Started) => {
                log::trace!("pid {pid} exec'd");
                self.forget_pending(i);
            }
            Ok(ExecStatus::Failed(err)) => {
                self.forget_pending(i);
                if let Some(input) = self.exec_failed(pid, err) {
                    inputs.push_back(input);
                }
            }
            Err(e) => {
                log::warn!("{e}");
                self.forget_pending(i);
            }
        }
    }

    /// For a reaped child: whatever its exec-status pipe still holds.
    fn take_exec_status(&mut self, pid: i32) -> Option<Input> {
        let i = self.pending.iter().position(|p| p.pid == pid)?;
        let status = spawn::read_status(&self.pending[i].pipe);
        self.forget_pending(i);
        match status {
            Ok(ExecStatus::Failed(err)) => self.exec_failed(pid, err),
            _ => None,
        }
    }

    /// An exec failure: the supervisor's, unless it is a readiness check's.
    fn exec_failed(&self, pid: i32, err: spawn::ExecError) -> Option<Input> {
        if let Some((_, id, _)) = self.probes.iter().find(|(p, _, _)| *p == pid) {
            let name = self.supervisor.service(*id).map_or("?", |s| &s.spec.name);
            log::warn!("{name}: cannot run its readiness check: {err}");
            return None;
        }
        Some(Input::ExecFailed { pid, err })
    }

    fn forget_pending(&mut self, i: usize) {
        let p = self.pending.swap_remove(i);
        if let Err(e) = self.epoll.remove(p.pipe.as_raw_fd()) {
            log::debug!("{e}");
        }
    }

    fn timeout_ms(&self, now: Instant) -> i32 {
        let logs = self.logs.as_ref().and_then(|l| l.next_deadline());
        let control = self.control.as_ref().and_then(|c| c.next_deadline());
        let waiters = self.waiters.iter().map(|w| w.deadline).min();
        match self
            .timers
            .iter()
            .map(|(at, _)| *at)
            .chain(logs)
            .chain(control)
            .chain(waiters)
            .chain(self.oom_recheck)
            .min()
        {
            None => -1,
            Some(at) => {
                let d = at.saturating_duration_since(now);
                // Round up: waking a hair early would only spin once more.
                let ms = d.as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as i32
            }
        }
    }

    /// Perform one action. Returns the exit code when the action is Exit.
    fn perform(&mut self, action: Action, inputs: &mut VecDeque<Input>) -> Option<u8> {
        match action {
            Action::Spawn(id) => {
                let input = if Some(id) == self.supervisor.main() {
                    self.spawn_main(id)
                } else {
                    self.spawn_service(id)
                };
                inputs.push_front(input);
            }
            Action::Probe(id) => {
                if let Some(input) = self.start_probe(id) {
                    inputs.push_back(input);
                }
            }
            Action::CancelProbe(id) => self.cancel_probe(id),
            Action::Signal { pid, sig } => {
                // SAFETY: plain syscall.
                if unsafe { libc::kill(pid, sig) } != 0 {
                    let e = SysError::last("kill");
                    if e.errno == libc::ESRCH {
                        log::debug!("pid {pid} already gone for SIG{}", signals::name(sig));
                    } else {
                        log::warn!("cannot send SIG{} to {pid}: {e}", signals::name(sig));
                    }
                }
            }
            Action::SignalAll(sig) => {
                self.signal_all(sig);
                // With no process left at all no SIGCHLD will come: a reaping pass now says
                // so (ECHILD), and the drain ends at once instead of at its timer.
                self.reap(inputs);
            }
            Action::StopSelf => {
                log::debug!("stopping keel itself after a terminal stop signal");
                // SAFETY: plain syscall. keel resumes on SIGCONT (and forwards it).
                unsafe { libc::kill(self.my_pid, libc::SIGSTOP) };
            }
            Action::Reload => {
                let result = self.reload();
                if let (Ok(specs), Some(logs)) = (&result, self.logs.as_mut()) {
                    // Keep the prefix column wide enough for every service of the new set.
                    logs.set_names(
                        specs
                            .iter()
                            .filter(|s| s.output == Output::Prefix)
                            .map(|s| s.name.as_str()),
                    );
                }
                inputs.push_back(Input::Reloaded(result));
            }
            Action::ArmTimer(t, at) => {
                self.timers.retain(|(_, x)| *x != t);
                self.timers.push((at, t));
            }
            Action::CancelTimer(t) => self.timers.retain(|(_, x)| *x != t),
            Action::Exit(code) => return Some(code),
        }
        None
    }

    /// The main command: keel's own stdio and terminal, as in single-command mode.
    fn spawn_main(&mut self, id: ServiceId) -> Input {
        if let Some(spec) = self.supervisor.service(id).map(|s| s.spec.clone())
            && let Err(err) = self.prepare_cgroup(id, &spec)
        {
            return Input::SpawnFailed { id, err };
        }
        let Some(cmd) = self.main_cmd.as_mut() else {
            return Input::SpawnFailed {
                id,
                err: "no command prepared".into(),
            };
        };
        let (give_terminal, released_tty) = match cmd.isolation() {
            Isolation::ProcessGroup => (spawn::owns_terminal(), false),
            Isolation::Session => (false, spawn::release_terminal()),
        };
        let cgroup = self.slots.get(id).and_then(|s| s.cgroup.as_ref());
        let spawned = match cgroup {
            Some(cg) => spawn::spawn_in_cgroup(
                cmd,
                &self.intake.inherited,
                give_terminal,
                &ChildIo::INHERIT,
                &cg.join(),
            ),
            None => spawn::spawn(cmd, &self.intake.inherited, give_terminal),
        };
        match spawned {
            Ok(child) => {
                self.watch_exec(child.pid, child.status);
                if self.release_cwd {
                    // Do not pin the working directory's mount (podman unmounts it).
                    // SAFETY: the path is a valid C string.
                    if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
                        log::debug!("{}", SysError::last("chdir(/)"));
                    }
                }
                Input::Spawned {
                    id,
                    pid: child.pid,
                    released_tty,
                }
            }
            Err(e) => Input::SpawnFailed {
                id,
                err: e.to_string(),
            },
        }
    }

    fn watch_exec(&mut self, pid: i32, pipe: OwnedFd) {
        if let Err(e) = self
            .epoll
            .add(pipe.as_raw_fd(), token(KIND_EXEC, pid as u32 as u64))
        {
            log::warn!("{e}");
        }
        self.pending.push(Pending { pid, pipe });
    }

    fn slot(&mut self, id: ServiceId) -> &mut Slot {
        if self.slots.len() <= id {
            self.slots.resize_with(id + 1, Slot::default);
        }
        &mut self.slots[id]
    }

    /// A configured service: its own stdio, environment, readiness channel and identity.
    fn spawn_service(&mut self, id: ServiceId) -> Input {
        let Some(spec) = self.supervisor.service(id).map(|s| s.spec.clone()) else {
            return Input::SpawnFailed {
                id,
                err: "unknown service".into(),
            };
        };
        match self.try_spawn_service(id, &spec) {
            Ok(pid) => Input::Spawned {
                id,
                pid,
                released_tty: false,
            },
            Err(err) => Input::SpawnFailed { id, err },
        }
    }

    fn try_spawn_service(&mut self, id: ServiceId, spec: &ServiceSpec) -> Result<i32, String> {
        self.ensure_output(id, spec)?;
        let mut extra_env = Vec::new();
        if spec.kind == Kind::Notify || spec.ready == Readiness::SdNotify {
            let sock = self.ensure_notify(id, spec)?;
            extra_env.push((OsString::from("NOTIFY_SOCKET"), sock));
        }
        let mut notify_write: Option<OwnedFd> = None;
        let mut extra = None;
        if let Readiness::NotifyFd(n) = spec.ready {
            let (pipe, write) = NotifyPipe::new().map_err(|e| e.to_string())?;
            let old = self.slot(id).notify_pipe.take();
            if let Some(old) = old {
                let _ = self.epoll.remove(old.fd());
            }
            self.epoll
                .add(pipe.fd(), token(KIND_NOTIFY_PIPE, id as u64))
                .map_err(|e| e.to_string())?;
            extra = Some(ExtraFd {
                source: write.as_raw_fd(),
                target: n,
            });
            self.slot(id).notify_pipe = Some(pipe);
            notify_write = Some(write);
        }
        let mut cmd = Prepared::service(spec, &self.keel_env, &extra_env)?;
        let io = self.child_io(id, spec, extra)?;
        self.prepare_cgroup(id, spec)?;
        let cgroup = self.slots.get(id).and_then(|s| s.cgroup.as_ref());
        let child = match cgroup {
            Some(cg) => {
                spawn::spawn_in_cgroup(&mut cmd, &self.intake.inherited, false, &io, &cg.join())
            }
            None => spawn::spawn_with(&mut cmd, &self.intake.inherited, false, &io),
        }
        .map_err(|e| e.to_string())?;
        // keel's copy of the notification pipe's write end must go, or the pipe never
        // reports the service closing it.
        drop(notify_write);
        self.watch_exec(child.pid, child.status);
        Ok(child.pid)
    }

    /// The child's stdio for a service (or one of its readiness checks).
    fn child_io(
        &mut self,
        id: ServiceId,
        spec: &ServiceSpec,
        extra: Option<ExtraFd>,
    ) -> Result<ChildIo, String> {
        let stdin = if spec.output == Output::Inherit {
            None
        } else {
            if self.dev_null.is_none() {
                self.dev_null = Some(spawn::open_dev_null().map_err(|e| e.to_string())?);
            }
            self.dev_null.as_ref().map(|f| f.as_raw_fd())
        };
        let out = self.slots.get(id).and_then(|s| s.output.as_ref());
        Ok(ChildIo {
            stdin,
            stdout: out.and_then(|o| o.stdout.as_ref()).map(|f| f.as_raw_fd()),
            stderr: out.and_then(|o| o.stderr.as_ref()).map(|f| f.as_raw_fd()),
            extra,
        })
    }

    /// Make (once, and again if a reload changed `output`) where a service's output goes.
    fn ensure_output(&mut self, id: ServiceId, spec: &ServiceSpec) -> Result<(), String> {
        if self
            .slots
            .get(id)
            .and_then(|s| s.output.as_ref())
            .is_some_and(|o| o.made_for == spec.output)
        {
            return Ok(());
        }
        self.drop_output(id);
        let fds = match &spec.output {
            Output::Inherit => OutputFds {
                made_for: Output::Inherit,
                stdout: None,
                stderr: None,
                relays: Vec::new(),
            },
            Output::File(path) => {
                let f = spawn::open_output_file(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let f2 = f
                    .try_clone()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                OutputFds {
                    made_for: spec.output.clone(),
                    stdout: Some(f),
                    stderr: Some(f2),
                    relays: Vec::new(),
                }
            }
            Output::Prefix => {
                if self.logs.is_none() {
                    let mut logs = Logs::stdio();
                    logs.set_names(self.prefixed_names().iter().map(String::as_str));
                    self.logs = Some(logs);
                }
                let Some(logs) = self.logs.as_mut() else {
                    return Err("no output relay".into());
                };
                let (r1, w1) = logs
                    .add(&self.epoll, &spec.name, Stream::Stdout)
                    .map_err(|e| e.to_string())?;
                let (r2, w2) = match logs.add(&self.epoll, &spec.name, Stream::Stderr) {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = logs.remove(&self.epoll, r1, Instant::now());
                        return Err(e.to_string());
                    }
                };
                OutputFds {
                    made_for: Output::Prefix,
                    stdout: Some(w1),
                    stderr: Some(w2),
                    relays: vec![r1, r2],
                }
            }
        };
        self.slot(id).output = Some(fds);
        Ok(())
    }

    fn drop_output(&mut self, id: ServiceId) {
        let Some(old) = self.slots.get_mut(id).and_then(|s| s.output.take()) else {
            return;
        };
        if let Some(l) = self.logs.as_mut() {
            for r in old.relays {
                if let Err(e) = l.remove(&self.epoll, r, Instant::now()) {
                    log::debug!("service output: {e}");
                }
            }
        }
    }

    /// The service's sd_notify socket (made once); returns the NOTIFY_SOCKET value.
    fn ensure_notify(&mut self, id: ServiceId, spec: &ServiceSpec) -> Result<OsString, String> {
        if let Some(s) = self.slots.get(id).and_then(|s| s.notify.as_ref()) {
            return Ok(s.env_value());
        }
        let owner = spec.credentials.as_ref().map(|c| (c.uid, c.gid));
        // sd_notify sockets live in <runtime dir>/notify (an abstract address is used when it
        // is not writable).
        let dir = runtime_dir().join("notify");
        let sock = NotifySocket::bind(&dir, &spec.name, owner)
            .map_err(|e| format!("notify socket: {e}"))?;
        self.epoll
            .add(sock.fd(), token(KIND_NOTIFY, id as u64))
            .map_err(|e| e.to_string())?;
        let value = sock.env_value();
        self.slot(id).notify = Some(sock);
        Ok(value)
    }

    fn read_notify(&mut self, id: ServiceId, inputs: &mut Vec<Input>) {
        let Some(sock) = self.slots.get(id).and_then(|s| s.notify.as_ref()) else {
            return;
        };
        let mut grams = Vec::new();
        if let Err(e) = sock.recv_all(&mut grams) {
            log::debug!("notify socket: {e}");
        }
        for g in grams {
            for n in g.notices {
                let input = match n {
                    Notice::Ready => Input::Ready(id),
                    Notice::Status(s) => Input::Notified(id, Note::Status(s)),
                    Notice::Stopping => Input::Notified(id, Note::Stopping),
                    Notice::MainPid(p) => Input::Notified(id, Note::MainPid(p)),
                    Notice::Watchdog => Input::Notified(id, Note::Watchdog),
                    Notice::WatchdogTrigger => Input::Notified(id, Note::WatchdogTrigger),
                    Notice::WatchdogUsec(u) => {
                        Input::Notified(id, Note::WatchdogTimeout(Duration::from_micros(u)))
                    }
                    // RELOADING, EXTEND_TIMEOUT_USEC, ERRNO: nothing keel acts on.
                    _ => continue,
                };
                inputs.push(input);
            }
        }
    }

    fn read_notify_pipe(&mut self, id: ServiceId, inputs: &mut Vec<Input>) {
        let Some(pipe) = self.slots.get(id).and_then(|s| s.notify_pipe.as_ref()) else {
            return;
        };
        let state = match pipe.read() {
            Ok(s) => s,
            Err(e) => {
                log::debug!("notification pipe: {e}");
                PipeState::Closed
            }
        };
        match state {
            PipeState::Nothing => return,
            PipeState::Ready => inputs.push(Input::Ready(id)),
            PipeState::Closed => {
                let name = self.supervisor.service(id).map_or("?", |s| &s.spec.name);
                log::warn!("{name} closed its notification fd without saying it is ready");
            }
        }
        if let Some(p) = self.slots.get_mut(id).and_then(|s| s.notify_pipe.take()) {
            let _ = self.epoll.remove(p.fd());
        }
    }

    /// Start one readiness check attempt; an immediate verdict is returned.
    fn start_probe(&mut self, id: ServiceId) -> Option<Input> {
        self.cancel_probe(id);
        let spec = self.supervisor.service(id)?.spec.clone();
        match &spec.ready {
            Readiness::Tcp { addr, .. } => match TcpProbe::start(*addr) {
                Ok(p) => {
                    if let Err(e) = self.epoll.add_events(
                        p.fd(),
                        token(KIND_TCP, id as u64),
                        libc::EPOLLOUT as u32,
                    ) {
                        log::warn!("{}: readiness check: {e}", spec.name);
                        return Some(Input::ProbeFailed(id));
                    }
                    self.slot(id).probe = Some(ProbeRun::Tcp(p));
                    None
                }
                Err(e) => {
                    log::debug!("{}: connect to {addr}: {e}", spec.name);
                    Some(Input::ProbeFailed(id))
                }
            },
            Readiness::Exec { argv, .. } => {
                let mut check = spec.clone();
                check.argv = argv.clone();
                let started = Prepared::service(&check, &self.keel_env, &[]).and_then(|mut cmd| {
                    let io = self.child_io(id, &spec, None)?;
                    spawn::spawn_with(&mut cmd, &self.intake.inherited, false, &io)
                        .map_err(|e| e.to_string())
                });
                match started {
                    Ok(child) => {
                        self.watch_exec(child.pid, child.status);
                        self.probes.push((child.pid, id, false));
                        self.slot(id).probe = Some(ProbeRun::Exec { pid: child.pid });
                        None
                    }
                    Err(e) => {
                        log::warn!("{}: cannot start its readiness check: {e}", spec.name);
                        Some(Input::ProbeFailed(id))
                    }
                }
            }
            _ => None,
        }
    }

    fn cancel_probe(&mut self, id: ServiceId) {
        match self.slots.get_mut(id).and_then(|s| s.probe.take()) {
            Some(ProbeRun::Tcp(p)) => {
                let _ = self.epoll.remove(p.fd());
            }
            Some(ProbeRun::Exec { pid }) => {
                if let Some(p) = self.probes.iter_mut().find(|(p, _, _)| *p == pid) {
                    p.2 = true;
                }
                // SAFETY: plain syscall; the pid is an unreaped child of keel, so it cannot
                // have been reused.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            None => {}
        }
    }

    fn finish_tcp(&mut self, id: ServiceId, inputs: &mut Vec<Input>) {
        let Some(ProbeRun::Tcp(p)) = self.slots.get_mut(id).and_then(|s| s.probe.take()) else {
            return;
        };
        let _ = self.epoll.remove(p.fd());
        match p.finish() {
            Ok(()) => inputs.push(Input::Ready(id)),
            Err(e) => {
                log::debug!("service {id}: connect to {}: {e}", p.addr());
                inputs.push(Input::ProbeFailed(id));
            }
        }
    }

    /// Reading the configuration again (SIGHUP, `keel ctl reload`): the new service set,
    /// fully validated (including what only spawning would otherwise find), or why not.
    fn reload(&self) -> Result<Vec<ServiceSpec>, String> {
        let paths = self.config.clone().unwrap_or_default();
        let files = crate::config::discover(&paths)
            .map_err(|e| one_line(&e.to_string()))?
            .ok_or_else(|| "the configuration files are gone".to_string())?;
        let config = crate::config::load(&files).map_err(|e| one_line(&e.to_string()))?;
        check_services(&config.services, &self.keel_env)?;
        Ok(config.services)
    }

    /// The names of every live service whose output is prefixed: the prefix column's width.
    fn prefixed_names(&self) -> Vec<String> {
        self.supervisor
            .services()
            .iter()
            .filter(|s| !s.retired && s.spec.output == Output::Prefix)
            .map(|s| s.spec.name.clone())
            .collect()
    }

    /// Free what services removed by a reload held, once they are down.
    fn release_retired(&mut self) {
        let done: Vec<ServiceId> = self
            .supervisor
            .services()
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                s.retired
                    && !s.state.is_active()
                    && self.slots.get(*i).is_some_and(|slot| !slot.released)
            })
            .map(|(i, _)| i)
            .collect();
        for id in done {
            self.cancel_probe(id);
            self.drop_output(id);
            let slot = self.slot(id);
            let notify = slot.notify.take();
            let pipe = slot.notify_pipe.take();
            slot.released = true;
            if let Some(n) = notify {
                let _ = self.epoll.remove(n.fd());
            }
            if let Some(p) = pipe {
                let _ = self.epoll.remove(p.fd());
            }
        }
    }

    /// Before a run starts: the service's cgroup. An immediate restart reuses the empty
    /// cgroup of the last run when its limits are unchanged (one read on the restart path);
    /// otherwise what an earlier run left is killed and the cgroup made afresh, so limits a
    /// reload dropped do not linger. Without usable cgroups: nothing. A cgroup that cannot be
    /// made is an error with `cgroups = "required"`, else a warning and a run without it.
    fn prepare_cgroup(&mut self, id: ServiceId, spec: &ServiceSpec) -> Result<(), String> {
        if self.cgroups.is_none() {
            return Ok(());
        }
        let slot = self.slot(id);
        slot.leftovers_killed = false;
        let populated = slot.cgroup.as_ref().map(ServiceCgroup::populated);
        if populated == Some(false) && slot.cgroup_limits == spec.limits {
            return Ok(());
        }
        if let Some(mut old) = slot.cgroup.take() {
            unwatch_cgroup(&self.epoll, &old);
            if populated == Some(true) {
                log::info!("{}: killing what its last run left behind", spec.name);
                if let Err(e) = old.kill() {
                    log::warn!("{}: {e}", spec.name);
                }
            }
            // Busy while the killed processes exit: then the same directory is used again.
            if let Err(e) = old.remove()
                && !e.is_busy()
            {
                log::debug!("{}: {e}", spec.name);
            }
        }
        let cgroups = self.cgroups.as_ref().ok_or("no cgroups")?;
        let cg = match cgroups.create(&spec.name, &spec.limits) {
            Ok(cg) => cg,
            Err(e) if self.cgroup_mode == CgroupMode::Required => {
                return Err(format!("cannot make its cgroup: {e}"));
            }
            Err(e) => {
                log::warn!(
                    "{}: cannot make its cgroup ({e}); it runs without its limits",
                    spec.name
                );
                return Ok(());
            }
        };
        for (fd, events) in cg.event_fds() {
            if let Err(e) = self
                .epoll
                .add_events(fd, token(KIND_CGROUP, id as u64), events)
            {
                log::warn!("{}: cgroup events: {e}", spec.name);
            }
        }
        let slot = self.slot(id);
        if !cg.skipped.is_empty() && !slot.skipped_reported {
            slot.skipped_reported = true;
            log::warn!(
                "{}: limits NOT applied: {}",
                spec.name,
                cg.skipped.join("; ")
            );
        }
        slot.cgroup = Some(cg);
        slot.cgroup_limits = spec.limits.clone();
        Ok(())
    }

    /// A service's cgroup reported a change: OOM kills become an input; an empty cgroup
    /// of an ended run is removed by [`Runtime::settle_cgroups`] after this pass.
    fn read_cgroup_events(&mut self, id: ServiceId, inputs: &mut VecDeque<Input>) {
        let Some(cg) = self.slots.get_mut(id).and_then(|s| s.cgroup.as_mut()) else {
            return;
        };
        let ev = cg.read_events();
        if ev.new_oom_kills > 0 {
            inputs.push_back(Input::Oom {
                id,
                kills: ev.new_oom_kills,
            });
        } else if cg.oom_needs_recheck() && self.oom_recheck.is_none() {
            // v1 notifies when the OOM starts; the kill is counted a moment later.
            self.oom_recheck = Some(Instant::now() + OOM_RECHECK);
        }
    }

    /// Cgroups of runs that are over: kill what is left in them (daemons that double-forked
    /// or called setsid cannot outlive their service), and remove them once empty (told by
    /// `cgroup.events`, or by the reaping pass on hosts without it).
    fn settle_cgroups(&mut self) {
        for (id, slot) in self.slots.iter_mut().enumerate() {
            let Some(cg) = slot.cgroup.as_mut() else {
                continue;
            };
            let active = self
                .supervisor
                .service(id)
                .is_some_and(|s| s.state.is_active() || s.state == State::Spawning);
            if active {
                continue;
            }
            if cg.populated() {
                if !slot.leftovers_killed {
                    slot.leftovers_killed = true;
                    let n = cg.pids().len();
                    log::info!(
                        "{}: killing {n} process(es) left in its cgroup after it ended",
                        cg.name()
                    );
                    if let Err(e) = cg.kill() {
                        log::warn!("{}: {e}", cg.name());
                    }
                }
                continue;
            }
            unwatch_cgroup(&self.epoll, cg);
            match cg.remove() {
                Ok(()) => log::debug!("{}: cgroup removed", cg.name()),
                // A process entered between the check and the removal (it cannot, short of a
                // bug): the directory stays, and the next run's `create` reuses it.
                Err(e) if e.is_busy() => log::debug!("{}: {e}", cg.name()),
                Err(e) => log::warn!("{}: cannot remove its cgroup: {e}", cg.name()),
            }
            slot.cgroup = None;
        }
    }

    /// Send `sig` to every process keel is responsible for: as PID 1, everything in the
    /// namespace (`kill(-1)` skips keel itself); otherwise every descendant found in /proc.
    fn signal_all(&self, sig: i32) {
        if self.is_pid1 {
            // SAFETY: plain syscall.
            if unsafe { libc::kill(-1, sig) } != 0 {
                let e = SysError::last("kill(-1)");
                if e.errno != libc::ESRCH {
                    log::warn!("cannot send SIG{} to all: {e}", signals::name(sig));
                }
            } else {
                log::info!("sent SIG{} to every remaining process", signals::name(sig));
            }
            return;
        }
        let pids = reap::descendants(self.my_pid);
        log::info!(
            "sending SIG{} to {} remaining process(es)",
            signals::name(sig),
            pids.len()
        );
        for pid in pids {
            // SAFETY: plain syscall.
            if unsafe { libc::kill(pid, sig) } != 0 {
                log::debug!("{}", SysError::last("kill"));
            }
        }
    }
}

impl Runtime {
    /// One `keel ctl` request. Answers at once, except `wait-ready` (later) and requests
    /// that become supervisor inputs (answered once handed over).
    fn on_control(&mut self, conn: ConnId, req: CtlRequest, inputs: &mut Vec<Input>) {
        let resp = match req {
            CtlRequest::Status => Response::Status(self.status()),
            CtlRequest::Health => self.readiness(&self.should_be_ready()),
            CtlRequest::Start(names) | CtlRequest::Stop(names) | CtlRequest::Restart(names)
                if names.is_empty() =>
            {
                Response::Error("name at least one service".into())
            }
            CtlRequest::Start(names) => self.each(&names, Request::Start, inputs),
            CtlRequest::Stop(names) => self.each(&names, Request::Stop, inputs),
            CtlRequest::Restart(names) => self.each(&names, Request::Restart, inputs),
            CtlRequest::Signal { name, sig } => match self.supervisor.find(&name) {
                None => Response::Error(format!("no service named '{name}'")),
                Some(id)
                    if self
                        .supervisor
                        .service(id)
                        .and_then(|s| s.state.pid())
                        .is_none() =>
                {
                    Response::Error(format!("'{name}' is not running"))
                }
                Some(id) => {
                    inputs.push(Input::Request(Request::Signal(id, sig)));
                    Response::Ok
                }
            },
            CtlRequest::Logs { name, n, follow } => {
                if self.supervisor.find(&name).is_none() {
                    Response::Error(format!("no service named '{name}'"))
                } else {
                    let (lines, seen) = match self.logs.as_ref() {
                        Some(l) => (l.recent(&name, n), l.since(&name, u64::MAX).1),
                        None => (Vec::new(), 0),
                    };
                    if follow {
                        self.followers.push(Follower { conn, name, seen });
                    }
                    Response::Logs(lines.into_iter().map(log_line).collect())
                }
            }
            CtlRequest::Reload => {
                if self.supervisor.shutting_down() {
                    Response::Error("shutting down".into())
                } else {
                    let result = self.reload();
                    let resp = match &result {
                        Ok(_) => Response::Ok,
                        Err(e) => Response::Error(format!("configuration rejected: {e}")),
                    };
                    inputs.push(Input::Reloaded(result));
                    resp
                }
            }
            CtlRequest::Shutdown => {
                inputs.push(Input::Request(Request::Shutdown));
                Response::Ok
            }
            CtlRequest::WaitReady { names, timeout_ms } => {
                let ids = if names.is_empty() {
                    Ok(self.should_be_ready())
                } else {
                    names
                        .iter()
                        .map(|n| {
                            self.supervisor
                                .find(n)
                                .ok_or_else(|| format!("no service named '{n}'"))
                        })
                        .collect()
                };
                match ids {
                    Err(e) => Response::Error(e),
                    Ok(ids) => {
                        let wait = timeout_ms
                            .map_or(WAIT_READY_MAX, Duration::from_millis)
                            .min(WAIT_READY_MAX);
                        if let Some(c) = self.control.as_ref() {
                            self.waiters.retain(|w| c.is_open(w.conn));
                        }
                        self.waiters.push(Waiter {
                            conn,
                            ids,
                            deadline: crate::duration::later(Instant::now(), wait),
                        });
                        return;
                    }
                }
            }
        };
        if let Some(c) = self.control.as_mut() {
            c.reply(&self.epoll, conn, &resp);
        }
    }

    /// Resolve every name first: one unknown name fails the whole request, nothing done.
    fn each(
        &self,
        names: &[String],
        f: fn(ServiceId) -> Request,
        inputs: &mut Vec<Input>,
    ) -> Response {
        let mut ids = Vec::new();
        for n in names {
            match self.supervisor.find(n) {
                Some(id) => ids.push(id),
                None => return Response::Error(format!("no service named '{n}'")),
            }
        }
        inputs.extend(ids.into_iter().map(|id| Input::Request(f(id))));
        Response::Ok
    }

    /// Services that should be ready now: wanted up, or failed (a failure is unhealthy).
    fn should_be_ready(&self) -> Vec<ServiceId> {
        self.supervisor
            .services()
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                !s.retired && (s.want == Want::Up || matches!(s.state, State::Failed { .. }))
            })
            .map(|(i, _)| i)
            .collect()
    }

    fn readiness(&self, ids: &[ServiceId]) -> Response {
        let not_ready: Vec<String> = ids
            .iter()
            .filter_map(|&id| self.supervisor.service(id))
            .filter(|s| !matches!(s.state, State::Running { .. } | State::Done))
            .map(|s| s.spec.name.clone())
            .collect();
        Response::Readiness {
            ready: not_ready.is_empty(),
            not_ready,
        }
    }

    fn answer_waiters(&mut self, now: Instant) {
        if self.waiters.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.waiters.len() {
            let resp = self.readiness(&self.waiters[i].ids);
            let done = matches!(resp, Response::Readiness { ready: true, .. })
                || self.waiters[i].deadline <= now;
            if done {
                let w = self.waiters.swap_remove(i);
                if let Some(c) = self.control.as_mut() {
                    c.reply(&self.epoll, w.conn, &resp);
                }
            } else {
                i += 1;
            }
        }
    }

    fn feed_followers(&mut self) {
        let (Some(logs), Some(c)) = (self.logs.as_ref(), self.control.as_mut()) else {
            return;
        };
        self.followers.retain_mut(|f| {
            if !c.is_open(f.conn) {
                return false;
            }
            let (lines, seen) = logs.since(&f.name, f.seen);
            f.seen = seen;
            lines
                .into_iter()
                .all(|l| c.stream(&self.epoll, f.conn, &log_line(l)))
        });
    }

    /// What `keel ctl status` shows.
    fn status(&self) -> Vec<control::ServiceStatus> {
        let now = Instant::now();
        self.supervisor
            .services()
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.retired)
            .map(|(id, s)| {
                // Usage of the run's cgroup while it has one (the last run's until removed).
                let usage = self
                    .slots
                    .get(id)
                    .and_then(|slot| slot.cgroup.as_ref())
                    .map(ServiceCgroup::stats);
                let since = match s.state {
                    State::Starting { since, .. }
                    | State::Running { since, .. }
                    | State::Stopping { since, .. } => Some(since),
                    _ => None,
                };
                control::ServiceStatus {
                    name: s.spec.name.clone(),
                    state: s.state.name().to_string(),
                    pid: s.state.pid(),
                    uptime_ms: since.map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    restarts: s.restarts,
                    last_exit: s.last_exit.map(|e| e.to_string()),
                    ready: matches!(s.state, State::Running { .. } | State::Done),
                    status_text: s.status.clone().or_else(|| match &s.state {
                        State::Failed { reason } => Some(reason.clone()),
                        _ => None,
                    }),
                    memory_bytes: usage.and_then(|u| u.memory_current),
                    cpu_usec: usage.and_then(|u| u.cpu_usage_usec),
                    pids: usage.and_then(|u| u.pids_current),
                    oom_kills: self.cgroups.as_ref().map(|_| s.oom_kills),
                }
            })
            .collect()
    }
}

/// Stop watching a service cgroup's event files.
fn unwatch_cgroup(epoll: &Epoll, cg: &ServiceCgroup) {
    for (fd, _) in cg.event_fds() {
        let _ = epoll.remove(fd);
    }
}

fn log_line(l: RecentLine) -> LogLine {
    LogLine {
        stderr: l.stream == Stream::Stderr,
        text: String::from_utf8_lossy(&l.text).into_owned(),
    }
}

/// What only building a service's exec data finds (a NUL in an argument, a bad environment
/// name), checked for every service before any starts: at start-up and on reload.
pub fn check_services(
    specs: &[ServiceSpec],
    keel_env: &[(OsString, OsString)],
) -> Result<(), String> {
    for s in specs {
        Prepared::service(s, keel_env, &[]).map_err(|e| format!("service {}: {e}", s.name))?;
    }
    Ok(())
}

/// Several configuration errors as one log line.
fn one_line(s: &str) -> String {
    s.lines().collect::<Vec<_>>().join("; ")
}
