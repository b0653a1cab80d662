#!/usr/bin/python3
"""Kafka consumer throughput: messages and samples per second that one
nginx worker consumes from the mock broker (t/kafka_mock.c) and forwards,
through the promgate_remote_write location and its fan-out, to two targets
answering 204 (nginx `return 204` behind keep-alive upstreams).

Run by bench/kafka_bench.sh; see there for the knobs.  Per shape: the topic
is filled first, then nginx starts; the clock runs from the group's
assignment to the moment every partition's committed offset reaches its
end (auto.commit.interval.ms 200, so up to ~0.2 s of it is commit delay).
CPU is the nginx workers' utime+stime over that window.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "t", "integration"))

import rw                                   # noqa: E402
from fakeup import free_port                # noqa: E402
from kafka_broker import MockKafka, MockKafkaError  # noqa: E402
from procs import Nginx, wait_for           # noqa: E402


def env(name, default):
    return os.environ.get(name, default)


def message(samples, k):
    """one WriteRequest of `samples` series of one sample each, ~10 labels
    per series, snappy-compressed as remote write sends it"""
    t = rw.now_ms()
    series = [rw.series("kbench_metric_%d" % (i % 20),
                        {"instance": "10.0.%d.%d:9100" % (k % 250, i % 250),
                         "job": "node", "pod": "pod-%d-%d" % (k, i),
                         "namespace": "bench", "cluster": "c1",
                         "container": "app", "zone": "z%d" % (i % 3),
                         "le": str(i % 12)},
                        [(float(i), t)])
              for i in range(samples)]
    return rw.compress(rw.write_request(series))


def cpu_of(pids):
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def run_shape(workdir, module, nginx_bin, samples, messages, workers,
              partitions, batch, fmt, pin):
    kafka = MockKafka(os.path.join(workdir, "kafka"))
    n = None
    try:
        if pin:
            subprocess.run(["taskset", "-pc", "0", str(kafka.p.pid)],
                           capture_output=True)
        topic = "bench"
        kafka.create(topic, partitions)
        distinct = [message(samples, k) for k in range(16)]
        # the mock keeps about 5 MB per partition: stay under it
        size = max(len(d) for d in distinct)
        per = min(messages // partitions, int(4.5e6 / (size + 70)))
        for p in range(partitions):
            for k in range(16):
                kafka.repeat(topic, per // 16 + (1 if k < per % 16 else 0),
                             distinct[k], partition=p)
        produced = sum(hi - lo for lo, hi in kafka.hwm(topic).values())
        assert produced == per * partitions, (produced, per * partitions)
        body = sum(len(d) for d in distinct) // 16

        sink = free_port()
        port = free_port()
        sock = os.path.join(workdir, "k.sock")
        http = """
    upstream sink {{ server 127.0.0.1:{sink}; keepalive 32; }}
    promgate_kafka_brokers {boot};
    promgate_kafka_property auto.commit.interval.ms 200;
{props}
    promgate_kafka_consumer topic={topic} group=bench format={fmt} batch={batch}{mif} target=/api/v1/write socket={sock};
    server {{
        listen 127.0.0.1:{sink};
        access_log off;
        location / {{ return 204; }}
    }}
    log_format kbench '$msec $promgate_samples $status';
    server {{
        listen 127.0.0.1:{port};
        access_log off;
        location = /api/v1/write {{
            access_log {wlog} kbench;
            promgate_remote_write;
            promgate_forward /_rw/a;
            promgate_forward /_rw/b;
            client_max_body_size 32m;
            client_body_buffer_size 32m;
        }}
        location /_rw/ {{
            internal;
            proxy_pass http://sink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            subrequest_output_buffer_size 64k;
        }}
    }}
""".format(sink=sink, boot=kafka.bootstrap, topic=topic, fmt=fmt,
           props="".join("    promgate_kafka_property %s;\n" % p.strip()
                         for p in env("KBENCH_PROPERTIES", "").split(";")
                         if p.strip()),
           batch=batch, wlog=os.path.join(workdir, "writes.log"), mif=(" max_in_flight=" + env("KBENCH_MAX_IN_FLIGHT", "")
                if env("KBENCH_MAX_IN_FLIGHT", "") else ""), sock=sock, port=port)
        n = Nginx(nginx_bin, module, os.path.join(workdir, "nginx"), http=http,
                  workers=workers, log_level=env("KBENCH_LOG", "notice"))
        # the assignment lines are info; keep notice for speed and watch
        # the committed offsets instead
        n.start()
        if pin:
            for pid in n.worker_pids():
                subprocess.run(["taskset", "-pc", "1", str(pid)],
                               capture_output=True)

        # every write the target location answered, with its time and
        # samples: the rate is taken between 10% and 90% of the samples
        # (steady state: the group's join and the tail are outside)
        def committed():
            try:
                offsets = kafka.committed("bench", topic)
            except MockKafkaError:
                return 0            # the group is rebalancing
            return sum(max(o, 0) for o in offsets.values())

        cpu0 = cpu_of(n.worker_pids())
        if not wait_for(lambda: committed() >= produced, 600, 0.1):
            raise RuntimeError("not everything was consumed: %d of %d"
                               % (committed(), produced))
        cpu1 = cpu_of(n.worker_pids())
        if os.environ.get("KBENCH_DEBUG"):
            print("committed", kafka.committed("bench", topic),
                  "hwm", kafka.hwm(topic), file=sys.stderr)

        writes = []
        with open(os.path.join(workdir, "writes.log")) as f:
            for line in f:
                t, samples_, status = line.split()
                if status == "204":
                    writes.append((float(t), int(samples_)))
        writes.sort()
        total = sum(s_ for _, s_ in writes)
        assert total >= produced * samples, (total, produced * samples)
        acc, t10, t90, s10, s90 = 0, None, None, 0, 0
        for t, s_ in writes:
            acc += s_
            if t10 is None and acc >= total * 0.1:
                t10, s10 = t, acc
            if t90 is None and acc >= total * 0.9:
                t90, s90 = t, acc
        secs = max(t90 - t10, 1e-3)
        done = (s90 - s10) / samples
        cpu_per_sample = (cpu1 - cpu0) / total
        return {
            "samples_per_message": samples, "messages": produced,
            "body_bytes": body, "workers": workers, "batch": batch,
            "partitions": partitions, "format": fmt, "window_s": round(secs, 3),
            "messages_per_s": round(done / secs),
            "samples_per_s": round(done * samples / secs),
            "messages_per_s_per_worker": round(done / secs / workers),
            "samples_per_s_per_worker": round(done * samples / secs / workers),
            "requests": len(writes),
            "cpu_s_per_million_samples": round(cpu_per_sample * 1e6, 2),
            # what one fully busy worker would do, from its CPU time
            "cpu_bound_messages_per_s": round(1 / (cpu_per_sample * samples)),
        }
    finally:
        if n:
            n.stop()
        kafka.stop()


def main():
    module = env("PROMGATE_MODULE",
                 os.path.join(REPO, "build", "ngx_http_promgate_module.so"))
    nginx_bin = env("NGINX_BIN", "/usr/sbin/nginx")
    shapes = [int(s) for s in env("KBENCH_SAMPLES", "1 10 100").split()]
    messages = int(env("KBENCH_MESSAGES", "1000000"))
    workers = int(env("KBENCH_WORKERS", "1"))
    partitions = int(env("KBENCH_PARTITIONS", "16"))
    batch = int(env("KBENCH_BATCH", "100"))
    fmt = env("KBENCH_FORMAT", "prompb-snappy")
    pin = env("BENCH_PIN", "1") == "1" and shutil.which("taskset") \
        and os.cpu_count() >= 2

    pb = tempfile.mkdtemp(prefix="kbench-pb")
    rw.load_protos(pb)
    rows = []
    for samples in shapes:
        wd = tempfile.mkdtemp(prefix="kbench")
        try:
            count = messages
            row = run_shape(wd, module, nginx_bin, samples, count, workers,
                            partitions, batch, fmt, pin)
        finally:
            if env("BENCH_KEEP", "0") != "1":
                shutil.rmtree(wd, ignore_errors=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    shutil.rmtree(pb, ignore_errors=True)

    print()
    print("| samples/msg | msg bytes | messages | batch | partitions "
          "| msgs/s (wall) | samples/s (wall) | CPU-s per 1M samples "
          "| msgs/s per busy worker (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %d | %d | %d | %d | %d | %d | %d | %.2f | %d |" % (
            r["samples_per_message"], r["body_bytes"], r["messages"],
            r["batch"], r["partitions"], r["messages_per_s_per_worker"],
            r["samples_per_s_per_worker"], r["cpu_s_per_million_samples"],
            r["cpu_bound_messages_per_s"]))

if __name__ == "__main__":
    main()
