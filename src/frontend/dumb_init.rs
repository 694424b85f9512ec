//! The dumb-init personality: dumb-init 1.2.5's command line and environment.
//!
//! `getopt_long("+hvVcr:")`: options stop at the first non-option, so `dumb-init sh -c x`
//! works. Setsid mode by default: the child leads a new session and takes the terminal;
//! signals go to its whole process group; TSTP/TTIN/TTOU become SIGSTOP for the group (the
//! group is orphaned, so the kernel would discard a default TSTP) and keel then stops itself;
//! the first SIGHUP/SIGCONT after handing over the terminal are swallowed; when the child
//! exits, its group gets SIGTERM. `-c`/`DUMB_INIT_SETSID=0`: signals to the child only.
//! Exec failure prints `[dumb-init] CMD: strerror` and exits 2. Help and version go to stderr,
//! byte for byte as dumb-init prints them (its own test suite checks them).

use super::{Env, LogSetting, OptSpec, Outcome, getopt, keel, prog_name};
use crate::plan::{Dialect, ForwardTo, Isolation, NotPid1, Plan};
use crate::signals::SigSet;
use log::LevelFilter;
use std::ffi::OsString;

/// The dumb-init release whose behaviour this personality follows.
pub const DUMB_INIT_VERSION: &str = "1.2.5";

fn help(prog: &str) -> String {
    format!(
        "dumb-init v{DUMB_INIT_VERSION}
Usage: {prog} [option] command [[arg] ...]

dumb-init is a simple process supervisor that forwards signals to children.
It is designed to run as PID1 in minimal container environments.

Optional arguments:
   -c, --single-child   Run in single-child mode.
                        In this mode, signals are only proxied to the
                        direct child and not any of its descendants.
   -r, --rewrite s:r    Rewrite received signal s to new signal r before proxying.
                        To ignore (not proxy) a signal, rewrite it to 0.
                        This option can be specified multiple times.
   -v, --verbose        Print debugging information to stderr.
   -h, --help           Print this help message and exit.
   -V, --version        Print the current version and exit.

Full help is available online at https://github.com/Yelp/dumb-init
"
    )
}

const REWRITE_USAGE: &str =
    "Usage: -r option takes <signum>:<signum>, where <signum> is between 1 and 31.
This option can be specified multiple times.
Use --help for full usage.
";

const SPECS: &[OptSpec] = &[
    OptSpec::new('h', Some("help"), false),
    OptSpec::new('v', Some("verbose"), false),
    OptSpec::new('V', Some("version"), false),
    OptSpec::new('c', Some("single-child"), false),
    OptSpec::new('r', Some("rewrite"), true),
];

/// The terminal stop signals dumb-init treats specially.
fn tty_stops() -> SigSet {
    SigSet::EMPTY
        .with(libc::SIGTSTP)
        .with(libc::SIGTTIN)
        .with(libc::SIGTTOU)
}

/// Read dumb-init's command line (`args` without argv[0]).
pub fn outcome(argv0: &OsString, args: &[OsString], env: Env) -> Outcome {
    let prog = prog_name(argv0, "dumb-init");
    let (opts, command) = match getopt(args, SPECS, false) {
        Ok(r) => r,
        Err(e) => return Outcome::print_err(&format!("{}\n", e.message(&prog)), 1),
    };
    let mut setsid = env("DUMB_INIT_SETSID").is_none_or(|v| v != "0");
    let mut debug = env("DUMB_INIT_DEBUG").is_some_and(|v| v == "1");
    let mut rewrites = Vec::new();
    for (c, v) in opts {
        match c {
            'h' => return Outcome::print_err(&help(&prog), 0),
            'V' => return Outcome::print_err(&format!("dumb-init v{DUMB_INIT_VERSION}\n"), 0),
            'v' => debug = true,
            'c' => setsid = false,
            'r' => rewrites.push(v.unwrap_or_default()),
            _ => return Outcome::print_err(&format!("{prog}: invalid option -- '{c}'\n"), 1),
        }
    }
    if command.is_empty() {
        return Outcome::print_err(
            &format!("Usage: {prog} [option] program [args]\nTry {prog} --help for full usage.\n"),
            1,
        );
    }
    let mut plan = Plan::single(command.clone());
    if setsid {
        // The default rewrites come first, so KEEL_REWRITE and -r for these signals win.
        for s in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
            plan.rewrite.set(s, libc::SIGSTOP);
        }
    }
    if let Err(e) = keel::apply_env(&mut plan, env) {
        return Outcome::print_err(&format!("[dumb-init] {}\n", e.0), 1);
    }
    for r in &rewrites {
        // dumb-init takes numbers; names (TERM:QUIT) are accepted too.
        if keel::rewrite(&mut plan, r, "-r").is_err() {
            return Outcome::print_err(REWRITE_USAGE, 1);
        }
    }
    if let Some(main) = plan.main.as_mut() {
        main.isolation = if setsid {
            Isolation::Session
        } else {
            // dumb-init leaves the child in its own group; keel gives it a group of its own
            // (and the terminal), so a ^C reaches it once, not also via keel.
            Isolation::ProcessGroup
        };
    }
    plan.dialect = Dialect::DumbInit;
    plan.not_pid1 = NotPid1::Nothing;
    plan.forward_to = if setsid {
        ForwardTo::Group
    } else {
        ForwardTo::Child
    };
    plan.stop_self_after = tty_stops();
    plan.term_group_on_exit = setsid;
    let level = if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Error
    };
    let log = if debug {
        LogSetting::level(level)
    } else {
        match LogSetting::from_env(env, level) {
            Ok(l) => l,
            Err(e) => return Outcome::print_err(&format!("[dumb-init] {e}\n"), 1),
        }
    };
    Outcome::Run(Box::new(plan), log)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn run(args: &[&str], env: &[(&str, &str)]) -> Outcome {
        super::super::run_with(outcome, "dumb-init", args, env)
    }

    fn plan(o: Outcome) -> (Plan, LogSetting) {
        match o {
            Outcome::Run(p, l) => (*p, l),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_and_version_are_byte_exact_on_stderr() {
        for flag in ["-h", "--help"] {
            let Outcome::Print { text, stderr, code } = run(&[flag], &[]) else {
                panic!()
            };
            assert_eq!((stderr, code), (true, 0));
            assert!(text.starts_with(
                "dumb-init v1.2.5\nUsage: dumb-init [option] command [[arg] ...]\n\n"
            ));
            assert!(
                text.ends_with(
                    "Full help is available online at https://github.com/Yelp/dumb-init\n"
                )
            );
            assert_eq!(text.lines().count(), 18);
        }
        for flag in ["-V", "--version"] {
            assert_eq!(
                run(&[flag], &[]),
                Outcome::print_err("dumb-init v1.2.5\n", 0)
            );
        }
        assert_eq!(
            run(&[], &[]),
            Outcome::print_err(
                "Usage: dumb-init [option] program [args]\nTry dumb-init --help for full usage.\n",
                1
            )
        );
        assert_eq!(
            run(&["--yolo"], &[]),
            Outcome::print_err("dumb-init: unrecognized option '--yolo'\n", 1)
        );
    }

    #[test]
    fn setsid_mode_by_default() {
        let (p, l) = plan(run(&["sh", "-c", "x"], &[]));
        let main = p.main.as_ref().unwrap();
        assert_eq!(main.argv.len(), 3, "stops at the first non-option");
        assert_eq!(main.isolation, Isolation::Session);
        assert_eq!(p.forward_to, ForwardTo::Group);
        assert!(p.term_group_on_exit);
        assert_eq!(p.rewrite.apply(libc::SIGTSTP), libc::SIGSTOP);
        assert_eq!(p.rewrite.apply(libc::SIGTTIN), libc::SIGSTOP);
        assert_eq!(p.rewrite.apply(libc::SIGTTOU), libc::SIGSTOP);
        assert!(p.stop_self_after.contains(libc::SIGTSTP));
        assert_eq!(p.dialect.exec_failure_code(), Some(2));
        assert_eq!(p.not_pid1, NotPid1::Nothing);
        assert_eq!(l.level, LevelFilter::Error);
    }

    #[test]
    fn single_child_mode() {
        for (args, env) in [
            (&["-c", "x"][..], &[][..]),
            (&["--single-child", "x"][..], &[][..]),
            (&["x"][..], &[("DUMB_INIT_SETSID", "0")][..]),
        ] {
            let (p, _) = plan(run(args, env));
            assert_eq!(p.forward_to, ForwardTo::Child, "{args:?}");
            assert_eq!(p.main.as_ref().unwrap().isolation, Isolation::ProcessGroup);
            assert!(!p.term_group_on_exit);
            assert_eq!(p.rewrite.apply(libc::SIGTSTP), libc::SIGTSTP);
            assert!(p.stop_self_after.contains(libc::SIGTSTP));
        }
        // Only the exact string "0" disables setsid.
        let (p, _) = plan(run(&["x"], &[("DUMB_INIT_SETSID", "false")]));
        assert_eq!(p.forward_to, ForwardTo::Group);
    }

    #[test]
    fn rewrites_and_debug() {
        let (p, l) = plan(run(&["-r", "15:3", "--rewrite", "20:0", "-v", "x"], &[]));
        assert_eq!(p.rewrite.apply(15), 3);
        assert_eq!(
            p.rewrite.apply(libc::SIGTSTP),
            0,
            "user -r wins over the default"
        );
        assert_eq!(l.level, LevelFilter::Debug);
        let (_, l) = plan(run(&["x"], &[("DUMB_INIT_DEBUG", "1")]));
        assert_eq!(l.level, LevelFilter::Debug);
        let (_, l) = plan(run(&["x"], &[("DUMB_INIT_DEBUG", "true")]));
        assert_eq!(l.level, LevelFilter::Error);
        for bad in ["15", "x:y", "99:1", "15:99"] {
            assert_eq!(
                run(&["-r", bad, "x"], &[]),
                Outcome::print_err(REWRITE_USAGE, 1),
                "{bad}"
            );
        }
    }
}
