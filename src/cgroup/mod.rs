//! Per-service cgroups: detection at start, keel's own placement, one cgroup per service with
//! its limits, whole-cgroup kill, usage statistics and the OOM / empty events.
//!
//! Owns: every read and write under `/sys/fs/cgroup` (cgroup v2, v1 and hybrid hosts), the
//! `auto` / `required` / `off` policy with its one warning, and the fds the runtime puts in its
//! epoll loop to learn of OOM kills and of a service cgroup becoming empty.
//! Must not: fork, wait, decide restarts, or block. The runtime owns the [`Cgroups`] and one
//! [`ServiceCgroup`] per running service; it spawns into them with
//! [`crate::spawn::spawn_in_cgroup`] and feeds their events to the supervisor.
//!
//! Layout (v2, `B` = keel's own cgroup, `/` under a private cgroup namespace): keel and every
//! other process of `B` move to the leaf `B/init` (the "no internal processes" rule forbids
//! enabling controllers while `B` holds processes), the needed controllers are enabled in
//! `B/cgroup.subtree_control`, and service `S` lives in `B/S` (name escaped, [`escape`]).
//! On v1 and hybrid hosts, `S` lives beneath keel's own cgroup in each v1 hierarchy (limits) and
//! in the unified hierarchy when there is one (kill, empty events).
//!
//! Every write is one `write(2)` of one small buffer on a file opened without `O_CREAT`, and an
//! error names the file and the data (`write 150000 100000 to /sys/fs/cgroup/web/cpu.max:
//! Invalid argument`).

pub mod detect;
pub mod v1;
pub mod v2;

use crate::plan::{Limits, Size};
use crate::sys::{errno, strerror};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use detect::{Detection, Kind, V1Hierarchy};

/// Exit code of keel when `cgroups = "required"` and the cgroups cannot be used (nothing was
/// started). 78 is sysexits' `EX_CONFIG`: the configuration asks for what the environment
/// does not give.
pub const EXIT_REQUIRED: u8 = 78;

/// The `cgroups` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Use cgroups when possible; otherwise warn once (cause and fix) and run without limits.
    #[default]
    Auto,
    /// Refuse to start (exit [`EXIT_REQUIRED`]) when the cgroups or a needed controller are
    /// unavailable.
    Required,
    /// Never touch cgroups.
    Off,
}

impl Mode {
    /// Parse `auto`, `required` or `off`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "auto" => Some(Mode::Auto),
            "required" => Some(Mode::Required),
            "off" => Some(Mode::Off),
            _ => None,
        }
    }
}

/// A set of the controllers keel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Controllers(u8);

impl Controllers {
    /// `memory`.
    pub const MEMORY: Controllers = Controllers(1);
    /// `cpu`.
    pub const CPU: Controllers = Controllers(2);
    /// `pids`.
    pub const PIDS: Controllers = Controllers(4);
    /// `io` (v1: `blkio`).
    pub const IO: Controllers = Controllers(8);
    /// None.
    pub const NONE: Controllers = Controllers(0);
    /// Every controller keel knows, in the order they are enabled and listed.
    const ALL: [(Controllers, &'static str); 4] = [
        (Controllers::CPU, "cpu"),
        (Controllers::IO, "io"),
        (Controllers::MEMORY, "memory"),
        (Controllers::PIDS, "pids"),
    ];

    /// The controllers `limits` need.
    pub fn for_limits(limits: &Limits) -> Controllers {
        let mut c = Controllers::NONE;
        if limits.memory_max.is_some()
            || limits.memory_high.is_some()
            || limits.memory_swap_max.is_some()
        {
            c = c | Controllers::MEMORY;
        }
        if limits.cpu_quota.is_some() || limits.cpu_weight.is_some() {
            c = c | Controllers::CPU;
        }
        if limits.tasks_max.is_some() {
            c = c | Controllers::PIDS;
        }
        if limits.io_weight.is_some() || !limits.io_max.is_empty() {
            c = c | Controllers::IO;
        }
        c
    }

    /// Whether every controller of `other` is in `self`.
    pub fn contains(self, other: Controllers) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The controllers of `self` not in `other`.
    pub fn minus(self, other: Controllers) -> Controllers {
        Controllers(self.0 & !other.0)
    }

    /// The controllers in both.
    pub fn and(self, other: Controllers) -> Controllers {
        Controllers(self.0 & other.0)
    }

    /// The v2 name of a single controller (`"memory"`); `None` for sets of several.
    pub fn name(self) -> Option<&'static str> {
        Controllers::ALL
            .iter()
            .find(|(c, _)| *c == self)
            .map(|(_, n)| *n)
    }

    /// Each controller of the set on its own, in the order cpu, io, memory, pids.
    pub fn each(self) -> impl Iterator<Item = (Controllers, &'static str)> {
        Controllers::ALL
            .into_iter()
            .filter(move |(c, _)| self.contains(*c))
    }

    /// The set named in a `cgroup.controllers` line (unknown names are ignored).
    pub fn parse_list(s: &str) -> Controllers {
        let mut c = Controllers::NONE;
        for word in s.split_whitespace() {
            if let Some((x, _)) = Controllers::ALL.iter().find(|(_, n)| *n == word) {
                c = c | *x;
            }
        }
        c
    }
}

impl std::ops::BitOr for Controllers {
    type Output = Controllers;
    fn bitor(self, rhs: Controllers) -> Controllers {
        Controllers(self.0 | rhs.0)
    }
}

impl fmt::Display for Controllers {
    /// Space-separated names, `(none)` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        let mut first = true;
        for (_, n) in self.each() {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(n)?;
            first = false;
        }
        Ok(())
    }
}

/// Why cgroups cannot be used (or only partly), with the fix to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong, e.g. `/sys/fs/cgroup is read-only (cgroup2)`.
    pub cause: String,
    /// What to do about it, per container runtime.
    pub fix: String,
    /// Whether cgroups are still usable for the rest (a missing controller), or not at all.
    pub partial: bool,
}

impl Problem {
    /// The one line `cgroups = "required"` refuses to start with.
    pub fn refusal(&self) -> String {
        format!(
            "cgroups: {}; cgroups = \"required\": refusing to start (nothing was started). Fix: {}",
            self.cause, self.fix
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let effect = if self.partial {
            "the limits that need them are NOT enforced"
        } else {
            "per-service memory/cpu/pids/io limits are NOT enforced, stop uses process-group kill"
        };
        write!(f, "cgroups: {} -> {effect}. Fix: {}", self.cause, self.fix)
    }
}

/// A cgroup operation that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupError {
    /// A file-system operation on a cgroup file or directory.
    Io {
        /// `write`, `read`, `mkdir`, `rmdir`, `open`, ...
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The data written, for writes.
        data: Option<String>,
        /// The errno.
        errno: i32,
    },
    /// cgroups cannot be used here (`required` mode refuses to start with this).
    Unusable(Problem),
    /// A limit that cannot be expressed (an `io-max` device that does not exist, ...).
    Invalid(String),
}

impl CgroupError {
    fn io(op: &'static str, path: &Path, data: Option<&str>, errno: i32) -> CgroupError {
        CgroupError::Io {
            op,
            path: path.to_path_buf(),
            data: data.map(str::to_owned),
            errno,
        }
    }

    /// The errno of an I/O failure (0 otherwise).
    pub fn errno(&self) -> i32 {
        match self {
            CgroupError::Io { errno, .. } => *errno,
            _ => 0,
        }
    }

    /// Whether this is `rmdir` of a cgroup that still has processes (retry on `populated 0`).
    pub fn is_busy(&self) -> bool {
        self.errno() == libc::EBUSY
    }
}

impl fmt::Display for CgroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupError::Io {
                op,
                path,
                data: Some(d),
                errno,
            } => write!(f, "{op} {d:?} to {}: {}", path.display(), strerror(*errno)),
            CgroupError::Io {
                op,
                path,
                data: None,
                errno,
            } => write!(f, "{op} {}: {}", path.display(), strerror(*errno)),
            CgroupError::Unusable(p) => p.fmt(f),
            CgroupError::Invalid(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for CgroupError {}

#[cfg(test)]
thread_local! {
    /// Every write this thread made, in order: what the fixture tests check ordering with.
    static JOURNAL: std::cell::RefCell<Vec<(PathBuf, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Take this thread's write journal (tests only).
#[cfg(test)]
pub(crate) fn take_journal() -> Vec<(PathBuf, String)> {
    JOURNAL.with(|j| std::mem::take(&mut *j.borrow_mut()))
}

/// Write `data` to the cgroup file `path` with one `write(2)`: no `O_CREAT` (a missing file
/// means a missing controller or kernel feature, never something to create), `O_TRUNC` as
/// runc does (harmless on cgroupfs, and exact on test fixtures).
pub(crate) fn write_file(path: &Path, data: &str) -> Result<(), CgroupError> {
    #[cfg(test)]
    JOURNAL.with(|j| j.borrow_mut().push((path.to_path_buf(), data.to_owned())));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| CgroupError::io("write", path, Some(data), e.raw_os_error().unwrap_or(0)))?;
    match f.write(data.as_bytes()) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(_) => Err(CgroupError::io("write", path, Some(data), libc::EIO)),
        Err(e) => Err(CgroupError::io(
            "write",
            path,
            Some(data),
            e.raw_os_error().unwrap_or(0),
        )),
    }
}

/// Read a (small) cgroup file.
pub(crate) fn read_file(path: &Path) -> Result<String, CgroupError> {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|e| CgroupError::io("read", path, None, e.raw_os_error().unwrap_or(0)))?;
    Ok(s)
}

/// `mkdir(path, 0755)`; `EEXIST` is fine (a re-executed keel, a leftover of a crash).
pub(crate) fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CgroupError::io(
            "mkdir",
            path,
            None,
            e.raw_os_error().unwrap_or(0),
        )),
    }
}

/// `rmdir(path)`; `ENOENT` is fine (already gone).
pub(crate) fn rmdir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CgroupError::io(
            "rmdir",
            path,
            None,
            e.raw_os_error().unwrap_or(0),
        )),
    }
}

/// `open(path, flags | O_CLOEXEC)`.
pub(crate) fn open_fd(path: &Path, flags: libc::c_int) -> Result<OwnedFd, CgroupError> {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return Err(CgroupError::io("open", path, None, libc::EINVAL));
    };
    // SAFETY: c is a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(CgroupError::io("open", path, None, errno()));
    }
    // SAFETY: open succeeded; the fd is ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Read an open cgroup file from its start (`pread` at 0: re-arms kernfs' poll notification).
fn pread_all(fd: RawFd) -> Option<String> {
    let mut buf = [0u8; 1024];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return None;
    }
    let n = usize::try_from(n).ok()?;
    buf.get(..n)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The value of `key` in a flat-keyed file (`oom_kill 3`, `populated 0`).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        if w.next() == Some(key) {
            w.next().and_then(|v| v.parse().ok())
        } else {
            None
        }
    })
}

/// A directory name for service `name`, safe among a cgroup's interface files: names that
/// could collide with `cgroup.*`, a controller's `NAME.*` files, keel's own `init` leaf, or
/// that start with `_` or `.`, get a leading `_` (systemd's escaping rule). Any `/` becomes
/// `_` (config validation already refuses them).
pub fn escape(name: &str) -> String {
    const PREFIXES: &[&str] = &[
        "cgroup.",
        "cpu.",
        "cpuset.",
        "io.",
        "memory.",
        "pids.",
        "hugetlb.",
        "rdma.",
        "misc.",
        "blkio.",
        "cpuacct.",
        "freezer.",
        "devices.",
        "net_cls.",
        "net_prio.",
        "perf_event.",
        "notify_on_release",
        "release_agent",
        "tasks",
    ];
    let clean: String = name
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    let collides = clean == "init"
        || clean.is_empty()
        || clean.starts_with('_')
        || clean.starts_with('.')
        || PREFIXES.iter().any(|p| clean.starts_with(p));
    if collides { format!("_{clean}") } else { clean }
}

/// Machine memory in bytes (what `Size::Percent` is a share of).
pub fn mem_total() -> u64 {
    // SAFETY: sysinfo fills the struct it is given.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: si is a valid sysinfo.
    if unsafe { libc::sysinfo(&mut si) } != 0 {
        return 0;
    }
    (si.totalram as u64).saturating_mul(u64::from(si.mem_unit))
}

/// Bytes for a `Size` (`None` = no limit).
pub(crate) fn size_bytes(s: Size, total: u64) -> Option<u64> {
    match s {
        Size::Bytes(b) => Some(b),
        Size::Percent(p) => {
            Some((u128::from(total) * u128::from(p) / 10_000).min(u128::from(u64::MAX)) as u64)
        }
        Size::Max => None,
    }
}

/// The default CFS period (all runtimes and both cgroup versions use 100 ms).
pub const DEFAULT_CPU_PERIOD_US: u64 = 100_000;

/// (quota µs, period µs) for a quota in hundredths of a percent of one CPU. The quota is kept
/// at the kernel's 1 ms minimum; the period within its 1 ms .. 1 s bounds.
pub(crate) fn cpu_quota_us(quota: u32, period: Option<std::time::Duration>) -> (u64, u64) {
    let period_us = period
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(1_000_000))
        .unwrap_or(DEFAULT_CPU_PERIOD_US)
        .clamp(1_000, 1_000_000);
    let q = (u64::from(quota).saturating_mul(period_us) / 10_000).max(1_000);
    (q, period_us)
}

/// `MAJOR:MINOR` of an `io-max` device: given as such, or a path whose `st_rdev` is taken.
pub(crate) fn device_number(dev: &str) -> Result<String, CgroupError> {
    if let Some((a, b)) = dev.split_once(':')
        && a.parse::<u32>().is_ok()
        && b.parse::<u32>().is_ok()
    {
        return Ok(dev.to_owned());
    }
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(dev)
        .map_err(|e| CgroupError::Invalid(format!("io-max device {dev}: {e}")))?;
    let rdev = md.rdev();
    if rdev == 0 {
        return Err(CgroupError::Invalid(format!(
            "io-max device {dev}: not a device"
        )));
    }
    Ok(format!("{}:{}", libc::major(rdev), libc::minor(rdev)))
}

/// The cgroups keel manages: set up once at start, then one [`ServiceCgroup`] per service.
#[derive(Debug)]
pub struct Cgroups {
    det: Detection,
    /// v2: controllers enabled for the service cgroups; v1: controllers with a writable
    /// hierarchy.
    enabled: Controllers,
    mem_total: u64,
}

/// Per-service usage, for the control interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// `memory.current` (v1: `memory.usage_in_bytes`).
    pub memory_current: Option<u64>,
    /// CPU time used, µs (`cpu.stat` `usage_usec`; v1 `cpuacct.usage`).
    pub cpu_usage_usec: Option<u64>,
    /// `pids.current`.
    pub pids_current: Option<u64>,
    /// OOM kills in this cgroup so far.
    pub oom_kills: u64,
}

/// What [`ServiceCgroup::read_events`] found since the last call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events {
    /// How many processes the OOM killer killed in the service since the last call.
    pub new_oom_kills: u64,
    /// `cgroup.events` `populated` now (`None` when there is no unified hierarchy to tell).
    pub populated: Option<bool>,
}

impl Cgroups {
    /// Detect the host's cgroups, log one summary line, and apply `mode`:
    ///
    /// - `Off`: `Ok(None)`, nothing read or written.
    /// - `Auto`: when cgroups are unusable, one `warn!` naming the cause and the fix, then
    ///   `Ok(None)` (run without limits); when only some of `needed` are missing, a warning
    ///   and `Ok(Some)`.
    /// - `Required`: the same problems are `Err(CgroupError::Unusable)`; the caller logs it and
    ///   exits with [`EXIT_REQUIRED`] before starting anything.
    ///
    /// On v2 this moves keel (and every other process of its cgroup) into `B/init` and enables
    /// the controllers in `B/cgroup.subtree_control`. `needed` is the union of
    /// [`Controllers::for_limits`] over all services; `memory` and `pids` are enabled too when
    /// available (usage statistics and OOM events).
    pub fn setup(mode: Mode, needed: Controllers) -> Result<Option<Cgroups>, CgroupError> {
        if mode == Mode::Off {
            log::info!("cgroups: off (cgroups = \"off\")");
            return Ok(None);
        }
        let det = Detection::probe();
        // A read-only or missing cgroupfs is the cause to name first (its fix differs).
        if det.problem().is_none()
            && let Some(p) = shared(&det)
        {
            log::info!("{}", det.summary());
            return if mode == Mode::Required {
                Err(CgroupError::Unusable(p))
            } else {
                log::warn!("{p}");
                Ok(None)
            };
        }
        Cgroups::setup_with(det, mode, needed, mem_total())
    }

    /// [`Cgroups::setup`] on a given detection (tests point it at a fixture tree).
    pub fn setup_with(
        det: Detection,
        mode: Mode,
        needed: Controllers,
        mem_total: u64,
    ) -> Result<Option<Cgroups>, CgroupError> {
        if mode == Mode::Off {
            return Ok(None);
        }
        log::info!("{}", det.summary());
        let refuse_or_warn = |p: Problem| -> Result<Option<Cgroups>, CgroupError> {
            if mode == Mode::Required {
                Err(CgroupError::Unusable(p))
            } else {
                log::warn!("{p}");
                Ok(None)
            }
        };
        if let Some(p) = det.problem() {
            return refuse_or_warn(p);
        }
        let wanted = needed | Controllers::MEMORY | Controllers::PIDS;
        let enabled = match det.kind {
            Kind::Unified => {
                let Some(base) = det.unified.as_deref() else {
                    return refuse_or_warn(detect::not_mounted());
                };
                match v2::prepare(base, det.unified_is_root, wanted.and(det.available)) {
                    Ok(e) => e,
                    Err(CgroupError::Unusable(p)) => return refuse_or_warn(p),
                    Err(e) => {
                        return refuse_or_warn(detect::setup_failed(&e));
                    }
                }
            }
            // Hybrid and legacy: limits through v1 hierarchies, keel stays where it is (v1
            // has no internal-process rule), the unified hierarchy is used without
            // controllers.
            Kind::Hybrid | Kind::Legacy => det.available,
            Kind::None => return refuse_or_warn(detect::not_mounted()),
        };
        let missing = needed.minus(enabled);
        if !missing.is_empty() {
            let p = detect::missing_controllers(&det, missing, enabled);
            if mode == Mode::Required {
                return Err(CgroupError::Unusable(p));
            }
            log::warn!("{p}");
        }
        Ok(Some(Cgroups {
            det,
            enabled,
            mem_total,
        }))
    }

    /// The detection this manager was set up from.
    pub fn detection(&self) -> &Detection {
        &self.det
    }

    /// Controllers usable for services' limits.
    pub fn enabled(&self) -> Controllers {
        self.enabled
    }

    /// Create service `name`'s cgroup(s) and write `limits`. Limits whose controller is not
    /// enabled, and optional files the kernel lacks (swap accounting, BFQ), are listed in
    /// [`ServiceCgroup::skipped`] for the caller to warn about. Any other failure removes what
    /// was created and is returned. Call before each start of the service (a leftover cgroup
    /// of the same name is reused).
    pub fn create(&self, name: &str, limits: &Limits) -> Result<ServiceCgroup, CgroupError> {
        let dir = escape(name);
        let mut sc = ServiceCgroup {
            name: name.to_owned(),
            unified: None,
            unified_dir: None,
            unified_procs: None,
            v1: Vec::new(),
            v1_procs: Vec::new(),
            v1_procs_raw: Vec::new(),
            cgroup_events: None,
            memory_events: None,
            oom_eventfd: None,
            oom_control: None,
            oom_seen: 0,
            skipped: Vec::new(),
        };
        let r = match self.det.kind {
            Kind::Unified => self.create_v2(&mut sc, &dir, limits),
            Kind::Hybrid | Kind::Legacy => self.create_v1(&mut sc, &dir, limits),
            Kind::None => Err(CgroupError::Unusable(detect::not_mounted())),
        };
        if let Err(e) = r {
            sc.close_fds();
            let _ = sc.remove();
            return Err(e);
        }
        Ok(sc)
    }

    fn create_v2(
        &self,
        sc: &mut ServiceCgroup,
        dir: &str,
        limits: &Limits,
    ) -> Result<(), CgroupError> {
        let Some(base) = self.det.unified.as_deref() else {
            return Err(CgroupError::Unusable(detect::not_mounted()));
        };
        let path = base.join(dir);
        mkdir(&path)?;
        sc.unified = Some(path.clone());
        let (writes, skipped) = v2::limit_writes(limits, self.enabled, self.mem_total)?;
        sc.skipped = skipped;
        for (file, value) in &writes {
            let p = path.join(file);
            match write_file(&p, value) {
                Ok(()) => {}
                // No swap accounting: nothing to limit (runc ignores it the same way).
                Err(e) if e.errno() == libc::ENOENT && *file == "memory.swap.max" => {
                    sc.skipped
                        .push("memory-swap-max (no swap accounting in this kernel)".into());
                }
                Err(e) => return Err(e),
            }
        }
        sc.open_unified(&path, self.enabled.contains(Controllers::MEMORY))
    }

    fn create_v1(
        &self,
        sc: &mut ServiceCgroup,
        dir: &str,
        limits: &Limits,
    ) -> Result<(), CgroupError> {
        // The unified hierarchy of a hybrid host: membership, kill and empty events.
        if let Some(base) = self.det.unified.as_deref()
            && !self.det.unified_read_only
        {
            let path = base.join(dir);
            mkdir(&path)?;
            sc.unified = Some(path.clone());
            sc.open_unified(&path, false)?;
        }
        for h in &self.det.v1 {
            if h.read_only || !h.is_used() {
                continue;
            }
            let path = h.dir.join(dir);
            mkdir(&path)?;
            sc.v1.push((h.controllers.clone(), path));
        }
        let (writes, skipped) = v1::limit_writes(limits, self.enabled, self.mem_total)?;
        sc.skipped = skipped;
        for w in &writes {
            let Some(cg) = sc.v1_dir(w.controller).map(Path::to_path_buf) else {
                continue;
            };
            let p = cg.join(w.file);
            match write_file(&p, &w.value) {
                Ok(()) => {}
                Err(e) if e.errno() == libc::ENOENT && w.optional => {
                    sc.skipped.push(format!("{} ({} missing)", w.limit, w.file));
                }
                // A shorter period than the parent allows with the old quota: write the
                // quota first, then the period again (runc fs/cpu.go).
                Err(e) if e.errno() == libc::EINVAL && w.file == "cpu.cfs_period_us" => {
                    if let Some(q) = writes.iter().find(|x| x.file == "cpu.cfs_quota_us") {
                        write_file(&cg.join(q.file), &q.value)?;
                    }
                    write_file(&p, &w.value)?;
                }
                Err(e) => return Err(e),
            }
        }
        for (ctrls, path) in &sc.v1 {
            let procs = path.join("cgroup.procs");
            let fd = open_fd(&procs, libc::O_WRONLY)?;
            sc.v1_procs_raw.push(fd.as_raw_fd());
            sc.v1_procs.push(fd);
            if ctrls.iter().any(|c| c == "memory") {
                let (efd, ofd) = v1::register_oom(path)?;
                sc.oom_eventfd = Some(efd);
                sc.oom_control = Some(ofd);
            }
        }
        sc.oom_seen = sc.stats().oom_kills;
        Ok(())
    }
}

/// Whether keel's cgroup belongs to others too, so that service cgroups made beside keel
/// could collide with another keel's (same service names) and `cgroup.kill` or a v2 move
/// would reach processes keel does not own: a process outside keel's PID namespace is in it
/// on a v1 or hybrid host (v2 finds this while moving keel to its leaf), or keel is not PID 1
/// and other processes share its cgroup. Read before keel forks anything, so every other pid
/// listed is someone else's.
fn shared(det: &Detection) -> Option<Problem> {
    let dir = det
        .unified
        .as_deref()
        .or_else(|| det.v1.iter().find(|h| h.is_used()).map(|h| h.dir.as_path()))?;
    let procs = read_file(&dir.join("cgroup.procs")).ok()?;
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    let others = procs
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|&p| p != me)
        .count();
    let outside = det.foreign && det.kind != Kind::Unified;
    if !outside && (me == 1 || others == 0) {
        return None;
    }
    Some(Problem {
        cause: format!(
            "keel's cgroup {} is shared with {} other process(es){}",
            dir.display(),
            others,
            if det.foreign {
                ", some outside keel's PID namespace"
            } else {
                ""
            }
        ),
        fix: "give keel a cgroup of its own: run it as the container's first process (its \
              ENTRYPOINT or --init), or outside containers under systemd-run --scope -p \
              Delegate=yes, or move it into a fresh cgroup before it starts; or set \
              cgroups = \"off\""
            .into(),
        partial: false,
    })
}

/// One service's cgroup(s): created by [`Cgroups::create`], spawned into with
/// [`ServiceCgroup::join`], killed with [`ServiceCgroup::kill`], removed with
/// [`ServiceCgroup::remove`] once empty.
#[derive(Debug)]
pub struct ServiceCgroup {
    name: String,
    /// The cgroup in the unified hierarchy.
    unified: Option<PathBuf>,
    /// `O_PATH | O_DIRECTORY` fd of it: the `CLONE_INTO_CGROUP` target.
    unified_dir: Option<OwnedFd>,
    /// Its `cgroup.procs`, opened for writing: the fork fallback's join.
    unified_procs: Option<OwnedFd>,
    /// (controllers of the hierarchy, the service's cgroup in it).
    v1: Vec<(Vec<String>, PathBuf)>,
    /// `cgroup.procs` of each v1 cgroup, opened for writing (the child writes `0`).
    v1_procs: Vec<OwnedFd>,
    v1_procs_raw: Vec<RawFd>,
    cgroup_events: Option<OwnedFd>,
    memory_events: Option<OwnedFd>,
    oom_eventfd: Option<OwnedFd>,
    /// Kept open: the v1 OOM notification is registered on it.
    oom_control: Option<OwnedFd>,
    oom_seen: u64,
    /// Limits that could not be applied, with why (for one warning per service).
    pub skipped: Vec<String>,
}

impl ServiceCgroup {
    fn open_unified(&mut self, path: &Path, memory: bool) -> Result<(), CgroupError> {
        self.unified_dir = Some(open_fd(path, libc::O_PATH | libc::O_DIRECTORY)?);
        self.unified_procs = Some(open_fd(&path.join("cgroup.procs"), libc::O_WRONLY)?);
        self.cgroup_events = Some(open_fd(&path.join("cgroup.events"), libc::O_RDONLY)?);
        if memory {
            let fd = open_fd(&path.join("memory.events"), libc::O_RDONLY)?;
            self.oom_seen = pread_all(fd.as_raw_fd())
                .and_then(|t| keyed(&t, "oom_kill"))
                .unwrap_or(0);
            self.memory_events = Some(fd);
        }
        if let Some(fd) = &self.cgroup_events {
            // Read once so the first notification is a change after creation.
            let _ = pread_all(fd.as_raw_fd());
        }
        Ok(())
    }

    fn close_fds(&mut self) {
        self.unified_dir = None;
        self.unified_procs = None;
        self.v1_procs.clear();
        self.v1_procs_raw.clear();
        self.cgroup_events = None;
        self.memory_events = None;
        self.oom_eventfd = None;
        self.oom_control = None;
    }

    fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(c, _)| c.iter().any(|x| x == controller))
            .map(|(_, p)| p.as_path())
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service's cgroup in the unified hierarchy, when there is one.
    pub fn unified_path(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// The service's cgroup in each v1 hierarchy it uses.
    pub fn v1_paths(&self) -> impl Iterator<Item = &Path> {
        self.v1.iter().map(|(_, p)| p.as_path())
    }

    /// What [`crate::spawn::spawn_in_cgroup`] needs to start a process inside this cgroup
    /// from its first instruction. Valid while `self` lives.
    pub fn join(&self) -> crate::spawn::CgroupJoin<'_> {
        crate::spawn::CgroupJoin {
            // CLONE_INTO_CGROUP places the child in the unified hierarchy (pure v2 or hybrid);
            // v1 hierarchies have no such flag, so the child enters its v1 cgroups by writing
            // `0` to their cgroup.procs first thing, before it can fork or allocate.
            dir: self.unified_dir.as_ref().map(AsRawFd::as_raw_fd),
            dir_procs: self.unified_procs.as_ref().map(AsRawFd::as_raw_fd),
            procs: &self.v1_procs_raw,
        }
    }

    /// The fds to watch, each with the epoll events to ask for: `cgroup.events` and
    /// `memory.events` with `EPOLLPRI` (kernfs reports a change as PRI; IN is always set), the
    /// v1 OOM eventfd with `EPOLLIN`, in that order (`cgroup.events` first when present). On
    /// any of them, call [`ServiceCgroup::read_events`].
    pub fn event_fds(&self) -> Vec<(RawFd, u32)> {
        let pri = libc::EPOLLPRI as u32;
        let mut v = Vec::new();
        if let Some(fd) = &self.cgroup_events {
            v.push((fd.as_raw_fd(), pri));
        }
        if let Some(fd) = &self.memory_events {
            v.push((fd.as_raw_fd(), pri));
        }
        if let Some(fd) = &self.oom_eventfd {
            v.push((fd.as_raw_fd(), libc::EPOLLIN as u32));
        }
        v
    }

    /// Whether OOM kills are learnt through v1's eventfd, which fires when the OOM starts,
    /// before the kill is counted: a wake-up that finds no new kill should read again
    /// shortly after.
    pub fn oom_needs_recheck(&self) -> bool {
        self.oom_eventfd.is_some()
    }

    /// Re-read the event files (re-arming their notification) and report new OOM kills and
    /// whether the cgroup is populated. Cheap and idempotent: notifications are coalesced
    /// and may be stale, so every wake-up is "re-read and diff". Also worth calling when a
    /// member of the service died of SIGKILL (v1's OOM eventfd fires when the OOM starts,
    /// the `oom_kill` counter moves when the kill is done).
    pub fn read_events(&mut self) -> Events {
        if let Some(fd) = &self.oom_eventfd {
            let mut v = [0u8; 8];
            // SAFETY: v is valid for 8 bytes; the eventfd is non-blocking.
            unsafe { libc::read(fd.as_raw_fd(), v.as_mut_ptr().cast(), v.len()) };
        }
        let populated = self
            .cgroup_events
            .as_ref()
            .and_then(|fd| pread_all(fd.as_raw_fd()))
            .and_then(|t| keyed(&t, "populated"))
            .map(|v| v != 0);
        let kills = self.stats().oom_kills;
        let new_oom_kills = kills.saturating_sub(self.oom_seen);
        self.oom_seen = self.oom_seen.max(kills);
        Events {
            new_oom_kills,
            populated,
        }
    }

    /// The pids in the service's cgroup (unified hierarchy first, else the first v1 one).
    pub fn pids(&self) -> Vec<i32> {
        let dir = self
            .unified
            .as_deref()
            .or_else(|| self.v1.first().map(|(_, p)| p.as_path()));
        dir.and_then(|d| read_file(&d.join("cgroup.procs")).ok())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Whether the cgroup still has processes (`cgroup.events`, else `cgroup.procs`).
    pub fn populated(&self) -> bool {
        if let Some(p) = &self.unified
            && let Ok(t) = read_file(&p.join("cgroup.events"))
            && let Some(v) = keyed(&t, "populated")
        {
            return v != 0;
        }
        !self.pids().is_empty()
    }

    /// SIGKILL every process of the service, daemonised and double-forked ones included:
    /// `cgroup.kill` (kernel 5.14, also on a hybrid host's unified hierarchy), otherwise
    /// freeze, kill each pid, thaw. Never waits; call again if `populated` stays 1.
    /// Returns how many pids were signalled by the fallback (0 with `cgroup.kill`).
    pub fn kill(&self) -> Result<usize, CgroupError> {
        if let Some(p) = &self.unified {
            match write_file(&p.join("cgroup.kill"), "1") {
                Ok(()) => return Ok(0),
                Err(e) if e.errno() == libc::ENOENT => {}
                Err(e) => return Err(e),
            }
        }
        // Freeze so no member forks between the listing and the kill.
        let freezer = self.freeze(true);
        let mut n = 0;
        for pid in self.pids() {
            if pid > 0 {
                // SAFETY: plain syscall. ESRCH (already gone) is fine.
                if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                    n += 1;
                }
            }
        }
        if freezer {
            self.freeze(false);
        }
        Ok(n)
    }

    /// Freeze (or thaw) through `cgroup.freeze` or the v1 freezer; whether one was found.
    fn freeze(&self, on: bool) -> bool {
        if let Some(p) = &self.unified
            && write_file(&p.join("cgroup.freeze"), if on { "1" } else { "0" }).is_ok()
        {
            return true;
        }
        if let Some(p) = self.v1_dir("freezer") {
            return write_file(
                &p.join("freezer.state"),
                if on { "FROZEN" } else { "THAWED" },
            )
            .is_ok();
        }
        false
    }

    /// Remove the service's cgroup directories. `EBUSY` ([`CgroupError::is_busy`]) means
    /// processes remain: kill, wait for `populated 0`, try again.
    pub fn remove(&mut self) -> Result<(), CgroupError> {
        // The v1 OOM registration is dropped with the cgroup; close first so nothing
        // mistakes the removal's eventfd wake-up for an OOM.
        self.close_fds();
        let mut first = None;
        let dirs = self.unified.iter().chain(self.v1.iter().map(|(_, p)| p));
        for d in dirs {
            if let Err(e) = rmdir(d)
                && first.is_none()
            {
                first = Some(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Usage now. Missing files (controller not enabled) give `None`.
    pub fn stats(&self) -> Stats {
        let num = |p: Option<PathBuf>| -> Option<u64> {
            p.and_then(|p| read_file(&p).ok())
                .and_then(|t| t.trim().parse().ok())
        };
        let mut s = Stats::default();
        if let Some(u) = &self.unified {
            s.memory_current = num(Some(u.join("memory.current")));
            s.pids_current = num(Some(u.join("pids.current")));
            s.cpu_usage_usec = read_file(&u.join("cpu.stat"))
                .ok()
                .and_then(|t| keyed(&t, "usage_usec"));
            s.oom_kills = read_file(&u.join("memory.events"))
                .ok()
                .and_then(|t| keyed(&t, "oom_kill"))
                .unwrap_or(0);
        }
        if !self.v1.is_empty() {
            let at = |c: &str, f: &str| self.v1_dir(c).map(|d| d.join(f));
            s.memory_current = num(at("memory", "memory.usage_in_bytes")).or(s.memory_current);
            s.pids_current = num(at("pids", "pids.current")).or(s.pids_current);
            s.cpu_usage_usec = num(at("cpuacct", "cpuacct.usage"))
                .map(|ns| ns / 1000)
                .or(s.cpu_usage_usec);
            if let Some(k) = at("memory", "memory.oom_control")
                .and_then(|p| read_file(&p).ok())
                .and_then(|t| keyed(&t, "oom_kill"))
            {
                s.oom_kills = k;
            }
        }
        s
    }
}
