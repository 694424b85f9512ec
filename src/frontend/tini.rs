//! The tini personality (also `docker-init`): tini 0.19's command line and environment.
//!
//! `getopt("p:hvwgle:s")` with GNU permutation (a command with dashes needs `--`, or
//! POSIXLY_CORRECT), the lone `--version`, `TINI_SUBREAPER` and `TINI_KILL_PROCESS_GROUP`
//! (presence enables, whatever the value), `TINI_VERBOSITY` (overrides `-v`), usage errors
//! exit 1, `-e` remaps to 0. The `KEEL_*` variables apply too (`docker run --init` can pass
//! only environment). Where tini is observably worse keel keeps its own behaviour: no
//! wake-up every second, exact signal state, stray SIGABRT forwarded, logs on stderr only,
//! and the graceful drain of stragglers (`KEEL_GRACE=0` restores tini's immediate exit).

use super::{Env, LogSetting, OptSpec, Outcome, getopt, keel, prog_name};
use crate::plan::{Dialect, ForwardTo, NotPid1, Plan};
use crate::signals;
use log::LevelFilter;
use std::ffi::OsString;

/// The tini release whose behaviour this personality follows.
pub const TINI_VERSION: &str = "0.19.0";

/// The `--version` line. dockerd parses `tini version <version> - git.<commit>`: the version
/// carries keel's (as catatonit's `0.1.7_catatonit` does), the commit is keel's git commit.
pub fn version_line() -> String {
    format!(
        "tini version {TINI_VERSION}_keel-{} - git.{}",
        env!("CARGO_PKG_VERSION"),
        env!("KEEL_GIT_COMMIT")
    )
}

fn usage(prog: &str) -> String {
    format!(
        "{} (keel {} as tini)
Usage: {prog} [OPTIONS] PROGRAM -- [ARGS] | --version

Execute a program under the supervision of a valid init process ({prog})

Command line options:

  --version: Show version and exit.
  -h: Show this help message and exit.
  -s: Register as a process subreaper (requires Linux >= 3.4).
  -p SIGNAL: Trigger SIGNAL when parent dies, e.g. \"-p SIGKILL\".
  -v: Generate more verbose output. Repeat up to 3 times.
  -w: Print a warning when processes are getting reaped.
  -g: Send signals to the child's process group.
  -e EXIT_CODE: Remap EXIT_CODE (from 0 to 255) to 0.
  -l: Show license and exit.

Environment variables:

  TINI_SUBREAPER: Register as a process subreaper (requires Linux >= 3.4).
  TINI_VERBOSITY: Set the verbosity level (default: 1).
  TINI_KILL_PROCESS_GROUP: Send signals to the child's process group.
  KEEL_GRACE, KEEL_STOP_TIMEOUT, KEEL_REWRITE, KEEL_REMAP_EXIT, KEEL_LOG: see keel --help.

",
        version_line(),
        env!("CARGO_PKG_VERSION")
    )
}

const SPECS: &[OptSpec] = &[
    OptSpec::new('p', None, true),
    OptSpec::new('h', None, false),
    OptSpec::new('v', None, false),
    OptSpec::new('w', None, false),
    OptSpec::new('g', None, false),
    OptSpec::new('l', None, false),
    OptSpec::new('e', None, true),
    OptSpec::new('s', None, false),
];

/// Read tini's command line (`args` without argv[0]).
pub fn outcome(argv0: &OsString, args: &[OsString], env: Env) -> Outcome {
    let prog = prog_name(argv0, "tini");
    if args.len() == 1 && args[0] == "--version" {
        return Outcome::print_out(&format!("{}\n", version_line()), 0);
    }
    let fail = |msg: &str| Outcome::print_err(&format!("{msg}\n{}", usage(&prog)), 1);
    let permute = env("POSIXLY_CORRECT").is_none();
    let (opts, command) = match getopt(args, SPECS, permute) {
        Ok(r) => r,
        Err(e) => return fail(&e.message(&prog)),
    };
    let mut plan = Plan::single(command.clone());
    // tini ignores TTIN/TTOU sent to it (it never forwards them); KEEL_REWRITE may override.
    plan.rewrite.set(libc::SIGTTIN, 0);
    plan.rewrite.set(libc::SIGTTOU, 0);
    if let Err(e) = keel::apply_env(&mut plan, env) {
        return Outcome::print_err(&format!("[FATAL tini] {}\n", e.0), 1);
    }
    plan.dialect = Dialect::Tini;
    let mut subreaper = env("TINI_SUBREAPER").is_some();
    if env("TINI_KILL_PROCESS_GROUP").is_some() {
        plan.forward_to = ForwardTo::Group;
    }
    let mut verbosity: i64 = 1;
    for (c, v) in opts {
        let v = v.unwrap_or_default();
        match c {
            'h' => return Outcome::print_out(&usage(&prog), 0),
            'l' => return Outcome::print_out(crate::LICENSE, 0),
            's' => subreaper = true,
            'v' => verbosity += 1,
            'w' => plan.warn_on_reap = true,
            'g' => plan.forward_to = ForwardTo::Group,
            'p' => match signals::parse(&v) {
                Ok(s) if signals::catchable(s) || s == libc::SIGKILL => {
                    plan.parent_death_signal = Some(s)
                }
                _ => return fail(&format!("Not a valid option for -p: {v}")),
            },
            'e' => match v.parse::<u8>() {
                Ok(code) => plan.remap_exit.set(code, 0),
                Err(_) => return fail(&format!("Not a valid option for -e: {v}")),
            },
            _ => return fail(&format!("{prog}: invalid option -- '{c}'")),
        }
    }
    if command.is_empty() {
        return Outcome::print_err(&usage(&prog), 1);
    }
    // Parsed after argv, as tini does: the variable overrides -v (atoi: garbage is 0).
    if let Some(v) = env("TINI_VERBOSITY") {
        verbosity = atoi(&v.to_string_lossy());
    }
    plan.not_pid1 = if subreaper {
        NotPid1::Subreaper
    } else {
        NotPid1::Warn
    };
    let level = match verbosity {
        i64::MIN..=0 => LevelFilter::Error,
        1 => LevelFilter::Warn,
        2 => LevelFilter::Info,
        3 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    // TINI_VERBOSITY or -v decide; otherwise KEEL_LOG may.
    let log = if env("TINI_VERBOSITY").is_some() || verbosity != 1 {
        LogSetting::level(level)
    } else {
        match LogSetting::from_env(env, level) {
            Ok(l) => l,
            Err(e) => return Outcome::print_err(&format!("[FATAL tini] {e}\n"), 1),
        }
    };
    Outcome::Run(Box::new(plan), log)
}

/// C's atoi: optional whitespace and sign, then digits; anything else stops it.
fn atoi(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n: i64 = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .take(18)
        .fold(0, |n, d| n * 10 + i64::from(d - b'0'));
    if neg { -n } else { n }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn run(args: &[&str], env: &[(&str, &str)]) -> Outcome {
        super::super::run_with(outcome, "tini", args, env)
    }

    fn plan(o: Outcome) -> (Plan, LogSetting) {
        match o {
            Outcome::Run(p, l) => (*p, l),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn version_is_what_dockerd_parses() {
        let Outcome::Print { text, stderr, code } = run(&["--version"], &[]) else {
            panic!()
        };
        assert!(!stderr);
        assert_eq!(code, 0);
        // dockerd: split on " - ", strip "tini version ", commit from "git.X".
        let line = text.trim_end();
        let (v, c) = line.split_once(" - ").unwrap();
        let version = v.strip_prefix("tini version ").unwrap();
        assert!(version.starts_with("0.19.0_keel-"));
        let parts: Vec<&str> = c.split('.').collect();
        assert_eq!(parts, ["git", env!("KEEL_GIT_COMMIT")]);
        // Only the lone --version.
        let Outcome::Print { text, code, .. } = run(&["--version", "x"], &[]) else {
            panic!()
        };
        assert_eq!(code, 1);
        assert!(text.starts_with("tini: invalid option -- '-'"));
    }

    #[test]
    fn permutation_and_posixly_correct() {
        let Outcome::Print { text, code, .. } = run(&["sh", "-c", "x"], &[]) else {
            panic!()
        };
        assert_eq!(code, 1);
        assert!(text.starts_with("tini: invalid option -- 'c'\n"));
        let (p, _) = plan(run(&["sh", "-c", "x"], &[("POSIXLY_CORRECT", "1")]));
        assert_eq!(p.main.unwrap().argv.len(), 3);
        let (p, _) = plan(run(&["sh", "-g"], &[]));
        assert_eq!(p.forward_to, ForwardTo::Group);
        assert_eq!(p.main.unwrap().argv, vec![OsString::from("sh")]);
    }

    #[test]
    fn flags_and_environment() {
        let (p, l) = plan(run(
            &[
                "-s", "-w", "-vv", "-e", "143", "-e3", "-p", "SIGKILL", "--", "cmd",
            ],
            &[],
        ));
        assert_eq!(p.not_pid1, NotPid1::Subreaper);
        assert!(p.warn_on_reap);
        assert_eq!(l.level, LevelFilter::Debug);
        assert_eq!(p.remap_exit.apply(143), 0);
        assert_eq!(p.remap_exit.apply(3), 0);
        assert_eq!(p.remap_exit.apply(4), 4);
        assert_eq!(p.parent_death_signal, Some(libc::SIGKILL));
        assert_eq!(p.dialect, Dialect::Tini);
        assert_eq!(p.rewrite.apply(libc::SIGTTIN), 0);
        assert_eq!(p.rewrite.apply(libc::SIGTSTP), libc::SIGTSTP);
        let (p, l) = plan(run(
            &["-vvv", "cmd"],
            &[
                ("TINI_SUBREAPER", ""),
                ("TINI_KILL_PROCESS_GROUP", "0"),
                ("TINI_VERBOSITY", "0"),
                ("KEEL_GRACE", "1s"),
            ],
        ));
        assert_eq!(p.not_pid1, NotPid1::Subreaper);
        assert_eq!(p.forward_to, ForwardTo::Group);
        assert_eq!(l.level, LevelFilter::Error);
        assert_eq!(p.grace, std::time::Duration::from_secs(1));
        let (p, _) = plan(run(&["cmd"], &[]));
        assert_eq!(p.not_pid1, NotPid1::Warn);
        assert_eq!(p.forward_to, ForwardTo::Child);
    }

    #[test]
    fn usage_errors_exit_1() {
        for (args, want) in [
            (&[][..], "Usage: tini"),
            (&["-e", "256", "x"][..], "Not a valid option for -e: 256"),
            (&["-e", "1x", "x"][..], "Not a valid option for -e: 1x"),
            (
                &["-p", "SIGFOO", "x"][..],
                "Not a valid option for -p: SIGFOO",
            ),
            (&["-p"][..], "option requires an argument -- 'p'"),
        ] {
            let Outcome::Print { text, stderr, code } = run(args, &[]) else {
                panic!("{args:?}")
            };
            assert_eq!((stderr, code), (true, 1), "{args:?}");
            assert!(text.contains(want), "{args:?}: {text}");
        }
        let Outcome::Print { text, stderr, code } = run(&["-h"], &[]) else {
            panic!()
        };
        assert_eq!((stderr, code), (false, 0));
        assert!(text.contains("Usage: tini"));
        let Outcome::Print { text, code, .. } = run(&["-l"], &[]) else {
            panic!()
        };
        assert_eq!(code, 0);
        assert!(text.contains("MIT License"));
    }

    #[test]
    fn atoi_like_c() {
        assert_eq!(atoi("3"), 3);
        assert_eq!(atoi(" -2x"), -2);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi(""), 0);
    }
}
