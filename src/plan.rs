//! The plan: everything a front-end (keel's command line today; the tini and dumb-init
//! personalities and config files next) decides, and all the engine needs to run.
//!
//! Owns: the data types, their defaults and the exit-code and signal mapping rules.
//! Must not: touch the OS. Front-ends only ever produce a `Plan`; no front-end has a loop.

use crate::signals::{self, SigSet};
use std::ffi::OsString;
use std::time::Duration;

/// Where forwarded signals go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardTo {
    /// The main child's pid only (tini's default).
    Child,
    /// The main child's whole process group (`-g`, `kill(-pgid)`).
    Group,
}

/// How a child process is set up relative to keel's session and terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// A new process group in keel's session; it becomes the terminal's foreground group
    /// when keel's own group was (so `docker run -it` gets job control and ^C).
    ProcessGroup,
    /// A new session (dumb-init's default): keel gives up its controlling terminal first
    /// (`TIOCNOTTY`) and the child takes it (`TIOCSCTTY`).
    Session,
}

/// Whose conventions keel's messages and exit codes follow: keel's own, or those of the init
/// it stands in for, so that scripts parsing them keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `keel: ...` lines; exec failure 127/126.
    Keel,
    /// `[WARN  tini (PID)] ...`; exec failure 127/126.
    Tini,
    /// `[dumb-init] ...`; exec failure `[dumb-init] CMD: strerror`, exit 2.
    DumbInit,
    /// `ERROR (catatonit:PID): ...`; exec failure exit 1.
    Catatonit,
}

impl Dialect {
    /// The exit code of a child whose exec failed, when the dialect fixes one (otherwise
    /// 127 for not found, 126 for not executable).
    pub fn exec_failure_code(self) -> Option<u8> {
        match self {
            Dialect::Keel | Dialect::Tini => None,
            Dialect::DumbInit => Some(2),
            Dialect::Catatonit => Some(1),
        }
    }
}

/// What keel does when it is not PID 1 (so orphans would not come back to it by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotPid1 {
    /// Become a child subreaper; a failure is a warning (keel, and tini with `-s`).
    Subreaper,
    /// Become a child subreaper or exit 1 (catatonit).
    SubreaperOrFail,
    /// Warn that zombie reaping will not work, unless already a subreaper (tini without `-s`).
    Warn,
    /// Nothing (dumb-init).
    Nothing,
}

/// One process keel runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Name used in logs.
    pub name: String,
    /// Program and arguments; `argv[0]` is looked up in `PATH` as execvp does.
    pub argv: Vec<OsString>,
    /// Process group and terminal handling.
    pub isolation: Isolation,
}

/// Exit-code remapping (`--remap-exit FROM:TO`), applied after 128+signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitMap([u8; 256]);

impl Default for ExitMap {
    fn default() -> Self {
        let mut m = [0u8; 256];
        for (i, v) in m.iter_mut().enumerate() {
            *v = i as u8;
        }
        ExitMap(m)
    }
}

impl ExitMap {
    /// Map `from` to `to` (a later mapping of the same code wins).
    pub fn set(&mut self, from: u8, to: u8) {
        self.0[from as usize] = to;
    }
    /// The code keel exits with for the main child's `code`.
    pub fn apply(&self, code: u8) -> u8 {
        self.0[code as usize]
    }
}

/// Signal rewriting (`--rewrite SRC:DST`): which signal to forward for each received one;
/// 0 drops it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalMap([u8; 65]);

impl Default for SignalMap {
    fn default() -> Self {
        let mut m = [0u8; 65];
        for (i, v) in m.iter_mut().enumerate() {
            *v = i as u8;
        }
        SignalMap(m)
    }
}

impl SignalMap {
    /// Forward `to` (0 = nothing) when `from` is received.
    pub fn set(&mut self, from: i32, to: i32) {
        if (1..=signals::NSIG).contains(&from) && (0..=signals::NSIG).contains(&to) {
            self.0[from as usize] = to as u8;
        }
    }
    /// What to forward for `sig`; 0 means drop.
    pub fn apply(&self, sig: i32) -> i32 {
        if (1..=signals::NSIG).contains(&sig) {
            self.0[sig as usize] as i32
        } else {
            sig
        }
    }
}

/// The default `--grace`: long enough for a well-behaved process to flush and exit, well
/// under Docker's 10 s stop timeout.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3);

/// How long keel waits for processes to vanish after SIGKILL before it exits regardless
/// (a process in uninterruptible sleep, or one keel may not signal, must not hang it).
pub const KILL_WAIT: Duration = Duration::from_secs(2);

/// Everything the engine needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The main service: its exit ends keel with its code. `None` is pause mode (catatonit
    /// `-P`): keel runs nothing, reaps, and exits 0 on TERM or INT.
    pub main: Option<ServiceSpec>,
    /// Where forwarded signals go.
    pub forward_to: ForwardTo,
    /// Signal rewriting.
    pub rewrite: SignalMap,
    /// Exit-code remapping.
    pub remap_exit: ExitMap,
    /// After the main child exits: how long the remaining processes get between the stop
    /// signal and SIGKILL. Zero exits at once (tini's behaviour).
    pub grace: Duration,
    /// SIGKILL the main child this long after a stop signal was forwarded to it; `None`
    /// leaves the deadline to the orchestrator.
    pub stop_timeout: Option<Duration>,
    /// Message and exit-code conventions.
    pub dialect: Dialect,
    /// Behaviour when not PID 1.
    pub not_pid1: NotPid1,
    /// `PR_SET_PDEATHSIG` for keel itself (tini `-p`): keel gets this signal, and forwards
    /// it, when its parent dies.
    pub parent_death_signal: Option<i32>,
    /// Warn about every reaped process other than the main child (tini `-w`).
    pub warn_on_reap: bool,
    /// After forwarding one of these, keel stops itself with SIGSTOP, so a shell that started
    /// it sees the job stop (dumb-init's TSTP/TTIN/TTOU handling).
    pub stop_self_after: SigSet,
    /// When the main child exits, SIGTERM its process group at once (dumb-init's setsid
    /// mode), before the drain.
    pub term_group_on_exit: bool,
    /// `chdir("/")` once the main child is started, so keel does not pin the directory's
    /// mount (catatonit, dumb-init).
    pub release_cwd: bool,
}

impl Plan {
    /// A plan running `argv` with every default.
    pub fn single(argv: Vec<OsString>) -> Plan {
        let name = argv
            .first()
            .map(|a| {
                let s = a.to_string_lossy();
                s.rsplit('/').next().unwrap_or(&s).to_string()
            })
            .unwrap_or_default();
        Plan {
            main: Some(ServiceSpec {
                name,
                argv,
                isolation: Isolation::ProcessGroup,
            }),
            forward_to: ForwardTo::Child,
            rewrite: SignalMap::default(),
            remap_exit: ExitMap::default(),
            grace: DEFAULT_GRACE,
            stop_timeout: None,
            dialect: Dialect::Keel,
            not_pid1: NotPid1::Subreaper,
            parent_death_signal: None,
            warn_on_reap: false,
            stop_self_after: SigSet::EMPTY,
            term_group_on_exit: false,
            release_cwd: true,
        }
    }

    /// The main service's name ("" in pause mode).
    pub fn main_name(&self) -> &str {
        self.main.as_ref().map_or("", |m| m.name.as_str())
    }

    /// The main service's program as written (argv[0]).
    pub fn main_program(&self) -> String {
        self.main
            .as_ref()
            .and_then(|m| m.argv.first())
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Signals that ask a process to stop: forwarding one of these to the main child starts
/// `--stop-timeout`.
pub fn is_stop_request(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGTERM | libc::SIGINT | libc::SIGQUIT | libc::SIGHUP | libc::SIGPWR
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_identity_by_default() {
        let e = ExitMap::default();
        assert!((0..=255u8).all(|c| e.apply(c) == c));
        let s = SignalMap::default();
        assert!((1..=64).all(|c| s.apply(c) == c));
    }

    #[test]
    fn later_mapping_wins() {
        let mut e = ExitMap::default();
        e.set(143, 0);
        e.set(143, 7);
        assert_eq!(e.apply(143), 7);
        let mut s = SignalMap::default();
        s.set(15, 3);
        s.set(10, 0);
        assert_eq!(s.apply(15), 3);
        assert_eq!(s.apply(10), 0);
    }
}
