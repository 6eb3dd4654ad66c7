"""Bounded client workloads for the cluster fault tests (confluent-kafka).

ProducerWorkload   acks=all, idempotent; values `p{n}-{seq}` (unique, so the checker can
                   find every record), partitions round-robin by seq, a bounded count at
                   a bounded rate. Delivery reports record (partition, offset, value) of
                   every acknowledged record with the time of the ack, and every error
                   (delivery or client-level) classified fatal / retriable / other.
ConsumerWorkload   assign()s every partition from the beginning and records each
                   (partition, offset, value) it reads while the faults happen.
read_log           reads every partition from log start to high watermark after the run.

Each runs in its own thread and stops on its own (count reached, deadline, or stop()).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

# Client-level conditions librdkafka reports while it works around a failed broker:
# the client keeps going by itself, so they are retriable for the application.
TRANSIENT_CODES = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT,  # the record may or may not have landed; resending is safe
    KafkaError._RESOLVE,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.REQUEST_TIMED_OUT,
}


def classify(err: KafkaError) -> str:
    """'fatal' (the client is unusable), 'retriable' (the client or the application
    may simply try again), or 'other' (a real error of this request)."""
    if err.fatal():
        return "fatal"
    if err.retriable() or err.code() in TRANSIENT_CODES:
        return "retriable"
    return "other"


@dataclass(frozen=True)
class Ack:
    partition: int
    offset: int
    value: str
    at: float  # time.monotonic() of the delivery report


@dataclass(frozen=True)
class SeenError:
    source: str  # "delivery" or "client"
    code: str
    kind: str  # fatal | retriable | other
    text: str
    at: float
    value: str | None = None


class ProducerWorkload:
    """One idempotent acks=all producer in a thread. `errors` keeps everything the
    application was told; `acked` what it was promised."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, producer_id: int = 0,
                 count: int = 3000, rate: float = 200.0, flush_timeout: float = 60.0, **conf):
        self.topic = topic
        self.partitions = partitions
        self.producer_id = producer_id
        self.count = count
        self.rate = rate
        self.flush_timeout = flush_timeout
        self.conf = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 45000,
            "request.timeout.ms": 5000,
            "retry.backoff.ms": 100,
            "retry.backoff.max.ms": 500,
            "topic.metadata.refresh.interval.ms": 2000,
            "error_cb": self._on_client_error,
        }
        self.conf.update(conf)
        self.acked: list[Ack] = []
        self.attempted: list[str] = []
        self.errors: list[SeenError] = []
        self.sent_at: dict[str, float] = {}
        self.unflushed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()

    # ---- callbacks (run on the producer thread inside poll/flush) -----------------------
    def _on_client_error(self, err: KafkaError) -> None:
        with self._lock:
            self.errors.append(SeenError("client", err.name(), classify(err), err.str(), time.monotonic()))

    def _on_delivery(self, err, msg) -> None:
        now = time.monotonic()
        value = msg.value().decode()
        with self._lock:
            if err is not None:
                self.errors.append(SeenError("delivery", err.name(), classify(err), err.str(), now, value))
            else:
                # offset() is None when librdkafka knows the record landed but not where
                self.acked.append(Ack(msg.partition(), msg.offset(), value, now))

    # ---- running ------------------------------------------------------------------------
    def start(self) -> "ProducerWorkload":
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"producer-{self.producer_id}")
        self._thread.start()
        return self

    def _run(self) -> None:
        p = Producer(self.conf)
        try:
            t0 = time.monotonic()
            for seq in range(self.count):
                if self._stop.is_set():
                    break
                self._pace(t0, seq)
                self._produce(p, seq)
                p.poll(0)
            self.unflushed = p.flush(self.flush_timeout)
        finally:
            self.done.set()

    def _pace(self, t0: float, seq: int) -> None:
        due = t0 + seq / self.rate
        while not self._stop.is_set():
            wait = due - time.monotonic()
            if wait <= 0:
                return
            time.sleep(min(wait, 0.05))

    def _produce(self, p: Producer, seq: int) -> None:
        value = f"p{self.producer_id}-{seq}"
        with self._lock:  # before produce(): "sent after t" must mean it
            self.sent_at[value] = time.monotonic()
        deadline = time.monotonic() + 30
        while True:
            try:
                p.produce(self.topic, value=value.encode(), partition=seq % self.partitions,
                          on_delivery=self._on_delivery)
                break
            except BufferError:
                if time.monotonic() > deadline:
                    raise
                p.poll(0.1)
        with self._lock:
            self.attempted.append(value)

    def stop(self) -> None:
        """Stop sending; what is in flight is still flushed."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread (sending + flush); AssertionError if it overruns."""
        limit = timeout if timeout is not None else self.count / self.rate + self.flush_timeout + 10
        self._thread.join(limit)
        assert not self._thread.is_alive(), f"producer {self.producer_id} still running after {limit:.0f}s"

    # ---- questions ----------------------------------------------------------------------
    def acked_count(self, partition: int | None = None, after: float | None = None) -> int:
        with self._lock:
            return sum(1 for a in self.acked
                       if (partition is None or a.partition == partition) and (after is None or a.at > after))

    def first_ack_of_sent_after(self, t: float, partition: int) -> Ack | None:
        """The earliest acknowledgement in `partition` of a record handed to the client
        after time t. After a leader is killed at t, such a record can only have been
        written by a new leader, whereas an ack merely *received* after t may be the
        dead leader's last response, still in the socket buffer."""
        with self._lock:
            later = [a for a in self.acked if a.partition == partition and self.sent_at.get(a.value, 0) > t]
        return min(later, key=lambda a: a.at) if later else None

    def errors_of_kind(self, *kinds: str) -> list[SeenError]:
        with self._lock:
            return [e for e in self.errors if e.kind in kinds]

    def acked_records(self) -> list[tuple[int, int, str]]:
        with self._lock:
            return [(a.partition, a.offset, a.value) for a in self.acked]

    def error_summary(self) -> dict:
        out: dict[str, int] = {}
        with self._lock:
            for e in self.errors:
                key = f"{e.source}:{e.kind}:{e.code}"
                out[key] = out.get(key, 0) + 1
        return out


class ConsumerWorkload:
    """Reads every partition from the beginning while the faults happen, recording what
    it saw; nothing is committed (no group is used)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, **conf):
        self.topic = topic
        self.partitions = partitions
        self.conf = {
            "bootstrap.servers": bootstrap,
            "group.id": "rill-fault-consumer",  # mandatory in librdkafka; never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 100,
            "topic.metadata.refresh.interval.ms": 2000,
            "error_cb": self._on_error,
        }
        self.conf.update(conf)
        self.seen: list[tuple[int, int, str]] = []
        self.errors: list[SeenError] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _on_error(self, err: KafkaError) -> None:
        with self._lock:
            self.errors.append(SeenError("client", err.name(), classify(err), err.str(), time.monotonic()))

    def start(self) -> "ConsumerWorkload":
        self._thread = threading.Thread(target=self._run, daemon=True, name="consumer")
        self._thread.start()
        return self

    def _run(self) -> None:
        c = Consumer(self.conf)
        try:
            c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(self.partitions)])
            while not self._stop.is_set():
                msg = c.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    self._on_error(err)
                    continue
                with self._lock:
                    self.seen.append((msg.partition(), msg.offset(), msg.value().decode()))
        finally:
            c.close()

    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def stop_and_join(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "consumer thread did not stop"

    def values(self) -> list[str]:
        with self._lock:
            return [v for _p, _o, v in self.seen]


def read_log(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> tuple[list, dict]:
    """Every record of every partition from the log start to the high watermark, as
    (partition, offset, value), plus {partition: (low, high)}."""
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "rill-fault-reader", "enable.auto.commit": False,
        "auto.offset.reset": "error", "enable.partition.eof": True, "fetch.wait.max.ms": 100,
    })
    try:
        marks = {p: _watermarks(c, topic, p, timeout) for p in range(partitions)}
        todo = {p for p, (low, high) in marks.items() if high > low}
        c.assign([TopicPartition(topic, p, marks[p][0]) for p in todo])
        out: list[tuple[int, int, str]] = []
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF or classify(msg.error()) == "retriable":
                    continue
                raise AssertionError(f"reading the log: {msg.error()}")
            p = msg.partition()
            if msg.offset() < marks[p][1]:
                out.append((p, msg.offset(), msg.value().decode()))
            if msg.offset() >= marks[p][1] - 1:
                todo.discard(p)
        assert not todo, f"partitions {sorted(todo)} not read to their high watermark in {timeout}s"
        return out, marks
    finally:
        c.close()


def _watermarks(c: Consumer, topic: str, partition: int, timeout: float) -> tuple[int, int]:
    """(low, high), retrying what a fresh leader answers while it settles (e.g.
    OFFSET_NOT_AVAILABLE: its high watermark is not caught up yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
        except KafkaException as e:
            err = e.args[0]
            if not (err.retriable() or err.code() == KafkaError.OFFSET_NOT_AVAILABLE) or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def save_run(path: Path, producers: list[ProducerWorkload], consumer: ConsumerWorkload | None,
             log: list, extra: dict | None = None) -> None:
    """The run as the checker CLI reads it (python checker.py RUN.json)."""
    run = {
        "acked": [r for p in producers for r in p.acked_records()],
        "attempted": [v for p in producers for v in p.attempted],
        "seen": list(consumer.seen) if consumer else [],
        "log": log,
        "errors": [asdict(e) for p in producers for e in p.errors],
        **(extra or {}),
    }
    Path(path).write_text(json.dumps(run))
