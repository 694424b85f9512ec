# Signals sent to PID 1 from inside the container reach CMD (this runner). The kernel drops a
# signal sent to a namespace's PID 1 unless PID 1 handles (or blocks) it, so this also shows
# that keel takes them.
register signals_to_pid1
GOT=""
got_signal() {
    case " $GOT " in
        *" $1 "*) return 0 ;;
    esac
    return 1
}
scenario_signals_to_pid1() {
    for _sig in USR1 USR2 HUP INT TERM WINCH; do
        # The trap runs in this shell, the CMD keel forwards to.
        trap "GOT=\"\$GOT $_sig\"" "$_sig"
        kill "-$_sig" 1 || { MSG="kill -$_sig 1 failed"; return 1; }
        if ! wait_for 50 got_signal "$_sig"; then
            trap - "$_sig"
            MSG="SIG$_sig sent to PID 1 never reached CMD (got:$GOT)"
            return 1
        fi
        trap - "$_sig"
    done
    MSG="forwarded to CMD:$GOT"
}
