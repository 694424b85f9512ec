//! The plan: everything a front-end (keel's command line today; the tini and dumb-init
//! personalities and config files next) decides, and all the engine needs to run.
//!
//! Owns: the data types, their defaults and the exit-code and signal mapping rules.
//! Must not: touch the OS. Front-ends only ever produce a `Plan`; no front-end has a loop.

use crate::signals;
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
    /// The main service: its exit ends keel with its code.
    pub main: ServiceSpec,
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
            main: ServiceSpec {
                name,
                argv,
                isolation: Isolation::ProcessGroup,
            },
            forward_to: ForwardTo::Child,
            rewrite: SignalMap::default(),
            remap_exit: ExitMap::default(),
            grace: DEFAULT_GRACE,
            stop_timeout: None,
        }
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
