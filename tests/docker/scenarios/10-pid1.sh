# keel is PID 1 and the runner is its direct child (the CMD).
register pid1
scenario_pid1() {
    _cmd=$(tr '\0' ' ' < /proc/1/cmdline)
    _argv0=${_cmd%% *}
    case "${_argv0##*/}" in
        keel|docker-init|podman-init) ;;
        *) MSG="PID 1 is '$_cmd', not keel"; return 1 ;;
    esac
    if [ "$PPID" != 1 ]; then
        MSG="the runner's parent is $PPID, not PID 1 ('$_cmd')"
        return 1
    fi
    MSG="PID 1 is '$_cmd'"
}
