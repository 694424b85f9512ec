//! The supervisor: keel's decisions, as a pure function from `(state, input, now)` to actions.
//!
//! Owns: the main service's state machine, signal routing, the stop timeout, the drain of
//! stragglers after the main child exits, and keel's exit code.
//! Must not: make syscalls or read the clock. The runtime feeds it [`Input`]s (facts, in the
//! past tense) and performs the [`Action`]s it returns (requests, imperative). That keeps every
//! decision testable without processes, and keeps one place where state changes.
//!
//! A single-command run is a supervisor with one service whose exit ends keel; the
//! multi-service supervisor grows from this shape (more services, restart policies), not
//! beside it.

use crate::duration;
use crate::plan::{Dialect, ForwardTo, KILL_WAIT, Plan, is_stop_request};
use crate::reap::Reaped;
use crate::signals::{self, SigSet};
use crate::spawn::ExecError;
use crate::sys::SysError;
use std::time::Instant;

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
    /// The main child was forked.
    Spawned {
        /// Its pid.
        pid: i32,
        /// keel gave up its controlling terminal for the child's new session; the kernel
        /// then sends SIGHUP and SIGCONT, which are not meant for the child.
        released_tty: bool,
    },
    /// `fork` failed: there is no child.
    SpawnFailed(SysError),
    /// The child reported that it could not exec (it exits with 127/126 next).
    ExecFailed {
        /// The child's pid.
        pid: i32,
        /// Why.
        err: ExecError,
    },
    /// Children were reaped.
    Reaped(Reaped),
    /// A timer armed by [`Action::ArmTimer`] expired.
    Timer(TimerId),
}

/// What the supervisor asks the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fork and exec the main service.
    Spawn,
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
    /// `--stop-timeout` after a stop signal reached the main child.
    StopTimeout,
    /// `--grace` after the main child exited.
    Grace,
    /// The last wait after SIGKILLing stragglers.
    KillWait,
}

/// The main service's state. Data that exists in only one state lives in that variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Main {
    /// Not started yet.
    Idle,
    /// A Spawn was requested; the runtime answers with Spawned or SpawnFailed.
    Spawning,
    /// Running as `pid`; `stop` holds the stop signal received while the stop timeout runs.
    Running { pid: i32, stop: Option<i32> },
    /// Gone: exited, or never started.
    Gone,
}

/// What happens to everything else once the main service is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// The main service still runs.
    No,
    /// Stop signal sent to the stragglers; waiting for them until the grace timer.
    Terminating { code: u8 },
    /// SIGKILL sent; waiting briefly for the kernel to finish them.
    Killing { code: u8 },
    /// Exit requested.
    Done,
}

/// The supervisor's whole state.
pub struct Supervisor {
    plan: Plan,
    main: Main,
    drain: Drain,
    /// Signals to drop once each (the SIGHUP/SIGCONT of a terminal hand-off).
    swallow: SigSet,
}

impl Supervisor {
    /// A supervisor for `plan`, nothing started.
    pub fn new(plan: Plan) -> Supervisor {
        Supervisor {
            plan,
            main: Main::Idle,
            drain: Drain::No,
            swallow: SigSet::EMPTY,
        }
    }

    /// Apply one input. Returns the actions to perform, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.drain == Drain::Done {
            return out;
        }
        match input {
            Input::Booted => {
                if self.main == Main::Idle && self.plan.main.is_some() {
                    self.main = Main::Spawning;
                    out.push(Action::Spawn);
                }
            }
            Input::Spawned { pid, released_tty } => {
                log::debug!("started '{}' as pid {pid}", self.plan.main_name());
                self.main = Main::Running { pid, stop: None };
                if released_tty {
                    self.swallow = SigSet::EMPTY.with(libc::SIGHUP).with(libc::SIGCONT);
                }
            }
            Input::SpawnFailed(err) => {
                log::error!("cannot start '{}': {err}", self.plan.main_name());
                self.main = Main::Gone;
                self.drain = Drain::Done;
                out.push(Action::Exit(1));
            }
            Input::ExecFailed { pid, err } => {
                let prog = self.plan.main_program();
                match self.plan.dialect {
                    Dialect::Keel => log::error!("cannot run '{prog}': {err}"),
                    Dialect::Tini => log::error!("exec {prog} failed: {err}"),
                    Dialect::DumbInit => log::error!("{prog}: {err}"),
                    Dialect::Catatonit => log::error!("failed to exec pid1: {err}"),
                }
                log::debug!("pid {pid} could not exec");
            }
            Input::Signal { signo, from_self } => self.on_signal(signo, from_self, now, &mut out),
            Input::Reaped(r) => self.on_reaped(r, now, &mut out),
            Input::Timer(t) => self.on_timer(t, now, &mut out),
        }
        out
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
        if self.plan.main.is_none() {
            // Pause mode: TERM and INT end keel; everything else is ignored.
            if signo == libc::SIGTERM || signo == libc::SIGINT {
                log::debug!("SIG{} in pause mode: exiting 0", signals::name(signo));
                self.finish(0, out);
            }
            return;
        }
        let sig = self.plan.rewrite.apply(signo);
        if sig == 0 {
            log::debug!("dropping SIG{} (rewritten to 0)", signals::name(signo));
            return;
        }
        match self.main {
            Main::Running { pid, stop } => {
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
                if let (Some(t), None) = (self.plan.stop_timeout, stop)
                    && is_stop_request(signo)
                {
                    self.main = Main::Running {
                        pid,
                        stop: Some(sig),
                    };
                    out.push(Action::ArmTimer(TimerId::StopTimeout, now + t));
                }
            }
            Main::Gone if self.drain != Drain::No => {
                // The main child is gone: whoever is left gets what was sent to keel.
                log::debug!(
                    "forwarding SIG{} to every remaining process",
                    signals::name(sig)
                );
                out.push(Action::SignalAll(sig));
            }
            _ => log::debug!(
                "SIG{} arrived with no process to forward it to",
                signals::name(signo)
            ),
        }
    }

    fn on_reaped(&mut self, r: Reaped, now: Instant, out: &mut Vec<Action>) {
        if self.drain == Drain::Done {
            return;
        }
        for (pid, exit) in &r.exits {
            match self.main {
                Main::Running { pid: main, .. } if main == *pid => {
                    self.main = Main::Gone;
                    let code = self.plan.remap_exit.apply(exit.code());
                    log::info!(
                        "main process {pid} ('{}') ended with {exit}; keel will exit {code}",
                        self.plan.main_name()
                    );
                    out.push(Action::CancelTimer(TimerId::StopTimeout));
                    if self.plan.term_group_on_exit {
                        out.push(Action::Signal {
                            pid: -main,
                            sig: libc::SIGTERM,
                        });
                    }
                    self.start_drain(code, r.none_left, now, out);
                }
                _ if self.plan.warn_on_reap => {
                    log::warn!("Reaped zombie process with pid={pid}");
                }
                _ => log::debug!("reaped pid {pid} ({exit})"),
            }
        }
        if r.none_left {
            match self.drain {
                // Already exited above, in start_drain.
                Drain::Done => {}
                Drain::Terminating { code } | Drain::Killing { code } => {
                    log::debug!("no processes left; exiting {code}");
                    out.push(Action::CancelTimer(TimerId::Grace));
                    out.push(Action::CancelTimer(TimerId::KillWait));
                    self.finish(code, out);
                }
                Drain::No => {}
            }
        }
    }

    /// The main service is gone with exit `code`: stop the rest, gracefully.
    fn start_drain(&mut self, code: u8, none_left: bool, now: Instant, out: &mut Vec<Action>) {
        if none_left || self.plan.grace.is_zero() {
            // Nothing to wait for; or tini's behaviour (grace 0): exit at once, and as PID 1
            // the kernel kills what is left.
            self.finish(code, out);
            return;
        }
        self.drain = Drain::Terminating { code };
        let sig = self.plan.rewrite.apply(libc::SIGTERM);
        if sig != 0 {
            out.push(Action::SignalAll(sig));
        }
        out.push(Action::ArmTimer(TimerId::Grace, now + self.plan.grace));
    }

    fn finish(&mut self, code: u8, out: &mut Vec<Action>) {
        self.drain = Drain::Done;
        out.push(Action::Exit(code));
    }

    fn on_timer(&mut self, t: TimerId, now: Instant, out: &mut Vec<Action>) {
        match (t, self.main, self.drain) {
            (
                TimerId::StopTimeout,
                Main::Running {
                    pid,
                    stop: Some(sig),
                },
                _,
            ) => {
                let timeout = self.plan.stop_timeout.map(duration::display);
                log::warn!(
                    "main process {pid} ('{}') still running {} after SIG{}; sending SIGKILL",
                    self.plan.main_name(),
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
            (TimerId::Grace, _, Drain::Terminating { code }) => {
                log::warn!(
                    "processes still running {} after the main process ended; sending SIGKILL",
                    duration::display(self.plan.grace)
                );
                self.drain = Drain::Killing { code };
                out.push(Action::SignalAll(libc::SIGKILL));
                out.push(Action::ArmTimer(TimerId::KillWait, now + KILL_WAIT));
            }
            (TimerId::KillWait, _, Drain::Killing { code }) => {
                log::warn!(
                    "processes survived SIGKILL for {}; exiting anyway",
                    duration::display(KILL_WAIT)
                );
                self.finish(code, out);
            }
            (t, _, _) => log::debug!("stale timer {t:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;
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

    fn started(s: &mut Supervisor, now: Instant) {
        assert_eq!(s.handle(Input::Booted, now), vec![Action::Spawn]);
        assert!(
            s.handle(
                Input::Spawned {
                    pid: 10,
                    released_tty: false
                },
                now
            )
            .is_empty()
        );
    }

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
            Input::SpawnFailed(SysError {
                op: "fork",
                errno: libc::EAGAIN,
            }),
            now,
        );
        assert_eq!(a, vec![Action::Exit(1)]);
    }
}
