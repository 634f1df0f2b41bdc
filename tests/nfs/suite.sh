#!/bin/sh
# Runs inside the NFS VM (../shared/nfs/nfs-run): the mutex, the lease and fencing across two
# client hosts of one export. Usage: nfs-run --vers V tests/nfs/suite.sh [race|all]
set -eu
PY=$(pwd)/.venv/bin/python
D=$(pwd)/tests/nfs/driver.py
WHAT=${1:-all}
export LOCALRUN_LEASE_TTL=${LOCALRUN_LEASE_TTL:-8}
export HOLD=${HOLD:-25}
OUT=/tmp/nfs-out     # the VM's own /tmp: results of both hosts gathered by the server side
mkdir -p $OUT
wait_for() {  # wait_for FILE SECONDS
  i=0; while [ ! -e "$1" ]; do i=$((i+1)); [ $i -gt $(($2*5)) ] && { echo "timed out waiting for $1"; return 1; }; sleep 0.2; done
}
echo "== NFS $NFS_VERS: mutex kind on A: $(on_host A $PY $D kind $MNT_A/k)"

# 1. Racers on both hosts resume one run at once: exactly one wins.
on_host A $PY $D create $MNT_A/race
on_host A $PY $D race $MNT_A/race 3 $OUT/race $OUT/go & a=$!
on_host B $PY $D race $MNT_B/race 3 $OUT/race $OUT/go & b=$!
wait_for $OUT/race/ready-hostA 120; wait_for $OUT/race/ready-hostB 120
touch $OUT/go
wait $a; wait $b
$PY $D check-race $OUT/race 6
[ "$WHAT" = race ] && exit 0

# 2. A node dies (cut off, every process killed): the other host takes over after the TTL,
#    and the dead node's rows after the takeover never appear.
on_host A $PY $D writer $MNT_A/dead $OUT/dead & w=$!
wait_for $OUT/dead/writer-ready 120
partition A; kill_host_procs A
on_host B $PY $D takeover $MNT_B/dead $OUT/dead
heal A; wait $w || true
$PY $D check-takeover $SRV/dead $OUT/dead

# 3. Fencing: node A hangs on NFS (cut off, alive); B takes over; A wakes up and must commit
#    nothing more (RunSupersededError, exit 6).
on_host A $PY $D writer $MNT_A/fence $OUT/fence & w=$!
wait_for $OUT/fence/writer-ready 120
partition A
on_host B $PY $D takeover $MNT_B/fence $OUT/fence
heal A
rc=0; wait $w || rc=$?
[ "$rc" = 6 ] || { echo "the hung writer exited $rc, not 6 (superseded)"; exit 1; }
wait_for $OUT/fence/writer-superseded 60
$PY $D check-takeover $SRV/fence $OUT/fence
echo "== NFS $NFS_VERS: all passed"
