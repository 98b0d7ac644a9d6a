#!/usr/bin/env bash
# The demo of `make run`: starts jetqa on its embedded NATS server, runs the
# testos demo job on a real VM to its result, then a job that fails on
# purpose, shows both, and stops jetqa.
set -euo pipefail
jetqa=${1:?usage: demo.sh JETQA DATA TESTOS}
data=${2:?}
testos=$(cd "${3:?}" && pwd)
mkdir -p "$data"
log="$data/jetqa.log"
api=${JETQA_API:-http://127.0.0.1:9526}

# Jobs name the testos image by path: the worker lets them read files
# there, and nowhere else on this host.
"$jetqa" up --data "$data" --asset-paths "$testos" >"$log" 2>&1 &
pid=$!
stop() {
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" || true
  fi
}
trap stop EXIT
for _ in $(seq 100); do
  curl -sf "$api/health" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { echo "jetqa did not start:"; cat "$log"; exit 1; }
  sleep 0.2
done
echo "jetqa is up (log: $log)"
# The command line connects to NATS as the operator, with the credentials
# jetqa wrote into its data directory, and signs its API requests with the
# API key jetqa made there for the local user.
export JETQA_CREDS="$data/admin.creds"
export JETQA_CLIENT_CONF="$data/client.conf"

echo
echo "== register the testos ISO on the server (workers fetch it over NATS)"
"$jetqa" asset add "$testos/testos.iso"

settings=(DISTRI=testos VERSION=1 FLAVOR=demo ARCH=x86_64 MACHINE=64bit QEMURAM=512
          ISO=testos.iso "CASEDIR=$testos/testos-tests")

echo
echo "== demo job: boot testos, use its shell, check screen and serial"
id=$("$jetqa" job post "${settings[@]}" TEST=demo)
passed=0
"$jetqa" job watch "$id" && passed=1
echo
"$jetqa" job show "$id"
"$jetqa" job results "$id" "$data/results/$id"

echo
echo "== a job that fails on purpose (FAIL_ON_PURPOSE=1)"
fid=$("$jetqa" job post "${settings[@]}" TEST=demo-fail FAIL_ON_PURPOSE=1)
failed=0
"$jetqa" job watch "$fid" || failed=1
echo
"$jetqa" job show "$fid"
"$jetqa" job results "$fid" "$data/results/$fid"

echo
if ((passed && failed)); then
  echo "demo: job $id passed and job $fid failed as it should."
  echo "Screenshots and serial logs: $data/results/$id and $data/results/$fid"
  echo "Run jetqa yourself: $jetqa up --data $data --asset-paths $testos"
else
  echo "demo: unexpected results (job $id passed=$passed, job $fid failed=$failed); see $log"
  exit 1
fi
