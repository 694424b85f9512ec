//! keel as the PID 1 of a QEMU VM booting Debian's kernel with real cgroup v2
//! (tests/vm/run.sh; shared/testing.md §3). Skips with the reason when QEMU, a kernel in
//! /boot, a static busybox or cpio is missing (`KEEL_TEST_REQUIRE=all` or `=vm` fails instead).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run the harness; `None` (after the skip notice) when the VM cannot run here.
fn vm(scenario: &str, env: &[(&str, &str)]) -> Option<(bool, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm");
    let out = Command::new(dir.join("run.sh"))
        .arg(common::keel())
        .arg(dir.join("scenarios").join(scenario))
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
