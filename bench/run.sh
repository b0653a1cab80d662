#!/usr/bin/env bash
# promgate benchmarks: one command, one run, loopback only.
#
#   bash bench/run.sh            (what `make bench` runs after building the module)
#
# Rows, per body shape (bench/gen_bodies.py):
#   baseline  loadgen straight to a null sink (nginx `return 204`)
#   promgate  nginx + ngx_http_promgate_module, fan-out to two null sinks
#             (remote write 1.0 in, targets default proto=v1: forwarded as is)
#   promgate remote write 2.0 rows (BENCH_RW2_SHAPES), on the same nginx,
#             interleaved in rounds with a 1.0 reference window:
#               2.0 in, forwarded as is     (targets proto=asis)
#               2.0 in, translated to 1.0   (targets default, proto=v1)
#               1.0 in, translated to 2.0   (targets proto=v2)
#   vmagent   the current vmagent (build/servers, Debian sid: 1.145 when
#             written), GOMAXPROCS=1, -remoteWrite.url x2 to the same sinks,
#             -remoteWrite.forcePromProto (the sinks stand for Prometheus-
#             protocol storages; a null sink would otherwise be taken for
#             VictoriaMetrics and get zstd blocks)
#   vmagent179  Debian 12's vmagent 1.79 (/usr/bin/vmagent), same flags
#             (it has no VictoriaMetrics protocol to force off)
#   mirror    plain nginx, proxy_pass + mirror to the two sinks (no module):
#             the floor for "nginx moves the body to two places"
# Figures: samples/s at max rate, CPU-seconds per million samples of the
# gateway's processes (utime+stime from /proc, master + workers / all vmagent
# threads, over the window, vmagent's queue drained), PSS, and p50/p99/p99.9
# latency added over the baseline at 50% of each gateway's own max rate.
#
# Knobs (environment):
#   BENCH_SECONDS=10          measured window, main shape (max rate and each
#                             fixed-rate run)
#   BENCH_SECONDS_OTHER=5     window for the other shapes
#   BENCH_WARMUP=2            unmeasured warm-up before each max-rate window
#   BENCH_SHAPES="main small large exemplar churn"
#   BENCH_LATENCY_SHAPES=main shapes that also get the 50%-rate latency runs
#   BENCH_GATEWAYS="promgate vmagent vmagent179 mirror"
#   BENCH_RW2_SHAPES="main small large exemplar churn"
#                             shapes that get the remote write 2.0 rows
#                             ("" to leave them out)
#   BENCH_RW2_ROUNDS=3        interleaved rounds on main (1.0 reference,
#                             2.0 as is, 2.0->1.0, 1.0->2.0, each round)
#   BENCH_RW2_ROUNDS_OTHER=1  rounds on the other shapes
#   BENCH_RW2_SECONDS=5       window per row and round, main
#   BENCH_RW2_SECONDS_OTHER=3 window per row and round, other shapes
#   BENCH_RW2_WARMUP=1        unmeasured warm-up before each of those windows
#   BENCH_ROUTE=1             the routing rows (main shape): promgate with
#                             no rule, with a drop= matching 10% of the
#                             series on one of its two targets, with a 3-way
#                             promgate_shard; vmagent doing the same with
#                             -remoteWrite.urlRelabelConfig and
#                             -remoteWrite.shardByURL (0: leave them out)
#   BENCH_ROUTE_ROUNDS=3      interleaved rounds of the promgate rows
#   BENCH_ROUTE_SECONDS=5     window per row and round
#   BENCH_RETRIES=2           a gateway window whose CPU went more than
#   BENCH_RETRY_OTHER=0.10    this share to other work is measured again, up
#                             to BENCH_RETRIES more times; the least
#                             disturbed attempt is kept (0: never again)
#   BENCH_MIRROR_SHAPES=main  shapes that get the mirror reference row
#   BENCH_CONNS=8             sender connections
#   BENCH_PIN=1               gateway on CPU 1, sender + sinks on CPU 0
#   BENCH_EXEMPLARS=1         0: leave exemplar capture out
#   BENCH_SERIES_INDEX=0      1: add the series-index directives (hook)
#   PROMGATE_HTTP_EXTRA / PROMGATE_LOCATION_EXTRA   raw nginx.conf lines
#   BENCH_DECODE=1            decode-only table (bench/decode_bench.c, built here
#                             from src/core of BENCH_SRC_TREE, default this checkout)
#   BENCH_DECODE_REPEAT=3     decode_bench -r: best of N passes per figure
#   BENCH_CALLGRIND=1         instructions per sample in the decode table
#                             (valgrind --tool=callgrind on decode_bench -m
#                             MODE: snappy, scan, v1, v2); 0 skips; without
#                             valgrind the columns show –
#   BENCH_CALLGRIND_SAMPLES=40000  samples per shape it counts (whole bodies,
#                             at least one): the large shape's first 4
#   PROMGATE_MODULE, NGINX_BIN, VMAGENT_BIN (current vmagent; run.sh runs
#   t/servers.sh once when it is missing), VMAGENT179_BIN (/usr/bin/vmagent),
#   BUILD, DECODE_BENCH
#   BENCH_KEEP=1              keep the run directory (configs, logs, JSON)
#   BENCH_RESULTS=DIR         where latest.md / latest.jsonl / latest.png go
#                             (default bench/results)
#   BENCH_EXEMPLAR_QUERY=1    0: leave out the exemplar queries (promgate vs
#                             Prometheus 2.42 and the current Prometheus,
#                             bench/exemplar_bench.py); BENCH_EXEMPLAR_QUERIES=100
#                             timed queries of each kind per server,
#                             BENCH_EXEMPLAR_BLOCK=10 in a row to one server,
#                             BENCH_EXEMPLAR_SETTLE=20 ms pause after each turn;
#                             PROMETHEUS_BIN (/usr/bin/prometheus, 2.42),
#                             PROMETHEUS_CURRENT_BIN (build/servers, 3.5.x)
#   BENCH_EXEMPLAR_PEERS=1    0: leave out the federated exemplar queries
#                             (bench/exemplar_peers_bench.py: three gateways
#                             with peers vs one; BENCH_PEERS_PER_NODE=100000,
#                             BENCH_PEERS_QUERIES=50)
#   BENCH_PLOT=1              0: no latest.png (report.py --plot, gnuplot)
#   BENCH_DEPS=1              0: never run t/deps.sh bench (valgrind,
#                             gnuplot-nox) when one of them is missing
#   BENCH_SPOOL=1             0: leave out the spool section at the end
#                             (bench/spool_bench.py, its knobs SPOOL_BENCH_*)
#
# Output: a table on stdout and in bench/results/latest.md; the raw JSON
# lines in bench/results/latest.jsonl; a plot of them in
# bench/results/latest.png (gnuplot; latest.md links it).

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BUILD=${BUILD:-$REPO/build}
OUT=$BUILD/bench
RESULTS=${BENCH_RESULTS:-$HERE/results}
T_START=$(date +%s)
PYTHON=${PYTHON:-/usr/bin/python3}
MODULE=${PROMGATE_MODULE:-$BUILD/ngx_http_promgate_module.so}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
SERVERS_DIR=${SERVERS_DIR:-$BUILD/servers}
VMAGENT_BIN=${VMAGENT_BIN:-$SERVERS_DIR/root/usr/bin/vmagent}
VMAGENT179_BIN=${VMAGENT179_BIN:-/usr/bin/vmagent}
PROMETHEUS_BIN=${PROMETHEUS_BIN:-/usr/bin/prometheus}
PROMETHEUS_CURRENT_BIN=${PROMETHEUS_CURRENT_BIN:-$SERVERS_DIR/root/usr/bin/prometheus}

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_SECONDS_OTHER=${BENCH_SECONDS_OTHER:-5}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_SHAPES=${BENCH_SHAPES:-main small large exemplar churn}
BENCH_LATENCY_SHAPES=${BENCH_LATENCY_SHAPES:-main}
BENCH_GATEWAYS=${BENCH_GATEWAYS:-promgate vmagent vmagent179 mirror}
BENCH_RW2_SHAPES=${BENCH_RW2_SHAPES-main small large exemplar churn}
BENCH_RW2_ROUNDS=${BENCH_RW2_ROUNDS:-3}
BENCH_RW2_ROUNDS_OTHER=${BENCH_RW2_ROUNDS_OTHER:-1}
BENCH_RW2_SECONDS=${BENCH_RW2_SECONDS:-5}
BENCH_RW2_SECONDS_OTHER=${BENCH_RW2_SECONDS_OTHER:-3}
BENCH_RW2_WARMUP=${BENCH_RW2_WARMUP:-1}
BENCH_ROUTE=${BENCH_ROUTE:-1}
BENCH_ROUTE_ROUNDS=${BENCH_ROUTE_ROUNDS:-3}
BENCH_ROUTE_SECONDS=${BENCH_ROUTE_SECONDS:-5}
BENCH_RETRIES=${BENCH_RETRIES:-2}
BENCH_RETRY_OTHER=${BENCH_RETRY_OTHER:-0.10}
BENCH_MIRROR_SHAPES=${BENCH_MIRROR_SHAPES:-main}
BENCH_CONNS=${BENCH_CONNS:-8}
BENCH_PIN=${BENCH_PIN:-1}
BENCH_EXEMPLARS=${BENCH_EXEMPLARS:-1}
BENCH_SERIES_INDEX=${BENCH_SERIES_INDEX:-0}
PROMGATE_HTTP_EXTRA=${PROMGATE_HTTP_EXTRA:-}
PROMGATE_LOCATION_EXTRA=${PROMGATE_LOCATION_EXTRA:-}
BENCH_CALLGRIND=${BENCH_CALLGRIND:-1}
BENCH_CALLGRIND_SAMPLES=${BENCH_CALLGRIND_SAMPLES:-40000}
BENCH_PLOT=${BENCH_PLOT:-1}
BENCH_DEPS=${BENCH_DEPS:-1}

CLK_TCK=$(getconf CLK_TCK)
RUN=$(mktemp -d /tmp/promgate-bench.XXXXXX)
JSONL=$RUN/results.jsonl
: >"$JSONL"

STARTED=()          # pids this script started; stopped on exit, one by one

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------------ helpers

stop_pid() {        # stop_pid PID [SIG]: that process only, wait, then KILL
    local pid=$1 sig=${2:-TERM}
    kill -0 "$pid" 2>/dev/null || return 0
    kill -"$sig" "$pid" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

cleanup() {
    local p
    for p in "${STARTED[@]}"; do stop_pid "$p"; done
    STARTED=()
    # anything of this run still alive (it should not be) is ours: by pid
    for p in $(pgrep -f -- "$RUN/" 2>/dev/null); do
        [ "$p" = $$ ] && continue
        log "WARNING: stopping leftover pid $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null))"
        stop_pid "$p"
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        log "run directory kept: $RUN"
    else
        rm -rf "$RUN"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {       # wait_port PORT [SECONDS]
    local port=$1 n=$(( ${2:-10} * 10 ))
    while [ $n -gt 0 ]; do
        (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0
        sleep 0.1; n=$((n - 1))
    done
    return 1
}

# CPU pinning: gateway on CPU 1, sender and sinks on CPU 0.  An array, not a
# function, so that `"${PIN1[@]}" cmd &` leaves the command's own pid in $!
# (taskset execs it) and stopping that pid stops the process itself.
PIN0=(); PIN1=()
if [ "$BENCH_PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN0=(taskset -c 0); PIN1=(taskset -c 1)
fi
pin() {             # pin CPU CMD... (foreground use only)
    local cpu=$1; shift
    if [ "$cpu" = 1 ]; then "${PIN1[@]}" "$@"; else "${PIN0[@]}" "$@"; fi
}

check_comm() {      # check_comm PID NAME: the pid we measure is that program
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

pids_tree() {       # pids_tree PID: the process and its children (nginx workers)
    echo "$1"
    pgrep -P "$1" 2>/dev/null
}

cpu_ticks() {       # cpu_ticks PID: utime+stime of PID and its children, all threads
    local t=0 p v
    for p in $(pids_tree "$1"); do
        v=$(sed -e 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')
        t=$((t + ${v:-0}))
    done
    echo $t
}

cpu_busy() {        # cpu_busy: busy ticks (all but idle/iowait) of the gateway's CPU
    local line=cpu
    [ ${#PIN1[@]} -gt 0 ] && line=cpu1
    awk -v l="$line" '$1 == l {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

pss_kb() {          # pss_kb PID: PSS of PID and its children, kB
    local t=0 p v
    for p in $(pids_tree "$1"); do
        v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null)
        t=$((t + ${v:-0}))
    done
    echo $t
}

PSS_SAMPLER=
pss_start() {       # pss_start PID FILE: peak PSS every 0.25 s into FILE
    local pid=$1 file=$2
    echo 0 >"$file"
    (
        peak=0
        while kill -0 "$pid" 2>/dev/null; do
            v=$(pss_kb "$pid")
            if [ "$v" -gt "$peak" ]; then peak=$v; echo "$peak" >"$file"; fi
            sleep 0.25
        done
    ) </dev/null >/dev/null 2>&1 &
    PSS_SAMPLER=$!
}
pss_stop() {
    [ -n "$PSS_SAMPLER" ] && stop_pid "$PSS_SAMPLER"
    PSS_SAMPLER=
}

sink_requests() {   # requests a null sink has answered (stub_status, minus this one)
    local n
    n=$(curl -s --max-time 2 "http://127.0.0.1:$1/nginx_status" | awk 'NR == 3 {print $3}')
    echo $(( ${n:-0} ))
}

vm_metric_sum() {   # vm_metric_sum PORT REGEX: sum of matching vmagent metrics
    curl -s --max-time 2 "http://127.0.0.1:$1/metrics" \
        | awk -v re="$2" '$0 ~ re {s += $NF} END {printf "%.0f\n", s}'
}

sink_log_lines() {  # sink_log_lines S: lines in sink S's /gw/write log so far
    local n
    n=$(wc -l <"$RUN/sink_$1/gw.log" 2>/dev/null)
    echo $(( ${n:-0} ))
}

# what sink S got on /gw/write after line FROM: a JSON object
# {"<proto> <encoding>": {"n": requests, "avg_bytes": mean Content-Length}}
# with proto "2.0" for io.prometheus.write.v2.Request, "1.0" otherwise
sink_received() {   # sink_received S FROM
    tail -n +"$(($2 + 1))" "$RUN/sink_$1/gw.log" 2>/dev/null | awk -F'|' '
        { p = ($1 ~ /io\.prometheus\.write\.v2\.Request/) ? "2.0" : "1.0"
          e = ($2 == "" || $2 == "-") ? "identity" : $2
          k = p " " e; n[k]++; b[k] += $4 }
        END { printf "{"; sep = ""
              for (k in n) { printf "%s\"%s\":{\"n\":%d,\"avg_bytes\":%.0f}", sep, k, n[k], b[k] / n[k]; sep = "," }
              printf "}\n" }'
}

json_get() {        # json_get JSON KEY.PATH
    "$PYTHON" -c '
import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    v = v[k]
print(v)' "$1" "$2"
}

emit() {            # emit KEY=VALUE... (values that look like JSON stay JSON)
    json_line "$@" >>"$JSONL"
}

json_line() {       # json_line KEY=VALUE...: the JSON object on stdout
    "$PYTHON" - "$@" <<'EOF'
import json, sys
d = {}
for a in sys.argv[1:]:
    k, _, v = a.partition("=")
    try:
        d[k] = json.loads(v)
    except ValueError:
        d[k] = v
print(json.dumps(d))
EOF
}

# ------------------------------------------------------------------- prepare

log "run directory $RUN"
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
# how busy the machine is before we start anything (1 s sample)
machine_busy() {
    awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat
}
read -r mb0 mi0 < <(machine_busy); sleep 1; read -r mb1 mi1 < <(machine_busy)
BUSY_BEFORE=$(awk -v b=$((mb1 - mb0)) -v i=$((mi1 - mi0)) 'BEGIN {printf "%.0f%%", (b + i) ? 100 * b / (b + i) : 0}')
log "machine busy before the run: $BUSY_BEFORE of $(nproc) CPUs (other work disturbs the figures)"
mkdir -p "$OUT" "$RESULTS"

# the bench-only packages (make bench installs them first: t/deps.sh bench);
# a failed install only leaves their figures out
if [ "$BENCH_DEPS" = 1 ] && { { [ "$BENCH_CALLGRIND" = 1 ] && ! command -v valgrind >/dev/null; } \
        || { [ "$BENCH_PLOT" = 1 ] && ! command -v gnuplot >/dev/null; }; }; then
    log "valgrind or gnuplot missing: bash t/deps.sh bench"
    bash "$REPO/t/deps.sh" bench >"$RUN/deps.log" 2>&1 \
        || log "t/deps.sh bench failed (figures that need them are left out): $(tail -1 "$RUN/deps.log")"
fi

# shellcheck disable=SC2086
"$PYTHON" "$HERE/gen_bodies.py" --outdir "$OUT" --shapes "${BENCH_SHAPES// /,}" \
    || { log "FATAL: body generation failed"; exit 1; }

LOADGEN=$OUT/loadgen
if [ ! -x "$LOADGEN" ] || [ "$HERE/loadgen.c" -nt "$LOADGEN" ]; then
    cc -O2 -Wall -o "$LOADGEN" "$HERE/loadgen.c" -lm \
        || { log "FATAL: cannot build loadgen"; exit 1; }
fi

common_nginx_head() {   # common_nginx_head DIR
    cat <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 4096;
events { worker_connections 2048; }
EOF
}

common_http() {     # common_http DIR
    cat <<EOF
    access_log off;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
EOF
}

start_nginx() {     # start_nginx NAME CONF_TEXT CPU -> sets NGX_PID, or returns 1
    local conf=$2 cpu=$3 dir=$RUN/$1 pinned
    mkdir -p "$dir"
    printf '%s\n' "$conf" >"$dir/nginx.conf"
    if ! "$NGINX_BIN" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
            >"$dir/test.log" 2>&1; then
        NGX_ERR=$(grep -h -m1 -E 'emerg|alert|crit|error' "$dir/test.log" "$dir/error.log" 2>/dev/null | head -1)
        return 1
    fi
    if [ "$cpu" = 1 ]; then pinned=("${PIN1[@]}"); else pinned=("${PIN0[@]}"); fi
    "${pinned[@]}" "$NGINX_BIN" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
        >"$dir/stdout.log" 2>&1 &
    NGX_PID=$!
    STARTED+=("$NGX_PID")
    return 0
}

# CPU seconds between two tick readings; "null" when the count went down
# (a worker died and was replaced: its ticks are gone)
cpu_s() {
    if [ "$2" -lt "$1" ]; then echo null; return; fi
    awk -v t=$(($2 - $1)) -v h="$CLK_TCK" 'BEGIN {printf "%.3f", t / h}'
}

# worker crashes so far (nginx: "exited on signal"; vmagent: not running)
crashes() {
    case $1 in
        vmagent*) kill -0 "$GW_PID" 2>/dev/null && echo 0 || echo 1 ;;
        *) local n; n=$(grep -c 'exited on signal' "$RUN/$1/error.log" 2>/dev/null)
           echo "${n:-0}" ;;
    esac
}

# share of the gateway's CPU that went to something else during a window
# (other tasks, steal, softirq charged while the gateway was not running):
# a noise indicator on a shared machine.  Pinned: CPU 1; otherwise all CPUs
# (then it includes the sender and the sinks).
other_cpu() {       # other_cpu BUSY0 BUSY1 TICKS0 TICKS1 WALL0 WALL1 -> fraction
    awk -v b=$(($2 - $1)) -v t=$(($4 - $3)) -v w0="$5" -v w1="$6" -v h="$CLK_TCK" \
        'BEGIN {w = (w1 - w0) * h; if (w <= 0) w = 1; v = (b - t) / w; if (v < 0) v = 0; printf "%.3f", v}'
}

# ---------------------------------------------------------------- null sinks
# /api/v1/write: the baseline and the mirror (no log); /gw/write: promgate
# and vmagent forward here, and every request is logged (content type,
# encoding, remote-write version, length) so that each window can say what
# the sinks actually received (1.0 or 2.0, snappy or zstd, bytes).  The log
# is written on the sinks' CPU (0), not the gateway's, at a few hundred
# lines a second.

PORT_A=$(free_port); PORT_B=$(free_port)
while [ "$PORT_B" = "$PORT_A" ]; do PORT_B=$(free_port); done
for s in a b; do
    port=PORT_${s^^}
    start_nginx "sink_$s" "$(common_nginx_head "$RUN/sink_$s")
http {
$(common_http "$RUN/sink_$s")
    log_format rw '\$http_content_type|\$http_content_encoding|\$http_x_prometheus_remote_write_version|\$content_length';
    server {
        listen 127.0.0.1:${!port} backlog=1024;
        client_max_body_size 0;
        location = /api/v1/write { return 204; }
        location = /gw/write { access_log $RUN/sink_$s/gw.log rw; return 204; }
        location = /nginx_status { stub_status; }
    }
}" 0 || { log "FATAL: null sink $s: ${NGX_ERR:-nginx -t failed}"; exit 1; }
    wait_port "${!port}" || { log "FATAL: null sink $s did not start"; exit 1; }
done
log "null sinks on 127.0.0.1:$PORT_A and :$PORT_B"

# ------------------------------------------------------------------ gateways

GW_PID=; GW_PORT=; GW_ERR=

# one promgate write location: promgate_location PATH PROTO LOC_EXTRA
# (PROTO: "" = the default, proto=v1; or asis / v2)
promgate_location() {
    local p=${2:+ proto=$2}
    cat <<EOF
        location = $1 {
            promgate_remote_write;
            promgate_forward /_rw/a$p;
            promgate_forward /_rw/b$p;
            client_max_body_size 64m;
            client_body_buffer_size 64m;$3
        }
EOF
}

# the locations of the remote write 2.0 rows, on the same nginx as the 1.0
# row (one exemplar zone, one worker): the loadgen picks the row by path
RW2_PATH_ASIS=/rw2/asis     # targets proto=asis: the sender's bytes
RW2_PATH_V2=/rw2/v2         # targets proto=v2: 1.0 in, 2.0 out
RW2_ERR=

# the routing rows' locations (BENCH_ROUTE): the same two sinks, and a third
# target on sink a for the shard group.  The drop= selector matches 10.4% of
# the main shape's series (go_gc_duration_seconds, go_goroutines,
# process_cpu_seconds_total, process_resident_memory_bytes)
ROUTE_PATH_DROP=/route/drop10
ROUTE_PATH_SHARD=/route/shard3
ROUTE_DROP_RE='go_.*|process_.*'
ROUTE_ERR=

route_locations() {     # route_locations LOC_EXTRA
    cat <<EOF
        location = $ROUTE_PATH_DROP {
            promgate_remote_write;
            promgate_forward /_rw/a;
            promgate_forward /_rw/b 'drop={__name__=~"$ROUTE_DROP_RE"}';
            client_max_body_size 64m;
            client_body_buffer_size 64m;$1
        }
        location = $ROUTE_PATH_SHARD {
            promgate_remote_write;
            promgate_forward /_rw/a shard=nodes3;
            promgate_forward /_rw/b shard=nodes3;
            promgate_forward /_rw/c shard=nodes3;
            client_max_body_size 64m;
            client_body_buffer_size 64m;$1
        }
        location /_rw/c {
            internal;
            proxy_pass http://sink_a/gw/write;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
EOF
}

start_promgate() {
    local dir=$RUN/promgate http_extra="$PROMGATE_HTTP_EXTRA" loc_extra="$PROMGATE_LOCATION_EXTRA"
    local rw2_locs="" with_rw2 route_locs="" route_http="" with_route
    GW_PORT=$(free_port)
    if [ ! -f "$MODULE" ]; then
        GW_ERR="module not built: $MODULE does not exist (make -C $REPO module)"
        return 1
    fi
    # load a private copy: a rebuild that overwrites build/*.so in place
    # (cp) while nginx has it mapped crashes the running workers
    cp "$MODULE" "$RUN/ngx_http_promgate_module.so"
    MODULE_INFO="$MODULE ($(date -u -r "$MODULE" '+%Y-%m-%d %H:%M:%S UTC'), sha256 $(sha256sum "$MODULE" | cut -c1-12))"
    # --- hook: exemplar capture and the series index, once the module has them
    if [ "$BENCH_EXEMPLARS" = 1 ]; then
        http_extra+=$'\n'"    promgate_exemplar_zone exemplars:64m max=100000;"
        loc_extra+=$'\n'"            promgate_exemplars exemplars;"
    fi
    if [ "$BENCH_SERIES_INDEX" = 1 ]; then
        http_extra+=$'\n'"    promgate_series_zone series:32m ttl=7d;"
        loc_extra+=$'\n'"            promgate_series_index series;"
    fi
    # with the 2.0 locations first; a module without proto= (or without
    # 2.0) still gets its 1.0 row, and the 2.0 rows say why they are missing
    for with_rw2 in 1 0; do
      for with_route in 1 0; do
        [ $with_route = 1 ] && [ "$BENCH_ROUTE" != 1 ] && continue
        rw2_locs=""
        if [ $with_rw2 = 1 ]; then
            [ -n "$BENCH_RW2_SHAPES" ] || continue
            rw2_locs="$(promgate_location "$RW2_PATH_ASIS" asis "$loc_extra")
$(promgate_location "$RW2_PATH_V2" v2 "$loc_extra")"
        fi
        route_locs=""; route_http=""
        if [ $with_route = 1 ]; then
            route_locs=$(route_locations "$loc_extra")
            route_http="    promgate_shard nodes3;"
        fi
        start_nginx promgate "load_module $RUN/ngx_http_promgate_module.so;
$(common_nginx_head "$dir")
http {
$(common_http "$dir")
$http_extra
$route_http
    upstream sink_a { server 127.0.0.1:$PORT_A; keepalive 16; keepalive_requests 100000000; }
    upstream sink_b { server 127.0.0.1:$PORT_B; keepalive 16; keepalive_requests 100000000; }
    server {
        listen 127.0.0.1:$GW_PORT backlog=1024;
        # also at server level: subrequests share the parent's headers_in, and
        # nginx checks Content-Length against client_max_body_size of the
        # *subrequest's* location (/_rw/*, default 1m): a 1.2 MB body would be
        # refused there with 413 (client intended to send too large body)
        client_max_body_size 64m;
$(promgate_location /api/v1/write "" "$loc_extra")
$rw2_locs
$route_locs
        location /_rw/a {
            internal;
            proxy_pass http://sink_a/gw/write;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
        location /_rw/b {
            internal;
            proxy_pass http://sink_b/gw/write;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }
}" 1 && break 2
        if [ $with_route = 1 ]; then
            ROUTE_ERR="nginx does not accept promgate_shard / promgate_forward ... drop=, shard=: ${NGX_ERR:-see $dir/test.log}"
            log "promgate: $ROUTE_ERR; starting without the routing rows"
        elif [ $with_rw2 = 1 ]; then
            RW2_ERR="nginx does not accept promgate_forward ... proto=asis|v2: ${NGX_ERR:-see $dir/test.log}"
            log "promgate: $RW2_ERR; starting without the 2.0 rows"
        else
            GW_ERR="nginx does not accept the promgate config: ${NGX_ERR:-see $dir/test.log}"
            return 1
        fi
      done
    done
    if [ -z "$route_locs" ] && [ -z "$ROUTE_ERR" ]; then
        ROUTE_ERR="BENCH_ROUTE=$BENCH_ROUTE"
    fi
    if [ -z "$rw2_locs" ] && [ -z "$RW2_ERR" ]; then
        RW2_ERR="BENCH_RW2_SHAPES is empty"
    fi
    GW_PID=$NGX_PID
    wait_port "$GW_PORT" || { GW_ERR="promgate nginx did not start (see $dir/error.log)"; return 1; }
    check_comm "$GW_PID" nginx || { GW_ERR="pid $GW_PID is not nginx"; return 1; }
}

start_mirror() {
    local dir=$RUN/mirror
    GW_PORT=$(free_port)
    start_nginx mirror "$(common_nginx_head "$dir")
http {
$(common_http "$dir")
    upstream sink_a { server 127.0.0.1:$PORT_A; keepalive 16; keepalive_requests 100000000; }
    upstream sink_b { server 127.0.0.1:$PORT_B; keepalive 16; keepalive_requests 100000000; }
    server {
        listen 127.0.0.1:$GW_PORT backlog=1024;
        client_max_body_size 64m;       # see the promgate config
        location = /api/v1/write {
            client_max_body_size 64m;
            client_body_buffer_size 64m;
            mirror /_rw/b;
            proxy_pass http://sink_a/api/v1/write;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
        location = /_rw/b {
            internal;
            proxy_pass http://sink_b/api/v1/write;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }
}" 1 || { GW_ERR="mirror nginx: ${NGX_ERR:-nginx -t failed}"; return 1; }
    GW_PID=$NGX_PID
    wait_port "$GW_PORT" || { GW_ERR="mirror nginx did not start"; return 1; }
    check_comm "$GW_PID" nginx || { GW_ERR="pid $GW_PID is not nginx"; return 1; }
}

# the vmagents: "vmagent" is the current one (build/servers, from Debian
# sid: 1.145 when written), "vmagent179" Debian 12's 1.79.  Debian's builds
# print no version (-version is empty), so the version is the package's.
vmagent_bin() {     # vmagent_bin GW -> path
    case $1 in
        vmagent179) echo "$VMAGENT179_BIN" ;;
        *) echo "$VMAGENT_BIN" ;;
    esac
}

vmagent_version() { # vmagent_version GW -> Debian package version, or "unknown"
    local v=""
    case $1 in
        vmagent179)
            if [ "$VMAGENT179_BIN" = /usr/bin/vmagent ]; then
                v=$(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null)
            fi ;;
        *)
            if [ "$VMAGENT_BIN" = "$SERVERS_DIR/root/usr/bin/vmagent" ]; then
                v=$(awk '$1 == "victoria-metrics" {print $2 " (Debian " $3 ")"}' \
                        "$SERVERS_DIR/versions" 2>/dev/null)
                [ -n "$v" ] || v=$(dpkg-deb -f "$(ls "$SERVERS_DIR"/debs/victoria-metrics_*.deb 2>/dev/null | tail -1)" \
                                       Version 2>/dev/null)
            fi ;;
    esac
    echo "${v:-unknown}"
}

is_vmagent() { case $1 in vmagent*) return 0 ;; *) return 1 ;; esac; }

# VM_ROUTE: "" (two URLs, every series to both), drop10 (the second URL
# drops what the promgate drop10 row drops, -remoteWrite.urlRelabelConfig)
# or shard3 (three URLs, -remoteWrite.shardByURL)
VM_ROUTE=

start_vmagent() {   # start_vmagent GW
    local gw=$1 dir=$RUN/$1${VM_ROUTE:+-$VM_ROUTE} bin extra=()
    local urls=("http://127.0.0.1:$PORT_A/gw/write" "http://127.0.0.1:$PORT_B/gw/write")
    bin=$(vmagent_bin "$gw")
    mkdir -p "$dir/queue"
    GW_PORT=$(free_port)
    if [ ! -x "$bin" ] && [ "$gw" = vmagent ] && [ "$VMAGENT_BIN" = "$SERVERS_DIR/root/usr/bin/vmagent" ] \
            && [ -f "$REPO/t/servers.sh" ]; then
        log "vmagent: $bin missing; bash t/servers.sh (Debian sid .debs, unpacked under $SERVERS_DIR)"
        SERVERS_DIR=$SERVERS_DIR bash "$REPO/t/servers.sh" >"$RUN/servers.log" 2>&1 \
            || log "t/servers.sh failed: $(tail -1 "$RUN/servers.log")"
    fi
    if [ ! -x "$bin" ]; then GW_ERR="$bin not found"; return 1; fi
    # the sinks answer 204 to anything: a vmagent that speaks the
    # VictoriaMetrics protocol (zstd) would keep it; the sinks stand for
    # Prometheus-protocol storages, so force that protocol where it exists
    # (-help into a file first: `-help | grep -q` under pipefail fails at
    # random when grep exits before vmagent has written all of it)
    "$bin" -help >"$dir/help.txt" 2>&1
    if grep -q -- '-remoteWrite.forcePromProto' "$dir/help.txt"; then
        extra+=(-remoteWrite.forcePromProto=true,true)
        [ "$VM_ROUTE" = shard3 ] && extra[-1]+=",true"
    fi
    case $VM_ROUTE in
        drop10)
            printf -- '- action: drop\n  source_labels: [__name__]\n  regex: "%s"\n' \
                "$ROUTE_DROP_RE" >"$dir/drop10.yml"
            extra+=("-remoteWrite.urlRelabelConfig=,$dir/drop10.yml") ;;
        shard3)
            urls+=("http://127.0.0.1:$PORT_A/gw/write?c")
            extra+=(-remoteWrite.shardByURL) ;;
    esac
    # nothing relabeled, rounded or limited: no -remoteWrite.relabelConfig,
    # -remoteWrite.urlRelabelConfig, -remoteWrite.roundDigits,
    # -remoteWrite.significantFigures, -remoteWrite.maxHourlySeries/
    # maxDailySeries, -remoteWrite.rateLimit; unlimited disk queue
    GOMAXPROCS=1 "${PIN1[@]}" "$bin" \
        "${urls[@]/#/-remoteWrite.url=}" \
        "${extra[@]}" \
        -httpListenAddr="127.0.0.1:$GW_PORT" \
        -remoteWrite.tmpDataPath="$dir/queue" \
        -remoteWrite.maxDiskUsagePerURL=0 \
        -maxInsertRequestSize=64MB \
        -loggerOutput=stderr >"$dir/vmagent.log" 2>&1 &
    GW_PID=$!
    STARTED+=("$GW_PID")
    wait_port "$GW_PORT" 20 || { GW_ERR="$gw did not start (see $dir/vmagent.log)"; return 1; }
    check_comm "$GW_PID" vmagent || { GW_ERR="pid $GW_PID is not vmagent"; return 1; }
    # the main rows' flags (a routing row's vmagent has its own, in its row)
    if [ -z "$VM_ROUTE" ]; then
        VM_INFO+=("$gw=$bin, victoria-metrics $(vmagent_version "$gw")${extra[*]:+, ${extra[*]}}")
        # the same in the results, so that report.py names the rows without --vmagent
        emit kind=info gw="$gw" info="${VM_INFO[-1]#*=}"
    fi
    log "$gw: $bin, victoria-metrics $(vmagent_version "$gw")${extra[*]:+ (${extra[*]})}"
}
VM_INFO=()

stop_gateway() {
    [ -n "$GW_PID" ] && stop_pid "$GW_PID" "${1:-TERM}"
    local keep=() p
    for p in "${STARTED[@]}"; do [ "$p" != "$GW_PID" ] && keep+=("$p"); done
    STARTED=("${keep[@]}")
    GW_PID=
}

# vmagent answers before forwarding: wait until everything it accepted has
# been sent to both sinks (rows sent == 2 x rows accepted, nothing pending;
# VM_COPIES=1 for the routing rows, where some rows go to one URL only)
VM_COPIES=2
vmagent_drain() {   # vmagent_drain PORT MAX_SECONDS -> prints seconds waited
    local port=$1 max=$2 t0 now inserted sent pending
    t0=$(date +%s.%N)
    while :; do
        inserted=$(vm_metric_sum "$port" '^vmagent_rows_inserted_total\{type="promremotewrite"\}')
        sent=$(vm_metric_sum "$port" '^vmagent_remotewrite_block_size_rows_sum')
        pending=$(vm_metric_sum "$port" "$VM_PENDING_RE")
        now=$(date +%s.%N)
        if [ "$sent" -ge $((VM_COPIES * inserted)) ] && [ "$pending" -eq 0 ]; then
            break
        fi
        if awk -v a="$now" -v b="$t0" -v m="$max" 'BEGIN {exit !(a - b > m)}'; then
            log "WARNING: vmagent queue not drained after ${max}s (accepted $inserted rows, sent $sent of $((2 * inserted)), pending $pending B)"
            break
        fi
        sleep 0.2
    done
    awk -v a="$now" -v b="$t0" 'BEGIN {printf "%.2f\n", a - b}'
}

# --------------------------------------------------------------- one window

# what the windows send: LOAD_PATH on the gateway, LOAD_V 1 (<shape>-NN.bin,
# remote write 1.0) or 2 (<shape>.v2-NN.bin, 2.0; loadgen sends 2.0 headers)
LOAD_PATH=/api/v1/write
LOAD_V=1

body_files() {      # body_files SHAPE -> the body files LOAD_V selects
    if [ "$LOAD_V" = 2 ]; then echo "$OUT/$1".v2-*.bin; else echo "$OUT/$1"-*.bin; fi
}

# run_load LABEL PORT SHAPE SECONDS RATE -> prints loadgen's JSON line
run_load() {
    local label=$1 port=$2 shape=$3 secs=$4 rate=${5:-0} extra=()
    [ "$shape" = churn ] && extra+=(-u)
    # shellcheck disable=SC2046
    pin 0 "$LOADGEN" -p "$port" -P "$LOAD_PATH" -c "$BENCH_CONNS" -d "$secs" -r "$rate" -t 10 \
        -l "$label" -S "$OUT/$shape.samples" "${extra[@]}" $(body_files "$shape")
}

VM_PENDING_RE='^(vmagent_remotewrite_pending_data_bytes|vm_persistentqueue_bytes_pending|vmagent_remotewrite_pending_inmemory_blocks)'

# A window whose gateway CPU went more than BENCH_RETRY_OTHER (share of the
# window) to other work is measured again, up to BENCH_RETRIES more times;
# the least disturbed attempt is kept and says how many there were.  The
# same rule for every row: on a shared machine, contention inflates the CPU
# per sample of some gateways (vmagent's Go runtime more than nginx) and a
# ratio from disturbed windows is not a figure.
better_attempt() {  # better_attempt OTHER BEST: OTHER < BEST
    awk -v a="$1" -v b="$2" 'BEGIN {exit !(a < b)}'
}
disturbed() {       # disturbed OTHER: above BENCH_RETRY_OTHER
    awk -v a="$1" -v t="$BENCH_RETRY_OTHER" 'BEGIN {exit !(a > t)}'
}

# measure_max GATEWAY SHAPE SECONDS [KIND ROW ROUND WARMUP]: max-rate window
# with CPU, PSS, forwarding check (and what the sinks received).  KIND max
# (the main table) or rw2 (the remote write 2.0 rows: ROW, ROUND).  Emits
# the record, prints loadgen's JSON line.
measure_max() {
    local n=0 best_rec="" best_j="" best_other=9 tries="[]"
    while :; do
        n=$((n + 1))
        measure_max_once "$@" || true
        tries=$("$PYTHON" -c 'import json,sys; t=json.loads(sys.argv[1]); t.append(float(sys.argv[2])); print(json.dumps(t))' "$tries" "$MM_OTHER")
        if better_attempt "$MM_OTHER" "$best_other"; then
            best_rec=$MM_REC; best_j=$MM_J; best_other=$MM_OTHER
        fi
        disturbed "$best_other" || break
        [ "$n" -gt "$BENCH_RETRIES" ] && break
        kill -0 "$GW_PID" 2>/dev/null || break
        log "$1  $2${5:+ $5}: CPU1 other $(awk -v o="$MM_OTHER" 'BEGIN {printf "%.0f%%", 100 * o}') during the window; again ($((n + 1))/$((BENCH_RETRIES + 1)))"
    done
    "$PYTHON" -c 'import json,sys; d=json.loads(sys.argv[1]); d["attempts_other_cpu"]=json.loads(sys.argv[2]); print(json.dumps(d))' \
        "$best_rec" "$tries" >>"$JSONL"
    echo "$best_j"
}

# one attempt: sets MM_REC (the record), MM_J (loadgen's line), MM_OTHER
measure_max_once() {
    local gw=$1 shape=$2 secs=$3 kind=${4:-max} row=${5:-} round=${6:-0}
    local warm=${7:-$BENCH_WARMUP}
    local j ticks0 ticks1 a0 b0 a1 b1 drain=0 cpu pss la0 lb0
    local busy0 busy1 w0 w1 crash0
    local vm_in0=0 vm_in1=0 vm_sent0=0 vm_sent1=0
    run_load warmup "$GW_PORT" "$shape" "$warm" >/dev/null
    is_vmagent "$gw" && vmagent_drain "$GW_PORT" 60 >/dev/null
    a0=$(sink_requests "$PORT_A"); b0=$(sink_requests "$PORT_B")
    la0=$(sink_log_lines a); lb0=$(sink_log_lines b)
    if is_vmagent "$gw"; then
        vm_in0=$(vm_metric_sum "$GW_PORT" '^vmagent_rows_inserted_total\{type="promremotewrite"\}')
        vm_sent0=$(vm_metric_sum "$GW_PORT" '^vmagent_remotewrite_block_size_rows_sum')
    fi
    crash0=$(crashes "$gw")
    pss_start "$GW_PID" "$RUN/pss"
    busy0=$(cpu_busy); w0=$(date +%s.%N)
    ticks0=$(cpu_ticks "$GW_PID")
    j=$(run_load "$gw${row:+:$row}" "$GW_PORT" "$shape" "$secs" 0)
    if is_vmagent "$gw"; then
        drain=$(vmagent_drain "$GW_PORT" 120)
    fi
    ticks1=$(cpu_ticks "$GW_PID")
    busy1=$(cpu_busy); w1=$(date +%s.%N)
    pss_stop
    pss=$(cat "$RUN/pss")
    a1=$(sink_requests "$PORT_A"); b1=$(sink_requests "$PORT_B")
    if is_vmagent "$gw"; then
        vm_in1=$(vm_metric_sum "$GW_PORT" '^vmagent_rows_inserted_total\{type="promremotewrite"\}')
        vm_sent1=$(vm_metric_sum "$GW_PORT" '^vmagent_remotewrite_block_size_rows_sum')
    fi
    # the stub_status probes count themselves: one per read
    MM_OTHER=$(other_cpu "$busy0" "$busy1" "$ticks0" "$ticks1" "$w0" "$w1")
    MM_J=$j
    MM_REC=$(json_line kind="$kind" gw="$gw" shape="$shape" row="$row" round="$round" \
        path="$LOAD_PATH" rw_in="$LOAD_V.0" load="$j" \
        cpu_s="$(cpu_s "$ticks0" "$ticks1")" crashes=$(( $(crashes "$gw") - crash0 )) \
        pss_kb="$pss" drain_s="$drain" \
        sink_a_requests=$((a1 - a0 - 1)) sink_b_requests=$((b1 - b0 - 1)) \
        sink_a_received="$(sink_received a "$la0")" sink_b_received="$(sink_received b "$lb0")" \
        vm_rows_in=$((vm_in1 - vm_in0)) vm_rows_sent=$((vm_sent1 - vm_sent0)) \
        other_cpu="$MM_OTHER")
}

measure_rate() {    # measure_rate GW SHAPE SECONDS RATE: latency, and CPU at that load
    local gw=$1 shape=$2 secs=$3 rate=$4 j ticks0 ticks1 drain=0 busy0 busy1 w0 w1 crash0
    local n=0 other rec best_rec="" best_other=9
    while :; do
        n=$((n + 1))
        crash0=$(crashes "$gw")
        busy0=$(cpu_busy); w0=$(date +%s.%N)
        ticks0=$(cpu_ticks "$GW_PID")
        j=$(run_load "$gw@rate" "$GW_PORT" "$shape" "$secs" "$rate")
        is_vmagent "$gw" && drain=$(vmagent_drain "$GW_PORT" 60)
        ticks1=$(cpu_ticks "$GW_PID")
        busy1=$(cpu_busy); w1=$(date +%s.%N)
        other=$(other_cpu "$busy0" "$busy1" "$ticks0" "$ticks1" "$w0" "$w1")
        rec=$(json_line kind=rate gw="$gw" shape="$shape" rate="$rate" load="$j" drain_s="$drain" \
            other_cpu="$other" \
            cpu_s="$(cpu_s "$ticks0" "$ticks1")" crashes=$(( $(crashes "$gw") - crash0 )))
        if better_attempt "$other" "$best_other"; then best_rec=$rec; best_other=$other; fi
        disturbed "$best_other" || break
        [ "$n" -gt "$BENCH_RETRIES" ] && break
        kill -0 "$GW_PID" 2>/dev/null || break
        log "$gw  $shape @ $rate req/s: CPU1 other $(awk -v o="$other" 'BEGIN {printf "%.0f%%", 100 * o}'); again ($((n + 1))/$((BENCH_RETRIES + 1)))"
    done
    "$PYTHON" -c 'import json,sys; d=json.loads(sys.argv[1]); d["attempts"]=int(sys.argv[2]); print(json.dumps(d))' \
        "$best_rec" "$n" >>"$JSONL"
}

measure_baseline_rate() {   # measure_baseline_rate FOR_GW SHAPE SECONDS RATE
    local j
    j=$(run_load "baseline@rate" "$PORT_A" "$2" "$3" "$4")
    emit kind=rate gw=baseline for="$1" shape="$2" rate="$4" load="$j"
}

# The remote write 2.0 rows of one shape, on the running promgate: ROUNDS
# rounds, each a window of every row in turn, so that the rows see the same
# machine (a shared machine drifts over minutes; interleaving spreads that
# over all rows instead of charging it to one); each round starts one row
# later than the one before, so that no row is always first:
#   ref     1.0 in, /api/v1/write, targets default (v1): the 1.0 path
#   v2asis  2.0 in, /rw2/asis, targets proto=asis: forwarded as is
#   v2v1    2.0 in, /api/v1/write, targets default: translated to 1.0
#   v1v2    1.0 in, /rw2/v2, targets proto=v2: translated to 2.0
measure_rw2() {     # measure_rw2 SHAPE ROUNDS SECONDS
    local shape=$1 rounds=$2 secs=$3 k i row rows=(ref v2asis v2v1 v1v2)
    for k in $(seq "$rounds"); do
        for i in 0 1 2 3; do
            row=${rows[(i + k - 1) % 4]}
            case $row in
                ref)    LOAD_PATH=/api/v1/write;   LOAD_V=1 ;;
                v2asis) LOAD_PATH=$RW2_PATH_ASIS;  LOAD_V=2 ;;
                v2v1)   LOAD_PATH=/api/v1/write;   LOAD_V=2 ;;
                v1v2)   LOAD_PATH=$RW2_PATH_V2;    LOAD_V=1 ;;
            esac
            log "promgate  $shape: 2.0 rows, round $k/$rounds, $row (${LOAD_V}.0 in, $LOAD_PATH) ${secs}s"
            measure_max promgate "$shape" "$secs" rw2 "$row" "$k" "$BENCH_RW2_WARMUP" >/dev/null
            if ! kill -0 "$GW_PID" 2>/dev/null; then
                LOAD_PATH=/api/v1/write; LOAD_V=1
                return 1
            fi
        done
    done
    LOAD_PATH=/api/v1/write; LOAD_V=1
}

# The routing rows, main shape, on the running promgate: ROUNDS rounds of
# the three rows interleaved as measure_rw2 does:
#   ref     /api/v1/write, two targets, no rule
#   drop10  /route/drop10, two targets, the second with drop= (10.4%)
#   shard3  /route/shard3, three targets in one promgate_shard (replicas=1)
measure_route() {   # measure_route SHAPE ROUNDS SECONDS
    local shape=$1 rounds=$2 secs=$3 k i row rows=(ref drop10 shard3)
    for k in $(seq "$rounds"); do
        for i in 0 1 2; do
            row=${rows[(i + k - 1) % 3]}
            case $row in
                ref)    LOAD_PATH=/api/v1/write ;;
                drop10) LOAD_PATH=$ROUTE_PATH_DROP ;;
                shard3) LOAD_PATH=$ROUTE_PATH_SHARD ;;
            esac
            log "promgate  $shape: routing rows, round $k/$rounds, $row ($LOAD_PATH) ${secs}s"
            measure_max promgate "$shape" "$secs" route "$row" "$k" "$BENCH_RW2_WARMUP" >/dev/null
            if ! kill -0 "$GW_PID" 2>/dev/null; then
                LOAD_PATH=/api/v1/write
                return 1
            fi
        done
    done
    LOAD_PATH=/api/v1/write
}

# the vmagent routing rows: a vmagent per row, one window each
measure_route_vmagent() {   # measure_route_vmagent GW SHAPE SECONDS
    local gw=$1 shape=$2 secs=$3 row
    for row in drop10 shard3; do
        GW_ERR=; VM_ROUTE=$row; VM_COPIES=1
        start_vmagent "$gw"
        if [ -n "$GW_ERR" ]; then
            emit kind=skip gw="$gw routing $row" shape="$shape" reason="$GW_ERR"
        else
            log "$gw  $shape: routing row $row ${secs}s"
            measure_max "$gw" "$shape" "$secs" route "$row" 1 >/dev/null
        fi
        stop_gateway
    done
    VM_ROUTE=; VM_COPIES=2
}

# ---------------------------------------------------------------------- run

shape_secs() { [ "$1" = main ] && echo "$BENCH_SECONDS" || echo "$BENCH_SECONDS_OTHER"; }
in_list() { local x=$1; shift; [[ " $* " == *" $x "* ]]; }

# baseline max rate: sender + null sink, per shape
GW_PORT=$PORT_A
for shape in $BENCH_SHAPES; do
    secs=$(shape_secs "$shape")
    log "baseline  $shape: max rate ${secs}s"
    run_load warmup "$PORT_A" "$shape" 1 >/dev/null
    j=$(run_load baseline "$PORT_A" "$shape" "$secs" 0)
    emit kind=max gw=baseline shape="$shape" load="$j"
done

# ------------------------------------------------------------- decode only
# bench/decode_bench.c: snappy + the validating scan of src/core on the same
# bodies, no nginx, CPU time per sample on one core (also snappy alone and
# protobuf-c's unpack for comparison).  Built here from src/core and protoc-c
# output of proto/ in build/bench/proto.  DECODE_BENCH=path overrides;
# BENCH_DECODE=0 skips.
BENCH_DECODE=${BENCH_DECODE:-1}
BENCH_DECODE_REPEAT=${BENCH_DECODE_REPEAT:-3}   # best of N passes per figure
# the source tree decode_bench is built from: this checkout, or (to match a
# module built from a clean export) BENCH_SRC_TREE=/path/to/export
SRC_TREE=${BENCH_SRC_TREE:-$REPO}
CORE_PKGS="libprotobuf-c snappy rdkafka libpcre2-8 libxxhash"
build_decode_bench() {
    local bin=$OUT/decode_bench src=$HERE/decode_bench.c f newer=0
    [ -f "$src" ] || { DECODE_ERR="no $src"; return 1; }
    for f in "$src" "$SRC_TREE"/src/core/*.[ch] "$SRC_TREE"/proto/*.proto; do
        [ "$f" -nt "$bin" ] && newer=1
    done
    # built from another tree (an export's files carry the commit's mtime)
    [ "$(cat "$bin.src" 2>/dev/null)" = "$SRC_TREE" ] || newer=1
    [ -x "$bin" ] && [ $newer = 0 ] && { DECODE_BENCH=$bin; return 0; }
    rm -f "$bin.src"
    mkdir -p "$OUT/proto"
    protoc-c --c_out="$OUT/proto" -I"$SRC_TREE/proto" "$SRC_TREE/proto/types.proto" \
        "$SRC_TREE/proto/remote.proto" >"$RUN/decode_build.log" 2>&1 \
        || { DECODE_ERR="protoc-c failed (see $RUN/decode_build.log)"; return 1; }
    # only what the decode path needs first (the rest of src/core may be
    # mid-edit in a shared tree), then all of src/core
    local core
    for core in "pg_rw.c pg_rw2.c pg_rw_encode.c pg_snappy.c pg_utf8.c" "pg_rw.c pg_snappy.c pg_utf8.c" "*.c"; do
        # shellcheck disable=SC2046,SC2086
        cc -std=gnu99 -O2 -I"$SRC_TREE/src/core" -I"$OUT/proto" \
            $(pkg-config --cflags $CORE_PKGS 2>/dev/null) -o "$bin" "$src" \
            $(cd "$SRC_TREE/src/core" && printf "$SRC_TREE/src/core/%s " $core) \
            "$OUT"/proto/types.pb-c.c "$OUT"/proto/remote.pb-c.c \
            $(pkg-config --libs $CORE_PKGS 2>/dev/null) -lm >>"$RUN/decode_build.log" 2>&1 \
            && { DECODE_BENCH=$bin; echo "$SRC_TREE" >"$bin.src"; return 0; }
    done
    DECODE_ERR="decode_bench does not build: $(grep -m1 -E 'error' "$RUN/decode_build.log")"
    return 1
}
# Instructions per sample (BENCH_CALLGRIND=1): decode_bench -m MODE runs one
# figure once in bench_pass(), which callgrind counts alone
# (--collect-atstart=no --toggle-collect=bench_pass; callees included):
# "Collected : N" on valgrind's stderr / the samples decode_bench printed.
# Exact and independent of other work on the machine; whole bodies, the
# first of a shape's up to BENCH_CALLGRIND_SAMPLES samples.
CALLGRIND_MODES="snappy scan v1 v2"
callgrind_decode() {    # callgrind_decode SHAPE -> {"bodies":B,"modes":{MODE:{"instructions":N,"samples":S}}}
    local shape=$1 m per nb files out n smp modes=""
    per=$(cat "$OUT/$shape.samples" 2>/dev/null)
    files=("$OUT/$shape"-*.bin)
    nb=$(awk -v p="${per:-0}" -v b=${#files[@]} -v s="$BENCH_CALLGRIND_SAMPLES" \
        'BEGIN {n = p > 0 ? int((s + p - 1) / p) : b; if (n < 1) n = 1; if (n > b) n = b; print n}')
    for m in $CALLGRIND_MODES; do
        out=$(valgrind --tool=callgrind --collect-atstart=no --toggle-collect=bench_pass \
                  --callgrind-out-file="$RUN/callgrind.$shape.$m" \
                  "$DECODE_BENCH" -n 1 -m "$m" "${files[@]:0:$nb}" 2>"$RUN/callgrind.$shape.$m.err")
        n=$(sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$RUN/callgrind.$shape.$m.err")
        smp=$(json_get "$out" samples 2>/dev/null)
        if [ -n "$n" ] && [ -n "$smp" ]; then
            modes+="${modes:+,}\"$m\":{\"instructions\":$n,\"samples\":$smp}"
        else
            log "callgrind $shape $m failed: $(grep -m1 -iE 'error|unknown|invalid' "$RUN/callgrind.$shape.$m.err")"
        fi
        rm -f "$RUN/callgrind.$shape.$m"
    done
    echo "{\"bodies\":$nb,\"tool\":\"$(valgrind --version 2>/dev/null)\",\"modes\":{$modes}}"
}

DECODE_ERR=
if [ "$BENCH_DECODE" = 1 ]; then
    CALLGRIND_OK=0
    if [ "$BENCH_CALLGRIND" != 1 ]; then
        emit kind=skip gw="decode instructions" reason="BENCH_CALLGRIND=$BENCH_CALLGRIND"
    elif ! command -v valgrind >/dev/null; then
        log "SKIP instructions per sample: no valgrind (bash t/deps.sh bench)"
        emit kind=skip gw="decode instructions" reason="valgrind not installed (bash t/deps.sh bench)"
    else
        CALLGRIND_OK=1
    fi
    if [ -n "${DECODE_BENCH:-}" ] || build_decode_bench; then
        for shape in $BENCH_SHAPES; do
            # about 400k samples per pass (each pass decodes every body ITER times)
            iter=$(awk -v s="$(cat "$OUT/$shape.samples")" \
                -v b="$(ls "$OUT/$shape"-*.bin | wc -l)" \
                'BEGIN {i = int(400000 / (s * b)); print (i < 2 ? 2 : i)}')
            log "decode-only  $shape: $iter iterations over its bodies"
            j=$(pin 1 "$DECODE_BENCH" -n "$iter" -r "$BENCH_DECODE_REPEAT" "$OUT/$shape"-*.bin 2>"$RUN/decode_$shape.err")
            if [ -n "$j" ]; then
                cg=null
                if [ "$CALLGRIND_OK" = 1 ]; then
                    log "decode-only  $shape: instructions per sample (callgrind: $CALLGRIND_MODES)"
                    cg=$(callgrind_decode "$shape")
                fi
                emit kind=decode shape="$shape" load="$j" callgrind="$cg"
            else
                emit kind=skip gw=decode shape="$shape" reason="decode_bench failed: $(head -c 200 "$RUN/decode_$shape.err")"
            fi
        done
    else
        log "SKIP decode-only: $DECODE_ERR"
        emit kind=skip gw=decode reason="$DECODE_ERR"
    fi
fi

for gw in $BENCH_GATEWAYS; do
    GW_ERR=
    case $gw in
        promgate) start_promgate ;;
        vmagent|vmagent179) start_vmagent "$gw" ;;
        mirror)   start_mirror ;;
        *) log "unknown gateway $gw"; continue ;;
    esac
    if [ -n "$GW_ERR" ]; then
        log "SKIP $gw: $GW_ERR"
        emit kind=skip gw="$gw" reason="$GW_ERR"
        stop_gateway KILL
        continue
    fi
    for shape in $BENCH_SHAPES; do
        [ "$gw" = mirror ] && ! in_list "$shape" $BENCH_MIRROR_SHAPES && continue
        secs=$(shape_secs "$shape")
        log "$gw  $shape: max rate ${secs}s (+${BENCH_WARMUP}s warm-up)"
        j=$(measure_max "$gw" "$shape" "$secs")
        if ! kill -0 "$GW_PID" 2>/dev/null; then
            log "ERROR: $gw died during $shape; see $RUN/$gw"
            BENCH_KEEP=1
            emit kind=skip gw="$gw" shape="$shape" reason="process died during the run"
            break
        fi
        if in_list "$shape" $BENCH_LATENCY_SHAPES; then
            rps=$(json_get "$j" req_per_s)
            rate=$(awk -v r="$rps" 'BEGIN {printf "%.1f", r / 2}')
            # the mirror (the floor) at promgate's offered rate, not its own:
            # what plain nginx adds moving the same load to the two sinks
            if [ "$gw" = promgate ]; then
                eval "PROMGATE_HALF_${shape}=\$rate"
            elif [ "$gw" = mirror ]; then
                v=PROMGATE_HALF_$shape
                [ -n "${!v:-}" ] && rate=${!v}
            fi
            if awk -v r="$rate" 'BEGIN {exit !(r > 0)}'; then
                log "$gw  $shape: ${rate} req/s (50% of max) ${secs}s, then baseline at the same rate"
                measure_rate "$gw" "$shape" "$secs" "$rate"
                measure_baseline_rate "$gw" "$shape" "$secs" "$rate"
            fi
        fi
        if [ "$gw" = promgate ] && in_list "$shape" $BENCH_RW2_SHAPES; then
            if [ -n "$RW2_ERR" ]; then
                emit kind=skip gw="promgate 2.0 rows" shape="$shape" reason="$RW2_ERR"
            else
                if [ "$shape" = main ]; then
                    rounds=$BENCH_RW2_ROUNDS; rsecs=$BENCH_RW2_SECONDS
                else
                    rounds=$BENCH_RW2_ROUNDS_OTHER; rsecs=$BENCH_RW2_SECONDS_OTHER
                fi
                if ! measure_rw2 "$shape" "$rounds" "$rsecs"; then
                    log "ERROR: promgate died during the 2.0 rows of $shape; see $RUN/promgate"
                    BENCH_KEEP=1
                    emit kind=skip gw="promgate 2.0 rows" shape="$shape" reason="process died during the run"
                    break
                fi
            fi
        fi
    done
    if [ "$BENCH_ROUTE" = 1 ] && kill -0 "$GW_PID" 2>/dev/null; then
        if [ "$gw" = promgate ]; then
            if [ -n "$ROUTE_ERR" ]; then
                emit kind=skip gw="promgate routing rows" shape=main reason="$ROUTE_ERR"
            elif ! measure_route main "$BENCH_ROUTE_ROUNDS" "$BENCH_ROUTE_SECONDS"; then
                log "ERROR: promgate died during the routing rows; see $RUN/promgate"
                BENCH_KEEP=1
                emit kind=skip gw="promgate routing rows" shape=main reason="process died during the run"
            fi
        elif [ "$gw" = vmagent ]; then
            stop_gateway
            measure_route_vmagent "$gw" main "$BENCH_ROUTE_SECONDS"
        fi
    fi
    stop_gateway
done

# ------------------------------------------------------------------- report

cp "$JSONL" "$RESULTS/latest.jsonl"
NGINX_VERSION=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')
vm_args=()
for v in "${VM_INFO[@]}"; do vm_args+=(--vmagent "$v"); done
log "vmagents that ran: ${VM_INFO[*]:-none}"
"$PYTHON" "$HERE/report.py" "$JSONL" \
    --out "$RESULTS/latest.md" \
    --meta-dir "$OUT" \
    --nginx "$NGINX_VERSION" "${vm_args[@]}" \
    --seconds "$BENCH_SECONDS" --seconds-other "$BENCH_SECONDS_OTHER" \
    --conns "$BENCH_CONNS" --pin "$BENCH_PIN" \
    --module "${MODULE_INFO:-$MODULE (not loaded)}" \
    --hooks "exemplars=$BENCH_EXEMPLARS series_index=$BENCH_SERIES_INDEX" \
    --route "$([ "$BENCH_ROUTE" = 1 ] && echo "main, ${BENCH_ROUTE_ROUNDS} rounds × ${BENCH_ROUTE_SECONDS}s (vmagent: 1 window each)")" \
    --rw2 "shapes: ${BENCH_RW2_SHAPES:-none}; main ${BENCH_RW2_ROUNDS} rounds × ${BENCH_RW2_SECONDS}s, others ${BENCH_RW2_ROUNDS_OTHER} × ${BENCH_RW2_SECONDS_OTHER}s, +${BENCH_RW2_WARMUP}s warm-up each" \
    --elapsed "$(( $(date +%s) - T_START ))" \
    --src "$SRC_TREE ($(cat "$SRC_TREE/.commit" 2>/dev/null || git -C "$SRC_TREE" rev-parse --short HEAD 2>/dev/null || echo '?'))" \
    --loadavg "start $LOADAVG_START, end $(cut -d' ' -f1-3 /proc/loadavg); all CPUs busy $BUSY_BEFORE in the second before the run"

# ------------------------------------------------- exemplar queries (issue 3)
# bench/exemplar_bench.py: promgate vs Prometheus 2.42 (Debian 12) and the
# current Prometheus (t/servers.sh: 3.5.x) over a full ring, the same data
# in all three; report.py --section exemplar renders its line.

if [ "${BENCH_EXEMPLAR_QUERY:-1}" = 1 ] && [ -f "$MODULE" ]; then
    if [ ! -x "$PROMETHEUS_CURRENT_BIN" ] \
            && [ "$PROMETHEUS_CURRENT_BIN" = "$SERVERS_DIR/root/usr/bin/prometheus" ] \
            && [ -f "$REPO/t/servers.sh" ]; then
        log "prometheus: $PROMETHEUS_CURRENT_BIN missing; bash t/servers.sh"
        SERVERS_DIR=$SERVERS_DIR bash "$REPO/t/servers.sh" >"$RUN/servers.log" 2>&1 \
            || log "t/servers.sh failed: $(tail -1 "$RUN/servers.log")"
    fi
    log "exemplar queries: promgate vs Prometheus 2.42 ($PROMETHEUS_BIN) and current ($PROMETHEUS_CURRENT_BIN) over a full ring"
    if ex_json=$(NGINX_BIN=$NGINX_BIN "$PYTHON" "$HERE/exemplar_bench.py" "$MODULE" \
                     --queries "${BENCH_EXEMPLAR_QUERIES:-100}" \
                     --block "${BENCH_EXEMPLAR_BLOCK:-10}" \
                     --settle "${BENCH_EXEMPLAR_SETTLE:-20}" \
                     --prometheus "$PROMETHEUS_BIN" \
                     --prometheus-current "$PROMETHEUS_CURRENT_BIN" \
                     2>>"$OUT/exemplar_bench.err"); then
        echo "$ex_json" >> "$RESULTS/latest.jsonl"
        "$PYTHON" "$HERE/report.py" "$RESULTS/latest.jsonl" --section exemplar \
            >> "$RESULTS/latest.md"
        tail -8 "$RESULTS/latest.md"
    else
        log "exemplar_bench failed: see $OUT/exemplar_bench.err"
    fi
fi

# ------------------------------------- exemplar queries over peers (issue 18)
# bench/exemplar_peers_bench.py: a query on one of three gateways holding
# BENCH_PEERS_PER_NODE exemplars each (its zone and two peers, merged) vs
# one gateway holding them all; writes results/exemplar_peers.md.

if [ "${BENCH_EXEMPLAR_PEERS:-1}" = 1 ] && [ -f "$MODULE" ]; then
    log "exemplar queries: three gateways with peers vs one holding all"
    if peers_json=$(NGINX_BIN=$NGINX_BIN "$PYTHON" "$HERE/exemplar_peers_bench.py" \
                        "$MODULE" --per-node "${BENCH_PEERS_PER_NODE:-100000}" \
                        --queries "${BENCH_PEERS_QUERIES:-50}" \
                        --markdown "$RESULTS/exemplar_peers.md" \
                        2>>"$OUT/exemplar_peers_bench.err"); then
        echo "$peers_json" >> "$RESULTS/latest.jsonl"
        { echo; cat "$RESULTS/exemplar_peers.md"; } >> "$RESULTS/latest.md"
        cat "$RESULTS/exemplar_peers.md"
    else
        log "exemplar_peers_bench failed: see $OUT/exemplar_peers_bench.err"
    fi
fi

# ----------------------------------------------- Kafka consumer (issue 5)

if [ "${BENCH_KAFKA:-1}" = 1 ] && [ -f "$HERE/kafka_bench.sh" ]; then
    log "Kafka: consumption from the mock broker, one worker"
    if bash "$HERE/kafka_bench.sh" > "$OUT/kafka_bench.out" 2>&1; then
        {
            echo
            echo "## Kafka consumer (bench/kafka_bench.sh, mock broker, one worker)"
            echo
            grep -E '^\|' "$OUT/kafka_bench.out" || tail -20 "$OUT/kafka_bench.out"
        } >> "$RESULTS/latest.md"
        tail -12 "$OUT/kafka_bench.out"
    else
        log "kafka_bench failed: see $OUT/kafka_bench.out"
    fi
fi

# ------------------------------------------- spool: spooling and replay
# bench/spool_bench.py: one target with spool=, down (connection refused)
# then up again, on the main shape; CPU per sample spooling, replaying and
# forwarding directly, spooled bytes per sample, the replay rate.  Its own
# nginx processes (stopped by it); results/spool.md and spool.jsonl, and the
# section appended to latest.md.  BENCH_SPOOL=0 skips it.

if [ "${BENCH_SPOOL:-1}" = 1 ] && [ -f "$HERE/spool_bench.py" ] && [ -f "$MODULE" ]; then
    log "spool: spooling and replay on main (bench/spool_bench.py)"
    PROMGATE_MODULE="$MODULE" NGINX_BIN="$NGINX_BIN" BUILD="$BUILD" \
    BENCH_RESULTS="$RESULTS" BENCH_CONNS="$BENCH_CONNS" BENCH_PIN="$BENCH_PIN" \
        "$PYTHON" "$HERE/spool_bench.py" --append-md "$RESULTS/latest.md" \
        > "$OUT/spool_bench.out" 2> "$OUT/spool_bench.err" \
        || log "spool_bench: problems or failure: see $OUT/spool_bench.err and $RESULTS/spool.md"
    grep -E '^\|' "$OUT/spool_bench.out"
fi

# ------------------------------------------------------------------- plot
# bench/results/latest.png from latest.jsonl (report.py --plot, gnuplot):
# samples per CPU-second per gateway and shape, added latency at 50% load;
# latest.md gets a link to it.  A plot that fails is logged, nothing more.

if [ "$BENCH_PLOT" = 1 ]; then
    rm -f "$RESULTS/latest.png"
    if ! command -v gnuplot >/dev/null; then
        log "SKIP plot: no gnuplot (bash t/deps.sh bench installs gnuplot-nox)"
    elif "$PYTHON" "$HERE/report.py" "$RESULTS/latest.jsonl" "${vm_args[@]}" \
            --plot "$RESULTS/latest.png" --link-md "$RESULTS/latest.md" \
            >"$OUT/plot.log" 2>&1; then
        log "plot: $RESULTS/latest.png"
    else
        log "plot failed (the tables are not affected): $(tail -1 "$OUT/plot.log"); see $OUT/plot.log"
    fi
fi
