# With cgroup2 mounted read-only (a default Docker/Kubernetes container), creation fails with EROFS.
r() { if [ "$2" = 0 ]; then echo "RESULT $1 PASS $3"; else echo "RESULT $1 FAIL $3"; fi; }
grep -q ' /sys/fs/cgroup cgroup2 ro' /proc/mounts; r cgroup2-read-only $? "$(grep cgroup2 /proc/mounts)"
if mkdir /sys/fs/cgroup/vmcheck 2>/dev/null; then r mkdir-refused 1 "mkdir succeeded"; else r mkdir-refused 0 ""; fi
