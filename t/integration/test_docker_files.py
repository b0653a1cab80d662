"""docker/: what can be checked without a Docker engine.

- docker/compose.yaml parses (`docker-compose config -q`) and has the
  stack's services;
- docker/prometheus.yml passes `promtool check config`;
- docker/nginx.conf, with the service host names replaced by loopback
  addresses (Kafka: a port nothing listens on), passes `nginx -t`, starts,
  and serves every promgate metric the Grafana dashboard queries;
- the Grafana provisioning parses, the dashboard's data sources are
  provisioned, its queries parse in Prometheus, and every metric it queries
  is rendered by the module's source (src/*.c) or produced by
  docker/producer/produce.py;
- the producer's messages decode as remote-write WriteRequests;
- the stack's data path without Docker: produce.py through kcat onto a
  Kafka broker (librdkafka's mock cluster), promgate with docker/nginx.conf
  consuming it into the session's Prometheus and VictoriaMetrics.

The images themselves are not built here (no Docker engine).
"""

import glob
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time

import pytest
import requests

import rw
from conftest import promtools
from fakeup import free_port
from kafka_broker import MockKafka
from procs import poll_samples, wait_for

try:
    import yaml
except ImportError:                     # Debian: python3-yaml
    yaml = None

DOCKER = os.path.join(rw.REPO_ROOT, "docker")
COMPOSE = os.path.join(DOCKER, "compose.yaml")
NGINX_CONF = os.path.join(DOCKER, "nginx.conf")
PROM_YML = os.path.join(DOCKER, "prometheus.yml")
DASHBOARD = os.path.join(DOCKER, "grafana", "dashboards", "promgate.json")
DATASOURCES = os.path.join(DOCKER, "grafana", "provisioning", "datasources")
DASH_PROVIDERS = os.path.join(DOCKER, "grafana", "provisioning", "dashboards")
PRODUCER = os.path.join(DOCKER, "producer", "produce.py")

# what docker/nginx.conf names, and what the tests put in its place
SERVICES = {"prometheus": "prometheus:9090",
            "victoria": "victoria-metrics:8428",
            "kafka": "kafka:19092"}
LISTEN = "listen 9201;"
TOP_LEVEL_OWNED = ("daemon", "master_process", "pid", "error_log", "user",
                   "worker_processes")

STACK_SERVICES = {"promgate", "prometheus", "victoria-metrics", "kafka",
                  "producer", "grafana"}

# metric suffixes of histogram and summary families
FAMILY_SUFFIXES = ("_bucket", "_sum", "_count")

PROMQL_WORDS = {"sum", "rate", "irate", "increase", "by", "without",
                "histogram_quantile", "le", "avg", "max", "min", "count",
                "topk", "bottomk", "on", "ignoring", "group_left",
                "group_right", "and", "or", "unless", "offset", "bool"}


def read(path):
    with open(path) as f:
        return f.read()


def load_yaml(path):
    if yaml is None:
        pytest.fail("PyYAML is not installed (make deps: python3-yaml)")
    return yaml.safe_load(read(path))


def module_source():
    return "\n".join(read(p) for p in sorted(
        glob.glob(os.path.join(rw.REPO_ROOT, "src", "*.c"))))


def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def dashboard_targets(d):
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p, t))
            walk(p.get("panels", []))
    walk(d.get("panels", []))
    return out


def metric_names(expr):
    """the metric names an expression selects: identifiers that are not
    PromQL words, label names (inside {} or by/without lists) or strings"""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)       # strings
    e = re.sub(r"\{[^}]*\}", "{}", e)                  # matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*"
               r"\([^)]*\)", r"\1()", e)               # label lists
    e = re.sub(r"\[[^\]]*\]", "[]", e)                 # ranges
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()",
                         e):
        w = m.group(1)
        if w not in PROMQL_WORDS and not w.startswith("__"):
            names.add(w)
    return names


def family(name):
    for s in FAMILY_SUFFIXES:
        if name.endswith(s):
            return name[:-len(s)]
    return name


def dashboard_metrics():
    names = set()
    for _, t in dashboard_targets(dashboard()):
        names |= metric_names(t["expr"])
    return names


def adapt(text, workdir, module, gw_port, prom, vm, kafka):
    """docker/nginx.conf on loopback: service names, the listen port, the
    module path, main-context directives and absolute paths"""
    for key, what in list(SERVICES.items()) + [("listen", LISTEN)]:
        assert what in text, "docker/nginx.conf no longer mentions %r" % what
    text = text.replace(SERVICES["prometheus"], prom)
    text = text.replace(SERVICES["victoria"], vm)
    text = text.replace(SERVICES["kafka"], kafka)
    text = text.replace(LISTEN, "listen 127.0.0.1:%d;" % gw_port)

    def path(m):
        p = os.path.join(workdir, "root" + m.group(0))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p
    text = re.sub(r"(?<![\w.:/])/(?:var|run|tmp|srv|opt)/[^\s;'\"]+", path,
                  text)

    # unix sockets: sun_path holds 108 bytes, pytest's tmp paths can be long
    sockdir = tempfile.mkdtemp(prefix="pgdock-")

    def sock(m):
        return "socket=" + os.path.join(sockdir, os.path.basename(m.group(1)))
    text = re.sub(r"socket=(/[^\s;]+)", sock, text)

    n = 0

    def load(m):
        nonlocal n
        n += 1
        return "load_module %s;" % module
    text = re.sub(r"(?m)^\s*load_module\s+\S*ngx_http_promgate_module\.so\s*;",
                  load, text)
    assert n == 1, "expected exactly one load_module line for the module"

    text = re.sub(r"(?m)^(%s)\b[^;]*;" % "|".join(TOP_LEVEL_OWNED),
                  r"# (test) \g<0>", text)
    head = ["daemon off;", "master_process on;", "worker_processes 2;",
            "pid %s/nginx.pid;" % workdir,
            "error_log %s/error.log info;" % workdir]
    if os.geteuid() == 0:
        head.append("user root root;")
    lines = text.splitlines()
    i = next(k for k, l in enumerate(lines)
             if l.strip().startswith("load_module"))
    lines[i + 1:i + 1] = head
    return "\n".join(lines) + "\n", sockdir


@pytest.fixture
def docker_nginx(make_nginx, module_path, tmp_path):
    """make(prom, vm, kafka) -> Nginx (not started)
    running docker/nginx.conf against those host:port strings"""
    if not os.path.exists(NGINX_CONF):
        pytest.fail("%s is missing" % NGINX_CONF)
    made = []

    def make(prom, vm, kafka):
        conf = read(NGINX_CONF)
        gw = free_port()
        n = make_nginx(start=False, workers=2)
        text, sockdir = adapt(conf, n.dir, module_path, gw, prom, vm,
                              kafka)
        made.append((n, sockdir))
        n.write_raw(text)
        assert n.ports == [gw], n.ports
        return n

    yield make
    for n, d in made:
        n.stop()                        # before its socket's directory goes
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ compose

def test_compose_config():
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (make deps)")
    r = subprocess.run(["docker-compose", "-f", COMPOSE, "config", "-q"],
                       cwd=rw.REPO_ROOT, capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()


def test_compose_services():
    c = load_yaml(COMPOSE)
    services = c["services"]
    assert STACK_SERVICES <= set(services), sorted(services)

    pg = services["promgate"]
    assert pg["build"]["dockerfile"] == "docker/Dockerfile"
    assert os.path.isfile(os.path.join(DOCKER, pg["build"]["context"],
                                       pg["build"]["dockerfile"]))
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in pg["volumes"]

    prom = " ".join(services["prometheus"]["command"])
    assert "--web.enable-remote-write-receiver" in prom
    assert "exemplar-storage" in prom

    env = services["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"]       # KRaft
    assert "kafka:19092" in env["KAFKA_ADVERTISED_LISTENERS"]

    # every file compose mounts exists in docker/
    for name, s in services.items():
        for v in s.get("volumes", []):
            src = v.split(":", 1)[0]
            if src.startswith("."):
                assert os.path.exists(os.path.join(DOCKER, src)), (name, v)
        b = s.get("build")
        if isinstance(b, dict) and "dockerfile" not in b:
            assert os.path.isfile(os.path.join(DOCKER, b["context"],
                                               "Dockerfile")), name


def test_prometheus_yml():
    tools = promtools()        # 2.42 (the compose image) and the current one
    assert tools, "no promtool (make servers)"
    for label, path in tools:
        r = subprocess.run([path, "check", "config", PROM_YML],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, (label, (r.stdout + r.stderr).decode())
    targets = [t for j in load_yaml(PROM_YML)["scrape_configs"]
               for sc in j.get("static_configs", []) for t in sc["targets"]]
    assert "promgate:9201" in targets


# ------------------------------------------------------------------ grafana

def test_grafana_provisioning():
    sources = {}
    for p in glob.glob(os.path.join(DATASOURCES, "*.yaml")):
        for ds in load_yaml(p)["datasources"]:
            sources[ds["uid"]] = ds
    assert "promgate" in sources, sorted(sources)
    pg = sources["promgate"]
    assert pg["type"] == "prometheus"
    assert pg["url"] == "http://promgate:9201"
    dest = pg["jsonData"]["exemplarTraceIdDestinations"]
    assert any(d["name"] == "trace_id" for d in dest), dest
    for d in dest:
        # Grafana expands $... from its environment in provisioning files
        if "url" in d:
            assert "$${__value.raw}" in d["url"], d

    providers = [pr for p in glob.glob(os.path.join(DASH_PROVIDERS, "*.yaml"))
                 for pr in load_yaml(p)["providers"]]
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts.get("./grafana/dashboards") in \
        [pr["options"]["path"] for pr in providers], (mounts, providers)

    d = dashboard()
    assert d["uid"] and d["panels"]
    used = set()
    for p, t in dashboard_targets(d):
        for ds in (p.get("datasource"), t.get("datasource")):
            if isinstance(ds, dict):
                used.add(ds["uid"])
    assert used and used <= set(sources), (used, sorted(sources))
    # the exemplar panel reads through promgate
    assert any(t.get("exemplar") and p["datasource"]["uid"] == "promgate"
               for p, t in dashboard_targets(d))


def test_dashboard_queries_parse(prom):
    """every query of the dashboard is valid PromQL for Prometheus 2.42
    (Grafana's $__rate_interval as 1m)"""
    bad = []
    for p, t in dashboard_targets(dashboard()):
        expr = t["expr"].replace("$__rate_interval", "1m")
        r = requests.get(prom.url + "/api/v1/query", params={"query": expr},
                         timeout=10)
        if r.status_code != 200:
            bad.append((p["title"], expr, r.text[:200]))
    assert bad == [], bad


def test_dashboard_metrics_in_source():
    src = module_source()
    producer = read(PRODUCER)
    names = dashboard_metrics()
    assert any(n.startswith("promgate_write_") for n in names), names
    missing = []
    for n in sorted(names):
        if n.startswith("promgate_kafka_"):
            continue            # test_dashboard_kafka_metrics_in_source
        if n.startswith("promgate_"):
            if '"%s' % n not in src and '"%s' % family(n) not in src:
                missing.append(n)
        elif n not in producer and family(n) not in producer:
            missing.append(n)
    assert missing == [], "the dashboard queries metrics nothing renders: %s" \
        % missing


def test_dashboard_kafka_metrics_in_source():
    names = sorted(n for n in dashboard_metrics()
                   if n.startswith("promgate_kafka_"))
    assert names, "the dashboard has no Kafka panels"
    src = module_source()
    missing = [n for n in names if '"%s' % n not in src]
    assert missing == [], missing


# ------------------------------------------------------------------ producer

def load_producer():
    spec = importlib.util.spec_from_file_location("produce", PRODUCER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_producer_messages_decode():
    produce = load_producer()
    _, remote = rw.pb()
    shop = produce.Shop()
    rnd = random.Random(7)
    now = rw.now_ms()
    exemplars = 0
    for i in range(3):
        shop.tick(now + i * 1000, rnd)
        body = produce.encode_write_request(shop.series(now + i * 1000))
        wr = remote.WriteRequest()
        wr.ParseFromString(body)
        assert len(wr.timeseries) > 10
        for ts in wr.timeseries:
            names = [l.name for l in ts.labels]
            assert names == sorted(names) and names[0] == "__name__"
            assert [s.timestamp for s in ts.samples] == [now + i * 1000]
            for ex in ts.exemplars:
                exemplars += 1
                assert {l.name for l in ex.labels} == {"trace_id", "span_id"}
                assert ex.timestamp <= now + i * 1000
    assert exemplars > 0
    j = json.loads(produce.json_sample(now, rnd))
    assert j["labels"]["__name__"] == j["name"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$",
                    j["timestamp"])
    float(j["value"])


# ------------------------------------------------------------ nginx config

def status_families(n):
    r = requests.get(n.url("/metrics"), timeout=10)
    assert r.status_code == 200, r.text[:300]
    return set(re.findall(r"(?m)^# TYPE (\S+)", r.text))


def unreachable():
    return "127.0.0.1:%d" % free_port()


def test_docker_nginx_conf(docker_nginx):
    """nginx -t passes; nginx starts with no storage and no Kafka broker
    reachable; the status page has every family the dashboard reads (but
    the Kafka consumer's: next test)"""
    n = docker_nginx(unreachable(), unreachable(), unreachable())
    rc, out = n.test_config()
    assert rc == 0, out
    assert "test is successful" in out, out
    assert not re.search(r"\[(alert|emerg|crit)\]", out), out

    n.start()
    want = {family(m) for m in dashboard_metrics()
            if m.startswith("promgate_") and
            not m.startswith("promgate_kafka_")}
    missing = sorted(want - status_families(n))
    assert missing == [], "not on the status page: %s" % missing


def test_docker_nginx_conf_kafka_metrics(docker_nginx):
    want = {family(m) for m in dashboard_metrics()
            if m.startswith("promgate_kafka_")}
    assert want, "the dashboard has no Kafka panels"
    n = docker_nginx(unreachable(), unreachable(), unreachable())
    n.start()
    families = status_families(n)
    missing = sorted(want - families)
    assert missing == [], "not on the status page: %s" % missing


# --------------------------------------------------------- the data path

def test_stack_data_path(docker_nginx, prom, vm, tmp_path):
    """produce.py -> kcat -> Kafka -> promgate (docker/nginx.conf) ->
    Prometheus + VictoriaMetrics; exemplars in promgate's zone; new series
    announced on metric-index"""
    assert shutil.which("kcat"), "kcat is not installed (make deps)"
    k = MockKafka(str(tmp_path / "kafka"))
    n = None
    try:
        for topic, parts in (("prom-metrics", 4), ("prom-json", 1),
                             ("prom-dlq", 1), ("metric-index", 4)):
            k.create(topic, parts)
        n = docker_nginx("127.0.0.1:%d" % prom.port, "127.0.0.1:%d" % vm.port,
                         k.bootstrap)
        n.start()

        t0 = time.time()
        env = dict(os.environ, KAFKA_BROKERS=k.bootstrap, COUNT="3",
                   INTERVAL="0.5", TOPIC="prom-metrics",
                   JSON_TOPIC="prom-json")
        r = subprocess.run(["/usr/bin/python3", PRODUCER], env=env,
                           capture_output=True, timeout=120)
        out = (r.stdout + r.stderr).decode()
        assert r.returncode == 0 and "not delivered" not in out, out

        got = poll_samples(prom, "demo_http_requests_total", 1,
                           timeout=60)
        assert got, "no sample data reached Prometheus:\n" + out
        assert poll_samples(vm, "demo_http_requests_total", 1, timeout=30)
        # the JSON topic (prometheus-kafka-adapter's format)
        assert poll_samples(prom, "demo_room_temperature_celsius", 1,
                            timeout=30)

        # exemplars, from promgate's zone, as Grafana asks for them
        def exemplars():
            q = requests.get(n.url("/api/v1/query_exemplars"), params={
                "query": "histogram_quantile(0.9, sum by (le) (rate("
                         "demo_http_request_duration_seconds_bucket[1m])))",
                "start": str(t0 - 60), "end": str(time.time() + 60)},
                timeout=10)
            assert q.status_code == 200, q.text
            return q.json()["data"]
        data = wait_for(exemplars, 20, 0.25)
        assert data, "no exemplars in promgate's zone"
        assert all(x["labels"]["trace_id"] for s in data
                   for x in s["exemplars"])

        # every message committed: 3 WriteRequests on prom-metrics
        def committed():
            c = k.committed("promgate", "prom-metrics")
            return sum(v for v in c.values() if v > 0) == 3
        assert wait_for(committed, 120, 0.5), \
            k.committed("promgate", "prom-metrics")

        # the series index announced the new series
        def announced():
            return [json.loads(v) for _, _, v, _ in k.consume("metric-index")]
        msgs = wait_for(announced, 20, 0.5)
        assert msgs and any(m["name"] == "demo_http_requests_total"
                            for m in msgs), msgs
    finally:
        if n is not None:
            n.stop()                    # its consumers leave the group first
        k.stop()
