#!/usr/bin/env bash
# keel ctl: `keel ctl status` latency with 200 services, and keel's memory with 1,000 idle
# control connections. One invocation; writes bench/control-results.md.
#   KEEL  the keel binary (default: the static release build, built if missing)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
KEEL=${KEEL:-$REPO/target/x86_64-unknown-linux-musl/release/keel}
[ -x "$KEEL" ] || (cd "$REPO" && cargo build --release --target x86_64-unknown-linux-musl >/dev/null 2>&1)
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
command -v python3 >/dev/null || apt-get install -y -qq python3 >/dev/null
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
for i in $(seq 1 200); do
  printf '[service.s%03d]\ncommand = ["sleep", "100000"]\noutput = "inherit"\n' "$i"
done > "$WORK/keel.toml"
KEEL_RUNTIME_DIR=$WORK/run "$KEEL" --config "$WORK/keel.toml" >/dev/null 2>"$WORK/stderr" &
PID=$!
SOCK=$WORK/run/control.sock
for _ in $(seq 1 500); do [ -S "$SOCK" ] && break; sleep 0.01; done
"$KEEL" ctl -s "$SOCK" wait-ready --timeout 30s
rss() { awk '/^VmRSS/{print $2}' "/proc/$PID/status"; }
base=$(rss)
hyperfine -N -w 10 -r 200 --export-json "$WORK/h.json" "$KEEL ctl -s $SOCK status" >/dev/null
read -r mean median <<<"$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.3f %.3f" % (r["mean"]*1e3, r["median"]*1e3))' "$WORK/h.json")"
# 1,000 idle connections, held open by one python process.
python3 - "$SOCK" <<'PY' &
import socket, sys, time
conns = []
for _ in range(1000):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    conns.append(s)
time.sleep(20)
PY
HOLD=$!
sleep 3
idle=$(rss)
conns=$(ls /proc/$PID/fd | wc -l)
kill $HOLD 2>/dev/null || true
{
  echo "# keel ctl benchmarks"
  echo
  echo "- Date: $(date -u '+%F %T') UTC; kernel $(uname -r); nproc $(nproc); load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- Command: \`bash bench/control.sh\` (keel $(stat -c %s "$KEEL") bytes)"
  echo
  echo "| metric | value |"
  echo "|---|---:|"
  echo "| \`keel ctl status\` with 200 services, whole command (fork+exec of the client, connect, answer): median ms (mean) | $median ($mean) |"
  echo "| keel VmRSS with 200 services (KiB) | $base |"
  echo "| keel VmRSS with 200 services + 1,000 idle control connections (KiB) | $idle |"
  echo "| keel's open fds with the 1,000 connections | $conns |"
} | tee "$REPO/bench/control-results.md"
