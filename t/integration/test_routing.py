"""Per-target series routing (issue 19): match=/drop= selectors per
target, checked in real storages; nginx -t refusing a selector with
Prometheus' own message; the per-target counters."""

import re

import pytest
import requests
import snappy

import rw
import rw2
from conftest import gateway_http
from fakeup import Resp, free_port
from procs import VictoriaMetrics, as_plain, poll_samples, wait_for
from promtext import scrape


def metric_value(text, name, **labels):
    """the value of one sample of the status page, or None"""
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("%s{%s} " % (name, want)):
            return float(line.rsplit(" ", 1)[1])
    return None


def names_of(samples):
    return {dict(k)["__name__"] + "|" + dict(k).get("job", "")
            for k in samples}


def test_match_and_drop_split_the_series(gateway, prom, vm):
    """Prometheus gets what matches, VictoriaMetrics what the same selector
    drops: each holds exactly its half, their union is everything"""
    n = rw.uniq("route")
    sel = '{__name__=~"%s_go_.*",job!="test"}' % n
    gw = gateway([("prom", prom.url, "'match=%s'" % sel),
                  ("vm", vm.url, "'drop=%s'" % sel)])
    t = rw.now_ms() - 10000
    req, want_in, want_out = [], set(), set()
    for i in range(40):
        name = "%s_%s_%d" % (n, "go" if i % 2 else "other", i)
        job = "test" if i % 4 == 3 else "api"
        req.append(rw.series(name, {"job": job}, [(float(i), t)]))
        chosen = i % 2 == 1 and job != "test"
        (want_in if chosen else want_out).add(name + "|" + job)
    assert len(want_in) == 10 and len(want_out) == 30

    r = rw.write(gw.write_url, req)
    assert r.status_code == 204, r.text

    allsel = '{__name__=~"%s_.*"}' % n
    got_prom = prom.samples(allsel)
    assert names_of(got_prom) == want_in, as_plain(got_prom)
    got_vm = poll_samples(vm, allsel, len(want_out))
    assert names_of(got_vm) == want_out, as_plain(got_vm)
    assert names_of(got_prom) | names_of(got_vm) == want_in | want_out
    # the values came along unchanged
    for k, v in got_prom.items():
        assert v == [(t, float(dict(k)["__name__"].rsplit("_", 1)[1]))]

    text = requests.get(gw.status_url).text
    assert metric_value(text, "promgate_forward_series_total",
                        target="/_rw/prom") == 10, text
    assert metric_value(text, "promgate_forward_series_dropped_total",
                        target="/_rw/prom") == 30, text
    assert metric_value(text, "promgate_forward_series_total",
                        target="/_rw/vm") == 30, text
    assert metric_value(text, "promgate_forward_samples_total",
                        target="/_rw/vm") == 30, text
    assert metric_value(text, "promgate_forward_series_dropped_total",
                        target="/_rw/vm") == 10, text


def test_a_target_chosen_nothing_gets_no_request(gateway, make_fake):
    """a subset that is empty: no request, and the write is stored (ack
    all); a whole subset: the client's bytes as they are"""
    none = make_fake()
    whole = make_fake()
    n = rw.uniq("rnone")
    gw = gateway([("none", none.url, "'match={__name__=\"nothing_here\"}'"),
                  ("whole", whole.url, "'drop={job=\"nope\"}'")])
    body = rw.compress(rw.write_request(
        [rw.series(n, {"job": "a"}, [(1.0, rw.now_ms())])]))
    r = rw.post(gw.write_url, body)
    assert r.status_code == 204, r.text
    assert wait_for(lambda: len(whole.requests) == 1, 10)
    assert none.requests == []
    assert whole.requests[0].body == body


def test_nginx_t_refuses_a_bad_selector_with_prometheus_message(
        make_nginx, prom, serverset):
    """the message is the one Prometheus 3.5's own API gives for the
    selector (promgate's parser is 3.5's; 2.42 words some errors apart)"""
    if not serverset.prom_at_least(3, 5):
        pytest.skip("Prometheus %s: the parser compared is 3.5's"
                    % serverset.prom_version_str)
    for bad in ('{job="a"', '{job=~"("}', '{__name__=~"x",job!}', '{}'):
        r = requests.get(prom.url + "/api/v1/query", params={"query": bad})
        assert r.status_code == 400
        msg = r.json()["error"]
        assert msg.startswith('invalid parameter "query": '), msg
        msg = msg[len('invalid parameter "query": '):]
        n = make_nginx(gateway_http(free_port(), [
            ("prom", prom.url, "'match=%s'" % bad)]), start=False)
        n.error_log_problems = lambda: []     # the [emerg] is the point
        code, out = n.test_config()
        assert code != 0, out
        assert ('invalid match= selector "%s" of forward target "/_rw/prom": '
                '%s' % (bad, msg)) in out, (msg, out)


def test_nginx_t_refuses_an_expression(make_nginx, prom):
    for bad in ('rate(x[5m])', 'x{a="b"} offset 5m', 'x + y', 'x-1', 'x@1',
                'x[5m]', '-x{a="b"}'):
        n = make_nginx(gateway_http(free_port(), [
            ("prom", prom.url, "'drop=%s'" % bad)]), start=False)
        n.error_log_problems = lambda: []
        code, out = n.test_config()
        assert code != 0, out
        assert "expected one series selector" in out, out


def test_selector_forms_accepted(make_nginx, prom):
    for good in ('up', 'up{job="x"}', '{__name__=~"go_.*",job!="test"}',
                 '{"service.name"="x"}', 'node:cpu:rate5m',
                 ' {job="a"} '):
        n = make_nginx(gateway_http(free_port(), [
            ("prom", prom.url, "'match=%s'" % good)]), start=False)
        code, out = n.test_config()
        assert code == 0, (good, out)


# ------------------------------------------------------------ shard groups

@pytest.fixture(scope="module")
def vms(serverset, tmp_path_factory):
    """four VictoriaMetrics of the test's server set: a shard group's
    storage nodes (tests tell their series apart by name)"""
    made = []
    try:
        for i in range(4):
            made.append(VictoriaMetrics(
                str(tmp_path_factory.mktemp("vm-shard%d-%s"
                                            % (i, serverset.name))),
                binary=serverset.victoria_metrics))
        yield made
    finally:
        for v in made:
            v.stop()


def shard_gateway(gateway, nodes, replicas=1, by=""):
    extra = "    promgate_shard nodes replicas=%d%s;\n" % (
        replicas, " by=" + by if by else "")
    return gateway([("vm%d" % i, v.url, "shard=nodes")
                    for i, v in enumerate(nodes)], http_extra=extra)


def write_many(gw, n, count, t, batch=2000, labels=lambda i: {}):
    for lo in range(0, count, batch):
        req = [rw.series("%s_%d" % (n, i), dict(labels(i), job="shard"),
                         [(float(i), t)])
               for i in range(lo, min(count, lo + batch))]
        r = rw.write(gw.write_url, req)
        assert r.status_code == 204, r.text


def held(nodes, n, want_total):
    """[set of series names] per node, once the nodes hold want_total
    series between them"""
    got = []

    def check():
        got[:] = []
        for v in nodes:
            v.flush()
            ex = v.export('{__name__=~"%s_.*"}' % n)
            got.append({dict(k)["__name__"]: s for k, s in ex.items()})
        return sum(len(g) for g in got) >= want_total

    wait_for(check, 60, 0.5)
    return got


def test_shard_replicas_1_splits_evenly(gateway, vms):
    nodes = vms[:3]
    gw = shard_gateway(gateway, nodes)
    n = rw.uniq("sh1")
    total = 10000
    write_many(gw, n, total, rw.now_ms() - 10000)
    got = held(nodes, n, total)
    names = [set(g) for g in got]
    # each series in exactly one node, the union is everything
    assert sum(len(s) for s in names) == total
    assert set.union(*names) == {"%s_%d" % (n, i) for i in range(total)}
    # within 10% of even
    for s in names:
        assert abs(len(s) - total / 3) <= total / 3 * 0.10, \
            [len(s) for s in names]
    text = requests.get(gw.status_url).text
    assert sum(metric_value(text, "promgate_forward_series_total",
                            target="/_rw/vm%d" % i) for i in range(3)) == total


def test_shard_replicas_2_each_series_twice(gateway, vms):
    nodes = vms[:3]
    gw = shard_gateway(gateway, nodes, replicas=2)
    n = rw.uniq("sh2")
    total = 3000
    write_many(gw, n, total, rw.now_ms() - 10000)
    got = held(nodes, n, 2 * total)
    names = [set(g) for g in got]
    assert sum(len(s) for s in names) == 2 * total
    every = {"%s_%d" % (n, i) for i in range(total)}
    for name in every:
        assert sum(name in s for s in names) == 2, name


def test_shard_adding_a_node_moves_a_quarter(gateway, vms):
    """three nodes, then four: the series the fourth now holds are the
    only ones that moved, about a quarter of them"""
    n = rw.uniq("sh4")
    total = 10000
    t1 = rw.now_ms() - 20000
    gw3 = shard_gateway(gateway, vms[:3])
    write_many(gw3, n, total, t1)
    before = held(vms[:3], n, total)
    gw4 = shard_gateway(gateway, vms)
    write_many(gw4, n, total, t1 + 1000)

    def second(node):
        """the series whose second sample is there"""
        return {k for k, s in node.items() if any(ts == t1 + 1000
                                                 for ts, _ in s)}

    after = []

    def all_second():
        after[:] = held(vms, n, total)
        return sum(len(second(g)) for g in after) >= total

    assert wait_for(all_second, 60, 0.5)
    moved = second(after[3])
    stayed = 0
    for i in range(3):
        now = second(after[i])
        # nothing moved between the old nodes
        assert now <= set(before[i]), i
        stayed += len(now)
    assert stayed + len(moved) == total
    share = len(moved) / total
    print("adding a fourth node moved %d of %d series (%.1f%%)"
          % (len(moved), total, 100 * share))
    assert 0.22 <= share <= 0.28, share


def test_shard_by_label_keeps_an_instance_together(gateway, vms):
    nodes = vms[:3]
    gw = shard_gateway(gateway, nodes, by="instance")
    n = rw.uniq("shby")
    total = 600
    write_many(gw, n, total, rw.now_ms() - 10000,
               labels=lambda i: {"instance": "host%d" % (i % 30)})
    got = held(nodes, n, total)
    where = {}
    for k, g in enumerate(got):
        for name in g:
            inst = "host%d" % (int(name.rsplit("_", 1)[1]) % 30)
            where.setdefault(inst, set()).add(k)
    assert len(where) == 30
    assert all(len(s) == 1 for s in where.values()), where
    # and the instances spread over the nodes
    assert len(set().union(*where.values())) == 3


def test_shard_needs_enough_targets(make_nginx, vms):
    n = make_nginx(gateway_http(
        free_port(), [("vm0", vms[0].url, "shard=nodes")],
        http_extra="    promgate_shard nodes replicas=2;\n"), start=False)
    n.error_log_problems = lambda: []
    code, out = n.test_config()
    assert code != 0
    assert ('promgate_shard "nodes" has replicas=2, but only 1 forward '
            'target of this location names it') in out, out
    n = make_nginx(gateway_http(
        free_port(), [("vm0", vms[0].url, "shard=nothere")]), start=False)
    n.error_log_problems = lambda: []
    code, out = n.test_config()
    assert code != 0
    assert 'names shard "nothere", which no "promgate_shard"' in out, out


@pytest.mark.parametrize("ack", ["any", "quorum"])
def test_ack_any_or_quorum_never_loses_a_part(gateway, make_fake, ack):
    """with any or quorum, a target that got a part of the write must store
    it: two complementary targets, one down, is 503 (204 would have lost
    the down target's series: nothing else holds them); a target that got
    no series counts for nothing either way"""
    ok = make_fake()
    down = make_fake(default=Resp(503))
    sel = "'%s={job=\"a\"}'"
    gw = gateway([("ok", ok.url, sel % "match"), ("down", down.url, sel % "drop")],
                 ack=ack, retries=0)
    n = rw.uniq("rany")
    both = [rw.series(n, {"job": j}, [(1.0, rw.now_ms())]) for j in "ab"]
    r = rw.write(gw.write_url, both)
    assert r.status_code == 503, r.text
    assert wait_for(lambda: len(ok.requests) == 1, 10)
    assert len(down.requests) == 1
    # only job="a": the down target gets nothing and is not needed
    r = rw.write(gw.write_url, both[:1])
    assert r.status_code == 204, r.text
    assert len(down.requests) == 1
    # only job="b": the down target alone got series (ok gets none)
    r = rw.write(gw.write_url, both[1:])
    assert r.status_code == 503, r.text
    assert wait_for(lambda: len(down.requests) == 2, 10)
    assert len(ok.requests) == 2


def test_a_write_no_rule_chooses_is_204(gateway, make_fake):
    """every target's rules choose nothing: no request, 204 (the rules
    dropped the series, nothing is owed)"""
    a = make_fake()
    b = make_fake(default=Resp(503))
    gw = gateway([("a", a.url, "'match={job=\"x\"}'"),
                  ("b", b.url, "'match={job=\"y\"}'")], retries=0)
    r = rw.write(gw.write_url, [rw.series(rw.uniq("rnone"), {"job": "z"},
                                          [(1.0, rw.now_ms())])])
    assert r.status_code == 204, r.text
    assert a.requests == [] and b.requests == []


def test_shard_group_counts_once_in_the_ack_policy(gateway, make_fake):
    """quorum over a target and a group of three: the group is one copy of
    the data, so with the target down the write is not acknowledged (as
    four separate targets, three stored would have made a quorum)"""
    down = make_fake(default=Resp(503))
    members = [make_fake() for _ in range(3)]
    gw = gateway([("down", down.url)]
                 + [("s%d" % i, f.url, "shard=g") for i, f in
                    enumerate(members)],
                 ack="quorum", retries=0,
                 http_extra="    promgate_shard g;\n")
    n = rw.uniq("shack")
    r = rw.write(gw.write_url, [rw.series("%s_%d" % (n, i), {"job": "a"},
                                          [(1.0, rw.now_ms())])
                                for i in range(30)])
    assert r.status_code == 503, r.text
    assert wait_for(lambda: sum(len(f.requests) for f in members) == 3, 10)


def test_shard_member_without_series_is_not_waited_for(gateway, make_fake):
    """ack all: a member that fails fails the write only when it got
    series; one whose share is empty gets no request"""
    ok = make_fake()
    bad = make_fake(default=Resp(503))
    gw = gateway([("ok", ok.url, "shard=g"), ("bad", bad.url, "shard=g")],
                 retries=0, http_extra="    promgate_shard g by=instance;\n")
    n = rw.uniq("shempty")
    seen = set()
    for k in range(20):
        before = len(bad.requests)
        r = rw.write(gw.write_url, [
            rw.series("%s_%d" % (n, i), {"instance": "h%d" % k},
                      [(1.0, rw.now_ms())]) for i in range(5)])
        got_bad = len(bad.requests) > before
        assert r.status_code == (503 if got_bad else 204), (k, r.text)
        seen.add(got_bad)
    assert seen == {True, False}


def test_subset_bodies_per_protocol_shared_and_retried(gateway, make_fake):
    """a 2.0 write, routes in both protocols: targets with the same rules
    and protocol get the same body, made once (a retry resends it); every
    body holds exactly its series, in order, metadata along"""
    a = make_fake([Resp(503)])
    b, c, d = make_fake(), make_fake(), make_fake()
    sel = '{__name__=~".+",i=~"0|2"}'
    gw = gateway([("a", a.url, "proto=v2 'match=%s'" % sel),
                  ("b", b.url, "proto=v1 'match=%s'" % sel),
                  ("c", c.url, "proto=v2 'match=%s'" % sel),
                  ("d", d.url, "proto=asis 'drop=%s'" % sel)],
                 backoff="10ms 20ms")
    ts = rw.now_ms()
    name = rw.uniq("rp")
    req = rw2.V2Builder()
    for i in range(4):
        req.series({"__name__": name, "i": str(i)},
                   samples=[(float(i), ts)],
                   metadata=("COUNTER", "requests served", "seconds"))
    r = rw2.post(gw.write_url, req.encode())
    assert r.status_code == 204, r.text
    assert [r.headers.get(h) for h in rw2.WRITTEN_HEADERS] == ["4", "0", "0"]

    assert wait_for(lambda: len(a.requests) == 2, 10)
    bodies_a = [q.body for q in a.requests]
    (rb,), (rc,), (rd,) = (x.wait_requests(1) for x in (b, c, d))
    assert bodies_a[0] == bodies_a[1] == rc.body

    def v2_series(body):
        return [(dict(t["labels"])["i"], t["samples"], t["metadata"])
                for t in rw2.decode_v2(snappy.decompress(body))["timeseries"]]

    meta = (1, "requests served", "seconds")
    assert v2_series(rc.body) == [("0", [(0.0, ts)], meta),
                                  ("2", [(2.0, ts)], meta)]
    assert v2_series(rd.body) == [("1", [(1.0, ts)], meta),
                                  ("3", [(3.0, ts)], meta)]
    wr = rw.decode_request(rb.body)
    assert [([(l.name, l.value) for l in t.labels],
             [(s.value, s.timestamp) for s in t.samples])
            for t in wr.timeseries] == [
        ([("__name__", name), ("i", str(i))], [(float(i), ts)])
        for i in (0, 2)]
    assert rb.headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert rd.headers["X-Prometheus-Remote-Write-Version"] == "2.0.0"
    st = scrape(gw.status_url)
    assert st.get("promgate_encoded_bodies_total", version="2.0") == 2
    assert st.get("promgate_encoded_bodies_total", version="1.0") == 1


def test_a_spooled_target_keeps_its_subset(sockdir, gateway, make_fake,
                                           tmp_path):
    """a target with drop= that is down: its spool holds its subset, and
    the replay brings exactly that subset, in order"""
    a = make_fake(default=Resp(503, body="down"))
    b = make_fake()
    path = str(tmp_path / "spool-s")
    gw = gateway([("a", a.url, "spool=s 'drop={i=~\"[13579]\"}'"),
                  ("b", b.url)],
                 http_extra="promgate_spool s path=%s socket=%s/s.sock;"
                 % (path, sockdir),
                 retries=1, backoff="10ms 50ms", retry_timeout="2s")
    name = rw.uniq("rsp")
    t = rw.now_ms()
    for k in range(3):
        r = rw.write(gw.write_url, [rw.series(name, {"i": str(i), "k": str(k)},
                                              [(float(i), t + k)])
                                    for i in range(10)])
        assert r.status_code == 204, r.text
    st = scrape(gw.status_url)
    assert st.get("promgate_forward_outcomes_total", target="/_rw/a",
                  outcome="spooled") == 3
    a.default = Resp(204)
    assert wait_for(lambda: scrape(gw.status_url).sum(
        "promgate_spool_records", spool="s") == 0, 20)
    got = []
    for p in a.posts():
        if p.response is not None and p.response.status == 204:
            got += [tuple((l.name, l.value) for l in s.labels)
                    for s in rw.decode_request(p.body).timeseries]
    want = [(("__name__", name), ("i", str(i)), ("k", str(k)))
            for k in range(3) for i in range(0, 10, 2)]
    assert got == want
    # b got everything
    assert sum(len(rw.decode_request(p.body).timeseries)
               for p in b.posts()) == 30


# ------------------------------------------------------ tenant from a label

def tenant_gateway(make_nginx, targets, extra="", label="tenant"):
    n = make_nginx(gateway_http(
        free_port(), targets,
        http_extra="    promgate_exemplar_zone tlx:8m max=1000;\n",
        write_extra="promgate_exemplars tlx; promgate_tenant_label %s;"
                    % label + extra,
        server_extra="location = /api/v1/query_exemplars "
                     "{ promgate_exemplar_query tlx; }"))
    n.write_url = n.url("/api/v1/write")
    n.query_url = n.url("/api/v1/query_exemplars")
    n.status_url = n.url("/metrics")
    return n


def by_tenant(fake):
    """{X-Scope-OrgID or None: [(name, i)]} of the 2xx requests"""
    out = {}
    for p in fake.posts():
        names = [(dict((l.name, l.value) for l in s.labels)["__name__"],
                  dict((l.name, l.value) for l in s.labels)["i"])
                 for s in rw.decode_request(p.body).timeseries]
        out.setdefault(p.headers.get("X-Scope-OrgID"), []).append(names)
    return out


def test_tenant_label_one_request_per_tenant(make_nginx, make_fake):
    """series grouped by their tenant label: one request per tenant with
    its header and only its series; series without the label keep the
    request's tenant; a target's rules apply within each tenant"""
    a, b = make_fake(), make_fake()
    gw = tenant_gateway(make_nginx, [
        ("a", a.url), ("b", b.url, "'drop={i=~\"[13579]\"}'")])
    n = rw.uniq("tl")
    t = rw.now_ms()
    tenants = ["t1", "t2", None, "t1", "t2", "t3", None, "t1", "", "t3"]
    req = []
    for i, tn in enumerate(tenants):
        labels = {"i": str(i)}
        if tn is not None:
            labels["tenant"] = tn
        req.append(rw.series(n, labels, [(float(i), t)],
                             exemplars=[({"trace_id": "x%d" % i}, 1.0, t)]))
    r = rw.post(gw.write_url, rw.compress(rw.write_request(req)),
                headers={"X-Scope-OrgID": "base"})
    assert r.status_code == 204, r.text

    def want(keep):
        out = {}
        for tn in ("base", "t1", "t2", "t3"):
            got = [(n, str(i)) for i, x in enumerate(tenants)
                   if (x or "base") == tn and keep(i)]
            if got:
                out[tn] = [got]
        return out

    assert by_tenant(a) == want(lambda i: True)
    assert by_tenant(b) == want(lambda i: i % 2 == 0)
    # the header the client sent is replaced, not added to
    for p in a.posts():
        assert len(p.headers.get_all("X-Scope-OrgID")) == 1

    # exemplars kept per tenant: a tenant's query sees its own
    def traces(tenant):
        r = requests.get(gw.query_url, params={"query": n},
                         headers={"X-Scope-OrgID": tenant}, timeout=10)
        assert r.status_code == 200, r.text
        return sorted(e["labels"]["trace_id"] for s in r.json()["data"]
                      for e in s["exemplars"])

    assert traces("t1") == ["x0", "x3", "x7"]
    assert traces("t3") == ["x5", "x9"]
    assert traces("base") == ["x2", "x6", "x8"]


def test_tenant_label_one_tenant_is_the_senders_bytes(make_nginx, make_fake):
    """every series of one tenant: the sender's body as it is, under that
    tenant's header"""
    a = make_fake()
    gw = tenant_gateway(make_nginx, [("a", a.url)])
    n = rw.uniq("tl1")
    body = rw.compress(rw.write_request([
        rw.series(n, {"i": str(i), "tenant": "solo"}, [(1.0, rw.now_ms())])
        for i in range(5)]))
    r = rw.post(gw.write_url, body, headers={"X-Scope-OrgID": "base"})
    assert r.status_code == 204, r.text
    (p,) = a.posts()
    assert p.body == body
    assert p.headers["X-Scope-OrgID"] == "solo"


def test_tenant_label_too_many_tenants_is_413(make_nginx, make_fake):
    a = make_fake()
    gw = tenant_gateway(make_nginx, [("a", a.url)])
    n = rw.uniq("tlm")
    r = rw.write(gw.write_url, [rw.series(n, {"i": str(i),
                                              "tenant": "t%d" % i},
                                          [(1.0, rw.now_ms())])
                                for i in range(65)])
    assert r.status_code == 413, r.text
    assert "more than 64 tenants" in r.text
    assert a.posts() == []


def posted_series(p):
    """(protocol, [(labels as [(name, value)], samples)]) of a request a
    recording upstream got, whichever version it is"""
    if "v2" in p.headers.get("Content-Type", ""):
        d = rw2.decode_v2(snappy.uncompress(p.body))
        return "v2", [(s["labels"], s["samples"]) for s in d["timeseries"]]
    return "v1", [([(l.name, l.value) for l in s.labels],
                   [(x.value, x.timestamp) for x in s.samples])
                  for s in rw.decode_request(p.body).timeseries]


def test_tenant_label_drop_removes_the_label(make_nginx, make_fake):
    """promgate_tenant_label tenant drop: one request per tenant with its
    header, and no series in it has the label; the other labels and the
    samples as sent, on every encoding path (a 1.0 and a 2.0 sender, each
    to a target as it is and one translating); the exemplar zone keeps the
    series as the storage does, without the label"""
    asis, v2, v1 = make_fake(), make_fake(), make_fake()
    gw = tenant_gateway(make_nginx, [("asis", asis.url, "proto=asis"),
                                     ("v2", v2.url, "proto=v2"),
                                     ("v1", v1.url, "proto=v1")],
                        label="tenant drop")
    n = rw.uniq("tld")
    t = rw.now_ms()
    tenants = ["t1", None, "t2", "t1", ""]
    want = {"t1": [0, 3], "t2": [2], "base": [1, 4]}

    def labels(i):
        # the tenant label between the others, as a sender may put it
        out = [("__name__", n)]
        if tenants[i] is not None:
            out.append(("tenant", tenants[i]))
        return out + [("i", str(i))]

    body1 = rw.compress(rw.write_request([
        rw.series(None, raw_labels=labels(i), samples=[(float(i), t)],
                  exemplars=[({"trace_id": "x%d" % i}, 1.0, t)])
        for i in range(len(tenants))]))
    b2 = rw2.V2Builder()
    for i in range(len(tenants)):
        b2.series(labels(i), samples=[(float(i), t + 1)])

    for version, post, body in (("v1", rw.post, body1),
                                ("v2", rw2.post, b2.encode())):
        before = {f: len(f.posts()) for f in (asis, v2, v1)}
        r = post(gw.write_url, body, headers={"X-Scope-OrgID": "base"})
        assert r.status_code == 204, r.text
        ts = t if version == "v1" else t + 1

        for f, proto in ((asis, version), (v2, "v2"), (v1, "v1")):
            got = {}
            for p in f.posts()[before[f]:]:
                assert len(p.headers.get_all("X-Scope-OrgID")) == 1
                pv, series = posted_series(p)
                assert pv == proto, (version, proto, p.headers)
                tenant = p.headers["X-Scope-OrgID"]
                assert tenant not in got, "two requests for %s" % tenant
                got[tenant] = series
            assert sorted(got) == sorted(want), (version, proto, got)
            for tenant, series in got.items():
                assert series == [([("__name__", n), ("i", str(i))],
                                   [(float(i), ts)]) for i in want[tenant]], \
                    (version, proto, tenant, series)

    # the exemplars: per tenant, under the series the storage holds
    def exemplar_series(tenant):
        r = requests.get(gw.query_url, params={"query": n},
                         headers={"X-Scope-OrgID": tenant}, timeout=10)
        assert r.status_code == 200, r.text
        return sorted((s["seriesLabels"]["i"], sorted(s["seriesLabels"]),
                       [e["labels"]["trace_id"] for e in s["exemplars"]])
                      for s in r.json()["data"])

    assert exemplar_series("t1") == [("0", ["__name__", "i"], ["x0"]),
                                     ("3", ["__name__", "i"], ["x3"])]
    assert exemplar_series("base") == [("1", ["__name__", "i"], ["x1"]),
                                       ("4", ["__name__", "i"], ["x4"])]


def test_tenant_label_drop_in_real_storages(make_nginx, prom, vm, serverset):
    """with drop, VictoriaMetrics (1.0 as sent) and Prometheus (2.0,
    translated, from Prometheus 3 on; 1.0 before) hold every series
    without the tenant label, values as sent; a write all of one tenant is
    made again too (the sender's bytes have the label)"""
    v2 = "proto=v2" if serverset.prom_version >= (3, 0, 0) else ""
    gw = tenant_gateway(make_nginx, [("vm", vm.url), ("prom", prom.url, v2)],
                        label="tenant drop")
    n = rw.uniq("tldr")
    t = rw.now_ms() - 10000
    tenants = ["a", "b", None, "a", "c", "b"]
    req = []
    for i, tn in enumerate(tenants):
        labels = {"i": str(i)}
        if tn is not None:
            labels["tenant"] = tn
        req.append(rw.series(n, labels, [(float(i), t)]))
    r = rw.write(gw.write_url, req)
    assert r.status_code == 204, r.text

    # one tenant alone
    solo = rw.uniq("tlds")
    r = rw.write(gw.write_url, [rw.series(solo, {"i": str(i), "tenant": "a"},
                                          [(float(i), t)])
                                for i in range(3)])
    assert r.status_code == 204, r.text

    for name, count in ((n, len(tenants)), (solo, 3)):
        sel = '{__name__="%s"}' % name
        for store in (vm, prom):
            got = poll_samples(store, sel, count)
            assert sorted(sorted(dict(k)) for k in got) == \
                [["__name__", "i"]] * count, (store, name, as_plain(got))
            for k, v in got.items():
                assert v == [(t, float(dict(k)["i"]))], as_plain(got)


def test_tenant_label_drop_refused_for_name(make_nginx):
    """drop of __name__ would leave series nameless; a parameter other than
    drop is refused"""
    for arg, msg in (("__name__ drop", "without its name"),
                     ("tenant dorp", 'the only one is "drop"')):
        n = make_nginx(gateway_http(free_port(), [("a", "http://127.0.0.1:9")],
                                    write_extra="promgate_tenant_label %s;"
                                    % arg), start=False)
        n.error_log_problems = lambda: []     # the [emerg] is the point
        code, out = n.test_config()
        assert code != 0 and msg in out, out
    n = make_nginx(gateway_http(free_port(), [("a", "http://127.0.0.1:9")],
                                write_extra="promgate_tenant_label t drop;"),
                   start=False)
    assert n.test_config()[0] == 0


def test_v2_written_counts_of_a_subset_target(gateway, make_fake):
    """a 2.0 target sent a part of the write says how much of that part it
    wrote: the sender's answer counts the write, not that part"""
    part = make_fake(default=Resp(204, headers={
        "X-Prometheus-Remote-Write-Samples-Written": "1",
        "X-Prometheus-Remote-Write-Histograms-Written": "0",
        "X-Prometheus-Remote-Write-Exemplars-Written": "0"}))
    whole = make_fake(default=Resp(204, headers={
        "X-Prometheus-Remote-Write-Samples-Written": "3",
        "X-Prometheus-Remote-Write-Histograms-Written": "0",
        "X-Prometheus-Remote-Write-Exemplars-Written": "0"}))
    gw = gateway([("part", part.url, "proto=v2 'match={i=\"0\"}'"),
                  ("whole", whole.url, "proto=v2")])
    req = rw2.V2Builder()
    for i in range(4):
        req.series({"__name__": rw.uniq("wc"), "i": str(i)},
                   samples=[(1.0, rw.now_ms())])
    r = rw2.post(gw.write_url, req.encode())
    assert r.status_code == 204, r.text
    # the whole-write target wrote 3 of 4: that lowers the answer
    assert [r.headers.get(h) for h in rw2.WRITTEN_HEADERS] == ["3", "0", "0"]
