"""nginx.conf.example, as shipped, with only ports, the module path and
absolute paths substituted: nginx -t accepts it and it works end to end in
front of real Prometheus and VictoriaMetrics."""

import os
import re

import pytest
import requests

import rw
from fakeup import free_port
from procs import poll_samples
from promtext import scrape

EXAMPLE = os.path.join(rw.REPO_ROOT, "nginx.conf.example")

TOP_LEVEL_OWNED = ("daemon", "master_process", "pid", "error_log", "user",
                   "worker_processes")


def adapt_example(text, workdir, module, gw_port, prom_port, vm_port,
                  sockdir):
    for addr in ("127.0.0.1:9201", "127.0.0.1:9090", "127.0.0.1:8428"):
        assert addr in text, "nginx.conf.example no longer mentions %s" % addr
    text = text.replace("127.0.0.1:9201", "127.0.0.1:%d" % gw_port)
    text = text.replace("127.0.0.1:9090", "127.0.0.1:%d" % prom_port)
    text = text.replace("127.0.0.1:8428", "127.0.0.1:%d" % vm_port)
    # no Kafka broker here: a port nothing listens on
    text = text.replace("127.0.0.1:9092", "127.0.0.1:%d" % free_port())

    # absolute paths (WAL dirs, logs, ...) move under the test dir; unix
    # sockets into a short directory (sun_path holds 108 bytes, and the
    # test dir's path depends on where the checkout is)
    def path(m):
        if m.group(0).endswith(".sock"):
            return os.path.join(sockdir, os.path.basename(m.group(0)))
        p = os.path.join(workdir, "root" + m.group(0))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p
    text = re.sub(r"(?<![\w.:/])/(?:var|run|tmp|srv|opt)/[^\s;'\"]+", path, text)

    n = 0

    def load(m):
        nonlocal n
        n += 1
        return "load_module %s;" % module
    text = re.sub(r"(?m)^\s*load_module\s+\S*ngx_http_promgate_module\.so\s*;", load, text)
    assert n == 1, "expected exactly one load_module line for the module"

    # main-context directives the test owns
    text = re.sub(r"(?m)^(%s)\b[^;]*;" % "|".join(TOP_LEVEL_OWNED), r"# (test) \g<0>", text)
    head = ["daemon off;", "master_process on;", "worker_processes 2;",
            "pid %s/nginx.pid;" % workdir, "error_log %s/error.log info;" % workdir]
    if os.geteuid() == 0:
        head.append("user root root;")
    lines = text.splitlines()
    # after load_module (it must stay first)
    i = next(k for k, l in enumerate(lines) if l.strip().startswith("load_module"))
    lines[i + 1:i + 1] = head
    if "include mime.types" in text and os.path.exists("/etc/nginx/mime.types"):
        with open("/etc/nginx/mime.types") as src, \
                open(os.path.join(workdir, "mime.types"), "w") as dst:
            dst.write(src.read())
    return "\n".join(lines) + "\n"


@pytest.fixture
def example(sockdir, make_nginx, module_path, prom, vm, tmp_path):
    if not os.path.exists(EXAMPLE):
        pytest.fail("%s is missing" % EXAMPLE)
    gw_port = free_port()
    n = make_nginx(start=False, workers=2)
    with open(EXAMPLE) as f:
        n.write_raw(adapt_example(f.read(), n.dir, module_path, gw_port,
                                  prom.port, vm.port, sockdir))
    assert n.ports == [gw_port], n.ports
    return n


def test_example_conf_passes_nginx_t(example):
    rc, out = example.test_config()
    assert rc == 0, out
    assert "test is successful" in out, out
    assert not re.search(r"\[(alert|emerg|crit|warn)\]", out), out


def test_example_conf_end_to_end(example, prom, vm):
    example.start()
    url = example.url("/api/v1/write")
    name = rw.uniq("example")
    t = rw.now_ms() - 5000
    r = rw.write(url, [rw.series(name, {"job": "example", "i": str(i)},
                                 [(float(i), t), (float(i) + 0.5, t + 1000)],
                                 exemplars=[({"trace_id": "ex%d" % i}, 1.0, t + 1000)])
                       for i in range(3)])
    assert r.status_code == 204, r.text
    want = {(("__name__", name), ("i", str(i)), ("job", "example")):
            [(t, float(i)), (t + 1000, float(i) + 0.5)] for i in range(3)}
    got = {tuple(sorted(k)): v for k, v in prom.samples(name).items()}
    assert got == want
    vgot = poll_samples(vm, name, 3, min_samples=6)
    assert {tuple(sorted(k)): v for k, v in vgot.items()} == want
    ex = prom.exemplars(name, t / 1000 - 60, t / 1000 + 60)
    assert sorted(x["labels"]["trace_id"] for s in ex for x in s["exemplars"]) == \
        ["ex0", "ex1", "ex2"]

    # the read API goes to VictoriaMetrics, GET and POST
    q = requests.get(example.url("/api/v1/query"),
                     params={"query": "sum(%s)" % name, "nocache": "1"}, timeout=10)
    assert q.status_code == 200, q.text
    assert float(q.json()["data"]["result"][0]["value"][1]) == 0.5 + 1.5 + 2.5
    q = requests.post(example.url("/api/v1/series"),
                      data={"match[]": name}, timeout=10)
    assert q.status_code == 200, q.text
    assert len(q.json()["data"]) == 3, q.text
    # the storage's delete and import endpoints are not reachable
    for path in ("/api/v1/admin/tsdb/delete_series", "/api/v1/import",
                 "/api/v1/import/prometheus", "/api/v1/export"):
        r = requests.post(example.url(path), params={"match[]": name},
                          data=b"x 1", timeout=10)
        assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert poll_samples(vm, name, 3, min_samples=6)

    m = scrape(example.url("/metrics"))
    assert m.sum("promgate_write_requests_total", code="204") == 1
    assert m.sum("promgate_received_samples_total") == 6
    assert m.sum("promgate_received_exemplars_total") == 3


def test_example_conf_keeps_the_senders_credentials(sockdir, make_nginx,
                                                    make_fake, module_path):
    """the sender's Authorization header reaches no storage"""
    prom_up, vm_up = make_fake(), make_fake()
    gw_port = free_port()
    n = make_nginx(start=False, workers=1)
    with open(EXAMPLE) as f:
        n.write_raw(adapt_example(f.read(), n.dir, module_path, gw_port,
                                  prom_up.port, vm_up.port, sockdir))
    n.start()
    r = rw.write(n.url("/api/v1/write"),
                 [rw.series(rw.uniq("auth"), {}, [(1.0, rw.now_ms())])],
                 headers={"Authorization": "Bearer sender-secret"})
    assert r.status_code == 204, r.text
    posts = prom_up.posts() + vm_up.posts()
    assert len(posts) == 2
    assert [p.headers.get("Authorization") for p in posts] == [None, None]


def test_example_conf_takes_a_large_batch(example, prom, vm):
    """vmagent sends blocks of up to 8 MB; the example's 32m limits must hold
    for the forwarded subrequests too (1.1 MB here)"""
    from test_storage import big_request, check_big
    example.start()
    name = rw.uniq("exbig")
    body, nseries, total = big_request(name)
    r = rw.post(example.url("/api/v1/write"), body, timeout=60)
    assert r.status_code == 204, r.text
    check_big(prom, vm, name, nseries, total)
