//! cgroup v2: moving keel into its leaf, enabling controllers, and the limit files of a
//! service cgroup (the moby `hack/dind` sequence; see `shared/design/cgroups.md` §2).
//!
//! Must not: write limit files on keel's own cgroup `B` (they belong to the container runtime,
//! and `nsdelegate` forbids it).

use super::{
    CgroupError, Controllers, cpu_quota_us, device_number, mkdir, read_file, size_bytes, write_file,
};
use crate::plan::Limits;
use std::path::Path;

/// How often the move-everyone-then-enable sequence is retried: a `docker exec` can add a
/// process to `B` between the two steps (`EBUSY`).
const ATTEMPTS: usize = 10;

/// Make `base` (keel's cgroup) able to hand `wanted` controllers to its children: unless it is
/// the real root, move this process and every other one of `base` into `base/init`, then
/// enable the controllers in `base/cgroup.subtree_control`, all at once, or one by one when
/// the kernel refuses the set. Returns the controllers enabled.
pub fn prepare(
    base: &Path,
    is_root: bool,
    wanted: Controllers,
) -> Result<Controllers, CgroupError> {
    let control = base.join("cgroup.subtree_control");
    let already = read_file(&control)
        .map(|t| Controllers::parse_list(&t))
        .unwrap_or_default();
    if wanted.is_empty() || already.contains(wanted) {
        return Ok(already.and(wanted) | already);
    }
    let init = base.join("init");
    let init_procs = init.join("cgroup.procs");
    if !is_root {
        mkdir(&init)?;
        // "0" is the writing process itself.
        write_file(&init_procs, "0")?;
    }
    let request = wanted.minus(already);
    let all: Vec<String> = request.each().map(|(_, n)| format!("+{n}")).collect();
    let all = all.join(" ");
    let mut foreign = false;
    for _ in 0..ATTEMPTS {
        if !is_root {
            foreign = move_all(base, &init_procs)?;
        }
        match write_file(&control, &all) {
            Ok(()) => return Ok(already | request),
            Err(e) if e.errno() == libc::EBUSY => continue,
            Err(_) => {
                // One refused controller (not delegated, RT tasks for cpu) must not cost the
                // others: one by one, like runc.
                let mut got = already;
                for (c, n) in request.each() {
                    if write_file(&control, &format!("+{n}")).is_ok() {
                        got = got | c;
                    }
                }
                return Ok(got);
            }
        }
    }
    if foreign {
        return Err(CgroupError::Unusable(super::detect::foreign()));
    }
    Err(CgroupError::io("write", &control, Some(&all), libc::EBUSY))
}

/// Move every process listed in `base/cgroup.procs` into `init_procs`, one pid per write;
/// returns whether a `0` (a process outside our PID namespace: immovable) was listed.
fn move_all(base: &Path, init_procs: &Path) -> Result<bool, CgroupError> {
    let procs = read_file(&base.join("cgroup.procs"))?;
    let mut foreign = false;
    for pid in procs.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if pid == "0" {
            foreign = true;
            continue;
        }
        match write_file(init_procs, pid) {
            Ok(()) => {}
            // Exited since the listing.
            Err(e) if e.errno() == libc::ESRCH => {}
            Err(e) => return Err(e),
        }
    }
    Ok(foreign)
}

/// (file, value) pairs, in write order.
pub type Writes = Vec<(&'static str, String)>;

/// The files and values for `limits`, in the order they are written; plus the limits skipped
/// because their controller is not in `enabled`.
///
/// Order: cpu, memory, pids, io. `memory.high` after `memory.max` so the (throttling) high
/// mark is never set alone; everything is written before the first process enters.
pub fn limit_writes(
    limits: &Limits,
    enabled: Controllers,
    mem_total: u64,
) -> Result<(Writes, Vec<String>), CgroupError> {
    let mut w: Vec<(&'static str, String)> = Vec::new();
    let mut skipped = Vec::new();
    let mut skip = |c: Controllers, what: &str| -> bool {
        if enabled.contains(c) {
            false
        } else {
            skipped.push(format!(
                "{what} (controller {} not available)",
                c.name().unwrap_or("?")
            ));
            true
        }
    };
    let bytes = |s| match size_bytes(s, mem_total) {
        Some(b) => b.to_string(),
        None => "max".to_owned(),
    };
    if let Some(wt) = limits.cpu_weight
        && !skip(Controllers::CPU, "cpu-weight")
    {
        w.push(("cpu.weight", wt.to_string()));
    }
    if let Some(q) = limits.cpu_quota
        && !skip(Controllers::CPU, "cpu-quota")
    {
        let (quota, period) = cpu_quota_us(q, limits.cpu_quota_period);
        w.push(("cpu.max", format!("{quota} {period}")));
    }
    if let Some(m) = limits.memory_max
        && !skip(Controllers::MEMORY, "memory-max")
    {
        w.push(("memory.max", bytes(m)));
    }
    if let Some(m) = limits.memory_high
        && !skip(Controllers::MEMORY, "memory-high")
    {
        w.push(("memory.high", bytes(m)));
    }
    if let Some(m) = limits.memory_swap_max
        && !skip(Controllers::MEMORY, "memory-swap-max")
    {
        w.push(("memory.swap.max", bytes(m)));
    }
    if let Some(t) = limits.tasks_max
        && !skip(Controllers::PIDS, "tasks-max")
    {
        w.push((
            "pids.max",
            t.map_or_else(|| "max".to_owned(), |n| n.to_string()),
        ));
    }
    if let Some(wt) = limits.io_weight
        && !skip(Controllers::IO, "io-weight")
    {
        w.push(("io.weight", format!("default {wt}")));
    }
    if !limits.io_max.is_empty() && !skip(Controllers::IO, "io-max") {
        for e in &limits.io_max {
            let mut line = device_number(&e.device)?;
            for (k, v) in [
                ("rbps", e.rbps),
                ("wbps", e.wbps),
                ("riops", e.riops),
                ("wiops", e.wiops),
            ] {
                if let Some(v) = v {
                    line.push_str(&format!(" {k}={v}"));
                }
            }
            w.push(("io.max", line));
        }
    }
    Ok((w, skipped))
}

#[cfg(test)]
mod tests {
    use super::super::{Cgroups, Detection, Kind, Mode, take_journal};
    use super::*;
    use crate::plan::{IoMax, Size};
    use std::fs;
    use std::path::PathBuf;
    use std::time::Duration;

    fn fixture(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("keel-cg2-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("init")).unwrap();
        for f in ["cgroup.subtree_control", "init/cgroup.procs", "cgroup.type"] {
            fs::write(d.join(f), "").unwrap();
        }
        fs::write(
            d.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids\n",
        )
        .unwrap();
        fs::write(d.join("cgroup.procs"), "1\n7\n0\n12\n").unwrap();
        d
    }

    fn svc_files(d: &Path, svc: &str) {
        fs::create_dir_all(d.join(svc)).unwrap();
        for f in [
            "cgroup.procs",
            "cgroup.events",
            "cgroup.kill",
            "memory.events",
            "cpu.weight",
            "cpu.max",
            "memory.max",
            "memory.high",
            "memory.swap.max",
            "pids.max",
            "io.weight",
            "io.max",
        ] {
            fs::write(d.join(svc).join(f), "").unwrap();
        }
    }

    fn det(d: &Path) -> Detection {
        Detection {
            kind: Kind::Unified,
            unified: Some(d.to_path_buf()),
            unified_is_root: false,
            unified_read_only: false,
            v1: Vec::new(),
            available: Controllers::parse_list("cpuset cpu io memory hugetlb pids"),
            foreign: false,
            unified_denied: false,
        }
    }

    #[test]
    fn limits_become_v2_files_in_order() {
        let l = Limits {
            memory_max: Some(Size::Bytes(512 << 20)),
            memory_high: Some(Size::Percent(5000)),
            memory_swap_max: Some(Size::Bytes(0)),
            cpu_quota: Some(15_000),
            cpu_quota_period: Some(Duration::from_millis(10)),
            cpu_weight: Some(200),
            tasks_max: Some(None),
            io_weight: Some(300),
            io_max: vec![IoMax {
                device: "8:0".into(),
                rbps: Some(10 << 20),
                wbps: None,
                riops: None,
                wiops: Some(200),
            }],
        };
        let all = Controllers::parse_list("cpu io memory pids");
        let (w, skipped) = limit_writes(&l, all, 1 << 30).unwrap();
        assert!(skipped.is_empty());
        let w: Vec<(&str, &str)> = w.iter().map(|(f, v)| (*f, v.as_str())).collect();
        assert_eq!(
            w,
            vec![
                ("cpu.weight", "200"),
                ("cpu.max", "15000 10000"),
                ("memory.max", "536870912"),
                ("memory.high", "536870912"),
                ("memory.swap.max", "0"),
                ("pids.max", "max"),
                ("io.weight", "default 300"),
                ("io.max", "8:0 rbps=10485760 wiops=200"),
            ]
        );
        // Without io and cpu: those limits are reported, the rest written.
        let (w, skipped) =
            limit_writes(&l, Controllers::MEMORY | Controllers::PIDS, 1 << 30).unwrap();
        assert_eq!(w.len(), 4);
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert!(skipped[0].contains("cpu-weight") && skipped[0].contains("cpu"));
    }

    #[test]
    fn quota_is_clamped_to_kernel_bounds() {
        // 20% of one CPU over the default period; 0.01% floors at the 1 ms minimum.
        assert_eq!(cpu_quota_us(2_000, None), (20_000, 100_000));
        assert_eq!(cpu_quota_us(1, None), (1_000, 100_000));
        assert_eq!(
            cpu_quota_us(25_000, Some(Duration::from_secs(5))),
            (2_500_000, 1_000_000)
        );
    }

    #[test]
    fn setup_moves_everyone_then_enables_controllers() {
        let d = fixture("setup");
        take_journal();
        let needed = Controllers::CPU | Controllers::IO;
        let cg = Cgroups::setup_with(det(&d), Mode::Required, needed, 1 << 30)
            .unwrap()
            .unwrap();
        let j = take_journal();
        let rel: Vec<(String, String)> = j
            .iter()
            .map(|(p, v)| (p.strip_prefix(&d).unwrap().display().to_string(), v.clone()))
            .collect();
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        // Self first, then each listed pid (not the foreign 0), then all controllers at once.
        assert_eq!(
            rel,
            vec![
                s("init/cgroup.procs", "0"),
                s("init/cgroup.procs", "1"),
                s("init/cgroup.procs", "7"),
                s("init/cgroup.procs", "12"),
                s("cgroup.subtree_control", "+cpu +io +memory +pids"),
            ]
        );
        assert_eq!(cg.enabled(), Controllers::parse_list("cpu io memory pids"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn setup_without_controllers_warns_or_refuses() {
        let d = fixture("missing");
        let mut dt = det(&d);
        dt.available = Controllers::MEMORY | Controllers::PIDS;
        let err = Cgroups::setup_with(dt.clone(), Mode::Required, Controllers::IO, 0).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"io\" are not available"), "{msg}");
        assert!(msg.contains("Delegate="), "{msg}");
        let cg = Cgroups::setup_with(dt.clone(), Mode::Auto, Controllers::IO, 0).unwrap();
        assert!(cg.is_some());
        dt.unified_read_only = true;
        let err = Cgroups::setup_with(dt.clone(), Mode::Required, Controllers::IO, 0).unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
        assert!(err.to_string().contains("writable-cgroups=true"), "{err}");
        assert!(
            Cgroups::setup_with(dt, Mode::Auto, Controllers::IO, 0)
                .unwrap()
                .is_none()
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn create_writes_limits_into_the_service_cgroup() {
        let d = fixture("create");
        svc_files(&d, "web");
        svc_files(&d, "_init");
        fs::write(
            d.join("web/memory.events"),
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 2\n",
        )
        .unwrap();
        let cg = Cgroups::setup_with(det(&d), Mode::Auto, Controllers::CPU, 1 << 30)
            .unwrap()
            .unwrap();
        take_journal();
        let l = Limits {
            memory_max: Some(Size::Percent(2500)),
            cpu_quota: Some(2_000),
            tasks_max: Some(Some(64)),
            ..Limits::default()
        };
        let mut sc = cg.create("web", &l).unwrap();
        let j = take_journal();
        let files: Vec<String> = j
            .iter()
            .map(|(p, v)| format!("{}={v}", p.strip_prefix(&d).unwrap().display()))
            .collect();
        assert_eq!(
            files,
            vec![
                "web/cpu.max=20000 100000",
                "web/memory.max=268435456",
                "web/pids.max=64"
            ]
        );
        assert_eq!(
            fs::read_to_string(d.join("web/memory.max")).unwrap(),
            "268435456"
        );
        assert!(sc.join().dir.is_some() && sc.join().dir_procs.is_some());
        assert_eq!(sc.event_fds().len(), 2);
        // The OOM count starts from what the file said at creation.
        assert_eq!(sc.read_events().new_oom_kills, 0);
        fs::write(d.join("web/memory.events"), "oom 1\noom_kill 3\n").unwrap();
        fs::write(d.join("web/cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
        let ev = sc.read_events();
        assert_eq!(ev.new_oom_kills, 1);
        assert_eq!(ev.populated, Some(false));
        assert_eq!(sc.read_events().new_oom_kills, 0);
        // kill goes through cgroup.kill.
        take_journal();
        assert_eq!(sc.kill().unwrap(), 0);
        assert_eq!(take_journal()[0].0, d.join("web/cgroup.kill"));
        // A service named like keel's leaf gets its own directory.
        let other = cg.create("init", &Limits::default()).unwrap();
        assert_eq!(other.unified_path(), Some(d.join("_init").as_path()));
        // remove: a non-empty fixture dir cannot be removed (like EBUSY), the error says which.
        let e = sc.remove().unwrap_err();
        assert!(e.to_string().contains("rmdir"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn create_failure_is_reported_with_file_and_data() {
        let d = fixture("fail");
        svc_files(&d, "db");
        fs::remove_file(d.join("db/pids.max")).unwrap();
        let cg = Cgroups::setup_with(det(&d), Mode::Auto, Controllers::NONE, 0)
            .unwrap()
            .unwrap();
        let l = Limits {
            tasks_max: Some(Some(5)),
            ..Limits::default()
        };
        let e = cg.create("db", &l).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "write \"5\" to {}: No such file or directory",
                d.join("db/pids.max").display()
            )
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
