//! Readiness: how a service tells keel "I am ready", and the bookkeeping for probes.
//!
//! Owns: the sd_notify socket (one per notify-type service: the socket itself names the
//! service, so no sender-pid table is needed and grandchildren or `systemd-notify` helpers
//! work too), the reader of an s6/dinit-style notify pipe, non-blocking TCP connects, the
//! parser of sd_notify messages. Probe scheduling (attempts, intervals, timeouts) and the
//! watchdog deadline are the supervisor's, as timers.
//! Must not: block, sleep or read the clock. Every call returns at once; the runtime calls
//! them when epoll says an fd is ready. What a notice or a probe result means for a service
//! is the supervisor's call.

use crate::sys::{self, SysError, check, errno, read_nonblock};
use std::ffi::{CString, OsString};
use std::fs::DirBuilder;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where notify sockets go unless the caller says otherwise: `/run/keel/notify/<service>`.
pub const DEFAULT_NOTIFY_DIR: &str = "/run/keel/notify";

/// The largest sd_notify datagram accepted. systemd uses the same limit (`PIPE_BUF`); a longer
/// one is refused whole, because a truncated message could end mid-assignment.
pub const MAX_DATAGRAM: usize = 4096;

/// `STATUS=` text is cut to this many bytes: it ends up in log lines and status replies.
pub const MAX_STATUS: usize = 512;

/// At most this many datagrams per [`NotifySocket::recv_all`]: a service flooding its socket
/// must not keep keel's loop from everything else. epoll is level-triggered, so the rest are
/// reported again on the next pass.
const MAX_DATAGRAMS_PER_CALL: usize = 256;

/// One sd_notify assignment keel understands. Everything else systemd knows (`FDSTORE=1`,
/// `BUSERROR=`, `MONOTONIC_USEC=`, ...) is ignored, as systemd ignores keys it does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `READY=1`: startup finished.
    Ready,
    /// `RELOADING=1`: reloading its configuration; `READY=1` follows when done.
    Reloading,
    /// `STOPPING=1`: shutting down on its own.
    Stopping,
    /// `STATUS=...`: free text, made printable and cut to [`MAX_STATUS`] bytes.
    Status(String),
    /// `MAINPID=n`: the service's main process is now `n` (the supervisor must check that `n`
    /// belongs to the service before believing it).
    MainPid(i32),
    /// `WATCHDOG=1`: a keep-alive ping.
    Watchdog,
    /// `WATCHDOG=trigger`: the service asks to be treated as hung now.
    WatchdogTrigger,
    /// `WATCHDOG_USEC=n`: a new watchdog interval in microseconds (0 turns it off).
    WatchdogUsec(u64),
    /// `EXTEND_TIMEOUT_USEC=n`: the current start/stop may take this much longer from now.
    ExtendTimeoutUsec(u64),
    /// `ERRNO=n`: the errno the service failed with.
    Errno(i32),
}

/// Parse one sd_notify datagram: newline-separated `KEY=VALUE` assignments.
///
/// Unknown keys are skipped silently (systemd does the same, so services written for newer
/// systemd keep working); malformed values of known keys are skipped with a debug log. A
/// datagram with an embedded NUL is dropped whole, as systemd drops it.
pub fn parse_notify(data: &[u8]) -> Vec<Notice> {
    let mut notices = Vec::new();
    if data.contains(&0) {
        log::debug!("ignoring a notification with an embedded NUL byte");
        return notices;
    }
    for line in data.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(Some(n)) => notices.push(n),
            Ok(None) => {}
            Err(reason) => {
                let shown = String::from_utf8_lossy(line.get(..80).unwrap_or(line));
                log::debug!("ignoring notification {shown:?}: {reason}");
            }
        }
    }
    notices
}

/// Parse one assignment. `Ok(None)` is a key keel does not know (or a value it ignores by
/// design, like `READY=0`); `Err` says why a known key's value is unusable.
pub fn parse_line(line: &[u8]) -> Result<Option<Notice>, &'static str> {
    let Some(eq) = line.iter().position(|&b| b == b'=') else {
        return Err("not a KEY=VALUE assignment");
    };
    let (key, rest) = line.split_at(eq);
    let value = rest.get(1..).unwrap_or(&[]);
    // systemd acts only on the exact "=1" of these flags; anything else is not an error but
    // not a signal either (READY=0 means nothing).
    let flag = |n: Notice| Ok((value == b"1").then_some(n));
    match key {
        b"READY" => flag(Notice::Ready),
        b"RELOADING" => flag(Notice::Reloading),
        b"STOPPING" => flag(Notice::Stopping),
        b"WATCHDOG" => match value {
            b"1" => Ok(Some(Notice::Watchdog)),
            b"trigger" => Ok(Some(Notice::WatchdogTrigger)),
            _ => Err("WATCHDOG takes 1 or trigger"),
        },
        b"STATUS" => Ok(Some(Notice::Status(status_text(value)))),
        b"MAINPID" => match parse_u64(value) {
            Some(pid) if pid > 0 && pid <= i32::MAX as u64 => Ok(Some(Notice::MainPid(pid as i32))),
            _ => Err("MAINPID is not a positive pid"),
        },
        b"WATCHDOG_USEC" => parse_u64(value)
            .map(|n| Some(Notice::WatchdogUsec(n)))
            .ok_or("WATCHDOG_USEC is not a number of microseconds"),
        b"EXTEND_TIMEOUT_USEC" => parse_u64(value)
            .map(|n| Some(Notice::ExtendTimeoutUsec(n)))
            .ok_or("EXTEND_TIMEOUT_USEC is not a number of microseconds"),
        b"ERRNO" => match parse_u64(value) {
            Some(n) if n <= i32::MAX as u64 => Ok(Some(Notice::Errno(n as i32))),
            _ => Err("ERRNO is not a non-negative errno"),
        },
        _ => Ok(None),
    }
}

/// Plain decimal digits only: no sign, no spaces, no overflow.
fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Make `STATUS=` text safe to print: invalid UTF-8 and control characters (terminal escapes
/// in keel's log) become U+FFFD, and the result is cut at a character boundary.
fn status_text(v: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(v).chars() {
        let c = if c.is_control() { '\u{FFFD}' } else { c };
        if out.len() + c.len_utf8() > MAX_STATUS {
            break;
        }
        out.push(c);
    }
    out
}

/// One datagram received on a [`NotifySocket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The sender's pid as keel sees it (`SO_PASSCRED`); `None` when the sender is in a pid
    /// namespace keel cannot see into. For `MAINPID` checks and logs.
    pub pid: Option<i32>,
    /// The sender's uid.
    pub uid: Option<u32>,
    /// What it said.
    pub notices: Vec<Notice>,
}

/// What one `recvmsg` on a notify socket found.
enum Got {
    /// No datagram pending.
    Nothing,
    /// An oversized datagram, dropped.
    Refused,
    /// One datagram.
    Datagram(Datagram),
}

/// Where a notify socket is bound.
#[derive(Debug)]
enum Address {
    /// A filesystem socket; `(dev, ino)` tell it apart from a newer socket bound at the same
    /// path, which drop must not unlink.
    Path { path: PathBuf, dev: u64, ino: u64 },
    /// An abstract address, without the leading NUL.
    Abstract(String),
}

/// A service's sd_notify socket: an `AF_UNIX` datagram socket whose address goes into the
/// service's `NOTIFY_SOCKET`. Level-triggered `EPOLLIN` on [`NotifySocket::fd`] means
/// datagrams are waiting; read them with [`NotifySocket::recv_all`]. Dropping it closes the
/// socket and removes its path.
#[derive(Debug)]
pub struct NotifySocket {
    fd: OwnedFd,
    service: String,
    addr: Address,
}

impl NotifySocket {
    /// Create the socket for `service` at `dir/<service>` (usually [`DEFAULT_NOTIFY_DIR`]).
    ///
    /// Missing directories are created `0755`, so a service running as any user can reach
    /// the socket; a stale socket left by an earlier keel is replaced, but a live one (whose
    /// owner still reads it) is not. With
    /// `owner = Some((uid, gid))` (the service runs as that user) the socket is chowned to it,
    /// mode `0600`: only that user and root can send, so no other service can forge its
    /// readiness. With `owner = None` (the service runs as root) the mode is `0666`, like
    /// systemd's own notify socket, because daemons started as root often drop privileges
    /// before they send `READY=1`; the sender's pid and uid come with every [`Datagram`] for
    /// the supervisor to check.
    ///
    /// When the path cannot be used (read-only or missing `/run`, a live socket or a
    /// non-socket in the way, a path too long, chown refused) the socket falls back to the abstract address
    /// `@keel/<pid>/<service>`, written with a leading `@` in `NOTIFY_SOCKET` as systemd's
    /// clients expect. Abstract addresses have no permissions (any process in keel's network
    /// namespace can send) and are not reachable from another network namespace.
    pub fn bind(
        dir: &Path,
        service: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<NotifySocket, SysError> {
        // The name becomes a path component: it must not climb out of `dir`.
        if service.is_empty()
            || service == "."
            || service == ".."
            || service.bytes().any(|b| b == b'/' || b == 0)
        {
            return Err(SysError {
                op: "notify socket name",
                errno: libc::EINVAL,
            });
        }
        let (fd, addr) = match bind_path(dir, service, owner) {
            Ok(bound) => bound,
            Err(e) => {
                log::debug!(
                    "notify socket for {service}: cannot use {}: {e}; using an abstract address",
                    dir.join(service).display()
                );
                bind_abstract(service)?
            }
        };
        let sock = NotifySocket {
            fd,
            service: service.to_string(),
            addr,
        };
        log::debug!(
            "notify socket for {service}: NOTIFY_SOCKET={}",
            sock.env_value().to_string_lossy()
        );
        Ok(sock)
    }

    /// The value for the service's `NOTIFY_SOCKET`: the path, or `@name` for an abstract one.
    pub fn env_value(&self) -> OsString {
        match &self.addr {
            Address::Path { path, .. } => path.clone().into_os_string(),
            Address::Abstract(name) => OsString::from(format!("@{name}")),
        }
    }

    /// The socket's path, if it has one (not after the abstract fallback).
    pub fn path(&self) -> Option<&Path> {
        match &self.addr {
            Address::Path { path, .. } => Some(path),
            Address::Abstract(_) => None,
        }
    }

    /// The fd to register for `EPOLLIN`.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Append every pending datagram (up to a per-call bound; epoll reports the rest) to
    /// `out`. Oversized datagrams are refused with a debug log, and any fds a sender attached
    /// (`FDSTORE=1`) are closed: keel keeps no fd store. Never blocks. On an error, what was
    /// read before it is already in `out`.
    pub fn recv_all(&self, out: &mut Vec<Datagram>) -> Result<(), SysError> {
        let mut buf = [0u8; MAX_DATAGRAM];
        for _ in 0..MAX_DATAGRAMS_PER_CALL {
            match self.recv_one(&mut buf)? {
                Got::Datagram(d) => out.push(d),
                Got::Refused => {}
                Got::Nothing => return Ok(()),
            }
        }
        Ok(())
    }

    /// One `recvmsg`.
    fn recv_one(&self, buf: &mut [u8; MAX_DATAGRAM]) -> Result<Got, SysError> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Room for the credentials plus a few dozen fds; fds that do not fit are closed by
        // the kernel (MSG_CTRUNC). u64 elements keep it aligned for cmsghdr.
        let mut control = [0u64; 32];
        // SAFETY: msghdr is plain data; all-zero is a valid empty header (musl has padding
        // fields, so it is built this way rather than with a struct literal).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        let n = loop {
            // SAFETY: msg points to a live iovec and control buffer of the sizes given.
            // MSG_TRUNC makes the return value the datagram's real length; MSG_CMSG_CLOEXEC
            // keeps passed fds from leaking into a child before they are closed below.
            let n = unsafe {
                libc::recvmsg(
                    self.fd.as_raw_fd(),
                    &mut msg,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC,
                )
            };
            if n >= 0 {
                break n as usize;
            }
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => return Ok(Got::Nothing),
                e => {
                    return Err(SysError {
                        op: "recvmsg(notify socket)",
                        errno: e,
                    });
                }
            }
        };
        let (pid, uid) = take_control(&msg, &self.service);
        if n > buf.len() || msg.msg_flags & libc::MSG_TRUNC != 0 {
            log::debug!(
                "{}: refusing a {n}-byte notification from pid {} (limit {MAX_DATAGRAM})",
                self.service,
                pid.unwrap_or(0)
            );
            return Ok(Got::Refused);
        }
        let notices = parse_notify(buf.get(..n).unwrap_or(&[]));
        Ok(Got::Datagram(Datagram { pid, uid, notices }))
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        if let Address::Path { path, dev, ino } = &self.addr {
            // Only our own socket: if ours was unlinked and something else bound there since
            // (another keel sharing this /run), unlinking that would cut its service off.
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.dev() == *dev && m.ino() == *ino => {
                    if let Err(e) = std::fs::remove_file(path) {
                        log::debug!("cannot remove {}: {e}", path.display());
                    }
                }
                _ => {}
            }
        }
    }
}

/// Read the control messages of one datagram: return the sender's credentials and close
/// every fd it passed.
fn take_control(msg: &libc::msghdr, service: &str) -> (Option<i32>, Option<u32>) {
    let (mut pid, mut uid) = (None, None);
    // SAFETY: msg was filled by recvmsg; the CMSG_* macros stay within msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: non-null cmsg points into the control buffer, inside its length.
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        // SAFETY: as above; CMSG_DATA points just past the header.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        // SAFETY: CMSG_LEN is arithmetic only.
        let header = unsafe { libc::CMSG_LEN(0) } as usize;
        // cmsg_len is usize on glibc but u32 on musl: the cast is needed on one of them.
        #[allow(clippy::unnecessary_cast)]
        let payload = (len as usize).saturating_sub(header);
        if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS {
            if payload >= size_of::<libc::ucred>() {
                // SAFETY: payload holds a ucred; read_unaligned copes with any alignment.
                let cred = unsafe { std::ptr::read_unaligned(data.cast::<libc::ucred>()) };
                pid = (cred.pid > 0).then_some(cred.pid);
                uid = Some(cred.uid);
            }
        } else if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            let count = payload / size_of::<libc::c_int>();
            log::debug!("{service}: closing {count} fd(s) sent with a notification");
            for i in 0..count {
                // SAFETY: the payload holds `count` ints; each is an fd now open in keel.
                let fd = unsafe { std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i)) };
                // SAFETY: keel owns this fd from the moment recvmsg installed it.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: msg and cmsg are valid as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    (pid, uid)
}

/// A fresh `AF_UNIX` datagram socket that receives its senders' credentials.
fn notify_socket() -> Result<OwnedFd, SysError> {
    let fd = sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, "socket(AF_UNIX)")?;
    // The kernel then attaches the sender's pid/uid/gid to every datagram, even when the
    // sender did not ask to send credentials.
    let one: libc::c_int = 1;
    // SAFETY: the option value points to a live c_int of the given size.
    check(
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        },
        "setsockopt(SO_PASSCRED)",
    )?;
    Ok(fd)
}

/// Bind a new socket at `dir/service`, replacing a stale socket, and give it to `owner`.
/// Each try gets its own socket: a socket bound to a path cannot be bound again elsewhere.
fn bind_path(
    dir: &Path,
    service: &str,
    owner: Option<(u32, u32)>,
) -> Result<(OwnedFd, Address), SysError> {
    let io = |op: &'static str| {
        move |e: std::io::Error| SysError {
            op,
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        }
    };
    make_dirs(dir)?;
    let path = dir.join(service);
    let bytes = path.as_os_str().as_bytes();
    let (addr, len) = sys::sockaddr_un(b"", bytes).ok_or(SysError {
        op: "bind",
        errno: libc::ENAMETOOLONG,
    })?;
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => {
            // Left by an earlier keel (crash, SIGKILL) if nobody reads it any more; a live
            // one (another keel sharing this /run) is not ours to take over.
            if !is_stale(&addr, len)? {
                return Err(SysError {
                    op: "bind (a live socket is in the way)",
                    errno: libc::EADDRINUSE,
                });
            }
            std::fs::remove_file(&path).map_err(io("unlink"))?
        }
        // Not ours to delete.
        Ok(_) => {
            return Err(SysError {
                op: "bind (a non-socket is in the way)",
                errno: libc::EEXIST,
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("lstat")(e)),
    }
    let fd = notify_socket()?;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes.
    check(
        unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        },
        "bind",
    )?;
    let set_owner = || -> Result<Address, SysError> {
        let c = CString::new(bytes).map_err(|_| SysError {
            op: "bind",
            errno: libc::EINVAL,
        })?;
        // Sending needs write permission on the socket file.
        let mode = match owner {
            Some((uid, gid)) => {
                // SAFETY: c is a valid C string; lchown does not follow a symlink.
                check(unsafe { libc::lchown(c.as_ptr(), uid, gid) }, "chown")?;
                0o600
            }
            None => 0o666,
        };
        // SAFETY: c is a valid C string; the path is the socket bound just above, in a
        // directory only root can write to.
        check(unsafe { libc::chmod(c.as_ptr(), mode) }, "chmod")?;
        let m = std::fs::symlink_metadata(&path).map_err(io("lstat"))?;
        Ok(Address::Path {
            path: path.clone(),
            dev: m.dev(),
            ino: m.ino(),
        })
    };
    match set_owner() {
        Ok(addr) => Ok((fd, addr)),
        Err(e) => {
            // Do not leave a socket nobody will read (or with the wrong owner) behind.
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// `mkdir -p` with mode 0755 for the directories it creates, whatever keel's umask: a
/// service running as another user must be able to reach its socket. Existing directories
/// are left as they are.
fn make_dirs(dir: &Path) -> Result<(), SysError> {
    let mut prefix = PathBuf::new();
    for part in dir.components() {
        prefix.push(part);
        match DirBuilder::new().mode(0o755).create(&prefix) {
            Ok(()) => std::fs::set_permissions(&prefix, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| SysError {
                    op: "chmod",
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(SysError {
                    op: "mkdir",
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                });
            }
        }
    }
    Ok(())
}

/// Whether the datagram socket at `addr` has nobody reading it: a connect to it is refused.
/// Never blocks (connecting a datagram socket only sets its default destination).
fn is_stale(addr: &libc::sockaddr_un, len: libc::socklen_t) -> Result<bool, SysError> {
    let probe = sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, "socket(AF_UNIX)")?;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes.
    let r = unsafe {
        libc::connect(
            probe.as_raw_fd(),
            (addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    if r == 0 {
        return Ok(false);
    }
    match errno() {
        libc::ECONNREFUSED => Ok(true),
        // EPROTOTYPE: a stream socket, somebody else's; anything else: leave it be too.
        e => Err(SysError {
            op: "connect (the socket in the way)",
            errno: e,
        }),
    }
}

/// Bind a new socket at the abstract address `keel/<pid>/<service>`. keel is PID 1 in every container,
/// and containers of one pod share a network namespace (and so the abstract namespace): if
/// the name is taken, a random tag is added.
fn bind_abstract(service: &str) -> Result<(OwnedFd, Address), SysError> {
    let fd = notify_socket()?;
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    let mut last = SysError {
        op: "bind(abstract)",
        errno: libc::EADDRINUSE,
    };
    for attempt in 0..4 {
        let name = if attempt == 0 {
            format!("keel/{pid}/{service}")
        } else {
            format!("keel/{pid}.{:08x}/{service}", nonce())
        };
        let (addr, len) = sys::sockaddr_un(b"\0", name.as_bytes()).ok_or(SysError {
            op: "bind(abstract)",
            errno: libc::ENAMETOOLONG,
        })?;
        // SAFETY: addr is a valid sockaddr_un of `len` bytes.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if r == 0 {
            return Ok((fd, Address::Abstract(name)));
        }
        last = SysError::last("bind(abstract)");
        if last.errno != libc::EADDRINUSE {
            break;
        }
    }
    Err(last)
}

/// 32 unpredictable-enough bits for an abstract name's tag; no need for real randomness.
fn nonce() -> u32 {
    let mut v = 0u32;
    // SAFETY: the buffer is a live u32; GRND_NONBLOCK never waits for entropy.
    let n = unsafe { libc::getrandom((&mut v as *mut u32).cast(), 4, libc::GRND_NONBLOCK) };
    if n == 4 {
        return v;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_nsec as u32 ^ ts.tv_sec as u32
}

/// What a read of a notify pipe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeState {
    /// A newline arrived: the service is ready.
    Ready,
    /// The write end was closed with no newline: s6 treats this as "will never be ready".
    Closed,
    /// Nothing decisive yet (no data, or data without a newline).
    Nothing,
}

/// The read end of an s6/dinit-style readiness pipe: the service writes a newline to the fd
/// number it was told (the spawn module `dup2`s the write end there) once it is ready.
///
/// After [`PipeState::Ready`] or [`PipeState::Closed`] the runtime should drop it (as
/// s6-supervise closes the fd): a closed read end would keep waking epoll with `EPOLLHUP`.
/// The parent's copy of the write end must be closed right after the spawn, or `Closed` can
/// never be seen.
#[derive(Debug)]
pub struct NotifyPipe {
    fd: OwnedFd,
}

impl NotifyPipe {
    /// A new pipe: the reader, and the write end for the child. Both are close-on-exec
    /// (`dup2` in the child clears that on the copy). Only the read end is non-blocking: the
    /// child gets an ordinary blocking fd, as it would from s6 or dinit.
    pub fn new() -> Result<(NotifyPipe, OwnedFd), SysError> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds is a valid array of two ints.
        check(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
            "pipe2",
        )?;
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: plain fcntl on an fd we own; the read and write ends are separate open
        // file descriptions, so this does not touch the child's end.
        let flags = check(
            unsafe { libc::fcntl(r.as_raw_fd(), libc::F_GETFL) },
            "fcntl(F_GETFL)",
        )?;
        // SAFETY: as above.
        check(
            unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) },
            "fcntl(F_SETFL)",
        )?;
        Ok((NotifyPipe { fd: r }, w))
    }

    /// Wrap a read end the runtime made itself. It must be non-blocking and close-on-exec.
    pub fn from_fd(fd: OwnedFd) -> NotifyPipe {
        NotifyPipe { fd }
    }

    /// The fd to register for `EPOLLIN`.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Read what is there without blocking. The bytes before the newline mean nothing (s6
    /// ignores them too); only the newline or the end of file count.
    pub fn read(&self) -> Result<PipeState, SysError> {
        let mut buf = [0u8; 512];
        // Bounded, like every read in the loop: a service writing without end must not hold
        // keel here. Level-triggered epoll brings us back for the rest.
        for _ in 0..16 {
            match read_nonblock(self.fd.as_raw_fd(), &mut buf)? {
                None => return Ok(PipeState::Nothing),
                Some(0) => return Ok(PipeState::Closed),
                Some(n) => {
                    if buf.get(..n).unwrap_or(&[]).contains(&b'\n') {
                        return Ok(PipeState::Ready);
                    }
                }
            }
        }
        Ok(PipeState::Nothing)
    }
}

/// One TCP readiness attempt: a non-blocking connect. Register [`TcpProbe::fd`] for
/// `EPOLLOUT` (`Epoll::add_events`); once it fires, [`TcpProbe::finish`] says how it went.
/// Dropping it closes the socket, which also abandons a connect that timed out.
#[derive(Debug)]
pub struct TcpProbe {
    fd: OwnedFd,
    addr: std::net::SocketAddr,
}

impl TcpProbe {
    /// Start connecting to `addr` (IPv4 or IPv6). An immediate refusal is returned as an
    /// error (`connect`, `ECONNREFUSED`); an immediate success is reported by `finish` like
    /// any other, since the fd is writable at once.
    pub fn start(addr: std::net::SocketAddr) -> Result<TcpProbe, SysError> {
        // SAFETY: sockaddr_storage is plain data; all-zero is valid.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let (family, len) = match addr {
            std::net::SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin)
                };
                (libc::AF_INET, size_of::<libc::sockaddr_in>())
            }
            std::net::SocketAddr::V6(a) => {
                // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
                let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_scope_id = a.scope_id();
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6)
                };
                (libc::AF_INET6, size_of::<libc::sockaddr_in6>())
            }
        };
        let fd = sys::socket(family, libc::SOCK_STREAM, "socket(tcp probe)")?;
        // SAFETY: storage holds a valid sockaddr of `len` bytes.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&storage as *const libc::sockaddr_storage).cast(),
                len as libc::socklen_t,
            )
        };
        if r == -1 {
            match errno() {
                // The normal case. EINTR on a non-blocking connect also means it carries on
                // in the background.
                libc::EINPROGRESS | libc::EINTR => {}
                e => {
                    return Err(SysError {
                        op: "connect",
                        errno: e,
                    });
                }
            }
        }
        Ok(TcpProbe { fd, addr })
    }

    /// The fd to register for `EPOLLOUT` (errors and hang-ups are reported with it).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Where it connects.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Call once the fd is writable (or reports an error): `Ok` when the connection was
    /// accepted, else the connect's errno (`ECONNREFUSED`, `ETIMEDOUT`, `EHOSTUNREACH`...).
    /// Called too early it reports `EINPROGRESS`. Call it once: reading `SO_ERROR` clears it.
    pub fn finish(&self) -> Result<(), SysError> {
        let mut err: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: err and len are live and sized as getsockopt expects.
        check(
            unsafe {
                libc::getsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut libc::c_int).cast(),
                    &mut len,
                )
            },
            "getsockopt(SO_ERROR)",
        )?;
        if err != 0 {
            return Err(SysError {
                op: "connect",
                errno: err,
            });
        }
        // No pending error is not yet a connection: it may still be in progress.
        // SAFETY: sockaddr_storage is plain data; the kernel writes at most `plen` bytes.
        let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut plen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: as above.
        let r = unsafe {
            libc::getpeername(
                self.fd.as_raw_fd(),
                (&mut peer as *mut libc::sockaddr_storage).cast(),
                &mut plen,
            )
        };
        if r == 0 {
            return Ok(());
        }
        match errno() {
            libc::ENOTCONN => Err(SysError {
                op: "connect",
                errno: libc::EINPROGRESS,
            }),
            e => Err(SysError {
                op: "getpeername",
                errno: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    /// A fresh directory for one test, removed when dropped.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("keel-ready-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn recv(s: &NotifySocket) -> Vec<Datagram> {
        let mut out = Vec::new();
        s.recv_all(&mut out).unwrap();
        out
    }

    fn my_pid() -> i32 {
        std::process::id() as i32
    }

    fn is_root() -> bool {
        // SAFETY: plain syscall.
        unsafe { libc::geteuid() == 0 }
    }

    // ---- parser ----

    #[test]
    fn parses_every_known_key() {
        let msg = b"READY=1\nRELOADING=1\nSTOPPING=1\nSTATUS=serving 3 clients\nMAINPID=4242\n\
WATCHDOG=1\nWATCHDOG=trigger\nWATCHDOG_USEC=30000000\nEXTEND_TIMEOUT_USEC=5000000\nERRNO=2\n";
        assert_eq!(
            parse_notify(msg),
            vec![
                Notice::Ready,
                Notice::Reloading,
                Notice::Stopping,
                Notice::Status("serving 3 clients".into()),
                Notice::MainPid(4242),
                Notice::Watchdog,
                Notice::WatchdogTrigger,
                Notice::WatchdogUsec(30_000_000),
                Notice::ExtendTimeoutUsec(5_000_000),
                Notice::Errno(2),
            ]
        );
    }

    #[test]
    fn parser_edge_cases() {
        // No trailing newline, empty lines, an unknown key between.
        assert_eq!(
            parse_notify(b"\n\nFDSTORE=1\n\nREADY=1"),
            vec![Notice::Ready]
        );
        // Only "=1" counts.
        assert_eq!(
            parse_notify(b"READY=0\nREADY=yes\nREADY=\nSTOPPING=2"),
            vec![]
        );
        // Empty STATUS is a real (clearing) status.
        assert_eq!(
            parse_notify(b"STATUS="),
            vec![Notice::Status(String::new())]
        );
        // A value may contain '='.
        assert_eq!(
            parse_notify(b"STATUS=a=b"),
            vec![Notice::Status("a=b".into())]
        );
        // Garbage: invalid UTF-8 and control bytes neither panic nor reach the log raw.
        assert_eq!(
            parse_notify(b"\xff\xfe\x01garbage\nSTATUS=ok\x1b[31m\xff\nREADY=1\n"),
            vec![
                Notice::Status("ok\u{FFFD}[31m\u{FFFD}".into()),
                Notice::Ready
            ]
        );
        // An embedded NUL drops the whole datagram, as systemd does.
        assert_eq!(parse_notify(b"READY=1\nSTATUS=a\0b\n"), vec![]);
        // Keys are case-sensitive and exact.
        assert_eq!(parse_notify(b"ready=1\n READY=1\nREADY =1"), vec![]);
        assert_eq!(parse_notify(b""), vec![]);
    }

    #[test]
    fn malformed_values_are_ignored_with_a_reason() {
        for bad in [
            &b"MAINPID=0"[..],
            b"MAINPID=-5",
            b"MAINPID=2147483648",
            b"MAINPID=12x",
            b"MAINPID=",
            b"MAINPID=+3",
            b"WATCHDOG_USEC=99999999999999999999999",
            b"WATCHDOG_USEC= 5",
            b"EXTEND_TIMEOUT_USEC=1.5",
            b"ERRNO=-1",
            b"WATCHDOG=2",
            b"no equals sign",
        ] {
            assert!(
                parse_line(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(parse_notify(bad), vec![]);
        }
        assert_eq!(parse_line(b"X_UNKNOWN=1"), Ok(None));
        assert_eq!(
            parse_line(b"WATCHDOG_USEC=0"),
            Ok(Some(Notice::WatchdogUsec(0)))
        );
        assert_eq!(
            parse_line(b"MAINPID=2147483647"),
            Ok(Some(Notice::MainPid(i32::MAX)))
        );
    }

    #[test]
    fn huge_status_is_cut_at_a_character_boundary() {
        let mut msg = b"STATUS=".to_vec();
        msg.extend("é".repeat(3000).as_bytes());
        msg.extend(b"\nREADY=1");
        let n = parse_notify(&msg);
        let Notice::Status(s) = &n[0] else {
            panic!("{n:?}")
        };
        assert!(
            s.len() <= MAX_STATUS && s.len() >= MAX_STATUS - 1,
            "{}",
            s.len()
        );
        assert!(s.chars().all(|c| c == 'é'));
        assert_eq!(n[1], Notice::Ready);
    }

    // ---- notify socket ----

    #[test]
    fn ready_from_another_socket() {
        let base = TempDir::new("ready");
        let dir = base.0.join("a/b");
        let s = NotifySocket::bind(&dir, "web", None).unwrap();
        for created in [&base.0, &base.0.join("a"), &dir] {
            // 0755 whatever the umask (the test's is typically 022, keel's may be 077).
            assert_eq!(std::fs::metadata(created).unwrap().mode() & 0o777, 0o755);
        }
        let path = dir.join("web");
        assert_eq!(s.path(), Some(path.as_path()));
        assert_eq!(s.env_value(), path.clone().into_os_string());
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o777, 0o666);

        assert_eq!(recv(&s), vec![], "nothing pending yet");
        let tx = UnixDatagram::unbound().unwrap();
        tx.send_to(b"READY=1\nSTATUS=up", &path).unwrap();
        assert_eq!(
            recv(&s),
            vec![Datagram {
                pid: Some(my_pid()),
                // SAFETY: plain syscall.
                uid: Some(unsafe { libc::geteuid() }),
                notices: vec![Notice::Ready, Notice::Status("up".into())],
            }]
        );
        assert_eq!(recv(&s), vec![], "drained");
    }

    #[test]
    fn fd_is_cloexec_and_nonblocking() {
        let d = TempDir::new("flags");
        let s = NotifySocket::bind(&d.0, "svc", None).unwrap();
        // SAFETY: fcntl on a live fd.
        let (fdfl, fl) = unsafe {
            (
                libc::fcntl(s.fd(), libc::F_GETFD),
                libc::fcntl(s.fd(), libc::F_GETFL),
            )
        };
        assert_ne!(fdfl & libc::FD_CLOEXEC, 0);
        assert_ne!(fl & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn several_datagrams_in_one_recv_all_in_order() {
        let d = TempDir::new("multi");
        let s = NotifySocket::bind(&d.0, "db", None).unwrap();
        let tx = UnixDatagram::unbound().unwrap();
        for m in ["STATUS=one", "STATUS=two", "READY=1"] {
            tx.send_to(m.as_bytes(), d.0.join("db")).unwrap();
        }
        let got: Vec<Vec<Notice>> = recv(&s).into_iter().map(|d| d.notices).collect();
        assert_eq!(
            got,
            vec![
                vec![Notice::Status("one".into())],
                vec![Notice::Status("two".into())],
                vec![Notice::Ready],
            ]
        );
    }

    #[test]
    fn readiness_survives_epoll() {
        let d = TempDir::new("epoll");
        let s = NotifySocket::bind(&d.0, "svc", None).unwrap();
        let ep = crate::sys::Epoll::new().unwrap();
        ep.add(s.fd(), 7).unwrap();
        let mut ev = Vec::new();
        ep.wait(&mut ev, 0).unwrap();
        assert!(ev.is_empty());
        UnixDatagram::unbound()
            .unwrap()
            .send_to(b"READY=1", d.0.join("svc"))
            .unwrap();
        ep.wait(&mut ev, 5000).unwrap();
        assert_eq!(ev, vec![7]);
        assert_eq!(recv(&s)[0].notices, vec![Notice::Ready]);
        ep.wait(&mut ev, 0).unwrap();
        assert!(ev.is_empty(), "level-triggered and drained");
    }

    #[test]
    fn abstract_fallback_when_the_directory_is_unusable() {
        // A path under a regular file can never be created, even by root.
        let s = NotifySocket::bind(Path::new("/dev/null/keel"), "api", None).unwrap();
        assert_eq!(s.path(), None);
        let env = s.env_value().into_string().unwrap();
        assert_eq!(env, format!("@keel/{}/api", my_pid()));
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(&env.as_bytes()[1..]).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1", &addr)
            .unwrap();
        assert_eq!(recv(&s)[0].notices, vec![Notice::Ready]);

        // The same name again (a second keel in a pod's shared network namespace) gets a
        // different address instead of failing.
        let s2 = NotifySocket::bind(Path::new("/dev/null/keel"), "api", None).unwrap();
        let env2 = s2.env_value().into_string().unwrap();
        assert_ne!(env2, env);
        assert!(env2.starts_with(&format!("@keel/{}.", my_pid())), "{env2}");
        assert!(env2.ends_with("/api"), "{env2}");
    }

    #[test]
    fn oversized_datagram_is_refused_and_the_next_one_read() {
        let d = TempDir::new("big");
        let s = NotifySocket::bind(&d.0, "svc", None).unwrap();
        let path = d.0.join("svc");
        let tx = UnixDatagram::unbound().unwrap();
        let mut big = b"READY=1\nSTATUS=".to_vec();
        big.resize(MAX_DATAGRAM + 1, b'x');
        tx.send_to(&big, &path).unwrap();
        // Exactly the limit is fine.
        let mut max = b"STATUS=".to_vec();
        max.resize(MAX_DATAGRAM - b"\nREADY=1".len(), b'y');
        max.extend(b"\nREADY=1");
        assert_eq!(max.len(), MAX_DATAGRAM);
        tx.send_to(&max, &path).unwrap();
        tx.send_to(b"STOPPING=1", &path).unwrap();
        let got = recv(&s);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].notices.len(), 2);
        assert_eq!(got[0].notices[1], Notice::Ready);
        assert_eq!(got[1].notices, vec![Notice::Stopping]);
    }

    /// Wait up to 5 s for `fd` to be readable. Other tests fork, and a child holds copies of
    /// every fd until it execs or exits, so an end of file can arrive a moment late.
    fn wait_readable(fd: RawFd) {
        let ep = crate::sys::Epoll::new().unwrap();
        ep.add(fd, 1).unwrap();
        let mut ev = Vec::new();
        ep.wait(&mut ev, 5000).unwrap();
        assert_eq!(ev, vec![1], "fd {fd} never became readable");
    }

    #[test]
    fn passed_fds_are_closed() {
        let d = TempDir::new("fds");
        let s = NotifySocket::bind(&d.0, "svc", None).unwrap();
        // FDSTORE=1 with a pipe's write end attached. Once keel closes its received copy (and
        // ours is closed), the read end reaches end of file.
        let (r, w) = crate::sys::pipe_cloexec_nonblock().unwrap();
        let tx = UnixDatagram::unbound().unwrap();
        tx.connect(d.0.join("svc")).unwrap();
        let mut payload = *b"FDSTORE=1\nREADY=1";
        let mut iov = libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        };
        let mut control = [0u64; 4];
        // SAFETY: building and sending one SCM_RIGHTS message from live buffers.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), w.as_raw_fd());
            assert_eq!(
                libc::sendmsg(tx.as_raw_fd(), &msg, 0),
                payload.len() as isize
            );
        }
        drop(w);
        let got = recv(&s);
        assert_eq!(got[0].notices, vec![Notice::Ready]);
        wait_readable(r.as_raw_fd());
        let mut b = [0u8; 1];
        assert_eq!(
            read_nonblock(r.as_raw_fd(), &mut b).unwrap(),
            Some(0),
            "keel kept the passed fd open"
        );
    }

    #[test]
    fn stale_socket_is_replaced_and_a_non_socket_is_not() {
        let d = TempDir::new("stale");
        std::fs::create_dir_all(&d.0).unwrap();
        let path = d.0.join("svc");
        // A socket left behind by a dead keel: bound, then closed without unlink.
        drop(UnixDatagram::bind(&path).unwrap());
        // Binding over it would fail with EADDRINUSE: getting the path means it was replaced.
        let s = NotifySocket::bind(&d.0, "svc", None).unwrap();
        assert_eq!(s.path(), Some(path.as_path()));
        UnixDatagram::unbound()
            .unwrap()
            .send_to(b"READY=1", &path)
            .unwrap();
        assert_eq!(recv(&s)[0].notices, vec![Notice::Ready]);

        // A regular file is somebody's data: left alone, and the socket goes abstract.
        let file = d.0.join("data");
        std::fs::write(&file, "keep me").unwrap();
        let s2 = NotifySocket::bind(&d.0, "data", None).unwrap();
        assert_eq!(s2.path(), None);
        assert!(s2.env_value().to_string_lossy().starts_with('@'));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[test]
    fn drop_unlinks_only_its_own_socket() {
        let d = TempDir::new("drop");
        let path = d.0.join("svc");
        let first = NotifySocket::bind(&d.0, "svc", None).unwrap();
        drop(first);
        assert!(
            std::fs::symlink_metadata(&path).is_err(),
            "unlinked on drop"
        );

        // Somebody replaced our socket at the path while we held it: theirs survives our drop.
        let ours = NotifySocket::bind(&d.0, "svc", None).unwrap();
        std::fs::remove_file(&path).unwrap();
        let theirs = UnixDatagram::bind(&path).unwrap();
        drop(ours);
        UnixDatagram::unbound()
            .unwrap()
            .send_to(b"READY=1", &path)
            .unwrap();
        let mut b = [0u8; 16];
        assert_eq!(theirs.recv(&mut b).unwrap(), 7);
    }

    #[test]
    fn a_live_socket_is_not_taken_over() {
        let d = TempDir::new("live");
        std::fs::create_dir_all(&d.0).unwrap();
        let path = d.0.join("svc");
        // Another keel sharing the directory, still reading its socket.
        let other = UnixDatagram::bind(&path).unwrap();
        let s = NotifySocket::bind(&d.0, "svc", None).unwrap();
        assert_eq!(s.path(), None, "fell back to an abstract address");
        UnixDatagram::unbound()
            .unwrap()
            .send_to(b"READY=1", &path)
            .unwrap();
        other.set_nonblocking(true).unwrap();
        let mut b = [0u8; 16];
        assert_eq!(
            other.recv(&mut b).unwrap(),
            7,
            "the other's socket still works"
        );
        // A stream socket in the way is left alone too.
        let stream = d.0.join("stream");
        let _l = std::os::unix::net::UnixListener::bind(&stream).unwrap();
        let s2 = NotifySocket::bind(&d.0, "stream", None).unwrap();
        assert_eq!(s2.path(), None);
        assert!(std::fs::symlink_metadata(&stream).is_ok());
    }

    #[test]
    fn bad_service_names_are_refused() {
        let d = TempDir::new("names");
        for name in ["", ".", "..", "a/b", "../x", "a\0b"] {
            let e = NotifySocket::bind(&d.0, name, None).unwrap_err();
            assert_eq!(e.errno, libc::EINVAL, "{name:?}");
        }
    }

    #[test]
    fn too_long_path_falls_back_to_abstract() {
        let d = TempDir::new("long");
        let deep = d.0.join("x".repeat(100));
        let s = NotifySocket::bind(&deep, "svc", None).unwrap();
        assert_eq!(s.path(), None);
    }

    /// Fork a child that becomes `uid`/`gid` and sends `READY=1` to `path`; returns its pid
    /// and its exit status (0, or the errno of the failed step).
    fn send_as(uid: u32, gid: u32, path: &Path) -> (i32, i32) {
        let (addr, len) = sys::sockaddr_un(b"", path.as_os_str().as_bytes()).unwrap();
        let msg = b"READY=1";
        // SAFETY: the child makes only async-signal-safe syscalls on memory prepared above,
        // then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            unsafe {
                let code = |e: i32| libc::_exit(e.clamp(1, 255));
                // Raw syscalls: glibc's wrappers would try to signal the parent's other
                // threads, which do not exist in this child.
                if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                    || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                    || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
                {
                    code(*libc::__errno_location());
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
                if fd < 0 {
                    code(*libc::__errno_location());
                }
                let n = libc::sendto(
                    fd,
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&addr as *const libc::sockaddr_un).cast(),
                    len,
                );
                if n < 0 {
                    code(*libc::__errno_location());
                }
                libc::_exit(0);
            }
        }
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status));
        (pid, libc::WEXITSTATUS(status))
    }

    #[test]
    fn owned_socket_accepts_its_user_and_refuses_others() {
        if !is_root() {
            println!("skipped: chown and setuid need root");
            return;
        }
        let d = TempDir::new("owner");
        let s = NotifySocket::bind(&d.0, "app", Some((65534, 65534))).unwrap();
        let path = d.0.join("app");
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (65534, 65534, 0o600));

        let (pid, code) = send_as(65534, 65534, &path);
        assert_eq!(code, 0, "uid 65534 could not send: errno {code}");
        assert_eq!(
            recv(&s),
            vec![Datagram {
                pid: Some(pid),
                uid: Some(65534),
                notices: vec![Notice::Ready]
            }]
        );

        // Another unprivileged user cannot forge this service's readiness.
        let (_, code) = send_as(65533, 65533, &path);
        assert_eq!(code, libc::EACCES);
        assert_eq!(recv(&s), vec![]);
    }

    fn tool(name: &str) -> Option<PathBuf> {
        ["/usr/bin", "/bin", "/usr/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
    }

    #[test]
    fn real_systemd_notify_reaches_both_kinds_of_socket() {
        let Some(sn) = tool("systemd-notify") else {
            println!("skipped: systemd-notify is not installed");
            return;
        };
        let d = TempDir::new("sdnotify");
        let on_path = NotifySocket::bind(&d.0, "svc", None).unwrap();
        let on_abstract = NotifySocket::bind(Path::new("/dev/null/x"), "svc", None).unwrap();
        for s in [&on_path, &on_abstract] {
            let mut child = std::process::Command::new(&sn)
                .args(["--ready", "--status=warming up"])
                .env("NOTIFY_SOCKET", s.env_value())
                .spawn()
                .unwrap();
            // systemd-notify then sends BARRIER=1 with an fd and waits until the receiver
            // closes it (sd_notify_barrier): keel closing passed fds is what lets it finish.
            let mut got = Vec::new();
            let status = loop {
                s.recv_all(&mut got).unwrap();
                if let Some(st) = child.try_wait().unwrap() {
                    break st;
                }
                std::thread::sleep(ms(10));
            };
            s.recv_all(&mut got).unwrap();
            assert!(status.success(), "{status}");
            let got: Vec<Notice> = got.into_iter().flat_map(|d| d.notices).collect();
            assert!(got.contains(&Notice::Ready), "{got:?}");
            assert!(
                got.contains(&Notice::Status("warming up".into())),
                "{got:?}"
            );
        }
    }

    #[test]
    fn python_sender_as_nobody_via_setpriv() {
        let (Some(setpriv), Some(py)) = (tool("setpriv"), tool("python3")) else {
            println!("skipped: setpriv or python3 is not installed");
            return;
        };
        if !is_root() {
            println!("skipped: needs root");
            return;
        }
        let d = TempDir::new("setpriv");
        let s = NotifySocket::bind(&d.0, "svc", Some((65534, 65534))).unwrap();
        let st = std::process::Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(py)
            .args([
                "-c",
                "import socket,os; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); \
                 s.sendto(b'READY=1\\nMAINPID=%d' % os.getpid(), os.environ['NOTIFY_SOCKET'])",
            ])
            .env("NOTIFY_SOCKET", s.env_value())
            .status()
            .unwrap();
        assert!(st.success(), "{st}");
        let got = recv(&s);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].uid, Some(65534));
        assert_eq!(got[0].notices[0], Notice::Ready);
        assert_eq!(got[0].notices[1], Notice::MainPid(got[0].pid.unwrap()));
    }

    // ---- notify pipe ----

    #[test]
    fn notify_pipe_nothing_then_ready() {
        let (p, w) = NotifyPipe::new().unwrap();
        // SAFETY: fcntl on live fds.
        unsafe {
            assert_ne!(libc::fcntl(p.fd(), libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            assert_ne!(
                libc::fcntl(w.as_raw_fd(), libc::F_GETFD) & libc::FD_CLOEXEC,
                0
            );
            assert_eq!(
                libc::fcntl(w.as_raw_fd(), libc::F_GETFL) & libc::O_NONBLOCK,
                0,
                "the child's end stays blocking"
            );
        }
        assert_eq!(p.read().unwrap(), PipeState::Nothing);
        let mut f = std::fs::File::from(w);
        use std::io::Write;
        f.write_all(b"starting").unwrap();
        assert_eq!(p.read().unwrap(), PipeState::Nothing);
        f.write_all(b" done\n").unwrap();
        assert_eq!(p.read().unwrap(), PipeState::Ready);
    }

    #[test]
    fn notify_pipe_closed_without_newline() {
        let (p, w) = NotifyPipe::new().unwrap();
        let mut f = std::fs::File::from(w);
        use std::io::Write;
        f.write_all(b"partial").unwrap();
        assert_eq!(
            p.read().unwrap(),
            PipeState::Nothing,
            "data without a newline"
        );
        drop(f);
        wait_readable(p.fd());
        assert_eq!(p.read().unwrap(), PipeState::Closed);

        // A newline and then EOF in one go is still ready: the newline came first.
        let (p, w) = NotifyPipe::new().unwrap();
        let mut f = std::fs::File::from(w);
        f.write_all(b"\n").unwrap();
        drop(f);
        assert_eq!(p.read().unwrap(), PipeState::Ready);
    }

    #[test]
    fn notify_pipe_from_a_real_child_at_a_chosen_fd() {
        // What the runtime does: the write end dup2'd to fd 5 in a child that writes there.
        let (p, w) = NotifyPipe::new().unwrap();
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "sleep 0.1; printf 'ok\\n' >&5"]);
        // SAFETY: dup2 is async-signal-safe; `w` lives in the closure until exec.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself keeps FD_CLOEXEC, so the fd would vanish at exec.
                let ok = if w.as_raw_fd() == 5 {
                    libc::fcntl(5, libc::F_SETFD, 0) != -1
                } else {
                    libc::dup2(w.as_raw_fd(), 5) != -1
                };
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        drop(cmd); // keel's copy of the write end: closed right after the spawn
        assert_eq!(p.read().unwrap(), PipeState::Nothing, "not ready yet");
        wait_readable(p.fd());
        assert_eq!(p.read().unwrap(), PipeState::Ready);
        assert!(child.wait().unwrap().success());
    }

    // ---- tcp probe ----

    /// Wait (up to 5 s) for the probe's fd to be writable, then finish it.
    fn run_probe(addr: std::net::SocketAddr) -> Result<(), SysError> {
        let probe = TcpProbe::start(addr)?;
        assert_eq!(probe.addr(), addr);
        // SAFETY: fcntl on a live fd.
        unsafe {
            assert_ne!(libc::fcntl(probe.fd(), libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            assert_ne!(libc::fcntl(probe.fd(), libc::F_GETFL) & libc::O_NONBLOCK, 0);
        }
        let ep = crate::sys::Epoll::new().unwrap();
        ep.add_events(probe.fd(), 1, libc::EPOLLOUT as u32).unwrap();
        let mut ev = Vec::new();
        ep.wait(&mut ev, 5000).unwrap();
        assert_eq!(ev, vec![1], "connect to {addr} never finished");
        probe.finish()
    }

    fn closed_port(host: &str) -> std::net::SocketAddr {
        // Bind to learn a free port, then close it: nothing listens there now.
        let l = std::net::TcpListener::bind(format!("{host}:0")).unwrap();
        l.local_addr().unwrap()
    }

    #[test]
    fn tcp_probe_ipv4() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        run_probe(l.local_addr().unwrap()).unwrap();
        // The connection really reached the listener.
        l.set_nonblocking(true).unwrap();
        assert!(l.accept().is_ok());

        let e = run_probe(closed_port("127.0.0.1")).unwrap_err();
        assert_eq!((e.op, e.errno), ("connect", libc::ECONNREFUSED));
    }

    #[test]
    fn tcp_probe_ipv6() {
        let l = match std::net::TcpListener::bind("[::1]:0") {
            Ok(l) => l,
            Err(e) => {
                println!("skipped: no ::1 on this machine ({e})");
                return;
            }
        };
        run_probe(l.local_addr().unwrap()).unwrap();
        let e = run_probe(closed_port("[::1]")).unwrap_err();
        assert_eq!((e.op, e.errno), ("connect", libc::ECONNREFUSED));
    }

    #[test]
    fn tcp_probe_finish_too_early_says_in_progress() {
        // A listener whose backlog is full leaves a new connect pending (the SYN is dropped),
        // which is the state `finish` must not mistake for success.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Fill the accept queue (backlog 128 by std; the kernel allows backlog+1).
        let mut fill = Vec::new();
        let mut pending = None;
        for _ in 0..1000 {
            let p = TcpProbe::start(addr).unwrap();
            let ep = crate::sys::Epoll::new().unwrap();
            ep.add_events(p.fd(), 1, libc::EPOLLOUT as u32).unwrap();
            let mut ev = Vec::new();
            ep.wait(&mut ev, 200).unwrap();
            if ev.is_empty() {
                pending = Some(p);
                break;
            }
            fill.push(p);
        }
        let Some(p) = pending else {
            println!("skipped: the kernel never left a connect pending");
            return;
        };
        let e = p.finish().unwrap_err();
        assert_eq!((e.op, e.errno), ("connect", libc::EINPROGRESS));
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
}
