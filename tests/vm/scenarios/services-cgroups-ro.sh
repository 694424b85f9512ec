# keel's services mode with cgroup2 mounted read-only (VM_CGROUP=ro: a default Docker or
# Kubernetes container) and `cgroups = "auto"`: the services run without cgroups. The Rust
# test checks keel's one warning line on the console; with `cgroups = "required"` keel refuses
# before anything starts, so this never runs (no RESULT line at all).
r() { if [ "$2" = 0 ]; then echo "RESULT $1 PASS $3"; else echo "RESULT $1 FAIL $3"; fi; }
st() { keel ctl status --json | tr '{' '\n' | grep "\"name\":\"$1\""; }
field() { st "$1" | sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p"; }
grep -q ' /sys/fs/cgroup cgroup2 ro' /proc/mounts; r cgroup2-read-only $? "$(grep cgroup2 /proc/mounts)"
keel ctl status
pid=$(field worker pid)
[ "$(field worker state)" = '"running"' ] && [ -n "$pid" ] && [ -e "/proc/$pid" ]
r worker-runs $? "$(st worker)"
# Everything stayed in the (read-only) root cgroup; no figures without a cgroup.
[ "$(cat /proc/1/cgroup)" = 0::/ ] && [ "$(cat "/proc/$pid/cgroup")" = 0::/ ] \
  && [ "$(cat /proc/self/cgroup)" = 0::/ ]
r no-service-cgroups $? "keel $(cat /proc/1/cgroup), worker $(cat "/proc/$pid/cgroup")"
[ "$(field worker memory_bytes)" = null ] && [ "$(field worker oom_kills)" = null ]
r no-cgroup-figures $? "$(st worker)"
grep -q '^worker-started$' /tmp/worker.out; r worker-output $? "$(cat /tmp/worker.out)"
exit 0
