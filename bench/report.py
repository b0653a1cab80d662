#!/usr/bin/python3
"""
Turns the JSON lines bench/run.sh collected into the results table: printed
on stdout and written as Markdown (bench/results/latest.md).
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

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
    "a few % means the row is disturbed; rerun.",
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


def pct(v):
    if v is None:
        return "–"
    return "%.0f%%%s" % (100 * v, " ⚠" if v > 0.10 else "")


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--out")
    ap.add_argument("--meta-dir")
    ap.add_argument("--nginx", default="?")
    ap.add_argument("--vmagent", default="?")
    ap.add_argument("--seconds", default="?")
    ap.add_argument("--seconds-other", default="?")
    ap.add_argument("--conns", default="?")
    ap.add_argument("--pin", default="?")
    ap.add_argument("--module", default="?")
    ap.add_argument("--hooks", default="")
    ap.add_argument("--loadavg", default="?")
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
    decode = {r["shape"]: r for r in recs if r.get("kind") == "decode"}

    L = []
    now = datetime.datetime.now(datetime.timezone.utc)
    L.append("# promgate benchmark — latest run")
    L.append("")
    L.append("- date: %s" % now.strftime("%Y-%m-%d %H:%M:%S UTC"))
    L.append("- machine: %s cores (nproc), %s, %s RAM, Linux %s"
             % (os.cpu_count(), cpu_model(), mem_total(), platform.release()))
    L.append("- nginx: %s; %s (GOMAXPROCS=1)" % (a.nginx, a.vmagent))
    L.append("- load average (1/5/15 min) %s — the machine may be shared; "
             "a high start value means other work competed with the run"
             % a.loadavg)
    L.append("- module: %s" % a.module)
    rev = sh("git -C %s rev-parse --short HEAD 2>/dev/null"
             % os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    L.append("- repo HEAD: %s" % (rev or "no commit yet"))
    L.append("- windows: %ss (main), %ss (other shapes); %s sender "
             "connections; pinning (gateway CPU 1, sender + sinks CPU 0): %s; "
             "hooks: %s"
             % (a.seconds, a.seconds_other, a.conns,
                "on" if a.pin == "1" else "off", a.hooks or "none"))
    L.append("- command: `%s`" % " ".join(
        ["%s=%s" % (k, os.environ[k]) for k in sorted(os.environ)
         if k.startswith("BENCH_")] + ["bash bench/run.sh"]))
    L.append("")

    if a.meta_dir:
        rows = []
        for s in shapes:
            p = os.path.join(a.meta_dir, s + ".meta.json")
            if not os.path.exists(p):
                continue
            with open(p) as f:
                m = json.load(f)
            rows.append([s, fmt(m["bodies"]), fmt(m["series_per_body"]),
                         fmt(m["labels_per_series_avg"], 1),
                         fmt(m["exemplars_per_body_avg"]),
                         fmt(m["new_series_per_request"]),
                         fmt(m["raw_bytes_avg"] / 1000, 1),
                         fmt(m["snappy_bytes_avg"] / 1000, 1)])
        if rows:
            L.append("## Workload (build/bench, bench/gen_bodies.py)")
            L.append("")
            L += table(["shape", "bodies", "series (=samples)/req",
                        "labels/series", "exemplars/req",
                        "new series/req", "raw KB", "snappy KB"], rows)
            L.append("")

    L.append("## Throughput and cost at max rate")
    L.append("")
    rows = []
    ratios = []
    for s in shapes:
        for gw in ("baseline", "promgate", "vmagent", "mirror"):
            r = maxrec.get((gw, s))
            if r is None:
                continue
            ld = r["load"]
            samples = ld.get("samples", 0)
            cpu = r.get("cpu_s")
            per_m = cpu / (samples / 1e6) if cpu and samples > 0 else None
            per_cpu = samples / cpu if cpu else None
            sustained = None
            if gw == "vmagent":
                d = ld["duration_s"] + float(r.get("drain_s") or 0)
                sustained = samples / d if d > 0 else None
            check = "–"
            if r.get("crashes"):
                check = "CRASHED (%s so far)" % r["crashes"]
            elif ld["ok"] == 0:
                check = "NO 2xx"
            elif gw in ("promgate", "mirror"):
                ok = ld["ok"]
                a_, b_ = r.get("sink_a_requests"), r.get("sink_b_requests")
                check = ("ok (%d+%d)" % (a_, b_) if a_ == ok and b_ == ok
                         else "MISMATCH a=%s b=%s of %d" % (a_, b_, ok))
            elif gw == "vmagent":
                rin, rsent = r.get("vm_rows_in"), r.get("vm_rows_sent")
                if rin == samples and rsent == 2 * rin:
                    check = "ok (%s rows x2)" % fmt(rin)
                else:
                    check = "MISMATCH in=%s sent=%s (want 2x%s)" % (
                        rin, rsent, samples)
            errs = bad(ld)
            rows.append([s, gw, fmt(ld["req_per_s"], 1),
                         fmt(ld["samples_per_s"]),
                         fmt(sustained) if gw == "vmagent" else "",
                         fmt(cpu, 2) if cpu is not None else "–",
                         fmt(per_m, 3) if per_m is not None else "–",
                         fmt(per_cpu) if per_cpu is not None else "–",
                         fmt(r["pss_kb"] / 1024, 1) if r.get("pss_kb") else "–",
                         fmt(ld["latency_us"]["p50"]),
                         fmt(ld["latency_us"]["p99"]),
                         str(errs), check, pct(r.get("other_cpu"))])
        pg, vm, mi = (maxrec.get((g, s)) for g in ("promgate", "vmagent",
                                                    "mirror"))

        def spc(r):
            if not r or not r.get("cpu_s") or not r["load"].get("samples"):
                return None
            return r["load"]["samples"] / r["cpu_s"]
        if spc(pg) and spc(vm):
            ratios.append("- %s: promgate/vmagent samples per CPU-second = "
                          "**%.2f** (%s vs %s)"
                          % (s, spc(pg) / spc(vm), fmt(spc(pg)), fmt(spc(vm))))
        if spc(pg) and spc(mi):
            ratios.append("- %s: promgate/mirror samples per CPU-second = "
                          "%.2f (mirror is plain nginx, no decoding)"
                          % (s, spc(pg) / spc(mi)))
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
        for gw in ("promgate", "vmagent"):
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
            rows.append([s, gw, fmt(r["rate"], 1),
                         "%s / %s / %s" % (fmt(gl["p50"]), fmt(gl["p99"]),
                                           fmt(gl["p999"])),
                         "%s / %s / %s" % (fmt(bl["p50"]), fmt(bl["p99"]),
                                           fmt(bl["p999"])),
                         "**%s / %s / %s**" % tuple(
                             added(gl[k], bl[k]) for k in ("p50", "p99", "p999")),
                         fmt(gl["max"]), per_m, str(errs),
                         pct(r.get("other_cpu"))])
    if rows:
        L += table(["shape", "row", "offered req/s",
                    "gateway p50/p99/p99.9 µs", "baseline p50/p99/p99.9 µs",
                    "added p50/p99/p99.9 µs", "gateway max µs",
                    "CPU-s/M samples at this rate", "non-2xx / errors",
                    "CPU1 other"], rows)
    else:
        L.append("(no latency runs)")
    L.append("")

    L.append("## Decode only (src/core, no nginx; bench/decode_bench.c)")
    L.append("")
    if decode:
        rows = []
        for s in shapes:
            r = decode.get(s)
            if r is None:
                continue
            ld = r["load"]
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
                         fmt(ld.get("snappy_protobufc_arena_us_per_sample"), 3)])
        L += table(["shape", "samples/CPU-s (snappy+scan)",
                    "snappy µs/sample", "scan µs/sample",
                    "snappy+scan µs/sample", "share of promgate's CPU-s/M",
                    "protobuf-c unpack (malloc) µs/sample",
                    "protobuf-c unpack (arena) µs/sample"], rows)
        L.append("")
        L.append("µs per sample = CPU-seconds per million samples, the unit of "
                 "the gateway table; the share compares snappy+scan with "
                 "promgate's whole cost on the same shape.")
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
