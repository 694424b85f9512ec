#!/bin/sh
# Boot Debian's kernel under QEMU (software emulation) with keel as the machine's PID 1 and
# real cgroup v2, run a scenario, and print what it printed (one "RESULT <name> PASS|FAIL ..."
# line per check) plus "VM keel-exit <code>" parsed from the kernel's final panic.
#
# Usage: tests/vm/run.sh KEEL_BINARY SCENARIO.sh [CONFIG.toml]
#   KEEL_BINARY  static (musl) or dynamic: a dynamic one is copied with its libraries (ldd).
#   SCENARIO.sh  run by keel as its command: keel [--config /etc/keel/keel.toml] -- sh /scenario.sh
#   CONFIG.toml  optional services config, installed as /etc/keel/keel.toml.
# Environment:
#   VM_CGROUP=rw|ro|none|ns  how /init mounts cgroup2 on /sys/fs/cgroup (default rw). ns is a
#                          container's view: /init moves into /sys/fs/cgroup/ctr (controllers
#                          delegated), enters a new cgroup namespace (util-linux unshare) and
#                          mounts cgroup2 again, so keel's cgroup is / there but not the root.
#                          The mode is exported to the scenario as VM_CGROUP.
#   VM_FILES="SRC:DST ..." extra executables/files to install (dynamic ones with their libs)
#   VM_TIMEOUT=secs (default 180), VM_MEM=MiB (default 512), VM_SMP (default 2),
#   KERNEL=/boot/vmlinuz-... (default: newest), VM_KEEP=1 keeps the work directory,
#   KEEL_ARGS="..." extra keel options.
# Exit status: 0 when at least one RESULT line and none FAIL; 1 otherwise; 77 when QEMU, the
# kernel, busybox or cpio is missing (the reason on stderr).
set -eu

keel=${1:?usage: run.sh KEEL_BINARY SCENARIO.sh [CONFIG.toml]}
scenario=${2:?usage: run.sh KEEL_BINARY SCENARIO.sh [CONFIG.toml]}
config=${3:-}

missing() { echo "vm: missing $1" >&2; exit 77; }
command -v qemu-system-x86_64 >/dev/null || missing "qemu-system-x86_64 (apt-get install qemu-system-x86)"
command -v cpio >/dev/null || missing "cpio (apt-get install cpio)"
KERNEL=${KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n1)}
[ -n "$KERNEL" ] && [ -r "$KERNEL" ] || missing "a kernel in /boot (apt-get install --no-install-recommends linux-image-amd64)"
BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || missing "busybox (apt-get install busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then missing "a static busybox (apt-get install busybox-static)"; fi

work=$(mktemp -d /tmp/keel-vm.XXXXXX)
[ "${VM_KEEP:-}" = 1 ] || trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin" "$root/sbin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" \
  "$root/run" "$root/etc/keel" "$root/root"
cp "$BUSYBOX" "$root/bin/busybox"

# install SRC DST: a file, plus the shared libraries of a dynamic executable.
install_file() {
  mkdir -p "$root$(dirname "$2")"
  cp "$1" "$root$2"
  chmod +x "$root$2" 2>/dev/null || true
  if ldd "$1" >/dev/null 2>&1; then
    ldd "$1" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | while read -r lib; do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  fi
}
install_file "$keel" /sbin/keel
cp "$scenario" "$root/scenario.sh"
keel_args=${KEEL_ARGS:-}
if [ -n "$config" ]; then
  cp "$config" "$root/etc/keel/keel.toml"
  keel_args="$keel_args --config /etc/keel/keel.toml"
fi
for f in ${VM_FILES:-}; do
  install_file "${f%%:*}" "${f#*:}"
done

cgns=
case ${VM_CGROUP:-rw} in
  rw) mount_cg='/bin/busybox mount -t cgroup2 none /sys/fs/cgroup' ;;
  ro) mount_cg='/bin/busybox mount -t cgroup2 -o ro none /sys/fs/cgroup' ;;
  none) mount_cg=':' ;;
  ns)
    # busybox's unshare has no --cgroup. Without --fork it execs in place: keel stays PID 1.
    unshare=$(command -v unshare || true)
    [ -n "$unshare" ] && "$unshare" --help 2>&1 | grep -q -e '--cgroup' \
      || missing "util-linux unshare with --cgroup (apt-get install util-linux)"
    install_file "$unshare" /usr/bin/unshare
    mount_cg='/bin/busybox mount -t cgroup2 none /sys/fs/cgroup
/bin/busybox mkdir /sys/fs/cgroup/ctr
echo "+cpu +io +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
echo $$ > /sys/fs/cgroup/ctr/cgroup.procs
/bin/busybox umount /sys/fs/cgroup'
    # In the new namespace, cgroup2 mounted again has ctr as its root.
    cat > "$root/cgns-exec" <<'CGNS'
#!/bin/busybox sh
/bin/busybox mount -t cgroup2 none /sys/fs/cgroup || exit 1
exec "$@"
CGNS
    chmod +x "$root/cgns-exec"
    cgns='/usr/bin/unshare --cgroup /cgns-exec'
    ;;
  *) echo "vm: VM_CGROUP must be rw, ro, none or ns" >&2; exit 2 ;;
esac

# /init mounts what a container runtime would, then becomes keel (exec keeps PID 1).
cat > "$root/init" <<INIT
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
/bin/busybox mount -t tmpfs tmp /tmp
/bin/busybox --install -s /bin
$mount_cg
export PATH=/bin:/sbin HOME=/root VM_CGROUP=${VM_CGROUP:-rw}
echo "VM booted: \$(uname -r), cgroup mount: ${VM_CGROUP:-rw}"
exec $cgns /sbin/keel $keel_args -- /bin/sh /scenario.sh
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

out=$work/console.log
set +e
timeout "${VM_TIMEOUT:-180}" qemu-system-x86_64 -accel tcg -m "${VM_MEM:-512}" \
  -smp "${VM_SMP:-2}" -nographic -no-reboot -net none -monitor none -serial stdio \
  -display none -kernel "$KERNEL" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 quiet loglevel=3 cgroup_no_v1=all panic=-1" </dev/null >"$out" 2>&1
qemu=$?
set -e
# The console without terminal escapes and without the kernel's panic backtrace.
tr -d '\r' < "$out" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/^c//' \
  | grep -v -e '^\s*$' -e '^\[ *[0-9]*\.[0-9]*\] [^K]' || true
code=$(tr -d '\r' < "$out" | sed -n 's/.*Attempted to kill init! exitcode=0x\([0-9a-f]*\).*/\1/p' | head -n1)
if [ -n "$code" ]; then
  echo "VM keel-exit $(( (0x$code >> 8) & 255 ))"
elif [ "$qemu" = 124 ]; then
  echo "VM timeout after ${VM_TIMEOUT:-180}s"
fi
results=$(tr -d '\r' < "$out" | grep -c '^RESULT ' || true)
fails=$(tr -d '\r' < "$out" | grep -c '^RESULT .* FAIL' || true)
[ "$results" -gt 0 ] && [ "$fails" -eq 0 ]
