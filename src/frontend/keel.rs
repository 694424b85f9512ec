//! keel's own command line and environment: `keel [OPTIONS] [--] CMD [ARGS...]`.
//!
//! Owns: turning argv and `KEEL_*` variables into a [`Plan`], or a one-line usage error.
//! Must not: touch the OS (the environment is passed in, so tests need no process state).
//!
//! Options stop at the first non-option (so `keel sh -c 'x'` works without `--`). Every
//! option has an environment variable because `docker run --init` cannot pass flags; a flag
//! overrides its variable, and list options (`--rewrite`, `--remap-exit`) add to it.

use super::{Env, LogSetting, Outcome};
use crate::duration;
use crate::plan::{ForwardTo, Plan};
use crate::signals;
use log::LevelFilter;
use std::ffi::OsString;
use std::fmt;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run a plan, with this log setting.
    Run(Box<Plan>, LogSetting),
    /// Print help and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
}

/// keel's own front-end: argv (without argv[0]) and the environment to an outcome.
pub fn outcome(args: &[OsString], env: Env) -> Outcome {
    if args.first().is_some_and(|a| a == "check") {
        return check(&args[1..]);
    }
    if args.first().is_some_and(|a| a == "ctl") {
        // The client talks to a running keel and prints as it goes (logs -f streams), so it
        // runs here and leaves only its exit code to report.
        let code = crate::ctl::main(&args[1..], env);
        return Outcome::print_out("", code);
    }
    match parse(args, env) {
        Ok(Command::Run(mut plan, log)) => match attach_config(&mut plan) {
            Ok(()) => Outcome::Run(plan, log),
            Err(text) => Outcome::print_err(&text, crate::EXIT_USAGE),
        },
        Ok(Command::Help) => Outcome::print_out(HELP, 0),
        Ok(Command::Version) => Outcome::print_out(&format!("{}\n", version_line()), 0),
        Err(e) => Outcome::print_err(&format!("keel: {e}\n"), crate::EXIT_USAGE),
    }
}

/// A command-line or environment error: nothing was started; keel exits 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (see 'keel --help')", self.0)
    }
}

/// The help text.
pub const HELP: &str = "\
keel - a tiny init for containers: runs CMD as its child, forwards signals, reaps zombies,
drains leftover processes, and exits with CMD's exit code.

Usage: keel [OPTIONS] [--] CMD [ARGS...]
       keel [OPTIONS] --config PATH [-- CMD [ARGS...]]   (services mode)
       keel check [--config PATH]...                      (validate, print the plan)

Options (each has an environment variable; a flag overrides it):
  -g, --process-group       forward signals to CMD's whole process group    KEEL_PROCESS_GROUP=1
  -r, --rewrite SRC:DST     forward DST when SRC arrives; DST 0 drops SRC   KEEL_REWRITE=TERM:QUIT,USR2:0
                            (names like TERM, SIGTERM, RTMIN+1, or numbers; repeatable)
  -e, --remap-exit FROM:TO  exit TO when CMD's exit code is FROM; repeatable KEEL_REMAP_EXIT=143:0
      --grace DURATION      after CMD exits: stop signal to what is left,    KEEL_GRACE=3s
                            SIGKILL after DURATION (default 3s; 0 = exit at once)
      --stop-timeout DURATION
                            SIGKILL CMD if it has not exited DURATION after  KEEL_STOP_TIMEOUT=10s
                            a TERM/INT/QUIT/HUP/PWR reached it (default: none)
      --config PATH         services from this TOML file or directory;     KEEL_CONFIG=a.toml,conf.d
                            repeatable (default: /etc/keel/keel.toml and
                            /etc/keel/keel.d/*.toml, when present). CMD, if
                            given, starts last and its exit ends keel.
  -v, --verbose             more diagnostics on stderr; repeat for more     KEEL_LOG=info|debug|trace
  -h, --help                print this help
  -V, --version             print the version

Durations: 500ms, 3s, 1m, 1m30s, or a bare number of seconds.

Exit status: CMD's exit code, or 128+N when CMD was killed by signal N (then --remap-exit);
  126 CMD found but not executable; 127 CMD not found; 2 bad usage (nothing started);
  1 keel could not set itself up (e.g. fork failed).
";

/// The version line: `keel 0.1.0 - git.1a2b3c4`. dockerd runs `<init-path> --version` and
/// takes the commit from `git.X`, so `dockerd --init-path=/usr/local/bin/keel` reports it
/// without a warning.
pub fn version_line() -> String {
    format!(
        "keel {} - git.{}",
        env!("CARGO_PKG_VERSION"),
        env!("KEEL_GIT_COMMIT")
    )
}

/// `keel check [--config PATH]...`: validate the configuration and print the plan, or every
/// error (one per line, `file:line:column: ...`) and exit 2.
fn check(args: &[OsString]) -> Outcome {
    let mut paths = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--config" || a == "-c" {
            match args.get(i + 1) {
                Some(p) => paths.push(std::path::PathBuf::from(p)),
                None => {
                    return Outcome::print_err(
                        &format!("keel: {}\n", UsageError("--config needs a value".into())),
                        crate::EXIT_USAGE,
                    );
                }
            }
            i += 2;
        } else if let Some(p) = a.strip_prefix("--config=") {
            paths.push(std::path::PathBuf::from(p));
            i += 1;
        } else {
            return Outcome::print_err(
                &format!(
                    "keel: {}\n",
                    UsageError(format!(
                        "keel check: unknown argument '{a}' (use --config PATH)"
                    ))
                ),
                crate::EXIT_USAGE,
            );
        }
    }
    let files = match crate::config::discover(&paths) {
        Ok(Some(f)) => f,
        Ok(None) => {
            return Outcome::print_err(
                &format!(
                    "keel: no configuration: neither {} nor {}/*.toml exists (use --config PATH)\n",
                    crate::config::DEFAULT_FILE,
                    crate::config::DEFAULT_DIR
                ),
                crate::EXIT_USAGE,
            );
        }
        Err(e) => return Outcome::print_err(&format!("{e}\n"), crate::EXIT_USAGE),
    };
    match crate::config::load(&files) {
        Ok(c) => Outcome::print_out(&describe(&c), 0),
        Err(e) => Outcome::print_err(&format!("{e}\n"), crate::EXIT_USAGE),
    }
}

/// The name the command gets in services mode (logs, `keel ctl`).
pub const MAIN_NAME: &str = "main";

/// Services mode: read the configuration (`--config`/`KEEL_CONFIG`, else the default
/// files if present) into `plan`. Without any configuration this is single-command mode,
/// which needs a command. Returns the text to print (exit 2) when that cannot be.
fn attach_config(plan: &mut Plan) -> Result<(), String> {
    let paths = plan.config.take().unwrap_or_default();
    let files = match crate::config::discover(&paths) {
        Ok(Some(f)) => f,
        Ok(None) => {
            return if plan.main.is_some() {
                Ok(())
            } else {
                Err(format!(
                    "keel: {}\n",
                    UsageError(format!(
                        "no command given, and no configuration ({} or {}/*.toml): keel [OPTIONS] [--] CMD [ARGS...], or keel --config PATH",
                        crate::config::DEFAULT_FILE,
                        crate::config::DEFAULT_DIR
                    ))
                ))
            };
        }
        Err(e) => return Err(format!("{e}\n")),
    };
    let config = crate::config::load(&files).map_err(|e| format!("{e}\n"))?;
    if let Some(main) = plan.main.as_mut() {
        if config.services.iter().any(|s| s.name == MAIN_NAME) {
            return Err(format!(
                "keel: a service is named '{MAIN_NAME}', the name of the command given on the command line; rename the service\n"
            ));
        }
        main.name = MAIN_NAME.to_string();
    }
    plan.services = config.services;
    plan.shutdown_timeout = config.global.shutdown_timeout;
    plan.cgroups = config.global.cgroups;
    if let Some(g) = config.global.grace {
        plan.grace = g;
    }
    plan.config = Some(paths);
    Ok(())
}

/// The plan `keel check` prints: files, global settings, start order and what waits for what.
pub fn describe(c: &crate::config::Config) -> String {
    use crate::plan::{Kind, Readiness};
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "configuration OK: {} service(s)", c.services.len());
    for f in &c.files {
        let _ = writeln!(out, "  file {}", f.display());
    }
    let _ = writeln!(
        out,
        "shutdown deadline {}",
        duration::display(c.global.shutdown_timeout)
    );
    let mode = match c.global.cgroups {
        crate::cgroup::Mode::Auto => "auto",
        crate::cgroup::Mode::Required => "required",
        crate::cgroup::Mode::Off => "off",
    };
    let _ = writeln!(out, "cgroups {mode}");
    if c.global.cgroups != crate::cgroup::Mode::Off {
        // What this machine (or container) gives, so a limit that would not be enforced is
        // seen before it matters. Reads only.
        let det = crate::cgroup::Detection::probe();
        let _ = writeln!(
            out,
            "  here: {}",
            det.summary().trim_start_matches("cgroups: ")
        );
        if let Some(p) = det.problem() {
            let _ = writeln!(out, "  {p}");
        }
    }
    let _ = writeln!(
        out,
        "start order (each wave starts in parallel once the one before is ready):"
    );
    for (n, wave) in crate::config::start_waves(&c.services).iter().enumerate() {
        for name in wave {
            let Some(s) = c.services.iter().find(|s| &s.name == name) else {
                continue;
            };
            let kind = match s.kind {
                Kind::Simple => "simple",
                Kind::Oneshot => "oneshot",
                Kind::Notify => "notify",
            };
            let ready = match &s.ready {
                Readiness::Started => String::new(),
                Readiness::NotifyFd(fd) => format!(", ready: newline on fd {fd}"),
                Readiness::SdNotify => ", ready: sd_notify READY=1".into(),
                Readiness::Exec { argv, .. } => format!(
                    ", ready: `{}` exits 0",
                    argv.iter()
                        .map(|a| a.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                Readiness::Tcp { addr, .. } => format!(", ready: tcp {addr} accepts"),
            };
            let mut waits: Vec<String> = s.after.iter().map(|d| format!("after {d}")).collect();
            waits.extend(s.requires.iter().map(|d| format!("requires {d}")));
            let waits = if waits.is_empty() {
                String::new()
            } else {
                format!("; {}", waits.join(", "))
            };
            let restart = match s.restart {
                crate::plan::RestartPolicy::No => "no",
                crate::plan::RestartPolicy::OnFailure => "on-failure",
                crate::plan::RestartPolicy::OnAbnormal => "on-abnormal",
                crate::plan::RestartPolicy::Always => "always",
            };
            let limits = describe_limits(&s.limits);
            let _ = writeln!(
                out,
                "  {}. {name} ({kind}{ready}; restart {restart}{}){waits}{limits}",
                n + 1,
                if s.critical { ", critical" } else { "" }
            );
        }
    }
    out
}

/// `; limits: memory-max 256M, cpu-quota 20%` for `keel check` (empty without limits).
fn describe_limits(l: &crate::plan::Limits) -> String {
    use crate::plan::Size;
    // Hundredths of a percent, without float formatting (~20 KB of binary).
    let pct = |q: u32| match q % 100 {
        0 => format!("{}%", q / 100),
        r if r % 10 == 0 => format!("{}.{}%", q / 100, r / 10),
        r => format!("{}.{r:02}%", q / 100),
    };
    let size = |s: Size| match s {
        Size::Bytes(b) => {
            let units = [(1u64 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
            units
                .iter()
                .find(|(u, _)| b >= *u && b % u == 0)
                .map_or(format!("{b}"), |(u, n)| format!("{}{n}", b / u))
        }
        Size::Percent(p) => pct(p),
        Size::Max => "max".into(),
    };
    let mut v: Vec<String> = Vec::new();
    let sizes = [
        ("memory-max", l.memory_max),
        ("memory-high", l.memory_high),
        ("memory-swap-max", l.memory_swap_max),
    ];
    v.extend(
        sizes
            .iter()
            .filter_map(|(k, x)| x.map(|x| format!("{k} {}", size(x)))),
    );
    if let Some(q) = l.cpu_quota {
        v.push(format!("cpu-quota {}", pct(q)));
    }
    if let Some(p) = l.cpu_quota_period {
        v.push(format!("cpu-quota-period {}", duration::display(p)));
    }
    if let Some(w) = l.cpu_weight {
        v.push(format!("cpu-weight {w}"));
    }
    if let Some(t) = l.tasks_max {
        v.push(format!(
            "tasks-max {}",
            t.map_or("max".to_string(), |n| n.to_string())
        ));
    }
    if let Some(w) = l.io_weight {
        v.push(format!("io-weight {w}"));
    }
    v.extend(l.io_max.iter().map(|m| format!("io-max {}", m.device)));
    if v.is_empty() {
        String::new()
    } else {
        format!("; limits: {}", v.join(", "))
    }
}

/// Parse `args` (without argv[0]) with environment lookup `env`.
pub fn parse(args: &[OsString], env: Env) -> Result<Command, UsageError> {
    let mut plan = Plan::single(Vec::new());
    apply_env(&mut plan, env)?;
    let mut verbose = 0u8;
    // --config replaces KEEL_CONFIG (a comma-separated list), which replaces the defaults.
    let mut config_paths: Vec<std::path::PathBuf> = Vec::new();

    let mut i = 0;
    while i < args.len() {
        let arg = args[i].to_string_lossy();
        if arg == "--" {
            i += 1;
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        i += 1;
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let flag = format!("--{name}");
            let mut value = || -> Result<String, UsageError> {
                if let Some(v) = inline.clone() {
                    return Ok(v);
                }
                let v = args
                    .get(i)
                    .ok_or_else(|| UsageError(format!("{flag} needs a value")))?;
                i += 1;
                Ok(v.to_string_lossy().into_owned())
            };
            match name {
                "process-group" => plan.forward_to = ForwardTo::Group,
                "rewrite" => rewrite(&mut plan, &value()?, &flag)?,
                "remap-exit" => remap(&mut plan, &value()?, &flag)?,
                "grace" => plan.grace = dur(&value()?, &flag)?,
                "stop-timeout" => plan.stop_timeout = stop_timeout(&value()?, &flag)?,
                "config" => config_paths.push(std::path::PathBuf::from(value()?)),
                "verbose" => verbose = verbose.saturating_add(1),
                "help" => return Ok(Command::Help),
                "version" => return Ok(Command::Version),
                _ => return Err(UsageError(format!("unknown option '--{name}'"))),
            }
            if inline.is_some() && matches!(name, "process-group" | "verbose" | "help" | "version")
            {
                return Err(UsageError(format!("--{name} takes no value")));
            }
            continue;
        }
        // Short options, bundled (-gv) or with an attached value (-rTERM:QUIT).
        let shorts: Vec<char> = arg[1..].chars().collect();
        let mut j = 0;
        while j < shorts.len() {
            let c = shorts[j];
            j += 1;
            match c {
                'g' => plan.forward_to = ForwardTo::Group,
                'v' => verbose = verbose.saturating_add(1),
                'h' => return Ok(Command::Help),
                'V' => return Ok(Command::Version),
                'r' | 'e' => {
                    let flag = format!("-{c}");
                    let v: String = if j < shorts.len() {
                        let v = shorts[j..].iter().collect();
                        j = shorts.len();
                        v
                    } else {
                        let v = args
                            .get(i)
                            .ok_or_else(|| UsageError(format!("{flag} needs a value")))?;
                        i += 1;
                        v.to_string_lossy().into_owned()
                    };
                    if c == 'r' {
                        rewrite(&mut plan, &v, &flag)?;
                    } else {
                        remap(&mut plan, &v, &flag)?;
                    }
                }
                _ => return Err(UsageError(format!("unknown option '-{c}'"))),
            }
        }
    }
    let argv: Vec<OsString> = args[i.min(args.len())..].to_vec();
    if argv.first().is_some_and(|a| a.is_empty()) {
        return Err(UsageError("the command is an empty string".into()));
    }
    // No command: services mode needs a configuration (checked once it is read).
    plan.main = if argv.is_empty() {
        None
    } else {
        Plan::single(argv).main
    };
    if config_paths.is_empty()
        && let Some(v) = env("KEEL_CONFIG").filter(|v| !v.is_empty())
    {
        let v = v.to_string_lossy();
        config_paths = list(&v).map(std::path::PathBuf::from).collect();
    }
    plan.config = (!config_paths.is_empty()).then_some(config_paths);
    let log = match verbose {
        0 => LogSetting::from_env(env, LevelFilter::Warn).map_err(UsageError)?,
        1 => LogSetting::level(LevelFilter::Info),
        2 => LogSetting::level(LevelFilter::Debug),
        _ => LogSetting::level(LevelFilter::Trace),
    };
    Ok(Command::Run(Box::new(plan), log))
}

/// Apply the `KEEL_*` variables to `plan`. Every front-end does this first: `docker run
/// --init` can pass only environment, whatever name keel runs under.
pub fn apply_env(plan: &mut Plan, env: Env) -> Result<(), UsageError> {
    let get = |name: &str| -> Option<String> {
        env(name)
            .map(|v| v.to_string_lossy().trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(v) = get("KEEL_PROCESS_GROUP")
        && boolean(&v, "KEEL_PROCESS_GROUP")?
    {
        plan.forward_to = ForwardTo::Group;
    }
    if let Some(v) = get("KEEL_REWRITE") {
        for item in list(&v) {
            rewrite(plan, item, "KEEL_REWRITE")?;
        }
    }
    if let Some(v) = get("KEEL_REMAP_EXIT") {
        for item in list(&v) {
            remap(plan, item, "KEEL_REMAP_EXIT")?;
        }
    }
    if let Some(v) = get("KEEL_GRACE") {
        plan.grace = dur(&v, "KEEL_GRACE")?;
    }
    if let Some(v) = get("KEEL_STOP_TIMEOUT") {
        plan.stop_timeout = stop_timeout(&v, "KEEL_STOP_TIMEOUT")?;
    }
    Ok(())
}

/// Items of a list variable: separated by commas and/or white space.
fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|s| !s.is_empty())
}

fn boolean(v: &str, what: &str) -> Result<bool, UsageError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(UsageError(format!(
            "{what}: '{v}' is not a boolean (use 1/0, true/false, yes/no, on/off)"
        ))),
    }
}

fn dur(v: &str, what: &str) -> Result<std::time::Duration, UsageError> {
    duration::parse(v).map_err(|e| UsageError(format!("{what}: {e}")))
}

fn stop_timeout(v: &str, what: &str) -> Result<Option<std::time::Duration>, UsageError> {
    if matches!(v, "none" | "off") {
        return Ok(None);
    }
    let d = dur(v, what)?;
    Ok(if d.is_zero() { None } else { Some(d) })
}

fn pair<'a>(v: &'a str, what: &str, shape: &str) -> Result<(&'a str, &'a str), UsageError> {
    v.split_once(':')
        .ok_or_else(|| UsageError(format!("{what}: '{v}' is not of the form {shape}")))
}

/// Parse `SRC:DST` (names or numbers; DST 0 drops) into a rewrite of `plan`.
pub fn rewrite(plan: &mut Plan, v: &str, what: &str) -> Result<(), UsageError> {
    let (src, dst) = pair(v, what, "SRC:DST (e.g. TERM:QUIT, USR1:0)")?;
    let src = signals::parse(src).map_err(|e| UsageError(format!("{what}: {e}")))?;
    if !signals::catchable(src) || src == libc::SIGCHLD {
        return Err(UsageError(format!(
            "{what}: SIG{} cannot be rewritten (keel never receives KILL/STOP, and CHLD is how it reaps)",
            signals::name(src)
        )));
    }
    let dst = if dst.trim() == "0" {
        0
    } else {
        signals::parse(dst).map_err(|e| UsageError(format!("{what}: {e}")))?
    };
    plan.rewrite.set(src, dst);
    Ok(())
}

fn remap(plan: &mut Plan, v: &str, what: &str) -> Result<(), UsageError> {
    let (from, to) = pair(v, what, "FROM:TO (exit codes 0..255, e.g. 143:0)")?;
    let code = |s: &str| -> Result<u8, UsageError> {
        s.trim()
            .parse::<u8>()
            .map_err(|_| UsageError(format!("{what}: '{s}' is not an exit code (0..255)")))
    };
    plan.remap_exit.set(code(from)?, code(to)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<(Plan, LogSetting), String> {
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        match parse(&args, &|k| env.get(k).cloned()) {
            Ok(Command::Run(p, l)) => Ok((*p, l)),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn argv(p: &Plan) -> Vec<String> {
        p.main
            .as_ref()
            .unwrap()
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn stops_at_first_non_option_and_after_dashdash() {
        let (p, _) = run(&["sh", "-c", "exit 3"], &[]).unwrap();
        assert_eq!(argv(&p), ["sh", "-c", "exit 3"]);
        let (p, _) = run(&["-g", "--", "-weird", "-g"], &[]).unwrap();
        assert_eq!(argv(&p), ["-weird", "-g"]);
        assert_eq!(p.forward_to, ForwardTo::Group);
        let (p, _) = run(&["--", "--"], &[]).unwrap();
        assert_eq!(argv(&p), ["--"]);
        assert_eq!(p.main_name(), "--");
    }

    #[test]
    fn defaults() {
        let (p, l) = run(&["true"], &[]).unwrap();
        assert_eq!(p.forward_to, ForwardTo::Child);
        assert_eq!(p.grace, Duration::from_secs(3));
        assert_eq!(p.stop_timeout, None);
        assert_eq!(l, LogSetting::level(LevelFilter::Warn));
        assert_eq!(p.main_name(), "true");
    }

    #[test]
    fn every_option() {
        let (p, l) = run(
            &[
                "-gvv",
                "-r",
                "TERM:QUIT",
                "-rUSR1:0",
                "--rewrite=SIGHUP:10",
                "-e",
                "143:0",
                "--remap-exit",
                "1:2",
                "--grace",
                "500ms",
                "--stop-timeout=1m",
                "--verbose",
                "--process-group",
                "x",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(p.forward_to, ForwardTo::Group);
        assert_eq!(l, LogSetting::level(LevelFilter::Trace));
        assert_eq!(p.rewrite.apply(15), 3);
        assert_eq!(p.rewrite.apply(10), 0);
        assert_eq!(p.rewrite.apply(1), 10);
        assert_eq!(p.remap_exit.apply(143), 0);
        assert_eq!(p.remap_exit.apply(1), 2);
        assert_eq!(p.grace, Duration::from_millis(500));
        assert_eq!(p.stop_timeout, Some(Duration::from_secs(60)));
    }

    #[test]
    fn environment_and_precedence() {
        let env = [
            ("KEEL_PROCESS_GROUP", "yes"),
            ("KEEL_REWRITE", "TERM:QUIT, USR2:0"),
            ("KEEL_REMAP_EXIT", "143:0 130:0"),
            ("KEEL_GRACE", "1s"),
            ("KEEL_STOP_TIMEOUT", "2s"),
            ("KEEL_LOG", "debug"),
        ];
        let (p, l) = run(&["x"], &env).unwrap();
        assert_eq!(p.forward_to, ForwardTo::Group);
        assert_eq!(p.rewrite.apply(15), 3);
        assert_eq!(p.rewrite.apply(12), 0);
        assert_eq!(p.remap_exit.apply(130), 0);
        assert_eq!(p.grace, Duration::from_secs(1));
        assert_eq!(p.stop_timeout, Some(Duration::from_secs(2)));
        assert_eq!(l, LogSetting::level(LevelFilter::Debug));
        let (_, l) = run(&["-v", "x"], &env).unwrap();
        assert_eq!(l, LogSetting::level(LevelFilter::Info));
        // Flags override scalars and add to lists.
        let (p, _) = run(
            &[
                "--grace",
                "0",
                "--stop-timeout",
                "none",
                "-r",
                "TERM:INT",
                "x",
            ],
            &env,
        )
        .unwrap();
        assert_eq!(p.grace, Duration::ZERO);
        assert_eq!(p.stop_timeout, None);
        assert_eq!(p.rewrite.apply(15), 2);
        assert_eq!(p.rewrite.apply(12), 0);
        // Empty variables are unset.
        let (p, _) = run(&["x"], &[("KEEL_GRACE", "")]).unwrap();
        assert_eq!(p.grace, Duration::from_secs(3));
    }

    #[test]
    fn errors_name_the_problem() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (&["-x", "true"], &[], "unknown option '-x'"),
            (&["--yolo", "true"], &[], "unknown option '--yolo'"),
            (&["-r"], &[], "-r needs a value"),
            (&["--grace"], &[], "--grace needs a value"),
            (
                &["--grace", "soon", "x"],
                &[],
                "--grace: 'soon' is not a duration",
            ),
            (&["-r", "TERM", "x"], &[], "is not of the form SRC:DST"),
            (&["-r", "FOO:TERM", "x"], &[], "'FOO' is not a signal"),
            (
                &["-r", "KILL:TERM", "x"],
                &[],
                "SIGKILL cannot be rewritten",
            ),
            (
                &["-r", "CHLD:TERM", "x"],
                &[],
                "SIGCHLD cannot be rewritten",
            ),
            (&["-e", "300:0", "x"], &[], "'300' is not an exit code"),
            (&["--verbose=2", "x"], &[], "--verbose takes no value"),
            (
                &["x"],
                &[("KEEL_PROCESS_GROUP", "maybe")],
                "KEEL_PROCESS_GROUP: 'maybe'",
            ),
            (&["x"], &[("KEEL_GRACE", "3 s")], "KEEL_GRACE:"),
            (&["x"], &[("KEEL_REWRITE", "TERM")], "KEEL_REWRITE:"),
            (
                &["x"],
                &[("KEEL_LOG", "loud")],
                "KEEL_LOG: 'loud' is not a log level",
            ),
            (&[""], &[], "empty string"),
        ];
        for (args, env, want) in cases {
            let err = run(args, env).expect_err(&format!("{args:?} {env:?}"));
            assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
            assert!(err.ends_with("(see 'keel --help')"), "{err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn no_command_and_no_configuration() {
        let dir = std::env::temp_dir().join(format!("keel-unit-{}-cfg", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let env = |_: &str| None;
        for args in [&[][..], &["--"][..]] {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            if std::path::Path::new(crate::config::DEFAULT_FILE).exists()
                || std::path::Path::new(crate::config::DEFAULT_DIR).exists()
            {
                eprintln!("SKIP: this machine has a default keel configuration");
                return;
            }
            match outcome(&args, &env) {
                Outcome::Print { text, stderr, code } => {
                    assert!(stderr && code == crate::EXIT_USAGE);
                    assert!(text.contains("no command given"), "{text}");
                }
                Outcome::Run(..) => panic!("ran without a command"),
            }
        }
        // An empty configuration directory is services mode with nothing configured.
        let args: Vec<OsString> = ["--config", dir.to_str().unwrap()]
            .iter()
            .map(OsString::from)
            .collect();
        match outcome(&args, &env) {
            Outcome::Run(plan, _) => {
                assert!(plan.is_services_mode() && plan.main.is_none());
            }
            Outcome::Print { text, .. } => panic!("{text}"),
        }
        // With a command, the command is the service called "main".
        std::fs::write(dir.join("a.toml"), "[service.web]\ncommand = \"true\"\n").unwrap();
        let args: Vec<OsString> = ["--config", dir.to_str().unwrap(), "--", "sh"]
            .iter()
            .map(OsString::from)
            .collect();
        match outcome(&args, &env) {
            Outcome::Run(plan, _) => {
                assert_eq!(plan.main.as_ref().unwrap().name, MAIN_NAME);
                assert_eq!(plan.services.len(), 1);
            }
            Outcome::Print { text, .. } => panic!("{text}"),
        }
        // A bad configuration: every error, exit 2.
        std::fs::write(dir.join("b.toml"), "[service.x]\nrestart = \"sometimes\"\n").unwrap();
        match outcome(&args, &env) {
            Outcome::Print { text, code, .. } => {
                assert_eq!(code, crate::EXIT_USAGE);
                assert!(text.contains("b.toml:2:"), "{text}");
            }
            Outcome::Run(..) => panic!("ran a bad configuration"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn help_and_version() {
        let args = |a: &[&str]| -> Vec<OsString> { a.iter().map(OsString::from).collect() };
        let none = |_: &str| None;
        assert_eq!(parse(&args(&["-h"]), &none), Ok(Command::Help));
        assert_eq!(parse(&args(&["--help", "x"]), &none), Ok(Command::Help));
        assert_eq!(parse(&args(&["-V"]), &none), Ok(Command::Version));
        assert_eq!(parse(&args(&["--version"]), &none), Ok(Command::Version));
        // After the command, flags belong to the command.
        assert!(matches!(
            parse(&args(&["ls", "-h"]), &none),
            Ok(Command::Run(..))
        ));
    }
}
