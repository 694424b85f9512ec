#!/bin/sh
# A badly behaved container payload, to watch keel handle it:
#   - it leaves orphans behind (zombies without a correct PID 1),
#   - it starts a background worker that needs a moment to shut down on SIGTERM,
#   - then the main process exits with code 3.
# Run it under keel (see README): keel reaps the orphans, sends the worker SIGTERM, waits
# for it to finish (not a fixed sleep), and exits 3.
echo "demo: main process is pid $$"
for i in 1 2 3 4 5; do ( sleep 0.1 & ) ; done   # five orphans, re-parented to keel
sh -c 'trap "echo \"worker: got SIGTERM, flushing...\"; sleep 0.3; echo \"worker: done\"; exit 0" TERM
       while :; do sleep 1 & wait $!; done' &
sleep 0.5
if [ "$PPID" = 1 ]; then   # keel is PID 1 of this namespace: show the whole namespace
  echo "demo: processes now:"
  ps -o pid,ppid,stat,args 2>/dev/null || true
fi
echo "demo: main process exits with 3; keel drains the worker"
exit 3
