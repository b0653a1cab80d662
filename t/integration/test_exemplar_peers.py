"""Several gateways as one: promgate_exemplar_peer.

Three gateways on loopback, each with its own exemplar zone and the two
others as peers.  Writes go round-robin over them (a load balancer) and
each gateway forwards to one Prometheus, which so holds everything.  Some
series get exemplars on every node, some requests land on two nodes (a
sender's retry through the balancer: the same exemplars captured twice).
Every gateway's /api/v1/query_exemplars must answer what that Prometheus
answers, byte for byte (3.5; decoded JSON for 2.42, see test_exemplars).

Then one gateway is stopped: the others answer 200 with Prometheus'
"warnings" naming it (promgate_exemplar_peer_policy any), count it on the
status page, and answer 503 where the policy is "all".
"""

import json

import pytest
import requests

import rw
from fakeup import Resp, free_port
from test_exemplars import QUERIES, QUERIES_35, post, get_raw, \
    same_as_prometheus, stream

ZONE = "    promgate_exemplar_zone exemplars:16m max=5000;\n"


def node_conf(port, peers, prom_url):
    """http{} body of one node: writes captured and forwarded to the one
    Prometheus; the query location with every other node as a peer, and
    a second one with policy all"""
    ups, locs, refs, lrefs = [], [], [], []
    for name, pport in peers:
        # the same peer asked at its /lim/ location (max_exemplars=40)
        locs.append(
            "        location /_peerlim/%s {\n"
            "            internal;\n"
            "            proxy_pass http://127.0.0.1:%d/lim/api/v1/"
            "query_exemplars;\n"
            "            subrequest_output_buffer_size 8m;\n"
            "        }" % (name, pport))
        lrefs.append("promgate_exemplar_peer /_peerlim/%s;" % name)
        locs.append(
            "        location /_peer/%s {\n"
            "            internal;\n"
            "            proxy_pass http://127.0.0.1:%d/api/v1/query_exemplars;\n"
            "            proxy_connect_timeout 2s;\n"
            "            proxy_read_timeout 10s;\n"
            "            subrequest_output_buffer_size 8m;\n"
            "        }" % (name, pport))
        refs.append("promgate_exemplar_peer /_peer/%s;" % name)
    hostport = prom_url.split("://", 1)[1].rstrip("/")
    return """
    upstream up_prom {{ server {prom}; keepalive 8; }}
    promgate_tenant_header X-Scope-OrgID;
{zone}
    server {{
        # a small send buffer: an answer (a peer's part too) is sent in
        # many writes, the socket full in between
        listen 127.0.0.1:{port} sndbuf=8k;
        location = /api/v1/write {{
            promgate_remote_write;
            promgate_forward /_rw/prom;
            promgate_exemplars exemplars;
            client_max_body_size 32m;
        }}
        location /_rw/prom {{
            internal;
            proxy_pass http://up_prom/api/v1/write;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            subrequest_output_buffer_size 64k;
        }}
        location = /api/v1/query_exemplars {{
            promgate_exemplar_query exemplars;
            {refs}
            promgate_retries 1;
            promgate_retry_backoff 50ms 100ms;
        }}
        location = /lim/api/v1/query_exemplars {{
            promgate_exemplar_query exemplars max_exemplars=40;
            {refs}
        }}
        location = /plim/api/v1/query_exemplars {{
            promgate_exemplar_query exemplars;
            {lrefs}
        }}
        location = /all/api/v1/query_exemplars {{
            promgate_exemplar_query exemplars;
            {refs}
            promgate_exemplar_peer_policy all;
            promgate_retries 0;
        }}
{locs}
        location = /metrics {{ promgate_status; }}
    }}
""".format(prom=hostport, zone=ZONE, port=port, refs="\n            ".join(refs),
           lrefs="\n            ".join(lrefs), locs="\n".join(locs))


@pytest.fixture
def cluster(make_nginx, make_prometheus):
    prom = make_prometheus("prom")
    ports = [free_port() for _ in range(3)]
    nodes = []
    for i, port in enumerate(ports):
        peers = [("gw%d" % j, ports[j]) for j in range(3) if j != i]
        n = make_nginx(node_conf(port, peers, prom.url), workers=2)
        n.write_url = n.url("/api/v1/write")
        n.query_url = n.url("/api/v1/query_exemplars")
        n.all_url = n.url("/all/api/v1/query_exemplars")
        nodes.append(n)
    return prom, nodes


def spread(nodes, name):
    """writes the stream round-robin, one request per series, then series
    whose exemplars land on every node (step k on node k % 3), steps 4 and
    7 also on the next node (the same exemplars captured twice); returns
    t0 in seconds"""
    s, t0 = stream(name)
    for k, item in enumerate(s):
        post(nodes[k % 3].write_url, [item])

    base = int(t0 * 1000) + 20000
    for step in range(12):
        batch = []
        for j in range(4):
            ts = base + step * 100 + j
            batch.append(rw.series(
                name + "_spread", {"job": "api", "shard": str(j)},
                samples=[(step, ts)],
                exemplars=[({"trace_id": "%032x" % (0xabc000 + step * 10 + j),
                             "span_id": "%016x" % step},
                            step + j / 8.0, ts)]))
        post(nodes[step % 3].write_url, batch)
        if step in (4, 7):
            post(nodes[(step + 1) % 3].write_url, batch)
    return t0


def test_every_gateway_answers_as_one_prometheus(cluster, serverset):
    prom, nodes = cluster
    name = rw.uniq("exp")
    t0 = spread(nodes, name)

    start, end = t0 - 60, t0 + 120
    windows = [(start, end), (t0 + 1.5, t0 + 3.2), (t0 + 20.1, t0 + 20.6)]
    queries = QUERIES + QUERIES_35 + [
        "{name}_spread",
        '{name}_spread{{shard=~"[12]"}}',
        'sum by (shard) (rate({name}_spread[5m]))',
    ]

    compared = 0
    for q in queries:
        query = q.format(name=name)
        for (a, b) in windows:
            params = {"query": query, "start": "%.3f" % a, "end": "%.3f" % b}
            want = get_raw(prom.url + "/api/v1/query_exemplars", params)
            if q in QUERIES_35 and serverset.prom_major < 3:
                continue
            for i, n in enumerate(nodes):
                got = get_raw(n.query_url, params)
                assert same_as_prometheus(serverset, got, want), \
                    "node %d query %r window %r:\n  promgate   %r\n" \
                    "  Prometheus %r" % (i, query, (a, b), got, want)
            compared += 1

    # the data really is spread: no node alone holds the whole answer
    params = {"query": name + "_spread", "start": start, "end": end}
    want = get_raw(prom.url + "/api/v1/query_exemplars", params)
    assert want[0] == 200 and want[1].count("trace_id") == 48, want
    for n in nodes:
        assert get_raw(n.query_url, params) == want
    assert compared >= 20 * 3

    # a POST form and the JSON body go to the peers the same way
    for n in nodes:
        r = requests.post(n.query_url, data=params, timeout=30)
        assert same_as_prometheus(serverset, (r.status_code, r.text), want)


def peer_outcomes(text, peer):
    """promgate_forward_outcomes_total{target=peer} by outcome"""
    out = {}
    for line in text.splitlines():
        if line.startswith("promgate_forward_outcomes_total{") \
                and 'target="%s"' % peer in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = float(line.rsplit(" ", 1)[1])
    return out


def test_stopped_peer_answers_with_a_warning(cluster, serverset):
    prom, nodes = cluster
    name = rw.uniq("exs")
    t0 = spread(nodes, name)
    params = {"query": name + "_spread", "start": "%.3f" % (t0 - 60),
              "end": "%.3f" % (t0 + 120)}
    full = json.loads(get_raw(nodes[0].query_url, params)[1])
    assert full["status"] == "success" and "warnings" not in full
    assert sum(len(d["exemplars"]) for d in full["data"]) == 48

    nodes[2].stop()

    for i in (0, 1):
        code, text = get_raw(nodes[i].query_url, params)
        assert code == 200, text
        doc = json.loads(text)
        assert doc["status"] == "success"
        assert len(doc["warnings"]) == 1, doc
        assert '"/_peer/gw2"' in doc["warnings"][0], doc["warnings"]
        # what the stopped node alone held is missing, the rest is there
        got = {(json.dumps(d["seriesLabels"], sort_keys=True),
                json.dumps(e, sort_keys=True))
               for d in doc["data"] for e in d["exemplars"]}
        want = {(json.dumps(d["seriesLabels"], sort_keys=True),
                 json.dumps(e, sort_keys=True))
                for d in full["data"] for e in d["exemplars"]}
        assert got < want
        # steps 2, 5, 8, 11 went to node 2 only, steps 4 and 7 to two nodes
        assert len(want - got) == 4 * 4, sorted(want - got)

        # policy all: the query fails, as Prometheus' unavailable error
        code, text = get_raw(nodes[i].all_url, params)
        assert code == 503, text
        doc = json.loads(text)
        assert doc["errorType"] == "unavailable" and "/_peer/gw2" in \
            doc["error"], doc

        metrics = requests.get(nodes[i].url("/metrics"), timeout=10).text
        assert peer_outcomes(metrics, "/_peer/gw2").get("failed", 0) >= 2, \
            peer_outcomes(metrics, "/_peer/gw2")


def test_large_peer_answers(cluster, serverset):
    """peers' parts larger than the proxy's buffers (nginx puts them in a
    temporary file, read back into the subrequest's memory): 3,000
    exemplars over 300 series, round robin; every node answers
    Prometheus' bytes"""
    prom, nodes = cluster
    name = rw.uniq("exb")
    t0 = (rw.now_ms() // 1000 - 60) * 1000
    for k in range(10):
        post(nodes[k % 3].write_url, [rw.series(
            name + "_bucket", {"job": "api-%d" % (i % 7), "path": "/p/%d" % i},
            samples=[(k, t0 + k * 1000 + i)],
            exemplars=[({"trace_id": "%032x" % (i * 1000003 + k),
                         "span_id": "%016x" % (i + k)},
                        k * 0.001 + i / 7.0, t0 + k * 1000 + i)])
            for i in range(300)])
    params = {"query": name + "_bucket", "start": "%.3f" % (t0 / 1000 - 60),
              "end": "%.3f" % (t0 / 1000 + 60)}
    want = get_raw(prom.url + "/api/v1/query_exemplars", params)
    assert want[0] == 200 and want[1].count("trace_id") == 3000
    for n in nodes:
        assert same_as_prometheus(serverset, get_raw(n.query_url, params),
                                  want)
    # the peers' parts went through temporary files
    spilled = 0
    for n in nodes:
        with open(n.error_log) as f:
            spilled += sum(1 for line in f
                           if "upstream response is buffered to a temporary"
                           in line and 'subrequest: "/_peer/' in line)
    assert spilled >= 3

    # peers over their limits (max_exemplars=40 where they are asked): the
    # merged answer would be too, 422 naming a peer
    code, text = get_raw(nodes[0].url("/plim/api/v1/query_exemplars"),
                         params)
    assert code == 422, text
    doc = json.loads(text)
    assert doc["errorType"] == "execution" and "/_peerlim/gw" in \
        doc["error"], doc


PEER_TYPE = "application/x-promgate-exemplars"


def test_hostile_or_foreign_peers_are_named_not_fatal(make_nginx, make_fake,
                                                      make_prometheus,
                                                      serverset):
    """a peer that answers garbage in the peer format, cut bytes, a
    Prometheus' JSON, or hangs: the query answers 200 from the zone with
    one warning per peer saying what was wrong (400/5xx never; no [alert]);
    what the gateway sent is a form POST marked as a peer's question"""
    prom = make_prometheus("prom")
    good = b"PGXPEER1" + (0x01020304).to_bytes(4, "little")
    peers = {
        "garbage": make_fake(default=Resp(200, {"Content-Type": PEER_TYPE},
                                          good + b"\xff" * 40)),
        "cut": make_fake(default=Resp(200, {"Content-Type": PEER_TYPE},
                                      good + (3).to_bytes(4, "little")
                                      + b"\x01\x00")),
        "json": make_fake(default=Resp(200, {"Content-Type":
                                             "application/json"},
                                       '{"status":"success","data":[]}')),
        "hang": make_fake(default=Resp(200, hang=True)),
    }
    port = free_port()
    locs = "".join(
        "        location /_peer/%s { internal; proxy_pass %s/api/v1/"
        "query_exemplars; proxy_read_timeout 1s; }\n" % (k, f.url)
        for k, f in peers.items())
    refs = "".join("promgate_exemplar_peer /_peer/%s; " % k for k in peers)
    n = make_nginx("""
    upstream up_prom {{ server {prom}; }}
{zone}
    server {{
        listen 127.0.0.1:{port};
        location = /api/v1/write {{
            promgate_remote_write;
            promgate_forward /_rw/prom;
            promgate_exemplars exemplars;
        }}
        location /_rw/prom {{ internal; proxy_pass http://up_prom/api/v1/write; }}
        location = /api/v1/query_exemplars {{
            promgate_exemplar_query exemplars;
            {refs}
            promgate_retries 0;
        }}
{locs}
    }}
""".format(prom=prom.url.split("//")[1], zone=ZONE, port=port, refs=refs,
           locs=locs))
    name = rw.uniq("exh")
    t = rw.now_ms() - 5000
    post(n.url("/api/v1/write"), [rw.series(
        name, {"job": "a"}, samples=[(1, t)],
        exemplars=[({"trace_id": "abc"}, 1, t)])])
    params = {"query": name, "start": t / 1000 - 10, "end": t / 1000 + 10}
    want = json.loads(get_raw(prom.url + "/api/v1/query_exemplars",
                              params)[1])
    code, text = get_raw(n.url("/api/v1/query_exemplars"), params)
    assert code == 200, text
    doc = json.loads(text)
    assert doc["data"] == want["data"]
    w = {k: [x for x in doc["warnings"] if '"/_peer/%s"' % k in x]
         for k in peers}
    assert all(len(v) == 1 for v in w.values()), doc["warnings"]
    assert "invalid peer answer" in w["garbage"][0]
    assert "invalid peer answer" in w["cut"][0]
    assert "not in the peer format" in w["json"][0]
    assert "answered 504" in w["hang"][0]

    r = peers["json"].requests[0]
    assert r.method == "POST"
    assert r.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert r.body.startswith(b"promgate_peer=1&query=")


def test_nginx_t(make_nginx):
    base = """
{zone}
    server {{
        listen 127.0.0.1:{port};
        location = /q {{ {q} }}
        location /_peer/b {{ internal; return 204; }}
    }}
"""
    cases = [
        ("promgate_exemplar_peer /_peer/b;",
         '"promgate_exemplar_peer" needs "promgate_exemplar_query"', 1),
        ("promgate_exemplar_query exemplars; "
         "promgate_exemplar_peer_policy some;", 'invalid value "some"', 1),
        ("promgate_exemplar_query exemplars; promgate_exemplar_peer b;",
         'invalid exemplar peer "b"', 1),
        ("promgate_exemplar_query exemplars; promgate_exemplar_peer /_p/x;",
         'no location of the server of "/q" matches exemplar peer "/_p/x"',
         0),
        ("promgate_exemplar_query exemplars; promgate_exemplar_peer /_peer/b;"
         " promgate_exemplar_peer /_peer/b;",
         'exemplar peer "/_peer/b" is duplicate', 1),
    ]
    for q, msg, rc in cases:
        n = make_nginx(base.format(zone=ZONE, port=free_port(), q=q),
                       start=False)
        code, out = n.test_config()
        n.error_log_problems = lambda: []       # the [emerg] is the point
        assert msg in out, (q, out)
        assert (code != 0) == bool(rc), (q, code, out)


def test_limits_apply_to_the_merged_answer(cluster):
    """max_exemplars=40 where each node holds at most 24 of the 48: the
    merged answer is over it, 422 as Prometheus words an execution error"""
    prom, nodes = cluster
    name = rw.uniq("exl")
    t0 = spread(nodes, name)
    params = {"query": name + "_spread", "start": "%.3f" % (t0 - 60),
              "end": "%.3f" % (t0 + 120)}
    for n in nodes:
        code, text = get_raw(n.url("/lim/api/v1/query_exemplars"), params)
        assert code == 422, text
        doc = json.loads(text)
        assert doc["errorType"] == "execution"
        assert "more than 40 exemplars" in doc["error"], doc
        # one series is within the limit
        one = dict(params, query=name + '_spread{shard="1"}')
        code, text = get_raw(n.url("/lim/api/v1/query_exemplars"), one)
        assert code == 200 and text.count("trace_id") == 12, text


def test_tenant_travels_to_the_peers(cluster):
    """the tenant header of the query goes to the peers with it: each
    tenant's exemplars from whichever node took them, never another's"""
    prom, nodes = cluster
    name = rw.uniq("ext")
    t = rw.now_ms() - 5000
    for i, tenant in ((0, "a"), (1, "b"), (2, "a")):
        post(nodes[i].write_url, [rw.series(
            name, {"job": "x"}, samples=[(i, t + i)],
            exemplars=[({"trace_id": "%s%d" % (tenant, i)}, i, t + i)])],
            headers={"X-Scope-OrgID": tenant})
    params = {"query": name, "start": t / 1000 - 10, "end": t / 1000 + 10}
    for n in nodes:
        for tenant, want in (("a", ["a0", "a2"]), ("b", ["b1"]), ("c", [])):
            code, text = get_raw(n.query_url, params,
                                 headers={"X-Scope-OrgID": tenant})
            assert code == 200, text
            doc = json.loads(text)
            got = [e["labels"]["trace_id"] for d in doc["data"]
                   for e in d["exemplars"]]
            assert got == want, (tenant, doc)
