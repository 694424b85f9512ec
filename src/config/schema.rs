//! The configuration files' schema, as serde reads one file: every key optional, every value
//! with its position, unknown keys refused. One file is one *layer*; layers are merged in
//! lexical order (a later layer's key overrides an earlier one's), then validated as a whole.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A value users may write as a string or a bare integer (`"3s"` or `3`, `"512M"` or 1024).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StrOrInt {
    /// `3`
    Int(i64),
    /// `"3s"`
    Str(String),
}

impl StrOrInt {
    /// As written, for messages and for parsers that take text.
    pub fn text(&self) -> String {
        match self {
            StrOrInt::Int(i) => i.to_string(),
            StrOrInt::Str(s) => s.clone(),
        }
    }
}

/// `command = ["prog", "arg"]` or `command = "shell words"` (run by `/bin/sh -c`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum CommandValue {
    /// An argv.
    Argv(Vec<String>),
    /// A shell command line.
    Shell(String),
}

/// `ready = ...`: how a service says it is ready.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReadyLayer {
    /// s6/dinit style: the service writes a newline to this fd.
    pub notify_fd: Option<i64>,
    /// Run this command until it exits 0.
    pub exec: Option<CommandValue>,
    /// Ready once this TCP address (`host:port`, or a port on 127.0.0.1) accepts.
    pub tcp: Option<StrOrInt>,
    /// Between checks (exec, tcp).
    pub interval: Option<StrOrInt>,
    /// One check's time limit (exec, tcp).
    pub timeout: Option<StrOrInt>,
    /// Failed checks before the start counts as failed (exec, tcp).
    pub retries: Option<i64>,
}

/// `io-max."8:0" = { rbps = "10M", wiops = 100 }`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct IoMaxLayer {
    /// Read bytes per second.
    pub rbps: Option<StrOrInt>,
    /// Write bytes per second.
    pub wbps: Option<StrOrInt>,
    /// Read operations per second.
    pub riops: Option<StrOrInt>,
    /// Write operations per second.
    pub wiops: Option<StrOrInt>,
}

/// A resource limit: one value for soft and hard, or `[soft, hard]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RlimitValue {
    /// Soft = hard.
    One(StrOrInt),
    /// `[soft, hard]`.
    Pair(Vec<StrOrInt>),
}

/// Everything a `[service.NAME]` table (or `[keel.defaults]`) may hold.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceLayer {
    /// The `command` key (meaning: README, "Multi-service configuration").
    pub command: Option<Spanned<CommandValue>>,
    /// The `type` key (meaning: README, "Multi-service configuration").
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// The `after` key (meaning: README, "Multi-service configuration").
    pub after: Option<Spanned<Vec<String>>>,
    /// The `requires` key (meaning: README, "Multi-service configuration").
    pub requires: Option<Spanned<Vec<String>>>,
    /// The `restart` key (meaning: README, "Multi-service configuration").
    pub restart: Option<Spanned<String>>,
    /// The `restart-sec` key (meaning: README, "Multi-service configuration").
    pub restart_sec: Option<Spanned<StrOrInt>>,
    /// The `restart-max-sec` key (meaning: README, "Multi-service configuration").
    pub restart_max_sec: Option<Spanned<StrOrInt>>,
    /// The `start-limit-burst` key (meaning: README, "Multi-service configuration").
    pub start_limit_burst: Option<Spanned<i64>>,
    /// The `start-limit-interval` key (meaning: README, "Multi-service configuration").
    pub start_limit_interval: Option<Spanned<StrOrInt>>,
    /// The `start-limit-action` key (meaning: README, "Multi-service configuration").
    pub start_limit_action: Option<Spanned<String>>,
    /// The `ready` key (meaning: README, "Multi-service configuration").
    pub ready: Option<Spanned<ReadyLayer>>,
    /// The `start-timeout` key (meaning: README, "Multi-service configuration").
    pub start_timeout: Option<Spanned<StrOrInt>>,
    /// The `critical` key (meaning: README, "Multi-service configuration").
    pub critical: Option<Spanned<bool>>,
    /// The `stop-signal` key (meaning: README, "Multi-service configuration").
    pub stop_signal: Option<Spanned<StrOrInt>>,
    /// The `stop-timeout` key (meaning: README, "Multi-service configuration").
    pub stop_timeout: Option<Spanned<StrOrInt>>,
    /// The `user` key (meaning: README, "Multi-service configuration").
    pub user: Option<Spanned<StrOrInt>>,
    /// The `group` key (meaning: README, "Multi-service configuration").
    pub group: Option<Spanned<StrOrInt>>,
    /// The `supplementary-groups` key (meaning: README, "Multi-service configuration").
    pub supplementary_groups: Option<Spanned<Vec<StrOrInt>>>,
    /// The `environment` key (meaning: README, "Multi-service configuration").
    pub environment: Option<BTreeMap<String, Spanned<String>>>,
    /// The `env-file` key (meaning: README, "Multi-service configuration").
    pub env_file: Option<Spanned<String>>,
    /// The `inherit-environment` key (meaning: README, "Multi-service configuration").
    pub inherit_environment: Option<Spanned<bool>>,
    /// The `working-directory` key (meaning: README, "Multi-service configuration").
    pub working_directory: Option<Spanned<String>>,
    /// The `umask` key (meaning: README, "Multi-service configuration").
    pub umask: Option<Spanned<StrOrInt>>,
    /// The `rlimits` key (meaning: README, "Multi-service configuration").
    pub rlimits: Option<BTreeMap<String, Spanned<RlimitValue>>>,
    /// The `output` key (meaning: README, "Multi-service configuration").
    pub output: Option<Spanned<String>>,
    /// The `memory-max` key (meaning: README, "Multi-service configuration").
    pub memory_max: Option<Spanned<StrOrInt>>,
    /// The `memory-high` key (meaning: README, "Multi-service configuration").
    pub memory_high: Option<Spanned<StrOrInt>>,
    /// The `memory-swap-max` key (meaning: README, "Multi-service configuration").
    pub memory_swap_max: Option<Spanned<StrOrInt>>,
    /// The `cpu-quota` key (meaning: README, "Multi-service configuration").
    pub cpu_quota: Option<Spanned<StrOrInt>>,
    /// The `cpu-quota-period` key (meaning: README, "Multi-service configuration").
    pub cpu_quota_period: Option<Spanned<StrOrInt>>,
    /// The `cpu-weight` key (meaning: README, "Multi-service configuration").
    pub cpu_weight: Option<Spanned<i64>>,
    /// The `tasks-max` key (meaning: README, "Multi-service configuration").
    pub tasks_max: Option<Spanned<StrOrInt>>,
    /// The `io-weight` key (meaning: README, "Multi-service configuration").
    pub io_weight: Option<Spanned<i64>>,
    /// The `io-max` key (meaning: README, "Multi-service configuration").
    pub io_max: Option<BTreeMap<String, Spanned<IoMaxLayer>>>,
}

/// The `[keel]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GlobalLayer {
    /// One deadline for the whole shutdown.
    pub shutdown_timeout: Option<Spanned<StrOrInt>>,
    /// After the services are stopped: time left to stragglers.
    pub grace: Option<Spanned<StrOrInt>>,
    /// `prefix` (`NAME | line`) or `plain` for every service's default output.
    pub log_format: Option<Spanned<String>>,
    /// Defaults for every service.
    pub defaults: Option<ServiceLayer>,
}

/// One configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct FileLayer {
    /// `[keel]`
    pub keel: Option<GlobalLayer>,
    /// `[service.NAME]`
    pub service: Option<BTreeMap<String, Spanned<ServiceLayer>>>,
}

/// Calls `$m!($($arg),*, <every single-valued ServiceLayer field>)`: the one list of keys that
/// merge by replacement and carry one position, shared by `overlay` and `shift`.
macro_rules! service_fields {
    ($m:ident, $($arg:expr),+) => {
        $m!(
            $($arg),+,
            command,
            kind,
            after,
            requires,
            restart,
            restart_sec,
            restart_max_sec,
            start_limit_burst,
            start_limit_interval,
            start_limit_action,
            ready,
            start_timeout,
            critical,
            stop_signal,
            stop_timeout,
            user,
            group,
            supplementary_groups,
            env_file,
            inherit_environment,
            working_directory,
            umask,
            output,
            memory_max,
            memory_high,
            memory_swap_max,
            cpu_quota,
            cpu_quota_period,
            cpu_weight,
            tasks_max,
            io_weight,
        )
    };
}

macro_rules! overlay {
    ($base:expr, $top:expr, $($field:ident),+ $(,)?) => {
        $( if $top.$field.is_some() { $base.$field = $top.$field.clone(); } )+
    };
}

impl ServiceLayer {
    /// Apply `top` over `self`: each key `top` sets replaces this one's; tables
    /// (`environment`, `rlimits`, `io-max`) merge key by key.
    pub fn overlay(&mut self, top: &ServiceLayer) {
        service_fields!(overlay, self, top);
        if let Some(env) = &top.environment {
            let base = self.environment.get_or_insert_with(BTreeMap::new);
            base.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(r) = &top.rlimits {
            let base = self.rlimits.get_or_insert_with(BTreeMap::new);
            base.extend(r.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(io) = &top.io_max {
            let base = self.io_max.get_or_insert_with(BTreeMap::new);
            base.extend(io.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
}

impl GlobalLayer {
    /// Apply `top` over `self`.
    pub fn overlay(&mut self, top: &GlobalLayer) {
        overlay!(self, top, shutdown_timeout, grace, log_format);
        if let Some(d) = &top.defaults {
            self.defaults
                .get_or_insert_with(ServiceLayer::default)
                .overlay(d);
        }
    }
}

fn shifted<T: Clone>(v: &Option<Spanned<T>>, base: usize) -> Option<Spanned<T>> {
    v.as_ref().map(|s| {
        let r = s.span();
        Spanned::new(r.start + base..r.end + base, s.get_ref().clone())
    })
}

fn shift_map<T: Clone>(m: &mut Option<BTreeMap<String, Spanned<T>>>, base: usize) {
    if let Some(m) = m {
        for v in m.values_mut() {
            let r = v.span();
            *v = Spanned::new(r.start + base..r.end + base, v.get_ref().clone());
        }
    }
}

macro_rules! shift_fields {
    ($layer:expr, $base:expr, $($field:ident),+ $(,)?) => {
        $( $layer.$field = shifted(&$layer.$field, $base); )+
    };
}

impl ServiceLayer {
    /// Move every position by `base`, so positions from several files share one space
    /// (each file's text is placed after the previous ones').
    pub fn shift(&mut self, base: usize) {
        service_fields!(shift_fields, self, base);
        shift_map(&mut self.environment, base);
        shift_map(&mut self.rlimits, base);
        shift_map(&mut self.io_max, base);
    }
}

impl FileLayer {
    /// Move every position by `base` (see [`ServiceLayer::shift`]).
    pub fn shift(&mut self, base: usize) {
        if let Some(k) = &mut self.keel {
            shift_fields!(k, base, shutdown_timeout, grace, log_format);
            if let Some(d) = &mut k.defaults {
                d.shift(base);
            }
        }
        if let Some(services) = &mut self.service {
            for s in services.values_mut() {
                let r = s.span();
                let mut inner = s.get_ref().clone();
                inner.shift(base);
                *s = Spanned::new(r.start + base..r.end + base, inner);
            }
        }
    }
}
