//! Configuration files: find them, read them, merge them, validate them into service specs.
//!
//! Owns: `/etc/keel/keel.toml` + `/etc/keel/keel.d/*.toml` (or `--config PATH`, repeatable,
//! a file or a directory), merged in order (a later file's key overrides an earlier one's, so
//! every image layer can add or adjust a service with one COPY), and every check that can be
//! made before anything starts. Every problem is reported, not just the first, each as
//! `file:line:column: what is wrong; the fix`.
//! Must not: start anything.

pub mod schema;
pub mod tree;
pub mod units;
pub mod users;

use crate::plan::{
    Credentials, Kind, LimitAction, Limits, Output, Readiness, RestartPolicy, ServiceSpec,
};
use crate::signals;
use schema::{CommandValue, FileLayer, GlobalLayer, Names, ServiceLayer, StrOrInt};
use std::ffi::OsString;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tree::Spanned;

/// The default configuration file.
pub const DEFAULT_FILE: &str = "/etc/keel/keel.toml";
/// The default drop-in directory.
pub const DEFAULT_DIR: &str = "/etc/keel/keel.d";

/// One problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `file:line:column`, when the problem has a place.
    pub at: Option<String>,
    /// What is wrong, and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Global settings from `[keel]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// The whole shutdown's deadline (below Docker's 10 s by default).
    pub shutdown_timeout: Duration,
    /// Time left to stragglers once the services are stopped.
    pub grace: Option<Duration>,
    /// Per-service cgroups: `auto` (default), `required` or `off`.
    pub cgroups: crate::cgroup::Mode,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The files read, in merge order.
    pub files: Vec<PathBuf>,
    /// Global settings.
    pub global: Global,
    /// The services, by name (sorted).
    pub services: Vec<ServiceSpec>,
}

/// The default whole-shutdown deadline: under Docker's 10 s, so keel finishes before Docker
/// resorts to SIGKILL.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(8);

/// The files `paths` name: a file as is, a directory's `*.toml` in lexical order. With no
/// paths: the defaults, if present. Returns None when there is no configuration at all.
pub fn discover(paths: &[PathBuf]) -> Result<Option<Vec<PathBuf>>, ConfigErrors> {
    let explicit = !paths.is_empty();
    let candidates: Vec<PathBuf> = if explicit {
        paths.to_vec()
    } else {
        vec![PathBuf::from(DEFAULT_FILE), PathBuf::from(DEFAULT_DIR)]
    };
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in candidates {
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => match std::fs::read_dir(&p) {
                Ok(rd) => {
                    // Sorted as found: a few files, and slice::sort would cost ~5 KB of binary.
                    let mut found: Vec<PathBuf> = Vec::new();
                    for f in rd.flatten().map(|e| e.path()) {
                        if f.extension().is_some_and(|e| e == "toml") {
                            found.insert(found.partition_point(|x| *x < f), f);
                        }
                    }
                    files.extend(found);
                }
                Err(e) => errors.push(ConfigError {
                    at: Some(p.display().to_string()),
                    message: format!("cannot read directory: {e}"),
                }),
            },
            Ok(_) => files.push(p),
            Err(_) if !explicit => {}
            Err(e) => errors.push(ConfigError {
                at: Some(p.display().to_string()),
                message: format!("cannot read: {e} (check the --config path)"),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(if files.is_empty() && !explicit {
        None
    } else {
        Some(files)
    })
}

/// The text of every file, laid end to end, so one byte offset names a file and a place.
struct Sources {
    files: Vec<(PathBuf, usize, String)>,
}

impl Sources {
    fn locate(&self, offset: usize) -> String {
        let Some((path, base, text)) = self.files.iter().rev().find(|(_, base, _)| *base <= offset)
        else {
            return "?".into();
        };
        let local = (offset - base).min(text.len());
        let before = &text[..local];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(local, |i| local - i - 1) + 1;
        format!("{}:{line}:{col}", path.display())
    }
}

/// Collects errors with their places.
struct Checker<'a> {
    sources: &'a Sources,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let at = Some(self.sources.locate(span.start));
        self.errors.push(ConfigError {
            at,
            message: message.into(),
        });
    }

    fn duration(&mut self, v: &Option<Spanned<StrOrInt>>, key: &str) -> Option<Duration> {
        let v = v.as_ref()?;
        match crate::duration::parse(&v.get_ref().text()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.at(v.span(), format!("{key}: {e}"));
                None
            }
        }
    }

    fn one_of<T: Copy>(
        &mut self,
        v: &Option<Spanned<String>>,
        key: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let v = v.as_ref()?;
        match choices.iter().find(|(n, _)| *n == v.get_ref().as_str()) {
            Some((_, t)) => Some(*t),
            None => {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                self.at(
                    v.span(),
                    format!(
                        "{key} = \"{}\" is not valid; use one of: {}",
                        v.get_ref(),
                        names.join(", ")
                    ),
                );
                None
            }
        }
    }

    fn parsed<T>(
        &mut self,
        v: &Option<Spanned<StrOrInt>>,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let v = v.as_ref()?;
        match parse(&v.get_ref().text()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.at(v.span(), format!("{key}: {e}"));
                None
            }
        }
    }
}

/// Read, merge and validate `files`.
pub fn load(files: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let mut sources = Sources { files: Vec::new() };
    let mut errors = Vec::new();
    let mut layers = Vec::new();
    let mut base = 0usize;
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ConfigError {
                    at: Some(f.display().to_string()),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        // This file's positions start at `base`, after the previous files' text, so one
        // offset names a file and a place.
        let layer = tree::parse(&text, base)
            .map_err(|e| vec![(e.span, e.message)])
            .and_then(FileLayer::decode);
        let len = text.len();
        sources.files.push((f.clone(), base, text));
        match layer {
            Ok(layer) => layers.push(layer),
            Err(problems) => {
                errors.extend(problems.into_iter().map(|(span, message)| ConfigError {
                    at: Some(sources.locate(span.start)),
                    message,
                }))
            }
        }
        // One byte of separation keeps every file's offsets distinct, even empty files'.
        base += len + 1;
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let mut global = GlobalLayer::default();
    let mut services: Names<ServiceLayer> = Names::new();
    let mut first_seen: Names<(String, usize)> = Names::new();
    let mut checker = Checker {
        sources: &sources,
        errors: Vec::new(),
    };
    for layer in &layers {
        if let Some(k) = &layer.keel {
            global.overlay(k);
        }
        for (name, svc) in layer.service.iter().flatten() {
            // Names that differ only in case would be one service to a human reader.
            let folded = name.to_ascii_lowercase();
            match first_seen.get(&folded) {
                Some((other, _)) if other != name => checker.at(
                    svc.span(),
                    format!(
                        "service '{name}' clashes with service '{other}' (names differ only in case); rename one"
                    ),
                ),
                _ => {
                    first_seen.insert(folded, (name.clone(), svc.span().start));
                }
            }
            services
                .get_or_insert_with(name, ServiceLayer::default)
                .overlay(svc.get_ref());
        }
    }
    let defaults = global.defaults.as_ref();
    let shutdown_timeout = checker
        .duration(&global.shutdown_timeout, "shutdown-timeout")
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    let grace = checker.duration(&global.grace, "grace");
    let prefix = checker
        .one_of(
            &global.log_format,
            "log-format",
            &[("prefix", true), ("plain", false)],
        )
        .unwrap_or(true);
    let cgroups = checker
        .one_of(
            &global.cgroups,
            "cgroups",
            &[
                ("auto", crate::cgroup::Mode::Auto),
                ("required", crate::cgroup::Mode::Required),
                ("off", crate::cgroup::Mode::Off),
            ],
        )
        .unwrap_or_default();
    let users = users::Db::load();
    let mut specs = Vec::new();
    for (name, layer) in &services {
        let span = first_seen
            .get(&name.to_ascii_lowercase())
            .map_or(0, |(_, s)| *s);
        if !valid_name(name) {
            checker.at(
                span..span,
                format!(
                    "service name '{name}' may only hold letters, digits, '-', '_' and '.'; rename it"
                ),
            );
        }
        // Built by overlaying rather than cloned: ServiceLayer's Clone alone is ~6 KB of binary.
        let mut merged = ServiceLayer::default();
        if let Some(d) = defaults {
            merged.overlay(d);
        }
        merged.overlay(layer);
        if let Some(spec) = service(&mut checker, name, &merged, span, prefix, &users) {
            specs.push(spec);
        }
    }
    check_dependencies(&mut checker, &services, &first_seen);
    if !checker.errors.is_empty() {
        return Err(ConfigErrors(checker.errors));
    }
    Ok(Config {
        files: files.to_vec(),
        global: Global {
            shutdown_timeout,
            grace,
            cgroups,
        },
        services: specs,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Validate one merged service.
fn service(
    c: &mut Checker,
    name: &str,
    l: &ServiceLayer,
    span: usize,
    prefix: bool,
    users: &users::Db,
) -> Option<ServiceSpec> {
    let errors_before = c.errors.len();
    let argv: Vec<OsString> = match &l.command {
        None => {
            c.at(
                span..span,
                format!("service '{name}' has no command; add command = [\"prog\", \"arg\"]"),
            );
            Vec::new()
        }
        Some(cmd) => match cmd.get_ref() {
            CommandValue::Argv(v) if v.is_empty() || v[0].is_empty() => {
                c.at(cmd.span(), "command is empty; name a program");
                Vec::new()
            }
            CommandValue::Argv(v) => v.iter().map(OsString::from).collect(),
            CommandValue::Shell(s) if s.trim().is_empty() => {
                c.at(cmd.span(), "command is empty; name a program");
                Vec::new()
            }
            CommandValue::Shell(s) => ["/bin/sh", "-c", s].iter().map(OsString::from).collect(),
        },
    };
    let mut spec = ServiceSpec::new(name.to_string(), argv);
    spec.isolation = crate::plan::Isolation::Session;
    if let Some(k) = c.one_of(
        &l.kind,
        "type",
        &[
            ("simple", Kind::Simple),
            ("oneshot", Kind::Oneshot),
            ("notify", Kind::Notify),
        ],
    ) {
        spec.kind = k;
    }
    spec.after = l
        .after
        .as_ref()
        .map(|a| a.get_ref().clone())
        .unwrap_or_default();
    spec.requires = l
        .requires
        .as_ref()
        .map(|a| a.get_ref().clone())
        .unwrap_or_default();
    if let Some(r) = c.one_of(
        &l.restart,
        "restart",
        &[
            ("no", RestartPolicy::No),
            ("on-failure", RestartPolicy::OnFailure),
            ("on-abnormal", RestartPolicy::OnAbnormal),
            ("always", RestartPolicy::Always),
        ],
    ) {
        spec.restart = r;
    }
    if let Some(d) = c.duration(&l.restart_sec, "restart-sec") {
        spec.restart_sec = d;
    }
    if let Some(d) = c.duration(&l.restart_max_sec, "restart-max-sec") {
        spec.restart_max_sec = d;
    }
    if spec.restart_max_sec < spec.restart_sec
        && let Some(v) = l.restart_max_sec.as_ref().or(l.restart_sec.as_ref())
    {
        c.at(
            v.span(),
            "restart-max-sec is below restart-sec; raise restart-max-sec (the backoff's cap)",
        );
    }
    if let Some(b) = &l.start_limit_burst {
        match u32::try_from(*b.get_ref()) {
            Ok(n) if n > 0 => spec.start_limit_burst = n,
            _ => c.at(
                b.span(),
                "start-limit-burst must be a positive number of starts",
            ),
        }
    }
    if let Some(d) = c.duration(&l.start_limit_interval, "start-limit-interval") {
        spec.start_limit_interval = d;
    }
    if let Some(a) = c.one_of(
        &l.start_limit_action,
        "start-limit-action",
        &[
            ("continue", LimitAction::Continue),
            ("give-up", LimitAction::GiveUp),
            ("shutdown", LimitAction::Shutdown),
        ],
    ) {
        spec.start_limit_action = a;
    }
    spec.ready = readiness(c, l, spec.kind);
    spec.start_timeout = c.duration(&l.start_timeout, "start-timeout");
    spec.critical = l.critical.as_ref().is_some_and(|b| *b.get_ref());
    if let Some(s) = c.parsed(&l.stop_signal, "stop-signal", signals::parse) {
        spec.stop_signal = s;
    }
    if let Some(d) = c.duration(&l.stop_timeout, "stop-timeout") {
        spec.stop_timeout = d;
    }
    spec.credentials = credentials(c, l, users);
    if let Some(env) = &l.environment {
        for (k, v) in env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.get_ref().contains('\0') {
                c.at(
                    v.span(),
                    format!("environment: '{k}' is not a valid variable name"),
                );
            } else {
                spec.environment
                    .push((OsString::from(k), OsString::from(v.get_ref())));
            }
        }
    }
    if let Some(f) = &l.env_file {
        match users::read_env_file(Path::new(f.get_ref())) {
            Ok(vars) => spec.env_file = vars,
            Err(e) => c.at(f.span(), format!("env-file: {e}")),
        }
    }
    if let Some(b) = &l.inherit_environment {
        spec.inherit_environment = *b.get_ref();
    }
    if let Some(w) = &l.working_directory {
        let p = PathBuf::from(w.get_ref());
        if !p.is_absolute() {
            c.at(w.span(), "working-directory must be an absolute path");
        }
        spec.working_directory = Some(p);
    }
    spec.umask = c.parsed(&l.umask, "umask", units::umask);
    if let Some(r) = &l.rlimits {
        for (k, v) in r {
            match units::rlimit(k, v.get_ref()) {
                Ok(lim) => spec.rlimits.push(lim),
                Err(e) => c.at(v.span(), format!("rlimits.{k}: {e}")),
            }
        }
    }
    spec.output = match &l.output {
        None if prefix => Output::Prefix,
        None => Output::Inherit,
        Some(o) => match o.get_ref().as_str() {
            "prefix" => Output::Prefix,
            "inherit" => Output::Inherit,
            p if p.starts_with('/') => Output::File(PathBuf::from(p)),
            p => {
                c.at(
                    o.span(),
                    format!(
                        "output = \"{p}\": use \"prefix\", \"inherit\" or an absolute file path"
                    ),
                );
                Output::Prefix
            }
        },
    };
    spec.limits = limits(c, l);
    if c.errors.len() > errors_before {
        return None;
    }
    Some(spec)
}

fn readiness(c: &mut Checker, l: &ServiceLayer, kind: Kind) -> Readiness {
    let Some(r) = &l.ready else {
        return if kind == Kind::Notify {
            Readiness::SdNotify
        } else {
            Readiness::Started
        };
    };
    let span = r.span();
    let r = r.get_ref();
    let chosen = [r.notify_fd.is_some(), r.exec.is_some(), r.tcp.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if chosen != 1 || kind == Kind::Notify {
        c.at(
            span.clone(),
            "ready: give exactly one of notify-fd, exec or tcp (type = \"notify\" uses sd_notify and takes no ready)",
        );
        return Readiness::Started;
    }
    let dur = |c: &mut Checker, v: &Option<StrOrInt>, key: &str, default: Duration| match v {
        None => default,
        Some(v) => crate::duration::parse(&v.text()).unwrap_or_else(|e| {
            c.at(span.clone(), format!("ready.{key}: {e}"));
            default
        }),
    };
    let interval = dur(c, &r.interval, "interval", Duration::from_millis(500));
    let timeout = dur(c, &r.timeout, "timeout", Duration::from_secs(1));
    let retries = match r.retries {
        None => 60,
        Some(n) if n > 0 && n <= u32::MAX as i64 => n as u32,
        Some(_) => {
            c.at(span.clone(), "ready.retries must be a positive number");
            60
        }
    };
    if let Some(fd) = r.notify_fd {
        if !(3..=1023).contains(&fd) {
            c.at(
                span,
                "ready.notify-fd must be between 3 and 1023 (0-2 are stdio)",
            );
            return Readiness::Started;
        }
        return Readiness::NotifyFd(fd as i32);
    }
    if let Some(cmd) = &r.exec {
        let argv: Vec<OsString> = match cmd {
            CommandValue::Argv(v) if !v.is_empty() => v.iter().map(OsString::from).collect(),
            CommandValue::Shell(s) if !s.trim().is_empty() => {
                ["/bin/sh", "-c", s].iter().map(OsString::from).collect()
            }
            _ => {
                c.at(span, "ready.exec is empty; name a check command");
                return Readiness::Started;
            }
        };
        return Readiness::Exec {
            argv,
            interval,
            timeout,
            retries,
        };
    }
    if let Some(t) = &r.tcp {
        match units::tcp_addr(&t.text()) {
            Ok(addr) => {
                return Readiness::Tcp {
                    addr,
                    interval,
                    timeout,
                    retries,
                };
            }
            Err(e) => c.at(span, format!("ready.tcp: {e}")),
        }
    }
    Readiness::Started
}

fn credentials(c: &mut Checker, l: &ServiceLayer, users: &users::Db) -> Option<Credentials> {
    if l.user.is_none() && l.group.is_none() && l.supplementary_groups.is_none() {
        return None;
    }
    let mut creds = Credentials {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        user: None,
        home: None,
    };
    if let Some(u) = &l.user {
        match users.user(&u.get_ref().text()) {
            Ok(entry) => {
                creds.uid = entry.uid;
                creds.gid = entry.gid;
                creds.groups = users.groups_of(&entry.name, entry.gid);
                creds.home = Some(PathBuf::from(&entry.home));
                creds.user = Some(entry.name);
            }
            Err(e) => c.at(u.span(), format!("user: {e}")),
        }
    }
    if let Some(g) = &l.group {
        match users.group(&g.get_ref().text()) {
            Ok(gid) => creds.gid = gid,
            Err(e) => c.at(g.span(), format!("group: {e}")),
        }
    }
    if let Some(gs) = &l.supplementary_groups {
        for g in gs.get_ref() {
            match users.group(&g.text()) {
                Ok(gid) => {
                    if !creds.groups.contains(&gid) {
                        creds.groups.push(gid);
                    }
                }
                Err(e) => c.at(gs.span(), format!("supplementary-groups: {e}")),
            }
        }
    }
    Some(creds)
}

fn limits(c: &mut Checker, l: &ServiceLayer) -> Limits {
    let mut lim = Limits {
        memory_max: c.parsed(&l.memory_max, "memory-max", units::size),
        memory_high: c.parsed(&l.memory_high, "memory-high", units::size),
        memory_swap_max: c.parsed(&l.memory_swap_max, "memory-swap-max", units::size),
        cpu_quota: c.parsed(&l.cpu_quota, "cpu-quota", units::percent),
        cpu_quota_period: c.duration(&l.cpu_quota_period, "cpu-quota-period"),
        cpu_weight: None,
        tasks_max: c.parsed(&l.tasks_max, "tasks-max", units::count_or_max),
        io_weight: None,
        io_max: Vec::new(),
    };
    if let Some(p) = &l.cpu_quota_period
        && let Some(d) = lim.cpu_quota_period
        && !(Duration::from_millis(1)..=Duration::from_secs(1)).contains(&d)
    {
        c.at(
            p.span(),
            "cpu-quota-period must be between 1ms and 1s (the kernel's CFS limits)",
        );
    }
    for (key, v, slot) in [
        ("cpu-weight", &l.cpu_weight, &mut lim.cpu_weight),
        ("io-weight", &l.io_weight, &mut lim.io_weight),
    ] {
        if let Some(w) = v {
            match u32::try_from(*w.get_ref()) {
                Ok(n) if (1..=10000).contains(&n) => *slot = Some(n),
                _ => c.at(
                    w.span(),
                    format!("{key} must be between 1 and 10000 (default 100)"),
                ),
            }
        }
    }
    if let Some(io) = &l.io_max {
        for (dev, v) in io {
            match units::io_max(dev, v.get_ref()) {
                Ok(m) => lim.io_max.push(m),
                Err(e) => c.at(v.span(), format!("io-max.\"{dev}\": {e}")),
            }
        }
    }
    lim
}

/// Unknown and cyclic dependencies, named at the place they are written.
fn check_dependencies(
    c: &mut Checker,
    services: &Names<ServiceLayer>,
    _first: &Names<(String, usize)>,
) {
    for (name, l) in services {
        for (key, list) in [("after", &l.after), ("requires", &l.requires)] {
            let Some(list) = list else { continue };
            for dep in list.get_ref() {
                if dep == name {
                    c.at(
                        list.span(),
                        format!("service '{name}' lists itself in {key}; remove it"),
                    );
                } else if !services.contains_key(dep) {
                    let known: Vec<&str> = services.keys().map(String::as_str).collect();
                    c.at(
                        list.span(),
                        format!(
                            "{key}: unknown service '{dep}' (known: {}); fix the name or add [service.{dep}]",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
    }
    let deps = |n: &str| -> Vec<String> {
        services.get(n).map_or(Vec::new(), |l| {
            let mut v: Vec<String> = l.after.iter().flat_map(|a| a.get_ref().clone()).collect();
            v.extend(l.requires.iter().flat_map(|a| a.get_ref().clone()));
            v.retain(|d| d != n && services.contains_key(d));
            v
        })
    };
    if let Some(cycle) = find_cycle(services.keys().cloned().collect(), deps) {
        let first = &cycle[0];
        let span = services
            .get(first)
            .and_then(|l| l.after.as_ref().or(l.requires.as_ref()))
            .map_or(0..0, |s| s.span());
        c.at(
            span,
            format!(
                "dependency cycle: {}; remove one of these after/requires entries",
                cycle.join(" -> ")
            ),
        );
    }
}

/// A cycle in the graph, as a path that returns to its start, or None.
pub fn find_cycle(nodes: Vec<String>, deps: impl Fn(&str) -> Vec<String>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark: Names<Mark> = Names::new();
    for n in &nodes {
        mark.insert(n.clone(), Mark::New);
    }
    for start in &nodes {
        if mark.get(start) != Some(&Mark::New) {
            continue;
        }
        // Iterative DFS: (node, its deps, next index).
        let mut stack: Vec<(String, Vec<String>, usize)> = vec![(start.clone(), deps(start), 0)];
        mark.insert(start.clone(), Mark::Active);
        while let Some((node, ds, i)) = stack.last_mut() {
            if *i < ds.len() {
                let d = ds[*i].clone();
                *i += 1;
                match mark.get(&d).copied() {
                    Some(Mark::Active) => {
                        let mut path: Vec<String> =
                            stack.iter().map(|(n, _, _)| n.clone()).collect();
                        let from = path.iter().position(|n| *n == d).unwrap_or(0);
                        path.drain(..from);
                        path.push(d);
                        return Some(path);
                    }
                    Some(Mark::New) => {
                        mark.insert(d.clone(), Mark::Active);
                        let dd = deps(&d);
                        stack.push((d, dd, 0));
                    }
                    _ => {}
                }
            } else {
                mark.insert(node.clone(), Mark::Done);
                stack.pop();
            }
        }
    }
    None
}

/// Start order: services grouped in waves; every service's dependencies are in earlier waves.
pub fn start_waves(services: &[ServiceSpec]) -> Vec<Vec<String>> {
    let mut placed: Names<usize> = Names::new();
    let mut waves: Vec<Vec<String>> = Vec::new();
    let mut left: Vec<&ServiceSpec> = services.iter().collect();
    while !left.is_empty() {
        let (ready, rest): (Vec<&ServiceSpec>, Vec<&ServiceSpec>) =
            left.into_iter().partition(|s| {
                s.after
                    .iter()
                    .chain(&s.requires)
                    .all(|d| placed.contains_key(d) || !services.iter().any(|x| &x.name == d))
            });
        if ready.is_empty() {
            // Only on a cycle, which validation refuses; do not loop forever.
            waves.push(rest.iter().map(|s| s.name.clone()).collect());
            break;
        }
        let n = waves.len();
        waves.push(ready.iter().map(|s| s.name.clone()).collect());
        for s in ready {
            placed.insert(s.name.clone(), n);
        }
        left = rest;
    }
    waves
}

#[cfg(test)]
mod tests;
