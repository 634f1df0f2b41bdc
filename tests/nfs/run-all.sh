#!/usr/bin/env bash
# make test-nfs: the mutex, lease and fencing suite on real NFS with two client hosts, using the
# VM tool in ../shared/nfs (NFS v4.2 and v3; the mutex race also on a v3 nolock mount, where
# localrun must fall back to filelock's StrictSoftFileLock). If the VM cannot be built or started
# on this machine, this says so loudly and exits 0, so the rest of CI still runs; a test that ran
# and failed exits 1.
set -u
cd "$(dirname "$0")/../.."
loud() {
  printf '\n%s\n### NFS TESTS DID NOT RUN: %s\n%s\n\n' "$(printf '#%.0s' $(seq 70))" "$*" "$(printf '#%.0s' $(seq 70))"
}
NFS=""
for c in "${LOCALRUN_NFS_TOOL:-}" ../shared/nfs /work/shared/nfs; do
  if [ -n "$c" ] && [ -x "$c/nfs-run" ]; then NFS=$c; break; fi
done
[ -n "$NFS" ] || { loud "no nfs tool (../shared/nfs/nfs-run) beside this checkout"; exit 0; }
"$NFS/build-vm" || { loud "$NFS/build-vm failed (see its log)"; exit 0; }
fail=0
for plan in "4.2 all" "3 all" "3:nolock race"; do
  set -- $plan
  echo "=== NFS $1: tests/nfs/suite.sh $2"
  "$NFS/nfs-run" --vers "$1" --timeout 900 tests/nfs/suite.sh "$2"
  rc=$?
  if [ "$rc" = 125 ]; then loud "the NFS VM did not start (nfs-run exit 125; see ${NFSVM_DIR:-/tmp/nfsvm}/run/setup.log)"; exit 0; fi
  [ "$rc" = 0 ] || { echo "=== NFS $1: FAILED (exit $rc)"; fail=1; }
done
exit $fail
