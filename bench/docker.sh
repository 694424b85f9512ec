#!/usr/bin/env bash
# bench/docker.sh: keel vs tini-static as Docker's `--init` (dockerd --init-path), side by side, in one run.
#
#   bash bench/docker.sh                              # builds keel's static musl binary first
#   KEEL=/path/to/keel bash bench/docker.sh           # use that binary (no build)
#   STOP_ROUNDS=3 NOINIT_STOP_ROUNDS=1 RUNS=6 WARMUP=2 RUN_ROUNDS=2 bash bench/docker.sh   # smoke run
#
# Starts two private dockerd daemons side by side (no registry needed, nothing of the host's Docker
# touched): one with --init-path=keel, one with --init-path=tini-static, each with its own data root,
# exec root, pidfile, socket, containerd, containerd namespace and a cgroup parent beneath this
# process's own cgroups. Imports a busybox-static base image into both, then measures, interleaved:
#   1. `docker stop` latency: CMD `sleep 1000` (dies on TERM) and CMD `sh` with a TERM trap, under
#      --init (keel, tini-static) and without any init (the reference showing why an init matters);
#   2. `docker run --rm IMG true` with --init (keel, tini-static) and without --init (hyperfine).
# Prints a Markdown report on stdout and writes it to bench/docker-results.md; progress goes to
# stderr. Needs root; installs docker.io, busybox-static, hyperfine, tini with apt if missing.
# Everything it starts or creates (daemons, containers, mounts, cgroups, scratch dir) is removed
# on exit, error, Ctrl-C or SIGTERM. See bench/README.md ("Docker") for what the numbers mean.
#
# Knobs (environment variables, defaults in brackets):
#   KEEL            binary for the keel column; if unset, `cargo build --release --target
#                   x86_64-unknown-linux-musl` is run and target/x86_64-unknown-linux-musl/release/keel used
#   STOP_ROUNDS [20]        `docker stop` samples per init and per CMD (median and p90 reported)
#   NOINIT_STOP_ROUNDS [3]  samples of the no-init `sleep` row (each one waits NOINIT_STOP_T seconds)
#   NOINIT_STOP_T [2]       `docker stop -t` for that row (Docker's default, 10 s, would be what users see)
#   SETTLE [0.2]            seconds to wait after the CMD is running before `docker stop` is timed
#   RUNS [60]       hyperfine runs per `docker run` command (total); below 30 the report is a smoke run
#   WARMUP [6]      hyperfine warm-up runs per command (total)
#   RUN_ROUNDS [6]  RUNS and WARMUP are spread over this many hyperfine calls, commands shuffled in each
#   RESULTS [bench/docker-results.md]   where to write the report
#   NO_INSTALL=1    never call apt-get (fail if something is missing)

set -euo pipefail
shopt -s nullglob

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
START_EPOCH=$EPOCHREALTIME

STOP_ROUNDS=${STOP_ROUNDS:-20}
NOINIT_STOP_ROUNDS=${NOINIT_STOP_ROUNDS:-3}
NOINIT_STOP_T=${NOINIT_STOP_T:-2}
SETTLE=${SETTLE:-0.2}
RUNS=${RUNS:-60}
WARMUP=${WARMUP:-6}
RUN_ROUNDS=${RUN_ROUNDS:-6}
RESULTS=${RESULTS:-$BENCH_DIR/docker-results.md}
NO_INSTALL=${NO_INSTALL:-0}
MUSL_TARGET=x86_64-unknown-linux-musl
IMG=keel-bench-base:latest

BENCH_TAG=docker-bench
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
bench_cmdline KEEL STOP_ROUNDS NOINIT_STOP_ROUNDS NOINIT_STOP_T SETTLE RUNS WARMUP RUN_ROUNDS RESULTS NO_INSTALL -- "$@"
bench_args "$@"
need_root "it starts dockerd, creates cgroups and installs packages with apt-get"
positive_ints STOP_ROUNDS NOINIT_STOP_ROUNDS NOINIT_STOP_T RUNS WARMUP RUN_ROUNDS
[[ $SETTLE =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SETTLE must be a number of seconds, got '$SETTLE'"
(( NOINIT_STOP_ROUNDS <= STOP_ROUNDS )) || NOINIT_STOP_ROUNDS=$STOP_ROUNDS
SMOKE=0
(( RUNS >= 30 && STOP_ROUNDS >= 10 )) || { SMOKE=1; log "WARNING: RUNS=$RUNS (< 30) or STOP_ROUNDS=$STOP_ROUNDS (< 10): smoke run, numbers not meaningful"; }

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d /tmp/keel-docker-bench.XXXXXX)
chmod 755 "$WORK"
# Unique to this run: names the cgroup parent and the containerd namespaces.
TAG="keel-dbench-${WORK##*.}"
DAEMONS=(keel tini-static)   # one dockerd per init; the no-init runs use both, alternately

# ---------------------------------------------------------------------------------------------
# Cleanup. Daemons are stopped by pid (SIGTERM, wait up to 30 s, then SIGKILL) after their
# containers are removed; then, as a last resort, any process whose command line names our
# scratch dir (containerd, shims: they are ours, the dir is unique) is SIGKILLed by pid; mounts
# below the scratch dir are detached; the cgroup dirs under TAG are removed; the dir is removed.
# ---------------------------------------------------------------------------------------------
descendants() { local p=$1 c f; for f in /proc/"$p"/task/*/children; do for c in $(cat "$f" 2>/dev/null); do echo "$c"; descendants "$c"; done; done; }
CG_OURS=0   # 1 once we know the cgroup dirs under TAG did not exist before us (only then are they removed)
HF_PID=""   # the running hyperfine (in the background, so that a signal's trap runs at once)
declare -A DPID=() INIT=() VERSION=() INFO_INIT=() PREFLIGHT=() STOP_MS=() STOP_RC=() R=() RS=() RUN_CMD=()
DOCKER_CLI=""
sock() { echo "$WORK/d-$1/docker.sock"; }
# the docker CLI bound to one of our daemons; dkt: the same with a time limit
dk() { local d=$1; shift; "$DOCKER_CLI" --config "$WORK/client" -H "unix://$(sock "$d")" "$@"; }
dkt() { local t=$1 d=$2; shift 2; timeout "$t" "$DOCKER_CLI" --config "$WORK/client" -H "unix://$(sock "$d")" "$@"; }

# "<hierarchy mount point><our own cgroup path>/TAG" for every cgroup hierarchy (v1 and v2)
cgroup_dirs() {
    awk -v tag="$TAG" '
        FNR == NR { split($0, h, " - "); split(h[1], pre, " "); split(h[2], post, " ")
                    if (post[1] == "cgroup" || post[1] == "cgroup2") { mp[++n] = pre[5]; ty[n] = post[1]; op[n] = "," post[3] "," }
                    next }
        { i = index($0, ":"); rest = substr($0, i + 1); j = index(rest, ":")
          ctrls = substr(rest, 1, j - 1); path = substr(rest, j + 1); sub(/\/$/, "", path)
          for (k = 1; k <= n; k++) {
              if (ctrls == "") { if (ty[k] != "cgroup2") continue }
              else { if (ty[k] != "cgroup") continue
                     m = split(ctrls, c, ","); ok = 1
                     for (x = 1; x <= m; x++) if (index(op[k], "," c[x] ",") == 0) ok = 0
                     if (!ok) continue }
              print mp[k] path "/" tag; break } }' /proc/self/mountinfo /proc/self/cgroup
}
# pids of processes (not this shell) whose command line contains our scratch dir
our_leftovers() {
    local f p
    for f in /proc/[0-9]*/cmdline; do
        p=${f#/proc/}; p=${p%/cmdline}
        [[ $p == "$$" || $p == "$BASHPID" ]] && continue
        if [[ $(tr '\0' ' ' 2>/dev/null <"$f") == *"$WORK"* ]]; then echo "$p"; fi
    done
    return 0
}
mounts_under() { awk -v d="$WORK" '$5 == d || index($5, d "/") == 1 { print length($5), $5 }' /proc/self/mountinfo | sort -rn | cut -d' ' -f2-; }
stop_daemons() {
    local d p i ids
    for d in "${!DPID[@]}"; do
        p=${DPID[$d]}
        kill -0 "$p" 2>/dev/null || continue
        ids=$(dkt 20 "$d" ps -aq 2>/dev/null || true)
        if [[ -n "$ids" ]]; then
            log "removing containers left on the $d daemon: $(echo $ids)"
            dkt 60 "$d" rm -f $ids >/dev/null 2>&1 || true
        fi
    done
    for d in "${!DPID[@]}"; do kill -TERM "${DPID[$d]}" 2>/dev/null || true; done
    for d in "${!DPID[@]}"; do
        p=${DPID[$d]}
        for ((i = 0; i < 300; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$p" 2>/dev/null; then log "dockerd ($d, pid $p) ignored SIGTERM for 30 s: SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
        wait "$p" 2>/dev/null || true
        unset "DPID[$d]"
    done
}
teardown() {
    local p i m left c below
    if [[ -n $HF_PID ]] && kill -0 "$HF_PID" 2>/dev/null; then
        below=$(descendants "$HF_PID")
        log "cleanup: stopping hyperfine (pid $HF_PID) and the docker CLI it runs ($(echo $below))"
        for p in $below; do kill -KILL "$p" 2>/dev/null || true; done
        kill -KILL "$HF_PID" 2>/dev/null || true
        wait "$HF_PID" 2>/dev/null || true
        HF_PID=""
    fi
    [[ -n $DOCKER_CLI ]] && stop_daemons
    left=$(our_leftovers)
    if [[ -n "$left" ]]; then
        log "cleanup: SIGKILL leftover processes of this run: $(for p in $left; do printf '%s(%s) ' "$p" "$(cat /proc/$p/comm 2>/dev/null)"; done)"
        for p in $left; do kill -KILL "$p" 2>/dev/null || true; done
        sleep 0.3
    fi
    for ((i = 0; i < 3; i++)); do
        m=$(mounts_under)
        [[ -z "$m" ]] && break
        while IFS= read -r p; do umount -l "$p" 2>/dev/null || true; done <<<"$m"
    done
    for c in $(cgroup_dirs); do
        [[ $CG_OURS == 1 && -d $c ]] || continue
        for ((i = 0; i < 50; i++)); do
            find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [[ -d $c ]] || break
            sleep 0.1
        done
        if [[ -d $c ]]; then log "cleanup: could not remove cgroup $c"; fi
    done
    if [[ -e $WORK ]]; then rm -rf "$WORK" 2>/dev/null || { sleep 1; rm -rf "$WORK" || log "cleanup: could not remove $WORK"; }; fi
    return 0
}
cleanup() { local rc=$?; trap - EXIT; teardown; exit "$rc"; }
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Small helpers (times in ms)
# ---------------------------------------------------------------------------------------------
# stats of the numbers on stdin: median p90 mean stddev min max count (p90: nearest rank)
stats() {
    sort -g | awk '{ a[NR] = $1; s += $1; q += $1 * $1 } END {
        if (NR == 0) { print "NaN NaN NaN NaN NaN NaN 0"; exit }
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        r = int(0.9 * NR); if (r < 0.9 * NR) r++; if (r < 1) r = 1
        mean = s / NR; v = q / NR - mean * mean; if (v < 0) v = 0
        printf "%.6f %.6f %.6f %.6f %.6f %.6f %d\n", m, a[r], mean, sqrt(v), a[1], a[NR], NR }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || a == "" || b == "") print "—";
    else if (b == 0) print (a == 0 ? "1.00" : "∞"); else printf "%.2f\n", a / b }'; }
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }'; }

# ---------------------------------------------------------------------------------------------
# 1. Tools (Debian packages). /usr/bin/docker is Debian's 20.10 client, matching the daemon; a
#    newer client elsewhere on PATH works too but is not what dockerd 20.10 was tested with.
# ---------------------------------------------------------------------------------------------
need_pkgs=()
command -v dockerd >/dev/null || [[ -x /usr/sbin/dockerd ]] || need_pkgs+=(docker.io)
[[ -x /usr/bin/docker ]] || command -v docker >/dev/null || need_pkgs+=(docker.io)
command -v runc >/dev/null || [[ -x /usr/sbin/runc ]] || need_pkgs+=(runc)
[[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1 || need_pkgs+=(busybox-static)
[[ -x /usr/bin/tini-static ]] || need_pkgs+=(tini)
command -v hyperfine >/dev/null || need_pkgs+=(hyperfine)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
command -v tar >/dev/null || need_pkgs+=(tar)
if (( ${#need_pkgs[@]} )); then
    mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
    apt_install "${need_pkgs[@]}"
fi
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
DOCKERD=$(command -v dockerd) || die "dockerd not found after installation"
if [[ -x /usr/bin/docker ]]; then DOCKER_CLI=/usr/bin/docker; else DOCKER_CLI=$(command -v docker) || die "docker CLI not found"; fi
BUSYBOX=/bin/busybox
for t in hyperfine setpriv tar runc containerd sha256sum shuf; do command -v "$t" >/dev/null || die "'$t' not found"; done
export DOCKER_BUILDKIT=0 DOCKER_CLI_HINTS=false
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
mkdir -p "$WORK/client"

# ---------------------------------------------------------------------------------------------
# 2. keel (and the copies of both inits that the daemons bind-mount as /sbin/docker-init)
# ---------------------------------------------------------------------------------------------
if [[ -n "${KEEL:-}" ]]; then
    [[ -f "$KEEL" && -x "$KEEL" ]] || die "KEEL=$KEEL is not an executable file"
    KEEL_SRC=$(readlink -f "$KEEL")
    log "keel: KEEL=$KEEL_SRC (not building)"
else
    command -v cargo >/dev/null || die "cargo not found (install Rust, or set KEEL=/path/to/keel)"
    if ! [[ $'\n'$(rustup target list --installed 2>/dev/null || true)$'\n' == *$'\n'"$MUSL_TARGET"$'\n'* ]]; then
        command -v rustup >/dev/null || die "no rustup to add the $MUSL_TARGET target (or set KEEL=/path/to/keel)"
        log "rustup target add $MUSL_TARGET"
        rustup target add "$MUSL_TARGET" >"$WORK/rustup.log" 2>&1 || { cat "$WORK/rustup.log" >&2; die "rustup target add failed"; }
    fi
    log "building keel: cargo build --release --target $MUSL_TARGET"
    (cd "$REPO" && cargo build --release --target "$MUSL_TARGET" --bin keel) >"$WORK/cargo.log" 2>&1 ||
        { tail -n 30 "$WORK/cargo.log" >&2; die "building keel failed (or set KEEL=/path/to/keel)"; }
    KEEL_SRC="$REPO/target/$MUSL_TARGET/release/keel"
    [[ -x "$KEEL_SRC" ]] || die "build succeeded but $KEEL_SRC is missing"
fi
# dockerd bind-mounts the --init-path file into every container: copies in the scratch dir keep a
# rebuild during the run from changing what is measured. Absolute paths, as dockerd needs.
mkdir -p "$WORK/bin"
cp "$KEEL_SRC" "$WORK/bin/keel"
cp /usr/bin/tini-static "$WORK/bin/tini-static"
INIT[keel]=$WORK/bin/keel
INIT[tini-static]=$WORK/bin/tini-static
for d in "${DAEMONS[@]}"; do
    ldd "${INIT[$d]}" >/dev/null 2>&1 && die "${INIT[$d]} is dynamically linked: a container image need not have its libraries"
    v=$("${INIT[$d]}" --version 2>&1) || true
    VERSION[$d]="${v%%$'\n'*}, sha256 $(sha256sum "${INIT[$d]}" | cut -c1-12), $(stat -c %s "${INIT[$d]}") bytes"
done
VERSION[tini-static]+=", Debian tini $(dpkg-query -W -f='${Version}' tini 2>/dev/null || echo '?')"

# ---------------------------------------------------------------------------------------------
# 3. Two private daemons, one per init (testing.md §4, tests/docker.rs): own config file, data
#    root, exec root (hence own supervised containerd), pidfile, socket, containerd namespace; no
#    iptables, no bridge; a relative --cgroup-parent, which runc resolves beneath its own (= our)
#    cgroup in every hierarchy (the default /docker is outside our writable memory cgroup).
#    setpriv --pdeathsig: if this script is SIGKILLed, the daemons still get SIGTERM.
# ---------------------------------------------------------------------------------------------
for c in $(cgroup_dirs); do [[ ! -e $c ]] || die "cgroup $c already exists"; done
CG_OURS=1
DOCKERD_VERSION=$("$DOCKERD" --version)
for d in "${DAEMONS[@]}"; do
    dir=$WORK/d-$d
    mkdir -p "$dir"
    if [[ $DOCKERD_VERSION == "Docker version 20."* ]]; then
        printf '{"deprecated-key-path": "%s"}\n' "$dir/key.json" >"$dir/daemon.json"   # not /etc/docker/key.json
    else
        echo '{}' >"$dir/daemon.json"
    fi
    setpriv --pdeathsig TERM "$DOCKERD" \
        --config-file="$dir/daemon.json" \
        --iptables=false --bridge=none \
        --data-root="$dir/data" --exec-root="$dir/exec" --pidfile="$dir/docker.pid" \
        --host="unix://$(sock "$d")" \
        --init-path="${INIT[$d]}" \
        --cgroup-parent="$TAG" \
        --containerd-namespace="$TAG-$d" --containerd-plugins-namespace="$TAG-$d-plugins" \
        </dev/null >"$dir/dockerd.log" 2>&1 &
    DPID[$d]=$!
    log "dockerd for $d started (pid ${DPID[$d]}, --init-path=${INIT[$d]})"
done
for d in "${DAEMONS[@]}"; do
    t0=$EPOCHREALTIME
    until dk "$d" version >/dev/null 2>&1; do
        kill -0 "${DPID[$d]}" 2>/dev/null || { tail -n 30 "$WORK/d-$d/dockerd.log" >&2; die "dockerd ($d) exited"; }
        (( $(awk -v t="$(ms_since "$t0")" 'BEGIN { print (t > 60000) }') )) && { tail -n 30 "$WORK/d-$d/dockerd.log" >&2; die "dockerd ($d) not ready after 60 s"; }
        sleep 0.2
    done
    log "dockerd ($d) ready after $(fmt "$(ms_since "$t0")" 0) ms more"
done
DOCKER_VERSION=$(dk keel version --format 'client {{.Client.Version}}, server {{.Server.Version}}')
DOCKER_INFO=$(dk keel info --format 'storage driver {{.Driver}}, cgroup driver {{.CgroupDriver}}, cgroup v{{.CgroupVersion}}')
v=$(runc --version)
RUNTIME_VERSION="containerd $(containerd --version | awk '{ print $3 }'), ${v%%$'\n'*}"
for d in "${DAEMONS[@]}"; do
    ib=$(dk "$d" info --format '{{.InitBinary}} (commit parsed by dockerd: {{if .InitCommit.ID}}{{.InitCommit.ID}}{{else}}none{{end}})')
    [[ $ib == "${INIT[$d]} "* ]] || die "dockerd ($d) reports init binary '$ib', want ${INIT[$d]}"
    INFO_INIT[$d]=$ib
done

# Base image: Debian's static busybox with every applet linked, imported into both daemons.
mkdir -p "$WORK/rootfs"/{bin,sbin,etc,proc,sys,dev,tmp,root,run}
chmod 1777 "$WORK/rootfs/tmp"
cp "$BUSYBOX" "$WORK/rootfs/bin/busybox"
for a in $("$BUSYBOX" --list); do [[ $a == busybox || $a == */* ]] || ln -s busybox "$WORK/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$WORK/rootfs/etc/passwd"
echo 'root:x:0:' >"$WORK/rootfs/etc/group"
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
for d in "${DAEMONS[@]}"; do dk "$d" import "$WORK/rootfs.tar" "$IMG" >/dev/null || die "docker import ($d) failed"; done
log "imported $IMG ($(stat -c %s "$WORK/rootfs.tar") bytes of tar) into both daemons; $DOCKER_VERSION; $DOCKER_INFO"

# Preflight: on each daemon, --init runs the expected init as PID 1 and passes exit codes through.
# Under the name docker-init keel speaks tini's command line: `--version` says "..._keel-...".
for d in "${DAEMONS[@]}"; do
    o=$(dk "$d" run --rm --init "$IMG" sh -c 'tr "\0" " " </proc/1/cmdline; echo; /sbin/docker-init --version' 2>&1) || die "preflight ($d): $o"
    [[ $o == "/sbin/docker-init -- sh -c "* ]] || die "preflight ($d): PID 1 is not /sbin/docker-init: $o"
    v=$(tail -n1 <<<"$o")
    if [[ $d == keel ]]; then [[ $v == *_keel* || -n "${KEEL:-}" ]] || die "preflight: the keel daemon's docker-init is not keel: $v"
    else [[ $v == "tini version"* && $v != *_keel* ]] || die "preflight: the tini-static daemon's docker-init is not tini: $v"; fi
    rc=0; dk "$d" run --rm --init "$IMG" sh -c 'exit 3' >/dev/null 2>&1 || rc=$?
    [[ $rc == 3 ]] || die "preflight ($d): 'docker run --init IMG sh -c \"exit 3\"' exited $rc"
    PREFLIGHT[$d]=$v
done
rc=0; dk keel run --rm "$IMG" sh -c 'exit 3' >/dev/null 2>&1 || rc=$?
[[ $rc == 3 ]] || die "preflight: 'docker run IMG sh -c \"exit 3\"' (no init) exited $rc"
log "preflight ok: keel daemon: ${PREFLIGHT[keel]}; tini-static daemon: ${PREFLIGHT[tini-static]}"

# ---------------------------------------------------------------------------------------------
# 4. `docker stop` latency. Configurations (init x CMD), shuffled in every round:
#      sleep: CMD `sleep 1000`. With an init, TERM from `docker stop` goes to the init, which
#             forwards it; sleep dies of it (default action), the init exits 143. Without an init
#             sleep is PID 1 of the container, the kernel drops the TERM (no handler), and Docker
#             SIGKILLs it after the timeout: `docker stop -t NOINIT_STOP_T`, fewer rounds.
#      trap:  CMD `sh -c 'trap "exit 0" TERM; while :; do sleep 1 & wait $!; done'`: a CMD that
#             handles TERM itself (with an init, the init forwards TERM to sh; the orphaned
#             `sleep 1` is left to the init). Meaningful without an init too: sh has a handler.
#    Each sample: `docker run -d`; wait (host-side /proc) until the container's process tree has
#    a `sleep` (then the CMD, and its trap, are set up); SETTLE; time `docker stop` (wall clock
#    around the CLI: what a user or an orchestrator waits); check the exit code; `docker rm`.
#    Also timed once per round: `docker stop` of the container just stopped (nothing to signal):
#    the CLI + API floor included in every number.
# ---------------------------------------------------------------------------------------------
TRAP_CMD='trap "exit 0" TERM; while :; do sleep 1 & wait $!; done'
wait_sleep_in_tree() { # pid timeout_s: until pid or a descendant is a `sleep`
    local pid=$1 lim=$2 i c
    for ((i = 0; i < lim * 100; i++)); do
        for c in "$pid" $(descendants "$pid"); do [[ "$(cat /proc/$c/comm 2>/dev/null)" == sleep ]] && return 0; done
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}
FLOOR_MS=""
N_CT=0
stop_sample() { # init(keel|tini-static|none) cmd(sleep|trap) daemon
    local init=$1 cmd=$2 d=$3 name pid t0 ms rc flags=() tflag=() want
    name="kb-$$-$((N_CT++))"
    [[ $init != none ]] && flags=(--init)
    if [[ $cmd == sleep ]]; then
        dk "$d" run -d --name "$name" "${flags[@]}" "$IMG" sleep 1000 >/dev/null || die "docker run ($init, $cmd) failed"
        want=143; [[ $init == none ]] && { want=137; tflag=(-t "$NOINIT_STOP_T"); }
    else
        dk "$d" run -d --name "$name" "${flags[@]}" "$IMG" sh -c "$TRAP_CMD" >/dev/null || die "docker run ($init, $cmd) failed"
        want=0
    fi
    pid=$(dk "$d" inspect -f '{{.State.Pid}}' "$name")
    wait_sleep_in_tree "$pid" 10 || die "stop ($init, $cmd): no sleep in the container after 10 s"
    sleep "$SETTLE"
    t0=$EPOCHREALTIME
    dk "$d" stop "${tflag[@]}" "$name" >/dev/null || die "docker stop ($init, $cmd) failed"
    ms=$(ms_since "$t0")
    rc=$(dk "$d" inspect -f '{{.State.ExitCode}}' "$name")
    if [[ $init == keel && $cmd == sleep ]]; then   # once per round: the floor (already exited)
        t0=$EPOCHREALTIME
        dk "$d" stop "$name" >/dev/null
        FLOOR_MS+="$(ms_since "$t0") "
    fi
    dk "$d" rm "$name" >/dev/null || die "docker rm $name failed"
    STOP_MS[$init|$cmd]+="$ms "
    STOP_RC[$init|$cmd]+="$rc "
    [[ $rc == "$want" ]] || log "WARNING: stop ($init, $cmd): exit code $rc, expected $want"
}
phase_t0=$EPOCHREALTIME
log "docker stop: $STOP_ROUNDS rounds x {keel, tini-static, no init} x {sleep, trap} (no-init sleep: $NOINIT_STOP_ROUNDS rounds, -t $NOINIT_STOP_T)"
stop_sample keel sleep keel; stop_sample tini-static sleep tini-static   # warm-up, not recorded
STOP_MS=(); STOP_RC=(); FLOOR_MS=""
for ((r = 1; r <= STOP_ROUNDS; r++)); do
    nd=${DAEMONS[r % 2]}   # the no-init samples alternate between the two daemons
    confs=("keel sleep keel" "tini-static sleep tini-static" "keel trap keel" "tini-static trap tini-static" "none trap $nd")
    (( r <= NOINIT_STOP_ROUNDS )) && confs+=("none sleep $nd")
    mapfile -t order < <(printf '%s\n' "${confs[@]}" | shuf)
    for c in "${order[@]}"; do stop_sample $c </dev/null; done
    log "  stop round $r/$STOP_ROUNDS done"
done
STOP_PHASE_S=$(awk -v m="$(ms_since "$phase_t0")" 'BEGIN { printf "%.0f", m / 1000 }')

# ---------------------------------------------------------------------------------------------
# 5. `docker run --rm IMG true`: hyperfine -N (no shell), four commands: --init on the keel
#    daemon, --init on the tini-static daemon, and no init on each daemon (the per-daemon
#    baseline: overhead = with --init − without, on the same daemon; the two baselines also show
#    how much the daemons differ). RUN_ROUNDS hyperfine calls, commands shuffled in each, raw
#    times pooled per command.
# ---------------------------------------------------------------------------------------------
phase_t0=$EPOCHREALTIME
RR=$RUN_ROUNDS; (( RR <= RUNS )) || RR=$RUNS
per_round=$(( (RUNS + RR - 1) / RR ))
warm_round=$(( (WARMUP + RR - 1) / RR ))
RUN_NAMES=(keel tini-static noinit@keel noinit@tini-static)
for d in "${DAEMONS[@]}"; do
    base="$DOCKER_CLI --config $WORK/client -H unix://$(sock "$d") run --rm"
    RUN_CMD[$d]="$base --init $IMG true"
    RUN_CMD[noinit@$d]="$base $IMG true"
done
log "docker run: hyperfine -N, $RR rounds x (--warmup $warm_round --runs $per_round) x ${#RUN_NAMES[@]} commands, shuffled"
: >"$WORK/times.txt"
for ((r = 0; r < RR; r++)); do
    hf=(-N --warmup "$warm_round" --runs "$per_round" --style basic --export-json "$WORK/hf.json")
    for n in $(printf '%s\n' "${RUN_NAMES[@]}" | shuf); do hf+=(-n "$n" "${RUN_CMD[$n]}"); done
    hyperfine "${hf[@]}" </dev/null >>"$WORK/hyperfine.log" 2>&1 &
    HF_PID=$!
    rc=0; wait "$HF_PID" || rc=$?
    HF_PID=""
    (( rc == 0 )) || { tail -n 30 "$WORK/hyperfine.log" >&2; die "hyperfine failed (exit $rc)"; }
    awk '/"command":/ { c = $0; sub(/^[^:]*: "/, "", c); sub(/",?[ \t\r]*$/, "", c) }
         /"times": \[/ { t = 1; next }
         t && /\]/ { t = 0 }
         t { v = $1; sub(/,$/, "", v); print c, v * 1000 }' "$WORK/hf.json" >>"$WORK/times.txt"
    log "  run round $((r + 1))/$RR done"
done
RUN_PHASE_S=$(awk -v m="$(ms_since "$phase_t0")" 'BEGIN { printf "%.0f", m / 1000 }')
# containers that `docker run --rm` left behind would mean a failed run
for d in "${DAEMONS[@]}"; do
    left=$(dk "$d" ps -aq)
    [[ -z "$left" ]] || log "WARNING: $d daemon has containers left after the runs: $(echo $left)"
done

# ---------------------------------------------------------------------------------------------
# 6. Results
# ---------------------------------------------------------------------------------------------
# R[metric|column], column in keel tini-static none
for init in keel tini-static none; do
    for cmd in sleep trap; do
        read -r med p90 mean sd mn mx cnt <<<"$(tr ' ' '\n' <<<"${STOP_MS[$init|$cmd]:-}" | awk NF | stats)"
        R[s${cmd}_med|$init]=$med; R[s${cmd}_p90|$init]=$p90; R[s${cmd}_n|$init]=$cnt
        R[s${cmd}_detail|$init]="$(fmt "$mn" 1) / $(fmt "$med" 1) / $(fmt "$p90" 1) / $(fmt "$mx" 1) (n=$cnt)"
        R[s${cmd}_rc|$init]=$(tr ' ' '\n' <<<"${STOP_RC[$init|$cmd]:-}" | awk NF | sort -n | uniq -c | awk '{ printf "%s%s×%s", s, $2, $1; s = ", " }')
    done
done
read -r FLOOR_MED FLOOR_P90 _ _ _ _ FLOOR_N <<<"$(tr ' ' '\n' <<<"$FLOOR_MS" | awk NF | stats)"
for n in "${RUN_NAMES[@]}"; do
    RS[$n]=$(awk -v n="$n" '$1 == n { print $2 }' "$WORK/times.txt" | stats)
    read -r _ _ _ _ _ _ cnt <<<"${RS[$n]}"
    (( cnt == RR * per_round )) || die "docker run: expected $((RR * per_round)) times for $n, parsed $cnt (hyperfine JSON format changed?)"
done
for d in "${DAEMONS[@]}"; do
    read -r med p90 _ <<<"${RS[$d]}"
    read -r base_med _ <<<"${RS[noinit@$d]}"
    R[run_med|$d]=$med; R[run_p90|$d]=$p90
    R[run_over|$d]=$(awk -v a="$med" -v b="$base_med" 'BEGIN { printf "%.6f\n", a - b }')
done
read -r med p90 _ <<<"$(awk '$1 ~ /^noinit@/ { print $2 }' "$WORK/times.txt" | stats)"
R[run_med|none]=$med; R[run_p90|none]=$p90

ROWS=(
    "ssleep_med|\`docker stop\`, CMD \`sleep 1000\`: median (ms)|1"
    "ssleep_p90|\`docker stop\`, CMD \`sleep 1000\`: p90 (ms)|1"
    "ssleep_rc|\`docker stop\`, CMD \`sleep 1000\`: exit code × samples|"
    "strap_med|\`docker stop\`, CMD \`sh\` with a TERM trap: median (ms)|1"
    "strap_p90|\`docker stop\`, CMD \`sh\` with a TERM trap: p90 (ms)|1"
    "strap_rc|\`docker stop\`, CMD \`sh\` with a TERM trap: exit code × samples|"
    "run_med|\`docker run --rm IMG true\`: median (ms)|1"
    "run_p90|\`docker run --rm IMG true\`: p90 (ms)|1"
    "run_over|\`docker run --rm IMG true\`: added by \`--init\` (median − no-init median, same daemon) (ms)|1"
)
cell() { # key column decimals
    local v=${R[$1|$2]:-}
    if [[ -z $3 ]]; then echo "${v:-—}"; elif [[ -z $v ]]; then echo "—"; else fmt "$v" "$3"; fi
}
REPORT=$({
    echo "# keel vs tini-static as Docker's \`--init\` (dockerd \`--init-path\`)"
    echo
    if [[ -n "${KEEL:-}" && "$(basename "$KEEL_SRC")" != keel* ]]; then
        echo "> **Stand-in run:** the keel column is \`$KEEL_SRC\`, not keel."
        echo
    fi
    (( SMOKE )) && { echo "> **Smoke run** (RUNS=$RUNS, STOP_ROUNDS=$STOP_ROUNDS): the numbers are not meaningful."; echo; }
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- Machine: nproc=$(nproc), kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), Debian $(cat /etc/debian_version 2>/dev/null || echo '?'), $(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), load before the run: $LOAD0"
    echo "- Command: \`$CMDLINE\` (cwd \`$PWD\`)"
    echo "- Docker: $DOCKER_VERSION (CLI \`$DOCKER_CLI\`); $DOCKER_INFO; $RUNTIME_VERSION; two private daemons, \`--iptables=false --bridge=none\`, one per \`--init-path\`"
    echo "- Settings: STOP_ROUNDS=$STOP_ROUNDS NOINIT_STOP_ROUNDS=$NOINIT_STOP_ROUNDS NOINIT_STOP_T=$NOINIT_STOP_T SETTLE=$SETTLE RUNS=$RUNS WARMUP=$WARMUP RUN_ROUNDS=$RR ($per_round runs + $warm_round warm-ups per command per round); $(hyperfine --version)"
    echo "- Image: \`$IMG\`, Debian's busybox-static $(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo '?') imported with \`docker import\`"
    echo "- Inits (\`docker info\` on each daemon):"
    for d in "${DAEMONS[@]}"; do echo "  - $d: ${INFO_INIT[$d]}; \`${VERSION[$d]}\`; in the container: \`${PREFLIGHT[$d]}\`"; done
    echo "- All times are wall-clock ms around the docker CLI (client start + API + daemon + runc + init); lower is better. Method: bench/README.md (\"Docker\")."
    echo
    echo "| metric | keel | tini-static | no init | keel / tini-static |"
    echo "|---|---:|---:|---:|---:|"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r key label dec <<<"$row"
        k=$(cell "$key" keel "$dec"); t=$(cell "$key" tini-static "$dec"); n=$(cell "$key" none "$dec")
        [[ $key == ssleep_med || $key == ssleep_p90 ]] && [[ $n != — ]] && n="$n (\`-t $NOINIT_STOP_T\`)"
        # no ratio for text rows, nor for the overhead row: a quotient of two small differences of
        # noisy medians says nothing (compare it with the no-init daemon-to-daemon gap instead)
        if [[ -n $dec && $key != run_over ]]; then q=$(ratio "$k" "$t"); else q="—"; fi
        echo "| $label | $k | $t | $n | $q |"
    done
    echo
    echo "No init, CMD \`sleep 1000\`: the container's PID 1 is \`sleep\`, which has no TERM handler, so the kernel"
    echo "drops Docker's SIGTERM and \`docker stop\` waits out its timeout, then SIGKILLs (exit 137). Measured with"
    echo "\`docker stop -t $NOINIT_STOP_T\` ($NOINIT_STOP_ROUNDS samples) to keep the run short; with Docker's default it takes 10 s."
    echo "The \`--init\` overhead row has no ratio: it is a small difference of two noisy medians; compare it with"
    echo "the gap between the two no-init rows below (the same command on the two daemons)."
    echo "For scale: \`docker stop\` of an already-exited container (CLI start + API round trip, nothing to signal)"
    echo "took $(fmt "$FLOOR_MED" 1) ms median, $(fmt "$FLOOR_P90" 1) ms p90 (n=$FLOOR_N); every \`docker stop\` row includes that."
    echo
    echo "## Details"
    echo
    echo "\`docker stop\` samples, min / median / p90 / max (ms):"
    echo
    echo "| CMD | keel | tini-static | no init |"
    echo "|---|---:|---:|---:|"
    echo "| \`sleep 1000\` | ${R[ssleep_detail|keel]} | ${R[ssleep_detail|tini-static]} | ${R[ssleep_detail|none]} (\`-t $NOINIT_STOP_T\`) |"
    echo "| \`sh\` with a TERM trap | ${R[strap_detail|keel]} | ${R[strap_detail|tini-static]} | ${R[strap_detail|none]} |"
    echo
    echo "\`docker run --rm IMG true\` (hyperfine -N, ms; $((RR * per_round)) runs per command pooled over $RR shuffled rounds):"
    echo
    echo "| command | daemon | median | p90 | mean ± stddev | min | max |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for n in "${RUN_NAMES[@]}"; do
        read -r med p90 mean sd mn mx cnt <<<"${RS[$n]}"
        case $n in
            noinit@*) label="no init"; dmn=${n#noinit@} ;;
            *) label="\`--init\` ($n)"; dmn=$n ;;
        esac
        echo "| $label | $dmn | $(fmt "$med" 1) | $(fmt "$p90" 1) | $(fmt "$mean" 1) ± $(fmt "$sd" 1) | $(fmt "$mn" 1) | $(fmt "$mx" 1) |"
    done
    echo
    echo "The two no-init rows run the same thing on the two daemons: their difference is the daemon-to-daemon"
    echo "noise floor for the \`--init\` overhead row."
    echo
    echo "Phases: docker stop $STOP_PHASE_S s, docker run $RUN_PHASE_S s; wall time of this benchmark run: WALLTIME_PLACEHOLDER s (daemons, image import and clean-up included)."
})

# Clean up now (not only in the EXIT trap), then check that nothing is left behind: no process
# naming the scratch dir, no mount below it, no cgroup of ours, no scratch dir.
log "stopping the daemons and cleaning up"
teardown
left_procs=$(our_leftovers); left_mounts=$(mounts_under); left_cg=""
for c in $(cgroup_dirs); do if [[ -e $c ]]; then left_cg+="$c "; fi; done
LEFT_NOTE="nothing left behind (daemons stopped, containers, mounts, cgroups and scratch dir removed)"
if [[ -n "$left_procs$left_mounts$left_cg" || -e $WORK ]]; then
    LEFT_NOTE="LEFT BEHIND: processes [$(echo $left_procs)] mounts [$(echo $left_mounts)] cgroups [$left_cg] dir [$([[ -e $WORK ]] && echo "$WORK" || true)]"
    log "WARNING: $LEFT_NOTE"
fi
trap - EXIT INT TERM
WALL=$(awk -v m="$(ms_since "$START_EPOCH")" 'BEGIN { printf "%.0f", m / 1000 }')
REPORT=${REPORT/WALLTIME_PLACEHOLDER/$WALL}
mkdir -p "$(dirname "$RESULTS")"
printf '%s\n\nClean-up: %s.\n' "$REPORT" "$LEFT_NOTE" >"$RESULTS"
cat "$RESULTS"
log "done in $WALL s; report written to $RESULTS"
