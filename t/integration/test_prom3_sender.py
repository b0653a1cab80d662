"""Prometheus 3.5 as the sender, as users run it: UTF-8 names made by
metric_relabel_configs (`service.name`, a dotted metric name), remote write
1.0 and 2.0, through the gateway to Prometheus 3.5 and VictoriaMetrics
1.145.  Every series the sender holds must be in both storages, the
sender's log must have no error; with 2.0, native histograms are stored,
exemplars captured into the gateway's zone, and metadata reaches each
target in the form it speaks (checked on recording upstreams).
"""

import math
import os
import time

import pytest
import requests
import snappy

import rw
import rw2
import servers
from procs import Prometheus, wait_for
from promtext import scrape
from test_senders import OpenMetricsTarget

ZONE = "    promgate_exemplar_zone p3ex:16m max=20000;\n"


def current_bin(name):
    p = os.path.join(servers.CURRENT_ROOT, "usr", "bin", name)
    if not os.access(p, os.X_OK):
        pytest.fail("%s is missing: make servers (t/servers.sh)" % p)
    return p


def sender_errors(sender):
    with open(sender.proc.logpath, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    return [l for l in text.splitlines()
            if "level=ERROR" in l or "level=error" in l
            or "non-recoverable" in l.lower()]


@pytest.fixture
def p3_storages(tmp_path):
    """a Prometheus 3.5 and a VictoriaMetrics 1.145 of this test's own"""
    from procs import VictoriaMetrics
    p = Prometheus(str(tmp_path / "p35"), binary=current_bin("prometheus"),
                   features="exemplar-storage,native-histograms")
    v = VictoriaMetrics(str(tmp_path / "vm145"),
                        binary=current_bin("victoria-metrics"))
    yield p, v
    p.stop()
    v.stop()


def sender_config(job, om_port, scrape_port, url, v2):
    return """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: {job}
    static_configs:
      - targets: ['127.0.0.1:{om}']
    metric_relabel_configs:
      - target_label: service.name
        replacement: checkout
      - source_labels: [__name__]
        regex: '(.*)_temperature_celsius'
        target_label: __name__
        replacement: '${{1}}.temperature.celsius'
  - job_name: {job}_self
    static_configs:
      - targets: ['127.0.0.1:{sp}']
    metric_relabel_configs:
      - target_label: service.name
        replacement: self
remote_write:
  - url: {url}
    send_exemplars: true
    send_native_histograms: true
{proto}    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
    metadata_config:
      send: true
      send_interval: 1s
""".format(job=job, om=om_port, sp=scrape_port, url=url,
           proto="    protobuf_message: io.prometheus.write.v2.Request\n" if v2 else "")


def all_nan(samples):
    return all(isinstance(v, float) and math.isnan(v) for _, v in samples)



@pytest.mark.parametrize("v2", [False, True], ids=["rw1", "rw2"])
def test_prometheus3_sender_utf8(gateway, make_fake, p3_storages, tmp_path, v2):
    prom, vm = p3_storages
    rec1, rec2 = make_fake(), make_fake()
    gw = gateway([("prom", prom.url, "proto=asis"), ("vm", vm.url),
                  ("rec1", rec1.url, "proto=v1"), ("rec2", rec2.url, "proto=v2")],
                 write_extra="promgate_exemplars p3ex;", http_extra=ZONE,
                 server_extra="location = /api/v1/query_exemplars "
                              "{ promgate_exemplar_query p3ex; }")
    om = OpenMetricsTarget(rw.uniq("p3s"))
    job = rw.uniq("job")
    cfg = sender_config(job, om.port, prom.port, gw.write_url, v2)
    sender = Prometheus(str(tmp_path / "sender"), cfg,
                        binary=current_bin("prometheus"),
                        features="exemplar-storage,native-histograms"
                                 + (",metadata-wal-records" if v2 else ""))
    try:
        t0 = time.time()
        dotted = om.prefix + ".temperature.celsius"
        sel = '{job=~"%s|%s_self"}' % (job, job)

        # the dotted metric with its UTF-8 label arrives in both storages
        assert wait_for(lambda: prom.query('{"%s", "service.name"="checkout"}'
                                           % dotted)["result"], 60, 0.5), \
            "dotted metric not in Prometheus; sender errors: %s" % sender_errors(sender)[:5]
        time.sleep(4)
        t1 = time.time() - 3

        want = sender.series(sel, t0 - 60, t1)
        assert len(want) > 100, len(want)
        names = {dict(s)["__name__"] for s in want}
        assert dotted in names
        # the scraped series carry the UTF-8 label (up, scrape_* do not:
        # metric_relabel_configs does not touch them)
        utf8 = [s for s in want if dict(s).get("service.name") in ("checkout", "self")]
        assert len(utf8) > 100, len(utf8)

        got = set()

        def prom_has_all():
            nonlocal got
            got = prom.series(sel, t0 - 60, t1)
            return want <= got
        assert wait_for(prom_has_all, 30, 0.5), sorted(want - got)[:10]

        # VictoriaMetrics stores no NaN and no native histogram: leave out
        # series whose samples are all NaN, or all native histograms
        raw = sender.samples(sel, t1, "%ds" % int(t1 - t0 + 60))
        nan_only = {k for k, vs in raw.items() if vs and all_nan(vs)}
        hist_only = {k for k, vs in raw.items()
                     if vs and all(isinstance(v, dict) for _, v in vs)}
        assert hist_only, "the sender scraped no native histogram"
        want_vm = want - nan_only - hist_only
        vgot = set()

        def vm_has_all():
            nonlocal vgot
            vm.flush()
            vgot = vm.series(sel, t0 - 60, t1)
            return want_vm <= vgot
        assert wait_for(vm_has_all, 40, 0.5), sorted(want_vm - vgot)[:10]

        # native histograms (Prometheus 3 exposes some of its own)
        hsel = 'prometheus_http_request_duration_seconds{job="%s_self"}' % job
        res = wait_for(lambda: [r for r in prom.query(hsel)["result"]
                                if "histogram" in r], 30, 0.5)
        assert res, "no native histogram stored"

        # exemplars: what the storage Prometheus holds, the zone holds too
        exsel = '{job="%s"}' % job

        def exset(url):
            r = requests.get(url + "/api/v1/query_exemplars",
                             params={"query": exsel, "start": "%.3f" % (t0 - 60),
                                     "end": "%.3f" % t1}, timeout=30)
            r.raise_for_status()
            out = set()
            for e in r.json()["data"] or []:
                sl = tuple(sorted(e["seriesLabels"].items()))
                for x in e["exemplars"]:
                    out.add((sl, tuple(sorted(x["labels"].items())), x["value"],
                             x["timestamp"]))
            return out
        want_ex = exset(prom.url)
        assert len(want_ex) >= 4, want_ex
        assert want_ex <= exset(gw.url("")), sorted(want_ex - exset(gw.url("")))[:5]

        # metadata in the form each target speaks
        family = om.prefix + "_requests"
        if v2:
            # 1.0 target: translated, in WriteRequest.metadata (counter's
            # family name is the series name)
            def v1_meta():
                out = set()
                for q in rec1.posts():
                    assert q.headers["Content-Type"] == "application/x-protobuf"
                    wr = rw.decode_request(q.body)
                    out |= {(m.metric_family_name, m.type, m.help, m.unit)
                            for m in wr.metadata}
                return out
            types, _ = rw.pb()
            assert wait_for(lambda: (family + "_total", types.MetricMetadata.COUNTER,
                                     "Requests served.", "") in v1_meta(), 10), \
                sorted(v1_meta())[:10]
            # 2.0 target: the sender's bytes, metadata on each series
            q2 = rec2.posts()
            assert q2 and all(q.headers["Content-Type"] == rw2.V2_CONTENT_TYPE
                              for q in q2)
            metas = set()
            for q in q2:
                for s in rw2.decode_v2(snappy.uncompress(q.body))["timeseries"]:
                    if dict(s["labels"]).get("__name__") == family + "_total":
                        metas.add(s["metadata"])
            assert (1, "Requests served.", "") in metas, metas
        else:
            # 1.0 sender: metadata requests pass as they are to the 1.0
            # target; to the 2.0 target the series carry no metadata (the
            # sender sends it apart from them)
            def v1_meta():
                out = set()
                for q in rec1.posts():
                    wr = rw.decode_request(q.body)
                    out |= {(m.metric_family_name, m.help) for m in wr.metadata}
                return out
            assert wait_for(lambda: (family, "Requests served.") in v1_meta(), 10), \
                sorted(v1_meta())[:10]
            assert all(q.headers["Content-Type"] == rw2.V2_CONTENT_TYPE
                       for q in rec2.posts())

        # no error on the sender's side, nothing refused by the gateway
        assert sender_errors(sender) == []
        st = requests.get(gw.status_url, timeout=10).text
        assert 'promgate_write_requests_total{code="400"}' not in st
        assert 'promgate_write_requests_total{code="415"}' not in st
        version = "2.0" if v2 else "1.0"
        assert scrape(gw.status_url).get("promgate_write_versions_total",
                                         version=version) >= 3
    finally:
        sender.stop()
        om.stop()
