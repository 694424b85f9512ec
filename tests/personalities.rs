//! keel invoked as tini / docker-init, dumb-init and catatonit behaves as they do where a
//! script can tell: the signal routing table of `shared/design/inits.md` §4, exit codes,
//! exec-failure messages, version and help output, the not-PID-1 warning, pause mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

/// What a terminal stop signal sent to the init does.
#[derive(Clone, Copy, Debug)]
enum Tty {
    /// TSTP, TTIN and TTOU reach the child.
    ForwardAll,
    /// TSTP reaches the child; TTIN/TTOU are dropped (tini).
    ForwardTstpOnly,
    /// All three are dropped (catatonit).
    Drop,
    /// SIGSTOP to the child's group, and the init stops itself (dumb-init).
    StopGroupAndSelf,
    /// The child gets TSTP unchanged, and the init stops itself (dumb-init -c).
    ForwardAndStopSelf,
}

fn count(path: &Path, line: &str) -> usize {
    read(path).lines().filter(|l| *l == line).count()
}

fn wait_count(path: &Path, line: &str, n: usize) {
    let ok = wait_until(LONG, || count(path, line) >= n);
    assert!(ok, "{line} x{n} not in {}: {}", path.display(), read(path));
}

/// The probe of inits.md §4: a child that logs its signals and a grandchild in its process
/// group that logs its own; each signal is sent to the init (not PID 1).
fn routing(name: &str, args: &[&str], group: bool, tty: Tty) {
    let dir = scratch(&format!("route-{name}"));
    let d = dir.display();
    let sigs = "HUP INT USR1 USR2 WINCH PIPE RTMIN+1 TSTP TTIN TTOU CONT";
    let script = format!(
        r#"bash -c 'echo $$ > {d}/gpid; for s in {sigs}; do trap "echo $s >> {d}/g" $s; done; echo ready >> {d}/g; while :; do sleep 100 & wait $!; done' &
echo $$ > {d}/cpid
for s in {sigs}; do trap "echo $s >> {d}/c" $s; done
echo ready >> {d}/c
while :; do sleep 100 & wait $!; done"#
    );
    let bin = personality(name);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["bash", "-c", &script]);
    let k = start_as(&bin, Mode::Plain, &all, &[]).unwrap();
    let (c, g) = (dir.join("c"), dir.join("g"));
    wait_line(&c, "ready", LONG);
    wait_line(&g, "ready", LONG);
    let cpid: i32 = read(&dir.join("cpid")).trim().parse().unwrap();
    let gpid: i32 = read(&dir.join("gpid")).trim().parse().unwrap();

    // Plain signals: the child always; the grandchild only in group mode. (The grandchild is
    // a background job of a non-interactive shell: INT is ignored there, so it is not used.)
    for (sig, label) in [
        (libc::SIGHUP, "HUP"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGWINCH, "WINCH"),
        (libc::SIGPIPE, "PIPE"),
        (35, "RTMIN+1"),
    ] {
        send(k.keel_pid, sig);
        wait_count(&c, label, 1);
        if group {
            wait_count(&g, label, 1);
        }
    }
    send(k.keel_pid, libc::SIGINT);
    wait_count(&c, "INT", 1);

    match tty {
        Tty::ForwardAll | Tty::ForwardTstpOnly | Tty::Drop => {
            let want = |s: &str| match (tty, s) {
                (Tty::ForwardAll, _) => 1,
                (Tty::ForwardTstpOnly, "TSTP") => 1,
                _ => 0,
            };
            // One at a time (bash may run one trap for signals arriving together). A dropped
            // one is followed by a marker: once the marker is in, the signal was dealt with.
            let mut markers = 0;
            for (sig, s) in [
                (libc::SIGTSTP, "TSTP"),
                (libc::SIGTTIN, "TTIN"),
                (libc::SIGTTOU, "TTOU"),
            ] {
                send(k.keel_pid, sig);
                if want(s) == 1 {
                    wait_count(&c, s, 1);
                } else {
                    markers += 1;
                    send(k.keel_pid, libc::SIGUSR2);
                    wait_count(&c, "USR2", markers);
                }
                assert_eq!(count(&c, s), want(s), "{name} {args:?}: {s}\n{}", read(&c));
            }
            assert_ne!(state(k.keel_pid), 'T', "{name}: the init stopped");
        }
        Tty::StopGroupAndSelf => {
            send(k.keel_pid, libc::SIGTSTP);
            assert!(
                wait_until(LONG, || state(cpid) == 'T'
                    && state(gpid) == 'T'
                    && state(k.keel_pid) == 'T'),
                "{name}: child {} grandchild {} init {}",
                state(cpid),
                state(gpid),
                state(k.keel_pid)
            );
            assert_eq!(count(&c, "TSTP"), 0, "TSTP was rewritten to SIGSTOP");
            send(k.keel_pid, libc::SIGCONT);
            wait_count(&c, "CONT", 1);
            wait_count(&g, "CONT", 1);
            assert!(wait_until(LONG, || state(k.keel_pid) != 'T'));
        }
        Tty::ForwardAndStopSelf => {
            send(k.keel_pid, libc::SIGTSTP);
            wait_count(&c, "TSTP", 1);
            assert!(wait_until(LONG, || state(k.keel_pid) == 'T'));
            send(k.keel_pid, libc::SIGCONT);
            wait_count(&c, "CONT", 1);
            assert!(wait_until(LONG, || state(k.keel_pid) != 'T'));
        }
    }
    if !group {
        assert_eq!(
            read(&g).trim(),
            "ready",
            "{name} {args:?}: grandchild was signalled"
        );
    }
    // Clean up: kill the child's whole process group (its pid: every personality gives it a
    // group of its own), so no `sleep` keeps keel's output pipes open; keel exits with the
    // child's status.
    send(-cpid, libc::SIGKILL);
    let f = k.finish(LONG);
    assert_eq!(f.code(), 137, "{name}: {}", f.stderr);
}

#[test]
fn routing_keel() {
    routing("keel", &["--"], false, Tty::ForwardAll);
}

#[test]
fn routing_keel_group() {
    routing("keel", &["-g", "--"], true, Tty::ForwardAll);
}

#[test]
fn routing_tini() {
    routing("tini", &["-s", "--"], false, Tty::ForwardTstpOnly);
}

#[test]
fn routing_tini_group() {
    routing("tini", &["-s", "-g", "--"], true, Tty::ForwardTstpOnly);
}

#[test]
fn routing_dumb_init() {
    routing("dumb-init", &[], true, Tty::StopGroupAndSelf);
}

#[test]
fn routing_dumb_init_single_child() {
    routing("dumb-init", &["-c"], false, Tty::ForwardAndStopSelf);
}

#[test]
fn routing_catatonit() {
    routing("catatonit", &["--"], false, Tty::Drop);
}

#[test]
fn routing_catatonit_group() {
    routing("catatonit", &["-g", "--"], true, Tty::Drop);
}

fn run_as(name: &str, mode: Mode, args: &[&str], env: &[(&str, &str)]) -> Option<Finished> {
    Some(start_as(&personality(name), mode, args, env)?.finish(LONG))
}

#[test]
fn exit_codes_and_exec_failures_per_personality() {
    for mode in MODES {
        // (name, args before the command, stderr line for a missing command, its exit code)
        let rows: &[(&str, &[&str], &str, i32)] = &[
            (
                "keel",
                &["--"],
                "keel: cannot run 'nope-keel': No such file or directory",
                127,
            ),
            (
                "tini",
                &["-s", "--"],
                "exec nope-keel failed: No such file or directory",
                127,
            ),
            (
                "docker-init",
                &["--"],
                "exec nope-keel failed: No such file or directory",
                127,
            ),
            (
                "dumb-init",
                &[],
                "[dumb-init] nope-keel: No such file or directory",
                2,
            ),
            (
                "catatonit",
                &["--"],
                "failed to exec pid1: No such file or directory",
                1,
            ),
        ];
        for (name, pre, msg, code) in rows {
            let mut args = pre.to_vec();
            args.push("nope-keel");
            let Some(f) = run_as(name, mode, &args, &[]) else {
                return;
            };
            assert_eq!(f.code(), *code, "{name} {mode:?}: {}", f.stderr);
            assert!(f.stderr.contains(msg), "{name} {mode:?}: {}", f.stderr);
            for (script, want) in [("exit 0", 0), ("exit 42", 42), ("kill -TERM $$", 143)] {
                let mut args = pre.to_vec();
                args.extend(["sh", "-c", script]);
                let f = run_as(name, mode, &args, &[]).unwrap();
                assert_eq!(f.code(), want, "{name} {mode:?} {script}: {}", f.stderr);
            }
        }
    }
}

#[test]
fn tini_remaps_with_e_and_reads_its_environment() {
    let f = run_as(
        "tini",
        Mode::Pid1,
        &["-e", "143", "--", "sh", "-c", "kill $$"],
        &[],
    );
    let Some(f) = f else { return };
    assert_eq!(f.code(), 0);
    // Usage errors are exit 1 with the usage text on stderr.
    let f = run_as("tini", Mode::Plain, &["sh", "-c", "true"], &[]).unwrap();
    assert_eq!(f.code(), 1);
    assert!(
        f.stderr.starts_with(&format!(
            "{}: invalid option -- 'c'\n",
            personality("tini").display()
        )),
        "{}",
        f.stderr
    );
    let f = run_as(
        "tini",
        Mode::Plain,
        &["sh", "-c", "exit 4"],
        &[("POSIXLY_CORRECT", "1"), ("TINI_SUBREAPER", "")],
    )
    .unwrap();
    assert_eq!(f.code(), 4, "{}", f.stderr);
}

#[test]
fn tini_warns_when_not_pid1_and_not_a_subreaper() {
    let f = run_as("tini", Mode::Plain, &["--", "true"], &[]).unwrap();
    assert_eq!(f.code(), 0);
    assert!(
        f.stderr.contains("zombie reaping won't work"),
        "{}",
        f.stderr
    );
    assert!(f.stderr.starts_with("[WARN  tini ("), "{}", f.stderr);
    for (args, env) in [
        (&["-s", "--", "true"][..], &[][..]),
        (&["--", "true"][..], &[("TINI_SUBREAPER", "")][..]),
        (&["--", "true"][..], &[("TINI_VERBOSITY", "0")][..]),
    ] {
        let f = run_as("tini", Mode::Plain, args, env).unwrap();
        assert_eq!(f.stderr, "", "{args:?} {env:?}");
    }
    // As PID 1 there is nothing to warn about.
    let Some(f) = run_as("docker-init", Mode::Pid1, &["--", "true"], &[]) else {
        return;
    };
    assert_eq!(f.stderr, "");
}

#[test]
fn tini_w_warns_about_reaped_zombies() {
    let f = run_as(
        "tini",
        Mode::Plain,
        &["-s", "-w", "--", "sh", "-c", "( sleep 0.05 & ); sleep 0.5"],
        &[],
    )
    .unwrap();
    assert_eq!(f.code(), 0);
    assert!(
        f.stderr.contains("Reaped zombie process with pid="),
        "{}",
        f.stderr
    );
}

#[test]
fn tini_p_forwards_a_signal_when_the_parent_dies() {
    let dir = scratch("pdeathsig");
    let tini = personality("tini");
    // A parent shell starts tini (-p SIGUSR1) and is then killed; tini gets SIGUSR1 and
    // forwards it to its child, which records it.
    let script = format!(
        r#"{tini} -s -p SIGUSR1 -- bash -c 'trap "echo USR1 > {d}/got; exit 0" USR1; echo $$ > {d}/child; while :; do sleep 100 & wait $!; done' &
wait"#,
        tini = tini.display(),
        d = dir.display()
    );
    let mut parent = std::process::Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    assert!(wait_until(LONG, || !read(&dir.join("child")).is_empty()));
    parent.kill().unwrap();
    parent.wait().unwrap();
    wait_line(&dir.join("got"), "USR1", LONG);
}

#[test]
fn version_and_help_as_scripts_parse_them() {
    let out = std::process::Command::new(personality("docker-init"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let line = String::from_utf8(out.stdout).unwrap();
    let want = format!(
        "tini version 0.19.0_keel-{} - git.",
        env!("CARGO_PKG_VERSION")
    );
    assert!(line.starts_with(&want) && line.ends_with('\n'), "{line}");
    let commit = line.trim_end().strip_prefix(&want).unwrap();
    assert!(!commit.is_empty() && !commit.contains('.'), "{line}");
    let out = std::process::Command::new(personality("dumb-init"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"");
    assert_eq!(out.stderr, b"dumb-init v1.2.5\n");
    let out = std::process::Command::new(personality("dumb-init"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let usage = format!(
        "Usage: {0} [option] program [args]\nTry {0} --help for full usage.\n",
        personality("dumb-init").display()
    );
    assert_eq!(String::from_utf8(out.stderr).unwrap(), usage);
    let out = std::process::Command::new(personality("catatonit"))
        .arg("-V")
        .output()
        .unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("tini version 0.2.1_catatonit")
    );
    let out = std::process::Command::new(personality("catatonit"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("missing program name")
    );
}

#[test]
fn catatonit_pause_mode_reaps_and_exits_0_on_term() {
    for mode in MODES {
        let Some(k) = start_as(&personality("catatonit"), mode, &["-P"], &[]) else {
            return;
        };
        std::thread::sleep(Duration::from_millis(100));
        // Other signals are ignored.
        send(k.keel_pid, libc::SIGUSR1);
        send(k.keel_pid, libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(100));
        assert!(alive(k.keel_pid), "{mode:?}: pause mode died of USR1/HUP");
        send(k.keel_pid, libc::SIGTERM);
        let f = k.finish(LONG);
        assert_eq!(f.code(), 0, "{mode:?}: {}", f.stderr);
    }
}

#[test]
fn dumb_init_terms_the_group_when_the_child_exits() {
    // A background job in the child's group outlives the child; dumb-init (setsid mode)
    // sends SIGTERM to the group when the child exits.
    let dir = scratch("dumb-group");
    let script = format!(
        r#"bash -c 'trap "echo TERM > {d}/bg; exit 0" TERM; echo $$ > {d}/pid; while :; do sleep 100 & wait $!; done' &
while [ ! -s {d}/pid ]; do sleep 0.01; done
exit 5"#,
        d = dir.display()
    );
    let f = run_as("dumb-init", Mode::Plain, &["bash", "-c", &script], &[]).unwrap();
    assert_eq!(f.code(), 5, "{}", f.stderr);
    wait_line(&dir.join("bg"), "TERM", LONG);
}
