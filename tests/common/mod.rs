//! Shared harness for keel's integration tests: run the real binary, as PID 1 of a new PID
//! namespace (root, or a user namespace) or as a plain process, and observe it from outside.
//!
//! Tests that need something this machine lacks skip with a printed reason, unless
//! `KEEL_TEST_REQUIRE=all` (CI) — then a skip is a failure.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod pty;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The keel binary cargo built for these tests.
pub fn keel() -> &'static str {
    env!("CARGO_BIN_EXE_keel")
}

/// Skip the calling test with `reason`, or fail it when the environment requires everything.
/// Returns normally when the test should be skipped (the caller then returns).
pub fn skip(feature: &str, reason: &str) {
    let req = std::env::var("KEEL_TEST_REQUIRE").unwrap_or_default();
    if req
        .split(',')
        .any(|r| r.trim() == "all" || r.trim() == feature)
    {
        panic!("required test environment '{feature}' is missing: {reason}");
    }
    eprintln!("SKIP ({feature}): {reason}");
}

/// The command prefix that makes the next program PID 1 of a new PID namespace, or `None`
/// (after printing why) when this machine allows neither root nor user namespaces.
pub fn pid1_prefix() -> Option<Vec<&'static str>> {
    static CHOICE: std::sync::OnceLock<Result<Vec<&'static str>, String>> =
        std::sync::OnceLock::new();
    let choice = CHOICE.get_or_init(|| {
        let candidates: [&[&'static str]; 2] = [
            &["unshare", "--pid", "--fork", "--mount-proc"],
            &["unshare", "-Urpf", "--mount-proc"],
        ];
        let mut why = String::new();
        for c in candidates {
            let out = Command::new(c[0])
                .args(&c[1..])
                .args(["sh", "-c", "echo $$"])
                .output();
            match out {
                Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "1" => {
                    return Ok(c.to_vec());
                }
                Ok(o) => {
                    why = format!(
                        "{} failed: {}",
                        c.join(" "),
                        String::from_utf8_lossy(&o.stderr).trim()
                    )
                }
                Err(e) => why = format!("cannot run unshare: {e}"),
            }
        }
        Err(why)
    });
    match choice {
        Ok(v) => Some(v.clone()),
        Err(why) => {
            skip("pidns", &format!("no PID namespace available ({why})"));
            None
        }
    }
}

/// A fresh scratch directory, removed by the caller if it likes (all live under target's tmp).
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "keel-test-{}-{}-{}",
        std::process::id(),
        name,
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How to run keel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of a new PID namespace.
    Pid1,
    /// A plain process (keel becomes a subreaper).
    Plain,
}

/// A running keel.
pub struct Running {
    /// The process the test spawned (unshare, or keel itself).
    pub child: Child,
    /// keel's pid as seen from the test.
    pub keel_pid: i32,
    pub started: Instant,
}

/// Build the command for keel `args` in `mode`; None if the mode is unavailable (skipped).
pub fn command(mode: Mode, args: &[&str]) -> Option<Command> {
    command_as(Path::new(keel()), mode, args)
}

/// Like [`command`], running keel through `bin` (a symlink giving it another name).
pub fn command_as(bin: &Path, mode: Mode, args: &[&str]) -> Option<Command> {
    let mut cmd = match mode {
        Mode::Pid1 => {
            let prefix = pid1_prefix()?;
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]).arg(bin);
            c
        }
        Mode::Plain => Command::new(bin),
    };
    cmd.args(args);
    Some(cmd)
}

/// keel under another name (`tini`, `docker-init`, `dumb-init`, `catatonit`): a symlink in a
/// scratch directory, as users migrate.
pub fn personality(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-test-{}-bin", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let link = dir.join(name);
    if !link.exists() {
        let _ = std::os::unix::fs::symlink(keel(), &link);
    }
    link
}

/// Start keel through `bin` with `args` in `mode`, stdout/stderr captured.
pub fn start_as(bin: &Path, mode: Mode, args: &[&str], env: &[(&str, &str)]) -> Option<Running> {
    let mut cmd = command_as(bin, mode, args)?;
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Some(spawn(cmd, mode))
}

/// The one-letter state of `pid` (`S`, `T` stopped, `Z`, ...).
pub fn state(pid: i32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .and_then(|t| t.chars().next())
        })
        .unwrap_or('?')
}

/// Start keel with `args` in `mode`, stdout/stderr captured.
pub fn start(mode: Mode, args: &[&str], env: &[(&str, &str)]) -> Option<Running> {
    let mut cmd = command(mode, args)?;
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Some(spawn(cmd, mode))
}

/// Spawn a prepared command and find keel's pid.
pub fn spawn(mut cmd: Command, mode: Mode) -> Running {
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn keel");
    let keel_pid = match mode {
        Mode::Plain => child.id() as i32,
        Mode::Pid1 => {
            // A fast run may come and go before it is seen: then there is nothing to signal
            // (pid 0), and `finish` still gets the exit status.
            let mut found = None;
            let seen = wait_until(Duration::from_secs(10), || {
                found = child_of(child.id() as i32, Duration::ZERO);
                found.is_some() || child.try_wait().ok().flatten().is_some()
            });
            assert!(seen, "unshare's child (keel) did not appear");
            found.unwrap_or(0)
        }
    };
    Running {
        child,
        keel_pid,
        started,
    }
}

/// The first child of `pid`, polling until it appears.
pub fn child_of(pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            && let Some(first) = s.split_whitespace().next()
        {
            return first.parse().ok();
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Send `sig` to `pid`.
pub fn send(pid: i32, sig: i32) {
    // kill(0) or kill(-1) would hit the test runner itself.
    assert!(pid != 0 && pid != -1, "no pid to signal");
    // SAFETY: plain syscall.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}) failed");
}

/// Whether `pid` exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").split_whitespace().next();
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Poll until `f` is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// The file's contents ("" if missing).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Wait until `path` contains `needle` (as a whole line); panics with the contents if not.
pub fn wait_line(path: &Path, needle: &str, timeout: Duration) {
    let ok = wait_until(timeout, || read(path).lines().any(|l| l == needle));
    assert!(
        ok,
        "'{needle}' did not appear in {} within {timeout:?}; it holds:\n{}",
        path.display(),
        read(path)
    );
}

impl Drop for Running {
    /// A test that panics before `finish` must not leave keel (and, as PID 1, its namespace)
    /// running: kill it. After `finish` the child has exited and this does nothing.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if self.keel_pid > 0 {
                // SAFETY: plain syscall.
                unsafe { libc::kill(self.keel_pid, libc::SIGKILL) };
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished keel left.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    /// The exit code; panics if killed by a signal.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| {
            panic!(
                "keel died of a signal: {:?}\nstderr:\n{}",
                self.status, self.stderr
            )
        })
    }
}

impl Running {
    /// Wait for keel to exit (at most `timeout`, else kill it and panic).
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                if self.keel_pid > 0 {
                    // SAFETY: plain syscall; keel may be a grandchild (under unshare).
                    unsafe { libc::kill(self.keel_pid, libc::SIGKILL) };
                }
                let _ = self.child.wait();
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("keel did not exit within {timeout:?}; stderr:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let elapsed = self.started.elapsed();
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut stdout);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        Finished {
            status,
            stdout,
            stderr,
            elapsed,
        }
    }
}

/// Run keel to completion with `args` in `mode`.
pub fn run(mode: Mode, args: &[&str], env: &[(&str, &str)]) -> Option<Finished> {
    Some(start(mode, args, env)?.finish(Duration::from_secs(30)))
}

/// Both modes, for tests that must hold either way.
pub const MODES: [Mode; 2] = [Mode::Pid1, Mode::Plain];

/// A cgroup of its own for one keel under test, as a container runtime gives its init: a
/// directory beneath this test process's cgroup in every writable hierarchy (v1 ones and the
/// unified one). keel refuses (`required`) or skips (`auto`) per-service cgroups in a cgroup
/// it shares, so tests that exercise them start keel inside one of these. Removed on drop.
pub struct TestCgroup {
    /// The directories, one per hierarchy.
    pub dirs: Vec<PathBuf>,
    /// Their name, beneath this process's cgroup in each hierarchy.
    pub leaf: String,
}

impl TestCgroup {
    /// Make the directories; `None` (after the skip notice) without root or writable cgroups.
    pub fn new(name: &str) -> Option<TestCgroup> {
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } != 0 {
            skip("cgroup", "not root: cannot create cgroups");
            return None;
        }
        let det = keel::cgroup::Detection::probe();
        let leaf = format!("keel-test-{}-{name}", std::process::id());
        let mut bases: Vec<PathBuf> = det.unified.iter().cloned().collect();
        bases.extend(
            det.v1
                .iter()
                .filter(|h| !h.read_only && h.is_used())
                .map(|h| h.dir.clone()),
        );
        let mut dirs = Vec::new();
        for b in bases {
            let d = b.join(&leaf);
            match std::fs::create_dir(&d) {
                Ok(()) => dirs.push(d),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => dirs.push(d),
                Err(e) => {
                    let cg = TestCgroup { dirs, leaf };
                    drop(cg);
                    skip("cgroup", &format!("cannot create {}: {e}", d.display()));
                    return None;
                }
            }
        }
        if dirs.is_empty() {
            skip("cgroup", "no writable cgroup hierarchy");
            return None;
        }
        Some(TestCgroup { dirs, leaf })
    }

    /// Arguments that run the rest of the command line inside this cgroup: a shell moves
    /// itself in every hierarchy, then execs (so under `unshare --fork` the PID 1 that keel
    /// becomes is the one inside, and unshare itself stays outside).
    pub fn wrap(&self) -> Vec<String> {
        let procs: Vec<String> = self
            .dirs
            .iter()
            .map(|d| d.join("cgroup.procs").display().to_string())
            .collect();
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "for p in {}; do echo 0 > \"$p\" || exit 125; done; exec \"$@\"",
                procs.join(" ")
            ),
            "sh".into(),
        ]
    }

    /// Whether any directory (or one beneath it) still exists besides the top ones.
    pub fn children(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for d in &self.dirs {
            if let Ok(rd) = std::fs::read_dir(d) {
                v.extend(
                    rd.filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        v
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // keel removes what it made; anything left (a failed test) goes first.
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.filter_map(Result::ok) {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Build the command for keel `args` in `mode`, started inside `cg`.
pub fn command_in(cg: &TestCgroup, mode: Mode, args: &[&str]) -> Option<Command> {
    let mut cmd = match mode {
        Mode::Pid1 => {
            let prefix = pid1_prefix()?;
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]);
            c
        }
        Mode::Plain => {
            let w = cg.wrap();
            let mut c = Command::new(&w[0]);
            c.args(&w[1..]).arg(keel()).args(args);
            return Some(c);
        }
    };
    cmd.args(cg.wrap()).arg(keel()).args(args);
    Some(cmd)
}

/// `keel ctl ARGS` with `env`: (exit code, stdout, stderr).
pub fn keel_ctl(args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
    let out = Command::new(keel())
        .arg("ctl")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
