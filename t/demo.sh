#!/usr/bin/env bash
# make demo / make demo-stop: nginx with promgate in front of a local
# Prometheus and VictoriaMetrics, all on loopback under build/demo, with a
# sender writing samples and exemplars through the gateway.
#
# The servers are the current ones users run, from build/servers (make
# servers: Prometheus 3.5.x, VictoriaMetrics 1.145.x from Debian unstable);
# PROMETHEUS_BIN / VICTORIA_BIN override them (e.g. /usr/bin/prometheus for
# Debian 12's 2.42).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir="$top/build/demo"
py=/usr/bin/python3
servers="$top/build/servers"
prometheus_bin=${PROMETHEUS_BIN:-$servers/root/usr/bin/prometheus}
victoria_bin=${VICTORIA_BIN:-$servers/root/usr/bin/victoria-metrics}

prometheus_version() {
    "$prometheus_bin" --version 2>&1 | sed -n 's/^prometheus, version \([^ ]*\).*/\1/p'
}

victoria_version() {     # Debian's builds print no -version
    local v
    v=$("$victoria_bin" -version 2>&1 | grep -o 'v[0-9][0-9.]*' | head -1)
    if [ -z "$v" ] && [ "$victoria_bin" = "$servers/root/usr/bin/victoria-metrics" ]; then
        v=$(awk '$1 == "victoria-metrics" {print $2 " (Debian " $3 ")"}' \
            "$servers/versions" 2>/dev/null)
    fi
    if [ -z "$v" ] && [ "$victoria_bin" = /usr/bin/victoria-metrics ]; then
        v=$(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null)
    fi
    echo "${v:-unknown}"
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
    local p=$1
    while ! port_free "$p"; do p=$((p + 1)); done
    echo "$p"
}

wait_http() {
    local url=$1 i
    for i in $(seq 1 100); do
        curl -sf -o /dev/null "$url" && return 0
        sleep 0.2
    done
    echo "demo: $url did not come up; see $dir/*.log" >&2
    return 1
}

stop() {
    local f pid
    for f in sender nginx prometheus victoria; do
        [ -f "$dir/$f.pid" ] || continue
        pid=$(cat "$dir/$f.pid")
        if kill -0 "$pid" 2>/dev/null; then
            if [ "$f" = nginx ]; then kill -QUIT "$pid"; else kill "$pid"; fi
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/$f.pid"
    done
}

case "${1:-start}" in
stop)
    stop
    echo "demo stopped"
    exit 0
    ;;
start)
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac

for b in "$prometheus_bin" "$victoria_bin"; do
    [ -x "$b" ] || { echo "demo: $b is missing (make servers)" >&2; exit 1; }
done

stop
# data per server version: a newer storage's files do not open in an older one
prom_data="$dir/prom/$(prometheus_version | tr -c 'A-Za-z0-9.+\n-' _)"
vm_data="$dir/vm/$(victoria_version | cut -d" " -f1 | tr -c 'A-Za-z0-9.+\n-' _)"
mkdir -p "$prom_data" "$vm_data" "$dir/nginx/logs"

gw=$(pick_port 9201)
pp=$(pick_port 9090)
vp=$(pick_port 8428)

cat > "$dir/prometheus.yml" <<YML
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: promgate
    scrape_interval: 5s
    static_configs:
      - targets: ['127.0.0.1:$gw']
YML

"$prometheus_bin" --config.file="$dir/prometheus.yml" --storage.tsdb.path="$prom_data" \
    --web.listen-address="127.0.0.1:$pp" --web.enable-remote-write-receiver \
    --enable-feature=exemplar-storage,native-histograms \
    >"$dir/prometheus.log" 2>&1 </dev/null &
echo $! > "$dir/prometheus.pid"

"$victoria_bin" -storageDataPath="$vm_data" -httpListenAddr="127.0.0.1:$vp" \
    -search.latencyOffset=1s >"$dir/victoria.log" 2>&1 </dev/null &
echo $! > "$dir/victoria.pid"

sed -e "s|modules/ngx_http_promgate_module.so|$top/build/ngx_http_promgate_module.so|" \
    -e "s|127.0.0.1:9201|127.0.0.1:$gw|" \
    -e "s|127.0.0.1:9090|127.0.0.1:$pp|" \
    -e "s|127.0.0.1:8428|127.0.0.1:$vp|" \
    -e "s|/var/lib/promgate/wal|$dir/wal|" \
    -e "s|worker_processes auto;|worker_processes 2;\ndaemon off;\npid $dir/nginx/nginx.pid;|" \
    "$top/nginx.conf.example" > "$dir/nginx/nginx.conf"

wait_http "http://127.0.0.1:$pp/-/ready"
wait_http "http://127.0.0.1:$vp/health"

/usr/sbin/nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" \
    -e "$dir/nginx/logs/error.log" >"$dir/nginx/logs/stdout.log" 2>&1 </dev/null &
echo $! > "$dir/nginx.pid"
wait_http "http://127.0.0.1:$gw/metrics"

"$py" "$top/t/demo_sender.py" "http://127.0.0.1:$gw/api/v1/write" \
    >"$dir/sender.log" 2>&1 </dev/null &
echo $! > "$dir/sender.pid"

sleep 3

# Debian's builds of Prometheus 3.5 and VictoriaMetrics 1.145 come without
# their web UIs (404); then the demo points at the query APIs only
ui_ok() { [ "$(curl -s -o /dev/null -w '%{http_code}' -L "$1")" = 200 ]; }
prom_q="http://127.0.0.1:$pp/api/v1/query?query=promgate_demo_requests_total"
if ui_ok "http://127.0.0.1:$pp/graph"; then
    prom_ui="http://127.0.0.1:$pp/graph?g0.expr=promgate_demo_requests_total
                    curl '$prom_q'"
else
    prom_ui="curl '$prom_q'
                    (this Prometheus build has no web UI)"
fi
vm_q="http://127.0.0.1:$vp/api/v1/query?query=promgate_demo_requests_total"
if ui_ok "http://127.0.0.1:$vp/vmui/"; then
    vm_ui="http://127.0.0.1:$vp/vmui/  (query promgate_demo_requests_total)
                    curl '$vm_q'"
else
    vm_ui="curl '$vm_q'
                    (this VictoriaMetrics build has no vmui)"
fi

cat <<TXT

promgate demo is running (work directory: $dir)

  Prometheus $(prometheus_version) ($prometheus_bin)
  VictoriaMetrics $(victoria_version) ($victoria_bin)
  nginx $(/usr/sbin/nginx -v 2>&1 | sed 's|.*nginx/||')

  remote write:     http://127.0.0.1:$gw/api/v1/write   (a sender posts every 2 s)
  promgate metrics: http://127.0.0.1:$gw/metrics
  Prometheus:       $prom_ui
  exemplars:        http://127.0.0.1:$gw/api/v1/query_exemplars?query=promgate_demo_request_duration_seconds_bucket
                    (promgate's exemplar store; Prometheus has them too:
                     http://127.0.0.1:$pp/api/v1/query_exemplars?query=promgate_demo_request_duration_seconds_bucket)
  VictoriaMetrics:  $vm_ui
  nginx error log:  $dir/nginx/logs/error.log

Stop it with: make demo-stop
TXT

curl -s "http://127.0.0.1:$gw/metrics" | grep -E '^promgate_(write_requests_total|received_samples_total|forward_outcomes_total)' || true
