#!/usr/bin/python3
"""
Remote-write 1.0 request bodies for the promgate benchmarks.

Writes, into OUTDIR (default build/bench):

    <shape>-NN.bin      snappy-compressed WriteRequest bodies (block format)
    <shape>.samples     samples per body (one integer; every body of a shape
                        carries the same number), read by loadgen -S
    <shape>.meta.json   series/labels/exemplars/bytes of the shape
    churn-NN.bin.patch  offsets of 16-hex-char placeholders inside the
                        *compressed* churn body (loadgen -u rewrites them per
                        request, so the "new" series are new in every request,
                        not only in the first round of bodies)
    .stamp              generator version + parameters; a rerun with the same
                        stamp does nothing

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

GEN_VERSION = "4"

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

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
    Returns (raw bytes, nexemplars, nlabels, placeholders list)."""
    wr = pb.WriteRequest()
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
        if exemplar_every and i % exemplar_every == exemplar_every // 2:
            e = s.exemplars.add()
            for n, v in (("span_id", "%016x" % r.getrandbits(64)),
                         ("trace_id", "%032x" % r.getrandbits(128))):
                el = e.labels.add()
                el.name = n
                el.value = v
            e.value = r.random() * 2.0
            e.timestamp = smp.timestamp - r.randrange(0, 15000)
            nex += 1
    return wr.SerializeToString(), nex, nlab, placeholders


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
    raw_total = comp_total = 0
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
            raw, nex, nlab, phs = build_body(pb, tpb, r, series, p["labels"],
                                             p["exemplar_every"], ts, slots)
            comp = snappy.compress(raw)
            offsets = []
            ok = True
            for ph in phs:
                phb = ph.encode()
                if raw.count(phb) != 1 or comp.count(phb) != 1:
                    ok = False
                    break
                offsets.append(comp.find(phb))
            if ok:
                break
        else:
            sys.exit("gen_bodies: could not place churn placeholders as "
                     "snappy literals in %s-%02d" % (shape, b))
        assert snappy.uncompress(comp) == raw
        path = os.path.join(outdir, "%s-%02d.bin" % (shape, b))
        with open(path, "wb") as f:
            f.write(comp)
        if phs:
            with open(path + ".patch", "w") as f:
                f.write("%d %d\n" % (len(offsets), PLACEHOLDER_LEN))
                for o in offsets:
                    f.write("%d\n" % o)
        raw_total += len(raw)
        comp_total += len(comp)
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
              "%.0f exemplars, raw %d B, snappy %d B (%.1fs)"
              % (s, m["bodies"], m["series_per_body"],
                 m["labels_per_series_avg"], m["exemplars_per_body_avg"],
                 m["raw_bytes_avg"], m["snappy_bytes_avg"], time.time() - t0))


if __name__ == "__main__":
    main()
