//! Reaping: collect every exited child, orphans included, and find the living descendants
//! when keel is not PID 1.
//!
//! Owns: `waitpid(-1, WNOHANG)` until nothing is left, and decoding wait statuses into
//! [`Exit`]. Nothing else in keel ever waits on a pid, so no status is ever taken by
//! another waiter (the Horust pid-reuse race).
//! Must not: know what a service is.

use crate::sys::{SysError, errno};
use std::fmt;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(u8),
    /// Killed by this signal.
    Signal(i32),
}

impl Exit {
    /// The shell's convention: the code, or 128 + signal.
    pub fn code(self) -> u8 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => (128 + s).clamp(0, 255) as u8,
        }
    }

    fn from_status(status: libc::c_int) -> Option<Exit> {
        if libc::WIFEXITED(status) {
            Some(Exit::Code(libc::WEXITSTATUS(status) as u8))
        } else if libc::WIFSIGNALED(status) {
            Some(Exit::Signal(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {} (SIG{})", s, crate::signals::name(*s)),
        }
    }
}

/// The result of one reaping pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Every child collected, in the order the kernel gave them.
    pub exits: Vec<(i32, Exit)>,
    /// No child at all is left (ECHILD). Any living descendant would be a child: a process
    /// whose parent dies is re-parented to keel (PID 1 or subreaper) before the parent's
    /// exit is reported, so "no children" means "no descendants".
    pub none_left: bool,
}

/// Collect every child that has exited, without blocking.
pub fn reap_all() -> Result<Reaped, SysError> {
    let mut out = Reaped::default();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: status is a valid int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match pid {
            0 => return Ok(out),
            -1 => {
                return match errno() {
                    libc::ECHILD => {
                        out.none_left = true;
                        Ok(out)
                    }
                    libc::EINTR => continue,
                    e => Err(SysError {
                        op: "waitpid",
                        errno: e,
                    }),
                };
            }
            pid => {
                if let Some(exit) = Exit::from_status(status) {
                    out.exits.push((pid, exit));
                }
            }
        }
    }
}

/// Every living descendant of process `root`, found through `/proc`. Used only when keel is
/// not PID 1 (as PID 1, `kill(-1, sig)` reaches the whole namespace at once).
pub fn descendants(root: i32) -> Vec<i32> {
    // Parent links of every process, from /proc/PID/stat's 4th field.
    let mut links: Vec<(i32, i32)> = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // gone meanwhile
        };
        if let Some(ppid) = parse_ppid(&stat) {
            links.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for &(pid, ppid) in &links {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

/// The parent pid from a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so parse from the last ')'.
fn parse_ppid(stat: &str) -> Option<i32> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(Exit::Code(0).code(), 0);
        assert_eq!(Exit::Code(255).code(), 255);
        assert_eq!(Exit::Signal(15).code(), 143);
        assert_eq!(Exit::Signal(9).code(), 137);
        assert_eq!(Exit::Signal(64).code(), 192);
    }

    #[test]
    fn ppid_survives_odd_command_names() {
        assert_eq!(parse_ppid("42 (sh) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("42 (a) b) (c) R 99 1 1"), Some(99));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn finds_our_own_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let me = std::process::id() as i32;
        let found = descendants(me);
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&(child.id() as i32)), "{found:?}");
    }
}
