//! The runtime: keel's one event loop and the only code that acts on the supervisor's
//! decisions.
//!
//! Owns: the epoll set (the signalfd and every exec-status pipe), the timers, and performing
//! [`Action`]s. Sleeps only in `epoll_wait`, with no timeout unless a timer is armed, so an idle
//! keel never wakes up.
//! Must not: decide anything about services (the supervisor does), or block anywhere but
//! `epoll_wait`.
//!
//! Order within one wake-up: read every signal, then reap every child (exec failures of a
//! reaped child are read first, so the reason is logged before the exit), then expired timers.
//! Exits are thus applied before any signal or timer of the same pass: a TERM arriving just
//! after the main child died goes to the stragglers, not to a reaped pid.

use crate::plan::{Isolation, Plan};
use crate::reap;
use crate::signals::{self, Intake, Received};
use crate::spawn::{self, ExecStatus, Prepared};
use crate::supervisor::{Action, Input, Supervisor, TimerId};
use crate::sys::{Epoll, SysError};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

const TOKEN_SIGNALS: u64 = 0;
/// Exec-status pipes are registered as `TOKEN_EXEC | pid`.
const TOKEN_EXEC: u64 = 1 << 32;

/// A child whose exec-status pipe is still open.
struct Pending {
    pid: i32,
    pipe: OwnedFd,
}

/// Everything the loop owns.
pub struct Runtime {
    epoll: Epoll,
    intake: Intake,
    supervisor: Supervisor,
    /// The main command, ready to exec (`None` in pause mode).
    main_cmd: Option<Prepared>,
    release_cwd: bool,
    timers: Vec<(Instant, TimerId)>,
    pending: Vec<Pending>,
    is_pid1: bool,
    my_pid: i32,
}

impl Runtime {
    /// Set up the loop for `plan`. `intake` must already block every signal.
    pub fn new(
        plan: Plan,
        intake: Intake,
        main_cmd: Option<Prepared>,
    ) -> Result<Runtime, SysError> {
        let epoll = Epoll::new()?;
        epoll.add(intake.fd(), TOKEN_SIGNALS)?;
        // SAFETY: getpid cannot fail.
        let my_pid = unsafe { libc::getpid() };
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
        })
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
                        return code;
                    }
                }
            }
            let timeout = self.timeout_ms(Instant::now());
            if let Err(e) = self.epoll.wait(&mut ready, timeout) {
                // Only a bug can get here (EBADF, EINVAL). Leave no process behind.
                log::error!("{e}; killing every process and exiting");
                self.signal_all(libc::SIGKILL);
                return 1;
            }
            // `inputs` is empty here. Rebuild it in the documented order: exec failures,
            // then exits, then signals, then timers.
            let mut reap = false;
            let mut signal_inputs = Vec::new();
            for &token in &ready {
                if token == TOKEN_SIGNALS {
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
                } else if token & TOKEN_EXEC != 0 {
                    let pid = (token & 0xffff_ffff) as i32;
                    self.check_exec(pid, &mut inputs);
                }
            }
            if reap {
                self.reap(&mut inputs);
            }
            inputs.extend(signal_inputs);
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) = self.timers.iter().partition(|(at, _)| *at <= now);
            self.timers = later;
            inputs.extend(due.into_iter().map(|(_, t)| Input::Timer(t)));
        }
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
            Ok(r) => {
                // Exec failures first, so the reason is logged before the exit it causes.
                let mut front = Vec::new();
                for (pid, _) in &r.exits {
                    if let Some(input) = self.take_exec_status(*pid) {
                        front.push(input);
                    }
                }
                inputs.extend(front);
                inputs.push_back(Input::Reaped(r));
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
                inputs.push_back(Input::ExecFailed { pid, err });
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
            Ok(ExecStatus::Failed(err)) => Some(Input::ExecFailed { pid, err }),
            _ => None,
        }
    }

    fn forget_pending(&mut self, i: usize) {
        let p = self.pending.swap_remove(i);
        if let Err(e) = self.epoll.remove(p.pipe.as_raw_fd()) {
            log::debug!("{e}");
        }
    }

    fn timeout_ms(&self, now: Instant) -> i32 {
        match self.timers.iter().map(|(at, _)| *at).min() {
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
                let cmd = self.main_cmd.as_mut()?;
                let (give_terminal, released_tty) = match cmd.isolation() {
                    Isolation::ProcessGroup => (spawn::owns_terminal(), false),
                    Isolation::Session => (false, spawn::release_terminal()),
                };
                match spawn::spawn(cmd, &self.intake.inherited, give_terminal) {
                    Ok(child) => {
                        let token = TOKEN_EXEC | (child.pid as u32 as u64);
                        if let Err(e) = self.epoll.add(child.status.as_raw_fd(), token) {
                            log::warn!("{e}");
                        }
                        self.pending.push(Pending {
                            pid: child.pid,
                            pipe: child.status,
                        });
                        inputs.push_front(Input::Spawned {
                            id,
                            pid: child.pid,
                            released_tty,
                        });
                        if self.release_cwd {
                            // Do not pin the working directory's mount (podman unmounts it).
                            // SAFETY: the path is a valid C string.
                            if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
                                log::debug!("{}", SysError::last("chdir(/)"));
                            }
                        }
                    }
                    Err(err) => inputs.push_front(Input::SpawnFailed { id, err }),
                }
            }
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
            Action::SignalAll(sig) => self.signal_all(sig),
            Action::StopSelf => {
                log::debug!("stopping keel itself after a terminal stop signal");
                // SAFETY: plain syscall. keel resumes on SIGCONT (and forwards it).
                unsafe { libc::kill(self.my_pid, libc::SIGSTOP) };
            }
            Action::ArmTimer(t, at) => {
                self.timers.retain(|(_, x)| *x != t);
                self.timers.push((at, t));
            }
            Action::CancelTimer(t) => self.timers.retain(|(_, x)| *x != t),
            Action::Exit(code) => return Some(code),
            Action::Probe(_) | Action::CancelProbe(_) | Action::Reload => {}
        }
        None
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
