"""The test Kafka broker: t/kafka_mock.c (librdkafka's mock cluster as a
process on loopback), driven through its control pipe.

    k = MockKafka(workdir, brokers=1)
    k.create("metrics", 4)
    k.produce("metrics", [b"...", b"..."])
    k.down(); k.up()                  # brokers down and up, state kept
    k.consume("dlq")                  # [(partition, offset, value, headers)]
    k.committed("group", "metrics")   # {partition: offset}
    k.stop()

Every command has a bounded wait.
"""

import os
import queue
import subprocess
import threading

import rw

MOCK_SRC = os.path.join(rw.REPO_ROOT, "t", "kafka_mock.c")


def mock_binary():
    """build/kafka_mock (make builds it); compiled here if missing"""
    b = os.environ.get("KAFKA_MOCK") or os.path.join(rw.REPO_ROOT, "build",
                                                     "kafka_mock")
    if not os.access(b, os.X_OK) or (
            os.path.exists(MOCK_SRC)
            and os.path.getmtime(MOCK_SRC) > os.path.getmtime(b)):
        os.makedirs(os.path.dirname(b), exist_ok=True)
        subprocess.run(["cc", "-O2", "-o", b, MOCK_SRC, "-lrdkafka"],
                       check=True, timeout=120)
    return b


class MockKafkaError(Exception):
    pass


class MockKafka:
    def __init__(self, workdir, brokers=1):
        os.makedirs(workdir, exist_ok=True)
        self.log = open(os.path.join(workdir, "kafka_mock.log"), "ab")
        self.p = subprocess.Popen([mock_binary(), str(brokers)],
                                  stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.log,
                                  start_new_session=True)
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        first = self._line(30)
        if not first.startswith("ready "):
            self.stop()
            raise MockKafkaError("kafka_mock did not start: %r" % first)
        self.bootstrap = first.split(" ", 1)[1]

    def _read(self):
        for raw in self.p.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def _line(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise MockKafkaError("kafka_mock did not answer in %ss" % timeout)
        if line is None:
            raise MockKafkaError("kafka_mock exited")
        return line

    def cmd(self, line, timeout=60):
        """sends a command; returns the lines of the answer, the last one
        starting with ok or end"""
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()
        out = []
        while True:
            l = self._line(timeout)
            out.append(l)
            if l.startswith("err"):
                raise MockKafkaError("%s: %s" % (line[:80], l))
            if l.startswith("ok") or l.startswith("end"):
                return out

    def create(self, topic, partitions):
        self.cmd("create %s %d" % (topic, partitions))

    def down(self, broker="all"):
        self.cmd("down %s" % broker)

    def up(self, broker="all"):
        self.cmd("up %s" % broker)

    def produce(self, topic, values, partition=-1):
        """values: bytes, or (bytes, {header: bytes}) for messages with
        headers"""
        def enc(v):
            if isinstance(v, tuple):
                v, headers = v
                return (v.hex() or "-") + "@" + ",".join(
                    "%s=%s" % (k, h.hex() or "-") for k, h in headers.items())
            return v.hex() if v else "-"
        values = list(values)
        for i in range(0, len(values), 500):
            chunk = values[i:i + 500]
            self.cmd("produce %s %d %s" % (topic, partition,
                                           " ".join(enc(v) for v in chunk)),
                     timeout=120)

    def repeat(self, topic, count, value, partition=-1):
        self.cmd("repeat %s %d %d %s" % (topic, partition, count, value.hex()),
                 timeout=300)

    def consume(self, topic):
        """[(partition, offset, value, {header: value})] of every message"""
        out = []
        for l in self.cmd("consume %s" % topic, timeout=60):
            if not l.startswith("msg "):
                continue
            _, part, off, val, hdrs = l.split(" ", 4)
            headers = {}
            if hdrs != "-":
                for kv in hdrs.split(","):
                    k, v = kv.split("=", 1)
                    headers[k] = b"" if v == "-" else bytes.fromhex(v)
            out.append((int(part), int(off),
                        b"" if val == "-" else bytes.fromhex(val), headers))
        return out

    def committed(self, group, topic):
        """{partition: committed offset} (negative: none)"""
        out = {}
        for l in self.cmd("committed %s %s" % (group, topic)):
            if l.startswith("committed "):
                _, part, off = l.split()
                out[int(part)] = int(off)
        return out

    def hwm(self, topic):
        out = {}
        for l in self.cmd("hwm %s" % topic):
            if l.startswith("hwm "):
                _, part, lo, hi = l.split()
                out[int(part)] = (int(lo), int(hi))
        return out

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write(b"quit\n")
                self.p.stdin.flush()
                self.p.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait(10)
        self.log.close()


def group_settled(n, group, workers, timeout=60):
    """waits until all `workers` of nginx `n` have joined consumer group
    `group` and none is in a rebalance: every worker's last rebalance line
    in the error log is "joined" (librdkafka's eager protocol calls back
    every member, with or without partitions).  A test that counts
    deliveries exactly waits for this before producing: a member joining
    late revokes the partitions of the others, and what they had not
    committed yet is delivered again (at least once).  Returns the number
    of partitions each worker pid holds, or fails the test with the log."""
    import re
    import time
    key = 'group "%s": ' % group
    pat = re.compile(r"\d+#\d+: .*" + re.escape(key) +
                     r"(joined, (\d+)|rebalancing)")
    deadline = time.monotonic() + timeout
    last = {}
    while True:
        last = {}
        for line in n.error_log_text().splitlines():
            m = pat.search(line)
            if m:
                pid = line.split("#", 1)[1].split(":", 1)[0]
                last[pid] = int(m.group(2)) if m.group(2) else None
        if len(last) >= workers and all(v is not None
                                         for v in last.values()):
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("group %s not settled over %d workers in "
                                 "%ds: %s\n%s" % (group, workers, timeout,
                                                  last, n.error_log_text()
                                                  [-4000:]))
        time.sleep(0.2)
