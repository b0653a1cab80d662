"""Hostile exemplar queries must not stall ingestion.

With 100k exemplars in the zone (100k series, the worst case for the
scan: every series is matched) and writes going on from two threads, one
POST to /api/v1/query_exemplars ORs 1,000, then 20,000 regular
expression selectors that match nothing (client_max_body_size raised so
the larger body is read).  The worst latency of a write while the query
runs must stay under 250 ms: the query never holds the zone lock long and
never keeps its worker's event loop for long (it works in slices).

The query itself may be answered 200 (the scan finished) or refused with
Prometheus' error shape by promgate_exemplar_query's limits (400
bad_data, 422 execution, 503 timeout); either way no write waits for it.

PROMGATE_HOSTILE_MEASURE=1 only measures and prints (no assertion): how
the numbers before the change were taken.
"""

import os
import threading
import time
import urllib.parse

import pytest
import requests

import rw
from conftest import gateway_http
from fakeup import free_port

MEASURE_ONLY = os.environ.get("PROMGATE_HOSTILE_MEASURE") == "1"
WRITE_LIMIT = 0.250
NSERIES = 100000
BATCH = 5000


@pytest.fixture
def qgw(make_nginx, make_fake):
    rec = make_fake()
    port = free_port()
    http = gateway_http(
        port, [("rec", rec.url)], retries=0,
        http_extra="    promgate_exemplar_zone hq:64m max=%d;\n" % NSERIES,
        write_extra="promgate_exemplars hq;",
        server_extra="location = /api/v1/query_exemplars { "
                     "promgate_exemplar_query hq; "
                     "client_max_body_size 16m; "
                     "client_body_buffer_size 16m; }")
    n = make_nginx(http, workers=2)
    n.write_url = n.url("/api/v1/write")
    n.query_url = n.url("/api/v1/query_exemplars")
    return n


def fill(n):
    t = rw.now_ms() - 60000
    for b in range(0, NSERIES, BATCH):
        s = [rw.series("hq_%d" % i, {"job": "j%d" % (i % 7)},
                       samples=[(1.0, t)],
                       exemplars=[({"trace_id": "%032x" % i}, 1.0, t)])
             for i in range(b, b + BATCH)]
        r = rw.write(n.write_url, s, timeout=60)
        assert r.status_code == 204, r.text


def selectors(k):
    # regular expressions that must be run over every name, matching none
    return " or ".join('{__name__=~"hq_.*x%d"}' % i for i in range(k))


def writer(url, stop, lat):
    s = requests.Session()
    i = 0
    while not stop.is_set():
        t = rw.now_ms()
        body = rw.compress(rw.write_request([rw.series(
            "hq_w", {"i": str(i % 50)}, samples=[(1.0, t)],
            exemplars=[({"trace_id": "w%d" % i}, 1.0, t)])]))
        t0 = time.monotonic()
        r = rw.post(url, body, timeout=300, session=s)
        lat.append((time.monotonic() - t0, r.status_code))
        i += 1
        time.sleep(0.005)


def run_query(n, k):
    """the query with writes going on: (status, text, seconds, worst
    write latency, writes done)"""
    body = urllib.parse.urlencode({"query": selectors(k),
                                   "start": "0", "end": "9999999999"})
    stop = threading.Event()
    lat = []
    threads = [threading.Thread(target=writer,
                                args=(n.write_url, stop, lat))
               for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    lat.clear()
    t0 = time.monotonic()
    r = requests.post(n.query_url, data=body, timeout=600, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    took = time.monotonic() - t0
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    worst = max(l for l, _ in lat) if lat else None
    assert all(c == 204 for _, c in lat), lat
    return r.status_code, r.text, took, worst, len(lat), len(body)


@pytest.mark.parametrize("k", [1000, 20000])
def test_hostile_query_does_not_delay_writes(qgw, k):
    fill(qgw)
    status, text, took, worst, nw, size = run_query(qgw, k)
    print("\n%d selectors (%d bytes): answered %d in %.2fs; %d writes, "
          "worst write latency %.0f ms: %s"
          % (k, size, status, took, nw, worst * 1000, text.strip()[:160]))
    if MEASURE_ONLY:
        return
    assert nw > 0
    assert worst < WRITE_LIMIT, "a write waited %.0f ms" % (worst * 1000)
    assert status in (200, 400, 422, 503), text
    if status == 200:
        assert text == '{"status":"success","data":[]}'
    else:
        assert text.startswith('{"status":"error","errorType":'), text

    # the gateway still answers queries and writes
    r = requests.get(qgw.query_url, params={"query": "hq_w"}, timeout=30)
    assert r.status_code == 200 and '"trace_id"' in r.text, r.text


def test_query_limits_answer_prometheus_errors(qgw):
    """over the limits: Prometheus' error shape, the limit named, and the
    gateway goes on"""
    fill(qgw)
    # every stored series matches: over max_series (20000)
    r = requests.get(qgw.query_url, params={"query": '{__name__=~"hq_.*"}'},
                     timeout=60)
    assert r.status_code == 422, r.text
    assert r.text.startswith('{"status":"error","errorType":"execution",'
                             '"error":"query matches more than 20000 '
                             'series'), r.text

    # over max_selectors (1000): refused before it is parsed
    q = " or ".join("x%d" % i for i in range(1001))
    r = requests.get(qgw.query_url, params={"query": "{a=\"b\"} or " + q},
                     timeout=60)
    assert r.status_code == 400, r.text
    assert '"errorType":"bad_data"' in r.text, r.text
    assert "more than 1000 selectors" in r.text, r.text
    q = " or ".join('{a="%d"}' % i for i in range(1001))
    r = requests.post(qgw.query_url, data={"query": q}, timeout=60)
    assert r.status_code == 400 and "1000 selectors" in r.text, r.text
    # braces inside strings and comments are not selectors
    q = " or ".join('{a="{{%d"}' % i for i in range(500))
    r = requests.post(qgw.query_url, data={"query": q + " # {{{{"},
                      timeout=60)
    assert r.status_code == 200, r.text

    # a selective query still answers, in Prometheus' shape
    r = requests.get(qgw.query_url, params={"query": "hq_99999"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.text.startswith('{"status":"success","data":[{"seriesLabels":'
                             '{"__name__":"hq_99999","job":"j'), r.text


def test_client_gone_ends_the_query(qgw):
    """a client that goes away mid-query ends it (499 logged soon after),
    and the gateway goes on"""
    fill(qgw)
    body = urllib.parse.urlencode({"query": selectors(1000)})
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(qgw.query_url, data=body, timeout=1, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
    gone = time.monotonic()
    while time.monotonic() - gone < 5:
        if any("query_exemplars" in l and " 499 " in l
               for l in qgw.access_log_lines()):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no 499 within 5 s of the client leaving: %r"
                             % qgw.access_log_lines()[-3:])
    r = requests.get(qgw.query_url, params={"query": "hq_99999"}, timeout=30)
    assert r.status_code == 200 and '"hq_99999"' in r.text, r.text


def test_query_limits_are_configurable(make_nginx, make_fake):
    """promgate_exemplar_query NAME max_selectors= max_series=
    max_exemplars= timeout=: each limit applies as set, and is named"""
    rec = make_fake()
    n = make_nginx(gateway_http(
        free_port(), [("rec", rec.url)], retries=0,
        http_extra="    promgate_exemplar_zone hl:8m max=1000;\n",
        write_extra="promgate_exemplars hl;",
        server_extra="location = /api/v1/query_exemplars { "
                     "promgate_exemplar_query hl max_selectors=3 "
                     "max_series=4 max_exemplars=6 timeout=30s; }"),
        workers=1)
    t = rw.now_ms() - 60000
    s = [rw.series("hl_%d" % i, {"job": "j"}, samples=[(1.0, t)],
                   exemplars=[({"trace_id": "%d-%d" % (i, k)}, 1.0, t + k)
                              for k in range(2)])
         for i in range(6)]
    assert rw.write(n.url("/api/v1/write"), s).status_code == 204
    url = n.url("/api/v1/query_exemplars")

    def ask(q):
        return requests.get(url, params={"query": q, "start": t / 1000 - 10,
                                         "end": t / 1000 + 10}, timeout=30)

    r = ask("hl_0 or hl_1 or hl_2")                     # 3 series, 6 ex.
    assert r.status_code == 200, r.text
    assert sum(len(x["exemplars"]) for x in r.json()["data"]) == 6
    r = ask('{a="1"} or {a="2"} or {a="3"} or {a="4"}')
    assert r.status_code == 400 and "more than 3 selectors" in r.text, r.text
    r = ask('{__name__=~"hl_.*"}')                      # 6 series
    assert r.status_code == 422 and "more than 4 series" in r.text, r.text
    r = ask('{__name__=~"hl_[0-3]"}')                   # 4 series, 8 ex.
    assert r.status_code == 422 and "more than 6 exemplars" in r.text, r.text


@pytest.mark.parametrize("param", ["max_series=0", "max_selectors=x",
                                   "timeout=never", "limit=3"])
def test_query_limits_refuse_bad_values(make_nginx, make_fake, param):
    rec = make_fake()
    n = make_nginx(gateway_http(
        free_port(), [("rec", rec.url)],
        http_extra="    promgate_exemplar_zone hb:8m max=1000;\n",
        server_extra="location = /q { promgate_exemplar_query hb %s; }"
        % param), start=False)
    n.error_log_problems = lambda: []     # the [emerg] is the point
    rc, out = n.test_config()
    assert rc != 0 and 'invalid parameter "%s"' % param in out, out


BIG = 300000          # exemplars in one write (promgate_max_exemplars)
HOLD_LIMIT = 0.100    # what a small write in the other worker may wait
# under ASan (t/asan.sh) everything runs 3-5 times slower and the two CPUs
# are shared with a worker that runs the big write for 2.4 s: a small write
# once waited 276 ms there for scheduling, not for the lock.  Held for the
# whole big write it would wait the 2.4 s, which this still catches.
if "ASAN_OPTIONS" in os.environ:
    HOLD_LIMIT = 0.600


def test_a_write_with_many_exemplars_does_not_hold_the_zone(make_nginx,
                                                            make_fake):
    """one write carrying 300,000 exemplars (promgate_max_exemplars
    raised): the worker storing them passes the zone lock on every few
    dozen inserts, so that a small write with an exemplar in the other
    worker meanwhile waits for it a few ms at most, not for all the big
    write's inserts (measured here: 340-450 ms when the lock was held
    throughout, 30-50 ms worst after, on a busy 2-CPU machine)"""
    rec = make_fake()
    n = make_nginx(gateway_http(
        free_port(), [("rec", rec.url)], retries=0, max_body="256m",
        max_decoded="256m",
        http_extra="    promgate_exemplar_zone hb:160m max=%d;\n" % (BIG + 10),
        write_extra="promgate_exemplars hb; client_body_buffer_size 64m; "
                    "promgate_max_exemplars %d; " % BIG +
                    "add_header X-Worker $pid always;",
        server_extra="location = /api/v1/query_exemplars { "
                     "promgate_exemplar_query hb; "
                     "add_header X-Worker $pid always; }"), workers=2)
    write_url = n.url("/api/v1/write")
    query_url = n.url("/api/v1/query_exemplars")
    t = rw.now_ms() - 60000
    rw.write(write_url, [rw.series("hb_small", {}, samples=[(1.0, t)],
             exemplars=[({"trace_id": "s"}, 1.0, t)])]).raise_for_status()
    body = rw.compress(rw.write_request(
        [rw.series("hb", {"i": str(i)}, samples=[(1.0, t)],
                   exemplars=[({"trace_id": "%032x" % i}, 1.0, t)])
         for i in range(BIG)]))

    # a keep-alive connection to each worker: the big write goes on one,
    # the small ones on the other
    conns = {}
    for _ in range(200):
        sess = requests.Session()
        r = sess.get(query_url, params={"query": "hb_small"}, timeout=30)
        assert r.status_code == 200, r.text
        conns.setdefault(r.headers["X-Worker"], sess)
        if len(conns) == 2:
            break
    assert len(conns) == 2, "200 connections went to one worker: %s" % conns
    (writer, wsess), (reader, qsess) = conns.items()

    stop = threading.Event()
    smalls = []

    def small_write(i):
        # one exemplar: its insert needs the zone lock, its own work is tiny
        # (a query's scan of 300,000 series would take ~10 ms by itself)
        ts = rw.now_ms()
        return rw.post(write_url, rw.compress(rw.write_request([rw.series(
            "hb_small", {"k": str(i % 10)}, samples=[(1.0, ts)],
            exemplars=[({"trace_id": "w%d" % i}, 1.0, ts)])])),
            session=qsess, timeout=60)

    def small_writes():
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            r = small_write(i)
            smalls.append((t0, time.monotonic() - t0,
                           r.headers.get("X-Worker"), r.status_code))
            i += 1

    th = threading.Thread(target=small_writes)
    th.start()
    try:
        time.sleep(0.3)
        w0 = time.monotonic()
        r = rw.post(write_url, body, timeout=300, session=wsess)
        w1 = time.monotonic()
    finally:
        stop.set()
        th.join()
    assert r.status_code == 204, r.text
    assert r.headers.get("X-Worker") == writer
    assert all(code == 204 and pid == reader
               for _, _, pid, code in smalls), smalls[-3:]
    during = sorted(d for t0, d, _, _ in smalls if w0 <= t0 <= w1)
    assert during, "no write in the other worker during the big one"
    print("\nthe big write took %.2f s; %d small writes in the other worker "
          "meanwhile: p50 %.1f ms, worst %.1f ms"
          % (w1 - w0, len(during), during[len(during) // 2] * 1000,
             during[-1] * 1000))
    assert during[-1] < HOLD_LIMIT, \
        "a small write waited %.0f ms" % (during[-1] * 1000)
    r = requests.get(query_url, params={"query": 'hb{i="299999"}'}, timeout=30)
    assert r.status_code == 200 and "%032x" % 299999 in r.text, r.text
