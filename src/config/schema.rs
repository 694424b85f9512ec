//! The configuration files' schema: one file's tree of values (`tree.rs`) mapped onto
//! *layers*, every key optional, every value with its position, unknown keys refused. One
//! file is one layer; layers are merged in lexical order (a later layer's key overrides an
//! earlier one's), then validated as a whole (`mod.rs`).
//! Must not: judge values beyond their TOML type (units, names, ranges are `mod.rs`'s).

use super::tree::{Spanned, Table, Value};
use std::ops::Range;

/// A value users may write as a string or a bare integer (`"3s"` or `3`, `"512M"` or 1024).
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandValue {
    /// An argv.
    Argv(Vec<String>),
    /// A shell command line.
    Shell(String),
}

/// A resource limit: one value for soft and hard, or `[soft, hard]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RlimitValue {
    /// Soft = hard.
    One(StrOrInt),
    /// `[soft, hard]`.
    Pair(Vec<StrOrInt>),
}

/// Names to values, in name order: what `BTreeMap<String, V>` gives, for the few entries a
/// configuration has, in a fraction of the code (each `BTreeMap` value type cost ~3 KB of
/// binary; a sorted `Vec` with a binary search costs a few hundred bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Names<V>(Vec<(String, V)>);

impl<V> Default for Names<V> {
    fn default() -> Self {
        Names(Vec::new())
    }
}

impl<V> Names<V> {
    /// No names.
    pub fn new() -> Self {
        Names::default()
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&V> {
        let i = self.find(name).ok()?;
        self.0.get(i).map(|(_, v)| v)
    }

    /// Whether `name` has a value.
    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Set `name` to `value`, replacing its value if it had one.
    pub fn insert(&mut self, name: String, value: V) {
        match self.find(&name) {
            Ok(i) => {
                if let Some(slot) = self.0.get_mut(i) {
                    slot.1 = value;
                }
            }
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    /// The value of `name`, made with `make` if it has none.
    pub fn get_or_insert_with(&mut self, name: &str, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(name) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (name.to_string(), make()));
                i
            }
        };
        // In bounds: `i` is where `name` was found or has just been inserted.
        &mut self.0[i].1
    }

    /// The names and values, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    /// The names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(n, _)| n)
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no names.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a, V> IntoIterator for &'a Names<V> {
    type Item = (&'a String, &'a V);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (String, V)>, fn(&(String, V)) -> (&String, &V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(n, v)| (n, v))
    }
}

/// Collects every problem of one file as (place, message).
#[derive(Debug, Default)]
pub struct Decoder {
    /// The problems, in the order found (the file's order).
    pub errors: Vec<(Range<usize>, String)>,
}

impl Decoder {
    fn wrong(&mut self, v: &Spanned<Value>, key: &str, expected: &str) {
        self.errors.push((
            v.span(),
            format!("{key}: expected {expected}, found {}", v.get_ref().kind()),
        ));
    }

    fn table<'v>(&mut self, v: &'v Spanned<Value>, key: &str) -> Option<&'v Table> {
        match v.get_ref() {
            Value::Table(t) => Some(t),
            _ => {
                self.wrong(v, key, "a table");
                None
            }
        }
    }

    fn unknown(&mut self, key: &Spanned<String>, known: &[&str]) {
        self.errors.push((
            key.span(),
            format!(
                "unknown key '{}' (check the spelling; keys are kebab-case, e.g. restart-sec); expected one of: {}",
                key.get_ref(),
                known.join(", ")
            ),
        ));
    }
}

/// A Rust value from a TOML value; a mismatch is recorded in the decoder (named by `key`,
/// placed at the value) and gives None.
pub trait FromValue: Sized {
    /// Decode `v`, written under `key`.
    fn from_value(v: &Spanned<Value>, key: &str, d: &mut Decoder) -> Option<Self>;
}

impl FromValue for String {
    fn from_value(v: &Spanned<Value>, key: &str, d: &mut Decoder) -> Option<Self> {
        match v.get_ref() {
            Value::String(s) => Some(s.clone()),
            _ => {
                d.wrong(v, key, "a string");
                None
            }
        }
    }
}

impl FromValue for i64 {
    fn from_value(v: &Spanned<Value>, key: &str, d: &mut Decoder) -> Option<Self> {
        match v.get_ref() {
            Value::Integer(i) => Some(*i),
            _ => {
                d.wrong(v, key, "an integer");
                None
            }
        }
    }
}

impl FromValue for bool {
    fn from_value(v: &Spanned<Value>, key: &str, d: &mut Decoder) -> Option<Self> {
        match v.get_ref() {
            Value::Boolean(b) => Some(*b),
            _ => {
                d.wrong(v, key, "true or false");
                None
            }
        }
    }
}

impl FromValue for StrOrInt {
    fn from_value(v: &Spanned<Value>, key: &str, d: &mut Decoder) -> Option<Self> {
        match v.get_ref() {
            Value::Integer(i) => Some(StrOrInt::Int(*i)),
            Value::String(s) => Some(StrOrInt::Str(s.clone())),
            _ => {
                d.wrong(v, key, "a string or an integer");
                None
            }
        }
    }
}

impl FromValue for CommandValue {
    fn from_value(v: &Spanned<Value>, key: &str, d: &mut Decoder) -> Option<Self> {
        match v.get_ref() {
            Value::String(s) => Some(CommandValue::Shell(s.clone())),
            Value::Array(_) => Vec::from_value(v, key, d).map(CommandValue::Argv),
            _ => {
                d.wrong(v, key, "an array of strings or a shell command string");
                None
            }
        }
    }
}

impl FromValue for RlimitValue {
    fn from_value(v: &Spanned<Value>, key: &str, d: &mut Decoder) -> Option<Self> {
        match v.get_ref() {
            Value::Array(_) => Vec::from_value(v, key, d).map(RlimitValue::Pair),
            _ => StrOrInt::from_value(v, key, d).map(RlimitValue::One),
        }
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(v: &Spanned<Value>, key: &str, d: &mut Decoder) -> Option<Self> {
        let Value::Array(items) = v.get_ref() else {
            d.wrong(v, key, "an array");
            return None;
        };
        let before = d.errors.len();
        let out: Vec<T> = items
            .iter()
            .filter_map(|i| T::from_value(i, key, d))
            .collect();
        (d.errors.len() == before).then_some(out)
    }
}

/// Decode `v` into `slot`: one call per key in a layer's decoding, the work in one copy per
/// value type (inlined into every key, it cost ~8 KB of binary).
#[inline(never)]
fn set<T: FromValue>(slot: &mut Option<T>, v: &Spanned<Value>, key: &str, d: &mut Decoder) {
    *slot = T::from_value(v, key, d);
}

impl<T: FromValue> FromValue for Spanned<T> {
    fn from_value(v: &Spanned<Value>, key: &str, d: &mut Decoder) -> Option<Self> {
        T::from_value(v, key, d).map(|t| Spanned::new(v.span(), t))
    }
}

/// A table of free-form names (services, environment variables, limits, devices).
impl<T: FromValue> FromValue for Names<T> {
    fn from_value(v: &Spanned<Value>, key: &str, d: &mut Decoder) -> Option<Self> {
        let t = d.table(v, key)?;
        let mut out = Names::new();
        for (k, v) in t.iter() {
            if let Some(x) = T::from_value(v, &format!("{key}.{}", k.get_ref()), d) {
                out.insert(k.get_ref().clone(), x);
            }
        }
        Some(out)
    }
}

/// Merging one layer's value over another's.
trait Merge {
    fn merge(&mut self, top: &Self);
}

/// A single value: the top layer's replaces.
impl<T: Clone> Merge for Option<Spanned<T>> {
    fn merge(&mut self, top: &Self) {
        if top.is_some() {
            self.clone_from(top);
        }
    }
}

/// A table of names: merged name by name.
impl<V: Clone> Merge for Option<Names<V>> {
    fn merge(&mut self, top: &Self) {
        if let Some(top) = top {
            let base = self.get_or_insert_with(Names::new);
            for (k, v) in top {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `[keel.defaults]`: merged key by key.
impl Merge for Option<ServiceLayer> {
    fn merge(&mut self, top: &Self) {
        if let Some(top) = top {
            self.get_or_insert_with(ServiceLayer::default).overlay(top);
        }
    }
}

/// Defines a layer struct from one list of `field: Type = "key"`: the struct (every field
/// optional), its keys, and its decoding (unknown keys refused). With `merge`, also
/// `overlay`, so a key added to the list is read, reported and merged alike.
macro_rules! layer {
    (merge $(#[$meta:meta])* pub struct $name:ident {
        $( $(#[$fmeta:meta])* $field:ident: $ty:ty = $key:literal, )+
    }) => {
        layer!($(#[$meta])* pub struct $name { $( $(#[$fmeta])* $field: $ty = $key, )+ });

        impl $name {
            /// Apply `top` over `self`: each key `top` sets replaces this one's; tables of
            /// names (`environment`, `rlimits`, `io-max`, `defaults`) merge key by key.
            pub fn overlay(&mut self, top: &$name) {
                $( Merge::merge(&mut self.$field, &top.$field); )+
            }
        }
    };
    ($(#[$meta:meta])* pub struct $name:ident {
        $( $(#[$fmeta:meta])* $field:ident: $ty:ty = $key:literal, )+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name {
            $(
                #[doc = concat!("The `", $key, "` key.")]
                $(#[$fmeta])*
                pub $field: Option<$ty>,
            )+
        }

        impl $name {
            /// Every key, as written in a file.
            pub const KEYS: &[&str] = &[$($key),+];
        }

        impl FromValue for $name {
            fn from_value(v: &Spanned<Value>, key: &str, d: &mut Decoder) -> Option<Self> {
                let t = d.table(v, key)?;
                let mut out = $name::default();
                for (k, v) in t.iter() {
                    match k.get_ref().as_str() {
                        $( $key => set(&mut out.$field, v, $key, d), )+
                        _ => d.unknown(k, $name::KEYS),
                    }
                }
                Some(out)
            }
        }
    };
}

layer! {
    /// `ready = ...`: how a service says it is ready.
    pub struct ReadyLayer {
        /// s6/dinit style: the service writes a newline to this fd.
        notify_fd: i64 = "notify-fd",
        /// Run this command until it exits 0.
        exec: CommandValue = "exec",
        /// Ready once this TCP address (`host:port`, or a port on 127.0.0.1) accepts.
        tcp: StrOrInt = "tcp",
        /// Between checks (exec, tcp).
        interval: StrOrInt = "interval",
        /// One check's time limit (exec, tcp).
        timeout: StrOrInt = "timeout",
        /// Failed checks before the start counts as failed (exec, tcp).
        retries: i64 = "retries",
    }
}

layer! {
    /// `io-max."8:0" = { rbps = "10M", wiops = 100 }`.
    pub struct IoMaxLayer {
        /// Read bytes per second.
        rbps: StrOrInt = "rbps",
        /// Write bytes per second.
        wbps: StrOrInt = "wbps",
        /// Read operations per second.
        riops: StrOrInt = "riops",
        /// Write operations per second.
        wiops: StrOrInt = "wiops",
    }
}

layer! {
    merge
    /// Everything a `[service.NAME]` table (or `[keel.defaults]`) may hold; the meaning of
    /// each key: README, "Multi-service configuration". The one list of service keys.
    pub struct ServiceLayer {
        command: Spanned<CommandValue> = "command",
        kind: Spanned<String> = "type",
        after: Spanned<Vec<String>> = "after",
        requires: Spanned<Vec<String>> = "requires",
        restart: Spanned<String> = "restart",
        restart_sec: Spanned<StrOrInt> = "restart-sec",
        restart_max_sec: Spanned<StrOrInt> = "restart-max-sec",
        start_limit_burst: Spanned<i64> = "start-limit-burst",
        start_limit_interval: Spanned<StrOrInt> = "start-limit-interval",
        start_limit_action: Spanned<String> = "start-limit-action",
        ready: Spanned<ReadyLayer> = "ready",
        start_timeout: Spanned<StrOrInt> = "start-timeout",
        critical: Spanned<bool> = "critical",
        stop_signal: Spanned<StrOrInt> = "stop-signal",
        stop_timeout: Spanned<StrOrInt> = "stop-timeout",
        user: Spanned<StrOrInt> = "user",
        group: Spanned<StrOrInt> = "group",
        supplementary_groups: Spanned<Vec<StrOrInt>> = "supplementary-groups",
        environment: Names<Spanned<String>> = "environment",
        env_file: Spanned<String> = "env-file",
        inherit_environment: Spanned<bool> = "inherit-environment",
        working_directory: Spanned<String> = "working-directory",
        umask: Spanned<StrOrInt> = "umask",
        rlimits: Names<Spanned<RlimitValue>> = "rlimits",
        output: Spanned<String> = "output",
        memory_max: Spanned<StrOrInt> = "memory-max",
        memory_high: Spanned<StrOrInt> = "memory-high",
        memory_swap_max: Spanned<StrOrInt> = "memory-swap-max",
        cpu_quota: Spanned<StrOrInt> = "cpu-quota",
        cpu_quota_period: Spanned<StrOrInt> = "cpu-quota-period",
        cpu_weight: Spanned<i64> = "cpu-weight",
        tasks_max: Spanned<StrOrInt> = "tasks-max",
        io_weight: Spanned<i64> = "io-weight",
        io_max: Names<Spanned<IoMaxLayer>> = "io-max",
    }
}

layer! {
    merge
    /// The `[keel]` table.
    pub struct GlobalLayer {
        /// One deadline for the whole shutdown.
        shutdown_timeout: Spanned<StrOrInt> = "shutdown-timeout",
        /// After the services are stopped: time left to stragglers.
        grace: Spanned<StrOrInt> = "grace",
        /// `prefix` (`NAME | line`) or `plain` for every service's default output.
        log_format: Spanned<String> = "log-format",
        /// `auto`, `required` or `off`: a cgroup per service.
        cgroups: Spanned<String> = "cgroups",
        /// Defaults for every service.
        defaults: ServiceLayer = "defaults",
    }
}

layer! {
    /// One configuration file.
    pub struct FileLayer {
        /// `[keel]`
        keel: GlobalLayer = "keel",
        /// `[service.NAME]`
        service: Names<Spanned<ServiceLayer>> = "service",
    }
}

impl FileLayer {
    /// Map a file's root table; Err holds every problem found (unknown keys, wrong types).
    pub fn decode(root: Table) -> Result<FileLayer, Vec<(Range<usize>, String)>> {
        let mut d = Decoder::default();
        let root = Spanned::new(0..0, Value::Table(root));
        let layer = FileLayer::from_value(&root, "file", &mut d);
        match layer {
            Some(l) if d.errors.is_empty() => Ok(l),
            _ => Err(d.errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tree::parse;

    fn decode(text: &str) -> Result<FileLayer, Vec<(Range<usize>, String)>> {
        FileLayer::decode(parse(text, 0).unwrap())
    }

    #[test]
    fn every_key_form_is_read_with_its_place() {
        let text = "[keel]\ngrace = 3\ndefaults.restart = \"always\"\n\
                    [service.web]\ncommand = [\"httpd\", \"-f\"]\nafter = [\"db\"]\n\
                    ready = { tcp = \"8080\", retries = 5 }\nrlimits = { nofile = [1, 2] }\n\
                    io-max.\"8:0\" = { rbps = \"1M\" }\nenvironment.A = \"1\"\ncritical = true\n\
                    [service.sh]\ncommand = \"echo hi\"\n";
        let f = decode(text).unwrap();
        let keel = f.keel.unwrap();
        assert_eq!(keel.grace.unwrap().get_ref(), &StrOrInt::Int(3));
        let defaults = keel.defaults.unwrap();
        assert_eq!(&text[defaults.restart.unwrap().span()], "\"always\"");
        let services = f.service.unwrap();
        let web = services.get("web").unwrap();
        assert_eq!(&text[web.span()], "[service.web]");
        let web = web.get_ref();
        let cmd = web.command.as_ref().unwrap();
        assert_eq!(
            cmd.get_ref(),
            &CommandValue::Argv(vec!["httpd".into(), "-f".into()])
        );
        assert_eq!(&text[cmd.span()], "[\"httpd\", \"-f\"]");
        let ready = web.ready.as_ref().unwrap().get_ref();
        assert_eq!(ready.tcp, Some(StrOrInt::Str("8080".into())));
        assert_eq!(ready.retries, Some(5));
        let nofile = web.rlimits.as_ref().unwrap().get("nofile").unwrap();
        assert_eq!(
            nofile.get_ref(),
            &RlimitValue::Pair(vec![StrOrInt::Int(1), StrOrInt::Int(2)])
        );
        let io = web.io_max.as_ref().unwrap().get("8:0").unwrap().get_ref();
        assert_eq!(io.rbps, Some(StrOrInt::Str("1M".into())));
        assert_eq!(
            web.environment
                .as_ref()
                .unwrap()
                .get("A")
                .unwrap()
                .get_ref(),
            "1"
        );
        assert_eq!(web.critical.as_ref().map(|c| *c.get_ref()), Some(true));
        let sh = services.get("sh").unwrap().get_ref();
        assert_eq!(
            sh.command.as_ref().unwrap().get_ref(),
            &CommandValue::Shell("echo hi".into())
        );
    }

    #[test]
    fn every_problem_in_a_file_is_reported_at_its_place() {
        let text = "[service.a]\ncomand = 1\nafter = [\"b\", 3]\nready = { tcp = 1.5, nope = 1 }\n\
                    environment = { A = 1 }\ncritical = \"yes\"\n[keel]\ngrace = true\n[services]\n";
        let errs = decode(text).unwrap_err();
        let got: Vec<(&str, &str)> = errs
            .iter()
            .map(|(span, m)| (&text[span.start..], m.as_str()))
            .collect();
        let want = [
            ("comand", "unknown key 'comand'"),
            ("3]", "after: expected a string, found an integer"),
            ("1.5", "tcp: expected a string or an integer, found a float"),
            ("nope", "unknown key 'nope'"),
            ("1 }", "environment.A: expected a string, found an integer"),
            (
                "\"yes\"",
                "critical: expected true or false, found a string",
            ),
            (
                "true",
                "grace: expected a string or an integer, found a boolean",
            ),
            ("services", "unknown key 'services'"),
        ];
        assert_eq!(got.len(), want.len(), "{errs:?}");
        for ((at, msg), (want_at, want_msg)) in got.iter().zip(want) {
            assert!(
                at.starts_with(want_at),
                "{msg}: at {at:?}, want {want_at:?}"
            );
            assert!(msg.starts_with(want_msg), "{msg:?}, want {want_msg:?}");
        }
        assert!(got[0].1.contains("expected one of: command, type, after"));
        assert!(got[7].1.contains("expected one of: keel, service"));
    }

    #[test]
    fn overlay_replaces_keys_and_merges_tables_of_names() {
        let f = |t: &str| {
            decode(t)
                .unwrap()
                .service
                .unwrap()
                .get("a")
                .unwrap()
                .get_ref()
                .clone()
        };
        let mut base = f(
            "[service.a]\nrestart = \"no\"\nuser = \"x\"\nenvironment = { A = \"1\", B = \"1\" }\n",
        );
        base.overlay(&f(
            "[service.a]\nrestart = \"always\"\nenvironment = { B = \"2\", C = \"2\" }\n",
        ));
        assert_eq!(base.restart.unwrap().get_ref(), "always");
        assert_eq!(base.user.unwrap().get_ref(), &StrOrInt::Str("x".into()));
        let env: Vec<(String, String)> = base
            .environment
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect();
        assert_eq!(
            env,
            [("A", "1"), ("B", "2"), ("C", "2")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }
}
