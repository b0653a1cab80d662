"""One Kafka consumer group over several nginx instances (several gateways).

Two nginx instances, each with promgate_kafka_consumer ... group=G on the
same topic (6 partitions, librdkafka's mock cluster), forward to the
session's Prometheus.  Messages are produced to every partition before,
while one instance is stopped (its partitions move to the other) and after
it started again (they move back): every message is stored, none skipped
(duplicates are allowed: Kafka is at-least-once), both instances consumed
a share, and the group's offsets end at the end of every partition.
"""

import threading
import time

import requests

import rw
from kafka_broker import MockKafka
from procs import wait_for
from test_kafka import kafka, start_gateway, wr, prom_count, plain, \
    expect  # noqa: F401  (kafka: the fixture)

PARTITIONS = 6


def owned(n, group):
    """the partitions the instance's workers own now (their log lines)"""
    key = 'group "%s": ' % group
    out = set()
    for line in n.error_log_text().splitlines():
        if key not in line:
            continue
        what = line.split(key, 1)[1]
        tp = what.split(" ", 1)[0]
        if what.endswith(" assigned"):
            out.add(tp)
        elif " revoked" in what:
            out.discard(tp)
    return out


def consumed(n):
    """messages the instance's consumers acknowledged (status page)"""
    r = requests.get(n.url("/metrics"), timeout=10)
    assert r.status_code == 200, r.text
    total = 0.0
    for line in r.text.splitlines():
        if line.startswith("promgate_kafka_acked_messages_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_instances_share_a_group_and_lose_nothing(sockdir, kafka,
                                                      make_nginx, prom):
    name = rw.uniq("kgrp")
    topic, group = name, name + "-g"
    kafka.create(topic, PARTITIONS)
    nodes = []
    for k in range(2):
        nodes.append(start_gateway(
            make_nginx, [("prom", prom.url)], kafka.bootstrap,
            ["topic=%s group=%s target=/api/v1/write socket=%s/g%d.sock "
             "batch=10" % (topic, group, sockdir, k)],
            workers=1, settle=False))

    def split():
        a, b = owned(nodes[0], group), owned(nodes[1], group)
        return len(a | b) == PARTITIONS and not (a & b) and a and b

    assert wait_for(split, 60, 0.2), (owned(nodes[0], group),
                                      owned(nodes[1], group))

    t = rw.now_ms() - 10000
    seq = iter(range(10 ** 6))
    produced = []

    def produce(count):
        """count messages on every partition"""
        for p in range(PARTITIONS):
            ids = [next(seq) for _ in range(count)]
            kafka.produce(topic, [rw.compress(wr(name, i, t)) for i in ids],
                          partition=p)
            produced.extend(ids)

    # both share the work
    produce(20)
    assert wait_for(lambda: prom_count(prom, name) >= len(produced), 60, 0.3)
    assert consumed(nodes[0]) > 0 and consumed(nodes[1]) > 0, \
        (consumed(nodes[0]), consumed(nodes[1]))

    # one stops while messages keep coming: the other takes its partitions
    stop_done = threading.Event()

    def stopper():
        nodes[1].stop()
        stop_done.set()

    th = threading.Thread(target=stopper)
    th.start()
    for _ in range(4):
        produce(10)
        time.sleep(0.3)
    assert stop_done.wait(30)
    th.join(10)
    assert wait_for(lambda: len(owned(nodes[0], group)) == PARTITIONS, 60,
                    0.2), owned(nodes[0], group)
    produce(10)

    # and comes back: the partitions are shared again
    nodes[1].start()
    for _ in range(4):
        produce(10)
        time.sleep(0.3)
    assert wait_for(split, 60, 0.2), (owned(nodes[0], group),
                                      owned(nodes[1], group))
    produce(10)

    total = len(produced)
    assert total == PARTITIONS * (20 + 40 + 10 + 40 + 10)
    if not wait_for(lambda: prom_count(prom, name) >= total, 90, 0.5):
        have = {int(dict(k)["i"]) for k in prom.samples(name)}
        raise AssertionError("%d messages never stored: %s; committed %s, "
                             "ends %s" % (
                                 total - len(have),
                                 sorted(set(produced) - have)[:20],
                                 kafka.committed(group, topic),
                                 kafka.hwm(topic)))
    assert plain(prom.samples(name)) == expect(name, total, t)

    # every offset committed: nothing left behind in any partition
    ends = {p: hi for p, (_, hi) in kafka.hwm(topic).items()}
    assert wait_for(lambda: kafka.committed(group, topic) == ends, 30), \
        (kafka.committed(group, topic), ends)
    assert consumed(nodes[1]) > 0


def test_series_index_across_nodes_one_message_per_node_same_key(
        make_nginx, make_fake, tmp_path):
    """two gateways with their own series zone, one index topic: a series
    written through both is announced once by each (the zones are per
    node), both messages under the same key (Prometheus' labels.Hash), so
    a topic with cleanup.policy=compact keeps one per series"""
    import test_series_index as si

    k = MockKafka(str(tmp_path / "kafka"))
    try:
        k.create(si.TOPIC, 4)
        nodes = [si.start(make_nginx, make_fake, k) for _ in range(2)]
        name = rw.uniq("idxn")
        sets = [{"__name__": name, "job": "api", "i": str(i)}
                for i in range(5)]
        for n in nodes:
            for _ in range(3):                  # again: still once a node
                r = si.write(n, sets)
                assert r.status_code == 204, r.text
        msgs = [(key, v) for key, v in si.wait_messages(k, 10)
                if v["name"] == name]
        assert len(msgs) == 10, msgs
        keys = si.by_key(msgs)
        assert len(keys) == 5, keys
        for key, vals in keys.items():
            assert len(vals) == 2
            assert vals[0]["labels"] == vals[1]["labels"]
            assert key == "%016x" % si.labels_hash(
                dict(vals[0]["labels"], __name__=name))
    finally:
        k.stop()
