"""Client garbage gets the documented 4xx, never a 5xx, never a crash or an
[alert]; the same workers keep serving and a valid write still succeeds.
(The make_nginx fixture fails any test whose error.log has alert/emerg/crit.)"""

import os
import re

import pytest
import requests
import snappy

import rw
from fakeup import Resp

V3 = "application/x-protobuf;proto=io.prometheus.write.v3.Request"


def valid_body():
    n = rw.uniq("ok")
    return rw.compress(rw.write_request(
        [rw.series(n, {"job": "pg"}, [(1.0, rw.now_ms())])]))


def bad_series_body(labels):
    """a valid series first, then the offending one (index 1)"""
    t = rw.now_ms()
    good = rw.raw_series([("__name__", rw.uniq("good")), ("job", "pg")], [(1.0, t)])
    bad = rw.raw_series(labels, [(2.0, t)])
    return rw.compress(rw.raw_write_request([good, bad]))


def not_snappy():
    b = b"this is not snappy at all, just some text"
    with pytest.raises(Exception):
        snappy.uncompress(b)            # the premise: really not a snappy block
    return b


def truncated_snappy():
    full = rw.compress(rw.write_request([rw.series(rw.uniq("tr"), {"job": "pg"},
                                                   [(float(i), rw.now_ms() + i) for i in range(200)])]))
    return full[: len(full) // 2]


def bomb():
    # declares 1 GiB, carries 10 bytes
    return rw.varint(1 << 30) + b"\x00" * 10


def garbage_protobuf():
    # field 1, length-delimited, declared length far beyond the end
    raw = b"\x0a\xff\xff\xff\x0f" + b"abc"
    return rw.compress(raw)


def too_large_decoded():
    # compresses to a few KB, decodes to ~2 MB (limit set to 1m below)
    big = "a" * (2 << 20)
    return rw.compress(rw.write_request([rw.series(rw.uniq("dec"), {"pad": big},
                                                   [(1.0, rw.now_ms())])]))


N = "__name__"

# id, method, header overrides, dropped headers, body factory, status, and
# the regexes the answer's body must match: the 415s say what was expected,
# the 400s for a series name it (by a marker label) and say why
CASES = [
    ("get", "GET", {}, (), valid_body, 405, ()),
    ("put", "PUT", {}, (), valid_body, 405, ()),
    ("content-type-json", "POST", {"Content-Type": "application/json"}, (),
     valid_body, 415, ("application/x-protobuf",)),
    ("content-type-missing", "POST", {}, ("Content-Type",), valid_body, 415,
     ("application/x-protobuf",)),
    ("content-type-v3", "POST", {"Content-Type": V3}, (), valid_body, 415,
     ("prometheus.WriteRequest", r"io\.prometheus\.write\.v2\.Request")),
    ("content-encoding-missing", "POST", {}, ("Content-Encoding",), valid_body,
     415, ("snappy",)),
    ("content-encoding-gzip", "POST", {"Content-Encoding": "gzip"}, (),
     valid_body, 415, ("snappy",)),
    ("not-snappy", "POST", {}, (), not_snappy, 400, ("(?i)snappy",)),
    ("truncated-snappy", "POST", {}, (), truncated_snappy, 400, ("(?i)snappy",)),
    ("snappy-bomb-1GiB", "POST", {}, (), bomb, 413, ()),
    ("declared-length-over-limit", "POST", {}, (), too_large_decoded, 413, ()),
    ("garbage-protobuf", "POST", {}, (), garbage_protobuf, 400, ("(?i)protobuf",)),
    ("empty-body", "POST", {}, (), lambda: b"", 400, ()),
]

# invalid series: with promgate_invalid_series reject the request is refused
# (400 naming the series and why); with drop (the default) the valid
# neighbour is forwarded and the invalid one counted
SERIES_CASES = [
    ("no-name", "POST", {}, (),
     lambda: bad_series_body([("job", "noname_marker_x")]), 400,
     ("noname_marker_x", "(?i)name")),
    ("empty-name", "POST", {}, (),
     lambda: bad_series_body([(N, ""), ("job", "emptyname_marker_x")]), 400,
     ("emptyname_marker_x", "(?i)name")),
    ("duplicate-labels", "POST", {}, (),
     lambda: bad_series_body([(N, "dup_marker_x"), ("a", "1"), ("a", "2")]),
     400, ("dup_marker_x", "(?i)duplicate")),
    ("empty-label-name", "POST", {}, (),
     lambda: bad_series_body([(N, "emptyln_marker_x"), ("", "v")]),
     400, ("emptyln_marker_x", "(?i)empty name")),
    ("invalid-utf8-value", "POST", {}, (),
     lambda: bad_series_body([(N, "utf_marker_x"), ("a", b"ok\xff\xfe")]),
     400, ("utf_marker_x", "(?i)utf-?8")),
    ("invalid-utf8-surrogate", "POST", {}, (),
     lambda: bad_series_body([(N, "surr_marker_x"), ("a", b"\xed\xa0\x80")]),
     400, ("surr_marker_x", "(?i)utf-?8")),
]


@pytest.fixture
def bad_gw(gateway, make_fake):
    up = make_fake(default=Resp(204))
    gw = gateway([("a", up.url)], max_decoded="1m")
    gw.fake = up
    return gw


@pytest.fixture
def reject_gw(gateway, make_fake):
    up = make_fake(default=Resp(204))
    gw = gateway([("a", up.url)], max_decoded="1m",
                 write_extra="promgate_invalid_series reject;")
    gw.fake = up
    return gw


def send(gw, method, headers, drop, body):
    h = dict(rw.RW_HEADERS)
    h.update(headers)
    for k in drop:
        h.pop(k, None)
    return requests.request(method, gw.write_url, data=body, headers=h, timeout=10)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(bad_gw, case):
    _id, method, headers, drop, body_fn, want, patterns = case
    pids = bad_gw.worker_pids()
    assert len(pids) == 2
    r = send(bad_gw, method, headers, drop, body_fn())
    assert r.status_code == want, (r.status_code, r.text[:500])
    for pat in patterns:
        assert re.search(pat, r.text), (pat, r.text[:500])
    assert bad_gw.fake.posts() == [], "rejected input was forwarded"
    # the same workers still serve, and a valid write goes through
    assert bad_gw.worker_pids() == pids
    ok = rw.post(bad_gw.write_url, valid_body())
    assert ok.status_code == 204, ok.text
    assert len(bad_gw.fake.posts()) == 1
    assert bad_gw.worker_pids() == pids


@pytest.mark.parametrize("case", SERIES_CASES, ids=[c[0] for c in SERIES_CASES])
def test_invalid_series_rejected(reject_gw, case):
    test_bad_input(reject_gw, case)


@pytest.mark.parametrize("case", SERIES_CASES, ids=[c[0] for c in SERIES_CASES])
def test_invalid_series_dropped(bad_gw, case):
    """the default: the valid neighbour (index 0) is forwarded alone"""
    _id, method, headers, drop, body_fn, _want, _patterns = case
    r = send(bad_gw, method, headers, drop, body_fn())
    assert r.status_code == 204, (r.status_code, r.text[:500])
    posts = bad_gw.fake.posts()
    assert len(posts) == 1
    wr = rw.decode_request(posts[0].body)
    assert [[l.name for l in ts.labels] for ts in wr.timeseries] == [[N, "job"]]
    assert wr.timeseries[0].labels[0].value.startswith("good")


def test_content_type_with_proto_parameter_is_accepted(bad_gw):
    for ct in ("application/x-protobuf;proto=prometheus.WriteRequest",
               "application/x-protobuf; proto=prometheus.WriteRequest"):
        r = rw.post(bad_gw.write_url, valid_body(), headers={"Content-Type": ct})
        assert r.status_code == 204, (ct, r.status_code, r.text)


def test_body_over_client_max_body_size(gateway, make_fake):
    up = make_fake()
    gw = gateway([("a", up.url)], max_body="64k")
    n = rw.uniq("mb")
    body = rw.compress(rw.write_request([rw.series(n, {"blob": os.urandom(50000).hex()},
                                                   [(1.0, rw.now_ms())])]))
    assert len(body) > 65536
    r = rw.post(gw.write_url, body)
    assert r.status_code == 413, r.status_code
    assert up.posts() == []
    assert rw.post(gw.write_url, valid_body()).status_code == 204


def test_all_bad_inputs_on_one_connection_then_valid(bad_gw):
    """every bad case in sequence, on one keep-alive connection where nginx
    keeps it, then valid writes: no 5xx anywhere, same workers"""
    pids = bad_gw.worker_pids()
    s = requests.Session()
    got = {}
    for _id, method, headers, drop, body_fn, want, _re in CASES:
        h = dict(rw.RW_HEADERS)
        h.update(headers)
        for k in drop:
            h.pop(k, None)
        r = s.request(method, bad_gw.write_url, data=body_fn(), headers=h, timeout=10)
        got[_id] = r.status_code
    assert got == {c[0]: c[5] for c in CASES}
    for _ in range(5):
        assert rw.post(bad_gw.write_url, valid_body(), session=s).status_code == 204
    assert bad_gw.worker_pids() == pids
    assert len(bad_gw.fake.posts()) == 5
