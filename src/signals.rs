//! Signals: names, 64-bit kernel signal sets, PID 1's blocked mask and signalfd, and the
//! exact signal state a child must get back.
//!
//! Owns: what keel does with its *own* signal state. keel installs no handler at all. It
//! blocks every signal (so that, as PID 1 of a namespace, the kernel queues signals instead of
//! dropping the ones PID 1 has no handler for) and reads them from a signalfd in the one event
//! loop. The fault signals a genuine crash raises (SEGV, BUS, ILL, FPE, TRAP, SYS, ABRT) are
//! blocked too: the kernel force-unblocks a *synchronous* fault, so a real bug in keel still
//! kills it, while the same signals *sent* by another process arrive on the signalfd and are
//! forwarded (tini and catatonit die from or drop them).
//! Must not: forward anything itself, or touch libc's signal wrappers: musl and glibc refuse
//! to block 32..34, which keel has to see as the kernel does. Raw syscalls with a `u64` mask.

use crate::sys::{SysError, check, errno};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The highest signal number on Linux.
pub const NSIG: i32 = 64;

/// The first real-time signal as the C libraries programs use name it (glibc's SIGRTMIN; musl's
/// is 35). Only used to read and print names like `RTMIN+2`; forwarding uses raw numbers.
pub const RTMIN: i32 = 34;

/// A set of signals 1..=64 as the kernel sees it (bit `n-1` is signal `n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SigSet(pub u64);

impl SigSet {
    /// The empty set.
    pub const EMPTY: SigSet = SigSet(0);
    /// Every signal 1..=64.
    pub const ALL: SigSet = SigSet(u64::MAX);

    /// Whether `sig` is in the set.
    pub fn contains(self, sig: i32) -> bool {
        (1..=NSIG).contains(&sig) && self.0 & (1u64 << (sig - 1)) != 0
    }

    /// The set with `sig` added.
    pub fn with(self, sig: i32) -> SigSet {
        if (1..=NSIG).contains(&sig) {
            SigSet(self.0 | (1u64 << (sig - 1)))
        } else {
            self
        }
    }

    /// The set with `sig` removed.
    pub fn without(self, sig: i32) -> SigSet {
        if (1..=NSIG).contains(&sig) {
            SigSet(self.0 & !(1u64 << (sig - 1)))
        } else {
            self
        }
    }
}

/// Standard signal names, index = number. x86_64/aarch64 numbering (the asm-generic one).
const NAMES: [&str; 32] = [
    "", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// The signal's name without the `SIG` prefix: `TERM`, `RTMIN+3`, or the number.
pub fn name(sig: i32) -> String {
    match sig {
        1..=31 => NAMES[sig as usize].to_string(),
        RTMIN => "RTMIN".to_string(),
        s if s > RTMIN && s <= NSIG => format!("RTMIN+{}", s - RTMIN),
        s => s.to_string(),
    }
}

/// Parse a signal: `TERM`, `SIGTERM`, `term`, `15`, `RTMIN`, `RTMIN+3`, `SIGRTMAX-1`, `IOT`,
/// `POLL`, `CLD`. Returns 1..=64. The error says what was wrong, for the caller to prefix with
/// the flag or file that carried it.
pub fn parse(text: &str) -> Result<i32, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=NSIG).contains(&n) {
            Ok(n)
        } else {
            Err(format!("signal number {n} is out of range 1..{NSIG}"))
        };
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(i) = NAMES.iter().position(|n| !n.is_empty() && *n == bare) {
        return Ok(i as i32);
    }
    let alias = match bare {
        "IOT" => Some(libc::SIGABRT),
        "POLL" => Some(libc::SIGIO),
        "CLD" => Some(libc::SIGCHLD),
        "RTMIN" => Some(RTMIN),
        "RTMAX" => Some(NSIG),
        _ => None,
    };
    if let Some(s) = alias {
        return Ok(s);
    }
    let rt = |base: i32, rest: &str, sign: i32| -> Result<i32, String> {
        let off: i32 = rest
            .parse()
            .map_err(|_| format!("'{text}' is not a signal name or number"))?;
        let s = base + sign * off;
        if (RTMIN..=NSIG).contains(&s) {
            Ok(s)
        } else {
            Err(format!("'{text}' is outside RTMIN..RTMAX"))
        }
    };
    if let Some(rest) = bare.strip_prefix("RTMIN+") {
        return rt(RTMIN, rest, 1);
    }
    if let Some(rest) = bare.strip_prefix("RTMAX-") {
        return rt(NSIG, rest, -1);
    }
    Err(format!(
        "'{text}' is not a signal name or number (try TERM, SIGUSR1, 10 or RTMIN+1)"
    ))
}

/// Signals keel can never catch or forward: KILL and STOP.
pub fn catchable(sig: i32) -> bool {
    (1..=NSIG).contains(&sig) && sig != libc::SIGKILL && sig != libc::SIGSTOP
}

/// Signals a crash raises synchronously. Blocked like all others: a real fault is
/// force-delivered by the kernel and still kills keel, a sent one reaches the signalfd.
pub fn is_fault(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSEGV
            | libc::SIGBUS
            | libc::SIGILL
            | libc::SIGFPE
            | libc::SIGTRAP
            | libc::SIGSYS
            | libc::SIGABRT
    )
}

/// The kernel's `struct sigaction` as rt_sigaction(2) takes it. Only the handler (first
/// field on every architecture) is read or set; the rest stays zeroed, which is right for
/// SIG_DFL and SIG_IGN.
#[repr(C)]
#[derive(Clone, Copy)]
struct KernelSigaction {
    handler: usize,
    rest: [u64; 3],
}

fn rt_sigaction(sig: i32, new: Option<&KernelSigaction>, old: Option<&mut KernelSigaction>) -> i64 {
    let newp = new.map_or(std::ptr::null(), |n| n as *const KernelSigaction);
    let oldp = old.map_or(std::ptr::null_mut(), |o| o as *mut KernelSigaction);
    // SAFETY: both pointers are null or point to a KernelSigaction large enough for the
    // kernel's struct; sigsetsize is 8 (64 signals).
    unsafe { libc::syscall(libc::SYS_rt_sigaction, sig as i64, newp, oldp, 8i64) as i64 }
}

fn rt_sigprocmask(how: i32, new: Option<&u64>, old: Option<&mut u64>) -> i64 {
    let newp = new.map_or(std::ptr::null(), |n| n as *const u64);
    let oldp = old.map_or(std::ptr::null_mut(), |o| o as *mut u64);
    // SAFETY: pointers are null or point to a u64 (sigsetsize 8).
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, how as i64, newp, oldp, 8i64) as i64 }
}

/// The signal state keel was started with, which every child gets back exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inherited {
    /// The blocked mask keel inherited.
    pub mask: SigSet,
    /// Whether keel reset SIGCHLD from SIG_IGN to SIG_DFL (SIG_IGN would make the kernel
    /// auto-reap and lose every exit status); the child gets SIG_IGN back.
    pub chld_was_ignored: bool,
}

/// keel's signal intake: every signal blocked, read from this signalfd.
pub struct Intake {
    fd: OwnedFd,
    /// What to give back to children.
    pub inherited: Inherited,
}

/// One signal as read from the signalfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Signal number.
    pub signo: i32,
    /// `si_code`: <= 0 means sent by a process (kill, sigqueue, tkill), 0x80 the kernel.
    pub code: i32,
    /// Sender's pid (in keel's pid namespace), 0 if from the kernel or another namespace.
    pub pid: u32,
}

impl Received {
    /// Sent by a process with kill/sigqueue/tkill (or the kernel's SI_KERNEL, e.g. a tty's
    /// ^C), as opposed to a fault report about keel itself.
    pub fn is_sent(&self) -> bool {
        self.code <= 0 || self.code == 0x80
    }
}

impl Intake {
    /// Record the inherited state, reset SIGCHLD to SIG_DFL if it was ignored, block every
    /// signal and open the signalfd. Must run before keel forks anything, so no SIGCHLD or
    /// forwarded signal can be lost between start-up and the loop.
    pub fn setup() -> Result<Intake, SysError> {
        let mut old_mask = 0u64;
        // Block first: from here on every signal waits, queued, for the loop.
        if rt_sigprocmask(libc::SIG_SETMASK, Some(&SigSet::ALL.0), Some(&mut old_mask)) < 0 {
            return Err(SysError::last("rt_sigprocmask"));
        }
        // keel changes no disposition but SIGCHLD's, so that is the only one to look at:
        // every other SIG_IGN reaches the child untouched through fork and exec.
        let mut old = KernelSigaction {
            handler: 0,
            rest: [0; 3],
        };
        let chld_was_ignored =
            rt_sigaction(libc::SIGCHLD, None, Some(&mut old)) == 0 && old.handler == libc::SIG_IGN;
        if chld_was_ignored {
            let dfl = KernelSigaction {
                handler: libc::SIG_DFL,
                rest: [0; 3],
            };
            if rt_sigaction(libc::SIGCHLD, Some(&dfl), None) < 0 {
                return Err(SysError::last("rt_sigaction(SIGCHLD, SIG_DFL)"));
            }
        }
        let mask = SigSet::ALL.0;
        // SAFETY: mask points to a u64 and sizemask is 8; flags are valid.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_signalfd4,
                -1i64,
                &mask as *const u64,
                8i64,
                (libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) as i64,
            )
        };
        let fd = check(fd as libc::c_int, "signalfd")?;
        Ok(Intake {
            // SAFETY: signalfd4 returned a new fd owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            inherited: Inherited {
                mask: SigSet(old_mask),
                chld_was_ignored,
            },
        })
    }

    /// The signalfd, for the event loop.
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Read every pending signal (non-blocking), appending to `out`.
    pub fn drain(&self, out: &mut Vec<Received>) -> Result<(), SysError> {
        const SZ: usize = std::mem::size_of::<libc::signalfd_siginfo>();
        let mut buf = [0u8; SZ * 16];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                return match errno() {
                    libc::EAGAIN => Ok(()),
                    libc::EINTR => continue,
                    e => Err(SysError {
                        op: "read(signalfd)",
                        errno: e,
                    }),
                };
            }
            let n = n as usize;
            if n == 0 {
                return Ok(());
            }
            for chunk in buf[..n].chunks_exact(SZ) {
                // SAFETY: the kernel wrote whole signalfd_siginfo records; read_unaligned
                // copes with the byte buffer's alignment.
                let info: libc::signalfd_siginfo =
                    unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast()) };
                out.push(Received {
                    signo: info.ssi_signo as i32,
                    code: info.ssi_code,
                    pid: info.ssi_pid,
                });
            }
            if n < buf.len() {
                return Ok(());
            }
        }
    }
}

/// Die of `sig` with its default action: for a genuine fault reported asynchronously. Only
/// reached for kernel-generated fault signals about keel itself.
pub fn die_of(sig: i32) -> ! {
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        rest: [0; 3],
    };
    let _ = rt_sigaction(sig, Some(&dfl), None);
    let one = SigSet::EMPTY.with(sig).0;
    // SAFETY: raising a signal at ourselves; then unblocking it delivers it.
    unsafe {
        libc::raise(sig);
    }
    let _ = rt_sigprocmask(libc::SIG_UNBLOCK, Some(&one), None);
    // SAFETY: if the signal somehow did not kill us, abort.
    unsafe { libc::abort() }
}

/// In a freshly forked child, before exec: give back exactly the inherited signal state.
/// Async-signal-safe: raw syscalls only.
pub fn restore_in_child(inh: &Inherited) {
    if inh.chld_was_ignored {
        let ign = KernelSigaction {
            handler: libc::SIG_IGN,
            rest: [0; 3],
        };
        let _ = rt_sigaction(libc::SIGCHLD, Some(&ign), None);
    }
    let _ = rt_sigprocmask(libc::SIG_SETMASK, Some(&inh.mask.0), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_numbers_and_realtime() {
        assert_eq!(parse("TERM"), Ok(15));
        assert_eq!(parse("SIGTERM"), Ok(15));
        assert_eq!(parse("sigusr1"), Ok(10));
        assert_eq!(parse("9"), Ok(9));
        assert_eq!(parse("RTMIN"), Ok(34));
        assert_eq!(parse("RTMIN+2"), Ok(36));
        assert_eq!(parse("SIGRTMAX-1"), Ok(63));
        assert_eq!(parse("RTMAX"), Ok(64));
        assert_eq!(parse("IOT"), Ok(6));
        assert!(parse("0").is_err());
        assert!(parse("65").is_err());
        assert!(parse("TERMINATE").is_err());
        assert!(parse("RTMIN+40").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn names_round_trip() {
        for s in 1..=NSIG {
            assert_eq!(parse(&name(s)), Ok(s), "signal {s}");
        }
    }

    #[test]
    fn sets() {
        let s = SigSet::EMPTY.with(1).with(64).with(0).with(65);
        assert!(s.contains(1) && s.contains(64) && !s.contains(2));
        assert_eq!(s.without(1), SigSet(1u64 << 63));
    }
}
