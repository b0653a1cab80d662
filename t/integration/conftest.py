"""Fixtures for promgate's integration tests: real nginx with the module,
real Prometheus and VictoriaMetrics (shared per session), scripted fake
upstreams.  Run:

    PROMGATE_MODULE=/abs/build/ngx_http_promgate_module.so NGINX_BIN=/usr/sbin/nginx \
        /usr/bin/python3 -m pytest -q -p no:cacheprovider t/integration
"""

import os
import shutil
import subprocess

import pytest

import rw
from fakeup import FakeUpstream, free_port
from procs import Nginx, Prometheus, VictoriaMetrics

REPO_ROOT = rw.REPO_ROOT
DEFAULT_MODULE = os.path.join(REPO_ROOT, "build", "ngx_http_promgate_module.so")


# ------------------------------------------------------------------ session

@pytest.fixture(scope="session", autouse=True)
def protos(tmp_path_factory):
    return rw.load_protos(str(tmp_path_factory.mktemp("pb")))


@pytest.fixture(scope="session")
def nginx_bin():
    b = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
    if not os.access(b, os.X_OK):
        pytest.fail("NGINX_BIN %s is not executable" % b)
    return b


@pytest.fixture(scope="session")
def module_path(tmp_path_factory):
    """PROMGATE_MODULE (absolute); if unset, build/ in the repo.  A missing
    .so fails the module tests when PROMGATE_MODULE was given, and skips them
    otherwise (nothing built yet).

    The tests load a private copy: a rebuild that overwrites the .so in place
    while nginx has it mapped would crash the running workers."""
    m = os.environ.get("PROMGATE_MODULE")
    if m:
        m = os.path.abspath(m)
        if not os.path.isfile(m):
            pytest.fail("PROMGATE_MODULE=%s does not exist (make module)" % m)
    elif os.path.isfile(DEFAULT_MODULE):
        m = DEFAULT_MODULE
    else:
        pytest.skip("module not built: %s (make module)" % DEFAULT_MODULE)
    copy = os.path.join(str(tmp_path_factory.mktemp("module")), os.path.basename(m))
    shutil.copyfile(m, copy)
    return copy


@pytest.fixture(scope="session")
def prom(tmp_path_factory):
    p = Prometheus(str(tmp_path_factory.mktemp("prom-storage")))
    yield p
    p.stop()


@pytest.fixture(scope="session")
def vm(tmp_path_factory):
    v = VictoriaMetrics(str(tmp_path_factory.mktemp("vm-storage")))
    yield v
    v.stop()


# ------------------------------------------------------------- per test

@pytest.fixture
def make_nginx(nginx_bin, module_path, tmp_path):
    """make_nginx(http_body, start=True, **Nginx kwargs) -> Nginx.

    Teardown stops every instance and fails the test if its error log has
    [alert], [emerg] or [crit] lines."""
    made = []

    def make(http="", start=True, **kw):
        d = tmp_path / ("nginx%d" % len(made))
        n = Nginx(nginx_bin, module_path, str(d), http=http, **kw)
        made.append(n)
        if start:
            n.start()
        return n

    yield make
    problems = []
    for n in made:
        n.stop()
        problems += ["%s: %s" % (n.dir, l) for l in n.error_log_problems()]
    assert problems == [], "error.log has alert/emerg/crit lines:\n" + "\n".join(problems)


@pytest.fixture
def make_fake():
    """make_fake(script=[Resp...], default=Resp(204)) -> started FakeUpstream"""
    made = []

    def make(script=(), default=None):
        f = FakeUpstream(script, default).start()
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


# ------------------------------------------------------- config builders

def gateway_http(port, targets, ack="all", retries=3, backoff="50ms 500ms",
                 retry_timeout="10s", write_extra="", server_extra="",
                 http_extra="", target_extra="", keepalive=True,
                 max_inflight=64, max_decoded="64m", listen_extra="",
                 max_body="32m"):
    """http{} body: one server on 127.0.0.1:port with the write location
    forwarding to `targets`, a list of (name, base_url[, params]) — params
    are promgate_forward's (e.g. "proto=v2"); each becomes an
    upstream and an internal location /_rw/<name> proxying to
    base_url + /api/v1/write.  /metrics serves promgate_status."""
    ups, locs, fwd = [], [], []
    for t in targets:
        name, base = t[0], t[1]
        params = (" " + t[2]) if len(t) > 2 and t[2] else ""
        hostport = base.split("://", 1)[1].rstrip("/")
        ups.append("    upstream up_%s { server %s;%s }" % (
            name, hostport, " keepalive 16;" if keepalive else ""))
        locs.append(
            "        location /_rw/%s {\n"
            "            internal;\n"
            "            proxy_pass http://up_%s/api/v1/write;\n"
            "            proxy_http_version 1.1;\n"
            "            proxy_set_header Connection \"\";\n"
            "            subrequest_output_buffer_size 64k;\n"
            "            %s\n"
            "        }" % (name, name, target_extra))
        fwd.append("            promgate_forward /_rw/%s%s;" % (name, params))
    return """
{ups}
{http_extra}
    server {{
        listen 127.0.0.1:{port}{listen_extra};
        location = /api/v1/write {{
            promgate_remote_write;
{fwd}
            promgate_ack {ack};
            promgate_retries {retries};
            promgate_retry_backoff {backoff};
            promgate_retry_timeout {retry_timeout};
            promgate_max_inflight {max_inflight};
            promgate_max_decoded_size {max_decoded};
            client_max_body_size {max_body};
            {write_extra}
        }}
{locs}
        location = /metrics {{ promgate_status; }}
        {server_extra}
    }}
""".format(ups="\n".join(ups), http_extra=http_extra, port=port,
           listen_extra=listen_extra, fwd="\n".join(fwd), ack=ack,
           retries=retries, backoff=backoff, retry_timeout=retry_timeout,
           max_inflight=max_inflight, max_decoded=max_decoded, max_body=max_body,
           write_extra=write_extra, locs="\n".join(locs),
           server_extra=server_extra)


@pytest.fixture
def gateway(make_nginx):
    """gateway(targets, **gateway_http kwargs) -> started Nginx; .write_url"""

    def make(targets, workers=2, **kw):
        port = free_port()
        n = make_nginx(gateway_http(port, targets, **kw), workers=workers)
        n.write_url = n.url("/api/v1/write")
        n.status_url = n.url("/metrics")
        return n

    return make


@pytest.fixture
def storage_gateway(gateway, prom, vm):
    """the gateway in front of the session's Prometheus and VictoriaMetrics"""

    def make(**kw):
        return gateway([("prom", prom.url), ("vm", vm.url)], **kw)

    return make


def promtool_check_metrics(text):
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")
