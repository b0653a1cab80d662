#!/usr/bin/python3
"""Exemplar queries, promgate vs Prometheus 2.42, in one run.

Both hold the same 100000 exemplars (a full promgate ring): the stream is
written through promgate, which forwards it to a real Prometheus with
exemplar storage, so both see identical data.  Then the same queries are
timed against both, alternating, on keep-alive connections.  Also reports
the zone bytes per stored exemplar and the insert rate through the gateway.

    bench/exemplar_bench.py MODULE.so [--exemplars 100000] [--queries 200]

Prints one JSON line; bench/run.sh appends it to the results.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import requests
import snappy

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, proc, timeout=60):
    t = time.time() + timeout
    while time.time() < t:
        if proc.poll() is not None:
            raise RuntimeError("%s exited" % proc.args[0])
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError("%s did not come up" % url)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("module")
    ap.add_argument("--exemplars", type=int, default=100000)
    ap.add_argument("--series", type=int, default=5000)
    ap.add_argument("--queries", type=int, default=200)
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="promgate-exbench-")
    procs = []
    try:
        subprocess.check_call(["protoc", "--python_out=" + work,
                               "-I" + os.path.join(ROOT, "proto"),
                               "types.proto", "remote.proto"])
        sys.path.insert(0, work)
        import remote_pb2  # noqa: E402

        pport, gport = free_port(), free_port()
        # Prometheus 2.42 sizes its exemplar storage from the config file
        with open(os.path.join(work, "prom.yml"), "w") as f:
            f.write("global: {scrape_interval: 1h}\n"
                    "storage: {exemplars: {max_exemplars: %d}}\n"
                    % a.exemplars)
        prom = subprocess.Popen(
            ["prometheus", "--config.file=" + work + "/prom.yml",
             "--storage.tsdb.path=" + work + "/prom",
             "--web.listen-address=127.0.0.1:%d" % pport,
             "--web.enable-remote-write-receiver",
             "--enable-feature=exemplar-storage"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        procs.append(prom)
        wait_http("http://127.0.0.1:%d/-/ready" % pport, prom)

        conf = """
load_module %(module)s;
daemon off;
worker_processes 1;
pid %(w)s/nginx.pid;
error_log %(w)s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %(w)s/body;
    proxy_temp_path %(w)s/proxy;
    fastcgi_temp_path %(w)s/fcgi; uwsgi_temp_path %(w)s/uwsgi;
    scgi_temp_path %(w)s/scgi;
    promgate_exemplar_zone exemplars:64m max=%(max)d;
    upstream prom { server 127.0.0.1:%(pport)d; keepalive 8; }
    server {
        listen 127.0.0.1:%(gport)d;
        location = /api/v1/write {
            promgate_remote_write;
            promgate_forward /_rw/prom;
            promgate_exemplars exemplars;
            client_max_body_size 64m;
            client_body_buffer_size 64m;
        }
        location /_rw/prom {
            internal;
            proxy_pass http://prom/api/v1/write;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 5s;
        }
        location = /api/v1/query_exemplars {
            promgate_exemplar_query exemplars;
        }
        location = /metrics { promgate_status; }
    }
}
""" % {"module": a.module, "w": work, "max": a.exemplars, "pport": pport,
       "gport": gport}
        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(conf)
        ng = subprocess.Popen(["nginx", "-p", work + "/", "-c",
                               work + "/nginx.conf", "-e",
                               work + "/error.log"],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL,
                              start_new_session=True)
        procs.append(ng)
        gw = "http://127.0.0.1:%d" % gport
        wait_http(gw + "/metrics", ng)

        # the stream: series of a histogram-like family, 32-hex trace ids
        now = int(time.time() * 1000) - 3600 * 1000
        per = a.exemplars // a.series
        sess = requests.Session()
        t_ins = 0.0
        sent = 0
        batch = 500
        for k in range(per):
            for s0 in range(0, a.series, batch):
                wr = remote_pb2.WriteRequest()
                for s in range(s0, min(a.series, s0 + batch)):
                    ts = wr.timeseries.add()
                    labels = {"__name__": "http_request_duration_seconds_"
                              "bucket", "job": "api-%d" % (s % 10),
                              "instance": "host-%03d:9100" % (s % 100),
                              "le": str(s % 17), "path": "/p/%d" % s}
                    for n in sorted(labels):
                        ts.labels.add(name=n, value=labels[n])
                    t = now + k * 1000 + s % 1000
                    ts.samples.add(value=k, timestamp=t)
                    ex = ts.exemplars.add(value=k * 0.001, timestamp=t)
                    ex.labels.add(name="trace_id",
                                  value="%032x" % (s * 1000003 + k))
                    ex.labels.add(name="span_id", value="%016x" % (s + k))
                body = snappy.compress(wr.SerializeToString())
                t0 = time.perf_counter()
                r = sess.post(gw + "/api/v1/write", data=body, headers={
                    "Content-Encoding": "snappy",
                    "Content-Type": "application/x-protobuf",
                    "X-Prometheus-Remote-Write-Version": "0.1.0"})
                t_ins += time.perf_counter() - t0
                if r.status_code != 204:
                    raise RuntimeError("write: %d %s" % (r.status_code,
                                                         r.text[:200]))
                sent += min(a.series, s0 + batch) - s0

        status = requests.get(gw + "/metrics").text
        stored = 0
        label_bytes = 0
        for line in status.splitlines():
            if line.startswith("promgate_exemplar_zone_exemplars{"):
                stored = int(float(line.split()[-1]))
        zone_bytes = 64 * 1024 * 1024

        queries = [
            'http_request_duration_seconds_bucket{job="api-3",le="5"}',
            'histogram_quantile(0.99, sum by (le) (rate('
            'http_request_duration_seconds_bucket{job=~"api-[12]"}[5m])))',
            'http_request_duration_seconds_bucket{path="/p/42"}',
        ]
        start = (now - 60000) / 1000.0
        end = (now + per * 1000 + 60000) / 1000.0
        results = {}
        psess = requests.Session()
        for q in queries:
            lat = {"promgate": [], "prometheus": []}
            same = None
            for i in range(a.queries):
                for who, url, s in (("promgate", gw, sess),
                                    ("prometheus",
                                     "http://127.0.0.1:%d" % pport, psess)):
                    t0 = time.perf_counter()
                    r = s.get(url + "/api/v1/query_exemplars",
                              params={"query": q, "start": start,
                                      "end": end})
                    lat[who].append(time.perf_counter() - t0)
                    if i == 0:
                        if who == "promgate":
                            mine = r.text
                        else:
                            same = (mine == r.text)
            results[q] = {
                "identical": same,
                "promgate_p50_ms": round(pct(lat["promgate"], 0.5) * 1e3, 3),
                "promgate_p99_ms": round(pct(lat["promgate"], 0.99) * 1e3, 3),
                "prometheus_p50_ms": round(pct(lat["prometheus"], 0.5) * 1e3,
                                           3),
                "prometheus_p99_ms": round(pct(lat["prometheus"], 0.99) * 1e3,
                                           3),
            }

        print(json.dumps({
            "kind": "exemplar_query",
            "exemplars_sent": sent,
            "exemplars_stored": stored,
            "zone_bytes": zone_bytes,
            "ring_min_bytes_per_exemplar_note":
                "see pg_exring_min_size(): 141.5 B/exemplar at max=100000",
            "insert_exemplars_per_s_through_gateway":
                round(sent / t_ins) if t_ins else None,
            "queries": results}))
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, 15)
                p.wait(15)
            except Exception:
                try:
                    os.killpg(p.pid, 9)
                except Exception:
                    pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
