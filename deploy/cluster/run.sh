#!/usr/bin/env bash
# Three Rampart instances behind nginx, sharing one Redis and one PostgreSQL,
# all started here on free loopback ports in a temp dir and torn down at exit.
# It shows that a limit is one allowance for the whole cluster: REQUESTS
# requests go round robin through nginx to the three instances, and exactly
# the limit of deploy/cluster/rampart.toml (10 a minute per client) passes,
# not three times it. Exits non-zero if not.
#
#   deploy/cluster/run.sh           # the demo (builds rampart, debug, if needed)
#   deploy/cluster/run.sh --keep    # then leave the cluster running until Ctrl-C
#
# Environment: RAMPART_BIN (default target/debug/rampart), REQUESTS (30).
# Needs redis-server, PostgreSQL and nginx: installed with apt when missing,
# as scripts/test does.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=deploy/cluster
keep=0
[ "${1:-}" = "--keep" ] && keep=1
requests=${REQUESTS:-30}
limit=10 # [limits.named.per_client] in rampart.toml

log() { printf '== %s\n' "$*"; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v curl >/dev/null 2>&1 || apt_install curl
command -v python3 >/dev/null 2>&1 || apt_install python3
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
[ -n "$(pg_bin)" ] || apt_install postgresql
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  # The package would start a system nginx on port 80: refuse service starts
  # during the install (unless the machine has its own policy).
  added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && added_policy=1
  fi
  apt_install nginx-light || rc=$?
  [ "$added_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "${rc:-0}" = 0 ] || { echo "apt-get install nginx-light failed"; exit 1; }
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

bin=${RAMPART_BIN:-target/debug/rampart}
if [ ! -x "$bin" ]; then
  log "building rampart (cargo build -p rampart)"
  cargo build -q -p rampart
  bin=target/debug/rampart
fi

work=$(mktemp -d -t rampart-cluster.XXXXXX)
pids=()
pg_stop=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  if [ "${#pg_stop[@]}" -gt 0 ]; then "${pg_stop[@]}" >/dev/null 2>&1 || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS COMMAND...: true once COMMAND succeeds
  local until=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -ge "$until" ] && return 1
    sleep 0.1
  done
}

# Redis: no persistence, data in $work.
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for 10 redis-cli -p "$redis_port" ping || { echo "redis did not start:"; cat "$work/redis.log"; exit 1; }
log "redis on 127.0.0.1:$redis_port"

# PostgreSQL: a cluster of our own (it refuses to run as root: then as the
# postgres system user), password auth on loopback.
pgbin=$(pg_bin)
as_pg=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
  as_pg=(runuser -u postgres --)
  chmod 711 "$work"
fi
mkdir -p "$work/pg/data" "$work/pg/sock"
chmod 700 "$work/pg/data"
pg_password="cluster-$RANDOM$RANDOM$RANDOM"
printf '%s\n' "$pg_password" >"$work/pg/pwfile"
[ "${#as_pg[@]}" -gt 0 ] && chown -R postgres "$work/pg"
pg_port=$(free_port)
(cd "$work" && "${as_pg[@]}" "$pgbin/initdb" -D "$work/pg/data" -U rampart --pwfile="$work/pg/pwfile" \
  --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale --no-instructions >"$work/pg/initdb.log" 2>&1) ||
  { echo "initdb failed:"; cat "$work/pg/initdb.log"; exit 1; }
pg_stop=("${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate stop)
(cd "$work" && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/server.log" -w -t 30 \
  -o "-p $pg_port -k $work/pg/sock -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null) ||
  { echo "postgresql did not start:"; cat "$work/pg/server.log"; exit 1; }
PGPASSWORD=$pg_password "$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U rampart rampart
log "postgresql on 127.0.0.1:$pg_port"

# The secrets rampart.toml reads from files, as an orchestrator would mount them.
mkdir -m 700 "$work/secrets"
printf 'postgres://rampart:%s@127.0.0.1:%s/rampart\n' "$pg_password" "$pg_port" >"$work/secrets/database_url"
printf 'redis://127.0.0.1:%s/\n' "$redis_port" >"$work/secrets/redis_url"
head -c 32 /dev/urandom | base64 >"$work/secrets/rampart_key"

# The upstream: rampart's built-in echo server.
app_port=$(free_port)
"$bin" echo --listen "127.0.0.1:$app_port" >"$work/echo.log" 2>&1 &
pids+=($!)

# Three instances of one config; only their addresses differ. The first runs
# the migrations and makes the signing key before the others start.
ports=()
for i in 1 2 3; do
  port=$(free_port) ops=$(free_port)
  RAMPART_SERVER__LISTEN="127.0.0.1:$port" RAMPART_METRICS__LISTEN="127.0.0.1:$ops" \
    RAMPART_STORAGE__DATABASE_FILE="$work/secrets/database_url" \
    RAMPART_REDIS__URL_FILE="$work/secrets/redis_url" \
    RAMPART_IDENTITY__SECRET_KEY_FILE="$work/secrets/rampart_key" \
    RAMPART_UPSTREAMS__DEFAULT__URL="http://127.0.0.1:$app_port" \
    "$bin" serve --config "$here/rampart.toml" >"$work/rampart-$i.log" 2>&1 &
  pids+=($!)
  if ! wait_for 30 curl -sf "http://127.0.0.1:$ops/readyz"; then
    echo "rampart instance $i did not become ready:"; tail -n 20 "$work/rampart-$i.log"; exit 1
  fi
  # Ready before Redis answered would mean per-instance limits: wait for it.
  if ! wait_for 10 sh -c "curl -s http://127.0.0.1:$ops/metrics | grep -q '^rampart_redis_up 1'"; then
    echo "rampart instance $i does not reach Redis:"; tail -n 20 "$work/rampart-$i.log"; exit 1
  fi
  ports+=("$port")
  log "rampart $i on 127.0.0.1:$port (operations 127.0.0.1:$ops)"
done

# nginx: the example config with these ports.
nginx_port=$(free_port)
mkdir -p "$work/nginx"
server=$(sed -e "s/listen 8080;/listen 127.0.0.1:$nginx_port;/" \
  -e "s/127.0.0.1:8081;/127.0.0.1:${ports[0]};/" -e "s/127.0.0.1:8082;/127.0.0.1:${ports[1]};/" \
  -e "s/127.0.0.1:8083;/127.0.0.1:${ports[2]};/" "$here/nginx.conf")
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root root;"
n="$work/nginx"
cat >"$n/nginx.conf" <<EOF
$user_line
daemon off;
master_process off;
worker_processes 1;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $n/cb; proxy_temp_path $n/px; fastcgi_temp_path $n/fc;
  uwsgi_temp_path $n/uw; scgi_temp_path $n/sc;
$server
}
EOF
"$nginx_bin" -p "$n" -c "$n/nginx.conf" -e "$n/error.log" 2>>"$n/error.log" &
pids+=($!)
# Only a TCP connect: a request would count towards the limit.
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$nginx_port" ||
  { echo "nginx did not start:"; cat "$n/error.log"; exit 1; }
log "nginx on 127.0.0.1:$nginx_port, round robin over the three"

# The demo: one client, REQUESTS requests through nginx.
declare -A served=()
passed=0 refused=0 other=0
for _ in $(seq 1 "$requests"); do
  : >"$work/headers"
  status=$(curl -s -o /dev/null -D "$work/headers" -w '%{http_code}' "http://127.0.0.1:$nginx_port/demo" || true)
  instance=$(tr -d '\r' <"$work/headers" | awk -F': ' 'tolower($1) == "x-rampart-instance" {print $2}')
  instance=${instance:-none}
  served[$instance]=$((${served[$instance]:-0} + 1))
  case "$status" in
    200) passed=$((passed + 1)) ;;
    429) refused=$((refused + 1)) ;;
    *) other=$((other + 1)) ;;
  esac
done
for instance in "${!served[@]}"; do
  echo "   instance $instance answered ${served[$instance]}"
done
echo "   $requests requests: $passed passed, $refused refused with 429, $other other"
echo "   the limit is $limit a minute per client for the cluster (three separate instances would pass $((3 * limit)))"
if [ "$passed" != "$limit" ] || [ "$other" != 0 ] || [ "${#served[@]}" != 3 ]; then
  echo "FAILED: expected exactly $limit to pass, spread over 3 instances"
  exit 1
fi
log "one shared limit: ok"

if [ "$keep" = 1 ]; then
  echo "running: http://127.0.0.1:$nginx_port (nginx), instances on ${ports[*]}; Ctrl-C stops everything"
  wait
fi
