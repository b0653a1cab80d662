"""A gate in front of a storage's remote-write endpoint, for the Kafka tests:
open, it forwards each write to the storage and returns its answer; closed,
it answers 503.  A write whose decoded body holds a `reject` marker is
answered 400, one holding a `hold` marker 503 (a storage refusing one
message, or failing for one partition).

    g = Gate(prom.url).start(); g.closed = True; ...; g.stop()
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
import snappy


class Gate:
    def __init__(self, storage_url):
        self.storage = storage_url.rstrip("/") + "/api/v1/write"
        self.closed = False
        self.reject = None          # bytes: 400 for bodies holding it
        self.hold = None            # bytes: 503 for bodies holding it
        self.attempts = 0
        self.forwarded = 0
        self.refused = 0
        self.lock = threading.Lock()
        self._srv = None

    def _decide(self, body):
        try:
            raw = snappy.uncompress(body)
        except Exception:
            raw = b""
        if self.closed or (self.hold and self.hold in raw):
            return 503, b"gate closed\n"
        if self.reject and self.reject in raw:
            return 400, b"gate: rejected sample\n"
        return None, None

    def start(self):
        gate = self
        sess = requests.Session()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with gate.lock:
                    gate.attempts += 1
                status, text = gate._decide(body)
                if status is None:
                    h = {k: self.headers[k] for k in
                         ("Content-Encoding", "Content-Type",
                          "X-Prometheus-Remote-Write-Version")
                         if self.headers.get(k)}
                    try:
                        r = sess.post(gate.storage, data=body, headers=h,
                                      timeout=30)
                        status, text = r.status_code, r.content
                    except requests.RequestException as e:
                        status, text = 502, str(e).encode()
                    with gate.lock:
                        if 200 <= status < 300:
                            gate.forwarded += 1
                else:
                    with gate.lock:
                        gate.refused += 1
                self.send_response(status)
                if status != 204:
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                if status != 204:
                    self.wfile.write(text)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._srv = Server(("127.0.0.1", 0), Handler)
        self.port = self._srv.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self._srv.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._srv:
            self._srv.shutdown()
            self._srv.server_close()
            self._thread.join(10)
            self._srv = None
