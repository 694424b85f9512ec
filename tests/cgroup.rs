//! keel's cgroup module against this host's real cgroups (hybrid here: v1 controllers plus
//! the unified hierarchy). Every test cgroup is created beneath this process's own cgroup in
//! each hierarchy and removed at the end. Skips (with the reason) without root or without a
//! writable hierarchy; `KEEL_TEST_REQUIRE=all` or `=cgroup` turns the skip into a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use keel::cgroup::{Cgroups, Controllers, Kind, Mode, ServiceCgroup};
use keel::plan::{Limits, ServiceSpec, Size};
use keel::signals::{Inherited, SigSet};
use keel::spawn::{self, CgroupJoin, ChildIo, Prepared};
use keel::sys::Epoll;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

fn cgroups(needed: Controllers) -> Option<Cgroups> {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        common::skip("cgroup", "not root: cannot create cgroups");
        return None;
    }
    // setup_with, not setup: this test process shares its cgroup (cargo, the other tests),
    // which `setup` rightly refuses for a keel; the tests' own cgroups have unique names.
    let det = keel::cgroup::Detection::probe();
    match Cgroups::setup_with(det, Mode::Required, needed, keel::cgroup::mem_total()) {
        Ok(Some(c)) => Some(c),
        Ok(None) => unreachable!("required never gives None"),
        Err(e) => {
            common::skip("cgroup", &format!("no usable cgroups here: {e}"));
            None
        }
    }
}

fn name(test: &str) -> String {
    format!("keel-test-{}-{test}", std::process::id())
}

fn inherited() -> Inherited {
    Inherited {
        mask: SigSet::EMPTY,
        chld_was_ignored: false,
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Start `sh -c script` inside `sc` (stdout on the returned pipe when `capture`).
fn start(sc: &ServiceCgroup, script: &str, join: Option<CgroupJoin<'_>>) -> (i32, OwnedFd) {
    let spec = ServiceSpec::new(
        "t".into(),
        vec![OsString::from("sh"), "-c".into(), script.into()],
    );
    let mut cmd = Prepared::new(&spec, spawn::path_env().as_deref()).unwrap();
    let (rd, wr) = pipe();
    let io = ChildIo {
        stdout: Some(wr.as_raw_fd()),
        ..ChildIo::default()
    };
    let j = join.unwrap_or_else(|| sc.join());
    let child = spawn::spawn_in_cgroup(&mut cmd, &inherited(), false, &io, &j).unwrap();
    drop(wr);
    (child.pid, rd)
}

fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).unwrap();
    s
}

/// waitpid: Ok(exit code) or Err(signal).
fn wait(pid: i32) -> Result<i32, i32> {
    let mut st = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    if libc::WIFEXITED(st) {
        Ok(libc::WEXITSTATUS(st))
    } else {
        Err(libc::WTERMSIG(st))
    }
}

fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes a test's cgroup even when the test fails half-way.
struct Guard(Option<ServiceCgroup>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut sc) = self.0.take() {
            let _ = sc.kill();
            let t = Instant::now();
            while sc.remove().is_err() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl std::ops::Deref for Guard {
    type Target = ServiceCgroup;
    fn deref(&self) -> &ServiceCgroup {
        self.0.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut ServiceCgroup {
        self.0.as_mut().unwrap()
    }
}

/// Kill, wait for empty, remove; assert the directories are gone.
fn cleanup(mut g: Guard) {
    let mut sc = g.0.take().unwrap();
    let _ = sc.kill();
    until("empty cgroup", Duration::from_secs(10), || !sc.populated());
    let dirs: Vec<_> = sc
        .unified_path()
        .into_iter()
        .chain(sc.v1_paths())
        .map(|p| p.to_path_buf())
        .collect();
    until("rmdir", Duration::from_secs(5), || sc.remove().is_ok());
    for d in dirs {
        assert!(!d.exists(), "{} still exists", d.display());
    }
}

#[test]
fn child_is_in_its_cgroups_from_the_start() {
    let Some(cg) = cgroups(Controllers::MEMORY | Controllers::PIDS) else {
        return;
    };
    let sc = Guard(Some(cg.create(&name("join"), &Limits::default()).unwrap()));
    let n = name("join");
    // clone3(CLONE_INTO_CGROUP) and then the fork fallback (no dir fd: the child writes 0).
    let fallback = CgroupJoin {
        dir: None,
        ..sc.join()
    };
    for join in [None, Some(fallback)] {
        let (pid, out) = start(&sc, "cat /proc/self/cgroup", join);
        let text = read_all(out);
        assert_eq!(wait(pid), Ok(0));
        let lines: Vec<&str> = text.lines().collect();
        if sc.unified_path().is_some() {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with("0::") && l.ends_with(&n)),
                "{text}"
            );
        }
        for ctrl in ["memory", "pids"] {
            if cg.detection().v1.iter().any(|h| h.controllers == [ctrl]) {
                assert!(
                    lines
                        .iter()
                        .any(|l| l.contains(&format!(":{ctrl}:")) && l.ends_with(&n)),
                    "{ctrl} not joined: {text}"
                );
            }
        }
    }
    cleanup(sc);
}

#[test]
fn memory_hog_is_oom_killed_and_the_oom_is_reported() {
    let Some(cg) = cgroups(Controllers::MEMORY) else {
        return;
    };
    let limits = Limits {
        memory_max: Some(Size::Bytes(32 << 20)),
        ..Limits::default()
    };
    let mut sc = Guard(Some(cg.create(&name("oom"), &limits).unwrap()));
    let ep = Epoll::new().unwrap();
    // Only the OOM sources (cgroup.events, listed first, would also wake on the exit).
    let skip = usize::from(sc.unified_path().is_some());
    for (fd, ev) in sc.event_fds().into_iter().skip(skip) {
        ep.add_events(fd, fd as u64, ev).unwrap();
    }
    // dd touches its whole 256 MiB buffer: far beyond the limit (this host has no swap; with
    // swap the hog would swap instead, so memsw is limited too where it exists).
    let (pid, _out) = start(
        &sc,
        "exec dd if=/dev/zero of=/dev/null bs=256M count=1",
        None,
    );
    assert_eq!(
        wait(pid),
        Err(libc::SIGKILL),
        "the hog must die of the OOM killer"
    );
    // The notification (v1 eventfd or memory.events) arrives without polling.
    let mut ready = Vec::new();
    ep.wait(&mut ready, 5000).unwrap();
    assert!(!ready.is_empty(), "no OOM notification within 5 s");
    let mut kills = 0;
    until("oom_kill counted", Duration::from_secs(5), || {
        kills += sc.read_events().new_oom_kills;
        kills >= 1
    });
    assert_eq!(sc.stats().oom_kills, kills);
    // Read and re-armed: nothing new.
    assert_eq!(sc.read_events().new_oom_kills, 0);
    cleanup(sc);
}

#[test]
fn tasks_max_stops_a_fork_loop() {
    let Some(cg) = cgroups(Controllers::PIDS) else {
        return;
    };
    let limits = Limits {
        tasks_max: Some(Some(5)),
        ..Limits::default()
    };
    let sc = Guard(Some(cg.create(&name("pids"), &limits).unwrap()));
    let (pid, out) = start(
        &sc,
        "n=0; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 30 >/dev/null & n=$((n+1)); done; \
         echo started; exec sleep 30",
        None,
    );
    // The fifth `sleep` cannot be forked (sh + 4 sleeps = 5): the shell gives up.
    let code = wait(pid);
    assert!(
        matches!(code, Ok(c) if c != 0),
        "sh should fail to fork: {code:?}"
    );
    assert_eq!(read_all(out), "", "the loop must not complete");
    assert_eq!(sc.stats().pids_current, Some(4), "the 4 sleeps remain");
    assert_eq!(sc.pids().len(), 4);
}

/// A daemon that double-forks and calls setsid is gone after kill, and the cgroup is removed:
/// with `cgroup.kill` (unified hierarchy) and with the v1 freeze-and-kill fallback.
#[test]
fn double_forking_daemon_cannot_escape_kill() {
    let Some(cg) = cgroups(Controllers::NONE) else {
        return;
    };
    let mut det = cg.detection().clone();
    let fallback =
        if det.kind == Kind::Hybrid && det.v1.iter().any(|h| h.controllers == ["freezer"]) {
            det.unified = None;
            Cgroups::setup_with(det, Mode::Required, Controllers::NONE, 0)
                .unwrap()
                .map(|c| ("freeze+kill", c))
        } else {
            None
        };
    for (how, cg) in std::iter::once(("cgroup.kill", cg)).chain(fallback) {
        let sc = Guard(Some(
            cg.create(&name("daemon"), &Limits::default()).unwrap(),
        ));
        let ep = Epoll::new().unwrap();
        for (fd, ev) in sc.event_fds() {
            ep.add_events(fd, fd as u64, ev).unwrap();
        }
        let (pid, out) = start(
            &sc,
            "(setsid sh -c 'sleep 300 & sleep 301' </dev/null >/dev/null 2>&1 &); echo ok",
            None,
        );
        assert_eq!(read_all(out).trim(), "ok");
        assert_eq!(wait(pid), Ok(0));
        until("daemon running", Duration::from_secs(5), || {
            sc.pids().len() >= 2
        });
        let escaped = sc.pids();
        let n = sc.kill().unwrap();
        if how == "freeze+kill" {
            assert!(n >= 2, "{how}: signalled {n}");
        }
        until("daemon gone", Duration::from_secs(10), || !sc.populated());
        for p in &escaped {
            until("pid gone", Duration::from_secs(10), || {
                let st = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                st.is_empty() || st.contains(") Z ")
            });
        }
        if sc.unified_path().is_some() {
            // populated 0 was notified (EPOLLPRI on cgroup.events), not polled for.
            let mut ready = Vec::new();
            ep.wait(&mut ready, 2000).unwrap();
            assert!(!ready.is_empty(), "{how}: no cgroup.events notification");
        }
        cleanup(sc);
    }
}

#[test]
fn cpu_quota_caps_a_burner() {
    let Some(cg) = cgroups(Controllers::CPU) else {
        return;
    };
    let limits = Limits {
        cpu_quota: Some(2_000), // 20% of one CPU
        cpu_quota_period: Some(Duration::from_millis(20)),
        ..Limits::default()
    };
    let sc = Guard(Some(cg.create(&name("cpu"), &limits).unwrap()));
    let (pid, _out) = start(&sc, "while :; do :; done", None);
    std::thread::sleep(Duration::from_millis(300));
    let (t0, u0) = (Instant::now(), sc.stats().cpu_usage_usec);
    std::thread::sleep(Duration::from_secs(3));
    let (t1, u1) = (Instant::now(), sc.stats().cpu_usage_usec);
    let (Some(u0), Some(u1)) = (u0, u1) else {
        cleanup(sc);
        panic!("no CPU usage statistics");
    };
    let pct = (u1 - u0) as f64 / (t1 - t0).as_micros() as f64 * 100.0;
    cleanup(sc);
    let _ = wait(pid);
    // The cap is exact from above; from below only CPU contention (2 shared cores) can pull it.
    assert!(
        (15.0..=25.0).contains(&pct),
        "burner used {pct:.1}% of one CPU"
    );
}
