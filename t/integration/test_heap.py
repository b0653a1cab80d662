"""promgate_heap_retain: a worker keeps freed heap for the next request
bodies instead of handing it back to the kernel and faulting it in again.

With client_body_buffer_size large enough (as nginx.conf.example sets it),
nginx reads each body into one buffer of its size; with glibc's dynamic
thresholds and several bodies in flight, the top of the heap is trimmed
and refaulted over and over (12 to 60 page faults per 250 KB request in
the benchmark, 4-15% of the worker's CPU; about 4 here).  The default
(32m) must bring the worker's page faults per request near zero once
warm; `off` keeps glibc's behaviour (measured too, for the record).
"""

import json
import os
import subprocess

import pytest

import rw
from conftest import gateway_http
from fakeup import Resp, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
SERIES = 2000           # the benchmark's main shape: ~250 KB compressed
SENDERS = 8
WARM, MEASURED = 48, 160


def big_body():
    """2,000 series of 12 labels, values partly random: about as large
    compressed (~250 KB) as the benchmark's main shape"""
    name = rw.uniq("heap")
    series = []
    for i in range(SERIES):
        labels = {"job": "heap-%d" % (i % 10),
                  "instance": "10.1.%d.%d:9100" % (i // 200, i % 200),
                  "path": "/api/v%d/items/%d" % (i % 3, i)}
        for k in range(9):
            labels["l%d" % k] = os.urandom(6).hex()
        series.append(rw.series(name, labels, [(float(i), rw.now_ms())]))
    return rw.compress(rw.write_request(series))


def minflt(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def loadgen(tmp_path):
    """bench/loadgen.c, built once: a C sender that keeps SENDERS requests
    in flight (a Python sender is too slow to)"""
    out = os.path.join(BUILD, "bench", "loadgen")
    src = os.path.join(ROOT, "bench", "loadgen.c")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = str(tmp_path / "loadgen")
        subprocess.run(["cc", "-O2", "-o", tmp, src, "-lm"], check=True)
        os.replace(tmp, out)
    return out


def send(lg, port, body_file, n):
    r = subprocess.run([lg, "-p", str(port), "-P", "/api/v1/write",
                        "-c", str(SENDERS), "-n", str(n), "-d", "60",
                        "-t", "30", "-s", str(SERIES), body_file],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert res["responses"] == {"204": n}, res


def faults_per_request(make_nginx, make_fake, lg, body_file, http_extra):
    # the storage answers after 30 ms: the worker holds SENDERS bodies at
    # once, as in front of a storage under load
    sink = make_fake(default=Resp(204, delay=0.03))
    port = free_port()
    gw = make_nginx(gateway_http(port, [("a", "http://127.0.0.1:%d"
                                         % sink.port)],
                                 http_extra=http_extra,
                                 write_extra="client_body_buffer_size 32m;"),
                    workers=1)
    (worker,) = gw.worker_pids()
    send(lg, port, body_file, WARM)
    f0 = minflt(worker)
    send(lg, port, body_file, MEASURED)
    sink.requests.clear()
    return (minflt(worker) - f0) / MEASURED


@pytest.mark.skipif("ASAN_OPTIONS" in os.environ,
                    reason="ASan's allocator replaces glibc's malloc: "
                    "mallopt() has no effect there")
def test_warm_worker_does_not_fault_per_request(make_nginx, make_fake,
                                                tmp_path):
    body = big_body()
    assert len(body) > 150000
    body_file = str(tmp_path / "body.bin")
    with open(body_file, "wb") as f:
        f.write(body)
    lg = loadgen(tmp_path)
    off = faults_per_request(make_nginx, make_fake, lg, body_file,
                             "promgate_heap_retain off;")
    on = faults_per_request(make_nginx, make_fake, lg, body_file, "")
    print("page faults per request: off %.1f, default %.1f" % (off, on))
    assert on < 1, "default: %.1f page faults per request (off: %.1f)" % (
        on, off)


@pytest.mark.parametrize("value,ok", [
    ("off", True), ("64m", True), ("64k", True), ("1k", False),
    ("lots", False)])
def test_nginx_t(make_nginx, value, ok):
    n = make_nginx(gateway_http(free_port(), [("a", "http://127.0.0.1:9")],
                                http_extra="promgate_heap_retain %s;"
                                % value), start=False)
    rc, out = n.test_config()
    n.error_log_problems = lambda: []       # the [emerg] is the point
    assert (rc == 0) == ok, out
    if not ok:
        assert 'invalid promgate_heap_retain "%s"' % value in out, out
