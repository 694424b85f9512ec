//! Spawning a child: fork, set it up, exec, and report a set-up or exec failure back to keel.
//!
//! Owns: everything between `fork` and `exec` — process group or session, stdio and the
//! extra (notification) fd, resource limits, umask, user and groups, working directory, the
//! environment, signal state — and the exec itself. All memory the child needs (argv, envp,
//! the PATH candidates, the `/bin/sh` fallback argv, every path and id) is prepared in the
//! parent ([`Prepared`]), so the child only makes async-signal-safe syscalls: no allocation,
//! no locks, no logging.
//! A failure in the child travels back through a CLOEXEC pipe as (stage, errno): the pipe
//! reaches end-of-file without data exactly when exec succeeded. The runtime reads it from the
//! event loop, never blocking on it.
//! Must not: wait for children (reap does), or decide what a failure means (the supervisor).

use crate::plan::{Isolation, ServiceSpec};
use crate::signals::{self, Inherited};
use crate::sys::{SysError, check, errno, pipe_cloexec_nonblock, strerror};
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

unsafe extern "C" {
    static environ: *const *const libc::c_char;
}

/// Where in the child a failure happened.
///
/// Each stage has its own exit code (see [`ExecError::exit_code`]), so even a bare exit
/// status tells what went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `execve` of every candidate failed.
    Exec,
    /// Putting the given fd on stdin (`dup2`).
    Stdin,
    /// Putting the given fd on stdout.
    Stdout,
    /// Putting the given fd on stderr.
    Stderr,
    /// Placing the extra fd (the readiness notification fd) at its number, or moving keel's
    /// own exec-status pipe out of the way first.
    Fds,
    /// `setrlimit` of this `RLIMIT_*` resource.
    Rlimit {
        /// The `RLIMIT_*` resource that failed.
        resource: i32,
    },
    /// `setgroups` (supplementary groups).
    Setgroups,
    /// `setgid`.
    Setgid,
    /// `setuid`.
    Setuid,
    /// `chdir` to the working directory.
    Chdir,
    /// Joining the service's cgroup (writing `0` to a `cgroup.procs`).
    Cgroup,
}

impl Stage {
    fn to_wire(self) -> u32 {
        match self {
            Stage::Exec => 1,
            Stage::Stdin => 2,
            Stage::Stdout => 3,
            Stage::Stderr => 4,
            Stage::Fds => 5,
            // The resource rides in the upper bits: it is what makes the message useful.
            Stage::Rlimit { resource } => 6 | ((resource as u32) << 8),
            Stage::Setgroups => 7,
            Stage::Setgid => 8,
            Stage::Setuid => 9,
            Stage::Chdir => 10,
            Stage::Cgroup => 11,
        }
    }

    fn from_wire(v: u32) -> Option<Stage> {
        Some(match v & 0xff {
            1 => Stage::Exec,
            2 => Stage::Stdin,
            3 => Stage::Stdout,
            4 => Stage::Stderr,
            5 => Stage::Fds,
            6 => Stage::Rlimit {
                resource: (v >> 8) as i32,
            },
            7 => Stage::Setgroups,
            8 => Stage::Setgid,
            9 => Stage::Setuid,
            10 => Stage::Chdir,
            11 => Stage::Cgroup,
            _ => return None,
        })
    }
}

/// A failure in the child before its program started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecError {
    /// Where it failed.
    pub stage: Stage,
    /// The errno.
    pub errno: i32,
}

impl ExecError {
    /// The exit code the child exits with.
    ///
    /// - exec: 127 when the program was not found, 126 when it was found but could not be
    ///   run (the shell's and tini's convention; a dialect may override it, see
    ///   [`Prepared::with_exec_failure_code`]).
    /// - every set-up stage before exec: systemd's code for the same step (its
    ///   `EXIT_*` table, reserved by the LSB for init systems), so a service moved from a
    ///   unit file fails with the status its operators know: 200 chdir, 202 fds, 205 rlimit,
    ///   208 stdin, 209 stdout, 216 setgroups/setgid, 217 setuid, 219 cgroup, 222 stderr.
    pub fn exit_code(&self) -> u8 {
        match (self.stage, self.errno) {
            (Stage::Exec, libc::ENOENT | libc::ENOTDIR) => 127,
            (Stage::Exec, _) => 126,
            (Stage::Chdir, _) => 200,
            (Stage::Fds, _) => 202,
            (Stage::Rlimit { .. }, _) => 205,
            (Stage::Stdin, _) => 208,
            (Stage::Stdout, _) => 209,
            (Stage::Setgroups | Stage::Setgid, _) => 216,
            (Stage::Setuid, _) => 217,
            (Stage::Cgroup, _) => 219,
            (Stage::Stderr, _) => 222,
        }
    }
}

impl fmt::Display for ExecError {
    /// Lowercase, naming the step; exec's is the bare errno text because every caller already
    /// says "cannot run PROGRAM".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = strerror(self.errno);
        match self.stage {
            Stage::Exec => f.write_str(&e),
            Stage::Stdin => write!(f, "cannot set up stdin: {e}"),
            Stage::Stdout => write!(f, "cannot set up stdout: {e}"),
            Stage::Stderr => write!(f, "cannot set up stderr: {e}"),
            Stage::Fds => write!(f, "cannot set up file descriptors: {e}"),
            Stage::Rlimit { resource } => {
                match crate::plan::RLIMITS.iter().find(|(_, r)| *r == resource) {
                    Some((name, _)) => {
                        write!(f, "setrlimit(RLIMIT_{}): {e}", name.to_ascii_uppercase())
                    }
                    None => write!(f, "setrlimit({resource}): {e}"),
                }
            }
            Stage::Setgroups => write!(f, "setgroups: {e}"),
            Stage::Setgid => write!(f, "setgid: {e}"),
            Stage::Setuid => write!(f, "setuid: {e}"),
            Stage::Chdir => write!(f, "cannot change to directory: {e}"),
            Stage::Cgroup => write!(f, "cannot join the service's cgroup: {e}"),
        }
    }
}

/// The environment variables keel's own parent may have set to talk to keel itself
/// (systemd's notification socket, socket activation, watchdog). A service inheriting keel's
/// environment must not see them: it would talk to keel's parent as if it were keel. The
/// runtime passes the service's own values (e.g. keel's `NOTIFY_SOCKET`) as extra entries.
pub const KEEL_ONLY_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
];

/// The `PATH` searched when neither the service nor keel has one: the C library's default.
const DEFAULT_PATH: &[u8] = b"/usr/local/bin:/bin:/usr/bin";

/// Ids to switch to, as the syscalls take them.
struct Ids {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

/// What a service sets up in the child besides exec: empty for the single-command mode.
#[derive(Default)]
struct Setup {
    rlimits: Vec<(i32, libc::rlimit)>,
    umask: Option<libc::mode_t>,
    ids: Option<Ids>,
    working_directory: Option<CString>,
}

/// An `envp` array and the strings it points into.
struct Envp {
    _strings: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

/// A command made ready for exec: all C strings built, PATH resolved into candidates, and
/// for a service the environment, ids, limits and working directory.
pub struct Prepared {
    /// Keeps the C strings alive for the pointer arrays below.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    /// Full paths to try in order (one when argv[0] has a slash).
    candidates: Vec<CString>,
    /// `["/bin/sh", <candidate>, argv[1..]..., NULL]` for ENOEXEC (execvp's fallback);
    /// slot 1 is filled in the child.
    sh_argv: Vec<*const libc::c_char>,
    sh: CString,
    isolation: Isolation,
    /// Exit code for an exec failure when the dialect fixes one (dumb-init: 2).
    exec_failure_code: Option<u8>,
    /// The service's environment; `None` passes keel's own `environ` (single-command mode).
    envp: Option<Envp>,
    setup: Setup,
}

fn cstring(s: &OsStr) -> Result<CString, String> {
    CString::new(s.as_bytes()).map_err(|_| format!("'{}' contains a NUL byte", s.display()))
}

/// execvp's candidates for `prog` over `path`.
fn candidates(prog: &OsStr, path: &[u8]) -> Result<Vec<CString>, String> {
    if prog.as_bytes().contains(&b'/') {
        return Ok(vec![cstring(prog)?]);
    }
    let mut c = Vec::new();
    for dir in path.split(|&b| b == b':') {
        // An empty PATH element means the current directory (POSIX).
        let mut full: Vec<u8> = if dir.is_empty() {
            b".".to_vec()
        } else {
            dir.to_vec()
        };
        full.push(b'/');
        full.extend_from_slice(prog.as_bytes());
        c.push(cstring(OsStr::from_bytes(&full))?);
    }
    Ok(c)
}

/// Set `key` to `value` in `env`, in place when it is already there (so the first position
/// is kept and the output is stable), else at the end.
fn set_var(env: &mut Vec<(OsString, OsString)>, key: &OsStr, value: &OsStr) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_os_string(),
        None => env.push((key.to_os_string(), value.to_os_string())),
    }
}

/// The environment a service starts with, later sources overriding earlier ones:
///
/// 1. keel's environment when `inherit_environment` (minus [`KEEL_ONLY_ENV`]), else nothing;
/// 2. `HOME`, `USER`, `LOGNAME` from the service's credentials, when it has a user (systemd
///    sets them for `User=`);
/// 3. `env-file` entries;
/// 4. `environment` entries (so an explicit setting beats all of the above);
/// 5. `extra_env`: what the runtime adds for this start (`NOTIFY_SOCKET`, ...).
///
/// Names are checked here (non-empty, no `=`, no NUL) so a bad one fails the start with a
/// message instead of producing a broken `envp`.
pub fn service_environment(
    spec: &ServiceSpec,
    keel_env: &[(OsString, OsString)],
    extra_env: &[(OsString, OsString)],
) -> Result<Vec<(OsString, OsString)>, String> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    if spec.inherit_environment {
        for (k, v) in keel_env {
            if !KEEL_ONLY_ENV.iter().any(|n| OsStr::new(n) == k) {
                set_var(&mut env, k, v);
            }
        }
    }
    if let Some(c) = &spec.credentials {
        if let Some(home) = &c.home {
            set_var(&mut env, OsStr::new("HOME"), home.as_os_str());
        }
        if let Some(user) = &c.user {
            set_var(&mut env, OsStr::new("USER"), OsStr::new(user));
            set_var(&mut env, OsStr::new("LOGNAME"), OsStr::new(user));
        }
    }
    for (k, v) in spec
        .env_file
        .iter()
        .chain(&spec.environment)
        .chain(extra_env)
    {
        set_var(&mut env, k, v);
    }
    for (k, v) in &env {
        let kb = k.as_bytes();
        if kb.is_empty() || kb.contains(&b'=') || kb.contains(&0) {
            return Err(format!(
                "'{}' is not a valid environment variable name",
                k.display()
            ));
        }
        if v.as_bytes().contains(&0) {
            return Err(format!(
                "environment variable {} contains a NUL byte",
                k.display()
            ));
        }
    }
    Ok(env)
}

impl Prepared {
    /// Build the exec data for `spec`, resolving `argv[0]` against `path` (the value of
    /// `PATH`; the C library's default when unset). The single-command mode: the child gets
    /// keel's environment, stdio and working directory, and only `spec.isolation` is used.
    pub fn new(spec: &ServiceSpec, path: Option<&OsStr>) -> Result<Prepared, String> {
        Prepared::build(spec, path.map(|p| p.as_bytes()), None, Setup::default())
    }

    /// Build the exec data for a service: its environment (see [`service_environment`];
    /// `keel_env` is keel's own, e.g. `std::env::vars_os()` captured once), `argv[0]`
    /// resolved against the service's own `PATH` (else keel's, else the default), and its
    /// credentials, working directory, umask and resource limits.
    pub fn service(
        spec: &ServiceSpec,
        keel_env: &[(OsString, OsString)],
        extra_env: &[(OsString, OsString)],
    ) -> Result<Prepared, String> {
        let env = service_environment(spec, keel_env, extra_env)?;
        let find = |vars: &[(OsString, OsString)]| {
            vars.iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.as_bytes().to_vec())
        };
        let path = find(&env).or_else(|| find(keel_env));

        let mut strings = Vec::with_capacity(env.len());
        for (k, v) in &env {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            strings.push(cstring(OsStr::from_bytes(&kv))?);
        }
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let envp = Envp {
            _strings: strings,
            ptrs,
        };

        let working_directory = match &spec.working_directory {
            Some(d) => Some(cstring(d.as_os_str())?),
            None => None,
        };
        let setup = Setup {
            rlimits: spec
                .rlimits
                .iter()
                .map(|r| {
                    (
                        r.resource,
                        libc::rlimit {
                            rlim_cur: r.soft as libc::rlim_t,
                            rlim_max: r.hard as libc::rlim_t,
                        },
                    )
                })
                .collect(),
            umask: spec.umask.map(|m| m as libc::mode_t),
            ids: spec.credentials.as_ref().map(|c| Ids {
                uid: c.uid,
                gid: c.gid,
                groups: c.groups.clone(),
            }),
            working_directory,
        };
        Prepared::build(spec, path.as_deref(), Some(envp), setup)
    }

    fn build(
        spec: &ServiceSpec,
        path: Option<&[u8]>,
        envp: Option<Envp>,
        setup: Setup,
    ) -> Result<Prepared, String> {
        let Some(prog) = spec.argv.first() else {
            return Err("no command given".into());
        };
        if prog.is_empty() {
            return Err("the command is an empty string".into());
        }
        let strings: Vec<CString> = spec
            .argv
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<_, _>>()?;
        let mut argv: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());
        let candidates = candidates(prog, path.unwrap_or(DEFAULT_PATH))?;
        let sh = CString::new("/bin/sh").map_err(|e| e.to_string())?;
        let mut sh_argv = vec![sh.as_ptr(), std::ptr::null()];
        sh_argv.extend(strings.iter().skip(1).map(|s| s.as_ptr()));
        sh_argv.push(std::ptr::null());
        Ok(Prepared {
            _strings: strings,
            argv,
            candidates,
            sh_argv,
            sh,
            isolation: spec.isolation,
            exec_failure_code: None,
            envp,
            setup,
        })
    }

    /// Make an exec failure exit with `code` instead of 127/126 (set-up stages keep theirs).
    pub fn with_exec_failure_code(mut self, code: Option<u8>) -> Prepared {
        self.exec_failure_code = code;
        self
    }

    /// How the child is isolated.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }
}

/// An fd the child gets at a fixed number besides stdio: the s6-style readiness
/// notification fd (`notify-fd = N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraFd {
    /// keel's fd (e.g. a pipe's write end); it may be CLOEXEC, the child's copy is not.
    pub source: RawFd,
    /// The number the child sees it at; 3 or above.
    pub target: RawFd,
}

/// Where the child's stdio comes from. `None` keeps keel's own fd (the child inherits it);
/// `Some(fd)` puts keel's `fd` there (it may be CLOEXEC: the child's copy is not, and keel's
/// fds in general are not inherited). The fds only need to stay open until [`spawn_with`]
/// returns; closing them afterwards is the caller's business.
///
/// Suggested use: stdin `None` for `output = "inherit"` (the service shares keel's terminal
/// or stdin, like the single-command mode), `/dev/null` ([`open_dev_null`]) otherwise, so
/// services never compete for keel's stdin; stdout/stderr a log pipe for `prefix`, the file
/// ([`open_output_file`]) for a path, `None` for `inherit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildIo {
    /// fd 0.
    pub stdin: Option<RawFd>,
    /// fd 1.
    pub stdout: Option<RawFd>,
    /// fd 2.
    pub stderr: Option<RawFd>,
    /// The notification fd.
    pub extra: Option<ExtraFd>,
}

impl ChildIo {
    /// Everything inherited from keel (the single-command mode).
    pub const INHERIT: ChildIo = ChildIo {
        stdin: None,
        stdout: None,
        stderr: None,
        extra: None,
    };

    /// (source, target, stage) for each fd to place.
    fn moves(&self) -> [Option<(RawFd, RawFd, Stage)>; 4] {
        [
            self.stdin.map(|s| (s, 0, Stage::Stdin)),
            self.stdout.map(|s| (s, 1, Stage::Stdout)),
            self.stderr.map(|s| (s, 2, Stage::Stderr)),
            self.extra.map(|e| (e.source, e.target, Stage::Fds)),
        ]
    }

    /// Checked before the fork, so a bad request is keel's error, not a failed child.
    fn check(&self) -> Result<(), SysError> {
        if let Some(e) = self.extra
            && e.target < 3
        {
            return Err(SysError {
                op: "notification fd (must be 3 or above)",
                errno: libc::EINVAL,
            });
        }
        if self.moves().iter().flatten().any(|(src, _, _)| *src < 0) {
            return Err(SysError {
                op: "child stdio",
                errno: libc::EBADF,
            });
        }
        Ok(())
    }
}

/// `open(path, O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC|O_NOCTTY, 0640)`: a service's
/// `output = "/path"`. Append, so restarts and several writers never overwrite each other;
/// `O_NOCTTY` because keel may be a session leader without a terminal, and opening a tty
/// path must not make it keel's controlling terminal. The caller adds the path to errors.
pub fn open_output_file(path: &Path) -> Result<OwnedFd, SysError> {
    open_cloexec(
        path.as_os_str(),
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOCTTY,
        0o640,
    )
}

/// `/dev/null`, read-write (fit for stdin or output), `O_CLOEXEC`.
pub fn open_dev_null() -> Result<OwnedFd, SysError> {
    open_cloexec(OsStr::new("/dev/null"), libc::O_RDWR | libc::O_NOCTTY, 0)
}

fn open_cloexec(path: &OsStr, flags: libc::c_int, mode: libc::mode_t) -> Result<OwnedFd, SysError> {
    let Ok(c) = CString::new(path.as_bytes()) else {
        return Err(SysError {
            op: "open",
            errno: libc::EINVAL,
        });
    };
    // SAFETY: c is a valid C string; open does not keep the pointer.
    let fd = check(
        unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) },
        "open",
    )?;
    // SAFETY: open succeeded, so fd is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A forked child: its pid and the read end of its exec-status pipe.
pub struct Child {
    /// The child's pid.
    pub pid: i32,
    /// Reaches EOF when exec succeeded; carries 8 bytes (stage, errno) when it failed.
    pub status: OwnedFd,
}

/// Whether the terminal on stdin currently has keel's process group in the foreground: only
/// then does keel hand it to the child (a keel started in the background must not steal it).
pub fn owns_terminal() -> bool {
    // SAFETY: plain syscalls on fd 0.
    unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() }
}

/// For a child that will lead its own session: give up keel's controlling terminal
/// (`TIOCNOTTY`) so the child can claim it. Returns whether keel was the session leader, in
/// which case the kernel has just sent SIGHUP and SIGCONT to keel's group (to be ignored).
pub fn release_terminal() -> bool {
    // SAFETY: plain syscalls on fd 0; failure (no terminal) is the common case in containers.
    unsafe { libc::ioctl(0, libc::TIOCNOTTY) != -1 && libc::getsid(0) == libc::getpid() }
}

/// Fork and exec `cmd` with keel's stdio: [`spawn_with`] and [`ChildIo::INHERIT`].
pub fn spawn(
    cmd: &mut Prepared,
    inherited: &Inherited,
    give_terminal: bool,
) -> Result<Child, SysError> {
    spawn_with(cmd, inherited, give_terminal, &ChildIo::INHERIT)
}

/// Fork and exec `cmd`. The child gets its own process group (and the terminal if
/// `give_terminal`) or its own session, keel's inherited signal state, the stdio in `io`,
/// and what `cmd` prepared (environment, limits, umask, ids, working directory; keel's own
/// for a single command).
///
/// In the child, in this order: stdio and the notification fd; process group or session
/// (after stdio, so a session claims the service's stdin as its terminal, never keel's by
/// accident); rlimits (before dropping privileges: raising a hard limit needs them); umask;
/// `setgroups`, `setgid`, `setuid` (groups first: both need privileges the last one drops);
/// `chdir` (as the service's user, as systemd does: a directory on root-squashed NFS may be
/// reachable only by that user); keel's inherited signal state; exec.
pub fn spawn_with(
    cmd: &mut Prepared,
    inherited: &Inherited,
    give_terminal: bool,
    io: &ChildIo,
) -> Result<Child, SysError> {
    io.check()?;
    let (rd, wr) = pipe_cloexec_nonblock()?;
    // SAFETY: keel is single-threaded; the child below only makes async-signal-safe calls
    // on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SysError::last("fork"));
    }
    if pid == 0 {
        // SAFETY: we are the child; child_main never returns.
        unsafe { child_main(cmd, inherited, give_terminal, io, wr.as_raw_fd(), None) }
    }
    drop(wr);
    Ok(Child { pid, status: rd })
}

/// `CLONE_INTO_CGROUP` (kernel 5.7). Defined here: libc's constant is a `c_int` on glibc
/// targets and truncates to 0.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Set once `clone3(CLONE_INTO_CGROUP)` turned out not to exist here (old kernel, seccomp
/// filter answering `ENOSYS`): later spawns go straight to the fork fallback.
static NO_CLONE3: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Where a child must live from its first instruction (see `crate::cgroup::ServiceCgroup::join`).
/// Every fd stays owned by the caller and open until [`spawn_in_cgroup`] returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct CgroupJoin<'a> {
    /// A directory fd (`O_PATH` is enough) of a cgroup v2 cgroup: the `CLONE_INTO_CGROUP`
    /// target.
    pub dir: Option<RawFd>,
    /// That cgroup's `cgroup.procs`, opened for writing: joined by the fork fallback.
    pub dir_procs: Option<RawFd>,
    /// v1 `cgroup.procs` files, opened for writing: the child writes `0` (itself) to each
    /// before anything else.
    pub procs: &'a [RawFd],
}

/// [`spawn_with`], with the child born inside `join`'s cgroups: `clone3(CLONE_INTO_CGROUP)`
/// when the kernel has it, so neither the child nor anything it forks ever runs in keel's
/// cgroup; otherwise (`ENOSYS`, `E2BIG`, `EINVAL`: kernel before 5.7 or a seccomp filter)
/// `fork` and the child writes `0` to `dir_procs` first thing, before it can fork. A failed
/// join is the child's set-up failure [`Stage::Cgroup`] (exit 219). Other `clone3` errors
/// (`EBUSY`: not a leaf; `ENOENT`/`ENODEV`: the cgroup was removed) are keel's error, as a
/// failed fork is.
pub fn spawn_in_cgroup(
    cmd: &mut Prepared,
    inherited: &Inherited,
    give_terminal: bool,
    io: &ChildIo,
    join: &CgroupJoin<'_>,
) -> Result<Child, SysError> {
    use std::sync::atomic::Ordering;
    io.check()?;
    let (rd, wr) = pipe_cloexec_nonblock()?;
    let mut joined_dir = false;
    let mut pid: libc::pid_t = -1;
    if let Some(dir) = join.dir
        && !NO_CLONE3.load(Ordering::Relaxed)
    {
        let mut args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir as u64,
            ..CloneArgs::default()
        };
        // SAFETY: without CLONE_VM this is a fork: the child runs on a copy of this stack and
        // only makes async-signal-safe calls on memory prepared before (keel is
        // single-threaded). args is a valid clone_args of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if r >= 0 {
            pid = r as libc::pid_t;
            joined_dir = true;
        } else {
            match errno() {
                libc::ENOSYS | libc::E2BIG | libc::EINVAL => {
                    NO_CLONE3.store(true, Ordering::Relaxed);
                }
                e => {
                    return Err(SysError {
                        op: "clone3(CLONE_INTO_CGROUP)",
                        errno: e,
                    });
                }
            }
        }
    }
    if !joined_dir {
        // SAFETY: as in spawn_with.
        pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(SysError::last("fork"));
        }
    }
    if pid == 0 {
        let extra = if joined_dir { None } else { join.dir_procs };
        // SAFETY: we are the child; child_main never returns.
        unsafe {
            child_main(
                cmd,
                inherited,
                give_terminal,
                io,
                wr.as_raw_fd(),
                Some((extra, join.procs)),
            )
        }
    }
    drop(wr);
    Ok(Child { pid, status: rd })
}

/// Write `0` (the calling process) to each `cgroup.procs` fd. Async-signal-safe.
fn join_cgroups(first: Option<RawFd>, procs: &[RawFd]) -> Result<(), ExecError> {
    for fd in first.iter().chain(procs.iter()) {
        // SAFETY: writing one byte from a static buffer.
        if unsafe { libc::write(*fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(ExecError {
                stage: Stage::Cgroup,
                errno: errno(),
            });
        }
    }
    Ok(())
}

/// Report `err` on `report` and exit with its code. Async-signal-safe.
fn fail(cmd: &Prepared, report: libc::c_int, err: ExecError) -> ! {
    let mut msg = [0u8; 8];
    let (stage, errno) = msg.split_at_mut(4);
    stage.copy_from_slice(&err.stage.to_wire().to_ne_bytes());
    errno.copy_from_slice(&err.errno.to_ne_bytes());
    let code = match (err.stage, cmd.exec_failure_code) {
        (Stage::Exec, Some(code)) => code,
        _ => err.exit_code(),
    };
    // SAFETY: write and _exit are async-signal-safe; msg is valid for 8 bytes.
    unsafe {
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(code as libc::c_int)
    }
}

/// Put `io`'s fds at their numbers. Every source is first copied above every target (and
/// keel's report pipe moved there too), then `dup2`'d into place: a source whose number is
/// another move's target (keel's stderr going to the child's notification fd 3 while fd 3 is
/// the source of stdout, ...) is safe whatever the order, and the `dup2` clears CLOEXEC on
/// the result even when a source already sits at its target. The copies are CLOEXEC and
/// vanish at exec. Async-signal-safe.
fn place_fds(io: &ChildIo, report: &mut libc::c_int) -> Result<(), ExecError> {
    let moves = io.moves();
    if moves.iter().all(Option::is_none) {
        return Ok(());
    }
    let floor = io.extra.map_or(3, |e| e.target.saturating_add(1)).max(3);
    // SAFETY: fcntl on an fd number; failure is handled.
    let moved = unsafe { libc::fcntl(*report, libc::F_DUPFD_CLOEXEC, floor) };
    if moved < 0 {
        return Err(ExecError {
            stage: Stage::Fds,
            errno: errno(),
        });
    }
    *report = moved;
    let mut copies: [libc::c_int; 4] = [-1; 4];
    for (slot, mv) in copies.iter_mut().zip(moves.iter()) {
        if let Some((src, _, stage)) = *mv {
            // SAFETY: as above.
            let c = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, floor) };
            if c < 0 {
                return Err(ExecError {
                    stage,
                    errno: errno(),
                });
            }
            *slot = c;
        }
    }
    for (copy, mv) in copies.iter().zip(moves.iter()) {
        if let Some((_, target, stage)) = *mv {
            // SAFETY: both are fd numbers; dup2 closes target first if it is open. No signal
            // can interrupt it: every signal is blocked until just before exec.
            if unsafe { libc::dup2(*copy, target) } < 0 {
                return Err(ExecError {
                    stage,
                    errno: errno(),
                });
            }
            // SAFETY: the copy is ours and no longer needed.
            unsafe { libc::close(*copy) };
        }
    }
    Ok(())
}

/// Whether the process already runs as exactly `ids`' user and group.
fn already(ids: &Ids) -> bool {
    // SAFETY: plain syscalls without arguments.
    unsafe {
        libc::getuid() == ids.uid
            && libc::geteuid() == ids.uid
            && libc::getgid() == ids.gid
            && libc::getegid() == ids.gid
    }
}

/// rlimits, umask, ids, working directory. Async-signal-safe.
fn apply_setup(setup: &Setup) -> Result<(), ExecError> {
    let failed = |stage| {
        Err(ExecError {
            stage,
            errno: errno(),
        })
    };
    for (resource, lim) in &setup.rlimits {
        // SAFETY: lim is a valid rlimit.
        if unsafe { libc::setrlimit(*resource as _, lim) } != 0 {
            return failed(Stage::Rlimit {
                resource: *resource,
            });
        }
    }
    if let Some(mask) = setup.umask {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(mask) };
    }
    if let Some(ids) = &setup.ids {
        // SAFETY: groups is a valid array of groups.len() gids (dangling but unread if 0).
        if unsafe { libc::setgroups(ids.groups.len(), ids.groups.as_ptr()) } != 0 {
            // An unprivileged keel may run a service as itself (its only choice): it cannot
            // change its supplementary groups, and there is nothing to switch.
            if !(errno() == libc::EPERM && already(ids)) {
                return failed(Stage::Setgroups);
            }
        }
        // SAFETY: plain syscalls. The gid before the uid: setgid needs the privilege that
        // setuid gives up.
        if unsafe { libc::setgid(ids.gid) } != 0 {
            return failed(Stage::Setgid);
        }
        // SAFETY: plain syscall.
        if unsafe { libc::setuid(ids.uid) } != 0 {
            return failed(Stage::Setuid);
        }
    }
    if let Some(dir) = &setup.working_directory {
        // SAFETY: dir is a valid C string.
        if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
            return failed(Stage::Chdir);
        }
    }
    Ok(())
}

/// The child between fork and exec. Every signal is still blocked here (inherited from
/// keel), which is what makes `tcsetpgrp` from a background group succeed without SIGTTOU.
unsafe fn child_main(
    cmd: &mut Prepared,
    inherited: &Inherited,
    give_terminal: bool,
    io: &ChildIo,
    report: libc::c_int,
    cgroups: Option<(Option<RawFd>, &[RawFd])>,
) -> ! {
    let mut report = report;
    // First: nothing the child does (not even a failure report) should happen outside its
    // cgroups.
    if let Some((first, procs)) = cgroups
        && let Err(e) = join_cgroups(first, procs)
    {
        fail(cmd, report, e)
    }
    if let Err(e) = place_fds(io, &mut report) {
        fail(cmd, report, e)
    }
    match cmd.isolation {
        Isolation::ProcessGroup => {
            // SAFETY: async-signal-safe syscalls.
            unsafe {
                libc::setpgid(0, 0);
                if give_terminal {
                    // Errors (no tty after all, a hung-up terminal) only cost job control.
                    libc::tcsetpgrp(0, libc::getpgrp());
                }
            }
        }
        Isolation::Session => {
            // SAFETY: async-signal-safe syscalls. TIOCSCTTY fails harmlessly when stdin is
            // not a terminal or is still another session's.
            unsafe {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
            }
        }
    }
    if let Err(e) = apply_setup(&cmd.setup) {
        fail(cmd, report, e)
    }
    signals::restore_in_child(inherited);

    // SAFETY: reading the process's environ pointer.
    let envp = match &cmd.envp {
        Some(e) => e.ptrs.as_ptr(),
        None => unsafe { environ },
    };
    // execvp's search, over candidates computed in the parent: EACCES is remembered and the
    // search goes on; "not here" errors go on; any other error stops it.
    let mut saw_eacces = false;
    let mut last = libc::ENOENT;
    for i in 0..cmd.candidates.len() {
        let path = cmd.candidates[i].as_ptr();
        // SAFETY: path, argv and envp are valid NULL-terminated arrays built in the parent
        // (or the process environment).
        unsafe { libc::execve(path, cmd.argv.as_ptr(), envp) };
        let e = errno();
        match e {
            libc::ENOEXEC => {
                // A script without #!: run it with /bin/sh, as execvp does.
                cmd.sh_argv[1] = path;
                // SAFETY: as above.
                unsafe { libc::execve(cmd.sh.as_ptr(), cmd.sh_argv.as_ptr(), envp) };
                last = errno();
                break;
            }
            libc::EACCES => {
                saw_eacces = true;
                last = e;
            }
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {
                last = e;
            }
            _ => {
                last = e;
                break;
            }
        }
    }
    if saw_eacces && matches!(last, libc::ENOENT | libc::ENOTDIR) {
        last = libc::EACCES;
    }
    fail(
        cmd,
        report,
        ExecError {
            stage: Stage::Exec,
            errno: last,
        },
    )
}

/// What an exec-status pipe says, read without blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecStatus {
    /// Nothing yet: the child has not exec'd or failed.
    Pending,
    /// EOF without data: the program is running.
    Started,
    /// The child reported a failure.
    Failed(ExecError),
}

/// Read an exec-status pipe.
pub fn read_status(fd: &OwnedFd) -> Result<ExecStatus, SysError> {
    let mut buf = [0u8; 8];
    match crate::sys::read_nonblock(fd.as_raw_fd(), &mut buf)? {
        None => Ok(ExecStatus::Pending),
        Some(0) => Ok(ExecStatus::Started),
        Some(8) => {
            let stage = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
            match Stage::from_wire(stage) {
                Some(stage) => Ok(ExecStatus::Failed(ExecError { stage, errno })),
                // The child is keel itself: an unknown stage is a bug, reported as such.
                None => Err(SysError {
                    op: "read(exec status): unknown stage",
                    errno: libc::EIO,
                }),
            }
        }
        // A pipe write of 8 bytes is atomic; anything else is a bug, reported as such.
        Some(_) => Err(SysError {
            op: "read(exec status): short read",
            errno: libc::EIO,
        }),
    }
}

/// The value of PATH keel resolves commands with.
pub fn path_env() -> Option<OsString> {
    std::env::var_os("PATH")
}

/// keel's environment, to capture once and pass to [`Prepared::service`].
pub fn keel_env() -> Vec<(OsString, OsString)> {
    std::env::vars_os().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Credentials, Plan, Rlimit};
    use crate::signals::SigSet;
    use std::io::Read;
    use std::path::PathBuf;

    fn prep(argv: &[&str], path: Option<&str>) -> Prepared {
        let plan = Plan::single(argv.iter().map(OsString::from).collect());
        Prepared::new(plan.main.as_ref().unwrap(), path.map(OsStr::new)).expect("prepare")
    }

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn spec(argv: &[&str]) -> ServiceSpec {
        ServiceSpec::new("t".into(), argv.iter().map(OsString::from).collect())
    }

    fn sh(script: &str) -> ServiceSpec {
        spec(&["/bin/sh", "-c", script])
    }

    fn nobody() -> Credentials {
        Credentials {
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 4242, 100],
            user: Some("nobody".into()),
            home: Some("/nonexistent".into()),
        }
    }

    const KEEL_ENV: &[(&str, &str)] = &[("PATH", "/usr/bin:/bin"), ("KEEL_TEST", "keel")];

    /// A blocking CLOEXEC pipe: (read end, write end).
    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn read_all(fd: OwnedFd) -> String {
        let mut s = String::new();
        std::fs::File::from(fd).read_to_string(&mut s).unwrap();
        s
    }

    fn inherited() -> Inherited {
        Inherited {
            mask: SigSet(0),
            chld_was_ignored: false,
        }
    }

    /// Wait for our own child; its exit code (panics on a signal death).
    fn wait(pid: i32) -> i32 {
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child died: {status:#x}");
        libc::WEXITSTATUS(status)
    }

    struct Ran {
        exec: ExecStatus,
        code: i32,
        stdout: String,
    }

    /// Spawn `cmd` with stdout on a pipe (plus `io`'s other fds), read it to EOF, wait.
    fn run(cmd: &mut Prepared, mut io: ChildIo) -> Ran {
        let (rd, wr) = pipe();
        io.stdout = Some(wr.as_raw_fd());
        let child = spawn_with(cmd, &inherited(), false, &io).expect("spawn");
        drop(wr);
        let stdout = read_all(rd);
        let code = wait(child.pid);
        let exec = read_status(&child.status).expect("status");
        Ran { exec, code, stdout }
    }

    fn run_service(spec: &ServiceSpec, extra: &[(&str, &str)]) -> Ran {
        let mut cmd = Prepared::service(spec, &os(KEEL_ENV), &os(extra)).expect("prepare");
        run(&mut cmd, ChildIo::default())
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("keel-spawn-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn line<'a>(text: &'a str, key: &str) -> &'a str {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
    }

    #[test]
    fn path_search_candidates() {
        let p = prep(&["ls", "-l"], Some("/a::/b"));
        let c: Vec<_> = p.candidates.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(c, ["/a/ls", "./ls", "/b/ls"]);
        let p = prep(&["./x"], Some("/a"));
        assert_eq!(p.candidates.len(), 1);
        assert_eq!(p.argv.len(), 2);
        assert_eq!(p.sh_argv.len(), 3);
        assert!(p.envp.is_none());
    }

    #[test]
    fn rejects_nul_and_empty() {
        let plan = Plan::single(vec![OsString::from("a\0b")]);
        assert!(Prepared::new(plan.main.as_ref().unwrap(), None).is_err());
        let plan = Plan::single(vec![OsString::new()]);
        assert!(Prepared::new(plan.main.as_ref().unwrap(), None).is_err());
        let mut s = spec(&["true"]);
        s.environment = os(&[("A=B", "x")]);
        let e = Prepared::service(&s, &[], &[]).err().unwrap();
        assert!(e.contains("'A=B' is not a valid"), "{e}");
        s.environment = os(&[("A", "x\0y")]);
        assert!(Prepared::service(&s, &[], &[]).is_err());
    }

    #[test]
    fn exit_codes_for_exec_failures() {
        let e = |stage, errno| ExecError { stage, errno }.exit_code();
        assert_eq!(e(Stage::Exec, libc::ENOENT), 127);
        assert_eq!(e(Stage::Exec, libc::EACCES), 126);
        assert_eq!(e(Stage::Exec, libc::ENOEXEC), 126);
        assert_eq!(e(Stage::Chdir, libc::ENOENT), 200);
        assert_eq!(e(Stage::Setuid, libc::EPERM), 217);
        assert_eq!(e(Stage::Setgroups, libc::EPERM), 216);
    }

    #[test]
    fn stages_survive_the_wire_and_read_well() {
        let stages = [
            Stage::Exec,
            Stage::Stdin,
            Stage::Stdout,
            Stage::Stderr,
            Stage::Fds,
            Stage::Rlimit {
                resource: libc::RLIMIT_NOFILE as i32,
            },
            Stage::Setgroups,
            Stage::Setgid,
            Stage::Setuid,
            Stage::Chdir,
        ];
        for s in stages {
            assert_eq!(Stage::from_wire(s.to_wire()), Some(s));
        }
        assert_eq!(Stage::from_wire(0), None);
        let msg = |stage, errno| ExecError { stage, errno }.to_string();
        assert_eq!(
            msg(Stage::Chdir, libc::ENOENT),
            "cannot change to directory: No such file or directory"
        );
        assert_eq!(
            msg(Stage::Setuid, libc::EPERM),
            "setuid: Operation not permitted"
        );
        assert_eq!(
            msg(
                Stage::Rlimit {
                    resource: libc::RLIMIT_NOFILE as i32
                },
                libc::EINVAL
            ),
            "setrlimit(RLIMIT_NOFILE): Invalid argument"
        );
        assert_eq!(msg(Stage::Exec, libc::ENOENT), "No such file or directory");
    }

    #[test]
    fn environment_layers_override_in_order() {
        let keel = os(&[
            ("A", "keel"),
            ("B", "keel"),
            ("HOME", "/root"),
            ("USER", "root"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("LISTEN_FDS", "2"),
        ]);
        let mut s = spec(&["true"]);
        s.credentials = Some(nobody());
        s.env_file = os(&[("B", "file"), ("C", "file"), ("HOME", "/from-file")]);
        s.environment = os(&[("C", "env"), ("D", "env"), ("LOGNAME", "explicit")]);
        let extra = os(&[("D", "extra"), ("NOTIFY_SOCKET", "/run/keel/notify")]);
        let env = service_environment(&s, &keel, &extra).unwrap();
        assert_eq!(
            env,
            os(&[
                ("A", "keel"),
                ("B", "file"),
                ("HOME", "/from-file"),
                ("USER", "nobody"),
                ("LOGNAME", "explicit"),
                ("C", "env"),
                ("D", "extra"),
                ("NOTIFY_SOCKET", "/run/keel/notify"),
            ])
        );
        // Not inherited: only what the service itself says.
        s.inherit_environment = false;
        s.env_file.clear();
        s.environment.clear();
        let env = service_environment(&s, &keel, &[]).unwrap();
        assert_eq!(
            env,
            os(&[
                ("HOME", "/nonexistent"),
                ("USER", "nobody"),
                ("LOGNAME", "nobody")
            ])
        );
    }

    #[test]
    fn service_runs_as_its_user_with_its_setup() {
        let dir = scratch("setup");
        let mut s = sh(
            "cat /proc/self/status; env; echo cwd=$(pwd); echo umask=$(umask); \
             echo nofile=$(ulimit -Sn)/$(ulimit -Hn)",
        );
        s.credentials = Some(nobody());
        s.working_directory = Some(dir.clone());
        s.umask = Some(0o027);
        s.rlimits = vec![Rlimit {
            resource: libc::RLIMIT_NOFILE as i32,
            soft: 77,
            hard: 99,
        }];
        s.environment = os(&[("SVC", "yes")]);
        let r = run_service(&s, &[("NOTIFY_SOCKET", "/n")]);
        assert_eq!(r.exec, ExecStatus::Started);
        assert_eq!(r.code, 0, "{}", r.stdout);
        let out = &r.stdout;
        assert_eq!(line(out, "Uid:"), "\t65534\t65534\t65534\t65534");
        assert_eq!(line(out, "Gid:"), "\t65534\t65534\t65534\t65534");
        // The kernel sorts the supplementary groups.
        assert_eq!(line(out, "Groups:").trim(), "100 4242 65534");
        assert_eq!(line(out, "HOME="), "/nonexistent");
        assert_eq!(line(out, "USER="), "nobody");
        assert_eq!(line(out, "LOGNAME="), "nobody");
        assert_eq!(line(out, "SVC="), "yes");
        assert_eq!(line(out, "KEEL_TEST="), "keel");
        assert_eq!(line(out, "NOTIFY_SOCKET="), "/n");
        assert_eq!(line(out, "cwd="), dir.to_str().unwrap());
        assert_eq!(line(out, "umask="), "0027");
        assert_eq!(line(out, "nofile="), "77/99");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn empty_environment_and_the_services_own_path() {
        let mut s = spec(&["env"]);
        s.inherit_environment = false;
        // No PATH of its own: `env` is found through keel's.
        let r = run_service(&s, &[]);
        assert_eq!((r.exec, r.code), (ExecStatus::Started, 0));
        assert_eq!(r.stdout, "");
        let r = run_service(&s, &[("X", "1")]);
        assert_eq!(r.stdout, "X=1\n");
        // Its own PATH wins over keel's, even when it finds nothing.
        s.environment = os(&[("PATH", "/nonexistent-keel-dir")]);
        let r = run_service(&s, &[]);
        let err = ExecError {
            stage: Stage::Exec,
            errno: libc::ENOENT,
        };
        assert_eq!((r.exec, r.code), (ExecStatus::Failed(err), 127));
    }

    #[test]
    fn single_command_mode_inherits_keels_environment() {
        let mut cmd = prep(&["/usr/bin/env"], None);
        let r = run(&mut cmd, ChildIo::default());
        assert_eq!(r.code, 0);
        let mut mine: Vec<String> = std::env::vars_os()
            .map(|(k, v)| format!("{}={}", k.display(), v.display()))
            .collect();
        let mut theirs: Vec<String> = r.stdout.lines().map(String::from).collect();
        mine.sort();
        theirs.sort();
        assert_eq!(theirs, mine);
    }

    #[test]
    fn notify_fd_lands_at_its_number_even_over_a_source() {
        // At 3, the usual s6 choice.
        let (nrd, nwr) = pipe();
        let mut cmd = Prepared::service(&sh("echo out; echo ready >&3"), &os(KEEL_ENV), &[])
            .expect("prepare");
        let io = ChildIo {
            extra: Some(ExtraFd {
                source: nwr.as_raw_fd(),
                target: 3,
            }),
            ..ChildIo::default()
        };
        let r = run(&mut cmd, io);
        drop(nwr);
        assert_eq!((r.code, r.stdout.as_str()), (0, "out\n"));
        assert_eq!(read_all(nrd), "ready\n");

        // The target is the number of the stdout source, and the notify source sits at its
        // own target: both must still end up right.
        let (ord, owr) = pipe();
        let (nrd, nwr) = pipe();
        let n = owr.as_raw_fd();
        // Through /proc: dash redirects only one-digit fds, and under a busy test harness
        // this number can be 10 or more.
        let script = format!("echo out; echo ready >/proc/self/fd/{n}");
        let mut cmd = Prepared::service(&sh(&script), &os(KEEL_ENV), &[]).expect("prepare");
        let io = ChildIo {
            stdout: Some(n),
            extra: Some(ExtraFd {
                source: nwr.as_raw_fd(),
                target: n,
            }),
            ..ChildIo::default()
        };
        let child = spawn_with(&mut cmd, &inherited(), false, &io).expect("spawn");
        drop((owr, nwr));
        let (out, note) = (read_all(ord), read_all(nrd));
        assert_eq!(wait(child.pid), 0);
        assert_eq!((out.as_str(), note.as_str()), ("out\n", "ready\n"));

        let (nrd, nwr) = pipe();
        let n = nwr.as_raw_fd();
        let script = format!("echo ready >/proc/self/fd/{n}");
        let mut cmd = Prepared::service(&sh(&script), &os(KEEL_ENV), &[]).expect("prepare");
        let io = ChildIo {
            extra: Some(ExtraFd {
                source: n,
                target: n,
            }),
            ..ChildIo::default()
        };
        let r = run(&mut cmd, io);
        drop(nwr);
        assert_eq!(r.code, 0);
        assert_eq!(read_all(nrd), "ready\n");
    }

    #[test]
    fn stdio_to_pipes_files_and_dev_null() {
        let dir = scratch("stdio");
        let file = dir.join("out.log");
        let (erd, ewr) = pipe();
        let null = open_dev_null().unwrap();
        let mut cmd = Prepared::service(&sh("cat; echo out; echo err >&2"), &os(KEEL_ENV), &[])
            .expect("prepare");
        for _ in 0..2 {
            let out = open_output_file(&file).unwrap();
            let io = ChildIo {
                stdin: Some(null.as_raw_fd()),
                stdout: Some(out.as_raw_fd()),
                stderr: Some(ewr.as_raw_fd()),
                extra: None,
            };
            let child = spawn_with(&mut cmd, &inherited(), false, &io).expect("spawn");
            assert_eq!(wait(child.pid), 0);
        }
        drop(ewr);
        assert_eq!(read_all(erd), "err\nerr\n");
        // Appended, not overwritten.
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "out\nout\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        // SAFETY (test): read the umask back unchanged.
        let umask = unsafe {
            let m = libc::umask(0);
            libc::umask(m);
            m
        };
        assert_eq!(mode, 0o640 & !(umask as u32));
        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(
            open_output_file(Path::new("/nonexistent-keel/x")).unwrap_err(),
            SysError {
                op: "open",
                errno: libc::ENOENT
            }
        );
    }

    #[test]
    fn failures_report_their_stage() {
        let check = |s: &ServiceSpec, io: ChildIo, stage, errno, code| {
            let mut cmd = Prepared::service(s, &os(KEEL_ENV), &[]).expect("prepare");
            let r = run(&mut cmd, io);
            assert_eq!(r.exec, ExecStatus::Failed(ExecError { stage, errno }));
            assert_eq!(r.code, code);
            assert_eq!(r.stdout, "");
        };
        let mut s = sh("echo ran");
        s.working_directory = Some("/nonexistent-keel-dir".into());
        check(&s, ChildIo::default(), Stage::Chdir, libc::ENOENT, 200);

        let mut s = sh("echo ran");
        s.rlimits = vec![Rlimit {
            resource: libc::RLIMIT_NOFILE as i32,
            soft: 100,
            hard: 50,
        }];
        let stage = Stage::Rlimit {
            resource: libc::RLIMIT_NOFILE as i32,
        };
        check(&s, ChildIo::default(), stage, libc::EINVAL, 205);

        // A notification fd beyond RLIMIT_NOFILE cannot exist.
        let io = ChildIo {
            extra: Some(ExtraFd {
                source: 2,
                target: 1 << 30,
            }),
            ..ChildIo::default()
        };
        check(&sh("echo ran"), io, Stage::Fds, libc::EINVAL, 202);

        check(
            &spec(&["keel-no-such-program"]),
            ChildIo::default(),
            Stage::Exec,
            libc::ENOENT,
            127,
        );

        // Refused before any fork.
        let mut cmd = Prepared::service(&sh("true"), &os(KEEL_ENV), &[]).expect("prepare");
        let io = ChildIo {
            extra: Some(ExtraFd {
                source: 2,
                target: 1,
            }),
            ..ChildIo::default()
        };
        let e = spawn_with(&mut cmd, &inherited(), false, &io)
            .err()
            .unwrap();
        assert_eq!(e.errno, libc::EINVAL);
    }

    /// Spawn `cmd` from a forked helper that first dropped some privilege (`drop_privilege`);
    /// returns the exec status and the service's exit code. The helper is a fork of the
    /// multi-threaded test harness, so it only calls spawn's allocation-free paths on data
    /// prepared here.
    fn in_helper(drop_privilege: fn() -> bool, cmd: &mut Prepared) -> (ExecStatus, i32) {
        let (rd, wr) = pipe();
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            if !drop_privilege() {
                unsafe { libc::_exit(90) };
            }
            let Ok(child) = spawn_with(cmd, &inherited(), false, &ChildIo::default()) else {
                unsafe { libc::_exit(91) };
            };
            let mut status = 0;
            if unsafe { libc::waitpid(child.pid, &mut status, 0) } != child.pid {
                unsafe { libc::_exit(92) };
            }
            let mut buf = [0u8; 12];
            let n = unsafe { libc::read(child.status.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
            buf[8..].copy_from_slice(&status.to_ne_bytes());
            let len = if n == 8 { 12 } else { 4 };
            let from = if n == 8 { 0 } else { 8 };
            unsafe {
                libc::write(wr.as_raw_fd(), buf[from..].as_ptr().cast(), len);
                libc::_exit(0)
            }
        }
        drop(wr);
        let mut report = Vec::new();
        std::fs::File::from(rd).read_to_end(&mut report).unwrap();
        assert_eq!(wait(pid), 0, "helper failed");
        let (exec, status) = match report.len() {
            4 => (ExecStatus::Started, &report[..]),
            12 => {
                let stage = u32::from_ne_bytes(report[0..4].try_into().unwrap());
                let errno = i32::from_ne_bytes(report[4..8].try_into().unwrap());
                let stage = Stage::from_wire(stage).unwrap();
                (ExecStatus::Failed(ExecError { stage, errno }), &report[8..])
            }
            n => panic!("helper report of {n} bytes"),
        };
        let status = i32::from_ne_bytes(status.try_into().unwrap());
        assert!(libc::WIFEXITED(status));
        (exec, libc::WEXITSTATUS(status))
    }

    fn become_nobody() -> bool {
        unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(65534) == 0
                && libc::setuid(65534) == 0
        }
    }

    /// Stay root but lose CAP_SETUID (capset on this process only).
    fn lose_cap_setuid() -> bool {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut h = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let mut d = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        unsafe {
            if libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) != 0 {
                return false;
            }
            // CAP_SETUID is capability 7 (linux/capability.h).
            let bit = 1u32 << 7;
            d[0].effective &= !bit;
            d[0].permitted &= !bit;
            libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) == 0
        }
    }

    #[test]
    fn unprivileged_keel_runs_services_as_itself_only() {
        let mut s = spec(&["/bin/true"]);
        s.credentials = Some(Credentials {
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 4242],
            user: None,
            home: None,
        });
        let mut itself = Prepared::service(&s, &[], &[]).expect("prepare");
        assert_eq!(
            in_helper(become_nobody, &mut itself),
            (ExecStatus::Started, 0)
        );
        s.credentials = Some(Credentials {
            uid: 0,
            gid: 0,
            groups: vec![],
            user: None,
            home: None,
        });
        let mut root = Prepared::service(&s, &[], &[]).expect("prepare");
        let err = ExecError {
            stage: Stage::Setgroups,
            errno: libc::EPERM,
        };
        assert_eq!(
            in_helper(become_nobody, &mut root),
            (ExecStatus::Failed(err), 216)
        );
    }

    #[test]
    fn setuid_failure_is_reported_as_such() {
        let mut s = spec(&["/bin/true"]);
        s.credentials = Some(nobody());
        let mut cmd = Prepared::service(&s, &[], &[]).expect("prepare");
        let err = ExecError {
            stage: Stage::Setuid,
            errno: libc::EPERM,
        };
        assert_eq!(
            in_helper(lose_cap_setuid, &mut cmd),
            (ExecStatus::Failed(err), 217)
        );
    }
}
