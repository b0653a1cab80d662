"""promgate_spool: a target that is down gets its writes spooled on the
gateway's disk (acknowledged as stored), replayed in order once it is back.
Scripted fake upstreams here; the outage of a real VictoriaMetrics under
load is in test_fault_load.py."""

import glob
import os
import signal
import time

import pytest

import rw
from fakeup import Resp
from procs import wait_for
from promtext import scrape

FAST = dict(retries=1, backoff="10ms 50ms", retry_timeout="2s")


def spool_http(tmp_path, sockdir, name="s", extra=""):
    path = str(tmp_path / ("spool-" + name))
    return path, ("promgate_spool %s path=%s socket=%s/%s.sock %s;"
                  % (name, path, sockdir, name, extra))


def body(name, i, t):
    s = rw.series(name, {"i": str(i)}, [(float(i), t + i)])
    return rw.compress(rw.write_request([s]))


def metric(gw, name, **labels):
    return scrape(gw.status_url).sum(name, **labels)


def bodies_of(fake):
    return [p.body for p in fake.posts() if p.path == "/api/v1/write"]


def series_of(bodies):
    """the series of remote write 1.0 bodies, serialized, in order"""
    out = []
    for b in bodies:
        out += [s.SerializeToString() for s in rw.decode_request(b).timeseries]
    return out


def stored_series(fake):
    """the series the fake answered 2xx to, in order, each once: replays
    of consecutive 1.0 records come merged in one request"""
    seen, out = set(), []
    for x in series_of([p.body for p in fake.posts()
                        if p.response is not None
                        and 200 <= p.response.status < 300]):
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def stored_in_order(fake, sent):
    """every sent write's series reached the fake, in the order sent"""
    want = series_of(sent)
    got = [x for x in stored_series(fake) if x in set(want)]
    if got != want:
        print("stored %d of %d series; first difference at %s; requests: %s"
              % (len(got), len(want),
                 next((i for i, (x, y) in enumerate(zip(got, want))
                       if x != y), min(len(got), len(want))),
                 [(p.response.status if p.response else None,
                   len(series_of([p.body]))) for p in fake.posts()]))
    return got == want


def test_down_target_is_spooled_acked_and_replayed_in_order(
        sockdir, gateway, make_fake, tmp_path):
    a = make_fake(default=Resp(503, body="down"))
    b = make_fake()
    path, http = spool_http(tmp_path, sockdir)
    gw = gateway([("a", a.url, "spool=s"), ("b", b.url)], http_extra=http,
                 **FAST)
    name = rw.uniq("spl")
    t = rw.now_ms()
    sent = [body(name, i, t) for i in range(20)]
    for x in sent:
        r = rw.post(gw.write_url, x)
        assert r.status_code == 204, r.text
    assert metric(gw, "promgate_spool_records", spool="s") >= 1
    assert metric(gw, "promgate_forward_outcomes_total", target="/_rw/a",
                  outcome="spooled") == 20
    # the healthy target got everything at once
    assert bodies_of(b) == sent
    # while down, a's replays fail and are retried
    assert wait_for(lambda: metric(gw, "promgate_spool_replay_errors_total",
                                   spool="s") >= 1, 10)
    a.default = Resp(204)
    assert wait_for(lambda: metric(gw, "promgate_spool_records",
                                   spool="s") == 0, 20), \
        scrape(gw.status_url)
    # every write, in the order it was acknowledged
    assert stored_in_order(a, sent)
    assert metric(gw, "promgate_spool_replayed_records_total",
                  spool="s") == 20
    # consecutive 1.0 records with the same headers went in fewer requests
    assert metric(gw, "promgate_spool_replay_requests_total",
                  spool="s") < 20
    # a write now goes straight to the target
    x = body(name, 99, t)
    assert rw.post(gw.write_url, x).status_code == 204
    assert bodies_of(a)[-1] == x
    assert metric(gw, "promgate_forward_outcomes_total", target="/_rw/a",
                  outcome="spooled") == 20


def spooled_gateway(sockdir, gateway, make_fake, tmp_path, default,
                    extra="", **kw):
    a = make_fake(default=default)
    path, http = spool_http(tmp_path, sockdir, extra=extra)
    args = dict(FAST)
    args.update(kw)
    gw = gateway([("a", a.url, "spool=s")], http_extra=http, **args)
    return a, gw, path


def send(gw, name, n, t, first=0):
    sent = []
    for i in range(first, first + n):
        x = body(name, i, t)
        r = rw.post(gw.write_url, x)
        assert r.status_code == 204, r.text
        sent.append(x)
    return sent


def test_refused_records_are_dropped_and_counted(sockdir, gateway, make_fake,
                                                tmp_path):
    """a record the target refuses on replay as bad data (400, 409, 413,
    415) is dropped, counted and logged, and replay goes on"""
    a, gw, _ = spooled_gateway(sockdir, gateway, make_fake, tmp_path,
                               Resp(503))
    name = rw.uniq("splr")
    t = rw.now_ms()
    sent = send(gw, name, 6, t)
    a.default = Resp(400, body="out of order sample")
    assert wait_for(lambda: metric(gw, "promgate_spool_records",
                                   spool="s") == 0, 20)
    assert metric(gw, "promgate_spool_dropped_records_total", spool="s",
                  reason="rejected") == 6
    assert metric(gw, "promgate_spool_replayed_records_total",
                  spool="s") == 0
    assert "refused record" in gw.error_log_text()
    # the target back: new writes go straight to it
    a.default = Resp(204)
    x = body(name, 7, t)
    assert rw.post(gw.write_url, x).status_code == 204
    assert bodies_of(a)[-1] == x
    assert sent


def test_max_age_drops_old_records(sockdir, gateway, make_fake, tmp_path):
    a, gw, _ = spooled_gateway(sockdir, gateway, make_fake, tmp_path,
                               Resp(503), extra="max_age=1s")
    name = rw.uniq("spla")
    send(gw, name, 4, rw.now_ms())
    time.sleep(1.5)
    a.default = Resp(204)
    assert wait_for(lambda: metric(gw, "promgate_spool_records",
                                   spool="s") == 0, 20)
    assert metric(gw, "promgate_spool_dropped_records_total", spool="s",
                  reason="max_age") == 4


def test_full_spool_is_503_and_recovers(sockdir, gateway, make_fake,
                                        tmp_path):
    """max_size reached: the target counts as failed (503 with ack all),
    nothing half-written; the spool takes writes again once it drained"""
    a, gw, path = spooled_gateway(sockdir, gateway, make_fake, tmp_path,
                                  Resp(503), extra="max_size=1m")
    name = rw.uniq("splf")
    t = rw.now_ms()
    # ~300 KB each, incompressible: a 1m spool takes three
    big = [rw.compress(rw.write_request([rw.series(
        name, {"i": str(i), "k": str(k), "pad": os.urandom(3000).hex()},
        [(1.0, t + i)]) for k in range(50)])) for i in range(8)]
    codes = [rw.post(gw.write_url, x).status_code for x in big]
    assert 503 in codes and codes[0] == 204, codes
    acked = [x for x, c in zip(big, codes) if c == 204]
    assert metric(gw, "promgate_spool_refused_total", spool="s",
                  reason="full") >= 1
    assert "is full (max_size)" in gw.error_log_text()
    a.default = Resp(204)
    assert wait_for(lambda: metric(gw, "promgate_spool_records",
                                   spool="s") == 0, 20)
    assert stored_in_order(a, acked)
    assert rw.post(gw.write_url, big[-1]).status_code == 204


def test_unwritable_spool_is_503_and_recovers(sockdir, gateway, make_fake,
                                              tmp_path):
    """a spool segment that cannot be written (/dev/full): 503, counted,
    logged once per burst; the next segment, a second later, works"""
    a, gw, path = spooled_gateway(sockdir, gateway, make_fake, tmp_path,
                                  Resp(503), workers=1)
    (pid,) = gw.worker_pids()
    st = scrape(gw.status_url)
    # the first record's segment: next_seq starts at 1 on an empty spool
    os.symlink("/dev/full", os.path.join(path, "s-w%04d-%020d.wal"
                                         % (pid, 1)))
    name = rw.uniq("splu")
    t = rw.now_ms()
    r = rw.post(gw.write_url, body(name, 0, t))
    assert r.status_code == 503, r.text
    assert metric(gw, "promgate_spool_refused_total", spool="s",
                  reason="error") >= 1
    assert 'spool "s" could not write' in gw.error_log_text()
    time.sleep(1.2)
    sent = send(gw, name, 3, t, first=1)
    a.default = Resp(204)
    assert wait_for(lambda: metric(gw, "promgate_spool_records",
                                   spool="s") == 0, 20)
    assert stored_in_order(a, sent)
    assert st


def test_kill9_of_the_replaying_worker_loses_nothing(sockdir, gateway,
                                                    make_fake, tmp_path):
    a, gw, _ = spooled_gateway(sockdir, gateway, make_fake, tmp_path,
                               Resp(503))
    gw.error_log_problems = lambda: [
        l for l in gw.error_log_text().splitlines()
        if ("[alert]" in l or "[crit]" in l or "[emerg]" in l)
        and "exited on signal 9" not in l]
    name = rw.uniq("splk")
    t = rw.now_ms()
    # 64 records a replay request: a few slow ones
    sent = send(gw, name, 300, t)
    a.default = Resp(204, delay=0.3)
    assert wait_for(lambda: metric(gw, "promgate_spool_replayed_records_total",
                                   spool="s") >= 1, 20)
    owner = int(metric(gw, "promgate_spool_owner", spool="s"))
    assert owner in gw.worker_pids()
    assert metric(gw, "promgate_spool_records", spool="s") > 0
    os.kill(owner, signal.SIGKILL)
    assert wait_for(lambda: metric(gw, "promgate_spool_records",
                                   spool="s") == 0
                    and int(metric(gw, "promgate_spool_owner", spool="s"))
                    not in (0, owner), 30), \
        scrape(gw.status_url)
    assert stored_in_order(a, sent)


def test_reload_during_replay_goes_on_in_one_worker(sockdir, gateway,
                                                    make_fake, tmp_path):
    """a reload hands the replay over between records: every record
    arrives, in order, and never two replays at once"""
    a, gw, _ = spooled_gateway(sockdir, gateway, make_fake, tmp_path,
                               Resp(503))
    name = rw.uniq("splrl")
    t = rw.now_ms()
    sent = send(gw, name, 300, t)
    a.default = Resp(204, delay=0.3)
    assert wait_for(lambda: metric(gw, "promgate_spool_replayed_records_total",
                                   spool="s") >= 1, 20)
    owner = int(metric(gw, "promgate_spool_owner", spool="s"))
    gw.reload()
    assert metric(gw, "promgate_spool_records", spool="s") > 0
    assert wait_for(lambda: metric(gw, "promgate_spool_records",
                                   spool="s") == 0
                    and int(metric(gw, "promgate_spool_owner", spool="s"))
                    in gw.worker_pids(), 30)
    want = set(series_of(sent))
    got = [p for p in a.posts() if p.response is not None
           and p.response.status == 204
           and set(series_of([p.body])) & want]
    # every series once, in order: no record replayed twice
    assert series_of([p.body for p in got]) == series_of(sent)
    # one at a time: each replay arrived after the previous one's answer
    for p, q in zip(got, got[1:]):
        assert q.time >= p.time + 0.25, (p, q)
    assert owner not in gw.worker_pids()


def test_reload_with_a_new_path_counts_the_new_directory(sockdir, gateway,
                                                        make_fake, tmp_path):
    """path= changed by a reload (the zone is kept): what waits is what the
    new directory holds; the old directory's records stay on disk, said in
    the log; what is spooled after the reload is replayed, in order"""
    a, gw, path = spooled_gateway(sockdir, gateway, make_fake, tmp_path,
                                  Resp(503))
    name = rw.uniq("splmv")
    t = rw.now_ms()
    send(gw, name, 5, t)
    assert metric(gw, "promgate_spool_records", spool="s") == 5
    with open(gw.conf) as f:
        text = f.read()
    new = path + "-moved"
    assert text.count("path=%s " % path) == 1
    gw.write_raw(text.replace("path=%s " % path, "path=%s " % new))
    gw.reload()
    assert metric(gw, "promgate_spool_records", spool="s") == 0
    with open(gw.error_log) as f:
        log = f.read()
    assert ('spool "s" now writes to "%s": the 5 record(s) left in its '
            'previous directory' % new) in log, log
    assert len(glob.glob(os.path.join(path, "s-w*.wal"))) >= 1
    sent = send(gw, name, 3, t, first=5)
    assert metric(gw, "promgate_spool_records", spool="s") == 3
    assert glob.glob(os.path.join(new, "s-w*.wal"))
    a.default = Resp(204)
    assert wait_for(lambda: metric(gw, "promgate_spool_records",
                                   spool="s") == 0, 30), \
        scrape(gw.status_url)
    assert stored_in_order(a, sent)


def test_kill9_of_everything_then_restart_replays(sockdir, gateway, make_fake,
                                                  tmp_path):
    """master and workers killed with a spool on disk: after a restart
    every acknowledged write arrives (duplicates allowed)"""
    a, gw, path = spooled_gateway(sockdir, gateway, make_fake, tmp_path,
                                  Resp(503))
    gw.error_log_problems = lambda: []
    name = rw.uniq("splm")
    t = rw.now_ms()
    sent = send(gw, name, 20, t)
    os.killpg(gw.master_pid, signal.SIGKILL)
    wait_for(lambda: not gw.alive(), 10)
    assert glob.glob(os.path.join(path, "s-w*.wal"))
    a.default = Resp(204)
    gw.start()
    assert wait_for(lambda: metric(gw, "promgate_spool_records",
                                   spool="s") == 0, 30), \
        scrape(gw.status_url)
    assert stored_in_order(a, sent)
    assert "holds 20 record(s)" in gw.error_log_text()


def test_replay_keeps_what_the_target_was_sent(sockdir, gateway, make_fake,
                                               tmp_path):
    """the spool keeps the body as made for the target (here 1.0 translated
    to 2.0 for a proto=v2 target) and the headers it needs (the tenant, the
    sender's Authorization), and replays them as such"""
    a = make_fake(default=Resp(503))
    path, http = spool_http(tmp_path, sockdir)
    gw = gateway([("a", a.url, "proto=v2 spool=s")], http_extra=http, **FAST)
    name = rw.uniq("splv")
    t = rw.now_ms()
    x = body(name, 1, t)
    r = rw.post(gw.write_url, x, headers={"X-Scope-OrgID": "team-7",
                                          "Authorization": "Bearer tok"})
    assert r.status_code == 204, r.text
    first = a.posts()[0]
    a.default = Resp(204)
    assert wait_for(lambda: metric(gw, "promgate_spool_records",
                                   spool="s") == 0, 20)
    ok = [p for p in a.posts()
          if p.response is not None and p.response.status == 204]
    assert len(ok) == 1, ok
    p = ok[0]
    assert p.body == first.body and p.body != x
    assert p.headers.get("Content-Type") == \
        "application/x-protobuf;proto=io.prometheus.write.v2.Request"
    assert p.headers.get("X-Prometheus-Remote-Write-Version") == "2.0.0"
    assert p.headers.get("Content-Encoding") == "snappy"
    assert p.headers.get("X-Scope-OrgID") == "team-7"
    assert p.headers.get("Authorization") == "Bearer tok"
    assert p.headers.get("X-Promgate-Spool") is None


def test_the_spool_socket_is_private_and_replays_only(sockdir, gateway,
                                                       make_fake, tmp_path):
    import stat
    from test_kafka import unix_request
    a = make_fake()
    path, http = spool_http(tmp_path, sockdir)
    gw = gateway([("a", a.url, "spool=s")], http_extra=http, **FAST)
    sock = os.path.join(sockdir, "s.sock")
    st = os.stat(sock)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    # not a replay: refused, nothing forwarded
    code, _ = unix_request(sock, "GET", "/metrics")
    assert code == 403
    code, _ = unix_request(sock, "POST", "/api/v1/write", body=b"x")
    assert code == 403
    assert a.posts() == []


@pytest.mark.parametrize("http,fwd,loc,message", [
    ("", "spool=nope", "= /api/v1/write",
     'unknown spool "nope" of forward target "/_rw/a"'),
    ("promgate_spool s path=%(d)s socket=%(sock)s;", "spool=s",
     "~ ^/api/v1/write$", 'spool "s" needs a prefix or exact location'),
    ("promgate_spool s socket=%(sock)s;", "spool=s", "= /api/v1/write",
     'spool "s" needs path=DIR'),
    ("promgate_spool s path=%(d)s socket=%(sock)s max_size=10k;", "spool=s",
     "= /api/v1/write", 'invalid "max_size=10k"'),
    ("promgate_spool s path=%(d)s socket=%(sock)s bogus=1;", "spool=s",
     "= /api/v1/write", 'invalid parameter "bogus=1"'),
    ("promgate_spool s path=%(d)s socket=/%(long)s.sock;", "spool=s",
     "= /api/v1/write", "longer than a unix socket can have"),
    ("promgate_spool s path=%(d)s socket=%(sock)s;"
     "promgate_spool s path=%(d)s socket=%(sock)s;", "spool=s",
     "= /api/v1/write", 'spool "s" is duplicate'),
    # the same segment file names as the exemplar WAL of zone "s"
    ("promgate_exemplar_zone s:1m max=1000 wal=%(d)s;"
     "promgate_spool s path=%(d)s socket=%(sock)s;", "spool=s",
     "= /api/v1/write", 'where the WAL of exemplar zone "s"'),
])
def test_nginx_t_refuses_bad_spools(sockdir, make_nginx, tmp_path, http, fwd,
                                    loc, message):
    args = {"d": str(tmp_path / "sp"), "sock": os.path.join(sockdir, "s.sock"),
            "long": "x" * 120}
    conf = """
    %s
    server {
        listen 127.0.0.1:%d;
        location %s { promgate_remote_write; promgate_forward /_rw/a %s; }
        location /_rw/a { internal; proxy_pass http://127.0.0.1:9; }
    }
""" % (http % args, rw_free_port(), loc, fwd)
    n = make_nginx(conf, start=False)
    n.error_log_problems = lambda: []
    code, out = n.test_config()
    assert code != 0, out
    assert message in out, out


def test_one_spool_serves_one_target(sockdir, make_nginx, tmp_path):
    conf = """
    promgate_spool s path=%s socket=%s/s.sock;
    server {
        listen 127.0.0.1:%d;
        location = /api/v1/write {
            promgate_remote_write;
            promgate_forward /_rw/a spool=s;
            promgate_forward /_rw/b spool=s;
        }
        location /_rw/a { internal; proxy_pass http://127.0.0.1:9; }
        location /_rw/b { internal; proxy_pass http://127.0.0.1:9; }
    }
""" % (tmp_path / "sp", sockdir, rw_free_port())
    n = make_nginx(conf, start=False)
    n.error_log_problems = lambda: []
    code, out = n.test_config()
    assert code != 0, out
    assert 'spool "s" serves forward target "/_rw/a" already' in out, out


def rw_free_port():
    from fakeup import free_port
    return free_port()


def test_segments_rotate_and_are_deleted_as_they_drain(sockdir, gateway,
                                                       make_fake, tmp_path):
    a, gw, path = spooled_gateway(sockdir, gateway, make_fake, tmp_path,
                                  Resp(503), extra="segment=64k")
    name = rw.uniq("splsg")
    t = rw.now_ms()
    sent = []
    for i in range(120):
        x = rw.compress(rw.write_request([rw.series(
            name, {"i": str(i), "k": str(k), "pad": os.urandom(40).hex()},
            [(1.0, t + i)]) for k in range(10)]))
        assert rw.post(gw.write_url, x).status_code == 204
        sent.append(x)
    created = metric(gw, "promgate_spool_segments_created_total", spool="s")
    assert created >= 4, created
    a.default = Resp(204)
    assert wait_for(lambda: metric(gw, "promgate_spool_records",
                                   spool="s") == 0, 30)
    assert stored_in_order(a, sent)
    # what drained is gone: at most the segment each worker writes to
    assert wait_for(lambda: len(glob.glob(os.path.join(path, "s-w*.wal")))
                    <= 2, 10), os.listdir(path)
    assert metric(gw, "promgate_spool_segments_deleted_total",
                  spool="s") >= created - 2
