#!/usr/bin/env bash
# make servers: the Prometheus, promtool, VictoriaMetrics and vmagent users run
# today, next to the system's Debian 12 ones (Prometheus 2.42, VM 1.79).
#
# Downloads the .debs of Debian's unstable suite (sid) with apt-get into a
# private apt state under build/servers and unpacks them with dpkg -x into
# build/servers/root; nothing is installed into the system.  A package sid
# lacks comes from trixie.  The binaries are Go programs that need only libc.
#
#   build/servers/root/usr/bin/{prometheus,promtool,victoria-metrics,vmagent}
#   build/servers/versions    "package version suite" lines (Debian's builds
#                             of VictoriaMetrics print no --version)
#
# Idempotent: when everything is there it only prints the versions.
# SERVERS_REFRESH=1 downloads again.  SERVERS_MIN_PROMETHEUS (default 3.5) is
# the lowest Prometheus accepted (a trixie fallback has 2.53).
# SERVERS_SUITES (default "sid trixie") is the order suites are tried in;
# SERVERS_DIR (default build/servers) where everything goes.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
d=${SERVERS_DIR:-$top/build/servers}
root=$d/root
bin=$root/usr/bin
min_prom=${SERVERS_MIN_PROMETHEUS:-3.5}
suites=(${SERVERS_SUITES:-sid trixie})
pkgs=(prometheus promtool victoria-metrics)
need_bins=(prometheus promtool victoria-metrics vmagent)

prom_version() {    # "3.5.3" from "prometheus, version 3.5.3+ds1 (branch: ..."
    "$1" --version 2>&1 | sed -n 's/^prometheus, version \([0-9][0-9.]*\).*/\1/p' | head -1
}

version_ge() {      # version_ge A B: A >= B
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]
}

report() {
    echo "servers ($d):"
    sed 's/^/  /' "$d/versions"
}

complete() {
    local b v
    [ -f "$d/versions" ] || return 1
    for b in "${need_bins[@]}"; do [ -x "$bin/$b" ] || return 1; done
    v=$(prom_version "$bin/prometheus")
    [ -n "$v" ] && version_ge "$v" "$min_prom"
}

if [ "${SERVERS_REFRESH:-0}" != 1 ] && complete; then
    report
    exit 0
fi

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
    echo "servers.sh: needs apt-get and dpkg (Debian)" >&2; exit 1; }

# the Debian mirror the system uses (deb822 or one-line format)
uri=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' \
          /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {
                 for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
          /etc/apt/sources.list)
fi
uri=${uri:-http://deb.debian.org/debian}

signed=""
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
    signed="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "

mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/debs"
: > "$d/sources.list"
for suite in "${suites[@]}"; do
    echo "deb ${signed}$uri $suite main" >> "$d/sources.list"
done

o=(-q -o "Dir::Etc::sourcelist=$d/sources.list" -o Dir::Etc::sourceparts=-
   -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache"
   -o Debug::NoLocking=1)
# as root apt would drop to _apt, which may not reach this directory
[ "$(id -u)" -eq 0 ] && o+=(-o APT::Sandbox::User=root)

echo "servers: apt-get update (${suites[*]}) into $d/lists"
apt-get "${o[@]}" update >"$d/apt-update.log" 2>&1 || {
    tail -20 "$d/apt-update.log" >&2; exit 1; }

rm -f "$d"/debs/*.deb
: > "$d/versions.tmp"
for p in "${pkgs[@]}"; do
    got=""
    for suite in "${suites[@]}"; do
        if (cd "$d/debs" && apt-get "${o[@]}" download "$p/$suite") \
                >>"$d/apt-download.log" 2>&1; then
            got=$suite
            break
        fi
    done
    if [ -z "$got" ]; then
        # promtool was part of the prometheus package before 3.x
        [ "$p" = promtool ] && continue
        echo "servers.sh: $p is in none of ${suites[*]}; see $d/apt-download.log" >&2
        exit 1
    fi
    f=$(ls "$d"/debs/"${p}"_*.deb | head -1)
    echo "$p $(dpkg-deb -f "$f" Version) $got" >> "$d/versions.tmp"
done

# unpack next to the old tree, check, then swap
rm -rf "$root.tmp"
mkdir -p "$root.tmp"
for f in "$d"/debs/*.deb; do dpkg-deb -x "$f" "$root.tmp"; done
for b in "${need_bins[@]}"; do
    [ -x "$root.tmp/usr/bin/$b" ] || {
        echo "servers.sh: no $b in the packages" >&2; exit 1; }
done
pv=$(prom_version "$root.tmp/usr/bin/prometheus")
if [ -z "$pv" ] || ! version_ge "$pv" "$min_prom"; then
    echo "servers.sh: got Prometheus '${pv:-?}', need >= $min_prom" \
         "(SERVERS_MIN_PROMETHEUS=... accepts an older one)" >&2
    cat "$d/versions.tmp" >&2
    rm -rf "$root.tmp"
    exit 1
fi
rm -rf "$root"
mv "$root.tmp" "$root"
mv "$d/versions.tmp" "$d/versions"
report
