# An orphan storm: 500 double-forked short-lived processes. Each is re-parented to PID 1 (keel)
# when its parent subshell exits, and keel must reap it: no zombie may be left.
register reap_orphans
scenario_reap_orphans() {
    # One long-lived orphan, to see who adopts orphans.
    (sleep 5 & echo $! > "$STATE/orphan")
    _n=500
    now; _t0=$NOW
    _i=0
    while [ $_i -lt $_n ]; do
        (sleep 0.0$((_i % 5 + 1)) &)
        _i=$((_i + 1))
    done
    now; _spawn=$((NOW - _t0))
    _orphan=$(cat "$STATE/orphan")
    ppid_of "$_orphan"
    if [ "$PPID_OF" != 1 ]; then
        MSG="orphan $_orphan was adopted by '$PPID_OF', not PID 1"
        return 1
    fi
    if ! wait_for 50 no_zombies; then
        MSG="$ZOMBIES zombie(s) left 5 s after the storm: $(echo $ZLIST | cut -d' ' -f1-10)..."
        return 1
    fi
    now
    MSG="$_n orphans (spawned in ${_spawn}0 ms) adopted by PID 1 and reaped; no zombie after $(( (NOW - _t0) * 10 )) ms"
}
