//! `keel ctl`: the client of the control socket (`docs/CONTROL.md`).
//!
//! Owns: `keel ctl`'s command line, talking to a running keel over its control socket, and
//! presenting the answers (the status table, log lines, health verdicts) and exit codes.
//! Must not: run as or near PID 1 (this is an ordinary short-lived process, so it may block
//! on its socket, with timeouts), or define the protocol (that is `control.rs`).

use crate::control::{self, LogLine, Request, Response, ServiceStatus};
use crate::frontend::Env;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code: the command did what was asked (for `health`/`wait-ready`: everything ready).
pub const EXIT_OK: u8 = 0;
/// Exit code: keel refused or failed the command, or something is not ready.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad `keel ctl` command line.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: keel could not be reached (no socket, permission, timeout, garbled answer).
pub const EXIT_UNREACHABLE: u8 = 3;

/// How long to wait for an answer to a command that answers at once.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The help text.
pub const HELP: &str = "\
Usage: keel ctl [--socket PATH] COMMAND [ARGS...]

Commands:
  status [--json]                 every service: state, pid, uptime, restarts, last exit,
                                  readiness, memory/CPU/pids/OOM kills from its cgroup
  start NAME...                   start services
  stop NAME...                    stop services
  restart NAME...                 restart services
  signal NAME SIG                 send a signal (TERM, SIGHUP, 10, RTMIN+1) to a service
  logs NAME [-n N] [-f]           the last N (default 100) lines of a service's output;
                                  -f: then follow new lines
  reload                          read the configuration again and apply the changes
  shutdown                        stop every service and exit (as on SIGTERM)
  wait-ready [NAME...] [--timeout D]
                                  wait until the services (default: all) are ready
  health                          exit 0 iff every service that should be ready is ready

Options:
  -s, --socket PATH   the control socket (default $KEEL_RUNTIME_DIR/control.sock,
                      KEEL_RUNTIME_DIR defaulting to /run/keel)
      --json          print keel's raw JSON answer
  -h, --help          this help

Exit codes: 0 done (healthy, ready), 1 failed or not ready, 2 usage, 3 cannot reach keel.
";

/// A parsed `keel ctl` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The control socket.
    pub socket: PathBuf,
    /// Print the raw JSON answer instead of a table or text.
    pub json: bool,
    /// What to ask.
    pub request: Request,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Talk to keel.
    Run(Invocation),
    /// Print the help.
    Help,
}

/// Parse `keel ctl`'s arguments (after `ctl`). Options may come before or after the
/// command's own arguments; `--` ends options.
pub fn parse_args(args: &[OsString], env: Env) -> Result<Parsed, String> {
    let mut socket = None;
    let mut json = false;
    let mut n = None;
    let mut follow = false;
    let mut timeout = None;
    let mut words: Vec<String> = Vec::new();
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    let mut only_words = false;
    while let Some(a) = it.next() {
        if only_words || !a.starts_with('-') || a == "-" {
            words.push(a);
            continue;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--" => only_words = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            "-s" | "--socket" => socket = Some(PathBuf::from(value(&flag)?)),
            "--json" => json = true,
            "-f" | "--follow" => follow = true,
            "-n" | "--lines" => {
                let v = value(&flag)?;
                n = Some(
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("{flag}: '{v}' is not a number of lines"))?,
                );
            }
            "-t" | "--timeout" => {
                let v = value(&flag)?;
                timeout = Some(crate::duration::parse(&v).map_err(|e| format!("{flag}: {e}"))?);
            }
            _ if flag.starts_with("-n") && flag.len() > 2 => {
                let v = &flag[2..];
                n = Some(
                    v.parse::<usize>()
                        .map_err(|_| format!("-n: '{v}' is not a number of lines"))?,
                );
            }
            _ => return Err(format!("unknown option '{a}'")),
        }
    }
    let Some((cmd, rest)) = words.split_first() else {
        return Err("no command given".into());
    };
    let rest = rest.to_vec();
    let none = |what: &str| -> Result<(), String> {
        if rest.is_empty() {
            Ok(())
        } else {
            Err(format!("{what} takes no arguments"))
        }
    };
    let names = |what: &str| -> Result<Vec<String>, String> {
        if rest.is_empty() {
            Err(format!("{what} needs at least one service name"))
        } else {
            Ok(rest.clone())
        }
    };
    let request = match cmd.as_str() {
        "status" => none("status").map(|_| Request::Status)?,
        "start" => Request::Start(names("start")?),
        "stop" => Request::Stop(names("stop")?),
        "restart" => Request::Restart(names("restart")?),
        "signal" | "kill" => match rest.as_slice() {
            [name, sig] => Request::Signal {
                name: name.clone(),
                sig: crate::signals::parse(sig).map_err(|e| format!("signal: {e}"))?,
            },
            _ => return Err("signal needs a service name and a signal: signal NAME SIG".into()),
        },
        "logs" => match rest.as_slice() {
            [name] => Request::Logs {
                name: name.clone(),
                n: n.unwrap_or(control::DEFAULT_LOG_LINES),
                follow,
            },
            _ => return Err("logs needs exactly one service name".into()),
        },
        "reload" => none("reload").map(|_| Request::Reload)?,
        "shutdown" => none("shutdown").map(|_| Request::Shutdown)?,
        "wait-ready" => Request::WaitReady {
            names: rest.clone(),
            timeout_ms: timeout.map(|t: Duration| t.as_millis().min(u64::MAX.into()) as u64),
        },
        "health" => none("health").map(|_| Request::Health)?,
        other => return Err(format!("unknown command '{other}'")),
    };
    if (n.is_some() || follow) && !matches!(request, Request::Logs { .. }) {
        return Err("-n and -f are for logs".into());
    }
    if timeout.is_some() && !matches!(request, Request::WaitReady { .. }) {
        return Err("--timeout is for wait-ready".into());
    }
    Ok(Parsed::Run(Invocation {
        socket: socket.unwrap_or_else(|| control::default_socket(env)),
        json,
        request,
    }))
}

/// Why talking to keel failed.
#[derive(Debug)]
pub struct Unreachable(pub String);

/// Say why connecting to `path` failed, in words an operator can act on.
pub fn connect_error(path: &Path, errno: i32) -> String {
    let p = path.display();
    match errno {
        libc::ENOENT => format!(
            "cannot connect to keel at {p}: no such socket (is keel running with services? \
             use --socket or KEEL_RUNTIME_DIR if it uses another runtime directory)"
        ),
        libc::EACCES | libc::EPERM => format!(
            "cannot connect to keel at {p}: permission denied (the socket is for root and \
             keel's control group; try as root, e.g. docker exec -u 0)"
        ),
        libc::ECONNREFUSED => format!(
            "cannot connect to keel at {p}: connection refused (a stale socket: keel is not running)"
        ),
        e => format!("cannot connect to keel at {p}: {}", crate::sys::strerror(e)),
    }
}

/// A connection to keel's control socket.
pub struct Client {
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connect to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, Unreachable> {
        let stream = UnixStream::connect(path)
            .map_err(|e| Unreachable(connect_error(path, e.raw_os_error().unwrap_or(libc::EIO))))?;
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    /// Send `req`, wait at most `timeout` (`None`: for ever) for the answer line.
    pub fn call(
        &mut self,
        req: &Request,
        timeout: Option<Duration>,
    ) -> Result<Response, Unreachable> {
        let line = req.encode();
        let fd = self.reader.get_ref().as_raw_fd();
        let mut buf = line.as_bytes();
        while !buf.is_empty() {
            // MSG_NOSIGNAL: keel may have closed the connection already (it refuses a peer
            // with one line, then closes); that answer is still to be read, not a SIGPIPE.
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
            if n < 0 {
                let e = crate::sys::errno();
                if e == libc::EINTR {
                    continue;
                }
                if e == libc::EPIPE || e == libc::ECONNRESET {
                    break; // read what keel said before it closed
                }
                return Err(Unreachable(format!(
                    "cannot send to keel: {}",
                    crate::sys::strerror(e)
                )));
            }
            buf = buf.get(n as usize..).unwrap_or_default();
        }
        let text = self.read_line(timeout)?;
        Response::decode(text.as_bytes())
            .map_err(|e| Unreachable(format!("keel sent an answer this client cannot read: {e}")))
    }

    /// The next line from keel (without newline); EOF is an error.
    pub fn read_line(&mut self, timeout: Option<Duration>) -> Result<String, Unreachable> {
        self.reader
            .get_ref()
            .set_read_timeout(timeout.filter(|t| !t.is_zero()))
            .map_err(|e| Unreachable(format!("cannot set a timeout: {e}")))?;
        let mut text = String::new();
        match self.reader.read_line(&mut text) {
            Ok(0) => Err(Unreachable(
                "keel closed the connection without an answer".into(),
            )),
            Ok(_) => {
                if text.ends_with('\n') {
                    text.pop();
                }
                Ok(text)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(Unreachable(format!(
                    "keel did not answer within {} s",
                    timeout.unwrap_or_default().as_secs()
                )))
            }
            Err(e) => Err(Unreachable(format!("cannot read keel's answer: {e}"))),
        }
    }
}

/// One request, one answer: connect to `path`, send `req`, return keel's response. For
/// scripts and tests (the end-to-end tests drive a real keel with it).
pub fn call(path: &Path, req: &Request, timeout: Option<Duration>) -> Result<Response, String> {
    Client::connect(path)
        .and_then(|mut c| c.call(req, timeout))
        .map_err(|e| e.0)
}

/// Run `keel ctl` with its arguments (after `ctl`); prints and returns the exit code.
pub fn main(args: &[OsString], env: Env) -> u8 {
    let inv = match parse_args(args, env) {
        Ok(Parsed::Run(inv)) => inv,
        Ok(Parsed::Help) => {
            let _ = std::io::stdout().write_all(HELP.as_bytes());
            return EXIT_OK;
        }
        Err(e) => {
            eprintln!("keel ctl: {e} (see 'keel ctl --help')");
            return EXIT_USAGE;
        }
    };
    match run(&inv) {
        Ok(code) => code,
        Err(Unreachable(e)) => {
            eprintln!("keel ctl: {e}");
            EXIT_UNREACHABLE
        }
    }
}

fn run(inv: &Invocation) -> Result<u8, Unreachable> {
    let mut client = Client::connect(&inv.socket)?;
    let timeout = match &inv.request {
        // keel answers a wait when it is over: allow that plus the usual margin.
        Request::WaitReady { timeout_ms, .. } => {
            timeout_ms.map(|t| Duration::from_millis(t).saturating_add(REPLY_TIMEOUT))
        }
        _ => Some(REPLY_TIMEOUT),
    };
    let resp = client.call(&inv.request, timeout)?;
    let mut out = std::io::stdout().lock();
    if inv.json {
        let mut text = resp.encode();
        if let Request::Logs { follow: true, .. } = inv.request {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            loop {
                match client.read_line(None) {
                    Ok(l) => text = l + "\n",
                    Err(_) => return Ok(EXIT_OK),
                }
                if out
                    .write_all(text.as_bytes())
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    return Ok(EXIT_OK);
                }
            }
        }
        let _ = out.write_all(text.as_bytes());
        return Ok(exit_code(&inv.request, &resp));
    }
    match (&inv.request, &resp) {
        (_, Response::Error(e)) => {
            eprintln!("keel ctl: {e}");
            return Ok(EXIT_FAILED);
        }
        (_, Response::Status(list)) => {
            let _ = out.write_all(format_table(list).as_bytes());
        }
        (Request::Logs { follow, .. }, Response::Logs(lines)) => {
            for l in lines {
                let _ = writeln!(out, "{}", l.text);
            }
            let _ = out.flush();
            if *follow {
                loop {
                    let Ok(text) = client.read_line(None) else {
                        // keel closed the stream (it exited, or dropped a reader that fell
                        // too far behind).
                        return Ok(EXIT_OK);
                    };
                    let line: LogLine = control::decode_stream_line(text.as_bytes())
                        .map_err(|e| Unreachable(format!("garbled log line from keel: {e}")))?;
                    if writeln!(out, "{}", line.text)
                        .and_then(|_| out.flush())
                        .is_err()
                    {
                        return Ok(EXIT_OK);
                    }
                }
            }
        }
        (Request::Health, Response::Readiness { ready, not_ready }) => {
            if *ready {
                let _ = writeln!(out, "healthy");
            } else {
                let _ = writeln!(out, "unhealthy: not ready: {}", not_ready.join(", "));
            }
        }
        (
            Request::WaitReady { .. },
            Response::Readiness {
                ready: false,
                not_ready,
            },
        ) => {
            eprintln!("keel ctl: not ready: {}", not_ready.join(", "));
        }
        _ => {}
    }
    Ok(exit_code(&inv.request, &resp))
}

fn exit_code(_req: &Request, resp: &Response) -> u8 {
    match resp {
        Response::Error(_) => EXIT_FAILED,
        Response::Readiness { ready: false, .. } => EXIT_FAILED,
        _ => EXIT_OK,
    }
}

/// `status` as an aligned table, one service per line, `-` for what is unknown.
pub fn format_table(list: &[ServiceStatus]) -> String {
    const HEAD: [&str; 11] = [
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST-EXIT",
        "READY",
        "MEM",
        "CPU",
        "PIDS",
        "OOM",
    ];
    let dash = || "-".to_string();
    let opt = |v: Option<u64>| v.map_or_else(dash, |v| v.to_string());
    let mut rows: Vec<[String; 11]> = vec![HEAD.map(str::to_string)];
    for s in list {
        rows.push([
            s.name.clone(),
            s.state.clone(),
            s.pid.map_or_else(dash, |p| p.to_string()),
            s.uptime_ms.map_or_else(dash, human_duration),
            s.restarts.to_string(),
            s.last_exit.clone().unwrap_or_else(dash),
            if s.ready { "yes" } else { "no" }.to_string(),
            s.memory_bytes.map_or_else(dash, human_bytes),
            s.cpu_usec.map_or_else(dash, human_cpu),
            opt(s.pids),
            opt(s.oom_kills),
        ]);
    }
    let mut widths = [0usize; 11];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            line.extend(std::iter::repeat_n(' ', w - c.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `42s`, `5m03s`, `2h05m`, `3d04h`.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `512B`, `1.5K`, `230M`, `1.2G` (binary units, one decimal below 10).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if b < 1024 {
        return format!("{b}B");
    }
    // Tenths of the unit, in integers (u128: no overflow at u64::MAX).
    let mut tenths = u128::from(b) * 10 / 1024;
    let mut unit = 0;
    while tenths >= 10 * 1024 && unit + 1 < UNITS.len() {
        tenths /= 1024;
        unit += 1;
    }
    let u = UNITS.get(unit).copied().unwrap_or("?");
    if tenths < 100 {
        format!("{}.{}{u}", tenths / 10, tenths % 10)
    } else {
        format!("{}{u}", tenths / 10)
    }
}

/// CPU time: `0.52s` below a minute, else like an uptime.
pub fn human_cpu(usec: u64) -> String {
    if usec < 60_000_000 {
        format!("{}.{:02}s", usec / 1_000_000, usec % 1_000_000 / 10_000)
    } else {
        human_duration(usec / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ControlServer, Limits};
    use crate::sys::Epoll;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse_args(&args, &|k| {
            (k == "KEEL_RUNTIME_DIR").then(|| OsString::from("/tmp/rt"))
        })
    }

    fn req(args: &[&str]) -> Request {
        match parse(args) {
            Ok(Parsed::Run(inv)) => inv.request,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn command_lines() {
        match parse(&["status"]).unwrap() {
            Parsed::Run(inv) => {
                assert_eq!(inv.socket, PathBuf::from("/tmp/rt/control.sock"));
                assert!(!inv.json);
                assert_eq!(inv.request, Request::Status);
            }
            Parsed::Help => panic!(),
        }
        match parse(&["--socket", "/x.sock", "status", "--json"]).unwrap() {
            Parsed::Run(inv) => assert!(inv.json && inv.socket == Path::new("/x.sock")),
            Parsed::Help => panic!(),
        }
        match parse(&["-s=/y", "health"]) {
            Err(e) => assert!(e.contains("unknown option '-s=/y'"), "{e}"),
            Ok(p) => panic!("{p:?}"),
        }
        assert_eq!(parse(&["--help"]), Ok(Parsed::Help));
        assert_eq!(parse(&["status", "-h"]), Ok(Parsed::Help));
        assert_eq!(
            req(&["start", "a", "b"]),
            Request::Start(vec!["a".into(), "b".into()])
        );
        assert_eq!(req(&["stop", "a"]), Request::Stop(vec!["a".into()]));
        assert_eq!(
            req(&["restart", "--", "-odd"]),
            Request::Restart(vec!["-odd".into()])
        );
        assert_eq!(
            req(&["signal", "web", "SIGHUP"]),
            Request::Signal {
                name: "web".into(),
                sig: 1
            }
        );
        assert_eq!(
            req(&["signal", "web", "rtmin+1"]),
            Request::Signal {
                name: "web".into(),
                sig: 35
            }
        );
        assert_eq!(
            req(&["signal", "web", "9"]),
            Request::Signal {
                name: "web".into(),
                sig: 9
            }
        );
        assert_eq!(
            req(&["logs", "web"]),
            Request::Logs {
                name: "web".into(),
                n: control::DEFAULT_LOG_LINES,
                follow: false
            }
        );
        assert_eq!(
            req(&["logs", "-n", "5", "web", "-f"]),
            Request::Logs {
                name: "web".into(),
                n: 5,
                follow: true
            }
        );
        assert_eq!(
            req(&["logs", "-n20", "web"]),
            Request::Logs {
                name: "web".into(),
                n: 20,
                follow: false
            }
        );
        assert_eq!(req(&["reload"]), Request::Reload);
        assert_eq!(req(&["shutdown"]), Request::Shutdown);
        assert_eq!(req(&["health"]), Request::Health);
        assert_eq!(
            req(&["wait-ready"]),
            Request::WaitReady {
                names: vec![],
                timeout_ms: None
            }
        );
        assert_eq!(
            req(&["wait-ready", "db", "--timeout", "1m30s"]),
            Request::WaitReady {
                names: vec!["db".into()],
                timeout_ms: Some(90_000)
            }
        );
        assert_eq!(
            req(&["wait-ready", "--timeout=500ms"]),
            Request::WaitReady {
                names: vec![],
                timeout_ms: Some(500)
            }
        );
        let errors: &[(&[&str], &str)] = &[
            (&[], "no command given"),
            (&["frobnicate"], "unknown command 'frobnicate'"),
            (&["start"], "start needs at least one service name"),
            (&["status", "web"], "status takes no arguments"),
            (&["signal", "web"], "signal NAME SIG"),
            (&["signal", "web", "FOO"], "'FOO' is not a signal"),
            (&["logs"], "exactly one service name"),
            (&["logs", "-n", "many", "web"], "'many' is not a number"),
            (&["logs", "-n"], "-n needs a value"),
            (&["status", "-f"], "-n and -f are for logs"),
            (
                &["health", "--timeout", "1s"],
                "--timeout is for wait-ready",
            ),
            (
                &["wait-ready", "--timeout", "soon"],
                "'soon' is not a duration",
            ),
            (&["--socket"], "--socket needs a value"),
            (&["status", "--yolo"], "unknown option '--yolo'"),
        ];
        for (args, want) in errors {
            let e = parse(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn status_table_is_aligned() {
        let list = vec![
            ServiceStatus {
                name: "web".into(),
                state: "running".into(),
                pid: Some(1234),
                uptime_ms: Some(3_723_000),
                restarts: 2,
                last_exit: Some("exit 1".into()),
                ready: true,
                status_text: None,
                memory_bytes: Some(25 * 1024 * 1024 + 300 * 1024),
                cpu_usec: Some(1_520_000),
                pids: Some(4),
                oom_kills: Some(0),
            },
            ServiceStatus {
                name: "database-long".into(),
                state: "backoff".into(),
                ..Default::default()
            },
        ];
        let t = format_table(&list);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "NAME           STATE    PID   UPTIME  RESTARTS  LAST-EXIT  READY  MEM  CPU    PIDS  OOM"
        );
        assert_eq!(
            lines[1],
            "web            running  1234  1h02m   2         exit 1     yes    25M  1.52s  4     0"
        );
        assert_eq!(
            lines[2],
            "database-long  backoff  -     -       0         -          no     -    -      -     -"
        );
        // Every column starts at the same offset on every line.
        for col in ["STATE", "PID", "READY", "OOM"] {
            let at = lines[0].find(col).unwrap();
            assert!(
                lines[1..]
                    .iter()
                    .all(|l| l.len() > at && &l[at - 2..at] == "  ")
            );
        }
        assert_eq!(
            format_table(&[]),
            "NAME  STATE  PID  UPTIME  RESTARTS  LAST-EXIT  READY  MEM  CPU  PIDS  OOM\n"
        );
    }

    #[test]
    fn human_units() {
        assert_eq!(human_duration(999), "0s");
        assert_eq!(human_duration(59_999), "59s");
        assert_eq!(human_duration(60_000), "1m00s");
        assert_eq!(human_duration(3_599_000), "59m59s");
        assert_eq!(human_duration(90_061_000), "1d01h");
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1536), "1.5K");
        assert_eq!(human_bytes(230 * 1024 * 1024), "230M");
        assert_eq!(human_bytes(1288490188), "1.1G");
        assert_eq!(human_bytes(u64::MAX), "16383P");
        assert_eq!(human_cpu(5), "0.00s");
        assert_eq!(human_cpu(59_990_000), "59.99s");
        assert_eq!(human_cpu(61_000_000), "1m01s");
    }

    #[test]
    fn unreachable_keel_is_explained() {
        let missing = Path::new("/tmp/keel-ctl-no-such-dir/control.sock");
        let e = Client::connect(missing).err().unwrap().0;
        assert!(
            e.contains("/tmp/keel-ctl-no-such-dir/control.sock") && e.contains("no such socket"),
            "{e}"
        );
        assert!(connect_error(missing, libc::EACCES).contains("permission denied"));
        // A stale socket file: nobody listens.
        let dir = std::env::temp_dir().join(format!("keel-ctl-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("control.sock");
        let _ = std::fs::remove_file(&p);
        drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
        let e = Client::connect(&p).err().unwrap().0;
        assert!(e.contains("connection refused"), "{e}");
        let args: Vec<OsString> = ["--socket", p.to_str().unwrap(), "health"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(main(&args, &|_| None), EXIT_UNREACHABLE);
        let args: Vec<OsString> = ["bogus"].iter().map(OsString::from).collect();
        assert_eq!(main(&args, &|_| None), EXIT_USAGE);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A control server on its own thread answering with `answer(request)`; the client under
    /// test runs on the test thread. Returns the socket path and a stop flag.
    fn serve(
        name: &str,
        answer: fn(&Request) -> Vec<Response>,
    ) -> (PathBuf, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let dir = std::env::temp_dir().join(format!("keel-ctl-{}-{name}", std::process::id()));
        let path = dir.join("control.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (path.clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let epoll = Epoll::new().unwrap();
            let mut server = ControlServer::bind_with(&p, None, &epoll, Limits::default()).unwrap();
            tx.send(()).unwrap();
            let mut tokens = Vec::new();
            while !s.load(Ordering::Relaxed) {
                epoll.wait(&mut tokens, 20).unwrap();
                let now = Instant::now();
                for &t in &tokens {
                    for (id, req) in server.on_event(&epoll, t, now) {
                        let mut answers = answer(&req).into_iter();
                        if let Some(first) = answers.next() {
                            server.reply(&epoll, id, &first);
                        }
                        // Later ones are streamed log lines.
                        for r in answers {
                            if let Response::Logs(lines) = r {
                                for l in lines {
                                    server.stream(&epoll, id, &l);
                                }
                            }
                        }
                    }
                }
                server.on_timer(&epoll, Instant::now());
            }
        });
        rx.recv().unwrap();
        (path, stop, t)
    }

    fn run_ctl(path: &Path, args: &[&str]) -> u8 {
        let mut all: Vec<OsString> = vec!["--socket".into(), path.into()];
        all.extend(args.iter().map(OsString::from));
        main(&all, &|_| None)
    }

    #[test]
    fn exit_codes_against_a_real_server() {
        let (path, stop, t) = serve("codes", |req| match req {
            Request::Health => vec![Response::Readiness {
                ready: false,
                not_ready: vec!["db".into()],
            }],
            Request::WaitReady { names, .. } if names.is_empty() => {
                vec![Response::Readiness {
                    ready: true,
                    not_ready: vec![],
                }]
            }
            Request::WaitReady { names, .. } => {
                vec![Response::Readiness {
                    ready: false,
                    not_ready: names.clone(),
                }]
            }
            Request::Status => vec![Response::Status(vec![ServiceStatus {
                name: "db".into(),
                state: "starting".into(),
                ..Default::default()
            }])],
            Request::Start(names) if names[0] == "nope" => {
                vec![Response::Error("no service \"nope\"".into())]
            }
            Request::Logs { follow: true, .. } => vec![
                Response::Logs(vec![LogLine {
                    stderr: false,
                    text: "old".into(),
                }]),
                Response::Logs(vec![LogLine {
                    stderr: true,
                    text: "new".into(),
                }]),
            ],
            Request::Logs { .. } => vec![Response::Logs(vec![LogLine {
                stderr: false,
                text: "old".into(),
            }])],
            _ => vec![Response::Ok],
        });
        assert_eq!(run_ctl(&path, &["health"]), EXIT_FAILED);
        assert_eq!(run_ctl(&path, &["wait-ready"]), EXIT_OK);
        assert_eq!(
            run_ctl(&path, &["wait-ready", "db", "--timeout", "1s"]),
            EXIT_FAILED
        );
        assert_eq!(run_ctl(&path, &["status"]), EXIT_OK);
        assert_eq!(run_ctl(&path, &["status", "--json"]), EXIT_OK);
        assert_eq!(run_ctl(&path, &["start", "nope"]), EXIT_FAILED);
        assert_eq!(run_ctl(&path, &["restart", "db"]), EXIT_OK);
        assert_eq!(run_ctl(&path, &["logs", "db"]), EXIT_OK);
        // The one-shot helper, and a follow stream read line by line.
        assert_eq!(
            call(&path, &Request::Health, Some(Duration::from_secs(5))),
            Ok(Response::Readiness {
                ready: false,
                not_ready: vec!["db".into()]
            })
        );
        let mut c = Client::connect(&path).unwrap();
        let first = c
            .call(
                &Request::Logs {
                    name: "db".into(),
                    n: 1,
                    follow: true,
                },
                Some(Duration::from_secs(5)),
            )
            .unwrap();
        assert_eq!(
            first,
            Response::Logs(vec![LogLine {
                stderr: false,
                text: "old".into()
            }])
        );
        let next = c.read_line(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            control::decode_stream_line(next.as_bytes()),
            Ok(LogLine {
                stderr: true,
                text: "new".into()
            })
        );
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        // The server is gone: its socket file went with it.
        assert_eq!(run_ctl(&path, &["health"]), EXIT_UNREACHABLE);
    }
}
