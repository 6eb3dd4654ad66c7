"""Cluster fault tests: a steady acks=all idempotent producer and a consumer run while a
node is killed, stopped, paused or cut off, or a partition is moved; afterwards the
checker (checker.py) proves that no acknowledged record was lost, duplicated, moved or
reordered and that nothing a consumer read vanished.

Every test starts its own cluster (cluster_process.py; 3 nodes, 5 for the reassignment)
and tears it down, and is bounded in time. Run against Apache Kafka to validate the
tests themselves:

    RILL_E2E_TARGET=kafka $RILL_CACHE/venv/bin/python -m pytest tests/e2e/test_cluster_faults.py -m cluster -v

Each test writes `results.json` (timings, counts, which fault mechanism ran) into its
tmp dir and prints it. Against Rill they are skipped while `rill-broker run` rejects the
cluster properties as unknown (see cluster_process.ClusterUnsupported).

Environment: RILL_E2E_CUT=pause makes test_cut_leader_off_then_heal pause the leader
(SIGSTOP/SIGCONT) instead of cutting its links through the proxy.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from checker import check
from cluster_process import Cluster, kafka_tool
from workload import ConsumerWorkload, ProducerWorkload, read_log, save_run

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]  # hard bound per test

PARTITIONS = 3
RATE = 200.0  # records/s: steady, yet light for 2 shared cores
SESSION_TIMEOUT_MS = 4000
FAST = {"broker.session.timeout.ms": str(SESSION_TIMEOUT_MS)}
TOPIC_CONFIG = {"min.insync.replicas": "2"}
FAILOVER_BOUND_S = 30.0  # kill -> first ack on the new leader
REJOIN_BOUND_S = 45.0  # restart / heal -> back in every ISR


# ---- helpers ----------------------------------------------------------------------------


def start_load(c: Cluster, topic: str, seconds: float, rate: float = RATE, partitions: int = PARTITIONS):
    """A producer sending for `seconds` and a consumer; returns once acks flow."""
    prod = ProducerWorkload(c.bootstrap, topic, partitions, count=int(seconds * rate), rate=rate).start()
    cons = ConsumerWorkload(c.bootstrap, topic, partitions).start()
    c.note("load started")
    c.wait_for(lambda: all(prod.acked_count(p) >= 20 for p in range(partitions)), 30,
               "acks in every partition before the fault")
    c.note("acks flow")
    return prod, cons


def progress_after(c: Cluster, prod: ProducerWorkload, t: float, per_partition: int = 50,
                   partitions: int = PARTITIONS, timeout: float = 40.0) -> None:
    """Wait until every partition has `per_partition` acks received after time t: the
    cluster serves writes again everywhere."""
    c.wait_for(lambda: all(prod.acked_count(p, after=t) >= per_partition for p in range(partitions)),
               timeout, f"{per_partition} acks per partition after t={t:.1f}")


def finish_and_check(c: Cluster, topic: str, prod: ProducerWorkload, cons: ConsumerWorkload, tmp_path: Path,
                     partitions: int = PARTITIONS) -> dict:
    """Stop the load, read the whole log, run the checker, save the run; asserts the
    verdict and returns the counts."""
    prod.stop()
    prod.join(timeout=prod.flush_timeout + 15)
    # reading must work across the faults too: the consumer gets to every acked record
    c.wait_for(lambda: cons.count() >= len(prod.acked), 30, "the consumer reads as many records as were acked")
    cons.stop_and_join()
    c.note("load stopped")
    log, marks = read_log(c.live_bootstrap(), topic, partitions)
    c.note(f"log read: {len(log)} records")
    save_run(tmp_path / "run.json", [prod], cons, log, {"watermarks": marks})
    verdict = check(prod.acked_records(), cons.seen, log, prod.attempted)
    print(f"checker ({topic}): {verdict.summary()}")
    print(f"producer errors: {prod.error_summary()}")
    assert verdict.ok, verdict.summary()
    assert verdict.acked >= 500, f"too little load to prove anything: {verdict.counts()}"
    assert verdict.acked_present == verdict.acked
    assert prod.unflushed == 0, f"{prod.unflushed} records still unflushed"
    return verdict.counts()


def assert_no_failed_delivery(prod: ProducerWorkload) -> None:
    """Every fault here is shorter than message.timeout.ms, so the idempotent producer
    must get every record acknowledged, and the client stays usable."""
    failed = [e for e in prod.errors if e.source == "delivery"]
    assert not failed, f"{len(failed)} failed deliveries, e.g. {failed[:3]}"
    assert not prod.errors_of_kind("fatal"), prod.errors_of_kind("fatal")[:3]


def write_results(tmp_path: Path, name: str, c: Cluster, **fields) -> dict:
    results = {"test": name, "target": c.kind, "nodes": c.n, **fields}
    (tmp_path / "results.json").write_text(json.dumps(results, indent=2))
    print(f"RESULTS {json.dumps(results)}")
    print("timeline:\n" + c.timeline())
    return results


def new_leader(c: Cluster, topic: str, partition: int, old: int, via: int | None = None) -> int:
    """A leader other than `old` (and not none) as `via` (or any live node) sees it."""
    lead = c.leader_of(topic, partition, via)
    return lead if lead not in (-1, old) else 0


# ---- the tests ----------------------------------------------------------------------------


def test_kill9_partition_leader_under_load(cluster_factory, tmp_path):
    """kill -9 the leader of partition 0 while acks=all writes flow: a new leader takes
    over, no acknowledged record is lost. Failover time: from the kill to the first ack
    in partition 0 of a record produced after the kill (so written by the new leader)."""
    c = cluster_factory(3, extra=FAST)
    topic = "fault-kill-leader"
    c.create_topic(topic, PARTITIONS, config=TOPIC_CONFIG)
    prod, cons = start_load(c, topic, seconds=25)
    victim = c.leader_of(topic, 0)

    t_kill = time.monotonic()
    c.kill9(victim)
    successor = c.wait_for(lambda: new_leader(c, topic, 0, victim), FAILOVER_BOUND_S, "a new leader of partition 0")
    t_elected = time.monotonic()
    first = c.wait_for(lambda: prod.first_ack_of_sent_after(t_kill, 0), FAILOVER_BOUND_S,
                       "an ack in partition 0 of a record sent after the kill")
    failover_s = first.at - t_kill
    progress_after(c, prod, first.at)
    assert successor != victim and victim not in c.isr_of(topic, 0)
    counts = finish_and_check(c, topic, prod, cons, tmp_path)
    assert_no_failed_delivery(prod)
    write_results(tmp_path, "kill9_partition_leader", c, killed=victim, new_leader=successor,
                  failover_s=round(failover_s, 3), leader_elected_after_s=round(t_elected - t_kill, 3),
                  first_ack_offset=first.offset, session_timeout_ms=SESSION_TIMEOUT_MS, checker=counts)
    assert failover_s < FAILOVER_BOUND_S


def test_kill9_active_controller_under_load(cluster_factory, tmp_path):
    """kill -9 the active controller: another node takes over the quorum, writes go on in
    every partition, and a topic can still be created."""
    c = cluster_factory(3, extra=FAST)
    topic = "fault-kill-controller"
    c.create_topic(topic, PARTITIONS, config=TOPIC_CONFIG)
    controller = c.controller_id()
    assert controller in c.nodes, f"no active controller: {controller}"
    prod, cons = start_load(c, topic, seconds=25)

    t_kill = time.monotonic()
    c.kill9(controller)
    successor = c.wait_for(lambda: (x := c.controller_id()) not in (-1, controller) and x, 30,
                           "a new active controller")
    t_new = time.monotonic()
    progress_after(c, prod, t_kill)

    created = "fault-after-controller-kill"
    c.create_topic(created, 2, rf=2)  # two nodes are left
    assert all(c.leader_of(created, p) in c.live_ids() for p in range(2))
    counts = finish_and_check(c, topic, prod, cons, tmp_path)
    assert_no_failed_delivery(prod)
    write_results(tmp_path, "kill9_active_controller", c, killed=controller, new_controller=successor,
                  controller_failover_s=round(t_new - t_kill, 3), checker=counts)


def test_cut_leader_off_then_heal(cluster_factory, tmp_path):
    """Cut a partition leader off from its followers and the quorum (fault proxy), or
    pause it (RILL_E2E_CUT=pause): the majority elects a new leader and keeps accepting
    writes; after healing, the old leader comes back as a follower and catches up, and
    nothing acknowledged or read is lost. The partition chosen is the one the active
    controller leads (when it leads one), so the quorum must fail over as well."""
    mechanism = os.environ.get("RILL_E2E_CUT", "proxy")
    assert mechanism in ("proxy", "pause")
    extra = {**FAST, "auto.leader.rebalance.enable": "false"}  # so the old leader stays a follower
    c = cluster_factory(3, extra=extra, proxied=mechanism == "proxy")
    topic = "fault-cut-leader"
    c.create_topic(topic, PARTITIONS, config=TOPIC_CONFIG)
    prod, cons = start_load(c, topic, seconds=30)
    controller = c.controller_id()
    leaders = {p: c.leader_of(topic, p) for p in range(PARTITIONS)}
    part = next((p for p, lead in leaders.items() if lead == controller), 0)
    victim = leaders[part]
    if c.proxy is not None:
        # the proxy tells nodes apart only if each one's inter-node connections come
        # from its own IP (Rill) or its own proxy ports (Kafka)
        try:
            c.wait_for(lambda: c.proxy.sources_seen() >= set(c.nodes), 15, "every node dialling through the proxy")
        except AssertionError:
            raise AssertionError(f"the proxy saw inter-node connections only from nodes {sorted(c.proxy.sources_seen())}"
                                 f" of {sorted(c.nodes)}: does each node bind its outgoing inter-node"
                                 " connections to its own IP?") from None
    witness = next(i for i in c.nodes if i != victim)

    t_cut = time.monotonic()
    if mechanism == "proxy":
        c.isolate(victim)
    else:
        c.pause(victim)
    successor = c.wait_for(lambda: new_leader(c, topic, part, victim, via=witness), FAILOVER_BOUND_S,
                           f"the majority elects a new leader of partition {part}")
    t_elected = time.monotonic()
    if victim == controller:
        c.wait_for(lambda: c.controller_id(via=witness) not in (-1, victim), FAILOVER_BOUND_S,
                   "the majority elects a new active controller")
    progress_after(c, prod, t_elected, per_partition=30)
    cut_s = time.monotonic() - t_cut

    if mechanism == "proxy":
        c.heal()
    else:
        c.resume(victim)
    t_heal = time.monotonic()
    c.wait_for(lambda: all(sorted(c.isr_of(topic, p, via=witness)) == sorted(c.nodes) for p in range(PARTITIONS)),
               REJOIN_BOUND_S, "the old leader back in every ISR")
    t_rejoined = time.monotonic()
    assert c.leader_of(topic, part, via=witness) != victim, "old leader should have come back as a follower"
    c.wait_for(lambda: c.leader_of(topic, part, via=victim) == c.leader_of(topic, part, via=witness), 15,
               "the old leader's metadata agrees with the majority's")
    progress_after(c, prod, t_rejoined, per_partition=20)
    counts = finish_and_check(c, topic, prod, cons, tmp_path)
    assert_no_failed_delivery(prod)
    write_results(tmp_path, "cut_leader_off_then_heal", c, mechanism=mechanism, partition=part, victim=victim,
                  victim_was_controller=victim == controller, new_leader=successor,
                  new_controller=c.controller_id(via=witness),
                  leader_elected_after_s=round(t_elected - t_cut, 3), cut_for_s=round(cut_s, 3),
                  rejoined_isr_after_heal_s=round(t_rejoined - t_heal, 3),
                  proxy_refused=c.proxy.refused if c.proxy else None, checker=counts)


def test_sigterm_broker_then_restart_catches_up(cluster_factory, tmp_path):
    """SIGTERM a broker (clean exit), keep producing to the two left, restart it on its
    data: it catches up and is back in every ISR within a bound."""
    c = cluster_factory(3, extra=FAST)
    topic = "fault-stop-restart"
    c.create_topic(topic, PARTITIONS, config=TOPIC_CONFIG)
    prod, cons = start_load(c, topic, seconds=30)
    victim = c.leader_of(topic, 0)

    t_stop = time.monotonic()
    code = c.terminate(victim)
    stop_s = time.monotonic() - t_stop
    assert code in c.clean_exit_codes(), f"node {victim} exited {code} on SIGTERM:\n{c.nodes[victim].log_tail()}"
    progress_after(c, prod, time.monotonic(), per_partition=100)  # it falls behind
    assert all(victim not in c.isr_of(topic, p) for p in range(PARTITIONS))

    t_restart = time.monotonic()
    c.restart(victim)
    c.wait_for(lambda: all(victim in c.isr_of(topic, p) for p in range(PARTITIONS)), REJOIN_BOUND_S,
               f"node {victim} back in every ISR")
    rejoin_s = time.monotonic() - t_restart
    progress_after(c, prod, time.monotonic(), per_partition=20)
    counts = finish_and_check(c, topic, prod, cons, tmp_path)
    assert_no_failed_delivery(prod)
    write_results(tmp_path, "sigterm_then_restart", c, stopped=victim, exit_code=code, stop_s=round(stop_s, 3),
                  rejoined_every_isr_after_restart_s=round(rejoin_s, 3), checker=counts)


@pytest.mark.parametrize("target, new_leader", [
    ([3, 4, 5], None),
    # An added replica first: leadership moves to a replica the reassignment created. It
    # copied the whole log (and with it the producer state) from the old leader, and the
    # idempotent producer's retries across the leader change must not be written twice.
    ([4, 5, 3], 4),
], ids=["kept-replica-leads", "added-replica-leads"])
def test_reassign_partition_under_load(cluster_factory, tmp_path, target, new_leader):
    """Move partition 0 from replicas [1,2,3] to `target` with Kafka's
    ReassignPartitionsCommand while writes flow: it completes, the replicas and ISR are
    the new set, and nothing is lost."""
    c = cluster_factory(5, extra=FAST)
    topic = "fault-reassign"
    c.create_topic(topic, replica_assignment=[[1, 2, 3], [2, 3, 4], [3, 4, 5]], config=TOPIC_CONFIG)
    assert c.replicas_of(topic, 0) == [1, 2, 3]
    prod, cons = start_load(c, topic, seconds=30, rate=150.0)
    time.sleep(2)  # some data to move

    plan = tmp_path / "reassign.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": target, "log_dirs": ["any", "any", "any"]}]}))
    tool = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
    t0 = time.monotonic()
    out = kafka_tool(tool, "--bootstrap-server", c.bootstrap, "--reassignment-json-file", str(plan), "--execute")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Successfully started partition reassignment" in out.stdout, out.stdout
    c.wait_for(lambda: c.replicas_of(topic, 0) == target and sorted(c.isr_of(topic, 0)) == [3, 4, 5], 60,
               f"partition 0 on {target} with a full ISR")
    moved_s = time.monotonic() - t0
    verify = kafka_tool(tool, "--bootstrap-server", c.bootstrap, "--reassignment-json-file", str(plan), "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"Reassignment of partition {topic}-0 is completed" in verify.stdout, verify.stdout
    if new_leader is None:
        assert c.leader_of(topic, 0) in (3, 4, 5)
    else:
        assert c.leader_of(topic, 0) == new_leader
    assert c.replicas_of(topic, 1) == [2, 3, 4] and c.replicas_of(topic, 2) == [3, 4, 5]
    progress_after(c, prod, time.monotonic(), per_partition=20)
    counts = finish_and_check(c, topic, prod, cons, tmp_path)
    assert_no_failed_delivery(prod)
    name = "reassign_partition" if new_leader is None else "reassign_partition_new_leader"
    write_results(tmp_path, name, c, moved_from=[1, 2, 3], moved_to=target,
                  reassignment_s=round(moved_s, 3), checker=counts)


def test_round_trip_across_leader_change_sees_only_retriable_errors(cluster_factory, tmp_path):
    """What an application sees: a plain confluent-kafka producer and consumer across a
    leader change (the leader of partition 0 is killed) get every record exactly once,
    in order per partition, and no error other than retriable ones."""
    c = cluster_factory(3, extra=FAST)
    topic = "fault-round-trip"
    c.create_topic(topic, PARTITIONS, config=TOPIC_CONFIG)
    count = 3000
    prod = ProducerWorkload(c.bootstrap, topic, PARTITIONS, count=count, rate=250.0).start()
    cons = ConsumerWorkload(c.bootstrap, topic, PARTITIONS).start()
    c.wait_for(lambda: prod.acked_count() >= 600, 30, "600 acks before the leader change")
    victim = c.leader_of(topic, 0)
    c.kill9(victim)
    c.wait_for(lambda: new_leader(c, topic, 0, victim), FAILOVER_BOUND_S, "a new leader of partition 0")
    prod.join()
    assert len(prod.acked) == count, f"{len(prod.acked)} of {count} acknowledged; errors {prod.error_summary()}"
    c.wait_for(lambda: cons.count() >= count, 30, f"the consumer reads all {count} records")
    cons.stop_and_join()

    seen_values = cons.values()
    assert sorted(seen_values) == sorted(prod.attempted), "consumer must read each record exactly once"
    for p in range(PARTITIONS):
        mine = [(o, v) for q, o, v in cons.seen if q == p]
        offsets = [o for o, _v in mine]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        seqs = [int(v.split("-")[1]) for _o, v in mine]
        assert seqs == sorted(seqs), f"partition {p}: records out of order"
    not_retriable = [e for e in prod.errors + cons.errors if e.kind != "retriable"]
    assert not not_retriable, f"the application saw non-retriable errors: {not_retriable[:5]}"
    assert_no_failed_delivery(prod)
    log, _ = read_log(c.live_bootstrap(), topic, PARTITIONS)
    verdict = check(prod.acked_records(), cons.seen, log, prod.attempted)
    assert verdict.ok, verdict.summary()
    write_results(tmp_path, "round_trip_leader_change", c, killed=victim, records=count,
                  producer_errors=prod.error_summary(),
                  consumer_errors=sorted({f"{e.kind}:{e.code}" for e in cons.errors}), checker=verdict.counts())
