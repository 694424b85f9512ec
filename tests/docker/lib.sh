# Helpers for keel's in-container scenarios (sourced by run.sh; busybox sh is enough).
#
# A scenario is a shell function `scenario_NAME` that runs in the runner's own shell -- the
# runner is keel's CMD, so a signal sent to PID 1 comes back to this very shell -- sets MSG to
# one line of detail (or of why it failed) and returns 0 (pass) or 1 (fail). Do anything that
# may exit or change traps in a subshell or a nested `$KEEL -- sh -c ...`. Helpers use
# `local` (busybox sh and dash have it); scenarios prefix their variables with `_`.

KEEL=${KEEL:-/sbin/keel}                 # the keel inside the image, for nested instances
STATE=${STATE:-/tmp/keel-scenarios}      # scratch files
SCENARIOS=""

# register NAME: add scenario_NAME to the list the runner runs, in order.
register() { SCENARIOS="$SCENARIOS $1"; }

# now: NOW = centiseconds since boot (busybox date has no %N).
now() {
    local up rest
    read -r up rest < /proc/uptime
    NOW=$(( ${up%.*}${up#*.} ))
}

# wait_for TENTHS CMD...: run CMD every 0.1 s until it succeeds; fail after TENTHS tries.
wait_for() {
    local tries=$1
    shift
    while [ "$tries" -gt 0 ]; do
        "$@" && return 0
        sleep 0.1
        tries=$((tries - 1))
    done
    return 1
}

# count_zombies: ZOMBIES = number of processes in state Z in this PID namespace, ZLIST = them.
count_zombies() {
    local f l
    ZOMBIES=0
    ZLIST=""
    for f in /proc/[0-9]*/stat; do
        { read -r l < "$f"; } 2>/dev/null || continue
        case "${l##*) }" in
            Z*) ZOMBIES=$((ZOMBIES + 1)); ZLIST="$ZLIST ${l%% *}" ;;
        esac
    done
}
no_zombies() { count_zombies; [ "$ZOMBIES" -eq 0 ]; }

# ppid_of PID: PPID = the parent of PID (empty when PID is gone).
ppid_of() {
    local l
    PPID_OF=""
    { read -r l < "/proc/$1/stat"; } 2>/dev/null || return 1
    set -- ${l##*) }
    PPID_OF=$2
}

# gone PID: PID no longer exists (a zombie counts as existing: it is not reaped yet).
gone() { [ ! -e "/proc/$1" ]; }

# file_has FILE TEXT: FILE exists and contains TEXT.
file_has() { [ -f "$1" ] && grep -q "$2" "$1"; }
