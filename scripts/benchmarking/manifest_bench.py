#!/usr/bin/env python3
"""Benchmark manifest size, write/load time and memory per entry.

    .venv/bin/python scripts/benchmarking/manifest_bench.py --entries 1000000

Prints bytes per entry on disk, seconds to serialise and to load (with full validation),
and the memory the loaded manifest holds per entry (tracemalloc), beside plain orjson of
the same rows as a reference.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "engine"))

import orjson

from dsg.core.manifest import Entry, Manifest
from dsg.fs.files import hash_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=1_000_000)
    n = ap.parse_args().entries
    users = [f"researcher{i}@hrdag.org" for i in range(8)]
    entries = [
        Entry(
            f"task{i % 40:02d}/input/batch{(i // 1000) % 100:03d}/record_{i:07d}.csv",
            1000 + i,
            1_732_900_000_000_000_000 + i,
            hash_bytes(i.to_bytes(8, "little")),
            snap=1 + i % 250,
            user=users[i % len(users)],
        )
        for i in range(n)
    ]
    m = Manifest.from_entries(entries, "s250")
    del entries
    t = time.perf_counter()
    data = m.to_bytes()
    t_write = time.perf_counter() - t
    rows = [e.row() for e in m]
    del m
    t = time.perf_counter()
    raw = orjson.dumps(rows)
    orjson.loads(raw)
    t_orjson = time.perf_counter() - t
    del rows, raw
    tracemalloc.start()
    t = time.perf_counter()
    m = Manifest.from_bytes(data)
    t_load = time.perf_counter() - t
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    t = time.perf_counter()
    Manifest.from_bytes(data)
    t_load2 = time.perf_counter() - t
    print(f"entries                       {len(m):>12,}")
    mb = len(data) / 2**20
    print(f"on disk                       {mb:>11.1f}MB  {len(data) / n:6.1f} B/entry")
    print(f"write (serialise + gzip)      {t_write:>11.2f}s")
    print(f"load + validate (traced)      {t_load:>11.2f}s")
    print(f"load + validate (untraced)    {t_load2:>11.2f}s")
    print(f"plain orjson dumps+loads      {t_orjson:>11.2f}s  (no validation, no objects)")
    print(f"memory held                   {held / 2**20:>11.1f}MB  {held / n:6.0f} B/entry")


if __name__ == "__main__":
    main()
