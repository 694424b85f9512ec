# KEEL_STOP_TIMEOUT: a CMD that ignores TERM is SIGKILLed that long after TERM reached it.
register stop_timeout
scenario_stop_timeout() {
    rm -f "$STATE/st-ready"
    F="$STATE/st-ready" KEEL_STOP_TIMEOUT=1s "$KEEL" -- sh -c '
        trap "" TERM
        echo ready > "$F"
        while :; do sleep 0.05; done' &
    _k=$!
    if ! wait_for 50 test -s "$STATE/st-ready"; then
        kill -KILL $_k
        MSG="nested CMD never got ready"
        return 1
    fi
    now; _t0=$NOW
    kill -TERM $_k
    wait $_k
    _got=$?
    now; _ms=$(( (NOW - _t0) * 10 ))
    if [ "$_got" != 137 ]; then
        MSG="exit $_got, want 137 (SIGKILL)"
        return 1
    fi
    if [ "$_ms" -lt 900 ] || [ "$_ms" -ge 3000 ]; then
        MSG="SIGKILL came $_ms ms after TERM, want about 1000"
        return 1
    fi
    MSG="TERM ignored; CMD SIGKILLed after $_ms ms (KEEL_STOP_TIMEOUT=1s), exit 137"
}
