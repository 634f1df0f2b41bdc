#!/bin/sh
# Runs inside the NFS VM (../shared/nfs/nfs-run): the revision CAS, the lease and fencing across
# two client hosts of one export (DESIGN.md section 5). Usage:
#   nfs-run --vers V tests/nfs/suite.sh [STEP...]      (default: every step)
# Steps: race dead stop-random stop-in-mutex fence counter strict-reclaim sync-race. Each prints "== STEP <name>: start"
# when it begins; at the end one process checks them all and prints one line per step,
# "== STEP <name>: PASS|FAIL (<s>s)", which tests/nfs/run-all.sh counts. A failed step does not
# stop the others (each uses its own run and is cleaned up after); the exit status is 1 if any
# step failed.
set -u
ROOT=$(pwd)
PY=$ROOT/.venv/bin/python
D=$ROOT/tests/nfs/driver.py
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}   # the checkout under test, not an install
export LOCALRUN_LEASE_TTL=${LOCALRUN_LEASE_TTL:-8}
LOCK_WAIT=${LOCALRUN_LOCK_TIMEOUT:-5}
# B's resume must come within the TTL plus a margin: the courtesy mutex's bounded wait (a holder
# that is stopped or cut off keeps it) and generous room for the emulated CPU. v1 waited 120 s.
export MAXWAIT=${MAXWAIT:-$((LOCALRUN_LEASE_TTL + LOCK_WAIT + 30))}
COUNTER_SECS=${COUNTER_SECS:-10}
OUT=/tmp/nfs-out     # the VM's own /tmp: shared by both hosts and the server side
rm -rf $OUT; mkdir -p $OUT
[ $# -gt 0 ] || set -- race dead stop-random stop-in-mutex fence counter

wait_for() {  # wait_for FILE SECONDS
  i=0
  while [ ! -e "$1" ]; do
    i=$((i+1)); [ $i -gt $(($2*5)) ] && { echo "timed out after $2s waiting for $1"; return 1; }
    sleep 0.2
  done
}
count() { ls "$1" 2>/dev/null | grep -c "^$2" ; }
wait_count() {  # wait_count DIR PREFIX N SECONDS
  i=0
  while [ "$(count "$1" "$2")" -lt "$3" ]; do
    i=$((i+1)); [ $i -gt $(($4*5)) ] && { echo "timed out after $4s: $(count "$1" "$2") of $3 $2*"; return 1; }
    sleep 0.2
  done
}
field() { sed -n "s/.*\"$2\": *\([0-9]*\).*/\1/p" "$1"; }   # field FILE KEY: an int of a result
proc_state() { cut -d')' -f2 "/proc/$1/stat" 2>/dev/null | cut -d' ' -f2; }
expect_exit() {  # expect_exit PID CODE WHAT
  xrc=0; wait "$1" || xrc=$?
  [ "$xrc" = "$2" ] || { echo "$3 exited $xrc, not $2"; return 1; }
}
PIDS=""
bg() { "$@" & PIDS="$PIDS $!"; LAST=$!; }   # a background job of this step, cleaned up after it
cleanup() {  # after every step: no host stays cut off, no process of the step lingers
  heal A 2>/dev/null; heal B 2>/dev/null
  for p in $PIDS; do kill -CONT "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
  for p in $PIDS; do wait "$p" 2>/dev/null; done
  PIDS=""
}

# 1. Racers on both hosts resume one run at once: exactly one wins.
step_race() {
  o=$OUT/race
  bg on_host A $PY $D race $MNT_A race 3 6 $o $o/go make
  bg on_host B $PY $D race $MNT_B race 3 6 $o $o/go
  wait_count $o ready- 6 240 && wait_for $o/created 240 || return 1
  touch $o/go                                 # one release: every racer is waiting for it
  for p in $PIDS; do wait "$p"; done
}

# Start a writer on A and a takeover on B (imported, waiting for GO); $1 = step name.
start_pair() {
  o=$OUT/$1; mkdir -p $o
  bg on_host A $PY $D writer $MNT_A "$1" $o ${2:-}; W=$LAST
  bg on_host B $PY $D takeover $MNT_B "$1" $o $o/go; T=$LAST
  wait_for $o/writer-ready 180 && wait_for $o/takeover-ready 180
}

# 2. A node dies (cut off, every process killed): B takes over after the TTL, and the dead
#    node's rows after the takeover never appear.
step_dead() {
  start_pair dead || return 1
  partition A; kill_host_procs A
  touch $o/go
  wait $T || { echo "B's takeover failed"; return 1; }
  heal A; wait $W       # a killed NFS client process finishes exiting once it reaches the server
  return 0              # (killed: its exit status is 137)
}

# After B took over from a stopped A: wake A, which must commit nothing and exit 6.
wake_and_check() {
  [ "$(proc_state $wpid)" = T ] || { echo "the writer is not stopped: $(proc_state $wpid)"; return 1; }
  touch $o/go
  wait $T || { echo "B's takeover failed"; return 1; }
  kill -CONT $wpid
  expect_exit $W 6 "the woken writer" || return 1
  wait_for $o/writer-superseded 10
}

# 3a. The owner is stopped (SIGSTOP, as SLURM suspends a job) at a random instant.
step_stop_random() {
  start_pair stop-random || return 1
  wpid=$(field $o/writer-ready pid)
  sleep "$(awk 'BEGIN { srand(); printf "%.2f", rand() * 2 }')"
  kill -STOP $wpid
  wake_and_check stop-random
}

# 3b. The owner stops itself inside the mutex critical section (the instrumented commit).
step_stop_in_mutex() {
  start_pair stop-in-mutex $OUT/stop-in-mutex/trigger || return 1
  wpid=$(field $o/writer-ready pid)
  touch $o/trigger
  wait_for $o/writer-stopping 60 || return 1
  grep -q '"mutex_held": true' $o/writer-stopping || { echo "stopped without the mutex: $(cat $o/writer-stopping)"; return 1; }
  i=0; while [ "$(proc_state $wpid)" != T ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  wake_and_check stop-in-mutex
}

# 4. Fencing: A hangs on NFS (cut off, alive); B takes over; A comes back and must commit
#    nothing more (RunSupersededError, exit 6).
step_fence() {
  start_pair fence || return 1
  partition A
  touch $o/go
  wait $T || { echo "B's takeover failed"; return 1; }
  heal A
  expect_exit $W 6 "the hung writer" || return 1
  wait_for $o/writer-superseded 10
}

# 5. Revisions created on one client are seen by the other's commit path: A and B commit to one
#    run as fast as they can, with the mutex as shipped and then with no mutex at all (the CAS
#    alone); the counter equals the commits made and no revision number is skipped or reused.
step_counter() {
  o=$OUT/counter
  make=make
  for mode in mutex cas; do
    rm -f $o/go
    bg on_host A $PY $D commit-loop $MNT_A counter $o $o/go $COUNTER_SECS $mode $make
    bg on_host B $PY $D commit-loop $MNT_B counter $o $o/go $COUNTER_SECS $mode
    wait_count $o "ready-$mode-" 2 240 || return 1
    touch $o/go
    for p in $PIDS; do wait "$p" || { echo "a commit loop failed"; return 1; }; done
    PIDS=""; make=""
  done
}

# 6. The courtesy mutex never fails a commit: A stops (SIGSTOP) while publishing its claim under
#    filelock's StrictSoftFileLock (the mutex of nolock mounts); B, more than 2 s later, removes
#    that claim record as stale and commits; A continues and must commit too.
step_strict_reclaim() {
  o=$OUT/strict-reclaim
  bg on_host A $PY $D strict-commit $MNT_A strict-reclaim $o make-and-stop; a=$LAST
  wait_for $o/strict-stopping 240 || return 1
  apid=$(field $o/strict-stopping pid)
  i=0; while [ "$(proc_state $apid)" != T ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  [ "$(proc_state $apid)" = T ] || { echo "A is not stopped: $(proc_state $apid)"; return 1; }
  sleep 3                                     # filelock reclaims private records after 2 s
  on_host B $PY $D strict-commit $MNT_B strict-reclaim $o || return 1
  kill -CONT $apid
  wait $a || { echo "A's commit failed after it continued"; return 1; }
}

# 7. Two hosts push one root to one remote (both on the export) at once (issue 9): A writes
#    the runs (one resumed), both syncers import and wait, one GO releases them; the remote then
#    equals the root (checked from the server side), and a second sync from B, without its
#    cursors, adds and rewrites nothing.
step_sync_race() {
  o=$OUT/sync-race
  bg on_host A $PY $D sync-race $MNT_A/sync-race/root file://$MNT_A/sync-race/remote $o $o/go make
  bg on_host B $PY $D sync-race $MNT_B/sync-race/root file://$MNT_B/sync-race/remote $o $o/go again
  wait_count $o ready- 2 240 || return 1
  echo "sync-race: runs written and both syncers waiting after $(( $(date +%s) - t0 ))s"
  touch $o/go
  for p in $PIDS; do wait "$p" || { echo "a syncer failed"; return 1; }; done
}

echo "== NFS $NFS_VERS: steps $*"
for s in "$@"; do
  t0=$(date +%s)
  echo "== STEP $s: start"
  mkdir -p $OUT/$s
  src=0; "step_$(echo $s | tr - _)" || src=$?
  cleanup
  secs=$(( $(date +%s) - t0 ))
  printf '{"rc": %s, "seconds": %s}\n' $src $secs > $OUT/$s/shell
  echo "-- $s: ran in ${secs}s (exit $src), checked below"
done
# One process checks every step (importing localrun costs 10 to 20 s in the VM).
$PY $D check-all $SRV $OUT "$@"
