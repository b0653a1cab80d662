#!/usr/bin/python3
"""
Remote-write 1.0 and 2.0 request bodies for the promgate benchmarks.

Writes, into OUTDIR (default build/bench):

    <shape>-NN.bin      snappy-compressed 1.0 WriteRequest bodies (block format)
    <shape>.v2-NN.bin   the same data as remote write 2.0
                        (io.prometheus.write.v2.Request), snappy-compressed:
                        same series, labels, samples and exemplars as
                        <shape>-NN.bin, one symbol table per request
                        (loadgen sends these with the 2.0 headers)
    <shape>.samples     samples per body (one integer; every body of a shape
                        carries the same number, 1.0 and 2.0), read by loadgen -S
    <shape>.meta.json   series/labels/exemplars/bytes of the shape (both
                        protocols)
    churn-NN.bin.patch,
    churn.v2-NN.bin.patch
                        offsets of 16-hex-char placeholders inside the
                        *compressed* churn body (loadgen -u rewrites them per
                        request, so the "new" series are new in every request,
                        not only in the first round of bodies)
    .stamp              generator version + parameters; a rerun with the same
                        stamp does nothing

The 2.0 bodies are encoded the way a Prometheus 3 sender encodes them
(prompb/io/prometheus/write/v2, gogo-protobuf): symbols interned in order of
first use ("" first), label refs as one packed field per series, proto3
defaults (0 value, 0 timestamp) left out, and the non-nullable Metadata
field written even when empty (`2a 00`: type UNSPECIFIED, no help/unit),
as Prometheus does for a series whose metadata it does not know.  A 1.0 body
carries a series' sample and its exemplar in one TimeSeries; the 2.0 body
does the same, so both carry exactly the same data.  The 2.0 encoder is
the integration tests' (t/integration/rw2.py: the wire format, symbol
interning, no generated code) with proto3's zeros left out here, and the
first body of every shape is decoded back with rw2's decoder and compared
with its 1.0 twin.

Deterministic: one seed per shape.  Timestamps are "now" at generation time
(a null sink does not care; real storages would want them recent).

The WriteRequest is built with classes protoc generates from proto/ (the
schema the module decodes), so a schema change shows up here.
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time

import snappy

GEN_VERSION = "5"

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# the remote write 2.0 wire format of the integration tests
sys.path.insert(0, os.path.join(REPO, "t", "integration"))
import rw2  # noqa: E402

# name, series per body, labels per series (None = natural ~12),
# exemplar every Nth series (0 = none), bodies, churn (new series per body)
SHAPES = {
    "main":     dict(series=2000,  labels=None, exemplar_every=100, bodies=16, churn=0),
    "small":    dict(series=200,   labels=7,    exemplar_every=100, bodies=16, churn=0),
    "large":    dict(series=10000, labels=None, exemplar_every=100, bodies=16, churn=0),
    "exemplar": dict(series=2000,  labels=None, exemplar_every=10,  bodies=16, churn=0),
    # main's bodies (same seed, same series), 1% of each replaced by new ones
    "churn":    dict(series=2000,  labels=None, exemplar_every=100, bodies=16, churn=20,
                     seed="main"),
}

PLACEHOLDER_LEN = 16
# 16 capitals that no other label value uses, so snappy emits a placeholder
# as one literal (no back-reference reaches into it) and it can be rewritten
# in the compressed body; loadgen.c uses the same alphabet
PLACEHOLDER_ALPHABET = "GHJKLMNPQRSTVWXZ"


def placeholder(r):
    return "".join(PLACEHOLDER_ALPHABET[r.getrandbits(4)]
                   for _ in range(PLACEHOLDER_LEN))


def load_pb(outdir):
    """protoc --python_out into OUTDIR/py, then import remote_pb2."""
    pydir = os.path.join(outdir, "py")
    os.makedirs(pydir, exist_ok=True)
    protodir = os.path.join(REPO, "proto")
    target = os.path.join(pydir, "remote_pb2.py")
    srcs = [os.path.join(protodir, f) for f in ("types.proto", "remote.proto")]
    if (not os.path.exists(target)
            or any(os.path.getmtime(s) > os.path.getmtime(target) for s in srcs)):
        subprocess.check_call(["protoc", "-I" + protodir, "--python_out=" + pydir]
                              + srcs)
    sys.path.insert(0, pydir)
    import remote_pb2  # noqa: E402
    import types_pb2   # noqa: E402
    return remote_pb2, types_pb2


# ------------------------------------------------------------ the "fleet"

REGIONS = ["eu-west-1", "us-east-2", "ap-southeast-1", "eu-central-1"]
SERVICES = ["checkout-api", "payments-gateway", "search-backend-query",
            "user-profile-service", "inventory-sync-worker",
            "notification-dispatcher", "ingress-nginx-controller",
            "recommendation-engine-v2", "auth-token-service",
            "order-history-api", "cart-service", "pricing-rules-engine"]
NAMESPACES = ["payments-prod", "checkout", "search-platform", "platform-core",
              "ingress-nginx", "monitoring", "kube-system", "growth-experiments"]
JOBS = ["kubernetes-pods", "kubernetes-service-endpoints", "node-exporter",
        "kube-state-metrics", "cadvisor", "blackbox-http"]
HANDLERS = ["/api/v1/orders", "/api/v1/orders/{id}", "/api/v1/cart/items",
            "/healthz", "/metrics", "/api/v2/search", "/api/v1/users/{id}/prefs",
            "/internal/reconcile"]
METHODS = ["GET", "POST", "PUT", "DELETE"]
CODES = ["200", "201", "204", "400", "404", "500", "503"]
LE = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
      "10", "+Inf"]
QUANTILES = ["0", "0.25", "0.5", "0.75", "1"]
CPU_MODES = ["idle", "iowait", "irq", "nice", "softirq", "steal", "system",
             "user"]
GRPC_SERVICES = ["payments.v1.Ledger", "search.v2.Query",
                 "inventory.v1.StockService", "auth.v1.TokenIssuer"]
GRPC_METHODS = ["GetBalance", "Transfer", "Search", "Suggest", "Reserve",
                "Release", "Issue", "Revoke"]
GRPC_CODES = ["OK", "Canceled", "NotFound", "DeadlineExceeded", "Unavailable"]
DEVICES = ["/dev/nvme0n1p1", "/dev/nvme1n1", "tmpfs", "overlay"]
FSTYPES = ["ext4", "xfs", "tmpfs", "overlay"]
MOUNTS = ["/", "/var/lib/kubelet", "/run", "/var/lib/containerd"]

# metric family -> (kind, function giving lists of extra-label dicts)
FAMILIES = [
    ("http_requests_total", "counter",
     lambda r: [{"method": m, "handler": h, "status_code": c}
                for h in r.sample(HANDLERS, 3) for m in r.sample(METHODS, 2)
                for c in r.sample(CODES, 2)]),
    ("http_request_duration_seconds_bucket", "bucket",
     lambda r: [{"method": m, "handler": h, "le": le}
                for h in r.sample(HANDLERS, 2) for m in ["GET"] for le in LE]),
    ("http_request_duration_seconds_sum", "counter",
     lambda r: [{"method": "GET", "handler": h} for h in r.sample(HANDLERS, 2)]),
    ("http_request_duration_seconds_count", "counter",
     lambda r: [{"method": "GET", "handler": h} for h in r.sample(HANDLERS, 2)]),
    ("grpc_server_handled_total", "counter",
     lambda r: [{"grpc_service": s, "grpc_method": m, "grpc_code": c}
                for s in r.sample(GRPC_SERVICES, 1)
                for m in r.sample(GRPC_METHODS, 2)
                for c in r.sample(GRPC_CODES, 2)]),
    ("go_gc_duration_seconds", "gauge",
     lambda r: [{"quantile": q} for q in QUANTILES]),
    ("process_cpu_seconds_total", "counter", lambda r: [{}]),
    ("process_resident_memory_bytes", "gauge", lambda r: [{}]),
    ("go_goroutines", "gauge", lambda r: [{}]),
    ("container_cpu_usage_seconds_total", "counter",
     lambda r: [{"cpu": "cpu%02d" % i} for i in range(4)]),
    ("node_cpu_seconds_total", "counter",
     lambda r: [{"cpu": str(c), "mode": m} for c in range(2) for m in CPU_MODES]),
    ("node_filesystem_avail_bytes", "gauge",
     lambda r: [{"device": d, "fstype": f, "mountpoint": m}
                for d, f, m in zip(DEVICES, FSTYPES, MOUNTS)]),
    ("kube_pod_container_status_restarts_total", "counter",
     lambda r: [{"uid": "%08x-%04x-%04x-%04x-%012x" % (
         r.getrandbits(32), r.getrandbits(16), r.getrandbits(16),
         r.getrandbits(16), r.getrandbits(48))}]),
]


def rand_alnum(r, n, alphabet="bcdfghjklmnpqrstvwxz2456789"):
    return "".join(r.choice(alphabet) for _ in range(n))


def make_target(r, idx):
    svc = r.choice(SERVICES)
    region = r.choice(REGIONS)
    t = {
        "cluster": "%s-%s-eks-%s-%02d" % (r.choice(["prod", "prd", "stg"]), region,
                                          r.choice(["blue", "green"]),
                                          r.randrange(1, 12)),
        "node": "ip-10-%d-%d-%d.ec2.internal" % (r.randrange(256), r.randrange(256),
                                                 r.randrange(1, 255)),
        "region": region,
        "namespace": r.choice(NAMESPACES),
        "job": r.choice(JOBS),
        "service": svc,
        "pod": "%s-%s-%s" % (svc, rand_alnum(r, 10), rand_alnum(r, 5)),
        "instance": "10.%d.%d.%d:%d" % (r.randrange(256), r.randrange(256),
                                        r.randrange(1, 255),
                                        r.choice([8080, 9100, 9090, 8443, 10254])),
        "container": r.choice([svc, svc, svc + "-sidecar", "istio-proxy",
                               "otel-collector-agent"]),
    }
    if r.random() < 0.5:
        # the app.kubernetes.io/version pod label, copied by relabeling
        t["version"] = "v%d.%d.%d-g%07x" % (r.randrange(1, 4), r.randrange(60),
                                             r.randrange(20), r.getrandbits(28))
    return t


def series_universe(r, nseries):
    """Yields label dicts (without __name__ ordering concerns) + kind."""
    out = []
    t = 0
    while len(out) < nseries:
        target = make_target(r, t)
        t += 1
        for name, kind, extras in FAMILIES:
            for ex in extras(r):
                labels = dict(target)
                labels.update(ex)
                labels["__name__"] = name
                out.append((labels, kind))
    return out


def sample_value(r, kind, labels):
    if kind == "counter":
        return r.random() * 10 ** r.randrange(1, 10)
    if kind == "bucket":
        return float(r.randrange(0, 100000)) if labels.get("le") != "0.005" else 0.0
    return r.random() * 10 ** r.randrange(0, 9)


def build_body(pb, tpb, r, series, labels_per_series, exemplar_every, ts,
               churn_slots):
    """churn_slots: set of series indexes whose pod value gets a placeholder.
    Returns (raw 1.0 bytes, raw 2.0 bytes, nexemplars, nlabels, placeholders
    list, symbols in the 2.0 body)."""
    wr = pb.WriteRequest()
    data = []           # per series: (label pairs, value, ts, exemplar|None)
    nex = 0
    nlab = 0
    placeholders = []
    for i, (labels, kind) in enumerate(series):
        labels = dict(labels)
        if i in churn_slots:
            ph = placeholder(r)
            labels["pod"] = "%s-%s" % (labels["service"], ph)
            placeholders.append(ph)
        names = sorted(labels)
        if labels_per_series is not None:
            # keep __name__, then family labels, then target labels
            keep = ["__name__"] + [n for n in names if n not in TARGET_KEYS
                                   and n != "__name__"]
            keep += [n for n in TARGET_ORDER if n in labels]
            names = sorted(keep[:labels_per_series])
        s = wr.timeseries.add()
        for n in names:
            l = s.labels.add()
            l.name = n
            l.value = labels[n]
        nlab += len(names)
        smp = s.samples.add()
        smp.value = sample_value(r, kind, labels)
        smp.timestamp = ts + (hash_small(labels.get("instance", "")) % 1000)
        ex = None
        if exemplar_every and i % exemplar_every == exemplar_every // 2:
            e = s.exemplars.add()
            for n, v in (("span_id", "%016x" % r.getrandbits(64)),
                         ("trace_id", "%032x" % r.getrandbits(128))):
                el = e.labels.add()
                el.name = n
                el.value = v
            e.value = r.random() * 2.0
            e.timestamp = smp.timestamp - r.randrange(0, 15000)
            ex = ([(el.name, el.value) for el in e.labels], e.value,
                  e.timestamp)
            nex += 1
        data.append(([(n, labels[n]) for n in names], smp.value,
                     smp.timestamp, ex))
    raw2, nsym = encode_v2(data)
    return wr.SerializeToString(), raw2, nex, nlab, placeholders, nsym


# ------------------------------------------------------ remote write 2.0
#
# io.prometheus.write.v2 (Prometheus prompb/io/prometheus/write/v2):
#   Request    { 4: repeated string symbols; 5: repeated TimeSeries }
#   TimeSeries { 1: packed uint32 labels_refs; 2: Sample; 3: Histogram;
#                4: Exemplar; 5: Metadata; 6: int64 created_timestamp }
#   Sample     { 1: double value; 2: int64 timestamp }
#   Exemplar   { 1: packed uint32 labels_refs; 2: double value; 3: int64 ts }
#   Metadata   { 1: type; 3: uint32 help_ref; 4: uint32 unit_ref }

def _value_ts(field, value, ts):
    """a double at field, an int64 at field + 1 (Sample 1, 2; Exemplar 2,
    3); proto3: a zero value or timestamp is not written"""
    out = b""
    if value != 0:
        out += rw2.f_double(field, value)
    if ts != 0:
        out += rw2.f_varint(field + 1, ts)
    return out


EMPTY_METADATA = b"\x2a\x00"      # field 5, length 0 (gogo non-nullable)


def encode_v2(data):
    """data: [(label pairs, value, ts, (exemplar pairs, value, ts) | None)]
    -> (raw Request bytes, number of symbols)"""
    bl = rw2.V2Builder()
    series = []
    for pairs, value, ts, ex in data:
        out = rw2.f_packed(1, bl.refs(pairs))
        out += rw2.f_bytes(2, _value_ts(1, value, ts))
        if ex is not None:
            epairs, evalue, ets = ex
            erefs = bl.refs(epairs)
            out += rw2.f_bytes(4, (rw2.f_packed(1, erefs) if erefs else b"")
                               + _value_ts(2, evalue, ets))
        out += EMPTY_METADATA
        series.append(out)
    return rw2.v2_request(bl.symbols, series), len(bl.symbols)


def decode_v2(raw):
    """a 2.0 body back to [(label pairs, value, ts, exemplar|None)]; every
    series holds what encode_v2 writes: one sample, at most one exemplar,
    empty metadata, nothing else"""
    d = rw2.decode_v2(raw)
    assert d["symbols"] and d["symbols"][0] == "", "symbols[0] must be empty"
    out = []
    for s in d["timeseries"]:
        assert len(s["samples"]) == 1 and len(s["exemplars"]) <= 1
        assert s["metadata"] == (0, "", ""), "metadata is written empty"
        assert not s["histograms"] and s["created_timestamp"] == 0
        value, ts = s["samples"][0]
        ex = s["exemplars"][0] if s["exemplars"] else None
        out.append((s["labels"], value, ts, ex))
    return out


def v1_as_data(pb, raw):
    wr = pb.WriteRequest()
    wr.ParseFromString(raw)
    out = []
    for s in wr.timeseries:
        assert len(s.samples) == 1 and len(s.exemplars) <= 1
        ex = None
        for e in s.exemplars:
            ex = ([(l.name, l.value) for l in e.labels], e.value, e.timestamp)
        out.append(([(l.name, l.value) for l in s.labels], s.samples[0].value,
                    s.samples[0].timestamp, ex))
    return out


TARGET_ORDER = ["job", "instance", "namespace", "pod", "service", "container",
                "cluster", "node", "region", "version"]
TARGET_KEYS = set(TARGET_ORDER)


def hash_small(s):
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(),
                          "little")


def gen_shape(pb, tpb, outdir, shape, p, now_ms):
    seed = int.from_bytes(hashlib.sha256(p.get("seed", shape).encode())
                          .digest()[:8], "little")
    r = random.Random(seed)
    nb, ns = p["bodies"], p["series"]
    # a fleet 4x larger than what the bodies carry: like a sharded sender, a
    # request holds series of many targets, few per target
    universe = series_universe(r, 4 * nb * ns)
    r.shuffle(universe)
    raw_total = comp_total = raw2_total = comp2_total = sym_total = 0
    nex_total = nlab_total = 0
    for b in range(nb):
        series = universe[b * ns:(b + 1) * ns]
        slots = set()
        if p["churn"]:
            # these series get a pod value loadgen -u makes unique per request
            step = ns // p["churn"]
            slots = set(range(step // 2, ns, step))
        ts = now_ms - (nb - b) * 1000
        for attempt in range(50):
            raw, raw2, nex, nlab, phs, nsym = build_body(
                pb, tpb, r, series, p["labels"], p["exemplar_every"], ts, slots)
            comp = snappy.compress(raw)
            comp2 = snappy.compress(raw2)
            offsets = ([], [])
            ok = True
            for ph in phs:
                phb = ph.encode()
                for k, (rw, cp) in enumerate(((raw, comp), (raw2, comp2))):
                    if rw.count(phb) != 1 or cp.count(phb) != 1:
                        ok = False
                        break
                    offsets[k].append(cp.find(phb))
                if not ok:
                    break
            if ok:
                break
        else:
            sys.exit("gen_bodies: could not place churn placeholders as "
                     "snappy literals in %s-%02d" % (shape, b))
        assert snappy.uncompress(comp) == raw
        assert snappy.uncompress(comp2) == raw2
        if b == 0:
            # the 2.0 body says exactly what the 1.0 body says
            d1, d2 = v1_as_data(pb, raw), decode_v2(raw2)
            if d1 != d2:
                sys.exit("gen_bodies: %s-00: the 2.0 body differs from the "
                         "1.0 body" % shape)
        for name, body, offs in (("%s-%02d.bin" % (shape, b), comp, offsets[0]),
                                 ("%s.v2-%02d.bin" % (shape, b), comp2,
                                  offsets[1])):
            path = os.path.join(outdir, name)
            with open(path, "wb") as f:
                f.write(body)
            if phs:
                with open(path + ".patch", "w") as f:
                    f.write("%d %d\n" % (len(offs), PLACEHOLDER_LEN))
                    for o in offs:
                        f.write("%d\n" % o)
        raw_total += len(raw)
        comp_total += len(comp)
        raw2_total += len(raw2)
        comp2_total += len(comp2)
        sym_total += nsym
        nex_total += nex
        nlab_total += nlab
    with open(os.path.join(outdir, shape + ".samples"), "w") as f:
        f.write("%d\n" % ns)
    meta = {
        "shape": shape, "bodies": nb, "series_per_body": ns,
        "samples_per_body": ns,
        "labels_per_series_avg": round(nlab_total / (nb * ns), 2),
        "exemplars_per_body_avg": nex_total / nb,
        "new_series_per_request": p["churn"],
        "raw_bytes_avg": raw_total // nb,
        "snappy_bytes_avg": comp_total // nb,
        "v2_raw_bytes_avg": raw2_total // nb,
        "v2_snappy_bytes_avg": comp2_total // nb,
        "v2_symbols_avg": sym_total / nb,
        "generated_at_ms": now_ms,
    }
    with open(os.path.join(outdir, shape + ".meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--outdir", default=os.path.join(REPO, "build", "bench"))
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    shapes = [s for s in a.shapes.replace(",", " ").split() if s]
    for s in shapes:
        if s not in SHAPES:
            sys.exit("gen_bodies: unknown shape %r (have: %s)"
                     % (s, " ".join(SHAPES)))
    stamp_path = os.path.join(a.outdir, ".stamp")
    stamp = {}
    if os.path.exists(stamp_path):
        with open(stamp_path) as f:
            stamp = json.load(f)
    pb, tpb = load_pb(a.outdir)
    now_ms = int(time.time() * 1000)
    for s in shapes:
        want = GEN_VERSION + ":" + json.dumps(SHAPES[s], sort_keys=True)
        if (not a.force and stamp.get(s) == want
                and os.path.exists(os.path.join(a.outdir, s + ".meta.json"))):
            continue
        t0 = time.time()
        m = gen_shape(pb, tpb, a.outdir, s, SHAPES[s], now_ms)
        stamp[s] = want
        with open(stamp_path, "w") as f:
            json.dump(stamp, f)
        print("gen_bodies: %-8s %d bodies, %d series, %.1f labels, "
              "%.0f exemplars, 1.0 raw %d B snappy %d B, 2.0 raw %d B "
              "snappy %d B (%.0f symbols) (%.1fs)"
              % (s, m["bodies"], m["series_per_body"],
                 m["labels_per_series_avg"], m["exemplars_per_body_avg"],
                 m["raw_bytes_avg"], m["snappy_bytes_avg"],
                 m["v2_raw_bytes_avg"], m["v2_snappy_bytes_avg"],
                 m["v2_symbols_avg"], time.time() - t0))


if __name__ == "__main__":
    main()
