"""Memory and connection limits (issue 12, item 4) against a real broker process: hostile
or stalled peers hold bounded memory, are closed after their deadlines, and are refused
or queued at the connection limits, while other clients keep being served.

Run with `-s` to see the RSS figures each test measures."""

from __future__ import annotations

import resource
import select
import socket
import struct
import threading
import time

import kafka_wire as w
import pytest
from broker_process import target
from clients import consume_range, create_topic, produce_all, producer
from test_metrics import scrape, total

MB = 1024 * 1024
IDLE_MS = 2000


def memory_mb(pid: int) -> dict:
    """VmRSS and VmHWM of a process, in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, kb = line.split()[:2]
                out[name.rstrip(":")] = int(kb) / 1024
    return out


class RssSampler(threading.Thread):
    """The highest VmRSS of a process, sampled every 50 ms until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self._done = pid, 0.0, threading.Event()

    def run(self):
        while not self._done.is_set():
            self.peak = max(self.peak, memory_mb(self.pid)["VmRSS"])
            self._done.wait(0.05)

    def stop(self) -> float:
        self._done.set()
        self.join(timeout=5)
        return self.peak


def raise_open_files(need: int) -> None:
    """Enough descriptors in this test process (and the broker it starts) only."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} open files, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def api_versions(s: socket.socket, corr: int = 1, timeout: float = 10.0) -> int:
    """One ApiVersions v0 round trip on `s`; returns the error code."""
    s.settimeout(timeout)
    s.sendall(w.frame(w.api_versions_request(0, corr)))
    (n,) = struct.unpack(">i", recv_exact(s, 4))
    got_corr, err = struct.unpack_from(">ih", recv_exact(s, n))
    assert got_corr == corr
    return err


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def is_open(s: socket.socket) -> bool:
    """No EOF or reset waiting on `s` (nothing else is expected on it)."""
    timeout = s.gettimeout()
    s.settimeout(0)  # else Python waits for readability first
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except (ConnectionResetError, BrokenPipeError):
        return False
    finally:
        s.settimeout(timeout)


def wait_closed(socks: list[socket.socket], timeout: float) -> dict[socket.socket, float]:
    """Seconds until the peer closed each socket (EOF or reset), within `timeout`."""
    start = time.monotonic()
    closed: dict[socket.socket, float] = {}
    by_fd = {s.fileno(): s for s in socks}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while len(closed) < len(socks) and time.monotonic() - start < timeout:
        for fd, _ in poller.poll(200):
            s = by_fd[fd]
            if s not in closed and not is_open(s):
                closed[s] = time.monotonic() - start
                poller.unregister(fd)
    return closed


def service_works(broker, topic: str, tag: bytes, n: int = 20) -> None:
    """A librdkafka producer and consumer, and a raw produce, are served right now."""
    before = consume_range(broker.bootstrap, topic, 0, count=None, timeout=30)
    p = producer(broker.bootstrap)
    produce_all(p, topic, [{"key": tag, "value": tag + b"-%d" % i} for i in range(n)], timeout=30)
    err, base = w.produce(broker.port, topic, 0, w.record_batch([(tag, b"raw")], int(time.time() * 1000)))
    assert err == w.ERR_NONE and base == len(before) + n
    recs = consume_range(broker.bootstrap, topic, 0, start=len(before), count=n + 1, timeout=30)
    assert [r.value for r in recs] == [tag + b"-%d" % i for i in range(n)] + [b"raw"]


# ---- memory ---------------------------------------------------------------------------

BUDGET = 100 * MB
ANNOUNCED = 100 * MB - 1024  # within socket.request.max.bytes (100 MiB, the default)


@pytest.mark.broker_settings(**{"queued.max.request.bytes": BUDGET})
@pytest.mark.skipif(
    target() == "kafka",
    reason="Kafka's pool allocates each announced frame whole, and a JVM's RSS follows its "
    "heap sizing (-Xms/-Xmx), not the request bytes held: the RSS bound means nothing there",
)
def test_huge_announced_frames_hold_no_more_than_the_budget(broker, topic):
    """40 connections announce 100 MB frames and push 12 MB each as fast as the broker
    takes them (480 MB): request memory stays within queued.max.request.bytes plus one
    frame (the overdraft that keeps partial frames from deadlocking), and a normal
    producer and consumer are served meanwhile."""
    create_topic(broker.bootstrap, topic)
    service_works(broker, topic, b"warm")
    time.sleep(1)
    baseline = memory_mb(broker.proc.pid)
    sampler = RssSampler(broker.proc.pid)
    sampler.start()
    attackers = []
    for i in range(40):
        s = connect(broker.port)
        s.sendall(struct.pack(">i", ANNOUNCED) + w.header_v1(w.API_PRODUCE, 7, i))
        s.setblocking(False)
        attackers.append(s)
    chunk = b"\x00" * (128 * 1024)
    per_attacker = 12 * MB
    sent = [0] * len(attackers)
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and min(sent) < per_attacker:
            for i, s in enumerate(attackers):
                if sent[i] < per_attacker:
                    try:
                        sent[i] += s.send(chunk)
                    except BlockingIOError:
                        pass
            time.sleep(0.01)
        time.sleep(1)
        during = memory_mb(broker.proc.pid)
        # Small requests need no budget: the broker keeps serving while it is spent.
        started = time.monotonic()
        service_works(broker, topic, b"attacked")
        served_in = time.monotonic() - started
        held = total(scrape(broker), "rill_queued_request_bytes")
    finally:
        peak = sampler.stop()
    hwm = memory_mb(broker.proc.pid)["VmHWM"]
    print(
        f"\nRSS baseline {baseline['VmRSS']:.0f} MiB; sent {sum(sent) / MB:.0f} MiB on 40 connections; "
        f"during {during['VmRSS']:.0f} MiB, peak sampled {peak:.0f} MiB, VmHWM {hwm:.0f} MiB; "
        f"budget held {held / MB:.0f} MiB; service round trip {served_in:.1f}s"
    )
    assert sum(sent) > 2.5 * BUDGET, f"the attack pushed only {sum(sent) / MB:.0f} MiB"
    bound = baseline["VmRSS"] + (BUDGET + ANNOUNCED) / MB + 32
    assert peak <= bound, f"peak RSS {peak:.0f} MiB over {bound:.0f} MiB"
    assert BUDGET * 0.9 <= held <= BUDGET + ANNOUNCED, held
    assert served_in < 20
    for s in attackers:
        s.close()
    # Closed attackers give every byte back, and the service goes on.
    deadline = time.monotonic() + 10
    while total(scrape(broker), "rill_queued_request_bytes") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert total(scrape(broker), "rill_queued_request_bytes") == 0
    service_works(broker, topic, b"after")


# ---- time limits ----------------------------------------------------------------------


@pytest.mark.broker_settings(**{"connections.max.idle.ms": IDLE_MS})
def test_idle_connections_are_closed_after_connections_max_idle_ms(broker, topic):
    create_topic(broker.bootstrap, topic)
    silent = [connect(broker.port) for _ in range(5)]
    served = connect(broker.port)
    assert api_versions(served) == 0  # idle from its last response on
    busy = connect(broker.port)
    opened = time.monotonic()
    # A connection with a request every 500 ms is never idle.
    corr = 0
    while time.monotonic() - opened < IDLE_MS / 1000 * 0.6:
        corr += 1
        assert api_versions(busy, corr) == 0
        time.sleep(0.5)
    assert all(is_open(s) for s in silent + [served]), "closed before connections.max.idle.ms"
    closed = wait_closed(silent + [served], timeout=IDLE_MS / 1000 + 5)
    assert len(closed) == 6, f"{6 - len(closed)} idle connections still open"
    while time.monotonic() - opened < IDLE_MS / 1000 * 2:
        corr += 1
        assert api_versions(busy, corr) == 0
        time.sleep(0.5)
    service_works(broker, topic, b"after-idle")
    if target() == "rill":
        assert total(scrape(broker), "rill_connections_closed_total", reason="idle") >= 6
    for s in silent + [served, busy]:
        s.close()


@pytest.mark.broker_settings(**{"connections.max.idle.ms": IDLE_MS})
def test_request_that_stops_midway_is_closed(broker, topic):
    """A frame announced and begun, then silence: closed within the deadline."""
    create_topic(broker.bootstrap, topic)
    stalled = connect(broker.port)
    stalled.sendall(struct.pack(">i", 1000) + w.header_v1(w.API_METADATA, 4, 1))
    start = time.monotonic()
    closed = wait_closed([stalled], timeout=IDLE_MS / 1000 + 5)
    assert stalled in closed, "a request that never completes stayed open"
    assert closed[stalled] >= IDLE_MS / 1000 * 0.75
    print(f"\nstalled request closed after {time.monotonic() - start:.1f}s (limit {IDLE_MS} ms)")
    service_works(broker, topic, b"after-stall")
    stalled.close()


@pytest.mark.broker_settings(**{"connections.max.idle.ms": IDLE_MS})
@pytest.mark.skipif(
    target() == "kafka",
    reason="Kafka counts every byte received as activity, so a peer trickling one byte every "
    "200 ms keeps an unfinished request open forever; Rill gives the whole frame "
    "connections.max.idle.ms from its first byte",
)
def test_trickled_request_is_closed_at_its_deadline(broker, topic):
    create_topic(broker.bootstrap, topic)
    s = connect(broker.port)
    s.sendall(struct.pack(">i", 100_000) + w.header_v1(w.API_PRODUCE, 7, 1))
    start = time.monotonic()
    closed_after = None
    while time.monotonic() - start < IDLE_MS / 1000 + 6:
        try:
            s.sendall(b"\x00")
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - start
            break
        if not is_open(s):
            closed_after = time.monotonic() - start
            break
        time.sleep(0.2)
    assert closed_after is not None, "a trickled request was never closed"
    assert IDLE_MS / 1000 * 0.75 <= closed_after <= IDLE_MS / 1000 + 3, closed_after
    assert total(scrape(broker), "rill_connections_closed_total", reason="request_deadline") == 1
    service_works(broker, topic, b"after-trickle")
    s.close()


# ---- connection counts ----------------------------------------------------------------


@pytest.mark.broker_settings(
    **{"max.connections.per.ip": 3, "max.connections.per.ip.overrides": "127.0.0.2:5"}
)
def test_max_connections_per_ip_closes_the_connection_over_the_limit(broker, topic):
    create_topic(broker.bootstrap, topic)
    time.sleep(1)  # the admin client's connections are gone
    for source, limit in (("127.0.0.1", 3), ("127.0.0.2", 5)):
        admitted = [connect(broker.port, source) for _ in range(limit)]
        for i, s in enumerate(admitted):
            assert api_versions(s, i + 1) == 0
        over = connect(broker.port, source)  # the TCP handshake completes; then it is closed
        with pytest.raises((ConnectionError, OSError)):
            api_versions(over, 99, timeout=5)
        # Another address is not affected, and a freed slot is usable at once.
        other = connect(broker.port, "127.0.0.3")
        assert api_versions(other) == 0
        admitted.pop().close()
        time.sleep(0.5)
        again = connect(broker.port, source)
        assert api_versions(again, 7) == 0
        for s in admitted + [over, other, again]:
            s.close()
        time.sleep(0.5)
    if target() == "rill":
        refused = total(scrape(broker), "rill_connections_refused_total", reason="max.connections.per.ip")
        assert refused == 2


@pytest.mark.broker_settings(**{"max.connections": 4})
def test_max_connections_blocks_accepting_until_a_slot_frees(broker, topic):
    """Kafka's semantics: over the limit, new connections wait unaccepted (in the listen
    backlog) while the open ones keep being served; one closes, the next is accepted."""
    create_topic(broker.bootstrap, topic)
    time.sleep(1)
    open_ = [connect(broker.port) for _ in range(4)]
    for i, s in enumerate(open_):
        assert api_versions(s, i + 1) == 0
    waiting = connect(broker.port)
    waiting.sendall(w.frame(w.api_versions_request(0, 42)))
    waiting.settimeout(2)
    with pytest.raises(socket.timeout):
        waiting.recv(4)
    # The open connections are still served, produce included.
    corr = 100
    for s in open_:
        corr += 1
        s.sendall(w.frame(w.produce_request_v7(corr, topic, 0, w.record_batch([(None, b"v")], int(time.time() * 1000)))))
        (n,) = struct.unpack(">i", recv_exact(s, 4))
        resp = w.parse_produce_v7(recv_exact(s, n))
        assert resp["correlation_id"] == corr and resp[(topic, 0)][0] == w.ERR_NONE
    open_.pop().close()
    waiting.settimeout(10)
    (n,) = struct.unpack(">i", recv_exact(waiting, 4))
    corr_got, err = struct.unpack_from(">ih", recv_exact(waiting, n))
    assert (corr_got, err) == (42, 0)
    for s in open_ + [waiting]:
        s.close()
    time.sleep(0.5)
    recs = consume_range(broker.bootstrap, topic, 0, count=None, timeout=30)
    assert [r.value for r in recs] == [b"v"] * 4


@pytest.mark.broker_settings(**{"connections.max.idle.ms": 5000})
@pytest.mark.skipif(
    target() == "kafka",
    reason="Kafka closes at most one expired connection per network-thread poll "
    "(Selector.maybeCloseOldestConnection): here about 10 a second, so reaping 2,000 takes "
    "minutes, beyond this test's bound (seen: 219 of 2,000 closed in 25 s); the idle "
    "semantics are checked against Kafka by the test above",
)
def test_many_idle_connections_are_held_cheaply_and_reaped(broker, topic):
    count = 2000
    raise_open_files(count + 512)
    create_topic(broker.bootstrap, topic)
    time.sleep(1)
    baseline = memory_mb(broker.proc.pid)
    socks = []
    start = time.monotonic()
    for i in range(count):
        s = connect(broker.port)
        if i % 10 == 0:
            assert api_versions(s, i + 1) == 0  # accepted and served, then idle
        socks.append(s)
    opened_in = time.monotonic() - start
    time.sleep(0.5)
    held = memory_mb(broker.proc.pid)
    service_works(broker, topic, b"among-idle")
    if target() == "rill":
        assert total(scrape(broker), "rill_connections") >= count
    closed = wait_closed(socks, timeout=5 + 20)
    reaped_in = time.monotonic() - start
    after = memory_mb(broker.proc.pid)
    print(
        f"\n{count} idle connections: RSS baseline {baseline['VmRSS']:.0f} MiB, with them open "
        f"{held['VmRSS']:.0f} MiB (+{(held['VmRSS'] - baseline['VmRSS']) * 1024 / count:.1f} KiB each), "
        f"after reaping {after['VmRSS']:.0f} MiB; opened in {opened_in:.1f}s, all closed {reaped_in:.1f}s "
        f"after the first opened"
    )
    assert len(closed) == count, f"{count - len(closed)} idle connections never closed"
    if target() == "rill":
        assert held["VmRSS"] - baseline["VmRSS"] < 64, "idle connections cost more than 32 KiB each"
        assert total(scrape(broker), "rill_connections_closed_total", reason="idle") >= count
        assert total(scrape(broker), "rill_connections") <= 2
    for s in socks:
        s.close()
    service_works(broker, topic, b"after-reap")


# ---- shutdown -------------------------------------------------------------------------


def fetch_request_v4(corr: int, topic: str, partition: int, offset: int, max_wait_ms: int) -> bytes:
    body = struct.pack(">iiiib", -1, max_wait_ms, 1, 1 << 20, 0)
    body += struct.pack(">i", 1) + w._str(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 1 << 20)
    return w.header_v1(w.API_FETCH, 4, corr) + body


@pytest.mark.broker_settings(**{"controlled.shutdown.enable": "false"})
@pytest.mark.skipif(
    target() == "kafka",
    reason="Kafka closes client connections at shutdown without answering a long-poll fetch "
    "in flight (seen: EOF before any response); Rill drains requests in flight instead",
)
def test_shutdown_answers_the_request_in_flight(broker, topic):
    """SIGTERM while a long-poll fetch waits: the fetch is answered before the connection
    closes, and the broker exits cleanly (drain, not abort). No controlled shutdown, so
    no leadership change answers the fetch early."""
    create_topic(broker.bootstrap, topic)
    err, _ = w.produce(broker.port, topic, 0, w.record_batch([(None, b"v")], int(time.time() * 1000)))
    assert err == w.ERR_NONE
    s = connect(broker.port, timeout=15)
    s.sendall(w.frame(fetch_request_v4(77, topic, 0, 1, max_wait_ms=3000)))
    time.sleep(0.5)  # the fetch is parked waiting for data
    codes: list[int] = []
    stopper = threading.Thread(target=lambda: codes.append(broker.stop(timeout=20)))
    stopper.start()
    stopped_at = time.monotonic()
    (n,) = struct.unpack(">i", recv_exact(s, 4))
    resp = recv_exact(s, n)
    (corr,) = struct.unpack_from(">i", resp)
    assert corr == 77
    print(f"\nfetch in flight answered {time.monotonic() - stopped_at:.1f}s after SIGTERM")
    stopper.join(timeout=25)
    assert codes and codes[0] in broker.clean_exit_codes(), codes
    s.close()
