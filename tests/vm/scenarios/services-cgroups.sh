# keel's services mode on pure cgroup v2, keel being the machine's PID 1: the main command of
# `keel --config services-cgroups.toml -- sh services-cgroups.sh`, started once every service
# is up, observes the services' cgroups. One "RESULT <name> PASS|FAIL <detail>" per check.
r() { if [ "$2" = 0 ]; then echo "RESULT $1 PASS $3"; else echo "RESULT $1 FAIL $3"; fi; }
cg=/sys/fs/cgroup
# st NAME: service NAME's object of `keel ctl status --json`, on one line.
st() { keel ctl status --json | tr '{' '\n' | grep "\"name\":\"$1\""; }
# NAME's FIELD in its status object (numbers and null bare, strings quoted).
field() { st "$1" | sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p"; }
# wait_for SECS COMMAND...: true as soon as COMMAND is, polling every 0.2 s.
wait_for() {
  n=$(($1 * 5)); shift
  until "$@"; do n=$((n - 1)); [ "$n" -gt 0 ] || return 1; sleep 0.2; done
}
# The pids whose command line contains $1.
procs() {
  for p in /proc/[0-9]*; do
    case $(tr '\0' ' ' 2>/dev/null < "$p/cmdline") in *"$1"*) echo "${p#/proc/}" ;; esac
  done
}
# A process's session id (field 6 of /proc/PID/stat; comm has no spaces here).
sid() { cut -d' ' -f6 "/proc/$1/stat"; }
now_cs() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }

# keel enabled the controllers below its cgroup, and every service started in its own. Below
# a namespace's root (VM_CGROUP=ns, a container's view) keel first moved itself into the leaf
# `init` (no internal processes); the machine's real root cgroup has no such rule and holds
# the kernel's threads, which cannot move: there keel stays where it is.
case $VM_CGROUP in ns) want=0::/init ;; *) want=0::/ ;; esac
[ "$(cat /proc/1/cgroup)" = "$want" ]; r keel-cgroup $? "$(cat /proc/1/cgroup), want $want"
if [ "$VM_CGROUP" = ns ]; then
  [ -z "$(cat $cg/cgroup.procs)" ] && grep -qx 1 $cg/init/cgroup.procs
  r keel-moved-into-init $? "base: $(tr '\n' ' ' < $cg/cgroup.procs), init: $(tr '\n' ' ' < $cg/init/cgroup.procs)"
fi
sc=$(cat $cg/cgroup.subtree_control)
for c in cpu memory pids; do
  case " $sc " in *" $c "*) true ;; *) false ;; esac; r "controller-$c-enabled" $? "$sc"
done
[ "$(cat /proc/self/cgroup)" = "0::/main" ]; r main-in-own-cgroup $? "$(cat /proc/self/cgroup)"
for s in steady hog bomb burner daemon; do
  pid=$(field $s pid)
  [ "$(cat /tmp/$s.cg 2>/dev/null)" = "0::/$s" ] && grep -qx "$pid" $cg/$s/cgroup.procs
  r "own-cgroup-$s" $? "started in $(cat /tmp/$s.cg 2>/dev/null), pid $pid"
done

# keel ctl status shows the cgroup figures (the table's last four columns: MEM CPU PIDS OOM).
keel ctl status
table=$(keel ctl status)
echo "$table" | head -n1 | grep -q 'MEM  *CPU  *PIDS  *OOM$'; r status-columns $? "$(echo "$table" | head -n1)"
row=$(echo "$table" | awk '$1 == "steady" { print $(NF-3), $(NF-2), $(NF-1), $NF }')
case " $row " in *" - "*|"  ") false ;; *) true ;; esac; r status-usage-steady $? "$row"
mem=$(field steady memory_bytes)
[ "$mem" -gt 0 ] && [ "$(field steady pids)" -ge 1 ] && [ "$(field steady oom_kills)" = 0 ]
r status-json-usage $? "$(st steady)"

# The memory hog is OOM-killed in its cgroup; keel and its neighbour live on; it restarts.
steady_pid=$(field steady pid)
hog_pid=$(field hog pid)
touch /tmp/hog.go
hog_restarted() { [ "$(field hog restarts)" -ge 1 ] && [ "$(field hog state)" = '"running"' ]; }
wait_for 30 hog_restarted; r hog-restarted $? "$(st hog)"
grep -q '^oom_kill [1-9]' /tmp/hog.events; r hog-memory-events-oom-kill $? "$(tr '\n' ' ' < /tmp/hog.events)"
dmesg | grep -q 'oom_memcg=[^,]*/hog,task_memcg=[^,]*/hog,task=dd,'
r hog-oom-in-its-cgroup $? "$(dmesg | grep -o 'oom-kill:.*' | head -n1)"
[ "$(field hog oom_kills)" -ge 1 ]; r hog-status-oom-kills $? "oom_kills $(field hog oom_kills)"
new_hog=$(field hog pid)
[ "$new_hog" != "$hog_pid" ] && grep -qx "$new_hog" $cg/hog/cgroup.procs \
  && [ "$(cat /tmp/hog.cg)" = "0::/hog" ] && [ "$(cat $cg/hog/memory.max)" = 33554432 ] \
  && [ "$(cat $cg/hog/memory.swap.max)" = 0 ]
r hog-new-run-in-new-cgroup $? "pid $hog_pid -> $new_hog, $(cat /tmp/hog.cg)"
[ "$(field steady pid)" = "$steady_pid" ] && [ "$(field steady state)" = '"running"' ]
r steady-survived-oom $? "pid $steady_pid -> $(field steady pid)"
[ "$(cat /proc/1/comm)" = keel ]; r keel-survived-oom $? ""

# The fork bomb stops at tasks-max: the kernel refused its forks for the limit (pids.events),
# and pids.current, sampled without forking all along (6.1 has no pids.peak), never went over.
bomb_pid=$(field bomb pid)
peak=0; hit=; now=0; t_end=$(($(now_cs) + 2000))
touch /tmp/bomb.go
while [ "$now" -lt "$t_end" ]; do
  read -r c < $cg/bomb/pids.current; [ "$c" -le "$peak" ] || peak=$c
  read -r _ max < $cg/bomb/pids.events
  read -r up _ < /proc/uptime; now=${up%.*}${up#*.}
  # Once the limit is hit, watch 2 s more.
  [ -n "$hit" ] || [ "$max" = 0 ] || { hit=$now; t_end=$((now + 200)); }
done
[ -n "$hit" ]; r bomb-pids-events-max $? "pids.events: $(cat $cg/bomb/pids.events)"
[ "$(cat $cg/bomb/pids.max)" = 16 ] && [ "$peak" -le 16 ] && [ "$peak" -gt 1 ]
r bomb-stopped-at-tasks-max $? "pids.current at most $peak, now $(cat $cg/bomb/pids.current), pids.max $(cat $cg/bomb/pids.max)"
[ "$(field bomb pid)" = "$bomb_pid" ] && [ "$(field bomb state)" = '"running"' ]
r bomb-main-alive $? "$(st bomb)"

# The CPU burner gets 20% of one CPU (cpu.stat usage_usec over ~3 s of wall time).
[ "$(cat $cg/burner/cpu.max)" = "20000 100000" ]; r burner-cpu-max $? "$(cat $cg/burner/cpu.max)"
u0=$(sed -n 's/^usage_usec //p' $cg/burner/cpu.stat); t0=$(now_cs)
sleep 3
u1=$(sed -n 's/^usage_usec //p' $cg/burner/cpu.stat); t1=$(now_cs)
pct=$(awk -v du=$((u1 - u0)) -v dt=$((t1 - t0)) 'BEGIN { printf "%.1f", du / (dt * 100) }')
awk -v p="$pct" 'BEGIN { exit !(p >= 15 && p <= 25) }'
r burner-20-percent $? "$pct% of one CPU ($((u1 - u0)) us in $((t1 - t0))0 ms)"

# The daemon left its session, but not its cgroup: stopping the service ends all of it.
d1=$(procs 'sleep 100001'); d2=$(procs 'sleep 100002'); dmain=$(field daemon pid)
[ -n "$d1" ] && [ -n "$d2" ] && grep -qx "$d1" $cg/daemon/cgroup.procs \
  && grep -qx "$d2" $cg/daemon/cgroup.procs && [ "$(sid "$d2")" != "$(sid "$dmain")" ]
r daemon-escaped-session $? "main $dmain (session $(sid "$dmain")), daemon $d1 $d2 (session $(sid "$d2"))"
keel ctl stop daemon; r daemon-ctl-stop $? ""
left() { procs 'sleep 100001'; procs 'sleep 100002'; [ ! -e "/proc/$dmain" ] || echo "$dmain"; }
daemon_gone() { [ -z "$(left)" ] && [ ! -e $cg/daemon ]; }
wait_for 15 daemon_gone
r daemon-gone $? "left: $(left | tr '\n' ' ')$(ls -d $cg/daemon 2>/dev/null)"

keel ctl status
exit 0
