"""The series index (promgate_series_zone, promgate_series_index): new
series of acknowledged writes are produced to a Kafka topic once, read back
from the mock broker of t/kafka_mock.c with kcat.  The keys are checked
against Prometheus' labels.Hash computed here from scratch (XXH64 written
out in Python, no library).
"""

import json
import shutil
import struct
import subprocess
import threading
import time

import pytest
import requests

import rw
from conftest import gateway_http
from fakeup import Resp, free_port
from procs import wait_for
from promtext import Metrics

from kafka_broker import MockKafka, group_settled

TOPIC = "metric-index"


# ------------------------------------------------- Prometheus' labels.Hash

_P1, _P2, _P3 = 11400714785074694791, 14029467366897019727, 1609587929392839161
_P4, _P5, _M = 9650029242287828579, 2870177450012600261, (1 << 64) - 1


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc, lane):
    return (_rotl((acc + lane * _P2) & _M, 31) * _P1) & _M


def xxh64(data):
    n, i = len(data), 0
    if n >= 32:
        v = [(_P1 + _P2) & _M, _P2, 0, (-_P1) & _M]
        while i + 32 <= n:
            lanes = struct.unpack_from("<4Q", data, i)
            v = [_round(v[k], lanes[k]) for k in range(4)]
            i += 32
        acc = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12)
               + _rotl(v[3], 18)) & _M
        for x in v:
            acc = ((acc ^ _round(0, x)) * _P1 + _P4) & _M
    else:
        acc = _P5
    acc = (acc + n) & _M
    while i + 8 <= n:
        acc ^= _round(0, struct.unpack_from("<Q", data, i)[0])
        acc = (_rotl(acc, 27) * _P1 + _P4) & _M
        i += 8
    if i + 4 <= n:
        acc ^= (struct.unpack_from("<I", data, i)[0] * _P1) & _M
        acc = (_rotl(acc, 23) * _P2 + _P3) & _M
        i += 4
    while i < n:
        acc ^= (data[i] * _P5) & _M
        acc = (_rotl(acc, 11) * _P1) & _M
        i += 1
    acc = ((acc ^ (acc >> 33)) * _P2) & _M
    acc = ((acc ^ (acc >> 29)) * _P3) & _M
    return acc ^ (acc >> 32)


def labels_hash(labels):
    """labels: dict with __name__; sorted as remote write sends them"""
    b = b"".join(k.encode() + b"\xff" + v.encode() + b"\xff"
                 for k, v in sorted(labels.items(), key=lambda kv: kv[0].encode()))
    return xxh64(b)


def metric_string(labels):
    rest = sorted((k, v) for k, v in labels.items() if k != "__name__")
    if not rest:
        return labels["__name__"]
    esc = lambda v: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "%s{%s}" % (labels["__name__"],
                       ",".join('%s="%s"' % (k, esc(v)) for k, v in rest))


# ------------------------------------------------------------- fixtures

@pytest.fixture
def kafka(tmp_path):
    k = MockKafka(str(tmp_path / "kafka"))
    k.create(TOPIC, 4)
    yield k
    k.stop()


def topic_messages(kafka, timeout=20):
    """[(key, value dict)] of every message on the topic, via kcat"""
    assert shutil.which("kcat"), "kcat is not installed (make deps)"
    r = subprocess.run(["kcat", "-C", "-b", kafka.bootstrap, "-t", TOPIC,
                        "-o", "beginning", "-e", "-q", "-J"],
                       capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    out = []
    for line in r.stdout.decode().splitlines():
        m = json.loads(line)
        out.append((m["key"], json.loads(m["payload"])))
    return out


def wait_messages(kafka, count, timeout=20):
    """polls until the topic holds at least count messages; returns them"""
    last = []

    def check():
        nonlocal last
        last = topic_messages(kafka)
        return len(last) >= count

    wait_for(check, timeout, 0.3)
    return last


def start(make_nginx, make_fake, kafka, ttl="1h", pending="60s", workers=2,
          properties=(), listen_extra="", script=(), http_extra="",
          write_more=""):
    extra = http_extra
    sink = make_fake(script)
    port = free_port()
    http_extra = ("    promgate_kafka_brokers %s;\n"
                  "    promgate_kafka_property linger.ms 5;\n"
                  "    promgate_series_zone series:2m ttl=%s pending=%s;\n"
                  % (kafka.bootstrap, ttl, pending))
    http_extra += "".join("    promgate_kafka_property %s %s;\n" % p
                          for p in properties)
    http_extra += extra
    n = make_nginx(gateway_http(
        port, [("sink", sink.url)], http_extra=http_extra,
        listen_extra=listen_extra,
        write_extra="promgate_series_index series topic=%s; "
                    "add_header X-Worker $pid; %s" % (TOPIC, write_more)),
        workers=workers)
    n.write_url = n.url("/api/v1/write")
    n.status_url = n.url("/metrics")
    return n


def write(n, label_sets, tenant=None, t=None, session=None):
    t = t or rw.now_ms()
    series = [rw.series(ls["__name__"],
                        {k: v for k, v in ls.items() if k != "__name__"},
                        samples=[(1.0, t)])
              for ls in label_sets]
    headers = {"X-Scope-OrgID": tenant} if tenant else None
    return rw.write(n.write_url, series, headers=headers, session=session)


def metrics(n):
    return Metrics(requests.get(n.status_url, timeout=10).text)


def series_metrics(n):
    return "\n".join(l for l in requests.get(n.status_url, timeout=10)
                     .text.splitlines() if l.startswith("promgate_series"))


def by_key(msgs):
    out = {}
    for k, v in msgs:
        out.setdefault(k, []).append(v)
    return out


# ---------------------------------------------------------------- tests

def test_new_series_published_once_then_again_after_ttl(make_nginx, make_fake,
                                                        kafka):
    n = start(make_nginx, make_fake, kafka, ttl="2s",
              script=[Resp(400, body="storage: rejected\n")])
    name = rw.uniq("idx")
    a = {"__name__": name, "job": "api", "instance": "10.0.0.1:9100"}
    b = {"__name__": name, "job": "db", "path": 'C:\\x\n"q"'}
    c = {"__name__": name + "_bare"}
    d = {"__name__": name, "job": "web", "Zone": "Z\u00fcrich"}

    # a write the storage refuses announces nothing
    r = write(n, [a, b])
    assert r.status_code == 400, r.text
    assert metrics(n).get("promgate_series_new_total", zone="series") == 0

    t0 = int(time.time() * 1000)
    r = write(n, [a, b, c, a])                  # a twice in one write
    assert r.status_code == 204, r.text
    assert time.time() * 1000 - t0 < 2000      # never waits for Kafka

    msgs = wait_messages(kafka, 3)
    assert len(msgs) == 3, msgs

    # repeats are not published; a new one among them is
    r = write(n, [a, b, c, d])
    assert r.status_code == 204
    msgs = wait_messages(kafka, 4)
    time.sleep(1.0)                             # nothing else comes
    msgs = topic_messages(kafka)
    assert len(msgs) == 4, msgs

    keys = by_key(msgs)
    for ls in (a, b, c, d):
        key = "%016x" % labels_hash(ls)
        assert key in keys, (key, ls, msgs)
        assert len(keys[key]) == 1
        v = keys[key][0]
        assert v["metric"] == metric_string(ls)
        assert v["name"] == ls["__name__"]
        assert v["labels"] == {k: x for k, x in ls.items() if k != "__name__"}
        assert v["tenant"] == ""
        assert t0 - 1000 <= v["first_seen"] <= time.time() * 1000 + 1000
    assert list(keys["%016x" % labels_hash(b)][0].keys()) == [
        "metric", "name", "labels", "tenant", "first_seen"]
    assert keys["%016x" % labels_hash(b)][0]["metric"] == \
        name + '{job="db",path="C:\\\\x\\n\\"q\\""}'

    m = metrics(n)
    assert m.get("promgate_series_new_total", zone="series") == 4
    assert m.get("promgate_series_zone_entries", zone="series") == 4
    wait_for(lambda: metrics(n).get("promgate_series_published_total",
                                    zone="series") == 4, 10)
    m = metrics(n)
    assert m.get("promgate_series_published_total", zone="series") == 4
    assert m.get("promgate_series_zone_pending", zone="series") == 0
    assert m.get("promgate_series_zone_capacity", zone="series") > 30000
    assert m.get("promgate_series_failed_total", zone="series") == 0
    assert m.get("promgate_series_collisions_total", zone="series") == 0

    # not seen for more than ttl (2 s, counted in whole seconds): new again
    time.sleep(3.2)
    r = write(n, [a, c])
    assert r.status_code == 204
    msgs = wait_messages(kafka, 6)
    time.sleep(0.5)
    msgs = topic_messages(kafka)
    keys = by_key(msgs)
    assert len(msgs) == 6, msgs
    assert len(keys["%016x" % labels_hash(a)]) == 2
    assert len(keys["%016x" % labels_hash(c)]) == 2
    assert len(keys["%016x" % labels_hash(b)]) == 1


def test_tenants_are_separate(make_nginx, make_fake, kafka):
    n = start(make_nginx, make_fake, kafka)
    s = {"__name__": rw.uniq("ten"), "job": "x"}

    assert write(n, [s], tenant="team-a").status_code == 204
    assert write(n, [s], tenant="team-b").status_code == 204
    assert write(n, [s], tenant="team-a").status_code == 204
    msgs = wait_messages(kafka, 2)
    time.sleep(0.5)
    msgs = topic_messages(kafka)
    assert sorted(v["tenant"] for _, v in msgs) == ["team-a", "team-b"]
    assert {k for k, _ in msgs} == {"%016x" % labels_hash(s)}


@pytest.mark.parametrize("drop", [False, True])
def test_tenant_label_series_are_their_tenants(make_nginx, make_fake, kafka,
                                               drop):
    """promgate_tenant_label: each series is indexed and published under
    the tenant its label names (series without it: the request's), as
    the exemplar zone keeps them; with drop, as that tenant's storage
    holds it, without the label"""
    n = start(make_nginx, make_fake, kafka,
              write_more="promgate_tenant_label team%s;" % (
                  " drop" if drop else ""))
    name = rw.uniq("tl")
    a = {"__name__": name, "job": "x", "team": "a"}
    b = {"__name__": name, "job": "x", "team": "b"}
    c = {"__name__": name, "job": "y"}

    assert write(n, [a, b, c], tenant="hdr").status_code == 204
    msgs = wait_messages(kafka, 3)
    # the same series again, and a's set in tenant b by header: a, b seen
    assert write(n, [a, b], tenant="hdr").status_code == 204
    time.sleep(1.0)
    msgs = topic_messages(kafka)
    assert len(msgs) == 3, msgs

    def kept(ls):
        return {k: v for k, v in ls.items() if not (drop and k == "team")}

    got = sorted((v["tenant"], k, v["metric"], json.dumps(v["labels"],
                                                          sort_keys=True))
                 for k, v in msgs)
    want = sorted((t, "%016x" % labels_hash(kept(ls)),
                   metric_string(kept(ls)),
                   json.dumps({k: x for k, x in kept(ls).items()
                               if k != "__name__"}, sort_keys=True))
                  for t, ls in (("a", a), ("b", b), ("hdr", c)))
    assert got == want
    if drop:
        # one label set, two tenants: two entries, one key
        assert got[0][1] == got[1][1]
    m = metrics(n)
    assert m.get("promgate_series_new_total", zone="series") == 3


def test_broker_down_writes_go_on_series_published_after(make_nginx,
                                                         make_fake, kafka):
    """While the broker is down writes are answered 204 at once; a series
    whose message timed out is forgotten and offered again by the next
    write, so after recovery each series is on the topic exactly once."""
    n = start(make_nginx, make_fake, kafka, pending="3s",
              properties=[("message.timeout.ms", "2000")])
    name = rw.uniq("down")
    before = {"__name__": name, "phase": "before"}
    assert write(n, [before]).status_code == 204
    wait_messages(kafka, 1)

    kafka.down()
    try:
        during = [{"__name__": name, "phase": "during", "i": str(i)}
                  for i in range(20)]
        for _ in range(3):
            t0 = time.time()
            r = write(n, during + [before])
            assert r.status_code == 204, r.text
            assert time.time() - t0 < 1.5
        m = metrics(n)
        assert m.get("promgate_series_new_total", zone="series") == 21
        assert m.get("promgate_series_zone_pending", zone="series") == 20

        # the messages time out (2 s): the offers are forgotten, not lost
        assert wait_for(lambda: metrics(n).get(
            "promgate_series_failed_total", zone="series") >= 20, 15), (
            series_metrics(n), n.error_log_text()[-3000:])
        assert metrics(n).get("promgate_series_zone_pending",
                              zone="series") == 0
    finally:
        kafka.up()

    # the next writes offer them again; each is published once
    def all_there():
        assert write(n, during + [before]).status_code == 204
        return len(topic_messages(kafka)) >= 21

    assert wait_for(all_there, 30, 1.0)
    time.sleep(1.0)
    assert write(n, during + [before]).status_code == 204
    time.sleep(1.0)
    msgs = topic_messages(kafka)
    keys = by_key(msgs)
    assert len(msgs) == 21, sorted(keys)
    for ls in during + [before]:
        assert len(keys["%016x" % labels_hash(ls)]) == 1


def test_outage_shorter_than_timeout_delivers_once(make_nginx, make_fake,
                                                   kafka):
    """A short outage: the producer keeps the messages and delivers them
    when the broker is back; the series stay pending meanwhile, so no write
    offers them twice."""
    n = start(make_nginx, make_fake, kafka)
    name = rw.uniq("blip")
    kafka.down()
    try:
        s = [{"__name__": name, "i": str(i)} for i in range(10)]
        for _ in range(3):
            assert write(n, s).status_code == 204
            time.sleep(0.3)
        assert metrics(n).get("promgate_series_zone_pending",
                              zone="series") == 10
    finally:
        kafka.up()
    msgs = wait_messages(kafka, 10, 30)
    assert write(n, s).status_code == 204
    time.sleep(1.0)
    msgs = topic_messages(kafka)
    assert len(msgs) == 10
    assert wait_for(lambda: metrics(n).get("promgate_series_published_total",
                                           zone="series") == 10, 10), \
        series_metrics(n)


def test_workers_publish_a_new_series_once(make_nginx, make_fake, kafka):
    n = start(make_nginx, make_fake, kafka, workers=4,
              listen_extra=" reuseport")
    name = rw.uniq("race")
    s = [{"__name__": name, "i": str(i)} for i in range(50)]
    body = rw.compress(rw.write_request(
        [rw.series(name, {"i": x["i"]}, samples=[(1.0, rw.now_ms())])
         for x in s]))

    pids, codes = [], []
    go = threading.Barrier(16)

    def sender():
        with requests.Session() as sess:
            go.wait(10)
            r = rw.post(n.write_url, body, session=sess)
            codes.append(r.status_code)
            pids.append(r.headers.get("X-Worker"))

    threads = [threading.Thread(target=sender) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes == [204] * 16
    assert len(set(pids)) >= 2, pids           # several workers took part

    msgs = wait_messages(kafka, 50)
    time.sleep(1.0)
    msgs = topic_messages(kafka)
    keys = by_key(msgs)
    assert len(msgs) == 50, len(msgs)
    assert all(len(v) == 1 for v in keys.values())
    assert metrics(n).get("promgate_series_new_total", zone="series") == 50


def test_zone_survives_reload(make_nginx, make_fake, kafka):
    n = start(make_nginx, make_fake, kafka)
    s = [{"__name__": rw.uniq("reload"), "i": str(i)} for i in range(5)]
    assert write(n, s).status_code == 204
    wait_messages(kafka, 5)
    n.reload()
    assert write(n, s).status_code == 204
    time.sleep(1.0)
    assert len(topic_messages(kafka)) == 5
    assert metrics(n).get("promgate_series_zone_entries", zone="series") == 5


def test_kafka_consumed_writes_are_indexed(sockdir, kafka, make_nginx,
                                           make_fake):
    """Writes read from Kafka by promgate's consumer go through the same
    write location, and so through the index."""
    name = rw.uniq("kin")
    kafka.create(name, 2)
    consumer = ("    promgate_kafka_consumer topic=%s group=%s "
                "format=prompb-snappy target=/api/v1/write "
                "socket=%s/w.sock;\n" % (name, name, sockdir))
    n = start(make_nginx, make_fake, kafka, http_extra=consumer)
    group_settled(n, name, 2)
    s = [{"__name__": name, "i": str(i)} for i in range(7)]
    t = rw.now_ms()
    bodies = [rw.compress(rw.write_request(
        [rw.series(name, {"i": x["i"]}, samples=[(1.0, t)]) for x in part]))
        for part in (s[:5], s[2:])]
    kafka.produce(name, bodies)

    msgs = wait_messages(kafka, 7, 60)
    time.sleep(1.0)
    msgs = topic_messages(kafka)
    keys = by_key(msgs)
    assert len(msgs) == 7, (msgs, requests.get(n.status_url, timeout=10).text,
                            n.error_log_text()[-6000:])
    for ls in s:
        assert len(keys["%016x" % labels_hash(ls)]) == 1
    assert n.alive()


@pytest.mark.parametrize("zone,index,message", [
    ("promgate_series_zone series:2m;", "promgate_series_index series;",
     "needs the Kafka topic"),
    ("promgate_series_zone series:2m ttl=0;",
     "promgate_series_index series topic=t;", "invalid ttl"),
    ("promgate_series_zone series:2m bogus=1;",
     "promgate_series_index series topic=t;", "invalid parameter"),
    ("promgate_series_zone series:16k;",
     "promgate_series_index series topic=t;", "too small"),
    ("", "promgate_series_index nosuch topic=t;",
     "zero size shared memory zone"),
    ("promgate_exemplar_zone ex:8m max=1000;",
     "promgate_series_index ex topic=t;",
     "already declared for a different use"),
])
def test_nginx_t_refuses_bad_config(make_nginx, make_fake, zone, index,
                                    message):
    sink = make_fake()
    n = make_nginx(gateway_http(free_port(), [("sink", sink.url)],
                                http_extra="    " + zone,
                                write_extra=index), start=False)
    n.error_log_problems = lambda: []     # the [emerg] is the point
    rc, out = n.test_config()
    assert rc != 0 and message in out, out
