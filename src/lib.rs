//! keel: a tiny init for containers.
//!
//! The crate is one engine with thin front-ends. A front-end ([`frontend`]: keel's own command
//! line, or tini's, dumb-init's or catatonit's when invoked under their names) turns a command
//! line and environment into a [`plan::Plan`]; [`runtime`] runs it with one event loop, asking
//! the pure [`supervisor`] what to do about every signal, exit and timer. See
//! `docs/ARCHITECTURE.md` for the path of a signal and of a child's exit through the modules.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod cgroup;
pub mod config;
pub mod control;
pub mod ctl;
pub mod duration;
pub mod frontend;
pub mod logger;
pub mod logs;
pub mod plan;
pub mod readiness;
pub mod reap;
pub mod runtime;
pub mod service;
pub mod signals;
pub mod spawn;
pub mod supervisor;
pub mod sys;

use plan::{NotPid1, Plan};
use std::ffi::OsString;
use std::io::Write;

/// Exit code for a bad command line or environment (nothing was started).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when keel cannot set itself up (signalfd, epoll, fork).
pub const EXIT_SETUP: u8 = 1;
/// keel's license, for the personalities' `-l`/`-L`.
pub const LICENSE: &str = include_str!("../LICENSE");

/// Run keel with `args` (argv including argv[0]); returns the process exit code.
pub fn entry(args: Vec<OsString>) -> u8 {
    match frontend::outcome(&args, &|k| std::env::var_os(k)) {
        frontend::Outcome::Print { text, stderr, code } => {
            let _ = if stderr {
                std::io::stderr().write_all(text.as_bytes())
            } else {
                std::io::stdout().write_all(text.as_bytes())
            };
            code
        }
        frontend::Outcome::Run(plan, log_setting) => {
            logger::init(log_setting.level, plan.dialect);
            run(*plan)
        }
    }
}

/// Run a plan as this process: set up signals, handle not being PID 1, run the loop.
pub fn run(plan: Plan) -> u8 {
    let main_cmd = match &plan.main {
        None => None,
        Some(spec) => match spawn::Prepared::new(spec, spawn::path_env().as_deref()) {
            Ok(c) => Some(c.with_exec_failure_code(plan.dialect.exec_failure_code())),
            Err(e) => {
                log::error!("{e}");
                return EXIT_USAGE;
            }
        },
    };
    // Everything a service needs that can be checked before it starts is checked now, so a
    // bad configuration starts nothing (exit 2) instead of failing service by service.
    if plan.is_services_mode()
        && let Err(e) = runtime::check_services(&plan.services, &spawn::keel_env())
    {
        log::error!("{e}");
        return EXIT_USAGE;
    }
    // Who besides root may use `keel ctl`: KEEL_CONTROL_GROUP (a group name or number).
    let control_group = match std::env::var("KEEL_CONTROL_GROUP") {
        Ok(g) if !g.trim().is_empty() => match config::users::Db::load().group(g.trim()) {
            Ok(gid) => Some(gid),
            Err(e) => {
                log::error!("KEEL_CONTROL_GROUP: {e}");
                return EXIT_USAGE;
            }
        },
        _ => None,
    };
    // Before anything is forked: from here on no signal can be lost.
    let intake = match signals::Intake::setup() {
        Ok(i) => i,
        Err(e) => {
            log::error!("cannot set up signal handling: {e}");
            return EXIT_SETUP;
        }
    };
    if let Some(sig) = plan.parent_death_signal {
        // SAFETY: plain syscall with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } != 0 {
            log::error!("{}", sys::SysError::last("prctl(PR_SET_PDEATHSIG)"));
            return EXIT_SETUP;
        }
    }
    if !not_pid1(plan.not_pid1) {
        return EXIT_SETUP;
    }
    let services_mode = plan.is_services_mode();
    // Before anything is forked: on cgroup v2 keel moves itself into a leaf of its cgroup.
    let cgroups = match setup_cgroups(&plan) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match runtime::Runtime::new(plan, intake, main_cmd) {
        Ok(mut rt) => {
            if let Some(c) = cgroups {
                rt.use_cgroups(c);
            }
            if services_mode {
                rt.serve_control(control_group);
            }
            rt.run()
        }
        Err(e) => {
            log::error!("cannot set up the event loop: {e}");
            EXIT_SETUP
        }
    }
}

/// The cgroups for `plan.cgroups` (services mode): `Err(exit code)` when `required` cannot
/// be met, nothing started.
fn setup_cgroups(plan: &Plan) -> Result<Option<cgroup::Cgroups>, u8> {
    if !plan.is_services_mode() {
        return Ok(None);
    }
    if plan.cgroups == cgroup::Mode::Off {
        log::info!("cgroups: off (cgroups = \"off\")");
        return Ok(None);
    }
    let needed = plan
        .services
        .iter()
        .chain(plan.main.iter())
        .fold(cgroup::Controllers::NONE, |acc, s| {
            acc | cgroup::Controllers::for_limits(&s.limits)
        });
    match cgroup::Cgroups::setup(plan.cgroups, needed) {
        Ok(c) => Ok(c),
        Err(cgroup::CgroupError::Unusable(p)) => {
            log::error!("{}", p.refusal());
            Err(cgroup::EXIT_REQUIRED)
        }
        Err(e) => {
            log::error!(
                "cgroups: {e}; cgroups = \"required\": refusing to start (nothing was started)"
            );
            Err(cgroup::EXIT_REQUIRED)
        }
    }
}

/// When not PID 1 (a shared pid namespace, `docker exec`, a shell), orphans go to someone
/// else unless keel registers as child subreaper. Returns false if keel must not go on.
fn not_pid1(policy: NotPid1) -> bool {
    // SAFETY: plain syscall.
    let pid = unsafe { libc::getpid() };
    if pid == 1 {
        return true;
    }
    let register = || {
        // SAFETY: plain syscall with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0 {
            log::debug!("not PID 1 (pid {pid}): registered as child subreaper");
            Ok(())
        } else {
            Err(sys::SysError::last("prctl(PR_SET_CHILD_SUBREAPER)"))
        }
    };
    match policy {
        NotPid1::Subreaper => {
            if let Err(e) = register() {
                log::warn!(
                    "not PID 1 and cannot become a subreaper ({e}): orphans will not be reaped by keel"
                );
            }
            true
        }
        NotPid1::SubreaperOrFail => match register() {
            Ok(()) => true,
            Err(e) => {
                log::error!("failed to set as subreaper: {e}");
                false
            }
        },
        NotPid1::Warn => {
            let mut is_subreaper: libc::c_int = 0;
            // SAFETY: the kernel writes an int through the pointer.
            let ok = unsafe {
                libc::prctl(
                    libc::PR_GET_CHILD_SUBREAPER,
                    &mut is_subreaper as *mut libc::c_int,
                    0,
                    0,
                    0,
                )
            } == 0;
            if ok && is_subreaper == 0 {
                log::warn!(
                    "Tini is not running as PID 1 and isn't registered as a child subreaper."
                );
                log::warn!(
                    "Zombie processes will not be re-parented to Tini, so zombie reaping won't work."
                );
                log::warn!(
                    "To fix the problem, use the -s option or set the environment variable TINI_SUBREAPER to register Tini as a child subreaper, or run Tini as PID 1."
                );
            }
            true
        }
        NotPid1::Nothing => true,
    }
}
