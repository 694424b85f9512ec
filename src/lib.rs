//! keel: a tiny init for containers.
//!
//! The crate is one engine with thin front-ends. A front-end ([`cli`]) turns a command line
//! and environment into a [`plan::Plan`]; [`runtime`] runs it with one event loop, asking the
//! pure [`supervisor`] what to do about every signal, exit and timer. See
//! `docs/ARCHITECTURE.md` for the path of a signal and of a child's exit through the modules.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod cli;
pub mod duration;
pub mod logger;
pub mod plan;
pub mod reap;
pub mod runtime;
pub mod signals;
pub mod spawn;
pub mod supervisor;
pub mod sys;

use std::ffi::OsString;
use std::io::Write;

/// Exit code for a bad command line or environment (nothing was started).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when keel cannot set itself up (signalfd, epoll, fork).
pub const EXIT_SETUP: u8 = 1;

/// Run keel with `args` (argv including argv[0]); returns the process exit code.
pub fn entry(args: Vec<OsString>) -> u8 {
    let rest = args.get(1..).unwrap_or_default();
    let command = match cli::parse(rest, &|k| std::env::var_os(k)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keel: {e}");
            return EXIT_USAGE;
        }
    };
    let (plan, log_setting) = match command {
        cli::Command::Help => {
            let _ = std::io::stdout().write_all(cli::HELP.as_bytes());
            return 0;
        }
        cli::Command::Version => {
            println!("{}", cli::version_line());
            return 0;
        }
        cli::Command::Run(plan, log) => (plan, log),
    };
    logger::init(&log_setting);
    run(*plan)
}

/// Run a plan as this process: set up signals, become a subreaper if not PID 1, run the loop.
pub fn run(plan: plan::Plan) -> u8 {
    let main_cmd = match spawn::Prepared::new(&plan.main, spawn::path_env().as_deref()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            return EXIT_USAGE;
        }
    };
    // Before anything is forked: from here on no signal can be lost.
    let intake = match signals::Intake::setup() {
        Ok(i) => i,
        Err(e) => {
            log::error!("cannot set up signal handling: {e}");
            return EXIT_SETUP;
        }
    };
    become_subreaper();
    match runtime::Runtime::new(plan, intake, main_cmd) {
        Ok(rt) => rt.run(),
        Err(e) => {
            log::error!("cannot set up the event loop: {e}");
            EXIT_SETUP
        }
    }
}

/// When not PID 1 (a shared pid namespace, `docker exec`, a shell), orphans would go to
/// someone else: register as child subreaper so they come back to keel.
fn become_subreaper() {
    // SAFETY: plain syscalls.
    let pid = unsafe { libc::getpid() };
    if pid == 1 {
        return;
    }
    // SAFETY: plain syscall with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0 {
        log::debug!("not PID 1 (pid {pid}): registered as child subreaper");
    } else {
        log::warn!(
            "not PID 1 and cannot become a subreaper ({}): orphans will not be reaped by keel",
            sys::SysError::last("prctl(PR_SET_CHILD_SUBREAPER)")
        );
    }
}
