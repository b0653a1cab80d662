"""Load and bookkeeping for the fault tests (test_fault_load.py).

    up = RecordingUpstream().start()        # a storage that counts samples
    up.mode = "fail" | "flap" | "ok"; up.hang(); up.unhang()
    up.down(); up.up()                      # the same port again

    load = Load(gw.write_url, name, threads=3).start()
    ...; load.stop()
    load.sent, load.acked                   # sets of sample keys

A sample is identified by its series (labels, sorted) and its timestamp:
every sample the load sends is unique.  A RecordingUpstream decodes every
body it answers 2xx *before* answering, so "stored" there is exact: nginx
can only have seen a 2xx for data that is in `stored`.
"""

import collections
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

import rw
from fakeup import free_port


def key_of(labels, ts):
    """labels: iterable of (name, value)"""
    return (tuple(sorted(labels)), int(ts))


def keys_of_body(body):
    """(sample keys, exemplar keys) of a snappy remote-write body"""
    wr = rw.decode_request(body)
    samples, exemplars = [], []
    for s in wr.timeseries:
        labels = tuple(sorted((l.name, l.value) for l in s.labels))
        samples += [(labels, int(x.timestamp)) for x in s.samples]
        exemplars += [(labels, int(x.timestamp)) for x in s.exemplars]
    return samples, exemplars


def keys_of_samples(samples):
    """sample keys of a procs samples dict {frozenset(labels): [(ts, v)]}"""
    out = set()
    for labels, vals in samples.items():
        lab = tuple(sorted(labels))
        out.update((lab, int(t)) for t, _ in vals)
    return out


# ------------------------------------------------------------ the storage

class RecordingUpstream:
    """a remote-write endpoint on a fixed loopback port.

    mode "ok": 204; "fail": 503; "flap": 503 and 204 in alternating
    phases of `flap_period` seconds (starting with 204); every answer
    after `delay` seconds (a slow storage).  hang(): requests
    are read and never answered until unhang() (or stop()), then the
    connection is closed without an answer.  down() closes the listener
    and every open connection (nginx's keep-alive ones too); up() listens
    on the same port again."""

    def __init__(self, port=None, mode="ok", flap_period=0.7, delay=0.0):
        self.port = port or free_port()
        self.mode = mode
        self.delay = delay              # seconds before each answer
        self.flap_period = flap_period
        self.stored = set()             # sample keys answered 2xx
        self.exemplars = set()
        self.status = collections.Counter()
        self.hung = 0
        self.lock = threading.Lock()
        self._conns = set()
        self._release = threading.Event()
        self._hanging = False
        self._t0 = time.monotonic()
        self._srv = None
        self._thread = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _decide(self):
        if self._hanging:
            return None
        if self.mode == "fail":
            return 503
        if self.mode == "flap":
            phase = int((time.monotonic() - self._t0) / self.flap_period)
            return 204 if phase % 2 == 0 else 503
        return 204

    def hang(self):
        with self.lock:
            self._release = threading.Event()
            self._hanging = True

    def unhang(self):
        with self.lock:
            self._hanging = False
            self._release.set()

    def start(self):
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _body(self):
                te = (self.headers.get("Transfer-Encoding") or "").lower()
                if "chunked" in te:
                    out = bytearray()
                    for _ in range(100000):
                        line = self.rfile.readline(1024)
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        out += self.rfile.read(size)
                        self.rfile.readline(16)
                    return bytes(out)
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def do_POST(self):
                body = self._body()
                with rec.lock:
                    status = rec._decide()
                    release = rec._release
                if status is None:
                    with rec.lock:
                        rec.hung += 1
                    release.wait(300)
                    self.close_connection = True
                    return
                if rec.delay:
                    time.sleep(rec.delay)
                if 200 <= status < 300:
                    try:
                        samples, exemplars = keys_of_body(body)
                    except Exception:           # not ours: refuse it
                        status = 400
                    else:
                        with rec.lock:
                            rec.stored.update(samples)
                            rec.exemplars.update(exemplars)
                with rec.lock:
                    rec.status[status] += 1
                self.send_response(status)
                if status != 204:
                    self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_POST

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True
            request_queue_size = 256

            def process_request(self, request, addr):
                with rec.lock:
                    rec._conns.add(request)
                super().process_request(request, addr)

            def shutdown_request(self, request):
                with rec.lock:
                    rec._conns.discard(request)
                super().shutdown_request(request)

        last = None
        for _ in range(50):             # the port may linger a moment
            try:
                self._srv = Server(("127.0.0.1", self.port), Handler)
                break
            except OSError as e:
                last = e
                time.sleep(0.1)
        else:
            raise RuntimeError("cannot listen on 127.0.0.1:%d again: %s"
                               % (self.port, last))
        self._thread = threading.Thread(target=self._srv.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """closes the listener and every connection; hung requests end"""
        if self._srv is None:
            return
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(10)
        self._srv = None
        with self.lock:
            conns = list(self._conns)
            self._release.set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    down = stop

    def up(self):
        return self.start()

    def snapshot(self):
        with self.lock:
            return set(self.stored)


# ------------------------------------------------------------------ load

class Load:
    """`threads` senders, each with a keep-alive session, posting unique
    samples for `duration` seconds (at most `max_requests` each).  Like
    Prometheus, a sender retries a request until it is answered 204 (after
    `retry_pause`), on 5xx and connection errors; it moves on only when
    the load ends.  Each request: `series` series (labels s=<sender>,
    k=<index>) with `samples` samples each; with `exemplars`, the k=0
    series carries one exemplar per request."""

    def __init__(self, url, name, threads=3, series=4, samples=2,
                 exemplars=False, duration=5.0, max_requests=100000,
                 timeout=30, retry_pause=0.05, base_ms=None):
        self.url = url
        self.name = name
        self.nthreads = threads
        self.series = series
        self.samples = samples
        self.with_exemplars = exemplars
        self.duration = duration
        self.max_requests = max_requests
        self.timeout = timeout
        self.retry_pause = retry_pause
        self.base = base_ms if base_ms is not None else rw.now_ms() - 300000
        self.sent = set()
        self.acked = set()
        self.sent_exemplars = set()
        self.acked_exemplars = set()
        self.requests = 0               # distinct request bodies
        self.attempts = 0               # POSTs made
        self.codes = collections.Counter()
        self.events = []        # (answered, code, sent) of every POST
        self.rejected = []              # (code, text) of 4xx answers
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self.t_start = None

    def build(self, sender, seq):
        ss, keys, exkeys = [], [], []
        t0 = self.base + seq * self.samples
        for k in range(self.series):
            labels = {"s": str(sender), "k": str(k)}
            lab = tuple(sorted([("__name__", self.name)] + list(labels.items())))
            samples = [(float(seq) + i / 10.0, t0 + i) for i in range(self.samples)]
            ex = []
            if self.with_exemplars and k == 0:
                ex = [({"trace_id": "%d-%d" % (sender, seq)}, float(seq), t0)]
                exkeys.append((lab, t0))
            ss.append(rw.series(self.name, labels, samples, exemplars=ex))
            keys += [(lab, t) for _, t in samples]
        return rw.compress(rw.write_request(ss)), keys, exkeys

    def _run(self, sender):
        sess = requests.Session()
        deadline = self.t_start + self.duration
        seq = 0
        while (not self._stop.is_set() and time.monotonic() < deadline
               and seq < self.max_requests):
            body, keys, exkeys = self.build(sender, seq)
            with self.lock:
                self.sent.update(keys)
                self.sent_exemplars.update(exkeys)
                self.requests += 1
            while True:
                t_sent = time.monotonic()
                try:
                    r = rw.post(self.url, body, session=sess,
                                timeout=self.timeout)
                    code = r.status_code
                    text = r.text
                except requests.RequestException as e:
                    code, text = "error", type(e).__name__
                    sess.close()
                    sess = requests.Session()
                with self.lock:
                    self.attempts += 1
                    self.codes[code] += 1
                    self.events.append((time.monotonic(), code, t_sent))
                    if code == 204:
                        self.acked.update(keys)
                        self.acked_exemplars.update(exkeys)
                    elif isinstance(code, int) and 400 <= code < 500:
                        self.rejected.append((code, text[:300]))
                if code == 204 or (isinstance(code, int) and 400 <= code < 500):
                    break               # stored, or dropped as bad data
                if self._stop.is_set() or time.monotonic() >= deadline:
                    break               # the load ends: left unacknowledged
                time.sleep(self.retry_pause)
            seq += 1
        sess.close()

    def start(self):
        self.t_start = time.monotonic()
        for i in range(self.nthreads):
            th = threading.Thread(target=self._run, args=(i,), daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self, timeout=None):
        self._stop.set()
        self.join(timeout)

    def join(self, timeout=None):
        bound = timeout if timeout is not None else self.timeout + 30
        deadline = time.monotonic() + bound
        for th in self._threads:
            th.join(max(0.1, deadline - time.monotonic()))
        alive = [th for th in self._threads if th.is_alive()]
        if alive:
            raise RuntimeError("%d sender thread(s) still running" % len(alive))

    def wait(self):
        """until the duration ends (the threads stop by themselves)"""
        self.join(self.duration + self.timeout + 30)

    def codes_between(self, t0, t1, whole=False):
        """codes of the attempts answered in [t0, t1); with whole, only
        of those also sent at or after t0 (their whole life in the window:
        an answer is not late news of an earlier state)"""
        with self.lock:
            return collections.Counter(
                c for t, c, ts in self.events
                if t0 <= t < t1 and (not whole or ts >= t0))

    def acked_count(self):
        with self.lock:
            return len(self.acked)
