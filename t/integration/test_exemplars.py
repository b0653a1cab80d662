"""The exemplar store and /api/v1/query_exemplars.

The same remote-write stream goes through promgate into a dedicated, real
Prometheus with exemplar storage, of each server set; for every query the
answer of promgate's promgate_exemplar_query must equal that Prometheus'.

promgate answers as Prometheus 3.5 does, so against the current set (3.5)
the answers are compared byte for byte.  Against the debian12 set (2.42)
they are compared where 2.42 answers the same way: the status always, and
the bytes, except where 2.42's text is known to differ, which are then
compared decoded (see same_as_prometheus()):

  - 2.42 escapes < > & in label names and values as \u003c \u003e \u0026
    (encoding/json's HTML escaping); 3.5 writes them as they are.  The
    answers are compared as decoded JSON.
  - UTF-8 names ({"service.name"="x"}): 2.42 refuses both the series and
    the query syntax, so test_utf8_names_equal_prometheus needs 3.5.
  - numbers as durations (QUERIES_35: x[5], offset 5, @ 5m): 2.42 answers
    400 bad_data, promgate (as 3.5) 200.
"""

import json

import os
import signal
import socket
import threading
import time
import urllib.parse

import pytest
import requests

import rw
from conftest import gateway_http
from fakeup import free_port
from procs import Prometheus, wait_for

ZONE = "    promgate_exemplar_zone exemplars:16m max=5000;\n"


def http_conf(port, prom_url, extra_http="", workers=2):
    return gateway_http(
        port, [("prom", prom_url)], write_extra="promgate_exemplars exemplars;",
        http_extra=ZONE + extra_http,
        server_extra="location = /api/v1/query_exemplars "
                     "{ promgate_exemplar_query exemplars; }")


@pytest.fixture(scope="module")
def eprom(tmp_path_factory, serverset):
    p = Prometheus(str(tmp_path_factory.mktemp("eprom-" + serverset.name)),
                   binary=serverset.prometheus, features=serverset.prom_features)
    yield p
    p.stop()


@pytest.fixture
def egw(make_nginx, eprom):
    port = free_port()
    n = make_nginx(http_conf(port, eprom.url))
    n.write_url = n.url("/api/v1/write")
    n.query_url = n.url("/api/v1/query_exemplars")
    return n


def post(url, series_list, headers=None):
    body = rw.compress(rw.write_request(series_list))
    r = rw.post(url, body, headers=headers)
    assert r.status_code == 204, (r.status_code, r.text)
    return r


def get_raw(url, params, headers=None):
    r = requests.get(url, params=params, headers=headers, timeout=30)
    return r.status_code, r.text


def same_as_prometheus(ss, got, want):
    """(status, text) pairs equal as the module docstring says: bytes for
    Prometheus 3.5, decoded JSON for 2.42, whose escaping differs"""
    if ss.prom_major >= 3 or got == want:
        return got == want
    if got[0] != want[0]:
        return False
    try:
        return json.loads(got[1]) == json.loads(want[1])
    except ValueError:
        return got[1] == want[1]


# ------------------------------------------------------------ the stream

def stream(name):
    """series with exemplars covering the value and timestamp formats and
    label escaping; returns (series_list, t0_seconds)"""
    t0 = (rw.now_ms() // 1000 - 30) * 1000      # whole second
    # the exemplar-only series' samples come first: Prometheus drops the
    # exemplars of a series it has never seen
    s = [rw.series(name + "_total", {"job": "\u65e5\u672c", "x": "a\nb"},
                   samples=[(1, t0 + 5000)])]
    values = [6, 0.5, 1e-9, 1.5e21, float("inf"), float("-inf"),
              123456.789, -2, 0, 1e-300]
    for i, v in enumerate(values):
        job = "api" if i % 2 == 0 else "batch"
        s.append(rw.series(
            name + "_bucket",
            {"job": job, "le": str(i), "path": '/a"b\\c<d>&\u00e9'},
            samples=[(i, t0 + i * 1000 + 1)],
            exemplars=[({"trace_id": "%032x" % (i + 1), "span_id": "%016x" % i},
                        v, t0 + i * 1000 + (0 if i % 3 == 0 else 479))]))
    # several exemplars in one series, in time order, over several requests
    for k in range(4):
        s.append(rw.series(
            name + "_total", {"job": "api", "instance": "h%d" % (k % 2)},
            samples=[(k, t0 + k * 1000 + 7)],
            exemplars=[({"trace_id": "t%d" % k}, k + 0.25,
                        t0 + k * 1000 + 7)]))
    # exemplar-only series, unicode and a newline in values
    s.append(rw.series(name + "_total", {"job": "\u65e5\u672c", "x": "a\nb"},
                       exemplars=[({"trace_id": "u"}, 42, t0 + 5000)]))
    # a NaN exemplar value
    s.append(rw.series(name + "_nan", {"job": "api"},
                       samples=[(1, t0 + 10)],
                       exemplars=[({"trace_id": "n"}, float("nan"), t0 + 10)]))
    # what only the escaping shows: U+2028, a control, < > &; an exemplar
    # label with an empty value (Prometheus leaves it out)
    s.append(rw.series(name + "_esc", {"job": "api", "v": "\u2028\x01<&>"},
                       samples=[(1, t0 + 20)],
                       exemplars=[({"trace_id": "e\u2029", "empty": "",
                                    "k<": "&"}, 2, t0 + 20)]))
    return s, t0 / 1000.0


QUERIES = [
    "{name}_bucket",
    '{name}_bucket{{job="api"}}',
    '{{__name__="{name}_total"}}',
    '{{__name__=~"{name}_.*"}}',
    '{name}_bucket{{job=~"ap.*"}}',
    '{name}_bucket{{job!="api"}}',
    '{name}_bucket{{job!~"a.*"}}',
    "rate({name}_total[5m])",
    'sum by (le) (rate({name}_bucket{{job=~"api.*"}}[5m]))',
    'histogram_quantile(0.99, sum by (le) '
    '(rate({name}_bucket{{job=~"api.*"}}[5m])))',
    "{name}_total + {name}_bucket",
    "{name}_total / ignoring(le) group_left {name}_bucket",
    "{name}_total offset 1m",
    "max_over_time({name}_total[5m:1m])",
    "{name}_total @ end()",
    '{{__name__=~"{name}.*", job="api"}}',
    "{name}_does_not_exist",
    'label_replace({name}_total, "x", "$1", "job", "(.*)")',
    "count by (job) ({name}_total)",
    '{name}_bucket{{path="/a\\"b\\\\c<d>&\u00e9"}}',
    "{name}_bucket{{path=~`/a.*`}}",
    "topk(3, {name}_total)",
    "{name}_total and {name}_bucket",
    "-{name}_total",
    "{name}_total > bool 1",
    '{name}_total{{job="\u65e5\u672c"}}',
    "{name}_nan",
    "# a comment\n{name}_total",
    "sum({name}_total) without (instance)",
    'absent({name}_total{{job="nope"}})',
    "{name}_esc",
    '{name}_esc{{v=~".*<&>"}}',
    '{{__name__=~"{name}_(esc|nan)"}}',
    '{name}_bucket{{job=~"api|batch"}}',
]

# syntax 3.5 added: numbers as durations; 2.42 refuses it (400 bad_data),
# promgate takes it as 3.5 does
QUERIES_35 = [
    "rate({name}_total[5])",
    "{name}_total offset 5",
    "max_over_time({name}_bucket[300:60])",
    "{name}_total @ 5m",
]


def test_answers_equal_prometheus(egw, eprom, serverset):
    name = rw.uniq("exq")
    s, t0 = stream(name)
    # in three requests, as a sender would batch them
    post(egw.write_url, s[:5])
    post(egw.write_url, s[5:11])
    post(egw.write_url, s[11:])

    start, end = t0 - 60, t0 + 120
    windows = [(start, end), (t0 + 1.5, t0 + 3.2), (t0, t0)]

    compared = 0
    for q in QUERIES + QUERIES_35:
        query = q.format(name=name)
        for (a, b) in windows:
            params = {"query": query, "start": "%.3f" % a, "end": "%.3f" % b}
            want = get_raw(eprom.url + "/api/v1/query_exemplars", params)
            got = get_raw(egw.query_url, params)
            if q in QUERIES_35 and serverset.prom_major < 3:
                assert want[0] == 400 and '"bad_data"' in want[1], want
                assert got[0] == 200, got
                continue
            assert same_as_prometheus(serverset, got, want), \
                "query %r window %r:\n  promgate   %r\n  Prometheus %r" % (
                    query, (a, b), got, want)
            compared += 1

    # the stream really landed: the first query has every bucket series
    code, text = get_raw(egw.query_url, {"query": name + "_bucket",
                                         "start": start, "end": end})
    assert code == 200 and text.count("seriesLabels") == 10, text
    assert compared >= 25 * 3


# -------------------------------------------------- a large answer, sent

def http_get(url, path, version="1.1", rcvbuf=None, pause=0.0, stop=None):
    """GET over a plain socket, Connection: close: (status, headers, body),
    a chunked body decoded; rcvbuf and pause make a slow reader, stop
    closes the connection after that many bytes (body None)"""
    host, port = url.split("//")[1].split("/")[0].split(":")
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    sock.sendall(("GET %s HTTP/%s\r\nHost: x\r\nConnection: close\r\n\r\n"
                  % (path, version)).encode())
    data = b""
    while True:
        d = sock.recv(rcvbuf or 65536)
        if not d:
            break
        data += d
        if stop and len(data) >= stop:
            sock.close()
            return None, None, None
        if pause:
            time.sleep(pause)
    sock.close()
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(l.split(": ", 1) for l in lines[1:])
    if headers.get("Transfer-Encoding") == "chunked":
        out = b""
        while True:
            size, body = body.split(b"\r\n", 1)
            n = int(size, 16)
            if n == 0:
                break
            out += body[:n]
            body = body[n + 2:]
        body = out
    return int(lines[0].split()[1]), headers, body


def test_large_answer_is_streamed(egw, eprom, serverset):
    """an answer of 4,000 exemplars (~600 KB) goes out as it is written,
    in buffers: chunked over HTTP/1.1, close-delimited over HTTP/1.0, to a
    slow reader, to parallel clients and after a client that left
    mid-answer, always the bytes Prometheus answers"""
    name = rw.uniq("exl")
    t0 = (rw.now_ms() // 1000 - 60) * 1000
    for k in range(4):
        post(egw.write_url, [rw.series(
            name + "_bucket", {"job": "api-%d" % (i % 10), "le": str(i % 17),
                               "path": "/p/%d" % i},
            samples=[(k, t0 + k * 1000 + i)],
            exemplars=[({"trace_id": "%032x" % (i * 1000003 + k),
                         "span_id": "%016x" % (i + k)},
                        k * 0.001 + i / 7.0, t0 + k * 1000 + i)])
            for i in range(1000)])

    params = {"query": name + "_bucket", "start": "%.3f" % (t0 / 1000 - 60),
              "end": "%.3f" % (t0 / 1000 + 60)}
    want = get_raw(eprom.url + "/api/v1/query_exemplars", params)
    assert want[0] == 200 and want[1].count('"trace_id"') == 4000, want[1][:200]

    r = requests.get(egw.query_url, params=params, timeout=30)
    assert r.headers.get("Transfer-Encoding") == "chunked", r.headers
    assert same_as_prometheus(serverset, (r.status_code, r.text), want)

    path = "/api/v1/query_exemplars?" + urllib.parse.urlencode(params)
    for how in ({"version": "1.0"}, {"rcvbuf": 4096, "pause": 0.001}):
        code, headers, body = http_get(egw.query_url, path, **how)
        assert "Transfer-Encoding" not in headers or how.get("rcvbuf"), how
        assert same_as_prometheus(serverset, (code, body.decode()), want), how

    # a client that goes away mid-answer, then parallel ones
    assert http_get(egw.query_url, path, rcvbuf=4096, stop=70000)[0] is None
    got = []
    threads = [threading.Thread(target=lambda: got.append(
        get_raw(egw.query_url, params))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6
    for g in got:
        assert same_as_prometheus(serverset, g, want)


# ---------------------------------------------------------- UTF-8 names

def utf8_stream(name):
    """series with a dotted metric name and OpenTelemetry-style label names
    (Prometheus 3 takes them in remote write 1.0 and in queries, quoted)"""
    t0 = (rw.now_ms() // 1000 - 20) * 1000
    dotted = name + ".server.duration"
    s = []
    for i, svc in enumerate(("checkout", "cart", "ads")):
        s.append(rw.series(None, raw_labels=[
            ("__name__", dotted), ("http.route", "/r%d" % i),
            ("service.name", svc)],
            samples=[(i, t0 + i * 100)],
            exemplars=[({"trace_id": "%032x" % (i + 7), "span.id": "s%d" % i},
                        i + 0.5, t0 + i * 100)]))
    # a legacy metric name with a dotted label name
    s.append(rw.series(None, raw_labels=[
        ("__name__", name + "_requests_total"), ("service.name", "checkout")],
        samples=[(1, t0 + 500)],
        exemplars=[({"trace_id": "legacy"}, 1, t0 + 500)]))
    return s, dotted, t0 / 1000.0


UTF8_QUERIES = [
    '{{"{dotted}"}}',
    '{{"{dotted}", "service.name"="checkout"}}',
    '{{"{dotted}", "service.name"=~"c.*"}}',
    '{{"service.name"="checkout"}}',
    '{{"service.name"=~"check.*", "http.route"!="/r9"}}',
    '{{__name__="{dotted}", "http.route"=~"/r[01]"}}',
    '{{__name__=~"{name}.*", "service.name"!~"ads|cart"}}',
    '{name}_requests_total{{"service.name"="checkout"}}',
    'sum by ("service.name") (rate({{"{dotted}"}}[5m]))',
    'histogram_quantile(0.9, sum by (le, "service.name") '
    '(rate({{"{dotted}", "service.name"="cart"}}[5m])))',
    '{{"{dotted}"}} offset 1m',
    '{{"{dotted}"}} and on ("service.name") {name}_requests_total',
    # refused, as Prometheus 3.5 refuses them
    '{name}_requests_total{{"{dotted}"}}',
    '{{"{dotted}", "service.name"=~"(c"}}',
    'sum by ("") ({{"{dotted}"}})',
    '{{"service.name"}}}}',
]


def test_utf8_names_equal_prometheus(egw, eprom, serverset):
    if not serverset.prom_utf8_names:
        pytest.skip("Prometheus %s has no UTF-8 names: it refuses the "
                    "series and the quoted syntax" % serverset.prom_version_str)
    name = rw.uniq("exu")
    s, dotted, t0 = utf8_stream(name)
    post(egw.write_url, s)

    windows = [(t0 - 60, t0 + 120), (t0 + 0.05, t0 + 0.25)]
    for q in UTF8_QUERIES:
        query = q.format(name=name, dotted=dotted)
        for (a, b) in windows:
            params = {"query": query, "start": "%.3f" % a, "end": "%.3f" % b}
            want = get_raw(eprom.url + "/api/v1/query_exemplars", params)
            got = get_raw(egw.query_url, params)
            assert got == want, "query %r window %r" % (query, (a, b))

    # the series really landed, names as sent
    code, text = get_raw(egw.query_url, {"query": '{"%s"}' % dotted})
    data = json.loads(text)["data"]
    assert code == 200 and len(data) == 3, text
    assert data[0]["seriesLabels"]["service.name"] in ("ads", "cart", "checkout")
    assert "span.id" in data[0]["exemplars"][0]["labels"]


def test_same_time_exemplars_equal_prometheus(egw, eprom, serverset):
    """3.5's order of exemplars in a series: one at the newest's time is
    kept when its value is higher, or equal with a higher label hash (a
    native histogram's exemplars share a timestamp); NaN is never a
    duplicate.  Each step a request of its own, one with several."""
    if serverset.prom_major < 3:
        pytest.skip("Prometheus %s keeps one exemplar per timestamp (an "
                    "equal time is out of order); promgate follows 3.5"
                    % serverset.prom_version_str)
    name = rw.uniq("exo")
    t = (rw.now_ms() // 1000 - 20) * 1000
    post(egw.write_url, [rw.series(name, {"job": "o"}, samples=[(1, t)])])

    steps = [
        [({"t": "a"}, 1, t)], [({"t": "a"}, 1, t)],         # duplicate
        [({"t": "b"}, 1, t)], [({"t": "a"}, 1, t)],         # by label hash
        [({"t": "a"}, 0.5, t)], [({"t": "a"}, 2, t)],       # by value
        [({"t": "c"}, 5, t - 5)],                           # older
        [({"t": "n"}, float("nan"), t + 10)],
        [({"t": "n"}, float("nan"), t + 10)],               # NaN again
        [({"t": "d"}, 3, t + 20), ({"t": "e"}, 3, t + 20),
         ({"t": "d"}, 2, t + 20), ({"t": "f"}, 3, t + 20)],
    ]
    for exs in steps:
        post(egw.write_url, [rw.series(name, {"job": "o"}, exemplars=exs)])

    for (a, b) in [(t / 1000.0 - 60, t / 1000.0 + 60),
                   (t / 1000.0, t / 1000.0)]:
        params = {"query": name, "start": "%.3f" % a, "end": "%.3f" % b}
        want = get_raw(eprom.url + "/api/v1/query_exemplars", params)
        got = get_raw(egw.query_url, params)
        assert got == want, "window %r" % ((a, b),)
    assert want[1].count('"labels"') >= 3, want


def test_query_forms_and_errors(egw, eprom):
    name = rw.uniq("exf")
    s, t0 = stream(name)
    post(egw.write_url, s)
    q = name + "_total"

    # POST form, RFC3339 times, missing start/end
    for params in ({"query": q},
                   {"query": q, "start": time.strftime(
                       "%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 - 60))},
                   {"query": q, "end": "%.3f" % (t0 + 100)}):
        want = get_raw(eprom.url + "/api/v1/query_exemplars", params)
        assert get_raw(egw.query_url, params) == want
        r1 = requests.post(eprom.url + "/api/v1/query_exemplars", data=params)
        r2 = requests.post(egw.query_url, data=params)
        assert (r2.status_code, r2.text) == (r1.status_code, r1.text)

    # a query without selectors: 204, empty, as Prometheus 2.42
    for qq in ("vector(1)", "1 + 1"):
        code, text = get_raw(egw.query_url, {"query": qq})
        assert (code, text) == get_raw(eprom.url + "/api/v1/query_exemplars",
                                       {"query": qq})
        assert code == 204 and text == ""

    # invalid queries and times: 400 bad_data, like Prometheus
    for params in ({"query": q + "{"}, {"query": "rate(%s[5m]" % q},
                   {"query": '%s{job=~"(a"}' % q}, {"query": ""},
                   {"query": q, "start": "yesterday"},
                   {"query": q, "start": "100", "end": "10"}):
        code, text = get_raw(egw.query_url, params)
        pcode, ptext = get_raw(eprom.url + "/api/v1/query_exemplars", params)
        assert code == pcode == 400, (params, text, ptext)
        assert '"errorType":"bad_data"' in text, text

    # the promgate extension: a JSON body
    body = {"start": "%d" % (t0 - 60), "end": "%d" % (t0 + 100), "query": q}
    r = requests.post(egw.query_url, json=body)
    assert r.status_code == 200
    want = get_raw(eprom.url + "/api/v1/query_exemplars", body)
    assert r.text == want[1]


def test_tenants_are_isolated(egw):
    name = rw.uniq("ext")
    t = rw.now_ms()
    s = [rw.series(name, {"job": "x"}, samples=[(1, t)],
                   exemplars=[({"trace_id": "a"}, 1, t)])]
    post(egw.write_url, s, headers={"X-Scope-OrgID": "team-a"})
    s = [rw.series(name, {"job": "y"}, samples=[(1, t)],
                   exemplars=[({"trace_id": "b"}, 2, t)])]
    post(egw.write_url, s, headers={"X-Scope-OrgID": "team-b"})

    def ask(tenant):
        h = {"X-Scope-OrgID": tenant} if tenant else None
        r = requests.get(egw.query_url, params={"query": name}, headers=h)
        assert r.status_code == 200
        return r.json()["data"]

    a, b, none = ask("team-a"), ask("team-b"), ask(None)
    assert [d["exemplars"][0]["labels"]["trace_id"] for d in a] == ["a"]
    assert [d["exemplars"][0]["labels"]["trace_id"] for d in b] == ["b"]
    assert none == []


def test_not_stored_when_write_fails(make_nginx, make_fake):
    """exemplars of a write that was not acknowledged are not kept"""
    from fakeup import Resp
    bad = make_fake(default=Resp(500))
    port = free_port()
    n = make_nginx(gateway_http(
        port, [("bad", "http://127.0.0.1:%d" % bad.port)], retries=0,
        write_extra="promgate_exemplars exemplars;", http_extra=ZONE,
        server_extra="location = /api/v1/query_exemplars "
                     "{ promgate_exemplar_query exemplars; }"))
    name = rw.uniq("exn")
    t = rw.now_ms()
    body = rw.compress(rw.write_request([rw.series(
        name, samples=[(1, t)], exemplars=[({"trace_id": "z"}, 1, t)])]))
    r = rw.post(n.url("/api/v1/write"), body)
    assert r.status_code == 503
    r = requests.get(n.url("/api/v1/query_exemplars"), params={"query": name})
    assert r.json() == {"status": "success", "data": []}


def count_exemplars(url, name_re):
    r = requests.get(url, params={"query": '{__name__=~"%s"}' % name_re})
    assert r.status_code == 200, r.text
    return sum(len(d["exemplars"]) for d in r.json()["data"])


def test_concurrent_writers_reload_and_kill(egw):
    """several connections (both workers) insert without loss; a HUP and a
    kill -9 of a worker keep the zone and its content consistent"""
    name = rw.uniq("exc")
    base = rw.now_ms() - 60000
    nthreads, per = 6, 40
    errors = []

    def writer(k):
        sess = requests.Session()
        for j in range(per):
            t = base + j * 10
            s = [rw.series("%s_%d" % (name, k), {"j": str(j)},
                           samples=[(j, t)],
                           exemplars=[({"trace_id": "%d-%d" % (k, j)}, j, t)])]
            r = rw.post(egw.write_url, rw.compress(rw.write_request(s)),
                        session=sess)
            if r.status_code != 204:
                errors.append(r.status_code)

    threads = [threading.Thread(target=writer, args=(k,))
               for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    total = nthreads * per
    assert count_exemplars(egw.query_url, name + "_[0-9]+") == total

    q = {"query": '{__name__=~"%s_[0-9]+"}' % name}
    before = requests.get(egw.query_url, params=q).text
    egw.reload()
    after = requests.get(egw.query_url, params=q).text
    assert after == before

    # kill -9 a worker in the middle of writes
    stop = threading.Event()

    def busy():
        sess = requests.Session()
        j = 0
        while not stop.is_set() and j < 2000:
            t = base + 100000 + j
            s = [rw.series(name + "_busy", {"j": str(j % 50)},
                           samples=[(j, t)],
                           exemplars=[({"trace_id": "b%d" % j}, j, t)])]
            try:
                rw.post(egw.write_url, rw.compress(rw.write_request(s)),
                        session=sess, timeout=5)
            except requests.RequestException:
                sess = requests.Session()
            j += 1

    # the master logs the worker's death as [alert]; that line is expected
    egw.error_log_problems = lambda: [
        l for l in egw.error_log_text().splitlines()
        if ("[alert]" in l or "[crit]" in l or "[emerg]" in l)
        and "exited on signal 9" not in l]

    th = threading.Thread(target=busy)
    th.start()
    time.sleep(0.5)
    victim = sorted(egw.worker_pids())[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(egw.worker_pids()) == 2
                    and victim not in egw.worker_pids(), 20)
    time.sleep(0.5)
    stop.set()
    th.join(60)

    # what was there before is still there, and the zone still answers
    assert count_exemplars(egw.query_url, name + "_[0-9]+") == total
    r = requests.get(egw.query_url, params={"query": name + "_busy"})
    assert r.status_code == 200 and r.json()["status"] == "success"


def test_zone_too_small_is_refused(make_nginx, eprom):
    port = free_port()
    n = make_nginx(gateway_http(
        port, [("prom", eprom.url)],
        http_extra="    promgate_exemplar_zone tiny:1m max=100000;\n",
        write_extra="promgate_exemplars tiny;"), start=False)
    n.error_log_problems = lambda: []     # the [emerg] is the point
    code, out = n.test_config()
    assert code != 0
    assert 'exemplar zone "tiny" is too small for max=100000' in out, out


def test_status_counts_exemplars(egw):
    name = rw.uniq("exs")
    t = rw.now_ms()
    s = [rw.series(name, samples=[(1, t)],
                   exemplars=[({"trace_id": "a"}, 1, t)])]
    post(egw.write_url, s)
    post(egw.write_url, s)      # the same exemplar again: a duplicate
    s = [rw.series(name, samples=[(1, t + 1)],
                   exemplars=[({"trace_id": "a"}, 1, t - 5)])]
    post(egw.write_url, s)      # older: out of order
    text = requests.get(egw.url("/metrics")).text
    assert 'promgate_exemplars_inserted_total{result="added"} 1' in text
    assert 'promgate_exemplars_inserted_total{result="duplicate"} 1' in text
    assert 'promgate_exemplars_inserted_total{result="out_of_order"} 1' in text
    assert 'promgate_exemplar_zone_exemplars{zone="exemplars"} 1' in text
