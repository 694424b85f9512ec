# A signal to a nested keel reaches its CMD, whose own exit code then comes back.
register nested_forward
scenario_nested_forward() {
    rm -f "$STATE/fwd-ready"
    F="$STATE/fwd-ready" "$KEEL" -- sh -c '
        trap "exit 42" USR1
        echo ready > "$F"
        while :; do sleep 0.05; done' &
    _k=$!
    if ! wait_for 50 test -s "$STATE/fwd-ready"; then
        kill -KILL $_k
        MSG="nested CMD never got ready"
        return 1
    fi
    kill -USR1 $_k
    wait $_k
    _got=$?
    if [ "$_got" != 42 ]; then
        MSG="USR1 to keel: exit $_got, want 42 (CMD's trap)"
        return 1
    fi
    MSG="USR1 to keel reached CMD (exit 42)"
}
