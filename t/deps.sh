#!/usr/bin/env bash
# Installs the Debian packages promgate needs to build, test and run its demo.
# Only what is missing; root or sudo.
set -euo pipefail

pkgs=(nginx nginx-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
      libsnappy-dev librdkafka-dev libcmocka-dev libpcre2-dev libxxhash-dev
      libssl-dev zlib1g-dev pkg-config gcc make
      prometheus victoria-metrics kcat curl
      python3-pytest python3-requests python3-snappy python3-protobuf
      python3-yaml docker-compose)

missing=()
for p in "${pkgs[@]}"; do
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
