#!/bin/sh
# keel's in-container scenarios. Dockerfile.test's image runs this as keel's CMD:
#     docker run --rm keel-test        (ENTRYPOINT /sbin/keel --, so keel is PID 1)
# Prints one line per check ("ok - NAME: detail" or "FAIL - NAME: why"), then a summary,
# and exits 1 if any check failed. Run a subset with: run.sh NAME...
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
for f in "$HERE"/scenarios/*.sh; do
    . "$f"
done
rm -rf "$STATE" && mkdir -p "$STATE"

[ $# -gt 0 ] && SCENARIOS="$*"
pass=0
fail=0
for s in $SCENARIOS; do
    MSG=""
    if "scenario_$s"; then
        pass=$((pass + 1))
        echo "ok - $s: $MSG"
    else
        fail=$((fail + 1))
        echo "FAIL - $s: $MSG"
    fi
done
echo "keel scenarios: $pass ok, $fail failed"
[ "$fail" -eq 0 ]
