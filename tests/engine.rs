//! keel's single-command engine, tested for real: the built binary as PID 1 of a PID namespace
//! and as a plain process (subreaper), with real signals, real children and real orphans.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

#[test]
fn exit_codes_pass_through_0_to_255() {
    for mode in MODES {
        // One keel per code would take long; every code is covered in batches of shells.
        for code in [0, 1, 2, 3, 42, 125, 126, 127, 128, 129, 200, 254, 255] {
            let Some(f) = run(mode, &["--", "sh", "-c", &format!("exit {code}")], &[]) else {
                return;
            };
            assert_eq!(f.code(), code, "{mode:?}: stderr {}", f.stderr);
        }
    }
}

#[test]
fn every_exit_code_as_pid1() {
    let Some(prefix) = pid1_prefix() else { return };
    // A single PID namespace whose keel runs 256 children in turn would not test keel's exit;
    // so run 256 keels, but cheaply, in parallel batches.
    let mut running = Vec::new();
    for code in 0..=255 {
        let mut cmd = std::process::Command::new(prefix[0]);
        cmd.args(&prefix[1..])
            .arg(keel())
            .args(["--", "sh", "-c", &format!("exit {code}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        running.push((code, cmd.spawn().unwrap()));
        if running.len() == 16 || code == 255 {
            for (code, mut child) in running.drain(..) {
                let st = child.wait().unwrap();
                assert_eq!(st.code(), Some(code));
            }
        }
    }
}

#[test]
fn killed_child_gives_128_plus_signal() {
    for mode in MODES {
        for sig in ["HUP", "INT", "KILL", "USR1", "TERM", "SEGV", "ABRT"] {
            let script = format!("kill -s {sig} $$");
            let Some(f) = run(mode, &["--", "sh", "-c", &script], &[]) else {
                return;
            };
            let num = keel::signals::parse(sig).unwrap();
            assert_eq!(f.code(), 128 + num, "{mode:?} {sig}: {}", f.stderr);
        }
    }
}

#[test]
fn exec_failures_are_127_and_126_with_one_clear_line() {
    let dir = scratch("exec");
    let noexec = dir.join("not-executable");
    std::fs::write(&noexec, "#!/bin/sh\necho hi\n").unwrap();
    for mode in MODES {
        let Some(f) = run(mode, &["--", "no-such-program-keel"], &[]) else {
            return;
        };
        assert_eq!(f.code(), 127);
        assert_eq!(
            f.stderr.trim_end(),
            "keel: cannot run 'no-such-program-keel': No such file or directory"
        );
        let f = run(mode, &[noexec.to_str().unwrap()], &[]).unwrap();
        assert_eq!(f.code(), 126);
        assert_eq!(
            f.stderr.trim_end(),
            format!("keel: cannot run '{}': Permission denied", noexec.display())
        );
        // A script without #! runs under /bin/sh, as execvp does.
        let script = dir.join("nohashbang");
        std::fs::write(&script, "exit 9\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let f = run(mode, &[script.to_str().unwrap()], &[]).unwrap();
        assert_eq!(f.code(), 9, "{}", f.stderr);
    }
}

#[test]
fn bad_usage_exits_2_with_one_line_and_starts_nothing() {
    let dir = scratch("usage");
    let marker = dir.join("spawned");
    let touch = format!("touch {}", marker.display());
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            &["--bogus", "--", "sh", "-c", &touch],
            &[],
            "unknown option '--bogus'",
        ),
        (&[], &[], "no command given"),
        (
            &["-r", "NOPE:TERM", "sh", "-c", &touch],
            &[],
            "'NOPE' is not a signal",
        ),
        (
            &["--grace", "3x", "sh", "-c", &touch],
            &[],
            "--grace: '3x' is not a duration",
        ),
        (
            &["sh", "-c", &touch],
            &[("KEEL_STOP_TIMEOUT", "later")],
            "KEEL_STOP_TIMEOUT: 'later'",
        ),
        (
            &["sh", "-c", &touch],
            &[("KEEL_REMAP_EXIT", "143")],
            "KEEL_REMAP_EXIT: '143' is not of the form FROM:TO",
        ),
    ];
    for (args, env, want) in cases {
        let f = run(Mode::Plain, args, env).unwrap();
        assert_eq!(f.code(), 2, "{args:?}");
        assert_eq!(f.stderr.lines().count(), 1, "{args:?}: {}", f.stderr);
        assert!(f.stderr.starts_with("keel: "), "{}", f.stderr);
        assert!(f.stderr.contains(want), "{args:?}: {}", f.stderr);
        assert!(f.stderr.contains("keel --help"), "{}", f.stderr);
        assert!(f.stdout.is_empty());
    }
    assert!(!marker.exists(), "a command was started despite bad usage");
}

#[test]
fn help_and_version() {
    let f = run(Mode::Plain, &["--help"], &[]).unwrap();
    assert_eq!(f.code(), 0);
    for opt in [
        "--process-group",
        "--rewrite",
        "--remap-exit",
        "--grace",
        "--stop-timeout",
    ] {
        assert!(f.stdout.contains(opt), "help lacks {opt}");
    }
    let f = run(Mode::Plain, &["--version"], &[]).unwrap();
    // dockerd's parse: split on " - ", the commit from "git.X" (no dot in X).
    let line = f.stdout.trim();
    let (version, commit) = line.split_once(" - ").unwrap();
    assert_eq!(version, format!("keel {}", env!("CARGO_PKG_VERSION")));
    let commit = commit.strip_prefix("git.").unwrap();
    assert!(!commit.is_empty() && !commit.contains('.'), "{line}");
}

/// A bash child that logs every signal it receives (by name) to `log`, one per line.
fn signal_logger(log: &std::path::Path) -> String {
    format!(
        r#"log={log}
for s in HUP INT QUIT ILL TRAP ABRT BUS FPE USR1 SEGV USR2 PIPE ALRM STKFLT CONT TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS RTMIN RTMIN+1 RTMIN+5 RTMAX; do
  trap "echo $s >> $log" $s
done
trap 'echo TERM >> $log; exit 77' TERM
echo ready >> $log
while :; do sleep 100 & wait $!; done"#,
        log = log.display()
    )
}

#[test]
fn forwards_every_catchable_signal_and_survives_fault_signals() {
    for mode in MODES {
        let dir = scratch("fwd");
        let log = dir.join("log");
        let script = signal_logger(&log);
        let Some(k) = start(mode, &["--", "bash", "-c", &script], &[]) else {
            return;
        };
        wait_line(&log, "ready", LONG);
        let sigs: &[(&str, i32)] = &[
            ("HUP", libc::SIGHUP),
            ("INT", libc::SIGINT),
            ("QUIT", libc::SIGQUIT),
            ("USR1", libc::SIGUSR1),
            ("USR2", libc::SIGUSR2),
            ("PIPE", libc::SIGPIPE),
            ("ALRM", libc::SIGALRM),
            ("STKFLT", libc::SIGSTKFLT),
            ("CONT", libc::SIGCONT),
            ("TSTP", libc::SIGTSTP),
            ("TTIN", libc::SIGTTIN),
            ("TTOU", libc::SIGTTOU),
            ("URG", libc::SIGURG),
            ("XCPU", libc::SIGXCPU),
            ("XFSZ", libc::SIGXFSZ),
            ("VTALRM", libc::SIGVTALRM),
            ("PROF", libc::SIGPROF),
            ("WINCH", libc::SIGWINCH),
            ("IO", libc::SIGIO),
            ("PWR", libc::SIGPWR),
            // Fault signals *sent* by a process: forwarded, keel lives on.
            ("ILL", libc::SIGILL),
            ("TRAP", libc::SIGTRAP),
            ("ABRT", libc::SIGABRT),
            ("BUS", libc::SIGBUS),
            ("FPE", libc::SIGFPE),
            ("SEGV", libc::SIGSEGV),
            ("SYS", libc::SIGSYS),
            // Real-time signals (bash numbers RTMIN as 34, like glibc).
            ("RTMIN", 34),
            ("RTMIN+1", 35),
            ("RTMIN+5", 39),
            ("RTMAX", 64),
        ];
        for (name, num) in sigs {
            send(k.keel_pid, *num);
            wait_line(&log, name, LONG);
            assert!(alive(k.keel_pid), "{mode:?}: keel died of SIG{name}");
        }
        send(k.keel_pid, libc::SIGTERM);
        let f = k.finish(LONG);
        assert_eq!(f.code(), 77, "{mode:?}: {}", f.stderr);
        assert!(read(&log).lines().any(|l| l == "TERM"));
    }
}

#[test]
fn process_group_mode_reaches_grandchildren() {
    for (flag, env, group) in [
        (Some("-g"), None, true),
        (None, Some(("KEEL_PROCESS_GROUP", "1")), true),
        (None, None, false),
    ] {
        let dir = scratch("pgrp");
        let (a, b) = (dir.join("child"), dir.join("grandchild"));
        let script = format!(
            r#"bash -c 'trap "echo USR1 >> {b}" USR1; trap "echo RTMIN+2 >> {b}" RTMIN+2; echo ready >> {b}; while :; do sleep 100 & wait $!; done' &
trap 'echo USR1 >> {a}' USR1; trap 'echo RTMIN+2 >> {a}' RTMIN+2; trap 'echo WINCH >> {a}' WINCH
echo ready >> {a}
while :; do sleep 100 & wait $!; done"#,
            a = a.display(),
            b = b.display()
        );
        let mut args = vec![];
        args.extend(flag);
        args.extend(["--", "bash", "-c", &script]);
        let env: Vec<(&str, &str)> = env.into_iter().collect();
        let Some(k) = start(Mode::Pid1, &args, &env) else {
            return;
        };
        wait_line(&a, "ready", LONG);
        wait_line(&b, "ready", LONG);
        // One at a time: bash itself may run only one trap for signals that arrive together.
        send(k.keel_pid, libc::SIGUSR1);
        wait_line(&a, "USR1", LONG);
        if group {
            wait_line(&b, "USR1", LONG);
        }
        send(k.keel_pid, 36);
        wait_line(&a, "RTMIN+2", LONG);
        // A later signal the child reports proves the earlier ones had time to arrive.
        send(k.keel_pid, libc::SIGWINCH);
        wait_line(&a, "WINCH", LONG);
        if group {
            wait_line(&b, "RTMIN+2", LONG);
        } else {
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(
                read(&b).trim(),
                "ready",
                "grandchild got a signal without -g"
            );
        }
        send(k.keel_pid, libc::SIGKILL);
        let _ = k.finish(LONG);
    }
}

#[test]
fn rewrite_and_drop() {
    let dir = scratch("rewrite");
    let log = dir.join("log");
    let script = signal_logger(&log);
    let Some(k) = start(
        Mode::Pid1,
        &[
            "-r",
            "USR1:USR2",
            "--rewrite=HUP:0",
            "--",
            "bash",
            "-c",
            &script,
        ],
        &[("KEEL_REWRITE", "WINCH:RTMIN+1")],
    ) else {
        return;
    };
    wait_line(&log, "ready", LONG);
    send(k.keel_pid, libc::SIGUSR1);
    wait_line(&log, "USR2", LONG);
    send(k.keel_pid, libc::SIGHUP);
    send(k.keel_pid, libc::SIGWINCH);
    wait_line(&log, "RTMIN+1", LONG);
    let seen = read(&log);
    assert!(
        !seen
            .lines()
            .any(|l| l == "HUP" || l == "USR1" || l == "WINCH"),
        "{seen}"
    );
    send(k.keel_pid, libc::SIGTERM);
    assert_eq!(k.finish(LONG).code(), 77);
}

/// Block and ignore signals in the process that execs `cmd`, like tini's sigconf-test.
fn with_signal_state(cmd: &mut std::process::Command, ignore_chld: bool) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut blocked: u64 = 0;
            for s in [libc::SIGILL, libc::SIGTERM, libc::SIGTTIN, 33, 40] {
                blocked |= 1 << (s - 1);
            }
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &blocked as *const u64,
                std::ptr::null_mut::<u64>(),
                8,
            );
            let mut ign = vec![libc::SIGINT, libc::SIGSEGV, libc::SIGTTOU, libc::SIGPIPE];
            if ignore_chld {
                ign.push(libc::SIGCHLD);
            }
            for s in ign {
                libc::signal(s, libc::SIG_IGN);
            }
            Ok(())
        });
    }
}

fn status_line(out: &str, key: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
        .to_string()
}

#[test]
fn child_inherits_exact_signal_mask_and_ignored_set() {
    let Some(prefix) = pid1_prefix() else { return };
    for ignore_chld in [false, true] {
        for mode in MODES {
            // Reference: the same command without keel (under the same unshare for PID 1:
            // glibc's unshare itself drops signals 32/33 from the mask it restores).
            let mut plain = match mode {
                Mode::Pid1 => {
                    let mut c = std::process::Command::new(prefix[0]);
                    c.args(&prefix[1..]);
                    c.arg("cat");
                    c
                }
                Mode::Plain => std::process::Command::new("cat"),
            };
            plain.arg("/proc/self/status");
            with_signal_state(&mut plain, ignore_chld);
            let reference = String::from_utf8(plain.output().unwrap().stdout).unwrap();

            let mut cmd = command(mode, &["--", "cat", "/proc/self/status"]).unwrap();
            with_signal_state(&mut cmd, ignore_chld);
            let out = cmd.output().unwrap();
            let got = String::from_utf8(out.stdout).unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for key in ["SigBlk:", "SigIgn:"] {
                assert_eq!(
                    status_line(&got, key),
                    status_line(&reference, key),
                    "{mode:?} ignore_chld={ignore_chld}"
                );
            }
            if ignore_chld {
                // keel itself must still collect exit codes with SIGCHLD ignored at start.
                let mut cmd = command(mode, &["--", "sh", "-c", "exit 5"]).unwrap();
                with_signal_state(&mut cmd, true);
                assert_eq!(cmd.output().unwrap().status.code(), Some(5));
            }
        }
    }
}

#[test]
fn reaps_an_orphan_storm_as_pid1() {
    // 200 orphans, each re-parented to keel and exiting; then the child counts zombies.
    let script = r#"i=0; while [ $i -lt 200 ]; do ( sleep 0.01 & ) ; i=$((i+1)); done
sleep 0.5
z=$(ps -o stat= | grep -c '^Z' || true)
echo zombies=$z"#;
    let Some(f) = run(Mode::Pid1, &["--", "sh", "-c", script], &[]) else {
        return;
    };
    assert_eq!(f.code(), 0, "{}", f.stderr);
    assert_eq!(f.stdout.trim(), "zombies=0");
}

#[test]
fn subreaper_when_not_pid1_reaps_orphans() {
    let dir = scratch("subreaper");
    let pidfile = dir.join("orphan");
    // The orphan outlives its parent (the subshell), so it is re-parented to keel.
    let script = format!(
        "( sleep 0.5 & echo $! > {p} ); sleep 2; exit 6",
        p = pidfile.display()
    );
    let k = start(Mode::Plain, &["--", "sh", "-c", &script], &[]).unwrap();
    assert!(wait_until(LONG, || !read(&pidfile).trim().is_empty()));
    let orphan: i32 = read(&pidfile).trim().parse().unwrap();
    // Once its parent (the subshell) is gone, its parent is keel: the subreaper.
    let ppid = || -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{orphan}/stat")).ok()?;
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    assert!(
        wait_until(Duration::from_millis(250), || ppid() == Some(k.keel_pid)),
        "orphan was not re-parented to keel (parent {:?}, keel {})",
        ppid(),
        k.keel_pid
    );
    // Once it exits, keel reaps it: no zombie left behind while the main child still runs.
    assert!(
        wait_until(Duration::from_millis(1500), || !std::path::Path::new(
            &format!("/proc/{orphan}")
        )
        .exists()),
        "orphan {orphan} was not reaped"
    );
    assert!(alive(k.keel_pid));
    let f = k.finish(LONG);
    assert_eq!(f.code(), 6);
}

/// The main child starts a straggler that logs its pid and how it ends, then exits `code`.
/// A straggler that handles TERM forks nothing after it is ready: a process forked at the very
/// moment of keel's broadcast would escape the TERM, and keel would rightly wait out --grace
/// for it. One that ignores TERM loops, re-forking its `sleep` (which TERM kills).
fn straggler_script(dir: &std::path::Path, on_term: &str, code: i32) -> String {
    let body = if on_term.is_empty() {
        "trap \"\" TERM; echo $$ > {d}/pid; while :; do sleep 100 & wait $!; done".to_string()
    } else {
        format!("trap \"{on_term}\" TERM; sleep 100 & echo $$ > {{d}}/pid; wait")
    };
    let body = body.replace("{d}", &dir.display().to_string());
    format!(
        r#"sh -c '{body}' >/dev/null 2>&1 &
while [ ! -s {d}/pid ]; do sleep 0.01; done
exit {code}"#,
        d = dir.display()
    )
}

#[test]
fn drain_exits_as_soon_as_stragglers_finish() {
    for mode in MODES {
        let dir = scratch("drain-fast");
        let on_term = format!("echo bye > {}/bye; exit 0", dir.display());
        let script = straggler_script(&dir, &on_term, 3);
        let Some(f) = run(mode, &["--grace", "10s", "--", "sh", "-c", &script], &[]) else {
            return;
        };
        assert_eq!(f.code(), 3, "{mode:?}: {}", f.stderr);
        assert_eq!(
            read(&dir.join("bye")).trim(),
            "bye",
            "straggler never got TERM"
        );
        // Generous bound: far below the 10 s grace, so no fixed sleep and no timeout hit.
        assert!(
            f.elapsed < Duration::from_secs(5),
            "{mode:?}: took {:?}",
            f.elapsed
        );
        let pid: i32 = read(&dir.join("pid")).trim().parse().unwrap();
        if mode == Mode::Plain {
            assert!(!alive(pid), "straggler {pid} survived");
        }
    }
}

#[test]
fn drain_kills_term_ignoring_stragglers_after_grace() {
    for mode in MODES {
        let dir = scratch("drain-kill");
        let script = straggler_script(&dir, "", 4);
        let Some(f) = run(mode, &["--grace", "700ms", "--", "sh", "-c", &script], &[]) else {
            return;
        };
        assert_eq!(f.code(), 4, "{mode:?}: {}", f.stderr);
        assert!(
            f.elapsed >= Duration::from_millis(700),
            "{mode:?}: {:?}",
            f.elapsed
        );
        assert!(
            f.elapsed < Duration::from_secs(8),
            "{mode:?}: {:?}",
            f.elapsed
        );
        assert!(f.stderr.contains("sending SIGKILL"), "{}", f.stderr);
        let pid: i32 = read(&dir.join("pid")).trim().parse().unwrap();
        if mode == Mode::Plain {
            assert!(!alive(pid), "straggler {pid} survived SIGKILL");
        }
    }
}

#[test]
fn grace_zero_exits_at_once() {
    let dir = scratch("grace0");
    let script = straggler_script(&dir, "", 0);
    let Some(f) = run(
        Mode::Pid1,
        &["--", "sh", "-c", &script],
        &[("KEEL_GRACE", "0")],
    ) else {
        return;
    };
    assert_eq!(f.code(), 0);
    assert!(f.elapsed < Duration::from_secs(3), "{:?}", f.elapsed);
    assert!(!f.stderr.contains("SIGKILL"), "{}", f.stderr);
}

#[test]
fn stop_timeout_kills_a_term_ignoring_main_child() {
    for mode in MODES {
        let dir = scratch("stop-timeout");
        let ready = dir.join("ready");
        // TERM stays ignored across exec: `sleep` never reacts to it.
        let script = format!("trap '' TERM; touch {}; exec sleep 60", ready.display());
        let Some(k) = start(
            mode,
            &["--stop-timeout", "600ms", "--", "sh", "-c", &script],
            &[],
        ) else {
            return;
        };
        assert!(wait_until(LONG, || ready.exists()));
        std::thread::sleep(Duration::from_millis(50)); // let sh exec sleep
        let t0 = std::time::Instant::now();
        send(k.keel_pid, libc::SIGTERM);
        let f = k.finish(LONG);
        let took = t0.elapsed();
        assert_eq!(f.code(), 137, "{mode:?}: {}", f.stderr);
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert!(took < Duration::from_secs(8), "{took:?}");
        assert!(
            f.stderr.contains("after SIGTERM; sending SIGKILL"),
            "{}",
            f.stderr
        );
    }
}

#[test]
fn remap_exit_code() {
    let Some(f) = run(
        Mode::Pid1,
        &["-e", "143:0", "--", "sh", "-c", "kill -TERM $$"],
        &[],
    ) else {
        return;
    };
    assert_eq!(f.code(), 0);
    let f = run(
        Mode::Plain,
        &["--", "sh", "-c", "exit 3"],
        &[("KEEL_REMAP_EXIT", "3:30, 4:40")],
    )
    .unwrap();
    assert_eq!(f.code(), 30);
}

#[test]
fn stdio_environment_and_cwd_pass_through() {
    let dir = scratch("passthrough");
    let mut cmd = command(
        Mode::Pid1,
        &[
            "--",
            "sh",
            "-c",
            "pwd; echo \"$KEEL_TEST_VAR\"; cat; echo err >&2",
        ],
    )
    .unwrap();
    cmd.current_dir(&dir)
        .env("KEEL_TEST_VAR", "value with spaces")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        format!(
            "{}\nvalue with spaces\nfrom stdin\n",
            dir.canonicalize().unwrap().display()
        )
    );
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "err\n");
}

#[test]
fn idle_keel_never_wakes_up() {
    for mode in MODES {
        let Some(k) = start(mode, &["--", "sleep", "30"], &[]) else {
            return;
        };
        let switches = || {
            let s = std::fs::read_to_string(format!("/proc/{}/status", k.keel_pid)).unwrap();
            ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"]
                .iter()
                .map(|key| {
                    status_line(&s, key)
                        .split_whitespace()
                        .nth(1)
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                })
                .sum::<u64>()
        };
        std::thread::sleep(Duration::from_millis(300));
        let before = switches();
        std::thread::sleep(Duration::from_millis(2000));
        let after = switches();
        // Reading /proc does not wake keel; any timer or poll would.
        assert_eq!(
            after,
            before,
            "{mode:?}: keel woke up {} times while idle",
            after - before
        );
        send(k.keel_pid, libc::SIGTERM);
        assert_eq!(k.finish(LONG).code(), 143);
    }
}

#[test]
fn abort_sent_to_plain_keel_is_forwarded_not_fatal() {
    let dir = scratch("abrt");
    let ready = dir.join("ready");
    let script = format!(
        "trap 'exit 42' ABRT; touch {}; while :; do sleep 100 & wait $!; done",
        ready.display()
    );
    let k = start(Mode::Plain, &["--", "bash", "-c", &script], &[]).unwrap();
    assert!(wait_until(LONG, || ready.exists()));
    send(k.keel_pid, libc::SIGABRT);
    let f = k.finish(LONG);
    assert_eq!(f.code(), 42, "{}", f.stderr);
}
