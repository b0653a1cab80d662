#!/usr/bin/python3
"""Exemplar queries, promgate vs Prometheus 2.42 and the current
Prometheus (3.5.x), in one run.

All hold the same 100000 exemplars (a full promgate ring): the stream is
written through promgate, which forwards it to two real Prometheus servers
with exemplar storage (Debian 12's 2.42, /usr/bin/prometheus, and the one
t/servers.sh unpacks into build/servers/root/usr/bin/prometheus), so all
three see identical data.  Then the same queries are timed against the
three, in turn, on keep-alive connections; each answer is compared byte
for byte with each Prometheus' (the first of each query).  Also reports the
zone bytes per stored exemplar and the insert rate through the gateway.

The timing client is bench/httpget.c (built here with cc): C, closed loop,
one keep-alive HTTP/1.1 connection per server opened before the first
query, the same request bytes to each (no Accept-Encoding: Prometheus
answers uncompressed, as promgate does, and the bodies compare as sent),
--warmup untimed rounds, then --queries per server, --block (10) in a row
to one server a turn with --settle (20) ms of pause after each turn: what
a server still does after its answers (the Go runtime's garbage
collection) runs in the pause and during its own turn, not on the other
CPU while the next server is timed (query by query, --block 1 --settle 0,
promgate's p99 took Prometheus' leftovers).  Python's
requests (--client requests, the timing before) costs ~0.7 ms a query
itself and asks for gzip, which Prometheus then spends time on.

    bench/exemplar_bench.py MODULE.so [--exemplars 100000] [--queries 200]
        [--prometheus /usr/bin/prometheus]
        [--prometheus-current build/servers/root/usr/bin/prometheus]
        [--nginx nginx] [--client c|requests] [--warmup 5] [--block 10]
        [--settle 20] [--hold SECONDS]

--hold keeps the filled servers up that long before the queries (their
addresses on stderr), for a profiler or a client by hand.

--prometheus-current "" leaves the current one out (its figures are then
null).  Prints one JSON line; bench/run.sh appends it to the results and
bench/report.py --section exemplar renders it.  The keys of 2.42 are the
ones the script always had (identical, prometheus_p50_ms, ...); the
current one's are identical_current, prometheus_current_p50_ms, ...
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

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


def prometheus_version(binary):
    """"3.5.3+ds1" from "prometheus, version 3.5.3+ds1 (branch: ..." or None
    (as t/integration/servers.py reads it)"""
    try:
        r = subprocess.run([binary, "--version"], capture_output=True,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"^prometheus, version (\S+)",
                  (r.stdout + r.stderr).decode("utf-8", "replace"), re.M)
    return m.group(1) if m else None


def start_prometheus(binary, work, name, max_exemplars):
    """a Prometheus with exemplar storage and the remote-write receiver,
    the flags t/integration/procs.py gives both lines (2.42 and 3.5 still
    have exemplar storage behind --enable-feature); the exemplar storage is
    sized in the config file.  Returns (Popen, port)."""
    port = free_port()
    d = os.path.join(work, name)
    os.makedirs(d)
    with open(os.path.join(d, "prom.yml"), "w") as f:
        f.write("global: {scrape_interval: 1h}\n"
                "storage: {exemplars: {max_exemplars: %d}}\n"
                % max_exemplars)
    log = open(os.path.join(d, "prometheus.log"), "w")
    p = subprocess.Popen(
        [binary, "--config.file=" + d + "/prom.yml",
         "--storage.tsdb.path=" + d + "/data",
         "--web.listen-address=127.0.0.1:%d" % port,
         "--web.enable-remote-write-receiver",
         "--enable-feature=exemplar-storage"],
        stdout=log, stderr=log, start_new_session=True)
    log.close()
    return p, port


def current_prometheus_default():
    """build/servers/root/usr/bin/prometheus (t/servers.sh), or under
    PROMGATE_SERVERS_ROOT as t/integration/servers.py has it"""
    root = os.environ.get("PROMGATE_SERVERS_ROOT") or os.path.join(
        ROOT, "build", "servers", "root")
    return os.path.join(root, "usr", "bin", "prometheus")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("module")
    ap.add_argument("--exemplars", type=int, default=100000)
    ap.add_argument("--series", type=int, default=5000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--prometheus", default="/usr/bin/prometheus",
                    help="Prometheus 2.42 (Debian 12)")
    ap.add_argument("--prometheus-current",
                    default=current_prometheus_default(),
                    help="the current Prometheus (t/servers.sh); '' leaves "
                         "it out")
    ap.add_argument("--nginx", default=os.environ.get("NGINX_BIN", "nginx"))
    ap.add_argument("--client", choices=("c", "requests"), default="c",
                    help="c: time with bench/httpget.c (default); requests: "
                         "with Python requests, as before (its ~0.7 ms per "
                         "request hides the servers' difference)")
    ap.add_argument("--warmup", type=int, default=5,
                    help="untimed rounds before the timed ones (C client)")
    ap.add_argument("--block", type=int, default=10,
                    help="C client: queries in a row to one server a turn "
                         "(1: each server in turn, query by query)")
    ap.add_argument("--settle", type=int, default=20,
                    help="C client: ms of pause after each turn")
    ap.add_argument("--hold", type=int, default=0,
                    help="once filled, keep the servers up this many "
                         "seconds (printed on stderr) before the queries")
    a = ap.parse_args()

    # a TERM (as to a --hold run) stops the servers too (finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    work = tempfile.mkdtemp(prefix="promgate-exbench-")
    procs = []
    try:
        subprocess.check_call(["protoc", "--python_out=" + work,
                               "-I" + os.path.join(ROOT, "proto"),
                               "types.proto", "remote.proto"])
        sys.path.insert(0, work)
        import remote_pb2  # noqa: E402
        # a private copy, as run.sh loads it: a rebuild overwrites
        # build/*.so in place, which crashes workers that have it mapped
        module = os.path.join(work, "ngx_http_promgate_module.so")
        shutil.copy(os.path.abspath(a.module), module)

        # "prometheus": Debian 12's 2.42 (the keys the JSON always had);
        # "prometheus_current": the current one, when there is one
        proms = [("prometheus", a.prometheus)]
        current_skipped = None
        if not a.prometheus_current:
            current_skipped = "left out (--prometheus-current '')"
        elif not os.access(a.prometheus_current, os.X_OK):
            current_skipped = "%s not found (make servers)" % \
                a.prometheus_current
        else:
            proms.append(("prometheus_current", a.prometheus_current))
        purl, pver = {}, {}
        for name, binary in proms:
            pver[name] = prometheus_version(binary)
            p, port = start_prometheus(binary, work, name, a.exemplars)
            procs.append(p)
            try:
                wait_http("http://127.0.0.1:%d/-/ready" % port, p)
            except RuntimeError:
                with open(os.path.join(work, name, "prometheus.log")) as f:
                    sys.stderr.write(f.read()[-3000:])
                raise
            purl[name] = "http://127.0.0.1:%d" % port
        gport = free_port()
        upstreams = "".join(
            "    upstream %s { server %s; keepalive 8; }\n"
            % (name, purl[name][len("http://"):]) for name, _ in proms)
        forwards = "".join(
            "            promgate_forward /_rw/%s;\n" % name
            for name, _ in proms)
        rw_locations = "".join("""
        location /_rw/%s {
            internal;
            proxy_pass http://%s/api/v1/write;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 5s;
        }""" % (name, name) for name, _ in proms)

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
%(upstreams)s    server {
        listen 127.0.0.1:%(gport)d;
        client_max_body_size 64m;
        location = /api/v1/write {
            promgate_remote_write;
%(forwards)s            promgate_exemplars exemplars;
            client_max_body_size 64m;
            client_body_buffer_size 64m;
        }%(rw_locations)s
        location = /api/v1/query_exemplars {
            promgate_exemplar_query exemplars;
        }
        location = /metrics { promgate_status; }
    }
}
""" % {"module": module, "w": work, "max": a.exemplars,
       "upstreams": upstreams, "forwards": forwards,
       "rw_locations": rw_locations, "gport": gport}
        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(conf)
        ng = subprocess.Popen([a.nginx, "-p", work + "/", "-c",
                               work + "/nginx.conf", "-e",
                               work + "/error.log"],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL,
                              start_new_session=True)
        procs.append(ng)
        gw = "http://127.0.0.1:%d" % gport
        try:
            wait_http(gw + "/metrics", ng)
        except RuntimeError:
            with open(os.path.join(work, "error.log")) as f:
                sys.stderr.write(f.read()[-3000:])
            raise

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
        if a.hold:
            # servers up and filled, for a profiler or a client by hand
            sys.stderr.write("holding %d s: promgate %s (nginx pid %d), %s; "
                             "start=%s end=%s\n"
                             % (a.hold, gw, ng.pid, ", ".join(
                                 "%s %s" % (n, purl[n]) for n, _ in proms),
                                start, end))
            sys.stderr.flush()
            time.sleep(a.hold)
        results = {}
        who = [("promgate", gw)] + [(name, purl[name]) for name, _ in proms]
        httpget = None
        if a.client == "c":
            httpget = os.path.join(work, "httpget")
            subprocess.check_call(["cc", "-O2", "-Wall", "-o", httpget,
                                   os.path.join(HERE, "httpget.c")])
        sessions = {name: (sess if name == "promgate" else requests.Session())
                    for name, _ in who}
        for q in queries:
            lat = {name: [] for name, _ in who}
            first = {}
            if httpget:
                # the C client: one keep-alive connection per server, the
                # same request to each in turn, closed loop (bench/httpget.c)
                path = "/api/v1/query_exemplars?" + urllib.parse.urlencode(
                    {"query": q, "start": start, "end": end})
                out = subprocess.check_output(
                    [httpget, "-P", path, "-n", str(a.queries),
                     "-w", str(a.warmup), "-b", str(a.block),
                     "-s", str(a.settle), "-o", work]
                    + ["%s=%s" % (name, url[len("http://"):])
                       for name, url in who])
                got = json.loads(out)
                for name, _ in who:
                    with open(os.path.join(work, name + ".body"), "rb") as f:
                        first[name] = f.read().decode("utf-8", "replace")
            else:
                for i in range(a.queries):
                    for name, url in who:
                        t0 = time.perf_counter()
                        r = sessions[name].get(
                            url + "/api/v1/query_exemplars",
                            params={"query": q, "start": start, "end": end})
                        lat[name].append(time.perf_counter() - t0)
                        if i == 0:
                            first[name] = r.text
            res = {}
            for name, _ in who:
                if httpget:
                    res[name + "_p50_ms"] = round(got[name]["p50_us"] / 1e3,
                                                  3)
                    res[name + "_p99_ms"] = round(got[name]["p99_us"] / 1e3,
                                                  3)
                else:
                    res[name + "_p50_ms"] = round(pct(lat[name], 0.5) * 1e3,
                                                  3)
                    res[name + "_p99_ms"] = round(pct(lat[name], 0.99) * 1e3,
                                                  3)
            # byte for byte, the first answer of each query; its size, so
            # that "identical" is seen not to be two empty answers
            res["identical"] = first["promgate"] == first["prometheus"]
            res["answer_bytes"] = len(first["promgate"])
            try:
                res["answer_exemplars"] = sum(
                    len(x.get("exemplars") or [])
                    for x in json.loads(first["promgate"])["data"])
            except (ValueError, KeyError, TypeError):
                res["answer_exemplars"] = None
            if "prometheus_current" in first:
                res["identical_current"] = (first["promgate"]
                                            == first["prometheus_current"])
            else:
                res["identical_current"] = None
                res["prometheus_current_p50_ms"] = None
                res["prometheus_current_p99_ms"] = None
            results[q] = res

        print(json.dumps({
            "kind": "exemplar_query",
            "exemplars_sent": sent,
            "exemplars_stored": stored,
            "zone_bytes": zone_bytes,
            "ring_min_bytes_per_exemplar_note":
                "see pg_exring_min_size(): 149.5 B/exemplar at max=100000",
            "insert_exemplars_per_s_through_gateway":
                round(sent / t_ins) if t_ins else None,
            "insert_forwarded_to": [name for name, _ in proms],
            "repeats": a.queries,
            "client": ("bench/httpget.c (C, one keep-alive connection per "
                       "server, no compression), %d untimed rounds first%s"
                       % (a.warmup,
                          "" if a.block == 1 and not a.settle else
                          ", %d queries a turn, %d ms pause after each"
                          % (a.block, a.settle))
                       if httpget else "python requests (gzip accepted)"),
            "prometheus_binary": a.prometheus,
            "prometheus_version": pver["prometheus"],
            "prometheus_current_binary": a.prometheus_current or None,
            "prometheus_current_version": pver.get("prometheus_current"),
            "prometheus_current_skipped": current_skipped,
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
