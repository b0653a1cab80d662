"""The compatibility table of docs/compatibility.md, each cell tested: senders
(Prometheus 2.42, Prometheus 3.5 on remote write 1.0 and on 2.0, vmagent
1.79 and 1.145) × storages (Prometheus 2.42 and 3.5, VictoriaMetrics 1.79
and 1.145), all four storages behind one gateway (Prometheus 3.5 with
proto=asis, the others on the default proto=v1).  For each sender, every
series it holds must be in every storage — less what a storage never keeps
(VictoriaMetrics: NaN-only series) — with the sender's last values.
"""

import math
import time

import pytest
import requests

import rw
import servers
from procs import Prometheus, VictoriaMetrics, VMAgent, wait_for
from test_senders import OpenMetricsTarget


def sets():
    cur, old = servers.get("current"), servers.get("debian12")
    for ss in (cur, old):
        if not ss.available:
            pytest.fail("server set %s incomplete (%s): make servers"
                        % (ss.name, ", ".join(ss.missing)))
    return cur, old


@pytest.fixture(scope="module")
def storages(tmp_path_factory):
    cur, old = sets()
    made = {}
    try:
        made["prom-2.42"] = Prometheus(str(tmp_path_factory.mktemp("m-p242")),
                                       binary=old.prometheus,
                                       features=old.prom_features)
        made["prom-3.5"] = Prometheus(str(tmp_path_factory.mktemp("m-p35")),
                                      binary=cur.prometheus,
                                      features=cur.prom_features)
        made["vm-1.79"] = VictoriaMetrics(str(tmp_path_factory.mktemp("m-vm179")),
                                          binary=old.victoria_metrics)
        made["vm-1.145"] = VictoriaMetrics(str(tmp_path_factory.mktemp("m-vm145")),
                                           binary=cur.victoria_metrics)
        yield made
    finally:
        for s in made.values():
            s.stop()


def matrix_gateway(gateway, st):
    return gateway([("p242", st["prom-2.42"].url),
                    ("p35", st["prom-3.5"].url, "proto=asis"),
                    ("vm179", st["vm-1.79"].url),
                    ("vm145", st["vm-1.145"].url)],
                   ack="all", retries=5)


def prom_sender_config(job, om_port, url, utf8, v2):
    relabel = """
    metric_relabel_configs:
      - target_label: service.name
        replacement: checkout
      - source_labels: [__name__]
        regex: '(.*)_temperature_celsius'
        target_label: __name__
        replacement: '${1}.temperature.celsius'""" if utf8 else ""
    return """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: %s
    static_configs:
      - targets: ['127.0.0.1:%d']%s
remote_write:
  - url: %s
    send_exemplars: true
%s    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
""" % (job, om_port, relabel, url,
       "    protobuf_message: io.prometheus.write.v2.Request\n" if v2 else "")


def last_values(samples):
    """{labels: last float value} of a samples dict, NaN-only series out"""
    out = {}
    for k, vs in samples.items():
        vals = [(t, v) for t, v in vs if isinstance(v, float) and not math.isnan(v)]
        if vals:
            out[k] = max(vals)
    return out


def check_storages(st, want, sel, t0, t1):
    """every series of want ({labels: (t, v)}) is in every storage with that
    sample; returns {storage: missing}"""
    missing = {}
    for name, s in st.items():
        def has_all():
            if isinstance(s, VictoriaMetrics):
                s.flush()
                got = s.export(sel, t0, t1 + 1)
            else:
                got = s.samples(sel, t1, "%ds" % int(t1 - t0 + 30))
            miss = []
            for k, (t, v) in want.items():
                vs = dict(got.get(k, []))
                if t not in vs or not math.isclose(vs[t], v, rel_tol=1e-12):
                    miss.append(k)
            missing[name] = miss
            return not miss
        wait_for(has_all, 40, 0.5)
    return {k: sorted(tuple(sorted(x)) for x in v)[:5]
            for k, v in missing.items() if v}


@pytest.mark.parametrize("sender", ["prometheus-2.42", "prometheus-3.5-rw1",
                                    "prometheus-3.5-rw2"])
def test_prometheus_sender_to_every_storage(gateway, storages, tmp_path, sender):
    cur, old = sets()
    gw = matrix_gateway(gateway, storages)
    om = OpenMetricsTarget(rw.uniq("mx"))
    job = rw.uniq("mxjob")
    modern = sender != "prometheus-2.42"
    cfg = prom_sender_config(job, om.port, gw.write_url, utf8=modern,
                             v2=sender.endswith("rw2"))
    ss = cur if modern else old
    p = Prometheus(str(tmp_path / "sender"), cfg, binary=ss.prometheus,
                   features=ss.prom_features)
    try:
        t0 = time.time()
        sel = '{job="%s"}' % job
        assert wait_for(lambda: len(p.samples(sel)) >= 5
                        and min(len(v) for v in p.samples(sel).values()) >= 4,
                        60, 0.5), p.samples(sel)
        t1 = time.time() - 2
        want = last_values({k: [(t, v) for t, v in vs if t <= t1 * 1000]
                            for k, vs in p.samples(sel, t1, "60s").items()})
        assert len(want) >= 5, want
        if modern:
            assert any(dict(k).get("service.name") == "checkout" for k in want)
        missing = check_storages(storages, want, sel, t0 - 60, t1)
        assert missing == {}, missing
        with open(p.proc.logpath, "rb") as f:
            log = f.read().decode("utf-8", "replace")
        assert "non-recoverable" not in log.lower()
    finally:
        p.stop()
        om.stop()


@pytest.mark.parametrize("version", ["1.79", "1.145"])
def test_vmagent_sender_to_every_storage(gateway, storages, tmp_path, version):
    cur, old = sets()
    ss = cur if version == "1.145" else old
    gw = matrix_gateway(gateway, storages)
    agent = VMAgent(str(tmp_path / "vmagent"), [gw.write_url], binary=ss.vmagent)
    try:
        name = rw.uniq("mxva")
        t = rw.now_ms() - 5000
        lines, want = [], {}
        for i, inst in enumerate(("a", "b", "c")):
            # labels out of order, as vmagent relays them without -sortLabels
            lbl = 'zone="z%d",instance="%s",env="test"' % (i, inst)
            key = frozenset({("__name__", name), ("env", "test"),
                             ("instance", inst), ("zone", "z%d" % i)})
            for k in range(3):
                v = i * 10 + k + 0.5
                lines.append("%s{%s} %r %d" % (name, lbl, v, t + k * 1000))
            want[key] = (t + 2000, i * 10 + 2.5)
        r = requests.post(agent.url + "/api/v1/import/prometheus",
                          data="\n".join(lines) + "\n", timeout=10)
        assert r.status_code == 204, r.text
        missing = check_storages(storages, want, name, t / 1000 - 60,
                                 time.time() + 1)
        assert missing == {}, missing
    finally:
        agent.stop()
