"""The bad-input matrix: every kind of client garbage against one nginx with
the module, at the write location, the status location and (when the module
has it) the exemplar query location.

Every case is its own test id.  Each one checks the documented answer (a
4xx with a message that says what is wrong, or success for input that is
valid), never a 5xx; then that the same workers still run (no crash) and
that the error log got no [alert], [emerg] or [crit] line.  Valid writes go
to a real Prometheus (and to a recording fake, which also shows that
refused input is never forwarded).  Query cases compare with what the real
Prometheus of the test's server set (3.5 or 2.42) answers to the same
request, except where promgate documents a deliberate difference.

One nginx serves the whole module (module-scoped fixture): the cases are
fast, and a crash in one shows up as changed worker pids in the next.
"""

import os
import re
import struct
import time

import pytest
import requests

import rw
from conftest import gateway_http
from fakeup import FakeUpstream, Resp, free_port
from procs import Nginx
from servers import prom_error_normal, prom_json_normal

N = "__name__"
V2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
PROBLEM_RE = re.compile(r"\[(alert|emerg|crit)\]")
MAX_DECODED = 16 << 20          # promgate_max_decoded_size of /api/v1/write
CAT = rw.uniq("mxcat")          # the metric with a backtracking-bait label


# ------------------------------------------------------------ the server

def has_exemplar_query(module_path):
    with open(module_path, "rb") as f:
        return b"promgate_exemplar_query" in f.read()


@pytest.fixture(scope="module")
def srv(nginx_bin, module_path, prom, tmp_path_factory):
    """one nginx for the module: /api/v1/write -> Prometheus + recorder,
    /small (64k bodies, 1m decoded), /file (bodies in temp files),
    /metrics, and /api/v1/query_exemplars when the module has it"""
    fake = FakeUpstream(default=Resp(204)).start()
    exq = has_exemplar_query(module_path)
    port = free_port()

    zone_http = "    promgate_exemplar_zone mx:4m max=1000;\n" if exq else ""
    write_extra = "promgate_exemplars mx;" if exq else ""
    server_extra = """
        location = /small {
            promgate_remote_write;
            promgate_forward /_rw/rec;
            client_max_body_size 64k;
            promgate_max_decoded_size 1m;
        }
        location = /file {
            promgate_remote_write;
            promgate_forward /_rw/rec;
            client_body_in_file_only on;
            client_max_body_size 32m;
        }
"""
    if exq:
        server_extra += """
        location = /api/v1/query_exemplars {
            promgate_exemplar_query mx;
            client_max_body_size 4m;
            client_body_buffer_size 4m;
        }
        location = /query_small {
            promgate_exemplar_query mx;
            client_max_body_size 16k;
        }
"""
    http = gateway_http(port, [("prom", prom.url), ("rec", fake.url)],
                        retries=1, backoff="20ms 100ms", retry_timeout="5s",
                        max_decoded="%dk" % (MAX_DECODED >> 10),
                        max_body="32m", http_extra=zone_http,
                        write_extra=write_extra + " client_body_buffer_size 32m;",
                        server_extra=server_extra)
    n = Nginx(nginx_bin, module_path, str(tmp_path_factory.mktemp("matrix")),
              http=http, workers=2)
    n.start()
    n.fake = fake
    n.prom = prom
    n.exq = exq
    n.pids = n.worker_pids()
    assert len(n.pids) == 2
    yield n
    n.stop()
    fake.stop()
    problems = n.error_log_problems()
    assert problems == [], "\n".join(problems)


class Case:
    """one request and what must come back.

    status: an int, a tuple of acceptable ints, or "prom" (the status, and
    for a 4xx the errorType and error text, Prometheus answers to the same
    request).  match: regexes the answer's body must match.  forwarded:
    True when the write must reach the targets, False when it must not,
    None when it depends on the storage (valid but extreme input)."""

    def __init__(self, cid, loc, method="POST", body=b"", headers=None,
                 drop=(), status=400, match=(), params=None, forwarded=False,
                 path=None, max_seconds=10.0, json=None, same_body=False,
                 known_bug=None):
        self.id = cid
        self.loc = loc
        self.method = method
        self.body = body
        self.headers = headers or {}
        self.drop = drop
        self.status = status
        self.match = match
        self.params = params
        self.forwarded = forwarded
        self.path = path
        self.max_seconds = max_seconds
        self.json = json
        self.same_body = same_body      # "prom": the 2xx body must be equal
        self.known_bug = known_bug      # reported, not fixed yet: xfail


# ------------------------------------------------------- write bodies

def now():
    return rw.now_ms()


def valid_raw(name=None, labels=None, samples=None):
    name = name or rw.uniq("mx")
    return rw.write_request([rw.series(name, labels or {"job": "matrix"},
                                       samples or [(1.0, now())])])


def valid():
    return rw.compress(valid_raw())


def bad_series(labels):
    """a valid series first, then the offending one (series 1)"""
    t = now()
    good = rw.raw_series([(N, rw.uniq("good")), ("job", "matrix")], [(1.0, t)])
    bad = rw.raw_series(labels, [(2.0, t)])
    return rw.compress(rw.raw_write_request([good, bad]))


def in_series(payload):
    """a series with __name__ and then `payload` (raw TimeSeries fields)"""
    return rw.compress(rw.pb_len(1, rw.pb_len(1, rw.raw_label(N, "m")) + payload))


def raw(b):
    return rw.compress(b)


def declared(n, tail=b"\x00" * 16):
    """a snappy block declaring n bytes uncompressed"""
    return rw.varint(n) + tail


def snappy_framed():
    """the framing (streaming) format, which remote write does not use: the
    stream identifier, then one compressed chunk (CRC left zero)"""
    block = rw.compress(valid_raw())
    return (b"\xff\x06\x00\x00sNaPpY" + b"\x00"
            + struct.pack("<I", len(block) + 4)[:3] + b"\x00" * 4 + block)


def bad_copy():
    """a copy element referring before the start of the output"""
    return rw.varint(8) + b"\x05\x10"


def gzip_body():
    import gzip
    return gzip.compress(valid_raw())


def many_labels(n):
    labels = {"l%05d" % i: "v" for i in range(n)}
    return rw.compress(valid_raw(labels=labels))


def huge_value(size):
    return rw.compress(valid_raw(labels={"blob": "x" * size}))


def special_values():
    t = now()
    name = rw.uniq("mxspecial")
    return rw.compress(rw.write_request([
        rw.series(name, {"k": "nan"}, [(float("nan"), t)]),
        rw.series(name, {"k": "pinf"}, [(float("inf"), t)]),
        rw.series(name, {"k": "ninf"}, [(float("-inf"), t)]),
        rw.series(name, {"k": "stale"}, [(1.0, t - 1000), (rw.STALE_NAN, t)]),
    ]))


def exemplar_only():
    t = now()
    return rw.compress(rw.write_request([
        rw.series(rw.uniq("mxex"), {"job": "matrix"},
                  exemplars=[({"trace_id": "abc123"}, 1.0, t)])]))


def metadata_only():
    return rw.compress(rw.write_request(
        [], [rw.metadata(rw.uniq("mxmeta"), "GAUGE", "help", "")]))


def repeated_series():
    t = now()
    name = rw.uniq("mxrep")
    return rw.compress(rw.write_request([
        rw.series(name, {"a": "b"}, [(1.0, t - 2000)]),
        rw.series(name, {"a": "b"}, [(2.0, t - 1000)]),
    ]))


def unknown_fields():
    """valid request with unknown fields in WriteRequest and TimeSeries
    (proto3: skipped); field 2 of WriteRequest is reserved, skipped too"""
    t = now()
    series = (rw.pb_len(1, rw.raw_label(N, rw.uniq("mxunk")))
              + rw.pb_len(1, rw.raw_label("job", "matrix"))
              + rw.pb_len(2, rw.raw_sample(1.0, t))
              + rw.varint(15 << 3) + rw.varint(7)               # field 15 varint
              + rw.pb_len(16, b"opaque"))                       # field 16 bytes
    return rw.compress(rw.varint(9 << 3 | 5) + b"\x00\x00\x00\x00"
                       + rw.pb_len(1, series) + rw.pb_len(2, b"reserved"))


def chunks(data, size=1000):
    for i in range(0, len(data), size):
        yield data[i:i + size]


# -------------------------------------------------------------- cases

W = "write"
CASES = [
    # methods
    Case("write-get", W, "GET", valid, status=405, match=("POST",)),
    Case("write-put", W, "PUT", valid, status=405, match=("POST",)),
    Case("write-delete", W, "DELETE", b"", status=405),
    Case("write-patch", W, "PATCH", valid, status=405),
    Case("write-options", W, "OPTIONS", b"", status=405),
    Case("write-head", W, "HEAD", b"", status=405),
    # headers
    Case("write-content-type-missing", W, drop=("Content-Type",), body=valid,
         status=415, match=("application/x-protobuf",)),
    Case("write-content-type-text", W, headers={"Content-Type": "text/plain"},
         body=valid, status=415, match=("application/x-protobuf",)),
    Case("write-content-type-bad-proto", W,
         headers={"Content-Type": "application/x-protobuf;proto=foo.Bar"},
         body=valid, status=415, match=("application/x-protobuf",)),
    Case("write-content-type-v2", W, headers={"Content-Type": V2}, body=valid,
         status=415, match=("2\\.0",)),
    Case("write-content-type-7k-unknown-param", W,
         headers={"Content-Type": "application/x-protobuf;" + "x" * 7000},
         body=valid, status=204, forwarded=True),
    Case("write-content-type-uppercase", W,
         headers={"Content-Type": "Application/X-Protobuf"}, body=valid,
         status=204, forwarded=True),
    Case("write-content-type-quoted-proto", W,
         headers={"Content-Type": 'application/x-protobuf; proto="prometheus.WriteRequest"'},
         body=valid, status=204, forwarded=True),
    Case("write-content-encoding-missing", W, drop=("Content-Encoding",),
         body=valid, status=415, match=("snappy",)),
    Case("write-content-encoding-gzip", W,
         headers={"Content-Encoding": "gzip"}, body=gzip_body, status=415,
         match=("snappy",)),
    Case("write-content-encoding-list", W,
         headers={"Content-Encoding": "snappy, gzip"}, body=valid,
         status=415, match=("snappy",)),
    Case("write-content-encoding-uppercase", W,
         headers={"Content-Encoding": "SNAPPY"}, body=valid, status=204,
         forwarded=True),
    # bodies: framing
    Case("write-empty-body", W, body=b"", status=400, match=("(?i)empty",)),
    Case("write-chunked-valid", W, body=lambda: chunks(valid()), status=204,
         forwarded=True),
    Case("write-body-in-temp-file", W, path="/file", body=valid, status=204,
         forwarded=True),
    Case("write-body-over-client-max", W, path="/small",
         body=lambda: os.urandom(70000), status=413),
    Case("write-declared-4GiB", W, body=lambda: declared(0xFFFFFFFF),
         status=413, match=("promgate_max_decoded_size",)),
    Case("write-declared-over-limit", W, body=lambda: declared(MAX_DECODED + 1),
         status=413, match=("promgate_max_decoded_size",)),
    Case("write-declared-varint-64bit", W,
         body=lambda: b"\xff" * 9 + b"\x01" + b"\x00" * 8, status=(400, 413)),
    Case("write-declared-zero-with-data", W, body=lambda: b"\x00garbage",
         status=400, match=("(?i)snappy",)),
    Case("write-declared-length-only", W, body=lambda: rw.varint(100),
         status=400, match=("(?i)snappy",)),
    Case("write-truncated-snappy", W, body=lambda: valid()[:-7], status=400,
         match=("(?i)snappy",)),
    Case("write-snappy-bad-copy", W, body=bad_copy, status=400,
         match=("(?i)snappy",)),
    Case("write-snappy-framed-format", W, body=snappy_framed, status=400,
         match=("(?i)snappy",)),
    Case("write-not-snappy", W, body=lambda: b"definitely not snappy" * 3,
         status=400, match=("(?i)snappy",)),
    Case("write-gzip-labelled-snappy", W, body=gzip_body, status=400,
         match=("(?i)snappy",)),
    # bodies: protobuf
    Case("write-garbage-protobuf", W,
         body=lambda: raw(bytes(range(7, 256)) * 4), status=400,
         match=("(?i)protobuf",)),
    Case("write-series-as-varint", W, body=lambda: raw(b"\x08\x01"),
         status=400, match=("(?i)protobuf",)),
    Case("write-label-as-varint", W,
         body=lambda: raw(rw.pb_len(1, b"\x08\x05")), status=400,
         match=("(?i)protobuf",)),
    Case("write-sample-value-as-varint", W,
         body=lambda: in_series(rw.pb_len(2, b"\x08\x01")), status=400,
         match=("(?i)protobuf",)),
    Case("write-timestamp-as-fixed64", W,
         body=lambda: in_series(rw.pb_len(2, b"\x11" + b"\x00" * 8)),
         status=400, match=("(?i)protobuf",)),
    Case("write-varint-11-bytes", W,
         body=lambda: raw(b"\x10" + b"\xff" * 10 + b"\x01"), status=400,
         match=("(?i)protobuf",)),
    Case("write-varint-overflow", W,
         body=lambda: in_series(rw.pb_len(2, b"\x10" + b"\xff" * 9 + b"\x7f")),
         status=400, match=("(?i)protobuf",)),
    Case("write-length-overrun", W,
         body=lambda: raw(b"\x0a\xff\xff\xff\xff\x0f" + b"abc"), status=400,
         match=("(?i)protobuf",)),
    Case("write-group-wire-type", W,
         body=lambda: raw(b"\x0b" + valid_raw() + b"\x0c"), status=400,
         match=("(?i)protobuf",)),
    Case("write-field-number-zero", W, body=lambda: raw(b"\x02\x00"),
         status=400, match=("(?i)protobuf",)),
    Case("write-truncated-protobuf", W, body=lambda: raw(valid_raw()[:-3]),
         status=400, match=("(?i)protobuf",)),
    Case("write-unknown-fields-skipped", W, body=unknown_fields, status=204,
         forwarded=True),
    # bodies: labels
    Case("write-no-name", W, body=lambda: bad_series([("job", "mx_noname")]),
         status=400, match=("mx_noname", "(?i)name")),
    Case("write-empty-name-value", W,
         body=lambda: bad_series([(N, ""), ("job", "mx_emptyname")]),
         status=400, match=("mx_emptyname", "(?i)name")),
    Case("write-unsorted-labels", W,
         body=lambda: bad_series([(N, "mx_unsorted"), ("b", "1"), ("a", "2")]),
         status=400, match=("mx_unsorted", "(?i)sort")),
    Case("write-duplicate-labels", W,
         body=lambda: bad_series([(N, "mx_dup"), ("a", "1"), ("a", "2")]),
         status=400, match=("mx_dup", "(?i)duplicate")),
    Case("write-empty-label-name", W,
         body=lambda: bad_series([("", "x"), (N, "mx_emptylabel")]),
         status=400, match=("(?i)label name",)),
    Case("write-label-name-dash", W,
         body=lambda: bad_series([(N, "mx_dash"), ("a-b", "v")]),
         status=400, match=("mx_dash", "(?i)label name", "a-b")),
    Case("write-label-name-utf8", W,
         body=lambda: bad_series([(N, "mx_uname"), ("\u00e9", "v")]),
         status=400, match=("mx_uname", "(?i)label name")),
    Case("write-value-invalid-utf8", W,
         body=lambda: bad_series([(N, "mx_utf8"), ("a", b"ok\xff\xfe")]),
         status=400, match=("mx_utf8", "(?i)utf-?8")),
    Case("write-name-invalid-utf8", W,
         body=lambda: bad_series([(N, "mx_nutf8"), (b"a\xff", "v")]),
         status=400, match=("(?i)utf-?8",)),
    Case("write-value-overlong-utf8", W,
         body=lambda: bad_series([(N, "mx_overlong"), ("a", b"\xc0\xaf")]),
         status=400, match=("mx_overlong", "(?i)utf-?8")),
    Case("write-value-surrogate", W,
         body=lambda: bad_series([(N, "mx_surr"), ("a", b"\xed\xa0\x80")]),
         status=400, match=("mx_surr", "(?i)utf-?8")),
    Case("write-value-above-10ffff", W,
         body=lambda: bad_series([(N, "mx_big"), ("a", b"\xf4\x90\x80\x80")]),
         status=400, match=("mx_big", "(?i)utf-?8")),
    Case("write-exemplar-label-invalid-utf8", W,
         body=lambda: in_series(rw.pb_len(3, rw.pb_len(1, rw.raw_label("t", b"\xff")))),
         status=400, match=("(?i)exemplar", "(?i)utf-?8")),
    Case("write-exemplar-label-bad-name", W,
         body=lambda: in_series(rw.pb_len(3, rw.pb_len(1, rw.raw_label("1t", "x")))),
         status=400, match=("(?i)exemplar", "(?i)label name")),
    Case("write-metadata-invalid-utf8", W,
         body=lambda: raw(rw.pb_len(3, rw.pb_len(4, b"help \xff"))),
         status=400, match=("(?i)metadata", "(?i)utf-?8")),
    # valid but extreme: promgate forwards, the storage decides (never 5xx)
    Case("write-10k-labels", W, body=lambda: many_labels(10000),
         status=(204, 400), forwarded=True),
    Case("write-1MB-label-value", W, body=lambda: huge_value(1 << 20),
         status=(204, 400), forwarded=True),
    # extreme timestamps are valid remote write: forwarded (to the recorder
    # only: a sample at int64 max would move the shared Prometheus' head
    # and make it refuse every later write as out of bounds)
    Case("write-timestamp-int64-max", W, path="/small",
         body=lambda: rw.compress(valid_raw(samples=[(1.0, (1 << 63) - 1)])),
         status=204, forwarded=True),
    Case("write-timestamp-int64-min", W, path="/small",
         body=lambda: rw.compress(valid_raw(samples=[(1.0, -(1 << 63))])),
         status=204, forwarded=True),
    Case("write-1MB-label-value-small-location", W, path="/small",
         body=lambda: huge_value(1 << 20), status=413),
    # valid: must be accepted
    Case("write-nan-inf-staleness", W, body=special_values, status=204,
         forwarded=True),
    Case("write-exemplar-only", W, body=exemplar_only, status=204,
         forwarded=True),
    Case("write-metadata-only", W, body=metadata_only, status=204,
         forwarded=True),
    Case("write-repeated-series", W, body=repeated_series, status=204,
         forwarded=True),
    Case("write-empty-request", W, body=lambda: rw.compress(b""), status=204,
         forwarded=True),
    Case("write-nul-in-label-value", W,
         body=lambda: rw.compress(valid_raw(labels={"a": "x\x00y"})),
         status=204, forwarded=True),
    Case("write-native-histogram", W,
         body=lambda: rw.compress(rw.write_request([rw.series(
             rw.uniq("mxh"), {"job": "matrix"},
             histograms=[rw.native_histogram(now())])])),
         status=204, forwarded=True),
    Case("write-histogram-wrong-wire-type", W,
         body=lambda: in_series(rw.pb_len(4, rw.pb_len(1, b"x"))),
         status=400, match=("(?i)protobuf",)),
    Case("write-exemplar-labels-over-128-runes", W,
         body=lambda: rw.compress(rw.write_request([rw.series(
             rw.uniq("mxlong"), {"job": "matrix"}, [(1.0, now())],
             exemplars=[({"trace_id": "t" * 200}, 1.0, now())])])),
         status=204, forwarded=True),
]

S = "status"
CASES += [
    Case("status-get", S, "GET", status=200, match=("promgate_write_requests_total",)),
    Case("status-head", S, "HEAD", status=200),
    Case("status-post", S, "POST", body=b"x=1", status=405),
    Case("status-put", S, "PUT", body=b"x", status=405),
    Case("status-delete", S, "DELETE", status=405),
    Case("status-junk-args", S, "GET", params="a=%zz&%00&=&&b=\xff", status=200),
    Case("status-long-args", S, "GET", params="a=" + "x" * 6000, status=200),
    Case("status-get-with-body", S, "GET", body=b"ignored" * 100, status=200),
]

Q = "query"
WRAPPED_MS = ("known deviation: for times beyond int64 milliseconds "
              "pg_time refuses the range (400) where Prometheus wraps the "
              "milliseconds and answers 200 with no data")
DEEP = "(" * 300 + "up" + ")" * 300
CASES += [
    Case("query-no-query", Q, "GET", params={}, status="prom"),
    Case("query-empty-query", Q, "GET", params={"query": ""}, status="prom"),
    Case("query-unterminated-string", Q, "GET",
         params={"query": 'up{job="abc'}, status="prom"),
    Case("query-unterminated-raw-string", Q, "GET",
         params={"query": "up{job=`abc"}, status="prom"),
    Case("query-unterminated-brace", Q, "GET", params={"query": "up{job=\"a\""},
         status="prom"),
    Case("query-invalid-escape", Q, "GET", params={"query": 'up{job="\\q"}'},
         status="prom"),
    Case("query-invalid-regex", Q, "GET", params={"query": 'up{job=~"(a"}'},
         status="prom"),
    Case("query-invalid-regex-repeat", Q, "GET",
         params={"query": 'up{job=~"a{1001}"}'}, status="prom"),
    Case("query-invalid-regex-class", Q, "GET",
         params={"query": 'up{job=~"[z-a]"}'}, status="prom"),
    Case("query-regex-perl-lookahead", Q, "GET",
         params={"query": 'up{job=~"a(?=b)"}'}, status="prom"),
    Case("query-catastrophic-regex-nested", Q, "GET",
         params={"query": '{__name__=~"%s.*", v=~"(a+)+b"}' % CAT},
         status="prom", same_body=True, max_seconds=5),
    Case("query-catastrophic-regex-nested-match", Q, "GET",
         params={"query": '{__name__=~"%s.*", v=~"(a+)+!"}' % CAT},
         status="prom", same_body=True, max_seconds=5),
    Case("query-catastrophic-regex-alt", Q, "GET",
         params={"query": '{__name__=~"%s.*", v=~"(a|aa)*b"}' % CAT},
         status="prom", same_body=True, max_seconds=5),
    Case("query-catastrophic-regex-dotstar", Q, "GET",
         params={"query": '{__name__=~"%s.*", v=~"(.*a){20}b"}' % CAT},
         status="prom", same_body=True, max_seconds=5),
    Case("query-catastrophic-negated", Q, "GET",
         params={"query": '{__name__=~"%s.*", v!~"(a*)*b"}' % CAT},
         status="prom", same_body=True, max_seconds=5),
    Case("query-regex-repeat-1000", Q, "GET",
         params={"query": '{__name__=~"%s.*", v=~"(a{1000}){1000}"}' % CAT},
         status="prom", max_seconds=5),
    Case("query-matches-everything", Q, "GET", params={"query": '{job=~".*"}'},
         status="prom"),
    Case("query-no-selector", Q, "GET", params={"query": "vector(1)"},
         status=204),
    Case("query-unknown-function", Q, "GET", params={"query": "nosuch(up)"},
         status="prom"),
    Case("query-invalid-utf8", Q, "GET", params="query=up%7Bjob%3D%22%FF%22%7D",
         status="prom"),
    Case("query-nul-byte", Q, "GET", params="query=up%00", status="prom"),
    Case("query-bad-percent-escape", Q, "GET", params="query=%zz&query=up",
         status="prom"),
    Case("query-nesting-300", Q, "GET", params={"query": DEEP}, status=400,
         match=('"errorType":"bad_data"',)),
    Case("query-long-6k", Q, "GET",
         params={"query": " or ".join(["up%d" % i for i in range(900)])},
         status="prom"),
    Case("query-start-not-a-time", Q, "GET",
         params={"query": "up", "start": "yesterday"}, status="prom"),
    Case("query-end-before-start", Q, "GET",
         params={"query": "up", "start": "200", "end": "100"}, status="prom"),
    Case("query-start-1e300", Q, "GET",
         params={"query": "up", "start": "-1e300", "end": "1e300"}, status="prom"),
    Case("query-start-inf", Q, "GET",
         params={"query": "up", "start": "-Inf", "end": "+Inf"}, status="prom"),
    Case("query-start-nan", Q, "GET",
         params={"query": "up", "start": "NaN"}, status="prom"),
    Case("query-year-292277026", Q, "GET",
         params={"query": "up", "end": "292277026-01-01T00:00:00Z"},
         status="prom"),
    Case("query-min-max-time", Q, "GET",
         params={"query": "up", "start": "-292273086-05-16T16:47:06Z",
                 "end": "292277025-08-18T07:12:54.999999999Z"}, status="prom"),
    Case("query-time-int64-seconds", Q, "GET",
         params={"query": "up", "start": "9223372036854775807"}, status="prom"),
    # times whose ms do not fit int64: Prometheus compares the times, then
    # wraps the ms (Go), and answers 200 with no data
    Case("query-end-ms-overflows", Q, "GET",
         params={"query": "up", "start": "170000000", "end": "17000060e9"},
         status="prom", known_bug=WRAPPED_MS),
    Case("query-start-ms-overflows", Q, "GET",
         params={"query": "up", "start": "-17000060e9", "end": "1"},
         status="prom", known_bug=WRAPPED_MS),
    Case("query-february-30", Q, "GET",
         params={"query": "up", "start": "2023-02-30T00:00:00Z"}, status="prom"),
    Case("query-put", Q, "PUT", body=b"query=up", status=405),
    Case("query-delete", Q, "DELETE", status=405),
    Case("query-post-form", Q, "POST", body=b"query=up&start=1&end=2",
         headers={"Content-Type": "application/x-www-form-urlencoded"},
         status="prom"),
    Case("query-post-form-garbage", Q, "POST", body=bytes(range(256)) * 8,
         headers={"Content-Type": "application/x-www-form-urlencoded"},
         status="prom"),
    Case("query-json-valid", Q, "POST",
         json=b'{"query":"up","start":"1","end":"2"}', status=200),
    Case("query-json-malformed", Q, "POST", json=b'{"query":"up",', status=400,
         match=('"errorType":"bad_data"', "(?i)json")),
    Case("query-json-not-object", Q, "POST", json=b'["up"]', status=400,
         match=('"errorType":"bad_data"',)),
    Case("query-json-deep", Q, "POST",
         json=b'{"x":' + b"[" * 5000 + b"]" * 5000 + b',"query":"up"}',
         status=400, match=('"errorType":"bad_data"',)),
    Case("query-json-unterminated-string", Q, "POST",
         json=b'{"query":"up{job=\\"a', status=400,
         match=('"errorType":"bad_data"',)),
    Case("query-json-bad-unicode-escape", Q, "POST",
         json=b'{"query":"\\ud800\\uZZZZ"}', status=400,
         match=('"errorType":"bad_data"',)),
    Case("query-json-oversized-2MB", Q, "POST",
         json=b'{"query":"up","pad":"' + b"x" * (2 << 20) + b'"}', status=400,
         match=('"errorType":"bad_data"', "(?i)larger")),
    Case("query-json-over-client-max", Q, "POST", path="/query_small",
         json=b'{"query":"up","pad":"' + b"x" * (64 << 10) + b'"}', status=413),
    Case("query-json-numbers", Q, "POST",
         json=b'{"query":"up","start":-1e999,"end":1e999}', status=(200, 400)),
]


# ------------------------------------------------------------ helpers

def log_size(srv):
    try:
        return os.path.getsize(srv.error_log)
    except OSError:
        return 0


def log_problems_since(srv, offset):
    with open(srv.error_log, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return [l for l in text.splitlines() if PROBLEM_RE.search(l)]


def url_for(srv, case):
    if case.path:
        return srv.url(case.path)
    return srv.url({W: "/api/v1/write", S: "/metrics",
                    Q: "/api/v1/query_exemplars"}[case.loc])


def send(url, case):
    body = case.body() if callable(case.body) else case.body
    if case.loc == W:
        h = dict(rw.RW_HEADERS)
    else:
        h = {}
    if case.json is not None:
        body = case.json
        h["Content-Type"] = "application/json"
    h.update(case.headers)
    for k in case.drop:
        h.pop(k, None)
    return requests.request(case.method, url, data=body, headers=h,
                            params=case.params, timeout=60)


def prom_answer(srv, case):
    return send(srv.prom.url + "/api/v1/query_exemplars", case)


def error_of(r):
    try:
        j = r.json()
    except ValueError:
        return None
    return j.get("errorType"), j.get("error")


def normal_error(r):
    e = error_of(r)
    return e and (e[0], prom_error_normal(e[1]))


# ----------------------------------------------------------- the data

@pytest.fixture(scope="module")
def cat_data(srv):
    """a series whose label value invites catastrophic backtracking, with an
    exemplar, in promgate's exemplar store and in Prometheus"""
    if not srv.exq:
        return
    t = now()
    body = rw.compress(rw.write_request([
        rw.series(CAT + "_total", {"v": "a" * 3000 + "!"}, [(1.0, t)],
                  exemplars=[({"trace_id": "cat"}, 1.0, t)])]))
    r = rw.post(srv.url("/api/v1/write"), body)
    assert r.status_code == 204, r.text


# ------------------------------------------------------------- tests

def params():
    for c in CASES:
        marks = [pytest.mark.xfail(reason=c.known_bug, strict=True)] \
            if c.known_bug else []
        yield pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("case", params())
def test_bad_input(srv, cat_data, case):
    if case.loc == Q and not srv.exq:
        pytest.skip("module has no promgate_exemplar_query yet")

    before_posts = len(srv.fake.posts())
    offset = log_size(srv)

    t0 = time.monotonic()
    r = send(url_for(srv, case), case)
    elapsed = time.monotonic() - t0

    what = "%s %s -> %d %r" % (case.method, case.id, r.status_code, r.text[:300])
    assert r.status_code < 500, "5xx: " + what
    assert elapsed < case.max_seconds, "took %.1fs: %s" % (elapsed, what)

    if case.status == "prom":
        p = prom_answer(srv, case)
        assert r.status_code == p.status_code, \
            "%s; Prometheus answers %d %r" % (what, p.status_code, p.text[:300])
        # the same error, in the wording of either Prometheus version
        # (servers.prom_error_normal: 2.42 and 3.5 word a few differently)
        if 400 <= p.status_code < 500:
            assert normal_error(r) == normal_error(p), \
                "%s; Prometheus: %r" % (what, p.text[:300])
        if case.same_body:
            assert prom_json_normal(r.text) == prom_json_normal(p.text), \
                "%s; Prometheus: %r" % (what, p.text[:300])
    elif isinstance(case.status, tuple):
        assert r.status_code in case.status, what
    else:
        assert r.status_code == case.status, what

    for pat in case.match:
        assert re.search(pat, r.text), (pat, what)

    if case.loc == W and r.status_code == 405:
        assert "POST" in r.headers.get("Allow", ""), r.headers

    if case.loc == W and case.forwarded is not None:
        posts = srv.fake.wait_requests(before_posts + 1, timeout=5) \
            if case.forwarded else srv.fake.posts()
        posts = [p for p in posts if p.method == "POST"]
        if case.forwarded:
            assert len(posts) == before_posts + 1, "valid write not forwarded"
        else:
            assert len(posts) == before_posts, "refused write was forwarded"

    # no crash, nothing alarming in the log
    assert srv.worker_pids() == srv.pids, "worker pids changed: a crash?"
    assert log_problems_since(srv, offset) == []

    if os.environ.get("MATRIX_REPORT"):
        with open(os.environ["MATRIX_REPORT"], "a") as f:
            f.write("%-44s %d %6.3fs %s\n" % (case.id, r.status_code, elapsed,
                                             r.text[:110].replace("\n", " ")))


def test_still_serving_after_the_matrix(srv):
    """after everything above: same workers, a valid write stored, the
    status page adds up"""
    r = rw.post(srv.url("/api/v1/write"), valid())
    assert r.status_code == 204, r.text
    assert srv.worker_pids() == srv.pids
    m = requests.get(srv.url("/metrics"), timeout=10)
    assert m.status_code == 200
    assert re.search(r'promgate_write_requests_total\{code="400"\} [1-9]', m.text), \
        m.text[:2000]
    assert 'code="5' not in "".join(
        l for l in m.text.splitlines()
        if l.startswith("promgate_write_requests_total")), m.text[:2000]
