"""Fixtures for promgate's integration tests: real nginx with the module,
real Prometheus and VictoriaMetrics (shared per session), scripted fake
upstreams.  Run:

    PROMGATE_MODULE=/abs/build/ngx_http_promgate_module.so NGINX_BIN=/usr/sbin/nginx \
        /usr/bin/python3 -m pytest -q -p no:cacheprovider t/integration

Server sets (servers.py): every test that uses `serverset`, or a fixture
built on it (`prom`, `vm`, `storage_gateway`, `make_prometheus`,
`make_vmagent`), runs once per set, with test ids ending in [current] or
[debian12]:

    current   Prometheus 3.5.x + VictoriaMetrics/vmagent 1.145.x from
              build/servers (make servers)
    debian12  /usr/bin/prometheus 2.42, /usr/bin/victoria-metrics and
              /usr/bin/vmagent 1.79

PROMGATE_SERVERSETS=current (or debian12) runs one set only.  A missing
current set skips its tests, or fails them with PROMGATE_REQUIRE_CURRENT=1
(make integration sets it).
"""

import os
import shutil
import subprocess
import tempfile

import pytest

import rw
import servers as serversets
from fakeup import FakeUpstream, free_port
from procs import Nginx, Prometheus, VictoriaMetrics, VMAgent

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


def selected_serversets():
    env = os.environ.get("PROMGATE_SERVERSETS", "")
    names = [n.strip() for n in env.split(",") if n.strip()]
    for n in names:
        if n not in serversets.SET_NAMES:
            raise pytest.UsageError("PROMGATE_SERVERSETS: unknown set %r (known: %s)"
                                    % (n, ", ".join(serversets.SET_NAMES)))
    return names or list(serversets.SET_NAMES)


def pytest_report_header(config):
    lines = []
    for name in selected_serversets():
        ss = serversets.get(name)
        lines.append("serverset " + ss.header()
                     + ("" if ss.available else "  [MISSING: %s]" % (
                         ", ".join(ss.missing) or "no version")))
    lines.append("PROMGATE_REQUIRE_CURRENT=%s" % (
        os.environ.get("PROMGATE_REQUIRE_CURRENT", "")))
    return lines


@pytest.fixture(scope="session", params=selected_serversets())
def serverset(request):
    """the servers.ServerSet this test runs against (parametrized: every
    test using it runs once per set)"""
    ss = serversets.get(request.param)
    if not ss.available:
        msg = "server set %s is incomplete (%s): make servers" % (
            ss.name, ", ".join(ss.missing) or "no Prometheus version")
        if ss.name != "current" or serversets.require_current():
            pytest.fail(msg)
        pytest.skip(msg)
    return ss


@pytest.fixture(scope="session")
def prom(serverset, tmp_path_factory):
    p = Prometheus(str(tmp_path_factory.mktemp("prom-storage-" + serverset.name)),
                   binary=serverset.prometheus, features=serverset.prom_features)
    yield p
    p.stop()


@pytest.fixture(scope="session")
def vm(serverset, tmp_path_factory):
    v = VictoriaMetrics(str(tmp_path_factory.mktemp("vm-storage-" + serverset.name)),
                        binary=serverset.victoria_metrics)
    yield v
    v.stop()


@pytest.fixture
def make_prometheus(serverset, tmp_path):
    """make_prometheus(name, config_yaml=None, **Prometheus kwargs): a
    Prometheus of the test's server set (a sender, a second storage);
    stopped at teardown"""
    made = []

    def make(name, config_yaml=None, **kw):
        kw.setdefault("features", serverset.prom_features)
        p = Prometheus(str(tmp_path / name), config_yaml,
                       binary=serverset.prometheus, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


@pytest.fixture
def make_vmagent(serverset, tmp_path):
    """make_vmagent(remote_write_urls, extra_flags=(), name="vmagent"): a
    vmagent of the test's server set; stopped at teardown"""
    made = []

    def make(urls, extra_flags=(), name="vmagent"):
        a = VMAgent(str(tmp_path / name), urls, extra_flags,
                    binary=serverset.vmagent)
        made.append(a)
        return a

    yield make
    for a in made:
        a.stop()


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


def promtools():
    """[(label, path)]: the promtool of every available server set (the
    Debian 12 one, 2.42, and the current one)"""
    out = []
    for name in serversets.SET_NAMES:
        ss = serversets.get(name)
        if os.access(ss.promtool, os.X_OK):
            out.append(("promtool %s" % (ss.prom_version_str or name), ss.promtool))
    if not out and shutil.which("promtool"):
        out.append(("promtool", shutil.which("promtool")))
    return out


def promtool_check_metrics(text):
    """`promtool check metrics` by every available promtool version;
    (0, output) only if all of them pass"""
    rc, outs = 0, []
    tools = promtools()
    if not tools:
        return 127, "no promtool"
    for label, path in tools:
        r = subprocess.run([path, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=60)
        rc = rc or r.returncode
        outs.append("%s (rc %d): %s" % (label, r.returncode,
                                        (r.stdout + r.stderr).decode("utf-8", "replace")))
    return rc, "\n".join(outs)


@pytest.fixture
def sockdir():
    """a short directory for unix sockets (sun_path holds 108 bytes; a path
    under pytest's tmp_path depends on where the checkout is).  Request it
    before make_nginx, so that nginx stops (and unlinks its sockets)
    first."""
    d = tempfile.mkdtemp(prefix="pgs", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)
