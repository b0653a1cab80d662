#!/usr/bin/python3
"""
Turns the JSON lines bench/run.sh collected into the results table: printed
on stdout and written as Markdown (bench/results/latest.md).

    report.py JSONL [--out MD] [...]         the gateway and decode tables
    report.py JSONL --section exemplar       the exemplar-query section (the
                                             last exemplar_query line), for
                                             run.sh to append to latest.md
    report.py JSONL --plot PNG [--link-md MD]
                                             the plot (gnuplot): samples per
                                             CPU-second per gateway and
                                             shape, added latency at 50%
                                             load; --link-md puts a link to
                                             it into MD
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

NOTES = [
    "vmagent answers a remote-write request as soon as it has parsed and "
    "queued it (queue semantics) and forwards later in its own blocks; "
    "promgate answers only after the targets accepted (ack semantics). "
    "So vmagent's latency is parse + queue time, promgate's includes both "
    "forwards.",
    "vmagent's CPU is read after its queue drained (rows sent to each URL == "
    "rows accepted, nothing pending), so the forwarding work is in its "
    "CPU-seconds; its max-rate samples/s counts accepted samples, the "
    "'sustained' figure divides by window + drain time.",
    "vmagent 1.79 drops exemplars when forwarding (so on the exemplar shape "
    "it forwards less than promgate does).",
    "vmagent = the current vmagent (Debian sid's victoria-metrics package, "
    "unpacked by t/servers.sh into build/servers), vmagent 1.79 = Debian "
    "12's. Both GOMAXPROCS=1, the same flags; the current one also with "
    "-remoteWrite.forcePromProto: it otherwise starts in the VictoriaMetrics "
    "protocol (zstd) and keeps it with a sink that answers 204 to anything, "
    "while the sinks stand for Prometheus-protocol storages. 'forwarded' "
    "shows what the sinks received (protocol, encoding).",
    "Remote write 2.0 rows: the same nginx as the promgate row, one more "
    "location per target protocol (promgate_forward ... proto=asis / "
    "proto=v2); the four rows (a 1.0 reference, 2.0 as is, 2.0->1.0, "
    "1.0->2.0) run interleaved, round after round, so that drift of a "
    "shared machine is spread over all of them; the reference of each "
    "comparison is the interleaved 1.0 row, not the promgate row of the "
    "main table (a separate, longer window). The 2.0 bodies carry the same "
    "series, labels, samples and exemplars as the 1.0 bodies, encoded as "
    "Prometheus 3 encodes them (bench/gen_bodies.py). Exemplar capture is "
    "on in every promgate row.",
    "CPU-s/M = CPU-seconds (utime+stime of the gateway: nginx master + "
    "workers, all vmagent threads) per million samples accepted with 2xx; "
    "samples/CPU-s is its inverse.",
    "PSS = peak of sum(Pss) over master + workers (/proc/PID/smaps_rollup), "
    "sampled every 0.25 s during the max-rate window.",
    "Added latency = the gateway's percentile minus the baseline's "
    "(sender straight to a null sink) at the same offered rate, 50% of "
    "that gateway's own max rate; open loop, latency from the scheduled "
    "send time (coordinated-omission-correct).",
    "CPU1 other = busy time of the gateway's CPU (CPU 1 when pinned) not "
    "charged to the gateway during the window, as a share of the window: "
    "other tasks on a shared machine, hypervisor steal, softirq. More than "
    "a few % means the row is disturbed; rerun. A window above "
    "BENCH_RETRY_OTHER (10%) is measured again (BENCH_RETRIES, 2) and the "
    "least disturbed attempt kept: '(best of N)' says how many windows "
    "that row took (for rows of several rounds: the extra windows over "
    "all rounds, plus one).",
    "mirror = plain nginx (no module): proxy_pass to sink A + mirror to "
    "sink B, the floor for 'nginx receives the body and sends it twice'.",
]


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except Exception:
        return ""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return "%.1f GiB" % (int(line.split()[1]) / 1048576)
    except OSError:
        pass
    return "?"


def fmt(v, nd=0):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if nd == 0:
        return "{:,.0f}".format(v)
    return "{:,.{}f}".format(v, nd)


def added(g, b):
    """gateway minus baseline; a negative difference means the baseline
    window was disturbed more than the gateway's: not a figure"""
    if g - b < 0:
        return "n/a (baseline %s > gateway)" % fmt(b)
    return fmt(g - b)


def pct(v, attempts=1):
    if v is None:
        return "–"
    return "%.0f%%%s%s" % (100 * v, " ⚠" if v > 0.10 else "",
                           " (best of %d)" % attempts if attempts > 1 else "")


def attempts(r):
    """windows measured for this record (disturbed ones are repeated)"""
    if "attempts_other_cpu" in r:
        return len(r["attempts_other_cpu"])
    return r.get("attempts", 1)


def bad(ld):
    """non-2xx answers by status, and transport errors: '0' when clean"""
    parts = ["%s×%d" % (k, v) for k, v in sorted(ld["responses"].items())
             if not k.startswith("2")]
    if ld["errors"]:
        parts.append("err×%d" % ld["errors"])
    return " ".join(parts) or "0"


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if i else "---" for i in range(len(headers)))
           + "|"]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return out


# ------------------------------------------------ rows, labels, aggregation

# the remote write 2.0 rows (bench/run.sh measure_rw2), reference first
RW2_ROWS = ["ref", "v2asis", "v2v1", "v1v2"]
RW2_NAME = {
    "ref": "1.0 in, as is (reference)",
    "v2asis": "2.0 in, forwarded as is",
    "v2v1": "2.0 in, translated to 1.0",
    "v1v2": "1.0 in, translated to 2.0",
}
RW2_HOW = {
    "ref": "1.0 → targets default (v1)",
    "v2asis": "2.0 → targets proto=asis",
    "v2v1": "2.0 → targets default (v1)",
    "v1v2": "1.0 → targets proto=v2",
}
# what the sinks must receive from each promgate row
EXPECT_OUT = {"promgate": "1.0", "ref": "1.0", "v2asis": "2.0",
              "v2v1": "1.0", "v1v2": "2.0"}
# the goals of the issue, on the main shape: Δ µs/sample over the 1.0 path
RW2_GOAL = {"v2asis": 0.0, "v2v1": 0.3, "v1v2": 0.3}


def vm_version(info):
    m = re.search(r"victoria-metrics (\d+\.\d+(?:\.\d+)?)", info or "")
    return m.group(1) if m else None


def gw_label(gw, vminfo, short=False):
    """row names: 'vmagent' is the current vmagent, 'vmagent179' Debian
    12's; short=True gives the names of the ratio lines ('vmagent' for the
    current one, as the line has always read, 'vmagent 1.79')"""
    if gw.startswith("promgate:"):
        return "promgate " + RW2_NAME[gw.split(":", 1)[1]]
    if gw in ("vmagent", "vmagent179"):
        v = vm_version(vminfo.get(gw)) or ("1.79" if gw == "vmagent179"
                                            else "?")
        if short:
            return ("vmagent" if gw == "vmagent"
                    else "vmagent " + ".".join(v.split(".")[:2]))
        return "vmagent " + v
    return gw


def instr_per_sample(r):
    """instructions per sample of a decode record's callgrind counts
    (bench/run.sh callgrind_decode): snappy, scan (snappy + the validating
    scan), scan_only (scan − snappy), v1, v2; {} when not counted"""
    modes = (r.get("callgrind") or {}).get("modes") or {}
    out = {}
    for m, c in modes.items():
        if c.get("samples"):
            out[m] = c["instructions"] / c["samples"]
    sn, sc = modes.get("snappy"), modes.get("scan")
    if sn and sc and sn.get("samples") and sn["samples"] == sc["samples"]:
        out["scan_only"] = (sc["instructions"] - sn["instructions"]) \
            / sc["samples"]
    return out


def spc(r):
    """samples per CPU-second of a max-rate record (or None)"""
    if not r or not r.get("cpu_s") or not r["load"].get("samples"):
        return None
    return r["load"]["samples"] / r["cpu_s"]


def per_m(r):
    """CPU-seconds per million samples = µs of CPU per sample"""
    v = spc(r)
    return 1e6 / v if v else None


def merge_received(dicts):
    out = {}
    for d in dicts:
        for k, v in (d or {}).items():
            o = out.setdefault(k, {"n": 0, "bytes": 0})
            o["n"] += v["n"]
            o["bytes"] += v["n"] * v["avg_bytes"]
    return {k: {"n": v["n"], "avg_bytes": v["bytes"] / v["n"]}
            for k, v in out.items() if v["n"]}


def aggregate(rs):
    """several windows of one row (rounds) as one max-rate record: sums of
    samples, CPU and requests; medians of the latencies; the worst CPU1
    other"""
    loads = [r["load"] for r in rs]
    ld = dict(loads[0])
    dur = sum(x["duration_s"] for x in loads) or 1e-9
    ld["duration_s"] = dur
    for k in ("samples", "ok", "errors", "completed", "requests"):
        ld[k] = sum(x.get(k, 0) for x in loads)
    ld["req_per_s"] = ld["completed"] / dur
    ld["samples_per_s"] = ld["samples"] / dur
    resp = {}
    for x in loads:
        for k, v in x["responses"].items():
            resp[k] = resp.get(k, 0) + v
    ld["responses"] = resp
    ld["latency_us"] = {k: statistics.median(x["latency_us"][k] for x in loads)
                        for k in loads[0]["latency_us"]}
    cpus = [r.get("cpu_s") for r in rs]
    out = dict(rs[0])
    out["load"] = ld
    out["cpu_s"] = None if any(c is None for c in cpus) else sum(cpus)
    out["crashes"] = sum(r.get("crashes", 0) for r in rs)
    out["pss_kb"] = max(r.get("pss_kb") or 0 for r in rs)
    for k in ("sink_a_requests", "sink_b_requests"):
        out[k] = sum(r.get(k, 0) for r in rs)
    for k in ("sink_a_received", "sink_b_received"):
        out[k] = merge_received(r.get(k) for r in rs)
    oc = [r.get("other_cpu") for r in rs if r.get("other_cpu") is not None]
    out["other_cpu"] = max(oc) if oc else None
    out["rounds"] = len(rs)
    out["attempts_other_cpu"] = [x for r in rs
                                 for x in r.get("attempts_other_cpu", [0])]
    return out


def received(r):
    """'1.0 snappy, 123.4 KB' per kind the sinks got (both sinks merged)"""
    m = merge_received([r.get("sink_a_received"), r.get("sink_b_received")])
    return ", ".join("%s %s ×%d, %.1f KB" % (k.split()[0], k.split()[1],
                                             v["n"], v["avg_bytes"] / 1000)
                     for k, v in sorted(m.items()))


def proto_problem(r, want):
    """None when both sinks got only WANT ('1.0'/'2.0') over snappy; else
    what they got.  Records without the sink log (older runs): None."""
    if "sink_a_received" not in r:
        return None
    for side in ("sink_a_received", "sink_b_received"):
        got = r.get(side) or {}
        if not got:
            return "sinks logged nothing"
        if set(got) != {want + " snappy"}:
            return "sinks got " + received(r) + ", want " + want + " snappy"
    return None


def max_row(s, gw, r, vminfo):
    ld = r["load"]
    samples = ld.get("samples", 0)
    cpu = r.get("cpu_s")
    pm = cpu / (samples / 1e6) if cpu and samples > 0 else None
    per_cpu = samples / cpu if cpu else None
    sustained = None
    vm = gw.startswith("vmagent")
    if vm:
        d = ld["duration_s"] + float(r.get("drain_s") or 0)
        sustained = samples / d if d > 0 else None
    check = "–"
    if r.get("crashes"):
        check = "CRASHED (%s so far)" % r["crashes"]
    elif ld["ok"] == 0:
        check = "NO 2xx"
    elif gw.startswith("promgate") or gw == "mirror":
        ok = ld["ok"]
        a_, b_ = r.get("sink_a_requests"), r.get("sink_b_requests")
        check = ("ok (%d+%d)" % (a_, b_) if a_ == ok and b_ == ok
                 else "MISMATCH a=%s b=%s of %d" % (a_, b_, ok))
        if gw.startswith("promgate"):
            want = EXPECT_OUT[gw.split(":", 1)[-1]]
            bad_ = proto_problem(r, want)
            if bad_:
                check = "MISMATCH: " + bad_
            elif "sink_a_received" in r:
                check += ", %s" % received(r)
    elif vm:
        rin, rsent = r.get("vm_rows_in"), r.get("vm_rows_sent")
        if rin == samples and rsent == 2 * rin:
            check = "ok (%s rows x2)" % fmt(rin)
        else:
            check = "MISMATCH in=%s sent=%s (want 2x%s)" % (
                rin, rsent, samples)
        if "sink_a_received" in r:
            bad_ = proto_problem(r, "1.0")
            check += (" — " + bad_) if bad_ else ", %s" % received(r)
    label = gw_label(gw, vminfo)
    if r.get("rounds"):
        label += " (%d× %.0fs)" % (r["rounds"], ld["duration_s"] / r["rounds"])
    return [s, label, fmt(ld["req_per_s"], 1),
            fmt(ld["samples_per_s"]),
            fmt(sustained) if vm else "",
            fmt(cpu, 2) if cpu is not None else "–",
            fmt(pm, 3) if pm is not None else "–",
            fmt(per_cpu) if per_cpu is not None else "–",
            fmt(r["pss_kb"] / 1024, 1) if r.get("pss_kb") else "–",
            fmt(ld["latency_us"]["p50"]),
            fmt(ld["latency_us"]["p99"]),
            str(bad(ld)), check,
            pct(r.get("other_cpu"), attempts(r) - (r.get("rounds", 1) - 1))]


def signed(v, nd=3):
    return ("+" if v >= 0 else "−") + ("%.*f" % (nd, abs(v)))


# the routing rows (bench/run.sh measure_route, measure_route_vmagent)
ROUTE_ROWS = ["ref", "drop10", "shard3"]
ROUTE_NAME = {
    "ref": "no rule (two targets, every series to both)",
    "drop10": "drop 10% on one of two targets",
    "shard3": "3-way shard (replicas=1)",
}
ROUTE_HOW = {
    ("promgate", "ref"): "2 × promgate_forward",
    ("promgate", "drop10"): "second target "
                            "'drop={__name__=~\"go_.*\\|process_.*\"}'",
    ("promgate", "shard3"): "promgate_shard nodes3; 3 × forward shard=nodes3",
    ("vmagent", "ref"): "2 × -remoteWrite.url (the main table's row)",
    ("vmagent", "drop10"): "-remoteWrite.urlRelabelConfig=,drop.yml "
                           "(action: drop, the same regex)",
    ("vmagent", "shard3"): "3 × -remoteWrite.url -remoteWrite.shardByURL",
}


def route_section(route, maxrec):
    """promgate's routing rows (interleaved rounds) and vmagent's (one
    window each, its reference the main table's main-shape row)"""
    L = ["## Per-target routing (drop=, shard=) vs vmagent", ""]
    if not route:
        L += ["Not measured (see Skipped).", ""]
        return L
    L.append("Main shape, max rate. promgate's three rows run interleaved "
             "on one nginx (the no-rule row is the same location as the "
             "main table's); vmagent's drop and shard rows are one window "
             "each of a vmagent started with those flags, against its main "
             "table row. µs/sample = CPU-seconds per million samples "
             "(the gateway's processes); ratio = samples per CPU-second "
             "against the same gateway's no-rule row.")
    L.append("")
    rows = []
    for gw in ("promgate", "vmagent"):
        by = route.get(gw, {})
        ref = aggregate(by["ref"]) if by.get("ref") else \
            maxrec.get((gw, "main"))
        for row in ROUTE_ROWS:
            if row == "ref":
                g = ref
            elif by.get(row):
                g = aggregate(by[row])
            else:
                continue
            if not g:
                continue
            pm = per_m(g)
            rows.append([
                gw, ROUTE_NAME[row], ROUTE_HOW[(gw, row)],
                "%d × %.0fs" % (g.get("rounds", 1),
                                g["load"]["duration_s"] / g.get("rounds", 1)),
                fmt(g["load"]["samples_per_s"]),
                fmt(pm, 3) if pm is not None else "–",
                "%.2f" % (spc(g) / spc(ref)) if spc(g) and spc(ref) else "–",
                bad(g["load"]),
                pct(g.get("other_cpu"), attempts(g))])
    L += table(["gateway", "row", "how", "windows", "samples/s",
                "µs/sample", "ratio", "non-2xx / errors", "CPU1 other"],
               rows)
    L.append("")
    return L


def rw2_section(rw2, shapes):
    L = ["## Remote write 2.0 through promgate (2.0 as is, translations) "
         "vs the 1.0 path", ""]
    if not rw2:
        L += ["Not measured (see Skipped).", ""]
        return L
    L.append("Same nginx, same exemplar zone (capture on), same sinks; the "
             "rows of a shape run interleaved (round 1: 1.0, 2.0 as is, "
             "2.0→1.0, 1.0→2.0; round 2 starts one row later, and so on). "
             "CPU-s/M samples = µs of gateway CPU per sample; Δ = a row's "
             "µs/sample minus the 1.0 reference's, over all rounds; 'per "
             "round' = the same difference within each round (its spread is "
             "the noise of the comparison). 'forwarded' = what the two sinks "
             "received: protocol, encoding, requests, mean body size.")
    L.append("")
    rows = []
    verdicts = []
    for s in shapes:
        by = rw2.get(s)
        if not by or "ref" not in by:
            continue
        ref = aggregate(by["ref"])
        ref_rounds = {r["round"]: per_m(r) for r in by["ref"]}
        for row in RW2_ROWS:
            rs = by.get(row)
            if not rs:
                continue
            g = aggregate(rs)
            pm, rpm = per_m(g), per_m(ref)
            delta = pm - rpm if pm is not None and rpm is not None else None
            paired = [per_m(r) - ref_rounds[r["round"]] for r in rs
                      if per_m(r) is not None
                      and ref_rounds.get(r["round"]) is not None]
            problem = None
            if g.get("crashes"):
                problem = "CRASHED"
            elif g["load"]["ok"] == 0:
                problem = "NO 2xx"
            elif (g.get("sink_a_requests") != g["load"]["ok"]
                  or g.get("sink_b_requests") != g["load"]["ok"]):
                problem = "MISMATCH a=%s b=%s of %d" % (
                    g.get("sink_a_requests"), g.get("sink_b_requests"),
                    g["load"]["ok"])
            else:
                problem = proto_problem(g, EXPECT_OUT[row])
            errs = bad(g["load"])
            if errs != "0" and not problem:
                problem = "non-2xx / errors: " + errs
            rows.append([
                s, RW2_NAME[row], RW2_HOW[row],
                "%d × %.0fs" % (g["rounds"], g["load"]["duration_s"]
                                / g["rounds"]),
                fmt(g["load"]["samples"]),
                fmt(g["cpu_s"], 2) if g["cpu_s"] is not None else "–",
                fmt(pm, 3) if pm is not None else "–",
                fmt(spc(g)) if spc(g) else "–",
                "%.2f" % (spc(g) / spc(ref)) if spc(g) and spc(ref) else "–",
                "–" if row == "ref" or delta is None else
                "**%s**" % signed(delta),
                "–" if row == "ref" or len(paired) < 2 else
                "%s … %s" % (signed(min(paired)), signed(max(paired))),
                problem or received(g) or "ok",
                pct(g.get("other_cpu"), attempts(g) - (g["rounds"] - 1))])
            if s == "main" and row in RW2_GOAL:
                goal = RW2_GOAL[row]
                if problem or delta is None:
                    v = "**NOT MEASURED** (%s)" % (problem or "no CPU figure")
                else:
                    v = "**%s**" % ("PASS" if delta <= goal + 1e-12
                                    else "FAIL")
                    if paired and len(paired) > 1 and \
                            min(paired) <= goal < max(paired):
                        v += (" — the rounds straddle the goal (%s … %s): "
                              "within the noise of this run"
                              % (signed(min(paired)), signed(max(paired))))
                verdicts.append(
                    "- main, %s: %s µs/sample vs %s for the 1.0 path "
                    "(Δ %s µs/sample, ratio %.2f in samples per CPU-second;"
                    " goal: Δ ≤ %s): %s"
                    % (RW2_NAME[row], fmt(pm, 3), fmt(rpm, 3),
                       signed(delta) if delta is not None else "?",
                       spc(g) / spc(ref) if spc(g) and spc(ref) else 0,
                       "0 (costs no more per sample)" if goal == 0
                       else "+%.1f" % goal, v))
    L += table(["shape", "row", "in → targets", "rounds × window",
                "samples", "CPU s", "CPU-s/M samples", "samples/CPU-s",
                "ratio to 1.0 (samples/CPU-s)", "Δ µs/sample vs 1.0",
                "Δ per round (min … max)", "forwarded (what the sinks got)",
                "CPU1 other (worst round)"], rows)
    L.append("")
    if verdicts:
        L.append("Goals (main shape): 2.0 forwarded as is costs no more per "
                 "sample than 1.0; a translation adds at most 0.3 µs per "
                 "sample.")
        L.append("")
        L += verdicts
        L.append("")
    return L



# ------------------------------------------------------- exemplar queries

def major_minor(v):
    """'3.5' from '3.5.3+ds1'; None stays None"""
    m = re.match(r"(\d+)\.(\d+)", v or "")
    return "%s.%s" % m.groups() if m else v


def exemplar_section(j):
    """the exemplar-query section (bench/exemplar_bench.py's line); lines
    from before the current Prometheus was added have no prometheus_current
    keys: those columns show –"""
    old = major_minor(j.get("prometheus_version")) or "2.42"
    cur = major_minor(j.get("prometheus_current_version"))
    curname = "Prometheus %s" % (cur or "current")
    vs = old
    if cur or j.get("prometheus_current_skipped"):
        vs += " and %s" % (cur or "current")
    L = ["", "## Exemplar queries over a full ring (promgate vs Prometheus "
         "%s)" % vs, ""]
    fwd = j.get("insert_forwarded_to") or ["prometheus"]
    L.append("%d exemplars stored of %d sent; zone %dm; inserts through the "
             "gateway: %s exemplars/s (one connection; each write forwarded "
             "to %s before it is answered)"
             % (j["exemplars_stored"], j["exemplars_sent"],
                j.get("zone_bytes", 64 << 20) >> 20,
                j["insert_exemplars_per_s_through_gateway"],
                "both Prometheus" if len(fwd) > 1 else "Prometheus"))
    L.append("")
    servers = ["Prometheus %s (`%s`)" % (j.get("prometheus_version") or old,
                                          j.get("prometheus_binary")
                                          or "prometheus")]
    if j.get("prometheus_current_version"):
        servers.append("Prometheus %s (`%s`)"
                       % (j["prometheus_current_version"],
                          j.get("prometheus_current_binary")))
    elif j.get("prometheus_current_skipped"):
        servers.append("the current Prometheus not measured: %s"
                       % j["prometheus_current_skipped"])
    L.append("Servers: %s, each with exemplar storage sized to the ring, "
             "holding the same exemplars (promgate forwarded the stream to "
             "them). %s of each kind per server, in turn, on keep-alive "
             "connections%s. identical = promgate's answer is byte for byte "
             "that Prometheus' answer (the first of each query); faster = "
             "Prometheus' time / promgate's (below 1: slower)."
             % ("; ".join(servers),
                "%d queries" % j["repeats"] if j.get("repeats")
                else "Queries",
                "; timed by %s" % j["client"] if j.get("client") else ""))
    L.append("")

    def ms(r, who):
        a, b = r.get(who + "_p50_ms"), r.get(who + "_p99_ms")
        if a is None or b is None:
            return "–"
        return "%.2f / %.2f" % (a, b)

    def yes(v):
        return "–" if v is None else ("yes" if v else "**NO**")

    def faster(r, p):
        a, b = r.get("prometheus_current_" + p), r.get("promgate_" + p)
        return "%.1f×" % (a / b) if a and b else "–"

    rows = []
    for q, r in j["queries"].items():
        ans = "–"
        if r.get("answer_exemplars") is not None:
            ans = "%s exemplars, %s KB" % (fmt(r["answer_exemplars"]),
                                           fmt(r["answer_bytes"] / 1000, 1))
        rows.append(["`%s`" % q.replace("|", "\\|"), ans,
                     "%s / %s" % (yes(r.get("identical")),
                                  yes(r.get("identical_current"))),
                     ms(r, "promgate"), ms(r, "prometheus"),
                     ms(r, "prometheus_current"),
                     "%s / %s" % (faster(r, "p50_ms"), faster(r, "p99_ms"))])
    L += table(["query", "answer", "identical to %s / %s" % (old,
                                                            cur or "current"),
                "promgate p50 / p99 ms",
                "Prometheus %s p50 / p99 ms" % old,
                "%s p50 / p99 ms" % curname,
                "promgate faster than %s, p50 / p99" % curname], rows)
    return L


# -------------------------------------------------------------------- plot

# the bars of the throughput panel, in order: (gateway key, colour)
PLOT_GWS = [("promgate", "#1f4e9c"), ("promgate:v2asis", "#4f86d9"),
            ("promgate:v2v1", "#8fb3e8"), ("promgate:v1v2", "#c3d6f2"),
            ("vmagent", "#d9711c"), ("vmagent179", "#f2b27a"),
            ("mirror", "#8c8c8c")]
PLOT_SHORT = {"promgate:v2asis": "promgate 2.0 as is",
              "promgate:v2v1": "promgate 2.0→1.0",
              "promgate:v1v2": "promgate 1.0→2.0",
              "mirror": "mirror (plain nginx)"}


def si(v):
    """1.32M, 305k"""
    if v >= 1e6:
        return "%.2fM" % (v / 1e6)
    if v >= 1e3:
        return "%.0fk" % (v / 1e3)
    return "%.0f" % v


def gp_str(t):
    """a gnuplot double-quoted string"""
    return '"%s"' % t.replace("\\", "\\\\").replace('"', '\\"') \
        .replace("\n", "\\n")


def plot(recs, vminfo, png, date):
    """latest.png with gnuplot: the gnuplot script is written next to a
    temporary PNG, which replaces PNG only when gnuplot succeeded"""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        raise RuntimeError("no gnuplot (bash t/deps.sh bench installs "
                           "gnuplot-nox)")
    shapes = []
    for r in recs:
        if r.get("shape") and r["shape"] not in shapes:
            shapes.append(r["shape"])
    maxrec = {(r["gw"], r["shape"]): r for r in recs if r.get("kind") == "max"}
    rw2 = {}
    for r in recs:
        if r.get("kind") == "rw2":
            rw2.setdefault(r["shape"], {}).setdefault(r["row"], []).append(r)

    def value(gw, s):
        if gw.startswith("promgate:"):
            rs = rw2.get(s, {}).get(gw.split(":", 1)[1])
            return spc(aggregate(rs)) if rs else None
        return spc(maxrec.get((gw, s)))

    def name(gw):
        if gw in PLOT_SHORT:
            return PLOT_SHORT[gw]
        if gw.startswith("vmagent"):
            v = vm_version(vminfo.get(gw)) or ("1.79" if gw == "vmagent179"
                                                else None)
            return ("vmagent " + ".".join(v.split(".")[:2]) if v
                    else "vmagent (current)")
        return gw

    # panel 1: samples per CPU-second, shapes x gateways
    shapes = [s for s in shapes if any(value(g, s) for g, _ in PLOT_GWS)]
    gws = [(g, c) for g, c in PLOT_GWS if any(value(g, s) for s in shapes)]
    if not gws:
        raise RuntimeError("no max-rate figures with CPU in the results")
    width = 0.8 / len(gws)
    blocks, plots = [], []
    vals = []
    for k, (g, c) in enumerate(gws):
        rows = []
        for i, s in enumerate(shapes):
            v = value(g, s)
            if v:
                x = i - 0.4 + width * (k + 0.5)
                rows.append("%.4f %.1f %s" % (x, v, gp_str(si(v))))
                vals.append(v)
        blocks.append("$t%d << EOD\n%s\nEOD" % (k, "\n".join(rows)))
        plots.append("$t%d using 1:2:($1-%.4f):($1+%.4f):(ymin):2 with "
                     "boxxyerror fc rgb %s lc rgb '#303030' title %s"
                     % (k, width / 2, width / 2, gp_str(c), gp_str(name(g))))
        plots.append("$t%d using 1:2:3 with labels rotate by 90 left "
                     "offset 0,0.3 font ',8' notitle" % k)
    ymin = 10 ** int(math.floor(math.log10(min(vals) / 2)))
    ymax = max(vals) * 4

    # panel 2: added latency at 50% load, the main shape (or the first
    # shape that has latency runs)
    raterec = {(r["gw"], r["shape"]): r for r in recs
               if r.get("kind") == "rate" and r["gw"] != "baseline"}
    baserate = {(r["for"], r["shape"]): r for r in recs
                if r.get("kind") == "rate" and r["gw"] == "baseline"}
    lat_shapes = [s for s in shapes if any(
        (g, s) in raterec and (g, s) in baserate
        for g in ("promgate", "vmagent", "vmagent179"))]
    lat_shape = "main" if "main" in lat_shapes else (
        lat_shapes[0] if lat_shapes else None)
    lat = []
    if lat_shape:
        for g in ("promgate", "vmagent", "vmagent179"):
            r, b = raterec.get((g, lat_shape)), baserate.get((g, lat_shape))
            if r is None or b is None:
                continue
            gl, bl = r["load"]["latency_us"], b["load"]["latency_us"]
            # a negative difference is not a figure (see added())
            lat.append((name(g), [(gl[p] - bl[p]) / 1000.0
                                  if gl[p] >= bl[p] else None
                                  for p in ("p50", "p99", "p999")]))
    pcts = [("p50", "#2b8c3e"), ("p99", "#e0a21b"), ("p99.9", "#c0392b")]
    lwidth = 0.8 / 3
    lblocks, lplots = [], []
    for k, (pn, c) in enumerate(pcts):
        rows = []
        for i, (_, vs) in enumerate(lat):
            x = i - 0.4 + lwidth * (k + 0.5)
            v = vs[k]
            # not a figure (baseline above the gateway): no bar, "n/a"
            rows.append("%.4f %.3f %s" % (x, v or 0.0,
                                          gp_str("%.1f" % v if v is not None
                                                 else "n/a")))
        lblocks.append("$l%d << EOD\n%s\nEOD" % (k, "\n".join(rows)))
        lplots.append("$l%d using 1:2:($1-%.4f):($1+%.4f):(0):2 with "
                      "boxxyerror fc rgb %s lc rgb '#303030' title %s"
                      % (k, lwidth / 2, lwidth / 2, gp_str(c),
                         gp_str("added " + pn)))
        lplots.append("$l%d using 1:2:3 with labels offset 0,0.6 "
                      "font ',8' notitle" % k)

    gp = ["set terminal pngcairo size 1400,1100 font 'sans,10' noenhanced",
          "set output %s" % gp_str(png),
          "set encoding utf8",
          "ymin = %g" % ymin]
    gp += blocks + lblocks
    gp += ["set multiplot layout 2,1 title %s" % gp_str(
               "promgate benchmark — %s" % date),
           "set style fill solid 1.0 border",
           "set grid ytics",
           # the same plot area in both panels, the keys to the right
           "set lmargin at screen 0.07",
           "set rmargin at screen 0.80",
           "set key outside right top vertical",
           "set title 'Samples per CPU-second at max rate (higher is "
           "better; log scale)'",
           "set logscale y",
           "set yrange [%g:%g]" % (ymin, ymax),
           "set format y '%.0s%c'",
           "set xrange [-0.6:%g]" % (len(shapes) - 0.4),
           "set xtics (%s) scale 0" % ", ".join(
               "%s %d" % (gp_str(s), i) for i, s in enumerate(shapes)),
           "plot " + ", \\\n     ".join(plots),
           "unset logscale y",
           "set format y '%g'"]
    if lat:
        gp += ["set title %s" % gp_str(
                   "Latency added over the baseline at 50%% of each "
                   "gateway's max rate, %s shape (ms, lower is better)\n"
                   "promgate answers after both targets accepted the write,"
                   " vmagent once it has queued it" % lat_shape),
               "set yrange [0:%g]" % (max([v for _, vs in lat for v in vs
                                           if v is not None] + [1]) * 1.15),
               "set xrange [-0.6:%g]" % (len(lat) - 0.4),
               "set xtics (%s) scale 0" % ", ".join(
                   "%s %d" % (gp_str(n), i) for i, (n, _) in enumerate(lat)),
               "plot " + ", \\\n     ".join(lplots)]
    else:
        gp += ["set title 'Added latency: no latency runs in the results'",
               "unset key", "set xrange [0:1]", "set yrange [0:1]",
               "unset xtics", "plot NaN notitle"]
    gp.append("unset multiplot")

    d = os.path.dirname(os.path.abspath(png))
    fd, tmp = tempfile.mkstemp(prefix=".plot.", suffix=".png", dir=d)
    os.close(fd)
    gp[1] = "set output %s" % gp_str(tmp)
    # the script in the temp directory (BENCH_KEEP=1 keeps it there)
    fd, script = tempfile.mkstemp(prefix="promgate-plot.", suffix=".gp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(gp) + "\n")
        r = subprocess.run([gnuplot, script], capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0 or os.path.getsize(tmp) == 0:
            raise RuntimeError("gnuplot failed (%d): %s" % (
                r.returncode, (r.stderr or "").strip()[-1000:]))
        os.chmod(tmp, 0o644)
        os.replace(tmp, png)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if os.environ.get("BENCH_KEEP") == "1":
            sys.stderr.write("gnuplot script kept: %s\n" % script)
        else:
            os.unlink(script)


def link_md(md, png):
    """a link to the plot in MD, before its first section (once)"""
    rel = os.path.relpath(os.path.abspath(png),
                          os.path.dirname(os.path.abspath(md)))
    line = ("![samples per CPU-second per gateway and shape; latency added "
            "at 50%% load](%s)" % rel)
    with open(md) as f:
        text = f.read()
    if "](%s)" % rel in text:
        return
    lines = text.split("\n")
    at = next((i for i, x in enumerate(lines) if x.startswith("## ")),
              len(lines))
    lines[at:at] = ["Plot of these figures: [%s](%s)" % (rel, rel), "",
                    line, ""]
    with open(md, "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--out")
    ap.add_argument("--meta-dir")
    ap.add_argument("--nginx", default="?")
    ap.add_argument("--vmagent", action="append", default=[],
                    help="GW=PATH, victoria-metrics VERSION[, flags] "
                         "(one per vmagent that ran)")
    ap.add_argument("--seconds", default="?")
    ap.add_argument("--seconds-other", default="?")
    ap.add_argument("--conns", default="?")
    ap.add_argument("--pin", default="?")
    ap.add_argument("--module", default="?")
    ap.add_argument("--hooks", default="")
    ap.add_argument("--loadavg", default="?")
    ap.add_argument("--rw2", default="")
    ap.add_argument("--route", default="")
    ap.add_argument("--src", default="",
                    help="the source tree decode_bench was built from")
    ap.add_argument("--date", default="",
                    help="the run's date (re-rendering an older JSONL)")
    ap.add_argument("--elapsed", default="")
    ap.add_argument("--section", choices=("gateways", "exemplar"),
                    default="gateways",
                    help="exemplar: only the exemplar-query section")
    ap.add_argument("--plot", metavar="PNG",
                    help="only the plot, into PNG (gnuplot)")
    ap.add_argument("--link-md", metavar="MD",
                    help="with --plot: link the plot from MD")
    a = ap.parse_args()

    recs = []
    with open(a.jsonl) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))

    shapes = []
    for r in recs:
        s = r.get("shape")
        if s and s not in shapes:
            shapes.append(s)

    maxrec = {(r["gw"], r["shape"]): r for r in recs if r.get("kind") == "max"}
    raterec = {(r["gw"], r["shape"]): r for r in recs
               if r.get("kind") == "rate" and r["gw"] != "baseline"}
    baserate = {(r["for"], r["shape"]): r for r in recs
                if r.get("kind") == "rate" and r["gw"] == "baseline"}
    skips = [r for r in recs if r.get("kind") == "skip"]
    rw2 = {}
    route = {}
    for r in recs:
        if r.get("kind") == "rw2":
            rw2.setdefault(r["shape"], {}).setdefault(r["row"], []).append(r)
        if r.get("kind") == "route":
            route.setdefault(r["gw"], {}).setdefault(r["row"], []).append(r)
    # the vmagents' versions: the run's info lines, or --vmagent
    vminfo = {r["gw"]: r["info"] for r in recs if r.get("kind") == "info"}
    for v in a.vmagent:
        gw, _, rest = v.partition("=")
        vminfo[gw] = rest
    decode = {r["shape"]: r for r in recs if r.get("kind") == "decode"}

    if a.section == "exemplar":
        ex = [r for r in recs if r.get("kind") == "exemplar_query"]
        if not ex:
            sys.exit("report.py: no exemplar_query line in %s" % a.jsonl)
        sys.stdout.write("\n".join(exemplar_section(ex[-1])) + "\n")
        return
    if a.plot:
        try:
            plot(recs, vminfo, a.plot, a.date or datetime.datetime.now(
                datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            sys.exit("report.py: plot: %s" % e)
        if a.link_md:
            link_md(a.link_md, a.plot)
        print("plot: %s" % a.plot)
        return

    L = []
    now = datetime.datetime.now(datetime.timezone.utc)
    L.append("# promgate benchmark — latest run")
    L.append("")
    L.append("- date: %s" % (a.date or now.strftime("%Y-%m-%d %H:%M:%S UTC")))
    L.append("- machine: %s cores (nproc), %s, %s RAM, Linux %s"
             % (os.cpu_count(), cpu_model(), mem_total(), platform.release()))
    L.append("- nginx: %s" % a.nginx)
    for gw in ("vmagent", "vmagent179"):
        if gw in vminfo:
            L.append("- %s: %s (GOMAXPROCS=1)" % (gw_label(gw, vminfo),
                                                 vminfo[gw]))
    L.append("- load average (1/5/15 min) %s — the machine may be shared; "
             "a high start value means other work competed with the run"
             % a.loadavg)
    L.append("- module: %s" % a.module)
    rev = sh("git -C %s rev-parse --short HEAD 2>/dev/null"
             % os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    L.append("- repo HEAD: %s (the checkout bench/ ran from)"
             % (rev or "no commit yet"))
    if a.src:
        L.append("- decode_bench built from: %s" % a.src)
    L.append("- windows: %ss (main), %ss (other shapes); %s sender "
             "connections; pinning (gateway CPU 1, sender + sinks CPU 0): %s; "
             "hooks: %s"
             % (a.seconds, a.seconds_other, a.conns,
                "on" if a.pin == "1" else "off", a.hooks or "none"))
    if a.rw2:
        L.append("- remote write 2.0 rows: %s" % a.rw2)
    if a.route:
        L.append("- routing rows: %s" % a.route)
    if a.elapsed:
        L.append("- gateway benchmark run time: %s s (the exemplar-query and "
                 "Kafka sections below come after it)" % a.elapsed)
    L.append("- command: `%s`" % " ".join(
        ["%s=%s" % (k, os.environ[k]) for k in sorted(os.environ)
         if k.startswith("BENCH_")
         or k in ("PROMGATE_MODULE", "VMAGENT_BIN", "VMAGENT179_BIN",
                  "NGINX_BIN")] + ["bash bench/run.sh"]))
    L.append("")

    if a.meta_dir:
        rows = []
        for s in shapes:
            p = os.path.join(a.meta_dir, s + ".meta.json")
            if not os.path.exists(p):
                continue
            with open(p) as f:
                m = json.load(f)
            def kb(k):
                return fmt(m[k] / 1000, 1) if k in m else "–"
            rows.append([s, fmt(m["bodies"]), fmt(m["series_per_body"]),
                         fmt(m["labels_per_series_avg"], 1),
                         fmt(m["exemplars_per_body_avg"]),
                         fmt(m["new_series_per_request"]),
                         kb("raw_bytes_avg"), kb("snappy_bytes_avg"),
                         kb("v2_raw_bytes_avg"), kb("v2_snappy_bytes_avg"),
                         fmt(m.get("v2_symbols_avg"))])
        if rows:
            L.append("## Workload (build/bench, bench/gen_bodies.py)")
            L.append("")
            L += table(["shape", "bodies", "series (=samples)/req",
                        "labels/series", "exemplars/req",
                        "new series/req", "1.0 raw KB", "1.0 snappy KB",
                        "2.0 raw KB", "2.0 snappy KB", "2.0 symbols/req"],
                       rows)
            L.append("")

    L.append("## Throughput and cost at max rate")
    L.append("")
    rows = []
    ratios = []
    for s in shapes:
        order = [("baseline", maxrec.get(("baseline", s))),
                 ("promgate", maxrec.get(("promgate", s)))]
        for row in RW2_ROWS[1:]:
            recs_ = rw2.get(s, {}).get(row)
            if recs_:
                order.append(("promgate:" + row, aggregate(recs_)))
        for gw in ("vmagent", "vmagent179", "mirror"):
            order.append((gw, maxrec.get((gw, s))))
        for gw, r in order:
            if r is None:
                continue
            rows.append(max_row(s, gw, r, vminfo))
        pg = maxrec.get(("promgate", s))
        mi = maxrec.get(("mirror", s))
        for gw in ("vmagent", "vmagent179"):
            vm = maxrec.get((gw, s))
            if spc(pg) and spc(vm):
                ratios.append("- %s: promgate/%s samples per CPU-second = "
                              "**%.2f** (%s vs %s; %s)"
                              % (s, gw_label(gw, vminfo, short=True),
                                 spc(pg) / spc(vm), fmt(spc(pg)),
                                 fmt(spc(vm)), gw_label(gw, vminfo)))
        if spc(pg) and spc(mi):
            ratios.append("- %s: promgate/mirror samples per CPU-second = "
                          "%.2f (mirror is plain nginx, no decoding)"
                          % (s, spc(pg) / spc(mi)))
        vm = maxrec.get(("vmagent", s))
        if spc(vm) and spc(mi) and not spc(pg):
            ratios.append("- %s: mirror/vmagent samples per CPU-second = "
                          "%.2f (promgate row missing)"
                          % (s, spc(mi) / spc(vm)))
    L += table(["shape", "row", "req/s", "samples/s", "sustained samples/s",
                "CPU s", "CPU-s/M samples", "samples/CPU-s", "PSS MB",
                "p50 µs", "p99 µs", "non-2xx / errors", "forwarded",
                "CPU1 other"], rows)
    L.append("")
    if ratios:
        L.append("Ratios:")
        L.append("")
        L += ratios
        L.append("")

    L.append("## Latency added over the baseline at 50% of each gateway's "
             "max rate")
    L.append("")
    rows = []
    for s in shapes:
        for gw in ("promgate", "vmagent", "vmagent179", "mirror"):
            r = raterec.get((gw, s))
            b = baserate.get((gw, s))
            if r is None or b is None:
                continue
            gl, bl = r["load"]["latency_us"], b["load"]["latency_us"]
            errs = bad(r["load"])
            if r.get("crashes"):
                errs += " CRASHED"
            cpu, smp = r.get("cpu_s"), r["load"].get("samples", 0)
            per_m = fmt(cpu / (smp / 1e6), 3) if cpu and smp > 0 else "–"
            rows.append([s, gw_label(gw, vminfo), fmt(r["rate"], 1),
                         "%s / %s / %s" % (fmt(gl["p50"]), fmt(gl["p99"]),
                                           fmt(gl["p999"])),
                         "%s / %s / %s" % (fmt(bl["p50"]), fmt(bl["p99"]),
                                           fmt(bl["p999"])),
                         "**%s / %s / %s**" % tuple(
                             added(gl[k], bl[k]) for k in ("p50", "p99", "p999")),
                         fmt(gl["max"]), per_m, str(errs),
                         pct(r.get("other_cpu"), attempts(r))])
    if rows:
        L += table(["shape", "row", "offered req/s",
                    "gateway p50/p99/p99.9 µs", "baseline p50/p99/p99.9 µs",
                    "added p50/p99/p99.9 µs", "gateway max µs",
                    "CPU-s/M samples at this rate", "non-2xx / errors",
                    "CPU1 other"], rows)
    else:
        L.append("(no latency runs)")
    L.append("")

    L += rw2_section(rw2, shapes)

    if a.route or route:
        L += route_section(route, maxrec)

    L.append("## Decode only (src/core, no nginx; bench/decode_bench.c)")
    L.append("")
    if decode:
        rows = []
        rows2 = []
        for s in shapes:
            r = decode.get(s)
            if r is None:
                continue
            ld = r["load"]
            ins = instr_per_sample(r)
            pg = maxrec.get(("promgate", s))
            share = "–"
            if (pg and pg.get("cpu_s") and pg["load"].get("samples")
                    and ld.get("snappy_scan_us_per_sample")):
                per_m = pg["cpu_s"] / (pg["load"]["samples"] / 1e6)
                share = "%.0f%%" % (100 * ld["snappy_scan_us_per_sample"]
                                    / per_m)
            rows.append([s, fmt(ld.get("decode_samples_per_cpu_second")),
                         fmt(ld.get("snappy_us_per_sample"), 3),
                         fmt(ld.get("scan_only_us_per_sample"), 3),
                         fmt(ld.get("snappy_scan_us_per_sample"), 3),
                         share,
                         fmt(ld.get("snappy_protobufc_malloc_us_per_sample"), 3),
                         fmt(ld.get("snappy_protobufc_arena_us_per_sample"), 3),
                         fmt(ins.get("snappy")), fmt(ins.get("scan_only")),
                         fmt(ins.get("scan"))])
            if "decode_v2_us_per_sample" in ld:
                rows2.append([s, fmt(ld.get("decode_v1_us_per_sample"), 3),
                              fmt(ld.get("decode_v2_us_per_sample"), 3),
                              fmt(ld.get("translate_1to2_us_per_sample"), 3),
                              fmt(ld.get("translate_2to1_us_per_sample"), 3),
                              fmt(ld.get("subset_v1_us_per_sample"), 3),
                              fmt(ld.get("subset_v2_us_per_sample"), 3),
                              fmt(ins.get("v1")), fmt(ins.get("v2"))])
        L += table(["shape", "samples/CPU-s (snappy+scan)",
                    "snappy µs/sample", "scan µs/sample",
                    "snappy+scan µs/sample", "share of promgate's CPU-s/M",
                    "protobuf-c unpack (malloc) µs/sample",
                    "protobuf-c unpack (arena) µs/sample",
                    "snappy instructions/sample",
                    "scan instructions/sample",
                    "snappy+scan instructions/sample"], rows)
        if rows2:
            L.append("")
            L.append("Decoders and translations alone, on the uncompressed "
                     "bodies (decode_bench makes its 2.0 bodies with the "
                     "core's own 1.0→2.0 translation; translation = encode "
                     "time on top of the decode):")
            L.append("")
            L += table(["shape", "1.0 decode µs/sample",
                        "2.0 decode µs/sample",
                        "translate 1.0→2.0 µs/sample",
                        "translate 2.0→1.0 µs/sample",
                        "1.0 subset (1% left out) µs/sample",
                        "2.0 subset µs/sample",
                        "1.0 decode instructions/sample",
                        "2.0 decode instructions/sample"], rows2)
        L.append("")
        L.append("µs per sample = CPU-seconds per million samples, the unit of "
                 "the gateway table; the share compares snappy+scan with "
                 "promgate's whole cost on the same shape.")
        cg = [decode[s]["callgrind"] for s in shapes if s in decode
              and (decode[s].get("callgrind") or {}).get("modes")]
        if cg:
            L.append("")
            L.append("Instructions per sample: %s, callgrind counting only "
                     "decode_bench's bench_pass() (`-n 1 -m MODE`: snappy, "
                     "scan = snappy + the validating scan, v1, v2; scan "
                     "alone = scan − snappy), whole bodies, %s per shape; "
                     "exact, not disturbed by other work on the machine."
                     % (cg[0].get("tool") or "valgrind",
                        "/".join(sorted({str(c.get("bodies")) for c in cg}))
                        + " bodies"))
    else:
        L.append("Not measured (see Skipped).")
    L.append("")

    if skips:
        L.append("## Skipped")
        L.append("")
        for r in skips:
            L.append("- %s%s: %s" % (r["gw"], (" / " + r["shape"])
                                     if r.get("shape") else "", r["reason"]))
        L.append("")

    L.append("## Notes")
    L.append("")
    for n in NOTES:
        L.append("- " + n)
    L.append("")

    text = "\n".join(L)
    sys.stdout.write(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
