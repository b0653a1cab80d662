"""Real senders in front of the gateway: a Prometheus 2.42 scraping an
OpenMetrics target with exemplars and remote-writing to the gateway, and
vmagent.  What the sender holds must arrive in both storages."""

import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

import rw
from procs import as_plain, poll_samples, wait_for

OM_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class OpenMetricsTarget:
    """serves a counter with an exemplar per scrape (trace_id trN), a gauge
    and an info-ish gauge; each scrape bumps the counter"""

    def __init__(self, prefix):
        self.prefix = prefix
        self.n = 0
        self.lock = threading.Lock()
        target = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                body = target.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", OM_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class S(ThreadingHTTPServer):
            daemon_threads = True

        self.srv = S(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def render(self):
        with self.lock:
            self.n += 1
            n = self.n
        p = self.prefix
        now = time.time()
        return (
            "# TYPE {p}_requests counter\n"
            "# HELP {p}_requests Requests served.\n"
            '{p}_requests_total{{path="/a"}} {n} # {{trace_id="tr{n}"}} 0.{n} {ts:.3f}\n'
            '{p}_requests_total{{path="/b"}} {n2} # {{trace_id="trb{n}"}} 1.5 {ts:.3f}\n'
            "# TYPE {p}_temperature_celsius gauge\n"
            "# UNIT {p}_temperature_celsius celsius\n"
            "# HELP {p}_temperature_celsius Temperature.\n"
            '{p}_temperature_celsius{{room="kitchen"}} {g}\n'
            "# EOF\n").format(p=p, n=n, n2=2 * n, ts=now, g=20 + (n % 7) * 0.25)

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def close(a, b):
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def window(samples, t0, t1):
    return {k: [(t, v) for t, v in vs if t0 <= t <= t1]
            for k, vs in samples.items()
            if any(t0 <= t <= t1 for t, _ in vs)}


def same_data(want, got, approx=False):
    if set(want) != set(got):
        return False
    for k in want:
        a, b = want[k], got[k]
        if len(a) != len(b) or [t for t, _ in a] != [t for t, _ in b]:
            return False
        for (_, x), (_, y) in zip(a, b):
            both_nan = isinstance(x, float) and isinstance(y, float) and \
                math.isnan(x) and math.isnan(y)
            if not (x == y or both_nan or (approx and close(x, y))):
                return False
    return True


@pytest.fixture
def om_target():
    t = OpenMetricsTarget(rw.uniq("pgsend"))
    yield t
    t.stop()


def test_prometheus_sender(storage_gateway, prom, vm, om_target, make_prometheus):
    gw = storage_gateway()
    job = rw.uniq("job")
    cfg = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: {job}
    static_configs:
      - targets: ['127.0.0.1:{tp}']
remote_write:
  - url: {url}
    send_exemplars: true
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
    metadata_config:
      send: true
      send_interval: 1s
""".format(job=job, tp=om_target.port, url=gw.write_url)
    sender = make_prometheus("sender", cfg, features="exemplar-storage")
    try:
        counter = '%s_requests_total{path="/a"}' % om_target.prefix
        got = poll_samples(prom, counter, 1, timeout=60, min_samples=6)
        assert got, "nothing arrived in Prometheus behind the gateway; sender log:\n%s" % (
            open(sender.proc.logpath).read()[-3000:])
        stamps = sorted(t for vs in got.values() for t, _ in vs)
        t0, t1 = stamps[0], stamps[-1] - 2000     # two scrapes of slack at the end
        sel = '{job="%s"}' % job
        span = "%ds" % ((t1 - t0) // 1000 + 30)

        want = window(sender.samples(sel, t1 / 1000, span), t0, t1)
        assert len(want) >= 5, as_plain(want)        # 3 target series + up, scrape_*

        # Prometheus behind the gateway: exactly what the sender holds
        prom_got = {}

        def prom_same():
            nonlocal prom_got
            prom_got = window(prom.samples(sel, t1 / 1000, span), t0, t1)
            return same_data(want, prom_got)
        assert wait_for(prom_same, 20, 0.5), (as_plain(want), as_plain(prom_got))

        # VictoriaMetrics behind the gateway (floats kept to ~15 digits)
        vm_got = {}

        def vm_same():
            nonlocal vm_got
            vm.flush()
            vm_got = window(vm.export(sel, t0 / 1000 - 1, t1 / 1000 + 1), t0, t1)
            return same_data(want, vm_got, approx=True)
        assert wait_for(vm_same, 30, 0.5), (as_plain(want), as_plain(vm_got))

        # exemplars: the sender's, in the window, are in the storage Prometheus
        def exset(p):
            out = set()
            for e in p.exemplars(sel, t0 / 1000, t1 / 1000):
                sl = tuple(sorted(e["seriesLabels"].items()))
                for x in e["exemplars"]:
                    ts = round(float(x["timestamp"]) * 1000)
                    out.add((sl, tuple(sorted(x["labels"].items())), x["value"], ts))
            return out
        want_ex = exset(sender)
        assert len(want_ex) >= 4, want_ex
        assert wait_for(lambda: want_ex <= exset(prom), 20, 0.5), \
            sorted(want_ex - exset(prom))[:5]
    finally:
        sender.stop()


@pytest.mark.parametrize("sort_flag", [False, True], ids=["sorted-input", "sortLabels"])
def test_vmagent_sender(storage_gateway, prom, vm, make_vmagent, sort_flag):
    """vmagent relays labels in input order; a user feeding it unsorted
    labels needs -sortLabels (the gateway rejects unsorted label sets)"""
    gw = storage_gateway()
    agent = make_vmagent([gw.write_url], ["-sortLabels"] if sort_flag else [])
    try:
        name = rw.uniq("pgva")
        t = rw.now_ms() - 10000
        lines, want = [], {}
        for i, inst in enumerate(("a", "b", "c")):
            if sort_flag:
                lbl = 'zone="z%d",instance="%s",env="test"' % (i, inst)     # unsorted
            else:
                lbl = 'env="test",instance="%s",zone="z%d"' % (inst, i)
            key = (("__name__", name), ("env", "test"), ("instance", inst), ("zone", "z%d" % i))
            want[key] = []
            for k in range(3):
                v = i * 10 + k + 0.5
                lines.append("%s{%s} %r %d" % (name, lbl, v, t + k * 1000))
                want[key].append((t + k * 1000, v))
        r = requests.post(agent.url + "/api/v1/import/prometheus",
                          data="\n".join(lines) + "\n", timeout=10)
        assert r.status_code == 204, r.text

        got = poll_samples(prom, name, 3, timeout=30, min_samples=9)
        assert as_plain(got) == want, as_plain(got)
        vgot = poll_samples(vm, name, 3, timeout=30, min_samples=9)
        assert as_plain(vgot) == want
        assert agent.metric("vmagent_remotewrite_requests_total") >= 1
    finally:
        agent.stop()
