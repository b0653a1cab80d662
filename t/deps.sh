#!/usr/bin/env bash
# Installs the Debian packages promgate needs to build, test and run its demo.
# Only what is missing; root or sudo.
#
#   t/deps.sh          build, test, demo (make deps, make test)
#   t/deps.sh bench    only what the benchmarks need on top of those (make
#                      bench): valgrind (instructions per sample of the
#                      decode table, callgrind) and gnuplot-nox (the plot,
#                      bench/results/latest.png); make test never needs them
set -euo pipefail

declare -A cmd=()   # package -> a command that makes it unnecessary
case "${1:-}" in
    "")
        pkgs=(nginx nginx-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
              libsnappy-dev librdkafka-dev libcmocka-dev libpcre2-dev libxxhash-dev
              libssl-dev zlib1g-dev pkg-config gcc make
              prometheus victoria-metrics kcat curl
              python3-pytest python3-requests python3-snappy python3-protobuf
              python3-yaml docker-compose) ;;
    bench)
        # gnuplot-nox: the one without X; any gnuplot already there will do
        pkgs=(valgrind gnuplot-nox)
        cmd[valgrind]=valgrind; cmd[gnuplot-nox]=gnuplot ;;
    *)
        echo "usage: t/deps.sh [bench]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    [ -n "${cmd[$p]:-}" ] && command -v "${cmd[$p]}" >/dev/null && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$p")
done

[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
