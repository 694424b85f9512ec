# Boot check: keel is PID 1, cgroup v2 is mounted and behaves as a container's would.
# One "RESULT <name> PASS|FAIL <detail>" line per check (tests/vm.rs parses them).
r() { if [ "$2" = 0 ]; then echo "RESULT $1 PASS $3"; else echo "RESULT $1 FAIL $3"; fi; }
comm=$(cat /proc/1/comm)
[ "$comm" = keel ]; r pid1-is-keel $? "$comm"
fs=$(stat -f -c %t /sys/fs/cgroup)
[ "$fs" = 63677270 ]; r cgroup2-mounted $? "f_type 0x$fs"
ctrls=$(cat /sys/fs/cgroup/cgroup.controllers)
case " $ctrls " in *" memory "*) case " $ctrls " in *" pids "*) true ;; *) false ;; esac ;; *) false ;; esac; r controllers $? "$ctrls"
if mkdir /sys/fs/cgroup/vmcheck 2>/dev/null; then
  [ -e /sys/fs/cgroup/vmcheck/cgroup.kill ]; r cgroup-kill-file $? ""
  rmdir /sys/fs/cgroup/vmcheck; r cgroup-writable 0 ""
else
  r cgroup-writable 1 "mkdir failed"
fi
grep -q '^0::/$' /proc/self/cgroup; r in-root-cgroup $? "$(cat /proc/self/cgroup)"
