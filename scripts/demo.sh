#!/usr/bin/env bash
# The main job on the embedded default: a local kube-apiserver + etcd, the Azure simulator, the operator and the
# examples. Shows the caches moving through their phases; leaves everything running for you to poke at.
#
#   scripts/demo.sh        # (make demo) start everything, apply examples/, watch until the caches settle
#   scripts/demo.sh down   # (make demo-down) stop the operator, the simulator and the control plane
#
# Everything listens on 127.0.0.1 only; state and logs live in .dev/ (gitignored), or in HPCC_DEMO_DIR: each state
# directory has its own control plane, simulator and operator, and `down` stops only those (`make demo-check` uses
# .dev/demo-check/, so it never touches a `make demo` left running).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
dev=${HPCC_DEMO_DIR:-$repo/.dev}
mkdir -p "$dev"
dev=$(cd "$dev" && pwd)
export HPCC_DEV_CLUSTER_DIR="$dev/cluster" # the control plane of this state directory
speed=${HPCC_DEMO_SPEED:-20} # simulated seconds per real second while the examples settle: a 10-minute create takes 30 s
settle_timeout=${HPCC_DEMO_TIMEOUT:-240}
metrics=${HPCC_DEMO_METRICS_ADDR:-127.0.0.1:9464} # /metrics of the operator

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

admin_post() { # admin_post PATH JSON: POST to the simulator's admin API (plain HTTP on loopback; no curl needed)
  local hostport=${admin#http://}
  hostport=${hostport%/}
  local reply
  exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}"
  printf 'POST /%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$1" "$hostport" "${#2}" "$2" >&3
  reply=$(cat <&3)
  exec 3<&-
  [[ $reply == "HTTP/1.1 200"* ]] || { echo "simulator admin API: POST /$1 answered: $reply" >&2; return 1; }
}

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

say "Building the control-plane binaries (cached after the first run) and the operator"
bin=$("$here/test-deps.sh")
export PATH="$bin:$PATH"
cargo build --quiet --bin hpc-cache-operator
op="${CARGO_TARGET_DIR:-$repo/target}/debug/hpc-cache-operator"
# The same binary is the kubectl plugin `kubectl hpcc` under the name kubectl-hpcc.
mkdir -p "$dev/bin"
ln -sf "$op" "$dev/bin/kubectl-hpcc"
export PATH="$dev/bin:$PATH"

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
  table=$(kubectl get hpccaches,amlfilesystems 2>&1 || true)
  printf '\n%s\n' "$table"
  ready=$(kubectl get hpccaches -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Ready$' || true)
  manual=$(kubectl get hpccache climate -o jsonpath='{.status.phase}' 2>/dev/null || true)
  # The Managed Lustre example (examples/amlfs.yaml): granted first, then created (20 simulated minutes).
  lustre=$(kubectl get amlfilesystem climate-scratch -o jsonpath='{.status.phase}' 2>/dev/null || true)
  if [ "$ready" -ge 3 ] && [ "$manual" = WaitingForKey ] && [ "$lustre" = Ready ]; then break; fi
  if [ $SECONDS -ge $deadline ]; then
    echo "the caches did not settle in ${settle_timeout}s; operator log: $dev/operator.log" >&2
    tail -n 30 "$dev/operator.log" >&2
    exit 1
  fi
  sleep 3
done

principal=$(kubectl get hpccache climate -o jsonpath='{.status.principalId}')
admin=$(. "$dev/azure.env" && echo "$HPCC_SIM_ADMIN")
# From here on Azure's clock runs in real time, so the Manual cache's 90-minute window is what a person reading
# the grant command really has (at 20x it would be Failed about 4 minutes from now).
admin_post clock/speed '{"speed": 1}'
say "The simulator's clock now runs at 1x (real time). What a person with rights on kv-manual runs:"
echo "\$ kubectl hpcc grant-command climate" >&2
# With the operator's Azure settings (the simulator's) it reads the vault: one form, time left on Azure's clock.
(
  set -a
  # shellcheck disable=SC1091
  . "$dev/azure.env"
  set +a
  kubectl hpcc grant-command climate
)
stop_hint=make\ demo-down
[ "$dev" = "$repo/.dev" ] || stop_hint="HPCC_DEMO_DIR=$dev scripts/demo.sh down"
cat <<EOF

Three caches and the Managed Lustre file system (kubectl get amlfs) are Ready. The Manual cache ("climate") waits for a person to authorize principal ${principal}
(the commands above; \`kubectl get hpcc climate\` shows the deadline).

Try:
  export KUBECONFIG=${KUBECONFIG} PATH=${dev}/bin:${bin}:\$PATH
  set -a; . ${dev}/azure.env; set +a                   # optional: lets grant-command read the vault
  kubectl hpcc grant-command climate                   # the grant a person runs (= hpc-cache-operator grant-command)
  kubectl get hpcc -w                                  # ready, reason, phase, key, deadline
  kubectl describe hpcc climate                        # conditions and Warning events
  kubectl get events --field-selector involvedObject.kind=HpcCache
  curl -s -XPOST ${admin}grants -H 'content-type: application/json' \\
       -d '{"vaultName":"kv-manual","principalId":"${principal}"}'   # grant it as a person would
  curl -s -XPOST ${admin}clock/advance -d '{"minutes": 10}'   # skip Azure's propagation + key pick-up (~10 min)
  curl -s -XPOST ${admin}clock/speed -d '{"speed": 20}'       # or run Azure's clock 20x again
  kubectl patch hpcc genomics --type merge -p '{"spec":{"encryption":{"keyVersion":"fedcba9876543210fedcba9876543210"}}}'
  curl -s ${metrics}/metrics | grep hpccache_      # operator metrics
  curl -s ${admin}requests | tail                      # every Azure call the operator made
  kubectl delete hpcc genomics                         # deletes the Azure cache and revokes its grant

Logs: ${dev}/operator.log, ${dev}/simulator.log.   Stop everything: ${stop_hint}
EOF
