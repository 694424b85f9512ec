//! bench-supbench: the measuring helper of bench/supervisors.sh (std + libc only).
//!
//! Two roles in one static binary, so that every supervisor runs exactly the same service program
//! and no shell sits between a supervisor and its service:
//!
//! * **service**: `bench-supbench svc [STAMP]`, or the binary invoked under a name ending in
//!   `run` (s6 and runit exec `./run` in the service directory: `run` is a symlink to this
//!   binary). The very first thing it does is read CLOCK_MONOTONIC; it appends `PID NS\n` to STAMP
//!   (default `./stamp`, i.e. in the service directory s6/runit chdir into), closes it, then
//!   `pause()`s forever with every signal at its default disposition: SIGTERM ends it at once.
//!   The stamp is the service's own record of when it started, in the same clock the harness
//!   uses, so start and restart times do not depend on how fast the harness notices the file.
//!
//! * **floor**: `bench-supbench mini SVCDIR N`, a minimal supervisor (see `mini`): what
//!   starting, restarting and stopping these services costs on this machine with no supervisor
//!   logic at all, to read the real supervisors' numbers against.
//!
//! * **harness**: `bench-supbench run OPTIONS -- SUPERVISOR ARGS...` launches one supervisor as
//!   its child and measures it, in this order (each step optional except start and stop):
//!
//!   1. becomes a child subreaper (so whatever the supervisor leaves behind comes back to it),
//!      removes the old stamps `SVCDIR/sNNN/stamp` (NNN = 000..N-1), watches the N service
//!      directories with inotify (IN_CLOSE_WRITE, IN_MODIFY), reads CLOCK_MONOTONIC (t0) and
//!      spawns the supervisor (stdin /dev/null, stdout+stderr to `--log`).
//!   2. **start**: waits (inotify, no polling loop) until every stamp exists; `start_ns` = the
//!      latest first stamp − t0, `first_ns` = the earliest − t0. Includes the spawn of the
//!      supervisor (posix_spawn/vfork of the supervisor binary, same for all) and the exec of the
//!      service binary.
//!   3. waits `--settle-ms` after "all started".
//!   4. **idle** `--idle FROM:TO` (ms after all started): context switches (voluntary +
//!      nonvoluntary, all threads) of the supervisor processes at FROM and at TO; reports the
//!      difference, for the top process (the one launched) and summed over all supervisor
//!      processes. Supervisor processes = the launched process and its descendants, minus the
//!      services (processes whose /proc/PID/exe is this binary).
//!   5. **memory** `--mem`: VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of the top
//!      process and summed over the supervisor processes, in KiB.
//!   6. **restarts** `--restarts K --min-age-ms A [--lock FILE]`: K times: wait until service s000's
//!      current instance (the last stamp line) is at least A ms old, take the lock (flock, so that
//!      several harnesses running side by side never kill at the same time), read CLOCK_MONOTONIC
//!      (t_kill), SIGKILL that instance, wait (inotify) for a new stamp line; latency = the new
//!      instance's stamp − t_kill; release the lock (at the latest 100 ms after the kill, so that a
//!      supervisor sitting out a 1 s restart delay does not hold the others up).
//!   7. **stop** `--stop-signal SIG`: reads CLOCK_MONOTONIC, sends SIG to the supervisor, then
//!      blocks in `waitpid(-1)` until it fails with ECHILD: the supervisor has exited and every
//!      process under it (services, sub-supervisors) is gone (orphans are re-parented to this
//!      subreaper and reaped here). `stop_ns` = that moment − the send. No polling.
//!
//!   Output on stdout: one `key=value` per line (start_ns, first_ns, procs, threads, ctx_top,
//!   ctx_all, rss_top, rss_all, pss_top, pss_all, restart_ns=comma list, stop_ns, exit).
//!   On any error or timeout the whole tree is SIGKILLed (deepest first) and reaped, a message goes
//!   to stderr and the exit status is 1. SIGTERM/SIGINT to the harness do the same clean-up.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio, exit};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// How long one kill keeps the others from killing: longer than any immediate restart seen
/// (a few ms), far shorter than the 1 s restart delays some supervisors impose.
const LOCK_HOLD_NS: u64 = 100_000_000;

static TOP: AtomicI32 = AtomicI32::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

// ------------------------------------------------------------------------------------------
// Service role
// ------------------------------------------------------------------------------------------

fn service(stamp: Option<&str>) -> ! {
    let t = mono_ns();
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    let path = stamp.unwrap_or("stamp");
    let line = format!("{pid} {t}\n");
    match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        Ok(mut f) => {
            if let Err(e) = f.write_all(line.as_bytes()) {
                eprintln!("bench-supbench svc: write {path}: {e}");
                exit(1);
            }
        }
        Err(e) => {
            eprintln!("bench-supbench svc: open {path}: {e}");
            exit(1);
        }
    }
    // Rust ignores SIGPIPE at start-up; restore the default so this is a plain process.
    // SAFETY: plain signal disposition change.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    loop {
        // SAFETY: pause just sleeps until a signal; with default dispositions TERM/KILL end us.
        unsafe { libc::pause() };
    }
}

// ------------------------------------------------------------------------------------------
// Harness role: /proc helpers
// ------------------------------------------------------------------------------------------

fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in rd.flatten() {
        let p = t.path().join("children");
        if let Ok(s) = std::fs::read_to_string(p) {
            out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
        }
    }
    out
}

/// `pid` and all its descendants, parents before children.
fn tree(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(children(p));
        i += 1;
    }
    out
}

fn self_exe() -> PathBuf {
    std::fs::read_link("/proc/self/exe").unwrap_or_default()
}

/// The supervisor processes: `top` and its descendants that are not services (this binary).
fn supervisor_procs(top: i32, me: &Path) -> Vec<i32> {
    tree(top)
        .into_iter()
        .filter(|p| {
            *p == top
                || std::fs::read_link(format!("/proc/{p}/exe"))
                    .map(|e| e != me)
                    .unwrap_or(false)
        })
        .collect()
}

fn status_field(pid: i32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn pss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    s.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Context switches (voluntary + nonvoluntary) of every thread of `pid`, and the thread count.
fn ctxsw(pid: i32) -> (u64, u64) {
    let mut sum = 0;
    let mut threads = 0;
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("status")) {
                threads += 1;
                for l in s.lines() {
                    if l.starts_with("voluntary_ctxt_switches:")
                        || l.starts_with("nonvoluntary_ctxt_switches:")
                    {
                        sum += l
                            .split_whitespace()
                            .nth(1)
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0);
                    }
                }
            }
        }
    }
    (sum, threads)
}

// ------------------------------------------------------------------------------------------
// Harness role: clean-up and failure
// ------------------------------------------------------------------------------------------

/// SIGKILL everything below us (deepest first, so parents can still reap), then reap it all.
fn kill_all() {
    let top = TOP.load(Ordering::SeqCst);
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    let mut all = tree(me);
    all.retain(|p| *p != me);
    if top > 0 && !all.contains(&top) {
        all.push(top);
    }
    for p in all.iter().rev() {
        // SAFETY: plain kill; a pid that is gone gives ESRCH, ignored.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    // Reap: every descendant is now our child or dies with its parent; bounded wait.
    let deadline = mono_ns() + 5_000_000_000;
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r < 0 || mono_ns() > deadline {
            break;
        }
        if r == 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            for p in tree(me).iter().skip(1).rev() {
                // SAFETY: as above.
                unsafe { libc::kill(*p, libc::SIGKILL) };
            }
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("bench-supbench: {msg}");
    kill_all();
    exit(1);
}

extern "C" fn on_alarm(_: libc::c_int) {}
extern "C" fn on_term(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install(sig: libc::c_int, h: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction with our handler and no SA_RESTART, so that blocking calls
    // return EINTR (the timeouts and interruptions rely on that).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = h as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            fail(&format!("sigaction {sig}: {}", errno()));
        }
    }
}

fn check_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        fail("interrupted (SIGTERM/SIGINT): killed the supervisor tree");
    }
}

/// Sleep until the monotonic clock reaches `until_ns` (interruptible by SIGTERM/SIGINT).
fn sleep_until(until_ns: u64) {
    loop {
        check_interrupted();
        let now = mono_ns();
        if now >= until_ns {
            return;
        }
        let d = (until_ns - now).min(100_000_000);
        std::thread::sleep(std::time::Duration::from_nanos(d));
    }
}

// ------------------------------------------------------------------------------------------
// Harness role: stamps and inotify
// ------------------------------------------------------------------------------------------

/// Every `PID NS` line of a stamp file.
fn stamps(path: &Path) -> Vec<(i32, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

struct Inotify(File);

impl Inotify {
    fn new(dirs: &[PathBuf]) -> Inotify {
        // SAFETY: inotify_init1 returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            fail(&format!("inotify_init1: {}", errno()));
        }
        // SAFETY: fd is a fresh fd we own from here on.
        let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        for d in dirs {
            let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes())
                .unwrap_or_else(|_| fail("NUL in a path"));
            // SAFETY: valid fd and NUL-terminated path.
            let w = unsafe {
                libc::inotify_add_watch(
                    fd,
                    c.as_ptr(),
                    libc::IN_CLOSE_WRITE | libc::IN_MODIFY | libc::IN_CREATE,
                )
            };
            if w < 0 {
                fail(&format!("inotify_add_watch {}: {}", d.display(), errno()));
            }
        }
        Inotify(f)
    }

    /// Wait up to `ms` for events (then drain them). Returns early on EINTR.
    fn wait(&self, ms: i32) {
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) };
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: reading into our buffer from our non-blocking fd.
            let r = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                break;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Harness role: the run
// ------------------------------------------------------------------------------------------

struct Opts {
    svcdir: PathBuf,
    n: usize,
    stop_sig: i32,
    settle_ms: u64,
    idle: Option<(u64, u64)>,
    mem: bool,
    restarts: usize,
    min_age_ms: u64,
    lock: Option<PathBuf>,
    log: PathBuf,
    start_timeout_ms: u64,
    stop_timeout_ms: u64,
    cmd: Vec<String>,
}

fn parse(args: &[String]) -> Opts {
    let mut o = Opts {
        svcdir: PathBuf::new(),
        n: 0,
        stop_sig: libc::SIGTERM,
        settle_ms: 0,
        idle: None,
        mem: false,
        restarts: 0,
        min_age_ms: 1500,
        lock: None,
        log: PathBuf::from("/dev/null"),
        start_timeout_ms: 60_000,
        stop_timeout_ms: 30_000,
        cmd: Vec::new(),
    };
    let mut i = 0;
    let num = |s: Option<&String>, what: &str| -> u64 {
        s.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| fail(&format!("{what} needs a number")))
    };
    while i < args.len() {
        let a = args[i].as_str();
        let v = args.get(i + 1);
        match a {
            "--svcdir" => o.svcdir = PathBuf::from(v.unwrap_or_else(|| fail("--svcdir DIR"))),
            "--n" => o.n = num(v, a) as usize,
            "--stop-signal" => {
                o.stop_sig = match v.map(String::as_str) {
                    Some("TERM") => libc::SIGTERM,
                    Some("HUP") => libc::SIGHUP,
                    Some("INT") => libc::SIGINT,
                    Some("QUIT") => libc::SIGQUIT,
                    _ => fail("--stop-signal TERM|HUP|INT|QUIT"),
                }
            }
            "--settle-ms" => o.settle_ms = num(v, a),
            "--idle" => {
                let s = v.unwrap_or_else(|| fail("--idle FROM_MS:TO_MS"));
                let (f, t) = s
                    .split_once(':')
                    .and_then(|(f, t)| Some((f.parse().ok()?, t.parse().ok()?)))
                    .unwrap_or_else(|| fail("--idle FROM_MS:TO_MS"));
                if t <= f {
                    fail("--idle: TO must be after FROM");
                }
                o.idle = Some((f, t));
            }
            "--mem" => {
                o.mem = true;
                i += 1;
                continue;
            }
            "--restarts" => o.restarts = num(v, a) as usize,
            "--min-age-ms" => o.min_age_ms = num(v, a),
            "--lock" => o.lock = Some(PathBuf::from(v.unwrap_or_else(|| fail("--lock FILE")))),
            "--log" => o.log = PathBuf::from(v.unwrap_or_else(|| fail("--log FILE"))),
            "--start-timeout-ms" => o.start_timeout_ms = num(v, a),
            "--stop-timeout-ms" => o.stop_timeout_ms = num(v, a),
            "--" => {
                o.cmd = args[i + 1..].to_vec();
                break;
            }
            _ => fail(&format!("unknown option {a}")),
        }
        i += 2;
    }
    if o.cmd.is_empty() || o.n == 0 || o.svcdir.as_os_str().is_empty() {
        fail("usage: bench-supbench run --svcdir DIR --n N [options] -- SUPERVISOR ARGS...");
    }
    o
}

struct Lock(File);

impl Lock {
    fn take(path: &Path) -> Lock {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| fail(&format!("open lock {}: {e}", path.display())));
        loop {
            // SAFETY: flock on our own fd.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Lock(f);
            }
            if errno().raw_os_error() != Some(libc::EINTR) {
                fail(&format!("flock: {}", errno()));
            }
            check_interrupted();
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: flock on our own fd.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Fail if the supervisor has exited (reaps it if so).
fn check_top_alive(top: i32) {
    let mut st = 0;
    // SAFETY: waitpid with a valid status pointer.
    let r = unsafe { libc::waitpid(top, &mut st, libc::WNOHANG) };
    if r == top {
        fail(&format!(
            "the supervisor exited early (wait status {st:#x})"
        ));
    }
}

fn run(o: Opts) {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        fail(&format!("PR_SET_CHILD_SUBREAPER: {}", errno()));
    }
    // If the script that started us dies (even by SIGKILL), we get SIGTERM and clean up.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };
    install(libc::SIGALRM, on_alarm);
    install(libc::SIGTERM, on_term);
    install(libc::SIGINT, on_term);
    let me = self_exe();
    let dirs: Vec<PathBuf> = (0..o.n)
        .map(|i| o.svcdir.join(format!("s{i:03}")))
        .collect();
    let stamp_files: Vec<PathBuf> = dirs.iter().map(|d| d.join("stamp")).collect();
    for s in &stamp_files {
        match std::fs::remove_file(s) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => fail(&format!("rm {}: {e}", s.display())),
        }
    }
    let ino = Inotify::new(&dirs);
    let log =
        File::create(&o.log).unwrap_or_else(|e| fail(&format!("create {}: {e}", o.log.display())));
    let log2 = log
        .try_clone()
        .unwrap_or_else(|e| fail(&format!("dup log: {e}")));

    let t0 = mono_ns();
    let child = Command::new(&o.cmd[0])
        .args(&o.cmd[1..])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .unwrap_or_else(|e| fail(&format!("spawn {}: {e}", o.cmd[0])));
    let top = child.id() as i32;
    TOP.store(top, Ordering::SeqCst);
    drop(child); // we reap with waitpid(-1) ourselves

    // 2. start: wait for every stamp
    let deadline = t0 + o.start_timeout_ms * 1_000_000;
    let mut first: Vec<Option<u64>> = vec![None; o.n];
    loop {
        check_interrupted();
        for (i, f) in stamp_files.iter().enumerate() {
            if first[i].is_none() {
                first[i] = stamps(f).first().map(|s| s.1);
            }
        }
        if first.iter().all(Option::is_some) {
            break;
        }
        check_top_alive(top);
        if mono_ns() > deadline {
            let missing = first.iter().filter(|x| x.is_none()).count();
            fail(&format!(
                "start: {missing} of {} services never started within {} ms",
                o.n, o.start_timeout_ms
            ));
        }
        ino.wait(100);
    }
    drop(ino);
    let firsts: Vec<u64> = first.iter().flatten().copied().collect();
    let last = firsts.iter().copied().max().unwrap_or(t0);
    let earliest = firsts.iter().copied().min().unwrap_or(t0);
    let ready = mono_ns();
    let mut out = String::new();
    out += &format!(
        "start_ns={}\nfirst_ns={}\n",
        last.saturating_sub(t0),
        earliest.saturating_sub(t0)
    );

    // 3. settle
    sleep_until(ready + o.settle_ms * 1_000_000);
    check_top_alive(top);

    // 4. idle wakeups
    if let Some((from, to)) = o.idle {
        sleep_until(ready + from * 1_000_000);
        let procs_a = supervisor_procs(top, &me);
        let a_top = ctxsw(top).0;
        let a_all: u64 = procs_a.iter().map(|p| ctxsw(*p).0).sum();
        sleep_until(ready + to * 1_000_000);
        let procs_b = supervisor_procs(top, &me);
        let b_top = ctxsw(top).0;
        let b_all: u64 = procs_b.iter().map(|p| ctxsw(*p).0).sum();
        if procs_a != procs_b {
            eprintln!(
                "bench-supbench: warning: the supervisor processes changed during the idle window ({procs_a:?} -> {procs_b:?})"
            );
        }
        out += &format!(
            "ctx_top={}\nctx_all={}\n",
            b_top.saturating_sub(a_top),
            b_all.saturating_sub(a_all)
        );
    }

    // 5. memory
    let procs = supervisor_procs(top, &me);
    let threads: u64 = procs.iter().map(|p| ctxsw(*p).1).sum();
    out += &format!("procs={}\nthreads={threads}\n", procs.len());
    if o.mem {
        let rss_top = status_field(top, "VmRSS:").unwrap_or(0);
        let rss_all: u64 = procs
            .iter()
            .map(|p| status_field(*p, "VmRSS:").unwrap_or(0))
            .sum();
        let pss_top = pss_kib(top).unwrap_or(0);
        let pss_all: u64 = procs.iter().map(|p| pss_kib(*p).unwrap_or(0)).sum();
        out += &format!(
            "rss_top={rss_top}\nrss_all={rss_all}\npss_top={pss_top}\npss_all={pss_all}\n"
        );
    }

    // 6. restarts of service s000
    if o.restarts > 0 {
        let f = &stamp_files[0];
        let ino0 = Inotify::new(&dirs[..1]);
        let mut lat = Vec::new();
        for k in 0..o.restarts {
            let st = stamps(f);
            let Some(&(pid, born)) = st.last() else {
                fail("restarts: no stamp for s000");
            };
            sleep_until(born + o.min_age_ms * 1_000_000);
            check_top_alive(top);
            let mut lock = o.lock.as_deref().map(Lock::take);
            let before = st.len();
            let t_kill = mono_ns();
            // SAFETY: plain kill of the service instance we read from its stamp.
            if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
                fail(&format!("restart {k}: kill {pid}: {}", errno()));
            }
            let deadline = t_kill + 20_000_000_000;
            let new = loop {
                check_interrupted();
                let s = stamps(f);
                if s.len() > before {
                    break s[before];
                }
                let now = mono_ns();
                if now > deadline {
                    fail(&format!("restart {k}: s000 was not restarted within 20 s"));
                }
                // A supervisor that waits (a restart delay) leaves the others free to go on:
                // after LOCK_HOLD_NS the lock is released while this one keeps waiting.
                if now - t_kill > LOCK_HOLD_NS {
                    lock = None;
                }
                ino0.wait(if lock.is_some() { 5 } else { 100 });
            };
            drop(lock);
            lat.push(new.1.saturating_sub(t_kill));
        }
        let l: Vec<String> = lat.iter().map(u64::to_string).collect();
        out += &format!("restart_ns={}\n", l.join(","));
    }

    // 7. stop
    check_top_alive(top);
    let t_stop = mono_ns();
    // SAFETY: signal to our own child.
    if unsafe { libc::kill(top, o.stop_sig) } != 0 {
        fail(&format!("kill {top}: {}", errno()));
    }
    let secs = o.stop_timeout_ms.div_ceil(1000) as libc::c_uint;
    // SAFETY: alarm only arms a timer; its handler does nothing, so waitpid returns EINTR.
    unsafe { libc::alarm(secs) };
    let mut top_status = None;
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut st, 0) };
        if r == top {
            top_status = Some(st);
        }
        if r < 0 {
            match errno().raw_os_error() {
                Some(libc::ECHILD) => break,
                Some(libc::EINTR) => {
                    check_interrupted();
                    if mono_ns() - t_stop >= o.stop_timeout_ms * 1_000_000 {
                        let left = tree(
                            // SAFETY: getpid cannot fail.
                            unsafe { libc::getpid() },
                        )
                        .len()
                            - 1;
                        fail(&format!(
                            "stop: {left} processes still there {} ms after the stop signal",
                            o.stop_timeout_ms
                        ));
                    }
                }
                _ => fail(&format!("waitpid: {}", errno())),
            }
        }
    }
    let t_end = mono_ns();
    // SAFETY: disarm.
    unsafe { libc::alarm(0) };
    let exit = match top_status {
        Some(st) if libc::WIFEXITED(st) => libc::WEXITSTATUS(st).to_string(),
        Some(st) if libc::WIFSIGNALED(st) => format!("signal {}", libc::WTERMSIG(st)),
        _ => "?".to_string(),
    };
    out += &format!("stop_ns={}\nexit={exit}\n", t_end - t_stop);
    print!("{out}");
}

// ------------------------------------------------------------------------------------------
// Floor role: the least a supervisor can do
// ------------------------------------------------------------------------------------------

/// `bench-supbench mini SVCDIR N`: a minimal supervisor, the floor the real ones are compared
/// with. It starts `bench-supbench svc SVCDIR/sNNN/stamp` for NNN = 000..N-1 with fork + execv
/// (argv prepared before the fork; only sigprocmask between fork and exec), then blocks in
/// sigwaitinfo for SIGCHLD or SIGTERM: a dead service is reaped and forked again at once (no
/// delay, no bookkeeping, no logging, no output relay); SIGTERM sends SIGTERM to every service
/// and it exits 0 once all are reaped.
fn mini(args: &[String]) -> ! {
    let (Some(dir), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: bench-supbench mini SVCDIR N");
        exit(2);
    };
    let me = std::ffi::CString::new(self_exe().as_os_str().as_encoded_bytes())
        .unwrap_or_else(|_| exit(2));
    let svc = c"svc".to_owned();
    let stamps: Vec<std::ffi::CString> = (0..n)
        .map(|i| std::ffi::CString::new(format!("{dir}/s{i:03}/stamp")).unwrap_or_else(|_| exit(2)))
        .collect();
    // SAFETY: signal mask set-up on memory we own.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let spawn = |i: usize| -> i32 {
        let argv = [
            me.as_ptr(),
            svc.as_ptr(),
            stamps[i].as_ptr(),
            std::ptr::null(),
        ];
        // SAFETY: fork; the child only calls sigprocmask, execv and _exit (async-signal-safe) on
        // memory prepared before the fork.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::execv(argv[0], argv.as_ptr());
                libc::_exit(127);
            }
            if pid < 0 {
                eprintln!("bench-supbench mini: fork: {}", errno());
                exit(1);
            }
            pid
        }
    };
    let mut pids: Vec<i32> = (0..n).map(spawn).collect();
    let mut stopping = false;
    loop {
        // SAFETY: sigwaitinfo on our blocked set.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig == libc::SIGTERM && !stopping {
            stopping = true;
            for p in pids.iter().filter(|p| **p > 0) {
                // SAFETY: plain kill of our own children (never 0 or -1: those are groups).
                unsafe { libc::kill(*p, libc::SIGTERM) };
            }
        }
        loop {
            let mut st = 0;
            // SAFETY: waitpid with a valid status pointer.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r <= 0 {
                if r < 0 && stopping {
                    exit(0);
                }
                break;
            }
            if let Some(i) = pids.iter().position(|p| *p == r) {
                if stopping {
                    pids[i] = 0;
                } else {
                    pids[i] = spawn(i);
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().map(String::as_str).unwrap_or("");
    match args.get(1).map(String::as_str) {
        Some("svc") => service(args.get(2).map(String::as_str)),
        _ if argv0.ends_with("run") && !argv0.ends_with("supbench") => service(None),
        Some("run") => run(parse(&args[2..])),
        Some("mini") => mini(&args[2..]),
        _ => {
            eprintln!(
                "usage: bench-supbench svc [STAMP] | bench-supbench mini SVCDIR N | bench-supbench run --svcdir DIR --n N [--settle-ms MS] [--idle FROM:TO] [--mem] [--restarts K --min-age-ms A --lock FILE] [--stop-signal TERM|HUP] [--log FILE] -- SUPERVISOR ARGS..."
            );
            exit(2);
        }
    }
}
