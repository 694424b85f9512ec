//! keel under real container engines: a private `dockerd` and podman, on this machine.
//!
//! - `docker`: keel as Docker's `--init` (dockerd `--init-path` names the static keel, as the
//!   README says): `docker info`/`docker version` parse its version, PID 1 is
//!   `/sbin/docker-init`, exit codes and signals pass through, orphans are reaped, `docker stop` is fast (and `KEEL_STOP_TIMEOUT` bounds it), `docker run
//!   -it` gives a shell with job control. Then the same checks with keel as an image's
//!   ENTRYPOINT (`examples/Dockerfile`), and the in-container scenarios of `Dockerfile.test`
//!   (`tests/docker/`), under keel as the ENTRYPOINT and under `--init`.
//! - `podman`: keel as podman's `--init` (`--init-path`), with the same core checks.
//! - `docker_workspace`: the services-mode example `examples/workspace/`, built and run by its
//!   own `run.sh`: four services from `/etc/keel/keel.d` come up in order, log with prefixes,
//!   restart, reload on SIGHUP, leave no zombies, and stop fast with exit 0.
//!   `workspace_config_checks` validates its configuration with `keel check`, without docker.
//! - `docker_cgroups`: per-service cgroups, keel as the ENTRYPOINT of a busybox image with
//!   three services: under `--privileged` (default host and private cgroup namespace)
//!   memory-max OOM-kills and restarts one service while the others keep their pids, tasks-max
//!   stops a fork loop, `keel ctl status` shows MEM/PIDS/OOM; a default container (read-only
//!   cgroupfs) gets one warning with the fix and runs; `cgroups = "required"` exits 78.
//!
//! Each test starts what it needs (its own dockerd with its own data root, exec root, socket,
//! containerd namespace and cgroup parent; podman with its own storage and state directories)
//! and tears it all down at the end, also when a check fails. No registry is used: the base
//! image is imported from Debian's busybox-static. Needs root, `dockerd` (Debian `docker.io`),
//! a static `/bin/busybox` (`busybox-static`), `tar`, and `podman` for the podman test.
//! Without them a test skips with a printed reason, unless `KEEL_TEST_REQUIRE` is `all` or
//! names `docker` / `podman`: then it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::pty::{Screen, open_pty};
use common::skip;
use std::ffi::CString;
use std::io::{Read, Write};

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MUSL: &str = "x86_64-unknown-linux-musl";
const BASE: &str = "keel-test-base:latest";
const EXAMPLE: &str = "keel-example:latest";
const SCENARIOS: &str = "keel-test-scenarios:latest";

/// The two tests share the machine's 2 cores and time-sensitive checks: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

// ------------------------------------------------------------------------------------------
// Running commands

/// What a finished command did.
struct Out {
    /// Exit code, or 128+N when killed by signal N.
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Out {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    fn describe(&self) -> String {
        format!(
            "exit {} after {:.2}s\n--- stdout\n{}--- stderr\n{}---",
            self.code,
            self.took.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// Run `cmd` (stdin from /dev/null), capturing its output; kill it after `timeout`.
fn run(cmd: &mut Command, timeout: Duration) -> Result<Out, String> {
    let what = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    }
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("wait {what}: {e}"))? {
            let took = start.elapsed();
            return Ok(Out {
                code: st.code().or_else(|| st.signal().map(|s| 128 + s)).unwrap(),
                stdout: out.join().unwrap(),
                stderr: err.join().unwrap(),
                took,
            });
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} still running after {timeout:?}: killed"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `name` in $PATH or the sbin directories (root's tools), if it is there.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Whether `path` is an ELF executable without a program interpreter (statically linked).
fn is_static_elf(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) != 3 // PT_INTERP
    })
}

/// The static (musl) keel, built by cargo if it is missing or older than the sources.
fn static_keel() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| root.join(t))
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join(MUSL).join("release").join("keel");
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let o = run(
        Command::new(cargo).current_dir(root).args([
            "build",
            "--release",
            "--target",
            MUSL,
            "--bin",
            "keel",
        ]),
        Duration::from_secs(900),
    )?;
    if o.code != 0 {
        return Err(format!(
            "cargo build --release --target {MUSL} failed (`rustup target add {MUSL}`?): {}",
            o.describe()
        ));
    }
    if !is_static_elf(&bin) {
        return Err(format!("{} is not a static executable", bin.display()));
    }
    println!(
        "static keel: {} ({} bytes; cargo build took {:.1}s)",
        bin.display(),
        bin.metadata().map(|m| m.len()).unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    Ok(bin)
}

/// A fresh directory under the system temp dir, for one test run.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// A root filesystem of Debian's static busybox (every applet linked in /bin), as a tar file
/// for `docker import` / `podman import`.
fn base_rootfs_tar(dir: &Path, busybox: &Path) -> Result<PathBuf, String> {
    let root = base_rootfs(dir, "rootfs", busybox)?;
    tar_dir(&root, &dir.join("rootfs.tar"))
}

/// The directory `dir/name` made a root filesystem of Debian's static busybox.
fn base_rootfs(dir: &Path, name: &str, busybox: &Path) -> Result<PathBuf, String> {
    let root = dir.join(name);
    for d in [
        "bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "run",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    let list = run(Command::new(busybox).arg("--list"), Duration::from_secs(10))?;
    for applet in list.stdout.lines().map(str::trim) {
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    Ok(root)
}

/// `root`'s contents as the tar file `tar`.
fn tar_dir(root: &Path, tar: &Path) -> Result<PathBuf, String> {
    let o = run(
        Command::new("tar")
            .arg("-C")
            .arg(root)
            .arg("-cf")
            .arg(tar)
            .arg("."),
        Duration::from_secs(60),
    )?;
    if o.code != 0 {
        return Err(format!("tar: {}", o.describe()));
    }
    Ok(tar.to_path_buf())
}

// ------------------------------------------------------------------------------------------
// Host state the engines leave behind: processes, mounts, cgroups

/// SIGKILL every process (but this one) whose command line mentions `marker` (a scratch
/// directory unique to this test run); returns what it killed.
fn kill_leftovers(marker: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut killed = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            // SAFETY: plain kill(2) of a pid this test run started (its scratch dir is unique).
            unsafe { libc::kill(name.parse().unwrap(), libc::SIGKILL) };
            killed.push(format!("{name} {cmdline}"));
        }
    }
    killed
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut m: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    m.sort_by_key(|p| std::cmp::Reverse(p.len()));
    m.dedup();
    m
}

/// Detach every mount left at or below `dir`; returns those it found.
fn unmount_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for _ in 0..3 {
        let m = mounts_under(dir);
        if m.is_empty() {
            break;
        }
        for p in m {
            let c = CString::new(p.clone()).unwrap();
            // SAFETY: umount2 with a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            found.push(p);
        }
    }
    found
}

/// (mount point, this process's cgroup path) for each cgroup hierarchy, from
/// /proc/self/cgroup and /proc/self/mountinfo (v1 hierarchies and the v2 one).
fn own_cgroups() -> Vec<(PathBuf, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts: Vec<(PathBuf, String, Vec<String>)> = info
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mp = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?.to_string();
            let opts = post.nth(1)?.split(',').map(String::from).collect();
            Some((PathBuf::from(mp), fstype, opts))
        })
        .filter(|(_, t, _)| t == "cgroup" || t == "cgroup2")
        .collect();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut out = Vec::new();
    for l in own.lines() {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or("/"));
        let m = mounts.iter().find(|(_, t, opts)| {
            if ctrls.is_empty() {
                t == "cgroup2"
            } else {
                t == "cgroup" && ctrls.split(',').all(|c| opts.iter().any(|o| o == c))
            }
        });
        if let Some((mp, _, _)) = m {
            out.push((mp.clone(), path.to_string()));
        }
    }
    out
}

/// Cgroup directories an engine will create for this test run: remembered before it starts
/// (the top-most missing ancestor of each) and removed, with whatever grew below, at the end.
struct CgroupLitter {
    tops: Vec<PathBuf>,
}

impl CgroupLitter {
    /// `dirs`: (hierarchy mount point, cgroup path the engine will use in it).
    fn plan(dirs: &[(PathBuf, String)]) -> CgroupLitter {
        let mut tops = Vec::new();
        for (mount, path) in dirs {
            let mut p = mount.clone();
            for comp in path.split('/').filter(|c| !c.is_empty()) {
                p.push(comp);
                if !p.exists() {
                    tops.push(p.clone());
                    break;
                }
            }
        }
        CgroupLitter { tops }
    }

    /// Remove the planned directories that exist now; returns those it could not remove.
    fn clean(&self) -> Vec<String> {
        fn rm(p: &Path) -> std::io::Result<()> {
            for e in std::fs::read_dir(p)?.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    rm(&e.path())?;
                }
            }
            std::fs::remove_dir(p)
        }
        let mut left = Vec::new();
        for t in &self.tops {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match rm(t) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        left.push(format!("{}: {e}", t.display()));
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        left
    }
}

/// Remove what a test run left on the host under `dir` (processes, mounts, cgroups, files).
fn clean_host(dir: &Path, litter: &CgroupLitter) {
    let killed = kill_leftovers(&dir.to_string_lossy());
    if !killed.is_empty() {
        eprintln!("cleanup: killed leftover processes: {killed:#?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let mounts = unmount_under(dir);
    if !mounts.is_empty() {
        eprintln!("cleanup: detached leftover mounts: {mounts:#?}");
    }
    let left = litter.clean();
    if !left.is_empty() {
        eprintln!("cleanup: could not remove cgroups: {left:#?}");
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("cleanup: could not remove {}: {e}", dir.display());
    }
}

// ------------------------------------------------------------------------------------------
// Engines, containers, targets

/// A container CLI (docker or podman) bound to this test run's daemon or storage.
#[derive(Clone)]
struct Engine {
    name: &'static str,
    cli: PathBuf,
    /// Arguments before the subcommand (podman's storage options).
    global: Vec<String>,
    env: Vec<(String, String)>,
    /// Extra `run` flags every container gets.
    run_flags: Vec<String>,
    /// How to remove a container at once.
    rm_force: Vec<&'static str>,
}

impl Engine {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cli);
        c.args(&self.global)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn run_t(&self, args: &[&str], timeout: Duration) -> Result<Out, String> {
        run(&mut self.command(args), timeout)
    }

    fn run(&self, args: &[&str]) -> Result<Out, String> {
        self.run_t(args, Duration::from_secs(60))
    }

    /// Run and require exit 0.
    fn ok(&self, args: &[&str]) -> Result<Out, String> {
        let o = self.run(args)?;
        if o.code != 0 {
            return Err(format!(
                "{} {}: {}",
                self.name,
                args.join(" "),
                o.describe()
            ));
        }
        Ok(o)
    }

    fn exit_code(&self, name: &str) -> Result<i32, String> {
        let o = self.ok(&["inspect", "--format", "{{.State.ExitCode}}", name])?;
        o.stdout
            .trim()
            .parse()
            .map_err(|e| format!("exit code '{}': {e}", o.stdout.trim()))
    }

    fn logs(&self, name: &str) -> Result<String, String> {
        Ok(self.ok(&["logs", name])?.all())
    }

    /// Poll `logs` until it contains `needle`.
    fn wait_logs(&self, name: &str, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs(name)?;
            if logs.contains(needle) {
                return Ok(logs);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "'{needle}' not in the logs of {name} after {timeout:?}:\n{logs}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A container name unique to this test run, removed (forcibly) when dropped.
struct Container<'a> {
    e: &'a Engine,
    name: String,
}

impl<'a> Container<'a> {
    fn new(e: &'a Engine) -> Container<'a> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "keel-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        Container { e, name }
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let mut args = self.e.rm_force.clone();
        args.push(&self.name);
        let _ = self.e.run(&args);
    }
}

/// One way keel runs as PID 1: an engine, the image and flags to start it, what PID 1 is.
struct Target<'a> {
    e: &'a Engine,
    label: &'static str,
    /// `run` flags that make keel PID 1 (`--init`...), empty when the image's ENTRYPOINT is keel.
    init_flags: Vec<String>,
    image: &'static str,
    /// argv[0] of PID 1 in the container.
    pid1: &'static str,
    /// Exit code and a piece of stderr for a command that does not exist: keel's own (127),
    /// or those of the init whose personality PID 1's name selects (tini 127, catatonit 1).
    exec_fail: (i32, &'static str),
}

impl Target<'_> {
    fn run_args<'s>(&'s self, flags: &[&'s str], cmd: &[&'s str]) -> Vec<&'s str> {
        let mut a = vec!["run"];
        a.extend(self.e.run_flags.iter().map(String::as_str));
        a.extend(self.init_flags.iter().map(String::as_str));
        a.extend_from_slice(flags);
        a.push(self.image);
        a.extend_from_slice(cmd);
        a
    }

    /// `run --rm IMAGE CMD...`, attached.
    fn run(&self, cmd: &[&str]) -> Result<Out, String> {
        self.e.run(&self.run_args(&["--rm"], cmd))
    }

    /// `run -d --name N [flags] IMAGE CMD...`; waits for `ready` in its logs if given.
    fn start(
        &self,
        flags: &[&str],
        cmd: &[&str],
        ready: Option<&str>,
    ) -> Result<Container<'_>, String> {
        let c = Container::new(self.e);
        let mut f = vec!["-d", "--name", c.name.as_str()];
        f.extend_from_slice(flags);
        self.e.ok(&self.run_args(&f, cmd))?;
        if let Some(r) = ready {
            self.e.wait_logs(&c.name, r, Duration::from_secs(20))?;
        }
        Ok(c)
    }
}

// ------------------------------------------------------------------------------------------
// Checks

/// Collects check results; a failing (or panicking) check does not stop the others.
#[derive(Default)]
struct Report {
    passed: usize,
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, name: &str, f: impl FnOnce() -> Result<String, String>) {
        let started = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(f))
            .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&p))));
        let took = started.elapsed().as_secs_f64();
        match r {
            Ok(detail) => {
                self.passed += 1;
                println!("ok   {name} ({took:.1}s): {detail}");
            }
            Err(why) => {
                println!("FAIL {name} ({took:.1}s): {why}");
                self.failures.push(format!("{name}: {why}"));
            }
        }
    }

    fn finish(self, what: &str, started: Instant) {
        println!(
            "{what}: {} checks passed, {} failed, in {:.1}s",
            self.passed,
            self.failures.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            self.failures.is_empty(),
            "{what}: {} check(s) failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "?".into())
}

/// The checks every target gets.
fn common_checks(r: &mut Report, t: &Target) {
    let l = t.label;
    r.check(&format!("{l}: PID 1 is {}", t.pid1), || pid1(t));
    r.check(&format!("{l}: exit codes pass through"), || exit_codes(t));
    r.check(
        &format!("{l}: kill -s USR1 reaches CMD; stop is fast, 143"),
        || forward_and_stop(t),
    );
    r.check(
        &format!("{l}: KEEL_STOP_TIMEOUT=2s bounds stop, 137"),
        || stop_timeout(t),
    );
    r.check(&format!("{l}: an orphan storm leaves no zombie"), || {
        orphan_storm(t)
    });
    r.check(
        &format!("{l}: a straggler is drained after CMD exits"),
        || drain(t),
    );
}

fn pid1(t: &Target) -> Result<String, String> {
    let o = t.run(&["ps", "-o", "pid,ppid,stat,args"])?;
    let line = o
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .ok_or_else(|| format!("no PID 1 in ps: {}", o.describe()))?;
    let args = line
        .split_whitespace()
        .skip(3)
        .collect::<Vec<_>>()
        .join(" ");
    if o.code != 0 || !args.starts_with(&format!("{} -- ps", t.pid1)) {
        return Err(format!(
            "PID 1 is '{args}', want {} ...: {}",
            t.pid1,
            o.describe()
        ));
    }
    Ok(format!("PID 1: {args}"))
}

fn exit_codes(t: &Target) -> Result<String, String> {
    let (fail_code, fail_msg) = t.exec_fail;
    let cases: [(&[&str], i32); 5] = [
        (&["sh", "-c", "exit 0"], 0),
        (&["sh", "-c", "exit 3"], 3),
        (&["sh", "-c", "exit 255"], 255),
        (&["sh", "-c", "kill -TERM $$"], 143),
        (&["nosuch-cmd"], fail_code),
    ];
    let mut seen = Vec::new();
    let mut message = String::new();
    for (cmd, want) in cases {
        let o = t.run(cmd)?;
        if o.code != want {
            return Err(format!("{cmd:?}: want {want}, {}", o.describe()));
        }
        if cmd == ["nosuch-cmd"] {
            if !o.stderr.contains(fail_msg) {
                return Err(format!(
                    "{cmd:?}: want '{fail_msg}' on stderr: {}",
                    o.describe()
                ));
            }
            message = o.stderr.trim().to_string();
        }
        seen.push(format!("{}→{}", cmd.last().unwrap(), o.code));
    }
    Ok(format!("{}; stderr: {message}", seen.join(", ")))
}

fn forward_and_stop(t: &Target) -> Result<String, String> {
    let c = t.start(
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo got USR1' USR1; echo ready; while :; do sleep 0.1; done",
        ],
        Some("ready"),
    )?;
    t.e.ok(&["kill", "-s", "USR1", &c.name])?;
    t.e.wait_logs(&c.name, "got USR1", Duration::from_secs(10))?;
    let o = t.e.ok(&["stop", &c.name])?;
    let code = t.e.exit_code(&c.name)?;
    println!(
        "  {}: `{} stop` of a CMD that dies on TERM took {:.2}s",
        t.label,
        t.e.name,
        o.took.as_secs_f64()
    );
    if o.took >= Duration::from_secs(5) {
        return Err(format!(
            "stop took {:.2}s (keel did not pass TERM on?)",
            o.took.as_secs_f64()
        ));
    }
    if code != 143 {
        return Err(format!(
            "exit code after stop {code}, want 143; logs:\n{}",
            t.e.logs(&c.name)?
        ));
    }
    Ok(format!(
        "USR1 trapped by CMD; stop took {:.2}s; exit 143",
        o.took.as_secs_f64()
    ))
}

fn stop_timeout(t: &Target) -> Result<String, String> {
    let c = t.start(
        &["-e", "KEEL_STOP_TIMEOUT=2s"],
        &[
            "sh",
            "-c",
            "trap 'echo TERM ignored' TERM; echo ready; while :; do sleep 0.1; done",
        ],
        Some("ready"),
    )?;
    let o = t.e.ok(&["stop", "-t", "30", &c.name])?;
    let code = t.e.exit_code(&c.name)?;
    let logs = t.e.logs(&c.name)?;
    println!(
        "  {}: `{} stop -t 30` of a CMD that ignores TERM, KEEL_STOP_TIMEOUT=2s, took {:.2}s",
        t.label,
        t.e.name,
        o.took.as_secs_f64()
    );
    if o.took >= Duration::from_secs(8) || o.took < Duration::from_millis(1500) {
        return Err(format!(
            "stop took {:.2}s, want about 2s; logs:\n{logs}",
            o.took.as_secs_f64()
        ));
    }
    if code != 137 {
        return Err(format!("exit code {code}, want 137; logs:\n{logs}"));
    }
    if !logs.contains("TERM ignored") {
        return Err(format!("CMD never saw the TERM; logs:\n{logs}"));
    }
    Ok(format!("stop took {:.2}s; exit 137", o.took.as_secs_f64()))
}

fn orphan_storm(t: &Target) -> Result<String, String> {
    let c = t.start(&[], &["sleep", "600"], None)?;
    let storm = "i=0; while [ $i -lt 500 ]; do (sleep 0.0$((i % 5 + 1)) &); i=$((i+1)); done; \
                 (sleep 60 &); echo stormed";
    let s = t.e.ok(&["exec", &c.name, "sh", "-c", storm])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps =
            t.e.ok(&["exec", &c.name, "ps", "-o", "pid,ppid,stat,args"])?
                .stdout;
        let zombies: Vec<&str> = ps
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(2)
                    .is_some_and(|s| s.starts_with('Z'))
            })
            .collect();
        if zombies.is_empty() {
            let adopted = ps
                .lines()
                .find(|l| l.ends_with("sleep 60"))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("?")
                .to_string();
            if adopted != "1" {
                return Err(format!(
                    "the orphan 'sleep 60' has parent {adopted}, not 1:\n{ps}"
                ));
            }
            return Ok(format!(
                "500 orphans from `exec` (spawned in {:.1}s) adopted by PID 1; no zombie",
                s.took.as_secs_f64()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} zombie(s) 10s after the storm:\n{ps}",
                zombies.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn drain(t: &Target) -> Result<String, String> {
    let o = t.run(&[
        "sh",
        "-c",
        "(trap 'echo straggler got TERM; exit 0' TERM; while :; do sleep 0.1; done) & sleep 0.5; exit 5",
    ])?;
    if o.code != 5 || !o.stdout.contains("straggler got TERM") {
        return Err(format!(
            "want exit 5 and the straggler's TERM message: {}",
            o.describe()
        ));
    }
    if o.took >= Duration::from_secs(3) {
        return Err(format!(
            "the container took {:.2}s: keel waited for --grace instead of exiting when nothing was left",
            o.took.as_secs_f64()
        ));
    }
    Ok(format!(
        "exit 5, straggler got TERM, container done in {:.2}s (CMD ran 0.5s; --grace 3s)",
        o.took.as_secs_f64()
    ))
}

/// `docker info` names the init and reports the commit dockerd parsed from `keel --version`
/// (`keel X - git.<commit>`); `docker version` lists the init with that commit; the daemon's
/// log has no warning about it.
fn docker_info(e: &Engine, init: &Path, log: &Path) -> Result<String, String> {
    let want = env!("KEEL_GIT_COMMIT");
    let name = init.file_name().unwrap().to_string_lossy().into_owned();
    let init_s = init.to_string_lossy().into_owned();
    let info = e.ok(&["info"])?.stdout;
    let mut problems = Vec::new();
    if !info.contains(&format!("Init Binary: {init_s}")) {
        problems.push(format!(
            "`docker info` does not show 'Init Binary: {init_s}':\n{info}"
        ));
    }
    let bin = e.ok(&["info", "--format", "{{.InitBinary}}"])?.stdout;
    if bin.trim() != init_s {
        problems.push(format!("InitBinary is '{}'", bin.trim()));
    }
    let commit = e.ok(&["info", "--format", "{{.InitCommit.ID}}"])?.stdout;
    if commit.trim() != want {
        problems.push(format!(
            "`docker info` init version is '{}', want '{want}'",
            commit.trim()
        ));
    }
    let comps = e
        .ok(&["version", "--format", "{{json .Server.Components}}"])?
        .stdout;
    let key = format!("\"Name\":\"{name}\"");
    match comps.find(&key) {
        Some(i) if comps[i..].contains(&format!("\"GitCommit\":\"{want}\"")) => {}
        _ => problems.push(format!(
            "`docker version` lists no {name} component with commit {want}: {}",
            comps.trim()
        )),
    }
    let daemon_log = std::fs::read_to_string(log).unwrap_or_default();
    let warnings: Vec<&str> = daemon_log
        .lines()
        .filter(|l| l.contains(&init_s) && (l.contains("level=warn") || l.contains("level=error")))
        .collect();
    if !warnings.is_empty() {
        problems.push(format!(
            "dockerd warned about the init:\n{}",
            warnings.join("\n")
        ));
    }
    if !problems.is_empty() {
        let v = run(Command::new(init).arg("--version"), Duration::from_secs(5))?;
        problems.push(format!(
            "(`{name} --version` printed stdout {:?}, stderr {:?}, exit {})",
            v.stdout, v.stderr, v.code
        ));
        return Err(problems.join("\n"));
    }
    Ok(format!(
        "Init Binary {init_s}, `docker info` init version '{}' (keel's commit)",
        commit.trim()
    ))
}

// ------------------------------------------------------------------------------------------
// A pseudo-terminal for `docker run -it`

/// `docker run -it --init IMAGE sh -i` on a terminal: job control, ^C to the foreground job.
fn docker_tty(e: &Engine, image: &str) -> Result<String, String> {
    let pty = open_pty();
    let mut cmd = e.command(&[
        "run", "-it", "--rm", "--init", "-e", "PS1=$ ", image, "sh", "-i",
    ]);
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // A session whose controlling terminal is the pty, as a terminal emulator gives.
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child: Child = cmd.spawn().map_err(|e| format!("docker run -it: {e}"))?;
    drop(pty.slave);
    let mut master = pty.master.try_clone().unwrap();
    let screen = Screen::watch(pty.master);
    let result = (|| {
        // Marker lines: the echoed command shows `$...`, its output does not.
        master.write_all(b"echo \"JC<$->\"\n").unwrap();
        let flags = screen.expect("the shell's flags", |l| {
            l.starts_with("JC<") && !l.contains('$')
        })?;
        if !flags.contains('m') || screen.text().contains("job control") {
            return Err(format!(
                "no job control in the shell ({flags}); screen:\n{}",
                screen.text()
            ));
        }
        master.write_all(b"sleep 30; echo SLEPT\n").unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        master.write_all(b"\x03").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        master.write_all(b"echo \"AFTER<$?>\"\n").unwrap();
        let after = screen.expect("the status after ^C", |l| {
            l.starts_with("AFTER<") && !l.contains('$')
        })?;
        if after != "AFTER<130>" || screen.text().contains("\nSLEPT") {
            return Err(format!(
                "^C did not interrupt sleep with 130 ({after}); screen:\n{}",
                screen.text()
            ));
        }
        master
            .write_all(b"echo \"PID1<$(tr '\\0' ' ' < /proc/1/cmdline)>\"\n")
            .unwrap();
        let pid1 = screen.expect("PID 1's command line", |l| {
            l.starts_with("PID1<") && !l.contains('$')
        })?;
        if !pid1.starts_with("PID1</sbin/docker-init -- sh -i") {
            return Err(format!("PID 1 is not docker-init: {pid1}"));
        }
        master.write_all(b"exit 7\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                if st.code() != Some(7) {
                    return Err(format!(
                        "docker run -it exited {st:?}, want 7; screen:\n{}",
                        screen.text()
                    ));
                }
                return Ok(format!(
                    "shell flags {flags}; ^C → {after}; PID 1 survived ({pid1}); exit 7"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "`exit 7` did not end docker run -it; screen:\n{}",
                    screen.text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })();
    if result.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    result
}

// ------------------------------------------------------------------------------------------
// docker

/// This test run's dockerd; stopped, and everything it left removed, when dropped.
struct Dockerd {
    child: Option<Child>,
    engine: Engine,
    dir: PathBuf,
    log: PathBuf,
    litter: CgroupLitter,
}

impl Dockerd {
    fn start(dir: &Path, init: &Path) -> Dockerd {
        Dockerd::start_with(dir, init, &[])
    }

    /// [`Dockerd::start`] with more daemon flags (`--add-runtime`).
    fn start_with(dir: &Path, init: &Path, extra: &[String]) -> Dockerd {
        let sock = dir.join("docker.sock");
        let log = dir.join("dockerd.log");
        let tag = format!("keel-test-{}", std::process::id());
        // A relative --cgroup-parent lands below this process's own cgroups (runc resolves it
        // against its own, inherited, cgroup in each hierarchy); the default is /docker.
        let litter = CgroupLitter::plan(
            &own_cgroups()
                .into_iter()
                .map(|(m, own)| (m, format!("{own}/{tag}")))
                .collect::<Vec<_>>(),
        );
        let cli = ["/usr/bin/docker"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .or_else(|| which("docker"))
            .unwrap_or_else(|| "docker".into());
        let engine = Engine {
            name: "docker",
            cli,
            global: vec![],
            env: vec![
                ("DOCKER_HOST".into(), format!("unix://{}", sock.display())),
                (
                    "DOCKER_CONFIG".into(),
                    dir.join("client").to_string_lossy().into_owned(),
                ),
                ("DOCKER_BUILDKIT".into(), "0".into()),
                ("DOCKER_CLI_HINTS".into(), "false".into()),
            ],
            run_flags: vec![],
            rm_force: vec!["rm", "-f"],
        };
        let logf = std::fs::File::create(&log).unwrap();
        let path = format!(
            "{}:/usr/local/sbin:/usr/sbin:/sbin",
            std::env::var("PATH").unwrap_or_default()
        );
        let dockerd = which("dockerd").unwrap();
        // Nothing from the host's /etc/docker: a config file of our own, which (Docker 20.10
        // only) also puts the daemon's trust key in the scratch dir, not /etc/docker/key.json.
        let version = run(
            Command::new(&dockerd).arg("--version"),
            Duration::from_secs(10),
        )
        .map(|o| o.stdout)
        .unwrap_or_default();
        let config = if version.starts_with("Docker version 20.") {
            let key = dir.join("key.json");
            format!("{{\"deprecated-key-path\": \"{}\"}}\n", key.display())
        } else {
            "{}\n".to_string()
        };
        std::fs::write(dir.join("daemon.json"), config).unwrap();
        let mut cmd = Command::new(&dockerd);
        cmd.arg(format!(
            "--config-file={}",
            dir.join("daemon.json").display()
        ))
        .arg("--iptables=false")
        .arg("--bridge=none")
        .arg(format!("--data-root={}", dir.join("data").display()))
        .arg(format!("--exec-root={}", dir.join("exec").display()))
        .arg(format!("--pidfile={}", dir.join("docker.pid").display()))
        .arg(format!("--host=unix://{}", sock.display()))
        .arg(format!("--init-path={}", init.display()))
        .arg(format!("--cgroup-parent={tag}"))
        .arg(format!("--containerd-namespace={tag}"))
        .arg(format!("--containerd-plugins-namespace={tag}-plugins"))
        .args(extra)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf);
        // SAFETY: prctl is async-signal-safe. If this test process dies without running the
        // guard, dockerd still gets TERM.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start dockerd");
        println!(
            "dockerd started (pid {}), log {}",
            child.id(),
            log.display()
        );
        Dockerd {
            child: Some(child),
            engine,
            dir: dir.to_path_buf(),
            log,
            litter,
        }
    }

    fn wait_ready(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            if let Ok(o) = self.engine.run_t(&["version"], Duration::from_secs(10))
                && o.code == 0
            {
                return Ok(started.elapsed());
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("dockerd exited ({st}); log:\n{}", self.log_tail()));
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "dockerd not ready after 60s; log:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let started = Instant::now();
        if let Ok(o) = self.engine.run_t(&["ps", "-aq"], Duration::from_secs(20)) {
            for id in o.stdout.split_whitespace() {
                let _ = self
                    .engine
                    .run_t(&["rm", "-f", id], Duration::from_secs(20));
            }
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) of the dockerd this guard started, by its pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().map(|s| s.is_none()).unwrap_or(false) {
                if Instant::now() > deadline {
                    eprintln!("dockerd ignored TERM for 30s: SIGKILL");
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("dockerd log (tail):\n{}", self.log_tail());
        }
        clean_host(&self.dir, &self.litter);
        println!(
            "dockerd stopped and {} removed in {:.1}s",
            self.dir.display(),
            started.elapsed().as_secs_f64()
        );
    }
}

/// Everything the docker test needs from the machine, or why it cannot run.
fn docker_prereqs() -> Result<PathBuf, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("dockerd needs root".into());
    }
    which("dockerd").ok_or("dockerd is not installed (apt-get install docker.io)")?;
    if !Path::new("/usr/bin/docker").exists() && which("docker").is_none() {
        return Err("the docker CLI is not installed (apt-get install docker.io)".into());
    }
    which("tar").ok_or("tar is not installed")?;
    busybox_static()
}

/// The static busybox the base image is made of.
fn busybox_static() -> Result<PathBuf, String> {
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("busybox is not installed (apt-get install busybox-static)")?;
    if !is_static_elf(&bb) {
        return Err(format!(
            "{} is not static (apt-get install busybox-static)",
            bb.display()
        ));
    }
    Ok(bb)
}

/// What every dockerd test needs: a static busybox, and keel's static binary installed as
/// `DIR/bin/keel` in a fresh scratch directory (the `--init-path`).
struct Prepared {
    busybox: PathBuf,
    dir: PathBuf,
    init: PathBuf,
}

/// [`Prepared`] for test `name`; `None` after the skip notice when docker or the static build
/// is missing.
fn prepare(name: &str) -> Option<Prepared> {
    let busybox = match docker_prereqs() {
        Ok(bb) => bb,
        Err(why) => {
            skip("docker", &why);
            return None;
        }
    };
    let keel = match static_keel() {
        Ok(k) => k,
        Err(why) => {
            skip("docker", &why);
            return None;
        }
    };
    let dir = scratch(name);
    let init = dir.join("bin/keel");
    std::fs::create_dir_all(init.parent().unwrap()).unwrap();
    std::fs::copy(&keel, &init).unwrap();
    Some(Prepared { busybox, dir, init })
}

#[test]
fn docker() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    // Installed as the README says: `dockerd --init-path=/usr/local/bin/keel`. dockerd runs
    // `keel --version` on the host; in the container it is mounted as /sbin/docker-init, the
    // name under which keel speaks tini's command line.
    let Some(Prepared { busybox, dir, init }) = prepare("docker") else {
        return;
    };
    let mut d = Dockerd::start(&dir, &init);
    let ready = d.wait_ready().unwrap_or_else(|e| panic!("{e}"));
    let e = d.engine.clone();
    let v = e
        .ok(&[
            "version",
            "--format",
            "client {{.Client.Version}}, server {{.Server.Version}}",
        ])
        .unwrap();
    println!(
        "dockerd ready in {:.1}s ({}; CLI {})",
        ready.as_secs_f64(),
        v.stdout.trim(),
        e.cli.display()
    );
    let driver = e
        .ok(&[
            "info",
            "--format",
            "{{.Driver}}, cgroup v{{.CgroupVersion}}",
        ])
        .unwrap();
    println!("storage driver {}", driver.stdout.trim());

    let tar = base_rootfs_tar(&dir, &busybox).unwrap();
    let imported = e.ok(&["import", &tar.to_string_lossy(), BASE]).unwrap();
    println!(
        "base image {BASE} imported in {:.1}s",
        imported.took.as_secs_f64()
    );

    let mut r = Report::default();
    r.check("docker info/version parse the init", || {
        docker_info(&e, &init, &d.log)
    });

    let with_init = Target {
        e: &e,
        label: "docker --init",
        init_flags: vec!["--init".into()],
        image: BASE,
        pid1: "/sbin/docker-init",
        exec_fail: (127, "exec nosuch-cmd failed"),
    };
    common_checks(&mut r, &with_init);
    r.check(
        "docker run -it --init: job control, ^C, PID 1 survives",
        || docker_tty(&e, BASE),
    );

    // keel as an image's ENTRYPOINT: examples/Dockerfile, built from a context of its own.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut built = false;
    r.check("docker build examples/Dockerfile", || {
        let ctx = dir.join("ctx-example");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::copy(root.join("examples/Dockerfile"), ctx.join("Dockerfile")).unwrap();
        std::fs::copy(&init, ctx.join("keel")).unwrap();
        let base_arg = format!("BASE={BASE}");
        let o = e.run_t(
            &[
                "build",
                "--build-arg",
                &base_arg,
                "-t",
                EXAMPLE,
                &ctx.to_string_lossy(),
            ],
            Duration::from_secs(180),
        )?;
        if o.code != 0 {
            return Err(o.describe());
        }
        built = true;
        Ok(format!("{EXAMPLE} built in {:.1}s", o.took.as_secs_f64()))
    });
    if built {
        let entrypoint = Target {
            e: &e,
            label: "docker ENTRYPOINT",
            init_flags: vec![],
            image: EXAMPLE,
            pid1: "/sbin/keel",
            exec_fail: (127, "keel: cannot run 'nosuch-cmd'"),
        };
        common_checks(&mut r, &entrypoint);
    }

    // The in-container scenarios: Dockerfile.test, from a context holding just what it copies.
    let mut built = false;
    r.check("docker build -f Dockerfile.test", || {
        let ctx = dir.join("ctx-test");
        let bin = ctx.join("target").join(MUSL).join("release");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(&init, bin.join("keel")).unwrap();
        std::fs::copy(root.join("Dockerfile.test"), ctx.join("Dockerfile.test")).unwrap();
        copy_tree(&root.join("tests/docker"), &ctx.join("tests/docker")).unwrap();
        let base_arg = format!("BASE={BASE}");
        let dockerfile = ctx.join("Dockerfile.test");
        let o = e.run_t(
            &[
                "build",
                "-f",
                &dockerfile.to_string_lossy(),
                "--build-arg",
                &base_arg,
                "-t",
                SCENARIOS,
                &ctx.to_string_lossy(),
            ],
            Duration::from_secs(180),
        )?;
        if o.code != 0 {
            return Err(o.describe());
        }
        built = true;
        Ok(format!("{SCENARIOS} built in {:.1}s", o.took.as_secs_f64()))
    });
    if built {
        let registered = scenario_count(root);
        r.check("Dockerfile.test scenarios, keel as ENTRYPOINT", || {
            scenarios(&e, &["run", "--rm", SCENARIOS], registered)
        });
        r.check(
            "Dockerfile.test scenarios, under --init (docker-init as PID 1)",
            || {
                scenarios(
                    &e,
                    &[
                        "run",
                        "--rm",
                        "--init",
                        "--entrypoint",
                        "/bin/sh",
                        SCENARIOS,
                        "/keel-tests/run.sh",
                    ],
                    registered,
                )
            },
        );
    }

    drop(d);
    r.finish("docker", started);
}

/// How many scenarios tests/docker/scenarios registers.
fn scenario_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("tests/docker/scenarios"))
        .unwrap()
        .flatten()
        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        .map(|s| s.lines().filter(|l| l.starts_with("register ")).count())
        .sum()
}

fn scenarios(e: &Engine, args: &[&str], registered: usize) -> Result<String, String> {
    let o = e.run_t(args, Duration::from_secs(120))?;
    for l in o.stdout.lines() {
        println!("    | {l}");
    }
    let summary = format!("keel scenarios: {registered} ok, 0 failed");
    if o.code != 0 || !o.stdout.contains(&summary) || o.stdout.contains("FAIL") {
        return Err(format!("want exit 0 and '{summary}': {}", o.describe()));
    }
    Ok(format!(
        "{registered} scenarios ok in {:.1}s",
        o.took.as_secs_f64()
    ))
}

// ------------------------------------------------------------------------------------------
// podman

/// podman's state for this test run (storage, run and tmp dirs); removed when dropped.
struct PodmanRun {
    engine: Engine,
    dir: PathBuf,
    litter: CgroupLitter,
}

impl Drop for PodmanRun {
    fn drop(&mut self) {
        let started = Instant::now();
        let _ = self
            .engine
            .run_t(&["rm", "-a", "-f", "-t", "0"], Duration::from_secs(60));
        clean_host(&self.dir, &self.litter);
        println!(
            "podman state {} removed in {:.1}s",
            self.dir.display(),
            started.elapsed().as_secs_f64()
        );
    }
}

/// A cgroup parent below this process's own cgroup in every hierarchy: the deepest own path,
/// when every other hierarchy's own path is an ancestor of it (here `/` everywhere but
/// memory); else a top-level one.
fn podman_cgroup_parent(tag: &str) -> String {
    let own = own_cgroups();
    let deepest = own
        .iter()
        .map(|(_, p)| p.trim_end_matches('/').to_string())
        .max_by_key(|p| p.len())
        .unwrap_or_default();
    let nested = own.iter().all(|(_, p)| {
        let p = p.trim_end_matches('/');
        deepest == p || deepest.starts_with(&format!("{p}/")) || p.is_empty()
    });
    if nested {
        format!("{deepest}/{tag}")
    } else {
        format!("/{tag}")
    }
}

#[test]
fn podman() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("podman", "rootful podman needs root");
    }
    let Some(podman) = which("podman") else {
        return skip("podman", "podman is not installed (apt-get install podman)");
    };
    if which("runc").is_none() {
        return skip("podman", "runc is not installed (apt-get install runc)");
    }
    let busybox = match busybox_static() {
        Ok(bb) => bb,
        Err(why) => return skip("podman", &why),
    };
    let keel = match static_keel() {
        Ok(k) => k,
        Err(why) => return skip("podman", &why),
    };
    let dir = scratch("podman");
    let tag = format!("keel-test-{}", std::process::id());
    let parent = podman_cgroup_parent(&tag);
    let litter = CgroupLitter::plan(
        &own_cgroups()
            .into_iter()
            .map(|(m, _)| (m, parent.clone()))
            .collect::<Vec<_>>(),
    );
    let sub = |d: &str| dir.join(d).to_string_lossy().into_owned();
    let engine = Engine {
        name: "podman",
        cli: podman,
        // Storage and state of its own; runc, since crun 1.8 refuses this hybrid cgroup
        // layout ("cgroups in hybrid mode not supported").
        global: vec![
            format!("--root={}", sub("root")),
            format!("--runroot={}", sub("run")),
            format!("--tmpdir={}", sub("tmp")),
            format!("--network-config-dir={}", sub("net")),
            "--cgroup-manager=cgroupfs".into(),
            "--events-backend=file".into(),
            "--runtime=runc".into(),
        ],
        env: vec![],
        // podman sets RLIMIT_NOFILE/NPROC to 1048576 by default, above this machine's hard
        // limits, and root here lacks CAP_SYS_RESOURCE to raise them: runc then fails with
        // "error setting rlimit type 7: operation not permitted". Ask for less.
        run_flags: vec![
            "--network=none".into(),
            "--ulimit=nofile=1024:1024".into(),
            "--ulimit=nproc=4096:4096".into(),
            format!("--cgroup-parent={parent}"),
        ],
        rm_force: vec!["rm", "-f", "-t", "0"],
    };
    let p = PodmanRun {
        engine: engine.clone(),
        dir: dir.clone(),
        litter,
    };
    let e = &p.engine;
    let v = e
        .ok(&["version", "--format", "{{.Client.Version}}"])
        .unwrap();
    println!(
        "podman {} (runc, cgroupfs, cgroup parent {parent})",
        v.stdout.trim()
    );
    let tar = base_rootfs_tar(&dir, &busybox).unwrap();
    let imported = e.ok(&["import", &tar.to_string_lossy(), BASE]).unwrap();
    println!(
        "base image {BASE} imported in {:.1}s",
        imported.took.as_secs_f64()
    );

    let mut r = Report::default();
    let with_init = Target {
        e,
        label: "podman --init",
        init_flags: vec!["--init".into(), format!("--init-path={}", keel.display())],
        image: BASE,
        pid1: "/run/podman-init",
        exec_fail: (1, "failed to exec"),
    };
    common_checks(&mut r, &with_init);
    drop(p);
    r.finish("podman", started);
}

// ------------------------------------------------------------------------------------------
// examples/workspace: four services from /etc/keel/keel.d, keel as the ENTRYPOINT

const WORKSPACE: &str = "keel-workspace-test:latest";
const WORKSPACE_BASE: &str = "keel-workspace-test-base:latest";

/// The example's configuration is valid and starts in the documented waves: checked with
/// the keel cargo built for the tests, so a config regression fails without docker too.
#[test]
fn workspace_config_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workspace/keel.d");
    let o = run(
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("check")
            .arg("--config")
            .arg(&dir),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(o.code, 0, "keel check: {}", o.describe());
    let out = &o.stdout;
    for want in [
        "configuration OK: 4 service(s)",
        "shutdown deadline 5s",
        "  1. init (oneshot; restart no)",
        "  2. files (simple, ready: `/bin/sh -c wget -q -O /dev/null http://127.0.0.1:8081/cgi-bin/files 2>/dev/null` exits 0; restart on-failure); after init, requires init",
        "  2. preview (simple, ready: tcp 127.0.0.1:8080 accepts; restart always); after init, requires init",
        "  3. terminal (simple, ready: tcp 127.0.0.1:2323 accepts; restart on-abnormal); after files, after preview, requires init",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "keel check lacks the line\n{want}\n{}",
            o.describe()
        );
    }
    let files: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("  file "))
        .collect();
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            Path::new(f)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "10-init.toml",
            "20-files.toml",
            "30-preview.toml",
            "40-terminal.toml"
        ],
        "{}",
        o.describe()
    );
}

/// `docker exec C sh -c SCRIPT`, required to exit 0.
fn sh_in(e: &Engine, c: &str, script: &str) -> Result<Out, String> {
    e.ok(&["exec", c, "sh", "-c", script])
}

/// PID, USER, STAT and ARGS of every process in the container.
fn ps_in(e: &Engine, c: &str) -> Result<String, String> {
    Ok(e.ok(&["exec", c, "ps", "-o", "pid,user,stat,args"])?.stdout)
}

/// Lines of `ps` output whose STAT is Z.
fn zombies(ps: &str) -> Vec<String> {
    ps.lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|s| s.starts_with('Z'))
        })
        .map(String::from)
        .collect()
}

/// The lines keel relayed for service `name` (`NAME | text`, NAME padded with spaces), as
/// (line number, text).
fn lines_of<'a>(log: &'a str, name: &str) -> Vec<(usize, &'a str)> {
    log.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (n, text) = l.split_once(" | ")?;
            (n.trim_end() == name).then_some((i, text))
        })
        .collect()
}

/// Poll `f` until it succeeds, or return its last error after `timeout`.
fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(t) => return Ok(t),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("still failing after {timeout:?}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `wget -O - URL` inside the container.
fn get_in(e: &Engine, c: &str, url: &str) -> Result<String, String> {
    Ok(e.ok(&["exec", c, "wget", "-q", "-O", "-", url])?.stdout)
}

/// A terminal session in the container: wait for the prompt, type a command, wait for its
/// output, `exit`; prints what the session showed (telnet negotiation bytes included).
const TELNET_SESSION: &str = r#"
cd /tmp && rm -f t.in t.out && mkfifo t.in && : > t.out
nc 127.0.0.1 2323 < t.in > t.out &
exec 3> t.in
wait_for() { i=0; until grep -q "$1" t.out; do i=$((i+1)); [ $i -lt 100 ] || return 1; sleep 0.1; done; }
wait_for 'workspace:' && printf 'echo "T<$(id -un) $(pwd) $((6*7))>"\n' >&3 && wait_for 'T<dev'
printf 'exit\n' >&3
exec 3>&-
wait
cat t.out
"#;

/// The workspace example for real: built by its own run.sh, run as its README says (minus
/// the published ports: this dockerd has no bridge network), then every service, the start
/// order, the logs, a restart, a reload and `docker stop` checked from outside.
#[test]
fn docker_workspace() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let Some(Prepared { busybox, dir, init }) = prepare("workspace") else {
        return;
    };
    let mut d = Dockerd::start(&dir, &init);
    let ready = d.wait_ready().unwrap_or_else(|e| panic!("{e}"));
    println!("dockerd ready in {:.1}s", ready.as_secs_f64());
    let e = d.engine.clone();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    // examples/workspace/run.sh, "the one command", against this dockerd, with this static
    // keel, the base image imported from `busybox`, and no published ports (no bridge here).
    let run_sh = |args: &[&str], name: &str| -> Result<Out, String> {
        let mut cmd = Command::new("sh");
        cmd.arg(root.join("examples/workspace/run.sh"))
            .args(args)
            .envs(e.env.iter().map(|(k, v)| (k, v)))
            .env("DOCKER", &e.cli)
            .env("KEEL", &init)
            .env("BUSYBOX", &busybox)
            .env("BASE", WORKSPACE_BASE)
            .env("IMAGE", WORKSPACE)
            .env("NAME", name)
            .env("PORTS", "none");
        let o = run(&mut cmd, Duration::from_secs(180))?;
        if o.code != 0 {
            return Err(format!("run.sh {}: {}", args.join(" "), o.describe()));
        }
        Ok(o)
    };
    let mut r = Report::default();
    let mut built = false;
    r.check("examples/workspace/run.sh build", || {
        let o = run_sh(&["build"], "unused")?;
        built = true;
        Ok(format!(
            "base imported and {WORKSPACE} built in {:.1}s",
            o.took.as_secs_f64()
        ))
    });
    if built {
        workspace_checks(&mut r, &e, &|name| {
            run_sh(&["-d", "-e", "KEEL_LOG=info"], name).map(|_| ())
        });
    }
    drop(d);
    r.finish("docker workspace", started);
}

/// Kill the process of `service` (its `ps` line contains `needle`) with `signal`; wait until
/// keel has started it again (a new pid, a second "init finished" line, ready again).
fn kill_and_wait_back(
    e: &Engine,
    n: &str,
    service: &str,
    needle: &str,
    signal: &str,
) -> Result<String, String> {
    let pid_of = |ps: &str| {
        ps.lines()
            .find(|l| l.contains(needle))
            .and_then(|l| l.split_whitespace().next())
            .map(String::from)
    };
    let ps = ps_in(e, n)?;
    let pid = pid_of(&ps).ok_or_else(|| format!("no {service} process:\n{ps}"))?;
    let t = Instant::now();
    sh_in(e, n, &format!("kill -{signal} {pid}"))?;
    let ready = format!("keel: info: {service} is ready");
    let back = eventually(Duration::from_secs(10), || {
        let logs = e.logs(n)?;
        if logs.matches(&ready).count() < 2 {
            return Err(format!("not ready again:\n{logs}"));
        }
        pid_of(&ps_in(e, n)?)
            .filter(|p| *p != pid)
            .ok_or_else(|| "no new process".to_string())
    })?;
    let took = t.elapsed();
    let logs = e.logs(n)?;
    let starts = lines_of(&logs, service)
        .iter()
        .filter(|(_, l)| l.starts_with("init finished at"))
        .count();
    if starts != 2 {
        return Err(format!(
            "want 2 {service} starts in the logs, {starts}:\n{logs}"
        ));
    }
    let z = zombies(&ps_in(e, n)?);
    if !z.is_empty() {
        return Err(format!("zombies after restarting {service}: {z:?}"));
    }
    Ok(format!(
        "{service}: {signal} to pid {pid}, pid {back} ready {:.2}s later",
        took.as_secs_f64()
    ))
}

/// `start(name)` runs the example detached as container `name`.
fn workspace_checks(r: &mut Report, e: &Engine, start: &dyn Fn(&str) -> Result<(), String>) {
    let c = Container::new(e);
    let name = c.name.clone();
    let n = name.as_str();
    let mut up = false;
    r.check("workspace: all four services come up", || {
        let t = Instant::now();
        start(n)?;
        e.wait_logs(n, "terminal is ready", Duration::from_secs(20))?;
        let took = t.elapsed();
        let listing = get_in(e, n, "http://127.0.0.1:8081/cgi-bin/files/site")?;
        if !listing.contains(r#"{"name":"index.html","type":"file""#) {
            return Err(format!("file API listing of /site: {listing}"));
        }
        let via_api = get_in(e, n, "http://127.0.0.1:8081/cgi-bin/files/site/index.html")?;
        let page = get_in(e, n, "http://127.0.0.1:8080/")?;
        if !page.contains("<h1>keel workspace</h1>") || page != via_api {
            return Err(format!(
                "preview page and the file API's copy differ:\n{page}\n---\n{via_api}"
            ));
        }
        // A terminal session: commands in, output back (with telnet negotiation bytes).
        let session = sh_in(e, n, TELNET_SESSION)?.stdout;
        if !session.contains("T<dev /workspace 42>") {
            return Err(format!("terminal session: {session:?}"));
        }
        let ps = ps_in(e, n)?;
        let owner = |needle: &str| {
            ps.lines()
                .find(|l| l.contains(needle))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(String::from)
        };
        let users = [
            ("httpd -f -vv -p 8081", "nobody"),
            ("httpd -f -v -p 8080", "nobody"),
            ("telnetd -F", "dev"),
        ];
        for (needle, want) in users {
            if owner(needle).as_deref() != Some(want) {
                return Err(format!("'{needle}' should run as {want}:\n{ps}"));
            }
        }
        up = true;
        Ok(format!(
            "all ready {:.2}s after `docker run`; file API, preview and a telnet shell answer; servers as nobody, terminal as dev; /site: {}",
            took.as_secs_f64(),
            listing.trim()
        ))
    });
    if !up {
        println!("logs:\n{}", e.logs(n).unwrap_or_default());
        return;
    }
    r.check("workspace: prefixed logs; init ran before the rest", || {
        let logs = e.ok(&["logs", n])?;
        let (out, err) = (&logs.stdout, &logs.stderr);
        let init = lines_of(out, "init");
        if init.len() != 1 || !init[0].1.starts_with("prepared /workspace: 2 files") {
            return Err(format!("want one 'init | prepared' line in stdout:\n{out}"));
        }
        for s in ["files", "preview", "terminal"] {
            // Each checked init's marker before printing this; and printed after init's line.
            match lines_of(out, s).first() {
                Some((i, text)) if *i > init[0].0 && text.starts_with("init finished at ") => {}
                _ => return Err(format!("{s}'s first line is not after init's:\n{out}")),
            }
            // ... and it started once: no early start that failed on the missing marker.
            let ended = format!("keel: info: {s} ended");
            if lines_of(out, s).len() != 1 || err.contains(&ended) {
                return Err(format!("{s} started more than once:\n{out}{err}"));
            }
        }
        // httpd's request log (stderr), prefixed as well.
        if !lines_of(err, "files")
            .iter()
            .any(|(_, l)| l.ends_with("url:/cgi-bin/files/site"))
        {
            return Err(format!("no prefixed request log on stderr:\n{err}"));
        }
        let order: Vec<&str> = err
            .lines()
            .filter(|l| l.contains(" is ready") || l.contains("init") && l.contains("done"))
            .collect();
        Ok(format!("stdout order OK; keel: {}", order.join(" / ")))
    });
    r.check(
        "workspace: restarts: preview on TERM (always), terminal on KILL (on-abnormal)",
        || {
            let a = kill_and_wait_back(e, n, "preview", "httpd -f -v -p 8080", "TERM")?;
            let b = kill_and_wait_back(e, n, "terminal", "telnetd -F", "KILL")?;
            Ok(format!("{a}; {b}"))
        },
    );
    r.check("workspace: SIGHUP starts a service added to keel.d", || {
        let extra = r#"[service.extra]
after = ["init"]
user = "nobody"
command = "echo extra up as $(id -un); exec httpd -f -p 8082 -h /workspace/site"
ready = { tcp = 8082, interval = "50ms" }
"#;
        sh_in(
            e,
            n,
            &format!("cat > /etc/keel/keel.d/50-extra.toml <<'TOML'\n{extra}TOML"),
        )?;
        let t = Instant::now();
        e.ok(&["kill", "-s", "HUP", n])?;
        let logs = e.wait_logs(n, "extra is ready", Duration::from_secs(10))?;
        let took = t.elapsed();
        if !lines_of(&logs, "extra")
            .iter()
            .any(|(_, l)| *l == "extra up as nobody")
        {
            return Err(format!("no prefixed line from extra:\n{logs}"));
        }
        let summary = logs
            .lines()
            .find(|l| l.contains("1 added"))
            .ok_or_else(|| format!("no reload summary:\n{logs}"))?;
        let page = get_in(e, n, "http://127.0.0.1:8082/")?;
        if !page.contains("<h1>keel workspace</h1>") {
            return Err(format!("extra serves: {page}"));
        }
        // The others were not restarted by the reload.
        let starts = lines_of(&logs, "files")
            .iter()
            .filter(|(_, l)| l.starts_with("init finished at"))
            .count();
        if starts != 1 {
            return Err(format!("files started {starts} times:\n{logs}"));
        }
        let z = zombies(&ps_in(e, n)?);
        if !z.is_empty() {
            return Err(format!("zombies after the reload: {z:?}"));
        }
        Ok(format!(
            "extra ready {:.2}s after HUP; keel: {}",
            took.as_secs_f64(),
            summary.trim()
        ))
    });
    r.check("workspace: no zombies", || {
        // A terminal session left open at stop time, and one that ended already.
        e.ok(&[
            "exec",
            "-d",
            n,
            "sh",
            "-c",
            "(echo 'echo open session'; sleep 60) | nc 127.0.0.1 2323",
        ])?;
        sh_in(e, n, "(echo exit; sleep 1) | nc 127.0.0.1 2323")?;
        std::thread::sleep(Duration::from_millis(500));
        let ps = ps_in(e, n)?;
        let z = zombies(&ps);
        if !z.is_empty() {
            return Err(format!("zombies: {z:?}\n{ps}"));
        }
        let shells = ps.lines().filter(|l| l.ends_with("/bin/sh")).count();
        Ok(format!(
            "{} processes, none Z ({shells} terminal shell(s) open)",
            ps.lines().count() - 1
        ))
    });
    // run.sh runs with --rm: the exit code and the last logs come from `docker wait` and
    // `docker logs -f`, attached before the stop.
    let mut logs = String::new();
    r.check("workspace: docker stop is fast, orderly, exit 0", || {
        std::thread::scope(|sc| {
            let wait = sc.spawn(|| e.run_t(&["wait", n], Duration::from_secs(30)));
            let follow = sc.spawn(|| e.run_t(&["logs", "-f", n], Duration::from_secs(30)));
            std::thread::sleep(Duration::from_millis(300));
            let stop = e.ok(&["stop", n]);
            let wait = wait.join().unwrap()?;
            let follow = follow.join().unwrap()?;
            logs = follow.all();
            let took = stop?.took;
            let code = wait.stdout.trim();
            println!(
                "  workspace: `docker stop` took {:.2}s, exit {code}",
                took.as_secs_f64()
            );
            if took >= Duration::from_secs(2) || code != "0" {
                return Err(format!(
                    "stop took {:.2}s, exit {code}; want < 2s and 0; logs:\n{logs}",
                    took.as_secs_f64()
                ));
            }
            // Stopped in reverse dependency order, each on its SIGTERM.
            let at = |s: &str| logs.find(&format!("keel: info: {s} stopped"));
            let order = ["terminal", "preview", "files"].map(at);
            if order.iter().any(Option::is_none) || order[0] > order[1] || order[0] > order[2] {
                return Err(format!(
                    "terminal must stop first, then the servers:\n{logs}"
                ));
            }
            let shutdown = logs.split_once("SIGTERM: shutting down").map(|(_, t)| t);
            if shutdown.is_none_or(|t| t.contains("SIGKILL")) {
                return Err(format!("no shutdown, or one that needed SIGKILL:\n{logs}"));
            }
            Ok(format!(
                "stop took {:.2}s; exit 0; terminal stopped before files and preview",
                took.as_secs_f64()
            ))
        })
    });
    println!(
        "  workspace: container logs:\n{}",
        logs.lines()
            .map(|l| format!("    | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ------------------------------------------------------------------------------------------
// Per-service cgroups: keel as the ENTRYPOINT of an image with services and limits

const CGROUPS_IMAGE: &str = "keel-test-cgroups:latest";

/// The services of the cgroup test. `steady` has no limits and must keep its pid; `hog`
/// waits for /tmp/go, removes it and then asks for 64M under memory-max 32M with no swap (so
/// exactly one OOM kill, and the restarted run waits again); `forker` tries 40 background
/// children under tasks-max 8 (the subshell dies on the first failed fork, the service
/// lives on). Each prints `NAME up` first: a refusal must show none of them.
const CGROUP_SERVICES: &str = r#"[keel]
cgroups = "auto"

[service.steady]
command = "echo steady up; exec sleep 100000"

[service.hog]
command = "echo hog up; while [ ! -f /tmp/go ]; do sleep 0.1; done; rm /tmp/go; echo hog eats; exec dd if=/dev/zero of=/dev/null bs=64M count=1"
memory-max = "32M"
memory-swap-max = 0
restart = "on-failure"
restart-sec = "200ms"

[service.forker]
command = "echo forker up; (i=0; while [ $i -lt 40 ]; do sleep 100000 & i=$((i+1)); done; echo forked all 40); echo fork loop over; exec sleep 100000"
tasks-max = 8
"#;

/// `CAP_` names by number (linux/capability.h).
const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Capabilities the kernel has that this process's bounding set lacks (`CAP_SYS_RESOURCE`
/// for root on these machines). `docker run --privileged` asks runc for every capability
/// Docker knows, and runc cannot grant one it lacks itself: the container fails to start
/// with "unable to apply caps: operation not permitted".
fn caps_missing() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(bnd) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
    else {
        return Vec::new();
    };
    let last: usize = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(CAP_NAMES.len() - 1);
    (0..=last.min(CAP_NAMES.len() - 1))
        .filter(|&i| bnd & (1 << i) == 0)
        .map(|i| format!("CAP_{}", CAP_NAMES[i]))
        .collect()
}

/// A runc wrapper for `dockerd --add-runtime`: the OCI spec of `runc create` (the bundle's
/// config.json) and `runc exec` (`--process` file) minus the capabilities in `strip`, then
/// runc. Everything else `--privileged` sets (read-write cgroupfs, all devices, no seccomp)
/// is left as Docker made it: this only makes `--privileged` possible where root itself is
/// not fully privileged.
fn runc_wrapper(path: &Path, runc: &Path, strip: &[String]) {
    let sed: String = strip
        .iter()
        .map(|c| format!(r#" -e 's/"{c}", *//g' -e 's/, *"{c}"//g' -e 's/"{c}"//g'"#))
        .collect();
    let script = format!(
        r#"#!/bin/sh
bundle=
proc=
prev=
for a in "$@"; do
    case $prev in --bundle|-b) bundle=$a ;; --process|-p) proc=$a ;; esac
    case $a in --bundle=*) bundle=${{a#--bundle=}} ;; --process=*) proc=${{a#--process=}} ;; esac
    prev=$a
done
for f in ${{bundle:+"$bundle/config.json"}} ${{proc:+"$proc"}}; do
    [ -f "$f" ] && sed -i{sed} "$f"
done
exec {} "$@"
"#,
        runc.display()
    );
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// One row of `keel ctl status`: (column, cell), in the table's order.
type Row = Vec<(String, String)>;

/// `keel ctl status` in container `c`: the table, and its rows. The table is aligned, so a
/// cell runs from its header's column to the next one (LAST-EXIT holds spaces).
fn keel_status(e: &Engine, c: &str) -> Result<(String, Vec<Row>), String> {
    let table = e.ok(&["exec", c, "/sbin/keel", "ctl", "status"])?.stdout;
    let mut lines = table.lines();
    let head = lines.next().ok_or("empty `keel ctl status`")?;
    let mut cols: Vec<(usize, &str)> = Vec::new();
    let mut at = 0;
    for word in head.split_whitespace() {
        let i = at + head[at..].find(word).unwrap();
        cols.push((i, word));
        at = i + word.len();
    }
    let rows = lines
        .map(|l| {
            cols.iter()
                .enumerate()
                .map(|(k, (start, name))| {
                    let end = cols.get(k + 1).map_or(l.len(), |(s, _)| *s).min(l.len());
                    let cell = l.get((*start).min(end)..end).unwrap_or("").trim();
                    (name.to_string(), cell.to_string())
                })
                .collect()
        })
        .collect();
    Ok((table, rows))
}

/// The cell `col` of service `name`'s row.
fn cell<'a>(rows: &'a [Row], name: &str, col: &str) -> Result<&'a str, String> {
    let row = rows
        .iter()
        .find(|r| r.first().is_some_and(|(_, v)| v == name))
        .ok_or_else(|| format!("no row for {name}"))?;
    row.iter()
        .find(|(c, _)| c == col)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| format!("no column {col}"))
}

/// `docker stop` of `c`: quick (< 2 s) and exit code 0.
fn stop_fast(e: &Engine, c: &str) -> Result<Duration, String> {
    let o = e.ok(&["stop", c])?;
    let code = e.exit_code(c)?;
    if o.took >= Duration::from_secs(2) || code != 0 {
        return Err(format!(
            "docker stop took {:.2}s, exit {code}; want < 2s and 0; logs:\n{}",
            o.took.as_secs_f64(),
            e.logs(c)?
        ));
    }
    Ok(o.took)
}

/// Lines keel wrote about cgroups at warning or error level (keel's error lines have no level
/// word: `keel: cgroups: ...`).
fn cgroup_complaints(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| {
            l.starts_with("keel: warning: cgroups:")
                || l.starts_with("keel: cgroups:")
                || l.starts_with("keel: error: cgroups:")
        })
        .collect()
}

/// Writable cgroupfs (`flags` hold `--privileged`): the limits hold. hog is OOM-killed and
/// restarted while steady and forker keep their pids, forker's fork loop stops at
/// tasks-max, `keel ctl status` shows MEM, PIDS and the OOM kill, `docker stop` is quick.
fn cgroups_enforced(e: &Engine, flags: &[&str]) -> Result<String, String> {
    let c = Container::new(e);
    let n = c.name.as_str();
    let mut args = vec!["run", "-d", "--name", n, "-e", "KEEL_LOG=info"];
    args.extend_from_slice(flags);
    args.push(CGROUPS_IMAGE);
    e.ok(&args)?;
    let cgroupns = e
        .ok(&["inspect", "--format", "{{.HostConfig.CgroupnsMode}}", n])?
        .stdout;
    // Up: every service printed its line and forker's loop is over.
    let logs = eventually(Duration::from_secs(20), || {
        let logs = e.logs(n)?;
        for want in ["steady up", "hog up", "fork loop over"] {
            if !logs.contains(want) {
                return Err(format!("no '{want}' yet:\n{logs}"));
            }
        }
        Ok(logs)
    })?;
    let summary = logs
        .lines()
        .find(|l| l.starts_with("keel: info: cgroups: "))
        .ok_or_else(|| format!("no cgroup summary line:\n{logs}"))?
        .trim_start_matches("keel: info: ")
        .to_string();
    let complaints = cgroup_complaints(&logs);
    if !complaints.is_empty() {
        return Err(format!("keel complained about cgroups:\n{logs}"));
    }
    // The fork loop stopped at tasks-max: its subshell died on a failed fork.
    if logs.contains("forked all 40") || !logs.contains("can't fork") {
        return Err(format!("forker's 40 forks were not stopped at 8:\n{logs}"));
    }
    let (table, rows) = keel_status(e, n)?;
    let pid = |rows: &[Row], s| cell(rows, s, "PID").map(str::to_string);
    let (steady, forker) = (pid(&rows, "steady")?, pid(&rows, "forker")?);
    for s in ["steady", "hog", "forker"] {
        for col in ["MEM", "PIDS"] {
            if cell(&rows, s, col)? == "-" {
                return Err(format!("{s} has no {col} in `keel ctl status`:\n{table}"));
            }
        }
    }
    let forker_pids: u32 = cell(&rows, "forker", "PIDS")?
        .parse()
        .map_err(|_| format!("forker's PIDS:\n{table}"))?;
    if !(2..=8).contains(&forker_pids) {
        return Err(format!(
            "forker has {forker_pids} processes, want 2..=8:\n{table}"
        ));
    }
    // Let hog eat: one OOM kill, a restart (on-failure), the others untouched.
    let t = Instant::now();
    sh_in(e, n, "touch /tmp/go")?;
    let (table, rows) = eventually(Duration::from_secs(10), || {
        let (table, rows) = keel_status(e, n)?;
        let oom: u32 = cell(&rows, "hog", "OOM")?.parse().unwrap_or(0);
        let restarts: u32 = cell(&rows, "hog", "RESTARTS")?.parse().unwrap_or(0);
        if oom < 1 || restarts < 1 || cell(&rows, "hog", "STATE")? != "running" {
            return Err(format!("hog not OOM-killed and running again:\n{table}"));
        }
        Ok((table, rows))
    })?;
    let took = t.elapsed();
    let logs = e.logs(n)?;
    if !logs.contains("hog: the OOM killer killed") || logs.matches("hog up").count() < 2 {
        return Err(format!("no OOM kill line, or no second hog run:\n{logs}"));
    }
    for (s, before) in [("steady", &steady), ("forker", &forker)] {
        if cell(&rows, s, "PID")? != before
            || cell(&rows, s, "RESTARTS")? != "0"
            || cell(&rows, s, "STATE")? != "running"
        {
            return Err(format!(
                "{s} (pid {before}) was disturbed by hog's OOM kill:\n{table}"
            ));
        }
    }
    println!("  keel ctl status after the OOM kill:");
    for l in table.lines() {
        println!("    | {l}");
    }
    let stop = stop_fast(e, n)?;
    Ok(format!(
        "cgroupns '{}'; {summary}; forker stopped at {forker_pids} processes (tasks-max 8); \
         hog OOM-killed and running again {:.2}s after /tmp/go, steady and forker kept \
         pids {steady} and {forker}; docker stop {:.2}s, exit 0",
        cgroupns.trim(),
        took.as_secs_f64(),
        stop.as_secs_f64()
    ))
}

/// Default `docker run` (cgroupfs read-only): one warning naming the cause and a fix that
/// includes `--privileged` (the fix [`cgroups_enforced`] proves), the services run without
/// limits, `docker stop` is quick.
fn cgroups_read_only(e: &Engine) -> Result<String, String> {
    let c = Container::new(e);
    let n = c.name.as_str();
    // keel's default log level: what a user sees.
    e.ok(&["run", "-d", "--name", n, CGROUPS_IMAGE])?;
    let logs = eventually(Duration::from_secs(20), || {
        let logs = e.logs(n)?;
        for want in ["steady up", "hog up", "fork loop over"] {
            if !logs.contains(want) {
                return Err(format!("no '{want}' yet:\n{logs}"));
            }
        }
        Ok(logs)
    })?;
    let complaints = cgroup_complaints(&logs);
    let [warning] = complaints.as_slice() else {
        return Err(format!("want exactly one cgroups warning:\n{logs}"));
    };
    let (cause, fix) = warning
        .strip_prefix("keel: warning: cgroups: ")
        .and_then(|w| w.split_once(" Fix: "))
        .ok_or_else(|| format!("not a 'keel: warning: cgroups: ... Fix: ...' line: {warning}"))?;
    if !cause.contains("read-only") || !cause.contains("NOT enforced") {
        return Err(format!("the warning does not name the cause: {warning}"));
    }
    if !fix.contains("docker run --privileged") {
        return Err(format!(
            "the fix does not name docker run --privileged: {warning}"
        ));
    }
    // Unlimited indeed: all 40 forks, no usage columns.
    if !logs.contains("forked all 40") {
        return Err(format!(
            "forker did not fork 40 times without limits:\n{logs}"
        ));
    }
    let (table, rows) = keel_status(e, n)?;
    for s in ["steady", "hog", "forker"] {
        if cell(&rows, s, "STATE")? != "running" || cell(&rows, s, "MEM")? != "-" {
            return Err(format!("{s}: want running, no MEM:\n{table}"));
        }
    }
    let stop = stop_fast(e, n)?;
    Ok(format!(
        "services run; the one warning: {warning}; docker stop {:.2}s, exit 0",
        stop.as_secs_f64()
    ))
}

/// Default `docker run` with `cgroups = "required"`: exit 78 with the refusal as the only
/// output, no service started.
fn cgroups_required(e: &Engine) -> Result<String, String> {
    let o = e.run_t(
        &[
            "run",
            "--rm",
            "-e",
            "KEEL_CONFIG=/etc/keel/required.d",
            CGROUPS_IMAGE,
        ],
        Duration::from_secs(30),
    )?;
    let out = o.all();
    let lines: Vec<&str> = out.lines().collect();
    let refusal = "; cgroups = \"required\": refusing to start (nothing was started). Fix: ";
    match lines.as_slice() {
        [l] if o.code == 78 && l.starts_with("keel: cgroups: ") && l.contains(refusal) => {
            Ok(format!("exit 78 in {:.2}s: {l}", o.took.as_secs_f64()))
        }
        _ => Err(format!(
            "want exit 78 and the refusal as the only line (no service output): {}",
            o.describe()
        )),
    }
}

/// keel's per-service cgroups under real Docker, keel as the image's ENTRYPOINT with three
/// services in /etc/keel/keel.d: `--privileged` (read-write cgroupfs) enforces memory-max
/// and tasks-max; a default container (read-only cgroupfs) warns once and runs; `cgroups =
/// "required"` refuses with 78.
///
/// Seen on these machines (Docker 20.10, runc 1.1, hybrid host): cgroup driver cgroupfs,
/// `CgroupVersion` 1, and the host cgroup namespace by default (Docker's
/// default-cgroupns-mode is `host` on v1, `private` only on v2). The container gets the v1
/// hierarchies (bind mounts of its own cgroup) but no `/sys/fs/cgroup/unified`, so keel sees
/// a plain v1 host; without `--privileged` the mounts are read-only. The `--privileged` run
/// is repeated with `--cgroupns=private` (mount roots `/` instead of the container's path).
#[test]
fn docker_cgroups() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let Some(Prepared { busybox, dir, init }) = prepare("cgroups") else {
        return;
    };
    let missing = caps_missing();
    let mut extra = Vec::new();
    let mut privileged = vec!["--privileged"];
    if !missing.is_empty() {
        let runc = which("runc").unwrap_or_else(|| "runc".into());
        let wrapper = dir.join("bin/runc-privileged");
        runc_wrapper(&wrapper, &runc, &missing);
        extra.push(format!(
            "--add-runtime=keel-privileged={}",
            wrapper.display()
        ));
        privileged.extend(["--runtime", "keel-privileged"]);
        println!(
            "root here lacks {}: --privileged containers run under a runc wrapper that drops them",
            missing.join(" ")
        );
    }
    let mut d = Dockerd::start_with(&dir, &init, &extra);
    let ready = d.wait_ready().unwrap_or_else(|e| panic!("{e}"));
    let e = d.engine.clone();
    let info = e
        .ok(&[
            "info",
            "--format",
            "server {{.ServerVersion}}, cgroup driver {{.CgroupDriver}}, cgroup v{{.CgroupVersion}}",
        ])
        .unwrap();
    println!(
        "dockerd ready in {:.1}s ({})",
        ready.as_secs_f64(),
        info.stdout.trim()
    );

    // The image: busybox, the static keel as ENTRYPOINT, the services in keel.d and, for the
    // refusal, the same with cgroups = "required" in required.d.
    let t = Instant::now();
    let root = base_rootfs(&dir, "rootfs-cgroups", &busybox).unwrap();
    std::fs::copy(&init, root.join("sbin/keel")).unwrap();
    for (sub, text) in [
        ("keel.d", CGROUP_SERVICES.to_string()),
        (
            "required.d",
            CGROUP_SERVICES.replace("cgroups = \"auto\"", "cgroups = \"required\""),
        ),
    ] {
        let d = root.join("etc/keel").join(sub);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("10-services.toml"), text).unwrap();
    }
    let tar = tar_dir(&root, &dir.join("rootfs-cgroups.tar")).unwrap();
    e.ok(&[
        "import",
        "--change",
        r#"ENTRYPOINT ["/sbin/keel"]"#,
        &tar.to_string_lossy(),
        CGROUPS_IMAGE,
    ])
    .unwrap();
    println!(
        "{CGROUPS_IMAGE} imported in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let mut r = Report::default();
    r.check(
        "docker run --privileged: memory-max OOM-kills and restarts hog, tasks-max stops a fork loop",
        || cgroups_enforced(&e, &privileged),
    );
    r.check(
        "docker run --privileged --cgroupns=private: the same",
        || {
            let mut f = privileged.clone();
            f.push("--cgroupns=private");
            cgroups_enforced(&e, &f)
        },
    );
    r.check(
        "docker run (read-only cgroupfs): one warning with the fix, services run",
        || cgroups_read_only(&e),
    );
    r.check(
        "docker run, cgroups = \"required\": exit 78, nothing started",
        || cgroups_required(&e),
    );
    drop(d);
    r.finish("docker cgroups", started);
}
