#!/bin/sh
# nfs-run --vers 4.2 tests/nfs/hint_starvation.sh: two clients replace (rename over) one file as
# fast as they can, first reading it back after each replace, then not. On NFSv4 with reads,
# one host's os.replace stalls for seconds (the server recalls the read delegation the other
# client holds on the file being replaced and answers NFS4ERR_DELAY; the client backs off
# 0.1, 0.2, 0.4 ... up to 15 s, and the other client has meanwhile replaced and re-read the
# file, holding a delegation on the new one). Without the reads, no stall.
set -u
PY=$(pwd)/.venv/bin/python
S=$(pwd)/tests/nfs/hint_starvation.py
SECS=${1:-15}
OUT=/tmp/starve; rm -rf $OUT; mkdir -p $OUT
for mode in read noread; do
  on_host A $PY $S $MNT_A $SECS $OUT/go-$mode $OUT $mode & a=$!
  on_host B $PY $S $MNT_B $SECS $OUT/go-$mode $OUT $mode & b=$!
  while [ "$(ls $OUT | grep -c "^ready-$mode-")" -lt 2 ]; do sleep 0.2; done
  touch $OUT/go-$mode
  wait $a; wait $b
done
