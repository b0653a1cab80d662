"""What the real receivers do with questionable remote-write input.

Each case is one remote write request holding an always-valid series plus
the case's series, sent DIRECTLY (no promgate) to Prometheus 3.5 (current),
Prometheus 2.42, VictoriaMetrics 1.145 (current) and 1.79.  Recorded: the
HTTP status, whether the valid series and the case's series were stored
(and with which labels), exemplars where the case is about them.  Remote
write 2.0 rows follow, then header variants (Content-Type, version,
Content-Encoding) of a request holding one valid series.

The test asserts the Prometheus 3.5 column (what promgate is to match).
WRITE_VALIDITY_TABLE=1 writes the measured table to
t/integration/validity_table.md (VALIDITY_TABLE_OUT=path elsewhere).

Selectors: every series carries pgok="<case>" (valid) or pgcase="<case>"
(case), so one label matcher finds it on all four servers whatever its name
is; the quoted UTF-8 selector forms are measured separately.
"""

import json
import os
import re
import time

import pytest
import requests
import snappy

import rw
import rw2
import servers
from procs import Prometheus, VictoriaMetrics

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = os.path.join(HERE, "validity_table.md")

SRV_ORDER = ("prom_current", "prom_debian12", "vm_current", "vm_debian12")

# ------------------------------------------------------------------- cases

EX_OK = [("trace_id", "0af7651916cd43dd8448eb211c80319c")]


def _v1_cases():
    """[(case, description, labels, extra)]: extra may hold "exemplars"
    (for the case series; the valid series then gets EX_OK) and
    "metadata" (raw MetricMetadata payloads)"""
    C = []

    def add(case, desc, labels, **extra):
        C.append((case, desc, labels, extra))

    add("utf8_metric_name", "UTF-8 dotted metric name `http.server.duration`",
        [("__name__", "http.server.duration"), ("pgcase", "utf8_metric_name")])
    add("utf8_label_name", "UTF-8 label name `service.name`",
        [("__name__", "pgv_utf8_label_name"), ("pgcase", "utf8_label_name"),
         ("service.name", "checkout")])
    add("no_name", "no `__name__`",
        [("job", "validity"), ("pgcase", "no_name")])
    add("empty_name", "empty `__name__` value",
        [("__name__", ""), ("pgcase", "empty_name")])
    add("duplicate_label", "duplicate label name (`a=1`, `a=2`)",
        [("__name__", "pgv_duplicate_label"), ("a", "1"), ("a", "2"),
         ("pgcase", "duplicate_label")])
    add("unsorted_labels", "unsorted label names (`b` before `a`)",
        [("__name__", "pgv_unsorted_labels"), ("b", "1"), ("a", "2"),
         ("pgcase", "unsorted_labels")])
    add("alpha_before_name", "`Alpha` before `__name__` (byte-sorted, name not first)",
        [("Alpha", "1"), ("__name__", "pgv_alpha_before_name"),
         ("pgcase", "alpha_before_name")])
    add("name_last", "`__name__` last (unsorted)",
        [("a", "1"), ("pgcase", "name_last"), ("__name__", "pgv_name_last")])
    add("invalid_utf8_label_name", "invalid UTF-8 in a label name (`bad\\xff`)",
        [("__name__", "pgv_invalid_utf8_label_name"), (b"bad\xff", "1"),
         ("pgcase", "invalid_utf8_label_name")])
    add("invalid_utf8_label_value", "invalid UTF-8 in a label value (`v\\xff`)",
        [("__name__", "pgv_invalid_utf8_label_value"), ("a", b"v\xff"),
         ("pgcase", "invalid_utf8_label_value")])
    add("empty_label_value", "empty label value (`a=\"\"`)",
        [("__name__", "pgv_empty_label_value"), ("a", ""),
         ("pgcase", "empty_label_value")])
    add("empty_label_name", "empty label name (`\"\"=\"x\"`)",
        [("", "x"), ("__name__", "pgv_empty_label_name"),
         ("pgcase", "empty_label_name")])
    add("exemplar_invalid_utf8", "exemplar label value with invalid UTF-8",
        [("__name__", "pgv_exemplar_invalid_utf8"), ("pgcase", "exemplar_invalid_utf8")],
        exemplars=[("trace_id", b"\xff\xfe")])
    add("exemplar_200_runes", "exemplar labels of 200 runes (limit 128)",
        [("__name__", "pgv_exemplar_200_runes"), ("pgcase", "exemplar_200_runes")],
        exemplars=[("trace_id", "\u00e9" * 192)])     # 8 + 192 runes
    add("metadata_invalid_utf8_help", "metadata entry with invalid UTF-8 help",
        [("__name__", "pgv_metadata_invalid_utf8_help"),
         ("pgcase", "metadata_invalid_utf8_help")],
        metadata=[rw2.v1_metadata("pgv_metadata_invalid_utf8_help", 1,
                                  b"bad \xff help")])
    return C


V1_CASES = _v1_cases()


def v1_body(case, labels, extra, ts):
    ok_labels = [("__name__", "pgv_ok_" + case), ("pgok", case)]
    ex_case = []
    ex_ok = []
    if "exemplars" in extra:
        ex_case = [(extra["exemplars"], 1.0, ts)]
        ex_ok = [(EX_OK, 1.0, ts)]
    series = [rw2.v1_series(ok_labels, [(1.0, ts)], ex_ok),
              rw2.v1_series(labels, [(2.0, ts)], ex_case)]
    md = [rw2.v1_metadata("pgv_ok_" + case, 1, b"valid help")] if "metadata" in extra else []
    return rw2.v1_request(series, md + extra.get("metadata", []))


def _v2_cases():
    """[(case, description, builder(ts) -> raw v2 Request)]"""
    C = []

    def ok(bl, case, ts):
        bl.series([("__name__", "pgv2_ok_" + case), ("pgok", case)],
                  samples=[(1.0, ts)], exemplars=[(dict(EX_OK), 1.0, ts)],
                  metadata=("COUNTER", "valid help", ""))

    def valid(ts):
        bl = rw2.V2Builder()
        ok(bl, "v2_valid", ts)
        bl.series([("__name__", "pgv2_valid_gauge"), ("pgcase", "v2_valid")],
                  samples=[(2.0, ts)], metadata=("GAUGE", "a gauge", "seconds"))
        return bl.encode()
    C.append(("v2_valid", "2.0: valid series with exemplar and metadata", valid))

    def utf8(ts):
        bl = rw2.V2Builder()
        ok(bl, "v2_utf8_metric_name", ts)
        bl.series([("__name__", "http.client.duration"), ("pgcase", "v2_utf8_metric_name")],
                  samples=[(2.0, ts)])
        return bl.encode()
    C.append(("v2_utf8_metric_name", "2.0: UTF-8 dotted metric name", utf8))

    def noname(ts):
        bl = rw2.V2Builder()
        ok(bl, "v2_no_name", ts)
        bl.series([("job", "validity"), ("pgcase", "v2_no_name")], samples=[(2.0, ts)])
        return bl.encode()
    C.append(("v2_no_name", "2.0: no `__name__`", noname))

    def dup(ts):
        bl = rw2.V2Builder()
        ok(bl, "v2_duplicate_label", ts)
        bl.series([("__name__", "pgv2_duplicate_label"), ("a", "1"), ("a", "2"),
                   ("pgcase", "v2_duplicate_label")], samples=[(2.0, ts)])
        return bl.encode()
    C.append(("v2_duplicate_label", "2.0: duplicate label name", dup))

    def unsorted(ts):
        bl = rw2.V2Builder()
        ok(bl, "v2_unsorted_labels", ts)
        bl.series([("__name__", "pgv2_unsorted_labels"), ("b", "1"), ("a", "2"),
                   ("pgcase", "v2_unsorted_labels")], samples=[(2.0, ts)])
        return bl.encode()
    C.append(("v2_unsorted_labels", "2.0: unsorted label names", unsorted))

    def badutf8(ts):
        bl = rw2.V2Builder()
        ok(bl, "v2_invalid_utf8_label_value", ts)
        bl.series([("__name__", "pgv2_invalid_utf8_label_value"), ("a", b"v\xff"),
                   ("pgcase", "v2_invalid_utf8_label_value")], samples=[(2.0, ts)])
        return bl.encode()
    C.append(("v2_invalid_utf8_label_value", "2.0: invalid UTF-8 in a label value",
              badutf8))

    def emptyval(ts):
        bl = rw2.V2Builder()
        ok(bl, "v2_empty_label_value", ts)
        bl.series([("__name__", "pgv2_empty_label_value"), ("a", ""),
                   ("pgcase", "v2_empty_label_value")], samples=[(2.0, ts)])
        return bl.encode()
    C.append(("v2_empty_label_value", "2.0: empty label value (ref to symbols[0])",
              emptyval))

    def mdhelp(ts):
        bl = rw2.V2Builder()
        ok(bl, "v2_metadata_invalid_utf8_help", ts)
        bl.series([("__name__", "pgv2_metadata_invalid_utf8_help"),
                   ("pgcase", "v2_metadata_invalid_utf8_help")], samples=[(2.0, ts)],
                  metadata=("COUNTER", b"bad \xff help", ""))
        return bl.encode()
    C.append(("v2_metadata_invalid_utf8_help", "2.0: metadata help with invalid UTF-8",
              mdhelp))

    def exbad(ts):
        bl = rw2.V2Builder()
        ok(bl, "v2_exemplar_invalid_utf8", ts)
        bl.series([("__name__", "pgv2_exemplar_invalid_utf8"),
                   ("pgcase", "v2_exemplar_invalid_utf8")], samples=[(2.0, ts)],
                  exemplars=[([("trace_id", b"\xff\xfe")], 1.0, ts)])
        return bl.encode()
    C.append(("v2_exemplar_invalid_utf8", "2.0: exemplar label with invalid UTF-8", exbad))

    def oob(ts):
        bl = rw2.V2Builder()
        ok(bl, "v2_ref_out_of_range", ts)
        refs = bl.refs([("__name__", "pgv2_ref_out_of_range"),
                        ("pgcase", "v2_ref_out_of_range")]) + [bl.ref("a"), 999]
        bl.series(refs, samples=[(2.0, ts)], raw=True)
        return bl.encode()
    C.append(("v2_ref_out_of_range", "2.0: label ref 999, past the symbols", oob))

    def odd(ts):
        bl = rw2.V2Builder()
        ok(bl, "v2_odd_refs", ts)
        refs = bl.refs([("__name__", "pgv2_odd_refs"), ("pgcase", "v2_odd_refs")])
        refs.append(bl.ref("a"))
        bl.series(refs, samples=[(2.0, ts)], raw=True)
        return bl.encode()
    C.append(("v2_odd_refs", "2.0: odd number of label refs", odd))

    def sym0(ts):
        bl = rw2.V2Builder(symbols=[b"junk"])
        ok(bl, "v2_symbols0_not_empty", ts)
        return bl.encode()
    C.append(("v2_symbols0_not_empty", "2.0: symbols[0] is `junk`, not empty "
              "(only the valid series)", sym0))
    return C


V2_CASES = _v2_cases()

# headers: one request holding only the valid series, the headers varied
# (case, description, headers, dropped headers, body "v1" | "v2")
_V1CT = "application/x-protobuf"
HDR_CASES = [
    ("hdr_canonical", "1.0 as senders send it (`%s`, snappy, 0.1.0)" % _V1CT, {}, (), "v1"),
    ("hdr_proto_v1", "`application/x-protobuf;proto=prometheus.WriteRequest`",
     {"Content-Type": rw2.V1_CONTENT_TYPE}, (), "v1"),
    ("hdr_proto_v1_quoted", "`application/x-protobuf; proto=\"prometheus.WriteRequest\"`",
     {"Content-Type": 'application/x-protobuf; proto="prometheus.WriteRequest"'}, (), "v1"),
    ("hdr_ct_uppercase", "`Application/X-Protobuf`",
     {"Content-Type": "Application/X-Protobuf"}, (), "v1"),
    ("hdr_ct_unknown_param", "`application/x-protobuf;foo=bar`",
     {"Content-Type": "application/x-protobuf;foo=bar"}, (), "v1"),
    ("hdr_ct_bare_word_7k", "`application/x-protobuf;xxx...` (7000 x, no `=`)",
     {"Content-Type": "application/x-protobuf;" + "x" * 7000}, (), "v1"),
    ("hdr_ct_missing", "no Content-Type", {}, ("Content-Type",), "v1"),
    ("hdr_ct_text", "`text/plain`", {"Content-Type": "text/plain"}, (), "v1"),
    ("hdr_ct_unknown_proto", "`application/x-protobuf;proto=io.prometheus.write.v3.Request`",
     {"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v3.Request"}, (), "v1"),
    ("hdr_v2_ct_v1_body", "2.0 Content-Type and version 2.0.0, a 1.0 body",
     {"Content-Type": rw2.V2_CONTENT_TYPE, "X-Prometheus-Remote-Write-Version": "2.0.0"},
     (), "v1"),
    ("hdr_v1_ct_v2_body", "1.0 Content-Type and version 0.1.0, a 2.0 body", {}, (), "v2"),
    ("hdr_version_missing", "no X-Prometheus-Remote-Write-Version", {},
     ("X-Prometheus-Remote-Write-Version",), "v1"),
    ("hdr_version_2_v1_ct", "version 2.0.0 with the 1.0 Content-Type",
     {"X-Prometheus-Remote-Write-Version": "2.0.0"}, (), "v1"),
    ("hdr_encoding_missing", "no Content-Encoding (body snappy)", {},
     ("Content-Encoding",), "v1"),
    ("hdr_encoding_uppercase", "`Content-Encoding: SNAPPY`",
     {"Content-Encoding": "SNAPPY"}, (), "v1"),
    ("hdr_encoding_gzip", "`Content-Encoding: gzip` (body snappy)",
     {"Content-Encoding": "gzip"}, (), "v1"),
]


def hdr_request(case, ts):
    name, _, headers, drop, kind = case
    labels = [("__name__", "pgv_ok_" + name), ("pgok", name)]
    if kind == "v2":
        bl = rw2.V2Builder()
        bl.series(labels, samples=[(1.0, ts)])
        raw = bl.encode()
    else:
        raw = rw2.v1_request([rw2.v1_series(labels, [(1.0, ts)])])
    return rw.compress(raw), headers, drop

# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def four_servers(tmp_path_factory):
    cur, deb = servers.get("current"), servers.get("debian12")
    for ss in (cur, deb):
        if not ss.available:
            msg = "server set %s incomplete: %s" % (ss.name, ss.missing or "no version")
            if ss.name == "debian12" or servers.require_current():
                pytest.fail(msg + " (make servers)")
            pytest.skip(msg + " (make servers)")
    made = {}
    try:
        for key, ss in (("current", cur), ("debian12", deb)):
            made["prom_" + key] = Prometheus(
                str(tmp_path_factory.mktemp("vt-prom-" + key)),
                binary=ss.prometheus, features=ss.prom_features)
            made["vm_" + key] = VictoriaMetrics(
                str(tmp_path_factory.mktemp("vt-vm-" + key)),
                binary=ss.victoria_metrics)
        labels = {
            "prom_current": "Prometheus %s" % cur.prom_version_str,
            "prom_debian12": "Prometheus %s" % deb.prom_version_str,
            "vm_current": "VictoriaMetrics %s" % cur.vm_version_str,
            "vm_debian12": "VictoriaMetrics %s" % deb.vm_version_str,
        }
        yield made, labels
    finally:
        for s in made.values():
            s.stop()


def is_vm(srv):
    return isinstance(srv, VictoriaMetrics)


def find(srv, matcher):
    """[labels dict] of the series matching one label matcher, with samples"""
    if is_vm(srv):
        srv.flush()
        got = srv.export(matcher)
    else:
        got = srv.samples(matcher, window="1h")
    return sorted((dict(k) for k, v in got.items() if v),
                  key=lambda d: sorted(d.items()))


def exemplars(srv, matcher, t0, t1):
    """[(labels dict of the exemplar)] or None when the server has no store"""
    r = requests.get(srv.url + "/api/v1/query_exemplars",
                     params={"query": matcher, "start": "%.3f" % t0,
                             "end": "%.3f" % t1}, timeout=30)
    if r.status_code == 204:
        return []
    if r.status_code != 200:
        return "HTTP %d" % r.status_code
    out = []
    for s in r.json().get("data") or []:
        for e in s.get("exemplars") or []:
            out.append(e.get("labels"))
    return out


def metadata_listed(srv, metric):
    try:
        r = requests.get(srv.url + "/api/v1/metadata", params={"metric": metric},
                         timeout=30)
        if r.status_code != 200:
            return "HTTP %d" % r.status_code
        return r.json().get("data") or {}
    except ValueError:
        return "not JSON"


def measure(four, cases, body_of, sender):
    """send every case to every server, then read back.  Returns
    {server: {case: result}}"""
    made, _ = four
    ts = rw.now_ms() - 2000
    t0 = ts / 1000.0 - 60
    results = {k: {} for k in made}
    for key, srv in made.items():
        for case in cases:
            body = body_of(case, ts)
            logpos = log_size(srv)
            try:
                r = sender(srv.write_url, body)
                res = {"status": r.status_code,
                       "body": r.text.strip()[:160],
                       "written": rw2.written(r)}
            except requests.ConnectionError as e:
                res = {"status": "no answer (connection closed)",
                       "body": str(e)[:160], "written": {}}
            except requests.RequestException as e:
                res = {"status": "error %s" % type(e).__name__,
                       "body": str(e)[:160], "written": {}}
            time.sleep(0.05)
            res["log"] = new_log_problems(srv, logpos)
            results[key][case[0]] = res
    # read back; VictoriaMetrics makes samples searchable after ~1-2 s
    for key, srv in made.items():
        # until every 2xx case's valid series is visible, or nothing new
        # showed up for 2 s after the first 4 s (some 2xx store nothing)
        want = [c[0] for c in cases if isinstance(results[key][c[0]]["status"], int)
                and results[key][c[0]]["status"] < 300]
        start = time.monotonic()
        seen, last_change = -1, start
        while True:
            n = sum(1 for c in want if find(srv, '{pgok="%s"}' % c))
            now = time.monotonic()
            if n != seen:
                seen, last_change = n, now
            if n == len(want) or now - start > 10 or (
                    now - start > 4 and now - last_change > 2):
                break
            time.sleep(0.5)
        t1 = time.time() + 60
        for case in cases:
            res = results[key][case[0]]
            res["ok"] = find(srv, '{pgok="%s"}' % case[0])
            res["case"] = find(srv, '{pgcase="%s"}' % case[0])
            res["ex_ok"] = exemplars(srv, '{pgok="%s"}' % case[0], t0, t1)
            res["ex_case"] = exemplars(srv, '{pgcase="%s"}' % case[0], t0, t1)
    return results


def log_size(srv):
    try:
        return os.path.getsize(srv.proc.logpath)
    except OSError:
        return 0


LOG_MSG_RE = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def new_log_problems(srv, pos):
    """the warnings/errors the server logged since pos, shortened"""
    try:
        with open(srv.proc.logpath, "rb") as f:
            f.seek(pos)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        if is_vm(srv):
            cols = line.split("\t")
            if len(cols) >= 4 and cols[1] in ("warn", "error", "panic"):
                out.append(cols[1] + ": " + cols[3])
        elif "level=WARN" in line or "level=ERROR" in line or "level=warn" in line \
                or "level=error" in line:
            m = LOG_MSG_RE.search(line)
            msg = m.group(1) if m else line
            if "panic" in line and "err=" in line:
                e = re.search(r'err="([^"]*)"', line)
                msg += ": " + (e.group(1) if e else "")
            elif "err=" in line:
                e = re.search(r'err="((?:[^"\\]|\\.)*)"', line)
                if e:
                    msg += ": " + e.group(1)
            if not msg.startswith("http: panic serving"):
                out.append(msg)
    return out


def v1_sender(url, body):
    return rw.post(url, rw.compress(body))


def hdr_sender(url, req):
    body, headers, drop = req
    return rw.post(url, body, headers=headers, drop=drop)


def v2_sender(url, body):
    return rw2.post(url, body)


@pytest.fixture(scope="module")
def v1_results(four_servers):
    return measure(four_servers, V1_CASES,
                   lambda c, ts: v1_body(c[0], c[2], c[3], ts), v1_sender)


@pytest.fixture(scope="module")
def v2_results(four_servers, v1_results):
    return measure(four_servers, V2_CASES, lambda c, ts: c[2](ts), v2_sender)


@pytest.fixture(scope="module")
def hdr_results(four_servers, v2_results):
    return measure(four_servers, HDR_CASES, hdr_request, hdr_sender)


# ------------------------------------------------------------------ table

def _labels_str(d):
    name = d.get("__name__")
    rest = ", ".join('%s="%s"' % (k, v) for k, v in sorted(d.items())
                     if k not in ("__name__", "pgcase", "pgok"))
    s = (name if name is not None else "") + "{" + rest + "}"
    return s.replace("|", "\\|").replace("\ufffd", "\\ufffd")


def cell(res, with_exemplars=False, v2=False, no_case=False):
    st = res["status"]
    parts = ["**%s**" % st]
    w = res["written"]
    if v2 and isinstance(st, int):
        if any(v is not None for v in w.values()):
            parts.append("written s/h/e=%s/%s/%s" % (
                w.get("samples"), w.get("histograms"), w.get("exemplars")))
        else:
            parts.append("no Written headers")
    parts.append("valid " + ("stored" if res["ok"] else "**not stored**"))
    if no_case:
        pass
    elif res["case"]:
        parts.append("case stored as " + "; ".join(
            "`%s`" % _labels_str(d) for d in res["case"]))
    else:
        parts.append("case **not stored**")
    if with_exemplars:
        def ex(v):
            if v is None or isinstance(v, str):
                return v or "-"
            return "%d" % len(v)
        parts.append("exemplars valid/case: %s/%s" % (ex(res["ex_ok"]), ex(res["ex_case"])))
    if isinstance(st, int) and st >= 400 and res["body"]:
        parts.append("body: `%s`" % md_code(res["body"])[:100])
    if res.get("log"):
        parts.append("log: `%s`" % md_code(res["log"][0])[:110]
                     + (" (+%d)" % (len(res["log"]) - 1) if len(res["log"]) > 1 else ""))
    return "<br>".join(parts)


def md_code(s):
    return s.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def render(labels, v1, v2, hdr, selectors, info):
    L = ["# Remote-write validity table (measured)", "",
         "Generated by `WRITE_VALIDITY_TABLE=1 /usr/bin/python3 -m pytest "
         "t/integration/test_validity_table.py`; do not edit by hand.", "",
         "Each row is ONE remote write request holding an always-valid series "
         "(`pgv_ok_<case>{pgok=\"<case>\"}`) plus the case's series (label "
         "`pgcase=\"<case>\"`), sent straight to each server (no promgate). "
         "\"stored\" = the series has a sample in the server's storage "
         "(Prometheus: `/api/v1/query` of `{pgcase=\"...\"}[1h]`; "
         "VictoriaMetrics: `/api/v1/export?match[]=...`), shown with the labels "
         "it was stored under (`pgcase`/`pgok` omitted; `\\ufffd` is how the "
         "JSON answer renders a stored invalid UTF-8 byte).  Exemplar counts "
         "come from `/api/v1/query_exemplars`; `log:` is the first warning "
         "or error the server logged for that request.", "",
         "Servers: " + ", ".join("%s = %s" % (k, labels[k]) for k in SRV_ORDER)
         + ".  Prometheus runs with `--web.enable-remote-write-receiver "
         "--enable-feature=%s`." % servers.PROM_FEATURES, "",
         "## Remote write 1.0 (`Content-Type: application/x-protobuf`, "
         "`X-Prometheus-Remote-Write-Version: 0.1.0`)", "",
         "| case | " + " | ".join(labels[k] for k in SRV_ORDER) + " |",
         "|---|" + "---|" * len(SRV_ORDER)]
    for case, desc, _, extra in V1_CASES:
        wx = "exemplars" in extra
        L.append("| %s | %s |" % (desc, " | ".join(
            cell(v1[k][case], with_exemplars=wx) for k in SRV_ORDER)))
    L += ["", "Metadata: " + info.get("metadata", ""), "",
          "## Remote write 2.0 (`Content-Type: %s`, "
          "`X-Prometheus-Remote-Write-Version: 2.0.0`)" % rw2.V2_CONTENT_TYPE, "",
          "Every valid 2.0 series carries one sample, one exemplar and COUNTER "
          "metadata.  `written s/h/e` = the X-Prometheus-Remote-Write-"
          "Samples/Histograms/Exemplars-Written answer headers.", "",
          "| case | " + " | ".join(labels[k] for k in SRV_ORDER) + " |",
          "|---|" + "---|" * len(SRV_ORDER)]
    for case, desc, _ in V2_CASES:
        L.append("| %s | %s |" % (desc, " | ".join(
            cell(v2[k][case], with_exemplars=True, v2=True) for k in SRV_ORDER)))
    L += ["", "## Headers (one valid series per request)", "",
          "Unless the row says otherwise: `Content-Type: application/x-protobuf`, "
          "`Content-Encoding: snappy`, `X-Prometheus-Remote-Write-Version: 0.1.0`, "
          "a 1.0 body.", "",
          "| case | " + " | ".join(labels[k] for k in SRV_ORDER) + " |",
          "|---|" + "---|" * len(SRV_ORDER)]
    for case, desc, _, _, _ in HDR_CASES:
        L.append("| %s | %s |" % (desc, " | ".join(
            cell(hdr[k][case], no_case=True) for k in SRV_ORDER)))
    L += ["", "## Selecting a UTF-8 metric name (`http.server.duration`)", "",
          "| selector | " + " | ".join(labels[k] for k in SRV_ORDER) + " |",
          "|---|" + "---|" * len(SRV_ORDER)]
    for sel in selectors["order"]:
        L.append("| `%s` | %s |" % (sel.replace("|", "\\|"), " | ".join(
            selectors[k].get(sel, "-") for k in SRV_ORDER)))
    L.append("")
    return "\n".join(L)


def probe_selectors(four):
    """which selector syntaxes find the dotted metric name, per server
    (query API and, for VictoriaMetrics, export)"""
    made, _ = four
    sels = ['{__name__="http.server.duration"}', '{"http.server.duration"}',
            '{"http.server.duration", pgcase="utf8_metric_name"}',
            'http.server.duration']
    out = {"order": sels}
    for key, srv in made.items():
        out[key] = {}
        for sel in sels:
            params = {"query": "last_over_time(%s[1h])" % sel}
            if is_vm(srv):
                params["nocache"] = "1"
            try:
                r = requests.get(srv.url + "/api/v1/query", params=params, timeout=30)
                if r.status_code == 200:
                    n = len(r.json()["data"]["result"])
                    out[key][sel] = "query: %d series" % n
                else:
                    out[key][sel] = "query: HTTP %d" % r.status_code
            except (requests.RequestException, ValueError) as e:
                out[key][sel] = "query: %s" % type(e).__name__
            path = "/api/v1/export" if is_vm(srv) else "/api/v1/series"
            try:
                r = requests.get(srv.url + path,
                                 params={"match[]": sel,
                                         "start": "%.3f" % (time.time() - 3600)},
                                 timeout=30)
                if r.status_code == 200:
                    if is_vm(srv):
                        n = len([l for l in r.text.splitlines() if l.strip()])
                    else:
                        n = len(r.json()["data"])
                    out[key][sel] += "; %s: %d" % (path.rsplit("/", 1)[1], n)
                else:
                    out[key][sel] += "; %s: HTTP %d" % (path.rsplit("/", 1)[1],
                                                        r.status_code)
            except (requests.RequestException, ValueError) as e:
                out[key][sel] += "; %s: %s" % (path, type(e).__name__)
    return out


@pytest.fixture(scope="module")
def table(four_servers, v1_results, v2_results, hdr_results):
    made, labels = four_servers
    selectors = probe_selectors(four_servers)
    md = {k: metadata_listed(made[k], "pgv_metadata_invalid_utf8_help")
          for k in SRV_ORDER}
    mdok = {k: metadata_listed(made[k], "pgv_ok_metadata_invalid_utf8_help")
            for k in SRV_ORDER}
    info = {"metadata": "`/api/v1/metadata?metric=` after the metadata case, "
            "valid entry / invalid-help entry: " + "; ".join(
                "%s: `%s` / `%s`" % (labels[k], md_code(json.dumps(mdok[k])),
                                     md_code(json.dumps(md[k]))) for k in SRV_ORDER)
            + ".  (A Prometheus receiver lists scraped metadata only.)"}
    text = render(labels, v1_results, v2_results, hdr_results, selectors, info)
    if os.environ.get("WRITE_VALIDITY_TABLE") == "1":
        out = os.environ.get("VALIDITY_TABLE_OUT") or TABLE
        with open(out, "w") as f:
            f.write(text)
    return text


# -------------------------------------------------- Prometheus 3.5 facts

# case -> (status, valid series stored, case series stored), measured on
# Prometheus 3.5.3: invalid series are dropped, the rest of the request is
# stored, the answer stays 204 (1.0).  Remote write 2.0 answers 400 for a
# request with an invalid series but still stores (and counts in the Written
# headers) the valid ones; label refs past the symbol table or an odd ref
# count make 3.5's handler panic (no answer, the process lives on).
PROM3_V1 = {
    "utf8_metric_name": (204, True, True),
    "utf8_label_name": (204, True, True),
    "no_name": (204, True, False),
    "empty_name": (204, True, False),
    "duplicate_label": (204, True, False),
    "unsorted_labels": (204, True, True),
    "alpha_before_name": (204, True, True),
    "name_last": (204, True, True),
    "invalid_utf8_label_name": (204, True, False),
    "invalid_utf8_label_value": (204, True, False),
    "empty_label_value": (204, True, True),
    "empty_label_name": (204, True, False),
    "exemplar_invalid_utf8": (204, True, True),
    "exemplar_200_runes": (204, True, True),
    "metadata_invalid_utf8_help": (204, True, True),
}

# stored label sets (pgcase omitted) where the receiver rewrites them
PROM3_V1_LABELS = {
    "utf8_metric_name": {"__name__": "http.server.duration"},
    "utf8_label_name": {"__name__": "pgv_utf8_label_name", "service.name": "checkout"},
    "unsorted_labels": {"__name__": "pgv_unsorted_labels", "a": "2", "b": "1"},
    "name_last": {"__name__": "pgv_name_last", "a": "1"},
    "empty_label_value": {"__name__": "pgv_empty_label_value"},
}

# case -> (exemplars of the valid series, of the case series)
PROM3_V1_EXEMPLARS = {
    "exemplar_invalid_utf8": (1, 1),     # exemplar labels are not UTF-8 checked
    "exemplar_200_runes": (1, 0),        # > 128 runes: exemplar dropped, 204
}

NO_ANSWER = "no answer (connection closed)"

# case -> (status, valid stored, case stored, (samples, histograms, exemplars)
#          Written headers or None)
PROM3_V2 = {
    "v2_valid": (204, True, True, (2, 0, 1)),
    "v2_utf8_metric_name": (204, True, True, (2, 0, 1)),
    "v2_no_name": (400, True, False, (1, 0, 1)),
    "v2_duplicate_label": (400, True, False, (1, 0, 1)),
    "v2_unsorted_labels": (204, True, True, (2, 0, 1)),
    "v2_invalid_utf8_label_value": (400, True, False, (1, 0, 1)),
    "v2_empty_label_value": (204, True, True, (2, 0, 1)),
    "v2_metadata_invalid_utf8_help": (204, True, True, (2, 0, 1)),
    "v2_exemplar_invalid_utf8": (204, True, True, (2, 0, 2)),
    "v2_ref_out_of_range": (NO_ANSWER, False, False, None),
    "v2_odd_refs": (NO_ANSWER, False, False, None),
    "v2_symbols0_not_empty": (204, True, False, (1, 0, 1)),
}


def _strip(d):
    return {k: v for k, v in d.items() if k not in ("pgcase", "pgok")}


def test_validity_table_v1_prometheus3(table, v1_results):
    got = v1_results["prom_current"]
    summary = {c: (r["status"], bool(r["ok"]), bool(r["case"])) for c, r in got.items()}
    assert set(summary) == set(PROM3_V1)
    bad = {c: (summary[c], want) for c, want in PROM3_V1.items() if summary[c] != want}
    assert not bad, "Prometheus 3.5 (got, want): %s\n\n%s" % (bad, table)
    for case, labels in PROM3_V1_LABELS.items():
        assert [_strip(d) for d in got[case]["case"]] == [labels], (case, got[case])
    for case, (n_ok, n_case) in PROM3_V1_EXEMPLARS.items():
        assert (len(got[case]["ex_ok"]), len(got[case]["ex_case"])) == (n_ok, n_case), \
            (case, got[case])


def test_validity_table_v2_prometheus3(table, v2_results, four_servers):
    got = v2_results["prom_current"]
    assert set(got) == set(PROM3_V2)
    bad = {}
    for case, (st, ok, cs, written) in PROM3_V2.items():
        r = got[case]
        w = r["written"]
        have = (r["status"], bool(r["ok"]), bool(r["case"]),
                (w["samples"], w["histograms"], w["exemplars"])
                if w.get("samples") is not None else None)
        if have != (st, ok, cs, written):
            bad[case] = (have, (st, ok, cs, written))
    assert not bad, "Prometheus 3.5 (got, want): %s\n\n%s" % (bad, table)
    # the process survived the handler panics
    prom = four_servers[0]["prom_current"]
    assert prom.proc.alive()
    assert requests.get(prom.url + "/-/ready", timeout=10).status_code == 200


# case -> (status, valid series stored), Prometheus 3.5.3.  3.5 parses
# Content-Type strictly (media type case-sensitive, parameters must be
# key=value, proto= must be known) where 2.42 and VictoriaMetrics ignore it;
# a gzip Content-Encoding is answered 415 yet the request is stored.
PROM3_HDR = {
    "hdr_canonical": (204, True),
    "hdr_proto_v1": (204, True),
    "hdr_proto_v1_quoted": (204, True),
    "hdr_ct_uppercase": (415, False),
    "hdr_ct_unknown_param": (204, True),
    "hdr_ct_bare_word_7k": (415, False),
    "hdr_ct_missing": (204, True),
    "hdr_ct_text": (415, False),
    "hdr_ct_unknown_proto": (415, False),
    "hdr_v2_ct_v1_body": (204, False),
    "hdr_v1_ct_v2_body": (204, False),
    "hdr_version_missing": (204, True),
    "hdr_version_2_v1_ct": (204, True),
    "hdr_encoding_missing": (204, True),
    "hdr_encoding_uppercase": (204, True),
    "hdr_encoding_gzip": (415, True),
}


def test_validity_table_headers_prometheus3(table, hdr_results):
    got = hdr_results["prom_current"]
    summary = {c: (r["status"], bool(r["ok"])) for c, r in got.items()}
    assert set(summary) == set(PROM3_HDR)
    bad = {c: (summary[c], want) for c, want in PROM3_HDR.items() if summary[c] != want}
    assert not bad, "Prometheus 3.5 (got, want): %s\n\n%s" % (bad, table)


# ---------------------------------------------------- promgate, same cases
#
# The same requests through promgate (promgate_invalid_series drop, one
# recording target speaking the sender's protocol): a case series is
# forwarded exactly where Prometheus 3.5 stores it, the valid neighbour
# always.  Deviations, documented in docs/compatibility.md: a 2.0 request whose
# symbols[0] is not "" is refused (400) — the 2.0 spec requires "" and 3.5
# does not check; label refs past the symbols (3.5's handler panics) drop
# that series only.

def _v1_forwarded(raw):
    """label dicts (bytes) of a 1.0 body's series, and its metadata helps"""
    out, helps = [], []
    for f, _, v in rw2.parse_fields(raw):
        if f == 1:
            labels = {}
            for g, _, lv in rw2.parse_fields(v):
                if g == 1:
                    d = {h: x for h, _, x in rw2.parse_fields(lv)}
                    labels[d.get(1, b"")] = d.get(2, b"")
            out.append(labels)
        elif f == 3:
            d = {h: x for h, _, x in rw2.parse_fields(v)}
            helps.append(d.get(4, b""))
    return out, helps


def _marked(series, case):
    ok = any(l.get(b"pgok") == case.encode() for l in series)
    cs = any(l.get(b"pgcase") == case.encode() for l in series)
    return ok, cs


@pytest.fixture
def rec_gateway(gateway, make_fake):
    rec = make_fake()
    gw = gateway([("rec", rec.url, "proto=asis")])
    gw.rec = rec
    return gw


def test_promgate_v1_forwards_what_prometheus3_stores(rec_gateway):
    gw, rec = rec_gateway, rec_gateway.rec
    got = {}
    for case, _desc, labels, extra in V1_CASES:
        n = len(rec.posts())
        r = rw.post(gw.write_url, rw.compress(v1_body(case, labels, extra,
                                                      rw.now_ms())))
        posts = rec.posts()[n:]
        series, helps = _v1_forwarded(snappy.uncompress(posts[0].body)) \
            if posts else ([], [])
        ok, cs = _marked(series, case)
        got[case] = (r.status_code, ok, cs)
        if case == "metadata_invalid_utf8_help":
            assert helps == [b"valid help"], helps
    want = {c: (204, True, stored) for c, (_, _, stored) in PROM3_V1.items()}
    assert got == want


def test_promgate_v2_forwards_what_prometheus3_stores(rec_gateway):
    gw, rec = rec_gateway, rec_gateway.rec
    got, written = {}, {}
    for case, _desc, build in V2_CASES:
        n = len(rec.posts())
        r = rw2.post(gw.write_url, build(rw.now_ms()))
        posts = rec.posts()[n:]
        series = []
        if posts:
            for ts in rw2.decode_v2(snappy.uncompress(posts[0].body))["timeseries"]:
                series.append({k.encode("utf-8", "surrogateescape"):
                               v.encode("utf-8", "surrogateescape")
                               for k, v in ts["labels"]})
        ok, cs = _marked(series, case)
        got[case] = (r.status_code, ok, cs)
        written[case] = rw2.written(r)["samples"]
    want = {}
    for c, (_st, _ok, stored, _w) in PROM3_V2.items():
        want[c] = (204, True, stored)
    want["v2_symbols0_not_empty"] = (400, False, False)
    assert got == want
    # the sender is told what was forwarded: one sample per series
    for c, (st, ok, cs) in got.items():
        if st == 204:
            assert written[c] == ok + cs, (c, written[c])
