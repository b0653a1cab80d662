"""Per-target series routing (issue 19): match=/drop= selectors per
target, checked in real storages; nginx -t refusing a selector with
Prometheus' own message; the per-target counters."""

import re

import pytest
import requests

import rw
from conftest import gateway_http
from fakeup import free_port
from procs import as_plain, poll_samples, wait_for


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
    for bad in ('rate(x[5m])', 'x{a="b"} offset 5m', 'x + y'):
        n = make_nginx(gateway_http(free_port(), [
            ("prom", prom.url, "'drop=%s'" % bad)]), start=False)
        n.error_log_problems = lambda: []
        code, out = n.test_config()
        assert code != 0, out
        assert "expected one series selector" in out, out


def test_selector_forms_accepted(make_nginx, prom):
    for good in ('up', 'up{job="x"}', '{__name__=~"go_.*",job!="test"}',
                 '{"service.name"="x"}'):
        n = make_nginx(gateway_http(free_port(), [
            ("prom", prom.url, "'match=%s'" % good)]), start=False)
        code, out = n.test_config()
        assert code == 0, (good, out)
