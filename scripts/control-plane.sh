#!/usr/bin/env bash
# Starts and stops a local Kubernetes control plane (etcd + kube-apiserver) on loopback ports.
# This is the ONE place that knows the flags: `make dev-cluster` and the Rust test harness (crates/hpcc-test-support) both use it.
#
#   scripts/control-plane.sh start DIR   # start in DIR (created); prints DIR/kubeconfig when /readyz answers ok
#   scripts/control-plane.sh stop DIR    # stop what `start DIR` started
#   scripts/control-plane.sh status DIR  # exit 0 when it is running
#   scripts/control-plane.sh restart-apiserver DIR  # kill and restart kube-apiserver only (same port; etcd kept)
#
# The processes run in their own session, detached from the caller's terminal.
# DIR receives: kubeconfig, env (ports, token, server URL), pids, *.log, certs/, etcd-data/.
# Environment:
#   HPCC_TEST_BIN_DIR   where kube-apiserver/etcd/kubectl live (default: the output of scripts/test-deps.sh)
#   CP_OWNER_PID        when set, a watchdog stops the control plane as soon as that process exits (tests use it,
#                       so nothing outlives a test binary, even one that panics or is killed)
#   CP_CLEANUP=1        the watchdog also deletes DIR (logs, ~120 MB of etcd data) once the owner has exited
#   CP_READY_TIMEOUT    seconds to wait for /readyz (default 120)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

usage() { echo "usage: $0 start|stop|status|restart-apiserver DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
if [ "$cmd" = start ]; then mkdir -p "$2"; elif [ ! -d "$2" ]; then exit "$([ "$cmd" = stop ] && echo 0 || echo 1)"; fi
dir=$(cd "$2" && pwd)
log() { echo "control-plane: $*" >&2; }

alive() { # true when every pid in DIR/pids is running
  [ -s "$dir/pids" ] || return 1
  local pid
  for pid in $(cat "$dir/pids"); do kill -0 "$pid" 2>/dev/null || return 1; done
}

stop() { # SIGKILL: the data is throwaway, and a graceful apiserver shutdown takes seconds
  [ -f "$dir/pids" ] || return 0
  local pids pid i left
  pids=$(cat "$dir/pids" "$dir/watchdog.pid" 2>/dev/null || true)
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
  for i in $(seq 50); do
    left=""
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && left="$left $pid"; done
    [ -z "$left" ] && break
    sleep 0.1
  done
  rm -f "$dir/pids" "$dir/watchdog.pid"
}

free_port() { # a random loopback port nobody listens on (below the ephemeral range)
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

start_apiserver() { # BIN ETCD_PORT API_PORT, in the background ($! is its pid); the log is appended to
  # --endpoint-reconciler-type none: nothing runs in-cluster, and 127.0.0.1 is not a valid endpoint for the
  # `kubernetes` Service (the default reconciler would log an error every 10 s).
  setsid "$1/kube-apiserver" --etcd-servers "http://127.0.0.1:$2" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$3" \
    --cert-dir "$dir/certs" --authorization-mode RBAC --token-auth-file "$dir/certs/tokens.csv" \
    --service-cluster-ip-range 10.0.0.0/24 --service-account-issuer "https://127.0.0.1:$3/" \
    --service-account-key-file "$dir/certs/sa.pub" --service-account-signing-key-file "$dir/certs/sa.key" \
    --endpoint-reconciler-type none \
    </dev/null >>"$dir/kube-apiserver.log" 2>&1 &
}

# SIGKILL the kube-apiserver and start it again on the same port with the same certificates and token, etcd (and
# its data) untouched: every client's connections and watches break, the kubeconfig stays valid.
restart_apiserver() {
  alive || { log "not running in $dir"; return 1; }
  local bin etcd_pid api_pid owner i
  bin=${HPCC_TEST_BIN_DIR:-$("$here/test-deps.sh")}
  read -r etcd_pid api_pid < "$dir/pids"
  # the watchdog stops everything when the apiserver exits: stop it first, start a new one after
  if [ -s "$dir/watchdog.pid" ]; then kill -KILL "$(cat "$dir/watchdog.pid")" 2>/dev/null || true; rm -f "$dir/watchdog.pid"; fi
  kill -KILL "$api_pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$api_pid" 2>/dev/null || break; sleep 0.1; done
  # shellcheck disable=SC1091
  . "$dir/env"
  start_apiserver "$bin" "$ETCD_PORT" "$APISERVER_PORT"
  echo "$etcd_pid $!" > "$dir/pids"
  owner=$(cat "$dir/owner.pid" 2>/dev/null || true)
  [ -n "$owner" ] && CP_CLEANUP=$(cat "$dir/cleanup" 2>/dev/null || echo 0) watchdog "$owner"
  for i in $(seq $((${CP_READY_TIMEOUT:-120} * 5))); do
    alive || { log "kube-apiserver exited during restart; see $dir/kube-apiserver.log"; return 1; }
    [ "$("$bin/kubectl" --kubeconfig "$dir/kubeconfig" get --raw /readyz 2>/dev/null)" = ok ] && return 0
    sleep 0.2
  done
  log "kube-apiserver not ready after restart"
  return 1
}

start_once() {
  local bin=$1 etcd_port peer_port api_port token
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  [ "$etcd_port" != "$peer_port" ] && [ "$peer_port" != "$api_port" ] && [ "$etcd_port" != "$api_port" ] || return 1
  rm -rf "$dir/etcd-data"
  mkdir -p "$dir/certs"

  # Service-account signing key pair and the admin's bearer token.
  [ -f "$dir/certs/sa.key" ] || openssl genrsa -out "$dir/certs/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/certs/sa.key" -pubout -out "$dir/certs/sa.pub" 2>/dev/null
  token=$(openssl rand -hex 24)
  echo "$token,admin,admin,system:masters" > "$dir/certs/tokens.csv"

  setsid "$bin/etcd" --name default --data-dir "$dir/etcd-data" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" --listen-metrics-urls "" \
    </dev/null >"$dir/etcd.log" 2>&1 &
  local etcd_pid=$!

  start_apiserver "$bin" "$etcd_port" "$api_port"
  local api_pid=$!
  echo "$etcd_pid $api_pid" > "$dir/pids"

  # The apiserver writes its self-signed serving certificate (with its CA) into --cert-dir on start.
  local i
  for i in $(seq $((${CP_READY_TIMEOUT:-120} * 5))); do
    alive || { log "a process exited during start; see $dir/*.log"; tail -5 "$dir/etcd.log" "$dir/kube-apiserver.log" >&2; stop; return 1; }
    [ -s "$dir/certs/apiserver.crt" ] && break
    sleep 0.2
  done
  [ -s "$dir/certs/apiserver.crt" ] || { log "no serving certificate in $dir/certs"; stop; return 1; }

  "$bin/kubectl" config set-cluster local --kubeconfig "$dir/kubeconfig.tmp" --server "https://127.0.0.1:$api_port" \
    --certificate-authority "$dir/certs/apiserver.crt" --embed-certs >/dev/null
  "$bin/kubectl" config set-credentials admin --kubeconfig "$dir/kubeconfig.tmp" --token "$token" >/dev/null
  "$bin/kubectl" config set-context local --kubeconfig "$dir/kubeconfig.tmp" --cluster local --user admin >/dev/null
  "$bin/kubectl" config use-context local --kubeconfig "$dir/kubeconfig.tmp" >/dev/null
  mv "$dir/kubeconfig.tmp" "$dir/kubeconfig"
  printf 'APISERVER_PORT=%s\nETCD_PORT=%s\nSERVER=https://127.0.0.1:%s\nTOKEN=%s\nKUBECONFIG=%s\n' \
    "$api_port" "$etcd_port" "$api_port" "$token" "$dir/kubeconfig" > "$dir/env"

  for i in $(seq $((${CP_READY_TIMEOUT:-120} * 5))); do
    alive || { log "a process exited during start; see $dir/*.log"; tail -5 "$dir/kube-apiserver.log" >&2; stop; return 1; }
    [ "$("$bin/kubectl" --kubeconfig "$dir/kubeconfig" get --raw /readyz 2>/dev/null)" = ok ] && return 0
    sleep 0.2
  done
  log "kube-apiserver not ready after ${CP_READY_TIMEOUT:-120}s; see $dir/kube-apiserver.log"
  stop
  return 1
}

watchdog() { # stop the control plane when the owner process (or the apiserver) goes away
  local owner=$1
  setsid bash -c 'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
    rm -f "$4/watchdog.pid"; "$3" stop "$4"; if [ "$5" = 1 ] && ! kill -0 "$1" 2>/dev/null; then rm -rf "$4"; fi' \
    watchdog "$owner" "$(cut -d' ' -f2 "$dir/pids")" "$here/control-plane.sh" "$dir" "${CP_CLEANUP:-0}" \
    </dev/null >/dev/null 2>&1 &
  echo $! > "$dir/watchdog.pid"
}

case $cmd in
  start)
    alive && { log "already running in $dir"; echo "$dir/kubeconfig"; exit 0; }
    stop
    bin=${HPCC_TEST_BIN_DIR:-$("$here/test-deps.sh")}
    for b in etcd kube-apiserver kubectl; do
      [ -x "$bin/$b" ] || { log "missing $bin/$b (run make test-deps)"; exit 1; }
    done
    command -v openssl >/dev/null || { log "openssl is required"; exit 1; }
    started=false
    for attempt in 1 2 3; do # a port can be taken between picking and binding: try fresh ports
      if start_once "$bin"; then started=true; break; fi
      log "start attempt $attempt failed"
    done
    $started || exit 1
    if [ -n "${CP_OWNER_PID:-}" ]; then
      echo "$CP_OWNER_PID" > "$dir/owner.pid"
      echo "${CP_CLEANUP:-0}" > "$dir/cleanup"
      watchdog "$CP_OWNER_PID"
    fi
    echo "$dir/kubeconfig"
    ;;
  restart-apiserver) restart_apiserver ;;
  stop) stop ;;
  status) alive ;;
  *) usage ;;
esac
