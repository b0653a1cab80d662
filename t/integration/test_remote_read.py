"""Remote read through promgate: the request fans out to several real
Prometheus servers and their answers are merged into one gap-free source.

Two replicas (external labels replica=a / replica=b) each hold part of the
data; the session's Prometheus holds all of it.  A remote read through
promgate equals a remote read of that single Prometheus; a third Prometheus
with remote_read pointing at promgate answers PromQL over the merged data.
"""

import os
import struct

import pytest
import requests
import snappy

import rw
from fakeup import FakeUpstream, Resp, free_port
from procs import Nginx, Prometheus

READ_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
    "User-Agent": "promgate-integration-tests/1",
}

SAMPLES, STREAMED = 0, 1
STEP = 15000


# ----------------------------------------------------------------- helpers

def read_request(queries, accepted=()):
    """queries: [(start_ms, end_ms, {name: value})] (equality matchers)"""
    types, remote = rw.pb()
    rr = remote.ReadRequest()
    for start, end, matchers in queries:
        q = rr.queries.add(start_timestamp_ms=start, end_timestamp_ms=end)
        for k, v in matchers.items():
            q.matchers.add(type=types.LabelMatcher.EQ, name=k, value=v)
    rr.accepted_response_types.extend(accepted)
    return rr.SerializeToString()


def post_read(url, raw=None, body=None, headers=None, drop=()):
    h = dict(READ_HEADERS)
    h.update(headers or {})
    for k in drop:
        h.pop(k, None)
    if body is None:
        body = snappy.compress(raw)
    return requests.post(url, data=body, headers=h, timeout=30)


def decode_response(r):
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/x-protobuf"
    assert r.headers["Content-Encoding"] == "snappy"
    _, remote = rw.pb()
    resp = remote.ReadResponse()
    resp.ParseFromString(snappy.uncompress(r.content))
    return resp


def as_dict(result, drop=()):
    """a QueryResult as {sorted label pairs: [(ts, value)]}"""
    out = {}
    for ts in result.timeseries:
        key = tuple(sorted((l.name, l.value) for l in ts.labels
                           if l.name not in drop))
        assert key not in out, "series %s twice" % (key,)
        out[key] = [(s.timestamp, s.value) for s in ts.samples]
    return out


def read(url, queries, accepted=(), drop=()):
    resp = decode_response(post_read(url, read_request(queries, accepted)))
    assert len(resp.results) == len(queries)
    return [as_dict(res, drop) for res in resp.results]


def is_sorted_response(result):
    keys = [[(l.name.encode(), l.value.encode()) for l in ts.labels]
            for ts in result.timeseries]
    return keys == sorted(keys)


def replica_conf(name):
    return ("global:\n  scrape_interval: 15s\n"
            "  external_labels:\n    replica: %s\n" % name)


# ---------------------------------------------------------------- the data

class Data:
    """metric `name` on 3 instances over 40 steps: even steps on A, odd ones
    on B, steps 10..14 on both (same values), step 20 on both with
    different values (A, listed first, wins); instance i3 only on B.
    `bulk` (400 random samples at 1 s) only on A, for the size limits."""

    def __init__(self, full, a, b):
        self.name = rw.uniq("rr")
        self.bulk = self.name + "_bulk"
        self.t0 = rw.now_ms() - 12 * 60 * 1000
        self.t0 -= self.t0 % 1000
        self.tend = self.t0 + 39 * STEP
        self.window = (self.t0 - 1000, self.tend + 1000)

        def val(inst, k):
            return float(k * 10 + inst)

        for_a, for_b, for_full = [], [], []
        for inst in (1, 2, 3):
            labels = {"job": "rr", "instance": "i%d" % inst}
            sa, sb, sf = [], [], []
            for k in range(40):
                t = self.t0 + k * STEP
                v = val(inst, k)
                on_a = inst != 3 and (k % 2 == 0 or 10 <= k <= 14 or k == 20)
                on_b = inst == 3 or k % 2 == 1 or 10 <= k <= 14 or k == 20
                if on_a:
                    sa.append((v, t))
                if on_b:
                    sb.append((v + 0.5 if k == 20 and inst != 3 else v, t))
                sf.append((v, t))
            if sa:
                for_a.append(rw.series(self.name, labels, sa))
            for_b.append(rw.series(self.name, labels, sb))
            for_full.append(rw.series(self.name, labels, sf))

        rnd = [struct.unpack("<d", os.urandom(8))[0] for _ in range(400)]
        bulk = [((x if x == x else 1.0), self.t0 + k * 1000)
                for k, x in enumerate(rnd)]
        for_a.append(rw.series(self.bulk, {"job": "rr"}, bulk))
        for_full.append(rw.series(self.bulk, {"job": "rr"}, bulk))

        for store, req in ((a, for_a), (b, for_b), (full, for_full)):
            r = rw.write(store.write_url, req)
            assert r.status_code == 204, r.text

    def query(self, name=None):
        return (self.window[0], self.window[1], {"__name__": name or self.name})


# ----------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def replicas(tmp_path_factory, serverset):
    made = []
    try:
        for name in ("a", "b"):
            made.append(Prometheus(str(tmp_path_factory.mktemp("rr-" + name)),
                                   config_yaml=replica_conf(name),
                                   binary=serverset.prometheus,
                                   features=serverset.prom_features))
        yield made
    finally:
        for p in made:
            p.stop()


@pytest.fixture(scope="module")
def data(prom, replicas):
    return Data(prom, replicas[0], replicas[1])


EMPTY_ANSWER = snappy.compress(b"\x0a\x00")   # one empty QueryResult


@pytest.fixture(scope="module")
def fakes():
    good = FakeUpstream(default=Resp(200, {"Content-Type":
                                           "application/x-protobuf",
                                           "Content-Encoding": "snappy"},
                                     EMPTY_ANSWER)).start()
    garbage = FakeUpstream(default=Resp(200, {}, b"not a ReadResponse")).start()
    bad_query = FakeUpstream(default=Resp(400, {}, "bad matcher")).start()
    yield {"good": good, "garbage": garbage, "bad_query": bad_query}
    for f in (good, garbage, bad_query):
        f.stop()


def gateway_conf(port, ups, locations):
    """ups: {name: host:port}; locations: {path: (targets, extra)}"""
    out = []
    for name, hostport in ups.items():
        out.append("    upstream up_%s { server %s; keepalive 8; }"
                   % (name, hostport))
    out.append("    server {\n        listen 127.0.0.1:%d;" % port)
    out.append("        promgate_retries 1;\n"
               "        promgate_retry_backoff 10ms 50ms;\n"
               "        promgate_retry_timeout 5s;")
    for path, (targets, extra) in locations.items():
        fwd = "".join("            promgate_read_forward /_rr/%s;\n" % t
                      for t in targets)
        out.append("        location = %s {\n            promgate_remote_read;\n"
                   "%s            %s\n        }" % (path, fwd, extra))
    for name in ups:
        for suffix, size in (("", "8m"), ("_small", "200")):
            out.append(
                "        location /_rr/%s%s {\n"
                "            internal;\n"
                "            proxy_pass http://up_%s/api/v1/read;\n"
                "            proxy_http_version 1.1;\n"
                "            proxy_set_header Connection \"\";\n"
                "            proxy_next_upstream off;\n"
                "            proxy_connect_timeout 2s;\n"
                "            proxy_read_timeout 5s;\n"
                "            subrequest_output_buffer_size %s;\n"
                "        }" % (name, suffix, name, size))
    out.append("    }")
    return "\n".join(out)


@pytest.fixture(scope="module")
def gw(nginx_bin, module_path, replicas, fakes, tmp_path_factory):
    a, b = replicas
    port = free_port()
    ups = {"a": "127.0.0.1:%d" % a.port, "b": "127.0.0.1:%d" % b.port,
           "dead": "127.0.0.1:%d" % free_port(),
           "good": "127.0.0.1:%d" % fakes["good"].port,
           "garbage": "127.0.0.1:%d" % fakes["garbage"].port,
           "bad_query": "127.0.0.1:%d" % fakes["bad_query"].port}
    rep = "promgate_read_replica_label replica;"
    locations = {
        "/api/v1/read": (["a", "b"], rep),
        "/noreplica": (["a", "b"], ""),
        "/any_down": (["a", "dead"], rep + " promgate_read_ack any;"),
        "/all_down": (["a", "dead"], rep + " promgate_read_ack all;"),
        "/single": (["a"], ""),
        "/max_samples": (["a", "b"], rep + " promgate_read_max_samples 100;"),
        "/max_size": (["a"], "promgate_read_max_response_size 2k;"),
        "/small_buffer": (["a_small"], ""),
        "/fake": (["good"], ""),
        "/garbage_any": (["garbage", "good"], ""),
        "/garbage_only": (["garbage"], ""),
        "/bad_query_any": (["bad_query", "good"], ""),
        "/bad_query_all": (["bad_query", "good"], "promgate_read_ack all;"),
    }
    n = Nginx(nginx_bin, module_path,
              str(tmp_path_factory.mktemp("rr-nginx")),
              http=gateway_conf(port, ups, locations), workers=1,
              log_level=os.environ.get("RR_LOG_LEVEL", "info"))
    n.start()
    yield n
    n.stop()
    assert n.error_log_problems() == []


# -------------------------------------------------------------------- tests

def test_union_equals_single_prometheus(gw, prom, data):
    """two halves merged through promgate == the whole, read from one
    Prometheus holding all of it, for the same ReadRequest"""
    q = [data.query(), data.query(data.bulk)]
    want = read(prom.url + "/api/v1/read", q)
    assert len(want[0]) == 3 and all(len(v) == 40 for v in want[0].values())

    got = read(gw.url("/api/v1/read"), q)
    assert got == want

    # a client that prefers streams but takes SAMPLES: re-encoded, merged
    assert read(gw.url("/api/v1/read"), q, accepted=[STREAMED, SAMPLES]) == want

    # the merged series come sorted by their label sets
    resp = decode_response(post_read(gw.url("/api/v1/read"), read_request(q)))
    assert all(is_sorted_response(res) for res in resp.results)


def test_replica_labels(gw, replicas, data):
    """external labels differ between replicas: without
    promgate_read_replica_label each replica's series stays apart"""
    q = [data.query()]
    apart = read(gw.url("/noreplica"), q)[0]
    assert {dict(k)["replica"] for k in apart} == {"a", "b"}
    assert len(apart) == 5          # i1, i2 on both; i3 on B only

    # each replica alone says what it holds, with its external label
    only_a = read(replicas[0].url + "/api/v1/read", q)[0]
    assert all(dict(k)["replica"] == "a" for k in only_a)
    assert {k: v for k, v in apart.items() if dict(k)["replica"] == "a"} == only_a

    merged = read(gw.url("/api/v1/read"), q)[0]
    assert len(merged) == 3
    assert all("replica" not in dict(k) for k in merged)
    i1 = [v for k, v in merged.items() if dict(k)["instance"] == "i1"][0]
    assert [t for t, _ in i1] == [data.t0 + k * STEP for k in range(40)]
    # the conflict at step 20: the first target listed (A) wins
    assert i1[20] == (data.t0 + 20 * STEP, 201.0)


def test_prometheus_reads_through_promgate(gw, prom, data, tmp_path, serverset):
    """a real client of the protocol (the set's Prometheus): PromQL over the
    merged data"""
    cfg = ("global:\n  scrape_interval: 15s\n"
           "remote_read:\n  - url: %s\n    read_recent: true\n"
           % gw.url("/api/v1/read"))
    client = Prometheus(str(tmp_path / "client"), config_yaml=cfg,
                        binary=serverset.prometheus)
    try:
        t = (data.tend + 1000) / 1000.0
        sel = '%s{job="rr"}' % data.name
        assert client.samples(sel, t=t) == prom.samples(sel, t=t)
        assert len(client.samples(sel, t=t)) == 3

        expr = "sum by (instance) (count_over_time(%s[15m]))" % sel
        got = client.query(expr, t=t)["result"]
        assert sorted((r["metric"]["instance"], r["value"][1]) for r in got) \
            == [("i1", "40"), ("i2", "40"), ("i3", "40")]
        assert client.query("max(%s)" % sel, t=t) == prom.query("max(%s)" % sel, t=t)
    finally:
        client.stop()


def test_one_target_down(gw, replicas, data):
    q = [data.query()]
    only_a = read(replicas[0].url + "/api/v1/read", q, drop=("replica",))
    assert read(gw.url("/any_down"), q) == only_a

    r = post_read(gw.url("/all_down"), read_request(q))
    assert r.status_code == 503, r.text
    assert "/_rr/dead: failed, status 502 after 2 attempts" in r.text


def test_streamed_passthrough(gw, replicas, data):
    raw = read_request([data.query()], accepted=[STREAMED])
    direct = post_read(replicas[0].url + "/api/v1/read", raw)
    assert direct.status_code == 200
    assert direct.headers["Content-Type"].startswith(
        "application/x-streamed-protobuf")

    r = post_read(gw.url("/single"), raw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == direct.headers["Content-Type"]
    assert "Content-Encoding" not in r.headers
    assert r.content == direct.content and len(r.content) > 100

    # nothing to pass through from two targets: a clear 400
    r = post_read(gw.url("/api/v1/read"), raw)
    assert r.status_code == 400
    assert "answers SAMPLES (0)" in r.text and "single target" in r.text

    r = post_read(gw.url("/single"), read_request([data.query()], accepted=[7]))
    assert r.status_code == 400 and "none of the accepted" in r.text


def test_forwarded_request(gw, fakes):
    """what a target gets: SAMPLES asked for, its own Content-Length, the
    client's headers, no Accept-Encoding"""
    fake = fakes["good"]
    before = len(fake.requests)
    raw = read_request([(1000, 2000, {"__name__": "x"})],
                       accepted=[STREAMED, SAMPLES])
    r = post_read(gw.url("/fake"), raw,
                  headers={"Accept-Encoding": "gzip, snappy",
                           "X-Scope-OrgID": "tenant1"})
    resp = decode_response(r)
    assert len(resp.results) == 1 and len(resp.results[0].timeseries) == 0

    rec = fake.wait_requests(before + 1)[before]
    assert rec.method == "POST" and rec.path == "/api/v1/read"
    assert int(rec.headers["Content-Length"]) == len(rec.body)
    assert rec.headers["Content-Encoding"] == "snappy"
    assert rec.headers["X-Scope-OrgID"] == "tenant1"
    assert rec.headers.get("Accept-Encoding") is None
    _, remote = rw.pb()
    fwd = remote.ReadRequest()
    fwd.ParseFromString(snappy.uncompress(rec.body))
    assert list(fwd.accepted_response_types) == [SAMPLES]
    assert fwd.queries[0].matchers[0].value == "x"

    # a request that asks for SAMPLES already goes as it came
    raw = read_request([(1000, 2000, {"__name__": "y"})])
    assert post_read(gw.url("/fake"), raw).status_code == 200
    rec = fake.wait_requests(before + 2)[before + 1]
    assert snappy.uncompress(rec.body) == raw


def test_invalid_answers(gw):
    raw = read_request([(1000, 2000, {"__name__": "x"})])

    # one target answering garbage is tolerated with "any"
    assert decode_response(post_read(gw.url("/garbage_any"), raw))

    r = post_read(gw.url("/garbage_only"), raw)
    assert r.status_code == 503
    assert "/_rr/garbage: invalid answer: the answer is not a valid snappy" \
        in r.text

    # a target rejecting the query (400) speaks for it when the policy
    # is not met; with "any" the other target's answer is enough
    r = post_read(gw.url("/bad_query_all"), raw)
    assert r.status_code == 400
    assert 'read target "/_rr/bad_query" rejected the query: bad matcher' in r.text
    assert decode_response(post_read(gw.url("/bad_query_any"), raw))


def test_limits(gw, replicas, data):
    r = post_read(gw.url("/max_samples"), read_request([data.query()]))
    assert r.status_code == 413
    assert "promgate_read_max_samples" in r.text

    # the merged response is over the limit, each answer is not
    r = post_read(gw.url("/max_samples"),
                  read_request([data.query(), data.query()]))
    assert r.status_code == 413, r.text

    r = post_read(gw.url("/max_size"), read_request([data.query(data.bulk)]))
    assert r.status_code == 413
    assert "promgate_read_max_response_size" in r.text

    # the answer does not fit subrequest_output_buffer_size: with a
    # Content-Length (small answer) and chunked (large one); nginx alone
    # would drop the client's connection
    direct = [post_read(replicas[0].url + "/api/v1/read",
                        read_request([data.query(name)]))
              for name in (data.name, data.bulk)]
    assert "Content-Length" in direct[0].headers
    assert "Content-Length" not in direct[1].headers
    for name in (data.name, data.bulk):
        r = post_read(gw.url("/small_buffer"), read_request([data.query(name)]))
        assert r.status_code == 413, r.text
        assert "subrequest_output_buffer_size" in r.text


def test_bad_requests(gw):
    url = gw.url("/api/v1/read")
    good = read_request([(1000, 2000, {"__name__": "x"})])

    r = requests.get(url, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"

    r = post_read(url, good, headers={"Content-Type": "application/json"})
    assert r.status_code == 415 and "application/x-protobuf" in r.text
    r = post_read(url, good, drop=("Content-Encoding",))
    assert r.status_code == 415 and "snappy" in r.text

    r = post_read(url, body=b"")
    assert r.status_code == 400 and "empty body" in r.text

    r = post_read(url, body=b"\xff\xff\xff\xff\xff")
    assert r.status_code == 400 and "snappy" in r.text

    r = post_read(url, raw=b"\x0a\xff\xff\x01")
    assert r.status_code == 400 and "not a valid protobuf ReadRequest" in r.text

    # a snappy bomb: declares 1 GiB, refused before anything is allocated
    r = post_read(url, body=b"\x80\x80\x80\x80\x04\x00")
    assert r.status_code == 413 and "promgate_max_decoded_size" in r.text

    types, remote = rw.pb()
    rr = remote.ReadRequest()
    q = rr.queries.add(start_timestamp_ms=1, end_timestamp_ms=2)
    q.matchers.add(type=2, name="", value="x")
    r = post_read(url, rr.SerializeToString())
    assert r.status_code == 400 and "empty label name" in r.text


from test_example_conf import example   # noqa: E402,F401  (the fixture)


def test_example_conf_reads(example, prom, data):
    """nginx.conf.example's read location, in front of the session's
    Prometheus"""
    example.start()
    q = [data.query(), data.query(data.bulk)]
    assert read(example.url("/api/v1/read"), q) == \
        read(prom.url + "/api/v1/read", q)
