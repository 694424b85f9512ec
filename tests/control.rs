//! `keel ctl` against a real keel in services mode: every command, refusal of an
//! unauthorised user, and a thousand clients at once while services keep being supervised.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

struct Keel {
    dir: PathBuf,
    running: Option<Running>,
}

impl Keel {
    fn start(name: &str, toml: &str) -> Option<Keel> {
        let dir = scratch(name);
        std::fs::write(
            dir.join("keel.toml"),
            toml.replace("@DIR@", dir.to_str().unwrap()),
        )
        .unwrap();
        let cfg = dir.join("keel.toml");
        let mut cmd = command(Mode::Pid1, &["--config", cfg.to_str().unwrap()])?;
        cmd.env("KEEL_RUNTIME_DIR", dir.join("run"))
            .env("KEEL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
        let running = spawn(cmd, Mode::Pid1);
        let k = Keel {
            dir,
            running: Some(running),
        };
        assert!(
            wait_until(LONG, || k.socket().exists()),
            "no control socket; stderr:\n{}",
            read(&k.dir.join("stderr"))
        );
        Some(k)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run").join("control.sock")
    }

    /// `keel ctl ARGS`: (exit code, stdout, stderr).
    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let sock = self.socket();
        let sock = sock.to_str().unwrap();
        let mut all = vec!["--socket", sock];
        all.extend_from_slice(args);
        keel_ctl(&all, &[])
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.ctl(args);
        assert_eq!(
            code,
            0,
            "keel ctl {args:?}: {out}{err}\nkeel:\n{}",
            self.stderr()
        );
        out
    }

    fn stderr(&self) -> String {
        read(&self.dir.join("stderr"))
    }

    fn row(&self, name: &str) -> String {
        self.ok(&["status"])
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Keel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const CONFIG: &str = r#"
[service.web]
command = "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); echo web line $i; sleep 0.1; done"
restart = "always"

[service.slow]
command = "sleep 0.5; touch @DIR@/slow.ready; exec sleep 1000"
ready = { exec = "test -f @DIR@/slow.ready", interval = "50ms" }

[service.usr1]
command = "trap 'echo got usr1' USR1; while :; do sleep 0.05; done"
"#;

#[test]
fn every_command() {
    let Some(k) = Keel::start("ctl", CONFIG) else {
        return;
    };
    // wait-ready blocks until the slow readiness check passes.
    let t = Instant::now();
    k.ok(&["wait-ready", "--timeout", "20s"]);
    assert!(Path::new(&k.dir.join("slow.ready")).exists());
    assert!(t.elapsed() < LONG);
    k.ok(&["health"]);

    let status = k.ok(&["status"]);
    assert!(
        status.lines().next().unwrap().starts_with("NAME"),
        "{status}"
    );
    for name in ["web", "slow", "usr1"] {
        let row = k.row(name);
        assert!(row.contains("running"), "{status}");
    }
    let json = k.ok(&["status", "--json"]);
    assert!(
        json.contains("\"name\":\"web\"") && json.contains("\"ok\":true"),
        "{json}"
    );

    // logs: the last lines, then -f follows new ones.
    let logs = k.ok(&["logs", "web", "-n", "2"]);
    assert_eq!(logs.lines().count(), 2, "{logs}");
    assert!(logs.lines().all(|l| l.contains("web line")), "{logs}");
    let mut follow = Command::new(keel())
        .args([
            "ctl",
            "--socket",
            k.socket().to_str().unwrap(),
            "logs",
            "web",
            "-n",
            "0",
            "-f",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("web line"), "{line}");
    follow.kill().unwrap();
    follow.wait().unwrap();

    // signal reaches the service's process group.
    k.ok(&["signal", "usr1", "USR1"]);
    assert!(wait_until(LONG, || read(&k.dir.join("stdout"))
        .contains("usr1 | got usr1")));

    // stop, start, restart.
    let pid = |k: &Keel| {
        k.row("web")
            .split_whitespace()
            .nth(2)
            .unwrap_or("")
            .to_string()
    };
    let before = pid(&k);
    k.ok(&["stop", "web"]);
    assert!(
        wait_until(LONG, || k.row("web").contains("inactive")),
        "{}",
        k.row("web")
    );
    k.ok(&["health"]); // a stopped service is not expected to be ready
    k.ok(&["start", "web"]);
    assert!(wait_until(LONG, || k.row("web").contains("running")));
    let started = pid(&k);
    assert_ne!(before, started);
    k.ok(&["restart", "web"]);
    assert!(wait_until(LONG, || pid(&k) != started
        && k.row("web").contains("running")));

    // Unknown names and bad usage are clear errors.
    let (code, _, err) = k.ctl(&["stop", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no service named 'nope'"), "{err}");
    let (code, _, _) = k.ctl(&["frobnicate"]);
    assert_eq!(code, 2);

    // reload: a bad configuration is refused, with its place.
    std::fs::write(k.dir.join("keel.toml"), "[service.web]\ncommand = 3\n").unwrap();
    let (code, _, err) = k.ctl(&["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("keel.toml:2:"), "{err}");
    std::fs::write(
        k.dir.join("keel.toml"),
        CONFIG.replace("@DIR@", k.dir.to_str().unwrap())
            + "[service.extra]\ncommand = \"exec sleep 1000\"\n",
    )
    .unwrap();
    k.ok(&["reload"]);
    assert!(wait_until(LONG, || k.row("extra").contains("running")));

    // A failed service makes the container unhealthy.
    std::fs::write(
        k.dir.join("keel.toml"),
        CONFIG.replace("@DIR@", k.dir.to_str().unwrap())
            + "[service.broken]\ncommand = \"exit 3\"\n",
    )
    .unwrap();
    k.ok(&["reload"]);
    assert!(wait_until(LONG, || k.row("broken").contains("failed")));
    let (code, out, err) = k.ctl(&["health"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(format!("{out}{err}").contains("broken"), "{out}{err}");

    // shutdown: keel exits 0.
    k.ok(&["shutdown"]);
    let mut k = k;
    let f = k.running.take().unwrap().finish(LONG);
    assert_eq!(f.code(), 0);
}

#[test]
fn unauthorised_user_is_refused() {
    let Some(k) = Keel::start("ctl-auth", CONFIG) else {
        return;
    };
    if unsafe { libc::geteuid() } != 0 {
        skip("root", "refusing another user needs root to become one");
        return;
    }
    let status_as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(keel())
            .args(["ctl", "--socket", k.socket().to_str().unwrap(), "status"])
            .output()
            .unwrap()
    };
    // The socket is 0600 root: a user other than root cannot even connect.
    let out = status_as_nobody();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("ermission denied"), "{err}");
    // Even with the file opened up, keel checks the peer's credentials itself.
    std::fs::set_permissions(
        k.dir.join("run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        k.socket(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = status_as_nobody();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("uid 65534 is not root"), "{err}");
}

#[test]
fn a_thousand_clients_while_services_are_supervised() {
    let Some(k) = Keel::start(
        "ctl-1000",
        r#"
[service.flappy]
command = "sleep 0.05; exit 1"
restart = "always"
restart-sec = "10ms"
start-limit-burst = 100000
"#,
    ) else {
        return;
    };
    let mut conns = Vec::new();
    for _ in 0..1000 {
        conns.push(UnixStream::connect(k.socket()).unwrap());
    }
    // Half write half a request and stall; the other half ask for status.
    for (i, c) in conns.iter_mut().enumerate() {
        if i % 2 == 0 {
            c.write_all(b"{\"v\":1,\"cmd\":\"sta").unwrap();
        } else {
            c.write_all(b"{\"v\":1,\"cmd\":\"status\"}\n").unwrap();
        }
    }
    let mut answered = 0;
    for (i, c) in conns.iter_mut().enumerate() {
        if i % 2 == 1 {
            c.set_read_timeout(Some(LONG)).unwrap();
            let mut line = String::new();
            BufReader::new(&mut *c).read_line(&mut line).unwrap();
            assert!(line.contains("\"flappy\""), "{line}");
            answered += 1;
        }
    }
    assert_eq!(answered, 500);
    // Meanwhile flappy kept restarting.
    let restarts_before: u32 = restarts(&k);
    std::thread::sleep(Duration::from_millis(500));
    assert!(restarts(&k) > restarts_before, "supervision stalled");
    // Garbage and an oversized request get one error line each.
    let mut g = UnixStream::connect(k.socket()).unwrap();
    g.write_all(b"\x00\xffnot json\n").unwrap();
    let mut resp = String::new();
    g.read_to_string(&mut resp).unwrap();
    assert!(resp.contains("\"ok\":false"), "{resp}");
    let mut big = UnixStream::connect(k.socket()).unwrap();
    let _ = big.write_all(&vec![b'x'; 200 * 1024]);
    let mut resp = String::new();
    let _ = big.read_to_string(&mut resp);
    assert!(resp.contains("\"ok\":false"), "{resp}");
    drop(conns);
    assert!(k.ok(&["status"]).contains("flappy"));
}

fn restarts(k: &Keel) -> u32 {
    k.row("flappy")
        .split_whitespace()
        .nth(4)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
