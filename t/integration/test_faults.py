"""Fan-out, retry and ack policy against scripted fake upstreams."""

import email.utils
import os
import re
import time

import pytest
import requests

import rw
from fakeup import Resp, free_port
from procs import wait_for
from promtext import scrape

FAST = dict(backoff="10ms 50ms")


def down_url():
    return "http://127.0.0.1:%d" % free_port()


def small_body(nsamples=3, nexemplars=1):
    n = rw.uniq("flt")
    t = rw.now_ms()
    s = rw.series(n, {"job": "pg"}, [(float(i), t + i) for i in range(nsamples)],
                  exemplars=[({"trace_id": "t%d" % i}, 1.0, t) for i in range(nexemplars)])
    return rw.compress(rw.write_request([s]))


def settle(fakes, seconds=0.3):
    """give late (wrong) retries a chance to show up before counting"""
    time.sleep(seconds)
    return [f.posts() for f in fakes]


# ------------------------------------------------------------- forwarding

def test_forwarded_request_is_the_original(gateway, make_fake):
    a, b = make_fake(), make_fake()
    gw = gateway([("a", a.url), ("b", b.url)])
    body = small_body()
    r = rw.post(gw.write_url, body, headers={
        "X-Scope-OrgID": "tenant-1", "Authorization": "Bearer s3cret",
        "THANOS-TENANT": "thanos-7"})
    assert r.status_code == 204, r.text
    for f in (a, b):
        posts = f.posts()
        assert len(posts) == 1, posts
        p = posts[0]
        assert p.method == "POST" and p.path == "/api/v1/write"
        assert p.body == body, "forwarded body differs from the client's"
        assert p.headers.get("Content-Encoding") == "snappy"
        assert p.headers.get("Content-Type", "").split(";")[0].strip() == \
            "application/x-protobuf"
        assert p.headers.get("X-Prometheus-Remote-Write-Version") == "0.1.0"
        assert re.match(r"^promgate/\d+\.\d+\.\d+", p.headers.get("User-Agent", "")), \
            p.headers.get("User-Agent")
        assert p.headers.get("X-Scope-OrgID") == "tenant-1"
        assert p.headers.get("Authorization") == "Bearer s3cret"
        assert p.headers.get("THANOS-TENANT") == "thanos-7"


# ------------------------------------------------------------------ retry

def test_two_500s_then_204_is_three_attempts(gateway, make_fake):
    a = make_fake([Resp(500, body="boom"), Resp(500, body="boom")], Resp(204))
    gw = gateway([("a", a.url)], retries=3, **FAST)
    body = small_body()
    r = rw.post(gw.write_url, body)
    assert r.status_code == 204, r.text
    (posts,) = settle([a])
    assert len(posts) == 3, posts
    assert all(p.body == body for p in posts)


@pytest.mark.parametrize("status", [400, 409])
def test_rejection_is_not_retried_and_passed_on(gateway, make_fake, status):
    reason = "out of order sample for series xyz %d" % status
    a = make_fake(default=Resp(status, {"Content-Type": "text/plain"}, reason))
    gw = gateway([("a", a.url)], retries=3, **FAST)
    r = rw.post(gw.write_url, small_body())
    assert r.status_code == status, r.text
    assert reason in r.text
    (posts,) = settle([a])
    assert len(posts) == 1, posts


def test_rejection_reason_is_readable_when_the_sender_accepts_gzip(gateway, make_fake):
    """Go senders (Prometheus, vmagent) send Accept-Encoding: gzip, and
    VictoriaMetrics gzips its 400 text when the request accepts it: the reason
    must still reach the sender readable (plain, or with its Content-Encoding)"""
    reason = "cannot unmarshal prompb.WriteRequest: too long label value " * 4
    a = make_fake(default=Resp(400, {"Content-Type": "text/plain"}, reason,
                               gzip_if_accepted=True))
    gw = gateway([("a", a.url)], **FAST)
    r = rw.post(gw.write_url, small_body(), headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 400, r.status_code
    assert reason.strip() in r.text, (r.headers, r.content[:200])


@pytest.mark.parametrize("status", [401, 403, 404, 413])
def test_misconfigured_target_is_503_and_logged(gateway, make_fake, status):
    a = make_fake(default=Resp(status, body="nope"))
    gw = gateway([("a", a.url)], retries=3, **FAST)
    r = rw.post(gw.write_url, small_body())
    assert r.status_code == 503, (r.status_code, r.text)
    (posts,) = settle([a])
    assert len(posts) == 1, posts
    lines = [l for l in gw.error_log_text().splitlines()
             if "/_rw/a" in l and "misconfig" in l.lower()]
    assert lines, "no error.log line naming /_rw/a as misconfigured:\n" + \
        gw.error_log_text()[-3000:]
    assert not any("[debug]" in l or "[info]" in l for l in lines), lines
    m = scrape(gw.status_url)
    assert m.sum("promgate_forward_outcomes_total", target="/_rw/a", outcome="failed") == 1
    assert m.sum("promgate_forward_misconfigured_total", target="/_rw/a") == 1


def test_429_is_retried_and_never_passed_on(gateway, make_fake):
    a = make_fake(default=Resp(429, body="slow down"))
    gw = gateway([("a", a.url)], retries=2, **FAST)
    r = rw.post(gw.write_url, small_body())
    assert r.status_code == 503, (r.status_code, r.text)
    (posts,) = settle([a])
    assert len(posts) == 3, posts


def test_retry_after_seconds_replaces_backoff(gateway, make_fake):
    a = make_fake([Resp(429, {"Retry-After": "1"})], Resp(204))
    gw = gateway([("a", a.url)], retries=3, **FAST)
    t0 = time.monotonic()
    r = rw.post(gw.write_url, small_body())
    assert r.status_code == 204, r.text
    assert time.monotonic() - t0 < 5
    posts = a.posts()
    assert len(posts) == 2, posts
    gap = posts[1].time - posts[0].time
    assert 0.9 <= gap < 3, gap


def test_retry_after_http_date(gateway, make_fake):
    # rendered when the fake answers: now + 2 s, HTTP-date has 1 s resolution
    later = lambda: email.utils.formatdate(time.time() + 2, usegmt=True)
    a = make_fake([Resp(503, {"Retry-After": later})], Resp(204))
    gw = gateway([("a", a.url)], retries=3, **FAST)
    r = rw.post(gw.write_url, small_body())
    assert r.status_code == 204, r.text
    posts = a.posts()
    assert len(posts) == 2, posts
    gap = posts[1].time - posts[0].time
    assert 0.9 <= gap < 4, gap


def test_hanging_target_gets_bounded_answer(gateway, make_fake):
    a = make_fake(default=Resp(hang=True))
    gw = gateway([("a", a.url)], retries=10, backoff="50ms 200ms",
                 retry_timeout="3s", target_extra="proxy_read_timeout 1s;")
    t0 = time.monotonic()
    r = rw.post(gw.write_url, small_body(), timeout=30)
    elapsed = time.monotonic() - t0
    assert r.status_code == 503, (r.status_code, r.text)
    # last attempt starts by 3 s, times out 1 s later (+ backoff, slack)
    assert 1.0 <= elapsed < 6.0, elapsed
    posts = a.posts()
    assert len(posts) >= 2, posts
    assert posts[-1].time - t0 <= 3.5, [p.time - t0 for p in posts]
    m = scrape(gw.status_url)
    assert m.sum("promgate_forward_attempts_total", target="/_rw/a") == len(posts)
    assert m.sum("promgate_forward_outcomes_total", target="/_rw/a", outcome="failed") == 1
    assert m.sum("promgate_forward_giveups_total", target="/_rw/a") == 1


# ------------------------------------------------------------- ack policy

@pytest.mark.parametrize("ack,want", [("all", 503), ("any", 204)])
def test_one_target_down(gateway, make_fake, ack, want):
    a = make_fake()
    gw = gateway([("a", a.url), ("b", down_url())], ack=ack, retries=1, **FAST)
    r = rw.post(gw.write_url, small_body())
    assert r.status_code == want, (r.status_code, r.text)
    (posts,) = settle([a])
    assert len(posts) == 1, "a stored target must not be re-sent: %s" % posts


@pytest.mark.parametrize("ups,want", [(2, 204), (1, 503)])
def test_quorum_of_three(gateway, make_fake, ups, want):
    targets = []
    for i in range(3):
        if i < ups:
            targets.append(("t%d" % i, make_fake().url))
        else:
            targets.append(("t%d" % i, down_url()))
    gw = gateway(targets, ack="quorum", retries=1, **FAST)
    r = rw.post(gw.write_url, small_body())
    assert r.status_code == want, (r.status_code, r.text)


def test_rejected_and_failed_is_503(gateway, make_fake):
    a = make_fake(default=Resp(400, body="bad sample"))
    gw = gateway([("a", a.url), ("b", down_url())], ack="all", retries=1, **FAST)
    r = rw.post(gw.write_url, small_body())
    assert r.status_code == 503, (r.status_code, r.text)


def test_rejected_and_stored_with_all_is_the_rejection(gateway, make_fake):
    a = make_fake()
    b = make_fake(default=Resp(400, body="duplicate sample for timestamp"))
    gw = gateway([("a", a.url), ("b", b.url)], ack="all", **FAST)
    r = rw.post(gw.write_url, small_body())
    assert r.status_code == 400, (r.status_code, r.text)
    assert "duplicate sample for timestamp" in r.text


def test_rejected_and_stored_with_any_is_204(gateway, make_fake):
    a = make_fake()
    b = make_fake(default=Resp(400, body="bad"))
    gw = gateway([("a", a.url), ("b", b.url)], ack="any", **FAST)
    r = rw.post(gw.write_url, small_body())
    assert r.status_code == 204, (r.status_code, r.text)


# ------------------------------------------------------ counters and logs

def test_status_counters_follow_attempts(gateway, make_fake):
    a = make_fake([Resp(500), Resp(500)], Resp(204))
    b = make_fake(default=Resp(400, body="rejected"))
    d = down_url()
    gw = gateway([("a", a.url), ("b", b.url), ("d", d)], ack="any", retries=2, **FAST)
    r = rw.post(gw.write_url, small_body())
    assert r.status_code == 204, (r.status_code, r.text)
    # with ack any the answer may leave before d's retries end: wait for
    # every target's final outcome
    m = wait_for(lambda: (lambda m: m if m.sum("promgate_forward_outcomes_total") == 3
                          and m.get("promgate_inflight_requests") == 0 else None)(
        scrape(gw.status_url)), 10)
    assert m, scrape(gw.status_url).text

    def c(name, target, **kw):
        return m.sum(name, target="/_rw/" + target, **kw)

    assert c("promgate_forward_attempts_total", "a") == 3
    assert c("promgate_forward_retries_total", "a") == 2
    assert c("promgate_forward_outcomes_total", "a", outcome="stored") == 1
    assert c("promgate_forward_outcomes_total", "a", outcome="failed") == 0
    assert c("promgate_forward_giveups_total", "a") == 0

    assert c("promgate_forward_attempts_total", "b") == 1
    assert c("promgate_forward_retries_total", "b") == 0
    assert c("promgate_forward_outcomes_total", "b", outcome="rejected") == 1

    assert c("promgate_forward_attempts_total", "d") == 3
    assert c("promgate_forward_retries_total", "d") == 2
    assert c("promgate_forward_outcomes_total", "d", outcome="failed") == 1
    # giveups count targets dropped because the next retry would pass
    # promgate_retry_timeout (test_hanging_target...), not spent retries
    assert c("promgate_forward_giveups_total", "d") == 0

    assert m.sum("promgate_write_requests_total", code="204") == 1


def test_forward_status_variable_in_access_log(gateway, make_fake):
    a = make_fake()
    b = make_fake(default=Resp(503, body="unavailable"))
    gw = gateway(
        [("a", a.url), ("b", b.url)], ack="any", retries=1, **FAST,
        http_extra="    log_format pg 'pg $status s=$promgate_samples "
                   "e=$promgate_exemplars f=$promgate_forward_status';",
        write_extra="access_log pg_access.log pg;")
    r = rw.post(gw.write_url, small_body(nsamples=3, nexemplars=2))
    assert r.status_code == 204, r.text
    path = os.path.join(gw.dir, "pg_access.log")

    def line():
        try:
            with open(path) as f:
                return [l.strip() for l in f if l.startswith("pg ")]
        except OSError:
            return None
    lines = wait_for(line, 5)
    assert lines == ["pg 204 s=3 e=2 f=204,503"], lines


def test_huge_rejection_text_is_cut_not_fatal(gateway, make_fake):
    """a storage's 400 text larger than subrequest_output_buffer_size: the
    sender still gets the 400, with the reason cut, on a live connection"""
    big = "x" * 200000
    t = make_fake(default=Resp(400, body="bad sample: " + big))
    gw = gateway([("a", "http://127.0.0.1:%d" % t.port)])
    body = rw.compress(rw.write_request([rw.series(
        rw.uniq("cut"), samples=[(1, rw.now_ms())])]))
    sess = requests.Session()
    r = rw.post(gw.write_url, body, session=sess)
    assert r.status_code == 400, r.text[:300]
    assert "(cut)" in r.text
    assert len(r.text) < 70000
    # the same connection still serves
    r = rw.post(gw.url("/api/v1/write"), body, session=sess)
    assert r.status_code == 400
    assert "its text is cut" in gw.error_log_text()


def test_http2_client_gone_while_a_retry_is_due(sockdir, gateway, tmp_path):
    """HTTP/2 senders that go away while their write waits for a retry, to
    a target whose connect fails at once (a missing unix socket): the retry
    timer's subrequest fails on a connection in error, which terminates the
    write from inside the retry handler.  The worker must not touch the
    freed request afterwards (an ASan build reports it), nor crash."""
    import socket
    import subprocess
    # a socket file nothing listens on: connect() is refused at once
    refuser = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    refuser.bind(os.path.join(sockdir, "refuse.sock"))
    target = "http://unix:%s/refuse.sock" % sockdir
    gw = gateway([("gone", target)], retries=3, backoff="400ms 400ms",
                 listen_extra=" http2")
    body = tmp_path / "body"
    body.write_bytes(small_body())
    clients = []
    for _ in range(12):
        clients.append(subprocess.Popen(
            ["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null",
             "-X", "POST", "--data-binary", "@%s" % body,
             "-H", "Content-Type: application/x-protobuf",
             "-H", "Content-Encoding: snappy",
             "-H", "X-Prometheus-Remote-Write-Version: 0.1.0",
             gw.write_url], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        time.sleep(0.03)
    time.sleep(0.1)
    for p in clients:
        p.kill()
    for p in clients:
        p.wait(10)
    time.sleep(2.5)                     # every retry has fired
    assert gw.alive()
    text = gw.error_log_text()
    assert "exited on signal" not in text, text[-3000:]
    # the gateway still serves
    r = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null",
         "-w", "%{http_code}", "-X", "POST", "--data-binary", "@%s" % body,
         "-H", "Content-Type: application/x-protobuf",
         "-H", "Content-Encoding: snappy",
         "-H", "X-Prometheus-Remote-Write-Version: 0.1.0", gw.write_url],
        capture_output=True, timeout=30)
    assert r.stdout == b"503", r
    refuser.close()
