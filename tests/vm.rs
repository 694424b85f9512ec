//! keel as the PID 1 of a QEMU VM booting Debian's kernel with real cgroup v2
//! (tests/vm/run.sh; shared/testing.md §3). Skips with the reason when QEMU, a kernel in
//! /boot, a static busybox or cpio is missing (`KEEL_TEST_REQUIRE=all` or `=vm` fails instead).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run the harness; `None` (after the skip notice) when the VM cannot run here.
fn vm(scenario: &str, env: &[(&str, &str)]) -> Option<(bool, String)> {
    vm_with_config(scenario, None, env)
}

/// [`vm`] with keel in services mode: `config` (in tests/vm/scenarios) as
/// /etc/keel/keel.toml, the scenario as the main command.
fn vm_with_config(
    scenario: &str,
    config: Option<&str>,
    env: &[(&str, &str)],
) -> Option<(bool, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm");
    let scenarios = dir.join("scenarios");
    let out = Command::new(dir.join("run.sh"))
        .arg(common::keel())
        .arg(scenarios.join(scenario))
        .args(config.map(|c| scenarios.join(c)))
        .envs(env.iter().copied())
        .output()
        .expect("run tests/vm/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.code() == Some(77) {
        common::skip("vm", String::from_utf8_lossy(&out.stderr).trim());
        return None;
    }
    eprintln!("{stdout}");
    Some((out.status.success(), stdout))
}

fn results(out: &str) -> Vec<(String, bool)> {
    out.lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next().unwrap_or("").to_owned();
            (name, w.next() == Some("PASS"))
        })
        .collect()
}

fn assert_all_pass(out: &str, expected: &[&str]) {
    let r = results(out);
    for name in expected {
        match r.iter().find(|(n, _)| n == name) {
            Some((_, true)) => {}
            Some((_, false)) => panic!("{name} failed in the VM:\n{out}"),
            None => panic!("{name} did not report in the VM:\n{out}"),
        }
    }
    assert!(
        out.contains("VM keel-exit 0"),
        "keel's exit code not 0:\n{out}"
    );
}

#[test]
fn vm_boots_with_keel_as_pid1_and_writable_cgroup2() {
    let Some((ok, out)) = vm("boot.sh", &[]) else {
        return;
    };
    assert_all_pass(
        &out,
        &[
            "pid1-is-keel",
            "cgroup2-mounted",
            "controllers",
            "cgroup-kill-file",
            "cgroup-writable",
            "in-root-cgroup",
        ],
    );
    assert!(ok);
}

#[test]
fn vm_read_only_cgroup2() {
    let Some((ok, out)) = vm("readonly.sh", &[("VM_CGROUP", "ro")]) else {
        return;
    };
    assert_all_pass(&out, &["cgroup2-read-only", "mkdir-refused"]);
    assert!(ok);
}

/// The cgroup test binary cargo built next to this one (target/.../deps/cgroup-HASH).
fn cgroup_test_binary() -> Option<PathBuf> {
    let deps = std::env::current_exe().ok()?.parent()?.to_path_buf();
    std::fs::read_dir(deps)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("cgroup-") && !n.contains('.'))
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

/// The tests of tests/cgroup.rs, each reported by the VM as a result line.
const CGROUP_TESTS: [&str; 5] = [
    "child_is_in_its_cgroups_from_the_start",
    "memory_hog_is_oom_killed_and_the_oom_is_reported",
    "tasks_max_stops_a_fork_loop",
    "double_forking_daemon_cannot_escape_kill",
    "cpu_quota_caps_a_burner",
];

/// Boot the VM with the cgroup test binary and `scenario`; check `CGROUP_TESTS` and `extra`.
fn cgroup_tests_in_vm(scenario: &str, extra: &[&str]) {
    let Some(bin) = cgroup_test_binary() else {
        common::skip(
            "vm",
            "the cgroup test binary is not built (cargo test --test cgroup)",
        );
        return;
    };
    let files = format!("{}:/bin/cgroup-tests", bin.display());
    let Some((_, out)) = vm(scenario, &[("VM_FILES", &files)]) else {
        return;
    };
    let expected: Vec<&str> = CGROUP_TESTS.iter().chain(extra).copied().collect();
    assert_all_pass(&out, &expected);
}

/// tests/cgroup.rs again, inside the VM: the module on a pure cgroup v2 host.
#[test]
fn vm_cgroup_module_on_pure_v2() {
    cgroup_tests_in_vm("cgroup-tests.sh", &[]);
}

/// The same from a non-root cgroup, as in a container: keel's leaf `init` and the move of
/// every process of its cgroup into it, on a real kernel.
#[test]
fn vm_cgroup_module_from_a_nested_cgroup() {
    cgroup_tests_in_vm(
        "cgroup-tests-nested.sh",
        &[
            "ctr-emptied",
            "bystander-moved-to-init",
            "ctr-controllers-enabled",
        ],
    );
}

/// The checks of services-cgroups.sh on any writable cgroup2 mount.
const SERVICES_CGROUPS: [&str; 28] = [
    "keel-cgroup",
    "controller-cpu-enabled",
    "controller-memory-enabled",
    "controller-pids-enabled",
    "main-in-own-cgroup",
    "own-cgroup-steady",
    "own-cgroup-hog",
    "own-cgroup-bomb",
    "own-cgroup-burner",
    "own-cgroup-daemon",
    "status-columns",
    "status-usage-steady",
    "status-json-usage",
    "hog-restarted",
    "hog-memory-events-oom-kill",
    "hog-oom-in-its-cgroup",
    "hog-status-oom-kills",
    "hog-new-run-in-new-cgroup",
    "steady-survived-oom",
    "keel-survived-oom",
    "bomb-pids-events-max",
    "bomb-stopped-at-tasks-max",
    "bomb-main-alive",
    "burner-cpu-max",
    "burner-20-percent",
    "daemon-escaped-session",
    "daemon-ctl-stop",
    "daemon-gone",
];

/// keel's own lines on the console (its stderr) at `level` ("warning: ", "info: ", or "" for
/// errors, which carry no level word).
fn keel_lines<'a>(out: &'a str, level: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("keel: "))
        .filter(|l| {
            if level.is_empty() {
                !["warning: ", "info: ", "debug: ", "trace: "]
                    .iter()
                    .any(|p| l.starts_with(p))
            } else {
                l.starts_with(level)
            }
        })
        .collect()
}

fn assert_logged(out: &str, line: &str) {
    assert!(
        out.lines().any(|l| l.contains(line)),
        "keel did not log {line:?}:\n{out}"
    );
}

/// Boot with keel's services mode on a writable cgroup2 (`mode`: rw or ns), check every
/// RESULT of services-cgroups.sh and what keel logged about it.
fn services_cgroups(mode: &str, extra: &[&str], summary: &str) {
    let Some((ok, out)) = vm_with_config(
        "services-cgroups.sh",
        Some("services-cgroups.toml"),
        &[("VM_CGROUP", mode), ("KEEL_ARGS", "-v")],
    ) else {
        return;
    };
    let expected: Vec<&str> = SERVICES_CGROUPS.iter().chain(extra).copied().collect();
    assert_all_pass(&out, &expected);
    assert_logged(&out, summary);
    assert_logged(
        &out,
        "keel: hog: the OOM killer killed 1 process(es) in its cgroup (1 so far)",
    );
    assert_logged(&out, "keel: info: hog stopped after an OOM kill");
    assert_logged(&out, "keel: info: restarting hog");
    // The fork bomb's shells were refused by the kernel (EAGAIN from pids.max), said so on
    // their stderr, which keel relays with the service's name.
    assert!(
        out.lines().any(|l| l.starts_with("bomb ")
            && l.contains("can't fork: Resource temporarily unavailable")),
        "the bomb's forks did not fail:\n{out}"
    );
    assert_logged(
        &out,
        "keel: info: daemon: killing 2 process(es) left in its cgroup after it ended",
    );
    assert_eq!(
        keel_lines(&out, "warning: "),
        Vec::<&str>::new(),
        "keel warned:\n{out}"
    );
    // The OOM line is the one error: nothing else went wrong.
    assert_eq!(keel_lines(&out, "").len(), 1, "keel's errors:\n{out}");
    assert!(ok);
}

/// keel as the machine's init on pure cgroup v2: it stays in the root cgroup (the kernel's
/// threads are there, and the root has no internal-process rule), every service and the main
/// command get their own cgroup; OOM, tasks-max, cpu-quota, a daemon's escape, the status.
#[test]
fn vm_services_cgroups_as_the_machines_init() {
    services_cgroups(
        "rw",
        &[],
        "keel: info: cgroups: v2, keel's cgroup /sys/fs/cgroup/ (writable, root), \
         controllers available: cpu io memory pids",
    );
}

/// The same as a container sees it: keel's cgroup is the root of a private cgroup namespace,
/// not the real root, so keel first moves itself (and everything else there) into `init`.
#[test]
fn vm_services_cgroups_in_a_cgroup_namespace() {
    services_cgroups(
        "ns",
        &["keel-moved-into-init"],
        "keel: info: cgroups: v2, keel's cgroup /sys/fs/cgroup/ (writable), \
         controllers available: cpu io memory pids",
    );
}

/// Read-only cgroup2 and `cgroups = "auto"`: one warning naming the cause and the fix, the
/// services run without cgroups, keel exits 0.
#[test]
fn vm_services_read_only_cgroup2_auto_warns_once() {
    let Some((ok, out)) = vm_with_config(
        "services-cgroups-ro.sh",
        Some("services-cgroups-ro-auto.toml"),
        &[("VM_CGROUP", "ro")],
    ) else {
        return;
    };
    assert_all_pass(
        &out,
        &[
            "cgroup2-read-only",
            "worker-runs",
            "no-service-cgroups",
            "no-cgroup-figures",
            "worker-output",
        ],
    );
    let warnings = keel_lines(&out, "warning: ");
    assert_eq!(warnings.len(), 1, "not exactly one warning:\n{out}");
    let w = warnings[0];
    assert!(
        w.starts_with(
            "warning: cgroups: /sys/fs/cgroup/ is read-only (cgroup2) -> per-service \
             memory/cpu/pids/io limits are NOT enforced, stop uses process-group kill. Fix: "
        ),
        "{w}"
    );
    assert!(w.contains("writable-cgroups=true"), "{w}");
    assert_eq!(
        keel_lines(&out, ""),
        Vec::<&str>::new(),
        "keel's errors:\n{out}"
    );
    assert!(ok);
}

/// Read-only cgroup2 and `cgroups = "required"`: keel refuses with exit 78 before anything
/// starts (neither the service nor the main command ran).
#[test]
fn vm_services_read_only_cgroup2_required_refuses() {
    let Some((ok, out)) = vm_with_config(
        "services-cgroups-ro.sh",
        Some("services-cgroups-ro-required.toml"),
        &[("VM_CGROUP", "ro")],
    ) else {
        return;
    };
    assert!(
        out.contains("VM keel-exit 78"),
        "keel's exit code not 78:\n{out}"
    );
    let errors = keel_lines(&out, "");
    assert_eq!(errors.len(), 1, "not exactly one error:\n{out}");
    assert!(
        errors[0].starts_with(
            "cgroups: /sys/fs/cgroup/ is read-only (cgroup2); cgroups = \"required\": \
             refusing to start (nothing was started). Fix: docker run"
        ),
        "{}",
        errors[0]
    );
    assert!(!out.contains("worker-started"), "the service ran:\n{out}");
    assert!(results(&out).is_empty(), "the main command ran:\n{out}");
    assert!(!ok);
}
