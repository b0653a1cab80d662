"""Hostile writes: small bodies that cost much memory to decode.

Each case posts one body built to make the gateway copy far more than it
was sent (5,000,000 empty exemplars in 458 KB of snappy, a series with a
million labels, huge label values, two million series of one label, a 2.0
symbol referenced by every series), 1.0 and 2.0, to a gateway with the
exemplar zone on (capture copies labels and exemplars out of the body) and
two targets (as sent, and translated).  The worker's peak memory (VmHWM in
/proc/<pid>/status, one worker, a fresh nginx per case) must grow by less
than 150 MB; the answer must be the documented one (413 naming the limit,
nothing forwarded; or 204 for a large valid write); then a valid write must
still be answered 204 and forwarded.

PROMGATE_HOSTILE_MEASURE=1 only measures and prints (no assertion on the
answer or the memory): how the numbers before the limits were taken.
"""

import os
import time

import pytest

import rw
import rw2
from conftest import gateway_http
from fakeup import free_port

N = "__name__"
MB = 1 << 20
PEAK_LIMIT = 150 * MB
MEASURE_ONLY = os.environ.get("PROMGATE_HOSTILE_MEASURE") == "1"


def vm_hwm(pid):
    """the process' peak resident memory, bytes"""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM for %d" % pid)


# ------------------------------------------------------------ bodies (raw)

def name_label(name):
    return rw.pb_len(1, rw.raw_label(N, name))


SAMPLE = rw.pb_len(2, rw.raw_sample(1.0, 1700000000000))


def v1_empty_exemplars(n=5000000):
    """one series, n exemplars without labels (`1a 00`)"""
    ts = name_label(rw.uniq("hx")) + SAMPLE + b"\x1a\x00" * n
    return rw.compress(rw.pb_len(1, ts))


def v1_many_labels(n=1000000):
    """one series of n labels, and one exemplar (capture copies them)"""
    labels = b"".join(rw.pb_len(1, rw.raw_label("l%07d" % i, "v"))
                      for i in range(n))
    ts = (name_label(rw.uniq("hx")) + labels + SAMPLE
          + rw2.f_bytes(3, rw2.f_bytes(1, rw2.v1_label("t", "x"))))
    return rw.compress(rw.pb_len(1, ts))


def v1_huge_values(nseries=20, size=MB):
    """series with a 1 MB label value and an exemplar with one too"""
    big = b"x" * size
    out = []
    for i in range(nseries):
        ex = rw2.f_bytes(1, rw2.v1_label("trace_id", big))
        ts = (name_label("hxhuge") + rw.pb_len(1, rw.raw_label("i", str(i)))
              + rw.pb_len(1, rw.raw_label("v", big)) + SAMPLE
              + rw2.f_bytes(3, ex))
        out.append(rw.pb_len(1, ts))
    return rw.compress(b"".join(out))


def v1_many_series(n=2000000, exemplar=True):
    """n series of one label (__name__), each with an empty exemplar"""
    ts = name_label("hxs") + (b"\x1a\x00" if exemplar else b"")
    return rw.compress(rw.pb_len(1, ts) * n)


def v1_many_series_valid(n=300000):
    """n series of one label each with a sample: large, valid"""
    name = rw.uniq("hxv")
    t = rw.now_ms()
    return rw.compress(b"".join(
        rw.pb_len(1, name_label(name)
                  + rw.pb_len(1, rw.raw_label("i", "%07d" % i))
                  + rw.pb_len(2, rw.raw_sample(1.0, t)))
        for i in range(n)))


def v2_empty_exemplars(n=5000000):
    body = rw2.v2_request(["", N, rw.uniq("hx")],
                          [rw2.v2_series([1, 2], samples=[(1.0, 1)])
                           + b"\x22\x00" * n])
    return rw2.snappy.compress(body)


def v2_many_labels(n=200000):
    """one series of n labels: names l0.., one value"""
    symbols = ["", N, rw.uniq("hx"), "v"] + ["l%07d" % i for i in range(n)]
    refs = [1, 2] + [r for i in range(n) for r in (4 + i, 3)]
    body = rw2.v2_request(symbols, [rw2.v2_series(
        refs, samples=[(1.0, 1)], exemplars=[([], 1.0, 1)])])
    return rw2.snappy.compress(body)


def v2_one_symbol_everywhere(nseries=5000, size=16000):
    """one 16000-byte symbol (under promgate_max_label_bytes with its name)
    as the value of a label of every series and of its exemplar: a few
    bytes a series, 32 KB once resolved"""
    big = "y" * size
    s = (rw2.f_packed(1, [1, 2, 3, 4]) + rw2.f_bytes(4, rw2.f_packed(1, [3, 4])))
    body = rw2.v2_request(["", N, "hxsym", "a", big],
                          [s + rw2.f_varint(6, i + 1) for i in range(nseries)])
    return rw2.snappy.compress(body)


def v2_huge_values(nseries=40, size=MB):
    """2.0 series with their own 1 MB value symbols"""
    symbols = ["", N, "hxhuge2", "v", "trace_id"]
    series = []
    for i in range(nseries):
        symbols.append(("%d" % i) + "z" * size)
        k = len(symbols) - 1
        series.append(rw2.v2_series([1, 2, 3, k], samples=[(1.0, 1)],
                                    exemplars=[([4, k], 1.0, 1)]))
    return rw2.snappy.compress(rw2.v2_request(symbols, series))


# (id, builder, 2.0, expected status, text the answer must hold)
CASES = [
    ("v1-5M-empty-exemplars", v1_empty_exemplars, False, 413,
     "promgate_max_exemplars"),
    ("v1-1M-labels-one-series", v1_many_labels, False, 413,
     "promgate_max_labels"),
    ("v1-20-series-1MB-values", v1_huge_values, False, 413,
     "promgate_max_label_bytes"),
    ("v1-2M-series-one-label-and-exemplar", v1_many_series, False, 413,
     "promgate_max_exemplars"),
    ("v1-300k-series-valid", v1_many_series_valid, False, 204, None),
    ("v2-5M-empty-exemplars", v2_empty_exemplars, True, 413,
     "promgate_max_exemplars"),
    ("v2-200k-labels-one-series", v2_many_labels, True, 413,
     "promgate_max_labels"),
    ("v2-one-16KB-symbol-in-every-series", v2_one_symbol_everywhere, True,
     413, "label expansion"),
    ("v2-40-series-1MB-values", v2_huge_values, True, 413,
     "promgate_max_label_bytes"),
]


@pytest.fixture
def gw(make_nginx, make_fake):
    """one worker, exemplar capture on, two targets: as sent and translated
    to the other version"""
    def make(v2):
        rec = make_fake()
        tr = make_fake()
        port = free_port()
        http = gateway_http(
            port, [("rec", rec.url, "proto=asis"), ("tr", tr.url,
                                      "proto=v1" if v2 else "proto=v2")],
            retries=0, max_decoded="64m", max_body="64m",
            http_extra="    promgate_exemplar_zone hx:4m max=1000;\n",
            write_extra="promgate_exemplars hx; client_body_buffer_size 64m;")
        n = make_nginx(http, workers=1)
        n.rec, n.tr = rec, tr
        return n
    return make


@pytest.mark.parametrize("cid,build,v2,status,text", CASES,
                         ids=[c[0] for c in CASES])
def test_hostile_write_memory(gw, cid, build, v2, status, text):
    body = build()
    n = gw(v2)
    url = n.url("/api/v1/write")
    headers = rw2.V2_HEADERS if v2 else rw.RW_HEADERS

    # warm the worker (first write, scratch buffers) with a valid write
    warm = (rw2.post(url, rw2.v2_request(["", N, rw.uniq("hxw")],
                                         [rw2.v2_series([1, 2],
                                                        [(1.0, rw.now_ms())])]))
            if v2 else rw.write(url, [rw.series(rw.uniq("hxw"), {},
                                                [(1.0, rw.now_ms())])]))
    assert warm.status_code == 204
    time.sleep(0.2)

    (pid,) = n.worker_pids()
    before = vm_hwm(pid)
    posts = len(n.rec.requests)

    t0 = time.monotonic()
    r = rw.post(url, body, headers=headers, timeout=120)
    took = time.monotonic() - t0
    time.sleep(0.2)

    grew = vm_hwm(pid) - before
    print("\n%s: %d bytes sent, answered %d in %.2fs, worker peak +%.1f MB%s"
          % (cid, len(body), r.status_code, took, grew / MB,
             (": " + r.text.strip()[:200]) if r.status_code >= 400 else ""))

    if MEASURE_ONLY:
        return

    assert r.status_code == status, r.text
    if text:
        assert text in r.text, r.text
        assert len(n.rec.requests) == posts, "a refused write was forwarded"
        assert len(n.tr.requests) == posts
    assert grew < PEAK_LIMIT, "worker peak grew %.1f MB" % (grew / MB)

    # the same worker still serves valid writes
    assert n.worker_pids() == {pid}
    ok = rw.write(url, [rw.series(rw.uniq("hxafter"), {"a": "b"},
                                  [(1.0, rw.now_ms())],
                                  exemplars=[({"trace_id": "abc"}, 1.0,
                                              rw.now_ms())])])
    assert ok.status_code == 204, ok.text
    assert len(n.rec.requests) > posts


def test_limits_configurable(make_nginx, make_fake):
    """the directives move the limits: 0 turns one off, a lower one refuses
    what the default lets through"""
    rec = make_fake()
    port = free_port()
    server_extra = """
        location = /tight {
            promgate_remote_write;
            promgate_forward /_rw/rec;
            promgate_max_exemplars 2;
            promgate_max_labels 3;
            promgate_max_label_bytes 10;
        }
        location = /off {
            promgate_remote_write;
            promgate_forward /_rw/rec;
            promgate_max_exemplars 0;
        }
"""
    n = make_nginx(gateway_http(port, [("rec", rec.url)], retries=0,
                                server_extra=server_extra), workers=1)

    def post(path, body):
        return rw.post(n.url(path), rw.compress(rw.pb_len(1, body)))

    ex = rw2.f_bytes(3, rw2.f_double(2, 1.0))
    two = name_label("m") + ex * 2
    assert post("/tight", two).status_code == 204
    r = post("/tight", two + ex)
    assert r.status_code == 413 and "promgate_max_exemplars (2)" in r.text
    r = post("/tight", name_label("m") + rw.pb_len(1, rw.raw_label("a", "1"))
             + rw.pb_len(1, rw.raw_label("b", "1")))
    assert r.status_code == 204, r.text
    r = post("/tight", name_label("m") + b"".join(
        rw.pb_len(1, rw.raw_label(k, "1")) for k in "abc"))
    assert r.status_code == 413 and "promgate_max_labels (3)" in r.text
    r = post("/tight", name_label("m") + rw.pb_len(1, rw.raw_label("a",
                                                                   "x" * 9)))
    assert r.status_code == 204, r.text
    r = post("/tight", name_label("m") + rw.pb_len(1, rw.raw_label("a",
                                                                   "x" * 10)))
    assert r.status_code == 413 and "promgate_max_label_bytes (10)" in r.text

    many = name_label("m") + b"\x1a\x00" * 200000
    assert post("/off", many).status_code == 204
    r = post("/api/v1/write", many)
    assert r.status_code == 413 and "promgate_max_exemplars (100000)" in r.text
