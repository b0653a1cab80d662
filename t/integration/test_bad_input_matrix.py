"""The bad-input matrix: every kind of client garbage against one nginx with
the module, at the write location, the status location and the exemplar
query location.

Every case is its own test id.  Each one checks the documented answer (a
4xx with a message that says what is wrong, or success for input that is
valid), never a 5xx; then that the same workers still run (no crash) and
that the error log got no [alert], [emerg] or [crit] line.  Valid writes go
to a real Prometheus (and to a recording fake, which also shows that
refused input is never forwarded).

Writes follow Prometheus 3.5's validity rules: UTF-8 and unsorted label
names are valid, a series without a name, with an empty label name, with
invalid UTF-8 or with a label name twice is invalid (and in 2.0, bad symbol
references).  At /api/v1/write (promgate_invalid_series drop, the default)
an invalid series is left out, the rest forwarded and answered 204: those
cases check both the recorder and Prometheus for exactly the valid series.
/reject (promgate_invalid_series reject) answers the same bodies 400,
naming the series.  Request-level garbage is 400, 413 or 415 everywhere.
Remote write 2.0 cases are sent with the 2.0 Content-Type (rw2.py builds
them); a 2.0 answer carries the X-Prometheus-Remote-Write-*-Written
headers, a 1.0 answer none.

Query cases compare with what the real Prometheus of the test's server set
answers to the same request (status "prom"): promgate answers as
Prometheus 3.5 does, so against the current set (3.5) status, errorType
and error text must be equal, and the body too where same_body says so.
Against the debian12 set (2.42) the status and errorType are compared, and
the text too except for the cases where 2.42 words it differently
(TEXT_242_DIFFERS, with the reason for each).

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
import rw2
from conftest import gateway_http
from fakeup import FakeUpstream, Resp, free_port
from procs import Nginx

N = "__name__"
W = "write"                     # /api/v1/write, invalid series dropped
R = "reject"                    # /reject, promgate_invalid_series reject
V2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
PROBLEM_RE = re.compile(r"\[(alert|emerg|crit)\]")
MAX_DECODED = 16 << 20          # promgate_max_decoded_size of /api/v1/write
CAT = rw.uniq("mxcat")          # the metric with a backtracking-bait label


# ------------------------------------------------------------ the server

@pytest.fixture(scope="module")
def srv(nginx_bin, module_path, prom, serverset, tmp_path_factory):
    """one nginx for the module: /api/v1/write -> Prometheus + recorder,
    /reject (promgate_invalid_series reject, recorder only), /small (64k
    bodies, 1m decoded), /file (bodies in temp files), /metrics and
    /api/v1/query_exemplars"""
    fake = FakeUpstream(default=Resp(204)).start()
    port = free_port()

    zone_http = "    promgate_exemplar_zone mx:4m max=1000;\n"
    write_extra = "promgate_exemplars mx;"
    server_extra = """
        location = /reject {
            promgate_remote_write;
            promgate_forward /_rw/rec;
            promgate_invalid_series reject;
            client_max_body_size 32m;
        }
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
    n.ss = serverset
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
    None when it depends on the storage (valid but extreme input).
    check(srv, case, answer, posts): further assertions (posts: the
    recorder's new POSTs).  ctx: what a body builder remembers for check
    (the names it made up).  known_bug: (reason, applies(serverset)) for a
    defect reported but not fixed yet: a strict xfail where it applies."""

    def __init__(self, cid, loc, method="POST", body=b"", headers=None,
                 drop=(), status=400, match=(), params=None, forwarded=False,
                 path=None, max_seconds=10.0, json=None, same_body=False,
                 known_bug=None, check=None, ctx=None, v2=False):
        self.id = cid
        self.loc = loc
        self.method = method
        self.body = body
        self.headers = dict(rw2.V2_HEADERS) if v2 else {}
        self.headers.update(headers or {})
        self.drop = drop
        self.status = status
        self.match = match
        self.params = params
        self.forwarded = forwarded
        self.path = path
        self.max_seconds = max_seconds
        self.json = json
        self.same_body = same_body      # "prom": the 2xx body must be equal
        self.known_bug = known_bug
        self.check = check
        self.ctx = ctx if ctx is not None else {}
        self.v2 = v2


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


def empty_exemplars(n, nseries=1):
    """nseries series with a sample and n exemplars without labels each"""
    t = now()
    out = b""
    for _ in range(nseries):
        out += rw.pb_len(1, rw.pb_len(1, rw.raw_label(N, rw.uniq("mxex")))
                         + rw.pb_len(2, rw.raw_sample(1.0, t))
                         + b"\x1a\x00" * n)
    return rw.compress(out)


def exemplar_labels(n, size=1):
    """one series with an exemplar of n labels, the values size bytes"""
    t = now()
    ex = [("e%04d" % i, "x" * size) for i in range(n)]
    return rw.compress(rw2.v1_request([rw2.v1_series(
        [(N, rw.uniq("mxexl"))], [(1.0, t)], [(ex, 1.0, t)])]))


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


# ---------------------------------- an invalid series next to a valid one

def mixed(bad_labels, exemplar_labels=None):
    """(body builder, ctx): a valid series "good" first, then one with
    bad_labels ((name, value) pairs, str or bytes, verbatim), where "TAG"
    stands for a unique value that finds it in Prometheus.  With
    exemplar_labels the bad series has no fault of its own but carries an
    exemplar with those labels."""
    ctx = {}

    def body():
        t = now()
        ctx["good"] = rw.uniq("mxgood")
        ctx["tag"] = rw.uniq("mxtag")
        labels = [(n, v.replace("TAG", ctx["tag"]) if isinstance(v, str) else v)
                  for n, v in bad_labels]
        good = rw.raw_series([(N, ctx["good"]), ("job", "matrix")], [(1.0, t)])
        if exemplar_labels is None:
            bad = rw.raw_series(labels, [(2.0, t)])
        else:
            bad = rw2.v1_series(labels, samples=[(2.0, t)],
                                exemplars=[(exemplar_labels, 1.0, t)])
        return rw.compress(rw.raw_write_request([good, bad]))

    return body, ctx


def mixed_v2(build_bad):
    """(body builder, ctx) for 2.0: a valid series "good", then the series
    build_bad(builder, tag) adds (it may corrupt refs)"""
    ctx = {}

    def body():
        t = now()
        ctx["good"] = rw.uniq("mxgood")
        ctx["tag"] = rw.uniq("mxtag")
        b = rw2.V2Builder()
        b.series({N: ctx["good"], "job": "matrix"}, samples=[(1.0, t)])
        build_bad(b, ctx["tag"], t)
        return rw2.snappy.compress(b.encode())

    return body, ctx


def recorded_series(post):
    """[{name: value}] of a forwarded 1.0 request, read field by field (an
    exemplar label that is not UTF-8 is forwarded as sent, and would stop
    the generated protobuf classes)"""
    out = []
    for f, _, v in rw2.parse_fields(rw2.snappy.uncompress(post.body)):
        if f != 1:
            continue
        labels = {}
        for ff, _, vv in rw2.parse_fields(v):
            if ff == 1:
                lab = dict((k, x) for k, _, x in rw2.parse_fields(vv))
                labels[lab.get(1, b"").decode("utf-8", "replace")] = \
                    lab.get(2, b"").decode("utf-8", "replace")
        out.append(labels)
    return out


def in_prometheus(srv, selector):
    t = time.time()
    return srv.prom.series(selector, t - 3600, t + 60)


def invalid_counter(srv, reason):
    m = requests.get(srv.url("/metrics"), timeout=10).text
    found = re.search(r'promgate_invalid_series_total\{reason="%s"\} (\d+)'
                      % reason, m)
    assert found, m[:3000]
    return int(found.group(1))


def only_good(tag_selector=None, reason=None):
    """check: the recorder and Prometheus got the valid series and not the
    invalid one; the invalid one is counted under reason"""

    def check(srv, case, r, posts):
        good = case.ctx["good"]
        assert len(posts) == 1, posts
        got = recorded_series(posts[0])
        assert [x.get(N) for x in got] == [good], got
        assert in_prometheus(srv, '{__name__="%s"}' % good)
        if tag_selector:
            sel = tag_selector.replace("TAG", case.ctx["tag"])
            assert not in_prometheus(srv, sel), sel
        if reason:
            assert invalid_counter(srv, reason) >= 1
        assert "X-Prometheus-Remote-Write-Samples-Written" not in r.headers \
            or case.v2

    return check


def both(tag_selector, stored=()):
    """check: both series (the second one valid under 3.5's rules) reach
    the recorder, as sent, and Prometheus (found by tag_selector, in the
    syntax 2.42 reads too; stored: labels it must have there)"""

    def check(srv, case, r, posts):
        good = case.ctx["good"]
        assert len(posts) == 1, posts
        got = recorded_series(posts[0])
        assert len(got) == 2 and got[0][N] == good, got
        assert in_prometheus(srv, '{__name__="%s"}' % good)
        sel = tag_selector.replace("TAG", case.ctx["tag"])
        found = in_prometheus(srv, sel)
        assert len(found) == 1, (sel, found)
        for pair in stored:
            assert pair in next(iter(found)), (pair, found)

    return check


def answer_names(*words):
    """check for a refusal: the answer names the invalid series' tag"""

    def check(srv, case, r, posts):
        assert case.ctx["tag"] in r.text, r.text[:500]
        for w in words:
            assert re.search(w, r.text), (w, r.text[:500])

    return check


def written(samples, exemplars=None):
    """check for a 2.0 answer: its Written headers"""

    def check(srv, case, r, posts):
        w = rw2.written(r)
        assert w["samples"] == samples, (w, dict(r.headers))
        assert w["histograms"] == 0, w
        if exemplars is not None:
            assert w["exemplars"] == exemplars, w

    return check


def checks(*fns):
    def check(srv, case, r, posts):
        for f in fns:
            f(srv, case, r, posts)
    return check


def v2_raw(symbols, series):
    return rw2.snappy.compress(rw2.v2_request(symbols, series))


def v2_huge_symbols(n):
    """a valid 2.0 request whose symbol table has n entries, most unused"""
    t = now()
    name = rw.uniq("mxsyms")
    syms = ["", N, name, "job", "matrix"] + ["s%07d" % i for i in range(n)]
    return v2_raw(syms, [rw2.v2_series([1, 2, 3, 4], samples=[(1.0, t)])])


def v2_empty_exemplars(n):
    t = now()
    return v2_raw(["", N, rw.uniq("mxv2x")],
                  [rw2.v2_series([1, 2], samples=[(1.0, t)])
                   + b"\x22\x00" * n])


def v2_many_labels(n):
    """a series of __name__ and n more labels"""
    t = now()
    syms = ["", N, rw.uniq("mxv2l"), "v"] + ["l%05d" % i for i in range(n)]
    refs = [1, 2] + [r for i in range(n) for r in (4 + i, 3)]
    return v2_raw(syms, [rw2.v2_series(refs, samples=[(1.0, t)])])


def v2_body_as_v1():
    """a valid 2.0 request sent with the 1.0 Content-Type"""
    b = rw2.V2Builder()
    b.series({N: rw.uniq("mxv2as1"), "job": "matrix"}, samples=[(1.0, now())])
    return rw2.snappy.compress(b.encode())


def v1_empty_answer(srv, case, r, posts):
    """a 1.0 answer: no Written headers; nothing stored"""
    assert "X-Prometheus-Remote-Write-Samples-Written" not in r.headers, \
        dict(r.headers)
    for p in posts:
        assert recorded_series(p) == [], p


def recorder_has(n):
    def check(srv, case, r, posts):
        assert len(posts) == 1, posts
        got = recorded_series(posts[0])
        assert len(got) == n, got
    return check


def zone_has_exemplar(expected):
    """check: whether the tagged series' exemplar was captured in the
    exemplar zone"""

    def check(srv, case, r, posts):
        q = requests.get(srv.url("/api/v1/query_exemplars"),
                         params={"query": '{__name__="%s"}' % case.ctx["tag"]},
                         timeout=10)
        assert q.status_code == 200, q.text
        assert (len(q.json()["data"]) == 1) == expected, q.text

    return check


def metadata_dropped(nseries):
    """check: the invalid metadata entry is counted, what else came is
    forwarded"""

    def check(srv, case, r, posts):
        m = requests.get(srv.url("/metrics"), timeout=10).text
        found = re.search(r"promgate_invalid_metadata_total (\d+)", m)
        assert found and int(found.group(1)) >= 1, m[:3000]
        if nseries:
            assert len(posts) == 1 and len(recorded_series(posts[0])) == nseries
            wr = rw.decode_request(posts[0].body)
            assert [md.metric_family_name for md in wr.metadata] != [], wr

    return check


def mixed_case(cid, bad_labels, tag_selector=None, reason=None, valid=False,
               loc=W, exemplar_labels=None, stored=()):
    """a valid series next to one that is invalid (valid=False) or valid
    under 3.5's rules: at /api/v1/write (drop) 204 with the invalid one left
    out of the recorder and Prometheus and counted under reason; at /reject
    400 naming it (reason: a regex for the answer)"""
    body, ctx = mixed(bad_labels, exemplar_labels)

    if loc == R:
        if valid:
            return Case(cid, R, body=body, ctx=ctx, status=204, forwarded=True,
                        check=recorder_has(2))
        return Case(cid, R, body=body, ctx=ctx, status=400, forwarded=False,
                    check=answer_names(reason))

    if valid:
        fns = [both(tag_selector, stored)]
        if exemplar_labels is not None:
            # a name that is not empty and valid UTF-8 is a valid name
            fns.append(zone_has_exemplar(
                all(n and isinstance(v, str) for n, v in exemplar_labels)))
        return Case(cid, W, body=body, ctx=ctx, status=204, forwarded=True,
                    check=checks(*fns))

    return Case(cid, W, body=body, ctx=ctx, status=204, forwarded=True,
                check=only_good(tag_selector, reason))


def mixed_v2_case(cid, build_bad, tag_selector=None, reason=None, valid=False,
                  loc=W, written_samples=1, stored=()):
    body, ctx = mixed_v2(build_bad)

    if loc == R:
        return Case(cid, R, v2=True, body=body, ctx=ctx, status=400,
                    forwarded=False, check=answer_names(reason))

    if valid:
        return Case(cid, W, v2=True, body=body, ctx=ctx, status=204,
                    forwarded=True,
                    check=checks(both(tag_selector, stored), written(2)))

    return Case(cid, W, v2=True, body=body, ctx=ctx, status=204,
                forwarded=True,
                check=checks(only_good(tag_selector, reason),
                             written(written_samples)))


def v2_label_ref_out_of_range(b, tag, t):
    b.series([b.ref(N), b.ref(tag), b.ref("job"), 99999], samples=[(2.0, t)],
             raw=True)


def v2_odd_label_refs(b, tag, t):
    b.series([b.ref(N), b.ref(tag), b.ref("job")], samples=[(2.0, t)],
             raw=True)


def v2_exemplar_ref_out_of_range(b, tag, t):
    b.payloads.append(rw2.v2_series([b.ref(N), b.ref(tag)],
                                    samples=[(2.0, t)],
                                    exemplars=[([99999, b.ref("x")], 1.0, t)]))


def v2_help_ref_out_of_range(b, tag, t):
    b.payloads.append(rw2.v2_series([b.ref(N), b.ref(tag)],
                                    samples=[(2.0, t)],
                                    metadata=(1, 99999, 0)))


def v2_duplicate_labels(b, tag, t):
    b.series([(N, tag), ("a", "1"), ("a", "2")], samples=[(2.0, t)])


def v2_invalid_utf8_value(b, tag, t):
    b.series([(N, tag), ("a", b"v\xff")], samples=[(2.0, t)])


def v2_utf8_names(b, tag, t):
    b.series([(N, tag), ("service.name", "v"), ("a-b", "1")],
             samples=[(2.0, t)])


# -------------------------------------------------------------- cases

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
         body=valid, status=415,
         match=("foo\\.Bar", "prometheus\\.WriteRequest",
                "io\\.prometheus\\.write\\.v2\\.Request")),
    Case("write-content-type-proto-case", W,
         headers={"Content-Type": "application/x-protobuf;proto=Prometheus.WriteRequest"},
         body=valid, status=415, match=("prometheus\\.WriteRequest",)),
    # a 1.0 body under the 2.0 type: its fields are unknown to 2.0 (1-3 are
    # reserved there) and skipped: an empty 2.0 request, nothing written
    Case("write-content-type-v2-with-1.0-body", W, headers={"Content-Type": V2},
         body=valid, status=204, forwarded=None, check=written(0, 0)),
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
    # bodies: labels.  Invalid series (3.5's rules) are left out, the
    # valid one next to them forwarded, 204
    mixed_case("write-no-name", [("job", "TAG")], '{job="TAG"}',
               "missing_name"),
    mixed_case("write-empty-name-value", [(N, ""), ("job", "TAG")],
               '{job="TAG"}', "missing_name"),
    mixed_case("write-duplicate-labels", [(N, "TAG"), ("a", "1"), ("a", "2")],
               '{__name__="TAG"}', "duplicate_label"),
    mixed_case("write-empty-label-name", [("", "x"), (N, "TAG")],
               '{__name__="TAG"}', "invalid_label_name"),
    mixed_case("write-value-invalid-utf8", [(N, "TAG"), ("a", b"ok\xff\xfe")],
               '{__name__="TAG"}', "invalid_utf8"),
    mixed_case("write-name-invalid-utf8", [(N, "TAG"), (b"a\xff", "v")],
               '{__name__="TAG"}', "invalid_utf8"),
    mixed_case("write-value-overlong-utf8", [(N, "TAG"), ("a", b"\xc0\xaf")],
               '{__name__="TAG"}', "invalid_utf8"),
    mixed_case("write-value-surrogate", [(N, "TAG"), ("a", b"\xed\xa0\x80")],
               '{__name__="TAG"}', "invalid_utf8"),
    mixed_case("write-value-above-10ffff",
               [(N, "TAG"), ("a", b"\xf4\x90\x80\x80")],
               '{__name__="TAG"}', "invalid_utf8"),
    mixed_case("write-metric-name-invalid-utf8",
               [(N, b"mx\xff"), ("job", "TAG")],
               '{job="TAG"}', "invalid_utf8"),
    # valid under 3.5's rules: forwarded as sent, both series stored
    mixed_case("write-unsorted-labels", [(N, "TAG"), ("b", "1"), ("a", "2")],
               '{__name__="TAG", a="2", b="1"}', valid=True),
    mixed_case("write-name-last", [("a", "1"), (N, "TAG")],
               '{__name__="TAG", a="1"}', valid=True),
    mixed_case("write-label-name-dash", [(N, "TAG"), ("a-b", "v")],
               '{__name__="TAG"}', valid=True, stored=[("a-b", "v")]),
    mixed_case("write-label-name-utf8", [(N, "TAG"), ("\u00e9", "v")],
               '{__name__="TAG"}', valid=True, stored=[("\u00e9", "v")]),
    mixed_case("write-label-name-dotted", [(N, "TAG"), ("service.name", "v")],
               '{__name__="TAG"}', valid=True, stored=[("service.name", "v")]),
    mixed_case("write-metric-name-dotted", [(N, "mx.TAG.seconds"), ("j", "v")],
               '{__name__="mx.TAG.seconds"}', valid=True),
    mixed_case("write-empty-label-value", [(N, "TAG"), ("a", "")],
               '{__name__="TAG"}', valid=True),
    # invalid exemplar labels never invalidate their series: the exemplar is
    # not captured, the series forwarded as sent
    mixed_case("write-exemplar-label-invalid-utf8", [(N, "TAG"), ("j", "v")],
               '{__name__="TAG"}', valid=True,
               exemplar_labels=[("t", b"\xff")]),
    mixed_case("write-exemplar-label-empty-name", [(N, "TAG"), ("j", "v")],
               '{__name__="TAG"}', valid=True, exemplar_labels=[("", "x")]),
    mixed_case("write-exemplar-label-digit-name", [(N, "TAG"), ("j", "v")],
               '{__name__="TAG"}', valid=True, exemplar_labels=[("1t", "x")]),
    # 1.0 metadata with invalid UTF-8 is dropped (counted), the rest goes on
    Case("write-metadata-invalid-utf8", W,
         body=lambda: raw(rw.pb_len(3, rw.pb_len(4, b"help \xff"))),
         status=204, forwarded=None, check=metadata_dropped(0)),
    Case("write-metadata-invalid-utf8-next-to-series", W,
         body=lambda: raw(valid_raw() + rw.pb_len(3, rw.pb_len(4, b"help \xff"))
                          + rw.pb_len(3, rw2.v1_metadata(rw.uniq("mxmeta")))),
         status=204, forwarded=True, check=metadata_dropped(1)),
    # the same bodies where invalid series refuse the request
    mixed_case("reject-no-name", [("job", "TAG")], loc=R,
               reason="(?i)name"),
    mixed_case("reject-duplicate-labels", [(N, "TAG"), ("a", "1"), ("a", "2")],
               loc=R, reason="(?i)duplicate"),
    mixed_case("reject-empty-label-name", [("", "x"), (N, "TAG")], loc=R,
               reason="(?i)empty name"),
    mixed_case("reject-value-invalid-utf8", [(N, "TAG"), ("a", b"ok\xff")],
               loc=R, reason="(?i)utf-?8"),
    mixed_case("reject-value-surrogate", [(N, "TAG"), ("a", b"\xed\xa0\x80")],
               loc=R, reason="(?i)utf-?8"),
    mixed_case("reject-unsorted-labels-valid",
               [(N, "TAG"), ("b", "1"), ("a", "2")],
               loc=R, valid=True),
    mixed_case("reject-label-name-utf8-valid",
               [(N, "TAG"), ("service.name", "v")],
               loc=R, valid=True),
    Case("reject-metadata-invalid-utf8", R,
         body=lambda: raw(rw.pb_len(3, rw.pb_len(4, b"help \xff"))),
         status=400, match=("(?i)metadata", "(?i)utf-?8")),
    Case("reject-malformed", R, body=lambda: raw(b"\x08\x01"), status=400,
         match=("(?i)protobuf",)),
    # valid but extreme: within promgate's limits (promgate_max_labels,
    # promgate_max_label_bytes, promgate_max_exemplars) it forwards, the
    # storage decides; above one it refuses 413 naming the limit
    Case("write-10k-labels", W, body=lambda: many_labels(10000),
         status=413, match=("promgate_max_labels \\(512\\)",
                            "labels of the series: 513")),
    Case("write-512-labels-at-limit", W, body=lambda: many_labels(511),
         status=204, forwarded=True),
    Case("write-513-labels-over-limit", W, body=lambda: many_labels(512),
         status=413, match=("promgate_max_labels \\(512\\)",)),
    Case("reject-513-labels-over-limit", R, body=lambda: many_labels(512),
         status=413, match=("promgate_max_labels \\(512\\)",)),
    Case("write-1MB-label-value", W, body=lambda: huge_value(1 << 20),
         status=413, match=("promgate_max_label_bytes \\(16384\\)",
                            "1048580")),
    Case("write-label-16384-bytes-at-limit", W,
         body=lambda: huge_value(16380), status=204, forwarded=True),
    Case("write-label-16385-bytes-over-limit", W,
         body=lambda: huge_value(16381), status=413,
         match=("promgate_max_label_bytes \\(16384\\)",)),
    Case("write-100000-exemplars-at-limit", W,
         body=lambda: empty_exemplars(100000), status=204, forwarded=True),
    Case("write-100001-exemplars-over-limit", W,
         body=lambda: empty_exemplars(100001), status=413,
         match=("promgate_max_exemplars \\(100000\\)",
                "exemplars in the request: 100001")),
    Case("write-5M-empty-exemplars", W,
         body=lambda: empty_exemplars(5000000), status=413,
         match=("promgate_max_exemplars \\(100000\\)",)),
    Case("write-exemplars-over-limit-across-series", W,
         body=lambda: empty_exemplars(50000, nseries=3), status=413,
         match=("promgate_max_exemplars", "series 2")),
    Case("write-exemplar-513-labels-over-limit", W,
         body=lambda: exemplar_labels(513), status=413,
         match=("promgate_max_labels \\(512\\)", "labels of an exemplar")),
    Case("write-exemplar-label-over-16384-bytes", W,
         body=lambda: exemplar_labels(1, size=16384), status=413,
         match=("promgate_max_label_bytes",)),
    # an exemplar without labels is valid: Prometheus 3.5 stores it
    # (tsdb's AppendExemplar drops only empty labels, not the exemplar)
    Case("write-empty-exemplar-accepted", W,
         body=lambda: empty_exemplars(1), status=204, forwarded=True),
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

# remote write 2.0 (io.prometheus.write.v2.Request), accepted
CASES += [
    Case("write-v2-valid", W, v2=True,
         body=lambda: rw2.snappy.compress(rw2.V2Builder().series(
             {N: rw.uniq("mxv2"), "job": "matrix"},
             samples=[(1.0, now())],
             exemplars=[({"trace_id": "v2"}, 1.0, now())]).encode()),
         status=204, forwarded=True, check=written(1, 1)),
    Case("write-v2-garbage-protobuf", W, v2=True,
         body=lambda: raw(bytes(range(7, 256)) * 4), status=400,
         match=("(?i)protobuf",)),
    Case("write-v2-length-overrun", W, v2=True,
         body=lambda: raw(b"\x2a\xff\xff\xff\xff\x0f" + b"abc"), status=400,
         match=("(?i)protobuf",)),
    Case("write-v2-truncated", W, v2=True, body=lambda: rw2.snappy.compress(
        rw2.V2Builder().series({N: "m"}, samples=[(1.0, now())]).encode()[:-3]),
        status=400, match=("(?i)protobuf",)),
    Case("write-v2-labels-refs-as-double", W, v2=True,
         body=lambda: v2_raw(["", N, "m"], [rw2.f_double(1, 1.0)]),
         status=400, match=("(?i)protobuf",)),
    Case("write-v2-symbols0-not-empty", W, v2=True,
         body=lambda: v2_raw(["x", N, rw.uniq("mxsym0")],
                             [rw2.v2_series([1, 2], samples=[(1.0, now())])]),
         status=400, match=("invalid_symbols|symbols\\[0\\]",)),
    Case("write-v2-empty-snappy", W, v2=True, body=lambda: raw(b""),
         status=204, forwarded=None, check=written(0, 0)),
    Case("write-v2-unknown-proto", W,
         headers={"Content-Type":
                  "application/x-protobuf;proto=io.prometheus.write.v3.Request"},
         body=v2_body_as_v1, status=415,
         match=("io\\.prometheus\\.write\\.v2\\.Request",)),
    # a 2.0 body under the 1.0 type: its fields (4 symbols, 5 timeseries)
    # are unknown to 1.0 and skipped: an empty 1.0 request, answered 204
    # with nothing stored
    Case("write-v2-body-with-v1-content-type", W, body=v2_body_as_v1,
         status=204, forwarded=None, check=v1_empty_answer),
    Case("write-v2-huge-symbol-count", W, v2=True,
         body=lambda: v2_huge_symbols(300000), status=204, forwarded=True,
         max_seconds=20, check=written(1, 0)),
    Case("write-v2-huge-symbol-count-small-location", W, v2=True,
         path="/small", body=lambda: v2_huge_symbols(300000), status=413),
    # the limits, 2.0 (symbols referenced by many labels count resolved)
    Case("write-v2-100000-exemplars-at-limit", W, v2=True,
         body=lambda: v2_empty_exemplars(100000), status=204, forwarded=True),
    Case("write-v2-100001-exemplars-over-limit", W, v2=True,
         body=lambda: v2_empty_exemplars(100001), status=413,
         match=("promgate_max_exemplars \\(100000\\)",)),
    Case("write-v2-513-labels-over-limit", W, v2=True,
         body=lambda: v2_many_labels(512), status=413,
         match=("promgate_max_labels \\(512\\)",)),
    Case("write-v2-512-labels-at-limit", W, v2=True,
         body=lambda: v2_many_labels(511), status=204, forwarded=True),
    Case("write-v2-label-over-16384-bytes", W, v2=True,
         body=lambda: v2_raw(["", N, rw.uniq("mxv2b"), "a", "x" * 16384],
                             [rw2.v2_series([1, 2, 3, 4],
                                            samples=[(1.0, now())])]),
         status=413, match=("promgate_max_label_bytes",)),
    Case("write-v2-symbol-referenced-by-every-series", W, v2=True,
         body=lambda: v2_raw(["", N, rw.uniq("mxv2e"), "a", "x" * 16000],
                             [rw2.v2_series([1, 2, 3, 4],
                                            samples=[(1.0, now())],
                                            created_timestamp=i + 1)
                              for i in range(2000)]),
         status=413, match=("label expansion limit",)),
    Case("write-v2-unused-symbol-invalid-utf8", W, v2=True,
         body=lambda: v2_raw(["", N, rw.uniq("mxv2u"), b"bad\xff"],
                             [rw2.v2_series([1, 2], samples=[(1.0, now())])]),
         status=204, forwarded=True, check=written(1, 0)),
    # a series with a bad symbol ref (its labels, an exemplar's, its
    # metadata's) is invalid and left out, the valid one forwarded.
    # Prometheus 3.5 itself panics on such refs and closes the connection
    # without an answer (validity_table.md): promgate's answer is its own
    mixed_v2_case("write-v2-label-ref-out-of-range",
                  v2_label_ref_out_of_range, '{__name__="TAG"}',
                  "invalid_symbol_ref"),
    mixed_v2_case("write-v2-odd-label-refs", v2_odd_label_refs,
                  '{__name__="TAG"}', "invalid_symbol_ref"),
    mixed_v2_case("write-v2-duplicate-labels", v2_duplicate_labels,
                  '{__name__="TAG"}', "duplicate_label"),
    mixed_v2_case("write-v2-value-invalid-utf8", v2_invalid_utf8_value,
                  '{__name__="TAG"}', "invalid_utf8"),
    mixed_v2_case("write-v2-utf8-label-names", v2_utf8_names,
                  '{__name__="TAG"}', valid=True,
                  stored=[("service.name", "v"), ("a-b", "1")]),
    mixed_v2_case("write-v2-exemplar-ref-out-of-range",
                  v2_exemplar_ref_out_of_range, '{__name__="TAG"}',
                  "invalid_symbol_ref"),
    mixed_v2_case("write-v2-help-ref-out-of-range",
                  v2_help_ref_out_of_range, '{__name__="TAG"}',
                  "invalid_symbol_ref"),
    mixed_v2_case("reject-v2-label-ref-out-of-range",
                  v2_label_ref_out_of_range, loc=R, reason="(?i)symbol"),
    mixed_v2_case("reject-v2-odd-label-refs", v2_odd_label_refs, loc=R,
                  reason="(?i)odd number .* of label refs"),
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
    # 300 levels: what Prometheus takes, promgate too (its limit is 2048)
    Case("query-nesting-300", Q, "GET", params={"query": DEEP}, status="prom"),
    # deeper than promgate's limit (Prometheus has none): a deliberate 400
    Case("query-nesting-5000", Q, "POST",
         body=b"query=" + b"%28" * 5000 + b"up" + b"%29" * 5000,
         headers={"Content-Type": "application/x-www-form-urlencoded"},
         status=400, match=('"errorType":"bad_data"', "nests too deeply")),
    # syntax of 3.5: UTF-8 names, numbers as durations
    Case("query-utf8-metric-name", Q, "GET",
         params={"query": '{"http.server.duration"}'}, status="prom"),
    Case("query-utf8-label-name", Q, "GET",
         params={"query": 'up{"service.name"=~"a.*"}'}, status="prom"),
    Case("query-utf8-unterminated", Q, "GET",
         params={"query": '{"service.name"='}, status="prom"),
    Case("query-number-as-duration", Q, "GET",
         params={"query": "rate(up[5])"}, status="prom"),
    Case("query-duration-expression", Q, "GET",
         params={"query": "rate(up[1m+1m])"}, status="prom"),
    Case("query-experimental-function", Q, "GET",
         params={"query": "mad_over_time(up[5m])"}, status="prom"),
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
         status="prom", known_bug=(WRAPPED_MS, lambda ss: True)),
    Case("query-start-ms-overflows", Q, "GET",
         params={"query": "up", "start": "-17000060e9", "end": "1"},
         status="prom", known_bug=(WRAPPED_MS, lambda ss: True)),
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
    return srv.url({W: "/api/v1/write", R: "/reject", S: "/metrics",
                    Q: "/api/v1/query_exemplars"}[case.loc])


def send(url, case):
    body = case.body() if callable(case.body) else case.body
    if case.loc in (W, R):
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


# Query cases where Prometheus 2.42 words the error differently from 3.5
# (promgate answers as 3.5): against the debian12 set only the status and
# errorType are compared for these.
TEXT_242_DIFFERS = {
    "query-no-query": "an empty query: 2.42 says \"1:1: parse error: ...\", "
                      "3.5 \"unknown position: parse error: ...\"",
    "query-empty-query": "the same",
    "query-post-form-garbage": "the same (no query parameter in the form)",
    "query-invalid-regex": "2.42 quotes the anchored regexp it compiled "
                           "(`^(?:(a)$`), 3.5 the one written (`(a`)",
    "query-start-not-a-time": "2.42 \"Invalid time value\", 3.5 \"invalid\"",
    "query-year-292277026": "the same",
    "query-february-30": "the same",
    "query-utf8-unterminated": "2.42 has no quoted names: its parser "
                               "stops elsewhere",
    "query-duration-expression": "2.42 has no duration expressions: \"bad "
                                 "duration syntax\"; 3.5 \"experimental "
                                 "duration expression is not enabled\"",
    "query-experimental-function": "2.42 \"unknown function\", 3.5 "
                                   "\"function ... is not enabled\"",
}

# Queries only 3.5 can parse: 2.42 answers 400 bad_data, promgate (as 3.5)
# the status given here
SYNTAX_35 = {
    "query-utf8-metric-name": 200,
    "query-utf8-label-name": 200,
    "query-number-as-duration": 200,
}


# ----------------------------------------------------------- the data

@pytest.fixture(scope="module")
def cat_data(srv):
    """a series whose label value invites catastrophic backtracking, with an
    exemplar, in promgate's exemplar store and in Prometheus"""
    t = now()
    body = rw.compress(rw.write_request([
        rw.series(CAT + "_total", {"v": "a" * 3000 + "!"}, [(1.0, t)],
                  exemplars=[({"trace_id": "cat"}, 1.0, t)])]))
    r = rw.post(srv.url("/api/v1/write"), body)
    assert r.status_code == 204, r.text


# ------------------------------------------------------------- tests

def params():
    for c in CASES:
        yield pytest.param(c, id=c.id)


@pytest.mark.parametrize("case", params())
def test_bad_input(srv, cat_data, case, request):
    if case.known_bug and case.known_bug[1](srv.ss):
        request.node.add_marker(pytest.mark.xfail(reason=case.known_bug[0],
                                                  strict=True))

    before_posts = len(srv.fake.posts())
    offset = log_size(srv)

    t0 = time.monotonic()
    r = send(url_for(srv, case), case)
    elapsed = time.monotonic() - t0

    what = "%s %s -> %d %r" % (case.method, case.id, r.status_code, r.text[:300])
    assert r.status_code < 500, "5xx: " + what
    assert elapsed < case.max_seconds, "took %.1fs: %s" % (elapsed, what)

    if case.status == "prom" and case.id in SYNTAX_35 \
            and srv.ss.prom_major < 3:
        p = prom_answer(srv, case)
        assert p.status_code == 400 and error_of(p)[0] == "bad_data", p.text
        assert r.status_code == SYNTAX_35[case.id], what

    elif case.status == "prom":
        p = prom_answer(srv, case)
        assert r.status_code == p.status_code, \
            "%s; Prometheus answers %d %r" % (what, p.status_code, p.text[:300])
        exact = srv.ss.prom_major >= 3 or case.id not in TEXT_242_DIFFERS
        if 400 <= p.status_code < 500:
            if exact:
                assert error_of(r) == error_of(p), \
                    "%s; Prometheus: %r" % (what, p.text[:300])
            else:
                assert error_of(r)[0] == error_of(p)[0], \
                    "%s; Prometheus: %r" % (what, p.text[:300])
        if case.same_body and exact:
            assert r.text == p.text, "%s; Prometheus: %r" % (what, p.text[:300])
    elif isinstance(case.status, tuple):
        assert r.status_code in case.status, what
    else:
        assert r.status_code == case.status, what

    for pat in case.match:
        assert re.search(pat, r.text), (pat, what)

    if case.loc in (W, R) and r.status_code == 405:
        assert "POST" in r.headers.get("Allow", ""), r.headers

    posts = []
    if case.loc in (W, R) and case.forwarded is not None:
        posts = srv.fake.wait_requests(before_posts + 1, timeout=5) \
            if case.forwarded else srv.fake.posts()
        posts = [p for p in posts if p.method == "POST"]
        if case.forwarded:
            assert len(posts) == before_posts + 1, "valid write not forwarded"
        else:
            assert len(posts) == before_posts, "refused write was forwarded"
    elif case.loc in (W, R):
        time.sleep(0.2)
        posts = srv.fake.posts()

    if case.check:
        case.check(srv, case, r, posts[before_posts:])

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
    assert re.search(r'promgate_invalid_series_total\{reason="missing_name"\} '
                     r'[1-9]', m.text), m.text[:4000]
    bad = [l for l in m.text.splitlines()
           if l.startswith("promgate_write_requests_total") and 'code="5' in l]
    assert bad == [], m.text[:2000]
