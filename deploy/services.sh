#!/usr/bin/env bash
# Makes sure Redis and PostgreSQL answer at the configured URLs, for `make run`, `make test`
# and CI: use them when they run, start them when installed but stopped, and on Debian install
# them when missing. Local development only: production runs managed instances.
set -euo pipefail

redis_url=${QUANYI_REDIS_URL:-redis://127.0.0.1:6379/0}
database_url=${QUANYI_DATABASE_URL:-postgresql://127.0.0.1:5432/quanyi}

# host and port of scheme://[user[:pw]@]host[:port]/...
url_host() { local rest=${1#*://}; rest=${rest##*@}; rest=${rest%%/*}; echo "${rest%%:*}"; }
url_port() { local rest=${1#*://}; rest=${rest##*@}; rest=${rest%%/*}; [[ $rest == *:* ]] && echo "${rest##*:}" || echo "$2"; }

redis_host=$(url_host "$redis_url"); redis_port=$(url_port "$redis_url" 6379)
pg_host=$(url_host "$database_url"); pg_port=$(url_port "$database_url" 5432)

sudo_() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  command -v apt-get >/dev/null || { echo "services: $* missing and this is not Debian; install it" >&2; exit 1; }
  echo "services: installing $* (apt-get)"
  sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq "$@" >/dev/null
}
wait_for() {  # wait_for NAME CMD...
  local name=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "services: $name did not come up" >&2; exit 1
}

redis_up() { [[ $(redis-cli -h "$redis_host" -p "$redis_port" ping 2>/dev/null) == PONG ]]; }
pg_up() { pg_isready -q -h "$pg_host" -p "$pg_port"; }

command -v redis-cli >/dev/null || apt_install redis-server redis-tools
if redis_up; then
  echo "services: redis answers at $redis_host:$redis_port"
else
  command -v redis-server >/dev/null || apt_install redis-server
  echo "services: starting redis on $redis_host:$redis_port"
  mkdir -p /tmp/quanyi-redis
  redis-server --daemonize yes --bind "$redis_host" --port "$redis_port" --save "" \
    --appendonly no --dir /tmp/quanyi-redis --logfile /tmp/quanyi-redis/redis.log
  wait_for redis redis_up
fi

command -v pg_isready >/dev/null || apt_install postgresql postgresql-client
if pg_up; then
  echo "services: postgresql answers at $pg_host:$pg_port"
else
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
    fresh=1
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "services: starting postgresql $version"
  sudo_ pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for postgresql pg_up
  if [[ ${fresh:-0} == 1 ]]; then
    # A cluster we just installed: let the local user in, as the loopback dev setup expects.
    sudo_ -u postgres createuser --superuser "$(id -un)" 2>/dev/null || true
  fi
fi
