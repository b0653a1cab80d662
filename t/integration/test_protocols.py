"""Remote write 1.0 and 2.0 through the gateway, as a recording upstream
sees them: each target gets the protocol it speaks (proto=v1|v2|asis), the
original bytes where no translation is needed, one body per protocol shared
by targets and retries, headers that match the body; invalid series are
left out (promgate_invalid_series drop) or refuse the request (reject); a
2.0 sender gets the Written headers, a 1.0 sender none (as from Prometheus).
"""

import pytest
import snappy

import rw
import rw2
from fakeup import Resp
from promtext import scrape


# ------------------------------------------------------------- helpers

def v1_series(wr):
    """[(labels, samples)] of a decoded WriteRequest"""
    return [([(l.name, l.value) for l in ts.labels],
             [(s.value, s.timestamp) for s in ts.samples]) for ts in wr.timeseries]


def labels_of(name, extra):
    return sorted([("__name__", name)] + list(extra.items()),
                  key=lambda kv: kv[0].encode())


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def recorders(make_fake):
    return make_fake(), make_fake(), make_fake()


def three_gateway(gateway, recorders, protos=("proto=v1", "proto=v2", "proto=asis"),
                  **kw):
    a, b, c = recorders
    return gateway([("a", a.url, protos[0]), ("b", b.url, protos[1]),
                    ("c", c.url, protos[2])], **kw)


def v2_request(ts, name, n=3, extra=None, meta=True):
    b = rw2.V2Builder()
    for i in range(n):
        labels = {"__name__": name, "i": str(i)}
        labels.update(extra or {})
        b.series(labels, samples=[(float(i) + 0.5, ts)],
                 metadata=("COUNTER", "requests served", "seconds") if meta else None)
    return b


# ------------------------------------------------------------------- tests

def test_v1_to_every_protocol(gateway, recorders):
    gw = three_gateway(gateway, recorders)
    ts = rw.now_ms()
    name = rw.uniq("p1")
    body = rw.compress(rw.write_request(
        [rw.series(name, {"i": str(i)}, samples=[(i * 1.0, ts)],
                   exemplars=[({"trace_id": "t%d" % i}, 1.0, ts)])
         for i in range(3)],
        [rw.metadata(name, "COUNTER", "requests served", "seconds")]))
    r = rw.post(gw.write_url, body)
    assert r.status_code == 204, r.text
    # a 1.0 answer carries no counts, as Prometheus' does not
    for h in rw2.WRITTEN_HEADERS:
        assert h not in r.headers

    a, b, c = (x.wait_requests(1)[0] for x in recorders)
    # v1 and asis: the sender's bytes and headers
    for rec in (a, c):
        assert rec.body == body
        assert rec.headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    # v2: translated, headers of 2.0
    assert b.headers["Content-Type"] == rw2.V2_CONTENT_TYPE
    assert b.headers["X-Prometheus-Remote-Write-Version"] == "2.0.0"
    assert b.headers["Content-Encoding"] == "snappy"
    v2 = rw2.decode_v2(snappy.uncompress(b.body))
    assert v2["symbols"][0] == ""
    assert len(v2["symbols"]) == len(set(v2["symbols"]))
    got = [(s["labels"], s["samples"]) for s in v2["timeseries"]]
    assert got == [(labels_of(name, {"i": str(i)}), [(i * 1.0, ts)])
                   for i in range(3)]
    for i, s in enumerate(v2["timeseries"]):
        # metadata attached to each series of the family it describes
        assert s["metadata"] == (1, "requests served", "seconds")
        assert s["exemplars"] == [([("trace_id", "t%d" % i)], 1.0, ts)]
        assert s["created_timestamp"] == 0


def test_v2_to_every_protocol(gateway, recorders):
    gw = three_gateway(gateway, recorders)
    ts = rw.now_ms()
    name = rw.uniq("p2")
    req = v2_request(ts, name)
    body = snappy.compress(req.encode())
    r = rw2.post(gw.write_url, req.encode())
    assert r.status_code == 204, r.text
    assert [r.headers.get(h) for h in rw2.WRITTEN_HEADERS] == ["3", "0", "0"]

    a, b, c = (x.wait_requests(1)[0] for x in recorders)
    # v2 and asis: the sender's bytes
    for rec in (b, c):
        assert rec.body == body
        assert rec.headers["Content-Type"] == rw2.V2_CONTENT_TYPE
        assert rec.headers["X-Prometheus-Remote-Write-Version"] == "2.0.0"
    # v1: translated, metadata moved into WriteRequest.metadata, once
    assert a.headers["Content-Type"] == "application/x-protobuf"
    assert a.headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    wr = rw.decode_request(a.body)
    assert v1_series(wr) == [(labels_of(name, {"i": str(i)}), [(i + 0.5, ts)])
                             for i in range(3)]
    types, _ = rw.pb()
    assert [(m.metric_family_name, m.type, m.help, m.unit) for m in wr.metadata] \
        == [(name, types.MetricMetadata.COUNTER, "requests served", "seconds")]


def test_one_body_per_protocol_shared_by_retries(gateway, make_fake):
    """two v2 targets, one failing twice: every attempt carries the same
    translated bytes"""
    x = make_fake([Resp(500), Resp(503)])
    y = make_fake()
    gw = gateway([("x", x.url, "proto=v2"), ("y", y.url, "proto=v2")],
                 backoff="10ms 20ms")
    ts = rw.now_ms()
    body = rw.compress(rw.write_request(
        [rw.series(rw.uniq("r"), {"k": "v"}, samples=[(1.0, ts)])]))
    r = rw.post(gw.write_url, body)
    assert r.status_code == 204, r.text
    bodies = [q.body for q in x.posts()] + [q.body for q in y.posts()]
    assert len(bodies) == 4
    assert len(set(bodies)) == 1 and bodies[0] != body
    st = scrape(gw.status_url)
    assert st.get("promgate_encoded_bodies_total", version="2.0") == 1


def test_invalid_series_dropped_v1(gateway, recorders):
    gw = three_gateway(gateway, recorders)
    ts = rw.now_ms()
    name = rw.uniq("inv")
    good = [rw.raw_series([("__name__", name), ("i", str(i))], [(1.0, ts)])
            for i in range(2)]
    bad = [
        rw.raw_series([("job", "nameless")], [(1.0, ts)]),                  # no __name__
        rw.raw_series([("__name__", name), ("a", "1"), ("a", "2")], [(1.0, ts)]),
        rw.raw_series([("__name__", name), ("b", b"\xff\xfe")], [(1.0, ts)]),
        rw.raw_series([("__name__", name), ("", "x")], [(1.0, ts)]),
    ]
    # UTF-8 names and unsorted label names are valid, as in Prometheus 3
    utf8 = rw.raw_series([("__name__", "http.server.duration"),
                          ("service.name", "api")], [(2.0, ts)])
    unsorted = rw.raw_series([("zone", "z"), ("__name__", name), ("i", "u")],
                             [(3.0, ts)])
    raw = rw.raw_write_request([good[0], bad[0], bad[1], utf8, bad[2], unsorted,
                                bad[3], good[1]])
    r = rw.post(gw.write_url, rw.compress(raw))
    assert r.status_code == 204, r.text

    a, b, c = (x.wait_requests(1)[0] for x in recorders)
    for rec in (a, c):
        wr = rw.decode_request(rec.body)
        assert v1_series(wr) == [
            ([("__name__", name), ("i", "0")], [(1.0, ts)]),
            ([("__name__", "http.server.duration"), ("service.name", "api")],
             [(2.0, ts)]),
            ([("zone", "z"), ("__name__", name), ("i", "u")], [(3.0, ts)]),
            ([("__name__", name), ("i", "1")], [(1.0, ts)])]
    assert a.body == c.body          # one filtered body, shared
    v2 = rw2.decode_v2(snappy.uncompress(b.body))
    assert len(v2["timeseries"]) == 4

    st = scrape(gw.status_url)
    assert st.get("promgate_invalid_series_total", reason="missing_name") == 1
    assert st.get("promgate_invalid_series_total", reason="duplicate_label") == 1
    assert st.get("promgate_invalid_series_total", reason="invalid_utf8") == 1
    assert st.get("promgate_invalid_series_total", reason="invalid_label_name") == 1
    assert st.get("promgate_invalid_samples_total") == 4
    assert "dropped 4 invalid series" in gw.error_log_text()


def test_invalid_series_reject(gateway, recorders):
    gw = three_gateway(gateway, recorders, write_extra="promgate_invalid_series reject;")
    ts = rw.now_ms()
    raw = rw.raw_write_request([
        rw.raw_series([("__name__", "ok_metric")], [(1.0, ts)]),
        rw.raw_series([("job", "nameless")], [(1.0, ts)])])
    r = rw.post(gw.write_url, rw.compress(raw))
    assert r.status_code == 400
    assert "series 1" in r.text and "__name__" in r.text
    for x in recorders:
        assert x.posts() == []


def test_all_invalid_answers_204_and_forwards_nothing(gateway, recorders):
    gw = three_gateway(gateway, recorders)
    raw = rw.raw_write_request([rw.raw_series([("job", "x")], [(1.0, rw.now_ms())])])
    r = rw.post(gw.write_url, rw.compress(raw))
    assert r.status_code == 204, r.text
    for x in recorders:
        assert x.posts() == []


def test_invalid_series_dropped_v2(gateway, recorders):
    gw = three_gateway(gateway, recorders)
    ts = rw.now_ms()
    name = rw.uniq("inv2")
    b = rw2.V2Builder()
    b.series({"__name__": name, "i": "0"}, samples=[(1.0, ts)])
    b.series({"job": "no-name"}, samples=[(2.0, ts)])
    b.series([b.ref("__name__"), b.ref(name), b.ref("i")], samples=[(3.0, ts)],
             raw=True)
    b.series([b.ref("__name__"), b.ref(name), 9999, b.ref("x")],
             samples=[(4.0, ts)], raw=True)
    b.series({"__name__": name, "i": "1"}, samples=[(5.0, ts)])
    r = rw2.post(gw.write_url, b.encode())
    assert r.status_code == 204, r.text
    assert r.headers["X-Prometheus-Remote-Write-Samples-Written"] == "2"

    a, bb, c = (x.wait_requests(1)[0] for x in recorders)
    assert v1_series(rw.decode_request(a.body)) == [
        (labels_of(name, {"i": "0"}), [(1.0, ts)]),
        (labels_of(name, {"i": "1"}), [(5.0, ts)])]
    for rec in (bb, c):
        v2 = rw2.decode_v2(snappy.uncompress(rec.body))
        assert [s["samples"] for s in v2["timeseries"]] == [[(1.0, ts)], [(5.0, ts)]]
    st = scrape(gw.status_url)
    assert st.get("promgate_invalid_series_total", reason="missing_name") == 1
    assert st.get("promgate_invalid_series_total", reason="invalid_symbol_ref") == 2


def test_v2_written_counts_follow_v2_targets(gateway, make_fake):
    """a 2.0 target that says it wrote less lowers the counts the sender
    gets; a 1.0 target says nothing and counts as having written all"""
    x = make_fake(default=Resp(204, headers={
        "X-Prometheus-Remote-Write-Samples-Written": "2",
        "X-Prometheus-Remote-Write-Histograms-Written": "0",
        "X-Prometheus-Remote-Write-Exemplars-Written": "0"}))
    y = make_fake()
    gw = gateway([("x", x.url, "proto=asis"), ("y", y.url)])
    r = rw2.post(gw.write_url, v2_request(rw.now_ms(), rw.uniq("w")).encode())
    assert r.status_code == 204, r.text
    assert r.headers["X-Prometheus-Remote-Write-Samples-Written"] == "2"


@pytest.mark.parametrize("ctype,code", [
    ("application/x-protobuf;proto=io.prometheus.write.v3.Request", 415),
    ("application/x-protobuf;proto=prometheus.WriteRequest", 204),
    ("application/x-protobuf", 204),
    ("application/json", 415),
])
def test_content_types(gateway, make_fake, ctype, code):
    up = make_fake()
    gw = gateway([("u", up.url)])
    body = rw.compress(rw.write_request([rw.series(rw.uniq("ct"), {},
                                                   samples=[(1.0, rw.now_ms())])]))
    r = rw.post(gw.write_url, body, headers={"Content-Type": ctype})
    assert r.status_code == code, r.text
    if code == 415:
        assert "prometheus.WriteRequest" in r.text
        assert "io.prometheus.write.v2.Request" in r.text


def test_v2_encoding_must_be_snappy(gateway, make_fake):
    up = make_fake()
    gw = gateway([("u", up.url)])
    r = rw2.post(gw.write_url, v2_request(rw.now_ms(), "m").encode(),
                 headers={"Content-Encoding": "zstd"})
    assert r.status_code == 415
    assert "snappy" in r.text


def test_bad_forward_proto_refused_by_nginx_t(make_nginx, make_fake):
    from conftest import gateway_http
    from fakeup import free_port
    up = make_fake()
    n = make_nginx(gateway_http(free_port(), [("u", up.url, "proto=v3")]), start=False)
    n.error_log_problems = lambda: []     # the [emerg] is the point
    rc, out = n.test_config()
    assert rc != 0
    assert "proto=v1, proto=v2 or proto=asis" in out


@pytest.mark.parametrize("ctype", [
    "Application/X-Protobuf",
    "application/x-protobuf;" + "x" * 700,
    'application/x-protobuf; proto="prometheus.WriteRequest"',
])
def test_targets_get_the_canonical_headers(gateway, make_fake, ctype):
    """promgate takes Content-Types that Prometheus 3 answers 415 to; a
    target gets the type, encoding and version of the body it is sent"""
    up = make_fake()
    gw = gateway([("u", up.url)])
    body = rw.compress(rw.write_request([rw.series(rw.uniq("cn"), {},
                                                   samples=[(1.0, rw.now_ms())])]))
    r = rw.post(gw.write_url, body, headers={"Content-Type": ctype,
                                             "Content-Encoding": "SNAPPY"},
                drop=("X-Prometheus-Remote-Write-Version",))
    assert r.status_code == 204, r.text
    rec = up.wait_requests(1)[0]
    assert rec.body == body
    assert rec.headers.get_all("Content-Type") == ["application/x-protobuf"]
    assert rec.headers.get_all("Content-Encoding") == ["snappy"]
    assert rec.headers.get_all("X-Prometheus-Remote-Write-Version") == ["0.1.0"]
