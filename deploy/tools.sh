#!/usr/bin/env bash
# Makes sure the command-line tools the benchmarks drive are installed: `deploy/tools.sh wrk
# redis-benchmark` installs whichever is missing (Debian: apt-get, with sudo when not root, and
# an `apt-get update` first only when the install fails on stale package lists). `make test`
# uses it for Prometheus (the monitoring tests), nginx and systemd-analyze (the deploy tests),
# `make bench` for its load generators.
set -euo pipefail

# The Debian package that ships each tool.
package_of() {
  case $1 in
    wrk) echo wrk ;;
    redis-benchmark | redis-cli) echo redis-tools ;;
    prometheus | promtool) echo prometheus ;;
    chromium) echo chromium ;;
    nginx) echo nginx ;;
    systemd-analyze) echo systemd ;;
    locust) echo "tools: locust comes with the venv (make install)" >&2; return 1 ;;
    *) echo "$1" ;;
  esac
}

# nginx lives in /usr/sbin, which a non-root PATH may lack.
PATH=$PATH:/usr/sbin:/sbin

sudo_() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
apt_get() { DEBIAN_FRONTEND=noninteractive sudo_ apt-get "$@"; }

missing=()
for tool in "$@"; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ ${#missing[@]} == 0 ]] && exit 0

command -v apt-get >/dev/null || {
  echo "tools: ${missing[*]} missing and this is not Debian; install them" >&2
  exit 1
}
packages=()
for tool in "${missing[@]}"; do packages+=("$(package_of "$tool")"); done
echo "tools: installing ${packages[*]} (apt-get) for ${missing[*]}"
if ! apt_get install -y -qq "${packages[@]}" >/dev/null; then
  apt_get update -qq
  apt_get install -y -qq "${packages[@]}" >/dev/null
fi
for tool in "${missing[@]}"; do
  command -v "$tool" >/dev/null || { echo "tools: $tool still missing after the install" >&2; exit 1; }
done
