# Runs keel's cgroup test binary (tests/cgroup.rs, installed as /bin/cgroup-tests) on real
# cgroup v2, keel being PID 1. One RESULT line per test.
for t in $(/bin/cgroup-tests --list 2>/dev/null | sed -n 's/: test$//p'); do
  if out=$(KEEL_TEST_REQUIRE=cgroup /bin/cgroup-tests --exact "$t" --test-threads=1 2>&1); then
    echo "RESULT $t PASS"
  else
    echo "$out" | tail -n 15
    echo "RESULT $t FAIL"
  fi
done
