# Like cgroup-tests.sh, but from a non-root cgroup as in a container (/sys/fs/cgroup/ctr with
# the controllers delegated by its parent): the module must move every process of ctr into
# ctr/init before it can enable controllers (the no-internal-process rule).
r() { if [ "$2" = 0 ]; then echo "RESULT $1 PASS $3"; else echo "RESULT $1 FAIL $3"; fi; }
mkdir /sys/fs/cgroup/ctr
echo "+cpu +io +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
echo $$ > /sys/fs/cgroup/ctr/cgroup.procs
sleep 1000 &
bystander=$!
for t in $(/bin/cgroup-tests --list 2>/dev/null | sed -n 's/: test$//p'); do
  if out=$(KEEL_TEST_REQUIRE=cgroup /bin/cgroup-tests --exact "$t" --test-threads=1 2>&1); then
    echo "RESULT $t PASS"
  else
    echo "$out" | tail -n 15
    echo "RESULT $t FAIL"
  fi
done
[ -z "$(cat /sys/fs/cgroup/ctr/cgroup.procs)" ]; r ctr-emptied $? "$(cat /sys/fs/cgroup/ctr/cgroup.procs | tr '\n' ' ')"
grep -qx "$bystander" /sys/fs/cgroup/ctr/init/cgroup.procs; r bystander-moved-to-init $? ""
sc=$(cat /sys/fs/cgroup/ctr/cgroup.subtree_control)
case " $sc " in *" memory "*) case " $sc " in *" pids "*) true ;; *) false ;; esac ;; *) false ;; esac; r ctr-controllers-enabled $? "$sc"
kill $bystander
