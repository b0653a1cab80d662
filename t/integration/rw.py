"""Remote-write wire helpers: protobuf messages, snappy, raw (hand-encoded)
protobuf for malformed requests, and the HTTP POST a sender makes.

The Python protobuf modules are generated from the repository's proto/ at
session start (conftest.py calls load_protos()); pb() returns them.
"""

import importlib
import math
import os
import struct
import subprocess
import sys
import time

import requests
import snappy

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO_DIR = os.path.join(REPO_ROOT, "proto")

STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]

RW_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "promgate-integration-tests/1",
}

_pb = {}


def load_protos(outdir):
    """protoc --python_out=outdir -I<repo>/proto types.proto remote.proto"""
    os.makedirs(outdir, exist_ok=True)
    subprocess.run(
        ["protoc", "--python_out=" + outdir, "-I" + PROTO_DIR,
         "types.proto", "remote.proto"],
        check=True, timeout=60)
    if outdir not in sys.path:
        sys.path.insert(0, outdir)
    _pb["types"] = importlib.import_module("types_pb2")
    _pb["remote"] = importlib.import_module("remote_pb2")
    return _pb["types"], _pb["remote"]


def pb():
    if not _pb:
        raise RuntimeError("load_protos() was not called")
    return _pb["types"], _pb["remote"]


def now_ms():
    return int(time.time() * 1000)


def uniq(prefix="pgt"):
    """a metric-name-safe unique suffix"""
    return "%s_%d_%s" % (prefix, os.getpid(), os.urandom(4).hex())


# ------------------------------------------------------------ message builders

def series(name, labels=None, samples=(), exemplars=(), histograms=(),
           sort=True, raw_labels=None):
    """TimeSeries.  labels: dict (without __name__); samples: [(value, ts_ms)];
    exemplars: [(labels_dict, value, ts_ms)]; histograms: Histogram messages.
    raw_labels: list of (name, value) used verbatim (no sorting, no __name__
    added) for malformed cases."""
    types, _ = pb()
    ts = types.TimeSeries()
    if raw_labels is not None:
        pairs = list(raw_labels)
    else:
        pairs = [("__name__", name)] if name is not None else []
        pairs += list((labels or {}).items())
        if sort:
            pairs.sort(key=lambda kv: kv[0].encode())
    for k, v in pairs:
        ts.labels.add(name=k, value=v)
    for v, t in samples:
        ts.samples.add(value=v, timestamp=t)
    for elabels, v, t in exemplars:
        ex = ts.exemplars.add(value=v, timestamp=t)
        for k, lv in sorted(elabels.items()):
            ex.labels.add(name=k, value=lv)
    for h in histograms:
        ts.histograms.append(h)
    return ts


def native_histogram(ts_ms, count=6, zero_count=1, total=12.5):
    """an integer native histogram: schema 0, buckets (0.5,1] (1,2] (2,4]
    holding 2, 1, 2 observations, plus `zero_count` in the zero bucket"""
    types, _ = pb()
    h = types.Histogram(count_int=count, sum=total, schema=0,
                        zero_threshold=1e-128, zero_count_int=zero_count,
                        timestamp=ts_ms)
    h.positive_spans.add(offset=0, length=3)
    h.positive_deltas.extend([2, -1, 1])     # absolute 2, 1, 2
    return h


def metadata(family, mtype="COUNTER", help_="help text", unit=""):
    types, _ = pb()
    return types.MetricMetadata(
        type=types.MetricMetadata.MetricType.Value(mtype),
        metric_family_name=family, help=help_, unit=unit)


def write_request(series_list=(), metadata_list=()):
    _, remote = pb()
    wr = remote.WriteRequest()
    wr.timeseries.extend(series_list)
    wr.metadata.extend(metadata_list)
    return wr.SerializeToString()


def compress(raw):
    """snappy block format, as remote write uses it"""
    return snappy.compress(raw)


def decode_request(body):
    _, remote = pb()
    wr = remote.WriteRequest()
    wr.ParseFromString(snappy.uncompress(body))
    return wr


# ---------------------------------------------- raw protobuf (malformed input)

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_len(field, payload):
    return varint((field << 3) | 2) + varint(len(payload)) + payload


def raw_label(name, value):
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return pb_len(1, name) + pb_len(2, value)


def raw_sample(value, ts):
    return (varint((1 << 3) | 1) + struct.pack("<d", value)
            + varint(2 << 3) + varint(ts & 0xFFFFFFFFFFFFFFFF))


def raw_series(labels, samples=()):
    """labels: list of (name, value), str or bytes, verbatim"""
    out = b"".join(pb_len(1, raw_label(n, v)) for n, v in labels)
    out += b"".join(pb_len(2, raw_sample(v, t)) for v, t in samples)
    return out


def raw_write_request(series_payloads):
    return b"".join(pb_len(1, s) for s in series_payloads)


# ---------------------------------------------------------------------- HTTP

def post(url, body, headers=None, drop=(), timeout=30, session=None):
    """POST a remote-write body; headers override RW_HEADERS, names in drop
    are removed."""
    h = dict(RW_HEADERS)
    h.update(headers or {})
    for k in drop:
        h.pop(k, None)
    s = session or requests
    return s.post(url, data=body, headers=h, timeout=timeout)


def write(url, series_list=(), metadata_list=(), **kw):
    return post(url, compress(write_request(series_list, metadata_list)), **kw)


def is_stale_nan(v):
    return math.isnan(v) and struct.unpack("<Q", struct.pack("<d", v))[0] == STALE_NAN_BITS
