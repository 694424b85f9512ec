//! keel's services mode, tested for real: the built binary as PID 1 of a PID namespace (and as
//! a plain subreaper), reading real configuration files, running real services that report
//! what they saw through files, with real signals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

/// A scratch directory holding `keel.toml` with `toml`, and the paths tests use.
struct Setup {
    dir: PathBuf,
}

impl Setup {
    fn new(name: &str, toml: &str) -> Setup {
        let dir = scratch(name);
        let toml = toml.replace("@DIR@", dir.to_str().unwrap());
        std::fs::write(dir.join("keel.toml"), toml).unwrap();
        std::fs::create_dir_all(dir.join("run")).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write_config(&self, toml: &str) {
        let toml = toml.replace("@DIR@", self.dir.to_str().unwrap());
        std::fs::write(self.dir.join("keel.toml"), toml).unwrap();
    }

    /// Start keel on this configuration, stdout and stderr to files (services may write a
    /// lot; a pipe the test does not read would stall them, by design).
    fn start(&self, mode: Mode, extra: &[&str]) -> Option<Running> {
        let cfg = self.path("keel.toml");
        let mut args = vec!["--config", cfg.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut cmd = command(mode, &args)?;
        cmd.env("KEEL_RUNTIME_DIR", self.path("run"))
            .env("KEEL_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.path("stdout")).unwrap())
            .stderr(std::fs::File::create(self.path("stderr")).unwrap());
        Some(spawn(cmd, mode))
    }

    fn stdout(&self) -> String {
        read(&self.path("stdout"))
    }

    fn stderr(&self) -> String {
        read(&self.path("stderr"))
    }

    /// Wait until keel's stderr has a line containing `needle`.
    fn wait_log(&self, needle: &str, timeout: Duration) {
        let ok = wait_until(timeout, || self.stderr().contains(needle));
        assert!(
            ok,
            "keel never logged '{needle}'; stderr:\n{}",
            self.stderr()
        );
    }
}

/// Stop keel with SIGTERM and return its exit code (files hold the output).
fn stop(keel: Running, timeout: Duration) -> (i32, Duration) {
    let t = Instant::now();
    send(keel.keel_pid, libc::SIGTERM);
    let f = keel.finish(timeout);
    (f.code(), t.elapsed())
}

/// Processes whose parent is `pid`.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children(p) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

fn vm_kib(pid: i32, key: &str) -> u64 {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn starts_in_order_prefixes_output_and_stops_in_reverse() {
    for mode in MODES {
        let s = Setup::new(
            "order",
            r#"
[service.init]
type = "oneshot"
command = "sleep 0.2; echo init-ran > @DIR@/init.done; echo init says hi"

[service.api]
after = ["init"]
command = "trap 'echo api >> @DIR@/stopped; exit 0' TERM; test -f @DIR@/init.done && echo api saw init; while :; do sleep 0.05; done"

[service.web]
requires = ["api"]
command = "trap 'echo web >> @DIR@/stopped; exit 0' TERM; echo web up; echo web warns >&2; while :; do sleep 0.05; done"
"#,
        );
        let Some(keel) = s.start(mode, &[]) else {
            return;
        };
        // api is ready when started, so web may print before api does: wait for both.
        let ok = wait_until(LONG, || {
            let out = s.stdout();
            out.contains("web up") && out.contains("api saw init")
        });
        assert!(
            ok,
            "{mode:?}: stdout:\n{}\nstderr:\n{}",
            s.stdout(),
            s.stderr()
        );
        let out = s.stdout();
        assert!(out.contains("init | init says hi"), "{out}");
        assert!(out.contains("api  | api saw init"), "{out}");
        assert!(out.contains("web  | web up"), "{out}");
        // stderr lines go to keel's stderr, prefixed too.
        s.wait_log("web  | web warns", LONG);
        let (code, took) = stop(keel, LONG);
        assert_eq!(code, 0, "{mode:?}: {}", s.stderr());
        assert!(took < Duration::from_secs(5), "{took:?}");
        // web requires api: web stops first.
        assert_eq!(read(&s.path("stopped")), "web\napi\n", "{mode:?}");
    }
}

#[test]
fn main_command_exit_code_ends_keel_and_stops_services() {
    for mode in MODES {
        let s = Setup::new(
            "main",
            r#"
[service.side]
command = "trap 'echo side >> @DIR@/stopped; exit 0' TERM; echo side ready > @DIR@/side; while :; do sleep 0.05; done"
ready = { exec = "test -f @DIR@/side", interval = "20ms" }
"#,
        );
        let Some(keel) = s.start(
            mode,
            &[
                "--",
                "sh",
                "-c",
                "test -f SIDE && exit 7; exit 1"
                    .replace("SIDE", s.path("side").to_str().unwrap())
                    .as_str(),
            ],
        ) else {
            return;
        };
        let f = keel.finish(LONG);
        assert_eq!(
            f.code(),
            7,
            "{mode:?}: the main command starts once the services are ready\n{}",
            s.stderr()
        );
        assert_eq!(read(&s.path("stopped")), "side\n");
    }
}

#[test]
fn restarts_with_backoff_and_gives_up_at_the_start_limit() {
    let s = Setup::new(
        "restart",
        r#"
[service.flaky]
command = "echo run >> @DIR@/runs; exit 3"
restart = "on-failure"
restart-sec = "50ms"
start-limit-burst = 4
start-limit-interval = "1m"
start-limit-action = "give-up"

[service.steady]
command = "echo run >> @DIR@/steady; exec sleep 1000"
restart = "always"
"#,
    );
    let Some(keel) = s.start(Mode::Pid1, &[]) else {
        return;
    };
    s.wait_log("gave up", LONG);
    // Exactly the burst: immediate, then 50 ms, 100 ms, then the limit.
    assert_eq!(read(&s.path("runs")).lines().count(), 4, "{}", s.stderr());
    // A healthy service killed from outside comes back at once.
    wait_until(LONG, || read(&s.path("steady")).lines().count() == 1);
    std::thread::sleep(Duration::from_millis(1100));
    let pid = descendants(keel.keel_pid)
        .into_iter()
        .find(|p| read(Path::new(&format!("/proc/{p}/cmdline"))).starts_with("sleep"))
        .expect("steady's sleep");
    let t = Instant::now();
    send(pid, libc::SIGKILL);
    assert!(wait_until(LONG, || read(&s.path("steady")).lines().count() == 2));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    let (code, _) = stop(keel, LONG);
    assert_eq!(code, 0);
}

#[test]
fn readiness_gates_dependents() {
    let s = Setup::new(
        "ready",
        r#"
[service.fdready]
command = "sleep 0.3; touch @DIR@/fd.before; echo >&3; exec sleep 1000"
ready = { notify-fd = 3 }

[service.execready]
command = "sleep 0.3; touch @DIR@/exec.before; exec sleep 1000"
ready = { exec = "test -f @DIR@/exec.before", interval = "50ms" }

[service.sdready]
type = "notify"
command = ["python3", "-c", "import os,socket,time; time.sleep(0.3); open('@DIR@/sd.before','w'); s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); a=os.environ['NOTIFY_SOCKET']; a='\\0'+a[1:] if a[0]=='@' else a; s.sendto(b'STATUS=warm\\nREADY=1', a); time.sleep(1000)"]

[service.tcpready]
command = "sleep 0.3; exec busybox nc -ll -p 47311 -e true"
ready = { tcp = 47311, interval = "50ms" }

[service.dependent]
after = ["fdready", "execready", "sdready", "tcpready"]
command = "ls @DIR@ > @DIR@/seen; exec sleep 1000"
"#,
    );
    let Some(keel) = s.start(Mode::Pid1, &[]) else {
        return;
    };
    assert!(
        wait_until(LONG, || read(&s.path("seen")).contains("sd.before")),
        "{}",
        s.stderr()
    );
    let seen = read(&s.path("seen"));
    for f in ["fd.before", "exec.before", "sd.before"] {
        assert!(seen.contains(f), "dependent started before {f}: {seen}");
    }
    for name in ["fdready", "execready", "sdready", "tcpready"] {
        assert!(
            s.stderr().contains(&format!("{name} is ready")),
            "{}",
            s.stderr()
        );
    }
    let (code, _) = stop(keel, LONG);
    assert_eq!(code, 0, "{}", s.stderr());
}

#[test]
fn stop_timeout_kills_a_term_ignoring_service_within_the_deadline() {
    let s = Setup::new(
        "stubborn",
        r#"
[keel]
shutdown-timeout = "3s"

[service.stubborn]
command = "trap '' TERM; echo up > @DIR@/up; while :; do sleep 0.05; done"
stop-timeout = "300ms"
"#,
    );
    let Some(keel) = s.start(Mode::Pid1, &[]) else {
        return;
    };
    wait_line(&s.path("up"), "up", LONG);
    let (code, took) = stop(keel, LONG);
    assert_eq!(code, 0);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(s.stderr().contains("sending SIGKILL"), "{}", s.stderr());
}

#[test]
fn sighup_reloads_adds_removes_changes_and_rejects_bad_config() {
    let s = Setup::new(
        "reload",
        r#"
[service.keep]
command = "echo $$ >> @DIR@/keep; exec sleep 1000"
[service.gone]
command = "echo $$ >> @DIR@/gone; exec sleep 1000"
[service.edit]
command = "echo v1 $$ >> @DIR@/edit; exec sleep 1000"
"#,
    );
    let Some(keel) = s.start(Mode::Pid1, &[]) else {
        return;
    };
    for f in ["keep", "gone", "edit"] {
        assert!(wait_until(LONG, || !read(&s.path(f)).is_empty()));
    }
    s.write_config(
        r#"
[service.keep]
command = "echo $$ >> @DIR@/keep; exec sleep 1000"
[service.edit]
command = "echo v2 $$ >> @DIR@/edit; exec sleep 1000"
[service.added]
command = "echo $$ >> @DIR@/added; exec sleep 1000"
"#,
    );
    send(keel.keel_pid, libc::SIGHUP);
    s.wait_log("1 added, 1 removed, 1 changed", LONG);
    assert!(wait_until(LONG, || read(&s.path("edit")).contains("v2")));
    assert!(wait_until(LONG, || !read(&s.path("added")).is_empty()));
    assert_eq!(
        read(&s.path("keep")).lines().count(),
        1,
        "unchanged: not restarted"
    );
    // A broken configuration is refused and nothing changes.
    s.write_config("[service.keep]\ncommand = 42\n");
    send(keel.keel_pid, libc::SIGHUP);
    s.wait_log("new configuration rejected", LONG);
    assert!(s.stderr().contains("keel.toml:2:"), "{}", s.stderr());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(read(&s.path("keep")).lines().count(), 1);
    let (code, _) = stop(keel, LONG);
    assert_eq!(code, 0);
}

#[test]
fn runs_services_as_their_user_with_setgid() {
    let s = Setup::new(
        "user",
        r#"
[service.who]
type = "oneshot"
user = "nobody"
command = "echo uid=$(id -u) gid=$(id -g) home=$HOME user=$USER logname=$LOGNAME"
"#,
    );
    let Some(keel) = s.start(Mode::Pid1, &[]) else {
        return;
    };
    assert!(
        wait_until(LONG, || s.stdout().contains("uid=")),
        "{}",
        s.stderr()
    );
    let out = s.stdout();
    assert!(out.contains("uid=65534 gid=65534"), "{out}");
    assert!(out.contains("user=nobody logname=nobody"), "{out}");
    let (code, _) = stop(keel, LONG);
    assert_eq!(code, 0);
}

#[test]
fn critical_service_failure_shuts_down_with_its_code() {
    let s = Setup::new(
        "critical",
        r#"
[service.core]
critical = true
command = "sleep 0.3; exit 9"
[service.other]
command = "exec sleep 1000"
"#,
    );
    let Some(keel) = s.start(Mode::Pid1, &[]) else {
        return;
    };
    let f = keel.finish(LONG);
    assert_eq!(f.code(), 9, "{}", s.stderr());
}

/// A flooding service cannot stall keel or a quiet one, and loses no line.
#[test]
fn log_flood_is_lossless_bounded_and_fair() {
    let s = Setup::new(
        "flood",
        r#"
[service.flood]
type = "oneshot"
command = "seq 1 200000"

[service.quiet]
command = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.01; done"
"#,
    );
    let Some(keel) = s.start(Mode::Plain, &[]) else {
        return;
    };
    s.wait_log("flood done", LONG);
    std::thread::sleep(Duration::from_millis(300));
    let hwm = vm_kib(keel.keel_pid, "VmHWM:");
    let (code, _) = stop(keel, LONG);
    assert_eq!(code, 0);
    let out = s.stdout();
    let nums: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("flood | "))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(nums.len(), 200_000, "lines lost or duplicated");
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "out of order");
    assert!(out.lines().any(|l| l.starts_with("quiet | tick")));
    assert!(hwm < 4096, "keel's peak RSS {hwm} KiB during the flood");
}

/// (pid, start time) of every process below `pid` right now, with its state.
fn tree(pid: i32) -> Vec<(i32, u64, char)> {
    descendants(pid)
        .into_iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let rest = stat.rsplit(')').next()?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // After the command: state is field 3, starttime field 22 (1-based in proc(5)).
            let state = fields.first()?.chars().next()?;
            let start: u64 = fields.get(19)?.parse().ok()?;
            Some((p, start, state))
        })
        .collect()
}

fn same_process_alive(pid: i32, start: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let f: Vec<String> = s
                .rsplit(')')
                .next()?
                .split_whitespace()
                .map(str::to_string)
                .collect();
            Some(f.get(19)?.parse::<u64>().ok()? == start && f[0] != "Z")
        })
        .unwrap_or(false)
}

/// The issue's chaos test: random SIGKILLs to services, a fork-happy service, a log flood
/// and a TERM-ignoring service, for a bounded time. Afterwards: no zombies were left
/// unreaped, no process leaked, no log line was lost, keel's memory came back to its
/// baseline, and keel exited 0 (a requested stop with no main command).
#[test]
fn chaos() {
    let s = Setup::new(
        "chaos",
        r#"
[keel]
shutdown-timeout = "5s"

[keel.defaults]
restart = "always"
restart-sec = "20ms"
restart-max-sec = "200ms"
start-limit-burst = 1000

[service.forky]
command = "while :; do (sleep 30 &); (sh -c 'sleep 30 &' &); sleep 0.05; done"

[service.flood]
command = "i=0; while :; do i=$((i+1)); echo \"$$ $i\"; done"

[service.stubborn]
command = "trap '' TERM; while :; do sleep 0.1; done"
stop-timeout = "500ms"

[service.steady]
command = "exec sleep 1000"
"#,
    );
    let Some(keel) = s.start(Mode::Plain, &[]) else {
        return;
    };
    let kp = keel.keel_pid;
    assert!(
        wait_until(LONG, || s.stdout().contains("flood")),
        "{}",
        s.stderr()
    );
    std::thread::sleep(Duration::from_millis(500));
    let baseline = vm_kib(kp, "VmRSS:");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("chaos seed {seed}");
    let mut rnd = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut seen: Vec<(i32, u64)> = Vec::new();
    let mut zombies: Vec<(i32, u64, Instant)> = Vec::new();
    let mut kills = 0;
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end {
        let t = tree(kp);
        for &(p, st, state) in &t {
            if !seen.contains(&(p, st)) {
                seen.push((p, st));
            }
            if state == 'Z' && !zombies.iter().any(|z| z.0 == p && z.1 == st) {
                zombies.push((p, st, Instant::now()));
            }
        }
        // A zombie may exist for a moment; one that stays is a reaping bug.
        for &(p, st, since) in &zombies {
            let still = tree(kp)
                .iter()
                .any(|&(q, qs, qst)| q == p && qs == st && qst == 'Z');
            assert!(
                !(still && since.elapsed() > Duration::from_millis(500)),
                "pid {p} stayed a zombie for {:?}",
                since.elapsed()
            );
        }
        zombies.retain(|z| z.2.elapsed() < Duration::from_secs(2));
        let live: Vec<i32> = t.iter().filter(|x| x.2 != 'Z').map(|x| x.0).collect();
        if !live.is_empty() {
            let victim = live[rnd(live.len())];
            // SAFETY: plain syscall on a process of this test's keel.
            unsafe { libc::kill(victim, libc::SIGKILL) };
            kills += 1;
        }
        std::thread::sleep(Duration::from_millis(20 + rnd(60) as u64));
    }
    // Let the restarts settle, then compare memory with the baseline.
    std::thread::sleep(Duration::from_millis(1500));
    let after = vm_kib(kp, "VmRSS:");
    assert!(
        after <= baseline + baseline / 4 + 1024,
        "keel's RSS grew from {baseline} KiB to {after} KiB"
    );
    for (p, st) in tree(kp).into_iter().map(|(p, st, _)| (p, st)) {
        if !seen.contains(&(p, st)) {
            seen.push((p, st));
        }
    }
    let (code, took) = stop(keel, LONG);
    assert_eq!(
        code,
        0,
        "{}",
        s.stderr()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(took < Duration::from_secs(9), "stop took {took:?}");
    let leaked: Vec<i32> = seen
        .iter()
        .filter(|(p, st)| same_process_alive(*p, *st))
        .map(|x| x.0)
        .collect();
    assert!(leaked.is_empty(), "processes outlived keel: {leaked:?}");
    // Every flood instance's lines arrived gap-free: nothing lost, nothing duplicated.
    let out = s.stdout();
    let mut last: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    let mut lines = 0u64;
    for l in out.lines() {
        let Some(rest) = l.strip_prefix("flood    | ") else {
            continue;
        };
        let mut it = rest.split(' ');
        let (Some(pid), Some(n)) = (it.next(), it.next()) else {
            panic!("malformed line {l:?}");
        };
        let (pid, n): (u32, u64) = (pid.parse().unwrap(), n.parse().unwrap());
        let prev = last.insert(pid, n).unwrap_or(0);
        assert_eq!(n, prev + 1, "instance {pid}: line {n} after {prev}");
        lines += 1;
    }
    assert!(lines > 1000, "the flood printed only {lines} lines");
    eprintln!(
        "chaos: {kills} kills, {} processes seen, {} flood instances, {lines} lines, RSS {baseline} -> {after} KiB",
        seen.len(),
        last.len()
    );
}

#[test]
fn environment_directory_umask_and_file_output() {
    let s = Setup::new(
        "env",
        r#"
[service.envy]
type = "oneshot"
inherit-environment = false
env-file = "@DIR@/env"
environment = { FROM_TABLE = "table", SHARED = "table-wins" }
working-directory = "@DIR@/work"
umask = "027"
rlimits = { nofile = 123 }
output = "@DIR@/envy.log"
command = "echo table=$FROM_TABLE file=$FROM_FILE shared=$SHARED keel=${KEEL_LOG:-unset} pwd=$(pwd) umask=$(umask) nofile=$(ulimit -n)"

[service.raw]
type = "oneshot"
output = "inherit"
command = "echo raw line"
"#,
    );
    std::fs::create_dir_all(s.path("work")).unwrap();
    std::fs::write(s.path("env"), "FROM_FILE=file\nSHARED=file\n# comment\n").unwrap();
    let Some(keel) = s.start(Mode::Pid1, &[]) else {
        return;
    };
    assert!(
        wait_until(LONG, || read(&s.path("envy.log")).contains("table=")),
        "{}",
        s.stderr()
    );
    let line = read(&s.path("envy.log"));
    let work = s.path("work");
    assert_eq!(
        line.trim(),
        format!(
            "table=table file=file shared=table-wins keel=unset pwd={} umask=0027 nofile=123",
            work.display()
        )
    );
    // inherit: the line is the service's own, unprefixed, on keel's stdout.
    assert!(wait_until(LONG, || s
        .stdout()
        .lines()
        .any(|l| l == "raw line")));
    // Nothing runs any more: the stop is immediate (no wait for a SIGCHLD that cannot come).
    let (code, took) = stop(keel, LONG);
    assert_eq!(code, 0);
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn prefixes_are_aligned_from_the_first_line() {
    let s = Setup::new(
        "align",
        r#"
[service.a]
type = "oneshot"
command = "echo first"

[service.much-longer-name]
after = ["a"]
type = "oneshot"
command = "echo second"
"#,
    );
    let Some(keel) = s.start(Mode::Plain, &[]) else {
        return;
    };
    assert!(
        wait_until(LONG, || s.stdout().contains("second")),
        "{}",
        s.stderr()
    );
    let (code, _) = stop(keel, LONG);
    assert_eq!(code, 0);
    assert_eq!(
        s.stdout(),
        "a                | first\nmuch-longer-name | second\n"
    );
}
