#!/usr/bin/env bash
# bench/run.sh: keel vs tini, tini-static, dumb-init and catatonit, side by side, in one run.
#
#   bash bench/run.sh                             # builds keel's static musl binary first
#   KEEL=/usr/bin/tini-static bash bench/run.sh   # measure some other binary in keel's column
#
# Needs root (apt-get, unshare --pid, reading other processes' /proc files). Installs the missing
# peers with apt. Prints a Markdown report on stdout and writes it to bench/results.md; progress
# goes to stderr. See bench/README.md for what each metric means and why it is measured this way.
#
# Knobs (environment variables, defaults in brackets):
#   KEEL        binary to put in the keel column; if unset, `cargo build --release --target
#               x86_64-unknown-linux-musl` is run and target/x86_64-unknown-linux-musl/release/keel used
#   RUNS [300]  hyperfine runs per command (start-up); fewer than 200 is flagged as a smoke run
#   WARMUP [30] hyperfine warm-up runs per command
#   START_ROUNDS [20]  RUNS and WARMUP are totals, spread over this many interleaved hyperfine calls
#   MEM_RUNS [5]     rounds of the memory measurement (median reported)
#   STORM_N [10000]  orphans per storm
#   STORM_RUNS [5]   storms per init and per mode (median reported)
#   IDLE_FROM [2] IDLE_TO [12]   idle-wakeup window, seconds after the init started
#   RESULTS [bench/results.md]   where to write the report
#   NO_INSTALL=1     never call apt-get (fail if something is missing)

set -euo pipefail
shopt -s nullglob

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
START_EPOCH=$(date +%s)

RUNS=${RUNS:-300}
WARMUP=${WARMUP:-30}
START_ROUNDS=${START_ROUNDS:-20}
MEM_RUNS=${MEM_RUNS:-5}
STORM_N=${STORM_N:-10000}
STORM_RUNS=${STORM_RUNS:-5}
IDLE_FROM=${IDLE_FROM:-2}
IDLE_TO=${IDLE_TO:-12}
RESULTS=${RESULTS:-$BENCH_DIR/results.md}
NO_INSTALL=${NO_INSTALL:-0}
MUSL_TARGET=x86_64-unknown-linux-musl

BENCH_TAG=bench
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
bench_cmdline KEEL RUNS WARMUP START_ROUNDS MEM_RUNS STORM_N STORM_RUNS IDLE_FROM IDLE_TO RESULTS NO_INSTALL -- "$@"
bench_args "$@"
need_root "it installs packages with apt-get, runs inits as PID 1 with 'unshare --pid' and reads other processes' /proc/<pid>/status"
positive_ints RUNS WARMUP START_ROUNDS MEM_RUNS STORM_N STORM_RUNS IDLE_FROM IDLE_TO
(( IDLE_TO > IDLE_FROM )) || die "IDLE_TO ($IDLE_TO) must be greater than IDLE_FROM ($IDLE_FROM)"
(( RUNS >= 200 )) || log "WARNING: RUNS=$RUNS < 200: start-up numbers are a smoke test only"

WORK=$(mktemp -d /tmp/keel-bench.XXXXXX)

# ---------------------------------------------------------------------------------------------
# Cleanup: every background process this script starts is recorded in BG (and removed once it
# has been waited for). On exit, for any that are still our children, SIGKILL them and all their
# descendants (an init killed alone would leave its `sleep` child behind). Storms run under
# `unshare --kill-child`, so killing unshare SIGKILLs the namespace's init and with it the
# whole namespace, even if that init is SIGSTOPped.
# ---------------------------------------------------------------------------------------------
BG=()
descendants() {
    local p=$1 c f
    for f in /proc/"$p"/task/*/children; do
        for c in $(cat "$f" 2>/dev/null); do echo "$c"; descendants "$c"; done
    done
}
ppid_of() { awk '{ sub(/^.*\) /, ""); print $2 }' "/proc/$1/stat" 2>/dev/null || true; }
# running (not a zombie, not gone) and still our child
alive() { local s; s=$(awk '{ sub(/^.*\) /, ""); print $1, $2 }' "/proc/$1/stat" 2>/dev/null || true); [[ -n $s && $s != Z* && ${s#* } == "$$" ]]; }
cleanup() {
    local rc=$? p i direct=() below=()
    trap - EXIT INT TERM
    for p in "${BG[@]}"; do
        # Only our own children: a stale pid may have been reused by an unrelated process.
        [[ -n "$p" && "$(ppid_of "$p")" == "$$" ]] || continue
        direct+=("$p")
        below+=($(descendants "$p"))
    done
    if (( ${#direct[@]} )); then
        log "cleaning up: ${direct[*]} and their descendants ${below[*]}"
        # Deepest first, so each parent is still alive to reap what it started (the inits exit
        # on their own once their child is gone); then our direct children, which we reap.
        for ((i = ${#below[@]} - 1; i >= 0; i--)); do kill -KILL "${below[i]}" 2>/dev/null || true; done
        for ((i = 0; i < 20; i++)); do
            for p in "${direct[@]}"; do alive "$p" && break; p=""; done
            [[ -z "$p" ]] && break
            sleep 0.1
        done
        kill -KILL "${direct[@]}" 2>/dev/null || true
        wait 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM
bg_forget() { local p x keep=(); for x in "${BG[@]}"; do for p in "$@"; do [[ $x == "$p" ]] && continue 2; done; keep+=("$x"); done; BG=("${keep[@]}"); }

# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
# arithmetic with awk: calc '1.5 - 0.25' -> 1.25
calc() { awk "BEGIN { printf \"%.6f\n\", $1 }"; }
# first child pid of $1 whose comm is $2 (any comm if $2 is empty); waits up to $3 s. Fails if $1 dies.
wait_child() {
    local pid=$1 want=$2 limit=$3 f c i
    for ((i = 0; i < limit * 100; i++)); do
        for f in /proc/"$pid"/task/*/children; do
            for c in $(cat "$f" 2>/dev/null); do
                if [[ -z "$want" || "$(cat "/proc/$c/comm" 2>/dev/null)" == "$want" ]]; then echo "$c"; return 0; fi
            done
        done
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}
ctxsw() { # voluntary + nonvoluntary context switches of all threads of $1
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(non)?voluntary_ctxt_switches:/ { s += $2; n++ } END { if (n) print s; else print "NaN" }'
}
status_kib() { awk -v k="$2:" '$1 == k { print $2; f = 1 } END { if (!f) print "NaN" }' "/proc/$1/status" 2>/dev/null || echo NaN; }
pss_kib() { awk '$1 == "Pss:" { print $2; f = 1 } END { if (!f) print "NaN" }' "/proc/$1/smaps_rollup" 2>/dev/null || echo NaN; }

# ---------------------------------------------------------------------------------------------
# 1. Peers and tools (Debian packages: tini gives /usr/bin/tini and /usr/bin/tini-static)
# ---------------------------------------------------------------------------------------------
need_pkgs=()
[[ -x /usr/bin/tini && -x /usr/bin/tini-static ]] || need_pkgs+=(tini)
command -v dumb-init >/dev/null || need_pkgs+=(dumb-init)
command -v catatonit >/dev/null || need_pkgs+=(catatonit)
command -v hyperfine >/dev/null || need_pkgs+=(hyperfine)
command -v strace >/dev/null || need_pkgs+=(strace)
command -v unshare >/dev/null || need_pkgs+=(util-linux)
apt_install "${need_pkgs[@]}"
for t in hyperfine strace unshare ldd sha256sum; do command -v "$t" >/dev/null || die "'$t' not found"; done
# type -P: the file on PATH, not the shell builtin (`command -v true` just prints "true")
TRUE_BIN=$(type -P true) || die "no true binary on PATH"
SLEEP_BIN=$(type -P sleep) || die "no sleep binary on PATH"
SH_BIN=$(type -P sh) || die "no sh binary on PATH"

# ---------------------------------------------------------------------------------------------
# 2. keel and the storm helper
# ---------------------------------------------------------------------------------------------
# (no `cmd | grep -q` anywhere: with pipefail, grep -q exiting early can SIGPIPE cmd and fail the test)
have_musl_target() { local t; t=$(rustup target list --installed 2>/dev/null || true); [[ $'\n'$t$'\n' == *$'\n'"$MUSL_TARGET"$'\n'* ]]; }
is_static() { local o; o=$(ldd "$1" 2>&1 || true); [[ $o == *"not a dynamic executable"* || $o == *"statically linked"* ]]; }

if [[ -n "${KEEL:-}" ]]; then
    [[ -f "$KEEL" && -x "$KEEL" ]] || die "KEEL=$KEEL is not an executable file"
    KEEL_BIN=$(readlink -f "$KEEL")
    log "keel column: KEEL=$KEEL_BIN (not building)"
else
    command -v cargo >/dev/null || die "cargo not found (install Rust, or set KEEL=/path/to/keel)"
    if ! have_musl_target; then
        command -v rustup >/dev/null || die "no rustup to add the $MUSL_TARGET target (or set KEEL=/path/to/keel)"
        log "rustup target add $MUSL_TARGET"
        rustup target add "$MUSL_TARGET" >"$WORK/rustup.log" 2>&1 || { cat "$WORK/rustup.log" >&2; die "rustup target add failed"; }
    fi
    log "building keel: cargo build --release --target $MUSL_TARGET"
    (cd "$REPO" && cargo build --release --target "$MUSL_TARGET") >"$WORK/cargo-keel.log" 2>&1 ||
        { tail -n 30 "$WORK/cargo-keel.log" >&2; die "building keel failed (set KEEL=/path to benchmark another binary)"; }
    KEEL_BIN="$REPO/target/$MUSL_TARGET/release/keel"
    [[ -x "$KEEL_BIN" ]] || die "build succeeded but $KEEL_BIN is missing"
fi
if ! is_static "$KEEL_BIN"; then
    log "WARNING: $KEEL_BIN is dynamically linked"
fi

# bench/storm.rs: as the Cargo example `bench-storm` if Cargo.toml declares it and the package
# builds; otherwise (example not declared yet, or src/ does not compile right now) as a standalone
# crate with the same source, built into target/bench-storm (git-ignored, like all of target/).
# musl-static when that target is installed: fork() of a static binary is ~25% cheaper here, so
# storms finish sooner. The helper is the same for every init, so this does not bias the comparison.
storm_target_args=(); storm_sub=release
if have_musl_target; then storm_target_args=(--target "$MUSL_TARGET"); storm_sub="$MUSL_TARGET/release"; fi
STORM_BIN=""
if grep -q 'bench-storm' "$REPO/Cargo.toml" 2>/dev/null; then
    log "building the storm helper: cargo build --release --example bench-storm ${storm_target_args[*]}"
    if (cd "$REPO" && cargo build --release --example bench-storm "${storm_target_args[@]}") >"$WORK/cargo-storm.log" 2>&1; then
        STORM_BIN="$REPO/target/$storm_sub/examples/bench-storm"
    else
        log "the bench-storm example did not build (see below); falling back to a standalone build"
        tail -n 10 "$WORK/cargo-storm.log" >&2
    fi
fi
if [[ -z "$STORM_BIN" ]]; then
    command -v cargo >/dev/null || die "cargo not found: needed to build bench/storm.rs"
    log "building the storm helper standalone (bench/storm.rs, libc only)"
    mkdir -p "$WORK/storm-crate"
    cat >"$WORK/storm-crate/Cargo.toml" <<EOF
[package]
name = "bench-storm"
version = "0.0.0"
edition = "2024"
publish = false

[[bin]]
name = "bench-storm"
path = "$BENCH_DIR/storm.rs"

[dependencies]
libc = "0.2"
EOF
    [[ -f "$REPO/Cargo.lock" ]] && cp "$REPO/Cargo.lock" "$WORK/storm-crate/"
    (cd "$WORK/storm-crate" && CARGO_TARGET_DIR="$REPO/target/bench-storm" cargo build --release "${storm_target_args[@]}") \
        >"$WORK/cargo-storm2.log" 2>&1 || { tail -n 30 "$WORK/cargo-storm2.log" >&2; die "building bench/storm.rs failed"; }
    STORM_BIN="$REPO/target/bench-storm/$storm_sub/bench-storm"
fi
[[ -x "$STORM_BIN" ]] || die "storm helper missing: $STORM_BIN"

# ---------------------------------------------------------------------------------------------
# 3. The inits. Every one is run the way its docs show it in a Dockerfile: `INIT -- CMD ARGS`.
#    * dumb-init: `--` is optional (getopt_long with a leading '+' stops at the first non-option)
#      but accepted (`dumb-init -- true` runs true; checked below), and dumb-init's README uses
#      ENTRYPOINT ["/usr/bin/dumb-init", "--"]. Same argv shape for all five; measured: no
#      difference from `dumb-init true` within noise.
#    * tini, when not PID 1 (start-up, memory, idle, syscalls), prints a 3-line "not running as
#      PID 1" warning on stderr. We do NOT set TINI_VERBOSITY=0: no init gets special flags or
#      environment, and the warning costs tini a few syscalls; the output goes to /dev/null
#      (hyperfine -N discards it) so it costs no terminal time. In the storm it is PID 1: no warning.
#    * CMD is given as an absolute path (/usr/bin/true, ...) so that no init pays a PATH search.
# ---------------------------------------------------------------------------------------------
NAMES=(keel tini tini-static dumb-init catatonit)
PEERS=(tini tini-static dumb-init catatonit)
declare -A BIN VERSION
BIN[keel]=$KEEL_BIN
for n in "${PEERS[@]}"; do
    p=$(command -v "$n") || die "$n not found after installation"
    BIN[$n]=$(readlink -f "$p")
done
VERSION[keel]="sha256 $(sha256sum "$KEEL_BIN" | cut -c1-12)"
VERSION[tini]=$(dpkg-query -W -f='${Version}' tini 2>/dev/null || echo '?')
VERSION[tini-static]=${VERSION[tini]}
VERSION[dumb-init]=$(dpkg-query -W -f='${Version}' dumb-init 2>/dev/null || echo '?')
VERSION[catatonit]=$(dpkg-query -W -f='${Version}' catatonit 2>/dev/null || echo '?')

# Preflight: every init must run a command and pass its exit code through.
for n in "${NAMES[@]}"; do
    rc=0; timeout 10 "${BIN[$n]}" -- "$TRUE_BIN" >/dev/null 2>&1 || rc=$?
    [[ $rc == 0 ]] || die "$n (${BIN[$n]}): '$n -- true' exited $rc, expected 0"
    rc=0; timeout 10 "${BIN[$n]}" -- "$SH_BIN" -c 'exit 3' >/dev/null 2>&1 || rc=$?
    [[ $rc == 3 ]] || die "$n (${BIN[$n]}): '$n -- sh -c \"exit 3\"' exited $rc, expected 3"
done
log "inits: $(for n in "${NAMES[@]}"; do printf '%s=%s ' "$n" "${BIN[$n]}"; done)"

declare -A R   # results: R[metric|init]

# ---------------------------------------------------------------------------------------------
# 4. Start-up overhead: hyperfine -N (no intermediate shell), `INIT -- true` vs plain `true`.
#    This VM is noisy: one hyperfine call that runs each command's 300 runs back to back showed
#    the *same* binary at 1.59 and 1.90 ms depending on its slot, and a fixed (rotated) order
#    still left ~7% between two copies of one binary (neighbour effects). So the runs are split
#    into START_ROUNDS hyperfine calls; each runs all six commands (plain `true` included) with
#    RUNS/START_ROUNDS runs and WARMUP/START_ROUNDS warm-ups, in a random order (shuf) per round;
#    two copies of one binary then agree within ~1%.
#    The raw times of all rounds are pooled per command (from --export-json) and the median is
#    taken over the pool. Overhead = median(INIT -- true) - median(true).
# ---------------------------------------------------------------------------------------------
SR=$START_ROUNDS
(( SR <= RUNS )) || SR=$RUNS
per_round=$(( (RUNS + SR - 1) / SR ))
warm_round=$(( (WARMUP + SR - 1) / SR ))
log "start-up: hyperfine -N, $SR rounds x (--warmup $warm_round --runs $per_round) x 6 commands, random order each round"
SU_NAMES=(true "${NAMES[@]}")
declare -A SU_CMD
SU_CMD[true]=$(printf '%q' "$TRUE_BIN")
for n in "${NAMES[@]}"; do SU_CMD[$n]="$(printf '%q' "${BIN[$n]}") -- $(printf '%q' "$TRUE_BIN")"; done
: >"$WORK/times.txt"
for ((r = 0; r < SR; r++)); do
    hf_args=(-N --warmup "$warm_round" --runs "$per_round" --style basic --export-json "$WORK/hf.json")
    for n in $(printf '%s\n' "${SU_NAMES[@]}" | shuf); do
        hf_args+=(-n "$n" "${SU_CMD[$n]}")
    done
    hyperfine "${hf_args[@]}" >>"$WORK/hyperfine.log" 2>&1 || { tail -n 30 "$WORK/hyperfine.log" >&2; die "hyperfine failed"; }
    # hyperfine's pretty JSON: "command": "NAME", ... "times": [ one number per line ]
    awk '/"command":/ { c = $0; sub(/^[^:]*: "/, "", c); sub(/",?[ \t\r]*$/, "", c) }
         /"times": \[/ { t = 1; next }
         t && /\]/ { t = 0 }
         t { v = $1; sub(/,$/, "", v); print c, v * 1000 }' "$WORK/hf.json" >>"$WORK/times.txt"
done
# stats over the pooled times of one command: median mean stddev min count (ms)
su_stats() {
    awk -v n="$1" '$1 == n { print $2 }' "$WORK/times.txt" | sort -g |
        awk '{ a[NR] = $1; s += $1; q += $1 * $1 } END { if (NR == 0) { print "NaN NaN NaN NaN 0"; exit }
            m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
            mean = s / NR; v = q / NR - mean * mean; if (v < 0) v = 0
            printf "%.6f %.6f %.6f %.6f %d\n", m, mean, sqrt(v), a[1], NR }'
}
read -r BASE BASE_MEAN BASE_SD BASE_MIN BASE_N <<<"$(su_stats true)"
(( BASE_N == SR * per_round )) || die "start-up: expected $((SR * per_round)) times for true, parsed $BASE_N (hyperfine JSON format changed?)"
for n in "${NAMES[@]}"; do
    read -r med mean sd mn cnt <<<"$(su_stats "$n")"
    (( cnt == SR * per_round )) || die "start-up: expected $((SR * per_round)) times for $n, parsed $cnt"
    R[start|$n]=$med
    R[over|$n]=$(calc "$med - $BASE")
    R[startmean|$n]="$(fmt "$mean" 3) ± $(fmt "$sd" 3)"
    R[startmin|$n]=$mn
done

# ---------------------------------------------------------------------------------------------
# 5. Syscalls: strace -f -c (init + child) of `INIT -- true`, minus those of plain `true`.
# ---------------------------------------------------------------------------------------------
log "syscalls: strace -f -c"
strace_total() { awk '$NF == "total" { print $4 }' "$1"; }
strace -f -c -o "$WORK/strace.true" "$TRUE_BIN" >/dev/null 2>&1 || die "strace failed"
S_TRUE=$(strace_total "$WORK/strace.true")
for n in "${NAMES[@]}"; do
    strace -f -c -o "$WORK/strace.$n" "${BIN[$n]}" -- "$TRUE_BIN" >/dev/null 2>&1 || die "strace $n failed"
    R[sys|$n]=$(( $(strace_total "$WORK/strace.$n") - S_TRUE ))
done

# ---------------------------------------------------------------------------------------------
# 6. The init's own memory: VmHWM / VmRSS from /proc/<init>/status and Pss from
#    /proc/<init>/smaps_rollup, read while `INIT -- sleep 2` runs, 0.3 s after the child has
#    exec'd `sleep` (the init's start-up is then over and it sits in its wait loop). Then the
#    `sleep` is killed (SIGTERM, straight to the child) so the next one can start at once.
#    One init at a time, so that no two measured processes share pages (Pss divides shared pages
#    among the processes mapping them: two copies of one binary running side by side would halve
#    each other's Pss). Rounds interleave the inits; median of MEM_RUNS.
#    Not /usr/bin/time: ru_maxrss of wait4 covers the init *and its reaped children* (here:
#    sleep, ~1.6 MiB), so it measures the child.
# ---------------------------------------------------------------------------------------------
log "memory: $MEM_RUNS rounds of 'INIT -- sleep 2', one init at a time"
declare -A HWM RSS PSS
for ((r = 1; r <= MEM_RUNS; r++)); do
    for n in "${NAMES[@]}"; do
        "${BIN[$n]}" -- "$SLEEP_BIN" 2 >/dev/null 2>>"$WORK/mem.err" &
        pid=$!; BG+=($pid)
        child=$(wait_child "$pid" sleep 3) || die "memory: $n did not start 'sleep' within 3 s"
        sleep 0.3
        HWM[$n]+="$(status_kib "$pid" VmHWM) "
        RSS[$n]+="$(status_kib "$pid" VmRSS) "
        PSS[$n]+="$(pss_kib "$pid") "
        kill -TERM "$child" 2>/dev/null || true
        rc=0; wait "$pid" || rc=$?
        bg_forget "$pid"
        # 143 = 128+SIGTERM (the child's death passed through); 0 if sleep had already finished
        [[ $rc == 143 || $rc == 0 ]] || log "WARNING: memory: '$n -- sleep 2' exited $rc after its child got SIGTERM (expected 143)"
    done
done
for n in "${NAMES[@]}"; do
    R[hwm|$n]=$(med "${HWM[$n]}")
    R[rss|$n]=$(med "${RSS[$n]}")
    R[pss|$n]=$(med "${PSS[$n]}")
done

# ---------------------------------------------------------------------------------------------
# 7. Binary size (the file that runs, symlinks resolved) and linkage
# ---------------------------------------------------------------------------------------------
for n in "${NAMES[@]}"; do
    R[size|$n]=$(stat -c %s "${BIN[$n]}")
    if is_static "${BIN[$n]}"; then
        R[link|$n]=static
    else
        R[link|$n]="dynamic ($(ldd "${BIN[$n]}" 2>/dev/null | awk '/=>/ { printf "%s%s", s, $1; s = " " }'))"
    fi
done

# ---------------------------------------------------------------------------------------------
# 8. Idle wakeups: `INIT -- sleep T` for all inits in parallel; context switches (voluntary +
#    nonvoluntary, all threads) of the init at IDLE_FROM and IDLE_TO seconds; the difference is
#    the number of times the init woke up while its child did nothing.
# ---------------------------------------------------------------------------------------------
IDLE_SLEEP=$((IDLE_TO + 3))
log "idle wakeups: 'INIT -- sleep $IDLE_SLEEP', context switches between t=${IDLE_FROM}s and t=${IDLE_TO}s"
declare -A PID=() C0=()
for n in "${NAMES[@]}"; do
    "${BIN[$n]}" -- "$SLEEP_BIN" "$IDLE_SLEEP" >/dev/null 2>>"$WORK/idle.err" &
    PID[$n]=$!; BG+=($!)
done
sleep "$IDLE_FROM"
for n in "${NAMES[@]}"; do C0[$n]=$(ctxsw "${PID[$n]}"); done
sleep $((IDLE_TO - IDLE_FROM))
for n in "${NAMES[@]}"; do
    c1=$(ctxsw "${PID[$n]}")
    [[ ${C0[$n]} != NaN && $c1 != NaN ]] || die "idle: $n exited early"
    R[idle|$n]=$((c1 - ${C0[$n]}))
done
for n in "${NAMES[@]}"; do
    rc=0; wait "${PID[$n]}" || rc=$?
    bg_forget "${PID[$n]}"
    [[ $rc == 0 ]] || die "idle: '$n -- sleep $IDLE_SLEEP' exited $rc"
done

# ---------------------------------------------------------------------------------------------
# 9. Orphan storm, the init as PID 1 of a new PID namespace:
#    unshare --pid --fork --mount-proc --kill-child INIT -- bench-storm [--drain] N
#    * concurrent: the storm double-forks N orphans while the init reaps them as they come, then
#      polls /proc until none is left. Wall time (dominated by fork() in the storm) + the peak
#      number of unreaped orphans it saw.
#    * drain: we SIGSTOP the init (from here, the host side) once the storm runs; the storm makes
#      N zombies, waits until all N are zombies, SIGCONTs PID 1 and times how long the init takes
#      to reap the backlog. This isolates the init's reaping throughput.
#    Inits are interleaved within each round, and the order rotates from round to round, so that
#    drift and position effects hit all of them alike; one untimed warm-up storm goes first.
# ---------------------------------------------------------------------------------------------
storm_field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
run_storm() { # name mode -> sets STORM_LINE (not run in $(...): BG must stay in this shell)
    local n=$1 mode=$2 u un init sp rc out
    local -a args=("$STORM_N")
    [[ $mode == drain ]] && args=(--drain "$STORM_N")
    timeout -s KILL 180 unshare --pid --fork --mount-proc --kill-child \
        "${BIN[$n]}" -- "$STORM_BIN" "${args[@]}" >"$WORK/storm.out" 2>"$WORK/storm.err" &
    u=$!; BG+=($u)
    if [[ $mode == drain ]]; then
        # timeout -> unshare -> init (PID 1 inside) -> bench-storm
        un=$(wait_child "$u" "" 10 || true)
        init=""; sp=""
        [[ -n "$un" ]] && init=$(wait_child "$un" "" 10 || true)
        [[ -n "$init" ]] && sp=$(wait_child "$init" bench-storm 10 || true)
        if [[ -n "$init" && -n "$sp" ]]; then kill -STOP "$init"; fi
    fi
    rc=0; wait "$u" || rc=$?
    bg_forget "$u"
    out=$(grep '^storm ' "$WORK/storm.out" || true)
    if [[ $rc != 0 || -z "$out" ]]; then
        cat "$WORK/storm.err" >&2
        die "storm ($mode) under $n failed (exit $rc)"
    fi
    STORM_LINE=$out
}
log "orphan storm: $STORM_N orphans, $STORM_RUNS rounds x ${#NAMES[@]} inits x 2 modes (takes ~$(( STORM_RUNS * ${#NAMES[@]} * 5 * STORM_N / 10000 ))s here)"
declare -A ST_TOTAL ST_PEAK ST_DRAIN ST_CREATE ST_CCPU ST_DCPU
run_storm "${NAMES[0]}" concurrent   # warm-up (page cache, allocator), not recorded
for ((r = 1; r <= STORM_RUNS; r++)); do
    for ((i = 0; i < ${#NAMES[@]}; i++)); do
        n=${NAMES[(i + r - 1) % ${#NAMES[@]}]}
        run_storm "$n" concurrent; line=$STORM_LINE
        ST_TOTAL[$n]+="$(storm_field "$line" total_ms) "
        ST_PEAK[$n]+="$(storm_field "$line" peak_unreaped) "
        ST_CCPU[$n]+="$(storm_field "$line" init_cpu_ms) "
        run_storm "$n" drain; line=$STORM_LINE
        ST_DRAIN[$n]+="$(storm_field "$line" drain_ms) "
        ST_CREATE[$n]+="$(storm_field "$line" create_ms) "
        ST_DCPU[$n]+="$(storm_field "$line" init_cpu_ms) "
    done
    log "  storm round $r/$STORM_RUNS done"
done
for n in "${NAMES[@]}"; do
    R[stotal|$n]=$(med "${ST_TOTAL[$n]}")
    R[speak|$n]=$(med "${ST_PEAK[$n]}")
    R[sdrain|$n]=$(med "${ST_DRAIN[$n]}")
    R[sper|$n]=$(calc "${R[sdrain|$n]} * 1000 / $STORM_N")
    R[sccpu|$n]=$(med "${ST_CCPU[$n]}")
    R[sdcpu|$n]=$(med "${ST_DCPU[$n]}")
done

# ---------------------------------------------------------------------------------------------
# 10. Report
# ---------------------------------------------------------------------------------------------
# ratio a/b with 2 decimals; "1.00" for 0/0, "∞" for x/0
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NaN" || b == "NaN") print "n/a";
    else if (b == 0) print (a == 0 ? "1.00" : "∞"); else printf "%.2f\n", a / b }'; }
# metric key, label, decimals; all metrics are lower-is-better
ROWS=(
    "start|Start-up: median of \`INIT -- true\` (ms)|3"
    "over|Start-up overhead over plain \`true\` (ms)|3"
    "sys|Syscalls added to \`true\` (strace -f -c)|0"
    "hwm|Peak memory of the init, VmHWM (KiB)|0"
    "rss|VmRSS of the init while idle (KiB)|0"
    "pss|Pss of the init while idle (KiB)|0"
    "size|Binary size (bytes)|0"
    "idle|Idle wakeups in $((IDLE_TO - IDLE_FROM)) s (context switches)|0"
    "stotal|Orphan storm, concurrent: wall time for $STORM_N orphans (ms)|1"
    "speak|Orphan storm, concurrent: peak unreaped orphans seen|0"
    "sccpu|Orphan storm, concurrent: CPU time of the init (ms)|1"
    "sdrain|Orphan storm, drain: reap a $STORM_N-zombie backlog (ms)|2"
    "sper|Orphan storm, drain: per zombie (µs)|2"
    "sdcpu|Orphan storm, drain: CPU time of the init (ms)|1"
)
{
    echo "# keel benchmark: keel vs tini, tini-static, dumb-init, catatonit"
    echo
    if [[ -n "${KEEL:-}" && "$(basename "$KEEL_BIN")" != keel* ]]; then
        echo "> **Stand-in run:** the keel column is \`$KEEL_BIN\`, not keel."
        echo
    fi
    (( RUNS >= 200 )) || { echo "> **Smoke run** (RUNS=$RUNS < 200): start-up numbers are not meaningful."; echo; }
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- Machine: nproc=$(nproc), kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), Debian $(cat /etc/debian_version 2>/dev/null || echo '?'), $(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
    echo "- Command: \`$CMDLINE\` (cwd \`$PWD\`)"
    echo "- Settings: RUNS=$RUNS WARMUP=$WARMUP START_ROUNDS=$SR MEM_RUNS=$MEM_RUNS STORM_N=$STORM_N STORM_RUNS=$STORM_RUNS IDLE window ${IDLE_FROM}-${IDLE_TO} s; $(hyperfine --version), $(strace -V 2>/dev/null | sed -n 1p)"
    echo "- Binaries:"
    for n in "${NAMES[@]}"; do echo "  - $n: \`${BIN[$n]}\` (${VERSION[$n]})"; done
    echo "- Storm helper: \`$STORM_BIN\`"
    echo "- Every init is run as \`INIT -- CMD\`; lower is better in every row. Method: bench/README.md."
    echo
    printf '| metric |'; for n in "${NAMES[@]}"; do printf ' %s |' "$n"; done; echo ' keel / best peer |'
    printf '|---|'; for n in "${NAMES[@]}"; do printf -- '---:|'; done; printf '%s\n' '---:|'
    for row in "${ROWS[@]}"; do
        IFS='|' read -r key label dec <<<"$row"
        printf '| %s |' "$label"
        for n in "${NAMES[@]}"; do printf ' %s |' "$(fmt "${R[$key|$n]}" "$dec")"; done
        best=""; bestn=""
        for n in "${PEERS[@]}"; do
            v=$(fmt "${R[$key|$n]}" "$dec")   # compare what is shown
            if [[ -z "$best" ]] || awk -v a="$v" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$v; bestn=$n; fi
        done
        echo " $(ratio "$(fmt "${R[$key|keel]}" "$dec")" "$best") ($bestn) |"
    done
    printf '| Linkage |'; for n in "${NAMES[@]}"; do printf ' %s |' "${R[link|$n]}"; done; echo ' |'
    echo
    echo "keel / each peer (below 1.00 = keel is smaller or faster):"
    echo
    printf '| metric |'; for n in "${PEERS[@]}"; do printf ' keel / %s |' "$n"; done; echo
    printf '|---|'; for n in "${PEERS[@]}"; do printf -- '---:|'; done; echo
    for row in "${ROWS[@]}"; do
        IFS='|' read -r key label dec <<<"$row"
        [[ $key == start || $key == rss || $key == sper ]] && continue   # redundant with other rows
        printf '| %s |' "$label"
        for n in "${PEERS[@]}"; do printf ' %s |' "$(ratio "$(fmt "${R[$key|keel]}" "$dec")" "$(fmt "${R[$key|$n]}" "$dec")")"; done
        echo
    done
    echo
    echo "## Details"
    echo
    echo "Start-up (hyperfine -N, ms; $((SR * per_round)) runs per command pooled over $SR interleaved rounds):"
    echo
    echo "| init | median | mean ± stddev | min |"
    echo "|---|---:|---:|---:|"
    echo "| plain \`true\` | $(fmt "$BASE" 3) | $(fmt "$BASE_MEAN" 3) ± $(fmt "$BASE_SD" 3) | $(fmt "$BASE_MIN" 3) |"
    for n in "${NAMES[@]}"; do
        echo "| $n | $(fmt "${R[start|$n]}" 3) | ${R[startmean|$n]} | $(fmt "${R[startmin|$n]}" 3) |"
    done
    echo
    echo "Raw samples (one per round):"
    echo
    echo "| init | VmHWM KiB | Pss KiB | storm concurrent ms | peak unreaped | init CPU ms (concurrent) | drain ms | init CPU ms (drain) | drain-mode create ms |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for n in "${NAMES[@]}"; do
        echo "| $n | ${HWM[$n]% } | ${PSS[$n]% } | ${ST_TOTAL[$n]% } | ${ST_PEAK[$n]% } | ${ST_CCPU[$n]% } | ${ST_DRAIN[$n]% } | ${ST_DCPU[$n]% } | ${ST_CREATE[$n]% } |"
    done
    echo
    echo "Wall time of this benchmark run: $(( $(date +%s) - START_EPOCH )) s."
} >"$WORK/results.md"

mkdir -p "$(dirname "$RESULTS")"
cp "$WORK/results.md" "$RESULTS"
cat "$WORK/results.md"
log "done in $(( $(date +%s) - START_EPOCH )) s; report written to $RESULTS"
