//! bench-storm: orphan-storm helper for bench/run.sh (std + libc only).
//!
//! Run it as the child of the init under test, with that init as PID 1 of a fresh PID namespace:
//!
//!     unshare --pid --fork --mount-proc INIT -- bench-storm [--drain] N
//!
//! It creates N orphans with the classic double fork: an intermediate child forks a grandchild and
//! `_exit(0)`s at once; the grandchild `_exit(0)`s at once. The storm reaps its own intermediates,
//! so every grandchild is re-parented to PID 1 (the init) and becomes the init's zombie to reap.
//!
//! "Unreaped orphans" = number of processes visible in this namespace's /proc minus the ones that
//! were there before the storm began (the init and the storm itself). Counting uses readdir(/proc)
//! only (no per-pid reads), so one poll is cheap (~1-3 ms at 10,000 entries). The final wait
//! sleeps 1 ms between polls so that the poller does not compete with the init for a CPU.
//!
//! Modes:
//! * concurrent (default): fork all N orphans while the init reaps concurrently, sampling the
//!   unreaped count every 500 orphans; then poll until it reaches 0.
//!   Reports create_ms (first fork -> last orphan created), drain_ms (last orphan created -> none
//!   left), total_ms, peak_unreaped (highest count seen by any sample/poll), init_cpu_ms (CPU
//!   time PID 1 ran during the storm, from /proc/1/schedstat).
//! * --drain: the caller must SIGSTOP the init (from outside the namespace; a process inside the
//!   namespace cannot stop its init). The storm waits until /proc/1/stat says `T`, creates all N
//!   orphans, waits until all N are zombies, then sends SIGCONT to PID 1 (the continue side effect
//!   happens even though PID 1 may drop or forward the signal itself) and times how long the init
//!   takes to reap the whole backlog of N zombies: drain_ms. This isolates the init's reaping
//!   throughput from the storm's fork cost. init_cpu_ms is PID 1's CPU time during the drain.
//!
//! Output: one line on stdout, `key=value` pairs, e.g.
//!     storm mode=concurrent n=10000 create_ms=2401.301 drain_ms=0.025 total_ms=2401.326 peak_unreaped=1 init_cpu_ms=201.553
//! Exit status 0 on success; 1 with a message on stderr on any error or timeout.

use std::process::exit;
use std::time::{Duration, Instant};

const SAMPLE_EVERY: usize = 500;
const TIMEOUT: Duration = Duration::from_secs(60);

fn die(msg: &str) -> ! {
    eprintln!("bench-storm: {msg}");
    exit(1);
}

fn errno_str() -> String {
    std::io::Error::last_os_error().to_string()
}

/// Number of numeric entries in /proc (processes in our PID namespace, zombies included).
fn count_procs() -> usize {
    // SAFETY: plain libc directory iteration on a NUL-terminated path; the DIR is closed below.
    unsafe {
        let dir = libc::opendir(c"/proc".as_ptr());
        if dir.is_null() {
            die(&format!("opendir /proc: {}", errno_str()));
        }
        let mut n = 0;
        loop {
            let ent = libc::readdir(dir);
            if ent.is_null() {
                break;
            }
            let c = (*ent).d_name[0] as u8;
            if c.is_ascii_digit() {
                n += 1;
            }
        }
        libc::closedir(dir);
        n
    }
}

/// State letter of /proc/<pid>/stat ('R', 'S', 'Z', 'T', ...), None if the process is gone.
fn proc_state(pid: &str) -> Option<u8> {
    let s = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = s.iter().rposition(|&b| b == b')')?;
    s.get(close + 2).copied()
}

/// Number of zombies in our PID namespace (reads every /proc/<pid>/stat: slow, used untimed only).
fn count_zombies() -> usize {
    let rd = std::fs::read_dir("/proc").unwrap_or_else(|e| die(&format!("read_dir /proc: {e}")));
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .filter(|n| proc_state(n) == Some(b'Z'))
        .count()
}

/// Fork one intermediate that forks one grandchild and exits; reap the intermediate.
fn make_orphan() {
    // SAFETY: single-threaded process; the children only call async-signal-safe fork/_exit.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            die(&format!("fork: {}", errno_str()));
        }
        if pid == 0 {
            // Intermediate: new session (see below), fork the grandchild (which exits at once), then
            // exit at once. setsid() keeps the kernel's orphaned-process-group check in exit() O(1):
            // without it every orphan exit walks the whole process group, zombies included, which
            // makes creating a backlog O(N^2) and dependent on whether the init setsid()s its child.
            libc::setsid();
            let g = libc::fork();
            if g == 0 {
                libc::_exit(0);
            }
            libc::_exit(if g < 0 { 1 } else { 0 });
        }
        let mut st: libc::c_int = 0;
        loop {
            let r = libc::waitpid(pid, &mut st, 0);
            if r == pid {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                die(&format!("waitpid: {}", errno_str()));
            }
        }
        if !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
            die("intermediate child failed to fork a grandchild");
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pid1_state() -> Option<u8> {
    proc_state("1")
}

/// CPU time PID 1 has run so far, in ns (first field of /proc/1/schedstat), if available.
fn pid1_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/1/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn main() {
    let mut drain = false;
    let mut n: Option<usize> = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--drain" => drain = true,
            "-h" | "--help" => {
                println!(
                    "usage: bench-storm [--drain] N   (as the child of PID 1 in a PID namespace)"
                );
                return;
            }
            s => {
                n = Some(
                    s.parse()
                        .unwrap_or_else(|_| die(&format!("bad count: {s:?}"))),
                )
            }
        }
    }
    let n = n.unwrap_or(10_000);

    // The numbers only mean something if our parent is the init under test, as PID 1 of its own
    // PID namespace (otherwise orphans go to the host's init or a subreaper).
    // SAFETY: trivial syscalls.
    let ppid = unsafe { libc::getppid() };
    if ppid != 1 {
        die(&format!(
            "parent pid is {ppid}, not 1: run me as `unshare --pid --fork --mount-proc INIT -- bench-storm N`"
        ));
    }
    // /proc must be this namespace's proc (unshare --mount-proc), or the counts are the host's.
    let self_link = std::fs::read_link("/proc/self").unwrap_or_default();
    let mypid = unsafe { libc::getpid() };
    if self_link.to_string_lossy() != mypid.to_string() {
        die("/proc is not this PID namespace's procfs (use unshare --mount-proc)");
    }

    if drain {
        let t = Instant::now();
        while pid1_state() != Some(b'T') {
            if t.elapsed() > Duration::from_secs(20) {
                die("--drain: PID 1 was not stopped (SIGSTOP it from outside) within 20 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    let cpu0 = pid1_cpu_ns();
    let baseline = count_procs();
    let unreaped = || count_procs().saturating_sub(baseline);
    let mut peak = 0usize;

    let t0 = Instant::now();
    for i in 1..=n {
        make_orphan();
        if !drain && i % SAMPLE_EVERY == 0 {
            peak = peak.max(unreaped());
        }
    }
    let t_created = Instant::now();

    let mut cpu_drain0 = cpu0;
    let t_drain0 = if drain {
        // Every grandchild must have exited (be a zombie) before the init is let go.
        while count_zombies() < n {
            if t_created.elapsed() > TIMEOUT {
                die(&format!(
                    "--drain: only {} of {n} zombies appeared",
                    count_zombies()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        peak = unreaped();
        cpu_drain0 = pid1_cpu_ns();
        let t = Instant::now();
        // SAFETY: plain kill(2).
        if unsafe { libc::kill(1, libc::SIGCONT) } != 0 {
            die(&format!("kill(1, SIGCONT): {}", errno_str()));
        }
        t
    } else {
        t_created
    };

    loop {
        let u = unreaped();
        peak = peak.max(u);
        if u == 0 {
            break;
        }
        if t_drain0.elapsed() > TIMEOUT {
            die(&format!(
                "{u} orphans still unreaped after {} s",
                TIMEOUT.as_secs()
            ));
        }
        if drain && pid1_state() == Some(b'T') {
            // Still stopped: the SIGCONT did not take effect.
            if t_drain0.elapsed() > Duration::from_secs(5) {
                die("PID 1 still stopped 5 s after SIGCONT");
            }
        }
        // Sleep between polls rather than spin: on a busy 2-core machine a spinning poller would
        // take CPU from the init whose speed we measure. Costs <= 1 ms of resolution.
        std::thread::sleep(Duration::from_millis(1));
    }
    let t_end = Instant::now();
    // CPU time the init used: over the whole storm (concurrent) or over the drain (--drain).
    let init_cpu_ms = match (cpu_drain0, pid1_cpu_ns()) {
        (Some(a), Some(b)) => format!("{:.3}", b.saturating_sub(a) as f64 / 1e6),
        _ => "NaN".to_string(),
    };

    println!(
        "storm mode={} n={n} create_ms={:.3} drain_ms={:.3} total_ms={:.3} peak_unreaped={peak} init_cpu_ms={init_cpu_ms}",
        if drain { "drain" } else { "concurrent" },
        ms(t_created - t0),
        ms(t_end - t_drain0),
        ms(t_end - t0),
    );
}
