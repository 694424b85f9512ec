//! The catatonit personality (also `podman-init`): catatonit 0.2's command line.
//!
//! `getopt_long("ghLPV", {"version"})` with GNU permutation (use `--`), `-g` group
//! forwarding, `-P` pause mode (spawn nothing, reap, exit 0 on TERM/INT, ignore the rest),
//! `-L` license, `-h` help on stderr, `-V`/`--version` as a `tini version ..._catatonit` line on
//! stdout (container engines parse it like tini's), `CATATONIT_DEBUG` (presence). Always a
//! subreaper when not PID 1 (exit 1 if that fails). TSTP/TTIN/TTOU sent to it are dropped.
//! Exec failure exits 1.

use super::{Env, LogSetting, OptSpec, Outcome, getopt, keel, prog_name};
use crate::plan::{Dialect, ForwardTo, NotPid1, Plan};
use log::LevelFilter;
use std::ffi::OsString;

/// The catatonit release whose behaviour this personality follows.
pub const CATATONIT_VERSION: &str = "0.2.1";

/// The `-V` line.
pub fn version_line() -> String {
    format!(
        "tini version {CATATONIT_VERSION}_catatonit_keel-{}",
        env!("CARGO_PKG_VERSION")
    )
}

fn usage(prog: &str) -> String {
    format!(
        "usage: {prog} [-ghLPV] [--] <progname> [<arguments>...]

options:
  -g  forward signals to pid1's process group
  -h  print this help page
  -L  print license information
  -P  do not spawn a process: wait for SIGINT or SIGTERM, reap zombies
  -V, --version  print version information
"
    )
}

const SPECS: &[OptSpec] = &[
    OptSpec::new('g', None, false),
    OptSpec::new('h', None, false),
    OptSpec::new('L', None, false),
    OptSpec::new('P', None, false),
    OptSpec::new('V', Some("version"), false),
];

/// Read catatonit's command line (`args` without argv[0]).
pub fn outcome(argv0: &OsString, args: &[OsString], env: Env) -> Outcome {
    let prog = prog_name(argv0, "catatonit");
    let pid = std::process::id();
    let (opts, command) = match getopt(args, SPECS, env("POSIXLY_CORRECT").is_none()) {
        Ok(r) => r,
        Err(e) => return Outcome::print_err(&format!("{}\n{}", e.message(&prog), usage(&prog)), 1),
    };
    let mut plan = Plan::single(command.clone());
    // catatonit drops terminal stop signals sent to it; KEEL_REWRITE may override.
    for s in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        plan.rewrite.set(s, 0);
    }
    if let Err(e) = keel::apply_env(&mut plan, env) {
        return Outcome::print_err(&format!("ERROR (catatonit:{pid}): {}\n", e.0), 1);
    }
    let mut pause = false;
    for (c, _) in opts {
        match c {
            'h' => return Outcome::print_err(&usage(&prog), 0),
            'L' => return Outcome::print_out(crate::LICENSE, 0),
            'V' => return Outcome::print_out(&format!("{}\n", version_line()), 0),
            'g' => plan.forward_to = ForwardTo::Group,
            'P' => pause = true,
            _ => return Outcome::print_err(&usage(&prog), 1),
        }
    }
    if pause {
        plan.main = None;
    } else if command.is_empty() {
        return Outcome::print_err(
            &format!(
                "ERROR (catatonit:{pid}): missing program name\n{}",
                usage(&prog)
            ),
            1,
        );
    }
    plan.dialect = Dialect::Catatonit;
    plan.not_pid1 = NotPid1::SubreaperOrFail;
    let level = if env("CATATONIT_DEBUG").is_some() {
        LevelFilter::Debug
    } else {
        LevelFilter::Error
    };
    match LogSetting::from_env(env, level) {
        Ok(log) => Outcome::Run(Box::new(plan), log),
        Err(e) => Outcome::print_err(&format!("ERROR (catatonit:{pid}): {e}\n"), 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn run(args: &[&str], env: &[(&str, &str)]) -> Outcome {
        super::super::run_with(outcome, "catatonit", args, env)
    }

    #[test]
    fn version_help_license() {
        let Outcome::Print { text, stderr, code } = run(&["--version"], &[]) else {
            panic!()
        };
        assert_eq!((stderr, code), (false, 0));
        assert!(text.starts_with("tini version 0.2.1_catatonit"));
        assert_eq!(run(&["-V"], &[]), run(&["--version"], &[]));
        let Outcome::Print { stderr, code, .. } = run(&["-h"], &[]) else {
            panic!()
        };
        assert_eq!((stderr, code), (true, 0));
        let Outcome::Print { text, stderr, .. } = run(&["-L"], &[]) else {
            panic!()
        };
        assert!(!stderr && text.contains("MIT License"));
    }

    #[test]
    fn pause_group_and_errors() {
        let Outcome::Run(p, _) = run(&["-P"], &[]) else {
            panic!()
        };
        assert!(p.main.is_none());
        let Outcome::Run(p, l) = run(&["-g", "--", "sh", "-c", "x"], &[("CATATONIT_DEBUG", "")])
        else {
            panic!()
        };
        assert_eq!(p.forward_to, ForwardTo::Group);
        assert_eq!(p.rewrite.apply(libc::SIGTSTP), 0);
        assert_eq!(p.not_pid1, NotPid1::SubreaperOrFail);
        assert_eq!(l.level, LevelFilter::Debug);
        let Outcome::Print { text, code, .. } = run(&[], &[]) else {
            panic!()
        };
        assert_eq!(code, 1);
        assert!(text.contains("missing program name"));
        let Outcome::Print { text, code, .. } = run(&["sh", "-c", "x"], &[]) else {
            panic!()
        };
        assert_eq!(code, 1);
        assert!(text.starts_with("catatonit: invalid option -- 'c'"));
    }
}
