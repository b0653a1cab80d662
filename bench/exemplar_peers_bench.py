#!/usr/bin/python3
"""Federated exemplar queries: three gateways as one vs one gateway.

Three nginx with promgate, each with its own exemplar zone (max=N) and the
two others as exemplar peers (promgate_exemplar_peer), and one nginx whose
zone holds 3N.  The same stream goes to both sides: to the three in turn,
one request each (a round-robin balancer: every series has exemplars on
every node), and whole to the single one, so the single node holds what
the three hold together.  The queries are then timed on node 1 of the
three (its zone, and two peers asked in parallel, merged) and on the
single node, on keep-alive connections, one worker per nginx; the first
answers of both must be the same bytes.

    bench/exemplar_peers_bench.py MODULE.so [--per-node 100000]
        [--series 10000] [--queries 50] [--nginx nginx] [--markdown FILE]

Prints one JSON line (run.sh appends it to bench/results/latest.jsonl);
with --markdown, also writes a table there.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import requests
import snappy

from exemplar_bench import free_port, pct, wait_http, ROOT

CONF = """
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
    promgate_exemplar_zone exemplars:%(zone)dm max=%(max)d;
    server {
        listen 127.0.0.1:%(port)d;
        client_max_body_size 64m;
        location = /api/v1/write {
            promgate_remote_write;
            promgate_forward /_rw/null;
            promgate_exemplars exemplars;
            client_body_buffer_size 64m;
        }
        location /_rw/null { internal; return 204; }
        location = /api/v1/query_exemplars {
            promgate_exemplar_query exemplars max_series=1000000
                                    max_exemplars=1000000;
%(peers)s        }
%(peer_locations)s
        location = /metrics { promgate_status; }
    }
}
"""

PEER_LOCATION = """        location /_peer/%(name)s {
            internal;
            proxy_pass http://127.0.0.1:%(port)d/api/v1/query_exemplars;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 60s;
            subrequest_output_buffer_size 128m;
        }
"""


def start_nginx(nginx, module, work, name, port, max_exemplars, peers=()):
    d = os.path.join(work, name)
    os.makedirs(d)
    conf = CONF % {
        "module": module, "w": d, "port": port, "max": max_exemplars,
        "zone": max(64, max_exemplars * 400 // (1024 * 1024)),
        "peers": "".join("            promgate_exemplar_peer /_peer/%s;\n"
                         % p for p, _ in peers),
        "peer_locations": "".join(PEER_LOCATION % {"name": p, "port": pp}
                                  for p, pp in peers)}
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf)
    p = subprocess.Popen([nginx, "-p", d + "/", "-c", d + "/nginx.conf",
                          "-e", d + "/error.log"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        wait_http("http://127.0.0.1:%d/metrics" % port, p)
    except RuntimeError:
        with open(os.path.join(d, "error.log")) as f:
            sys.stderr.write(f.read()[-3000:])
        raise
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("module")
    ap.add_argument("--per-node", type=int, default=100000)
    ap.add_argument("--series", type=int, default=10000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--nginx", default=os.environ.get("NGINX_BIN", "nginx"))
    ap.add_argument("--markdown")
    a = ap.parse_args()

    total = 3 * a.per_node
    work = tempfile.mkdtemp(prefix="promgate-peerbench-")
    procs = []
    try:
        subprocess.check_call(["protoc", "--python_out=" + work,
                               "-I" + os.path.join(ROOT, "proto"),
                               "types.proto", "remote.proto"])
        sys.path.insert(0, work)
        import remote_pb2  # noqa: E402
        module = os.path.join(work, "ngx_http_promgate_module.so")
        shutil.copy(os.path.abspath(a.module), module)

        ports = [free_port() for _ in range(3)]
        names = ["gw%d" % i for i in range(3)]
        for i in range(3):
            peers = [(names[j], ports[j]) for j in range(3) if j != i]
            procs.append(start_nginx(a.nginx, module, work, names[i],
                                     ports[i], a.per_node, peers))
        sport = free_port()
        procs.append(start_nginx(a.nginx, module, work, "single", sport,
                                 total))
        nodes = ["http://127.0.0.1:%d" % p for p in ports]
        single = "http://127.0.0.1:%d" % sport

        # the stream: k rounds over every series, one exemplar a series a
        # round; round k's requests go to node k % 3 and to the single one
        now = int(time.time() * 1000) - 3600 * 1000
        rounds = total // a.series
        sess = [requests.Session() for _ in range(4)]
        hdrs = {"Content-Encoding": "snappy",
                "Content-Type": "application/x-protobuf",
                "X-Prometheus-Remote-Write-Version": "0.1.0"}
        batch = 1000
        for k in range(rounds):
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
                for url, se in ((nodes[k % 3], sess[k % 3]),
                                (single, sess[3])):
                    r = se.post(url + "/api/v1/write", data=body,
                                headers=hdrs)
                    if r.status_code != 204:
                        raise RuntimeError("write %s: %d %s" % (
                            url, r.status_code, r.text[:200]))

        def stored(url):
            for line in requests.get(url + "/metrics").text.splitlines():
                if line.startswith("promgate_exemplar_zone_exemplars{"):
                    return int(float(line.split()[-1]))
            return None

        held = [stored(u) for u in nodes]
        held_single = stored(single)

        queries = [
            ("one series", 'http_request_duration_seconds_bucket'
                           '{path="/p/42"}', a.queries * 4),
            ("1/170 of the series",
             'http_request_duration_seconds_bucket{job="api-3",le="5"}',
             a.queries * 2),
            ("1/10 of the series (regex)",
             'histogram_quantile(0.99, sum by (le) (rate('
             'http_request_duration_seconds_bucket{job=~"api-1"}[5m])))',
             a.queries),
            ("everything", 'http_request_duration_seconds_bucket',
             max(5, a.queries // 10)),
        ]
        start = (now - 60000) / 1000.0
        end = (now + rounds * 1000 + 60000) / 1000.0
        qs = requests.Session()
        results = []
        for label, q, n in queries:
            lat = {"federated": [], "single": []}
            first = {}
            for i in range(n):
                for who, url in (("federated", nodes[0]), ("single", single)):
                    t0 = time.perf_counter()
                    r = qs.get(url + "/api/v1/query_exemplars",
                               params={"query": q, "start": start,
                                       "end": end})
                    lat[who].append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        raise RuntimeError("%s %r: %d %s" % (
                            who, q, r.status_code, r.text[:300]))
                    if i == 0:
                        first[who] = r.text
            doc = json.loads(first["single"])
            results.append({
                "query": label, "promql": q, "repeats": n,
                "answer_exemplars": sum(len(x["exemplars"])
                                        for x in doc["data"]),
                "answer_bytes": len(first["single"]),
                "identical": first["federated"] == first["single"],
                "federated_p50_ms": round(pct(lat["federated"], .5) * 1e3, 2),
                "federated_p99_ms": round(pct(lat["federated"], .99) * 1e3,
                                          2),
                "single_p50_ms": round(pct(lat["single"], .5) * 1e3, 2),
                "single_p99_ms": round(pct(lat["single"], .99) * 1e3, 2)})

        out = {"kind": "exemplar_peers", "per_node": a.per_node,
               "nodes_hold": held, "single_holds": held_single,
               "series": a.series, "cpus": os.cpu_count(),
               "loadavg": open("/proc/loadavg").read().split()[:3],
               "queries": results}
        print(json.dumps(out))

        if a.markdown:
            with open(a.markdown, "w") as f:
                f.write(markdown(out))
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


def markdown(out):
    lines = [
        "## Exemplar queries over three gateways vs one "
        "(bench/exemplar_peers_bench.py)",
        "",
        "Three gateways holding %s exemplars (%s each; every series on "
        "every node), queried on one of them (its zone and two peers, in "
        "parallel, merged) vs one gateway holding all %s; one worker per "
        "nginx, loopback, %d CPUs (load %s). The answers are the same bytes "
        "(`identical`)." % (
            sum(out["nodes_hold"]), "/".join(str(h) for h in
                                             out["nodes_hold"]),
            out["single_holds"], out["cpus"], " ".join(out["loadavg"])),
        "",
        "| query | exemplars in the answer | bytes | identical | three "
        "nodes p50 / p99 ms | one node p50 / p99 ms | repeats |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in out["queries"]:
        lines.append("| %s | %d | %d | %s | %.2f / %.2f | %.2f / %.2f | %d |"
                     % (r["query"], r["answer_exemplars"], r["answer_bytes"],
                        "yes" if r["identical"] else "**no**",
                        r["federated_p50_ms"], r["federated_p99_ms"],
                        r["single_p50_ms"], r["single_p99_ms"],
                        r["repeats"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
