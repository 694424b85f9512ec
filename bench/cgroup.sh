#!/usr/bin/env bash
# bench/cgroup.sh: what a service's cgroup costs keel at start, and what it buys at stop.
#
#   sudo bash bench/cgroup.sh                          # builds the example; ~1 min with the defaults
#   ROUNDS=20 WARMUP=2 bash bench/cgroup.sh            # ~8 s smoke run (plus the build)
#   BENCH=target/release/examples/bench-cgroup bash bench/cgroup.sh   # no build
#
# Needs root (it creates cgroups). Builds the Cargo example bench-cgroup (bench/cgbench.rs,
# keel's own cgroup and spawn code) with `cargo build --release --example bench-cgroup` and runs
# it once: start of /bin/true without and with its own cgroup (warm: rounds back to back; cold:
# after an idle gap), and SIGKILL of a 4-process tree through cgroup.kill (until `populated 0`
# is notified) vs through a process-group kill. Every cgroup it creates is named keel-bench-*,
# beneath this script's own cgroup in each hierarchy (where keel puts service cgroups), and is
# removed on every exit path. Prints a Markdown report on stdout and writes it to
# bench/cgroup-results.md; progress goes to stderr. Method: bench/README.md, "cgroups".
#
# Knobs (environment variables, defaults in brackets):
#   ROUNDS [200]    timed rounds per phase (start: a cold and a warm round each; stop); below
#                   200 the report is marked as a smoke run
#   WARMUP [10]     untimed rounds before each phase
#   GAP_MS [100]    idle time before each cold start round
#   SETTLE_MS [50]  the stop tree runs this long before it is killed (> 10 ms: see the report)
#   BENCH           a built bench-cgroup binary to run instead of building one
#   RAW             also write every sample to this CSV file
#   RESULTS [bench/cgroup-results.md]   where to write the report

set -euo pipefail
shopt -s nullglob

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
START_EPOCH=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

ROUNDS=${ROUNDS:-200}
WARMUP=${WARMUP:-10}
GAP_MS=${GAP_MS:-100}
SETTLE_MS=${SETTLE_MS:-50}
RAW=${RAW:-}
RESULTS=${RESULTS:-$BENCH_DIR/cgroup-results.md}

BENCH_TAG=cgbench
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
bench_cmdline ROUNDS WARMUP GAP_MS SETTLE_MS BENCH RAW RESULTS -- "$@"
bench_args "$@"
need_root "it creates cgroups"
positive_ints ROUNDS
for v in WARMUP GAP_MS SETTLE_MS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
    printf -v "$v" '%d' "$(( 10#${!v} ))"
done

WORK=$(mktemp -d /tmp/keel-cgbench.XXXXXX)
BPID=""          # the running bench-cgroup, if any
BASES=()         # the directories its cgroups go beneath (from `bench-cgroup --detect`)
RUN_CG=""        # cgroup v2 host: the cgroup of its own the bench runs in

# ---------------------------------------------------------------------------------------------
# Clean-up, on every exit path. The bench removes its own cgroups on SIGTERM and on any error; a
# SIGKILLed bench leaves them, so every keel-bench-* directory beneath BASES is emptied
# (cgroup.kill, or SIGKILL to each pid of its cgroup.procs) and removed here too.
# ---------------------------------------------------------------------------------------------
rm_cgroup() { # DIR: kill what is in it, wait until it is empty, rmdir (children first)
    local d=$1 sub p i
    for sub in "$d"/*/; do rm_cgroup "${sub%/}"; done
    if [[ -e $d/cgroup.kill ]]; then
        echo 1 >"$d/cgroup.kill" 2>/dev/null || true
    else
        for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    fi
    for ((i = 0; i < 100; i++)); do
        rmdir "$d" 2>/dev/null && return 0
        [[ -d $d ]] || return 0
        sleep 0.05
    done
    log "WARNING: could not remove $d"
}
leftovers() { local b; for b in "${BASES[@]}"; do printf '%s\n' "${b%/}"/keel-bench-*; done; }
cleanup() {
    local rc=$? i d
    trap - EXIT INT TERM
    if [[ -n $BPID ]] && kill -0 "$BPID" 2>/dev/null; then
        log "stopping bench-cgroup ($BPID)"
        kill -TERM "$BPID" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do kill -0 "$BPID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$BPID" 2>/dev/null || true
        wait "$BPID" 2>/dev/null || true
    fi
    for d in $(leftovers); do log "removing leftover cgroup $d"; rm_cgroup "$d"; done
    [[ -n $RUN_CG && -d $RUN_CG ]] && rm_cgroup "$RUN_CG"
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------------------------------------
# 1. The example
# ---------------------------------------------------------------------------------------------
if [[ -n ${BENCH:-} ]]; then
    [[ -f $BENCH && -x $BENCH ]] || die "BENCH=$BENCH is not an executable file"
    BIN=$(readlink -f "$BENCH")
    log "using BENCH=$BIN (not building)"
else
    command -v cargo >/dev/null || die "cargo not found (install Rust, or set BENCH=/path/to/bench-cgroup)"
    log "building: cargo build --release --example bench-cgroup"
    (cd "$REPO" && cargo build --release --example bench-cgroup) >"$WORK/cargo.log" 2>&1 ||
        { tail -n 30 "$WORK/cargo.log" >&2; die "building the example failed"; }
    BIN="$REPO/target/release/examples/bench-cgroup"
    [[ -x $BIN ]] || die "build succeeded but $BIN is missing"
fi
# A copy: a rebuild during the run changes nothing.
cp "$BIN" "$WORK/bench-cgroup"
BIN_SUM=$(sha256sum "$BIN" | cut -c1-12)
BIN="$WORK/bench-cgroup"

# ---------------------------------------------------------------------------------------------
# 2. Where it runs. On a pure cgroup v2 host keel's set-up moves every process of its cgroup
#    into a leaf `init` (the "no internal processes" rule); the bench refuses to do that to
#    this script's cgroup, so it gets a cgroup of its own: keel-bench-run.PID beneath ours.
# ---------------------------------------------------------------------------------------------
RUN=("$BIN")
if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
    own=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
    RUN_CG="/sys/fs/cgroup${own%/}/keel-bench-run.$$"
    mkdir "$RUN_CG" || die "cannot create $RUN_CG"
    # shellcheck disable=SC2016 # $$ and $1 are the inner shell's
    RUN=(sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$RUN_CG" "$BIN")
    log "cgroup v2: the bench runs in $RUN_CG"
fi
DETECT=$("${RUN[@]}" --detect) || die "bench-cgroup --detect failed"
SUMMARY=$(head -n1 <<<"$DETECT")
mapfile -t BASES < <(tail -n +2 <<<"$DETECT")
log "$SUMMARY"
(( ${#BASES[@]} )) || die "no writable cgroup hierarchy to create cgroups beneath"
old=$(leftovers)
[[ -z $old ]] || log "note: keel-bench-* cgroups from an earlier run (removed at the end): $(tr '\n' ' ' <<<"$old")"

# ---------------------------------------------------------------------------------------------
# 3. The run (in the background, so a signal to this script is handled at once)
# ---------------------------------------------------------------------------------------------
args=(--rounds "$ROUNDS" --warmup "$WARMUP" --gap-ms "$GAP_MS" --settle-ms "$SETTLE_MS")
[[ -n $RAW ]] && args+=(--raw "$WORK/raw.csv")
log "running: bench-cgroup ${args[*]}"
"${RUN[@]}" "${args[@]}" >"$WORK/body.md" &
BPID=$!
rc=0
wait "$BPID" || rc=$?
BPID=""
(( rc == 0 )) || die "bench-cgroup failed (exit $rc)"
[[ -n $RAW ]] && cp "$WORK/raw.csv" "$RAW"
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# The bench removed its cgroups; check that, as a user would.
left=$(find /sys/fs/cgroup -name 'keel-bench*' 2>/dev/null | grep -v "^${RUN_CG:-/nonexistent}" || true)
if [[ -z $left ]]; then LEFT="none (\`find /sys/fs/cgroup -name 'keel-bench*'\` is empty)"; else LEFT="**$(tr '\n' ' ' <<<"$left")**"; fi

{
    echo "# keel: a service's cgroup at start and at stop"
    echo
    if (( ROUNDS < 200 )); then
        echo "> **Smoke run** (ROUNDS=$ROUNDS; the default is 200)."
        echo
    fi
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- Machine: nproc=$(nproc), kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), Debian $(cat /etc/debian_version 2>/dev/null || echo '?'); load before the run: $LOAD0, after: $LOAD1"
    echo "- Command: \`$CMDLINE\` (cwd \`$PWD\`)"
    echo "- Settings: ROUNDS=$ROUNDS WARMUP=$WARMUP GAP_MS=$GAP_MS SETTLE_MS=$SETTLE_MS"
    if [[ -n ${BENCH:-} ]]; then
        echo "- Binary: BENCH=\`$BENCH\` (sha256 $BIN_SUM)"
    else
        echo "- Binary: \`cargo build --release --example bench-cgroup\` (bench/cgbench.rs, keel's release profile; sha256 $BIN_SUM)"
    fi
    [[ -n $RUN_CG ]] && echo "- cgroup v2 host: the bench ran in a cgroup of its own, \`$RUN_CG\`"
    cat "$WORK/body.md"
    echo
    echo "Leftover cgroups after the run: $LEFT. Method and caveats: bench/README.md, \"cgroups\"."
    echo "Wall time of this benchmark run: $(( $(date +%s) - START_EPOCH )) s."
} >"$WORK/results.md"

mkdir -p "$(dirname "$RESULTS")"
cp "$WORK/results.md" "$RESULTS"
cat "$WORK/results.md"
log "done in $(( $(date +%s) - START_EPOCH )) s; report written to $RESULTS"
