//! bench-cgroup: what a service's cgroup costs keel at start, and what it buys at stop.
//! bench/cgroup.sh builds and runs it (method: bench/README.md, "cgroups"); needs root.
//!
//!     bench-cgroup [--rounds N] [--warmup N] [--gap-ms MS] [--settle-ms MS] [--raw FILE]
//!     bench-cgroup --detect
//!
//! It drives keel's own library (`keel::cgroup`, `keel::spawn`) as keel's runtime does. Each
//! phase runs `--warmup` untimed rounds (default 10), then `--rounds` timed ones (default 200):
//!
//! * Start: `--gap-ms` (default 100) idle, then a cold round, then at once a warm one (its
//!   cgroup writes follow the cold round's by a few ms; see the report for why that matters);
//!   each round A, B2, B:
//!   - A, without cgroup: `spawn_with` of `/bin/true` (prepared once), wait for its exec-status
//!     pipe to report `Started` (EOF: the exec succeeded), then `waitpid` it.
//!   - B, with cgroup: `Cgroups::create` with memory, pids and cpu limits, `spawn_in_cgroup`
//!     (`clone3(CLONE_INTO_CGROUP)` into the unified hierarchy; on v1 hierarchies the child
//!     writes itself into each `cgroup.procs` before its exec), exec status, `waitpid`,
//!     `ServiceCgroup::remove`.
//!   - B2 (hybrid hosts only): B with the unified join only, no v1 writes: what a start costs
//!     on a pure v2 host.
//! * Stop, each round C0, C, D. The tree is `sh -c 'sleep & setsid sleep & (sleep &); exec
//!   sleep'`: four `sleep`s, one in its own session (a process-group kill misses it), one
//!   orphaned (re-parented to this process); it is killed `--settle-ms` (default 50) after all
//!   four are up.
//!   - C, cgroup: the tree in a service cgroup; `kill()` (`cgroup.kill`), then epoll on
//!     `cgroup.events` (EPOLLPRI) until `read_events()` says `populated 0`; then reap all four.
//!   - C0: one `sleep` in a service cgroup, killed as soon as it runs: the kernel's rate limit
//!     on `cgroup.events` notifications.
//!   - D, process group: the tree without cgroup; `kill(-pgid, SIGKILL)`, then reap until every
//!     member of the group is reaped. The `setsid` sleep survives; it is counted, then killed by
//!     pid and reaped (untimed).
//!
//! This process is a child subreaper (as keel is PID 1), so every orphan is its to reap.
//! Output: a Markdown section on stdout (no title: the script adds it), progress on stderr;
//! `--raw FILE` also writes every sample as CSV. `--detect` prints keel's detection summary,
//! then each directory the service cgroups go beneath (one a line), and changes nothing.
//!
//! Every cgroup is named `keel-bench-PID-start` or `keel-bench-PID-stop`, beneath this
//! process's own cgroup in each hierarchy (where `Cgroups::setup` puts service cgroups). On a
//! pure cgroup v2 host `Cgroups::setup` moves every process of that cgroup into a leaf `init`,
//! so the bench refuses to run there unless it is alone in its cgroup (bench/cgroup.sh gives
//! it one).
//!
//! Clean-up: SIGINT, SIGTERM and SIGHUP are blocked and polled between steps (every wait is
//! bounded), so on a signal or any error every cgroup created is killed, emptied and removed,
//! every child killed and reaped, and it exits 130 (signal) or 1 (error).

use keel::cgroup::{CgroupError, Cgroups, Controllers, Detection, Kind, Mode, ServiceCgroup};
use keel::plan::{Limits, ServiceSpec, Size};
use keel::signals::{Inherited, SigSet};
use keel::spawn::{self, ChildIo, ExecStatus, Prepared};
use keel::sys::Epoll;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Every cgroup name starts with this (bench/cgroup.sh removes leftovers by it).
const PREFIX: &str = "keel-bench";
/// The stop tree: four `sleep`s once it has settled (see the module comment).
const TREE: &str = "sleep 1000 & setsid sleep 1000 & (sleep 1000 &); exec sleep 1000";
const TREE_SIZE: usize = 4;
/// Bound on every wait, so a signal is noticed and nothing hangs.
const TIMEOUT: Duration = Duration::from_secs(10);

enum Fail {
    Signal(i32),
    Msg(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Msg(s)
    }
}

type R<T> = Result<T, Fail>;

fn msg<T>(s: impl Into<String>) -> R<T> {
    Err(Fail::Msg(s.into()))
}

fn errno_str() -> String {
    std::io::Error::last_os_error().to_string()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

// ---------------------------------------------------------------------------------------------
// Signals: blocked, polled.
// ---------------------------------------------------------------------------------------------

const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn block_stop_signals() -> R<()> {
    // SAFETY: sigset operations on a local; sigprocmask of a single-threaded process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return msg(format!("sigprocmask: {}", errno_str()));
        }
    }
    Ok(())
}

/// `Err(Fail::Signal)` when a stop signal is pending.
fn check_signals() -> R<()> {
    // SAFETY: sigpending fills a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        if libc::sigpending(&mut set) != 0 {
            return msg(format!("sigpending: {}", errno_str()));
        }
        for s in STOP_SIGNALS {
            if libc::sigismember(&set, s) == 1 {
                return Err(Fail::Signal(s));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Blocking `waitpid(pid, 0)`: the pid reaped and its raw status.
fn waitpid(pid: i32) -> R<(i32, i32)> {
    loop {
        let mut st = 0;
        // SAFETY: plain syscall with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r > 0 {
            return Ok((r, st));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return msg(format!("waitpid({pid}): {e}"));
        }
    }
}

/// Reap (blocking) until every pid of `pids` has been reaped. Other pids reaped on the way
/// are returned (there should be none).
fn reap_all(pids: &BTreeSet<i32>) -> R<Vec<i32>> {
    let mut left = pids.clone();
    let mut others = Vec::new();
    while !left.is_empty() {
        let (p, _) = waitpid(-1)?;
        if !left.remove(&p) {
            others.push(p);
        }
    }
    Ok(others)
}

/// Wait until the exec-status pipe reports the exec.
fn wait_exec(status: &OwnedFd) -> R<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut pfd = libc::pollfd {
            fd: status.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 1000) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return msg(format!("poll(exec status): {}", errno_str()));
        }
        match spawn::read_status(status) {
            Ok(ExecStatus::Started) => return Ok(()),
            Ok(ExecStatus::Failed(e)) => return msg(format!("the child failed: {e}")),
            Ok(ExecStatus::Pending) => {}
            Err(e) => return msg(format!("exec status: {e}")),
        }
        if Instant::now() > deadline {
            return msg("no exec within 10 s");
        }
        check_signals()?;
    }
}

/// (state, pgrp, session, comm) of a process, from `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(u8, i32, i32, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_owned();
    let mut f = s.get(close + 2..)?.split_whitespace();
    let state = f.next()?.bytes().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    let sid = f.next()?.parse().ok()?;
    Some((state, pgrp, sid, comm))
}

fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(st, ..)| st != b'Z' && st != b'X')
}

/// Every descendant of `pid` (via `/proc/PID/task/*/children`), zombies included.
fn descendants(pid: i32, out: &mut Vec<i32>) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(t.path().join("children")) else {
            continue;
        };
        for c in text
            .split_whitespace()
            .filter_map(|w| w.parse::<i32>().ok())
        {
            out.push(c);
            descendants(c, out);
        }
    }
}

/// Whether `pids` is a settled tree of `n`: `n` live processes, all `sleep` (every fork has
/// exec'd, the subshell that orphaned one has exited).
fn settled(pids: &[i32], n: usize) -> bool {
    pids.len() == n
        && pids
            .iter()
            .all(|p| proc_stat(*p).is_some_and(|(st, _, _, c)| st != b'Z' && c == "sleep"))
}

/// Wait (polling every ms, untimed) until `list()` gives a settled tree of `n`; returns it.
fn wait_settled(n: usize, mut list: impl FnMut() -> Vec<i32>) -> R<Vec<i32>> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let pids = list();
        if settled(&pids, n) {
            return Ok(pids);
        }
        if Instant::now() > deadline {
            return msg(format!(
                "the process tree did not settle within 10 s: {pids:?}"
            ));
        }
        check_signals()?;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sleep `d`, noticing a stop signal within 10 ms.
fn pause(d: Duration) -> R<()> {
    let end = Instant::now() + d;
    loop {
        check_signals()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(10)));
    }
}

/// SIGKILL every descendant and reap until there are no children left (bounded).
fn sweep() {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut d = Vec::new();
        // SAFETY: plain syscall.
        descendants(unsafe { libc::getpid() }, &mut d);
        for p in &d {
            // SAFETY: plain syscall; ESRCH is fine.
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
        let mut st = 0;
        // SAFETY: plain syscall.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r < 0 || Instant::now() > deadline {
            return; // ECHILD: nothing left
        }
        if r == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cgroups
// ---------------------------------------------------------------------------------------------

/// A service cgroup that is killed, emptied and removed however the round ends.
struct CgGuard(Option<ServiceCgroup>);

impl CgGuard {
    fn get(&self) -> R<&ServiceCgroup> {
        self.0
            .as_ref()
            .map_or_else(|| msg("cgroup already removed"), Ok)
    }
    fn get_mut(&mut self) -> R<&mut ServiceCgroup> {
        self.0
            .as_mut()
            .map_or_else(|| msg("cgroup already removed"), Ok)
    }

    /// `remove()`, retried while it says `EBUSY`: Ok(retries).
    fn remove(&mut self) -> R<u32> {
        let sc = self.get_mut()?;
        let deadline = Instant::now() + TIMEOUT;
        let mut retries = 0;
        loop {
            match sc.remove() {
                Ok(()) => break,
                Err(e) if e.is_busy() && Instant::now() < deadline => {
                    retries += 1;
                    std::thread::yield_now();
                }
                Err(e) => return msg(format!("remove cgroup {}: {e}", sc.name())),
            }
        }
        self.0 = None;
        Ok(retries)
    }
}

impl Drop for CgGuard {
    fn drop(&mut self) {
        let Some(mut sc) = self.0.take() else {
            return;
        };
        let _ = sc.kill();
        let deadline = Instant::now() + TIMEOUT;
        while sc.populated() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Reap what died (zombies never keep a cgroup populated, but reaping is ours to do).
        sweep();
        while let Err(e) = sc.remove() {
            if !e.is_busy() || Instant::now() > deadline {
                eprintln!(
                    "bench-cgroup: could not remove {}: {e}",
                    sc.unified_path()
                        .or_else(|| sc.v1_paths().next())
                        .map_or_else(|| sc.name().to_owned(), |p| p.display().to_string())
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Run the bench only where keel's set-up changes nothing but what the bench creates: on a
/// cgroup v2 host `Cgroups::setup` moves every process of its cgroup into a leaf `init`, so
/// this process must be alone in its cgroup there (bench/cgroup.sh gives it its own).
fn check_alone(det: &Detection) -> R<()> {
    if det.kind != Kind::Unified {
        return Ok(());
    }
    let Some(base) = &det.unified else {
        return Ok(());
    };
    // SAFETY: plain syscall.
    let me = unsafe { libc::getpid() };
    let mut others = Vec::new();
    for f in [base.join("cgroup.procs"), base.join("init/cgroup.procs")] {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        others.extend(
            text.split_whitespace()
                .filter_map(|w| w.parse::<i32>().ok())
                .filter(|p| *p != me),
        );
    }
    if others.is_empty() {
        Ok(())
    } else {
        msg(format!(
            "cgroup v2: keel's set-up would move every process of {} ({} besides this one) \
             into {}/init; run the bench in a cgroup of its own (bench/cgroup.sh does that)",
            base.display(),
            others.len(),
            base.display()
        ))
    }
}

/// The directories the service cgroups go beneath (keel's own cgroup in each hierarchy used).
fn bases(det: &Detection) -> Vec<String> {
    let mut v: Vec<String> = det
        .unified
        .iter()
        .filter(|_| !det.unified_read_only)
        .map(|p| p.display().to_string())
        .collect();
    v.extend(
        det.v1
            .iter()
            .filter(|h| h.is_used() && !h.read_only)
            .map(|h| h.dir.display().to_string()),
    );
    v
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

/// Phase 1 samples (µs), one entry per timed round.
#[derive(Default)]
struct StartSamples {
    a_exec: Vec<f64>,
    a_reap: Vec<f64>,
    b2_exec: Vec<f64>,
    b2_reap: Vec<f64>,
    b_create: Vec<f64>,
    b_exec: Vec<f64>,
    b_reap: Vec<f64>,
    b_remove: Vec<f64>,
    b_total: Vec<f64>,
    remove_retries: u32,
}

/// Phase 2 samples (µs) and counts.
#[derive(Default)]
struct StopSamples {
    c0_populated: Vec<f64>,
    c0_age: Vec<f64>,
    c0_wakeups: Vec<f64>,
    c_populated: Vec<f64>,
    c_reaped: Vec<f64>,
    c_wakeups: Vec<f64>,
    d_reaped: Vec<f64>,
    d_escaped: usize,
    d_survivors: usize,
    stray_reaped: usize,
}

/// One start in a cgroup: create, spawn → exec'd, spawn → reaped, remove, create → removed
/// (µs), and remove's EBUSY retries.
struct Start {
    create: f64,
    exec: f64,
    reap: f64,
    remove: f64,
    total: f64,
    retries: u32,
}

/// One stop through the cgroup: kill → populated 0, kill → all reaped, spawn → kill (µs),
/// epoll wake-ups until populated 0, pids reaped that were not the tree's.
struct Stop {
    populated: f64,
    reaped: f64,
    age: f64,
    wakeups: usize,
    stray: usize,
}

/// How a child joins its cgroup.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Join {
    /// Everything `ServiceCgroup::join` gives: on a hybrid host, the unified cgroup through
    /// `clone3` and each v1 cgroup by a write in the child.
    All,
    /// The unified cgroup only (`clone3(CLONE_INTO_CGROUP)`), as on a pure cgroup v2 host.
    UnifiedOnly,
}

struct Bench {
    cg: Cgroups,
    limits: Limits,
    tru: Prepared,
    tree: Prepared,
    sleep: Prepared,
    io: ChildIo,
    inherited: Inherited,
    start_name: String,
    stop_name: String,
    /// Hybrid host: B2 (unified join only) is measured besides B.
    hybrid: bool,
}

impl Bench {
    fn create(&self, name: &str) -> R<CgGuard> {
        Ok(CgGuard(Some(
            self.cg
                .create(name, &self.limits)
                .map_err(|e| format!("create cgroup {name}: {e}"))?,
        )))
    }

    /// A: `/bin/true` without a cgroup. (spawn → exec'd, spawn → reaped), µs.
    fn start_plain(&mut self) -> R<(f64, f64)> {
        let t0 = Instant::now();
        let child = spawn::spawn_with(&mut self.tru, &self.inherited, false, &self.io)
            .map_err(|e| format!("spawn /bin/true: {e}"))?;
        let exec = wait_exec(&child.status);
        let t1 = Instant::now();
        let (_, st) = waitpid(child.pid)?;
        let t2 = Instant::now();
        exec?;
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            return msg(format!("/bin/true ended with status {st:#x}"));
        }
        Ok((us(t1 - t0), us(t2 - t0)))
    }

    /// B: `/bin/true` in a fresh service cgroup, created and removed around it.
    fn start_cgroup(&mut self, how: Join) -> R<Start> {
        let t0 = Instant::now();
        let mut g = self.create(&self.start_name)?;
        let t1 = Instant::now();
        let child = {
            let mut join = g.get()?.join();
            if how == Join::UnifiedOnly {
                join.procs = &[];
            }
            spawn::spawn_in_cgroup(&mut self.tru, &self.inherited, false, &self.io, &join)
                .map_err(|e| format!("spawn /bin/true in its cgroup: {e}"))?
        };
        let exec = wait_exec(&child.status);
        let t2 = Instant::now();
        let (_, st) = waitpid(child.pid)?;
        let t3 = Instant::now();
        exec?;
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            return msg(format!("/bin/true in its cgroup ended with status {st:#x}"));
        }
        let retries = g.remove()?;
        let t4 = Instant::now();
        Ok(Start {
            create: us(t1 - t0),
            exec: us(t2 - t1),
            reap: us(t3 - t1),
            remove: us(t4 - t3),
            total: us(t4 - t0),
            retries,
        })
    }

    /// One phase-1 round: A, B2 (hybrid hosts), B.
    fn start_round(&mut self, s: Option<&mut StartSamples>) -> R<()> {
        let (ae, ar) = self.start_plain()?;
        let b2 = if self.hybrid {
            Some(self.start_cgroup(Join::UnifiedOnly)?)
        } else {
            None
        };
        let b = self.start_cgroup(Join::All)?;
        if let Some(s) = s {
            s.a_exec.push(ae);
            s.a_reap.push(ar);
            if let Some(b2) = b2 {
                s.b2_exec.push(b2.exec);
                s.b2_reap.push(b2.reap);
            }
            s.b_create.push(b.create);
            s.b_exec.push(b.exec);
            s.b_reap.push(b.reap);
            s.b_remove.push(b.remove);
            s.b_total.push(b.total);
            s.remove_retries += b.retries;
        }
        Ok(())
    }

    /// C: the tree in a cgroup, killed `settle` after it is up. C0 (`single`): one `sleep`
    /// that joins the unified cgroup only, killed as soon as it runs.
    fn stop_cgroup(&mut self, single: bool, settle: Duration) -> R<Stop> {
        let mut g = self.create(&self.stop_name)?;
        let ep = Epoll::new().map_err(|e| e.to_string())?;
        {
            let sc = g.get()?;
            if sc.unified_path().is_none() {
                return msg("no unified hierarchy: no populated events to wait for");
            }
            // cgroup.events is listed first when there is a unified hierarchy.
            let Some(&(fd, ev)) = sc.event_fds().first() else {
                return msg("no cgroup.events fd");
            };
            ep.add_events(fd, 1, ev).map_err(|e| e.to_string())?;
        }
        let (cmd, n) = if single {
            (&mut self.sleep, 1)
        } else {
            (&mut self.tree, TREE_SIZE)
        };
        let t_spawn = Instant::now();
        let child = {
            let mut join = g.get()?.join();
            if single {
                join.procs = &[];
            }
            spawn::spawn_in_cgroup(cmd, &self.inherited, false, &self.io, &join)
                .map_err(|e| format!("spawn into the stop cgroup: {e}"))?
        };
        wait_exec(&child.status)?;
        let pids = {
            let sc = g.get()?;
            wait_settled(n, || sc.pids())?
        };
        pause(settle)?;
        // Consume the start's notification (populated 0 -> 1): the next one is the stop's.
        let sc = g.get_mut()?;
        let mut ready = Vec::new();
        loop {
            ep.wait(&mut ready, 0).map_err(|e| e.to_string())?;
            if ready.is_empty() {
                break;
            }
            sc.read_events();
        }
        if sc.read_events().populated != Some(true) {
            return msg("cgroup.events does not say populated 1 with the tree running");
        }

        let t0 = Instant::now();
        sc.kill().map_err(|e| format!("kill: {e}"))?;
        let mut wakeups = 0;
        loop {
            ep.wait(&mut ready, 1000).map_err(|e| e.to_string())?;
            if !ready.is_empty() {
                wakeups += 1;
                if sc.read_events().populated == Some(false) {
                    break;
                }
            }
            if t0.elapsed() > TIMEOUT {
                return msg("no populated 0 within 10 s of cgroup.kill");
            }
        }
        let t1 = Instant::now();
        let stray = reap_all(&pids.iter().copied().collect())?.len();
        let t2 = Instant::now();
        g.remove()?;
        Ok(Stop {
            populated: us(t1 - t0),
            reaped: us(t2 - t0),
            age: us(t0 - t_spawn),
            wakeups,
            stray,
        })
    }

    /// D: the tree without cgroup, stopped by a process-group kill `settle` after it is up.
    /// (kill → the group's members reaped) µs, members outside the group, how many of them
    /// survived, stray pids.
    fn stop_pgrp(&mut self, settle: Duration) -> R<(f64, usize, usize, usize)> {
        let child = spawn::spawn_with(&mut self.tree, &self.inherited, false, &self.io)
            .map_err(|e| format!("spawn the tree: {e}"))?;
        wait_exec(&child.status)?;
        // SAFETY: plain syscall.
        let me = unsafe { libc::getpid() };
        let pids = wait_settled(TREE_SIZE, || {
            let mut d = Vec::new();
            descendants(me, &mut d);
            d
        })?;
        pause(settle)?;
        let mut group = BTreeSet::new();
        let mut outside = Vec::new();
        for p in &pids {
            match proc_stat(*p) {
                Some((_, pgrp, _, _)) if pgrp == child.pid => {
                    group.insert(*p);
                }
                _ => outside.push(*p),
            }
        }

        let t0 = Instant::now();
        // SAFETY: plain syscall.
        if unsafe { libc::kill(-child.pid, libc::SIGKILL) } != 0 {
            return msg(format!("kill(-{}, SIGKILL): {}", child.pid, errno_str()));
        }
        let stray = reap_all(&group)?.len();
        let t1 = Instant::now();

        // What the process-group kill missed (the setsid sleep): still running? Then it is
        // this process's (re-parented: subreaper) to kill and reap.
        let survivors = outside.iter().filter(|p| alive(**p)).count();
        for p in &outside {
            // SAFETY: plain syscall.
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
        reap_all(&outside.iter().copied().collect())?;
        Ok((us(t1 - t0), outside.len(), survivors, stray))
    }

    /// One phase-2 round: C0, C, D.
    fn stop_round(&mut self, settle: Duration, s: Option<&mut StopSamples>) -> R<()> {
        let c0 = self.stop_cgroup(true, Duration::ZERO)?;
        let c = self.stop_cgroup(false, settle)?;
        let (d, outside, survivors, stray_d) = self.stop_pgrp(settle)?;
        if let Some(s) = s {
            s.c0_populated.push(c0.populated);
            s.c0_age.push(c0.age);
            s.c0_wakeups.push(c0.wakeups as f64);
            s.c_populated.push(c.populated);
            s.c_reaped.push(c.reaped);
            s.c_wakeups.push(c.wakeups as f64);
            s.d_reaped.push(d);
            s.d_escaped += usize::from(outside > 0);
            s.d_survivors += usize::from(survivors > 0);
            s.stray_reaped += c0.stray + c.stray + stray_d;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and report
// ---------------------------------------------------------------------------------------------

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// The median (the mean of the two middle values for an even count, as bench/lib.sh).
fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s.get(n / 2).copied().unwrap_or(f64::NAN)
    } else {
        match (s.get(n / 2 - 1), s.get(n / 2)) {
            (Some(a), Some(b)) => (a + b) / 2.0,
            _ => f64::NAN,
        }
    }
}

/// Nearest-rank percentile (as bench/supervisors.sh's `pct`).
fn pct(v: &[f64], p: usize) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = (p * s.len()).div_ceil(100).max(1);
    s.get(i - 1).copied().unwrap_or(f64::NAN)
}

fn row(out: &mut String, label: &str, v: &[f64]) {
    if v.is_empty() {
        return;
    }
    let s = sorted(v);
    let _ = writeln!(
        out,
        "| {label} | {:.1} | {:.1} | {:.1} | {:.1} |",
        median(v),
        pct(v, 90),
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN)
    );
}

fn ratio_row(out: &mut String, label: &str, with: &[f64], without: &[f64]) {
    if with.is_empty() || without.is_empty() {
        return;
    }
    // Per-round difference: the two ran back to back, so drift and load hit both.
    let d: Vec<f64> = with.iter().zip(without).map(|(x, y)| x - y).collect();
    let _ = writeln!(
        out,
        "| {label} | {:.1} | {:.1} | {:.2} | {:+.1} | {:+.1} |",
        median(with),
        median(without),
        median(with) / median(without),
        median(&d),
        pct(&d, 90)
    );
}

fn limits_text(l: &Limits) -> String {
    let mut v = Vec::new();
    if let Some(Size::Bytes(b)) = l.memory_max {
        v.push(format!("memory-max {} MiB", b >> 20));
    }
    if let Some(Some(t)) = l.tasks_max {
        v.push(format!("tasks-max {t}"));
    }
    if let Some(q) = l.cpu_quota {
        v.push(format!("cpu-quota {}%", q / 100));
    }
    v.join(", ")
}

fn start_rows(o: &mut String, title: &str, s: &StartSamples) {
    let _ = writeln!(o, "| **{title}** | | | | |");
    row(
        o,
        "A. no cgroup: spawn → exec'd (`spawn_with` → exec-status EOF)",
        &s.a_exec,
    );
    row(o, "A. no cgroup: spawn → reaped (`waitpid`)", &s.a_reap);
    row(o, "B. `Cgroups::create` (mkdirs, limits, fds)", &s.b_create);
    row(o, "B. spawn → exec'd (`spawn_in_cgroup`)", &s.b_exec);
    row(o, "B. spawn → reaped", &s.b_reap);
    row(
        o,
        "B. `ServiceCgroup::remove` (after the reap)",
        &s.b_remove,
    );
    row(o, "B. total: create → removed", &s.b_total);
    row(
        o,
        "B2. spawn → exec'd, unified cgroup only (`clone3(CLONE_INTO_CGROUP)`, no v1 write)",
        &s.b2_exec,
    );
}

fn start_ratios(o: &mut String, tag: &str, s: &StartSamples) {
    ratio_row(
        o,
        &format!("{tag}: spawn → exec'd (B / A)"),
        &s.b_exec,
        &s.a_exec,
    );
    ratio_row(
        o,
        &format!("{tag}: spawn → reaped (B / A)"),
        &s.b_reap,
        &s.a_reap,
    );
    ratio_row(
        o,
        &format!("{tag}: whole start, create → removed (B) / spawn → reaped (A)"),
        &s.b_total,
        &s.a_reap,
    );
    ratio_row(
        o,
        &format!("{tag}: spawn → exec'd, unified only (B2 / A)"),
        &s.b2_exec,
        &s.a_exec,
    );
}

fn report(
    b: &Bench,
    warm: &StartSamples,
    cold: &StartSamples,
    st: &StopSamples,
    a: &Args,
    skipped: &[String],
) -> String {
    let mut o = String::new();
    let det = b.cg.detection();
    let rounds = a.rounds;
    let _ = writeln!(o, "- keel's detection: `{}`", det.summary());
    let _ = writeln!(
        o,
        "- Controllers enabled for the service cgroups: {}; service cgroups beneath: {}",
        b.cg.enabled(),
        bases(det)
            .iter()
            .map(|d| format!("`{d}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        o,
        "- Limits of every service cgroup: {}{}",
        limits_text(&b.limits),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" (not applied: {})", skipped.join("; "))
        }
    );
    let _ = writeln!(
        o,
        "- {rounds} timed rounds per phase, each phase after {} untimed warm-up rounds. Start: \
         {} ms idle, a cold round (A, {}B), at once a warm round (the same again). Stop rounds: \
         C0, C, D; the tree `sh -c '{TREE}'` is killed {} ms after its 4 `sleep`s are up. \
         Children: stdio on /dev/null, own process group; this process is a child subreaper.",
        a.warmup,
        a.gap_ms,
        if b.hybrid { "B2, " } else { "" },
        a.settle_ms
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| measurement | median (µs) | p90 (µs) | min (µs) | max (µs) |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|");
    start_rows(
        &mut o,
        &format!("Start `/bin/true`, cold ({} ms idle before)", a.gap_ms),
        cold,
    );
    start_rows(
        &mut o,
        "Start `/bin/true`, warm (right after the cold round)",
        warm,
    );
    let _ = writeln!(
        o,
        "| **Stop (SIGKILL) a tree of 4 `sleep`s: one `setsid`, one orphaned** | | | | |"
    );
    row(
        &mut o,
        "C. cgroup: `kill()` (`cgroup.kill`) → `populated 0` seen (epoll, EPOLLPRI on `cgroup.events`)",
        &st.c_populated,
    );
    row(&mut o, "C. cgroup: `kill()` → all 4 reaped", &st.c_reaped);
    row(
        &mut o,
        "D. process group: `kill(-pgid)` → the 3 group members reaped",
        &st.d_reaped,
    );
    row(
        &mut o,
        &format!(
            "C0. one `sleep`, killed as soon as it runs ({:.2} ms after its spawn, median): \
             `kill()` → `populated 0` seen",
            median(&st.c0_age) / 1000.0
        ),
        &st.c0_populated,
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| comparison | with cgroup, median (µs) | without, median (µs) | ratio | added per round: median (µs) | added: p90 (µs) |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
    start_ratios(&mut o, "cold", cold);
    start_ratios(&mut o, "warm", warm);
    ratio_row(
        &mut o,
        "stop: kill → `populated 0` (C) / kill → group reaped (D)",
        &st.c_populated,
        &st.d_reaped,
    );
    ratio_row(
        &mut o,
        "stop: kill → all reaped (C, 4 processes) / kill → group reaped (D, 3)",
        &st.c_reaped,
        &st.d_reaped,
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "\"Added per round\": the median (p90) of the per-round difference with − without; the \
         two ran back to back in every round, so drift and load changes hit both."
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "- Process-group kill (D): {} of {rounds} trees had a member outside the group (the \
         `setsid` sleep); it **survived** the kill in {} of {rounds} rounds (then killed by pid \
         and reaped, untimed). cgroup kill (C): `populated 0` in {} of {rounds} rounds, after {} \
         epoll wake-up(s) (median; C0: {}).",
        st.d_escaped,
        st.d_survivors,
        st.c_populated.len(),
        median(&st.c_wakeups),
        median(&st.c0_wakeups)
    );
    let _ = writeln!(
        o,
        "- `remove()` right after the reap answered EBUSY {} time(s) in {} starts (retried at \
         once); pids reaped that were not the tree's: {}.",
        warm.remove_retries + cold.remove_retries,
        2 * rounds,
        st.stray_reaped
    );
    let _ = writeln!(
        o,
        "- Cold vs warm B: a write to a `cgroup.procs` write-locks the kernel's \
         `cgroup_threadgroup_rwsem`, a per-CPU rwsem whose write side waits for an RCU grace \
         period unless another writer ran very recently (Linux 6.0 made that the default; the \
         `favordynmods` mount option or `cgroup_favordynmods=y` trades it for slower forks). \
         `clone3(CLONE_INTO_CGROUP)` takes no write lock: B2, and every start on a pure v2 host. \
         The wait is the child's, before its exec; keel's loop does not block on it."
    );
    let _ = writeln!(
        o,
        "- C0 vs C: the kernel sends at most one `cgroup.events` notification per cgroup every \
         10 ms (`CGROUP_FILE_NOTIFY_MIN_INTV`, whole jiffies); a change within that window of \
         the last one (C0: `populated 1` at the spawn) is sent by a timer at the window's end. \
         A service that dies or is stopped within ~10 ms of its start is seen empty that late; \
         its reaping is not delayed."
    );
    o
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

struct Args {
    rounds: usize,
    warmup: usize,
    gap_ms: u64,
    settle_ms: u64,
    raw: Option<String>,
    detect: bool,
}

fn args() -> R<Args> {
    let mut a = Args {
        rounds: 200,
        warmup: 10,
        gap_ms: 100,
        settle_ms: 50,
        raw: None,
        detect: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut num = |what: &str| -> R<u64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .map_or_else(|| msg(format!("{what} needs a number")), Ok)
        };
        match x.as_str() {
            "--rounds" => a.rounds = num("--rounds")? as usize,
            "--warmup" => a.warmup = num("--warmup")? as usize,
            "--gap-ms" => a.gap_ms = num("--gap-ms")?,
            "--settle-ms" => a.settle_ms = num("--settle-ms")?,
            "--raw" => a.raw = Some(it.next().map_or_else(|| msg("--raw needs a file"), Ok)?),
            "--detect" => a.detect = true,
            _ => return msg(format!("unknown argument {x:?} (see bench/cgbench.rs)")),
        }
    }
    if a.rounds == 0 {
        return msg("--rounds must be at least 1");
    }
    Ok(a)
}

/// Every sample, one line per round (`--raw`).
fn raw_csv(warm: &StartSamples, cold: &StartSamples, st: &StopSamples) -> String {
    let mut cols: Vec<(String, &[f64])> = Vec::new();
    for (tag, s) in [("warm", warm), ("cold", cold)] {
        for (n, v) in [
            ("a_exec", &s.a_exec),
            ("a_reap", &s.a_reap),
            ("b2_exec", &s.b2_exec),
            ("b2_reap", &s.b2_reap),
            ("b_create", &s.b_create),
            ("b_exec", &s.b_exec),
            ("b_reap", &s.b_reap),
            ("b_remove", &s.b_remove),
            ("b_total", &s.b_total),
        ] {
            cols.push((format!("{tag}_{n}_us"), v.as_slice()));
        }
    }
    for (n, v) in [
        ("c0_age", &st.c0_age),
        ("c0_populated", &st.c0_populated),
        ("c_populated", &st.c_populated),
        ("c_reaped", &st.c_reaped),
        ("d_reaped", &st.d_reaped),
    ] {
        cols.push((format!("{n}_us"), v.as_slice()));
    }
    let mut o = String::from("round");
    for (n, _) in &cols {
        o.push(',');
        o.push_str(n);
    }
    o.push('\n');
    let n = cols.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    for i in 0..n {
        let _ = write!(o, "{i}");
        for (_, v) in &cols {
            match v.get(i) {
                Some(x) => {
                    let _ = write!(o, ",{x:.1}");
                }
                None => o.push(','),
            }
        }
        o.push('\n');
    }
    o
}

fn run() -> R<()> {
    let a = args()?;
    let det = Detection::probe();
    if a.detect {
        println!("{}", det.summary());
        for d in bases(&det) {
            println!("{d}");
        }
        return Ok(());
    }
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        return msg("must run as root (it creates cgroups)");
    }
    block_stop_signals()?;
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return msg(format!("PR_SET_CHILD_SUBREAPER: {}", errno_str()));
    }
    check_alone(&det)?;
    let hybrid = det.kind == Kind::Hybrid && det.unified.is_some() && !det.unified_read_only;
    let limits = Limits {
        memory_max: Some(Size::Bytes(256 << 20)),
        tasks_max: Some(Some(64)),
        cpu_quota: Some(5_000), // 50% of one CPU
        ..Limits::default()
    };
    // Required: no usable cgroups is an error. A missing controller is not: the limits it
    // would enforce are reported as not applied (`ServiceCgroup::skipped`).
    let setup = |needed| {
        Cgroups::setup_with(
            det.clone(),
            Mode::Required,
            needed,
            keel::cgroup::mem_total(),
        )
    };
    let cg = match setup(Controllers::for_limits(&limits)) {
        Err(CgroupError::Unusable(p)) if p.partial => {
            eprintln!("bench-cgroup: {p}");
            setup(Controllers::NONE)
        }
        r => r,
    };
    let cg = match cg {
        Ok(Some(c)) => c,
        Ok(None) => return msg("cgroups are off"),
        Err(e) => return msg(format!("cgroups cannot be used here: {e}")),
    };
    let devnull = spawn::open_dev_null().map_err(|e| format!("/dev/null: {e}"))?;
    let null = Some(devnull.as_raw_fd());
    let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
    let path = spawn::path_env();
    let tru = Prepared::new(&ServiceSpec::new("true".into(), argv(&["/bin/true"])), None)?;
    let sleep = Prepared::new(
        &ServiceSpec::new("sleep".into(), argv(&["sleep", "1000"])),
        path.as_deref(),
    )?;
    let tree = Prepared::new(
        &ServiceSpec::new("tree".into(), argv(&["/bin/sh", "-c", TREE])),
        path.as_deref(),
    )?;
    // SAFETY: plain syscall.
    let me = unsafe { libc::getpid() };
    let mut b = Bench {
        cg,
        limits,
        tru,
        tree,
        sleep,
        io: ChildIo {
            stdin: null,
            stdout: null,
            stderr: null,
            extra: None,
        },
        inherited: Inherited {
            mask: SigSet::EMPTY,
            chld_was_ignored: false,
        },
        start_name: format!("{PREFIX}-{me}-start"),
        stop_name: format!("{PREFIX}-{me}-stop"),
        hybrid,
    };
    // Which limits this host cannot apply (reported, not fatal).
    let skipped = {
        let mut g = b.create(&b.start_name)?;
        let s = g.get()?.skipped.clone();
        g.remove()?;
        s
    };

    let mut warm = StartSamples::default();
    let mut cold = StartSamples::default();
    let mut stop = StopSamples::default();
    // Cold and warm interleaved, so that both see the same load: idle, a cold round, and at
    // once a warm one (its v1 writes follow the cold round's by a few ms).
    let t = Instant::now();
    let gap = Duration::from_millis(a.gap_ms);
    for i in 0..a.warmup + a.rounds {
        pause(gap)?;
        let timed = i >= a.warmup;
        b.start_round(timed.then_some(&mut cold))?;
        b.start_round(timed.then_some(&mut warm))?;
    }
    eprintln!("bench-cgroup: start: {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let settle = Duration::from_millis(a.settle_ms);
    for i in 0..a.warmup + a.rounds {
        check_signals()?;
        b.stop_round(settle, (i >= a.warmup).then_some(&mut stop))?;
    }
    eprintln!("bench-cgroup: stop: {:.1} s", t.elapsed().as_secs_f64());
    if let Some(path) = &a.raw {
        std::fs::write(path, raw_csv(&warm, &cold, &stop))
            .map_err(|e| format!("write {path}: {e}"))?;
    }
    let text = report(&b, &warm, &cold, &stop, &a, &skipped);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    Ok(())
}

fn main() {
    let r = run();
    // Whatever happened: no child left behind (the cgroups were removed by their guards).
    sweep();
    match r {
        Ok(()) => {}
        Err(Fail::Signal(sig)) => {
            eprintln!("bench-cgroup: interrupted by signal {sig}; cleaned up");
            std::process::exit(130);
        }
        Err(Fail::Msg(m)) => {
            eprintln!("bench-cgroup: {m}");
            std::process::exit(1);
        }
    }
}
