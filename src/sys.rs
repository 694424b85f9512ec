//! Thin, checked wrappers over the few raw syscalls keel's runtime uses (epoll, pipes, fds).
//!
//! Owns: turning `-1`/`errno` into [`SysError`] values that name the operation that failed.
//! Must not: decide anything. Every fd created here is `O_CLOEXEC`, so nothing keel opens
//! leaks into a child it spawns.

use std::ffi::CStr;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A failed syscall: which operation, and the errno it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysError {
    /// What keel was doing, e.g. `"epoll_wait"` or `"fork"`.
    pub op: &'static str,
    /// The raw errno.
    pub errno: i32,
}

impl SysError {
    /// Capture the calling thread's current errno for `op`.
    pub fn last(op: &'static str) -> SysError {
        SysError { op, errno: errno() }
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, strerror(self.errno))
    }
}

impl std::error::Error for SysError {}

/// The calling thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The C library's text for an errno, without Rust's " (os error N)" suffix, so
/// messages read like every other Unix tool's (`No such file or directory`).
pub fn strerror(errno: i32) -> String {
    // SAFETY: strerror returns a pointer to a static or thread-local NUL-terminated string;
    // keel is single-threaded and copies it out at once.
    let ptr = unsafe { libc::strerror(errno) };
    if ptr.is_null() {
        return format!("errno {errno}");
    }
    // SAFETY: non-null, NUL-terminated (see above).
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// Turn a `-1` return into a [`SysError`] for `op`.
pub fn check(ret: libc::c_int, op: &'static str) -> Result<libc::c_int, SysError> {
    if ret == -1 {
        Err(SysError::last(op))
    } else {
        Ok(ret)
    }
}

/// `pipe2(O_CLOEXEC | O_NONBLOCK)`: (read end, write end).
pub fn pipe_cloexec_nonblock() -> Result<(OwnedFd, OwnedFd), SysError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints.
    check(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) },
        "pipe2",
    )?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Read once from a non-blocking fd into `buf`. `Ok(0)` is end of file; `EAGAIN` is `Ok(None)`.
pub fn read_nonblock(fd: RawFd, buf: &mut [u8]) -> Result<Option<usize>, SysError> {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        match errno() {
            libc::EINTR => continue,
            libc::EAGAIN => return Ok(None),
            e => {
                return Err(SysError {
                    op: "read",
                    errno: e,
                });
            }
        }
    }
}

/// An epoll instance: the only place keel's loop ever sleeps.
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> Result<Epoll, SysError> {
        // SAFETY: no pointers involved.
        let fd = check(
            unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
            "epoll_create1",
        )?;
        // SAFETY: fd was just created and is owned by nobody else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watch `fd` for input (and hang-up), reporting it with `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> Result<(), SysError> {
        self.add_events(fd, token, libc::EPOLLIN as u32)
    }

    /// Watch `fd` for `events` (`EPOLLIN`, `EPOLLOUT`, ...), reporting it with `token`.
    pub fn add_events(&self, fd: RawFd, token: u64, events: u32) -> Result<(), SysError> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event.
        check(
            unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) },
            "epoll_ctl(ADD)",
        )?;
        Ok(())
    }

    /// Change the events watched on `fd` (e.g. stop reading a pipe while its output is
    /// backed up: backpressure). `events == 0` keeps the fd registered but silent.
    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> Result<(), SysError> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event.
        check(
            unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut ev) },
            "epoll_ctl(MOD)",
        )?;
        Ok(())
    }

    /// Stop watching `fd`. Closing the fd does the same; this is for fds that stay open.
    pub fn remove(&self, fd: RawFd) -> Result<(), SysError> {
        // SAFETY: a null event pointer is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        check(
            unsafe {
                libc::epoll_ctl(
                    self.fd.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                )
            },
            "epoll_ctl(DEL)",
        )?;
        Ok(())
    }

    /// Wait for events; `timeout_ms < 0` waits forever (keel's idle state: zero wakeups).
    /// Returns the tokens that are ready; an interrupted wait returns none.
    pub fn wait(&self, events: &mut Vec<u64>, timeout_ms: i32) -> Result<(), SysError> {
        const MAX: usize = 32;
        let mut raw = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        events.clear();
        // SAFETY: raw is a valid buffer of MAX events.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                raw.as_mut_ptr(),
                MAX as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            // A stop/continue of keel (SIGSTOP, SIGCONT) interrupts the wait; not an error.
            return match errno() {
                libc::EINTR => Ok(()),
                e => Err(SysError {
                    op: "epoll_wait",
                    errno: e,
                }),
            };
        }
        events.extend(raw.iter().take(n as usize).map(|e| e.u64));
        Ok(())
    }
}

/// `socket(domain, kind | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)`, named `op` in errors: every
/// socket keel opens (control, sd_notify, TCP readiness checks) is close-on-exec and never
/// blocks the loop.
pub fn socket(
    domain: libc::c_int,
    kind: libc::c_int,
    op: &'static str,
) -> Result<OwnedFd, SysError> {
    // SAFETY: plain syscall.
    let raw = check(
        unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) },
        op,
    )?;
    // SAFETY: socket succeeded, so raw is an open fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A `sockaddr_un` holding `prefix` then `name` in `sun_path`, and the address length to pass
/// (a filesystem path gets its terminating NUL; an abstract name, `prefix` starting with a
/// NUL, must not). `None` if it does not fit.
pub fn sockaddr_un(prefix: &[u8], name: &[u8]) -> Option<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let abstract_ = prefix.first() == Some(&0);
    let used = prefix.len() + name.len() + usize::from(!abstract_);
    if used > addr.sun_path.len() || (!abstract_ && name.contains(&0)) {
        return None;
    }
    for (slot, &b) in addr.sun_path.iter_mut().zip(prefix.iter().chain(name)) {
        *slot = b as libc::c_char;
    }
    let base = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    Some((addr, (base + used) as libc::socklen_t))
}
