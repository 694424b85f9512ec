# CMD's exit code passes through a nested keel (a plain process, i.e. a subreaper), signal
# deaths become 128+N, and exec failures give 127/126 with keel's message.
register exit_codes
scenario_exit_codes() {
    for _case in "0:exit 0" "3:exit 3" "255:exit 255" "143:kill -TERM \$\$" "137:kill -KILL \$\$" "130:kill -INT \$\$"; do
        _want=${_case%%:*}
        _script=${_case#*:}
        "$KEEL" -- sh -c "$_script"
        _got=$?
        if [ "$_got" != "$_want" ]; then
            MSG="keel -- sh -c '$_script' exited $_got, want $_want"
            return 1
        fi
    done
    "$KEEL" -- /no/such/cmd 2> "$STATE/err127"
    _got=$?
    if [ "$_got" != 127 ] || ! grep -q "cannot run '/no/such/cmd'" "$STATE/err127"; then
        MSG="missing command: exit $_got, stderr '$(cat "$STATE/err127")'"
        return 1
    fi
    echo 'echo hi' > "$STATE/not-executable"
    chmod 644 "$STATE/not-executable"
    "$KEEL" -- "$STATE/not-executable" 2> "$STATE/err126"
    _got=$?
    if [ "$_got" != 126 ]; then
        MSG="non-executable command: exit $_got, want 126 (stderr '$(cat "$STATE/err126")')"
        return 1
    fi
    MSG="0 3 255 143 137 130 pass through; 127 ($(cat "$STATE/err127")); 126"
}
