"""A scripted HTTP/1.1 upstream (keep-alive aware) for fault-injection tests.

    up = FakeUpstream([Resp(500), Resp(500)], default=Resp(204))
    up.start(); ... up.requests ... up.stop()

Responses are handed out in arrival order across all connections; after the
script is used up every request gets `default`.  Resp(hang=True) accepts the
request and never answers (until stop()).  A header value may be a callable,
evaluated when the response is sent (e.g. an HTTP-date relative to now).  Every request is recorded.
"""

import gzip
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Resp:
    def __init__(self, status=204, headers=None, body=b"", hang=False,
                 delay=0.0, gzip_if_accepted=False, cut=None):
        self.status = status
        # send only body[:cut] of the announced body, then close
        self.cut = cut
        self.headers = dict(headers or {})
        self.body = body.encode() if isinstance(body, str) else body
        self.hang = hang
        self.delay = delay
        # like VictoriaMetrics: gzip the body when the request accepts it
        self.gzip_if_accepted = gzip_if_accepted

    def __repr__(self):
        return "Resp(%s%s)" % (self.status, ", hang" if self.hang else "")


class Recorded:
    def __init__(self, method, path, headers, body, t, conn):
        self.method = method
        self.path = path
        self.headers = headers          # email.message.Message, case-insensitive
        self.body = body
        self.time = t                   # time.monotonic() at arrival (headers read)
        self.conn = conn                # client (addr, port): same value = same connection
        self.response = None

    def __repr__(self):
        return "<%s %s %d bytes at %.3f>" % (self.method, self.path,
                                             len(self.body), self.time)


class FakeUpstream:
    def __init__(self, script=(), default=None):
        self.script = list(script)
        self.default = default or Resp(204)
        self.requests = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._srv = None
        self._thread = None
        self.port = None

    # the handler calls this with the lock free
    def _next(self):
        with self._lock:
            if self.script:
                return self.script.pop(0)
            return self.default

    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _read_body(self):
                te = (self.headers.get("Transfer-Encoding") or "").lower()
                if "chunked" in te:
                    out = bytearray()
                    while True:
                        line = self.rfile.readline(1024)
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline(16)
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self):
                t = time.monotonic()
                body = self._read_body()
                rec = Recorded(self.command, self.path, self.headers, body, t,
                               self.client_address)
                resp = fake._next()
                rec.response = resp
                with fake._lock:
                    fake.requests.append(rec)
                if resp.hang:
                    fake._stopping.wait(120)
                    self.close_connection = True
                    return
                if resp.delay:
                    fake._stopping.wait(resp.delay)
                body = resp.body
                self.send_response(resp.status)
                for k, v in resp.headers.items():
                    self.send_header(k, v() if callable(v) else v)
                if resp.gzip_if_accepted and body and \
                        "gzip" in (self.headers.get("Accept-Encoding") or ""):
                    body = gzip.compress(body)
                    self.send_header("Content-Encoding", "gzip")
                if resp.status not in (204, 304) and not (100 <= resp.status < 200):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and resp.status not in (204, 304):
                    self.wfile.write(body if resp.cut is None
                                     else body[:resp.cut])
                if resp.cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

            do_POST = _handle
            do_GET = _handle
            do_PUT = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self._srv = Server(("127.0.0.1", 0), Handler)
        self.port = self._srv.server_address[1]
        self._thread = threading.Thread(target=self._srv.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        self._stopping.set()
        if self._srv:
            self._srv.shutdown()
            self._srv.server_close()
            self._thread.join(10)
            self._srv = None

    def wait_requests(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.02)
        with self._lock:
            return list(self.requests)

    def posts(self):
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]


def free_port():
    """a port nothing listens on right now (bound, then closed)"""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
