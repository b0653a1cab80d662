#!/usr/bin/python3
"""promgate_spool on the main shape: what spooling and replaying cost.

    python3 bench/spool_bench.py        (bench/run.sh runs it at the end)

One gateway (nginx + the module, one worker, on CPU 1) with one forward
target, `promgate_forward /_rw/t spool=s`, `promgate_retries 0`, no
exemplar capture; the target is a null sink (nginx `return 204`, the sink
of bench/run.sh, on CPU 0 with the sender).  Per run, three phases on the
same gateway:

  direct   the sink up: max rate for SPOOL_BENCH_DIRECT_SECONDS (after a
           1 s warm-up); the spool must stay empty.  The reference: the
           same load, the same config, forwarded.  Then
           SPOOL_BENCH_DIRECT1_SECONDS with one connection: one request in
           flight, as the replayer sends (its pace, for comparison).
  spool    the sink stopped (its port refuses connections): the first
           writes fail and go to the spool, every later one goes straight
           to it (the spool is not empty); a warm-up of 16 requests, then
           SPOOL_BENCH_REQUESTS requests at max rate.  Every answer must be
           204.  The window ends 1.2 s after the last answer, so the
           spool's last fsync (fsync=1s by default) is in it.
  replay   the sink started again on the same port; from the moment its
           port accepts until promgate_spool_records is 0.  While the sink
           was down, the replayer's attempts failed and backed off (200 ms
           doubling to 10 s), so the first record goes out when that
           backoff ends: "wait" is that part, "drain" is from the first
           replayed record to the empty spool.  No load is sent meanwhile.

Figures: CPU-seconds of the gateway's processes (master + worker, all
threads: the spool's appends and fsyncs run in the worker's thread pool)
from /proc, per sample (µs); spooled bytes per sample
(promgate_spool_appended_bytes_total over the window / samples answered
204); replay rate in records/s and samples/s (each record is one main body:
2,000 samples), over the drain and over the whole phase; the sink's request
count checks that every spooled record arrived.  "CPU1 other" is the share
of the gateway's CPU that went to other work during the phase (as in
bench/run.sh).

Knobs (environment):
  SPOOL_BENCH_RUNS=2            runs, one after the other (fresh gateway,
                                fresh spool each)
  SPOOL_BENCH_REQUESTS=3000     requests in the spool window (~250 KB each
                                on disk: 3000 is ~0.75 GB under /tmp)
  SPOOL_BENCH_DIRECT_SECONDS=5  the direct window
  SPOOL_BENCH_DIRECT1_SECONDS=3 the direct window with one connection (0:
                                none)
  SPOOL_BENCH_FSYNC=            the spool's fsync= (default: the
                                directive's default, 1s)
  SPOOL_BENCH_MAX_WAIT=90       the most seconds the replay phase may take
  BENCH_CONNS=8, BENCH_PIN=1, BENCH_KEEP=1, BENCH_RESULTS (bench/results),
  PROMGATE_MODULE, NGINX_BIN, BUILD

Output: a table on stdout and in bench/results/spool.md, one JSON line per
run in bench/results/spool.jsonl; with --append-md FILE the table is also
appended to FILE (run.sh: latest.md).  Every process it starts is stopped
at the end, by pid.
"""

import argparse
import glob
import hashlib
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
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BUILD = os.environ.get("BUILD", os.path.join(REPO, "build"))
OUT = os.path.join(BUILD, "bench")
PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")
MODULE = os.environ.get("PROMGATE_MODULE",
                        os.path.join(BUILD, "ngx_http_promgate_module.so"))
NGINX_BIN = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
RESULTS = os.environ.get("BENCH_RESULTS", os.path.join(HERE, "results"))

RUNS = int(os.environ.get("SPOOL_BENCH_RUNS", "2"))
REQUESTS = int(os.environ.get("SPOOL_BENCH_REQUESTS", "3000"))
DIRECT_SECONDS = float(os.environ.get("SPOOL_BENCH_DIRECT_SECONDS", "5"))
DIRECT1_SECONDS = float(os.environ.get("SPOOL_BENCH_DIRECT1_SECONDS", "3"))
FSYNC = os.environ.get("SPOOL_BENCH_FSYNC", "")
MAX_WAIT = float(os.environ.get("SPOOL_BENCH_MAX_WAIT", "90"))
CONNS = int(os.environ.get("BENCH_CONNS", "8"))
PIN = os.environ.get("BENCH_PIN", "1") == "1"
KEEP = os.environ.get("BENCH_KEEP", "0") == "1"

HZ = os.sysconf("SC_CLK_TCK")
SHAPE = "main"
POLL = 0.05                 # s between looks at the status page

STARTED = []                # Popen objects, stopped one by one at the end


def log(msg):
    sys.stderr.write("%s spool-bench: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# ------------------------------------------------------------- processes

def pinned(cpu):
    if PIN and os.cpu_count() >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)]
    return []


def stop(p, sig=signal.SIGTERM, wait=10):
    """that process only (taskset execs, so p.pid is nginx's master)"""
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(wait)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        except OSError:
            pass
    if p in STARTED:
        STARTED.remove(p)


def stop_all():
    for p in list(STARTED):
        stop(p)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port, secs=10.0):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        time.sleep(0.01)
    return False


def nginx_head(d):
    # root: workers as root too (as the integration tests do), so that they
    # can write the spool under the run directory
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return user + """worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 4096;
events {{ worker_connections 2048; }}
""".format(d=d)


def nginx_http(d):
    return """    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
""".format(d=d)


def start_nginx(d, conf, cpu):
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    t = subprocess.run([NGINX_BIN, "-t", "-q", "-p", d, "-c", path,
                        "-e", os.path.join(d, "error.log")],
                       capture_output=True, text=True)
    if t.returncode != 0:
        raise RuntimeError("nginx -t (%s): %s" % (d, (t.stderr or t.stdout).strip()))
    out = open(os.path.join(d, "stdout.log"), "ab")
    p = subprocess.Popen(pinned(cpu) + [NGINX_BIN, "-p", d, "-c", path,
                                        "-e", os.path.join(d, "error.log")],
                         stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    out.close()
    STARTED.append(p)
    return p


def sink_conf(d, port):
    return nginx_head(d) + """http {
%s
    server {
        listen 127.0.0.1:%d backlog=1024;
        client_max_body_size 0;
        location = /gw/write { return 204; }
        location = /nginx_status { stub_status; }
    }
}
""" % (nginx_http(d), port)


def gateway_conf(d, run, port, sink_port):
    spool = "promgate_spool s path=%s/spool socket=%s/s.sock max_size=8g%s;" % (
        d, run, (" fsync=" + FSYNC) if FSYNC else "")
    return ("load_module %s/ngx_http_promgate_module.so;\n" % run
            + nginx_head(d) + """http {
%s
    %s
    upstream target { server 127.0.0.1:%d; keepalive 16; keepalive_requests 100000000; }
    server {
        listen 127.0.0.1:%d backlog=1024;
        client_max_body_size 64m;       # see bench/README.md (subrequests)
        location = /api/v1/write {
            promgate_remote_write;
            promgate_forward /_rw/t spool=s;
            promgate_retries 0;
            client_max_body_size 64m;
            client_body_buffer_size 64m;
        }
        location /_rw/t {
            internal;
            proxy_pass http://target/gw/write;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location = /metrics { promgate_status; }
    }
}
""" % (nginx_http(d), spool, sink_port, port))


# ------------------------------------------------------------ measurement

def tree(pid):
    """pid and its children (nginx: the master and its workers)"""
    pids = [pid]
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return pids


def run_delay(pid):
    """seconds the threads of pid and its children spent runnable, waiting
    for a CPU (/proc/PID/task/TID/schedstat, second field)"""
    t = 0
    for p in tree(pid):
        for tsk in glob.glob("/proc/%d/task/*/schedstat" % p):
            try:
                with open(tsk) as f:
                    t += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return t / 1e9


def cpu_ticks(pid):
    """utime+stime of pid and its children (the workers), all threads"""
    t = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return t


def cpu_busy():
    """busy ticks of the gateway's CPU (CPU 1 when pinned, else all)"""
    line = "cpu1" if pinned(1) else "cpu"
    with open("/proc/stat") as f:
        for l in f:
            v = l.split()
            if v[0] == line:
                return sum(int(v[i]) for i in (1, 2, 3, 6, 7, 8))
    return 0


class Probe:
    """CPU ticks, CPU-1 busy ticks and time at one moment"""

    def __init__(self, pid):
        self.t = time.monotonic()
        self.ticks = cpu_ticks(pid)
        self.busy = cpu_busy()
        self.runq = run_delay(pid)


def cpu_s(a, b):
    return (b.ticks - a.ticks) / HZ


def runq(a, b):
    """share of the window the gateway's threads waited for a CPU"""
    return (b.runq - a.runq) / max(b.t - a.t, 1e-9)


def other(a, b):
    w = (b.t - a.t) * HZ
    if w <= 0:
        return 0.0
    return max(0.0, ((b.busy - a.busy) - (b.ticks - a.ticks)) / w)


METRIC_RE = re.compile(r'^(promgate_spool_[a-z_]+)\{([^}]*)\}\s+(\S+)')


def spool_metrics(port):
    """the spool "s" metrics of the status page: {name: value} (labels other
    than spool= summed)"""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                timeout=5) as r:
        text = r.read().decode()
    m = {}
    for line in text.splitlines():
        g = METRIC_RE.match(line)
        if g and 'spool="s"' in g.group(2):
            m[g.group(1)] = m.get(g.group(1), 0) + float(g.group(3))
    return m


def sink_requests(port):
    """requests the sink answered, less this probe"""
    with urllib.request.urlopen("http://127.0.0.1:%d/nginx_status" % port,
                                timeout=5) as r:
        return int(r.read().decode().splitlines()[2].split()[2]) - 1


def loadgen(port, label, secs=None, requests=None, conns=None):
    argv = pinned(0) + [os.path.join(OUT, "loadgen"), "-p", str(port),
                        "-P", "/api/v1/write", "-c", str(conns or CONNS),
                        "-r", "0", "-t", "10", "-l", label,
                        "-S", os.path.join(OUT, SHAPE + ".samples")]
    argv += ["-d", str(secs if secs else 120)]
    if requests:
        argv += ["-n", str(requests)]
    argv += sorted(glob.glob(os.path.join(OUT, SHAPE + "-[0-9]*.bin")))
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError("loadgen failed: %s" % r.stderr.strip()[-300:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def crashes(d):
    try:
        with open(os.path.join(d, "error.log")) as f:
            return f.read().count("exited on signal")
    except OSError:
        return 0


# ------------------------------------------------------------------ a run

def one_run(k, run):
    gw_dir = os.path.join(run, "gw%d" % k)
    sink_dir = os.path.join(run, "sink%d" % k)
    os.makedirs(os.path.join(gw_dir, "spool"), exist_ok=True)
    gw_port, sink_port = free_port(), free_port()
    while sink_port == gw_port:
        sink_port = free_port()
    spb = int(open(os.path.join(OUT, SHAPE + ".samples")).read().split()[0])
    rec = {"kind": "spool", "run": k, "shape": SHAPE, "samples_per_body": spb,
           "conns": CONNS, "fsync": FSYNC or "default (1s)"}

    sink = start_nginx(sink_dir, sink_conf(sink_dir, sink_port), 0)
    if not wait_port(sink_port):
        raise RuntimeError("the sink did not start (%s)" % sink_dir)
    gw = start_nginx(gw_dir, gateway_conf(gw_dir, run, gw_port, sink_port), 1)
    if not wait_port(gw_port):
        raise RuntimeError("the gateway did not start (%s/error.log)" % gw_dir)

    # ---- direct: the sink up
    log("run %d: direct, %gs at max rate (+1 s warm-up)" % (k, DIRECT_SECONDS))
    loadgen(gw_port, "warmup", secs=1)
    m0, s0 = spool_metrics(gw_port), sink_requests(sink_port)
    a = Probe(gw.pid)
    j = loadgen(gw_port, "direct", secs=DIRECT_SECONDS)
    b = Probe(gw.pid)
    m1, s1 = spool_metrics(gw_port), sink_requests(sink_port)
    rec["direct"] = {
        "load": j, "cpu_s": cpu_s(a, b), "wall_s": b.t - a.t,
        "other_cpu": other(a, b), "runq_share": runq(a, b),
        "cpu_us_per_sample": 1e6 * cpu_s(a, b) / max(j["samples"], 1),
        "sink_requests": s1 - s0 - 1,  # the probe before counts here
        "spooled_records": m1.get("promgate_spool_appended_records_total", 0)
                           - m0.get("promgate_spool_appended_records_total", 0),
    }
    # one request at a time, as the replayer sends: what one in flight
    # allows on the direct path (the replay's upper bound, less the socket)
    if DIRECT1_SECONDS > 0:
        log("run %d: direct, one connection, %gs" % (k, DIRECT1_SECONDS))
        a, sk0 = Probe(gw.pid), cpu_ticks(sink.pid)
        j = loadgen(gw_port, "direct1", secs=DIRECT1_SECONDS, conns=1)
        b, sk1 = Probe(gw.pid), cpu_ticks(sink.pid)
        rec["direct1"] = {
            "load": j, "cpu_s": cpu_s(a, b), "wall_s": b.t - a.t,
            "other_cpu": other(a, b), "runq_share": runq(a, b),
            "cpu_share": cpu_s(a, b) / max(b.t - a.t, 1e-9),
            "sink_cpu_share": (sk1 - sk0) / HZ / max(b.t - a.t, 1e-9),
            "cpu_us_per_sample": 1e6 * cpu_s(a, b) / max(j["samples"], 1),
        }

    # ---- spool: the sink down (its port refuses connections)
    stop(sink)
    if port_open(sink_port):
        raise RuntimeError("the sink's port still accepts after its stop")
    log("run %d: spool, sink down; %d requests at max rate (+16 warm-up)"
        % (k, REQUESTS))
    w = loadgen(gw_port, "spool-warmup", requests=16)
    m0 = spool_metrics(gw_port)
    a = Probe(gw.pid)
    j = loadgen(gw_port, "spool", requests=REQUESTS)
    mid = Probe(gw.pid)
    time.sleep(1.2)             # the last fsync of the spool
    b = Probe(gw.pid)
    m1 = spool_metrics(gw_port)

    def d(name):
        return m1.get(name, 0) - m0.get(name, 0)

    rec["spool"] = {
        "load": j, "warmup_responses": w["responses"],
        "cpu_s": cpu_s(a, b), "wall_s": b.t - a.t, "other_cpu": other(a, mid),
        "runq_share": runq(a, mid), "load_wall_s": mid.t - a.t,
        "load_cpu_s": cpu_s(a, mid), "settle_cpu_s": cpu_s(mid, b),
        "cpu_us_per_sample": 1e6 * cpu_s(a, b) / max(j["samples"], 1),
        "appended_records": d("promgate_spool_appended_records_total"),
        "appended_bytes": d("promgate_spool_appended_bytes_total"),
        "bytes_per_sample": d("promgate_spool_appended_bytes_total")
                            / max(j["samples"], 1),
        "spool_records": m1.get("promgate_spool_records", 0),
        "spool_bytes": m1.get("promgate_spool_bytes", 0),
        "replay_errors": d("promgate_spool_replay_errors_total"),
        "dropped": d("promgate_spool_dropped_records_total"),
        "refused": d("promgate_spool_refused_total"),
    }

    # ---- replay: the sink up again, no load, until the spool is empty
    log("run %d: replay, %d records spooled; sink up, until the spool is "
        "empty (at most %gs)" % (k, m1.get("promgate_spool_records", 0),
                                  MAX_WAIT))
    r0 = m1
    a = Probe(gw.pid)
    sink = start_nginx(sink_dir, sink_conf(sink_dir, sink_port), 0)
    if not wait_port(sink_port):
        raise RuntimeError("the sink did not start again (%s)" % sink_dir)
    up = Probe(gw.pid)
    first = first_m = None
    sk_first = sk_end = skq_first = skq_end = 0
    m = r0
    while True:
        m = spool_metrics(gw_port)
        now = Probe(gw.pid)
        if first is None and m.get("promgate_spool_replayed_records_total", 0) \
                > r0.get("promgate_spool_replayed_records_total", 0):
            first, first_m = now, m
            sk_first, skq_first = cpu_ticks(sink.pid), run_delay(sink.pid)
        if m.get("promgate_spool_records", 0) == 0:
            break
        if now.t - up.t > MAX_WAIT:
            log("WARNING: run %d: spool not empty after %gs (%d records left)"
                % (k, MAX_WAIT, m.get("promgate_spool_records", 0)))
            break
        time.sleep(POLL)
    end = now
    sk_end, skq_end = cpu_ticks(sink.pid), run_delay(sink.pid)

    def rd(name, frm=r0):
        return m.get(name, 0) - frm.get(name, 0)

    recs = rd("promgate_spool_replayed_records_total")
    rep = {
        "wall_s": end.t - up.t, "sink_start_s": up.t - a.t,
        "cpu_s": cpu_s(up, end), "other_cpu": other(up, end),
        "runq_share": runq(up, end),
        "replayed_records": recs,
        "replayed_bytes": rd("promgate_spool_replayed_bytes_total"),
        "replayed_samples": recs * spb,
        "records_left": m.get("promgate_spool_records", 0),
        "replay_errors": rd("promgate_spool_replay_errors_total"),
        "dropped": rd("promgate_spool_dropped_records_total"),
        "sink_requests": sink_requests(sink_port),
    }
    rep["cpu_us_per_sample"] = 1e6 * rep["cpu_s"] / max(recs * spb, 1)
    rep["records_per_s"] = recs / max(rep["wall_s"], 1e-9)
    rep["samples_per_s"] = rep["records_per_s"] * spb
    if first is not None:
        drecs = rd("promgate_spool_replayed_records_total", first_m)
        rep["wait_s"] = first.t - up.t
        rep["drain_s"] = end.t - first.t
        rep["drain_records"] = drecs
        rep["drain_cpu_s"] = cpu_s(first, end)
        rep["drain_records_per_s"] = drecs / max(rep["drain_s"], 1e-9)
        rep["drain_samples_per_s"] = rep["drain_records_per_s"] * spb
        rep["drain_cpu_share"] = rep["drain_cpu_s"] / max(rep["drain_s"], 1e-9)
        rep["drain_cpu_us_per_record"] = 1e6 * rep["drain_cpu_s"] / max(drecs, 1)
        rep["drain_cpu_us_per_sample"] = rep["drain_cpu_us_per_record"] / spb
        rep["drain_us_per_record"] = 1e6 * rep["drain_s"] / max(drecs, 1)
        rep["drain_sink_cpu_share"] = (sk_end - sk_first) / HZ \
            / max(rep["drain_s"], 1e-9)
        # time runnable but not running: what a busy machine adds to each
        # record of a one-at-a-time replay
        rep["drain_runq_share"] = (end.runq - first.runq) \
            / max(rep["drain_s"], 1e-9)
        rep["drain_sink_runq_share"] = (skq_end - skq_first) \
            / max(rep["drain_s"], 1e-9)
    rec["replay"] = rep
    rec["crashes"] = crashes(gw_dir)
    stop(gw)
    stop(sink)
    if not KEEP:
        shutil.rmtree(os.path.join(gw_dir, "spool"), ignore_errors=True)
    return rec


# ----------------------------------------------------------------- report

def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def table(recs):
    out = ["| run | direct µs/sample | spooling µs/sample | spooled B/sample "
           "| replay µs/sample, up→empty (drain) | replay s, up→empty (wait "
           "+ drain) | replay records/s, up→empty (drain) | replay samples/s, "
           "up→empty (drain) | records replayed | CPU1 other: direct / spool "
           "/ replay |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in recs:
        d, s, p = r["direct"], r["spool"], r["replay"]
        out.append("| %d | %s | %s | %s | %s (%s) | %s (%s + %s) | %s (%s) "
                   "| %s (%s) | %d of %d | %.0f%% / %.0f%% / %.0f%% |" % (
            r["run"], fmt(d["cpu_us_per_sample"], ".3f"),
            fmt(s["cpu_us_per_sample"], ".3f"),
            fmt(s["bytes_per_sample"], ".1f"),
            fmt(p["cpu_us_per_sample"], ".3f"),
            fmt(p.get("drain_cpu_us_per_sample"), ".3f"),
            fmt(p["wall_s"], ".2f"), fmt(p.get("wait_s"), ".2f"),
            fmt(p.get("drain_s"), ".2f"),
            fmt(p["records_per_s"], ",.0f"),
            fmt(p.get("drain_records_per_s"), ",.0f"),
            fmt(p["samples_per_s"], ",.0f"),
            fmt(p.get("drain_samples_per_s"), ",.0f"),
            p["replayed_records"], p["replayed_records"] + p["records_left"],
            100 * d["other_cpu"], 100 * s["other_cpu"], 100 * p["other_cpu"]))
    return "\n".join(out)


def details(recs):
    out = []
    for r in recs:
        d, s, p = r["direct"], r["spool"], r["replay"]
        out.append(
            "- run %d: direct %s req/s (%s samples/s, the gateway ran %.0f%% "
            "of the window, waited for a CPU %.0f%%), spool %s req/s (%s "
            "samples/s, answers %s, ran %.0f%%, waited %.0f%%), %.0f MB "
            "spooled (%d records); "
            "replay: %d records to the sink (it counted %d), %.2f CPU-s, "
            "%s µs CPU per record; replay errors "
            "%d while down, %d after; dropped %d; worker crashes %d%s"
            % (r["run"], fmt(d["load"]["req_per_s"], ",.0f"),
               fmt(d["load"]["samples_per_s"], ",.0f"),
               100 * d["cpu_s"] / max(d["wall_s"], 1e-9),
               100 * d.get("runq_share", 0),
               fmt(s["load"]["req_per_s"], ",.0f"),
               fmt(s["load"]["samples_per_s"], ",.0f"),
               json.dumps(s["load"]["responses"]),
               100 * s["load_cpu_s"] / max(s["load_wall_s"], 1e-9),
               100 * s.get("runq_share", 0),
               s["appended_bytes"] / 1e6, s["appended_records"],
               p["replayed_records"], p["sink_requests"], p["cpu_s"],
               fmt(p.get("drain_cpu_us_per_record"), ",.0f"),
               s["replay_errors"], p["replay_errors"], p["dropped"],
               r["crashes"], one_conn(r, p)))
    return "\n".join(out)


def one_conn(r, p):
    """the replay's serial pace next to the direct path's at one connection"""
    s = ""
    if p.get("drain_us_per_record") is not None:
        s += ("; replay %.2f ms per record: the gateway ran %.0f%% of the "
              "drain and waited for a CPU %.0f%%, the sink ran %.0f%% and "
              "waited %.0f%%" % (p["drain_us_per_record"] / 1e3,
                                 100 * p["drain_cpu_share"],
                                 100 * p["drain_runq_share"],
                                 100 * p["drain_sink_cpu_share"],
                                 100 * p["drain_sink_runq_share"]))
    d1 = r.get("direct1")
    if d1:
        s += ("; direct with one connection: %s req/s, p50 %.2f ms, %.3f "
              "µs/sample, the gateway ran %.0f%% and waited for a CPU "
              "%.0f%%, the sink ran %.0f%%" % (
                  fmt(d1["load"]["req_per_s"], ",.0f"),
                  d1["load"]["latency_us"]["p50"] / 1e3,
                  d1["cpu_us_per_sample"], 100 * d1["cpu_share"],
                  100 * d1.get("runq_share", 0),
                  100 * d1["sink_cpu_share"]))
    return s


def problems(r):
    """what makes a run's figures wrong"""
    out = []
    d, s, p = r["direct"], r["spool"], r["replay"]
    if d["spooled_records"]:
        out.append("direct: %d writes spooled" % d["spooled_records"])
    for name, ph in (("direct", d), ("direct1", r.get("direct1")),
                     ("spool", s)):
        if ph is None:
            continue
        if ph["load"]["errors"] or set(ph["load"]["responses"]) - {"204"}:
            out.append("%s: answers %s, errors %d" % (
                name, json.dumps(ph["load"]["responses"]), ph["load"]["errors"]))
    if s["appended_records"] != s["load"]["completed"]:
        out.append("spool: %d appended for %d answered" % (
            s["appended_records"], s["load"]["completed"]))
    if p["records_left"]:
        out.append("replay: %d records left" % p["records_left"])
    if p["sink_requests"] < p["replayed_records"]:
        out.append("replay: the sink counted %d requests for %d replayed" % (
            p["sink_requests"], p["replayed_records"]))
    if p["dropped"]:
        out.append("replay: %d dropped" % p["dropped"])
    if r["crashes"]:
        out.append("%d worker crashes" % r["crashes"])
    return out


def prepare():
    subprocess.run([PYTHON, os.path.join(HERE, "gen_bodies.py"), "--outdir",
                    OUT, "--shapes", SHAPE], check=True,
                   stdout=subprocess.DEVNULL)
    lg = os.path.join(OUT, "loadgen")
    src = os.path.join(HERE, "loadgen.c")
    if not os.access(lg, os.X_OK) or os.path.getmtime(src) > os.path.getmtime(lg):
        subprocess.run(["cc", "-O2", "-Wall", "-o", lg, src, "-lm"], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--append-md", help="also append the section to this file")
    args = ap.parse_args()

    if not os.path.isfile(MODULE):
        log("%s is missing (make module)" % MODULE)
        return 1
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    if pinned(0):
        os.sched_setaffinity(0, {0})    # the polling here: with the sender
    prepare()
    # short: the spool's unix socket path must stay under ~100 characters
    run = tempfile.mkdtemp(prefix="pgspool.", dir="/tmp")
    # a private copy: a rebuild overwrites build/*.so while nginx has it
    # mapped (bench/README.md)
    st = os.stat(MODULE)
    copy = os.path.join(run, "ngx_http_promgate_module.so")
    shutil.copy(MODULE, copy)
    with open(copy, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()[:12]
    module_info = "%s (%s UTC, sha256 %s)" % (
        MODULE, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(st.st_mtime)),
        sha)
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    log("run directory %s; %d runs" % (run, RUNS))
    t_start = time.time()
    la_start = open("/proc/loadavg").read().split()[:3]
    recs = []
    try:
        for k in range(1, RUNS + 1):
            r = one_run(k, run)
            r["module"] = module_info
            r["problems"] = problems(r)
            for x in r["problems"]:
                log("run %d: PROBLEM: %s" % (k, x))
            recs.append(r)
    finally:
        stop_all()
        if KEEP:
            log("run directory kept: %s" % run)
        else:
            shutil.rmtree(run, ignore_errors=True)

    la_end = open("/proc/loadavg").read().split()[:3]
    md = ["## Spool: spooling and replay (bench/spool_bench.py, main shape)", "",
          "- %s; module %s; repo HEAD %s; nginx one worker on CPU 1, "
          "sender and sink on CPU 0; %d connections; one target "
          "`spool=s`, `promgate_retries 0`, no exemplar capture; spool "
          "fsync %s, under /tmp (%s)" % (
              time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              module_info, head or "?", CONNS, FSYNC or "1s (default)", fs_of("/tmp")),
          "- per run: direct %gs at max rate with the sink up; then the sink "
          "stopped (connection refused) and %d requests at max rate, all "
          "spooled; then the sink started again and the clock runs until "
          "promgate_spool_records is 0 (no load meanwhile)" % (
              DIRECT_SECONDS, REQUESTS),
          "- load average start %s, end %s; %.0f s" % (
              " ".join(la_start), " ".join(la_end), time.time() - t_start),
          "", table(recs), "", details(recs)]
    ref = main_promgate_row(os.path.join(RESULTS, "latest.md"))
    if ref:
        md += ["", "For comparison, the main table of bench/run.sh "
               "(`latest.md` of %s): promgate on main, two targets, "
               "exemplar capture on, %s CPU-s per million samples (= µs per "
               "sample)." % ref]
    bad = [(r["run"], x) for r in recs for x in r["problems"]]
    if bad:
        md += ["", "Problems: " + "; ".join("run %d: %s" % b for b in bad)]
    text = "\n".join(md) + "\n"
    with open(os.path.join(RESULTS, "spool.md"), "w") as f:
        f.write(text)
    with open(os.path.join(RESULTS, "spool.jsonl"), "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    if args.append_md:
        with open(args.append_md, "a") as f:
            f.write("\n" + text)
    sys.stdout.write(text)
    return 1 if bad else 0


def main_promgate_row(path):
    """(date, CPU-s/M samples) of the main promgate row of run.sh's
    latest.md, or None"""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return None
    date, col = "?", None
    for l in lines:
        if l.startswith("- date: "):
            date = l[len("- date: "):]
        cells = [c.strip() for c in l.strip().strip("|").split("|")]
        if "CPU-s/M samples" in cells:
            col = cells.index("CPU-s/M samples")
        elif col is not None and cells[:2] == ["main", "promgate"]:
            return (date, cells[col]) if len(cells) > col else None
    return None


def fs_of(path):
    r = subprocess.run(["df", "--output=fstype,source", path],
                       capture_output=True, text=True)
    v = r.stdout.split()
    return "%s on %s" % (v[2], v[3]) if len(v) >= 4 else "?"


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
