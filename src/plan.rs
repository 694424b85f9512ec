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

/// How a service's start completes (systemd's `Type=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Started (or ready per `ready`) while it runs.
    Simple,
    /// Runs to completion; exit 0 means done, and dependents start after it.
    Oneshot,
    /// Ready when it sends `READY=1` over `NOTIFY_SOCKET` (sd_notify).
    Notify,
}

/// When a service that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never.
    No,
    /// After a non-zero exit, a signal death or a failed start.
    OnFailure,
    /// After a signal death or a failed start (not a plain non-zero exit).
    OnAbnormal,
    /// Whenever it ends (unless it was stopped on purpose).
    Always,
}

/// What happens when a service restarts more than `start-limit-burst` times within
/// `start-limit-interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitAction {
    /// Keep trying, at the capped delay (`restart-max-sec`), until it stays up.
    Continue,
    /// Stop restarting it (logged; `keel ctl start` can try again).
    GiveUp,
    /// Shut the container down.
    Shutdown,
}

/// How a service tells it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Ready as soon as it runs.
    Started,
    /// s6/dinit style: it writes a newline to this fd.
    NotifyFd(i32),
    /// sd_notify: `READY=1` on `NOTIFY_SOCKET`.
    SdNotify,
    /// This command exits 0.
    Exec {
        /// The check.
        argv: Vec<OsString>,
        /// Between attempts.
        interval: Duration,
        /// One attempt's limit.
        timeout: Duration,
        /// Attempts before the start fails.
        retries: u32,
    },
    /// This address accepts a TCP connection.
    Tcp {
        /// Where.
        addr: std::net::SocketAddr,
        /// Between attempts.
        interval: Duration,
        /// One attempt's limit.
        timeout: Duration,
        /// Attempts before the start fails.
        retries: u32,
    },
}

/// Who a service runs as, resolved to numbers before anything starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups (initgroups' list plus `supplementary-groups`).
    pub groups: Vec<u32>,
    /// User name (for USER and LOGNAME), when known.
    pub user: Option<String>,
    /// Home directory (for HOME), when known.
    pub home: Option<std::path::PathBuf>,
}

/// Where a service's stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Through keel, each line as `NAME | line` on keel's stdout/stderr.
    Prefix,
    /// keel's own stdout/stderr, untouched.
    Inherit,
    /// Appended to this file.
    File(std::path::PathBuf),
}

/// A resource limit for `setrlimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*`.
    pub resource: i32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The resource limits a service may set, by their configuration names (`setrlimit`'s
/// `RLIMIT_*` in lower case, without the prefix).
pub const RLIMITS: &[(&str, i32)] = &[
    ("as", libc::RLIMIT_AS as i32),
    ("core", libc::RLIMIT_CORE as i32),
    ("cpu", libc::RLIMIT_CPU as i32),
    ("data", libc::RLIMIT_DATA as i32),
    ("fsize", libc::RLIMIT_FSIZE as i32),
    ("locks", libc::RLIMIT_LOCKS as i32),
    ("memlock", libc::RLIMIT_MEMLOCK as i32),
    ("msgqueue", libc::RLIMIT_MSGQUEUE as i32),
    ("nice", libc::RLIMIT_NICE as i32),
    ("nofile", libc::RLIMIT_NOFILE as i32),
    ("nproc", libc::RLIMIT_NPROC as i32),
    ("rss", libc::RLIMIT_RSS as i32),
    ("rtprio", libc::RLIMIT_RTPRIO as i32),
    ("rttime", libc::RLIMIT_RTTIME as i32),
    ("sigpending", libc::RLIMIT_SIGPENDING as i32),
    ("stack", libc::RLIMIT_STACK as i32),
];

/// A memory size as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Bytes.
    Bytes(u64),
    /// Hundredths of a percent of the machine's memory.
    Percent(u32),
    /// No limit.
    Max,
}

/// An `io.max` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoMax {
    /// `MAJOR:MINOR` or a /dev path.
    pub device: String,
    /// Read bytes per second.
    pub rbps: Option<u64>,
    /// Write bytes per second.
    pub wbps: Option<u64>,
    /// Read operations per second.
    pub riops: Option<u64>,
    /// Write operations per second.
    pub wiops: Option<u64>,
}

/// cgroup limits (validated here; applied by the cgroup module).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    /// memory.max
    pub memory_max: Option<Size>,
    /// memory.high
    pub memory_high: Option<Size>,
    /// memory.swap.max
    pub memory_swap_max: Option<Size>,
    /// CPU quota in hundredths of a percent of one CPU.
    pub cpu_quota: Option<u32>,
    /// The CFS period the quota is measured over.
    pub cpu_quota_period: Option<Duration>,
    /// cpu.weight (1..10000).
    pub cpu_weight: Option<u32>,
    /// pids.max (`None` inside `Some` = max).
    pub tasks_max: Option<Option<u64>>,
    /// io.weight (1..10000).
    pub io_weight: Option<u32>,
    /// io.max entries.
    pub io_max: Vec<IoMax>,
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
    /// simple, oneshot, notify.
    pub kind: Kind,
    /// Start after these are ready (or, for oneshots, done).
    pub after: Vec<String>,
    /// Like `after`, and fail (not start) when one of these fails for good.
    pub requires: Vec<String>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// First restart delay.
    pub restart_sec: Duration,
    /// Backoff cap.
    pub restart_max_sec: Duration,
    /// Restarts allowed within `start_limit_interval`.
    pub start_limit_burst: u32,
    /// The start limit's window.
    pub start_limit_interval: Duration,
    /// What happens past the start limit.
    pub start_limit_action: LimitAction,
    /// Readiness.
    pub ready: Readiness,
    /// Fail a start that is not ready within this.
    pub start_timeout: Option<Duration>,
    /// When it ends for good, the container shuts down with its exit code.
    pub critical: bool,
    /// The signal that asks it to stop.
    pub stop_signal: i32,
    /// SIGKILL this long after the stop signal.
    pub stop_timeout: Duration,
    /// Run as this user/group.
    pub credentials: Option<Credentials>,
    /// `environment` entries.
    pub environment: Vec<(OsString, OsString)>,
    /// `env-file` entries (overridden by `environment`).
    pub env_file: Vec<(OsString, OsString)>,
    /// Start from keel's environment (true) or an empty one.
    pub inherit_environment: bool,
    /// Working directory.
    pub working_directory: Option<std::path::PathBuf>,
    /// umask.
    pub umask: Option<u32>,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// Where output goes.
    pub output: Output,
    /// cgroup limits.
    pub limits: Limits,
}

/// Defaults shared by every front-end.
pub mod defaults {
    use std::time::Duration;
    /// First restart delay (systemd's RestartSec).
    pub const RESTART_SEC: Duration = Duration::from_millis(100);
    /// Backoff cap.
    pub const RESTART_MAX_SEC: Duration = Duration::from_secs(30);
    /// systemd's StartLimitBurst.
    pub const START_LIMIT_BURST: u32 = 5;
    /// systemd's StartLimitIntervalSec.
    pub const START_LIMIT_INTERVAL: Duration = Duration::from_secs(10);
    /// Per-service stop timeout: under the whole shutdown's 8 s deadline.
    pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
}

impl ServiceSpec {
    /// A simple service running `argv`, with every default.
    pub fn new(name: String, argv: Vec<OsString>) -> ServiceSpec {
        ServiceSpec {
            name,
            argv,
            isolation: Isolation::ProcessGroup,
            kind: Kind::Simple,
            after: Vec::new(),
            requires: Vec::new(),
            restart: RestartPolicy::No,
            restart_sec: defaults::RESTART_SEC,
            restart_max_sec: defaults::RESTART_MAX_SEC,
            start_limit_burst: defaults::START_LIMIT_BURST,
            start_limit_interval: defaults::START_LIMIT_INTERVAL,
            start_limit_action: LimitAction::Continue,
            ready: Readiness::Started,
            start_timeout: None,
            critical: false,
            stop_signal: libc::SIGTERM,
            stop_timeout: defaults::STOP_TIMEOUT,
            credentials: None,
            environment: Vec::new(),
            env_file: Vec::new(),
            inherit_environment: true,
            working_directory: None,
            umask: None,
            rlimits: Vec::new(),
            output: Output::Inherit,
            limits: Limits::default(),
        }
    }
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

/// The default whole-shutdown deadline in services mode: under Docker's 10 s, so keel
/// finishes before Docker resorts to SIGKILL.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(8);

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
    /// Services from configuration files, besides the main command. Empty in
    /// single-command mode.
    pub services: Vec<ServiceSpec>,
    /// The configuration files' paths as given (`--config`, or empty for the defaults) when
    /// keel runs from a configuration: SIGHUP reads them again. `None`: single-command mode,
    /// where every signal is the main child's.
    pub config: Option<Vec<std::path::PathBuf>>,
    /// Services mode: the whole shutdown's deadline (stop every service, then drain).
    pub shutdown_timeout: Duration,
    /// Per-service cgroups (`[keel] cgroups`): `off` in single-command mode, where keel
    /// leaves the container's cgroup as it found it.
    pub cgroups: crate::cgroup::Mode,
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
            main: Some(ServiceSpec::new(name, argv)),
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
            services: Vec::new(),
            config: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            cgroups: crate::cgroup::Mode::Off,
        }
    }

    /// Whether keel runs from a configuration (services mode) rather than one command.
    pub fn is_services_mode(&self) -> bool {
        self.config.is_some()
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
