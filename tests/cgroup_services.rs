//! keel's per-service cgroups end to end on this host: the built binary as PID 1 of a PID
//! namespace, a real configuration file, real limits enforced by the kernel (an OOM kill, a
//! fork bomb at `tasks-max`, a CPU quota), daemons that escape their session, `keel ctl
//! status` usage columns, a read-only cgroupfs, and `keel check` on bad limits.
//!
//! keel creates its service cgroups beneath its own cgroup in every hierarchy, which is this
//! test process's (keel does not move on a hybrid or v1 host). Service names carry this
//! process's pid, so parallel tests and leftovers of earlier runs never collide, and every
//! test asserts that no cgroup directory of its services is left. Skips (with the reason)
//! without root or usable cgroups, and on a pure cgroup v2 host (there keel would move this
//! test runner into its `init` leaf; tests/vm.rs covers v2); `KEEL_TEST_REQUIRE=all` or
//! `=cgroup` turns the skip into a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use keel::cgroup::{Detection, Kind};
use keel::control::{Response, ServiceStatus};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(15);

/// Held by the tests that load the CPUs (the OOM storm, the fork bomb) and by the one that
/// measures CPU time: on a small machine they would skew the measurement.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether keel can make service cgroups here; otherwise skip (or fail when required).
fn usable() -> bool {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        skip("cgroup", "not root: keel cannot create cgroups");
        return false;
    }
    let det = Detection::probe();
    if det.kind == Kind::Unified {
        skip(
            "cgroup",
            "pure cgroup v2 host: keel would move this test runner into its init leaf \
             (tests/vm.rs covers v2)",
        );
        return false;
    }
    if let Some(p) = det.problem() {
        skip("cgroup", &format!("no usable cgroups here: {}", p.cause));
        return false;
    }
    true
}

thread_local! {
    /// The cgroup of its own the running test's keel was started in (each test runs on its
    /// own thread), beneath this process's cgroup in every hierarchy: keel makes service
    /// cgroups only in a cgroup it does not share.
    static LEAF: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// `dir/LEAF` while a test's keel has a cgroup of its own.
fn in_leaf(dir: PathBuf) -> PathBuf {
    LEAF.with(|l| match l.borrow().as_deref() {
        Some(leaf) => dir.join(leaf),
        None => dir,
    })
}

/// A service name unique to this test run.
fn uniq(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// One cgroup hierarchy: its label (`memory`, `cpu,cpuacct`, `name=systemd`, or `unified`)
/// and this process's (so keel's) cgroup directory in it.
struct Hier {
    label: String,
    dir: PathBuf,
}

/// Every cgroup hierarchy mounted here, from /proc/self/mountinfo and /proc/self/cgroup.
fn hierarchies() -> Vec<Hier> {
    let info = read(Path::new("/proc/self/mountinfo"));
    let mounts: Vec<(PathBuf, String, String, Vec<String>)> = info
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut pre = pre.split(' ');
            let root = pre.nth(3)?.to_string();
            let mp = pre.next()?;
            let mut post = post.split(' ');
            let fstype = post.next()?.to_string();
            let opts = post.nth(1)?.split(',').map(String::from).collect();
            Some((PathBuf::from(mp), root, fstype, opts))
        })
        .filter(|(_, _, t, _)| t == "cgroup" || t == "cgroup2")
        .collect();
    let mut out = Vec::new();
    for l in read(Path::new("/proc/self/cgroup")).lines() {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or("/"));
        let m = mounts.iter().find(|(_, _, t, opts)| {
            if ctrls.is_empty() {
                t == "cgroup2"
            } else {
                t == "cgroup" && ctrls.split(',').all(|c| opts.iter().any(|o| o == c))
            }
        });
        if let Some((mp, root, _, _)) = m {
            let rel = path
                .strip_prefix(root.as_str())
                .unwrap_or(path)
                .trim_start_matches('/');
            out.push(Hier {
                label: if ctrls.is_empty() {
                    "unified".into()
                } else {
                    ctrls.into()
                },
                dir: in_leaf(mp.join(rel)),
            });
        }
    }
    out
}

/// Service `name`'s cgroup directory in the hierarchy holding `controller` (or `unified`).
fn cg_dir(controller: &str, name: &str) -> Option<PathBuf> {
    hierarchies()
        .into_iter()
        .find(|h| h.label.split(',').any(|c| c == controller))
        .map(|h| h.dir.join(name))
}

/// The hierarchies keel puts a service in on this host (those mounted of these).
const USED: [&str; 7] = [
    "unified", "memory", "cpu", "cpuacct", "pids", "blkio", "freezer",
];

/// Assert that host pid `pid` is in service `name`'s cgroup in every hierarchy keel uses.
fn assert_in_cgroups(pid: i32, name: &str) {
    let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
    let mine = read(Path::new("/proc/self/cgroup"));
    for h in hierarchies() {
        if !h.label.split(',').any(|c| USED.contains(&c)) {
            continue;
        }
        let ctrls = if h.label == "unified" { "" } else { &h.label };
        let line = |text: &str| {
            text.lines()
                .find_map(|l| {
                    let mut f = l.splitn(3, ':');
                    let _ = f.next();
                    (f.next() == Some(ctrls)).then(|| f.next().unwrap_or("").to_string())
                })
                .unwrap_or_default()
        };
        let (svc, base) = (line(&own), line(&mine));
        let base = in_leaf(PathBuf::from(base));
        let want = format!(
            "{}/{name}",
            base.display().to_string().trim_end_matches('/')
        );
        assert_eq!(
            svc, want,
            "pid {pid} is not in {name}'s {} cgroup:\n{own}",
            h.label
        );
        assert!(h.dir.join(name).is_dir(), "{}", h.dir.join(name).display());
    }
}

/// `name`'s cgroup directories that exist now, in any hierarchy.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    hierarchies()
        .into_iter()
        .map(|h| h.dir.join(name))
        .filter(|d| d.exists())
        .collect()
}

/// Assert that no hierarchy holds a cgroup of any of `names` (waiting a little: removal
/// follows the kernel's `populated 0`).
fn assert_no_cgroups(names: &[String]) {
    let gone = wait_until(Duration::from_secs(5), || {
        names.iter().all(|n| cgroup_dirs(n).is_empty())
    });
    let left: Vec<PathBuf> = names.iter().flat_map(|n| cgroup_dirs(n)).collect();
    assert!(gone, "cgroup directories left behind: {left:#?}");
}

/// Removes the services' cgroups if a test failed half-way (after keel is gone: declared
/// before it, dropped after it). A passing test has asserted there is nothing to remove.
struct Litter(Vec<String>);

impl Drop for Litter {
    fn drop(&mut self) {
        for n in &self.0 {
            for d in cgroup_dirs(n) {
                let _ = std::fs::write(d.join("cgroup.kill"), "1");
                for p in read(&d.join("cgroup.procs")).lines() {
                    if let Ok(p) = p.trim().parse::<i32>()
                        && p > 0
                    {
                        // SAFETY: plain syscall.
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                }
                let t = Instant::now();
                while std::fs::remove_dir(&d).is_err() && t.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// A scratch directory with `keel.toml`, keel's output files and runtime directory.
struct Setup {
    dir: PathBuf,
    /// keel's own cgroup (removed after keel: fields drop after the test's locals).
    cg: Option<TestCgroup>,
}

impl Setup {
    fn new(name: &str, toml: &str) -> Setup {
        let dir = scratch(name);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let cg = TestCgroup::new(name);
        LEAF.with(|l| *l.borrow_mut() = cg.as_ref().map(|c| c.leaf.clone()));
        let s = Setup { dir, cg };
        s.write_config(toml);
        s
    }

    fn write_config(&self, toml: &str) {
        let toml = toml
            .replace("@DIR@", self.dir.to_str().unwrap())
            .replace("@PID@", &std::process::id().to_string());
        std::fs::write(self.path("keel.toml"), toml).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn cfg(&self) -> String {
        self.path("keel.toml").to_str().unwrap().to_string()
    }

    /// keel as PID 1 of a new PID namespace on this configuration, output to files.
    fn start(&self) -> Option<Running> {
        let cmd = command_in(self.cg.as_ref()?, Mode::Pid1, &["--config", &self.cfg()])?;
        Some(self.spawn(cmd))
    }

    fn spawn(&self, mut cmd: Command) -> Running {
        cmd.env("KEEL_RUNTIME_DIR", self.path("run"))
            .env("KEEL_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.path("stdout")).unwrap())
            .stderr(std::fs::File::create(self.path("stderr")).unwrap());
        spawn(cmd, Mode::Pid1)
    }

    fn stdout(&self) -> String {
        read(&self.path("stdout"))
    }

    fn stderr(&self) -> String {
        read(&self.path("stderr"))
    }

    fn wait_log(&self, needle: &str, timeout: Duration) {
        let ok = wait_until(timeout, || self.stderr().contains(needle));
        assert!(
            ok,
            "keel never logged '{needle}'; stderr:\n{}",
            self.stderr()
        );
    }

    /// `keel ctl ARGS` reaching keel through `KEEL_RUNTIME_DIR`: (exit code, stdout, stderr).
    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        keel_ctl(args, &[("KEEL_RUNTIME_DIR", &self.path("run"))])
    }

    fn ctl_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.ctl(args);
        assert_eq!(
            code,
            0,
            "keel ctl {args:?}: {out}{err}\nkeel:\n{}",
            self.stderr()
        );
        out
    }

    /// `keel ctl status --json`, decoded.
    fn status(&self) -> Vec<ServiceStatus> {
        let out = self.ctl_ok(&["status", "--json"]);
        match Response::decode(out.trim().as_bytes()) {
            Ok(Response::Status(list)) => list,
            other => panic!("status --json: {other:?} from {out}"),
        }
    }

    fn service(&self, name: &str) -> ServiceStatus {
        self.status()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name} in status"))
    }

    /// Poll `status` until `name` satisfies `f`; panics with the last status and the log.
    fn wait_service(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&ServiceStatus) -> bool,
    ) -> ServiceStatus {
        let mut last = None;
        let ok = wait_until(timeout, || {
            let s = self.service(name);
            let done = f(&s);
            last = Some(s);
            if !done {
                std::thread::sleep(Duration::from_millis(20));
            }
            done
        });
        assert!(
            ok,
            "{name} never {what}: {last:?}\nkeel:\n{}",
            self.stderr()
        );
        last.unwrap()
    }

    /// Wait until `keel ctl status` answers.
    fn wait_control(&self) {
        let ok = wait_until(LONG, || self.path("run/control.sock").exists());
        assert!(ok, "no control socket; keel:\n{}", self.stderr());
        // The socket file appears at bind(2), a moment before keel listens: a refusal then
        // is not a failure (it is noted, to see how often it happens).
        let mut last = (0, String::new(), String::new());
        let ok = wait_until(LONG, || {
            last = self.ctl(&["status"]);
            if last.0 != 0 {
                eprintln!("note: keel ctl status before keel listened: {last:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
            last.0 == 0
        });
        assert!(ok, "keel ctl status: {last:?}; keel:\n{}", self.stderr());
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Kept for a look when the test failed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// SIGTERM keel, wait for its exit code.
fn stop(s: &Setup, keel: Running) -> i32 {
    send(keel.keel_pid, libc::SIGTERM);
    let f = keel.finish(LONG);
    f.status.code().unwrap_or_else(|| {
        panic!(
            "keel died of a signal: {:?}\nstderr:\n{}",
            f.status,
            s.stderr()
        )
    })
}

/// The host pids in service `name`'s cgroup (unified hierarchy, else pids).
fn procs(name: &str) -> Vec<i32> {
    ["unified", "pids"]
        .iter()
        .filter_map(|c| cg_dir(c, name))
        .find(|d| d.exists())
        .map(|d| {
            read(&d.join("cgroup.procs"))
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The host pid of the process in service `name`'s cgroup running `argv` (space-joined; a
/// prefix of its command line),
/// waiting for it. A new child is in the unified cgroup from its first instruction and joins
/// its v1 cgroups before it execs: waiting for the command means waiting for both.
fn wait_proc(s: &Setup, name: &str, argv: &str) -> i32 {
    let mut found = None;
    let ok = wait_until(LONG, || {
        found = procs(name)
            .into_iter()
            .find(|p| cmdline(*p).starts_with(argv));
        found.is_some()
    });
    assert!(
        ok,
        "{name}: no '{argv}' in its cgroup; keel:\n{}",
        s.stderr()
    );
    found.unwrap()
}

fn cmdline(pid: i32) -> String {
    read(Path::new(&format!("/proc/{pid}/cmdline")))
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat, for n >= 3.
fn stat_field(pid: i32, n: usize) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(n - 3)?
        .parse()
        .ok()
}

/// A number in a cgroup file (`None` if missing).
fn num(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A memory hog is OOM-killed inside its own cgroup: keel and another service live on, the
/// kill is logged and counted, and the restart policy decides what follows.
#[test]
fn memory_hog_is_oom_killed_and_restarted_per_policy() {
    if !usable() {
        return;
    }
    let _heavy = heavy();
    let (hog, once, calm) = (uniq("hog"), uniq("hogonce"), uniq("calm"));
    let _litter = Litter(vec![hog.clone(), once.clone(), calm.clone()]);
    // dd touches its whole 256 MiB buffer: 8 times the limit. Both hogs wait for `go`, so
    // the test sees everything running first.
    let s = Setup::new(
        "oom",
        r#"
[service.hog-@PID@]
command = "while [ ! -f @DIR@/go ]; do sleep 0.02; done; exec dd if=/dev/zero of=/dev/null bs=256M count=1"
memory-max = "32M"
memory-swap-max = 0
restart = "on-failure"

[service.hogonce-@PID@]
command = "while [ ! -f @DIR@/go ]; do sleep 0.02; done; exec dd if=/dev/zero of=/dev/null bs=256M count=1"
memory-max = "32M"
memory-swap-max = 0
restart = "no"

[service.calm-@PID@]
command = "exec sleep 1000"
"#,
    );
    let Some(keel) = s.start() else {
        return;
    };
    s.wait_control();
    for n in [&hog, &once, &calm] {
        s.wait_service(n, "ran", LONG, |x| x.state == "running");
    }
    // The limits are the kernel's: memory.limit_in_bytes, and memsw = memory + 0 swap.
    let mem = cg_dir("memory", &hog).unwrap();
    assert_eq!(num(&mem.join("memory.limit_in_bytes")), Some(32 << 20));
    if mem.join("memory.memsw.limit_in_bytes").exists() {
        assert_eq!(
            num(&mem.join("memory.memsw.limit_in_bytes")),
            Some(32 << 20)
        );
    }
    let calm_before = s.service(&calm).pid;
    let calm_host = [wait_proc(&s, &calm, "sleep 1000")];
    assert_eq!(procs(&calm), calm_host);
    // (pid, start time): the same processes afterwards, not new ones with a recycled pid.
    let keel_start = stat_field(keel.keel_pid, 22);
    let calm_start = stat_field(calm_host[0], 22);
    assert_in_cgroups(calm_host[0], &calm);
    assert_in_cgroups(wait_proc(&s, &hog, "/bin/sh -c while"), &hog);

    std::fs::write(s.path("go"), "").unwrap();
    s.wait_log(
        &format!("{hog}: the OOM killer killed 1 process(es) in its cgroup (1 so far)"),
        LONG,
    );
    s.wait_log(
        &format!("{once}: the OOM killer killed 1 process(es) in its cgroup (1 so far)"),
        LONG,
    );
    let h = s.wait_service(&hog, "restarted after its OOM kill", LONG, |x| {
        x.restarts >= 1 && x.oom_kills.is_some_and(|k| k >= 1)
    });
    assert_eq!(h.last_exit.as_deref(), Some("signal 9 (SIGKILL)"), "{h:?}");
    let o = s.wait_service(&once, "failed", LONG, |x| x.state == "failed");
    assert!(o.oom_kills.is_some_and(|k| k >= 1), "{o:?}");
    assert_eq!(o.restarts, 0, "{o:?}");
    // The OOM killer stayed inside the hogs' cgroups.
    let c = s.service(&calm);
    assert_eq!(c.state, "running");
    assert_eq!(c.pid, calm_before, "calm was restarted");
    assert_eq!(c.restarts, 0);
    assert_eq!(c.oom_kills, Some(0));
    assert!(alive(calm_host[0]), "calm's process died");
    assert_eq!(stat_field(calm_host[0], 22), calm_start);
    assert!(alive(keel.keel_pid), "keel died");
    assert_eq!(stat_field(keel.keel_pid, 22), keel_start);

    // A failed service that is not critical does not change keel's exit code.
    assert_eq!(stop(&s, keel), 0, "{}", s.stderr());
    assert_no_cgroups(&[hog, once, calm]);
}

/// A fork bomb stops at `tasks-max`: the service never has more tasks than that (the kernel's
/// pids.peak agrees), the failed forks are visible in its output and in pids.events, and
/// keel and the other services go on (one of them forking all the while).
#[test]
fn fork_bomb_stops_at_tasks_max() {
    if !usable() {
        return;
    }
    let _heavy = heavy();
    let (bomb, tick, calm) = (uniq("bomb"), uniq("tick"), uniq("calm2"));
    let _litter = Litter(vec![bomb.clone(), tick.clone(), calm.clone()]);
    // `command eval` keeps dash alive when a fork fails (it would exit otherwise), so the
    // loop presses on the limit 300 times, then reports how many forks failed.
    let s = Setup::new(
        "bomb",
        r#"
[service.bomb-@PID@]
command = '''
while [ ! -f @DIR@/go ]; do sleep 0.02; done
f=0; i=0
while [ $i -lt 300 ]; do
  i=$((i+1))
  command eval 'sleep 3 &' 2>/dev/null || f=$((f+1))
done
echo "bomb: $f of $i forks failed"
exec sleep 1000
'''
tasks-max = 12

[service.tick-@PID@]
command = "while :; do echo tick >> @DIR@/ticks; sleep 0.02; done"

[service.calm2-@PID@]
command = "exec sleep 1000"
"#,
    );
    let Some(keel) = s.start() else {
        return;
    };
    s.wait_control();
    for n in [&bomb, &tick, &calm] {
        s.wait_service(n, "ran", LONG, |x| x.state == "running");
    }
    let pids = cg_dir("pids", &bomb).unwrap();
    assert_eq!(read(&pids.join("pids.max")).trim(), "12");
    let calm_before = s.service(&calm).pid;
    let ticks = || read(&s.path("ticks")).lines().count();

    std::fs::write(s.path("go"), "").unwrap();
    let t0 = Instant::now();
    let ticks0 = ticks();
    let mut max = 0;
    let mut samples = 0;
    // While the sleeps hold every slot (3 s), count the service's tasks as fast as the file
    // can be read. (Not pids.current: the kernel adds a fork's charge before it compares
    // with the limit and takes it back when over, so a reader can catch limit + 1 for an
    // instant; pids.peak below is the kernel's own watermark of charges that succeeded.)
    while t0.elapsed() < Duration::from_millis(2500) {
        let n = read(&pids.join("tasks")).lines().count();
        max = max.max(n);
        samples += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    let ticked = ticks() - ticks0;
    assert!(max <= 12, "the bomb had {max} tasks with tasks-max = 12");
    assert_eq!(
        max, 12,
        "the bomb never reached the limit ({samples} samples)"
    );
    if let Some(peak) = num(&pids.join("pids.peak")) {
        assert_eq!(peak, 12, "pids.peak");
    }
    let failed = s.stdout();
    let line = failed
        .lines()
        .find(|l| l.contains("bomb: "))
        .unwrap_or_else(|| panic!("no report from the bomb; stdout:\n{failed}"));
    // keel's prefix, aligned for the longest name.
    assert!(line.starts_with(&format!("{bomb} ")), "{line}");
    let line = line.split_once(" | ").unwrap().1;
    // 300 attempts, at most 11 children besides the shell: at least 289 failed.
    let n: u32 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(n >= 289, "{line}");
    // The kernel counted them too (pids.events: `max N`).
    if let Ok(ev) = std::fs::read_to_string(pids.join("pids.events")) {
        let hits: u64 = ev
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(hits >= u64::from(n), "pids.events: {ev}");
    }
    // The rest went on: a forking service kept forking, calm is the same process.
    assert!(
        ticked >= 20,
        "tick ran {ticked} times in 2.5 s during the bomb"
    );
    let b = s.service(&bomb);
    assert_eq!(b.pids, Some(12), "{b:?}");
    assert_eq!(b.state, "running");
    let c = s.service(&calm);
    assert_eq!((c.state.as_str(), c.pid), ("running", calm_before));
    assert!(alive(keel.keel_pid));

    s.ctl_ok(&["stop", &bomb]);
    s.wait_service(&bomb, "stopped", LONG, |x| x.pid.is_none());
    assert_no_cgroups(std::slice::from_ref(&bomb));
    assert_eq!(stop(&s, keel), 0, "{}", s.stderr());
    assert_no_cgroups(&[bomb, tick, calm]);
}

/// A CPU burner with `cpu-quota = "20%"` gets 20% of one CPU. Its top `cpu-weight` wins it
/// that much on a busy machine (shared with other builds here), so what is measured is the
/// quota's cap, not the contention.
#[test]
fn cpu_quota_caps_a_burner_at_20_percent() {
    if !usable() {
        return;
    }
    let _heavy = heavy();
    let burn = uniq("burn");
    let _litter = Litter(vec![burn.clone()]);
    let s = Setup::new(
        "cpu",
        r#"
[service.burn-@PID@]
command = "while :; do :; done"
cpu-quota = "20%"
cpu-weight = 10000
"#,
    );
    let Some(keel) = s.start() else {
        return;
    };
    s.wait_control();
    s.wait_service(&burn, "ran", LONG, |x| x.state == "running");
    let cpu = cg_dir("cpu", &burn).unwrap();
    assert_eq!(num(&cpu.join("cpu.cfs_period_us")), Some(100_000));
    assert_eq!(num(&cpu.join("cpu.cfs_quota_us")), Some(20_000));
    assert_eq!(num(&cpu.join("cpu.shares")), Some(262_144));
    let pid = wait_proc(&s, &burn, "/bin/sh -c while :; do :; done");
    assert_in_cgroups(pid, &burn);
    // The service's CPU time, µs: cpuacct.usage (ns) on v1, else the unified cpu.stat.
    let usage = || -> u64 {
        match cg_dir("cpuacct", &burn).and_then(|d| num(&d.join("cpuacct.usage"))) {
            Some(ns) => ns / 1000,
            None => read(&cg_dir("unified", &burn).unwrap().join("cpu.stat"))
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
                .expect("no CPU usage for the service"),
        }
    };
    // SAFETY: plain syscall.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = || stat_field(pid, 14).unwrap() + stat_field(pid, 15).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (t0, u0, k0) = (Instant::now(), usage(), ticks());
    std::thread::sleep(Duration::from_secs(3));
    let (t1, u1, k1) = (Instant::now(), usage(), ticks());
    let wall = (t1 - t0).as_secs_f64();
    let pct = (u1 - u0) as f64 / 1e6 / wall * 100.0;
    let pct_proc = (k1 - k0) as f64 / hz / wall * 100.0;
    assert_eq!(stop(&s, keel), 0, "{}", s.stderr());
    assert_no_cgroups(std::slice::from_ref(&burn));
    eprintln!("burner: {pct:.1}% (cgroup), {pct_proc:.1}% (/proc)");
    assert!((15.0..=25.0).contains(&pct), "cgroup: {pct:.1}% of one CPU");
    assert!((15.0..=25.0).contains(&pct_proc), "/proc: {pct_proc:.1}%");
}

/// Daemons that double-fork and call setsid die with their service: on `keel ctl stop`,
/// and when the main process exits on its own; the cgroups are removed.
#[test]
fn setsid_daemons_die_with_their_service() {
    if !usable() {
        return;
    }
    let (daemon, quitter) = (uniq("daemon"), uniq("quitter"));
    let _litter = Litter(vec![daemon.clone(), quitter.clone()]);
    let s = Setup::new(
        "daemon",
        r#"
[service.daemon-@PID@]
command = "(setsid sh -c 'exec sleep 3001' </dev/null >/dev/null 2>&1 &); exec sleep 3000"

[service.quitter-@PID@]
command = "(setsid sh -c 'exec sleep 3002' </dev/null >/dev/null 2>&1 &); while [ ! -f @DIR@/quit ]; do sleep 0.02; done; exit 0"
restart = "no"
"#,
    );
    let Some(keel) = s.start() else {
        return;
    };
    s.wait_control();
    // The escaped daemon: its own session, reparented to keel (PID 1), still in the cgroup.
    let escaped = |name: &str, argv: &str| -> i32 {
        let d = wait_proc(&s, name, argv);
        assert_eq!(
            stat_field(d, 4),
            Some(keel.keel_pid as u64),
            "not reparented"
        );
        assert_eq!(stat_field(d, 6), Some(d as u64), "not a session leader");
        assert_in_cgroups(d, name);
        d
    };
    let d1 = escaped(&daemon, "sleep 3001");
    let d2 = escaped(&quitter, "sleep 3002");
    let main1 = wait_proc(&s, &daemon, "sleep 3000");
    assert_ne!(stat_field(main1, 6), Some(d1 as u64));

    let t = Instant::now();
    s.ctl_ok(&["stop", &daemon]);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(d1) && !alive(main1)),
        "the setsid'd daemon outlived `keel ctl stop`; keel:\n{}",
        s.stderr()
    );
    assert_no_cgroups(std::slice::from_ref(&daemon));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    s.wait_service(&daemon, "stopped", LONG, |x| x.pid.is_none());

    std::fs::write(s.path("quit"), "").unwrap();
    s.wait_log(
        &format!("{quitter}: killing 1 process(es) left in its cgroup after it ended"),
        LONG,
    );
    assert!(
        wait_until(Duration::from_secs(5), || !alive(d2)),
        "the daemon outlived its service's end"
    );
    assert_no_cgroups(std::slice::from_ref(&quitter));
    let q = s.service(&quitter);
    assert_eq!(q.last_exit.as_deref(), Some("exit code 0"), "{q:?}");
    assert!(alive(keel.keel_pid));
    assert_eq!(stop(&s, keel), 0, "{}", s.stderr());
    assert_no_cgroups(&[daemon, quitter]);
}

/// `keel ctl status` shows a service's memory, CPU and pids from its cgroup; with
/// `cgroups = "off"` it shows none and no cgroup is made.
#[test]
fn status_shows_usage_and_cgroups_off_makes_none() {
    if !usable() {
        return;
    }
    let (on, off) = (uniq("usage"), uniq("nocg"));
    let _litter = Litter(vec![on.clone(), off.clone()]);
    // A little work first, so the CPU time is not 0.
    let svc = r#"
[service.NAME-@PID@]
command = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; touch @DIR@/NAME.ready; exec sleep 1000"
memory-max = "64M"
tasks-max = 10
"#;
    let columns = |table: &str, name: &str| -> Vec<(String, String)> {
        let mut lines = table.lines();
        let head: Vec<String> = lines
            .next()
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect();
        let row = lines
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        head.into_iter()
            .zip(row.split_whitespace().map(String::from))
            .collect()
    };
    let col = |cols: &[(String, String)], c: &str| -> String {
        cols.iter().find(|(h, _)| h == c).unwrap().1.clone()
    };

    let s = Setup::new("usage", &svc.replace("NAME", "usage"));
    let Some(keel) = s.start() else {
        return;
    };
    s.wait_control();
    assert!(wait_until(LONG, || s.path("usage.ready").exists()));
    let u = s.wait_service(&on, "ran", LONG, |x| x.pids == Some(1));
    assert!(u.memory_bytes.is_some_and(|m| m > 0), "{u:?}");
    assert!(u.cpu_usec.is_some_and(|c| c > 0), "{u:?}");
    assert_eq!(u.oom_kills, Some(0), "{u:?}");
    let cols = columns(&s.ctl_ok(&["status"]), &on);
    for c in ["MEM", "CPU", "PIDS", "OOM"] {
        let v = col(&cols, c);
        assert!(!v.is_empty() && v != "-", "{c} is '{v}': {cols:?}");
    }
    assert_eq!(col(&cols, "PIDS"), "1");
    assert!(col(&cols, "CPU").ends_with('s'), "{cols:?}");
    assert_in_cgroups(wait_proc(&s, &on, "sleep 1000"), &on);
    assert_eq!(stop(&s, keel), 0, "{}", s.stderr());
    assert_no_cgroups(std::slice::from_ref(&on));

    let s = Setup::new(
        "nocg",
        &format!("[keel]\ncgroups = \"off\"\n{}", svc.replace("NAME", "nocg")),
    );
    let Some(keel) = s.start() else {
        return;
    };
    s.wait_control();
    assert!(wait_until(LONG, || s.path("nocg.ready").exists()));
    let n = s.wait_service(&off, "ran", LONG, |x| x.state == "running");
    assert_eq!(
        (n.memory_bytes, n.cpu_usec, n.pids, n.oom_kills),
        (None, None, None, None),
        "{n:?}"
    );
    let cols = columns(&s.ctl_ok(&["status"]), &off);
    for c in ["MEM", "CPU", "PIDS", "OOM"] {
        assert_eq!(col(&cols, c), "-", "{c}: {cols:?}");
    }
    assert_eq!(cgroup_dirs(&off), Vec::<PathBuf>::new());
    // The service stayed in keel's own cgroups.
    let host = descendants_of(keel.keel_pid);
    assert!(!host.is_empty());
    let keels = read(Path::new(&format!("/proc/{}/cgroup", keel.keel_pid)));
    for p in host {
        assert_eq!(
            read(Path::new(&format!("/proc/{p}/cgroup"))),
            keels,
            "pid {p} ({}) moved",
            cmdline(p)
        );
    }
    assert_eq!(stop(&s, keel), 0, "{}", s.stderr());
    assert_no_cgroups(&[on, off]);
}

fn descendants_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in read(Path::new(&format!("/proc/{p}/task/{p}/children"))).split_whitespace() {
            if let Ok(c) = c.parse() {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// `unshare` making keel PID 1 of a new PID namespace in a private mount namespace where
/// every cgroup mount is read-only.
fn read_only_cgroupfs_keel(s: &Setup) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        "for m in $(findmnt -rn -o TARGET -t cgroup,cgroup2); do \
           mount -o remount,bind,ro \"$m\" || exit 99; done; exec \"$0\" --config \"$1\"",
        keel(),
        &s.cfg(),
    ]);
    cmd
}

/// Every cgroup mount in `mountinfo` text is read-only (and there is at least one).
fn cgroup_mounts(mountinfo: &str) -> Vec<(String, bool)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let fstype = post.split(' ').next()?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| {
                let ro = f.get(5)?.split(',').any(|o| o == "ro");
                Some((f.get(4)?.to_string(), ro))
            })?
        })
        .collect()
}

/// A read-only cgroupfs: `auto` warns once (cause and fix) and runs the services without
/// cgroups; `required` refuses to start anything (exit 78). The host's mounts stay writable.
#[test]
fn read_only_cgroupfs_auto_warns_once_required_refuses() {
    if !usable() {
        return;
    }
    let (a, b, r) = (uniq("roa"), uniq("rob"), uniq("roreq"));
    let _litter = Litter(vec![a.clone(), b.clone(), r.clone()]);
    let s = Setup::new(
        "ro",
        r#"
[service.roa-@PID@]
command = "trap 'echo a >> @DIR@/stopped; exit 0' TERM; touch @DIR@/a.ran; while :; do sleep 0.05; done"
memory-max = "64M"
tasks-max = 20

[service.rob-@PID@]
command = "trap 'echo b >> @DIR@/stopped; exit 0' TERM; touch @DIR@/b.ran; while :; do sleep 0.05; done"
"#,
    );
    let keel = s.spawn(read_only_cgroupfs_keel(&s));
    let ran = wait_until(LONG, || {
        s.path("a.ran").exists() && s.path("b.ran").exists()
    });
    assert!(ran, "services did not run; keel:\n{}", s.stderr());
    // keel's view: every cgroup mount read-only. The host's: all still writable.
    let inside = cgroup_mounts(&read(Path::new(&format!(
        "/proc/{}/mountinfo",
        keel.keel_pid
    ))));
    assert!(
        !inside.is_empty() && inside.iter().all(|(_, ro)| *ro),
        "{inside:?}"
    );
    let host = cgroup_mounts(&read(Path::new("/proc/self/mountinfo")));
    assert!(
        !host.is_empty() && host.iter().all(|(_, ro)| !*ro),
        "the host's cgroup mounts changed: {host:?}"
    );
    assert!(cgroup_dirs(&a).is_empty() && cgroup_dirs(&b).is_empty());
    s.wait_control();
    let st = s.service(&a);
    assert_eq!((st.memory_bytes, st.pids, st.oom_kills), (None, None, None));
    let t = Instant::now();
    assert_eq!(stop(&s, keel), 0, "{}", s.stderr());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let mut stopped: Vec<String> = read(&s.path("stopped")).lines().map(String::from).collect();
    stopped.sort();
    assert_eq!(stopped, ["a", "b"]);
    let err = s.stderr();
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("keel: warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    let w = warnings[0];
    assert!(
        w.starts_with("keel: warning: cgroups: ")
            && w.contains("read-only")
            && w.contains("-> per-service memory/cpu/pids/io limits are NOT enforced")
            && w.contains(". Fix: "),
        "{w}"
    );

    s.write_config(
        r#"
[keel]
cgroups = "required"

[service.roreq-@PID@]
command = "touch @DIR@/req.ran; exec sleep 1000"
"#,
    );
    let f = s.spawn(read_only_cgroupfs_keel(&s)).finish(LONG);
    let err = s.stderr();
    assert_eq!(f.status.code(), Some(78), "{err}");
    let refusal: Vec<&str> = err
        .lines()
        .filter(|l| {
            l.contains("cgroups = \"required\": refusing to start (nothing was started). Fix: ")
        })
        .collect();
    assert_eq!(refusal.len(), 1, "{err}");
    assert!(refusal[0].starts_with("keel: cgroups: ") && refusal[0].contains("read-only"));
    assert!(!s.path("req.ran").exists(), "a service ran: {err}");
    assert!(!err.contains("started '"), "{err}");
    assert_no_cgroups(&[a, b, r]);
}

/// `keel check` reports bad limits and a bad `cgroups` value with their places, exit 2.
#[test]
fn check_reports_bad_limits_with_their_places() {
    let d = scratch("cg-check");
    let f = d.join("keel.toml");
    std::fs::write(
        &f,
        "[keel]\ncgroups = \"sometimes\"\n\n[service.a]\ncommand = [\"true\"]\n\
         memory-max = \"lots\"\ncpu-weight = 0\n",
    )
    .unwrap();
    let out = run(
        Mode::Plain,
        &["check", "--config", f.to_str().unwrap()],
        &[],
    )
    .unwrap();
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stderr);
    let at = |line: u32, col: u32, what: &str| {
        let want = format!("{}:{line}:{col}: {what}", f.display());
        assert!(
            lines.iter().any(|l| l.starts_with(&want)),
            "no '{want}' in:\n{}",
            out.stderr
        );
    };
    at(2, 11, "cgroups = \"sometimes\" is not valid");
    at(6, 14, "memory-max: 'lots' is not a size");
    at(7, 14, "cpu-weight must be between");
    let _ = std::fs::remove_dir_all(&d);
}

/// keel started in a cgroup it shares (this test runner's, beside other keels) makes no
/// service cgroups there: two keels' same-named services would share one cgroup and one
/// keel's stop would kill the other's service. `auto` warns once and runs without;
/// `required` refuses with exit 78 before starting anything.
#[test]
fn a_shared_cgroup_is_not_used() {
    if !usable() {
        return;
    }
    let name = uniq("shared");
    let dir = scratch("shared");
    let marker = dir.join("ran");
    let toml = |mode: &str| {
        format!(
            "[keel]\ncgroups = \"{mode}\"\n[service.{name}]\ncommand = \"touch {} && exec sleep 1000\"\nmemory-max = \"64M\"\n",
            marker.display()
        )
    };
    let cfg = dir.join("keel.toml");
    std::fs::write(&cfg, toml("auto")).unwrap();
    let run = dir.join("run");
    let env = [("KEEL_RUNTIME_DIR", run.to_str().unwrap())];
    let keel = start(Mode::Plain, &["--config", cfg.to_str().unwrap()], &env).unwrap();
    assert!(
        wait_until(LONG, || marker.exists()),
        "the service never ran"
    );
    assert!(
        cgroup_dirs(&name).is_empty(),
        "a cgroup was made in a shared cgroup"
    );
    send(keel.keel_pid, libc::SIGTERM);
    let f = keel.finish(LONG);
    assert_eq!(f.code(), 0, "{}", f.stderr);
    let warnings: Vec<&str> = f
        .stderr
        .lines()
        .filter(|l| l.contains("warning: cgroups:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", f.stderr);
    assert!(
        warnings[0].contains("is shared with")
            && warnings[0].contains("Fix: give keel a cgroup of its own"),
        "{}",
        warnings[0]
    );

    std::fs::remove_file(&marker).unwrap();
    std::fs::write(&cfg, toml("required")).unwrap();
    let f = run_keel(&cfg, &env);
    assert_eq!(f.code(), 78, "{}", f.stderr);
    assert!(f.stderr.contains("refusing to start"), "{}", f.stderr);
    assert!(!marker.exists(), "a service started");
    assert!(cgroup_dirs(&name).is_empty());
}

fn run_keel(cfg: &Path, env: &[(&str, &str)]) -> Finished {
    run(Mode::Plain, &["--config", cfg.to_str().unwrap()], env).unwrap()
}
