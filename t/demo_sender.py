#!/usr/bin/python3
"""The demo's sender: remote-writes a few series with exemplars every 2 s,
as Prometheus would (snappy + protobuf), until it is stopped."""

import os
import random
import subprocess
import sys
import tempfile
import time

import requests
import snappy

top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
gen = tempfile.mkdtemp(prefix="promgate-demo-pb-")
subprocess.check_call(["protoc", "--python_out=" + gen, "-I" + top + "/proto",
                       "types.proto", "remote.proto"])
sys.path.insert(0, gen)
import remote_pb2  # noqa: E402

url = sys.argv[1]
counts = {}
session = requests.Session()

while True:
    now = int(time.time() * 1000)
    wr = remote_pb2.WriteRequest()
    for path in ("/", "/api", "/login"):
        counts[path] = counts.get(path, 0) + random.randint(1, 20)
        for name, value, extra in (
                ("promgate_demo_requests_total", counts[path], {}),
                ("promgate_demo_request_duration_seconds_bucket",
                 counts[path] // 2, {"le": "0.25"})):
            ts = wr.timeseries.add()
            labels = {"__name__": name, "job": "demo", "path": path}
            labels.update(extra)
            for k in sorted(labels):
                lab = ts.labels.add()
                lab.name, lab.value = k, labels[k]
            s = ts.samples.add()
            s.value, s.timestamp = value, now
            if extra:
                ex = ts.exemplars.add()
                ex.value, ex.timestamp = random.random() / 4, now
                lab = ex.labels.add()
                lab.name, lab.value = "trace_id", "%032x" % random.getrandbits(128)
    body = snappy.compress(wr.SerializeToString())
    try:
        r = session.post(url, data=body, timeout=15, headers={
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        print(time.strftime("%H:%M:%S"), r.status_code, r.text.strip(),
              flush=True)
    except requests.RequestException as e:
        print(time.strftime("%H:%M:%S"), "error", e, flush=True)
    time.sleep(2)
