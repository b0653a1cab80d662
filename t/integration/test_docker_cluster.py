"""docker/cluster/: the three-gateway example, without a Docker engine.

- its compose file parses and mounts files that exist;
- its Prometheus config passes promtool;
- the stack's data path on loopback: the three gateways run
  docker/cluster/promgate.conf (service names replaced by loopback
  addresses, each node's peers file in place of the include) and the
  balancer runs docker/cluster/lb.conf (plain nginx, no module); writes
  through the balancer land in Prometheus, and an exemplar query through
  the balancer answers what Prometheus answers, whichever node takes it;
  with one gateway stopped, the balancer's queries still answer, with the
  stopped node named in a warning.
"""

import json
import os
import re
import shutil
import subprocess

import pytest

import rw
from conftest import promtools
from fakeup import free_port
from kafka_broker import MockKafka
from test_docker_files import adapt, load_yaml, read
from test_exemplars import get_raw, post

CLUSTER = os.path.join(rw.REPO_ROOT, "docker", "cluster")
COMPOSE = os.path.join(CLUSTER, "compose.yaml")
NODE_CONF = os.path.join(CLUSTER, "promgate.conf")
LB_CONF = os.path.join(CLUSTER, "lb.conf")
PROM_YML = os.path.join(CLUSTER, "prometheus.yml")
NODES = ("promgate1", "promgate2", "promgate3")
INCLUDE = "include /etc/nginx/promgate-peers.conf;"


def test_compose_config_and_mounts():
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (make deps)")
    r = subprocess.run(["docker-compose", "-f", COMPOSE, "config", "-q"],
                       cwd=rw.REPO_ROOT, capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    services = load_yaml(COMPOSE)["services"]
    assert set(NODES) | {"lb", "prometheus", "kafka"} <= set(services)
    for name, s in services.items():
        for v in s.get("volumes", []):
            src = v.split(":", 1)[0]
            if src.startswith("."):
                assert os.path.exists(os.path.join(CLUSTER, src)), (name, v)
    init = " ".join(services["kafka-init"]["command"])
    assert "cleanup.policy=compact" in init


def test_prometheus_yml():
    for label, path in promtools():
        r = subprocess.run([path, "check", "config", PROM_YML],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, (label, (r.stdout + r.stderr).decode())


def node_text(n, module_path, ports, i, prom, vm, kafka):
    conf = read(NODE_CONF)
    assert INCLUDE in conf
    peers = read(os.path.join(CLUSTER, "peers", NODES[i] + ".conf"))
    conf = conf.replace(INCLUDE, peers)
    for j, name in enumerate(NODES):
        assert "%s:9201" % name in conf
        conf = conf.replace("%s:9201" % name, "127.0.0.1:%d" % ports[j])
    text, sockdir = adapt(conf, n.dir, module_path, ports[i], prom, vm,
                          kafka)
    return text, sockdir


def lb_text(n, port, ports):
    conf = read(LB_CONF)
    for j, name in enumerate(NODES):
        conf = conf.replace("%s:9201" % name, "127.0.0.1:%d" % ports[j])
    conf = conf.replace("listen 9201;", "listen 127.0.0.1:%d;" % port)
    conf = re.sub(r"(?m)^(user|pid|error_log|worker_processes)\b[^;]*;",
                  r"# (test) \g<0>", conf)
    head = ["daemon off;", "master_process on;", "worker_processes 1;",
            "pid %s/nginx.pid;" % n.dir,
            "error_log %s/error.log info;" % n.dir]
    if os.geteuid() == 0:
        head.append("user root root;")
    return "\n".join(head) + "\n" + conf


def test_cluster_on_loopback(make_nginx, module_path, prom, vm, tmp_path,
                             serverset):
    kafka = MockKafka(str(tmp_path / "kafka"))
    socks, nodes = [], []
    try:
        for t, p in (("prom-metrics", 6), ("prom-dlq", 1),
                     ("metric-index", 6)):
            kafka.create(t, p)
        ports = [free_port() for _ in NODES]
        for i in range(3):
            n = make_nginx(start=False, workers=2)
            text, sockdir = node_text(n, module_path, ports, i,
                                      prom.url.split("//")[1],
                                      vm.url.split("//")[1], kafka.bootstrap)
            socks.append(sockdir)
            n.write_raw(text)
            nodes.append(n.start())
        lb = make_nginx(start=False, workers=1)
        lbport = free_port()
        lb.write_raw(lb_text(lb, lbport, ports))
        lb.start()

        name = rw.uniq("dcl")
        t0 = (rw.now_ms() // 1000 - 30) * 1000
        for k in range(9):              # round robin: three per node
            post(lb.url("/api/v1/write"), [rw.series(
                name + "_total", {"job": "api", "k": str(k % 2)},
                samples=[(k, t0 + k * 100)],
                exemplars=[({"trace_id": "%032x" % (k + 1)}, k,
                            t0 + k * 100)])])
        params = {"query": name + "_total", "start": t0 / 1000 - 60,
                  "end": t0 / 1000 + 60}
        want = get_raw(prom.url + "/api/v1/query_exemplars", params)
        assert want[0] == 200 and want[1].count("trace_id") == 9, want
        for _ in range(6):              # whichever node answers
            assert get_raw(lb.url("/api/v1/query_exemplars"), params) == want
        # each node holds a third: the answer is not one node's zone
        for n in nodes:
            doc = json.loads(get_raw(n.url("/api/v1/query_exemplars"),
                                     params)[1])
            assert sum(len(s["exemplars"]) for s in doc["data"]) == 9

        nodes[2].stop()
        for _ in range(4):
            code, text = get_raw(lb.url("/api/v1/query_exemplars"), params)
            assert code == 200, text
            doc = json.loads(text)
            assert any("/_peer/promgate3" in w for w in doc["warnings"]), doc
            assert sum(len(s["exemplars"]) for s in doc["data"]) == 6
    finally:
        for n in nodes:
            n.stop()                    # before its socket's directory goes
        kafka.stop()
        for d in socks:
            shutil.rmtree(d, ignore_errors=True)
