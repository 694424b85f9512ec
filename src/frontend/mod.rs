//! Front-ends: what keel is invoked as decides how its command line is read.
//!
//! Owns: dispatch on the basename of argv[0] (`tini`/`docker-init`, `dumb-init`,
//! `catatonit`/`podman-init`, anything else = keel), the shared GNU-getopt reader the peers'
//! command lines need, and [`Outcome`]: either a [`Plan`] to run or text to print.
//! Must not: run anything. Every front-end only produces a plan for the one engine, so users
//! migrate with a symlink and get the same loop whatever the name.

pub mod catatonit;
pub mod dumb_init;
pub mod keel;
pub mod tini;

use crate::plan::Plan;
use log::LevelFilter;
use std::ffi::OsString;

/// Environment lookup, passed in so front-ends are pure.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// What a front-end decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Run this plan with this log setting.
    Run(Box<Plan>, LogSetting),
    /// Print `text` (to stderr if `stderr`) and exit with `code`: help, version, usage errors.
    Print {
        /// What to print.
        text: String,
        /// Print to stderr instead of stdout.
        stderr: bool,
        /// Exit code.
        code: u8,
    },
}

impl Outcome {
    /// Print `text` on stdout, exit `code`.
    pub fn print_out(text: &str, code: u8) -> Outcome {
        Outcome::Print {
            text: text.to_string(),
            stderr: false,
            code,
        }
    }
    /// Print `text` on stderr, exit `code`.
    pub fn print_err(text: &str, code: u8) -> Outcome {
        Outcome::Print {
            text: text.to_string(),
            stderr: true,
            code,
        }
    }
}

/// How much keel says on stderr: `KEEL_LOG` (a level) or the front-end's own flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSetting {
    /// The level.
    pub level: LevelFilter,
}

impl LogSetting {
    /// Exactly `level`.
    pub fn level(level: LevelFilter) -> LogSetting {
        LogSetting { level }
    }
    /// `KEEL_LOG` if set, else `default`. An unknown level is an error naming the variable.
    pub fn from_env(env: Env, default: LevelFilter) -> Result<LogSetting, String> {
        match env("KEEL_LOG")
            .map(|v| v.to_string_lossy().trim().to_string())
            .filter(|v| !v.is_empty())
        {
            None => Ok(LogSetting::level(default)),
            Some(v) => crate::logger::parse_level(&v)
                .map(LogSetting::level)
                .map_err(|e| format!("KEEL_LOG: {e}")),
        }
    }
}

/// Which command line to speak, from the name keel was invoked as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    /// keel's own.
    Keel,
    /// tini 0.19 (also as `docker-init`, the name Docker mounts it under).
    Tini,
    /// dumb-init 1.2.5.
    DumbInit,
    /// catatonit (also as `podman-init`, the name podman mounts it under).
    Catatonit,
}

impl Personality {
    /// The personality for argv[0].
    pub fn from_argv0(argv0: &OsString) -> Personality {
        let s = argv0.to_string_lossy();
        match s.rsplit('/').next().unwrap_or(&s) {
            "tini" | "tini-static" | "docker-init" => Personality::Tini,
            "dumb-init" => Personality::DumbInit,
            "catatonit" | "podman-init" => Personality::Catatonit,
            _ => Personality::Keel,
        }
    }
}

/// Read a full command line (argv[0] included) with the personality argv[0] names.
pub fn outcome(args: &[OsString], env: Env) -> Outcome {
    let argv0 = args.first().cloned().unwrap_or_default();
    let rest = args.get(1..).unwrap_or_default();
    match Personality::from_argv0(&argv0) {
        Personality::Keel => keel::outcome(rest, env),
        Personality::Tini => tini::outcome(&argv0, rest, env),
        Personality::DumbInit => dumb_init::outcome(&argv0, rest, env),
        Personality::Catatonit => catatonit::outcome(&argv0, rest, env),
    }
}

/// One option a peer's getopt knows.
#[derive(Debug, Clone, Copy)]
pub struct OptSpec {
    /// Short letter.
    pub short: char,
    /// Long name, if any (`--name`).
    pub long: Option<&'static str>,
    /// Takes a value.
    pub value: bool,
}

/// What getopt found wrong, worded as glibc's getopt words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetoptError {
    /// `invalid option -- 'x'`
    Invalid(char),
    /// `unrecognized option '--x'`
    Unrecognized(String),
    /// `option requires an argument -- 'x'`
    MissingShort(char),
    /// `option '--x' requires an argument`
    MissingLong(String),
    /// `option '--x' doesn't allow an argument`
    ExtraLong(String),
}

impl GetoptError {
    /// The message as `prog: ...`.
    pub fn message(&self, prog: &str) -> String {
        match self {
            GetoptError::Invalid(c) => format!("{prog}: invalid option -- '{c}'"),
            GetoptError::Unrecognized(s) => format!("{prog}: unrecognized option '--{s}'"),
            GetoptError::MissingShort(c) => {
                format!("{prog}: option requires an argument -- '{c}'")
            }
            GetoptError::MissingLong(s) => format!("{prog}: option '--{s}' requires an argument"),
            GetoptError::ExtraLong(s) => {
                format!("{prog}: option '--{s}' doesn't allow an argument")
            }
        }
    }
}

/// One option found by [`getopt`]: its short letter and its value.
pub type ParsedOpt = (char, Option<String>);

/// GNU getopt: options (by short letter, with their values) in order, and the operands.
/// `permute`: options may follow operands (GNU default) until `--`; otherwise the first
/// operand ends the options (a leading `+` in the optstring, or POSIXLY_CORRECT).
pub fn getopt(
    args: &[OsString],
    specs: &[OptSpec],
    permute: bool,
) -> Result<(Vec<ParsedOpt>, Vec<OsString>), GetoptError> {
    let mut opts = Vec::new();
    let mut operands = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].to_string_lossy().into_owned();
        i += 1;
        if arg == "--" {
            operands.extend(args[i..].iter().cloned());
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            operands.push(args[i - 1].clone());
            if !permute {
                operands.extend(args[i..].iter().cloned());
                break;
            }
            continue;
        }
        let has_longs = specs.iter().any(|s| s.long.is_some());
        if let Some(long) = arg.strip_prefix("--")
            && has_longs
        {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            // glibc accepts unambiguous prefixes of long options.
            let matches: Vec<&OptSpec> = specs
                .iter()
                .filter(|s| s.long.is_some_and(|l| l.starts_with(name)))
                .collect();
            let spec = match matches.as_slice() {
                [one] => *one,
                _ => match specs.iter().find(|s| s.long == Some(name)) {
                    Some(exact) => exact,
                    None => return Err(GetoptError::Unrecognized(name.to_string())),
                },
            };
            let full = spec.long.unwrap_or(name).to_string();
            if spec.value {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        let v = args.get(i).ok_or(GetoptError::MissingLong(full))?;
                        i += 1;
                        v.to_string_lossy().into_owned()
                    }
                };
                opts.push((spec.short, Some(v)));
            } else {
                if inline.is_some() {
                    return Err(GetoptError::ExtraLong(full));
                }
                opts.push((spec.short, None));
            }
            continue;
        }
        // A cluster of short options: -abc, -pVALUE, -p VALUE. Without long options
        // "--version" is read as the letters '-', 'v', ... as glibc does.
        let chars: Vec<char> = arg[1..].chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            j += 1;
            let spec = specs
                .iter()
                .find(|s| s.short == c && c != '-')
                .ok_or(GetoptError::Invalid(c))?;
            if spec.value {
                let v = if j < chars.len() {
                    let v: String = chars[j..].iter().collect();
                    j = chars.len();
                    v
                } else {
                    let v = args.get(i).ok_or(GetoptError::MissingShort(c))?;
                    i += 1;
                    v.to_string_lossy().into_owned()
                };
                opts.push((c, Some(v)));
            } else {
                opts.push((c, None));
            }
        }
    }
    Ok((opts, operands))
}

impl OptSpec {
    /// An option `-short` (and `--long`), with or without a value.
    pub const fn new(short: char, long: Option<&'static str>, value: bool) -> OptSpec {
        OptSpec { short, long, value }
    }
}

/// Test support: run a personality's `outcome` with literal arguments and environment.
#[cfg(test)]
pub(crate) fn run_with(
    outcome: fn(&OsString, &[OsString], Env) -> Outcome,
    argv0: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Outcome {
    let env: std::collections::HashMap<String, OsString> = env
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    outcome(&OsString::from(argv0), &args, &|k| env.get(k).cloned())
}

/// The name keel was invoked as, for messages (`argv[0]` as given, like the peers print it).
pub fn prog_name(argv0: &OsString, fallback: &str) -> String {
    let s = argv0.to_string_lossy();
    if s.is_empty() {
        fallback.to_string()
    } else {
        s.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    const SPECS: &[OptSpec] = &[
        OptSpec {
            short: 'g',
            long: None,
            value: false,
        },
        OptSpec {
            short: 'p',
            long: None,
            value: true,
        },
    ];

    #[test]
    fn permutes_like_gnu() {
        let (o, rest) = getopt(&os(&["cmd", "-g", "x"]), SPECS, true).unwrap();
        assert_eq!(o, vec![('g', None)]);
        assert_eq!(rest, os(&["cmd", "x"]));
        let (o, rest) = getopt(&os(&["cmd", "-g"]), SPECS, false).unwrap();
        assert!(o.is_empty());
        assert_eq!(rest, os(&["cmd", "-g"]));
        let (o, rest) = getopt(&os(&["-gpTERM", "--", "-g"]), SPECS, true).unwrap();
        assert_eq!(o, vec![('g', None), ('p', Some("TERM".into()))]);
        assert_eq!(rest, os(&["-g"]));
    }

    #[test]
    fn errors_like_glibc() {
        assert_eq!(
            getopt(&os(&["sh", "-c", "x"]), SPECS, true),
            Err(GetoptError::Invalid('c'))
        );
        assert_eq!(
            getopt(&os(&["--version", "x"]), SPECS, true),
            Err(GetoptError::Invalid('-'))
        );
        assert_eq!(
            getopt(&os(&["-p"]), SPECS, true),
            Err(GetoptError::MissingShort('p'))
        );
        assert_eq!(
            GetoptError::Invalid('c').message("tini"),
            "tini: invalid option -- 'c'"
        );
    }

    #[test]
    fn long_options_and_prefixes() {
        let specs = &[
            OptSpec {
                short: 'c',
                long: Some("single-child"),
                value: false,
            },
            OptSpec {
                short: 'r',
                long: Some("rewrite"),
                value: true,
            },
        ];
        let (o, _) = getopt(
            &os(&["--single", "--rewrite=1:2", "--rewrite", "3:4", "x"]),
            specs,
            false,
        )
        .unwrap();
        assert_eq!(
            o,
            vec![
                ('c', None),
                ('r', Some("1:2".into())),
                ('r', Some("3:4".into()))
            ]
        );
        assert_eq!(
            getopt(&os(&["--yolo"]), specs, false),
            Err(GetoptError::Unrecognized("yolo".into()))
        );
        assert_eq!(
            getopt(&os(&["--rewrite"]), specs, false),
            Err(GetoptError::MissingLong("rewrite".into()))
        );
    }

    #[test]
    fn personality_from_name() {
        let p = |s: &str| Personality::from_argv0(&OsString::from(s));
        assert_eq!(p("/sbin/docker-init"), Personality::Tini);
        assert_eq!(p("tini"), Personality::Tini);
        assert_eq!(p("/usr/bin/dumb-init"), Personality::DumbInit);
        assert_eq!(p("/run/podman-init"), Personality::Catatonit);
        assert_eq!(p("catatonit"), Personality::Catatonit);
        assert_eq!(p("/sbin/keel"), Personality::Keel);
        assert_eq!(p("anything"), Personality::Keel);
    }
}
