# After CMD exits, keel sends TERM to what is left and exits the moment nothing is left;
# a straggler that ignores TERM is SIGKILLed after --grace.
register drain_term
scenario_drain_term() {
    rm -f "$STATE/straggler"
    cat > "$STATE/straggler.sh" <<'SH'
trap 'echo TERM > "$F"; exit 0' TERM
while :; do sleep 0.05; done
SH
    now; _t0=$NOW
    F="$STATE/straggler" "$KEEL" --grace 5s -- sh -c 'sh "$1" & sleep 0.3; exit 4' sh "$STATE/straggler.sh"
    _got=$?
    now; _ms=$(( (NOW - _t0) * 10 ))
    if [ "$_got" != 4 ]; then
        MSG="keel exited $_got, want CMD's 4"
        return 1
    fi
    if ! file_has "$STATE/straggler" TERM; then
        MSG="the straggler never got TERM"
        return 1
    fi
    if [ "$_ms" -ge 2500 ]; then
        MSG="keel took $_ms ms (CMD 300 ms, grace 5 s): it did not exit when the straggler was gone"
        return 1
    fi
    MSG="straggler got TERM; keel exited 4 after $_ms ms (CMD ran 300 ms; --grace 5s)"
}

register drain_kill
scenario_drain_kill() {
    rm -f "$STATE/stubborn"
    cat > "$STATE/stubborn.sh" <<'SH'
echo $$ > "$F"
trap '' TERM
while :; do sleep 0.05; done
SH
    now; _t0=$NOW
    F="$STATE/stubborn" "$KEEL" --grace 1s -- sh -c 'sh "$1" & sleep 0.3; exit 0' sh "$STATE/stubborn.sh"
    _got=$?
    now; _ms=$(( (NOW - _t0) * 10 ))
    _pid=$(cat "$STATE/stubborn" 2>/dev/null)
    if [ "$_got" != 0 ]; then
        MSG="keel exited $_got, want CMD's 0"
        return 1
    fi
    if [ -z "$_pid" ] || ! wait_for 30 gone "$_pid"; then
        MSG="the TERM-ignoring straggler '$_pid' is still there"
        return 1
    fi
    if [ "$_ms" -lt 1200 ] || [ "$_ms" -ge 3500 ]; then
        MSG="keel took $_ms ms, want about 1300 (CMD 300 ms + --grace 1s)"
        return 1
    fi
    MSG="TERM-ignoring straggler killed; keel exited after $_ms ms (CMD 300 ms + --grace 1s)"
}
