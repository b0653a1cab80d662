"""The exemplar write-ahead log: exemplars survive restarts, crashes, a
changed max and a full disk."""

import glob
import os
import signal

import pytest
import requests

import rw
from conftest import gateway_http
from fakeup import free_port
from procs import wait_for


def conf(port, target, wal, max_=5000, extra=""):
    zone = "    promgate_exemplar_zone exemplars:16m max=%d wal=%s %s;\n" % (
        max_, wal, extra)
    return gateway_http(
        port, [("t", target)], write_extra="promgate_exemplars exemplars;",
        http_extra=zone,
        server_extra="location = /api/v1/query_exemplars "
                     "{ promgate_exemplar_query exemplars; }")


@pytest.fixture
def sink(make_fake):
    return make_fake()          # a storage answering 204


def write_stream(url, name, n, t0, per_request=10, tenant=None):
    h = {"X-Scope-OrgID": tenant} if tenant else None
    for k in range(0, n, per_request):
        s = []
        for j in range(k, min(n, k + per_request)):
            s.append(rw.series(name, {"i": str(j % 7)},
                               samples=[(j, t0 + j)],
                               exemplars=[({"trace_id": "%032x" % j,
                                            "span_id": "%016x" % j},
                                           j + 0.5, t0 + j)]))
        r = rw.post(url, rw.compress(rw.write_request(s)), headers=h)
        assert r.status_code == 204, r.text


def answer(n, name, tenant=None):
    h = {"X-Scope-OrgID": tenant} if tenant else None
    r = requests.get(n.url("/api/v1/query_exemplars"),
                     params={"query": name}, headers=h)
    assert r.status_code == 200, r.text
    return r.text


def count(text):
    import json
    return sum(len(d["exemplars"]) for d in json.loads(text)["data"])


def status(n):
    return requests.get(n.url("/metrics")).text


def metric(text, name):
    for l in text.splitlines():
        if l.startswith(name + " "):
            return float(l.split()[1])
    raise AssertionError("no %s in status" % name)


@pytest.mark.parametrize("how", ["quit", "kill9"])
def test_restart_keeps_exemplars(make_nginx, sink, tmp_path, how):
    wal = str(tmp_path / "wal")
    port = free_port()
    target = "http://127.0.0.1:%d" % sink.port
    n1 = make_nginx(conf(port, target, wal))
    name = rw.uniq("wal")
    t0 = rw.now_ms() - 100000
    write_stream(n1.write_url if hasattr(n1, "write_url")
                 else n1.url("/api/v1/write"), name, 300, t0)
    write_stream(n1.url("/api/v1/write"), name + "_b", 20, t0, tenant="b")
    before = answer(n1, name)
    before_b = answer(n1, name + "_b", "b")
    assert count(before) == 300 and count(before_b) == 20

    if how == "quit":
        n1.stop()
    else:
        # master and workers at once: the master cannot respawn anyone
        os.killpg(n1.master_pid, signal.SIGKILL)
        n1.proc.p.wait(10)
        assert wait_for(lambda: not n1.worker_pids(), 10)
        n1.stop()
        # a killed master leaves its pid file; nginx starts anyway

    assert glob.glob(os.path.join(wal, "exemplars-w*.wal"))

    n2 = make_nginx(conf(port, target, wal))
    assert answer(n2, name) == before
    assert answer(n2, name + "_b", "b") == before_b
    st = status(n2)
    assert metric(st, "promgate_wal_replays_total") == 1
    assert metric(st, "promgate_wal_replayed_records_total") == 320

    # new exemplars go on after the replayed ones, and survive again
    write_stream(n2.url("/api/v1/write"), name, 310, t0 + 1000)
    after = answer(n2, name)
    n2.stop()
    n3 = make_nginx(conf(port, target, wal))
    assert answer(n3, name) == after


def test_smaller_max_replays_what_fits(make_nginx, sink, tmp_path):
    wal = str(tmp_path / "wal")
    port = free_port()
    target = "http://127.0.0.1:%d" % sink.port
    n1 = make_nginx(conf(port, target, wal, max_=1000))
    name = rw.uniq("walm")
    t0 = rw.now_ms() - 100000
    write_stream(n1.url("/api/v1/write"), name, 200, t0)
    n1.stop()

    n2 = make_nginx(conf(port, target, wal, max_=50))
    text = answer(n2, name)
    assert count(text) == 50
    import json
    ts = sorted(e["timestamp"] for d in json.loads(text)["data"]
                for e in d["exemplars"])
    # the newest 50: timestamps t0+150 .. t0+199
    assert ts[0] == pytest.approx((t0 + 150) / 1000.0)
    assert ts[-1] == pytest.approx((t0 + 199) / 1000.0)


def test_torn_tail_is_cut(make_nginx, sink, tmp_path):
    wal = str(tmp_path / "wal")
    port = free_port()
    target = "http://127.0.0.1:%d" % sink.port
    n1 = make_nginx(conf(port, target, wal), workers=1)
    name = rw.uniq("walt")
    t0 = rw.now_ms() - 100000
    write_stream(n1.url("/api/v1/write"), name, 30, t0)
    n1.stop()

    seg = sorted(glob.glob(os.path.join(wal, "exemplars-w*.wal")))[-1]
    size = os.path.getsize(seg)
    with open(seg, "ab") as f:
        f.write(b"\x99\x00\x00\x00garbage")     # a torn frame
    n2 = make_nginx(conf(port, target, wal), workers=1)
    assert count(answer(n2, name)) == 30
    assert "torn or corrupt tail cut off at offset %d" % size \
        in n2.error_log_text()
    assert os.path.getsize(seg) == size
    assert metric(status(n2), "promgate_wal_truncations_total") == 1


def test_segments_rotate_and_are_deleted(make_nginx, sink, tmp_path):
    wal = str(tmp_path / "wal")
    port = free_port()
    target = "http://127.0.0.1:%d" % sink.port
    n = make_nginx(conf(port, target, wal, max_=200, extra="segment=64k"),
                        workers=1)
    name = rw.uniq("wals")
    t0 = rw.now_ms() - 100000
    write_stream(n.url("/api/v1/write"), name, 4000, t0, per_request=50)
    st = status(n)
    assert metric(st, "promgate_wal_segments_created_total") > 5
    assert metric(st, "promgate_wal_segments_deleted_total") > 0
    # disk use stays about the ring's content: a few 64k segments
    files = glob.glob(os.path.join(wal, "exemplars-w*.wal"))
    assert len(files) <= 4, files
    n.stop()
    n2 = make_nginx(conf(port, target, wal, max_=200, extra="segment=64k"),
                         workers=1)
    assert count(answer(n2, name)) == 200


def test_full_disk_is_counted_not_fatal(make_nginx, sink, tmp_path):
    wal = str(tmp_path / "wal")
    os.makedirs(wal)
    port = free_port()
    target = "http://127.0.0.1:%d" % sink.port
    n = make_nginx(conf(port, target, wal), workers=1)
    pids = n.worker_pids()
    # the segment the worker opens at its first write: named by its pid
    os.symlink("/dev/full", os.path.join(
        wal, "exemplars-w%04d-%020d.wal" % (min(pids), 1)))
    name = rw.uniq("walf")
    t0 = rw.now_ms() - 100000
    write_stream(n.url("/api/v1/write"), name, 40, t0)
    assert count(answer(n, name)) == 40          # served from memory
    st = status(n)
    assert metric(st, "promgate_wal_write_errors_total") >= 1
    assert n.worker_pids() == pids
    text = n.error_log_text()
    assert "exemplar WAL of zone \"exemplars\" could not write" in text
    # logged once per burst, not per write
    assert text.count("could not write") == 1


def test_fsync_interval(make_nginx, sink, tmp_path):
    wal = str(tmp_path / "wal")
    port = free_port()
    target = "http://127.0.0.1:%d" % sink.port
    n = make_nginx(conf(port, target, wal, extra="fsync=200ms"), workers=1)
    name = rw.uniq("walfs")
    write_stream(n.url("/api/v1/write"), name, 20, rw.now_ms() - 1000)
    assert wait_for(lambda: metric(status(n), "promgate_wal_fsyncs_total")
                    >= 1, 10)


def test_unusable_wal_path_fails_nginx_t(make_nginx, sink, tmp_path):
    port = free_port()
    target = "http://127.0.0.1:%d" % sink.port
    n = make_nginx(conf(port, target, "/proc/promgate-no/wal"), start=False)
    n.error_log_problems = lambda: []        # the [emerg] is the point
    code, out = n.test_config()
    assert code != 0
    assert "/proc/promgate-no/wal" in out, out


# ------------------------------------------------- reload with another max


def wal_records(wal):
    """(seq, segment) of every good frame in the WAL's segments: a frame is
    length (u32 LE), CRC32C (u32), payload starting with the seq (u64 LE)"""
    import struct
    out = []
    for seg in sorted(glob.glob(os.path.join(wal, "exemplars-w*.wal"))):
        with open(seg, "rb") as f:
            data = f.read()
        off = 0
        while len(data) - off >= 8:
            n, _ = struct.unpack_from("<II", data, off)
            if n < 24 or n > len(data) - off - 8:
                break
            out.append((struct.unpack_from("<Q", data, off + 8)[0],
                        os.path.basename(seg)))
            off += 8 + n
    return out


def trace_ids(text):
    import json
    return {e["labels"]["trace_id"] for d in json.loads(text)["data"]
            for e in d["exemplars"]}


def test_reload_with_changed_max_under_load(make_nginx, make_fake, tmp_path):
    """A reload that changes max= (same zone size) while writes are in
    flight in the old workers (the storage answers after 200 ms, exemplars
    are stored on its 2xx): the ring live workers write through is kept,
    with its max, until a restart; a [warn] says so.  No crash, no [alert],
    every acknowledged exemplar is served, WAL sequence numbers unique."""
    import threading
    import time
    from fakeup import Resp

    slow = make_fake(default=Resp(204, delay=0.2))
    wal = str(tmp_path / "wal")
    port = free_port()
    target = "http://127.0.0.1:%d" % slow.port
    n = make_nginx(conf(port, target, wal, max_=4000), workers=2)
    pids = n.worker_pids()
    name = rw.uniq("walr")
    t0 = rw.now_ms() - 100000
    url = n.url("/api/v1/write")
    lock = threading.Lock()
    sent, acked, failed = set(), set(), []
    stop = threading.Event()

    def writer(w):
        k = 0
        while not stop.is_set():
            ids = ["%08x%08x%016x" % (w, k, j) for j in range(10)]
            s = [rw.series(name, {"w": str(w), "j": str(j)},
                           samples=[(1, t0 + k)],
                           exemplars=[({"trace_id": ids[j]}, j, t0 + k)])
                 for j in range(10)]
            with lock:
                sent.update(ids)
            try:
                r = rw.post(url, rw.compress(rw.write_request(s)))
            except Exception as e:          # noqa: BLE001
                failed.append(repr(e))
                k += 1
                continue
            if r.status_code == 204:
                with lock:
                    acked.update(ids)
            else:
                failed.append(r.status_code)
            k += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        for max_ in (500, 7000):
            n.write_conf(conf(port, target, wal, max_=max_))
            n.reload()
            time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    assert failed == [], failed[:5]
    assert len(acked) > 300

    # nobody died, and the old workers left cleanly
    text = n.error_log_text()
    assert "exited on signal" not in text, text[-3000:]
    assert not (n.worker_pids() & pids)

    # the ring kept its max: all acknowledged exemplars are there (fewer
    # than 4000 were written), nothing that was not sent
    got = trace_ids(answer(n, name))
    assert acked <= got, "%d acknowledged exemplars missing" % len(acked - got)
    assert got <= sent
    assert ('exemplar zone "exemplars" keeps max=4000 until a restart: '
            'max=500 needs new shared memory') in text, text[-3000:]

    # WAL sequence numbers are unique, and the WAL has every exemplar
    recs = wal_records(wal)
    seqs = [s for s, _ in recs]
    dups = sorted(s for s in set(seqs) if seqs.count(s) > 1)
    assert dups == [], "duplicate WAL sequence numbers: %s" % dups[:10]
    assert len(seqs) >= len(acked)

    # a restart takes the new max and replays what fits
    n.stop()
    n2 = make_nginx(conf(port, target, wal, max_=7000), workers=2)
    assert trace_ids(answer(n2, name)) == got


# ------------------------------------------- rotation during a slow fsync


SLOW_FSYNC_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char  logpath[512];
static int   delay_ms;

__attribute__((constructor)) static void
init(void)
{
    const char  *p;

    if ((p = getenv("PG_SLOW_FSYNC_LOG")) != NULL) {
        snprintf(logpath, sizeof(logpath), "%s", p);
    }
    if ((p = getenv("PG_SLOW_FSYNC_MS")) != NULL) {
        delay_ms = atoi(p);
    }
}

/* fsync of a WAL segment: slow, then logged as "path size" */
int
fsync(int fd)
{
    char         link[64], path[512], line[600];
    int          rc, l, n;
    ssize_t      len;
    struct stat  st;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    len = readlink(link, path, sizeof(path) - 1);
    if (len <= 0 || (path[len] = '\0', strstr(path, ".wal") == NULL)) {
        return (int) syscall(SYS_fsync, fd);
    }
    usleep(delay_ms * 1000);
    rc = (int) syscall(SYS_fsync, fd);
    if (rc == 0 && fstat(fd, &st) == 0 && logpath[0]) {
        n = snprintf(line, sizeof(line), "%s %lld\n", path,
                     (long long) st.st_size);
        l = open(logpath, O_WRONLY | O_APPEND | O_CREAT, 0644);
        if (l >= 0) {
            (void) write(l, line, n);
            close(l);
        }
    }
    return rc;
}
"""


def wal_fds(pid, wal):
    n = 0
    d = "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, fd)).startswith(wal + "/"):
                n += 1
        except OSError:
            pass
    return n


def test_rotation_during_slow_fsync(make_nginx, sink, tmp_path,
                                    monkeypatch):
    """64k segments rotate several times during one fsync (300 ms, made
    slow by an LD_PRELOAD shim): no descriptor is leaked, and every segment
    is fsynced at its final size (a rotated segment before it is closed,
    the last one at the quit); all records read back, none cut."""
    import subprocess
    import time

    shim = str(tmp_path / "slow_fsync.so")
    src = tmp_path / "slow_fsync.c"
    src.write_text(SLOW_FSYNC_C)
    r = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", shim,
                        str(src)], capture_output=True, timeout=60)
    if r.returncode != 0:
        pytest.skip("cannot build the fsync shim: %s" % r.stderr[-300:])

    wal = str(tmp_path / "wal")
    log = str(tmp_path / "fsync.log")
    monkeypatch.setenv("LD_PRELOAD", shim)
    monkeypatch.setenv("PG_SLOW_FSYNC_MS", "300")
    monkeypatch.setenv("PG_SLOW_FSYNC_LOG", log)
    # under ASan the shim comes before its runtime: allowed here
    asan = os.environ.get("ASAN_OPTIONS")
    if asan is not None:
        monkeypatch.setenv("ASAN_OPTIONS", asan + ":verify_asan_link_order=0")

    port = free_port()
    target = "http://127.0.0.1:%d" % sink.port
    n = make_nginx(conf(port, target, wal, max_=20000,
                        extra="segment=64k fsync=50ms"), workers=1)
    monkeypatch.delenv("LD_PRELOAD")
    (pid,) = n.worker_pids()
    name = rw.uniq("walrot")
    t0 = rw.now_ms() - 100000
    url = n.url("/api/v1/write")
    most = 0
    for k in range(0, 6000, 100):
        write_stream(url, name + "_%d" % k, 100, t0 + k, per_request=100)
        most = max(most, wal_fds(pid, wal))
    st = status(n)
    created = metric(st, "promgate_wal_segments_created_total")
    assert created >= 8, created
    assert metric(st, "promgate_wal_segments_deleted_total") == 0

    # the closed segments' descriptors go once they are synced
    assert wait_for(lambda: wal_fds(pid, wal) <= 1, 10), \
        "%d WAL descriptors open in the worker" % wal_fds(pid, wal)
    # several rotations happened during one fsync
    assert most >= 3, most
    n.stop()

    # every segment was synced at its final size; nothing was cut
    synced = {}
    with open(log) as f:
        for line in f:
            path, size = line.rsplit(" ", 1)
            synced[path] = max(synced.get(path, 0), int(size))
    segs = sorted(glob.glob(os.path.join(wal, "exemplars-w*.wal")))
    assert len(segs) == created
    for seg in segs:
        assert synced.get(seg) == os.path.getsize(seg), \
            "%s: %s bytes, synced at %s" % (seg, os.path.getsize(seg),
                                            synced.get(seg))
    seqs = [s for s, _ in wal_records(wal)]
    assert len(seqs) == 6000 and len(set(seqs)) == 6000

    n2 = make_nginx(conf(port, target, wal, max_=20000), workers=1)
    assert metric(status(n2), "promgate_wal_replayed_records_total") == 6000
    assert metric(status(n2), "promgate_wal_truncations_total") == 0


# ------------------------------------- a WAL directory the workers can't use


def refused(make_nginx, sink, tmp_path, wal, user=None):
    """nginx -t and a start fail; returns the output of nginx -t"""
    port = free_port()
    target = "http://127.0.0.1:%d" % sink.port
    n = make_nginx(conf(port, target, wal), start=False)
    n.error_log_problems = lambda: []        # the [emerg] is the point
    if user:
        with open(n.conf) as f:
            text = f.read()
        text = text.replace("user root root;", "")
        n.write_raw("user %s;\n" % user + text)
    code, out = n.test_config()
    assert code != 0, out
    assert wal in out, out
    with pytest.raises(RuntimeError):
        n.start(timeout=10)
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="the tests run nginx as root")
def test_wal_path_is_a_file(make_nginx, sink, tmp_path):
    wal = str(tmp_path / "walfile")
    with open(wal, "w") as f:
        f.write("not a directory\n")
    out = refused(make_nginx, sink, tmp_path, wal)
    assert "is not a directory" in out, out
    assert 'the workers\' user "root"' in out, out


@pytest.mark.skipif(os.geteuid() != 0, reason="the tests run nginx as root")
def test_wal_dir_read_only(make_nginx, sink, tmp_path):
    import subprocess
    wal = str(tmp_path / "walro")
    os.makedirs(wal)
    r = subprocess.run(["mount", "--bind", wal, wal], capture_output=True,
                       timeout=30)
    if r.returncode != 0:
        pytest.skip("cannot bind-mount (needs CAP_SYS_ADMIN): %s" % r.stderr)
    try:
        r = subprocess.run(["mount", "-o", "remount,bind,ro", wal],
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            pytest.skip("cannot remount read-only: %s" % r.stderr)
        out = refused(make_nginx, sink, tmp_path, wal)
        assert "is on a read-only file system" in out, out
        assert 'the workers\' user "root"' in out, out
    finally:
        subprocess.run(["umount", wal], capture_output=True, timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason="the tests run nginx as root")
def test_wal_dir_not_reachable_by_worker_user(make_nginx, sink, tmp_path):
    """the master (root) creates it and gives it to the workers' user, but
    that user cannot get through its 0700 parent"""
    import pwd
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    priv = tmp_path / "priv"
    priv.mkdir(mode=0o700)
    os.chmod(str(priv), 0o700)
    wal = str(priv / "wal")
    out = refused(make_nginx, sink, tmp_path, wal, user="nobody nogroup")
    assert "cannot be reached" in out, out
    assert 'the workers\' user "nobody"' in out, out
