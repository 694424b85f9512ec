//! Spawning a child: fork, set it up, exec, and report an exec failure back to keel.
//!
//! Owns: everything between `fork` and `exec`. All memory the child needs (argv, the PATH
//! candidates, the `/bin/sh` fallback argv) is prepared in the parent, so the child only makes
//! async-signal-safe syscalls: no allocation, no locks, no logging.
//! An exec failure travels back through a CLOEXEC pipe as (stage, errno): the pipe reaches
//! end-of-file without data exactly when exec succeeded. The runtime reads it from the event
//! loop, never blocking on it.
//! Must not: wait for children (reap does), or decide what a failure means (the supervisor).

use crate::plan::{Isolation, ServiceSpec};
use crate::signals::{self, Inherited};
use crate::sys::{SysError, errno, pipe_cloexec_nonblock, strerror};
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

unsafe extern "C" {
    static environ: *const *const libc::c_char;
}

/// Where in the child a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `execve` of every candidate failed.
    Exec,
}

impl Stage {
    fn to_wire(self) -> u32 {
        match self {
            Stage::Exec => 1,
        }
    }
    fn from_wire(_v: u32) -> Stage {
        // One stage so far; user/group switching and cgroup joining will add theirs.
        Stage::Exec
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
    /// The exit code the child exits with: 127 when the program was not found, 126 when it
    /// was found but could not be run (the shell's and tini's convention).
    pub fn exit_code(&self) -> u8 {
        match (self.stage, self.errno) {
            (Stage::Exec, libc::ENOENT | libc::ENOTDIR) => 127,
            (Stage::Exec, _) => 126,
        }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&strerror(self.errno))
    }
}

/// A command made ready for exec: all C strings built, PATH resolved into candidates.
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
}

fn cstring(s: &OsStr) -> Result<CString, String> {
    CString::new(s.as_bytes()).map_err(|_| format!("'{}' contains a NUL byte", s.display()))
}

impl Prepared {
    /// Build the exec data for `spec`, resolving `argv[0]` against `path` (the value of
    /// `PATH`; the C library's default when unset).
    pub fn new(spec: &ServiceSpec, path: Option<&OsStr>) -> Result<Prepared, String> {
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

        let candidates = if prog.as_bytes().contains(&b'/') {
            vec![cstring(prog)?]
        } else {
            let path = path
                .map(|p| p.as_bytes())
                .unwrap_or(b"/usr/local/bin:/bin:/usr/bin");
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
            c
        };
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
        })
    }

    /// Make an exec failure exit with `code` instead of 127/126.
    pub fn with_exec_failure_code(mut self, code: Option<u8>) -> Prepared {
        self.exec_failure_code = code;
        self
    }

    /// How the child is isolated.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }
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

/// Fork and exec `cmd`. The child gets its own process group (and the terminal if
/// `give_terminal`) or its own session, keel's inherited signal state, keel's stdio,
/// environment and cwd.
pub fn spawn(
    cmd: &mut Prepared,
    inherited: &Inherited,
    give_terminal: bool,
) -> Result<Child, SysError> {
    let (rd, wr) = pipe_cloexec_nonblock()?;
    // SAFETY: keel is single-threaded; the child below only makes async-signal-safe calls
    // on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SysError::last("fork"));
    }
    if pid == 0 {
        // SAFETY: we are the child; child_main never returns.
        unsafe { child_main(cmd, inherited, give_terminal, wr.as_raw_fd()) }
    }
    drop(wr);
    Ok(Child { pid, status: rd })
}

/// The child between fork and exec. Every signal is still blocked here (inherited from
/// keel), which is what makes `tcsetpgrp` from a background group succeed without SIGTTOU.
unsafe fn child_main(
    cmd: &mut Prepared,
    inherited: &Inherited,
    give_terminal: bool,
    report: libc::c_int,
) -> ! {
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
    signals::restore_in_child(inherited);

    // execvp's search, over candidates computed in the parent: EACCES is remembered and the
    // search goes on; "not here" errors go on; any other error stops it.
    let mut saw_eacces = false;
    let mut last = libc::ENOENT;
    for i in 0..cmd.candidates.len() {
        let path = cmd.candidates[i].as_ptr();
        // SAFETY: path and argv are valid NUL-terminated arrays built in the parent; environ
        // is the process environment.
        unsafe { libc::execve(path, cmd.argv.as_ptr(), environ) };
        let e = errno();
        match e {
            libc::ENOEXEC => {
                // A script without #!: run it with /bin/sh, as execvp does.
                cmd.sh_argv[1] = path;
                // SAFETY: as above.
                unsafe { libc::execve(cmd.sh.as_ptr(), cmd.sh_argv.as_ptr(), environ) };
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
    let err = ExecError {
        stage: Stage::Exec,
        errno: last,
    };
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&err.stage.to_wire().to_ne_bytes());
    msg[4..].copy_from_slice(&err.errno.to_ne_bytes());
    // SAFETY: write and _exit are async-signal-safe; msg is valid for 8 bytes.
    unsafe {
        libc::write(report, msg.as_ptr().cast(), msg.len());
        let code = cmd.exec_failure_code.unwrap_or(err.exit_code());
        libc::_exit(code as libc::c_int)
    }
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
            Ok(ExecStatus::Failed(ExecError {
                stage: Stage::from_wire(stage),
                errno,
            }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    fn prep(argv: &[&str], path: Option<&str>) -> Prepared {
        let plan = Plan::single(argv.iter().map(OsString::from).collect());
        Prepared::new(plan.main.as_ref().unwrap(), path.map(OsStr::new)).expect("prepare")
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
    }

    #[test]
    fn rejects_nul_and_empty() {
        let plan = Plan::single(vec![OsString::from("a\0b")]);
        assert!(Prepared::new(plan.main.as_ref().unwrap(), None).is_err());
        let plan = Plan::single(vec![OsString::new()]);
        assert!(Prepared::new(plan.main.as_ref().unwrap(), None).is_err());
    }

    #[test]
    fn exit_codes_for_exec_failures() {
        let e = |errno| ExecError {
            stage: Stage::Exec,
            errno,
        };
        assert_eq!(e(libc::ENOENT).exit_code(), 127);
        assert_eq!(e(libc::EACCES).exit_code(), 126);
        assert_eq!(e(libc::ENOEXEC).exit_code(), 126);
    }
}
