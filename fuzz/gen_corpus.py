"""Writes the seed corpus of fuzz target `record_batch`: valid batches, uncompressed and
in each codec, each file one settings byte (see the target) then one batch. Run with the
e2e venv: ~/.cache/rill/venv/bin/python fuzz/gen_corpus.py"""

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

from test_bad_batches import GZIP, LZ4, NONE, SNAPPY, ZSTD, batch, compress, record  # noqa: E402

NOW = 1_700_000_000_000
out = HERE / "corpus" / "record_batch"
out.mkdir(parents=True, exist_ok=True)


def records(n: int) -> bytes:
    hdrs = b"\x02" + b"\x02h" + b"\x02v"  # one header h=v
    return b"".join(record(i, b"key-%d" % i if i % 3 else None, b"value-%d" % i * 3, ts_delta=i,
                           headers=hdrs if i % 2 else b"\x00") for i in range(n))


seeds = {}
for codec, name in [(NONE, "none"), (GZIP, "gzip"), (SNAPPY, "snappy"), (LZ4, "lz4"), (ZSTD, "zstd")]:
    for n in (1, 5):
        section = records(n) if codec == NONE else compress(codec, records(n))
        seeds[f"seed-{name}-{n}"] = b"\x00" + batch(section, n, attributes=codec, base_ts=NOW)
seeds["seed-compacted-keys"] = b"\x04" + batch(record(0, b"k", b"v"), 1, base_ts=NOW)
seeds["seed-log-append-time"] = b"\x01" + batch(records(2), 2, base_ts=NOW)
seeds["seed-two-batches"] = b"\x00" + batch(records(1), 1, base_ts=NOW) + batch(records(2), 2, base_ts=NOW)
for name, data in seeds.items():
    (out / name).write_bytes(data)
total = sum(len(d) for d in seeds.values())
print(f"{len(seeds)} seeds, {total} bytes in {out}")
