#!/usr/bin/env bash
# Kafka consumer throughput, standalone: messages and samples per second one
# nginx worker consumes from the mock broker (t/kafka_mock.c) and forwards
# through promgate_remote_write's fan-out to two targets answering 204.
#
#   bash bench/kafka_bench.sh
#
# Needs build/ngx_http_promgate_module.so (make module); builds
# build/kafka_mock if it is missing.  Loopback only; every process it starts
# is stopped at the end.  About a minute with the defaults.
#
# The topic is filled first, then nginx starts.  Wall-clock rates come from
# the target location's access log ($msec of each write), between 10% and
# 90% of the samples; CPU is the workers' utime+stime for the whole topic,
# and "per busy worker" is what that CPU cost allows on one core.
#
# Knobs (environment):
#   KBENCH_SAMPLES="1 10 100"   samples (series x 1 sample) per message, one
#                               run each
#   KBENCH_MESSAGES=1000000     messages per shape, at most (the mock keeps
#                               ~5 MB per partition: fewer for big ones)
#   KBENCH_MAX_IN_FLIGHT        the consumer's max_in_flight= (default: its
#                               default)
#   KBENCH_LOG=notice           nginx error_log level
#   KBENCH_PROPERTIES="a 1;b 2" extra promgate_kafka_property lines
#   KBENCH_WORKERS=1            nginx workers (figures are per worker)
#   KBENCH_PARTITIONS=16        partitions of the topic
#   KBENCH_BATCH=100            the consumer's batch=
#   KBENCH_FORMAT=prompb-snappy the consumer's format=
#   BENCH_PIN=1                 nginx workers on CPU 1, the broker on CPU 0
#   BENCH_KEEP=1                keep the run directories
#   PROMGATE_MODULE, NGINX_BIN
#
# Output: one JSON line per shape, then a table.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BUILD=${BUILD:-$REPO/build}

MODULE=${PROMGATE_MODULE:-$BUILD/ngx_http_promgate_module.so}
if [ ! -f "$MODULE" ]; then
    echo "kafka_bench: $MODULE is missing (make module)" >&2
    exit 1
fi

if [ ! -x "$BUILD/kafka_mock" ] || [ "$REPO/t/kafka_mock.c" -nt "$BUILD/kafka_mock" ]; then
    mkdir -p "$BUILD"
    cc -O2 -o "$BUILD/kafka_mock" "$REPO/t/kafka_mock.c" -lrdkafka
fi

export PROMGATE_MODULE="$MODULE" KAFKA_MOCK="$BUILD/kafka_mock"
exec /usr/bin/python3 "$HERE/kafka_bench.py"
