# Shared by the bench scripts (sourced; set BENCH_TAG first): logging, the command-line
# record, argument and knob checks, and installing missing Debian packages.

log() { printf '[%s %s] %s\n' "$BENCH_TAG" "$(date +%T)" "$*" >&2; }
die() { printf '[%s %s] ERROR: %s\n' "$BENCH_TAG" "$(date +%T)" "$*" >&2; exit 1; }

# CMDLINE: the exact command line, as far as a script can see it: the knobs (names given)
# that were set, then the script and its arguments (pass "$@" after --).
bench_cmdline() {
    local v
    CMDLINE=""
    while (($#)) && [[ $1 != -- ]]; do
        v=$1; shift
        if [[ -n "$(printenv "$v" || true)" ]]; then CMDLINE+="$v=$(printf '%q' "$(printenv "$v")") "; fi
    done
    (($#)) && shift
    CMDLINE+="bash $0${*:+ $*}"
}

# --help prints the script's header comment; the scripts take no other argument.
bench_args() {
    case "${1:-}" in
        -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        "") ;;
        *) die "unknown argument: $1 (configure this script with environment variables, see --help)" ;;
    esac
}

# need_root WHY
need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root: $1"; }

# positive_ints VAR...: each must be a positive integer; "08" becomes 8, not an octal error.
positive_ints() {
    local v
    for v in "$@"; do
        [[ ${!v} =~ ^[0-9]+$ ]] && (( 10#${!v} > 0 )) || die "$v must be a positive integer, got '${!v}'"
        printf -v "$v" '%d' "$(( 10#${!v} ))"
    done
}

# apt_install PKG...: install with --no-install-recommends (logs in $WORK), running
# `apt-get update` first only if some package has no candidate yet (a fresh machine).
# Honours NO_INSTALL=1.
apt_install() {
    local p pol
    (($#)) || return 0
    [[ $NO_INSTALL == 1 ]] && die "missing packages and NO_INSTALL=1: $*"
    command -v apt-get >/dev/null || die "missing $* and no apt-get to install them"
    for p in "$@"; do
        pol=$(apt-cache policy "$p" 2>/dev/null || true)
        if [[ ! $pol =~ Candidate:\ [0-9] ]]; then
            log "apt-get update (no candidate for $p yet)"
            apt-get update >"$WORK/apt-update.log" 2>&1 || { tail -n 20 "$WORK/apt-update.log" >&2; die "apt-get update failed"; }
            break
        fi
    done
    log "installing: $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >"$WORK/apt.log" 2>&1 ||
        { tail -n 20 "$WORK/apt.log" >&2; die "apt-get install $* failed"; }
}

# Statistics over numbers on stdin (NaN when there are none).
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) { print "NaN"; exit }
    if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# the median of a space- or comma-separated list, NaNs left out
med() { tr ' ,' '\n\n' <<<"$1" | awk 'NF && $1 != "NaN"' | median; }
# $1 with $2 decimals, n/a for nothing
fmt() { awk -v x="$1" -v d="$2" 'BEGIN { if (x == "NaN" || x == "") print "n/a"; else printf "%.*f\n", d, x }'; }
