#!/usr/bin/env bash
# The main job on the embedded default: a local kube-apiserver + etcd, the Azure simulator, the operator and the
# examples. Shows the caches moving through their phases; leaves everything running for you to poke at.
#
#   scripts/demo.sh        # (make demo) start everything, apply examples/, watch until the caches settle
#   scripts/demo.sh down   # (make demo-down) stop the operator, the simulator and the control plane
#
# Everything listens on 127.0.0.1 only; state and logs live in .dev/ (gitignored).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
dev="$repo/.dev"
speed=${HPCC_DEMO_SPEED:-20} # simulated seconds per real second: a 10-minute create takes 30 s
settle_timeout=${HPCC_DEMO_TIMEOUT:-240}
metrics=${HPCC_DEMO_METRICS_ADDR:-127.0.0.1:9464} # /metrics of the operator

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

stop_pid() { # stop the process recorded in $1, if any
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

if [ "${1:-}" = down ]; then
  stop_pid "$dev/operator.pid"
  stop_pid "$dev/simulator.pid"
  "$here/dev-cluster.sh" down
  exit 0
fi

mkdir -p "$dev"
say "Building the control-plane binaries (cached after the first run) and the operator"
bin=$("$here/test-deps.sh")
export PATH="$bin:$PATH"
cargo build --quiet --bin hpc-cache-operator
op="$repo/target/debug/hpc-cache-operator"

say "Starting a local kube-apiserver + etcd"
eval "$("$here/dev-cluster.sh" up)"

say "Starting the Azure simulator (clock ${speed}x; seed: examples/seed.yaml)"
stop_pid "$dev/operator.pid"
stop_pid "$dev/simulator.pid"
rm -f "$dev/azure.env"
"$op" simulate --seed "$repo/examples/seed.yaml" --speed "$speed" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --env-file "$dev/azure.env" >"$dev/simulator.log" 2>&1 &
echo $! >"$dev/simulator.pid"
for _ in $(seq 100); do [ -s "$dev/azure.env" ] && break; sleep 0.1; done
[ -s "$dev/azure.env" ] || { cat "$dev/simulator.log" >&2; echo "the simulator did not start" >&2; exit 1; }

say "Installing the HpcCache CRD and starting the operator"
kubectl apply --server-side -f "$repo/crds/" >/dev/null
kubectl wait --for=condition=Established crd/hpccaches.hpccache.io --timeout=30s >/dev/null
(
  set -a
  # shellcheck disable=SC1091
  . "$dev/azure.env"
  set +a
  exec "$op" run --poll-seconds 2 --resync-seconds 30 --metrics-addr "$metrics"
) >"$dev/operator.log" 2>&1 &
echo $! >"$dev/operator.pid"

say "Applying the examples"
for f in "$repo"/examples/*.yaml; do
  [ "$(basename "$f")" = seed.yaml ] && continue # the simulator's seed, not a Kubernetes object
  kubectl apply -f "$f"
done

say "Watching the caches (Azure's 90-minute window runs ${speed}x faster here)"
deadline=$((SECONDS + settle_timeout))
while :; do
  table=$(kubectl get hpccaches -o wide 2>&1 || true)
  printf '\n%s\n' "$table"
  ready=$(kubectl get hpccaches -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Ready$' || true)
  manual=$(kubectl get hpccache climate -o jsonpath='{.status.phase}' 2>/dev/null || true)
  if [ "$ready" -ge 3 ] && [ "$manual" = WaitingForKey ]; then break; fi
  if [ $SECONDS -ge $deadline ]; then
    echo "the caches did not settle in ${settle_timeout}s; operator log: $dev/operator.log" >&2
    tail -n 30 "$dev/operator.log" >&2
    exit 1
  fi
  sleep 3
done

principal=$(kubectl get hpccache climate -o jsonpath='{.status.principalId}')
until_=$(kubectl get hpccache climate -o jsonpath='{.status.authorizationDeadline}')
admin=$(. "$dev/azure.env" && echo "$HPCC_SIM_ADMIN")
cat <<EOF

Three caches are Ready. The Manual one ("climate") waits for a person to authorize its identity:
  principal ${principal}, before ${until_} (simulated clock, ${speed}x).

Try:
  export KUBECONFIG=${KUBECONFIG} PATH=${bin}:\$PATH
  kubectl get hpcc -w                                  # phases, health, key, deadline
  kubectl describe hpcc climate                        # conditions and Warning events
  kubectl get events --field-selector involvedObject.kind=HpcCache
  curl -s -XPOST ${admin}grants -H 'content-type: application/json' \\
       -d '{"vaultName":"kv-manual","principalId":"${principal}"}'   # grant it as a person would
  kubectl patch hpcc genomics --type merge -p '{"spec":{"encryption":{"keyVersion":"fedcba9876543210fedcba9876543210"}}}'
  curl -s ${metrics}/metrics | grep hpccache_      # operator metrics
  curl -s ${admin}requests | tail                      # every Azure call the operator made
  kubectl delete hpcc genomics                         # deletes the Azure cache and revokes its grant

Logs: ${dev}/operator.log, ${dev}/simulator.log.   Stop everything: make demo-down
EOF
