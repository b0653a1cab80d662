#!/usr/bin/env python3
"""Sample data for the promgate compose stack, produced onto Kafka with kcat.

Every INTERVAL seconds it simulates the traffic of a small web shop and
produces:

  * to TOPIC (default prom-metrics), one remote-write WriteRequest,
    serialized protobuf without snappy (promgate's format=auto takes it as
    `prompb`): a counter per path and code, a classic histogram of request
    durations whose bucket series carry exemplars (trace_id, span_id), and a
    gauge;
  * to JSON_TOPIC (default prom-json; empty disables it), one sample per
    message in the JSON that prometheus-kafka-adapter writes, which promgate
    takes with format=json.

Python's standard library and the kcat binary only: the protobuf is encoded
by hand (the few message types of proto/types.proto and proto/remote.proto).
A message kcat could not deliver (Kafka not up yet, say) is reported and the
next interval produces a fresh one; nothing is queued up.

Environment: KAFKA_BROKERS (kafka:19092), TOPIC, JSON_TOPIC, INTERVAL (5),
COUNT (0: forever), TENANT (sent as the Kafka header X-Scope-OrgID when set),
KCAT (kcat).
"""

import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time

# ------------------------------------------------------------ protobuf
# WriteRequest { repeated TimeSeries timeseries = 1; }
# TimeSeries  { repeated Label labels = 1; repeated Sample samples = 2;
#               repeated Exemplar exemplars = 3; }
# Label       { string name = 1; string value = 2; }
# Sample      { double value = 1; int64 timestamp = 2; }
# Exemplar    { repeated Label labels = 1; double value = 2;
#               int64 timestamp = 3; }


def _varint(n):
    n &= (1 << 64) - 1                  # int64 as protobuf writes it
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(field, payload):
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _field_double(field, value):
    return _varint(field << 3 | 1) + struct.pack("<d", value)


def _field_int64(field, value):
    return _varint(field << 3 | 0) + _varint(value)


def _label(name, value):
    return (_field_bytes(1, name.encode("utf-8"))
            + _field_bytes(2, value.encode("utf-8")))


def encode_series(labels, value, ts_ms, exemplar=None):
    """one TimeSeries with one sample; labels is a dict (sorted here, as
    the remote-write specification requires); exemplar is
    (labels dict, value, ts_ms) or None"""
    out = b"".join(_field_bytes(1, _label(k, labels[k]))
                   for k in sorted(labels))
    out += _field_bytes(2, _field_double(1, value) + _field_int64(2, ts_ms))
    if exemplar is not None:
        elabels, evalue, ets = exemplar
        ex = b"".join(_field_bytes(1, _label(k, elabels[k]))
                      for k in sorted(elabels))
        ex += _field_double(2, evalue) + _field_int64(3, ets)
        out += _field_bytes(3, ex)
    return out


def encode_write_request(series):
    return b"".join(_field_bytes(1, s) for s in series)


# ------------------------------------------------------------ simulation

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PATHS = (("GET", "/"), ("GET", "/products"), ("POST", "/cart"),
         ("POST", "/checkout"))


def _fmt(v):
    """a bucket bound as Prometheus' client libraries print it"""
    return "+Inf" if v == float("inf") else "%g" % v


class Shop:
    """counters and a histogram that only grow, as a scraped target's do"""

    def __init__(self, job="demo-shop", instance="shop-1"):
        self.base = {"job": job, "instance": instance}
        self.requests = {}              # (method, path, code) -> count
        self.buckets = [0] * (len(BUCKETS) + 1)   # cumulative at render
        self.sum = 0.0
        self.count = 0
        self.exemplars = {}             # bucket index -> (labels, value, ts)
        self.queue = 0.0

    def tick(self, now_ms, rnd):
        for _ in range(rnd.randint(20, 60)):
            method, path = rnd.choice(PATHS)
            slow = path == "/checkout"
            latency = rnd.lognormvariate(-3.0 if not slow else -1.5, 0.9)
            code = "500" if rnd.random() < (0.02 if not slow else 0.06) \
                else "200"
            key = (method, path, code)
            self.requests[key] = self.requests.get(key, 0) + 1
            i = next((k for k, b in enumerate(BUCKETS) if latency <= b),
                     len(BUCKETS))
            self.buckets[i] += 1
            self.sum += latency
            self.count += 1
            # like a client library: the bucket's newest observation that
            # was traced becomes its exemplar
            if rnd.random() < 0.2:
                self.exemplars[i] = (
                    {"trace_id": "%032x" % rnd.getrandbits(128),
                     "span_id": "%016x" % rnd.getrandbits(64)},
                    latency, now_ms - rnd.randint(0, 999))
        self.queue = max(0.0, self.queue + rnd.uniform(-3, 3))

    def series(self, now_ms):
        out = []
        for (method, path, code), n in sorted(self.requests.items()):
            labels = dict(self.base, __name__="demo_http_requests_total",
                          method=method, path=path, code=code)
            out.append(encode_series(labels, float(n), now_ms))
        cum = 0
        for i, le in enumerate(BUCKETS + (float("inf"),)):
            cum += self.buckets[i]
            labels = dict(self.base,
                          __name__="demo_http_request_duration_seconds_bucket",
                          le=_fmt(le))
            ex = self.exemplars.pop(i, None)
            out.append(encode_series(labels, float(cum), now_ms, ex))
        out.append(encode_series(
            dict(self.base, __name__="demo_http_request_duration_seconds_sum"),
            self.sum, now_ms))
        out.append(encode_series(
            dict(self.base,
                 __name__="demo_http_request_duration_seconds_count"),
            float(self.count), now_ms))
        out.append(encode_series(
            dict(self.base, __name__="demo_queue_depth"), self.queue, now_ms))
        return out


def json_sample(now_ms, rnd):
    """one sample as prometheus-kafka-adapter serializes it"""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_ms // 1000)) + \
        ".%03dZ" % (now_ms % 1000)
    labels = {"__name__": "demo_room_temperature_celsius", "job": "demo-iot",
              "room": "lab"}
    return json.dumps({"timestamp": ts,
                       "value": "%.2f" % (21.0 + rnd.uniform(-0.5, 0.5)),
                       "name": labels["__name__"], "labels": labels},
                      separators=(",", ":"))


# ------------------------------------------------------------ kcat

def kcat_produce(kcat, brokers, topic, payload, key, headers, stdin=False):
    """one message (payload bytes) or, with stdin=True, newline-separated
    messages; True if kcat delivered them"""
    argv = [kcat, "-P", "-b", brokers, "-t", topic, "-k", key,
            "-X", "message.timeout.ms=10000"]
    for h in headers:
        argv += ["-H", h]
    try:
        if stdin:
            r = subprocess.run(argv, input=payload, capture_output=True,
                               timeout=60)
        else:
            with tempfile.NamedTemporaryFile(prefix="wr-", suffix=".pb") as f:
                f.write(payload)
                f.flush()
                r = subprocess.run(argv + [f.name], capture_output=True,
                                   timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        print("kcat -> %s failed: %s" % (topic, e), flush=True)
        return False
    err = r.stderr.decode("utf-8", "replace").strip()
    if r.returncode != 0 or "Delivery failed" in err or "ERROR" in err:
        print("kcat -> %s failed (exit %d): %s" % (topic, r.returncode,
                                                   err[-400:]), flush=True)
        return False
    return True


def main():
    brokers = os.environ.get("KAFKA_BROKERS", "kafka:19092")
    topic = os.environ.get("TOPIC", "prom-metrics")
    json_topic = os.environ.get("JSON_TOPIC", "prom-json")
    interval = float(os.environ.get("INTERVAL", "5"))
    count = int(os.environ.get("COUNT", "0"))
    tenant = os.environ.get("TENANT", "")
    kcat = os.environ.get("KCAT", "kcat")
    headers = ["X-Scope-OrgID=" + tenant] if tenant else []

    rnd = random.Random()
    shop = Shop()
    n = 0
    print("producing to %s: %s every %gs%s" % (
        brokers, topic, interval,
        (", " + json_topic) if json_topic else ""), flush=True)
    while count == 0 or n < count:
        t0 = time.time()
        now_ms = int(t0 * 1000)
        shop.tick(now_ms, rnd)
        series = shop.series(now_ms)
        body = encode_write_request(series)
        ok = kcat_produce(kcat, brokers, topic, body, "demo-shop", headers)
        if json_topic:
            ok = kcat_produce(kcat, brokers, json_topic,
                              json_sample(now_ms, rnd).encode() + b"\n",
                              "demo-iot", headers, stdin=True) and ok
        n += 1
        print("%s batch %d: %d series, %d bytes%s" % (
            time.strftime("%H:%M:%S"), n, len(series), len(body),
            "" if ok else " (not delivered)"), flush=True)
        if count == 0 or n < count:
            time.sleep(max(0.0, interval - (time.time() - t0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
