"""Processes the tests start: nginx (with the module), Prometheus,
VictoriaMetrics, vmagent.  Every start has a bounded wait, every stop
escalates to SIGKILL after a bound.  Loopback only.
"""

import json
import math
import os
import re
import signal
import socket
import subprocess
import time

import requests

from fakeup import free_port

LOOP = "127.0.0.1"


def wait_for(pred, timeout, interval=0.1, what="condition"):
    """poll pred() until it returns a true value or timeout; returns the
    last value (falsy on timeout)"""
    deadline = time.monotonic() + timeout
    val = None
    while True:
        try:
            val = pred()
        except (requests.RequestException, OSError, ValueError):
            val = None
        if val:
            return val
        if time.monotonic() >= deadline:
            return val
        time.sleep(interval)


def port_open(port, host=LOOP):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
    except OSError:
        return "(no %s)" % path


class Proc:
    """a child process with its output in a log file"""

    def __init__(self, argv, logpath, cwd=None, env=None):
        self.argv = argv
        self.logpath = logpath
        self.log = open(logpath, "ab")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                  start_new_session=True)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
            except ProcessLookupError:
                pass
        self.log.close()
        return self.p.returncode


# --------------------------------------------------------------- Prometheus

class Prometheus:
    def __init__(self, workdir, config_yaml=None, extra_flags=(),
                 features="exemplar-storage,native-histograms",
                 binary="prometheus"):
        self.dir = workdir
        self.binary = binary
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        self.url = "http://%s:%d" % (LOOP, self.port)
        self.config = os.path.join(workdir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write(config_yaml or "global:\n  scrape_interval: 15s\n")
        argv = [binary, "--config.file=" + self.config,
                "--storage.tsdb.path=" + os.path.join(workdir, "data"),
                "--web.listen-address=%s:%d" % (LOOP, self.port),
                "--web.enable-remote-write-receiver",
                "--log.level=info"]
        if features:
            argv.append("--enable-feature=" + features)
        argv += list(extra_flags)
        self.proc = Proc(argv, os.path.join(workdir, "prometheus.log"), cwd=workdir)
        ok = wait_for(lambda: self.proc.alive() is False or
                      requests.get(self.url + "/-/ready", timeout=2).status_code == 200,
                      60, 0.2)
        if not ok or not self.proc.alive():
            log = tail(self.proc.logpath)
            self.stop()
            raise RuntimeError("prometheus did not start:\n" + log)

    @property
    def write_url(self):
        return self.url + "/api/v1/write"

    def stop(self):
        self.proc.stop()

    def api(self, path, **params):
        r = requests.get(self.url + path, params=params, timeout=30)
        r.raise_for_status()
        j = r.json()
        assert j["status"] == "success", j
        return j["data"]

    def query(self, q, t=None):
        params = {"query": q}
        if t is not None:
            params["time"] = "%.3f" % t
        return self.api("/api/v1/query", **params)

    def samples(self, selector, t=None, window="15m"):
        """{frozenset(labels.items()): [(ts_ms, value)]} raw samples in the
        window ending at t (default now)"""
        data = self.query("%s[%s]" % (selector, window), t)
        return parse_matrix(data)

    def series(self, match, start, end):
        data = self.api("/api/v1/series", **{"match[]": match,
                                               "start": "%.3f" % start,
                                               "end": "%.3f" % end})
        return {frozenset(d.items()) for d in data}

    def exemplars(self, q, start, end):
        r = requests.get(self.url + "/api/v1/query_exemplars",
                         params={"query": q, "start": "%.3f" % start,
                                 "end": "%.3f" % end}, timeout=30)
        if r.status_code == 204:
            return []
        r.raise_for_status()
        return r.json()["data"] or []


def fval(s):
    return float(s)          # "NaN", "+Inf", "-Inf" parse too


def parse_matrix(data):
    out = {}
    if data["resultType"] == "matrix":
        for r in data["result"]:
            key = frozenset(r["metric"].items())
            out[key] = [(int(round(float(t) * 1000)), fval(v)) for t, v in r.get("values", [])]
            for t, h in r.get("histograms", []):
                out.setdefault(key, []).append((int(round(float(t) * 1000)), h))
    elif data["resultType"] == "vector":
        for r in data["result"]:
            key = frozenset(r["metric"].items())
            if "value" in r:
                t, v = r["value"]
                out[key] = [(int(round(float(t) * 1000)), fval(v))]
            else:
                t, h = r["histogram"]
                out[key] = [(int(round(float(t) * 1000)), h)]
    return out


# ----------------------------------------------------------- VictoriaMetrics

class VictoriaMetrics:
    def __init__(self, workdir, extra_flags=(), binary="victoria-metrics"):
        self.dir = workdir
        self.binary = binary
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        self.url = "http://%s:%d" % (LOOP, self.port)
        argv = [binary,
                "-storageDataPath=" + os.path.join(workdir, "data"),
                "-httpListenAddr=%s:%d" % (LOOP, self.port),
                "-loggerLevel=INFO"] + list(extra_flags)
        self.proc = Proc(argv, os.path.join(workdir, "vm.log"), cwd=workdir)
        ok = wait_for(lambda: self.proc.alive() is False or
                      requests.get(self.url + "/health", timeout=2).status_code == 200,
                      60, 0.2)
        if not ok or not self.proc.alive():
            log = tail(self.proc.logpath)
            self.stop()
            raise RuntimeError("victoria-metrics did not start:\n" + log)

    @property
    def write_url(self):
        return self.url + "/api/v1/write"

    def stop(self):
        self.proc.stop()

    def flush(self):
        try:
            requests.get(self.url + "/internal/force_flush", timeout=10)
        except requests.RequestException:
            pass

    def query(self, q, t=None):
        params = {"query": q, "nocache": "1"}
        if t is not None:
            params["time"] = "%.3f" % t
        r = requests.get(self.url + "/api/v1/query", params=params, timeout=30)
        r.raise_for_status()
        j = r.json()
        assert j["status"] == "success", j
        return j["data"]

    def export(self, match, start=None, end=None):
        """{frozenset(labels.items()): [(ts_ms, value)]}, raw samples"""
        params = {"match[]": match}
        if start is not None:
            params["start"] = "%.3f" % start
        if end is not None:
            params["end"] = "%.3f" % end
        r = requests.get(self.url + "/api/v1/export", params=params, timeout=30)
        r.raise_for_status()
        out = {}
        for line in r.text.splitlines():
            if not line.strip():
                continue
            # 1.79 writes +Inf/-Inf/NaN bare, which is not JSON
            line = re.sub(r'(?<=[\[,])\+?Inf(?=[,\]])', 'Infinity', line)
            line = re.sub(r'(?<=[\[,])-Inf(?=[,\]])', '-Infinity', line)
            d = json.loads(line)
            key = frozenset(d["metric"].items())
            # VictoriaMetrics exports a staleness marker as null: kept as None
            vals = [None if v is None else fval(v) if isinstance(v, str) else float(v)
                    for v in d["values"]]
            out.setdefault(key, []).extend(zip(d["timestamps"], vals))
        for k in out:
            out[k].sort()
        return out

    def series(self, match, start, end):
        r = requests.get(self.url + "/api/v1/series",
                         params={"match[]": match, "start": "%.3f" % start,
                                 "end": "%.3f" % end}, timeout=30)
        r.raise_for_status()
        return {frozenset(d.items()) for d in r.json()["data"]}


def poll_samples(store, selector, want_series, timeout=30, min_samples=None):
    """Polls a storage until `selector` has want_series series (and, if given,
    at least min_samples samples in total).  Returns the last samples dict."""
    last = {}

    def check():
        nonlocal last
        if isinstance(store, VictoriaMetrics):
            store.flush()
            last = store.export(selector)
        else:
            last = store.samples(selector)
        if len(last) < want_series:
            return False
        if min_samples is not None and sum(len(v) for v in last.values()) < min_samples:
            return False
        return True

    wait_for(check, timeout, 0.25)
    return last


def as_plain(samples):
    """samples dict with labels as sorted tuples, for readable diffs"""
    return {tuple(sorted(k)): v for k, v in samples.items()}


def same_float(a, b):
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b
    return a == b


# ---------------------------------------------------------------- vmagent

class VMAgent:
    def __init__(self, workdir, remote_write_urls, extra_flags=(),
                 binary="vmagent"):
        os.makedirs(workdir, exist_ok=True)
        self.binary = binary
        self.dir = workdir
        self.port = free_port()
        self.url = "http://%s:%d" % (LOOP, self.port)
        argv = [binary, "-httpListenAddr=%s:%d" % (LOOP, self.port),
                "-remoteWrite.tmpDataPath=" + os.path.join(workdir, "buf"),
                "-remoteWrite.flushInterval=1s", "-loggerLevel=INFO"]
        argv += ["-remoteWrite.url=" + u for u in remote_write_urls]
        argv += list(extra_flags)
        self.proc = Proc(argv, os.path.join(workdir, "vmagent.log"), cwd=workdir)
        ok = wait_for(lambda: self.proc.alive() is False or
                      requests.get(self.url + "/health", timeout=2).status_code == 200,
                      60, 0.2)
        if not ok or not self.proc.alive():
            log = tail(self.proc.logpath)
            self.stop()
            raise RuntimeError("vmagent did not start:\n" + log)

    def stop(self):
        self.proc.stop()

    def metric(self, name):
        """sum of all series of a metric on vmagent's /metrics"""
        r = requests.get(self.url + "/metrics", timeout=10)
        total = 0.0
        for line in r.text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


# -------------------------------------------------------------------- nginx

PROBLEM_RE = re.compile(r"\[(alert|emerg|crit)\]")

NGINX_MAIN = """\
{load_module}
daemon off;
master_process on;
worker_processes {workers};
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log {log_level};
events {{ worker_connections 1024; }}
{main_extra}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body_temp;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
{http}
}}
"""


class Nginx:
    """nginx with the module, its own prefix dir.  `http` is the body of the
    http{} block; write_conf() may be called again before reload()."""

    def __init__(self, nginx_bin, module, workdir, http="", workers=2,
                 main_extra="", log_level="info", raw_conf=None):
        self.bin = nginx_bin
        self.module = module
        self.dir = workdir
        self.workers = workers
        os.makedirs(workdir, exist_ok=True)
        self.conf = os.path.join(workdir, "nginx.conf")
        self.error_log = os.path.join(workdir, "error.log")
        self.access_log = os.path.join(workdir, "access.log")
        self.pidfile = os.path.join(workdir, "nginx.pid")
        self.proc = None
        self.ports = []
        if raw_conf is not None:
            self.write_raw(raw_conf)
        else:
            self.write_conf(http, main_extra=main_extra, log_level=log_level)

    def write_conf(self, http, main_extra="", log_level="info"):
        user = "user root root;" if os.geteuid() == 0 else ""
        text = NGINX_MAIN.format(
            load_module="load_module %s;" % self.module if self.module else "",
            workers=self.workers, user=user, dir=self.dir, log_level=log_level,
            main_extra=main_extra, http=http)
        self.write_raw(text)

    def write_raw(self, text):
        with open(self.conf, "w") as f:
            f.write(text)
        self.ports = [int(p) for p in
                      re.findall(r"listen\s+127\.0\.0\.1:(\d+)", text)]

    def argv(self, *extra):
        return [self.bin, "-p", self.dir + "/", "-c", self.conf,
                "-e", self.error_log] + list(extra)

    def test_config(self):
        """nginx -t: (returncode, output)"""
        r = subprocess.run(self.argv("-t"), capture_output=True, timeout=60)
        return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")

    def start(self, timeout=20):
        self.proc = Proc(self.argv(), os.path.join(self.dir, "nginx.stdout"))
        ok = wait_for(lambda: (not self.proc.alive()) or
                      (len(self.worker_pids()) >= self.workers and
                       all(port_open(p) for p in self.ports)), timeout, 0.05)
        if not ok or not self.proc.alive():
            msg = "nginx did not start:\n%s\n%s" % (
                tail(self.proc.logpath), tail(self.error_log))
            self.stop()
            raise RuntimeError(msg)
        return self

    @property
    def master_pid(self):
        return self.proc.pid

    def worker_pids(self):
        """pids of the master's live worker processes (not cache helpers)"""
        out = set()
        if not self.proc:
            return out
        master = self.proc.pid
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    stat = f.read()
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            state, ppid = fields[0], int(fields[1])
            if ppid == master and state != "Z" and b"worker process" in cmd:
                out.add(int(d))
        return out

    def reload(self, timeout=20):
        """HUP; waits until a full set of new workers runs and the old ones left"""
        old = self.worker_pids()
        os.kill(self.master_pid, signal.SIGHUP)
        ok = wait_for(lambda: (lambda now: len(now - old) >= self.workers
                               and not (now & old))(self.worker_pids()),
                      timeout, 0.05)
        if not ok:
            raise RuntimeError("reload did not finish: old=%s now=%s\n%s" % (
                old, self.worker_pids(), tail(self.error_log)))

    def stop(self, timeout=15):
        """QUIT (graceful), then TERM, then SIGKILL to the whole process group
        (the master leads its own session: start_new_session)"""
        if self.proc is None or self.proc.p.returncode is not None:
            return
        p = self.proc.p
        for sig, bound in ((signal.SIGQUIT, timeout), (signal.SIGTERM, 5)):
            if p.poll() is not None:
                break
            try:
                p.send_signal(sig)
                p.wait(bound)
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        try:
            os.killpg(p.pid, signal.SIGKILL)    # leftover workers, if any
        except OSError:
            pass
        if p.poll() is None:
            p.wait(10)
        self.proc.log.close()

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def url(self, path="/", port=None):
        return "http://%s:%d%s" % (LOOP, port or self.ports[0], path)

    def error_log_text(self):
        try:
            with open(self.error_log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def error_log_problems(self):
        return [l for l in self.error_log_text().splitlines()
                if PROBLEM_RE.search(l)]

    def access_log_lines(self):
        try:
            with open(self.access_log, "rb") as f:
                return f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []
