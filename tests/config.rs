//! `keel check`: validates configuration files and prints the plan, or every error with its
//! file:line:column and exit code 2, before anything starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn check_prints_the_start_order() {
    let d = scratch("check-ok");
    std::fs::create_dir_all(d.join("keel.d")).unwrap();
    std::fs::write(
        d.join("keel.d/10-init.toml"),
        "[service.init]\ntype = \"oneshot\"\ncommand = \"mkdir -p /tmp/ws\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("keel.d/20-web.toml"),
        "[service.web]\ncommand = [\"httpd\", \"-f\"]\nafter = [\"init\"]\nready = { tcp = 8080 }\nrestart = \"always\"\n",
    )
    .unwrap();
    let dir = d.join("keel.d");
    let f = run(
        Mode::Plain,
        &["check", "--config", dir.to_str().unwrap()],
        &[],
    )
    .unwrap();
    assert_eq!(f.code(), 0, "{}", f.stderr);
    assert!(
        f.stdout.contains("configuration OK: 2 service(s)"),
        "{}",
        f.stdout
    );
    assert!(
        f.stdout.contains("1. init (oneshot; restart no)"),
        "{}",
        f.stdout
    );
    assert!(
        f.stdout.contains(
            "2. web (simple, ready: tcp 127.0.0.1:8080 accepts; restart always); after init"
        ),
        "{}",
        f.stdout
    );
}

#[test]
fn check_reports_every_error_with_its_place_and_exits_2() {
    let d = scratch("check-bad");
    let f = d.join("keel.toml");
    std::fs::write(
        &f,
        "[service.x]\ncommand = [\"a\"]\nafter = [\"y\"]\nrestart = \"maybe\"\n",
    )
    .unwrap();
    let out = run(
        Mode::Plain,
        &["check", "--config", f.to_str().unwrap()],
        &[],
    )
    .unwrap();
    assert_eq!(out.code(), 2);
    assert!(out.stdout.is_empty());
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    let at = format!("{}:", f.display());
    assert!(lines.iter().all(|l| l.starts_with(&at)), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(":4:11: restart = \"maybe\" is not valid"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(":3:9: after: unknown service 'y'"),
        "{}",
        out.stderr
    );
    let missing = run(Mode::Plain, &["check", "--config", "/no/such.toml"], &[]).unwrap();
    assert_eq!(missing.code(), 2);
    assert!(
        missing.stderr.contains("/no/such.toml"),
        "{}",
        missing.stderr
    );
}

#[test]
fn check_prints_the_cgroup_mode_what_this_machine_gives_and_each_services_limits() {
    let d = scratch("check-limits");
    let cfg = d.join("keel.toml");
    std::fs::write(
        &cfg,
        "[keel]\ncgroups = \"required\"\n[keel.defaults]\ntasks-max = 64\n\
         [service.api]\ncommand = \"api\"\nmemory-max = \"256M\"\ncpu-quota = \"150%\"\n\
         [service.web]\ncommand = \"web\"\ntasks-max = \"max\"\n",
    )
    .unwrap();
    let f = run(
        Mode::Plain,
        &["check", "--config", cfg.to_str().unwrap()],
        &[],
    )
    .unwrap();
    assert_eq!(f.code(), 0, "{}", f.stderr);
    for want in [
        "cgroups required\n",
        "  here: ",
        "api (simple; restart no); limits: memory-max 256M, cpu-quota 150%, tasks-max 64",
        "web (simple; restart no); limits: tasks-max max",
    ] {
        assert!(f.stdout.contains(want), "no '{want}' in:\n{}", f.stdout);
    }
    std::fs::write(
        &cfg,
        "[keel]\ncgroups = \"off\"\n[service.a]\ncommand = \"a\"\n",
    )
    .unwrap();
    let f = run(
        Mode::Plain,
        &["check", "--config", cfg.to_str().unwrap()],
        &[],
    )
    .unwrap();
    assert!(f.stdout.contains("cgroups off\n"), "{}", f.stdout);
    assert!(!f.stdout.contains("here:"), "{}", f.stdout);
}
