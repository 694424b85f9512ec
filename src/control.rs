//! The control socket: keel's side of `keel ctl` (the protocol is in `docs/CONTROL.md`).
//!
//! Owns: the listening Unix socket, accepting and authorising peers (`SO_PEERCRED`, and
//! `SO_PEERGROUPS` for an allowed group), each connection's bounded input and output buffers,
//! framing (one JSON object per line), the small strict JSON parser and writer, and decoding
//! requests / encoding responses. The client side of the same protocol is in `ctl.rs`.
//! Must not: block, allocate without a bound, or act on a request. It hands complete,
//! authorised [`Request`]s to the runtime and writes back the [`Response`] it is given; what a
//! request *does* is the supervisor's business.
//!
//! Bounds, all per [`Limits`]: a request line is at most 64 KiB (a longer one gets an error and
//! the connection is closed), a connection's unsent output at most 1 MiB for streamed log lines
//! (a follower that falls further behind is dropped), at most 1024 connections (the next one is
//! accepted, told "too many connections" and closed), and a connection must send a complete
//! request within 30 s of becoming idle (slowloris-style trickling does not extend it). Output
//! that makes no progress for 30 s drops the connection too. One request per connection is in
//! flight at a time: keel stops reading a connection until the runtime replies, so a client
//! cannot make keel buffer more than one request's worth of its input.

use crate::sys::{self, Epoll, SysError, check, errno};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// epoll token kind of the listening socket: `6 << 32`.
pub const KIND_LISTEN: u64 = 6;
/// epoll token kind of a connection: `7 << 32 | conn id`.
pub const KIND_CONN: u64 = 7;
/// The protocol version this keel speaks (`"v"` in every message).
pub const VERSION: i64 = 1;
/// The socket's file name inside keel's runtime directory.
pub const SOCKET_NAME: &str = "control.sock";
/// Nesting limit of the JSON parser: requests are two levels deep; this leaves room and stops
/// `[[[[...` from costing stack.
pub const MAX_DEPTH: usize = 16;

/// keel's runtime directory: `$KEEL_RUNTIME_DIR`, default `/run/keel` (an empty value is unset).
/// The runtime and `keel ctl` both use this rule, so they meet at the same socket.
pub fn runtime_dir(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    env("KEEL_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/run/keel"), PathBuf::from)
}

/// The default control socket path: `<runtime dir>/control.sock`.
pub fn default_socket(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    runtime_dir(env).join(SOCKET_NAME)
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

/// A JSON value, as much of JSON as the protocol needs: numbers are integers (`i64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// An integer; fractions and exponents are refused.
    Num(i64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in input order, no duplicates.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parse exactly one JSON value (surrounding whitespace allowed). Strict: no trailing
    /// commas, no comments, no duplicate keys, valid UTF-8, no lone surrogates.
    pub fn parse(input: &[u8]) -> Result<Json, String> {
        let mut p = Parser { s: input, i: 0 };
        p.ws();
        let v = p.value(0)?;
        p.ws();
        if p.i != input.len() {
            return Err(p.err("unexpected data after the value"));
        }
        Ok(v)
    }

    /// The value of `key` in an object (`None` for other values or a missing key).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Append this value's JSON text to `out`.
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => out.push_str(&n.to_string()),
            Json::Str(s) => write_str(out, s),
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, k);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// Append `s` as a JSON string literal: quotes, backslashes and control characters escaped,
/// everything else as UTF-8 (so the output never contains a raw newline: one message, one line).
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let n = c as usize;
                out.push_str("\\u00");
                out.push(HEX[n >> 4 & 0xf] as char);
                out.push(HEX[n & 0xf] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        format!("invalid JSON at byte {}: {what}", self.i)
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }
    fn lit(&mut self, word: &[u8], v: Json) -> Result<Json, String> {
        if self.s.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("unknown literal"))
        }
    }
    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth >= MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.peek() {
            None => Err(self.err("unexpected end")),
            Some(b'n') => self.lit(b"null", Json::Null),
            Some(b't') => self.lit(b"true", Json::Bool(true)),
            Some(b'f') => self.lit(b"false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut fields: Vec<(String, Json)> = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.err("expected a string key"));
                    }
                    let key = self.string()?;
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(self.err(&format!("duplicate key \"{key}\"")));
                    }
                    self.ws();
                    if self.peek() != Some(b':') {
                        return Err(self.err("expected ':'"));
                    }
                    self.i += 1;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    fields.push((key, v));
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return Err(self.err("expected ',' or '}'")),
                    }
                }
            }
            Some(_) => Err(self.err("unexpected character")),
        }
    }
    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let n = self.i - digits;
        if n == 0 || (n > 1 && self.s.get(digits) == Some(&b'0')) {
            return Err(self.err("malformed number"));
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return Err(self.err("only integers are accepted"));
        }
        std::str::from_utf8(self.s.get(start..self.i).unwrap_or_default())
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .map(Json::Num)
            .ok_or_else(|| self.err("number out of range"))
    }
    fn hex4(&mut self) -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.err("bad \\u escape")),
            };
            v = v << 4 | u32::from(d);
            self.i += 1;
        }
        Ok(v)
    }
    fn string(&mut self) -> Result<String, String> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            // Copy the run of plain bytes at once, checking it is UTF-8.
            let run = self.i;
            while matches!(self.peek(), Some(c) if c != b'"' && c != b'\\' && c >= 0x20) {
                self.i += 1;
            }
            let chunk = self.s.get(run..self.i).unwrap_or_default();
            match std::str::from_utf8(chunk) {
                Ok(t) => out.push_str(t),
                Err(_) => return Err(self.err("invalid UTF-8 in a string")),
            }
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self.peek();
                    self.i += 1;
                    match c {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => {
                            let hi = self.hex4()?;
                            let cp = if (0xd800..0xdc00).contains(&hi) {
                                if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(self.err("lone high surrogate"));
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return Err(self.err("bad low surrogate"));
                                }
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else if (0xdc00..0xe000).contains(&hi) {
                                return Err(self.err("lone low surrogate"));
                            } else {
                                hi
                            };
                            match char::from_u32(cp) {
                                Some(ch) => out.push(ch),
                                None => return Err(self.err("bad \\u escape")),
                            }
                        }
                        _ => return Err(self.err("unknown escape")),
                    }
                }
                Some(_) => return Err(self.err("control character in a string")),
                None => return Err(self.err("unterminated string")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and responses
// ---------------------------------------------------------------------------------------------

/// A request from `keel ctl` (or any client speaking the protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Every service's state.
    Status,
    /// Start these services (at least one).
    Start(Vec<String>),
    /// Stop these services (at least one).
    Stop(Vec<String>),
    /// Restart these services (at least one).
    Restart(Vec<String>),
    /// Send signal `sig` (1..=64) to service `name`.
    Signal {
        /// The service.
        name: String,
        /// The signal number.
        sig: i32,
    },
    /// The last `n` lines of service `name`'s output; with `follow`, then every new line.
    Logs {
        /// The service.
        name: String,
        /// How many recent lines (the per-service ring bounds what exists).
        n: usize,
        /// Keep the connection open and stream new lines.
        follow: bool,
    },
    /// Read the configuration again and apply the differences.
    Reload,
    /// Stop everything and exit, as on SIGTERM.
    Shutdown,
    /// Reply once these services (empty: every service that should be ready) are ready, or
    /// after `timeout_ms` with the ones that are not.
    WaitReady {
        /// The services; empty means all that should be ready.
        names: Vec<String>,
        /// How long to wait; `None`: as long as keel allows.
        timeout_ms: Option<u64>,
    },
    /// Is every service that should be ready ready?
    Health,
}

/// `n` when a logs request does not say.
pub const DEFAULT_LOG_LINES: usize = 100;

fn obj(fields: Vec<(&str, Json)>) -> Json {
    Json::Obj(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn strs(names: &[String]) -> Json {
    Json::Arr(names.iter().cloned().map(Json::Str).collect())
}

fn num_u64(n: u64) -> Json {
    Json::Num(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Reads the fields of one message, refusing unknown ones (so a typo is an error, not a
/// silently ignored option).
struct Fields<'a> {
    all: &'a [(String, Json)],
    used: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    fn new(v: &'a Json) -> Result<Fields<'a>, String> {
        match v {
            Json::Obj(all) => Ok(Fields {
                all,
                used: Vec::new(),
            }),
            _ => Err("a message must be a JSON object".into()),
        }
    }
    fn opt(&mut self, key: &'a str) -> Option<&'a Json> {
        self.used.push(key);
        self.all
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .filter(|v| **v != Json::Null)
    }
    fn str(&mut self, key: &'a str) -> Result<String, String> {
        match self.opt(key) {
            Some(Json::Str(s)) => Ok(s.clone()),
            Some(_) => Err(format!("\"{key}\" must be a string")),
            None => Err(format!("\"{key}\" is missing")),
        }
    }
    fn opt_str(&mut self, key: &'a str) -> Result<Option<String>, String> {
        match self.opt(key) {
            None => Ok(None),
            Some(Json::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("\"{key}\" must be a string")),
        }
    }
    fn opt_u64(&mut self, key: &'a str) -> Result<Option<u64>, String> {
        match self.opt(key) {
            None => Ok(None),
            Some(Json::Num(n)) => u64::try_from(*n)
                .map(Some)
                .map_err(|_| format!("\"{key}\" must not be negative")),
            Some(_) => Err(format!("\"{key}\" must be an integer")),
        }
    }
    fn bool(&mut self, key: &'a str) -> Result<bool, String> {
        match self.opt(key) {
            None => Ok(false),
            Some(Json::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("\"{key}\" must be true or false")),
        }
    }
    fn names(&mut self, key: &'a str) -> Result<Vec<String>, String> {
        match self.opt(key) {
            None => Ok(Vec::new()),
            Some(Json::Arr(items)) => items
                .iter()
                .map(|v| match v {
                    Json::Str(s) if !s.is_empty() => Ok(s.clone()),
                    _ => Err(format!("\"{key}\" must be a list of service names")),
                })
                .collect(),
            Some(_) => Err(format!("\"{key}\" must be a list of service names")),
        }
    }
    fn version(&mut self) -> Result<(), String> {
        match self.opt("v") {
            Some(Json::Num(VERSION)) => Ok(()),
            Some(Json::Num(n)) => Err(format!(
                "unsupported protocol version {n} (this keel speaks {VERSION})"
            )),
            _ => Err("\"v\" (the protocol version, 1) is missing".into()),
        }
    }
    fn finish(self) -> Result<(), String> {
        match self
            .all
            .iter()
            .find(|(k, _)| !self.used.contains(&k.as_str()))
        {
            Some((k, _)) => Err(format!("unknown field \"{k}\"")),
            None => Ok(()),
        }
    }
}

impl Request {
    /// Decode one request line (without its newline).
    pub fn decode(line: &[u8]) -> Result<Request, String> {
        let v = Json::parse(line)?;
        let mut f = Fields::new(&v)?;
        f.version()?;
        let cmd = f.str("cmd")?;
        let some_names = |f: &mut Fields, cmd: &str| -> Result<Vec<String>, String> {
            let names = f.names("names")?;
            if names.is_empty() {
                return Err(format!(
                    "{cmd} needs at least one service name in \"names\""
                ));
            }
            Ok(names)
        };
        let name = |f: &mut Fields<'_>| -> Result<String, String> {
            let n = f.str("name")?;
            if n.is_empty() {
                return Err("\"name\" must not be empty".into());
            }
            Ok(n)
        };
        let req = match cmd.as_str() {
            "status" => Request::Status,
            "start" => Request::Start(some_names(&mut f, &cmd)?),
            "stop" => Request::Stop(some_names(&mut f, &cmd)?),
            "restart" => Request::Restart(some_names(&mut f, &cmd)?),
            "signal" => {
                let name = name(&mut f)?;
                let sig = match f.opt("signal") {
                    Some(Json::Num(n)) if (1..=64).contains(n) => *n as i32,
                    Some(_) => return Err("\"signal\" must be a signal number 1..64".into()),
                    None => return Err("\"signal\" is missing".into()),
                };
                Request::Signal { name, sig }
            }
            "logs" => Request::Logs {
                name: name(&mut f)?,
                n: f.opt_u64("n")?.map_or(DEFAULT_LOG_LINES, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }),
                follow: f.bool("follow")?,
            },
            "reload" => Request::Reload,
            "shutdown" => Request::Shutdown,
            "wait-ready" => Request::WaitReady {
                names: f.names("names")?,
                timeout_ms: f.opt_u64("timeout_ms")?,
            },
            "health" => Request::Health,
            other => return Err(format!("unknown command \"{other}\"")),
        };
        f.finish()?;
        Ok(req)
    }

    /// The command's wire name.
    pub fn cmd(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Start(_) => "start",
            Request::Stop(_) => "stop",
            Request::Restart(_) => "restart",
            Request::Signal { .. } => "signal",
            Request::Logs { .. } => "logs",
            Request::Reload => "reload",
            Request::Shutdown => "shutdown",
            Request::WaitReady { .. } => "wait-ready",
            Request::Health => "health",
        }
    }

    /// Encode as one line, newline included.
    pub fn encode(&self) -> String {
        let mut fields = vec![
            ("v", Json::Num(VERSION)),
            ("cmd", Json::Str(self.cmd().into())),
        ];
        match self {
            Request::Start(n) | Request::Stop(n) | Request::Restart(n) => {
                fields.push(("names", strs(n)))
            }
            Request::Signal { name, sig } => {
                fields.push(("name", Json::Str(name.clone())));
                fields.push(("signal", Json::Num(i64::from(*sig))));
            }
            Request::Logs { name, n, follow } => {
                fields.push(("name", Json::Str(name.clone())));
                fields.push(("n", num_u64(*n as u64)));
                fields.push(("follow", Json::Bool(*follow)));
            }
            Request::WaitReady { names, timeout_ms } => {
                fields.push(("names", strs(names)));
                if let Some(t) = timeout_ms {
                    fields.push(("timeout_ms", num_u64(*t)));
                }
            }
            Request::Status | Request::Reload | Request::Shutdown | Request::Health => {}
        }
        let mut out = String::new();
        obj(fields).write(&mut out);
        out.push('\n');
        out
    }
}

/// One service as `status` reports it; the runtime fills it in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceStatus {
    /// The service's name.
    pub name: String,
    /// Its state, as the supervisor names it (`running`, `backoff`, `failed`, ...).
    pub state: String,
    /// The main process, if one runs.
    pub pid: Option<i32>,
    /// How long the current process has run.
    pub uptime_ms: Option<u64>,
    /// Restarts so far.
    pub restarts: u32,
    /// How the last process ended (`exit 1`, `killed by SIGKILL`), if one did.
    pub last_exit: Option<String>,
    /// Ready (for services without a readiness check: running).
    pub ready: bool,
    /// The service's own status text (sd_notify `STATUS=`), if it sent one.
    pub status_text: Option<String>,
    /// cgroup `memory.current`, if known.
    pub memory_bytes: Option<u64>,
    /// cgroup `cpu.stat` `usage_usec`, if known.
    pub cpu_usec: Option<u64>,
    /// cgroup `pids.current`, if known.
    pub pids: Option<u64>,
    /// cgroup `memory.events` `oom_kill`, if known.
    pub oom_kills: Option<u64>,
}

impl ServiceStatus {
    fn to_json(&self) -> Json {
        let opt = |v: Option<u64>| v.map_or(Json::Null, num_u64);
        let opt_s = |v: &Option<String>| v.clone().map_or(Json::Null, Json::Str);
        obj(vec![
            ("name", Json::Str(self.name.clone())),
            ("state", Json::Str(self.state.clone())),
            (
                "pid",
                self.pid.map_or(Json::Null, |p| Json::Num(i64::from(p))),
            ),
            ("uptime_ms", opt(self.uptime_ms)),
            ("restarts", Json::Num(i64::from(self.restarts))),
            ("last_exit", opt_s(&self.last_exit)),
            ("ready", Json::Bool(self.ready)),
            ("status_text", opt_s(&self.status_text)),
            ("memory_bytes", opt(self.memory_bytes)),
            ("cpu_usec", opt(self.cpu_usec)),
            ("pids", opt(self.pids)),
            ("oom_kills", opt(self.oom_kills)),
        ])
    }
    fn from_json(v: &Json) -> Result<ServiceStatus, String> {
        let mut f = Fields::new(v)?;
        let s = ServiceStatus {
            name: f.str("name")?,
            state: f.str("state")?,
            pid: f
                .opt_u64("pid")?
                .map(|p| i32::try_from(p).map_err(|_| "\"pid\" out of range".to_string()))
                .transpose()?,
            uptime_ms: f.opt_u64("uptime_ms")?,
            restarts: f
                .opt_u64("restarts")?
                .map_or(0, |r| r.min(u32::MAX.into()) as u32),
            last_exit: f.opt_str("last_exit")?,
            ready: f.bool("ready")?,
            status_text: f.opt_str("status_text")?,
            memory_bytes: f.opt_u64("memory_bytes")?,
            cpu_usec: f.opt_u64("cpu_usec")?,
            pids: f.opt_u64("pids")?,
            oom_kills: f.opt_u64("oom_kills")?,
        };
        // Newer keels may report more per service: the client ignores what it does not know
        // (unlike requests, where keel refuses unknown fields).
        Ok(s)
    }
}

/// One line of a service's output, for `logs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// It came from the service's stderr (else stdout).
    pub stderr: bool,
    /// The text, without newline (invalid UTF-8 replaced).
    pub text: String,
}

impl LogLine {
    fn to_json(&self) -> Json {
        obj(vec![
            (
                "stream",
                Json::Str(if self.stderr { "stderr" } else { "stdout" }.into()),
            ),
            ("text", Json::Str(self.text.clone())),
        ])
    }
    fn from_json(v: &Json) -> Result<LogLine, String> {
        let mut f = Fields::new(v)?;
        Ok(LogLine {
            stderr: f.opt_str("stream")?.as_deref() == Some("stderr"),
            text: f.str("text")?,
        })
    }
}

/// keel's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Done (start, stop, restart, signal, reload, shutdown).
    Ok,
    /// The request failed; the text says why.
    Error(String),
    /// `status`: every service.
    Status(Vec<ServiceStatus>),
    /// `logs`: recent lines, oldest first. With `follow`, [`ControlServer::stream`] sends the
    /// lines that come after.
    Logs(Vec<LogLine>),
    /// `health` and `wait-ready`: whether everything asked about is ready, and what is not.
    Readiness {
        /// Every service asked about (or that should be) is ready.
        ready: bool,
        /// The ones that are not.
        not_ready: Vec<String>,
    },
}

impl Response {
    /// Whether the connection closes once this response is sent: after an error, because
    /// the client may have sent something keel could not frame.
    pub fn closes(&self) -> bool {
        matches!(self, Response::Error(_))
    }

    /// Encode as one line, newline included.
    pub fn encode(&self) -> String {
        let mut fields = vec![("v", Json::Num(VERSION))];
        match self {
            Response::Ok => fields.push(("ok", Json::Bool(true))),
            Response::Error(e) => {
                fields.push(("ok", Json::Bool(false)));
                fields.push(("error", Json::Str(e.clone())));
            }
            Response::Status(list) => {
                fields.push(("ok", Json::Bool(true)));
                fields.push((
                    "services",
                    Json::Arr(list.iter().map(ServiceStatus::to_json).collect()),
                ));
            }
            Response::Logs(lines) => {
                fields.push(("ok", Json::Bool(true)));
                fields.push((
                    "lines",
                    Json::Arr(lines.iter().map(LogLine::to_json).collect()),
                ));
            }
            Response::Readiness { ready, not_ready } => {
                fields.push(("ok", Json::Bool(true)));
                fields.push(("ready", Json::Bool(*ready)));
                fields.push(("not_ready", strs(not_ready)));
            }
        }
        let mut out = String::new();
        obj(fields).write(&mut out);
        out.push('\n');
        out
    }

    /// Decode a response line (the client's side). Which shape is expected depends on the
    /// request, so the decoder goes by the fields present.
    pub fn decode(line: &[u8]) -> Result<Response, String> {
        let v = Json::parse(line)?;
        let mut f = Fields::new(&v)?;
        f.version()?;
        let ok = match f.opt("ok") {
            Some(Json::Bool(b)) => *b,
            _ => return Err("\"ok\" is missing".into()),
        };
        if !ok {
            return Ok(Response::Error(f.str("error")?));
        }
        let list = |v: Option<&Json>| -> Result<Vec<Json>, String> {
            match v {
                Some(Json::Arr(a)) => Ok(a.clone()),
                _ => Err("expected a list".into()),
            }
        };
        if let Some(s) = f.opt("services") {
            let s = list(Some(s))?;
            return s
                .iter()
                .map(ServiceStatus::from_json)
                .collect::<Result<_, _>>()
                .map(Response::Status);
        }
        if let Some(l) = f.opt("lines") {
            let l = list(Some(l))?;
            return l
                .iter()
                .map(LogLine::from_json)
                .collect::<Result<_, _>>()
                .map(Response::Logs);
        }
        if let Some(r) = f.opt("ready") {
            let Json::Bool(ready) = r else {
                return Err("\"ready\" must be true or false".into());
            };
            return Ok(Response::Readiness {
                ready: *ready,
                not_ready: f.names("not_ready")?,
            });
        }
        Ok(Response::Ok)
    }
}

/// Encode a streamed log line (`logs -f`): `{"v":1,"line":{...}}` and a newline.
pub fn encode_stream_line(line: &LogLine) -> String {
    let mut out = String::new();
    obj(vec![("v", Json::Num(VERSION)), ("line", line.to_json())]).write(&mut out);
    out.push('\n');
    out
}

/// Decode a streamed log line (the client's side of `logs -f`).
pub fn decode_stream_line(text: &[u8]) -> Result<LogLine, String> {
    let v = Json::parse(text)?;
    let mut f = Fields::new(&v)?;
    f.version()?;
    match f.opt("line") {
        Some(l) => LogLine::from_json(l),
        None => Err("\"line\" is missing".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// The bounds the server keeps. [`Limits::default`] is what keel uses; tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, newline excluded.
    pub max_request: usize,
    /// Most unsent output a following (`logs -f`) connection may have before it is dropped.
    pub max_output: usize,
    /// Most open connections; the next is told "too many connections" and closed.
    pub max_conns: usize,
    /// How long an idle connection has to send a complete request.
    pub idle_timeout: Duration,
    /// How long queued output may go without any of it being taken by the client.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request: 64 * 1024,
            max_output: 1024 * 1024,
            max_conns: 1024,
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// After `accept` fails for lack of fds or memory, stop accepting for this long (the pending
/// connection would otherwise wake the loop again at once, forever).
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);
/// At most this many accepts per wake-up, so a connection storm cannot starve the loop.
const ACCEPTS_PER_EVENT: usize = 64;
/// Read at most this much per read call (a stack buffer, so idle connections hold none).
const READ_CHUNK: usize = 16 * 1024;

/// Which connection a request came from. Stale ids (the connection closed, its slot reused)
/// are recognised: replies to them go nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u32);

impl ConnId {
    fn slot(self) -> usize {
        (self.0 & 0xffff) as usize
    }
    fn token(self) -> u64 {
        KIND_CONN << 32 | u64::from(self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request.
    Idle,
    /// A request was handed out; no reading until it is answered.
    Pending { follow: bool },
    /// `logs -f`: streaming lines; input is ignored.
    Following,
    /// Sending what is queued, then closing.
    Closing,
}

struct Conn {
    id: ConnId,
    fd: OwnedFd,
    input: Vec<u8>,
    out: Vec<u8>,
    /// How much of `out` was sent.
    sent: usize,
    phase: Phase,
    /// The peer shut down its sending side.
    peer_eof: bool,
    /// Idle phase: when a complete request must have arrived.
    idle_deadline: Instant,
    /// Output pending: when the client must have taken some of it.
    write_deadline: Option<Instant>,
    /// The epoll events currently registered.
    events: u32,
}

impl Conn {
    fn unsent(&self) -> usize {
        self.out.len() - self.sent
    }
}

/// The control socket server. The runtime owns one and feeds it epoll events and timer
/// expiries; see the module documentation.
pub struct ControlServer {
    listener: OwnedFd,
    path: PathBuf,
    /// The socket file's (device, inode), so only our own file is removed on drop.
    inode: (u64, u64),
    allowed_gid: Option<u32>,
    my_uid: u32,
    limits: Limits,
    slots: Vec<Option<Conn>>,
    /// Generation counter for slot reuse (ids stay unique for 65536 reuses of a slot).
    next_gen: u16,
    open: usize,
    accept_paused_until: Option<Instant>,
}

fn cpath(path: &Path) -> Result<CString, SysError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SysError {
        op: "control socket path contains a NUL byte",
        errno: libc::EINVAL,
    })
}

fn stat_of(path: &CString) -> Option<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter; path is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    (unsafe { libc::lstat(path.as_ptr(), &mut st) } == 0).then_some(st)
}

fn sockaddr(path: &Path) -> Result<(libc::sockaddr_un, libc::socklen_t), SysError> {
    let bytes = path.as_os_str().as_bytes();
    sys::sockaddr_un(b"", bytes)
        .filter(|_| !bytes.is_empty())
        .ok_or(SysError {
            op: "control socket path (longer than 107 bytes?)",
            errno: libc::ENAMETOOLONG,
        })
}

fn unix_socket() -> Result<OwnedFd, SysError> {
    sys::socket(libc::AF_UNIX, libc::SOCK_STREAM, "socket(AF_UNIX)")
}

/// `send` with `MSG_NOSIGNAL`: keel blocks SIGPIPE into its signalfd, and a vanished client
/// must not look like a signal to forward. `Ok(None)` is `EAGAIN`.
fn send(fd: RawFd, buf: &[u8]) -> Result<Option<usize>, i32> {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        match errno() {
            libc::EINTR => continue,
            libc::EAGAIN => return Ok(None),
            e => return Err(e),
        }
    }
}

/// The peer's credentials, and whether it may use the socket: root, keel's own user, or
/// (when a group is allowed) a process whose primary or supplementary groups include it.
fn authorise(fd: RawFd, my_uid: u32, allowed_gid: Option<u32>) -> Result<(), String> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid out-parameters of the right size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(format!(
            "permission denied: cannot read peer credentials ({})",
            SysError::last("getsockopt(SO_PEERCRED)")
        ));
    }
    if cred.uid == 0 || cred.uid == my_uid {
        return Ok(());
    }
    if let Some(gid) = allowed_gid {
        if cred.gid == gid || peer_groups(fd).contains(&gid) {
            return Ok(());
        }
        return Err(format!(
            "permission denied: uid {} is neither root nor in group {gid}",
            cred.uid
        ));
    }
    Err(format!(
        "permission denied: uid {} is not root (keel allows no group on this socket)",
        cred.uid
    ))
}

/// The peer's supplementary groups (`SO_PEERGROUPS`, Linux 4.13+; empty where unsupported).
fn peer_groups(fd: RawFd) -> Vec<u32> {
    // 256 groups cover any sane account; for more, the kernel says ERANGE with the size it
    // needs, and we try once more with that (capped at the kernel's own maximum, 65536).
    let mut groups = vec![0u32; 256];
    for _ in 0..2 {
        let mut len = (groups.len() * 4) as libc::socklen_t;
        // SAFETY: groups is valid for len bytes.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            groups.truncate(len as usize / 4);
            return groups;
        }
        if errno() != libc::ERANGE || len as usize / 4 > 65536 {
            break;
        }
        groups.resize(len as usize / 4, 0);
    }
    Vec::new()
}

impl ControlServer {
    /// Create the control socket at `path` and watch it on `epoll`. Parent directories are
    /// made (mode 0755); a stale socket from an earlier run is replaced, but a socket some
    /// process still serves is not (`EADDRINUSE`), nor a file that is not a socket
    /// (`EEXIST`). The socket is mode 0600, or 0660 with group `allowed_gid` when one is
    /// allowed. Permissions are a first fence only: every peer's credentials are checked at
    /// accept.
    pub fn bind(
        path: &Path,
        allowed_gid: Option<u32>,
        epoll: &Epoll,
    ) -> Result<ControlServer, SysError> {
        ControlServer::bind_with(path, allowed_gid, epoll, Limits::default())
    }

    /// [`ControlServer::bind`] with explicit [`Limits`].
    pub fn bind_with(
        path: &Path,
        allowed_gid: Option<u32>,
        epoll: &Epoll,
        limits: Limits,
    ) -> Result<ControlServer, SysError> {
        let (addr, addr_len) = sockaddr(path)?;
        let c = cpath(path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| SysError {
                    op: "mkdir (control socket directory)",
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                })?;
        }
        if let Some(st) = stat_of(&c) {
            if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
                return Err(SysError {
                    op: "control socket path exists and is not a socket",
                    errno: libc::EEXIST,
                });
            }
            // Somebody listening there (another keel sharing the runtime dir)? A
            // non-blocking connect answers at once: refused means stale.
            let probe = unix_socket()?;
            // SAFETY: addr is a valid sockaddr_un of addr_len bytes.
            let r = unsafe {
                libc::connect(
                    probe.as_raw_fd(),
                    (&addr as *const libc::sockaddr_un).cast(),
                    addr_len,
                )
            };
            if r == 0 || errno() == libc::EAGAIN {
                return Err(SysError {
                    op: "control socket is in use by another process",
                    errno: libc::EADDRINUSE,
                });
            }
            // SAFETY: c is NUL-terminated.
            check(
                unsafe { libc::unlink(c.as_ptr()) },
                "unlink (stale control socket)",
            )?;
        }
        let fd = unix_socket()?;
        // Bound under a temporary name, given its mode and group, listening, and only then
        // renamed into place: a client never finds the path before keel accepts on it (it
        // would be refused, as by a stale socket), nor with the umask's permissions.
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".new-{}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp_name);
        let (bind_addr, bind_len, bind_c) = match (sockaddr(&tmp), cpath(&tmp)) {
            (Ok((a, l)), Ok(tc)) => (a, l, Some(tc)),
            // Too long for sun_path with the suffix: bind in place.
            _ => (addr, addr_len, None),
        };
        let at = bind_c.as_deref().unwrap_or(&c);
        // SAFETY: at is NUL-terminated.
        unsafe { libc::unlink(at.as_ptr()) };
        // SAFETY: bind_addr is a valid sockaddr_un of bind_len bytes.
        check(
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&bind_addr as *const libc::sockaddr_un).cast(),
                    bind_len,
                )
            },
            "bind (control socket)",
        )?;
        let unlink_tmp = || {
            if let Some(t) = &bind_c {
                // SAFETY: t is NUL-terminated.
                unsafe { libc::unlink(t.as_ptr()) };
            }
        };
        let mode = if allowed_gid.is_some() { 0o660 } else { 0o600 };
        // SAFETY: at is NUL-terminated.
        check(
            unsafe { libc::chmod(at.as_ptr(), mode) },
            "chmod (control socket)",
        )
        .inspect_err(|_| unlink_tmp())?;
        if let Some(gid) = allowed_gid {
            // SAFETY: at is NUL-terminated; uid -1 leaves the owner alone.
            check(
                unsafe { libc::chown(at.as_ptr(), u32::MAX, gid) },
                "chown (control socket group)",
            )
            .inspect_err(|_| unlink_tmp())?;
        }
        // SAFETY: plain syscall.
        check(
            unsafe { libc::listen(fd.as_raw_fd(), 1024) },
            "listen (control socket)",
        )
        .inspect_err(|_| unlink_tmp())?;
        if let Some(t) = &bind_c {
            // SAFETY: both are NUL-terminated.
            check(
                unsafe { libc::rename(t.as_ptr(), c.as_ptr()) },
                "rename (control socket into place)",
            )
            .inspect_err(|_| unlink_tmp())?;
        }
        epoll.add(fd.as_raw_fd(), KIND_LISTEN << 32)?;
        let inode = stat_of(&c).map_or((0, 0), |st| (st.st_dev, st.st_ino));
        Ok(ControlServer {
            listener: fd,
            path: path.to_path_buf(),
            inode,
            allowed_gid,
            // SAFETY: plain syscall.
            my_uid: unsafe { libc::geteuid() },
            limits,
            slots: Vec::new(),
            next_gen: 0,
            open: 0,
            accept_paused_until: None,
        })
    }

    /// Whether an epoll token belongs to the control server.
    pub fn owns(token: u64) -> bool {
        matches!(token >> 32, KIND_LISTEN | KIND_CONN)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.open
    }

    /// Bytes the server holds in connection buffers (capacity, not length: what memory it
    /// really costs).
    pub fn buffered_bytes(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|c| c.input.capacity() + c.out.capacity())
            .sum()
    }

    /// Whether `conn` is still open (for the runtime's list of waiters and followers).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conn(conn).is_some()
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.slots
            .get(id.slot())
            .and_then(Option::as_ref)
            .filter(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.slots
            .get_mut(id.slot())
            .and_then(Option::as_mut)
            .filter(|c| c.id == id)
    }

    /// Handle one epoll event for a token [`ControlServer::owns`]: accept, read, write.
    /// Returns the requests that became complete (at most one per connection: the next is
    /// not read until this one is answered with [`ControlServer::reply`]).
    pub fn on_event(&mut self, epoll: &Epoll, token: u64, now: Instant) -> Vec<(ConnId, Request)> {
        let mut out = Vec::new();
        match token >> 32 {
            KIND_LISTEN => self.accept(epoll, now),
            KIND_CONN => {
                let id = ConnId(token as u32);
                if let Some(req) = self.service(epoll, id, now) {
                    out.push((id, req));
                }
            }
            _ => {}
        }
        out
    }

    fn accept(&mut self, epoll: &Epoll, now: Instant) {
        for _ in 0..ACCEPTS_PER_EVENT {
            // SAFETY: null address pointers are allowed; we learn the peer via SO_PEERCRED.
            let fd = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                match errno() {
                    libc::EAGAIN => return,
                    libc::EINTR | libc::ECONNABORTED => continue,
                    e => {
                        // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays queued, and
                        // level-triggered epoll would report it again at once. Pause.
                        log::warn!(
                            "control socket: {} (not accepting for {} ms)",
                            SysError {
                                op: "accept",
                                errno: e
                            },
                            ACCEPT_PAUSE.as_millis()
                        );
                        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                        let _ = epoll.modify(self.listener.as_raw_fd(), KIND_LISTEN << 32, 0);
                        return;
                    }
                }
            }
            // SAFETY: accept4 returned a new fd owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            if let Err(why) = authorise(fd.as_raw_fd(), self.my_uid, self.allowed_gid) {
                log::info!("control socket: refused a client: {why}");
                refuse(&fd, &why);
                continue;
            }
            if self.open >= self.limits.max_conns {
                log::debug!("control socket: too many connections");
                refuse(
                    &fd,
                    &format!(
                        "too many connections (keel serves at most {})",
                        self.limits.max_conns
                    ),
                );
                continue;
            }
            let slot = match self.slots.iter().position(Option::is_none) {
                Some(s) => s,
                None => {
                    self.slots.push(None);
                    self.slots.len() - 1
                }
            };
            self.next_gen = self.next_gen.wrapping_add(1);
            let id = ConnId(u32::from(self.next_gen) << 16 | slot as u32);
            let events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
            if let Err(e) = epoll.add_events(fd.as_raw_fd(), id.token(), events) {
                log::warn!("control socket: {e}");
                continue;
            }
            if let Some(s) = self.slots.get_mut(slot) {
                *s = Some(Conn {
                    id,
                    fd,
                    input: Vec::new(),
                    out: Vec::new(),
                    sent: 0,
                    phase: Phase::Idle,
                    peer_eof: false,
                    idle_deadline: now + self.limits.idle_timeout,
                    write_deadline: None,
                    events,
                });
                self.open += 1;
            }
        }
    }

    /// Read, write and frame one connection; returns a request if one became complete.
    fn service(&mut self, epoll: &Epoll, id: ConnId, now: Instant) -> Option<Request> {
        let limits = self.limits;
        let conn = self.conn_mut(id)?;
        let mut hangup = false;
        // Flush first: it may let a Closing connection finish.
        if conn.unsent() > 0 && !flush(conn, now, limits) {
            hangup = true;
        }
        let revents = poll_now(conn.fd.as_raw_fd());
        let gone = revents & (libc::POLLHUP | libc::POLLERR) != 0;
        let mut request = None;
        match conn.phase {
            _ if hangup => {}
            Phase::Idle if !conn.peer_eof => {
                let mut buf = [0u8; READ_CHUNK];
                // Read only while no complete line is buffered: one request at a time. A peer
                // that closed may still have left a request to act on, so read before HUP.
                while !conn.input.contains(&b'\n') && conn.input.len() <= limits.max_request {
                    let room = (limits.max_request + 1 - conn.input.len()).min(READ_CHUNK);
                    match crate::sys::read_nonblock(conn.fd.as_raw_fd(), &mut buf[..room]) {
                        Ok(Some(0)) => {
                            conn.peer_eof = true;
                            break;
                        }
                        Ok(Some(n)) => conn.input.extend_from_slice(&buf[..n]),
                        Ok(None) => break,
                        Err(_) => {
                            hangup = true;
                            break;
                        }
                    }
                }
            }
            Phase::Idle => {}
            // HUP/ERR are reported whatever we ask for: a peer that is gone entirely cannot
            // take a reply, and would wake the loop for ever.
            _ if gone => hangup = true,
            Phase::Pending { .. } => {
                // Not reading; the only event asked for here is the peer's half-close.
                if revents & libc::POLLRDHUP != 0 {
                    conn.peer_eof = true;
                }
            }
            Phase::Following | Phase::Closing => {
                // Nothing more is read from these: drain and drop what the peer sends, so a
                // chatty client cannot wedge its socket, and notice its half-close.
                let mut buf = [0u8; 512];
                while !conn.peer_eof {
                    match crate::sys::read_nonblock(conn.fd.as_raw_fd(), &mut buf) {
                        Ok(Some(0)) => conn.peer_eof = true,
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            hangup = true;
                            break;
                        }
                    }
                }
            }
        }
        if !hangup && conn.phase == Phase::Idle {
            match frame(conn, limits) {
                Frame::Incomplete if conn.peer_eof => {
                    if conn.input.is_empty() {
                        hangup = conn.unsent() == 0;
                        if !hangup {
                            conn.phase = Phase::Closing;
                        }
                    } else {
                        queue_error(
                            conn,
                            "connection closed in the middle of a request",
                            now,
                            limits,
                        );
                    }
                }
                Frame::Incomplete => {}
                Frame::Request(r) => {
                    let follow = matches!(r, Request::Logs { follow: true, .. });
                    conn.phase = Phase::Pending { follow };
                    request = Some(r);
                }
                Frame::Bad(e) => queue_error(conn, &e, now, limits),
            }
        }
        if !hangup && conn.phase == Phase::Closing && conn.unsent() == 0 {
            hangup = true;
        }
        if hangup {
            self.close(epoll, id);
            return None;
        }
        self.rearm(epoll, id);
        request
    }

    /// Set the connection's epoll interest from its state (and close it if that fails).
    fn rearm(&mut self, epoll: &Epoll, id: ConnId) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let mut want = 0u32;
        if conn.unsent() > 0 {
            want |= libc::EPOLLOUT as u32;
        }
        // After the peer's EOF nothing more is asked for but room to write: a readable EOF
        // and RDHUP would report themselves for ever. (HUP and ERR come regardless.)
        if !conn.peer_eof {
            want |= match conn.phase {
                Phase::Pending { .. } => libc::EPOLLRDHUP as u32,
                _ => (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            };
        }
        // A request already buffered behind an answered one: EPOLLOUT (writable at once)
        // brings us back to frame it, since no new input may ever come for it.
        if conn.phase == Phase::Idle && conn.input.contains(&b'\n') {
            want |= libc::EPOLLOUT as u32;
        }
        if want != conn.events {
            let (fd, token) = (conn.fd.as_raw_fd(), conn.id.token());
            conn.events = want;
            if epoll.modify(fd, token, want).is_err() {
                self.close(epoll, id);
            }
        }
    }

    fn close(&mut self, epoll: &Epoll, id: ConnId) {
        if let Some(slot) = self.slots.get_mut(id.slot())
            && slot.as_ref().is_some_and(|c| c.id == id)
            && let Some(conn) = slot.take()
        {
            let _ = epoll.remove(conn.fd.as_raw_fd());
            self.open = self.open.saturating_sub(1);
            // Trailing empty slots go, so a burst of connections leaves no table behind.
            while self.slots.last().is_some_and(Option::is_none) {
                self.slots.pop();
            }
            if self.slots.capacity() > 2 * self.slots.len() + 16 {
                self.slots.shrink_to_fit();
            }
        }
    }

    /// Answer the request pending on `conn`. The response is queued and written as far as the
    /// socket takes it; the rest goes out as epoll reports the socket writable. After an
    /// error the connection closes once the response is out; after a successful
    /// `logs -f` answer it follows (see [`ControlServer::stream`]); otherwise it waits for
    /// the next request. A reply to a connection that is gone is dropped.
    pub fn reply(&mut self, epoll: &Epoll, conn: ConnId, resp: &Response) {
        let now = Instant::now();
        let limits = self.limits;
        let Some(c) = self.conn_mut(conn) else {
            return;
        };
        let follow = match c.phase {
            Phase::Pending { follow } => follow,
            // Nothing is pending: a second reply, or a reply to a follower. Ignore it.
            _ => return,
        };
        push_out(c, resp.encode().as_bytes(), now, limits);
        c.phase = if resp.closes() || c.peer_eof && !follow {
            Phase::Closing
        } else if follow {
            Phase::Following
        } else {
            c.idle_deadline = now + limits.idle_timeout;
            Phase::Idle
        };
        if c.phase == Phase::Following && c.peer_eof {
            c.phase = Phase::Closing;
        }
        let ok = flush(c, now, limits);
        if !ok || c.phase == Phase::Closing && c.unsent() == 0 {
            self.close(epoll, conn);
            return;
        }
        self.rearm(epoll, conn);
    }

    /// Send one more line to a following (`logs -f`) connection. Returns false if the
    /// connection is gone, not following, or has fallen more than `max_output` bytes behind
    /// (it is then dropped): the runtime forgets it as a follower.
    pub fn stream(&mut self, epoll: &Epoll, conn: ConnId, line: &LogLine) -> bool {
        let now = Instant::now();
        let limits = self.limits;
        let Some(c) = self.conn_mut(conn) else {
            return false;
        };
        if c.phase != Phase::Following {
            return false;
        }
        let text = encode_stream_line(line);
        if c.unsent() + text.len() > limits.max_output {
            log::debug!("control socket: dropping a log follower that fell behind");
            self.close(epoll, conn);
            return false;
        }
        push_out(c, text.as_bytes(), now, limits);
        if !flush(c, now, limits) {
            self.close(epoll, conn);
            return false;
        }
        self.rearm(epoll, conn);
        true
    }

    /// The earliest timeout the server needs to be woken for.
    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self.slots.iter().flatten().filter_map(|c| {
            let idle = (c.phase == Phase::Idle).then_some(c.idle_deadline);
            match (idle, c.write_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        conns.chain(self.accept_paused_until).min()
    }

    /// Close connections whose idle or write timeout passed (an idle one is told why), and
    /// resume accepting after a pause.
    pub fn on_timer(&mut self, epoll: &Epoll, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            let _ = epoll.modify(
                self.listener.as_raw_fd(),
                KIND_LISTEN << 32,
                libc::EPOLLIN as u32,
            );
        }
        let limits = self.limits;
        let mut expired = Vec::new();
        for c in self.slots.iter_mut().flatten() {
            if c.write_deadline.is_some_and(|t| t <= now) {
                expired.push(c.id);
            } else if c.phase == Phase::Idle && c.idle_deadline <= now {
                let msg = if c.input.is_empty() {
                    "idle for too long"
                } else {
                    "timed out waiting for the rest of the request"
                };
                push_out(
                    c,
                    Response::Error(msg.into()).encode().as_bytes(),
                    now,
                    limits,
                );
                // Best effort: one attempt, then close whatever happened.
                let _ = flush(c, now, limits);
                expired.push(c.id);
            }
        }
        for id in expired {
            self.close(epoll, id);
        }
    }
}

impl Drop for ControlServer {
    /// Remove the socket file if it is still ours (a newer keel may have replaced it).
    fn drop(&mut self) {
        if let Ok(c) = cpath(&self.path)
            && let Some(st) = stat_of(&c)
            && (st.st_dev, st.st_ino) == self.inode
        {
            // SAFETY: c is NUL-terminated.
            unsafe { libc::unlink(c.as_ptr()) };
        }
    }
}

/// The events pending on `fd` right now (`poll` with a zero timeout): epoll only says *that*
/// something happened, and the difference between a half-close and a full hang-up matters.
fn poll_now(fd: RawFd) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: p is one valid pollfd; a zero timeout never blocks.
    if unsafe { libc::poll(&mut p, 1, 0) } < 0 {
        return 0;
    }
    p.revents
}

/// Tell a refused client why, once, without waiting (its socket buffer is empty, so the line
/// fits), and close.
fn refuse(fd: &OwnedFd, why: &str) {
    let _ = send(
        fd.as_raw_fd(),
        Response::Error(why.into()).encode().as_bytes(),
    );
}

enum Frame {
    Incomplete,
    Request(Request),
    Bad(String),
}

/// Take one line off the connection's input and decode it.
fn frame(conn: &mut Conn, limits: Limits) -> Frame {
    let Some(nl) = conn.input.iter().position(|&b| b == b'\n') else {
        if conn.input.len() > limits.max_request {
            return Frame::Bad(format!("request longer than {} bytes", limits.max_request));
        }
        return Frame::Incomplete;
    };
    if nl > limits.max_request {
        return Frame::Bad(format!("request longer than {} bytes", limits.max_request));
    }
    let result = {
        let line = conn.input.get(..nl).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Request::decode(line)
    };
    conn.input.drain(..=nl);
    if conn.input.is_empty() {
        // Give the buffer back: an idle connection should cost (almost) nothing.
        conn.input = Vec::new();
    }
    match result {
        Ok(r) => Frame::Request(r),
        Err(e) => Frame::Bad(e),
    }
}

fn queue_error(conn: &mut Conn, msg: &str, now: Instant, limits: Limits) {
    push_out(
        conn,
        Response::Error(msg.into()).encode().as_bytes(),
        now,
        limits,
    );
    conn.phase = Phase::Closing;
    conn.input = Vec::new();
}

fn push_out(conn: &mut Conn, bytes: &[u8], now: Instant, limits: Limits) {
    if conn.unsent() == 0 {
        conn.out.clear();
        conn.sent = 0;
        conn.write_deadline = Some(now + limits.write_timeout);
    }
    conn.out.extend_from_slice(bytes);
}

/// Write as much queued output as the socket takes. False: the peer is gone.
fn flush(conn: &mut Conn, now: Instant, limits: Limits) -> bool {
    while conn.unsent() > 0 {
        match send(
            conn.fd.as_raw_fd(),
            conn.out.get(conn.sent..).unwrap_or_default(),
        ) {
            Ok(Some(0)) | Err(_) => return false,
            Ok(Some(n)) => {
                conn.sent += n;
                conn.write_deadline = Some(now + limits.write_timeout);
            }
            Ok(None) => break,
        }
    }
    if conn.unsent() == 0 {
        // All out: release the buffer (a status reply for 200 services should not stay
        // resident per connection).
        conn.out = Vec::new();
        conn.sent = 0;
        conn.write_deadline = None;
    } else if conn.sent > conn.out.len() / 2 {
        conn.out.drain(..conn.sent);
        conn.sent = 0;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;

    fn sock_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-ctl-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("s").join(SOCKET_NAME)
    }

    struct Harness {
        epoll: Epoll,
        server: ControlServer,
    }

    impl Harness {
        fn new(name: &str, gid: Option<u32>, limits: Limits) -> Harness {
            let epoll = Epoll::new().unwrap();
            let server = ControlServer::bind_with(&sock_path(name), gid, &epoll, limits).unwrap();
            Harness { epoll, server }
        }
        fn connect(&self) -> UnixStream {
            UnixStream::connect(self.server.path()).unwrap()
        }
        /// Run the loop until `done` says so (given every request so far) or `max` passes.
        fn pump(
            &mut self,
            max: Duration,
            mut done: impl FnMut(&[(ConnId, Request)], &ControlServer) -> bool,
        ) -> Vec<(ConnId, Request)> {
            let end = Instant::now() + max;
            let mut got = Vec::new();
            let mut tokens = Vec::new();
            while !done(&got, &self.server) && Instant::now() < end {
                let now = Instant::now();
                let wake = self.server.next_deadline().map_or(end, |d| d.min(end));
                let ms = wake.saturating_duration_since(now).as_millis().min(20) as i32;
                self.epoll.wait(&mut tokens, ms).unwrap();
                let now = Instant::now();
                for &t in &tokens {
                    assert!(ControlServer::owns(t));
                    got.extend(self.server.on_event(&self.epoll, t, now));
                }
                if self.server.next_deadline().is_some_and(|d| d <= now) {
                    self.server.on_timer(&self.epoll, now);
                }
            }
            got
        }
        fn reply(&mut self, id: ConnId, r: &Response) {
            self.server.reply(&self.epoll, id, r);
        }
    }

    fn read_line(c: &mut BufReader<UnixStream>) -> String {
        c.get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut s = String::new();
        c.read_line(&mut s).unwrap();
        s
    }

    fn at_eof(c: &mut BufReader<UnixStream>) -> bool {
        c.get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut s = String::new();
        matches!(c.read_line(&mut s), Ok(0))
    }

    fn error_of(line: &str) -> String {
        match Response::decode(line.trim_end().as_bytes()) {
            Ok(Response::Error(e)) => e,
            other => panic!("not an error: {line:?} {other:?}"),
        }
    }

    #[test]
    fn json_accepts_json_and_refuses_the_rest() {
        let ok: &[(&str, Json)] = &[
            (" null ", Json::Null),
            ("-0", Json::Num(0)),
            ("-9223372036854775808", Json::Num(i64::MIN)),
            (
                "[true,false,[]]",
                Json::Arr(vec![Json::Bool(true), Json::Bool(false), Json::Arr(vec![])]),
            ),
            (
                r#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#,
                Json::Str("a\"\\/\u{8}\u{c}\n\r\t\u{e9}\u{1f600}".into()),
            ),
            (
                "{\"a\" : {} ,\"b\":\"é\"}",
                Json::Obj(vec![
                    ("a".into(), Json::Obj(vec![])),
                    ("b".into(), Json::Str("é".into())),
                ]),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(&Json::parse(text.as_bytes()).unwrap(), want, "{text}");
            // And back: what the writer makes, the parser reads to the same value.
            let mut w = String::new();
            want.write(&mut w);
            assert_eq!(&Json::parse(w.as_bytes()).unwrap(), want);
            assert!(!w.contains('\n'));
        }
        let bad: &[&[u8]] = &[
            b"",
            b"nul",
            b"01",
            b"1.5",
            b"1e3",
            b"-",
            b"9223372036854775808",
            b"[1,]",
            b"[1 2]",
            b"{\"a\":1,}",
            b"{a:1}",
            b"{\"a\":1,\"a\":2}",
            b"\"abc",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"\"\x01\"",
            b"\"\xff\"",
            b"1 2",
            b"[",
            b"{\"a\"}",
            b"tru",
            b"// c",
        ];
        for text in bad {
            assert!(
                Json::parse(text).is_err(),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(Json::parse(deep.as_bytes()).unwrap_err().contains("deeply"));
        let fine = "[".repeat(MAX_DEPTH - 1) + &"]".repeat(MAX_DEPTH - 1);
        assert!(Json::parse(fine.as_bytes()).is_ok());
        let mut w = String::new();
        write_str(&mut w, "\u{1}\u{7f}x");
        assert_eq!(w, r#""\u0001\u007fx""#);
    }

    fn every_request() -> Vec<Request> {
        let names = vec!["web".to_string(), "db \"x\"\n".to_string()];
        vec![
            Request::Status,
            Request::Start(names.clone()),
            Request::Stop(names.clone()),
            Request::Restart(vec!["é".into()]),
            Request::Signal {
                name: "web".into(),
                sig: 15,
            },
            Request::Logs {
                name: "web".into(),
                n: 7,
                follow: true,
            },
            Request::Logs {
                name: "web".into(),
                n: 0,
                follow: false,
            },
            Request::Reload,
            Request::Shutdown,
            Request::WaitReady {
                names: vec![],
                timeout_ms: None,
            },
            Request::WaitReady {
                names,
                timeout_ms: Some(1500),
            },
            Request::Health,
        ]
    }

    fn every_response() -> Vec<Response> {
        vec![
            Response::Ok,
            Response::Error("no service \"x\"".into()),
            Response::Status(vec![]),
            Response::Status(vec![
                ServiceStatus {
                    name: "a".into(),
                    state: "running".into(),
                    ..Default::default()
                },
                ServiceStatus {
                    name: "b".into(),
                    state: "backoff".into(),
                    pid: Some(42),
                    uptime_ms: Some(3_600_000),
                    restarts: 3,
                    last_exit: Some("killed by SIGKILL".into()),
                    ready: true,
                    status_text: Some("serving\t1".into()),
                    memory_bytes: Some(1 << 40),
                    cpu_usec: Some(5),
                    pids: Some(3),
                    oom_kills: Some(0),
                },
            ]),
            Response::Logs(vec![
                LogLine {
                    stderr: false,
                    text: "hello".into(),
                },
                LogLine {
                    stderr: true,
                    text: "\u{0}bad\u{1b}[0m".into(),
                },
            ]),
            Response::Readiness {
                ready: true,
                not_ready: vec![],
            },
            Response::Readiness {
                ready: false,
                not_ready: vec!["db".into()],
            },
        ]
    }

    #[test]
    fn requests_and_responses_round_trip() {
        for r in every_request() {
            let line = r.encode();
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line}"
            );
            assert_eq!(Request::decode(line.trim_end().as_bytes()), Ok(r));
        }
        for r in every_response() {
            let line = r.encode();
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line}"
            );
            assert_eq!(Response::decode(line.trim_end().as_bytes()), Ok(r));
        }
        let l = LogLine {
            stderr: true,
            text: "x\ny".into(),
        };
        let s = encode_stream_line(&l);
        assert_eq!(decode_stream_line(s.trim_end().as_bytes()), Ok(l));
        // Defaults and explicit nulls.
        assert_eq!(
            Request::decode(br#"{"v":1,"cmd":"logs","name":"a","n":null}"#),
            Ok(Request::Logs {
                name: "a".into(),
                n: DEFAULT_LOG_LINES,
                follow: false
            })
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            (r#"{"cmd":"status"}"#, "\"v\""),
            (
                r#"{"v":2,"cmd":"status"}"#,
                "unsupported protocol version 2",
            ),
            (r#"{"v":1}"#, "\"cmd\" is missing"),
            (r#"{"v":1,"cmd":"dance"}"#, "unknown command \"dance\""),
            (
                r#"{"v":1,"cmd":"status","verbose":true}"#,
                "unknown field \"verbose\"",
            ),
            (
                r#"{"v":1,"cmd":"start"}"#,
                "start needs at least one service name",
            ),
            (
                r#"{"v":1,"cmd":"stop","names":[]}"#,
                "stop needs at least one",
            ),
            (
                r#"{"v":1,"cmd":"stop","names":[""]}"#,
                "list of service names",
            ),
            (
                r#"{"v":1,"cmd":"stop","names":"web"}"#,
                "list of service names",
            ),
            (
                r#"{"v":1,"cmd":"signal","name":"a","signal":0}"#,
                "signal number 1..64",
            ),
            (
                r#"{"v":1,"cmd":"signal","name":"a","signal":"TERM"}"#,
                "signal number",
            ),
            (
                r#"{"v":1,"cmd":"signal","name":"a"}"#,
                "\"signal\" is missing",
            ),
            (r#"{"v":1,"cmd":"logs","name":""}"#, "must not be empty"),
            (r#"{"v":1,"cmd":"logs","name":"a","n":-1}"#, "negative"),
            (
                r#"{"v":1,"cmd":"logs","name":"a","follow":1}"#,
                "true or false",
            ),
            (r#"{"v":1,"cmd":"wait-ready","timeout_ms":"5s"}"#, "integer"),
            (r#"[1]"#, "JSON object"),
            (r#"{"v":1,"cmd":"status"} x"#, "after the value"),
        ];
        for (text, want) in cases {
            let e = Request::decode(text.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{text}: {e:?} lacks {want:?}");
        }
    }

    /// A small xorshift generator: deterministic per seed, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Random bytes and mutated valid messages never panic the decoders, and whatever decodes
    /// encodes back to the same request. Rounds: `KEEL_FUZZ_ROUNDS` (default 20000), and never
    /// more than 20 s.
    #[test]
    fn fuzz_the_decoders() {
        let rounds: usize = std::env::var("KEEL_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        let seed = std::env::var("KEEL_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
        let mut rng = Rng(seed);
        let mut corpus: Vec<Vec<u8>> = every_request()
            .iter()
            .map(|r| r.encode().trim_end().as_bytes().to_vec())
            .chain(
                every_response()
                    .iter()
                    .map(|r| r.encode().trim_end().as_bytes().to_vec()),
            )
            .collect();
        corpus.push(br#"{"a":[1,-2,{"b":"\ud83d\ude00\u0000"}],"c":null}"#.to_vec());
        const TOKENS: &[&[u8]] = &[
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b":",
            b"\"",
            b"\\",
            b"\\u",
            b"d800",
            b"null",
            b"-",
            b"0",
            b"9999999999999999999",
            b"\"cmd\"",
            b"\"v\"",
            b"1",
            b"\xff",
            b"\xc3",
            b" ",
        ];
        let end = Instant::now() + Duration::from_secs(20);
        let (mut decoded, mut i) = (0, 0);
        while i < rounds && Instant::now() < end {
            i += 1;
            let input: Vec<u8> = if rng.below(4) == 0 {
                (0..rng.below(64)).map(|_| rng.next() as u8).collect()
            } else {
                let mut m = corpus[rng.below(corpus.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(m.len() + 1);
                    match rng.below(4) {
                        0 if !m.is_empty() => {
                            let to = (at + rng.below(8)).min(m.len());
                            m.drain(at.min(to)..to);
                        }
                        1 if at < m.len() => m[at] = rng.next() as u8,
                        _ => {
                            let t = TOKENS[rng.below(TOKENS.len())];
                            m.splice(at..at, t.iter().copied());
                        }
                    }
                }
                m
            };
            if let Ok(r) = Request::decode(&input) {
                decoded += 1;
                assert_eq!(Request::decode(r.encode().trim_end().as_bytes()), Ok(r));
            }
            if let Ok(r) = Response::decode(&input) {
                let again = Response::decode(r.encode().trim_end().as_bytes()).unwrap();
                assert_eq!(again.encode(), r.encode());
            }
            let _ = decode_stream_line(&input);
            if let Ok(j) = Json::parse(&input) {
                let mut w = String::new();
                j.write(&mut w);
                assert_eq!(Json::parse(w.as_bytes()), Ok(j));
                if rng.below(8) == 0 && corpus.len() < 200 {
                    corpus.push(input);
                }
            }
        }
        eprintln!("fuzz: {i} rounds, {decoded} valid requests");
        assert!(i == rounds || Instant::now() >= end);
    }

    #[test]
    fn bind_sets_mode_replaces_stale_and_refuses_live_sockets() {
        let epoll = Epoll::new().unwrap();
        let path = sock_path("bind");
        let server = ControlServer::bind(&path, None, &epoll).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o755);
        // A live socket is not taken over.
        let e = ControlServer::bind(&path, None, &epoll).err().unwrap();
        assert_eq!(e.errno, libc::EADDRINUSE, "{e}");
        // A stale one (nobody listening) is.
        drop(server);
        assert!(!path.exists());
        let path2 = sock_path("stale");
        std::fs::create_dir_all(path2.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path2).unwrap());
        assert!(path2.exists());
        let s2 = ControlServer::bind(&path2, Some(4242), &epoll).unwrap();
        let meta = std::fs::metadata(&path2).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.gid(), 4242);
        // Dropping the server removes its socket file.
        drop(s2);
        assert!(!path2.exists());
        // Not a socket: left alone.
        std::fs::write(&path2, "x").unwrap();
        assert_eq!(
            ControlServer::bind(&path2, None, &epoll)
                .err()
                .unwrap()
                .errno,
            libc::EEXIST
        );
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        assert_eq!(
            ControlServer::bind(&long, None, &epoll)
                .err()
                .unwrap()
                .errno,
            libc::ENAMETOOLONG
        );
    }

    #[test]
    fn requests_are_answered_in_order_one_at_a_time() {
        let mut h = Harness::new("order", None, Limits::default());
        let mut c = BufReader::new(h.connect());
        // Two requests in one write: the second is framed only after the first's answer.
        c.get_mut()
            .write_all(
                format!("{}{}", Request::Status.encode(), Request::Health.encode()).as_bytes(),
            )
            .unwrap();
        let got = h.pump(Duration::from_secs(5), |g, _| !g.is_empty());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, Request::Status);
        let more = h.pump(Duration::from_millis(100), |g, _| !g.is_empty());
        assert!(
            more.is_empty(),
            "second request handed out before the first was answered"
        );
        h.reply(got[0].0, &Response::Status(vec![]));
        assert_eq!(
            Response::decode(read_line(&mut c).trim_end().as_bytes()),
            Ok(Response::Status(vec![]))
        );
        let got = h.pump(Duration::from_secs(5), |g, _| !g.is_empty());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, Request::Health);
        // A half-close after the request still gets the answer, then EOF.
        c.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
        h.pump(Duration::from_millis(100), |_, _| false);
        h.reply(
            got[0].0,
            &Response::Readiness {
                ready: true,
                not_ready: vec![],
            },
        );
        assert!(read_line(&mut c).contains("\"ready\":true"));
        h.pump(Duration::from_secs(5), |_, s| s.connections() == 0);
        assert!(at_eof(&mut c));
        assert_eq!(h.server.connections(), 0);
        // The id is stale now: replies go nowhere, harmlessly.
        h.reply(got[0].0, &Response::Ok);
        assert!(!h.server.is_open(got[0].0));
    }

    #[test]
    fn garbage_and_oversized_requests_get_an_error_and_are_closed() {
        let limits = Limits {
            max_request: 1000,
            ..Limits::default()
        };
        let mut h = Harness::new("garbage", None, limits);
        let mut g = BufReader::new(h.connect());
        g.get_mut().write_all(b"\x00\xffhello\n").unwrap();
        let mut big = BufReader::new(h.connect());
        big.get_mut().write_all(&[b'['; 5000]).unwrap();
        let mut unknown = BufReader::new(h.connect());
        unknown
            .get_mut()
            .write_all(b"{\"v\":1,\"cmd\":\"format-disk\"}\r\n")
            .unwrap();
        // (connections() is 0 before the accepts too: run the loop a while.)
        let got = h.pump(Duration::from_millis(500), |_, _| false);
        assert!(got.is_empty());
        assert_eq!(h.server.connections(), 0);
        assert!(error_of(&read_line(&mut g)).contains("invalid JSON"));
        assert!(error_of(&read_line(&mut big)).contains("longer than 1000 bytes"));
        assert!(error_of(&read_line(&mut unknown)).contains("unknown command"));
        for c in [&mut g, &mut big, &mut unknown] {
            assert!(at_eof(c));
        }
        // An error reply from the runtime closes too.
        let mut c = BufReader::new(h.connect());
        c.get_mut()
            .write_all(Request::Reload.encode().as_bytes())
            .unwrap();
        let got = h.pump(Duration::from_secs(5), |g, _| !g.is_empty());
        h.reply(
            got[0].0,
            &Response::Error("no configuration to reload".into()),
        );
        assert_eq!(error_of(&read_line(&mut c)), "no configuration to reload");
        assert!(at_eof(&mut c));
    }

    #[test]
    fn half_written_and_idle_clients_time_out() {
        let limits = Limits {
            idle_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let mut h = Harness::new("slow", None, limits);
        let start = Instant::now();
        let mut half = BufReader::new(h.connect());
        half.get_mut().write_all(b"{\"v\":1,").unwrap();
        let mut idle = BufReader::new(h.connect());
        // A trickle does not extend the deadline.
        let mut trickle = BufReader::new(h.connect());
        let mut sent = 0;
        h.pump(Duration::from_secs(5), |_, s| {
            if sent < 8 && s.connections() > 0 {
                let _ = trickle.get_mut().write_all(b" ");
                sent += 1;
                std::thread::sleep(Duration::from_millis(40));
            }
            s.connections() == 0 && start.elapsed() > Duration::from_millis(150)
        });
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert!(error_of(&read_line(&mut half)).contains("rest of the request"));
        assert!(error_of(&read_line(&mut idle)).contains("idle"));
        assert!(error_of(&read_line(&mut trickle)).contains("rest of the request"));
        assert!(at_eof(&mut half));
        // A request in flight is the runtime's business: no idle timeout while it waits.
        let mut c = BufReader::new(h.connect());
        c.get_mut()
            .write_all(
                Request::WaitReady {
                    names: vec![],
                    timeout_ms: None,
                }
                .encode()
                .as_bytes(),
            )
            .unwrap();
        let got = h.pump(Duration::from_secs(5), |g, _| !g.is_empty());
        h.pump(Duration::from_millis(400), |_, _| false);
        assert!(h.server.is_open(got[0].0));
        h.reply(
            got[0].0,
            &Response::Readiness {
                ready: true,
                not_ready: vec![],
            },
        );
        assert!(read_line(&mut c).contains("\"ready\":true"));
    }

    #[test]
    fn followers_get_lines_and_are_dropped_when_gone_or_behind() {
        let limits = Limits {
            max_output: 8192,
            write_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let mut h = Harness::new("follow", None, limits);
        let mut f = BufReader::new(h.connect());
        let req = Request::Logs {
            name: "web".into(),
            n: 1,
            follow: true,
        };
        f.get_mut().write_all(req.encode().as_bytes()).unwrap();
        let got = h.pump(Duration::from_secs(5), |g, _| !g.is_empty());
        let id = got[0].0;
        assert!(!h.server.stream(
            &h.epoll,
            id,
            &LogLine {
                stderr: false,
                text: "early".into()
            }
        ));
        h.reply(
            id,
            &Response::Logs(vec![LogLine {
                stderr: false,
                text: "old".into(),
            }]),
        );
        assert!(read_line(&mut f).contains("\"old\""));
        let line = LogLine {
            stderr: true,
            text: "new\tline".into(),
        };
        assert!(h.server.stream(&h.epoll, id, &line));
        assert_eq!(
            decode_stream_line(read_line(&mut f).trim_end().as_bytes()),
            Ok(line.clone())
        );
        // A follower that stops reading is dropped once it is max_output behind the socket.
        let big = LogLine {
            stderr: false,
            text: "x".repeat(1000),
        };
        let mut pushed = 0;
        while h.server.stream(&h.epoll, id, &big) {
            pushed += 1;
            assert!(pushed < 10_000, "a stalled follower was never dropped");
        }
        assert!(!h.server.is_open(id));
        // A follower that goes away is noticed by the loop.
        let mut f2 = BufReader::new(h.connect());
        f2.get_mut().write_all(req.encode().as_bytes()).unwrap();
        let got = h.pump(Duration::from_secs(5), |g, _| !g.is_empty());
        h.reply(got[0].0, &Response::Logs(vec![]));
        assert!(read_line(&mut f2).contains("\"lines\":[]"));
        drop(f2);
        h.pump(Duration::from_secs(5), |_, s| s.connections() == 0);
        assert!(!h.server.stream(&h.epoll, got[0].0, &line));
        // A follower that stops reading with a little output queued: the write timeout.
        let mut f3 = BufReader::new(h.connect());
        f3.get_mut().write_all(req.encode().as_bytes()).unwrap();
        let got = h.pump(Duration::from_secs(5), |g, _| !g.is_empty());
        h.reply(got[0].0, &Response::Logs(vec![]));
        let mid = LogLine {
            stderr: false,
            text: "y".repeat(7000),
        };
        let mut n = 0;
        while n < 1000 && h.server.stream(&h.epoll, got[0].0, &mid) {
            n += 1;
        }
        if h.server.is_open(got[0].0) {
            let t = Instant::now();
            h.pump(Duration::from_secs(5), |_, s| s.connections() == 0);
            assert!(t.elapsed() < Duration::from_secs(2));
        }
        assert!(!h.server.is_open(got[0].0));
        drop(f3);
    }

    fn raise_fd_limit(want: u64) -> bool {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
        if r.rlim_cur >= want {
            return true;
        }
        r.rlim_cur = want.min(r.rlim_max);
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
        r.rlim_cur >= want
    }

    #[test]
    fn a_thousand_clients_at_once_with_bounded_buffers() {
        const N: usize = 1000;
        if !raise_fd_limit(2 * N as u64 + 200) {
            eprintln!("SKIP: cannot raise RLIMIT_NOFILE to {}", 2 * N + 200);
            return;
        }
        let limits = Limits {
            max_conns: N,
            ..Limits::default()
        };
        let mut h = Harness::new("thousand", None, limits);
        let mut clients = Vec::new();
        for i in 0..N {
            let mut c = h.connect();
            // Half a request each, first: what keel holds for them is what they sent.
            c.write_all(b"{\"v\":1,").unwrap();
            clients.push(BufReader::new(c));
            if i % 100 == 99 {
                h.pump(Duration::from_secs(5), |_, s| s.connections() == i + 1);
            }
        }
        h.pump(Duration::from_secs(10), |_, s| s.buffered_bytes() >= N * 7);
        assert_eq!(h.server.connections(), N);
        let held = h.server.buffered_bytes();
        assert!(
            held <= N * 64,
            "{held} bytes buffered for {N} clients of 7 bytes each"
        );
        // One too many is told so and closed, and costs nothing.
        let mut extra = BufReader::new(h.connect());
        h.pump(Duration::from_millis(200), |_, _| false);
        assert!(error_of(&read_line(&mut extra)).contains("too many connections"));
        assert!(at_eof(&mut extra));
        assert_eq!(h.server.connections(), N);
        // Now all finish their requests; each is answered.
        for c in &mut clients {
            c.get_mut().write_all(b"\"cmd\":\"status\"}\n").unwrap();
        }
        let mut reqs = Vec::new();
        let end = Instant::now() + Duration::from_secs(20);
        while reqs.len() < N && Instant::now() < end {
            reqs.extend(h.pump(Duration::from_millis(200), |g, _| !g.is_empty()));
        }
        assert_eq!(reqs.len(), N);
        assert!(reqs.iter().all(|(_, r)| *r == Request::Status));
        let status = Response::Status(vec![ServiceStatus {
            name: "web".into(),
            state: "running".into(),
            ..Default::default()
        }]);
        for (id, _) in &reqs {
            h.reply(*id, &status);
        }
        // Replies went out at once; nothing stays buffered.
        assert_eq!(h.server.buffered_bytes(), 0);
        for c in &mut clients {
            assert_eq!(
                Response::decode(read_line(c).trim_end().as_bytes()),
                Ok(status.clone())
            );
        }
        drop(clients);
        h.pump(Duration::from_secs(10), |_, s| s.connections() == 0);
        assert_eq!(h.server.connections(), 0);
        assert!(
            h.server.slots.capacity() < 64,
            "the connection table stayed large"
        );
    }

    /// Fork a child that drops to `uid`/`gid` (with `groups` as supplementary groups), connects
    /// to `path`, sends `req` and reads the answer; the parent runs the server meanwhile and
    /// answers any request with `answer`. Returns what the child read.
    fn as_user(
        h: &mut Harness,
        uid: u32,
        gid: u32,
        groups: &[u32],
        req: &Request,
        answer: &Response,
    ) -> String {
        let (addr, len) = sockaddr(h.server.path()).unwrap();
        let line = req.encode().into_bytes();
        let (rd, wr) = crate::sys::pipe_cloexec_nonblock().unwrap();
        let groups = groups.to_vec();
        // SAFETY: the child makes only raw syscalls on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                let ok = libc::setgroups(groups.len(), groups.as_ptr()) == 0
                    && libc::setgid(gid) == 0
                    && libc::setuid(uid) == 0;
                if !ok {
                    libc::_exit(10);
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                if libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) != 0 {
                    libc::_exit(11);
                }
                libc::send(fd, line.as_ptr().cast(), line.len(), libc::MSG_NOSIGNAL);
                let mut buf = [0u8; 4096];
                let mut have = 0;
                while have < buf.len() {
                    let n = libc::read(fd, buf.as_mut_ptr().add(have).cast(), buf.len() - have);
                    if n <= 0 {
                        break;
                    }
                    have += n as usize;
                    if buf[have - 1] == b'\n' {
                        break;
                    }
                }
                libc::write(wr.as_raw_fd(), buf.as_ptr().cast(), have);
                libc::_exit(0);
            }
        }
        drop(wr);
        let mut answered = false;
        let mut status = 0;
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            for (id, _) in h.pump(Duration::from_millis(20), |g, _| !g.is_empty()) {
                h.reply(id, answer);
                answered = true;
            }
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                break;
            }
        }
        let _ = answered;
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
        // Blocking from here: another test's child, forked while our pipe was open, may
        // hold the write end until it execs (the fds are close-on-exec), so EOF can lag.
        unsafe { libc::fcntl(rd.as_raw_fd(), libc::F_SETFL, 0) };
        let mut out = String::new();
        std::fs::File::from(rd).read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn peers_are_checked_by_their_credentials() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: needs root to switch users");
            return;
        }
        let mut h = Harness::new("creds", Some(4242), Limits::default());
        // The file mode is a first fence only; open it so the credential check is tested.
        std::fs::set_permissions(h.server.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
        let ok = Response::Readiness {
            ready: true,
            not_ready: vec![],
        };
        let got = as_user(&mut h, 65534, 65534, &[], &Request::Health, &ok);
        let e = error_of(&got);
        assert!(
            e.contains("permission denied: uid 65534 is neither root nor in group 4242"),
            "{e}"
        );
        // The allowed group as primary group, and as a supplementary one.
        assert!(
            as_user(&mut h, 65534, 4242, &[], &Request::Health, &ok).contains("\"ready\":true")
        );
        assert!(
            as_user(&mut h, 65534, 65534, &[7, 4242], &Request::Health, &ok)
                .contains("\"ready\":true")
        );
        // The last client's hang-up may still be on its way: let the server see it.
        h.pump(Duration::from_secs(5), |_, s| s.connections() == 0);
        assert_eq!(h.server.connections(), 0);
        // Without an allowed group only root (and keel's own user) get in.
        let mut h = Harness::new("creds2", None, Limits::default());
        std::fs::set_permissions(h.server.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = error_of(&as_user(
            &mut h,
            65534,
            4242,
            &[4242],
            &Request::Health,
            &ok,
        ));
        assert!(e.contains("uid 65534 is not root"), "{e}");
    }
}
