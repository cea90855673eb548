#!/usr/bin/env bash
# The docker-compose topology as plain processes on this machine, all on loopback:
# a Ray head (no CPUs, so members land on the workers; its dashboard and jobs API on 127.0.0.1 for
# `ray job submit`), two workers with their own
# --num-cpus and custom resources {"worker1": 1} / {"worker2": 1}, and the status service.
#
#   cluster/local_cluster.sh start     # prints the addresses; state under $POPVAE_CLUSTER_DIR
#   cluster/local_cluster.sh stop      # ends exactly the processes `start` launched (by PID)
#
# Each node runs `ray start --block` in the background: that process owns its node's Ray
# processes and takes them down when it gets SIGTERM. So `stop` kills by recorded PID and never
# calls `ray stop`, which would end every Ray on the machine (other users' and test sessions').
# Ports and the temp dir are distinct from a default `ray.init()` so that both can run at once.
#
# Settings (environment): POPVAE_CLUSTER_DIR (/tmp/popvae-lc), POPVAE_RAY_PORT (6390),
# POPVAE_SERVICE_PORT (8390), POPVAE_DASHBOARD_PORT (8395: Ray's dashboard and jobs API), POPVAE_RUNS_ROOT ($POPVAE_CLUSTER_DIR/runs), POPVAE_WORKER_CPUS (1),
# POPVAE_SERVICE_NICE (0; e.g. 10 gives training CPU priority over the status service), POPVAE_KEEP_RAY_SESSION
# (unset: `stop` removes Ray's session files under $POPVAE_CLUSTER_DIR/ray),
# PYTHON (python3 on PATH; the project must be importable), RAY_AUTH_TOKEN (generated if unset).
set -euo pipefail

STATE=${POPVAE_CLUSTER_DIR:-/tmp/popvae-lc}
PORT=${POPVAE_RAY_PORT:-6390}
SERVICE_PORT=${POPVAE_SERVICE_PORT:-8390}
DASHBOARD_PORT=${POPVAE_DASHBOARD_PORT:-8395}
RUNS_ROOT=${POPVAE_RUNS_ROOT:-$STATE/runs}
WORKER_CPUS=${POPVAE_WORKER_CPUS:-1}
SERVICE_NICE=${POPVAE_SERVICE_NICE:-0}
PYTHON=${PYTHON:-python3}
ADDRESS=127.0.0.1:$PORT

RAY=("$PYTHON" -m ray.scripts.scripts)
# A job's entrypoint (`ray job submit -- python ...`) runs with the nodes' PATH: put this PYTHON first, so that `python`
# there is the interpreter that has popvae, torch and Ray, not whatever python comes first on the caller's PATH.
PYTHON_BIN=$(dirname "$(command -v "$PYTHON")")
export PATH="$PYTHON_BIN:$PATH"

# Waits until `ray status` lists $1 alive nodes, or fails after $2 seconds.
wait_for_nodes() {
  local want=$1 deadline=$((SECONDS + $2)) have=0
  while ((SECONDS < deadline)); do
    have=$("${RAY[@]}" status --address "$ADDRESS" 2>/dev/null | sed -n '/^Active:/,/^Pending:/p' | grep -c 'node_' || true)
    ((have >= want)) && return 0
    sleep 1
  done
  echo "local_cluster: only $have of $want Ray nodes came up (logs in $STATE/logs)" >&2
  return 1
}

# Waits until the status service answers /healthz, or fails after $1 seconds.
wait_for_service() {
  local deadline=$((SECONDS + $1))
  while ((SECONDS < deadline)); do
    "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$SERVICE_PORT/healthz', timeout=2)" 2>/dev/null && return 0
    sleep 0.5
  done
  echo "local_cluster: the status service did not come up (log in $STATE/logs/service.log)" >&2
  return 1
}

# Starts "$@" in the background with its output in logs/$1.log and its PID in pids/$1.pid.
launch() {
  local name=$1
  shift
  nohup "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
}

# Node k gets its own agent/metrics ports so that three nodes share one host without clashing.
node_ports() {
  local k=$1
  echo "--node-manager-port=$((PORT + 10 + k)) --object-manager-port=$((PORT + 20 + k))" \
    "--dashboard-agent-listen-port=$((PORT + 30 + k)) --dashboard-agent-grpc-port=$((PORT + 40 + k))" \
    "--metrics-export-port=$((PORT + 50 + k)) --runtime-env-agent-port=$((PORT + 60 + k))" \
    "--min-worker-port=$((PORT + 100 + 200 * k)) --max-worker-port=$((PORT + 299 + 200 * k))"
}

start() {
  if compgen -G "$STATE/pids/*.pid" >/dev/null; then
    echo "local_cluster: already started (PIDs in $STATE/pids); run stop first" >&2
    return 1
  fi
  mkdir -p "$STATE/logs" "$STATE/pids" "$RUNS_ROOT"
  if [[ -z ${RAY_AUTH_TOKEN:-} ]]; then
    RAY_AUTH_TOKEN=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')
  fi
  (umask 077 && printf '%s' "$RAY_AUTH_TOKEN" >"$STATE/auth_token")
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN RAY_USAGE_STATS_ENABLED=0
  local common=(--block --node-ip-address=127.0.0.1 --temp-dir="$STATE/ray" --disable-usage-stats)

  # shellcheck disable=SC2046
  launch head "${RAY[@]}" start --head --port="$PORT" --ray-client-server-port=$((PORT + 1)) --num-cpus=0 \
    --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" "${common[@]}" $(node_ports 0)
  wait_for_nodes 1 60 || { stop; return 1; }
  for k in 1 2; do # one at a time: nodes starting together on one host race for ports
    # shellcheck disable=SC2046
    launch "worker$k" "${RAY[@]}" start --address="$ADDRESS" --num-cpus="$WORKER_CPUS" --resources="{\"worker$k\": 1}" \
      "${common[@]}" $(node_ports "$k")
    wait_for_nodes $((k + 1)) 60 || { stop; return 1; }
  done
  launch service nice -n "$SERVICE_NICE" "$PYTHON" -c 'import sys; from popvae.cluster.service import serve; serve(sys.argv[1], port=int(sys.argv[2]), ray_address=sys.argv[3])' \
    "$RUNS_ROOT" "$SERVICE_PORT" "$ADDRESS"
  wait_for_service 60 || { stop; return 1; }
  cat <<EOF
Ray cluster  $ADDRESS  (head + 2 workers; RAY_AUTH_TOKEN in $STATE/auth_token)
status       http://127.0.0.1:$SERVICE_PORT/population   runs under $RUNS_ROOT
jobs API     http://127.0.0.1:$DASHBOARD_PORT  (Ray's dashboard; token required)
auth         export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=\$(cat $STATE/auth_token)
train with   popvae train --address $ADDRESS --run-dir $RUNS_ROOT/<name> ...
submit with  ray job submit --address http://127.0.0.1:$DASHBOARD_PORT -- python -m popvae.cluster.train --run-dir $RUNS_ROOT/<name> ...
dashboard    http://127.0.0.1:$SERVICE_PORT/   (this cluster's status service, already running: no second popvae serve needed)
EOF
}

# Sends SIGTERM to the recorded processes named "$@" together, waits up to 15 s for all of them to end (SIGKILL
# after that), and forgets their PIDs.
end_together() {
  local name pid pids=()
  for name in "$@"; do
    [[ -f $STATE/pids/$name.pid ]] || continue
    pid=$(cat "$STATE/pids/$name.pid")
    kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" && pids+=("$pid")
  done
  for _ in $(seq 30); do
    local left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    ((left)) || break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"; done
  for name in "$@"; do rm -f "$STATE/pids/$name.pid"; done
}

stop() {
  # the service (a Ray driver) and the workers together, the head once they are gone
  end_together service worker1 worker2
  end_together head
  # Ray's session files (its logs, sockets, per-session scratch) are the bulk of $STATE and of no use once the nodes
  # are gone; the runs, the nodes' and the service's own logs and the token stay
  local ray_size
  ray_size=$(du -sh "$STATE/ray" 2>/dev/null | cut -f1 || true)
  if [[ -n $ray_size && -z ${POPVAE_KEEP_RAY_SESSION:-} ]]; then
    rm -rf "$STATE/ray"
    echo "local_cluster: stopped; removed Ray's session files ($ray_size, $STATE/ray; POPVAE_KEEP_RAY_SESSION=1 keeps them)"
  else
    echo "local_cluster: stopped"
  fi
  echo "local_cluster: kept the runs ($(du -sh "$RUNS_ROOT" 2>/dev/null | cut -f1) in $RUNS_ROOT, checkpoints included)," \
    "the nodes' and the service's logs ($(du -sh "$STATE/logs" 2>/dev/null | cut -f1) in $STATE/logs) and the token;" \
    "rm -rf $STATE frees them"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
