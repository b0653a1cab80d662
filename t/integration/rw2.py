"""Remote write by hand: a protobuf wire encoder for remote write 2.0
(io.prometheus.write.v2.Request) and for remote write 1.0 messages that the
generated protobuf classes refuse to build (invalid UTF-8 in labels,
exemplar labels or metadata).  No generated code: every field is written
explicitly, so malformed requests are as easy as valid ones.

Remote write 2.0 (prometheus/prompb/io/prometheus/write/v2/types.proto):

    Request    { 4: repeated string symbols; 5: repeated TimeSeries }
    TimeSeries { 1: packed uint32 labels_refs; 2: Sample; 3: Histogram;
                 4: Exemplar; 5: Metadata; 6: int64 created_timestamp }
    Sample     { 1: double value; 2: int64 timestamp }
    Exemplar   { 1: packed uint32 labels_refs; 2: double value; 3: int64 timestamp }
    Metadata   { 1: MetricType type; 3: uint32 help_ref; 4: uint32 unit_ref }

symbols[0] must be "".  Label refs come in (name, value) pairs.

    b = V2Builder()
    b.series({"__name__": "up", "job": "x"}, samples=[(1.0, ts)])
    r = rw2.post(url, b.encode())    # snappy, v2 Content-Type and version header
"""

import struct

import requests
import snappy

V2_CONTENT_TYPE = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
V1_CONTENT_TYPE = "application/x-protobuf;proto=prometheus.WriteRequest"

V2_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": V2_CONTENT_TYPE,
    "X-Prometheus-Remote-Write-Version": "2.0.0",
    "User-Agent": "promgate-integration-tests/1",
}

# the response headers a 2.0 receiver sets
WRITTEN_HEADERS = ("X-Prometheus-Remote-Write-Samples-Written",
                   "X-Prometheus-Remote-Write-Histograms-Written",
                   "X-Prometheus-Remote-Write-Exemplars-Written")

# io.prometheus.write.v2.Metadata.MetricType
METRIC_TYPES = {"UNSPECIFIED": 0, "COUNTER": 1, "GAUGE": 2, "HISTOGRAM": 3,
                "GAUGEHISTOGRAM": 4, "SUMMARY": 5, "INFO": 6, "STATESET": 7}


# ------------------------------------------------------------- wire format

def varint(n):
    n &= 0xFFFFFFFFFFFFFFFF          # negative int64: two's complement, 10 bytes
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(field, wire_type):
    return varint((field << 3) | wire_type)


def f_varint(field, n):
    return tag(field, 0) + varint(n)


def f_double(field, v):
    return tag(field, 1) + struct.pack("<d", v)


def f_bytes(field, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return tag(field, 2) + varint(len(payload)) + payload


def f_packed(field, numbers):
    return f_bytes(field, b"".join(varint(n) for n in numbers))


def b(s):
    return s.encode() if isinstance(s, str) else s


# ------------------------------------------------- remote write 1.0, by hand

def v1_label(name, value):
    return f_bytes(1, b(name)) + f_bytes(2, b(value))


def v1_series(labels, samples=(), exemplars=()):
    """labels: [(name, value)] verbatim (str or bytes; no sorting, no
    __name__ added); samples: [(value, ts_ms)]; exemplars:
    [([(name, value)], value, ts_ms)]"""
    out = b"".join(f_bytes(1, v1_label(n, v)) for n, v in labels)
    for v, t in samples:
        out += f_bytes(2, f_double(1, v) + f_varint(2, t))
    for elabels, v, t in exemplars:
        ex = b"".join(f_bytes(1, v1_label(n, lv)) for n, lv in elabels)
        out += f_bytes(3, ex + f_double(2, v) + f_varint(3, t))
    return out


def v1_metadata(family, mtype=1, help_=b"help", unit=b""):
    """MetricMetadata{1 type, 2 metric_family_name, 4 help, 5 unit}"""
    out = f_varint(1, mtype) if mtype else b""
    out += f_bytes(2, b(family)) + f_bytes(4, b(help_))
    if unit:
        out += f_bytes(5, b(unit))
    return out


def v1_request(series_payloads=(), metadata_payloads=()):
    return (b"".join(f_bytes(1, s) for s in series_payloads)
            + b"".join(f_bytes(3, m) for m in metadata_payloads))


# ------------------------------------------------- remote write 2.0

def v2_series(labels_refs, samples=(), exemplars=(), metadata=None,
              created_timestamp=None, histograms=()):
    """labels_refs: [int] (name, value pairs of symbol indexes); samples:
    [(value, ts_ms)]; exemplars: [(refs, value, ts_ms)]; metadata:
    (type, help_ref, unit_ref) or None; histograms: encoded v2 Histogram
    payloads"""
    out = f_packed(1, labels_refs) if labels_refs else b""
    for v, t in samples:
        out += f_bytes(2, f_double(1, v) + f_varint(2, t))
    for h in histograms:
        out += f_bytes(3, h)
    for refs, v, t in exemplars:
        ex = (f_packed(1, refs) if refs else b"") + f_double(2, v) + f_varint(3, t)
        out += f_bytes(4, ex)
    if metadata is not None:
        mtype, help_ref, unit_ref = metadata
        md = b""
        if mtype:
            md += f_varint(1, mtype)
        if help_ref:
            md += f_varint(3, help_ref)
        if unit_ref:
            md += f_varint(4, unit_ref)
        out += f_bytes(5, md)
    if created_timestamp is not None:
        out += f_varint(6, created_timestamp)
    return out


def v2_request(symbols, series_payloads):
    """symbols: [str|bytes] verbatim (symbols[0] should be "")"""
    return (b"".join(f_bytes(4, b(s)) for s in symbols)
            + b"".join(f_bytes(5, s) for s in series_payloads))


class V2Builder:
    """Interns symbols ("" first) and builds a v2 Request.

        bl = V2Builder()
        bl.series({"__name__": "m", "a": "1"}, samples=[(1.0, ts)],
                  exemplars=[({"trace_id": "t"}, 1.0, ts)],
                  metadata=("COUNTER", "help", "unit"))
        body = bl.encode()

    Labels are written in the order given (dict order or a list of pairs);
    raw=True in series() takes labels_refs verbatim instead."""

    def __init__(self, symbols=None):
        self.symbols = [b(s) for s in symbols] if symbols is not None else [b""]
        self.index = {}
        for i, s in enumerate(self.symbols):
            self.index.setdefault(s, i)
        self.payloads = []

    def ref(self, s):
        s = b(s)
        if s not in self.index:
            self.index[s] = len(self.symbols)
            self.symbols.append(s)
        return self.index[s]

    def refs(self, labels):
        pairs = labels.items() if isinstance(labels, dict) else labels
        out = []
        for n, v in pairs:
            out += [self.ref(n), self.ref(v)]
        return out

    def series(self, labels, samples=(), exemplars=(), metadata=None,
               created_timestamp=None, raw=False, histograms=()):
        refs = list(labels) if raw else self.refs(labels)
        exs = [(self.refs(el), v, t) for el, v, t in exemplars]
        md = None
        if metadata is not None:
            mtype, help_, unit = metadata
            md = (METRIC_TYPES.get(mtype, mtype) if isinstance(mtype, str) else mtype,
                  self.ref(help_) if help_ else 0,
                  self.ref(unit) if unit else 0)
        self.payloads.append(v2_series(refs, samples, exs, md,
                                       created_timestamp, histograms))
        return self

    def encode(self):
        return v2_request(self.symbols, self.payloads)


# ------------------------------------------------------------------- decode

def parse_fields(buf):
    """[(field, wire_type, value)] of one message level: value is an int
    for varint, bytes for length-delimited, raw 8/4 bytes for fixed"""
    out, i = [], 0
    while i < len(buf):
        key, i = _uvarint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _uvarint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = _uvarint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        out.append((field, wt, v))
    return out


def _uvarint(buf, i):
    n = shift = 0
    while True:
        c = buf[i]
        i += 1
        n |= (c & 0x7F) << shift
        if not c & 0x80:
            return n, i
        shift += 7


def unpack_varints(buf):
    out, i = [], 0
    while i < len(buf):
        n, i = _uvarint(buf, i)
        out.append(n)
    return out


def decode_v2(raw):
    """a v2 Request as plain data: {"symbols": [...], "timeseries":
    [{"labels": [(n, v)], "samples": [(v, t)], "exemplars": [...],
    "metadata": (type, help, unit) | None, "created_timestamp": int}]}"""
    syms, series = [], []
    for f, _, v in parse_fields(raw):
        if f == 4:
            syms.append(v.decode("utf-8", "surrogateescape"))
        elif f == 5:
            series.append(v)
    out = []
    for s in series:
        ts = {"labels": [], "samples": [], "exemplars": [], "histograms": [],
              "metadata": None, "created_timestamp": 0}
        for f, wt, v in parse_fields(s):
            if f == 1:
                refs = unpack_varints(v) if wt == 2 else [v]
                ts["labels"] += [(syms[refs[k]], syms[refs[k + 1]])
                                 for k in range(0, len(refs) - 1, 2)]
            elif f == 2:
                val, t = 0.0, 0
                for ff, _, vv in parse_fields(v):
                    if ff == 1:
                        val = struct.unpack("<d", vv)[0]
                    elif ff == 2:
                        t = vv - (1 << 64) if vv >= 1 << 63 else vv
                ts["samples"].append((val, t))
            elif f == 3:
                ts["histograms"].append(v)
            elif f == 4:
                refs, val, t = [], 0.0, 0
                for ff, wt2, vv in parse_fields(v):
                    if ff == 1:
                        refs += unpack_varints(vv) if wt2 == 2 else [vv]
                    elif ff == 2:
                        val = struct.unpack("<d", vv)[0]
                    elif ff == 3:
                        t = vv
                ts["exemplars"].append(([(syms[refs[k]], syms[refs[k + 1]])
                                         for k in range(0, len(refs) - 1, 2)], val, t))
            elif f == 5:
                mt = hr = ur = 0
                for ff, _, vv in parse_fields(v):
                    if ff == 1:
                        mt = vv
                    elif ff == 3:
                        hr = vv
                    elif ff == 4:
                        ur = vv
                ts["metadata"] = (mt, syms[hr], syms[ur])
            elif f == 6:
                ts["created_timestamp"] = v
        out.append(ts)
    return {"symbols": syms, "timeseries": out}


# ---------------------------------------------------------------------- HTTP

def post(url, raw, headers=None, timeout=30, session=None):
    """POST a v2 Request (uncompressed protobuf; snappy applied here)"""
    h = dict(V2_HEADERS)
    h.update(headers or {})
    return (session or requests).post(url, data=snappy.compress(raw),
                                      headers=h, timeout=timeout)


def written(resp):
    """{"samples": n, "histograms": n, "exemplars": n} from a 2.0 answer's
    X-Prometheus-Remote-Write-*-Written headers (None where absent)"""
    out = {}
    for h in WRITTEN_HEADERS:
        key = h.split("-")[-2].lower()
        v = resp.headers.get(h)
        out[key] = int(v) if v is not None and v.isdigit() else v
    return out
