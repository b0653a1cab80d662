#!/usr/bin/python3
"""Writes the seed corpora of the libFuzzer targets: fuzz/corpus/<target>/.

    /usr/bin/python3 fuzz/gen_corpus.py [target...]

Seeds are small (a few hundred bytes), deterministic (fixed timestamps) and
named for what they are.  Files named crash-*, regress-* are regression
seeds added by hand after a finding and are never touched here.
"""

import os
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "t", "integration"))

import rw  # noqa: E402  (the integration helpers: protobuf, snappy, raw pb)

T0 = 1700000000000          # fixed timestamps keep the seeds reproducible


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- fuzz_rw

def corpus_rw():
    types, _ = rw.pb()
    S = rw.series
    inf, nan = float("inf"), float("nan")

    valid = {
        "basic": [S("up", {"job": "node", "instance": "a:9100"},
                    [(1.0, T0), (0.0, T0 + 15000)])],
        "two-series": [S("a_total", {"x": "1"}, [(1.0, T0)]),
                       S("b_total", {"x": "2"}, [(2.0, T0)])],
        "special-values": [S("v", {"k": "nan"}, [(nan, T0)]),
                           S("v", {"k": "inf"}, [(inf, T0), (-inf, T0 + 1)]),
                           S("v", {"k": "stale"}, [(rw.STALE_NAN, T0 + 2)])],
        "exemplar": [S("req_bucket", {"le": "0.5"}, [(3.0, T0)],
                       exemplars=[({"trace_id": "4bf92f3577b34da6"}, 0.42, T0)])],
        "exemplar-only": [S("req_bucket", {"le": "1"},
                            exemplars=[({"trace_id": "abc", "span_id": "d"}, 1.0, T0)])],
        "repeated-series": [S("r", {"a": "b"}, [(1.0, T0)]),
                            S("r", {"a": "b"}, [(2.0, T0 + 1)])],
        "unicode-value": [S("u", {"city": "Zürich ✓ 𝄞"}, [(1.0, T0)])],
        "histogram": [S("h", {"job": "x"}, histograms=[rw.native_histogram(T0)])],
        "many-labels": [S("m", {"l%02d" % i: "v%d" % i for i in range(20)},
                          [(1.0, T0)])],
        "empty-series": [S("e", {"job": "x"})],
    }
    for name, series in valid.items():
        raw = rw.write_request(series)
        put("fuzz_rw", "raw-valid-" + name, raw)
        put("fuzz_rw", "snappy-valid-" + name, rw.compress(raw))

    md = rw.write_request([], [rw.metadata("http_requests", "COUNTER", "Requests.", "")])
    put("fuzz_rw", "raw-valid-metadata-only", md)
    put("fuzz_rw", "snappy-valid-metadata-only", rw.compress(md))
    put("fuzz_rw", "raw-valid-empty", b"")

    N = "__name__"
    invalid = {
        "no-name": [("job", "x")],
        "empty-name": [(N, ""), ("job", "x")],
        "unsorted": [(N, "m"), ("b", "1"), ("a", "2")],
        "duplicate": [(N, "m"), ("a", "1"), ("a", "2")],
        "bad-name-digit": [("1a", "v"), (N, "m")],
        "bad-name-dash": [(N, "m"), ("a-b", "v")],
        "bad-utf8": [(N, "m"), ("a", b"\xff\xfe")],
        "surrogate": [(N, "m"), ("a", b"\xed\xa0\x80")],
        "overlong": [(N, "m"), ("a", b"\xc0\xaf")],
        "nul-in-value": [(N, "m"), ("a", b"x\x00y")],       # valid UTF-8
    }
    for name, labels in invalid.items():
        raw = rw.raw_write_request([rw.raw_series(labels, [(1.0, T0)])])
        put("fuzz_rw", "raw-label-" + name, raw)
        put("fuzz_rw", "snappy-label-" + name, rw.compress(raw))

    good = rw.raw_series([(N, "m"), ("job", "x")], [(1.0, T0)])
    wire = {
        # field 1 declared longer than the buffer
        "len-overrun": b"\x0a\xff\xff\xff\x0f" + b"abc",
        # 11-byte varint, 10-byte varint with high bits in the last byte
        "varint-11": b"\x10" + b"\xff" * 10 + b"\x01",
        "varint-overflow": b"\x10" + b"\xff" * 9 + b"\x7f",
        # group wire types (3, 4), wire types 6 and 7
        "wire-group": b"\x0b\x0c" + rw.pb_len(1, good),
        "wire-7": b"\x0f",
        # a series sent as a varint
        "series-varint": b"\x08\x01",
        # a sample value sent as a varint
        "sample-wt": rw.pb_len(1, rw.pb_len(1, rw.raw_label(N, "m"))
                               + rw.pb_len(2, b"\x08\x01")),
        # unknown fields everywhere (must be skipped)
        "unknown-fields": (b"\x28\x05" + rw.pb_len(1, good + b"\x2d\x00\x00\x00\x00")
                           + b"\x39" + b"\x00" * 8),
        # field number 0, field number above 2^29
        "field-zero": b"\x02\x00",
        "field-huge": rw.varint((1 << 29) << 3 | 0) + b"\x00",
        "truncated": rw.pb_len(1, good)[:-3],
    }
    for name, raw in wire.items():
        put("fuzz_rw", "raw-wire-" + name, raw)
        put("fuzz_rw", "snappy-wire-" + name, rw.compress(raw))

    # invalid series among valid ones, metadata with text that is not UTF-8,
    # more than 64 unsorted labels with a name twice
    mixed = rw.raw_write_request([
        rw.raw_series([(N, "ok")], [(1.0, T0)]),
        rw.raw_series([("job", "x")], [(1.0, T0)]),
        rw.raw_series([(N, "m"), ("a", b"\xff")], [(1.0, T0)]),
        rw.raw_series([(N, "ok2")], [(1.0, T0)])])
    put("fuzz_rw", "raw-mixed-invalid", mixed)
    put("fuzz_rw", "snappy-mixed-invalid", rw.compress(mixed))
    put("fuzz_rw", "raw-metadata-bad-utf8",
        rw.write_request([], [rw.metadata("a", "COUNTER", "ok", ""),
                              rw.metadata("b", "GAUGE", "ok", "")])
        .replace(b"\x22\x02ok", b"\x22\x02\xc0\xaf", 1))
    many = rw.raw_write_request([rw.raw_series(
        [("l%02d" % (79 - i), "v") for i in range(80)] + [("l03", "w"), (N, "m")],
        [(1.0, T0)])])
    put("fuzz_rw", "raw-many-unsorted-duplicate", many)

    # snappy framing itself
    ok = rw.compress(rw.write_request(valid["basic"]))
    put("fuzz_rw", "snappy-truncated", ok[: len(ok) // 2])
    put("fuzz_rw", "snappy-bomb", rw.varint(1 << 30) + b"\x00" * 10)
    put("fuzz_rw", "snappy-length-only", rw.varint(100))
    # a copy before any literal (offset beyond output)
    put("fuzz_rw", "snappy-bad-copy", rw.varint(8) + b"\x05\x10")


# ---------------------------------------------------------- fuzz_exemplar

def corpus_exemplar():
    """programs for fuzz_exemplar.c: max, size byte, then operations"""
    import random
    for n, (mx, size_b, nops, die) in enumerate([
            (3, 7, 40, False), (1, 0, 30, False), (16, 3, 80, False),
            (63, 7, 120, False), (7, 0, 60, True), (31, 4, 100, True)]):
        r = random.Random(n)
        out = bytearray([mx, size_b])
        for _ in range(nops):
            op = r.choice([0, 1, 2, 3, 4] * 3 + ([5] * 3 if die else []) + [6, 7, 8, 9])
            out.append(op)
            if op <= 5:
                out += bytes([r.randrange(3), r.randrange(64)])
                out += bytes(r.randrange(224) for _ in range(6))     # values
                m = r.randrange(5)
                out.append(m)
                for _ in range(m):
                    out += bytes([r.randrange(6), r.randrange(224)])
                out += bytes([r.randrange(12), r.randrange(256)])     # value, ts
                if op == 5:
                    out.append(r.randrange(64))
            elif op in (6, 7):
                out += bytes([0, r.randrange(3), r.randrange(8)])
            elif op == 8:
                out.append(0)
        put("fuzz_exemplar", "program-%d%s" % (n, "-die" if die else ""), bytes(out))
    # long label values: the 16-bit and rune limits
    put("fuzz_exemplar", "long-values",
        bytes([4, 7, 0, 1, 0xff, 0xff, 0, 0, 0, 0, 0, 1, 0xfa, 3, 2, 10,
               0, 1, 3, 0, 0, 0, 0, 0, 1, 0xfb, 5, 1, 10]))


# ---------------------------------------------------- fuzz_promql, matcher

PROMQL = [
    "up",
    'up{job="node"}',
    'http_requests_total{job=~"api|web",code!~"5.."}',
    'rate(http_requests_total{job="api"}[5m])',
    'histogram_quantile(0.9, sum by (le) (rate(req_bucket[5m])))',
    'sum without (instance) (up) / on (job) group_left count(up)',
    'topk(3, up offset 5m) @ 1700000000',
    'max_over_time(up[1h:1m])',
    '{__name__=~"node_.*", instance!=""}',
    'label_replace(up, "a", "$1", "job", "(.*)")',
    'vector(1) + time()',
    '1 + 1',
    "up{job='single quoted', a=`raw\\string`}",
    'up{a="\\u00e9\\x41\\101"}',
    'abs(-up) ^ 2 > bool 1',
    'up and on() vector(1) unless down or sideways',
    'count_values("v", up)',
    'quantile(0.5, up)',
    '# comment\nup',
    'up{job="unterminated',
    'up{job=~"(a"}',
    'up{job=~"(a+)+$"}',
    '{job=""}',
    'sum(up',
    'up[5x]',
    'up offset',
    'rate(up)',
    'nosuchfunc(up)',
    '((((((((((up))))))))))',
    '-' * 300 + 'up',
    'up{job=~"\\p{Greek}+"}',
    'up{job=~"a{1001}"}',
    # Prometheus 3.5: quoted names, numbers as durations, experimental
    # features refused, literal-set regexps
    '{"http.server.duration", "service.name"="checkout"}',
    'sum by ("service.name") (rate({"a.b"}[5]))',
    'up offset -5 @ 5m',
    'up[1m+1m:30s]',
    'limitk(2, up)',
    'info(up, {a="b"})',
    '1_000 * 0x_1F + .5e3',
    'up{job=~"a|\\xff"}',
    'up{job=~"(?<n>a)"}',
    'sum(up) by (a) (b)',
]

MATCHER = [
    (b"api|web", b"api"), (b".*", b""), (b".+", b"x"), (b"(?i)ApI", b"api"),
    (b"a{2,5}", b"aaa"), (b"[[:alpha:]]+", b"abc"), (b"\\d+\\.\\d*", b"3.14"),
    (b"\\p{L}+", b"\xc3\xa9t\xc3\xa9"), (b"(a+)+$", b"a" * 40 + b"!"),
    (b"(a|aa)*b", b"a" * 60), (b"\\Qa.b\\E", b"a.b"), (b"x{1001}", b"x"),
    (b"(?P<n>a)b", b"ab"), (b"\\bfoo\\b", b"foo"), (b"[^\\n]*", b"a\nb"),
    (b"(?s).", b"\n"), (b"\\x{10FFFF}", b"\xf4\x8f\xbf\xbf"), (b"a**", b""),
    (b"(", b""), (b"[z-a]", b""), (b"\\8", b""), (b"(?<n>a)", b"a"),
    (b"job", b"job"), (b".\xff.", b"a\xffb"), (b"^$", b""),
]


def corpus_promql():
    for i, q in enumerate(PROMQL):
        put("fuzz_promql", "q%02d" % i, q)


def corpus_matcher():
    for i, (pat, v) in enumerate(MATCHER):
        # option byte 3: also try (?:P) and (?:P)|(?:P)
        put("fuzz_matcher", "m%02d" % i, bytes([3]) + pat + b"\0" + v)


# --------------------------------------------------------------- fuzz_time

TIMES = [
    b"1700000000", b"1700000000.123", b"1700000000.1239", b"-1.5", b"0x1p30",
    b"1_700_000_000", b"1e9", b"Inf", b"-inf", b"NaN", b"9223372036854775807",
    b"1e300", b"2023-11-14T22:13:20Z", b"2023-11-14T22:13:20.123456789+05:30",
    b"-292273086-05-16T16:47:06Z", b"292277025-08-18T07:12:54.999999999Z",
    b"2023-02-30T00:00:00Z", b"", b"now",
]

FORMS = [
    (b"query=up&start=1&end=2", b""),
    (b"query=up%7Bjob%3D%22a%22%7D&start=1700000000&end=1700000060", b""),
    (b"query=a", b"query=b&start=2&end=1"),
    (b"start=2023-11-14T22:13:20Z&end=1e9", b""),
    (b"query=%zz&query=ok;x", b""),
    (b"end=-Inf", b""),
    (b"query=" + b"%41" * 50, b""),
]

JSONS = [
    b'{"query":"up","start":"1","end":"2"}',
    b'{"query":"up","start":1700000000,"end":1700000060.5}',
    b'{"query":"a\\u00e9\\ud83d\\ude00","start":null}',
    b'{"query":"x","query":"y"}',
    b'{"query":"up","extra":{"a":[1,2,{"b":null}]},"end":"2023-11-14T22:13:20Z"}',
    b'{"query":"up","start":"2","end":"1"}',
    b'{"query":"\xff\xfe"}',
    b'{"query":"unterminated',
    b'[' * 100,
    b'{"start":1e400}',
    b'{"query":"up"} trailing',
    b' \t\n{ } ',
]


def corpus_time():
    for i, t in enumerate(TIMES):
        put("fuzz_time", "time%02d" % i, bytes([0x30]) + t)
    for i, (a, b) in enumerate(FORMS):
        put("fuzz_time", "form%02d" % i, bytes([0x31]) + a + b"\0" + b)
    for i, j in enumerate(JSONS):
        put("fuzz_time", "json%02d" % i, bytes([0x32]) + j)


# ---------------------------------------------------------------- fuzz_wal

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def wal_frame(seq, ts, value, tenant, series, labels):
    def s(b):
        b = b.encode() if isinstance(b, str) else b
        return struct.pack("<I", len(b)) + b

    def ls(pairs):
        return struct.pack("<I", len(pairs)) + b"".join(s(n) + s(v) for n, v in pairs)

    payload = (struct.pack("<Qqd", seq, ts, value) + s(tenant)
               + ls(series) + ls(labels))
    return struct.pack("<II", len(payload), crc32c(payload)) + payload


def corpus_wal():
    f1 = wal_frame(1, T0, 0.5, "", [("__name__", "req_bucket"), ("le", "0.5")],
                   [("trace_id", "4bf92f3577b34da6")])
    f2 = wal_frame(2, T0 + 1000, float("nan"), "tenant-a", [("__name__", "x")], [])
    f3 = wal_frame(3, T0 + 2000, 1.0, "", [], [("a", "b"), ("c", "")])
    put("fuzz_wal", "scan-good", b"\x00" + f1 + f2 + f3)
    put("fuzz_wal", "scan-torn", b"\x00" + f1 + f2 + f3[:-5])
    bad = bytearray(f2)
    bad[20] ^= 0xff
    put("fuzz_wal", "scan-corrupt-middle", b"\x00" + f1 + bytes(bad) + f3)
    put("fuzz_wal", "scan-stop-after-1", b"\x04" + f1 + f2)
    put("fuzz_wal", "scan-huge-length", b"\x00" + struct.pack("<II", 0xFFFFFFF0, 0) + b"x" * 30)
    put("fuzz_wal", "scan-absurd-label-count",
        b"\x00" + wal_frame(9, 0, 0.0, "", [], [])[:-8] + struct.pack("<II", 0xFFFFFFFF, 0))
    import random
    r = random.Random(7)
    for n in range(4):
        prog = bytes([1, r.randrange(MAX_WAL_REC), n]) + bytes(r.randrange(256) for _ in range(600))
        put("fuzz_wal", "replay-%d" % n, prog)
    put("fuzz_wal", "names", b"\x02" + b"\x02ex" + b"\x00\x07" + b"\x00" * 7 + b"\x2a"
        + b"ex-w007-00000000000000000042.wal")
    put("fuzz_wal", "names-bad", b"\x02" + b"\x02ex" + b"\x00" * 10 + b"ex-w7-1.wal")
    put("fuzz_wal", "merge", b"\x03" + bytes([10]) + bytes(r.randrange(256) for _ in range(20))
        + bytes([4, 8]) + bytes(r.randrange(256) for _ in range(16)) + b"\x80")


MAX_WAL_REC = 32


# ------------------------------------------------------------- fuzz_policy

def corpus_policy():
    for i, v in enumerate([b"120", b" 5 ", b"0", b"99999999999999999999",
                           b"Sun, 06 Nov 1994 08:49:37 GMT",
                           b"Sunday, 06-Nov-94 08:49:37 GMT",
                           b"Sun Nov  6 08:49:37 1994",
                           b"Wed, 21 Oct 2037 07:28:00 GMT",
                           b"Thu, 01 Jan 1900 00:00:00 GMT", b"-1", b"1.5", b""]):
        put("fuzz_policy", "retry-after-%02d" % i, bytes([1]) + v)
    put("fuzz_policy", "backoff", bytes([2]) + bytes([0, 0, 0, 0, 100, 0, 0, 0, 7, 208, 5, 0])
        + b"\xff\xff\xff\x7f")
    for pol in range(3):
        put("fuzz_policy", "ack-%d" % pol,
            bytes([3 | (pol << 2) | (5 << 4)]) + bytes([0, 2, 1, 0, 0, 2]))


# --------------------------------------------------------------- fuzz_json

def corpus_json():
    vals = [0.0, -0.0, 1.0, 0.1, 1e-7, 1e-6, 123456.789, 1.5e21, 1e21 - 65536,
            5e-324, 1.7976931348623157e308, float("inf"), float("-inf"),
            float("nan"), rw.STALE_NAN, 2.0 ** 60, 9007199254740993.0, -2.5]
    put("fuzz_json", "values", b"\x00" + b"".join(struct.pack("<d", v) for v in vals))
    tss = [0, 1, -1, 999, 1000, 1600096945479, -1600096945479, 2 ** 63 - 1, -2 ** 63]
    put("fuzz_json", "timestamps", b"\x01" + b"".join(struct.pack("<q", t) for t in tss))
    for i, t in enumerate([b"plain", b'q"uo\\te\n\t\r\x01\x7f', b"<a href='x'>&amp;</a>",
                           "Zürich ✓ 𝄞 \u2028\u2029".encode(), b"bad \xff\xfe \xed\xa0\x80 \xc0\xaf",
                           b"\xf4\x90\x80\x80 \xe2\x82", b""]):
        put("fuzz_json", "string-%d" % i, b"\x02" + t)
    put("fuzz_json", "string-no-memory", b"\x82" + b"x" * 200)


# --------------------------------------------------------------- fuzz_rw2

def corpus_rw2():
    """remote write 2.0 requests: valid ones of every shape, each validity
    rule broken once, both created-timestamp layouts, refs packed and not,
    and wire-format breakage"""
    import rw2
    from rw2 import f_bytes, f_double, f_packed, f_varint, v2_request, v2_series

    def zz(n):                       # sint32/sint64 zigzag
        return (n << 1) ^ (n >> 63)

    def histogram(start=None):
        span = f_varint(1, zz(-1)) + f_varint(2, 3)
        h = (f_varint(1, 5) + f_double(3, 7.25) + f_varint(4, zz(2))
             + f_bytes(11, span) + f_packed(12, [zz(1), zz(2), zz(-1)])
             + f_varint(15, T0))
        if start is not None:
            h += f_varint(17, start)
        return h

    def full():
        b = rw2.V2Builder()
        b.series({"__name__": "req_bucket", "job": "x", "le": "0.5"},
                 samples=[(3.0, T0), (4.0, T0 + 15000)],
                 exemplars=[({"trace_id": "4bf92f3577b34da6"}, 0.42, T0)],
                 metadata=("HISTOGRAM", "request latency", "seconds"),
                 created_timestamp=T0 - 60000)
        b.series({"__name__": "native", "job": "x"},
                 histograms=[histogram()], metadata=("HISTOGRAM", "n", ""))
        b.series({"__name__": "up", "job": "x"}, samples=[(1.0, T0)])
        return b

    valid = {"full": full().encode()}

    b = rw2.V2Builder()
    b.series({"__name__": "c_total"}, metadata=("COUNTER", "c", ""))
    # rc.4: start timestamps in the sample and the histogram
    b.payloads.append(v2_series([1, 2], metadata=(1, 0, 0))
                      + f_bytes(2, f_double(1, 1.0) + f_varint(2, T0)
                                + f_varint(3, T0 - 5000))
                      + f_bytes(3, histogram(T0 - 7000)))
    valid["rc4-start-timestamps"] = b.encode()

    syms = ["", "__name__", "m", "job", "x"]
    valid["unpacked-refs"] = v2_request(
        syms, [b"".join(f_varint(1, r) for r in [1, 2, 3, 4])
               + f_bytes(2, f_double(1, 1.0) + f_varint(2, T0))])
    valid["split-refs"] = v2_request(
        syms, [f_packed(1, [1, 2, 3]) + f_bytes(2, b"") + f_varint(1, 4)])
    valid["interleaved"] = (f_bytes(4, b"") + f_bytes(5, f_packed(1, [1, 2]))
                            + f_bytes(4, b"__name__") + f_bytes(4, b"z"))
    valid["utf8-names"] = rw2.V2Builder().series(
        {"__name__": "http.server.duration", "service.name": "checkout",
         "city": "Zürich ✓ 𝄞"}, samples=[(1.0, T0)]).encode()
    valid["unsorted"] = rw2.V2Builder().series(
        [("job", "x"), ("__name__", "u"), ("a", "1")],
        samples=[(1.0, T0)]).encode()
    valid["symbols-only"] = v2_request(["", "a", "b"], [])
    valid["empty"] = b""
    valid["many-labels"] = rw2.V2Builder().series(
        [("l%02d" % (79 - i), "v") for i in range(80)] + [("__name__", "m")],
        samples=[(1.0, T0)]).encode()

    for name, raw in valid.items():
        put("fuzz_rw2", "raw-valid-" + name, raw)
        put("fuzz_rw2", "snappy-valid-" + name, rw.compress(raw))

    def one(labels, raw=False, **kw):
        bl = rw2.V2Builder()
        bl.series({"__name__": "ok"}, samples=[(1.0, T0)])
        bl.series(labels, raw=raw, samples=[(2.0, T0)], **kw)
        return bl.encode()

    invalid = {
        "no-name": one({"job": "x"}),
        "empty-name": one({"__name__": ""}),
        "empty-label-name": one([("__name__", "m"), ("", "x")]),
        "duplicate": one([("__name__", "m"), ("a", "1"), ("a", "2")]),
        "duplicate-apart": one([("a", "1"), ("__name__", "m"), ("a", "2")]),
        "bad-utf8": one([("__name__", "m"), ("a", b"\xff")]),
        "bad-utf8-name": one([("__name__", "m"), (b"\xed\xa0\x80", "v")]),
        "ref-past-end": one([1, 2, 3, 99], raw=True),
        "odd-refs": one([1, 2, 3], raw=True),
        "exemplar-ref": v2_request(syms, [v2_series(
            [1, 2], exemplars=[([3, 77], 1.0, T0)])]),
        "metadata-ref": v2_request(syms, [v2_series(
            [1, 2], metadata=(1, 55, 0))]),
        "bad-symbols": v2_request(["junk", "__name__", "m"],
                                  [v2_series([1, 2], [(1.0, T0)])]),
        "exemplar-bad-utf8": rw2.V2Builder().series(
            {"__name__": "m"}, exemplars=[({"t": b"\xff"}, 1.0, T0)],
            metadata=("COUNTER", b"bad \xff", "")).encode(),
    }
    for name, raw in invalid.items():
        put("fuzz_rw2", "raw-invalid-" + name, raw)
        put("fuzz_rw2", "snappy-invalid-" + name, rw.compress(raw))

    good = v2_series([1, 2], [(1.0, T0)])
    wire = {
        "truncated": valid["full"][:-3],
        "symbol-varint": b"\x20\x00",
        "series-varint": b"\x28\x00",
        "refs-i64": v2_request(syms, [b"\x09" + b"\x00" * 8]),
        "refs-packed-cut": v2_request(syms, [b"\x0a\x02\x01\x82"]),
        "sample-wt": v2_request(syms, [good + b"\x12\x02\x08\x00"]),
        "start-wt": v2_request(syms, [good + b"\x12\x02\x1a\x00"]),
        "created-len": v2_request(syms, [good + b"\x32\x00"]),
        "histogram-17-len": v2_request(syms, [good + b"\x1a\x03\x8a\x01\x00"]),
        "span-i64": v2_request(syms, [good + f_bytes(3, f_bytes(
            11, b"\x09" + b"\x00" * 8))]),
        "metadata-len": v2_request(syms, [good + b"\x2a\x02\x0a\x00"]),
        "unknown-fields": (b"\x0a\x00" + v2_request(
            syms, [good + b"\x78\x01" + f_bytes(2, b"\x38\x01")])),
        "metadata-twice": v2_request(syms, [good + f_bytes(5, b"\x08\x01\x18\x63")
                                            + f_bytes(5, b"\x18\x04")]),
    }
    for name, raw in wire.items():
        put("fuzz_rw2", "raw-wire-" + name, raw)
        put("fuzz_rw2", "snappy-wire-" + name, rw.compress(raw))


# -------------------------------------------------------------- fuzz_kafka

def corpus_kafka():
    """the remote write 2.0 seeds of fuzz_kafka (the 1.0, JSON and response
    seeds beside them were written by hand and are left as they are)"""
    import rw2
    import snappy

    def v2_valid():
        b = rw2.V2Builder()
        b.series({"__name__": "req_bucket", "job": "x", "le": "0.5"},
                 samples=[(3.0, T0), (4.0, T0 + 15000)],
                 exemplars=[({"trace_id": "4bf92f3577b34da6"}, 0.42, T0)],
                 metadata=("HISTOGRAM", "request latency", "seconds"),
                 created_timestamp=T0 - 60000)
        b.series({"__name__": "up", "job": "x"}, samples=[(1.0, T0)])
        return b.encode()

    def v2_invalid():
        b = rw2.V2Builder()
        b.series({"__name__": "ok", "job": "x"}, samples=[(1.0, T0)])
        b.series([("__name__", "dup"), ("job", "a"), ("job", "b")],
                 samples=[(2.0, T0)])
        b.series({"job": "noname"}, samples=[(3.0, T0)])
        b.series([1, 99], raw=True, samples=[(4.0, T0)])   # ref past the end
        return b.encode()

    v1 = rw.write_request([rw.series("up", {"job": "x"}, [(1.0, T0)])])
    v1_invalid = v1 + rw.raw_write_request(
        [rw.raw_series([("job", "noname")], [(2.0, T0)])])

    # the first byte: 0x30 auto, 0x31 prompb, 0x32 prompb-snappy,
    # 0x80 prompb-v2, 0x84 with a 256-byte limit, 0x88 a 512-byte arena
    put("fuzz_kafka", "v2", b"\x80" + v2_valid())
    put("fuzz_kafka", "v2z", b"\x80" + snappy.compress(v2_valid()))
    put("fuzz_kafka", "v2_small_arena", b"\x88" + v2_valid())
    put("fuzz_kafka", "v2_small_limit", b"\x84" + snappy.compress(v2_valid()))
    put("fuzz_kafka", "v2_invalid_series", b"\x80" + v2_invalid())
    put("fuzz_kafka", "v2_bad_symbols",
        b"\x80" + rw2.v2_request(["x", "__name__", "up"],
                                 [rw2.v2_series([1, 2], [(1.0, T0)])]))
    put("fuzz_kafka", "v2_given_v1", b"\x80" + snappy.compress(v1))
    put("fuzz_kafka", "v2_empty_snappy", b"\x80\x00")
    put("fuzz_kafka", "auto_v2", b"\x30" + v2_valid())
    put("fuzz_kafka", "auto_v2z", b"\x30" + snappy.compress(v2_valid()))
    put("fuzz_kafka", "auto_v1_invalid_series",
        b"\x30" + snappy.compress(v1_invalid))
    put("fuzz_kafka", "auto_both_versions", b"\x30" + v2_valid() + v1)
    put("fuzz_kafka", "prompb_given_v2", b"\x31" + v2_valid())
    put("fuzz_kafka", "prompb_snappy_given_v2",
        b"\x32" + snappy.compress(v2_invalid()))


# ------------------------------------------------------------------- main

# ------------------------------------------------------------- fuzz_route

def corpus_route():
    """the fuzz_rw and fuzz_rw2 seeds under 8 KB, behind their version byte
    (0: 1.0, 1: 2.0), and requests whose series the routes tell apart"""
    for src, vbyte in (("fuzz_rw", b"\x00"), ("fuzz_rw2", b"\x01")):
        d = os.path.join(HERE, "corpus", src)
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            if len(data) <= 8192:
                put("fuzz_route", "%s-%s" % (src[5:], name), vbyte + data)
    S = rw.series
    mix = [S(name, labels, [(1.0, T0)])
           for name, labels in (("a1", {"job": "x"}), ("ab", {"job": "y"}),
                                ("b", {"job": "x", "instance": "h1"}),
                                ("cb", {"instance": ""}), ("a", {}),
                                ("zb", {"job": "y", "instance": "h2"}))]
    put("fuzz_route", "mix-v1", b"\x00" + rw.write_request(mix))
    put("fuzz_route", "unsorted-v1", b"\x00" + rw.raw_write_request([
        rw.raw_series([("job", "x"), ("__name__", "ab")], [(1.0, T0)]),
        rw.raw_series([("instance", "h"), ("__name__", "a")], [(2.0, T0)])]))




# ------------------------------------------------------------- fuzz_snappy

def corpus_snappy():
    """Mode byte 0: a compressed block (decoded by both); 1: data that
    libsnappy compresses first.  Blocks long enough for the fast loop."""
    body = rw.write_request([
        rw.series("http_requests_total",
                  {"job": "api-%d" % (i % 7),
                   "instance": "10.0.%d.%d:9100" % (i // 250, i % 250),
                   "path": "/p/%d" % (i * 37 % 1000)},
                  [(float(i), T0 + i)])
        for i in range(400)])
    texts = [b"hello hello hello hello",
             bytes(range(256)) * 3,
             b"ab" * 500 + bytes(range(200)) + b"abc" * 300]
    texts.append(body)
    for i, t in enumerate(texts):
        put("fuzz_snappy", "block-%02d" % i, b"\x00" + rw.compress(t))
        put("fuzz_snappy", "data-%02d" % i, b"\x01" + t)


TARGETS = {
    "fuzz_rw": corpus_rw,
    "fuzz_rw2": corpus_rw2,
    "fuzz_exemplar": corpus_exemplar,
    "fuzz_promql": corpus_promql,
    "fuzz_matcher": corpus_matcher,
    "fuzz_time": corpus_time,
    "fuzz_wal": corpus_wal,
    "fuzz_policy": corpus_policy,
    "fuzz_json": corpus_json,
    "fuzz_kafka": corpus_kafka,
    "fuzz_route": corpus_route,
    "fuzz_snappy": corpus_snappy,
}

def main(argv):
    with tempfile.TemporaryDirectory() as tmp:
        rw.load_protos(tmp)
        names = argv or sorted(TARGETS)
        for n in names:
            if n not in TARGETS:
                sys.exit("unknown target %s (have: %s)" % (n, ", ".join(sorted(TARGETS))))
            TARGETS[n]()
            d = os.path.join(HERE, "corpus", n)
            print("%s: %d seeds, %d bytes" % (
                n, len(os.listdir(d)),
                sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))))


if __name__ == "__main__":
    main(sys.argv[1:])
