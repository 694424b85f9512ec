//! Job control under a pseudo-terminal, as `docker run -it IMG keel -- bash` gives it: the
//! interactive shell under keel has job control, ^C interrupts its foreground job, and keel
//! survives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::pty::{Screen, open_pty};
use common::*;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

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
    let flags = screen
        .expect("the shell's flags", |l| {
            l.starts_with("JC<") && l.ends_with('>') && !l.contains('$')
        })
        .unwrap();
    assert!(
        flags.contains('m'),
        "{mode:?}: no job control in the shell: {flags}"
    );
    let screen_now = screen.text();
    assert!(
        !screen_now.contains("no job control"),
        "{mode:?}: {screen_now}"
    );

    // ^C reaches the foreground job, not keel.
    master.write_all(b"sleep 30; echo SLEPT\n").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    master.write_all(b"\x03").unwrap();
    master.write_all(b"echo \"AFTER<$?>\"\n").unwrap();
    screen
        .expect("^C interrupting sleep", |l| l.contains("AFTER<130>"))
        .unwrap();
    assert!(alive(k.keel_pid), "{mode:?}: keel died of ^C");

    // A stopped and resumed job (^Z, fg) works too.
    master.write_all(b"sleep 30\n").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    master.write_all(b"\x1a").unwrap();
    screen
        .expect("^Z stopping sleep", |l| l.contains("Stopped"))
        .unwrap();
    // Wait until bash has noticed the job's end before `exit`: under load it may not have
    // yet, and bash then refuses the first `exit` ("There are stopped jobs").
    master
        .write_all(
            b"kill %1; while jobs %1 >/dev/null 2>&1; do sleep 0.1; done; echo \"KILLED<gone>\"\n",
        )
        .unwrap();
    screen
        .expect("the stopped job killed", |l| l.contains("KILLED<gone>"))
        .unwrap();
    assert!(alive(k.keel_pid), "{mode:?}: keel died of ^Z");

    master.write_all(b"exit 7\n").unwrap();
    let mut k = k;
    k.child.stdout = None;
    k.child.stderr = None;
    let f = k.finish(Duration::from_secs(20));
    assert_eq!(f.code(), 7, "{mode:?}: screen:\n{}", screen.text());
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
