//! cgroup v1: the limit files of a service's cgroups (memory, cpu, pids, blkio hierarchies,
//! each beneath keel's own cgroup in that hierarchy) and the OOM eventfd.
//!
//! Must not: touch keel's own cgroups (v1 has no internal-process rule: keel stays put).

use super::{
    CgroupError, Controllers, cpu_quota_us, device_number, open_fd, size_bytes, write_file,
};
use crate::plan::Limits;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One v1 write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The hierarchy's controller (`memory`, `cpu`, `pids`, `blkio`).
    pub controller: &'static str,
    /// The file in the service's cgroup of that hierarchy.
    pub file: &'static str,
    /// What is written.
    pub value: String,
    /// The keel setting it comes from (for the skipped-limit warning).
    pub limit: &'static str,
    /// A missing file only skips this limit (swap accounting, BFQ, CFQ).
    pub optional: bool,
}

fn write(
    controller: &'static str,
    file: &'static str,
    value: String,
    limit: &'static str,
) -> Write {
    Write {
        controller,
        file,
        value,
        limit,
        optional: false,
    }
}

/// cpu.weight (1..10000) as v1 `cpu.shares` (2..262144): the inverse of runc's
/// `ConvertCPUSharesToCgroupV2Value`, so 100 maps to the v1 default 1024 only approximately
/// (weight 100 ↔ shares 2597 in runc's mapping; keel keeps runc's formula for consistency).
pub fn weight_to_shares(w: u32) -> u64 {
    let w = u64::from(w.clamp(1, 10_000));
    2 + ((w - 1) * 262_142) / 9_999
}

/// io.weight (1..10000) as `blkio.weight` (10..1000).
pub fn weight_to_blkio(w: u32) -> u64 {
    let w = u64::from(w.clamp(1, 10_000));
    10 + ((w - 1) * 990) / 9_999
}

/// The v1 writes for `limits`, in order, and the limits skipped for lack of a hierarchy.
///
/// Memory: `memory.limit_in_bytes` before `memory.memsw.limit_in_bytes` (memsw must stay >=
/// the limit; a new cgroup starts unlimited in both, so the limit is lowered first). keel's
/// `memory-swap-max` is swap alone (v2 semantics), so memsw = memory-max + swap-max.
/// CPU: period before quota (a retry in the other order on `EINVAL` is the caller's).
pub fn limit_writes(
    limits: &Limits,
    enabled: Controllers,
    mem_total: u64,
) -> Result<(Vec<Write>, Vec<String>), CgroupError> {
    let mut w = Vec::new();
    let mut skipped = Vec::new();
    let mut skip = |c: Controllers, what: &str| -> bool {
        if enabled.contains(c) {
            false
        } else {
            let n = if c == Controllers::IO {
                "blkio"
            } else {
                c.name().unwrap_or("?")
            };
            skipped.push(format!("{what} (no writable v1 {n} hierarchy)"));
            true
        }
    };
    let bytes = |s| match size_bytes(s, mem_total) {
        Some(b) => b.to_string(),
        None => "-1".to_owned(),
    };
    if let Some(wt) = limits.cpu_weight
        && !skip(Controllers::CPU, "cpu-weight")
    {
        w.push(write(
            "cpu",
            "cpu.shares",
            weight_to_shares(wt).to_string(),
            "cpu-weight",
        ));
    }
    if let Some(q) = limits.cpu_quota
        && !skip(Controllers::CPU, "cpu-quota")
    {
        let (quota, period) = cpu_quota_us(q, limits.cpu_quota_period);
        w.push(write(
            "cpu",
            "cpu.cfs_period_us",
            period.to_string(),
            "cpu-quota-period",
        ));
        w.push(write(
            "cpu",
            "cpu.cfs_quota_us",
            quota.to_string(),
            "cpu-quota",
        ));
    }
    if let Some(m) = limits.memory_max
        && !skip(Controllers::MEMORY, "memory-max")
    {
        w.push(write(
            "memory",
            "memory.limit_in_bytes",
            bytes(m),
            "memory-max",
        ));
    }
    if let Some(m) = limits.memory_high
        && !skip(Controllers::MEMORY, "memory-high")
    {
        // The nearest v1 notion: reclaimed down to it under pressure, never OOM.
        w.push(write(
            "memory",
            "memory.soft_limit_in_bytes",
            bytes(m),
            "memory-high",
        ));
    }
    if let Some(s) = limits.memory_swap_max
        && !skip(Controllers::MEMORY, "memory-swap-max")
    {
        let mem = limits.memory_max.and_then(|m| size_bytes(m, mem_total));
        let swap = size_bytes(s, mem_total);
        if let (Some(m), Some(s)) = (mem, swap) {
            let mut x = write(
                "memory",
                "memory.memsw.limit_in_bytes",
                m.saturating_add(s).to_string(),
                "memory-swap-max",
            );
            x.optional = true;
            w.push(x);
        }
    }
    if let Some(t) = limits.tasks_max
        && !skip(Controllers::PIDS, "tasks-max")
    {
        let v = t.map_or_else(|| "max".to_owned(), |n| n.to_string());
        w.push(write("pids", "pids.max", v, "tasks-max"));
    }
    if let Some(wt) = limits.io_weight
        && !skip(Controllers::IO, "io-weight")
    {
        let mut x = write(
            "blkio",
            "blkio.weight",
            weight_to_blkio(wt).to_string(),
            "io-weight",
        );
        x.optional = true;
        w.push(x);
    }
    if !limits.io_max.is_empty() && !skip(Controllers::IO, "io-max") {
        for e in &limits.io_max {
            let dev = device_number(&e.device)?;
            for (file, v) in [
                ("blkio.throttle.read_bps_device", e.rbps),
                ("blkio.throttle.write_bps_device", e.wbps),
                ("blkio.throttle.read_iops_device", e.riops),
                ("blkio.throttle.write_iops_device", e.wiops),
            ] {
                if let Some(v) = v {
                    w.push(write("blkio", file, format!("{dev} {v}"), "io-max"));
                }
            }
        }
    }
    Ok((w, skipped))
}

/// Register for OOM notifications of the memory cgroup `dir`: an eventfd
/// (`EFD_CLOEXEC | EFD_NONBLOCK`) and `memory.oom_control` written as `"<efd> <ofd>"` to
/// `cgroup.event_control`. Returns (eventfd, oom_control fd); keep both open. The eventfd
/// also fires when the cgroup is removed.
pub fn register_oom(dir: &Path) -> Result<(OwnedFd, OwnedFd), CgroupError> {
    // SAFETY: plain syscall.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(CgroupError::io(
            "eventfd for",
            dir,
            None,
            crate::sys::errno(),
        ));
    }
    // SAFETY: eventfd succeeded; the fd is ours.
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    let ofd = open_fd(&dir.join("memory.oom_control"), libc::O_RDONLY)?;
    let line = format!("{} {}", efd.as_raw_fd(), ofd.as_raw_fd());
    write_file(&dir.join("cgroup.event_control"), &line)?;
    Ok((efd, ofd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{IoMax, Size};
    use std::time::Duration;

    #[test]
    fn limits_become_v1_files_in_order() {
        let l = Limits {
            memory_max: Some(Size::Bytes(256 << 20)),
            memory_high: Some(Size::Bytes(200 << 20)),
            memory_swap_max: Some(Size::Bytes(64 << 20)),
            cpu_quota: Some(5_000),
            cpu_quota_period: Some(Duration::from_millis(20)),
            cpu_weight: Some(100),
            tasks_max: Some(Some(32)),
            io_weight: Some(10_000),
            io_max: vec![IoMax {
                device: "259:0".into(),
                rbps: None,
                wbps: Some(1 << 20),
                riops: Some(100),
                wiops: None,
            }],
        };
        let all = Controllers::parse_list("cpu io memory pids");
        let (w, skipped) = limit_writes(&l, all, 0).unwrap();
        assert!(skipped.is_empty());
        let got: Vec<String> = w
            .iter()
            .map(|x| format!("{}/{}={}", x.controller, x.file, x.value))
            .collect();
        assert_eq!(
            got,
            vec![
                "cpu/cpu.shares=2597",
                "cpu/cpu.cfs_period_us=20000",
                "cpu/cpu.cfs_quota_us=10000",
                "memory/memory.limit_in_bytes=268435456",
                "memory/memory.soft_limit_in_bytes=209715200",
                "memory/memory.memsw.limit_in_bytes=335544320",
                "pids/pids.max=32",
                "blkio/blkio.weight=1000",
                "blkio/blkio.throttle.write_bps_device=259:0 1048576",
                "blkio/blkio.throttle.read_iops_device=259:0 100",
            ]
        );
        let (_, skipped) = limit_writes(&l, Controllers::MEMORY, 0).unwrap();
        assert_eq!(skipped.len(), 5, "{skipped:?}");
    }

    #[test]
    fn weight_conversions_span_the_ranges() {
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(10_000), 262_144);
        assert_eq!(weight_to_blkio(1), 10);
        assert_eq!(weight_to_blkio(10_000), 1000);
    }

    #[test]
    fn io_max_device_paths_resolve_to_numbers() {
        assert_eq!(device_number("/dev/null").unwrap(), "1:3");
        assert!(device_number("/nonexistent").is_err());
    }
}
