"""Cost of the directory fsync per record write: `ResultStore.add` with and without it.

    python benchmarks/store_fsync.py --records 200 --dir /path/on/the/disk/to/measure

`ResultStore.add` writes the history, the record and runs.csv, each synced to disk (data, then
the directory after the rename). This times N adds of small results into an empty store, once as
shipped and once with `atomic.fsync_dir` replaced by a no-op (the data fsyncs stay), and prints
the time per record and the ratio. One run, interleaved in blocks so drift hits both alike.
The result depends on the file system and the disk (a laptop SSD, NFS and tmpfs differ by orders
of magnitude): measure where your result dirs live.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import hamgraph.atomic as atomic
from hamgraph.specs import EpochStats, NodeParams, OptimizerSpec, RunResult, RunSpec
from hamgraph.store import ResultStore

PARAMS = NodeParams(lr=0.01, hidden=16, layers=2, dropout=0.5, weight_decay=5e-4, epochs=100)


def _result(i: int) -> RunResult:
    spec = RunSpec("csbm-h0.8", "gcn", PARAMS, OptimizerSpec("adam"), run=i, seed=i)
    history = [EpochStats(e, 1 / e, 0.5, 0.4, 0.3, 0.01, e, 0.1) for e in range(1, 101)]
    return RunResult(spec, "accuracy", "ok", 0.5, 0.4, 50, 100, 1.0, history=history)


def _time_adds(root: Path, results: list[RunResult]) -> float:
    store = ResultStore(root)
    start = time.perf_counter()
    for result in results:
        store.add(result)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200, help="records per variant")
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks per variant")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    args = parser.parse_args(argv)
    per_block = max(1, args.records // args.blocks)
    real = atomic.fsync_dir
    totals = {"with": 0.0, "without": 0.0}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for block in range(args.blocks):
            for variant in ("with", "without") if block % 2 == 0 else ("without", "with"):
                atomic.fsync_dir = real if variant == "with" else (lambda folder: None)
                results = [_result(block * per_block + i) for i in range(per_block)]
                totals[variant] += _time_adds(Path(tmp) / f"{variant}{block}", results)
        atomic.fsync_dir = real
    n = per_block * args.blocks
    with_ms, without_ms = (1000 * totals[v] / n for v in ("with", "without"))
    ratio = with_ms / without_ms if without_ms > 0 else math.nan
    print(f"{n} records per variant in {args.dir or tempfile.gettempdir()}")
    print(f"store.add with the directory fsync:    {with_ms:8.3f} ms per record")
    print(f"store.add without the directory fsync: {without_ms:8.3f} ms per record")
    print(f"ratio: {ratio:.2f}x ({with_ms - without_ms:+.3f} ms per record)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
