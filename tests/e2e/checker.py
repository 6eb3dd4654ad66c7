"""The safety checker of the cluster fault tests: did the log keep its promises?

A fault run leaves three pieces of evidence, all lists of (partition, offset, value):

  acked   what the producers were told was written (acks=all delivery reports),
  seen    what a consumer read while the faults happened,
  log     what every partition holds from its log start to its high watermark after
          the run (read once the cluster is healthy again).

and `check()` proves, with pure functions on that data (no broker needed):

  * every acknowledged record is in the log exactly once, in the partition and at the
    offset it was acknowledged with (not lost, not duplicated, not moved);
  * in each partition, each producer's acknowledged records keep the order the producer
    sent them in (values are `p{producer}-{seq}`, seq increasing per producer);
  * nothing a consumer read during the run later vanished or changed (a consumer only
    reads below the high watermark, i.e. committed data, which must never be undone).

An acknowledgement without an offset (librdkafka reports one when a retried batch of an
idempotent producer turns out to be already written, e.g. across a leader change) is
checked for presence, uniqueness, partition and order, not for its offset; such acks are
counted as acked_without_offset.

Records present but never acknowledged (a delivery that timed out but landed) are
legal; they are counted, not failed. A value the workload never sent is legal too
(another writer), but duplicates of workload values are not.

CLI (for a run saved as JSON by workload.save_run or by hand):

    python checker.py RUN.json          # {"acked": [[p, o, v], ...], "seen": [...], "log": [...]}
    python checker.py --acked A.json --seen S.json --log L.json

prints the counts and exits 0 when the verdict is OK, 1 when it is not.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

Record = tuple[int, int, str]  # (partition, offset, value)

_VALUE = re.compile(r"^p(\d+)-(\d+)$")

# How many examples of each kind of violation a verdict keeps (counts are exact).
EXAMPLES = 10


def parse_value(value: str) -> tuple[int, int] | None:
    """`p3-17` -> (3, 17): (producer, sequence); None for a value of another shape."""
    m = _VALUE.match(value)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass
class Verdict:
    """Counts and examples of a check. `ok` is what the tests assert on."""

    acked: int = 0
    present: int = 0  # records in the log
    acked_present: int = 0  # acknowledged records found at their acknowledged place
    acked_without_offset: int = 0  # acked with an unknown offset (found in their partition)
    lost: list = field(default_factory=list)  # acked, nowhere in the log
    duplicated: list = field(default_factory=list)  # value present more than once
    moved: list = field(default_factory=list)  # acked at (p, o), found elsewhere
    reordered: list = field(default_factory=list)  # a producer's acked order broken
    seen_then_vanished: list = field(default_factory=list)  # consumer saw it, log differs
    conflicting_acks: list = field(default_factory=list)  # one value acked at two places
    unacked_present: int = 0  # in the log, never acknowledged (legal)
    seen: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.moved
            or self.reordered
            or self.seen_then_vanished
            or self.conflicting_acks
        )

    def counts(self) -> dict:
        return {
            "acked": self.acked,
            "present": self.present,
            "acked_present": self.acked_present,
            "acked_without_offset": self.acked_without_offset,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "moved": len(self.moved),
            "reordered": len(self.reordered),
            "unacked_present": self.unacked_present,
            "seen": self.seen,
            "seen_then_vanished": len(self.seen_then_vanished),
            "conflicting_acks": len(self.conflicting_acks),
        }

    def summary(self) -> str:
        """One line of counts plus a few examples of each violation."""
        c = self.counts()
        line = ("OK" if self.ok else "FAIL") + ": " + ", ".join(f"{k}={v}" for k, v in c.items())
        details = []
        for name in ("lost", "duplicated", "moved", "reordered", "seen_then_vanished", "conflicting_acks"):
            items = getattr(self, name)
            if items:
                details.append(f"  {name} (first {min(len(items), EXAMPLES)}): {items[:EXAMPLES]}")
        return "\n".join([line, *details])


UNKNOWN_OFFSET = -1


def _normalise(records: Iterable) -> list[Record]:
    """Accept tuples or lists (JSON), bytes or str values, and None for an unknown
    offset (stored as UNKNOWN_OFFSET)."""
    out = []
    for p, o, v in records:
        if isinstance(v, (bytes, bytearray)):
            v = v.decode("utf-8", "replace")
        out.append((int(p), UNKNOWN_OFFSET if o is None or int(o) < 0 else int(o), v))
    return out


def index_log(log: Iterable[Record]) -> tuple[dict, dict]:
    """The log as {(partition, offset): value} and {value: [(partition, offset), ...]}."""
    at: dict[tuple[int, int], str] = {}
    where: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for p, o, v in log:
        at[(p, o)] = v
        where[v].append((p, o))
    return at, where


def find_conflicting_acks(acked: list[Record]) -> list:
    """A value acknowledged twice at different places: the producer itself saw a
    duplicate (librdkafka reports each message once, so this is the broker's doing)."""
    places: dict[str, set] = defaultdict(set)
    for p, o, v in acked:
        if o != UNKNOWN_OFFSET:
            places[v].add((p, o))
    return [(v, sorted(ps)) for v, ps in places.items() if len(ps) > 1]


def find_duplicates(where: dict, workload_values: set | None) -> list:
    """Values stored more than once. With `workload_values`, only those count (another
    writer's repeated values are not ours to judge); without it, every value counts."""
    out = []
    for v, places in where.items():
        if len(places) > 1 and (workload_values is None or v in workload_values):
            out.append((v, sorted(places)))
    return sorted(out, key=lambda d: d[1])


def find_lost_and_moved(acked: list[Record], where: dict) -> tuple[list, list, int]:
    """(lost, moved, found-in-place) for the acknowledged records; an ack without an
    offset is in place anywhere in its partition."""
    lost, moved, in_place = [], [], 0
    for p, o, v in acked:
        places = where.get(v, [])
        if not places:
            lost.append((p, o, v))
        elif (p, o) in places or (o == UNKNOWN_OFFSET and any(pl[0] == p for pl in places)):
            in_place += 1
        else:
            moved.append({"value": v, "acked_at": (p, o), "found_at": sorted(places)})
    return lost, moved, in_place


def find_reordering(acked: list[Record], where: dict) -> list:
    """In each partition, a producer's acknowledged records must sit in the log at
    offsets that increase with the producer's sequence numbers. Checked on where the
    records really are (so a reordering is reported even when offsets also moved)."""
    by_stream: dict[tuple[int, int], list[tuple[int, int, str]]] = defaultdict(list)
    for p, _o, v in acked:
        pv = parse_value(v)
        places = [pl for pl in where.get(v, []) if pl[0] == p]
        if pv is None or not places:
            continue
        by_stream[(p, pv[0])].append((pv[1], min(pl[1] for pl in places), v))
    out = []
    for (p, producer), items in sorted(by_stream.items()):
        items.sort()
        for (_s1, o1, v1), (_s2, o2, v2) in zip(items, items[1:]):
            if o2 <= o1:
                out.append({"partition": p, "producer": producer, "earlier": (v1, o1), "later": (v2, o2)})
    return out


def find_vanished(seen: list[Record], at: dict) -> list:
    """Records a consumer read during the run that the final log no longer has at the
    same place (truncated away, or overwritten by a different record)."""
    out = []
    for p, o, v in seen:
        now = at.get((p, o))
        if now != v:
            out.append({"partition": p, "offset": o, "seen": v, "now": now})
    return out


def check(acked: Iterable, seen: Iterable, log: Iterable, attempted: Iterable[str] | None = None) -> Verdict:
    """The verdict on a run. `attempted` (every value a producer tried to send) narrows
    the duplicate check to workload values; without it all values count."""
    acked_l, seen_l, log_l = _normalise(acked), _normalise(seen), _normalise(log)
    at, where = index_log(log_l)
    workload = set(attempted) if attempted is not None else None
    acked_values = {v for _p, _o, v in acked_l}
    lost, moved, in_place = find_lost_and_moved(acked_l, where)
    unacked = [v for _p, _o, v in log_l if v not in acked_values]
    if workload is not None:
        unacked = [v for v in unacked if v in workload]
    return Verdict(
        acked=len(acked_l),
        present=len(log_l),
        acked_present=in_place,
        acked_without_offset=sum(1 for _p, o, _v in acked_l if o == UNKNOWN_OFFSET),
        lost=lost,
        duplicated=find_duplicates(where, workload),
        moved=moved,
        reordered=find_reordering(acked_l, where),
        seen_then_vanished=find_vanished(seen_l, at),
        conflicting_acks=find_conflicting_acks(acked_l),
        unacked_present=len(unacked),
        seen=len(seen_l),
    )


# ---- CLI ------------------------------------------------------------------------------


def _load(path: str) -> list:
    with open(path) as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", help="a run JSON with keys acked, seen, log (and optional attempted)")
    ap.add_argument("--acked", help="JSON list of [partition, offset, value]")
    ap.add_argument("--seen", help="JSON list of [partition, offset, value]")
    ap.add_argument("--log", help="JSON list of [partition, offset, value]")
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = ap.parse_args(argv)
    if args.run:
        run = _load(args.run)
        acked, seen, log, attempted = run["acked"], run.get("seen", []), run["log"], run.get("attempted")
    elif args.acked and args.log:
        acked, log, attempted = _load(args.acked), _load(args.log), None
        seen = _load(args.seen) if args.seen else []
    else:
        ap.error("give a run JSON, or --acked and --log")
    verdict = check(acked, seen, log, attempted)
    if args.json:
        print(json.dumps({"ok": verdict.ok, **verdict.counts()}))
    else:
        print(verdict.summary())
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
