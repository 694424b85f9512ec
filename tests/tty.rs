//! Job control under a pseudo-terminal, as `docker run -it IMG keel -- bash` gives it: the
//! interactive shell under keel has job control, ^C interrupts its foreground job, and keel
//! survives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::ffi::CStr;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
}

fn open_pty() -> Pty {
    // SAFETY: standard pty allocation; every result is checked.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(s >= 0, "open {:?}", CStr::from_ptr(name.as_ptr()));
        Pty {
            master: std::fs::File::from_raw_fd(m),
            slave: OwnedFd::from_raw_fd(s),
        }
    }
}

/// Everything the terminal showed so far, collected by a reader thread.
struct Screen(Arc<Mutex<String>>);

impl Screen {
    fn watch(mut master: std::fs::File) -> Screen {
        let buf = Arc::new(Mutex::new(String::new()));
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = master.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Screen(buf)
    }

    fn expect(&self, what: &str, ok: impl Fn(&str) -> bool) {
        let found = wait_until(Duration::from_secs(20), || ok(&self.0.lock().unwrap()));
        assert!(
            found,
            "{what} never showed; screen:\n{}",
            self.0.lock().unwrap()
        );
    }
}

/// Run `bin args... bash -i` under a new pty session and drive it like a user.
pub fn job_control(bin: &std::path::Path, mode: Mode, args: &[&str]) {
    let pty = open_pty();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["bash", "--norc", "--noprofile", "-i"]);
    let Some(mut cmd) = command_as(bin, mode, &all) else {
        return;
    };
    let slave = pty.slave.as_raw_fd();
    cmd.env("PS1", "$ ")
        .env("TERM", "dumb")
        .env_remove("PROMPT_COMMAND")
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // A new session whose controlling terminal is the pty, as a terminal emulator
            // or `docker run -it` sets up.
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let _ = slave;
            Ok(())
        });
    }
    let k = spawn(cmd, mode);
    drop(pty.slave);
    let mut master = pty.master.try_clone().unwrap();
    let screen = Screen::watch(pty.master);

    master.write_all(b"echo \"JC<$->\"\n").unwrap();
    screen.expect("the shell's flags", |s| {
        s.lines()
            .any(|l| l.starts_with("JC<") && l.ends_with('>') && !l.contains('$'))
    });
    let flags = {
        let s = screen.0.lock().unwrap();
        s.lines()
            .find(|l| l.starts_with("JC<") && !l.contains('$'))
            .unwrap()
            .to_string()
    };
    assert!(
        flags.contains('m'),
        "{mode:?}: no job control in the shell: {flags}"
    );
    let screen_now = screen.0.lock().unwrap().clone();
    assert!(
        !screen_now.contains("no job control"),
        "{mode:?}: {screen_now}"
    );

    // ^C reaches the foreground job, not keel.
    master.write_all(b"sleep 30; echo SLEPT\n").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    master.write_all(b"\x03").unwrap();
    master.write_all(b"echo \"AFTER<$?>\"\n").unwrap();
    screen.expect("^C interrupting sleep", |s| s.contains("AFTER<130>"));
    assert!(alive(k.keel_pid), "{mode:?}: keel died of ^C");

    // A stopped and resumed job (^Z, fg) works too.
    master.write_all(b"sleep 30\n").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    master.write_all(b"\x1a").unwrap();
    screen.expect("^Z stopping sleep", |s| s.contains("Stopped"));
    master.write_all(b"kill %1; echo \"KILLED<$?>\"\n").unwrap();
    screen.expect("the stopped job killed", |s| s.contains("KILLED<0>"));
    assert!(alive(k.keel_pid), "{mode:?}: keel died of ^Z");

    master.write_all(b"exit 7\n").unwrap();
    let mut k = k;
    k.child.stdout = None;
    k.child.stderr = None;
    let f = k.finish(Duration::from_secs(20));
    assert_eq!(
        f.code(),
        7,
        "{mode:?}: screen:\n{}",
        screen.0.lock().unwrap()
    );
}

#[test]
fn interactive_shell_has_job_control_as_pid1() {
    job_control(std::path::Path::new(keel()), Mode::Pid1, &["--"]);
}

#[test]
fn interactive_shell_has_job_control_as_plain_process() {
    job_control(std::path::Path::new(keel()), Mode::Plain, &["--"]);
}

#[test]
fn docker_init_gives_job_control_as_pid1() {
    // `docker run -it --init IMG bash`: /sbin/docker-init -- bash
    job_control(&personality("docker-init"), Mode::Pid1, &["--"]);
}

#[test]
fn tini_gives_job_control_as_plain_process() {
    job_control(&personality("tini"), Mode::Plain, &["-s", "--"]);
}

#[test]
fn catatonit_gives_job_control_as_pid1() {
    job_control(&personality("catatonit"), Mode::Pid1, &["--"]);
}

#[test]
fn dumb_init_setsid_mode_hands_over_the_terminal() {
    // As under `docker run -t`, dumb-init leads the terminal's session: it gives the terminal
    // up (TIOCNOTTY), swallows the SIGHUP/SIGCONT that causes, and the child's new session
    // takes it. (As PID 1 of `unshare` it would not lead the session: dumb-init cannot hand
    // the terminal over there either.)
    job_control(&personality("dumb-init"), Mode::Plain, &[]);
}

#[test]
fn dumb_init_single_child_mode_job_control() {
    job_control(&personality("dumb-init"), Mode::Pid1, &["-c"]);
}
