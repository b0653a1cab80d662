"""A read target's answer larger than its location's proxy buffers: nginx's
proxy puts it in a temporary file, the forwarder's in-memory subrequest
must still receive all of it -- with the file read inline and with
`aio threads` (the file read in a thread, ending after the upstream did).

A real Prometheus holds ~290,000 samples (a several-MB ReadResponse); the
target locations have 2 x 4k proxy buffers.  What promgate answers equals
what Prometheus answers directly, sample for sample.
"""

import os
import struct

import pytest

import rw
from fakeup import FakeUpstream, Resp, free_port
from test_remote_read import STREAMED, post_read, read, read_request

SERIES, SAMPLES = 120, 2400     # 1 s apart: 40 min


@pytest.fixture
def big(make_prometheus):
    prom = make_prometheus("prom")
    name = rw.uniq("spill")
    t0 = rw.now_ms() - 45 * 60 * 1000
    t0 -= t0 % 1000
    for first in range(0, SERIES, 10):
        batch = []
        for i in range(first, first + 10):
            raw = os.urandom(8 * SAMPLES)
            vals = struct.unpack("<%dd" % SAMPLES, raw)
            batch.append(rw.series(
                name, {"job": "spill", "instance": "i%03d" % i},
                [((v if v == v else 1.0), t0 + k * 1000)
                 for k, v in enumerate(vals)]))
        r = rw.write(prom.write_url, batch)
        assert r.status_code == 204, r.text
    return prom, (t0 - 1000, t0 + SAMPLES * 1000, {"__name__": name})


def spill_conf(port, prom_hostport):
    loc = """
        location /_rr/{name} {{
            internal;
            proxy_pass http://up_prom/api/v1/read;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            proxy_buffer_size 4k;
            proxy_buffers 2 4k;
            proxy_busy_buffers_size 4k;
            subrequest_output_buffer_size 32m;
            {extra}
        }}"""
    return """
    upstream up_prom {{ server {prom}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        location = /plain {{ promgate_remote_read;
                             promgate_read_forward /_rr/plain; }}
        location = /aio {{ promgate_remote_read;
                           promgate_read_forward /_rr/aio; }}
        location = /merge {{ promgate_remote_read;
                             promgate_read_forward /_rr/plain;
                             promgate_read_forward /_rr/aio; }}
{plain}
{aio}
    }}
""".format(prom=prom_hostport, port=port,
           plain=loc.format(name="plain", extra=""),
           aio=loc.format(name="aio", extra="aio threads;"))


def test_answer_spilled_to_a_temporary_file_arrives_whole(big, make_nginx):
    prom, query = big
    n = make_nginx(spill_conf(free_port(), prom.url.split("//")[1]),
                   workers=1)

    want = read(prom.url + "/api/v1/read", [query])[0]
    assert len(want) == SERIES
    assert sum(len(v) for v in want.values()) == SERIES * SAMPLES

    for path in ("/plain", "/aio", "/merge"):
        for _ in range(3):
            got = read(n.url(path), [query])[0]
            assert len(got) == len(want), path
            assert got == want, path

    # the path under test was taken: nginx spilled the answers to files
    with open(n.error_log) as f:
        log = f.read()
    for name in ("plain", "aio"):
        assert ('an upstream response is buffered to a temporary file'
                in log and 'subrequest: "/_rr/%s"' % name in log), name


def test_answer_broken_off_is_not_passed_as_whole(make_prometheus, make_nginx):
    """a read target that closes its connection inside its answer's body:
    a stream passed through as it is would end early at a frame boundary
    and look complete to the client; promgate fails the target (502,
    retried, then the read's 503) and passes the whole answer through"""
    prom = make_prometheus("prom")
    name = rw.uniq("cut")
    t0 = rw.now_ms() - 10 * 60 * 1000
    r = rw.write(prom.write_url, [
        rw.series(name, {"job": "cut", "instance": "i%d" % i},
                  [(float(k), t0 + k * 1000) for k in range(300)])
        for i in range(20)])
    assert r.status_code == 204, r.text
    raw = read_request([(t0 - 1000, t0 + 300 * 1000, {"__name__": name})],
                       accepted=[STREAMED])
    direct = post_read(prom.url + "/api/v1/read", raw)
    assert direct.status_code == 200 and len(direct.content) > 4000
    head = {"Content-Type": direct.headers["Content-Type"]}
    whole = FakeUpstream(default=Resp(200, head, direct.content)).start()
    cut = FakeUpstream(default=Resp(200, head, direct.content,
                                    cut=len(direct.content) // 2)).start()
    try:
        port = free_port()
        locs = "".join("""
        location = /{0} {{ promgate_remote_read;
                          promgate_read_forward /_rr/{0}; }}
        location /_rr/{0} {{ internal; proxy_pass http://127.0.0.1:{1};
                          subrequest_output_buffer_size 1m; }}
""".format(k, f.port) for k, f in (("whole", whole), ("cut", cut)))
        n = make_nginx("""
    server {{
        listen 127.0.0.1:{port};
        promgate_retries 1;
        promgate_retry_backoff 10ms 20ms;
{locs}
    }}
""".format(port=port, locs=locs), workers=1)

        r = post_read(n.url("/whole"), raw)
        assert r.status_code == 200 and r.content == direct.content

        r = post_read(n.url("/cut"), raw)
        assert r.status_code == 503, (r.status_code, len(r.content))
        assert "/_rr/cut" in r.text and "502" in r.text, r.text
        assert len(cut.requests) == 2       # retried once
        with open(n.error_log) as f:
            assert 'answer 200 of forward target "/_rr/cut" broke off' \
                in f.read()
    finally:
        whole.stop()
        cut.stop()
