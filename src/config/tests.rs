use super::*;
use crate::plan::Size;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("keel-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(d: &Path, name: &str, text: &str) -> PathBuf {
    let p = d.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const WORKSPACE: &str = r#"
[keel]
shutdown-timeout = "6s"

[keel.defaults]
restart = "on-failure"
stop-timeout = "2s"

[service.init]
type = "oneshot"
command = "mkdir -p /tmp/ws"

[service.files]
command = ["httpd", "-f", "-p", "8081"]
after = ["init"]
ready = { tcp = 8081 }
memory-max = "256M"
cpu-quota = "50%"

[service.term]
command = ["sh"]
requires = ["files"]
restart = "always"
restart-sec = "200ms"
restart-max-sec = "10s"
environment = { TERM = "xterm" }
"#;

#[test]
fn loads_a_workspace() {
    let d = dir("ws");
    let f = write(&d, "keel.toml", WORKSPACE);
    let c = load(&[f]).unwrap();
    assert_eq!(c.global.shutdown_timeout, Duration::from_secs(6));
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["files", "init", "term"]);
    let files = &c.services[0];
    assert_eq!(
        files.restart,
        RestartPolicy::OnFailure,
        "from [keel.defaults]"
    );
    assert_eq!(files.stop_timeout, Duration::from_secs(2));
    assert_eq!(files.limits.memory_max, Some(Size::Bytes(256 << 20)));
    assert_eq!(files.limits.cpu_quota, Some(5000));
    assert!(matches!(files.ready, Readiness::Tcp { .. }));
    let init = &c.services[1];
    assert_eq!(init.kind, Kind::Oneshot);
    assert_eq!(init.argv, ["/bin/sh", "-c", "mkdir -p /tmp/ws"]);
    let term = &c.services[2];
    assert_eq!(term.restart, RestartPolicy::Always);
    assert_eq!(term.restart_sec, Duration::from_millis(200));
    assert_eq!(term.requires, ["files"]);
    assert_eq!(
        start_waves(&c.services),
        vec![
            vec!["init".to_string()],
            vec!["files".into()],
            vec!["term".into()]
        ]
    );
}

#[test]
fn later_files_override_earlier_keys() {
    let d = dir("layers");
    write(&d, "10-base.toml", WORKSPACE);
    write(
        &d,
        "20-adjust.toml",
        "[service.term]\nrestart = \"no\"\nenvironment = { LANG = \"C\" }\n[service.extra]\ncommand = [\"true\"]\n",
    );
    let files = discover(std::slice::from_ref(&d)).unwrap().unwrap();
    assert_eq!(files.len(), 2);
    let c = load(&files).unwrap();
    let term = c.services.iter().find(|s| s.name == "term").unwrap();
    assert_eq!(term.restart, RestartPolicy::No);
    assert_eq!(
        term.restart_sec,
        Duration::from_millis(200),
        "kept from the first file"
    );
    assert_eq!(term.environment.len(), 2, "tables merge key by key");
    assert!(c.services.iter().any(|s| s.name == "extra"));
}

#[test]
fn a_directory_gives_its_toml_files_in_lexical_order() {
    let d = dir("order");
    for name in [
        "30-c.toml",
        "10-a.toml",
        "notes.txt",
        "20-b.toml",
        "05-z.toml",
    ] {
        write(&d, name, "");
    }
    let files = discover(std::slice::from_ref(&d)).unwrap().unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["05-z.toml", "10-a.toml", "20-b.toml", "30-c.toml"]);
}

/// (file text, expected "line:col", expected message part)
const BAD: &[(&str, &str, &str)] = &[
    (
        "[service.a]\ncomand = [\"x\"]\n",
        ":2:1",
        "unknown key 'comand'",
    ),
    (
        "[service.a]\ncommand = [\"x\"]\nrestart = \"sometimes\"\n",
        ":3:11",
        "use one of: no, on-failure",
    ),
    (
        "[service.a]\ncommand = [\"x\"]\nrestart-sec = \"soon\"\n",
        ":3:15",
        "restart-sec: 'soon' is not a duration",
    ),
    (
        "[service.a]\ncommand = [\"x\"]\nafter = [\"b\"]\n",
        ":3:9",
        "unknown service 'b'",
    ),
    (
        "[service.a]\ncommand = [\"x\"]\nmemory-max = \"lots\"\n",
        ":3:14",
        "memory-max: 'lots' is not a size",
    ),
    (
        "[service.a]\ncommand = [\"x\"]\nuser = \"no-such-user-keel\"\n",
        ":3:8",
        "no user 'no-such-user-keel'",
    ),
    ("[service.a]\ncommand = []\n", ":2:11", "command is empty"),
    ("[service.a]\nrestart = \"no\"\n", ":1:", "has no command"),
    (
        "[service.a]\ncommand = [\"x\"]\nstop-signal = \"SIGFOO\"\n",
        ":3:15",
        "stop-signal:",
    ),
    (
        "[service.a]\ncommand = [\"x\"]\nready = { tcp = 1, exec = \"true\" }\n",
        ":3:9",
        "exactly one of",
    ),
    (
        "[service.a]\ncommand = [\"x\"]\ncpu-weight = 0\n",
        ":3:14",
        "cpu-weight must be between",
    ),
    (
        "[service.\"a b\"]\ncommand = [\"x\"]\n",
        ":1:",
        "may only hold letters",
    ),
    ("[service.a]\ncommand = [\"x\"\n", ":2:", ""),
    ("[keel]\ngrace = \"1x\"\n", ":2:9", "grace:"),
];

#[test]
fn every_error_names_file_line_column() {
    for (i, (text, at, msg)) in BAD.iter().enumerate() {
        let d = dir(&format!("bad{i}"));
        let f = write(&d, "keel.toml", text);
        let errs = load(std::slice::from_ref(&f)).expect_err(text);
        let e = &errs.0[0];
        let loc = e.at.clone().unwrap_or_default();
        assert!(loc.starts_with(&f.display().to_string()), "{text}: {e}");
        assert!(loc.contains(at), "{text}: {e} (want {at})");
        assert!(e.message.contains(msg), "{text}: {e} (want {msg})");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}

#[test]
fn cycles_and_self_dependencies() {
    let d = dir("cycle");
    let f = write(
        &d,
        "keel.toml",
        "[service.a]\ncommand = [\"x\"]\nafter = [\"b\"]\n[service.b]\ncommand = [\"x\"]\nrequires = [\"c\"]\n[service.c]\ncommand = [\"x\"]\nafter = [\"a\"]\n[service.d]\ncommand = [\"x\"]\nafter = [\"d\"]\n",
    );
    let errs = load(&[f]).unwrap_err().to_string();
    assert!(
        errs.contains("dependency cycle: a -> b -> c -> a"),
        "{errs}"
    );
    assert!(errs.contains("service 'd' lists itself"), "{errs}");
}

#[test]
fn all_errors_are_reported_at_once() {
    let d = dir("many");
    let f = write(
        &d,
        "keel.toml",
        "[service.a]\ncommand = [\"x\"]\nrestart = \"x\"\nstop-timeout = \"y\"\n[service.b]\ncommand = [\"x\"]\ntasks-max = 0\n",
    );
    assert_eq!(load(&[f]).unwrap_err().0.len(), 3);
}

#[test]
fn missing_explicit_paths_are_errors_defaults_are_optional() {
    let errs = discover(&[PathBuf::from("/no/such/keel.toml")]).unwrap_err();
    assert!(errs.to_string().contains("/no/such/keel.toml"));
}

/// A small deterministic PRNG for the property test (no dependency for one test).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Property: whatever the bytes, loading never panics, and every error has a location.
/// Mutates a valid configuration (delete, duplicate, replace bytes, splice in tokens) for a
/// bounded number of rounds (KEEL_FUZZ_ROUNDS, default 3000).
#[test]
fn fuzzed_configs_never_panic_and_errors_have_locations() {
    let rounds: u64 = std::env::var("KEEL_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let d = dir("fuzz");
    let f = d.join("keel.toml");
    let tokens: &[&str] = &[
        "[",
        "]",
        "=",
        "\"",
        "{",
        "}",
        ",",
        "\n",
        "service.",
        "after",
        "requires",
        "\"1s\"",
        "-1",
        "99999999999999999999",
        "\"max\"",
        "\"50%\"",
        "ready",
        "tcp",
        "[[x]]",
        "true",
        "\"a\"",
        "io-max",
        "\u{1F980}",
        "'",
        "#",
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let base = WORKSPACE.as_bytes().to_vec();
    for _ in 0..rounds {
        let mut b = base.clone();
        for _ in 0..(1 + rng.next() % 4) {
            let pos = (rng.next() as usize) % (b.len() + 1);
            match rng.next() % 4 {
                0 if !b.is_empty() => {
                    let end = (pos + (rng.next() % 8) as usize).min(b.len());
                    b.drain(pos.min(end)..end);
                }
                1 => {
                    let t = tokens[(rng.next() as usize) % tokens.len()];
                    b.splice(pos..pos, t.bytes());
                }
                2 if pos < b.len() => b[pos] = (rng.next() % 128) as u8,
                _ => {
                    let end = (pos + 16).min(b.len());
                    let chunk = b[pos..end].to_vec();
                    b.splice(pos..pos, chunk);
                }
            }
        }
        std::fs::write(&f, &b).unwrap();
        if let Err(errs) = load(std::slice::from_ref(&f)) {
            for e in &errs.0 {
                let at = e.at.as_deref().unwrap_or("");
                assert!(
                    at.starts_with(&f.display().to_string()) && at.matches(':').count() >= 2
                        || at == f.display().to_string(),
                    "error without a line:column: {e}\n{}",
                    String::from_utf8_lossy(&b)
                );
            }
        }
    }
}
