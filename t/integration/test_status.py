"""promgate_status: valid Prometheus text (promtool), counters equal to what
was sent, summed over both workers."""

import os
import re
import threading

import pytest
import requests

import rw
from conftest import gateway_http, promtool_check_metrics
from fakeup import Resp, free_port
from procs import wait_for
from promtext import Metrics, scrape

PID_LOG = ("    log_format pgpid 'pid=$pid $status';",
           "access_log pid_access.log pgpid;")


def make_body(i):
    """request i: (body, samples, exemplars, histograms, metadata)"""
    n = rw.uniq("stat")
    t = rw.now_ms()
    nsamples = 1 + i % 4
    nex = i % 3
    nhist = 1 if i % 5 == 0 else 0
    nmeta = 1 if i % 7 == 0 else 0
    s = [rw.series(n, {"job": "pg", "i": str(i)},
                   [(float(k), t + k) for k in range(nsamples)],
                   exemplars=[({"trace_id": "x%d" % k}, 1.0, t) for k in range(nex)],
                   histograms=[rw.native_histogram(t)] * nhist)]
    md = [rw.metadata(n)] * nmeta
    return rw.compress(rw.write_request(s, md)), nsamples, nex, nhist, nmeta


def malformed_body():
    """not a WriteRequest: a series cut in the middle of a label"""
    raw = rw.raw_write_request([rw.raw_series(
        [("__name__", rw.uniq("mal")), ("a", "2")], [(1.0, rw.now_ms())])])
    return rw.compress(raw[:-12])


def invalid_series_body():
    """one valid series, one without __name__ (dropped and counted)"""
    return rw.compress(rw.raw_write_request([
        rw.raw_series([("__name__", rw.uniq("ok"))], [(1.0, rw.now_ms())]),
        rw.raw_series([("job", "nameless")], [(1.0, rw.now_ms())])]))


def test_promtool_check_metrics(gateway, make_fake):
    up = make_fake()
    gw = gateway([("a", up.url)])
    for i in range(3):
        assert rw.post(gw.write_url, make_body(i)[0]).status_code == 204
    assert rw.post(gw.write_url, malformed_body()).status_code == 400
    assert rw.post(gw.write_url, invalid_series_body()).status_code == 204
    r = requests.get(gw.status_url, timeout=10)
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers
    rc, out = promtool_check_metrics(r.text)
    assert rc == 0, out + "\n---\n" + r.text
    m = Metrics(r.text)
    want = {"promgate_write_requests_total", "promgate_received_samples_total",
            "promgate_received_histograms_total", "promgate_received_exemplars_total",
            "promgate_received_metadata_total", "promgate_received_bytes_total",
            "promgate_rejected_requests_total", "promgate_rejected_samples_total",
            "promgate_invalid_series_total", "promgate_invalid_samples_total",
            "promgate_write_versions_total", "promgate_encoded_bodies_total",
            "promgate_forward_attempts_total", "promgate_forward_retries_total",
            "promgate_forward_outcomes_total", "promgate_forward_giveups_total",
            "promgate_write_duration_seconds_bucket",
            "promgate_write_duration_seconds_sum",
            "promgate_write_duration_seconds_count",
            "promgate_inflight_requests", "promgate_inflight_rejected_total"}
    assert m.get("promgate_invalid_series_total", reason="missing_name") == 1
    assert want <= m.names(), sorted(want - m.names())
    assert m.types.get("promgate_write_duration_seconds") == "histogram"
    assert m.types.get("promgate_inflight_requests") == "gauge"


def test_counters_sum_over_workers(gateway, make_fake):
    up = make_fake()
    gw = gateway([("a", up.url)], listen_extra=" reuseport",
                 http_extra=PID_LOG[0], write_extra=PID_LOG[1])
    assert len(gw.worker_pids()) == 2
    N_OK, N_BAD, N_415 = 40, 6, 4
    samples = exemplars = histograms = meta = nbytes = 0
    for i in range(N_OK):
        body, s, e, h, md = make_body(i)
        # a new connection each time, so both workers get some
        r = rw.post(gw.write_url, body, headers={"Connection": "close"})
        assert r.status_code == 204, r.text
        assert "X-Prometheus-Remote-Write-Samples-Written" not in r.headers
        samples, exemplars, histograms, meta = samples + s, exemplars + e, histograms + h, meta + md
        nbytes += len(body)
    for i in range(N_BAD):
        r = rw.post(gw.write_url, malformed_body(), headers={"Connection": "close"})
        assert r.status_code == 400, r.text
    for i in range(N_415):
        r = rw.post(gw.write_url, make_body(i)[0],
                    headers={"Connection": "close", "Content-Type": "text/plain"})
        assert r.status_code == 415, r.text

    m = scrape(gw.status_url)
    codes = m.by_label("promgate_write_requests_total", "code")
    assert {k: v for k, v in codes.items() if v} == {"204": N_OK, "400": N_BAD, "415": N_415}
    assert m.sum("promgate_received_samples_total") == samples
    assert m.sum("promgate_received_exemplars_total") == exemplars
    assert m.sum("promgate_received_histograms_total") == histograms
    assert m.sum("promgate_received_metadata_total") == meta
    assert m.sum("promgate_forward_attempts_total", target="/_rw/a") == N_OK
    assert m.sum("promgate_forward_outcomes_total", target="/_rw/a", outcome="stored") == N_OK
    assert m.sum("promgate_forward_retries_total") == 0
    reasons = m.by_label("promgate_rejected_requests_total", "reason")
    assert reasons.get("malformed") == N_BAD, reasons
    assert m.get("promgate_inflight_requests") == 0
    assert m.get("promgate_write_duration_seconds_count") >= N_OK
    assert m.get("promgate_write_duration_seconds_bucket", le="+Inf") == \
        m.get("promgate_write_duration_seconds_count")
    # bytes received from senders (compressed); rejected requests may add
    assert m.sum("promgate_received_bytes_total") >= nbytes
    assert len(up.posts()) == N_OK

    # every request logged once, by both workers between them
    path = os.path.join(gw.dir, "pid_access.log")
    total = N_OK + N_BAD + N_415
    wait_for(lambda: len(open(path).read().splitlines()) >= total, 5)
    lines = open(path).read().splitlines()
    assert len(lines) == total, "%d of %d requests logged" % (len(lines), total)
    pids = {re.match(r"pid=(\d+)", l).group(1) for l in lines}
    assert len(pids) == 2, "one worker served everything; aggregation untested: %s" % pids



def test_received_bytes_are_the_compressed_bodies(gateway, make_fake):
    up = make_fake()
    gw = gateway([("a", up.url)])
    total = 0
    for i in range(5):
        body = make_body(i)[0]
        total += len(body)
        assert rw.post(gw.write_url, body).status_code == 204
    assert scrape(gw.status_url).sum("promgate_received_bytes_total") == total


def test_inflight_limit_answers_503_at_once(gateway, make_fake):
    """max_inflight 1 per worker, one worker, the target hangs: a second
    write gets 503 at once and is counted"""
    up = make_fake([Resp(delay=3)], Resp(204))
    gw = gateway([("a", up.url)], workers=1, max_inflight=1, retries=0)
    first = {}
    th = threading.Thread(target=lambda: first.setdefault(
        "r", rw.post(gw.write_url, make_body(1)[0], timeout=30)))
    th.start()
    try:
        assert wait_for(lambda: len(up.posts()) == 1, 5)
        m = scrape(gw.status_url)
        assert m.get("promgate_inflight_requests") == 1
        r = rw.post(gw.write_url, make_body(2)[0], timeout=5)
        assert r.status_code == 503, r.text
        assert r.elapsed.total_seconds() < 1.0
    finally:
        th.join(30)
    assert first["r"].status_code == 204
    m = scrape(gw.status_url)
    assert m.sum("promgate_inflight_rejected_total") == 1
    assert m.get("promgate_inflight_requests") == 0


def test_reload_keeps_serving(gateway, make_fake):
    up = make_fake()
    gw = gateway([("a", up.url)])
    assert rw.post(gw.write_url, make_body(0)[0]).status_code == 204
    old = gw.worker_pids()
    gw.reload()
    assert not (gw.worker_pids() & old)
    for i in range(4):
        assert rw.post(gw.write_url, make_body(i)[0],
                       headers={"Connection": "close"}).status_code == 204
    r = requests.get(gw.status_url, timeout=10)
    rc, out = promtool_check_metrics(r.text)
    assert rc == 0, out
    assert Metrics(r.text).sum("promgate_write_requests_total", code="204") >= 4


@pytest.fixture
def kafka(tmp_path):
    """the mock broker; declared before make_nginx in a test so that nginx
    stops first"""
    from kafka_broker import MockKafka
    k = MockKafka(str(tmp_path / "kafka"))
    yield k
    k.stop()


def test_promtool_check_metrics_every_feature(kafka, sockdir, make_nginx,
                                              make_fake, tmp_path):
    """the status page with every feature configured and used (exemplar
    zone with its WAL, series index, Kafka consumer and producer, a
    spool that took writes and replayed them) passes
    `promtool check metrics` with no complaint at all, and carries each
    feature's families"""
    k = kafka
    topic = rw.uniq("st")
    k.create(topic, 2)
    k.create("idx", 2)
    wal = tmp_path / "wal"
    wal.mkdir()
    up = make_fake()
    down = make_fake(default=Resp(503))
    http_extra = (
        "    promgate_exemplar_zone ex:8m max=1000 wal=%s;\n"
        "    promgate_series_zone series:2m;\n"
        "    promgate_kafka_brokers %s;\n"
        "    promgate_kafka_consumer topic=%s group=%s "
        "format=prompb-snappy target=/api/v1/write socket=%s/k.sock;\n"
        "    promgate_spool sp path=%s socket=%s/sp.sock;\n"
        % (wal, k.bootstrap, topic, topic, sockdir, tmp_path / "spool",
           sockdir))
    n = make_nginx(gateway_http(
        free_port(), [("a", up.url), ("b", down.url, "spool=sp")],
        http_extra=http_extra, retries=0, backoff="10ms 20ms",
        write_extra="promgate_exemplars ex; "
                    "promgate_series_index series topic=idx;",
        server_extra="location = /api/v1/query_exemplars "
                     "{ promgate_exemplar_query ex; }"), workers=2)
    url = n.url("/api/v1/write")
    for i in range(3):
        assert rw.post(url, make_body(i + 1)[0]).status_code == 204
    assert rw.post(url, malformed_body()).status_code == 400
    k.produce(topic, [make_body(2)[0]])
    assert wait_for(lambda: scrape(n.url("/metrics")).sum(
        "promgate_kafka_messages_total") >= 1, 60), \
        requests.get(n.url("/metrics"), timeout=10).text
    r = requests.get(n.url("/metrics"), timeout=10)
    assert r.status_code == 200
    rc, out = promtool_check_metrics(r.text)
    assert rc == 0, out + "\n---\n" + r.text
    complaints = [ln for ln in out.splitlines()
                  if ln.strip() and not re.match(r"^promtool .*\(rc 0\): $",
                                                 ln)]
    assert complaints == [], out
    families = set(re.findall(r"(?m)^# TYPE (\S+)", r.text))
    down.default = Resp(204)
    assert wait_for(lambda: scrape(n.url("/metrics")).sum(
        "promgate_spool_replayed_records_total") >= 1, 30)
    r = requests.get(n.url("/metrics"), timeout=10)
    rc, out = promtool_check_metrics(r.text)
    assert rc == 0, out + "\n---\n" + r.text
    families = set(re.findall(r"(?m)^# TYPE (\S+)", r.text))
    for prefix in ("promgate_write_", "promgate_forward_",
                   "promgate_exemplar_zone_", "promgate_wal_",
                   "promgate_series_", "promgate_kafka_", "promgate_spool_"):
        assert any(f.startswith(prefix) for f in families), \
            (prefix, sorted(families))


@pytest.mark.parametrize("first,second", [
    ("promgate_remote_write", "promgate_status"),
    ("promgate_status", "promgate_remote_write"),
    ("promgate_status", "promgate_status"),
    ("promgate_remote_write", "promgate_remote_write"),
])
def test_one_endpoint_per_location(make_nginx, first, second):
    """a location is a write endpoint or the status page, once"""
    n = make_nginx("    server { listen 127.0.0.1:%d; location = /x "
                   "{ %s; %s; } }\n" % (free_port(), first, second),
                   start=False)
    n.error_log_problems = lambda: []     # the [emerg] is the point
    rc, out = n.test_config()
    assert rc != 0 and '"%s" directive is duplicate' % second in out, out


def test_reload_without_kafka_consumers_keeps_the_status_page(
        kafka, sockdir, make_nginx, make_fake):
    """a reload that removes every promgate_kafka_consumer: the status page
    still answers (it once read the freed Kafka zone), without Kafka
    families"""
    kafka.create("in-t", 1)
    sink = make_fake()
    port = free_port()
    consumer = ("    promgate_kafka_brokers %s;\n"
                "    promgate_kafka_consumer topic=in-t group=g1 "
                "target=/api/v1/write socket=%s/a.sock;\n"
                % (kafka.bootstrap, sockdir))
    n = make_nginx(gateway_http(port, [("s", sink.url)], http_extra=consumer),
                   workers=1)
    assert "promgate_kafka_messages_total" in \
        requests.get(n.url("/metrics"), timeout=10).text
    n.write_conf(gateway_http(port, [("s", sink.url)]))
    n.reload()
    for _ in range(3):
        r = requests.get(n.url("/metrics"), timeout=10)
        assert r.status_code == 200
        assert "promgate_kafka_" not in r.text
        assert "promgate_write_requests_total" in r.text
    assert not [l for l in n.error_log_text().splitlines()
                if "exited on signal" in l]
