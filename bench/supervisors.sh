#!/usr/bin/env bash
# bench/supervisors.sh: keel's services mode vs supervisord, s6 (s6-svscan) and runit (runsvdir),
# side by side, in one run.
#
#   bash bench/supervisors.sh                       # builds keel's static musl binary first
#   KEEL=/path/to/keel bash bench/supervisors.sh    # measure that binary in keel's column
#   ROUNDS=2 RESTARTS=5 BIG_N=50 IDLE_TO=6 bash bench/supervisors.sh   # ~50 s smoke run
#
# Needs root (apt-get, reading other processes' /proc files). Installs the missing supervisors
# with apt (Debian packages supervisor, s6, runit; --no-install-recommends, so runit's
# recommended runit-init/runit-run never replace the machine's init). Every supervisor runs as a
# plain process (not PID 1) under the measuring helper bench/supbench.rs, in a scratch
# directory. Prints a Markdown report on stdout and writes it to bench/supervisors-results.md;
# progress goes to stderr. Method: bench/README.md, "Supervisors".
#
# Knobs (environment variables, defaults in brackets):
#   KEEL          binary for the keel column; if unset, `cargo build --release --target
#                 x86_64-unknown-linux-musl` is run and target/x86_64-unknown-linux-musl/release/keel used
#   N [10]        services for the wake-up, memory, start, stop and restart measurements
#   BIG_N [200]   services for the large memory measurement
#   ROUNDS [5]    start/memory/stop samples per supervisor with N services (median reported)
#   RESTARTS [20] SIGKILLs of one service per supervisor (median and p90 reported)
#   MIN_AGE_MS [1100]  a service instance is killed only once it is this old (> 1 s, so that no
#                 supervisor's "it died young" delay applies)
#   SETTLE_MS [1200]   wait after all services started, before memory is read and the stop is
#                 sent (> 1 s: runsv sleeps 1 s when a service that ran < 1 s stops)
#   IDLE_FROM [2] IDLE_TO [12]   idle window, seconds after all N services started
#   RESULTS [bench/supervisors-results.md]   where to write the report
#   NO_INSTALL=1  never call apt-get (fail if something is missing)

set -euo pipefail
shopt -s nullglob

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
START_EPOCH=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

N=${N:-10}
BIG_N=${BIG_N:-200}
ROUNDS=${ROUNDS:-5}
RESTARTS=${RESTARTS:-20}
MIN_AGE_MS=${MIN_AGE_MS:-1100}
SETTLE_MS=${SETTLE_MS:-1200}
IDLE_FROM=${IDLE_FROM:-2}
IDLE_TO=${IDLE_TO:-12}
RESULTS=${RESULTS:-$BENCH_DIR/supervisors-results.md}
NO_INSTALL=${NO_INSTALL:-0}
MUSL_TARGET=x86_64-unknown-linux-musl

BENCH_TAG=supbench
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
bench_cmdline KEEL N BIG_N ROUNDS RESTARTS MIN_AGE_MS SETTLE_MS IDLE_FROM IDLE_TO RESULTS NO_INSTALL -- "$@"
bench_args "$@"
need_root "it installs packages with apt-get and reads other processes' /proc/<pid>/smaps_rollup"
positive_ints N BIG_N ROUNDS RESTARTS MIN_AGE_MS SETTLE_MS IDLE_FROM IDLE_TO
(( IDLE_TO > IDLE_FROM )) || die "IDLE_TO ($IDLE_TO) must be greater than IDLE_FROM ($IDLE_FROM)"
(( N <= 1000 && BIG_N <= 1000 )) || die "N and BIG_N must be at most 1000 (runsvdir's limit)"

WORK=$(mktemp -d /tmp/keel-supbench.XXXXXX)
POLICY_CREATED=0

# ---------------------------------------------------------------------------------------------
# Clean-up. Every helper runs in the background (BG) and is waited for with `wait`, so a signal
# to this script is handled at once. A helper that gets SIGTERM SIGKILLs its supervisor's whole
# tree (deepest first) and reaps it (it is a child subreaper, so nothing escapes it); it also
# gets SIGTERM by itself if this script dies (PR_SET_PDEATHSIG). Here: TERM the helpers, give
# them 5 s, then SIGKILL whatever is still below them, deepest first.
# ---------------------------------------------------------------------------------------------
BG=()
descendants() {
    local p=$1 c f
    for f in /proc/"$p"/task/*/children; do
        for c in $(cat "$f" 2>/dev/null); do echo "$c"; descendants "$c"; done
    done
}
ppid_of() { awk '{ sub(/^.*\) /, ""); print $2 }' "/proc/$1/stat" 2>/dev/null || true; }
alive() { local s; s=$(awk '{ sub(/^.*\) /, ""); print $1, $2 }' "/proc/$1/stat" 2>/dev/null || true); [[ -n $s && $s != Z* && ${s#* } == "$$" ]]; }
cleanup() {
    local rc=$? p i direct=() below=()
    trap - EXIT INT TERM
    for p in "${BG[@]}"; do
        [[ -n "$p" && "$(ppid_of "$p")" == "$$" ]] || continue
        direct+=("$p")
    done
    if (( ${#direct[@]} )); then
        log "cleaning up: helpers ${direct[*]}"
        kill -TERM "${direct[@]}" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            for p in "${direct[@]}"; do alive "$p" && break; p=""; done
            [[ -z "$p" ]] && break
            sleep 0.1
        done
        for p in "${direct[@]}"; do below+=($(descendants "$p")); done
        for ((i = ${#below[@]} - 1; i >= 0; i--)); do kill -KILL "${below[i]}" 2>/dev/null || true; done
        kill -KILL "${direct[@]}" 2>/dev/null || true
        wait 2>/dev/null || true
    fi
    if (( POLICY_CREATED )); then rm -f /usr/sbin/policy-rc.d; fi
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
# nearest-rank percentile $1 (0-100) of the numbers on stdin
pct() { sort -g | awk -v p="$1" '{ a[NR] = $1 } END { if (NR == 0) { print "NaN"; exit }
    i = int((p * NR + 99) / 100); if (i < 1) i = 1; print a[i] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a") print "n/a";
    else if (b == 0) print (a == 0 ? "1.00" : "∞"); else printf "%.2f\n", a / b }'; }
# value of KEY in a helper's key=value output file
kv() { awk -F= -v k="$2" '$1 == k { print $2; f = 1 } END { if (!f) print "NaN" }' "$1"; }
ns2ms() { awk '{ for (i = 1; i <= NF; i++) printf "%.6f\n", $i / 1e6 }' <<<"${1//,/ }"; }

# ---------------------------------------------------------------------------------------------
# 1. The supervisors (Debian: supervisor, s6, runit)
# ---------------------------------------------------------------------------------------------
need_pkgs=()
[[ -x /usr/bin/supervisord ]] || need_pkgs+=(supervisor)
[[ -x /usr/bin/s6-svscan && -x /usr/bin/s6-supervise ]] || need_pkgs+=(s6)
[[ -x /usr/bin/runsvdir && -x /usr/bin/runsv ]] || need_pkgs+=(runit)
if (( ${#need_pkgs[@]} )); then
    # The supervisor package's postinst would start a system-wide supervisord: a policy-rc.d
    # that says "no" (exit 101) stops that, as in Docker images. Ours only if there is none.
    # (--no-install-recommends: runit recommends runit-init, which would replace init.)
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# temporary, bench/supervisors.sh: no service starts during its apt-get install\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_CREATED=1
    fi
    apt_install "${need_pkgs[@]}"
    if (( POLICY_CREATED )); then rm -f /usr/sbin/policy-rc.d; POLICY_CREATED=0; fi
fi
for t in /usr/bin/supervisord /usr/bin/s6-svscan /usr/bin/s6-supervise /usr/bin/runsvdir /usr/bin/runsv; do
    [[ -x $t ]] || die "$t not found after installation"
done
for t in shuf sha256sum ldd; do command -v "$t" >/dev/null || die "'$t' not found"; done
others=$(ps -eo pid=,comm= | awk '$2 == "supervisord" || $2 == "runsvdir" || $2 == "s6-svscan" { printf "%s(%s) ", $2, $1 }')
[[ -z $others ]] || log "note: already running on this machine (not ours, left alone): $others"

# ---------------------------------------------------------------------------------------------
# 2. keel and the helper
# ---------------------------------------------------------------------------------------------
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
is_static "$KEEL_BIN" || log "WARNING: $KEEL_BIN is dynamically linked"

# bench/supbench.rs as a standalone crate (std + libc), so that it builds whatever state src/ is
# in; static (musl) when that target is installed, which makes the service's exec cheap and the
# same for every supervisor. Built into target/bench-supbench (git-ignored).
sb_target_args=(); sb_sub=release
if have_musl_target; then sb_target_args=(--target "$MUSL_TARGET"); sb_sub="$MUSL_TARGET/release"; fi
command -v cargo >/dev/null || die "cargo not found: needed to build bench/supbench.rs"
log "building the helper (bench/supbench.rs, libc only)"
mkdir -p "$WORK/supbench-crate"
cat >"$WORK/supbench-crate/Cargo.toml" <<EOF
[package]
name = "bench-supbench"
version = "0.0.0"
edition = "2024"
publish = false

[[bin]]
name = "bench-supbench"
path = "$BENCH_DIR/supbench.rs"

[dependencies]
libc = "0.2"

[profile.release]
opt-level = "s"
panic = "abort"
EOF
[[ -f "$REPO/Cargo.lock" ]] && cp "$REPO/Cargo.lock" "$WORK/supbench-crate/"
(cd "$WORK/supbench-crate" && CARGO_TARGET_DIR="$REPO/target/bench-supbench" cargo build --release "${sb_target_args[@]}") \
    >"$WORK/cargo-supbench.log" 2>&1 || { tail -n 30 "$WORK/cargo-supbench.log" >&2; die "building bench/supbench.rs failed"; }
# A copy in the scratch dir: a rebuild during the run changes nothing, and the services' /proc/PID/exe
# is this exact file (the helper tells services from supervisor processes by it).
SB="$WORK/bench-supbench"
cp "$REPO/target/bench-supbench/$sb_sub/bench-supbench" "$SB"

# ---------------------------------------------------------------------------------------------
# 3. Service trees. For every supervisor and size: $WORK/<sup>/n<N>/svc/sNNN/ (NNN = 000..N-1),
#    each service stamps sNNN/stamp when it starts. All run the same program, exec'd directly
#    (no shell): `bench-supbench svc STAMP` for keel and supervisord; for s6 and runit, the
#    service directory's `run` is a symlink to bench-supbench (they exec ./run, it stamps
#    ./stamp in the service directory they chdir into).
# ---------------------------------------------------------------------------------------------
# floor: `bench-supbench mini`, a minimal supervisor (fork+exec, sigwaitinfo, respawn at once, no
# logging or relay): what this machine needs to start/restart/stop these services at all. It is
# not a peer (no ratio against it); it shows how much of each number is the supervisor's own.
SUPS=(keel supervisord s6 runit floor)
PEERS=(supervisord s6 runit)
declare -A STOPSIG=([keel]=TERM [supervisord]=TERM [s6]=TERM [runit]=HUP [floor]=TERM)
export KEEL_RUNTIME_DIR="$WORK/keel-run"   # keel's notify sockets; ignored by the others

setup() { # sup n
    local sup=$1 n=$2 d="$WORK/$1/n$2" i name
    mkdir -p "$d/svc"
    for ((i = 0; i < n; i++)); do
        printf -v name 's%03d' "$i"
        mkdir -p "$d/svc/$name"
        case $sup in s6|runit) ln -s "$SB" "$d/svc/$name/run" ;; esac
    done
    case $sup in
        keel)
            for ((i = 0; i < n; i++)); do
                printf -v name 's%03d' "$i"
                # restart = always (like the peers); the start limit raised so that RESTARTS kills
                # ~1.1 s apart are not cut off by the default 5 starts per 10 s.
                printf '[service.%s]\ncommand = ["%s", "svc", "%s"]\nrestart = "always"\nstart-limit-burst = 100000\n\n' \
                    "$name" "$SB" "$d/svc/$name/stamp"
            done >"$d/keel.toml"
            ;;
        supervisord)
            {
                printf '[supervisord]\nnodaemon=true\nuser=root\nlogfile=%s\npidfile=%s\nchildlogdir=%s\n\n' \
                    "$d/supervisord.log" "$d/supervisord.pid" "$d"
                for ((i = 0; i < n; i++)); do
                    printf -v name 's%03d' "$i"
                    printf '[program:%s]\ncommand=%s svc %s\nautorestart=true\n\n' "$name" "$SB" "$d/svc/$name/stamp"
                done
            } >"$d/supervisord.conf"
            ;;
    esac
}
supcmd() { # sup n -> CMD array
    local d="$WORK/$1/n$2"
    case $1 in
        keel) CMD=("$KEEL_BIN" --config "$d/keel.toml") ;;
        supervisord) CMD=(/usr/bin/supervisord -n -c "$d/supervisord.conf") ;;
        s6) CMD=(/usr/bin/s6-svscan "$d/svc") ;;
        runit) CMD=(/usr/bin/runsvdir "$d/svc") ;;
        floor) CMD=("$SB" mini "$d/svc" "$2") ;;
    esac
}
for s in "${SUPS[@]}"; do setup "$s" "$N"; setup "$s" "$BIG_N"; done

# helper OUT SUP N TAG [options...]: start the helper in the background (its pid in HPID)
helper() {
    local out=$1 sup=$2 n=$3 tag=$4; shift 4
    supcmd "$sup" "$n"
    "$SB" run --svcdir "$WORK/$sup/n$n/svc" --n "$n" --stop-signal "${STOPSIG[$sup]}" \
        --log "$WORK/$sup/n$n/log.$tag" "$@" -- "${CMD[@]}" >"$out" 2>"$out.err" &
    HPID=$!
    BG+=("$HPID")
}
# wait for helper PID writing OUT; die with its messages and the supervisor's log if it failed
reap_helper() {
    local pid=$1 out=$2 what=$3 rc=0
    wait "$pid" || rc=$?
    bg_forget "$pid"
    if (( rc )); then
        cat "$out.err" >&2
        die "$what: helper failed (exit $rc)"
    fi
    [[ -s "$out.err" ]] && { log "$what:"; cat "$out.err" >&2; }
    return 0
}

declare -A R VERSION RAW_RS EXIT2
VERSION[keel]="sha256 $(sha256sum "$KEEL_BIN" | cut -c1-12)"
VERSION[supervisord]="$(dpkg-query -W -f='${Version}' supervisor 2>/dev/null || echo '?')"
VERSION[s6]="$(dpkg-query -W -f='${Version}' s6 2>/dev/null || echo '?')"
VERSION[runit]="$(dpkg-query -W -f='${Version}' runit 2>/dev/null || echo '?')"

# ---------------------------------------------------------------------------------------------
# 4. Phase 1, all four side by side (independent measurements): N services; idle wake-ups in
#    [IDLE_FROM, IDLE_TO] s after all started; then RESTARTS SIGKILLs of service s000, serialized
#    across the four by a lock (no two kills at the same time).
# ---------------------------------------------------------------------------------------------
log "phase 1: idle wake-ups (${IDLE_FROM}-${IDLE_TO} s after start) and $RESTARTS restarts, all four side by side, $N services each"
declare -A P1
pids=()
for s in "${SUPS[@]}"; do
    helper "$WORK/p1.$s" "$s" "$N" p1 --idle "$((IDLE_FROM * 1000)):$((IDLE_TO * 1000))" \
        --restarts "$RESTARTS" --min-age-ms "$MIN_AGE_MS" --lock "$WORK/kill.lock"
    P1[$s]=$HPID
done
for s in "${SUPS[@]}"; do reap_helper "${P1[$s]}" "$WORK/p1.$s" "phase 1, $s"; done
for s in "${SUPS[@]}"; do
    f="$WORK/p1.$s"
    R[ctxtop|$s]=$(kv "$f" ctx_top)
    R[ctxall|$s]=$(kv "$f" ctx_all)
    R[procs|$s]=$(kv "$f" procs)
    RS=$(ns2ms "$(kv "$f" restart_ns)")
    R[rsmed|$s]=$(median <<<"$RS")
    R[rsp90|$s]=$(pct 90 <<<"$RS")
    R[rsmin|$s]=$(sort -g <<<"$RS" | head -n1)
    R[rsmax|$s]=$(sort -g <<<"$RS" | tail -n1)
    RAW_RS[$s]=$(awk '{ printf "%.3f ", $1 }' <<<"$RS")
done

# ---------------------------------------------------------------------------------------------
# 5. Phase 2, one supervisor at a time (Pss shares pages among whatever runs), ROUNDS rounds in
#    a shuffled order: N services; start; SETTLE_MS; memory; stop.
# ---------------------------------------------------------------------------------------------
log "phase 2: $ROUNDS rounds of start / memory / stop, one supervisor at a time, $N services"
declare -A ST SP RSST RSSA PSSA
for ((r = 1; r <= ROUNDS; r++)); do
    for s in $(shuf -e "${SUPS[@]}"); do
        out="$WORK/p2.$s.$r"
        helper "$out" "$s" "$N" "p2.$r" --settle-ms "$SETTLE_MS" --mem
        reap_helper "$HPID" "$out" "phase 2 round $r, $s"
        ST[$s]+="$(kv "$out" start_ns) "
        SP[$s]+="$(kv "$out" stop_ns) "
        RSST[$s]+="$(kv "$out" rss_top) "
        RSSA[$s]+="$(kv "$out" rss_all) "
        PSSA[$s]+="$(kv "$out" pss_all) "
        EXIT2[$s]=$(kv "$out" exit)
    done
    log "  round $r/$ROUNDS done"
done
for s in "${SUPS[@]}"; do
    R[start|$s]=$(awk '{ printf "%.6f\n", $1 / 1e6 }' <<<"$(med "${ST[$s]}")")
    R[stop|$s]=$(awk '{ printf "%.6f\n", $1 / 1e6 }' <<<"$(med "${SP[$s]}")")
    R[rsstop|$s]=$(med "${RSST[$s]}")
    R[rssall|$s]=$(med "${RSSA[$s]}")
    R[pssall|$s]=$(med "${PSSA[$s]}")
done

# ---------------------------------------------------------------------------------------------
# 6. Phase 3, one at a time: BIG_N services; start; SETTLE_MS; memory; stop (one sample each).
# ---------------------------------------------------------------------------------------------
log "phase 3: $BIG_N services, one supervisor at a time"
for s in $(shuf -e "${SUPS[@]}"); do
    out="$WORK/p3.$s"
    helper "$out" "$s" "$BIG_N" p3 --settle-ms "$SETTLE_MS" --mem --start-timeout-ms 120000 --stop-timeout-ms 60000
    reap_helper "$HPID" "$out" "phase 3, $s"
    R[bigrss|$s]=$(kv "$out" rss_all)
    R[bigpss|$s]=$(kv "$out" pss_all)
    R[bigprocs|$s]=$(kv "$out" procs)
    R[bigstart|$s]=$(awk '{ printf "%.6f\n", $1 / 1e6 }' <<<"$(kv "$out" start_ns)")
    R[bigstop|$s]=$(awk '{ printf "%.6f\n", $1 / 1e6 }' <<<"$(kv "$out" stop_ns)")
done

# ---------------------------------------------------------------------------------------------
# 7. Report
# ---------------------------------------------------------------------------------------------
# key | label | decimals | keel target (awk condition on x, or empty) | target text
ROWS=(
    "ctxtop|Idle wake-ups in $((IDLE_TO - IDLE_FROM)) s, $N services: top process (context switches)|0|x == 0|0"
    "ctxall|Idle wake-ups in $((IDLE_TO - IDLE_FROM)) s, $N services: all supervisor processes|0|x == 0|0"
    "procs|Supervisor processes for $N services|0||"
    "rsstop|VmRSS, $N services: top process (KiB)|0|x <= 2048|≤ 2048"
    "rssall|VmRSS, $N services: sum over supervisor processes (KiB)|0|x <= 2048|≤ 2048"
    "pssall|Pss, $N services: sum over supervisor processes (KiB)|0||"
    "bigrss|VmRSS, $BIG_N services: sum over supervisor processes (KiB)|0||"
    "bigpss|Pss, $BIG_N services: sum over supervisor processes (KiB)|0||"
    "start|Start → all $N services running: median (ms)|2||"
    "rsmed|Restart after SIGKILL: median (ms)|3|x <= 1|≤ 1"
    "rsp90|Restart after SIGKILL: p90 (ms)|3||"
    "stop|Stop $N services (signal → all gone): median (ms)|2|x <= 10|≤ 10"
    "bigstart|Start → all $BIG_N services running, 1 sample (ms)|1||"
    "bigstop|Stop $BIG_N services, 1 sample (ms)|1||"
)
{
    echo "# keel services mode vs supervisord, s6, runit"
    echo
    if [[ -n "${KEEL:-}" && "$(basename "$KEEL_BIN")" != keel* ]]; then
        echo "> **Stand-in run:** the keel column is \`$KEEL_BIN\`, not keel."
        echo
    fi
    if (( ROUNDS < 5 || RESTARTS < 20 || N != 10 || BIG_N != 200 )); then
        echo "> **Smoke run** (ROUNDS=$ROUNDS RESTARTS=$RESTARTS N=$N BIG_N=$BIG_N; the defaults are 5, 20, 10, 200)."
        echo
    fi
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- Machine: nproc=$(nproc), kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), Debian $(cat /etc/debian_version 2>/dev/null || echo '?'), load before the run: $LOAD0"
    echo "- Command: \`$CMDLINE\` (cwd \`$PWD\`)"
    echo "- Settings: N=$N BIG_N=$BIG_N ROUNDS=$ROUNDS RESTARTS=$RESTARTS MIN_AGE_MS=$MIN_AGE_MS SETTLE_MS=$SETTLE_MS idle window ${IDLE_FROM}-${IDLE_TO} s"
    echo "- Supervisors (each a plain process, not PID 1; stop = the signal named):"
    echo "  - keel \`$KEEL_BIN --config DIR/keel.toml\` (${VERSION[keel]}), services \`restart = \"always\"\`, default output (prefixed relay); stop: SIGTERM"
    echo "  - supervisord \`/usr/bin/supervisord -n -c DIR/supervisord.conf\` (Debian ${VERSION[supervisord]}, $(head -n1 /usr/bin/supervisord | sed 's/^#!//')), \`autorestart=true\`, default output capture (log files); stop: SIGTERM"
    echo "  - s6 \`/usr/bin/s6-svscan DIR\` (Debian ${VERSION[s6]}), one s6-supervise per service, no loggers; stop: SIGTERM (= \`s6-svscanctl -t\`)"
    echo "  - runit \`/usr/bin/runsvdir DIR\` (Debian ${VERSION[runit]}), one runsv per service, no log services; stop: SIGHUP (runsvdir TERMs every runsv, each TERMs its service and exits once it is down)"
    echo "  - floor \`bench-supbench mini DIR N\` (not a supervisor, see below); stop: SIGTERM"
    echo "- Every service is the same static program (bench/supbench.rs) exec'd without a shell; it stamps CLOCK_MONOTONIC on start and then sleeps in pause(). Method and caveats: bench/README.md, \"Supervisors\"."
    echo
    printf '| metric | keel |'; for s in "${PEERS[@]}"; do printf ' %s |' "$s"; done; echo ' keel / best peer | keel target | floor |'
    printf '|---|---:|'; for s in "${PEERS[@]}"; do printf -- '---:|'; done; printf '%s\n' '---:|---|---:|'
    for row in "${ROWS[@]}"; do
        IFS='|' read -r key label dec cond ttext <<<"$row"
        printf '| %s |' "$label"
        for s in keel "${PEERS[@]}"; do printf ' %s |' "$(fmt "${R[$key|$s]:-NaN}" "$dec")"; done
        best=""; bestn=""
        for s in "${PEERS[@]}"; do
            v=$(fmt "${R[$key|$s]:-NaN}" "$dec")
            [[ $v == n/a ]] && continue
            if [[ -z "$best" ]] || awk -v a="$v" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$v; bestn=$s; fi
        done
        kv_=$(fmt "${R[$key|keel]:-NaN}" "$dec")
        if [[ -n $best ]]; then printf ' %s (%s) |' "$(ratio "$kv_" "$best")" "$bestn"; else printf ' n/a |'; fi
        if [[ -n $cond ]]; then
            if [[ $kv_ != n/a ]] && awk -v x="$kv_" "BEGIN { exit !($cond) }"; then printf ' %s: met |' "$ttext"; else printf ' %s: **missed** |' "$ttext"; fi
        else
            printf ' |'
        fi
        echo " $(fmt "${R[$key|floor]:-NaN}" "$dec") |"
    done
    echo
    echo "Lower is better in every row. \"Top process\" is the process launched (keel, supervisord, s6-svscan, runsvdir);"
    echo "\"supervisor processes\" adds its non-service descendants (s6-supervise, runsv); for keel and supervisord"
    echo "both are the same single process. Pss sums are the fair total for s6/runit (their per-service processes"
    echo "share code pages; VmRSS counts shared pages once per process)."
    echo "*floor* is not a supervisor: \`bench-supbench mini\`, the least any supervisor must do (fork + exec the"
    echo "service, block in sigwaitinfo, reap and fork again at once, TERM all on stop). Its restart and start"
    echo "times are the machine's cost of killing, reaping, forking and exec'ing this service; a supervisor's own"
    echo "overhead is its number minus the floor. Its memory is not comparable (it shares its binary with the"
    echo "services, so its Pss is divided among them)."
    echo
    echo "Why some peers take ~1 s (strace on this machine; bench/README.md, \"Supervisors\"): s6-supervise reaps a dead"
    echo "service at once, then sleeps in \`ppoll(..., 1 s)\` before it spawns \`./run\` again, however long the service ran;"
    echo "supervisord reaps at once but respawns on the next pass of its main loop, after \`poll(..., 1000)\` times out, and"
    echo "that 1 s poll timeout is also its ~1 wake-up per second when idle; runsvdir re-checks its directory every 5 s"
    echo "(its 2 wake-ups in 10 s) and runsv sleeps 1 s when a service that ran < 1 s exits (hence SETTLE_MS > 1 s)."
    echo
    above() { awk -v k="${R[$1|keel]:-NaN}" -v f="${R[$1|floor]:-NaN}" -v d="$2" 'BEGIN { if (k == "NaN" || f == "NaN") print "n/a"; else printf "%+.*f", d, k - f }'; }
    echo "keel minus the floor: restart median $(above rsmed 3) ms, p90 $(above rsp90 3) ms; start $(above start 2) ms; stop $(above stop 2) ms."
    echo
    echo "## Details"
    echo
    echo "| supervisor | restarts (ms, in order) | restart min / max (ms) | start samples (ms) | stop samples (ms) | VmRSS top / all, Pss all (KiB, per round) | processes at $BIG_N |"
    echo "|---|---|---|---|---|---|---|"
    for s in "${SUPS[@]}"; do
        st=$(for x in ${ST[$s]}; do awk -v x="$x" 'BEGIN { printf "%.2f ", x / 1e6 }'; done)
        sp=$(for x in ${SP[$s]}; do awk -v x="$x" 'BEGIN { printf "%.2f ", x / 1e6 }'; done)
        read -r -a a <<<"${RSST[$s]}"; read -r -a b <<<"${RSSA[$s]}"; read -r -a c <<<"${PSSA[$s]}"
        mem=""; for ((i = 0; i < ${#a[@]}; i++)); do mem+="${a[i]}/${b[i]}/${c[i]} "; done
        echo "| $s | ${RAW_RS[$s]% } | $(fmt "${R[rsmin|$s]}" 3) / $(fmt "${R[rsmax|$s]}" 3) | ${st% } | ${sp% } | ${mem% } | ${R[bigprocs|$s]} |"
    done
    echo
    echo "Wall time of this benchmark run: $(( $(date +%s) - START_EPOCH )) s."
} >"$WORK/results.md"

mkdir -p "$(dirname "$RESULTS")"
cp "$WORK/results.md" "$RESULTS"
cat "$WORK/results.md"
log "done in $(( $(date +%s) - START_EPOCH )) s; report written to $RESULTS"
