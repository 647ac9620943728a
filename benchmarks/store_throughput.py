"""Version-store throughput on a ~2 GB tree of ~8,000 files, next to its baselines.

Baselines on the same tree and disk: `sha256sum` over every file (the unavoidable hashing)
and `cp -r` (a plain copy). Targets: first snapshot >= 0.5x sha256sum's throughput, second
snapshot of the unchanged tree < 10% of the first's time, hard-link checkout >= 10x cp -r.

Usage: python benchmarks/store_throughput.py [--files 8000] [--mb 2048]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from stylegan_ops.store.local import Store

WORK = Path(os.environ.get("BENCH_DIR", "bench-out"))


def make_tree(root: Path, files: int, total_mb: int) -> int:
    rng = np.random.default_rng(0)
    sizes = rng.lognormal(0.0, 1.0, files)
    sizes = (sizes / sizes.sum() * total_mb * 2**20).astype(np.int64) + 1
    block = rng.bytes(int(sizes.max()) + 4096)
    for i, size in enumerate(sizes):
        path = root / f"d{i % 64:02d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        offset = int(rng.integers(0, 4096))
        # unique content per file: a counter in front of a shifted block
        path.write_bytes(i.to_bytes(8, "little") + block[offset:offset + int(size)])
    return int(sizes.sum()) + 8 * files


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=8000)
    parser.add_argument("--mb", type=int, default=2048)
    args = parser.parse_args()
    tree = WORK / f"store-tree-{args.files}-{args.mb}"
    if not tree.exists():
        print("generating the tree ...", flush=True)
        tmp = tree.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        make_tree(tmp, args.files, args.mb)
        tmp.rename(tree)
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    mb = size / 1e6
    for stale in ("store", "copy", "checkout"):
        shutil.rmtree(WORK / stale, ignore_errors=True)
    subprocess.run(["cat"], stdin=subprocess.DEVNULL, check=True)  # warm the tools
    hash_s = timed(lambda: subprocess.run(
        f"find {tree} -type f -print0 | xargs -0 sha256sum > /dev/null", shell=True,
        check=True))
    cp_s = timed(lambda: subprocess.run(["cp", "-r", str(tree), str(WORK / "copy")],
                                        check=True))
    store = Store(WORK / "store")
    snap1_s = timed(lambda: store.snapshot(tree, "bench"))
    snap2_s = timed(lambda: store.snapshot(tree, "bench"))
    checkout_s = timed(lambda: store.checkout("bench", WORK / "checkout"))
    for stale in ("store", "copy", "checkout"):
        shutil.rmtree(WORK / stale, ignore_errors=True)
    print(f"\n{args.files} files, {mb:.0f} MB, {os.cpu_count()} cores")
    print(f"sha256sum over the tree        {mb / hash_s:8.0f} MB/s  ({hash_s:.2f} s)")
    print(f"cp -r                          {mb / cp_s:8.0f} MB/s  ({cp_s:.2f} s)")
    print(f"store snapshot (first)         {mb / snap1_s:8.0f} MB/s  ({snap1_s:.2f} s)")
    print(f"store snapshot (unchanged)     {mb / snap2_s:8.0f} MB/s  ({snap2_s:.2f} s)")
    print(f"store checkout (hard links)    {mb / checkout_s:8.0f} MB/s  ({checkout_s:.2f} s)")
    print(f"snapshot / sha256sum           = {hash_s / snap1_s:.2f}  (target >= 0.5)")
    print(f"second / first snapshot time   = {snap2_s / snap1_s:.3f}  (target < 0.10)")
    print(f"checkout / cp -r               = {cp_s / checkout_s:.1f}  (target >= 10)")


if __name__ == "__main__":
    main()
