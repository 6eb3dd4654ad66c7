"""Consumer groups with real clients: partitions shared and re-shared, committed
offsets durable across a broker restart, no committed record consumed twice.

Members run as separate processes (group_member.py) so one can be killed with -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka import ConsumerGroupState

from clients import admin, consumer, create_topic, produce_all, producer, watermarks

HERE = Path(__file__).resolve().parent


class Member:
    """A group_member.py process and the events it printed."""

    def __init__(self, name: str, bootstrap: str, group: str, topic: str, *extra: str):
        self.name = name
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "group_member.py"), bootstrap, group, topic, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.lock:
                self.events.append(json.loads(line))

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.events)

    def assignment(self) -> list[int] | None:
        for e in reversed(self.snapshot()):
            if "assigned" in e:
                return e["assigned"]
        return None

    def records(self) -> list[tuple[int, int, str]]:
        return [tuple(e["record"]) for e in self.snapshot() if "record" in e]

    def committed(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for e in self.snapshot():
            if "committed" in e:
                p, o = e["committed"]
                out[p] = max(out.get(p, 0), o)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.reader.join(timeout=5)


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def produce_per_partition(bootstrap: str, topic: str, partitions: int, per_partition: int, tag: str) -> None:
    p = producer(bootstrap, acks="all")
    items = [
        {"partition": part, "value": f"{tag}-p{part}-{i}".encode()}
        for i in range(per_partition)
        for part in range(partitions)
    ]
    msgs = produce_all(p, topic, items)
    assert all(m.error() is None for m in msgs)


def disjoint_cover(members: list[Member], partitions: int) -> bool:
    assigned = [m.assignment() for m in members]
    if any(a is None or not a for a in assigned):
        return False
    flat = [p for a in assigned for p in a]
    return len(flat) == len(set(flat)) and sorted(flat) == list(range(partitions))


def test_three_members_share_rebalance_on_kill_and_offsets_survive_restart(broker, topic):
    partitions, group = 6, f"g-{topic}"[:200]
    create_topic(broker.bootstrap, topic, partitions)
    produce_per_partition(broker.bootstrap, topic, partitions, 50, "a")
    members = [Member(n, broker.bootstrap, group, topic) for n in ("m0", "m1", "m2")]
    try:
        # Three members: disjoint partitions covering all six (range: two each).
        wait_for(lambda: disjoint_cover(members, partitions), 60, "3 members to split 6 partitions")
        assert sorted(len(m.assignment()) for m in members) == [2, 2, 2]

        # One is killed: the other two take its partitions after its session times out.
        victim, survivors = members[2], members[:2]
        killed_at = time.monotonic()
        victim.kill()
        wait_for(lambda: disjoint_cover(survivors, partitions), 30, "2 survivors to cover all 6")
        took = time.monotonic() - killed_at
        assert took < 6 + 15, f"rebalance after kill took {took:.1f}s"

        produce_per_partition(broker.bootstrap, topic, partitions, 50, "b")
        ends = {p: watermarks(broker.bootstrap, topic, p)[1] for p in range(partitions)}
        assert ends == {p: 100 for p in range(partitions)}

        def all_consumed():
            seen = {(p, o) for m in members for (p, o, _) in m.records()}
            return all((p, o) in seen for p in range(partitions) for o in range(100))

        wait_for(all_consumed, 60, "every record to be consumed")
        wait_for(
            lambda: all(max((m.committed().get(p, 0) for m in survivors), default=0) == 100 for p in range(partitions)),
            30,
            "final commits",
        )
        for m in survivors:
            m.stop()

        # None skipped: every offset consumed, with the value produced there.
        consumed: dict[tuple[int, int], list[tuple[str, str]]] = {}
        for m in members:
            for p, o, v in m.records():
                consumed.setdefault((p, o), []).append((m.name, v))
        for p in range(partitions):
            for o in range(100):
                tag = "a" if o < 50 else "b"
                assert (p, o) in consumed, f"partition {p} offset {o} skipped"
                assert {v for _, v in consumed[(p, o)]} == {f"{tag}-p{p}-{o % 50}"}
        # No record consumed twice after a clean commit: a duplicate may only be a record
        # the killed member consumed but had not committed yet.
        victim_committed = victim.committed()
        for (p, o), by in consumed.items():
            if len(by) > 1:
                assert [n for n, _ in by].count("m2") <= 1 and len(by) == 2, (p, o, by)
                assert "m2" in [n for n, _ in by], f"({p},{o}) consumed twice by survivors: {by}"
                assert o >= victim_committed.get(p, 0), f"({p},{o}) re-consumed though committed"

        # The group is empty now; committed offsets survive a broker restart.
        broker.restart()
        c = consumer(broker.bootstrap, **{"group.id": group})
        committed = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
        c.close()
        assert {tp.partition: tp.offset for tp in committed} == {p: 100 for p in range(partitions)}

        # A new member resumes at the commits: it sees only what is produced now.
        produce_per_partition(broker.bootstrap, topic, partitions, 2, "c")
        late = Member("m3", broker.bootstrap, group, topic)
        members.append(late)
        wait_for(lambda: len(late.records()) >= 2 * partitions, 60, "the new member to consume")
        time.sleep(1.0)
        assert sorted((p, o) for p, o, _ in late.records()) == sorted(
            (p, o) for p in range(partitions) for o in (100, 101)
        )
    finally:
        for m in members:
            if m.proc.poll() is None:
                m.kill()


@pytest.mark.parametrize("assignor", ["roundrobin", "cooperative-sticky"])
def test_assignors_split_partitions(broker, topic, assignor):
    partitions, group = 4, f"g-{topic}"[:200]
    create_topic(broker.bootstrap, topic, partitions)
    members = [Member(n, broker.bootstrap, group, topic, "--assignor", assignor) for n in ("m0", "m1")]
    try:
        wait_for(lambda: disjoint_cover(members, partitions), 60, f"{assignor}: 2 members to split 4 partitions")
        assert sorted(len(m.assignment()) for m in members) == [2, 2]
    finally:
        for m in members:
            m.stop()


def test_static_member_restart_keeps_its_partitions(broker, topic):
    partitions, group = 4, f"g-{topic}"[:200]
    create_topic(broker.bootstrap, topic, partitions)
    a = Member("a", broker.bootstrap, group, topic, "--instance-id", "inst-a")
    b = Member("b", broker.bootstrap, group, topic, "--instance-id", "inst-b")
    others = []
    try:
        wait_for(lambda: disjoint_cover([a, b], partitions), 60, "2 static members to split 4 partitions")
        before = b.assignment()
        # A static member that dies and comes back within its session keeps its share.
        b.kill()
        b2 = Member("b2", broker.bootstrap, group, topic, "--instance-id", "inst-b")
        others.append(b2)
        wait_for(lambda: b2.assignment(), 30, "the restarted static member to be assigned")
        assert b2.assignment() == before
        assert a.assignment() is not None and sorted(a.assignment() + b2.assignment()) == list(range(partitions))
    finally:
        for m in [a, b, *others]:
            if m.proc.poll() is None:
                m.kill()


def test_admin_lists_describes_and_deletes_groups(broker, topic):
    group = f"g-{topic}"[:200]
    create_topic(broker.bootstrap, topic, 2)
    produce_per_partition(broker.bootstrap, topic, 2, 3, "x")
    m = Member("m", broker.bootstrap, group, topic)
    a = admin(broker.bootstrap)
    try:
        wait_for(lambda: m.assignment() == [0, 1], 60, "the member to own both partitions")
        wait_for(lambda: len(m.committed()) == 2 and all(o == 3 for o in m.committed().values()), 30, "commits")
        listed = a.list_consumer_groups(request_timeout=15).result(timeout=30)
        assert group in [g.group_id for g in listed.valid]
        d = a.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
        assert d.state == ConsumerGroupState.STABLE
        assert len(d.members) == 1
        assert sorted(tp.partition for tp in d.members[0].assignment.topic_partitions) == [0, 1]
        # A live group cannot be deleted.
        with pytest.raises(Exception) as ei:
            a.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
        assert "NON_EMPTY_GROUP" in str(ei.value)
        offsets = a.list_consumer_group_offsets(
            [__import__("confluent_kafka").ConsumerGroupTopicPartitions(group)], request_timeout=15
        )[group].result(timeout=30)
        assert {tp.partition: tp.offset for tp in offsets.topic_partitions} == {0: 3, 1: 3}
    finally:
        m.stop()
    # Empty now: offsets can be altered (metadata round-trips), then the group deleted.
    d = a.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
    assert d.state == ConsumerGroupState.EMPTY
    from confluent_kafka import ConsumerGroupTopicPartitions

    altered = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 1, metadata="meta-0")])
    a.alter_consumer_group_offsets([altered], request_timeout=15)[group].result(timeout=30)
    offsets = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=15)[group].result(
        timeout=30
    )
    assert {tp.partition: tp.offset for tp in offsets.topic_partitions} == {0: 1, 1: 3}
    assert {tp.partition: tp.metadata for tp in offsets.topic_partitions}[0] == "meta-0"
    a.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
    d = a.describe_consumer_groups([group], request_timeout=15)[group]
    try:
        state = d.result(timeout=30).state
        assert state == ConsumerGroupState.DEAD
    except Exception as e:  # newer brokers answer GROUP_ID_NOT_FOUND
        assert "GROUP_ID_NOT_FOUND" in str(e)


def test_kafka_python_group_consumer_commits(broker, topic):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP

    group = f"g-{topic}"[:200]
    create_topic(broker.bootstrap, topic, 1)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(5):
        p.send(topic, f"v{i}".encode(), partition=0)
    p.flush()
    p.close()
    c = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
    )
    got = []
    for msg in c:
        got.append(msg.value)
        if len(got) == 5:
            break
    c.commit()
    assert got == [f"v{i}".encode() for i in range(5)]
    assert c.committed(KTP(topic, 0)) == 5
    c.close()


def test_java_console_consumer_group_resumes_and_group_command_describes(broker, topic):
    import shutil

    if shutil.which("java") is None:
        pytest.skip("java not installed")
    from test_java_tools import java

    group = f"g-{topic}"[:200]
    create_topic(broker.bootstrap, topic, 2)
    produce_per_partition(broker.bootstrap, topic, 2, 10, "j")

    def console_consume(max_messages: int, timeout_ms: int, check: bool = True):
        return java(
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server", broker.bootstrap, "--topic", topic, "--group", group,
            "--from-beginning", "--max-messages", str(max_messages), "--timeout-ms", str(timeout_ms),
            check=check,
        )

    out = console_consume(20, 30000)
    got = sorted(out.stdout.decode().splitlines())
    assert got == sorted(f"j-p{p}-{i}" for p in range(2) for i in range(10))
    # The group committed on close: a second run resumes at the end and sees nothing.
    out = console_consume(1, 5000, check=False)
    assert out.stdout.decode().splitlines() == []
    described = java(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server", broker.bootstrap, "--describe", "--group", group,
    ).stdout.decode()
    rows = [line.split() for line in described.splitlines() if line.startswith(group)]
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    assert sorted((int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows) == [(0, 10, 10, 0), (1, 10, 10, 0)]

    # OffsetDelete (kafka-consumer-groups --delete-offsets) on the now empty group.
    java(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server", broker.bootstrap, "--delete-offsets", "--group", group, "--topic", f"{topic}:0",
    )
    c = consumer(broker.bootstrap, **{"group.id": group})
    committed = c.committed([TopicPartition(topic, p) for p in range(2)], timeout=20)
    c.close()
    assert {tp.partition: tp.offset for tp in committed} == {0: -1001, 1: 10}
