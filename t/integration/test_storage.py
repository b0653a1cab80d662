"""Data written through the gateway lands, with the right values, in both a
real Prometheus and a real VictoriaMetrics (ack all)."""

import math
import os
import time

import pytest

import rw
from procs import as_plain, poll_samples, wait_for

INF = float("inf")


def no_count(r, name):
    """a 1.0 answer carries no X-Prometheus-Remote-Write-*-Written header,
    as Prometheus' own 1.0 answers do not (test_protocols checks 2.0's)"""
    return name not in r.headers


def finite_or_inf(vals):
    """drop NaN and VictoriaMetrics' exported staleness markers (None)"""
    return [(t, v) for t, v in vals if v is not None and not math.isnan(v)]


def one(samples):
    assert len(samples) == 1, as_plain(samples)
    return next(iter(samples.values()))


def test_samples_reach_both_storages(storage_gateway, prom, vm):
    gw = storage_gateway()
    n = rw.uniq("st")
    t = rw.now_ms() - 20000
    req = [
        rw.series(n + "_a", {"job": "pg", "b": "2"}, [(1.0, t), (2.0, t + 1000)]),
        rw.series(n + "_b", {"job": "pg"}, [(-5.5, t), (12345.678, t + 1000)]),
        # the same label set again in the same request
        rw.series(n + "_a", {"job": "pg", "b": "2"}, [(3.0, t + 2000)]),
        # a staleness marker ends the series
        rw.series(n + "_st", {"job": "pg"}, [(7.0, t), (rw.STALE_NAN, t + 1000)]),
        rw.series(n + "_inf", {"job": "pg"},
                  [(INF, t), (-INF, t + 1000), (float("nan"), t + 2000), (4.0, t + 3000)]),
    ]
    r = rw.write(gw.write_url, req)
    assert r.status_code == 204, r.text
    assert no_count(r, "X-Prometheus-Remote-Write-Samples-Written")
    assert no_count(r, "X-Prometheus-Remote-Write-Histograms-Written")
    assert no_count(r, "X-Prometheus-Remote-Write-Exemplars-Written")

    # Prometheus: acknowledged means stored, so no polling needed
    a = prom.samples(n + "_a")
    assert as_plain(a) == {(("__name__", n + "_a"), ("b", "2"), ("job", "pg")):
                           [(t, 1.0), (t + 1000, 2.0), (t + 2000, 3.0)]}
    assert one(prom.samples(n + "_b")) == [(t, -5.5), (t + 1000, 12345.678)]
    assert one(prom.samples(n + "_st")) == [(t, 7.0)]
    assert prom.query(n + "_st")["result"] == [], "staleness marker not applied"
    inf = one(prom.samples(n + "_inf"))
    assert [ts for ts, _ in inf] == [t, t + 1000, t + 2000, t + 3000]
    assert inf[0][1] == INF and inf[1][1] == -INF and math.isnan(inf[2][1]) and inf[3][1] == 4.0

    # VictoriaMetrics (searchable after a flush; poll)
    va = poll_samples(vm, n + "_a", 1, min_samples=3)
    assert as_plain(va) == as_plain(a)
    assert one(poll_samples(vm, n + "_b", 1, min_samples=2)) == [(t, -5.5), (t + 1000, 12345.678)]
    st = one(poll_samples(vm, n + "_st", 1))
    assert st[0] == (t, 7.0) and finite_or_inf(st) == [(t, 7.0)]
    # VictoriaMetrics 1.79 drops a plain NaN, keeps the infinities
    assert finite_or_inf(one(poll_samples(vm, n + "_inf", 1, min_samples=3))) == \
        [(t, INF), (t + 1000, -INF), (t + 3000, 4.0)]


def test_exemplars_reach_prometheus(storage_gateway, prom):
    gw = storage_gateway()
    n = rw.uniq("ex")
    t = rw.now_ms() - 10000
    labels = {"job": "pg", "path": "/x"}
    r = rw.write(gw.write_url, [
        rw.series(n + "_total", labels, [(1.0, t), (2.0, t + 1000)],
                  exemplars=[({"trace_id": "aaa1"}, 0.25, t + 1000)])])
    assert r.status_code == 204, r.text
    assert no_count(r, "X-Prometheus-Remote-Write-Samples-Written")
    assert no_count(r, "X-Prometheus-Remote-Write-Exemplars-Written")

    # an exemplar-only series (no samples) for the now known series
    r = rw.write(gw.write_url, [
        rw.series(n + "_total", labels,
                  exemplars=[({"trace_id": "bbb2", "span_id": "s1"}, 0.5, t + 2000)])])
    assert r.status_code == 204, r.text
    assert no_count(r, "X-Prometheus-Remote-Write-Samples-Written")
    assert no_count(r, "X-Prometheus-Remote-Write-Exemplars-Written")

    ex = prom.exemplars(n + "_total", t / 1000 - 60, time.time() + 60)
    assert len(ex) == 1, ex
    assert ex[0]["seriesLabels"] == dict(labels, __name__=n + "_total")
    got = [(e["labels"], float(e["value"]), round(float(e["timestamp"]) * 1000))
           for e in ex[0]["exemplars"]]
    assert got == [({"trace_id": "aaa1"}, 0.25, t + 1000),
                   ({"span_id": "s1", "trace_id": "bbb2"}, 0.5, t + 2000)]


def test_native_histogram_reaches_prometheus(storage_gateway, prom):
    gw = storage_gateway()
    n = rw.uniq("hist")
    t = rw.now_ms() - 5000
    r = rw.write(gw.write_url, [rw.series(n, {"job": "pg"},
                                          histograms=[rw.native_histogram(t)])])
    assert r.status_code == 204, r.text
    assert no_count(r, "X-Prometheus-Remote-Write-Histograms-Written")
    assert no_count(r, "X-Prometheus-Remote-Write-Samples-Written")
    h = one(prom.samples(n))
    assert len(h) == 1 and h[0][0] == t
    assert h[0][1]["count"] == "6" and h[0][1]["sum"] == "12.5"


def test_native_histogram_in_victoriametrics(storage_gateway, vm, serverset):
    """the version's truth: VictoriaMetrics 1.79 drops a native histogram
    (204), 1.145 keeps it converted into _bucket{vmrange}, _sum, _count"""
    gw = storage_gateway()
    n = rw.uniq("vmhist")
    t = rw.now_ms() - 5000
    r = rw.write(gw.write_url, [rw.series(n, {"job": "pg"},
                                          histograms=[rw.native_histogram(t)])])
    assert r.status_code == 204, r.text
    sel = '{__name__=~"%s(_bucket|_sum|_count)?"}' % n
    keeps = serverset.vm_native_histograms
    if keeps is None:
        pytest.skip("VictoriaMetrics %s: native histograms not measured"
                    % serverset.vm_version_str)
    if keeps:
        got = poll_samples(vm, sel, 6)
        plain = {dict(k)["__name__"][len(n):] + dict(k).get("vmrange", ""): v
                 for k, v in got.items()}
        assert plain == {
            "_count": [(t, 6.0)], "_sum": [(t, 12.5)],
            "_bucket-1.000e-128...1.000e-128": [(t, 1.0)],
            "_bucket5.000e-01...1.000e+00": [(t, 2.0)],
            "_bucket1.000e+00...2.000e+00": [(t, 1.0)],
            "_bucket2.000e+00...4.000e+00": [(t, 2.0)]}, as_plain(got)
    else:
        # a valid sample written after it is visible, the histogram is not
        r = rw.write(gw.write_url, [rw.series(n + "_after", {"job": "pg"}, [(1.0, t)])])
        assert r.status_code == 204, r.text
        assert poll_samples(vm, n + "_after", 1)
        assert vm.export(sel) == {}


def test_metadata_only_request(storage_gateway):
    gw = storage_gateway()
    n = rw.uniq("meta")
    r = rw.write(gw.write_url, metadata_list=[
        rw.metadata(n + "_total", "COUNTER", "Requests served."),
        rw.metadata(n + "_temp", "GAUGE", "Temperature.", "celsius")])
    assert r.status_code == 204, r.text
    assert no_count(r, "X-Prometheus-Remote-Write-Samples-Written")


def big_request(name, nseries=1000, value_len=1100):
    """about 1.1 MB after snappy: random label values do not compress"""
    t = rw.now_ms() - 5000
    ss = [rw.series(name, {"job": "pgbig", "id": "%05d" % i,
                           "blob": os.urandom(value_len // 2).hex()},
                    [(float(i), t)]) for i in range(nseries)]
    body = rw.compress(rw.write_request(ss))
    assert len(body) >= 1_000_000, len(body)
    return body, nseries, float(sum(range(nseries)))


def check_big(prom, vm, name, nseries, total):
    assert float(prom.query("count(%s)" % name)["result"][0]["value"][1]) == nseries
    assert float(prom.query("sum(%s)" % name)["result"][0]["value"][1]) == total

    def vm_ok():
        vm.flush()
        res = vm.query("count(%s)" % name)["result"]
        return res and float(res[0]["value"][1]) == nseries
    assert wait_for(vm_ok, 60, 0.5), vm.query("count(%s)" % name)
    assert float(vm.query("sum(%s)" % name)["result"][0]["value"][1]) == total


@pytest.mark.parametrize("buffer_size", [None, "32m"],
                         ids=["default-buffer-temp-file", "buffer-32m"])
def test_one_megabyte_body(storage_gateway, prom, vm, buffer_size):
    extra = "client_body_buffer_size %s;" % buffer_size if buffer_size else ""
    gw = storage_gateway(write_extra=extra)
    name = rw.uniq("big")
    body, nseries, total = big_request(name)
    r = rw.post(gw.write_url, body, timeout=60)
    assert r.status_code == 204, r.text
    assert no_count(r, "X-Prometheus-Remote-Write-Samples-Written")
    check_big(prom, vm, name, nseries, total)


def test_one_megabyte_body_chunked(storage_gateway, prom, vm):
    """Transfer-Encoding: chunked, 64 KiB chunks: the body arrives in many
    buffers and ends up in a temp file"""
    gw = storage_gateway(write_extra="client_body_buffer_size 16k;")
    name = rw.uniq("bigc")
    body, nseries, total = big_request(name)
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    r = rw.post(gw.write_url, chunks, timeout=60)
    assert r.status_code == 204, r.text
    check_big(prom, vm, name, nseries, total)
