//! What the host offers: cgroup v2, v1 or hybrid (`statfs`), keel's own cgroup in each
//! hierarchy (`/proc/self/cgroup` against `/proc/self/mountinfo`), writability, delegated
//! controllers, foreign processes in keel's cgroup; and the problem texts with their fixes.
//!
//! Must not: write anything. Parsing is pure (strings in, paths out) so fixtures can test it.

use super::{Controllers, Problem, read_file};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The v1 controller names (mount options that are not controllers are ignored).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// How cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// cgroup2 at `/sys/fs/cgroup`.
    Unified,
    /// v1 controllers under a tmpfs, cgroup2 at `/sys/fs/cgroup/unified`.
    Hybrid,
    /// v1 only.
    Legacy,
    /// Nothing usable mounted.
    None,
}

/// One v1 hierarchy with keel's cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// The controllers bound to it (`["cpu", "cpuacct"]`).
    pub controllers: Vec<String>,
    /// keel's own cgroup directory in it (services go beneath).
    pub dir: PathBuf,
    /// Mounted (or the directory) read-only.
    pub read_only: bool,
}

impl V1Hierarchy {
    /// Whether keel creates service cgroups in this hierarchy.
    pub fn is_used(&self) -> bool {
        self.controllers.iter().any(|c| {
            matches!(
                c.as_str(),
                "memory" | "cpu" | "cpuacct" | "pids" | "blkio" | "freezer"
            )
        })
    }
}

/// The result of probing the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// v2, v1, hybrid or none.
    pub kind: Kind,
    /// keel's own cgroup in the unified hierarchy (`B`), with a trailing `/init` (keel's own
    /// leaf, from an earlier run or exec) stripped.
    pub unified: Option<PathBuf>,
    /// `B` is the real root cgroup (no `cgroup.type`): exempt from the internal-process rule.
    pub unified_is_root: bool,
    /// The unified mount is read-only.
    pub unified_read_only: bool,
    /// keel's cgroups in the v1 hierarchies.
    pub v1: Vec<V1Hierarchy>,
    /// Controllers usable: v2 `B/cgroup.controllers`; v1 writable hierarchies.
    pub available: Controllers,
    /// `B/cgroup.procs` lists `0`: a process outside keel's PID namespace shares its cgroup.
    pub foreign: bool,
    /// `B` is not writable by keel (`access(W_OK)`), e.g. a user namespace without delegation.
    pub unified_denied: bool,
}

fn statfs_type(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string, st a valid buffer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_type as i64)
}

/// `statvfs(path).f_flag & ST_RDONLY`.
fn read_only(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string, st a valid buffer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    st.f_flag & libc::ST_RDONLY != 0
}

fn writable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// The kind of setup from `statfs` of `root` (normally `/sys/fs/cgroup`).
pub fn kind_at(root: &Path) -> Kind {
    match statfs_type(root) {
        Some(CGROUP2_SUPER_MAGIC) => Kind::Unified,
        Some(TMPFS_MAGIC) => {
            if statfs_type(&root.join("unified")) == Some(CGROUP2_SUPER_MAGIC) {
                Kind::Hybrid
            } else {
                Kind::Legacy
            }
        }
        _ => Kind::None,
    }
}

/// A cgroup mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// The cgroup path of the mount's root (`/` normally; other under a bind mount).
    pub root: String,
    /// `true` for cgroup2.
    pub v2: bool,
    /// v1 controllers (from the super options).
    pub controllers: Vec<String>,
}

/// The cgroup mounts in a `/proc/self/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut v = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (l.get(3), l.get(4), r.first()) else {
            continue;
        };
        let v2 = *fstype == "cgroup2";
        if !v2 && *fstype != "cgroup" {
            continue;
        }
        let controllers = if v2 {
            Vec::new()
        } else {
            r.get(2)
                .map(|o| {
                    o.split(',')
                        .filter(|x| V1_CONTROLLERS.contains(x))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        v.push(Mount {
            point: PathBuf::from(unescape(point)),
            root: unescape(root),
            v2,
            controllers,
        });
    }
    v
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b.get(i) == Some(&b'\\')
            && let Some(oct) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        if let Some(c) = b.get(i) {
            out.push(*c);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/self/cgroup` lines: (controllers, path); the unified line has no controllers.
pub fn parse_self_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let c = ctrls
                .split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect();
            Some((c, path.to_owned()))
        })
        .collect()
}

/// The directory of cgroup `path` under `mount` (`None` when the path is outside the mount,
/// e.g. `/..` paths of a cgroup namespace).
fn dir_under(mount: &Mount, path: &str) -> Option<PathBuf> {
    if path.starts_with("/..") {
        return None;
    }
    let rel = if mount.root == "/" {
        path
    } else {
        let r = path.strip_prefix(mount.root.as_str())?;
        if !(r.is_empty() || r.starts_with('/')) {
            return None;
        }
        r
    };
    Some(mount.point.join(rel.trim_start_matches('/')))
}

impl Detection {
    /// Probe this process's view of `/sys/fs/cgroup`.
    pub fn probe() -> Detection {
        let root = Path::new("/sys/fs/cgroup");
        let kind = kind_at(root);
        let self_cg = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Detection::from_parts(root, kind, &self_cg, &mi)
    }

    /// Build a detection from the kind, `/proc/self/cgroup` and mountinfo texts; the files
    /// under the resolved directories are read (controllers, procs, type).
    pub fn from_parts(root: &Path, kind: Kind, self_cgroup: &str, mountinfo: &str) -> Detection {
        let mounts = parse_mountinfo(mountinfo);
        let lines = parse_self_cgroup(self_cgroup);
        let mut det = Detection {
            kind,
            unified: None,
            unified_is_root: false,
            unified_read_only: false,
            v1: Vec::new(),
            available: Controllers::NONE,
            foreign: false,
            unified_denied: false,
        };
        if kind == Kind::None {
            return det;
        }
        let upoint = if kind == Kind::Unified {
            root.to_path_buf()
        } else {
            root.join("unified")
        };
        let umount = mounts
            .iter()
            .find(|m| m.v2 && m.point == upoint)
            .cloned()
            .unwrap_or(Mount {
                point: upoint.clone(),
                root: "/".into(),
                v2: true,
                controllers: Vec::new(),
            });
        if kind != Kind::Legacy
            && let Some((_, p)) = lines.iter().find(|(c, _)| c.is_empty())
            && let Some(mut b) = dir_under(&umount, p)
        {
            // keel's own leaf from an earlier run (exec of keel, or a restart of the
            // container's init process) is not keel's base.
            if b.file_name().is_some_and(|n| n == "init") && b != upoint {
                b.pop();
            }
            det.unified_is_root = !b.join("cgroup.type").exists();
            det.unified_read_only = read_only(&b);
            det.unified_denied = !det.unified_read_only && !writable(&b);
            if kind == Kind::Unified {
                det.available = read_file(&b.join("cgroup.controllers"))
                    .map(|t| Controllers::parse_list(&t))
                    .unwrap_or_default();
            }
            det.foreign = read_file(&b.join("cgroup.procs"))
                .map(|t| t.lines().any(|l| l.trim() == "0"))
                .unwrap_or(false);
            det.unified = Some(b);
        }
        if kind == Kind::Unified {
            return det;
        }
        for (ctrls, path) in &lines {
            if ctrls.is_empty() || ctrls.iter().any(|c| c.starts_with("name=")) {
                continue;
            }
            let Some(m) = mounts.iter().find(|m| {
                !m.v2
                    && m.controllers.len() == ctrls.len()
                    && ctrls.iter().all(|c| m.controllers.contains(c))
            }) else {
                continue;
            };
            let Some(dir) = dir_under(m, path) else {
                continue;
            };
            let ro = read_only(&dir) || !writable(&dir);
            if !ro {
                for c in ctrls {
                    det.available = det.available
                        | match c.as_str() {
                            "memory" => Controllers::MEMORY,
                            "cpu" => Controllers::CPU,
                            "pids" => Controllers::PIDS,
                            "blkio" => Controllers::IO,
                            _ => Controllers::NONE,
                        };
                }
            }
            det.v1.push(V1Hierarchy {
                controllers: ctrls.clone(),
                dir,
                read_only: ro,
            });
        }
        det
    }

    /// The one summary line logged at start.
    pub fn summary(&self) -> String {
        let kind = match self.kind {
            Kind::Unified => "v2",
            Kind::Hybrid => "hybrid (v1 + unified)",
            Kind::Legacy => "v1",
            Kind::None => "not mounted",
        };
        let mut s = format!("cgroups: {kind}");
        if let Some(u) = &self.unified {
            let state = if self.unified_read_only {
                "read-only"
            } else if self.unified_denied {
                "not writable"
            } else {
                "writable"
            };
            s.push_str(&format!(", keel's cgroup {} ({state}", u.display()));
            if self.unified_is_root {
                s.push_str(", root");
            }
            if self.foreign {
                s.push_str(", shared with processes outside keel's PID namespace");
            }
            s.push(')');
        }
        if !self.v1.is_empty() {
            let w = self.v1.iter().filter(|h| !h.read_only).count();
            s.push_str(&format!(
                ", {w} of {} v1 hierarchies writable",
                self.v1.len()
            ));
        }
        s.push_str(&format!(", controllers available: {}", self.available));
        s
    }

    /// Why cgroups cannot be used at all here, if so.
    pub fn problem(&self) -> Option<Problem> {
        match self.kind {
            Kind::None => Some(not_mounted()),
            Kind::Unified => {
                let b = self.unified.as_ref()?;
                if self.unified_read_only {
                    Some(Problem {
                        cause: format!("{} is read-only (cgroup2)", b.display()),
                        fix: RW_FIX.into(),
                        partial: false,
                    })
                } else if self.unified_denied {
                    Some(denied(b))
                } else {
                    None
                }
            }
            Kind::Hybrid | Kind::Legacy => {
                if self.v1.iter().all(|h| h.read_only) {
                    Some(Problem {
                        cause: "the cgroup v1 hierarchies under /sys/fs/cgroup are read-only \
                                or not writable (cgroup v1 host)"
                            .into(),
                        fix: "docker run --privileged (or podman run --privileged); v1 has \
                              no safe delegation to containers, a cgroup v2 host is the real fix"
                            .into(),
                        partial: false,
                    })
                } else {
                    None
                }
            }
        }
    }
}

const RW_FIX: &str = "docker run --security-opt writable-cgroups=true (Docker >= 28) or \
    --privileged | podman run --security-opt unmask=/sys/fs/cgroup | containerd >= 2.1 \
    runtime option cgroup_writable = true | CRI-O pod annotation \
    cgroup2-mount-hierarchy-rw.crio.io=\"true\" | Kubernetes has no API for it yet (KEP-5474); \
    keep the default private cgroup namespace (--cgroupns=private), never bind-mount the \
    host's /sys/fs/cgroup";

/// cgroup2 is not mounted at all.
pub fn not_mounted() -> Problem {
    Problem {
        cause: "no cgroup filesystem at /sys/fs/cgroup".into(),
        fix: "let the container runtime mount it (its default), or mount -t cgroup2 none \
              /sys/fs/cgroup before keel starts"
            .into(),
        partial: false,
    }
}

fn denied(b: &Path) -> Problem {
    Problem {
        cause: format!(
            "{} is not writable by keel (permission denied)",
            b.display()
        ),
        fix: "run keel as root in the container, or use a user namespace the runtime \
              delegates the cgroup to (writable cgroupfs + private cgroup namespace: runc \
              chowns it); with SELinux, setsebool -P container_manage_cgroup on"
            .into(),
        partial: false,
    }
}

/// Setting up keel's leaf or the controllers failed (`e`).
pub(super) fn setup_failed(e: &super::CgroupError) -> Problem {
    if matches!(e.errno(), libc::EACCES | libc::EPERM | libc::EROFS) {
        let mut p = denied(Path::new("keel's cgroup"));
        p.cause = format!("cannot set up keel's cgroup: {e}");
        return p;
    }
    Problem {
        cause: format!("cannot set up keel's cgroup: {e}"),
        fix: "report this with the output of cat /proc/self/cgroup /proc/self/mountinfo".into(),
        partial: false,
    }
}

/// A process outside keel's PID namespace keeps keel's cgroup an internal node.
pub(super) fn foreign() -> Problem {
    Problem {
        cause: "a process outside keel's PID namespace shares keel's cgroup (cgroup.procs \
                lists 0), so controllers cannot be enabled for the services"
            .into(),
        fix: "make keel the container's first process, and give the container its own cgroup \
              (docker run --cgroupns=private, the default on cgroup v2; do not share a pod \
              cgroup with other containers' processes)"
            .into(),
        partial: false,
    }
}

/// Controllers the services need are not delegated.
pub(super) fn missing_controllers(
    det: &Detection,
    missing: Controllers,
    enabled: Controllers,
) -> Problem {
    let fix = match det.kind {
        Kind::Unified => {
            "the parent cgroup must enable them in its cgroup.subtree_control: Docker and Podman \
             do for a container; under systemd use Delegate=yes; rootless Podman/Docker \
             delegate only memory and pids unless systemd's user@.service is given \
             Delegate=cpu cpuset io memory pids"
        }
        _ => {
            "mount the missing v1 controllers writable (docker run --privileged), or use a \
             cgroup v2 host"
        }
    };
    Problem {
        cause: format!("controllers \"{missing}\" are not available (enabled: \"{enabled}\")"),
        fix: fix.into(),
        partial: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MI: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 /sub /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 31 0:36 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,nosuid,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_controllers_and_roots() {
        let m = parse_mountinfo(HYBRID_MI);
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].controllers, vec!["cpu"]);
        assert_eq!(m[2].root, "/sub");
        assert_eq!(m[3].controllers, vec!["cpu", "cpuacct"]);
        assert!(m[4].controllers.is_empty(), "{:?}", m[4]);
        assert!(m[5].v2);
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn self_cgroup_paths_resolve_under_mount_roots() {
        let lines = parse_self_cgroup("4:memory:/a/b\n8:pids:/sub/x\n0::/\n1:name=systemd:/\n");
        assert_eq!(lines[0], (vec!["memory".to_string()], "/a/b".to_string()));
        assert_eq!(lines[2], (vec![], "/".to_string()));
        let m = parse_mountinfo(HYBRID_MI);
        assert_eq!(
            dir_under(&m[2], "/sub/x"),
            Some(PathBuf::from("/sys/fs/cgroup/pids/x"))
        );
        assert_eq!(dir_under(&m[2], "/other"), None);
        assert_eq!(dir_under(&m[2], "/subx"), None);
        assert_eq!(dir_under(&m[5], "/../escaped"), None);
        assert_eq!(
            dir_under(&m[1], "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/a/b"))
        );
    }

    #[test]
    fn this_host_is_detected() {
        // Whatever the host: a probe never panics, and its summary names the kind.
        let d = Detection::probe();
        let s = d.summary();
        assert!(s.starts_with("cgroups: "), "{s}");
        if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
            && kind_at(Path::new("/sys/fs/cgroup")) == Kind::Hybrid
        {
            assert_eq!(d.kind, Kind::Hybrid);
            assert!(d.unified.is_some(), "{d:?}");
            assert!(d.v1.iter().any(|h| h.controllers == ["memory"]), "{d:?}");
        }
    }
}
