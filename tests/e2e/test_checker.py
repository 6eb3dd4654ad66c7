"""The checker on synthetic runs: it must pass a clean run and fail each kind of
violation the fault tests rely on it to catch. No broker needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from checker import check, parse_value

pytestmark = pytest.mark.cluster

CHECKER = Path(__file__).resolve().parent / "checker.py"


def clean_run(partitions: int = 2, per_partition: int = 5, producers: int = 2):
    """Producers interleaved in each partition, everything acked and read back."""
    acked, log = [], []
    for p in range(partitions):
        for o in range(per_partition * producers):
            producer, seq = o % producers, p * 1000 + o // producers
            rec = (p, o, f"p{producer}-{seq}")
            acked.append(rec)
            log.append(rec)
    return acked, list(acked), log


def test_parse_value():
    assert parse_value("p3-17") == (3, 17)
    assert parse_value("p0-0") == (0, 0)
    assert parse_value("other") is None
    assert parse_value("p1-") is None


def test_clean_run_passes():
    acked, seen, log = clean_run()
    v = check(acked, seen, log)
    assert v.ok, v.summary()
    assert v.counts() == {
        "acked": 20, "present": 20, "acked_present": 20, "acked_without_offset": 0, "lost": 0, "duplicated": 0, "moved": 0,
        "reordered": 0, "unacked_present": 0, "seen": 20, "seen_then_vanished": 0, "conflicting_acks": 0,
    }


def test_ack_without_offset_is_checked_by_partition_and_order():
    """librdkafka acks a retried, already-written idempotent batch without an offset."""
    acked, seen, log = clean_run()
    acked[3] = (acked[3][0], None, acked[3][2])
    v = check(acked, seen, log)
    assert v.ok, v.summary()
    assert v.acked_without_offset == 1 and v.acked_present == 20

    lost = check(acked, [], [r for r in log if r[2] != acked[3][2]])
    assert not lost.ok and lost.lost == [(acked[3][0], -1, acked[3][2])]

    elsewhere = [(1 - p, 50, val) if val == acked[3][2] else (p, o, val) for p, o, val in log]
    moved = check(acked, [], elsewhere)
    assert not moved.ok and moved.moved[0]["value"] == acked[3][2]

    twice = check(acked, [], log + [(acked[3][0], 99, acked[3][2])])
    assert not twice.ok and twice.duplicated


def test_unacked_but_present_is_legal_and_counted():
    acked, seen, log = clean_run()
    log.append((0, 10, "p0-999"))  # timed out at the producer, but landed
    v = check(acked, seen, log, attempted=[r[2] for r in log])
    assert v.ok, v.summary()
    assert v.unacked_present == 1
    assert v.present == 21


def test_lost_record_fails():
    acked, seen, log = clean_run()
    gone = log.pop(3)
    v = check(acked, [], log)
    assert not v.ok
    assert v.lost == [gone]
    assert v.counts()["lost"] == 1


def test_duplicate_fails():
    acked, seen, log = clean_run()
    log.append((1, 10, log[2][2]))  # an acked value written a second time
    v = check(acked, seen, log)
    assert not v.ok
    assert v.duplicated == [(log[2][2], [(0, 2), (1, 10)])]


def test_duplicate_of_unacked_workload_value_fails():
    acked, seen, log = clean_run()
    log += [(0, 10, "p5-1"), (0, 11, "p5-1")]
    v = check(acked, seen, log, attempted=[r[2] for r in log])
    assert not v.ok
    assert [d[0] for d in v.duplicated] == ["p5-1"]


def test_foreign_duplicates_are_ignored_when_workload_is_known():
    acked, seen, log = clean_run()
    log += [(0, 10, "x"), (0, 11, "x")]
    assert check(acked, seen, log, attempted=[r[2] for r in acked]).ok
    assert not check(acked, seen, log).ok  # without the workload every value counts


def test_acked_at_a_different_offset_fails():
    acked, seen, log = clean_run()
    # the log has the record one offset later than the producer was told
    p, o, v = acked[4]
    acked[4] = (p, o - 1, v) if o > 0 else (p, o + 1, v)
    verdict = check(acked, [], log)
    assert not verdict.ok
    assert len(verdict.moved) == 1
    assert verdict.moved[0]["value"] == v
    assert verdict.moved[0]["found_at"] == [(p, o)]


def test_acked_in_another_partition_fails():
    acked, seen, log = clean_run()
    p, o, v = log[0]
    log[0] = (1, 10, v)
    verdict = check(acked, [], log)
    assert not verdict.ok
    assert verdict.moved and verdict.moved[0]["found_at"] == [(1, 10)]


def test_reordering_fails():
    acked = [(0, 0, "p0-1"), (0, 1, "p0-2"), (0, 2, "p1-1")]
    # the log holds p0-2 before p0-1; acks claim the sent order
    log = [(0, 0, "p0-2"), (0, 1, "p0-1"), (0, 2, "p1-1")]
    verdict = check(acked, [], log)
    assert not verdict.ok
    assert verdict.reordered == [{"partition": 0, "producer": 0, "earlier": ("p0-1", 1), "later": ("p0-2", 0)}]


def test_reordering_with_acks_that_agree_with_the_bad_log_still_fails():
    """The broker acknowledged the records at swapped offsets: each ack matches the
    log, yet the producer's order is broken."""
    acked = [(0, 1, "p0-1"), (0, 0, "p0-2")]
    log = [(0, 0, "p0-2"), (0, 1, "p0-1")]
    verdict = check(acked, [], log)
    assert not verdict.ok
    assert not verdict.moved and not verdict.lost
    assert len(verdict.reordered) == 1


def test_order_is_per_partition_and_per_producer():
    """Sequences of different producers, or of one producer in different partitions,
    may interleave in any way."""
    acked = [(0, 0, "p1-5"), (0, 1, "p0-1"), (1, 0, "p0-0"), (0, 2, "p1-6"), (0, 3, "p0-2")]
    assert check(acked, [], acked).ok


def test_seen_then_vanished_fails():
    acked, seen, log = clean_run()
    # the consumer saw an unacked record at the end that a new leader truncated away
    seen.append((0, 10, "p0-500"))
    verdict = check(acked, seen, log)
    assert not verdict.ok
    assert verdict.seen_then_vanished == [{"partition": 0, "offset": 10, "seen": "p0-500", "now": None}]


def test_seen_then_replaced_fails():
    acked, seen, log = clean_run()
    seen.append((1, 10, "p0-500"))
    log.append((1, 10, "p1-500"))  # another record took the offset the consumer saw
    verdict = check(acked, seen, log)
    assert not verdict.ok
    assert verdict.seen_then_vanished[0]["now"] == "p1-500"


def test_conflicting_acks_fail():
    acked, seen, log = clean_run()
    acked.append((1, 10, acked[0][2]))
    verdict = check(acked, [], log)
    assert not verdict.ok
    assert verdict.conflicting_acks == [(acked[0][2], [(0, 0), (1, 10)])]


def test_bytes_values_and_lists_are_accepted():
    acked = [[0, 0, b"p0-0"], [0, 1, b"p0-1"]]
    assert check(acked, acked, [(0, 0, "p0-0"), (0, 1, "p0-1")]).ok


def test_summary_names_the_failure():
    acked, seen, log = clean_run()
    log.pop()
    s = check(acked, seen, log).summary()
    assert s.startswith("FAIL: ")
    assert "lost=1" in s and "seen_then_vanished=1" in s


def _run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKER), *args], capture_output=True, text=True, timeout=30)


def test_cli_exit_codes(tmp_path):
    acked, seen, log = clean_run()
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"acked": acked, "seen": seen, "log": log}))
    out = _run_cli(str(good), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["ok"] is True
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"acked": acked, "seen": seen, "log": log[1:]}))
    out = _run_cli(str(bad))
    assert out.returncode == 1
    assert out.stdout.startswith("FAIL") and "lost=1" in out.stdout


def test_cli_separate_files(tmp_path):
    acked, seen, log = clean_run()
    for name, data in (("a", acked), ("s", seen), ("l", log)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    out = _run_cli("--acked", str(tmp_path / "a.json"), "--seen", str(tmp_path / "s.json"),
                   "--log", str(tmp_path / "l.json"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("OK")
